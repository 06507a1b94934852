//! Conclave's group metadata (the group's name), carried in a group-context
//! extension so that every member sees it: the creator, those added by Welcome
//! (the GroupInfo in the Welcome holds the group context), and devices that join
//! by external commit (so does the GroupInfo they join from). The homeserver
//! sees it too: it is public group state, like the member list.

use openmls::prelude::GroupContext;

/// The extension's type, from the private-use range (RFC 9420 §17.3); defined in
/// `conclave-core`, whose key-package rules require every leaf to list it.
pub(crate) use conclave_core::mls::GROUP_METADATA_EXTENSION_TYPE;

/// The extension's content, encoded and decoded in `conclave-core` (the
/// homeserver reads it too).
pub(crate) use conclave_core::group_metadata::GroupMetadata;

/// Longest group name, in characters.
pub(crate) const MAX_GROUP_NAME_CHARS: usize = 64;

/// The metadata in a group context; an empty name if the extension is missing
/// or unreadable (a group made by another client), which is not an error.
pub(crate) fn from_group_context(group_context: &GroupContext) -> GroupMetadata {
    GroupMetadata::in_group_context(group_context).unwrap_or_else(|| GroupMetadata::new(""))
}

/// Checks a group name given by the user: 1 to 64 characters, no control
/// characters (it is printed in terminals and listed one per line).
pub(crate) fn check_group_name(name: &str) -> Result<(), String> {
    let length = name.chars().count();
    if length == 0 || length > MAX_GROUP_NAME_CHARS {
        return Err(format!(
            "group name {name:?} must be 1 to {MAX_GROUP_NAME_CHARS} characters"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(format!(
            "group name {name:?} must not contain control characters"
        ));
    }
    if name.trim() != name {
        return Err(format!(
            "group name {name:?} must not start or end with whitespace"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_group_name("team").is_ok());
        assert!(check_group_name("Ünïcode ok 🎉").is_ok());
        assert!(check_group_name("").is_err());
        assert!(check_group_name(" padded").is_err());
        assert!(check_group_name("line\nbreak").is_err());
        assert!(check_group_name(&"x".repeat(65)).is_err());
        assert!(check_group_name(&"x".repeat(64)).is_ok());
    }
}
