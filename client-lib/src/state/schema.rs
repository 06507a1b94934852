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
