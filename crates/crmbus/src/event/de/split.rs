//! Reading a batch in parts, so that threads can share a large one: guesses at element
//! boundaries ([`Event::batch_cuts`]), and the elements between two of them
//! ([`Event::batch_part_from_json_slice`]).
//!
//! Each guess is checked by the part before it, which must end exactly there; the first
//! part starts at the array's `[`. So a cut that fell inside a string is found out. A part
//! gives up (`None`) at anything but valid events in a well-formed array: the caller then
//! reads the batch whole with [`Event::batch_from_json_slice`], whose messages name places
//! in the whole body. So the parts, joined, are always what that reading gives.

use serde::de::{Deserialize, Deserializer};

use super::{Parsed, ParsedVisitor};
use crate::event::Event;

/// One element read as a batch reads it (validated, plain `data` kept as text).
struct Element(Parsed);

impl<'de> Deserialize<'de> for Element {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(ParsedVisitor::INPUT_TEXT)
            .map(Element)
    }
}

/// JSON's whitespace, as serde_json reads it.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\t' | b'\r')
}

fn skip_space(bytes: &[u8], mut at: usize) -> usize {
    while bytes.get(at).copied().is_some_and(is_space) {
        at += 1;
    }
    at
}

impl Event {
    /// Guesses at element boundaries that cut a batch (a JSON array of events) into about
    /// `parts` pieces of similar size: for each `i` in `1..parts`, the first `{` at or
    /// after `i / parts` of `bytes` that follows `}` and `,` and is followed by `"`
    /// (whitespace between them allowed). Ascending, without repeats; empty when no
    /// boundary is found. A guess may lie inside a string that ends in `},{`: only
    /// [`Event::batch_part_from_json_slice`] of the part before it tells.
    pub fn batch_cuts(bytes: &[u8], parts: usize) -> Vec<usize> {
        let mut cuts: Vec<usize> = Vec::new();
        for i in 1..parts {
            let from = (bytes.len() * i / parts).max(cuts.last().map_or(0, |c| c + 1));
            match boundary_from(bytes, from) {
                Some(cut) => cuts.push(cut),
                None => break,
            }
        }
        cuts
    }

    /// The events of a batch from `from` to `to`, read as [`Event::batch_from_json_slice`]
    /// reads them. `from` is 0 (the start of the body, before its `[`) or a cut from
    /// [`Event::batch_cuts`]; `to` is a later cut or `bytes.len()` (the end of the body,
    /// after its `]`). `None` unless the part holds only valid events, each followed by a
    /// comma, with the last followed by `to` itself, or (when `to` is the end) by the
    /// array's `]` and nothing but whitespace. So a `to` that is no element boundary, or a
    /// `from` that is none and so begins no valid event, gives `None`.
    pub fn batch_part_from_json_slice(bytes: &[u8], from: usize, to: usize) -> Option<Vec<Event>> {
        let mut at = if from == 0 {
            let open = skip_space(bytes, 0);
            if bytes.get(open) != Some(&b'[') {
                return None;
            }
            skip_space(bytes, open + 1)
        } else {
            from
        };
        let mut events = Vec::new();
        while at < to {
            let (event, end) = element(bytes, at)?;
            events.push(event);
            let next = skip_space(bytes, end);
            match bytes.get(next) {
                Some(b',') => at = skip_space(bytes, next + 1),
                Some(b']') if to == bytes.len() => {
                    return (skip_space(bytes, next + 1) == to).then_some(events);
                }
                _ => return None,
            }
        }
        (at == to && to < bytes.len()).then_some(events)
    }
}

/// The first `{` at or after `from` that follows `}`, `,` and whitespace, and is followed
/// by whitespace and `"` (a member name). Inside a string a `"` would end it, so only a
/// string that ends in `},{` can hold such a `{`.
fn boundary_from(bytes: &[u8], mut from: usize) -> Option<usize> {
    while from < bytes.len() {
        let close = from + bytes[from..].iter().position(|&b| b == b'}')?;
        let comma = skip_space(bytes, close + 1);
        if bytes.get(comma) == Some(&b',') {
            let open = skip_space(bytes, comma + 1);
            if bytes.get(open) == Some(&b'{')
                && bytes.get(skip_space(bytes, open + 1)) == Some(&b'"')
            {
                return Some(open);
            }
        }
        from = close + 1;
    }
    None
}

/// The valid event that starts at `at` (an object), and where it ends; `None` for
/// anything else.
fn element(bytes: &[u8], at: usize) -> Option<(Event, usize)> {
    let rest = bytes.get(at..)?;
    if rest.first() != Some(&b'{') {
        return None;
    }
    let mut stream = serde_json::Deserializer::from_slice(rest).into_iter::<Element>();
    match stream.next() {
        Some(Ok(Element(Parsed(Ok(event))))) => Some((event, at + stream.byte_offset())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event_json(n: usize, data: &str) -> String {
        format!(
            r#"{{"specversion":"1.0","id":"e-{n}","source":"urn:crm","type":"deal.won","data":{data}}}"#
        )
    }

    fn whole(bytes: &[u8]) -> Vec<Event> {
        Event::batch_from_json_slice(bytes)
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect()
    }

    /// The batch read in `parts` parts at the guessed cuts, if every part accepts it.
    fn in_parts(bytes: &[u8], parts: usize) -> Option<Vec<Event>> {
        let cuts = Event::batch_cuts(bytes, parts);
        if cuts.is_empty() {
            return None;
        }
        let bounds: Vec<usize> = [0].into_iter().chain(cuts).chain([bytes.len()]).collect();
        let mut events = Vec::new();
        for w in bounds.windows(2) {
            events.extend(Event::batch_part_from_json_slice(bytes, w[0], w[1])?);
        }
        Some(events)
    }

    #[test]
    fn the_parts_of_a_batch_are_the_batch() {
        let elements: Vec<String> = (0..9)
            .map(|n| event_json(n, &format!(r#"{{"deal":{n},"note":"a}} ,b"}}"#)))
            .collect();
        for sep in [",", " ,\n\t", ",\r\n  "] {
            let body = format!(" [ {} ]\n", elements.join(sep));
            for parts in [2, 3, 8, 20] {
                let cuts = Event::batch_cuts(body.as_bytes(), parts);
                assert_eq!(cuts.len(), (parts - 1).min(8), "{parts} parts of {body}");
                assert_eq!(
                    in_parts(body.as_bytes(), parts),
                    Some(whole(body.as_bytes()))
                );
            }
        }
    }

    #[test]
    fn a_cut_inside_a_string_is_found_out_by_the_part_before_it() {
        // The middle of the body falls in the first event's long note, which ends in
        // `},{` (so the `{` is followed by a quote, as an element's is).
        let note = format!("{}}},{{", "n".repeat(200));
        let body = format!(
            "[{},{}]",
            event_json(0, &format!(r#"{{"note":"{note}"}}"#)),
            event_json(1, "1")
        );
        let bytes = body.as_bytes();
        let cut = Event::batch_cuts(bytes, 2)[0];
        let real = body.find(r#"{"specversion":"1.0","id":"e-1""#).unwrap();
        assert!(cut < real);
        assert_eq!(Event::batch_part_from_json_slice(bytes, 0, cut), None);
        assert_eq!(in_parts(bytes, 2), None);
        // The boundary itself reads right.
        let mut joined = Event::batch_part_from_json_slice(bytes, 0, real).unwrap();
        joined.extend(Event::batch_part_from_json_slice(bytes, real, bytes.len()).unwrap());
        assert_eq!(joined, whole(bytes));
    }

    #[test]
    fn a_part_gives_up_on_what_the_whole_reading_must_report() {
        let good = event_json(1, "1");
        let invalid = r#"{"specversion":"1.0","id":"","source":"urn:crm","type":"deal.won"}"#;
        for body in [
            format!("[{good},{good},{invalid}]"),
            format!("[{invalid},{good},{good}]"),
            format!("[{good},{good},{good}] x"),
            format!("[{good},{good},{good}"),
            format!("[{good},{good},{good},]"),
            format!("[{good},{good},{good}}}]"),
            format!("{{{good},{good},{good}]"),
        ] {
            assert!(Event::batch_cuts(body.as_bytes(), 2).len() == 1, "{body}");
            assert_eq!(in_parts(body.as_bytes(), 2), None, "{body}");
        }
    }

    #[test]
    fn a_brace_in_a_string_that_goes_on_is_no_cut() {
        // `},{` inside strings, each followed by more of the string: never a guess.
        let elements: Vec<String> = (0..6)
            .map(|n| event_json(n, r#"{"note":"a},{b},{ c"}"#))
            .collect();
        let body = format!("[{}]", elements.join(","));
        let cuts = Event::batch_cuts(body.as_bytes(), 40);
        let starts: Vec<usize> = body
            .match_indices(r#"{"specversion""#)
            .map(|(i, _)| i)
            .skip(1)
            .collect();
        assert_eq!(cuts, starts);
    }

    #[test]
    fn a_batch_without_a_boundary_after_its_middle_has_no_cut() {
        let body = format!("[{}]", event_json(0, "1"));
        assert!(Event::batch_cuts(body.as_bytes(), 2).is_empty());
        assert!(Event::batch_cuts(b"[]", 2).is_empty());
        assert!(Event::batch_cuts(b"", 2).is_empty());
        assert!(Event::batch_cuts(body.as_bytes(), 1).is_empty());
    }
}
