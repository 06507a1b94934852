//! Conclave's group metadata (the group's name), carried in the group-context
//! extension [`GROUP_METADATA_EXTENSION_TYPE`] so that every member sees it: the
//! creator, those added by Welcome (the GroupInfo in the Welcome holds the group
//! context), and devices that join by external commit. The hub sees it too: it
//! is public group state, like the member list, and the admin API shows it.
//! Clients write it and both sides read it, so the encoding lives here.

use crate::mls::GROUP_METADATA_EXTENSION_TYPE;
use openmls::prelude::{GroupContext, UnknownExtension};
use serde::{Deserialize, Serialize};

/// What the extension holds: `{"v":1,"name":"..."}` in UTF-8 JSON, so that later
/// fields (a topic, an avatar) can be added without a new extension type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMetadata {
    /// Format version; readers accept any version and use the fields they know.
    pub v: u32,
    /// The group's name as its members set it (empty for none).
    pub name: String,
}

impl GroupMetadata {
    /// Version 1 metadata naming the group `name`.
    pub fn new(name: &str) -> GroupMetadata {
        GroupMetadata {
            v: 1,
            name: name.to_owned(),
        }
    }

    /// The extension's content.
    pub fn to_extension(&self) -> UnknownExtension {
        // Serialising a struct of a number and a string cannot fail.
        UnknownExtension(serde_json::to_vec(self).unwrap_or_default())
    }

    /// The metadata in a group context; `None` if the extension is missing or
    /// unreadable (a group made by another client), which is not an error.
    pub fn in_group_context(group_context: &GroupContext) -> Option<GroupMetadata> {
        group_context
            .extensions()
            .unknown(GROUP_METADATA_EXTENSION_TYPE)
            .and_then(|extension| serde_json::from_slice(&extension.0).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_and_tolerates_newer_versions() {
        let metadata = GroupMetadata::new("team");
        let bytes = metadata.to_extension().0;
        assert_eq!(bytes, br#"{"v":1,"name":"team"}"#);
        let newer: GroupMetadata =
            serde_json::from_slice(br#"{"v":2,"name":"team","topic":"x"}"#).unwrap();
        assert_eq!(newer.name, "team");
    }
}
