//! `ironflow.v1.QueryService`: `ExecuteSQL`, SQL over the documented history views of the
//! caller's environment (thin: parse, authorize, call the engine, map the rows).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use crate::proto::v1 as pb;

use super::AppState;
use super::auth::RequestContext;
use super::connect::{prepare, respond};
use super::error::ApiError;
use super::extract::{Body, PathParams};

/// `POST /ironflow.v1.QueryService/{method}`.
pub async fn query_service(
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
    match method.as_str() {
        "ExecuteSQL" => respond(&unary, |r| execute_sql(&state, &ctx, r)).await,
        m => super::connect::unknown_method("QueryService", m),
    }
}

async fn execute_sql(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::ExecuteSqlRequest,
) -> Result<pb::ExecuteSqlResponse, ApiError> {
    let answer = state
        .engine
        .execute_history_sql(
            &ctx.env,
            &req.query,
            i64::from(req.timeout_ms),
            i64::from(req.max_rows),
        )
        .await?;
    let rows: Vec<pb::SqlRow> = answer
        .rows
        .rows
        .into_iter()
        .map(|r| pb::SqlRow {
            values: r.into_iter().map(Option::unwrap_or_default).collect(),
        })
        .collect();
    Ok(pb::ExecuteSqlResponse {
        columns: answer.rows.columns,
        total_rows: i32::try_from(rows.len()).unwrap_or(i32::MAX),
        rows,
    })
}
