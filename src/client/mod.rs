//! The client side of the binary: `ironflow runs|events|functions|history` and `ironflow
//! inspect` talk to a running server over its REST and Connect JSON APIs, as any other client
//! would (no database access).

pub mod commands;
pub mod table;

use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

/// Where the server is and which key to use.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub server_url: String,
    pub api_key: Option<String>,
    pub environment: Option<String>,
}

/// What went wrong talking to the server, in words a person can act on.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the server at {url}: {detail}\n(is `ironflow serve` running? set --server or IRONFLOW_SERVER_URL)"
    )]
    Unreachable { url: String, detail: String },
    #[error(
        "the server refused the API key ({status}): {message}\n(set --api-key or IRONFLOW_API_KEY to a key of this server)"
    )]
    Unauthorized { status: u16, message: String },
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("{0}")]
    Invalid(String),
}

/// A cheap handle on one server.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    options: ClientOptions,
}

impl Client {
    pub fn new(options: ClientOptions) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ClientError::Invalid(format!("HTTP client: {e}")))?;
        let mut options = options;
        options.server_url = options.server_url.trim_end_matches('/').to_owned();
        Ok(Self { http, options })
    }

    pub fn server_url(&self) -> &str {
        &self.options.server_url
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut rb = self
            .http
            .request(method, format!("{}{path}", self.options.server_url));
        if let Some(key) = &self.options.api_key {
            rb = rb.bearer_auth(key);
        }
        if let Some(env) = &self.options.environment {
            rb = rb.header("X-Ironflow-Environment-ID", env);
        }
        rb
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Result<Value, ClientError> {
        let response = rb.send().await.map_err(|e| ClientError::Unreachable {
            url: self.options.server_url.clone(),
            detail: e.without_url().to_string(),
        })?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let message = body["message"]
            .as_str()
            .unwrap_or("the server gave no message")
            .to_owned();
        if status == 401 {
            return Err(ClientError::Unauthorized { status, message });
        }
        Err(ClientError::Api {
            status,
            code: body["code"].as_str().unwrap_or("unknown").to_owned(),
            message,
        })
    }

    /// `GET path?query`.
    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ClientError> {
        self.send(self.request(reqwest::Method::GET, path).query(query))
            .await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.send(self.request(reqwest::Method::POST, path).json(body))
            .await
    }

    /// A Connect unary call with the JSON codec: `POST /ironflow.v1.<service>/<method>`.
    pub async fn call(
        &self,
        service: &str,
        method: &str,
        body: &Value,
    ) -> Result<Value, ClientError> {
        self.post(&format!("/ironflow.v1.{service}/{method}"), body)
            .await
    }

    pub async fn run(&self, id: &str) -> Result<Value, ClientError> {
        self.get(&format!("/api/v1/runs/{id}"), &[]).await
    }

    pub async fn steps(&self, id: &str) -> Result<Vec<Value>, ClientError> {
        let body = self.get(&format!("/api/v1/runs/{id}/steps"), &[]).await?;
        Ok(body["steps"].as_array().cloned().unwrap_or_default())
    }

    /// The run's timeline (`TimeTravelService/GetRunTimeline`), oldest first.
    pub async fn timeline(&self, id: &str) -> Result<Vec<Value>, ClientError> {
        let body = self
            .call(
                "TimeTravelService",
                "GetRunTimeline",
                &json!({"run_id": id}),
            )
            .await?;
        Ok(body["events"].as_array().cloned().unwrap_or_default())
    }

    /// The run's state at `at` (RFC 3339; `None` = now), its byte payloads decoded as JSON.
    pub async fn state_at(&self, id: &str, at: Option<&str>) -> Result<Value, ClientError> {
        let mut req = json!({"run_id": id});
        if let Some(at) = at {
            req["timestamp"] = json!(at);
        }
        let body = self
            .call("TimeTravelService", "GetRunStateAt", &req)
            .await?;
        let mut snapshot = body["snapshot"].clone();
        decode_payload(&mut snapshot, "input");
        if let Some(steps) = snapshot["steps"].as_array_mut() {
            for step in steps {
                for field in ["output", "error", "originalOutput"] {
                    decode_payload(step, field);
                }
            }
        }
        Ok(snapshot)
    }
}

/// A Connect JSON `bytes` field carrying JSON text, decoded in place (absent stays absent).
pub fn decode_payload(object: &mut Value, field: &str) {
    let Some(raw) = object.get(field).and_then(Value::as_str) else {
        return;
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(raw)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok());
    if let Some(value) = decoded {
        object[field] = value;
    }
}

/// JSON text as a Connect JSON `bytes` field.
pub fn encode_payload(value: &Value) -> String {
    base64::engine::general_purpose::STANDARD.encode(value.to_string())
}
