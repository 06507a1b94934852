//! Listing accounts, ordered by username, a page at a time. Not audited (a
//! read).

use super::super::AdminError;
use super::super::paging::Page;
use super::views::{UserSummary, summarize};
use crate::service::Context;
use crate::store;

/// Page size when the request gives none, and the largest allowed.
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 200;
/// Longest search text, in characters: a username is at most 32.
const MAX_QUERY_CHARS: usize = 64;

/// A page of accounts.
#[derive(Debug, Clone)]
pub(crate) struct UserPage {
    pub(crate) users: Vec<UserSummary>,
    /// Empty on the last page.
    pub(crate) next_page_token: String,
}

/// Accounts whose username contains `query` (case-insensitive; empty for all),
/// after `page_token`'s position, at most `page_size` (0 for 50, up to 200).
/// Two statements per page: the accounts, then their devices' counts.
pub(crate) async fn list_users(
    context: &Context,
    query: &str,
    page_size: u32,
    page_token: &str,
) -> Result<UserPage, AdminError> {
    let query = query.trim().to_lowercase();
    let chars = query.chars().count();
    if chars > MAX_QUERY_CHARS {
        return Err(AdminError::Invalid(format!(
            "query must be at most {MAX_QUERY_CHARS} characters, got {chars}"
        )));
    }
    let page = Page::parse(page_size, page_token, DEFAULT_PAGE, MAX_PAGE)?;
    let mut accounts = store::list_accounts(
        &context.store,
        &query,
        page.after.as_deref(),
        page.fetch_limit(),
    )
    .await?;
    let next_page_token = page.finish(&mut accounts, |account| {
        account.user.username.as_str().to_owned()
    });
    let keys: Vec<_> = accounts.iter().map(|account| account.user.key).collect();
    let mut activity = store::device_activity(&context.store, &keys).await?;
    let users = accounts
        .into_iter()
        .map(|account| {
            let devices = activity.remove(&account.user.key).unwrap_or_default();
            summarize(context, account, devices)
        })
        .collect();
    Ok(UserPage {
        users,
        next_page_token,
    })
}
