//! `data_store!`: environment config documents and encrypted secrets, instantiated per backend
//! like `sql_store!`. Config and secret changes append to the history (never secret values).

macro_rules! data_store {
    ($store:ty, $db:ty, $dir:literal) => {
        macro_rules! dsql {
            ($name:literal) => {
                include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/sql/", $dir, "/", $name, ".sql"))
            };
        }

        type ConfigRow = (String, sqlx::types::Json<serde_json::Value>, i64, $crate::store::time::Ts);

        fn data_history(
            env: &$crate::ids::EnvId,
            kind: $crate::domain::history::HistoryKind,
            payload: serde_json::Value,
        ) -> $crate::domain::history::NewHistoryEntry {
            $crate::domain::history::NewHistoryEntry {
                env_id: env.clone(),
                kind,
                run_id: None,
                function_id: None,
                event_id: None,
                payload,
            }
        }

        impl $store {
            async fn config_write_impl(
                &self,
                w: &$crate::store::model::ConfigWrite,
            ) -> Result<$crate::store::model::ConfigOutcome, $crate::store::StoreError> {
                use $crate::domain::history::HistoryKind;
                use $crate::domain::kv::KvCondition;
                use $crate::store::model::{ConfigChange, ConfigOutcome, ConfigRecord};
                let now = $crate::store::time::Ts::now();
                let mut tx = self.writer().begin().await?;
                // A row lock cannot cover a document that does not exist yet; lock its name.
                sqlx::query(dsql!("config_lock_name"))
                    .bind(format!("config/{}/{}", w.env_id, w.name))
                    .execute(&mut *tx)
                    .await?;
                let current: Option<(sqlx::types::Json<serde_json::Value>, i64)> = sqlx::query_as(dsql!("config_lock"))
                    .bind(w.env_id.as_str())
                    .bind(&w.name)
                    .fetch_optional(&mut *tx)
                    .await?;
                let revision = current.as_ref().map_or(0, |c| c.1);
                let holds = match w.condition {
                    KvCondition::None => true,
                    KvCondition::Absent => current.is_none(),
                    KvCondition::Revision(r) => current.is_some() && r == revision,
                };
                if !holds {
                    return Ok(ConfigOutcome::ConditionFailed { current: revision });
                }
                let data = match &w.change {
                    ConfigChange::Delete => {
                        if current.is_some() {
                            sqlx::query(dsql!("config_delete")).bind(w.env_id.as_str()).bind(&w.name).execute(&mut *tx).await?;
                            let payload = serde_json::json!({"name": w.name, "revision": revision});
                            append_history(&mut tx, &data_history(&w.env_id, HistoryKind::ConfigDeleted, payload), now).await?;
                        }
                        tx.commit().await?;
                        return Ok(ConfigOutcome::Deleted);
                    }
                    ConfigChange::Replace(doc) => serde_json::Value::Object(doc.clone()),
                    ConfigChange::Merge(patch) => {
                        let mut merged = current
                            .as_ref()
                            .and_then(|c| c.0 .0.as_object().cloned())
                            .unwrap_or_default();
                        for (k, v) in patch {
                            merged.insert(k.clone(), v.clone());
                        }
                        serde_json::Value::Object(merged)
                    }
                };
                let next = revision + 1;
                sqlx::query(dsql!("config_upsert"))
                    .bind(w.env_id.as_str())
                    .bind(&w.name)
                    .bind(sqlx::types::Json(&data))
                    .bind(next)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                let payload = serde_json::json!({"name": w.name, "revision": next, "data": data});
                append_history(&mut tx, &data_history(&w.env_id, HistoryKind::ConfigUpdated, payload), now).await?;
                tx.commit().await?;
                Ok(ConfigOutcome::Written(ConfigRecord { name: w.name.clone(), data, revision: next, updated_at: now }))
            }

            async fn configs_impl(
                &self,
                env: &$crate::ids::EnvId,
                name: Option<&str>,
            ) -> Result<Vec<$crate::store::model::ConfigRecord>, $crate::store::StoreError> {
                let rows: Vec<ConfigRow> = match name {
                    Some(n) => sqlx::query_as(dsql!("config_get")).bind(env.as_str()).bind(n).fetch_all(self.reader()).await?,
                    None => sqlx::query_as(dsql!("config_list")).bind(env.as_str()).fetch_all(self.reader()).await?,
                };
                Ok(rows
                    .into_iter()
                    .map(|r| $crate::store::model::ConfigRecord { name: r.0, data: r.1 .0, revision: r.2, updated_at: r.3 })
                    .collect())
            }

            async fn secret_create_impl(
                &self,
                env: &$crate::ids::EnvId,
                name: &str,
                description: &str,
                sealed: &$crate::domain::secret::Sealed,
            ) -> Result<bool, $crate::store::StoreError> {
                let now = $crate::store::time::Ts::now();
                let mut tx = self.writer().begin().await?;
                let created: Option<i64> = sqlx::query_scalar(dsql!("secret_insert"))
                    .bind(env.as_str())
                    .bind(name)
                    .bind(description)
                    .bind(&sealed.ciphertext)
                    .bind(&sealed.nonce)
                    .bind(&sealed.key_id)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?;
                if created.is_some() {
                    let payload = serde_json::json!({"name": name, "action": "created", "key_id": sealed.key_id});
                    append_history(&mut tx, &data_history(env, $crate::domain::history::HistoryKind::SecretChanged, payload), now).await?;
                }
                tx.commit().await?;
                Ok(created.is_some())
            }

            async fn secret_update_impl(
                &self,
                env: &$crate::ids::EnvId,
                name: &str,
                sealed: Option<&$crate::domain::secret::Sealed>,
                description: Option<&str>,
            ) -> Result<bool, $crate::store::StoreError> {
                let now = $crate::store::time::Ts::now();
                let mut tx = self.writer().begin().await?;
                let done = sqlx::query(dsql!("secret_update"))
                    .bind(env.as_str())
                    .bind(name)
                    .bind(sealed.map(|s| s.ciphertext.clone()))
                    .bind(sealed.map(|s| s.nonce.clone()))
                    .bind(sealed.map(|s| s.key_id.clone()))
                    .bind(description)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() > 0 {
                    let payload = serde_json::json!({"name": name, "action": "updated", "value_changed": sealed.is_some()});
                    append_history(&mut tx, &data_history(env, $crate::domain::history::HistoryKind::SecretChanged, payload), now).await?;
                }
                tx.commit().await?;
                Ok(done.rows_affected() > 0)
            }

            async fn secret_delete_impl(&self, env: &$crate::ids::EnvId, name: &str) -> Result<bool, $crate::store::StoreError> {
                let now = $crate::store::time::Ts::now();
                let mut tx = self.writer().begin().await?;
                let done = sqlx::query(dsql!("secret_delete")).bind(env.as_str()).bind(name).execute(&mut *tx).await?;
                if done.rows_affected() > 0 {
                    let payload = serde_json::json!({"name": name, "action": "deleted"});
                    append_history(&mut tx, &data_history(env, $crate::domain::history::HistoryKind::SecretChanged, payload), now).await?;
                }
                tx.commit().await?;
                Ok(done.rows_affected() > 0)
            }

            async fn secret_meta_impl(
                &self,
                env: &$crate::ids::EnvId,
                name: Option<&str>,
            ) -> Result<Vec<$crate::store::model::SecretMeta>, $crate::store::StoreError> {
                let rows: Vec<(String, String, i64, $crate::store::time::Ts, $crate::store::time::Ts)> =
                    sqlx::query_as(dsql!("secret_meta")).bind(env.as_str()).bind(name).fetch_all(self.reader()).await?;
                Ok(rows
                    .into_iter()
                    .map(|r| $crate::store::model::SecretMeta { name: r.0, description: r.1, revision: r.2, created_at: r.3, updated_at: r.4 })
                    .collect())
            }

            async fn secret_sealed_impl(
                &self,
                env: &$crate::ids::EnvId,
                names: &[String],
            ) -> Result<Vec<(String, $crate::domain::secret::Sealed)>, $crate::store::StoreError> {
                if names.is_empty() {
                    return Ok(vec![]);
                }
                let rows: Vec<(String, Vec<u8>, Vec<u8>, String)> = sqlx::query_as(dsql!("secret_ciphertexts"))
                    .bind(env.as_str())
                    .bind(sqlx::types::Json(names))
                    .fetch_all(self.reader())
                    .await?;
                Ok(rows
                    .into_iter()
                    .map(|r| (r.0, $crate::domain::secret::Sealed { ciphertext: r.1, nonce: r.2, key_id: r.3 }))
                    .collect())
            }
        }
    };
}

pub(crate) use data_store;
