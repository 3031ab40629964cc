//! Webhook sources: events from anywhere. A source has an ingest URL (`POST /webhooks/<token>`,
//! the token kept only as its hash), a signature scheme and secrets (sealed with the master key;
//! on rotation the old one keeps verifying for a grace window). A verified delivery becomes an
//! event `<prefix>.<type>` that triggers functions like any emit, idempotent on the provider's
//! delivery id; a forged or unsigned one is refused before anything is stored.

use std::collections::BTreeMap;

use base64::Engine as _;
use rand::RngCore;
use serde_json::{Value, json};

use crate::domain::pattern::validate_event_name;
use crate::domain::secret::Sealed;
use crate::domain::time::Ts;
use crate::domain::webhook::{self, Delivery, SecretSlot, VerifyConfig};
use crate::ids::{EnvId, EventId};
use crate::store::webhooks::{
    NewWebhookSource, WebhookDeliveryRow, WebhookSourceRow, WebhookSourceSave,
};

use super::events::EmitEvent;
use super::{Engine, EngineError};

const TOKEN_PREFIX: &str = "ifwh_";
/// Headers never kept in the delivery log: anything that may carry a credential (a provider's
/// shared token header such as `X-Gitlab-Token`, an API key, a cookie).
fn logged_header(name: &str) -> bool {
    const CREDENTIAL_WORDS: [&str; 6] = ["auth", "cookie", "token", "secret", "key", "password"];
    !CREDENTIAL_WORDS.iter().any(|w| name.contains(w))
}
/// The most of a delivery's body the log keeps (the event keeps it whole).
const LOGGED_BODY_BYTES: usize = 64 * 1024;

/// What a create asks for.
#[derive(Debug, Clone, Default)]
pub struct NewSource {
    pub name: String,
    pub event_prefix: String,
    pub verify_header: String,
    pub verify_algorithm: String,
    pub verify_secret: String,
    pub metadata: serde_json::Map<String, Value>,
    pub verify_config: Option<VerifyConfig>,
    pub schema_version: i32,
}

/// What an update changes (`None`: kept).
#[derive(Debug, Clone, Default)]
pub struct SourceChanges {
    pub name: Option<String>,
    pub verify_header: Option<String>,
    pub verify_algorithm: Option<String>,
    pub metadata: Option<serde_json::Map<String, Value>>,
    pub verify_config: Option<VerifyConfig>,
    pub schema_version: Option<i32>,
}

/// A source as shown: never a secret; the ingest token only right after it was made.
#[derive(Debug, Clone)]
pub struct SourceView {
    pub row: WebhookSourceRow,
    pub verify_config: Option<VerifyConfig>,
    pub ingest_token: Option<String>,
    pub now: Ts,
}

impl SourceView {
    pub fn secret_set(&self) -> bool {
        self.row.secret_sealed.is_some()
    }

    /// A previous secret still inside its grace window.
    pub fn prev_set(&self) -> bool {
        self.row.prev_secret_sealed.is_some()
            && self.row.prev_expires_at.is_some_and(|t| t > self.now)
    }
}

/// A verification tried without storing anything (`TestWebhookVerifyConfig`).
#[derive(Debug, Clone, Default)]
pub struct VerifyTest {
    pub verified: bool,
    pub check: webhook::Check,
    pub event_name: Option<String>,
    pub dedup_id: Option<String>,
}

/// What an ingest stored.
#[derive(Debug, Clone)]
pub struct Ingested {
    pub event_id: EventId,
    pub run_ids: Vec<crate::ids::RunId>,
    pub duplicate: bool,
    pub delivery_id: String,
}

fn seal_json(sealed: &Sealed) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    json!({"c": b64.encode(&sealed.ciphertext), "n": b64.encode(&sealed.nonce), "k": sealed.key_id})
        .to_string()
}

fn unseal_json(text: &str) -> Option<Sealed> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let v: Value = serde_json::from_str(text).ok()?;
    Some(Sealed {
        ciphertext: b64.decode(v["c"].as_str()?).ok()?,
        nonce: b64.decode(v["n"].as_str()?).ok()?,
        key_id: v["k"].as_str()?.to_owned(),
    })
}

fn new_token() -> (String, String, String) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!("{TOKEN_PREFIX}{}", hex::encode(bytes));
    let prefix = token.chars().take(TOKEN_PREFIX.len() + 8).collect();
    let hash = crate::tenancy::hash_api_key(&token);
    (token, prefix, hash)
}

fn check_prefix(prefix: &str) -> Result<(), EngineError> {
    validate_event_name(prefix)
        .map_err(|e| EngineError::InvalidArgument(format!("event_prefix: {e}")))?;
    if prefix.starts_with("ironflow/") {
        return Err(EngineError::InvalidArgument(
            "event_prefix: the 'ironflow/' prefix is reserved for the server's own events".into(),
        ));
    }
    Ok(())
}

fn check_config(config: Option<&VerifyConfig>) -> Result<(), EngineError> {
    config.map_or(Ok(()), |c| {
        c.validate().map_err(EngineError::InvalidArgument)
    })
}

impl Engine {
    fn webhook_key(&self) -> Result<&crate::domain::secret::MasterKey, EngineError> {
        self.options().master_key.as_ref().ok_or_else(|| {
            EngineError::FailedPrecondition(
                "webhook signature secrets are sealed with the master key: start the server with IRONFLOW_MASTER_KEY set (for example `openssl rand -hex 32`), or create the source without a verify_secret".into(),
            )
        })
    }

    fn seal_webhook_secret(
        &self,
        env: &EnvId,
        id: &str,
        secret: &str,
    ) -> Result<String, EngineError> {
        Ok(seal_json(&self.webhook_key()?.seal(
            env.as_str(),
            &format!("webhook:{id}"),
            secret,
        )))
    }

    fn open_webhook_secret(
        &self,
        env: &str,
        id: &str,
        sealed: &str,
    ) -> Result<String, EngineError> {
        let sealed = unseal_json(sealed).ok_or_else(|| {
            EngineError::FailedPrecondition(format!(
                "webhook source {id}: its stored secret is unreadable"
            ))
        })?;
        self.webhook_key()?
            .open(env, &format!("webhook:{id}"), &sealed)
            .map_err(|e| EngineError::FailedPrecondition(format!("webhook source {id}: {e}")))
    }

    fn view(&self, row: WebhookSourceRow, ingest_token: Option<String>) -> SourceView {
        let verify_config = row
            .verify_config
            .as_deref()
            .and_then(|c| serde_json::from_str(c).ok());
        SourceView {
            row,
            verify_config,
            ingest_token,
            now: Ts::now(),
        }
    }

    pub async fn create_webhook_source(
        &self,
        env: &EnvId,
        input: NewSource,
    ) -> Result<SourceView, EngineError> {
        if input.name.trim().is_empty() {
            return Err(EngineError::InvalidArgument("name is required".into()));
        }
        check_prefix(&input.event_prefix)?;
        check_config(input.verify_config.as_ref())?;
        if input.schema_version < 0 {
            return Err(EngineError::InvalidArgument(
                "schema_version must not be negative".into(),
            ));
        }
        let id = format!("wh_{}", uuid::Uuid::now_v7());
        let secret_sealed = match input.verify_secret.as_str() {
            "" => None,
            secret => Some(self.seal_webhook_secret(env, &id, secret)?),
        };
        let (token, prefix, hash) = new_token();
        let now = Ts::now();
        let row = WebhookSourceRow {
            id,
            env_id: env.to_string(),
            name: input.name,
            event_prefix: input.event_prefix,
            verify_header: input.verify_header,
            verify_algorithm: input.verify_algorithm,
            verify_config: input
                .verify_config
                .as_ref()
                .map(|c| serde_json::to_string(c).unwrap_or_default()),
            metadata: Value::Object(input.metadata).to_string(),
            schema_version: input.schema_version.max(1),
            secret_sealed,
            prev_secret_sealed: None,
            prev_expires_at: None,
            ingest_token_prefix: prefix,
            created_at: now,
            updated_at: now,
        };
        self.store()
            .insert_webhook_source(&NewWebhookSource {
                row: row.clone(),
                ingest_token_hash: hash,
            })
            .await?;
        Ok(self.view(row, Some(token)))
    }

    async fn webhook_row(&self, env: &EnvId, id: &str) -> Result<WebhookSourceRow, EngineError> {
        self.store()
            .webhook_source(env, id)
            .await?
            .ok_or_else(|| EngineError::not_found("webhook source", id))
    }

    pub async fn get_webhook_source(
        &self,
        env: &EnvId,
        id: &str,
    ) -> Result<SourceView, EngineError> {
        Ok(self.view(self.webhook_row(env, id).await?, None))
    }

    pub async fn list_webhook_sources(
        &self,
        env: &EnvId,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<SourceView>, i64), EngineError> {
        let limit = super::page_size(limit, 50, 1000)?;
        if offset < 0 {
            return Err(EngineError::InvalidArgument(
                "offset must not be negative".into(),
            ));
        }
        let (rows, total) = self
            .store()
            .list_webhook_sources(env, limit, offset)
            .await?;
        Ok((
            rows.into_iter().map(|r| self.view(r, None)).collect(),
            total,
        ))
    }

    /// Saves a changed row under optimistic concurrency: `expected` (the caller's token) or
    /// the `updated_at` it was read with.
    async fn save_webhook(
        &self,
        mut row: WebhookSourceRow,
        expected: Option<Ts>,
        new_token: Option<(String, String)>,
    ) -> Result<WebhookSourceRow, EngineError> {
        let read_at = row.updated_at;
        if let Some(expected) = expected
            && expected.0.timestamp_micros() != read_at.0.timestamp_micros()
        {
            return Err(EngineError::Conflict(format!(
                "webhook source {} changed since {} (it was updated at {}); read it again",
                row.id,
                expected.to_rfc3339(),
                read_at.to_rfc3339()
            )));
        }
        row.updated_at = Ts::now().max(read_at.plus(std::time::Duration::from_micros(1)));
        let saved = self
            .store()
            .save_webhook_source(&WebhookSourceSave {
                row: &row,
                expected_updated_at: read_at,
                new_token,
            })
            .await?;
        if !saved {
            return Err(EngineError::Conflict(format!(
                "webhook source {} changed while it was being saved; read it again",
                row.id
            )));
        }
        Ok(row)
    }

    pub async fn update_webhook_source(
        &self,
        env: &EnvId,
        id: &str,
        changes: SourceChanges,
        expected: Option<Ts>,
    ) -> Result<SourceView, EngineError> {
        check_config(changes.verify_config.as_ref())?;
        let mut row = self.webhook_row(env, id).await?;
        if let Some(name) = changes.name.filter(|n| !n.trim().is_empty()) {
            row.name = name;
        }
        if let Some(h) = changes.verify_header {
            row.verify_header = h;
        }
        if let Some(a) = changes.verify_algorithm {
            row.verify_algorithm = a;
        }
        if let Some(m) = changes.metadata {
            row.metadata = Value::Object(m).to_string();
        }
        if let Some(c) = changes.verify_config {
            row.verify_config = Some(serde_json::to_string(&c).unwrap_or_default());
        }
        if let Some(v) = changes.schema_version.filter(|v| *v > 0) {
            row.schema_version = v;
        }
        let row = self.save_webhook(row, expected, None).await?;
        Ok(self.view(row, None))
    }

    /// A new current secret; the old one keeps verifying as the previous for the grace window.
    pub async fn rotate_webhook_secret(
        &self,
        env: &EnvId,
        id: &str,
        secret: &str,
        grace: Option<i32>,
        expected: Option<Ts>,
    ) -> Result<SourceView, EngineError> {
        if secret.is_empty() {
            return Err(EngineError::InvalidArgument(
                "verify_secret must not be empty; use DisableWebhookSignatureVerification to stop verifying".into(),
            ));
        }
        let mut row = self.webhook_row(env, id).await?;
        let sealed = self.seal_webhook_secret(env, id, secret)?;
        retire_current(&mut row, grace);
        row.secret_sealed = Some(sealed);
        let row = self.save_webhook(row, expected, None).await?;
        Ok(self.view(row, None))
    }

    /// Ends the grace window at once: only the current secret verifies.
    pub async fn expire_webhook_prev_secret(
        &self,
        env: &EnvId,
        id: &str,
        expected: Option<Ts>,
    ) -> Result<SourceView, EngineError> {
        let mut row = self.webhook_row(env, id).await?;
        row.prev_secret_sealed = None;
        row.prev_expires_at = None;
        let row = self.save_webhook(row, expected, None).await?;
        Ok(self.view(row, None))
    }

    /// Stops verifying: the current secret is retired (still accepted for the grace window, so
    /// a sender mid-change is not refused), and deliveries without a valid signature pass after it.
    pub async fn disable_webhook_verification(
        &self,
        env: &EnvId,
        id: &str,
        grace: Option<i32>,
        expected: Option<Ts>,
    ) -> Result<SourceView, EngineError> {
        let mut row = self.webhook_row(env, id).await?;
        retire_current(&mut row, grace);
        row.secret_sealed = None;
        let row = self.save_webhook(row, expected, None).await?;
        Ok(self.view(row, None))
    }

    /// A new ingest URL; the old one stops working at once.
    pub async fn rotate_webhook_ingest_token(
        &self,
        env: &EnvId,
        id: &str,
        expected: Option<Ts>,
    ) -> Result<SourceView, EngineError> {
        let mut row = self.webhook_row(env, id).await?;
        let (token, prefix, hash) = new_token();
        row.ingest_token_prefix.clone_from(&prefix);
        let row = self
            .save_webhook(row, expected, Some((hash, prefix)))
            .await?;
        Ok(self.view(row, Some(token)))
    }

    pub async fn delete_webhook_source(&self, env: &EnvId, id: &str) -> Result<(), EngineError> {
        if self.store().delete_webhook_source(env, id).await? {
            Ok(())
        } else {
            Err(EngineError::not_found("webhook source", id))
        }
    }

    pub async fn list_webhook_deliveries(
        &self,
        env: &EnvId,
        source: &str,
        status: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<WebhookDeliveryRow>, i64), EngineError> {
        self.webhook_row(env, source).await?;
        let limit = super::page_size(limit, 50, 1000)?;
        if offset < 0 {
            return Err(EngineError::InvalidArgument(
                "offset must not be negative".into(),
            ));
        }
        Ok(self
            .store()
            .list_webhook_deliveries(env, source, status, limit, offset)
            .await?)
    }

    /// The secrets a source verifies with now: the current one, then the previous one while
    /// its grace lasts.
    fn webhook_secrets(
        &self,
        row: &WebhookSourceRow,
        now: Ts,
    ) -> Result<Vec<(SecretSlot, String)>, EngineError> {
        let mut secrets = Vec::new();
        if let Some(sealed) = &row.secret_sealed {
            secrets.push((
                SecretSlot::Current,
                self.open_webhook_secret(&row.env_id, &row.id, sealed)?,
            ));
        }
        if let (Some(sealed), Some(until)) = (&row.prev_secret_sealed, row.prev_expires_at)
            && until > now
        {
            secrets.push((
                SecretSlot::Previous,
                self.open_webhook_secret(&row.env_id, &row.id, sealed)?,
            ));
        }
        Ok(secrets)
    }

    /// Tries a scheme on a sample delivery, with a given secret or the source's; stores nothing.
    pub async fn test_webhook_verify_config(
        &self,
        env: &EnvId,
        config: Option<VerifyConfig>,
        body: &[u8],
        headers: &BTreeMap<String, String>,
        secret: &str,
        source_id: &str,
    ) -> Result<VerifyTest, EngineError> {
        check_config(config.as_ref())?;
        let now = Ts::now();
        // With the source's stored secret the answer never carries a MAC: the call must not
        // sign a caller's chosen bytes with a secret the caller does not know.
        let mut stored_secret = false;
        let (config, legacy, secrets) = if source_id.is_empty() {
            let secrets = if secret.is_empty() {
                vec![]
            } else {
                vec![(SecretSlot::Current, secret.to_owned())]
            };
            (config, (String::new(), String::new()), secrets)
        } else {
            let row = self.webhook_row(env, source_id).await?;
            let view = self.view(row.clone(), None);
            let secrets = if secret.is_empty() {
                stored_secret = true;
                self.webhook_secrets(&row, now)?
            } else {
                vec![(SecretSlot::Current, secret.to_owned())]
            };
            (
                config.or(view.verify_config),
                (row.verify_header, row.verify_algorithm),
                secrets,
            )
        };
        let headers: BTreeMap<String, String> = headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        let delivery = Delivery {
            headers: &headers,
            body,
        };
        let borrowed: Vec<(SecretSlot, &str)> =
            secrets.iter().map(|(s, v)| (*s, v.as_str())).collect();
        if borrowed.is_empty() {
            return Err(EngineError::InvalidArgument(
                "verify_secret: give a secret to test with, or a source_id whose secret to use"
                    .into(),
            ));
        }
        let mut verified = webhook::verify(
            config.as_ref(),
            (&legacy.0, &legacy.1),
            &delivery,
            &borrowed,
            now.0.timestamp(),
        );
        if stored_secret {
            verified.check.computed_signature.clear();
        }
        Ok(VerifyTest {
            verified: verified.slot.is_some(),
            event_name: delivery.event_type(config.as_ref()),
            dedup_id: delivery.dedup_id(config.as_ref()),
            check: verified.check,
        })
    }

    /// A delivery to an ingest URL: the token names the source; a delivery that does not verify
    /// is refused (`Unauthenticated`) with nothing stored; one that does is emitted as an event
    /// (once per provider delivery id) and logged.
    pub async fn ingest_webhook(
        &self,
        token: &str,
        headers: &BTreeMap<String, String>,
        body: &[u8],
    ) -> Result<Ingested, EngineError> {
        let unknown = || EngineError::NotFound {
            kind: "webhook ingest URL",
            id: "(token withheld)".into(),
        };
        if !token.starts_with(TOKEN_PREFIX) {
            return Err(unknown());
        }
        let row = self
            .store()
            .webhook_source_by_token(&crate::tenancy::hash_api_key(token))
            .await?
            .ok_or_else(unknown)?;
        let env = EnvId::from_stored(row.env_id.clone());
        let view = self.view(row.clone(), None);
        let config = view.verify_config.clone();
        let now = Ts::now();
        // A secret this server cannot open is its operator's problem, not the sender's: a 500
        // (providers retry those) that names nothing, with the reason in the log.
        let secrets = self.webhook_secrets(&row, now).map_err(|e| {
            tracing::error!(source = %row.id, error = %e, "webhook secret cannot be opened");
            EngineError::Store(crate::store::StoreError::Internal(format!(
                "webhook source {}: {e}",
                row.id
            )))
        })?;
        let borrowed: Vec<(SecretSlot, &str)> =
            secrets.iter().map(|(s, v)| (*s, v.as_str())).collect();
        let delivery = Delivery { headers, body };
        let mut verified = webhook::verify(
            config.as_ref(),
            (&row.verify_header, &row.verify_algorithm),
            &delivery,
            &borrowed,
            now.0.timestamp(),
        );
        if row.secret_sealed.is_none() && verified.slot.is_none() {
            // Verification is off: a delivery signed with the retired secret shows as `prev`,
            // any other passes unsigned.
            verified.slot = Some(SecretSlot::Unsigned);
        }
        let Some(slot) = verified.slot else {
            metrics::counter!("ironflow_webhook_deliveries_refused_total").increment(1);
            tracing::warn!(source = %row.id, reason = ?verified.check.error, "webhook delivery refused");
            return Err(EngineError::Unauthenticated(format!(
                "the delivery's signature did not verify: {}",
                verified
                    .check
                    .error
                    .unwrap_or_else(|| "no signature matches".into())
            )));
        };
        let event_type = delivery.event_type(config.as_ref());
        let name = webhook::event_name(&row.event_prefix, event_type.as_deref());
        validate_event_name(&name).map_err(|e| {
            EngineError::InvalidArgument(format!(
                "the delivery's event type makes the event name '{name}', which is not valid: {e}"
            ))
        })?;
        let external_id = delivery.dedup_id(config.as_ref());
        let data = serde_json::from_slice::<Value>(body)
            .unwrap_or_else(|_| json!({"body": String::from_utf8_lossy(body)}));
        let emitted = self
            .emit_to(
                &env,
                EmitEvent {
                    name,
                    data,
                    metadata: json!({"webhook_source_id": row.id, "webhook_delivery_id": external_id,
                                     "signature_key": slot.as_str()}),
                    idempotency_key: external_id.as_ref().map(|id| delivery_key(&row.id, id)),
                    source: "webhook".to_owned(),
                    version: row.schema_version,
                    emitted_by_run: None,
                },
                None,
            )
            .await?;
        let kept: BTreeMap<&String, &String> =
            headers.iter().filter(|(k, _)| logged_header(k)).collect();
        let logged = &body[..body.len().min(LOGGED_BODY_BYTES)];
        let delivery_row = WebhookDeliveryRow {
            id: format!("whd_{}", uuid::Uuid::now_v7()),
            source_id: row.id.clone(),
            external_id,
            status: if emitted.duplicate {
                "duplicate"
            } else {
                "accepted"
            }
            .to_owned(),
            event_id: Some(emitted.event_id.to_string()),
            error: None,
            signature_key: slot.as_str().to_owned(),
            request_body: String::from_utf8_lossy(logged).into_owned(),
            request_headers: serde_json::to_string(&kept).unwrap_or_default(),
            created_at: now,
        };
        self.store()
            .insert_webhook_delivery(&env, &delivery_row)
            .await?;
        metrics::counter!("ironflow_webhook_deliveries_total").increment(1);
        Ok(Ingested {
            event_id: emitted.event_id,
            run_ids: emitted.run_ids,
            duplicate: emitted.duplicate,
            delivery_id: delivery_row.id,
        })
    }
}

/// The idempotency key of a provider's delivery id (hashed when long, so any id fits the key's
/// 256 bytes).
fn delivery_key(source: &str, id: &str) -> String {
    if id.len() <= 128 {
        format!("webhook:{source}:{id}")
    } else {
        format!(
            "webhook:{source}:sha256:{}",
            crate::tenancy::hash_api_key(id)
        )
    }
}

/// Moves the current secret to the previous slot for the grace window (none: dropped at once).
fn retire_current(row: &mut WebhookSourceRow, grace: Option<i32>) {
    let grace = webhook::grace_secs(grace);
    match (&row.secret_sealed, grace) {
        (Some(current), g) if g > 0 => {
            row.prev_secret_sealed = Some(current.clone());
            row.prev_expires_at = Some(Ts::now().plus(std::time::Duration::from_secs(
                u64::try_from(g).unwrap_or(0),
            )));
        }
        _ => {
            row.prev_secret_sealed = None;
            row.prev_expires_at = None;
        }
    }
}
