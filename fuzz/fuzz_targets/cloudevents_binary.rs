//! Binary mode: `ce-*` headers carry the attributes, the body is the data.
//!
//! Input: header lines `name: value` up to the first empty line, then the body. Lines that
//! are not a valid header name or value are skipped; `ce-specversion: 1.0` is added when
//! missing so that the request is read in binary mode. An accepted event must be valid and
//! round-trip through its JSON form.
#![no_main]

use crmbus_server::cloudevents::events_from_request;
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[][..]),
    };
    let mut headers = HeaderMap::new();
    for line in head.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let value = line[colon + 1..]
            .strip_prefix(b" ")
            .unwrap_or(&line[colon + 1..]);
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(n, v);
        }
    }
    if !headers.contains_key("ce-specversion") {
        headers.insert("ce-specversion", HeaderValue::from_static("1.0"));
    }
    match events_from_request(&headers, body) {
        Ok(events) => {
            assert_eq!(events.len(), 1);
            common::check_accepted(&events[0]);
        }
        Err(err) => assert!(err.status.is_client_error()),
    }
});
