//! `crmbus bench …`: benchmarks that print figures (never pass/fail).

mod deliver;
mod http;
mod log;

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
}

/// Runs a benchmark.
pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Log(args) => log::run(args),
        BenchCommand::Deliver(args) => deliver::run(args),
        BenchCommand::Http(args) => http::run(args),
    }
}
