//! API keys: made and shown once (`crmbus_<id>_<secret>`), kept in the backend's state
//! store as a keyed hash of the secret (HMAC-SHA256 with the installation's own random
//! key), never the key itself; listed without secrets; revocable; optionally expiring.
//!
//! The id (32 hex digits) finds the record; the secret (32 random bytes, base64url) is
//! checked against the hash in constant time. The secret's entropy makes a slow hash
//! unnecessary: there is nothing to guess.

use std::sync::Arc;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use crmbus::{LogError, StateStore};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::scope::Scope;

/// How every key starts.
pub const KEY_PREFIX: &str = "crmbus_";
/// How every live-stream token starts.
pub const STREAM_TOKEN_PREFIX: &str = "crmbus-st.";
/// State-store namespace of the key records, by id.
const NAMESPACE: &str = "server/keys";
/// State-store namespace and key of the installation's hashing key.
const PEPPER_NAMESPACE: &str = "server/auth";
const PEPPER_KEY: &str = "key-hash-secret";
/// Hex digits of a key's id.
const ID_LEN: usize = 32;

/// A key as stored and listed: everything but the secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The key's id (the part of the key after `crmbus_`, before the secret).
    pub id: String,
    /// A name for people (`erp-sync`, `ops-alice`).
    pub name: String,
    /// Its scopes, as text (`publish:deals`, `admin`).
    pub scopes: Vec<String>,
    /// When it was made (µs since the epoch).
    pub created_at_us: i64,
    /// When it stops working, if ever (µs since the epoch).
    #[serde(default)]
    pub expires_at_us: Option<i64>,
    /// When it was revoked, if it was (µs since the epoch).
    #[serde(default)]
    pub revoked_at_us: Option<i64>,
    /// base64 of HMAC-SHA256(installation key, secret).
    pub hash: String,
}

/// A key just made: the record, and the key in full (shown once).
#[derive(Debug, Clone)]
pub struct NewKey {
    /// What is stored.
    pub record: KeyRecord,
    /// `crmbus_<id>_<secret>`.
    pub key: String,
}

/// Why a presented key was refused (each a 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer …` header.
    #[error("this server requires an API key: send it as 'Authorization: Bearer crmbus_…'")]
    Missing,
    /// Not a crmbus key.
    #[error("the Authorization header does not hold a crmbus API key (Bearer crmbus_…)")]
    Malformed,
    /// No such key, or the secret does not match.
    #[error("the API key is not valid")]
    Unknown,
    /// Revoked.
    #[error("the API key was revoked")]
    Revoked,
    /// Past its expiry.
    #[error("the API key has expired")]
    Expired,
    /// The store could not be read.
    #[error("the API keys cannot be read: {0}")]
    Store(String),
    /// A live-stream token that is not one, was forged, or names another topic.
    #[error("the stream token is not valid for this topic")]
    BadToken,
    /// A live-stream token past its time.
    #[error(
        "the stream token has expired: ask for a new one (POST /v1/topics/{{topic}}/stream-token)"
    )]
    TokenExpired,
}

/// `record` and its scopes if it works at `now_us` (neither revoked nor expired).
fn usable(record: KeyRecord, now_us: i64) -> Result<(KeyRecord, Vec<Scope>), AuthError> {
    if record.revoked_at_us.is_some() {
        return Err(AuthError::Revoked);
    }
    if record.expires_at_us.is_some_and(|e| e <= now_us) {
        return Err(AuthError::Expired);
    }
    let scopes = record
        .scopes
        .iter()
        .filter_map(|s| s.parse::<Scope>().ok())
        .collect();
    Ok((record, scopes))
}

/// The key records of a bus, in its state store.
pub struct KeyStore {
    state: Arc<dyn StateStore>,
}

fn backend(what: &str, e: impl std::fmt::Display) -> LogError {
    LogError::backend(format!("{what}: {e}"))
}

/// A key's name: 1–100 characters of `A–Z a–z 0–9 . _ - @`.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err("a key's name must be 1-100 characters of A-Z a-z 0-9 . _ - @".into())
    }
}

/// Splits `crmbus_<id>_<secret>` into its id and secret.
fn parse_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = (rest.get(..ID_LEN)?, rest.get(ID_LEN..)?);
    let secret = secret.strip_prefix('_')?;
    let valid_id = id.chars().all(|c| c.is_ascii_hexdigit());
    (valid_id && !secret.is_empty()).then_some((id, secret))
}

impl KeyStore {
    /// The keys kept in `state`.
    pub fn new(state: Arc<dyn StateStore>) -> KeyStore {
        KeyStore { state }
    }

    /// The installation's hashing key, made at the first call that needs one.
    async fn pepper(&self, create: bool) -> Result<Option<Vec<u8>>, LogError> {
        if let Some(v) = self.state.get(PEPPER_NAMESPACE, PEPPER_KEY).await? {
            return Ok(Some(v));
        }
        if !create {
            return Ok(None);
        }
        let mut fresh = vec![0u8; 32];
        rand::fill(&mut fresh[..]);
        self.state
            .put(PEPPER_NAMESPACE, PEPPER_KEY, fresh.clone())
            .await?;
        // Read back: if another server wrote one meanwhile, the stored one is used.
        Ok(Some(
            self.state
                .get(PEPPER_NAMESPACE, PEPPER_KEY)
                .await?
                .unwrap_or(fresh),
        ))
    }

    fn mac(pepper: &[u8], secret: &str) -> Result<Hmac<Sha256>, LogError> {
        let mut mac = Hmac::<Sha256>::new_from_slice(pepper)
            .map_err(|e| backend("the key-hashing key", e))?;
        mac.update(secret.as_bytes());
        Ok(mac)
    }

    /// Makes a key named `name` with `scopes`, expiring at `expires_at_us` if given.
    pub async fn create(
        &self,
        name: &str,
        scopes: &[Scope],
        expires_at_us: Option<i64>,
        now_us: i64,
    ) -> Result<NewKey, LogError> {
        validate_name(name).map_err(LogError::InvalidArgument)?;
        if scopes.is_empty() {
            return Err(LogError::InvalidArgument(
                "a key needs at least one scope".into(),
            ));
        }
        if expires_at_us.is_some_and(|e| e <= now_us) {
            return Err(LogError::InvalidArgument(
                "a key's expiry must be in the future".into(),
            ));
        }
        let pepper = self
            .pepper(true)
            .await?
            .ok_or_else(|| backend("the key-hashing key", "missing"))?;
        let id = uuid::Uuid::now_v7().simple().to_string();
        let mut raw = [0u8; 32];
        rand::fill(&mut raw[..]);
        let secret = URL_SAFE_NO_PAD.encode(raw);
        let hash = STANDARD.encode(Self::mac(&pepper, &secret)?.finalize().into_bytes());
        let record = KeyRecord {
            id: id.clone(),
            name: name.to_string(),
            scopes: scopes.iter().map(Scope::to_string).collect(),
            created_at_us: now_us,
            expires_at_us,
            revoked_at_us: None,
            hash,
        };
        let bytes = serde_json::to_vec(&record).map_err(|e| backend("encoding a key", e))?;
        self.state.put(NAMESPACE, &id, bytes).await?;
        Ok(NewKey {
            record,
            key: format!("{KEY_PREFIX}{id}_{secret}"),
        })
    }

    /// Every key, oldest first, revoked ones included.
    pub async fn list(&self) -> Result<Vec<KeyRecord>, LogError> {
        let mut out = Vec::new();
        for (_, v) in self.state.scan(NAMESPACE, "").await? {
            out.push(serde_json::from_slice(&v).map_err(|e| backend("decoding a key", e))?);
        }
        // Ids are UUIDv7: their order is their creation order.
        Ok(out)
    }

    /// Whether any key was ever made (revoked and expired ones included).
    pub async fn any_exists(&self) -> Result<bool, LogError> {
        Ok(!self.state.scan(NAMESPACE, "").await?.is_empty())
    }

    /// Makes the installation's hashing key now if it has none (at server start, so that
    /// keys made at once later share one).
    pub async fn prepare(&self) -> Result<(), LogError> {
        self.pepper(true).await.map(|_| ())
    }

    /// Whether any key that still works exists.
    pub async fn any_active(&self, now_us: i64) -> Result<bool, LogError> {
        Ok(self
            .list()
            .await?
            .iter()
            .any(|k| k.revoked_at_us.is_none() && k.expires_at_us.is_none_or(|e| e > now_us)))
    }

    /// Revokes key `id`; false if there is no such key. Revoking twice keeps the first
    /// time.
    pub async fn revoke(&self, id: &str, now_us: i64) -> Result<bool, LogError> {
        let Some(v) = self.state.get(NAMESPACE, id).await? else {
            return Ok(false);
        };
        let mut record: KeyRecord =
            serde_json::from_slice(&v).map_err(|e| backend("decoding a key", e))?;
        if record.revoked_at_us.is_none() {
            record.revoked_at_us = Some(now_us);
            let bytes = serde_json::to_vec(&record).map_err(|e| backend("encoding a key", e))?;
            self.state.put(NAMESPACE, id, bytes).await?;
        }
        Ok(true)
    }

    /// The record of key `id`, if there is one.
    pub async fn get(&self, id: &str) -> Result<Option<KeyRecord>, LogError> {
        match self.state.get(NAMESPACE, id).await? {
            Some(v) => Ok(Some(
                serde_json::from_slice(&v).map_err(|e| backend("decoding a key", e))?,
            )),
            None => Ok(None),
        }
    }

    /// The record of key `id` and its scopes, if it works at `now_us` (neither revoked nor
    /// expired); why not, if it does not.
    async fn usable(&self, id: &str, now_us: i64) -> Result<(KeyRecord, Vec<Scope>), AuthError> {
        let record = self
            .get(id)
            .await
            .map_err(|e| AuthError::Store(e.to_string()))?
            .ok_or(AuthError::Unknown)?;
        usable(record, now_us)
    }

    /// Whether key `id` still works at `now_us` (a live stream opened with it asks now and
    /// then): why not, if it does not.
    pub async fn still_valid(&self, id: &str, now_us: i64) -> Result<(), AuthError> {
        self.usable(id, now_us).await.map(|_| ())
    }

    /// The MAC of a stream token's fields, under the installation's key (kept apart from
    /// key hashes by its label).
    fn token_mac(
        pepper: &[u8],
        key_id: &str,
        expires_us: i64,
        topic: &str,
    ) -> Result<Hmac<Sha256>, LogError> {
        let mut mac = Hmac::<Sha256>::new_from_slice(pepper)
            .map_err(|e| backend("the key-hashing key", e))?;
        for part in [
            "crmbus stream token v1",
            key_id,
            &expires_us.to_string(),
            topic,
        ] {
            mac.update(part.as_bytes());
            mac.update(&[0]);
        }
        Ok(mac)
    }

    /// A token that opens `topic`'s live streams (SSE, WebSocket) as key `key_id` until
    /// `expires_us`: `crmbus-st.<key id>.<expiry µs>.<topic, base64url>.<MAC, base64url>`.
    /// It holds no secret of the key; the key must still work when the token is used.
    pub async fn stream_token(
        &self,
        key_id: &str,
        topic: &str,
        expires_us: i64,
    ) -> Result<String, LogError> {
        let pepper = self
            .pepper(true)
            .await?
            .ok_or_else(|| backend("the key-hashing key", "missing"))?;
        let mac = Self::token_mac(&pepper, key_id, expires_us, topic)?
            .finalize()
            .into_bytes();
        Ok(format!(
            "{STREAM_TOKEN_PREFIX}{key_id}.{expires_us}.{}.{}",
            URL_SAFE_NO_PAD.encode(topic),
            URL_SAFE_NO_PAD.encode(mac)
        ))
    }

    /// The record and scopes of the key behind a live-stream token for `topic`, or why
    /// it is refused (forged, another topic's, expired, or its key no longer works).
    pub async fn authenticate_stream_token(
        &self,
        token: &str,
        topic: &str,
        now_us: i64,
    ) -> Result<(KeyRecord, Vec<Scope>), AuthError> {
        let rest = token
            .strip_prefix(STREAM_TOKEN_PREFIX)
            .ok_or(AuthError::BadToken)?;
        let mut parts = rest.split('.');
        let (Some(key_id), Some(expires), Some(token_topic), Some(mac), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(AuthError::BadToken);
        };
        let expires_us: i64 = expires.parse().map_err(|_| AuthError::BadToken)?;
        let token_topic = URL_SAFE_NO_PAD
            .decode(token_topic)
            .ok()
            .and_then(|t| String::from_utf8(t).ok())
            .ok_or(AuthError::BadToken)?;
        let mac = URL_SAFE_NO_PAD
            .decode(mac)
            .map_err(|_| AuthError::BadToken)?;
        let store = |e: LogError| AuthError::Store(e.to_string());
        let pepper = self
            .pepper(false)
            .await
            .map_err(store)?
            .ok_or(AuthError::BadToken)?;
        Self::token_mac(&pepper, key_id, expires_us, &token_topic)
            .map_err(store)?
            .verify_slice(&mac)
            .map_err(|_| AuthError::BadToken)?;
        if token_topic != topic {
            return Err(AuthError::BadToken);
        }
        if expires_us <= now_us {
            return Err(AuthError::TokenExpired);
        }
        self.usable(key_id, now_us).await
    }

    /// The record and scopes of a presented key, or why it is refused.
    pub async fn authenticate(
        &self,
        key: &str,
        now_us: i64,
    ) -> Result<(KeyRecord, Vec<Scope>), AuthError> {
        let (id, secret) = parse_key(key).ok_or(AuthError::Malformed)?;
        let store = |e: LogError| AuthError::Store(e.to_string());
        let v = self
            .state
            .get(NAMESPACE, id)
            .await
            .map_err(store)?
            .ok_or(AuthError::Unknown)?;
        let record: KeyRecord =
            serde_json::from_slice(&v).map_err(|e| AuthError::Store(e.to_string()))?;
        let pepper = self
            .pepper(false)
            .await
            .map_err(store)?
            .ok_or(AuthError::Unknown)?;
        let stored = STANDARD
            .decode(&record.hash)
            .map_err(|_| AuthError::Unknown)?;
        Self::mac(&pepper, secret)
            .map_err(store)?
            .verify_slice(&stored)
            .map_err(|_| AuthError::Unknown)?;
        usable(record, now_us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crmbus::MemoryStateStore;

    fn store() -> KeyStore {
        KeyStore::new(Arc::new(MemoryStateStore::new()))
    }

    fn scopes(list: &[&str]) -> Vec<Scope> {
        list.iter().map(|s| s.parse().expect("scope")).collect()
    }

    #[tokio::test]
    async fn a_key_is_shown_once_stored_hashed_and_authenticates() {
        let keys = store();
        assert!(!keys.any_active(0).await.expect("any"));
        let made = keys
            .create(
                "erp-sync",
                &scopes(&["publish:deals", "subscribe:deal*"]),
                None,
                10,
            )
            .await
            .expect("created");
        assert!(made.key.starts_with("crmbus_"), "{}", made.key);
        let listed = keys.list().await.expect("list");
        assert_eq!(listed, vec![made.record.clone()]);
        let stored = serde_json::to_string(&listed).expect("json");
        // The secret is base64url, which may itself hold `_`: split as the server does.
        let (_, secret) = parse_key(&made.key).expect("parts");
        assert!(secret.len() >= 43, "{secret}");
        assert!(!stored.contains(secret), "the secret is never stored");
        let (record, granted) = keys.authenticate(&made.key, 20).await.expect("valid");
        assert_eq!(record.name, "erp-sync");
        assert_eq!(granted, scopes(&["publish:deals", "subscribe:deal*"]));
        assert!(keys.any_active(20).await.expect("any"));
    }

    #[tokio::test]
    async fn wrong_revoked_expired_and_malformed_keys_are_refused() {
        let keys = store();
        let a = keys
            .create("a", &scopes(&["admin"]), Some(1_000), 10)
            .await
            .expect("a");
        let b = keys
            .create("b", &scopes(&["admin"]), None, 10)
            .await
            .expect("b");
        // The right id with another key's secret.
        let (_, secret_b) = parse_key(&b.key).expect("parts");
        let forged = format!("{KEY_PREFIX}{}_{secret_b}", a.record.id);
        assert_eq!(
            keys.authenticate(&forged, 20).await,
            Err(AuthError::Unknown)
        );
        assert_eq!(
            keys.authenticate("crmbus_nope", 20).await,
            Err(AuthError::Malformed)
        );
        assert_eq!(
            keys.authenticate("hunter2", 20).await,
            Err(AuthError::Malformed)
        );
        let unknown = format!("{KEY_PREFIX}{}_{secret_b}", "0".repeat(32));
        assert_eq!(
            keys.authenticate(&unknown, 20).await,
            Err(AuthError::Unknown)
        );
        assert_eq!(
            keys.authenticate(&a.key, 1_000).await.map(|_| ()),
            Err(AuthError::Expired)
        );
        assert!(keys.revoke(&b.record.id, 30).await.expect("revoke"));
        assert_eq!(
            keys.authenticate(&b.key, 40).await.map(|_| ()),
            Err(AuthError::Revoked)
        );
        assert!(!keys.revoke("no-such-id", 30).await.expect("revoke"));
        assert!(
            !keys.any_active(2_000).await.expect("any"),
            "one expired, one revoked"
        );
    }

    #[tokio::test]
    async fn bad_names_scopes_and_expiries_are_refused() {
        let keys = store();
        let admin = scopes(&["admin"]);
        assert!(keys.create("", &admin, None, 0).await.is_err());
        assert!(keys.create("has space", &admin, None, 0).await.is_err());
        assert!(keys.create("ok", &[], None, 0).await.is_err());
        assert!(keys.create("ok", &admin, Some(5), 10).await.is_err());
        assert!(keys.list().await.expect("list").is_empty());
    }
}
