//! Counting what PostgreSQL wrote: per-table tuple counters of the benchmark's
//! database (`pg_stat_user_tables`: inserted, updated, deleted rows; catalog
//! tables are left out, so autovacuum's statistics updates do not count). They
//! are per database, so other users of the same PostgreSQL server do not
//! disturb them (cluster-wide counters such as the WAL position would be).
//!
//! PostgreSQL 15 publishes a backend's counters when it goes idle, at most once
//! a second, and at the latest 10 seconds later, so [`DatabaseProbe::snapshot`]
//! first waits for the server's pooled connections to have published theirs.
//!
//! [`DatabaseProbe::round_trips`] times single queries with one bytea parameter
//! of growing size through the same stack as the homeserver (sea-orm over sqlx
//! 0.9 over TCP), which shows what a large parameter costs by itself.

use crate::report::Samples;
use anyhow::Context as _;
use sea_orm::{ConnectionTrait as _, Database, DatabaseConnection, DbBackend, Statement, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// PostgreSQL's `PGSTAT_IDLE_INTERVAL` (10 s), plus a margin.
const STATS_FLUSH_WAIT: Duration = Duration::from_millis(11_000);

/// Rows written to one table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RowWrites {
    pub(crate) inserted: i64,
    pub(crate) updated: i64,
    pub(crate) deleted: i64,
}

impl RowWrites {
    pub(crate) fn total(&self) -> i64 {
        self.inserted + self.updated + self.deleted
    }
}

/// The counters at one moment.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    tables: BTreeMap<String, RowWrites>,
}

/// What was written between two snapshots.
#[derive(Debug, Clone, Default)]
pub(crate) struct Writes {
    /// Tables with any writes.
    pub(crate) tables: BTreeMap<String, RowWrites>,
}

impl Writes {
    pub(crate) fn rows(&self) -> i64 {
        self.tables.values().map(RowWrites::total).sum()
    }
}

impl Snapshot {
    /// `later` minus `self`.
    pub(crate) fn writes_until(&self, later: &Snapshot) -> Writes {
        let mut tables = BTreeMap::new();
        for (table, after) in &later.tables {
            let before = self.tables.get(table).copied().unwrap_or_default();
            let writes = RowWrites {
                inserted: after.inserted - before.inserted,
                updated: after.updated - before.updated,
                deleted: after.deleted - before.deleted,
            };
            if writes != RowWrites::default() {
                tables.insert(table.clone(), writes);
            }
        }
        Writes { tables }
    }
}

/// Sizes of the parameter in [`DatabaseProbe::round_trips`]: on both sides of
/// the size where, on the reference machine, a query became 40 ms slower.
const PARAMETER_SIZES: [usize; 6] = [1_000, 16_000, 20_000, 64_000, 200_000, 2_000_000];
/// Queries timed per size.
const ROUND_TRIPS_PER_SIZE: usize = 7;

/// A connection of its own to the homeserver's database.
pub(crate) struct DatabaseProbe {
    connection: DatabaseConnection,
}

impl DatabaseProbe {
    pub(crate) async fn connect(url: &str) -> anyhow::Result<DatabaseProbe> {
        let connection = Database::connect(url)
            .await
            .context("cannot connect to the benchmark's PostgreSQL database")?;
        Ok(DatabaseProbe { connection })
    }

    /// The counters once every backend has published what it did so far.
    pub(crate) async fn snapshot(&self) -> anyhow::Result<Snapshot> {
        tokio::time::sleep(STATS_FLUSH_WAIT).await;
        let mut tables = BTreeMap::new();
        let rows = self
            .connection
            .query_all_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT relname::text AS relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables",
            ))
            .await?;
        for row in rows {
            tables.insert(
                row.try_get::<String>("", "relname")?,
                RowWrites {
                    inserted: row.try_get("", "n_tup_ins")?,
                    updated: row.try_get("", "n_tup_upd")?,
                    deleted: row.try_get("", "n_tup_del")?,
                },
            );
        }
        Ok(Snapshot { tables })
    }

    /// `SELECT length($1::bytea)` with a parameter of each of [`PARAMETER_SIZES`].
    pub(crate) async fn round_trips(&self) -> anyhow::Result<Vec<(usize, Samples)>> {
        let mut results = Vec::with_capacity(PARAMETER_SIZES.len());
        for size in PARAMETER_SIZES {
            let mut durations = Vec::with_capacity(ROUND_TRIPS_PER_SIZE);
            for _ in 0..ROUND_TRIPS_PER_SIZE {
                let statement = Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT length($1::bytea) AS n",
                    [Value::from(vec![7u8; size])],
                );
                let started = Instant::now();
                self.connection.query_one_raw(statement).await?;
                durations.push(started.elapsed());
            }
            results.push((size, Samples::new(durations)));
        }
        Ok(results)
    }

    pub(crate) async fn close(self) -> anyhow::Result<()> {
        Ok(self.connection.close().await?)
    }
}
