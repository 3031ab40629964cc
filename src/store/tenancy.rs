//! Tenancy in the store: first boot, organisations, projects, environments (soft-deleted: their
//! history is append-only), API keys, users and their sessions, custom roles.

use async_trait::async_trait;

use super::StoreError;
use super::db::{Db, SqlStore};
use super::sql::{Conn, args, sql};
use crate::domain::time::Ts;
use crate::ids::{ApiKeyId, EnvId, OrgId, ProjectId};

#[async_trait]
pub trait TenancyStore: Send + Sync {
    /// Creates the tenancy root and the admin key if (and only if) no organisation exists.
    async fn bootstrap(&self, plan: &BootstrapPlan) -> Result<BootstrapOutcome, StoreError>;

    /// A new organisation with a `default` project and environment and, when given, its first
    /// key — all or nothing.
    async fn provision_org(&self, plan: &BootstrapPlan) -> Result<Provisioned, StoreError>;

    async fn find_api_key(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>, StoreError>;

    /// Looks an environment up by name or id inside a project.
    async fn find_environment(
        &self,
        project_id: &ProjectId,
        name_or_id: &str,
    ) -> Result<Option<EnvironmentRecord>, StoreError>;

    /// The project's `default` environment, else its oldest.
    async fn first_environment(
        &self,
        project_id: &ProjectId,
    ) -> Result<Option<EnvironmentRecord>, StoreError>;

    /// The default project's `default` environment of the first organisation (used by `--dev`).
    async fn default_environment(&self) -> Result<Option<EnvironmentRecord>, StoreError>;

    async fn root_org(&self) -> Result<Option<OrgRecord>, StoreError>;
    async fn list_orgs(&self) -> Result<Vec<OrgRecord>, StoreError>;
    async fn get_org(&self, org: &OrgId) -> Result<Option<OrgRecord>, StoreError>;
    async fn rename_org(&self, org: &OrgId, name: &str) -> Result<bool, StoreError>;
    /// Soft-deletes an organisation (never the root) and revokes its keys.
    async fn delete_org(&self, org: &OrgId) -> Result<bool, StoreError>;
    async fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError>;

    async fn create_project(
        &self,
        org: &OrgId,
        name: &str,
    ) -> Result<(ProjectRecord, EnvironmentRecord), StoreError>;
    async fn list_projects(&self, org: &OrgId) -> Result<Vec<ProjectRecord>, StoreError>;
    async fn get_project(
        &self,
        org: &OrgId,
        project: &ProjectId,
    ) -> Result<Option<ProjectRecord>, StoreError>;
    async fn rename_project(
        &self,
        org: &OrgId,
        project: &ProjectId,
        name: &str,
    ) -> Result<bool, StoreError>;

    async fn create_environment(
        &self,
        project: &ProjectId,
        name: &str,
    ) -> Result<EnvironmentRecord, StoreError>;
    async fn list_environments(
        &self,
        org: &OrgId,
        project: Option<&ProjectId>,
    ) -> Result<Vec<EnvironmentRecord>, StoreError>;
    async fn get_org_environment(
        &self,
        org: &OrgId,
        env: &str,
    ) -> Result<Option<EnvironmentRecord>, StoreError>;
    async fn rename_environment(&self, env: &EnvId, name: &str) -> Result<bool, StoreError>;
    /// What an environment holds, for a delete to say what it removes.
    async fn environment_contents(&self, env: &EnvId) -> Result<EnvironmentContents, StoreError>;
    /// Soft-deletes environments (and, with `project`, the project): nothing resolves them any
    /// more, their queued jobs go, keys scoped to them are revoked. Rows stay (append-only
    /// history).
    async fn delete_environments(
        &self,
        envs: &[EnvId],
        project: Option<(&OrgId, &ProjectId)>,
    ) -> Result<(), StoreError>;

    async fn create_api_key(&self, key: &NewKeyRow) -> Result<ApiKeyRecord, StoreError>;
    async fn list_api_keys(&self, org: &OrgId) -> Result<Vec<ApiKeyRecord>, StoreError>;
    async fn get_api_key(
        &self,
        org: &OrgId,
        key: &ApiKeyId,
    ) -> Result<Option<ApiKeyRecord>, StoreError>;
    async fn revoke_api_key(
        &self,
        org: &OrgId,
        key: &ApiKeyId,
        purge: bool,
    ) -> Result<bool, StoreError>;
    async fn rotate_api_key(
        &self,
        org: &OrgId,
        key: &ApiKeyId,
        prefix: &str,
        hash: &str,
    ) -> Result<bool, StoreError>;
    async fn set_api_key_roles(
        &self,
        org: &OrgId,
        key: &ApiKeyId,
        roles: &[String],
    ) -> Result<bool, StoreError>;
    async fn touch_api_key(&self, key: &ApiKeyId) -> Result<(), StoreError>;

    async fn create_user(&self, user: &NewUserRow) -> Result<(), StoreError>;
    async fn list_users(&self, org: &OrgId) -> Result<Vec<UserRecord>, StoreError>;
    async fn get_user(&self, org: &OrgId, user: &str) -> Result<Option<UserRecord>, StoreError>;
    async fn find_user_by_email(&self, email: &str) -> Result<Option<UserRecord>, StoreError>;
    async fn update_user(&self, user: &UserRecord) -> Result<bool, StoreError>;
    /// Sets a new password hash and ends the user's sessions.
    async fn set_user_password(
        &self,
        org: &OrgId,
        user: &str,
        hash: &str,
    ) -> Result<bool, StoreError>;
    async fn delete_user(&self, org: &OrgId, user: &str) -> Result<bool, StoreError>;
    async fn create_session(
        &self,
        user: &str,
        token_hash: &str,
        expires_at: Ts,
    ) -> Result<(), StoreError>;
    async fn find_session(&self, token_hash: &str) -> Result<Option<SessionRecord>, StoreError>;

    async fn create_role(&self, role: &RoleRecord) -> Result<(), StoreError>;
    async fn list_roles(&self, org: &OrgId) -> Result<Vec<RoleRecord>, StoreError>;
    async fn update_role(&self, role: &RoleRecord) -> Result<bool, StoreError>;
    /// How many live keys and users hold the role (by id or name).
    async fn role_holders(&self, org: &OrgId, id: &str, name: &str) -> Result<i64, StoreError>;
    async fn delete_role(&self, org: &OrgId, id: &str) -> Result<bool, StoreError>;
}

/// An API key as stored (never the secret itself).
#[derive(Debug, Clone)]
pub struct ApiKeyRecord {
    pub id: ApiKeyId,
    pub org_id: OrgId,
    pub org_name: String,
    pub root_org: bool,
    pub project_id: ProjectId,
    /// Scoped to one environment, or to the whole project.
    pub env_id: Option<EnvId>,
    pub name: String,
    pub key_prefix: String,
    pub roles: Vec<String>,
    pub created_at: Ts,
    pub expires_at: Option<Ts>,
    pub last_used_at: Option<Ts>,
}

#[derive(Debug, Clone)]
pub struct EnvironmentRecord {
    pub id: EnvId,
    pub project_id: ProjectId,
    pub name: String,
    pub created_at: Ts,
    pub updated_at: Ts,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OrgRecord {
    pub id: String,
    pub name: String,
    pub is_root: bool,
    pub created_at: Ts,
    pub updated_at: Ts,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProjectRecord {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub created_at: Ts,
    pub updated_at: Ts,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TenantRecord {
    pub id: String,
    pub name: String,
    pub created_at: Ts,
    pub env_count: i64,
    pub key_count: i64,
}

#[derive(Debug, Clone, Default, sqlx::FromRow, serde::Serialize)]
pub struct EnvironmentContents {
    pub functions: i64,
    pub runs: i64,
    pub unfinished_runs: i64,
    pub events: i64,
    pub jobs: i64,
    pub secrets: i64,
    pub keys: i64,
}

/// A key to insert.
#[derive(Debug, Clone)]
pub struct NewKeyRow {
    pub id: ApiKeyId,
    pub org_id: OrgId,
    pub project_id: ProjectId,
    pub env_id: Option<EnvId>,
    pub name: String,
    pub prefix: String,
    pub hash: String,
    pub roles: Vec<String>,
    pub expires_at: Option<Ts>,
    pub created_by: String,
}

#[derive(Debug, Clone)]
pub struct NewUserRow {
    pub id: String,
    pub org_id: OrgId,
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub roles: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct UserRecord {
    pub id: String,
    pub org_id: OrgId,
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub roles: Vec<String>,
    pub created_at: Ts,
    pub updated_at: Ts,
    pub last_login_at: Option<Ts>,
}

/// A signed-in person, as a session token resolves.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub user_id: String,
    pub org_id: OrgId,
    pub org_name: String,
    pub root_org: bool,
    pub email: String,
    pub roles: Vec<String>,
    pub expires_at: Ts,
}

#[derive(Debug, Clone)]
pub struct RoleRecord {
    pub id: String,
    pub org_id: OrgId,
    pub name: String,
    pub description: String,
    pub permissions: Vec<String>,
    pub created_at: Ts,
    pub updated_at: Ts,
}

/// What first boot (or a provisioning) creates.
#[derive(Debug, Clone)]
pub struct BootstrapPlan {
    pub org_name: String,
    pub project_name: String,
    pub env_name: String,
    pub key_name: String,
    pub key_prefix: String,
    pub key_hash: String,
}

#[derive(Debug, Clone)]
pub enum BootstrapOutcome {
    /// The database was empty; the tenancy root and the admin key were created.
    Created,
    /// The database already had an organisation; nothing was written.
    AlreadyBootstrapped,
}

#[derive(Debug, Clone)]
pub struct Provisioned {
    pub org: OrgId,
    pub project: ProjectId,
    pub env: EnvId,
    pub key: ApiKeyId,
}

#[derive(sqlx::FromRow)]
struct ApiKeyRow {
    id: String,
    org_id: String,
    project_id: String,
    env_id: Option<String>,
    name: String,
    key_prefix: String,
    roles: String,
    created_at: Ts,
    expires_at: Option<Ts>,
    last_used_at: Option<Ts>,
    org_name: String,
    is_root: bool,
}

#[derive(sqlx::FromRow)]
struct EnvironmentRow {
    id: String,
    project_id: String,
    name: String,
    created_at: Ts,
    updated_at: Ts,
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: String,
    org_id: String,
    email: String,
    name: String,
    password_hash: String,
    roles: String,
    created_at: Ts,
    updated_at: Ts,
    last_login_at: Option<Ts>,
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    id: String,
    org_id: String,
    email: String,
    roles: String,
    org_name: String,
    is_root: bool,
    expires_at: Ts,
}

#[derive(sqlx::FromRow)]
struct RoleRow {
    id: String,
    org_id: String,
    name: String,
    description: String,
    permissions: String,
    created_at: Ts,
    updated_at: Ts,
}

/// Role and permission lists are stored as JSON arrays of names.
fn names(json: &str) -> Vec<String> {
    serde_json::from_str(json).unwrap_or_default()
}

fn names_json(names: &[String]) -> String {
    serde_json::to_string(names).unwrap_or_else(|_| "[]".into())
}

fn ids_json<T: AsRef<str>>(ids: &[T]) -> serde_json::Value {
    serde_json::Value::Array(
        ids.iter()
            .map(|i| serde_json::Value::String(i.as_ref().to_owned()))
            .collect(),
    )
}

impl From<ApiKeyRow> for ApiKeyRecord {
    fn from(r: ApiKeyRow) -> Self {
        Self {
            id: ApiKeyId::from_stored(r.id),
            org_id: OrgId::from_stored(r.org_id),
            org_name: r.org_name,
            root_org: r.is_root,
            project_id: ProjectId::from_stored(r.project_id),
            env_id: r.env_id.map(EnvId::from_stored),
            name: r.name,
            key_prefix: r.key_prefix,
            roles: names(&r.roles),
            created_at: r.created_at,
            expires_at: r.expires_at,
            last_used_at: r.last_used_at,
        }
    }
}

impl From<EnvironmentRow> for EnvironmentRecord {
    fn from(r: EnvironmentRow) -> Self {
        Self {
            id: EnvId::from_stored(r.id),
            project_id: ProjectId::from_stored(r.project_id),
            name: r.name,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

impl From<UserRow> for UserRecord {
    fn from(r: UserRow) -> Self {
        Self {
            id: r.id,
            org_id: OrgId::from_stored(r.org_id),
            email: r.email,
            name: r.name,
            password_hash: r.password_hash,
            roles: names(&r.roles),
            created_at: r.created_at,
            updated_at: r.updated_at,
            last_login_at: r.last_login_at,
        }
    }
}

impl From<RoleRow> for RoleRecord {
    fn from(r: RoleRow) -> Self {
        Self {
            id: r.id,
            org_id: OrgId::from_stored(r.org_id),
            name: r.name,
            description: r.description,
            permissions: names(&r.permissions),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

impl<D: Db> SqlStore<D> {
    /// The org, its `default` project and environment and a first key, in `tx`.
    async fn insert_tenant(
        tx: &mut D::Tx,
        plan: &BootstrapPlan,
        root: bool,
    ) -> Result<Provisioned, StoreError> {
        let now = Ts::now();
        let (org, project, env) = (OrgId::generate(), ProjectId::generate(), EnvId::generate());
        tx.execute(
            sql!("insert_org"),
            args![org.as_str(), &plan.org_name, root, now],
        )
        .await?;
        tx.execute(
            sql!("insert_project"),
            args![project.as_str(), org.as_str(), &plan.project_name, now],
        )
        .await?;
        tx.execute(
            sql!("insert_environment"),
            args![env.as_str(), project.as_str(), &plan.env_name, now],
        )
        .await?;
        let key = ApiKeyId::generate();
        let roles = names_json(&["admin".to_owned()]);
        tx.execute(
            sql!("insert_api_key"),
            args![
                key.as_str(),
                org.as_str(),
                project.as_str(),
                None::<&str>,
                &plan.key_name,
                &plan.key_prefix,
                &plan.key_hash,
                &roles,
                now,
                None::<Ts>,
                "bootstrap",
            ],
        )
        .await?;
        Ok(Provisioned {
            org,
            project,
            env,
            key,
        })
    }
}

#[async_trait]
impl<D: Db> TenancyStore for SqlStore<D> {
    async fn bootstrap(&self, plan: &BootstrapPlan) -> Result<BootstrapOutcome, StoreError> {
        let mut tx = self.db.begin().await?;
        // Postgres: serialise concurrent first boots of several nodes.
        tx.execute(sql!("bootstrap_lock"), args![]).await?;
        let orgs: i64 = tx.scalar(sql!("count_orgs"), args![]).await?;
        if orgs > 0 {
            D::commit(tx).await?;
            return Ok(BootstrapOutcome::AlreadyBootstrapped);
        }
        Self::insert_tenant(&mut tx, plan, true).await?;
        D::commit(tx).await?;
        Ok(BootstrapOutcome::Created)
    }

    async fn provision_org(&self, plan: &BootstrapPlan) -> Result<Provisioned, StoreError> {
        let mut tx = self.db.begin().await?;
        let made = Self::insert_tenant(&mut tx, plan, false).await?;
        D::commit(tx).await?;
        Ok(made)
    }

    async fn find_api_key(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let row: Option<ApiKeyRow> = self
            .db
            .reader()
            .await?
            .fetch_optional(sql!("find_api_key"), args![key_hash])
            .await?;
        Ok(row.map(Into::into))
    }

    async fn find_environment(
        &self,
        project_id: &ProjectId,
        name_or_id: &str,
    ) -> Result<Option<EnvironmentRecord>, StoreError> {
        let row: Option<EnvironmentRow> = self
            .db
            .reader()
            .await?
            .fetch_optional(
                sql!("find_environment"),
                args![project_id.as_str(), name_or_id],
            )
            .await?;
        Ok(row.map(Into::into))
    }

    async fn first_environment(
        &self,
        project_id: &ProjectId,
    ) -> Result<Option<EnvironmentRecord>, StoreError> {
        let row: Option<EnvironmentRow> = self
            .db
            .reader()
            .await?
            .fetch_optional(sql!("first_environment"), args![project_id.as_str()])
            .await?;
        Ok(row.map(Into::into))
    }

    async fn default_environment(&self) -> Result<Option<EnvironmentRecord>, StoreError> {
        let row: Option<EnvironmentRow> = self
            .db
            .reader()
            .await?
            .fetch_optional(sql!("default_environment"), args![])
            .await?;
        Ok(row.map(Into::into))
    }

    async fn root_org(&self) -> Result<Option<OrgRecord>, StoreError> {
        self.db
            .reader()
            .await?
            .fetch_optional(sql!("root_org"), args![])
            .await
    }

    async fn list_orgs(&self) -> Result<Vec<OrgRecord>, StoreError> {
        self.db
            .reader()
            .await?
            .fetch_all(sql!("list_orgs"), args![])
            .await
    }

    async fn get_org(&self, org: &OrgId) -> Result<Option<OrgRecord>, StoreError> {
        self.db
            .reader()
            .await?
            .fetch_optional(sql!("get_org"), args![org.as_str()])
            .await
    }

    async fn rename_org(&self, org: &OrgId, name: &str) -> Result<bool, StoreError> {
        let n = self
            .db
            .writer()
            .await?
            .execute(sql!("rename_org"), args![org.as_str(), name, Ts::now()])
            .await?;
        Ok(n > 0)
    }

    async fn delete_org(&self, org: &OrgId) -> Result<bool, StoreError> {
        let mut tx = self.db.begin().await?;
        let n = tx
            .execute(sql!("delete_org"), args![org.as_str(), Ts::now()])
            .await?;
        D::commit(tx).await?;
        Ok(n > 0)
    }

    async fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        self.db
            .reader()
            .await?
            .fetch_all(sql!("tenant_counts"), args![])
            .await
    }

    async fn create_project(
        &self,
        org: &OrgId,
        name: &str,
    ) -> Result<(ProjectRecord, EnvironmentRecord), StoreError> {
        let now = Ts::now();
        let (project, env) = (ProjectId::generate(), EnvId::generate());
        let mut tx = self.db.begin().await?;
        tx.execute(
            sql!("insert_project"),
            args![project.as_str(), org.as_str(), name, now],
        )
        .await?;
        tx.execute(
            sql!("insert_environment"),
            args![env.as_str(), project.as_str(), "default", now],
        )
        .await?;
        D::commit(tx).await?;
        Ok((
            ProjectRecord {
                id: project.to_string(),
                org_id: org.to_string(),
                name: name.to_owned(),
                created_at: now,
                updated_at: now,
            },
            EnvironmentRecord {
                id: env,
                project_id: project,
                name: "default".into(),
                created_at: now,
                updated_at: now,
            },
        ))
    }

    async fn list_projects(&self, org: &OrgId) -> Result<Vec<ProjectRecord>, StoreError> {
        self.db
            .reader()
            .await?
            .fetch_all(sql!("list_projects"), args![org.as_str()])
            .await
    }

    async fn get_project(
        &self,
        org: &OrgId,
        project: &ProjectId,
    ) -> Result<Option<ProjectRecord>, StoreError> {
        self.db
            .reader()
            .await?
            .fetch_optional(sql!("get_project"), args![org.as_str(), project.as_str()])
            .await
    }

    async fn rename_project(
        &self,
        org: &OrgId,
        project: &ProjectId,
        name: &str,
    ) -> Result<bool, StoreError> {
        let n = self
            .db
            .writer()
            .await?
            .execute(
                sql!("rename_project"),
                args![org.as_str(), project.as_str(), name, Ts::now()],
            )
            .await?;
        Ok(n > 0)
    }

    async fn create_environment(
        &self,
        project: &ProjectId,
        name: &str,
    ) -> Result<EnvironmentRecord, StoreError> {
        let now = Ts::now();
        let env = EnvId::generate();
        self.db
            .writer()
            .await?
            .execute(
                sql!("insert_environment"),
                args![env.as_str(), project.as_str(), name, now],
            )
            .await?;
        Ok(EnvironmentRecord {
            id: env,
            project_id: project.clone(),
            name: name.to_owned(),
            created_at: now,
            updated_at: now,
        })
    }

    async fn list_environments(
        &self,
        org: &OrgId,
        project: Option<&ProjectId>,
    ) -> Result<Vec<EnvironmentRecord>, StoreError> {
        let rows: Vec<EnvironmentRow> = self
            .db
            .reader()
            .await?
            .fetch_all(
                sql!("list_environments"),
                args![org.as_str(), project.map_or("", ProjectId::as_str)],
            )
            .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn get_org_environment(
        &self,
        org: &OrgId,
        env: &str,
    ) -> Result<Option<EnvironmentRecord>, StoreError> {
        let row: Option<EnvironmentRow> = self
            .db
            .reader()
            .await?
            .fetch_optional(sql!("get_org_environment"), args![org.as_str(), env])
            .await?;
        Ok(row.map(Into::into))
    }

    async fn rename_environment(&self, env: &EnvId, name: &str) -> Result<bool, StoreError> {
        let n = self
            .db
            .writer()
            .await?
            .execute(
                sql!("rename_environment"),
                args![env.as_str(), name, Ts::now()],
            )
            .await?;
        Ok(n > 0)
    }

    async fn environment_contents(&self, env: &EnvId) -> Result<EnvironmentContents, StoreError> {
        self.db
            .reader()
            .await?
            .fetch_one(sql!("environment_contents"), args![env.as_str()])
            .await
    }

    async fn delete_environments(
        &self,
        envs: &[EnvId],
        project: Option<(&OrgId, &ProjectId)>,
    ) -> Result<(), StoreError> {
        let now = Ts::now();
        let ids = ids_json(envs);
        let mut tx = self.db.begin().await?;
        tx.execute(sql!("delete_environment_jobs"), args![&ids])
            .await?;
        tx.execute(sql!("delete_environments"), args![&ids, now])
            .await?;
        let project_id = project.map(|(_, p)| p.as_str());
        tx.execute(
            sql!("revoke_environment_keys"),
            args![&ids, now, project_id.unwrap_or("")],
        )
        .await?;
        if let Some((org, p)) = project {
            tx.execute(sql!("delete_project"), args![org.as_str(), p.as_str(), now])
                .await?;
        }
        D::commit(tx).await?;
        Ok(())
    }

    async fn create_api_key(&self, key: &NewKeyRow) -> Result<ApiKeyRecord, StoreError> {
        let now = Ts::now();
        let roles = names_json(&key.roles);
        let mut conn = self.db.writer().await?;
        conn.execute(
            sql!("insert_api_key"),
            args![
                key.id.as_str(),
                key.org_id.as_str(),
                key.project_id.as_str(),
                key.env_id.as_ref().map(EnvId::as_str),
                &key.name,
                &key.prefix,
                &key.hash,
                &roles,
                now,
                key.expires_at,
                &key.created_by,
            ],
        )
        .await?;
        let row: ApiKeyRow = conn
            .fetch_one(
                sql!("get_api_key"),
                args![key.org_id.as_str(), key.id.as_str()],
            )
            .await?;
        Ok(row.into())
    }

    async fn list_api_keys(&self, org: &OrgId) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let rows: Vec<ApiKeyRow> = self
            .db
            .reader()
            .await?
            .fetch_all(sql!("list_api_keys"), args![org.as_str()])
            .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn get_api_key(
        &self,
        org: &OrgId,
        key: &ApiKeyId,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        let row: Option<ApiKeyRow> = self
            .db
            .reader()
            .await?
            .fetch_optional(sql!("get_api_key"), args![org.as_str(), key.as_str()])
            .await?;
        Ok(row.map(Into::into))
    }

    async fn revoke_api_key(
        &self,
        org: &OrgId,
        key: &ApiKeyId,
        purge: bool,
    ) -> Result<bool, StoreError> {
        let mut conn = self.db.writer().await?;
        let n = if purge {
            conn.execute(sql!("purge_api_key"), args![org.as_str(), key.as_str()])
                .await?
        } else {
            conn.execute(
                sql!("revoke_api_key"),
                args![org.as_str(), key.as_str(), Ts::now()],
            )
            .await?
        };
        Ok(n > 0)
    }

    async fn rotate_api_key(
        &self,
        org: &OrgId,
        key: &ApiKeyId,
        prefix: &str,
        hash: &str,
    ) -> Result<bool, StoreError> {
        let n = self
            .db
            .writer()
            .await?
            .execute(
                sql!("rotate_api_key"),
                args![org.as_str(), key.as_str(), prefix, hash],
            )
            .await?;
        Ok(n > 0)
    }

    async fn set_api_key_roles(
        &self,
        org: &OrgId,
        key: &ApiKeyId,
        roles: &[String],
    ) -> Result<bool, StoreError> {
        let roles = names_json(roles);
        let n = self
            .db
            .writer()
            .await?
            .execute(
                sql!("set_api_key_roles"),
                args![org.as_str(), key.as_str(), &roles],
            )
            .await?;
        Ok(n > 0)
    }

    async fn touch_api_key(&self, key: &ApiKeyId) -> Result<(), StoreError> {
        self.db
            .writer()
            .await?
            .execute(sql!("touch_api_key"), args![key.as_str(), Ts::now()])
            .await?;
        Ok(())
    }

    async fn create_user(&self, user: &NewUserRow) -> Result<(), StoreError> {
        let roles = names_json(&user.roles);
        self.db
            .writer()
            .await?
            .execute(
                sql!("insert_user"),
                args![
                    &user.id,
                    user.org_id.as_str(),
                    &user.email,
                    &user.name,
                    &user.password_hash,
                    &roles,
                    Ts::now(),
                ],
            )
            .await?;
        Ok(())
    }

    async fn list_users(&self, org: &OrgId) -> Result<Vec<UserRecord>, StoreError> {
        let rows: Vec<UserRow> = self
            .db
            .reader()
            .await?
            .fetch_all(sql!("list_users"), args![org.as_str()])
            .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn get_user(&self, org: &OrgId, user: &str) -> Result<Option<UserRecord>, StoreError> {
        let row: Option<UserRow> = self
            .db
            .reader()
            .await?
            .fetch_optional(sql!("get_user"), args![org.as_str(), user])
            .await?;
        Ok(row.map(Into::into))
    }

    async fn find_user_by_email(&self, email: &str) -> Result<Option<UserRecord>, StoreError> {
        let row: Option<UserRow> = self
            .db
            .reader()
            .await?
            .fetch_optional(sql!("find_user_by_email"), args![email])
            .await?;
        Ok(row.map(Into::into))
    }

    async fn update_user(&self, user: &UserRecord) -> Result<bool, StoreError> {
        let roles = names_json(&user.roles);
        let n = self
            .db
            .writer()
            .await?
            .execute(
                sql!("update_user"),
                args![
                    user.org_id.as_str(),
                    &user.id,
                    &user.email,
                    &user.name,
                    &roles,
                    Ts::now()
                ],
            )
            .await?;
        Ok(n > 0)
    }

    async fn set_user_password(
        &self,
        org: &OrgId,
        user: &str,
        hash: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.db.begin().await?;
        let n = tx
            .execute(
                sql!("set_user_password"),
                args![org.as_str(), user, hash, Ts::now()],
            )
            .await?;
        tx.execute(sql!("delete_user_sessions"), args![user])
            .await?;
        D::commit(tx).await?;
        Ok(n > 0)
    }

    async fn delete_user(&self, org: &OrgId, user: &str) -> Result<bool, StoreError> {
        let mut tx = self.db.begin().await?;
        let n = tx
            .execute(sql!("delete_user"), args![org.as_str(), user])
            .await?;
        // Only once the org-scoped delete found the user: another org's sessions stay.
        if n > 0 {
            tx.execute(sql!("delete_user_sessions"), args![user])
                .await?;
        }
        D::commit(tx).await?;
        Ok(n > 0)
    }

    async fn create_session(
        &self,
        user: &str,
        token_hash: &str,
        expires_at: Ts,
    ) -> Result<(), StoreError> {
        let now = Ts::now();
        let mut tx = self.db.begin().await?;
        tx.execute(
            sql!("insert_session"),
            args![token_hash, user, now, expires_at],
        )
        .await?;
        tx.execute(sql!("touch_user_login"), args![user, now])
            .await?;
        D::commit(tx).await?;
        Ok(())
    }

    async fn find_session(&self, token_hash: &str) -> Result<Option<SessionRecord>, StoreError> {
        let row: Option<SessionRow> = self
            .db
            .reader()
            .await?
            .fetch_optional(sql!("find_session"), args![token_hash])
            .await?;
        Ok(row.map(|r| SessionRecord {
            user_id: r.id,
            org_id: OrgId::from_stored(r.org_id),
            org_name: r.org_name,
            root_org: r.is_root,
            email: r.email,
            roles: names(&r.roles),
            expires_at: r.expires_at,
        }))
    }

    async fn create_role(&self, role: &RoleRecord) -> Result<(), StoreError> {
        let permissions = names_json(&role.permissions);
        self.db
            .writer()
            .await?
            .execute(
                sql!("insert_role"),
                args![
                    &role.id,
                    role.org_id.as_str(),
                    &role.name,
                    &role.description,
                    &permissions,
                    role.created_at,
                ],
            )
            .await?;
        Ok(())
    }

    async fn list_roles(&self, org: &OrgId) -> Result<Vec<RoleRecord>, StoreError> {
        let rows: Vec<RoleRow> = self
            .db
            .reader()
            .await?
            .fetch_all(sql!("list_roles"), args![org.as_str()])
            .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn update_role(&self, role: &RoleRecord) -> Result<bool, StoreError> {
        let permissions = names_json(&role.permissions);
        let n = self
            .db
            .writer()
            .await?
            .execute(
                sql!("update_role"),
                args![
                    role.org_id.as_str(),
                    &role.id,
                    &role.name,
                    &role.description,
                    &permissions,
                    Ts::now(),
                ],
            )
            .await?;
        Ok(n > 0)
    }

    async fn role_holders(&self, org: &OrgId, id: &str, name: &str) -> Result<i64, StoreError> {
        self.db
            .reader()
            .await?
            .scalar(sql!("role_in_use"), args![org.as_str(), id, name])
            .await
    }

    async fn delete_role(&self, org: &OrgId, id: &str) -> Result<bool, StoreError> {
        let n = self
            .db
            .writer()
            .await?
            .execute(sql!("delete_role"), args![org.as_str(), id])
            .await?;
        Ok(n > 0)
    }
}
