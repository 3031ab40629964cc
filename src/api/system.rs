//! Operational endpoints: unauthenticated `/health`, `/ready`, `/metrics`; capabilities and the
//! dashboard's overview figures.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::domain::time::Ts;

use super::AppState;
use super::auth::RequestContext;
use super::error::ApiError;

/// Liveness: the process answers. Does not touch the database.
pub async fn health(State(state): State<AppState>) -> Json<serde_json::Value> {
    let warnings: Vec<&str> = if state.auth.dev_mode() {
        vec!["authentication is disabled (--dev)"]
    } else {
        vec![]
    };
    Json(json!({
        "status": "ok",
        "timestamp": Ts::now().to_rfc3339(),
        "version": env!("CARGO_PKG_VERSION"),
        "warnings": warnings,
    }))
}

/// Readiness: the database answers. 503 with the reason otherwise.
pub async fn ready(State(state): State<AppState>) -> Response {
    match state.engine.ping().await {
        Ok(()) => Json(json!({"status": "ready", "issues": {}, "warnings": {}})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "not_ready", "issues": {"database": "unreachable"}, "warnings": {}})),
            )
                .into_response()
        }
    }
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(handle) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4",
            )],
            handle.render(),
        )
            .into_response(),
        None => ApiError::not_found("metrics are not enabled in this process").into_response(),
    }
}

/// `GET /api/v1/overview`: queue depth per function (zeros included), schedule-to-start p50 /
/// p99 of the newest runs, connected workers, breakers not closed.
pub async fn overview(
    State(state): State<AppState>,
    ctx: RequestContext,
) -> Result<Json<serde_json::Value>, ApiError> {
    let o = state.engine.overview(&ctx.env).await?;
    Ok(Json(json!({
        "queue": o.queue.iter().map(|q| json!({
            "function_id": q.function_id, "ready": q.ready, "scheduled": q.scheduled, "leased": q.leased,
        })).collect::<Vec<_>>(),
        "schedule_to_start_ms": o.schedule_to_start_ms,
        "workers": o.workers,
        "open_breakers": o.open_breakers.iter().map(crate::engine::breaker_document).collect::<Vec<_>>(),
    })))
}

/// `GET /api/v1/capabilities`
pub async fn capabilities(
    State(state): State<AppState>,
    _ctx: RequestContext,
) -> Json<serde_json::Value> {
    Json(json!({
        "transports": ["rest", "connect", "grpc"],
        "features": ["events", "functions", "runs", "history", "idempotency", "cel_filters", "wildcard_triggers",
                     "time_travel", "run_control", "entity_streams", "event_schemas", "cron", "debounce",
                     "throttle", "actor_keys", "webhooks", "worker_stream", "subscribe_bidirectional",
                     "dashboard", "flow_map"],
        "version": env!("CARGO_PKG_VERSION"),
        "auth_required": !state.auth.dev_mode(),
        "backend": state.engine.backend().as_str(),
    }))
}

/// A Connect call to a service this server does not serve (`/<package>.<Name>Service/<Method>`):
/// after authentication, Connect's `unimplemented`, which the SDKs read as "this server is too
/// old for that call". Any other two-segment path is an ordinary 404 (a POST once the key is
/// checked, like every keyed route).
pub async fn unknown_service(
    State(state): State<AppState>,
    method: axum::http::Method,
    headers: axum::http::HeaderMap,
    uri: Uri,
) -> Response {
    let path = uri.path().trim_start_matches('/');
    let service = path.split('/').next().unwrap_or_default();
    let is_service = service.contains('.')
        && service
            .rsplit('.')
            .next()
            .is_some_and(|name| name.ends_with("Service"));
    if method != axum::http::Method::POST {
        return not_found(uri).await.into_response();
    }
    if let Err(e) = state
        .auth
        .authorize(&headers, None, None, super::auth::Operation::default())
        .await
    {
        return e.into_response();
    }
    if !is_service {
        return not_found(uri).await.into_response();
    }
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        super::error::Code::Unimplemented,
        format!(
            "{path} is not served by this server (ironflow {})",
            env!("CARGO_PKG_VERSION")
        ),
    )
    .into_response()
}

pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
}

pub async fn method_not_allowed(method: axum::http::Method, uri: Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        super::error::Code::Unimplemented,
        format!("{method} is not allowed on {}", uri.path()),
    )
}
