//! Submissions to the hub that survive crashes and lost races.
//!
//! Each submission is built and stored (with the user's intent and a fresh
//! idempotency key) in one transaction before it is first sent; it is resent
//! with the same key and bytes until the hub answers, so a crash between
//! sending and applying ends with the hub's original answer and nothing written
//! twice. An accepted submission is applied (a commit merged) and forgotten in
//! one transaction. A submission that lost its epoch to another member's commit
//! is undone but stays stored, flagged, while the winner is fetched and merged;
//! the intent applied again to the new epoch replaces it in one transaction, so
//! a failure in between (the homeserver gone again, a crash) loses nothing. A
//! stored submission refused when nobody waits for it any more is kept as a
//! refusal until the application is told.

use conclave_core::ids::{CredentialIdentity, UserId};
use conclave_core::mls::CipherSuite;
use conclave_proto::client::v1 as proto;
use openmls::prelude::OpenMlsRand as _;
use openmls_traits::OpenMlsProvider as _;
use prost::Message as _;
use serde::{Deserialize, Serialize};
use tonic::Code;

use super::groups::GroupId;
use super::key_packages::ClaimedKeyPackage;
use super::{Client, FailPoint, call_with_status, now_ms};
use crate::connection::{ConnectError, group_client, refused_certificate};
use crate::endpoints::{random_unit, reconnect_delay};
use crate::error::{ClientError, RpcError};
use crate::mls::{self, CommitKind};
use crate::state::groups::{self as stored, PendingSubmission, SubmissionKind};
use crate::state::{GroupStatus, MlsProvider, StateError};

/// Epochs in a row a commit may lose before the operation gives up. Each loss
/// means another member committed first, so the group is busy but moving.
const MAX_LOST_RACES: u32 = 64;

/// Bytes of randomness in an idempotency key (the hub takes 1 to 64).
const IDEMPOTENCY_KEY_BYTES: usize = 16;

/// Type URL of `CommitConflict` inside the status details of ABORTED.
const COMMIT_CONFLICT_TYPE_URL: &str = "type.googleapis.com/conclave.client.v1.CommitConflict";

/// What the user asked for. Stored as JSON with each submission, so that one
/// that loses the race for its epoch can be rebuilt for the next epoch, even
/// after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "intent", rename_all = "snake_case")]
pub(crate) enum Intent {
    /// Register a new group at the hub.
    Create,
    /// Add every device of these users that is not in the group yet.
    Invite { users: Vec<String> },
    /// Remove every device of this user.
    Remove { user: String },
    /// Remove these devices (credential identities) that departed their
    /// domain: their departure notices asked the members to.
    RemoveDevices { devices: Vec<String> },
    /// Replace this device's leaf keys.
    Rotate,
    /// Commit the proposals other members sent.
    CommitProposals,
    /// Propose this device's removal.
    Leave,
    /// Join again by external commit.
    Rejoin,
    /// Send a text message.
    Text {
        body: String,
        /// This device's clock when the user sent it (kept across resends and
        /// lost races); absent in intents stored by older versions.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sent_at_ms: Option<i64>,
    },
}

impl Intent {
    pub(crate) fn to_json(&self) -> String {
        // An enum of strings always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub(crate) fn from_json(text: &str) -> Result<Intent, StateError> {
        serde_json::from_str(text)
            .map_err(|error| StateError::Corrupt(format!("stored intent {text:?}: {error}")))
    }
}

/// A stored submission that was not made after all, told to the application
/// once ([`Client::take_refused_submissions`], [`ReceiveReport::refused`]):
/// resent or rebuilt after its caller had moved on (a message kept with
/// [`ClientError::NotSentYet`]), the homeserver refused it for good, or it
/// could no longer be made (this device was removed from the group).
///
/// [`ReceiveReport::refused`]: super::ReceiveReport::refused
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedSubmission {
    pub group_id: GroupId,
    /// The group's name (or its id, if it has none or is gone).
    pub group_name: String,
    /// What it was to do, in a few words ("send a message", "invite
    /// bob@example.org").
    pub action: String,
    /// For a message, its text.
    pub text: Option<String>,
    /// Why, as the homeserver (or this device) said.
    pub reason: String,
}

impl Intent {
    /// The intent in a few words, for the user.
    fn describe(&self) -> String {
        match self {
            Intent::Create => "create the group".to_owned(),
            Intent::Invite { users } => format!("invite {}", users.join(", ")),
            Intent::Remove { user } => format!("remove {user}"),
            Intent::RemoveDevices { devices } => {
                format!("remove departed devices {}", devices.join(", "))
            }
            Intent::Rotate => "rotate this device's keys".to_owned(),
            Intent::CommitProposals => "commit other members' proposals".to_owned(),
            Intent::Leave => "leave the group".to_owned(),
            Intent::Rejoin => "rejoin the group".to_owned(),
            Intent::Text { .. } => "send a message".to_owned(),
        }
    }
}

/// Where the hub put an accepted submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Accepted {
    /// Its position in the group's log (0 for a group creation).
    pub(crate) seq: u64,
    /// The group's epoch afterwards.
    pub(crate) epoch: u64,
}

/// The hub's answer to one sending of a stored submission, once applied here.
pub(crate) enum Sent {
    /// Accepted and applied.
    Accepted(Accepted),
    /// Its epoch ended before it landed (another commit won): undone here. Catch
    /// up to `winning_seq` (0: as far as there is) and apply the intent again.
    LostRace { winning_seq: u64 },
    /// Refused for good: undone here.
    Refused(ClientError),
}

/// Who hears of the final refusal of a stored submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefusalNotice {
    /// The caller that asked for it, which waits for the answer: it gets the
    /// error.
    Returned,
    /// Nobody waits (it is resent or rebuilt later): the refusal is kept, in
    /// the transaction that forgets the submission, for
    /// [`Client::take_refused_submissions`].
    Kept,
}

/// Why a submission is undone.
#[derive(Clone, Copy)]
enum Undo<'a> {
    /// Its epoch ended before it landed.
    LostRace,
    /// The hub refused it for good.
    Refused {
        code: Code,
        error: &'a ClientError,
        notice: RefusalNotice,
    },
}

/// How one sending failed, before anything is applied.
enum SendFailure {
    Conflict {
        winning_seq: u64,
    },
    Stale,
    Refused(ClientError, Code),
    /// No answer, or a passing failure: the submission is kept for a resend.
    Unavailable(ClientError),
}

/// What running an intent achieved.
pub(crate) struct Completion {
    /// Where the winning submission landed; `None` if nothing had to be sent.
    pub(crate) accepted: Option<Accepted>,
    /// Epochs lost to other members' commits before one was won.
    pub(crate) lost_races: u32,
    /// The devices added or removed.
    pub(crate) devices: Vec<CredentialIdentity>,
    /// The submission being rebuilt was made by another process on this
    /// state meanwhile (its row is gone, and no refusal of it is kept).
    pub(crate) made_elsewhere: bool,
}

/// The next step towards an intent, decided against the group's current state.
enum Prepared {
    /// Stored and ready to send.
    Submission {
        submission: PendingSubmission,
        devices: Vec<CredentialIdentity>,
    },
    /// The intent holds already (say, another member added the invitees).
    Done,
    /// The submission to be rebuilt is no longer stored: forgotten with a
    /// refusal kept (this device was removed from the group meanwhile), or made
    /// by another process on this state.
    Gone,
    /// Other members' proposals must be committed first: openmls refuses to
    /// encrypt while proposals are pending.
    CommitProposalsFirst,
    /// The group's state is lost or diverged: rejoin first.
    RejoinFirst,
}

/// A fresh idempotency key.
pub(crate) fn idempotency_key(provider: &MlsProvider<'_>) -> Result<Vec<u8>, ClientError> {
    provider
        .rand()
        .random_vec(IDEMPOTENCY_KEY_BYTES)
        .map_err(|error| {
            mls::MlsError::group("draw an idempotency key", format!("{error:?}")).into()
        })
}

impl Client {
    /// Takes the stored submissions (of one group, or of all) that were not
    /// made after all, oldest first: each is handed out once. A message kept
    /// by [`Client::send`] ([`ClientError::NotSentYet`]) is either delivered
    /// or, once, here. Local only.
    pub fn take_refused_submissions(
        &self,
        group_id: Option<&GroupId>,
    ) -> Result<Vec<RefusedSubmission>, ClientError> {
        let rows = self.state().transaction(|_, connection| {
            let rows = stored::take_refused(connection, group_id.map(GroupId::as_bytes))?;
            rows.into_iter()
                .map(|row| {
                    let group_name = stored::group(connection, &row.group_id)?
                        .map(|group| super::groups::display(&group))
                        .unwrap_or_else(|| hex::encode(&row.group_id));
                    Ok((row, group_name))
                })
                .collect::<Result<Vec<_>, StateError>>()
        })?;
        rows.into_iter()
            .map(|(row, group_name)| {
                let intent = Intent::from_json(&row.intent)?;
                let text = match &intent {
                    Intent::Text { body, .. } => Some(body.clone()),
                    _ => None,
                };
                Ok(RefusedSubmission {
                    group_id: GroupId::from_bytes(row.group_id),
                    group_name,
                    action: intent.describe(),
                    text,
                    reason: row.reason,
                })
            })
            .collect()
    }

    /// Runs an intent until the hub accepted a submission for it, or it holds
    /// already, or it fails. Callers hold `group_operations`.
    pub(crate) async fn run_intent(
        &self,
        group_id: &[u8],
        intent: Intent,
    ) -> Result<Completion, ClientError> {
        self.run_intent_tracked(group_id, intent, &mut None).await
    }

    /// [`Client::run_intent`], telling through `stored_row` the row id of the
    /// last submission stored for the intent (a rebuild keeps the row id of the
    /// submission it replaces). Whether that row still holds the intent after a
    /// failure says whether it is left to be resent (or, after a lost race,
    /// rebuilt) by [`Client::resume_pending`], so that running the intent again
    /// would do it twice: only the database knows, as a catch-up on the way may
    /// have forgotten it (a removal from the group).
    pub(crate) async fn run_intent_tracked(
        &self,
        group_id: &[u8],
        intent: Intent,
        stored_row: &mut Option<i64>,
    ) -> Result<Completion, ClientError> {
        self.run_intent_replacing(group_id, intent, None, RefusalNotice::Returned, stored_row)
            .await
    }

    /// Runs an intent; with `replacing`, one whose stored submission lost its
    /// race (the group caught up past it), which the rebuild replaces in the
    /// transaction that stores it. A submission that loses its race stays
    /// stored, flagged, until then: whatever fails in between (the catch-up, the
    /// rebuild) leaves the intent for [`Client::resume_pending`]. Only a final
    /// failure of the intent itself (the hub refused it, or it can no longer be
    /// made) forgets it, telling `notice`: every failure on the way, the
    /// catch-up's and the detours' included, goes through
    /// [`Client::fail_intent`].
    async fn run_intent_replacing(
        &self,
        group_id: &[u8],
        intent: Intent,
        mut replacing: Option<PendingSubmission>,
        notice: RefusalNotice,
        stored_row: &mut Option<i64>,
    ) -> Result<Completion, ClientError> {
        *stored_row = replacing.as_ref().map(|replaced| replaced.id);
        let mut lost_races = 0;
        // Claimed once, and reused when the commit has to be rebuilt.
        let mut claimed: Option<Vec<ClaimedKeyPackage>> = None;
        // Rejoins and proposal commits done on the way; a bound keeps a group that
        // keeps failing from looping forever.
        let mut detours = 0;
        loop {
            let prepared = match self
                .prepare(group_id, &intent, &mut claimed, replacing.as_ref())
                .await
            {
                Ok(prepared) => prepared,
                Err(error) => {
                    return Err(self.fail_intent(replacing.as_ref(), error, notice)?);
                }
            };
            let (submission, devices) = match prepared {
                Prepared::Submission {
                    submission,
                    devices,
                } => (submission, devices),
                Prepared::Done => {
                    // Forgotten with the flagged submission, if any.
                    return Ok(Completion {
                        accepted: None,
                        lost_races,
                        devices: Vec::new(),
                        made_elsewhere: false,
                    });
                }
                Prepared::Gone => {
                    // Forgotten by this process's own catch-up, which kept a
                    // refusal for whoever waits: the caller waits, so it is
                    // told by the error, and only by it.
                    if let Some(replaced) = replacing.as_ref()
                        && notice == RefusalNotice::Returned
                        && let Some(error) = self.take_refusal_of(replaced)?
                    {
                        return Err(error);
                    }
                    return Ok(Completion {
                        accepted: None,
                        lost_races,
                        devices: Vec::new(),
                        made_elsewhere: true,
                    });
                }
                Prepared::CommitProposalsFirst if detours < 8 => {
                    detours += 1;
                    if let Err(error) =
                        Box::pin(self.run_intent(group_id, Intent::CommitProposals)).await
                    {
                        return Err(self.fail_intent(replacing.as_ref(), error, notice)?);
                    }
                    continue;
                }
                Prepared::RejoinFirst if detours < 8 => {
                    detours += 1;
                    if let Err(error) = Box::pin(self.rejoin_locked(group_id)).await {
                        return Err(self.fail_intent(replacing.as_ref(), error, notice)?);
                    }
                    continue;
                }
                Prepared::CommitProposalsFirst | Prepared::RejoinFirst => {
                    let error = ClientError::TooManyConflicts {
                        group: hex::encode(group_id),
                        attempts: detours,
                    };
                    return Err(self.fail_intent(replacing.as_ref(), error, notice)?);
                }
            };
            *stored_row = Some(submission.id);
            match self.send_and_apply_noting(&submission, notice).await? {
                Sent::Accepted(accepted) => {
                    return Ok(Completion {
                        accepted: Some(accepted),
                        lost_races,
                        devices,
                        made_elsewhere: false,
                    });
                }
                Sent::Refused(error) => {
                    return Err(error);
                }
                Sent::LostRace { winning_seq } => {
                    // Still stored, flagged: the rebuild replaces it.
                    replacing = Some(PendingSubmission {
                        lost_race: true,
                        ..submission
                    });
                    lost_races += 1;
                    tracing::debug!(
                        group = hex::encode(group_id),
                        lost_races,
                        winning_seq,
                        "lost the race for an epoch; catching up"
                    );
                    if lost_races >= MAX_LOST_RACES {
                        let error = ClientError::TooManyConflicts {
                            group: hex::encode(group_id),
                            attempts: lost_races,
                        };
                        return Err(self.fail_intent(replacing.as_ref(), error, notice)?);
                    }
                    if let Err(error) = self.catch_up(group_id, winning_seq).await {
                        return Err(self.fail_intent(replacing.as_ref(), error, notice)?);
                    }
                }
            }
        }
    }

    /// The intent of `replacing`, a submission that lost its race, failed to be
    /// rebuilt with `error`. A final failure forgets it (keeping the refusal
    /// for the application if `notice` says so); any other keeps it to be
    /// rebuilt later. If it is gone already (this device was removed from the
    /// group while catching up, which kept a refusal of it) and the caller
    /// waits, the kept refusal is the error, taken so that it is told once.
    /// Returns the error to pass on.
    fn fail_intent(
        &self,
        replacing: Option<&PendingSubmission>,
        error: ClientError,
        notice: RefusalNotice,
    ) -> Result<ClientError, ClientError> {
        let Some(replaced) = replacing else {
            return Ok(error);
        };
        // A simulated crash leaves the state as it is, as a crash would.
        if matches!(error, ClientError::SimulatedCrash(_)) {
            return Ok(error);
        }
        let present = self
            .state()
            .read(|_, connection| stored::pending_exists(connection, replaced))?;
        if !present {
            return Ok(match notice {
                RefusalNotice::Returned => self.take_refusal_of(replaced)?.unwrap_or(error),
                RefusalNotice::Kept => error,
            });
        }
        if keeps_intent(&error) {
            return Ok(error);
        }
        self.state().transaction(|_, connection| {
            if stored::delete_pending(connection, replaced)? && notice == RefusalNotice::Kept {
                stored::insert_refused(
                    connection,
                    &replaced.group_id,
                    &replaced.intent,
                    &error.to_string(),
                    now_ms(),
                )?;
            }
            Ok::<_, ClientError>(())
        })?;
        Ok(error)
    }

    /// Takes the kept refusal of `forgotten` (a submission no longer stored),
    /// if there is one, as the error to give the caller that waits for it.
    fn take_refusal_of(
        &self,
        forgotten: &PendingSubmission,
    ) -> Result<Option<ClientError>, ClientError> {
        let taken = self.state().transaction(|_, connection| {
            let Some(reason) =
                stored::take_refused_of(connection, &forgotten.group_id, &forgotten.intent)?
            else {
                return Ok(None);
            };
            let group = stored::group(connection, &forgotten.group_id)?
                .map(|row| super::groups::display(&row))
                .unwrap_or_else(|| hex::encode(&forgotten.group_id));
            Ok::<_, StateError>(Some((group, reason)))
        })?;
        let Some((group, reason)) = taken else {
            return Ok(None);
        };
        Ok(Some(ClientError::NotDone {
            group,
            action: Intent::from_json(&forgotten.intent)?.describe(),
            reason,
        }))
    }

    /// Sends every stored submission (of one group, or all) that has no answer
    /// yet, applies the answers, and rebuilds the intents of those that lost
    /// their race (now or before a failure or a restart), in the order they
    /// were stored. A final refusal is kept for
    /// [`Client::take_refused_submissions`], and the next submission handled.
    /// A submission that stays stored after a failure stops its group (what
    /// follows it must not overtake it), not the others: they are handled,
    /// and the first such failure returned at the end. Callers hold
    /// `group_operations`.
    pub(crate) async fn resume_pending(&self, group_id: Option<&[u8]>) -> Result<(), ClientError> {
        let mut first_error = None;
        let mut stopped_groups: Vec<Vec<u8>> = Vec::new();
        // Read again after each one: catching up may forget others (a removal
        // from their group, an echo of one that was accepted).
        let mut last_id = 0;
        while let Some(submission) = self.next_pending(group_id, last_id)? {
            last_id = submission.id;
            if stopped_groups.contains(&submission.group_id) {
                continue;
            }
            tracing::info!(group = hex::encode(&submission.group_id), kind = ?submission.kind, lost_race = submission.lost_race, "resuming a submission");
            let group_id = submission.group_id.clone();
            let Err(error) = self.resume_one(submission).await else {
                continue;
            };
            if matches!(error, ClientError::SimulatedCrash(_)) {
                return Err(error);
            }
            // A rebuild keeps the row id of the submission it replaces.
            let kept = self
                .state()
                .read(|_, connection| stored::pending_id_exists(connection, last_id))?;
            if kept {
                tracing::warn!(group = hex::encode(&group_id), %error, "a stored submission is kept for later; the group's next ones wait");
                stopped_groups.push(group_id);
                first_error.get_or_insert(error);
            } else {
                tracing::warn!(group = hex::encode(&group_id), %error, "a stored intent could not be carried out");
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Resumes one stored submission: sends it (unless it lost its race
    /// before), and after a lost race catches up and rebuilds its intent.
    async fn resume_one(&self, submission: PendingSubmission) -> Result<(), ClientError> {
        let intent = Intent::from_json(&submission.intent)?;
        let group_id = submission.group_id.clone();
        let winning_seq = if submission.lost_race {
            0
        } else {
            match self
                .send_and_apply_noting(&submission, RefusalNotice::Kept)
                .await?
            {
                Sent::Accepted(_) => return Ok(()),
                Sent::Refused(error) => {
                    tracing::warn!(group = hex::encode(&group_id), %error, "a stored submission was refused");
                    return Ok(());
                }
                Sent::LostRace { winning_seq } => winning_seq,
            }
        };
        let replaced = PendingSubmission {
            lost_race: true,
            ..submission
        };
        if let Err(error) = self.catch_up(&group_id, winning_seq).await {
            return Err(self.fail_intent(Some(&replaced), error, RefusalNotice::Kept)?);
        }
        match intent {
            // Forgotten when undone: the creation cannot be redone, and a
            // rejoin's need is kept as the group's `needs_rejoin`.
            Intent::Create => Ok(()),
            Intent::Rejoin => self.rejoin_locked(&group_id).await.map(drop),
            intent => self
                .run_intent_replacing(
                    &group_id,
                    intent,
                    Some(replaced),
                    RefusalNotice::Kept,
                    &mut None,
                )
                .await
                .map(drop),
        }
    }

    /// The first stored submission (of one group, or of all) after row `after`.
    fn next_pending(
        &self,
        group_id: Option<&[u8]>,
        after: i64,
    ) -> Result<Option<PendingSubmission>, ClientError> {
        let pending = self
            .state()
            .read(|_, connection| stored::pending_submissions(connection, group_id))?;
        Ok(pending.into_iter().find(|submission| submission.id > after))
    }

    /// Sends a stored submission and applies the hub's answer; a final refusal
    /// is returned to the caller. `Err` means it is still stored (no answer, or
    /// a local failure) and will be resent.
    pub(crate) async fn send_and_apply(
        &self,
        submission: &PendingSubmission,
    ) -> Result<Sent, ClientError> {
        self.send_and_apply_noting(submission, RefusalNotice::Returned)
            .await
    }

    /// [`Client::send_and_apply`], telling `notice` of a final refusal.
    async fn send_and_apply_noting(
        &self,
        submission: &PendingSubmission,
        notice: RefusalNotice,
    ) -> Result<Sent, ClientError> {
        self.check_fail_point(FailPoint::BeforeSend)?;
        match self.send_pending_failing_over(submission).await {
            Ok(accepted) => {
                self.check_fail_point(FailPoint::AfterAccepted)?;
                self.apply_accepted(submission, accepted)?;
                Ok(Sent::Accepted(accepted))
            }
            Err(SendFailure::Conflict { winning_seq }) => {
                self.undo(submission, Undo::LostRace)?;
                self.check_fail_point(FailPoint::AfterLostRace)?;
                Ok(Sent::LostRace { winning_seq })
            }
            Err(SendFailure::Stale) => {
                self.undo(submission, Undo::LostRace)?;
                self.check_fail_point(FailPoint::AfterLostRace)?;
                Ok(Sent::LostRace { winning_seq: 0 })
            }
            Err(SendFailure::Refused(error, code)) => {
                self.undo(
                    submission,
                    Undo::Refused {
                        code,
                        error: &error,
                        notice,
                    },
                )?;
                Ok(Sent::Refused(error))
            }
            Err(SendFailure::Unavailable(error)) => Err(error),
        }
    }

    /// Builds the next submission for an intent against the group as it is now,
    /// and stores it; in place of `replacing` (a submission of the intent that
    /// lost its race), which is forgotten in the same transaction, as it is
    /// when the intent turns out to hold already.
    async fn prepare(
        &self,
        group_id: &[u8],
        intent: &Intent,
        claimed: &mut Option<Vec<ClaimedKeyPackage>>,
        replacing: Option<&PendingSubmission>,
    ) -> Result<Prepared, ClientError> {
        let session = self.require_session()?;
        let signer = self.state().signer(&session)?;
        // Claimed in the group's suite; a group this device cannot load claims
        // nothing yet: the transaction below has it rejoin first, and the next
        // round claims.
        if let Intent::Invite { users } = intent
            && claimed.is_none()
            && let Some(suite) = self.stored_group_suite(group_id)?
        {
            *claimed = Some(self.claim_for_invitation(users, suite).await?);
        }
        let claimed = claimed.as_deref().unwrap_or_default();
        let me = &session.credential_identity;
        let build = |provider: &MlsProvider<'_>, connection: &rusqlite::Connection| {
            let group_name = |row: &stored::GroupRow| super::groups::display(row);
            let row = stored::group(connection, group_id)?
                .ok_or_else(|| ClientError::UnknownGroup(hex::encode(group_id)))?;
            match row.status {
                GroupStatus::Active => {}
                GroupStatus::Rejoining => return Ok(Prepared::RejoinFirst),
                GroupStatus::Creating | GroupStatus::Removed => {
                    return Err(ClientError::NotAMember {
                        group: group_name(&row),
                        status: row.status,
                    });
                }
            }
            if row.needs_rejoin {
                return Ok(Prepared::RejoinFirst);
            }
            let Some(mut group) = mls::load_group(provider, group_id)? else {
                stored::set_needs_rejoin(connection, group_id, true)?;
                return Ok(Prepared::RejoinFirst);
            };
            // Every stored submission of this group was resumed before, so a
            // pending commit here is a leftover with no submission: drop it.
            if group.pending_commit().is_some() {
                mls::discard_own_commit(&mut group, provider)?;
            }
            let leaving = mls::is_leaving(&group);
            let refuse_if_leaving = || {
                if leaving {
                    Err(ClientError::Leaving(group_name(&row)))
                } else {
                    Ok(())
                }
            };
            let epoch = group.epoch().as_u64();
            let members = mls::members(&group);
            let mut devices = Vec::new();
            let (kind, commit_kind) = match intent {
                Intent::Create | Intent::Rejoin => {
                    return Err(ClientError::InvalidResponse {
                        operation: "submit",
                        reason: "internal error: creation and rejoining are not prepared here"
                            .to_owned(),
                    });
                }
                Intent::Invite { .. } => {
                    refuse_if_leaving()?;
                    let to_add: Vec<&ClaimedKeyPackage> = claimed
                        .iter()
                        .filter(|package| {
                            !members
                                .iter()
                                .any(|member| member.identity == package.credential_identity)
                        })
                        .collect();
                    if to_add.is_empty() {
                        return Ok(Prepared::Done);
                    }
                    devices = to_add
                        .iter()
                        .map(|package| package.credential_identity.clone())
                        .collect();
                    let key_packages = to_add
                        .iter()
                        .map(|package| package.key_package.clone())
                        .collect();
                    (SubmissionKind::Commit, Some(CommitKind::Add(key_packages)))
                }
                Intent::Remove { user } => {
                    refuse_if_leaving()?;
                    let user: UserId = user.parse()?;
                    let leaves: Vec<_> = members
                        .iter()
                        .filter(|member| member.identity.user_id() == &user)
                        .collect();
                    if leaves.is_empty() {
                        return Ok(Prepared::Done);
                    }
                    devices = leaves.iter().map(|leaf| leaf.identity.clone()).collect();
                    // A device whose leave proposal is pending goes with the
                    // proposal store, which every commit consumes; naming its leaf
                    // again would be a duplicate removal.
                    let proposed = mls::leaves_proposed_for_removal(&group);
                    let leaves: Vec<_> = leaves
                        .iter()
                        .map(|leaf| leaf.leaf_index)
                        .filter(|leaf_index| !proposed.contains(leaf_index))
                        .collect();
                    if leaves.is_empty() {
                        (SubmissionKind::Commit, Some(CommitKind::PendingProposals))
                    } else {
                        (SubmissionKind::Commit, Some(CommitKind::Remove(leaves)))
                    }
                }
                Intent::RemoveDevices { devices: departed } => {
                    refuse_if_leaving()?;
                    let leaves: Vec<_> = members
                        .iter()
                        .filter(|member| departed.contains(&member.identity.to_string()))
                        .collect();
                    if leaves.is_empty() {
                        return Ok(Prepared::Done);
                    }
                    devices = leaves.iter().map(|leaf| leaf.identity.clone()).collect();
                    // As for Remove: a leaf with a pending removal proposal goes
                    // with the proposal store.
                    let proposed = mls::leaves_proposed_for_removal(&group);
                    let leaves: Vec<_> = leaves
                        .iter()
                        .map(|leaf| leaf.leaf_index)
                        .filter(|leaf_index| !proposed.contains(leaf_index))
                        .collect();
                    if leaves.is_empty() {
                        (SubmissionKind::Commit, Some(CommitKind::PendingProposals))
                    } else {
                        (SubmissionKind::Commit, Some(CommitKind::Remove(leaves)))
                    }
                }
                Intent::Rotate => {
                    refuse_if_leaving()?;
                    (SubmissionKind::Commit, Some(CommitKind::SelfUpdate))
                }
                Intent::CommitProposals => {
                    if leaving || !mls::has_proposals_to_commit(&group) {
                        return Ok(Prepared::Done);
                    }
                    (SubmissionKind::Commit, Some(CommitKind::PendingProposals))
                }
                Intent::Leave => {
                    if leaving && row.leaving_epoch == Some(epoch) {
                        return Ok(Prepared::Done);
                    }
                    (SubmissionKind::Proposal, None)
                }
                Intent::Text { .. } => {
                    refuse_if_leaving()?;
                    if mls::has_proposals_to_commit(&group) {
                        return Ok(Prepared::CommitProposalsFirst);
                    }
                    (SubmissionKind::Message, None)
                }
            };
            let (payload, welcome, extra) = match (commit_kind, intent) {
                (Some(commit_kind), _) => {
                    let commit = mls::build_commit(&mut group, provider, &signer, commit_kind)?;
                    (commit.commit, commit.welcome, Some(commit.group_info))
                }
                (None, Intent::Leave) => {
                    if leaving {
                        // A stale proposal of an earlier attempt: replace it.
                        mls::discard_own_leave(&mut group, provider)?;
                    }
                    (
                        mls::leave_proposal(&mut group, provider, &signer)?,
                        None,
                        None,
                    )
                }
                (None, Intent::Text { body, sent_at_ms }) => {
                    let plaintext = mls::encode_text(body, sent_at_ms.unwrap_or_else(now_ms));
                    (
                        mls::encrypt(&mut group, provider, &signer, &plaintext)?,
                        None,
                        None,
                    )
                }
                (None, _) => unreachable!("every other intent is a commit"),
            };
            let mut submission = PendingSubmission {
                id: 0,
                group_id: group_id.to_vec(),
                kind,
                intent: intent.to_json(),
                idempotency_key: idempotency_key(provider)?,
                payload,
                welcome,
                extra,
                epoch,
                lost_race: false,
            };
            submission.id = stored::insert_pending(connection, &submission, now_ms())?;
            tracing::debug!(group = hex::encode(group_id), ?kind, epoch, me = %me, "stored a submission");
            Ok(Prepared::Submission {
                submission,
                devices,
            })
        };
        self.state().transaction(|provider, connection| {
            if let Some(replaced) = replacing
                && !stored::pending_exists(connection, replaced)?
            {
                // Forgotten by a catch-up (with a refusal kept), or finished
                // meanwhile by another process on this state.
                return Ok(Prepared::Gone);
            }
            let mut prepared = build(provider, connection)?;
            if let Some(replaced) = replacing {
                match &mut prepared {
                    Prepared::Submission { submission, .. } => {
                        // The rebuild takes the replaced one's place in line.
                        stored::replace_pending(connection, replaced, submission.id)?;
                        submission.id = replaced.id;
                    }
                    Prepared::Done => {
                        stored::delete_pending(connection, replaced)?;
                    }
                    // Kept until the detour is made and the intent rebuilt.
                    Prepared::CommitProposalsFirst | Prepared::RejoinFirst | Prepared::Gone => {}
                }
            }
            Ok(prepared)
        })
    }

    /// The cipher suite of the group as this device holds it, if it does.
    fn stored_group_suite(&self, group_id: &[u8]) -> Result<Option<CipherSuite>, ClientError> {
        let group = self
            .state()
            .read(|provider, _| mls::load_group(provider, group_id))?;
        Ok(group.as_ref().and_then(mls::group_cipher_suite))
    }

    /// One key package of `suite` per device of each user, verified. A user
    /// with none is an error, unless it is this device's own user (whose other
    /// devices are optional).
    async fn claim_for_invitation(
        &self,
        users: &[String],
        suite: CipherSuite,
    ) -> Result<Vec<ClaimedKeyPackage>, ClientError> {
        let session = self.require_session()?;
        let mut claimed = Vec::new();
        for user in users {
            let user: UserId = user.parse()?;
            let packages = self.claim_key_packages_in(&user, suite).await?;
            let others = packages
                .iter()
                .filter(|package| package.credential_identity != session.credential_identity)
                .count();
            if others == 0 && &user != session.user_id() {
                return Err(ClientError::NoDevicesToAdd(user));
            }
            claimed.extend(packages);
        }
        Ok(claimed)
    }

    /// Sends a stored submission once.
    /// [`Client::send_pending`], again at the homeserver's next address (after
    /// a jittered back-off) while the connection is lost, a few times per
    /// address: a replica shutting down or gone costs a retry, not a failure.
    /// Safe because the submission keeps its idempotency key.
    async fn send_pending_failing_over(
        &self,
        submission: &PendingSubmission,
    ) -> Result<Accepted, SendFailure> {
        let attempts = 2 * u32::try_from(self.endpoint_count())
            .unwrap_or(u32::MAX)
            .max(1);
        let mut attempt = 0;
        loop {
            let endpoint = self.server_endpoint().map_err(SendFailure::Unavailable)?;
            match self.send_pending(submission).await {
                Err(SendFailure::Unavailable(error))
                    if attempt + 1 < attempts && is_connection_lost(&error) =>
                {
                    if let Some(endpoint) = endpoint {
                        self.fail_over(&endpoint)
                            .map_err(SendFailure::Unavailable)?;
                    }
                    let delay = reconnect_delay(attempt, random_unit());
                    tracing::debug!(%error, attempt, ?delay, "sending failed; retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn send_pending(&self, submission: &PendingSubmission) -> Result<Accepted, SendFailure> {
        let (_, channel, auth) = self
            .authenticated()
            .await
            .map_err(SendFailure::Unavailable)?;
        let mut client = group_client(channel, auth);
        let key = submission.idempotency_key.clone();
        let group_id = submission.group_id.clone();
        let result = match submission.kind {
            SubmissionKind::Create => call_with_status(
                "create group",
                client.create_group(proto::CreateGroupRequest {
                    idempotency_key: key,
                    group_info: submission.payload.clone(),
                    ratchet_tree: submission.extra.clone().unwrap_or_default(),
                }),
            )
            .await
            .map(|reply| Accepted {
                seq: 0,
                epoch: reply.epoch,
            }),
            SubmissionKind::Commit => call_with_status(
                "submit commit",
                client.submit_commit(proto::SubmitCommitRequest {
                    idempotency_key: key,
                    group_id,
                    commit: submission.payload.clone(),
                    welcome: submission.welcome.clone(),
                    group_info: submission.extra.clone().unwrap_or_default(),
                }),
            )
            .await
            .map(accepted),
            SubmissionKind::Proposal => call_with_status(
                "submit proposal",
                client.submit_proposal(proto::SubmitProposalRequest {
                    idempotency_key: key,
                    group_id,
                    proposal: submission.payload.clone(),
                }),
            )
            .await
            .map(accepted),
            SubmissionKind::Message => call_with_status(
                "send message",
                client.send_message(proto::SendMessageRequest {
                    idempotency_key: key,
                    group_id,
                    message: submission.payload.clone(),
                }),
            )
            .await
            .map(accepted),
        };
        result.map_err(|(error, status)| classify(submission.kind, error, status.as_ref()))
    }

    /// Applies an accepted submission and forgets it, in one transaction. If it
    /// is gone already, its echo from the hub (or another process on this
    /// state) applied it first.
    fn apply_accepted(
        &self,
        submission: &PendingSubmission,
        accepted: Accepted,
    ) -> Result<(), ClientError> {
        let session = self.require_session()?;
        let me = &session.credential_identity;
        let intent = Intent::from_json(&submission.intent)?;
        let group_id = submission.group_id.as_slice();
        self.state().transaction(|provider, connection| {
            if !stored::delete_pending(connection, submission)? {
                return Ok(());
            }
            match submission.kind {
                SubmissionKind::Create => {
                    stored::set_status(connection, group_id, GroupStatus::Active)?;
                }
                SubmissionKind::Commit if intent == Intent::Rejoin => {
                    super::sync::finish_rejoin(provider, connection, me, group_id, accepted.seq)?;
                }
                SubmissionKind::Commit => {
                    if let Some(mut group) = mls::load_group(provider, group_id)? {
                        let changes = mls::own_commit_changes(&group);
                        mls::merge_own_commit(&mut group, provider)?;
                        super::sync::record_changes(
                            connection,
                            me,
                            group_id,
                            accepted.seq,
                            None,
                            &changes,
                        )?;
                        super::sync::retry_held(provider, connection, me, group_id)?;
                    }
                }
                SubmissionKind::Proposal => {
                    stored::set_leaving_epoch(connection, group_id, Some(submission.epoch))?;
                }
                SubmissionKind::Message => {
                    record_own_message(connection, me, submission, accepted.seq)?;
                }
            }
            Ok::<_, ClientError>(())
        })
    }

    /// Undoes a submission the hub did not take: drops the pending commit (or
    /// proposal, or the provisional group). A refused submission is forgotten
    /// (its refusal kept if `notice` says so); one that lost its race is kept,
    /// flagged, for its intent to be rebuilt, except a creation (nothing to
    /// redo) and a rejoin (whose need is kept as the group's `needs_rejoin`).
    fn undo(&self, submission: &PendingSubmission, undo: Undo<'_>) -> Result<(), ClientError> {
        let intent = Intent::from_json(&submission.intent)?;
        let group_id = submission.group_id.as_slice();
        let refusal = match undo {
            Undo::LostRace => None,
            Undo::Refused { code, .. } => Some(code),
        };
        self.state().transaction(|provider, connection| {
            let kept = refusal.is_none() && !matches!(intent, Intent::Create | Intent::Rejoin);
            let found = if kept {
                stored::mark_lost_race(connection, submission)?
            } else {
                stored::delete_pending(connection, submission)?
            };
            if !found {
                return Ok(());
            }
            if let Undo::Refused {
                error,
                notice: RefusalNotice::Kept,
                ..
            } = undo
            {
                stored::insert_refused(
                    connection,
                    group_id,
                    &submission.intent,
                    &error.to_string(),
                    now_ms(),
                )?;
            }
            let group = mls::load_group(provider, group_id)?;
            match (submission.kind, group) {
                (SubmissionKind::Create, group) => {
                    if let Some(mut group) = group {
                        mls::delete_group(provider, &mut group)?;
                    }
                    stored::delete_group(connection, group_id)?;
                }
                (SubmissionKind::Commit, group) if intent == Intent::Rejoin => {
                    if let Some(mut group) = group {
                        mls::delete_group(provider, &mut group)?;
                    }
                    if matches!(refusal, Some(Code::PermissionDenied | Code::NotFound)) {
                        // The hub no longer counts this user as a member.
                        super::sync::mark_removed(provider, connection, group_id)?;
                    } else {
                        stored::set_needs_rejoin(connection, group_id, true)?;
                    }
                }
                (SubmissionKind::Commit, Some(mut group)) => {
                    if group.pending_commit().is_some() {
                        mls::discard_own_commit(&mut group, provider)?;
                    }
                }
                (SubmissionKind::Proposal, Some(mut group)) => {
                    mls::discard_own_leave(&mut group, provider)?;
                }
                (SubmissionKind::Commit | SubmissionKind::Proposal, None)
                | (SubmissionKind::Message, _) => {}
            }
            Ok::<_, ClientError>(())
        })
    }
}

/// Stores this device's own text message at the position the hub gave it.
pub(crate) fn record_own_message(
    connection: &rusqlite::Connection,
    me: &CredentialIdentity,
    submission: &PendingSubmission,
    seq: u64,
) -> Result<(), ClientError> {
    if let Intent::Text { body, sent_at_ms } = Intent::from_json(&submission.intent)?
        && crate::state::keeps_history(connection)?
    {
        stored::insert_message(
            connection,
            &stored::NewMessage {
                group_id: &submission.group_id,
                seq,
                sender_user_id: &me.user_id().to_string(),
                sender_device_id: me.device_id().as_str(),
                server_time_ms: None,
                sent_at_ms,
                kind: "text",
                body: &body,
                own: true,
            },
        )?;
    }
    Ok(())
}

fn accepted(reply: proto::SubmitResponse) -> Accepted {
    Accepted {
        seq: reply.seq,
        epoch: reply.epoch,
    }
}

/// Sorts a refusal: a lost race (ABORTED with a `CommitConflict`), an epoch that
/// ended (FAILED_PRECONDITION for a proposal or message), a passing failure worth
/// a resend, or a final refusal.
fn classify(kind: SubmissionKind, error: RpcError, status: Option<&tonic::Status>) -> SendFailure {
    // Not sent: kept, to be sent once the certificate is trusted again.
    if let Some(refused) = status.and_then(refused_certificate) {
        return SendFailure::Unavailable(refused.into());
    }
    match error.code {
        Code::Aborted => SendFailure::Conflict {
            winning_seq: status
                .and_then(commit_conflict)
                .map_or(0, |conflict| conflict.winning_commit_seq),
        },
        Code::FailedPrecondition
            if matches!(kind, SubmissionKind::Proposal | SubmissionKind::Message) =>
        {
            SendFailure::Stale
        }
        code if is_transient(code) => SendFailure::Unavailable(error.into()),
        code => SendFailure::Refused(error.into(), code),
    }
}

/// Codes after which the same request may well succeed later.
pub(crate) fn is_transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::ResourceExhausted
    )
}

/// Whether an intent that lost its race is kept, to be rebuilt later, after
/// failing with `error`: unless the failure is its own (the hub refused it, or
/// it can no longer be made, say because this device left the group).
fn keeps_intent(error: &ClientError) -> bool {
    is_transient_error(error)
        || matches!(
            error,
            ClientError::State(_)
                | ClientError::Connect(_)
                | ClientError::NotLoggedIn
                | ClientError::SimulatedCrash(_)
        )
}

/// Whether a failed operation is worth retrying as it is (the server was not
/// reached, or is busy), as opposed to refused.
pub(crate) fn is_transient_error(error: &ClientError) -> bool {
    match error {
        // A refused certificate stays refused until someone acts.
        ClientError::Connect(ConnectError::Certificate { .. }) => false,
        ClientError::Connect(_) => true,
        ClientError::Rpc(rpc) => is_transient(rpc.code),
        // NotSentYet among them: its message is stored, and sent again would
        // be sent twice.
        _ => false,
    }
}

/// Whether the server at the address in use is gone for now (unreachable,
/// shutting down, or the connection broke), so that another address of the
/// homeserver may serve the same call.
pub(crate) fn is_connection_lost(error: &ClientError) -> bool {
    match error {
        ClientError::Connect(ConnectError::Certificate { .. }) => false,
        ClientError::Connect(_) => true,
        ClientError::Rpc(rpc) => matches!(
            rpc.code,
            Code::Unavailable | Code::Unknown | Code::Cancelled
        ),
        _ => false,
    }
}

/// The `CommitConflict` in the rich error details of an ABORTED status (a
/// `google.rpc.Status` whose details hold it as an `Any`).
fn commit_conflict(status: &tonic::Status) -> Option<proto::CommitConflict> {
    let details = tonic_types::pb::Status::decode(status.details()).ok()?;
    details
        .details
        .iter()
        .find(|any| any.type_url == COMMIT_CONFLICT_TYPE_URL)
        .and_then(|any| proto::CommitConflict::decode(any.value.as_slice()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intents_round_trip_as_json() {
        for intent in [
            Intent::Create,
            Intent::Invite {
                users: vec!["bob@localhost".into()],
            },
            Intent::Remove {
                user: "bob@localhost".into(),
            },
            Intent::RemoveDevices {
                devices: vec!["bob@localhost/00000000000000b1".into()],
            },
            Intent::Rotate,
            Intent::CommitProposals,
            Intent::Leave,
            Intent::Rejoin,
            Intent::Text {
                body: "hello".into(),
                sent_at_ms: Some(1_764_842_400_000),
            },
        ] {
            assert_eq!(Intent::from_json(&intent.to_json()).unwrap(), intent);
        }
        assert_eq!(
            Intent::Text {
                body: "x".into(),
                sent_at_ms: Some(5)
            }
            .to_json(),
            r#"{"intent":"text","body":"x","sent_at_ms":5}"#
        );
        // Stored by a version without the sending time.
        assert_eq!(
            Intent::from_json(r#"{"intent":"text","body":"x"}"#).unwrap(),
            Intent::Text {
                body: "x".into(),
                sent_at_ms: None
            }
        );
    }

    #[test]
    fn commit_conflicts_are_read_from_the_status_details() {
        let conflict = proto::CommitConflict {
            current_epoch: 7,
            winning_commit_seq: 42,
        };
        let details = tonic_types::pb::Status {
            code: Code::Aborted as i32,
            message: "lost".into(),
            details: vec![prost_types::Any {
                type_url: COMMIT_CONFLICT_TYPE_URL.into(),
                value: conflict.encode_to_vec(),
            }],
        };
        let status =
            tonic::Status::with_details(Code::Aborted, "lost", details.encode_to_vec().into());
        assert_eq!(commit_conflict(&status), Some(conflict));
        let error = RpcError::from_status("submit commit", &status);
        assert!(matches!(
            classify(SubmissionKind::Commit, error, Some(&status)),
            SendFailure::Conflict { winning_seq: 42 }
        ));
        assert_eq!(commit_conflict(&tonic::Status::aborted("no details")), None);
    }

    #[test]
    fn refusals_are_sorted() {
        let sort = |kind, code| {
            let status = tonic::Status::new(code, "x");
            classify(kind, RpcError::from_status("x", &status), Some(&status))
        };
        assert!(matches!(
            sort(SubmissionKind::Message, Code::FailedPrecondition),
            SendFailure::Stale
        ));
        assert!(matches!(
            sort(SubmissionKind::Commit, Code::FailedPrecondition),
            SendFailure::Refused(_, Code::FailedPrecondition)
        ));
        assert!(matches!(
            sort(SubmissionKind::Commit, Code::Unavailable),
            SendFailure::Unavailable(_)
        ));
        assert!(matches!(
            sort(SubmissionKind::Proposal, Code::InvalidArgument),
            SendFailure::Refused(_, Code::InvalidArgument)
        ));
    }
}
