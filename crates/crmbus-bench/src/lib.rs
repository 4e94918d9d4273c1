//! `crmbus bench …`: benchmarks that print figures (never pass/fail). The `crmbus`
//! binary dispatches to [`run`]; each benchmark is a module (`log`, `deliver`, `http`,
//! `net`, `compare`, `schema`, `outbox`, `subjects`), and [`rss`] reads the process's memory and CPU time.
//!
//! This crate is the benchmark commands, not a library to build on: its functions
//! return `anyhow` errors, which the binary prints.

mod common;
mod compare;
mod deliver;
mod http;
mod log;
mod net;
mod outbox;
pub mod rss;
mod schema;
mod subjects;

use clap::Subcommand;

/// The benchmarks.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// The embedded log: the disk's own limit, pipelined and one-at-a-time durable appends,
    /// and a full read-back, in one run.
    Log(log::LogBenchArgs),
    /// Delivery: throughput with a no-op handler and key ordering, and publish→handler
    /// latency at a fixed publish rate.
    Deliver(deliver::DeliverBenchArgs),
    /// Publishing over HTTP from concurrent clients: one event per request and batches,
    /// with per-request latency, against an in-process server (fsync) or `--url`.
    Http(http::HttpBenchArgs),
    /// Over the network, in one run: the crmbus server (HTTP, fsync), Redis Streams with
    /// AOF always and everysec, NATS JetStream 2.9 and NATS ≥ 2.10 with sync_interval
    /// always, each started here with its durability stated: one-at-a-time and batch
    /// publishes and a group read-back, with 1 and 32 clients, CPU and disk per event.
    Net(net::NetBenchArgs),
    /// The same publish, one-at-a-time and group-consume workload against the embedded log
    /// (fsync), Redis Streams and NATS JetStream in one run, with each one's durability as
    /// found and the ratios of embedded to the others.
    Compare(compare::CompareBenchArgs),
    /// Schema validation at publish: durable publish_batch throughput with the catalog's
    /// schema enforced and without a validator, and validation alone on one core.
    Schema(schema::SchemaBenchArgs),
    /// The transactional outbox on PostgreSQL: rows/s relayed end to end and
    /// commit-to-published latency, against the writers' own rate with no relay.
    Outbox(outbox::OutboxBenchArgs),
    /// Event sourcing on the embedded log: durable appends stating each subject's expected
    /// version against the same appends without, stale ones refused, and every subject's
    /// stream read from the subject index against reading the partitions by offset.
    Subjects(subjects::SubjectsBenchArgs),
}

/// Runs a benchmark.
pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Log(args) => log::run(args),
        BenchCommand::Deliver(args) => deliver::run(args),
        BenchCommand::Http(args) => http::run(args),
        BenchCommand::Net(args) => net::run(args),
        BenchCommand::Compare(args) => compare::run(args),
        BenchCommand::Schema(args) => schema::run(args),
        BenchCommand::Outbox(args) => outbox::run(args),
        BenchCommand::Subjects(args) => subjects::run(args),
    }
}
