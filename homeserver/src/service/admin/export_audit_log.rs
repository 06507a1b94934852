//! Exporting the audit log: every entry matching a filter, oldest first, read
//! in chunks so that a long log never sits in memory at once. The export is
//! itself audited (`audit.export`), before its first entry is read, so it
//! appears in what it exports.

use super::audit::audited;
use super::{AdminCaller, AdminError};
use crate::service::Context;
use crate::store::{self, AuditEntryRecord, AuditQuery};

/// Entries read per query.
const CHUNK_ENTRIES: u64 = 500;

/// An export in progress: call [`AuditExport::next_chunk`] until it returns
/// no entries.
#[derive(Debug)]
pub(crate) struct AuditExport {
    query: AuditQuery,
    /// The last entry returned so far.
    after_id: Option<u64>,
    /// The newest entry when the export began: later ones are left out, so
    /// that an export of a busy log ends.
    last_id: Option<u64>,
}

/// Starts an export of the entries matching `query`, audited as `audit.export`
/// with the filter as its detail.
pub(crate) async fn export_audit_log(
    context: &Context,
    caller: &AdminCaller,
    query: AuditQuery,
) -> Result<AuditExport, AdminError> {
    let detail = describe(&query);
    audited(context, caller, "audit.export", "", Ok(((), detail))).await?;
    let newest =
        store::list_audit_entries_newest_first(&context.store, &AuditQuery::default(), None, 1)
            .await?;
    Ok(AuditExport {
        query,
        after_id: None,
        last_id: newest.first().map(|entry| entry.id),
    })
}

impl AuditExport {
    /// The next entries, oldest first; empty once every entry was returned.
    pub(crate) async fn next_chunk(
        &mut self,
        context: &Context,
    ) -> Result<Vec<AuditEntryRecord>, AdminError> {
        let Some(last_id) = self.last_id else {
            return Ok(Vec::new());
        };
        let mut entries = store::list_audit_entries_oldest_first(
            &context.store,
            &self.query,
            self.after_id,
            CHUNK_ENTRIES,
        )
        .await?;
        entries.retain(|entry| entry.id <= last_id);
        match entries.last() {
            Some(entry) => self.after_id = Some(entry.id),
            None => self.last_id = None,
        }
        Ok(entries)
    }
}

/// The filter in words, for the audit log.
fn describe(query: &AuditQuery) -> String {
    let mut parts = Vec::new();
    if let Some(actor) = &query.actor {
        parts.push(format!("actor {actor}"));
    }
    if let Some(prefix) = &query.action_prefix {
        parts.push(format!("actions starting with {prefix}"));
    }
    if let Some(since_ms) = query.since_ms {
        parts.push(format!("since {}", describe_time(since_ms)));
    }
    if let Some(until_ms) = query.until_ms {
        parts.push(format!("until {}", describe_time(until_ms)));
    }
    if parts.is_empty() {
        "every entry".to_owned()
    } else {
        format!("entries of {}", parts.join(", "))
    }
}

fn describe_time(at_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(at_ms).map_or_else(
        || format!("{at_ms} ms"),
        |at| at.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string(),
    )
}
