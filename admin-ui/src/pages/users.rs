//! Accounts: the searchable list, one account's page (its devices and groups),
//! and the actions on it: suspend, unsuspend, deactivate (after a
//! confirmation page), and revoke a device.

use crate::console::{Console, Posted, Session, Visitor};
use crate::failure::Failure;
use crate::pages::{Layout, Paging, render, see_other, with_query};
use crate::{AdminApi, view};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use conclave_proto::admin::v1::user_admin_service_server::UserAdminService;
use conclave_proto::admin::v1::{
    DeactivateUserRequest, GetUserRequest, ListUsersRequest, RevokeDeviceRequest,
    SuspendUserRequest, UnsuspendUserRequest, User, UserDetail, UserState,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

const PAGE_SIZE: u32 = 50;

/// An account as a row or a heading shows it.
struct UserView {
    user_id: String,
    href: String,
    state: &'static str,
    admin: bool,
    created: String,
    last_seen: String,
    device_count: u32,
    state_changed: String,
}

impl UserView {
    fn new(visitor: &Visitor, user: &User) -> UserView {
        UserView {
            href: user_href(visitor, &user.user_id),
            user_id: user.user_id.clone(),
            state: view::user_state(user.state),
            admin: user.admin,
            created: view::timestamp(user.created_at.as_ref()),
            last_seen: view::timestamp(user.last_seen_at.as_ref()),
            device_count: user.device_count,
            state_changed: view::timestamp_or(user.state_changed_at.as_ref(), ""),
        }
    }
}

fn user_href(visitor: &Visitor, user_id: &str) -> String {
    visitor.path(&format!("/users/{}", view::segment(user_id)))
}

#[derive(Serialize, Deserialize, Default)]
pub(crate) struct UsersQuery {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    q: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    page: String,
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    layout: Layout,
    query: String,
    users: Vec<UserView>,
    paging: Paging,
}

pub(crate) async fn list<A: AdminApi>(
    State(console): State<Arc<Console<A>>>,
    visitor: Visitor,
    Query(query): Query<UsersQuery>,
) -> Response {
    let result = async {
        let session = visitor.session()?;
        let response = UserAdminService::list_users(
            console.api.as_ref(),
            session.request(ListUsersRequest {
                query: query.q.clone(),
                page_size: PAGE_SIZE,
                page_token: query.page.clone(),
            })?,
        )
        .await?
        .into_inner();
        let paging = Paging::new(&query.page, &response.next_page_token, |token| {
            let link = UsersQuery {
                q: query.q.clone(),
                page: token.to_owned(),
            };
            with_query(visitor.path("/users"), &link)
        });
        render(&UsersPage {
            layout: Layout::new(&visitor, "Users", "users"),
            users: response
                .users
                .iter()
                .map(|user| UserView::new(&visitor, user))
                .collect(),
            query: query.q,
            paging,
        })
    }
    .await;
    visitor.finish(result)
}

/// What the redirect after an action tells the account's page to say. Only
/// these keys and numbers are read, so no text can be injected through it.
#[derive(Serialize, Deserialize, Default)]
pub(crate) struct Done {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    done: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    devices: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_packages: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    groups: Option<u32>,
}

impl Done {
    fn notice(&self) -> Option<String> {
        let count = |value: Option<u32>| value.unwrap_or(0);
        let notice = match self.done.as_deref()? {
            "suspended" => {
                "The account is suspended: its devices are signed out until it is unsuspended."
                    .to_owned()
            }
            "unsuspended" => "The suspension is lifted.".to_owned(),
            "deactivated" => format!(
                "The account is deactivated: {} devices removed, {} key packages deleted, {} groups asked to remove its devices.",
                count(self.devices),
                count(self.key_packages),
                count(self.groups)
            ),
            "device-revoked" => format!(
                "The device is revoked: {} key packages deleted, {} groups asked to remove it.",
                count(self.key_packages),
                count(self.groups)
            ),
            _ => return None,
        };
        Some(notice)
    }
}

struct DeviceView {
    device_id: String,
    credential_identity: String,
    display_name: String,
    created: String,
    last_seen: String,
    key_packages: u32,
    has_last_resort: bool,
    groups: u32,
    revoke_action: String,
}

struct MembershipView {
    group_id: String,
    href: String,
    name: String,
    hub_domain: String,
    device_ids: String,
}

#[derive(Template)]
#[template(path = "user.html")]
struct UserPage {
    layout: Layout,
    notice: Option<String>,
    user: UserView,
    /// The actions that apply to the account's state.
    can_suspend: bool,
    can_unsuspend: bool,
    can_deactivate: bool,
    devices: Vec<DeviceView>,
    groups: Vec<MembershipView>,
}

async fn get_user<A: AdminApi>(
    console: &Console<A>,
    session: &Session,
    user_id: &str,
) -> Result<UserDetail, Failure> {
    Ok(UserAdminService::get_user(
        console.api.as_ref(),
        session.request(GetUserRequest {
            user_id: user_id.to_owned(),
        })?,
    )
    .await?
    .into_inner())
}

pub(crate) async fn detail<A: AdminApi>(
    State(console): State<Arc<Console<A>>>,
    visitor: Visitor,
    Path(user_id): Path<String>,
    Query(done): Query<Done>,
) -> Response {
    let result = async {
        let session = visitor.session()?;
        let detail = get_user(&console, &session, &user_id).await?;
        let user = detail.user.unwrap_or_default();
        let state = UserState::try_from(user.state).unwrap_or_default();
        let user_view = UserView::new(&visitor, &user);
        let devices = detail
            .devices
            .into_iter()
            .map(|device| DeviceView {
                revoke_action: format!(
                    "{}/devices/{}/revoke",
                    user_view.href,
                    view::segment(&device.device_id)
                ),
                created: view::timestamp(device.created_at.as_ref()),
                last_seen: view::timestamp(device.last_seen_at.as_ref()),
                device_id: device.device_id,
                credential_identity: device.credential_identity,
                display_name: device.display_name,
                key_packages: device.key_packages,
                has_last_resort: device.has_last_resort,
                groups: device.groups,
            })
            .collect();
        let groups = detail
            .groups
            .into_iter()
            .map(|membership| {
                let group_id = hex::encode(&membership.group_id);
                MembershipView {
                    href: visitor.path(&format!("/groups/{group_id}")),
                    group_id,
                    name: membership.name,
                    hub_domain: membership.hub_domain,
                    device_ids: membership.device_ids.join(", "),
                }
            })
            .collect();
        render(&UserPage {
            layout: Layout::new(&visitor, &user.user_id, "users"),
            notice: done.notice(),
            can_suspend: state == UserState::Active,
            can_unsuspend: state == UserState::Suspended,
            can_deactivate: state != UserState::Deactivated,
            user: user_view,
            devices,
            groups,
        })
    }
    .await;
    visitor.finish(result)
}

#[derive(Deserialize)]
pub(crate) struct ReasonForm {
    #[serde(default)]
    reason: String,
}

/// The account's page with `done` to say what happened.
fn back_to_user(visitor: &Visitor, user_id: &str, done: &Done) -> Response {
    see_other(&with_query(user_href(visitor, user_id), done))
}

pub(crate) async fn suspend<A: AdminApi>(
    State(console): State<Arc<Console<A>>>,
    Path(user_id): Path<String>,
    posted: Posted<ReasonForm>,
) -> Response {
    let result = async {
        let request = posted.session.request(SuspendUserRequest {
            user_id: user_id.clone(),
            reason: posted.form.reason.clone(),
        })?;
        UserAdminService::suspend_user(console.api.as_ref(), request).await?;
        let done = Done {
            done: Some("suspended".to_owned()),
            ..Done::default()
        };
        Ok(back_to_user(&posted.visitor, &user_id, &done))
    }
    .await;
    posted.visitor.finish(result)
}

pub(crate) async fn unsuspend<A: AdminApi>(
    State(console): State<Arc<Console<A>>>,
    Path(user_id): Path<String>,
    posted: Posted<super::login::NoFields>,
) -> Response {
    let result = async {
        let request = posted.session.request(UnsuspendUserRequest {
            user_id: user_id.clone(),
        })?;
        UserAdminService::unsuspend_user(console.api.as_ref(), request).await?;
        let done = Done {
            done: Some("unsuspended".to_owned()),
            ..Done::default()
        };
        Ok(back_to_user(&posted.visitor, &user_id, &done))
    }
    .await;
    posted.visitor.finish(result)
}

#[derive(Template)]
#[template(path = "deactivate.html")]
struct DeactivatePage {
    layout: Layout,
    user: UserView,
    action: String,
}

pub(crate) async fn confirm_deactivation<A: AdminApi>(
    State(console): State<Arc<Console<A>>>,
    visitor: Visitor,
    Path(user_id): Path<String>,
) -> Response {
    let result = async {
        let session = visitor.session()?;
        let detail = get_user(&console, &session, &user_id).await?;
        let user = UserView::new(&visitor, &detail.user.unwrap_or_default());
        render(&DeactivatePage {
            layout: Layout::new(&visitor, &format!("Deactivate {}", user.user_id), "users"),
            action: format!("{}/deactivate", user.href),
            user,
        })
    }
    .await;
    visitor.finish(result)
}

#[derive(Deserialize)]
pub(crate) struct DeactivateForm {
    #[serde(default)]
    reason: String,
    /// Set by the confirmation page's form: a deactivation is never one click
    /// away from the account's page.
    #[serde(default)]
    confirm: String,
}

pub(crate) async fn deactivate<A: AdminApi>(
    State(console): State<Arc<Console<A>>>,
    Path(user_id): Path<String>,
    posted: Posted<DeactivateForm>,
) -> Response {
    let result = async {
        if posted.form.confirm != "yes" {
            return Err(Failure::BadInput(
                "a deactivation needs its confirmation page: open it from the account's page"
                    .to_owned(),
            ));
        }
        let request = posted.session.request(DeactivateUserRequest {
            user_id: user_id.clone(),
            reason: posted.form.reason.clone(),
        })?;
        let response = UserAdminService::deactivate_user(console.api.as_ref(), request)
            .await?
            .into_inner();
        let done = Done {
            done: Some("deactivated".to_owned()),
            devices: Some(response.devices_removed),
            key_packages: Some(response.key_packages_deleted),
            groups: Some(response.groups_left),
        };
        Ok(back_to_user(&posted.visitor, &user_id, &done))
    }
    .await;
    posted.visitor.finish(result)
}

pub(crate) async fn revoke_device<A: AdminApi>(
    State(console): State<Arc<Console<A>>>,
    Path((user_id, device_id)): Path<(String, String)>,
    posted: Posted<super::login::NoFields>,
) -> Response {
    let result = async {
        let request = posted.session.request(RevokeDeviceRequest {
            user_id: user_id.clone(),
            device_id,
        })?;
        let response = UserAdminService::revoke_device(console.api.as_ref(), request)
            .await?
            .into_inner();
        let done = Done {
            done: Some("device-revoked".to_owned()),
            devices: None,
            key_packages: Some(response.key_packages_deleted),
            groups: Some(response.groups_left),
        };
        Ok(back_to_user(&posted.visitor, &user_id, &done))
    }
    .await;
    posted.visitor.finish(result)
}
