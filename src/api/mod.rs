//! The transport layer: one axum router on one port serving REST (`/api/v1`), ConnectRPC
//! (`/ironflow.v1.*`), health, readiness and metrics. Handlers are thin: parse, authorize,
//! call the engine, map the result.

mod access;
pub use access::connect_permission;
mod admin;
mod audit;
pub mod auth;
mod breakers;
mod connect;
mod connect_stream;
mod dashboard;
mod data;
mod debounce;
mod environment_rpc;
pub mod error;
mod extract;
mod flow;
mod function_versions_rpc;
mod history_sql_rpc;
mod http_metrics;
mod ironflow_rpc;
mod kv;
mod policies;
mod projections_rpc;
mod proto_map;
mod pubsub_bidi;
mod pubsub_rpc;
mod rest;
mod run_control_rpc;
mod schemas_rpc;
mod streams_rpc;
mod subscription;
mod system;
mod watch;
mod webhook_rpc;
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

/// Who may call a route. Every non-public route is decided by the one authorization point
/// ([`auth::authorize_route`], or [`auth::Authenticator::authorize`] in the handlers that
/// upgrade to a stream), from what this table says it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No key: `/health`, `/ready`, `/metrics`, sign-in.
    Public,
    /// A key or session whose roles grant this permission, in an environment of its scope.
    Key(crate::domain::authz::Permission),
    /// A Connect service: each method's permission is in [`access::connect_permission`].
    Service,
    /// Decided by the handler through the same decision (WebSocket upgrades also take
    /// `?token=`; an unknown service answers after authentication).
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
    use crate::domain::authz::Permission as P;
    use Access::{Key, KeyInHandler, Public, Service};
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
        route(
            Method::POST,
            "/api/v1/events",
            Key(P::EventsEmit),
            post(rest::emit_event),
        ),
        route(
            Method::GET,
            "/api/v1/events",
            Key(P::EventsRead),
            get(rest::list_events),
        ),
        route(
            Method::GET,
            "/api/v1/events/names",
            Key(P::EventsRead),
            get(rest::event_names),
        ),
        route(
            Method::GET,
            "/api/v1/events/{id}",
            Key(P::EventsRead),
            get(rest::get_event),
        ),
        route(
            Method::GET,
            "/api/v1/functions",
            Key(P::FunctionsRead),
            get(rest::list_functions),
        ),
        route(
            Method::GET,
            "/api/v1/functions/{id}",
            Key(P::FunctionsRead),
            get(rest::get_function),
        ),
        route(
            Method::POST,
            "/api/v1/functions/{id}/invoke",
            Key(P::FunctionsInvoke),
            post(rest::invoke_function),
        ),
        route(
            Method::GET,
            "/api/v1/runs",
            Key(P::RunsRead),
            get(rest::list_runs),
        ),
        route(
            Method::GET,
            "/api/v1/runs/{id}",
            Key(P::RunsRead),
            get(rest::get_run),
        ),
        route(
            Method::GET,
            "/api/v1/runs/{id}/steps",
            Key(P::RunsRead),
            get(rest::run_steps),
        ),
        route(
            Method::GET,
            "/api/v1/runs/{id}/history",
            Key(P::RunsRead),
            get(rest::run_history),
        ),
        route(
            Method::GET,
            "/api/v1/runs/{id}/streams",
            Key(P::RunsRead),
            get(rest::run_streams),
        ),
        route(
            Method::POST,
            "/api/v1/runs/{id}/cancel",
            Key(P::RunsCancel),
            post(rest::cancel_run),
        ),
        route(
            Method::GET,
            "/api/v1/capabilities",
            Key(P::SystemRead),
            get(system::capabilities),
        ),
        route(
            Method::GET,
            "/api/v1/overview",
            Key(P::SystemRead),
            get(system::overview),
        ),
        route(
            Method::GET,
            "/api/v1/flow/emit-edges",
            Key(P::FunctionsRead),
            get(flow::emit_edges),
        ),
        route(
            Method::GET,
            "/api/v1/flow/invoke-edges",
            Key(P::FunctionsRead),
            get(flow::invoke_edges),
        ),
        route(
            Method::GET,
            "/api/v1/flow/stream-edges",
            Key(P::FunctionsRead),
            get(flow::stream_edges),
        ),
        route(
            Method::GET,
            "/api/v1/flow/topic-edges",
            Key(P::FunctionsRead),
            get(flow::topic_edges),
        ),
        route(
            Method::GET,
            "/api/v1/flow/wait-edges",
            Key(P::FunctionsRead),
            get(flow::wait_edges),
        ),
        route(
            Method::GET,
            "/api/v1/flow/webhooks",
            Key(P::FunctionsRead),
            get(flow::webhooks),
        ),
        route(
            Method::POST,
            "/api/v1/kv/buckets",
            Key(P::KvWrite),
            post(kv::create_bucket),
        ),
        route(
            Method::GET,
            "/api/v1/kv/buckets",
            Key(P::KvRead),
            get(kv::list_buckets),
        ),
        route(
            Method::GET,
            "/api/v1/kv/buckets/{bucket}",
            Key(P::KvRead),
            get(kv::get_bucket),
        ),
        route(
            Method::DELETE,
            "/api/v1/kv/buckets/{bucket}",
            Key(P::KvWrite),
            delete(kv::delete_bucket),
        ),
        route(
            Method::GET,
            "/api/v1/kv/buckets/{bucket}/keys",
            Key(P::KvRead),
            get(kv::list_keys),
        ),
        route(
            Method::PUT,
            "/api/v1/kv/buckets/{bucket}/keys/{key}",
            Key(P::KvWrite),
            put(kv::put_key),
        ),
        route(
            Method::GET,
            "/api/v1/kv/buckets/{bucket}/keys/{key}",
            Key(P::KvRead),
            get(kv::get_key),
        ),
        route(
            Method::DELETE,
            "/api/v1/kv/buckets/{bucket}/keys/{key}",
            Key(P::KvWrite),
            delete(kv::delete_key),
        ),
        route(
            Method::GET,
            "/api/v1/kv/buckets/{bucket}/keys/{key}/history",
            Key(P::KvRead),
            get(kv::key_history),
        ),
        route(
            Method::GET,
            "/api/v1/config",
            Key(P::ConfigRead),
            get(data::list_configs),
        ),
        route(
            Method::GET,
            "/api/v1/config/{name}",
            Key(P::ConfigRead),
            get(data::get_config),
        ),
        route(
            Method::POST,
            "/api/v1/config/{name}",
            Key(P::ConfigWrite),
            post(data::set_config),
        ),
        route(
            Method::PATCH,
            "/api/v1/config/{name}",
            Key(P::ConfigWrite),
            patch(data::patch_config),
        ),
        route(
            Method::DELETE,
            "/api/v1/config/{name}",
            Key(P::ConfigWrite),
            delete(data::delete_config),
        ),
        route(
            Method::POST,
            "/api/v1/secrets",
            Key(P::SecretsWrite),
            post(data::create_secret),
        ),
        route(
            Method::GET,
            "/api/v1/secrets",
            Key(P::SecretsReadNames),
            get(data::list_secrets),
        ),
        route(
            Method::GET,
            "/api/v1/secrets/{name}",
            Key(P::SecretsReadNames),
            get(data::get_secret),
        ),
        route(
            Method::PUT,
            "/api/v1/secrets/{name}",
            Key(P::SecretsWrite),
            put(data::update_secret),
        ),
        route(
            Method::PATCH,
            "/api/v1/secrets/{name}",
            Key(P::SecretsWrite),
            patch(data::patch_secret),
        ),
        route(
            Method::DELETE,
            "/api/v1/secrets/{name}",
            Key(P::SecretsWrite),
            delete(data::delete_secret),
        ),
        route(
            Method::GET,
            "/api/v1/debounce/entries",
            Key(P::FunctionsRead),
            get(debounce::list),
        ),
        route(
            Method::DELETE,
            "/api/v1/debounce/entries/{env}/{function}/{key}",
            Key(P::FunctionsWrite),
            delete(debounce::delete),
        ),
        route(
            Method::DELETE,
            "/api/v1/debounce/entries/{env}/{function}/",
            Key(P::FunctionsWrite),
            delete(debounce::delete_global),
        ),
        route(
            Method::GET,
            "/api/v1/circuit-breakers",
            Key(P::BreakersRead),
            get(breakers::list),
        ),
        route(
            Method::POST,
            "/api/v1/circuit-breakers/{key}/reset",
            Key(P::BreakersReset),
            post(breakers::reset),
        ),
        route(
            Method::GET,
            "/api/v1/workers",
            Key(P::WorkersRead),
            get(workers::list),
        ),
        route(
            Method::POST,
            "/api/v1/workers/{id}/register",
            Key(P::WorkersRun),
            post(workers::register),
        ),
        route(
            Method::PUT,
            "/api/v1/workers/{id}/register",
            Key(P::WorkersRun),
            put(workers::register),
        ),
        route(
            Method::POST,
            "/api/v1/workers/{id}/heartbeat",
            Key(P::WorkersRun),
            post(workers::heartbeat),
        ),
        route(
            Method::PUT,
            "/api/v1/workers/{id}/heartbeat",
            Key(P::WorkersRun),
            put(workers::heartbeat),
        ),
        route(
            Method::GET,
            "/api/v1/workers/{id}/jobs",
            Key(P::WorkersRun),
            get(workers::poll),
        ),
        route(
            Method::PUT,
            "/api/v1/workers/{id}/jobs/{job}/ack",
            Key(P::WorkersRun),
            put(workers::ack),
        ),
        route(
            Method::PUT,
            "/api/v1/workers/{id}/jobs/{job}",
            Key(P::WorkersRun),
            put(workers::report),
        ),
        route(
            Method::POST,
            "/ironflow.v1.IronflowService/{method}",
            Service,
            post(connect::ironflow_service),
        ),
        route(
            Method::POST,
            "/ironflow.v1.TimeTravelService/{method}",
            Service,
            post(connect::time_travel_service),
        ),
        route(
            Method::POST,
            "/ironflow.v1.EntityStreamService/{method}",
            Service,
            post(connect::entity_stream_service),
        ),
        route(
            Method::POST,
            "/ironflow.v1.EventSchemaService/{method}",
            Service,
            post(connect::event_schema_service),
        ),
        route(
            Method::POST,
            "/ironflow.v1.ProjectionService/{method}",
            Service,
            post(projections_rpc::projection_service),
        ),
        route(
            Method::POST,
            "/ironflow.v1.QueryService/{method}",
            Service,
            post(history_sql_rpc::query_service),
        ),
        route(
            Method::DELETE,
            "/api/v1/projections/{name}",
            Key(P::ProjectionsDelete),
            delete(projections_rpc::delete_projection),
        ),
        route(
            Method::GET,
            "/api/v1/projections/{name}/partitions",
            Key(P::ProjectionsRead),
            get(projections_rpc::list_partitions),
        ),
        route(
            Method::GET,
            "/api/v1/projections/{name}/status",
            Key(P::ProjectionsRead),
            get(projections_rpc::projection_status),
        ),
        route(
            Method::GET,
            "/api/v1/orgs",
            Key(P::ProjectsRead),
            get(admin::list_orgs),
        ),
        route(
            Method::POST,
            "/api/v1/orgs",
            Key(P::PlatformAdmin),
            post(admin::create_org),
        ),
        route(
            Method::POST,
            "/api/v1/platform/orgs",
            Key(P::PlatformAdmin),
            post(admin::create_org),
        ),
        route(
            Method::GET,
            "/api/v1/orgs/{id}",
            Key(P::ProjectsRead),
            get(admin::get_org),
        ),
        route(
            Method::PATCH,
            "/api/v1/orgs/{id}",
            Key(P::OrgsAdmin),
            patch(admin::update_org),
        ),
        route(
            Method::DELETE,
            "/api/v1/orgs/{id}",
            Key(P::PlatformAdmin),
            delete(admin::delete_org),
        ),
        route(
            Method::GET,
            "/api/v1/projects",
            Key(P::ProjectsRead),
            get(admin::list_projects),
        ),
        route(
            Method::POST,
            "/api/v1/projects",
            Key(P::ProjectsAdmin),
            post(admin::create_project),
        ),
        route(
            Method::GET,
            "/api/v1/projects/{id}",
            Key(P::ProjectsRead),
            get(admin::get_project),
        ),
        route(
            Method::PUT,
            "/api/v1/projects/{id}",
            Key(P::ProjectsAdmin),
            put(admin::update_project),
        ),
        route(
            Method::DELETE,
            "/api/v1/projects/{id}",
            Key(P::ProjectsAdmin),
            delete(admin::delete_project),
        ),
        route(
            Method::GET,
            "/api/v1/environments",
            Key(P::EnvironmentsRead),
            get(admin::list_environments),
        ),
        route(
            Method::POST,
            "/api/v1/environments",
            Key(P::EnvironmentsAdmin),
            post(admin::create_environment),
        ),
        route(
            Method::GET,
            "/api/v1/environments/{id}",
            Key(P::EnvironmentsRead),
            get(admin::get_environment),
        ),
        route(
            Method::PUT,
            "/api/v1/environments/{id}",
            Key(P::EnvironmentsAdmin),
            put(admin::update_environment),
        ),
        route(
            Method::GET,
            "/api/v1/environments/{id}/retention",
            Key(P::EnvironmentsRead),
            get(admin::get_environment_retention),
        ),
        route(
            Method::PUT,
            "/api/v1/environments/{id}/retention",
            Key(P::EnvironmentsAdmin),
            put(admin::put_environment_retention),
        ),
        route(
            Method::DELETE,
            "/api/v1/environments/{id}",
            Key(P::EnvironmentsAdmin),
            delete(admin::delete_environment),
        ),
        route(
            Method::GET,
            "/api/v1/apikeys",
            Key(P::KeysRead),
            get(admin::list_keys),
        ),
        route(
            Method::POST,
            "/api/v1/apikeys",
            Key(P::KeysAdmin),
            post(admin::create_key),
        ),
        route(
            Method::GET,
            "/api/v1/apikeys/{id}",
            Key(P::KeysRead),
            get(admin::get_key),
        ),
        route(
            Method::DELETE,
            "/api/v1/apikeys/{id}",
            Key(P::KeysAdmin),
            delete(admin::delete_key),
        ),
        route(
            Method::POST,
            "/api/v1/apikeys/{id}/rotate",
            Key(P::KeysAdmin),
            post(admin::rotate_key),
        ),
        route(
            Method::PUT,
            "/api/v1/apikeys/{id}/roles",
            Key(P::KeysAdmin),
            put(admin::set_key_roles),
        ),
        route(
            Method::GET,
            "/api/v1/users",
            Key(P::UsersAdmin),
            get(admin::list_users),
        ),
        route(
            Method::POST,
            "/api/v1/users",
            Key(P::UsersAdmin),
            post(admin::create_user),
        ),
        route(
            Method::GET,
            "/api/v1/users/{id}",
            Key(P::UsersAdmin),
            get(admin::get_user),
        ),
        route(
            Method::PATCH,
            "/api/v1/users/{id}",
            Key(P::UsersAdmin),
            patch(admin::update_user),
        ),
        route(
            Method::DELETE,
            "/api/v1/users/{id}",
            Key(P::UsersAdmin),
            delete(admin::delete_user),
        ),
        // Anyone signed in may change their own password; the handler asks for `users:admin`
        // to change someone else's.
        route(
            Method::PATCH,
            "/api/v1/users/{id}/password",
            Key(P::SystemRead),
            patch(admin::change_password),
        ),
        route(
            Method::POST,
            "/api/v1/platform/auth/login",
            Public,
            post(admin::login),
        ),
        route(
            Method::GET,
            "/api/v1/tenants",
            Key(P::PlatformAdmin),
            get(admin::list_tenants),
        ),
        route(
            Method::POST,
            "/api/v1/tenants/provision",
            Key(P::PlatformAdmin),
            post(admin::provision_tenant),
        ),
        route(
            Method::GET,
            "/api/v1/roles",
            Key(P::RolesRead),
            get(admin::list_roles),
        ),
        route(
            Method::POST,
            "/api/v1/roles",
            Key(P::RolesAdmin),
            post(admin::create_role),
        ),
        route(
            Method::GET,
            "/api/v1/roles/permissions",
            Key(P::RolesRead),
            get(admin::list_permissions),
        ),
        route(
            Method::GET,
            "/api/v1/roles/{id}",
            Key(P::RolesRead),
            get(admin::get_role),
        ),
        route(
            Method::PATCH,
            "/api/v1/roles/{id}",
            Key(P::RolesAdmin),
            patch(admin::update_role),
        ),
        route(
            Method::DELETE,
            "/api/v1/roles/{id}",
            Key(P::RolesAdmin),
            delete(admin::delete_role),
        ),
        route(
            Method::GET,
            "/api/v1/audit",
            Key(P::AuditRead),
            get(audit::list),
        ),
        route(
            Method::GET,
            "/api/v1/audit/settings",
            Key(P::AuditRead),
            get(audit::get_settings),
        ),
        route(
            Method::PUT,
            "/api/v1/audit/settings",
            Key(P::OrgsAdmin),
            put(audit::put_settings),
        ),
        route(
            Method::POST,
            "/ironflow.v1.AuditService/{method}",
            Service,
            post(audit::audit_service),
        ),
        route(
            Method::POST,
            "/ironflow.v1.WebhookService/{method}",
            Service,
            post(webhook_rpc::webhook_service),
        ),
        route(
            Method::POST,
            "/webhooks/{token}",
            Public,
            post(webhook_rpc::ingest),
        ),
        route(
            Method::POST,
            "/ironflow.v1.EnvironmentService/{method}",
            Service,
            post(environment_rpc::environment_service),
        ),
        route(
            Method::GET,
            "/api/v1/policy-set",
            Key(P::PoliciesRead),
            get(policies::get_env),
        ),
        route(
            Method::PUT,
            "/api/v1/policy-set",
            Key(P::PoliciesWrite),
            put(policies::put_env),
        ),
        route(
            Method::POST,
            "/api/v1/policy-set/validate",
            Key(P::PoliciesWrite),
            post(policies::validate_env),
        ),
        route(
            Method::POST,
            "/api/v1/policy-set/dry-run",
            Key(P::PoliciesWrite),
            post(policies::dry_run_env),
        ),
        route(
            Method::GET,
            "/api/v1/policy-set/versions",
            Key(P::PoliciesRead),
            get(policies::versions_env),
        ),
        route(
            Method::GET,
            "/api/v1/policy-set/versions/{n}",
            Key(P::PoliciesRead),
            get(policies::version_env),
        ),
        route(
            Method::POST,
            "/api/v1/policy-set/versions/{n}/rollback",
            Key(P::PoliciesWrite),
            post(policies::rollback_env),
        ),
        route(
            Method::GET,
            "/api/v1/platform/policy-set",
            Key(P::PlatformAdmin),
            get(policies::get_platform),
        ),
        route(
            Method::PUT,
            "/api/v1/platform/policy-set",
            Key(P::PlatformAdmin),
            put(policies::put_platform),
        ),
        route(
            Method::POST,
            "/api/v1/platform/policy-set/validate",
            Key(P::PlatformAdmin),
            post(policies::validate_platform),
        ),
        route(
            Method::POST,
            "/api/v1/platform/policy-set/dry-run",
            Key(P::PlatformAdmin),
            post(policies::dry_run_platform),
        ),
        route(
            Method::GET,
            "/api/v1/platform/policy-set/versions",
            Key(P::PlatformAdmin),
            get(policies::versions_platform),
        ),
        route(
            Method::GET,
            "/api/v1/platform/policy-set/versions/{n}",
            Key(P::PlatformAdmin),
            get(policies::version_platform),
        ),
        route(
            Method::POST,
            "/api/v1/platform/policy-set/versions/{n}/rollback",
            Key(P::PlatformAdmin),
            post(policies::rollback_platform),
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
            Service,
            post(pubsub_rpc::pubsub_service),
        ),
    ]
}

/// Every HTTP route the router serves (gRPC's `WorkerService` aside), from the same table.
pub fn routes() -> Vec<Route> {
    table().into_iter().map(|(route, _)| route).collect()
}

/// What each route needs, by method and path pattern (for the authorization middleware).
fn access_table() -> &'static std::collections::HashMap<(Method, &'static str), Access> {
    static TABLE: std::sync::OnceLock<std::collections::HashMap<(Method, &'static str), Access>> =
        std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        routes()
            .into_iter()
            .map(|r| ((r.method, r.path), r.access))
            .collect()
    })
}

/// The access a matched route needs (`None` for a path the table does not have).
pub(crate) fn access_of(method: &Method, path: &str) -> Option<Access> {
    access_table().get(&(method.clone(), path)).copied()
}

pub fn router(state: AppState) -> Router {
    let body_limit = state.max_request_bytes;
    let (mut public, mut protected) = (Router::new(), Router::new());
    for (route, handler) in table() {
        match route.access {
            Access::Key(_) | Access::Service => protected = protected.route(route.path, handler),
            Access::Public | Access::KeyInHandler => public = public.route(route.path, handler),
        }
    }
    let protected = protected.route_layer(middleware::from_fn_with_state(
        state.clone(),
        auth::authorize_route,
    ));
    public
        .merge(protected)
        .fallback(system::not_found)
        .method_not_allowed_fallback(system::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state.clone())
        // gRPC (HTTP/2): authenticates from the stream's metadata itself.
        .merge(worker_stream::routes(state))
        // Per route (the matched pattern is known there), so it sees every handler's status.
        .route_layer(middleware::from_fn(http_metrics::record))
        .layer(middleware::map_response(error::json_error_bodies))
        .layer(middleware::from_fn(dashboard::serve))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            error::panic_response,
        ))
        // Every log line of a request carries its span: the request id (the client's
        // `x-request-id`, else a fresh UUID, echoed in the answer), method and path.
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(
                |request: &axum::http::Request<axum::body::Body>| {
                    let id = request
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    {
                        let span = tracing::info_span!(
                            "request",
                            id = %id,
                            method = %request.method(),
                            path = %request.uri().path(),
                        );
                        // A caller's W3C trace context becomes the request's parent (OTLP on).
                        crate::telemetry::set_parent(
                            &span,
                            request
                                .headers()
                                .get("traceparent")
                                .and_then(|v| v.to_str().ok()),
                        );
                        span
                    }
                },
            ),
        )
        .layer(tower_http::request_id::PropagateRequestIdLayer::x_request_id())
        .layer(tower_http::request_id::SetRequestIdLayer::x_request_id(
            tower_http::request_id::MakeRequestUuid,
        ))
}

/// The body limit for a given maximum event payload.
pub fn request_limit(max_payload_bytes: usize) -> usize {
    max_payload_bytes.saturating_add(ENVELOPE_BYTES)
}
