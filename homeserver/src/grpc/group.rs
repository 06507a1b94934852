//! `conclave.client.v1.GroupService`: proto <-> domain conversion only.

use super::auth::authenticate;
use crate::rules::ids::GroupId;
use crate::service::Context;
use crate::service::groups::{self, Accepted, NewCommit, NewGroup, NewMessage, NewProposal};
use crate::service::routing::{self, GroupSubmission};
use conclave_proto::client::v1 as proto;
use conclave_proto::client::v1::group_service_server::GroupService;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub(crate) struct GroupApi {
    pub(crate) context: Arc<Context>,
}

fn submit_response(accepted: Accepted) -> Response<proto::SubmitResponse> {
    Response::new(proto::SubmitResponse {
        seq: accepted.seq.get(),
        epoch: accepted.epoch.get(),
    })
}

#[tonic::async_trait]
impl GroupService for GroupApi {
    async fn create_group(
        &self,
        request: Request<proto::CreateGroupRequest>,
    ) -> Result<Response<proto::CreateGroupResponse>, Status> {
        let device = authenticate(&self.context, request.metadata()).await?;
        let request = request.into_inner();
        let (group_id, epoch) = groups::create(
            &self.context,
            &device,
            NewGroup {
                idempotency_key: request.idempotency_key,
                group_info: request.group_info,
                ratchet_tree: request.ratchet_tree,
            },
        )
        .await?;
        Ok(Response::new(proto::CreateGroupResponse {
            group_id: group_id.into_bytes(),
            epoch: epoch.get(),
        }))
    }

    async fn submit_commit(
        &self,
        request: Request<proto::SubmitCommitRequest>,
    ) -> Result<Response<proto::SubmitResponse>, Status> {
        let device = authenticate(&self.context, request.metadata()).await?;
        let request = request.into_inner();
        let accepted = routing::submit(
            &self.context,
            &device,
            GroupSubmission::Commit(NewCommit {
                idempotency_key: request.idempotency_key,
                group_id: GroupId::new(request.group_id),
                commit: request.commit,
                welcome: request.welcome,
                group_info: request.group_info,
            }),
        )
        .await?;
        Ok(submit_response(accepted))
    }

    async fn submit_proposal(
        &self,
        request: Request<proto::SubmitProposalRequest>,
    ) -> Result<Response<proto::SubmitResponse>, Status> {
        let device = authenticate(&self.context, request.metadata()).await?;
        let request = request.into_inner();
        let accepted = routing::submit(
            &self.context,
            &device,
            GroupSubmission::Proposal(NewProposal {
                idempotency_key: request.idempotency_key,
                group_id: GroupId::new(request.group_id),
                proposal: request.proposal,
            }),
        )
        .await?;
        Ok(submit_response(accepted))
    }

    async fn send_message(
        &self,
        request: Request<proto::SendMessageRequest>,
    ) -> Result<Response<proto::SubmitResponse>, Status> {
        let device = authenticate(&self.context, request.metadata()).await?;
        let request = request.into_inner();
        let accepted = routing::submit(
            &self.context,
            &device,
            GroupSubmission::Message(NewMessage {
                idempotency_key: request.idempotency_key,
                group_id: GroupId::new(request.group_id),
                message: request.message,
            }),
        )
        .await?;
        Ok(submit_response(accepted))
    }

    async fn get_group_info(
        &self,
        request: Request<proto::GetGroupInfoRequest>,
    ) -> Result<Response<proto::GetGroupInfoResponse>, Status> {
        let device = authenticate(&self.context, request.metadata()).await?;
        let group_id = GroupId::new(request.into_inner().group_id);
        let (group_info, ratchet_tree, epoch) =
            routing::group_info(&self.context, &device, &group_id).await?;
        Ok(Response::new(proto::GetGroupInfoResponse {
            group_info,
            ratchet_tree,
            epoch: epoch.get(),
        }))
    }

    async fn list_groups(
        &self,
        request: Request<proto::ListGroupsRequest>,
    ) -> Result<Response<proto::ListGroupsResponse>, Status> {
        let device = authenticate(&self.context, request.metadata()).await?;
        let summaries = groups::list(&self.context, &device).await?;
        let groups = summaries
            .into_iter()
            .map(|summary| proto::GroupSummary {
                group_id: summary.group_id.into_bytes(),
                epoch: summary.epoch.get(),
                member_count: u32::try_from(summary.member_count).unwrap_or(u32::MAX),
                last_seq: summary.last_seq.get(),
                acked_seq: summary.acked_seq.get(),
            })
            .collect();
        Ok(Response::new(proto::ListGroupsResponse { groups }))
    }
}
