//! Live streams and keys: a browser opens a stream with a short-lived token instead of a
//! key (for its topic only, until it expires, while its key works), and a stream ends
//! with the reason when the key it was opened with is revoked.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{event, status_json, TestServer};
use futures_util::StreamExt;
use serde_json::{json, Value};

async fn make_key(s: &TestServer, admin: Option<&str>, name: &str, scopes: &[&str]) -> Value {
    let mut req = s
        .client
        .post(s.url("/v1/keys"))
        .json(&json!({"name": name, "scopes": scopes}));
    if let Some(a) = admin {
        req = req.bearer_auth(a);
    }
    let (st, made) = status_json(req.send().await.expect("key")).await;
    assert_eq!(st, 201, "{made}");
    made
}

fn key_of(v: &Value) -> String {
    v["key"].as_str().expect("key").to_string()
}

async fn token(s: &TestServer, key: &str, topic: &str, body: Value) -> (u16, Value) {
    status_json(
        s.client
            .post(s.url(&format!("/v1/topics/{topic}/stream-token")))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .expect("token"),
    )
    .await
}

async fn publish(s: &TestServer, key: &str, topic: &str, id: &str) {
    let r = s
        .client
        .post(s.url(&format!("/v1/topics/{topic}/events")))
        .bearer_auth(key)
        .header("content-type", "application/cloudevents+json")
        .body(event(id, "deal.won", "deal/1", json!({})).to_string())
        .send()
        .await
        .expect("publish");
    assert_eq!(r.status().as_u16(), 201);
}

/// How long a test waits at most for what a stream should send (keep-alive comments keep
/// a stream busy, so the wait is bounded as a whole, not per chunk).
const STREAM_PATIENCE: Duration = Duration::from_secs(60);

/// Reads a Server-Sent Events body until its text holds `want`, the stream ends, or
/// [`STREAM_PATIENCE`] runs out; the text read.
async fn read_until(resp: reqwest::Response, want: &str) -> String {
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    let _ = tokio::time::timeout(STREAM_PATIENCE, async {
        while !text.contains(want) {
            match body.next().await {
                Some(Ok(chunk)) => text.push_str(&String::from_utf8_lossy(&chunk)),
                _ => break,
            }
        }
    })
    .await;
    text
}

struct Fixture {
    s: TestServer,
    clock: crmbus::ManualClock,
    admin: String,
    reader: Value,
}

async fn fixture() -> Fixture {
    fixture_with(&[]).await
}

async fn fixture_with(extra: &[(&str, &str)]) -> Fixture {
    let dir = tempfile::tempdir().expect("dir");
    let clock = crmbus::ManualClock::starting_now();
    let config = common::config(dir.path(), "embedded", extra);
    let server = crmbus_server::Server::start_with_clock(config, Arc::new(clock.clone()))
        .await
        .expect("server");
    let s = TestServer::attach(server, dir);
    s.create_topic("deals", 1).await;
    s.create_topic("tasks", 1).await;
    let admin = key_of(&make_key(&s, None, "root", &["admin"]).await);
    let reader = make_key(&s, Some(&admin), "dashboard", &["subscribe:deals"]).await;
    Fixture {
        s,
        clock,
        admin,
        reader,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_token_opens_its_topics_streams_until_it_expires() {
    let f = fixture().await;
    let s = &f.s;
    let reader = key_of(&f.reader);
    let (st, t) = token(s, &reader, "deals", json!({"ttl_seconds": 60})).await;
    assert_eq!(st, 201, "{t}");
    let tok = t["token"].as_str().expect("token").to_string();
    // No secret of the key is in it.
    let secret = reader.splitn(3, '_').nth(2).expect("secret");
    assert!(!tok.contains(secret));
    assert!(chrono::DateTime::parse_from_rfc3339(t["expires_at"].as_str().expect("at")).is_ok());
    // The URL it comes with opens the stream with no header.
    let url = t["stream_url"].as_str().expect("url");
    assert_eq!(url, format!("/v1/topics/deals/stream?token={tok}"));
    let r = s
        .client
        .get(s.url(&format!("{url}&from=earliest")))
        .send()
        .await
        .expect("stream");
    assert_eq!(r.status().as_u16(), 200);
    publish(s, &f.admin, "deals", "d-1").await;
    let text = read_until(r, "d-1").await;
    assert!(text.contains("\"id\":\"d-1\""), "{text}");
    // The WebSocket too.
    let ws = t["ws_url"].as_str().expect("ws url");
    let (mut socket, _) = tokio_tungstenite::connect_async(format!(
        "{}{ws}&from=earliest",
        s.url("").replace("http://", "ws://")
    ))
    .await
    .expect("websocket with a token");
    let first = socket.next().await.expect("a message").expect("ok");
    assert!(first.to_string().contains("d-1"), "{first}");

    // For its topic only, and only as it was made.
    let other = s
        .client
        .get(s.url(&format!("/v1/topics/tasks/stream?token={tok}")))
        .send()
        .await
        .expect("stream");
    assert_eq!(other.status().as_u16(), 401);
    // A later expiry, the MAC kept: refused.
    let mut parts: Vec<String> = tok.split('.').map(str::to_string).collect();
    assert_eq!(parts.len(), 5, "{tok}");
    let later: i64 = parts[2].parse::<i64>().expect("expiry") + 3_600_000_000;
    parts[2] = later.to_string();
    let forged = parts.join(".");
    let r = s
        .client
        .get(s.url(&format!("/v1/topics/deals/stream?token={forged}")))
        .send()
        .await
        .expect("stream");
    assert_eq!(r.status().as_u16(), 401);
    // Not on other routes: a token is no key.
    let r = s
        .client
        .get(s.url(&format!("/v1/topics/deals/events?token={tok}")))
        .send()
        .await
        .expect("read");
    assert_eq!(r.status().as_u16(), 401);
    // Past its time it opens nothing, and says so.
    f.clock.advance(Duration::from_secs(61));
    let (st, p) = status_json(
        s.client
            .get(s.url(&format!("/v1/topics/deals/stream?token={tok}")))
            .send()
            .await
            .expect("stream"),
    )
    .await;
    assert_eq!(st, 401);
    assert!(
        p["detail"].as_str().unwrap_or("").contains("expired"),
        "{p}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_tokens_need_the_scope_and_a_sane_life() {
    let f = fixture().await;
    let s = &f.s;
    let reader = key_of(&f.reader);
    // subscribe:deals does not reach tasks.
    let (st, p) = token(s, &reader, "tasks", json!({})).await;
    assert_eq!(st, 403, "{p}");
    for ttl in [0, 3601] {
        let (st, p) = token(s, &reader, "deals", json!({"ttl_seconds": ttl})).await;
        assert_eq!(st, 400, "{p}");
        assert_eq!(common::error_fields(&p), ["ttl_seconds"]);
    }
    let (st, _) = token(s, &f.admin, "nope", json!({})).await;
    assert_eq!(st, 404);
    // A body is optional: none, or JSON null.
    for body in ["", "null"] {
        let r = s
            .client
            .post(s.url("/v1/topics/deals/stream-token"))
            .bearer_auth(&reader)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("token");
        assert_eq!(r.status().as_u16(), 201, "body {body:?}");
    }
    // A token of a key revoked since opens nothing.
    let (_, t) = token(s, &reader, "deals", json!({})).await;
    let id = f.reader["id"].as_str().expect("id");
    let r = s
        .client
        .delete(s.url(&format!("/v1/keys/{id}")))
        .bearer_auth(&f.admin)
        .send()
        .await
        .expect("revoke");
    assert_eq!(r.status().as_u16(), 204);
    let (st, p) = status_json(
        s.client
            .get(s.url(t["stream_url"].as_str().expect("url")))
            .send()
            .await
            .expect("stream"),
    )
    .await;
    assert_eq!(st, 401);
    assert!(
        p["detail"].as_str().unwrap_or("").contains("revoked"),
        "{p}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_key_ends_its_open_streams_with_the_reason() {
    let f = fixture().await;
    let s = &f.s;
    let reader = key_of(&f.reader);
    // One stream by header, one by token (the same key).
    let by_key = s
        .client
        .get(s.url("/v1/topics/deals/stream?from=earliest"))
        .bearer_auth(&reader)
        .send()
        .await
        .expect("stream");
    assert_eq!(by_key.status().as_u16(), 200);
    let (_, t) = token(s, &reader, "deals", json!({})).await;
    let ws = t["ws_url"].as_str().expect("ws url");
    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("{}{ws}", s.url("").replace("http://", "ws://")))
            .await
            .expect("websocket");
    // Another key's stream stays open.
    let admin_stream = s
        .client
        .get(s.url("/v1/topics/deals/stream?from=earliest"))
        .bearer_auth(&f.admin)
        .send()
        .await
        .expect("stream");
    publish(s, &f.admin, "deals", "before").await;
    let id = f.reader["id"].as_str().expect("id");
    let r = s
        .client
        .delete(s.url(&format!("/v1/keys/{id}")))
        .bearer_auth(&f.admin)
        .send()
        .await
        .expect("revoke");
    assert_eq!(r.status().as_u16(), 204);
    let text = read_until(by_key, "revoked").await;
    assert!(text.contains("event: error"), "{text}");
    assert!(text.contains("the API key was revoked"), "{text}");
    // The WebSocket is closed with 1008 and the reason.
    let mut closed = None;
    let _ = tokio::time::timeout(STREAM_PATIENCE, async {
        while let Some(msg) = socket.next().await {
            if let Ok(tokio_tungstenite::tungstenite::Message::Close(Some(frame))) = msg {
                closed = Some(frame);
                break;
            }
        }
    })
    .await;
    let frame = closed.expect("a close frame");
    assert_eq!(u16::from(frame.code), 1008);
    assert!(frame.reason.contains("revoked"), "{}", frame.reason);
    // The admin's stream still gets events.
    publish(s, &f.admin, "deals", "after").await;
    let text = read_until(admin_stream, "\"after\"").await;
    assert!(text.contains("\"id\":\"after\""), "{text}");
    assert!(!text.contains("event: error"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_stream_ends_when_its_key_expires() {
    let f = fixture_with(&[("CRMBUS_AUTH_STREAM_RECHECK_MS", "100")]).await;
    let s = &f.s;
    let expiry = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let (st, made) = status_json(
        s.client
            .post(s.url("/v1/keys"))
            .bearer_auth(&f.admin)
            .json(&json!({"name": "temp", "scopes": ["subscribe:deals"], "expires_at": expiry}))
            .send()
            .await
            .expect("key"),
    )
    .await;
    assert_eq!(st, 201, "{made}");
    let stream = s
        .client
        .get(s.url("/v1/topics/deals/stream"))
        .bearer_auth(key_of(&made))
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status().as_u16(), 200);
    // Events keep coming while the key expires: the check must not wait for a pause.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let (stop, client, url, admin) = (
            Arc::clone(&stop),
            s.client.clone(),
            s.url("/v1/topics/deals/events"),
            f.admin.clone(),
        );
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && i < 5000 {
                let _ = client
                    .post(&url)
                    .bearer_auth(&admin)
                    .header("content-type", "application/cloudevents+json")
                    .body(event(&format!("busy-{i}"), "deal.won", "deal/1", json!({})).to_string())
                    .send()
                    .await;
                i += 1;
            }
        })
    };
    let mut body = stream.bytes_stream();
    let mut text = String::new();
    // Some events first, then the key's hour passes.
    tokio::time::timeout(STREAM_PATIENCE, async {
        while !text.contains("busy-3") {
            let chunk = body.next().await.expect("open").expect("chunk");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("the first events");
    f.clock.advance(Duration::from_secs(2 * 3600));
    let _ = tokio::time::timeout(STREAM_PATIENCE, async {
        while !text.contains("event: error") {
            match body.next().await {
                Some(Ok(chunk)) => text.push_str(&String::from_utf8_lossy(&chunk)),
                _ => break,
            }
        }
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = publisher.await;
    let tail = text.rsplit("event: error").next().unwrap_or_default();
    assert!(
        text.contains("event: error"),
        "no end in {} bytes",
        text.len()
    );
    assert!(tail.contains("the API key has expired"), "{tail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_opened_without_a_key_ends_once_keys_are_needed() {
    let s = TestServer::start("embedded", &[("CRMBUS_AUTH_STREAM_RECHECK_MS", "100")]).await;
    s.create_topic("deals", 1).await;
    // No key exists: the stream opens without one.
    let stream = s
        .client
        .get(s.url("/v1/topics/deals/stream"))
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status().as_u16(), 200);
    make_key(&s, None, "root", &["admin"]).await;
    let text = read_until(stream, "needs an API key now").await;
    assert!(text.contains("event: error"), "{text}");
    assert!(text.contains("needs an API key now"), "{text}");
}
