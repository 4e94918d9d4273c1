//! `crmbus`: the command-line tool of crmbus.

mod bench;
mod demo;
mod local;
mod rss;

use clap::{Parser, Subcommand};

// The system allocator spends a quarter of the append path's CPU consolidating chunks freed
// on other threads; mimalloc's per-thread free lists avoid that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// crmbus — a durable event bus for CRM and business automation.
#[derive(Parser)]
#[command(name = "crmbus", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Publish one event into a local embedded log (creating missing topics).
    Publish(local::PublishArgs),
    /// Read events of a topic from a local embedded log.
    Read(local::ReadArgs),
    /// Run the lead scenario (publisher, three consumers, retries, DLQ, redrive) on an
    /// embedded log in a temporary directory.
    Demo(demo::DemoArgs),
    /// Measure crmbus on this machine (prints figures; `--json` for one JSON object).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CRMBUS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench(cmd) => bench::run(cmd),
        Command::Publish(args) => local::publish(args),
        Command::Demo(args) => demo::run(args),
        Command::Read(args) => local::read(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
