//! Structured mode: the body is one CloudEvent in the JSON format.
//!
//! Feeds the bytes to `Event::from_json_slice` and to the HTTP reader under
//! `application/cloudevents+json`; both must agree, and an accepted event must be valid
//! and round-trip through its JSON form.
#![no_main]

use crmbus::Event;
use crmbus_server::cloudevents::{events_from_request, STRUCTURED};
use http::{header, HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    let direct = Event::from_json_slice(data);
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(STRUCTURED));
    let via_http = events_from_request(&headers, data);
    match (&direct, &via_http) {
        (Ok(event), Ok(events)) => {
            assert_eq!(events.as_slice(), std::slice::from_ref(event));
            common::check_accepted(event);
        }
        (Err(invalid), Err(err)) => {
            assert!(err.status.is_client_error());
            assert_eq!(invalid.violations.len(), err.errors.len());
        }
        _ => panic!("the library and the HTTP reader disagree"),
    }
});
