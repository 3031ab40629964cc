//! Authentication and environment selection: turns `Authorization: Bearer ifkey_…` and
//! `X-Ironflow-Environment[-ID]` into a [`RequestContext`] for the handlers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::engine::Engine;
use crate::ids::{ApiKeyId, EnvId, ProjectId};
use crate::store::tenancy::{ApiKeyRecord, EnvironmentRecord};
use crate::tenancy::{Permission, Role, hash_api_key};

use super::error::ApiError;

/// Who is calling and in which environment. Present on every authenticated request.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub env: EnvId,
    pub env_name: String,
    pub role: Role,
    pub key_id: Option<ApiKeyId>,
}

impl RequestContext {
    /// Who makes a change (the API key's id; `dev` without one), and why, for its history
    /// entry.
    pub fn actor(&self, reason: &str) -> crate::domain::lifecycle::control::Actor {
        crate::domain::lifecycle::control::Actor {
            key_id: self
                .key_id
                .as_ref()
                .map_or_else(|| "dev".to_owned(), ToString::to_string),
            reason: reason.to_owned(),
        }
    }

    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        if self.role.allows(permission) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this API key's role ({}) does not allow {} access",
                self.role.as_str(),
                permission.as_str()
            )))
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

/// Resolves keys and environments, with a short-lived cache so the hot path does not hit the
/// database on every request. A revoked key stops working within [`Authenticator::CACHE_TTL`].
pub struct Authenticator {
    engine: Engine,
    dev_mode: bool,
    keys: TtlCache<String, Option<ApiKeyRecord>>,
    envs: TtlCache<(ProjectId, String), Option<EnvironmentRecord>>,
}

/// Entries remembered with the instant they were looked up.
type TtlCache<K, V> = Mutex<HashMap<K, (Instant, V)>>;

pub const ENV_HEADERS: [&str; 2] = ["x-ironflow-environment", "x-ironflow-environment-id"];

impl Authenticator {
    const CACHE_TTL: Duration = Duration::from_secs(10);
    const CACHE_MAX: usize = 10_000;

    pub fn new(engine: Engine, dev_mode: bool) -> Arc<Self> {
        Arc::new(Self {
            engine,
            dev_mode,
            keys: Mutex::new(HashMap::new()),
            envs: Mutex::new(HashMap::new()),
        })
    }

    pub fn dev_mode(&self) -> bool {
        self.dev_mode
    }

    /// Authenticates a request from its headers (and, for WebSocket upgrades, a query token).
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        query_token: Option<&str>,
        query_env: Option<&str>,
    ) -> Result<RequestContext, ApiError> {
        let env_name = environment_name(headers, query_env)?;
        let (project, role, key_id) = if self.dev_mode {
            let default = self.engine.default_environment().await?.ok_or_else(|| {
                ApiError::unauthenticated(
                    "no default environment exists (database not bootstrapped)",
                )
            })?;
            (default.project_id, Role::Admin, None)
        } else {
            let secret = bearer_token(headers).or(query_token).ok_or_else(|| {
                ApiError::unauthenticated("missing API key: send 'Authorization: Bearer ifkey_…'")
            })?;
            let key = self
                .lookup_key(&hash_api_key(secret))
                .await?
                .ok_or_else(|| ApiError::unauthenticated("invalid or revoked API key"))?;
            let role = Role::parse(&key.role)
                .ok_or_else(|| ApiError::forbidden("this API key has an unknown role"))?;
            (key.project_id, role, Some(key.id))
        };
        let env = self
            .lookup_env(&project, &env_name)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("environment '{env_name}' not found")))?;
        Ok(RequestContext {
            env: env.id,
            env_name: env.name,
            role,
            key_id,
        })
    }

    async fn lookup_key(&self, hash: &str) -> Result<Option<ApiKeyRecord>, ApiError> {
        if let Some(hit) = cached(&self.keys, &hash.to_owned()) {
            return Ok(hit);
        }
        let found = self.engine.find_api_key(hash).await?;
        remember(&self.keys, hash.to_owned(), found.clone());
        Ok(found)
    }

    async fn lookup_env(
        &self,
        project: &ProjectId,
        name: &str,
    ) -> Result<Option<EnvironmentRecord>, ApiError> {
        let key = (project.clone(), name.to_owned());
        if let Some(hit) = cached(&self.envs, &key) {
            return Ok(hit);
        }
        let found = self.engine.find_environment(project, name).await?;
        remember(&self.envs, key, found.clone());
        Ok(found)
    }
}

fn cached<K: std::hash::Hash + Eq, V: Clone>(map: &TtlCache<K, V>, key: &K) -> Option<V> {
    let map = map.lock().unwrap_or_else(PoisonError::into_inner);
    map.get(key)
        .filter(|(at, _)| at.elapsed() < Authenticator::CACHE_TTL)
        .map(|(_, v)| v.clone())
}

fn remember<K: std::hash::Hash + Eq, V>(map: &TtlCache<K, V>, key: K, value: V) {
    let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
    if map.len() >= Authenticator::CACHE_MAX {
        map.clear();
    }
    map.insert(key, (Instant::now(), value));
}

/// The environment the request names (header, else `?env=`, else `default`). A header that is
/// not visible ASCII is refused: it used to be skipped silently and `default` served instead.
fn environment_name(headers: &HeaderMap, query_env: Option<&str>) -> Result<String, ApiError> {
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
    let name = named
        .or(query_env)
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .unwrap_or("default");
    crate::domain::storable::check_text("environment", name)?;
    Ok(name.to_owned())
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

/// Middleware: authenticate, then hand the request on with its [`RequestContext`].
pub async fn require_auth(
    State(auth): State<Arc<Authenticator>>,
    mut request: Request,
    next: Next,
) -> Response {
    match auth.authenticate(request.headers(), None, None).await {
        Ok(ctx) => {
            request.extensions_mut().insert(ctx);
            next.run(request).await
        }
        Err(err) => err.into_response(),
    }
}
