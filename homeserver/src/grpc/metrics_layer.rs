//! Counts and times the calls of a gRPC listener (client API and federation
//! API alike): `conclave_grpc_requests_total{service,method,code}` and
//! `conclave_grpc_request_duration_seconds{service,method}`.
//!
//! # Metrics
//! - `service` and `method` name a method the listener serves
//!   ([`KnownMethods`]); any other path counts as `unknown`/`unknown`.
//! - `code` is the gRPC status code's name (`OK`, `NOT_FOUND`, ...), counted
//!   once per call, when its status is known: from the response's headers for a
//!   trailers-only answer (tonic's usual error), else from the trailers at the
//!   end of the body (a successful unary call, and every stream when it ends).
//!   A call whose response is dropped before a status was sent counts as
//!   `CANCELLED`: the client (or its connection) went away, which is how a
//!   Subscribe stream the client closed ends. A body that ends without trailers
//!   counts as `UNKNOWN` (tonic always sends them; this is the fallback).
//! - The duration runs from the request's arrival to the response's headers:
//!   all of a unary call, the start (authentication and admission) of a
//!   Subscribe stream. A call dropped before its headers has no duration.

use super::known_methods::KnownMethods;
use crate::metrics::{GrpcCallLabels, GrpcMethodLabels, Metrics};
use futures::future::BoxFuture;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;
use tonic::Code;
use tower::{Layer, Service};

/// Applies [`GrpcMetrics`] to every call of a listener.
#[derive(Debug, Clone)]
pub(crate) struct GrpcMetricsLayer {
    metrics: Arc<Metrics>,
    known_methods: Arc<KnownMethods>,
}

impl GrpcMetricsLayer {
    pub(crate) fn new(metrics: Arc<Metrics>, known_methods: KnownMethods) -> GrpcMetricsLayer {
        GrpcMetricsLayer {
            metrics,
            known_methods: Arc::new(known_methods),
        }
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics {
            inner,
            metrics: self.metrics.clone(),
            known_methods: self.known_methods.clone(),
        }
    }
}

/// Counts each call by its status code and times it to its response's headers.
#[derive(Debug, Clone)]
pub(crate) struct GrpcMetrics<S> {
    inner: S,
    metrics: Arc<Metrics>,
    known_methods: Arc<KnownMethods>,
}

impl<S, RequestBody> Service<http::Request<RequestBody>> for GrpcMetrics<S>
where
    S: Service<http::Request<RequestBody>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        let started = Instant::now();
        let mut call = UncountedCall {
            metrics: self.metrics.clone(),
            method: self.known_methods.labels(request.uri().path()),
            counted: false,
        };
        let answer = self.inner.call(request);
        Box::pin(async move {
            match answer.await {
                Ok(response) => {
                    call.metrics
                        .grpc_request_duration
                        .get_or_create(&call.method)
                        .observe(started.elapsed().as_secs_f64());
                    Ok(call.count_when_status_known(response))
                }
                Err(error) => {
                    // The layers below answer every call; tonic would turn an
                    // error here into a status of its own choosing.
                    call.count(Code::Unknown);
                    Err(error)
                }
            }
        })
    }
}

/// A call not counted yet; dropped uncounted, it counts as CANCELLED.
struct UncountedCall {
    metrics: Arc<Metrics>,
    method: GrpcMethodLabels,
    counted: bool,
}

impl UncountedCall {
    fn count(&mut self, code: Code) {
        if self.counted {
            return;
        }
        self.counted = true;
        self.metrics
            .grpc_requests
            .get_or_create(&GrpcCallLabels {
                service: self.method.service.clone(),
                method: self.method.method.clone(),
                code: code_name(code).to_owned(),
            })
            .inc();
    }

    /// Counts a trailers-only response now; any other is counted when its
    /// body's trailers pass.
    fn count_when_status_known(
        mut self,
        response: http::Response<tonic::body::Body>,
    ) -> http::Response<tonic::body::Body> {
        if let Some(code) = status_code(response.headers()) {
            self.count(code);
            return response;
        }
        if http_body::Body::is_end_stream(response.body()) {
            self.count(Code::Unknown);
            return response;
        }
        response.map(|body| {
            tonic::body::Body::new(CountedBody {
                inner: body,
                call: self,
            })
        })
    }
}

impl Drop for UncountedCall {
    fn drop(&mut self) {
        self.count(Code::Cancelled);
    }
}

/// A response body that counts its call when its trailers pass, or when it
/// ends or is dropped without them.
struct CountedBody {
    inner: tonic::body::Body,
    call: UncountedCall,
}

impl http_body::Body for CountedBody {
    type Data = <tonic::body::Body as http_body::Body>::Data;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(context));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.call
                        .count(status_code(trailers).unwrap_or(Code::Unknown));
                }
            }
            Some(Err(status)) => this.call.count(status.code()),
            None => this.call.count(Code::Unknown),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The `grpc-status` in `headers` (or trailers); an unknown number is UNKNOWN,
/// so the codes counted stay the 17 of gRPC.
fn status_code(headers: &http::HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .map(|value| Code::from_bytes(value.as_bytes()))
}

/// The code's name as gRPC spells it (tonic's `Debug` says `NotFound`), the
/// value of every `code` label.
pub(crate) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;
    use std::convert::Infallible;

    const PATH: &str = "/grpc.health.v1.Health/Watch";

    fn layer(metrics: &Arc<Metrics>) -> GrpcMetricsLayer {
        let known = KnownMethods::of_services(
            &[tonic_health::pb::FILE_DESCRIPTOR_SET],
            &["grpc.health.v1.Health"],
        );
        GrpcMetricsLayer::new(metrics.clone(), known)
    }

    fn count(metrics: &Metrics, path_method: (&str, &str), code: &str) -> u64 {
        metrics
            .grpc_requests
            .get_or_create(&GrpcCallLabels {
                service: path_method.0.to_owned(),
                method: path_method.1.to_owned(),
                code: code.to_owned(),
            })
            .get()
    }

    const WATCH: (&str, &str) = ("grpc.health.v1.Health", "Watch");

    /// A call answered by `answer`, through the layer.
    async fn call(
        metrics: &Arc<Metrics>,
        path: &str,
        answer: fn() -> http::Response<tonic::body::Body>,
    ) -> http::Response<tonic::body::Body> {
        let mut service = layer(metrics).layer(tower::service_fn(move |_: http::Request<()>| {
            std::future::ready(Ok::<_, Infallible>(answer()))
        }));
        let request = http::Request::builder().uri(path).body(()).unwrap();
        service.call(request).await.unwrap()
    }

    /// A streamed response: one data frame, then trailers with `code`.
    fn streamed(code: &'static str) -> http::Response<tonic::body::Body> {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static(code));
        let frames = vec![
            Ok::<_, tonic::Status>(http_body::Frame::data(bytes_of("event"))),
            Ok(http_body::Frame::trailers(trailers)),
        ];
        let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
        http::Response::new(tonic::body::Body::new(body))
    }

    fn bytes_of(text: &'static str) -> <tonic::body::Body as http_body::Body>::Data {
        text.as_bytes().into()
    }

    #[tokio::test]
    async fn a_trailers_only_answer_counts_at_once() {
        let metrics = Arc::new(Metrics::new());
        let response = call(&metrics, PATH, || {
            tonic::Status::not_found("no such thing").into_http()
        })
        .await;
        assert_eq!(count(&metrics, WATCH, "NOT_FOUND"), 1);
        drop(response);
        assert_eq!(count(&metrics, WATCH, "NOT_FOUND"), 1);
        assert_eq!(count(&metrics, WATCH, "CANCELLED"), 0);
    }

    #[tokio::test]
    async fn a_stream_counts_once_when_its_trailers_pass() {
        let metrics = Arc::new(Metrics::new());
        let response = call(&metrics, PATH, || streamed("14")).await;
        assert_eq!(count(&metrics, WATCH, "UNAVAILABLE"), 0);
        let collected = response.into_body().collect().await.unwrap();
        assert_eq!(
            collected.trailers().and_then(status_code),
            Some(Code::Unavailable)
        );
        assert_eq!(count(&metrics, WATCH, "UNAVAILABLE"), 1);
        assert_eq!(count(&metrics, WATCH, "CANCELLED"), 0);
        let timed = "conclave_grpc_request_duration_seconds_count{service=\"grpc.health.v1.Health\",method=\"Watch\"} 1";
        assert!(
            metrics.render().contains(timed),
            "timed once, at its headers"
        );
    }

    #[tokio::test]
    async fn a_stream_dropped_before_its_trailers_counts_as_cancelled() {
        let metrics = Arc::new(Metrics::new());
        let mut response = call(&metrics, PATH, || streamed("0")).await;
        let first = response.body_mut().frame().await.unwrap().unwrap();
        assert!(first.is_data());
        drop(response);
        assert_eq!(count(&metrics, WATCH, "CANCELLED"), 1);
        assert_eq!(count(&metrics, WATCH, "OK"), 0);
    }

    #[tokio::test]
    async fn a_call_dropped_before_its_answer_counts_as_cancelled() {
        let metrics = Arc::new(Metrics::new());
        let mut service = layer(&metrics).layer(tower::service_fn(|_: http::Request<()>| {
            std::future::pending::<Result<http::Response<tonic::body::Body>, Infallible>>()
        }));
        let request = http::Request::builder().uri(PATH).body(()).unwrap();
        let pending = service.call(request);
        drop(pending);
        assert_eq!(count(&metrics, WATCH, "CANCELLED"), 1);
    }

    #[tokio::test]
    async fn a_path_not_served_counts_as_unknown() {
        let metrics = Arc::new(Metrics::new());
        call(&metrics, "/evil.Service/x1", || {
            tonic::Status::unimplemented("").into_http()
        })
        .await;
        assert_eq!(count(&metrics, ("unknown", "unknown"), "UNIMPLEMENTED"), 1);
        assert!(!metrics.render().contains("evil"));
    }

    #[test]
    fn every_code_has_its_grpc_name() {
        for number in 0..=16 {
            let code = Code::from_i32(number);
            let name = code_name(code);
            assert!(
                name.bytes()
                    .all(|byte| byte.is_ascii_uppercase() || byte == b'_'),
                "{name}"
            );
        }
        assert_eq!(code_name(Code::from_i32(5)), "NOT_FOUND");
        assert_eq!(code_name(Code::from_i32(99)), "UNKNOWN");
    }
}
