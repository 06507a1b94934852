//! Bringing the schema up to date: the migrations this binary knows, applied
//! once however many replicas start together, and a refusal to touch a schema
//! that a newer binary has already moved on.
//!
//! On PostgreSQL every replica (and `conclave-homeserver migrate`) migrates
//! inside one transaction that first takes a transaction-level advisory lock on
//! [`MIGRATION_LOCK_KEY`]: a second replica waits for the first to commit, then
//! finds nothing pending. Without it, two replicas would both create
//! `seaql_migrations` and race through the same `CREATE TABLE`s. The lock goes
//! with the transaction, so a replica that dies mid-migration releases it (and
//! rolls its migrations back: PostgreSQL's DDL is transactional). SQLite has a
//! single writer and needs no lock.

use super::StoreError;
use super::migrations::Migrator;
use sea_orm::{
    ConnectionTrait, DatabaseBackend, DatabaseConnection, EntityTrait, Statement, TransactionTrait,
};
use sea_orm_migration::{
    IntoSchemaManagerConnection, MigratorTrait, SchemaManager, seaql_migrations,
};
use std::collections::HashSet;

/// The advisory lock key all replicas of all Conclave homeservers take to
/// migrate ("conclave" in ASCII). Advisory locks are per database, so
/// homeservers on different databases of one PostgreSQL server do not wait
/// for each other.
const MIGRATION_LOCK_KEY: i64 = 0x636f_6e63_6c61_7665;

/// Applies every migration this binary knows that the database lacks, and
/// returns their names, oldest first (empty when the schema was up to date).
/// Refuses with [`StoreError::SchemaTooNew`], changing nothing, when the
/// database has applied migrations this binary does not know.
pub(super) async fn migrate(connection: &DatabaseConnection) -> Result<Vec<String>, StoreError> {
    if connection.get_database_backend() != DatabaseBackend::Postgres {
        let pending = pending(connection).await?;
        Migrator::up(connection, None).await?;
        return Ok(pending);
    }
    let transaction = connection.begin().await?;
    transaction
        .execute_raw(Statement::from_sql_and_values(
            DatabaseBackend::Postgres,
            "SELECT pg_advisory_xact_lock($1)",
            [MIGRATION_LOCK_KEY.into()],
        ))
        .await?;
    let pending = pending(&transaction).await?;
    // Each migration runs in a savepoint of this transaction; the whole set
    // commits together, with the lock's release.
    Migrator::up(&transaction, None).await?;
    transaction.commit().await?;
    Ok(pending)
}

/// The names of the migrations this binary would apply, oldest first; an
/// error if the database has applied one this binary does not know.
pub(super) async fn pending<'c, C>(connection: &'c C) -> Result<Vec<String>, StoreError>
where
    C: ConnectionTrait,
    &'c C: IntoSchemaManagerConnection<'c>,
{
    let applied = applied_names(connection).await?;
    let known: Vec<String> = Migrator::migrations()
        .iter()
        .map(|migration| migration.name().to_owned())
        .collect();
    let known_set: HashSet<&str> = known.iter().map(String::as_str).collect();
    let mut unknown: Vec<String> = applied
        .iter()
        .filter(|name| !known_set.contains(name.as_str()))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        unknown.sort();
        return Err(StoreError::SchemaTooNew { unknown });
    }
    let applied: HashSet<&str> = applied.iter().map(String::as_str).collect();
    Ok(known
        .into_iter()
        .filter(|name| !applied.contains(name.as_str()))
        .collect())
}

/// The migrations recorded in `seaql_migrations` (none if it does not exist:
/// a fresh database). Reads only: it creates no table.
async fn applied_names<'c, C>(connection: &'c C) -> Result<Vec<String>, StoreError>
where
    C: ConnectionTrait,
    &'c C: IntoSchemaManagerConnection<'c>,
{
    let table = Migrator::migration_table_name().to_string();
    if !SchemaManager::new(connection).has_table(&table).await? {
        return Ok(Vec::new());
    }
    Ok(seaql_migrations::Entity::find()
        .all(connection)
        .await?
        .into_iter()
        .map(|model| model.version)
        .collect())
}

/// Ready to serve: no migration pending and none unknown. Reads only (no
/// `CREATE TABLE` on every probe).
pub(super) async fn is_current(connection: &DatabaseConnection) -> Result<bool, StoreError> {
    Ok(pending(connection).await?.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::store::migrations::{UNCOMPRESSED_BLOBS, UNCOMPRESSED_BLOBS_M0012};
    use conclave_test_support::{DatabaseChoice, TestDatabase, on_both_databases};

    async fn record_unknown_migration(store: &Store, name: &str) {
        let backend = store.connection.get_database_backend();
        let placeholder = match backend {
            DatabaseBackend::Postgres => "$1, $2",
            _ => "?, ?",
        };
        store
            .connection
            .execute_raw(Statement::from_sql_and_values(
                backend,
                format!(
                    "INSERT INTO seaql_migrations (version, applied_at) VALUES ({placeholder})"
                ),
                [name.into(), 0i64.into()],
            ))
            .await
            .unwrap();
    }

    fn known_names() -> Vec<String> {
        Migrator::migrations()
            .iter()
            .map(|migration| migration.name().to_owned())
            .collect()
    }

    async fn applies_each_migration_once_and_reports_it(database: DatabaseChoice) {
        let database = TestDatabase::create(database).await;
        let store = Store::connect(database.url(), 2).await.unwrap();
        assert!(!store.is_ready().await.unwrap());
        assert_eq!(store.migrate().await.unwrap(), known_names());
        assert_eq!(store.migrate().await.unwrap(), Vec::<String>::new());
        assert!(store.is_ready().await.unwrap());
        store.close().await.unwrap();
    }

    async fn a_schema_newer_than_the_binary_is_refused(database: DatabaseChoice) {
        let database = TestDatabase::create(database).await;
        let store = Store::connect(database.url(), 2).await.unwrap();
        store.migrate().await.unwrap();
        record_unknown_migration(&store, "m9999_from_a_newer_release").await;
        let error = store.migrate().await.unwrap_err();
        let StoreError::SchemaTooNew { unknown } = &error else {
            panic!("{error}");
        };
        assert_eq!(unknown, &["m9999_from_a_newer_release".to_owned()]);
        let message = error.to_string();
        assert!(message.contains("m9999_from_a_newer_release"), "{message}");
        assert!(message.contains("upgrade"), "{message}");
        // Not ready either: a load balancer keeps sending elsewhere.
        assert!(store.is_ready().await.is_err());
        store.close().await.unwrap();
    }

    on_both_databases!(
        applies_each_migration_once_and_reports_it,
        a_schema_newer_than_the_binary_is_refused,
    );

    /// Replicas started together: each migrates on its own pool, at once; the
    /// lock lets one apply everything and the other find nothing pending.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_migrations_on_postgres_apply_each_migration_once() {
        let database = TestDatabase::create(DatabaseChoice::Postgres).await;
        let first = Store::connect(database.url(), 1).await.unwrap();
        let second = Store::connect(database.url(), 1).await.unwrap();
        let (first_applied, second_applied) = tokio::join!(first.migrate(), second.migrate());
        let (first_applied, second_applied) = (first_applied.unwrap(), second_applied.unwrap());
        let mut all = first_applied.clone();
        all.extend(second_applied.iter().cloned());
        assert_eq!(
            all,
            known_names(),
            "first {first_applied:?}, second {second_applied:?}"
        );
        let recorded = applied_names(&first.connection).await.unwrap();
        assert_eq!(recorded.len(), known_names().len(), "{recorded:?}");
        first.close().await.unwrap();
        second.close().await.unwrap();
    }

    /// The hub's large values are keys, signatures and ciphertext: compressing
    /// them on every commit cost time and saved nothing (m0011, m0012).
    #[tokio::test]
    async fn hub_blobs_are_stored_uncompressed_on_postgres() {
        let database = TestDatabase::create(DatabaseChoice::Postgres).await;
        let store = Store::connect(database.url(), 1).await.unwrap();
        store.migrate().await.unwrap();
        let rows = store
            .connection
            .query_all_raw(Statement::from_string(
                DatabaseBackend::Postgres,
                "SELECT c.relname::text AS table_name, a.attname::text AS column_name, \
                   a.attstorage::text AS storage \
                 FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = current_schema() AND c.relkind = 'r' \
                   AND a.attnum > 0 AND NOT a.attisdropped \
                   AND format_type(a.atttypid, a.atttypmod) = 'bytea' \
                   AND a.attstorage = 'e' \
                 ORDER BY 1, 2",
            ))
            .await
            .unwrap();
        let external: Vec<(String, String)> = rows
            .iter()
            .map(|row| {
                (
                    row.try_get::<String>("", "table_name").unwrap(),
                    row.try_get::<String>("", "column_name").unwrap(),
                )
            })
            .collect();
        // 'e': EXTERNAL, out of line and never compressed; every other bytea
        // column keeps PostgreSQL's default.
        let mut expected: Vec<(String, String)> = UNCOMPRESSED_BLOBS
            .iter()
            .chain(&UNCOMPRESSED_BLOBS_M0012)
            .map(|(table, column)| ((*table).to_owned(), (*column).to_owned()))
            .collect();
        expected.sort();
        assert_eq!(external, expected);
        store.close().await.unwrap();
    }
}
