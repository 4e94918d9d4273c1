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
        let what = format!("creating KV bucket {name}");
        riding_over_store_races(&what, || self.js.get_or_create_stream(config.clone())).await?;
        self.js
            .get_key_value(name)
            .await
            .map_err(|e| backend(&format!("opening KV bucket {name}"), e))
    }
}

/// How many times a stream creation that the server failed in its store is made in all.
const STORE_CREATE_ATTEMPTS: u32 = 10;

/// Runs `create` (a stream creation) again while the server answers that it could not
/// create the stream's store, waiting 25 ms more each time, up to [`STORE_CREATE_ATTEMPTS`]
/// in all; any other error, or the last, is returned as a backend error naming `what`.
///
/// The server answers so (500, error code 10049, "error creating store for stream") for
/// failures it writes only to its own log. One is a race inside it: when an account's last
/// stream is deleted it removes the account's `streams` directory, and a stream created at
/// that moment cannot make its own (`mkdir …/streams: no such file or directory`). A failed
/// creation leaves nothing behind, so making it again is safe.
pub(crate) async fn riding_over_store_races<T, F, Fut>(
    what: &str,
    mut create: F,
) -> Result<T, LogError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, jetstream::context::CreateStreamError>>,
{
    let mut attempt = 1;
    loop {
        match create().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < STORE_CREATE_ATTEMPTS && is_store_failure(&e) => {
                tracing::debug!(attempt, error = %e, "{what}: the server failed to create the store; trying again");
                tokio::time::sleep(Duration::from_millis(25 * u64::from(attempt))).await;
                attempt += 1;
            }
            Err(e) => return Err(backend(what, e)),
        }
    }
}

/// Whether a stream creation failed in the server's store (see [`riding_over_store_races`]).
fn is_store_failure(e: &jetstream::context::CreateStreamError) -> bool {
    match e.kind() {
        jetstream::context::CreateStreamErrorKind::JetStream(j) => {
            j.code() == 500
                && j.error_code() == jetstream::ErrorCode::STREAM_CREATE
                && j.to_string().contains("error creating store")
        }
        _ => false,
    }
}

/// The keys of KV bucket `store`, from the subjects of its stream in one (paged) request;
/// `what` names the listing in errors. A key deleted or purged keeps its marker, so it is
/// listed too: read its entry when that matters.
///
/// Not `Store::keys`, which lists through a consumer: on NATS 2.9 such a listing could
/// wait forever when a key was rewritten while its consumer started (the consumer's
/// pending count stayed above zero), and it waited for the consumer's idle heartbeat (5 s)
/// whenever the bucket was written meanwhile.
pub(crate) async fn bucket_keys(
    store: &jetstream::kv::Store,
    what: &str,
) -> Result<std::collections::BTreeSet<String>, LogError> {
    use futures_util::TryStreamExt;
    let mut subjects = store
        .stream
        .info_with_subjects(format!("{}>", store.prefix))
        .await
        .map_err(|e| backend(what, e))?;
    let mut keys = std::collections::BTreeSet::new();
    while let Some((subject, _)) = subjects.try_next().await.map_err(|e| backend(what, e))? {
        if let Some(key) = subject.strip_prefix(store.prefix.as_str()) {
            keys.insert(key.to_string());
        }
    }
    Ok(keys)
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
