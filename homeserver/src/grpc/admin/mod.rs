//! `conclave.admin.v1`, the admin API: tonic only. One struct, [`AdminApi`],
//! implements the six services, one file per service (`session`, `users`,
//! `registration_tokens`, `groups`, `federation`, `audit`); this module
//! authenticates the admin session of every call ([`authorize`]) and adds the
//! services to the client port's router ([`add_services`]) when
//! `[admin] enabled`. The errors of `service::admin` become statuses in
//! `grpc/status.rs`, with every other mapping.
//!
//! The web console (`admin-ui`) calls the same services in-process, passing
//! its browser's address as a [`CallerAddress`] request extension.

mod audit;
mod federation;
mod groups;
mod registration_tokens;
mod session;
mod users;

use super::auth::bearer_token;
use crate::service::Context;
use crate::service::admin::AdminCaller;
use crate::service::admin::authenticate::{AuthenticatedSession, authenticate};
use conclave_proto::admin::CallerAddress;
use std::net::IpAddr;
use std::sync::Arc;
use tonic::transport::server::Router;
use tonic::{Request, Status};

/// The admin API's services, all in one: each file of this module implements
/// one of the tonic traits on it.
#[derive(Clone)]
pub(crate) struct AdminApi {
    pub(crate) context: Arc<Context>,
}

/// The names of the admin API's services, for the client port's metrics and
/// spans (`grpc::client_api_methods`). All six, served or not: a call of a
/// service that is not served answers UNIMPLEMENTED, and is counted under
/// its name.
pub(crate) fn service_names() -> [&'static str; 6] {
    use conclave_proto::admin::v1 as proto;
    [
        proto::admin_session_service_server::SERVICE_NAME,
        proto::user_admin_service_server::SERVICE_NAME,
        proto::registration_token_admin_service_server::SERVICE_NAME,
        proto::group_admin_service_server::SERVICE_NAME,
        proto::federation_admin_service_server::SERVICE_NAME,
        proto::audit_service_server::SERVICE_NAME,
    ]
}

/// Adds the admin API's services to the client port's `router`, unless
/// `[admin] enabled` is false: then none is added, and tonic answers every
/// admin call UNIMPLEMENTED.
pub(crate) fn add_services<L>(router: Router<L>, context: &Arc<Context>) -> Router<L> {
    if !context.config.admin.enabled {
        return router;
    }
    use conclave_proto::admin::v1::admin_session_service_server::AdminSessionServiceServer;
    use conclave_proto::admin::v1::audit_service_server::AuditServiceServer;
    use conclave_proto::admin::v1::federation_admin_service_server::FederationAdminServiceServer;
    use conclave_proto::admin::v1::group_admin_service_server::GroupAdminServiceServer;
    use conclave_proto::admin::v1::registration_token_admin_service_server::RegistrationTokenAdminServiceServer;
    use conclave_proto::admin::v1::user_admin_service_server::UserAdminServiceServer;
    let api = AdminApi {
        context: context.clone(),
    };
    let max_message_bytes = context.config.client_api.max_message_bytes;
    // One line per service.
    router
        .add_service(
            AdminSessionServiceServer::new(api.clone())
                .max_decoding_message_size(max_message_bytes),
        )
        .add_service(
            GroupAdminServiceServer::new(api.clone()).max_decoding_message_size(max_message_bytes),
        )
        .add_service(
            RegistrationTokenAdminServiceServer::new(api.clone())
                .max_decoding_message_size(max_message_bytes),
        )
        .add_service(
            UserAdminServiceServer::new(api.clone()).max_decoding_message_size(max_message_bytes),
        )
        .add_service(
            FederationAdminServiceServer::new(api.clone())
                .max_decoding_message_size(max_message_bytes),
        )
        .add_service(AuditServiceServer::new(api).max_decoding_message_size(max_message_bytes))
}

/// The admin session of `request`'s bearer token, as the caller of an admin
/// action with its address (the [`CallerAddress`] extension the console
/// sets, or else the connection's remote address). UNAUTHENTICATED without
/// a token, or for an unknown, expired or ended session.
pub(crate) async fn authorize<T>(
    context: &Context,
    request: &Request<T>,
) -> Result<AdminCaller, Status> {
    Ok(authenticate_request(context, request).await?.caller)
}

/// [`authorize`], keeping what the session calls need of the session.
async fn authenticate_request<T>(
    context: &Context,
    request: &Request<T>,
) -> Result<AuthenticatedSession, Status> {
    let token = bearer_token(request.metadata());
    Ok(authenticate(context, token, caller_address(request)).await?)
}

/// Where an admin call comes from: the console's browser (the extension the
/// console sets; a remote caller cannot set extensions), else the TCP peer.
pub(crate) fn caller_address<T>(request: &Request<T>) -> Option<IpAddr> {
    request
        .extensions()
        .get::<CallerAddress>()
        .map(|address| address.0)
        .or_else(|| request.remote_addr().map(|address| address.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_names_its_browser_and_a_remote_caller_its_connection() {
        let browser: IpAddr = "203.0.113.5".parse().unwrap();
        let mut request = Request::new(());
        assert_eq!(caller_address(&request), None);
        request.extensions_mut().insert(CallerAddress(browser));
        assert_eq!(caller_address(&request), Some(browser));
    }
}
