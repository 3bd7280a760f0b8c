//! Logs and trace export of the `choreo` binary: `tracing` lines to stderr (text or JSON,
//! colour only on a terminal) and, when an OTLP endpoint is configured, choreo's spans exported
//! to an OpenTelemetry collector through `tracing-opentelemetry`, each a child of the
//! `traceparent` it handles (see `choreo_bus::wire::trace`); and the one line a failed command
//! ends with ([`error_line`]).

use anyhow::Context as _;
use choreo_coordinator::config::{LogFormat, TracingConfig};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Flushes and stops the span export when dropped (at the end of the command).
#[derive(Debug, Default)]
#[must_use = "dropping it stops the span export"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown()
        {
            eprintln!("choreo: the last spans were not exported: {e}");
        }
    }
}

/// Where spans go: the configured endpoint (a base address; `/v1/traces` is appended), or the
/// standard `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`, or nowhere.
fn export_endpoint(cfg: &TracingConfig) -> Option<Option<String>> {
    if let Some(base) = &cfg.otlp_endpoint {
        return Some(Some(format!("{}/v1/traces", base.trim_end_matches('/'))));
    }
    let set = |v: &str| std::env::var(v).is_ok_and(|s| !s.trim().is_empty());
    (set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") || set("OTEL_EXPORTER_OTLP_ENDPOINT"))
        .then_some(None)
}

fn tracer_provider(
    cfg: &TracingConfig,
    endpoint: Option<String>,
) -> anyhow::Result<SdkTracerProvider> {
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_http();
    if let Some(e) = endpoint {
        exporter = exporter.with_endpoint(e);
    }
    let exporter = exporter
        .build()
        .context("creating the OTLP span exporter (tracing.otlp_endpoint)")?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name(cfg.service_name.clone());
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        // Follows the caller's sampling decision (the traceparent's flag); samples new traces.
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
        .with_resource(resource.build())
        .build())
}

/// Installs the process's logs (`level` unless `RUST_LOG` is set) and, when `tracing`
/// configures an endpoint (or the standard `OTEL_EXPORTER_OTLP_*ENDPOINT` variables do), the
/// span export. Keep the answer until the command ends.
pub fn init(level: &str, format: LogFormat, tracing: &TracingConfig) -> anyhow::Result<Telemetry> {
    let provider = match export_endpoint(tracing) {
        Some(endpoint) => Some(tracer_provider(tracing, endpoint)?),
        None => None,
    };
    install(level, format, provider.as_ref());
    Ok(Telemetry { provider })
}

/// Logs only (one-shot commands: no span export).
pub fn init_logs(level: &str, format: LogFormat) {
    install(level, format, None);
}

fn install(level: &str, format: LogFormat, provider: Option<&SdkTracerProvider>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Colour only on a terminal: a file or a pipe gets plain text (and JSON never has any).
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Json => fmt.json().boxed(),
        LogFormat::Text => fmt.boxed(),
    };
    // choreo's own spans are exported whatever the log level says (the log filter governs the
    // lines only); other crates' spans are not.
    let otel = provider.map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("choreo"))
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target("choreo", tracing::Level::INFO),
            )
    });
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .try_init();
}

/// `error` and its causes on one line, `: `-separated as `{:#}` prints them, leaving out a cause
/// whose text the line already holds: many errors (librdkafka's, choreo's Kafka errors) print
/// their source in their own message, and `{:#}` would repeat it once per level.
pub fn error_line(error: &anyhow::Error) -> String {
    let mut line = error.to_string();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::error_line;
    use anyhow::Context as _;

    #[test]
    fn an_error_line_says_each_cause_once() {
        let kafka = rdkafka::error::KafkaError::MetadataFetch(
            rdkafka::types::RDKafkaErrorCode::BrokerTransportFailure,
        );
        let bus = choreo_bus::BusError::Kafka {
            context: "fetching cluster metadata".into(),
            source: Box::new(kafka),
        };
        let line = error_line(&anyhow::Error::new(bus));
        assert_eq!(
            line,
            "kafka: fetching cluster metadata: Meta data fetch error: BrokerTransportFailure (Local: Broker transport failure)"
        );
        // Causes that add something are kept, in order.
        let io = std::io::Error::other("disk full");
        let err = Err::<(), _>(io)
            .context("writing the changelog")
            .context("stopping")
            .unwrap_err();
        assert_eq!(
            error_line(&err),
            "stopping: writing the changelog: disk full"
        );
    }
}
