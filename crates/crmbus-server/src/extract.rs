//! Reading requests: bodies (size limit, JSON objects), repeated query parameters, times,
//! and the names of a core enum's variants. Every failure is a 400 (or 413) problem that
//! names the field.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use crmbus::ErrorCode;
use serde::de::value::{Error as ValueError, StrDeserializer};
use serde::de::{DeserializeOwned, IntoDeserializer};

use crate::problem::ApiError;

/// The request body, or 413 / 400 as a problem.
pub fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorCode::PayloadTooLarge,
                "the request body is larger than server.max_body_bytes",
            )
        } else {
            ApiError::invalid("(body)", e.body_text())
        }
    })
}

/// Parses a JSON request body, which must be an object; an empty body reads as `{}`.
pub fn json_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = body_bytes(body)?;
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &bytes
    };
    // serde reads a struct from a JSON array too (member by position); the API's bodies
    // are objects only.
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(serde_json::Value::Object(_)) | Err(_) => {}
        Ok(_) => return Err(ApiError::invalid("(body)", "must be a JSON object")),
    }
    serde_json::from_slice(bytes).map_err(|e| {
        let msg = e.to_string();
        let field = msg
            .split('`')
            .nth(1)
            .filter(|_| msg.starts_with("unknown field") || msg.starts_with("missing field"))
            .unwrap_or("(body)")
            .to_string();
        ApiError::invalid(&field, msg)
    })
}

/// Every value of a repeated query parameter.
pub fn query_values(raw: Option<&str>, name: &str) -> Vec<String> {
    raw.map(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .collect()
    })
    .unwrap_or_default()
}

/// Parses an RFC 3339 time of field `field`.
pub fn parse_time(field: &str, text: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| ApiError::invalid(field, format!("'{text}' is not an RFC 3339 time ({e})")))
}

/// The variant of `T` that `text` names, read through `T`'s own serde names (so the names
/// live in one place, the enum); a name of none is a 400 of `field`: "'text' is not
/// `choices`".
pub fn variant<T: DeserializeOwned>(field: &str, text: &str, choices: &str) -> Result<T, ApiError> {
    let names: StrDeserializer<'_, ValueError> = text.into_deserializer();
    T::deserialize(names)
        .map_err(|_| ApiError::invalid(field, format!("'{text}' is not {choices}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crmbus::delivery::{OnExhausted, Ordering};

    #[test]
    fn variant_reads_the_enum_names_and_names_the_field_otherwise() {
        assert_eq!(
            variant::<Ordering>("ordering", "none", "key or none").ok(),
            Some(Ordering::None)
        );
        assert_eq!(
            variant::<OnExhausted>("on_exhausted", "hold", "skip or hold").ok(),
            Some(OnExhausted::Hold)
        );
        let e = variant::<Ordering>("ordering", "Key", "key or none").unwrap_err();
        assert_eq!(e.detail, "ordering: 'Key' is not key or none");
        assert_eq!(e.errors[0].field, "ordering");
        assert_eq!(e.errors[0].message, "'Key' is not key or none");
    }

    #[test]
    fn query_values_takes_every_repeat_decoded() {
        assert_eq!(
            query_values(Some("topic=a&x=1&topic=b%20c"), "topic"),
            ["a", "b c"]
        );
        assert!(query_values(None, "topic").is_empty());
    }
}
