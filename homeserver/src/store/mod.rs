//! Persistence: the only module that knows sea-orm. Everything the homeserver keeps
//! lives in one database (embedded SQLite, or PostgreSQL in production), which is
//! the source of truth: uniqueness and exactly-once rules are enforced by unique keys
//! and single-statement updates, never by process memory, so several replicas on one
//! PostgreSQL behave as one.
//!
//! Query functions take any connection (`&Store` for one statement, a
//! [`Transaction`] for several that must commit together).

mod accounts;
mod entities;
mod federation;
mod groups;
mod key_packages;
mod migrations;

pub(crate) use accounts::*;
pub(crate) use federation::*;
pub(crate) use groups::*;
pub(crate) use key_packages::*;

use crate::config::{DatabaseKind, database_kind};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr, SqlErr,
    SqliteTransactionMode, TransactionOptions,
};
use sea_orm_migration::MigratorTrait;
use std::time::Duration;

pub(crate) use entities::device::Model as DeviceRecord;
pub(crate) use entities::user::Model as UserRecord;
pub(crate) use sea_orm::DatabaseTransaction as Transaction;
pub(crate) use sea_orm::TransactionTrait;

/// A database failure that is not the caller's fault (unreachable, broken query).
#[derive(Debug, thiserror::Error)]
#[error("database error: {0}")]
pub struct StoreError(#[from] DbErr);

impl StoreError {
    /// True if the statement broke a unique key, i.e. the row already exists.
    pub(crate) fn is_unique_violation(&self) -> bool {
        matches!(self.0.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
    }
}

/// The connection pool, and which kind of database is behind it.
#[derive(Clone, Debug)]
pub struct Store {
    connection: DatabaseConnection,
    kind: DatabaseKind,
}

impl Store {
    /// Connects to the database named by `url`. For SQLite, the file's directory is
    /// created first so the embedded default works in an empty working directory.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        let kind = database_kind(url).map_err(DbErr::Custom)?;
        if kind == DatabaseKind::Sqlite {
            create_sqlite_directory(url)?;
        }
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .max_connections(max_connections)
            .connect_timeout(Duration::from_secs(10))
            .sqlx_logging(false);
        // Write-ahead logging lets readers (delivery streams) run while a writer
        // commits, and costs one sync per commit instead of the rollback journal's
        // several. `synchronous = FULL` keeps that sync: an acknowledged
        // submission survives power loss, not only a crash of the process.
        options.map_sqlx_sqlite_opts(|sqlite| {
            use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
            sqlite
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(10))
        });
        let connection = Database::connect(options).await?;
        Ok(Store { connection, kind })
    }

    /// Applies every migration not yet applied.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        migrations::Migrator::up(&self.connection, None).await?;
        Ok(())
    }

    /// Ready means: the database answers, and no migration is pending.
    pub async fn is_ready(&self) -> Result<bool, StoreError> {
        self.connection.ping().await?;
        let pending = migrations::Migrator::get_pending_migrations(&self.connection).await?;
        Ok(pending.is_empty())
    }

    /// Starts a transaction; dropping it without `commit()` rolls it back.
    ///
    /// On SQLite it begins IMMEDIATE, taking the write lock up front: a deferred
    /// transaction that reads and then writes fails with "database is locked" when
    /// another writer got in between, instead of waiting its turn.
    pub(crate) async fn begin(&self) -> Result<Transaction, StoreError> {
        let options = TransactionOptions {
            isolation_level: None,
            access_mode: None,
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        };
        Ok(self.connection.begin_with_options(options).await?)
    }

    pub(crate) fn kind(&self) -> DatabaseKind {
        self.kind
    }

    /// The SQL dialect, for the few statements written by hand.
    pub(crate) fn backend(&self) -> sea_orm::DbBackend {
        match self.kind {
            DatabaseKind::Postgres => sea_orm::DbBackend::Postgres,
            DatabaseKind::Sqlite => sea_orm::DbBackend::Sqlite,
        }
    }

    pub(crate) fn connection(&self) -> &DatabaseConnection {
        &self.connection
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(self) -> Result<(), StoreError> {
        Ok(self.connection.close().await?)
    }
}

/// `sqlite://dir/file.sqlite?mode=rwc` -> creates `dir`.
fn create_sqlite_directory(url: &str) -> Result<(), StoreError> {
    let path = url
        .trim_start_matches("sqlite:")
        .trim_start_matches("//")
        .split('?')
        .next()
        .unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    if let Some(directory) = std::path::Path::new(path).parent()
        && !directory.as_os_str().is_empty()
    {
        std::fs::create_dir_all(directory).map_err(|error| {
            DbErr::Custom(format!(
                "cannot create the database directory {}: {error}",
                directory.display()
            ))
        })?;
    }
    Ok(())
}

/// Anything a query can run on: the pool or an open transaction.
pub(crate) trait Connection: ConnectionTrait {}
impl<C: ConnectionTrait> Connection for C {}
