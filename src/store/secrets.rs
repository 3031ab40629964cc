//! Secrets in the store: sealed values (AES-256-GCM ciphertext, nonce, key id — never clear
//! text), metadata, and a `secret.changed` history entry per change (never the value).

use async_trait::async_trait;
use serde_json::Value;

use super::StoreError;
use super::db::{Db, SqlStore};
use super::sql::{Conn, args, sql};
use super::writes::append_history;
use crate::domain::history::{HistoryKind, NewHistoryEntry};
use crate::domain::secret::Sealed;
use crate::domain::time::Ts;
use crate::ids::EnvId;

#[async_trait]
pub trait SecretStore: Send + Sync {
    /// False when a secret of that name exists.
    async fn secret_create(
        &self,
        env: &EnvId,
        name: &str,
        description: &str,
        sealed: &Sealed,
    ) -> Result<bool, StoreError>;

    /// A new value and/or description; false when there is no such secret.
    async fn secret_update(
        &self,
        env: &EnvId,
        name: &str,
        sealed: Option<&Sealed>,
        description: Option<&str>,
    ) -> Result<bool, StoreError>;

    async fn secret_delete(&self, env: &EnvId, name: &str) -> Result<bool, StoreError>;

    /// Metadata (one secret, when `name` is given), by name.
    async fn secret_meta(
        &self,
        env: &EnvId,
        name: Option<&str>,
    ) -> Result<Vec<SecretMeta>, StoreError>;

    /// The sealed values of the named secrets that exist (to inject into a run).
    async fn secret_sealed(
        &self,
        env: &EnvId,
        names: &[String],
    ) -> Result<Vec<(String, Sealed)>, StoreError>;

    /// The ids of the master keys stored secrets were sealed with.
    async fn secret_key_ids(&self) -> Result<Vec<String>, StoreError>;
}

/// A secret's metadata (never its value).
#[derive(Debug, Clone)]
pub struct SecretMeta {
    pub name: String,
    pub description: String,
    pub revision: i64,
    pub created_at: Ts,
    pub updated_at: Ts,
}

#[derive(sqlx::FromRow)]
struct SecretMetaRow {
    name: String,
    description: String,
    revision: i64,
    created_at: Ts,
    updated_at: Ts,
}

#[derive(sqlx::FromRow)]
struct SealedRow {
    name: String,
    ciphertext: Vec<u8>,
    nonce: Vec<u8>,
    key_id: String,
}

fn secret_history(env: &EnvId, payload: Value) -> NewHistoryEntry {
    NewHistoryEntry {
        env_id: env.clone(),
        kind: HistoryKind::SecretChanged,
        run_id: None,
        function_id: None,
        event_id: None,
        payload,
    }
}

#[async_trait]
impl<D: Db> SecretStore for SqlStore<D> {
    async fn secret_create(
        &self,
        env: &EnvId,
        name: &str,
        description: &str,
        sealed: &Sealed,
    ) -> Result<bool, StoreError> {
        let now = Ts::now();
        let mut tx = self.db.begin().await?;
        let created: Option<i64> = tx
            .scalar_optional(
                sql!("secret_insert"),
                args![
                    env.as_str(),
                    name,
                    description,
                    sealed.ciphertext.as_slice(),
                    sealed.nonce.as_slice(),
                    &sealed.key_id,
                    now,
                ],
            )
            .await?;
        if created.is_some() {
            let payload =
                serde_json::json!({"name": name, "action": "created", "key_id": sealed.key_id});
            append_history(&mut *tx, &secret_history(env, payload), now).await?;
        }
        D::commit(tx).await?;
        Ok(created.is_some())
    }

    async fn secret_update(
        &self,
        env: &EnvId,
        name: &str,
        sealed: Option<&Sealed>,
        description: Option<&str>,
    ) -> Result<bool, StoreError> {
        let now = Ts::now();
        let mut tx = self.db.begin().await?;
        let updated = tx
            .execute(
                sql!("secret_update"),
                args![
                    env.as_str(),
                    name,
                    sealed.map(|s| s.ciphertext.as_slice()),
                    sealed.map(|s| s.nonce.as_slice()),
                    sealed.map(|s| s.key_id.as_str()),
                    description,
                    now,
                ],
            )
            .await?;
        if updated > 0 {
            let payload = serde_json::json!({"name": name, "action": "updated", "value_changed": sealed.is_some()});
            append_history(&mut *tx, &secret_history(env, payload), now).await?;
        }
        D::commit(tx).await?;
        Ok(updated > 0)
    }

    async fn secret_delete(&self, env: &EnvId, name: &str) -> Result<bool, StoreError> {
        let now = Ts::now();
        let mut tx = self.db.begin().await?;
        let deleted = tx
            .execute(sql!("secret_delete"), args![env.as_str(), name])
            .await?;
        if deleted > 0 {
            let payload = serde_json::json!({"name": name, "action": "deleted"});
            append_history(&mut *tx, &secret_history(env, payload), now).await?;
        }
        D::commit(tx).await?;
        Ok(deleted > 0)
    }

    async fn secret_meta(
        &self,
        env: &EnvId,
        name: Option<&str>,
    ) -> Result<Vec<SecretMeta>, StoreError> {
        let rows: Vec<SecretMetaRow> = self
            .db
            .reader()
            .await?
            .fetch_all(sql!("secret_meta"), args![env.as_str(), name])
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| SecretMeta {
                name: r.name,
                description: r.description,
                revision: r.revision,
                created_at: r.created_at,
                updated_at: r.updated_at,
            })
            .collect())
    }

    async fn secret_sealed(
        &self,
        env: &EnvId,
        names: &[String],
    ) -> Result<Vec<(String, Sealed)>, StoreError> {
        if names.is_empty() {
            return Ok(vec![]);
        }
        let names = Value::from(names.to_vec());
        let rows: Vec<SealedRow> = self
            .db
            .reader()
            .await?
            .fetch_all(sql!("secret_ciphertexts"), args![env.as_str(), &names])
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    r.name,
                    Sealed {
                        ciphertext: r.ciphertext,
                        nonce: r.nonce,
                        key_id: r.key_id,
                    },
                )
            })
            .collect())
    }

    async fn secret_key_ids(&self) -> Result<Vec<String>, StoreError> {
        self.db
            .reader()
            .await?
            .scalars(sql!("secret_key_ids"), args![])
            .await
    }
}
