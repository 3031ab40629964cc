//! Live subscriptions shared by `/ws` and the Connect `Subscribe` stream: patterns with a source
//! prefix (`topic:` or none, `events:`, `system.`), CEL filters, replay and gap-free resume from
//! the durable copy, and the `SubscriptionEvent` message.

use axum::response::Response;
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;

use crate::domain::expression::{Bindings, EventView, Expression};
use crate::domain::pattern::EventPattern;
use crate::domain::time::Ts;
use crate::engine::{BusMessage, MessageKind};
use crate::proto::v1 as pb;

use super::AppState;
use super::auth::RequestContext;
use super::connect_stream::StreamRequest;
use super::error::ApiError;
use super::proto_map as map;

/// Most topic messages a replay or resume sends.
const MAX_REPLAY: i64 = 10_000;

/// What a subscriber asked for.
pub struct SubscriptionSpec<'a> {
    pub pattern: &'a str,
    pub filter: Option<&'a str>,
    /// The last N topic messages first.
    pub replay: i64,
    /// Resume after this topic-message sequence (no gap, no duplicate).
    pub start_after: Option<i64>,
}

pub struct Subscription {
    pub id: String,
    kind: MessageKind,
    pattern: EventPattern,
    filter: Option<Expression>,
    /// Topic messages up to this sequence were already sent by the replay.
    replayed_through: i64,
}

impl Subscription {
    pub fn wants(&self, m: &BusMessage) -> bool {
        m.kind == self.kind
            && self.pattern.matches(&m.subject)
            && !(m.kind == MessageKind::Topic && m.sequence <= self.replayed_through)
            && self.filter.as_ref().is_none_or(|f| {
                f.matches(&Bindings::for_event(&EventView {
                    id: &m.id,
                    name: &m.subject,
                    data: &m.data,
                    metadata: &Value::Null,
                    timestamp_ms: m.timestamp.millis(),
                }))
            })
    }

    /// Marks a live message as sent (a later replay overlap is not sent twice).
    pub fn sent(&mut self, m: &BusMessage) {
        if m.kind == MessageKind::Topic {
            self.replayed_through = self.replayed_through.max(m.sequence);
        }
    }
}

pub fn parse_pattern(raw: &str) -> Result<(MessageKind, EventPattern), String> {
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

/// Opens a subscription: validates it, positions `system.` followers, and reads the replay (in
/// order) from the durable copy. Subscribe to the bus *before* calling this so that nothing
/// committed in between is missed (the replay marks what it covered).
pub async fn open_subscription(
    state: &AppState,
    ctx: &RequestContext,
    id: String,
    spec: &SubscriptionSpec<'_>,
) -> Result<(Subscription, Vec<BusMessage>), ApiError> {
    let (kind, pattern) = parse_pattern(spec.pattern).map_err(ApiError::invalid)?;
    let filter = match spec.filter.filter(|f| !f.trim().is_empty()) {
        Some(f) => Some(
            Expression::compile(f)
                .map_err(|e| ApiError::invalid(format!("filter: invalid CEL expression: {e}")))?,
        ),
        None => None,
    };
    if kind == MessageKind::System {
        // Deliver every transition from now on, even one committed before the tailer wakes.
        let seq = state.engine.latest_history_seq().await?;
        state.engine.bus().follow_history_from(seq);
    }
    let mut sub = Subscription {
        id,
        kind,
        pattern,
        filter,
        replayed_through: 0,
    };
    let replay = spec.replay.clamp(0, MAX_REPLAY);
    let mut replayed = Vec::new();
    if kind == MessageKind::Topic && (replay > 0 || spec.start_after.is_some()) {
        let rows = state
            .engine
            .recent_messages(&ctx.env, spec.start_after, MAX_REPLAY)
            .await?;
        let mut matching: Vec<BusMessage> = rows
            .into_iter()
            .map(|m| {
                BusMessage::topic(
                    ctx.env.clone(),
                    m.id,
                    m.seq,
                    m.topic,
                    m.data.0,
                    m.published_at,
                )
            })
            .filter(|m| sub.wants(m))
            .collect();
        if spec.start_after.is_none() {
            matching.truncate(usize::try_from(replay).unwrap_or(0));
        }
        matching.reverse();
        for m in &matching {
            sub.sent(m);
        }
        if let Some(a) = spec.start_after {
            sub.replayed_through = sub.replayed_through.max(a);
        }
        replayed = matching;
    }
    Ok((sub, replayed))
}

/// One message as a subscriber receives it.
pub struct Delivered<'a> {
    pub id: &'a str,
    pub topic: &'a str,
    pub data: &'a Value,
    pub sequence: i64,
    pub timestamp: Ts,
    /// 1 for a first delivery; more for a consumer group's redeliveries.
    pub attempt: i32,
}

impl<'a> Delivered<'a> {
    pub fn live(m: &'a BusMessage) -> Self {
        Self {
            id: &m.id,
            topic: &m.subject,
            data: &m.data,
            sequence: m.sequence,
            timestamp: m.timestamp,
            attempt: 1,
        }
    }
}

pub fn event_message(subscription_id: &str, d: &Delivered<'_>) -> pb::SubscriptionEvent {
    pb::SubscriptionEvent {
        subscription_id: subscription_id.to_owned(),
        event_id: d.id.to_owned(),
        topic: d.topic.to_owned(),
        data: d.data.as_object().map(map::map_to_struct),
        data_value: Some(map::json_to_value(d.data)),
        metadata: Some(pb::EventMetadata {
            timestamp: Some(map::timestamp(d.timestamp)),
            ..Default::default()
        }),
        sequence: u64::try_from(d.sequence).unwrap_or_default(),
        delivery_attempt: d.attempt,
    }
}

/// `Subscribe`: a server stream of the matching live messages (after the replay) until the
/// client goes away. With `start_after_sequence` the SDK resumes a dropped stream itself.
pub async fn connect_subscribe(
    state: &AppState,
    ctx: &RequestContext,
    request: &StreamRequest,
) -> Response {
    let mut live = state.engine.bus().subscribe_messages();
    let opened = async {
        let req: pb::SubscribeRequest = request.decode()?;
        let options = req.options.unwrap_or_default();
        let id = format!("sub_{}", uuid::Uuid::new_v4().simple());
        let spec = SubscriptionSpec {
            pattern: &req.pattern,
            filter: Some(options.filter.as_str()),
            replay: i64::from(options.replay),
            start_after: options
                .start_after_sequence
                .map(|s| i64::try_from(s).unwrap_or(i64::MAX)),
        };
        open_subscription(state, ctx, id, &spec).await
    }
    .await;
    let (mut sub, replayed) = match opened {
        Ok(o) => o,
        Err(e) => return request.fail(&e),
    };
    let (response, sink) = request.open();
    let env = ctx.env.clone();
    let shutdown = state.engine.shutdown_token().clone();
    tokio::spawn(async move {
        for m in &replayed {
            if !sink
                .send(&event_message(&sub.id, &Delivered::live(m)))
                .await
            {
                return;
            }
        }
        loop {
            tokio::select! {
                received = live.recv() => match received {
                    Ok(m) if m.env_id == env && sub.wants(&m) => {
                        sub.sent(&m);
                        if !sink.send(&event_message(&sub.id, &Delivered::live(&m))).await {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => {
                        let e = ApiError::new(
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            super::error::Code::ResourceExhausted,
                            format!("this stream fell {n} messages behind; resubscribe with start_after_sequence to catch up"),
                        );
                        sink.finish(Some(&e)).await;
                        return;
                    }
                    Err(RecvError::Closed) => {
                        sink.finish(None).await;
                        return;
                    }
                },
                () = sink.closed() => return,
                () = shutdown.cancelled() => {
                    sink.finish(None).await;
                    return;
                }
            }
        }
    });
    response
}
