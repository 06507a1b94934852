//! `conclave.admin.v1.GroupAdminService`: proto <-> domain conversion only.

use super::{AdminApi, authorize};
use crate::grpc::timestamp;
use crate::service::admin::inspect_group::{GroupInspection, inspect_group};
use crate::service::admin::list_groups::{AdminGroupSummary, list_groups};
use conclave_proto::admin::v1 as proto;
use conclave_proto::admin::v1::group_admin_service_server::GroupAdminService;
use tonic::{Request, Response, Status};

#[tonic::async_trait]
impl GroupAdminService for AdminApi {
    async fn list_groups(
        &self,
        request: Request<proto::ListGroupsRequest>,
    ) -> Result<Response<proto::ListGroupsResponse>, Status> {
        authorize(&self.context, &request).await?;
        let request = request.into_inner();
        let page = list_groups(
            &self.context,
            &request.query,
            request.page_size,
            &request.page_token,
        )
        .await?;
        Ok(Response::new(proto::ListGroupsResponse {
            groups: page.groups.into_iter().map(summary_to_proto).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn inspect_group(
        &self,
        request: Request<proto::InspectGroupRequest>,
    ) -> Result<Response<proto::GroupInspection>, Status> {
        authorize(&self.context, &request).await?;
        let inspection = inspect_group(&self.context, &request.into_inner().group_id).await?;
        Ok(Response::new(inspection_to_proto(inspection)))
    }
}

fn summary_to_proto(summary: AdminGroupSummary) -> proto::GroupSummary {
    proto::GroupSummary {
        group_id: summary.group_id,
        name: summary.name.unwrap_or_default(),
        hub_domain: summary.hub_domain,
        hosted_here: summary.hosted_here,
        epoch: summary.epoch,
        member_devices: saturating_u32(summary.member_devices),
        last_seq: summary.last_seq,
        last_activity_at: Some(timestamp(summary.last_activity_at_ms)),
    }
}

fn inspection_to_proto(inspection: GroupInspection) -> proto::GroupInspection {
    proto::GroupInspection {
        group: Some(summary_to_proto(inspection.group)),
        members_per_domain: inspection
            .members_per_domain
            .into_iter()
            .map(|(domain, devices)| proto::DomainMembers { domain, devices })
            .collect(),
        members: inspection
            .members
            .into_iter()
            .map(|member| proto::MemberDevice {
                credential_identity: member.credential_identity,
                leaf_index: member.leaf_index,
                local: member.local,
                acknowledged_seq: member.acknowledged_seq,
                behind: member.behind,
                last_seen_at: member.last_seen_at_ms.map(timestamp),
            })
            .collect(),
        log_length: inspection.log_length,
        first_retained_seq: inspection.first_retained_seq,
        last_commit_at: inspection.last_commit_at_ms.map(timestamp),
        created_at: Some(timestamp(inspection.created_at_ms)),
        cipher_suite: inspection.cipher_suite.map_or(0, u32::from),
        followers: inspection
            .followers
            .into_iter()
            .map(|follower| proto::FollowerCursor {
                domain: follower.domain,
                confirmed_seq: follower.confirmed_seq,
                behind: follower.behind,
            })
            .collect(),
    }
}

/// A count for a `uint32` field (no group comes near 2^32 devices).
fn saturating_u32(count: u64) -> u32 {
    u32::try_from(count).unwrap_or(u32::MAX) // tidy: saturating (no group has 2^32 devices)
}
