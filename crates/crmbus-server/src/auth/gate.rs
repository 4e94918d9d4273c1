//! When requests need a key: the server's [`Auth`] (its key store, its `[auth] mode`, and
//! a short-lived memory of whether a working key exists, so that a publish does not
//! read the key list).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crmbus::sync::LockExt;
use crmbus::Clock;

use super::keys::KeyStore;
use crate::config::AuthMode;
use crate::problem::ApiError;

/// How long the answer to "does a working key exist?" is reused.
const ACTIVE_FOR: Duration = Duration::from_secs(1);

/// The server's keys and when they are needed.
pub struct Auth {
    /// The key store.
    pub keys: KeyStore,
    mode: AuthMode,
    clock: Arc<dyn Clock>,
    /// Whether a working key exists, as last read, and when.
    active: Mutex<Option<(Instant, bool)>>,
}

impl Auth {
    /// The check of a server in `mode` over `keys`.
    pub fn new(keys: KeyStore, mode: AuthMode, clock: Arc<dyn Clock>) -> Auth {
        Auth {
            keys,
            mode,
            clock,
            active: Mutex::new(None),
        }
    }

    /// Whether requests need a key now.
    pub async fn required(&self) -> Result<bool, ApiError> {
        match self.mode {
            AuthMode::None => return Ok(false),
            AuthMode::Keys => return Ok(true),
            AuthMode::Auto => {}
        }
        if let Some((at, active)) = *self.active.locked() {
            if at.elapsed() < ACTIVE_FOR {
                return Ok(active);
            }
        }
        let active = self.keys.any_active(self.clock.now_micros()).await?;
        *self.active.locked() = Some((Instant::now(), active));
        Ok(active)
    }

    /// Forgets the cached answer of [`Auth::required`] (a key was made or revoked here).
    pub fn changed(&self) {
        *self.active.locked() = None;
    }

    /// The clock keys expire by.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }
}
