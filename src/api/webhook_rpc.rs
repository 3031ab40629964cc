//! `ironflow.v1.WebhookService` over Connect (sources: create, read, list, update, delete,
//! secret rotation and its grace window, turning verification off, a new ingest URL, trying a
//! signature scheme, the delivery log) and the ingest route `POST /webhooks/{token}` a provider
//! posts to (authenticated by the token in the URL and the delivery's signature, not a key).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::domain::webhook::VerifyConfig;
use crate::engine::{NewSource, SourceChanges, SourceView};
use crate::proto::v1 as pb;
use crate::store::webhooks::WebhookDeliveryRow;

use super::AppState;
use super::auth::RequestContext;
use super::connect::{prepare, respond};
use super::error::ApiError;
use super::extract::{Body, PathParams};
use super::proto_map as map;

fn config_in(c: Option<pb::WebhookVerifyConfig>) -> Option<VerifyConfig> {
    c.map(|c| VerifyConfig {
        signature_header: c.signature_header,
        entry_separator: c.entry_separator,
        kv_delimiter: c.kv_delimiter,
        signature_key: c.signature_key,
        timestamp_header: c.timestamp_header,
        timestamp_key: c.timestamp_key,
        signing_template: c.signing_template,
        encoding: c.encoding,
        algorithm: c.algorithm,
        tolerance_seconds: c.tolerance_seconds,
        event_name_path: c.event_name_path,
        dedup_id_path: c.dedup_id_path,
    })
}

fn config_out(c: &VerifyConfig) -> pb::WebhookVerifyConfig {
    pb::WebhookVerifyConfig {
        signature_header: c.signature_header.clone(),
        entry_separator: c.entry_separator.clone(),
        kv_delimiter: c.kv_delimiter.clone(),
        signature_key: c.signature_key.clone(),
        timestamp_header: c.timestamp_header.clone(),
        timestamp_key: c.timestamp_key.clone(),
        signing_template: c.signing_template.clone(),
        encoding: c.encoding.clone(),
        algorithm: c.algorithm.clone(),
        tolerance_seconds: c.tolerance_seconds,
        event_name_path: c.event_name_path.clone(),
        dedup_id_path: c.dedup_id_path.clone(),
    }
}

fn source_out(v: &SourceView) -> pb::WebhookSource {
    let r = &v.row;
    let metadata =
        serde_json::from_str::<serde_json::Map<String, Value>>(&r.metadata).unwrap_or_default();
    pb::WebhookSource {
        id: r.id.clone(),
        event_prefix: r.event_prefix.clone(),
        verify_header: r.verify_header.clone(),
        verify_algorithm: r.verify_algorithm.clone(),
        source_type: if v.verify_config.is_some() {
            "configured"
        } else {
            "legacy"
        }
        .to_owned(),
        metadata: Some(map::map_to_struct(&metadata)),
        created_at: Some(map::timestamp(r.created_at)),
        updated_at: Some(map::timestamp(r.updated_at)),
        verify_secret_set: v.secret_set(),
        name: r.name.clone(),
        verify_secret_prev_set: v.prev_set(),
        verify_secret_prev_expires_at: r
            .prev_expires_at
            .filter(|_| v.prev_set())
            .map(map::timestamp),
        ingest_token_prefix: r.ingest_token_prefix.clone(),
        ingest_token: v.ingest_token.clone().unwrap_or_default(),
        verify_config: v.verify_config.as_ref().map(config_out),
        schema_version: r.schema_version,
    }
}

fn delivery_out(d: &WebhookDeliveryRow) -> pb::WebhookDelivery {
    let headers = serde_json::from_str::<serde_json::Map<String, Value>>(&d.request_headers)
        .unwrap_or_default();
    pb::WebhookDelivery {
        id: d.id.clone(),
        source_id: d.source_id.clone(),
        external_id: d.external_id.clone().unwrap_or_default(),
        status: d.status.clone(),
        event_id: d.event_id.clone().unwrap_or_default(),
        error: d.error.clone().unwrap_or_default(),
        created_at: Some(map::timestamp(d.created_at)),
        request_body: d.request_body.clone(),
        request_headers: Some(map::map_to_struct(&headers)),
        signature_key: d.signature_key.clone(),
    }
}

fn expected(
    ts: Option<&pbjson_types::Timestamp>,
) -> Result<Option<crate::domain::time::Ts>, ApiError> {
    ts.map(|t| map::from_timestamp(t, "expected_updated_at"))
        .transpose()
}

fn required_id(id: &str) -> Result<&str, ApiError> {
    if id.trim().is_empty() {
        Err(ApiError::invalid("id is required"))
    } else {
        Ok(id)
    }
}

/// `POST /ironflow.v1.WebhookService/{method}`.
pub async fn webhook_service(
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
    let (s, c) = (&state, &ctx);
    let engine = &s.engine;
    // A source emits events: whoever makes or changes one must be allowed to emit.
    if matches!(
        method.as_str(),
        "CreateWebhookSource" | "UpdateWebhookSource"
    ) && !ctx.holds(crate::domain::authz::Permission::EventsEmit)
    {
        return ApiError::forbidden(
            "a webhook source emits events: this needs events:emit as well as webhooks:write",
        )
        .into_response();
    }
    match method.as_str() {
        "CreateWebhookSource" => {
            respond(&unary, |r: pb::CreateWebhookSourceRequest| async move {
                let input = NewSource {
                    name: r.name,
                    event_prefix: r.event_prefix,
                    verify_header: r.verify_header,
                    verify_algorithm: r.verify_algorithm,
                    verify_secret: r.verify_secret,
                    metadata: r
                        .metadata
                        .as_ref()
                        .map(map::struct_to_map)
                        .unwrap_or_default(),
                    verify_config: config_in(r.verify_config),
                    schema_version: r.schema_version,
                };
                Ok(source_out(
                    &s.engine.create_webhook_source(&c.env, input).await?,
                ))
            })
            .await
        }
        "GetWebhookSource" => {
            respond(&unary, |r: pb::GetWebhookSourceRequest| async move {
                Ok(source_out(
                    &engine
                        .get_webhook_source(&c.env, required_id(&r.id)?)
                        .await?,
                ))
            })
            .await
        }
        "ListWebhookSources" => {
            respond(&unary, |r: pb::ListWebhookSourcesRequest| async move {
                let (sources, total) = engine
                    .list_webhook_sources(&c.env, r.limit.into(), r.offset.into())
                    .await?;
                Ok(pb::ListWebhookSourcesResponse {
                    sources: sources.iter().map(source_out).collect(),
                    total_count: i32::try_from(total).unwrap_or(i32::MAX),
                })
            })
            .await
        }
        "UpdateWebhookSource" => {
            respond(&unary, |r: pb::UpdateWebhookSourceRequest| async move {
                let changes = SourceChanges {
                    name: Some(r.name).filter(|n| !n.is_empty()),
                    verify_header: Some(r.verify_header).filter(|h| !h.is_empty()),
                    verify_algorithm: Some(r.verify_algorithm).filter(|a| !a.is_empty()),
                    metadata: r.metadata.as_ref().map(map::struct_to_map),
                    verify_config: config_in(r.verify_config),
                    schema_version: Some(r.schema_version).filter(|v| *v > 0),
                };
                let view = engine
                    .update_webhook_source(
                        &c.env,
                        required_id(&r.id)?,
                        changes,
                        expected(r.expected_updated_at.as_ref())?,
                    )
                    .await?;
                Ok(source_out(&view))
            })
            .await
        }
        "RotateWebhookSecret" => {
            respond(&unary, |r: pb::RotateWebhookSecretRequest| async move {
                let view = engine
                    .rotate_webhook_secret(
                        &c.env,
                        required_id(&r.id)?,
                        &r.verify_secret,
                        r.grace_seconds,
                        expected(r.expected_updated_at.as_ref())?,
                    )
                    .await?;
                Ok(source_out(&view))
            })
            .await
        }
        "ExpireWebhookSecretPrev" => {
            respond(&unary, |r: pb::ExpireWebhookSecretPrevRequest| async move {
                let view = engine
                    .expire_webhook_prev_secret(
                        &c.env,
                        required_id(&r.id)?,
                        expected(r.expected_updated_at.as_ref())?,
                    )
                    .await?;
                Ok(source_out(&view))
            })
            .await
        }
        "DisableWebhookSignatureVerification" => {
            respond(
                &unary,
                |r: pb::DisableWebhookSignatureVerificationRequest| async move {
                    let view = engine
                        .disable_webhook_verification(
                            &c.env,
                            required_id(&r.id)?,
                            r.grace_seconds,
                            expected(r.expected_updated_at.as_ref())?,
                        )
                        .await?;
                    Ok(source_out(&view))
                },
            )
            .await
        }
        "RotateWebhookIngestToken" => {
            respond(
                &unary,
                |r: pb::RotateWebhookIngestTokenRequest| async move {
                    let view = engine
                        .rotate_webhook_ingest_token(
                            &c.env,
                            required_id(&r.id)?,
                            expected(r.expected_updated_at.as_ref())?,
                        )
                        .await?;
                    Ok(source_out(&view))
                },
            )
            .await
        }
        "TestWebhookVerifyConfig" => {
            respond(&unary, |r: pb::TestWebhookVerifyConfigRequest| async move {
                let headers: BTreeMap<String, String> = r.headers.into_iter().collect();
                let test = engine
                    .test_webhook_verify_config(
                        &c.env,
                        config_in(r.verify_config),
                        r.body.as_bytes(),
                        &headers,
                        &r.verify_secret,
                        &r.source_id,
                    )
                    .await?;
                Ok(pb::TestWebhookVerifyConfigResponse {
                    verified: test.verified,
                    signing_string: test.check.signing_string,
                    computed_signature: test.check.computed_signature,
                    presented_signatures: test.check.presented,
                    resolved_timestamp: test.check.timestamp.unwrap_or_default(),
                    resolved_event_name: test.event_name.unwrap_or_default(),
                    resolved_dedup_id: test.dedup_id.unwrap_or_default(),
                    error: test.check.error.unwrap_or_default(),
                })
            })
            .await
        }
        "DeleteWebhookSource" => {
            respond(&unary, |r: pb::DeleteWebhookSourceRequest| async move {
                engine
                    .delete_webhook_source(&c.env, required_id(&r.id)?)
                    .await?;
                Ok(pbjson_types::Empty {})
            })
            .await
        }
        "ListWebhookDeliveries" => {
            respond(&unary, |r: pb::ListWebhookDeliveriesRequest| async move {
                let status = Some(r.status.as_str()).filter(|s| !s.is_empty());
                let (deliveries, total) = engine
                    .list_webhook_deliveries(
                        &c.env,
                        required_id(&r.source_id)
                            .map_err(|_| ApiError::invalid("source_id is required"))?,
                        status,
                        r.limit.into(),
                        r.offset.into(),
                    )
                    .await?;
                Ok(pb::ListWebhookDeliveriesResponse {
                    deliveries: deliveries.iter().map(delivery_out).collect(),
                    total_count: i32::try_from(total).unwrap_or(i32::MAX),
                })
            })
            .await
        }
        m => super::connect::unknown_method("WebhookService", m).into_response(),
    }
}

/// `POST /webhooks/{token}`: a provider's delivery. 200 with the event; 401 when the signature
/// does not verify (nothing stored); 404 for a token no source has.
pub async fn ingest(
    State(state): State<AppState>,
    PathParams(token): PathParams<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    if body.len() > state.max_request_bytes {
        return Err(ApiError::too_large(format!(
            "the delivery is {} bytes; the limit is {}",
            body.len(),
            state.max_request_bytes
        )));
    }
    let headers: BTreeMap<String, String> = headers
        .iter()
        .filter_map(|(k, v)| {
            v.to_str()
                .ok()
                .map(|v| (k.as_str().to_owned(), v.to_owned()))
        })
        .collect();
    let ingested = state.engine.ingest_webhook(&token, &headers, &body).await?;
    Ok(Json(json!({
        "event_id": ingested.event_id,
        "run_ids": ingested.run_ids,
        "duplicate": ingested.duplicate,
        "delivery_id": ingested.delivery_id,
    }))
    .into_response())
}
