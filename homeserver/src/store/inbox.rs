//! Queries for device inboxes: what is addressed to one device (a Welcome and
//! the ratchet tree to join with), in order, deleted once acknowledged.

use super::convert::{seq_to_db, to_seq};
use super::entities::{inbox, inbox_event};
use super::{Connection, StoreError, Transaction};
use crate::rules::ids::{GroupKey, Seq};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set};

/// One entry of a device's inbox.
#[derive(Debug, Clone)]
pub(crate) struct InboxEvent {
    pub(crate) seq: Seq,
    pub(crate) group: GroupKey,
    /// The commit whose Welcome this is.
    pub(crate) commit_seq: Seq,
    pub(crate) welcome: Vec<u8>,
    pub(crate) ratchet_tree: Vec<u8>,
    pub(crate) created_at_ms: i64,
}

impl TryFrom<inbox_event::Model> for InboxEvent {
    type Error = StoreError;
    fn try_from(model: inbox_event::Model) -> Result<InboxEvent, StoreError> {
        let row = format!("inbox of {} entry {}", model.device_id, model.seq);
        Ok(InboxEvent {
            seq: to_seq(model.seq, &row, "seq")?,
            group: GroupKey::from_row(model.group_id),
            commit_seq: to_seq(model.commit_seq, &row, "commit_seq")?,
            welcome: model.welcome,
            ratchet_tree: model.ratchet_tree,
            created_at_ms: model.created_at_ms,
        })
    }
}

/// A Welcome for one device.
pub(crate) struct NewInboxEvent<'a> {
    pub(crate) device_id: &'a str,
    pub(crate) group: GroupKey,
    pub(crate) commit_seq: Seq,
    pub(crate) welcome: &'a [u8],
    pub(crate) ratchet_tree: &'a [u8],
    pub(crate) now_ms: i64,
}

/// Appends a Welcome to a device's inbox.
pub(crate) async fn append_inbox_event(
    db: &Transaction,
    event: NewInboxEvent<'_>,
) -> Result<(), StoreError> {
    let device_id = event.device_id;
    inbox::Entity::insert(inbox::ActiveModel {
        device_id: Set(device_id.to_owned()),
        last_seq: Set(0),
        acked_seq: Set(0),
    })
    .on_conflict(
        OnConflict::column(inbox::Column::DeviceId)
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(db.database())
    .await?;
    inbox::Entity::update_many()
        .col_expr(
            inbox::Column::LastSeq,
            Expr::col(inbox::Column::LastSeq).add(1),
        )
        .filter(inbox::Column::DeviceId.eq(device_id))
        .exec(db.database())
        .await?;
    let seq = inbox::Entity::find_by_id(device_id.to_owned())
        .one(db.database())
        .await?
        .map(|row| row.last_seq)
        .ok_or_else(|| {
            StoreError::Corrupt(format!("the inbox of {device_id} vanished while written"))
        })?;
    inbox_event::Entity::insert(inbox_event::ActiveModel {
        device_id: Set(device_id.to_owned()),
        seq: Set(seq),
        group_id: Set(event.group.row_id()),
        commit_seq: Set(seq_to_db(event.commit_seq)?),
        welcome: Set(event.welcome.to_vec()),
        ratchet_tree: Set(event.ratchet_tree.to_vec()),
        created_at_ms: Set(event.now_ms),
    })
    .exec_without_returning(db.database())
    .await?;
    Ok(())
}

/// A device's inbox cursor and newest entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct InboxPosition {
    pub(crate) acked_seq: Seq,
    pub(crate) last_seq: Seq,
}

pub(crate) async fn inbox_position(
    db: &impl Connection,
    device_id: &str,
) -> Result<InboxPosition, StoreError> {
    let Some(row) = inbox::Entity::find_by_id(device_id.to_owned())
        .one(db.database())
        .await?
    else {
        return Ok(InboxPosition::default());
    };
    let name = format!("inbox of {device_id}");
    Ok(InboxPosition {
        acked_seq: to_seq(row.acked_seq, &name, "acked_seq")?,
        last_seq: to_seq(row.last_seq, &name, "last_seq")?,
    })
}

pub(crate) async fn inbox_events_after(
    db: &impl Connection,
    device_id: &str,
    after_seq: Seq,
    limit: u64,
) -> Result<Vec<InboxEvent>, StoreError> {
    inbox_event::Entity::find()
        .filter(inbox_event::Column::DeviceId.eq(device_id))
        .filter(inbox_event::Column::Seq.gt(seq_to_db(after_seq)?))
        .order_by_asc(inbox_event::Column::Seq)
        .limit(limit)
        .all(db.database())
        .await?
        .into_iter()
        .map(InboxEvent::try_from)
        .collect()
}

/// Moves the inbox cursor forward and deletes what it passed: an inbox entry is
/// for one device, so once acknowledged it is never needed again.
pub(crate) async fn advance_inbox_cursor(
    db: &Transaction,
    device_id: &str,
    seq: Seq,
) -> Result<(), StoreError> {
    let seq = seq_to_db(seq)?;
    inbox::Entity::update_many()
        .col_expr(inbox::Column::AckedSeq, Expr::value(seq))
        .filter(inbox::Column::DeviceId.eq(device_id))
        .filter(inbox::Column::AckedSeq.lt(seq))
        .exec(db.database())
        .await?;
    inbox_event::Entity::delete_many()
        .filter(inbox_event::Column::DeviceId.eq(device_id))
        .filter(inbox_event::Column::Seq.lte(seq))
        .exec(db.database())
        .await?;
    Ok(())
}
