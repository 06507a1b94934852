//! What the federation client reports of its calls, for whoever keeps numbers
//! about them (the homeserver's metrics): this crate only says what happened.

use conclave_core::ids::Domain;
use rustls_pki_types::CertificateDer;
use tonic::{Code, Status};

/// How a call to a peer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallOutcome {
    /// The gRPC code: the peer's answer, or the one tonic made for a call that
    /// did not reach it (`UNAVAILABLE` for a refused connection or a failed TLS
    /// handshake, `CANCELLED` for the call's deadline).
    pub code: Code,
    /// True if the peer produced the answer (whatever its code): it is
    /// reachable. False if the connection, the handshake or the deadline
    /// failed on this side.
    pub reached: bool,
}

impl CallOutcome {
    /// A call answered with `Ok`.
    pub const OK: CallOutcome = CallOutcome {
        code: Code::Ok,
        reached: true,
    };

    /// The outcome of a call that failed with `status`. tonic attaches the
    /// local cause (connect error, timeout, HTTP/2 error) as the status's
    /// source when it makes the status itself; a status the peer sent has none.
    pub fn of_status(status: &Status) -> CallOutcome {
        CallOutcome {
            code: status.code(),
            reached: std::error::Error::source(status).is_none(),
        }
    }
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
        let answered = CallOutcome::of_status(&Status::unavailable("shutting down"));
        assert_eq!(
            answered,
            CallOutcome {
                code: Code::Unavailable,
                reached: true
            }
        );
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let local = Status::from_error(Box::new(refused));
        // A cause tonic does not know becomes UNKNOWN, with the cause kept.
        assert!(!CallOutcome::of_status(&local).reached);
    }

    #[tokio::test]
    async fn a_refused_connection_is_unavailable_and_not_reached() {
        use conclave_proto::federation::v1 as proto;
        use conclave_proto::federation::v1::federation_service_client::FederationServiceClient;
        // A port nobody listens on any more.
        let address = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .unwrap();
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .unwrap()
            .connect_lazy();
        let status = FederationServiceClient::new(channel)
            .fetch_events(proto::FetchEventsRequest::default())
            .await
            .unwrap_err();
        assert_eq!(
            CallOutcome::of_status(&status),
            CallOutcome {
                code: Code::Unavailable,
                reached: false
            },
            "{status:?}"
        );
    }
}
