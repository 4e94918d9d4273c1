//! A batch journal of the previous format opens: its intents carry the events, and the
//! state a crash left with it — the batch's intent durable in the journal, its events in
//! some partitions only — is rebuilt here on disk; reopening must complete the batch
//! without duplicating what is already there, even when the dedupe window has passed
//! meanwhile. (This version writes intents that are rolled back instead: see
//! `batch_rollback.rs`.)

use std::time::Duration;

use crmbus::clock::{Clock, ManualClock};
use crmbus::{partition_for, Event, EventLog, TopicSpec};
use crmbus_embedded::batch_journal::{
    encode_done, encode_intent, encode_topic_deleted, pending_intents, FILE_NAME,
};
use crmbus_embedded::{Durability, EmbeddedLog};

mod common;
use common::{append_to_journal, deal, ids_by_partition, opts, two_topics_with_an_event_in_one};

#[tokio::test]
async fn a_batch_left_in_some_partitions_is_completed_on_open_once_and_only_once() {
    for durability in [Durability::Fsync, Durability::Os] {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new(1_700_000_000_000_000);
        let batch: Vec<Event> = (0..12).map(deal).collect();
        let first_partition = partition_for(&batch[0], 4);
        let (here, missing): (Vec<Event>, Vec<Event>) = batch
            .iter()
            .cloned()
            .partition(|e| partition_for(e, 4) == first_partition);
        assert!(!missing.is_empty(), "the batch must span partitions");
        let from;
        {
            let log = EmbeddedLog::open(dir.path(), opts(&clock, durability)).expect("open");
            log.create_topic(TopicSpec::new("deals", 4))
                .await
                .expect("create");
            let earlier: Vec<Event> = (100..104).map(deal).collect();
            for e in &earlier {
                log.append(&["deals".to_string()], std::slice::from_ref(e))
                    .await
                    .expect("append");
            }
            let info = log.describe_topic("deals").await.expect("describe");
            from = info
                .partition_info
                .iter()
                .map(|p| p.next_offset)
                .collect::<Vec<u64>>();
            // What the crash left: the batch's part in one partition only.
            log.append(&["deals".to_string()], &here)
                .await
                .expect("append part");
        }
        // ...and its intent, durable in the journal, with no done mark.
        let jsons: Vec<Vec<u8>> = batch.iter().map(Event::to_json_vec).collect();
        let refs: Vec<&[u8]> = jsons.iter().map(Vec::as_slice).collect();
        append_to_journal(
            dir.path(),
            &encode_intent(7, clock.now_micros(), &[("deals", from.clone())], &refs),
        );
        // Long enough for the dedupe window to forget the part that is there.
        clock.advance(Duration::from_secs(3600));

        let log = EmbeddedLog::open(dir.path(), opts(&clock, durability)).expect("reopen");
        let stored = ids_by_partition(&log, "deals").await;
        let mut all: Vec<&String> = stored.values().flatten().collect();
        all.sort();
        let mut expected: Vec<String> = (0..12)
            .chain(100..104)
            .map(|n| format!("evt-{n}"))
            .collect();
        expected.sort();
        let expected: Vec<&String> = expected.iter().collect();
        assert_eq!(
            all, expected,
            "{durability:?}: the batch whole, nothing twice"
        );
        for e in &batch {
            assert!(
                stored[&partition_for(e, 4)].contains(&e.id),
                "{durability:?}: {} is in its own partition",
                e.id
            );
        }
        let journal = std::fs::read(dir.path().join(FILE_NAME)).expect("journal");
        assert!(
            pending_intents(&journal).expect("read journal").is_empty(),
            "{durability:?}: no intent is left once its append is complete"
        );
        drop(log);

        // Opening again changes nothing.
        let log = EmbeddedLog::open(dir.path(), opts(&clock, durability)).expect("reopen");
        assert_eq!(ids_by_partition(&log, "deals").await, stored);
    }
}

#[tokio::test]
async fn an_event_published_to_two_topics_is_completed_in_the_missing_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_700_000_000_000_000);
    let e = two_topics_with_an_event_in_one(dir.path(), &clock).await;
    let json = e.to_json_vec();
    append_to_journal(
        dir.path(),
        &encode_intent(
            3,
            clock.now_micros(),
            &[("crm", vec![0, 0]), ("erp", vec![0, 0])],
            &[&json],
        ),
    );
    let log = EmbeddedLog::open(dir.path(), opts(&clock, Durability::Fsync)).expect("reopen");
    for t in ["crm", "erp"] {
        let ids: Vec<String> = ids_by_partition(&log, t)
            .await
            .into_values()
            .flatten()
            .collect();
        assert_eq!(ids, vec!["evt-1".to_string()], "topic {t}");
    }
}

#[tokio::test]
async fn intents_marked_done_are_left_alone_and_live_appends_leave_none_pending() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_700_000_000_000_000);
    {
        let log = EmbeddedLog::open(dir.path(), opts(&clock, Durability::Fsync)).expect("open");
        log.create_topic(TopicSpec::new("deals", 4))
            .await
            .expect("create");
        // Batches spanning partitions and a two-topic publish, acknowledged normally.
        log.create_topic(TopicSpec::new("audit", 1))
            .await
            .expect("create");
        let batch: Vec<Event> = (0..20).map(deal).collect();
        log.append(&["deals".to_string()], &batch)
            .await
            .expect("append");
        log.append(&["deals".to_string(), "audit".to_string()], &[deal(50)])
            .await
            .expect("append");
    }
    // Both appends wrote an intent and, once durable, its done mark (flushed at close).
    let bytes = std::fs::read(dir.path().join(FILE_NAME)).expect("journal");
    assert!(
        !bytes.is_empty(),
        "appends spanning partitions are journalled"
    );
    assert!(pending_intents(&bytes).expect("read journal").is_empty());
    // A done intent whose events are not in the log must not be "completed".
    let ghost = deal(999).to_json_vec();
    append_to_journal(
        dir.path(),
        &encode_intent(
            1_000,
            clock.now_micros(),
            &[("deals", vec![0, 0, 0, 0])],
            &[&ghost],
        ),
    );
    append_to_journal(dir.path(), &encode_done(1_000));
    let log = EmbeddedLog::open(dir.path(), opts(&clock, Durability::Fsync)).expect("reopen");
    let deals: Vec<String> = ids_by_partition(&log, "deals")
        .await
        .into_values()
        .flatten()
        .collect();
    assert_eq!(deals.len(), 21, "{deals:?}");
    assert!(!deals.contains(&"evt-999".to_string()));
    let audit: Vec<String> = ids_by_partition(&log, "audit")
        .await
        .into_values()
        .flatten()
        .collect();
    assert_eq!(audit, vec!["evt-50".to_string()]);
}

#[tokio::test]
async fn an_event_the_append_found_a_duplicate_is_not_stored_again_after_the_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_700_000_000_000_000);
    let old = deal(1);
    let retry = deal(2);
    let (here, missing): (Vec<Event>, Vec<Event>) = [old.clone(), retry.clone()]
        .into_iter()
        .partition(|e| partition_for(e, 4) == partition_for(&old, 4));
    let from;
    {
        let log = EmbeddedLog::open(dir.path(), opts(&clock, Durability::Fsync)).expect("open");
        log.create_topic(TopicSpec::new("deals", 4))
            .await
            .expect("create");
        // The producer's first attempt stored `old`; a minute later it sends a batch that
        // repeats `old` (a duplicate, within the window) with a new event.
        log.append(&["deals".to_string()], std::slice::from_ref(&old))
            .await
            .expect("append");
        clock.advance(Duration::from_secs(60));
        from = log
            .describe_topic("deals")
            .await
            .expect("describe")
            .partition_info
            .iter()
            .map(|p| p.next_offset)
            .collect::<Vec<u64>>();
        // The crash left the batch's new event unwritten (when it hashes elsewhere).
        let new_here: Vec<Event> = here.into_iter().filter(|e| e.id != old.id).collect();
        if !new_here.is_empty() {
            log.append(&["deals".to_string()], &new_here)
                .await
                .expect("append");
        }
    }
    assert!(missing.len() <= 1);
    let jsons = [old.to_json_vec(), retry.to_json_vec()];
    append_to_journal(
        dir.path(),
        &encode_intent(
            9,
            clock.now_micros(),
            &[("deals", from)],
            &[jsons[0].as_slice(), jsons[1].as_slice()],
        ),
    );
    // Restarted long after: the dedupe window no longer remembers `old`.
    clock.advance(Duration::from_secs(3600));
    let log = EmbeddedLog::open(dir.path(), opts(&clock, Durability::Fsync)).expect("reopen");
    let mut ids: Vec<String> = ids_by_partition(&log, "deals")
        .await
        .into_values()
        .flatten()
        .collect();
    ids.sort();
    assert_eq!(ids, vec!["evt-1".to_string(), "evt-2".to_string()]);
}

#[tokio::test]
async fn a_pending_intent_is_not_replayed_into_a_topic_deleted_and_created_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_700_000_000_000_000);
    let batch: Vec<Event> = (0..8).map(deal).collect();
    {
        // The topic as it is after being deleted and created again: empty.
        let log = EmbeddedLog::open(dir.path(), opts(&clock, Durability::Fsync)).expect("open");
        log.create_topic(TopicSpec::new("deals", 4))
            .await
            .expect("create");
    }
    // What the journal holds: an intent on the old topic whose done mark was lost, then the
    // old topic's deletion mark.
    let jsons: Vec<Vec<u8>> = batch.iter().map(Event::to_json_vec).collect();
    let refs: Vec<&[u8]> = jsons.iter().map(Vec::as_slice).collect();
    append_to_journal(
        dir.path(),
        &encode_intent(1, clock.now_micros(), &[("deals", vec![0; 4])], &refs),
    );
    append_to_journal(dir.path(), &encode_topic_deleted(2, "deals"));
    let log = EmbeddedLog::open(dir.path(), opts(&clock, Durability::Fsync)).expect("reopen");
    let ids: Vec<String> = ids_by_partition(&log, "deals")
        .await
        .into_values()
        .flatten()
        .collect();
    assert!(
        ids.is_empty(),
        "the deleted topic's batch came back: {ids:?}"
    );
    drop(log);

    // Deleting a topic writes that mark: found in the journal after a delete.
    let log = EmbeddedLog::open(dir.path(), opts(&clock, Durability::Fsync)).expect("reopen");
    log.delete_topic("deals").await.expect("delete");
    let bytes = std::fs::read(dir.path().join(FILE_NAME)).expect("journal");
    let mark = encode_topic_deleted(0, "deals");
    // The frame's kind and name (its id and checksum differ).
    let name_at = bytes
        .windows(5)
        .position(|w| w == b"deals")
        .expect("a deletion mark naming the topic");
    assert_eq!(bytes[name_at - 9], mark[8], "frame kind");
}
