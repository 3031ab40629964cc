//! `exec_store!`: the durable-execution half of the store (the runs' work queue, leases and
//! fences, reported steps, yields, waits, child runs, concurrency lanes, workers), instantiated
//! per backend like `sql_store!`. Every transition appends its history entry in the transaction
//! that makes it, and wakes other nodes (Postgres NOTIFY) in that same transaction.

macro_rules! exec_store {
    ($store:ty, $db:ty, $dir:literal) => {
        macro_rules! xsql {
            ($name:literal) => {
                include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/sql/", $dir, "/", $name, ".sql"))
            };
        }

        type Conn = <$db as sqlx::Database>::Connection;
        type JsonValue = serde_json::Value;

        /// Everything needed to insert a run and admit it to the queue.
        pub(crate) struct RunInsert<'a> {
            pub env_id: &'a $crate::ids::EnvId,
            pub id: &'a $crate::ids::RunId,
            pub function_id: &'a $crate::ids::FunctionId,
            pub function_version: i32,
            pub event_id: Option<&'a $crate::ids::EventId>,
            pub event_name: &'a str,
            pub input: &'a JsonValue,
            pub max_attempts: i32,
            pub parent: Option<&'a $crate::ids::RunId>,
            /// The parent's step waiting on this run (`invoke`); `None` for `invoke_async`.
            pub parent_step: Option<&'a str>,
            pub lane: Option<&'a $crate::store::model::Lane>,
        }

        fn entry(
            env: &$crate::ids::EnvId,
            kind: $crate::domain::history::HistoryKind,
            run: &$crate::ids::RunId,
            payload: JsonValue,
        ) -> $crate::domain::history::NewHistoryEntry {
            $crate::domain::history::NewHistoryEntry {
                env_id: env.clone(),
                kind,
                run_id: Some(run.clone()),
                function_id: None,
                event_id: None,
                payload,
            }
        }

        /// Inserts a run and its job. Over its lane's limit, the run waits for capacity.
        async fn create_run(
            conn: &mut Conn,
            r: &RunInsert<'_>,
            now: $crate::domain::time::Ts,
        ) -> Result<$crate::store::model::Effects, $crate::store::StoreError> {
            use $crate::domain::run::RunStatus;
            let admitted = match r.lane {
                Some(lane) if lane.limit > 0 => {
                    sqlx::query(xsql!("lock_lane"))
                        .bind(format!("{}/{}/{}", r.env_id, r.function_id, lane.key))
                        .execute(&mut *conn)
                        .await?;
                    let active: i64 = sqlx::query_scalar(xsql!("count_lane_active"))
                        .bind(r.env_id.as_str())
                        .bind(r.function_id.as_str())
                        .bind(&lane.key)
                        .fetch_one(&mut *conn)
                        .await?;
                    active < i64::from(lane.limit)
                }
                _ => true,
            };
            let status = if admitted { RunStatus::Running } else { RunStatus::WaitingForCapacity };
            let seq: i64 = sqlx::query_scalar(xsql!("insert_run"))
                .bind(r.id.as_str())
                .bind(r.env_id.as_str())
                .bind(r.function_id.as_str())
                .bind(r.function_version)
                .bind(r.event_id.map(|e| e.as_str()))
                .bind(status.as_str())
                .bind(sqlx::types::Json(r.input))
                .bind(r.max_attempts)
                .bind(now)
                .bind(r.parent.map(|p| p.as_str()))
                .bind(r.parent_step)
                .bind(r.lane.map(|l| l.key.as_str()))
                .fetch_one(&mut *conn)
                .await?;
            sqlx::query(xsql!("insert_job"))
                .bind(seq)
                .bind(r.id.as_str())
                .bind(r.env_id.as_str())
                .bind(r.function_id.as_str())
                .bind(if admitted { "queued" } else { "blocked" })
                .bind(now)
                .bind(r.lane.map_or("", |l| l.key.as_str()))
                .bind(r.lane.map_or(0, |l| l.limit))
                .execute(&mut *conn)
                .await?;
            let mut created = entry(
                r.env_id,
                $crate::domain::history::HistoryKind::RunCreated,
                r.id,
                serde_json::json!({
                    "status": status.as_str(),
                    "function_version": r.function_version,
                    "event_name": r.event_name,
                    "parent_run_id": r.parent.map(ToString::to_string),
                    "concurrency_key": r.lane.map(|l| l.key.clone()),
                }),
            );
            created.function_id = Some(r.function_id.clone());
            created.event_id = r.event_id.cloned();
            append_history(conn, &created, now).await?;
            Ok($crate::store::model::Effects { work_ready: admitted, ..Default::default() })
        }

        /// Loose equality for wait matches: `"42"` given as a match value matches the number 42.
        fn wait_value_matches(actual: Option<&JsonValue>, expected: &JsonValue) -> bool {
            match (actual, expected) {
                (Some(a), e) if a == e => true,
                (Some(a), JsonValue::String(e)) => !a.is_string() && serde_json::from_str::<JsonValue>(e).is_ok_and(|parsed| parsed == *a),
                _ => false,
            }
        }

        /// Resolves the waits this event satisfies: each waiting step completes with the event
        /// and its run is queued again.
        async fn satisfy_waits(
            conn: &mut Conn,
            env: &$crate::ids::EnvId,
            event: &JsonValue,
            event_name: &str,
            now: $crate::domain::time::Ts,
        ) -> Result<$crate::store::model::Effects, $crate::store::StoreError> {
            let waits: Vec<(String, String, Option<String>, Option<sqlx::types::Json<JsonValue>>)> =
                sqlx::query_as(xsql!("waits_for_event"))
                    .bind(env.as_str())
                    .bind(event_name)
                    .fetch_all(&mut *conn)
                    .await?;
            let mut effects = $crate::store::model::Effects::default();
            let waits: Vec<_> = waits
                .into_iter()
                .filter(|(_, _, path, expected)| match (path, expected) {
                    (Some(path), Some(expected)) => wait_value_matches($crate::domain::job::lookup_path(event, path), &expected.0),
                    _ => true,
                })
                .collect();
            if waits.is_empty() {
                return Ok(effects);
            }
            // The waiting runs' job rows first, in run order (the waits are read in that order).
            let runs: Vec<&str> = waits.iter().map(|w| w.0.as_str()).collect();
            sqlx::query(xsql!("lock_jobs_of_runs")).bind(sqlx::types::Json(&runs)).execute(&mut *conn).await?;
            for (run_id, step_id, _, _) in waits {
                let run = $crate::ids::RunId::from_stored(run_id);
                let removed = sqlx::query(xsql!("delete_wait")).bind(run.as_str()).bind(&step_id).execute(&mut *conn).await?;
                if removed.rows_affected() == 0 {
                    // Resolved meanwhile (a timeout, a cancel, another event).
                    continue;
                }
                resolve_step(conn, &run, &step_id, "completed", Some(event), None, now).await?;
                resume(conn, &run, now).await?;
                let payload = serde_json::json!({"step_id": step_id, "reason": "event", "event_id": event.get("id")});
                append_history(conn, &entry(env, $crate::domain::history::HistoryKind::RunResumed, &run, payload), now).await?;
                effects.work_ready = true;
            }
            Ok(effects)
        }

        async fn resolve_step(
            conn: &mut Conn,
            run: &$crate::ids::RunId,
            step_id: &str,
            status: &str,
            output: Option<&JsonValue>,
            error: Option<&JsonValue>,
            now: $crate::domain::time::Ts,
        ) -> Result<(), $crate::store::StoreError> {
            sqlx::query(xsql!("resolve_step"))
                .bind(run.as_str())
                .bind(step_id)
                .bind(status)
                .bind(output.map(sqlx::types::Json))
                .bind(error.map(sqlx::types::Json))
                .bind(now)
                .execute(&mut *conn)
                .await?;
            Ok(())
        }

        /// Puts a parked run back in the queue, due now. A run that is no longer parked (ended,
        /// cancelled) is left alone.
        async fn resume(
            conn: &mut Conn,
            run: &$crate::ids::RunId,
            now: $crate::domain::time::Ts,
        ) -> Result<(), $crate::store::StoreError> {
            let woken = sqlx::query(xsql!("wake_job")).bind(run.as_str()).bind(now).execute(&mut *conn).await?;
            if woken.rows_affected() == 0 {
                return Ok(());
            }
            sqlx::query(xsql!("set_run_status"))
                .bind(run.as_str())
                .bind($crate::domain::run::RunStatus::Running.as_str())
                .bind(now)
                .execute(&mut *conn)
                .await?;
            Ok(())
        }

        /// Admits the oldest runs waiting for capacity in a lane, up to its limit.
        async fn promote_lane(
            conn: &mut Conn,
            env: &str,
            function: &str,
            key: &str,
            limit: i32,
            now: $crate::domain::time::Ts,
        ) -> Result<bool, $crate::store::StoreError> {
            if limit <= 0 {
                return Ok(false);
            }
            sqlx::query(xsql!("lock_lane")).bind(format!("{env}/{function}/{key}")).execute(&mut *conn).await?;
            let active: i64 = sqlx::query_scalar(xsql!("count_lane_active"))
                .bind(env).bind(function).bind(key)
                .fetch_one(&mut *conn).await?;
            let free = i64::from(limit) - active;
            if free <= 0 {
                return Ok(false);
            }
            let next: Vec<String> = sqlx::query_scalar(xsql!("blocked_in_lane"))
                .bind(env).bind(function).bind(key).bind(free)
                .fetch_all(&mut *conn).await?;
            for run in &next {
                sqlx::query(xsql!("unblock_job")).bind(run).bind(now).execute(&mut *conn).await?;
                let run = $crate::ids::RunId::from_stored(run.clone());
                sqlx::query(xsql!("set_run_status"))
                    .bind(run.as_str())
                    .bind($crate::domain::run::RunStatus::Running.as_str())
                    .bind(now)
                    .execute(&mut *conn)
                    .await?;
                let payload = serde_json::json!({"from": "waiting_for_capacity", "to": "running"});
                let env_id = $crate::ids::EnvId::from_stored(env.to_owned());
                append_history(conn, &entry(&env_id, $crate::domain::history::HistoryKind::RunStatusChanged, &run, payload), now).await?;
            }
            Ok(!next.is_empty())
        }

        /// After a run reached a terminal status: drop its job and waits, free its lane slot,
        /// resume a parent waiting on it, and tell sync waiters on every node.
        async fn release_run(
            conn: &mut Conn,
            run: &$crate::ids::RunId,
            status: $crate::domain::run::RunStatus,
            output: Option<&JsonValue>,
            error: Option<&JsonValue>,
            now: $crate::domain::time::Ts,
        ) -> Result<$crate::store::model::Effects, $crate::store::StoreError> {
            let mut effects = $crate::store::model::Effects { finished_runs: vec![run.clone()], ..Default::default() };
            let lane: Option<(String, String, String, i32)> = sqlx::query_as(xsql!("run_lane"))
                .bind(run.as_str()).fetch_optional(&mut *conn).await?;
            sqlx::query(xsql!("delete_waits")).bind(run.as_str()).execute(&mut *conn).await?;
            sqlx::query(xsql!("delete_job")).bind(run.as_str()).execute(&mut *conn).await?;
            // A parent's job row before the lane lock: job rows first, then lanes.
            effects.merge(resume_parent(conn, run, status, output, error, now).await?);
            if let Some((env, function, key, limit)) = lane {
                effects.work_ready |= promote_lane(conn, &env, &function, &key, limit, now).await?;
            }
            Ok(effects)
        }

        /// A parent waiting on this (ended) run gets its invoke step resolved and is resumed.
        async fn resume_parent(
            conn: &mut Conn,
            run: &$crate::ids::RunId,
            status: $crate::domain::run::RunStatus,
            output: Option<&JsonValue>,
            error: Option<&JsonValue>,
            now: $crate::domain::time::Ts,
        ) -> Result<$crate::store::model::Effects, $crate::store::StoreError> {
            let mut effects = $crate::store::model::Effects::default();
            let brief: Option<(String, String, String, i32, i32, Option<String>, Option<String>, sqlx::types::Json<JsonValue>)> =
                sqlx::query_as(xsql!("run_brief")).bind(run.as_str()).fetch_optional(&mut *conn).await?;
            if let Some((_, function, _, _, _, Some(parent), Some(parent_step), _)) = brief {
                let parent = $crate::ids::RunId::from_stored(parent);
                sqlx::query(xsql!("lock_run_job")).bind(parent.as_str()).execute(&mut *conn).await?;
                match status {
                    $crate::domain::run::RunStatus::Completed => {
                        let out = output.cloned().unwrap_or(JsonValue::Null);
                        resolve_step(conn, &parent, &parent_step, "completed", Some(&out), None, now).await?;
                    }
                    _ => {
                        let cause = error
                            .and_then(|e| e.get("message"))
                            .and_then(JsonValue::as_str)
                            .unwrap_or(status.as_str())
                            .to_owned();
                        let err = serde_json::json!({
                            "message": format!("invoked function '{function}' {}", status.as_str()),
                            "function_id": function,
                            "child_run_id": run.to_string(),
                            "cause": cause,
                            "retryable": false,
                        });
                        resolve_step(conn, &parent, &parent_step, "failed", None, Some(&err), now).await?;
                    }
                }
                resume(conn, &parent, now).await?;
                effects.work_ready = true;
            }
            Ok(effects)
        }

        /// Ends a run with a terminal status and everything that follows from it.
        async fn end_run(
            conn: &mut Conn,
            env: &$crate::ids::EnvId,
            run: &$crate::ids::RunId,
            status: $crate::domain::run::RunStatus,
            output: Option<&JsonValue>,
            error: Option<&JsonValue>,
            now: $crate::domain::time::Ts,
        ) -> Result<$crate::store::model::Effects, $crate::store::StoreError> {
            use $crate::domain::history::HistoryKind;
            sqlx::query(xsql!("finish_run"))
                .bind(run.as_str())
                .bind(status.as_str())
                .bind(output.map(sqlx::types::Json))
                .bind(error.map(sqlx::types::Json))
                .bind(now)
                .execute(&mut *conn)
                .await?;
            let kind = if status == $crate::domain::run::RunStatus::Completed { HistoryKind::RunCompleted } else { HistoryKind::RunFailed };
            let payload = serde_json::json!({"status": status.as_str(), "output": output, "error": error});
            append_history(conn, &entry(env, kind, run, payload), now).await?;
            release_run(conn, run, status, output, error, now).await
        }

        type RunBrief = (String, String, String, i32, i32, Option<String>, Option<String>, sqlx::types::Json<JsonValue>);

        /// A reported step's history entry: its kind and payload (both checkpoint paths).
        fn step_history(
            step: &$crate::domain::job::ReportedStep,
            attempt: i32,
        ) -> ($crate::domain::history::HistoryKind, JsonValue) {
            use $crate::domain::history::HistoryKind;
            let kind = if step.completed { HistoryKind::StepCompleted } else { HistoryKind::StepFailed };
            let payload = serde_json::json!({
                "step_id": step.id, "name": step.name, "type": step.step_type, "attempt": attempt,
                "output": step.output, "error": step.error, "compensation_for": step.compensation_for,
            });
            (kind, payload)
        }

        /// A checkpoint renews a lease that would end within two thirds of the TTL (the TTL
        /// being `lease_expires_at - now`); a fresher lease is left as it is, which spares the
        /// job row (and all its index entries) a rewrite on most steps.
        fn lease_renewal_threshold(
            now: $crate::domain::time::Ts,
            lease_expires_at: $crate::domain::time::Ts,
        ) -> $crate::domain::time::Ts {
            let ttl = lease_expires_at.0 - now.0;
            $crate::domain::time::Ts(now.0 + ttl * 2 / 3)
        }

        /// Applies step checkpoints set-wise: one statement finds the dispatches whose fence
        /// holds, one renews the leases that need it, one upserts every step, one appends every history
        /// entry (in report order). The rows are those `apply_report` writes one by one.
        async fn apply_checkpoints(
            conn: &mut Conn,
            reports: &[&$crate::domain::job::JobReport],
            lease_expires_at: $crate::domain::time::Ts,
            now: $crate::domain::time::Ts,
        ) -> Result<Vec<$crate::store::model::FenceOutcome>, $crate::store::StoreError> {
            let fences: Vec<JsonValue> = reports
                .iter()
                .map(|r| serde_json::json!({
                    "dispatch_id": r.dispatch_id,
                    "execution_seq": r.fence.execution_seq,
                    "lease_token": r.fence.lease_token,
                    "env_id": r.fence.env_id,
                    "worker_id": r.fence.worker_id,
                }))
                .collect();
            let rows: Vec<(String, String, String, i32, Option<$crate::domain::time::Ts>)> =
                sqlx::query_as(xsql!("checkpoint_fences"))
                    .bind(sqlx::types::Json(&fences))
                    .fetch_all(&mut *conn)
                    .await?;
            let accepted: std::collections::HashMap<&str, (&str, &str, i32)> = rows
                .iter()
                .map(|(d, run, env, attempt, _)| (d.as_str(), (run.as_str(), env.as_str(), *attempt)))
                .collect();
            let renew_below = lease_renewal_threshold(now, lease_expires_at);
            let renew: Vec<&str> = rows
                .iter()
                .filter(|(.., lease)| lease.is_none_or(|l| l < renew_below))
                .map(|(_, run, ..)| run.as_str())
                .collect();
            if !renew.is_empty() {
                sqlx::query(xsql!("checkpoint_leases"))
                    .bind(sqlx::types::Json(&renew))
                    .bind(lease_expires_at)
                    .execute(&mut *conn)
                    .await?;
            }
            let text = |v: &Option<JsonValue>| v.as_ref().map(|v| v.to_string());
            let ts = |t: &Option<$crate::domain::time::Ts>| t.map(|t| t.to_rfc3339());
            let mut steps: Vec<JsonValue> = Vec::new();
            let mut history: Vec<JsonValue> = Vec::new();
            for report in reports {
                let Some((run, env, attempt)) = accepted.get(report.dispatch_id.as_str()) else {
                    continue;
                };
                for (i, step) in report.steps.iter().enumerate() {
                    let sequence = i32::try_from(report.step_offset + i as i64).unwrap_or(i32::MAX);
                    steps.push(serde_json::json!({
                        "run_id": run, "step_id": step.id, "env_id": env, "name": step.name,
                        "step_type": step.step_type, "sequence": sequence,
                        "status": if step.completed { "completed" } else { "failed" },
                        "output": text(&step.output), "error": text(&step.error), "attempt": attempt,
                        "started_at": ts(&step.started_at), "ended_at": ts(&step.ended_at),
                    }));
                    let (kind, payload) = step_history(step, *attempt);
                    history.push(serde_json::json!({
                        "n": history.len(), "env_id": env, "kind": kind.as_str(), "run_id": run,
                        "payload": payload.to_string(),
                    }));
                }
            }
            if !steps.is_empty() {
                sqlx::query(xsql!("checkpoint_steps"))
                    .bind(sqlx::types::Json(&steps))
                    .bind(now)
                    .execute(&mut *conn)
                    .await?;
                sqlx::query(xsql!("checkpoint_history"))
                    .bind(sqlx::types::Json(&history))
                    .bind(now)
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(reports
                .iter()
                .map(|r| {
                    if accepted.contains_key(r.dispatch_id.as_str()) {
                        $crate::store::model::FenceOutcome::Accepted($crate::store::model::Effects::default())
                    } else {
                        $crate::store::model::FenceOutcome::Stale
                    }
                })
                .collect())
        }

        /// Applies one checkpoint or result inside the caller's transaction (no commit, no
        /// NOTIFY); `Stale`, with nothing written, when the fence does not match.
        async fn apply_report(
            conn: &mut Conn,
            report: &$crate::domain::job::JobReport,
            lease_expires_at: $crate::domain::time::Ts,
            now: $crate::domain::time::Ts,
        ) -> Result<$crate::store::model::FenceOutcome, $crate::store::StoreError> {
            use $crate::domain::history::HistoryKind;
            use $crate::domain::job::ReportOutcome;
            use $crate::domain::run::RunStatus;
            let row: Option<(String, String, i64, Option<String>, Option<String>, String)> =
                sqlx::query_as(xsql!("lock_dispatch")).bind(&report.dispatch_id).fetch_optional(&mut *conn).await?;
            let Some(row) = row.filter(|r| fence_matches(r, &report.fence)) else {
                return Ok($crate::store::model::FenceOutcome::Stale);
            };
            let run = $crate::ids::RunId::from_stored(row.0.clone());
            let brief: RunBrief = sqlx::query_as(xsql!("run_brief")).bind(run.as_str()).fetch_one(&mut *conn).await?;
            let env = $crate::ids::EnvId::from_stored(brief.0.clone());
            for (i, step) in report.steps.iter().enumerate() {
                let sequence = i32::try_from(report.step_offset + i as i64).unwrap_or(i32::MAX);
                sqlx::query(xsql!("upsert_step"))
                    .bind(run.as_str())
                    .bind(&step.id)
                    .bind(env.as_str())
                    .bind(&step.name)
                    .bind(&step.step_type)
                    .bind(sequence)
                    .bind(if step.completed { "completed" } else { "failed" })
                    .bind(step.output.as_ref().map(sqlx::types::Json))
                    .bind(step.error.as_ref().map(sqlx::types::Json))
                    .bind(brief.3)
                    .bind(step.started_at)
                    .bind(step.ended_at)
                    .bind(now)
                    .execute(&mut *conn)
                    .await?;
                let (kind, payload) = step_history(step, brief.3);
                append_history(&mut *conn, &entry(&env, kind, &run, payload), now).await?;
            }
            let mut effects = $crate::store::model::Effects::default();
            match &report.outcome {
                ReportOutcome::Progress => {
                    sqlx::query(xsql!("checkpoint_lease"))
                        .bind(run.as_str())
                        .bind(lease_expires_at)
                        .bind(lease_renewal_threshold(now, lease_expires_at))
                        .execute(&mut *conn)
                        .await?;
                }
                ReportOutcome::Completed { output } => {
                    effects.merge(end_run(&mut *conn, &env, &run, RunStatus::Completed, Some(output), None, now).await?);
                }
                ReportOutcome::Failed(failure) => {
                    let definition: Option<sqlx::types::Json<$crate::domain::function::FunctionDefinition>> =
                        sqlx::query_scalar(xsql!("function_definition_for_run")).bind(run.as_str()).fetch_optional(&mut *conn).await?;
                    let policy = definition.as_ref().and_then(|d| d.0.retry.as_ref());
                    let error = failure.to_json();
                    let delay = failure.retryable.then(|| {
                        $crate::domain::job::retry_delay(policy, brief.3, brief.4, failure.retry_after_ms)
                    }).flatten();
                    match delay {
                        Some(delay) => {
                            let due = now.plus(delay);
                            sqlx::query(xsql!("retry_run")).bind(run.as_str()).bind(sqlx::types::Json(&error)).bind(now).execute(&mut *conn).await?;
                            sqlx::query(xsql!("requeue_job")).bind(run.as_str()).bind(due).execute(&mut *conn).await?;
                            let payload = serde_json::json!({"failed_attempt": brief.3, "next_attempt": brief.3 + 1, "delay_ms": delay.as_millis() as u64, "error": error});
                            append_history(&mut *conn, &entry(&env, HistoryKind::RunRetrying, &run, payload), now).await?;
                            effects.work_ready = true;
                        }
                        None => {
                            effects.merge(end_run(&mut *conn, &env, &run, RunStatus::Failed, None, Some(&error), now).await?);
                        }
                    }
                }
                ReportOutcome::Yielded(request) => {
                    let position = report.step_offset + report.steps.len() as i64;
                    effects.merge(apply_yield(&mut *conn, &env, &run, &brief, request, position, now).await?);
                }
            }
            Ok($crate::store::model::FenceOutcome::Accepted(effects))
        }

        /// Applies one yield: records the yielding step and parks or requeues the run.
        async fn apply_yield(
            conn: &mut Conn,
            env: &$crate::ids::EnvId,
            run: &$crate::ids::RunId,
            brief: &RunBrief,
            request: &$crate::domain::job::YieldRequest,
            position: i64,
            now: $crate::domain::time::Ts,
        ) -> Result<$crate::store::model::Effects, $crate::store::StoreError> {
            use $crate::domain::job::YieldRequest;
            use $crate::domain::run::RunStatus;
            let later = |d: std::time::Duration| now.plus(d);
            let insert_step = |step_id: &str, step_type: &'static str, status: &'static str, output: Option<JsonValue>, ended: Option<$crate::domain::time::Ts>| {
                sqlx::query(xsql!("upsert_step"))
                    .bind(run.as_str())
                    .bind(step_id.to_owned())
                    .bind(env.as_str())
                    .bind($crate::domain::job::step_name(run.as_str(), step_id))
                    .bind(step_type)
                    .bind(i32::try_from(position).unwrap_or(i32::MAX))
                    .bind(status)
                    .bind(output.map(sqlx::types::Json))
                    .bind(None::<sqlx::types::Json<JsonValue>>)
                    .bind(brief.3)
                    .bind(Some(now))
                    .bind(ended)
                    .bind(now)
            };
            let mut effects = $crate::store::model::Effects::default();
            let payload;
            match request {
                YieldRequest::Sleep { step_id, until } => {
                    insert_step(step_id, "sleep", "sleeping", None, None).execute(&mut *conn).await?;
                    sqlx::query(xsql!("requeue_job")).bind(run.as_str()).bind(*until).execute(&mut *conn).await?;
                    payload = serde_json::json!({"type": "sleep", "step_id": step_id, "until": until.to_rfc3339()});
                    effects.work_ready = true;
                }
                YieldRequest::WaitForEvent { step_id, event, match_path, match_value, timeout } => {
                    let expires = later(*timeout);
                    let expected = match (match_value, match_path) {
                        (Some(v), _) => Some(JsonValue::String(v.clone())),
                        (None, Some(path)) => {
                            let trigger = serde_json::json!({"data": brief.7.0});
                            Some($crate::domain::job::lookup_path(&trigger, path).cloned().unwrap_or(JsonValue::Null))
                        }
                        (None, None) => None,
                    };
                    insert_step(step_id, "wait_for_event", "waiting", None, None).execute(&mut *conn).await?;
                    sqlx::query(xsql!("insert_wait"))
                        .bind(run.as_str())
                        .bind(step_id)
                        .bind(env.as_str())
                        .bind(event)
                        .bind(match_path.as_deref())
                        .bind(expected.as_ref().map(sqlx::types::Json))
                        .bind(expires)
                        .bind(now)
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query(xsql!("park_job")).bind(run.as_str()).bind(expires).execute(&mut *conn).await?;
                    payload = serde_json::json!({"type": "wait_for_event", "step_id": step_id, "event": event, "match": match_path, "expires_at": expires.to_rfc3339()});
                }
                YieldRequest::Invoke { step_id, function_id, input, timeout } => {
                    let child = $crate::ids::RunId::generate();
                    match invoke_child(conn, env, run, Some(step_id), function_id, input, &child, now).await? {
                        Some(e) => {
                            effects.merge(e);
                            insert_step(step_id, "invoke_function", "waiting", None, None).execute(&mut *conn).await?;
                            sqlx::query(xsql!("park_job")).bind(run.as_str()).bind(later(*timeout)).execute(&mut *conn).await?;
                        }
                        None => {
                            insert_step(step_id, "invoke_function", "failed", None, Some(now)).execute(&mut *conn).await?;
                            let err = serde_json::json!({"message": format!("function '{function_id}' is not registered"), "retryable": false});
                            resolve_step(conn, run, step_id, "failed", None, Some(&err), now).await?;
                            sqlx::query(xsql!("requeue_job")).bind(run.as_str()).bind(now).execute(&mut *conn).await?;
                            effects.work_ready = true;
                        }
                    }
                    payload = serde_json::json!({"type": "invoke_function", "step_id": step_id, "function_id": function_id, "child_run_id": child.to_string()});
                }
                YieldRequest::InvokeAsync { step_id, function_id, input } => {
                    let child = $crate::ids::RunId::generate();
                    match invoke_child(conn, env, run, None, function_id, input, &child, now).await? {
                        Some(e) => {
                            effects.merge(e);
                            let out = serde_json::json!({"run_id": child.to_string()});
                            insert_step(step_id, "invoke_function", "completed", Some(out), Some(now)).execute(&mut *conn).await?;
                        }
                        None => {
                            let err = serde_json::json!({"message": format!("function '{function_id}' is not registered"), "retryable": false});
                            insert_step(step_id, "invoke_function", "failed", None, Some(now)).execute(&mut *conn).await?;
                            resolve_step(conn, run, step_id, "failed", None, Some(&err), now).await?;
                        }
                    }
                    sqlx::query(xsql!("requeue_job")).bind(run.as_str()).bind(now).execute(&mut *conn).await?;
                    effects.work_ready = true;
                    payload = serde_json::json!({"type": "invoke_function_async", "step_id": step_id, "function_id": function_id, "child_run_id": child.to_string()});
                }
            }
            if !effects.work_ready || matches!(request, YieldRequest::Sleep { .. }) {
                sqlx::query(xsql!("set_run_status")).bind(run.as_str()).bind(RunStatus::Waiting.as_str()).bind(now).execute(&mut *conn).await?;
            }
            append_history(conn, &entry(env, $crate::domain::history::HistoryKind::RunYielded, run, payload), now).await?;
            Ok(effects)
        }

        /// Starts a child run of `function_id`; `None` when no such function is registered.
        #[allow(clippy::too_many_arguments)]
        async fn invoke_child(
            conn: &mut Conn,
            env: &$crate::ids::EnvId,
            parent: &$crate::ids::RunId,
            parent_step: Option<&str>,
            function_id: &str,
            input: &JsonValue,
            child: &$crate::ids::RunId,
            now: $crate::domain::time::Ts,
        ) -> Result<Option<$crate::store::model::Effects>, $crate::store::StoreError> {
            let Ok(fid) = $crate::ids::FunctionId::parse(function_id) else {
                return Ok(None);
            };
            let Some(function) = select_function(conn, env, &fid).await? else {
                return Ok(None);
            };
            let lane = function.definition.concurrency.as_ref().filter(|c| c.limit > 0).map(|c| $crate::store::model::Lane {
                key: $crate::domain::expression::lane_key(&c.key, &$crate::domain::expression::Bindings::for_json_event(&serde_json::json!({"name": "invoke", "data": input}))),
                limit: c.limit,
            });
            let insert = RunInsert {
                env_id: env,
                id: child,
                function_id: &fid,
                function_version: function.version,
                event_id: None,
                event_name: "",
                input,
                max_attempts: function.definition.max_attempts(),
                parent: Some(parent),
                parent_step,
                lane: lane.as_ref(),
            };
            Ok(Some(create_run(conn, &insert, now).await?))
        }

        /// An expired lease is a failed attempt (`LEASE_EXPIRED`): the run is queued again after
        /// its policy's backoff, or fails when its attempts are used up.
        async fn expire_lease(
            conn: &mut Conn,
            env: &$crate::ids::EnvId,
            run: &$crate::ids::RunId,
            now: $crate::domain::time::Ts,
        ) -> Result<$crate::store::model::Effects, $crate::store::StoreError> {
            use $crate::domain::history::HistoryKind;
            let brief: RunBrief = sqlx::query_as(xsql!("run_brief")).bind(run.as_str()).fetch_one(&mut *conn).await?;
            let (attempt, max_attempts) = (brief.3, brief.4);
            let definition: Option<sqlx::types::Json<$crate::domain::function::FunctionDefinition>> =
                sqlx::query_scalar(xsql!("function_definition_for_run")).bind(run.as_str()).fetch_optional(&mut *conn).await?;
            let policy = definition.as_ref().and_then(|d| d.0.retry.as_ref());
            let error = $crate::domain::job::lease_expired_error(attempt);
            match $crate::domain::job::retry_delay(policy, attempt, max_attempts, None) {
                Some(delay) => {
                    sqlx::query(xsql!("retry_run")).bind(run.as_str()).bind(sqlx::types::Json(&error)).bind(now).execute(&mut *conn).await?;
                    sqlx::query(xsql!("requeue_job")).bind(run.as_str()).bind(now.plus(delay)).execute(&mut *conn).await?;
                    let payload = serde_json::json!({"failed_attempt": attempt, "next_attempt": attempt + 1, "delay_ms": delay.as_millis() as u64, "error": error});
                    append_history(conn, &entry(env, HistoryKind::RunRetrying, run, payload), now).await?;
                    Ok($crate::store::model::Effects { work_ready: true, ..Default::default() })
                }
                None => end_run(conn, env, run, $crate::domain::run::RunStatus::Failed, None, Some(&error), now).await,
            }
        }

        /// A parked run reached its deadline: an invoke that timed out fails its step and the
        /// run goes on; a wait for an event that timed out fails the run (`WAIT_TIMEOUT`).
        async fn parked_deadline(
            conn: &mut Conn,
            env: &$crate::ids::EnvId,
            run: &$crate::ids::RunId,
            now: $crate::domain::time::Ts,
        ) -> Result<$crate::store::model::Effects, $crate::store::StoreError> {
            let waiting: Option<(String, String)> = sqlx::query_as(xsql!("waiting_step")).bind(run.as_str()).fetch_optional(&mut *conn).await?;
            match waiting {
                Some((step_id, step_type)) if step_type == "invoke_function" => {
                    let err = serde_json::json!({"message": "invoke timed out", "retryable": false});
                    resolve_step(conn, run, &step_id, "failed", None, Some(&err), now).await?;
                    resume(conn, run, now).await?;
                    Ok($crate::store::model::Effects { work_ready: true, ..Default::default() })
                }
                other => {
                    let step = other.map(|(s, _)| s).unwrap_or_default();
                    let err = serde_json::json!({
                        "message": format!("wait_for_event step '{step}' timed out"),
                        "code": "WAIT_TIMEOUT",
                        "retryable": false,
                    });
                    sqlx::query(xsql!("resolve_step")).bind(run.as_str()).bind(&step).bind("timed_out")
                        .bind(None::<sqlx::types::Json<JsonValue>>).bind(Some(sqlx::types::Json(&err))).bind(now)
                        .execute(&mut *conn).await?;
                    end_run(conn, env, run, $crate::domain::run::RunStatus::Failed, None, Some(&err), now).await
                }
            }
        }

        fn fence_matches(row: &(String, String, i64, Option<String>, Option<String>, String), fence: &$crate::domain::job::Fence) -> bool {
            row.1 == "leased"
                && row.2 == fence.execution_seq
                && row.3.as_deref() == Some(fence.lease_token.as_str())
                && row.4.as_deref() == Some(fence.worker_id.as_str())
                && row.5 == fence.env_id.as_str()
        }

        impl $store {
            async fn claim_jobs_impl(
                &self,
                req: &$crate::store::model::ClaimRequest,
            ) -> Result<Vec<$crate::store::model::ClaimedJob>, $crate::store::StoreError> {
                let now = $crate::domain::time::Ts::now();
                let mut tx = self.writer().begin().await?;
                let rows: Vec<(String, String, i64, String)> = sqlx::query_as(xsql!("claim_jobs"))
                    .bind(req.env_id.as_str())
                    .bind(sqlx::types::Json(&req.function_ids))
                    .bind(now)
                    .bind(req.limit)
                    .bind(&req.worker_id)
                    .bind(req.lease_expires_at)
                    .bind(match req.mode {
                        $crate::domain::function::ExecutionMode::Pull => "pull",
                        $crate::domain::function::ExecutionMode::Push => "push",
                    })
                    .fetch_all(&mut *tx)
                    .await?;
                // Read once here for the run timeout, then handed to the job below.
                let mut definitions = Vec::with_capacity(rows.len());
                for (run_id, _, seq, _) in &rows {
                    let run = $crate::ids::RunId::from_stored(run_id.clone());
                    sqlx::query(xsql!("wake_sleeping_steps")).bind(run.as_str()).bind(now).execute(&mut *tx).await?;
                    sqlx::query(xsql!("start_run")).bind(run.as_str()).bind(now).execute(&mut *tx).await?;
                    let definition: Option<sqlx::types::Json<$crate::domain::function::FunctionDefinition>> =
                        sqlx::query_scalar(xsql!("function_definition_for_run")).bind(run.as_str()).fetch_optional(&mut *tx).await?;
                    let definition = definition.map(|d| d.0);
                    if let Some(ms) = definition.as_ref().map(|d| d.timeout_ms).filter(|ms| *ms > 0) {
                        let at = now.plus(std::time::Duration::from_millis(u64::from(ms.unsigned_abs())));
                        sqlx::query(xsql!("set_job_timeout")).bind(run.as_str()).bind(at).execute(&mut *tx).await?;
                    }
                    definitions.push(definition);
                    let payload = serde_json::json!({"execution_seq": seq, "worker_id": req.worker_id});
                    append_history(&mut tx, &entry(&req.env_id, $crate::domain::history::HistoryKind::RunDispatched, &run, payload), now).await?;
                }
                tx.commit().await?;
                let mut jobs = Vec::with_capacity(rows.len());
                let mut conn = self.reader().acquire().await?;
                for ((run_id, dispatch_id, execution_seq, lease_token), definition) in rows.into_iter().zip(definitions) {
                    let run_key = $crate::ids::RunId::from_stored(run_id);
                    let Some(run) = select_run(&mut conn, &req.env_id, &run_key).await? else { continue };
                    let event: Option<$crate::store::model::EventRow> = sqlx::query_as(xsql!("run_event"))
                        .bind(run_key.as_str()).fetch_optional(&mut *conn).await?;
                    let steps: Vec<$crate::store::model::StepRow> = sqlx::query_as(xsql!("completed_steps"))
                        .bind(run_key.as_str()).fetch_all(&mut *conn).await?;
                    let base: i64 = sqlx::query_scalar(xsql!("count_steps")).bind(run_key.as_str()).fetch_one(&mut *conn).await?;
                    jobs.push($crate::store::model::ClaimedJob {
                        dispatch_id,
                        execution_seq,
                        lease_token,
                        lease_expires_at: req.lease_expires_at,
                        run,
                        event: event.map(Into::into),
                        completed_steps: steps.into_iter().map(Into::into).collect(),
                        step_sequence_base: base,
                        definition,
                        secrets: Default::default(),
                    });
                }
                Ok(jobs)
            }

            async fn ack_job_impl(
                &self,
                dispatch_id: &str,
                fence: &$crate::domain::job::Fence,
                lease_expires_at: $crate::domain::time::Ts,
            ) -> Result<$crate::store::model::FenceOutcome, $crate::store::StoreError> {
                let mut tx = self.writer().begin().await?;
                let row: Option<(String, String, i64, Option<String>, Option<String>, String)> =
                    sqlx::query_as(xsql!("lock_dispatch")).bind(dispatch_id).fetch_optional(&mut *tx).await?;
                let Some(row) = row.filter(|r| fence_matches(r, fence)) else {
                    return Ok($crate::store::model::FenceOutcome::Stale);
                };
                sqlx::query(xsql!("extend_lease")).bind(&row.0).bind(lease_expires_at).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok($crate::store::model::FenceOutcome::Accepted(Default::default()))
            }

            async fn report_job_impl(
                &self,
                report: &$crate::domain::job::JobReport,
                lease_expires_at: $crate::domain::time::Ts,
            ) -> Result<$crate::store::model::FenceOutcome, $crate::store::StoreError> {
                let mut outcomes = self.report_jobs_impl(std::slice::from_ref(report), lease_expires_at).await?;
                Ok(outcomes.pop().unwrap_or($crate::store::model::FenceOutcome::Stale))
            }

            /// Applies several reports in one transaction (one commit, one NOTIFY).
            async fn report_jobs_impl(
                &self,
                reports: &[$crate::domain::job::JobReport],
                lease_expires_at: $crate::domain::time::Ts,
            ) -> Result<Vec<$crate::store::model::FenceOutcome>, $crate::store::StoreError> {
                use $crate::domain::job::ReportOutcome;
                let now = $crate::domain::time::Ts::now();
                let mut tx = self.writer().begin().await?;
                // Every job row the batch names, locked at once in run order, before anything
                // else is touched: the lock order every transaction keeps.
                let dispatches: Vec<&str> = reports.iter().map(|r| r.dispatch_id.as_str()).collect();
                sqlx::query(xsql!("lock_report_jobs"))
                    .bind(sqlx::types::Json(&dispatches))
                    .execute(&mut *tx)
                    .await?;
                let mut outcomes: Vec<Option<$crate::store::model::FenceOutcome>> = vec![None; reports.len()];
                // Checkpoints (steps only) share a few set-wise statements; results and yields
                // are applied one by one.
                let checkpoints: Vec<usize> = (0..reports.len())
                    .filter(|&i| matches!(reports[i].outcome, ReportOutcome::Progress))
                    .collect();
                if !checkpoints.is_empty() {
                    let batch: Vec<&$crate::domain::job::JobReport> = checkpoints.iter().map(|&i| &reports[i]).collect();
                    let applied = apply_checkpoints(&mut tx, &batch, lease_expires_at, now).await?;
                    for (i, outcome) in checkpoints.iter().zip(applied) {
                        outcomes[*i] = Some(outcome);
                    }
                }
                let mut all = $crate::store::model::Effects::default();
                for (i, report) in reports.iter().enumerate() {
                    if outcomes[i].is_some() {
                        continue;
                    }
                    let outcome = apply_report(&mut tx, report, lease_expires_at, now).await?;
                    if let $crate::store::model::FenceOutcome::Accepted(effects) = &outcome {
                        all.merge(effects.clone());
                    }
                    outcomes[i] = Some(outcome);
                }
                let outcomes: Vec<$crate::store::model::FenceOutcome> = outcomes
                    .into_iter()
                    .map(|o| o.unwrap_or($crate::store::model::FenceOutcome::Stale))
                    .collect();
                notify_commit(&mut tx, self.node_id(), &all).await?;
                tx.commit().await?;
                Ok(outcomes)
            }

            /// Fires what came due: run timeouts (the run fails), expired leases (a failed
            /// attempt, retried under the function's policy), and parked waits and invokes at
            /// their deadline. The due job rows are locked first, in run order; rows another
            /// transaction holds are left to the next sweep.
            async fn fire_timers_impl(&self, limit: i64) -> Result<$crate::store::model::Effects, $crate::store::StoreError> {
                use $crate::domain::job::TimerAction;
                let now = $crate::domain::time::Ts::now();
                let mut tx = self.writer().begin().await?;
                let due: Vec<$crate::store::model::DueJobRow> =
                    sqlx::query_as(xsql!("lock_due_jobs")).bind(now).bind(limit).fetch_all(&mut *tx).await?;
                let mut effects = $crate::store::model::Effects::default();
                for job in due {
                    let Some(action) = $crate::domain::job::timer_action(&job.facts(), now) else {
                        continue;
                    };
                    let run = $crate::ids::RunId::from_stored(job.run_id.clone());
                    let env = $crate::ids::EnvId::from_stored(job.env_id.clone());
                    match action {
                        TimerAction::RunTimeout => {
                            let err = serde_json::json!({"message": "the run exceeded its timeout", "code": "RUN_TIMEOUT", "retryable": false});
                            effects.merge(end_run(&mut tx, &env, &run, $crate::domain::run::RunStatus::Failed, None, Some(&err), now).await?);
                        }
                        TimerAction::LeaseExpired => {
                            effects.merge(expire_lease(&mut tx, &env, &run, now).await?);
                        }
                        TimerAction::ParkedDeadline => {
                            effects.merge(parked_deadline(&mut tx, &env, &run, now).await?);
                        }
                    }
                }
                notify_commit(&mut tx, self.node_id(), &effects).await?;
                tx.commit().await?;
                Ok(effects)
            }

            async fn next_due_impl(&self) -> Result<Option<$crate::domain::time::Ts>, $crate::store::StoreError> {
                Ok(sqlx::query_scalar(xsql!("next_due")).bind($crate::domain::time::Ts::now()).fetch_one(self.reader()).await?)
            }

            async fn register_worker_impl(&self, w: &$crate::store::model::WorkerRegistration) -> Result<(), $crate::store::StoreError> {
                let now = $crate::domain::time::Ts::now();
                sqlx::query(xsql!("upsert_worker"))
                    .bind(w.env_id.as_str())
                    .bind(&w.id)
                    .bind(&w.hostname)
                    .bind(sqlx::types::Json(&w.function_ids))
                    .bind(w.max_concurrent)
                    .bind(sqlx::types::Json(&w.labels))
                    .bind(sqlx::types::Json(&w.version))
                    .bind(now)
                    .execute(self.writer())
                    .await?;
                Ok(())
            }

            async fn heartbeat_impl(
                &self,
                env: &$crate::ids::EnvId,
                worker: &str,
                dispatch_ids: &[String],
                lease_expires_at: $crate::domain::time::Ts,
            ) -> Result<bool, $crate::store::StoreError> {
                let now = $crate::domain::time::Ts::now();
                let mut tx = self.writer().begin().await?;
                let touched = sqlx::query(xsql!("touch_worker")).bind(env.as_str()).bind(worker).bind(now).execute(&mut *tx).await?;
                if touched.rows_affected() == 0 {
                    return Ok(false);
                }
                if !dispatch_ids.is_empty() {
                    sqlx::query(xsql!("renew_leases"))
                        .bind(env.as_str())
                        .bind(worker)
                        .bind(sqlx::types::Json(dispatch_ids))
                        .bind(lease_expires_at)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn worker_functions_impl(&self, env: &$crate::ids::EnvId, worker: &str) -> Result<Option<Vec<String>>, $crate::store::StoreError> {
                let row: Option<sqlx::types::Json<Vec<String>>> = sqlx::query_scalar(xsql!("worker_functions"))
                    .bind(env.as_str()).bind(worker).fetch_optional(self.reader()).await?;
                Ok(row.map(|j| j.0))
            }

            async fn list_workers_impl(&self, env: &$crate::ids::EnvId) -> Result<Vec<$crate::store::model::WorkerRecord>, $crate::store::StoreError> {
                type Row = (String, String, sqlx::types::Json<Vec<String>>, i32, sqlx::types::Json<JsonValue>, sqlx::types::Json<JsonValue>, $crate::domain::time::Ts, $crate::domain::time::Ts);
                let rows: Vec<Row> = sqlx::query_as(xsql!("list_workers")).bind(env.as_str()).fetch_all(self.reader()).await?;
                Ok(rows.into_iter().map(|r| $crate::store::model::WorkerRecord {
                    id: r.0, hostname: r.1, function_ids: r.2.0, max_concurrent: r.3, labels: r.4.0, version: r.5.0,
                    registered_at: r.6, last_heartbeat_at: r.7,
                }).collect())
            }
        }

    };
}

pub(crate) use exec_store;
