//! A subscription's transformation: the JSON its target receives instead of the CloudEvent
//! (like an input transformer). The template is JSON; a string in it that is exactly
//! `{{ path }}` becomes the value at that path, whatever its type (a missing one is
//! `null`); a string with `{{ path }}` among other text becomes text, each value written
//! in (a string as itself, anything else as its JSON, a missing one as nothing). Object
//! keys are taken as written.
//!
//! A path reads the structured CloudEvent (attributes and `data`): `$` is the whole event,
//! `$.subject`, `$.data.deal_id`, `$.data.lines[0].sku`; a name is letters, digits, `_`
//! and `-`, an index a whole number in brackets. A template is checked when the
//! subscription is created: every mistake is a 400 naming where it is.

use serde_json::{Map, Value};

/// Largest template accepted, in bytes of its JSON.
pub const MAX_TEMPLATE_BYTES: usize = 16 * 1024;
/// Deepest nesting of arrays and objects accepted in a template.
const MAX_DEPTH: usize = 32;
/// Most `{{ path }}` references in a template: each may copy the whole event, so they
/// bound how much larger than the event a shaped body can be.
pub const MAX_REFERENCES: usize = 64;

/// A checked template, ready to shape events.
#[derive(Debug, Clone, PartialEq)]
pub struct Transform {
    root: Node,
}

/// Why a template was refused: where (a JSON pointer into it) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {why}")]
pub struct TemplateError {
    /// A JSON pointer into the template (`""` for the whole).
    pub at: String,
    /// What is wrong there.
    pub why: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    /// Written as is.
    Literal(Value),
    /// The value at a path.
    Value(Path),
    /// Text with values written in.
    Text(Vec<Piece>),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Value(Path),
}

type Path = Vec<Step>;

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Name(String),
    Index(usize),
}

impl Transform {
    /// Checks `template` and prepares it.
    pub fn parse(template: &Value) -> Result<Transform, TemplateError> {
        let size = serde_json::to_vec(template).map_or(usize::MAX, |b| b.len());
        if size > MAX_TEMPLATE_BYTES {
            return Err(TemplateError {
                at: String::new(),
                why: format!("{size} bytes; a template may have at most {MAX_TEMPLATE_BYTES}"),
            });
        }
        if !template.is_object() {
            return Err(TemplateError {
                at: String::new(),
                why: "a template is a JSON object".to_string(),
            });
        }
        let root = node(template, "", 0)?;
        let references = count_references(&root);
        if references > MAX_REFERENCES {
            return Err(TemplateError {
                at: String::new(),
                why: format!(
                    "{references} {{{{ path }}}} references; a template may have at most {MAX_REFERENCES}"
                ),
            });
        }
        Ok(Transform { root })
    }

    /// The shaped value for `event` (the structured CloudEvent as JSON).
    pub fn apply(&self, event: &Value) -> Value {
        render(&self.root, event)
    }
}

fn count_references(n: &Node) -> usize {
    match n {
        Node::Literal(_) => 0,
        Node::Value(_) => 1,
        Node::Text(pieces) => pieces
            .iter()
            .filter(|p| matches!(p, Piece::Value(_)))
            .count(),
        Node::Array(items) => items.iter().map(count_references).sum(),
        Node::Object(fields) => fields.iter().map(|(_, v)| count_references(v)).sum(),
    }
}

fn node(v: &Value, at: &str, depth: usize) -> Result<Node, TemplateError> {
    if depth >= MAX_DEPTH {
        return Err(TemplateError {
            at: at.to_string(),
            why: format!("nested deeper than {MAX_DEPTH} levels"),
        });
    }
    Ok(match v {
        Value::String(s) => text(s, at)?,
        Value::Array(items) => Node::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| node(item, &format!("{at}/{i}"), depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(fields) => Node::Object(
            fields
                .iter()
                .map(|(k, item)| {
                    let escaped = k.replace('~', "~0").replace('/', "~1");
                    Ok((
                        k.clone(),
                        node(item, &format!("{at}/{escaped}"), depth + 1)?,
                    ))
                })
                .collect::<Result<_, _>>()?,
        ),
        other => Node::Literal(other.clone()),
    })
}

/// A template string: literal text, one value, or text with values written in.
fn text(s: &str, at: &str) -> Result<Node, TemplateError> {
    let err = |why: String| TemplateError {
        at: at.to_string(),
        why,
    };
    let mut pieces = Vec::new();
    let mut rest = s;
    while let Some(open) = rest.find("{{") {
        if rest[..open].contains("}}") {
            return Err(err("a '}}' without its '{{'".to_string()));
        }
        if open > 0 {
            pieces.push(Piece::Text(rest[..open].to_string()));
        }
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| err("a '{{' without its '}}'".to_string()))?;
        let inner = after[..close].trim();
        let path = path(inner).map_err(|why| err(format!("'{{{{ {inner} }}}}': {why}")))?;
        pieces.push(Piece::Value(path));
        rest = &after[close + 2..];
    }
    if rest.contains("}}") {
        return Err(err("a '}}' without its '{{'".to_string()));
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_string()));
    }
    Ok(match pieces.as_slice() {
        [] => Node::Literal(Value::String(String::new())),
        [Piece::Value(p)] => Node::Value(p.clone()),
        [Piece::Text(t)] => Node::Literal(Value::String(t.clone())),
        _ => Node::Text(pieces),
    })
}

/// `$`, then `.name` and `[index]` steps.
fn path(text: &str) -> Result<Path, String> {
    let Some(mut rest) = text.strip_prefix('$') else {
        return Err("a path starts with '$' (the event), as in $.data.deal_id".to_string());
    };
    let mut steps = Vec::new();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                .unwrap_or(after.len());
            if end == 0 {
                return Err("a '.' must be followed by a name (letters, digits, _ and -)".into());
            }
            steps.push(Step::Name(after[..end].to_string()));
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let end = after
                .find(']')
                .ok_or_else(|| "a '[' without its ']'".to_string())?;
            let digits = &after[..end];
            let index = digits
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| digits.parse::<usize>().ok())
                .flatten()
                .ok_or_else(|| format!("'[{digits}]' is not an index (a whole number)"))?;
            steps.push(Step::Index(index));
            rest = &after[end + 1..];
        } else {
            return Err(format!(
                "unexpected '{}' (steps are .name or [index])",
                rest.chars().next().unwrap_or(' ')
            ));
        }
    }
    Ok(steps)
}

fn lookup<'a>(event: &'a Value, path: &Path) -> Option<&'a Value> {
    path.iter().try_fold(event, |v, step| match step {
        Step::Name(n) => v.get(n.as_str()),
        Step::Index(i) => v.get(*i),
    })
}

fn render(n: &Node, event: &Value) -> Value {
    match n {
        Node::Literal(v) => v.clone(),
        Node::Value(p) => lookup(event, p).cloned().unwrap_or(Value::Null),
        Node::Text(pieces) => {
            let mut out = String::new();
            for piece in pieces {
                match piece {
                    Piece::Text(t) => out.push_str(t),
                    Piece::Value(p) => match lookup(event, p) {
                        Some(Value::String(s)) => out.push_str(s),
                        Some(Value::Null) | None => {}
                        Some(other) => out.push_str(&other.to_string()),
                    },
                }
            }
            Value::String(out)
        }
        Node::Array(items) => Value::Array(items.iter().map(|i| render(i, event)).collect()),
        Node::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), render(v, event)))
                .collect::<Map<String, Value>>(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deal_won() -> Value {
        json!({
            "specversion": "1.0", "id": "e-1", "source": "/crm", "type": "deal.won",
            "subject": "deal-42",
            "data": {"deal_id": "deal-42", "amount": "1250.00", "lines": [{"sku": "A-1", "qty": 2}], "note": null}
        })
    }

    #[test]
    fn whole_values_keep_their_type_and_text_has_them_written_in() {
        let t = Transform::parse(&json!({
            "deal": "{{ $.data.deal_id }}",
            "first_line": "{{$.data.lines[0]}}",
            "qty": "{{ $.data.lines[0].qty }}",
            "summary": "Deal {{ $.subject }} won: {{ $.data.amount }} ({{ $.data.lines[0].qty }} units){{ $.data.note }}",
            "kind": "erp.sale",
            "fixed": [1, true, null],
            "missing": "{{ $.data.nope }}",
            "event": "{{ $ }}"
        }))
        .expect("a good template");
        let out = t.apply(&deal_won());
        assert_eq!(out["deal"], "deal-42");
        assert_eq!(out["first_line"], json!({"sku": "A-1", "qty": 2}));
        assert_eq!(out["qty"], 2);
        assert_eq!(out["summary"], "Deal deal-42 won: 1250.00 (2 units)");
        assert_eq!(out["kind"], "erp.sale");
        assert_eq!(out["fixed"], json!([1, true, null]));
        assert_eq!(out["missing"], Value::Null);
        assert_eq!(out["event"], deal_won());
    }

    #[test]
    fn a_bad_template_is_refused_naming_where() {
        let cases = [
            (json!({"a": "{{ $.data.x"}), "/a", "without its '}}'"),
            (
                json!({"a": ["ok", "{{ data.x }}"]}),
                "/a/1",
                "starts with '$'",
            ),
            (
                json!({"a/b": "{{ $.data..x }}"}),
                "/a~1b",
                "followed by a name",
            ),
            (json!({"a": "{{ $.data[x] }}"}), "/a", "not an index"),
            (json!({"a": "{{ $.data[1 }}"}), "/a", "without its ']'"),
            (json!({"a": "{{ $.data x }}"}), "/a", "unexpected ' '"),
            (json!({"a": "x }} y"}), "/a", "without its '{{'"),
            (json!({"a": "x }} {{ $.a }}"}), "/a", "without its '{{'"),
            (json!({"a": "{{ $.a[+1] }}"}), "/a", "not an index"),
            (json!({"a": "{{}}"}), "/a", "starts with '$'"),
            (json!(["{{ $ }}"]), "", "a JSON object"),
            (json!("{{ $ }}"), "", "a JSON object"),
        ];
        for (template, at, why) in cases {
            let e = Transform::parse(&template).expect_err("refused");
            assert_eq!(e.at, at, "{template}");
            assert!(e.why.contains(why), "{template}: {}", e.why);
        }
        let mut deep = json!("{{ $ }}");
        for _ in 0..40 {
            deep = json!({"a": deep});
        }
        assert!(Transform::parse(&deep).is_err());
        let many: serde_json::Map<String, Value> = (0..=MAX_REFERENCES)
            .map(|i| (format!("k{i}"), json!("{{ $ }}")))
            .collect();
        let e = Transform::parse(&Value::Object(many)).expect_err("too many references");
        assert!(e.why.contains("references"), "{}", e.why);
        let big = json!({"a": "x".repeat(MAX_TEMPLATE_BYTES)});
        assert!(Transform::parse(&big)
            .expect_err("too big")
            .why
            .contains("bytes"));
    }
}
