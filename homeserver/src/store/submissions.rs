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
    let row = format!("submission of {identity}");
    Ok(Some(SubmissionRecord {
        group: GroupKey::from_row(model.group_id),
        seq: to_seq(model.seq, &row, "seq")?,
        epoch: to_epoch(model.epoch, &row, "epoch")?,
        identity: model.identity,
        idempotency_key: model.idempotency_key,
        request_hash: model.request_hash,
        created_at_ms: model.created_at_ms,
    }))
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
