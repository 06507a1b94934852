//! Idempotent submissions: a client-chosen key per device names a submission, so a
//! retry after a lost response returns the original result and writes nothing new.

use crate::rules::ids::{Epoch, GroupKey, Seq};
use crate::store::{self, Connection, StoreError, SubmissionRecord, Transaction};
use sha2::{Digest, Sha256};

/// Shortest and longest idempotency key, in bytes.
pub(crate) const KEY_LENGTH: std::ops::RangeInclusive<usize> = 1..=64;

/// Why an idempotency key cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum IdempotencyError {
    #[error("idempotency_key must be 1 to 64 bytes, got {0}")]
    KeyLength(usize),
    #[error(
        "idempotency_key was already used for a different request; use a new key for a new submission"
    )]
    ReusedWithDifferentBody,
}

/// A submission's key and the hash of its body.
pub(crate) struct Submission<'a> {
    pub(crate) identity: &'a str,
    pub(crate) key: &'a [u8],
    pub(crate) request_hash: Vec<u8>,
}

/// What an earlier identical submission produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) group: GroupKey,
    pub(crate) seq: Seq,
    pub(crate) epoch: Epoch,
}

/// Checks a key's length, for a submission judged elsewhere (relayed to a hub).
pub(crate) fn check_key(key: &[u8]) -> Result<(), IdempotencyError> {
    if KEY_LENGTH.contains(&key.len()) {
        Ok(())
    } else {
        Err(IdempotencyError::KeyLength(key.len()))
    }
}

impl<'a> Submission<'a> {
    /// `parts` are the request's fields; each is length-prefixed before hashing so
    /// that no two different requests hash alike.
    pub(crate) fn new(
        identity: &'a str,
        key: &'a [u8],
        kind: &str,
        parts: &[&[u8]],
    ) -> Result<Submission<'a>, IdempotencyError> {
        check_key(key)?;
        let mut hasher = Sha256::new();
        hasher.update(kind.as_bytes());
        for part in parts {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        Ok(Submission {
            identity,
            key,
            request_hash: hasher.finalize().to_vec(),
        })
    }

    /// The earlier result of this exact submission, if there is one.
    pub(crate) async fn previous_outcome(
        &self,
        db: &impl Connection,
    ) -> Result<Option<Result<Outcome, IdempotencyError>>, StoreError> {
        let Some(record) = store::find_submission(db, self.identity, self.key).await? else {
            return Ok(None);
        };
        if record.request_hash != self.request_hash {
            return Ok(Some(Err(IdempotencyError::ReusedWithDifferentBody)));
        }
        Ok(Some(Ok(Outcome {
            group: record.group,
            seq: record.seq,
            epoch: record.epoch,
        })))
    }

    /// Records the result, in the transaction that produced it.
    pub(crate) async fn record(
        &self,
        db: &Transaction,
        outcome: Outcome,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        store::insert_submission(
            db,
            SubmissionRecord {
                identity: self.identity.to_owned(),
                idempotency_key: self.key.to_vec(),
                request_hash: self.request_hash.clone(),
                group: outcome.group,
                seq: outcome.seq,
                epoch: outcome.epoch,
                created_at_ms: now_ms,
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_hashes() {
        assert_eq!(
            Submission::new("a", b"", "commit", &[]).err(),
            Some(IdempotencyError::KeyLength(0))
        );
        assert!(Submission::new("a", &[1; 65], "commit", &[]).is_err());
        let hash = |kind, parts: &[&[u8]]| {
            Submission::new("a", b"k", kind, parts)
                .unwrap()
                .request_hash
        };
        assert_eq!(
            hash("commit", &[b"ab", b"c"]),
            hash("commit", &[b"ab", b"c"])
        );
        assert_ne!(
            hash("commit", &[b"ab", b"c"]),
            hash("commit", &[b"a", b"bc"])
        );
        assert_ne!(hash("commit", &[b"x"]), hash("message", &[b"x"]));
    }
}
