//! The policy-set routes (`/api/v1/policy-set`, per environment, and
//! `/api/v1/platform/policy-set`) in ironflow-py's shapes. Writes need `If-Match` with the
//! version read (428 without it, 412 when another save came first); the `ETag` is that version.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::domain::policy::{DECISION, PolicyInput, PolicySetError};
use crate::domain::time::Ts;
use crate::engine::{PLATFORM_SCOPE, PolicyDocument, PolicySave};

use super::AppState;
use super::auth::RequestContext;
use super::error::{ApiError, Code};
use super::extract::{JsonBody, OptionalJsonBody, PathParams};

/// Which policy set a route is about.
#[derive(Clone, Copy)]
enum Scope {
    Environment,
    Platform,
}

impl Scope {
    fn of(self, ctx: &RequestContext) -> String {
        match self {
            Scope::Environment => ctx.env.as_str().to_owned(),
            Scope::Platform => PLATFORM_SCOPE.to_owned(),
        }
    }
}

fn document(doc: &PolicyDocument) -> Response {
    let body = json!({
        "version": doc.version,
        "mode": doc.mode,
        "modules": doc.modules,
        "decision": DECISION,
        "enforcement_active": doc.mode == "enforce" && !doc.modules.is_empty(),
        "updated_at": doc.updated_at.map(Ts::to_rfc3339).unwrap_or_default(),
        "updated_by": doc.updated_by,
    });
    let mut response = Json(body).into_response();
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", doc.version)) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

/// The version `If-Match` names: `3`, `"3"` or `W/"3"`; `*` matches whatever is in force.
fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let value = headers.get(header::IF_MATCH).ok_or_else(|| {
        ApiError::new(
            StatusCode::PRECONDITION_REQUIRED,
            Code::FailedPrecondition,
            "If-Match is required: send the version you read (GET /api/v1/policy-set)",
        )
    })?;
    let text = value
        .to_str()
        .map_err(|_| ApiError::invalid("If-Match must be a version number"))?
        .trim();
    if text == "*" {
        return Ok(None);
    }
    let text = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    text.parse::<i64>()
        .ok()
        .filter(|v| *v >= 0)
        .map(Some)
        .ok_or_else(|| ApiError::invalid(format!("If-Match '{text}' is not a version number")))
}

async fn expected(state: &AppState, scope: &str, headers: &HeaderMap) -> Result<i64, ApiError> {
    Ok(match if_match(headers)? {
        Some(v) => v,
        None => state.engine.policy_document(scope).await?.version,
    })
}

#[derive(Deserialize, Default)]
pub struct SetBody {
    #[serde(default)]
    modules: Option<BTreeMap<String, String>>,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    decision: Option<String>,
}

impl SetBody {
    fn modules(&mut self) -> Result<BTreeMap<String, String>, ApiError> {
        self.modules
            .take()
            .ok_or_else(|| ApiError::invalid("modules is required: {\"name\": \"CEL expression\"}"))
    }
}

async fn get(state: AppState, ctx: RequestContext, scope: Scope) -> Result<Response, ApiError> {
    Ok(document(
        &state.engine.policy_document(&scope.of(&ctx)).await?,
    ))
}

async fn put(
    state: AppState,
    ctx: RequestContext,
    headers: HeaderMap,
    mut body: SetBody,
    scope: Scope,
) -> Result<Response, ApiError> {
    let scope = scope.of(&ctx);
    let expected_version = expected(&state, &scope, &headers).await?;
    let saved = state
        .engine
        .save_policy_set(
            &scope,
            PolicySave {
                modules: body.modules()?,
                mode: body.mode.unwrap_or_else(|| "enforce".into()),
                decision: body.decision.unwrap_or_default(),
                expected_version,
                by: ctx.who(),
            },
        )
        .await?;
    Ok(document(&saved))
}

fn problems(e: &PolicySetError) -> Vec<Value> {
    match e {
        PolicySetError::Modules(list) => list
            .iter()
            .map(|p| {
                json!({"module": p.module, "line": p.line, "column": p.column,
                       "message": p.message, "error": p.to_string()})
            })
            .collect(),
        other => {
            vec![json!({"module": "", "message": other.to_string(), "error": other.to_string()})]
        }
    }
}

async fn validate(state: AppState, mut body: SetBody) -> Result<Json<Value>, ApiError> {
    let modules = body.modules()?;
    let checked = state.engine.check_policy_set(
        &modules,
        body.mode.as_deref().unwrap_or("enforce"),
        body.decision.as_deref().unwrap_or_default(),
    );
    Ok(Json(match checked {
        Ok(_) => json!({"valid": true, "errors": []}),
        Err(e) => json!({"valid": false, "errors": problems(&e)}),
    }))
}

#[derive(Deserialize)]
pub struct DryRunBody {
    input: Value,
    #[serde(default)]
    explain: bool,
    #[serde(default)]
    set: Option<SetBody>,
}

async fn dry_run(
    state: AppState,
    ctx: RequestContext,
    body: DryRunBody,
    scope: Scope,
) -> Result<Json<Value>, ApiError> {
    let input = PolicyInput::from_json(&body.input, Ts::now().millis())
        .map_err(|e| ApiError::invalid(format!("input: {e}")))?;
    let candidate = match body.set {
        Some(mut set) => Some((set.modules()?, set.mode.unwrap_or_else(|| "enforce".into()))),
        None => None,
    };
    let run = state
        .engine
        .dry_run_policy(&scope.of(&ctx), &input, candidate)
        .await?;
    let mut out = json!({
        "decision": if run.deny { "deny" } else { "allow" },
        "mode": run.mode,
        "version": run.version,
        "reasons": run.reasons,
    });
    if body.explain {
        let lines: Vec<String> = run
            .outcomes
            .iter()
            .map(|o| match &o.error {
                Some(e) => format!("{}: error ({e}) → deny", o.module),
                None => format!("{}: {}", o.module, o.outcome),
            })
            .collect();
        out["explain"] = Value::String(lines.join("\n"));
        out["modules"] = serde_json::to_value(&run.outcomes).unwrap_or_default();
    }
    Ok(Json(out))
}

async fn versions(
    state: AppState,
    ctx: RequestContext,
    scope: Scope,
) -> Result<Json<Value>, ApiError> {
    let versions = state.engine.policy_versions(&scope.of(&ctx)).await?;
    Ok(Json(json!({
        "versions": versions.iter().map(|v| json!({
            "version": v.version, "mode": v.mode, "created_at": v.created_at.to_rfc3339(),
            "created_by": v.created_by, "decision": DECISION,
            "modules": v.modules.keys().collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })))
}

fn version_number(text: &str) -> Result<i64, ApiError> {
    text.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| ApiError::invalid(format!("version '{text}' is not a positive number")))
}

async fn version(
    state: AppState,
    ctx: RequestContext,
    n: String,
    scope: Scope,
) -> Result<Response, ApiError> {
    let record = state
        .engine
        .policy_version(&scope.of(&ctx), version_number(&n)?)
        .await?;
    Ok(document(&record.into()))
}

async fn rollback(
    state: AppState,
    ctx: RequestContext,
    headers: HeaderMap,
    n: String,
    scope: Scope,
) -> Result<Response, ApiError> {
    let target = version_number(&n)?;
    let scope = scope.of(&ctx);
    let expected_version = expected(&state, &scope, &headers).await?;
    let saved = state
        .engine
        .rollback_policy_set(&scope, target, expected_version, ctx.who())
        .await?;
    Ok(document(&saved))
}

/// Both scopes' handlers, from the shared ones above.
macro_rules! scoped {
    ($scope:expr, $get:ident, $put:ident, $validate:ident, $dry:ident, $versions:ident,
     $version:ident, $rollback:ident) => {
        pub async fn $get(
            State(s): State<AppState>,
            ctx: RequestContext,
        ) -> Result<Response, ApiError> {
            get(s, ctx, $scope).await
        }
        pub async fn $put(
            State(s): State<AppState>,
            ctx: RequestContext,
            headers: HeaderMap,
            JsonBody(body): JsonBody<SetBody>,
        ) -> Result<Response, ApiError> {
            put(s, ctx, headers, body, $scope).await
        }
        pub async fn $validate(
            State(s): State<AppState>,
            JsonBody(body): JsonBody<SetBody>,
        ) -> Result<Json<Value>, ApiError> {
            validate(s, body).await
        }
        pub async fn $dry(
            State(s): State<AppState>,
            ctx: RequestContext,
            JsonBody(body): JsonBody<DryRunBody>,
        ) -> Result<Json<Value>, ApiError> {
            dry_run(s, ctx, body, $scope).await
        }
        pub async fn $versions(
            State(s): State<AppState>,
            ctx: RequestContext,
        ) -> Result<Json<Value>, ApiError> {
            versions(s, ctx, $scope).await
        }
        pub async fn $version(
            State(s): State<AppState>,
            ctx: RequestContext,
            PathParams(n): PathParams<String>,
        ) -> Result<Response, ApiError> {
            version(s, ctx, n, $scope).await
        }
        pub async fn $rollback(
            State(s): State<AppState>,
            ctx: RequestContext,
            headers: HeaderMap,
            PathParams(n): PathParams<String>,
            OptionalJsonBody(_body): OptionalJsonBody<Value>,
        ) -> Result<Response, ApiError> {
            rollback(s, ctx, headers, n, $scope).await
        }
    };
}

scoped!(
    Scope::Environment,
    get_env,
    put_env,
    validate_env,
    dry_run_env,
    versions_env,
    version_env,
    rollback_env
);
scoped!(
    Scope::Platform,
    get_platform,
    put_platform,
    validate_platform,
    dry_run_platform,
    versions_platform,
    version_platform,
    rollback_platform
);
