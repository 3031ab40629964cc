//! Scheduling and flow control in the store: cron schedules (replaced with a function's
//! definition, read when due, claimed per tick by moving `next_at`), pending debounces (armed in
//! an emit's transaction, taken with their run in one), and the throttle windows an emit
//! reads and writes under their row locks.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde_json::Value;

use super::StoreError;
use super::apply::{apply, lock_lane};
use super::db::{Db, SqlStore};
use super::sql::{Conn, args, sql};
use super::writes::notify_commit;
use crate::domain::debounce::DebounceState;
use crate::domain::function::{DebounceDef, ThrottleDef};
use crate::domain::lifecycle::Effects;
use crate::domain::lifecycle::create::{RunSpec, create_run};
use crate::domain::schedule::ScheduleSlot;
use crate::domain::throttle::ThrottleWindow;
use crate::domain::time::Ts;
use crate::ids::{EnvId, EventId, FunctionId};

/// One cron trigger's schedule row.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct CronScheduleRow {
    pub env_id: String,
    pub function_id: String,
    pub trigger_index: i32,
    pub expression: String,
    pub function_version: i32,
    pub next_at: Ts,
    pub last_tick_at: Option<Ts>,
}

/// A schedule row that came due, with whether its function is active.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DueCron {
    #[sqlx(flatten)]
    pub schedule: CronScheduleRow,
    pub active: bool,
}

/// A schedule claimed for its tick: moved from `from` to `to`.
#[derive(Debug, Clone)]
pub struct CronAdvance<'a> {
    pub schedule: &'a CronScheduleRow,
    pub to: Ts,
    pub fired: Option<Ts>,
}

/// A pending debounce as listed.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct DebounceEntryRow {
    pub env_id: String,
    pub function_id: String,
    pub debounce_key: String,
    pub function_version: i32,
    pub period_ms: i32,
    pub event_id: String,
    pub events: i64,
    pub armed_at: Ts,
    pub fires_at: Ts,
}

/// A debounce that came due, with the event its run starts with.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DueDebounce {
    pub env_id: String,
    pub function_id: String,
    pub debounce_key: String,
    pub event_id: String,
    pub events: i64,
    pub armed_at: Ts,
    pub fires_at: Ts,
    pub event_name: String,
    pub event_data: String,
}

/// An event that re-arms a function's debounce instead of starting a run.
#[derive(Debug, Clone)]
pub struct DebounceHit {
    pub function_id: FunctionId,
    pub function_version: i32,
    pub key: String,
    pub def: DebounceDef,
}

/// A throttled run's key and limit.
#[derive(Debug, Clone)]
pub struct Throttle {
    pub key: String,
    pub def: ThrottleDef,
}

#[async_trait]
pub trait ScheduleStore {
    async fn cron_schedules_of(
        &self,
        env: &EnvId,
        function: &FunctionId,
    ) -> Result<Vec<CronScheduleRow>, StoreError>;
    /// Makes a function's schedule rows the `wanted` ones (none: the function has no cron
    /// trigger, or is gone).
    async fn replace_cron_schedules(
        &self,
        env: &EnvId,
        function: &FunctionId,
        version: i32,
        wanted: &[ScheduleSlot],
    ) -> Result<(), StoreError>;
    /// Functions that have, or may need, schedule rows (what a start reconciles).
    async fn cron_functions(&self) -> Result<Vec<(EnvId, FunctionId)>, StoreError>;
    async fn due_cron(&self, now: Ts, limit: i64) -> Result<Vec<DueCron>, StoreError>;
    /// Claims a tick: true when this call moved the schedule (nobody else had).
    async fn advance_cron(&self, advance: &CronAdvance<'_>) -> Result<bool, StoreError>;
    /// The next instant a tick or a debounce comes due.
    async fn next_schedule_instant(&self) -> Result<Option<Ts>, StoreError>;
    async fn due_debounces(&self, now: Ts, limit: i64) -> Result<Vec<DueDebounce>, StoreError>;
    /// Takes a due debounce and creates its run in one transaction; `None` when an event
    /// re-armed it (or another node took it) since it was read.
    async fn fire_debounce(
        &self,
        due: &DueDebounce,
        run: &RunSpec,
    ) -> Result<Option<Effects>, StoreError>;
    async fn list_debounces(
        &self,
        env: &EnvId,
        limit: i64,
    ) -> Result<Vec<DebounceEntryRow>, StoreError>;
    async fn delete_debounce(
        &self,
        env: &EnvId,
        function: &FunctionId,
        key: &str,
    ) -> Result<bool, StoreError>;
}

#[derive(sqlx::FromRow)]
struct CronFunctionRow {
    env_id: String,
    id: String,
}

#[async_trait]
impl<D: Db> ScheduleStore for SqlStore<D> {
    async fn cron_schedules_of(
        &self,
        env: &EnvId,
        function: &FunctionId,
    ) -> Result<Vec<CronScheduleRow>, StoreError> {
        self.db
            .reader()
            .await?
            .fetch_all(
                sql!("cron_for_function"),
                args![env.as_str(), function.as_str()],
            )
            .await
    }

    async fn replace_cron_schedules(
        &self,
        env: &EnvId,
        function: &FunctionId,
        version: i32,
        wanted: &[ScheduleSlot],
    ) -> Result<(), StoreError> {
        let rows: Value = wanted
            .iter()
            .map(|w| {
                serde_json::json!({"trigger_index": w.trigger_index, "expression": w.expression,
                    "next_at": w.next_at.to_rfc3339()})
            })
            .collect();
        let mut tx = self.db.begin().await?;
        tx.execute(
            sql!("cron_replace"),
            args![env.as_str(), function.as_str(), &rows, version, Ts::now()],
        )
        .await?;
        D::commit(tx).await
    }

    async fn cron_functions(&self) -> Result<Vec<(EnvId, FunctionId)>, StoreError> {
        let rows: Vec<CronFunctionRow> = self
            .db
            .reader()
            .await?
            .fetch_all(sql!("cron_functions"), args![])
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| (EnvId::from_stored(r.env_id), FunctionId::from_stored(r.id)))
            .collect())
    }

    async fn due_cron(&self, now: Ts, limit: i64) -> Result<Vec<DueCron>, StoreError> {
        self.db
            .reader()
            .await?
            .fetch_all(sql!("cron_due"), args![now, limit])
            .await
    }

    async fn advance_cron(&self, a: &CronAdvance<'_>) -> Result<bool, StoreError> {
        let s = a.schedule;
        let mut tx = self.db.begin().await?;
        let moved = tx
            .execute(
                sql!("cron_advance"),
                args![
                    s.env_id.as_str(),
                    s.function_id.as_str(),
                    s.trigger_index,
                    s.next_at,
                    a.to,
                    a.fired,
                    Ts::now()
                ],
            )
            .await?;
        D::commit(tx).await?;
        Ok(moved > 0)
    }

    async fn next_schedule_instant(&self) -> Result<Option<Ts>, StoreError> {
        self.db
            .reader()
            .await?
            .scalar::<Option<Ts>>(sql!("schedule_next"), args![])
            .await
    }

    async fn due_debounces(&self, now: Ts, limit: i64) -> Result<Vec<DueDebounce>, StoreError> {
        self.db
            .reader()
            .await?
            .fetch_all(sql!("debounce_due"), args![now, limit])
            .await
    }

    async fn fire_debounce(
        &self,
        due: &DueDebounce,
        run: &RunSpec,
    ) -> Result<Option<Effects>, StoreError> {
        let now = Ts::now();
        let mut tx = self.db.begin().await?;
        // Lanes before debounce entries: the order an emit's transaction takes them in.
        let active = match &run.lane {
            Some(lane) => Some(lock_lane(&mut *tx, lane).await?),
            None => None,
        };
        let taken = tx
            .execute(
                sql!("debounce_take"),
                args![
                    due.env_id.as_str(),
                    due.function_id.as_str(),
                    due.debounce_key.as_str(),
                    due.event_id.as_str(),
                    now
                ],
            )
            .await?;
        if taken == 0 {
            return Ok(None);
        }
        let created = create_run(run, active);
        let mut effects = created.effects_with_schedule();
        effects.merge(apply(&mut *tx, vec![created], now).await?);
        notify_commit(&mut *tx, self.db.node_id(), &effects).await?;
        D::commit(tx).await?;
        Ok(Some(effects))
    }

    async fn list_debounces(
        &self,
        env: &EnvId,
        limit: i64,
    ) -> Result<Vec<DebounceEntryRow>, StoreError> {
        self.db
            .reader()
            .await?
            .fetch_all(sql!("debounce_list"), args![env.as_str(), limit])
            .await
    }

    async fn delete_debounce(
        &self,
        env: &EnvId,
        function: &FunctionId,
        key: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.db.begin().await?;
        let n = tx
            .execute(
                sql!("debounce_delete"),
                args![env.as_str(), function.as_str(), key],
            )
            .await?;
        D::commit(tx).await?;
        Ok(n > 0)
    }
}

/// Throttle windows of one emit batch, keyed (environment, function, key) so they are locked
/// in one order by every transaction.
pub(crate) type ThrottleWindows = BTreeMap<(String, String, String), ThrottleWindow>;

/// Locks and reads the windows of the given keys, in key order.
pub(crate) async fn lock_throttle_windows<C: Conn + ?Sized>(
    conn: &mut C,
    keys: impl IntoIterator<Item = (String, String, String)>,
) -> Result<ThrottleWindows, StoreError> {
    let mut windows = ThrottleWindows::new();
    for key in keys {
        windows.entry(key).or_default();
    }
    for ((env, function, key), window) in &mut windows {
        conn.execute(
            sql!("throttle_seed"),
            args![env.as_str(), function.as_str(), key.as_str()],
        )
        .await?;
        let starts: String = conn
            .scalar(
                sql!("throttle_lock"),
                args![env.as_str(), function.as_str(), key.as_str()],
            )
            .await?;
        window.starts = serde_json::from_str(&starts).unwrap_or_default();
    }
    Ok(windows)
}

pub(crate) async fn save_throttle_windows<C: Conn + ?Sized>(
    conn: &mut C,
    windows: &ThrottleWindows,
) -> Result<(), StoreError> {
    for ((env, function, key), window) in windows {
        let starts = Value::from(window.starts.clone()).to_string();
        conn.execute(
            sql!("throttle_save"),
            args![
                env.as_str(),
                function.as_str(),
                key.as_str(),
                starts.as_str()
            ],
        )
        .await?;
    }
    Ok(())
}

#[derive(sqlx::FromRow)]
struct DebounceLockRow {
    event_id: String,
    events: i64,
    armed_at: Ts,
    fires_at: Ts,
}

/// Arms (or re-arms) a function's debounce with a stored event, under the entry's row lock.
pub(crate) async fn arm_debounce<C: Conn + ?Sized>(
    conn: &mut C,
    env: &EnvId,
    event: &EventId,
    hit: &DebounceHit,
    now: Ts,
) -> Result<(), StoreError> {
    let existing: Option<DebounceLockRow> = conn
        .fetch_optional(
            sql!("debounce_lock"),
            args![env.as_str(), hit.function_id.as_str(), hit.key.as_str()],
        )
        .await?;
    let existing = existing.map(|r| DebounceState {
        armed_at: r.armed_at,
        fires_at: r.fires_at,
        event_id: EventId::from_stored(r.event_id),
        events: r.events,
    });
    let next = crate::domain::debounce::on_event(existing.as_ref(), now, event, &hit.def);
    conn.execute(
        sql!("debounce_arm"),
        args![
            env.as_str(),
            hit.function_id.as_str(),
            hit.key.as_str(),
            hit.function_version,
            hit.def.period_ms,
            next.event_id.as_str(),
            next.events,
            next.armed_at,
            next.fires_at
        ],
    )
    .await?;
    Ok(())
}
