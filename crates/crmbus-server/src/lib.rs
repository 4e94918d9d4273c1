//! # crmbus-server
//!
//! The HTTP API of crmbus (work in progress).
