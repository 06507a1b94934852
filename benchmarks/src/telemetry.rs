//! Benchmark 9: what metrics and tracing cost. Benchmark 1's scenario on
//! PostgreSQL, on a fresh homeserver for each of three set-ups:
//!
//! - **bare**: `[telemetry] metrics = false` (no metrics layer on the gRPC
//!   listeners, nothing counted at scrape time) and no OpenTelemetry layer
//!   (spans carry no trace ids);
//! - **metrics**: metrics on, the default, still without the OpenTelemetry
//!   layer;
//! - **metrics + traces**: metrics on, and every INFO span (each client
//!   request, each stream delivery) recorded and exported over OTLP/gRPC to an
//!   in-process receiver, with sampling at 1.0: the most tracing costs.
//!
//! The runs alternate (bare, metrics, traces, traces, metrics, bare, twice)
//! so that the machine's drift spreads over the set-ups alike; each set-up's
//! figure is the mean of its four runs.
//!
//! Tracing is switched in this process's `tracing` subscriber ([`layer`],
//! installed by `main`), because the homeserver runs in the benchmark's
//! process and the subscriber is global.

use crate::server;
use crate::throughput::{self, ThroughputRun, ThroughputSettings};
use conclave_homeserver::config::Config;
use conclave_test_support::otlp::OtlpReceiver;
use conclave_test_support::{DatabaseChoice, TestHomeserver, TestOptions};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing_subscriber::Layer;

/// Whether spans go to the OpenTelemetry layer now.
static TRACING_ON: AtomicBool = AtomicBool::new(false);

/// One of the set-ups compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Setup {
    Bare,
    Metrics,
    MetricsAndTraces,
}

impl Setup {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Setup::Bare => "bare (no metrics, no tracing)",
            Setup::Metrics => "metrics",
            Setup::MetricsAndTraces => "metrics + traces exported (sampling 1.0)",
        }
    }

    fn metrics(self) -> bool {
        self != Setup::Bare
    }

    fn traces(self) -> bool {
        self == Setup::MetricsAndTraces
    }
}

/// The order of the runs: each set-up four times, so that drift of the
/// machine over the part spreads over them alike.
const ORDER: [Setup; 12] = [
    Setup::Bare,
    Setup::Metrics,
    Setup::MetricsAndTraces,
    Setup::MetricsAndTraces,
    Setup::Metrics,
    Setup::Bare,
    Setup::Bare,
    Setup::Metrics,
    Setup::MetricsAndTraces,
    Setup::MetricsAndTraces,
    Setup::Metrics,
    Setup::Bare,
];

/// The OpenTelemetry side of the benchmark's process: the receiver spans are
/// exported to, and the provider that exports them.
pub(crate) struct Tracing {
    receiver: OtlpReceiver,
    provider: SdkTracerProvider,
}

impl Tracing {
    /// A receiver on 127.0.0.1 and a provider exporting to it in batches, as
    /// the homeserver's own set-up does for `otlp_endpoint`.
    pub(crate) async fn start() -> anyhow::Result<Tracing> {
        let receiver = OtlpReceiver::start().await;
        let mut config = Config::default();
        config.telemetry.otlp_endpoint = Some(receiver.endpoint());
        config.telemetry.sampling_ratio = 1.0;
        let (provider, exporting) = conclave_homeserver::telemetry::tracer_provider(&config)?;
        anyhow::ensure!(exporting, "the tracer provider does not export");
        Ok(Tracing { receiver, provider })
    }

    /// The layer for the process's subscriber: the homeserver's spans (INFO
    /// and above, spans only, as in `conclave_homeserver::telemetry::init`),
    /// while a traced run is on.
    pub(crate) fn layer<S>(&self) -> impl Layer<S> + use<S>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        // Dynamic: a `filter_fn` would be asked once per callsite and its
        // answer cached, so the switch would never take effect.
        let filter = tracing_subscriber::filter::dynamic_filter_fn(|metadata, _| {
            TRACING_ON.load(Ordering::Relaxed)
                && metadata.is_span()
                && *metadata.level() <= tracing::Level::INFO
        });
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("conclave-homeserver"))
            .with_filter(filter)
    }
}

/// One set-up's runs.
#[derive(Debug)]
pub(crate) struct SetupRuns {
    pub(crate) setup: Setup,
    pub(crate) runs: Vec<ThroughputRun>,
}

/// The figures, and how many spans the receiver got (so a traced run that
/// traced nothing shows).
#[derive(Debug)]
pub(crate) struct TelemetryResults {
    pub(crate) runs: Vec<SetupRuns>,
    pub(crate) spans_received: usize,
}

pub(crate) async fn run(
    tracing: &Tracing,
    settings: &ThroughputSettings,
) -> anyhow::Result<TelemetryResults> {
    let mut runs = Vec::new();
    for setup in ORDER {
        eprintln!("  {}", setup.name());
        let metrics = setup.metrics();
        let server = TestHomeserver::start_with(
            TestOptions::on(DatabaseChoice::Postgres).configure(move |config| {
                server::raise_limits(config);
                config.telemetry.metrics = metrics;
            }),
        )
        .await;
        TRACING_ON.store(setup.traces(), Ordering::Relaxed);
        let measured = throughput::measure(
            DatabaseChoice::Postgres,
            &[server.client_url()],
            settings,
            None,
        )
        .await;
        TRACING_ON.store(false, Ordering::Relaxed);
        server::stop(server).await;
        runs.push(SetupRuns {
            setup,
            runs: measured?,
        });
    }
    if let Err(error) = tracing.provider.force_flush() {
        eprintln!("  the last spans were not exported: {error}");
    }
    Ok(TelemetryResults {
        runs,
        spans_received: tracing.receiver.spans().len(),
    })
}
