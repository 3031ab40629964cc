//! Tenancy: API keys (generation, hashing, roles) and the first-boot bootstrap.

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::store::tenancy::{BootstrapOutcome, BootstrapPlan};
use crate::store::{SharedStore, StoreError};

/// What a key may do. Tenant policies may only narrow this, never widen it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Developer,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "viewer" => Some(Self::Viewer),
            "developer" => Some(Self::Developer),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Developer => "developer",
            Self::Admin => "admin",
        }
    }

    pub fn allows(self, permission: Permission) -> bool {
        match permission {
            Permission::Read => true,
            Permission::Write => self >= Role::Developer,
            Permission::Admin => self == Role::Admin,
        }
    }
}

/// The kind of access an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    Read,
    Write,
    Admin,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "admin",
        }
    }
}

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

    #[test]
    fn roles_grant_in_order() {
        assert!(Role::Viewer.allows(Permission::Read));
        assert!(!Role::Viewer.allows(Permission::Write));
        assert!(Role::Developer.allows(Permission::Write));
        assert!(!Role::Developer.allows(Permission::Admin));
        assert!(Role::Admin.allows(Permission::Admin));
    }
}
