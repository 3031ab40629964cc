//! `/ws`: live subscriptions over WebSocket. Patterns use NATS wildcards with a source prefix:
//! `topic:orders.*` (or bare `orders.*`) for published messages, `events:order.>` for emitted
//! events, `system.run.<id>.>` (and `system.config.…`, `system.secret.…`) for history
//! transitions. Options: `replay` (last N topic messages), `startAfterSequence` (resume after a
//! topic message's sequence, no gap, no duplicate), `filter` (CEL over `event`/`data`), and
//! `consumerGroup` (join a consumer group: each message goes to one member; with
//! `ackMode: "manual"` the member settles it with `{"type":"ack","eventId","ackType"}`).

use std::collections::HashMap;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use crate::domain::authz::Permission;
use crate::domain::group::{AckMode, GroupSettingsInput, Settle};
use crate::engine::{BusMessage, EngineError, GroupMember};
use crate::store::groups::GroupDelivery;

use super::AppState;
use super::auth::{Caller, Operation, RequestContext};
use super::extract::{QueryParams, WsUpgrade};
use super::subscription::{Subscription, SubscriptionSpec, open_subscription};

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
    QueryParams(q): QueryParams<WsParams>,
    headers: HeaderMap,
    WsUpgrade(upgrade): WsUpgrade,
) -> Response {
    let operation = Operation::new(Permission::TopicsSubscribe, "GET", "/ws");
    let ctx = match state
        .auth
        .authorize(&headers, q.token.as_deref(), q.env.as_deref(), operation)
        .await
    {
        Ok(ctx) => ctx,
        Err(e) => return e.into_response(),
    };
    upgrade.on_upgrade(move |socket| session(state, ctx, socket))
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

fn group_frame(d: &GroupDelivery, subscription: &str, group: &str) -> Message {
    let body = json!({
        "type": "event",
        "subscriptionId": subscription,
        "consumerGroup": group,
        "topic": d.topic,
        "eventId": d.id,
        "data": d.data,
        "deliveryAttempt": d.attempt,
        "meta": {"timestamp": d.published_at.to_rfc3339(), "sequence": d.sequence},
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

/// A consumer-group subscription: its member runs in its own task; acks go to it.
struct GroupLink {
    acks: mpsc::UnboundedSender<(String, Settle)>,
}

/// A frame from a member task; `held` names a message the client must settle (manual ack).
struct Outgoing {
    frame: Message,
    held: Option<(String, String)>,
}

/// What one socket holds.
struct Session {
    subs: HashMap<String, Subscription>,
    groups: HashMap<String, GroupLink>,
    /// Which group subscription a handed-out message belongs to (for acks without an id).
    held_by: HashMap<String, String>,
    /// Frames from the group members' tasks.
    out: mpsc::Sender<Outgoing>,
    next_id: u64,
}

async fn session(state: AppState, ctx: RequestContext, mut socket: WebSocket) {
    let mut live = state.engine.bus().subscribe_messages();
    let (out, mut from_members) = mpsc::channel::<Outgoing>(256);
    let mut s = Session {
        subs: HashMap::new(),
        groups: HashMap::new(),
        held_by: HashMap::new(),
        out,
        next_id: 0,
    };
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
                let replies = handle_client(&state, &ctx, &text, &mut s).await;
                for reply in replies {
                    if socket.send(reply).await.is_err() {
                        return;
                    }
                }
            }
            Some(Outgoing { frame, held }) = from_members.recv() => {
                if let Some((event_id, subscription)) = held {
                    s.held_by.insert(event_id, subscription);
                }
                if socket.send(frame).await.is_err() {
                    return;
                }
            }
            received = live.recv() => match received {
                Ok(m) if m.env_id == ctx.env => {
                    for sub in s.subs.values_mut() {
                        if sub.wants(&m) {
                            sub.sent(&m);
                            if socket.send(frame(&m, &sub.id)).await.is_err() {
                                return;
                            }
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
    s: &mut Session,
) -> Vec<Message> {
    let Ok(request) = serde_json::from_str::<Value>(text) else {
        return vec![error_frame("messages must be JSON objects with a \"type\"")];
    };
    if let Err(e) = crate::domain::storable::check_json("", &request) {
        return vec![error_frame(&e.to_string())];
    }
    match request.get("type").and_then(Value::as_str) {
        Some("subscribe") => subscribe(state, ctx, &request, s).await,
        Some("unsubscribe") => {
            let id = request
                .get("subscriptionId")
                .and_then(Value::as_str)
                .unwrap_or_default();
            // Dropping a group link ends its member task, which leaves the group.
            let removed = s.subs.remove(id).is_some() || s.groups.remove(id).is_some();
            vec![Message::Text(
                json!({"type": "unsubscribed", "subscriptionId": id, "success": removed})
                    .to_string()
                    .into(),
            )]
        }
        Some("ack") => ack(&request, s).await,
        other => vec![error_frame(&format!(
            "unknown message type {other:?}; expected subscribe, unsubscribe or ack"
        ))],
    }
}

fn text_of<'a>(v: &'a Value, camel: &str, snake: &str) -> Option<&'a str> {
    v.get(camel)
        .or_else(|| v.get(snake))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

async fn ack(request: &Value, s: &mut Session) -> Vec<Message> {
    let Some(event_id) = text_of(request, "eventId", "event_id") else {
        return vec![error_frame("ack needs an eventId")];
    };
    let delay = request
        .get("redeliverDelayMs")
        .or_else(|| request.get("redeliver_delay_ms"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let settle = match text_of(request, "ackType", "ack_type")
        .unwrap_or("ack")
        .to_ascii_lowercase()
        .trim_start_matches("ack_type_")
    {
        "ack" => Settle::Ack,
        "nak" => Settle::Nak {
            delay_ms: i32::try_from(delay.clamp(0, i64::from(i32::MAX))).unwrap_or(0),
        },
        "term" => Settle::Term,
        other => {
            return vec![error_frame(&format!(
                "ackType '{other}' is not one of ack, nak, term"
            ))];
        }
    };
    let sub = text_of(request, "subscriptionId", "subscription_id")
        .map(str::to_owned)
        .or_else(|| s.held_by.get(event_id).cloned());
    let Some(link) = sub.and_then(|id| s.groups.get(&id)) else {
        return vec![error_frame(&format!(
            "message {event_id} was not delivered to a consumer group subscription on this connection"
        ))];
    };
    s.held_by.remove(event_id);
    if link.acks.send((event_id.to_owned(), settle)).is_err() {
        return vec![error_frame("the consumer group subscription has ended")];
    }
    vec![]
}

async fn subscribe(
    state: &AppState,
    ctx: &RequestContext,
    request: &Value,
    s: &mut Session,
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
    s.next_id += 1;
    let id = format!("sub_{}", s.next_id);
    if let Some(group) = text_of(&options, "consumerGroup", "consumer_group") {
        return match join_group(state, ctx, &raw, group, &options, id, s).await {
            Ok(reply) => vec![reply],
            Err(e) => refuse(super::error::ApiError::from(e).message),
        };
    }
    let after = options.get("startAfterSequence").and_then(|v| {
        v.as_i64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
    });
    let subscription = SubscriptionSpec {
        pattern: &raw,
        filter: options.get("filter").and_then(Value::as_str),
        replay: options.get("replay").and_then(Value::as_i64).unwrap_or(0),
        start_after: after,
    };
    let (sub, replayed) = match open_subscription(state, ctx, id.clone(), &subscription).await {
        Ok(o) => o,
        Err(e) => return refuse(e.message),
    };
    let mut replies = vec![Message::Text(
        json!({"type": "subscription_result", "subscriptionId": id, "pattern": raw, "success": true}).to_string().into(),
    )];
    replies.extend(replayed.iter().map(|m| frame(m, &id)));
    s.subs.insert(id, sub);
    replies
}

/// Joins (creating it on first use, with this pattern and `ackMode`) a consumer group.
async fn join_group(
    state: &AppState,
    ctx: &RequestContext,
    pattern: &str,
    group: &str,
    options: &Value,
    id: String,
    s: &mut Session,
) -> Result<Message, EngineError> {
    // Joining a group inside the session is its own decision, by the same rules.
    let policies = state.engine.policies_in_force(&ctx.env).await?;
    let mut operation = Operation::new(Permission::GroupsWrite, "WS", "/ws");
    operation.facts.name = group.to_owned();
    operation.facts.topic = pattern.to_owned();
    state
        .auth
        .decide(Caller { ctx: ctx.clone() }, &policies, operation)
        .await
        .map_err(|e| EngineError::PermissionDenied(e.message))?;
    let ack_mode = match text_of(options, "ackMode", "ack_mode")
        .map(|m| m.to_ascii_lowercase())
        .as_deref()
    {
        None | Some("manual" | "ack_mode_manual") => AckMode::Manual,
        Some("auto" | "ack_mode_auto") => AckMode::Auto,
        Some(other) => {
            return Err(EngineError::InvalidArgument(format!(
                "ackMode '{other}' is not one of manual, auto"
            )));
        }
    };
    let wanted = pattern.strip_prefix("topic:").unwrap_or(pattern);
    match state.engine.consumer_group(&ctx.env, group).await {
        Ok(existing) if existing.settings.pattern != wanted => {
            return Err(EngineError::FailedPrecondition(format!(
                "consumer group '{group}' consumes '{}', not '{wanted}'",
                existing.settings.pattern
            )));
        }
        Ok(_) => {}
        Err(EngineError::NotFound { .. }) => {
            let input = GroupSettingsInput {
                pattern: wanted.to_owned(),
                filter_expr: options
                    .get("filter")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                ack_mode: Some(ack_mode),
                ..Default::default()
            };
            match state
                .engine
                .create_consumer_group(&ctx.env, group, input)
                .await
            {
                // Another member created it first: join theirs.
                Ok(_) | Err(EngineError::AlreadyExists(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    }
    let consumer = format!("ws-{}", uuid::Uuid::new_v4().simple());
    let member = state
        .engine
        .join_consumer_group(&ctx.env, group, &consumer)
        .await?;
    // Unbounded: the socket loop must never wait on a member that waits on the socket.
    let (acks, ack_rx) = mpsc::unbounded_channel();
    let reply = Message::Text(
        json!({"type": "subscription_result", "subscriptionId": id, "pattern": pattern,
               "consumerGroup": group, "consumerId": consumer, "success": true})
        .to_string()
        .into(),
    );
    tokio::spawn(run_member(
        member,
        id.clone(),
        s.out.clone(),
        ack_rx,
        state.engine.shutdown_token().clone(),
    ));
    s.groups.insert(id, GroupLink { acks });
    Ok(reply)
}

/// Claims and forwards a member's messages and applies its acks, until the subscription or the
/// socket ends; then the member leaves (its unsettled messages go to the others at once).
async fn run_member(
    mut member: GroupMember,
    subscription: String,
    out: mpsc::Sender<Outgoing>,
    mut acks: mpsc::UnboundedReceiver<(String, Settle)>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let group = member.group().name.clone();
    let manual = member.group().settings.ack_mode == AckMode::Manual;
    let notice = |frame: Message| Outgoing { frame, held: None };
    loop {
        if member.should_claim() {
            match member.claim().await {
                Ok(batch) => {
                    for d in &batch {
                        let held = manual.then(|| (d.id.clone(), subscription.clone()));
                        let frame = group_frame(d, &subscription, &group);
                        if out.send(Outgoing { frame, held }).await.is_err() {
                            member.leave().await;
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, group = %group, "claiming consumer group messages");
                    let text = super::error::ApiError::from(e).message;
                    let _ = out.send(notice(error_frame(&text))).await;
                    member.leave().await;
                    return;
                }
            }
            continue;
        }
        tokio::select! {
            () = member.wait() => {}
            command = acks.recv() => match command {
                Some((event_id, settle)) => {
                    if let Err(e) = member.settle(&event_id, settle).await {
                        let text = super::error::ApiError::from(e).message;
                        if out.send(notice(error_frame(&text))).await.is_err() {
                            break;
                        }
                    }
                }
                None => break,
            },
            () = out.closed() => break,
            () = shutdown.cancelled() => break,
        }
    }
    member.leave().await;
}
