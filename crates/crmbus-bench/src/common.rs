//! What the benchmarks share: progress bars, work directories, printing a report, and
//! the pipelined producer of the append phases.

/// A progress bar for `len` steps labelled `what` (hidden with `--json`).
pub(crate) fn bar(len: u64, what: &str, quiet: bool) -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressStyle};
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>16} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_prefix(what.to_string());
    pb
}

/// A temporary directory `crmbus-bench-<name>-*` under `parent` (default: the current
/// directory), removed when dropped.
pub(crate) fn work_dir(
    parent: Option<&std::path::Path>,
    name: &str,
) -> anyhow::Result<tempfile::TempDir> {
    use anyhow::Context;
    let parent = parent.unwrap_or_else(|| std::path::Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    tempfile::Builder::new()
        .prefix(&format!("crmbus-bench-{name}-"))
        .tempdir_in(parent)
        .with_context(|| format!("creating a directory in {}", parent.display()))
}

/// Prints a benchmark's report: one JSON object with `--json`, else its table.
pub(crate) fn emit<R: serde::Serialize>(
    report: &R,
    json: bool,
    table: fn(&R),
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        table(report);
    }
    Ok(())
}

/// Runs a benchmark's body on a multi-threaded runtime, in a new work directory under
/// `parent` named after `name` (removed afterwards), and prints its report.
pub(crate) fn run_in_work_dir<R, F, Fut>(
    parent: Option<&std::path::Path>,
    name: &str,
    json: bool,
    table: fn(&R),
    body: F,
) -> anyhow::Result<()>
where
    R: serde::Serialize,
    F: FnOnce(std::path::PathBuf) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<R>>,
{
    let work = work_dir(parent, name)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(body(work.path().to_path_buf()))?;
    emit(&report, json, table)
}

/// One producer of a pipelined-append phase: it takes the next `batch` event numbers from
/// `next` until `events` are taken, gives each event of its reused `buffer` a fresh id and
/// key (so the figure is the log's and not the allocator's), appends them, and reports
/// each append's count to `progress`.
pub(crate) fn spawn_producer<L: crmbus::EventLog + ?Sized + 'static>(
    log: std::sync::Arc<L>,
    topics: std::sync::Arc<Vec<String>>,
    next: std::sync::Arc<std::sync::atomic::AtomicU64>,
    events: u64,
    mut buffer: Vec<crmbus::Event>,
    progress: impl Fn(u64) + Send + 'static,
) -> tokio::task::JoinHandle<Result<(), crmbus::LogError>> {
    use std::sync::atomic::Ordering;
    let batch = buffer.len() as u64;
    tokio::spawn(async move {
        loop {
            let start = next.fetch_add(batch, Ordering::Relaxed);
            if start >= events {
                return Ok(());
            }
            let end = (start + batch).min(events);
            buffer.truncate((end - start) as usize);
            for (e, n) in buffer.iter_mut().zip(start..end) {
                e.id = uuid::Uuid::now_v7().to_string();
                e.subject = Some(format!("deal-{}", n % 10_000));
            }
            log.append(&topics, &buffer).await?;
            progress(end - start);
        }
    })
}
