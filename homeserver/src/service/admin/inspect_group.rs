//! InspectGroup: one group's state and delivery as this homeserver knows it,
//! without any message content. At the hub, from the group's public MLS state
//! (each leaf's credential names its device and domain) and the rows kept
//! beside it (cursors, log, follower domains); at a follower, from its copy:
//! this domain's member devices only. Read-only, so not audited.

use super::AdminError;
use super::list_groups::AdminGroupSummary;
use crate::rules::group_search::events_behind;
use crate::rules::hub::HubGroup;
use crate::rules::ids::GroupId;
use crate::service::Context;
use crate::store::{self, AdminGroupRecord, MemberCursor};
use std::collections::BTreeMap;

/// A member device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct InspectedMember {
    /// `name@domain/device_id`.
    pub(crate) credential_identity: String,
    /// Its leaf in the ratchet tree; `None` at a follower (no tree here).
    pub(crate) leaf_index: Option<u32>,
    /// Enrolled at this homeserver (which then keeps its cursor).
    pub(crate) local: bool,
    /// For a local device: the last sequence number it acknowledged.
    pub(crate) acknowledged_seq: u64,
    /// For a local device: events it has not acknowledged.
    pub(crate) behind: u64,
    /// For a local device: its latest call, in milliseconds since the Unix epoch.
    pub(crate) last_seen_at_ms: Option<i64>,
}

/// A follower domain of a hosted group and how far it has confirmed the log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct FollowerLag {
    pub(crate) domain: String,
    pub(crate) confirmed_seq: u64,
    /// Events it has yet to confirm (up to the commit that removed its last
    /// device, if one did).
    pub(crate) behind: u64,
}

/// Everything the inspector shows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct GroupInspection {
    pub(crate) group: AdminGroupSummary,
    /// Member devices per domain, by domain.
    pub(crate) members_per_domain: BTreeMap<String, u32>,
    /// Member devices, by leaf (at the hub) or identity (at a follower).
    pub(crate) members: Vec<InspectedMember>,
    /// Entries in the log now (retention prunes the oldest).
    pub(crate) log_length: u64,
    /// The oldest entry still in the log; 0 if the log is empty.
    pub(crate) first_retained_seq: u64,
    pub(crate) last_commit_at_ms: Option<i64>,
    pub(crate) created_at_ms: i64,
    /// The RFC 9420 number of the group's cipher suite; `None` at a follower.
    pub(crate) cipher_suite: Option<u16>,
    /// At the hub: follower domains still receiving the log, by domain.
    pub(crate) followers: Vec<FollowerLag>,
}

/// Inspects the group `group_id` (the MLS group id).
pub(crate) async fn inspect_group(
    context: &Context,
    group_id: &[u8],
) -> Result<GroupInspection, AdminError> {
    if group_id.is_empty() {
        return Err(AdminError::Invalid("group_id is required".to_owned()));
    }
    let group_id = GroupId::from(group_id);
    let record = store::find_admin_group(&context.store, &group_id)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("there is no group {group_id} here")))?;
    let cursors = store::current_member_cursors(&context.store, record.key).await?;
    let mut members = match record.hub_domain {
        None => hub_members(context, &record, &cursors)?,
        Some(_) => follower_members(&record, &cursors),
    };
    let local_devices: Vec<String> = cursors
        .iter()
        .filter(|cursor| cursor.remote_domain.is_none())
        .map(|cursor| cursor.device_id.clone())
        .collect();
    let last_seen = store::devices_last_seen(&context.store, &local_devices).await?;
    for member in members.iter_mut().filter(|member| member.local) {
        member.last_seen_at_ms = cursors
            .iter()
            .find(|cursor| cursor.identity == member.credential_identity)
            .and_then(|cursor| last_seen.iter().find(|(id, _)| *id == cursor.device_id))
            .map(|(_, at_ms)| *at_ms);
    }
    let mut members_per_domain = BTreeMap::<String, u32>::new();
    for member in &members {
        let domain = domain_of(&member.credential_identity);
        *members_per_domain.entry(domain.to_owned()).or_default() += 1;
    }
    let extent = store::log_extent(&context.store, record.key).await?;
    let followers = store::follower_positions(&context.store, record.key)
        .await?
        .into_iter()
        .map(|position| {
            let up_to = position
                .until_seq
                .map_or(record.last_seq.get(), |until| until.get());
            FollowerLag {
                behind: events_behind(up_to, position.delivered_seq.get()),
                confirmed_seq: position.delivered_seq.get(),
                domain: position.domain,
            }
        })
        .collect();
    let cipher_suite = match record.hub_domain {
        None => Some(load_state(&record)?.cipher_suite()),
        Some(_) => None,
    };
    Ok(GroupInspection {
        group: AdminGroupSummary::of(context, &record),
        members_per_domain,
        members,
        log_length: extent.length,
        first_retained_seq: extent.first_seq.map_or(0, |seq| seq.get()),
        last_commit_at_ms: record.last_commit_at_ms,
        created_at_ms: record.created_at_ms,
        cipher_suite,
        followers,
    })
}

/// The domain of `name@domain/device_id`.
fn domain_of(identity: &str) -> &str {
    identity.split_once('@').map_or("", |(_, rest)| {
        rest.split_once('/').map_or(rest, |(domain, _)| domain)
    })
}

fn load_state(record: &AdminGroupRecord) -> Result<HubGroup, AdminError> {
    HubGroup::from_state(&record.state).map_err(|error| {
        AdminError::Internal(format!(
            "the stored state of group {} does not load: {error}",
            record.group_id
        ))
    })
}

/// At the hub: every leaf of the tree, with the cursor of each local device.
fn hub_members(
    context: &Context,
    record: &AdminGroupRecord,
    cursors: &[MemberCursor],
) -> Result<Vec<InspectedMember>, AdminError> {
    let group = load_state(record)?;
    Ok(group
        .members()
        .into_iter()
        .map(|leaf| {
            let identity = leaf.identity.to_string();
            let local = *leaf.identity.user_id().domain() == context.domain;
            let acknowledged_seq = cursors
                .iter()
                .find(|cursor| cursor.identity == identity)
                .filter(|_| local)
                .map_or(0, |cursor| cursor.acked_seq.get());
            InspectedMember {
                credential_identity: identity,
                leaf_index: Some(leaf.leaf_index),
                local,
                acknowledged_seq,
                behind: if local {
                    events_behind(record.last_seq.get(), acknowledged_seq)
                } else {
                    0
                },
                last_seen_at_ms: None,
            }
        })
        .collect())
}

/// At a follower: this domain's member devices, from its member rows.
fn follower_members(record: &AdminGroupRecord, cursors: &[MemberCursor]) -> Vec<InspectedMember> {
    cursors
        .iter()
        .filter(|cursor| cursor.remote_domain.is_none())
        .map(|cursor| InspectedMember {
            credential_identity: cursor.identity.clone(),
            leaf_index: None,
            local: true,
            acknowledged_seq: cursor.acked_seq.get(),
            behind: events_behind(record.last_seq.get(), cursor.acked_seq.get()),
            last_seen_at_ms: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::SystemClock;
    use crate::service::admin::tests::context_on;
    use conclave_test_support::{DatabaseChoice, TestDatabase};
    use std::sync::Arc;

    #[tokio::test]
    async fn an_unknown_or_unnamed_group_is_refused() {
        let database = TestDatabase::create(DatabaseChoice::Sqlite).await;
        let context = context_on(&database, Arc::new(SystemClock)).await;
        let empty = inspect_group(&context, &[]).await;
        assert!(
            matches!(&empty, Err(AdminError::Invalid(message)) if message == "group_id is required"),
            "{empty:?}"
        );
        let unknown = inspect_group(&context, &[0x00, 0xff]).await;
        assert!(
            matches!(&unknown, Err(AdminError::NotFound(message)) if message == "there is no group 00ff here"),
            "{unknown:?}"
        );
    }

    #[test]
    fn the_domain_of_an_identity_is_between_the_at_and_the_slash() {
        assert_eq!(domain_of("alice@a.example/00000000000000a1"), "a.example");
        assert_eq!(domain_of("alice@a.example"), "a.example");
        assert_eq!(domain_of("nonsense"), "");
    }
}
