//! When requests need a key: the server's [`Auth`] (its key store, its `[auth] mode`, and
//! a memory of whether any key exists, so that a publish does not read the key list).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crmbus::sync::LockExt;
use crmbus::Clock;

use super::keys::KeyStore;
use crate::config::AuthMode;
use crate::problem::ApiError;

/// How long the answer to "does any key exist?" is reused.
const EXISTS_FOR: Duration = Duration::from_secs(1);

/// The remembered answer of [`Auth::required`].
#[derive(Default)]
struct Remembered {
    /// Whether a key existed, and when that was read.
    answer: Option<(Instant, bool)>,
    /// Bumped by every change here: a read that began before a change is not kept.
    generation: u64,
}

/// The server's keys and when they are needed.
pub struct Auth {
    /// The key store.
    pub keys: KeyStore,
    mode: AuthMode,
    clock: Arc<dyn Clock>,
    remembered: Mutex<Remembered>,
    /// Held while a key is made without one (the first key): two such requests at once
    /// make one key, not two.
    pub bootstrap: tokio::sync::Mutex<()>,
    /// Bumped when a key is revoked here: live streams check their key at once (those
    /// on other servers check within `[auth] stream_recheck_ms`).
    revocations: tokio::sync::watch::Sender<u64>,
}

impl Auth {
    /// The check of a server in `mode` over `keys`.
    pub fn new(keys: KeyStore, mode: AuthMode, clock: Arc<dyn Clock>) -> Auth {
        Auth {
            keys,
            mode,
            clock,
            remembered: Mutex::new(Remembered::default()),
            bootstrap: tokio::sync::Mutex::new(()),
            revocations: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Tells the live streams of this server that a key was revoked.
    pub fn revoked(&self) {
        self.revocations.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// What a live stream watches to learn of revocations on this server.
    pub fn revocations(&self) -> tokio::sync::watch::Receiver<u64> {
        self.revocations.subscribe()
    }

    /// The `[auth] mode` the server runs with.
    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// Whether requests need a key now. In `auto` mode: once any key was ever made —
    /// revoked and expired ones count, so revoking or outliving the last key never opens
    /// the server again.
    pub async fn required(&self) -> Result<bool, ApiError> {
        match self.mode {
            AuthMode::None => return Ok(false),
            AuthMode::Keys => return Ok(true),
            AuthMode::Auto => {}
        }
        let generation = {
            let r = self.remembered.locked();
            if let Some((at, exists)) = r.answer {
                // Once keys exist they always will: no need to read again.
                if exists || at.elapsed() < EXISTS_FOR {
                    return Ok(exists);
                }
            }
            r.generation
        };
        let exists = self.keys.any_exists().await?;
        let mut r = self.remembered.locked();
        if r.generation == generation {
            r.answer = Some((Instant::now(), exists));
        }
        Ok(exists)
    }

    /// Forgets the remembered answer of [`Auth::required`] (a key was made here).
    pub fn changed(&self) {
        let mut r = self.remembered.locked();
        r.answer = None;
        r.generation += 1;
    }

    /// The clock keys expire by.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }
}
