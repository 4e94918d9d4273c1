//! Tests of writing the structured JSON form.

use super::super::tests::{full_event, minimal};
use super::*;
use crate::event::{Event, EventData};
use serde_json::json;

#[test]
fn structured_form_uses_cloudevents_member_names() {
    let event = full_event();
    let v: Value = serde_json::from_slice(&event.to_json_vec()).unwrap();
    assert_eq!(
        v,
        json!({
            "specversion": "1.0",
            "id": "evt-1",
            "source": "https://crm.example/deals",
            "type": "deal.won",
            "subject": "deal-42",
            "time": "2024-05-17T09:30:15.250+02:00",
            "datacontenttype": "application/json",
            "dataschema": "https://schemas.example/deal.won/1",
            "userid": "u-7",
            "attempt": 3,
            "ratio": "0.25",
            "vip": true,
            "data": {"amount": 1200.5, "currency": "EUR", "lines": [1, 2, {"x": null}]}
        })
    );
    assert_eq!(v, event.to_json_value());
}

#[test]
fn absent_optionals_are_omitted() {
    let event = Event::from_json_value(minimal()).unwrap();
    assert_eq!(event.subject, None);
    assert_eq!(event.data, None);
    let v: Value = serde_json::from_slice(&event.to_json_vec()).unwrap();
    assert_eq!(v, minimal());
    assert_eq!(event.to_json_value(), minimal());
}

#[test]
fn binary_data_round_trips_via_data_base64() {
    let bytes: Vec<u8> = (0..=255).collect();
    let event = Event::new("file.uploaded", Value::Null)
        .binary_data(bytes.clone(), "application/octet-stream");
    let v: Value = serde_json::from_slice(&event.to_json_vec()).unwrap();
    assert_eq!(v["data_base64"], BASE64.encode(&bytes));
    assert!(v.get("data").is_none());
    assert_eq!(v["datacontenttype"], "application/octet-stream");
    let back = Event::from_json_slice(&event.to_json_vec()).unwrap();
    assert_eq!(back.data, Some(EventData::Binary(bytes)));
    assert_eq!(back.data_json(), None);
    assert_eq!(back, event);
}

#[test]
fn reserved_extension_names_are_not_serialized() {
    let event = full_event().extension("id", "shadow");
    let v: Value = serde_json::from_slice(&event.to_json_vec()).unwrap();
    assert_eq!(v["id"], "evt-1");
    assert_eq!(v, event.to_json_value());
    assert!(event.validate().is_err());
}
