//! The outbox relay and the inbox against a real PostgreSQL: committed rows are published
//! once and in order per subject, rolled-back rows never; a relay that dies between
//! publishing and marking publishes no second copy even with no dedupe window; refused
//! rows are set aside; two relays share the work without publishing a row twice; and the
//! inbox applies a side effect once however often the event comes.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use common::{bus, check_topic, insert_row, outbox_db, TestDb};
use crmbus::{Event, EventBus};
use crmbus_postgres::{EventKey, Inbox, OutboxSink, Relay, RelayOptions, SinkError};
use serde_json::json;
use tokio::sync::{watch, Mutex};

fn options(db: &TestDb) -> RelayOptions {
    RelayOptions {
        poll_interval: Duration::from_millis(50),
        batch_size: 16,
        ..RelayOptions::new(db.url.clone())
    }
}

fn event(id: &str, subject: &str) -> serde_json::Value {
    json!({"id": id, "source": "/crm/test", "type": "deal.updated", "subject": subject,
           "data": {"deal_id": subject}})
}

/// Writers that commit or roll back transactions of one to three rows about ten deals;
/// returns the committed event ids with their row ids, and the rolled-back event ids.
async fn write_concurrently(
    db: &TestDb,
    writers: usize,
    transactions: usize,
    topic: &'static str,
    first: usize,
) -> (BTreeMap<String, i64>, HashSet<String>) {
    let committed = Arc::new(Mutex::new(BTreeMap::new()));
    let rolled_back = Arc::new(Mutex::new(HashSet::new()));
    let mut tasks = Vec::new();
    for w in 0..writers {
        let mut client = db.client().await;
        let (committed, rolled_back) = (committed.clone(), rolled_back.clone());
        tasks.push(tokio::spawn(async move {
            for t in first..first + transactions {
                let tx = client.transaction().await.expect("begin");
                let mut rows = Vec::new();
                for r in 0..(1 + (w + t) % 3) {
                    let id = format!("w{w}-t{t}-r{r}");
                    let subject = format!("deal-{}", (w * 7 + t * 3 + r) % 10);
                    let row = insert_row(&tx, &[topic], &event(&id, &subject)).await;
                    rows.push((id, row));
                }
                if (w + t) % 4 == 3 {
                    tx.rollback().await.expect("rollback");
                    rolled_back
                        .lock()
                        .await
                        .extend(rows.into_iter().map(|r| r.0));
                } else {
                    tx.commit().await.expect("commit");
                    committed.lock().await.extend(rows);
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let committed = committed.lock().await.clone();
    let rolled_back = rolled_back.lock().await.clone();
    (committed, rolled_back)
}

/// Waits until nothing is pending; a relay that has not drained the outbox within two
/// minutes (a wedged relay) fails the test instead of hanging it.
async fn wait_until_drained(relay: &Relay) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let status = relay.table().status().await.expect("status");
        if status.pending == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the relay did not drain the outbox: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn committed_rows_are_published_once_in_order_and_rolled_back_rows_never() {
    let db = outbox_db().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bus = bus(dir.path());
    let relay = Arc::new(Relay::new(options(&db), Arc::new(bus.clone())).expect("relay"));
    let (stop, stopped) = watch::channel(false);
    let running = tokio::spawn({
        let relay = relay.clone();
        async move { relay.run(stopped).await }
    });

    let (committed, rolled_back) = write_concurrently(&db, 4, 25, "deals", 0).await;
    wait_until_drained(&relay).await;
    stop.send(true).expect("stop");
    running.await.expect("relay task");

    assert!(committed.len() > 50 && !rolled_back.is_empty());
    check_topic(&bus, "deals", &committed, &rolled_back).await;
    let status = relay.table().status().await.expect("status");
    assert_eq!((status.pending, status.failed), (0, 0));
    assert_eq!(status.published_kept as usize, committed.len());
    db.drop_db().await;
}

/// Publishes like the bus, then fails as if the process died before the relay marked the
/// rows: only the first `publish` call goes through, and it reports an error.
struct DiesAfterPublishing {
    bus: EventBus,
    calls: AtomicUsize,
}

#[async_trait]
impl OutboxSink for DiesAfterPublishing {
    async fn publish(&self, events: Vec<Event>, topics: &[String]) -> Result<(), SinkError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            OutboxSink::publish(&self.bus, events, topics).await?;
        }
        Err(SinkError::transient("the relay process died here"))
    }

    async fn stored_since(
        &self,
        topic: &str,
        since: DateTime<Utc>,
        keys: &HashSet<EventKey>,
    ) -> Result<HashSet<EventKey>, SinkError> {
        self.bus.stored_since(topic, since, keys).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_dies_between_publish_and_mark_publishes_no_second_copy() {
    let db = outbox_db().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bus = bus(dir.path());
    let mut client = db.client().await;
    let tx = client.transaction().await.expect("begin");
    let mut committed = BTreeMap::new();
    // Two runs of rows: to "deals" (published before the crash) and to "sales" (not).
    for i in 0..6 {
        let (topic, id) = if i < 4 {
            ("deals", format!("d{i}"))
        } else {
            ("sales", format!("s{i}"))
        };
        let row = insert_row(&tx, &[topic], &event(&id, &format!("deal-{i}"))).await;
        committed.insert(id, row);
    }
    tx.commit().await.expect("commit");

    let dying = Relay::new(
        options(&db),
        Arc::new(DiesAfterPublishing {
            bus: bus.clone(),
            calls: AtomicUsize::new(0),
        }),
    )
    .expect("relay");
    dying.step().await.expect_err("the first relay dies");
    assert_eq!(common::all_events(&bus, "deals").await.len(), 4);
    assert_eq!(dying.table().status().await.expect("status").pending, 6);

    // It comes back long after any dedupe window (the bus here has none at all).
    let relay = Relay::new(options(&db), Arc::new(bus.clone())).expect("relay");
    let report = relay.step().await.expect("step");
    assert_eq!(report.claimed, 6);
    assert_eq!(report.already_stored, 4, "{report:?}");
    assert_eq!(report.published, 2, "{report:?}");

    let deals: BTreeMap<String, i64> = committed
        .clone()
        .into_iter()
        .filter(|(k, _)| k.starts_with('d'))
        .collect();
    let sales: BTreeMap<String, i64> = committed
        .into_iter()
        .filter(|(k, _)| k.starts_with('s'))
        .collect();
    check_topic(&bus, "deals", &deals, &HashSet::new()).await;
    check_topic(&bus, "sales", &sales, &HashSet::new()).await;
    assert_eq!(relay.table().status().await.expect("status").pending, 0);
    db.drop_db().await;
}

fn won(id: &str, subject: &str, amount: serde_json::Value) -> serde_json::Value {
    json!({"id": id, "source": "/crm/test", "type": "deal.won", "subject": subject,
           "data": {"deal_id": subject, "amount": amount}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_row_is_set_aside_and_holds_back_its_subject_until_fixed() {
    let db = outbox_db().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // The catalog enforced, and no automatic topics: a deal.won whose amount is a number,
    // and a row naming a topic that does not exist, are refused.
    let registry = Arc::new(
        crmbus_schema::SchemaRegistry::open(Arc::new(crmbus::MemoryStateStore::new()))
            .await
            .expect("registry"),
    );
    registry.load_builtin_catalog().await.expect("catalog");
    let log = crmbus_embedded::EmbeddedLog::open(dir.path(), Default::default()).expect("log");
    let bus = EventBus::builder()
        .log(Arc::new(log))
        .validator(registry)
        .build();
    bus.create_topic(crmbus::TopicSpec::new("deals", 2))
        .await
        .expect("topic");
    let mut client = db.client().await;
    let tx = client.transaction().await.expect("begin");
    let mut rows = BTreeMap::new();
    for (id, topic, event) in [
        ("ok-1", "deals", won("ok-1", "deal-1", json!("10.00"))),
        // Refused inside a batch: the rows around it still go, one by one.
        ("bad-1", "deals", won("bad-1", "deal-2", json!(10))),
        ("ok-2", "deals", won("ok-2", "deal-3", json!("10.00"))),
        // deal-2's next event waits for bad-1.
        ("ok-3", "deals", won("ok-3", "deal-2", json!("11.00"))),
        (
            "bad-2",
            "nonexistent",
            won("bad-2", "deal-4", json!("10.00")),
        ),
        (
            "bad-3",
            "deals",
            json!({"id": "bad-3", "source": "/crm/test", "type": "deal.won", "subject": "deal-5",
                   "time": "yesterday", "data": {"deal_id": "deal-5", "amount": "1"}}),
        ),
        ("ok-4", "deals", won("ok-4", "deal-5", json!("10.00"))),
    ] {
        rows.insert(id.to_string(), insert_row(&tx, &[topic], &event).await);
    }
    tx.commit().await.expect("commit");

    let relay = Relay::new(options(&db), Arc::new(bus.clone())).expect("relay");
    let report = relay.step().await.expect("step");
    assert_eq!((report.published, report.failed), (2, 3), "{report:?}");
    let stored: Vec<String> = common::all_events(&bus, "deals")
        .await
        .into_iter()
        .map(|e| e.event.id)
        .collect();
    assert_eq!(
        stored.iter().collect::<HashSet<_>>(),
        ["ok-1", "ok-2"]
            .iter()
            .map(|s| s.to_string())
            .collect::<HashSet<_>>()
            .iter()
            .collect()
    );
    let failed = relay.table().failed_rows(10).await.expect("failed");
    let reasons: BTreeMap<i64, String> = failed
        .into_iter()
        .map(|f| (f.id, f.error.unwrap_or_default()))
        .collect();
    assert!(reasons[&rows["bad-1"]].contains("amount"), "{reasons:?}");
    assert!(
        reasons[&rows["bad-2"]].contains("nonexistent"),
        "{reasons:?}"
    );
    assert!(reasons[&rows["bad-3"]].contains("time"), "{reasons:?}");
    // The held rows are not claimed while their subject has a row set aside.
    assert_eq!(relay.step().await.expect("step").claimed, 0);
    let status = relay.table().status().await.expect("status");
    assert_eq!((status.pending, status.failed), (2, 3));

    // Fixed and released, bad-1 goes, then deal-2's next event.
    client
        .execute(
            "UPDATE crmbus_outbox SET event = jsonb_set(event, '{data,amount}', '\"10.00\"'),
                    failed_at = NULL, last_error = NULL WHERE id = $1",
            &[&rows["bad-1"]],
        )
        .await
        .expect("fix bad-1");
    let report = relay.step().await.expect("step");
    assert_eq!((report.published, report.failed), (2, 0), "{report:?}");
    let committed: BTreeMap<String, i64> = ["ok-1", "ok-2", "bad-1", "ok-3"]
        .iter()
        .map(|id| (id.to_string(), rows[*id]))
        .collect();
    check_topic(&bus, "deals", &committed, &HashSet::new()).await;
    db.drop_db().await;
}

/// Counts what it publishes through the bus.
struct Counting {
    bus: EventBus,
    published: AtomicUsize,
}

#[async_trait]
impl OutboxSink for Counting {
    async fn publish(&self, events: Vec<Event>, topics: &[String]) -> Result<(), SinkError> {
        let n = events.len();
        OutboxSink::publish(&self.bus, events, topics).await?;
        self.published.fetch_add(n, Ordering::SeqCst);
        Ok(())
    }

    async fn stored_since(
        &self,
        topic: &str,
        since: DateTime<Utc>,
        keys: &HashSet<EventKey>,
    ) -> Result<HashSet<EventKey>, SinkError> {
        self.bus.stored_since(topic, since, keys).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_relays_publish_each_row_once_and_the_second_takes_over_when_the_first_stops() {
    let db = outbox_db().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bus = bus(dir.path());
    let mut relays = Vec::new();
    for _ in 0..2 {
        let sink = Arc::new(Counting {
            bus: bus.clone(),
            published: AtomicUsize::new(0),
        });
        let relay = Arc::new(Relay::new(options(&db), sink.clone()).expect("relay"));
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn({
            let relay = relay.clone();
            async move { relay.run(stopped).await }
        });
        relays.push((relay, sink, stop, task));
        // The first one started takes the lock before the second asks for it.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (mut committed, mut rolled_back) = write_concurrently(&db, 4, 10, "deals", 0).await;
    wait_until_drained(&relays[0].0).await;
    let first = relays[0].1.published.load(Ordering::SeqCst);
    assert_eq!(
        first,
        committed.len(),
        "the first relay holds the lock and publishes all"
    );
    assert_eq!(relays[1].1.published.load(Ordering::SeqCst), 0);

    // The first stops; the second takes over.
    let (_, _, stop, task) = relays.remove(0);
    stop.send(true).expect("stop");
    task.await.expect("first relay");
    let (more, more_rolled_back) = write_concurrently(&db, 4, 10, "deals", 100).await;
    committed.extend(more);
    rolled_back.extend(more_rolled_back);
    wait_until_drained(&relays[0].0).await;
    assert_eq!(
        relays[0].1.published.load(Ordering::SeqCst),
        committed.len() - first
    );
    let (_, _, stop, task) = relays.remove(0);
    stop.send(true).expect("stop");
    task.await.expect("second relay");

    check_topic(&bus, "deals", &committed, &rolled_back).await;
    // No row was claimed twice.
    let client = db.client().await;
    let max_attempts: i32 = client
        .query_one("SELECT max(attempts) FROM crmbus_outbox", &[])
        .await
        .expect("query")
        .get(0);
    assert_eq!(max_attempts, 1);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_inbox_applies_a_side_effect_once_however_often_the_event_comes() {
    let db = outbox_db().await;
    let setup = db.client().await;
    setup
        .batch_execute(
            "CREATE TABLE won_deals (account_id text PRIMARY KEY, won integer NOT NULL);
             INSERT INTO won_deals VALUES ('acct-7', 0);",
        )
        .await
        .expect("side-effect table");

    // The handler: in one transaction, record the event and count the won deal.
    async fn handle(db: &TestDb, source: &str, id: &str) -> bool {
        let mut client = db.client().await;
        let tx = client.transaction().await.expect("begin");
        let first = Inbox::new("erp-sync")
            .record(&tx, source, id)
            .await
            .expect("record");
        if first {
            tx.execute(
                "UPDATE won_deals SET won = won + 1 WHERE account_id = 'acct-7'",
                &[],
            )
            .await
            .expect("side effect");
        }
        tx.commit().await.expect("commit");
        first
    }

    assert!(handle(&db, "/crm", "won-1").await);
    assert!(
        !handle(&db, "/crm", "won-1").await,
        "a second delivery is a no-op"
    );
    // Two deliveries at the same moment: the second waits for the first and does nothing.
    let (a, b) = tokio::join!(handle(&db, "/crm", "won-2"), handle(&db, "/crm", "won-2"));
    assert!(a ^ b, "exactly one applies: {a} {b}");
    // Another source's event with the same id is another event.
    assert!(handle(&db, "/billing", "won-1").await);
    // Another consumer has its own inbox.
    let client = db.client().await;
    assert!(Inbox::new("notifier")
        .record(&client, "/crm", "won-1")
        .await
        .expect("record"));

    let won: i32 = setup
        .query_one("SELECT won FROM won_deals WHERE account_id = 'acct-7'", &[])
        .await
        .expect("query")
        .get(0);
    assert_eq!(won, 3);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_rows_are_deleted_after_the_retention_period_and_pending_ones_never() {
    let db = outbox_db().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bus = bus(dir.path());
    let mut client = db.client().await;
    let tx = client.transaction().await.expect("begin");
    for i in 0..5 {
        insert_row(&tx, &["deals"], &event(&format!("e{i}"), "deal-1")).await;
    }
    tx.commit().await.expect("commit");
    let relay = Relay::new(options(&db), Arc::new(bus.clone())).expect("relay");
    assert_eq!(relay.step().await.expect("step").published, 5);
    // Three were published eight days ago; two more rows are still pending.
    client
        .execute(
            "UPDATE crmbus_outbox SET published_at = now() - interval '8 days'
              WHERE id IN (SELECT id FROM crmbus_outbox ORDER BY id LIMIT 3)",
            &[],
        )
        .await
        .expect("age rows");
    let tx = client.transaction().await.expect("begin");
    for i in 5..7 {
        insert_row(&tx, &["deals"], &event(&format!("e{i}"), "deal-1")).await;
    }
    tx.commit().await.expect("commit");

    let week = Duration::from_secs(7 * 24 * 3600);
    assert_eq!(relay.table().purge(week, 100).await.expect("purge"), 3);
    assert_eq!(relay.table().purge(week, 100).await.expect("purge"), 0);
    let status = relay.table().status().await.expect("status");
    assert_eq!((status.published_kept, status.pending), (2, 2));
    assert!(status.oldest_pending_seconds > 0.0, "{status:?}");
    db.drop_db().await;
}

/// Fails, as if the bus could not take it, every batch holding the event `poison`.
struct ChokesOn {
    bus: EventBus,
    poison: &'static str,
}

#[async_trait]
impl OutboxSink for ChokesOn {
    async fn publish(&self, events: Vec<Event>, topics: &[String]) -> Result<(), SinkError> {
        if events.iter().any(|e| e.id == self.poison) {
            return Err(SinkError::transient("the backend cannot take this event"));
        }
        OutboxSink::publish(&self.bus, events, topics).await
    }

    async fn stored_since(
        &self,
        topic: &str,
        since: DateTime<Utc>,
        keys: &HashSet<EventKey>,
    ) -> Result<HashSet<EventKey>, SinkError> {
        self.bus.stored_since(topic, since, keys).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_that_keeps_failing_while_others_pass_is_set_aside_instead_of_wedging_the_outbox() {
    let db = outbox_db().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bus = bus(dir.path());
    let mut client = db.client().await;
    let tx = client.transaction().await.expect("begin");
    let mut rows = BTreeMap::new();
    for (id, subject) in [
        ("a-1", "deal-1"),
        ("poison", "deal-2"),
        ("b-1", "deal-3"),
        ("a-2", "deal-2"),
        ("b-2", "deal-3"),
    ] {
        rows.insert(id, insert_row(&tx, &["deals"], &event(id, subject)).await);
    }
    tx.commit().await.expect("commit");
    let relay = Relay::new(
        options(&db),
        Arc::new(ChokesOn {
            bus: bus.clone(),
            poison: "poison",
        }),
    )
    .expect("relay");

    // While the row is young the whole batch is retried: nothing is set aside.
    for _ in 1..crmbus_postgres::relay::SUSPECT_ATTEMPTS {
        relay.step().await.expect_err("the batch fails");
    }
    assert_eq!(relay.table().status().await.expect("status").failed, 0);
    // Then the rows go one by one: the others are published, the poison set aside, and
    // deal-2's next event waits for it.
    let report = relay.step().await.expect("step");
    assert_eq!((report.published, report.failed), (3, 1), "{report:?}");
    let failed = relay.table().failed_rows(10).await.expect("failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].id, rows["poison"]);
    assert!(
        failed[0]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("while other rows were published"),
        "{failed:?}"
    );
    let committed: BTreeMap<String, i64> = ["a-1", "b-1", "b-2"]
        .iter()
        .map(|id| (id.to_string(), rows[*id]))
        .collect();
    check_topic(&bus, "deals", &committed, &HashSet::new()).await;
    let status = relay.table().status().await.expect("status");
    assert_eq!((status.pending, status.failed), (1, 1));
    db.drop_db().await;
}
