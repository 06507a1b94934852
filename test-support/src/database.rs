//! A database that exists for one test server and is removed afterwards: an
//! SQLite file in a temporary directory, or a fresh PostgreSQL database on the
//! server named by `CONCLAVE_TEST_POSTGRES_URL` (default
//! [`DEFAULT_TEST_POSTGRES_URL`]). A test that asks for PostgreSQL fails loudly
//! when it cannot reach it; it never skips.

use sea_orm::{ConnectionTrait as _, Database, DbErr};

/// The PostgreSQL server tests use, unless `CONCLAVE_TEST_POSTGRES_URL` says otherwise.
pub const DEFAULT_TEST_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Which database a test server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseChoice {
    Sqlite,
    Postgres,
}

impl DatabaseChoice {
    /// Both, for tests that must pass on each.
    pub const ALL: [DatabaseChoice; 2] = [DatabaseChoice::Sqlite, DatabaseChoice::Postgres];
}

/// A database that exists for one test and is removed when dropped.
pub struct TestDatabase {
    url: String,
    /// Keeps the SQLite file's directory alive.
    _directory: tempfile::TempDir,
    /// For PostgreSQL: the admin URL and the database's name, to drop it.
    postgres: Option<(String, String)>,
}

impl TestDatabase {
    pub async fn create(choice: DatabaseChoice) -> TestDatabase {
        let directory = tempfile::tempdir().expect("cannot create a temporary directory");
        match choice {
            DatabaseChoice::Sqlite => TestDatabase {
                url: format!(
                    "sqlite://{}?mode=rwc",
                    directory.path().join("conclave.sqlite").display()
                ),
                _directory: directory,
                postgres: None,
            },
            DatabaseChoice::Postgres => {
                let admin_url = std::env::var("CONCLAVE_TEST_POSTGRES_URL")
                    .unwrap_or_else(|_| DEFAULT_TEST_POSTGRES_URL.to_owned());
                let name = format!("conclave_test_{}", hex::encode(random_bytes_8()));
                let url = create_postgres_database(&admin_url, &name)
                    .await
                    .unwrap_or_else(|error| {
                        panic!(
                            "this test needs PostgreSQL at {admin_url} (set CONCLAVE_TEST_POSTGRES_URL, or start it; see README.md): {error}"
                        )
                    });
                TestDatabase {
                    url,
                    _directory: directory,
                    postgres: Some((admin_url, name)),
                }
            }
        }
    }

    /// An empty stand-in that owns nothing to remove, for a struct whose real
    /// database was moved out (see `TestHomeserver::stop`).
    pub(crate) fn placeholder() -> TestDatabase {
        TestDatabase {
            url: String::new(),
            _directory: tempfile::tempdir().expect("cannot create a temporary directory"),
            postgres: None,
        }
    }

    /// Another handle on this database, for a second server on it (a replica
    /// of a cluster): it removes nothing when dropped, so this one must live
    /// at least as long.
    pub fn share(&self) -> TestDatabase {
        TestDatabase {
            url: self.url.clone(),
            _directory: tempfile::tempdir().expect("cannot create a temporary directory"),
            postgres: None,
        }
    }

    /// The URL a homeserver's `database.url` takes.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs SQL on the database behind the homeserver's back, for tests that
    /// need a state no request makes (say, a migration of a newer release).
    pub async fn execute(&self, sql: &str) -> Result<(), DbErr> {
        let connection = Database::connect(&self.url).await?;
        connection.execute_unprepared(sql).await?;
        connection.close().await
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((admin_url, name)) = self.postgres.take() else {
            return;
        };
        // Drop runs outside async, maybe inside a runtime: use a thread of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime
                .block_on(drop_postgres_database(&admin_url, &name))
                .ok()
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("warning: could not drop a test database");
        }
    }
}

/// 64 random bits, for a database name no other test run uses.
fn random_bytes_8() -> [u8; 8] {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the operating system's random number generator failed");
    bytes
}

/// Creates an empty PostgreSQL database and returns its URL. `admin_url` names
/// any database on the server, e.g. `postgres`.
async fn create_postgres_database(admin_url: &str, name: &str) -> Result<String, DbErr> {
    // Options after `?` (say `sslmode=disable`) apply to the new database too.
    let (path, options) = match admin_url.split_once('?') {
        Some((path, options)) => (path, format!("?{options}")),
        None => (admin_url, String::new()),
    };
    let (base, _) = path
        .rsplit_once('/')
        .ok_or_else(|| DbErr::Custom(format!("{admin_url} does not end in /DATABASE")))?;
    let admin = Database::connect(admin_url).await?;
    admin
        .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
        .await?;
    admin.close().await?;
    Ok(format!("{base}/{name}{options}"))
}

/// Drops a database made by [`create_postgres_database`], closing its connections.
async fn drop_postgres_database(admin_url: &str, name: &str) -> Result<(), DbErr> {
    let admin = Database::connect(admin_url).await?;
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await?;
    admin.close().await?;
    Ok(())
}

/// A PostgreSQL table (or some of its rows) locked by the test (in a
/// transaction of its own), so that every statement of the homeserver touching
/// it waits:
/// a call held in flight for as long as the test wants. Released by
/// [`TableLock::release`] (or when dropped, with its connection).
pub struct TableLock {
    connection: sea_orm::DatabaseConnection,
    transaction: sea_orm::DatabaseTransaction,
}

impl TableLock {
    /// Locks `table` of the PostgreSQL database at `url`.
    pub async fn take(url: &str, table: &str) -> TableLock {
        use sea_orm::TransactionTrait as _;
        let connection = Database::connect(url)
            .await
            .unwrap_or_else(|error| panic!("cannot connect to {url}: {error}"));
        let transaction = connection.begin().await.expect("beginning a transaction");
        transaction
            .execute_unprepared(&format!("LOCK TABLE \"{table}\" IN ACCESS EXCLUSIVE MODE"))
            .await
            .unwrap_or_else(|error| panic!("cannot lock {table}: {error}"));
        TableLock {
            connection,
            transaction,
        }
    }

    /// Locks the rows that `select_for_update` (a `SELECT ... FOR UPDATE`)
    /// selects in the PostgreSQL database at `url`: a row-level hold, as a
    /// transaction of the homeserver holds a group's row while it applies a
    /// commit.
    pub async fn rows(url: &str, select_for_update: &str) -> TableLock {
        use sea_orm::TransactionTrait as _;
        let connection = Database::connect(url)
            .await
            .unwrap_or_else(|error| panic!("cannot connect to {url}: {error}"));
        let transaction = connection.begin().await.expect("beginning a transaction");
        let locked = transaction
            .execute_unprepared(select_for_update)
            .await
            .unwrap_or_else(|error| panic!("{select_for_update}: {error}"));
        assert!(
            locked.rows_affected() > 0,
            "{select_for_update} locked no row"
        );
        TableLock {
            connection,
            transaction,
        }
    }

    /// How many sessions on this database wait for a lock now (the test's
    /// callers blocked on this one, once they reached the database).
    pub async fn waiters(&self) -> i64 {
        let statement = sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            // Sessions, not lock rows: a session waiting for a row waits on
            // the holder's transaction id, a lock without a database.
            "SELECT count(*) AS waiting FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        );
        self.connection
            .query_one_raw(statement)
            .await
            .expect("reading pg_locks")
            .expect("count(*) returns a row")
            .try_get::<i64>("", "waiting")
            .expect("a count")
    }

    /// Ends the lock; the waiting statements go on.
    pub async fn release(self) {
        self.transaction.commit().await.expect("releasing the lock");
        let _ = self.connection.close().await;
    }
}
