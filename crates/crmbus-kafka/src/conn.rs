//! The connection to the brokers: options, the librdkafka client settings crmbus uses, the
//! admin client, the idempotent producer, a pool of reader consumers, and how Kafka's
//! errors become [`LogError`]s.

use std::sync::Mutex;
use std::time::Duration;

use crmbus::sync::LockExt;
use crmbus::LogError;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;
use rdkafka::ClientContext;
use tokio::sync::Semaphore;

/// Settings of a [`crate::KafkaLog`] beyond the brokers' address.
#[derive(Debug, Clone)]
pub struct KafkaOptions {
    /// How long a (`source`, `id`) is remembered for producer dedupe
    /// ([`crmbus::DEFAULT_DEDUPE_WINDOW`] unless set); zero turns dedupe off.
    pub dedupe_window: Duration,
    /// The largest event, as its JSON, the log accepts (the brokers' `message.max.bytes`
    /// must allow it; Kafka's default is about 1 MB).
    pub max_event_bytes: usize,
    /// How long one broker request (metadata, a read, a delivery) may take before the call
    /// fails.
    pub request_timeout: Duration,
    /// How many reads run at once (each uses one pooled consumer).
    pub readers: usize,
    /// How often the log applies its topics' retention and prunes the dedupe index in the
    /// background (`None`: only when [`crmbus::EventLog::enforce_retention`] is called).
    pub retention_interval: Option<Duration>,
    /// Further librdkafka settings for every client (for example `security.protocol`,
    /// `sasl.mechanism`, `sasl.username`, `sasl.password`, `ssl.ca.location`, or tuning
    /// such as `linger.ms`). The settings crmbus's guarantees rest on
    /// ([`RESERVED_SETTINGS`]) are refused.
    pub client_settings: Vec<(String, String)>,
}

impl Default for KafkaOptions {
    fn default() -> Self {
        KafkaOptions {
            dedupe_window: crmbus::DEFAULT_DEDUPE_WINDOW,
            max_event_bytes: 1_000_000,
            request_timeout: Duration::from_secs(30),
            readers: 8,
            retention_interval: Some(Duration::from_secs(60)),
            client_settings: Vec::new(),
        }
    }
}

/// librdkafka settings [`KafkaOptions::client_settings`] may not change: the brokers'
/// address is given on its own, and the others are what crmbus's ordering, dedupe,
/// reads and group commits depend on.
pub const RESERVED_SETTINGS: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "max.in.flight.requests.per.connection",
    "max.in.flight",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "enable.partition.eof",
    "check.crcs",
    "partitioner",
];

/// A failure talking to the brokers, as a [`LogError`]: transport trouble is
/// `Unavailable`, anything else a backend error naming what was being done.
pub(crate) fn kafka_err(what: &str, e: KafkaError) -> LogError {
    let transport = matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::MessageTimedOut
                | RDKafkaErrorCode::BrokerNotAvailable
        )
    );
    if transport {
        LogError::Unavailable(format!("Kafka, {what}: {e}"))
    } else {
        LogError::Backend {
            message: format!("Kafka, {what}: {e}"),
            source: Some(Box::new(e)),
        }
    }
}

/// A blocking task that failed to finish (it panicked or the runtime is going away).
pub(crate) fn join_err(what: &str, e: tokio::task::JoinError) -> LogError {
    LogError::Backend {
        message: format!("Kafka, {what}: the task did not finish ({e})"),
        source: None,
    }
}

/// What every client of one log shares.
pub(crate) struct Conn {
    /// The brokers (`host:port,host:port`).
    pub bootstrap: String,
    /// The namespace prefix.
    pub prefix: String,
    pub opts: KafkaOptions,
    pub admin: AdminClient<DefaultClientContext>,
    pub producer: FutureProducer,
    readers: Readers,
}

/// The context of reader consumers: reaching the end of a partition is how every read
/// ends, not an error, whichever queue librdkafka reports it on; other client errors go to
/// the log as warnings (librdkafka retries them itself).
pub(crate) struct ReaderContext;

impl ClientContext for ReaderContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF)
        {
            return;
        }
        tracing::warn!(%error, reason, "Kafka reader");
    }
}

impl ConsumerContext for ReaderContext {}

/// A consumer kept for reads.
pub(crate) type Reader = BaseConsumer<ReaderContext>;

/// Consumers kept for reads: assigned one partition at a time, never in a group.
struct Readers {
    idle: Mutex<Vec<Reader>>,
    permits: Semaphore,
}

impl Conn {
    /// Connects to `bootstrap` and checks that a broker answers within the request
    /// timeout ([`LogError::Unavailable`] naming the address otherwise).
    pub async fn connect(
        bootstrap: &str,
        prefix: &str,
        opts: KafkaOptions,
    ) -> Result<Conn, LogError> {
        crate::naming::check_prefix(prefix)?;
        if let Some((k, _)) = opts
            .client_settings
            .iter()
            .find(|(k, _)| RESERVED_SETTINGS.contains(&k.trim()))
        {
            return Err(LogError::InvalidArgument(format!(
                "the Kafka setting '{k}' is crmbus's own and cannot be changed"
            )));
        }
        if bootstrap.trim().is_empty() {
            return Err(LogError::InvalidArgument(
                "the Kafka bootstrap servers must not be empty".into(),
            ));
        }
        let admin: AdminClient<DefaultClientContext> = client_config(bootstrap, &opts)
            .create()
            .map_err(|e| invalid_settings(bootstrap, e))?;
        let producer: FutureProducer = producer_config(bootstrap, &opts)
            .create()
            .map_err(|e| invalid_settings(bootstrap, e))?;
        let conn = Conn {
            bootstrap: bootstrap.to_string(),
            prefix: prefix.to_string(),
            readers: Readers {
                idle: Mutex::new(Vec::new()),
                permits: Semaphore::new(opts.readers.max(1)),
            },
            opts,
            admin,
            producer,
        };
        // One metadata round trip proves a broker answers.
        conn.with_reader("connecting", |c, timeout| {
            c.fetch_metadata(None, timeout).map(|_| ())
        })
        .await
        .map_err(|e| match e {
            LogError::Backend { message, .. } | LogError::Unavailable(message) => {
                LogError::Unavailable(format!("no Kafka broker answers at {bootstrap}: {message}"))
            }
            other => other,
        })?;
        Ok(conn)
    }

    /// Runs `f` with a pooled reader consumer on a blocking thread (librdkafka's calls
    /// block), at most [`KafkaOptions::readers`] at once. `f` gets the request timeout.
    pub async fn with_reader<T, F>(&self, what: &str, f: F) -> Result<T, LogError>
    where
        T: Send + 'static,
        F: FnOnce(&Reader, Duration) -> Result<T, KafkaError> + Send + 'static,
    {
        let what_owned = what.to_string();
        self.with_reader_log(what, move |c, t| {
            f(c, t).map_err(|e| kafka_err(&what_owned, e))
        })
        .await
    }

    /// [`Conn::with_reader`] for closures that produce their own [`LogError`]s.
    pub async fn with_reader_log<T, F>(&self, what: &str, f: F) -> Result<T, LogError>
    where
        T: Send + 'static,
        F: FnOnce(&Reader, Duration) -> Result<T, LogError> + Send + 'static,
    {
        let _permit = self
            .readers
            .permits
            .acquire()
            .await
            .map_err(|_| LogError::Unavailable("the Kafka log is closed".into()))?;
        let consumer = match self.readers.idle.locked().pop() {
            Some(c) => c,
            None => reader_config(&self.bootstrap, &self.opts)
                .create_with_context::<_, Reader>(ReaderContext)
                .map_err(|e| invalid_settings(&self.bootstrap, e))?,
        };
        let timeout = self.opts.request_timeout;
        let (consumer, result) = tokio::task::spawn_blocking(move || {
            let r = f(&consumer, timeout);
            (consumer, r)
        })
        .await
        .map_err(|e| join_err(what, e))?;
        // A consumer goes back only unassigned, so the next read starts clean.
        if consumer.unassign().is_ok() {
            self.readers.idle.locked().push(consumer);
        }
        result
    }
}

fn invalid_settings(bootstrap: &str, e: KafkaError) -> LogError {
    LogError::InvalidArgument(format!("Kafka client settings for {bootstrap}: {e}"))
}

/// The settings every client gets: the brokers, no Nagle delay (a lone publish would
/// otherwise wait for the peer's delayed ACK), then the caller's own.
fn client_config(bootstrap: &str, opts: &KafkaOptions) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("socket.nagle.disable", "true")
        .set("client.id", "crmbus")
        .set(
            "socket.timeout.ms",
            opts.request_timeout.as_millis().to_string(),
        );
    for (k, v) in &opts.client_settings {
        c.set(k, v);
    }
    c
}

/// The producer: idempotent (`acks=all`, per-partition order kept across retries, no
/// duplicates from its own retries), delivery given up after the request timeout.
fn producer_config(bootstrap: &str, opts: &KafkaOptions) -> ClientConfig {
    let mut c = client_config(bootstrap, opts);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "1")
        .set(
            "message.timeout.ms",
            opts.request_timeout.as_millis().to_string(),
        )
        .set(
            "message.max.bytes",
            (opts.max_event_bytes + 64 * 1024).to_string(),
        );
    for (k, v) in &opts.client_settings {
        c.set(k, v);
    }
    c
}

/// A reader: assigned partitions only (never joins a group, never commits), checks every
/// record's CRC, says when it reached the end of a partition (the high watermark of a
/// fetch response, which every broker gets right), and reports an offset out of range
/// instead of jumping elsewhere. A read takes what is there and never long-polls for
/// more (`fetch.wait.max.ms=1`; some brokers hold a fetch for the whole wait even when
/// records are waiting).
fn reader_config(bootstrap: &str, opts: &KafkaOptions) -> ClientConfig {
    let mut c = client_config(bootstrap, opts);
    c.set("group.id", "crmbus-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "error")
        .set("check.crcs", "true")
        .set("fetch.wait.max.ms", "1")
        .set("enable.partition.eof", "true");
    for (k, v) in &opts.client_settings {
        c.set(k, v);
    }
    c
}
