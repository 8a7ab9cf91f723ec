//! Secrets at rest: the node's secret key, sealing and opening values with
//! ChaCha20-Poly1305 (RFC 8439, from `ring`, which TLS uses too), and the store-backed
//! [`GrantSource`] that hands a run its grants with their secrets opened.
//!
//! A value is sealed under a random 96-bit nonce with the secret's name as
//! associated data, so a sealed value moved to another name does not open.
//! The key comes from `QUARTZITE_SECRET_KEY` (64 hex digits) or the file named
//! by `QUARTZITE_SECRET_KEY_FILE` (the same, whitespace ignored). Rotation:
//! start nodes with the new key and the old one in
//! `QUARTZITE_SECRET_KEY_PREVIOUS` (or `..._PREVIOUS_FILE`); values sealed with
//! either open, and `quartzite secret set` seals with the new one. Once every
//! secret has been set again, drop the previous key.
//!
//! Plaintext lives in [`Zeroizing`] strings, is never logged, never has a
//! `Debug` that shows it, and leaves this module only to be injected into a
//! request header or to teach the run's redactor what to hide.

use crate::grants::Grants;
use crate::runtime::services::{GrantRefusal, GrantSource, RunGrants};
use crate::store::secrets::{SecretPut, SecretSealed};
use crate::store::{Store, StoreError};
use async_trait::async_trait;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::Digest;
use std::sync::Arc;
use zeroize::Zeroizing;

/// The environment variable holding the secret key, 64 hex digits.
pub const KEY_ENV: &str = "QUARTZITE_SECRET_KEY";
/// The environment variable naming a file that holds the key.
pub const KEY_FILE_ENV: &str = "QUARTZITE_SECRET_KEY_FILE";
/// The previous key during a rotation.
pub const PREVIOUS_KEY_ENV: &str = "QUARTZITE_SECRET_KEY_PREVIOUS";
/// A file holding the previous key during a rotation.
pub const PREVIOUS_KEY_FILE_ENV: &str = "QUARTZITE_SECRET_KEY_PREVIOUS_FILE";

/// Why a key or a secret cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the secret key is not 64 hex digits ({0})")]
    BadKey(&'static str),
    #[error("cannot read the secret key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
    #[error(
        "this node has no secret key: set {KEY_ENV} (64 hex digits) or {KEY_FILE_ENV} to store or use secrets"
    )]
    NoKey,
    #[error("secret {name:?} was sealed with key {key_id}, which this node does not have")]
    UnknownKey { name: String, key_id: String },
    #[error("secret {name:?} does not open with this node's key (corrupted or wrong key)")]
    Unseal { name: String },
    #[error("secret {0:?} is empty or not UTF-8 text")]
    BadValue(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One 256-bit key and its id (the first 16 hex digits of its SHA-256).
pub struct SecretKey {
    key: Zeroizing<[u8; 32]>,
    id: String,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", self.id)
    }
}

impl SecretKey {
    /// Parses 64 hex digits (surrounding whitespace ignored).
    ///
    /// # Errors
    ///
    /// [`SecretError::BadKey`] when the text is not 32 bytes of hex.
    pub fn from_hex(text: &str) -> Result<SecretKey, SecretError> {
        let text = Zeroizing::new(text.trim().to_string());
        let mut key = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text.as_bytes(), &mut key[..]).map_err(|_| {
            SecretError::BadKey(if text.len() == 64 {
                "not hex"
            } else {
                "wrong length"
            })
        })?;
        let id = hex::encode(&sha2::Sha256::digest(&key[..])[..8]);
        Ok(SecretKey { key, id })
    }

    /// The key's id, stored beside each value it seals.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn cipher(&self) -> LessSafeKey {
        // A 32-byte key is what CHACHA20_POLY1305 takes: this cannot fail.
        let key = UnboundKey::new(&CHACHA20_POLY1305, &self.key[..])
            .expect("a ChaCha20-Poly1305 key is 32 bytes");
        LessSafeKey::new(key)
    }
}

/// The node's keys: the current one, and the previous one during a rotation.
#[derive(Debug, Default)]
pub struct SecretKeys {
    current: Option<SecretKey>,
    previous: Option<SecretKey>,
}

fn key_from(env: &str, file_env: &str) -> Result<Option<SecretKey>, SecretError> {
    if let Ok(text) = std::env::var(env) {
        return SecretKey::from_hex(&Zeroizing::new(text)).map(Some);
    }
    if let Ok(path) = std::env::var(file_env) {
        let text = std::fs::read_to_string(&path).map_err(|e| SecretError::KeyFile {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        return SecretKey::from_hex(&Zeroizing::new(text)).map(Some);
    }
    Ok(None)
}

impl SecretKeys {
    /// Keys from the environment ([`KEY_ENV`], [`KEY_FILE_ENV`] and their
    /// `_PREVIOUS` twins). No key is not an error: such a node runs every job
    /// that needs no secret.
    ///
    /// # Errors
    ///
    /// A key that is set but malformed, or a key file that cannot be read.
    pub fn from_env() -> Result<SecretKeys, SecretError> {
        Ok(SecretKeys {
            current: key_from(KEY_ENV, KEY_FILE_ENV)?,
            previous: key_from(PREVIOUS_KEY_ENV, PREVIOUS_KEY_FILE_ENV)?,
        })
    }

    /// Keys given directly (tests, tools).
    pub fn new(current: Option<SecretKey>, previous: Option<SecretKey>) -> SecretKeys {
        SecretKeys { current, previous }
    }

    pub fn has_key(&self) -> bool {
        self.current.is_some()
    }

    /// Seals `value` for storing as `name`.
    ///
    /// # Errors
    ///
    /// [`SecretError::NoKey`] without a key; [`SecretError::BadValue`] for an empty value.
    pub fn seal(&self, name: &str, value: &str) -> Result<SecretPut, SecretError> {
        let key = self.current.as_ref().ok_or(SecretError::NoKey)?;
        if value.is_empty() {
            return Err(SecretError::BadValue(name.to_string()));
        }
        let unseal = || SecretError::Unseal {
            name: name.to_string(),
        };
        // A fresh random nonce per value: 96 bits keep a collision out of
        // reach for any number of values one key will ever seal.
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| unseal())?;
        let mut ciphertext = value.as_bytes().to_vec();
        key.cipher()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut ciphertext,
            )
            .map_err(|_| unseal())?;
        Ok(SecretPut {
            name: name.to_string(),
            key_id: key.id.clone(),
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    /// Opens a stored value.
    ///
    /// # Errors
    ///
    /// No key, an unknown key id, or a value that does not authenticate.
    pub fn open(&self, sealed: &SecretSealed) -> Result<Zeroizing<String>, SecretError> {
        let key = [&self.current, &self.previous]
            .into_iter()
            .flatten()
            .find(|k| k.id == sealed.key_id);
        let Some(key) = key else {
            return Err(if self.current.is_none() {
                SecretError::NoKey
            } else {
                SecretError::UnknownKey {
                    name: sealed.name.clone(),
                    key_id: sealed.key_id.clone(),
                }
            });
        };
        let unseal = || SecretError::Unseal {
            name: sealed.name.clone(),
        };
        let nonce = Nonce::try_assume_unique_for_key(&sealed.nonce).map_err(|_| unseal())?;
        let mut buffer = Zeroizing::new(sealed.ciphertext.clone());
        let plain = key
            .cipher()
            .open_in_place(nonce, Aad::from(sealed.name.as_bytes()), &mut buffer)
            .map_err(|_| unseal())?;
        match std::str::from_utf8(plain) {
            Ok(s) if !s.is_empty() => Ok(Zeroizing::new(s.to_string())),
            _ => Err(SecretError::BadValue(sealed.name.clone())),
        }
    }
}

/// Secrets read from the store at the start of every run that injects one,
/// so a rotated secret takes effect at the next fire on every node (the
/// grants themselves come with the job, read by the claim).
pub struct StoreGrants {
    store: Arc<dyn Store>,
    keys: Arc<SecretKeys>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl StoreGrants {
    pub fn new(
        store: Arc<dyn Store>,
        keys: Arc<SecretKeys>,
        metrics: Option<Arc<crate::metrics::Metrics>>,
    ) -> Arc<StoreGrants> {
        Arc::new(StoreGrants {
            store,
            keys,
            metrics,
        })
    }
}

/// Compiles `grants` and opens the secrets they name through `open`.
///
/// # Errors
///
/// Grants that no longer compile, or a secret that cannot be had.
pub async fn resolve<F, Fut>(grants: &Grants, open: F) -> Result<RunGrants, GrantRefusal>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<Option<(i64, Zeroizing<String>)>, GrantRefusal>>,
{
    let compiled = grants
        .compile()
        .map_err(|e| GrantRefusal::Permanent(format!("the job's grants are invalid: {e}")))?;
    let mut secrets = Vec::new();
    for name in compiled.secret_names() {
        match open(name.clone()).await? {
            Some((version, value)) => secrets.push((name, version, value)),
            None => {
                return Err(GrantRefusal::Permanent(format!(
                    "the job's grants name secret {name:?}, which is not stored (quartzite secret set {name})"
                )));
            }
        }
    }
    Ok(RunGrants {
        grants: Arc::new(compiled),
        secrets,
    })
}

#[async_trait]
impl GrantSource for StoreGrants {
    async fn open(&self, grants: &Grants) -> Result<RunGrants, GrantRefusal> {
        resolve(grants, |name| async move {
            let sealed = self
                .store
                .secret_get(&name)
                .await
                .map_err(|e| GrantRefusal::Unavailable(e.to_string()))?;
            let Some(sealed) = sealed else {
                return Ok(None);
            };
            match self.keys.open(&sealed) {
                Ok(v) => Ok(Some((sealed.version, v))),
                Err(e @ (SecretError::NoKey | SecretError::UnknownKey { .. })) => {
                    Err(GrantRefusal::NoKey(e.to_string()))
                }
                Err(e) => Err(GrantRefusal::Permanent(e.to_string())),
            }
        })
        .await
    }

    async fn run_grants(&self, job_key: &str) -> Result<Option<RunGrants>, GrantRefusal> {
        let job = match self.store.job_get(job_key).await {
            Ok(Some(job)) => job,
            Ok(None) => return Ok(None),
            Err(e) => return Err(GrantRefusal::Unavailable(e.to_string())),
        };
        let grants = job
            .grants()
            .map_err(|e| GrantRefusal::Permanent(e.to_string()))?;
        if grants.is_empty() {
            return Ok(None);
        }
        self.open(&grants).await.map(Some)
    }

    fn http_request(&self, job_key: &str, host: &str, result: &str) {
        if let Some(m) = &self.metrics {
            m.http_request(job_key, host, result);
        }
    }
}

/// The longest secret value accepted, in bytes: a credential, not a file.
pub const MAX_SECRET_VALUE: usize = 16 << 10;

/// Seals and stores a new version of `name`: what `quartzite secret set` and
/// `PUT /api/v1/secrets/NAME` both do. Returns the name, version and time set.
///
/// # Errors
///
/// A bad name or value, no key, or the store failing.
pub async fn secret_set(
    store: &dyn Store,
    keys: &SecretKeys,
    name: &str,
    value: &str,
) -> Result<crate::store::secrets::SecretMeta, SecretError> {
    crate::grants::check_secret_name(name).map_err(SecretError::Invalid)?;
    let value = value.strip_suffix('\n').unwrap_or(value);
    let value = value.strip_suffix('\r').unwrap_or(value);
    if value.len() > MAX_SECRET_VALUE {
        return Err(SecretError::Invalid(format!(
            "secret {name:?} is {} bytes; the limit is {MAX_SECRET_VALUE}",
            value.len()
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(SecretError::Invalid(format!(
            "secret {name:?} holds control characters; it must fit in an HTTP header"
        )));
    }
    let sealed = keys.seal(name, value)?;
    let version = store.secret_put(&sealed).await?;
    let listed = store.secret_list().await?;
    Ok(listed
        .into_iter()
        .find(|m| m.name == name)
        .unwrap_or(crate::store::secrets::SecretMeta {
            name: name.to_string(),
            version,
            set_ms: 0,
        }))
}

/// A secret's listing as the API and CLI show it: never its value.
pub fn secret_view(meta: &crate::store::secrets::SecretMeta) -> serde_json::Value {
    serde_json::json!({
        "name": meta.name,
        "version": meta.version,
        "set_at": crate::admin::views::fmt_ms(Some(meta.set_ms)),
        "set_ms": meta.set_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const OTHER: &str = "ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn sealed(put: SecretPut) -> SecretSealed {
        SecretSealed {
            name: put.name,
            version: 1,
            key_id: put.key_id,
            nonce: put.nonce,
            ciphertext: put.ciphertext,
        }
    }

    #[test]
    fn a_value_opens_with_its_key_and_only_under_its_name() {
        let keys = SecretKeys::new(Some(SecretKey::from_hex(KEY).unwrap()), None);
        let put = keys.seal("TOKEN", "hunter2").unwrap();
        assert!(!put.ciphertext.windows(7).any(|w| w == b"hunter2"));
        let mut s = sealed(put);
        assert_eq!(keys.open(&s).unwrap().as_str(), "hunter2");
        s.name = "OTHER".into();
        assert!(matches!(keys.open(&s), Err(SecretError::Unseal { .. })));
    }

    #[test]
    fn a_rotated_key_still_opens_values_sealed_before() {
        let old = SecretKeys::new(Some(SecretKey::from_hex(KEY).unwrap()), None);
        let s = sealed(old.seal("TOKEN", "v1").unwrap());
        let rotated = SecretKeys::new(
            Some(SecretKey::from_hex(OTHER).unwrap()),
            Some(SecretKey::from_hex(KEY).unwrap()),
        );
        assert_eq!(rotated.open(&s).unwrap().as_str(), "v1");
        let new_only = SecretKeys::new(Some(SecretKey::from_hex(OTHER).unwrap()), None);
        assert!(matches!(
            new_only.open(&s),
            Err(SecretError::UnknownKey { .. })
        ));
        assert!(matches!(
            SecretKeys::default().open(&s),
            Err(SecretError::NoKey)
        ));
        assert!(matches!(
            SecretKeys::default().seal("A", "b"),
            Err(SecretError::NoKey)
        ));
    }

    /// Sealed by another implementation of RFC 8439 ChaCha20-Poly1305
    /// (Python's `cryptography` 48, over OpenSSL) with key 00..1f, nonce
    /// 64..6f and the name as associated data: values stored by any earlier
    /// Quartzite, or by a tool of the operator's, open.
    #[test]
    fn a_value_sealed_elsewhere_with_the_same_algorithm_opens() {
        let key = SecretKey::from_hex(KEY).unwrap();
        let key_id = key.id().to_string();
        let keys = SecretKeys::new(Some(key), None);
        let mut s = SecretSealed {
            name: "SLACK_TOKEN".into(),
            version: 1,
            key_id,
            nonce: hex::decode("6465666768696a6b6c6d6e6f").unwrap(),
            ciphertext: hex::decode("5c64d5befdd7447f8fb17e1a9c035a8fc6f75f7ac8d2af09cd1189f334")
                .unwrap(),
        };
        assert_eq!(keys.open(&s).unwrap().as_str(), "hunter2-token");
        s.ciphertext[0] ^= 1;
        assert!(matches!(keys.open(&s), Err(SecretError::Unseal { .. })));
        s.ciphertext[0] ^= 1;
        s.nonce.pop();
        assert!(matches!(keys.open(&s), Err(SecretError::Unseal { .. })));
    }

    #[test]
    fn malformed_keys_are_refused() {
        assert!(SecretKey::from_hex("abc").is_err());
        assert!(SecretKey::from_hex(&"zz".repeat(32)).is_err());
        assert!(SecretKey::from_hex(&format!(" {KEY}\n")).is_ok());
    }
}
