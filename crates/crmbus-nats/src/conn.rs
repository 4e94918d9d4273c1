//! The connection shared by the log, the state store and group consumers: the options a
//! namespace is opened with ([`NatsOptions`]), the handle they share ([`Conn`]), and the
//! helpers that turn async-nats errors into [`LogError`]s.

use std::fmt::Display;
use std::time::Duration;

use async_nats::jetstream;
use crmbus::{LogError, DEFAULT_DEDUPE_WINDOW};

use crate::naming;

/// Options of a [`NatsLog`](crate::NatsLog).
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// Producer dedupe window: the `duplicate_window` of every partition stream (capped by
    /// the topic's `max_age`). Zero turns producer dedupe off: no `Nats-Msg-Id` is sent.
    pub dedupe_window: Duration,
}

impl Default for NatsOptions {
    fn default() -> Self {
        NatsOptions {
            dedupe_window: DEFAULT_DEDUPE_WINDOW,
        }
    }
}

/// A connected JetStream context and the namespace it works in.
#[derive(Clone)]
pub(crate) struct Conn {
    pub url: String,
    pub prefix: String,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
}

impl Conn {
    /// Connects to `url` and checks that JetStream answers.
    pub async fn connect(url: &str, prefix: &str) -> Result<Conn, LogError> {
        naming::validate_prefix(prefix)?;
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .name(format!("crmbus-nats/{prefix}"))
            .connect(url)
            .await
            .map_err(|e| LogError::Unavailable(format!("cannot connect to NATS at {url}: {e}")))?;
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(10))
            .build(client.clone());
        account_info(&client).await.map_err(|e| {
            LogError::Unavailable(format!(
                "NATS at {url} does not answer JetStream requests (is JetStream enabled?): {e}"
            ))
        })?;
        Ok(Conn {
            url: url.to_string(),
            prefix: prefix.to_string(),
            client,
            js,
        })
    }

    /// Opens a KV bucket, creating it (file storage, one value per key) if missing.
    ///
    /// The bucket's stream is created here with the KV conventions (`KV_<bucket>`, subjects
    /// `$KV.<bucket>.>`, one message per subject, rollups allowed, direct gets) rather than
    /// by async-nats's `create_key_value`, which first reads account fields that 2.9
    /// servers do not send.
    pub async fn bucket(&self, name: &str, what: &str) -> Result<jetstream::kv::Store, LogError> {
        if let Ok(store) = self.js.get_key_value(name).await {
            return Ok(store);
        }
        let config = jetstream::stream::Config {
            name: format!("KV_{name}"),
            description: Some(format!("crmbus {what} (namespace {})", self.prefix)),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            max_messages: -1,
            max_bytes: -1,
            max_message_size: -1,
            max_consumers: -1,
            storage: jetstream::stream::StorageType::File,
            num_replicas: 1,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: jetstream::stream::DiscardPolicy::New,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        };
        self.js
            .get_or_create_stream(config)
            .await
            .map_err(|e| backend(&format!("creating KV bucket {name}"), e))?;
        self.js
            .get_key_value(name)
            .await
            .map_err(|e| backend(&format!("opening KV bucket {name}"), e))
    }
}

/// A backend error naming what was being done.
pub(crate) fn backend(what: &str, e: impl Display) -> LogError {
    LogError::backend(format!("NATS: {what}: {e}"))
}

/// The JetStream account info (`$JS.API.INFO`) as JSON; an error if JetStream does not
/// answer or answers with an error. Read as plain JSON: its shape varies across server
/// versions.
pub(crate) async fn account_info(client: &async_nats::Client) -> Result<serde_json::Value, String> {
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        client.request("$JS.API.INFO", bytes::Bytes::new()),
    )
    .await
    .map_err(|_| "no answer within 5s".to_string())?
    .map_err(|e| e.to_string())?;
    let v: serde_json::Value =
        serde_json::from_slice(&reply.payload).map_err(|e| format!("bad answer: {e}"))?;
    if let Some(err) = v.get("error") {
        return Err(err.to_string());
    }
    Ok(v)
}

/// The longest a no-wait fetch may stay open on the server: it normally answers at once,
/// but a server may hold a no-wait request (for instance while acknowledgements are
/// pending), and a fetch must not hang.
pub(crate) const FETCH_EXPIRES: Duration = Duration::from_secs(1);
