//! The policy-set API behind REST: read the set in force, save a new version (checked, with
//! optimistic concurrency), validate, dry-run with an explanation, list and roll back versions.

use std::collections::BTreeMap;

use super::{Engine, EngineError};
use crate::domain::policy::{ModuleOutcome, PolicyInput, PolicySet, PolicySetError};
use crate::domain::time::Ts;
use crate::store::policies::{NewPolicySet, PolicySetRecord, SaveOutcome};

/// A scope's policy set as the API shows it (version 0: nothing saved yet).
#[derive(Debug, Clone)]
pub struct PolicyDocument {
    pub version: i64,
    pub mode: String,
    pub modules: BTreeMap<String, String>,
    pub updated_at: Option<Ts>,
    pub updated_by: String,
}

/// A new version to save.
#[derive(Debug, Clone)]
pub struct PolicySave {
    pub mode: String,
    pub decision: String,
    pub modules: BTreeMap<String, String>,
    /// The version the caller read (`If-Match`); 0 when none was saved yet.
    pub expected_version: i64,
    pub by: String,
}

/// What a dry run found.
#[derive(Debug, Clone)]
pub struct DryRun {
    pub deny: bool,
    pub mode: String,
    pub version: i64,
    pub reasons: Vec<String>,
    pub outcomes: Vec<ModuleOutcome>,
}

impl From<PolicySetRecord> for PolicyDocument {
    fn from(r: PolicySetRecord) -> Self {
        Self {
            version: r.version,
            mode: r.mode,
            modules: r.modules,
            updated_at: Some(r.created_at),
            updated_by: r.created_by,
        }
    }
}

impl Engine {
    pub async fn policy_document(&self, scope: &str) -> Result<PolicyDocument, EngineError> {
        Ok(match self.store().latest_policy_set(scope).await? {
            Some(record) => record.into(),
            None => PolicyDocument {
                version: 0,
                mode: "enforce".into(),
                modules: BTreeMap::new(),
                updated_at: None,
                updated_by: String::new(),
            },
        })
    }

    /// Checks a body without saving it: every problem, each with its module and position.
    pub fn check_policy_set(
        &self,
        modules: &BTreeMap<String, String>,
        mode: &str,
        decision: &str,
    ) -> Result<PolicySet, PolicySetError> {
        PolicySet::check(0, modules, mode, decision)
    }

    /// Saves the next version if `expected_version` is still the one in force.
    pub async fn save_policy_set(
        &self,
        scope: &str,
        save: PolicySave,
    ) -> Result<PolicyDocument, EngineError> {
        self.check_policy_set(&save.modules, &save.mode, &save.decision)
            .map_err(|e| EngineError::InvalidArgument(e.to_string()))?;
        let outcome = self
            .store()
            .save_policy_set(
                &NewPolicySet {
                    scope: scope.to_owned(),
                    mode: save.mode,
                    modules: save.modules,
                    created_by: save.by,
                },
                save.expected_version,
            )
            .await?;
        self.forget_policy(scope);
        match outcome {
            SaveOutcome::Saved(record) => Ok(record.into()),
            SaveOutcome::Stale { current } => Err(EngineError::ConditionFailed(format!(
                "the policy set is at version {current}, not {}: read it again and send If-Match: {current}",
                save.expected_version
            ))),
        }
    }

    pub async fn policy_versions(&self, scope: &str) -> Result<Vec<PolicySetRecord>, EngineError> {
        Ok(self.store().list_policy_sets(scope).await?)
    }

    pub async fn policy_version(
        &self,
        scope: &str,
        version: i64,
    ) -> Result<PolicySetRecord, EngineError> {
        self.store()
            .get_policy_set(scope, version)
            .await?
            .ok_or_else(|| EngineError::not_found("policy set version", version))
    }

    /// Saves an earlier version's modules and mode as the newest version.
    pub async fn rollback_policy_set(
        &self,
        scope: &str,
        version: i64,
        expected_version: i64,
        by: String,
    ) -> Result<PolicyDocument, EngineError> {
        let old = self.policy_version(scope, version).await?;
        self.save_policy_set(
            scope,
            PolicySave {
                mode: old.mode,
                decision: String::new(),
                modules: old.modules,
                expected_version,
                by,
            },
        )
        .await
    }

    /// Evaluates `input` against `candidate` (a body not yet saved) or the set in force.
    pub async fn dry_run_policy(
        &self,
        scope: &str,
        input: &PolicyInput,
        candidate: Option<(BTreeMap<String, String>, String)>,
    ) -> Result<DryRun, EngineError> {
        let set = match candidate {
            Some((modules, mode)) => PolicySet::check(0, &modules, &mode, "")
                .map_err(|e| EngineError::InvalidArgument(e.to_string()))?,
            None => self.policy_in_force(scope).await?,
        };
        let outcomes = set.explain(input);
        let reasons: Vec<String> = outcomes
            .iter()
            .filter(|o| o.outcome != "allow")
            .map(|o| match &o.error {
                Some(e) => format!("{}: evaluation error (denies): {e}", o.module),
                None => o.module.clone(),
            })
            .collect();
        Ok(DryRun {
            deny: !reasons.is_empty(),
            mode: set.mode.as_str().to_owned(),
            version: set.version,
            reasons,
            outcomes,
        })
    }
}
