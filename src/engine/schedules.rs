//! The scheduler: cron ticks and due debounces become runs. Every node runs it over the shared
//! schedule rows; a tick is started under an idempotency key of its own (`cron:<fn>:<i>:<ms>`)
//! before its row is moved on by compare-and-set, so each tick starts exactly one run however
//! many nodes race for it and wherever one of them crashes.

use std::time::Duration;

use serde_json::json;

use crate::domain::lifecycle::LaneRef;
use crate::domain::lifecycle::create::RunSpec;
use crate::domain::schedule::{
    CronSchedule, ScheduleSlot, decide_tick, plan_slots, tick_key, tick_text,
};
use crate::domain::time::Ts;
use crate::ids::{EnvId, EventId, FunctionId};
use crate::store::schedules::{CronAdvance, DebounceEntryRow, DueCron, DueDebounce};

use super::events::{EmitEvent, new_run};
use super::{Engine, EngineError};

/// The event a cron tick's run starts with (`source: "cron"`; its data names the tick).
pub const CRON_EVENT: &str = "ironflow/cron";

/// The longest the scheduler sleeps without looking: how late it learns of a schedule or a
/// debounce another node made (debounce periods are at least a second).
const IDLE_LOOK: Duration = Duration::from_millis(500);
/// The least it sleeps, so a row it cannot fire (the database is down) does not spin.
const MIN_PAUSE: Duration = Duration::from_millis(5);
/// How long the scheduler lets news gather before a pass.
const NEWS_GAP: Duration = Duration::from_millis(50);
/// How long the scheduler waits after a pass failed.
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// Due rows taken per pass.
const BATCH: i64 = 100;
/// Due rows fired at once.
const FIRING: usize = 32;

impl Engine {
    /// Makes a function's schedule rows follow its current definition (registration, status,
    /// rollback, deletion): one row per cron trigger, none when it has no cron trigger or is gone.
    pub(crate) async fn sync_cron(&self, env: &EnvId, id: &FunctionId) -> Result<(), EngineError> {
        let function = self.store().get_function(env, id).await?;
        let existing: Vec<ScheduleSlot> = self
            .store()
            .cron_schedules_of(env, id)
            .await?
            .into_iter()
            .map(|r| ScheduleSlot {
                trigger_index: r.trigger_index,
                expression: r.expression,
                next_at: r.next_at,
            })
            .collect();
        let (version, wanted) = match &function {
            Some(f) => {
                let triggers: Vec<(i32, &str)> = f.definition.cron_triggers().collect();
                (f.version, plan_slots(&triggers, &existing, Ts::now()))
            }
            None => (0, Vec::new()),
        };
        if wanted.is_empty() && existing.is_empty() {
            return Ok(());
        }
        self.store()
            .replace_cron_schedules(env, id, version, &wanted)
            .await?;
        self.bus().scheduler_changed();
        Ok(())
    }

    /// The scheduler loop: reconciles the schedule rows with the definitions once, then fires
    /// what is due and sleeps until the next instant (or news of a change).
    pub(crate) async fn run_scheduler(&self) {
        let token = self.shutdown_token().clone();
        match self.store().cron_functions().await {
            Ok(functions) => {
                for (env, id) in functions {
                    if let Err(e) = self.sync_cron(&env, &id).await {
                        tracing::warn!(error = %e, function = %id, "cron schedule not reconciled");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cron schedules not reconciled at start"),
        }
        let news = self.bus().scheduler();
        loop {
            if token.is_cancelled() {
                return;
            }
            let pause = match self.fire_due(Ts::now()).await {
                Ok(()) => {
                    let next = self.store().next_schedule_instant().await.ok().flatten();
                    let now = Ts::now();
                    next.map_or(IDLE_LOOK, |t| {
                        Duration::from_millis(u64::try_from(t.millis() - now.millis()).unwrap_or(0))
                    })
                    .clamp(MIN_PAUSE, IDLE_LOOK)
                }
                Err(e) => {
                    // The database is away or refused: what is due stays due, tried again soon.
                    tracing::warn!(error = %e, "scheduler pass failed; retrying");
                    RETRY_PAUSE
                }
            };
            tokio::select! {
                () = token.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
                () = news.notified() => {
                    // News (a debounce armed, a schedule changed) only ever brings an instant
                    // at least a second away; a burst of it makes one pass, not one each.
                    tokio::select! {
                        () = token.cancelled() => return,
                        () = tokio::time::sleep(NEWS_GAP) => {}
                    }
                }
            }
        }
    }

    /// Fires every cron tick and debounce due at `now`.
    /// Ticks that came due together fire together, so their emits share group commits.
    pub(crate) async fn fire_due(&self, now: Ts) -> Result<(), EngineError> {
        let crons = self.store().due_cron(now, BATCH).await?;
        // One row's failure neither stops the others nor the debounces; it is tried again.
        let mut failures = fire_each(crons, |due| {
            let engine = self.clone();
            async move { engine.fire_cron(&due, now).await }
        })
        .await;
        let debounces = self.store().due_debounces(now, BATCH).await?;
        failures.extend(
            fire_each(debounces, |due| {
                let engine = self.clone();
                async move { engine.fire_debounce(&due).await }
            })
            .await,
        );
        for failure in &failures {
            tracing::warn!(error = %failure, "a due cron tick or debounce did not fire; retrying");
        }
        match failures.into_iter().next() {
            Some(first) => Err(first),
            None => Ok(()),
        }
    }

    async fn fire_cron(&self, due: &DueCron, now: Ts) -> Result<(), EngineError> {
        let row = &due.schedule;
        let Ok(schedule) = CronSchedule::parse(&row.expression) else {
            // Not written by this release (rows are planned from parsed expressions): nothing to
            // fire; moved a day on so it does not stay due.
            tracing::warn!(function = %row.function_id, expression = %row.expression,
                "a cron schedule row does not parse; skipped for a day");
            self.store()
                .advance_cron(&CronAdvance {
                    schedule: row,
                    to: now.plus(Duration::from_secs(86_400)),
                    fired: None,
                })
                .await?;
            return Ok(());
        };
        let decision = decide_tick(&schedule, row.next_at, now, due.active);
        let env = EnvId::from_stored(row.env_id.clone());
        let function = FunctionId::from_stored(row.function_id.clone());
        if let Some(tick) = decision.fire {
            let Some(target) = self.store().get_function(&env, &function).await? else {
                return Ok(());
            };
            let event = EmitEvent {
                name: CRON_EVENT.to_owned(),
                data: json!({
                    "cron": row.expression,
                    "tick": tick_text(tick),
                    "trigger_index": row.trigger_index,
                    "missed_ticks": decision.missed,
                    "function_id": row.function_id,
                }),
                metadata: json!({"function_id": row.function_id, "source": "cron"}),
                idempotency_key: Some(tick_key(&row.function_id, row.trigger_index, tick)),
                source: "cron".to_owned(),
                version: 0,
                emitted_by_run: None,
            };
            let started = self.emit_to(&env, event, Some(target)).await?;
            if !started.duplicate {
                let late = (now.millis() - tick.millis()).max(0) as f64 / 1000.0;
                metrics::histogram!("ironflow_cron_tick_lateness_seconds").record(late);
                metrics::counter!("ironflow_cron_ticks_total").increment(1);
            }
            if decision.missed > 0 {
                tracing::info!(function = %function, missed = decision.missed, tick = %tick_text(tick),
                    "cron ticks passed without a run (downtime); started the latest one");
            }
        }
        self.store()
            .advance_cron(&CronAdvance {
                schedule: row,
                to: decision.next_at,
                fired: decision.fire,
            })
            .await?;
        Ok(())
    }

    async fn fire_debounce(&self, due: &DueDebounce) -> Result<(), EngineError> {
        let env = EnvId::from_stored(due.env_id.clone());
        let function_id = FunctionId::from_stored(due.function_id.clone());
        let Some(function) = self.store().get_function(&env, &function_id).await? else {
            // The function is gone: its pending debounce goes with it.
            self.store()
                .delete_debounce(&env, &function_id, &due.debounce_key)
                .await?;
            return Ok(());
        };
        let event_id = EventId::from_stored(due.event_id.clone());
        let data: serde_json::Value = serde_json::from_str(&due.event_data).unwrap_or_default();
        let run = new_run(
            &function,
            &event_id,
            &due.event_name,
            &data,
            &std::sync::OnceLock::new(),
        );
        let spec = RunSpec {
            id: run.id.clone(),
            env: env.clone(),
            function_id: function.id.clone(),
            function_version: function.version,
            event_id: Some(event_id),
            event_name: due.event_name.clone(),
            input: data,
            max_attempts: run.max_attempts,
            parent: None,
            parent_step: None,
            lane: run.lane.filter(|l| l.limit > 0).map(|l| LaneRef {
                env: env.clone(),
                function_id: function.id.clone(),
                key: l.key,
                limit: l.limit,
            }),
            not_before: None,
        };
        if let Some(effects) = self.store().fire_debounce(due, &spec).await? {
            self.bus().publish(&effects);
            self.bus().history_appended();
            metrics::counter!("ironflow_runs_created_total").increment(1);
            metrics::counter!("ironflow_debounced_events_total")
                .increment(u64::try_from(due.events).unwrap_or(0));
        }
        Ok(())
    }

    /// A cron function's next tick (the earliest of its triggers'); `None` without cron.
    pub async fn next_cron_tick(
        &self,
        env: &EnvId,
        id: &FunctionId,
    ) -> Result<Option<Ts>, EngineError> {
        Ok(self
            .store()
            .cron_schedules_of(env, id)
            .await?
            .into_iter()
            .map(|s| s.next_at)
            .min())
    }

    /// The environment's pending debounces, soonest first.
    pub async fn list_debounces(&self, env: &EnvId) -> Result<Vec<DebounceEntryRow>, EngineError> {
        Ok(self.store().list_debounces(env, 1000).await?)
    }

    /// Drops a pending debounce: its run never starts (the events stay stored).
    pub async fn delete_debounce(
        &self,
        env: &EnvId,
        function: &FunctionId,
        key: &str,
    ) -> Result<(), EngineError> {
        if self.store().delete_debounce(env, function, key).await? {
            Ok(())
        } else {
            Err(EngineError::not_found(
                "debounce entry",
                format!("{function}/{key}"),
            ))
        }
    }
}

/// Fires due rows [`FIRING`] at a time; the failures, in no particular order.
async fn fire_each<T, F, Fut>(rows: Vec<T>, fire: F) -> Vec<EngineError>
where
    F: FnMut(T) -> Fut,
    Fut: std::future::Future<Output = Result<(), EngineError>>,
{
    use futures::StreamExt as _;
    futures::stream::iter(rows)
        .map(fire)
        .buffer_unordered(FIRING)
        .filter_map(|r| async move { r.err() })
        .collect()
        .await
}
