//! `conclave.federation.v1.FederationService`, served to peers on the federation
//! listener over mutual TLS (tonic only): every request passes the `PeerGate` for
//! the domain it names before it reaches a use case; proto <-> domain conversion.

use super::status::{self, missing_field, peer_refusal};
use crate::service::Context;
use crate::service::federation;
use crate::service::key_packages;
use conclave_core::ids::{CredentialIdentity, Domain, IdError};
use conclave_federation::identity::{PeerRefusal, presented_dns_names};
use conclave_federation::server::{PeerGate, TlsIncoming};
use conclave_proto::federation::v1 as proto;
use conclave_proto::federation::v1::federation_service_server::{
    FederationService, FederationServiceServer,
};
use rustls_pki_types::CertificateDer;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::{Request, Response, Status};
use tower::util::MapResponseLayer;

/// A peer must complete its TLS handshake within this time.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 PING interval on peers' connections, and how long an answer may take
/// before the connection is dropped.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct FederationApi {
    pub(crate) context: Arc<Context>,
    pub(crate) gate: Arc<PeerGate>,
}

/// Serves the federation API on `listener` (TLS with `tls`, which requires client
/// certificates) until `shutdown` resolves, then lets in-flight requests finish.
pub(crate) async fn serve(
    context: Arc<Context>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    gate: Arc<PeerGate>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let max_message_bytes = context.config.federation.max_message_bytes;
    let service = FederationServiceServer::new(FederationApi { context, gate })
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes);
    Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .layer(MapResponseLayer::new(
            status::oversize_as_resource_exhausted(max_message_bytes),
        ))
        .add_service(service)
        .serve_with_incoming_shutdown(TlsIncoming::new(listener, tls, HANDSHAKE_TIMEOUT), shutdown)
        .await
}

/// The client certificate chain of the request's connection, or UNAUTHENTICATED.
/// Checked before the request's contents, so that a caller without a certificate
/// learns nothing else.
fn peer_certificates<T>(request: &Request<T>) -> Result<Arc<Vec<CertificateDer<'static>>>, Status> {
    request
        .peer_certs()
        .filter(|chain| !chain.is_empty())
        .ok_or_else(|| {
            tracing::warn!("refused a federation request without a client certificate");
            peer_refusal(PeerRefusal::NoClientCertificate)
        })
}

/// Parses the field that names the domain a request is made for (a requester's
/// identity, or a domain). A malformed one is refused before the gate, so it is
/// logged here, with the names the caller's certificate presents: there is no
/// domain to log yet.
fn parse_naming_field<T: FromStr<Err = IdError>>(
    certificates: &[CertificateDer<'static>],
    field: &'static str,
    value: &str,
) -> Result<T, Status> {
    let refused = |status: Status| {
        tracing::warn!(
            presented_names = ?certificates.first().map(presented_dns_names),
            field,
            reason = status.message(),
            "refused a malformed federation request"
        );
        status
    };
    if value.is_empty() {
        return Err(refused(missing_field(field)));
    }
    value
        .parse()
        .map_err(|error| refused(Status::invalid_argument(format!("{field}: {error}"))))
}

impl FederationApi {
    /// Lets the request through if its connection's certificate speaks for `domain`.
    fn admit(
        &self,
        certificates: &[CertificateDer<'static>],
        domain: &Domain,
    ) -> Result<(), Status> {
        self.gate
            .admit(Some(certificates), domain)
            .map(drop)
            .map_err(peer_refusal)
    }
}

#[tonic::async_trait]
impl FederationService for FederationApi {
    async fn claim_key_packages(
        &self,
        request: Request<proto::ClaimKeyPackagesRequest>,
    ) -> Result<Response<proto::ClaimKeyPackagesResponse>, Status> {
        let certificates = peer_certificates(&request)?;
        let message = request.into_inner();
        let requester: CredentialIdentity =
            parse_naming_field(&certificates, "requester", &message.requester)?;
        self.admit(&certificates, requester.user_id().domain())?;
        if message.user_id.is_empty() {
            return Err(missing_field("user_id"));
        }
        let claimed =
            key_packages::claim_for_peer(&self.context, &requester, &message.user_id).await?;
        let key_packages = claimed
            .into_iter()
            .map(|claimed| proto::ClaimedKeyPackage {
                device_id: claimed.identity.device_id().to_string(),
                credential_identity: claimed.identity.to_string(),
                key_package: claimed.package.data,
                last_resort: claimed.package.last_resort,
                signature_public_key: claimed.signature_public_key,
            })
            .collect();
        Ok(Response::new(proto::ClaimKeyPackagesResponse {
            key_packages,
        }))
    }

    async fn verify_credential(
        &self,
        request: Request<proto::VerifyCredentialRequest>,
    ) -> Result<Response<proto::VerifyCredentialResponse>, Status> {
        let certificates = peer_certificates(&request)?;
        let message = request.into_inner();
        let asking_domain: Domain =
            parse_naming_field(&certificates, "asking_domain", &message.asking_domain)?;
        self.admit(&certificates, &asking_domain)?;
        if message.credential_identity.is_empty() {
            return Err(missing_field("credential_identity"));
        }
        let registered = federation::verify_credential(
            &self.context,
            &message.credential_identity,
            &message.signature_public_key,
        )
        .await?;
        Ok(Response::new(proto::VerifyCredentialResponse {
            registered,
        }))
    }
}
