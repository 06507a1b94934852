//! Queries for idempotency records: the outcome of each accepted submission, by
//! the submitting device and its idempotency key.

use super::convert::{epoch_to_db, seq_to_db, to_epoch, to_seq};
use super::entities::submission;
use super::{Connection, StoreError, Transaction};
use crate::rules::ids::{Epoch, GroupKey, Seq};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, Set};

/// An accepted submission's outcome, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SubmissionRecord {
    /// The submitting device's credential identity.
    pub(crate) identity: String,
    pub(crate) idempotency_key: Vec<u8>,
    /// SHA-256 of the request body, to refuse a reused key with another body.
    pub(crate) request_hash: Vec<u8>,
    pub(crate) group: GroupKey,
    pub(crate) seq: Seq,
    pub(crate) epoch: Epoch,
    pub(crate) created_at_ms: i64,
}

pub(crate) async fn find_submission(
    db: &impl Connection,
    identity: &str,
    idempotency_key: &[u8],
) -> Result<Option<SubmissionRecord>, StoreError> {
    let Some(model) = submission::Entity::find()
        .filter(submission::Column::Identity.eq(identity))
        .filter(submission::Column::IdempotencyKey.eq(idempotency_key.to_vec()))
        .one(db.database())
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(to_record(model)?))
}

/// The recorded submissions among these `(identity, idempotency_key)` pairs
/// (one statement for a batch; the pairs are matched exactly here, the
/// statement narrows by each column's set).
pub(crate) async fn find_submissions(
    db: &impl Connection,
    keys: &[(&str, &[u8])],
) -> Result<Vec<SubmissionRecord>, StoreError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let models = submission::Entity::find()
        .filter(submission::Column::Identity.is_in(keys.iter().map(|(identity, _)| *identity)))
        .filter(submission::Column::IdempotencyKey.is_in(keys.iter().map(|(_, key)| key.to_vec())))
        .all(db.database())
        .await?;
    models
        .into_iter()
        .filter(|model| {
            keys.iter().any(|(identity, key)| {
                model.identity == *identity && model.idempotency_key.as_slice() == *key
            })
        })
        .map(to_record)
        .collect()
}

fn to_record(model: submission::Model) -> Result<SubmissionRecord, StoreError> {
    let row = format!("submission of {}", model.identity);
    Ok(SubmissionRecord {
        group: GroupKey::from_row(model.group_id),
        seq: to_seq(model.seq, &row, "seq")?,
        epoch: to_epoch(model.epoch, &row, "epoch")?,
        identity: model.identity,
        idempotency_key: model.idempotency_key,
        request_hash: model.request_hash,
        created_at_ms: model.created_at_ms,
    })
}

/// Records several outcomes in one multi-row statement (a batch of
/// application messages).
pub(crate) async fn insert_submissions(
    db: &Transaction,
    records: Vec<SubmissionRecord>,
) -> Result<(), StoreError> {
    // Four short columns and two keys of at most 64 bytes each: 100 rows stay
    // small statements (see `store::log`).
    for chunk in records.chunks(100) {
        let rows = chunk
            .iter()
            .map(|record| {
                Ok(submission::ActiveModel {
                    identity: Set(record.identity.clone()),
                    idempotency_key: Set(record.idempotency_key.clone()),
                    request_hash: Set(record.request_hash.clone()),
                    group_id: Set(record.group.row_id()),
                    seq: Set(seq_to_db(record.seq)?),
                    epoch: Set(epoch_to_db(record.epoch)?),
                    created_at_ms: Set(record.created_at_ms),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        submission::Entity::insert_many(rows)
            .exec_without_returning(db.database())
            .await?;
    }
    Ok(())
}

pub(crate) async fn insert_submission(
    db: &Transaction,
    record: SubmissionRecord,
) -> Result<(), StoreError> {
    submission::Entity::insert(submission::ActiveModel {
        identity: Set(record.identity),
        idempotency_key: Set(record.idempotency_key),
        request_hash: Set(record.request_hash),
        group_id: Set(record.group.row_id()),
        seq: Set(seq_to_db(record.seq)?),
        epoch: Set(epoch_to_db(record.epoch)?),
        created_at_ms: Set(record.created_at_ms),
    })
    .exec_without_returning(db.database())
    .await?;
    Ok(())
}
