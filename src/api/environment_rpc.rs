//! `ironflow.v1.EnvironmentService` over Connect. An environment's `api_key` is a key scoped
//! to it with the `developer` role: minted (and shown once) on `CreateEnvironment` and
//! `RotateAPIKey`; rotating revokes the environment keys minted before.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use crate::domain::authz::BuiltinRole;
use crate::engine::NewKey;
use crate::proto::v1 as pb;
use crate::store::tenancy::EnvironmentRecord;

use super::AppState;
use super::auth::RequestContext;
use super::connect::{prepare, respond};
use super::error::ApiError;
use super::extract::{Body, PathParams};
use super::proto_map as map;

/// The name the service's keys carry, so a rotation finds the ones it replaces.
fn key_name(env: &EnvironmentRecord) -> String {
    format!("environment key ({})", env.id)
}

fn info(env: &EnvironmentRecord, api_key: String) -> pb::EnvironmentInfo {
    pb::EnvironmentInfo {
        id: env.id.to_string(),
        name: env.name.clone(),
        api_key,
        created_at: Some(map::timestamp(env.created_at)),
        updated_at: Some(map::timestamp(env.updated_at)),
    }
}

/// A fresh key for the environment; the service's earlier keys for it are revoked.
async fn mint_key(
    state: &AppState,
    ctx: &RequestContext,
    env: &EnvironmentRecord,
) -> Result<String, ApiError> {
    let org = ctx.org();
    let name = key_name(env);
    for old in state.engine.list_keys(&org).await? {
        if old.name == name && old.env_id.as_ref() == Some(&env.id) {
            state
                .engine
                .delete_key(&org, ctx.permissions(), &old.id, false)
                .await?;
        }
    }
    let issued = state
        .engine
        .create_key(
            &org,
            ctx.permissions(),
            NewKey {
                name,
                project: env.project_id.clone(),
                env: Some(env.id.clone()),
                roles: vec![BuiltinRole::Developer.as_str().to_owned()],
                expires_in: None,
                created_by: ctx.who(),
            },
        )
        .await?;
    Ok(issued.secret)
}

fn env_named(ctx: &RequestContext, id: &str) -> String {
    if id.is_empty() {
        ctx.env.to_string()
    } else {
        id.to_owned()
    }
}

/// `POST /ironflow.v1.EnvironmentService/{method}`.
pub async fn environment_service(
    State(state): State<AppState>,
    PathParams(method): PathParams<String>,
    ctx: RequestContext,
    headers: HeaderMap,
    Body(body): Body,
) -> Response {
    let unary = match prepare(&headers, body, state.max_request_bytes) {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    let (s, c) = (&state, &ctx);
    match method.as_str() {
        "GetEnvironment" => {
            respond(&unary, |r: pb::GetEnvironmentRequest| async move {
                let env = s
                    .engine
                    .get_environment(&c.org(), &env_named(c, &r.id))
                    .await;
                let env = match env {
                    Ok(env) => env,
                    // `default` (or any name) of the caller's project, as the headers name it.
                    Err(_) => s
                        .engine
                        .find_environment(&c.project, &r.id)
                        .await?
                        .ok_or_else(|| {
                            ApiError::not_found(format!("environment '{}' not found", r.id))
                        })?,
                };
                Ok(info(&env, String::new()))
            })
            .await
        }
        "ListEnvironments" => {
            respond(&unary, |_: pb::ListEnvironmentsRequest| async move {
                let envs = s.engine.list_environments(&c.org(), None).await?;
                Ok(pb::ListEnvironmentsResponse {
                    environments: envs.iter().map(|e| info(e, String::new())).collect(),
                })
            })
            .await
        }
        "CreateEnvironment" => {
            respond(&unary, |r: pb::CreateEnvironmentRequest| async move {
                let project = if c.project.as_str().is_empty() {
                    return Err(ApiError::invalid(
                        "the caller has no project to create it in",
                    ));
                } else {
                    c.project.clone()
                };
                let env = s
                    .engine
                    .create_environment(&c.org(), &project, &r.name)
                    .await?;
                let key = mint_key(s, c, &env).await?;
                Ok(info(&env, key))
            })
            .await
        }
        "DeleteEnvironment" => {
            respond(&unary, |r: pb::DeleteEnvironmentRequest| async move {
                s.engine
                    .delete_environment(&c.org(), &env_named(c, &r.id), false)
                    .await?;
                Ok(pb::DeleteEnvironmentResponse { success: true })
            })
            .await
        }
        "RotateAPIKey" => {
            respond(&unary, |r: pb::RotateApiKeyRequest| async move {
                let id = env_named(c, &r.id);
                let env = s.engine.get_environment(&c.org(), &id).await?;
                let key = mint_key(s, c, &env).await?;
                Ok(pb::RotateApiKeyResponse {
                    id: env.id.to_string(),
                    name: env.name.clone(),
                    api_key: key,
                })
            })
            .await
        }
        m => super::connect::unknown_method("EnvironmentService", m),
    }
}
