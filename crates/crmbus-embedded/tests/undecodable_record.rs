//! A record that passes its checksum but does not decode as an event (issue 13, item 3):
//! a read stops before it, as before a damaged record, instead of failing the whole batch;
//! a read that starts at it fails with [`LogError::Corrupt`] naming its offset.

use std::sync::Arc;

use crmbus::LogError;
use crmbus_embedded::handles::HandleCache;
use crmbus_embedded::partition::{CorruptCounter, NewRecord, Partition};
use crmbus_embedded::EmbeddedOptions;

fn json(n: u64) -> Vec<u8> {
    format!(
        r#"{{"specversion":"1.0","id":"e-{n}","source":"urn:test","type":"deal.updated","subject":"deal-{n}"}}"#
    )
    .into_bytes()
}

#[test]
fn a_read_stops_before_an_undecodable_record_and_a_read_at_it_names_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = EmbeddedOptions {
        retention_interval: None,
        ..Default::default()
    };
    let p = Arc::new(
        Partition::open(
            "t",
            0,
            dir.path(),
            &opts,
            Arc::new(CorruptCounter::default()),
            HandleCache::new(16),
            None,
        )
        .expect("open partition"),
    );
    let bad = b"{\"not\": \"an event\"".to_vec();
    let (a, b, c, d) = (json(0), json(1), json(3), json(4));
    let records: Vec<NewRecord<'_>> = [&a[..], &b, &bad, &c, &d]
        .iter()
        .enumerate()
        .map(|(i, json)| NewRecord {
            json,
            dedupe_hash: i as u64,
            subject: None,
            intent: 0,
        })
        .collect();
    p.append(&records, &opts).expect("append");
    let (_, next) = p.flush_staged(&opts).expect("flush");
    p.mark_durable(next);

    let first: Vec<u64> = p
        .read(0, 10)
        .expect("the records before it are served")
        .iter()
        .map(|e| e.offset)
        .collect();
    assert_eq!(first, vec![0, 1]);
    match p.read(2, 10) {
        Err(LogError::Corrupt { offset, detail, .. }) => {
            assert_eq!(offset, 2);
            assert!(detail.contains("decode"), "{detail}");
        }
        other => panic!("a read at the record fails naming it: {other:?}"),
    }
    let rest: Vec<u64> = p
        .read(3, 10)
        .expect("the records after it are served")
        .iter()
        .map(|e| e.offset)
        .collect();
    assert_eq!(rest, vec![3, 4]);
}
