//! SQL projections in the store: their tables (created, queried, dropped), the application of a
//! batch of events by their handler statements together with the cursor move, and rebuilds into
//! a shadow table swapped in when caught up. The statements come composed from checked syntax
//! trees (`domain::sql_projection`); event values are bound.

use async_trait::async_trait;
use serde_json::{Value, json};

use super::Backend;
use super::StoreError;
use super::apply::write_history;
use super::db::{Db, SqlStore};
use super::events::{EventRecord, EventRow};
use super::projections::{Change, ProjectionRecord, Registered};
use super::sql::{Arg, Conn, args, sql};
use crate::domain::history::{HistoryKind, NewHistoryEntry};
use crate::domain::projection::{Definition, Registration, decide_registration};
use crate::domain::sql_projection::{EventFacts, RenderedStatement, param_value};
use crate::domain::time::Ts;
use crate::ids::EnvId;

#[async_trait]
pub trait SqlProjectionStore: Send + Sync {
    /// Creates the projection and its table in one transaction (`create` runs in order: the
    /// schema, then the table). An existing projection with the same definition is left as it
    /// is; one with another definition is refused with the reason.
    async fn create_sql_projection(
        &self,
        projection: &NewSqlProjection,
    ) -> Result<Result<Registered, String>, StoreError>;

    /// The SQL projections the server applies (active, or rebuilding), in every environment.
    async fn sql_projections_due(&self) -> Result<Vec<ProjectionRecord>, StoreError>;

    /// Applies the next events after the cursor (below the safe frontier) with their handlers
    /// and moves the cursor, in one transaction; a failing statement rolls the batch back.
    async fn apply_sql_projection(
        &self,
        batch: &SqlBatch,
    ) -> Result<Result<Applied, HandlerFailure>, StoreError>;

    /// One rebuild step: replays the events after the job's position up to the live cursor into
    /// the shadow table and records the new position in the same transaction; when it has
    /// caught up, swaps the shadow in (or drops it, for a dry run) and marks the job completed.
    /// A job no longer running (cancelled, replaced) makes no step.
    async fn rebuild_sql_step(
        &self,
        step: &RebuildStep,
    ) -> Result<Result<RebuildProgress, HandlerFailure>, StoreError>;

    /// Runs composed statements in one transaction (creating or dropping a shadow table).
    async fn run_composed(&self, statements: &[String]) -> Result<(), StoreError>;

    /// A page of a projection table's rows (one JSON object each) and how many match.
    async fn query_sql_projection(
        &self,
        page_sql: &str,
        count_sql: &str,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<Value>, i64), StoreError>;

    /// Records a rebuild job's state on the projection (`None`: no rebuild).
    async fn set_projection_rebuild(
        &self,
        env: &EnvId,
        name: &str,
        rebuild: Option<&Value>,
    ) -> Result<(), StoreError>;
}

#[derive(Debug, Clone)]
pub struct NewSqlProjection {
    pub env_id: EnvId,
    pub name: String,
    pub definition: Definition,
    pub create: Vec<String>,
    pub change: Change,
}

#[derive(Debug, Clone)]
pub struct SqlBatch {
    pub env_id: EnvId,
    pub name: String,
    pub events: Vec<String>,
    /// Event name → its handler, rendered for this store's backend.
    pub handlers: std::collections::BTreeMap<String, RenderedStatement>,
    pub limit: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub events: usize,
    pub cursor_seq: i64,
}

/// A handler statement the database refused: which event, and what kind of refusal (its
/// SQLSTATE class, never the database's own text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerFailure {
    pub event_id: String,
    pub event_name: String,
    pub seq: i64,
    pub reason: String,
}

impl std::fmt::Display for HandlerFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the handler for '{}' failed on event {} (seq {}): {}",
            self.event_name, self.event_id, self.seq, self.reason
        )
    }
}

#[derive(Debug, Clone)]
pub struct RebuildStep {
    pub env_id: EnvId,
    pub name: String,
    pub events: Vec<String>,
    /// Handlers rendered against the shadow table.
    pub handlers: std::collections::BTreeMap<String, RenderedStatement>,
    /// The job this step belongs to: its position and counts are read and written with the
    /// step, under the projection's row lock, so a step is never replayed twice.
    pub job_id: String,
    /// Replay no event after this one (`to_event_id`), if given.
    pub to_seq: Option<i64>,
    pub limit: i64,
    /// After the catch-up: drop (dry run) or swap in (the statements that do it).
    pub finish: Vec<String>,
    /// The shadow table's indexes are renamed after a swap: (schema, table, shadow prefix).
    pub rename_indexes: Option<(String, String)>,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebuildProgress {
    pub replayed: usize,
    pub position: i64,
    /// Caught up and swapped in (or dropped, for a dry run).
    pub finished: bool,
}

fn bind_values(backend: Backend, params: &[String], facts: &EventFacts<'_>) -> Vec<Bound> {
    params
        .iter()
        .map(|p| {
            let value = param_value(p, facts);
            match (backend, value) {
                (_, Value::Null) => Bound::Null,
                // Postgres: text, cast in the statement to the column's type.
                (Backend::Postgres, Value::String(s)) => Bound::Text(s),
                (Backend::Postgres, other) => Bound::Text(other.to_string()),
                (Backend::Sqlite, Value::String(s)) => Bound::Text(s),
                (Backend::Sqlite, Value::Bool(b)) => Bound::Int(i64::from(b)),
                (Backend::Sqlite, Value::Number(n)) => match n.as_i64() {
                    Some(i) => Bound::Int(i),
                    None => Bound::Float(n.as_f64().unwrap_or(0.0)),
                },
                (Backend::Sqlite, other) => Bound::Text(other.to_string()),
            }
        })
        .collect()
}

enum Bound {
    Null,
    Text(String),
    Int(i64),
    Float(f64),
}

impl Bound {
    fn arg(&self) -> Arg<'_> {
        match self {
            Self::Null => Arg::Text(None),
            Self::Text(s) => Arg::Text(Some(s.as_str())),
            Self::Int(i) => Arg::Int(Some(*i)),
            Self::Float(f) => Arg::Float(Some(*f)),
        }
    }
}

/// What kind of refusal a database error is, by SQLSTATE (Postgres) or result code (SQLite).
fn refusal(err: &sqlx::Error) -> String {
    let sqlx::Error::Database(db) = err else {
        return "the statement could not run".into();
    };
    let code = db.code().map(|c| c.to_string()).unwrap_or_default();
    let kind = match code.as_str() {
        "23505" | "2067" | "1555" => "a unique constraint refused the row",
        "23502" | "1299" => "a NOT NULL column got no value",
        "23514" | "275" => "a CHECK constraint refused the row",
        c if c.starts_with("22") => "a value does not fit its column's type",
        c if c.starts_with("42") => "the statement does not fit the table",
        "19" => "a constraint refused the row",
        _ => "the database refused the statement",
    };
    match db.constraint() {
        Some(constraint) => format!("{kind} (constraint {constraint}, code {code})"),
        None if code.is_empty() => kind.to_owned(),
        None => format!("{kind} (code {code})"),
    }
}

async fn run_handlers<C: Conn + ?Sized>(
    conn: &mut C,
    backend: Backend,
    handlers: &std::collections::BTreeMap<String, RenderedStatement>,
    events: &[EventRecord],
) -> Result<Result<(), HandlerFailure>, StoreError> {
    for event in events {
        let Some(handler) = handlers.get(&event.name) else {
            continue;
        };
        let entity = event.entity.as_ref();
        let facts = EventFacts {
            id: event.id.as_str(),
            name: &event.name,
            seq: event.seq,
            timestamp: event.received_at.to_rfc3339(),
            source: &event.source,
            entity_id: entity.map(|e| e.entity_id.as_str()),
            entity_version: entity.map(|e| e.version),
            data: &event.data,
            metadata: &event.metadata,
        };
        let bound = bind_values(backend, &handler.params, &facts);
        let args: Vec<Arg<'_>> = bound.iter().map(Bound::arg).collect();
        if let Err(err) = conn.execute_composed(&handler.sql, args).await {
            let reason = refusal(&err);
            let store = StoreError::from(err);
            if store.is_retryable() {
                return Err(store);
            }
            tracing::warn!(projection_event = %event.id, error = %store, "SQL projection handler refused");
            return Ok(Err(HandlerFailure {
                event_id: event.id.to_string(),
                event_name: event.name.clone(),
                seq: event.seq,
                reason,
            }));
        }
    }
    Ok(Ok(()))
}

#[async_trait]
impl<D: Db> SqlProjectionStore for SqlStore<D> {
    async fn create_sql_projection(
        &self,
        p: &NewSqlProjection,
    ) -> Result<Result<Registered, String>, StoreError> {
        let now = Ts::now();
        let mut tx = self.db.begin().await?;
        let current: Option<super::projections::ProjectionRow> = tx
            .fetch_optional(
                sql!("lock_projection"),
                args![p.env_id.as_str(), p.name.as_str()],
            )
            .await?;
        let current = current.map(|r| r.into_record()).transpose()?;
        let registration = decide_registration(
            current.as_ref().map(|c| (&c.definition, c.revision)),
            &p.definition,
        );
        match registration {
            Registration::Unchanged => {}
            Registration::Conflict(why) => return Ok(Err(why)),
            Registration::Updated { .. } => {
                return Ok(Err(format!(
                    "projection '{}' exists with another definition: delete it (DELETE /api/v1/projections/{}) and create it again, or rebuild it",
                    p.name, p.name
                )));
            }
            Registration::Created => {
                for statement in &p.create {
                    if let Err(err) = tx.execute_composed(statement, Vec::new()).await {
                        let exists = match &err {
                            sqlx::Error::Database(db) => {
                                db.code().as_deref() == Some("42P07")
                                    || db.message().contains("already exists")
                            }
                            _ => false,
                        };
                        if exists {
                            return Ok(Err(format!(
                                "the table of projection '{}' could not be created: a table of that name exists in the environment's projection schema",
                                p.name
                            )));
                        }
                        let reason = refusal(&err);
                        let store = StoreError::from(err);
                        if store.is_retryable() {
                            return Err(store);
                        }
                        tracing::warn!(error = %store, "creating a SQL projection's table");
                        return Ok(Err(format!(
                            "the table of projection '{}' could not be created: {reason}",
                            p.name
                        )));
                    }
                }
                let text = serde_json::to_string(&p.definition)
                    .map_err(|e| StoreError::Internal(format!("projection definition: {e}")))?;
                let revision = super::projections::archive_change(
                    &mut *tx,
                    &p.env_id,
                    &p.name,
                    None,
                    "registered",
                    &p.change,
                    now,
                )
                .await?;
                tx.execute(
                    sql!("insert_sql_projection"),
                    args![
                        p.env_id.as_str(),
                        p.name.as_str(),
                        text.as_str(),
                        revision,
                        now
                    ],
                )
                .await?;
                let entry = NewHistoryEntry {
                    env_id: p.env_id.clone(),
                    kind: HistoryKind::ProjectionChanged,
                    run_id: None,
                    function_id: None,
                    event_id: None,
                    payload: json!({"projection": p.name, "change_type": "registered",
                                    "kind": "sql", "events": p.definition.events,
                                    "actor_id": p.change.actor.key_id}),
                };
                write_history(&mut *tx, std::slice::from_ref(&entry), now).await?;
            }
        }
        let row: super::projections::ProjectionRow = tx
            .fetch_optional(
                sql!("get_projection"),
                args![p.env_id.as_str(), p.name.as_str()],
            )
            .await?
            .ok_or_else(|| StoreError::Internal(format!("projection '{}' vanished", p.name)))?;
        D::commit(tx).await?;
        Ok(Ok(Registered {
            registration,
            record: row.into_record()?,
        }))
    }

    async fn sql_projections_due(&self) -> Result<Vec<ProjectionRecord>, StoreError> {
        let rows: Vec<super::projections::ProjectionRow> = self
            .db
            .reader()
            .await?
            .fetch_all(sql!("list_sql_projections_due"), args![])
            .await?;
        rows.into_iter().map(|r| r.into_record()).collect()
    }

    async fn apply_sql_projection(
        &self,
        batch: &SqlBatch,
    ) -> Result<Result<Applied, HandlerFailure>, StoreError> {
        let now = Ts::now();
        let mut tx = self.db.begin().await?;
        // The row lock makes one node at a time apply this projection; the cursor read under it
        // is the last committed one.
        let row: Option<super::projections::ProjectionRow> = tx
            .fetch_optional(
                sql!("lock_projection"),
                args![batch.env_id.as_str(), batch.name.as_str()],
            )
            .await?;
        let Some(row) = row.map(|r| r.into_record()).transpose()? else {
            return Ok(Ok(Applied {
                events: 0,
                cursor_seq: 0,
            }));
        };
        if !row.status.delivers() {
            return Ok(Ok(Applied {
                events: 0,
                cursor_seq: row.cursor_seq,
            }));
        }
        let names = Value::from(batch.events.clone());
        let rows: Vec<EventRow> = tx
            .fetch_all(
                sql!("projection_events"),
                args![batch.env_id.as_str(), &names, row.cursor_seq, batch.limit],
            )
            .await?;
        let events: Vec<EventRecord> = rows.into_iter().map(EventRecord::from).collect();
        let Some(last) = events.last() else {
            return Ok(Ok(Applied {
                events: 0,
                cursor_seq: row.cursor_seq,
            }));
        };
        let backend = self.db.backend();
        if let Err(failure) = run_handlers(&mut *tx, backend, &batch.handlers, &events).await? {
            return Ok(Err(failure));
        }
        tx.execute(
            sql!("advance_projection_cursor"),
            args![
                batch.env_id.as_str(),
                batch.name.as_str(),
                last.seq,
                last.id.as_str(),
                Some(last.received_at),
                now
            ],
        )
        .await?;
        let payload = super::projection_notify_payload(self.db.node_id());
        tx.execute(sql!("notify_commit"), args![payload.as_str()])
            .await?;
        let applied = Applied {
            events: events.len(),
            cursor_seq: last.seq,
        };
        D::commit(tx).await?;
        Ok(Ok(applied))
    }

    async fn rebuild_sql_step(
        &self,
        step: &RebuildStep,
    ) -> Result<Result<RebuildProgress, HandlerFailure>, StoreError> {
        let now = Ts::now();
        let mut tx = self.db.begin().await?;
        let row: Option<super::projections::ProjectionRow> = tx
            .fetch_optional(
                sql!("lock_projection"),
                args![step.env_id.as_str(), step.name.as_str()],
            )
            .await?;
        let Some(row) = row.map(|r| r.into_record()).transpose()? else {
            return Ok(Ok(RebuildProgress {
                replayed: 0,
                position: 0,
                finished: true,
            }));
        };
        let Some(mut job) = row
            .rebuild
            .clone()
            .filter(|j| j["job_id"] == step.job_id.as_str() && j["status"] == "running")
        else {
            return Ok(Ok(RebuildProgress {
                replayed: 0,
                position: 0,
                finished: true,
            }));
        };
        let from_seq = job["position"].as_i64().unwrap_or(0);
        let up_to = step
            .to_seq
            .map_or(row.cursor_seq, |t| t.min(row.cursor_seq));
        let names = Value::from(step.events.clone());
        let rows: Vec<EventRow> = tx
            .fetch_all(
                sql!("projection_events_up_to"),
                args![step.env_id.as_str(), &names, from_seq, up_to, step.limit],
            )
            .await?;
        let events: Vec<EventRecord> = rows.into_iter().map(EventRecord::from).collect();
        let backend = self.db.backend();
        if let Err(failure) = run_handlers(&mut *tx, backend, &step.handlers, &events).await? {
            return Ok(Err(failure));
        }
        let position = events.last().map_or(from_seq, |e| e.seq);
        let finished = (events.len() as i64) < step.limit;
        if finished {
            for statement in &step.finish {
                tx.execute_composed(statement, Vec::new())
                    .await
                    .map_err(StoreError::from)?;
            }
            if let Some((schema, table)) = &step.rename_indexes {
                let indexes: Vec<String> = tx
                    .scalars(
                        sql!("projection_table_indexes"),
                        args![schema.as_str(), table.as_str()],
                    )
                    .await?;
                for index in indexes {
                    if let Some(renamed) = index.strip_prefix(&format!("{table}__rebuild")) {
                        let quote = |n: &str| format!("\"{}\"", n.replace('"', "\"\""));
                        let statement = format!(
                            "ALTER INDEX {}.{} RENAME TO {}",
                            quote(schema),
                            quote(&index),
                            quote(&format!("{table}{renamed}"))
                        );
                        tx.execute_composed(&statement, Vec::new())
                            .await
                            .map_err(StoreError::from)?;
                    }
                }
            }
            if !step.dry_run && step.to_seq.is_some_and(|t| t < row.cursor_seq) {
                // Rebuilt up to an earlier event: the projection goes on live from there.
                let last = events.last();
                tx.execute(
                    sql!("set_projection_cursor"),
                    args![
                        step.env_id.as_str(),
                        step.name.as_str(),
                        position,
                        last.map(|e| e.id.to_string()).as_deref(),
                        last.map(|e| e.received_at),
                        now
                    ],
                )
                .await?;
            }
        }
        let processed = job["events_processed"].as_i64().unwrap_or(0) + events.len() as i64;
        job["events_processed"] = json!(processed);
        job["position"] = json!(position);
        if finished {
            job["status"] = json!("completed");
            job["finished_at"] = json!(now.to_rfc3339());
        }
        let text = job.to_string();
        tx.execute(
            sql!("set_projection_rebuild"),
            args![step.env_id.as_str(), step.name.as_str(), text.as_str(), now],
        )
        .await?;
        D::commit(tx).await?;
        Ok(Ok(RebuildProgress {
            replayed: events.len(),
            position,
            finished,
        }))
    }

    async fn run_composed(&self, statements: &[String]) -> Result<(), StoreError> {
        let mut tx = self.db.begin().await?;
        for statement in statements {
            tx.execute_composed(statement, Vec::new())
                .await
                .map_err(StoreError::from)?;
        }
        D::commit(tx).await?;
        Ok(())
    }

    async fn query_sql_projection(
        &self,
        page_sql: &str,
        count_sql: &str,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<Value>, i64), StoreError> {
        let mut reader = self.db.reader().await?;
        let rows = reader
            .fetch_composed_json(page_sql, args![limit, offset])
            .await?;
        let total = reader.composed_count(count_sql).await?;
        Ok((rows, total))
    }

    async fn set_projection_rebuild(
        &self,
        env: &EnvId,
        name: &str,
        rebuild: Option<&Value>,
    ) -> Result<(), StoreError> {
        let text = rebuild.map(Value::to_string);
        self.db
            .writer()
            .await?
            .execute(
                sql!("set_projection_rebuild"),
                args![env.as_str(), name, text.as_deref(), Ts::now()],
            )
            .await?;
        Ok(())
    }
}
