//! Crash test: a writer process is killed with SIGKILL at random moments while it appends;
//! after every kill the log must hold every acknowledged event exactly once, at the offset
//! it was acknowledged with, in acknowledgement order.
//!
//! The writer is the `crmbus-crash-writer` binary of this crate (crmbus-testkit, so that it
//! never ships with crmbus-embedded). The log accumulates over
//! the cycles (up to 50 share one log). Every cycle is verified on a copy of the data
//! directory, so the next writer recovers the crashed state itself (and may be killed
//! while it recovers). Besides the acknowledgements, the check covers what survived
//! unacknowledged: no id twice, contiguous offsets, no partial batch in a partition, no
//! batch kept in some partitions and not others (recovery completes it from the batch
//! journal), and no batch missing before a later batch of the same appender.
//!
//! `CRMBUS_CRASH_CYCLES` sets the number of cycles (default 50) for a longer stress run;
//! beyond 50, a fresh log is started every 50 cycles so that the run stays linear.
//! The kill delays come from a seeded generator: the seed is printed first, and
//! `CRMBUS_KILL_SEED` replays it (the delays, not the timing of the writer's I/O).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use crmbus::{partition_for, EventLog, StoredEvent};
use crmbus_embedded::{EmbeddedLog, EmbeddedOptions};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crmbus_testkit::embedded::{block_on, copy_dir, read_all, segment_files};

const TOPIC: &str = "crash";
const PARTITIONS: u32 = 4;
const APPENDERS: u32 = 4;
/// How long to wait for a writer's first acknowledgement before calling it stuck.
const FIRST_ACK_LIMIT: Duration = Duration::from_secs(120);
/// Cycles that share one log.
const EPOCH: usize = 50;

fn cycles() -> usize {
    match std::env::var("CRMBUS_CRASH_CYCLES") {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("CRMBUS_CRASH_CYCLES must be a number, got '{v}'")),
        Err(_) => 50,
    }
}

/// The seed of the kill delays: `CRMBUS_KILL_SEED`, or a random one; printed.
fn kill_seed() -> u64 {
    let seed = match std::env::var("CRMBUS_KILL_SEED") {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("CRMBUS_KILL_SEED must be a number, got '{v}'")),
        Err(_) => rand::random(),
    };
    eprintln!("kill seed {seed} (CRMBUS_KILL_SEED={seed} replays the kill delays)");
    seed
}

/// One acknowledged event, as the writer reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ack {
    id: String,
    partition: u32,
    offset: u64,
}

fn parse_ack(line: &str) -> Ack {
    let parts: Vec<&str> = line.split(' ').collect();
    match parts.as_slice() {
        [id, p, o] => Ack {
            id: id.to_string(),
            partition: p
                .parse()
                .unwrap_or_else(|_| panic!("bad partition in line '{line}'")),
            offset: o
                .parse()
                .unwrap_or_else(|_| panic!("bad offset in line '{line}'")),
        },
        _ => panic!("writer printed something that is not a receipt: '{line}'"),
    }
}

/// The appender and batch numbers a writer put in an event id: `c<cycle>-a<a>-b<b>-e<i>`.
fn id_parts(id: &str) -> (u64, u64, u64, u64) {
    let nums: Vec<u64> = id
        .split('-')
        .map(|p| {
            p.get(1..)
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unexpected event id '{id}'"))
        })
        .collect();
    match nums.as_slice() {
        [c, a, b, e] => (*c, *a, *b, *e),
        _ => panic!("unexpected event id '{id}'"),
    }
}

fn options() -> EmbeddedOptions {
    EmbeddedOptions {
        retention_interval: None,
        segment_bytes: 64 * 1024,
        ..EmbeddedOptions::default()
    }
}

/// Kills the child with SIGKILL and checks that the kill is what ended it.
fn kill(child: &mut Child, stderr: thread::JoinHandle<String>, cycle: usize) {
    if let Ok(Some(status)) = child.try_wait() {
        panic!(
            "cycle {cycle}: the writer exited by itself ({status}): {}",
            stderr.join().unwrap_or_default()
        );
    }
    child.kill().expect("send SIGKILL to the writer");
    let status = child.wait().expect("wait for the writer");
    if status.signal() != Some(libc::SIGKILL) {
        panic!(
            "cycle {cycle}: the writer ended with {status}, not by SIGKILL: {}",
            stderr.join().unwrap_or_default()
        );
    }
}

/// Starts a writer, kills it after `delay`, and returns the receipts it printed
/// completely (a partial last line is not an acknowledgement).
fn run_writer(data: &Path, cycle: usize, delay: Duration) -> Vec<Ack> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crmbus-crash-writer"))
        .arg(data)
        .arg(format!("c{cycle}"))
        .arg(APPENDERS.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start crmbus-crash-writer");
    let stdout = child.stdout.take().expect("writer stdout");
    let mut stderr = child.stderr.take().expect("writer stderr");
    let (tx, rx) = mpsc::channel::<String>();
    let reader = thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut buf = Vec::new();
        let mut partial = 0usize;
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) => break,
                Ok(_) if buf.last() == Some(&b'\n') => {
                    buf.pop();
                    let line = String::from_utf8(buf.clone()).expect("writer output is UTF-8");
                    if tx.send(line).is_err() {
                        break;
                    }
                }
                Ok(n) => {
                    // Killed in the middle of a line: not acknowledged. Only the last line
                    // can be partial.
                    partial = n;
                }
                Err(e) => panic!("reading the writer's stdout: {e}"),
            }
        }
        partial
    });
    let errors = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let mut lines = Vec::new();
    // Odd cycles count the delay from the writer's first acknowledgement, so that every
    // other cycle is guaranteed to kill an active writer; even ones count it from the
    // start, which also kills writers while they open and recover the log.
    if cycle % 2 == 1 {
        match rx.recv_timeout(FIRST_ACK_LIMIT) {
            Ok(line) => lines.push(line),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "cycle {cycle}: no acknowledgement from the writer ({e}): {}",
                    errors.join().unwrap_or_default()
                );
            }
        }
    }
    // The (seeded) moment of the kill is what this test varies, not a wait for something.
    thread::sleep(delay);
    kill(&mut child, errors, cycle);
    drop(child.stdin.take());
    let partial = reader.join().expect("stdout reader");
    lines.extend(rx.try_iter());
    if partial > 0 {
        eprintln!("cycle {cycle}: ignored a partial last line of {partial} bytes");
    }
    lines.iter().map(|l| parse_ack(l)).collect()
}

/// What a writer put in an event's data.
struct Meta {
    cycle: u64,
    appender: u64,
    batch: u64,
    index: u64,
    size: u64,
    in_partition: u64,
}

fn meta_of(e: &StoredEvent) -> Meta {
    let (cycle, appender, batch, index) = id_parts(&e.event.id);
    let data = e.event.data_json().expect("JSON data");
    let field = |name: &str| {
        data.get(name)
            .and_then(|v| v.as_u64())
            .unwrap_or_else(|| panic!("event {} has no '{name}'", e.event.id))
    };
    assert_eq!(field("appender"), appender, "event {}", e.event.id);
    assert_eq!(field("batch"), batch, "event {}", e.event.id);
    assert_eq!(field("index"), index, "event {}", e.event.id);
    Meta {
        cycle,
        appender,
        batch,
        index,
        size: field("size"),
        in_partition: field("in_partition"),
    }
}

/// Opens a copy of the crashed data directory and checks it against every
/// acknowledgement so far. Returns the number of events held.
fn verify(
    data: &Path,
    scratch: &Path,
    acks: &[Vec<Ack>],
    first_cycle: usize,
    cycle: usize,
) -> usize {
    if scratch.exists() {
        std::fs::remove_dir_all(scratch).expect("remove the previous copy");
    }
    if !data.join("meta.redb").exists() {
        // Killed before the log was even created: nothing can have been acknowledged.
        assert!(acks.iter().all(Vec::is_empty), "acks without a log");
        return 0;
    }
    copy_dir(data, scratch).expect("copy the data directory");
    let log = EmbeddedLog::open(scratch, options())
        .unwrap_or_else(|e| panic!("cycle {cycle}: reopen after SIGKILL failed: {e}"));
    let stored: Vec<Vec<StoredEvent>> = block_on(async {
        let mut parts = Vec::new();
        match log.describe_topic(TOPIC).await {
            Ok(info) => {
                assert_eq!(info.spec.partitions, PARTITIONS);
                for p in &info.partition_info {
                    let events = read_all(&log, TOPIC, p.partition, 0)
                        .await
                        .unwrap_or_else(|e| panic!("cycle {cycle}: read partition {p:?}: {e}"));
                    assert_eq!(p.first_offset, 0, "nothing is ever deleted");
                    assert_eq!(
                        events.len() as u64,
                        p.next_offset - p.first_offset,
                        "cycle {cycle}: partition {} serves fewer events than its offsets say",
                        p.partition
                    );
                    parts.push(events);
                }
            }
            Err(crmbus::LogError::TopicNotFound(_)) => {
                assert!(
                    acks.iter().all(Vec::is_empty),
                    "cycle {cycle}: acknowledged events but the topic is missing"
                );
            }
            Err(e) => panic!("cycle {cycle}: describe: {e}"),
        }
        parts
    });
    assert_eq!(
        log.corrupt_records(),
        0,
        "cycle {cycle}: a SIGKILL must not leave corrupt records"
    );
    block_on(log.close()).expect("close");
    drop(log);

    // Where every stored id is, and no id twice anywhere in the topic.
    let mut at: HashMap<&str, (u32, u64)> = HashMap::new();
    for (p, events) in stored.iter().enumerate() {
        for (i, e) in events.iter().enumerate() {
            assert_eq!(
                e.offset, i as u64,
                "cycle {cycle}: partition {p} offsets are not contiguous"
            );
            assert_eq!(e.partition, p as u32);
            assert_eq!(
                partition_for(&e.event, PARTITIONS),
                p as u32,
                "cycle {cycle}: event {} is in the wrong partition",
                e.event.id
            );
            if let Some(prev) = at.insert(&e.event.id, (p as u32, e.offset)) {
                panic!(
                    "cycle {cycle}: event {} is stored twice: at {prev:?} and at ({p}, {})",
                    e.event.id, e.offset
                );
            }
        }
    }

    // Every acknowledgement, at exactly its offset.
    for (i, cycle_acks) in acks.iter().enumerate() {
        let c = first_cycle + i;
        for a in cycle_acks {
            let found = at.get(a.id.as_str()).copied();
            assert_eq!(
                found,
                Some((a.partition, a.offset)),
                "cycle {cycle}: event {} acknowledged in cycle {c} at ({}, {}) is not there",
                a.id,
                a.partition,
                a.offset
            );
        }
        // Per appender and partition, acknowledgement order is offset order; per
        // appender, batches are acknowledged in the order they were made.
        let mut last: HashMap<(u64, u32), u64> = HashMap::new();
        let mut last_batch: HashMap<u64, (u64, u64)> = HashMap::new();
        for a in cycle_acks {
            let (_, appender, batch, index) = id_parts(&a.id);
            if let Some(prev) = last.insert((appender, a.partition), a.offset) {
                assert!(
                    prev < a.offset,
                    "cycle {cycle}: appender {appender} acknowledged {} at offset {} after \
                     offset {prev} of partition {}",
                    a.id,
                    a.offset,
                    a.partition
                );
            }
            if let Some(prev) = last_batch.insert(appender, (batch, index)) {
                assert!(
                    prev < (batch, index),
                    "cycle {cycle}: appender {appender} acknowledged {} after {prev:?}",
                    a.id
                );
            }
        }
    }

    // What survived, acknowledged or not, is whole batches in order:
    // - in each partition, cycles never go back, and each appender's events go forward;
    // - a batch's events in a partition are contiguous and all there (no partial batch);
    // - an appender started a batch only after the previous one was acknowledged, so every
    //   batch before its last surviving one survived completely.
    let mut batch_counts: BTreeMap<(u64, u64, u64), (u64, u64)> = BTreeMap::new();
    for (p, events) in stored.iter().enumerate() {
        let metas: Vec<Meta> = events.iter().map(meta_of).collect();
        let mut last_cycle = 0;
        let mut last_of: HashMap<(u64, u64), (u64, u64)> = HashMap::new();
        for (e, m) in events.iter().zip(&metas) {
            assert!(
                m.cycle >= last_cycle,
                "cycle {cycle}: partition {p} holds cycle {} after cycle {last_cycle}",
                m.cycle
            );
            last_cycle = m.cycle;
            if let Some(prev) = last_of.insert((m.cycle, m.appender), (m.batch, m.index)) {
                assert!(
                    prev < (m.batch, m.index),
                    "cycle {cycle}: partition {p} offset {}: {} follows {prev:?}",
                    e.offset,
                    e.event.id
                );
            }
        }
        // Each batch's events in this partition are contiguous and all there.
        let mut i = 0;
        while i < events.len() {
            let m = &metas[i];
            assert!(m.in_partition >= 1, "event {}", events[i].event.id);
            let group = i..i + m.in_partition as usize;
            assert!(
                group.end <= events.len(),
                "cycle {cycle}: partition {p}: the batch of {} is cut short at the end",
                events[i].event.id
            );
            for j in group.clone() {
                let n = &metas[j];
                assert!(
                    (n.cycle, n.appender, n.batch, n.in_partition)
                        == (m.cycle, m.appender, m.batch, m.in_partition),
                    "cycle {cycle}: partition {p} offset {}: {} interrupts the batch of {}",
                    events[j].offset,
                    events[j].event.id,
                    events[i].event.id
                );
            }
            let entry = batch_counts
                .entry((m.cycle, m.appender, m.batch))
                .or_insert((0, m.size));
            entry.0 += m.in_partition;
            i = group.end;
        }
    }
    // A batch spanning partitions is all-or-nothing across them too (the batch journal):
    // whatever survived of it, acknowledged or not, is all of it.
    for (&(c, a, b), &(found, size)) in &batch_counts {
        assert_eq!(
            found, size,
            "cycle {cycle}: batch {b} of appender {a} in cycle {c} survived in some \
             partitions only ({found} of {size} events)"
        );
    }
    let mut newest: HashMap<(u64, u64), u64> = HashMap::new();
    for (&(c, a, b), _) in batch_counts.iter() {
        let n = newest.entry((c, a)).or_insert(b);
        *n = (*n).max(b);
    }
    for (&(c, a), &newest_batch) in &newest {
        for b in 0..newest_batch {
            match batch_counts.get(&(c, a, b)) {
                Some(&(found, size)) => assert_eq!(
                    found, size,
                    "cycle {cycle}: batch {b} of appender {a} in cycle {c} is incomplete \
                     although batch {newest_batch} was started after it"
                ),
                None => panic!(
                    "cycle {cycle}: batch {b} of appender {a} in cycle {c} is missing although \
                     batch {newest_batch} was started after it"
                ),
            }
        }
    }
    stored.iter().map(Vec::len).sum()
}

#[test]
fn sigkill_keeps_every_acknowledged_event_once_and_in_order() {
    let root = tempfile::tempdir().expect("temp dir");
    let cycles = cycles();
    let seed = kill_seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut total_acked = 0;
    let mut total_held = 0;
    let mut killed_active = 0;
    let mut segments = 0;
    // Each cycle checks the whole log, so a long stress run starts a fresh log every
    // EPOCH cycles to stay linear; the default run is one epoch.
    for epoch in 0..cycles.div_ceil(EPOCH) {
        let data = root.path().join(format!("data-{epoch}"));
        let scratch = root.path().join("verify");
        let mut acks: Vec<Vec<Ack>> = Vec::new();
        let mut held = 0;
        for cycle in epoch * EPOCH..cycles.min((epoch + 1) * EPOCH) {
            let delay = Duration::from_millis(rng.random_range(5..120));
            acks.push(run_writer(&data, cycle, delay));
            held = verify(&data, &scratch, &acks, epoch * EPOCH, cycle);
        }
        total_acked += acks.iter().map(Vec::len).sum::<usize>();
        killed_active += acks.iter().filter(|a| !a.is_empty()).count();
        total_held += held;
        if data.exists() {
            segments += (0..PARTITIONS)
                .map(|p| segment_files(&data, TOPIC, p).len())
                .sum::<usize>();
        }
        let _ = std::fs::remove_dir_all(&data);
    }
    eprintln!(
        "seed {seed}: {cycles} kills: {total_acked} events acknowledged, {total_held} held, \
         {killed_active} cycles with acknowledgements, {segments} segment files"
    );
    // Every acknowledged event is held (verify checks it after every kill), so the
    // difference is what survived unacknowledged: writes a kill caught between the
    // append and its acknowledgement. Without any, the checks of unacknowledged survivors
    // (whole batches, across partitions too; no gap before a later batch) saw nothing.
    assert!(
        total_held > total_acked,
        "seed {seed}: no kill in {cycles} cycles caught a write before its acknowledgement \
         ({total_acked} acknowledged, {total_held} held)"
    );
}
