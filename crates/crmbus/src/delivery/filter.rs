//! Subscription filters: event type patterns plus simple predicates on attributes, data
//! and extension fields. Events that do not match are passed over without delivery.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::{Event, ExtensionValue};

/// Which events a subscription receives. An empty filter matches everything.
///
/// Unknown members are errors, here and in a condition: a misspelt `types` or `where`
/// must not quietly become the empty filter that passes every event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Type patterns; the event's `type` must match one of them (none given: any type).
    /// `*` matches any run of characters: `deal.*`, `*.created`, `deal.won`, `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<String>,
    /// Conditions that must all hold.
    #[serde(default, rename = "where", skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// One predicate on a field of the event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawCondition")]
pub struct Condition {
    /// `data.<path>` (dots walk into objects), `ext.<name>` / an extension name, or a
    /// context attribute: `subject`, `source`, `type`, `id`, `datacontenttype`, `dataschema`.
    pub field: String,
    /// The comparison.
    #[serde(flatten)]
    pub op: Op,
}

/// A comparison of a field with a value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", content = "value", rename_all = "lowercase")]
pub enum Op {
    /// The field equals the value (numbers compare numerically, also when the field is a
    /// decimal string such as `"1250.00"`).
    Eq(Value),
    /// The field differs from the value (or is absent).
    Ne(Value),
    /// The field equals one of the values.
    In(Vec<Value>),
    /// The field is present (`true`) or absent (`false`).
    Exists(bool),
    /// The field is a number (or decimal string) greater than the value.
    Gt(f64),
    /// … at least the value.
    Gte(f64),
    /// … less than the value.
    Lt(f64),
    /// … at most the value.
    Lte(f64),
}

/// A condition as written, before its operator is read: serde cannot reject unknown
/// members of a struct with a flattened field, so [`Condition`] is read through this.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCondition {
    field: String,
    op: Value,
    /// `Some(Value::Null)` for `"value": null`, which `Eq`/`Ne`/`In` may compare with.
    #[serde(default, deserialize_with = "present")]
    value: Option<Value>,
}

/// A member that is present, whatever its value (`null` included).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

impl TryFrom<RawCondition> for Condition {
    type Error = serde_json::Error;

    fn try_from(raw: RawCondition) -> Result<Self, Self::Error> {
        let mut tagged = serde_json::Map::new();
        tagged.insert("op".into(), raw.op);
        if let Some(value) = raw.value {
            tagged.insert("value".into(), value);
        }
        Ok(Condition {
            field: raw.field,
            op: serde_json::from_value(Value::Object(tagged))?,
        })
    }
}

/// Does `pattern` (with `*` wildcards) match `text`?
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

fn ext_value(v: &ExtensionValue) -> Value {
    match v {
        ExtensionValue::String(s) => Value::String(s.clone()),
        ExtensionValue::Number(n) => Value::Number(n.clone()),
        ExtensionValue::Bool(b) => Value::Bool(*b),
    }
}

fn field(event: &Event, name: &str) -> Option<Value> {
    if let Some(path) = name.strip_prefix("data.") {
        let mut v = event.data_json()?;
        for part in path.split('.') {
            v = match v {
                Value::Object(m) => m.get(part)?,
                Value::Array(a) => a.get(part.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        return Some(v.clone());
    }
    let attr = |s: &Option<String>| s.clone().map(Value::String);
    match name {
        "subject" => attr(&event.subject),
        "source" => Some(Value::String(event.source.clone())),
        "type" => Some(Value::String(event.ty.clone())),
        "id" => Some(Value::String(event.id.clone())),
        "datacontenttype" => attr(&event.datacontenttype),
        "dataschema" => attr(&event.dataschema),
        other => {
            let ext = other.strip_prefix("ext.").unwrap_or(other);
            event.extension_value(ext).map(ext_value)
        }
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    if a == b {
        return true;
    }
    match (number(a), number(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

impl Condition {
    /// Does the event satisfy this condition?
    pub fn matches(&self, event: &Event) -> bool {
        let v = field(event, &self.field);
        match (&self.op, v) {
            (Op::Exists(want), v) => v.is_some() == *want,
            (Op::Ne(x), Some(v)) => !equal(&v, x),
            (Op::Ne(_), None) => true,
            (_, None) => false,
            (Op::Eq(x), Some(v)) => equal(&v, x),
            (Op::In(xs), Some(v)) => xs.iter().any(|x| equal(&v, x)),
            (Op::Gt(x), Some(v)) => number(&v).is_some_and(|n| n > *x),
            (Op::Gte(x), Some(v)) => number(&v).is_some_and(|n| n >= *x),
            (Op::Lt(x), Some(v)) => number(&v).is_some_and(|n| n < *x),
            (Op::Lte(x), Some(v)) => number(&v).is_some_and(|n| n <= *x),
        }
    }
}

impl Filter {
    /// A filter on type patterns only.
    pub fn types<I, S>(patterns: I) -> Filter
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Filter {
            types: patterns.into_iter().map(Into::into).collect(),
            conditions: Vec::new(),
        }
    }

    /// The same filter with one more condition.
    pub fn with(mut self, field: impl Into<String>, op: Op) -> Filter {
        self.conditions.push(Condition {
            field: field.into(),
            op,
        });
        self
    }

    /// Does the event pass the filter?
    pub fn matches(&self, event: &Event) -> bool {
        (self.types.is_empty() || self.types.iter().any(|p| glob_match(p, &event.ty)))
            && self.conditions.iter().all(|c| c.matches(event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deal(ty: &str, amount: Value) -> Event {
        Event::new(
            ty,
            json!({"deal_id": "d-1", "amount": amount, "owner": {"tier": "gold"}}),
        )
        .subject("deal-1")
        .source("urn:t")
        .extension("companyid", "c-9")
        .extension("priority", 3)
    }

    #[test]
    fn type_patterns() {
        assert!(glob_match("deal.*", "deal.won"));
        assert!(!glob_match("deal.*", "lead.created"));
        assert!(glob_match("*.created", "lead.created"));
        assert!(!glob_match("*.created", "lead.created.v2"));
        assert!(glob_match("deal.won", "deal.won"));
        assert!(!glob_match("deal.won", "deal.wonx"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("com.*.order.*", "com.acme.order.v2"));
        assert!(!glob_match("a*a", "a"));
        let f = Filter::types(["deal.*", "*.created"]);
        assert!(f.matches(&deal("deal.lost", json!(1))));
        assert!(f.matches(&deal("lead.created", json!(1))));
        assert!(!f.matches(&deal("invoice.generated", json!(1))));
        assert!(Filter::default().matches(&deal("x", json!(1))));
    }

    #[test]
    fn predicates_on_data_extensions_and_attributes() {
        let e = deal("deal.won", json!("1250.00"));
        let f = |field: &str, op: Op| Filter::default().with(field, op).matches(&e);
        assert!(
            f("data.amount", Op::Gte(1000.0)),
            "decimal strings compare as numbers"
        );
        assert!(!f("data.amount", Op::Gt(5000.0)));
        assert!(f("data.amount", Op::Eq(json!(1250))));
        assert!(f(
            "data.owner.tier",
            Op::In(vec![json!("gold"), json!("platinum")])
        ));
        assert!(!f("data.owner.tier", Op::Eq(json!("silver"))));
        assert!(f("data.owner.tier", Op::Ne(json!("silver"))));
        assert!(f("data.missing", Op::Exists(false)));
        assert!(!f("data.missing", Op::Eq(json!(null))));
        assert!(f("ext.companyid", Op::Eq(json!("c-9"))));
        assert!(f("priority", Op::Lt(5.0)));
        assert!(f("subject", Op::Eq(json!("deal-1"))));
        assert!(f("type", Op::Eq(json!("deal.won"))));
        assert!(!f("data.owner", Op::Gt(1.0)), "objects are not numbers");
    }

    #[test]
    fn unknown_members_are_errors() {
        let typo = serde_json::from_str::<Filter>(r#"{"type":["deal.*"]}"#).unwrap_err();
        assert!(typo.to_string().contains("unknown field `type`"), "{typo}");
        let extra = serde_json::from_str::<Filter>(
            r#"{"where":[{"field":"data.x","op":"exists","value":true,"negate":true}]}"#,
        )
        .unwrap_err();
        assert!(extra.to_string().contains("negate"), "{extra}");
        let no_value = serde_json::from_str::<Filter>(r#"{"where":[{"field":"x","op":"gt"}]}"#);
        assert!(no_value.is_err());
    }

    #[test]
    fn filter_round_trips_through_json() {
        let text = r#"{"types":["deal.*"],"where":[{"field":"data.amount","op":"gte","value":1000.0},{"field":"ext.userid","op":"exists","value":true}]}"#;
        let f: Filter = serde_json::from_str(text).expect("parse");
        assert_eq!(f.types, ["deal.*"]);
        assert_eq!(f.conditions[0].op, Op::Gte(1000.0));
        let back = serde_json::to_string(&f).expect("serialize");
        assert_eq!(serde_json::from_str::<Filter>(&back).expect("reparse"), f);
    }
}
