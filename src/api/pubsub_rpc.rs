//! `ironflow.v1.PubSubService` over Connect: `Publish` (what `step.publish` calls), consumer
//! groups (create / get / list / update / delete), `JoinConsumerGroup` (a server stream of the
//! member's messages), `AckEvent`, `Subscribe` (a server stream of live messages), `Emit` (an
//! event that triggers functions), `ListTopics` and `GetTopicStats`. `Subscribe` with
//! `options.consumer_group` joins that group, as `JoinConsumerGroup` does.
//! `SubscribeBidirectional` (join, then messages and acks on one stream) is in `pubsub_bidi`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::domain::group::{AckMode, GroupSettingsInput, GroupStatus, Settle};
use crate::engine::GroupMember;
use crate::proto::v1 as pb;
use crate::store::groups::{ConsumerGroupRecord, GroupDelivery};

use super::AppState;
use super::auth::RequestContext;
use super::connect::{prepare, respond};
use super::connect_stream::{StreamRequest, StreamSink};
use super::error::{ApiError, Code};
use super::extract::{Body, PathParams};
use super::proto_map as map;
use super::subscription;

/// `POST /ironflow.v1.PubSubService/{method}`.
pub async fn pubsub_service(
    State(state): State<AppState>,
    PathParams(method): PathParams<String>,
    ctx: RequestContext,
    headers: HeaderMap,
    request: axum::extract::Request,
) -> Response {
    if method == "SubscribeBidirectional" {
        return super::pubsub_bidi::subscribe_bidirectional(
            &state,
            &ctx,
            &headers,
            request.into_body(),
        )
        .await;
    }
    let body =
        match <Body as axum::extract::FromRequest<AppState>>::from_request(request, &state).await {
            Ok(Body(body)) => body,
            Err(e) => return e.into_response(),
        };
    match method.as_str() {
        "JoinConsumerGroup" | "Subscribe" => {
            let request = match StreamRequest::parse(&headers, &body, state.max_request_bytes) {
                Ok(r) => r,
                Err(e) => return e.into_response(),
            };
            if method == "JoinConsumerGroup" {
                return join_consumer_group(&state, &ctx, &request).await;
            }
            // `Subscribe` naming a consumer group joins it: the group's pattern, filter and ack
            // mode apply, and the stream's subscription id is the member to ack as.
            let group = request
                .decode::<pb::SubscribeRequest>()
                .ok()
                .and_then(|r| r.options)
                .map(|o| o.consumer_group)
                .filter(|g| !g.is_empty());
            return match group {
                // Joining a group takes its messages from the other members: `groups:write`,
                // as `JoinConsumerGroup` needs.
                Some(_) if !ctx.holds(crate::domain::authz::Permission::GroupsWrite) => request
                    .fail(&ApiError::forbidden(
                        "Subscribe with a consumer_group joins the group: this needs groups:write",
                    )),
                Some(group) => {
                    let consumer = format!("sub-{}", uuid::Uuid::new_v4().simple());
                    join_group_stream(&state, &ctx, &request, &group, consumer).await
                }
                None => subscription::connect_subscribe(&state, &ctx, &request).await,
            };
        }
        _ => {}
    }
    let unary = match prepare(&headers, body, state.max_request_bytes) {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    match method.as_str() {
        "Publish" => {
            let caller = super::streams_rpc::Caller::from_headers(&headers);
            respond(&unary, |r| publish(&state, &ctx, &caller, r)).await
        }
        "CreateConsumerGroup" => respond(&unary, |r| create_group(&state, &ctx, r)).await,
        "GetConsumerGroup" => respond(&unary, |r| get_group(&state, &ctx, r)).await,
        "ListConsumerGroups" => respond(&unary, |r| list_groups(&state, &ctx, r)).await,
        "UpdateConsumerGroup" => match unary.decode_adjusted(field_mask_from_string) {
            Ok(r) => match update_group(&state, &ctx, r).await {
                Ok(group) => unary.encode(&group),
                Err(e) => e.into_response(),
            },
            Err(e) => e.into_response(),
        },
        "DeleteConsumerGroup" => respond(&unary, |r| delete_group(&state, &ctx, r)).await,
        "AckEvent" => respond(&unary, |r| ack_event(&state, &ctx, r)).await,
        "Emit" => respond(&unary, |r| emit(&state, &ctx, r)).await,
        "ListTopics" => respond(&unary, |r| list_topics(&state, &ctx, r)).await,
        "GetTopicStats" => respond(&unary, |r| topic_stats(&state, &ctx, r)).await,
        m => ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            Code::Unimplemented,
            format!("ironflow.v1.PubSubService/{m} is not implemented by this server"),
        )
        .into_response(),
    }
}

async fn publish(
    state: &AppState,
    ctx: &RequestContext,
    caller: &super::streams_rpc::Caller,
    req: pb::PublishRequest,
) -> Result<pb::PublishResponse, ApiError> {
    let data = map::payload_json(req.data.as_ref(), req.data_value.as_ref());
    let key = (!req.idempotency_key.is_empty()).then_some(req.idempotency_key.as_str());
    let published = state
        .engine
        .publish(&ctx.env, &req.topic, data, key, caller.run().as_ref())
        .await?;
    Ok(pb::PublishResponse {
        event_id: published.event_id,
        sequence: u64::try_from(published.sequence).unwrap_or_default(),
        duplicate: published.duplicate,
    })
}

/// `Emit`: an event, like `IronflowService/Emit` (it triggers functions), from the pub/sub client.
async fn emit(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::EmitRequest,
) -> Result<pb::EmitResponse, ApiError> {
    let request = map::emit_request(
        pb::TriggerRequest {
            event: req.event,
            data: req.data,
            data_value: req.data_value,
            idempotency_key: req.idempotency_key,
            metadata: req.metadata,
            version: req.version,
        },
        "pubsub",
    );
    let result = state.engine.emit(&ctx.env, request).await?;
    Ok(pb::EmitResponse {
        run_ids: result.run_ids.iter().map(ToString::to_string).collect(),
        event_id: result.event_id.to_string(),
    })
}

async fn list_topics(
    state: &AppState,
    ctx: &RequestContext,
    _req: pb::ListTopicsRequest,
) -> Result<pb::ListTopicsResponse, ApiError> {
    let topics = state.engine.list_topics(&ctx.env).await?;
    Ok(pb::ListTopicsResponse {
        topics: topics
            .into_iter()
            .map(|t| pb::TopicInfo {
                name: t.name,
                message_count: t.message_count,
                consumer_count: i32::try_from(t.consumer_count).unwrap_or(i32::MAX),
                first_message_at: t.first_at.map(map::timestamp),
                last_message_at: t.last_at.map(map::timestamp),
            })
            .collect(),
    })
}

async fn topic_stats(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::GetTopicStatsRequest,
) -> Result<pb::GetTopicStatsResponse, ApiError> {
    let stats = state.engine.topic_stats(&ctx.env, &req.topic).await?;
    Ok(pb::GetTopicStatsResponse {
        name: stats.name,
        message_count: stats.message_count,
        consumer_count: i32::try_from(stats.consumer_count).unwrap_or(i32::MAX),
        lag: stats.lag,
        first_seq: stats
            .first_seq
            .and_then(|s| u64::try_from(s).ok())
            .unwrap_or(0),
        last_seq: stats
            .last_seq
            .and_then(|s| u64::try_from(s).ok())
            .unwrap_or(0),
    })
}

fn ack_mode(value: i32) -> Result<Option<AckMode>, ApiError> {
    match pb::AckMode::try_from(value) {
        Ok(pb::AckMode::Unspecified) => Ok(None),
        Ok(pb::AckMode::Manual) => Ok(Some(AckMode::Manual)),
        Ok(pb::AckMode::Auto) => Ok(Some(AckMode::Auto)),
        Err(_) => Err(ApiError::invalid(format!(
            "ack_mode: unknown value {value}"
        ))),
    }
}

fn group_status(value: i32) -> Result<Option<GroupStatus>, ApiError> {
    match pb::ConsumerGroupStatus::try_from(value) {
        Ok(pb::ConsumerGroupStatus::Unspecified) => Ok(None),
        Ok(pb::ConsumerGroupStatus::Active) => Ok(Some(GroupStatus::Active)),
        Ok(pb::ConsumerGroupStatus::Paused) => Ok(Some(GroupStatus::Paused)),
        Ok(pb::ConsumerGroupStatus::Deleted) => Err(ApiError::invalid(
            "status: use DeleteConsumerGroup to delete a group",
        )),
        Err(_) => Err(ApiError::invalid(format!("status: unknown value {value}"))),
    }
}

fn metadata_json(metadata: Option<&pbjson_types::Struct>) -> serde_json::Value {
    metadata.map_or(serde_json::Value::Null, |m| {
        serde_json::Value::Object(map::struct_to_map(m))
    })
}

pub(super) fn ack_mode_message(mode: AckMode) -> pb::AckMode {
    match mode {
        AckMode::Manual => pb::AckMode::Manual,
        AckMode::Auto => pb::AckMode::Auto,
    }
}

fn group_message(g: &ConsumerGroupRecord) -> pb::ConsumerGroup {
    let s = &g.settings;
    pb::ConsumerGroup {
        id: g.id.clone(),
        namespace: String::new(),
        name: g.name.clone(),
        pattern: s.pattern.clone(),
        filter_expr: s.filter_expr.clone(),
        ack_mode: ack_mode_message(s.ack_mode) as i32,
        backpressure: pb::BackpressureMode::Block as i32,
        max_inflight: s.max_inflight,
        max_redeliveries: s.max_redeliveries,
        redeliver_delay_ms: s.redeliver_delay_ms,
        metadata: s.metadata.as_object().map(map::map_to_struct),
        status: match s.status {
            GroupStatus::Active => pb::ConsumerGroupStatus::Active,
            GroupStatus::Paused => pb::ConsumerGroupStatus::Paused,
        } as i32,
        member_count: i32::try_from(g.members).unwrap_or(i32::MAX),
        created_at: Some(map::timestamp(g.created_at)),
        updated_at: Some(map::timestamp(g.updated_at)),
    }
}

async fn create_group(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::CreateConsumerGroupRequest,
) -> Result<pb::ConsumerGroup, ApiError> {
    let input = GroupSettingsInput {
        pattern: req.pattern,
        filter_expr: req.filter_expr,
        ack_mode: ack_mode(req.ack_mode)?,
        max_inflight: req.max_inflight,
        max_redeliveries: req.max_redeliveries,
        redeliver_delay_ms: req.redeliver_delay_ms,
        metadata: metadata_json(req.metadata.as_ref()),
        status: None,
    };
    let group = state
        .engine
        .create_consumer_group(&ctx.env, &req.name, input)
        .await?;
    Ok(group_message(&group))
}

async fn get_group(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::GetConsumerGroupRequest,
) -> Result<pb::ConsumerGroup, ApiError> {
    let group = state.engine.consumer_group(&ctx.env, &req.name).await?;
    Ok(group_message(&group))
}

async fn list_groups(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::ListConsumerGroupsRequest,
) -> Result<pb::ListConsumerGroupsResponse, ApiError> {
    let wanted = group_status(req.status)?;
    let groups: Vec<pb::ConsumerGroup> = state
        .engine
        .consumer_groups(&ctx.env)
        .await?
        .iter()
        .filter(|g| wanted.is_none_or(|w| g.settings.status == w))
        .map(group_message)
        .collect();
    let total_count = i32::try_from(groups.len()).unwrap_or(i32::MAX);
    Ok(pb::ListConsumerGroupsResponse {
        groups,
        next_cursor: String::new(),
        total_count,
    })
}

/// Applies `update_mask` (snake_case or camelCase paths) to the current settings; an empty mask
/// updates every field the request sets to a non-zero value.
async fn update_group(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::UpdateConsumerGroupRequest,
) -> Result<pb::ConsumerGroup, ApiError> {
    let Some(g) = req.group else {
        return Err(ApiError::invalid("group is required (with its name)"));
    };
    let current = state.engine.consumer_group(&ctx.env, &g.name).await?;
    let s = current.settings;
    let mut input = GroupSettingsInput {
        pattern: s.pattern,
        filter_expr: s.filter_expr,
        ack_mode: Some(s.ack_mode),
        max_inflight: s.max_inflight,
        max_redeliveries: s.max_redeliveries,
        redeliver_delay_ms: s.redeliver_delay_ms,
        metadata: s.metadata,
        status: Some(s.status),
    };
    let paths: Vec<String> = req
        .update_mask
        .map(|m| m.paths.iter().map(|p| snake_case(p)).collect())
        .unwrap_or_default();
    let set = |field: &str, nonzero: bool| {
        if paths.is_empty() {
            nonzero
        } else {
            paths.iter().any(|p| p == field)
        }
    };
    for p in &paths {
        if !matches!(
            p.as_str(),
            "pattern"
                | "filter_expr"
                | "ack_mode"
                | "max_inflight"
                | "max_redeliveries"
                | "redeliver_delay_ms"
                | "metadata"
                | "status"
                | "backpressure"
        ) {
            return Err(ApiError::invalid(format!(
                "update_mask: '{p}' is not an updatable consumer group field"
            )));
        }
    }
    if set("pattern", !g.pattern.is_empty()) {
        input.pattern = g.pattern;
    }
    if set("filter_expr", !g.filter_expr.is_empty()) {
        input.filter_expr = g.filter_expr;
    }
    if set("ack_mode", g.ack_mode != 0) {
        input.ack_mode = ack_mode(g.ack_mode)?;
    }
    if set("max_inflight", g.max_inflight != 0) {
        input.max_inflight = g.max_inflight;
    }
    if set("max_redeliveries", g.max_redeliveries != 0) {
        input.max_redeliveries = g.max_redeliveries;
    }
    if set("redeliver_delay_ms", g.redeliver_delay_ms != 0) {
        input.redeliver_delay_ms = g.redeliver_delay_ms;
    }
    if set("metadata", g.metadata.is_some()) {
        input.metadata = metadata_json(g.metadata.as_ref());
    }
    if set("status", g.status != 0) {
        input.status = group_status(g.status)?;
    }
    let group = state
        .engine
        .update_consumer_group(&ctx.env, &g.name, input)
        .await?;
    Ok(group_message(&group))
}

/// Canonical proto-JSON writes a `FieldMask` as one comma-separated string.
fn field_mask_from_string(body: &mut serde_json::Value) {
    for key in ["updateMask", "update_mask"] {
        if let Some(mask) = body.get_mut(key)
            && let Some(paths) = mask.as_str()
        {
            let paths: Vec<&str> = paths
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .collect();
            *mask = serde_json::json!({ "paths": paths });
        }
    }
}

fn snake_case(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 4);
    for c in path.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

async fn delete_group(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::DeleteConsumerGroupRequest,
) -> Result<pbjson_types::Empty, ApiError> {
    state
        .engine
        .delete_consumer_group(&ctx.env, &req.name)
        .await?;
    Ok(pbjson_types::Empty {})
}

/// How a client's ack type and delay settle a message.
pub(super) fn settle_from(ack_type: i32, redeliver_delay_ms: i32) -> Result<Settle, ApiError> {
    if redeliver_delay_ms < 0 {
        return Err(ApiError::invalid("redeliver_delay_ms must not be negative"));
    }
    match pb::AckType::try_from(ack_type) {
        Ok(pb::AckType::Ack | pb::AckType::Unspecified) => Ok(Settle::Ack),
        Ok(pb::AckType::Nak) => Ok(Settle::Nak {
            delay_ms: redeliver_delay_ms,
        }),
        Ok(pb::AckType::Term) => Ok(Settle::Term),
        Err(_) => Err(ApiError::invalid(format!(
            "ack_type: unknown value {ack_type}"
        ))),
    }
}

async fn ack_event(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::AckEventRequest,
) -> Result<pb::AckEventResponse, ApiError> {
    if req.event_id.is_empty() {
        return Err(ApiError::invalid("event_id is required"));
    }
    let settle = settle_from(req.ack_type, req.redeliver_delay_ms)?;
    state
        .engine
        .settle_group_message(&ctx.env, &req.group_name, &req.event_id, settle)
        .await?;
    Ok(pb::AckEventResponse {})
}

/// A group delivery as a stream message.
pub(super) fn delivery_event(subscription_id: &str, d: &GroupDelivery) -> pb::SubscriptionEvent {
    subscription::event_message(
        subscription_id,
        &subscription::Delivered {
            id: &d.id,
            topic: &d.topic,
            data: &d.data,
            sequence: d.sequence,
            timestamp: d.published_at,
            attempt: d.attempt,
        },
    )
}

/// `JoinConsumerGroup`: streams the member's messages until the client goes away (its unsettled
/// messages then go to the other members at once).
async fn join_consumer_group(
    state: &AppState,
    ctx: &RequestContext,
    request: &StreamRequest,
) -> Response {
    let req: pb::JoinConsumerGroupRequest = match request.decode() {
        Ok(r) => r,
        Err(e) => return request.fail(&e),
    };
    let consumer = [req.consumer_id, req.client_id]
        .into_iter()
        .find(|c| !c.is_empty())
        .unwrap_or_else(|| format!("consumer-{}", uuid::Uuid::new_v4().simple()));
    join_group_stream(state, ctx, request, &req.group_name, consumer).await
}

/// Joins `group` as `consumer` and streams the member's messages.
async fn join_group_stream(
    state: &AppState,
    ctx: &RequestContext,
    request: &StreamRequest,
    group: &str,
    consumer: String,
) -> Response {
    let member = match state
        .engine
        .join_consumer_group(&ctx.env, group, &consumer)
        .await
    {
        Ok(m) => m,
        Err(e) => return request.fail(&ApiError::from(e)),
    };
    let (response, sink) = request.open();
    let shutdown = state.engine.shutdown_token().clone();
    tokio::spawn(stream_member(member, sink, shutdown));
    response
}

async fn stream_member(
    mut member: GroupMember,
    sink: StreamSink,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let subscription_id = member.consumer_id().to_owned();
    loop {
        if member.should_claim() {
            match member.claim().await {
                Ok(batch) => {
                    for d in &batch {
                        if !sink.send(&delivery_event(&subscription_id, d)).await {
                            member.leave().await;
                            return;
                        }
                    }
                }
                Err(e) => {
                    sink.finish(Some(&ApiError::from(e))).await;
                    member.leave().await;
                    return;
                }
            }
            continue;
        }
        tokio::select! {
            () = member.wait() => {}
            () = sink.closed() => {
                member.leave().await;
                return;
            }
            () = shutdown.cancelled() => {
                sink.finish(None).await;
                member.leave().await;
                return;
            }
        }
    }
}
