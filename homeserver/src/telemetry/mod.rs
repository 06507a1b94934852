//! The process's logging and tracing: log lines to stderr (human or JSON, the
//! JSON ones with the current `trace_id` and `span_id`), and an OpenTelemetry
//! span for every INFO-or-higher `tracing` span, exported over OTLP/gRPC when
//! a collector is configured.
//!
//! # Layout
//! - [`json_log`]: the JSON log line format with the trace and span ids.
//! - [`client_context`]: which trace a client API request joins, and whether
//!   it is sampled.
//!
//! Precedence, as for `RUST_LOG` over `log.filter`: the configuration file
//! gives defaults and the standard OpenTelemetry variables win. This module
//! reads `OTEL_EXPORTER_OTLP_ENDPOINT`/`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
//! (only to decide whether to export; the exporter reads their values itself),
//! `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_TRACES_SAMPLER`
//! with `_ARG` (when set, the ratio they stand for replaces `sampling_ratio`;
//! the sampler stays this module's, parent-based, so that peers' decisions
//! hold and clients cannot steer it, whichever sampler the variable names);
//! opentelemetry-otlp reads `OTEL_EXPORTER_OTLP_*` headers,
//! timeout and compression, and the batch processor `OTEL_BSP_*`.

pub mod client_context;
pub mod json_log;

use crate::config::{Config, LogFormat};
use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::resource::EnvResourceDetector;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Variables that name an OTLP collector; either one turns export on.
const ENDPOINT_VARIABLES: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter refused its configuration (an endpoint it cannot use).
    #[error("cannot set up the OTLP span exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    /// A global `tracing` subscriber was set already (in this process).
    #[error("logging is already set up in this process: {0}")]
    AlreadySet(#[from] tracing_subscriber::util::TryInitError),
}

/// Keeps the tracer provider until the end of `main`: [`TelemetryGuard::shutdown`]
/// exports the spans still queued, so that the last requests' spans leave.
#[must_use = "spans still queued are lost unless the guard is shut down"]
pub struct TelemetryGuard {
    tracer_provider: SdkTracerProvider,
    exporting: bool,
}

impl TelemetryGuard {
    /// Whether spans are exported to a collector.
    pub fn exporting(&self) -> bool {
        self.exporting
    }

    /// Exports what is queued and stops the exporter. Call it after the server
    /// stopped, while the tokio runtime still runs (the exporter's connection
    /// lives on it).
    pub fn shutdown(self) {
        if let Err(error) = self.tracer_provider.shutdown() {
            tracing::warn!(%error, "the last spans could not be exported");
        }
    }
}

/// Whether log lines to `stream` may have colour codes: only on a terminal,
/// and not when `NO_COLOR` is set (to anything but the empty string; see
/// no-color.org). Redirected to a file, they would be noise in it.
pub fn colour_allowed(stream: &impl std::io::IsTerminal) -> bool {
    stream.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty())
}

/// Sets the process's `tracing` subscriber (logs and OpenTelemetry spans), the
/// global tracer provider and the W3C trace context propagator. Human log
/// lines have colour codes only if `colour` (see [`colour_allowed`]). With a
/// collector configured, it must be called within a tokio runtime: the
/// exporter's gRPC channel runs on it.
pub fn init(config: &Config, colour: bool) -> Result<TelemetryGuard, TelemetryError> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.filter))
        .add_directive(
            crate::store::SECRET_BEARING_LOG_TARGETS
                .parse()
                .expect("SECRET_BEARING_LOG_TARGETS is a valid directive"),
        );
    let log_layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour);
    let log_layer = match config.log.format {
        LogFormat::Human => log_layer.with_filter(filter).boxed(),
        // `.json()` first: it makes the span fields JSON too, which the
        // JSON event format reads back.
        LogFormat::Json => log_layer
            .json()
            .event_format(json_log::JsonWithTraceIds::default())
            .with_filter(filter)
            .boxed(),
    };

    let (tracer_provider, exporting) = tracer_provider(config)?;
    let tracer = tracer_provider.tracer("conclave-homeserver");
    opentelemetry::global::set_tracer_provider(tracer_provider.clone());
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    // Its own filter, apart from the log filter, so that trace context still
    // propagates when logging is turned down to WARN. Spans only: log events
    // are the log's, and would only make exported spans bigger.
    let trace_filter = tracing_subscriber::filter::filter_fn(|metadata| {
        metadata.is_span() && *metadata.level() <= tracing::Level::INFO
    })
    .with_max_level_hint(tracing::Level::INFO);
    let trace_layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(trace_filter);

    tracing_subscriber::registry()
        .with(log_layer)
        .with(trace_layer)
        .try_init()?;
    // The endpoint itself is not logged: one from the environment may carry
    // credentials (the configuration file's may not).
    if exporting {
        tracing::info!(
            sampling_ratio = effective_sampling_ratio(config),
            "exporting traces over OTLP/gRPC"
        );
    } else {
        tracing::info!("not exporting traces (no otlp_endpoint or OTEL_EXPORTER_OTLP_ENDPOINT)");
    }
    Ok(TelemetryGuard {
        tracer_provider,
        exporting,
    })
}

/// The tracer provider of `config`: with a batch OTLP exporter when a
/// collector is configured (returned `true`), and without exporter otherwise
/// (spans still get ids, for propagation and logs).
pub fn tracer_provider(config: &Config) -> Result<(SdkTracerProvider, bool), TelemetryError> {
    let telemetry = &config.telemetry;
    // Always our sampler: the SDK's own from OTEL_TRACES_SAMPLER would, for
    // `traceidratio`, ignore the parent's decision (a peer's, or the keyed
    // one `client_context` makes for a client's trace id).
    let mut builder = SdkTracerProvider::builder()
        .with_resource(resource(config))
        .with_sampler(sampler(effective_sampling_ratio(config)));
    let endpoint_from_environment = ENDPOINT_VARIABLES
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|value| !value.is_empty()));
    let exporting = endpoint_from_environment || telemetry.otlp_endpoint.is_some();
    if exporting {
        // Used only for an https:// collector, trusting the Mozilla roots
        // compiled in (as the client library does), whatever the host has.
        let tls = tonic::transport::ClientTlsConfig::new().with_webpki_roots();
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_tls_config(tls);
        // The exporter prefers an endpoint given here over the variables, so
        // it gets none when a variable is set: then the variable wins.
        if let (false, Some(endpoint)) = (endpoint_from_environment, &telemetry.otlp_endpoint) {
            exporter = exporter.with_endpoint(endpoint.clone());
        }
        // A batch processor: ending a span only queues it (a bounded queue;
        // spans beyond it are dropped), and a thread of the SDK exports, so
        // a slow or unreachable collector never holds a request up.
        builder = builder.with_batch_exporter(FailureLoggingExporter::new(exporter.build()?));
    }
    Ok((builder.build(), exporting))
}

/// The share of traces to sample that started here or at a client:
/// `sampling_ratio`, unless `OTEL_TRACES_SAMPLER` (and `_ARG`) say otherwise,
/// as they do for the SDK's sampler.
pub fn effective_sampling_ratio(config: &Config) -> f64 {
    sampling_ratio_from(
        std::env::var("OTEL_TRACES_SAMPLER").ok().as_deref(),
        std::env::var("OTEL_TRACES_SAMPLER_ARG").ok().as_deref(),
        config.telemetry.sampling_ratio,
    )
}

/// The ratio an `OTEL_TRACES_SAMPLER` value (with its `_ARG`) stands for, as
/// the SDK reads them (a ratio sampler without a valid argument, and a sampler
/// it does not implement, sample everything), or `configured` when the
/// variable is unset.
fn sampling_ratio_from(sampler: Option<&str>, argument: Option<&str>, configured: f64) -> f64 {
    match sampler {
        Some("always_on" | "parentbased_always_on") => 1.0,
        Some("always_off" | "parentbased_always_off") => 0.0,
        Some("traceidratio" | "parentbased_traceidratio") => argument
            .and_then(|argument| argument.trim().parse::<f64>().ok())
            .filter(|ratio| (0.0..=1.0).contains(ratio))
            .unwrap_or(1.0),
        Some(_) => 1.0,
        None => configured,
    }
}

/// Parent-based: a trace a peer started keeps the peer's decision (client
/// traces get theirs from [`client_context`]); new traces are sampled by
/// their trace id at `ratio`.
pub fn sampler(ratio: f64) -> Sampler {
    Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
}

/// `service.name`, `service.version`, `service.instance.id` (the replica),
/// `conclave.domain` and the configured extra attributes, then whatever
/// `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_SERVICE_NAME` say over them.
///
/// The domain is `conclave.domain` rather than `service.namespace`: a
/// namespace groups different services of one system, whereas every domain
/// runs the same service and the domain names whose users it serves.
pub fn resource(config: &Config) -> Resource {
    let telemetry = &config.telemetry;
    let replica = telemetry.replica.clone().unwrap_or_else(host_name);
    let mut builder = Resource::builder_empty()
        .with_attributes(
            telemetry
                .resource_attributes
                .iter()
                .map(|(key, value)| KeyValue::new(key.clone(), value.clone())),
        )
        .with_attributes([
            KeyValue::new("service.name", telemetry.service_name.clone()),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.instance.id", replica),
            KeyValue::new("conclave.domain", config.domain.clone()),
        ])
        .with_detector(Box::new(EnvResourceDetector::new()));
    if let Ok(service_name) = std::env::var("OTEL_SERVICE_NAME")
        && !service_name.is_empty()
    {
        builder = builder.with_service_name(service_name);
    }
    builder.build()
}

/// The host's name (a Kubernetes pod's name), or `unknown` where the system
/// does not tell it.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The OTLP exporter, logging the first failure of a run of failed exports
/// and the recovery after it with how many spans were lost meanwhile, rather
/// than every failed batch: a collector that is down would otherwise fill the
/// log. The batch processor drops the spans of a failed export. (Spans it
/// drops because its queue is full, while exports are slow, are not counted:
/// the SDK tells of those only through its internal logs, which would also log
/// every failed export.)
#[derive(Debug)]
struct FailureLoggingExporter<E> {
    inner: E,
    failing: Arc<AtomicBool>,
    /// Spans of failed exports since the last success.
    dropped: Arc<AtomicU64>,
}

impl<E> FailureLoggingExporter<E> {
    fn new(inner: E) -> Self {
        FailureLoggingExporter {
            inner,
            failing: Arc::new(AtomicBool::new(false)),
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl<E: SpanExporter> SpanExporter for FailureLoggingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len() as u64;
        let result = self.inner.export(batch).await;
        match &result {
            Err(error) => {
                self.dropped.fetch_add(spans, Ordering::Relaxed);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        %error,
                        spans,
                        "cannot export spans to the OTLP collector; they are dropped until it answers again"
                    );
                }
            }
            Ok(()) if self.failing.swap(false, Ordering::Relaxed) => {
                let dropped = self.dropped.swap(0, Ordering::Relaxed);
                tracing::info!(dropped, "the OTLP collector accepts spans again");
            }
            Ok(()) => {}
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resource_names_the_service_its_version_replica_and_domain() {
        let mut config = Config {
            domain: "a.example".to_owned(),
            ..Config::default()
        };
        config.telemetry.replica = Some("pod-7".to_owned());
        config
            .telemetry
            .resource_attributes
            .insert("deployment.environment".to_owned(), "staging".to_owned());
        let resource = resource(&config);
        let value = |key: &'static str| {
            resource
                .get(&opentelemetry::Key::from_static_str(key))
                .map(|value| value.to_string())
        };
        // The test process may have OTEL_SERVICE_NAME set; then it wins.
        let expected_service = std::env::var("OTEL_SERVICE_NAME")
            .ok()
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "conclave-homeserver".to_owned());
        assert_eq!(value("service.name"), Some(expected_service));
        assert_eq!(
            value("service.version").as_deref(),
            Some(env!("CARGO_PKG_VERSION"))
        );
        if std::env::var_os("OTEL_RESOURCE_ATTRIBUTES").is_none() {
            assert_eq!(value("service.instance.id").as_deref(), Some("pod-7"));
            assert_eq!(value("conclave.domain").as_deref(), Some("a.example"));
            assert_eq!(value("deployment.environment").as_deref(), Some("staging"));
        }
    }

    /// An exporter that fails while `failing` is set, counting its calls.
    #[derive(Debug, Default)]
    struct FlakyExporter {
        failing: AtomicBool,
    }

    impl SpanExporter for FlakyExporter {
        async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
            if self.failing.load(Ordering::Relaxed) {
                Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure(
                    "collector down".to_owned(),
                ))
            } else {
                Ok(())
            }
        }
    }

    #[test]
    fn a_run_of_failed_exports_is_reported_once_with_its_spans_counted() {
        let exporter = FailureLoggingExporter::new(FlakyExporter::default());
        let export = |spans: usize| {
            let batch: Vec<SpanData> = (0..spans).map(|_| span_data()).collect();
            futures::executor::block_on(exporter.export(batch))
        };
        assert!(export(2).is_ok());
        assert!(!exporter.failing.load(Ordering::Relaxed));
        exporter.inner.failing.store(true, Ordering::Relaxed);
        assert!(export(3).is_err());
        assert!(export(4).is_err());
        assert!(exporter.failing.load(Ordering::Relaxed));
        assert_eq!(exporter.dropped.load(Ordering::Relaxed), 7);
        exporter.inner.failing.store(false, Ordering::Relaxed);
        assert!(export(1).is_ok());
        assert!(!exporter.failing.load(Ordering::Relaxed));
        assert_eq!(exporter.dropped.load(Ordering::Relaxed), 0);
    }

    fn span_data() -> SpanData {
        use opentelemetry::trace::{SpanContext, SpanKind, Status};
        SpanData {
            span_context: SpanContext::empty_context(),
            parent_span_id: opentelemetry::trace::SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: "test".into(),
            start_time: std::time::SystemTime::UNIX_EPOCH,
            end_time: std::time::SystemTime::UNIX_EPOCH,
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: Status::Unset,
            instrumentation_scope: Default::default(),
        }
    }

    #[test]
    fn the_standard_sampler_variables_win_over_the_ratio() {
        let check = |sampler, argument, expected: f64| {
            assert_eq!(
                sampling_ratio_from(sampler, argument, 0.25),
                expected,
                "{sampler:?} {argument:?}"
            );
        };
        check(None, None, 0.25);
        check(None, Some("0.5"), 0.25);
        check(Some("parentbased_traceidratio"), Some("0.5"), 0.5);
        check(Some("traceidratio"), Some(" 0.1 "), 0.1);
        check(Some("traceidratio"), Some("2"), 1.0);
        check(Some("traceidratio"), None, 1.0);
        check(Some("always_off"), None, 0.0);
        check(Some("parentbased_always_on"), None, 1.0);
        check(Some("jaeger_remote"), None, 1.0);
    }

    #[test]
    fn the_replica_defaults_to_the_host_name() {
        let config = Config::default();
        let resource = resource(&config);
        let replica = resource
            .get(&opentelemetry::Key::from_static_str("service.instance.id"))
            .expect("a replica")
            .to_string();
        assert!(!replica.is_empty());
        assert_eq!(replica, host_name());
    }
}
