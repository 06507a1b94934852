//! The ratchet trees of recent Welcomes. A commit that adds devices of this
//! domain stores the group's new state once, in its Welcome's row
//! (`store::SharedWelcome`), instead of the state and the ratchet tree beside
//! it; the tree is exported from that state when a device reads its Welcome.
//! All the devices a commit adds read the same tree, usually within seconds
//! of each other, so each replica exports it once and keeps it for the
//! others: the newest trees, up to a budget of bytes, the oldest going first.
//! Exports run one at a time, so readers missing the same tree at once wait
//! for the first one's instead of each decoding the state.
//! The state a commit stored never changes, so a kept tree is never stale
//! (as long as the database is not replaced by another under a running
//! server, which the hub's own state cache does not allow for either).

use super::DeliveryError;
use crate::rules::hub::HubGroup;
use crate::rules::ids::{GroupKey, Seq};
use crate::service::InternalError;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Bytes of trees kept: the trees of about 35 recent commits to groups of
/// 1,000 members (about 227 KB each), or 3 to groups of 10,000. The devices a
/// commit adds read its tree at about the same time, so a few suffice; more
/// would stay in memory long after their devices joined.
const BUDGET_BYTES: usize = 8 << 20;

pub(crate) struct WelcomeTrees {
    kept: Mutex<Kept>,
    budget_bytes: usize,
    /// Held while a tree is exported.
    exporting: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Kept {
    /// Oldest first.
    trees: VecDeque<KeptTree>,
    /// Sum of the trees' lengths.
    bytes: usize,
}

struct KeptTree {
    group: GroupKey,
    commit_seq: Seq,
    tree: Arc<Vec<u8>>,
}

impl Default for WelcomeTrees {
    fn default() -> Self {
        WelcomeTrees::with_budget(BUDGET_BYTES)
    }
}

impl WelcomeTrees {
    fn with_budget(budget_bytes: usize) -> WelcomeTrees {
        WelcomeTrees {
            kept: Mutex::default(),
            budget_bytes,
            exporting: tokio::sync::Mutex::new(()),
        }
    }

    /// The ratchet tree of the Welcome of the commit at `commit_seq` in
    /// `group`, whose state after the commit is `state`.
    pub(crate) async fn ratchet_tree(
        &self,
        group: GroupKey,
        commit_seq: Seq,
        state: Vec<u8>,
    ) -> Result<Vec<u8>, DeliveryError> {
        if let Some(tree) = self.find(group, commit_seq) {
            return Ok(tree.as_ref().clone());
        }
        let _exporting = self.exporting.lock().await;
        // Another reader may have exported it while this one waited.
        if let Some(tree) = self.find(group, commit_seq) {
            return Ok(tree.as_ref().clone());
        }
        // At 10,000 members decoding takes tens of milliseconds: off the
        // runtime's threads.
        let exported = tokio::task::spawn_blocking(move || {
            HubGroup::from_state(&state).map(|group| group.ratchet_tree())
        })
        .await;
        let tree = match exported {
            Ok(Ok(tree)) => tree,
            Ok(Err(corrupt)) => {
                return Err(DeliveryError::Internal(InternalError::Corrupt(format!(
                    "the state stored with the Welcome of commit {commit_seq} of group row {}: {corrupt}",
                    group.row_id()
                ))));
            }
            // A bug: the same as if it had panicked here.
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            // Blocking tasks are cancelled only when the runtime shuts down.
            Err(_) => return Err(DeliveryError::ServerStopping),
        };
        self.keep(group, commit_seq, Arc::new(tree.clone()));
        Ok(tree)
    }

    fn find(&self, group: GroupKey, commit_seq: Seq) -> Option<Arc<Vec<u8>>> {
        self.lock()
            .trees
            .iter()
            .find(|kept| kept.group == group && kept.commit_seq == commit_seq)
            .map(|kept| kept.tree.clone())
    }

    fn keep(&self, group: GroupKey, commit_seq: Seq, tree: Arc<Vec<u8>>) {
        if tree.len() > self.budget_bytes {
            return;
        }
        let mut kept = self.lock();
        if kept
            .trees
            .iter()
            .any(|kept| kept.group == group && kept.commit_seq == commit_seq)
        {
            return;
        }
        while kept.bytes + tree.len() > self.budget_bytes {
            let Some(oldest) = kept.trees.pop_front() else {
                break;
            };
            kept.bytes -= oldest.tree.len();
        }
        kept.bytes += tree.len();
        kept.trees.push_back(KeptTree {
            group,
            commit_seq,
            tree,
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        // A panic while holding the lock leaves the list whole: every change
        // to it is a push or pop with its byte count.
        self.kept
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::hub::tests::fixture::GroupFixture;

    #[tokio::test]
    async fn a_tree_is_exported_once_per_commit_and_kept_within_the_budget() {
        let fixture = GroupFixture::with_members(3);
        let state = fixture.hub.to_state();
        let expected = fixture.hub.ratchet_tree();
        let trees = WelcomeTrees::with_budget(2 * expected.len());
        let group = GroupKey::from_row(1);
        for commit_seq in [1, 2, 3] {
            let tree = trees.ratchet_tree(group, Seq::new(commit_seq), state.clone());
            assert_eq!(tree.await.unwrap(), expected);
        }
        // Room for two: the oldest went.
        assert!(trees.find(group, Seq::new(1)).is_none());
        assert!(trees.find(group, Seq::new(2)).is_some());
        assert!(trees.find(group, Seq::new(3)).is_some());
        assert_eq!(trees.lock().bytes, 2 * expected.len());
        // A kept tree is not exported again: a state that does not decode is
        // not even looked at.
        let not_a_state = b"not a state".to_vec();
        let kept = trees.ratchet_tree(group, Seq::new(3), not_a_state.clone());
        assert_eq!(kept.await.unwrap(), expected);
        // Keyed by group too: the same commit number of another group is not
        // this tree.
        let other_group = GroupKey::from_row(2);
        let other = trees.ratchet_tree(other_group, Seq::new(3), not_a_state.clone());
        assert!(other.await.is_err());
        let missing = trees.ratchet_tree(group, Seq::new(4), not_a_state.clone());
        assert!(missing.await.is_err());
        assert!(trees.find(group, Seq::new(4)).is_none());

        // Two readers missing the same tree at once: the second waits for the
        // first one's export and does not decode its own copy of the state (a
        // state that does not decode shows it).
        let (first, second) = tokio::join!(
            trees.ratchet_tree(group, Seq::new(5), state.clone()),
            trees.ratchet_tree(group, Seq::new(5), not_a_state),
        );
        assert_eq!(first.unwrap(), expected);
        assert_eq!(second.unwrap(), expected);
    }
}
