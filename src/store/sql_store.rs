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
            at: $crate::store::time::Ts,
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

        impl $store {
            async fn try_register_function(
                &self,
                reg: &$crate::store::model::FunctionRegistration,
            ) -> Result<$crate::store::model::RegisterOutcome, $crate::store::StoreError> {
                use $crate::domain::history::{HistoryKind, NewHistoryEntry};
                let now = $crate::store::time::Ts::now();
                let hash = reg.definition.content_hash();
                let mut tx = self.writer().begin().await?;
                let current: Option<(i32, String)> = sqlx::query_as(sql!("lock_function"))
                    .bind(reg.env_id.as_str())
                    .bind(reg.id.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                let version = match current {
                    Some((_, ref old_hash)) if *old_hash == hash => {
                        let function = select_function(&mut tx, &reg.env_id, &reg.id).await?.ok_or_else(
                            || $crate::store::StoreError::Internal("function vanished under lock".into()),
                        )?;
                        tx.commit().await?;
                        return Ok($crate::store::model::RegisterOutcome {
                            function,
                            created: false,
                            new_version: false,
                        });
                    }
                    Some((version, _)) => {
                        let next = version + 1;
                        sqlx::query(sql!("update_function"))
                            .bind(reg.env_id.as_str())
                            .bind(reg.id.as_str())
                            .bind(&reg.definition.name)
                            .bind(next)
                            .bind(sqlx::types::Json(&reg.definition))
                            .bind(&hash)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                        next
                    }
                    None => {
                        sqlx::query(sql!("insert_function"))
                            .bind(reg.env_id.as_str())
                            .bind(reg.id.as_str())
                            .bind(&reg.definition.name)
                            .bind(sqlx::types::Json(&reg.definition))
                            .bind(&hash)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                        1
                    }
                };
                sqlx::query(sql!("insert_function_version"))
                    .bind(reg.env_id.as_str())
                    .bind(reg.id.as_str())
                    .bind(version)
                    .bind(sqlx::types::Json(&reg.definition))
                    .bind(&hash)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                let entry = NewHistoryEntry {
                    env_id: reg.env_id.clone(),
                    kind: HistoryKind::FunctionRegistered,
                    run_id: None,
                    function_id: Some(reg.id.clone()),
                    event_id: None,
                    payload: serde_json::json!({
                        "version": version,
                        "definition_hash": hash,
                        "change_reason": reg.change_reason,
                        "definition": reg.definition,
                    }),
                };
                append_history(&mut tx, &entry, now).await?;
                let function = select_function(&mut tx, &reg.env_id, &reg.id)
                    .await?
                    .ok_or_else(|| $crate::store::StoreError::Internal("function missing after write".into()))?;
                tx.commit().await?;
                Ok($crate::store::model::RegisterOutcome {
                    function,
                    created: version == 1,
                    new_version: true,
                })
            }
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

            async fn bootstrap(
                &self,
                plan: &$crate::store::model::BootstrapPlan,
            ) -> Result<$crate::store::model::BootstrapOutcome, $crate::store::StoreError> {
                use $crate::ids::{ApiKeyId, EnvId, OrgId, ProjectId};
                let mut tx = self.writer().begin().await?;
                // Postgres: serialise concurrent first boots of several nodes.
                sqlx::query(sql!("bootstrap_lock")).execute(&mut *tx).await?;
                let orgs: i64 = sqlx::query_scalar(sql!("count_orgs")).fetch_one(&mut *tx).await?;
                if orgs > 0 {
                    tx.commit().await?;
                    return Ok($crate::store::model::BootstrapOutcome::AlreadyBootstrapped);
                }
                let now = $crate::store::time::Ts::now();
                let org = OrgId::generate();
                let project = ProjectId::generate();
                let env = EnvId::generate();
                sqlx::query(sql!("insert_org")).bind(org.as_str()).bind(&plan.org_name).bind(now)
                    .execute(&mut *tx).await?;
                sqlx::query(sql!("insert_project")).bind(project.as_str()).bind(org.as_str())
                    .bind(&plan.project_name).bind(now).execute(&mut *tx).await?;
                sqlx::query(sql!("insert_environment")).bind(env.as_str()).bind(project.as_str())
                    .bind(&plan.env_name).bind(now).execute(&mut *tx).await?;
                sqlx::query(sql!("insert_api_key"))
                    .bind(ApiKeyId::generate().as_str())
                    .bind(org.as_str())
                    .bind(project.as_str())
                    .bind(&plan.key_name)
                    .bind(&plan.key_prefix)
                    .bind(&plan.key_hash)
                    .bind("admin")
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok($crate::store::model::BootstrapOutcome::Created)
            }

            async fn find_api_key(
                &self,
                key_hash: &str,
            ) -> Result<Option<$crate::store::model::ApiKeyRecord>, $crate::store::StoreError> {
                let row: Option<$crate::store::model::ApiKeyRow> = sqlx::query_as(sql!("find_api_key"))
                    .bind(key_hash)
                    .fetch_optional(self.reader())
                    .await?;
                Ok(row.map(Into::into))
            }

            async fn find_environment(
                &self,
                project_id: &$crate::ids::ProjectId,
                name_or_id: &str,
            ) -> Result<Option<$crate::store::model::EnvironmentRecord>, $crate::store::StoreError> {
                let row: Option<$crate::store::model::EnvironmentRow> =
                    sqlx::query_as(sql!("find_environment"))
                        .bind(project_id.as_str())
                        .bind(name_or_id)
                        .fetch_optional(self.reader())
                        .await?;
                Ok(row.map(Into::into))
            }

            async fn default_environment(
                &self,
            ) -> Result<Option<$crate::store::model::EnvironmentRecord>, $crate::store::StoreError> {
                let row: Option<$crate::store::model::EnvironmentRow> =
                    sqlx::query_as(sql!("default_environment")).fetch_optional(self.reader()).await?;
                Ok(row.map(Into::into))
            }

            async fn register_function(
                &self,
                reg: &$crate::store::model::FunctionRegistration,
            ) -> Result<$crate::store::model::RegisterOutcome, $crate::store::StoreError> {
                // Two first registrations racing both see "absent"; the loser's insert hits the
                // primary key and is retried, then sees the winner's row.
                let mut attempt = 0;
                loop {
                    match self.try_register_function(reg).await {
                        Err($crate::store::StoreError::Conflict(_)) if attempt < 3 => attempt += 1,
                        other => return other,
                    }
                }
            }

            async fn get_function(
                &self,
                env: &$crate::ids::EnvId,
                id: &$crate::ids::FunctionId,
            ) -> Result<Option<$crate::store::model::FunctionRecord>, $crate::store::StoreError> {
                let mut conn = self.reader().acquire().await?;
                select_function(&mut conn, env, id).await
            }

            async fn list_functions(
                &self,
                env: &$crate::ids::EnvId,
                query: &$crate::store::model::FunctionQuery,
            ) -> Result<Vec<$crate::store::model::FunctionRecord>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::model::FunctionRow> = sqlx::query_as(sql!("list_functions"))
                    .bind(env.as_str())
                    .bind(query.status.map(|s| s.as_str()))
                    .bind(query.after_id.as_deref())
                    .bind(query.limit)
                    .fetch_all(self.reader())
                    .await?;
                rows.into_iter().map($crate::store::model::FunctionRecord::try_from).collect()
            }

            async fn active_functions(
                &self,
                env: &$crate::ids::EnvId,
            ) -> Result<Vec<$crate::store::model::FunctionRecord>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::model::FunctionRow> = sqlx::query_as(sql!("active_functions"))
                    .bind(env.as_str())
                    .fetch_all(self.reader())
                    .await?;
                rows.into_iter().map($crate::store::model::FunctionRecord::try_from).collect()
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

            async fn get_run(
                &self,
                env: &$crate::ids::EnvId,
                id: &$crate::ids::RunId,
            ) -> Result<Option<$crate::store::model::RunRecord>, $crate::store::StoreError> {
                let mut conn = self.reader().acquire().await?;
                select_run(&mut conn, env, id).await
            }

            async fn list_runs(
                &self,
                env: &$crate::ids::EnvId,
                q: &$crate::store::model::RunQuery,
            ) -> Result<Vec<$crate::store::model::RunRecord>, $crate::store::StoreError> {
                let statuses: Option<Vec<&str>> = (!q.statuses.is_empty())
                    .then(|| q.statuses.iter().map(|s| s.as_str()).collect());
                let rows: Vec<$crate::store::model::RunRow> = sqlx::query_as(sql!("list_runs"))
                    .bind(env.as_str())
                    .bind(q.page.before_seq)
                    .bind(q.function_id.as_ref().map(|f| f.as_str()))
                    .bind(statuses.map(sqlx::types::Json))
                    .bind(q.event_id.as_ref().map(|e| e.as_str()))
                    .bind(q.since)
                    .bind(q.until)
                    .bind(q.page.limit)
                    .fetch_all(self.reader())
                    .await?;
                rows.into_iter().map($crate::store::model::RunRecord::try_from).collect()
            }

            async fn run_steps(
                &self,
                env: &$crate::ids::EnvId,
                run: &$crate::ids::RunId,
            ) -> Result<Vec<$crate::store::model::StepRecord>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::model::StepRow> = sqlx::query_as(sql!("run_steps"))
                    .bind(env.as_str())
                    .bind(run.as_str())
                    .fetch_all(self.reader())
                    .await?;
                Ok(rows.into_iter().map(Into::into).collect())
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
                let now = $crate::store::time::Ts::now();
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

            async fn run_history(
                &self,
                env: &$crate::ids::EnvId,
                run: &$crate::ids::RunId,
            ) -> Result<Vec<$crate::store::model::HistoryRecord>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::model::HistoryRow> = sqlx::query_as(sql!("run_history"))
                    .bind(env.as_str())
                    .bind(run.as_str())
                    .fetch_all(self.reader())
                    .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn env_counts(
                &self,
                env: &$crate::ids::EnvId,
            ) -> Result<$crate::store::model::EnvCounts, $crate::store::StoreError> {
                let (functions, active_runs): (i64, i64) = sqlx::query_as(sql!("env_counts"))
                    .bind(env.as_str())
                    .fetch_one(self.reader())
                    .await?;
                Ok($crate::store::model::EnvCounts { functions, active_runs })
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
                lease_expires_at: $crate::store::time::Ts,
            ) -> Result<$crate::store::model::FenceOutcome, $crate::store::StoreError> {
                self.ack_job_impl(dispatch_id, fence, lease_expires_at).await
            }

            async fn report_job(
                &self,
                report: &$crate::domain::job::JobReport,
                lease_expires_at: $crate::store::time::Ts,
            ) -> Result<$crate::store::model::FenceOutcome, $crate::store::StoreError> {
                self.report_job_impl(report, lease_expires_at).await
            }

            async fn report_jobs(
                &self,
                reports: &[$crate::domain::job::JobReport],
                lease_expires_at: $crate::store::time::Ts,
            ) -> Result<Vec<$crate::store::model::FenceOutcome>, $crate::store::StoreError> {
                self.report_jobs_impl(reports, lease_expires_at).await
            }

            async fn fire_timers(&self, limit: i64) -> Result<$crate::store::model::Effects, $crate::store::StoreError> {
                self.fire_timers_impl(limit).await
            }

            async fn next_due(&self) -> Result<Option<$crate::store::time::Ts>, $crate::store::StoreError> {
                self.next_due_impl().await
            }

            async fn register_worker(
                &self,
                worker: &$crate::store::model::WorkerRegistration,
            ) -> Result<(), $crate::store::StoreError> {
                self.register_worker_impl(worker).await
            }

            async fn active_runs_of_function(
                &self,
                env: &$crate::ids::EnvId,
                function: &$crate::ids::FunctionId,
            ) -> Result<Vec<($crate::ids::RunId, serde_json::Value)>, $crate::store::StoreError> {
                let rows: Vec<(String, sqlx::types::Json<serde_json::Value>)> = sqlx::query_as(sql!("active_runs_of_function"))
                    .bind(env.as_str())
                    .bind(function.as_str())
                    .fetch_all(self.reader())
                    .await?;
                Ok(rows.into_iter().map(|(id, input)| ($crate::ids::RunId::from_stored(id), input.0)).collect())
            }

            async fn heartbeat_worker(
                &self,
                env: &$crate::ids::EnvId,
                worker: &str,
                dispatch_ids: &[String],
                lease_expires_at: $crate::store::time::Ts,
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

            async fn kv_create_bucket(&self, env: &$crate::ids::EnvId, bucket: &$crate::domain::kv::BucketSettings) -> Result<bool, $crate::store::StoreError> {
                self.kv_create_bucket_impl(env, bucket).await
            }

            async fn kv_buckets(&self, env: &$crate::ids::EnvId, name: Option<&str>) -> Result<Vec<$crate::store::model::BucketRecord>, $crate::store::StoreError> {
                self.kv_buckets_impl(env, name).await
            }

            async fn kv_delete_bucket(&self, env: &$crate::ids::EnvId, name: &str) -> Result<bool, $crate::store::StoreError> {
                self.kv_delete_bucket_impl(env, name).await
            }

            async fn kv_write(&self, write: &$crate::store::model::KvWrite) -> Result<$crate::store::model::KvWriteOutcome, $crate::store::StoreError> {
                self.kv_write_impl(write).await
            }

            async fn kv_get(&self, env: &$crate::ids::EnvId, bucket: &str, key: &str) -> Result<Option<$crate::store::model::KvEntry>, $crate::store::StoreError> {
                self.kv_get_impl(env, bucket, key).await
            }

            async fn kv_purge(&self, env: &$crate::ids::EnvId, bucket: &str, key: &str) -> Result<u64, $crate::store::StoreError> {
                self.kv_purge_impl(env, bucket, key).await
            }

            async fn kv_keys(&self, env: &$crate::ids::EnvId, bucket: &str) -> Result<Vec<String>, $crate::store::StoreError> {
                self.kv_keys_impl(env, bucket).await
            }

            async fn kv_history(&self, env: &$crate::ids::EnvId, bucket: &str, key: &str) -> Result<Vec<$crate::store::model::KvEntry>, $crate::store::StoreError> {
                self.kv_history_impl(env, bucket, key).await
            }

            async fn kv_expire(&self) -> Result<u64, $crate::store::StoreError> {
                self.kv_expire_impl().await
            }

            async fn kv_revision(&self, env: &$crate::ids::EnvId, bucket: &str) -> Result<Option<i64>, $crate::store::StoreError> {
                self.kv_revision_impl(env, bucket).await
            }

            async fn kv_entries_after(&self, env: &$crate::ids::EnvId, bucket: &str, after: i64, limit: i64) -> Result<Vec<$crate::store::model::KvEntry>, $crate::store::StoreError> {
                self.kv_entries_after_impl(env, bucket, after, limit).await
            }

            async fn kv_live_entries(&self, env: &$crate::ids::EnvId, bucket: &str) -> Result<Vec<$crate::store::model::KvEntry>, $crate::store::StoreError> {
                self.kv_live_entries_impl(env, bucket).await
            }

            async fn config_write(&self, write: &$crate::store::model::ConfigWrite) -> Result<$crate::store::model::ConfigOutcome, $crate::store::StoreError> {
                self.config_write_impl(write).await
            }

            async fn configs(&self, env: &$crate::ids::EnvId, name: Option<&str>) -> Result<Vec<$crate::store::model::ConfigRecord>, $crate::store::StoreError> {
                self.configs_impl(env, name).await
            }

            async fn secret_create(&self, env: &$crate::ids::EnvId, name: &str, description: &str, sealed: &$crate::domain::secret::Sealed) -> Result<bool, $crate::store::StoreError> {
                self.secret_create_impl(env, name, description, sealed).await
            }

            async fn secret_update(&self, env: &$crate::ids::EnvId, name: &str, sealed: Option<&$crate::domain::secret::Sealed>, description: Option<&str>) -> Result<bool, $crate::store::StoreError> {
                self.secret_update_impl(env, name, sealed, description).await
            }

            async fn secret_delete(&self, env: &$crate::ids::EnvId, name: &str) -> Result<bool, $crate::store::StoreError> {
                self.secret_delete_impl(env, name).await
            }

            async fn secret_meta(&self, env: &$crate::ids::EnvId, name: Option<&str>) -> Result<Vec<$crate::store::model::SecretMeta>, $crate::store::StoreError> {
                self.secret_meta_impl(env, name).await
            }

            async fn secret_sealed(&self, env: &$crate::ids::EnvId, names: &[String]) -> Result<Vec<(String, $crate::domain::secret::Sealed)>, $crate::store::StoreError> {
                self.secret_sealed_impl(env, names).await
            }

            async fn publish_message(
                &self,
                env: &$crate::ids::EnvId,
                topic: &str,
                data: &serde_json::Value,
                idempotency_key: Option<&str>,
                groups: &[String],
            ) -> Result<(String, i64, bool), $crate::store::StoreError> {
                let id = $crate::ids::EventId::generate().to_string();
                let now = $crate::store::time::Ts::now();
                let mut tx = self.writer().begin().await?;
                let seq: Option<i64> = sqlx::query_scalar(sql!("publish_message"))
                    .bind(&id)
                    .bind(env.as_str())
                    .bind(topic)
                    .bind(sqlx::types::Json(data))
                    .bind(idempotency_key)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?;
                let outcome = match seq {
                    Some(seq) => {
                        // Queued for its consumer groups in the transaction that stores it.
                        for group in groups {
                            sqlx::query(sql!("group_enqueue")).bind(group).bind(seq).bind(now).execute(&mut *tx).await?;
                        }
                        let effects = $crate::store::model::Effects {
                            stored: vec![($crate::store::StoredKind::Topic, seq)],
                            ..Default::default()
                        };
                        notify_commit(&mut tx, self.node_id(), &effects).await?;
                        (id, seq, false)
                    }
                    None => {
                        let (first, seq): (String, i64) = sqlx::query_as(sql!("message_by_idempotency_key"))
                            .bind(env.as_str())
                            .bind(idempotency_key)
                            .fetch_one(&mut *tx)
                            .await?;
                        (first, seq, true)
                    }
                };
                tx.commit().await?;
                Ok(outcome)
            }

            async fn history_after(&self, after_seq: i64, limit: i64) -> Result<Vec<$crate::store::model::HistoryRecord>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::model::HistoryRow> = sqlx::query_as(sql!("history_after"))
                    .bind(after_seq)
                    .bind(limit)
                    .fetch_all(self.reader())
                    .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn max_history_seq(&self) -> Result<i64, $crate::store::StoreError> {
                Ok(sqlx::query_scalar(sql!("max_history_seq")).fetch_one(self.reader()).await?)
            }

            async fn recent_messages(
                &self,
                env: &$crate::ids::EnvId,
                after_seq: Option<i64>,
                limit: i64,
            ) -> Result<Vec<(String, i64, String, serde_json::Value, $crate::store::time::Ts)>, $crate::store::StoreError> {
                let rows: Vec<(String, i64, String, sqlx::types::Json<serde_json::Value>, $crate::store::time::Ts)> =
                    sqlx::query_as(sql!("recent_messages")).bind(env.as_str()).bind(after_seq).bind(limit).fetch_all(self.reader()).await?;
                Ok(rows.into_iter().map(|r| (r.0, r.1, r.2, r.3 .0, r.4)).collect())
            }

            async fn message_by_seq(
                &self,
                seq: i64,
            ) -> Result<Option<($crate::ids::EnvId, String, String, serde_json::Value, $crate::store::time::Ts)>, $crate::store::StoreError> {
                let row: Option<(String, String, String, sqlx::types::Json<serde_json::Value>, $crate::store::time::Ts)> =
                    sqlx::query_as(sql!("message_by_seq")).bind(seq).fetch_optional(self.reader()).await?;
                Ok(row.map(|r| ($crate::ids::EnvId::from_stored(r.0), r.1, r.2, r.3 .0, r.4)))
            }

            async fn event_by_seq(&self, seq: i64) -> Result<Option<$crate::store::model::EventRecord>, $crate::store::StoreError> {
                let row: Option<$crate::store::model::EventRow> =
                    sqlx::query_as(sql!("event_by_seq")).bind(seq).fetch_optional(self.reader()).await?;
                Ok(row.map(Into::into))
            }

            async fn secret_key_ids(&self) -> Result<Vec<String>, $crate::store::StoreError> {
                Ok(sqlx::query_scalar(sql!("secret_key_ids")).fetch_all(self.reader()).await?)
            }

            async fn close(&self) {
                self.writer().close().await;
                self.reader().close().await;
            }
        }

        $crate::store::exec_store::exec_store!($store, $db, $dir);
        $crate::store::kv_store::kv_store!($store, $db, $dir);
        $crate::store::data_store::data_store!($store, $db, $dir);
        $crate::store::group_store::group_store!($store, $db, $dir);
        $crate::store::push_store::push_store!($store, $db, $dir);

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
