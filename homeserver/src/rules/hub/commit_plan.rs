//! What an accepted commit changes beyond the group's MLS state: who becomes a
//! member, who stops being one, whose inbox gets the Welcome, and what each
//! follower domain must be told. Decided from the validated commit alone, never
//! from a recipient list a client sent.

use super::{CommitDecision, HubRejection};
use conclave_core::ids::{CredentialIdentity, Domain};
use std::collections::BTreeSet;

/// Everything the service writes for an accepted commit, besides the log entry
/// and the group's new state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CommitPlan {
    /// Devices whose membership ends with this commit (their last event).
    pub(crate) removed: Vec<CredentialIdentity>,
    /// Devices that become members with this commit: every Add, and the device
    /// that joined by external commit (without a Welcome).
    pub(crate) joined: Vec<CredentialIdentity>,
    /// Devices of this domain whose inbox gets the Welcome: the added ones. A
    /// Welcome never goes to anybody the commit did not add.
    pub(crate) welcome_recipients: Vec<CredentialIdentity>,
    /// Devices of other domains that joined (true) or were removed (false), each
    /// to be told to its domain with the commit.
    pub(crate) follower_changes: Vec<(CredentialIdentity, bool)>,
    /// Domains other than this one that gain devices: they need the Welcome (once
    /// for all of them) and their outbox cursor started or resumed.
    pub(crate) joined_domains: BTreeSet<Domain>,
    /// Domains other than this one that lose devices and gain none; each stops
    /// receiving after this commit if no device of it is left.
    pub(crate) left_domains: BTreeSet<Domain>,
}

impl CommitPlan {
    /// True if some other domain is concerned by the commit.
    pub(crate) fn concerns_followers(&self) -> bool {
        !self.follower_changes.is_empty()
    }
}

/// Plans the effects of `decision`, submitted by `sender`, at the hub of
/// `own_domain`. `welcome_submitted`: whether the commit came with a Welcome.
pub(crate) fn plan_commit(
    decision: &CommitDecision,
    sender: &CredentialIdentity,
    own_domain: &Domain,
    welcome_submitted: bool,
) -> CommitPlan {
    let is_local = |identity: &CredentialIdentity| identity.user_id().domain() == own_domain;
    let mut joined: Vec<CredentialIdentity> = decision
        .added
        .iter()
        .map(|leaf| leaf.identity.clone())
        .collect();
    if decision.external {
        // The joiner is a new member like an added one, without a Welcome.
        joined.extend(
            decision
                .changed_leaves
                .iter()
                .filter(|leaf| &leaf.identity == sender)
                .map(|leaf| leaf.identity.clone()),
        );
    }
    let welcome_recipients = if welcome_submitted {
        decision
            .added
            .iter()
            .filter(|leaf| leaf.key_package_ref.is_some() && is_local(&leaf.identity))
            .map(|leaf| leaf.identity.clone())
            .collect()
    } else {
        Vec::new()
    };
    let follower_changes: Vec<(CredentialIdentity, bool)> = joined
        .iter()
        .map(|identity| (identity.clone(), true))
        .chain(
            decision
                .removed
                .iter()
                .map(|identity| (identity.clone(), false)),
        )
        .filter(|(identity, _)| !is_local(identity))
        .collect();
    let domains = |added: bool| -> BTreeSet<Domain> {
        follower_changes
            .iter()
            .filter(|(_, is_added)| *is_added == added)
            .map(|(identity, _)| identity.user_id().domain().clone())
            .collect()
    };
    let joined_domains = domains(true);
    let left_domains = domains(false)
        .difference(&joined_domains)
        .cloned()
        .collect();
    CommitPlan {
        removed: decision.removed.clone(),
        joined,
        welcome_recipients,
        follower_changes,
        joined_domains,
        left_domains,
    }
}

/// Refuses a commit that would take the group past `limit` member devices, given
/// `current` members before it.
pub(crate) fn check_group_size(
    current: u64,
    decision: &CommitDecision,
    limit: u64,
) -> Result<(), HubRejection> {
    let would_have = (current + decision.added.len() as u64 + u64::from(decision.external))
        .saturating_sub(decision.removed.len() as u64);
    if would_have > limit {
        return Err(HubRejection::TooManyMembers { would_have, limit });
    }
    Ok(())
}

/// Proposals a group may collect in one epoch: each is kept in the group's
/// state until a commit covers it, so an unbounded number would grow every load
/// and save.
pub(crate) const MAX_PROPOSALS_PER_EPOCH: u64 = 100;

/// Refuses a proposal when `pending` proposals already wait in this epoch.
pub(crate) fn check_proposal_room(pending: u64) -> Result<(), HubRejection> {
    if pending >= MAX_PROPOSALS_PER_EPOCH {
        return Err(HubRejection::TooManyProposals {
            limit: MAX_PROPOSALS_PER_EPOCH,
        });
    }
    Ok(())
}
