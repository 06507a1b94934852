//! Groups: search by group id (hex prefix) or member, and the inspector of one
//! group's public state and delivery (never any message content).

use crate::console::{Console, Visitor};
use crate::failure::Failure;
use crate::pages::{Layout, Paging, render, with_query};
use crate::{AdminApi, view};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use conclave_proto::admin::v1::group_admin_service_server::GroupAdminService;
use conclave_proto::admin::v1::{GroupSummary, InspectGroupRequest, ListGroupsRequest};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

const PAGE_SIZE: u32 = 50;

struct GroupView {
    group_id: String,
    href: String,
    name: String,
    hub_domain: String,
    hosted_here: bool,
    epoch: u64,
    member_devices: u32,
    last_seq: u64,
    last_activity: String,
}

impl GroupView {
    fn new(visitor: &Visitor, group: &GroupSummary) -> GroupView {
        let group_id = hex::encode(&group.group_id);
        GroupView {
            href: visitor.path(&format!("/groups/{group_id}")),
            group_id,
            name: group.name.clone(),
            hub_domain: group.hub_domain.clone(),
            hosted_here: group.hosted_here,
            epoch: group.epoch,
            member_devices: group.member_devices,
            last_seq: group.last_seq,
            last_activity: view::timestamp(group.last_activity_at.as_ref()),
        }
    }
}

#[derive(Serialize, Deserialize, Default)]
pub(crate) struct GroupsQuery {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    q: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    page: String,
}

#[derive(Template)]
#[template(path = "groups.html")]
struct GroupsPage {
    layout: Layout,
    query: String,
    groups: Vec<GroupView>,
    paging: Paging,
}

pub(crate) async fn list<A: AdminApi>(
    State(console): State<Arc<Console<A>>>,
    visitor: Visitor,
    Query(query): Query<GroupsQuery>,
) -> Response {
    let result = async {
        let session = visitor.session()?;
        let response = GroupAdminService::list_groups(
            console.api.as_ref(),
            session.request(ListGroupsRequest {
                query: query.q.trim().to_owned(),
                page_size: PAGE_SIZE,
                page_token: query.page.clone(),
            })?,
        )
        .await?
        .into_inner();
        let paging = Paging::new(&query.page, &response.next_page_token, |token| {
            let link = GroupsQuery {
                q: query.q.clone(),
                page: token.to_owned(),
            };
            with_query(visitor.path("/groups"), &link)
        });
        render(&GroupsPage {
            layout: Layout::new(&visitor, "Groups", "groups"),
            groups: response
                .groups
                .iter()
                .map(|group| GroupView::new(&visitor, group))
                .collect(),
            query: query.q,
            paging,
        })
    }
    .await;
    visitor.finish(result)
}

struct MemberView {
    credential_identity: String,
    user_href: Option<String>,
    leaf_index: String,
    local: bool,
    acknowledged_seq: u64,
    behind: u64,
    last_seen: String,
}

#[derive(Template)]
#[template(path = "group.html")]
struct GroupPage {
    layout: Layout,
    group: GroupView,
    cipher_suite: u32,
    log_length: u64,
    first_retained_seq: u64,
    last_commit: String,
    created: String,
    /// `(domain, devices)` per domain.
    domains: Vec<(String, u32)>,
    members: Vec<MemberView>,
    /// `(domain, confirmed seq, behind)` per follower.
    followers: Vec<(String, u64, u64)>,
}

pub(crate) async fn inspect<A: AdminApi>(
    State(console): State<Arc<Console<A>>>,
    visitor: Visitor,
    Path(group_id): Path<String>,
) -> Response {
    let result = async {
        let session = visitor.session()?;
        let group_id_bytes = hex::decode(&group_id).map_err(|_| {
            Failure::BadInput(format!("{group_id:?} is not a group id (hex digits)"))
        })?;
        let inspection = GroupAdminService::inspect_group(
            console.api.as_ref(),
            session.request(InspectGroupRequest {
                group_id: group_id_bytes,
            })?,
        )
        .await?
        .into_inner();
        let group = GroupView::new(&visitor, &inspection.group.unwrap_or_default());
        let members = inspection
            .members
            .into_iter()
            .map(|member| MemberView {
                // `name@domain/device`: a local member's account has a page.
                user_href: member
                    .local
                    .then(|| member.credential_identity.split('/').next())
                    .flatten()
                    .map(|user_id| visitor.path(&format!("/users/{}", view::segment(user_id)))),
                leaf_index: member
                    .leaf_index
                    .map(|index| index.to_string())
                    .unwrap_or_default(),
                local: member.local,
                acknowledged_seq: member.acknowledged_seq,
                behind: member.behind,
                last_seen: view::timestamp_or(member.last_seen_at.as_ref(), ""),
                credential_identity: member.credential_identity,
            })
            .collect();
        render(&GroupPage {
            layout: Layout::new(&visitor, &format!("Group {}", group.group_id), "groups"),
            cipher_suite: inspection.cipher_suite,
            log_length: inspection.log_length,
            first_retained_seq: inspection.first_retained_seq,
            last_commit: view::timestamp(inspection.last_commit_at.as_ref()),
            created: view::timestamp(inspection.created_at.as_ref()),
            domains: inspection
                .members_per_domain
                .into_iter()
                .map(|domain| (domain.domain, domain.devices))
                .collect(),
            members,
            followers: inspection
                .followers
                .into_iter()
                .map(|follower| (follower.domain, follower.confirmed_seq, follower.behind))
                .collect(),
            group,
        })
    }
    .await;
    visitor.finish(result)
}
