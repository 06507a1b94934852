//! Queries for the audit log of administration: append an entry, and read
//! entries through a filter, newest first (a page at a time) or oldest first
//! (an export, in chunks). Nothing here updates or deletes an entry.

use super::convert::to_u64;
use super::entities::audit_entry;
use super::{Connection, StoreError};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Func};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};

/// An entry to append.
#[derive(Debug, Clone)]
pub(crate) struct NewAuditEntry<'a> {
    pub(crate) at_ms: i64,
    pub(crate) actor: &'a str,
    pub(crate) action: &'a str,
    pub(crate) target: &'a str,
    /// Empty when the action came from the command line.
    pub(crate) address: &'a str,
    pub(crate) succeeded: bool,
    pub(crate) detail: &'a str,
}

/// A stored entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct AuditEntryRecord {
    /// Increasing with every entry.
    pub(crate) id: u64,
    /// Milliseconds since the Unix epoch.
    pub(crate) at_ms: i64,
    pub(crate) actor: String,
    pub(crate) action: String,
    pub(crate) target: String,
    pub(crate) address: String,
    pub(crate) succeeded: bool,
    pub(crate) detail: String,
}

/// Which entries to read; `None` fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AuditQuery {
    /// Exactly this actor.
    pub(crate) actor: Option<String>,
    /// Actions starting with this, compared case-sensitively on both
    /// databases (a `LIKE` would ignore case on SQLite and treat `_` in
    /// `registration_token.` as a wildcard).
    pub(crate) action_prefix: Option<String>,
    /// At or after this time (ms since the Unix epoch).
    pub(crate) since_ms: Option<i64>,
    /// Before this time.
    pub(crate) until_ms: Option<i64>,
}

/// Appends `entry`.
pub(crate) async fn insert_audit_entry(
    db: &impl Connection,
    entry: NewAuditEntry<'_>,
) -> Result<(), StoreError> {
    audit_entry::ActiveModel {
        at_ms: Set(entry.at_ms),
        actor: Set(entry.actor.to_owned()),
        action: Set(entry.action.to_owned()),
        target: Set(entry.target.to_owned()),
        address: Set(entry.address.to_owned()),
        succeeded: Set(entry.succeeded),
        detail: Set(entry.detail.to_owned()),
        ..Default::default()
    }
    .insert(db.database())
    .await?;
    Ok(())
}

/// Up to `limit` entries matching `query`, newest first, older than the entry
/// `before_id` if given (the last of the previous page).
pub(crate) async fn list_audit_entries_newest_first(
    db: &impl Connection,
    query: &AuditQuery,
    before_id: Option<u64>,
    limit: u64,
) -> Result<Vec<AuditEntryRecord>, StoreError> {
    let mut select = filtered(query);
    if let Some(before_id) = before_id {
        select = select.filter(audit_entry::Column::Id.lt(id_to_db(before_id)));
    }
    select
        .order_by_desc(audit_entry::Column::Id)
        .limit(limit)
        .all(db.database())
        .await?
        .into_iter()
        .map(record)
        .collect()
}

/// Up to `limit` entries matching `query`, oldest first, newer than the entry
/// `after_id` if given (the last of the previous chunk).
pub(crate) async fn list_audit_entries_oldest_first(
    db: &impl Connection,
    query: &AuditQuery,
    after_id: Option<u64>,
    limit: u64,
) -> Result<Vec<AuditEntryRecord>, StoreError> {
    let mut select = filtered(query);
    if let Some(after_id) = after_id {
        select = select.filter(audit_entry::Column::Id.gt(id_to_db(after_id)));
    }
    select
        .order_by_asc(audit_entry::Column::Id)
        .limit(limit)
        .all(db.database())
        .await?
        .into_iter()
        .map(record)
        .collect()
}

/// An id beyond `i64::MAX` is past every stored one: it bounds nothing below
/// it, and nothing is above it.
fn id_to_db(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX) // tidy: saturating (no row has a larger id)
}

fn filtered(query: &AuditQuery) -> sea_orm::Select<audit_entry::Entity> {
    let mut select = audit_entry::Entity::find();
    if let Some(actor) = &query.actor {
        select = select.filter(audit_entry::Column::Actor.eq(actor.as_str()));
    }
    if let Some(prefix) = query
        .action_prefix
        .as_deref()
        .filter(|prefix| !prefix.is_empty())
    {
        // 32-bit: PostgreSQL's substr takes integers, not bigints.
        let length = i32::try_from(prefix.chars().count()).unwrap_or(i32::MAX); // tidy: saturating (a prefix that long matches nothing)
        let head = Func::cust(Alias::new("substr"))
            .arg(Expr::col(audit_entry::Column::Action))
            .arg(1i32)
            .arg(length);
        select = select.filter(Expr::expr(head).eq(prefix));
    }
    if let Some(since_ms) = query.since_ms {
        select = select.filter(audit_entry::Column::AtMs.gte(since_ms));
    }
    if let Some(until_ms) = query.until_ms {
        select = select.filter(audit_entry::Column::AtMs.lt(until_ms));
    }
    select
}

fn record(model: audit_entry::Model) -> Result<AuditEntryRecord, StoreError> {
    Ok(AuditEntryRecord {
        id: to_u64(model.id, format!("audit entry {}", model.id), "id")?,
        at_ms: model.at_ms,
        actor: model.actor,
        action: model.action,
        target: model.target,
        address: model.address,
        succeeded: model.succeeded,
        detail: model.detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use conclave_test_support::{DatabaseChoice, TestDatabase};

    fn entry<'a>(at_ms: i64, actor: &'a str, action: &'a str) -> NewAuditEntry<'a> {
        NewAuditEntry {
            at_ms,
            actor,
            action,
            target: "bob@a.example",
            address: "192.0.2.7",
            succeeded: true,
            detail: "",
        }
    }

    fn actions(entries: &[AuditEntryRecord]) -> Vec<(i64, &str)> {
        entries
            .iter()
            .map(|entry| (entry.at_ms, entry.action.as_str()))
            .collect()
    }

    #[tokio::test]
    async fn entries_are_read_through_the_filter_in_either_order() {
        for choice in DatabaseChoice::ALL {
            let database = TestDatabase::create(choice).await;
            let store = Store::connect(database.url(), 2).await.unwrap();
            store.migrate().await.unwrap();
            for new_entry in [
                entry(10, "alice@a.example", "user.suspend"),
                entry(20, "operator", "admin.grant"),
                entry(30, "alice@a.example", "registration_token.create"),
                // `_` is no wildcard and the case counts.
                entry(40, "alice@a.example", "registrationXtoken.create"),
                entry(50, "alice@a.example", "User.suspend"),
                entry(60, "alice@a.example", "user.unsuspend"),
            ] {
                insert_audit_entry(&store, new_entry).await.unwrap();
            }
            let all = AuditQuery::default();
            let newest = list_audit_entries_newest_first(&store, &all, None, 2)
                .await
                .unwrap();
            assert_eq!(
                actions(&newest),
                [(60, "user.unsuspend"), (50, "User.suspend")],
                "{choice:?}"
            );
            let next = list_audit_entries_newest_first(&store, &all, Some(newest[1].id), 10)
                .await
                .unwrap();
            assert_eq!(next.len(), 4, "{choice:?}");
            assert_eq!(next[3].actor, "alice@a.example", "{choice:?}");
            assert_eq!(next[3].address, "192.0.2.7", "{choice:?}");

            let users = AuditQuery {
                action_prefix: Some("user.".to_owned()),
                ..AuditQuery::default()
            };
            let found = list_audit_entries_oldest_first(&store, &users, None, 10)
                .await
                .unwrap();
            assert_eq!(
                actions(&found),
                [(10, "user.suspend"), (60, "user.unsuspend")],
                "{choice:?}"
            );
            let tokens = AuditQuery {
                action_prefix: Some("registration_token.".to_owned()),
                ..AuditQuery::default()
            };
            let found = list_audit_entries_oldest_first(&store, &tokens, None, 10)
                .await
                .unwrap();
            assert_eq!(actions(&found), [(30, "registration_token.create")]);

            let operator_in_window = AuditQuery {
                actor: Some("operator".to_owned()),
                since_ms: Some(20),
                until_ms: Some(21),
                ..AuditQuery::default()
            };
            let found = list_audit_entries_oldest_first(&store, &operator_in_window, None, 10)
                .await
                .unwrap();
            assert_eq!(actions(&found), [(20, "admin.grant")], "{choice:?}");
            let before_window = AuditQuery {
                until_ms: Some(20),
                ..operator_in_window
            };
            let found = list_audit_entries_oldest_first(&store, &before_window, None, 10)
                .await
                .unwrap();
            assert!(found.is_empty(), "{choice:?}: {found:?}");

            let oldest = list_audit_entries_oldest_first(&store, &all, None, 4)
                .await
                .unwrap();
            let rest = list_audit_entries_oldest_first(&store, &all, Some(oldest[3].id), 4)
                .await
                .unwrap();
            assert_eq!(
                actions(&rest),
                [(50, "User.suspend"), (60, "user.unsuspend")]
            );
            store.close().await.unwrap();
        }
    }
}
