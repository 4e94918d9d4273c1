//! [`NatsStateStore`]: the delivery engine's [`StateStore`] on a JetStream KV bucket, with a
//! journal stream that makes a multi-key batch atomic.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use async_trait::async_trait;
use crmbus::{LogError, StateOp, StateStore};
use futures_util::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::conn::{backend, riding_over_store_races, Conn};
use crate::lease::NatsLeaseStore;
use crate::naming;

/// Room kept for headers below the server's `max_payload` when journaling a batch.
const HEADER_ROOM: usize = 512;
/// How many KV writes of one batch are in flight at once.
const WRITE_CONCURRENCY: usize = 32;
/// Entries fetched per request by a scan.
const SCAN_BATCH: usize = 1000;

/// One change as journaled: a UTF-8 value in `s`, any other value in hex in `h`, neither
/// for a delete.
#[derive(Debug, Serialize, Deserialize)]
struct JournalOp {
    ns: String,
    key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    s: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    h: Option<String>,
}

impl JournalOp {
    fn new(ns: &str, key: &str, value: Option<&[u8]>) -> JournalOp {
        let (s, h) = match value {
            None => (None, None),
            Some(v) => match std::str::from_utf8(v) {
                Ok(text) => (Some(text.to_string()), None),
                Err(_) => (None, Some(v.iter().map(|b| format!("{b:02x}")).collect())),
            },
        };
        JournalOp {
            ns: ns.to_string(),
            key: key.to_string(),
            s,
            h,
        }
    }

    fn value(&self) -> Result<Option<Vec<u8>>, LogError> {
        if let Some(s) = &self.s {
            return Ok(Some(s.as_bytes().to_vec()));
        }
        let Some(h) = &self.h else { return Ok(None) };
        let bytes = (0..h.len())
            .step_by(2)
            .map(|i| {
                h.get(i..i + 2)
                    .and_then(|x| u8::from_str_radix(x, 16).ok())
                    .ok_or_else(|| backend("decoding a journal entry", "bad hex value"))
            })
            .collect::<Result<Vec<u8>, LogError>>()?;
        Ok(Some(bytes))
    }
}

/// The crmbus [`StateStore`] on NATS JetStream.
///
/// Entries live in the KV bucket `<prefix>_state`, one KV key per (namespace, key):
/// `<namespace>.<key>`, each part escaped (`A–Z a–z 0–9 _ - /` kept, any other byte as
/// `=XX`, the empty string as `=`).
///
/// **Atomic batches.** JetStream 2.9 has no multi-key transaction, so a batch of more than
/// one key is first written whole as one message to the journal stream `<prefix>-journal`
/// (one message is stored or not: that is the commit point), then applied to the KV keys,
/// then the journal message is deleted. A crash after the journal write leaves the batch
/// in the journal; the next [`NatsStateStore::open`] (or the next call of this store, if a
/// write failed) applies it again before anything else — the writes are idempotent, so
/// the batch ends up whole. A crash before the journal write leaves none of it. A batch of
/// one key is a single KV write.
///
/// Within one process, reads do not see a batch half applied (an async read-write lock).
/// Two processes writing the same keys at once are each atomic but not isolated from each
/// other. Servers sharing a namespace never do: each group partition's state is written by
/// the one server holding its lease, fenced with [`StateStore::apply_fenced`] (the lease is
/// checked, then the batch written: see [`crate::NatsLeaseStore`]).
pub struct NatsStateStore {
    conn: Conn,
    kv: jetstream::kv::Store,
    journal: stream::Stream,
    lock: tokio::sync::RwLock<()>,
    /// A journaled batch may not have been applied fully (a write failed).
    needs_replay: AtomicBool,
    /// The namespace's leases (fenced batches check them first).
    leases: NatsLeaseStore,
}

impl NatsStateStore {
    /// Connects to `url` and opens (creating if needed) the state store of namespace
    /// `prefix`, applying any batch a crash left in the journal.
    pub async fn open(url: &str, prefix: &str) -> Result<NatsStateStore, LogError> {
        let conn = Conn::connect(url, prefix).await?;
        Self::with_conn(conn).await
    }

    pub(crate) async fn with_conn(conn: Conn) -> Result<NatsStateStore, LogError> {
        let kv = conn
            .bucket(&naming::state_bucket(&conn.prefix), "delivery state")
            .await?;
        let name = naming::journal_stream(&conn.prefix);
        let config = stream::Config {
            name: name.clone(),
            description: Some("crmbus state-store batches not yet applied".into()),
            subjects: vec![naming::journal_subject(&conn.prefix)],
            storage: stream::StorageType::File,
            num_replicas: 1,
            allow_direct: true,
            max_messages: -1,
            max_bytes: -1,
            ..Default::default()
        };
        let journal =
            riding_over_store_races(&format!("opening the journal stream {name}"), || {
                conn.js.get_or_create_stream(config.clone())
            })
            .await?;
        let leases = NatsLeaseStore::open(&conn).await?;
        let store = NatsStateStore {
            conn,
            kv,
            journal,
            lock: tokio::sync::RwLock::new(()),
            needs_replay: AtomicBool::new(true),
            leases,
        };
        {
            let _w = store.lock.write().await;
            store.replay().await?;
        }
        Ok(store)
    }

    /// Applies every batch left in the journal, oldest first, and removes it.
    async fn replay(&self) -> Result<(), LogError> {
        if !self.needs_replay.load(Ordering::Acquire) {
            return Ok(());
        }
        let state = self
            .conn
            .js
            .get_stream(naming::journal_stream(&self.conn.prefix))
            .await
            .map_err(|e| backend("reading the journal", e))?
            .cached_info()
            .state
            .clone();
        if state.messages > 0 {
            for seq in state.first_sequence..=state.last_sequence {
                let msg = match self.journal.direct_get(seq).await {
                    Ok(m) => m,
                    Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => continue,
                    Err(e) => return Err(backend("reading the journal", e)),
                };
                let ops: Vec<JournalOp> = serde_json::from_slice(&msg.payload)
                    .map_err(|e| backend("decoding a journal entry", e))?;
                tracing::info!(
                    seq,
                    ops = ops.len(),
                    "applying a state batch left in the journal"
                );
                self.write(&ops).await?;
                self.forget(seq).await?;
            }
        }
        self.needs_replay.store(false, Ordering::Release);
        Ok(())
    }

    async fn forget(&self, seq: u64) -> Result<(), LogError> {
        match self.journal.delete_message(seq).await {
            Ok(_) => Ok(()),
            Err(e) => match e.kind() {
                stream::DeleteMessageErrorKind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::SEQUENCE_NOT_FOUND =>
                {
                    Ok(())
                }
                _ => {
                    // Another server sharing the namespace may have applied and removed
                    // it first (each replays what it finds): gone is what was wanted.
                    match self.journal.direct_get(seq).await {
                        Err(g) if g.kind() == stream::DirectGetErrorKind::NotFound => Ok(()),
                        _ => Err(backend("removing an applied journal entry", e)),
                    }
                }
            },
        }
    }

    /// Writes ops (at most one per key) to the KV bucket.
    async fn write(&self, ops: &[JournalOp]) -> Result<(), LogError> {
        let writes: Vec<_> = ops.iter().map(|op| self.write_one(op)).collect();
        futures_util::stream::iter(writes)
            .buffer_unordered(WRITE_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await
            .map(|_| ())
    }

    async fn write_one(&self, op: &JournalOp) -> Result<(), LogError> {
        let key = naming::state_key(&op.ns, &op.key);
        match op.value()? {
            Some(v) => self
                .kv
                .put(&key, v.into())
                .await
                .map(|_| ())
                .map_err(|e| backend("writing state", e)),
            None => self
                .kv
                .delete(&key)
                .await
                .map_err(|e| backend("deleting state", e)),
        }
    }

    async fn read_guard(&self) -> Result<tokio::sync::RwLockReadGuard<'_, ()>, LogError> {
        if self.needs_replay.load(Ordering::Acquire) {
            let _w = self.lock.write().await;
            self.replay().await?;
        }
        Ok(self.lock.read().await)
    }
}

fn is_deleted(headers: Option<&async_nats::HeaderMap>) -> bool {
    headers
        .and_then(|h| h.get("KV-Operation"))
        .is_some_and(|v| matches!(v.as_str(), "DEL" | "PURGE"))
}

#[async_trait]
impl StateStore for NatsStateStore {
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, LogError> {
        let _r = self.read_guard().await?;
        self.kv
            .get(naming::state_key(namespace, key))
            .await
            .map(|v| v.map(|b| b.to_vec()))
            .map_err(|e| backend("reading state", e))
    }

    async fn scan(
        &self,
        namespace: &str,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, LogError> {
        let _r = self.read_guard().await?;
        let bucket = naming::state_bucket(&self.conn.prefix);
        let subject_prefix = format!("$KV.{bucket}.{}.", naming::key_part(namespace));
        let kv_stream = self
            .conn
            .js
            .get_stream(format!("KV_{bucket}"))
            .await
            .map_err(|e| backend("opening the state bucket", e))?;
        if kv_stream.cached_info().state.messages == 0 {
            return Ok(Vec::new());
        }
        // The newest value of every key of the namespace, read by an ephemeral consumer.
        let consumer = kv_stream
            .create_consumer(consumer::pull::Config {
                filter_subject: format!("{subject_prefix}>"),
                deliver_policy: consumer::DeliverPolicy::LastPerSubject,
                ack_policy: consumer::AckPolicy::None,
                memory_storage: true,
                inactive_threshold: Duration::from_secs(30),
                description: Some("crmbus state scan".into()),
                ..Default::default()
            })
            .await
            .map_err(|e| backend("creating a scan consumer", e))?;
        let result = async {
            let mut out = BTreeMap::new();
            let mut left = consumer.cached_info().num_pending;
            while left > 0 {
                let mut batch = consumer
                    .fetch()
                    .max_messages(SCAN_BATCH)
                    .expires(crate::conn::FETCH_EXPIRES)
                    .messages()
                    .await
                    .map_err(|e| backend("scanning state", e))?;
                let mut got = 0;
                while let Some(m) = batch.next().await {
                    let m = m.map_err(|e| backend("scanning state", e))?;
                    got += 1;
                    left = m
                        .info()
                        .map_err(|e| backend("reading message info", e))?
                        .pending;
                    let Some(key) = m
                        .subject
                        .as_str()
                        .strip_prefix(&subject_prefix)
                        .and_then(naming::decode_key_part)
                    else {
                        continue;
                    };
                    if !key.starts_with(prefix) {
                        continue;
                    }
                    if is_deleted(m.headers.as_ref()) {
                        out.remove(&key);
                    } else {
                        out.insert(key, m.payload.to_vec());
                    }
                }
                if got == 0 {
                    break;
                }
            }
            Ok(out.into_iter().collect())
        }
        .await;
        let name = consumer.cached_info().name.clone();
        let _ = kv_stream.delete_consumer(&name).await;
        result
    }

    async fn apply_fenced(
        &self,
        fences: &[crmbus::cluster::Fence],
        ops: Vec<StateOp>,
    ) -> Result<(), LogError> {
        // Checked, then written (see the lease module: NATS 2.9 has no conditional write
        // across subjects).
        self.leases.check(fences).await?;
        self.apply(ops).await
    }

    fn leases(&self) -> Option<std::sync::Arc<dyn crmbus::cluster::LeaseStore>> {
        Some(std::sync::Arc::new(self.leases.clone()))
    }

    async fn apply(&self, ops: Vec<StateOp>) -> Result<(), LogError> {
        if ops.is_empty() {
            return Ok(());
        }
        let _w = self.lock.write().await;
        self.replay().await?;
        // The last change of each key is what the batch leaves behind.
        let mut last: BTreeMap<(String, String), Option<Vec<u8>>> = BTreeMap::new();
        for op in ops {
            match op {
                StateOp::Put {
                    namespace,
                    key,
                    value,
                } => last.insert((namespace, key), Some(value)),
                StateOp::Delete { namespace, key } => last.insert((namespace, key), None),
            };
        }
        let journal: Vec<JournalOp> = last
            .iter()
            .map(|((ns, k), v)| JournalOp::new(ns, k, v.as_deref()))
            .collect();
        if journal.len() == 1 {
            return self.write(&journal).await;
        }
        let payload =
            serde_json::to_vec(&journal).map_err(|e| backend("encoding a state batch", e))?;
        let max = self.conn.client.server_info().max_payload;
        if payload.len() + HEADER_ROOM > max {
            return Err(LogError::InvalidArgument(format!(
                "a state batch of {} changes is {} bytes; the NATS server accepts {} bytes per message",
                journal.len(),
                payload.len(),
                max.saturating_sub(HEADER_ROOM)
            )));
        }
        let ack = self
            .conn
            .js
            .publish(naming::journal_subject(&self.conn.prefix), payload.into())
            .await
            .map_err(|e| backend("journaling a state batch", e))?
            .await
            .map_err(|e| backend("journaling a state batch", e))?;
        // From here on the batch is committed: if applying it fails, it is applied again
        // before anything else is read or written.
        self.needs_replay.store(true, Ordering::Release);
        self.write(&journal).await?;
        self.forget(ack.sequence).await?;
        self.needs_replay.store(false, Ordering::Release);
        Ok(())
    }
}
