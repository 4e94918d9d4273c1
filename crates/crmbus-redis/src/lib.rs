//! # crmbus-redis
//!
//! crmbus on Redis Streams (work in progress).
