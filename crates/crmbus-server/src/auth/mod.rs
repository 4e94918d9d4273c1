//! Authentication and authorization (issue 18, in progress): API keys and their scopes.
//!
//! What a scope grants ([`scope`]), what each route needs ([`rules`]), the key store
//! ([`keys`]: keys made and shown once, stored as a keyed hash, listed without secrets,
//! revoked, expiring) and when keys are needed ([`gate`]). The request check every route
//! goes through is [`crate::request_auth`], which applies them.

pub mod gate;
pub mod keys;
pub mod rules;
pub mod scope;
