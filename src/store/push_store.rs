//! `push_store!`: the push-mode half of the store — which push functions have claimable work,
//! and the circuit breakers per (environment, function, endpoint) with their transitions, each
//! written with its history entry in one transaction. Instantiated per backend like `sql_store!`.

use async_trait::async_trait;

use crate::domain::breaker::{Breaker, BreakerSettings, Permit, Transition};
use crate::domain::function::FunctionDefinition;
use crate::ids::{EnvId, FunctionId};
use crate::store::StoreError;
use crate::store::time::Ts;

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

/// The push-mode half of the [`Store`](super::Store).
#[async_trait]
pub trait PushStore {
    /// Push functions that have due jobs or expired leases, with their current definitions.
    async fn push_due_functions(
        &self,
        now: Ts,
        limit: i64,
    ) -> Result<Vec<(EnvId, FunctionId, FunctionDefinition)>, StoreError>;

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

    /// Gives a claimed job back unsent (queued, still due, no attempt used); false when the
    /// fence no longer matches.
    async fn release_job(
        &self,
        dispatch_id: &str,
        fence: &crate::domain::job::Fence,
    ) -> Result<bool, StoreError>;
}

pub(crate) type BreakerRow = (
    String,
    String,
    String,
    String,
    i32,
    Option<Ts>,
    Option<Ts>,
    Option<String>,
    Ts,
);

pub(crate) fn breaker_from_row(row: BreakerRow) -> Result<BreakerRecord, StoreError> {
    let state = crate::domain::breaker::BreakerState::parse(&row.3)
        .ok_or_else(|| StoreError::Corrupt(format!("circuit breaker state '{}'", row.3)))?;
    Ok(BreakerRecord {
        env_id: EnvId::from_stored(row.0),
        function_id: FunctionId::from_stored(row.1),
        endpoint: row.2,
        breaker: Breaker {
            state,
            consecutive_fails: row.4,
            open_until: row.5,
            last_failure_at: row.6,
            last_error: row.7,
        },
        updated_at: row.8,
    })
}

/// The history entry of a breaker transition.
pub(crate) fn transition_entry(
    at: BreakerRef<'_>,
    transition: Transition,
    b: &Breaker,
) -> crate::domain::history::NewHistoryEntry {
    use crate::domain::history::HistoryKind;
    let kind = match transition {
        Transition::Opened => HistoryKind::CircuitBreakerOpened,
        Transition::HalfOpened => HistoryKind::CircuitBreakerHalfOpened,
        Transition::Closed => HistoryKind::CircuitBreakerClosed,
        Transition::Reset => HistoryKind::CircuitBreakerReset,
    };
    crate::domain::history::NewHistoryEntry {
        env_id: at.env.clone(),
        kind,
        run_id: None,
        function_id: Some(at.function.clone()),
        event_id: None,
        payload: serde_json::json!({
            "key": crate::domain::breaker::breaker_key(at.function.as_str(), at.endpoint),
            "endpoint": at.endpoint,
            "state": b.state.as_str(),
            "consecutive_fails": b.consecutive_fails,
            "open_until": b.open_until.map(Ts::to_rfc3339),
            "last_error": b.last_error,
        }),
    }
}

macro_rules! push_store {
    ($store:ty, $db:ty, $dir:literal) => {
        macro_rules! psql {
            ($name:literal) => {
                include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/sql/",
                    $dir,
                    "/",
                    $name,
                    ".sql"
                ))
            };
        }

        /// Writes a breaker's new state (and its history entry when it is a transition).
        async fn write_breaker(
            conn: &mut <$db as sqlx::Database>::Connection,
            at: $crate::store::push_store::BreakerRef<'_>,
            b: &$crate::domain::breaker::Breaker,
            transition: Option<$crate::domain::breaker::Transition>,
            now: $crate::store::time::Ts,
        ) -> Result<(), $crate::store::StoreError> {
            sqlx::query(psql!("breaker_update"))
                .bind(at.env.as_str())
                .bind(at.function.as_str())
                .bind(at.endpoint)
                .bind(b.state.as_str())
                .bind(b.consecutive_fails)
                .bind(b.open_until)
                .bind(b.last_failure_at)
                .bind(b.last_error.as_deref())
                .bind(now)
                .execute(&mut *conn)
                .await?;
            if let Some(t) = transition {
                append_history(
                    conn,
                    &$crate::store::push_store::transition_entry(at, t, b),
                    now,
                )
                .await?;
            }
            Ok(())
        }

        /// The breaker row under lock, created closed when missing.
        async fn lock_breaker(
            conn: &mut <$db as sqlx::Database>::Connection,
            at: $crate::store::push_store::BreakerRef<'_>,
            now: $crate::store::time::Ts,
        ) -> Result<$crate::domain::breaker::Breaker, $crate::store::StoreError> {
            sqlx::query(psql!("breaker_seed"))
                .bind(at.env.as_str())
                .bind(at.function.as_str())
                .bind(at.endpoint)
                .bind(now)
                .execute(&mut *conn)
                .await?;
            let row: $crate::store::push_store::BreakerRow = sqlx::query_as(psql!("breaker_lock"))
                .bind(at.env.as_str())
                .bind(at.function.as_str())
                .bind(at.endpoint)
                .fetch_one(&mut *conn)
                .await?;
            Ok($crate::store::push_store::breaker_from_row(row)?.breaker)
        }

        #[async_trait::async_trait]
        impl $crate::store::push_store::PushStore for $store {
            async fn push_due_functions(
                &self,
                now: $crate::store::time::Ts,
                limit: i64,
            ) -> Result<
                Vec<(
                    $crate::ids::EnvId,
                    $crate::ids::FunctionId,
                    $crate::domain::function::FunctionDefinition,
                )>,
                $crate::store::StoreError,
            > {
                let rows: Vec<(
                    String,
                    String,
                    sqlx::types::Json<$crate::domain::function::FunctionDefinition>,
                )> = sqlx::query_as(psql!("push_due_functions"))
                    .bind(now)
                    .bind(limit)
                    .fetch_all(self.reader())
                    .await?;
                Ok(rows
                    .into_iter()
                    .map(|(env, id, def)| {
                        (
                            $crate::ids::EnvId::from_stored(env),
                            $crate::ids::FunctionId::from_stored(id),
                            def.0,
                        )
                    })
                    .collect())
            }

            async fn push_functions_exist(&self) -> Result<bool, $crate::store::StoreError> {
                Ok(sqlx::query_scalar(psql!("push_functions_exist"))
                    .fetch_one(self.reader())
                    .await?)
            }

            async fn breaker_get(
                &self,
                at: $crate::store::push_store::BreakerRef<'_>,
            ) -> Result<Option<$crate::store::push_store::BreakerRecord>, $crate::store::StoreError>
            {
                let row: Option<$crate::store::push_store::BreakerRow> =
                    sqlx::query_as(psql!("breaker_get"))
                        .bind(at.env.as_str())
                        .bind(at.function.as_str())
                        .bind(at.endpoint)
                        .fetch_optional(self.reader())
                        .await?;
                row.map($crate::store::push_store::breaker_from_row)
                    .transpose()
            }

            async fn breaker_permit(
                &self,
                at: $crate::store::push_store::BreakerRef<'_>,
                probe_for: std::time::Duration,
            ) -> Result<$crate::domain::breaker::Permit, $crate::store::StoreError> {
                use $crate::domain::breaker::{BreakerState, Permit, Transition, permit};
                let now = $crate::store::time::Ts::now();
                match self.breaker_get(at).await? {
                    None => return Ok(Permit::Flow),
                    Some(r) if r.breaker.state == BreakerState::Closed => return Ok(Permit::Flow),
                    Some(r) => {
                        if let (Permit::Blocked { until }, _) = permit(&r.breaker, now, probe_for) {
                            return Ok(Permit::Blocked { until });
                        }
                    }
                }
                let mut tx = self.writer().begin().await?;
                let current = lock_breaker(&mut tx, at, now).await?;
                let (decision, next) = permit(&current, now, probe_for);
                if let Some(next) = next {
                    write_breaker(&mut tx, at, &next, Some(Transition::HalfOpened), now).await?;
                }
                tx.commit().await?;
                Ok(decision)
            }

            async fn breaker_record(
                &self,
                at: $crate::store::push_store::BreakerRef<'_>,
                success: bool,
                error: Option<&str>,
                settings: $crate::domain::breaker::BreakerSettings,
            ) -> Result<Option<$crate::domain::breaker::Transition>, $crate::store::StoreError>
            {
                use $crate::domain::breaker::{BreakerState, Transition};
                let now = $crate::store::time::Ts::now();
                if success {
                    let quiet = match self.breaker_get(at).await? {
                        None => true,
                        Some(r) => {
                            r.breaker.state == BreakerState::Closed
                                && r.breaker.consecutive_fails == 0
                        }
                    };
                    if quiet {
                        return Ok(None);
                    }
                }
                let mut tx = self.writer().begin().await?;
                let current = lock_breaker(&mut tx, at, now).await?;
                let (next, transition) =
                    $crate::domain::breaker::record(&current, success, error, settings, now);
                write_breaker(&mut tx, at, &next, transition, now).await?;
                // Closing lets the runs that waited go: wake dispatchers on every node.
                let effects = $crate::store::model::Effects {
                    work_ready: transition == Some(Transition::Closed),
                    ..Default::default()
                };
                notify_commit(&mut tx, self.node_id(), &effects).await?;
                tx.commit().await?;
                Ok(transition)
            }

            async fn breaker_list(
                &self,
                env: &$crate::ids::EnvId,
            ) -> Result<Vec<$crate::store::push_store::BreakerRecord>, $crate::store::StoreError>
            {
                let rows: Vec<$crate::store::push_store::BreakerRow> =
                    sqlx::query_as(psql!("breaker_list"))
                        .bind(env.as_str())
                        .fetch_all(self.reader())
                        .await?;
                rows.into_iter()
                    .map($crate::store::push_store::breaker_from_row)
                    .collect()
            }

            async fn breaker_reset(
                &self,
                at: $crate::store::push_store::BreakerRef<'_>,
            ) -> Result<Option<$crate::store::push_store::BreakerRecord>, $crate::store::StoreError>
            {
                let now = $crate::store::time::Ts::now();
                let mut tx = self.writer().begin().await?;
                let row: Option<$crate::store::push_store::BreakerRow> =
                    sqlx::query_as(psql!("breaker_lock"))
                        .bind(at.env.as_str())
                        .bind(at.function.as_str())
                        .bind(at.endpoint)
                        .fetch_optional(&mut *tx)
                        .await?;
                let Some(row) = row else { return Ok(None) };
                let mut record = $crate::store::push_store::breaker_from_row(row)?;
                record.breaker = $crate::domain::breaker::Breaker {
                    state: $crate::domain::breaker::BreakerState::Closed,
                    consecutive_fails: 0,
                    open_until: None,
                    ..record.breaker
                };
                record.updated_at = now;
                write_breaker(
                    &mut tx,
                    at,
                    &record.breaker,
                    Some($crate::domain::breaker::Transition::Reset),
                    now,
                )
                .await?;
                let effects = $crate::store::model::Effects {
                    work_ready: true,
                    ..Default::default()
                };
                notify_commit(&mut tx, self.node_id(), &effects).await?;
                tx.commit().await?;
                Ok(Some(record))
            }

            async fn release_job(
                &self,
                dispatch_id: &str,
                fence: &$crate::domain::job::Fence,
            ) -> Result<bool, $crate::store::StoreError> {
                let released = sqlx::query(psql!("release_job"))
                    .bind(dispatch_id)
                    .bind(fence.execution_seq)
                    .bind(&fence.lease_token)
                    .bind(fence.env_id.as_str())
                    .bind(&fence.worker_id)
                    .execute(self.writer())
                    .await?;
                Ok(released.rows_affected() == 1)
            }
        }
    };
}

pub(crate) use push_store;
