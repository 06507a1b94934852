//! The newest positions of many group logs and device inboxes at once: what a
//! replica's wake-up resync (`service::resync`) compares with its last look to
//! find the topics that moved while a wake-up was lost or Redis was down.
//!
//! One statement per [`KEYS_PER_QUERY`] keys reads only the counters
//! (`groups.last_seq`, `inboxes.last_seq`) through their primary keys, so a
//! replica holding thousands of streams costs a few short queries per interval.

use super::convert::{group_row, to_seq};
use super::entities::{group, inbox};
use super::{Connection, StoreError};
use crate::rules::ids::{GroupKey, Seq};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};

/// Keys per statement: far below PostgreSQL's 65,535 bind parameters and
/// SQLite's 32,766, and short enough to plan quickly.
const KEYS_PER_QUERY: usize = 1000;

/// The newest sequence number of each group's log, for the groups that exist.
pub(crate) async fn group_heads(
    db: &impl Connection,
    keys: &[GroupKey],
) -> Result<Vec<(GroupKey, Seq)>, StoreError> {
    let mut heads = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(KEYS_PER_QUERY) {
        let rows: Vec<(i64, i64)> = group::Entity::find()
            .select_only()
            .columns([group::Column::Id, group::Column::LastSeq])
            .filter(group::Column::Id.is_in(chunk.iter().map(|key| key.row_id())))
            .into_tuple()
            .all(db.database())
            .await?;
        for (id, last_seq) in rows {
            let key = GroupKey::from_row(id);
            heads.push((key, to_seq(last_seq, group_row(key), "last_seq")?));
        }
    }
    Ok(heads)
}

/// The newest sequence number of each device's inbox, for the devices that
/// have ever received something (a device without an inbox row has none).
pub(crate) async fn inbox_heads(
    db: &impl Connection,
    device_ids: &[String],
) -> Result<Vec<(String, Seq)>, StoreError> {
    let mut heads = Vec::with_capacity(device_ids.len());
    for chunk in device_ids.chunks(KEYS_PER_QUERY) {
        let rows: Vec<(String, i64)> = inbox::Entity::find()
            .select_only()
            .columns([inbox::Column::DeviceId, inbox::Column::LastSeq])
            .filter(inbox::Column::DeviceId.is_in(chunk.iter().cloned()))
            .into_tuple()
            .all(db.database())
            .await?;
        for (device_id, last_seq) in rows {
            let seq = to_seq(last_seq, format!("inbox of {device_id}"), "last_seq")?;
            heads.push((device_id, seq));
        }
    }
    Ok(heads)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::rules::ids::{Epoch, GroupId};
    use crate::store::{
        HostedGroup, NewDevice, NewInboxEvent, Store, append_inbox_event, insert_device,
        insert_group, insert_user, update_group,
    };
    use conclave_core::ids::{DeviceId, Username};
    use conclave_test_support::{DatabaseChoice, TestDatabase};

    /// A registered device, whose inbox may then be written.
    pub(crate) async fn insert_test_device(store: &Store, device_id: &str) {
        let username: Username = format!("user{device_id}").parse().unwrap();
        let user = insert_user(store, &username, "hash", 0)
            .await
            .unwrap()
            .unwrap();
        let device_id: DeviceId = device_id.parse().unwrap();
        let new_device = NewDevice {
            device_id: &device_id,
            user: user.key,
            display_name: "phone",
            signature_public_key: device_id.as_str().as_bytes(),
            access_token_hash: device_id.as_str().as_bytes(),
            now_ms: 0,
        };
        assert!(insert_device(store, new_device).await.unwrap());
    }

    /// A hosted group at epoch 0 with MLS group id `[id]`, created by `creator`.
    pub(crate) async fn insert_test_group(store: &Store, id: u8, creator: &str) -> HostedGroup {
        insert_group(
            store,
            &GroupId::new(vec![id]),
            Epoch::new(0),
            vec![],
            creator,
            0,
        )
        .await
        .unwrap()
        .unwrap()
    }

    const D2: &str = "00000000000000d2";

    #[tokio::test]
    async fn heads_are_read_for_many_keys_and_missing_rows_are_left_out() {
        for choice in DatabaseChoice::ALL {
            let database = TestDatabase::create(choice).await;
            let store = Store::connect(database.url(), 2).await.unwrap();
            store.migrate().await.unwrap();

            let first = insert_test_group(&store, 1, "d1").await;
            let second = insert_test_group(&store, 2, "d1").await;
            insert_test_device(&store, D2).await;
            let transaction = store.begin().await.unwrap();
            update_group(
                &transaction,
                second.key,
                Epoch::new(1),
                Seq::new(7),
                crate::store::NewState::Unchanged,
            )
            .await
            .unwrap();
            for _ in 0..3 {
                append_inbox_event(
                    &transaction,
                    NewInboxEvent {
                        device_id: D2,
                        group: second.key,
                        commit_seq: Seq::new(1),
                        welcome: b"w",
                        ratchet_tree: b"t",
                        now_ms: 0,
                    },
                )
                .await
                .unwrap();
            }
            transaction.commit().await.unwrap();

            // More keys than one statement takes, most of them unknown.
            let mut keys: Vec<GroupKey> = (1000..3500).map(GroupKey::from_row).collect();
            keys.extend([first.key, second.key]);
            let mut heads = group_heads(&store, &keys).await.unwrap();
            heads.sort_by_key(|(key, _)| key.row_id());
            assert_eq!(
                heads,
                vec![(first.key, Seq::new(0)), (second.key, Seq::new(7))],
                "{choice:?}"
            );

            let mut devices: Vec<String> = (0..2500).map(|n| format!("x{n}")).collect();
            devices.extend(["00000000000000d1".to_owned(), D2.to_owned()]);
            let heads = inbox_heads(&store, &devices).await.unwrap();
            assert_eq!(heads, vec![(D2.to_owned(), Seq::new(3))], "{choice:?}");
            assert!(group_heads(&store, &[]).await.unwrap().is_empty());
        }
    }
}
