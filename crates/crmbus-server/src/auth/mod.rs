//! Authentication and authorization (issue 18, in progress): API keys and their scopes.
//!
//! This first step holds the parts that decide, not yet their use by the router: what a
//! scope grants ([`scope`]), what each route needs ([`rules`]) and the key store
//! ([`keys`]): keys made and shown once, stored as a keyed hash, listed without secrets,
//! revoked, expiring. The request check, the key routes, the CLI and the secure defaults
//! come next.

pub mod keys;
pub mod rules;
pub mod scope;
