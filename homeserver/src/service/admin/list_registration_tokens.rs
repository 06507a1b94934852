//! ListRegistrationTokens: newest first, a page at a time, usable ones only
//! unless the caller asks for every one. Read-only, so not audited.

use super::AdminError;
use super::paging::Page;
use super::registration_token_view::RegistrationTokenView;
use crate::service::Context;
use crate::store;

/// Tokens per page unless the caller asks otherwise, and at most.
pub(crate) const DEFAULT_PAGE_SIZE: u32 = 50;
pub(crate) const MAX_PAGE_SIZE: u32 = 200;

/// One page of tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RegistrationTokenPage {
    pub(crate) registration_tokens: Vec<RegistrationTokenView>,
    /// Empty on the last page.
    pub(crate) next_page_token: String,
}

pub(crate) async fn list_registration_tokens(
    context: &Context,
    include_unusable: bool,
    page_size: u32,
    page_token: &str,
) -> Result<RegistrationTokenPage, AdminError> {
    let page = Page::parse(page_size, page_token, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?;
    let before_id = page
        .after
        .as_deref()
        .map(|key| {
            key.parse::<u64>().map_err(|_| {
                AdminError::Invalid(
                    "page_token is not a token this listing gave; pass the next_page_token of the previous page, or none for the first".to_owned(),
                )
            })
        })
        .transpose()?;
    let now_ms = context.now_ms();
    let mut records = store::list_registration_tokens(
        &context.store,
        include_unusable,
        now_ms,
        before_id,
        page.fetch_limit(),
    )
    .await?;
    let next_page_token = page.finish(&mut records, |record| record.id.to_string());
    Ok(RegistrationTokenPage {
        registration_tokens: records
            .into_iter()
            .map(|record| RegistrationTokenView::at(record, now_ms))
            .collect(),
        next_page_token,
    })
}
