//! Authentication and authorization (issue 18, in progress): API keys and their scopes.
//!
//! What a scope grants ([`scope`]), what each route needs ([`rules`]), the key store
//! ([`keys`]: keys made and shown once, stored as a keyed hash, listed without secrets,
//! revoked, expiring), when keys are needed ([`gate`]) and the request check every route
//! goes through ([`check`]).

pub mod check;
pub mod gate;
pub mod keys;
pub mod rules;
pub mod scope;
