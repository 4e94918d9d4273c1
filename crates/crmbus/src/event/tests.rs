//! Tests of the event type, its builder and default source, and whole round trips; the
//! helpers here are shared by the tests of `ser`, `de` and `validate`.

use super::*;
use chrono::TimeZone;
use proptest::prelude::*;
use serde_json::json;
use std::sync::Mutex;

/// Serializes the tests that read or change the process-wide default source.
static GLOBAL_SOURCE: Mutex<()> = Mutex::new(());

fn lock_global_source() -> std::sync::MutexGuard<'static, ()> {
    GLOBAL_SOURCE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(super) fn full_event() -> Event {
    let time = FixedOffset::east_opt(2 * 3600)
        .unwrap()
        .with_ymd_and_hms(2024, 5, 17, 9, 30, 15)
        .unwrap()
        + chrono::Duration::milliseconds(250);
    Event {
        id: "evt-1".into(),
        source: "https://crm.example/deals".into(),
        specversion: "1.0".into(),
        ty: "deal.won".into(),
        subject: Some("deal-42".into()),
        time: Some(time),
        datacontenttype: Some("application/json".into()),
        dataschema: Some("https://schemas.example/deal.won/1".into()),
        data: Some(EventData::Json(
            json!({"amount": 1200.5, "currency": "EUR", "lines": [1, 2, {"x": null}]}),
        )),
        extensions: BTreeMap::new(),
    }
    .extension("userid", "u-7")
    .extension("attempt", 3_i64)
    .extension("ratio", "0.25")
    .extension("vip", true)
}

pub(super) fn minimal() -> Value {
    json!({"specversion": "1.0", "id": "1", "source": "urn:test", "type": "t.x"})
}

pub(super) fn with(mut base: Value, name: &str, value: Value) -> Value {
    base.as_object_mut().unwrap().insert(name.into(), value);
    base
}

pub(super) fn without(mut base: Value, name: &str) -> Value {
    base.as_object_mut().unwrap().remove(name);
    base
}

/// The violations of rejected input, as (attribute, message) pairs.
pub(super) fn violations_of(v: Value) -> Vec<(String, String)> {
    let err = Event::from_json_value(v.clone()).expect_err("input must be rejected");
    // The byte path must agree with the value path.
    let bytes = serde_json::to_vec(&v).unwrap();
    assert_eq!(Event::from_json_slice(&bytes).unwrap_err(), err);
    err.violations
        .into_iter()
        .map(|v| (v.attribute, v.message))
        .collect()
}

pub(super) fn attributes_of(v: Value) -> Vec<String> {
    violations_of(v).into_iter().map(|(a, _)| a).collect()
}

pub(super) fn validate_attributes(event: &Event) -> Vec<String> {
    event
        .validate()
        .expect_err("event must be invalid")
        .violations
        .into_iter()
        .map(|v| v.attribute)
        .collect()
}

#[test]
fn full_event_round_trips_through_json_bytes() {
    let event = full_event();
    event.validate().unwrap();
    let bytes = event.to_json_vec();
    let back = Event::from_json_slice(&bytes).unwrap();
    assert_eq!(back, event);
    assert_eq!(back.time.unwrap().offset(), event.time.unwrap().offset());
    assert_eq!(
        back.extension_value("attempt"),
        Some(&ExtensionValue::Number(3.into()))
    );
    assert_eq!(
        back.extension_value("ratio"),
        Some(&ExtensionValue::from("0.25"))
    );
    assert_eq!(
        back.extension_value("vip"),
        Some(&ExtensionValue::Bool(true))
    );
    assert_eq!(back.data_json().unwrap()["currency"], "EUR");
    // serde's Deserialize impl and from_json_value agree with from_json_slice.
    assert_eq!(serde_json::from_slice::<Event>(&bytes).unwrap(), event);
    assert_eq!(
        Event::from_json_value(event.to_json_value()).unwrap(),
        event
    );
}

#[test]
fn a_utc_time_is_written_with_z_and_any_other_offset_is_kept() {
    let mut event = full_event();
    for (given, written) in [
        ("2024-05-17T09:30:15.250+00:00", "2024-05-17T09:30:15.250Z"),
        ("2024-05-17T09:30:15Z", "2024-05-17T09:30:15Z"),
        (
            "2024-05-17T09:30:15.123456-00:00",
            "2024-05-17T09:30:15.123456Z",
        ),
        (
            "2024-05-17T09:30:15.250+02:00",
            "2024-05-17T09:30:15.250+02:00",
        ),
    ] {
        event.time = Some(DateTime::parse_from_rfc3339(given).unwrap());
        let bytes = event.to_json_vec();
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.contains(&format!(r#""time":"{written}""#)), "{text}");
        assert_eq!(event.to_json_value()["time"], written);
        assert_eq!(Event::from_json_slice(&bytes).unwrap(), event);
    }
}

#[test]
fn builder_sets_defaults() {
    let _guard = lock_global_source();
    let before = Utc::now();
    let event = Event::new("lead.created", json!({"name": "Ada"}));
    let after = Utc::now();
    let id = uuid::Uuid::parse_str(&event.id).unwrap();
    assert_eq!(id.get_version(), Some(uuid::Version::SortRand));
    let time = event.time.unwrap();
    assert!(
        before <= time && time <= after,
        "{time} not in [{before}, {after}]"
    );
    assert_eq!(time.offset().local_minus_utc(), 0);
    assert_eq!(event.source, default_source());
    assert_eq!(event.specversion, "1.0");
    assert_eq!(event.ty, "lead.created");
    assert_eq!(event.datacontenttype.as_deref(), Some("application/json"));
    assert_eq!(event.data_json(), Some(&json!({"name": "Ada"})));
    assert!(event.extensions.is_empty());
    event.validate().unwrap();
    // Two events never share an id.
    assert_ne!(Event::new("lead.created", Value::Null).id, event.id);
}

#[test]
fn builder_methods_set_their_attribute() {
    let t = Utc
        .with_ymd_and_hms(2020, 1, 2, 3, 4, 5)
        .unwrap()
        .fixed_offset();
    let event = Event::new("deal.won", json!(1))
        .id("x-1")
        .source("urn:acme:crm")
        .subject("deal-42")
        .time(t)
        .dataschema("https://schemas.example/deal.won/2")
        .datacontenttype("application/vnd.acme+json")
        .extension("companyid", "c-9");
    assert_eq!(event.id, "x-1");
    assert_eq!(event.source, "urn:acme:crm");
    assert_eq!(event.subject.as_deref(), Some("deal-42"));
    assert_eq!(event.time, Some(t));
    assert_eq!(
        event.dataschema.as_deref(),
        Some("https://schemas.example/deal.won/2")
    );
    assert_eq!(
        event.datacontenttype.as_deref(),
        Some("application/vnd.acme+json")
    );
    assert_eq!(
        event.extension_value("companyid"),
        Some(&ExtensionValue::String("c-9".into()))
    );
    event.validate().unwrap();
}

#[test]
fn set_default_source_is_used_by_new() {
    let _guard = lock_global_source();
    let previous = default_source();
    set_default_source("urn:acme:test-source");
    assert_eq!(default_source(), "urn:acme:test-source");
    assert_eq!(
        Event::new("a.b", Value::Null).source,
        "urn:acme:test-source"
    );
    set_default_source(previous);
}

#[test]
fn environment_source_falls_back_when_unset_or_blank() {
    assert_eq!(source_from_env(None), "urn:crmbus:default");
    assert_eq!(source_from_env(Some("  ".into())), "urn:crmbus:default");
    assert_eq!(source_from_env(Some(" urn:acme ".into())), "urn:acme");
}

#[test]
fn extension_value_conversions() {
    assert_eq!(
        ExtensionValue::from("a"),
        ExtensionValue::String("a".into())
    );
    assert_eq!(
        ExtensionValue::from(String::from("b")),
        ExtensionValue::String("b".into())
    );
    assert_eq!(ExtensionValue::from(false), ExtensionValue::Bool(false));
    assert_eq!(ExtensionValue::from(-5_i64).to_string(), "-5");
    assert_eq!(
        ExtensionValue::from(u64::MAX).to_string(),
        u64::MAX.to_string()
    );
    assert_eq!(ExtensionValue::from(7).to_string(), "7");
    assert_eq!(ExtensionValue::from(1.5).to_string(), "1.5");
    assert_eq!(
        ExtensionValue::from(f64::NAN),
        ExtensionValue::String("NaN".into())
    );
    assert_eq!(
        ExtensionValue::from(f64::NEG_INFINITY),
        ExtensionValue::String("-inf".into())
    );
    assert_eq!(ExtensionValue::from("x y").to_string(), "x y");
    assert_eq!(ExtensionValue::from(true).to_string(), "true");
}

// --- property test -----------------------------------------------------------------

/// Floats with short exact decimal forms, which survive JSON text unchanged.
fn exact_float() -> impl Strategy<Value = f64> {
    (any::<i32>(), 0..4_i32).prop_map(|(m, e)| f64::from(m) / f64::from(1 << e))
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        exact_float().prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// CloudEvents String text (letters, digits, punctuation, symbols and spaces): no
/// control characters or noncharacters.
macro_rules! text {
    ($n:literal) => {
        concat!("[\\p{L}\\p{N}\\p{P}\\p{S} ]", $n)
    };
}

fn extension_value() -> impl Strategy<Value = ExtensionValue> {
    prop_oneof![
        text!("{0,16}").prop_map(ExtensionValue::String),
        any::<i32>().prop_map(ExtensionValue::from),
        any::<bool>().prop_map(ExtensionValue::Bool),
    ]
}

fn time() -> impl Strategy<Value = DateTime<FixedOffset>> {
    // 0000-01-01 .. 9999-12-31, any nanosecond, offsets in whole minutes (UTC, written
    // `Z`, as often as any other).
    (
        -62_167_219_200_i64..253_402_214_400,
        0..1_000_000_000_u32,
        prop_oneof![Just(0), -1439..=1439_i32],
    )
        .prop_map(|(secs, nanos, minutes)| {
            let offset = FixedOffset::east_opt(minutes * 60).unwrap();
            DateTime::from_timestamp(secs, nanos)
                .unwrap()
                .with_timezone(&offset)
        })
}

fn event() -> impl Strategy<Value = Event> {
    let names = "[a-z0-9]{1,20}".prop_filter("reserved", |n| !RESERVED_NAMES.contains(&n.as_str()));
    let data = prop_oneof![
        json_value().prop_map(EventData::Json),
        prop::collection::vec(any::<u8>(), 0..48).prop_map(EventData::Binary),
    ];
    (
        (
            text!("{1,24}"),
            "[\\p{L}\\p{N}:/._~%#?=&\"\\\\-]{1,32}",
            text!("{1,24}"),
        ),
        (
            prop::option::of(text!("{1,24}")),
            prop::option::of(time()),
            prop::option::of("(application|text)/[a-z0-9.+-]{1,16}"),
            prop::option::of("https://[a-z]{1,10}\\.example/[a-z0-9/]{0,16}"),
        ),
        prop::option::of(data),
        prop::collection::btree_map(names, extension_value(), 0..5),
    )
        .prop_map(
            |((id, source, ty), (subject, time, datacontenttype, dataschema), data, extensions)| {
                Event {
                    id,
                    source,
                    specversion: "1.0".into(),
                    ty,
                    subject,
                    time,
                    datacontenttype,
                    dataschema,
                    data,
                    extensions,
                }
            },
        )
}

proptest! {
    #[test]
    fn any_valid_event_round_trips(event in event()) {
        prop_assert_eq!(event.validate(), Ok(()));
        let bytes = event.to_json_vec();
        let back = Event::from_json_slice(&bytes).unwrap();
        prop_assert_eq!(&back, &event);
        prop_assert_eq!(back.time.map(|t| *t.offset()), event.time.map(|t| *t.offset()));
        // Read back from storage, the same event.
        let stored = Event::from_stored_json_slice(&bytes).unwrap();
        prop_assert_eq!(&stored, &event);
        prop_assert_eq!(stored.time.map(|t| *t.offset()), event.time.map(|t| *t.offset()));
        // Its JSON data is the stored text, written again exactly as stored, and parsed
        // to the same value on demand.
        prop_assert_eq!(
            matches!(stored.data, Some(EventData::JsonText(_))),
            matches!(event.data, Some(EventData::Json(_)))
        );
        prop_assert_eq!(stored.data_json(), event.data_json());
        prop_assert_eq!(stored.to_json_vec(), bytes.clone());
        prop_assert_eq!(stored.to_json_value(), event.to_json_value());
        // Read from a shared buffer (a record in the middle of a block of records), the
        // same event, whose JSON data is a slice of that buffer, not a copy.
        let mut block = b"record before ".to_vec();
        block.extend_from_slice(&bytes);
        block.extend_from_slice(b" record after");
        let block = bytes::Bytes::from(block);
        let record = block.slice(14..14 + bytes.len());
        let shared = Event::from_stored_json_bytes(&record).unwrap();
        prop_assert_eq!(&shared, &event);
        if let Some(EventData::JsonText(t)) = &shared.data {
            let at = t.as_str().as_ptr() as usize;
            let within = block.as_ptr() as usize..block.as_ptr() as usize + block.len();
            prop_assert!(within.contains(&at), "data was copied out of the buffer");
        }
        prop_assert_eq!(shared.data_json(), event.data_json());
        prop_assert_eq!(shared.to_json_vec(), bytes.clone());
        prop_assert_eq!(shared.to_json_value(), event.to_json_value());
        prop_assert_eq!(serde_json::to_vec(&shared).unwrap(), bytes.clone());
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        prop_assert_eq!(&value, &event.to_json_value());
        prop_assert_eq!(Event::from_json_value(value).unwrap(), event);
    }
}

/// Data nested as deep as the limit is accepted and read back, alone and five levels down
/// (deeper than any envelope crmbus puts an event in: a pull response's
/// `{"deliveries":[{"event": …}]}`, a batch, a dead letter); one level deeper is refused
/// when validated, before anything could store what does not read back.
#[test]
fn data_nested_deeper_than_the_limit_is_refused() {
    use super::validate::MAX_DATA_DEPTH;
    fn nested(levels: usize) -> Value {
        let mut v = json!(1);
        for _ in 0..levels {
            v = json!([v]);
        }
        v
    }
    let ok = Event::new("deal.won", nested(MAX_DATA_DEPTH)).source("urn:x");
    assert_eq!(ok.validate(), Ok(()));
    let bytes = ok.to_json_vec();
    assert_eq!(Event::from_json_slice(&bytes).expect("eager read"), ok);
    let stored = Event::from_stored_json_slice(&bytes).expect("stored read");
    assert_eq!(stored.data_json(), ok.data_json());
    let enveloped = json!({"deliveries": [{"event": {"wrapped": [ok.to_json_value()]}}]});
    let text = serde_json::to_vec(&enveloped).expect("serializes");
    assert!(serde_json::from_slice::<Value>(&text).is_ok());
    let deep = Event::new("deal.won", nested(MAX_DATA_DEPTH + 1)).source("urn:x");
    let refused = deep.validate().expect_err("refused");
    assert_eq!(refused.violations.len(), 1, "{refused:?}");
    assert_eq!(refused.violations[0].attribute, "data");
}
