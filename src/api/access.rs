//! Which permission each Connect method needs, and the request facts a policy sees that only
//! the request body carries (event names, function ids, topics). REST routes name their
//! permission in the route table (`api::table`); both feed the one decision in `auth`.

use axum::http::HeaderMap;

use crate::domain::authz::Permission;
use crate::domain::policy::RequestFacts;
use crate::proto::v1 as pb;

/// The permission a Connect method needs; `None` for a method the service does not have (the
/// handler answers `unimplemented` to any authenticated caller).
pub fn connect_permission(service: &str, method: &str) -> Option<Permission> {
    use Permission as P;
    Some(match (service, method) {
        ("IronflowService", m) => match m {
            "RegisterFunction" | "UpdateFunctionStatus" | "RollbackFunction" => P::FunctionsWrite,
            "GetFunction" | "ListFunctions" | "ListFunctionHistory" | "GetFunctionAtVersion" => {
                P::FunctionsRead
            }
            "DeleteFunction" => P::FunctionsDelete,
            "Trigger" | "Emit" | "TriggerSync" | "TriggerBatch" => P::EventsEmit,
            "InvokeFunction" | "InvokeFunctionSync" => P::FunctionsInvoke,
            "GetRun" | "ListRuns" | "GetRunSteps" | "GetPausedState" => P::RunsRead,
            "CancelRun" => P::RunsCancel,
            "PauseRun" | "ResumeRun" | "InjectStepOutput" | "PatchStep" => P::RunsEdit,
            "RedactStep" | "RedactRun" | "RedactEvent" => P::EventsRedact,
            "DeleteRun" | "DeleteRuns" => P::RunsDelete,
            "Health" | "Info" => P::SystemRead,
            _ => return None,
        },
        ("TimeTravelService", "GetRunStateAt" | "GetRunTimeline" | "GetStepOutputAt") => {
            P::RunsRead
        }
        ("EntityStreamService", m) => match m {
            "AppendEvent" | "CreateSnapshot" => P::StreamsAppend,
            "ReadStream" | "GetStreamInfo" | "ListStreams" | "GetEntityHistory" | "GetSnapshot" => {
                P::StreamsRead
            }
            "DeleteStream" => P::StreamsDelete,
            _ => return None,
        },
        ("EventSchemaService", m) => match m {
            "RegisterSchema" => P::SchemasWrite,
            "GetSchema" | "ListSchemas" | "TestUpcast" | "CheckEnforcement"
            | "ListSchemaHistory" | "GetSchemaRevision" => P::SchemasRead,
            "DeleteSchema" => P::SchemasDelete,
            _ => return None,
        },
        ("ProjectionService", m) => match m {
            "RegisterProjection"
            | "AcquireProjectionLease"
            | "RenewProjectionLease"
            | "ReleaseProjectionLease"
            | "PollProjectionEvents"
            | "StreamProjectionEvents"
            | "SaveProjectionState"
            | "AckProjectionEvents"
            | "PauseProjection"
            | "ResumeProjection"
            | "CreateSQLProjection"
            | "RebuildProjection"
            | "CancelRebuild" => P::ProjectionsWrite,
            "UnregisterProjection" => P::ProjectionsDelete,
            "GetProjection"
            | "ListProjections"
            | "GetProjectionStatus"
            | "WaitProjectionCatchup"
            | "WaitProjectionCatchupBatch"
            | "WaitProjectionCatchupStream"
            | "WaitForEvent"
            | "ListProjectionHistory"
            | "GetProjectionRevision"
            | "QuerySQLProjection"
            | "GetRebuildJob" => P::ProjectionsRead,
            _ => return None,
        },
        ("QueryService", "ExecuteSQL") => P::HistoryQuery,
        ("PubSubService", m) => match m {
            "Publish" => P::TopicsPublish,
            "Subscribe" => P::TopicsSubscribe,
            "JoinConsumerGroup"
            | "SubscribeBidirectional"
            | "CreateConsumerGroup"
            | "UpdateConsumerGroup"
            | "DeleteConsumerGroup"
            | "AckEvent" => P::GroupsWrite,
            "GetConsumerGroup" | "ListConsumerGroups" => P::GroupsRead,
            "Emit" => P::EventsEmit,
            "ListTopics" | "GetTopicStats" => P::TopicsSubscribe,
            _ => return None,
        },
        ("EnvironmentService", m) => match m {
            "GetEnvironment" | "ListEnvironments" => P::EnvironmentsRead,
            "CreateEnvironment" | "DeleteEnvironment" => P::EnvironmentsAdmin,
            "RotateAPIKey" => P::KeysAdmin,
            _ => return None,
        },
        ("AuditService", "GetAuditTrail" | "GetAuthAuditTrail") => P::AuditRead,
        ("WorkerService", "Connect") => P::WorkersRun,
        ("WebhookService", m) => match m {
            "GetWebhookSource" | "ListWebhookSources" | "ListWebhookDeliveries" => P::WebhooksRead,
            "CreateWebhookSource"
            | "UpdateWebhookSource"
            | "RotateWebhookSecret"
            | "ExpireWebhookSecretPrev"
            | "DisableWebhookSignatureVerification"
            | "RotateWebhookIngestToken"
            | "TestWebhookVerifyConfig"
            | "DeleteWebhookSource" => P::WebhooksWrite,
            _ => return None,
        },
        _ => return None,
    })
}

/// Whether a call's policy facts need its body read (only checked when a policy is in force).
pub fn needs_body_facts(path: &str) -> bool {
    matches!(
        path,
        "/api/v1/events"
            | "/ironflow.v1.IronflowService/Emit"
            | "/ironflow.v1.IronflowService/Trigger"
            | "/ironflow.v1.IronflowService/TriggerSync"
            | "/ironflow.v1.IronflowService/TriggerBatch"
            | "/ironflow.v1.IronflowService/InvokeFunction"
            | "/ironflow.v1.IronflowService/InvokeFunctionSync"
            | "/ironflow.v1.PubSubService/Publish"
            | "/ironflow.v1.PubSubService/Emit"
    )
}

/// Reads the body's facts into `facts`. A body that cannot be read leaves them empty: the
/// handler refuses it anyway, and a policy over an empty name still decides (fail closed
/// where a module requires the name).
pub fn body_facts(path: &str, headers: &HeaderMap, body: &[u8], facts: &mut RequestFacts) {
    // `path` is the matched route with the decoded method, never the raw request path.
    if path == "/api/v1/events" {
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body)
            && let Some(name) = value.get("name").and_then(|n| n.as_str())
        {
            facts.event_names.push(name.to_owned());
        }
        return;
    }
    let Ok(unary) = super::connect::prepare(headers, body.to_vec().into(), usize::MAX) else {
        return;
    };
    if path == "/ironflow.v1.PubSubService/Emit" {
        if let Ok(req) = unary.decode::<pb::EmitRequest>() {
            facts.event_names.push(req.event);
        }
        return;
    }
    let method = path.rsplit('/').next().unwrap_or_default();
    match method {
        "Emit" | "Trigger" => {
            if let Ok(req) = unary.decode::<pb::TriggerRequest>() {
                facts.event_names.push(req.event);
            }
        }
        "TriggerSync" => {
            if let Ok(req) = unary.decode::<pb::TriggerSyncRequest>() {
                facts.event_names.push(req.event);
            }
        }
        "TriggerBatch" => {
            if let Ok(req) = unary.decode::<pb::TriggerBatchRequest>() {
                facts
                    .event_names
                    .extend(req.events.into_iter().map(|e| e.event));
            }
        }
        "InvokeFunction" => {
            if let Ok(req) = unary.decode::<pb::InvokeFunctionRequest>() {
                facts.function_id = req.function_id;
            }
        }
        "InvokeFunctionSync" => {
            if let Ok(req) = unary.decode::<pb::InvokeFunctionSyncRequest>() {
                facts.function_id = req.function_id;
            }
        }
        "Publish" => {
            if let Ok(req) = unary.decode::<pb::PublishRequest>() {
                facts.topic = req.topic;
            }
        }
        _ => {}
    }
}

/// Facts from a REST route's path parameters: `{id}` is a function's or run's id by where it
/// sits, other parameters name the resource.
pub fn path_facts(route: &str, params: &[(String, String)], facts: &mut RequestFacts) {
    for (name, value) in params {
        match name.as_str() {
            "id" if route.starts_with("/api/v1/functions/") => facts.function_id = value.clone(),
            "id" if route.starts_with("/api/v1/runs/") => facts.run_id = value.clone(),
            "method" | "service" => {}
            _ if facts.name.is_empty() => facts.name = value.clone(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn every_served_method_has_a_permission() {
        assert_eq!(
            connect_permission("IronflowService", "Emit"),
            Some(Permission::EventsEmit)
        );
        assert_eq!(
            connect_permission("IronflowService", "RedactRun"),
            Some(Permission::EventsRedact)
        );
        assert_eq!(connect_permission("IronflowService", "Nope"), None);
        assert_eq!(connect_permission("NoService", "Emit"), None);
    }

    #[test]
    fn emit_bodies_give_their_event_names() {
        let mut facts = RequestFacts::default();
        body_facts(
            "/api/v1/events",
            &HeaderMap::new(),
            br#"{"name":"order.placed","data":{}}"#,
            &mut facts,
        );
        assert_eq!(facts.event_names, vec!["order.placed".to_owned()]);

        let mut facts = RequestFacts::default();
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "application/proto".parse().expect("valid"));
        let batch = pb::TriggerBatchRequest {
            events: vec![
                pb::TriggerRequest {
                    event: "a".into(),
                    ..Default::default()
                },
                pb::TriggerRequest {
                    event: "b".into(),
                    ..Default::default()
                },
            ],
        };
        body_facts(
            "/ironflow.v1.IronflowService/TriggerBatch",
            &headers,
            &batch.encode_to_vec(),
            &mut facts,
        );
        assert_eq!(facts.event_names, vec!["a".to_owned(), "b".to_owned()]);
    }
}
