//! Groups: create one, invite, remove, leave, rotate keys; and what this device
//! knows of its groups and their members (from its own MLS state, no network).

use conclave_core::mls::CipherSuite;
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use conclave_core::ids::{CredentialIdentity, DeviceId, UserId};

use super::submit::{Intent, Sent};
use super::{Client, now_ms};
use crate::error::ClientError;
use crate::mls;
use crate::state::GroupStatus;
use crate::state::groups::{self as stored, GroupRow, PendingSubmission, SubmissionKind};

/// An MLS group id: opaque bytes, shown as lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(Vec<u8>);

impl GroupId {
    pub fn from_bytes(bytes: Vec<u8>) -> GroupId {
        GroupId(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl FromStr for GroupId {
    type Err = ClientError;

    /// Parses the hex form; refuses anything else (a name is resolved with
    /// [`Client::find_group`]).
    fn from_str(text: &str) -> Result<GroupId, ClientError> {
        match hex::decode(text) {
            Ok(bytes) if !bytes.is_empty() && text == text.to_ascii_lowercase() => {
                Ok(GroupId(bytes))
            }
            _ => Err(ClientError::UnknownGroup(text.to_owned())),
        }
    }
}

/// What this device knows of one of its groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSummary {
    pub group_id: GroupId,
    /// From the group's metadata; empty if the creator gave none.
    pub name: String,
    pub status: GroupStatus,
    /// The current epoch, if this device holds the group's state.
    pub epoch: Option<u64>,
    /// Member devices (leaves) and distinct users.
    pub member_devices: usize,
    pub member_users: usize,
    /// Equal across members exactly when they agree on the group's state at this
    /// epoch (RFC 9420 §8.7): compare it out of band to detect a split view.
    pub epoch_authenticator: Option<Vec<u8>>,
    /// The tree hash of the current epoch.
    pub tree_hash: Option<Vec<u8>>,
    /// This device asked to leave and waits for another member to commit it.
    pub leaving: bool,
    /// Messages and membership changes no listener has shown yet.
    pub unread: u64,
    /// The group's cipher suite, if this device holds the group's state.
    pub cipher_suite: Option<CipherSuite>,
}

/// A member device of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// `name@domain/device_id`, from the leaf's credential.
    pub identity: CredentialIdentity,
    pub leaf_index: u32,
    /// The device this client runs on.
    pub this_device: bool,
}

impl Member {
    pub fn user_id(&self) -> &UserId {
        self.identity.user_id()
    }

    pub fn device_id(&self) -> &DeviceId {
        self.identity.device_id()
    }
}

/// The result of an invitation or a removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipChange {
    /// The devices the commit added or removed (empty if others did it already).
    pub devices: Vec<CredentialIdentity>,
    /// The group's epoch afterwards.
    pub epoch: u64,
    /// How many times the commit lost the race for its epoch and was rebuilt.
    pub lost_races: u32,
}

/// The result of a commit of this device (a key rotation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitOutcome {
    /// The epoch the commit created.
    pub epoch: u64,
    /// Its position in the group's log.
    pub seq: u64,
    /// How many times it lost the race for its epoch and was rebuilt.
    pub lost_races: u32,
}

impl Client {
    /// Creates a group of the classic cipher suite; see
    /// [`Client::create_group_in`].
    pub async fn create_group(&self, name: &str) -> Result<GroupSummary, ClientError> {
        self.create_group_in(name, CipherSuite::Classic).await
    }

    /// Creates a group of `suite` whose only member is this device and
    /// registers it at the homeserver (its hub). `name` (1 to 64 characters)
    /// travels in the group's context, so every member sees it. Only devices
    /// with a key package of `suite` can be invited; a homeserver that does not
    /// offer the suite, or requires post-quantum groups, refuses the group with
    /// FAILED_PRECONDITION.
    ///
    /// If the homeserver cannot be reached, the group stays "creating" and its
    /// registration is retried by the next operation or [`Client::receive`].
    pub async fn create_group_in(
        &self,
        name: &str,
        suite: CipherSuite,
    ) -> Result<GroupSummary, ClientError> {
        mls::check_group_name(name).map_err(ClientError::InvalidGroupName)?;
        let _operations = self.group_operations.lock().await;
        let session = self.require_session()?;
        let signer = self.state().signer(&session)?;
        let submission = self.state().transaction(|provider, connection| {
            let new_group =
                mls::create_group(provider, &signer, &session.credential_identity, name, suite)?;
            let group_id = new_group.group.group_id().to_vec();
            stored::put_group(
                connection,
                &GroupRow {
                    group_id: group_id.clone(),
                    name: name.to_owned(),
                    status: GroupStatus::Creating,
                    last_seq: 0,
                    leaving_epoch: None,
                    needs_rejoin: false,
                },
                now_ms(),
            )?;
            let mut submission = PendingSubmission {
                id: 0,
                group_id,
                kind: SubmissionKind::Create,
                intent: Intent::Create.to_json(),
                idempotency_key: super::submit::idempotency_key(provider)?,
                payload: new_group.group_info,
                welcome: None,
                extra: Some(new_group.ratchet_tree),
                epoch: 0,
                lost_race: false,
            };
            submission.id = stored::insert_pending(connection, &submission, now_ms())?;
            Ok::<_, ClientError>(submission)
        })?;
        let group_id = GroupId(submission.group_id.clone());
        match self.send_and_apply(&submission).await? {
            Sent::Accepted(_) => {}
            Sent::Refused(error) => return Err(error),
            Sent::LostRace { .. } => {
                return Err(ClientError::InvalidResponse {
                    operation: "create group",
                    reason: "it answered a group creation with a commit conflict".to_owned(),
                });
            }
        }
        tracing::info!(group = %group_id, name, "group created");
        self.group(&group_id)
    }

    /// Adds every device of each user to the group: claims one key package per
    /// device (each verified), commits the Adds with a Welcome for the new
    /// devices, and applies the commit once the hub accepted it. Devices already
    /// in the group are skipped; the user's own id adds this user's other devices.
    /// A user with no device that has a key package is an error.
    pub async fn invite(
        &self,
        group_id: &GroupId,
        users: &[UserId],
    ) -> Result<MembershipChange, ClientError> {
        let _operations = self.group_operations.lock().await;
        self.resume_pending(Some(group_id.as_bytes())).await?;
        let users: BTreeSet<String> = users.iter().map(ToString::to_string).collect();
        let completion = self
            .run_intent(
                group_id.as_bytes(),
                Intent::Invite {
                    users: users.into_iter().collect(),
                },
            )
            .await?;
        Ok(MembershipChange {
            epoch: self.current_epoch(group_id, completion.accepted.map(|a| a.epoch))?,
            devices: completion.devices,
            lost_races: completion.lost_races,
        })
    }

    /// Removes every device of `user_id` from the group.
    pub async fn remove(
        &self,
        group_id: &GroupId,
        user_id: &UserId,
    ) -> Result<MembershipChange, ClientError> {
        let _operations = self.group_operations.lock().await;
        self.resume_pending(Some(group_id.as_bytes())).await?;
        let session = self.require_session()?;
        let group_name = self.display_name(group_id)?;
        if session.user_id() == user_id {
            return Err(ClientError::RemoveSelf { group: group_name });
        }
        let is_member = self
            .members(group_id)?
            .iter()
            .any(|member| member.user_id() == user_id);
        if !is_member {
            return Err(ClientError::UserNotInGroup {
                user_id: user_id.clone(),
                group: group_name,
            });
        }
        let completion = self
            .run_intent(
                group_id.as_bytes(),
                Intent::Remove {
                    user: user_id.to_string(),
                },
            )
            .await?;
        Ok(MembershipChange {
            epoch: self.current_epoch(group_id, completion.accepted.map(|a| a.epoch))?,
            devices: completion.devices,
            lost_races: completion.lost_races,
        })
    }

    /// Asks to leave the group: sends a proposal to remove this device, which the
    /// next member to commit covers (members' clients do so as soon as they
    /// receive it). Until then this device can neither send nor commit; if an
    /// epoch ends without the removal, the proposal is sent again. A device that
    /// is the group's only member just forgets the group.
    pub async fn leave(&self, group_id: &GroupId) -> Result<(), ClientError> {
        let _operations = self.group_operations.lock().await;
        self.resume_pending(Some(group_id.as_bytes())).await?;
        if self
            .members(group_id)?
            .iter()
            .all(|member| member.this_device)
        {
            self.state().transaction(|provider, connection| {
                super::sync::mark_removed(provider, connection, group_id.as_bytes())
            })?;
            return Ok(());
        }
        self.run_intent(group_id.as_bytes(), Intent::Leave).await?;
        Ok(())
    }

    /// Replaces this device's leaf keys and path secrets (a self-update commit),
    /// for post-compromise security.
    pub async fn rotate(&self, group_id: &GroupId) -> Result<CommitOutcome, ClientError> {
        let _operations = self.group_operations.lock().await;
        self.resume_pending(Some(group_id.as_bytes())).await?;
        let completion = self.run_intent(group_id.as_bytes(), Intent::Rotate).await?;
        let accepted = completion
            .accepted
            .ok_or_else(|| ClientError::InvalidResponse {
                operation: "rotate",
                reason: "no commit was made".to_owned(),
            })?;
        Ok(CommitOutcome {
            epoch: accepted.epoch,
            seq: accepted.seq,
            lost_races: completion.lost_races,
        })
    }

    /// Every group this device knows, including those it was removed from, by
    /// name. Local only: call [`Client::receive`] first to see new invitations.
    pub fn groups(&self) -> Result<Vec<GroupSummary>, ClientError> {
        let rows = self
            .state()
            .read(|_, connection| stored::groups(connection))?;
        rows.iter().map(|row| self.summary(row)).collect()
    }

    /// One group. Local only.
    pub fn group(&self, group_id: &GroupId) -> Result<GroupSummary, ClientError> {
        let row = self.group_row(group_id)?;
        self.summary(&row)
    }

    /// The group's member devices, by leaf index, from this device's MLS state.
    pub fn members(&self, group_id: &GroupId) -> Result<Vec<Member>, ClientError> {
        let session = self.require_session()?;
        let row = self.group_row(group_id)?;
        let group = self
            .state()
            .read(|provider, _| mls::load_group(provider, group_id.as_bytes()))?;
        let Some(group) = group else {
            return Err(ClientError::NotAMember {
                group: display(&row),
                status: row.status,
            });
        };
        Ok(mls::members(&group)
            .into_iter()
            .map(|member| Member {
                this_device: member.identity == session.credential_identity,
                identity: member.identity,
                leaf_index: member.leaf_index.u32(),
            })
            .collect())
    }

    /// The group a user means: its hex id, or else its name. A name shared by
    /// several groups is refused with their ids; groups this device was removed
    /// from count only if no current group has the name.
    pub fn find_group(&self, id_or_name: &str) -> Result<GroupId, ClientError> {
        let rows = self
            .state()
            .read(|_, connection| stored::groups(connection))?;
        if let Ok(group_id) = id_or_name.parse::<GroupId>()
            && rows.iter().any(|row| row.group_id == group_id.0)
        {
            return Ok(group_id);
        }
        let named: Vec<&GroupRow> = rows.iter().filter(|row| row.name == id_or_name).collect();
        let current: Vec<&GroupRow> = named
            .iter()
            .copied()
            .filter(|row| row.status != GroupStatus::Removed)
            .collect();
        let candidates = if current.is_empty() { named } else { current };
        match candidates.as_slice() {
            [] => Err(ClientError::UnknownGroup(id_or_name.to_owned())),
            [row] => Ok(GroupId(row.group_id.clone())),
            rows => Err(ClientError::AmbiguousGroup {
                name: id_or_name.to_owned(),
                count: rows.len(),
                ids: rows.iter().map(|row| hex::encode(&row.group_id)).collect(),
            }),
        }
    }

    /// Forgets this device's MLS state of a group while keeping its place in the
    /// log, as a lost or restored-from-backup state would; the next operation or
    /// [`Client::receive`] notices and rejoins by external commit. For tests of
    /// that recovery.
    #[doc(hidden)]
    pub fn discard_group_state(&self, group_id: &GroupId) -> Result<(), ClientError> {
        self.state().transaction(|provider, _| {
            if let Some(mut group) = mls::load_group(provider, group_id.as_bytes())? {
                mls::delete_group(provider, &mut group)?;
            }
            Ok::<_, ClientError>(())
        })
    }

    pub(crate) fn group_row(&self, group_id: &GroupId) -> Result<GroupRow, ClientError> {
        self.state()
            .read(|_, connection| stored::group(connection, group_id.as_bytes()))?
            .ok_or_else(|| ClientError::UnknownGroup(group_id.to_string()))
    }

    /// The group's name for messages, or its id if it has none.
    pub(crate) fn display_name(&self, group_id: &GroupId) -> Result<String, ClientError> {
        Ok(display(&self.group_row(group_id)?))
    }

    /// The epoch after an operation: the accepted submission's, else the group's.
    fn current_epoch(&self, group_id: &GroupId, accepted: Option<u64>) -> Result<u64, ClientError> {
        match accepted {
            Some(epoch) => Ok(epoch),
            None => Ok(self.group(group_id)?.epoch.unwrap_or_default()),
        }
    }

    fn summary(&self, row: &GroupRow) -> Result<GroupSummary, ClientError> {
        let group = self
            .state()
            .read(|provider, _| mls::load_group(provider, &row.group_id))?;
        let mut summary = GroupSummary {
            group_id: GroupId(row.group_id.clone()),
            name: row.name.clone(),
            status: row.status,
            epoch: None,
            member_devices: 0,
            member_users: 0,
            epoch_authenticator: None,
            tree_hash: None,
            leaving: false,
            unread: self
                .state()
                .read(|_, connection| stored::unread_count(connection, &row.group_id))?,
            cipher_suite: None,
        };
        if let Some(group) = group
            && row.status != GroupStatus::Removed
        {
            let members = mls::members(&group);
            summary.epoch = Some(group.epoch().as_u64());
            summary.member_devices = members.len();
            summary.member_users = members
                .iter()
                .map(|member| member.identity.user_id())
                .collect::<BTreeSet<_>>()
                .len();
            summary.epoch_authenticator = Some(group.epoch_authenticator().as_slice().to_vec());
            summary.tree_hash = Some(group.public_group().group_context().tree_hash().to_vec());
            summary.leaving = row.leaving_epoch.is_some() || mls::is_leaving(&group);
            summary.cipher_suite = mls::group_cipher_suite(&group);
        }
        Ok(summary)
    }
}

/// A group's name, or its hex id when it has none.
pub(crate) fn display(row: &GroupRow) -> String {
    if row.name.is_empty() {
        hex::encode(&row.group_id)
    } else {
        row.name.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_ids_are_lowercase_hex() {
        let group_id: GroupId = "00ff10".parse().unwrap();
        assert_eq!(group_id.as_bytes(), &[0x00, 0xff, 0x10]);
        assert_eq!(group_id.to_string(), "00ff10");
        for bad in ["", "0", "00FF", "team", "0g"] {
            assert!(bad.parse::<GroupId>().is_err(), "{bad}");
        }
    }
}
