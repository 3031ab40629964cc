//! Push mode: the dispatcher that claims push functions' jobs, POSTs each to the function's
//! endpoint (signed), and turns the answer into the same report a pull worker sends (one
//! engine, two transports); plus the circuit breakers that stop requests to failing endpoints.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::domain::breaker::{
    BreakerSettings, BreakerState, Permit, Transition, breaker_key, parse_breaker_key,
};
use crate::domain::function::{ExecutionMode, FunctionDefinition};
use crate::domain::job::{Fence, JobFailure, JobReport, ReportOutcome};
use crate::domain::time::Ts;
use crate::ids::{EnvId, FunctionId};
use crate::store::execution::{ClaimRequest, ClaimedJob};
use crate::store::push::{BreakerRecord, BreakerRef};

use super::{Engine, EngineError, KvBackend};

/// The NATS KV bucket that mirrors every breaker's state when `--nats-url` is given.
pub const BREAKERS_BUCKET: &str = "SYS_circuit_breakers";

/// Tunables of push delivery.
#[derive(Clone)]
pub struct PushOptions {
    /// Signs every request (`X-Ironflow-Signature`); without it requests go unsigned.
    pub signing_key: Option<String>,
    /// The longest one request may take (connect, send, the handler's run, the answer).
    pub request_timeout: Duration,
    /// Requests in flight per endpoint URL on this node.
    pub max_in_flight_per_endpoint: usize,
    /// Server-wide breaker settings; a function's `circuitBreaker` may override them.
    pub breaker: BreakerSettings,
}

impl std::fmt::Debug for PushOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushOptions")
            .field(
                "signing_key",
                &self.signing_key.as_ref().map(|_| "<redacted>"),
            )
            .field("request_timeout", &self.request_timeout)
            .field(
                "max_in_flight_per_endpoint",
                &self.max_in_flight_per_endpoint,
            )
            .field("breaker", &self.breaker)
            .finish()
    }
}

impl Default for PushOptions {
    fn default() -> Self {
        Self {
            signing_key: None,
            request_timeout: Duration::from_secs(30),
            max_in_flight_per_endpoint: 16,
            breaker: BreakerSettings::default(),
        }
    }
}

/// The error code of an attempt the endpoint did not answer with a result.
pub const PUSH_ERROR_CODE: &str = "PUSH_ENDPOINT_ERROR";
/// Push functions with due work looked at per pass.
const DUE_FUNCTIONS_PER_PASS: i64 = 1000;
/// The dispatcher looks for due work at least this often even without a wakeup.
const SAFETY_SWEEP: Duration = Duration::from_secs(5);

struct Dispatcher {
    engine: Engine,
    client: reqwest::Client,
    /// Bounds requests in flight per endpoint URL.
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// A request finished: capacity freed, look again.
    finished: Notify,
    worker_id: String,
    /// Per endpoint, the function whose jobs were claimed last (whose turn it is not).
    turns: Mutex<HashMap<String, (EnvId, FunctionId)>>,
    /// Requests in flight; shutdown waits for them so a result the endpoint already
    /// produced is reported, not sent again after the lease.
    deliveries: TaskTracker,
}

impl Dispatcher {
    fn slots_for(&self, endpoint: &str) -> Arc<Semaphore> {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slots
            .entry(endpoint.to_owned())
            .or_insert_with(|| {
                Arc::new(Semaphore::new(
                    self.engine.options().push.max_in_flight_per_endpoint.max(1),
                ))
            })
            .clone()
    }

    /// The largest answer accepted from an endpoint: four times the largest event payload
    /// (an answer carries the step outputs of one invocation).
    fn max_answer_bytes(&self) -> usize {
        self.engine
            .options()
            .max_payload_bytes
            .saturating_mul(4)
            .max(1 << 20)
    }

    fn lease_expiry(&self) -> Ts {
        let o = self.engine.options();
        Ts::now().plus(
            o.lease_ttl
                .max(o.push.request_timeout + Duration::from_secs(10)),
        )
    }

    /// One pass: claims what may be sent now and starts the requests. Returns when a blocked
    /// breaker next half-opens, if any. Functions that share an endpoint (ironflow-py's
    /// `serve` has one URL for all of an app's functions) take turns: a pass starts after the
    /// function served last, and each takes a fair share of the endpoint's free slots.
    async fn dispatch_once(self: &Arc<Self>) -> Result<Option<Ts>, EngineError> {
        let mut due = self
            .engine
            .store()
            .push_due_functions(Ts::now(), DUE_FUNCTIONS_PER_PASS)
            .await?;
        {
            // Round robin per endpoint: the functions after the one served last come first.
            let turns = self
                .turns
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            due.sort_by_cached_key(|d| {
                let waited = turns
                    .get(&d.definition.endpoint_url)
                    .is_none_or(|last| (&d.env_id, &d.function_id) > (&last.0, &last.1));
                !waited
            });
        }
        let mut sharing: HashMap<String, usize> = HashMap::new();
        for d in &due {
            *sharing
                .entry(d.definition.endpoint_url.clone())
                .or_default() += 1;
        }
        let mut next: Option<Ts> = None;
        for due_function in due {
            let (env, function, definition) = (
                due_function.env_id,
                due_function.function_id,
                due_function.definition,
            );
            let endpoint = definition.endpoint_url.clone();
            let Some(remaining) = sharing.get_mut(&endpoint) else {
                continue;
            };
            let share_among = *remaining;
            *remaining = remaining.saturating_sub(1);
            if endpoint.is_empty() {
                continue;
            }
            // One function's failure (say, a database hiccup) must not stall the others.
            match self
                .dispatch_function(&env, &function, definition, share_among)
                .await
            {
                Ok(Some(until)) => next = Some(next.map_or(until, |n| n.min(until))),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, function = %function, "push dispatch failed");
                }
            }
        }
        Ok(next)
    }

    /// Claims and starts up to a `1 / share_among` share of the endpoint's free slots for one
    /// function; returns when its breaker next half-opens if it is blocked.
    async fn dispatch_function(
        self: &Arc<Self>,
        env: &EnvId,
        function: &FunctionId,
        definition: FunctionDefinition,
        share_among: usize,
    ) -> Result<Option<Ts>, EngineError> {
        let store = self.engine.store();
        let endpoint = definition.endpoint_url.as_str();
        let slots = self.slots_for(endpoint);
        let free = slots.available_permits();
        if free == 0 {
            return Ok(None); // `finished` wakes us when a request ends
        }
        let at = BreakerRef {
            env,
            function,
            endpoint,
        };
        let probe_for = self.engine.options().push.request_timeout + Duration::from_secs(5);
        let permit = store.breaker_permit(at, probe_for).await?;
        let probe = permit == Permit::Probe;
        let want = match permit {
            Permit::Flow => free.div_ceil(share_among.max(1)),
            Permit::Probe => {
                tracing::info!(function = %function, endpoint, "circuit breaker half-open: sending one probe");
                self.engine.mirror_breaker(at).await;
                1
            }
            Permit::Blocked { until } => return Ok(Some(until)),
        };
        let mut permits = Vec::with_capacity(want);
        while permits.len() < want {
            match slots.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        let request = ClaimRequest {
            env_id: env.clone(),
            worker_id: self.worker_id.clone(),
            function_ids: vec![function.to_string()],
            limit: permits.len() as i64,
            lease_expires_at: self.lease_expiry(),
            mode: ExecutionMode::Push,
        };
        let claim = store.claim_jobs(&request).await?;
        self.engine.bus().publish(&claim.effects);
        let mut jobs = claim.jobs;
        super::observability::observe_dispatch(env, &mut jobs, Ts::now());
        if !jobs.is_empty() {
            self.turns
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(endpoint.to_owned(), (env.clone(), function.clone()));
        }
        for (mut job, permit) in jobs.into_iter().zip(permits) {
            job.secrets = self
                .engine
                .secrets_for_run(env, job.definition.as_ref())
                .await;
            let me = self.clone();
            let definition = definition.clone();
            self.deliveries
                .spawn(async move { me.deliver(job, definition, permit, probe).await });
        }
        Ok(None)
    }

    /// Sends one job, records the breaker outcome, then reports like a pull worker would.
    async fn deliver(
        self: Arc<Self>,
        job: ClaimedJob,
        definition: FunctionDefinition,
        permit: OwnedSemaphorePermit,
        probe: bool,
    ) {
        self.deliver_once(job, &definition, probe).await;
        drop(permit);
        self.finished.notify_one();
    }

    async fn deliver_once(&self, job: ClaimedJob, definition: &FunctionDefinition, probe: bool) {
        let endpoint = definition.endpoint_url.as_str();
        let env = job.run.env_id.clone();
        let function = job.run.function_id.clone();
        let at = BreakerRef {
            env: &env,
            function: &function,
            endpoint,
        };
        let fence = Fence {
            env_id: env.clone(),
            worker_id: self.worker_id.clone(),
            execution_seq: job.execution_seq,
            lease_token: job.lease_token.clone(),
        };
        // Another request (here or on another node) may have opened the breaker since this
        // job was claimed: then it goes back to the queue unsent, using no attempt.
        if !probe {
            match self.engine.store().breaker_get(at).await {
                Ok(Some(r)) if r.breaker.state != BreakerState::Closed => {
                    if let Err(e) = self
                        .engine
                        .store()
                        .release_job(&job.dispatch_id, &fence)
                        .await
                    {
                        tracing::warn!(error = %e, "releasing a push job failed; its lease will expire");
                    }
                    return;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "reading a circuit breaker failed"),
            }
        }
        let answer = self.post(&job, endpoint).await;
        metrics::counter!("ironflow_push_requests_total", "outcome" => if answer.is_ok() { "ok" } else { "failed" }).increment(1);
        let settings = self
            .engine
            .options()
            .push
            .breaker
            .for_function(definition.circuit_breaker.as_ref());
        // The breaker first: a failed attempt's retry must not slip past a breaker it opens.
        let error = answer.as_ref().err().map(String::as_str);
        match self
            .engine
            .store()
            .breaker_record(at, answer.is_ok(), error, settings)
            .await
        {
            Ok(Some(Transition::Opened)) => {
                tracing::warn!(function = %function, endpoint, "circuit breaker opened");
                self.engine.bus().history_appended();
                self.engine.mirror_breaker(at).await;
            }
            Ok(Some(Transition::Closed)) => {
                tracing::info!(function = %function, endpoint, "circuit breaker closed");
                self.engine.bus().work_ready();
                self.engine.bus().history_appended();
                self.engine.mirror_breaker(at).await;
            }
            Ok(Some(_)) => {
                self.engine.bus().history_appended();
                self.engine.mirror_breaker(at).await;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "recording a circuit breaker outcome failed"),
        }
        let (steps, outcome) = match answer {
            Ok(result) => result,
            Err(message) => {
                tracing::debug!(function = %function, endpoint, %message, "push attempt failed");
                (
                    Vec::new(),
                    ReportOutcome::Failed(JobFailure {
                        message,
                        code: PUSH_ERROR_CODE.into(),
                        retryable: true,
                        retry_after_ms: None,
                    }),
                )
            }
        };
        let report = JobReport {
            dispatch_id: job.dispatch_id.clone(),
            fence,
            steps,
            step_offset: job.step_sequence_base,
            outcome,
        };
        match self.engine.report_job(&report).await {
            Ok(()) | Err(EngineError::StaleExecution | EngineError::PausedAtBoundary) => {}
            Err(e) => {
                tracing::warn!(error = %e, run = %job.run.id, "applying a push result failed; the lease will expire and it is sent again");
            }
        }
    }

    /// POSTs the job; `Ok` with the parsed result for a 200 carrying one, `Err` naming what
    /// went wrong otherwise (a transport failure).
    async fn post(
        &self,
        job: &ClaimedJob,
        endpoint: &str,
    ) -> Result<(Vec<crate::domain::job::ReportedStep>, ReportOutcome), String> {
        let body = serde_json::to_vec(&push_request(job)).map_err(|e| e.to_string())?;
        let mut request = self
            .client
            .post(endpoint)
            .header(http::header::CONTENT_TYPE, "application/json")
            .timeout(self.engine.options().push.request_timeout);
        // The push request is a span of the dispatch; the endpoint continues the trace.
        let span = if crate::telemetry::enabled() {
            let span = tracing::debug_span!(target: crate::telemetry::TARGET, "ironflow.push", endpoint, run_id = job.run.id.as_str());
            crate::telemetry::set_parent(&span, job.trace.as_deref());
            if let Some(tp) = crate::telemetry::traceparent_of(&span) {
                request = request.header("traceparent", tp);
            }
            span
        } else {
            tracing::Span::none()
        };
        if let Some(key) = self
            .engine
            .options()
            .push
            .signing_key
            .as_deref()
            .filter(|k| !k.is_empty())
        {
            let ts = chrono::Utc::now().timestamp();
            request = request.header(
                "X-Ironflow-Signature",
                crate::domain::signature::sign(&body, key, ts),
            );
        }
        let response = request
            .body(body)
            .send()
            .instrument(span)
            .await
            .map_err(|e| format!("push request to {endpoint} failed: {}", error_chain(&e)))?;
        let status = response.status();
        let bytes = read_answer(response, self.max_answer_bytes())
            .await
            .map_err(|e| format!("reading the answer of {endpoint} failed: {e}"))?;
        if status != reqwest::StatusCode::OK {
            let text = String::from_utf8_lossy(&bytes);
            let text: String = text.chars().take(300).collect();
            return Err(format!(
                "{endpoint} answered HTTP {}: {text}",
                status.as_u16()
            ));
        }
        let (steps, outcome) = crate::domain::job_wire::parse_push_response(&bytes)
            .map_err(|e| format!("{endpoint} answered 200 without a valid result: {e}"))?;
        crate::domain::job::check_result_storable(&steps, &outcome)
            .map_err(|e| format!("{endpoint} answered a result that cannot be stored: {e}"))?;
        Ok((steps, outcome))
    }
}

/// Reads a response body, refusing one larger than `limit` bytes before buffering it all.
async fn read_answer(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    let too_large = || format!("the answer is larger than {limit} bytes");
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| error_chain(&e))? {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The request body ironflow-py's `serve` reads: the run, its event, the memoized steps (a
/// failed invoke's error as a JSON string, as push sends it) and the declared secrets.
pub fn push_request(job: &ClaimedJob) -> Value {
    let run = &job.run;
    let steps: Vec<Value> = job
        .completed_steps
        .iter()
        .map(|s| {
            let mut step =
                json!({"id": s.step_id, "name": s.name, "output": s.output, "status": s.status});
            if let Some(error) = &s.error {
                step["error"] = Value::String(error.to_string());
            }
            step
        })
        .collect();
    let on_exhausted = job.on_exhausted();
    let mut request = json!({
        "run_id": run.id,
        "function_id": run.function_id,
        "attempt": run.attempt.max(1),
        "max_attempts": run.max_attempts,
        "on_exhausted": on_exhausted,
        "event": job.event_json(),
        "steps": steps,
        "secrets": job.secrets,
    });
    if job.trace.is_some() {
        request["context"] = job.trace_json();
    }
    request
}

/// Whether any push function exists, so that a server with none (the common case) does not
/// look for push work on every commit. "None" is believed for `PUSH_RECHECK` at most, or until
/// this node registers a push function; once one exists, every wakeup looks for work.
#[derive(Default)]
struct PushFunctions {
    none_since: Option<std::time::Instant>,
}

/// How long "no push function" is believed (a push function registered on another node waits
/// at most this long, plus a wakeup, for its first delivery).
const PUSH_RECHECK: Duration = Duration::from_secs(1);

impl PushFunctions {
    async fn any(&mut self, engine: &Engine) -> bool {
        let registered_here = engine.take_push_registered();
        if let Some(since) = self.none_since
            && since.elapsed() < PUSH_RECHECK
            && !registered_here
        {
            return false;
        }
        match engine.store().push_functions_exist().await {
            Ok(true) => {
                self.none_since = None;
                true
            }
            Ok(false) => {
                self.none_since = Some(std::time::Instant::now());
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "looking for push functions failed");
                true
            }
        }
    }
}

impl Engine {
    /// Delivers push functions' jobs until shutdown: woken by new work (this node or, over
    /// NOTIFY, others), by finished requests, and when an open breaker's window ends.
    pub(crate) async fn run_push_dispatcher(&self) {
        let client = match reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(90))
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("ironflow/", env!("CARGO_PKG_VERSION")))
            // A redirect would re-send the body (with the run's secrets) to another host, or
            // turn the POST into a GET.
            .redirect(reqwest::redirect::Policy::none())
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the push HTTP client; push mode is off");
                return;
            }
        };
        let dispatcher = Arc::new(Dispatcher {
            engine: self.clone(),
            client,
            slots: Mutex::new(HashMap::new()),
            finished: Notify::new(),
            worker_id: format!("push:{}", uuid::Uuid::new_v4().simple()),
            turns: Mutex::new(HashMap::new()),
            deliveries: TaskTracker::new(),
        });
        let work = self.bus().work();
        let mut push_functions = PushFunctions::default();
        loop {
            // Register for wakeups before looking, so a commit in between is not missed.
            let woken = work.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if !push_functions.any(self).await {
                tokio::select! {
                    () = &mut woken => {}
                    () = tokio::time::sleep(SAFETY_SWEEP) => {}
                    () = self.shutdown_token().cancelled() => break,
                }
                continue;
            }
            let next = match dispatcher.dispatch_once().await {
                Ok(next) => next,
                Err(e) => {
                    tracing::warn!(error = %e, "push dispatch failed");
                    None
                }
            };
            // An instant that passed while it was being read is due now, not in a sweep's time.
            let pause = next.map_or(SAFETY_SWEEP, |t| {
                (t.0 - chrono::Utc::now())
                    .to_std()
                    .unwrap_or(Duration::ZERO)
                    .min(SAFETY_SWEEP)
            });
            tokio::select! {
                () = &mut woken => {}
                () = dispatcher.finished.notified() => {}
                () = tokio::time::sleep(pause) => {}
                () = self.shutdown_token().cancelled() => break,
            }
        }
        // Requests already sent finish (each is bounded by the request timeout) and their
        // results are reported before the store closes.
        dispatcher.deliveries.close();
        dispatcher.deliveries.wait().await;
    }

    /// The environment's circuit breakers.
    pub async fn list_breakers(&self, env: &EnvId) -> Result<Vec<BreakerRecord>, EngineError> {
        Ok(self.store().breaker_list(env).await?)
    }

    /// Closes a breaker by its key (`<function id>|<endpoint URL>`); the runs that waited go.
    pub async fn reset_breaker(
        &self,
        env: &EnvId,
        key: &str,
    ) -> Result<BreakerRecord, EngineError> {
        let (function, endpoint) = parse_breaker_key(key).map_err(EngineError::InvalidArgument)?;
        let function = FunctionId::parse(&function)
            .map_err(|e| EngineError::InvalidArgument(e.to_string()))?;
        let at = BreakerRef {
            env,
            function: &function,
            endpoint: &endpoint,
        };
        let record = self
            .store()
            .breaker_reset(at)
            .await?
            .ok_or_else(|| EngineError::not_found("circuit breaker", key))?;
        self.bus().work_ready();
        self.bus().history_appended();
        self.mirror_breaker_record(&record).await;
        Ok(record)
    }

    /// With NATS, copies the breaker's current state into [`BREAKERS_BUCKET`] (where NATS
    /// tools can read and watch it). The database row stays the authority: the copy is
    /// written after the transition commits, and a failed write is logged, not fatal.
    async fn mirror_breaker(&self, at: BreakerRef<'_>) {
        if !matches!(self.options().kv, KvBackend::Nats(_)) {
            return;
        }
        match self.store().breaker_get(at).await {
            Ok(Some(record)) => self.mirror_breaker_record(&record).await,
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "reading a circuit breaker to mirror it failed"),
        }
    }

    async fn mirror_breaker_record(&self, record: &BreakerRecord) {
        let KvBackend::Nats(nats) = &self.options().kv else {
            return;
        };
        let key = breaker_mirror_key(record);
        let value = breaker_document(record).to_string().into_bytes();
        if let Err(e) = nats.put_system(BREAKERS_BUCKET, &key, value).await {
            tracing::warn!(error = %e, key, "mirroring a circuit breaker to NATS failed");
        }
    }
}

/// A breaker as the API and the NATS mirror show it (ironflow-py's `BreakerState`).
pub fn breaker_document(r: &BreakerRecord) -> Value {
    let mut v = json!({
        "key": breaker_key(r.function_id.as_str(), &r.endpoint),
        "function_id": r.function_id,
        "endpoint": r.endpoint,
        "environment_id": r.env_id,
        "state": r.breaker.state.as_str(),
        "consecutive_fails": r.breaker.consecutive_fails,
        "updated_at": r.updated_at.to_rfc3339(),
    });
    if let Some(t) = r.breaker.last_failure_at {
        v["last_failure"] = json!(t.to_rfc3339());
    }
    if let Some(e) = &r.breaker.last_error {
        v["last_error"] = json!(e);
    }
    if let Some(t) = r.breaker.open_until {
        v["open_until"] = json!(t.to_rfc3339());
    }
    v
}

/// The breaker's key in [`BREAKERS_BUCKET`]: `<environment id>.<base64url of the breaker key>`,
/// unpadded
/// (NATS keys allow neither `|` nor most URL characters).
pub fn breaker_mirror_key(r: &BreakerRecord) -> String {
    use base64::Engine as _;
    let key = breaker_key(r.function_id.as_str(), &r.endpoint);
    let env: String = r
        .env_id
        .as_str()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    format!(
        "{env}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
    )
}
