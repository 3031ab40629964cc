//! Config documents in the store: whole replacements and shallow merges under a condition
//! (serialised per name, so revisions strictly increase), deletes, reads. Every change appends
//! a `config.updated` / `config.deleted` history entry.

use async_trait::async_trait;
use serde_json::Value;
use sqlx::types::Json;

use super::StoreError;
use super::db::{Db, SqlStore};
use super::sql::{Conn, args, sql};
use super::writes::append_history;
use crate::domain::history::{HistoryKind, NewHistoryEntry};
use crate::domain::kv::KvCondition;
use crate::domain::time::Ts;
use crate::ids::EnvId;

#[async_trait]
pub trait ConfigStore: Send + Sync {
    /// Replaces, merges or deletes a document under its condition.
    async fn config_write(&self, write: &ConfigWrite) -> Result<ConfigOutcome, StoreError>;

    /// The environment's documents (one, when `name` is given), by name.
    async fn configs(
        &self,
        env: &EnvId,
        name: Option<&str>,
    ) -> Result<Vec<ConfigRecord>, StoreError>;
}

/// What a config write does.
#[derive(Debug, Clone)]
pub enum ConfigChange {
    /// Full replacement of the document.
    Replace(serde_json::Map<String, Value>),
    /// Shallow merge of top-level keys (creates the document when absent).
    Merge(serde_json::Map<String, Value>),
    Delete,
}

#[derive(Debug, Clone)]
pub struct ConfigWrite {
    pub env_id: EnvId,
    pub name: String,
    pub change: ConfigChange,
    pub condition: crate::domain::kv::KvCondition,
}

#[derive(Debug, Clone)]
pub struct ConfigRecord {
    pub name: String,
    pub data: Value,
    pub revision: i64,
    pub updated_at: Ts,
}

#[derive(Debug, Clone)]
pub enum ConfigOutcome {
    Written(ConfigRecord),
    Deleted,
    /// The condition did not hold; the current revision (0 when absent).
    ConditionFailed {
        current: i64,
    },
}

#[derive(sqlx::FromRow)]
struct ConfigRow {
    name: String,
    data: Json<Value>,
    revision: i64,
    updated_at: Ts,
}

/// The document as it is now, read under its lock.
#[derive(sqlx::FromRow)]
struct CurrentDocument {
    data: Json<Value>,
    revision: i64,
}

/// What a write does to the current document: `None` for a delete, the new document
/// otherwise (a merge sets the patch's top-level keys over the current ones).
fn next_document(current: Option<&Value>, change: &ConfigChange) -> Option<Value> {
    match change {
        ConfigChange::Delete => None,
        ConfigChange::Replace(doc) => Some(Value::Object(doc.clone())),
        ConfigChange::Merge(patch) => {
            let mut merged = current
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            for (k, v) in patch {
                merged.insert(k.clone(), v.clone());
            }
            Some(Value::Object(merged))
        }
    }
}

fn config_history(env: &EnvId, kind: HistoryKind, payload: Value) -> NewHistoryEntry {
    NewHistoryEntry {
        env_id: env.clone(),
        kind,
        run_id: None,
        function_id: None,
        event_id: None,
        payload,
    }
}

#[async_trait]
impl<D: Db> ConfigStore for SqlStore<D> {
    async fn config_write(&self, w: &ConfigWrite) -> Result<ConfigOutcome, StoreError> {
        let now = Ts::now();
        let mut tx = self.db.begin().await?;
        // A row lock cannot cover a document that does not exist yet; lock its name.
        let lock = format!("config/{}/{}", w.env_id, w.name);
        tx.execute(sql!("config_lock_name"), args![lock.as_str()])
            .await?;
        let current: Option<CurrentDocument> = tx
            .fetch_optional(sql!("config_lock"), args![w.env_id.as_str(), &w.name])
            .await?;
        let revision = current.as_ref().map_or(0, |c| c.revision);
        let holds = match w.condition {
            KvCondition::None => true,
            KvCondition::Absent => current.is_none(),
            KvCondition::Revision(r) => current.is_some() && r == revision,
        };
        if !holds {
            return Ok(ConfigOutcome::ConditionFailed { current: revision });
        }
        let Some(data) = next_document(current.as_ref().map(|c| &c.data.0), &w.change) else {
            if current.is_some() {
                tx.execute(sql!("config_delete"), args![w.env_id.as_str(), &w.name])
                    .await?;
                let payload = serde_json::json!({"name": w.name, "revision": revision});
                let entry = config_history(&w.env_id, HistoryKind::ConfigDeleted, payload);
                append_history(&mut *tx, &entry, now).await?;
            }
            D::commit(tx).await?;
            return Ok(ConfigOutcome::Deleted);
        };
        let next = revision + 1;
        tx.execute(
            sql!("config_upsert"),
            args![w.env_id.as_str(), &w.name, &data, next, now],
        )
        .await?;
        let payload = serde_json::json!({"name": w.name, "revision": next, "data": data});
        let entry = config_history(&w.env_id, HistoryKind::ConfigUpdated, payload);
        append_history(&mut *tx, &entry, now).await?;
        D::commit(tx).await?;
        Ok(ConfigOutcome::Written(ConfigRecord {
            name: w.name.clone(),
            data,
            revision: next,
            updated_at: now,
        }))
    }

    async fn configs(
        &self,
        env: &EnvId,
        name: Option<&str>,
    ) -> Result<Vec<ConfigRecord>, StoreError> {
        let mut conn = self.db.reader().await?;
        let rows: Vec<ConfigRow> = match name {
            Some(n) => {
                conn.fetch_all(sql!("config_get"), args![env.as_str(), n])
                    .await?
            }
            None => {
                conn.fetch_all(sql!("config_list"), args![env.as_str()])
                    .await?
            }
        };
        Ok(rows
            .into_iter()
            .map(|r| ConfigRecord {
                name: r.name,
                data: r.data.0,
                revision: r.revision,
                updated_at: r.updated_at,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merges_set_top_level_keys_and_replacements_replace() {
        let current = json!({"a": 1, "b": {"x": 1}});
        let patch = json!({"b": {"y": 2}, "c": 3})
            .as_object()
            .cloned()
            .expect("object");
        assert_eq!(
            next_document(Some(&current), &ConfigChange::Merge(patch.clone())),
            Some(json!({"a": 1, "b": {"y": 2}, "c": 3}))
        );
        assert_eq!(
            next_document(None, &ConfigChange::Merge(patch.clone())),
            Some(json!({"b": {"y": 2}, "c": 3}))
        );
        assert_eq!(
            next_document(Some(&current), &ConfigChange::Replace(patch)),
            Some(json!({"b": {"y": 2}, "c": 3}))
        );
        assert_eq!(next_document(Some(&current), &ConfigChange::Delete), None);
    }
}
