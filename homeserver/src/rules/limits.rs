//! How many entries each repeated field of a request may carry, checked before
//! any database work: the work one request can cause is bounded by these
//! numbers (and by the message size limits), whatever its sender intends. Each
//! limit is documented on its field in the `.proto` files.

/// Entries of `AckRequest.groups`: as many as one Fetch page can hold events
/// (`service::delivery::MAX_PAGE`), so a device can always acknowledge every
/// group of a page at once. Each entry costs a few indexed reads and a write.
pub(crate) const MAX_ACK_GROUPS: usize = 1000;

/// Events of one `DeliverEventsRequest`: the largest outbox batch a hub may be
/// configured to send (`federation.outbox_batch_size` is at most this).
pub(crate) const MAX_DELIVERED_EVENTS: usize = 1000;

/// Credential identities in each of `FederatedEvent.added` and `.removed`: the
/// largest group a homeserver may be configured to host
/// (`groups.max_members` is at most this), so no commit a hub accepted is
/// refused by its followers.
pub(crate) const MAX_MEMBERSHIP_CHANGES: usize = 100_000;

/// A repeated field has more entries than its documented limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} has {count} entries, more than the limit of {limit}")]
pub(crate) struct TooManyEntries {
    /// The field's name as the request spells it (with the index of its
    /// message where it is nested, e.g. `events[3].added`).
    pub(crate) field: String,
    pub(crate) count: usize,
    pub(crate) limit: usize,
}

/// Refuses `count` entries of `field` when they are more than `limit`.
pub(crate) fn check_count(
    field: impl Into<String>,
    count: usize,
    limit: usize,
) -> Result<(), TooManyEntries> {
    if count > limit {
        return Err(TooManyEntries {
            field: field.into(),
            count,
            limit,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_up_to_the_limit_pass_and_one_more_names_field_and_limit() {
        assert_eq!(check_count("groups", 0, 3), Ok(()));
        assert_eq!(check_count("groups", 3, 3), Ok(()));
        let refusal = check_count("groups", 4, 3).expect_err("over the limit");
        assert_eq!(
            refusal.to_string(),
            "groups has 4 entries, more than the limit of 3"
        );
    }
}
