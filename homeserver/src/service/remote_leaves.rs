//! The hub's Authentication Service check of group leaves that belong to other
//! domains: the leaf's domain is asked (VerifyCredential) whether the identity is
//! one of its devices with that signature key and, for an Add, whether its
//! directory handed out the key package. Asked before the group is locked, so no
//! database lock is held across a network call; positive answers about
//! credentials are cached for a few minutes (a committer's own leaf is in every
//! commit it makes).

use super::Context;
use super::groups::GroupError;
use crate::rules::hub::NewLeaf;
use conclave_federation::client::{CallError, RefusalKind};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// How long a domain's "yes, that is my device with that key" is trusted. A
/// device removed at its homeserver can still be (re)added to a group during
/// this time; it cannot read anything its homeserver does not deliver to it.
const CREDENTIAL_CACHE_TTL_MS: i64 = 5 * 60 * 1000;
/// Most cached answers; when full, expired ones go, then all.
const CREDENTIAL_CACHE_CAPACITY: usize = 10_000;

/// Remembered positive answers: (identity, signature key) -> when verified.
#[derive(Default)]
pub(crate) struct CredentialCache {
    verified: Mutex<HashMap<(String, Vec<u8>), i64>>,
}

impl CredentialCache {
    fn is_fresh(&self, identity: &str, key: &[u8], now_ms: i64) -> bool {
        let verified = self
            .verified
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        verified
            .get(&(identity.to_owned(), key.to_vec()))
            .is_some_and(|at| now_ms - at < CREDENTIAL_CACHE_TTL_MS)
    }

    fn remember(&self, identity: &str, key: &[u8], now_ms: i64) {
        let mut verified = self
            .verified
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if verified.len() >= CREDENTIAL_CACHE_CAPACITY {
            verified.retain(|_, at| now_ms - *at < CREDENTIAL_CACHE_TTL_MS);
            if verified.len() >= CREDENTIAL_CACHE_CAPACITY {
                verified.clear();
            }
        }
        verified.insert((identity.to_owned(), key.to_vec()), now_ms);
    }
}

/// Leaves of other domains that their domains vouched for, for one commit.
#[derive(Debug, Default)]
pub(crate) struct VouchedLeaves {
    leaves: HashSet<(String, Vec<u8>, Option<Vec<u8>>)>,
}

impl VouchedLeaves {
    /// True if the leaf's domain vouched for exactly this leaf (identity, key
    /// and, for an Add, key package).
    pub(crate) fn contains(&self, leaf: &NewLeaf) -> bool {
        self.leaves.contains(&key_of(leaf))
    }
}

fn key_of(leaf: &NewLeaf) -> (String, Vec<u8>, Option<Vec<u8>>) {
    (
        leaf.identity.to_string(),
        leaf.signature_key.clone(),
        leaf.key_package_ref.clone(),
    )
}

/// True if the leaf's domain vouched for its credential recently (an Add also
/// needs its key package checked, so this is for changed leaves only).
pub(crate) fn is_cached(context: &Context, leaf: &NewLeaf) -> bool {
    context.credential_cache.is_fresh(
        &leaf.identity.to_string(),
        &leaf.signature_key,
        context.now_ms(),
    )
}

/// Asks the domains of the remote leaves among `added` (which need their key
/// package checked too) and `changed`. Any "no" refuses the commit.
pub(crate) async fn vouch_for(
    context: &Context,
    added: &[NewLeaf],
    changed: &[NewLeaf],
) -> Result<VouchedLeaves, GroupError> {
    let mut vouched = VouchedLeaves::default();
    let remote = |leaf: &&NewLeaf| leaf.identity.user_id().domain() != &context.domain;
    for leaf in added.iter().filter(remote) {
        check(context, leaf, true).await?;
        vouched.leaves.insert(key_of(leaf));
    }
    for leaf in changed.iter().filter(remote) {
        check(context, leaf, false).await?;
        vouched.leaves.insert(key_of(leaf));
    }
    Ok(vouched)
}

async fn check(context: &Context, leaf: &NewLeaf, is_add: bool) -> Result<(), GroupError> {
    let identity = leaf.identity.to_string();
    let domain = leaf.identity.user_id().domain();
    let Some(federation) = context
        .federation
        .as_ref()
        .filter(|federation| federation.is_peer(domain))
    else {
        return Err(GroupError::ForeignDevice {
            identity,
            domain: domain.to_string(),
        });
    };
    let now_ms = context.now_ms();
    // An Add's key package must be asked about every time; a credential alone
    // may come from the cache.
    if !is_add
        && context
            .credential_cache
            .is_fresh(&identity, &leaf.signature_key, now_ms)
    {
        return Ok(());
    }
    let key_package_ref = if is_add {
        match &leaf.key_package_ref {
            Some(hash_ref) => Some(hash_ref.as_slice()),
            None => return Err(GroupError::UnclaimedKeyPackage { identity }),
        }
    } else {
        None
    };
    let answer = federation
        .check_leaf(&leaf.identity, &leaf.signature_key, key_package_ref)
        .await
        .map_err(|error| match error {
            CallError::Refused {
                kind: RefusalKind::InvalidArgument | RefusalKind::NotFound,
                ..
            } => GroupError::UnregisteredDevice {
                identity: identity.clone(),
            },
            error => GroupError::RemoteCheckFailed {
                identity: identity.clone(),
                reason: error.to_string(),
            },
        })?;
    if !answer.registered {
        return Err(GroupError::UnregisteredDevice { identity });
    }
    context
        .credential_cache
        .remember(&identity, &leaf.signature_key, now_ms);
    if is_add && !answer.key_package_claimed {
        return Err(GroupError::UnclaimedKeyPackage { identity });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_answers_expire() {
        let cache = CredentialCache::default();
        let identity = "bob@b.example/00000000000000b1";
        cache.remember(identity, b"key", 1_000);
        assert!(cache.is_fresh(identity, b"key", 1_000 + CREDENTIAL_CACHE_TTL_MS - 1));
        assert!(!cache.is_fresh(identity, b"key", 1_000 + CREDENTIAL_CACHE_TTL_MS));
        assert!(!cache.is_fresh(identity, b"other key", 1_000));
    }

    #[test]
    fn a_full_cache_drops_expired_answers_first() {
        let cache = CredentialCache::default();
        for n in 0..CREDENTIAL_CACHE_CAPACITY {
            cache.remember(&format!("old{n}@b.example/00000000000000b1"), b"k", 0);
        }
        let now = CREDENTIAL_CACHE_TTL_MS + 1;
        cache.remember("new@b.example/00000000000000b1", b"k", now);
        assert!(cache.is_fresh("new@b.example/00000000000000b1", b"k", now));
        let size = cache.verified.lock().unwrap().len();
        assert_eq!(size, 1);
    }
}
