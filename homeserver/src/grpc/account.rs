//! `conclave.client.v1.AccountService`: proto <-> domain conversion only.

use super::auth::authenticate;
use super::status::missing_field;
use super::timestamp;
use crate::rules::attempt_limits::Source;
use crate::service::Context;
use crate::service::accounts::{self, Enrolment, Login, Registration, Session};
use conclave_proto::client::v1 as proto;
use conclave_proto::client::v1::account_service_server::AccountService;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub(crate) struct AccountApi {
    pub(crate) context: Arc<Context>,
}

fn enrolment(device: Option<proto::DeviceEnrolment>) -> Result<Enrolment, Status> {
    let device = device.ok_or_else(|| missing_field("device"))?;
    Ok(Enrolment {
        signature_public_key: device.signature_public_key,
        display_name: device.display_name,
        challenge: device.challenge,
        possession_signature: device.possession_signature,
    })
}

/// Where a request comes from, for the attempt limits: the TCP peer's address
/// (behind a load balancer, the balancer's unless it preserves client addresses
/// at the IP level; no header such as `X-Forwarded-For` is trusted).
fn source_of<T>(request: &Request<T>) -> Source {
    request
        .remote_addr()
        .map_or(Source::Unknown, |address| Source::of(address.ip()))
}

fn session_to_proto(session: Session) -> proto::Session {
    proto::Session {
        user_id: session.identity.user_id().to_string(),
        device_id: session.identity.device_id().to_string(),
        access_token: session.access_token,
        credential_identity: session.identity.to_string(),
    }
}

#[tonic::async_trait]
impl AccountService for AccountApi {
    async fn begin_enrolment(
        &self,
        _request: Request<proto::BeginEnrolmentRequest>,
    ) -> Result<Response<proto::EnrolmentChallenge>, Status> {
        let begun = accounts::begin_enrolment(&self.context).await?;
        Ok(Response::new(proto::EnrolmentChallenge {
            challenge: begun.challenge.bytes,
            expires_at: Some(timestamp(begun.challenge.expires_at_ms)),
            domain: begun.domain.to_string(),
        }))
    }

    async fn register(
        &self,
        request: Request<proto::RegisterRequest>,
    ) -> Result<Response<proto::Session>, Status> {
        let source = source_of(&request);
        let request = request.into_inner();
        let registration = Registration {
            username: request.username,
            password: request.password,
            registration_token: request.registration_token,
            device: enrolment(request.device)?,
        };
        let session = accounts::register(&self.context, source, registration).await?;
        Ok(Response::new(session_to_proto(session)))
    }

    async fn login(
        &self,
        request: Request<proto::LoginRequest>,
    ) -> Result<Response<proto::Session>, Status> {
        let source = source_of(&request);
        let request = request.into_inner();
        let login = Login {
            username: request.username,
            password: request.password,
            device: enrolment(request.device)?,
        };
        let session = accounts::login(&self.context, source, login).await?;
        Ok(Response::new(session_to_proto(session)))
    }

    async fn logout(
        &self,
        request: Request<proto::LogoutRequest>,
    ) -> Result<Response<proto::LogoutResponse>, Status> {
        let device = authenticate(&self.context, request.metadata()).await?;
        accounts::logout(&self.context, &device).await?;
        Ok(Response::new(proto::LogoutResponse {}))
    }

    async fn who_am_i(
        &self,
        request: Request<proto::WhoAmIRequest>,
    ) -> Result<Response<proto::WhoAmIResponse>, Status> {
        let device = authenticate(&self.context, request.metadata()).await?;
        Ok(Response::new(proto::WhoAmIResponse {
            user_id: device.user_id().to_string(),
            device_id: device.device_id().to_string(),
            credential_identity: device.identity.to_string(),
        }))
    }

    async fn list_devices(
        &self,
        request: Request<proto::ListDevicesRequest>,
    ) -> Result<Response<proto::ListDevicesResponse>, Status> {
        let caller = authenticate(&self.context, request.metadata()).await?;
        let devices = accounts::list_devices(&self.context, &caller).await?;
        let listed = devices
            .into_iter()
            .map(|device| proto::Device {
                device_id: device.device_id.to_string(),
                display_name: device.display_name,
                signature_public_key: device.signature_public_key,
                created_at: Some(timestamp(device.created_at_ms)),
                last_seen_at: Some(timestamp(device.last_seen_at_ms)),
                key_packages_available: u32::try_from(device.key_packages_available)
                    .unwrap_or(u32::MAX),
                current: device.current,
            })
            .collect();
        Ok(Response::new(proto::ListDevicesResponse {
            devices: listed,
        }))
    }

    async fn remove_device(
        &self,
        request: Request<proto::RemoveDeviceRequest>,
    ) -> Result<Response<proto::RemoveDeviceResponse>, Status> {
        let caller = authenticate(&self.context, request.metadata()).await?;
        let device_id = request.into_inner().device_id;
        if device_id.is_empty() {
            return Err(missing_field("device_id"));
        }
        accounts::remove_device(&self.context, &caller, &device_id).await?;
        Ok(Response::new(proto::RemoveDeviceResponse {}))
    }
}
