//! Deciding that JSON text is valid under a schema without building a
//! [`serde_json::Value`] of it.
//!
//! At publish, an event's `data` arrives as JSON text. Reading it into a `Value` costs an
//! allocation per string and per map node, and then freeing them: more than the check itself
//! (about 11% of the server's CPU for a batch of small events, against 3% for the check).
//! [`TextDocument`] reads the text once, with serde_json's parser, into a flat list of
//! slots whose strings borrow from the text; [`TextJson`] lets jsonschema validate that
//! list through its traits for custom JSON representations.
//!
//! The list is used to answer one question: is this data valid? Data found invalid is read
//! into a `Value` and checked again, so every violation is reported exactly as before, in
//! the same order. Text the list cannot stand for faithfully (an object that names a member
//! twice, where a `Value` keeps the last) is not read this way at all.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use jsonschema::json::{Array, Json, Node, NodeIdentity, Object};
use jsonschema::JsonType;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// One slot of a [`TextDocument`]. Containers are followed by their contents, depth first:
/// an array by its elements, an object by a [`Slot::Name`] and the value for each member.
#[derive(Debug)]
pub(crate) enum Slot<'t> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'t, str>),
    /// `len` elements; the slot after the last element's contents is `end`.
    Array {
        len: usize,
        end: usize,
    },
    /// `len` members; the slot after the last member's value is `end`.
    Object {
        len: usize,
        end: usize,
    },
    /// A member's name, right before its value.
    Name(Cow<'t, str>),
}

/// JSON text read into slots that borrow its strings (those without escapes).
#[derive(Debug)]
pub(crate) struct TextDocument<'t> {
    slots: Vec<Slot<'t>>,
}

/// The member name serde_json's `raw_value` feature (which crmbus uses) gives meaning to: a
/// `Value` reads an object whose first member has this name as other JSON (the member's
/// string, read as JSON text), not as an object.
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

/// Objects with more members than this check their names for repeats with a set instead of
/// a scan of the names before.
const SCAN_NAMES_UP_TO: usize = 16;

impl<'t> TextDocument<'t> {
    /// Reads `text`; `None` when it is not one JSON value, or when a `Value` would read it
    /// otherwise: an object in it names a member twice (a `Value` keeps the last one), or
    /// starts with [`RAW_VALUE_TOKEN`].
    pub(crate) fn read(text: &'t str) -> Option<TextDocument<'t>> {
        let mut slots = Vec::new();
        let mut unfaithful = false;
        let mut de = serde_json::Deserializer::from_str(text);
        let read = Fill {
            slots: &mut slots,
            unfaithful: &mut unfaithful,
        }
        .deserialize(&mut de)
        .and_then(|()| de.end());
        (read.is_ok() && !unfaithful).then_some(TextDocument { slots })
    }

    /// The document's value.
    pub(crate) fn root(&self) -> TextNode<'_> {
        TextNode::In(&self.slots, 0)
    }
}

/// The slot after `at`'s contents.
fn end_of(slots: &[Slot<'_>], at: usize) -> usize {
    match slots.get(at) {
        Some(Slot::Array { end, .. } | Slot::Object { end, .. }) => *end,
        _ => at + 1,
    }
}

/// Reads one value into `slots`.
struct Fill<'s, 't> {
    slots: &'s mut Vec<Slot<'t>>,
    /// Set when a `Value` would read the text otherwise (see [`TextDocument::read`]).
    unfaithful: &'s mut bool,
}

impl<'t> Fill<'_, 't> {
    fn again(&mut self) -> Fill<'_, 't> {
        Fill {
            slots: self.slots,
            unfaithful: self.unfaithful,
        }
    }

    fn push(self, slot: Slot<'t>) {
        self.slots.push(slot);
    }
}

impl<'de> DeserializeSeed<'de> for Fill<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Fill<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.push(Slot::Bool(v));
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.push(Slot::Number(v.into()));
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.push(Slot::Number(v.into()));
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        // As a `Value` reads it: a number that is not finite is null.
        self.push(Number::from_f64(v).map_or(Slot::Null, Slot::Number));
        Ok(())
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<(), E> {
        self.push(Slot::String(Cow::Borrowed(v)));
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.push(Slot::String(Cow::Owned(v.to_owned())));
        Ok(())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<(), E> {
        self.push(Slot::String(Cow::Owned(v)));
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.push(Slot::Null);
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.push(Slot::Null);
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let at = self.slots.len();
        self.slots.push(Slot::Array { len: 0, end: 0 });
        let mut len = 0;
        while seq.next_element_seed(self.again())?.is_some() {
            len += 1;
        }
        let end = self.slots.len();
        self.slots[at] = Slot::Array { len, end };
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let at = self.slots.len();
        self.slots.push(Slot::Object { len: 0, end: 0 });
        let mut len = 0;
        // Names seen so far, once the object is too large to scan them.
        let mut seen: Option<HashSet<Cow<'de, str>>> = None;
        while let Some(name) = map.next_key_seed(NameSeed)? {
            if len == 0 && name == RAW_VALUE_TOKEN {
                *self.unfaithful = true;
            }
            self.slots.push(Slot::Name(name));
            if !*self.unfaithful && last_name_repeats(self.slots, at, len, &mut seen) {
                *self.unfaithful = true;
            }
            map.next_value_seed(self.again())?;
            len += 1;
        }
        let end = self.slots.len();
        self.slots[at] = Slot::Object { len, end };
        Ok(())
    }
}

/// Whether the name just read (the last slot) of the object at `at`, which has `len`
/// members before it, is one of theirs.
fn last_name_repeats<'t>(
    slots: &[Slot<'t>],
    at: usize,
    len: usize,
    seen: &mut Option<HashSet<Cow<'t, str>>>,
) -> bool {
    let Some(Slot::Name(name)) = slots.last() else {
        return false;
    };
    let earlier = || {
        let mut pos = at + 1;
        std::iter::from_fn(move || {
            let Some(Slot::Name(n)) = slots.get(pos) else {
                return None;
            };
            pos = end_of(slots, pos + 1);
            Some(n)
        })
        .take(len)
    };
    if len < SCAN_NAMES_UP_TO {
        return earlier().any(|n| n == name);
    }
    let set = seen.get_or_insert_with(|| earlier().cloned().collect());
    !set.insert(name.clone())
}

/// Reads a member name as it lies in the text when it can.
struct NameSeed;

impl<'de> DeserializeSeed<'de> for NameSeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for NameSeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// The [`TextDocument`] representation, for `jsonschema::options_for`.
pub(crate) struct TextJson;

impl Json for TextJson {
    type Node<'a> = TextNode<'a>;
    type PreparedKey = String;
    type StringBuffer = ();

    const ACYCLIC: bool = true;

    fn prepare_key(key: &str) -> String {
        key.to_owned()
    }

    fn with_string_node<T>((): &mut (), string: &str, f: impl FnOnce(TextNode<'_>) -> T) -> T {
        f(TextNode::Name(string))
    }
}

/// A value of a [`TextDocument`], or a member name on its own (for `propertyNames`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum TextNode<'a> {
    /// The slot at an index.
    In(&'a [Slot<'a>], usize),
    /// A string that is no slot.
    Name(&'a str),
}

impl<'a> TextNode<'a> {
    fn slot(&self) -> Option<&'a Slot<'a>> {
        match self {
            TextNode::In(slots, at) => slots.get(*at),
            TextNode::Name(_) => None,
        }
    }
}

/// The value of the slot at `at` and its contents.
fn to_value(slots: &[Slot<'_>], at: usize) -> Value {
    match slots.get(at) {
        None | Some(Slot::Null) => Value::Null,
        Some(Slot::Bool(b)) => Value::Bool(*b),
        Some(Slot::Number(n)) => Value::Number(n.clone()),
        Some(Slot::String(s) | Slot::Name(s)) => Value::String(s.to_string()),
        Some(Slot::Array { end, .. }) => {
            let mut items = Vec::new();
            let mut pos = at + 1;
            while pos < *end {
                items.push(to_value(slots, pos));
                pos = end_of(slots, pos);
            }
            Value::Array(items)
        }
        Some(Slot::Object { end, .. }) => {
            let mut members = Map::new();
            let mut pos = at + 1;
            while pos < *end {
                let value = to_value(slots, pos + 1);
                if let Some(Slot::Name(name)) = slots.get(pos) {
                    members.insert(name.to_string(), value);
                }
                pos = end_of(slots, pos + 1);
            }
            Value::Object(members)
        }
    }
}

impl<'a> Node<'a, TextJson> for TextNode<'a> {
    type Object = TextObject<'a>;
    type Array = TextArray<'a>;
    type Number = &'a Number;

    fn as_object(&self) -> Option<TextObject<'a>> {
        match (self, self.slot()) {
            (TextNode::In(slots, at), Some(Slot::Object { len, end })) => Some(TextObject {
                slots,
                first: at + 1,
                end: *end,
                len: *len,
            }),
            _ => None,
        }
    }

    fn as_array(&self) -> Option<TextArray<'a>> {
        match (self, self.slot()) {
            (TextNode::In(slots, at), Some(Slot::Array { len, end })) => Some(TextArray {
                slots,
                first: at + 1,
                end: *end,
                len: *len,
            }),
            _ => None,
        }
    }

    fn as_string(&self) -> Option<Cow<'a, str>> {
        match (self, self.slot()) {
            (TextNode::Name(s), _) => Some(Cow::Borrowed(s)),
            (_, Some(Slot::String(s))) => Some(Cow::Borrowed(s.as_ref())),
            _ => None,
        }
    }

    fn as_number(&self) -> Option<&'a Number> {
        match self.slot() {
            Some(Slot::Number(n)) => Some(n),
            _ => None,
        }
    }

    fn as_boolean(&self) -> Option<bool> {
        match self.slot() {
            Some(Slot::Bool(b)) => Some(*b),
            _ => None,
        }
    }

    fn is_null(&self) -> bool {
        matches!(self.slot(), Some(Slot::Null))
    }

    fn json_type(&self) -> JsonType {
        if let TextNode::Name(_) = self {
            return JsonType::String;
        }
        match self.slot() {
            Some(Slot::String(_) | Slot::Name(_)) => JsonType::String,
            None | Some(Slot::Null) => JsonType::Null,
            Some(Slot::Bool(_)) => JsonType::Boolean,
            Some(Slot::Number(_)) => JsonType::Number,
            Some(Slot::Array { .. }) => JsonType::Array,
            Some(Slot::Object { .. }) => JsonType::Object,
        }
    }

    fn to_value(&self) -> Cow<'a, Value> {
        Cow::Owned(match self {
            TextNode::In(slots, at) => to_value(slots, *at),
            TextNode::Name(s) => Value::String((*s).to_string()),
        })
    }

    fn identity(&self) -> Option<NodeIdentity> {
        match self {
            // Each slot's own address.
            TextNode::In(slots, at) => {
                Some(NodeIdentity::new(slots.as_ptr().wrapping_add(*at) as usize))
            }
            TextNode::Name(s) => Some(NodeIdentity::new(s.as_ptr() as usize)),
        }
    }
}

/// An object of a [`TextDocument`].
pub(crate) struct TextObject<'a> {
    slots: &'a [Slot<'a>],
    /// Its first member's name.
    first: usize,
    end: usize,
    len: usize,
}

/// The members of a [`TextObject`], in the text's order.
pub(crate) struct TextMembers<'a> {
    slots: &'a [Slot<'a>],
    pos: usize,
    end: usize,
}

impl<'a> Iterator for TextMembers<'a> {
    type Item = (&'a str, TextNode<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.end {
            return None;
        }
        let Some(Slot::Name(name)) = self.slots.get(self.pos) else {
            return None;
        };
        let value = TextNode::In(self.slots, self.pos + 1);
        self.pos = end_of(self.slots, self.pos + 1);
        Some((name.as_ref(), value))
    }
}

impl<'a> Object<'a, TextJson> for TextObject<'a> {
    type Node = TextNode<'a>;
    type MemberName = &'a str;
    type MembersIter = TextMembers<'a>;

    fn len(&self) -> usize {
        self.len
    }

    fn get(&self, key: &String) -> Option<TextNode<'a>> {
        self.members()
            .find(|(name, _)| *name == key.as_str())
            .map(|(_, value)| value)
    }

    fn members(&self) -> TextMembers<'a> {
        TextMembers {
            slots: self.slots,
            pos: self.first,
            end: self.end,
        }
    }
}

/// An array of a [`TextDocument`].
pub(crate) struct TextArray<'a> {
    slots: &'a [Slot<'a>],
    /// Its first element.
    first: usize,
    end: usize,
    len: usize,
}

/// The elements of a [`TextArray`].
pub(crate) struct TextElements<'a> {
    slots: &'a [Slot<'a>],
    pos: usize,
    end: usize,
}

impl<'a> Iterator for TextElements<'a> {
    type Item = TextNode<'a>;

    fn next(&mut self) -> Option<TextNode<'a>> {
        if self.pos >= self.end {
            return None;
        }
        let node = TextNode::In(self.slots, self.pos);
        self.pos = end_of(self.slots, self.pos);
        Some(node)
    }
}

impl<'a> Array<'a, TextJson> for TextArray<'a> {
    type Node = TextNode<'a>;
    type ElementsIter = TextElements<'a>;

    fn len(&self) -> usize {
        self.len
    }

    fn elements(&self) -> TextElements<'a> {
        TextElements {
            slots: self.slots,
            pos: self.first,
            end: self.end,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::LazyLock;

    use jsonschema::json::conformance;
    use proptest::prelude::*;
    use serde_json::json;

    use super::super::version::SchemaVersion;
    use super::*;

    /// Whether `text` is valid as the `Value` path decides it.
    fn valid_as_value(version: &SchemaVersion, text: &str) -> bool {
        let value: Value = serde_json::from_str(text).expect("test text is JSON");
        version
            .violations(&value)
            .expect("schema compiles")
            .is_empty()
    }

    #[test]
    fn the_representation_keeps_the_contract_jsonschema_relies_on() {
        let compact = conformance::document().to_string();
        // The same document with escapes: its strings and names are copies, not slices.
        let escaped = compact
            .replace("\"string\"", "\"str\\u0069ng\"")
            .replace("h\u{e9}llo", "h\\u00e9llo");
        assert_ne!(compact, escaped);
        for text in [compact, escaped] {
            let document = TextDocument::read(&text).expect("reads");
            conformance::assert_conformance::<TextJson>(&document.root());
        }
    }

    #[test]
    fn text_that_is_not_one_json_value_is_not_read() {
        for text in ["", "{", "[1,]", "{\"a\":1} {}", "nul", "\"a"] {
            assert!(TextDocument::read(text).is_none(), "{text}");
        }
        for text in ["null", " 1 ", "\"x\"", "[]", "{}", "[{\"a\":[]}]"] {
            assert!(TextDocument::read(text).is_some(), "{text}");
        }
    }

    #[test]
    fn an_object_that_names_a_member_twice_is_left_to_the_value_path() {
        let version = SchemaVersion::new(
            "t.dup",
            1,
            json!({"type": "object", "properties": {"a": {"type": "string"}}}),
        );
        // A `Value` keeps the last member, so this is valid there; the slots would have
        // shown both to the validator.
        let small = r#"{"a": 1, "b": true, "a": "x"}"#;
        assert!(valid_as_value(&version, small));
        assert!(TextDocument::read(small).is_none());
        assert!(!version.accepts_text(small));
        // In an object too large to scan its names (a set decides), and nested.
        let names: Vec<String> = (0..40).map(|i| format!("\"m{i}\": {i}")).collect();
        let large = format!("{{\"a\": {{{}, \"m7\": 0}}}}", names.join(", "));
        assert!(TextDocument::read(&large).is_none());
        let unrepeated = format!("{{\"a\": {{{}}}}}", names.join(", "));
        assert!(TextDocument::read(&unrepeated).is_some());
        // The same name in two objects is no repeat.
        assert!(TextDocument::read(r#"[{"a": 1}, {"a": 2}, {"b": {"a": 3}, "a": 4}]"#).is_some());
    }

    #[test]
    fn an_object_a_value_reads_as_other_json_is_left_to_the_value_path() {
        // serde_json (with its `raw_value` feature, which crmbus uses) reads an object whose
        // first member has this name as the JSON text of the member's string, or as an
        // error that `JsonText` reads as null.
        let version = SchemaVersion::new("t.raw", 1, json!({"type": "object"}));
        for text in [
            r#"{"$serde_json::private::RawValue": "[1, 2]"}"#,
            r#"{"$serde_json::private::RawValue": 5}"#,
            r#"[{"$serde_json::private::RawValue": "1"}]"#,
        ] {
            assert!(TextDocument::read(text).is_none(), "{text}");
            assert!(!version.accepts_text(text), "{text}");
        }
        // Named so anywhere but first, it is an ordinary member.
        let later = r#"{"a": 1, "$serde_json::private::RawValue": "[1, 2]"}"#;
        assert!(valid_as_value(&version, later));
        assert!(version.accepts_text(later));
    }

    #[test]
    fn texts_that_test_the_reading_are_accepted_exactly_when_their_value_is_valid() {
        let many: Vec<String> = (0..20).map(|i| format!("\"m{i}\": {i}")).collect();
        let deep = format!("{}1{}", "[".repeat(120), "]".repeat(120));
        let texts = [
            r#"{"a": 1, "\u0061": "x"}"#.to_string(),
            r#"{"\u0061": 4, "b": 2}"#.to_string(),
            r#"{"a": "\ud83d\ude00", "b": "\u00e9\n\"", "c": [-0, 1E2, 2.50, -0.0]}"#.to_string(),
            r#"{"a": 1e2, "b": 3}"#.to_string(),
            r#"[-0, 0.0, 1E2, 1e-2, 18446744073709551615, -9223372036854775808]"#.to_string(),
            format!("{{{}}}", many.join(", ")),
            format!("{{\"a\": 2, {}}}", many.join(", ")),
            deep,
        ];
        for text in &texts {
            let readable = TextDocument::read(text).is_some();
            for version in SCHEMAS.iter() {
                let accepted = version.accepts_text(text);
                if readable {
                    assert_eq!(
                        accepted,
                        valid_as_value(version, text),
                        "{} on {text}",
                        version.schema
                    );
                } else {
                    assert!(!accepted, "{text}");
                }
            }
        }
    }

    #[test]
    fn every_example_of_the_built_in_catalog_is_accepted_as_text() {
        let mut checked = 0;
        for entry in crate::catalog::builtin().expect("the catalog loads") {
            let version = SchemaVersion::new(&entry.event_type, entry.version, entry.schema);
            let examples = version.schema.get("examples").and_then(Value::as_array);
            for example in examples.into_iter().flatten() {
                let text = example.to_string();
                assert!(version.accepts_text(&text), "{}: {text}", entry.file);
                checked += 1;
            }
        }
        assert!(checked > 0, "the catalog has examples");
    }

    /// Schemas that use most keywords, and the built-in catalog's.
    static SCHEMAS: LazyLock<Vec<SchemaVersion>> = LazyLock::new(|| {
        let own = [
            json!({"type": "object", "required": ["a"], "additionalProperties": false,
                "properties": {
                    "a": {"type": "integer", "minimum": 0, "maximum": 100},
                    "b": {"type": "string", "minLength": 2, "maxLength": 5, "pattern": "^[a-z]+$"},
                    "c": {"type": "array", "items": {"type": "number"}, "uniqueItems": true,
                          "maxItems": 4}}}),
            json!({"enum": [1, "x", null, [1, 2], {"a": 1}, true, 2.5, "é"]}),
            json!({"const": {"a": [1, {"b": "c"}]}}),
            json!({"type": "array", "prefixItems": [{"type": "string"}, {"type": "boolean"}],
                "items": false}),
            json!({"type": "array", "contains": {"type": "object", "required": ["a"]},
                "minContains": 1, "maxContains": 2}),
            json!({"type": "object", "propertyNames": {"pattern": "^[a-c]+$", "maxLength": 2},
                "minProperties": 1, "maxProperties": 3}),
            json!({"type": "object", "patternProperties": {"^a": {"type": "string"},
                "^b": {"type": "integer"}}, "dependentRequired": {"a": ["b"]}}),
            json!({"if": {"type": "object", "required": ["a"]},
                "then": {"properties": {"a": {"multipleOf": 2}}},
                "else": {"type": ["array", "string", "null"]}}),
            json!({"anyOf": [{"type": "string", "format": "date-time"},
                {"type": "string", "format": "email"}, {"type": "integer", "exclusiveMinimum": 3}]}),
            json!({"oneOf": [{"type": "number"}, {"type": "integer"}]}),
            json!({"not": {"type": "object"}}),
            json!({"$defs": {"node": {"type": "object", "required": ["v"],
                "properties": {"v": {"type": "integer"}, "next": {"$ref": "#/$defs/node"}}}},
                "$ref": "#/$defs/node"}),
            json!({"type": "object", "properties": {"a": true}, "patternProperties": {"^b": {}},
                "unevaluatedProperties": false}),
            json!({"type": "object", "additionalProperties": {"type": ["string", "boolean"]},
                "dependentSchemas": {"a": {"required": ["b"]}}}),
            json!({"type": "array", "items": {"type": "array", "items": {"type": "object",
                "properties": {"a": {"type": "number", "minimum": 1.5}}}}}),
        ];
        let mut out: Vec<SchemaVersion> = own
            .into_iter()
            .enumerate()
            .map(|(i, schema)| SchemaVersion::new(&format!("t.own{i}"), 1, schema))
            .collect();
        for entry in crate::catalog::builtin().expect("the catalog loads") {
            out.push(SchemaVersion::new(
                &entry.event_type,
                entry.version,
                entry.schema,
            ));
        }
        out
    });

    /// JSON values whose names and strings meet the schemas above often enough.
    fn json_value() -> impl Strategy<Value = Value> {
        let name = prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("c".to_string()),
            Just("v".to_string()),
            Just("next".to_string()),
            "[a-dé\"\\\\]{0,3}",
        ];
        let text = prop_oneof![
            "[a-zé\"\\\\ ]{0,6}",
            Just("2026-12-07T10:00:00Z".to_string()),
            Just("someone@example.com".to_string()),
            Just("x".to_string()),
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-3i64..120).prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            prop_oneof![Just(2.0), Just(2.5), Just(1.5), Just(-0.5), Just(1e300)]
                .prop_map(Value::from),
            text.prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 4, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((name.clone(), inner), 0..4)
                    .prop_map(|members| Value::Object(members.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The text path accepts exactly what the `Value` path finds valid, for every
        /// schema, written compactly or with whitespace.
        #[test]
        fn text_is_accepted_exactly_when_its_value_is_valid(value in json_value()) {
            let compact = value.to_string();
            let pretty = serde_json::to_string_pretty(&value).expect("writes");
            for version in SCHEMAS.iter() {
                let expected = valid_as_value(version, &compact);
                prop_assert_eq!(version.accepts_text(&compact), expected,
                    "{} on {}", version.schema, compact);
                prop_assert_eq!(version.accepts_text(&pretty), expected,
                    "{} on {}", version.schema, pretty);
            }
        }
    }
}
