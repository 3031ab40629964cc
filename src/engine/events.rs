//! Emitting events (store + trigger matching in one transaction) and reading them back.

use serde_json::Value;

use crate::domain::expression::{Bindings, EventView};
use crate::domain::lifecycle::lanes::lane_for;
use crate::domain::pattern::validate_event_name;
use crate::domain::run::RunStatus;
use crate::domain::time::Ts;
use crate::ids::{EnvId, EventId, RunId};
use crate::store::events::Lane;
use crate::store::events::{
    EventNameCount, EventNameQuery, EventOutcome, EventQuery, EventRecord, NewEvent, NewRun,
};
use crate::store::functions::FunctionRecord;
use crate::store::runs::PageRequest;
use crate::store::schedules::{DebounceHit, Throttle};

use super::{Engine, EngineError, cursor, page_limit};

/// An event as a transport parsed it.
#[derive(Debug, Clone)]
pub struct EmitEvent {
    pub name: String,
    pub data: Value,
    pub metadata: Value,
    pub idempotency_key: Option<String>,
    pub source: String,
    pub version: i32,
    /// The run whose step sent it (`X-Ironflow-Run-ID`): the flow map's emit edges.
    pub emitted_by_run: Option<RunId>,
}

#[derive(Debug, Clone)]
pub struct EmitResult {
    pub event_id: EventId,
    pub run_ids: Vec<RunId>,
    /// The event's global sequence number (the first event's, for a repeated key): what a
    /// read-your-writes wait (`WaitProjectionCatchup.min_seq`) waits for.
    pub seq: i64,
    /// True when the idempotency key was seen before and nothing new was stored.
    pub duplicate: bool,
}

#[derive(Debug, Clone, Default)]
pub struct EventPageQuery {
    pub cursor: Option<String>,
    /// An event id: list only events older than it.
    pub before: Option<String>,
    pub limit: Option<i64>,
    pub name: Option<String>,
    pub names: Option<Vec<String>>,
    pub source: Option<String>,
    pub since: Option<Ts>,
    pub until: Option<Ts>,
    pub search: Option<String>,
}

#[derive(Debug, Clone)]
pub struct EventPage {
    pub events: Vec<EventRecord>,
    pub limit: i64,
    pub next_cursor: Option<String>,
    pub has_prev: bool,
}

/// A new run of `function` for an event: its lane (a concurrency limit's, or an actor key's
/// with room for one) and its throttle key.
pub(crate) fn new_run(
    function: &FunctionRecord,
    event_id: &EventId,
    event_name: &str,
    data: &Value,
    lane_bindings: &std::sync::OnceLock<Bindings>,
) -> NewRun {
    let definition = &function.definition;
    let lane = lane_for(
        definition,
        data,
        lane_bindings,
        || serde_json::json!({"id": event_id, "name": event_name, "data": data}),
    )
    .map(|(key, limit)| Lane { key, limit });
    NewRun {
        lane,
        throttle: definition.throttle.as_ref().map(|t| Throttle {
            key: crate::domain::debounce::path_value(&t.key, data),
            def: t.clone(),
        }),
        id: RunId::generate(),
        max_attempts: definition.max_attempts(),
        function_id: function.id.clone(),
        function_version: function.version,
        status: RunStatus::Running,
    }
}

/// Idempotency keys the server gives its own events; a client's emit may not take them ahead of
/// a tick or a delivery.
pub const RESERVED_KEY_PREFIXES: [&str; 2] = ["cron:", "webhook:"];

/// Refuses a client's idempotency key in the server's own namespace.
pub(crate) fn check_client_key(key: Option<&str>) -> Result<(), EngineError> {
    match key.filter(|k| RESERVED_KEY_PREFIXES.iter().any(|p| k.starts_with(p))) {
        Some(key) => Err(EngineError::InvalidArgument(format!(
            "idempotency_key '{key}': the prefixes {} are the server's own (cron ticks, webhook deliveries)",
            RESERVED_KEY_PREFIXES.join(", ")
        ))),
        None => Ok(()),
    }
}

/// The most events one `TriggerBatch` carries.
pub const MAX_TRIGGER_BATCH: usize = 1000;

/// Refuses an idempotency key over 256 bytes.
pub(crate) fn check_idempotency_key(key: Option<&str>) -> Result<(), EngineError> {
    match key.filter(|k| k.len() > 256) {
        Some(key) => Err(EngineError::InvalidArgument(format!(
            "idempotency_key is {} bytes; the limit is 256",
            key.len()
        ))),
        None => Ok(()),
    }
}

impl Engine {
    /// Emits each event on its own (together, so the group commit can take them in one
    /// transaction): one event's failure does not stop the others. Results in request order.
    pub async fn emit_each(
        &self,
        env: &EnvId,
        requests: Vec<EmitEvent>,
    ) -> Vec<Result<EmitResult, EngineError>> {
        futures::future::join_all(requests.into_iter().map(|r| self.emit(env, r))).await
    }

    pub async fn emit(&self, env: &EnvId, request: EmitEvent) -> Result<EmitResult, EngineError> {
        if request.name.starts_with("ironflow/") {
            return Err(EngineError::InvalidArgument(format!(
                "event name '{}': the 'ironflow/' prefix is reserved for the server's own events",
                request.name
            )));
        }
        check_client_key(request.idempotency_key.as_deref())?;
        self.emit_to(env, request, None).await
    }

    /// Stores an event and starts runs: of every matching function, or only of `target`.
    pub(crate) async fn emit_to(
        &self,
        env: &EnvId,
        request: EmitEvent,
        target: Option<FunctionRecord>,
    ) -> Result<EmitResult, EngineError> {
        validate_event_name(&request.name)
            .map_err(|e| EngineError::InvalidArgument(format!("event name: {e}")))?;
        check_idempotency_key(request.idempotency_key.as_deref())?;
        self.check_payload_size(&request.data, &request.metadata)?;
        let (schema, version) = self
            .enforce_schema(env, &request.name, request.version, &request.data)
            .await?;
        // The emit's span (free while tracing is off): the runs it starts join its trace.
        let span = if crate::telemetry::enabled() {
            tracing::debug_span!(target: crate::telemetry::TARGET, "ironflow.emit", event = %request.name)
        } else {
            tracing::Span::none()
        };
        let traceparent = crate::telemetry::traceparent_of(&span);
        let event = NewEvent {
            id: EventId::generate(),
            env_id: env.clone(),
            name: request.name,
            data: request.data,
            metadata: request.metadata,
            source: request.source,
            idempotency_key: request.idempotency_key.filter(|k| !k.is_empty()),
            version,
            received_at: Ts::now(),
            append: None,
            purge_below: false,
            emitted_by_run: request.emitted_by_run,
            schema,
            traceparent,
        };
        match tracing::Instrument::instrument(self.store_event(env, event, target), span).await? {
            EventOutcome::Stored {
                event_id,
                run_ids,
                seq,
                ..
            } => Ok(EmitResult {
                event_id,
                run_ids,
                seq,
                duplicate: false,
            }),
            EventOutcome::Duplicate {
                event_id,
                run_ids,
                seq,
                ..
            } => Ok(EmitResult {
                event_id,
                run_ids,
                seq,
                duplicate: true,
            }),
            EventOutcome::Refused(refusal) => Err(super::streams::refused(refusal)),
        }
    }

    /// Refuses data + metadata over the payload limit.
    pub(crate) fn check_payload_size(
        &self,
        data: &Value,
        metadata: &Value,
    ) -> Result<(), EngineError> {
        let size = payload_size(data) + payload_size(metadata);
        let limit = self.options().max_payload_bytes;
        if size > limit {
            return Err(EngineError::PayloadTooLarge {
                what: "event payload (data + metadata)",
                size,
                limit,
            });
        }
        Ok(())
    }

    /// Stores an event (an entity append too) with the runs it triggers — of every matching
    /// function, or only of `target`; a tombstone triggers none — through the group commit,
    /// then announces it live and applies `cancelOn`.
    pub(crate) async fn store_event(
        &self,
        env: &EnvId,
        event: NewEvent,
        target: Option<FunctionRecord>,
    ) -> Result<EventOutcome, EngineError> {
        // One read of the active functions serves both trigger matching and cancelOn.
        let active = self.store().active_functions(env).await?;
        let tombstone = event.append.as_ref().is_some_and(|a| a.tombstone);
        let (runs, debounces) = match target {
            _ if tombstone => (Vec::new(), Vec::new()),
            Some(function) => self.matching_runs(&event, std::slice::from_ref(&function), true),
            None => self.matching_runs(&event, &active, false),
        };
        let debounced = !debounces.is_empty();
        let emission = crate::store::events::Emission {
            event: event.clone(),
            runs,
            debounces,
        };
        let outcome = self.commit_event(emission).await?;
        if debounced && matches!(outcome, EventOutcome::Stored { .. }) {
            self.bus().scheduler_changed();
        }
        if let EventOutcome::Stored {
            run_ids, effects, ..
        } = &outcome
        {
            self.bus().publish(effects);
            self.publish_live(super::BusMessage::event(
                env.clone(),
                event.id.to_string(),
                event.name.clone(),
                event.data.clone(),
                event.received_at,
            ));
            if !tombstone {
                self.cancel_on_event(env, &event, &active, run_ids).await?;
            }
            metrics::counter!("ironflow_events_received_total").increment(1);
            metrics::counter!("ironflow_runs_created_total").increment(run_ids.len() as u64);
        }
        Ok(outcome)
    }

    /// A new run for each function (of those given) that the event triggers, or, for a
    /// debounced function, the debounce it re-arms instead. `direct`: the functions were named
    /// (an invoke, a cron tick), so they start whatever their triggers and debounce.
    fn matching_runs(
        &self,
        event: &NewEvent,
        functions: &[FunctionRecord],
        direct: bool,
    ) -> (Vec<NewRun>, Vec<DebounceHit>) {
        let invoked = direct || event.name == super::INVOKED_EVENT;
        // Converted for CEL once per event, shared by every function's expressions.
        let bindings = Bindings::for_event(&EventView {
            id: event.id.as_str(),
            name: &event.name,
            data: &event.data,
            metadata: &event.metadata,
            timestamp_ms: event.received_at.millis(),
        });
        // The CEL view concurrency keys read, made once for every function the event starts.
        let lane_bindings = std::sync::OnceLock::new();
        let mut runs = Vec::new();
        let mut debounces = Vec::new();
        for f in functions
            .iter()
            .filter(|f| invoked || super::triggers::fires(&f.definition, &event.name, &bindings))
        {
            match f.definition.debounce.as_ref().filter(|_| !direct) {
                Some(def) => debounces.push(DebounceHit {
                    function_id: f.id.clone(),
                    function_version: f.version,
                    key: crate::domain::debounce::key_of(def, &event.data),
                    def: def.clone(),
                }),
                None => runs.push(new_run(
                    f,
                    &event.id,
                    &event.name,
                    &event.data,
                    &lane_bindings,
                )),
            }
        }
        (runs, debounces)
    }

    /// Cancels the unfinished runs of functions whose `cancelOn` names this event and whose
    /// `match` path has the same value in the run's trigger and in this event.
    async fn cancel_on_event(
        &self,
        env: &EnvId,
        event: &NewEvent,
        active: &[FunctionRecord],
        started: &[RunId],
    ) -> Result<(), EngineError> {
        use crate::domain::job::lookup_path;
        let incoming = serde_json::json!({"name": event.name, "data": event.data});
        for function in active {
            for spec in &function.definition.cancel_on {
                let fires = crate::domain::pattern::EventPattern::parse(&spec.event)
                    .is_ok_and(|p| p.matches(&event.name));
                if !fires {
                    continue;
                }
                for run in self
                    .store()
                    .active_runs_of_function(env, &function.id)
                    .await?
                {
                    if started.contains(&run.id) {
                        continue;
                    }
                    let trigger = serde_json::json!({"data": run.input});
                    let same = spec.r#match.is_empty()
                        || lookup_path(&trigger, &spec.r#match)
                            .is_some_and(|v| lookup_path(&incoming, &spec.r#match) == Some(v));
                    if same {
                        let reason = format!("cancelled by event {} ({})", event.name, event.id);
                        match self.cancel_run(env, &run.id, &reason).await {
                            Ok(_)
                            | Err(
                                EngineError::FailedPrecondition(_) | EngineError::NotFound { .. },
                            ) => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
        }
        Ok(())
    }

    pub async fn get_event(
        &self,
        env: &EnvId,
        id: &EventId,
    ) -> Result<(EventRecord, Vec<RunId>), EngineError> {
        let event = self
            .store()
            .get_event(env, id)
            .await?
            .ok_or_else(|| EngineError::not_found("event", id))?;
        let runs = self.store().run_ids_for_event(env, id).await?;
        Ok((event, runs))
    }

    pub async fn list_events(
        &self,
        env: &EnvId,
        q: EventPageQuery,
    ) -> Result<EventPage, EngineError> {
        let limit = page_limit(q.limit)?;
        let mut before_seq = q
            .cursor
            .as_deref()
            .map(|c| cursor::decode_seq(c, "e"))
            .transpose()?;
        if let Some(before) = &q.before {
            let id = EventId::parse(before)
                .map_err(|e| EngineError::InvalidArgument(format!("before: {e}")))?;
            let anchor = self
                .store()
                .get_event(env, &id)
                .await?
                .ok_or_else(|| EngineError::not_found("event", &id))?;
            before_seq = Some(before_seq.map_or(anchor.seq, |s| s.min(anchor.seq)));
        }
        let query = EventQuery {
            page: PageRequest {
                before_seq,
                limit: limit + 1,
            },
            name: q.name,
            names: q.names,
            source: q.source,
            since: q.since,
            until: q.until,
            search: q.search,
        };
        let mut events = self.store().list_events(env, &query).await?;
        let next_cursor = if events.len() as i64 > limit {
            events.truncate(limit as usize);
            events
                .last()
                .map(|e| cursor::encode("e", &e.seq.to_string()))
        } else {
            None
        };
        Ok(EventPage {
            events,
            limit,
            next_cursor,
            has_prev: before_seq.is_some(),
        })
    }

    pub async fn event_names(
        &self,
        env: &EnvId,
        query: EventNameQuery,
    ) -> Result<(Vec<EventNameCount>, i64), EngineError> {
        Ok(self.store().event_names(env, &query).await?)
    }
}

fn payload_size(value: &Value) -> usize {
    serde_json::to_vec(value).map_or(0, |v| v.len())
}
