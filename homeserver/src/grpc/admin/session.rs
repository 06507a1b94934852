//! `conclave.admin.v1.AdminSessionService`: proto <-> domain conversion only.

use super::{AdminApi, authenticate_request, caller_address};
use crate::grpc::timestamp;
use crate::rules::admin_overview::Severity;
use crate::service::admin::authenticate::logout;
use crate::service::admin::login::login;
use crate::service::admin::overview::overview;
use conclave_proto::admin::v1 as proto;
use conclave_proto::admin::v1::admin_session_service_server::AdminSessionService;
use tonic::{Request, Response, Status};

#[tonic::async_trait]
impl AdminSessionService for AdminApi {
    async fn login(
        &self,
        request: Request<proto::AdminLoginRequest>,
    ) -> Result<Response<proto::AdminSession>, Status> {
        let address = caller_address(&request);
        let request = request.into_inner();
        let session = login(&self.context, address, &request.username, request.password).await?;
        Ok(Response::new(proto::AdminSession {
            token: session.token,
            user_id: session.user_id.to_string(),
            expires_at: Some(timestamp(session.expires_at_ms)),
            idle_timeout_seconds: session.idle_timeout_seconds,
        }))
    }

    async fn logout(
        &self,
        request: Request<proto::AdminLogoutRequest>,
    ) -> Result<Response<proto::AdminLogoutResponse>, Status> {
        let session = authenticate_request(&self.context, &request).await?;
        logout(&self.context, &session).await?;
        Ok(Response::new(proto::AdminLogoutResponse {}))
    }

    async fn who_am_i(
        &self,
        request: Request<proto::AdminWhoAmIRequest>,
    ) -> Result<Response<proto::AdminWhoAmIResponse>, Status> {
        let session = authenticate_request(&self.context, &request).await?;
        Ok(Response::new(proto::AdminWhoAmIResponse {
            user_id: session.caller.actor_name(),
            domain: self.context.domain.to_string(),
            created_at: Some(timestamp(session.created_at_ms)),
            expires_at: Some(timestamp(session.expires_at_ms)),
        }))
    }

    async fn get_overview(
        &self,
        request: Request<proto::GetOverviewRequest>,
    ) -> Result<Response<proto::Overview>, Status> {
        authenticate_request(&self.context, &request).await?;
        let overview = overview(&self.context).await?;
        let counts = overview.counts;
        Ok(Response::new(proto::Overview {
            domain: self.context.domain.to_string(),
            active_users: counts.active_users,
            suspended_users: counts.suspended_users,
            deactivated_users: counts.deactivated_users,
            devices: counts.devices,
            hosted_groups: counts.hosted_groups,
            followed_groups: counts.followed_groups,
            usable_registration_tokens: counts.usable_registration_tokens,
            peers: overview.peers,
            peers_failing: overview.peers_failing,
            outbox_depth: overview.outbox_depth,
            devices_low_on_key_packages: overview.devices_low_on_key_packages,
            warnings: overview
                .warnings
                .into_iter()
                .map(|warning| proto::Warning {
                    severity: match warning.severity {
                        Severity::Warning => proto::Severity::Warning,
                        Severity::Critical => proto::Severity::Critical,
                    } as i32,
                    message: warning.message,
                    page: warning.page.to_owned(),
                })
                .collect(),
        }))
    }
}
