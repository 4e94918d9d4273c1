//! API keys: create (the key shown once), list (without secrets), revoke.

use serde::{Deserialize, Serialize};

/// `POST /v1/keys`: a new API key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// A name for people: 1–100 characters of `A–Z a–z 0–9 . _ - @`.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z0-9._@-]{1,100}$"))]
    pub name: String,
    /// `publish:<topic-pattern>`, `subscribe:<topic-pattern>`, `dlq:<topic-pattern>` or
    /// `admin` (a pattern is a topic name in which `*` matches any run of characters);
    /// at least one.
    pub scopes: Vec<String>,
    /// When the key stops working (RFC 3339); never when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// A key as listed: everything but its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyView {
    /// The key's id (the part after `crmbus_` and before its secret).
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// When it was made (RFC 3339).
    pub created_at: String,
    /// When it stops working (RFC 3339), if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// When it was revoked (RFC 3339), if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

/// The answer to a create: the key in full, shown this once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedKey {
    /// `crmbus_<id>_<secret>`: send it as `Authorization: Bearer …`. It cannot be shown
    /// again.
    pub key: String,
    /// The key as listed.
    #[serde(flatten)]
    pub view: KeyView,
}

/// `GET /v1/keys`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyList {
    /// Every key, oldest first, revoked ones included.
    pub keys: Vec<KeyView>,
}

/// `GET /v1/whoami`: the key a request came with and what it may do (the console shows
/// only the actions its scopes allow; the API refuses the others anyway).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WhoAmI {
    /// Whether this server needs a key now (`false`: keyless, everything allowed).
    pub keys_required: bool,
    /// The key's id, when a key came with the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Who acts, as audit records name them (`anonymous` without a key).
    pub actor: String,
    /// The scopes in effect: the key's, or `admin` when no key is needed.
    pub scopes: Vec<String>,
}
