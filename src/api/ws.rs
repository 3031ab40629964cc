//! `/ws`: live subscriptions over WebSocket. Patterns use NATS wildcards with a source prefix:
//! `topic:orders.*` (or bare `orders.*`) for published messages, `events:order.>` for emitted
//! events, `system.run.<id>.>` (and `system.config.…`, `system.secret.…`) for history
//! transitions. Options: `replay` (last N topic messages), `startAfterSequence` (resume after a
//! topic message's sequence, no gap, no duplicate), `filter` (CEL over `event`/`data`).
//! Consumer groups are not served yet.

use std::collections::HashMap;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::domain::expression::{EventView, TriggerExpression};
use crate::domain::pattern::EventPattern;
use crate::engine::{BusMessage, MessageKind};
use crate::tenancy::Permission;

use super::AppState;
use super::auth::RequestContext;

#[derive(Deserialize, Default)]
pub struct WsParams {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    env: Option<String>,
}

/// `GET /ws?env=<env>&token=<key>` (or the usual headers).
pub async fn ws(
    State(state): State<AppState>,
    Query(q): Query<WsParams>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let ctx = match state
        .auth
        .authenticate(&headers, q.token.as_deref(), q.env.as_deref())
        .await
    {
        Ok(ctx) => ctx,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = ctx.require(Permission::Read) {
        return e.into_response();
    }
    upgrade.on_upgrade(move |socket| session(state, ctx, socket))
}

struct Subscription {
    id: String,
    kind: MessageKind,
    pattern: EventPattern,
    filter: Option<TriggerExpression>,
    /// Topic messages up to this sequence were already sent by the replay.
    replayed_through: i64,
}

impl Subscription {
    fn wants(&self, m: &BusMessage) -> bool {
        m.kind == self.kind
            && self.pattern.matches(&m.subject)
            && !(m.kind == MessageKind::Topic && m.sequence <= self.replayed_through)
            && self.filter.as_ref().is_none_or(|f| {
                f.matches(&EventView {
                    id: &m.id,
                    name: &m.subject,
                    data: &m.data,
                    metadata: &Value::Null,
                    timestamp_ms: m.timestamp.millis(),
                })
            })
    }
}

fn parse_pattern(raw: &str) -> Result<(MessageKind, EventPattern), String> {
    let (kind, rest) = if let Some(r) = raw.strip_prefix("topic:") {
        (MessageKind::Topic, r)
    } else if let Some(r) = raw.strip_prefix("events:") {
        (MessageKind::Event, r)
    } else if raw.starts_with("system.") {
        (MessageKind::System, raw)
    } else {
        (MessageKind::Topic, raw)
    };
    EventPattern::parse(rest)
        .map(|p| (kind, p))
        .map_err(|e| e.to_string().replace("event pattern", "pattern"))
}

fn frame(m: &BusMessage, subscription: &str) -> Message {
    let body = json!({
        "type": "event",
        "subscriptionId": subscription,
        "topic": m.subject,
        "eventId": m.id,
        "data": m.data,
        "meta": {"timestamp": m.timestamp.to_rfc3339(), "sequence": m.sequence},
    });
    Message::Text(body.to_string().into())
}

fn error_frame(message: &str) -> Message {
    Message::Text(
        json!({"type": "error", "message": message})
            .to_string()
            .into(),
    )
}

async fn session(state: AppState, ctx: RequestContext, mut socket: WebSocket) {
    let mut live = state.engine.bus().subscribe_messages();
    let mut subs: HashMap<String, Subscription> = HashMap::new();
    let mut next_id = 0u64;
    let shutdown = state.engine.shutdown_token().clone();
    loop {
        tokio::select! {
            incoming = socket.recv() => {
                let Some(Ok(message)) = incoming else { return };
                let text = match message {
                    Message::Text(t) => t.to_string(),
                    Message::Close(_) => return,
                    _ => continue,
                };
                let replies = handle_client(&state, &ctx, &text, &mut subs, &mut next_id).await;
                for reply in replies {
                    if socket.send(reply).await.is_err() {
                        return;
                    }
                }
            }
            received = live.recv() => match received {
                Ok(m) if m.env_id == ctx.env => {
                    for sub in subs.values().filter(|s| s.wants(&m)) {
                        if socket.send(frame(&m, &sub.id)).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(n)) => {
                    let text = format!("this connection fell {n} messages behind; resubscribe with startAfterSequence to catch up");
                    if socket.send(error_frame(&text)).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Closed) => return,
            },
            () = shutdown.cancelled() => {
                let _ = socket.send(Message::Close(None)).await;
                return;
            }
        }
    }
}

async fn handle_client(
    state: &AppState,
    ctx: &RequestContext,
    text: &str,
    subs: &mut HashMap<String, Subscription>,
    next_id: &mut u64,
) -> Vec<Message> {
    let Ok(request) = serde_json::from_str::<Value>(text) else {
        return vec![error_frame("messages must be JSON objects with a \"type\"")];
    };
    match request.get("type").and_then(Value::as_str) {
        Some("subscribe") => subscribe(state, ctx, &request, subs, next_id).await,
        Some("unsubscribe") => {
            let id = request
                .get("subscriptionId")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let removed = subs.remove(id).is_some();
            vec![Message::Text(
                json!({"type": "unsubscribed", "subscriptionId": id, "success": removed})
                    .to_string()
                    .into(),
            )]
        }
        // Acks matter only for consumer groups, which are not served yet.
        Some("ack") => vec![],
        other => vec![error_frame(&format!(
            "unknown message type {other:?}; expected subscribe, unsubscribe or ack"
        ))],
    }
}

async fn subscribe(
    state: &AppState,
    ctx: &RequestContext,
    request: &Value,
    subs: &mut HashMap<String, Subscription>,
    next_id: &mut u64,
) -> Vec<Message> {
    let spec = request.get("subscription").unwrap_or(request);
    let raw = spec
        .get("pattern")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let options = spec.get("options").cloned().unwrap_or(Value::Null);
    let refuse = |reason: String| {
        vec![Message::Text(json!({"type": "subscription_result", "pattern": raw, "success": false, "error": reason}).to_string().into())]
    };
    let (kind, pattern) = match parse_pattern(&raw) {
        Ok(p) => p,
        Err(e) => return refuse(e),
    };
    if options
        .get("consumerGroup")
        .and_then(Value::as_str)
        .is_some_and(|g| !g.is_empty())
    {
        return refuse("consumer groups are not supported by this server yet".into());
    }
    let filter = match options
        .get("filter")
        .and_then(Value::as_str)
        .filter(|f| !f.trim().is_empty())
    {
        Some(f) => match TriggerExpression::compile(f) {
            Ok(e) => Some(e),
            Err(e) => return refuse(e.to_string()),
        },
        None => None,
    };
    if kind == MessageKind::System {
        // Deliver every transition from now on, even one committed before the tailer wakes.
        match state.engine.store().max_history_seq().await {
            Ok(seq) => state.engine.bus().follow_history_from(seq),
            Err(e) => {
                tracing::warn!(error = %e, "reading the history position for a subscription");
                return refuse("the history is unavailable right now; retry".into());
            }
        }
    }
    *next_id += 1;
    let id = format!("sub_{next_id}");
    let mut replies = vec![Message::Text(
        json!({"type": "subscription_result", "subscriptionId": id, "pattern": raw, "success": true}).to_string().into(),
    )];
    let mut sub = Subscription {
        id: id.clone(),
        kind,
        pattern,
        filter,
        replayed_through: 0,
    };
    let replay = options
        .get("replay")
        .and_then(Value::as_i64)
        .unwrap_or(0)
        .clamp(0, 10_000);
    let after = options.get("startAfterSequence").and_then(|v| {
        v.as_i64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
    });
    if kind == MessageKind::Topic && (replay > 0 || after.is_some()) {
        match state
            .engine
            .store()
            .recent_messages(&ctx.env, after, 10_000)
            .await
        {
            Ok(rows) => {
                let mut matching: Vec<BusMessage> = rows
                    .into_iter()
                    .map(|(mid, seq, topic, data, at)| {
                        BusMessage::topic(ctx.env.clone(), mid, seq, topic, data, at)
                    })
                    .filter(|m| sub.wants(m))
                    .collect();
                if after.is_none() {
                    matching.truncate(usize::try_from(replay).unwrap_or(0));
                }
                matching.reverse();
                for m in &matching {
                    replies.push(frame(m, &id));
                    sub.replayed_through = sub.replayed_through.max(m.sequence);
                }
                if let Some(a) = after {
                    sub.replayed_through = sub.replayed_through.max(a);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "replay failed");
                replies.push(error_frame("replay failed; see the server log"));
            }
        }
    }
    subs.insert(id, sub);
    replies
}
