//! Persistence: the only module that knows sea-orm. Everything the homeserver keeps
//! lives in one database (embedded SQLite, or PostgreSQL in production), which is
//! the source of truth: uniqueness and exactly-once rules are enforced by unique keys
//! and single-statement updates, never by process memory, so several replicas on one
//! PostgreSQL behave as one.
//!
//! Query functions take any [`Connection`] (`&Store` for one statement, a
//! [`Transaction`] for several that must commit together) and return the
//! store's own records, never sea-orm's models: database integers are converted
//! to sequence numbers, epochs and ids with checks (`convert`), so a corrupt
//! value is an error naming its row, never a silent 0.

mod accounts;
mod admin_groups;
mod admin_overview;
mod admin_roles;
mod admin_sessions;
mod audit;
pub(crate) mod convert;
mod departures;
mod enrolment;
mod entities;
mod federation;
mod groups;
mod heads;
mod inbox;
mod key_packages;
mod leases;
mod log;
mod members;
mod migrations;
mod pruning;
mod registration_tokens;
mod schema;
mod submissions;
mod user_admin;

/// A log filter directive that every log filter must end with: sea-orm's
/// PostgreSQL driver records its connect options, the database URL with its
/// password, in a TRACE span, which every event inside it would print. Held
/// at DEBUG whatever the configured filter says.
pub(crate) const SECRET_BEARING_LOG_TARGETS: &str = "sea_orm::driver::sqlx_postgres=debug";

pub(crate) use accounts::*;
pub(crate) use admin_groups::*;
pub(crate) use admin_overview::*;
pub(crate) use admin_roles::*;
pub(crate) use admin_sessions::*;
pub(crate) use audit::*;
pub(crate) use departures::*;
pub(crate) use enrolment::*;
pub(crate) use federation::*;
pub(crate) use groups::*;
pub(crate) use heads::*;
pub(crate) use inbox::*;
pub(crate) use key_packages::*;
pub(crate) use leases::*;
pub(crate) use log::*;
pub(crate) use members::*;
pub(crate) use pruning::*;
pub(crate) use registration_tokens::*;
pub(crate) use submissions::*;
pub(crate) use user_admin::*;

use crate::config::{DatabaseKind, database_kind};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbErr,
    SqlErr, SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use std::time::Duration;

/// A failure that is not the caller's fault.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database is unreachable or refused a statement.
    #[error("database error: {0}")]
    Database(#[from] DbErr),
    /// A stored value breaks a rule it was checked against when stored, e.g. a
    /// negative sequence number.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The database has applied migrations this binary does not know: a newer
    /// release migrated it. Serving (or migrating) with an older schema's idea
    /// of the tables could corrupt them, so the binary refuses.
    #[error(
        "the database schema is newer than this conclave-homeserver: it has applied migrations this binary does not know ({}); upgrade conclave-homeserver to the release that applied them",
        .unknown.join(", ")
    )]
    SchemaTooNew { unknown: Vec<String> },
}

impl StoreError {
    /// True if the statement broke a unique key, i.e. the row already exists.
    pub(crate) fn is_unique_violation(&self) -> bool {
        match self {
            StoreError::Database(error) => {
                matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
            }
            StoreError::Corrupt(_) | StoreError::SchemaTooNew { .. } => false,
        }
    }
}

/// An open transaction: the writes of one use case, applied together by
/// [`Transaction::commit`] or not at all (dropping it rolls back).
pub(crate) struct Transaction(DatabaseTransaction);

impl Transaction {
    pub(crate) async fn commit(self) -> Result<(), StoreError> {
        Ok(self.0.commit().await?)
    }
}

/// Inserts `model`; `false` if a unique key already holds such a row (the
/// database, not a read before the write, decides who was first).
async fn insert_unless_taken<A>(db: &impl Connection, model: A) -> Result<bool, StoreError>
where
    A: sea_orm::ActiveModelTrait + Send,
    <A::Entity as sea_orm::EntityTrait>::Model: sea_orm::IntoActiveModel<A>,
{
    match <A::Entity as sea_orm::EntityTrait>::insert(model)
        .exec_without_returning(db.database())
        .await
        .map_err(StoreError::from)
    {
        Ok(_) => Ok(true),
        Err(error) if error.is_unique_violation() => Ok(false),
        Err(error) => Err(error),
    }
}

/// Anything a query can run on: the pool ([`Store`]) or an open [`Transaction`].
pub(crate) trait Connection: Sync {
    /// The sea-orm connection behind it, for the queries in this module.
    fn database(&self) -> &impl ConnectionTrait;
}

impl Connection for Store {
    fn database(&self) -> &impl ConnectionTrait {
        &self.connection
    }
}

impl Connection for Transaction {
    fn database(&self) -> &impl ConnectionTrait {
        &self.0
    }
}

/// A reference to a connection is one too, so `&store` works where `store` is
/// already a reference (as in the store's own tests).
impl<C: Connection> Connection for &C {
    fn database(&self) -> &impl ConnectionTrait {
        (**self).database()
    }
}

/// The connection pool, and which kind of database is behind it.
#[derive(Clone, Debug)]
pub struct Store {
    connection: DatabaseConnection,
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
        Ok(Store { connection })
    }

    /// Connects to look, changing nothing (for `check-config --connect`): one
    /// connection, within `timeout`; a SQLite database is opened read-only
    /// and never created, nor its directory: `None` when its file does not
    /// exist yet (a start creates it).
    pub async fn connect_to_look(
        url: &str,
        timeout: Duration,
    ) -> Result<Option<Store>, StoreError> {
        let kind = database_kind(url).map_err(DbErr::Custom)?;
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .max_connections(1)
            .min_connections(0)
            .connect_timeout(timeout)
            .acquire_timeout(timeout)
            .sqlx_logging(false);
        if kind == DatabaseKind::Sqlite {
            use sea_orm::sqlx::sqlite::SqliteConnectOptions;
            use std::str::FromStr as _;
            let file = SqliteConnectOptions::from_str(url)
                .map_err(|error| DbErr::Custom(format!("not a usable sqlite: URL: {error}")))?;
            let filename = file.get_filename();
            if !filename.exists() {
                return Ok(None);
            }
            // Even read-only, SQLite makes the write-ahead log's `-wal` and
            // `-shm` files when they are missing. They are missing when no
            // server has the database open (its last close moved the log into
            // the file), so the file alone is the whole truth: read it as
            // immutable, which makes nothing. With them present (a server
            // runs), a read-only connection reads the log too and makes nothing.
            let mut write_ahead_log = filename.as_os_str().to_owned();
            write_ahead_log.push("-wal");
            let immutable = !std::path::Path::new(&write_ahead_log).exists();
            options.map_sqlx_sqlite_opts(move |sqlite| {
                sqlite
                    .read_only(true)
                    .create_if_missing(false)
                    .immutable(immutable)
            });
        }
        let connecting = async {
            let connection = Database::connect(options).await?;
            connection.ping().await?;
            Ok::<_, DbErr>(connection)
        };
        match tokio::time::timeout(timeout, connecting).await {
            Ok(connection) => Ok(Some(Store {
                connection: connection?,
            })),
            Err(_) => Err(StoreError::Database(DbErr::Custom(format!(
                "no answer within {} s",
                timeout.as_secs()
            )))),
        }
    }

    /// The migrations a start would apply, oldest first, reading only; an
    /// error ([`StoreError::SchemaTooNew`]) for a database migrated by a newer
    /// release, which a start refuses.
    pub async fn pending_migrations(&self) -> Result<Vec<String>, StoreError> {
        schema::pending(&self.connection).await
    }

    /// Applies every migration not yet applied, once even when replicas start
    /// together (see `schema`), and returns their names, oldest first. Refuses
    /// a database that has migrations this binary does not know
    /// ([`StoreError::SchemaTooNew`]).
    pub async fn migrate(&self) -> Result<Vec<String>, StoreError> {
        schema::migrate(&self.connection).await
    }

    /// Ready means: the database answers and no migration is pending; one
    /// unknown to this binary (a newer release's) is [`StoreError::SchemaTooNew`].
    pub async fn is_ready(&self) -> Result<bool, StoreError> {
        self.connection.ping().await?;
        schema::is_current(&self.connection).await
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
        Ok(Transaction(
            self.connection.begin_with_options(options).await?,
        ))
    }

    /// Whether the database takes one writing transaction at a time (SQLite:
    /// a second waits in its busy handler, which sleeps in steps of up to
    /// 100 ms), so that writers gain nothing by running side by side.
    pub(crate) fn writes_one_at_a_time(&self) -> bool {
        self.connection.get_database_backend() == sea_orm::DbBackend::Sqlite
    }

    /// The pool's connections at this moment (for the metrics; the numbers
    /// move as requests take and return connections).
    pub(crate) fn pool_connections(&self) -> PoolConnections {
        // `database_kind` accepted only these two at connect time.
        match self.connection.get_database_backend() {
            sea_orm::DbBackend::Postgres => {
                PoolConnections::of(self.connection.get_postgres_connection_pool())
            }
            _ => PoolConnections::of(self.connection.get_sqlite_connection_pool()),
        }
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(self) -> Result<(), StoreError> {
        Ok(self.connection.close().await?)
    }
}

/// The connection pool's connections: open and idle, open and lent to a
/// query or transaction, and the most it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PoolConnections {
    pub(crate) idle: u64,
    pub(crate) in_use: u64,
    pub(crate) max: u64,
}

impl PoolConnections {
    fn of<DB: sea_orm::sqlx::Database>(pool: &sea_orm::sqlx::Pool<DB>) -> PoolConnections {
        let open = u64::from(pool.size());
        // Read one after the other, so a connection may move in between.
        let idle = u64::try_from(pool.num_idle()).unwrap_or(u64::MAX).min(open); // tidy: saturating (usize is at most 64 bits)
        PoolConnections {
            idle,
            in_use: open - idle,
            max: u64::from(pool.options().get_max_connections()),
        }
    }
}

/// `postgres at HOST:PORT, database NAME` or `sqlite at PATH`; an error
/// when the driver refuses the URL (its message repeats no part of the URL
/// but parameter names); `None` for a scheme that is neither.
pub(crate) fn describe_database_url(url: &str) -> Option<Result<String, String>> {
    use sea_orm::sqlx::postgres::PgConnectOptions;
    use sea_orm::sqlx::sqlite::SqliteConnectOptions;
    use std::str::FromStr as _;
    match database_kind(url).ok()? {
        DatabaseKind::Postgres => Some(
            PgConnectOptions::from_str(url)
                .map(|options| {
                    format!(
                        "postgres at {}:{}, database {}",
                        options.get_host(),
                        options.get_port(),
                        options.get_database().unwrap_or("(the user's)")
                    )
                })
                .map_err(|error| format!("not a usable postgres:// URL: {error}")),
        ),
        DatabaseKind::Sqlite => Some(
            SqliteConnectOptions::from_str(url)
                .map(|options| format!("sqlite at {}", options.get_filename().display()))
                .map_err(|error| format!("not a usable sqlite: URL: {error}")),
        ),
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

/// Fixtures other modules' tests share.
#[cfg(test)]
pub(crate) use heads::tests as heads_tests;
