//! `conclave.admin.v1.RegistrationTokenAdminService`: proto <-> domain
//! conversion only.

use super::{AdminApi, authorize};
use crate::grpc::timestamp;
use crate::rules::registration::TokenState;
use crate::service::admin::create_registration_token::create_registration_token;
use crate::service::admin::list_registration_tokens::list_registration_tokens;
use crate::service::admin::registration_token_view::RegistrationTokenView;
use crate::service::admin::revoke_registration_token::revoke_registration_token;
use conclave_proto::admin::v1 as proto;
use conclave_proto::admin::v1::registration_token_admin_service_server::RegistrationTokenAdminService;
use tonic::{Request, Response, Status};

#[tonic::async_trait]
impl RegistrationTokenAdminService for AdminApi {
    async fn create_registration_token(
        &self,
        request: Request<proto::CreateRegistrationTokenRequest>,
    ) -> Result<Response<proto::CreateRegistrationTokenResponse>, Status> {
        let caller = authorize(&self.context, &request).await?;
        let request = request.into_inner();
        let created =
            create_registration_token(&self.context, &caller, request.uses, request.valid_for_days)
                .await?;
        Ok(Response::new(proto::CreateRegistrationTokenResponse {
            token: created.token,
            registration_token: Some(token_to_proto(created.registration_token)),
        }))
    }

    async fn list_registration_tokens(
        &self,
        request: Request<proto::ListRegistrationTokensRequest>,
    ) -> Result<Response<proto::ListRegistrationTokensResponse>, Status> {
        authorize(&self.context, &request).await?;
        let request = request.into_inner();
        let page = list_registration_tokens(
            &self.context,
            request.include_unusable,
            request.page_size,
            &request.page_token,
        )
        .await?;
        Ok(Response::new(proto::ListRegistrationTokensResponse {
            registration_tokens: page
                .registration_tokens
                .into_iter()
                .map(token_to_proto)
                .collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn revoke_registration_token(
        &self,
        request: Request<proto::RevokeRegistrationTokenRequest>,
    ) -> Result<Response<proto::RegistrationToken>, Status> {
        let caller = authorize(&self.context, &request).await?;
        let revoked =
            revoke_registration_token(&self.context, &caller, request.into_inner().id).await?;
        Ok(Response::new(token_to_proto(revoked)))
    }
}

fn token_to_proto(token: RegistrationTokenView) -> proto::RegistrationToken {
    let state = match token.state {
        TokenState::Usable => proto::RegistrationTokenState::Usable,
        TokenState::UsedUp => proto::RegistrationTokenState::UsedUp,
        TokenState::Expired => proto::RegistrationTokenState::Expired,
        TokenState::Revoked => proto::RegistrationTokenState::Revoked,
    };
    proto::RegistrationToken {
        id: token.id,
        uses_allowed: token.uses_allowed,
        uses_count: token.uses_count,
        uses_remaining: token.uses_remaining,
        created_at: Some(timestamp(token.created_at_ms)),
        expires_at: token.expires_at_ms.map(timestamp),
        revoked_at: token.revoked_at_ms.map(timestamp),
        created_by: token.created_by,
        state: state.into(),
    }
}
