//! Counting what PostgreSQL wrote: per-table tuple counters of the benchmark's
//! database (`pg_stat_user_tables`: inserted, updated, deleted rows; catalog
//! tables are left out, so autovacuum's statistics updates do not count). They
//! are per database, so other users of the same PostgreSQL server do not
//! disturb them (cluster-wide counters such as the WAL position would be).
//!
//! PostgreSQL 15 publishes a backend's counters when it goes idle, at most once
//! a second, and at the latest 10 seconds later, so [`WriteCounters::snapshot`]
//! first waits for the server's pooled connections to have published theirs.

use anyhow::Context as _;
use sea_orm::{ConnectionTrait as _, Database, DatabaseConnection, DbBackend, Statement};
use std::collections::BTreeMap;
use std::time::Duration;

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

/// A connection of its own to the homeserver's database.
pub(crate) struct WriteCounters {
    connection: DatabaseConnection,
}

impl WriteCounters {
    pub(crate) async fn connect(url: &str) -> anyhow::Result<WriteCounters> {
        let connection = Database::connect(url)
            .await
            .context("cannot connect to the benchmark's PostgreSQL database")?;
        Ok(WriteCounters { connection })
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

    pub(crate) async fn close(self) -> anyhow::Result<()> {
        Ok(self.connection.close().await?)
    }
}
