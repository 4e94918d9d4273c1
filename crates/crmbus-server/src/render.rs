//! Response bodies that carry events, written straight from each [`Event`] through its
//! `Serialize` (the structured CloudEvents JSON the log stores), not through an
//! intermediate `serde_json::Value`: building that value cost a pull of 1,000 events more
//! CPU than the rest of its rendering (`bench net`'s read-back profile). A pull body goes
//! further: it writes the JSON the log stored, as it is, where the log gave it. The JSON is the
//! same as the `crmbus-api` types the OpenAPI document describes ([`PullResponse`],
//! [`ReadResponse`]); the tests below hold the two to that.
//!
//! [`PullResponse`]: crate::api::PullResponse
//! [`ReadResponse`]: crate::api::ReadResponse

use std::collections::BTreeMap;

use crmbus::Event;
use serde::Serialize;

/// The body of a pull: [`crate::api::PullResponse`]'s JSON, written by
/// [`PullBody::to_json_vec`].
#[derive(Debug)]
pub struct PullBody {
    /// The deliveries (possibly none).
    pub deliveries: Vec<PulledDelivery>,
}

impl PullBody {
    /// The body's JSON. Each event is written from the JSON the log stored, as it is,
    /// where the log gave it ([`PulledDelivery::stored_json`]); only the others are
    /// serialized. Serializing the events was about a fifth of a read-back's server CPU
    /// (`bench net`'s profile), and the stored JSON is already that same JSON.
    pub fn to_json_vec(&self) -> Result<Vec<u8>, serde_json::Error> {
        let room: usize = self
            .deliveries
            .iter()
            .map(|d| 96 + d.ack_id.len() + d.stored_json.as_ref().map_or(512, |j| j.len()))
            .sum();
        let mut out = Vec::with_capacity(16 + room);
        out.extend_from_slice(b"{\"deliveries\":[");
        for (i, d) in self.deliveries.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"ack_id\":");
            serde_json::to_writer(&mut out, &d.ack_id)?;
            out.extend_from_slice(b",\"attempt\":");
            serde_json::to_writer(&mut out, &d.attempt)?;
            out.extend_from_slice(b",\"partition\":");
            serde_json::to_writer(&mut out, &d.partition)?;
            out.extend_from_slice(b",\"offset\":");
            serde_json::to_writer(&mut out, &d.offset)?;
            out.extend_from_slice(b",\"event\":");
            match &d.stored_json {
                Some(json) => out.extend_from_slice(json),
                None => serde_json::to_writer(&mut out, &*d.event)?,
            }
            if let Some(body) = &d.body {
                out.extend_from_slice(b",\"body\":");
                serde_json::to_writer(&mut out, body)?;
            }
            out.push(b'}');
        }
        out.extend_from_slice(b"]}");
        Ok(out)
    }
}

/// One pulled delivery: [`crate::api::DeliveryView`]'s JSON.
#[derive(Debug)]
pub struct PulledDelivery {
    /// Ack (or nack) it with this id before the ack timeout.
    pub ack_id: String,
    /// 1 for the first delivery, then one more each time.
    pub attempt: u32,
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// The event, written as a structured CloudEvent (shared with the engine's queue).
    pub event: std::sync::Arc<Event>,
    /// The event's JSON as the log stored it, written in place of serializing `event`
    /// when present ([`crmbus::delivery::Delivery::stored_json`]).
    pub stored_json: Option<axum::body::Bytes>,
    /// The event shaped by the subscription's transformation, if it has one (the member
    /// is left out when not).
    pub body: Option<serde_json::Value>,
}

/// The body of a read by offset or time: [`crate::api::ReadResponse`]'s JSON.
#[derive(Serialize, Debug)]
pub struct ReadBody {
    /// Events in offset order per partition.
    pub events: Vec<ReadEvent>,
    /// For each partition read, the offset to continue from.
    pub next: BTreeMap<String, u64>,
}

/// The body of a subject read: [`crate::api::SubjectEventsResponse`]'s JSON.
#[derive(Serialize, Debug)]
pub struct SubjectBody {
    /// The topic.
    pub topic: String,
    /// The subject.
    pub subject: String,
    /// The subject's current version.
    pub version: u64,
    /// Its events, oldest first.
    pub events: Vec<SubjectEventBody>,
    /// The version to continue from.
    pub next_version: u64,
}

/// One event of a subject's stream: [`crate::api::SubjectEventView`]'s JSON.
#[derive(Serialize, Debug)]
pub struct SubjectEventBody {
    /// Its version.
    pub version: u64,
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// When the log appended it (RFC 3339).
    pub appended_at: String,
    /// The event, written as a structured CloudEvent.
    pub event: Event,
}

/// One stored event: [`crate::api::StoredView`]'s JSON.
#[derive(Serialize, Debug)]
pub struct ReadEvent {
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// When the log appended it (RFC 3339).
    pub appended_at: String,
    /// The event, written as a structured CloudEvent.
    pub event: Event,
}

/// A time in microseconds since the epoch as RFC 3339 (UTC), as every answer writes times.
pub fn rfc3339(us: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_micros(us)
        .unwrap_or_default()
        .to_rfc3339()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{DeliveryView, PullResponse, ReadResponse, StoredView};
    use crmbus::event::{EventData, ExtensionValue};
    use serde_json::{json, Value};

    /// Events with every kind of member: optional attributes, each kind of extension
    /// (numbers whole and not), JSON data of every shape, binary data, none.
    fn events() -> Vec<Event> {
        let mut out = Vec::new();
        for (i, data) in [
            Some(EventData::Json(
                json!({"deal_id": 42, "amount": 1250.5, "tags": ["a", "b"], "nested": {"x": null}}),
            )),
            Some(EventData::Json(json!("a string"))),
            Some(EventData::Json(json!(7))),
            Some(EventData::Binary(vec![0, 1, 2, 250, 251, 255])),
            None,
        ]
        .into_iter()
        .enumerate()
        {
            let mut e = Event::new("deal.won", json!({}));
            e.id = format!("id-{i}");
            e.source = "urn:crm:test".into();
            e.data = data;
            if i % 2 == 0 {
                e.subject = Some(format!("deal-{i}"));
                e.dataschema = Some("https://schemas.example/deal.won/2".into());
                e.datacontenttype = Some("application/json".into());
                e.time =
                    chrono::DateTime::parse_from_rfc3339("2026-12-03T07:29:37.123456+02:00").ok();
            } else {
                e.time = None;
            }
            e.extensions
                .insert("traceparent".into(), ExtensionValue::String("00-ab".into()));
            e.extensions.insert(
                "priority".into(),
                ExtensionValue::Number(serde_json::Number::from(3)),
            );
            if let Some(n) = serde_json::Number::from_f64(2.5) {
                e.extensions
                    .insert("weight".into(), ExtensionValue::Number(n));
            }
            e.extensions
                .insert("urgent".into(), ExtensionValue::Bool(i == 1));
            out.push(e);
        }
        // An event read back from the embedded log: its data is the stored text.
        let mut stored = Event::from_stored_json_slice(&out[0].to_json_vec()).expect("reads");
        assert!(matches!(stored.data, Some(EventData::JsonText(_))));
        stored.id = "id-stored".into();
        out.push(stored);
        out
    }

    fn as_value<T: Serialize>(body: &T) -> Value {
        serde_json::from_slice(&serde_json::to_vec(body).expect("serialize")).expect("parse")
    }

    #[test]
    fn a_pull_body_is_the_json_of_the_documented_response() {
        let events = events();
        let documented = PullResponse {
            deliveries: events
                .iter()
                .enumerate()
                .map(|(i, e)| DeliveryView {
                    ack_id: format!("m1.{i}"),
                    attempt: i as u32 + 1,
                    partition: i as u32 % 3,
                    offset: 100 + i as u64,
                    event: e.to_json_value(),
                    body: (i % 2 == 1).then(|| serde_json::json!({"shaped": i})),
                })
                .collect(),
        };
        let rendered = PullBody {
            deliveries: events
                .into_iter()
                .enumerate()
                .map(|(i, e)| PulledDelivery {
                    ack_id: format!("m1.{i}"),
                    attempt: i as u32 + 1,
                    partition: i as u32 % 3,
                    offset: 100 + i as u64,
                    // All but two as the embedded log gives them, with the JSON it stored
                    // (written pretty here, so that the test sees it is written as it
                    // is); one from a log that gives only the event, and the stored
                    // event (its data text) serialized.
                    stored_json: (i != 2 && i != 5)
                        .then(|| serde_json::to_vec_pretty(&e).expect("pretty").into()),
                    event: std::sync::Arc::new(e),
                    body: (i % 2 == 1).then(|| serde_json::json!({"shaped": i})),
                })
                .collect(),
        };
        let bytes = rendered.to_json_vec().expect("the pull body");
        let written: Value = serde_json::from_slice(&bytes).expect("the pull body is JSON");
        assert_eq!(written, as_value(&documented));
        let text = String::from_utf8_lossy(&bytes);
        for d in &rendered.deliveries {
            if let Some(stored) = &d.stored_json {
                assert!(text.contains(&*String::from_utf8_lossy(stored)), "{text}");
            }
        }
        // And the client's type reads it back.
        let back: PullResponse =
            serde_json::from_slice(&bytes).expect("the documented type reads the body");
        assert_eq!(back.deliveries.len(), 6);
        // An empty pull.
        let empty = PullBody {
            deliveries: Vec::new(),
        }
        .to_json_vec()
        .expect("empty body");
        assert_eq!(
            serde_json::from_slice::<Value>(&empty).expect("JSON"),
            json!({"deliveries": []})
        );
    }

    #[test]
    fn a_read_body_is_the_json_of_the_documented_response() {
        let events = events();
        let next: BTreeMap<String, u64> = [("0".to_string(), 7), ("2".to_string(), 9)].into();
        let documented = ReadResponse {
            events: events
                .iter()
                .enumerate()
                .map(|(i, e)| StoredView {
                    partition: 0,
                    offset: i as u64,
                    appended_at: "2026-12-03T07:29:37.123456+00:00".into(),
                    event: e.to_json_value(),
                })
                .collect(),
            next: next.clone(),
        };
        let rendered = ReadBody {
            events: events
                .into_iter()
                .enumerate()
                .map(|(i, e)| ReadEvent {
                    partition: 0,
                    offset: i as u64,
                    appended_at: "2026-12-03T07:29:37.123456+00:00".into(),
                    event: e,
                })
                .collect(),
            next,
        };
        assert_eq!(as_value(&rendered), as_value(&documented));
    }
}
