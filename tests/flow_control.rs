//! Scheduling and flow control in the store, on both backends: a cron tick is claimed by exactly
//! one of several racing claims; a debounce entry carries the latest event and is taken only if
//! no event re-armed it since it was read; throttled runs get their starts spread by the key's
//! window, in one batch and across batches.

mod common;

use common::{Backend, default_env, fresh_store, raw_count};
use ironflow::domain::function::{DebounceDef, FunctionDefinition, ThrottleDef, TriggerDef};
use ironflow::domain::lifecycle::create::RunSpec;
use ironflow::domain::run::RunStatus;
use ironflow::domain::schedule::ScheduleSlot;
use ironflow::domain::time::Ts;
use ironflow::ids::{EnvId, EventId, FunctionId, RunId};
use ironflow::store::SharedStore;
use ironflow::store::events::{Emission, NewEvent, NewRun};
use ironflow::store::functions::FunctionRegistration;
use ironflow::store::schedules::{CronAdvance, DebounceHit, Throttle};
use serde_json::json;

async fn register(store: &SharedStore, env: &EnvId, id: &str) -> FunctionId {
    let id = FunctionId::parse(id).expect("id");
    store
        .register_function(&FunctionRegistration {
            env_id: env.clone(),
            id: id.clone(),
            definition: FunctionDefinition {
                name: id.to_string(),
                triggers: vec![TriggerDef {
                    cron: Some("* * * * * *".into()),
                    ..TriggerDef::default()
                }],
                ..FunctionDefinition::default()
            },
            change_reason: String::new(),
        })
        .await
        .expect("registered");
    id
}

fn event(env: &EnvId, name: &str, n: i64) -> NewEvent {
    NewEvent {
        id: EventId::generate(),
        env_id: env.clone(),
        name: name.into(),
        data: json!({"user": "u1", "n": n}),
        metadata: json!({}),
        source: "test".into(),
        idempotency_key: None,
        version: 0,
        received_at: Ts::now(),
        append: None,
        purge_below: false,
        emitted_by_run: None,
        schema: Default::default(),
        traceparent: None,
    }
}

async fn a_tick_is_claimed_once(backend: Backend) {
    let (store, _url, _g) = fresh_store(backend).await;
    let env = default_env(&store).await;
    let function = register(&store, &env, "ticker").await;
    let tick = Ts::now().minus(std::time::Duration::from_secs(1));
    store
        .replace_cron_schedules(
            &env,
            &function,
            1,
            &[ScheduleSlot {
                trigger_index: 0,
                expression: "* * * * * *".into(),
                next_at: tick,
            }],
        )
        .await
        .expect("schedule");
    let due = store.due_cron(Ts::now(), 10).await.expect("due rows");
    assert_eq!(due.len(), 1);
    assert!(due[0].active);
    // Eight claims of the same tick, as eight nodes that read the row at once would make.
    let claims = futures::future::join_all((0..8).map(|_| {
        let store = store.clone();
        let row = due[0].schedule.clone();
        async move {
            store
                .advance_cron(&CronAdvance {
                    schedule: &row,
                    to: Ts::now().plus(std::time::Duration::from_secs(1)),
                    fired: Some(row.next_at),
                })
                .await
                .expect("claim")
        }
    }))
    .await;
    assert_eq!(claims.iter().filter(|c| **c).count(), 1, "{claims:?}");
    assert!(
        store
            .due_cron(Ts::now(), 10)
            .await
            .expect("due rows")
            .is_empty(),
        "the schedule moved past the tick"
    );
    let kept = store
        .cron_schedules_of(&env, &function)
        .await
        .expect("rows");
    assert_eq!(kept[0].last_tick_at, Some(tick));
    // A definition without the trigger drops the row.
    store
        .replace_cron_schedules(&env, &function, 2, &[])
        .await
        .expect("replace");
    assert!(
        store
            .cron_schedules_of(&env, &function)
            .await
            .expect("rows")
            .is_empty()
    );
}

fn hit(function: &FunctionId) -> DebounceHit {
    DebounceHit {
        function_id: function.clone(),
        function_version: 1,
        key: "u1".into(),
        // No quiet period, so the entry is due at once and the test need not wait.
        def: DebounceDef {
            period_ms: 0,
            key: "user".into(),
            max_wait_ms: 0,
        },
    }
}

async fn arm(store: &SharedStore, env: &EnvId, function: &FunctionId, n: i64) -> EventId {
    let e = event(env, "signup", n);
    let id = e.id.clone();
    store
        .record_events(&[Emission {
            event: e,
            runs: Vec::new(),
            debounces: vec![hit(function)],
        }])
        .await
        .expect("stored");
    id
}

async fn a_debounce_carries_the_latest_event_and_is_taken_once(backend: Backend) {
    let (store, _url, _g) = fresh_store(backend).await;
    let env = default_env(&store).await;
    let function = register(&store, &env, "debounced").await;
    arm(&store, &env, &function, 1).await;
    let second = arm(&store, &env, &function, 2).await;
    let entries = store.list_debounces(&env, 10).await.expect("entries");
    assert_eq!(entries.len(), 1, "one entry per key");
    assert_eq!(entries[0].event_id, second.to_string());
    assert_eq!(entries[0].events, 2);

    let later = || Ts::now().plus(std::time::Duration::from_secs(1));
    let read = store.due_debounces(later(), 10).await.expect("due");
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].event_name, "signup");
    // An event re-arms the entry after it was read: taking the stale read starts nothing.
    let third = arm(&store, &env, &function, 3).await;
    let spec = |due: &ironflow::store::schedules::DueDebounce| RunSpec {
        id: RunId::generate(),
        env: env.clone(),
        function_id: function.clone(),
        function_version: 1,
        event_id: Some(EventId::from_stored(due.event_id.clone())),
        event_name: due.event_name.clone(),
        input: serde_json::from_str(&due.event_data).expect("json"),
        max_attempts: 3,
        parent: None,
        parent_step: None,
        lane: None,
        not_before: None,
    };
    assert!(
        store
            .fire_debounce(&read[0], &spec(&read[0]))
            .await
            .expect("take")
            .is_none(),
        "a re-armed entry is not taken with its stale read"
    );
    let fresh = store.due_debounces(later(), 10).await.expect("due");
    assert_eq!(fresh[0].event_id, third.to_string());
    let fired = spec(&fresh[0]);
    let effects = store
        .fire_debounce(&fresh[0], &fired)
        .await
        .expect("take")
        .expect("taken");
    assert!(effects.work_ready);
    assert!(
        store
            .fire_debounce(&fresh[0], &spec(&fresh[0]))
            .await
            .expect("take")
            .is_none(),
        "taken once"
    );
    assert!(
        store
            .list_debounces(&env, 10)
            .await
            .expect("entries")
            .is_empty()
    );
    let runs = store
        .run_ids_for_event(&env, &third)
        .await
        .expect("runs of the last event");
    assert_eq!(runs, vec![fired.id.clone()]);
    let run = store
        .get_run(&env, &fired.id)
        .await
        .expect("read")
        .expect("run");
    assert_eq!(run.input["n"], 3, "the run starts with the last event");
}

fn throttled_run(function: &FunctionId) -> NewRun {
    NewRun {
        id: RunId::generate(),
        function_id: function.clone(),
        function_version: 1,
        status: RunStatus::Running,
        max_attempts: 3,
        lane: None,
        throttle: Some(Throttle {
            key: "u1".into(),
            def: ThrottleDef {
                limit: 2,
                period_ms: 60_000,
                key: "user".into(),
            },
        }),
    }
}

async fn throttled_runs_start_spread(backend: Backend) {
    let (store, url, _g) = fresh_store(backend).await;
    let env = default_env(&store).await;
    let function = register(&store, &env, "throttled").await;
    // Three in one batch, two more on their own: a limit of 2 a minute lets two start now.
    let batch: Vec<Emission> = (0..3)
        .map(|n| Emission {
            event: event(&env, "order", n),
            runs: vec![throttled_run(&function)],
            debounces: Vec::new(),
        })
        .collect();
    store.record_events(&batch).await.expect("stored");
    for n in 3..5 {
        store
            .record_event(&event(&env, "order", n), &[throttled_run(&function)])
            .await
            .expect("stored");
    }
    let now = match backend {
        Backend::Postgres => "now()".to_owned(),
        Backend::Sqlite => format!("'{}'", Ts::now().to_rfc3339()),
    };
    let count = |cond: &str| {
        format!("SELECT COUNT(*) FROM jobs WHERE function_id = 'throttled' AND {cond}")
    };
    assert_eq!(
        raw_count(&url, &count("state = 'queued'")).await,
        5,
        "none dropped"
    );
    assert_eq!(
        raw_count(&url, &count(&format!("due_at <= {now}"))).await,
        2,
        "two start at once"
    );
    let in_a_minute = match backend {
        Backend::Postgres => "now() + interval '50 seconds'".to_owned(),
        Backend::Sqlite => format!(
            "'{}'",
            Ts::now()
                .plus(std::time::Duration::from_secs(50))
                .to_rfc3339()
        ),
    };
    assert_eq!(
        raw_count(&url, &count(&format!("due_at > {in_a_minute}"))).await,
        3,
        "the other three a period later or more"
    );
}

both_backends! {
    cron_claim => a_tick_is_claimed_once;
    debounce_take => a_debounce_carries_the_latest_event_and_is_taken_once;
    throttle_spread => throttled_runs_start_spread;
}
