//! Tenancy administration: organisations, projects, environments, API keys, users and their
//! sessions, custom roles. Every operation is scoped to the caller's organisation; a caller can
//! hand out only permissions it holds itself.

use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;

use super::{Engine, EngineError};
use crate::domain::authz::{
    BuiltinRole, Permission, PermissionSet, check_custom_role, check_role_name, role_grant,
};
use crate::domain::storable::check_text;
use crate::domain::time::Ts;
use crate::ids::{ApiKeyId, EnvId, OrgId, ProjectId};
use crate::store::tenancy::{
    ApiKeyRecord, BootstrapPlan, EnvironmentContents, EnvironmentRecord, NewKeyRow, NewUserRow,
    OrgRecord, ProjectRecord, Provisioned, RoleRecord, TenantRecord, UserRecord,
};
use crate::tenancy::{NewApiKey, hash_api_key};

/// How long a person's session lasts after sign-in.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Session tokens are told apart from keys by their prefix.
pub const SESSION_PREFIX: &str = "ifsess_";
const MIN_PASSWORD: usize = 8;
const MAX_PASSWORD: usize = 256;

/// A key to create.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub name: String,
    pub project: ProjectId,
    /// Scoped to one environment, or (None) to the whole project.
    pub env: Option<EnvId>,
    pub roles: Vec<String>,
    pub expires_in: Option<Duration>,
    pub created_by: String,
}

/// A created or rotated key: the secret is shown this once.
#[derive(Debug, Clone)]
pub struct IssuedKey {
    pub record: ApiKeyRecord,
    pub secret: String,
}

/// A user to create.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: String,
    pub password: String,
    pub name: String,
    pub roles: Vec<String>,
}

/// A role as listed: built-in ones have their name as id.
#[derive(Debug, Clone)]
pub struct RoleView {
    pub id: String,
    pub name: String,
    pub description: String,
    pub permissions: PermissionSet,
    pub builtin: bool,
    pub created_at: Option<Ts>,
    pub updated_at: Option<Ts>,
    pub holders: i64,
}

/// What deleting a project or environment removes (or would, when refused).
#[derive(Debug, Clone, Default)]
pub struct DeletionReport {
    pub environments: Vec<String>,
    pub contents: EnvironmentContents,
    pub deleted: bool,
}

/// A signed-in person.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub token: String,
    pub user: UserRecord,
    pub expires_at: Ts,
}

fn check_name(field: &str, name: &str) -> Result<String, EngineError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 128 {
        return Err(EngineError::InvalidArgument(format!(
            "{field} must be 1 to 128 characters"
        )));
    }
    check_text(field, name).map_err(|e| EngineError::InvalidArgument(e.to_string()))?;
    Ok(name.to_owned())
}

/// Environment names appear in headers: visible ASCII without spaces.
fn check_env_name(name: &str) -> Result<String, EngineError> {
    let name = check_name("environment name", name)?;
    // An environment is addressed by name or id: a name that could be an id would shadow one.
    if !name.chars().all(|c| c.is_ascii_graphic())
        || name.contains("~deleted~")
        || uuid::Uuid::parse_str(&name).is_ok()
    {
        return Err(EngineError::InvalidArgument(
            "environment name must be visible ASCII without spaces, and not an id".into(),
        ));
    }
    Ok(name)
}

fn check_email(email: &str) -> Result<String, EngineError> {
    let email = email.trim().to_ascii_lowercase();
    let valid = email.len() <= 254
        && email
            .split_once('@')
            .is_some_and(|(user, host)| !user.is_empty() && host.contains('.'))
        && !email.chars().any(char::is_whitespace);
    if !valid {
        return Err(EngineError::InvalidArgument(format!(
            "'{email}' is not an email address"
        )));
    }
    Ok(email)
}

fn check_password(password: &str) -> Result<(), EngineError> {
    let n = password.chars().count();
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&n) {
        return Err(EngineError::InvalidArgument(format!(
            "password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters"
        )));
    }
    Ok(())
}

/// Argon2id with the crate's default (OWASP) parameters; run off the async threads.
async fn hash_password(password: String) -> Result<String, EngineError> {
    tokio::task::spawn_blocking(move || {
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        let salt = SaltString::encode_b64(&salt)
            .map_err(|e| EngineError::InvalidArgument(format!("password salt: {e}")))?;
        argon2::Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| EngineError::InvalidArgument(format!("password: {e}")))
    })
    .await
    .map_err(|e| EngineError::Store(crate::store::StoreError::Internal(e.to_string())))?
}

async fn verify_password(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash).is_ok_and(|parsed| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false)
}

/// A hash that matches no password: a sign-in with an unknown email costs as much as one with
/// a wrong password, so timing does not tell which emails exist.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0Qyb3ofbP8m3cKo8pTRD8FfDG4lJbNdj6Pjrr5bAKeQ";

fn not_found(kind: &'static str, id: &str) -> EngineError {
    EngineError::not_found(kind, id)
}

impl Engine {
    // ---- organisations ----------------------------------------------------------------------

    /// The organisations a caller sees: all of them for platform admins, else its own.
    pub async fn list_orgs(
        &self,
        own: &OrgId,
        platform: bool,
    ) -> Result<Vec<OrgRecord>, EngineError> {
        if platform {
            return Ok(self.store().list_orgs().await?);
        }
        Ok(self.store().get_org(own).await?.into_iter().collect())
    }

    pub async fn get_org(&self, org: &OrgId) -> Result<OrgRecord, EngineError> {
        self.store()
            .get_org(org)
            .await?
            .ok_or_else(|| not_found("organisation", org.as_str()))
    }

    pub async fn rename_org(&self, org: &OrgId, name: &str) -> Result<OrgRecord, EngineError> {
        let name = check_name("organisation name", name)?;
        if !self.store().rename_org(org, &name).await? {
            return Err(not_found("organisation", org.as_str()));
        }
        self.forget_credentials();
        self.get_org(org).await
    }

    /// Soft-deletes an organisation other than the root; its keys stop working.
    pub async fn delete_org(&self, org: &OrgId) -> Result<(), EngineError> {
        let found = self.get_org(org).await?;
        if found.is_root {
            return Err(EngineError::Conflict(
                "the root organisation cannot be deleted".into(),
            ));
        }
        self.store().delete_org(org).await?;
        self.forget_credentials();
        Ok(())
    }

    pub async fn tenants(&self) -> Result<Vec<TenantRecord>, EngineError> {
        Ok(self.store().tenants().await?)
    }

    /// A new organisation with a `default` project, an environment and an admin key.
    pub async fn provision_tenant(
        &self,
        org_name: &str,
        env_name: &str,
    ) -> Result<(Provisioned, String), EngineError> {
        let key = NewApiKey::generate();
        let plan = BootstrapPlan {
            org_name: check_name("org_name", org_name)?,
            project_name: "default".into(),
            env_name: check_env_name(if env_name.trim().is_empty() {
                "default"
            } else {
                env_name
            })?,
            key_name: "provisioned admin key".into(),
            key_prefix: key.prefix.clone(),
            key_hash: key.hash.clone(),
        };
        let made = self
            .store()
            .provision_org(&plan)
            .await
            .map_err(|e| match e {
                crate::store::StoreError::Conflict(_) => EngineError::AlreadyExists(format!(
                    "an organisation named '{}' already exists",
                    plan.org_name
                )),
                other => other.into(),
            })?;
        Ok((made, key.secret))
    }

    // ---- projects ---------------------------------------------------------------------------

    pub async fn create_project(
        &self,
        org: &OrgId,
        name: &str,
    ) -> Result<(ProjectRecord, EnvironmentRecord), EngineError> {
        let name = check_name("project name", name)?;
        self.store()
            .create_project(org, &name)
            .await
            .map_err(|e| conflict(e, format!("a project named '{name}' already exists")))
    }

    pub async fn list_projects(&self, org: &OrgId) -> Result<Vec<ProjectRecord>, EngineError> {
        Ok(self.store().list_projects(org).await?)
    }

    pub async fn get_project(
        &self,
        org: &OrgId,
        project: &ProjectId,
    ) -> Result<ProjectRecord, EngineError> {
        self.store()
            .get_project(org, project)
            .await?
            .ok_or_else(|| not_found("project", project.as_str()))
    }

    pub async fn rename_project(
        &self,
        org: &OrgId,
        project: &ProjectId,
        name: &str,
    ) -> Result<ProjectRecord, EngineError> {
        let name = check_name("project name", name)?;
        let renamed = self
            .store()
            .rename_project(org, project, &name)
            .await
            .map_err(|e| conflict(e, format!("a project named '{name}' already exists")))?;
        if !renamed {
            return Err(not_found("project", project.as_str()));
        }
        self.get_project(org, project).await
    }

    /// Deletes a project and its environments — refused while any of them holds unfinished
    /// runs, unless `force`. The report says what goes either way.
    pub async fn delete_project(
        &self,
        org: &OrgId,
        project: &ProjectId,
        force: bool,
    ) -> Result<DeletionReport, EngineError> {
        self.get_project(org, project).await?;
        let envs = self.store().list_environments(org, Some(project)).await?;
        let ids: Vec<EnvId> = envs.iter().map(|e| e.id.clone()).collect();
        let report = self.deletion(&envs).await?;
        if report.contents.unfinished_runs > 0 && !force {
            return Err(unfinished(&report, "project"));
        }
        self.store()
            .delete_environments(&ids, Some((org, project)))
            .await?;
        self.forget_credentials();
        self.forget_environments();
        Ok(DeletionReport {
            deleted: true,
            ..report
        })
    }

    async fn deletion(&self, envs: &[EnvironmentRecord]) -> Result<DeletionReport, EngineError> {
        let mut report = DeletionReport::default();
        for env in envs {
            let c = self.store().environment_contents(&env.id).await?;
            report.environments.push(env.name.clone());
            let t = &mut report.contents;
            t.functions += c.functions;
            t.runs += c.runs;
            t.unfinished_runs += c.unfinished_runs;
            t.events += c.events;
            t.jobs += c.jobs;
            t.secrets += c.secrets;
            t.keys += c.keys;
        }
        Ok(report)
    }

    // ---- environments -----------------------------------------------------------------------

    pub async fn create_environment(
        &self,
        org: &OrgId,
        project: &ProjectId,
        name: &str,
    ) -> Result<EnvironmentRecord, EngineError> {
        self.get_project(org, project).await?;
        let name = check_env_name(name)?;
        let env = self
            .store()
            .create_environment(project, &name)
            .await
            .map_err(|e| conflict(e, format!("an environment named '{name}' already exists")))?;
        self.forget_environments();
        Ok(env)
    }

    pub async fn list_environments(
        &self,
        org: &OrgId,
        project: Option<&ProjectId>,
    ) -> Result<Vec<EnvironmentRecord>, EngineError> {
        Ok(self.store().list_environments(org, project).await?)
    }

    pub async fn get_environment(
        &self,
        org: &OrgId,
        env: &str,
    ) -> Result<EnvironmentRecord, EngineError> {
        self.store()
            .get_org_environment(org, env)
            .await?
            .ok_or_else(|| not_found("environment", env))
    }

    pub async fn rename_environment(
        &self,
        org: &OrgId,
        env: &str,
        name: &str,
    ) -> Result<EnvironmentRecord, EngineError> {
        let found = self.get_environment(org, env).await?;
        let name = check_env_name(name)?;
        self.store()
            .rename_environment(&found.id, &name)
            .await
            .map_err(|e| conflict(e, format!("an environment named '{name}' already exists")))?;
        self.forget_environments();
        self.get_environment(org, env).await
    }

    /// Deletes an environment: refused while it holds unfinished runs, unless `force`.
    pub async fn delete_environment(
        &self,
        org: &OrgId,
        env: &str,
        force: bool,
    ) -> Result<DeletionReport, EngineError> {
        let found = self.get_environment(org, env).await?;
        let report = self.deletion(std::slice::from_ref(&found)).await?;
        if report.contents.unfinished_runs > 0 && !force {
            return Err(unfinished(&report, "environment"));
        }
        self.store()
            .delete_environments(std::slice::from_ref(&found.id), None)
            .await?;
        self.forget_credentials();
        self.forget_environments();
        Ok(DeletionReport {
            deleted: true,
            ..report
        })
    }

    // ---- API keys ---------------------------------------------------------------------------

    /// Checks that every role exists in the org and that together they grant no more than
    /// `ceiling` (the caller's own permissions): nobody hands out what they do not hold.
    async fn check_grant(
        &self,
        org: &OrgId,
        roles: &[String],
        ceiling: PermissionSet,
    ) -> Result<(), EngineError> {
        if roles.is_empty() {
            return Err(EngineError::InvalidArgument(
                "at least one role is required (admin, developer, viewer or a custom role)".into(),
            ));
        }
        let custom = self.store().list_roles(org).await?;
        for role in roles {
            let known = BuiltinRole::parse(role).is_some()
                || custom.iter().any(|c| &c.id == role || &c.name == role);
            if !known {
                return Err(EngineError::InvalidArgument(format!(
                    "unknown role '{role}': use admin, developer, viewer or a custom role's id"
                )));
            }
        }
        within_ceiling(self.holding(org, roles).await?, ceiling)
    }

    /// What holding `roles` in `org` gives (an admin of the root organisation administers the
    /// platform too).
    async fn holding(&self, org: &OrgId, roles: &[String]) -> Result<PermissionSet, EngineError> {
        let root = self.get_org(org).await?.is_root;
        Ok(role_grant(
            self.role_permissions(org, roles).await?,
            roles,
            root,
        ))
    }

    /// A key or user with more permissions than the caller is out of its reach: rotating,
    /// re-roling, resetting or deleting it would hand the caller what it does not hold.
    async fn check_target(
        &self,
        org: &OrgId,
        target_roles: &[String],
        ceiling: PermissionSet,
    ) -> Result<(), EngineError> {
        within_ceiling(self.holding(org, target_roles).await?, ceiling).map_err(|_| {
            EngineError::PermissionDenied(
                "that key or user holds permissions you do not: it is out of your reach".into(),
            )
        })
    }

    pub async fn create_key(
        &self,
        org: &OrgId,
        ceiling: PermissionSet,
        new: NewKey,
    ) -> Result<IssuedKey, EngineError> {
        let name = check_name("key name", &new.name)?;
        self.get_project(org, &new.project).await?;
        if let Some(env) = &new.env {
            let found = self.get_environment(org, env.as_str()).await?;
            if found.project_id != new.project {
                return Err(EngineError::InvalidArgument(
                    "env_id names an environment of another project".into(),
                ));
            }
        }
        self.check_grant(org, &new.roles, ceiling).await?;
        let key = NewApiKey::generate();
        let expires_at = new.expires_in.map(|d| Ts::now().plus(d));
        let record = self
            .store()
            .create_api_key(&NewKeyRow {
                id: ApiKeyId::generate(),
                org_id: org.clone(),
                project_id: new.project,
                env_id: new.env,
                name,
                prefix: key.prefix,
                hash: key.hash,
                roles: new.roles,
                expires_at,
                created_by: new.created_by,
            })
            .await?;
        Ok(IssuedKey {
            record,
            secret: key.secret,
        })
    }

    pub async fn list_keys(&self, org: &OrgId) -> Result<Vec<ApiKeyRecord>, EngineError> {
        Ok(self.store().list_api_keys(org).await?)
    }

    pub async fn get_key(&self, org: &OrgId, key: &ApiKeyId) -> Result<ApiKeyRecord, EngineError> {
        self.store()
            .get_api_key(org, key)
            .await?
            .ok_or_else(|| not_found("API key", key.as_str()))
    }

    /// Revokes a key (it stops working at once on this node, within seconds on others);
    /// `purge` also removes its row.
    pub async fn delete_key(
        &self,
        org: &OrgId,
        ceiling: PermissionSet,
        key: &ApiKeyId,
        purge: bool,
    ) -> Result<(), EngineError> {
        let target = self.get_key(org, key).await?;
        self.check_target(org, &target.roles, ceiling).await?;
        if !self.store().revoke_api_key(org, key, purge).await? {
            return Err(not_found("API key", key.as_str()));
        }
        self.forget_credentials();
        Ok(())
    }

    /// A new secret for the key; the old one stops working.
    pub async fn rotate_key(
        &self,
        org: &OrgId,
        ceiling: PermissionSet,
        key: &ApiKeyId,
    ) -> Result<IssuedKey, EngineError> {
        let target = self.get_key(org, key).await?;
        self.check_target(org, &target.roles, ceiling).await?;
        let fresh = NewApiKey::generate();
        if !self
            .store()
            .rotate_api_key(org, key, &fresh.prefix, &fresh.hash)
            .await?
        {
            return Err(not_found("API key", key.as_str()));
        }
        self.forget_credentials();
        Ok(IssuedKey {
            record: self.get_key(org, key).await?,
            secret: fresh.secret,
        })
    }

    pub async fn set_key_roles(
        &self,
        org: &OrgId,
        ceiling: PermissionSet,
        key: &ApiKeyId,
        roles: Vec<String>,
    ) -> Result<ApiKeyRecord, EngineError> {
        let target = self.get_key(org, key).await?;
        self.check_target(org, &target.roles, ceiling).await?;
        self.check_grant(org, &roles, ceiling).await?;
        self.store().set_api_key_roles(org, key, &roles).await?;
        self.forget_credentials();
        self.get_key(org, key).await
    }

    // ---- users and sessions -----------------------------------------------------------------

    pub async fn create_user(
        &self,
        org: &OrgId,
        ceiling: PermissionSet,
        new: NewUser,
    ) -> Result<UserRecord, EngineError> {
        let email = check_email(&new.email)?;
        check_password(&new.password)?;
        let name = new.name.trim().to_owned();
        check_text("name", &name).map_err(|e| EngineError::InvalidArgument(e.to_string()))?;
        let roles = if new.roles.is_empty() {
            vec![BuiltinRole::Viewer.as_str().to_owned()]
        } else {
            new.roles
        };
        self.check_grant(org, &roles, ceiling).await?;
        let row = NewUserRow {
            id: uuid::Uuid::now_v7().to_string(),
            org_id: org.clone(),
            email: email.clone(),
            name,
            password_hash: hash_password(new.password).await?,
            roles,
        };
        self.store()
            .create_user(&row)
            .await
            .map_err(|e| conflict(e, format!("a user with email '{email}' already exists")))?;
        self.get_user(org, &row.id).await
    }

    pub async fn list_users(&self, org: &OrgId) -> Result<Vec<UserRecord>, EngineError> {
        Ok(self.store().list_users(org).await?)
    }

    pub async fn get_user(&self, org: &OrgId, user: &str) -> Result<UserRecord, EngineError> {
        self.store()
            .get_user(org, user)
            .await?
            .ok_or_else(|| not_found("user", user))
    }

    pub async fn update_user(
        &self,
        org: &OrgId,
        ceiling: PermissionSet,
        user: &str,
        name: Option<String>,
        email: Option<String>,
        roles: Option<Vec<String>>,
    ) -> Result<UserRecord, EngineError> {
        let mut found = self.get_user(org, user).await?;
        self.check_target(org, &found.roles, ceiling).await?;
        if let Some(name) = name {
            check_text("name", &name).map_err(|e| EngineError::InvalidArgument(e.to_string()))?;
            found.name = name.trim().to_owned();
        }
        if let Some(email) = email {
            found.email = check_email(&email)?;
        }
        if let Some(roles) = roles {
            self.check_grant(org, &roles, ceiling).await?;
            found.roles = roles;
        }
        let email = found.email.clone();
        self.store()
            .update_user(&found)
            .await
            .map_err(|e| conflict(e, format!("a user with email '{email}' already exists")))?;
        self.forget_credentials();
        self.get_user(org, user).await
    }

    /// Changes a password. People changing their own give the current one; an admin resetting
    /// someone else's does not. Every session of the user ends.
    pub async fn change_password(
        &self,
        org: &OrgId,
        ceiling: PermissionSet,
        user: &str,
        current: Option<String>,
        new: String,
    ) -> Result<(), EngineError> {
        let found = self.get_user(org, user).await?;
        if current.is_none() {
            self.check_target(org, &found.roles, ceiling).await?;
        }
        if let Some(current) = current
            && !verify_password(current, found.password_hash.clone()).await
        {
            return Err(EngineError::PermissionDenied(
                "current_password is not this user's password".into(),
            ));
        }
        check_password(&new)?;
        let hash = hash_password(new).await?;
        self.store().set_user_password(org, user, &hash).await?;
        self.forget_credentials();
        Ok(())
    }

    pub async fn delete_user(
        &self,
        org: &OrgId,
        ceiling: PermissionSet,
        user: &str,
    ) -> Result<(), EngineError> {
        let target = self.get_user(org, user).await?;
        self.check_target(org, &target.roles, ceiling).await?;
        if !self.store().delete_user(org, user).await? {
            return Err(not_found("user", user));
        }
        self.forget_credentials();
        Ok(())
    }

    /// Signs a person in: a session token (shown once, stored hashed) valid for
    /// [`SESSION_TTL`]. A wrong email or password is the same refusal.
    pub async fn login(&self, email: &str, password: &str) -> Result<SignedIn, EngineError> {
        let email = email.trim().to_ascii_lowercase();
        let found = self.store().find_user_by_email(&email).await?;
        let hash = found
            .as_ref()
            .map_or_else(|| DUMMY_HASH.to_owned(), |u| u.password_hash.clone());
        let ok = verify_password(password.to_owned(), hash).await;
        let user = match found {
            Some(user) if ok => user,
            _ => {
                return Err(EngineError::Unauthenticated(
                    "wrong email or password".into(),
                ));
            }
        };
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let token = format!("{SESSION_PREFIX}{}", hex::encode(bytes));
        let expires_at = Ts::now().plus(SESSION_TTL);
        self.store()
            .create_session(&user.id, &hash_api_key(&token), expires_at)
            .await?;
        Ok(SignedIn {
            token,
            user: self.get_user(&user.org_id, &user.id).await?,
            expires_at,
        })
    }

    // ---- roles ------------------------------------------------------------------------------

    pub async fn list_roles(&self, org: &OrgId) -> Result<Vec<RoleView>, EngineError> {
        let mut out = Vec::new();
        for builtin in BuiltinRole::ALL {
            out.push(RoleView {
                id: builtin.as_str().into(),
                name: builtin.as_str().into(),
                description: builtin.description().into(),
                permissions: builtin.permissions(),
                builtin: true,
                created_at: None,
                updated_at: None,
                holders: self
                    .store()
                    .role_holders(org, builtin.as_str(), builtin.as_str())
                    .await?,
            });
        }
        for role in self.store().list_roles(org).await? {
            out.push(self.custom_view(org, role).await?);
        }
        Ok(out)
    }

    async fn custom_view(&self, org: &OrgId, role: RoleRecord) -> Result<RoleView, EngineError> {
        let holders = self.store().role_holders(org, &role.id, &role.name).await?;
        Ok(RoleView {
            permissions: role
                .permissions
                .iter()
                .filter_map(|p| Permission::parse(p))
                .fold(PermissionSet::EMPTY, PermissionSet::with),
            id: role.id,
            name: role.name,
            description: role.description,
            builtin: false,
            created_at: Some(role.created_at),
            updated_at: Some(role.updated_at),
            holders,
        })
    }

    pub async fn get_role(&self, org: &OrgId, id: &str) -> Result<RoleView, EngineError> {
        self.list_roles(org)
            .await?
            .into_iter()
            .find(|r| r.id == id || r.name == id)
            .ok_or_else(|| not_found("role", id))
    }

    pub async fn create_role(
        &self,
        org: &OrgId,
        ceiling: PermissionSet,
        name: &str,
        description: &str,
        permissions: &[String],
    ) -> Result<RoleView, EngineError> {
        let set = check_custom_role(name, permissions)
            .map_err(|e| EngineError::InvalidArgument(e.to_string()))?;
        within_ceiling(set, ceiling)?;
        check_text("description", description)
            .map_err(|e| EngineError::InvalidArgument(e.to_string()))?;
        let now = Ts::now();
        let role = RoleRecord {
            id: uuid::Uuid::now_v7().to_string(),
            org_id: org.clone(),
            name: name.to_owned(),
            description: description.to_owned(),
            permissions: set.names().into_iter().map(str::to_owned).collect(),
            created_at: now,
            updated_at: now,
        };
        self.store()
            .create_role(&role)
            .await
            .map_err(|e| conflict(e, format!("a role named '{name}' already exists")))?;
        self.forget_roles(org);
        self.custom_view(org, role).await
    }

    pub async fn update_role(
        &self,
        org: &OrgId,
        ceiling: PermissionSet,
        id: &str,
        name: Option<&str>,
        description: Option<&str>,
        permissions: Option<&[String]>,
    ) -> Result<RoleView, EngineError> {
        let mut role = self.custom_role(org, id).await?;
        if let Some(name) = name {
            check_role_name(name).map_err(|e| EngineError::InvalidArgument(e.to_string()))?;
            if BuiltinRole::parse(name).is_some() {
                return Err(EngineError::InvalidArgument(format!(
                    "'{name}' is a built-in role's name"
                )));
            }
            role.name = name.to_owned();
        }
        if let Some(description) = description {
            check_text("description", description)
                .map_err(|e| EngineError::InvalidArgument(e.to_string()))?;
            role.description = description.to_owned();
        }
        if let Some(permissions) = permissions {
            let set = check_custom_role(&role.name, permissions)
                .map_err(|e| EngineError::InvalidArgument(e.to_string()))?;
            within_ceiling(set, ceiling)?;
            role.permissions = set.names().into_iter().map(str::to_owned).collect();
        }
        role.updated_at = Ts::now();
        let name = role.name.clone();
        self.store()
            .update_role(&role)
            .await
            .map_err(|e| conflict(e, format!("a role named '{name}' already exists")))?;
        self.forget_roles(org);
        self.custom_view(org, role).await
    }

    /// Deletes a custom role no key or user holds any more.
    pub async fn delete_role(&self, org: &OrgId, id: &str) -> Result<(), EngineError> {
        let role = self.custom_role(org, id).await?;
        let holders = self.store().role_holders(org, &role.id, &role.name).await?;
        if holders > 0 {
            return Err(EngineError::Conflict(format!(
                "role '{}' is held by {holders} key(s) or user(s): take it from them first",
                role.name
            )));
        }
        self.store().delete_role(org, &role.id).await?;
        self.forget_roles(org);
        Ok(())
    }

    async fn custom_role(&self, org: &OrgId, id: &str) -> Result<RoleRecord, EngineError> {
        if BuiltinRole::parse(id).is_some() {
            return Err(EngineError::InvalidArgument(format!(
                "'{id}' is a built-in role: it cannot be changed or deleted"
            )));
        }
        self.store()
            .list_roles(org)
            .await?
            .into_iter()
            .find(|r| r.id == id || r.name == id)
            .ok_or_else(|| not_found("role", id))
    }
}

/// Nobody hands out a permission they do not hold themselves.
fn within_ceiling(granted: PermissionSet, ceiling: PermissionSet) -> Result<(), EngineError> {
    match granted.iter().find(|p| !ceiling.contains(*p)) {
        Some(p) => Err(EngineError::PermissionDenied(format!(
            "you cannot grant '{p}': you do not hold it yourself"
        ))),
        None => Ok(()),
    }
}

fn conflict(err: crate::store::StoreError, message: String) -> EngineError {
    match err {
        crate::store::StoreError::Conflict(_) => EngineError::AlreadyExists(message),
        other => other.into(),
    }
}

fn unfinished(report: &DeletionReport, what: &str) -> EngineError {
    let c = &report.contents;
    EngineError::Conflict(format!(
        "this {what} holds {} unfinished run(s); deleting it would also remove {} function(s), \
         {} run(s), {} event(s), {} secret(s) and revoke {} key(s) — pass force=true to delete anyway",
        c.unfinished_runs, c.functions, c.runs, c.events, c.secrets, c.keys
    ))
}
