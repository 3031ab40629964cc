//! Webhook sources and their deliveries in the store: one row per source (sealed secrets, the
//! ingest token's hash, the signature scheme as JSON), saved whole under its `updated_at`
//! (optimistic concurrency), and the log of deliveries that passed verification.

use async_trait::async_trait;

use super::StoreError;
use super::db::{Db, SqlStore};
use super::sql::{Conn, args, sql};
use crate::domain::time::Ts;
use crate::ids::EnvId;

/// A source as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct WebhookSourceRow {
    pub id: String,
    pub env_id: String,
    pub name: String,
    pub event_prefix: String,
    pub verify_header: String,
    pub verify_algorithm: String,
    /// The signature scheme as JSON (`domain::webhook::VerifyConfig`); `None`: legacy.
    pub verify_config: Option<String>,
    /// A JSON object.
    pub metadata: String,
    pub schema_version: i32,
    /// `domain::secret::Sealed` as JSON; `None`: the source verifies nothing.
    pub secret_sealed: Option<String>,
    pub prev_secret_sealed: Option<String>,
    pub prev_expires_at: Option<Ts>,
    pub ingest_token_prefix: String,
    pub created_at: Ts,
    pub updated_at: Ts,
}

/// A new source with its ingest token's hash.
#[derive(Debug, Clone)]
pub struct NewWebhookSource {
    pub row: WebhookSourceRow,
    pub ingest_token_hash: String,
}

/// A source's new state, saved only if it still has `expected_updated_at`.
#[derive(Debug, Clone)]
pub struct WebhookSourceSave<'a> {
    pub row: &'a WebhookSourceRow,
    pub expected_updated_at: Ts,
    /// A new ingest token (hash, display prefix).
    pub new_token: Option<(String, String)>,
}

/// A delivery that passed verification.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct WebhookDeliveryRow {
    pub id: String,
    pub source_id: String,
    pub external_id: Option<String>,
    /// `accepted` (a new event) or `duplicate` (its delivery id was seen: nothing stored).
    pub status: String,
    pub event_id: Option<String>,
    pub error: Option<String>,
    /// The secret that verified it: `current`, `prev` or `none` (an unsigned source).
    pub signature_key: String,
    pub request_body: String,
    /// A JSON object of the headers kept.
    pub request_headers: String,
    pub created_at: Ts,
}

#[async_trait]
pub trait WebhookStore {
    async fn insert_webhook_source(&self, source: &NewWebhookSource) -> Result<(), StoreError>;
    async fn webhook_source(
        &self,
        env: &EnvId,
        id: &str,
    ) -> Result<Option<WebhookSourceRow>, StoreError>;
    async fn webhook_source_by_token(
        &self,
        token_hash: &str,
    ) -> Result<Option<WebhookSourceRow>, StoreError>;
    async fn list_webhook_sources(
        &self,
        env: &EnvId,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<WebhookSourceRow>, i64), StoreError>;
    /// False when the source changed (or went) since it was read.
    async fn save_webhook_source(&self, save: &WebhookSourceSave<'_>) -> Result<bool, StoreError>;
    async fn delete_webhook_source(&self, env: &EnvId, id: &str) -> Result<bool, StoreError>;
    async fn insert_webhook_delivery(
        &self,
        env: &EnvId,
        delivery: &WebhookDeliveryRow,
    ) -> Result<(), StoreError>;
    async fn list_webhook_deliveries(
        &self,
        env: &EnvId,
        source: &str,
        status: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<WebhookDeliveryRow>, i64), StoreError>;
}

#[async_trait]
impl<D: Db> WebhookStore for SqlStore<D> {
    async fn insert_webhook_source(&self, s: &NewWebhookSource) -> Result<(), StoreError> {
        let r = &s.row;
        let mut tx = self.db.begin().await?;
        tx.execute(
            sql!("webhook_insert"),
            args![
                r.id.as_str(),
                r.env_id.as_str(),
                r.name.as_str(),
                r.event_prefix.as_str(),
                r.verify_header.as_str(),
                r.verify_algorithm.as_str(),
                r.verify_config.as_deref(),
                r.metadata.as_str(),
                r.schema_version,
                r.secret_sealed.as_deref(),
                s.ingest_token_hash.as_str(),
                r.ingest_token_prefix.as_str(),
                r.created_at
            ],
        )
        .await?;
        D::commit(tx).await
    }

    async fn webhook_source(
        &self,
        env: &EnvId,
        id: &str,
    ) -> Result<Option<WebhookSourceRow>, StoreError> {
        self.db
            .reader()
            .await?
            .fetch_optional(sql!("webhook_get"), args![env.as_str(), id])
            .await
    }

    async fn webhook_source_by_token(
        &self,
        token_hash: &str,
    ) -> Result<Option<WebhookSourceRow>, StoreError> {
        self.db
            .reader()
            .await?
            .fetch_optional(sql!("webhook_by_token"), args![token_hash])
            .await
    }

    async fn list_webhook_sources(
        &self,
        env: &EnvId,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<WebhookSourceRow>, i64), StoreError> {
        let mut conn = self.db.reader().await?;
        let rows = conn
            .fetch_all(sql!("webhook_list"), args![env.as_str(), limit, offset])
            .await?;
        let total: i64 = conn
            .scalar(sql!("webhook_count"), args![env.as_str()])
            .await?;
        Ok((rows, total))
    }

    async fn save_webhook_source(&self, s: &WebhookSourceSave<'_>) -> Result<bool, StoreError> {
        let r = s.row;
        let (hash, prefix) = match &s.new_token {
            Some((h, p)) => (Some(h.as_str()), Some(p.as_str())),
            None => (None, None),
        };
        let mut tx = self.db.begin().await?;
        let n = tx
            .execute(
                sql!("webhook_save"),
                args![
                    r.env_id.as_str(),
                    r.id.as_str(),
                    r.name.as_str(),
                    r.verify_header.as_str(),
                    r.verify_algorithm.as_str(),
                    r.verify_config.as_deref(),
                    r.metadata.as_str(),
                    r.schema_version,
                    r.secret_sealed.as_deref(),
                    r.prev_secret_sealed.as_deref(),
                    r.prev_expires_at,
                    hash,
                    prefix,
                    s.expected_updated_at,
                    r.updated_at
                ],
            )
            .await?;
        D::commit(tx).await?;
        Ok(n > 0)
    }

    async fn delete_webhook_source(&self, env: &EnvId, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.db.begin().await?;
        tx.execute(sql!("webhook_deliveries_delete"), args![env.as_str(), id])
            .await?;
        let n = tx
            .execute(sql!("webhook_delete"), args![env.as_str(), id])
            .await?;
        D::commit(tx).await?;
        Ok(n > 0)
    }

    async fn insert_webhook_delivery(
        &self,
        env: &EnvId,
        d: &WebhookDeliveryRow,
    ) -> Result<(), StoreError> {
        let mut tx = self.db.begin().await?;
        tx.execute(
            sql!("webhook_delivery_insert"),
            args![
                d.id.as_str(),
                env.as_str(),
                d.source_id.as_str(),
                d.external_id.as_deref(),
                d.status.as_str(),
                d.event_id.as_deref(),
                d.error.as_deref(),
                d.signature_key.as_str(),
                d.request_body.as_str(),
                d.request_headers.as_str(),
                d.created_at
            ],
        )
        .await?;
        D::commit(tx).await
    }

    async fn list_webhook_deliveries(
        &self,
        env: &EnvId,
        source: &str,
        status: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<WebhookDeliveryRow>, i64), StoreError> {
        let mut conn = self.db.reader().await?;
        let rows = conn
            .fetch_all(
                sql!("webhook_deliveries"),
                args![env.as_str(), source, status, limit, offset],
            )
            .await?;
        let total: i64 = conn
            .scalar(
                sql!("webhook_delivery_count"),
                args![env.as_str(), source, status],
            )
            .await?;
        Ok((rows, total))
    }
}
