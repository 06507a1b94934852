//! Queries for device inboxes: what is addressed to one device (a Welcome and
//! the ratchet tree to join with), in order, deleted once acknowledged.

use super::convert::{seq_to_db, to_seq};
use super::entities::{commit_welcome, inbox, inbox_event, welcome_state};
use super::{Connection, StoreError, Transaction};
use crate::rules::ids::{GroupKey, Seq};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set};
use std::collections::HashMap;
use std::collections::hash_map::Entry;

/// One entry of a device's inbox.
#[derive(Debug, Clone)]
pub(crate) struct InboxEvent {
    pub(crate) seq: Seq,
    pub(crate) group: GroupKey,
    /// The commit whose Welcome this is.
    pub(crate) commit_seq: Seq,
    pub(crate) welcome: Vec<u8>,
    /// Empty while `tree_state` is set.
    pub(crate) ratchet_tree: Vec<u8>,
    /// The hub's state of the group after the commit, which the ratchet tree
    /// is to be exported from (a Welcome shared since m0012, `welcome_states`);
    /// the service does so before the event is delivered.
    pub(crate) tree_state: Option<Vec<u8>>,
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
            tree_state: None,
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
    let seq = take_next_positions(db, &[device_id])
        .await?
        .first()
        .map(|position| position.last_seq)
        .ok_or_else(|| StoreError::Corrupt(format!("the inbox of {device_id} was not written")))?;
    inbox_event::Entity::insert(inbox_event::ActiveModel {
        device_id: Set(device_id.to_owned()),
        seq: Set(seq),
        group_id: Set(event.group.row_id()),
        commit_seq: Set(seq_to_db(event.commit_seq)?),
        welcome: Set(event.welcome.to_vec()),
        ratchet_tree: Set(event.ratchet_tree.to_vec()),
        created_at_ms: Set(event.now_ms),
        shared_welcome: Set(false),
    })
    .exec_without_returning(db.database())
    .await?;
    Ok(())
}

/// Takes the next position of each inbox of `device_ids` (distinct), making
/// the inboxes that do not exist yet, in one statement; returns the inboxes
/// as they are now.
async fn take_next_positions(
    db: &Transaction,
    device_ids: &[&str],
) -> Result<Vec<inbox::Model>, StoreError> {
    // PostgreSQL refuses an upsert that touches a row twice; SQLite would
    // take two positions of one inbox for one Welcome.
    debug_assert!(
        device_ids
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len()
            == device_ids.len(),
        "the devices of one upsert must be distinct"
    );
    Ok(
        inbox::Entity::insert_many(device_ids.iter().map(|device_id| inbox::ActiveModel {
            device_id: Set((*device_id).to_owned()),
            last_seq: Set(1),
            acked_seq: Set(0),
        }))
        .on_conflict(
            OnConflict::column(inbox::Column::DeviceId)
                .value(
                    inbox::Column::LastSeq,
                    Expr::col((inbox::Entity, inbox::Column::LastSeq)).add(1),
                )
                .to_owned(),
        )
        .exec_with_returning(db.database())
        .await?,
    )
}

/// Rows per multi-row statement: far below both databases' limits on bound
/// parameters.
const ROWS_PER_STATEMENT: usize = 500;

/// One commit's Welcome for devices of this domain it added.
pub(crate) struct SharedWelcome<'a> {
    pub(crate) group: GroupKey,
    pub(crate) commit_seq: Seq,
    pub(crate) welcome: &'a [u8],
    /// The group's state after the commit: the Welcome's ratchet tree is
    /// exported from it when read, and it is the group's state too
    /// (`NewState::BesideWelcome`).
    pub(crate) state: &'a [u8],
    pub(crate) now_ms: i64,
}

/// Appends a commit's Welcome to the inbox of each of `device_ids` (distinct),
/// storing the Welcome and the group's state once (`welcome_states`) and a
/// small entry per device, with a few multi-row statements whatever their
/// number.
pub(crate) async fn append_shared_welcome(
    db: &Transaction,
    welcome: SharedWelcome<'_>,
    device_ids: &[&str],
) -> Result<(), StoreError> {
    if device_ids.is_empty() {
        return Ok(());
    }
    let commit_seq = seq_to_db(welcome.commit_seq)?;
    welcome_state::Entity::insert(welcome_state::ActiveModel {
        group_id: Set(welcome.group.row_id()),
        commit_seq: Set(commit_seq),
        welcome: Set(welcome.welcome.to_vec()),
        state: Set(welcome.state.to_vec()),
    })
    .exec_without_returning(db.database())
    .await?;
    for chunk in device_ids.chunks(ROWS_PER_STATEMENT) {
        let positions = take_next_positions(db, chunk).await?;
        if positions.len() != chunk.len() {
            return Err(StoreError::Corrupt(format!(
                "{} of {} inboxes were not written",
                chunk.len() - positions.len(),
                chunk.len()
            )));
        }
        inbox_event::Entity::insert_many(positions.into_iter().map(|position| {
            inbox_event::ActiveModel {
                device_id: Set(position.device_id),
                seq: Set(position.last_seq),
                group_id: Set(welcome.group.row_id()),
                commit_seq: Set(commit_seq),
                welcome: Set(Vec::new()),
                ratchet_tree: Set(Vec::new()),
                created_at_ms: Set(welcome.now_ms),
                shared_welcome: Set(true),
            }
        }))
        .exec_without_returning(db.database())
        .await?;
    }
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
    let models = inbox_event::Entity::find()
        .filter(inbox_event::Column::DeviceId.eq(device_id))
        .filter(inbox_event::Column::Seq.gt(seq_to_db(after_seq)?))
        .order_by_asc(inbox_event::Column::Seq)
        .limit(limit)
        .all(db.database())
        .await?;
    // A page holds few distinct commits: each shared Welcome is read once.
    let mut shared: HashMap<(i64, i64), SharedRow> = HashMap::new();
    let mut events = Vec::with_capacity(models.len());
    for mut model in models {
        if !model.shared_welcome {
            events.push(InboxEvent::try_from(model)?);
            continue;
        }
        let key = (model.group_id, model.commit_seq);
        let row = match shared.entry(key) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                let Some(found) = find_shared_welcome(db, key).await? else {
                    // Another call of this device (a Fetch beside its stream)
                    // acknowledged this entry since the page was read, and
                    // took the last use of the shared row with it: the page
                    // ends here, the next read starts after that
                    // acknowledgement.
                    if inbox_entry_exists(db, device_id, model.seq).await? {
                        return Err(StoreError::Corrupt(format!(
                            "inbox of {} entry {}: the shared Welcome of commit {} is missing",
                            model.device_id, model.seq, model.commit_seq
                        )));
                    }
                    break;
                };
                entry.insert(found)
            }
        };
        let tree_state = match row {
            SharedRow::WithState { welcome, state } => {
                model.welcome = welcome.clone();
                Some(state.clone())
            }
            SharedRow::WithTree {
                welcome,
                ratchet_tree,
            } => {
                model.welcome = welcome.clone();
                model.ratchet_tree = ratchet_tree.clone();
                None
            }
        };
        let mut event = InboxEvent::try_from(model)?;
        event.tree_state = tree_state;
        events.push(event);
    }
    Ok(events)
}

/// A commit's Welcome shared by the devices it added here.
enum SharedRow {
    /// Since m0012 (`welcome_states`).
    WithState { welcome: Vec<u8>, state: Vec<u8> },
    /// Before m0012, or written by an earlier release (`commit_welcomes`).
    WithTree {
        welcome: Vec<u8>,
        ratchet_tree: Vec<u8>,
    },
}

async fn find_shared_welcome(
    db: &impl Connection,
    key: (i64, i64),
) -> Result<Option<SharedRow>, StoreError> {
    if let Some(row) = welcome_state::Entity::find_by_id(key)
        .one(db.database())
        .await?
    {
        return Ok(Some(SharedRow::WithState {
            welcome: row.welcome,
            state: row.state,
        }));
    }
    Ok(commit_welcome::Entity::find_by_id(key)
        .one(db.database())
        .await?
        .map(|row| SharedRow::WithTree {
            welcome: row.welcome,
            ratchet_tree: row.ratchet_tree,
        }))
}

async fn inbox_entry_exists(
    db: &impl Connection,
    device_id: &str,
    seq: i64,
) -> Result<bool, StoreError> {
    use sea_orm::PaginatorTrait;
    Ok(inbox_event::Entity::find()
        .filter(inbox_event::Column::DeviceId.eq(device_id))
        .filter(inbox_event::Column::Seq.eq(seq))
        .count(db.database())
        .await?
        > 0)
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
    let shared = inbox_event::Entity::find()
        .select_only()
        .columns([inbox_event::Column::GroupId, inbox_event::Column::CommitSeq])
        .filter(inbox_event::Column::DeviceId.eq(device_id))
        .filter(inbox_event::Column::Seq.lte(seq))
        .filter(inbox_event::Column::SharedWelcome.eq(true))
        .into_tuple::<(i64, i64)>()
        .all(db.database())
        .await?;
    inbox_event::Entity::delete_many()
        .filter(inbox_event::Column::DeviceId.eq(device_id))
        .filter(inbox_event::Column::Seq.lte(seq))
        .exec(db.database())
        .await?;
    for (group_id, commit_seq) in shared {
        delete_unused_shared_welcome(db, group_id, commit_seq).await?;
    }
    Ok(())
}

/// Deletes a commit's shared Welcome once no inbox entry points at it and it
/// does not hold its group's state. (Two devices acknowledging the last two
/// entries at once on PostgreSQL may each still see the other's: the row then
/// stays, unused, for the janitor; nothing is lost.)
async fn delete_unused_shared_welcome(
    db: &Transaction,
    group_id: i64,
    commit_seq: i64,
) -> Result<(), StoreError> {
    delete_unused_welcome_state(db, group_id, commit_seq).await?;
    commit_welcome::Entity::delete_many()
        .filter(commit_welcome::Column::GroupId.eq(group_id))
        .filter(commit_welcome::Column::CommitSeq.eq(commit_seq))
        .filter(Expr::exists(entries_pointing_at(commit_welcome::Entity)).not())
        .exec(db.database())
        .await?;
    Ok(())
}

/// [`delete_unused_shared_welcome`] in `welcome_states` only.
async fn delete_unused_welcome_state(
    db: &Transaction,
    group_id: i64,
    commit_seq: i64,
) -> Result<(), StoreError> {
    welcome_state::Entity::delete_many()
        .filter(welcome_state::Column::GroupId.eq(group_id))
        .filter(welcome_state::Column::CommitSeq.eq(commit_seq))
        .filter(Expr::exists(entries_pointing_at(welcome_state::Entity)).not())
        .filter(Expr::exists(holds_group_state()).not())
        .exec(db.database())
        .await?;
    Ok(())
}

/// Correlated with a row of `table` (`welcome_states` or `commit_welcomes`,
/// both keyed by `group_id` and `commit_seq`): the inbox entries sharing it.
fn entries_pointing_at<T>(table: T) -> sea_orm::sea_query::SelectStatement
where
    T: sea_orm::sea_query::Iden + Copy + 'static,
{
    use sea_orm::sea_query::{Alias, Query};
    Query::select()
        .expr(Expr::val(1))
        .from(inbox_event::Entity)
        .and_where(
            Expr::col((inbox_event::Entity, inbox_event::Column::GroupId))
                .equals((table, Alias::new("group_id"))),
        )
        .and_where(
            Expr::col((inbox_event::Entity, inbox_event::Column::CommitSeq))
                .equals((table, Alias::new("commit_seq"))),
        )
        .and_where(Expr::col((inbox_event::Entity, inbox_event::Column::SharedWelcome)).eq(true))
        .to_owned()
}

/// Correlated with a `welcome_states` row: its group's state is in it.
fn holds_group_state() -> sea_orm::sea_query::SelectStatement {
    use super::entities::group;
    use sea_orm::sea_query::Query;
    Query::select()
        .expr(Expr::val(1))
        .from(group::Entity)
        .and_where(
            Expr::col((group::Entity, group::Column::Id))
                .equals((welcome_state::Entity, welcome_state::Column::GroupId)),
        )
        .and_where(
            Expr::col((group::Entity, group::Column::StateWelcomeSeq))
                .equals((welcome_state::Entity, welcome_state::Column::CommitSeq)),
        )
        .to_owned()
}

/// After a submission moved a group's state off the Welcome row of the commit
/// at `commit_seq` ([`super::NewState`]), in the same transaction: deletes that
/// row if no inbox entry points at it any more either.
pub(crate) async fn release_state_holder(
    db: &Transaction,
    group: GroupKey,
    commit_seq: Seq,
) -> Result<(), StoreError> {
    // The group's row only ever names a `welcome_states` row.
    delete_unused_welcome_state(db, group.row_id(), seq_to_db(commit_seq)?).await
}

/// Deletes every shared Welcome no inbox entry points at any more and that does
/// not hold its group's state: those whose last entries went with their
/// devices (removed before acknowledging), and those two simultaneous
/// acknowledgements both left (see [`delete_unused_shared_welcome`]). The
/// janitor runs it; returns how many.
/// A commit writes its shared Welcome and the entries pointing at it in one
/// transaction, so a row never looks unused before its entries are visible.
pub(crate) async fn delete_unused_shared_welcomes(db: &impl Connection) -> Result<u64, StoreError> {
    let with_state = welcome_state::Entity::delete_many()
        .filter(Expr::exists(entries_pointing_at(welcome_state::Entity)).not())
        .filter(Expr::exists(holds_group_state()).not())
        .exec(db.database())
        .await?;
    let with_tree = commit_welcome::Entity::delete_many()
        .filter(Expr::exists(entries_pointing_at(commit_welcome::Entity)).not())
        .exec(db.database())
        .await?;
    Ok(with_state.rows_affected + with_tree.rows_affected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::store::heads::tests::{insert_test_device, insert_test_group};
    use conclave_test_support::{DatabaseChoice, TestDatabase};
    use sea_orm::PaginatorTrait;

    const DEVICES: [&str; 3] = ["00000000000000e1", "00000000000000e2", "00000000000000e3"];

    async fn shared_rows(store: &Store) -> u64 {
        let with_state = welcome_state::Entity::find()
            .count(store.database())
            .await
            .unwrap();
        let with_tree = commit_welcome::Entity::find()
            .count(store.database())
            .await
            .unwrap();
        with_state + with_tree
    }

    /// A fresh store where the commit at seq 4 of a group added `DEVICES`,
    /// with one shared Welcome.
    async fn store_with_a_shared_welcome(choice: DatabaseChoice) -> (TestDatabase, Store) {
        let database = TestDatabase::create(choice).await;
        let store = Store::connect(database.url(), 2).await.unwrap();
        store.migrate().await.unwrap();
        let group = insert_test_group(&store, 1, "d1").await;
        for device in DEVICES {
            insert_test_device(&store, device).await;
        }
        let transaction = store.begin().await.unwrap();
        let welcome = SharedWelcome {
            group: group.key,
            commit_seq: Seq::new(4),
            welcome: b"welcome",
            state: b"state",
            now_ms: 9,
        };
        append_shared_welcome(&transaction, welcome, &DEVICES)
            .await
            .unwrap();
        transaction.commit().await.unwrap();
        (database, store)
    }

    #[tokio::test]
    async fn a_shared_welcome_reaches_every_device_and_goes_with_the_last_ack() {
        for choice in DatabaseChoice::ALL {
            let (_database, store) = store_with_a_shared_welcome(choice).await;
            assert_eq!(shared_rows(&store).await, 1, "{choice:?}: stored once");

            for (index, device) in DEVICES.into_iter().enumerate() {
                let events = inbox_events_after(&store, device, Seq::ZERO, 10)
                    .await
                    .unwrap();
                assert_eq!(events.len(), 1, "{choice:?} {device}");
                let event = &events[0];
                assert_eq!(
                    (
                        event.seq,
                        event.commit_seq,
                        event.welcome.as_slice(),
                        event.ratchet_tree.as_slice(),
                        event.tree_state.as_deref()
                    ),
                    (
                        Seq::new(1),
                        Seq::new(4),
                        &b"welcome"[..],
                        &b""[..],
                        Some(&b"state"[..])
                    ),
                    "{choice:?} {device}"
                );
                let transaction = store.begin().await.unwrap();
                advance_inbox_cursor(&transaction, device, event.seq)
                    .await
                    .unwrap();
                transaction.commit().await.unwrap();
                let left = if index + 1 < DEVICES.len() { 1 } else { 0 };
                assert_eq!(
                    shared_rows(&store).await,
                    left,
                    "{choice:?}: after {device}'s ack"
                );
            }
        }
    }

    #[tokio::test]
    async fn the_janitor_deletes_shared_welcomes_whose_devices_went() {
        for choice in DatabaseChoice::ALL {
            let (_database, store) = store_with_a_shared_welcome(choice).await;
            assert_eq!(delete_unused_shared_welcomes(&store).await.unwrap(), 0);
            assert_eq!(shared_rows(&store).await, 1, "{choice:?}: still needed");
            // What removing the devices before they acknowledged does (the
            // entries go with their device).
            inbox_event::Entity::delete_many()
                .exec(store.database())
                .await
                .unwrap();
            assert_eq!(delete_unused_shared_welcomes(&store).await.unwrap(), 1);
            assert_eq!(shared_rows(&store).await, 0, "{choice:?}: swept");
        }
    }

    /// Marks the shared Welcome of `store_with_a_shared_welcome` as holding
    /// its group's state, as a commit adding devices here does.
    async fn make_it_hold_the_group_s_state(store: &Store) -> GroupKey {
        use crate::rules::ids::Epoch;
        use crate::store::{NewState, update_group};
        let group = welcome_state::Entity::find()
            .one(store.database())
            .await
            .unwrap()
            .unwrap()
            .group_id;
        let group = GroupKey::from_row(group);
        let transaction = store.begin().await.unwrap();
        let state = NewState::BesideWelcome(Seq::new(4));
        update_group(&transaction, group, Epoch::new(2), Seq::new(4), state)
            .await
            .unwrap();
        transaction.commit().await.unwrap();
        group
    }

    /// What the next submission to the group does after
    /// [`make_it_hold_the_group_s_state`]: stores the state in the group's
    /// row and releases the Welcome's.
    async fn move_the_state_on(store: &Store, group: GroupKey) {
        use crate::rules::ids::Epoch;
        use crate::store::{NewState, update_group};
        let transaction = store.begin().await.unwrap();
        let state = NewState::InRow(b"next state".to_vec());
        update_group(&transaction, group, Epoch::new(3), Seq::new(5), state)
            .await
            .unwrap();
        release_state_holder(&transaction, group, Seq::new(4))
            .await
            .unwrap();
        transaction.commit().await.unwrap();
    }

    async fn ack_everything(store: &Store) {
        for device in DEVICES {
            let transaction = store.begin().await.unwrap();
            advance_inbox_cursor(&transaction, device, Seq::new(1))
                .await
                .unwrap();
            transaction.commit().await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_shared_welcome_holding_the_group_s_state_stays_until_the_state_moves() {
        use crate::store::hosted_group_state;
        for choice in DatabaseChoice::ALL {
            let (_database, store) = store_with_a_shared_welcome(choice).await;
            let group = make_it_hold_the_group_s_state(&store).await;
            assert_eq!(
                hosted_group_state(&store, group).await.unwrap().as_deref(),
                Some(&b"state"[..]),
                "{choice:?}: the group's state is read from the Welcome's row"
            );
            ack_everything(&store).await;
            assert_eq!(delete_unused_shared_welcomes(&store).await.unwrap(), 0);
            assert_eq!(shared_rows(&store).await, 1, "{choice:?}: holds the state");

            move_the_state_on(&store, group).await;
            assert_eq!(shared_rows(&store).await, 0, "{choice:?}: released");
            assert_eq!(
                hosted_group_state(&store, group).await.unwrap().as_deref(),
                Some(&b"next state"[..]),
                "{choice:?}"
            );
        }
    }

    #[tokio::test]
    async fn releasing_a_state_holder_keeps_it_for_the_devices_still_to_read_it() {
        for choice in DatabaseChoice::ALL {
            let (_database, store) = store_with_a_shared_welcome(choice).await;
            let group = make_it_hold_the_group_s_state(&store).await;
            move_the_state_on(&store, group).await;
            assert_eq!(shared_rows(&store).await, 1, "{choice:?}: still to be read");
            let events = inbox_events_after(&store, DEVICES[0], Seq::ZERO, 10)
                .await
                .unwrap();
            assert_eq!(
                events[0].tree_state.as_deref(),
                Some(&b"state"[..]),
                "{choice:?}: the state of the Welcome's epoch, not the group's newest"
            );
            ack_everything(&store).await;
            assert_eq!(
                shared_rows(&store).await,
                0,
                "{choice:?}: gone with the last ack"
            );
        }
    }

    /// Rows written before m0012, or by an earlier release during a rolling
    /// update, carry the ratchet tree itself, in `commit_welcomes`.
    #[tokio::test]
    async fn a_shared_welcome_stored_with_its_tree_is_read_and_deleted_as_it_was() {
        for choice in DatabaseChoice::ALL {
            let (_database, store) = store_with_a_shared_welcome(choice).await;
            let row = welcome_state::Entity::find()
                .one(store.database())
                .await
                .unwrap()
                .unwrap();
            welcome_state::Entity::delete_many()
                .exec(store.database())
                .await
                .unwrap();
            commit_welcome::Entity::insert(commit_welcome::ActiveModel {
                group_id: Set(row.group_id),
                commit_seq: Set(row.commit_seq),
                welcome: Set(b"old welcome".to_vec()),
                ratchet_tree: Set(b"tree".to_vec()),
            })
            .exec_without_returning(store.database())
            .await
            .unwrap();
            let events = inbox_events_after(&store, DEVICES[1], Seq::ZERO, 10)
                .await
                .unwrap();
            assert_eq!(
                (
                    events[0].welcome.as_slice(),
                    events[0].ratchet_tree.as_slice(),
                    events[0].tree_state.as_deref()
                ),
                (&b"old welcome"[..], &b"tree"[..], None),
                "{choice:?}"
            );
            ack_everything(&store).await;
            assert_eq!(
                shared_rows(&store).await,
                0,
                "{choice:?}: gone with the last ack"
            );
        }
    }
}
