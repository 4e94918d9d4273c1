//! Live streams of a topic: Server-Sent Events (resumable with `Last-Event-ID`) and
//! WebSocket, both with a subscription's filter.
//!
//! Query parameters (both): `type` (a type pattern, repeatable), `filter` (a subscription
//! filter as JSON), `from` (`latest` — the default —, `earliest`, or an RFC 3339 time) and
//! `last_event_id` (as the header). Each message is `{partition, offset, appended_at,
//! event}`; its SSE `id` is `<partition>-<offset>`.
//!
//! Resuming from `p-o` continues partition `p` after `o` exactly, and the other partitions
//! from one second before that event was appended (a live stream is at least once: a
//! client dedupes by event id). A client that takes no events for
//! `server.slow_client_timeout_ms` while `server.stream_buffer` of them wait is
//! disconnected with the reason; nothing is buffered without bound.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use crmbus::delivery::Filter;
use crmbus::ErrorCode;
use crmbus::{LogError, Position, TailOptions, Tailer};
use crmbus_api::{StreamToken, StreamTokenRequest};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use crate::api::StoredView;
use crate::extract::{json_body, query_values};
use crate::problem::{ApiError, Problem};
use crate::render::rfc3339;
use crate::request_auth::Caller;
use crate::state::Shared;

/// What a live stream was let in with, checked again every `[auth] stream_recheck_ms`
/// (and at once when a key is revoked on this server): the key it was opened with must
/// still work, and a stream opened without one (no key was needed) ends once the server
/// needs keys.
struct KeyWatch {
    app: Shared,
    /// The key's id; `None`: opened without a key.
    key_id: Option<String>,
    revocations: tokio::sync::watch::Receiver<u64>,
    /// False once the server's revocation signal is gone (it is stopping).
    revocations_open: bool,
    every: Duration,
    next_check: tokio::time::Instant,
}

impl KeyWatch {
    fn new(app: &Shared, caller: Option<Extension<Caller>>) -> KeyWatch {
        let every = Duration::from_millis(app.config.auth.stream_recheck_ms);
        KeyWatch {
            app: app.clone(),
            key_id: caller.map(|Extension(c)| c.key.id),
            revocations: app.auth.revocations(),
            revocations_open: true,
            every,
            next_check: tokio::time::Instant::now() + every,
        }
    }

    fn due(&self) -> bool {
        tokio::time::Instant::now() >= self.next_check
    }

    /// Checks now; why the stream must end, if it must.
    async fn check(&mut self) -> Result<(), ApiError> {
        self.next_check = tokio::time::Instant::now() + self.every;
        let now = self.app.auth.clock().now_micros();
        let refused = match &self.key_id {
            Some(id) => match self.app.auth.keys.still_valid(id, now).await {
                Ok(()) => None,
                // A store that cannot be read now is not a reason to end a stream.
                Err(crate::auth::keys::AuthError::Store(e)) => {
                    tracing::warn!(error = %e, "cannot check a live stream's key; checking again later");
                    None
                }
                Err(e) => Some(e.to_string()),
            },
            None => match self.app.auth.required().await {
                Ok(true) => Some(
                    "this server needs an API key now: open the stream again with one".to_string(),
                ),
                Ok(false) => None,
                Err(e) => {
                    tracing::warn!(error = %e.detail, "cannot tell whether keys are needed; checking again later");
                    None
                }
            },
        };
        match refused {
            Some(why) => Err(ApiError::new(
                ErrorCode::Unauthorized,
                format!("the stream ended: {why}"),
            )),
            None => Ok(()),
        }
    }
}

/// A topic's [`Tailer`] as the live routes use it: stored events as API views, ending
/// when the server stops or the key it was opened with stops working.
struct LiveReader {
    tailer: Tailer,
    stopping: tokio::sync::watch::Receiver<bool>,
    key: KeyWatch,
}

impl LiveReader {
    async fn open(
        app: Shared,
        topic: String,
        query: Option<&str>,
        last_event_id: Option<String>,
        key: KeyWatch,
    ) -> Result<LiveReader, ApiError> {
        let mut filter = match query_values(query, "filter").first() {
            Some(json) => serde_json::from_str::<Filter>(json)
                .map_err(|e| ApiError::invalid("filter", e.to_string()))?,
            None => Filter::default(),
        };
        filter.types.extend(query_values(query, "type"));
        let from = match query_values(query, "from").into_iter().next() {
            None => Position::Latest,
            Some(text) => Position::parse(&text).map_err(|e| ApiError::invalid("from", e))?,
        };
        let last =
            last_event_id.or_else(|| query_values(query, "last_event_id").into_iter().next());
        let bad_last = |last: &str| {
            ApiError::invalid(
                "Last-Event-ID",
                format!("'{last}' is not <partition>-<offset> of this topic"),
            )
        };
        let resume_after = match &last {
            None => None,
            Some(last) => Some(
                last.split_once('-')
                    .and_then(|(p, o)| Some((p.parse::<u32>().ok()?, o.parse::<u64>().ok()?)))
                    .ok_or_else(|| bad_last(last))?,
            ),
        };
        let opts = TailOptions {
            from,
            resume_after,
            filter,
        };
        let tailer = match app.bus.tail(&topic, opts).await {
            Ok(t) => t,
            // The resume point names a partition the topic does not have.
            Err(LogError::PartitionNotFound { .. }) if resume_after.is_some() => {
                return Err(bad_last(last.as_deref().unwrap_or_default()))
            }
            Err(e) => return Err(e.into()),
        };
        Ok(LiveReader {
            tailer,
            stopping: app.stopping.clone(),
            key,
        })
    }

    /// The next events; `None` when the server stops, an error when the stream must end
    /// (the key stopped working, the log failed).
    async fn next(&mut self) -> Option<Result<Vec<StoredView>, ApiError>> {
        if *self.stopping.borrow() {
            return None;
        }
        let batch = loop {
            // Checked when due even while events keep coming (a busy stream never waits).
            if self.key.due() {
                if let Err(e) = self.key.check().await {
                    return Some(Err(e));
                }
            }
            let (tailer, stopping, key) = (&mut self.tailer, &mut self.stopping, &mut self.key);
            let deadline = key.next_check;
            let revocations_open = key.revocations_open;
            // `Tailer::next` is cancel-safe: a check that wins the race loses no event.
            tokio::select! {
                b = tailer.next() => break b,
                _ = stopping.wait_for(|s| *s) => return None,
                _ = tokio::time::sleep_until(deadline) => {}
                changed = key.revocations.changed(), if revocations_open => {
                    match changed {
                        // A key was revoked here: check at once.
                        Ok(()) => key.next_check = tokio::time::Instant::now(),
                        Err(_) => key.revocations_open = false,
                    }
                }
            }
        };
        Some(
            batch
                .map(|events| {
                    events
                        .into_iter()
                        .map(|s| StoredView {
                            partition: s.partition,
                            offset: s.offset,
                            appended_at: s.timestamp.to_rfc3339(),
                            event: s.event.to_json_value(),
                        })
                        .collect()
                })
                .map_err(ApiError::from),
        )
    }
}

fn last_event_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Streams a topic's events as Server-Sent Events.
#[utoipa::path(
    get, path = "/v1/topics/{topic}/stream", tag = "live",
    params(
        ("topic" = String, Path, description = "Topic name"),
        ("type" = Option<Vec<String>>, Query, description = "Type patterns (repeatable)"),
        ("filter" = Option<String>, Query, description = "A subscription filter as JSON"),
        ("from" = Option<String>, Query, description = "latest (default), earliest, or an RFC 3339 time"),
        ("last_event_id" = Option<String>, Query, description = "Resume after <partition>-<offset> (or the Last-Event-ID header)"),
        ("token" = Option<String>, Query, description = "A stream token (POST /v1/topics/{topic}/stream-token) instead of an Authorization header, for browsers"),
    ),
    responses(
        (status = 200, description = "An event stream; each id is <partition>-<offset>", content_type = "text/event-stream", body = String),
        (status = 400, description = "Bad filter, from or Last-Event-ID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such topic", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn stream_sse(
    State(app): State<Shared>,
    Path(topic): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    caller: Option<Extension<Caller>>,
) -> Result<Response, ApiError> {
    let buffer = app.config.server.stream_buffer;
    let slow = Duration::from_millis(app.config.server.slow_client_timeout_ms);
    let key = KeyWatch::new(&app, caller);
    let mut reader =
        LiveReader::open(app, topic, query.as_deref(), last_event_id(&headers), key).await?;
    let (tx, rx) = mpsc::channel::<SseEvent>(buffer);
    // Why the stream ended, sent after everything already queued.
    let (reason_tx, reason_rx) = tokio::sync::oneshot::channel::<String>();
    tokio::spawn(async move {
        loop {
            // A client that left ends the task even on a quiet topic.
            let batch = tokio::select! {
                b = reader.next() => b,
                _ = tx.closed() => return,
            };
            let Some(batch) = batch else { return };
            let batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    let _ = reason_tx.send(e.detail);
                    return;
                }
            };
            for view in batch {
                let id = format!("{}-{}", view.partition, view.offset);
                let data = serde_json::to_string(&view).unwrap_or_default();
                let ev = SseEvent::default().id(id).data(data);
                match tx.send_timeout(ev, slow).await {
                    Ok(()) => {}
                    Err(mpsc::error::SendTimeoutError::Closed(_)) => return,
                    Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                        tracing::warn!("disconnecting a live stream client that fell behind");
                        metrics::counter!("crmbus_live_slow_disconnects_total").increment(1);
                        let _ = reason_tx.send(format!(
                            "disconnected: the client fell more than {buffer} events behind for {} ms",
                            slow.as_millis()
                        ));
                        return;
                    }
                }
            }
            if tx.is_closed() {
                return;
            }
        }
    });
    let reason = futures_util::stream::once(reason_rx).filter_map(|r| async move {
        r.ok()
            .map(|msg| Ok::<_, Infallible>(SseEvent::default().event("error").data(msg)))
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx)
        .map(Ok::<_, Infallible>)
        .chain(reason);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Streams a topic's events over a WebSocket (one JSON text message per event).
#[utoipa::path(
    get, path = "/v1/topics/{topic}/ws", tag = "live",
    params(
        ("topic" = String, Path, description = "Topic name"),
        ("type" = Option<Vec<String>>, Query, description = "Type patterns (repeatable)"),
        ("filter" = Option<String>, Query, description = "A subscription filter as JSON"),
        ("from" = Option<String>, Query, description = "latest (default), earliest, or an RFC 3339 time"),
        ("last_event_id" = Option<String>, Query, description = "Resume after <partition>-<offset>"),
        ("token" = Option<String>, Query, description = "A stream token (POST /v1/topics/{topic}/stream-token) instead of an Authorization header, for browsers"),
    ),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, description = "Bad filter or not a WebSocket request", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such topic", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn stream_ws(
    State(app): State<Shared>,
    Path(topic): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
    caller: Option<Extension<Caller>>,
) -> Result<Response, ApiError> {
    let slow = Duration::from_millis(app.config.server.slow_client_timeout_ms);
    let key = KeyWatch::new(&app, caller);
    let reader =
        LiveReader::open(app, topic, query.as_deref(), last_event_id(&headers), key).await?;
    let upgrade = upgrade.map_err(|e| ApiError::invalid("(upgrade)", e.body_text()))?;
    Ok(upgrade.on_upgrade(move |socket| serve_ws(socket, reader, slow)))
}

async fn serve_ws(socket: WebSocket, mut reader: LiveReader, slow: Duration) {
    let (mut sink, mut incoming) = socket.split();
    // The client's side: only a close (or the connection ending) matters.
    let (gone_tx, mut gone) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        while let Some(Ok(msg)) = incoming.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
        let _ = gone_tx.send(());
    });
    loop {
        let batch = tokio::select! {
            b = reader.next() => b,
            _ = &mut gone => return,
        };
        let Some(batch) = batch else {
            let _ = sink
                .send(Message::Close(Some(CloseFrame {
                    code: 1001,
                    reason: "server shutting down".into(),
                })))
                .await;
            return;
        };
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                // 1008 (policy violation) when the key stopped working, else 1011.
                let code = if e.code == ErrorCode::Unauthorized {
                    1008
                } else {
                    1011
                };
                let _ = sink
                    .send(Message::Close(Some(CloseFrame {
                        code,
                        reason: e.detail.into(),
                    })))
                    .await;
                return;
            }
        };
        for view in batch {
            let text = serde_json::to_string(&view).unwrap_or_default();
            match tokio::time::timeout(slow, sink.send(Message::Text(text.into()))).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                Err(_) => {
                    tracing::warn!("disconnecting a WebSocket client that fell behind");
                    metrics::counter!("crmbus_live_slow_disconnects_total").increment(1);
                    let close = sink.send(Message::Close(Some(CloseFrame {
                        code: 1008,
                        reason: format!(
                            "client too slow: it took no events for {} ms",
                            slow.as_millis()
                        )
                        .into(),
                    })));
                    let _ = tokio::time::timeout(Duration::from_secs(1), close).await;
                    return;
                }
            }
        }
    }
}

/// Longest a stream token opens streams.
const MAX_TOKEN_TTL: u64 = 3600;
/// A stream token's life when the request does not say.
const DEFAULT_TOKEN_TTL: u64 = 300;

/// Makes a short-lived token that opens this topic's live streams (`?token=…`) as the
/// calling key, for browsers, which cannot send an `Authorization` header on an
/// `EventSource` or a WebSocket. Needs `subscribe` on the topic, like the streams.
#[utoipa::path(
    post, path = "/v1/topics/{topic}/stream-token", tag = "live",
    params(("topic" = String, Path, description = "Topic name")),
    request_body(content = Option<StreamTokenRequest>, description = "The token's life (optional)"),
    responses(
        (status = 201, description = "The token and the stream URLs that carry it", body = StreamToken),
        (status = 400, description = "A bad ttl_seconds, or a server that needs no key (open the stream directly)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such topic", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_stream_token(
    State(app): State<Shared>,
    Path(topic): Path<String>,
    caller: Option<Extension<Caller>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<StreamToken>), ApiError> {
    // No body, or JSON null (the body is optional): the defaults.
    let req: StreamTokenRequest = match &body {
        Ok(b) if b.trim_ascii().is_empty() || b.trim_ascii() == b"null" => {
            StreamTokenRequest::default()
        }
        _ => json_body(body)?,
    };
    let ttl = req.ttl_seconds.unwrap_or(DEFAULT_TOKEN_TTL);
    if !(1..=MAX_TOKEN_TTL).contains(&ttl) {
        return Err(ApiError::invalid(
            "ttl_seconds",
            format!("must be between 1 and {MAX_TOKEN_TTL}"),
        ));
    }
    let Some(Extension(caller)) = caller else {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "this server needs no API key: open the stream without a token",
        ));
    };
    app.bus.describe_topic(&topic).await?;
    let expires = app.auth.clock().now_micros().saturating_add(
        i64::try_from(ttl)
            .unwrap_or(i64::MAX)
            .saturating_mul(1_000_000),
    );
    let token = app
        .auth
        .keys
        .stream_token(&caller.key.id, &topic, expires)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(StreamToken {
            stream_url: format!("/v1/topics/{topic}/stream?token={token}"),
            ws_url: format!("/v1/topics/{topic}/ws?token={token}"),
            token,
            expires_at: rfc3339(expires),
        }),
    ))
}
