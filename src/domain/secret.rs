//! Secret encryption: AES-256-GCM under the master key, a random nonce per write, the key's id
//! stored beside the ciphertext, and the row's identity bound in as associated data so a
//! ciphertext cannot be moved to another secret.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// What a secret's row stores.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub ciphertext: Vec<u8>,
    pub nonce: Vec<u8>,
    pub key_id: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error(
        "IRONFLOW_MASTER_KEY must be 32 bytes, as 64 hex characters or base64 (try `openssl rand -hex 32`)"
    )]
    BadMasterKey,
    #[error(
        "secret '{name}' was encrypted with master key {stored}, but the configured IRONFLOW_MASTER_KEY is {configured}"
    )]
    WrongKey {
        name: String,
        stored: String,
        configured: String,
    },
    #[error("secret '{0}' could not be decrypted: the ciphertext or the master key is wrong")]
    Undecryptable(String),
}

/// The server's master key and its public id (a hash prefix, safe to store and log).
#[derive(Clone)]
pub struct MasterKey {
    key: [u8; 32],
    id: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl MasterKey {
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.chars().all(|c| c.is_ascii_hexdigit()) {
            hex::decode(text).map_err(|_| SecretError::BadMasterKey)?
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| SecretError::BadMasterKey)?
        };
        let key: [u8; 32] = bytes.try_into().map_err(|_| SecretError::BadMasterKey)?;
        let id = format!("mk_{}", &hex::encode(Sha256::digest(key))[..12]);
        Ok(Self { key, id })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&Key::<Aes256Gcm>::from(self.key))
    }

    /// Encrypts a value for the secret `<env>/<name>`.
    pub fn seal(&self, env: &str, name: &str, plaintext: &str) -> Sealed {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let aad = format!("{env}/{name}");
        let ciphertext = self
            .cipher()
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .unwrap_or_default();
        Sealed {
            ciphertext,
            nonce: nonce.to_vec(),
            key_id: self.id.clone(),
        }
    }

    pub fn open(&self, env: &str, name: &str, sealed: &Sealed) -> Result<String, SecretError> {
        if sealed.key_id != self.id {
            return Err(SecretError::WrongKey {
                name: name.to_owned(),
                stored: sealed.key_id.clone(),
                configured: self.id.clone(),
            });
        }
        let nonce: [u8; 12] = sealed
            .nonce
            .as_slice()
            .try_into()
            .map_err(|_| SecretError::Undecryptable(name.to_owned()))?;
        let aad = format!("{env}/{name}");
        let plain = self
            .cipher()
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Undecryptable(name.to_owned()))?;
        String::from_utf8(plain).map_err(|_| SecretError::Undecryptable(name.to_owned()))
    }
}

/// Secret names become topic tokens (`system.secret.<name>.updated`): no dots or wildcards.
pub fn validate_secret_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "secret name '{name}' must be 1 to 128 letters, digits, '_' or '-'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn seal_and_open_round_trip_with_fresh_nonces() {
        let key = MasterKey::parse(KEY).expect("key");
        let a = key.seal("env", "db", "hunter2");
        let b = key.seal("env", "db", "hunter2");
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
        assert!(!a.ciphertext.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(key.open("env", "db", &a).as_deref(), Ok("hunter2"));
        assert!(key.open("env", "other", &a).is_err(), "bound to its name");
    }

    #[test]
    fn wrong_or_bad_keys_fail_loudly() {
        let key = MasterKey::parse(KEY).expect("key");
        let other = MasterKey::parse(&"ab".repeat(32)).expect("key");
        let sealed = key.seal("env", "db", "v");
        assert!(matches!(
            other.open("env", "db", &sealed),
            Err(SecretError::WrongKey { .. })
        ));
        assert_eq!(
            MasterKey::parse("short").err(),
            Some(SecretError::BadMasterKey)
        );
    }
}
