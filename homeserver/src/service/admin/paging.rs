//! Paging of the admin listings: a page size within the listing's bounds, and
//! an opaque page token that carries the sort key of the previous page's last
//! row (URL-safe base64, so it passes through URLs and forms untouched). The
//! listing then asks the store for rows after that key, which stays right
//! while rows are added, unlike an offset.

use super::AdminError;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Page {
    /// How many rows, at least 1.
    pub(crate) size: u64,
    /// The sort key of the previous page's last row; `None` for the first page.
    pub(crate) after: Option<String>,
}

impl Page {
    /// The page a request asks for: `page_size` 0 means `default`, above
    /// `max` is refused; `page_token` empty is the first page, else it must
    /// be a token [`Page::next_token`] made.
    pub(crate) fn parse(
        page_size: u32,
        page_token: &str,
        default: u32,
        max: u32,
    ) -> Result<Page, AdminError> {
        let size = match page_size {
            0 => default,
            size if size > max => {
                return Err(AdminError::Invalid(format!(
                    "page_size {size} is above the limit of {max}"
                )));
            }
            size => size,
        };
        let after = match page_token {
            "" => None,
            token => Some(decode(token).ok_or_else(|| {
                AdminError::Invalid(
                    "page_token is not a token this listing gave; pass the next_page_token of the previous page, or none for the first".to_owned(),
                )
            })?),
        };
        Ok(Page {
            size: u64::from(size),
            after,
        })
    }

    /// The token of the page after the one whose last row has `last_key`.
    pub(crate) fn next_token(last_key: &str) -> String {
        URL_SAFE_NO_PAD.encode(last_key.as_bytes())
    }

    /// How many rows to ask the store for: one more than the page, so that
    /// [`Page::finish`] knows whether another page follows.
    pub(crate) fn fetch_limit(&self) -> u64 {
        self.size.saturating_add(1)
    }

    /// Cuts `rows` (fetched with [`Page::fetch_limit`]) to the page and
    /// returns the next page's token, empty on the last page.
    pub(crate) fn finish<T>(&self, rows: &mut Vec<T>, key_of: impl Fn(&T) -> String) -> String {
        let size = usize::try_from(self.size).unwrap_or(usize::MAX); // tidy: saturating (no page is that long)
        if rows.len() <= size {
            return String::new();
        }
        rows.truncate(size);
        rows.last()
            .map(|last| Page::next_token(&key_of(last)))
            .unwrap_or_default()
    }
}

fn decode(token: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(page_size: u32, page_token: &str, expected: Result<(u64, Option<&str>), &str>) {
        let parsed = Page::parse(page_size, page_token, 100, 500);
        match (parsed, expected) {
            (Ok(page), Ok((size, after))) => {
                assert_eq!((page.size, page.after.as_deref()), (size, after));
            }
            (Err(AdminError::Invalid(message)), Err(expected)) => {
                assert!(message.contains(expected), "{message}");
            }
            (parsed, expected) => {
                panic!("{page_size} {page_token:?}: {parsed:?}, expected {expected:?}")
            }
        }
    }

    #[test]
    fn sizes_and_tokens() {
        let token = Page::next_token("42");
        check(0, "", Ok((100, None)));
        check(1, "", Ok((1, None)));
        check(500, &token, Ok((500, Some("42"))));
        check(501, "", Err("page_size 501 is above the limit of 500"));
        check(10, "not base64!", Err("page_token is not a token"));
        // Base64 of bytes that are no UTF-8.
        check(10, "_w", Err("page_token"));
        assert_eq!(
            Page::parse(0, &Page::next_token("alice@a.example"), 50, 100)
                .unwrap()
                .after
                .as_deref(),
            Some("alice@a.example")
        );
    }

    #[test]
    fn finish_cuts_the_extra_row_and_names_the_next_page() {
        let page = Page::parse(2, "", 100, 500).unwrap();
        assert_eq!(page.fetch_limit(), 3);
        let mut rows = vec![9, 8, 7];
        let next = page.finish(&mut rows, u32::to_string);
        assert_eq!(rows, [9, 8]);
        assert_eq!(
            Page::parse(2, &next, 100, 500).unwrap().after.as_deref(),
            Some("8")
        );
        let mut last_page = vec![6, 5];
        assert_eq!(page.finish(&mut last_page, u32::to_string), "");
        assert_eq!(last_page, [6, 5]);
    }
}
