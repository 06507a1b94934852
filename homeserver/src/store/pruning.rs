//! The janitor's queries: deleting log entries no device or follower domain
//! still needs, or older than the retention, and old idempotency records.

use super::{Connection, StoreError};
use sea_orm::ConnectionTrait;

/// Log entries no local device and no follower domain still needs: at or below
/// the cursor of every local member device that has yet to read them, and of
/// every follower domain that has yet to receive them (devices of other domains
/// are their homeservers' concern). With neither, the whole log may go. `{old}`
/// is the retention cutoff's placeholder.
macro_rules! prune_events_sql {
    ($old:literal) => {
        concat!(
            "DELETE FROM group_events WHERE created_at_ms < ",
            $old,
            " OR (seq <= ( \
               SELECT COALESCE(MIN(m.acked_seq), (SELECT g.last_seq FROM groups g WHERE g.id = group_events.group_id)) \
               FROM group_members m WHERE m.group_id = group_events.group_id \
                 AND m.remote_domain IS NULL \
                 AND (m.removed_at_seq IS NULL OR m.acked_seq < m.removed_at_seq)) \
             AND seq <= ( \
               SELECT COALESCE(MIN(p.delivered_seq), (SELECT g.last_seq FROM groups g WHERE g.id = group_events.group_id)) \
               FROM federation_peer_groups p WHERE p.group_id = group_events.group_id \
                 AND (p.until_seq IS NULL OR p.delivered_seq < p.until_seq)))"
        )
    };
}
const PRUNE_EVENTS_POSTGRES: &str = prune_events_sql!("$1");
const PRUNE_EVENTS_SQLITE: &str = prune_events_sql!("?1");

/// Deletes log entries no device still needs: those at or below the cursor of
/// every member device that has yet to read them, and those older than
/// `retention_cutoff_ms` whatever the cursors say (a device that was offline that
/// long rejoins by external commit). Also forgets idempotency records older than
/// `submission_cutoff_ms`. Returns the number of log entries deleted.
pub(crate) async fn prune_group_events(
    db: &impl Connection,
    retention_cutoff_ms: i64,
    submission_cutoff_ms: i64,
) -> Result<u64, StoreError> {
    use sea_orm::Statement;
    // A member still needs events if it is current, or removed but has not yet
    // read up to its removal. With no such member, the whole log may go.
    let backend = db.database().get_database_backend();
    let (backend, prune_events, prune_submissions) = match backend {
        sea_orm::DbBackend::Postgres => (
            sea_orm::DbBackend::Postgres,
            PRUNE_EVENTS_POSTGRES,
            "DELETE FROM submissions WHERE created_at_ms < $1",
        ),
        _ => (
            sea_orm::DbBackend::Sqlite,
            PRUNE_EVENTS_SQLITE,
            "DELETE FROM submissions WHERE created_at_ms < ?1",
        ),
    };
    let deleted = db
        .database()
        .execute_raw(Statement::from_sql_and_values(
            backend,
            prune_events,
            [retention_cutoff_ms.into()],
        ))
        .await?
        .rows_affected();
    db.database()
        .execute_raw(Statement::from_sql_and_values(
            backend,
            prune_submissions,
            [submission_cutoff_ms.into()],
        ))
        .await?;
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::ids::{Epoch, GroupId, GroupKey, Seq};
    use crate::store::{
        EventKind, NewEvent, NewMember, Store, SubmissionRecord, advance_member_cursor,
        append_event, events_after, find_submission, insert_group, insert_submission, mark_removed,
        update_group, upsert_member,
    };
    use conclave_test_support::{DatabaseChoice, TestDatabase};

    /// Log entries of test groups: `LOG_LENGTH` each.
    const LOG_LENGTH: i64 = 10;
    /// Creation times far above the retention cutoff, for groups whose log must
    /// be pruned by cursors alone.
    const RECENT_MS: i64 = 1_000_000;
    /// The retention cutoff of the test: only the log of the group whose events
    /// were made at 1000, 2000, ... ms has events older than this (seqs 1 to 5).
    const RETENTION_CUTOFF_MS: i64 = 5_500;

    /// A group whose log holds `LOG_LENGTH` events, event `seq` made at
    /// `created_at_ms(seq)`.
    async fn group_with_log(
        store: &Store,
        name: &str,
        created_at_ms: impl Fn(i64) -> i64,
    ) -> GroupKey {
        let db = store.begin().await.unwrap();
        let group_id = GroupId::from(name.as_bytes());
        let group = insert_group(&db, &group_id, Epoch::new(0), Vec::new(), "creator", 0)
            .await
            .unwrap()
            .unwrap();
        for seq in 1..=LOG_LENGTH {
            let event = NewEvent {
                group: group.key,
                seq: Seq::new(seq as u64),
                kind: EventKind::Application,
                epoch: Epoch::new(0),
                sender_identity: "sender",
                message: b"message",
                now_ms: created_at_ms(seq),
                trace_parent: None,
                message_digest: None,
            };
            append_event(&db, event).await.unwrap();
        }
        update_group(
            &db,
            group.key,
            Epoch::new(0),
            Seq::new(LOG_LENGTH as u64),
            crate::store::NewState::Unchanged,
        )
        .await
        .unwrap();
        db.commit().await.unwrap();
        group.key
    }

    /// A member device that joined after `joined_after_seq`, acknowledged up to
    /// `acked_seq`, and was removed by the commit at `removed_at_seq`, if given.
    async fn member(
        store: &Store,
        group: GroupKey,
        name: &str,
        joined_after_seq: u64,
        acked_seq: u64,
        removed_at_seq: Option<u64>,
    ) {
        let db = store.begin().await.unwrap();
        let identity = format!("{name}@localhost/00000000000000a1");
        let user_id = format!("{name}@localhost");
        let member = NewMember {
            identity: &identity,
            user_id: &user_id,
            device_id: "00000000000000a1",
            joined_after_seq: Seq::new(joined_after_seq),
            remote_domain: None,
        };
        upsert_member(&db, group, member).await.unwrap();
        advance_member_cursor(&db, group, &identity, Seq::new(acked_seq))
            .await
            .unwrap();
        if let Some(seq) = removed_at_seq {
            mark_removed(&db, group, &identity, Seq::new(seq))
                .await
                .unwrap();
        }
        db.commit().await.unwrap();
    }

    async fn remaining(store: &Store, group: GroupKey) -> Vec<i64> {
        events_after(store, group, Seq::ZERO, None, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|event| event.seq.get() as i64)
            .collect()
    }

    async fn submission(store: &Store, key: &[u8], created_at_ms: i64) {
        let record = SubmissionRecord {
            identity: "alice@localhost/00000000000000a1".to_owned(),
            idempotency_key: key.to_vec(),
            request_hash: vec![0; 32],
            group: GroupKey::from_row(0),
            seq: Seq::new(1),
            epoch: Epoch::new(0),
            created_at_ms,
        };
        let db = store.begin().await.unwrap();
        insert_submission(&db, record).await.unwrap();
        db.commit().await.unwrap();
    }

    #[tokio::test]
    async fn pruning_deletes_only_what_no_member_needs_or_what_is_too_old() {
        for choice in DatabaseChoice::ALL {
            check_pruning(choice).await;
        }
    }

    async fn check_pruning(choice: DatabaseChoice) {
        let database = TestDatabase::create(choice).await;
        let store = Store::connect(database.url(), 2).await.unwrap();
        store.migrate().await.unwrap();
        let recent = |seq| RECENT_MS + seq;

        // (case, group, events expected to remain)
        let mut cases = Vec::new();
        let group = group_with_log(&store, "cursors", recent).await;
        member(&store, group, "alice", 0, 7, None).await;
        member(&store, group, "bob", 0, 4, None).await;
        cases.push((
            "the lowest cursor of current members",
            group,
            (5..=10).collect(),
        ));

        let group = group_with_log(&store, "late joiner", recent).await;
        member(&store, group, "alice", 0, 6, None).await;
        member(&store, group, "dave", 8, 8, None).await;
        cases.push((
            "a member added later holds nothing back",
            group,
            (7..=10).collect(),
        ));

        let group = group_with_log(&store, "removed, unread", recent).await;
        member(&store, group, "alice", 0, 10, None).await;
        member(&store, group, "carol", 0, 3, Some(6)).await;
        cases.push((
            "a removed member that has not read its removal",
            group,
            (4..=10).collect(),
        ));

        let group = group_with_log(&store, "removed, read", recent).await;
        member(&store, group, "alice", 0, 9, None).await;
        member(&store, group, "carol", 0, 6, Some(6)).await;
        cases.push(("a removed member that read its removal", group, vec![10]));

        let group = group_with_log(&store, "nobody left", recent).await;
        member(&store, group, "carol", 0, 5, Some(5)).await;
        cases.push(("no member needs anything", group, Vec::new()));

        let group = group_with_log(&store, "old", |seq| seq * 1000).await;
        member(&store, group, "alice", 0, 2, None).await;
        cases.push((
            "events older than the retention go, read or not",
            group,
            (6..=10).collect(),
        ));

        submission(&store, b"old", RETENTION_CUTOFF_MS - 1).await;
        submission(&store, b"recent", RECENT_MS).await;

        let deleted = prune_group_events(&store, RETENTION_CUTOFF_MS, RETENTION_CUTOFF_MS)
            .await
            .unwrap();
        let mut expected_deleted = 0;
        for (case, group, expected) in cases {
            let expected: Vec<i64> = expected;
            assert_eq!(
                remaining(&store, group).await,
                expected,
                "{choice:?}: {case}"
            );
            expected_deleted += LOG_LENGTH as u64 - expected.len() as u64;
        }
        assert_eq!(deleted, expected_deleted, "{choice:?}: deleted count");
        let identity = "alice@localhost/00000000000000a1";
        assert!(
            find_submission(&store, identity, b"old")
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            find_submission(&store, identity, b"recent")
                .await
                .unwrap()
                .is_some()
        );

        // Pruning again deletes nothing more.
        let again = prune_group_events(&store, RETENTION_CUTOFF_MS, 0)
            .await
            .unwrap();
        assert_eq!(again, 0, "{choice:?}");
        store.close().await.unwrap();
    }
}
