//! Batch mode: the body is a JSON array of CloudEvents, accepted whole or not at all.
//!
//! Feeds the bytes to `Event::batch_from_json_slice` and to the HTTP reader under
//! `application/cloudevents-batch+json`: the reader accepts exactly when every element is
//! valid (and there is at least one), with the events in order; a rejection names only
//! elements that are invalid.
#![no_main]

use crmbus::Event;
use crmbus_server::cloudevents::{events_from_request, BATCH};
use http::{header, HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    let items = Event::batch_from_json_slice(data);
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(BATCH));
    let via_http = events_from_request(&headers, data);
    match (items, via_http) {
        (Ok(items), Ok(events)) => {
            assert_eq!(items.len(), events.len());
            for (item, event) in items.iter().zip(&events) {
                assert_eq!(item.as_ref().ok(), Some(event));
                common::check_accepted(event);
            }
        }
        (Ok(items), Err(err)) => {
            assert!(items.is_empty() || items.iter().any(Result::is_err));
            for f in &err.errors {
                let index = f
                    .field
                    .strip_prefix('[')
                    .and_then(|r| r.split_once(']'))
                    .and_then(|(i, _)| i.parse::<usize>().ok());
                if let Some(i) = index {
                    assert!(items[i].is_err(), "valid element {i} named: {}", f.field);
                }
            }
        }
        (Err(_), Ok(_)) => panic!("the HTTP reader accepted what the library rejected"),
        (Err(_), Err(err)) => assert_eq!(err.status.as_u16(), 400),
    }
});
