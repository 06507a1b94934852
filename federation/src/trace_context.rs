//! W3C trace context (`traceparent`, `tracestate`) on federation calls, so that
//! one trace follows a request from the homeserver that makes it to the peer that
//! serves it.
//!
//! Both sides work on the OpenTelemetry context that `tracing-opentelemetry`
//! keeps for each `tracing` span; without its layer in the subscriber, spans have
//! no OpenTelemetry context and every function here does nothing (nothing is
//! injected, and server spans are roots), so tests and tools need no setup.
//!
//! - Calling a peer: [`inject`] the current span's context into the request's
//!   metadata.
//! - Serving a peer: [`server_layer`] wraps every request in a
//!   `federation_request` span whose parent is the context the peer sent
//!   ([`server_span`]), or a new root span when it sent none or garbage. The
//!   span names the RPC as the server's [`RpcNames`] does: the request path
//!   is chosen by the caller before it is authenticated, so only names from a
//!   bounded set may reach exported spans and logs.
//! - Continuing a trace later: [`current_traceparent`] keeps a context as
//!   text with what it travels with, and [`continue_traces`] makes a span
//!   (an outbox delivery, a write to a Subscribe stream) its child.
//!
//! The client library injects with [`inject_headers`] too (the homeserver
//! treats a client's context with less trust than a peer's; see its
//! `telemetry::client_context`).
//!
//! The wire format is always W3C trace context ([`TraceContextPropagator`]),
//! whatever global propagator the process installed: it is part of the
//! federation protocol between homeservers, not a deployment choice.

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use std::sync::Arc;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, KeyRef, MetadataMap};
use tower_http::trace::{
    DefaultOnBodyChunk, DefaultOnEos, DefaultOnFailure, DefaultOnResponse, GrpcMakeClassifier,
    MakeSpan, TraceLayer,
};
use tracing::{Level, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Writes the trace context of the current span into `metadata` (`traceparent`,
/// and `tracestate` when the trace has one), replacing any already there. Writes
/// nothing when there is no current trace.
pub fn inject(metadata: &mut MetadataMap) {
    let mut context = Span::current().context();
    if !context.span().span_context().is_valid() {
        // The current `tracing` span may be one the OpenTelemetry layer filters
        // out (a debug span, say); the layer still makes the nearest span it does
        // track the current OpenTelemetry context while that span is entered.
        context = Context::current();
    }
    TraceContextPropagator::new().inject_context(&context, &mut MetadataInjector(metadata));
}

/// Writes the trace context of the current span into HTTP request headers, as
/// [`inject`] does into tonic metadata (for a tower layer below tonic).
pub fn inject_headers(headers: &mut http::HeaderMap) {
    let mut metadata = MetadataMap::from_headers(std::mem::take(headers));
    inject(&mut metadata);
    *headers = metadata.into_headers();
}

/// The gRPC service and method a request path (`/package.Service/Method`)
/// names, for the `rpc.service` and `rpc.method` attributes of OpenTelemetry's
/// semantic conventions; empty strings for a path of another shape.
///
/// Only for paths the caller picked from a bounded set (a client's generated
/// stubs); a server names the paths it receives with [`RpcNames`].
pub fn rpc_service_and_method(path: &str) -> (&str, &str) {
    path.strip_prefix('/')
        .and_then(|path| path.split_once('/'))
        .filter(|(service, method)| !service.is_empty() && !method.contains('/'))
        .unwrap_or(("", ""))
}

/// Whether `traceparent` is a valid W3C `traceparent` value (as
/// [`current_traceparent`] makes them): a peer's value is kept only then.
pub fn is_valid_traceparent(traceparent: &str) -> bool {
    trace_id_of(traceparent).is_some()
}

/// A valid W3C `traceparent` value in its canonical form,
/// `00-<trace id>-<span id>-<flags>` (55 bytes), whatever a later version's
/// extra fields the sender added; `None` for an invalid one. What is stored
/// from a peer is this, so a peer cannot make the store keep long strings.
pub fn canonical_traceparent(traceparent: &str) -> Option<String> {
    let value = http::HeaderValue::from_str(traceparent).ok()?;
    let mut headers = http::HeaderMap::new();
    headers.insert("traceparent", value);
    let span_context = extract_headers(&headers).span().span_context().clone();
    span_context.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            span_context.trace_id(),
            span_context.span_id(),
            span_context.trace_flags().to_u8()
        )
    })
}

/// The trace id of a valid W3C `traceparent` value.
fn trace_id_of(traceparent: &str) -> Option<opentelemetry::trace::TraceId> {
    let value = http::HeaderValue::from_str(traceparent).ok()?;
    let mut headers = http::HeaderMap::new();
    headers.insert("traceparent", value);
    let context = extract_headers(&headers);
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| span_context.trace_id())
}

/// The trace context a follower keeps with an event the hub sent in a batch,
/// for the spans of its delivery to devices: the event's own (`event`, where
/// the hub accepted it), except that within the trace of the request that
/// brought the batch (`request`, whose span descends from the event's) the
/// request's, so that the trace runs on through the delivery; the request's
/// when the hub sent none (a hub that does not send it).
pub fn delivered_event_traceparent(event: Option<&str>, request: Option<&str>) -> Option<String> {
    match (event, request) {
        (Some(event), Some(request)) if trace_id_of(event) == trace_id_of(request) => {
            Some(request.to_owned())
        }
        (Some(event), _) => Some(event.to_owned()),
        (None, request) => request.map(str::to_owned),
    }
}

/// The current span's trace context as a W3C `traceparent` value, to be kept
/// with something that leaves later on another path (an event the outbox
/// delivers); `None` when there is no current trace.
pub fn current_traceparent() -> Option<String> {
    let mut metadata = MetadataMap::new();
    inject(&mut metadata);
    metadata
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// The span of one delivery of a batch of events to a peer,
/// `federation_delivery`: a child of the trace the first event was submitted
/// in, linked to the traces of the others (W3C `traceparent` values as
/// [`current_traceparent`] made them; invalid ones are skipped), so that a
/// message's trace leads to its delivery to every domain. A new root when no
/// event has a trace. It names the peer, never the group: exported spans carry
/// no user, device or group ids.
pub fn delivery_span<'a>(
    peer_domain: &str,
    traceparents: impl IntoIterator<Item = &'a str>,
) -> Span {
    let span = tracing::info_span!(
        "federation_delivery",
        peer_domain,
        otel.kind = "producer",
        trace_id = tracing::field::Empty,
    );
    continue_traces(&span, traceparents);
    record_trace_id(&span);
    span
}

/// Makes `span` (not started yet) a child of the first valid trace context of
/// `traceparents` (W3C `traceparent` values as [`current_traceparent`] made
/// them) and links it to the others; a root of its own when none is valid,
/// never a child of whatever span is current.
pub fn continue_traces<'a>(span: &Span, traceparents: impl IntoIterator<Item = &'a str>) {
    let mut parent_set = false;
    for traceparent in traceparents {
        let mut headers = http::HeaderMap::new();
        let Ok(value) = http::HeaderValue::from_str(traceparent) else {
            continue;
        };
        headers.insert("traceparent", value);
        let context = extract_headers(&headers);
        let span_context = context.span().span_context().clone();
        if !span_context.is_valid() {
            continue;
        }
        if parent_set {
            span.add_link(span_context);
        } else {
            // Fails only without the OpenTelemetry layer: then there is no trace.
            let _ = span.set_parent(context);
            parent_set = true;
        }
    }
    if !parent_set {
        // A root of its own, not a child of whatever span is current.
        let _ = span.set_parent(Context::new());
    }
}

/// The trace context a peer sent in `metadata`: a context whose span is the
/// peer's (remote) span, or an empty context when the metadata has no valid
/// `traceparent`.
pub fn extract(metadata: &MetadataMap) -> Context {
    extract_from(&MetadataExtractor(metadata))
}

/// The trace context in HTTP/2 request headers, as [`extract`].
pub fn extract_headers(headers: &http::HeaderMap) -> Context {
    extract_from(&HeaderExtractor(headers))
}

fn extract_from(extractor: &dyn Extractor) -> Context {
    // Starting from an empty context rather than the current one: a request
    // without a valid `traceparent` must start a new trace, never join whatever
    // span happens to be current where the request is read.
    TraceContextPropagator::new().extract_with_context(&Context::new(), extractor)
}

/// How a server names the RPC of a request path in its spans: the gRPC
/// service and method (`rpc.service`, `rpc.method`) of a path it serves, and
/// one fixed name (such as `unknown`) for any other path.
pub type RpcNames = Arc<dyn Fn(&str) -> RpcName + Send + Sync>;

/// The gRPC service and method of a request, as [`RpcNames`] gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcName {
    /// The fully qualified service, such as `conclave.federation.v1.FederationService`.
    pub service: String,
    /// The method, such as `SubmitToHub`.
    pub method: String,
}

/// The span for one request a peer made: `federation_request`, with the gRPC
/// service and method (`rpc.*` attributes) as `rpc_names` names the path, a
/// child of the trace context the peer sent (a new root when it sent none),
/// and the trace id in its `trace_id` field so that log lines within the
/// request show it. The server records the peer's domain in
/// `conclave.peer_domain` once it admitted the peer.
pub fn server_span<B>(request: &http::Request<B>, rpc_names: &RpcNames) -> Span {
    let RpcName { service, method } = rpc_names(request.uri().path());
    let span = tracing::info_span!(
        "federation_request",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        conclave.peer_domain = tracing::field::Empty,
        otel.kind = "server",
        trace_id = tracing::field::Empty,
    );
    // Fails only when the span is disabled or there is no OpenTelemetry layer;
    // then there is no trace to join, and the request is served all the same.
    let _ = span.set_parent(extract_headers(request.headers()));
    record_trace_id(&span);
    span
}

/// Records the OpenTelemetry trace id of `span` in its `trace_id` field (which
/// the span must declare, as `trace_id = tracing::field::Empty`), so that the
/// log lines within it carry the id; does nothing if the span has no trace.
///
/// This starts the span's OpenTelemetry span, so call it only after
/// [`OpenTelemetrySpanExt::set_parent`](tracing_opentelemetry::OpenTelemetrySpanExt::set_parent).
pub fn record_trace_id(span: &Span) {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() {
        span.record("trace_id", tracing::field::display(span_context.trace_id()));
    }
}

/// [`MakeSpan`] of [`server_layer`]: [`server_span`] for any request body.
#[derive(Clone)]
pub struct ServerSpan {
    rpc_names: RpcNames,
}

impl std::fmt::Debug for ServerSpan {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("ServerSpan").finish_non_exhaustive()
    }
}

impl<B> MakeSpan<B> for ServerSpan {
    fn make_span(&mut self, request: &http::Request<B>) -> Span {
        server_span(request, &self.rpc_names)
    }
}

/// The layer [`server_layer`] returns.
pub type ServerTraceLayer = TraceLayer<
    GrpcMakeClassifier,
    ServerSpan,
    (),
    DefaultOnResponse,
    DefaultOnBodyChunk,
    DefaultOnEos,
    DefaultOnFailure,
>;

/// A tower layer for the federation server (`tonic::transport::Server::layer`):
/// serves each request, and streams its response, inside [`server_span`],
/// which names the RPC as `rpc_names` does.
///
/// It changes the response body type, so it must be the outermost layer, that
/// is the first `.layer(..)` on the server builder: tonic's builder wraps each
/// later layer inside the earlier ones.
///
/// A response with a gRPC error status is logged at DEBUG only (with its code
/// and latency): refusals and server-side failures are logged where they happen,
/// and a peer's NOT_FOUND is no error of this server.
pub fn server_layer(rpc_names: RpcNames) -> ServerTraceLayer {
    TraceLayer::new_for_grpc()
        .make_span_with(ServerSpan { rpc_names })
        .on_request(())
        .on_failure(DefaultOnFailure::new().level(Level::DEBUG))
}

/// Writes propagation fields into tonic request metadata.
struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // The propagator writes only `traceparent` and `tracestate`, with values
        // it made from a valid span context; a value that is no valid header
        // (which would be a propagator bug) is dropped rather than sent.
        let Ok(key) = AsciiMetadataKey::from_bytes(key.as_bytes()) else {
            return;
        };
        // An empty `tracestate` (the trace has none) is not sent at all.
        if value.is_empty() {
            self.0.remove(key);
        } else if let Ok(value) = AsciiMetadataValue::try_from(value) {
            self.0.insert(key, value);
        }
    }
}

/// Reads propagation fields from tonic request metadata.
struct MetadataExtractor<'a>(&'a MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .map(|key| match key {
                KeyRef::Ascii(key) => key.as_str(),
                KeyRef::Binary(key) => key.as_str(),
            })
            .collect()
    }
}

/// Reads propagation fields from HTTP request headers.
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{TraceId, TracerProvider as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::layer::SubscriberExt as _;

    /// Runs `f` with a subscriber that gives spans OpenTelemetry contexts (an SDK
    /// tracer provider without exporter, as the homeserver has today).
    fn with_tracing<T>(f: impl FnOnce() -> T) -> T {
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, f)
    }

    /// Names every path as it is (tests of trace context only).
    fn any_path() -> RpcNames {
        Arc::new(|path: &str| {
            let (service, method) = rpc_service_and_method(path);
            RpcName {
                service: service.to_owned(),
                method: method.to_owned(),
            }
        })
    }

    fn trace_id(span: &Span) -> TraceId {
        span.context().span().span_context().trace_id()
    }

    fn is_lower_hex(text: &str, length: usize) -> bool {
        text.len() == length
            && text
                .bytes()
                .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
    }

    /// The parts of a `traceparent`, checked against the W3C format
    /// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`.
    fn traceparent_parts(metadata: &MetadataMap) -> (String, String) {
        let traceparent = metadata
            .get("traceparent")
            .expect("a traceparent is injected")
            .to_str()
            .expect("traceparent is ASCII");
        let parts: Vec<&str> = traceparent.split('-').collect();
        assert_eq!(parts.len(), 4, "{traceparent}");
        assert_eq!(parts[0], "00", "{traceparent}");
        assert!(is_lower_hex(parts[1], 32), "{traceparent}");
        assert!(is_lower_hex(parts[2], 16), "{traceparent}");
        assert!(is_lower_hex(parts[3], 2), "{traceparent}");
        assert_ne!(parts[1], "0".repeat(32), "{traceparent}");
        assert_ne!(parts[2], "0".repeat(16), "{traceparent}");
        (parts[1].to_owned(), parts[2].to_owned())
    }

    #[test]
    fn inject_writes_the_current_span_s_traceparent() {
        let (metadata, span_trace_id, span_id) = with_tracing(|| {
            let span = tracing::info_span!("claim");
            let _entered = span.enter();
            let mut metadata = MetadataMap::new();
            inject(&mut metadata);
            let span_context = span.context().span().span_context().clone();
            (metadata, span_context.trace_id(), span_context.span_id())
        });
        let (trace_id, parent_id) = traceparent_parts(&metadata);
        assert_eq!(trace_id, span_trace_id.to_string());
        assert_eq!(parent_id, span_id.to_string());
    }

    #[test]
    fn inject_falls_back_to_the_nearest_traced_span() {
        // As in the homeserver, the OpenTelemetry layer sees INFO spans only while
        // the log layer may see DEBUG ones; the current span is a DEBUG span
        // inside an INFO one.
        use tracing_subscriber::Layer as _;
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::sink))
            .with(
                tracing_opentelemetry::layer()
                    .with_tracer(provider.tracer("test"))
                    .with_filter(tracing_subscriber::filter::LevelFilter::INFO),
            );
        let (metadata, outer_trace_id) = tracing::subscriber::with_default(subscriber, || {
            let outer = tracing::info_span!("client_request");
            let _outer = outer.enter();
            let inner = tracing::debug_span!("detail");
            let _inner = inner.enter();
            let mut metadata = MetadataMap::new();
            inject(&mut metadata);
            (metadata, trace_id(&outer))
        });
        let (trace_id, _) = traceparent_parts(&metadata);
        assert_eq!(trace_id, outer_trace_id.to_string());
    }

    #[test]
    fn inject_without_a_span_writes_nothing() {
        let metadata = with_tracing(|| {
            let mut metadata = MetadataMap::new();
            inject(&mut metadata);
            metadata
        });
        assert!(metadata.is_empty());
    }

    #[test]
    fn inject_without_the_opentelemetry_layer_writes_nothing() {
        let subscriber = tracing_subscriber::registry();
        let metadata = tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("claim");
            let _entered = span.enter();
            let mut metadata = MetadataMap::new();
            inject(&mut metadata);
            metadata
        });
        assert!(metadata.is_empty());
    }

    #[test]
    fn extracted_context_parents_a_span_of_the_same_trace() {
        let (metadata, caller_trace_id, caller_span_id) = with_tracing(|| {
            let span = tracing::info_span!("claim");
            let _entered = span.enter();
            let mut metadata = MetadataMap::new();
            inject(&mut metadata);
            let span_context = span.context().span().span_context().clone();
            (metadata, span_context.trace_id(), span_context.span_id())
        });

        // The serving side: another subscriber (another process, in real life),
        // with no span current.
        let remote = extract(&metadata);
        assert!(remote.span().span_context().is_remote());
        assert_eq!(remote.span().span_context().trace_id(), caller_trace_id);
        assert_eq!(remote.span().span_context().span_id(), caller_span_id);
        let (child_trace_id, child_span_id) = with_tracing(|| {
            let child = tracing::info_span!("served");
            child.set_parent(remote).expect("the layer is installed");
            let span_context = child.context().span().span_context().clone();
            (span_context.trace_id(), span_context.span_id())
        });
        assert_eq!(child_trace_id, caller_trace_id);
        assert_ne!(child_span_id, caller_span_id);
    }

    #[test]
    fn server_span_joins_the_callers_trace() {
        let (metadata, caller_trace_id) = with_tracing(|| {
            let span = tracing::info_span!("claim");
            let _entered = span.enter();
            let mut metadata = MetadataMap::new();
            inject(&mut metadata);
            (metadata, trace_id(&span))
        });
        let mut request = http::Request::new(());
        *request.uri_mut() = "/conclave.federation.v1.FederationService/ClaimKeyPackages"
            .parse()
            .expect("a valid path");
        *request.headers_mut() = metadata.into_headers();
        let served_trace_id = with_tracing(|| trace_id(&server_span(&request, &any_path())));
        assert_eq!(served_trace_id, caller_trace_id);
    }

    #[test]
    fn server_span_without_trace_context_starts_a_new_trace() {
        let (outer_trace_id, served_trace_id) = with_tracing(|| {
            // Whatever is current where the request is read is not its parent.
            let outer = tracing::info_span!("connection");
            let _entered = outer.enter();
            let served = server_span(&http::Request::new(()), &any_path());
            (trace_id(&outer), trace_id(&served))
        });
        assert_ne!(served_trace_id, TraceId::INVALID);
        assert_ne!(served_trace_id, outer_trace_id);
    }

    #[test]
    fn rpc_paths_name_a_service_and_a_method() {
        assert_eq!(
            rpc_service_and_method("/conclave.federation.v1.FederationService/SubmitToHub"),
            ("conclave.federation.v1.FederationService", "SubmitToHub")
        );
        for odd in ["", "/", "//Send", "/a/b/c", "no-slash"] {
            assert_eq!(rpc_service_and_method(odd), ("", ""), "{odd:?}");
        }
    }

    #[test]
    fn inject_headers_writes_the_same_traceparent() {
        let (headers, metadata) = with_tracing(|| {
            let span = tracing::info_span!("call");
            let _entered = span.enter();
            let mut headers = http::HeaderMap::new();
            headers.insert("authorization", "Bearer x".parse().expect("ASCII"));
            inject_headers(&mut headers);
            let mut metadata = MetadataMap::new();
            inject(&mut metadata);
            (headers, metadata)
        });
        assert_eq!(
            headers.get("authorization").map(|v| v.as_bytes()),
            Some(&b"Bearer x"[..])
        );
        assert_eq!(
            headers.get("traceparent").map(|v| v.as_bytes()),
            metadata.get("traceparent").map(|v| v.as_bytes())
        );
        traceparent_parts(&MetadataMap::from_headers(headers));
    }

    #[test]
    fn a_stored_traceparent_is_canonical() {
        let canonical = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(canonical_traceparent(canonical).as_deref(), Some(canonical));
        // A later version may add fields; only the four known are kept.
        let longer = format!(
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-{}",
            "x".repeat(1000)
        );
        assert_eq!(canonical_traceparent(&longer).as_deref(), Some(canonical));
        assert_eq!(canonical_traceparent("garbage"), None);
    }

    #[test]
    fn garbage_yields_an_empty_context() {
        let garbage = [
            "garbage",
            "",
            "00-00000000000000000000000000000000-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ];
        for traceparent in garbage {
            let mut metadata = MetadataMap::new();
            metadata.insert(
                "traceparent",
                traceparent.parse().expect("ASCII metadata value"),
            );
            metadata.insert("tracestate", "=,=,===".parse().expect("ASCII"));
            // Inside a span, so that falling back to the current context would show.
            let context = with_tracing(|| {
                let span = tracing::info_span!("connection");
                let _entered = span.enter();
                extract(&metadata)
            });
            assert!(
                !context.span().span_context().is_valid(),
                "{traceparent:?} gave {context:?}"
            );
            assert!(!context.has_active_span(), "{traceparent:?}");
        }
        assert!(!extract(&MetadataMap::new()).has_active_span());
    }

    #[test]
    fn a_delivered_event_keeps_its_own_trace_continued_by_the_request_s() {
        let first = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let second = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        // The request that brought the batch, in the first event's trace.
        let request = "00-4bf92f3577b34da6a3ce929d0e0e4736-53995c3f42cd8ad8-01";
        let kept = |event, request| delivered_event_traceparent(event, request);
        assert_eq!(kept(Some(first), Some(request)).as_deref(), Some(request));
        assert_eq!(kept(Some(second), Some(request)).as_deref(), Some(second));
        assert_eq!(kept(Some(second), None).as_deref(), Some(second));
        assert_eq!(kept(None, Some(request)).as_deref(), Some(request));
        assert_eq!(kept(None, None), None);
        assert!(is_valid_traceparent(first));
        assert!(!is_valid_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736"));
    }

    #[test]
    fn a_delivery_continues_its_first_event_s_trace() {
        let (first, second, delivery_trace, current_trace) = with_tracing(|| {
            let traceparent_of = |name: &'static str| {
                let span = tracing::info_span!("submission", name);
                let _entered = span.enter();
                (
                    current_traceparent().expect("a traceparent"),
                    trace_id(&span),
                )
            };
            let (first, first_trace) = traceparent_of("first");
            let (second, _) = traceparent_of("second");
            let current = tracing::info_span!("outbox");
            let _entered = current.enter();
            let delivery = delivery_span("b.example", [first.as_str(), "garbage", &second]);
            (first_trace, second, trace_id(&delivery), trace_id(&current))
        });
        assert_eq!(
            delivery_trace, first,
            "the delivery joins the first event's trace"
        );
        assert!(second.starts_with("00-"));
        assert_ne!(
            delivery_trace, current_trace,
            "not the current span's trace"
        );

        let (root, current) = with_tracing(|| {
            let current = tracing::info_span!("outbox");
            let _entered = current.enter();
            let delivery = delivery_span("b.example", ["garbage"]);
            (trace_id(&delivery), trace_id(&current))
        });
        assert_ne!(root, TraceId::INVALID);
        assert_ne!(root, current, "without traced events, a root of its own");

        // Exported, so it names the peer and nothing of users, devices or groups.
        let fields: Vec<String> = with_tracing(|| {
            let span = delivery_span("b.example", ["garbage"]);
            let metadata = span.metadata().expect("an enabled span");
            metadata
                .fields()
                .iter()
                .map(|field| field.name().to_owned())
                .collect()
        });
        assert_eq!(fields, ["peer_domain", "otel.kind", "trace_id"]);
        assert_eq!(current_traceparent(), None, "no trace without a subscriber");
    }
}
