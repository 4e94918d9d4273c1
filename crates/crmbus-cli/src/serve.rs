//! `crmbus serve`: the HTTP API on the configured backend, until SIGTERM or SIGINT.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use crmbus_server::backend::Storage;
use crmbus_server::{Config, Server};

/// Options of `crmbus serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// A TOML configuration file (every key can also be set as CRMBUS_<SECTION>_<KEY>).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on, HOST:PORT or a bare PORT (on 127.0.0.1); overrides
    /// server.listen. Default 127.0.0.1:7480.
    #[arg(long, value_name = "HOST:PORT", value_parser = listen_address)]
    listen: Option<String>,
    /// Directory of the embedded log (overrides storage.data_dir). Default ./crmbus-data.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

/// `--listen`: `HOST:PORT`, or a bare port on 127.0.0.1.
fn listen_address(text: &str) -> Result<String, String> {
    if text.parse::<u16>().is_ok() {
        return Ok(format!("127.0.0.1:{text}"));
    }
    text.parse::<std::net::SocketAddr>()
        .map(|_| text.to_string())
        .map_err(|_| {
            format!(
                "expected HOST:PORT (like 127.0.0.1:7480 or 0.0.0.0:7480) or a port, not '{text}'"
            )
        })
}

/// Runs the server until a stop signal, then stops gracefully.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = Config::load(args.config.as_deref(), std::env::vars())?;
    // The flags win over the file and the environment. They are set here, not passed as
    // variables, so that a configuration error names only the sources the user gave.
    if let Some(l) = &args.listen {
        config.server.listen = l.clone();
    }
    if let Some(d) = &args.data_dir {
        config.storage.data_dir = d.clone();
    }
    // Dropped last, on every way out (a panic too): what the batch holds is sent.
    let _tracer = ExportOnDrop(install_tracing(&config.tracing)?);
    crate::disable_transparent_huge_pages();
    serve(config)
}

/// Flushes and stops the span exporter when dropped.
struct ExportOnDrop(Option<opentelemetry_sdk::trace::SdkTracerProvider>);

impl Drop for ExportOnDrop {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("crmbus: the last spans were not exported: {e}");
            }
        }
    }
}

/// The OTLP traces URL of `[tracing] otlp_endpoint`: a collector's base URL gets the
/// standard `/v1/traces` path (the exporter posts to the URL as given).
fn traces_url(endpoint: &str) -> String {
    match url::Url::parse(endpoint) {
        Ok(mut u) if u.path().is_empty() || u.path() == "/" => {
            u.set_path("/v1/traces");
            u.to_string()
        }
        _ => endpoint.to_string(),
    }
}

/// Logs to standard error (`CRMBUS_LOG`) and, with `[tracing] otlp_endpoint`, exports
/// crmbus's spans over OTLP/HTTP in batches from a thread of the exporter's own.
fn install_tracing(
    section: &crmbus_server::config::TracingSection,
) -> anyhow::Result<Option<opentelemetry_sdk::trace::SdkTracerProvider>> {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;

    let log = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(crate::log_filter());
    if !section.enabled() {
        tracing_subscriber::registry().with(log).try_init()?;
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(traces_url(&section.otlp_endpoint))
        .build()
        .map_err(|e| anyhow::anyhow!("tracing.otlp_endpoint: {e}"))?;
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(section.service_name.clone())
                .build(),
        )
        .build();
    // crmbus's own spans (publish, append, deliver, webhook), whatever CRMBUS_LOG says.
    let spans = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("crmbus"))
        .with_filter(
            tracing_subscriber::filter::Targets::new().with_target("crmbus", tracing::Level::INFO),
        );
    tracing_subscriber::registry()
        .with(log)
        .with(spans)
        .try_init()?;
    Ok(Some(provider))
}

/// Runs the server on `config` until a stop signal.
fn serve(config: Config) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let backend = config.storage.backend;
        let where_ = match config.storage.resolve() {
            Ok(storage @ Storage::Embedded { .. }) => {
                format!(" in {}", storage.location().unwrap_or_default())
            }
            Ok(storage) => storage
                .location()
                .map(|l| format!(" at {l}"))
                .unwrap_or_default(),
            Err(_) => String::new(),
        };
        let server = Server::start(config).await.context("starting the server")?;
        eprintln!(
            "crmbus listening on {} (backend {backend}{where_}); stop with Ctrl-C or SIGTERM",
            server.url()
        );
        let stop = server.stop_handle();
        tokio::spawn(async move {
            wait_for_signal().await;
            eprintln!("crmbus: stopping (finishing requests in flight, flushing)");
            let _ = stop.send(true);
        });
        server.wait().await.context("server")?;
        eprintln!("crmbus: stopped");
        Ok(())
    })
}

pub(crate) async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_takes_an_address_or_a_bare_port() {
        assert_eq!(listen_address("7481").as_deref(), Ok("127.0.0.1:7481"));
        assert_eq!(listen_address("0.0.0.0:80").as_deref(), Ok("0.0.0.0:80"));
        let e = listen_address("localhost").unwrap_err();
        assert!(e.contains("expected HOST:PORT"), "{e}");
    }

    #[test]
    fn a_collectors_base_url_gets_the_traces_path() {
        assert_eq!(
            traces_url("http://collector:4318"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://collector:4318/"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://otel.example.com/custom/traces"),
            "https://otel.example.com/custom/traces"
        );
    }
}
