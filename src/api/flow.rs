//! `GET /api/v1/flow/*`: the flow map's edges in ironflow-py's shapes (`FlowEmitEdgesResponse`,
//! `FlowInvokeEdgesResponse`, `FlowStreamEdgesResponse`, `FlowTopicEdgesResponse`,
//! `FlowWaitEdgesResponse`, `WebhookFlowData`).

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::AppState;
use super::auth::RequestContext;
use super::error::ApiError;

type FlowResult = Result<Json<Value>, ApiError>;

fn edges(items: impl IntoIterator<Item = Value>) -> Json<Value> {
    Json(json!({ "edges": items.into_iter().collect::<Vec<_>>() }))
}

pub async fn emit_edges(State(state): State<AppState>, ctx: RequestContext) -> FlowResult {
    let rows = state.engine.flow_emit_edges(&ctx.env).await?;
    Ok(edges(rows.into_iter().map(
        |e| json!({"event": e.event, "function_id": e.function_id}),
    )))
}

pub async fn invoke_edges(State(state): State<AppState>, ctx: RequestContext) -> FlowResult {
    let rows = state.engine.flow_invoke_edges(&ctx.env).await?;
    Ok(edges(rows.into_iter().map(|e| {
        json!({"parent_function_id": e.parent_function_id, "child_function_id": e.child_function_id})
    })))
}

pub async fn stream_edges(State(state): State<AppState>, ctx: RequestContext) -> FlowResult {
    let rows = state.engine.flow_stream_edges(&ctx.env).await?;
    Ok(edges(rows.into_iter().map(
        |e| json!({"entity_type": e.entity_type, "event": e.event}),
    )))
}

pub async fn topic_edges(State(state): State<AppState>, ctx: RequestContext) -> FlowResult {
    let rows = state.engine.flow_topic_edges(&ctx.env).await?;
    Ok(edges(rows.into_iter().map(
        |e| json!({"function_id": e.function_id, "topic": e.topic}),
    )))
}

pub async fn wait_edges(State(state): State<AppState>, ctx: RequestContext) -> FlowResult {
    let rows = state.engine.flow_wait_edges(&ctx.env).await?;
    Ok(edges(rows.into_iter().map(
        |e| json!({"function_id": e.function_id, "event_name": e.event_name}),
    )))
}

pub async fn webhooks(State(state): State<AppState>, ctx: RequestContext) -> FlowResult {
    let flow = state.engine.flow_webhooks(&ctx.env).await?;
    let sources: Vec<Value> = flow
        .sources
        .iter()
        .map(|s| {
            let mut v = json!({
                "id": s.id, "name": s.name, "event_prefix": s.event_prefix,
                "source_type": s.source_type,
                "delivery_counts": {"accepted": s.accepted, "failed": s.failed, "rejected": s.rejected},
            });
            if let Some(at) = s.latest_delivery_at {
                v["latest_delivery_at"] = json!(at.to_rfc3339());
            }
            if let Some(status) = &s.latest_delivery_status {
                v["latest_delivery_status"] = json!(status);
            }
            v
        })
        .collect();
    let edges: Vec<Value> = flow
        .edges
        .iter()
        .map(|e| json!({"source_id": e.source_id, "event": e.event}))
        .collect();
    Ok(Json(json!({"sources": sources, "edges": edges})))
}
