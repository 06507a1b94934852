//! What the federation client reports of its calls, for whoever keeps numbers
//! about them (the homeserver's metrics): this crate only says what happened.

use conclave_core::ids::Domain;
use rustls_pki_types::CertificateDer;
use tonic::{Code, Status};

/// How a call to a peer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallOutcome {
    /// The gRPC code: the peer's answer, or the one tonic made for a call that
    /// did not reach it (`UNAVAILABLE` for a refused connection, a failed TLS
    /// handshake or a proxy's 502/503/504, `CANCELLED` for the call's
    /// deadline).
    pub code: Code,
    /// True if the peer's gRPC server produced the answer: it is reachable,
    /// whatever it answered. False if the connection, the handshake or the
    /// deadline failed on this side, or if something other than a gRPC server
    /// answered (a proxy in front of a down peer). A peer's own `UNAVAILABLE`
    /// counts as reached: a homeserver also answers it for conditions that are
    /// not its own (a third domain it had to ask is down, a busy group lock),
    /// and a down peer should not be blamed for those.
    pub reached: bool,
}

impl CallOutcome {
    /// A call answered with `Ok`.
    pub const OK: CallOutcome = CallOutcome {
        code: Code::Ok,
        reached: true,
    };

    /// The outcome of a call that failed with `status`.
    pub fn of_status(status: &Status) -> CallOutcome {
        CallOutcome {
            code: status.code(),
            reached: peer_served(status),
        }
    }
}

/// The messages tonic 0.14 gives the statuses it makes up from an HTTP
/// response without `grpc-status` (`infer_grpc_status` in its `status.rs`):
/// the HTTP status mapped to a code (a proxy's 502/503/504 or 429 become
/// UNAVAILABLE, 404 UNIMPLEMENTED, 400 INTERNAL, ...), or a 200 whose stream
/// ended without a final status (a proxy cutting it). A gRPC server always
/// sends `grpc-status`, so these answers are not the peer's.
const ANSWERS_WITHOUT_GRPC_STATUS: [&str; 2] = [
    "grpc-status header missing",
    "protocol error: missing grpc-status trailer",
];

/// Whether `status` came from the peer's gRPC server, able to serve.
fn peer_served(status: &Status) -> bool {
    // tonic attaches the local cause (connect error, timeout, HTTP/2 error)
    // as the source of a status it makes from an error.
    let made_from_local_error = std::error::Error::source(status).is_some();
    let not_from_grpc_server = ANSWERS_WITHOUT_GRPC_STATUS
        .iter()
        .any(|prefix| status.message().starts_with(prefix));
    !(made_from_local_error || not_from_grpc_server)
}

/// Told of every call [`crate::client::FederationClient`]'s methods make, and
/// of every certificate a peer presents to it. Called on the calling task:
/// keep it cheap and never block.
pub trait CallObserver: Send + Sync + 'static {
    /// A call of `rpc` to `peer` ended with `outcome`.
    fn call_ended(&self, peer: &Domain, rpc: &'static str, outcome: CallOutcome);

    /// `peer` completed a TLS handshake presenting `certificate` (its end-entity
    /// certificate, verified for its domain).
    fn peer_certificate(&self, peer: &Domain, certificate: &CertificateDer<'_>);
}

/// The observer of a client nobody watches.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;

impl CallObserver for NoObserver {
    fn call_ended(&self, _peer: &Domain, _rpc: &'static str, _outcome: CallOutcome) {}

    fn peer_certificate(&self, _peer: &Domain, _certificate: &CertificateDer<'_>) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_the_peer_sent_means_it_was_reached() {
        let refused = CallOutcome::of_status(&Status::permission_denied("not a peer"));
        assert_eq!(
            refused,
            CallOutcome {
                code: Code::PermissionDenied,
                reached: true
            }
        );
        // A peer's own UNAVAILABLE (say, a third domain it had to ask is
        // down) is an answer from a reachable peer.
        let third_domain_down =
            CallOutcome::of_status(&Status::unavailable("c.example is unreachable"));
        assert_eq!(
            third_domain_down,
            CallOutcome {
                code: Code::Unavailable,
                reached: true
            }
        );
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let local = Status::from_error(Box::new(refused));
        // A cause tonic does not know becomes UNKNOWN, with the cause kept.
        assert_eq!(local.code(), Code::Unknown);
        assert!(!CallOutcome::of_status(&local).reached);
    }

    #[tokio::test]
    async fn a_refused_connection_is_unavailable_and_not_reached() {
        // A port nobody listens on any more.
        let address = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .unwrap();
        let status = fetch_events_status(address).await;
        assert_eq!(
            CallOutcome::of_status(&status),
            CallOutcome {
                code: Code::Unavailable,
                reached: false
            },
            "{status:?}"
        );
    }

    /// The error of a FetchEvents call to `address` over plain HTTP/2.
    async fn fetch_events_status(address: std::net::SocketAddr) -> Status {
        use conclave_proto::federation::v1 as proto;
        use conclave_proto::federation::v1::federation_service_client::FederationServiceClient;
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .unwrap()
            .connect_lazy();
        FederationServiceClient::new(channel)
            .fetch_events(proto::FetchEventsRequest::default())
            .await
            .unwrap_err()
    }

    /// A server that answers every request with a bare HTTP status and no
    /// `grpc-status`, as an L7 proxy does in front of a peer that is down.
    #[derive(Clone)]
    struct ProxyAnswering(http::StatusCode);

    impl tonic::server::NamedService for ProxyAnswering {
        const NAME: &'static str = "conclave.federation.v1.FederationService";
    }

    impl tower::Service<http::Request<tonic::body::Body>> for ProxyAnswering {
        type Response = http::Response<tonic::body::Body>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

        fn poll_ready(
            &mut self,
            _context: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, _request: http::Request<tonic::body::Body>) -> Self::Future {
            let mut response = http::Response::new(tonic::body::Body::empty());
            *response.status_mut() = self.0;
            std::future::ready(Ok(response))
        }
    }

    /// The status a FetchEvents call gets from a proxy answering `http_status`.
    async fn status_from_proxy_answering(http_status: http::StatusCode) -> Status {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ProxyAnswering(http_status))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let status = fetch_events_status(address).await;
        server.abort();
        status
    }

    #[tokio::test]
    async fn a_proxys_answer_for_a_down_peer_is_not_reached() {
        for http_status in [
            http::StatusCode::BAD_GATEWAY,
            http::StatusCode::SERVICE_UNAVAILABLE,
            http::StatusCode::GATEWAY_TIMEOUT,
        ] {
            let status = status_from_proxy_answering(http_status).await;
            assert_eq!(
                CallOutcome::of_status(&status),
                CallOutcome {
                    code: Code::Unavailable,
                    reached: false
                },
                "{http_status}: {status:?}"
            );
        }
        // A proxy with no route to the peer: tonic makes UNIMPLEMENTED of the
        // 404, which no gRPC server of the peer said.
        let status = status_from_proxy_answering(http::StatusCode::NOT_FOUND).await;
        assert_eq!(
            CallOutcome::of_status(&status),
            CallOutcome {
                code: Code::Unimplemented,
                reached: false
            },
            "{status:?}"
        );
    }
}
