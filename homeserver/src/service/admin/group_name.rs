//! A hosted group's name, as its members set it in the group context (the
//! metadata extension `0xf0c1`): the hub holds the public state, so it can
//! show it; a follower's copy holds no state and shows none.

use crate::rules::hub::HubGroup;

/// The name in a group's stored public state (`groups.state`); `None` for a
/// follower's copy (empty state), a group without the extension, or a state
/// that does not load (logged: it is corruption, which the group's next
/// submission reports too).
pub(crate) fn group_name(state: &[u8]) -> Option<String> {
    if state.is_empty() {
        return None;
    }
    match HubGroup::from_state(state) {
        Ok(group) => group.name(),
        Err(error) => {
            tracing::warn!(%error, "a hosted group's stored state does not load");
            None
        }
    }
}
