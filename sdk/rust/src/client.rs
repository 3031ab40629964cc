//! [`Client`]: the REST API (`/api/v1`) for emitting events, invoking functions, reading and
//! cancelling runs, and the Connect JSON calls that register a function and publish to a
//! pub/sub topic.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::{RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::SdkError;
use crate::function::Function;

/// The header that picks an environment other than the API key's default.
pub(crate) const ENVIRONMENT_HEADER: &str = "x-ironflow-environment";

/// A run's status (`GET /api/v1/runs/{id}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Completed,
    Failed,
    Cancelled,
    Paused,
    WaitingForCapacity,
    Waiting,
    /// A status this SDK version does not know.
    #[serde(other)]
    Unknown,
}

impl RunStatus {
    /// A terminal run never changes status again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Paused => "paused",
            Self::WaitingForCapacity => "waiting_for_capacity",
            Self::Waiting => "waiting",
            Self::Unknown => "unknown",
        }
    }
}

/// A run as the server reports it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Run {
    pub id: String,
    pub function_id: String,
    #[serde(default)]
    pub function_version: Option<i64>,
    #[serde(default)]
    pub event_id: Option<String>,
    #[serde(default)]
    pub event_name: Option<String>,
    pub status: RunStatus,
    #[serde(default)]
    pub input: Option<Value>,
    #[serde(default)]
    pub output: Option<Value>,
    /// `{"message", "code", "retryable", ...}` for a failed run.
    #[serde(default)]
    pub error: Option<Value>,
    #[serde(default)]
    pub attempt: i32,
    #[serde(default)]
    pub max_attempts: i32,
    #[serde(default)]
    pub parent_run_id: Option<String>,
    #[serde(default)]
    pub cancellation_cause: Option<String>,
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub updated_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub ended_at: Option<DateTime<Utc>>,
}

/// What `emit` stored: the event and the runs it triggered.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct EmitResult {
    pub event_id: String,
    #[serde(default)]
    pub run_ids: Vec<String>,
    /// The idempotency key was seen before: these are the first emit's ids.
    #[serde(default)]
    pub duplicate: bool,
}

/// What `invoke` started.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct InvokeResult {
    pub run_id: String,
    pub event_id: String,
    #[serde(default)]
    pub duplicate: bool,
}

/// One run's end as a sync call reports it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RunResult {
    pub run_id: String,
    pub function_id: String,
    pub status: RunStatus,
    #[serde(default)]
    pub output: Option<Value>,
    #[serde(default)]
    pub error: Option<Value>,
    /// The run had not ended when the call's timeout passed (it keeps running).
    #[serde(default)]
    pub wait_timed_out: bool,
    #[serde(default)]
    pub duration_ms: Option<i64>,
}

/// The answer of `trigger_sync` / `invoke_sync`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SyncResult {
    pub event_id: String,
    #[serde(default)]
    pub run_ids: Vec<String>,
    #[serde(default)]
    pub duplicate: bool,
    #[serde(default)]
    pub results: Vec<RunResult>,
}

impl SyncResult {
    /// Whether some run had not ended when the timeout passed.
    pub fn timed_out(&self) -> bool {
        self.results.iter().any(|r| r.wait_timed_out)
    }
}

/// Filters for [`Client::runs`]; every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunQuery {
    pub function_id: Option<String>,
    pub statuses: Vec<RunStatus>,
    pub event_id: Option<String>,
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One page of runs, newest first.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RunPage {
    pub runs: Vec<Run>,
    #[serde(default)]
    pub next_cursor: Option<String>,
    #[serde(default)]
    pub has_next: bool,
}

/// The error body every route answers with: `{"code", "message", "error"}`.
#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    error: String,
}

/// A REST client for one server, API key and environment. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    api_key: String,
    environment: Option<String>,
}

impl Client {
    /// `server_url` is the server's base URL (`http://localhost:8080`).
    pub fn new(
        server_url: impl Into<String>,
        api_key: impl Into<String>,
    ) -> Result<Self, SdkError> {
        let base = server_url.into().trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(SdkError::Config(format!(
                "the server URL must start with http:// or https://, not '{base}'"
            )));
        }
        Ok(Self {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .build()?,
            base,
            api_key: api_key.into(),
            environment: None,
        })
    }

    /// Sends every call to this environment (by name) instead of the key's default.
    #[must_use]
    pub fn environment(mut self, environment: impl Into<String>) -> Self {
        self.environment = Some(environment.into());
        self
    }

    pub fn server_url(&self) -> &str {
        &self.base
    }

    fn request(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.api_key);
        if let Some(env) = &self.environment {
            request = request.header(ENVIRONMENT_HEADER, env);
        }
        request
    }

    async fn call<T: DeserializeOwned>(request: RequestBuilder) -> Result<T, SdkError> {
        let response = request.send().await?;
        let status = response.status();
        let body = response.bytes().await?;
        if !status.is_success() {
            return Err(api_error(status, &body));
        }
        serde_json::from_slice(&body).map_err(|e| SdkError::Decode(e.to_string()))
    }

    /// Registers (or updates) a function with `IronflowService/RegisterFunction` (Connect
    /// JSON). Returns whether a new version was stored.
    pub async fn register(&self, function: &Function) -> Result<bool, SdkError> {
        #[derive(Deserialize)]
        struct Registered {
            #[serde(default)]
            created: bool,
        }
        let request = self
            .request(
                reqwest::Method::POST,
                "/ironflow.v1.IronflowService/RegisterFunction",
            )
            .json(&function.registration());
        Ok(Self::call::<Registered>(request).await?.created)
    }

    /// Emits an event; every function it triggers gets a run.
    pub async fn emit(&self, name: &str, data: impl Serialize) -> Result<EmitResult, SdkError> {
        let request = self
            .request(reqwest::Method::POST, "/api/v1/events")
            .json(&json!({"name": name, "data": data}));
        Self::call(request).await
    }

    /// Emits an event and waits (up to `timeout`) for the runs it triggered to end.
    pub async fn trigger_sync(
        &self,
        name: &str,
        data: impl Serialize,
        timeout: Duration,
    ) -> Result<SyncResult, SdkError> {
        let request = self.request(reqwest::Method::POST, "/api/v1/events").json(
            &json!({"name": name, "data": data, "wait": true, "timeout_ms": millis(timeout)}),
        );
        Self::call(request).await
    }

    /// Starts one run of `function_id` with `data` as its input, whatever its triggers.
    pub async fn invoke(
        &self,
        function_id: &str,
        data: impl Serialize,
    ) -> Result<InvokeResult, SdkError> {
        let request = self
            .request(
                reqwest::Method::POST,
                &format!("/api/v1/functions/{}/invoke", segment(function_id)),
            )
            .json(&json!({"data": data}));
        Self::call(request).await
    }

    /// Starts one run of `function_id` and waits (up to `timeout`) for it to end.
    pub async fn invoke_sync(
        &self,
        function_id: &str,
        data: impl Serialize,
        timeout: Duration,
    ) -> Result<SyncResult, SdkError> {
        let request = self
            .request(
                reqwest::Method::POST,
                &format!("/api/v1/functions/{}/invoke", segment(function_id)),
            )
            .json(&json!({"data": data, "wait": true, "timeout_ms": millis(timeout)}));
        Self::call(request).await
    }

    pub async fn run(&self, run_id: &str) -> Result<Run, SdkError> {
        let request = self.request(
            reqwest::Method::GET,
            &format!("/api/v1/runs/{}", segment(run_id)),
        );
        Self::call(request).await
    }

    pub async fn runs(&self, query: &RunQuery) -> Result<RunPage, SdkError> {
        let mut params: Vec<(&str, String)> = Vec::new();
        if let Some(f) = &query.function_id {
            params.push(("function_id", f.clone()));
        }
        if !query.statuses.is_empty() {
            let statuses: Vec<&str> = query.statuses.iter().map(|s| s.as_str()).collect();
            params.push(("status", statuses.join(",")));
        }
        if let Some(e) = &query.event_id {
            params.push(("event_id", e.clone()));
        }
        if let Some(limit) = query.limit {
            params.push(("limit", limit.to_string()));
        }
        if let Some(cursor) = &query.cursor {
            params.push(("cursor", cursor.clone()));
        }
        let request = self
            .request(reqwest::Method::GET, "/api/v1/runs")
            .query(&params);
        Self::call(request).await
    }

    /// Publishes `data` to a pub/sub topic (`PubSubService/Publish`, Connect JSON). With an
    /// `idempotency_key`, publishing again with the same key returns the first message.
    /// Publishing does not trigger functions.
    pub async fn publish(
        &self,
        topic: &str,
        data: impl Serialize,
        idempotency_key: Option<&str>,
    ) -> Result<Published, SdkError> {
        let data = serde_json::to_value(data)
            .map_err(|e| SdkError::Config(format!("the data is not serializable: {e}")))?;
        self.publish_request(topic, &data, idempotency_key, None)
            .await
    }

    /// `publish` from a run's step: the header tells the server which run published.
    pub(crate) async fn publish_for_run(
        &self,
        topic: &str,
        data: &Value,
        idempotency_key: &str,
        run_id: &str,
    ) -> Result<Published, SdkError> {
        self.publish_request(topic, data, Some(idempotency_key), Some(run_id))
            .await
    }

    async fn publish_request(
        &self,
        topic: &str,
        data: &Value,
        idempotency_key: Option<&str>,
        run_id: Option<&str>,
    ) -> Result<Published, SdkError> {
        let mut body = json!({"topic": topic});
        // `PublishRequest.data` is a protobuf Struct: anything but an object travels as
        // `dataValue`.
        match data {
            Value::Null => body["data"] = json!({}),
            Value::Object(_) => body["data"] = data.clone(),
            other => body["dataValue"] = other.clone(),
        }
        if let Some(key) = idempotency_key {
            body["idempotencyKey"] = Value::String(key.to_owned());
        }
        let mut request = self
            .request(reqwest::Method::POST, "/ironflow.v1.PubSubService/Publish")
            .json(&body);
        if let Some(run_id) = run_id {
            request = request.header("x-ironflow-run-id", run_id);
        }
        let published: Published = Self::call(request).await?;
        if published.event_id.is_empty() {
            return Err(SdkError::Decode("the publish answer has no eventId".into()));
        }
        Ok(published)
    }

    /// Cancels a run; returns it as it is after the cancellation.
    pub async fn cancel(&self, run_id: &str) -> Result<Run, SdkError> {
        let request = self
            .request(
                reqwest::Method::POST,
                &format!("/api/v1/runs/{}/cancel", segment(run_id)),
            )
            .json(&json!({}));
        Self::call(request).await
    }
}

/// A published message (`ctx.publish`, [`Client::publish`]). Serialized as the step output
/// the other SDKs store: `{"eventId", "sequence"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Published {
    pub event_id: String,
    /// The message's position in the environment's pub/sub log.
    #[serde(default, deserialize_with = "u64_from_string_or_number")]
    pub sequence: u64,
}

/// Connect JSON writes 64-bit integers as strings; stored step outputs hold numbers.
fn u64_from_string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match Value::deserialize(d)? {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| serde::de::Error::custom("sequence is not a u64")),
        Value::String(s) => s.parse().map_err(serde::de::Error::custom),
        Value::Null => Ok(0),
        other => Err(serde::de::Error::custom(format!(
            "sequence is not a number: {other}"
        ))),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Ids are URL-safe by construction, but a stray `/` or `?` must not change the route.
fn segment(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

fn api_error(status: StatusCode, body: &[u8]) -> SdkError {
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let message = [parsed.message, parsed.error]
        .into_iter()
        .find(|m| !m.is_empty())
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
    SdkError::Api {
        status: status.as_u16(),
        code: parsed.code,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_keep_the_server_message() {
        let e = api_error(
            StatusCode::BAD_REQUEST,
            br#"{"code":"invalid_argument","message":"name is required","error":"name is required"}"#,
        );
        match e {
            SdkError::Api {
                status,
                code,
                message,
            } => {
                assert_eq!(status, 400);
                assert_eq!(code, "invalid_argument");
                assert_eq!(message, "name is required");
            }
            other => panic!("unexpected {other:?}"),
        }
        let e = api_error(StatusCode::BAD_GATEWAY, b"upstream down");
        assert!(e.to_string().contains("upstream down"), "{e}");
        assert!(e.is_transient());
    }

    #[test]
    fn runs_decode_with_unknown_statuses_and_rfc3339_times() {
        let run: Run = serde_json::from_value(json!({
            "id": "run_1", "function_id": "f", "function_version": 1, "status": "someday",
            "attempt": 2, "max_attempts": 3, "output": null, "error": {"message": "x"},
            "created_at": "2026-01-02T03:04:05.123456Z", "ended_at": null,
        }))
        .expect("decodes");
        assert_eq!(run.status, RunStatus::Unknown);
        assert_eq!(run.attempt, 2);
        assert!(run.created_at.is_some());
        assert_eq!(run.ended_at, None);
    }

    #[test]
    fn published_sequences_decode_from_strings_and_numbers() {
        let connect: Published = serde_json::from_value(
            json!({"eventId": "evt_1", "sequence": "12", "duplicate": true}),
        )
        .expect("decodes");
        assert_eq!(connect.sequence, 12);
        let stored: Published =
            serde_json::from_value(json!({"eventId": "evt_1", "sequence": 12})).expect("decodes");
        assert_eq!(stored, connect);
        assert_eq!(
            serde_json::to_value(&stored).expect("encodes"),
            json!({"eventId": "evt_1", "sequence": 12})
        );
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(segment("run_01J-x.y"), "run_01J-x.y");
        assert_eq!(segment("a/b?c"), "a%2Fb%3Fc");
    }
}
