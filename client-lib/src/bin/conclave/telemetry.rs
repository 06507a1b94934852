//! The CLI's logs (stderr, with `-v`) and, when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, its spans exported over
//! OTLP/gRPC as service `conclave-cli`: a root span per command and a span per
//! gRPC call, whose trace the homeservers continue. Without the variable
//! nothing changes: no OpenTelemetry layer, no exporter, no wait at exit.
//!
//! The standard variables apply as the OpenTelemetry SDK reads them:
//! `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER(_ARG)`,
//! `OTEL_EXPORTER_OTLP_*`.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithTonicConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::resource::EnvResourceDetector;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// Variables that name an OTLP collector.
const ENDPOINT_VARIABLES: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// The exporter, to flush before the process exits.
pub(crate) struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still queued. On the CLI's single-threaded runtime,
    /// from a blocking thread: the exporter's connection needs the runtime
    /// running while the flush waits for it.
    pub(crate) async fn shutdown(self) {
        let Some(tracer_provider) = self.tracer_provider else {
            return;
        };
        let flushed = tokio::task::spawn_blocking(move || tracer_provider.shutdown()).await;
        if let Ok(Err(error)) = flushed {
            eprintln!("warning: the command's trace could not be exported: {error}");
        }
    }
}

/// Sets the subscriber: log lines to stderr for `-v`/`-vv` (with colour codes
/// only if `colour`), and spans to the collector when one is named. Must run on the tokio runtime (the exporter's
/// channel lives on it).
pub(crate) fn init(verbose: u8, colour: bool) -> anyhow::Result<Telemetry> {
    let log_filter = match verbose {
        0 => None,
        1 => Some(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("conclave_client=debug,conclave=debug,warn")),
        ),
        _ => Some(EnvFilter::new("debug")),
    };
    let log_layer = log_filter.map(|filter| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(colour)
            .with_filter(filter)
    });
    let exporting = ENDPOINT_VARIABLES
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|value| !value.is_empty()));
    let tracer_provider = if exporting {
        // The exporter reads the endpoint (and headers, timeout, compression)
        // from the variables itself.
        // An https:// collector is trusted by the Mozilla roots compiled in,
        // as the homeserver is.
        let tls = tonic::transport::ClientTlsConfig::new().with_webpki_roots();
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_tls_config(tls)
            .build()?;
        Some(
            SdkTracerProvider::builder()
                .with_resource(resource())
                .with_batch_exporter(exporter)
                .build(),
        )
    } else {
        None
    };
    // INFO spans only (the command's and each call's), as on the homeserver.
    let trace_layer = tracer_provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("conclave-cli"))
            .with_filter(tracing_subscriber::filter::filter_fn(|metadata| {
                metadata.is_span() && *metadata.level() <= tracing::Level::INFO
            }))
    });
    if log_layer.is_some() || trace_layer.is_some() {
        tracing_subscriber::registry()
            .with(log_layer)
            .with(trace_layer)
            .init();
    }
    Ok(Telemetry { tracer_provider })
}

/// `service.name` `conclave-cli` and the version, then what
/// `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_SERVICE_NAME` say over them.
fn resource() -> Resource {
    let mut builder = Resource::builder_empty()
        .with_service_name("conclave-cli")
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_detector(Box::new(EnvResourceDetector::new()));
    if let Ok(service_name) = std::env::var("OTEL_SERVICE_NAME")
        && !service_name.is_empty()
    {
        builder = builder.with_service_name(service_name);
    }
    builder.build()
}
