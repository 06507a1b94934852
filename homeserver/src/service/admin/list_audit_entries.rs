//! Reading the audit log a page at a time, newest first (not audited itself:
//! it changes nothing).

use super::AdminError;
use super::paging::Page;
use crate::service::Context;
use crate::store::{self, AuditEntryRecord, AuditQuery};

/// Default and largest page of entries.
pub(crate) const DEFAULT_PAGE_SIZE: u32 = 100;
pub(crate) const MAX_PAGE_SIZE: u32 = 500;

/// The entries matching `query` on `page`, newest first, and the next page's
/// token (empty on the last page).
pub(crate) async fn list_audit_entries(
    context: &Context,
    query: &AuditQuery,
    page: &Page,
) -> Result<(Vec<AuditEntryRecord>, String), AdminError> {
    let before_id = page.after.as_deref().map(parse_entry_id).transpose()?;
    let mut entries = store::list_audit_entries_newest_first(
        &context.store,
        query,
        before_id,
        page.fetch_limit(),
    )
    .await?;
    let next_page_token = page.finish(&mut entries, |entry| entry.id.to_string());
    Ok((entries, next_page_token))
}

/// The entry id a page token of this listing carries.
fn parse_entry_id(key: &str) -> Result<u64, AdminError> {
    key.parse().map_err(|_| {
        AdminError::Invalid(
            "page_token is not a token of the audit log's listing; pass its next_page_token"
                .to_owned(),
        )
    })
}
