//! `conclave.admin.v1.FederationAdminService`: proto <-> domain conversion
//! only; the peers' list, the doctor and the own certificate's checks are
//! `service::admin::{list_peers, federation_doctor, check_own_certificate}`.

use super::{AdminApi, authorize};
use crate::admin::PeerOutboxStatus;
use crate::grpc::timestamp;
use crate::rules::federation_doctor::{CheckOutcome, DoctorReport};
use crate::service::admin::check_own_certificate::check_own_certificate;
use crate::service::admin::federation_doctor::run_doctor;
use crate::service::admin::list_peers::list_peers;
use conclave_proto::admin::v1 as proto;
use conclave_proto::admin::v1::federation_admin_service_server::FederationAdminService;
use tonic::{Request, Response, Status};

#[tonic::async_trait]
impl FederationAdminService for AdminApi {
    async fn list_peers(
        &self,
        request: Request<proto::ListPeersRequest>,
    ) -> Result<Response<proto::ListPeersResponse>, Status> {
        authorize(&self.context, &request).await?;
        let peers = list_peers(&self.context).await?;
        Ok(Response::new(proto::ListPeersResponse {
            peers: peers.into_iter().map(peer_to_proto).collect(),
        }))
    }

    async fn run_doctor(
        &self,
        request: Request<proto::RunDoctorRequest>,
    ) -> Result<Response<proto::DoctorReport>, Status> {
        let caller = authorize(&self.context, &request).await?;
        let domain = request.into_inner().domain;
        let report = run_doctor(&self.context, &caller, &domain).await?;
        Ok(Response::new(report_to_proto(report)))
    }

    async fn check_own_certificate(
        &self,
        request: Request<proto::CheckOwnCertificateRequest>,
    ) -> Result<Response<proto::DoctorReport>, Status> {
        let caller = authorize(&self.context, &request).await?;
        let report = check_own_certificate(&self.context, &caller).await?;
        Ok(Response::new(report_to_proto(report)))
    }
}

fn peer_to_proto(peer: PeerOutboxStatus) -> proto::Peer {
    proto::Peer {
        endpoint: peer
            .endpoint
            .as_deref()
            .map(endpoint_host_and_port)
            .unwrap_or_default(),
        domain: peer.domain,
        configured: peer.configured,
        last_success_at: peer.last_success_at_ms.map(timestamp),
        last_error: peer.last_error.unwrap_or_default(),
        last_error_at: peer.last_error_at_ms.map(timestamp),
        consecutive_failures: peer.consecutive_failures,
        outbox_depth: peer.outbox_depth,
        oldest_pending_at: peer.oldest_pending_at_ms.map(timestamp),
        outbox_owner: peer.outbox_owner.unwrap_or_default(),
    }
}

/// `host:port` of a configured `https://HOST[:PORT]` endpoint, as the proto
/// documents it (the URL as configured if it does not parse: the
/// configuration's check refuses such a start, but shows it anyway).
fn endpoint_host_and_port(endpoint: &str) -> String {
    endpoint
        .parse::<conclave_federation::peers::PeerEndpoint>()
        .map_or_else(
            |_| endpoint.to_owned(),
            |parsed| crate::service::admin::federation_doctor::host_and_port(&parsed),
        )
}

pub(crate) fn report_to_proto(report: DoctorReport) -> proto::DoctorReport {
    let healthy = report.healthy();
    proto::DoctorReport {
        domain: report.domain,
        endpoint: report.endpoint,
        checks: report
            .checks
            .into_iter()
            .map(|check| proto::DoctorCheck {
                name: check.name.to_owned(),
                outcome: outcome_to_proto(check.outcome) as i32,
                detail: check.detail,
                duration_ms: check.duration_ms,
            })
            .collect(),
        checked_at: Some(timestamp(report.checked_at_ms)),
        healthy,
    }
}

fn outcome_to_proto(outcome: CheckOutcome) -> proto::CheckOutcome {
    match outcome {
        CheckOutcome::Pass => proto::CheckOutcome::Pass,
        CheckOutcome::Warn => proto::CheckOutcome::Warn,
        CheckOutcome::Fail => proto::CheckOutcome::Fail,
        CheckOutcome::Skipped => proto::CheckOutcome::Skipped,
    }
}
