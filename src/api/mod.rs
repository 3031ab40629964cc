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
mod function_versions_rpc;
mod history_sql_rpc;
mod ironflow_rpc;
mod kv;
mod projections_rpc;
mod proto_map;
mod pubsub_rpc;
mod rest;
mod run_control_rpc;
mod schemas_rpc;
mod streams_rpc;
mod subscription;
mod system;
mod watch;
mod worker_stream;
mod workers;
mod ws;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Method;
use axum::middleware;
use axum::routing::{MethodRouter, any, delete, get, patch, post, put};
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

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No key: `/health`, `/ready`, `/metrics`.
    Public,
    /// A key, checked by the authentication layer before the handler runs.
    Key,
    /// A key, checked by the handler itself (WebSocket upgrades also take `?token=`).
    KeyInHandler,
}

/// One route of the router: what the fuzz suite walks and the docs list.
#[derive(Debug, Clone)]
pub struct Route {
    pub method: Method,
    /// With `{param}` placeholders, as axum writes them.
    pub path: &'static str,
    pub access: Access,
}

/// Every HTTP route (REST, Connect services, health), each with its handler. The router is
/// built from this table and [`routes`] lists it, so the two cannot drift apart.
fn table() -> Vec<(Route, MethodRouter<AppState>)> {
    use Access::{Key, KeyInHandler, Public};
    let route = |method: Method, path: &'static str, access, handler: MethodRouter<AppState>| {
        (
            Route {
                method,
                path,
                access,
            },
            handler,
        )
    };
    vec![
        route(Method::GET, "/health", Public, get(system::health)),
        route(Method::GET, "/ready", Public, get(system::ready)),
        route(Method::GET, "/metrics", Public, get(system::metrics)),
        route(Method::GET, "/ws", KeyInHandler, get(ws::ws)),
        route(
            Method::GET,
            "/api/v1/kv/buckets/{bucket}/watch",
            KeyInHandler,
            get(watch::watch_kv),
        ),
        route(
            Method::GET,
            "/api/v1/config/{name}/watch",
            KeyInHandler,
            get(watch::watch_config),
        ),
        route(Method::POST, "/api/v1/events", Key, post(rest::emit_event)),
        route(Method::GET, "/api/v1/events", Key, get(rest::list_events)),
        route(
            Method::GET,
            "/api/v1/events/names",
            Key,
            get(rest::event_names),
        ),
        route(
            Method::GET,
            "/api/v1/events/{id}",
            Key,
            get(rest::get_event),
        ),
        route(
            Method::GET,
            "/api/v1/functions",
            Key,
            get(rest::list_functions),
        ),
        route(
            Method::GET,
            "/api/v1/functions/{id}",
            Key,
            get(rest::get_function),
        ),
        route(
            Method::POST,
            "/api/v1/functions/{id}/invoke",
            Key,
            post(rest::invoke_function),
        ),
        route(Method::GET, "/api/v1/runs", Key, get(rest::list_runs)),
        route(Method::GET, "/api/v1/runs/{id}", Key, get(rest::get_run)),
        route(
            Method::GET,
            "/api/v1/runs/{id}/steps",
            Key,
            get(rest::run_steps),
        ),
        route(
            Method::GET,
            "/api/v1/runs/{id}/history",
            Key,
            get(rest::run_history),
        ),
        route(
            Method::GET,
            "/api/v1/runs/{id}/streams",
            Key,
            get(rest::run_streams),
        ),
        route(
            Method::POST,
            "/api/v1/runs/{id}/cancel",
            Key,
            post(rest::cancel_run),
        ),
        route(
            Method::GET,
            "/api/v1/capabilities",
            Key,
            get(system::capabilities),
        ),
        route(
            Method::POST,
            "/api/v1/kv/buckets",
            Key,
            post(kv::create_bucket),
        ),
        route(
            Method::GET,
            "/api/v1/kv/buckets",
            Key,
            get(kv::list_buckets),
        ),
        route(
            Method::GET,
            "/api/v1/kv/buckets/{bucket}",
            Key,
            get(kv::get_bucket),
        ),
        route(
            Method::DELETE,
            "/api/v1/kv/buckets/{bucket}",
            Key,
            delete(kv::delete_bucket),
        ),
        route(
            Method::GET,
            "/api/v1/kv/buckets/{bucket}/keys",
            Key,
            get(kv::list_keys),
        ),
        route(
            Method::PUT,
            "/api/v1/kv/buckets/{bucket}/keys/{key}",
            Key,
            put(kv::put_key),
        ),
        route(
            Method::GET,
            "/api/v1/kv/buckets/{bucket}/keys/{key}",
            Key,
            get(kv::get_key),
        ),
        route(
            Method::DELETE,
            "/api/v1/kv/buckets/{bucket}/keys/{key}",
            Key,
            delete(kv::delete_key),
        ),
        route(
            Method::GET,
            "/api/v1/kv/buckets/{bucket}/keys/{key}/history",
            Key,
            get(kv::key_history),
        ),
        route(Method::GET, "/api/v1/config", Key, get(data::list_configs)),
        route(
            Method::GET,
            "/api/v1/config/{name}",
            Key,
            get(data::get_config),
        ),
        route(
            Method::POST,
            "/api/v1/config/{name}",
            Key,
            post(data::set_config),
        ),
        route(
            Method::PATCH,
            "/api/v1/config/{name}",
            Key,
            patch(data::patch_config),
        ),
        route(
            Method::DELETE,
            "/api/v1/config/{name}",
            Key,
            delete(data::delete_config),
        ),
        route(
            Method::POST,
            "/api/v1/secrets",
            Key,
            post(data::create_secret),
        ),
        route(Method::GET, "/api/v1/secrets", Key, get(data::list_secrets)),
        route(
            Method::GET,
            "/api/v1/secrets/{name}",
            Key,
            get(data::get_secret),
        ),
        route(
            Method::PUT,
            "/api/v1/secrets/{name}",
            Key,
            put(data::update_secret),
        ),
        route(
            Method::PATCH,
            "/api/v1/secrets/{name}",
            Key,
            patch(data::patch_secret),
        ),
        route(
            Method::DELETE,
            "/api/v1/secrets/{name}",
            Key,
            delete(data::delete_secret),
        ),
        route(
            Method::GET,
            "/api/v1/circuit-breakers",
            Key,
            get(breakers::list),
        ),
        route(
            Method::POST,
            "/api/v1/circuit-breakers/{key}/reset",
            Key,
            post(breakers::reset),
        ),
        route(Method::GET, "/api/v1/workers", Key, get(workers::list)),
        route(
            Method::POST,
            "/api/v1/workers/{id}/register",
            Key,
            post(workers::register),
        ),
        route(
            Method::PUT,
            "/api/v1/workers/{id}/register",
            Key,
            put(workers::register),
        ),
        route(
            Method::POST,
            "/api/v1/workers/{id}/heartbeat",
            Key,
            post(workers::heartbeat),
        ),
        route(
            Method::PUT,
            "/api/v1/workers/{id}/heartbeat",
            Key,
            put(workers::heartbeat),
        ),
        route(
            Method::GET,
            "/api/v1/workers/{id}/jobs",
            Key,
            get(workers::poll),
        ),
        route(
            Method::PUT,
            "/api/v1/workers/{id}/jobs/{job}/ack",
            Key,
            put(workers::ack),
        ),
        route(
            Method::PUT,
            "/api/v1/workers/{id}/jobs/{job}",
            Key,
            put(workers::report),
        ),
        route(
            Method::POST,
            "/ironflow.v1.IronflowService/{method}",
            Key,
            post(connect::ironflow_service),
        ),
        route(
            Method::POST,
            "/ironflow.v1.TimeTravelService/{method}",
            Key,
            post(connect::time_travel_service),
        ),
        route(
            Method::POST,
            "/ironflow.v1.EntityStreamService/{method}",
            Key,
            post(connect::entity_stream_service),
        ),
        route(
            Method::POST,
            "/ironflow.v1.EventSchemaService/{method}",
            Key,
            post(connect::event_schema_service),
        ),
        route(
            Method::POST,
            "/ironflow.v1.ProjectionService/{method}",
            Key,
            post(projections_rpc::projection_service),
        ),
        route(
            Method::POST,
            "/ironflow.v1.QueryService/{method}",
            Key,
            post(history_sql_rpc::query_service),
        ),
        route(
            Method::DELETE,
            "/api/v1/projections/{name}",
            Key,
            delete(projections_rpc::delete_projection),
        ),
        route(
            Method::GET,
            "/api/v1/projections/{name}/partitions",
            Key,
            get(projections_rpc::list_partitions),
        ),
        route(
            Method::GET,
            "/api/v1/projections/{name}/status",
            Key,
            get(projections_rpc::projection_status),
        ),
        // Last, so every served service above takes precedence (static segments win).
        route(
            Method::POST,
            "/{service}/{method}",
            KeyInHandler,
            any(system::unknown_service),
        ),
        route(
            Method::POST,
            "/ironflow.v1.PubSubService/{method}",
            Key,
            post(pubsub_rpc::pubsub_service),
        ),
    ]
}

/// Every HTTP route the router serves (gRPC's `WorkerService` aside), from the same table.
pub fn routes() -> Vec<Route> {
    table().into_iter().map(|(route, _)| route).collect()
}

pub fn router(state: AppState) -> Router {
    let body_limit = state.max_request_bytes;
    let (mut public, mut protected) = (Router::new(), Router::new());
    for (route, handler) in table() {
        match route.access {
            Access::Key => protected = protected.route(route.path, handler),
            Access::Public | Access::KeyInHandler => public = public.route(route.path, handler),
        }
    }
    let protected = protected.route_layer(middleware::from_fn_with_state(
        state.auth.clone(),
        auth::require_auth,
    ));
    public
        .merge(protected)
        .fallback(system::not_found)
        .method_not_allowed_fallback(system::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state.clone())
        // gRPC (HTTP/2): authenticates from the stream's metadata itself.
        .merge(worker_stream::routes(state))
        .layer(middleware::map_response(error::json_error_bodies))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            error::panic_response,
        ))
}

/// The body limit for a given maximum event payload.
pub fn request_limit(max_payload_bytes: usize) -> usize {
    max_payload_bytes.saturating_add(ENVELOPE_BYTES)
}
