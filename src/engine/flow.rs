//! The flow map: how functions, events, topics, entity streams and webhook sources connect,
//! as the history shows it (see [`crate::store::flow`]).

use super::{Engine, EngineError};
use crate::ids::EnvId;
use crate::store::flow::{EmitEdge, InvokeEdge, StreamEdge, TopicEdge, WaitEdge, WebhookFlow};

impl Engine {
    pub async fn flow_emit_edges(&self, env: &EnvId) -> Result<Vec<EmitEdge>, EngineError> {
        Ok(self.store().flow_emit_edges(env).await?)
    }

    pub async fn flow_invoke_edges(&self, env: &EnvId) -> Result<Vec<InvokeEdge>, EngineError> {
        Ok(self.store().flow_invoke_edges(env).await?)
    }

    pub async fn flow_stream_edges(&self, env: &EnvId) -> Result<Vec<StreamEdge>, EngineError> {
        Ok(self.store().flow_stream_edges(env).await?)
    }

    pub async fn flow_topic_edges(&self, env: &EnvId) -> Result<Vec<TopicEdge>, EngineError> {
        Ok(self.store().flow_topic_edges(env).await?)
    }

    pub async fn flow_wait_edges(&self, env: &EnvId) -> Result<Vec<WaitEdge>, EngineError> {
        Ok(self.store().flow_wait_edges(env).await?)
    }

    pub async fn flow_webhooks(&self, env: &EnvId) -> Result<WebhookFlow, EngineError> {
        Ok(self.store().flow_webhooks(env).await?)
    }
}
