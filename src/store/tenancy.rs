//! Tenancy in the store: first boot (the root org, `default` project and environment, the admin
//! key), API key and environment lookups.

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

    async fn find_api_key(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>, StoreError>;

    /// Looks an environment up by name or id inside a project.
    async fn find_environment(
        &self,
        project_id: &ProjectId,
        name_or_id: &str,
    ) -> Result<Option<EnvironmentRecord>, StoreError>;

    /// The default project's `default` environment of the first organisation (used by `--dev`).
    async fn default_environment(&self) -> Result<Option<EnvironmentRecord>, StoreError>;
}

/// An API key as stored (never the secret itself).
#[derive(Debug, Clone)]
pub struct ApiKeyRecord {
    pub id: ApiKeyId,
    pub org_id: OrgId,
    pub project_id: ProjectId,
    pub name: String,
    pub role: String,
}

#[derive(Debug, Clone)]
pub struct EnvironmentRecord {
    pub id: EnvId,
    pub project_id: ProjectId,
    pub name: String,
}

/// What first boot creates.
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

#[derive(sqlx::FromRow)]
struct ApiKeyRow {
    pub id: String,
    pub org_id: String,
    pub project_id: String,
    pub name: String,
    pub role: String,
}

#[derive(sqlx::FromRow)]
struct EnvironmentRow {
    pub id: String,
    pub project_id: String,
    pub name: String,
}

impl From<ApiKeyRow> for ApiKeyRecord {
    fn from(r: ApiKeyRow) -> Self {
        Self {
            id: ApiKeyId::from_stored(r.id),
            org_id: OrgId::from_stored(r.org_id),
            project_id: ProjectId::from_stored(r.project_id),
            name: r.name,
            role: r.role,
        }
    }
}

impl From<EnvironmentRow> for EnvironmentRecord {
    fn from(r: EnvironmentRow) -> Self {
        Self {
            id: EnvId::from_stored(r.id),
            project_id: ProjectId::from_stored(r.project_id),
            name: r.name,
        }
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
        let now = Ts::now();
        let (org, project, env) = (OrgId::generate(), ProjectId::generate(), EnvId::generate());
        tx.execute(sql!("insert_org"), args![org.as_str(), &plan.org_name, now])
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
        tx.execute(
            sql!("insert_api_key"),
            args![
                key.as_str(),
                org.as_str(),
                project.as_str(),
                &plan.key_name,
                &plan.key_prefix,
                &plan.key_hash,
                "admin",
                now,
            ],
        )
        .await?;
        D::commit(tx).await?;
        Ok(BootstrapOutcome::Created)
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

    async fn default_environment(&self) -> Result<Option<EnvironmentRecord>, StoreError> {
        let row: Option<EnvironmentRow> = self
            .db
            .reader()
            .await?
            .fetch_optional(sql!("default_environment"), args![])
            .await?;
        Ok(row.map(Into::into))
    }
}
