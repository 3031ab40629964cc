//! The flow map in the store: how functions, events, topics, entity streams and webhook sources
//! connect, derived from what runs did (appends and publishes from a run, child runs, waits in
//! the history, webhook deliveries). One query per kind of edge, per environment.

use async_trait::async_trait;

use super::StoreError;
use super::db::{Db, SqlStore};
use super::sql::{Conn, args, sql};
use crate::domain::time::Ts;
use crate::ids::EnvId;

#[async_trait]
pub trait FlowStore: Send + Sync {
    async fn flow_emit_edges(&self, env: &EnvId) -> Result<Vec<EmitEdge>, StoreError>;
    async fn flow_invoke_edges(&self, env: &EnvId) -> Result<Vec<InvokeEdge>, StoreError>;
    async fn flow_stream_edges(&self, env: &EnvId) -> Result<Vec<StreamEdge>, StoreError>;
    async fn flow_topic_edges(&self, env: &EnvId) -> Result<Vec<TopicEdge>, StoreError>;
    async fn flow_wait_edges(&self, env: &EnvId) -> Result<Vec<WaitEdge>, StoreError>;
    async fn flow_webhooks(&self, env: &EnvId) -> Result<WebhookFlow, StoreError>;
}

/// A function's runs wrote events of this name.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EmitEdge {
    pub event: String,
    pub function_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct InvokeEdge {
    pub parent_function_id: String,
    pub child_function_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StreamEdge {
    pub entity_type: String,
    pub event: String,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TopicEdge {
    pub function_id: String,
    pub topic: String,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct WaitEdge {
    pub function_id: String,
    pub event_name: String,
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct WebhookFlowSource {
    pub id: String,
    pub name: String,
    pub event_prefix: String,
    pub source_type: String,
    pub accepted: i64,
    pub failed: i64,
    pub rejected: i64,
    pub latest_delivery_at: Option<Ts>,
    pub latest_delivery_status: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct WebhookEmitEdge {
    pub source_id: String,
    pub event: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct WebhookFlow {
    pub sources: Vec<WebhookFlowSource>,
    pub edges: Vec<WebhookEmitEdge>,
}

#[async_trait]
impl<D: Db> FlowStore for SqlStore<D> {
    async fn flow_emit_edges(&self, env: &EnvId) -> Result<Vec<EmitEdge>, StoreError> {
        let mut conn = self.db.reader().await?;
        conn.fetch_all(sql!("flow_emit_edges"), args![env.as_str()])
            .await
    }

    async fn flow_invoke_edges(&self, env: &EnvId) -> Result<Vec<InvokeEdge>, StoreError> {
        let mut conn = self.db.reader().await?;
        conn.fetch_all(sql!("flow_invoke_edges"), args![env.as_str()])
            .await
    }

    async fn flow_stream_edges(&self, env: &EnvId) -> Result<Vec<StreamEdge>, StoreError> {
        let mut conn = self.db.reader().await?;
        conn.fetch_all(sql!("flow_stream_edges"), args![env.as_str()])
            .await
    }

    async fn flow_topic_edges(&self, env: &EnvId) -> Result<Vec<TopicEdge>, StoreError> {
        let mut conn = self.db.reader().await?;
        conn.fetch_all(sql!("flow_topic_edges"), args![env.as_str()])
            .await
    }

    async fn flow_wait_edges(&self, env: &EnvId) -> Result<Vec<WaitEdge>, StoreError> {
        let mut conn = self.db.reader().await?;
        conn.fetch_all(sql!("flow_wait_edges"), args![env.as_str()])
            .await
    }

    async fn flow_webhooks(&self, env: &EnvId) -> Result<WebhookFlow, StoreError> {
        let mut conn = self.db.reader().await?;
        let sources = conn
            .fetch_all(sql!("flow_webhook_sources"), args![env.as_str()])
            .await?;
        let edges = conn
            .fetch_all(sql!("flow_webhook_edges"), args![env.as_str()])
            .await?;
        Ok(WebhookFlow { sources, edges })
    }
}
