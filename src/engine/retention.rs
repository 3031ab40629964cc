//! History retention: each environment's setting, and the pass the upkeep runs every few
//! minutes (the decision is [`crate::domain::retention::plan`]; the store carries it out).

use std::time::{Duration, Instant};

use super::{Engine, EngineError};
use crate::domain::retention;
use crate::domain::time::Ts;
use crate::ids::OrgId;
use crate::store::SharedStore;
use crate::store::retention::RemovedBatch;
use crate::store::tenancy::EnvironmentRecord;

/// Rows of each kind one transaction removes.
const BATCH: i64 = 1000;
/// Longest one pass keeps removing; the rest waits for the next pass.
const PASS_BUDGET: Duration = Duration::from_secs(20);

/// What one pass did.
#[derive(Debug, Clone, Default)]
pub struct RetentionReport {
    pub removed: RemovedBatch,
    pub partitions_created: Vec<String>,
    pub partitions_dropped: Vec<String>,
}

impl Engine {
    /// An environment and its retention (`None`: keep everything).
    pub async fn environment_retention(
        &self,
        org: &OrgId,
        env: &str,
    ) -> Result<(EnvironmentRecord, Option<u32>), EngineError> {
        let found = self.get_environment(org, env).await?;
        let days = self.store().env_retention(&found.id).await?;
        Ok((found, days))
    }

    pub async fn set_environment_retention(
        &self,
        org: &OrgId,
        env: &str,
        days: Option<u32>,
    ) -> Result<(EnvironmentRecord, Option<u32>), EngineError> {
        let found = self.get_environment(org, env).await?;
        self.store()
            .set_env_retention(&found.id, days, Ts::now())
            .await?;
        Ok((found, days))
    }

    /// One retention pass as of `now` (see [`run_retention`]).
    pub async fn run_retention(&self, now: Ts) -> Result<RetentionReport, EngineError> {
        run_retention(self.store(), now).await
    }
}

/// One retention pass as of `now`: partitions made ahead and expired ones dropped (Postgres),
/// then every environment's expired rows removed in batches.
pub async fn run_retention(store: &SharedStore, now: Ts) -> Result<RetentionReport, EngineError> {
    let facts = store.retention_facts(now).await?;
    let plan = retention::plan(&facts);
    let mut report = RetentionReport::default();
    for partition in &plan.create_partitions {
        // A month already written to the default partition cannot get its own: logged, and its
        // entries stay in the default partition.
        match store.create_history_partition(partition).await {
            Ok(()) => report.partitions_created.push(partition.name.clone()),
            Err(e) => {
                tracing::warn!(partition = %partition.name, error = %e, "creating a history partition failed")
            }
        }
    }
    for name in &plan.drop_partitions {
        store.drop_history_partition(name).await?;
        report.partitions_dropped.push(name.clone());
    }
    let started = Instant::now();
    for cutoff in &plan.cutoffs {
        loop {
            let batch = store.remove_expired(cutoff, BATCH).await?;
            report.removed.add(batch);
            let more = batch.runs == BATCH as u64
                || batch.events == BATCH as u64
                || batch.history == BATCH as u64;
            if !more || started.elapsed() > PASS_BUDGET {
                break;
            }
        }
    }
    Ok(report)
}
