//! Carrying out an accepted commit's plan (`rules::hub::plan_commit`): member
//! rows, Welcomes in the added devices' inboxes, and for follower domains the
//! membership changes, one Welcome copy and their outbox cursors. Also the
//! directory checks a commit's new local leaves must pass first.

use super::super::Context;
use super::GroupError;
use crate::rules::federation::{cursor_on_join, cursor_on_last_leave};
use crate::rules::hub::{CommitDecision, CommitPlan, NewLeaf};
use crate::rules::ids::{GroupKey, Seq};
use crate::store::{self, MembershipChangeRecord, NewMember, SharedWelcome, Transaction};
use conclave_core::ids::CredentialIdentity;

/// The submitted Welcome of a commit, as its plan stores it.
pub(super) struct PlannedWelcomes<'a> {
    /// For the devices of this domain it adds: the Welcome and the group's
    /// new state, which their ratchet tree is exported from when read (and
    /// which the group's row points at: `NewState::BesideWelcome`).
    pub(super) shared: Option<(&'a [u8], &'a [u8])>,
    /// For follower domains it adds devices of: the Welcome and the new
    /// epoch's ratchet tree itself.
    pub(super) remote: Option<(&'a [u8], &'a [u8])>,
}

/// Writes the plan of the commit at `seq`, with its Welcome if it came with one.
pub(super) async fn apply_plan(
    context: &Context,
    transaction: &Transaction,
    group: GroupKey,
    seq: Seq,
    plan: &CommitPlan,
    welcomes: PlannedWelcomes<'_>,
) -> Result<(), GroupError> {
    for identity in &plan.removed {
        store::mark_removed(transaction, group, &identity.to_string(), seq).await?;
    }
    add_members(context, transaction, group, &plan.joined, seq).await?;
    if let Some((welcome, state)) = welcomes.shared {
        // One copy of the Welcome and state for every added device of this domain.
        let mut recipients: Vec<&str> = plan
            .welcome_recipients
            .iter()
            .map(|recipient| recipient.device_id().as_str())
            .collect();
        recipients.sort_unstable();
        recipients.dedup();
        let shared = SharedWelcome {
            group,
            commit_seq: seq,
            welcome,
            state,
            now_ms: context.now_ms(),
        };
        store::append_shared_welcome(transaction, shared, &recipients).await?;
    }
    if let Some((welcome, ratchet_tree)) = welcomes.remote {
        store::insert_remote_welcome(transaction, group, seq, welcome, ratchet_tree).await?;
    }
    for (identity, added) in &plan.follower_changes {
        let change = MembershipChangeRecord {
            group,
            seq,
            identity: identity.to_string(),
            domain: identity.user_id().domain().to_string(),
            added: *added,
        };
        store::insert_membership_change(transaction, change).await?;
    }
    for domain in &plan.joined_domains {
        let existing = store::find_peer_cursor(transaction, group, domain.as_str()).await?;
        if let Some(cursor) = cursor_on_join(existing, seq) {
            store::save_peer_cursor(transaction, group, domain.as_str(), cursor).await?;
        }
    }
    if !plan.left_domains.is_empty() {
        let still_members = store::remote_domains_with_members(transaction, group).await?;
        for domain in &plan.left_domains {
            if still_members.iter().any(|member| member == domain.as_str()) {
                continue;
            }
            let existing = store::find_peer_cursor(transaction, group, domain.as_str()).await?;
            if let Some(cursor) = cursor_on_last_leave(existing, seq) {
                store::save_peer_cursor(transaction, group, domain.as_str(), cursor).await?;
            }
        }
    }
    Ok(())
}

/// The member rows of the devices a commit adds, with multi-row statements.
async fn add_members(
    context: &Context,
    transaction: &Transaction,
    group: GroupKey,
    joined: &[CredentialIdentity],
    joined_after_seq: Seq,
) -> Result<(), GroupError> {
    let names: Vec<(String, String, Option<String>)> = joined
        .iter()
        .map(|identity| {
            let domain = identity.user_id().domain();
            let remote_domain = (domain != &context.domain).then(|| domain.to_string());
            (
                identity.to_string(),
                identity.user_id().to_string(),
                remote_domain,
            )
        })
        .collect();
    let members: Vec<NewMember<'_>> = joined
        .iter()
        .zip(&names)
        .map(|(identity, (name, user_id, remote_domain))| NewMember {
            identity: name,
            user_id,
            device_id: identity.device_id().as_str(),
            joined_after_seq,
            remote_domain: remote_domain.as_deref(),
        })
        .collect();
    store::upsert_members(transaction, group, &members).await?;
    Ok(())
}

/// Every new or changed leaf of this domain must be a device registered here with
/// exactly that signature key, and every Add of one must use a key package the
/// directory handed out. (Leaves of other domains were vouched for by theirs.)
/// Two statements for up to 500 leaves; the first leaf that fails, in the
/// commit's order, is the one named.
pub(super) async fn check_local_leaves(
    context: &Context,
    transaction: &Transaction,
    decision: &CommitDecision,
) -> Result<(), GroupError> {
    let is_local = |leaf: &&NewLeaf| leaf.identity.user_id().domain() == &context.domain;
    let device_id = |leaf: &NewLeaf| leaf.identity.device_id().as_str().to_owned();
    let leaves: Vec<&NewLeaf> = decision
        .added
        .iter()
        .chain(&decision.changed_leaves)
        .filter(is_local)
        .collect();
    if leaves.is_empty() {
        return Ok(());
    }
    let device_ids: Vec<&str> = leaves
        .iter()
        .map(|leaf| leaf.identity.device_id().as_str())
        .collect();
    let registered = store::device_keys(transaction, &device_ids).await?;
    for leaf in &leaves {
        let has_key = registered
            .get(leaf.identity.device_id().as_str())
            .is_some_and(|device| {
                device.username == leaf.identity.user_id().username().as_str()
                    && device.signature_public_key == leaf.signature_key
            });
        if !has_key {
            return Err(GroupError::UnregisteredDevice {
                identity: leaf.identity.to_string(),
            });
        }
    }
    let added: Vec<&NewLeaf> = decision.added.iter().filter(is_local).collect();
    let packages: Vec<(&[u8], &str)> = added
        .iter()
        .filter_map(|leaf| {
            let hash_ref = leaf.key_package_ref.as_deref()?;
            Some((hash_ref, leaf.identity.device_id().as_str()))
        })
        .collect();
    let handed_out = if packages.is_empty() {
        Default::default()
    } else {
        store::handed_out_key_packages(transaction, &packages).await?
    };
    for leaf in added {
        let claimed = leaf
            .key_package_ref
            .as_ref()
            .is_some_and(|hash_ref| handed_out.contains(&(hash_ref.clone(), device_id(leaf))));
        if !claimed {
            return Err(GroupError::UnclaimedKeyPackage {
                identity: leaf.identity.to_string(),
            });
        }
    }
    Ok(())
}
