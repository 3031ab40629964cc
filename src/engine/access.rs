//! Who is calling and what they may do, as facts for the one authorization decision: API keys
//! and sessions resolved to principals, custom roles to permissions, the policy sets in force,
//! and the audit trail's writes. Lookups are cached for a few seconds; writes on this node
//! invalidate at once, other nodes see them within the TTL.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::{Engine, EngineError};
use crate::domain::authz::{BuiltinRole, Permission, PermissionSet, Principal, PrincipalKind};
use crate::domain::policy::{PolicyMode, PolicySet};
use crate::domain::time::Ts;
use crate::ids::{ApiKeyId, EnvId, OrgId, ProjectId};
use crate::store::audit::{AuditEntry, AuditSettingsRecord};
use crate::store::tenancy::{ApiKeyRecord, EnvironmentRecord, SessionRecord};

/// The scope of the platform-wide policy set (an environment's set is scoped by its id).
pub const PLATFORM_SCOPE: &str = "platform";

/// Entries remembered with the instant they were looked up.
struct TtlCache<K, V> {
    ttl: Duration,
    map: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Hash + Eq, V: Clone> TtlCache<K, V> {
    const MAX: usize = 10_000;

    fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &K) -> Option<V> {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, v)| v.clone())
    }

    fn put(&self, key: K, value: V) {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= Self::MAX {
            map.clear();
        }
        map.insert(key, (Instant::now(), value));
    }

    fn forget(&self, key: &K) {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }

    fn clear(&self) {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

/// The engine's authorization caches.
pub(crate) struct AccessCache {
    keys: TtlCache<String, Option<ApiKeyRecord>>,
    sessions: TtlCache<String, Option<SessionRecord>>,
    envs: TtlCache<(ProjectId, String), Option<EnvironmentRecord>>,
    /// Custom roles per org: id and name → permissions.
    roles: TtlCache<String, Arc<HashMap<String, PermissionSet>>>,
    policies: TtlCache<String, PolicySet>,
    audit: TtlCache<String, bool>,
    /// `--dev`: the root organisation's admin and the default environment.
    dev: TtlCache<(), (Principal, Option<EnvironmentRecord>)>,
    /// When each key's `last_used_at` was last written by this node.
    touched: Mutex<HashMap<ApiKeyId, Instant>>,
}

impl Default for AccessCache {
    fn default() -> Self {
        Self {
            keys: TtlCache::new(Duration::from_secs(10)),
            sessions: TtlCache::new(Duration::from_secs(10)),
            envs: TtlCache::new(Duration::from_secs(10)),
            roles: TtlCache::new(Duration::from_secs(5)),
            policies: TtlCache::new(Duration::from_secs(2)),
            audit: TtlCache::new(Duration::from_secs(5)),
            dev: TtlCache::new(Duration::from_secs(10)),
            touched: Mutex::new(HashMap::new()),
        }
    }
}

/// How often a key's `last_used_at` is written (at most).
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// A credential that authenticated, and whose it is.
#[derive(Debug, Clone)]
pub enum Credential {
    Key(ApiKeyRecord),
    Session(SessionRecord),
}

impl Engine {
    fn access(&self) -> &AccessCache {
        &self.inner.access
    }

    /// The live, unexpired key with this hash.
    pub async fn key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>, EngineError> {
        let cache = &self.access().keys;
        let key = match cache.get(&key_hash.to_owned()) {
            Some(hit) => hit,
            None => {
                let found = self.store().find_api_key(key_hash).await?;
                cache.put(key_hash.to_owned(), found.clone());
                found
            }
        };
        let Some(key) = key.filter(|k| k.expires_at.is_none_or(|at| at > Ts::now())) else {
            return Ok(None);
        };
        self.touch_key(&key.id);
        Ok(Some(key))
    }

    /// Records that a key was used, at most once a minute per key and node, off the request's
    /// path.
    fn touch_key(&self, key: &ApiKeyId) {
        {
            let mut touched = self
                .access()
                .touched
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if touched
                .get(key)
                .is_some_and(|at| at.elapsed() < TOUCH_EVERY)
            {
                return;
            }
            if touched.len() > 10_000 {
                touched.clear();
            }
            touched.insert(key.clone(), Instant::now());
        }
        let (engine, key) = (self.clone(), key.clone());
        tokio::spawn(async move {
            if let Err(e) = engine.store().touch_api_key(&key).await {
                tracing::debug!(error = %e, "recording a key's last use");
            }
        });
    }

    /// The unexpired session with this token hash.
    pub async fn session_by_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<SessionRecord>, EngineError> {
        let cache = &self.access().sessions;
        let session = match cache.get(&token_hash.to_owned()) {
            Some(hit) => hit,
            None => {
                let found = self.store().find_session(token_hash).await?;
                cache.put(token_hash.to_owned(), found.clone());
                found
            }
        };
        Ok(session.filter(|s| s.expires_at > Ts::now()))
    }

    /// A project's environment by name (or id).
    pub async fn find_environment(
        &self,
        project: &ProjectId,
        name: &str,
    ) -> Result<Option<EnvironmentRecord>, EngineError> {
        let key = (project.clone(), name.to_owned());
        if let Some(hit) = self.access().envs.get(&key) {
            return Ok(hit);
        }
        let found = self.store().find_environment(project, name).await?;
        self.access().envs.put(key, found.clone());
        Ok(found)
    }

    /// A project's first environment (`default` if it has one): where org-level calls run
    /// when the environment they name does not exist.
    pub async fn first_environment(
        &self,
        project: &ProjectId,
    ) -> Result<Option<EnvironmentRecord>, EngineError> {
        // "" is no environment's name (names are checked non-empty): the key of the project's
        // first environment in the same cache.
        let key = (project.clone(), String::new());
        if let Some(hit) = self.access().envs.get(&key) {
            return Ok(hit);
        }
        let found = self.store().first_environment(project).await?;
        self.access().envs.put(key, found.clone());
        Ok(found)
    }

    /// The environment a person's session names: by id anywhere in their org, else by name in
    /// the org's first project.
    pub async fn org_environment(
        &self,
        org: &OrgId,
        name: &str,
    ) -> Result<Option<EnvironmentRecord>, EngineError> {
        if let Some(env) = self.store().get_org_environment(org, name).await? {
            return Ok(Some(env));
        }
        let Some(project) = self.store().list_projects(org).await?.into_iter().next() else {
            return Ok(None);
        };
        self.find_environment(&ProjectId::from_stored(project.id), name)
            .await
    }

    /// The bootstrap project's default environment (dev mode authenticates into it).
    pub async fn default_environment(&self) -> Result<Option<EnvironmentRecord>, EngineError> {
        Ok(self.dev_identity().await?.1)
    }

    /// The principal a credential stands for, with its roles' permissions resolved.
    pub async fn principal(&self, credential: &Credential) -> Result<Principal, EngineError> {
        let env_scoped = matches!(credential, Credential::Key(k) if k.env_id.is_some());
        let (kind, id, org, org_name, root, roles) = match credential {
            Credential::Key(k) => (
                PrincipalKind::Key,
                k.id.to_string(),
                k.org_id.clone(),
                k.org_name.clone(),
                k.root_org,
                k.roles.clone(),
            ),
            Credential::Session(s) => (
                PrincipalKind::User,
                s.user_id.clone(),
                s.org_id.clone(),
                s.org_name.clone(),
                s.root_org,
                s.roles.clone(),
            ),
        };
        let granted = self.role_permissions(&org, &roles).await?;
        Ok(Principal {
            kind,
            id,
            org_id: org.to_string(),
            org_name,
            root_org: root,
            roles,
            granted,
            env_scoped,
        })
    }

    /// `--dev`: an admin of the root organisation.
    pub async fn dev_principal(&self) -> Result<Principal, EngineError> {
        Ok(self.dev_identity().await?.0)
    }

    async fn dev_identity(&self) -> Result<(Principal, Option<EnvironmentRecord>), EngineError> {
        if let Some(hit) = self.access().dev.get(&()) {
            return Ok(hit);
        }
        let root = self.store().root_org().await?;
        let principal = Principal {
            kind: PrincipalKind::Dev,
            id: "dev".into(),
            org_id: root.as_ref().map(|o| o.id.clone()).unwrap_or_default(),
            org_name: root.map(|o| o.name).unwrap_or_default(),
            root_org: true,
            roles: vec![BuiltinRole::Admin.as_str().into()],
            granted: BuiltinRole::Admin.permissions(),
            env_scoped: false,
        };
        let identity = (principal, self.store().default_environment().await?);
        // Remembered only once the database is bootstrapped (a first boot may be under way).
        if identity.1.is_some() {
            self.access().dev.put((), identity.clone());
        }
        Ok(identity)
    }

    /// The union of the named roles' permissions (built-in names, custom ids or names). A role
    /// that no longer exists grants nothing.
    pub async fn role_permissions(
        &self,
        org: &OrgId,
        roles: &[String],
    ) -> Result<PermissionSet, EngineError> {
        let mut set = PermissionSet::EMPTY;
        let mut custom = false;
        for role in roles {
            match BuiltinRole::parse(role) {
                Some(builtin) => set = set.union(builtin.permissions()),
                None => custom = true,
            }
        }
        if custom {
            let table = self.custom_roles(org).await?;
            for role in roles {
                if let Some(perms) = table.get(role) {
                    set = set.union(*perms);
                }
            }
        }
        Ok(set)
    }

    async fn custom_roles(
        &self,
        org: &OrgId,
    ) -> Result<Arc<HashMap<String, PermissionSet>>, EngineError> {
        let cache = &self.access().roles;
        if let Some(hit) = cache.get(&org.to_string()) {
            return Ok(hit);
        }
        let mut table = HashMap::new();
        for role in self.store().list_roles(org).await? {
            let perms = role
                .permissions
                .iter()
                .filter_map(|p| Permission::parse(p))
                .fold(PermissionSet::EMPTY, PermissionSet::with);
            table.insert(role.id.clone(), perms);
            table.insert(role.name.clone(), perms);
        }
        let table = Arc::new(table);
        cache.put(org.to_string(), table.clone());
        Ok(table)
    }

    /// The platform's and the environment's policy sets in force, in the order they apply.
    pub async fn policies_in_force(&self, env: &EnvId) -> Result<[PolicySet; 2], EngineError> {
        Ok([
            self.policy_in_force(PLATFORM_SCOPE).await?,
            self.policy_in_force(env.as_str()).await?,
        ])
    }

    /// A scope's newest policy set, checked and ready to evaluate (empty if none was saved).
    pub(crate) async fn policy_in_force(&self, scope: &str) -> Result<PolicySet, EngineError> {
        let cache = &self.access().policies;
        if let Some(hit) = cache.get(&scope.to_owned()) {
            return Ok(hit);
        }
        let set = match self.store().latest_policy_set(scope).await? {
            None => PolicySet::empty(),
            Some(record) => {
                let mode = PolicyMode::parse(&record.mode).unwrap_or(PolicyMode::Enforce);
                // A stored set was checked when saved; one this version cannot check fails
                // closed: every request in its scope is denied until it is replaced.
                PolicySet::check(
                    record.version,
                    &record.modules,
                    mode.as_str(),
                    crate::domain::policy::DECISION,
                )
                .unwrap_or_else(|e| {
                    tracing::error!(scope, error = %e, "stored policy set does not check; denying");
                    PolicySet::deny_all(record.version)
                })
            }
        };
        cache.put(scope.to_owned(), set.clone());
        Ok(set)
    }

    pub(crate) fn forget_policy(&self, scope: &str) {
        self.access().policies.forget(&scope.to_owned());
    }

    pub(crate) fn forget_credentials(&self) {
        self.access().keys.clear();
        self.access().sessions.clear();
    }

    pub(crate) fn forget_roles(&self, org: &OrgId) {
        self.access().roles.forget(&org.to_string());
    }

    pub(crate) fn forget_environments(&self) {
        self.access().envs.clear();
        self.access().dev.clear();
    }

    /// Whether successful reads are audited in this org (off unless the settings say so).
    pub async fn audits_reads(&self, org: &str) -> Result<bool, EngineError> {
        let cache = &self.access().audit;
        if let Some(hit) = cache.get(&org.to_owned()) {
            return Ok(hit);
        }
        let on = self
            .store()
            .audit_settings(org)
            .await?
            .is_some_and(|s: AuditSettingsRecord| s.log_reads);
        cache.put(org.to_owned(), on);
        Ok(on)
    }

    pub(crate) fn forget_audit_settings(&self, org: &str) {
        self.access().audit.forget(&org.to_owned());
    }

    /// Appends an entry to the audit log. A failure is logged, not raised: the request it
    /// records has already been answered or decided.
    pub async fn record_audit(&self, mut entry: AuditEntry) {
        if entry.id.is_empty() {
            entry.id = uuid::Uuid::now_v7().to_string();
        }
        if let Err(e) = self.store().append_audit(&entry).await {
            tracing::error!(error = %e, action = %entry.action, "writing an audit entry");
        }
    }
}
