//! `conclave.admin.v1.UserAdminService`: proto <-> domain conversion only
//! (`service::admin::users` does the work).

use super::{AdminApi, authorize};
use crate::grpc::timestamp;
use crate::rules::account_state::AccountState;
use crate::service::admin::users::{self, DeviceSummary, GroupMembership, UserDetail, UserSummary};
use conclave_proto::admin::v1 as proto;
use conclave_proto::admin::v1::user_admin_service_server::UserAdminService;
use tonic::{Request, Response, Status};

fn user_to_proto(user: UserSummary) -> proto::User {
    let state = match user.state {
        AccountState::Active => proto::UserState::Active,
        AccountState::Suspended { .. } => proto::UserState::Suspended,
        AccountState::Deactivated { .. } => proto::UserState::Deactivated,
    };
    proto::User {
        user_id: user.user_id.to_string(),
        state: state.into(),
        admin: user.admin,
        created_at: Some(timestamp(user.created_at_ms)),
        last_seen_at: user.last_seen_at_ms.map(timestamp),
        device_count: saturating_u32(user.device_count),
        state_changed_at: user.state.changed_at_ms().map(timestamp),
        state_reason: user.state_reason,
    }
}

fn device_to_proto(device: DeviceSummary) -> proto::Device {
    proto::Device {
        device_id: device.identity.device_id().to_string(),
        credential_identity: device.identity.to_string(),
        display_name: device.display_name,
        created_at: Some(timestamp(device.created_at_ms)),
        last_seen_at: Some(timestamp(device.last_seen_at_ms)),
        key_packages: saturating_u32(device.key_packages),
        has_last_resort: device.has_last_resort,
        groups: saturating_u32(device.groups),
    }
}

fn membership_to_proto(group: GroupMembership) -> proto::GroupMembership {
    proto::GroupMembership {
        group_id: group.group_id,
        name: group.name,
        hub_domain: group.hub_domain,
        device_ids: group.device_ids,
    }
}

fn detail_to_proto(detail: UserDetail) -> proto::UserDetail {
    proto::UserDetail {
        user: Some(user_to_proto(detail.user)),
        devices: detail.devices.into_iter().map(device_to_proto).collect(),
        groups: detail.groups.into_iter().map(membership_to_proto).collect(),
    }
}

fn saturating_u32(count: u64) -> u32 {
    u32::try_from(count).unwrap_or(u32::MAX) // tidy: saturating (4 billion rows)
}

#[tonic::async_trait]
impl UserAdminService for AdminApi {
    async fn list_users(
        &self,
        request: Request<proto::ListUsersRequest>,
    ) -> Result<Response<proto::ListUsersResponse>, Status> {
        authorize(&self.context, &request).await?;
        let request = request.into_inner();
        let page = users::list_users(
            &self.context,
            &request.query,
            request.page_size,
            &request.page_token,
        )
        .await?;
        Ok(Response::new(proto::ListUsersResponse {
            users: page.users.into_iter().map(user_to_proto).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn get_user(
        &self,
        request: Request<proto::GetUserRequest>,
    ) -> Result<Response<proto::UserDetail>, Status> {
        authorize(&self.context, &request).await?;
        let detail = users::get_user(&self.context, &request.get_ref().user_id).await?;
        Ok(Response::new(detail_to_proto(detail)))
    }

    async fn suspend_user(
        &self,
        request: Request<proto::SuspendUserRequest>,
    ) -> Result<Response<proto::User>, Status> {
        let caller = authorize(&self.context, &request).await?;
        let request = request.into_inner();
        let user =
            users::suspend_user(&self.context, &caller, &request.user_id, &request.reason).await?;
        Ok(Response::new(user_to_proto(user)))
    }

    async fn unsuspend_user(
        &self,
        request: Request<proto::UnsuspendUserRequest>,
    ) -> Result<Response<proto::User>, Status> {
        let caller = authorize(&self.context, &request).await?;
        let user =
            users::unsuspend_user(&self.context, &caller, &request.get_ref().user_id).await?;
        Ok(Response::new(user_to_proto(user)))
    }

    async fn deactivate_user(
        &self,
        request: Request<proto::DeactivateUserRequest>,
    ) -> Result<Response<proto::DeactivateUserResponse>, Status> {
        let caller = authorize(&self.context, &request).await?;
        let request = request.into_inner();
        let done =
            users::deactivate_user(&self.context, &caller, &request.user_id, &request.reason)
                .await?;
        Ok(Response::new(proto::DeactivateUserResponse {
            user: Some(user_to_proto(done.user)),
            devices_removed: saturating_u32(done.devices_removed),
            key_packages_deleted: saturating_u32(done.key_packages_deleted),
            groups_left: done.groups_left,
        }))
    }

    async fn list_devices(
        &self,
        request: Request<proto::ListUserDevicesRequest>,
    ) -> Result<Response<proto::ListUserDevicesResponse>, Status> {
        authorize(&self.context, &request).await?;
        let devices = users::list_devices(&self.context, &request.get_ref().user_id).await?;
        Ok(Response::new(proto::ListUserDevicesResponse {
            devices: devices.into_iter().map(device_to_proto).collect(),
        }))
    }

    async fn revoke_device(
        &self,
        request: Request<proto::RevokeDeviceRequest>,
    ) -> Result<Response<proto::RevokeDeviceResponse>, Status> {
        let caller = authorize(&self.context, &request).await?;
        let request = request.into_inner();
        let done =
            users::revoke_device(&self.context, &caller, &request.user_id, &request.device_id)
                .await?;
        Ok(Response::new(proto::RevokeDeviceResponse {
            key_packages_deleted: saturating_u32(done.key_packages_deleted),
            groups_left: done.groups_left,
        }))
    }

    async fn list_low_key_package_stock(
        &self,
        request: Request<proto::ListLowKeyPackageStockRequest>,
    ) -> Result<Response<proto::ListLowKeyPackageStockResponse>, Status> {
        authorize(&self.context, &request).await?;
        let request = request.into_inner();
        let page = users::list_low_stock(
            &self.context,
            request.threshold,
            request.page_size,
            &request.page_token,
        )
        .await?;
        Ok(Response::new(proto::ListLowKeyPackageStockResponse {
            threshold: page.threshold,
            devices: page
                .devices
                .into_iter()
                .map(|device| proto::LowKeyPackageStock {
                    user_id: device.identity.user_id().to_string(),
                    device: Some(device_to_proto(device)),
                })
                .collect(),
            next_page_token: page.next_page_token,
        }))
    }
}
