//! Rejoining a group by external commit, from the GroupInfo and ratchet tree
//! the hub keeps: the repair for a local group state that is lost or has
//! diverged from the group's. The hub allows it for devices of users who are
//! members; the commit removes this device's old leaf, if the tree still has
//! it, and brings a new one.

use conclave_proto::client::v1 as proto;
use tonic::Code;

use super::groups::{CommitOutcome, GroupId};
use super::submit::{Completion, Intent, Sent, idempotency_key};
use super::{Client, call_error, call_with_status, now_ms};
use crate::connection::group_client;
use crate::error::ClientError;
use crate::mls;
use crate::state::GroupStatus;
use crate::state::groups::{self as stored, GroupRow, PendingSubmission, SubmissionKind};

/// External commits in a row that may lose their epoch before giving up.
const MAX_REJOIN_ATTEMPTS: u32 = 16;

impl Client {
    /// Drops this device's state of the group and joins it again by external
    /// commit. [`Client::receive`] does this on its own when the state is lost or
    /// diverged; this is for a user who wants to force it.
    pub async fn rejoin(&self, group_id: &GroupId) -> Result<CommitOutcome, ClientError> {
        let _operations = self.group_operations.lock().await;
        self.resume_pending(Some(group_id.as_bytes())).await?;
        let completion = self.rejoin_locked(group_id.as_bytes()).await?;
        let accepted = completion
            .accepted
            .ok_or_else(|| ClientError::InvalidResponse {
                operation: "rejoin",
                reason: "no commit was made".to_owned(),
            })?;
        Ok(CommitOutcome {
            epoch: accepted.epoch,
            seq: accepted.seq,
            lost_races: completion.lost_races,
        })
    }

    /// Rejoins by external commit. Callers hold `group_operations`.
    pub(crate) async fn rejoin_locked(&self, group_id: &[u8]) -> Result<Completion, ClientError> {
        let session = self.require_session()?;
        let signer = self.state().signer(&session)?;
        let me = &session.credential_identity;
        let mut lost_races = 0;
        loop {
            let (_, channel, auth) = self.authenticated().await?;
            let reply = call_with_status(
                "get group info",
                group_client(channel, auth).get_group_info(proto::GetGroupInfoRequest {
                    group_id: group_id.to_vec(),
                }),
            )
            .await;
            let reply = match reply {
                Ok(reply) => reply,
                Err((error, _)) if error.code == Code::NotFound => {
                    // The hub answers NOT_FOUND to users who are not members.
                    self.state().transaction(|provider, connection| {
                        super::sync::mark_removed(provider, connection, group_id)
                    })?;
                    return Err(error.into());
                }
                Err(failure) => return Err(call_error(failure)),
            };
            let submission = self.state().transaction(|provider, connection| {
                if let Some(mut old) = mls::load_group(provider, group_id)? {
                    mls::delete_group(provider, &mut old)?;
                }
                let (group, commit) = mls::join_by_external_commit(
                    provider,
                    &signer,
                    me,
                    &reply.group_info,
                    &reply.ratchet_tree,
                )?;
                if group.group_id().as_slice() != group_id {
                    return Err(ClientError::InvalidResponse {
                        operation: "get group info",
                        reason: format!(
                            "it sent the group info of group {}",
                            hex::encode(group.group_id().as_slice())
                        ),
                    });
                }
                let last_seq = stored::group(connection, group_id)?.map_or(0, |row| row.last_seq);
                stored::put_group(
                    connection,
                    &GroupRow {
                        group_id: group_id.to_vec(),
                        name: mls::metadata(&group).name,
                        status: GroupStatus::Rejoining,
                        last_seq,
                        leaving_epoch: None,
                        needs_rejoin: false,
                    },
                    now_ms(),
                )?;
                let mut submission = PendingSubmission {
                    id: 0,
                    group_id: group_id.to_vec(),
                    kind: SubmissionKind::Commit,
                    intent: Intent::Rejoin.to_json(),
                    idempotency_key: idempotency_key(provider)?,
                    payload: commit.commit,
                    welcome: None,
                    extra: Some(commit.group_info),
                    epoch: reply.epoch,
                    lost_race: false,
                };
                submission.id = stored::insert_pending(connection, &submission, now_ms())?;
                Ok(submission)
            })?;
            match self.send_and_apply(&submission).await? {
                Sent::Accepted(accepted) => {
                    tracing::info!(
                        group = hex::encode(group_id),
                        epoch = accepted.epoch,
                        "rejoined by external commit"
                    );
                    return Ok(Completion {
                        accepted: Some(accepted),
                        lost_races,
                        devices: Vec::new(),
                        made_elsewhere: false,
                    });
                }
                Sent::Refused(error) => return Err(error),
                Sent::LostRace { .. } => {
                    // A fresh GroupInfo is all the retry needs.
                    lost_races += 1;
                    if lost_races >= MAX_REJOIN_ATTEMPTS {
                        return Err(ClientError::TooManyConflicts {
                            group: hex::encode(group_id),
                            attempts: lost_races,
                        });
                    }
                }
            }
        }
    }
}
