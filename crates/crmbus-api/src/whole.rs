//! Reading JSON integers the way JSON Schema counts them: `5` and `5.0` are both the
//! integer 5 (a number with a zero fractional part), so an integral float is taken where
//! the document says `integer`; `5.5`, a negative number or one out of range is not.

use serde::de::{Deserialize, Deserializer, Error};
use serde_json::Number;

/// `n` as a `u64` if it is a whole number from 0 to `u64::MAX`, written either way.
pub fn number_u64(n: &Number) -> Option<u64> {
    match n.as_u64() {
        Some(v) => Some(v),
        // 2^64 is the first float above u64::MAX; every integral float below it is exact.
        None => n
            .as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 18_446_744_073_709_551_616.0)
            .map(|f| f as u64),
    }
}

fn read<'de, D: Deserializer<'de>>(d: D, max: u64) -> Result<Option<u64>, D::Error> {
    let Some(n) = Option::<Number>::deserialize(d)? else {
        return Ok(None);
    };
    match number_u64(&n) {
        Some(v) if v <= max => Ok(Some(v)),
        _ => Err(D::Error::custom(format!(
            "invalid value: {n}, expected an integer between 0 and {max}"
        ))),
    }
}

/// An optional `u64`.
pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    read(d, u64::MAX)
}

/// An optional `u32`.
pub fn opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    read(d, u64::from(u32::MAX)).map(|v| v.map(|v| v as u32))
}

/// An optional member that must be a JSON object (or `null`): serde would also read a
/// struct from an array, member by position.
pub fn opt_object<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    match Option::<serde_json::Value>::deserialize(d)? {
        None => Ok(None),
        Some(v @ serde_json::Value::Object(_)) => serde_json::from_value(v)
            .map(Some)
            .map_err(D::Error::custom),
        Some(_) => Err(D::Error::custom("invalid type: expected a JSON object")),
    }
}

/// An optional `usize`.
pub fn opt_usize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    read(d, usize::MAX as u64).map(|v| v.map(|v| v as usize))
}
