//! # crmbus-schema
//!
//! The schema registry and the built-in CRM event catalog (work in progress).
