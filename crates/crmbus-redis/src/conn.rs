//! The connection shared by the log, the state store and group consumers: how to reach
//! the server ([`RedisOptions`]), the handle they share ([`Conn`]), and a URL fit to show.

use std::time::Duration;

use crmbus::{LogError, DEFAULT_DEDUPE_WINDOW};
use redis::aio::ConnectionManager;

use crate::conv::redis_err;
use crate::naming;
use crate::scripts::Scripts;

/// How a [`RedisLog`](crate::RedisLog) connects and behaves.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// How long an appended `source` + `id` is remembered for producer dedupe
    /// (`Duration::ZERO` turns dedupe across calls off; duplicates inside one call are
    /// still folded).
    pub dedupe_window: Duration,
    /// How long to wait for a reply before the call fails with
    /// [`LogError::Unavailable`]. Large batches run as one script, so keep this generous.
    pub response_timeout: Duration,
    /// How long to wait for a connection to be established.
    pub connect_timeout: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            dedupe_window: DEFAULT_DEDUPE_WINDOW,
            response_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// What every handle on one namespace shares: the connection (which reconnects on its own
/// after a network failure), the scripts, the names.
pub(crate) struct Conn {
    manager: ConnectionManager,
    pub(crate) prefix: String,
    /// The server URL without its password, for error messages.
    pub(crate) url: String,
    pub(crate) scripts: Scripts,
}

impl Conn {
    /// Checks `prefix`, then connects to `url` with `opts`.
    pub(crate) async fn connect(
        url: &str,
        prefix: &str,
        opts: &RedisOptions,
    ) -> Result<Conn, LogError> {
        naming::validate_prefix(prefix)?;
        let (manager, shown) = connect(url, opts).await?;
        Ok(Conn {
            manager,
            prefix: prefix.to_string(),
            url: shown,
            scripts: Scripts::new(),
        })
    }

    /// A Redis error as a [`LogError`] naming this server.
    pub(crate) fn err(&self, e: redis::RedisError) -> LogError {
        redis_err(&self.url, e)
    }

    /// A handle on the shared connection (cheap: clones share one connection).
    pub(crate) fn manager(&self) -> ConnectionManager {
        self.manager.clone()
    }
}

/// Connects to `url` with `opts` and checks that the server answers; returns the
/// connection and the URL without its password. An unreachable server is
/// [`LogError::Unavailable`] naming the URL.
pub(crate) async fn connect(
    url: &str,
    opts: &RedisOptions,
) -> Result<(ConnectionManager, String), LogError> {
    let shown = redact_url(url);
    let client = redis::Client::open(url)
        .map_err(|e| LogError::InvalidArgument(format!("redis URL '{shown}': {e}")))?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(opts.connect_timeout))
        .set_response_timeout(Some(opts.response_timeout))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2));
    let mut conn = client
        .get_connection_manager_with_config(config)
        .await
        .map_err(|e| LogError::Unavailable(format!("cannot connect to redis at {shown}: {e}")))?;
    let _: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .map_err(|e| LogError::Unavailable(format!("redis at {shown} does not answer: {e}")))?;
    Ok((conn, shown))
}

/// A Redis URL without its password, for error messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}:***@{}", &url[..scheme_end + 3], user, &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("redis://user:secret@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }
}
