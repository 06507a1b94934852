//! Registration tokens: the list, creating one (its secret shown once), and
//! revoking one.

use crate::console::{Console, Posted, Session, Visitor};
use crate::failure::{Failure, explain};
use crate::pages::{Layout, Paging, render_with_status, see_other, with_query};
use crate::{AdminApi, view};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use conclave_proto::admin::v1::registration_token_admin_service_server::RegistrationTokenAdminService;
use conclave_proto::admin::v1::{
    CreateRegistrationTokenRequest, ListRegistrationTokensRequest, RegistrationToken,
    RegistrationTokenState, RevokeRegistrationTokenRequest,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

const PAGE_SIZE: u32 = 50;

struct TokenView {
    id: u64,
    state: &'static str,
    usable: bool,
    uses_allowed: u32,
    uses_count: u32,
    uses_remaining: u32,
    created: String,
    expires: String,
    revoked: String,
    created_by: String,
    revoke_action: String,
}

impl TokenView {
    fn new(visitor: &Visitor, token: &RegistrationToken) -> TokenView {
        TokenView {
            id: token.id,
            state: view::token_state(token.state),
            usable: token.state == RegistrationTokenState::Usable as i32,
            uses_allowed: token.uses_allowed,
            uses_count: token.uses_count,
            uses_remaining: token.uses_remaining,
            created: view::timestamp(token.created_at.as_ref()),
            expires: view::timestamp(token.expires_at.as_ref()),
            revoked: view::timestamp_or(token.revoked_at.as_ref(), ""),
            created_by: token.created_by.clone(),
            revoke_action: visitor.path(&format!("/tokens/{}/revoke", token.id)),
        }
    }
}

/// A token just made: the only time its secret is shown.
struct CreatedView {
    secret: String,
    token: TokenView,
}

#[derive(Template)]
#[template(path = "tokens.html")]
struct TokensPage {
    layout: Layout,
    notice: Option<String>,
    /// Why the creation form was refused.
    error: Option<String>,
    created: Option<CreatedView>,
    /// What the creation form held, when shown again.
    uses: String,
    valid_for_days: String,
    include_unusable: bool,
    all_href: String,
    usable_href: String,
    tokens: Vec<TokenView>,
    paging: Paging,
}

#[derive(Serialize, Deserialize, Default)]
pub(crate) struct TokensQuery {
    /// `1` to list spent, expired and revoked tokens too.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    all: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    page: String,
    /// `revoked` after a revocation's redirect.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    done: String,
}

/// What the page shows besides the list.
#[derive(Default)]
struct Extras {
    error: Option<String>,
    created: Option<CreatedView>,
    uses: String,
    valid_for_days: String,
}

async fn page<A: AdminApi>(
    console: &Console<A>,
    visitor: &Visitor,
    session: &Session,
    query: &TokensQuery,
    status: StatusCode,
    extras: Extras,
) -> Result<Response, Failure> {
    let include_unusable = query.all == "1";
    let response = RegistrationTokenAdminService::list_registration_tokens(
        console.api.as_ref(),
        session.request(ListRegistrationTokensRequest {
            include_unusable,
            page_size: PAGE_SIZE,
            page_token: query.page.clone(),
        })?,
    )
    .await?
    .into_inner();
    let link = |all: &str, token: &str| {
        let link = TokensQuery {
            all: all.to_owned(),
            page: token.to_owned(),
            done: String::new(),
        };
        with_query(visitor.path("/tokens"), &link)
    };
    let paging = Paging::new(&query.page, &response.next_page_token, |token| {
        link(&query.all, token)
    });
    let notice = (query.done == "revoked").then(|| "The token is revoked.".to_owned());
    Ok(render_with_status(
        status,
        &TokensPage {
            layout: Layout::new(visitor, "Registration tokens", "tokens"),
            notice,
            error: extras.error,
            created: extras.created,
            uses: extras.uses,
            valid_for_days: extras.valid_for_days,
            include_unusable,
            all_href: link("1", ""),
            usable_href: link("", ""),
            tokens: response
                .registration_tokens
                .iter()
                .map(|token| TokenView::new(visitor, token))
                .collect(),
            paging,
        },
    )?)
}

pub(crate) async fn list<A: AdminApi>(
    State(console): State<Arc<Console<A>>>,
    visitor: Visitor,
    Query(query): Query<TokensQuery>,
) -> Response {
    let result = async {
        let session = visitor.session()?;
        page(
            &console,
            &visitor,
            &session,
            &query,
            StatusCode::OK,
            Extras::default(),
        )
        .await
    }
    .await;
    visitor.finish(result)
}

#[derive(Deserialize)]
pub(crate) struct CreateForm {
    #[serde(default)]
    uses: String,
    #[serde(default)]
    valid_for_days: String,
}

/// A whole number from a form field; empty is 0 (the API's default).
fn parse_count(field: &str, text: &str) -> Result<u32, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(0);
    }
    text.parse()
        .map_err(|_| format!("{field} must be a whole number, not {text:?}"))
}

/// Creates a token. On success this POST answers with the page itself, not a
/// redirect: the secret exists only in this response and must not be put in
/// a URL or stored to survive one.
pub(crate) async fn create<A: AdminApi>(
    State(console): State<Arc<Console<A>>>,
    posted: Posted<CreateForm>,
) -> Response {
    let Posted {
        visitor,
        session,
        form,
    } = posted;
    let result = async {
        let query = TokensQuery::default();
        let again = |message: String| Extras {
            error: Some(message),
            created: None,
            uses: form.uses.clone(),
            valid_for_days: form.valid_for_days.clone(),
        };
        let parsed = parse_count("uses", &form.uses)
            .and_then(|uses| Ok((uses, parse_count("valid for days", &form.valid_for_days)?)));
        let (uses, valid_for_days) = match parsed {
            Ok(numbers) => numbers,
            Err(message) => {
                let status = StatusCode::BAD_REQUEST;
                return page(&console, &visitor, &session, &query, status, again(message)).await;
            }
        };
        let request = session.request(CreateRegistrationTokenRequest {
            uses,
            valid_for_days,
        })?;
        match RegistrationTokenAdminService::create_registration_token(
            console.api.as_ref(),
            request,
        )
        .await
        {
            Ok(response) => {
                let response = response.into_inner();
                let created = response.registration_token.map(|token| CreatedView {
                    secret: response.token,
                    token: TokenView::new(&visitor, &token),
                });
                let extras = Extras {
                    created,
                    ..Extras::default()
                };
                page(&console, &visitor, &session, &query, StatusCode::OK, extras).await
            }
            // The form again with the API's reason, for what the person typed.
            Err(status) if status.code() != tonic::Code::Unauthenticated => {
                let (http, message) = explain(&status);
                page(&console, &visitor, &session, &query, http, again(message)).await
            }
            Err(status) => Err(Failure::from(status)),
        }
    }
    .await;
    visitor.finish(result)
}

pub(crate) async fn revoke<A: AdminApi>(
    State(console): State<Arc<Console<A>>>,
    Path(id): Path<u64>,
    posted: Posted<super::login::NoFields>,
) -> Response {
    let result = async {
        let request = posted
            .session
            .request(RevokeRegistrationTokenRequest { id })?;
        RegistrationTokenAdminService::revoke_registration_token(console.api.as_ref(), request)
            .await?;
        let done = TokensQuery {
            done: "revoked".to_owned(),
            ..TokensQuery::default()
        };
        Ok(see_other(&with_query(
            posted.visitor.path("/tokens"),
            &done,
        )))
    }
    .await;
    posted.visitor.finish(result)
}
