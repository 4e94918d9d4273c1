//! `crmbus`: the command-line tool of crmbus.

mod audit;
mod client;
mod cluster;
mod consume;
mod demo;
mod dlq;
mod keys;
mod outbox;
mod publish;
mod replay;
mod schema;
mod serve;
mod subs;
mod tail;
mod topics;

use clap::{Parser, Subcommand};

// The system allocator spends a quarter of the append path's CPU consolidating chunks freed
// on other threads; mimalloc's per-thread free lists avoid that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process (Linux), as Redis advises for itself.
/// The allocator asks for huge pages, and each first touch of one zeroes 2 MiB in the
/// kernel: with memory freed and taken again at every batch, that was about a tenth of the
/// server's CPU on a publish or read-back workload, and doubled the read-back p99. Every
/// command that runs the engine in this process does it, not only `serve`: the in-process
/// benchmarks (`bench log`) spent a quarter of their CPU zeroing huge pages, and measured
/// an engine the server never runs. Programs started by this process inherit the setting,
/// so commands that start other programs (see [`starts_programs`]) leave it alone. A
/// failure is logged and the command runs on.
pub(crate) fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl with PR_SET_THP_DISABLE takes plain integers and changes only
        // this process's memory policy.
        let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        if rc != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(),
                "could not turn transparent huge pages off");
        }
    }
}

/// Whether `command` starts other programs, which would inherit this process's
/// transparent-huge-page setting: `consume --exec` runs the user's handler, and `bench net`
/// starts the peers it measures (Redis, NATS, the Kafka broker) under the machine's own
/// settings (the crmbus server it starts sets its own).
fn starts_programs(command: &Command) -> bool {
    matches!(
        command,
        Command::Consume(_) | Command::Bench(crmbus_bench::BenchCommand::Net(_))
    )
}

/// crmbus — a durable event bus for CRM and business automation.
#[derive(Parser)]
#[command(name = "crmbus", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API (embedded log in ./crmbus-data on 127.0.0.1:7480 by default).
    Serve(serve::ServeArgs),
    /// Create, list, show and delete topics.
    #[command(subcommand)]
    Topics(topics::TopicsCommand),
    /// Publish an event (or JSON lines from stdin) to one or more topics.
    Publish(publish::PublishArgs),
    /// Follow a topic live.
    Tail(tail::TailArgs),
    /// Create, list, show and delete pull subscriptions.
    #[command(subcommand)]
    Subs(subs::SubsCommand),
    /// Run a command for every event of a pull subscription: ack on exit 0, nack otherwise.
    Consume(consume::ConsumeArgs),
    /// List, show, redrive and discard a subscription's dead letters.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Move a subscription's cursor to replay (or skip) events.
    Replay(replay::ReplayArgs),
    /// The schema registry: list, show, register, check, compat, validate, docs.
    #[command(subcommand)]
    Schema(schema::SchemaCommand),
    /// The transactional outbox on PostgreSQL: sql, init, relay, status.
    #[command(subcommand)]
    Outbox(outbox::OutboxCommand),
    /// API keys: create (printed once), list, revoke.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// The server's audit log: admin actions, dead-letter actions, key changes, refused
    /// requests (admin key).
    Audit(audit::AuditArgs),
    /// The servers sharing a backend: `cluster status`.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Run the lead scenario (publisher, three consumers, retries, DLQ, redrive) on an
    /// embedded log in a temporary directory.
    Demo(demo::DemoArgs),
    /// Measure crmbus on this machine (prints figures; `--json` for one JSON object).
    #[command(subcommand)]
    Bench(crmbus_bench::BenchCommand),
}

fn main() -> std::process::ExitCode {
    // Output piped into `head` and the like: end quietly on a closed pipe, as Unix tools do.
    // SAFETY: resetting a signal's disposition to its default at startup, before any thread
    // exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    // `serve` sets up its own once its configuration is read ([tracing] may add an
    // exporter); every other command logs to standard error.
    if !matches!(cli.command, Command::Serve(_)) {
        tracing_subscriber::fmt()
            .with_env_filter(log_filter())
            .with_writer(std::io::stderr)
            .init();
        if !starts_programs(&cli.command) {
            disable_transparent_huge_pages();
        }
    }
    let result = match cli.command {
        Command::Bench(cmd) => crmbus_bench::run(cmd),
        Command::Serve(args) => serve::run(args),
        Command::Topics(cmd) => topics::run(cmd),
        Command::Publish(args) => publish::run(args),
        Command::Tail(args) => tail::run(args),
        Command::Subs(cmd) => subs::run(cmd),
        Command::Dlq(cmd) => dlq::run(cmd),
        Command::Consume(args) => consume::consume(args),
        Command::Replay(args) => replay::run(args),
        Command::Schema(cmd) => schema::run(cmd),
        Command::Demo(args) => demo::run(args),
        Command::Outbox(cmd) => outbox::run(cmd),
        Command::Cluster(cmd) => cluster::run(cmd),
        Command::Keys(cmd) => keys::run(cmd),
        Command::Audit(args) => audit::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", cause_chain(&e));
            if let Some(hint) = hint(&e) {
                eprintln!("  hint: {hint}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

/// What `CRMBUS_LOG` asks to be logged (default: warnings and errors).
pub(crate) fn log_filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_env("CRMBUS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"))
}

/// An error and its causes on one line, each said once: a cause whose text its parent's
/// message already holds (errors that quote their source) is not repeated.
fn cause_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// What to do about an error, when the CLI knows better than its message.
fn hint(e: &anyhow::Error) -> Option<String> {
    e.chain().find_map(|cause| {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::PermissionDenied
                | std::io::ErrorKind::NotADirectory
                | std::io::ErrorKind::ReadOnlyFilesystem => Some(
                    "check that the data directory can be created and written by this user, or pass --data-dir"
                        .to_string(),
                ),
                _ => None,
            };
        }
        match cause.downcast_ref::<crmbus_server::ServerError>()? {
            crmbus_server::ServerError::Bind { addr, .. } => Some(format!(
                "another process may be listening on {addr}; choose another --listen (or CRMBUS_SERVER_LISTEN)"
            )),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use");
        let e = anyhow::Error::new(io)
            .context("cannot listen on 127.0.0.1:7480: Address already in use");
        let e = e.context("starting the server");
        assert_eq!(
            cause_chain(&e),
            "starting the server: cannot listen on 127.0.0.1:7480: Address already in use"
        );
    }
}
