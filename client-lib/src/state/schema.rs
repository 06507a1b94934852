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
];

/// Tables that survive a logout; every other table (the session and all of
/// openmls's) is emptied, because it describes a device that no longer exists.
pub(super) const KEPT_ON_WIPE: &[&str] = &["client_settings", "openmls_sqlite_storage_migrations"];

/// Brings the client's tables up to date inside one transaction.
pub(super) fn migrate(connection: &mut Connection) -> Result<(), StateError> {
    let transaction = connection.transaction()?;
    let current: usize = transaction.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if current > MIGRATIONS.len() {
        return Err(StateError::TooNew {
            found: current,
            known: MIGRATIONS.len(),
        });
    }
    for migration in &MIGRATIONS[current..] {
        transaction.execute_batch(migration)?;
    }
    // PRAGMA takes no bound parameters; the value is a number we produced.
    transaction.execute_batch(&format!("PRAGMA user_version = {}", MIGRATIONS.len()))?;
    transaction.commit()?;
    Ok(())
}
