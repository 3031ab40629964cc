//! Push mode in the store: which push functions have claimable work, and the circuit breakers
//! per (environment, function, endpoint), each transition decided by the pure rules of
//! [`crate::domain::breaker`] and written with its history entry in one transaction.

use async_trait::async_trait;
use sqlx::types::Json;

use super::StoreError;
use super::db::{Db, SqlStore};
use super::sql::{Conn, args, sql};
use super::writes::{append_history, notify_commit};
use crate::domain::breaker::{
    Breaker, BreakerSettings, BreakerState, Permit, Transition, breaker_key, permit, record,
};
use crate::domain::function::FunctionDefinition;
use crate::domain::history::{HistoryKind, NewHistoryEntry};
use crate::domain::lifecycle::Effects;
use crate::domain::time::Ts;
use crate::ids::{EnvId, FunctionId};

/// One stored circuit breaker.
#[derive(Debug, Clone)]
pub struct BreakerRecord {
    pub env_id: EnvId,
    pub function_id: FunctionId,
    pub endpoint: String,
    pub breaker: Breaker,
    pub updated_at: Ts,
}

/// Names one breaker.
#[derive(Debug, Clone, Copy)]
pub struct BreakerRef<'a> {
    pub env: &'a EnvId,
    pub function: &'a FunctionId,
    pub endpoint: &'a str,
}

#[async_trait]
pub trait PushStore: Send + Sync {
    /// Push functions that have due jobs, with their current definitions.
    async fn push_due_functions(
        &self,
        now: Ts,
        limit: i64,
    ) -> Result<Vec<DuePushFunction>, StoreError>;

    /// Whether any function (in any environment) is served in push mode.
    async fn push_functions_exist(&self) -> Result<bool, StoreError>;

    async fn breaker_get(&self, at: BreakerRef<'_>) -> Result<Option<BreakerRecord>, StoreError>;

    /// Whether requests may go out now; half-opens an open breaker whose window passed and
    /// hands the caller the probe (held for `probe_for`). A closed breaker costs one read.
    async fn breaker_permit(
        &self,
        at: BreakerRef<'_>,
        probe_for: std::time::Duration,
    ) -> Result<Permit, StoreError>;

    /// Records one request's outcome; returns the transition it caused, if any. A closed
    /// breaker's success with no failures counted costs one read.
    async fn breaker_record(
        &self,
        at: BreakerRef<'_>,
        success: bool,
        error: Option<&str>,
        settings: BreakerSettings,
    ) -> Result<Option<Transition>, StoreError>;

    async fn breaker_list(&self, env: &EnvId) -> Result<Vec<BreakerRecord>, StoreError>;

    /// Closes a breaker (operator reset); `None` when no such breaker exists.
    async fn breaker_reset(&self, at: BreakerRef<'_>) -> Result<Option<BreakerRecord>, StoreError>;
}

/// A push function with due work.
#[derive(Debug, Clone)]
pub struct DuePushFunction {
    pub env_id: EnvId,
    pub function_id: FunctionId,
    pub definition: FunctionDefinition,
}

#[derive(sqlx::FromRow)]
struct DuePushRow {
    env_id: String,
    id: String,
    definition: Json<FunctionDefinition>,
}

#[derive(sqlx::FromRow)]
struct BreakerRow {
    env_id: String,
    function_id: String,
    endpoint: String,
    state: String,
    consecutive_fails: i32,
    open_until: Option<Ts>,
    last_failure_at: Option<Ts>,
    last_error: Option<String>,
    updated_at: Ts,
}

impl TryFrom<BreakerRow> for BreakerRecord {
    type Error = StoreError;

    fn try_from(row: BreakerRow) -> Result<Self, StoreError> {
        let state = BreakerState::parse(&row.state)
            .ok_or_else(|| StoreError::Corrupt(format!("circuit breaker state '{}'", row.state)))?;
        Ok(BreakerRecord {
            env_id: EnvId::from_stored(row.env_id),
            function_id: FunctionId::from_stored(row.function_id),
            endpoint: row.endpoint,
            breaker: Breaker {
                state,
                consecutive_fails: row.consecutive_fails,
                open_until: row.open_until,
                last_failure_at: row.last_failure_at,
                last_error: row.last_error,
            },
            updated_at: row.updated_at,
        })
    }
}

/// The history entry of a breaker transition.
fn transition_entry(at: BreakerRef<'_>, transition: Transition, b: &Breaker) -> NewHistoryEntry {
    let kind = match transition {
        Transition::Opened => HistoryKind::CircuitBreakerOpened,
        Transition::HalfOpened => HistoryKind::CircuitBreakerHalfOpened,
        Transition::Closed => HistoryKind::CircuitBreakerClosed,
        Transition::Reset => HistoryKind::CircuitBreakerReset,
    };
    NewHistoryEntry {
        env_id: at.env.clone(),
        kind,
        run_id: None,
        function_id: Some(at.function.clone()),
        event_id: None,
        payload: serde_json::json!({
            "key": breaker_key(at.function.as_str(), at.endpoint),
            "endpoint": at.endpoint,
            "state": b.state.as_str(),
            "consecutive_fails": b.consecutive_fails,
            "open_until": b.open_until.map(Ts::to_rfc3339),
            "last_error": b.last_error,
        }),
    }
}

/// Writes a breaker's new state (and its history entry when it is a transition).
async fn write_breaker<C: Conn + ?Sized>(
    conn: &mut C,
    at: BreakerRef<'_>,
    b: &Breaker,
    transition: Option<Transition>,
    now: Ts,
) -> Result<(), StoreError> {
    conn.execute(
        sql!("breaker_update"),
        args![
            at.env.as_str(),
            at.function.as_str(),
            at.endpoint,
            b.state.as_str(),
            b.consecutive_fails,
            b.open_until,
            b.last_failure_at,
            b.last_error.as_deref(),
            now,
        ],
    )
    .await?;
    if let Some(t) = transition {
        append_history(conn, &transition_entry(at, t, b), now).await?;
    }
    Ok(())
}

/// The breaker row under lock, created closed when missing.
async fn lock_breaker<C: Conn + ?Sized>(
    conn: &mut C,
    at: BreakerRef<'_>,
    now: Ts,
) -> Result<Breaker, StoreError> {
    let names = args![at.env.as_str(), at.function.as_str(), at.endpoint];
    let mut seed = names.clone();
    seed.push(now.into());
    conn.execute(sql!("breaker_seed"), seed).await?;
    let row: BreakerRow = conn.fetch_one(sql!("breaker_lock"), names).await?;
    Ok(BreakerRecord::try_from(row)?.breaker)
}

#[async_trait]
impl<D: Db> PushStore for SqlStore<D> {
    async fn push_due_functions(
        &self,
        now: Ts,
        limit: i64,
    ) -> Result<Vec<DuePushFunction>, StoreError> {
        let rows: Vec<DuePushRow> = self
            .db
            .reader()
            .await?
            .fetch_all(sql!("push_due_functions"), args![now, limit])
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| DuePushFunction {
                env_id: EnvId::from_stored(r.env_id),
                function_id: FunctionId::from_stored(r.id),
                definition: r.definition.0,
            })
            .collect())
    }

    async fn push_functions_exist(&self) -> Result<bool, StoreError> {
        self.db
            .reader()
            .await?
            .scalar(sql!("push_functions_exist"), args![])
            .await
    }

    async fn breaker_get(&self, at: BreakerRef<'_>) -> Result<Option<BreakerRecord>, StoreError> {
        let row: Option<BreakerRow> = self
            .db
            .reader()
            .await?
            .fetch_optional(
                sql!("breaker_get"),
                args![at.env.as_str(), at.function.as_str(), at.endpoint],
            )
            .await?;
        row.map(BreakerRecord::try_from).transpose()
    }

    async fn breaker_permit(
        &self,
        at: BreakerRef<'_>,
        probe_for: std::time::Duration,
    ) -> Result<Permit, StoreError> {
        let now = Ts::now();
        match self.breaker_get(at).await? {
            None => return Ok(Permit::Flow),
            Some(r) if r.breaker.state == BreakerState::Closed => return Ok(Permit::Flow),
            Some(r) => {
                if let (Permit::Blocked { until }, _) = permit(&r.breaker, now, probe_for) {
                    return Ok(Permit::Blocked { until });
                }
            }
        }
        let mut tx = self.db.begin().await?;
        let current = lock_breaker(&mut *tx, at, now).await?;
        let (decision, next) = permit(&current, now, probe_for);
        if let Some(next) = next {
            write_breaker(&mut *tx, at, &next, Some(Transition::HalfOpened), now).await?;
        }
        D::commit(tx).await?;
        Ok(decision)
    }

    async fn breaker_record(
        &self,
        at: BreakerRef<'_>,
        success: bool,
        error: Option<&str>,
        settings: BreakerSettings,
    ) -> Result<Option<Transition>, StoreError> {
        let now = Ts::now();
        if success {
            let quiet = match self.breaker_get(at).await? {
                None => true,
                Some(r) => {
                    r.breaker.state == BreakerState::Closed && r.breaker.consecutive_fails == 0
                }
            };
            if quiet {
                return Ok(None);
            }
        }
        let mut tx = self.db.begin().await?;
        let current = lock_breaker(&mut *tx, at, now).await?;
        let (next, transition) = record(&current, success, error, settings, now);
        write_breaker(&mut *tx, at, &next, transition, now).await?;
        // Closing lets the runs that waited go: wake dispatchers on every node.
        let effects = Effects {
            work_ready: transition == Some(Transition::Closed),
            ..Default::default()
        };
        notify_commit(&mut *tx, self.db.node_id(), &effects).await?;
        D::commit(tx).await?;
        Ok(transition)
    }

    async fn breaker_list(&self, env: &EnvId) -> Result<Vec<BreakerRecord>, StoreError> {
        let rows: Vec<BreakerRow> = self
            .db
            .reader()
            .await?
            .fetch_all(sql!("breaker_list"), args![env.as_str()])
            .await?;
        rows.into_iter().map(BreakerRecord::try_from).collect()
    }

    async fn breaker_reset(&self, at: BreakerRef<'_>) -> Result<Option<BreakerRecord>, StoreError> {
        let now = Ts::now();
        let mut tx = self.db.begin().await?;
        let row: Option<BreakerRow> = tx
            .fetch_optional(
                sql!("breaker_lock"),
                args![at.env.as_str(), at.function.as_str(), at.endpoint],
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let mut record = BreakerRecord::try_from(row)?;
        record.breaker = Breaker {
            state: BreakerState::Closed,
            consecutive_fails: 0,
            open_until: None,
            ..record.breaker
        };
        record.updated_at = now;
        write_breaker(&mut *tx, at, &record.breaker, Some(Transition::Reset), now).await?;
        let effects = Effects {
            work_ready: true,
            ..Default::default()
        };
        notify_commit(&mut *tx, self.db.node_id(), &effects).await?;
        D::commit(tx).await?;
        Ok(Some(record))
    }
}
