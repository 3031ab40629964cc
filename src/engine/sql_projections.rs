//! SQL projections: creating one (its table checked and confined), the background applier that
//! keeps every active one up to date (woken by commits), queries of its table, and rebuilds —
//! into a shadow table swapped in when caught up for SQL projections, a replay from the start
//! for runner-applied ones.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::{Value, json};

use super::{Engine, EngineError};
use crate::domain::lifecycle::control::Actor;
use crate::domain::projection::{Definition, ProjectionKind, Registration, check_name};
use crate::domain::sql_projection::{
    Backend as SqlBackend, TablePlace, TableSpec, check_definition, parse_handler, parse_table,
    query_clauses, query_sql,
};
use crate::domain::time::Ts;
use crate::ids::EnvId;
use crate::store::Backend;
use crate::store::projections::{Change, ProjectionRecord, Registered};
use crate::store::sql_projections::{NewSqlProjection, RebuildStep, SqlBatch};

/// Events applied per transaction.
const APPLY_BATCH: i64 = 500;
/// Failed attempts at one cursor before the projection is put in error.
const MAX_FAILURES: u32 = 3;
/// How often the applier looks again while some projection is held back.
const RECHECK: Duration = Duration::from_millis(500);
/// Rebuild steps per pass over the projections (each at most `APPLY_BATCH` events).
const REBUILD_STEPS_PER_PASS: usize = 20;

/// What a pass over the SQL projections leaves to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Pass {
    Idle,
    /// Some projection is held back by an open transaction: look again soon.
    HeldBack,
    /// A rebuild has more steps: go on at once.
    MoreWork,
}

/// `CreateSQLProjection` as the caller gives it.
#[derive(Debug, Clone)]
pub struct CreateSqlProjection {
    pub name: String,
    pub table_sql: String,
    pub event_handlers: BTreeMap<String, String>,
    pub events: Vec<String>,
    pub description: String,
    pub actor: Actor,
}

/// A page of a SQL projection's table.
#[derive(Debug, Clone)]
pub struct SqlRows {
    pub columns: Vec<String>,
    pub rows: Vec<Value>,
    pub total: i64,
}

/// `RebuildProjection` as the caller gives it.
#[derive(Debug, Clone, Default)]
pub struct RebuildRequest {
    pub partition: String,
    pub from_event_id: String,
    pub to_event_id: String,
    pub dry_run: bool,
}

fn sql_backend(backend: Backend) -> SqlBackend {
    match backend {
        Backend::Postgres => SqlBackend::Postgres,
        Backend::Sqlite => SqlBackend::Sqlite,
    }
}

/// The table and handlers of a stored SQL projection (checked when it was created).
fn compiled(
    definition: &Definition,
) -> Result<
    (
        TableSpec,
        BTreeMap<String, crate::domain::sql_projection::HandlerSpec>,
    ),
    EngineError,
> {
    let table_sql = definition.table_sql.as_deref().unwrap_or_default();
    let spec = parse_table(table_sql).map_err(EngineError::FailedPrecondition)?;
    let mut handlers = BTreeMap::new();
    for (event, sql) in definition.event_handlers.iter().flatten() {
        handlers.insert(
            event.clone(),
            parse_handler(event, sql, &spec).map_err(EngineError::FailedPrecondition)?,
        );
    }
    Ok((spec, handlers))
}

impl Engine {
    fn sql_place(&self, env: &EnvId) -> (TablePlace, SqlBackend) {
        (
            TablePlace::of_env(env.as_str()),
            sql_backend(self.store().backend()),
        )
    }

    /// The statements that drop a SQL projection's tables (none for other kinds).
    pub(crate) fn sql_drop_statements(&self, projection: &ProjectionRecord) -> Vec<String> {
        if projection.definition.kind != ProjectionKind::Sql {
            return Vec::new();
        }
        let Ok((spec, _)) = compiled(&projection.definition) else {
            return Vec::new();
        };
        let (place, backend) = self.sql_place(&projection.env_id);
        [false, true]
            .iter()
            .map(|shadow| {
                format!(
                    "DROP TABLE IF EXISTS {}",
                    place.qualified(backend, &spec.table, *shadow)
                )
            })
            .collect()
    }

    pub async fn create_sql_projection(
        &self,
        env: &EnvId,
        request: CreateSqlProjection,
    ) -> Result<(Registered, String), EngineError> {
        check_name(&request.name).map_err(EngineError::InvalidArgument)?;
        let checked =
            check_definition(&request.table_sql, &request.event_handlers, &request.events)
                .map_err(EngineError::InvalidArgument)?;
        let (spec, events) = (checked.table, checked.events);
        let events = crate::domain::projection::check_events(&events)
            .map_err(EngineError::InvalidArgument)?;
        let (place, backend) = self.sql_place(env);
        let mut create = Vec::new();
        if backend == SqlBackend::Postgres {
            create.push(format!("CREATE SCHEMA IF NOT EXISTS \"{}\"", place.schema));
        }
        create.push(spec.ddl(&place, backend, false));
        let definition = Definition {
            kind: ProjectionKind::Sql,
            events,
            partition_key: String::new(),
            description: request.description,
            table_sql: Some(request.table_sql),
            event_handlers: Some(request.event_handlers),
        };
        let projection = NewSqlProjection {
            env_id: env.clone(),
            name: request.name,
            definition,
            create,
            change: Change::by(request.actor),
        };
        let registered = self
            .store()
            .create_sql_projection(&projection)
            .await?
            .map_err(EngineError::FailedPrecondition)?;
        if registered.registration == Registration::Created {
            self.bus().projections_changed();
        }
        Ok((registered, place.qualified(backend, &spec.table, false)))
    }

    /// The physical table of a SQL projection, as SQL text (for users' own queries).
    pub fn sql_projection_table(&self, projection: &ProjectionRecord) -> Option<String> {
        let (spec, _) = compiled(&projection.definition).ok()?;
        let (place, backend) = self.sql_place(&projection.env_id);
        Some(place.qualified(backend, &spec.table, false))
    }

    pub async fn query_sql_projection(
        &self,
        env: &EnvId,
        name: &str,
        where_clause: &str,
        order_by: &str,
        limit: i64,
        offset: i64,
    ) -> Result<SqlRows, EngineError> {
        let projection = self.projection(env, name).await?;
        if projection.definition.kind != ProjectionKind::Sql {
            return Err(EngineError::FailedPrecondition(format!(
                "projection '{name}' is {}: only a SQL projection has a table to query (use GetProjection)",
                projection.definition.kind.as_str()
            )));
        }
        let limit = super::page_size(limit, 100, 1000)?;
        if offset < 0 {
            return Err(EngineError::InvalidArgument(format!(
                "offset must not be negative (got {offset})"
            )));
        }
        let (spec, _) = compiled(&projection.definition)?;
        let clauses =
            query_clauses(&spec, where_clause, order_by).map_err(EngineError::InvalidArgument)?;
        let (place, backend) = self.sql_place(env);
        let (page, count) = query_sql(&spec, &place, backend, &clauses);
        let (rows, total) = match self
            .store()
            .query_sql_projection(&page, &count, limit, offset)
            .await
        {
            Ok(answer) => answer,
            Err(crate::store::StoreError::Invalid(_)) => {
                return Err(EngineError::InvalidArgument(
                    "the query failed: the database refused the filter or the ordering (a value of the wrong type, a division by zero, …)".into(),
                ));
            }
            Err(e) => return Err(e.into()),
        };
        Ok(SqlRows {
            columns: spec.columns.iter().map(|c| c.name.clone()).collect(),
            rows,
            total,
        })
    }

    /// Keeps every active SQL projection up to date and carries rebuilds forward, until shutdown.
    pub(crate) async fn run_sql_projections(&self) {
        let changes = self.bus().projection_changes();
        let mut failures: HashMap<(String, String, i64), u32> = HashMap::new();
        loop {
            let notified = changes.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let pass = match self.apply_sql_projections(&mut failures).await {
                Ok(pass) => pass,
                Err(e) => {
                    tracing::warn!(error = %e, "SQL projections: reading them failed; trying again");
                    Pass::HeldBack
                }
            };
            let wait = match pass {
                Pass::MoreWork => Duration::ZERO,
                Pass::HeldBack => RECHECK,
                Pass::Idle => Duration::from_secs(30),
            };
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep(wait) => {}
                () = self.shutdown_token().cancelled() => return,
            }
        }
    }

    /// One pass over the due projections. A failing one is logged and retried on the next pass;
    /// it never holds the others up.
    async fn apply_sql_projections(
        &self,
        failures: &mut HashMap<(String, String, i64), u32>,
    ) -> Result<Pass, EngineError> {
        let due = self.store().sql_projections_due().await?;
        let mut pass = Pass::Idle;
        for projection in due {
            if projection.status.delivers() {
                match self.catch_up_sql(&projection, failures).await {
                    Ok(true) => pass = pass.max(Pass::HeldBack),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(projection = %projection.name, error = %e, "SQL projection: applying failed; trying again");
                        pass = pass.max(Pass::HeldBack);
                    }
                }
            }
            if projection
                .rebuild
                .as_ref()
                .is_some_and(|r| r["status"] == "running")
            {
                match self.rebuild_sql(&projection).await {
                    Ok(true) => pass = Pass::MoreWork,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(projection = %projection.name, error = %e, "SQL projection rebuild: a step failed; trying again");
                        pass = pass.max(Pass::HeldBack);
                    }
                }
            }
        }
        Ok(pass)
    }

    async fn catch_up_sql(
        &self,
        projection: &ProjectionRecord,
        failures: &mut HashMap<(String, String, i64), u32>,
    ) -> Result<bool, EngineError> {
        let Ok((spec, handlers)) = compiled(&projection.definition) else {
            return Ok(false);
        };
        let (place, backend) = self.sql_place(&projection.env_id);
        let batch = SqlBatch {
            env_id: projection.env_id.clone(),
            name: projection.name.clone(),
            events: projection.definition.events.clone(),
            handlers: handlers
                .iter()
                .map(|(e, h)| (e.clone(), h.render(&spec, &place, backend, false)))
                .collect(),
            limit: APPLY_BATCH,
        };
        loop {
            match self.store().apply_sql_projection(&batch).await? {
                Ok(applied) if applied.events == 0 => break,
                Ok(applied) => {
                    self.bus().projections_changed();
                    if (applied.events as i64) < APPLY_BATCH {
                        break;
                    }
                }
                Err(failure) => {
                    let key = (
                        projection.env_id.to_string(),
                        projection.name.clone(),
                        failure.seq,
                    );
                    let n = failures.entry(key).or_insert(0);
                    *n += 1;
                    if *n >= MAX_FAILURES {
                        let change = Change::by(Actor {
                            key_id: "server".into(),
                            reason: "handler failed".into(),
                        });
                        let message = format!("{failure} ({n} attempts)");
                        self.store()
                            .set_projection_status(
                                &projection.env_id,
                                &projection.name,
                                crate::domain::projection::ProjectionStatus::Error,
                                &message,
                                &change,
                            )
                            .await?;
                        self.bus().projections_changed();
                        return Ok(false);
                    }
                    return Ok(true);
                }
            }
        }
        let held = self
            .store()
            .projection_holdback(
                &projection.env_id,
                &projection.definition.events,
                projection.cursor_seq,
            )
            .await?;
        Ok(held.held > 0)
    }

    /// Carries a rebuild forward by a few steps; true when it has more to do.
    async fn rebuild_sql(&self, projection: &ProjectionRecord) -> Result<bool, EngineError> {
        let Some(job) = projection.rebuild.clone() else {
            return Ok(false);
        };
        let (spec, handlers) = compiled(&projection.definition)?;
        let (place, backend) = self.sql_place(&projection.env_id);
        let dry_run = job["dry_run"].as_bool().unwrap_or(false);
        let (main, shadow) = (
            place.qualified(backend, &spec.table, false),
            place.qualified(backend, &spec.table, true),
        );
        let finish = if dry_run {
            vec![format!("DROP TABLE IF EXISTS {shadow}")]
        } else {
            let leaf = match backend {
                SqlBackend::Postgres => spec.table.clone(),
                SqlBackend::Sqlite => format!("{}{}", place.prefix, spec.table),
            };
            vec![
                format!("DROP TABLE IF EXISTS {main}"),
                format!("ALTER TABLE {shadow} RENAME TO \"{leaf}\""),
            ]
        };
        let step = RebuildStep {
            env_id: projection.env_id.clone(),
            name: projection.name.clone(),
            events: projection.definition.events.clone(),
            handlers: handlers
                .iter()
                .map(|(e, h)| (e.clone(), h.render(&spec, &place, backend, true)))
                .collect(),
            job_id: job["job_id"].as_str().unwrap_or_default().to_owned(),
            to_seq: job["to_seq"].as_i64(),
            limit: APPLY_BATCH,
            finish,
            rename_indexes: (backend == SqlBackend::Postgres && !dry_run)
                .then(|| (place.schema.clone(), spec.table.clone())),
            dry_run,
        };
        // A bounded share of the pass, so the other projections keep up meanwhile.
        for _ in 0..REBUILD_STEPS_PER_PASS {
            match self.store().rebuild_sql_step(&step).await? {
                Ok(progress) if progress.finished => {
                    self.bus().projections_changed();
                    return Ok(false);
                }
                Ok(_) => {}
                Err(failure) => {
                    let mut job = job;
                    job["status"] = json!("failed");
                    job["error"] = json!(failure.to_string());
                    self.store()
                        .run_composed(&[format!("DROP TABLE IF EXISTS {shadow}")])
                        .await?;
                    self.store()
                        .set_projection_rebuild(&projection.env_id, &projection.name, Some(&job))
                        .await?;
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// `RebuildProjection`: SQL projections replay into a shadow table that is swapped in when
    /// caught up; runner-applied ones start again from the start (or `from_event_id`) in a
    /// fresh state generation, the runner's lease fenced so it reloads.
    pub async fn rebuild_projection(
        &self,
        env: &EnvId,
        name: &str,
        request: RebuildRequest,
    ) -> Result<Value, EngineError> {
        let projection = self.projection(env, name).await?;
        if projection
            .rebuild
            .as_ref()
            .is_some_and(|r| r["status"] == "running")
        {
            return Err(EngineError::FailedPrecondition(format!(
                "projection '{name}' is already rebuilding (GetRebuildJob shows its progress; CancelRebuild stops it)"
            )));
        }
        if !request.partition.is_empty() {
            return Err(EngineError::InvalidArgument(
                "partition: a rebuild replays the whole projection; rebuilding one partition is not supported".into(),
            ));
        }
        let seq_of = |id: &str| {
            let id = id.trim().to_owned();
            async move {
                if id.is_empty() {
                    Ok(None)
                } else {
                    self.event_seq(env, &id).await.map(Some)
                }
            }
        };
        let from_seq = seq_of(&request.from_event_id).await?;
        let to_seq = seq_of(&request.to_event_id).await?;
        if let (Some(f), Some(t)) = (from_seq, to_seq)
            && f > t
        {
            return Err(EngineError::InvalidArgument(
                "from_event_id comes after to_event_id".into(),
            ));
        }
        let events = &projection.definition.events;
        // Replay starts just before from_event_id (inclusive), or at the start.
        let start = from_seq.map_or(0, |f| f - 1);
        let total = self
            .store()
            .pending_projection_events(env, events, start, to_seq.or(Some(projection.cursor_seq)))
            .await?;
        let job = json!({
            "job_id": uuid::Uuid::now_v7().to_string(),
            "status": "running",
            "events_processed": 0,
            "total_events": total,
            "position": start,
            "start_seq": start,
            "target_seq": to_seq.unwrap_or(projection.cursor_seq),
            "to_seq": to_seq,
            "from_event_id": request.from_event_id,
            "to_event_id": request.to_event_id,
            "partition": request.partition,
            "dry_run": request.dry_run,
            "started_at": Ts::now().to_rfc3339(),
        });
        match projection.definition.kind {
            ProjectionKind::Sql => {
                let (spec, _) = compiled(&projection.definition)?;
                let (place, backend) = self.sql_place(env);
                let shadow = place.qualified(backend, &spec.table, true);
                self.store()
                    .run_composed(&[
                        format!("DROP TABLE IF EXISTS {shadow}"),
                        spec.ddl(&place, backend, true),
                    ])
                    .await?;
            }
            ProjectionKind::Managed | ProjectionKind::External => {
                if request.dry_run {
                    return Err(EngineError::InvalidArgument(format!(
                        "dry_run: projection '{name}' is applied by its runner, so the server cannot replay it on its own; a dry run is for SQL projections"
                    )));
                }
                if to_seq.is_some() {
                    return Err(EngineError::InvalidArgument(
                        "to_event_id: a runner-applied projection replays up to the present".into(),
                    ));
                }
                self.store()
                    .restart_projection(env, name, start, &job)
                    .await?;
                self.bus().projections_changed();
                return Ok(job);
            }
        }
        self.store()
            .set_projection_rebuild(env, name, Some(&job))
            .await?;
        self.bus().projections_changed();
        Ok(job)
    }

    /// The rebuild job of a projection, its progress brought up to date.
    pub async fn rebuild_job(&self, env: &EnvId, name: &str) -> Result<Value, EngineError> {
        let projection = self.projection(env, name).await?;
        let Some(mut job) = projection.rebuild.clone() else {
            return Err(EngineError::NotFound {
                kind: "rebuild job of projection",
                id: name.to_owned(),
            });
        };
        if projection.definition.kind != ProjectionKind::Sql && job["status"] == "running" {
            // A runner replays: progress is its cursor against the target.
            let start = job["start_seq"].as_i64().unwrap_or(0);
            let target = job["target_seq"].as_i64().unwrap_or(0);
            let pending = self
                .store()
                .pending_projection_events(
                    env,
                    &projection.definition.events,
                    projection.cursor_seq,
                    Some(target),
                )
                .await?;
            let total = job["total_events"].as_i64().unwrap_or(0);
            job["events_processed"] = json!((total - pending).max(0));
            job["position"] = json!(projection.cursor_seq.max(start));
            if pending == 0 {
                job["status"] = json!("completed");
                job["finished_at"] = json!(Ts::now().to_rfc3339());
                self.store()
                    .set_projection_rebuild(env, name, Some(&job))
                    .await?;
            }
        }
        Ok(job)
    }

    pub async fn cancel_rebuild(&self, env: &EnvId, name: &str) -> Result<String, EngineError> {
        let projection = self.projection(env, name).await?;
        let Some(mut job) = projection.rebuild.clone() else {
            return Err(EngineError::NotFound {
                kind: "rebuild job of projection",
                id: name.to_owned(),
            });
        };
        if job["status"] != "running" {
            return Ok(job["status"].as_str().unwrap_or("completed").to_owned());
        }
        if projection.definition.kind != ProjectionKind::Sql {
            return Err(EngineError::FailedPrecondition(
                "the replay of a runner-applied projection cannot be cancelled: its old state is gone once the replay starts".into(),
            ));
        }
        job["status"] = json!("cancelled");
        self.store()
            .set_projection_rebuild(env, name, Some(&job))
            .await?;
        let (spec, _) = compiled(&projection.definition)?;
        let (place, backend) = self.sql_place(env);
        self.store()
            .run_composed(&[format!(
                "DROP TABLE IF EXISTS {}",
                place.qualified(backend, &spec.table, true)
            )])
            .await?;
        Ok("cancelled".into())
    }
}
