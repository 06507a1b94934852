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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::SystemClock;
    use crate::service::admin::audit::record;
    use crate::service::admin::tests::context_on;
    use conclave_test_support::{DatabaseChoice, TestDatabase};
    use std::sync::Arc;

    #[tokio::test]
    async fn an_export_reads_in_chunks_oldest_first_and_ends_where_it_began() {
        let database = TestDatabase::create(DatabaseChoice::Sqlite).await;
        let context = context_on(&database, Arc::new(SystemClock)).await;
        let operator = AdminCaller::operator();
        for index in 0..(CHUNK_ENTRIES + 20) {
            let action = if index % 2 == 0 {
                "user.suspend"
            } else {
                "device.revoke"
            };
            record(
                &context,
                &operator,
                action,
                &format!("{index}"),
                &Ok(String::new()),
            )
            .await
            .unwrap();
        }
        let query = AuditQuery {
            action_prefix: Some("user.".to_owned()),
            ..AuditQuery::default()
        };
        let mut export = export_audit_log(&context, &operator, query).await.unwrap();
        // Written after the export began: not in it.
        record(
            &context,
            &operator,
            "user.unsuspend",
            "late",
            &Ok(String::new()),
        )
        .await
        .unwrap();
        let mut targets = Vec::new();
        let mut chunks = 0;
        loop {
            let chunk = export.next_chunk(&context).await.unwrap();
            if chunk.is_empty() {
                break;
            }
            chunks += 1;
            targets.extend(chunk.into_iter().map(|entry| entry.target));
        }
        let expected: Vec<String> = (0..(CHUNK_ENTRIES + 20))
            .filter(|index| index % 2 == 0)
            .map(|index| index.to_string())
            .collect();
        assert_eq!(targets, expected);
        assert_eq!(chunks, 1);
        let everything = export_audit_log(&context, &operator, AuditQuery::default())
            .await
            .unwrap();
        let mut everything = everything;
        let first = everything.next_chunk(&context).await.unwrap();
        assert_eq!(first.len(), usize::try_from(CHUNK_ENTRIES).unwrap());
        let second = everything.next_chunk(&context).await.unwrap();
        // 520 entries, the first export's record, the late one, this export's.
        assert_eq!(second.len(), 23);
        assert_eq!(second.last().unwrap().action, "audit.export");
        assert_eq!(second.last().unwrap().detail, "every entry");
        assert!(everything.next_chunk(&context).await.unwrap().is_empty());
        let exports: Vec<_> = first
            .iter()
            .chain(&second)
            .filter(|entry| entry.action == "audit.export")
            .map(|entry| entry.detail.as_str())
            .collect();
        assert_eq!(
            exports,
            ["entries of actions starting with user.", "every entry"]
        );
    }
}
