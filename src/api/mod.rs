//! The transport layer: one axum router on one port serving REST (`/api/v1`), ConnectRPC
//! (`/ironflow.v1.*`), health, readiness and metrics. Handlers are thin: parse, authorize,
//! call the engine, map the result.

pub mod auth;
mod breakers;
mod connect;
mod connect_stream;
mod data;
pub mod error;
mod extract;
mod ironflow_rpc;
mod kv;
mod proto_map;
mod pubsub_rpc;
mod rest;
mod subscription;
mod system;
mod watch;
mod worker_stream;
mod workers;
mod ws;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post, put};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::engine::Engine;
use auth::Authenticator;

/// Shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub auth: Arc<Authenticator>,
    pub metrics: Option<PrometheusHandle>,
    /// Largest request body accepted (after decompression), in bytes.
    pub max_request_bytes: usize,
}

/// Room for the request envelope around a maximal event payload.
const ENVELOPE_BYTES: usize = 64 * 1024;

pub fn router(state: AppState) -> Router {
    let body_limit = state.max_request_bytes;
    let protected = Router::new()
        .route(
            "/api/v1/events",
            post(rest::emit_event).get(rest::list_events),
        )
        .route("/api/v1/events/names", get(rest::event_names))
        .route("/api/v1/events/{id}", get(rest::get_event))
        .route("/api/v1/functions", get(rest::list_functions))
        .route("/api/v1/functions/{id}", get(rest::get_function))
        .route("/api/v1/functions/{id}/invoke", post(rest::invoke_function))
        .route("/api/v1/runs", get(rest::list_runs))
        .route("/api/v1/runs/{id}", get(rest::get_run))
        .route("/api/v1/runs/{id}/steps", get(rest::run_steps))
        .route("/api/v1/runs/{id}/history", get(rest::run_history))
        .route("/api/v1/runs/{id}/cancel", post(rest::cancel_run))
        .route("/api/v1/capabilities", get(system::capabilities))
        .route(
            "/api/v1/kv/buckets",
            post(kv::create_bucket).get(kv::list_buckets),
        )
        .route(
            "/api/v1/kv/buckets/{bucket}",
            get(kv::get_bucket).delete(kv::delete_bucket),
        )
        .route("/api/v1/kv/buckets/{bucket}/keys", get(kv::list_keys))
        .route(
            "/api/v1/kv/buckets/{bucket}/keys/{key}",
            put(kv::put_key).get(kv::get_key).delete(kv::delete_key),
        )
        .route(
            "/api/v1/kv/buckets/{bucket}/keys/{key}/history",
            get(kv::key_history),
        )
        .route("/api/v1/config", get(data::list_configs))
        .route(
            "/api/v1/config/{name}",
            get(data::get_config)
                .post(data::set_config)
                .patch(data::patch_config)
                .delete(data::delete_config),
        )
        .route(
            "/api/v1/secrets",
            post(data::create_secret).get(data::list_secrets),
        )
        .route(
            "/api/v1/secrets/{name}",
            get(data::get_secret)
                .put(data::update_secret)
                .patch(data::patch_secret)
                .delete(data::delete_secret),
        )
        .route("/api/v1/circuit-breakers", get(breakers::list))
        .route(
            "/api/v1/circuit-breakers/{key}/reset",
            post(breakers::reset),
        )
        .route("/api/v1/workers", get(workers::list))
        .route(
            "/api/v1/workers/{id}/register",
            post(workers::register).put(workers::register),
        )
        .route(
            "/api/v1/workers/{id}/heartbeat",
            post(workers::heartbeat).put(workers::heartbeat),
        )
        .route("/api/v1/workers/{id}/jobs", get(workers::poll))
        .route("/api/v1/workers/{id}/jobs/{job}/ack", put(workers::ack))
        .route("/api/v1/workers/{id}/jobs/{job}", put(workers::report))
        .route(
            "/ironflow.v1.IronflowService/{method}",
            post(connect::ironflow_service),
        )
        .route(
            "/ironflow.v1.PubSubService/{method}",
            post(pubsub_rpc::pubsub_service),
        )
        .route_layer(middleware::from_fn_with_state(
            state.auth.clone(),
            auth::require_auth,
        ));
    Router::new()
        .route("/health", get(system::health))
        .route("/ready", get(system::ready))
        .route("/metrics", get(system::metrics))
        .route("/ws", get(ws::ws))
        .route("/api/v1/kv/buckets/{bucket}/watch", get(watch::watch_kv))
        .route("/api/v1/config/{name}/watch", get(watch::watch_config))
        .merge(protected)
        .fallback(system::not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state.clone())
        // gRPC (HTTP/2): authenticates from the stream's metadata itself.
        .merge(worker_stream::routes(state))
}

/// The body limit for a given maximum event payload.
pub fn request_limit(max_payload_bytes: usize) -> usize {
    max_payload_bytes.saturating_add(ENVELOPE_BYTES)
}
