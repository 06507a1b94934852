//! The gRPC APIs (tonic only): the client API's services, authentication, the
//! federation API served to peers, proto <-> domain conversion, and the one
//! mapping of errors to statuses (`status.rs`).
//!
//! # Layout
//! - `account`: `AccountService`.
//! - `admin`: `conclave.admin.v1`, the admin API (when `[admin] enabled`).
//! - `key_package`: `KeyPackageService`.
//! - `group`: `GroupService` (the hub).
//! - `delivery`: `DeliveryService` (fetch, subscribe, ack).
//! - `federation`: `conclave.federation.v1.FederationService`, on its own
//!   mutual-TLS listener.
//! - `federation_calls`: the federation client's calls to peers, counted.
//! - `auth`: bearer tokens.
//! - `status`: domain errors -> `tonic::Status`.
//! - `deadline`: every call's deadline.
//! - `in_flight`: counts the calls being answered, for the shutdown's log.
//! - `metrics_layer`: counts and times the calls of both listeners.
//! - `known_methods`: the methods each listener serves, the only names those
//!   metrics carry.
//!
//! Both listeners apply `[limits]` the same way ([`server_builder`]): HTTP/2
//! streams per connection, header list size, keepalive PINGs, TCP keepalive
//! and the call deadline.
//!
//! # Metrics
//! Both listeners count their calls in `conclave_grpc_requests_total` and time
//! them in `conclave_grpc_request_duration_seconds` (`metrics_layer`), unless
//! `[telemetry] metrics = false`: then the layer is not installed at all.

mod account;
pub(crate) mod admin;
mod auth;
mod deadline;
mod delivery;
pub(crate) mod federation;
mod federation_calls;
mod group;
mod in_flight;
mod key_package;
mod known_methods;
mod metrics_layer;
mod status;

pub(crate) use federation_calls::FederationCallObserver;

use crate::config::LimitsConfig;
pub(crate) use status::{StatusParts, ToStatusParts, invalid_argument, missing_field};

use crate::service::Context;
use crate::tls::ClientApiTls;
use conclave_federation::server::TlsIncoming;
use conclave_proto::client::v1::account_service_server::AccountServiceServer;
use conclave_proto::client::v1::delivery_service_server::DeliveryServiceServer;
use conclave_proto::client::v1::group_service_server::GroupServiceServer;
use conclave_proto::client::v1::key_package_service_server::KeyPackageServiceServer;
use known_methods::KnownMethods;
use metrics_layer::GrpcMetricsLayer;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tower::util::{MapResponseLayer, option_layer};
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// A client must complete its TLS handshake within this time (on either
/// listener).
pub(crate) const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the client API on `listener` until `shutdown` resolves, then lets
/// in-flight requests finish.
pub(crate) async fn serve(
    context: Arc<Context>,
    listener: TcpListener,
    tls: Option<Arc<ClientApiTls>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let max_message_bytes = context.config.client_api.max_message_bytes;
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<AccountServiceServer<account::AccountApi>>()
        .await;
    health_reporter
        .set_serving::<KeyPackageServiceServer<key_package::KeyPackageApi>>()
        .await;
    health_reporter
        .set_serving::<GroupServiceServer<group::GroupApi>>()
        .await;
    health_reporter
        .set_serving::<DeliveryServiceServer<delivery::DeliveryApi>>()
        .await;
    let reflection_service = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(conclave_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the compiled-in descriptor sets are valid");
    let account_service = AccountServiceServer::new(account::AccountApi {
        context: context.clone(),
    })
    .max_decoding_message_size(max_message_bytes);
    let key_package_service = KeyPackageServiceServer::new(key_package::KeyPackageApi {
        context: context.clone(),
    })
    .max_decoding_message_size(max_message_bytes);
    let group_service = GroupServiceServer::new(group::GroupApi {
        context: context.clone(),
    })
    .max_decoding_message_size(max_message_bytes);
    let delivery_service = DeliveryServiceServer::new(delivery::DeliveryApi {
        context: context.clone(),
    })
    .max_decoding_message_size(max_message_bytes);

    let limits = &context.config.limits;
    let router = server_builder(limits)
        // Each request in its own span and trace. First, so outermost: it
        // changes the response body type, which the layer below must not see.
        // Statuses other than OK only at DEBUG: a NOT_FOUND is no failure of the
        // server, and server-side failures are logged where they happen.
        .layer(
            TraceLayer::new_for_grpc()
                .make_span_with(ClientRequestSpan::new(
                    &context.config,
                    client_api_methods().into_rpc_names(),
                ))
                .on_request(())
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        // Right below the trace layer, so it sees the final status (after the
        // size refusal's mapping) and its body wrapper the whole response.
        .layer(metrics_layer(&context, client_api_methods))
        .layer(MapResponseLayer::new(
            status::oversize_as_resource_exhausted(max_message_bytes),
        ))
        .layer(in_flight::InFlightLayer::new(
            context.calls_in_flight.clone(),
        ))
        .layer(deadline::DeadlineLayer::new(call_deadline(limits)))
        .add_service(health_service)
        .add_service(reflection_service)
        .add_service(account_service)
        .add_service(key_package_service)
        .add_service(group_service)
        .add_service(delivery_service);
    let router = admin::add_services(router, &context);
    match tls {
        // Each handshake with the certificate current when its connection is
        // accepted, so a renewed certificate needs no restart (tonic's own
        // TLS takes one certificate for good). Sets TCP_NODELAY and the TCP
        // keepalive as below.
        Some(tls) => {
            let incoming = TlsIncoming::new(listener, "client_api", tls, TLS_HANDSHAKE_TIMEOUT)
                .with_tcp_keepalive(tcp_keepalive(limits));
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
        // Nagle's algorithm would hold small responses back until the peer's
        // delayed ACK (up to ~40 ms); tonic applies TCP_NODELAY only to listeners it
        // binds itself, so it is set here.
        // The TCP keepalive, likewise.
        None => {
            router
                .serve_with_incoming_shutdown(
                    TcpIncoming::from(listener)
                        .with_nodelay(Some(true))
                        .with_keepalive(Some(tcp_keepalive(limits))),
                    shutdown,
                )
                .await
        }
    }
}

/// A tonic server with the HTTP/2 limits of `[limits]`, for both listeners.
/// Flow-control windows stay at HTTP/2's 64 KiB: they bound what a peer can
/// make the server buffer per stream, and larger ones would only raise that.
pub(crate) fn server_builder(limits: &LimitsConfig) -> Server {
    Server::builder()
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .http2_max_header_list_size(limits.http2_max_header_list_size)
        .http2_keepalive_interval(Some(Duration::from_secs(
            limits.http2_keepalive_interval_seconds,
        )))
        .http2_keepalive_timeout(Some(Duration::from_secs(
            limits.http2_keepalive_timeout_seconds,
        )))
}

/// The layer that counts a listener's calls, serving the methods `known`
/// names; with `[telemetry] metrics = false`, the identity layer instead
/// (nothing counted, no body wrapped: what the benchmark compares against).
pub(crate) fn metrics_layer(
    context: &Context,
    known: fn() -> KnownMethods,
) -> tower::util::Either<GrpcMetricsLayer, tower::layer::util::Identity> {
    option_layer(
        context
            .config
            .telemetry
            .metrics
            .then(|| GrpcMetricsLayer::new(context.metrics.clone(), known())),
    )
}

/// The methods of the client API's listener: the client API, health and
/// reflection.
fn client_api_methods() -> KnownMethods {
    use tonic::server::NamedService;
    let mut services = vec![
        AccountServiceServer::<account::AccountApi>::NAME,
        KeyPackageServiceServer::<key_package::KeyPackageApi>::NAME,
        GroupServiceServer::<group::GroupApi>::NAME,
        DeliveryServiceServer::<delivery::DeliveryApi>::NAME,
        tonic_health::pb::health_server::SERVICE_NAME,
        tonic_reflection::pb::v1::server_reflection_server::SERVICE_NAME,
    ];
    services.extend(admin::service_names());
    KnownMethods::of_services(
        &[
            conclave_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        ],
        &services,
    )
}

/// Every call's deadline on the server's side.
pub(crate) fn call_deadline(limits: &LimitsConfig) -> Duration {
    Duration::from_secs(limits.call_deadline_seconds)
}

/// Idle time before TCP keepalive probes. tonic's `Server::tcp_keepalive`
/// applies only to listeners it binds, so each listener sets it on its sockets.
pub(crate) fn tcp_keepalive(limits: &LimitsConfig) -> Duration {
    Duration::from_secs(limits.tcp_keepalive_seconds)
}

/// Milliseconds since the epoch -> protobuf Timestamp.
pub(crate) fn timestamp(unix_ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: unix_ms.div_euclid(1000),
        // Below 10^9, so it fits.
        nanos: (unix_ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// The span of one client API request, `client_request`, with the gRPC
/// service and method (`rpc.*` attributes) of the methods this listener serves
/// (`unknown` for any other path: the path is the client's choice, and the
/// span is made before it is authenticated). It continues the trace the client
/// sent, with this server's sampling decision, or is the root of a new trace
/// (see [`crate::telemetry::client_context`]); federation calls made while
/// serving the request carry it to peers (`conclave_federation::trace_context`).
/// Its `trace_id` field puts the trace id on every log line within the request.
#[derive(Clone)]
struct ClientRequestSpan {
    trust_client_trace_context: bool,
    sampling_ratio: f64,
    rpc_names: conclave_federation::trace_context::RpcNames,
}

impl ClientRequestSpan {
    fn new(
        config: &crate::config::Config,
        rpc_names: conclave_federation::trace_context::RpcNames,
    ) -> Self {
        ClientRequestSpan {
            trust_client_trace_context: config.telemetry.trust_client_trace_context,
            sampling_ratio: crate::telemetry::effective_sampling_ratio(config),
            rpc_names,
        }
    }
}

impl<B> tower_http::trace::MakeSpan<B> for ClientRequestSpan {
    fn make_span(&mut self, request: &http::Request<B>) -> tracing::Span {
        let conclave_federation::trace_context::RpcName { service, method } =
            (self.rpc_names)(request.uri().path());
        let span = tracing::info_span!(
            "client_request",
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            otel.kind = "server",
            trace_id = tracing::field::Empty,
        );
        let parent = crate::telemetry::client_context::client_request_parent(
            request.headers(),
            self.trust_client_trace_context,
            self.sampling_ratio,
        );
        // Fails only without the OpenTelemetry layer (tests), when there is no trace.
        let _ = span.set_parent(parent);
        conclave_federation::trace_context::record_trace_id(&span);
        span
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use tower_http::trace::MakeSpan as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    /// The string fields of every span made while it is the subscriber.
    #[derive(Clone, Default)]
    struct SpanFields(Arc<Mutex<Vec<BTreeMap<String, String>>>>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SpanFields {
        fn on_new_span(
            &self,
            attributes: &tracing::span::Attributes<'_>,
            _: &tracing::span::Id,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            let mut fields = BTreeMap::new();
            attributes.record(
                &mut |field: &tracing::field::Field, value: &dyn std::fmt::Debug| {
                    fields.insert(field.name().to_owned(), format!("{value:?}"));
                },
            );
            self.0.lock().expect("not poisoned").push(fields);
        }
    }

    /// The `rpc.service` and `rpc.method` of the span `make_span` makes for
    /// a request to `path`.
    fn rpc_fields(
        path: &str,
        make_span: impl FnOnce(&http::Request<()>) -> tracing::Span,
    ) -> (String, String) {
        let fields = SpanFields::default();
        let subscriber = tracing_subscriber::registry().with(fields.clone());
        let mut request = http::Request::new(());
        *request.uri_mut() = path.parse().expect("a valid path");
        tracing::subscriber::with_default(subscriber, || drop(make_span(&request)));
        let spans = fields.0.lock().expect("not poisoned");
        assert_eq!(spans.len(), 1, "{spans:?}");
        let field = |name: &str| spans[0].get(name).cloned().unwrap_or_default();
        (field("rpc.service"), field("rpc.method"))
    }

    fn quoted(service: &str, method: &str) -> (String, String) {
        (format!("{service:?}"), format!("{method:?}"))
    }

    #[test]
    fn client_request_spans_name_only_served_methods() {
        let config = crate::config::Config::default();
        let mut make = ClientRequestSpan::new(&config, client_api_methods().into_rpc_names());
        assert_eq!(
            rpc_fields("/conclave.client.v1.GroupService/SubmitCommit", |request| {
                make.make_span(request)
            }),
            quoted("conclave.client.v1.GroupService", "SubmitCommit")
        );
        for garbage in [
            "/evil.Service/any-string-a-client-likes",
            "/conclave.client.v1.GroupService/NoSuchMethod",
            "/conclave.federation.v1.FederationService/SubmitToHub",
            "/",
        ] {
            assert_eq!(
                rpc_fields(garbage, |request| make.make_span(request)),
                quoted(known_methods::UNKNOWN, known_methods::UNKNOWN),
                "{garbage}"
            );
        }
    }

    #[test]
    fn federation_request_spans_name_only_served_methods() {
        let names = federation::federation_api_methods().into_rpc_names();
        let span_of = |request: &http::Request<()>| {
            conclave_federation::trace_context::server_span(request, &names)
        };
        assert_eq!(
            rpc_fields(
                "/conclave.federation.v1.FederationService/SubmitToHub",
                span_of
            ),
            quoted("conclave.federation.v1.FederationService", "SubmitToHub")
        );
        for garbage in [
            "/evil.Service/any-string-a-peer-likes",
            "/conclave.client.v1.AccountService/Login",
        ] {
            assert_eq!(
                rpc_fields(garbage, span_of),
                quoted(known_methods::UNKNOWN, known_methods::UNKNOWN),
                "{garbage}"
            );
        }
    }
}
