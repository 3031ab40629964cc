//! [`Ctx`]: what a handler knows about its job (run, attempt, event, secrets) and the durable
//! steps — `run`, `sleep`, `wait_for_event`, `invoke`, `publish` — with their step ids, memo
//! lookups and the messages they send on the worker stream. `parallel` lives in
//! `parallel.rs`, `compensate` in `compensate.rs`.
//!
//! # How a step that waits ends the invocation
//!
//! A step that has to wait on the server (`sleep`, `wait_for_event`, `invoke`, `invoke_async`)
//! sends `step_yielded`, waits for its `step_ack`, then marks the invocation as ended and returns a
//! future that never resolves. The invocation's runner watches that mark and drops the
//! handler's future, so no handler code after the `.await` runs in this invocation (locals are
//! dropped as usual). The server resumes the run later with a new assignment whose memo holds
//! the step as completed, and the replayed handler gets past the `.await` at once.
//!
//! This was preferred over an error variant (`FnError::Yielded`) that the handler has to pass
//! up with `?`: an error can be matched, logged, mapped or swallowed by user code, which would
//! then go on running after the job was handed back. A future that never resolves cannot be
//! misused that way. The same mechanism ends an invocation whose fence went stale (the run was
//! cancelled or re-dispatched) or whose stream broke.
//!
//! Inside a `parallel` branch a waiting step does not hand the job back itself: it parks the
//! branch and lets the other started branches finish (their steps are committed), and the
//! parallel step then hands the job back with the first parked branch's wait.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::client::{Client, Published};
use crate::compensate::Undo;
use crate::error::{FnError, SdkError};
use crate::invocation::{Ended, Ending};
use crate::link::{Commit, Link};
use crate::parallel::Group;
use crate::proto::v1 as pb;
use crate::wire;
use pb::step_yielded::YieldInfo;
use pb::worker_message::Payload;

/// Waits for an event named `event` (`ctx.wait_for_event`).
///
/// With `match_path` (`data.order_id`) only an event whose value at that path equals the
/// triggering event's value at the same path matches; `match_value` compares with an explicit
/// value instead. When `timeout` passes first, the server fails the run with `WAIT_TIMEOUT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitForEvent {
    pub event: String,
    pub match_path: Option<String>,
    pub match_value: Option<String>,
    /// `None`: the server's default (7 days).
    pub timeout: Option<Duration>,
}

impl WaitForEvent {
    pub fn new(event: impl Into<String>) -> Self {
        Self {
            event: event.into(),
            match_path: None,
            match_value: None,
            timeout: None,
        }
    }

    #[must_use]
    pub fn match_path(mut self, path: impl Into<String>) -> Self {
        self.match_path = Some(path.into());
        self
    }

    #[must_use]
    pub fn match_value(mut self, value: impl Into<String>) -> Self {
        self.match_value = Some(value.into());
        self
    }

    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// Starts a run of another function (`ctx.invoke`, `ctx.invoke_async`) with `input` as its
/// event data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoke<I> {
    pub function_id: String,
    pub input: I,
    /// How long `ctx.invoke` waits for the child; `None`: the server's default (30 s). The
    /// parent's step fails (non-retryable) when it passes. Ignored by `invoke_async`.
    pub timeout: Option<Duration>,
}

impl<I: Serialize> Invoke<I> {
    pub fn new(function_id: impl Into<String>, input: I) -> Self {
        Self {
            function_id: function_id.into(),
            input,
            timeout: None,
        }
    }

    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    fn input_json(&self) -> Result<Vec<u8>, FnError> {
        serde_json::to_vec(&self.input).map_err(|e| {
            FnError::non_retryable(format!("the invoke input is not serializable: {e}"))
                .code("INVALID_INPUT")
        })
    }
}

/// What a waiting step hands the job back with (`step_yielded`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Wait {
    pub(crate) step_id: String,
    pub(crate) info: YieldInfo,
}

/// A step of an earlier dispatch, as the assignment's memo carries it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MemoStep {
    pub(crate) status: String,
    pub(crate) output: Value,
    pub(crate) error: Value,
}

/// One job as the server assigned it, decoded once.
pub(crate) struct Job {
    pub(crate) job_id: String,
    /// The fence every report carries.
    pub(crate) execution_seq: i64,
    pub(crate) lease_token: String,
    pub(crate) run_id: String,
    pub(crate) function_id: String,
    pub(crate) attempt: u32,
    pub(crate) max_attempts: u32,
    /// What the server does once the attempts are used up: `fail` or `pause`.
    pub(crate) on_exhausted: String,
    pub(crate) event: Value,
    pub(crate) secrets: HashMap<String, String>,
    /// Completed (or failed for good) steps of earlier dispatches, by step id.
    pub(crate) memo: HashMap<String, MemoStep>,
}

impl Job {
    pub(crate) fn from_assignment(a: pb::JobAssignment) -> Self {
        let event = a.event.as_ref().map_or(Value::Null, wire::event_json);
        let memo = a
            .completed_steps
            .into_iter()
            .map(|s| {
                let error = if s.error_json.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&s.error_json).unwrap_or(Value::Null)
                };
                let step = MemoStep {
                    status: if s.status.is_empty() {
                        "completed".into()
                    } else {
                        s.status
                    },
                    output: wire::payload(s.output.as_ref(), s.output_value.as_ref()),
                    error,
                };
                (s.step_id, step)
            })
            .collect();
        Self {
            job_id: a.job_id,
            execution_seq: a.execution_seq,
            lease_token: a.lease_token,
            run_id: a.run_id,
            function_id: a.function_id,
            attempt: u32::try_from(a.attempt).unwrap_or(1).max(1),
            max_attempts: u32::try_from(a.max_attempts).unwrap_or(0),
            on_exhausted: a.on_exhausted,
            event,
            secrets: a
                .context
                .map(|c| c.secrets.into_iter().collect())
                .unwrap_or_default(),
            memo,
        }
    }

    pub(crate) fn job_id(&self) -> &str {
        &self.job_id
    }
}

/// A handler's view of its job, and the durable steps. Cheap to clone; every clone is the same
/// invocation (step numbering is shared). A `parallel` branch gets its own `Ctx`, whose step
/// ids are scoped to the branch.
#[derive(Clone)]
pub struct Ctx {
    inner: Arc<Inner>,
    scope: Arc<Scope>,
}

struct Inner {
    job: Job,
    /// Set once a message that ends the job (yield, result) is on its way: later steps must
    /// not report anything.
    final_sent: AtomicBool,
    /// Set while the compensations run: a step that would hand the job back fails instead.
    compensating: AtomicBool,
    /// Undos registered with `compensate`, in registration order.
    compensations: Mutex<Vec<(String, Undo)>>,
    link: Arc<Link>,
    ending: Arc<Ending>,
    /// For `publish` (a REST call to the same server).
    client: Client,
}

/// Where step ids are numbered: the run itself, or one branch of a `parallel` step.
struct Scope {
    /// `<run id>`, or `<parent prefix>:<parallel name>:<branch index>`.
    prefix: String,
    /// How many steps of each name this scope has started: the `n` in step ids.
    counters: Mutex<HashMap<String, u32>>,
    /// The `parallel` names used in this scope: a name used twice would reuse step ids.
    parallels: Mutex<HashSet<String>>,
    /// Set in a `parallel` branch: a waiting step parks here instead of handing the job back.
    branch: Option<(usize, Arc<Group>)>,
}

impl Scope {
    fn new(prefix: String, branch: Option<(usize, Arc<Group>)>) -> Self {
        Self {
            prefix,
            counters: Mutex::new(HashMap::new()),
            parallels: Mutex::new(HashSet::new()),
            branch,
        }
    }
}

/// The step-name prefixes whose colon is kept as is when a name is escaped (the other SDKs
/// build the same ids).
const NAMESPACES: [&str; 2] = ["compensate:", "publish:"];

/// Escapes one segment of a step id, so that a name holding `:` cannot collide with a scoped
/// id: `\` becomes `\\` and `:` becomes `\:`, except after a namespace prefix.
pub(crate) fn escape_step_part(part: &str) -> String {
    let raw = |p: &str| p.replace('\\', "\\\\").replace(':', "\\:");
    for ns in NAMESPACES {
        if let Some(rest) = part.strip_prefix(ns) {
            return format!("{ns}{}", raw(rest));
        }
    }
    raw(part)
}

impl fmt::Debug for Ctx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ctx")
            .field("run_id", &self.inner.job.run_id)
            .field("function_id", &self.inner.job.function_id)
            .field("attempt", &self.inner.job.attempt)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing holding these locks can panic half-way through an update.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The idempotency key of a publish step: hashed, because a raw step id can pass the server's
/// key length limit or hold whitespace.
fn publish_key(step_id: &str) -> String {
    use sha2::Digest;
    format!(
        "step-{}",
        hex::encode(sha2::Sha256::digest(step_id.as_bytes()))
    )
}

/// A failed publish call as the step's error: transient failures are retried with the run.
fn publish_error(topic: &str, e: &SdkError) -> FnError {
    let message = format!("publish to '{topic}' failed: {e}");
    if e.is_transient() {
        FnError::retryable(message).code("PUBLISH_FAILED")
    } else {
        FnError::non_retryable(message).code("PUBLISH_FAILED")
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

fn duration_ms(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

fn decode<T: DeserializeOwned>(step_id: &str, output: &Value) -> Result<T, FnError> {
    T::deserialize(output).map_err(|e| {
        FnError::non_retryable(format!(
            "step {step_id}: the stored output does not fit the step's type: {e}"
        ))
        .code("MEMO_MISMATCH")
    })
}

/// What the memo says about a step.
enum Memo<'a> {
    /// Not run yet (or left unfinished): run it.
    Absent,
    Completed(&'a Value),
    Failed(Value),
}

impl Ctx {
    pub(crate) fn new(job: Job, link: Arc<Link>, ending: Arc<Ending>, client: Client) -> Self {
        let scope = Scope::new(job.run_id.clone(), None);
        Self {
            inner: Arc::new(Inner {
                job,
                final_sent: AtomicBool::new(false),
                compensating: AtomicBool::new(false),
                compensations: Mutex::new(Vec::new()),
                link,
                ending,
                client,
            }),
            scope: Arc::new(scope),
        }
    }

    /// The same invocation, numbering its steps under `prefix` and parking its waits in
    /// `group` (a `parallel` branch).
    pub(crate) fn branch(&self, prefix: String, index: usize, group: Arc<Group>) -> Self {
        Self {
            inner: self.inner.clone(),
            scope: Arc::new(Scope::new(prefix, Some((index, group)))),
        }
    }

    /// The same invocation with a fresh root scope (step numbering from 0), for the
    /// compensations.
    pub(crate) fn root(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            scope: Arc::new(Scope::new(self.inner.job.run_id.clone(), None)),
        }
    }

    /// `<scope>:<escaped name>`, the prefix of a `parallel` step's branches; refuses a name this
    /// scope already used.
    pub(crate) fn parallel_prefix(&self, name: &str) -> Result<String, FnError> {
        if name.is_empty() {
            return Err(FnError::non_retryable("a parallel step needs a name").code("INVALID_STEP"));
        }
        let fresh = lock(&self.scope.parallels).insert(name.to_owned());
        if !fresh {
            return Err(FnError::non_retryable(format!(
                "parallel step '{name}' is used twice: its branches would share step ids"
            ))
            .code("INVALID_STEP"));
        }
        Ok(format!("{}:{}", self.scope.prefix, escape_step_part(name)))
    }

    pub fn run_id(&self) -> &str {
        &self.inner.job.run_id
    }

    pub fn function_id(&self) -> &str {
        &self.inner.job.function_id
    }

    /// This attempt's number, from 1.
    pub fn attempt(&self) -> u32 {
        self.inner.job.attempt
    }

    /// How many attempts the run has in all (0 when the server did not say).
    pub fn max_attempts(&self) -> u32 {
        self.inner.job.max_attempts
    }

    /// The triggering event: `{id, name, data, timestamp, ...}`; for an invoked run, a
    /// synthetic `ironflow/function.invoked` event whose `data` is the input.
    pub fn event(&self) -> &Value {
        &self.inner.job.event
    }

    /// A secret the function declared (`Function::secrets`), injected by the server.
    pub fn secret(&self, name: &str) -> Option<&str> {
        self.inner.job.secrets.get(name).map(String::as_str)
    }

    pub(crate) fn job(&self) -> &Job {
        &self.inner.job
    }

    pub(crate) fn link(&self) -> &Arc<Link> {
        &self.inner.link
    }

    pub(crate) fn ending(&self) -> &Arc<Ending> {
        &self.inner.ending
    }

    pub(crate) fn compensations(&self) -> &Mutex<Vec<(String, Undo)>> {
        &self.inner.compensations
    }

    pub(crate) fn set_compensating(&self, on: bool) {
        self.inner.compensating.store(on, Ordering::Release);
    }

    /// Whether a failure ends the run for good (so its compensations must run now): a
    /// non-retryable one always; a retryable one on the last attempt, unless the function
    /// pauses exhausted runs (they keep their steps for a resume).
    pub(crate) fn failure_is_final(&self, retryable: bool) -> bool {
        let job = &self.inner.job;
        !retryable
            || (job.on_exhausted != "pause"
                && job.max_attempts > 0
                && job.attempt >= job.max_attempts)
    }

    /// Claims the right to send the job's one final message; false when another step already
    /// did.
    pub(crate) fn claim_final(&self) -> bool {
        !self.inner.final_sent.swap(true, Ordering::AcqRel)
    }

    /// `<scope>:<escaped name>:<n>`, `n` counting the earlier steps of that name in this scope
    /// (the scope is the run id, or a `parallel` branch). Taken when the step method is called
    /// (not when its future is first polled), so steps started together (`join!`) are numbered
    /// in call order.
    pub(crate) fn next_step_id(&self, name: &str) -> String {
        let mut counters = lock(&self.scope.counters);
        let n = counters.entry(name.to_owned()).or_insert(0);
        let id = format!("{}:{}:{n}", self.scope.prefix, escape_step_part(name));
        *n += 1;
        id
    }

    fn memo(&self, step_id: &str) -> Memo<'_> {
        match self.inner.job.memo.get(step_id) {
            Some(s) if s.status == "completed" => Memo::Completed(&s.output),
            Some(s) if s.status == "failed" || s.status == "timed_out" => {
                Memo::Failed(s.error.clone())
            }
            _ => Memo::Absent,
        }
    }

    /// Ends this invocation and never resolves (see the module docs).
    async fn end(&self, why: Ended) -> FnError {
        self.inner.ending.end(why);
        std::future::pending().await
    }

    /// Reports a finished `run` step (`step_completed` / `step_failed`) and waits until it is
    /// durable.
    async fn commit_step(&self, step_id: String, report: Payload) -> Result<(), FnError> {
        if self.inner.final_sent.load(Ordering::Acquire) {
            // The job already ended (another step yielded): nothing may be reported after it.
            return Err(self.end(Ended::Yielded).await);
        }
        let answer = self.inner.link.request(step_id, report).await;
        match answer {
            Ok(Commit::Ok) => Ok(()),
            Ok(Commit::Stale) => Err(self.end(Ended::Stale).await),
            Ok(Commit::Refused(message)) => Err(FnError::retryable(format!(
                "the server did not commit the step: {message}"
            ))
            .code("STEP_NOT_COMMITTED")),
            Err(_) => Err(self.end(Ended::Abandoned).await),
        }
    }

    /// Whether the memo holds `step_id` as completed.
    pub(crate) fn is_completed(&self, step_id: &str) -> bool {
        matches!(self.memo(step_id), Memo::Completed(_))
    }

    /// Hands the job back to the server until `step` can go on. Never returns, except with
    /// the error of a refused yield (or of a wait inside a compensation). In a `parallel`
    /// branch, parks the branch instead (see the module docs).
    pub(crate) async fn suspend(&self, step: Wait) -> FnError {
        if self.inner.compensating.load(Ordering::Acquire) {
            return FnError::non_retryable(
                "compensations cannot wait (sleep, wait_for_event, invoke)",
            )
            .code("COMPENSATION_WAIT");
        }
        if let Some((index, group)) = &self.scope.branch {
            group.park(*index, step);
            return std::future::pending().await;
        }
        if !self.claim_final() {
            return self.end(Ended::Yielded).await;
        }
        let job = &self.inner.job;
        let yielded = Payload::StepYielded(pb::StepYielded {
            job_id: job.job_id.clone(),
            step_id: step.step_id.clone(),
            yield_info: Some(step.info),
            execution_seq: job.execution_seq,
            lease_token: job.lease_token.clone(),
        });
        let answer = self.inner.link.request(step.step_id, yielded).await;
        match answer {
            Ok(Commit::Ok) => self.end(Ended::Yielded).await,
            Ok(Commit::Stale) => self.end(Ended::Stale).await,
            Ok(Commit::Refused(message)) => {
                // Nothing was committed: the job is still ours and may report again.
                self.inner.final_sent.store(false, Ordering::Release);
                FnError::non_retryable(format!("the server refused the step: {message}"))
                    .code("YIELD_REFUSED")
            }
            Err(_) => self.end(Ended::Abandoned).await,
        }
    }

    /// Runs `step` once per run: its output is stored, and when the run is dispatched again
    /// (after a sleep, a wait, a retry) the stored output is returned without running it.
    ///
    /// A retryable error from `step` is returned as is (the step is not recorded, so it runs
    /// again on the next attempt); a non-retryable one is recorded as the step's failure, so a
    /// replay returns the same error.
    pub fn run<T, F, Fut>(
        &self,
        name: &str,
        step: F,
    ) -> impl Future<Output = Result<T, FnError>> + Send + use<T, F, Fut>
    where
        T: Serialize + DeserializeOwned + Send,
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<T, FnError>> + Send,
    {
        let ctx = self.clone();
        let step_id = self.next_step_id(name);
        let name = name.to_owned();
        async move { ctx.run_as(step_id, name, step).await }
    }

    /// `run` under an id already taken.
    async fn run_as<T, F, Fut>(&self, step_id: String, name: String, step: F) -> Result<T, FnError>
    where
        T: Serialize + DeserializeOwned + Send,
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<T, FnError>> + Send,
    {
        match self.memo(&step_id) {
            Memo::Completed(output) => return decode(&step_id, output),
            Memo::Failed(error) => return Err(FnError::from_stored(error, "STEP_FAILED")),
            Memo::Absent => {}
        }
        let job = &self.inner.job;
        // Names the step for the history (the results carry only its id). No answer is
        // awaited; a closed stream shows at the commit.
        let _ = self
            .inner
            .link
            .send(Payload::StepStarted(pb::StepStarted {
                job_id: job.job_id.clone(),
                step_id: step_id.clone(),
                name,
                step_type: pb::StepType::Invoke as i32,
                execution_seq: job.execution_seq,
                lease_token: job.lease_token.clone(),
            }))
            .await;
        let started = std::time::Instant::now();
        let result = step().await;
        let took = duration_ms(started.elapsed());
        match result {
            Ok(value) => {
                let output = serde_json::to_value(&value).map_err(|e| {
                    FnError::non_retryable(format!("the step's output is not serializable: {e}"))
                        .code("INVALID_OUTPUT")
                })?;
                let (output, output_value) = wire::output_pair(&output);
                let report = Payload::StepCompleted(pb::StepCompleted {
                    job_id: job.job_id.clone(),
                    step_id: step_id.clone(),
                    output,
                    output_value,
                    duration_ms: took,
                    execution_seq: job.execution_seq,
                    lease_token: job.lease_token.clone(),
                });
                self.commit_step(step_id, report).await?;
                Ok(value)
            }
            Err(e) if !e.is_retryable() => {
                let report = Payload::StepFailed(pb::StepFailed {
                    job_id: job.job_id.clone(),
                    step_id: step_id.clone(),
                    error: Some(e.to_proto()),
                    duration_ms: took,
                    execution_seq: job.execution_seq,
                    lease_token: job.lease_token.clone(),
                });
                self.commit_step(step_id, report).await?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Publishes `data` to a pub/sub topic (`PubSubService/Publish`) as a durable step named
    /// `publish:<topic>`: once the step is committed, a retry or replay returns the stored
    /// result instead of publishing again.
    ///
    /// The message carries an idempotency key derived from the step id, so a retry after a
    /// publish whose step was not committed (a crash in between) returns the first message's
    /// id instead of storing a second copy. Publishing does not trigger functions (emit an
    /// event for that).
    pub fn publish<D>(
        &self,
        topic: &str,
        data: D,
    ) -> impl Future<Output = Result<Published, FnError>> + Send + use<D>
    where
        D: Serialize + Send,
    {
        let ctx = self.clone();
        let name = format!("publish:{topic}");
        let step_id = self.next_step_id(&name);
        let topic = topic.to_owned();
        async move {
            if topic.is_empty() {
                return Err(FnError::non_retryable("publish needs a topic").code("INVALID_STEP"));
            }
            let data = serde_json::to_value(&data).map_err(|e| {
                FnError::non_retryable(format!(
                    "publish to '{topic}': the data is not serializable: {e}"
                ))
                .code("SERIALIZATION_ERROR")
            })?;
            let key = publish_key(&step_id);
            let client = ctx.inner.client.clone();
            let run_id = ctx.run_id().to_owned();
            ctx.run_as(step_id, name, || async move {
                client
                    .publish_for_run(&topic, &data, &key, &run_id)
                    .await
                    .map_err(|e| publish_error(&topic, &e))
            })
            .await
        }
    }

    /// Sleeps durably: the job is handed back and the run resumes after `duration` (on any
    /// worker).
    pub fn sleep(
        &self,
        name: &str,
        duration: Duration,
    ) -> impl Future<Output = Result<(), FnError>> + Send + use<> {
        let until = chrono::Duration::from_std(duration)
            .ok()
            .and_then(|d| Utc::now().checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        self.sleep_until(name, until)
    }

    /// Sleeps durably until `until`.
    pub fn sleep_until(
        &self,
        name: &str,
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), FnError>> + Send + use<> {
        let ctx = self.clone();
        let step_id = self.next_step_id(name);
        async move {
            match ctx.memo(&step_id) {
                Memo::Completed(_) => return Ok(()),
                Memo::Failed(error) => return Err(FnError::from_stored(error, "STEP_FAILED")),
                Memo::Absent => {}
            }
            let step = Wait {
                step_id,
                info: YieldInfo::Sleep(pb::SleepYield {
                    until: Some(timestamp(until)),
                }),
            };
            Err(ctx.suspend(step).await)
        }
    }

    /// Waits durably for an event (see [`WaitForEvent`]) and returns it as JSON
    /// (`{id, name, data, ...}`).
    ///
    /// When the wait times out the server fails the run with `WAIT_TIMEOUT` (non-retryable),
    /// so the handler does not see timeouts; `Ok(None)` is returned only if the server resumed
    /// the step with no event.
    pub fn wait_for_event(
        &self,
        name: &str,
        wait: WaitForEvent,
    ) -> impl Future<Output = Result<Option<Value>, FnError>> + Send + use<> {
        let ctx = self.clone();
        let step_id = self.next_step_id(name);
        async move {
            match ctx.memo(&step_id) {
                Memo::Completed(output) => {
                    let event: Value = decode(&step_id, output)?;
                    return Ok((!event.is_null()).then_some(event));
                }
                Memo::Failed(error) => return Err(FnError::from_stored(error, "WAIT_TIMEOUT")),
                Memo::Absent => {}
            }
            // The wire carries the wait's deadline; none is the server's default.
            let deadline = wait
                .timeout
                .and_then(|t| chrono::Duration::from_std(t).ok())
                .and_then(|t| Utc::now().checked_add_signed(t))
                .map(timestamp);
            let step = Wait {
                step_id,
                info: YieldInfo::WaitEvent(pb::WaitEventYield {
                    event_name: wait.event,
                    match_expression: wait.match_path.unwrap_or_default(),
                    match_value: wait.match_value.unwrap_or_default(),
                    timeout: deadline,
                    payload_json: Vec::new(),
                }),
            };
            Err(ctx.suspend(step).await)
        }
    }

    /// Runs another function and returns its output. The job is handed back while the child
    /// runs; a child that fails, is cancelled or outlives the timeout makes this step fail
    /// (non-retryable, with the stored error as [`FnError::error_details`]).
    pub fn invoke<T, I>(
        &self,
        name: &str,
        invoke: Invoke<I>,
    ) -> impl Future<Output = Result<T, FnError>> + Send + use<T, I>
    where
        T: DeserializeOwned,
        I: Serialize + Send,
    {
        let ctx = self.clone();
        let step_id = self.next_step_id(name);
        async move {
            match ctx.memo(&step_id) {
                Memo::Completed(output) => return decode(&step_id, output),
                Memo::Failed(error) => return Err(FnError::from_stored(error, "INVOKE_FAILED")),
                Memo::Absent => {}
            }
            let step = Wait {
                step_id,
                info: YieldInfo::InvokeFunction(pb::InvokeFunctionYield {
                    input_json: invoke.input_json()?,
                    invoke_timeout_ms: invoke.timeout.map(millis).unwrap_or(0),
                    function_id: invoke.function_id,
                }),
            };
            Err(ctx.suspend(step).await)
        }
    }

    /// Starts a run of another function without waiting for it; returns the child run's id.
    pub fn invoke_async<I>(
        &self,
        name: &str,
        invoke: Invoke<I>,
    ) -> impl Future<Output = Result<String, FnError>> + Send + use<I>
    where
        I: Serialize + Send,
    {
        #[derive(serde::Deserialize)]
        struct Started {
            run_id: String,
        }
        let ctx = self.clone();
        let step_id = self.next_step_id(name);
        async move {
            match ctx.memo(&step_id) {
                Memo::Completed(output) => {
                    return decode::<Started>(&step_id, output).map(|s| s.run_id);
                }
                Memo::Failed(error) => return Err(FnError::from_stored(error, "INVOKE_FAILED")),
                Memo::Absent => {}
            }
            let step = Wait {
                step_id,
                info: YieldInfo::InvokeFunctionAsync(pb::InvokeFunctionAsyncYield {
                    input_json: invoke.input_json()?,
                    function_id: invoke.function_id,
                }),
            };
            Err(ctx.suspend(step).await)
        }
    }
}
