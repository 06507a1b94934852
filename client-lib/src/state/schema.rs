//! The client's own tables and their migrations, tracked by SQLite's `user_version`.
//!
//! openmls's tables are migrated separately by `SqliteStorageProvider::run_migrations`
//! (refinery, with its own bookkeeping table); the two sets never touch each other.

use rusqlite::Connection;

use super::StateError;

/// Migration `i` brings the schema from version `i` to `i + 1`. Append only: a
/// released migration is never edited, because states in the field already ran it.
const MIGRATIONS: &[&str] = &[
    // 1: remembered settings and the device's session.
    "CREATE TABLE client_settings (
         key   TEXT PRIMARY KEY NOT NULL,
         value TEXT NOT NULL
     ) STRICT;
     CREATE TABLE client_session (
         -- At most one row: a state directory holds one device.
         id                   INTEGER PRIMARY KEY CHECK (id = 1),
         server_url           TEXT NOT NULL,
         user_id              TEXT NOT NULL,
         device_id            TEXT NOT NULL,
         credential_identity  TEXT NOT NULL,
         access_token         TEXT NOT NULL,
         signature_public_key BLOB NOT NULL
     ) STRICT;",
    // 2: groups, submissions not yet confirmed by the hub, received messages,
    // events waiting for a commit, and the inbox cursor.
    "CREATE TABLE client_groups (
         group_id      BLOB PRIMARY KEY NOT NULL,
         -- From the group's metadata extension; not unique.
         name          TEXT NOT NULL,
         -- creating: made here, not yet registered at the hub; active: a member;
         -- rejoining: joined by an external commit the hub has not accepted yet;
         -- removed: no longer a member (removed, or left).
         status        TEXT NOT NULL
                       CHECK (status IN ('creating', 'active', 'rejoining', 'removed')),
         -- Every event of the group's log up to and including this one is processed.
         last_seq      INTEGER NOT NULL,
         -- The epoch at which the hub took this device's proposal to leave; NULL
         -- when not leaving. A later epoch without the removal means proposing again.
         leaving_epoch INTEGER,
         -- The local state is lost or diverged: rejoin by external commit.
         needs_rejoin  INTEGER NOT NULL DEFAULT 0,
         updated_at_ms INTEGER NOT NULL
     ) STRICT;
     CREATE TABLE pending_submissions (
         id              INTEGER PRIMARY KEY,
         group_id        BLOB NOT NULL,
         -- create, commit, proposal or message: which RPC carries it.
         kind            TEXT NOT NULL
                         CHECK (kind IN ('create', 'commit', 'proposal', 'message')),
         -- What the user asked for (JSON), applied again if the submission loses
         -- a race for its epoch.
         intent          TEXT NOT NULL,
         -- Stored before the first send, so a resend after a crash is recognised
         -- by the hub and answered with the original result.
         idempotency_key BLOB NOT NULL UNIQUE,
         -- The MLSMessage submitted; for create, the GroupInfo.
         payload         BLOB NOT NULL,
         -- commit: the Welcome, if the commit adds members.
         welcome         BLOB,
         -- commit: the GroupInfo of the new epoch; create: the ratchet tree.
         extra           BLOB,
         -- The group's epoch when the submission was built.
         epoch           INTEGER NOT NULL,
         created_at_ms   INTEGER NOT NULL
     ) STRICT;
     CREATE INDEX pending_submissions_by_group ON pending_submissions (group_id);
     CREATE TABLE messages (
         -- Order of arrival here, which is the order listen shows them in.
         id               INTEGER PRIMARY KEY,
         group_id         BLOB NOT NULL,
         -- Position in the group's log at the hub.
         seq              INTEGER NOT NULL,
         sender_user_id   TEXT NOT NULL,
         sender_device_id TEXT NOT NULL,
         server_time_ms   INTEGER,
         -- The envelope's type, and for text the text.
         kind             TEXT NOT NULL,
         body             TEXT NOT NULL,
         -- Sent by this device.
         own              INTEGER NOT NULL,
         -- Not yet handed to a listener.
         unread           INTEGER NOT NULL,
         UNIQUE (group_id, seq)
     ) STRICT;
     CREATE INDEX messages_unread ON messages (id) WHERE unread = 1;
     CREATE TABLE held_events (
         group_id         BLOB NOT NULL,
         seq              INTEGER NOT NULL,
         -- The epoch the message is for, which the group has not reached yet.
         epoch            INTEGER NOT NULL,
         message          BLOB NOT NULL,
         sender_user_id   TEXT NOT NULL,
         sender_device_id TEXT NOT NULL,
         server_time_ms   INTEGER,
         PRIMARY KEY (group_id, seq)
     ) STRICT;
     CREATE TABLE inbox_cursor (
         -- At most one row.
         id  INTEGER PRIMARY KEY CHECK (id = 1),
         -- Every inbox event up to and including this one is processed.
         seq INTEGER NOT NULL
     ) STRICT;",
    // 3: devices whose departure notices this device read while their leaves
    // were in its state of the group: it commits their removal.
    "CREATE TABLE departed_members (
         group_id BLOB NOT NULL,
         -- The departed device's credential identity, name@domain/device_id.
         identity TEXT NOT NULL,
         PRIMARY KEY (group_id, identity)
     ) STRICT;",
    // 4: the group's timeline: messages gain the sender's clock, and membership
    // changes (joined, left, removed, rotated) are kept beside them, several per
    // log entry (a commit adding two devices), so `messages` is rebuilt with a
    // `part` in its key. Departure notices keep their reason.
    "CREATE TABLE messages_v4 (
         -- Order of arrival here, which is the order listen shows them in.
         id               INTEGER PRIMARY KEY,
         group_id         BLOB NOT NULL,
         -- Position in the group's log at the hub.
         seq              INTEGER NOT NULL,
         -- Which of the entries made from that log entry: 0 for a message.
         part             INTEGER NOT NULL,
         -- message: an application message; membership: a change of members.
         entry            TEXT NOT NULL CHECK (entry IN ('message', 'membership')),
         -- The sender of a message; who made a membership change (empty if unknown).
         sender_user_id   TEXT NOT NULL,
         sender_device_id TEXT NOT NULL,
         server_time_ms   INTEGER,
         -- The sender's clock at sending, from the envelope (NULL from older clients).
         sent_at_ms       INTEGER,
         -- message: the envelope's type; membership: joined, left, removed,
         -- rotated or rejoined.
         kind             TEXT NOT NULL,
         -- message: for text, the text; membership: why (a departure's reason), or empty.
         body             TEXT NOT NULL,
         -- membership: the device whose membership changed, name@domain/device_id.
         subject          TEXT,
         -- Sent (or made) by this device.
         own              INTEGER NOT NULL,
         -- Not yet handed to a listener.
         unread           INTEGER NOT NULL,
         UNIQUE (group_id, seq, part)
     ) STRICT;
     INSERT INTO messages_v4 (id, group_id, seq, part, entry, sender_user_id,
                              sender_device_id, server_time_ms, kind, body, own, unread)
         SELECT id, group_id, seq, 0, 'message', sender_user_id, sender_device_id,
                server_time_ms, kind, body, own, unread
         FROM messages;
     DROP TABLE messages;
     ALTER TABLE messages_v4 RENAME TO messages;
     CREATE INDEX messages_unread ON messages (group_id, id) WHERE unread = 1;
     ALTER TABLE departed_members ADD COLUMN reason TEXT NOT NULL DEFAULT '';",
    // 5: a submission that lost the race for its epoch is kept, flagged, until
    // its intent is rebuilt for the current epoch (the rebuild replaces it in
    // one transaction), so a failure in between loses nothing; and stored
    // submissions refused after their caller moved on are kept until the
    // application is told.
    "ALTER TABLE pending_submissions ADD COLUMN
         -- 1: the payload is stale (its epoch ended before it landed, and this
         -- device's state of it is rolled back): never send it; catch up and
         -- rebuild the intent for the current epoch.
         lost_race INTEGER NOT NULL DEFAULT 0;
     CREATE TABLE refused_submissions (
         -- Order of refusal.
         id            INTEGER PRIMARY KEY,
         group_id      BLOB NOT NULL,
         -- The intent of the refused submission (JSON, as in pending_submissions).
         intent        TEXT NOT NULL,
         -- Why, in words: the homeserver's refusal, or why it could not be rebuilt.
         reason        TEXT NOT NULL,
         refused_at_ms INTEGER NOT NULL
     ) STRICT;",
];

/// Tables that survive a logout; every other table (the session and all of
/// openmls's) is emptied, because it describes a device that no longer exists.
pub(super) const KEPT_ON_WIPE: &[&str] = &["client_settings", "openmls_sqlite_storage_migrations"];

/// Brings the client's tables up to date inside one transaction.
pub(super) fn migrate(connection: &mut Connection) -> Result<(), StateError> {
    migrate_to(connection, MIGRATIONS.len())
}

/// Brings the client's tables up to schema version `target` (tests start from
/// an older version).
fn migrate_to(connection: &mut Connection, target: usize) -> Result<(), StateError> {
    let transaction = connection.transaction()?;
    let current: usize = transaction.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if current > MIGRATIONS.len() {
        return Err(StateError::TooNew {
            found: current,
            known: MIGRATIONS.len(),
        });
    }
    if current >= target {
        return Ok(());
    }
    for migration in &MIGRATIONS[current..target] {
        transaction.execute_batch(migration)?;
    }
    // PRAGMA takes no bound parameters; the value is a number we produced.
    transaction.execute_batch(&format!("PRAGMA user_version = {target}"))?;
    transaction.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state written by version 4 keeps its stored submissions, in order,
    /// none of them flagged as having lost its race, and gains the table of
    /// refusals.
    #[test]
    fn pending_submissions_survive_the_lost_race_migration() {
        let mut connection = Connection::open_in_memory().unwrap();
        migrate_to(&mut connection, 4).unwrap();
        connection
            .execute_batch(
                r#"INSERT INTO pending_submissions (id, group_id, kind, intent, idempotency_key,
                                                    payload, welcome, extra, epoch, created_at_ms)
                 VALUES (3, x'01', 'message', '{"intent":"text","body":"one"}', x'0a', x'aa',
                         NULL, NULL, 4, 1000),
                        (5, x'01', 'commit', '{"intent":"rotate"}', x'0b', x'bb',
                         NULL, x'cc', 4, 1001);"#,
            )
            .unwrap();
        migrate(&mut connection).unwrap();
        let rows: Vec<(i64, String, Vec<u8>, bool)> = connection
            .prepare("SELECT id, intent, payload, lost_race FROM pending_submissions ORDER BY id")
            .unwrap()
            .query_map([], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            [
                (
                    3,
                    r#"{"intent":"text","body":"one"}"#.to_owned(),
                    vec![0xaa],
                    false
                ),
                (5, r#"{"intent":"rotate"}"#.to_owned(), vec![0xbb], false),
            ]
        );
        let refused: i64 = connection
            .query_row("SELECT count(*) FROM refused_submissions", [], |row| {
                row.get(0)
            })
            .unwrap();
        assert_eq!(refused, 0);
        let version: usize = connection
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len());
    }

    /// A state written by version 3 keeps its messages, unread
    /// marks and departures, and gains the new columns.
    #[test]
    fn messages_survive_the_timeline_migration() {
        let mut connection = Connection::open_in_memory().unwrap();
        migrate_to(&mut connection, 3).unwrap();
        connection
            .execute_batch(
                "INSERT INTO messages (id, group_id, seq, sender_user_id, sender_device_id,
                                       server_time_ms, kind, body, own, unread)
                 VALUES (7, x'01', 5, 'bob@b.example', '00000000000000bb', 1000, 'text', 'hi', 0, 1),
                        (8, x'01', 6, 'alice@a.example', '00000000000000aa', NULL, 'text', 'yo', 1, 0);
                 INSERT INTO departed_members (group_id, identity)
                 VALUES (x'01', 'carol@c.example/00000000000000cc');",
            )
            .unwrap();
        migrate(&mut connection).unwrap();
        type Row = (i64, i64, i64, String, Option<i64>, String, bool);
        let rows: Vec<Row> = connection
            .prepare(
                "SELECT id, seq, part, entry, sent_at_ms, body, unread FROM messages ORDER BY id",
            )
            .unwrap()
            .query_map([], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                    row.get(5)?,
                    row.get(6)?,
                ))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            [
                (7, 5, 0, "message".to_owned(), None, "hi".to_owned(), true),
                (8, 6, 0, "message".to_owned(), None, "yo".to_owned(), false),
            ]
        );
        let reason: String = connection
            .query_row("SELECT reason FROM departed_members", [], |row| row.get(0))
            .unwrap();
        assert_eq!(reason, "");
        let version: usize = connection
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len());
    }
}
