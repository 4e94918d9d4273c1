//! # crmbus-nats
//!
//! crmbus on NATS JetStream (work in progress).
