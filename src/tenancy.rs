//! Tenancy: API keys (generation, hashing), the first-boot bootstrap, and `ironflow keys
//! create` (a key minted on the database directly).

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::store::tenancy::{BootstrapOutcome, BootstrapPlan};
use crate::store::{SharedStore, StoreError};

/// A freshly generated API key: the secret is shown once, only its hash is stored.
pub struct NewApiKey {
    pub secret: String,
    pub prefix: String,
    pub hash: String,
}

pub const KEY_PREFIX: &str = "ifkey_";

impl NewApiKey {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let secret = format!("{KEY_PREFIX}{}", hex::encode(bytes));
        Self {
            prefix: secret[..KEY_PREFIX.len() + 8].to_owned(),
            hash: hash_api_key(&secret),
            secret,
        }
    }
}

/// Keys are 256 random bits, so a plain SHA-256 is enough (no password-style stretching).
pub fn hash_api_key(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Creates the root org, `default` project and environment and an admin key on an empty
/// database. Returns the key's secret when one was created.
pub async fn bootstrap(store: &SharedStore) -> Result<Option<String>, StoreError> {
    let key = NewApiKey::generate();
    let plan = BootstrapPlan {
        org_name: "root".into(),
        project_name: "default".into(),
        env_name: "default".into(),
        key_name: "bootstrap admin key".into(),
        key_prefix: key.prefix.clone(),
        key_hash: key.hash.clone(),
    };
    match store.bootstrap(&plan).await? {
        BootstrapOutcome::Created => Ok(Some(key.secret)),
        BootstrapOutcome::AlreadyBootstrapped => Ok(None),
    }
}

/// What `ironflow keys create` asks for.
#[derive(Debug, Clone)]
pub struct MintKey {
    pub name: String,
    pub roles: Vec<String>,
    pub org: Option<String>,
    pub project: Option<String>,
    pub env: Option<String>,
    pub expires_in: Option<String>,
}

/// A key minted by `ironflow keys create`.
#[derive(Debug, Clone)]
pub struct MintedKey {
    pub id: String,
    pub org: String,
    pub roles: Vec<String>,
    pub secret: String,
}

/// Mints a key on the database directly: whoever can reach the database may (that is the
/// recovery path for a lost admin key), so every permission is grantable here.
pub async fn mint_key(store: &SharedStore, request: MintKey) -> anyhow::Result<MintedKey> {
    use anyhow::Context as _;
    let engine = crate::engine::Engine::new(store.clone(), crate::engine::EngineOptions::default());
    let org = match request.org {
        Some(org) => crate::ids::OrgId::from_stored(org),
        None => crate::ids::OrgId::from_stored(
            store
                .root_org()
                .await?
                .context("the database has no organisation yet: start `ironflow serve` once first")?
                .id,
        ),
    };
    let project = match request.project {
        Some(p) => crate::ids::ProjectId::from_stored(p),
        None => crate::ids::ProjectId::from_stored(
            engine
                .list_projects(&org)
                .await?
                .into_iter()
                .next()
                .context("the organisation has no project")?
                .id,
        ),
    };
    let env = match request.env {
        None => None,
        Some(name) => Some(
            engine
                .find_environment(&project, &name)
                .await?
                .with_context(|| format!("no environment '{name}' in project {project}"))?
                .id,
        ),
    };
    let expires_in = request
        .expires_in
        .map(|e| crate::domain::job::parse_duration(&e).map_err(anyhow::Error::msg))
        .transpose()?;
    let issued = engine
        .create_key(
            &org,
            crate::domain::authz::PermissionSet::of(crate::domain::authz::Permission::ALL),
            crate::engine::NewKey {
                name: request.name,
                project,
                env,
                roles: request.roles,
                expires_in,
                created_by: "cli".into(),
            },
        )
        .await?;
    Ok(MintedKey {
        id: issued.record.id.to_string(),
        org: org.to_string(),
        roles: issued.record.roles,
        secret: issued.secret,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_hashed() {
        let a = NewApiKey::generate();
        let b = NewApiKey::generate();
        assert_ne!(a.secret, b.secret);
        assert!(a.secret.starts_with(KEY_PREFIX));
        assert_eq!(a.hash, hash_api_key(&a.secret));
        assert!(!a.hash.contains(&a.secret[KEY_PREFIX.len()..]));
        assert!(a.secret.starts_with(&a.prefix));
    }
}
