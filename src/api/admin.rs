//! Tenancy administration over REST, in ironflow-py's shapes: organisations, projects,
//! environments, API keys, users and sign-in, tenants, roles. Lists are bare JSON arrays.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::domain::authz::{BuiltinRole, Permission, PrincipalKind};
use crate::domain::job::parse_duration;
use crate::domain::time::Ts;
use crate::engine::{DeletionReport, IssuedKey, NewKey, NewUser, RoleView};
use crate::ids::{ApiKeyId, EnvId, OrgId, ProjectId};
use crate::store::tenancy::{
    ApiKeyRecord, EnvironmentRecord, OrgRecord, ProjectRecord, UserRecord,
};

use super::AppState;
use super::auth::RequestContext;
use super::error::ApiError;
use super::extract::{JsonBody, OptionalJsonBody, PathParams, QueryParams};

fn ts(t: Ts) -> Value {
    Value::String(t.to_rfc3339())
}

fn opt_ts(t: Option<Ts>) -> Value {
    t.map_or(Value::Null, ts)
}

fn org_json(o: &OrgRecord) -> Value {
    json!({
        "id": o.id, "name": o.name, "is_root": o.is_root,
        "created_at": ts(o.created_at), "updated_at": ts(o.updated_at),
    })
}

fn project_json(p: &ProjectRecord) -> Value {
    json!({
        "id": p.id, "org_id": p.org_id, "name": p.name, "description": "",
        "created_at": ts(p.created_at), "updated_at": ts(p.updated_at),
    })
}

fn env_json(e: &EnvironmentRecord) -> Value {
    json!({
        "id": e.id.as_str(), "name": e.name, "color": "", "project_id": e.project_id.as_str(),
        "created_at": ts(e.created_at), "updated_at": ts(e.updated_at),
    })
}

fn key_json(k: &ApiKeyRecord) -> Value {
    json!({
        "id": k.id.as_str(), "name": k.name, "key_prefix": k.key_prefix,
        "created_at": ts(k.created_at),
        "environment_id": k.env_id.as_ref().map(EnvId::as_str),
        "project_id": k.project_id.as_str(),
        "expires_at": opt_ts(k.expires_at), "last_used_at": opt_ts(k.last_used_at),
        "role_ids": k.roles,
    })
}

fn issued_json(k: &IssuedKey) -> Value {
    let mut v = key_json(&k.record);
    v["key"] = Value::String(k.secret.clone());
    v
}

fn user_json(u: &UserRecord) -> Value {
    json!({
        "id": u.id, "org_id": u.org_id.as_str(), "email": u.email, "name": u.name,
        "roles": u.roles, "created_at": ts(u.created_at), "updated_at": ts(u.updated_at),
        "last_login_at": opt_ts(u.last_login_at),
    })
}

fn role_json(org: &OrgId, r: &RoleView) -> Value {
    json!({
        "id": r.id, "org_id": if r.builtin { "" } else { org.as_str() }, "name": r.name,
        "description": r.description, "is_default": r.builtin,
        "permissions": r.permissions.names(),
        "created_at": r.created_at.map_or(Value::String(String::new()), ts),
        "updated_at": opt_ts(r.updated_at),
        "api_key_count": r.holders,
    })
}

fn deletion_json(r: &DeletionReport) -> Value {
    let c = &r.contents;
    json!({
        "environments": r.environments,
        "functions": c.functions, "runs": c.runs, "unfinished_runs": c.unfinished_runs,
        "events": c.events, "jobs": c.jobs, "secrets": c.secrets, "keys_revoked": c.keys,
    })
}

/// A caller may see and change only its own organisation, unless it administers the platform.
/// Another org is "not found" rather than "forbidden": ids of other tenants are not confirmed.
fn own_org(ctx: &RequestContext, id: &str) -> Result<OrgId, ApiError> {
    if id == ctx.principal.org_id || ctx.holds(Permission::PlatformAdmin) {
        Ok(OrgId::from_stored(id.to_owned()))
    } else {
        Err(ApiError::not_found(format!(
            "organisation '{id}' not found"
        )))
    }
}

// ---- organisations --------------------------------------------------------------------------

pub async fn list_orgs(
    State(state): State<AppState>,
    ctx: RequestContext,
) -> Result<Json<Value>, ApiError> {
    let orgs = state
        .engine
        .list_orgs(&ctx.org(), ctx.holds(Permission::PlatformAdmin))
        .await?;
    Ok(Json(orgs.iter().map(org_json).collect()))
}

pub async fn get_org(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams(id): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    let org = own_org(&ctx, &id)?;
    Ok(Json(org_json(&state.engine.get_org(&org).await?)))
}

#[derive(Deserialize)]
pub struct OrgBody {
    name: Option<String>,
}

/// `POST /api/v1/orgs` and `/api/v1/platform/orgs`: a new organisation with a `default`
/// project and environment (its first admin key comes from `tenants/provision`).
pub async fn create_org(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<OrgBody>,
) -> Result<Response, ApiError> {
    let name = body
        .name
        .ok_or_else(|| ApiError::invalid("name is required"))?;
    let (made, _secret) = state.engine.provision_tenant(&name, "default").await?;
    let org = state.engine.get_org(&made.org).await?;
    Ok((StatusCode::CREATED, Json(org_json(&org))).into_response())
}

pub async fn update_org(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<OrgBody>,
) -> Result<Json<Value>, ApiError> {
    let org = own_org(&ctx, &id)?;
    let updated = match body.name {
        Some(name) => state.engine.rename_org(&org, &name).await?,
        None => state.engine.get_org(&org).await?,
    };
    Ok(Json(org_json(&updated)))
}

pub async fn delete_org(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams(id): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    let org = own_org(&ctx, &id)?;
    state.engine.delete_org(&org).await?;
    Ok(Json(json!({"deleted": id})))
}

// ---- projects -------------------------------------------------------------------------------

#[derive(Deserialize)]
pub struct ProjectBody {
    name: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
}

pub async fn create_project(
    State(state): State<AppState>,
    ctx: RequestContext,
    JsonBody(body): JsonBody<ProjectBody>,
) -> Result<Response, ApiError> {
    let name = body
        .name
        .ok_or_else(|| ApiError::invalid("name is required"))?;
    let (project, _env) = state.engine.create_project(&ctx.org(), &name).await?;
    Ok((StatusCode::CREATED, Json(project_json(&project))).into_response())
}

pub async fn list_projects(
    State(state): State<AppState>,
    ctx: RequestContext,
) -> Result<Json<Value>, ApiError> {
    let projects = state.engine.list_projects(&ctx.org()).await?;
    Ok(Json(projects.iter().map(project_json).collect()))
}

pub async fn get_project(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams(id): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    let project = ProjectId::from_stored(id);
    Ok(Json(project_json(
        &state.engine.get_project(&ctx.org(), &project).await?,
    )))
}

pub async fn update_project(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<ProjectBody>,
) -> Result<Json<Value>, ApiError> {
    let project = ProjectId::from_stored(id);
    let org = ctx.org();
    let updated = match body.name {
        Some(name) => state.engine.rename_project(&org, &project, &name).await?,
        None => state.engine.get_project(&org, &project).await?,
    };
    Ok(Json(project_json(&updated)))
}

#[derive(Deserialize, Default)]
pub struct ForceQuery {
    #[serde(default)]
    force: bool,
}

/// `DELETE /api/v1/projects/{id}[?force=true]`: refused (409, saying what it holds) while its
/// environments hold unfinished runs.
pub async fn delete_project(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams(id): PathParams<String>,
    QueryParams(q): QueryParams<ForceQuery>,
) -> Result<Json<Value>, ApiError> {
    let project = ProjectId::from_stored(id.clone());
    let report = state
        .engine
        .delete_project(&ctx.org(), &project, q.force)
        .await?;
    Ok(Json(
        json!({"deleted": id, "removed": deletion_json(&report)}),
    ))
}

// ---- environments ---------------------------------------------------------------------------

#[derive(Deserialize)]
pub struct EnvironmentBody {
    name: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    color: Option<String>,
    #[serde(default)]
    project_id: Option<String>,
}

/// The project a call means: the one named, else the caller's own.
async fn project_of(
    state: &AppState,
    ctx: &RequestContext,
    named: Option<String>,
) -> Result<ProjectId, ApiError> {
    if let Some(p) = named.filter(|p| !p.is_empty()) {
        return Ok(ProjectId::from_stored(p));
    }
    if !ctx.project.as_str().is_empty() {
        return Ok(ctx.project.clone());
    }
    let first = state.engine.list_projects(&ctx.org()).await?;
    first
        .into_iter()
        .next()
        .map(|p| ProjectId::from_stored(p.id))
        .ok_or_else(|| {
            ApiError::invalid("project_id is required: this organisation has no project")
        })
}

pub async fn create_environment(
    State(state): State<AppState>,
    ctx: RequestContext,
    JsonBody(body): JsonBody<EnvironmentBody>,
) -> Result<Response, ApiError> {
    let name = body
        .name
        .ok_or_else(|| ApiError::invalid("name is required"))?;
    let project = project_of(&state, &ctx, body.project_id).await?;
    let env = state
        .engine
        .create_environment(&ctx.org(), &project, &name)
        .await?;
    Ok((StatusCode::CREATED, Json(env_json(&env))).into_response())
}

#[derive(Deserialize, Default)]
pub struct EnvironmentListQuery {
    project_id: Option<String>,
}

pub async fn list_environments(
    State(state): State<AppState>,
    ctx: RequestContext,
    QueryParams(q): QueryParams<EnvironmentListQuery>,
) -> Result<Json<Value>, ApiError> {
    let project = q
        .project_id
        .filter(|p| !p.is_empty())
        .map(ProjectId::from_stored);
    let envs = state
        .engine
        .list_environments(&ctx.org(), project.as_ref())
        .await?;
    Ok(Json(envs.iter().map(env_json).collect()))
}

pub async fn get_environment(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams(id): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(env_json(
        &state.engine.get_environment(&ctx.org(), &id).await?,
    )))
}

pub async fn update_environment(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<EnvironmentBody>,
) -> Result<Json<Value>, ApiError> {
    let org = ctx.org();
    let env = match body.name {
        Some(name) => state.engine.rename_environment(&org, &id, &name).await?,
        None => state.engine.get_environment(&org, &id).await?,
    };
    Ok(Json(env_json(&env)))
}

/// `PUT /api/v1/environments/{id}/retention`: `{"retention_days": N}` or `null` (keep everything).
#[derive(Debug, Deserialize)]
pub struct RetentionBody {
    retention_days: Value,
}

fn retention_json(env: &EnvironmentRecord, days: Option<u32>) -> Value {
    json!({
        "environment_id": env.id.as_str(), "environment": env.name, "retention_days": days,
        "removes": match days {
            Some(d) => format!("finished runs with their steps, events no remaining run refers to, and history entries older than {d} days"),
            None => "nothing: this environment keeps everything".to_owned(),
        },
    })
}

pub async fn get_environment_retention(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams(id): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    let (env, days) = state.engine.environment_retention(&ctx.org(), &id).await?;
    Ok(Json(retention_json(&env, days)))
}

pub async fn put_environment_retention(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<RetentionBody>,
) -> Result<Json<Value>, ApiError> {
    let days =
        crate::domain::retention::parse_days(&body.retention_days).map_err(ApiError::invalid)?;
    let (env, days) = state
        .engine
        .set_environment_retention(&ctx.org(), &id, days)
        .await?;
    Ok(Json(retention_json(&env, days)))
}

pub async fn delete_environment(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams(id): PathParams<String>,
    QueryParams(q): QueryParams<ForceQuery>,
) -> Result<Json<Value>, ApiError> {
    let report = state
        .engine
        .delete_environment(&ctx.org(), &id, q.force)
        .await?;
    Ok(Json(
        json!({"status": "deleted", "id": id, "removed": deletion_json(&report)}),
    ))
}

// ---- API keys -------------------------------------------------------------------------------

#[derive(Deserialize)]
pub struct CreateKeyBody {
    name: Option<String>,
    #[serde(default)]
    env_id: Option<String>,
    #[serde(default)]
    project_id: Option<String>,
    /// `90d`, `24h`, `30m`, … (or seconds as a number).
    #[serde(default)]
    expires_in: Option<Value>,
    #[serde(default)]
    role_ids: Option<Vec<String>>,
    /// Platform keys are admin keys of the root organisation: ask for role `admin` there.
    #[serde(default)]
    platform: Option<bool>,
}

fn expiry(value: Option<Value>) -> Result<Option<std::time::Duration>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => parse_duration(&s)
            .map(Some)
            .map_err(|e| ApiError::invalid(format!("expires_in: {e}"))),
        Some(Value::Number(n)) => n
            .as_u64()
            .filter(|s| *s > 0 && *s <= 100 * 365 * 86_400)
            .map(|s| Some(std::time::Duration::from_secs(s)))
            .ok_or_else(|| ApiError::invalid("expires_in must be a positive number of seconds")),
        Some(_) => Err(ApiError::invalid(
            "expires_in must be a duration such as '90d' or a number of seconds",
        )),
    }
}

/// `POST /api/v1/apikeys`: the key's secret is in this answer only (stored hashed).
pub async fn create_key(
    State(state): State<AppState>,
    ctx: RequestContext,
    JsonBody(body): JsonBody<CreateKeyBody>,
) -> Result<Response, ApiError> {
    let name = body
        .name
        .ok_or_else(|| ApiError::invalid("name is required"))?;
    if body.platform == Some(true) && !ctx.holds(Permission::PlatformAdmin) {
        return Err(ApiError::forbidden(
            "only platform administrators create platform keys",
        ));
    }
    let org = ctx.org();
    let mut env = body.env_id.filter(|e| !e.is_empty());
    // A key scoped to one environment mints keys for that environment only.
    if ctx.principal.env_scoped {
        match &env {
            None => env = Some(ctx.env.to_string()),
            Some(named) if *named == ctx.env.as_str() => {}
            Some(_) => {
                return Err(ApiError::forbidden(
                    "a key scoped to one environment creates keys for that environment only",
                ));
            }
        }
    }
    let project = match &env {
        Some(env) => state.engine.get_environment(&org, env).await?.project_id,
        None => project_of(&state, &ctx, body.project_id).await?,
    };
    let roles = body
        .role_ids
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| vec![BuiltinRole::Viewer.as_str().to_owned()]);
    let issued = state
        .engine
        .create_key(
            &org,
            ctx.permissions(),
            NewKey {
                name,
                project,
                env: env.map(EnvId::from_stored),
                roles,
                expires_in: expiry(body.expires_in)?,
                created_by: ctx.who(),
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(issued_json(&issued))).into_response())
}

pub async fn list_keys(
    State(state): State<AppState>,
    ctx: RequestContext,
) -> Result<Json<Value>, ApiError> {
    let keys = state.engine.list_keys(&ctx.org()).await?;
    Ok(Json(keys.iter().map(key_json).collect()))
}

pub async fn get_key(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams(id): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    let key = ApiKeyId::from_stored(id);
    Ok(Json(key_json(
        &state.engine.get_key(&ctx.org(), &key).await?,
    )))
}

#[derive(Deserialize, Default)]
pub struct PurgeQuery {
    #[serde(default)]
    purge: bool,
}

/// `DELETE /api/v1/apikeys/{id}[?purge=true]`: revoked at once; `purge` also removes the row.
pub async fn delete_key(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams(id): PathParams<String>,
    QueryParams(q): QueryParams<PurgeQuery>,
) -> Result<Json<Value>, ApiError> {
    let key = ApiKeyId::from_stored(id.clone());
    state
        .engine
        .delete_key(&ctx.org(), ctx.permissions(), &key, q.purge)
        .await?;
    Ok(Json(json!({"deleted": id, "purged": q.purge})))
}

pub async fn rotate_key(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams(id): PathParams<String>,
    OptionalJsonBody(_body): OptionalJsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    let key = ApiKeyId::from_stored(id);
    let issued = state
        .engine
        .rotate_key(&ctx.org(), ctx.permissions(), &key)
        .await?;
    Ok(Json(issued_json(&issued)))
}

#[derive(Deserialize)]
pub struct RolesBody {
    role_ids: Vec<String>,
}

pub async fn set_key_roles(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<RolesBody>,
) -> Result<Json<Value>, ApiError> {
    let key = ApiKeyId::from_stored(id);
    let record = state
        .engine
        .set_key_roles(&ctx.org(), ctx.permissions(), &key, body.role_ids)
        .await?;
    Ok(Json(key_json(&record)))
}

// ---- users ----------------------------------------------------------------------------------

#[derive(Deserialize)]
pub struct CreateUserBody {
    email: Option<String>,
    password: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    roles: Vec<String>,
}

pub async fn create_user(
    State(state): State<AppState>,
    ctx: RequestContext,
    JsonBody(body): JsonBody<CreateUserBody>,
) -> Result<Response, ApiError> {
    let email = body
        .email
        .ok_or_else(|| ApiError::invalid("email is required"))?;
    let password = body
        .password
        .ok_or_else(|| ApiError::invalid("password is required"))?;
    let user = state
        .engine
        .create_user(
            &ctx.org(),
            ctx.permissions(),
            NewUser {
                email,
                password,
                name: body.name,
                roles: body.roles,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(user_json(&user))).into_response())
}

pub async fn list_users(
    State(state): State<AppState>,
    ctx: RequestContext,
) -> Result<Json<Value>, ApiError> {
    let users = state.engine.list_users(&ctx.org()).await?;
    Ok(Json(users.iter().map(user_json).collect()))
}

pub async fn get_user(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams(id): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(user_json(
        &state.engine.get_user(&ctx.org(), &id).await?,
    )))
}

#[derive(Deserialize)]
pub struct UpdateUserBody {
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    roles: Option<Vec<String>>,
}

pub async fn update_user(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<UpdateUserBody>,
) -> Result<Json<Value>, ApiError> {
    let user = state
        .engine
        .update_user(
            &ctx.org(),
            ctx.permissions(),
            &id,
            body.name,
            body.email,
            body.roles,
        )
        .await?;
    Ok(Json(user_json(&user)))
}

pub async fn delete_user(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams(id): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    state
        .engine
        .delete_user(&ctx.org(), ctx.permissions(), &id)
        .await?;
    Ok(Json(json!({"deleted": id})))
}

#[derive(Deserialize)]
pub struct PasswordBody {
    #[serde(default)]
    current_password: Option<String>,
    new_password: String,
}

/// `PATCH /api/v1/users/{id}/password`: people change their own (giving the current one);
/// holders of `users:admin` reset anyone's in their organisation.
pub async fn change_password(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<PasswordBody>,
) -> Result<Json<Value>, ApiError> {
    let own = ctx.principal.kind == PrincipalKind::User && ctx.principal.id == id;
    let current = if own {
        Some(body.current_password.ok_or_else(|| {
            ApiError::invalid("current_password is required to change your own password")
        })?)
    } else if ctx.holds(Permission::UsersAdmin) {
        None
    } else {
        return Err(ApiError::forbidden(
            "changing another user's password needs 'users:admin'",
        ));
    };
    state
        .engine
        .change_password(
            &ctx.org(),
            ctx.permissions(),
            &id,
            current,
            body.new_password,
        )
        .await?;
    Ok(Json(json!({"status": "changed"})))
}

#[derive(Deserialize)]
pub struct LoginBody {
    email: String,
    password: String,
}

/// `POST /api/v1/platform/auth/login`: a session token for a person (send it as the bearer).
pub async fn login(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<LoginBody>,
) -> Result<Json<Value>, ApiError> {
    let signed = state.engine.login(&body.email, &body.password).await?;
    let u = &signed.user;
    Ok(Json(json!({
        "token": signed.token,
        "expires_at": ts(signed.expires_at),
        "user": {"id": u.id, "email": u.email, "name": u.name, "roles": u.roles,
                 "org_id": u.org_id.as_str()},
    })))
}

// ---- tenants --------------------------------------------------------------------------------

pub async fn list_tenants(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let tenants = state.engine.tenants().await?;
    Ok(Json(
        tenants
            .iter()
            .map(|t| {
                json!({"id": t.id, "name": t.name, "created_at": ts(t.created_at),
                       "env_count": t.env_count, "key_count": t.key_count})
            })
            .collect(),
    ))
}

#[derive(Deserialize)]
pub struct ProvisionBody {
    org_name: String,
    #[serde(default)]
    env_name: String,
}

/// `POST /api/v1/tenants/provision`: an organisation, its `default` project, an environment and
/// an admin key (shown once).
pub async fn provision_tenant(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<ProvisionBody>,
) -> Result<Response, ApiError> {
    let (made, secret) = state
        .engine
        .provision_tenant(&body.org_name, &body.env_name)
        .await?;
    let org = state.engine.get_org(&made.org).await?;
    let env = state
        .engine
        .get_environment(&made.org, made.env.as_str())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "org": {"id": org.id, "name": org.name},
            "project": {"id": made.project.as_str()},
            "environment": {"id": env.id.as_str(), "name": env.name},
            "api_key": {"id": made.key.as_str(), "key": secret, "roles": ["admin"]},
        })),
    )
        .into_response())
}

// ---- roles ----------------------------------------------------------------------------------

pub async fn list_roles(
    State(state): State<AppState>,
    ctx: RequestContext,
) -> Result<Json<Value>, ApiError> {
    let org = ctx.org();
    let roles = state.engine.list_roles(&org).await?;
    Ok(Json(roles.iter().map(|r| role_json(&org, r)).collect()))
}

pub async fn get_role(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams(id): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    let org = ctx.org();
    Ok(Json(role_json(
        &org,
        &state.engine.get_role(&org, &id).await?,
    )))
}

/// `GET /api/v1/roles/permissions`: every permission a role can be made of.
pub async fn list_permissions() -> Json<Value> {
    Json(
        Permission::ALL
            .iter()
            .filter(|p| **p != Permission::PlatformAdmin)
            .map(|p| json!({"name": p.as_str(), "description": p.description()}))
            .collect(),
    )
}

#[derive(Deserialize)]
pub struct RoleBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    permissions: Option<Vec<String>>,
}

pub async fn create_role(
    State(state): State<AppState>,
    ctx: RequestContext,
    JsonBody(body): JsonBody<RoleBody>,
) -> Result<Response, ApiError> {
    let name = body
        .name
        .ok_or_else(|| ApiError::invalid("name is required"))?;
    let permissions = body.permissions.ok_or_else(|| {
        ApiError::invalid("permissions is required: a list such as [\"events:emit\"]")
    })?;
    let org = ctx.org();
    let role = state
        .engine
        .create_role(
            &org,
            ctx.permissions(),
            &name,
            body.description.as_deref().unwrap_or_default(),
            &permissions,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(role_json(&org, &role))).into_response())
}

pub async fn update_role(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<RoleBody>,
) -> Result<Json<Value>, ApiError> {
    let org = ctx.org();
    let role = state
        .engine
        .update_role(
            &org,
            ctx.permissions(),
            &id,
            body.name.as_deref(),
            body.description.as_deref(),
            body.permissions.as_deref(),
        )
        .await?;
    Ok(Json(role_json(&org, &role)))
}

pub async fn delete_role(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams(id): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    state.engine.delete_role(&ctx.org(), &id).await?;
    Ok(Json(json!({"deleted": id})))
}
