//! Who reads what of a group's log: a device reads after the commit that added
//! it, up to and including the commit that removed it, from its acknowledged
//! position; and it may acknowledge only what exists for it.

use crate::rules::ids::Seq;

/// The part of a group's log a device still has to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UnreadWindow {
    /// Read events after this one...
    pub(crate) after: Seq,
    /// ...up to and including this one, if the device was removed.
    pub(crate) up_to: Option<Seq>,
}

/// The window after `position` for a member that joined after
/// `joined_after_seq` and was removed at `removed_at_seq`; `None` when it has
/// read everything it will ever receive.
pub(crate) fn unread_window(
    position: Seq,
    joined_after_seq: Seq,
    removed_at_seq: Option<Seq>,
) -> Option<UnreadWindow> {
    // A device removed and later added again starts after the re-adding commit.
    let after = position.max(joined_after_seq);
    if removed_at_seq.is_some_and(|removed| after >= removed) {
        return None;
    }
    Some(UnreadWindow {
        after,
        up_to: removed_at_seq,
    })
}

/// An acknowledgement past the newest event the device may see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot acknowledge {what} {seq}: the newest is {newest}")]
pub(crate) struct AckCheck {
    pub(crate) what: &'static str,
    pub(crate) seq: Seq,
    pub(crate) newest: Seq,
}

/// Refuses acknowledging `seq` when `newest` is the last event for the device.
pub(crate) fn check_ack(what: &'static str, seq: Seq, newest: Seq) -> Result<(), AckCheck> {
    if seq > newest {
        return Err(AckCheck { what, seq, newest });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(value: u64) -> Seq {
        Seq::new(value)
    }

    #[test]
    fn a_device_reads_from_its_joining_to_its_removal() {
        let cases = [
            (
                "a current member reads after its cursor",
                seq(4),
                seq(0),
                None,
                Some((4, None)),
            ),
            (
                "a re-added member skips what came before",
                seq(2),
                seq(6),
                None,
                Some((6, None)),
            ),
            (
                "a removed member reads up to its removal",
                seq(3),
                seq(0),
                Some(seq(5)),
                Some((3, Some(5))),
            ),
            (
                "one that read its removal reads nothing",
                seq(5),
                seq(0),
                Some(seq(5)),
                None,
            ),
        ];
        for (case, position, joined, removed, expected) in cases {
            let window = unread_window(position, joined, removed)
                .map(|window| (window.after.get(), window.up_to.map(Seq::get)));
            assert_eq!(window, expected, "{case}");
        }
    }

    #[test]
    fn acknowledgements_stop_at_the_newest_event() {
        assert!(check_ack("x", seq(3), seq(3)).is_ok());
        let error = check_ack("inbox sequence number", seq(4), seq(3)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "cannot acknowledge inbox sequence number 4: the newest is 3"
        );
    }
}
