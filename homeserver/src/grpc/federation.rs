//! `conclave.federation.v1.FederationService`, served to peers on the federation
//! listener over mutual TLS (tonic only): every request passes the `PeerGate` for
//! the domain it names before it reaches a use case; proto <-> domain conversion.
//!
//! # Metrics
//! Its calls are counted and timed as the client API's are (`metrics_layer`),
//! under `service="conclave.federation.v1.FederationService"`.

use super::known_methods::KnownMethods;
use super::metrics_layer::code_name;
use super::status::{self, missing_field, peer_refusal};
use crate::metrics::CertificateRole;
use crate::notify::Topic;
use crate::rules::ids::{GroupId, Seq};
use crate::service::Context;
use crate::service::departures;
use crate::service::follower::{self, IncomingBatch};
use crate::service::groups::{self, GroupError, NewCommit, NewMessage, NewProposal};
use crate::service::key_packages;
use crate::service::outbox;
use crate::service::verify_credential;
use conclave_core::ids::{CredentialIdentity, Domain, IdError};
use conclave_federation::identity::{PeerRefusal, presented_dns_names};
use conclave_federation::reloadable::ReloadableTls;
use conclave_federation::server::{PeerGate, TlsIncoming};
use conclave_proto::federation::v1 as proto;
use conclave_proto::federation::v1::federation_service_server::{
    FederationService, FederationServiceServer,
};
use proto::submit_to_hub_request::Submission as Relayed;
use proto::submit_to_hub_response::Outcome;
use rustls_pki_types::CertificateDer;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tonic::{Code, Request, Response, Status};
use tower::util::MapResponseLayer;

pub(crate) struct FederationApi {
    pub(crate) context: Arc<Context>,
    pub(crate) gate: Arc<PeerGate>,
}

/// Serves the federation API on `listener` (TLS with the material `tls` holds
/// at each handshake, which requires client certificates) until `shutdown` resolves, then lets in-flight requests finish.
pub(crate) async fn serve(
    context: Arc<Context>,
    listener: TcpListener,
    tls: Arc<ReloadableTls>,
    gate: Arc<PeerGate>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let max_message_bytes = context.config.federation.max_message_bytes;
    let limits = context.config.limits.clone();
    let calls_in_flight = context.calls_in_flight.clone();
    let metrics_layer = super::metrics_layer(&context, federation_api_methods);
    let service = FederationServiceServer::new(FederationApi { context, gate })
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes);
    let incoming = TlsIncoming::new(listener, "federation", tls, super::TLS_HANDSHAKE_TIMEOUT)
        .with_tcp_keepalive(super::tcp_keepalive(&limits));
    super::server_builder(&limits)
        // Each request's span continues the caller's trace (W3C traceparent).
        // First, so outermost: it changes the response body type.
        .layer(conclave_federation::trace_context::server_layer(
            federation_api_methods().into_rpc_names(),
        ))
        // Right below the trace layer, as on the client API.
        .layer(metrics_layer)
        .layer(MapResponseLayer::new(
            status::oversize_as_resource_exhausted(max_message_bytes),
        ))
        .layer(super::in_flight::InFlightLayer::new(calls_in_flight))
        .layer(super::deadline::DeadlineLayer::new(super::call_deadline(
            &limits,
        )))
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// The methods of the federation listener: the federation API only.
pub(super) fn federation_api_methods() -> KnownMethods {
    use tonic::server::NamedService;
    KnownMethods::of_services(
        &[conclave_proto::FEDERATION_FILE_DESCRIPTOR_SET],
        &[FederationServiceServer::<FederationApi>::NAME],
    )
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
        .map_err(|error| refused(status::invalid_argument(format!("{field}: {error}"))))
}

/// Logs a refusal of an admitted peer's request with the peer's domain.
fn refused(peer: &Domain, status: Status) -> Status {
    match status.code() {
        Code::Internal | Code::Unavailable => {
            tracing::warn!(peer_domain = %peer, code = ?status.code(), reason = status.message(), "federation request failed");
        }
        _ => {
            tracing::info!(peer_domain = %peer, code = ?status.code(), reason = status.message(), "refused a federation request");
        }
    }
    status
}

/// The hub's verdict on a relayed submission, for the follower to show its
/// device. Failures that are the hub's own (database, a peer it could not ask)
/// are errors of the call instead, so the follower reports the hub unavailable.
fn rejection(peer: &Domain, error: GroupError) -> Result<proto::Rejected, Status> {
    let conflict = match &error {
        GroupError::CommitConflict {
            current_epoch,
            winning_commit_seq,
            ..
        } => Some(proto::CommitConflict {
            current_epoch: current_epoch.get(),
            winning_commit_seq: winning_commit_seq.get(),
        }),
        _ => None,
    };
    let status = Status::from(error);
    if matches!(status.code(), Code::Internal | Code::Unavailable) {
        return Err(refused(peer, status));
    }
    tracing::debug!(peer_domain = %peer, code = ?status.code(), reason = status.message(), "refused a relayed submission");
    Ok(proto::Rejected {
        code: status.code() as i32,
        message: status.message().to_owned(),
        commit_conflict: conflict,
    })
}

impl FederationApi {
    /// Lets the request through if its connection's certificate speaks for
    /// `domain`; then (and for a peer over its rate) `admitted` names the
    /// peer, for the request's count.
    async fn admit(
        &self,
        admitted: &mut Option<Domain>,
        certificates: &[CertificateDer<'static>],
        domain: &Domain,
    ) -> Result<(), Status> {
        match self.gate.admit(Some(certificates), domain).await {
            Ok(peer) => *admitted = Some(peer.domain),
            // The gate checks the certificate before the rate: a peer over its
            // rate is identified.
            Err(refusal @ PeerRefusal::RateLimited { .. }) => {
                *admitted = Some(domain.clone());
                return Err(peer_refusal(refusal));
            }
            Err(refusal) => return Err(peer_refusal(refusal)),
        }
        // A configured peer's domain: a bounded set, as span attributes go.
        tracing::Span::current().record("conclave.peer_domain", domain.as_str());
        if let Some(leaf) = certificates.first() {
            self.context
                .metrics
                .federation_call_counters()
                .observe_peer_certificate(domain, CertificateRole::Client, leaf);
        }
        self.context
            .notifier
            .publish(&Topic::PeerAlive(domain.to_string()));
        Ok(())
    }

    /// Counts a request in `conclave_federation_requests_total` (inbound) by
    /// the peer it was admitted for and the code it was answered with.
    fn count<T>(&self, admitted: Option<Domain>, result: &Result<T, Status>) {
        let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
        self.context
            .metrics
            .count_inbound_federation_call(admitted.as_ref(), code_name(code));
    }
}

/// The RPCs' handlers; `admitted` is set once the gate admits the caller.
impl FederationApi {
    async fn handle_claim_key_packages(
        &self,
        admitted: &mut Option<Domain>,
        request: Request<proto::ClaimKeyPackagesRequest>,
    ) -> Result<Response<proto::ClaimKeyPackagesResponse>, Status> {
        let certificates = peer_certificates(&request)?;
        let message = request.into_inner();
        let requester: CredentialIdentity =
            parse_naming_field(&certificates, "requester", &message.requester)?;
        self.admit(admitted, &certificates, requester.user_id().domain())
            .await?;
        if message.user_id.is_empty() {
            return Err(missing_field("user_id"));
        }
        let claimed = key_packages::claim_for_peer(
            &self.context,
            &requester,
            &message.user_id,
            message.cipher_suite,
        )
        .await?;
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

    async fn handle_verify_credential(
        &self,
        admitted: &mut Option<Domain>,
        request: Request<proto::VerifyCredentialRequest>,
    ) -> Result<Response<proto::VerifyCredentialResponse>, Status> {
        let certificates = peer_certificates(&request)?;
        let message = request.into_inner();
        let asking_domain: Domain =
            parse_naming_field(&certificates, "asking_domain", &message.asking_domain)?;
        self.admit(admitted, &certificates, &asking_domain).await?;
        if message.credential_identity.is_empty() {
            return Err(missing_field("credential_identity"));
        }
        let key_package_ref =
            (!message.key_package_ref.is_empty()).then_some(message.key_package_ref.as_slice());
        let verdict = verify_credential::verify_credential(
            &self.context,
            &message.credential_identity,
            &message.signature_public_key,
            key_package_ref,
        )
        .await?;
        Ok(Response::new(proto::VerifyCredentialResponse {
            registered: verdict.registered,
            key_package_claimed: verdict.key_package_claimed,
        }))
    }

    async fn handle_submit_to_hub(
        &self,
        admitted: &mut Option<Domain>,
        request: Request<proto::SubmitToHubRequest>,
    ) -> Result<Response<proto::SubmitToHubResponse>, Status> {
        let certificates = peer_certificates(&request)?;
        let message = request.into_inner();
        let sender: CredentialIdentity =
            parse_naming_field(&certificates, "sender", &message.sender)?;
        let peer = sender.user_id().domain().clone();
        self.admit(admitted, &certificates, &peer).await?;
        let Some(submission) = message.submission else {
            return Err(refused(&peer, missing_field("submission")));
        };
        let context = &self.context;
        let result = match submission {
            Relayed::Commit(bundle) => {
                groups::submit_commit(
                    context,
                    &sender,
                    NewCommit {
                        idempotency_key: message.idempotency_key,
                        group_id: GroupId::new(message.group_id),
                        commit: bundle.commit,
                        welcome: bundle.welcome,
                        group_info: bundle.group_info,
                    },
                )
                .await
            }
            Relayed::Proposal(proposal) => {
                groups::submit_proposal(
                    context,
                    &sender,
                    NewProposal {
                        idempotency_key: message.idempotency_key,
                        group_id: GroupId::new(message.group_id),
                        proposal,
                    },
                )
                .await
            }
            Relayed::ApplicationMessage(application_message) => {
                groups::send_message(
                    context,
                    &sender,
                    NewMessage {
                        idempotency_key: message.idempotency_key,
                        group_id: GroupId::new(message.group_id),
                        message: application_message,
                    },
                )
                .await
            }
        };
        let outcome = match result {
            Ok(accepted) => Outcome::Accepted(proto::Accepted {
                seq: accepted.seq.get(),
                epoch: accepted.epoch.get(),
            }),
            Err(error) => Outcome::Rejected(rejection(&peer, error)?),
        };
        Ok(Response::new(proto::SubmitToHubResponse {
            outcome: Some(outcome),
        }))
    }

    async fn handle_deliver_events(
        &self,
        admitted: &mut Option<Domain>,
        request: Request<proto::DeliverEventsRequest>,
    ) -> Result<Response<proto::DeliverEventsResponse>, Status> {
        let certificates = peer_certificates(&request)?;
        let message = request.into_inner();
        let hub: Domain = parse_naming_field(&certificates, "hub_domain", &message.hub_domain)?;
        self.admit(admitted, &certificates, &hub).await?;
        if message.group_id.is_empty() {
            return Err(refused(&hub, missing_field("group_id")));
        }
        let last_seq = follower::apply_batch(
            &self.context,
            IncomingBatch {
                hub: hub.clone(),
                mls_group_id: GroupId::new(message.group_id),
                events: message.events,
                member_count: message.member_count,
            },
        )
        .await
        .map_err(|error| refused(&hub, error.into()))?;
        Ok(Response::new(proto::DeliverEventsResponse {
            last_seq: last_seq.get(),
        }))
    }

    async fn handle_fetch_events(
        &self,
        admitted: &mut Option<Domain>,
        request: Request<proto::FetchEventsRequest>,
    ) -> Result<Response<proto::FetchEventsResponse>, Status> {
        let certificates = peer_certificates(&request)?;
        let message = request.into_inner();
        let follower: Domain =
            parse_naming_field(&certificates, "follower_domain", &message.follower_domain)?;
        self.admit(admitted, &certificates, &follower).await?;
        let (events, last_seq) = outbox::fetch_for_follower(
            &self.context,
            &follower,
            &GroupId::new(message.group_id),
            Seq::new(message.after_seq),
            message.limit,
        )
        .await
        .map_err(|error| refused(&follower, error.into()))?;
        Ok(Response::new(proto::FetchEventsResponse {
            events,
            last_seq: last_seq.get(),
        }))
    }

    async fn handle_fetch_group_info(
        &self,
        admitted: &mut Option<Domain>,
        request: Request<proto::FetchGroupInfoRequest>,
    ) -> Result<Response<proto::FetchGroupInfoResponse>, Status> {
        let certificates = peer_certificates(&request)?;
        let message = request.into_inner();
        let requester: CredentialIdentity =
            parse_naming_field(&certificates, "requester", &message.requester)?;
        let peer = requester.user_id().domain().clone();
        self.admit(admitted, &certificates, &peer).await?;
        let (group_info, ratchet_tree, epoch) = groups::group_info(
            &self.context,
            requester.user_id(),
            &GroupId::new(message.group_id),
        )
        .await
        .map_err(|error| refused(&peer, error.into()))?;
        Ok(Response::new(proto::FetchGroupInfoResponse {
            group_info,
            ratchet_tree,
            epoch: epoch.get(),
        }))
    }
}

impl FederationApi {
    /// The federation doctor's question: our protocol version and clock.
    async fn handle_get_server_info(
        &self,
        admitted: &mut Option<Domain>,
        request: Request<proto::GetServerInfoRequest>,
    ) -> Result<Response<proto::GetServerInfoResponse>, Status> {
        let certificates = peer_certificates(&request)?;
        let message = request.into_inner();
        let asking_domain: Domain =
            parse_naming_field(&certificates, "asking_domain", &message.asking_domain)?;
        self.admit(admitted, &certificates, &asking_domain).await?;
        Ok(Response::new(proto::GetServerInfoResponse {
            protocol_version: conclave_federation::diagnosis::PROTOCOL_VERSION.to_owned(),
            server_version: env!("CARGO_PKG_VERSION").to_owned(),
            server_time_unix_ms: self.context.now_ms(),
            cipher_suites: self
                .context
                .config
                .groups
                .offered_cipher_suites()
                .into_iter()
                .map(|suite| suite.to_wire())
                .collect(),
        }))
    }

    async fn handle_announce_departure(
        &self,
        admitted: &mut Option<Domain>,
        request: Request<proto::AnnounceDepartureRequest>,
    ) -> Result<Response<proto::AnnounceDepartureResponse>, Status> {
        let certificates = peer_certificates(&request)?;
        let message = request.into_inner();
        let follower: Domain =
            parse_naming_field(&certificates, "follower_domain", &message.follower_domain)?;
        self.admit(admitted, &certificates, &follower).await?;
        if message.group_id.is_empty() {
            return Err(refused(&follower, missing_field("group_id")));
        }
        if message.credential_identity.is_empty() {
            return Err(refused(&follower, missing_field("credential_identity")));
        }
        let departed: CredentialIdentity =
            message.credential_identity.parse().map_err(|error| {
                refused(
                    &follower,
                    status::invalid_argument(format!("credential_identity: {error}")),
                )
            })?;
        let seq = departures::accept_announcement(
            &self.context,
            &follower,
            &GroupId::new(message.group_id),
            &departed,
            &message.reason,
        )
        .await
        .map_err(|error| refused(&follower, error.into()))?;
        Ok(Response::new(proto::AnnounceDepartureResponse {
            seq: seq.get(),
        }))
    }
}

/// Each RPC runs its handler (`FederationApi::handle_*`), then counts it.
#[tonic::async_trait]
impl FederationService for FederationApi {
    async fn claim_key_packages(
        &self,
        request: Request<proto::ClaimKeyPackagesRequest>,
    ) -> Result<Response<proto::ClaimKeyPackagesResponse>, Status> {
        let mut admitted = None;
        let result = self.handle_claim_key_packages(&mut admitted, request).await;
        self.count(admitted, &result);
        result
    }

    async fn verify_credential(
        &self,
        request: Request<proto::VerifyCredentialRequest>,
    ) -> Result<Response<proto::VerifyCredentialResponse>, Status> {
        let mut admitted = None;
        let result = self.handle_verify_credential(&mut admitted, request).await;
        self.count(admitted, &result);
        result
    }

    async fn submit_to_hub(
        &self,
        request: Request<proto::SubmitToHubRequest>,
    ) -> Result<Response<proto::SubmitToHubResponse>, Status> {
        let mut admitted = None;
        let result = self.handle_submit_to_hub(&mut admitted, request).await;
        self.count(admitted, &result);
        result
    }

    async fn deliver_events(
        &self,
        request: Request<proto::DeliverEventsRequest>,
    ) -> Result<Response<proto::DeliverEventsResponse>, Status> {
        let mut admitted = None;
        let result = self.handle_deliver_events(&mut admitted, request).await;
        self.count(admitted, &result);
        result
    }

    async fn fetch_events(
        &self,
        request: Request<proto::FetchEventsRequest>,
    ) -> Result<Response<proto::FetchEventsResponse>, Status> {
        let mut admitted = None;
        let result = self.handle_fetch_events(&mut admitted, request).await;
        self.count(admitted, &result);
        result
    }

    async fn fetch_group_info(
        &self,
        request: Request<proto::FetchGroupInfoRequest>,
    ) -> Result<Response<proto::FetchGroupInfoResponse>, Status> {
        let mut admitted = None;
        let result = self.handle_fetch_group_info(&mut admitted, request).await;
        self.count(admitted, &result);
        result
    }

    async fn get_server_info(
        &self,
        request: Request<proto::GetServerInfoRequest>,
    ) -> Result<Response<proto::GetServerInfoResponse>, Status> {
        let mut admitted = None;
        let result = self.handle_get_server_info(&mut admitted, request).await;
        self.count(admitted, &result);
        result
    }

    async fn announce_departure(
        &self,
        request: Request<proto::AnnounceDepartureRequest>,
    ) -> Result<Response<proto::AnnounceDepartureResponse>, Status> {
        let mut admitted = None;
        let result = self.handle_announce_departure(&mut admitted, request).await;
        self.count(admitted, &result);
        result
    }
}
