//! `PubSubService/SubscribeBidirectional` over Connect's bidirectional protocol (HTTP/2): the
//! client's first message joins a consumer group (`join`), the server answers `joined` and
//! streams the member's messages (`event`); the client settles them on the same stream (`ack`,
//! answered by `ack_result` with its `ack_id`), and an idle stream gets a `heartbeat`. The
//! conversation `/ws` serves for browsers, on the SDK's wire.

use std::time::Duration;

use axum::body::Body;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use crate::engine::{EngineError, GroupMember};
use crate::proto::v1 as pb;

use super::AppState;
use super::auth::RequestContext;
use super::connect_stream::{BidiRequest, RequestMessages, StreamSink};
use super::error::ApiError;
use super::pubsub_rpc::{ack_mode_message, delivery_event, settle_from};

/// How long a stream may go without a message before the server sends a `heartbeat`.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// How long a new stream may take to send `join`.
const JOIN_WAIT: Duration = Duration::from_secs(30);

type Payload = pb::subscribe_bidirectional_response::Payload;

pub async fn subscribe_bidirectional(
    state: &AppState,
    ctx: &RequestContext,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let bidi = match BidiRequest::parse(headers) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let mut inbound =
        bidi.messages::<pb::SubscribeBidirectionalRequest>(body, state.max_request_bytes);
    let join = match tokio::time::timeout(JOIN_WAIT, inbound.next()).await {
        Ok(Some(Ok(pb::SubscribeBidirectionalRequest {
            payload: Some(pb::subscribe_bidirectional_request::Payload::Join(join)),
        }))) => join,
        Ok(Some(Err(e))) => return bidi.fail(&e),
        Ok(_) => {
            return bidi.fail(&ApiError::invalid(
                "the first message on SubscribeBidirectional must be `join`",
            ));
        }
        Err(_) => {
            return bidi.fail(&ApiError::invalid(
                "no `join` message within 30 s of opening the stream",
            ));
        }
    };
    if join.group_name.is_empty() {
        return bidi.fail(&ApiError::invalid("join.group_name is required"));
    }
    let consumer = [join.consumer_id, join.client_id]
        .into_iter()
        .find(|c| !c.is_empty())
        .unwrap_or_else(|| format!("consumer-{}", uuid::Uuid::new_v4().simple()));
    let member = match state
        .engine
        .join_consumer_group(&ctx.env, &join.group_name, &consumer)
        .await
    {
        Ok(m) => m,
        Err(e) => return bidi.fail(&ApiError::from(e)),
    };
    let (response, sink) = bidi.open();
    let shutdown = state.engine.shutdown_token().clone();
    tokio::spawn(converse(member, inbound, sink, shutdown));
    response
}

fn message(payload: Payload) -> pb::SubscribeBidirectionalResponse {
    pb::SubscribeBidirectionalResponse {
        payload: Some(payload),
    }
}

/// The answer to one `ack`: the engine's refusal as a result code, never a stream error (the
/// member goes on).
fn ack_result(ack: &pb::SubscriptionAck, settled: Result<(), ApiError>) -> pb::AckResult {
    use super::error::Code;
    let (code, message) = match settled {
        Ok(()) => (pb::AckResultCode::Ok, String::new()),
        Err(e) => (
            match e.code {
                Code::InvalidArgument => pb::AckResultCode::InvalidArgument,
                Code::NotFound => pb::AckResultCode::NotFound,
                _ => pb::AckResultCode::Internal,
            },
            e.message,
        ),
    };
    pb::AckResult {
        ack_id: ack.ack_id,
        event_id: ack.event_id.clone(),
        code: code as i32,
        message,
    }
}

async fn converse(
    mut member: GroupMember,
    mut inbound: RequestMessages<pb::SubscribeBidirectionalRequest>,
    sink: StreamSink,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let subscription_id = member.consumer_id().to_owned();
    let group = member.group();
    let joined = pb::ConsumerGroupJoined {
        subscription_id: subscription_id.clone(),
        group_name: group.name.clone(),
        pattern: group.settings.pattern.clone(),
        ack_mode: ack_mode_message(group.settings.ack_mode) as i32,
    };
    if !sink.send(&message(Payload::Joined(joined))).await {
        member.leave().await;
        return;
    }
    let mut heartbeat =
        tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
    let mut end: Option<ApiError> = None;
    loop {
        if member.should_claim() {
            match member.claim().await {
                Ok(batch) => {
                    for d in &batch {
                        let event = message(Payload::Event(delivery_event(&subscription_id, d)));
                        if !sink.send(&event).await {
                            member.leave().await;
                            return;
                        }
                    }
                    heartbeat.reset();
                }
                Err(e) => {
                    end = Some(ApiError::from(e));
                    break;
                }
            }
            continue;
        }
        tokio::select! {
            () = member.wait() => {}
            next = inbound.next() => match next {
                Some(Ok(pb::SubscribeBidirectionalRequest {
                    payload: Some(pb::subscribe_bidirectional_request::Payload::Ack(ack)),
                })) => {
                    let settled = match settle_from(ack.ack_type, ack.redeliver_delay_ms) {
                        Ok(settle) => member
                            .settle(&ack.event_id, settle)
                            .await
                            .map_err(|e: EngineError| ApiError::from(e)),
                        Err(e) => Err(e),
                    };
                    let result = ack_result(&ack, settled);
                    if !sink.send(&message(Payload::AckResult(result))).await {
                        break;
                    }
                }
                Some(Ok(pb::SubscribeBidirectionalRequest {
                    payload: Some(pb::subscribe_bidirectional_request::Payload::Join(_)),
                })) => {
                    end = Some(ApiError::invalid("this stream already joined a group"));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    end = Some(e);
                    break;
                }
                // The client finished sending: the stream ends (Connect bidi half-close).
                None => break,
            },
            _ = heartbeat.tick() => {
                if !sink.send(&message(Payload::Heartbeat(pb::StreamHeartbeat {}))).await {
                    break;
                }
            }
            () = sink.closed() => break,
            () = shutdown.cancelled() => break,
        }
    }
    member.leave().await;
    sink.finish(end.as_ref()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ack_result_names_why_it_was_refused() {
        let ack = pb::SubscriptionAck {
            event_id: "m1".into(),
            ack_id: 7,
            ..Default::default()
        };
        let ok = ack_result(&ack, Ok(()));
        assert_eq!((ok.ack_id, ok.code), (7, pb::AckResultCode::Ok as i32));
        let missing = ack_result(&ack, Err(ApiError::not_found("in-flight message m1")));
        assert_eq!(missing.code, pb::AckResultCode::NotFound as i32);
        assert!(missing.message.contains("m1"));
        let bad = ack_result(&ack, Err(ApiError::invalid("ack_type: unknown value 9")));
        assert_eq!(bad.code, pb::AckResultCode::InvalidArgument as i32);
    }
}
