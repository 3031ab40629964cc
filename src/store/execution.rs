//! The execution store: the runs' work queue, leases and fences, workers. Every change of a
//! run is decided by [`crate::domain::lifecycle`] from the facts read here under the job rows'
//! locks, and applied by [`super::apply`]; this module only locks, reads, decides and writes.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::types::Json;

use super::StoreError;
use super::apply::{apply, lock_lane};
use super::db::{Db, SqlStore};
use super::events::EventRecord;
use super::runs::{RunRecord, RunRow, StepRecord, StepRow, select_run};
use super::sql::{Conn, args, sql};
use super::writes::notify_commit;
use crate::domain::function::{ExecutionMode, FunctionDefinition, RetryPolicy};
use crate::domain::job::{Fence, JobReport};
use crate::domain::lifecycle::report::{
    ChildFunction, ReportDecision, ReportFacts, child_lookup, decide, fence_holds,
};
use crate::domain::lifecycle::timer::{
    TimerAction, lease_expired, parked_deadline, run_timeout, timer_action,
};
use crate::domain::lifecycle::{
    Change, Effects, JobFacts, JobState, LaneRef, ParentLink, RunFacts, Transition, cancel, claim,
};
use crate::domain::run::RunStatus;
use crate::domain::time::Ts;
use crate::ids::{EnvId, EventId, FunctionId, RunId};

#[async_trait]
pub trait ExecutionStore: Send + Sync {
    /// Claims due jobs for a worker, leasing them.
    async fn claim_jobs(&self, request: &ClaimRequest) -> Result<Claim, StoreError>;

    /// Confirms a worker started a dispatch (its lease renewed); `Stale` if the fence does not
    /// match.
    async fn ack_job(
        &self,
        dispatch_id: &str,
        fence: &Fence,
        lease_expires_at: Ts,
    ) -> Result<FenceOutcome, StoreError>;

    /// Applies a checkpoint or a result in one transaction; `Stale` if the fence does not match.
    async fn report_job(
        &self,
        report: &JobReport,
        lease_expires_at: Ts,
    ) -> Result<FenceOutcome, StoreError> {
        let mut outcomes = self
            .report_jobs(std::slice::from_ref(report), lease_expires_at)
            .await?;
        Ok(outcomes.pop().unwrap_or(FenceOutcome::Stale))
    }

    /// Applies several checkpoints or results in one transaction (one commit for all; an
    /// error fails them all, a stale fence only its own report).
    async fn report_jobs(
        &self,
        reports: &[JobReport],
        lease_expires_at: Ts,
    ) -> Result<Vec<FenceOutcome>, StoreError>;

    /// Gives a claimed job back unsent (queued, still due, no attempt used); false when the
    /// fence no longer matches.
    async fn release_job(&self, dispatch_id: &str, fence: &Fence) -> Result<bool, StoreError>;

    async fn cancel_run(
        &self,
        env: &EnvId,
        id: &RunId,
        reason: &str,
    ) -> Result<CancelOutcome, StoreError>;

    /// Fires what came due: run timeouts, expired leases, parked deadlines.
    async fn fire_timers(&self, limit: i64) -> Result<Effects, StoreError>;

    /// When the next queued or parked job becomes due, if any.
    async fn next_due(&self) -> Result<Option<Ts>, StoreError>;

    async fn register_worker(&self, worker: &WorkerRegistration) -> Result<(), StoreError>;

    /// Records a heartbeat and renews the leases of the listed dispatches this worker still
    /// holds; returns the ones renewed, `None` when the worker is not registered.
    async fn heartbeat_worker(
        &self,
        env: &EnvId,
        worker: &str,
        dispatch_ids: &[String],
        lease_expires_at: Ts,
    ) -> Result<Option<Vec<String>>, StoreError>;

    /// The functions a worker serves; `None` when it is not registered.
    async fn worker_functions(
        &self,
        env: &EnvId,
        worker: &str,
    ) -> Result<Option<Vec<String>>, StoreError>;

    async fn list_workers(&self, env: &EnvId) -> Result<Vec<WorkerRecord>, StoreError>;
}

/// A pull worker's registration.
#[derive(Debug, Clone)]
pub struct WorkerRegistration {
    pub env_id: EnvId,
    pub id: String,
    pub hostname: String,
    pub function_ids: Vec<String>,
    pub max_concurrent: i32,
    pub labels: Value,
    pub version: Value,
}

#[derive(Debug, Clone)]
pub struct WorkerRecord {
    pub id: String,
    pub hostname: String,
    pub function_ids: Vec<String>,
    pub max_concurrent: i32,
    pub labels: Value,
    pub version: Value,
    pub registered_at: Ts,
    pub last_heartbeat_at: Ts,
}

/// What a poll asks for.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub env_id: EnvId,
    pub worker_id: String,
    pub function_ids: Vec<String>,
    pub limit: i64,
    pub lease_expires_at: Ts,
    /// Only jobs of functions in this mode: pull workers never get push functions' jobs and
    /// the push dispatcher never gets pull functions' jobs.
    pub mode: ExecutionMode,
}

/// What a claim took, and what must be told after it (the leases' end, run timeouts).
#[derive(Debug, Clone, Default)]
pub struct Claim {
    pub jobs: Vec<ClaimedJob>,
    pub effects: Effects,
}

/// A dispatched job with everything the worker needs to replay the run.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub dispatch_id: String,
    pub execution_seq: i64,
    pub lease_token: String,
    pub lease_expires_at: Ts,
    /// When the job became due: claim time minus this is its schedule-to-start latency.
    pub due_at: Ts,
    pub run: RunRecord,
    pub event: Option<EventRecord>,
    pub completed_steps: Vec<StepRecord>,
    pub step_sequence_base: i64,
    pub definition: Option<FunctionDefinition>,
    /// The declared secrets' values, filled in by the engine (the store only holds ciphertext).
    pub secrets: std::collections::BTreeMap<String, String>,
    /// The dispatch span's W3C traceparent, filled in by the engine while OTLP tracing is on.
    pub trace: Option<String>,
}

impl ClaimedJob {
    /// What happens when the attempts run out ([`RetryPolicy::on_exhausted_of`]), as
    /// both job protocols carry it.
    pub fn on_exhausted(&self) -> String {
        RetryPolicy::on_exhausted_of(self.definition.as_ref().and_then(|d| d.retry.as_ref()))
            .to_owned()
    }

    /// The run's trace as every job protocol carries it: `trace_id` (32 hex) and the dispatch
    /// span as `metadata.traceparent`; `None` while tracing is off.
    pub fn trace_context(&self) -> Option<(String, &str)> {
        let traceparent = self.trace.as_deref()?;
        let parsed = crate::domain::trace::TraceParent::parse(traceparent)?;
        Some((parsed.trace_id_hex(), traceparent))
    }

    /// [`Self::trace_context`] as the JSON job protocols write it (`{}` while tracing is off).
    pub fn trace_json(&self) -> Value {
        match self.trace_context() {
            Some((trace_id, traceparent)) => serde_json::json!({
                "trace_id": trace_id,
                "metadata": {"traceparent": traceparent},
            }),
            None => serde_json::json!({}),
        }
    }

    /// The triggering event as both job protocols carry it (pull assignments and push
    /// requests). Optional keys are omitted, never null (the SDK rejects null); a run started
    /// by an invoke carries its input as `ironflow/function.invoked`.
    pub fn event_json(&self) -> Value {
        let run = &self.run;
        match &self.event {
            Some(e) => {
                let mut ev = serde_json::json!({
                    "id": e.id, "name": e.name, "data": e.data, "timestamp": e.received_at.to_rfc3339(),
                    "version": e.version.max(1), "source": e.source, "metadata": e.metadata,
                });
                if let Some(key) = &e.idempotency_key {
                    ev["idempotency_key"] = serde_json::json!(key);
                }
                ev
            }
            None => serde_json::json!({
                "id": run.id, "name": "ironflow/function.invoked", "data": run.input,
                "timestamp": run.created_at.to_rfc3339(), "version": 1, "source": "invoke",
            }),
        }
    }
}

/// The result of applying an ack or a report.
#[derive(Debug, Clone)]
pub enum FenceOutcome {
    Accepted(Effects),
    /// Applied, and the run paused at this boundary (a pause was requested): the dispatch is
    /// over, and the worker is answered as for a stale fence so that it stops.
    Paused(Effects),
    /// The fence did not match the current dispatch (superseded, cancelled or lease lost).
    Stale,
}

#[derive(Debug, Clone)]
pub enum CancelOutcome {
    Cancelled(RunRecord),
    /// The run had already ended; it is returned unchanged.
    AlreadyEnded(RunRecord),
    NotFound,
}

/// A job row as the lifecycle reads it.
#[derive(sqlx::FromRow)]
pub(super) struct JobRow {
    run_id: String,
    env_id: String,
    dispatch_id: Option<String>,
    state: String,
    execution_seq: i64,
    lease_token: Option<String>,
    worker_id: Option<String>,
    lease_expires_at: Option<Ts>,
    due_at: Ts,
    timeout_at: Option<Ts>,
    function_id: String,
    concurrency_key: String,
    concurrency_limit: i32,
}

impl JobRow {
    pub(super) fn facts(&self) -> Result<JobFacts, StoreError> {
        let state = JobState::parse(&self.state).ok_or_else(|| {
            StoreError::Corrupt(format!("job {}: state '{}'", self.run_id, self.state))
        })?;
        let env = EnvId::from_stored(self.env_id.clone());
        Ok(JobFacts {
            run: RunId::from_stored(self.run_id.clone()),
            env: env.clone(),
            state,
            execution_seq: self.execution_seq,
            lease_token: self.lease_token.clone(),
            worker_id: self.worker_id.clone(),
            lease_expires_at: self.lease_expires_at,
            due_at: self.due_at,
            timeout_at: self.timeout_at,
            lane: (self.concurrency_limit > 0).then(|| LaneRef {
                env,
                function_id: FunctionId::from_stored(self.function_id.clone()),
                key: self.concurrency_key.clone(),
                limit: self.concurrency_limit,
            }),
        })
    }
}

/// A run's columns the lifecycle reads, with its function's current definition (the part of
/// a run's facts that a report batch reads beside its job row).
#[derive(sqlx::FromRow)]
struct RunStateColumns {
    status: String,
    attempt: i32,
    max_attempts: i32,
    input: Json<Value>,
    parent_run_id: Option<String>,
    parent_step_id: Option<String>,
    event_id: Option<String>,
    pause_requested: bool,
    run_created_at: Ts,
    definition: Option<Json<FunctionDefinition>>,
}

/// A run as the lifecycle reads it.
#[derive(sqlx::FromRow)]
struct RunFactsRow {
    id: String,
    env_id: String,
    function_id: String,
    #[sqlx(flatten)]
    state: RunStateColumns,
}

/// A job row locked for a batch of reports, with its run's state and function definition.
#[derive(sqlx::FromRow)]
struct ReportFactsRow {
    #[sqlx(flatten)]
    job: JobRow,
    #[sqlx(flatten)]
    state: RunStateColumns,
}

impl ReportFactsRow {
    fn split(self) -> (JobRow, RunFactsRow) {
        let run = RunFactsRow {
            id: self.job.run_id.clone(),
            env_id: self.job.env_id.clone(),
            function_id: self.job.function_id.clone(),
            state: self.state,
        };
        (self.job, run)
    }
}

/// A run's facts, its triggering event and its function's definition.
pub(super) struct RunContext {
    pub(super) facts: RunFacts,
    pub(super) event_id: Option<EventId>,
    pub(super) definition: Option<FunctionDefinition>,
}

impl RunFactsRow {
    fn context(self) -> Result<RunContext, StoreError> {
        let state = self.state;
        let status: RunStatus = state
            .status
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("run {}: {e}", self.id)))?;
        let parent = match (state.parent_run_id, state.parent_step_id) {
            (Some(run), Some(step_id)) => Some(ParentLink {
                run: RunId::from_stored(run),
                step_id,
            }),
            _ => None,
        };
        Ok(RunContext {
            facts: RunFacts {
                id: RunId::from_stored(self.id),
                env: EnvId::from_stored(self.env_id),
                function_id: FunctionId::from_stored(self.function_id),
                status,
                attempt: state.attempt,
                max_attempts: state.max_attempts,
                input: state.input.0,
                parent,
                pause_requested: state.pause_requested,
                created_at: state.run_created_at,
            },
            event_id: state.event_id.map(EventId::from_stored),
            definition: state.definition.map(|d| d.0),
        })
    }
}

/// Facts of several runs, by id.
pub(super) async fn run_contexts<C: Conn + ?Sized>(
    conn: &mut C,
    ids: &[&str],
) -> Result<HashMap<String, RunContext>, StoreError> {
    let ids: Value = ids.iter().map(|id| Value::from(*id)).collect();
    let rows: Vec<RunFactsRow> = conn.fetch_all(sql!("run_facts"), args![&ids]).await?;
    rows.into_iter()
        .map(|r| {
            let id = r.id.clone();
            r.context().map(|c| (id, c))
        })
        .collect()
}

#[derive(sqlx::FromRow)]
struct ClaimedRow {
    run_id: String,
    dispatch_id: String,
    execution_seq: i64,
    lease_token: String,
    due_at: Ts,
    definition: Option<Json<FunctionDefinition>>,
}

/// A dispatched run with its triggering event (the `ev_` columns; absent for an invoke).
#[derive(sqlx::FromRow)]
struct DispatchedRunRow {
    #[sqlx(flatten)]
    run: RunRow,
    ev_seq: Option<i64>,
    ev_data: Option<Json<Value>>,
    ev_metadata: Option<Json<Value>>,
    ev_source: Option<String>,
    ev_idempotency_key: Option<String>,
    ev_version: Option<i32>,
    ev_received_at: Option<Ts>,
    ev_traceparent: Option<String>,
}

impl DispatchedRunRow {
    fn split(self) -> Result<(RunRecord, Option<EventRecord>), StoreError> {
        let event = match (
            self.ev_seq,
            self.run.event_id.clone(),
            self.run.event_name.clone(),
            self.ev_received_at,
        ) {
            (Some(seq), Some(id), Some(name), Some(received_at)) => Some(EventRecord {
                seq,
                id: EventId::from_stored(id),
                env_id: EnvId::from_stored(self.run.env_id.clone()),
                name,
                data: self.ev_data.map_or(Value::Null, |d| d.0),
                metadata: self.ev_metadata.map_or(Value::Null, |m| m.0),
                source: self.ev_source.unwrap_or_default(),
                idempotency_key: self.ev_idempotency_key,
                version: self.ev_version.unwrap_or(0),
                received_at,
                entity: None,
                emitted_by_run: None,
                schema: crate::store::events::SchemaStamp::default(),
                traceparent: self.ev_traceparent,
            }),
            _ => None,
        };
        Ok((RunRecord::try_from(self.run)?, event))
    }
}

#[derive(sqlx::FromRow)]
struct WorkerRow {
    id: String,
    hostname: String,
    function_ids: Json<Vec<String>>,
    max_concurrent: i32,
    labels: Json<Value>,
    version: Json<Value>,
    registered_at: Ts,
    last_heartbeat_at: Ts,
}

#[derive(sqlx::FromRow)]
struct WaitingStep {
    step_id: String,
    step_type: String,
}

/// The function an invoke names, with its lane for this input and the lane's active count
/// (under the lane's lock); `None` when there is no such function.
pub(super) async fn child_function<C: Conn + ?Sized>(
    conn: &mut C,
    env: &EnvId,
    function_id: &str,
    input: &Value,
) -> Result<Option<ChildFunction>, StoreError> {
    let Ok(id) = FunctionId::parse(function_id) else {
        return Ok(None);
    };
    let Some(function) = super::functions::select_function(conn, env, &id).await? else {
        return Ok(None);
    };
    let lane = crate::domain::lifecycle::lanes::lane_for(
        &function.definition,
        input,
        &std::sync::OnceLock::new(),
        || serde_json::json!({"name": "invoke", "data": input}),
    )
    .map(|(key, limit)| LaneRef {
        env: env.clone(),
        function_id: id.clone(),
        key,
        limit,
    });
    let lane_active = match &lane {
        Some(lane) => lock_lane(conn, lane).await?,
        None => 0,
    };
    Ok(Some(ChildFunction {
        function_id: id,
        version: function.version,
        max_attempts: function.definition.max_attempts(),
        lane,
        lane_active,
    }))
}

/// Whether a transition moved or ended the job (a later report on the same dispatch in the
/// same batch is then stale, as it would be one transaction later).
fn moves_job(t: &Transition) -> bool {
    t.changes.iter().any(|c| {
        matches!(
            c,
            Change::DeleteJob { .. }
                | Change::QueueJob { .. }
                | Change::ParkJob { .. }
                | Change::PauseJob { .. }
        )
    })
}

#[async_trait]
impl<D: Db> ExecutionStore for SqlStore<D> {
    async fn claim_jobs(&self, req: &ClaimRequest) -> Result<Claim, StoreError> {
        let now = Ts::now();
        let functions = Value::from(req.function_ids.clone());
        let mode = match req.mode {
            ExecutionMode::Pull => "pull",
            ExecutionMode::Push => "push",
        };
        let mut tx = self.db.begin().await?;
        let claimed: Vec<ClaimedRow> = tx
            .fetch_all(
                sql!("claim_jobs"),
                args![
                    req.env_id.as_str(),
                    &functions,
                    now,
                    req.limit,
                    req.worker_id.as_str(),
                    req.lease_expires_at,
                    mode,
                ],
            )
            .await?;
        if claimed.is_empty() {
            return Ok(Claim::default());
        }
        let transitions = claimed
            .iter()
            .map(|c| {
                let timeout = c
                    .definition
                    .as_ref()
                    .map(|d| d.timeout_ms)
                    .filter(|ms| *ms > 0)
                    .map(|ms| Duration::from_millis(u64::from(ms.unsigned_abs())));
                let run = RunId::from_stored(c.run_id.clone());
                claim::dispatched(
                    &req.env_id,
                    &run,
                    c.execution_seq,
                    &req.worker_id,
                    timeout,
                    now,
                )
            })
            .collect();
        let mut effects = apply(&mut *tx, transitions, now).await?;
        effects.schedule(Some(req.lease_expires_at));
        D::commit(tx).await?;

        // What the worker needs to replay each run, read after the commit.
        let ids_json: Value = claimed
            .iter()
            .map(|c| Value::from(c.run_id.as_str()))
            .collect();
        let mut conn = self.db.reader().await?;
        let runs: Vec<DispatchedRunRow> = conn
            .fetch_all(sql!("runs_by_ids"), args![req.env_id.as_str(), &ids_json])
            .await?;
        let mut runs: HashMap<String, (RunRecord, Option<EventRecord>)> = runs
            .into_iter()
            .map(|r| {
                let id = r.run.id.clone();
                r.split().map(|pair| (id, pair))
            })
            .collect::<Result<_, _>>()?;
        let steps: Vec<StepRow> = conn
            .fetch_all(sql!("steps_of_runs"), args![&ids_json])
            .await?;
        let mut steps_by_run: HashMap<String, Vec<StepRecord>> = HashMap::new();
        for step in steps {
            steps_by_run
                .entry(step.run_id.clone())
                .or_default()
                .push(step.into());
        }
        let mut jobs = Vec::with_capacity(claimed.len());
        for c in claimed {
            let Some((run, event)) = runs.remove(&c.run_id) else {
                continue;
            };
            let all_steps = steps_by_run.remove(&c.run_id).unwrap_or_default();
            let base = all_steps.len() as i64;
            jobs.push(ClaimedJob {
                dispatch_id: c.dispatch_id,
                execution_seq: c.execution_seq,
                lease_token: c.lease_token,
                lease_expires_at: req.lease_expires_at,
                due_at: c.due_at,
                run,
                event,
                completed_steps: all_steps
                    .into_iter()
                    .filter(|s| s.status == "completed" || s.status == "failed")
                    .collect(),
                step_sequence_base: base,
                definition: c.definition.map(|d| d.0),
                secrets: Default::default(),
                trace: None,
            });
        }
        Ok(Claim { jobs, effects })
    }

    async fn ack_job(
        &self,
        dispatch_id: &str,
        fence: &Fence,
        lease_expires_at: Ts,
    ) -> Result<FenceOutcome, StoreError> {
        let mut tx = self.db.begin().await?;
        let ids = Value::from(vec![dispatch_id]);
        let rows: Vec<JobRow> = tx.fetch_all(sql!("lock_report_jobs"), args![&ids]).await?;
        let Some(job) = rows.first() else {
            return Ok(FenceOutcome::Stale);
        };
        if !fence_holds(&job.facts()?, fence) {
            return Ok(FenceOutcome::Stale);
        }
        tx.execute(
            sql!("extend_lease"),
            args![job.run_id.as_str(), lease_expires_at],
        )
        .await?;
        D::commit(tx).await?;
        Ok(FenceOutcome::Accepted(Effects::default()))
    }

    async fn report_jobs(
        &self,
        reports: &[JobReport],
        lease_expires_at: Ts,
    ) -> Result<Vec<FenceOutcome>, StoreError> {
        let now = Ts::now();
        let mut tx = self.db.begin().await?;
        // Every job row the batch names, locked at once in run order, before anything else is
        // touched: the lock order every transaction keeps.
        let dispatches: Value = reports
            .iter()
            .map(|r| Value::from(r.dispatch_id.as_str()))
            .collect();
        let rows: Vec<ReportFactsRow> = tx
            .fetch_all(sql!("lock_report_facts"), args![&dispatches])
            .await?;
        let mut jobs: HashMap<String, JobFacts> = HashMap::new();
        let mut contexts: HashMap<String, RunContext> = HashMap::new();
        for row in rows {
            let (job, run) = row.split();
            if let Some(dispatch) = &job.dispatch_id {
                jobs.insert(dispatch.clone(), job.facts()?);
            }
            contexts.insert(job.run_id, run.context()?);
        }
        let mut outcomes = Vec::with_capacity(reports.len());
        let mut transitions = Vec::new();
        let mut moved: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for report in reports {
            let job = jobs.get(&report.dispatch_id);
            let context = job.and_then(|j| contexts.get(j.run.as_str()));
            let (Some(job), Some(context)) = (job, context) else {
                outcomes.push(FenceOutcome::Stale);
                continue;
            };
            if moved.contains(report.dispatch_id.as_str()) || !fence_holds(job, &report.fence) {
                outcomes.push(FenceOutcome::Stale);
                continue;
            }
            let child = child_lookup(&context.facts, report);
            let child_function = match &child {
                Some(request) => {
                    child_function(
                        &mut *tx,
                        &context.facts.env,
                        &request.function_id,
                        &request.input,
                    )
                    .await?
                }
                None => None,
            };
            let facts = ReportFacts {
                run: &context.facts,
                job,
                policy: context.definition.as_ref().and_then(|d| d.retry.as_ref()),
                child_function,
                child_id: child.map(|c| c.child),
            };
            match decide(&facts, report, lease_expires_at, now) {
                ReportDecision::Stale => outcomes.push(FenceOutcome::Stale),
                ReportDecision::Apply(t) => {
                    if moves_job(&t) {
                        moved.insert(report.dispatch_id.as_str());
                    }
                    outcomes.push(FenceOutcome::Accepted(t.effects_with_schedule()));
                    transitions.push(t);
                }
                ReportDecision::Paused(t) => {
                    moved.insert(report.dispatch_id.as_str());
                    outcomes.push(FenceOutcome::Paused(t.effects_with_schedule()));
                    transitions.push(t);
                }
            }
        }
        let effects = apply(&mut *tx, transitions, now).await?;
        notify_commit(&mut *tx, self.db.node_id(), &effects).await?;
        D::commit(tx).await?;
        // Each report answers with its own effects; work made claimable by a follow-up (a run
        // promoted in its lane) rides on the first accepted one.
        if effects.work_ready
            && let Some(FenceOutcome::Accepted(first)) = outcomes
                .iter_mut()
                .find(|o| matches!(o, FenceOutcome::Accepted(_)))
        {
            first.work_ready = true;
        }
        Ok(outcomes)
    }

    async fn release_job(&self, dispatch_id: &str, fence: &Fence) -> Result<bool, StoreError> {
        let released = self
            .db
            .writer()
            .await?
            .execute(
                sql!("release_job"),
                args![
                    dispatch_id,
                    fence.execution_seq,
                    fence.lease_token.as_str(),
                    fence.env_id.as_str(),
                    fence.worker_id.as_str(),
                ],
            )
            .await?;
        Ok(released == 1)
    }

    async fn cancel_run(
        &self,
        env: &EnvId,
        id: &RunId,
        reason: &str,
    ) -> Result<CancelOutcome, StoreError> {
        let now = Ts::now();
        let mut tx = self.db.begin().await?;
        // The job row before the run row: the lock order every transaction keeps.
        let job: Option<JobRow> = tx
            .fetch_optional(sql!("lock_job"), args![id.as_str()])
            .await?;
        let locked: Option<String> = tx
            .scalar_optional(sql!("lock_run"), args![env.as_str(), id.as_str()])
            .await?;
        if locked.is_none() {
            return Ok(CancelOutcome::NotFound);
        }
        let mut contexts = run_contexts(&mut *tx, &[id.as_str()]).await?;
        let Some(context) = contexts.remove(id.as_str()) else {
            return Ok(CancelOutcome::NotFound);
        };
        let lane = job
            .as_ref()
            .map(JobRow::facts)
            .transpose()?
            .and_then(|j| j.lane);
        let Some(t) = cancel::cancel(
            &context.facts,
            context.event_id.as_ref(),
            lane.as_ref(),
            reason,
        ) else {
            let run = select_run(&mut *tx, env, id).await?;
            D::commit(tx).await?;
            return Ok(run.map_or(CancelOutcome::NotFound, CancelOutcome::AlreadyEnded));
        };
        let effects = apply(&mut *tx, vec![t], now).await?;
        notify_commit(&mut *tx, self.db.node_id(), &effects).await?;
        let run = select_run(&mut *tx, env, id)
            .await?
            .ok_or_else(|| StoreError::Internal("run vanished under lock".into()))?;
        D::commit(tx).await?;
        Ok(CancelOutcome::Cancelled(run))
    }

    async fn fire_timers(&self, limit: i64) -> Result<Effects, StoreError> {
        let now = Ts::now();
        let mut tx = self.db.begin().await?;
        let due: Vec<JobRow> = tx
            .fetch_all(sql!("lock_due_jobs"), args![now, limit])
            .await?;
        if due.is_empty() {
            return Ok(Effects::default());
        }
        let ids: Vec<&str> = due.iter().map(|j| j.run_id.as_str()).collect();
        let contexts = run_contexts(&mut *tx, &ids).await?;
        let mut transitions = Vec::new();
        for row in &due {
            let job = row.facts()?;
            let Some(action) = timer_action(&job, now) else {
                continue;
            };
            let Some(context) = contexts.get(&row.run_id) else {
                continue;
            };
            let run = &context.facts;
            let lane = job.lane.as_ref();
            transitions.push(match action {
                TimerAction::RunTimeout => run_timeout(run, lane),
                TimerAction::LeaseExpired => {
                    let policy = context.definition.as_ref().and_then(|d| d.retry.as_ref());
                    lease_expired(run, lane, policy, now)
                }
                TimerAction::ParkedDeadline => {
                    let waiting: Option<WaitingStep> = tx
                        .fetch_optional(sql!("waiting_step"), args![row.run_id.as_str()])
                        .await?;
                    let waiting = waiting
                        .as_ref()
                        .map(|w| (w.step_id.as_str(), w.step_type.as_str()));
                    parked_deadline(run, lane, waiting)
                }
            });
        }
        let mut effects = apply(&mut *tx, transitions, now).await?;
        notify_commit(&mut *tx, self.db.node_id(), &effects).await?;
        D::commit(tx).await?;
        if due.len() as i64 >= limit {
            // A full sweep: more may be due already, so the timer sweeps again at once.
            effects.schedule(Some(now));
        }
        Ok(effects)
    }

    async fn next_due(&self) -> Result<Option<Ts>, StoreError> {
        // One row; its value is NULL when nothing is scheduled.
        self.db
            .reader()
            .await?
            .scalar::<Option<Ts>>(sql!("next_due"), args![Ts::now()])
            .await
    }

    async fn register_worker(&self, w: &WorkerRegistration) -> Result<(), StoreError> {
        let functions = Value::from(w.function_ids.clone());
        self.db
            .writer()
            .await?
            .execute(
                sql!("upsert_worker"),
                args![
                    w.env_id.as_str(),
                    w.id.as_str(),
                    w.hostname.as_str(),
                    &functions,
                    w.max_concurrent,
                    &w.labels,
                    &w.version,
                    Ts::now(),
                ],
            )
            .await?;
        Ok(())
    }

    async fn heartbeat_worker(
        &self,
        env: &EnvId,
        worker: &str,
        dispatch_ids: &[String],
        lease_expires_at: Ts,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let mut tx = self.db.begin().await?;
        let touched = tx
            .execute(sql!("touch_worker"), args![env.as_str(), worker, Ts::now()])
            .await?;
        if touched == 0 {
            return Ok(None);
        }
        let mut renewed = Vec::new();
        if !dispatch_ids.is_empty() {
            let ids = Value::from(dispatch_ids.to_vec());
            renewed = tx
                .scalars(
                    sql!("renew_leases"),
                    args![env.as_str(), worker, &ids, lease_expires_at],
                )
                .await?;
        }
        D::commit(tx).await?;
        Ok(Some(renewed))
    }

    async fn worker_functions(
        &self,
        env: &EnvId,
        worker: &str,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let functions: Option<Json<Vec<String>>> = self
            .db
            .reader()
            .await?
            .scalar_optional(sql!("worker_functions"), args![env.as_str(), worker])
            .await?;
        Ok(functions.map(|f| f.0))
    }

    async fn list_workers(&self, env: &EnvId) -> Result<Vec<WorkerRecord>, StoreError> {
        let rows: Vec<WorkerRow> = self
            .db
            .reader()
            .await?
            .fetch_all(sql!("list_workers"), args![env.as_str()])
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| WorkerRecord {
                id: r.id,
                hostname: r.hostname,
                function_ids: r.function_ids.0,
                max_concurrent: r.max_concurrent,
                labels: r.labels.0,
                version: r.version.0,
                registered_at: r.registered_at,
                last_heartbeat_at: r.last_heartbeat_at,
            })
            .collect())
    }
}
