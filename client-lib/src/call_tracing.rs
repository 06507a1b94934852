//! A `tracing` span for every gRPC call the client makes, `client_call`, with
//! the call's W3C trace context (`traceparent`) in its request headers, so
//! that the homeserver's spans of the call join the client's trace (the
//! homeserver applies its own sampling to it).
//!
//! Without an OpenTelemetry layer in the process's subscriber (the default for
//! library users, and the `conclave` CLI without `OTEL_EXPORTER_OTLP_ENDPOINT`)
//! spans carry no trace context and nothing is added to requests.
//!
//! The channel also keeps the TLS verifier of its connections
//! ([`RefusalWatch`]): tonic reconnects inside the channel, and a call whose
//! reconnection was refused for the server's certificate fails with the
//! verifier's plain-words reason instead of a bare transport error.

use conclave_federation::trace_context::{inject_headers, rpc_service_and_method};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tonic::body::Body;
use tonic::codegen::{Service, StdError};
use tonic::transport::Channel;
use tracing::Instrument as _;

use crate::connection::RefusalWatch;

/// A [`Channel`] that makes a span per call and sends its trace context. It
/// takes the place of the channel under the bearer-token interceptor.
#[derive(Debug, Clone)]
pub(crate) struct TracedChannel {
    channel: Channel,
    /// For `https://`: explains a certificate refused when the channel
    /// reconnects.
    refusals: Option<RefusalWatch>,
}

impl TracedChannel {
    pub(crate) fn new(channel: Channel, refusals: Option<RefusalWatch>) -> Self {
        TracedChannel { channel, refusals }
    }

    /// A failure of the channel, as the error of the call: the refused
    /// certificate's explanation if a reconnection was refused for it.
    fn explain(refusals: Option<&RefusalWatch>, error: tonic::transport::Error) -> StdError {
        match refusals.and_then(RefusalWatch::refused) {
            Some(refused) => Box::new(refused),
            None => Box::new(error),
        }
    }
}

type ResponseFuture = Pin<
    Box<
        dyn Future<Output = Result<<Channel as Service<http::Request<Body>>>::Response, StdError>>
            + Send,
    >,
>;

impl Service<http::Request<Body>> for TracedChannel {
    type Response = <Channel as Service<http::Request<Body>>>::Response;
    type Error = StdError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.channel
            .poll_ready(context)
            .map_err(|error| Self::explain(self.refusals.as_ref(), error))
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // The path is one of the generated clients' constants (this channel
        // serves only them), so the span's names come from a bounded set.
        let (service, method) = rpc_service_and_method(request.uri().path());
        // Until the response's headers: a Subscribe stream's span ends as the
        // stream opens, not when it closes.
        let span = tracing::info_span!(
            "client_call",
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            otel.kind = "client",
        );
        span.in_scope(|| inject_headers(request.headers_mut()));
        let response = self.channel.call(request).instrument(span);
        let refusals = self.refusals.clone();
        Box::pin(async move {
            response
                .await
                .map_err(|error| Self::explain(refusals.as_ref(), error))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
    use std::sync::{Arc, Mutex};
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    /// What a fake server receives through a [`TracedChannel`].
    #[tokio::test]
    async fn each_call_sends_the_trace_context_of_its_own_span() {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let _default = tracing::subscriber::set_default(subscriber);

        // A fake server: reads each request's headers and answers UNIMPLEMENTED.
        let received: Arc<Mutex<Vec<http::HeaderMap>>> = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a listener");
        let address = listener.local_addr().expect("bound");
        let server_received = Arc::clone(&received);
        let server = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.expect("a connection");
            let mut connection = h2::server::handshake(socket).await.expect("HTTP/2");
            while let Some(Ok((request, mut respond))) = connection.accept().await {
                server_received
                    .lock()
                    .expect("not poisoned")
                    .push(request.headers().clone());
                let response = http::Response::builder()
                    .header("content-type", "application/grpc")
                    .header("grpc-status", "12")
                    .body(())
                    .expect("a response");
                respond.send_response(response, true).expect("sent");
            }
        });
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .expect("a URL")
            .connect()
            .await
            .expect("a channel");

        let outer = tracing::info_span!("cli_command");
        let outer_trace_id = outer.context().span().span_context().trace_id();
        let mut client =
            conclave_proto::client::v1::account_service_client::AccountServiceClient::new(
                TracedChannel::new(channel, None),
            );
        let status = client
            .begin_enrolment(conclave_proto::client::v1::BeginEnrolmentRequest {})
            .instrument(outer.clone())
            .await
            .expect_err("the fake server answers UNIMPLEMENTED");
        assert_eq!(status.code(), tonic::Code::Unimplemented);

        let headers = received.lock().expect("not poisoned").clone();
        assert_eq!(headers.len(), 1);
        let traceparent = headers[0]
            .get("traceparent")
            .expect("a traceparent")
            .to_str()
            .expect("ASCII");
        let parts: Vec<&str> = traceparent.split('-').collect();
        assert_eq!(parts.len(), 4, "{traceparent}");
        assert_eq!(parts[1], outer_trace_id.to_string(), "the caller's trace");
        let outer_span_id = outer.context().span().span_context().span_id();
        assert_ne!(
            parts[2],
            outer_span_id.to_string(),
            "the parent is the call's own span"
        );
        server.abort();
    }
}
