//! `ironflow bench --mode authz`: the authorization overhead one request pays, measured where
//! the middleware pays it — the credential and environment looked up (warm caches, as on a
//! busy server), RBAC and `--modules` deny-policy modules evaluated (none of which denies) —
//! next to the policy evaluation alone. Figures in microseconds, p50 / p99.

use std::time::Instant;

use anyhow::Context as _;
use axum::http::HeaderMap;
use serde::Serialize;

use super::Samples;
use crate::api::auth::{Authenticator, Operation};
use crate::domain::authz::{Permission, decide};
use crate::domain::policy::PolicySet;
use crate::engine::{Engine, EngineOptions, PolicySave};

/// What to run.
#[derive(Debug, Clone)]
pub struct AuthzOptions {
    pub database_url: String,
    pub modules: usize,
    pub samples: usize,
}

#[derive(Debug, Serialize)]
pub struct AuthzReport {
    pub backend: &'static str,
    pub modules: usize,
    pub samples: usize,
    /// Authenticate + resolve the environment + decide (RBAC and every module).
    pub authorize_p50_us: f64,
    pub authorize_p99_us: f64,
    /// The decision alone (RBAC and every module), on facts already at hand.
    pub decide_p50_us: f64,
    pub decide_p99_us: f64,
}

impl AuthzReport {
    pub fn summary_line(&self) -> String {
        format!(
            "ironflow bench authz [{}] {} policy modules, {} requests: authorize p50 {:.1} us, p99 {:.1} us; \
             decision alone p50 {:.1} us, p99 {:.1} us",
            self.backend,
            self.modules,
            self.samples,
            self.authorize_p50_us,
            self.authorize_p99_us,
            self.decide_p50_us,
            self.decide_p99_us
        )
    }
}

/// Modules of the kinds people write: event-name prefixes, role and environment checks,
/// function ids, time windows. None matches the measured request, so every one is evaluated.
fn modules(n: usize) -> std::collections::BTreeMap<String, String> {
    (0..n)
        .map(|i| {
            let source = match i % 5 {
                0 => format!(r#"action == "events:emit" && request.event_name.startsWith("billing-{i}.")"#),
                1 => format!(
                    r#"principal.roles.exists(r, r == "contractor-{i}") && action == "secrets:write""#
                ),
                2 => format!(r#"resource.env == "production-{i}" && action.startsWith("runs:")"#),
                3 => format!(r#"request.function_id == "payroll-{i}" && principal.kind == "key""#),
                _ => format!(r#"time.getHours() == {h} && action == "keys:admin""#, h = 25 + i),
            };
            (format!("module-{i:02}"), source)
        })
        .collect()
}

fn micros(samples: &Samples, p: f64) -> f64 {
    samples.percentile_ms(p) * 1000.0
}

pub async fn run(options: AuthzOptions) -> anyhow::Result<AuthzReport> {
    let store =
        crate::server::open_store(&crate::store::DbOptions::url(&options.database_url)).await?;
    let backend = store.backend().as_str();
    // A fresh key of the first organisation (bootstrapping an empty database first).
    crate::tenancy::bootstrap(&store).await?;
    let key = crate::tenancy::mint_key(
        &store,
        crate::tenancy::MintKey {
            name: "bench authz".into(),
            roles: vec!["developer".into()],
            org: None,
            project: None,
            env: None,
            expires_in: Some("1h".into()),
        },
    )
    .await?;
    let engine = Engine::new(store.clone(), EngineOptions::default());
    let auth = Authenticator::new(engine.clone(), false);
    let mut headers = HeaderMap::new();
    headers.insert(
        axum::http::header::AUTHORIZATION,
        format!("Bearer {}", key.secret).parse().context("header")?,
    );
    let caller = auth
        .authenticate(&headers, None, None, None)
        .await
        .map_err(|e| anyhow::anyhow!("authenticating: {}", e.message))?;
    let env = caller.ctx.env.clone();
    let scope = env.as_str().to_owned();
    let current = engine.policy_document(&scope).await?.version;
    let set = modules(options.modules);
    engine
        .save_policy_set(
            &scope,
            PolicySave {
                mode: "enforce".into(),
                decision: String::new(),
                modules: set.clone(),
                expected_version: current,
                by: "bench".into(),
            },
        )
        .await?;
    let operation = || {
        let mut op = Operation::new(Permission::EventsEmit, "POST", "/api/v1/events");
        op.facts.event_names = vec!["orders.placed".into()];
        op
    };

    let mut full = Samples::default();
    for i in 0..options.samples + 100 {
        let started = Instant::now();
        let caller = auth
            .authenticate(&headers, None, None, Some(Permission::EventsEmit))
            .await
            .map_err(|e| anyhow::anyhow!("authenticating: {}", e.message))?;
        let policies = engine.policies_in_force(&caller.ctx.env).await?;
        let decided = auth.decide(caller, &policies, operation()).await;
        let took = started.elapsed();
        anyhow::ensure!(decided.is_ok(), "the measured request must be allowed");
        if i >= 100 {
            full.push(took);
        }
    }

    let checked = PolicySet::check(1, &set, "enforce", "")
        .map_err(|e| anyhow::anyhow!("bench modules: {e}"))?;
    let input = crate::domain::policy::PolicyInput {
        action: "events:emit".into(),
        request: crate::domain::policy::RequestFacts {
            event_names: vec!["orders.placed".into()],
            ..Default::default()
        },
        ..crate::domain::policy::PolicyInput::example()
    };
    let granted = crate::domain::authz::BuiltinRole::Developer.permissions();
    let mut alone = Samples::default();
    for _ in 0..options.samples {
        let started = Instant::now();
        let decision = decide(granted, Permission::EventsEmit, &[&checked], &input);
        alone.push(started.elapsed());
        anyhow::ensure!(decision.allowed(), "the measured decision must allow");
    }
    store.close().await;
    Ok(AuthzReport {
        backend,
        modules: options.modules,
        samples: options.samples,
        authorize_p50_us: micros(&full, 50.0),
        authorize_p99_us: micros(&full, 99.0),
        decide_p50_us: micros(&alone, 50.0),
        decide_p99_us: micros(&alone, 99.0),
    })
}
