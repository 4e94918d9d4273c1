//! The catalog as a document for people: [`markdown`] renders each type's latest version
//! with its fields, which are required and which optional, their types and descriptions
//! (where a description says what a consumer should assume when an optional field is
//! absent, that is shown too). `crmbus schema docs` prints it.

use std::fmt::Write as _;

use serde_json::Value;

use crate::catalog::CatalogEntry;

/// The latest version of each type among `entries` (sorted by type then version, as
/// [`crate::catalog::builtin`] returns them), with how many versions the type has.
fn latest(entries: &[CatalogEntry]) -> Vec<&CatalogEntry> {
    let mut out: Vec<&CatalogEntry> = Vec::new();
    for e in entries {
        match out.last_mut() {
            Some(last) if last.event_type == e.event_type => {
                if e.version > last.version {
                    *last = e;
                }
            }
            _ => out.push(e),
        }
    }
    out
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// A property's type as people read it: `string or integer`, `string (date-time)`,
/// `one of "low", "high"`.
fn type_text(property: &Value) -> String {
    if let Some(values) = property["enum"].as_array() {
        let values: Vec<String> = values.iter().map(Value::to_string).collect();
        return format!("one of {}", values.join(", "));
    }
    let mut text = match &property["type"] {
        Value::String(t) => t.clone(),
        Value::Array(ts) => ts
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "any".to_string(),
    };
    if let Some(format) = property["format"].as_str() {
        let _ = write!(text, " ({format})");
    }
    text
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// The catalog in markdown: a summary table of every type's required and optional fields,
/// then one section per type listing each field. Only each type's latest version is shown
/// (it is what publishes without a `dataschema` are validated against).
pub fn markdown(entries: &[CatalogEntry]) -> String {
    let latest = latest(entries);
    let mut out = String::new();
    out.push_str("# The crmbus event catalog\n\n");
    out.push_str(
        "Each type's latest version. Required fields must be present; optional fields are \
         validated when present. Fields a schema does not describe are accepted and kept \
         (producers add fields before consumers know them).\n\n",
    );
    out.push_str("| type | version | required fields | optional fields |\n");
    out.push_str("|---|---|---|---|\n");
    for e in &latest {
        let required = names(&e.schema["required"]);
        let optional: Vec<&str> = e.schema["properties"]
            .as_object()
            .map(|m| {
                m.keys()
                    .map(String::as_str)
                    .filter(|k| !required.contains(k))
                    .collect()
            })
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} |",
            e.event_type,
            e.version,
            required.join(", "),
            optional.join(", ")
        );
    }
    for e in &latest {
        let required = names(&e.schema["required"]);
        let _ = write!(
            out,
            "\n## `{}` (version {})\n\n{}\n\n",
            e.event_type,
            e.version,
            e.schema["description"].as_str().unwrap_or("")
        );
        out.push_str("| field | | type | description |\n|---|---|---|---|\n");
        let Some(properties) = e.schema["properties"].as_object() else {
            continue;
        };
        // Required fields first, each group by name.
        let mut fields: Vec<(&String, &Value)> = properties.iter().collect();
        fields.sort_by_key(|(name, _)| !required.contains(&name.as_str()));
        for (name, property) in fields {
            let presence = if required.contains(&name.as_str()) {
                "required"
            } else {
                "optional"
            };
            let _ = writeln!(
                out,
                "| `{name}` | {presence} | {} | {} |",
                cell(&type_text(property)),
                cell(property["description"].as_str().unwrap_or(""))
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(ty: &str, version: u32, schema: Value) -> CatalogEntry {
        CatalogEntry {
            event_type: ty.into(),
            version,
            file: format!("{ty}/{version}.json"),
            schema,
        }
    }

    #[test]
    fn each_type_shows_its_latest_version_with_required_and_optional_fields() {
        let v1 = json!({"description": "old", "properties": {"a": {"type": "string"}},
            "required": ["a"]});
        let v2 = json!({
            "description": "A thing happened.",
            "properties": {
                "note": {"type": "string", "description": "A note | with a bar."},
                "thing_id": {"type": ["string", "integer"], "description": "The id."},
                "level": {"enum": ["low", "high"], "description": "How much."},
                "at": {"type": "string", "format": "date-time", "description": "When."}
            },
            "required": ["thing_id"]
        });
        let text = markdown(&[
            entry("thing.happened", 1, v1),
            entry("thing.happened", 2, v2),
        ]);
        assert!(
            text.contains("| `thing.happened` | 2 | thing_id | at, level, note |"),
            "{text}"
        );
        assert!(!text.contains("old"), "only the latest version: {text}");
        assert!(text.contains("## `thing.happened` (version 2)"), "{text}");
        let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("| `")).collect();
        assert_eq!(
            rows[1..],
            [
                "| `thing_id` | required | string or integer | The id. |",
                "| `at` | optional | string (date-time) | When. |",
                "| `level` | optional | one of \"low\", \"high\" | How much. |",
                "| `note` | optional | string | A note \\| with a bar. |",
            ]
        );
    }
}
