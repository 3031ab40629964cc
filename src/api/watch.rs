//! KV and config watches over WebSocket, as ironflow-py's `watch_kv` / `watch_config` speak
//! them: `GET /api/v1/kv/buckets/{bucket}/watch[?key=user.*]` sends
//! `{"type":"kv_update","bucket","key","value"(base64, "" on delete),"revision","operation"}`
//! text frames, `GET /api/v1/config/{name}/watch` sends
//! `{"type":"config_update","name","data","revision","updatedAt"}`. Authenticated like `/ws`
//! (Bearer header, or `?token=` and `?env=`); an unknown bucket or a bad pattern is refused
//! at the handshake with a JSON 4xx, and a watch that ends (say, its bucket was deleted) sends
//! `{"type":"error","message"}` before closing.

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::domain::authz::Permission;
use crate::engine::{ConfigWatchEvent, EngineError, KvWatchEvent};

use super::AppState;
use super::auth::{Operation, RequestContext};
use super::error::ApiError;
use super::extract::{PathParams, QueryParams, WsUpgrade};

#[derive(Deserialize, Default)]
pub struct WatchParams {
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    env: Option<String>,
}

async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    q: &WatchParams,
    operation: Operation,
) -> Result<RequestContext, ApiError> {
    state
        .auth
        .authorize(headers, q.token.as_deref(), q.env.as_deref(), operation)
        .await
}

fn text(v: &Value) -> Message {
    Message::Text(v.to_string().into())
}

pub fn kv_frame(e: &KvWatchEvent) -> Value {
    let deleted = e.entry.deleted;
    json!({
        "type": "kv_update",
        "bucket": e.bucket,
        "key": e.entry.key,
        "value": if deleted { String::new() } else { STANDARD.encode(&e.entry.value) },
        "revision": e.entry.revision,
        "operation": if deleted { "delete" } else { "put" },
        "createdAt": e.entry.created_at.to_rfc3339(),
    })
}

pub fn config_frame(e: &ConfigWatchEvent) -> Value {
    let mut frame = json!({
        "type": "config_update",
        "name": e.name,
        "data": e.data,
        "revision": e.revision,
        "updatedAt": e.updated_at.to_rfc3339(),
    });
    if e.data.is_none() {
        frame["operation"] = json!("delete");
    }
    frame
}

/// `GET /api/v1/kv/buckets/{bucket}/watch[?key=<pattern>]`
pub async fn watch_kv(
    State(state): State<AppState>,
    PathParams(bucket): PathParams<String>,
    QueryParams(q): QueryParams<WatchParams>,
    headers: HeaderMap,
    WsUpgrade(upgrade): WsUpgrade,
) -> Response {
    let mut operation = Operation::new(
        Permission::KvRead,
        "GET",
        "/api/v1/kv/buckets/{bucket}/watch",
    );
    operation.facts.name = bucket.clone();
    let ctx = match authorize(&state, &headers, &q, operation).await {
        Ok(ctx) => ctx,
        Err(e) => return e.into_response(),
    };
    let key = q.key.as_deref().filter(|k| !k.is_empty());
    // Opened before the handshake answers: an unknown bucket is a 404, and every write the
    // client makes after the handshake is seen.
    let watch = match state.engine.kv_watch(&ctx.env, &bucket, key).await {
        Ok(w) => w,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let frames = futures::stream::unfold(watch, |mut watch| async move {
        let next = watch.next().await?;
        Some((next.map(|event| kv_frame(&event)), watch))
    });
    upgrade.on_upgrade(move |socket| relay_frames(socket, frames))
}

/// `GET /api/v1/config/{name}/watch`
pub async fn watch_config(
    State(state): State<AppState>,
    PathParams(name): PathParams<String>,
    QueryParams(q): QueryParams<WatchParams>,
    headers: HeaderMap,
    WsUpgrade(upgrade): WsUpgrade,
) -> Response {
    let mut operation =
        Operation::new(Permission::ConfigRead, "GET", "/api/v1/config/{name}/watch");
    operation.facts.name = name.clone();
    let ctx = match authorize(&state, &headers, &q, operation).await {
        Ok(ctx) => ctx,
        Err(e) => return e.into_response(),
    };
    let watch = match state.engine.config_watch(&ctx.env, &name).await {
        Ok(w) => w,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let frames = futures::stream::unfold(watch, |mut watch| async move {
        let event = watch.next().await?;
        Some((Ok(config_frame(&event)), watch))
    });
    upgrade.on_upgrade(move |socket| relay_frames(socket, frames))
}

/// Sends each frame of a watch until it ends, fails (an error frame, then close), or the
/// client goes away.
async fn relay_frames(
    mut socket: WebSocket,
    frames: impl futures::Stream<Item = Result<Value, EngineError>>,
) {
    use futures::StreamExt;
    let mut frames = std::pin::pin!(frames);
    loop {
        tokio::select! {
            frame = frames.next() => match frame {
                Some(Ok(frame)) => {
                    if socket.send(text(&frame)).await.is_err() {
                        return;
                    }
                }
                Some(Err(e)) => {
                    close_with_error(socket, &ApiError::from(e).message).await;
                    return;
                }
                None => return,
            },
            incoming = socket.recv() => if !still_open(incoming) { return },
        }
    }
}

/// Watches only send; a client message other than a close is ignored.
fn still_open(incoming: Option<Result<Message, axum::Error>>) -> bool {
    matches!(incoming, Some(Ok(m)) if !matches!(m, Message::Close(_)))
}

async fn close_with_error(mut socket: WebSocket, message: &str) {
    let _ = socket
        .send(text(&json!({"type": "error", "message": message})))
        .await;
    let _ = socket.send(Message::Close(None)).await;
}
