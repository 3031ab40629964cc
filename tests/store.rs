//! Store behaviour on both backends: migrations and views, bootstrap, function versioning,
//! events with idempotency, run creation, cancel, and the append-only history.

mod common;

use common::{Backend, default_env, fresh_store, raw_count, raw_execute};
use ironflow::domain::function::{FunctionDefinition, TriggerDef};
use ironflow::domain::run::RunStatus;
use ironflow::domain::time::Ts;
use ironflow::ids::{EnvId, EventId, FunctionId, RunId};
use ironflow::store::events::*;
use ironflow::store::execution::CancelOutcome;
use ironflow::store::functions::*;
use ironflow::store::runs::*;
use serde_json::json;

fn definition(event: &str) -> FunctionDefinition {
    FunctionDefinition {
        name: "f".into(),
        triggers: vec![TriggerDef {
            event: Some(event.into()),
            ..TriggerDef::default()
        }],
        ..FunctionDefinition::default()
    }
}

fn registration(env: &EnvId, id: &str, event: &str) -> FunctionRegistration {
    FunctionRegistration {
        env_id: env.clone(),
        id: FunctionId::parse(id).expect("id"),
        definition: definition(event),
        change_reason: String::new(),
    }
}

fn new_event(env: &EnvId, name: &str, key: Option<&str>) -> NewEvent {
    NewEvent {
        id: EventId::generate(),
        env_id: env.clone(),
        name: name.into(),
        data: json!({"n": 1}),
        metadata: json!({}),
        source: "test".into(),
        idempotency_key: key.map(str::to_owned),
        version: 0,
        received_at: Ts::now(),
        append: None,
        purge_below: false,
        emitted_by_run: None,
        schema: Default::default(),
        traceparent: None,
    }
}

fn new_run(function: &str) -> NewRun {
    NewRun {
        id: RunId::generate(),
        function_id: FunctionId::parse(function).expect("id"),
        function_version: 1,
        status: RunStatus::Running,
        max_attempts: 3,
        lane: None,
        throttle: None,
    }
}

async fn migrations_are_idempotent_and_views_exist(backend: Backend) {
    let (store, url, _g) = fresh_store(backend).await;
    store.migrate().await.expect("second migrate is a no-op");
    for view in [
        "ironflow_events",
        "ironflow_runs",
        "ironflow_steps",
        "ironflow_history",
    ] {
        assert_eq!(
            raw_count(&url, &format!("SELECT COUNT(*) FROM {view}")).await,
            0,
            "{view}"
        );
    }
}

async fn bootstrap_happens_once(backend: Backend) {
    let (store, url, _g) = fresh_store(backend).await;
    let first = ironflow::tenancy::bootstrap(&store)
        .await
        .expect("bootstrap");
    let secret = first.expect("first boot creates a key");
    assert!(
        ironflow::tenancy::bootstrap(&store)
            .await
            .expect("again")
            .is_none()
    );
    let key = store
        .find_api_key(&ironflow::tenancy::hash_api_key(&secret))
        .await
        .expect("lookup")
        .expect("the key is found by its hash");
    assert_eq!(key.roles, vec!["admin".to_owned()]);
    assert!(
        store
            .find_api_key("not-a-hash")
            .await
            .expect("lookup")
            .is_none()
    );
    assert_eq!(raw_count(&url, "SELECT COUNT(*) FROM orgs").await, 1);
    let stored_secret = raw_count(
        &url,
        &format!(
            "SELECT COUNT(*) FROM api_keys WHERE key_hash = '{secret}' OR key_prefix = '{secret}'"
        ),
    )
    .await;
    assert_eq!(stored_secret, 0, "the secret itself is never stored");
}

async fn functions_are_versioned_by_content(backend: Backend) {
    let (store, url, _g) = fresh_store(backend).await;
    let env = default_env(&store).await;
    let first = store
        .register_function(&registration(&env, "fn-a", "order.created"))
        .await
        .expect("v1");
    assert!(first.created && first.new_version);
    assert_eq!(first.function.version, 1);
    let same = store
        .register_function(&registration(&env, "fn-a", "order.created"))
        .await
        .expect("same");
    assert!(
        !same.created,
        "an unchanged definition is not a new version"
    );
    assert_eq!(same.function.version, 1);
    let changed = store
        .register_function(&registration(&env, "fn-a", "order.updated"))
        .await
        .expect("v2");
    assert!(!changed.created, "the function existed already");
    assert!(changed.new_version);
    assert_eq!(changed.function.version, 2);
    assert_eq!(
        changed.function.definition.triggers[0].event.as_deref(),
        Some("order.updated")
    );
    assert_eq!(
        raw_count(
            &url,
            "SELECT COUNT(*) FROM function_versions WHERE function_id = 'fn-a'"
        )
        .await,
        2
    );
    assert_eq!(
        raw_count(&url, "SELECT COUNT(*) FROM history WHERE kind = 'function.registered' AND function_id = 'fn-a'").await,
        2
    );
}

async fn concurrent_first_registrations_agree(backend: Backend) {
    let (store, url, _g) = fresh_store(backend).await;
    let env = default_env(&store).await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            let reg = registration(&env, "racer", "race.started");
            tokio::spawn(async move { store.register_function(&reg).await })
        })
        .collect();
    let mut created = 0;
    for t in tasks {
        let outcome = t.await.expect("task").expect("no registration fails");
        assert_eq!(outcome.function.version, 1);
        created += usize::from(outcome.new_version);
    }
    assert_eq!(created, 1, "exactly one registration stored version 1");
    assert_eq!(
        raw_count(&url, "SELECT COUNT(*) FROM function_versions").await,
        1
    );
}

async fn events_create_runs_atomically_and_idempotently(backend: Backend) {
    let (store, url, _g) = fresh_store(backend).await;
    let env = default_env(&store).await;
    let event = new_event(&env, "order.created", Some("key-1"));
    let runs = vec![new_run("fn-a"), new_run("fn-b")];
    let EventOutcome::Stored {
        event_id, run_ids, ..
    } = store.record_event(&event, &runs).await.expect("stored")
    else {
        panic!("first emit must store");
    };
    assert_eq!(run_ids.len(), 2);
    let again = new_event(&env, "order.created", Some("key-1"));
    match store
        .record_event(&again, &[new_run("fn-a")])
        .await
        .expect("duplicate")
    {
        EventOutcome::Duplicate {
            event_id: dup_event,
            run_ids: dup_runs,
            ..
        } => {
            assert_eq!(dup_event, event_id);
            assert_eq!(dup_runs, run_ids);
        }
        other => panic!("a repeated idempotency key must answer as a duplicate: {other:?}"),
    }
    assert_eq!(raw_count(&url, "SELECT COUNT(*) FROM events").await, 1);
    assert_eq!(raw_count(&url, "SELECT COUNT(*) FROM runs").await, 2);
    assert_eq!(
        raw_count(
            &url,
            "SELECT COUNT(*) FROM history WHERE kind = 'event.received'"
        )
        .await,
        1
    );
    assert_eq!(
        raw_count(
            &url,
            "SELECT COUNT(*) FROM history WHERE kind = 'run.created'"
        )
        .await,
        2
    );
    let run = store
        .get_run(&env, &run_ids[0])
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(run.status, RunStatus::Running);
    assert_eq!(run.event_name.as_deref(), Some("order.created"));
    assert_eq!(run.input, json!({"n": 1}));
    assert!(run.started_at.is_none(), "not yet picked up by a worker");
}

async fn concurrent_idempotent_emits_store_once(backend: Backend) {
    let (store, url, _g) = fresh_store(backend).await;
    let env = default_env(&store).await;
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let store = store.clone();
            let event = new_event(&env, "pay.requested", Some("same-key"));
            tokio::spawn(async move { store.record_event(&event, &[new_run("payer")]).await })
        })
        .collect();
    let mut event_ids = std::collections::HashSet::new();
    for t in tasks {
        match t.await.expect("task").expect("no emit fails") {
            EventOutcome::Stored { event_id, .. } | EventOutcome::Duplicate { event_id, .. } => {
                event_ids.insert(event_id);
            }
            EventOutcome::Refused(r) => panic!("an event with no stream was refused: {r}"),
        }
    }
    assert_eq!(event_ids.len(), 1, "every caller sees the same event");
    assert_eq!(raw_count(&url, "SELECT COUNT(*) FROM events").await, 1);
    assert_eq!(raw_count(&url, "SELECT COUNT(*) FROM runs").await, 1);
}

async fn events_page_and_filter(backend: Backend) {
    let (store, _url, _g) = fresh_store(backend).await;
    let env = default_env(&store).await;
    for i in 0..7 {
        let name = if i % 2 == 0 { "a.even" } else { "b.odd" };
        let mut e = new_event(&env, name, None);
        e.data = json!({"i": i, "tag": format!("item_{i}")});
        store.record_event(&e, &[]).await.expect("stored");
    }
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let q = EventQuery {
            page: PageRequest {
                before_seq: before,
                limit: 3,
            },
            ..EventQuery::default()
        };
        let page = store.list_events(&env, &q).await.expect("page");
        if page.is_empty() {
            break;
        }
        before = page.last().map(|e| e.seq);
        seen.extend(page.into_iter().map(|e| e.data["i"].as_i64().expect("i")));
    }
    assert_eq!(seen, vec![6, 5, 4, 3, 2, 1, 0], "newest first, each once");
    let by_name = EventQuery {
        page: PageRequest {
            before_seq: None,
            limit: 100,
        },
        name: Some("b.odd".into()),
        ..EventQuery::default()
    };
    assert_eq!(store.list_events(&env, &by_name).await.expect("q").len(), 3);
    let by_names = EventQuery {
        page: PageRequest {
            before_seq: None,
            limit: 100,
        },
        names: Some(vec!["a.even".into(), "b.odd".into()]),
        ..EventQuery::default()
    };
    assert_eq!(
        store.list_events(&env, &by_names).await.expect("q").len(),
        7
    );
    let search = EventQuery {
        page: PageRequest {
            before_seq: None,
            limit: 100,
        },
        search: Some("item_5".into()),
        ..EventQuery::default()
    };
    let found = store.list_events(&env, &search).await.expect("q");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].data["i"], 5);
    let future = EventQuery {
        page: PageRequest {
            before_seq: None,
            limit: 100,
        },
        since: Some(Ts(chrono::Utc::now() + chrono::Duration::hours(1))),
        ..EventQuery::default()
    };
    assert!(
        store
            .list_events(&env, &future)
            .await
            .expect("q")
            .is_empty()
    );
    let past = EventQuery {
        page: PageRequest {
            before_seq: None,
            limit: 100,
        },
        since: Some(Ts(chrono::Utc::now() - chrono::Duration::hours(1))),
        until: Some(Ts(chrono::Utc::now() + chrono::Duration::hours(1))),
        ..EventQuery::default()
    };
    assert_eq!(store.list_events(&env, &past).await.expect("q").len(), 7);
    let (names, scanned) = store
        .event_names(
            &env,
            &EventNameQuery {
                scan_cap: 100,
                ..EventNameQuery::default()
            },
        )
        .await
        .expect("names");
    assert_eq!(scanned, 7);
    assert_eq!(names[0].name, "a.even");
    assert_eq!(names[0].count, 4);
}

async fn cancel_records_history(backend: Backend) {
    let (store, _url, _g) = fresh_store(backend).await;
    let env = default_env(&store).await;
    let run = new_run("fn-c");
    store
        .record_event(&new_event(&env, "x.y", None), std::slice::from_ref(&run))
        .await
        .expect("stored");
    let CancelOutcome::Cancelled(cancelled) = store
        .cancel_run(&env, &run.id, "user asked")
        .await
        .expect("cancel")
    else {
        panic!("a running run is cancelled");
    };
    assert_eq!(cancelled.status, RunStatus::Cancelled);
    assert_eq!(cancelled.cancellation_cause.as_deref(), Some("user asked"));
    assert!(cancelled.ended_at.is_some());
    assert!(matches!(
        store
            .cancel_run(&env, &run.id, "again")
            .await
            .expect("cancel"),
        CancelOutcome::AlreadyEnded(_)
    ));
    assert!(matches!(
        store
            .cancel_run(&env, &RunId::generate(), "x")
            .await
            .expect("cancel"),
        CancelOutcome::NotFound
    ));
    let kinds: Vec<String> = store
        .run_history(&env, &run.id, None)
        .await
        .expect("history")
        .into_iter()
        .map(|h| h.kind)
        .collect();
    assert_eq!(
        kinds,
        vec!["run.created", "run.status_changed", "run.cancelled"]
    );
    let seqs: Vec<i64> = store
        .run_history(&env, &run.id, None)
        .await
        .expect("history")
        .iter()
        .map(|h| h.seq)
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "history sequence is increasing: {seqs:?}"
    );
}

async fn history_is_append_only(backend: Backend) {
    let (store, url, _g) = fresh_store(backend).await;
    let env = default_env(&store).await;
    store
        .record_event(&new_event(&env, "a.b", None), &[])
        .await
        .expect("stored");
    let update = raw_execute(&url, "UPDATE history SET kind = 'tampered'").await;
    assert!(
        update.is_err_and(|e| e.contains("append-only")),
        "UPDATE must be refused"
    );
    let delete = raw_execute(&url, "DELETE FROM history").await;
    assert!(
        delete.is_err_and(|e| e.contains("append-only")),
        "DELETE must be refused"
    );
    assert_eq!(
        raw_count(
            &url,
            "SELECT COUNT(*) FROM history WHERE kind = 'event.received'"
        )
        .await,
        1
    );
}

async fn environments_isolate_data(backend: Backend) {
    let (store, url, _g) = fresh_store(backend).await;
    let env = default_env(&store).await;
    let default = store.default_environment().await.expect("q").expect("env");
    raw_execute(
        &url,
        &format!("INSERT INTO environments (id, project_id, name, created_at) VALUES ('env-staging', '{}', 'staging', '2026-01-01T00:00:00.000000Z')", default.project_id),
    )
    .await
    .expect("second environment");
    let staging = store
        .find_environment(&default.project_id, "staging")
        .await
        .expect("q")
        .expect("found by name")
        .id;
    store
        .register_function(&registration(&env, "only-default", "a.b"))
        .await
        .expect("register");
    store
        .record_event(&new_event(&env, "a.b", Some("k")), &[])
        .await
        .expect("stored");
    assert!(
        store
            .get_function(&staging, &FunctionId::parse("only-default").expect("id"))
            .await
            .expect("q")
            .is_none()
    );
    let q = EventQuery {
        page: PageRequest {
            before_seq: None,
            limit: 10,
        },
        ..EventQuery::default()
    };
    assert!(store.list_events(&staging, &q).await.expect("q").is_empty());
    // The same idempotency key in another environment is a different event.
    assert!(matches!(
        store
            .record_event(&new_event(&staging, "a.b", Some("k")), &[])
            .await
            .expect("stored"),
        EventOutcome::Stored { .. }
    ));
}

/// A group commit of events behaves as if each had been stored alone, in order: a key repeated
/// within the batch answers with the first event, a wait is satisfied by the first matching
/// event only, and admissions to a concurrency lane count the batch's earlier runs.
async fn a_batch_of_events_is_stored_as_if_one_by_one(backend: Backend) {
    use ironflow::domain::function::ExecutionMode;
    use ironflow::domain::job::{Fence, JobReport, ReportOutcome, YieldRequest};
    use ironflow::store::execution::{ClaimRequest, FenceOutcome};
    let (store, url, _g) = fresh_store(backend).await;
    let env = default_env(&store).await;
    for (id, event) in [("fn-a", "a.b"), ("waiter", "w.start"), ("laned", "l.go")] {
        store
            .register_function(&registration(&env, id, event))
            .await
            .expect("registered");
    }
    // A run parked on `w.reply`.
    let waiter = new_run("waiter");
    store
        .record_event(
            &new_event(&env, "w.start", None),
            std::slice::from_ref(&waiter),
        )
        .await
        .expect("stored");
    let claim = store
        .claim_jobs(&ClaimRequest {
            env_id: env.clone(),
            worker_id: "w1".into(),
            function_ids: vec!["waiter".into()],
            limit: 1,
            lease_expires_at: Ts::now().plus(std::time::Duration::from_secs(60)),
            mode: ExecutionMode::Pull,
        })
        .await
        .expect("claimed");
    let job = claim.jobs.first().expect("the waiter's job");
    let parked = store
        .report_jobs(
            &[JobReport {
                dispatch_id: job.dispatch_id.clone(),
                fence: Fence {
                    env_id: env.clone(),
                    worker_id: "w1".into(),
                    execution_seq: job.execution_seq,
                    lease_token: job.lease_token.clone(),
                },
                steps: Vec::new(),
                step_offset: 0,
                outcome: ReportOutcome::Yielded(YieldRequest::WaitForEvent {
                    step_id: "reply:0".into(),
                    event: "w.reply".into(),
                    match_path: None,
                    match_value: None,
                    timeout: std::time::Duration::from_secs(600),
                }),
            }],
            Ts::now().plus(std::time::Duration::from_secs(60)),
        )
        .await
        .expect("reported");
    assert!(matches!(parked[0], FenceOutcome::Accepted(_)));

    let lane = |run: NewRun| NewRun {
        lane: Some(Lane {
            key: "x".into(),
            limit: 1,
        }),
        ..run
    };
    let batch = [
        (new_event(&env, "a.b", Some("k")), vec![new_run("fn-a")]),
        (new_event(&env, "a.b", Some("k")), vec![new_run("fn-a")]),
        (new_event(&env, "w.reply", None), vec![]),
        (new_event(&env, "w.reply", None), vec![]),
        (new_event(&env, "l.go", None), vec![lane(new_run("laned"))]),
        (new_event(&env, "l.go", None), vec![lane(new_run("laned"))]),
    ];
    let emissions: Vec<Emission> = batch
        .iter()
        .map(|(event, runs)| Emission {
            event: event.clone(),
            runs: runs.clone(),
            debounces: Vec::new(),
        })
        .collect();
    let outcomes = store.record_events(&emissions).await.expect("stored");
    assert_eq!(outcomes.len(), 6);
    let first_runs = match &outcomes[0] {
        EventOutcome::Stored {
            event_id, run_ids, ..
        } => {
            assert_eq!(event_id, &batch[0].0.id);
            run_ids.clone()
        }
        other => panic!("the first keyed event is stored: {other:?}"),
    };
    match &outcomes[1] {
        EventOutcome::Duplicate {
            event_id, run_ids, ..
        } => {
            assert_eq!(event_id, &batch[0].0.id, "answered with the first event");
            assert_eq!(run_ids, &first_runs);
        }
        other => panic!("the repeated key is a duplicate: {other:?}"),
    }
    assert!(
        outcomes[2..]
            .iter()
            .all(|o| matches!(o, EventOutcome::Stored { .. }))
    );
    let events = "SELECT count(*) FROM events WHERE name IN ('a.b', 'w.reply', 'l.go')";
    assert_eq!(
        raw_count(&url, events).await,
        5,
        "the duplicate wrote nothing"
    );

    // The first reply resumed the waiter; the second found no wait.
    let resumed = format!(
        "SELECT count(*) FROM history WHERE run_id = '{}' AND kind = 'run.resumed'",
        waiter.id
    );
    assert_eq!(raw_count(&url, &resumed).await, 1);
    let answered = format!(
        "SELECT count(*) FROM steps WHERE run_id = '{}' AND status = 'completed' \
         AND CAST(output AS TEXT) LIKE '%{}%'",
        waiter.id, batch[2].0.id
    );
    assert_eq!(raw_count(&url, &answered).await, 1, "with the first reply");

    // Limit 1: the lane's first run is admitted, the second waits for capacity.
    let status = |run: &NewRun| {
        let store = store.clone();
        let env = env.clone();
        let id = run.id.clone();
        async move {
            store
                .get_run(&env, &id)
                .await
                .expect("read")
                .expect("exists")
                .status
        }
    };
    assert_eq!(status(&batch[4].1[0]).await, RunStatus::Running);
    assert_eq!(status(&batch[5].1[0]).await, RunStatus::WaitingForCapacity);
}

/// The audit log keeps every entry until its organisation's retention says otherwise: the
/// database refuses updates and early deletes; the sweep removes only entries past it.
async fn audit_log_is_append_only_with_retention(backend: Backend) {
    use ironflow::store::audit::{AuditEntry, AuditFilter, AuditSettingsRecord};
    let (store, url, _g) = fresh_store(backend).await;
    ironflow::tenancy::bootstrap(&store)
        .await
        .expect("bootstrap");
    let org = store.root_org().await.expect("read").expect("root org").id;
    let entry = |id: &str, at: Ts| AuditEntry {
        id: id.into(),
        at,
        org_id: org.clone(),
        actor_kind: "key".into(),
        actor_id: "k1".into(),
        event_type: "authz.allowed".into(),
        action: "keys:admin".into(),
        resource: "irn:ironflow:o:p:keys:e:*".into(),
        outcome: "allowed".into(),
        ..AuditEntry::default()
    };
    let old = Ts::now().minus(std::time::Duration::from_secs(40 * 86_400));
    store
        .append_audit(&entry("old", old))
        .await
        .expect("old entry");
    store
        .append_audit(&entry("new", Ts::now()))
        .await
        .expect("new entry");
    let update = raw_execute(&url, "UPDATE audit_log SET outcome = 'denied'").await;
    assert!(
        update.is_err_and(|e| e.contains("append-only")),
        "UPDATE refused"
    );
    let delete = raw_execute(&url, "DELETE FROM audit_log").await;
    assert!(
        delete.is_err_and(|e| e.contains("append-only")),
        "DELETE refused without retention"
    );
    assert_eq!(
        store.delete_expired_audit().await.expect("sweep"),
        0,
        "keep everything by default"
    );

    store
        .put_audit_settings(&AuditSettingsRecord {
            org_id: org.clone(),
            log_reads: false,
            retention_days: Some(30),
            updated_at: Ts::now(),
        })
        .await
        .expect("settings");
    let young = raw_execute(&url, "DELETE FROM audit_log WHERE id = 'new'").await;
    assert!(
        young.is_err_and(|e| e.contains("append-only")),
        "a young entry stays"
    );
    assert_eq!(store.delete_expired_audit().await.expect("sweep"), 1);
    let left = store
        .list_audit(&AuditFilter {
            org_id: org,
            limit: 10,
            ..AuditFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(
        left.iter().map(|r| r.entry.id.as_str()).collect::<Vec<_>>(),
        ["new"]
    );
}

/// Policy-set versions are append-only and a save with a stale expected version writes nothing.
async fn policy_versions_are_append_only(backend: Backend) {
    use ironflow::store::policies::{NewPolicySet, SaveOutcome};
    let (store, url, _g) = fresh_store(backend).await;
    let new = |modules: &[(&str, &str)]| NewPolicySet {
        scope: "platform".into(),
        mode: "enforce".into(),
        modules: modules
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        created_by: "test".into(),
    };
    let first = store
        .save_policy_set(&new(&[("a", "false")]), 0)
        .await
        .expect("save");
    assert!(matches!(first, SaveOutcome::Saved(ref r) if r.version == 1));
    let stale = store
        .save_policy_set(&new(&[("b", "true")]), 0)
        .await
        .expect("save");
    assert!(matches!(stale, SaveOutcome::Stale { current: 1 }));
    let second = store
        .save_policy_set(&new(&[("b", "true")]), 1)
        .await
        .expect("save");
    assert!(matches!(second, SaveOutcome::Saved(ref r) if r.version == 2));
    assert_eq!(
        store
            .list_policy_sets("platform")
            .await
            .expect("list")
            .len(),
        2
    );
    let update = raw_execute(&url, "UPDATE policy_sets SET mode = 'monitor'").await;
    assert!(update.is_err_and(|e| e.contains("append-only")));
    let latest = store
        .latest_policy_set("platform")
        .await
        .expect("read")
        .expect("some");
    assert_eq!(latest.version, 2);
    assert_eq!(latest.modules.get("b").map(String::as_str), Some("true"));
}

both_backends! {
    audit_append_only => audit_log_is_append_only_with_retention;
    policy_versions => policy_versions_are_append_only;
}

both_backends! {
    event_batches => a_batch_of_events_is_stored_as_if_one_by_one;
    migrations_idempotent => migrations_are_idempotent_and_views_exist;
    bootstrap_once => bootstrap_happens_once;
    function_versions => functions_are_versioned_by_content;
    registration_race => concurrent_first_registrations_agree;
    event_runs_idempotency => events_create_runs_atomically_and_idempotently;
    idempotency_race => concurrent_idempotent_emits_store_once;
    event_pages => events_page_and_filter;
    cancel_history => cancel_records_history;
    history_append_only => history_is_append_only;
    environment_isolation => environments_isolate_data;
}

/// The README's example queries run against the documented views and give the right answers.
async fn documented_queries_answer(backend: Backend) {
    let (store, url, _g) = fresh_store(backend).await;
    let env = default_env(&store).await;
    let runs = vec![new_run("fn-x"), new_run("fn-x"), new_run("fn-y")];
    store
        .record_event(&new_event(&env, "order.created", None), &runs)
        .await
        .expect("stored");
    let failed_at = match backend {
        Backend::Postgres => "now()".to_owned(),
        Backend::Sqlite => format!("'{}'", Ts::now().to_rfc3339()),
    };
    raw_execute(
        &url,
        &format!(
            "UPDATE runs SET status = 'failed', ended_at = {failed_at} WHERE function_id = 'fn-x'"
        ),
    )
    .await
    .expect("mark failed");
    let failed_per_function = match backend {
        Backend::Postgres => {
            "SELECT count(*) FROM (SELECT function_id, count(*) AS failed FROM ironflow_runs \
             WHERE status = 'failed' AND ended_at > now() - interval '1 hour' \
             GROUP BY function_id ORDER BY failed DESC) q WHERE failed = 2"
        }
        Backend::Sqlite => {
            "SELECT count(*) FROM (SELECT function_id, count(*) AS failed FROM ironflow_runs \
             WHERE status = 'failed' AND ended_at > strftime('%Y-%m-%dT%H:%M:%S', 'now', '-1 hour') \
             GROUP BY function_id ORDER BY failed DESC) q WHERE failed = 2"
        }
    };
    assert_eq!(
        raw_count(&url, failed_per_function).await,
        1,
        "fn-x failed twice in the last hour"
    );
    let run_history = format!(
        "SELECT count(*) FROM (SELECT seq, recorded_at, kind, payload FROM ironflow_history \
         WHERE run_id = '{}' ORDER BY seq) q",
        runs[0].id
    );
    assert_eq!(raw_count(&url, &run_history).await, 1);
    let busiest = match backend {
        Backend::Postgres => {
            "SELECT runs FROM (SELECT e.name, count(DISTINCT e.event_id) AS events, count(r.run_id) AS runs \
             FROM ironflow_events e LEFT JOIN ironflow_runs r ON r.event_id = e.event_id \
             WHERE e.received_at >= date_trunc('day', now()) \
             GROUP BY e.name ORDER BY events DESC LIMIT 10) q"
        }
        Backend::Sqlite => {
            "SELECT runs FROM (SELECT e.name, count(DISTINCT e.event_id) AS events, count(r.run_id) AS runs \
             FROM ironflow_events e LEFT JOIN ironflow_runs r ON r.event_id = e.event_id \
             WHERE e.received_at >= strftime('%Y-%m-%dT00:00:00', 'now') \
             GROUP BY e.name ORDER BY events DESC LIMIT 10) q"
        }
    };
    assert_eq!(raw_count(&url, busiest).await, 3);
}

both_backends! {
    documented_queries => documented_queries_answer;
}

fn append_event(
    env: &EnvId,
    entity: &str,
    expected: ironflow::domain::stream::ExpectedVersion,
    key: Option<&str>,
) -> NewEvent {
    NewEvent {
        append: Some(ironflow::domain::stream::AppendRequest {
            entity_id: ironflow::ids::EntityId::parse(entity).expect("entity id"),
            entity_type: "order".into(),
            expected,
            tombstone: false,
        }),
        ..new_event(env, "order.changed", key)
    }
}

/// One group-commit batch of appends is decided in order: each against the versions the
/// earlier ones left, a refusal writes nothing, a key repeated in the batch answers as its
/// first use, and the stream's head counts exactly what was stored.
async fn a_batch_of_appends_is_decided_in_order(backend: Backend) {
    use ironflow::domain::stream::ExpectedVersion::{Any, Exactly, NoStream};
    let (store, url, _g) = fresh_store(backend).await;
    let env = default_env(&store).await;
    let batch: Vec<Emission> = [
        append_event(&env, "o-1", NoStream, None),
        append_event(&env, "o-1", NoStream, None), // lost to the one before it
        append_event(&env, "o-1", Exactly(1), Some("k")),
        append_event(&env, "o-1", Exactly(1), Some("k")), // same key: the first use's answer
        append_event(&env, "o-2", Exactly(3), Some("refused")), // no such version
        append_event(&env, "o-2", Exactly(3), Some("refused")), // refused the same way
        append_event(&env, "o-2", Any, None),
        new_event(&env, "plain.event", None),
    ]
    .into_iter()
    .map(|event| Emission {
        event,
        runs: vec![new_run("on-order")],
        debounces: Vec::new(),
    })
    .collect();
    let outcomes = store.record_events(&batch).await.expect("batch");
    let version = |o: &EventOutcome| match o {
        EventOutcome::Stored { entity_version, .. } => Ok(*entity_version),
        EventOutcome::Duplicate { entity_version, .. } => Err(*entity_version),
        EventOutcome::Refused(r) => panic!("refused: {r}"),
    };
    assert_eq!(version(&outcomes[0]), Ok(Some(1)));
    assert!(
        matches!(&outcomes[1], EventOutcome::Refused(r) if r.to_string().contains("at version 1"))
    );
    assert_eq!(version(&outcomes[2]), Ok(Some(2)));
    assert_eq!(version(&outcomes[3]), Err(Some(2)));
    assert!(matches!(&outcomes[4], EventOutcome::Refused(_)));
    assert!(matches!(&outcomes[5], EventOutcome::Refused(_)));
    assert_eq!(version(&outcomes[6]), Ok(Some(1)));
    assert_eq!(version(&outcomes[7]), Ok(None));

    assert_eq!(raw_count(&url, "SELECT COUNT(*) FROM events").await, 4);
    assert_eq!(
        raw_count(&url, "SELECT COUNT(*) FROM runs").await,
        4,
        "refused appends start no run"
    );
    assert_eq!(
        raw_count(
            &url,
            "SELECT COUNT(*) FROM streams WHERE entity_id = 'o-1' AND version = 2 AND event_count = 2"
        )
        .await,
        1
    );
    assert_eq!(
        raw_count(
            &url,
            "SELECT COUNT(*) FROM streams WHERE entity_id = 'o-2' AND version = 1"
        )
        .await,
        1
    );
    // A batch whose every append to a new stream was refused leaves no empty stream behind.
    let refused = store
        .record_event(&append_event(&env, "o-3", Exactly(5), None), &[])
        .await
        .expect("answered");
    assert!(matches!(refused, EventOutcome::Refused(_)));
    assert_eq!(
        raw_count(&url, "SELECT COUNT(*) FROM streams WHERE entity_id = 'o-3'").await,
        0
    );
}

both_backends! {
    append_batches => a_batch_of_appends_is_decided_in_order;
}
