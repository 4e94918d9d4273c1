//! [`CompatibilityMode`]: how a new schema version must relate to the previous one.
//!
//! The type stands apart from [`crate::compat`] so that [`crate::error`] can name it
//! without importing the checker; the checker, the registry and the error all use it.
//! Parsing a mode from text (`"backward".parse()`) fails with a [`crate::SchemaError`], so
//! that `FromStr` impl lives in [`crate::compat`].

use std::fmt;

use serde::{Deserialize, Serialize};

/// How a new schema version must relate to the previous one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompatibilityMode {
    /// The new schema accepts all data valid under the previous version (the default).
    #[default]
    Backward,
    /// The previous version accepts all data valid under the new schema.
    Forward,
    /// Both backward and forward.
    Full,
    /// No check.
    None,
}

impl CompatibilityMode {
    /// The mode's name as used in the API and the store (`backward`, `forward`, `full`,
    /// `none`).
    pub fn as_str(&self) -> &'static str {
        match self {
            CompatibilityMode::Backward => "backward",
            CompatibilityMode::Forward => "forward",
            CompatibilityMode::Full => "full",
            CompatibilityMode::None => "none",
        }
    }
}

impl fmt::Display for CompatibilityMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
