//! Subscription filters as JSON (`{"types": [...], "where": [...]}`) and type patterns.
//!
//! A filter that parses must serialize and parse back to itself, and evaluate against an
//! event without panicking. The bytes also serve as a type pattern and a type (split at
//! the first NUL) for `glob_match`, whose `*`-free patterns must match only themselves.
#![no_main]

use crmbus::delivery::{glob_match, Filter};
use crmbus::Event;
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    if let Ok(filter) = serde_json::from_slice::<Filter>(data) {
        let text = serde_json::to_vec(&filter).expect("a filter serializes");
        let back: Filter = serde_json::from_slice(&text).expect("a written filter reads back");
        assert_eq!(back, filter);
        let event = Event::new(
            "deal.won",
            json!({"amount": "1250.00", "owner": {"tier": "gold"}, "lines": [1, 2.5, null]}),
        )
        .subject("deal-1")
        .extension("priority", 3);
        let _ = filter.matches(&event);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let (pattern, ty) = text.split_once('\0').unwrap_or((text, text));
        let hit = glob_match(pattern, ty);
        if !pattern.contains('*') {
            assert_eq!(hit, pattern == ty);
        }
        assert!(glob_match("*", ty));
    }
});
