//! `sql_store!`: the one implementation of [`Store`](super::Store), instantiated per backend.
//!
//! The SQL differs per backend (placeholders, JSON functions, row locks) and lives in
//! `sql/<backend>/<name>.sql`; the binding, row mapping and transaction shape are shared here.

macro_rules! sql_store {
    ($store:ty, $db:ty, $dir:literal, $backend:expr) => {
        macro_rules! sql {
            ($name:literal) => {
                include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/sql/", $dir, "/", $name, ".sql"))
            };
        }

        /// Appends one history entry inside the caller's transaction.
        async fn append_history(
            conn: &mut <$db as sqlx::Database>::Connection,
            entry: &$crate::domain::history::NewHistoryEntry,
            at: $crate::domain::time::Ts,
        ) -> Result<(), $crate::store::StoreError> {
            sqlx::query(sql!("append_history"))
                .bind(at)
                .bind(entry.env_id.as_str())
                .bind(entry.kind.as_str())
                .bind(entry.run_id.as_ref().map(|r| r.as_str()))
                .bind(entry.function_id.as_ref().map(|f| f.as_str()))
                .bind(entry.event_id.as_ref().map(|e| e.as_str()))
                .bind(sqlx::types::Json(&entry.payload))
                .execute(&mut *conn)
                .await?;
            Ok(())
        }

        async fn select_run(
            conn: &mut <$db as sqlx::Database>::Connection,
            env: &$crate::ids::EnvId,
            id: &$crate::ids::RunId,
        ) -> Result<Option<$crate::store::model::RunRecord>, $crate::store::StoreError> {
            let row: Option<$crate::store::model::RunRow> = sqlx::query_as(sql!("get_run"))
                .bind(env.as_str())
                .bind(id.as_str())
                .fetch_optional(&mut *conn)
                .await?;
            row.map($crate::store::model::RunRecord::try_from).transpose()
        }

        async fn select_function(
            conn: &mut <$db as sqlx::Database>::Connection,
            env: &$crate::ids::EnvId,
            id: &$crate::ids::FunctionId,
        ) -> Result<Option<$crate::store::model::FunctionRecord>, $crate::store::StoreError> {
            let row: Option<$crate::store::model::FunctionRow> = sqlx::query_as(sql!("get_function"))
                .bind(env.as_str())
                .bind(id.as_str())
                .fetch_optional(&mut *conn)
                .await?;
            row.map($crate::store::model::FunctionRecord::try_from).transpose()
        }

        async fn select_event_run_ids(
            conn: &mut <$db as sqlx::Database>::Connection,
            env: &$crate::ids::EnvId,
            event: &$crate::ids::EventId,
        ) -> Result<Vec<$crate::ids::RunId>, $crate::store::StoreError> {
            let ids: Vec<String> = sqlx::query_scalar(sql!("run_ids_for_event"))
                .bind(env.as_str())
                .bind(event.as_str())
                .fetch_all(&mut *conn)
                .await?;
            Ok(ids.into_iter().map($crate::ids::RunId::from_stored).collect())
        }

        #[async_trait::async_trait]
        impl $crate::store::Store for $store {
            fn backend(&self) -> $crate::store::Backend {
                $backend
            }

            async fn migrate(&self) -> Result<(), $crate::store::StoreError> {
                self.run_migrations().await
            }

            async fn ping(&self) -> Result<(), $crate::store::StoreError> {
                sqlx::query("SELECT 1").execute(self.reader()).await?;
                Ok(())
            }

            async fn record_event(
                &self,
                event: &$crate::store::model::NewEvent,
                runs: &[$crate::store::model::NewRun],
            ) -> Result<$crate::store::model::EventOutcome, $crate::store::StoreError> {
                use $crate::domain::history::{HistoryKind, NewHistoryEntry};
                use $crate::store::model::EventOutcome;
                let mut tx = self.writer().begin().await?;
                let inserted: Option<i64> = sqlx::query_scalar(sql!("insert_event"))
                    .bind(event.id.as_str())
                    .bind(event.env_id.as_str())
                    .bind(&event.name)
                    .bind(sqlx::types::Json(&event.data))
                    .bind(sqlx::types::Json(&event.metadata))
                    .bind(&event.source)
                    .bind(event.idempotency_key.as_deref())
                    .bind(event.version)
                    .bind(event.received_at)
                    .fetch_optional(&mut *tx)
                    .await?;
                if inserted.is_none() {
                    // The idempotency key exists: answer with the first emit's result.
                    let first: String = sqlx::query_scalar(sql!("find_event_by_idempotency_key"))
                        .bind(event.env_id.as_str())
                        .bind(event.idempotency_key.as_deref())
                        .fetch_one(&mut *tx)
                        .await?;
                    let first = $crate::ids::EventId::from_stored(first);
                    let run_ids = select_event_run_ids(&mut tx, &event.env_id, &first).await?;
                    tx.rollback().await?;
                    return Ok(EventOutcome::Duplicate { event_id: first, run_ids });
                }
                let at = event.received_at;
                append_history(
                    &mut tx,
                    &NewHistoryEntry {
                        env_id: event.env_id.clone(),
                        kind: HistoryKind::EventReceived,
                        run_id: None,
                        function_id: None,
                        event_id: Some(event.id.clone()),
                        payload: serde_json::json!({
                            "name": event.name,
                            "source": event.source,
                            "idempotency_key": event.idempotency_key,
                            "run_count": runs.len(),
                        }),
                    },
                    at,
                )
                .await?;
                let wire_event = serde_json::json!({
                    "id": event.id,
                    "name": event.name,
                    "data": event.data,
                    "metadata": event.metadata,
                    "source": event.source,
                    "timestamp": event.received_at.to_rfc3339(),
                });
                // Existing job rows (the waits this event satisfies) are locked before any lane
                // lock is taken for the new runs: the lock order every transaction keeps.
                let mut effects = satisfy_waits(&mut tx, &event.env_id, &wire_event, &event.name, at).await?;
                for run in runs {
                    let insert = RunInsert {
                        env_id: &event.env_id,
                        id: &run.id,
                        function_id: &run.function_id,
                        function_version: run.function_version,
                        event_id: Some(&event.id),
                        event_name: &event.name,
                        input: &event.data,
                        max_attempts: run.max_attempts,
                        parent: None,
                        parent_step: None,
                        lane: run.lane.as_ref(),
                    };
                    effects.merge(create_run(&mut tx, &insert, at).await?);
                }
                effects.stored.extend(inserted.map(|seq| ($crate::store::StoredKind::Event, seq)));
                notify_commit(&mut tx, self.node_id(), &effects).await?;
                tx.commit().await?;
                Ok(EventOutcome::Stored {
                    event_id: event.id.clone(),
                    run_ids: runs.iter().map(|r| r.id.clone()).collect(),
                    effects,
                })
            }

            async fn get_event(
                &self,
                env: &$crate::ids::EnvId,
                id: &$crate::ids::EventId,
            ) -> Result<Option<$crate::store::model::EventRecord>, $crate::store::StoreError> {
                let row: Option<$crate::store::model::EventRow> = sqlx::query_as(sql!("get_event"))
                    .bind(env.as_str())
                    .bind(id.as_str())
                    .fetch_optional(self.reader())
                    .await?;
                Ok(row.map(Into::into))
            }

            async fn list_events(
                &self,
                env: &$crate::ids::EnvId,
                q: &$crate::store::model::EventQuery,
            ) -> Result<Vec<$crate::store::model::EventRecord>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::model::EventRow> = sqlx::query_as(sql!("list_events"))
                    .bind(env.as_str())
                    .bind(q.page.before_seq)
                    .bind(q.name.as_deref())
                    .bind(q.names.as_ref().map(sqlx::types::Json))
                    .bind(q.source.as_deref())
                    .bind(q.since)
                    .bind(q.until)
                    .bind(q.search.as_ref().map(|s| format!("%{}%", escape_like(s))))
                    .bind(q.page.limit)
                    .fetch_all(self.reader())
                    .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn event_names(
                &self,
                env: &$crate::ids::EnvId,
                q: &$crate::store::model::EventNameQuery,
            ) -> Result<(Vec<$crate::store::model::EventNameCount>, i64), $crate::store::StoreError> {
                let rows: Vec<(String, i64, i64)> = sqlx::query_as(sql!("event_names"))
                    .bind(env.as_str())
                    .bind(q.source.as_deref())
                    .bind(q.since)
                    .bind(q.until)
                    .bind(q.scan_cap)
                    .fetch_all(self.reader())
                    .await?;
                let scanned = rows.first().map_or(0, |r| r.2);
                let names = rows
                    .into_iter()
                    .map(|(name, count, _)| $crate::store::model::EventNameCount { name, count })
                    .collect();
                Ok((names, scanned))
            }

            async fn run_ids_for_event(
                &self,
                env: &$crate::ids::EnvId,
                event: &$crate::ids::EventId,
            ) -> Result<Vec<$crate::ids::RunId>, $crate::store::StoreError> {
                let mut conn = self.reader().acquire().await?;
                select_event_run_ids(&mut conn, env, event).await
            }

            async fn cancel_run(
                &self,
                env: &$crate::ids::EnvId,
                id: &$crate::ids::RunId,
                reason: &str,
            ) -> Result<$crate::store::model::CancelOutcome, $crate::store::StoreError> {
                use $crate::domain::history::{HistoryKind, NewHistoryEntry};
                use $crate::store::model::CancelOutcome;
                let mut tx = self.writer().begin().await?;
                // The job row before the run row: the lock order every transaction keeps.
                let _job: Option<String> = sqlx::query_scalar(sql!("lock_run_job"))
                    .bind(id.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                let locked: Option<String> = sqlx::query_scalar(sql!("lock_run"))
                    .bind(env.as_str())
                    .bind(id.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(previous) = locked else {
                    return Ok(CancelOutcome::NotFound);
                };
                let previous: $crate::domain::run::RunStatus = previous
                    .parse()
                    .map_err(|e| $crate::store::StoreError::Corrupt(format!("run {id}: {e}")))?;
                if previous.is_terminal() {
                    let run = select_run(&mut tx, env, id).await?;
                    tx.commit().await?;
                    return Ok(run.map_or(CancelOutcome::NotFound, CancelOutcome::AlreadyEnded));
                }
                let now = $crate::domain::time::Ts::now();
                sqlx::query(sql!("cancel_run"))
                    .bind(env.as_str())
                    .bind(id.as_str())
                    .bind(reason)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                let released = release_run(&mut tx, id, $crate::domain::run::RunStatus::Cancelled, None, None, now).await?;
                notify_commit(&mut tx, self.node_id(), &released).await?;
                let run = select_run(&mut tx, env, id)
                    .await?
                    .ok_or_else(|| $crate::store::StoreError::Internal("run vanished under lock".into()))?;
                for (kind, payload) in [
                    (
                        HistoryKind::RunStatusChanged,
                        serde_json::json!({"from": previous.as_str(), "to": "cancelled"}),
                    ),
                    (HistoryKind::RunCancelled, serde_json::json!({"reason": reason})),
                ] {
                    let entry = NewHistoryEntry {
                        env_id: env.clone(),
                        kind,
                        run_id: Some(id.clone()),
                        function_id: Some(run.function_id.clone()),
                        event_id: run.event_id.clone(),
                        payload,
                    };
                    append_history(&mut tx, &entry, now).await?;
                }
                tx.commit().await?;
                Ok(CancelOutcome::Cancelled(run))
            }

            async fn claim_jobs(
                &self,
                request: &$crate::store::model::ClaimRequest,
            ) -> Result<Vec<$crate::store::model::ClaimedJob>, $crate::store::StoreError> {
                self.claim_jobs_impl(request).await
            }

            async fn ack_job(
                &self,
                dispatch_id: &str,
                fence: &$crate::domain::job::Fence,
                lease_expires_at: $crate::domain::time::Ts,
            ) -> Result<$crate::store::model::FenceOutcome, $crate::store::StoreError> {
                self.ack_job_impl(dispatch_id, fence, lease_expires_at).await
            }

            async fn report_job(
                &self,
                report: &$crate::domain::job::JobReport,
                lease_expires_at: $crate::domain::time::Ts,
            ) -> Result<$crate::store::model::FenceOutcome, $crate::store::StoreError> {
                self.report_job_impl(report, lease_expires_at).await
            }

            async fn report_jobs(
                &self,
                reports: &[$crate::domain::job::JobReport],
                lease_expires_at: $crate::domain::time::Ts,
            ) -> Result<Vec<$crate::store::model::FenceOutcome>, $crate::store::StoreError> {
                self.report_jobs_impl(reports, lease_expires_at).await
            }

            async fn fire_timers(&self, limit: i64) -> Result<$crate::store::model::Effects, $crate::store::StoreError> {
                self.fire_timers_impl(limit).await
            }

            async fn next_due(&self) -> Result<Option<$crate::domain::time::Ts>, $crate::store::StoreError> {
                self.next_due_impl().await
            }

            async fn register_worker(
                &self,
                worker: &$crate::store::model::WorkerRegistration,
            ) -> Result<(), $crate::store::StoreError> {
                self.register_worker_impl(worker).await
            }

            async fn heartbeat_worker(
                &self,
                env: &$crate::ids::EnvId,
                worker: &str,
                dispatch_ids: &[String],
                lease_expires_at: $crate::domain::time::Ts,
            ) -> Result<bool, $crate::store::StoreError> {
                self.heartbeat_impl(env, worker, dispatch_ids, lease_expires_at).await
            }

            async fn worker_functions(
                &self,
                env: &$crate::ids::EnvId,
                worker: &str,
            ) -> Result<Option<Vec<String>>, $crate::store::StoreError> {
                self.worker_functions_impl(env, worker).await
            }

            async fn list_workers(
                &self,
                env: &$crate::ids::EnvId,
            ) -> Result<Vec<$crate::store::model::WorkerRecord>, $crate::store::StoreError> {
                self.list_workers_impl(env).await
            }

            async fn listen(&self, wakeups: $crate::store::WakeupSink, shutdown: tokio_util::sync::CancellationToken) {
                self.listen_impl(wakeups, shutdown).await;
            }

            async fn event_by_seq(&self, seq: i64) -> Result<Option<$crate::store::model::EventRecord>, $crate::store::StoreError> {
                let row: Option<$crate::store::model::EventRow> =
                    sqlx::query_as(sql!("event_by_seq")).bind(seq).fetch_optional(self.reader()).await?;
                Ok(row.map(Into::into))
            }

            async fn release_job(
                &self,
                dispatch_id: &str,
                fence: &$crate::domain::job::Fence,
            ) -> Result<bool, $crate::store::StoreError> {
                let released = sqlx::query(sql!("release_job"))
                    .bind(dispatch_id)
                    .bind(fence.execution_seq)
                    .bind(&fence.lease_token)
                    .bind(fence.env_id.as_str())
                    .bind(&fence.worker_id)
                    .execute(self.writer())
                    .await?;
                Ok(released.rows_affected() == 1)
            }

            async fn close(&self) {
                self.writer().close().await;
                self.reader().close().await;
            }
        }

        $crate::store::exec_store::exec_store!($store, $db, $dir);

        /// Tells other nodes what this transaction changed: one NOTIFY per transaction, sent at
        /// commit (a no-op on SQLite, where every writer is in this process).
        async fn notify_commit(
            conn: &mut <$db as sqlx::Database>::Connection,
            node: &str,
            effects: &$crate::store::model::Effects,
        ) -> Result<(), $crate::store::StoreError> {
            if let Some(payload) = $crate::store::notify_payload(node, effects) {
                sqlx::query(sql!("notify_commit")).bind(payload).execute(&mut *conn).await?;
            }
            Ok(())
        }

        /// `LIKE` treats `%` and `_` as wildcards; a search for them should find them literally.
        fn escape_like(s: &str) -> String {
            s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
        }
    };
}

pub(crate) use sql_store;
