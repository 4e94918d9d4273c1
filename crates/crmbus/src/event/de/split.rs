//! Reading a batch in parts, so that threads can share a large one: guesses at element
//! boundaries ([`Event::batch_cuts`]), the elements from one guess on
//! ([`Event::batch_part_from_json_slice`]), and the parts joined into the batch
//! ([`Event::batch_from_parts`]).
//!
//! A guess is a `{` that follows `},` and precedes `"`: the start of an element, or of an
//! object inside one (in an array of objects in `data`, say, or in a string that ends in
//! `},{`). Each part reads from its start until it reaches an element boundary at or past
//! the next guess, and says where that was. Joining checks that each part began where the
//! one before it ended; a part that began inside an element is read again from the right
//! place, on the joining thread. A part that refuses anything else (an invalid element,
//! malformed JSON) gives `None`, and the caller reads the batch whole with
//! [`Event::batch_from_json_slice`], whose messages name places in the whole body. So the
//! parts, joined, are always what that reading gives.

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
    /// (whitespace between them allowed). Ascending, without repeats; empty when no such
    /// `{` is found. A guess may be the start of an object inside an element: see
    /// [`Event::batch_from_parts`].
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

    /// The events of a batch from `from` on, read as [`Event::batch_from_json_slice`]
    /// reads them, up to the first element boundary at or past `to`. `from` is 0 (the
    /// start of the body, before its `[`) or the start of an element (a guess from
    /// [`Event::batch_cuts`], or where a part before ended). The part ends at the start of
    /// the first element at or past `to`, or, when the elements end before that, at the
    /// end of the body once the array's `]` is followed by nothing but whitespace. `None`
    /// if anything on the way is not a valid event, a comma or that end (an empty array
    /// included: the whole reading answers it).
    pub fn batch_part_from_json_slice(bytes: &[u8], from: usize, to: usize) -> Option<BatchPart> {
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
                Some(b']') => {
                    let end = skip_space(bytes, next + 1);
                    return (end == bytes.len()).then_some(BatchPart { events, end });
                }
                _ => return None,
            }
        }
        Some(BatchPart { events, end: at })
    }

    /// The batch from its parts: `parts[i]` read from `bounds[i]` up to `bounds[i + 1]`
    /// (`bounds` is 0, the cuts, and the body's length; `None` where a part refused or
    /// was not read). A part that did not begin where the one before it ended (its
    /// start was inside an element) is read again from there, on this thread; a part that
    /// the one before it read past is skipped. `None` if any part that began in the
    /// right place refused, or the parts do not end at the end of the body: then read the
    /// batch whole with [`Event::batch_from_json_slice`].
    pub fn batch_from_parts(
        bytes: &[u8],
        bounds: &[usize],
        parts: Vec<Option<BatchPart>>,
    ) -> Option<Vec<Event>> {
        let mut events = Vec::new();
        let mut next = 0;
        for (i, part) in parts.into_iter().enumerate() {
            let (from, to) = (*bounds.get(i)?, *bounds.get(i + 1)?);
            if next >= to && to < bytes.len() {
                // Read by the part before, which ran past a guess inside an element.
                continue;
            }
            let part = if from == next {
                part?
            } else {
                Event::batch_part_from_json_slice(bytes, next, to)?
            };
            events.extend(part.events);
            next = part.end;
        }
        (next == bytes.len()).then_some(events)
    }
}

/// Events read from part of a batch ([`Event::batch_part_from_json_slice`]), and where
/// the part ended: the start of the next element, or the end of the body.
#[derive(Debug, PartialEq)]
pub struct BatchPart {
    /// The events, in order.
    pub events: Vec<Event>,
    /// Where the next part must begin.
    pub end: usize,
}

/// The first `{` at or after `from` that follows `}`, `,` and whitespace, and is followed
/// by whitespace and `"` (a member name, or the end of a string that ends in `},{`).
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

    /// 0, the cuts and the end.
    fn bounds(bytes: &[u8], cuts: Vec<usize>) -> Vec<usize> {
        [0].into_iter().chain(cuts).chain([bytes.len()]).collect()
    }

    /// Each part as read on its own.
    fn read_parts(bytes: &[u8], bounds: &[usize]) -> Vec<Option<BatchPart>> {
        bounds
            .windows(2)
            .map(|w| Event::batch_part_from_json_slice(bytes, w[0], w[1]))
            .collect()
    }

    /// The batch read in `parts` parts at the guessed cuts and joined.
    fn in_parts(bytes: &[u8], parts: usize) -> Option<Vec<Event>> {
        let bounds = bounds(bytes, Event::batch_cuts(bytes, parts));
        Event::batch_from_parts(bytes, &bounds, read_parts(bytes, &bounds))
    }

    #[test]
    fn the_parts_of_a_batch_are_the_batch() {
        let elements: Vec<String> = (0..9)
            .map(|n| event_json(n, &format!(r#"{{"deal":{n},"note":"a}} ,b"}}"#)))
            .collect();
        for sep in [",", " ,\n\t", ",\r\n  "] {
            let body = format!(" [ {} ]\n", elements.join(sep));
            let bytes = body.as_bytes();
            for parts in [2, 3, 8, 20] {
                let cuts = Event::batch_cuts(bytes, parts);
                assert_eq!(cuts.len(), (parts - 1).min(8), "{parts} parts of {body}");
                // Every guess is an element's start: each part ends where the next begins.
                let bounds = bounds(bytes, cuts);
                for (i, part) in read_parts(bytes, &bounds).iter().enumerate() {
                    assert_eq!(part.as_ref().map(|p| p.end), Some(bounds[i + 1]));
                }
                assert_eq!(in_parts(bytes, parts), Some(whole(bytes)));
            }
        }
    }

    #[test]
    fn a_guess_inside_an_element_is_read_again_from_where_the_part_before_ended() {
        // Data with arrays of objects, and a note that ends in `},{`: most guesses fall
        // inside elements.
        let elements: Vec<String> = (0..12)
            .map(|n| {
                event_json(
                    n,
                    &format!(r#"{{"items":[{{"sku":"a"}},{{"sku":"b"}},{{"sku":"c"}}],"note":"x{n}}},{{"}}"#),
                )
            })
            .collect();
        let body = format!("[{}]", elements.join(","));
        let bytes = body.as_bytes();
        let starts: Vec<usize> = body
            .match_indices(r#"{"specversion""#)
            .map(|(i, _)| i)
            .collect();
        for parts in [2, 3, 5, 12, 40] {
            let cuts = Event::batch_cuts(bytes, parts);
            assert!(
                cuts.iter().any(|c| !starts.contains(c)),
                "{parts} parts: every guess was an element's start: {cuts:?}"
            );
            assert_eq!(in_parts(bytes, parts), Some(whole(bytes)), "{parts} parts");
        }
        // A part that begins at the wrong place is not taken, whatever it read.
        let cut = *Event::batch_cuts(bytes, 2)
            .iter()
            .find(|c| !starts.contains(c))
            .expect("a guess inside an element");
        let bounds = [0, cut, bytes.len()];
        let mut parts = read_parts(bytes, &bounds);
        assert!(parts[0].as_ref().is_some_and(|p| p.end > cut));
        parts[1] = Some(BatchPart {
            events: whole(bytes),
            end: bytes.len(),
        });
        assert_eq!(
            Event::batch_from_parts(bytes, &bounds, parts),
            Some(whole(bytes))
        );
    }

    #[test]
    fn a_part_that_begins_right_and_refuses_refuses_the_batch() {
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
        // A missing part that began in the right place refuses too.
        let body = format!("[{good},{good},{good}]");
        let bytes = body.as_bytes();
        let bounds = bounds(bytes, Event::batch_cuts(bytes, 2));
        let mut parts = read_parts(bytes, &bounds);
        parts[1] = None;
        assert_eq!(Event::batch_from_parts(bytes, &bounds, parts), None);
    }

    #[test]
    fn a_brace_in_a_string_that_goes_on_is_no_guess() {
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
