//! [`MemoryLog`]: an [`EventLog`] held in memory, for tests and for use as a tap.
//!
//! It keeps the whole contract of the trait except durability across a process exit.
//! Like the seed's in-memory backend it also records every published event for
//! assertions: [`MemoryLog::events`], [`MemoryLog::events_of_type`], [`MemoryLog::clear`].

use crate::sync::LockExt;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::LogError;
use crate::event::Event;
use crate::log::{
    EventLog, PartitionInfo, Receipt, StoredEvent, TopicInfo, TopicSpec, DEFAULT_DEDUPE_WINDOW,
};
use crate::partition::partition_for;

/// An in-memory event log. Cloning gives another handle to the same log.
#[derive(Clone)]
pub struct MemoryLog {
    state: Arc<Mutex<MemState>>,
    dedupe_window: Duration,
}

#[derive(Default)]
struct MemState {
    topics: BTreeMap<String, MemTopic>,
    group_offsets: HashMap<(String, String, u32), u64>,
    published: Vec<Event>,
}

struct MemTopic {
    spec: TopicSpec,
    partitions: Vec<MemPartition>,
    dedupe: HashMap<(String, String), (Receipt, Instant)>,
}

#[derive(Default)]
struct MemPartition {
    first_offset: u64,
    records: VecDeque<MemRecord>,
    bytes: u64,
    last_timestamp: Option<DateTime<Utc>>,
}

struct MemRecord {
    offset: u64,
    timestamp: DateTime<Utc>,
    size: u64,
    event: Event,
}

impl MemPartition {
    fn next_offset(&self) -> u64 {
        self.first_offset + self.records.len() as u64
    }

    fn pop_oldest(&mut self) {
        if let Some(r) = self.records.pop_front() {
            self.bytes -= r.size;
            self.first_offset += 1;
        }
    }
}

impl Default for MemoryLog {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryLog {
    /// An empty log with the default dedupe window.
    pub fn new() -> Self {
        Self::with_dedupe_window(DEFAULT_DEDUPE_WINDOW)
    }

    /// An empty log remembering producer ids for `window`.
    pub fn with_dedupe_window(window: Duration) -> Self {
        MemoryLog {
            state: Arc::new(Mutex::new(MemState::default())),
            dedupe_window: window,
        }
    }

    fn lock(&self) -> MutexGuard<'_, MemState> {
        // A panic while holding the lock cannot leave the state half-changed in a way that
        // matters for a test log, so a poisoned lock is simply taken over.
        self.state.locked()
    }

    /// Every event appended (once per append call, whatever the number of topics), oldest first.
    pub fn events(&self) -> Vec<Event> {
        self.lock().published.clone()
    }

    /// The appended events whose `type` is `ty`, oldest first.
    pub fn events_of_type(&self, ty: &str) -> Vec<Event> {
        self.lock()
            .published
            .iter()
            .filter(|e| e.ty == ty)
            .cloned()
            .collect()
    }

    /// Forgets every stored event (topics stay, their offsets keep counting up).
    pub fn clear(&self) {
        let mut st = self.lock();
        st.published.clear();
        for t in st.topics.values_mut() {
            for p in &mut t.partitions {
                while !p.records.is_empty() {
                    p.pop_oldest();
                }
            }
            t.dedupe.clear();
        }
    }
}

fn info(t: &MemTopic) -> TopicInfo {
    TopicInfo {
        spec: t.spec.clone(),
        partition_info: t
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| PartitionInfo {
                partition: i as u32,
                first_offset: p.first_offset,
                next_offset: p.next_offset(),
                corrupt: Vec::new(),
            })
            .collect(),
    }
}

fn partition<'a>(
    st: &'a MemState,
    topic: &str,
    partition: u32,
) -> Result<&'a MemPartition, LogError> {
    let t = st
        .topics
        .get(topic)
        .ok_or_else(|| LogError::TopicNotFound(topic.to_string()))?;
    t.partitions
        .get(partition as usize)
        .ok_or_else(|| LogError::PartitionNotFound {
            topic: topic.to_string(),
            partition,
        })
}

#[async_trait]
impl EventLog for MemoryLog {
    fn backend_name(&self) -> &'static str {
        "memory"
    }

    async fn create_topic(&self, spec: TopicSpec) -> Result<TopicInfo, LogError> {
        spec.validate()?;
        let mut st = self.lock();
        if st.topics.contains_key(&spec.name) {
            return Err(LogError::TopicExists(spec.name));
        }
        let t = MemTopic {
            partitions: (0..spec.partitions)
                .map(|_| MemPartition::default())
                .collect(),
            spec: spec.clone(),
            dedupe: HashMap::new(),
        };
        let i = info(&t);
        st.topics.insert(spec.name, t);
        Ok(i)
    }

    async fn delete_topic(&self, name: &str) -> Result<(), LogError> {
        let mut st = self.lock();
        if st.topics.remove(name).is_none() {
            return Err(LogError::TopicNotFound(name.to_string()));
        }
        st.group_offsets.retain(|(_, t, _), _| t != name);
        Ok(())
    }

    async fn list_topics(&self) -> Result<Vec<TopicInfo>, LogError> {
        Ok(self.lock().topics.values().map(info).collect())
    }

    async fn describe_topic(&self, name: &str) -> Result<TopicInfo, LogError> {
        self.lock()
            .topics
            .get(name)
            .map(info)
            .ok_or_else(|| LogError::TopicNotFound(name.to_string()))
    }

    async fn append(&self, topics: &[String], events: &[Event]) -> Result<Vec<Receipt>, LogError> {
        if topics.is_empty() {
            return Err(LogError::InvalidArgument("no topic given".into()));
        }
        for e in events {
            e.validate()?;
        }
        let mut st = self.lock();
        for name in topics {
            if !st.topics.contains_key(name) {
                return Err(LogError::TopicNotFound(name.clone()));
            }
        }
        let now = Instant::now();
        let window = self.dedupe_window;
        let mut receipts = Vec::with_capacity(topics.len() * events.len());
        let mut fresh = vec![false; events.len()];
        for name in topics {
            let Some(t) = st.topics.get_mut(name) else {
                return Err(LogError::TopicNotFound(name.clone()));
            };
            t.dedupe
                .retain(|_, (_, at)| now.duration_since(*at) < window);
            for (i, e) in events.iter().enumerate() {
                let key = (e.source.clone(), e.id.clone());
                if let Some((r, _)) = t.dedupe.get(&key) {
                    receipts.push(Receipt {
                        duplicate: true,
                        version: None,
                        ..r.clone()
                    });
                    continue;
                }
                let p = partition_for(e, t.spec.partitions);
                let part = &mut t.partitions[p as usize];
                let mut ts = Utc::now();
                if let Some(last) = part.last_timestamp {
                    ts = ts.max(last);
                }
                part.last_timestamp = Some(ts);
                let offset = part.next_offset();
                let size = e.to_json_vec().len() as u64;
                part.bytes += size;
                part.records.push_back(MemRecord {
                    offset,
                    timestamp: ts,
                    size,
                    event: e.clone(),
                });
                let r = Receipt {
                    id: e.id.clone(),
                    topic: name.clone(),
                    partition: p,
                    offset,
                    duplicate: false,
                    version: None,
                };
                t.dedupe.insert(key, (r.clone(), now));
                receipts.push(r);
                fresh[i] = true;
            }
        }
        for (i, e) in events.iter().enumerate() {
            if fresh[i] {
                st.published.push(e.clone());
            }
        }
        Ok(receipts)
    }

    async fn read(
        &self,
        topic: &str,
        partition_no: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<StoredEvent>, LogError> {
        let st = self.lock();
        let p = partition(&st, topic, partition_no)?;
        let start = from.max(p.first_offset);
        let skip = (start - p.first_offset) as usize;
        Ok(p.records
            .iter()
            .skip(skip)
            .take(max)
            .map(|r| StoredEvent {
                partition: partition_no,
                offset: r.offset,
                timestamp: r.timestamp,
                event: r.event.clone(),
                stored_json: None,
            })
            .collect())
    }

    async fn offset_for_time(
        &self,
        topic: &str,
        partition_no: u32,
        time: DateTime<Utc>,
    ) -> Result<u64, LogError> {
        let st = self.lock();
        let p = partition(&st, topic, partition_no)?;
        let idx = p.records.partition_point(|r| r.timestamp < time);
        Ok(p.first_offset + idx as u64)
    }

    async fn commit_offset(
        &self,
        group: &str,
        topic: &str,
        partition_no: u32,
        offset: u64,
    ) -> Result<(), LogError> {
        let mut st = self.lock();
        partition(&st, topic, partition_no)?;
        st.group_offsets
            .insert((group.to_string(), topic.to_string(), partition_no), offset);
        Ok(())
    }

    async fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition_no: u32,
    ) -> Result<Option<u64>, LogError> {
        let st = self.lock();
        partition(&st, topic, partition_no)?;
        Ok(st
            .group_offsets
            .get(&(group.to_string(), topic.to_string(), partition_no))
            .copied())
    }

    async fn enforce_retention(&self) -> Result<u64, LogError> {
        let mut st = self.lock();
        let now = Utc::now();
        let mut removed = 0;
        for t in st.topics.values_mut() {
            let retention = t.spec.retention;
            for p in &mut t.partitions {
                if let Some(max_bytes) = retention.max_bytes {
                    while p.bytes > max_bytes && p.records.len() > 1 {
                        p.pop_oldest();
                        removed += 1;
                    }
                }
                if let Some(age) = retention
                    .max_age
                    .and_then(|a| chrono::Duration::from_std(a).ok())
                {
                    while p.records.front().is_some_and(|r| r.timestamp < now - age) {
                        p.pop_oldest();
                        removed += 1;
                    }
                }
            }
        }
        Ok(removed)
    }

    async fn close(&self) -> Result<(), LogError> {
        Ok(())
    }
}
