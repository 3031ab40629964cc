//! The one authorization point. Every call — REST, Connect, `/ws`, the watches, the gRPC worker
//! stream — comes through [`Authenticator::authorize`]: the credential (`Authorization: Bearer
//! ifkey_…` or a person's `ifsess_…`, `?token=` on WebSocket upgrades) becomes a principal,
//! `X-Ironflow-Environment[-ID]` an environment inside its scope, and
//! [`crate::domain::authz::decide`] rules on the permission the route or method needs, with the
//! platform's and the environment's deny policies. Denials, monitored would-be denials and
//! successful changes go to the audit log.

use std::sync::Arc;

use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::domain::authz::{Decision, Permission, PermissionSet, Principal, decide, irn};
use crate::domain::policy::{PolicyInput, PolicySet, PrincipalFacts, RequestFacts, ResourceFacts};
use crate::domain::time::Ts;
use crate::engine::{Credential, Engine, SESSION_PREFIX};
use crate::ids::{EnvId, OrgId, ProjectId};
use crate::store::audit::AuditEntry;
use crate::tenancy::hash_api_key;

use super::error::ApiError;

/// Who is calling and in which environment. Present on every authorized request.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub env: EnvId,
    pub env_name: String,
    /// The project the environment (or, for org-level calls, the credential) belongs to.
    pub project: ProjectId,
    pub principal: Arc<Principal>,
}

impl RequestContext {
    /// Who makes a change (the key's or user's id; `dev` without one), and why, for its
    /// history entry.
    pub fn actor(&self, reason: &str) -> crate::domain::lifecycle::control::Actor {
        crate::domain::lifecycle::control::Actor {
            key_id: self.principal.id.clone(),
            reason: reason.to_owned(),
        }
    }

    pub fn org(&self) -> OrgId {
        OrgId::from_stored(self.principal.org_id.clone())
    }

    /// What RBAC grants the caller: the ceiling of what it may hand out to keys and roles.
    pub fn permissions(&self) -> PermissionSet {
        self.principal.permissions()
    }

    pub fn holds(&self, permission: Permission) -> bool {
        self.permissions().contains(permission)
    }

    /// `key:<id>`, `user:<id>` or `dev`, as the audit log and `created_by` name callers.
    pub fn who(&self) -> String {
        match self.principal.kind {
            crate::domain::authz::PrincipalKind::Dev => "dev".into(),
            kind => format!("{}:{}", kind.as_str(), self.principal.id),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<RequestContext>()
            .cloned()
            .ok_or_else(|| ApiError::unauthenticated("authentication required"))
    }
}

/// What a call asks to do: the permission it needs and what a policy may see of it.
#[derive(Debug, Clone, Default)]
pub struct Operation {
    /// `None`: any authenticated caller (an unknown Connect method, answered `unimplemented`).
    pub permission: Option<Permission>,
    pub facts: RequestFacts,
}

impl Operation {
    pub fn new(permission: Permission, method: &str, path: &str) -> Self {
        Self {
            permission: Some(permission),
            facts: RequestFacts {
                method: method.to_owned(),
                path: path.to_owned(),
                ..Default::default()
            },
        }
    }
}

/// An authorized call, and the audit entry to write once its outcome is known.
pub struct Authorized {
    pub ctx: RequestContext,
    pending: Option<AuditEntry>,
}

/// Resolves credentials and environments and decides. Its lookups are cached in the engine.
pub struct Authenticator {
    engine: Engine,
    dev_mode: bool,
}

pub const ENV_HEADERS: [&str; 2] = ["x-ironflow-environment", "x-ironflow-environment-id"];

/// The identity part of a call: who, and where.
pub struct Caller {
    pub ctx: RequestContext,
}

impl Authenticator {
    pub fn new(engine: Engine, dev_mode: bool) -> Arc<Self> {
        Arc::new(Self { engine, dev_mode })
    }

    pub fn dev_mode(&self) -> bool {
        self.dev_mode
    }

    /// Authenticates and decides in one step (for handlers that authorize themselves: the
    /// WebSocket upgrades and the gRPC worker stream). The audit entry, if any, is written now.
    pub async fn authorize(
        &self,
        headers: &HeaderMap,
        query_token: Option<&str>,
        query_env: Option<&str>,
        operation: Operation,
    ) -> Result<RequestContext, ApiError> {
        let caller = self
            .authenticate(headers, query_token, query_env, operation.permission)
            .await?;
        let policies = self.engine.policies_in_force(&caller.ctx.env).await?;
        let authorized = self.decide(caller, &policies, operation).await?;
        if let Some(entry) = authorized.pending {
            self.engine.record_audit(entry).await;
        }
        Ok(authorized.ctx)
    }

    /// Who is calling and in which environment. An environment outside the credential's scope
    /// is not found (404); a key scoped to one environment cannot name another (403).
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        query_token: Option<&str>,
        query_env: Option<&str>,
        permission: Option<Permission>,
    ) -> Result<Caller, ApiError> {
        let named = environment_name(headers, query_env)?;
        let org_level = permission.is_some_and(Permission::is_org_level);
        let (principal, env) = if self.dev_mode {
            let default = self.engine.default_environment().await?.ok_or_else(|| {
                ApiError::unauthenticated(
                    "no default environment exists (database not bootstrapped)",
                )
            })?;
            let env = match &named {
                None => Some(default.clone()),
                Some(name) => {
                    self.engine
                        .find_environment(&default.project_id, name)
                        .await?
                }
            };
            let env = env.map(|e| (e.id, e.name, e.project_id));
            (
                self.engine.dev_principal().await?,
                env.ok_or_else(|| (default.project_id, named.clone())),
            )
        } else {
            let secret = bearer_token(headers).or(query_token).ok_or_else(|| {
                ApiError::unauthenticated("missing API key: send 'Authorization: Bearer ifkey_…'")
            })?;
            let credential = if secret.starts_with(SESSION_PREFIX) {
                self.engine
                    .session_by_hash(&hash_api_key(secret))
                    .await?
                    .map(Credential::Session)
                    .ok_or_else(|| {
                        ApiError::unauthenticated("invalid or expired session: sign in again")
                    })?
            } else {
                self.engine
                    .key_by_hash(&hash_api_key(secret))
                    .await?
                    .map(Credential::Key)
                    .ok_or_else(|| {
                        ApiError::unauthenticated("invalid, expired or revoked API key")
                    })?
            };
            let env = self
                .credential_environment(&credential, named.as_deref())
                .await?;
            (self.engine.principal(&credential).await?, env)
        };
        let (env, env_name, project) = match env {
            Ok(found) => found,
            // Org-level calls (keys, users, roles, …) need no environment; one they name must
            // exist all the same (its policies apply to them).
            Err((project, _)) if org_level && named.is_none() => {
                (EnvId::from_stored(String::new()), String::new(), project)
            }
            Err((_, name)) => {
                return Err(ApiError::not_found(format!(
                    "environment '{}' not found",
                    name.as_deref().unwrap_or("default")
                )));
            }
        };
        Ok(Caller {
            ctx: RequestContext {
                env,
                env_name,
                project,
                principal: Arc::new(principal),
            },
        })
    }

    /// The environment a credential may use: the one named (by name or id, inside the key's
    /// project or the person's organisation), else `default`; a key scoped to one environment
    /// gets that one.
    #[allow(clippy::type_complexity)]
    async fn credential_environment(
        &self,
        credential: &Credential,
        named: Option<&str>,
    ) -> Result<Result<(EnvId, String, ProjectId), (ProjectId, Option<String>)>, ApiError> {
        let found = match credential {
            Credential::Key(key) => {
                let wanted = match (&key.env_id, named) {
                    (Some(scoped), None) => Some(scoped.as_str().to_owned()),
                    (_, Some(name)) => Some(name.to_owned()),
                    (None, None) => None,
                };
                // Naming none: the project's `default` environment, else its oldest.
                let found = match &wanted {
                    Some(name) => self.engine.find_environment(&key.project_id, name).await?,
                    None => self.engine.first_environment(&key.project_id).await?,
                };
                if let (Some(scoped), Some(env)) = (&key.env_id, &found)
                    && &env.id != scoped
                {
                    return Err(ApiError::forbidden(format!(
                        "this API key is scoped to one environment ({scoped}); it cannot use '{}'",
                        wanted.as_deref().unwrap_or_default()
                    )));
                }
                match found {
                    Some(env) => Ok((env.id, env.name, env.project_id)),
                    None => Err((key.project_id.clone(), wanted)),
                }
            }
            Credential::Session(session) => {
                let wanted = named.unwrap_or("default");
                match self.engine.org_environment(&session.org_id, wanted).await? {
                    Some(env) => Ok((env.id, env.name, env.project_id)),
                    None => Err((
                        ProjectId::from_stored(String::new()),
                        Some(wanted.to_owned()),
                    )),
                }
            }
        };
        Ok(found)
    }

    /// The decision: RBAC, then the platform's and the environment's deny policies. A denial
    /// is audited before the 403 goes out.
    pub async fn decide(
        &self,
        caller: Caller,
        policies: &[PolicySet; 2],
        mut operation: Operation,
    ) -> Result<Authorized, ApiError> {
        let ctx = caller.ctx;
        let Some(permission) = operation.permission else {
            return Ok(Authorized { ctx, pending: None });
        };
        operation.facts.environment = ctx.env_name.clone();
        let input = policy_input(&ctx, permission, operation.facts);
        let in_force: Vec<&PolicySet> = policies.iter().filter(|p| !p.is_empty()).collect();
        let decision = decide(ctx.permissions(), permission, &in_force, &input);
        let entry = |outcome: &str, reason: String| audit_entry(&ctx, &input, outcome, reason);
        match decision {
            Decision::NotGranted { permission } => {
                let message = format!(
                    "the caller's roles ({}) do not grant '{permission}'",
                    ctx.principal.roles.join(", ")
                );
                self.engine
                    .record_audit(entry("denied", message.clone()).with_status(403))
                    .await;
                Err(ApiError::forbidden(message))
            }
            // The reason names the module (and the evaluation error, when that was why).
            Decision::Denied {
                reason: why,
                monitored,
                ..
            } => {
                if !monitored.is_empty() {
                    self.engine
                        .record_audit(entry("monitored", monitored.join(", ")).with_status(403))
                        .await;
                }
                self.engine
                    .record_audit(entry("denied", why.clone()).with_status(403))
                    .await;
                Err(ApiError::forbidden(why))
            }
            Decision::Allow { monitored } => {
                let pending = if !monitored.is_empty() {
                    tracing::info!(
                        principal = %ctx.principal.id,
                        action = %permission,
                        modules = %monitored.join(", "),
                        "monitor-mode policy would deny"
                    );
                    Some(entry(
                        "monitored",
                        format!("would be denied by {}", monitored.join(", ")),
                    ))
                } else if permission.is_audited_change()
                    || (permission.is_read()
                        && self.engine.audits_reads(&ctx.principal.org_id).await?)
                {
                    Some(entry("allowed", String::new()))
                } else {
                    None
                };
                Ok(Authorized { ctx, pending })
            }
        }
    }
}

fn policy_input(ctx: &RequestContext, permission: Permission, facts: RequestFacts) -> PolicyInput {
    let p = &ctx.principal;
    let id = [
        facts.event_names.first(),
        Some(&facts.function_id),
        Some(&facts.run_id),
        Some(&facts.topic),
        Some(&facts.name),
    ]
    .into_iter()
    .flatten()
    .find(|v| !v.is_empty())
    .cloned()
    .unwrap_or_else(|| "*".to_owned());
    let kind = permission.resource_type();
    PolicyInput {
        principal: PrincipalFacts {
            id: p.id.clone(),
            kind: p.kind.as_str().to_owned(),
            roles: p.roles.clone(),
            org: p.org_id.clone(),
            org_name: p.org_name.clone(),
        },
        action: permission.as_str().to_owned(),
        resource: ResourceFacts {
            irn: irn(&p.org_id, ctx.project.as_str(), kind, ctx.env.as_str(), &id),
            org: p.org_id.clone(),
            project: ctx.project.to_string(),
            kind: kind.to_owned(),
            env: ctx.env_name.clone(),
            id,
        },
        request: facts,
        time_ms: Ts::now().millis(),
    }
}

fn audit_entry(
    ctx: &RequestContext,
    input: &PolicyInput,
    outcome: &str,
    reason: String,
) -> AuditEntry {
    let facts = &input.request;
    AuditEntry {
        org_id: ctx.principal.org_id.clone(),
        project_id: ctx.project.to_string(),
        env_id: ctx.env.to_string(),
        actor_kind: ctx.principal.kind.as_str().to_owned(),
        actor_id: ctx.principal.id.clone(),
        event_type: format!("authz.{outcome}"),
        action: input.action.clone(),
        resource: input.resource.irn.clone(),
        outcome: outcome.to_owned(),
        reason,
        method: facts.method.clone(),
        path: facts.path.clone(),
        rpc: facts.rpc.clone(),
        function_id: facts.function_id.clone(),
        run_id: facts.run_id.clone(),
        ..AuditEntry::default()
    }
}

trait WithStatus {
    fn with_status(self, status: u16) -> Self;
}

impl WithStatus for AuditEntry {
    fn with_status(mut self, status: u16) -> Self {
        self.status = i32::from(status);
        self
    }
}

/// The environment the request names (header, else `?env=`), if any. A header that is not
/// visible ASCII is refused: it used to be skipped silently and `default` served instead.
fn environment_name(
    headers: &HeaderMap,
    query_env: Option<&str>,
) -> Result<Option<String>, ApiError> {
    let mut named = None;
    for header in ENV_HEADERS {
        if let Some(value) = headers.get(header) {
            let text = value.to_str().map_err(|_| {
                ApiError::invalid(format!(
                    "the {header} header must be an environment name or id in ASCII"
                ))
            })?;
            named = named.or(Some(text));
        }
    }
    let Some(name) = named.or(query_env).map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    crate::domain::storable::check_text("environment", name)?;
    Ok(Some(name.to_owned()))
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Middleware on every authenticated route: the operation from the route table (or, for a
/// Connect service, its method), the decision, the handler, then the audit entry with the
/// handler's status (only successes of changes are recorded as allowed).
pub async fn authorize_route(
    State(state): State<super::AppState>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let route = parts
        .extensions
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default();
    let method = parts.method.clone();
    let Some(access) = super::access_of(&method, &route) else {
        return ApiError::not_found("no such route").into_response();
    };
    let path = parts.uri.path().to_owned();
    // Decoded once: a Connect method's name, and the facts REST parameters give a policy.
    let params = RawPathParams::from_request_parts(&mut parts, &())
        .await
        .map(|p| {
            p.iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect::<Vec<(String, String)>>()
        })
        .map_err(|e| e.body_text());
    // What the call is, as the handler will see it: the matched route, and for a Connect
    // service its decoded method (body facts are read by this name, never the raw path's).
    let mut canonical = route.clone();
    let mut operation = match access {
        super::Access::Key(permission) => Operation::new(permission, method.as_str(), &path),
        super::Access::Service => {
            // The service from the matched route, the method from the decoded parameter: the
            // handler dispatches on the decoded name, so the decision must look at the same one
            // (`%45mit` is `Emit`).
            let decoded = match &params {
                Ok(params) => params
                    .iter()
                    .find(|(name, _)| name == "method")
                    .map(|(_, value)| value.clone())
                    .unwrap_or_default(),
                Err(text) => return ApiError::invalid(format!("bad path: {text}")).into_response(),
            };
            let service = connect_service(&route);
            let rpc = decoded.as_str();
            canonical = format!("/ironflow.v1.{service}/{rpc}");
            Operation {
                permission: super::access::connect_permission(service, rpc),
                facts: RequestFacts {
                    method: method.as_str().to_owned(),
                    path: path.clone(),
                    rpc: format!("{service}/{rpc}"),
                    ..Default::default()
                },
            }
        }
        super::Access::Public | super::Access::KeyInHandler => {
            return next.run(Request::from_parts(parts, body)).await;
        }
    };
    if let Ok(params) = &params {
        super::access::path_facts(&route, params, &mut operation.facts);
    }
    let auth = &state.auth;
    let caller = match auth
        .authenticate(&parts.headers, None, None, operation.permission)
        .await
    {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let policies = match state.engine.policies_in_force(&caller.ctx.env).await {
        Ok(p) => p,
        Err(e) => return ApiError::from(e).into_response(),
    };
    // The body is read for its facts only when a policy could look at them.
    let body = if policies.iter().any(|p| !p.is_empty())
        && super::access::needs_body_facts(&canonical)
    {
        match axum::body::to_bytes(body, state.max_request_bytes).await {
            Ok(bytes) => {
                super::access::body_facts(&canonical, &parts.headers, &bytes, &mut operation.facts);
                axum::body::Body::from(bytes)
            }
            Err(_) => {
                return ApiError::too_large(
                    "request body is over the server's size limit (--max-payload-bytes)",
                )
                .into_response();
            }
        }
    } else {
        body
    };
    let authorized = match auth.decide(caller, &policies, operation).await {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    parts.extensions.insert(authorized.ctx);
    let response = next.run(Request::from_parts(parts, body)).await;
    if let Some(mut entry) = authorized.pending {
        let status = response.status();
        let monitored = entry.outcome == "monitored";
        if monitored || status.is_success() {
            entry.status = i32::from(status.as_u16());
            state.engine.record_audit(entry).await;
        }
    }
    response
}

/// `IronflowService` from the route `/ironflow.v1.IronflowService/{method}`.
fn connect_service(route: &str) -> &str {
    let service = route
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default();
    service.strip_prefix("ironflow.v1.").unwrap_or(service)
}
