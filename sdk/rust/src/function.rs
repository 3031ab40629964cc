//! Function definitions: the [`Function`] builder (triggers, retries, timeout, concurrency,
//! secrets, the typed handler) and its registration body (`IronflowService/RegisterFunction`
//! in Connect proto-JSON).

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::ctx::Ctx;
use crate::error::FnError;

/// The type-erased handler: event data in, output JSON out. Typed handlers are wrapped into
/// this once, at definition time, so the worker deals with one shape.
pub(crate) type Handler =
    Arc<dyn Fn(Ctx, Value) -> BoxFuture<'static, Result<Value, FnError>> + Send + Sync>;

/// When the server retries a failed run: `max_attempts` in all (the first one included),
/// waiting `initial_delay_ms * backoff_factor^(attempt-1)`, capped at `max_delay_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    pub max_attempts: i32,
    pub initial_delay_ms: i32,
    pub backoff_factor: f64,
    pub max_delay_ms: i32,
}

impl Default for RetryPolicy {
    /// The server's defaults (3 attempts, 1 s doubling, at most 5 min).
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_delay_ms: 1_000,
            backoff_factor: 2.0,
            max_delay_ms: 300_000,
        }
    }
}

/// An event trigger: a name (NATS wildcards `*` and `>` allowed) and an optional CEL
/// expression over `event` / `data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Trigger {
    pub event: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
}

/// At most `limit` runs at once, per value of the CEL `key` expression when one is given
/// (e.g. `event.data.customer`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Concurrency {
    pub limit: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A durable function: its definition and its handler.
///
/// ```
/// use ironflow_sdk::{Ctx, FnError, Function, RetryPolicy};
/// use std::time::Duration;
///
/// let f = Function::new("send-receipt")
///     .trigger("order.created")
///     .retry(RetryPolicy { max_attempts: 5, ..RetryPolicy::default() })
///     .timeout(Duration::from_secs(60))
///     .handler(|_ctx: Ctx, order: serde_json::Value| async move {
///         Ok::<_, FnError>(serde_json::json!({ "sent_to": order["email"] }))
///     });
/// assert_eq!(f.id(), "send-receipt");
/// ```
#[derive(Clone)]
pub struct Function {
    id: String,
    triggers: Vec<Trigger>,
    retry: Option<RetryPolicy>,
    timeout: Option<Duration>,
    concurrency: Option<Concurrency>,
    secrets: Vec<String>,
    pub(crate) handler: Option<Handler>,
}

impl fmt::Debug for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Function")
            .field("id", &self.id)
            .field("triggers", &self.triggers)
            .field("retry", &self.retry)
            .field("timeout", &self.timeout)
            .field("concurrency", &self.concurrency)
            .field("secrets", &self.secrets)
            .field("has_handler", &self.handler.is_some())
            .finish()
    }
}

impl Function {
    /// A function with this id and no triggers yet (it can still be invoked by id).
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            triggers: Vec::new(),
            retry: None,
            timeout: None,
            concurrency: None,
            secrets: Vec::new(),
            handler: None,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Runs on every event named `event` (`order.created`, `order.*`, `order.>`).
    #[must_use]
    pub fn trigger(mut self, event: impl Into<String>) -> Self {
        self.triggers.push(Trigger {
            event: event.into(),
            expression: None,
        });
        self
    }

    /// Runs on events named `event` for which the CEL `expression` is true
    /// (`data.amount > 100`).
    #[must_use]
    pub fn trigger_if(mut self, event: impl Into<String>, expression: impl Into<String>) -> Self {
        self.triggers.push(Trigger {
            event: event.into(),
            expression: Some(expression.into()),
        });
        self
    }

    #[must_use]
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// The whole run (all attempts, sleeps and waits included) must end within this time;
    /// the server fails it with `RUN_TIMEOUT` otherwise.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// At most `limit` runs of this function at once, per value of `key` (a CEL expression)
    /// when given.
    #[must_use]
    pub fn concurrency(mut self, limit: i32, key: Option<&str>) -> Self {
        self.concurrency = Some(Concurrency {
            limit,
            key: key.map(str::to_owned),
        });
        self
    }

    /// Secrets the server injects into this function's jobs ([`Ctx::secret`]).
    #[must_use]
    pub fn secrets<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.secrets.extend(names.into_iter().map(Into::into));
        self
    }

    /// The code run for each job: `input` is the triggering event's `data` (or the invoke
    /// input), deserialized into `I`; the output is serialized as the run's output.
    #[must_use]
    pub fn handler<I, O, F, Fut>(mut self, handler: F) -> Self
    where
        I: DeserializeOwned + Send + 'static,
        O: Serialize + 'static,
        F: Fn(Ctx, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, FnError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        self.handler = Some(Arc::new(move |ctx: Ctx, data: Value| {
            let handler = handler.clone();
            async move {
                let input: I = serde_json::from_value(data).map_err(|e| {
                    FnError::non_retryable(format!("the event data does not fit the input: {e}"))
                        .code("INVALID_INPUT")
                })?;
                let output = handler(ctx, input).await?;
                serde_json::to_value(output).map_err(|e| {
                    FnError::non_retryable(format!("the output is not serializable: {e}"))
                        .code("INVALID_OUTPUT")
                })
            }
            .boxed()
        }));
        self
    }

    /// The Connect proto-JSON body of `RegisterFunction` (lowerCamelCase field names). The
    /// worker registers its functions in pull mode.
    pub(crate) fn registration(&self) -> Value {
        let mut body = serde_json::json!({
            "id": self.id,
            "triggers": self.triggers,
            "secrets": self.secrets,
            "preferredMode": "EXECUTION_MODE_PULL",
        });
        if let Some(retry) = &self.retry {
            body["retry"] = serde_json::to_value(retry).unwrap_or(Value::Null);
        }
        if let Some(timeout) = self.timeout {
            body["timeoutMs"] = Value::from(i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX));
        }
        if let Some(concurrency) = &self.concurrency {
            body["concurrency"] = serde_json::to_value(concurrency).unwrap_or(Value::Null);
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn registration_uses_proto_json_names() {
        let f = Function::new("bill")
            .trigger("order.created")
            .trigger_if("order.*", "data.amount > 100")
            .retry(RetryPolicy {
                max_attempts: 4,
                initial_delay_ms: 10,
                backoff_factor: 1.5,
                max_delay_ms: 1_000,
            })
            .timeout(Duration::from_secs(60))
            .concurrency(2, Some("event.data.customer"))
            .secrets(["STRIPE_KEY"]);
        assert_eq!(
            f.registration(),
            json!({
                "id": "bill",
                "triggers": [
                    {"event": "order.created"},
                    {"event": "order.*", "expression": "data.amount > 100"},
                ],
                "retry": {"maxAttempts": 4, "initialDelayMs": 10, "backoffFactor": 1.5, "maxDelayMs": 1000},
                "timeoutMs": 60000,
                "concurrency": {"limit": 2, "key": "event.data.customer"},
                "secrets": ["STRIPE_KEY"],
                "preferredMode": "EXECUTION_MODE_PULL",
            })
        );
    }

    #[test]
    fn minimal_registration_leaves_options_out() {
        assert_eq!(
            Function::new("f").registration(),
            json!({"id": "f", "triggers": [], "secrets": [], "preferredMode": "EXECUTION_MODE_PULL"})
        );
    }
}
