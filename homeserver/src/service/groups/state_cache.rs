//! The hub's parsed public state of the groups it hosts, kept in memory from
//! one commit to the next, so that judging a commit does not read, decode and
//! re-check the whole stored state (at 10,000 members, megabytes of ratchet
//! tree) each time. The database stays the truth: a kept state is used only
//! while it is exactly the stored one (`rules::hub::reuse`), checked under the
//! group's row lock; anything else (another replica's commit or proposal, a
//! restored database) reads the stored state again.
//!
//! A kept state is taken out while a submission uses it and put back only
//! unchanged (the submission was refused) or as the state a committed
//! transaction stored: a commit whose transaction fails leaves nothing here.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use super::super::{Context, InternalError};
use super::GroupError;
use crate::rules::hub::{HubGroup, Reuse, StatePosition, reuse};
use crate::rules::ids::{GroupId, GroupKey};
use crate::store::{self, GroupHeader, Hosting, Transaction};

/// About how many bytes of serialised state the cache keeps; the least
/// recently used groups go first. Each kept group is its parsed openmls
/// state and its serialised parts, about four times its compact serialised
/// size in all (an estimate from openmls's tree, not a measurement), so this
/// is about 256 MB of memory.
const BUDGET_BYTES: usize = 64 << 20;

/// Parsed states of hosted groups, by group row.
pub(crate) struct HubStates {
    inner: Mutex<Kept>,
    budget_bytes: usize,
}

#[derive(Default)]
struct Kept {
    groups: HashMap<GroupKey, KeptState>,
    /// Sum of the entries' `weight`.
    bytes: usize,
    /// Advances with every use, for eviction.
    clock: u64,
}

struct KeptState {
    group_id: GroupId,
    position: StatePosition,
    /// Its serialised size.
    weight: usize,
    last_used: u64,
    group: HubGroup,
}

impl Default for HubStates {
    fn default() -> Self {
        HubStates::with_budget(BUDGET_BYTES)
    }
}

/// A group's parsed state, taken for one submission, and where it stands.
pub(super) struct TakenState {
    pub(super) group: HubGroup,
    /// Its serialised size, known when it was read or last written.
    weight: usize,
}

impl HubStates {
    pub(crate) fn with_budget(budget_bytes: usize) -> HubStates {
        HubStates {
            inner: Mutex::new(Kept::default()),
            budget_bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Kept> {
        // Every change under the lock leaves the map and the byte count
        // consistent before anything can panic.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn take(&self, key: GroupKey) -> Option<KeptState> {
        let mut kept = self.lock();
        let state = kept.groups.remove(&key)?;
        kept.bytes -= state.weight;
        Some(state)
    }

    /// Keeps `group`'s state as stored at `position`, evicting the least
    /// recently used others beyond the budget (a state larger than the whole
    /// budget is not kept).
    fn put(&self, key: GroupKey, group_id: GroupId, position: StatePosition, taken: TakenState) {
        if taken.weight > self.budget_bytes {
            return;
        }
        let mut kept = self.lock();
        kept.clock += 1;
        let state = KeptState {
            group_id,
            position,
            weight: taken.weight,
            last_used: kept.clock,
            group: taken.group,
        };
        kept.bytes += state.weight;
        if let Some(replaced) = kept.groups.insert(key, state) {
            kept.bytes -= replaced.weight;
        }
        while kept.bytes > self.budget_bytes {
            let Some(oldest) = kept
                .groups
                .iter()
                .filter(|(other, _)| **other != key)
                .min_by_key(|(_, state)| state.last_used)
                .map(|(other, _)| *other)
            else {
                break;
            };
            if let Some(evicted) = kept.groups.remove(&oldest) {
                kept.bytes -= evicted.weight;
            }
        }
    }
}

/// Locks a group hosted here for the rest of the transaction, reading its row
/// without the state (see [`take_state`]).
pub(super) async fn lock_hosted_header(
    transaction: &Transaction,
    group_id: &GroupId,
) -> Result<GroupHeader, GroupError> {
    if group_id.is_empty() {
        return Err(GroupError::MissingField("group_id"));
    }
    store::lock_group_header(transaction, group_id, Hosting::HostedHere)
        .await?
        .ok_or_else(|| GroupError::UnknownGroup(group_id.clone()))
}

/// The public state of a locked hosted group: the kept one when it is exactly
/// the stored one, else the stored one, read and parsed.
pub(super) async fn take_state(
    context: &Context,
    transaction: &Transaction,
    header: &GroupHeader,
) -> Result<TakenState, GroupError> {
    let stored = StatePosition {
        epoch: header.epoch,
        seq: header.last_seq,
    };
    if let Some(kept) = context.hub_states.take(header.key)
        && kept.group_id == header.group_id
    {
        let usable = match reuse(kept.position, stored) {
            Reuse::Yes => true,
            Reuse::IfUnchangedBetween { after, up_to } => {
                !store::state_changed_between(transaction, header.key, after, up_to).await?
            }
            Reuse::No => false,
        };
        if usable {
            return Ok(TakenState {
                group: kept.group,
                weight: kept.weight,
            });
        }
    }
    let state = store::hosted_group_state(transaction, header.key)
        .await?
        .ok_or_else(|| GroupError::UnknownGroup(header.group_id.clone()))?;
    let group = HubGroup::from_state(&state).map_err(|error| {
        GroupError::Internal(InternalError::Corrupt(format!(
            "state of group {}: {error}",
            header.group_id
        )))
    })?;
    Ok(TakenState {
        group,
        weight: state.len(),
    })
}

/// Puts back a state taken by [`take_state`] and not changed: the submission
/// was refused, so the stored state is still the one `header` locked.
pub(super) fn keep_unchanged(context: &Context, header: &GroupHeader, taken: TakenState) {
    let position = StatePosition {
        epoch: header.epoch,
        seq: header.last_seq,
    };
    context
        .hub_states
        .put(header.key, header.group_id.clone(), position, taken);
}

/// Keeps the state a committed transaction stored: `state_len` bytes, at
/// `position`.
pub(super) fn keep_committed(
    context: &Context,
    header: &GroupHeader,
    position: StatePosition,
    group: HubGroup,
    state_len: usize,
) {
    let taken = TakenState {
        group,
        weight: state_len,
    };
    context
        .hub_states
        .put(header.key, header.group_id.clone(), position, taken);
}
