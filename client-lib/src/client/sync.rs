//! Receiving: the hub's events (from Fetch, or a listener's Subscribe stream)
//! applied in log order, a page per transaction, and acknowledged only once
//! that transaction is committed; then what follows a page: committing other
//! members' proposals, proposing again to leave, rejoining groups whose state
//! is lost or diverged.
//!
//! Delivery is at least once until acknowledged: each group remembers the last
//! sequence number it processed and ignores anything at or below it, and the
//! inbox likewise, so a page applied twice (a crash before the Ack) changes
//! nothing the second time.

use std::collections::BTreeMap;

use conclave_core::ids::CredentialIdentity;
use conclave_proto::client::v1 as proto;
use proto::delivery_event::Event;
use rusqlite::Connection;

use super::groups::GroupId;
use super::submit::{Intent, is_transient_error, record_own_message};
use super::{Client, call, now_ms};
use crate::connection::{DeliveryClient, delivery_client};
use crate::error::ClientError;
use crate::mls::{self, Incoming, MembershipKind};
use crate::session::Session;
use crate::state::groups::{self as stored, GroupRow, HeldEvent, NewMembership, NewMessage};
use crate::state::{GroupStatus, MlsProvider};

/// Events asked for per Fetch (the hub's maximum).
const FETCH_PAGE: u32 = 1000;

/// What [`Client::receive`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceiveReport {
    /// Events applied (group events and Welcomes), duplicates excluded.
    pub events: usize,
    /// Messages from other members, stored unread for [`Client::listen`].
    pub new_messages: usize,
    /// Groups this device joined by Welcome.
    pub joined: Vec<GroupId>,
    /// Groups this device was removed from (or left).
    pub removed: Vec<GroupId>,
    /// Groups rejoined by external commit after their state was lost or diverged.
    pub rejoined: Vec<GroupId>,
    /// Stored submissions (a message kept by [`Client::send`], say) that were
    /// not made after all, this time or earlier, not yet told: taken as by
    /// [`Client::take_refused_submissions`].
    pub refused: Vec<super::RefusedSubmission>,
}

/// One group event as delivered.
pub(crate) struct GroupEventData {
    pub(crate) group_id: Vec<u8>,
    pub(crate) seq: u64,
    pub(crate) message: Vec<u8>,
    pub(crate) sender_user_id: String,
    pub(crate) sender_device_id: String,
    pub(crate) server_time_ms: Option<i64>,
    /// Set for a departure notice the hub wrote (then `message` is empty).
    pub(crate) departure: Option<proto::DepartureNotice>,
}

impl From<proto::GroupEvent> for GroupEventData {
    fn from(event: proto::GroupEvent) -> Self {
        GroupEventData {
            group_id: event.group_id,
            seq: event.seq,
            message: event.message,
            sender_user_id: event.sender_user_id,
            sender_device_id: event.sender_device_id,
            server_time_ms: event.server_time.map(|time| {
                time.seconds
                    .saturating_mul(1000)
                    .saturating_add(i64::from(time.nanos) / 1_000_000)
            }),
            departure: event.departure,
        }
    }
}

impl From<HeldEvent> for GroupEventData {
    fn from(event: HeldEvent) -> Self {
        GroupEventData {
            group_id: event.group_id,
            seq: event.seq,
            message: event.message,
            sender_user_id: event.sender_user_id,
            sender_device_id: event.sender_device_id,
            server_time_ms: event.server_time_ms,
            // Departure notices are never held (see `apply_group_event`).
            departure: None,
        }
    }
}

/// What applying a page did, and what to acknowledge for it.
#[derive(Debug, Default)]
pub(crate) struct PageOutcome {
    /// Per group, the highest sequence number in the page (all now processed).
    acks: BTreeMap<Vec<u8>, u64>,
    /// The highest inbox sequence number in the page, or 0.
    inbox_ack: u64,
    events: usize,
    messages: usize,
    joined: Vec<Vec<u8>>,
    removed: Vec<Vec<u8>>,
}

impl ReceiveReport {
    fn absorb(&mut self, outcome: PageOutcome) {
        self.events += outcome.events;
        self.new_messages += outcome.messages;
        self.joined
            .extend(outcome.joined.into_iter().map(GroupId::from_bytes));
        self.removed
            .extend(outcome.removed.into_iter().map(GroupId::from_bytes));
    }
}

/// What a group needs after a page.
enum Duty {
    None,
    Rejoin,
    CommitProposals,
    ProposeLeaveAgain,
    /// Commit the removal of these departed devices, still in the group.
    RemoveDeparted(Vec<String>),
}

impl Client {
    /// Brings this device up to date: sends stored submissions that have no
    /// answer yet, applies every event waiting at the hub (Welcomes, commits,
    /// proposals, messages) in order, acknowledges them, then commits other
    /// members' pending proposals and repairs groups whose state is lost or
    /// diverged. New messages are stored unread for [`Client::listen`]; stored
    /// submissions that were not made after all are in the report (once).
    pub async fn receive(&self) -> Result<ReceiveReport, ClientError> {
        let mut report = self.receive_keeping_refusals().await?;
        report.refused = self.take_refused_submissions(None)?;
        Ok(report)
    }

    /// [`Client::receive`], leaving refusals for the application to take: a
    /// listener catching up has nobody to tell them to.
    pub(crate) async fn receive_keeping_refusals(&self) -> Result<ReceiveReport, ClientError> {
        let _operations = self.group_operations.lock().await;
        self.receive_locked().await
    }

    pub(crate) async fn receive_locked(&self) -> Result<ReceiveReport, ClientError> {
        let mut report = ReceiveReport::default();
        // A submission kept after a failure stops its own group only: the
        // events of every group are still fetched (they may well be what the
        // kept one waits for), unless the homeserver is out of reach anyway.
        let resumed = self.resume_pending(None).await;
        if let Err(error) = &resumed
            && (is_transient_error(error)
                || matches!(
                    error,
                    ClientError::Connect(_) | ClientError::SimulatedCrash(_)
                ))
        {
            return resumed.map(|()| report);
        }
        self.fetch_pages(&mut report, None).await?;
        self.after_events(&mut report).await?;
        self.replenish_after_joining(&report).await;
        resumed.map(|()| report)
    }

    /// Fetches and applies events until the group has processed `until_seq` (0:
    /// until nothing is left), as after losing a commit race.
    pub(crate) async fn catch_up(
        &self,
        group_id: &[u8],
        until_seq: u64,
    ) -> Result<(), ClientError> {
        let mut report = ReceiveReport::default();
        let until = (until_seq > 0).then_some((group_id, until_seq));
        self.fetch_pages(&mut report, until).await?;
        let needs_rejoin =
            self.state().read(|provider, connection| {
                let row = stored::group(connection, group_id)?;
                let lost = mls::load_group(provider, group_id)?.is_none();
                Ok::<_, ClientError>(row.is_some_and(|row| {
                    row.status == GroupStatus::Active && (row.needs_rejoin || lost)
                }))
            })?;
        if needs_rejoin {
            self.rejoin_locked(group_id).await?;
        }
        Ok(())
    }

    async fn fetch_pages(
        &self,
        report: &mut ReceiveReport,
        until: Option<(&[u8], u64)>,
    ) -> Result<(), ClientError> {
        let (session, channel, auth) = self.authenticated().await?;
        let mut client = delivery_client(channel, auth);
        loop {
            let reply = call(
                "fetch events",
                client.fetch(proto::FetchRequest { limit: FETCH_PAGE }),
            )
            .await?;
            if reply.events.is_empty() {
                return Ok(());
            }
            let outcome = self.apply_events(&session, reply.events)?;
            acknowledge(&mut client, &outcome).await?;
            report.absorb(outcome);
            if let Some((group_id, until_seq)) = until {
                let last_seq = self
                    .state()
                    .read(|_, connection| stored::group(connection, group_id))?
                    .map_or(0, |row| row.last_seq);
                if last_seq >= until_seq {
                    return Ok(());
                }
            }
        }
    }

    /// Applies events from a Subscribe stream, acknowledges them and does what
    /// follows a page. Takes `group_operations` itself.
    pub(crate) async fn apply_stream_events(
        &self,
        events: Vec<proto::DeliveryEvent>,
    ) -> Result<ReceiveReport, ClientError> {
        let _operations = self.group_operations.lock().await;
        let (session, channel, auth) = self.authenticated().await?;
        let mut report = ReceiveReport::default();
        let outcome = self.apply_events(&session, events)?;
        acknowledge(&mut delivery_client(channel, auth), &outcome).await?;
        report.absorb(outcome);
        self.after_events(&mut report).await?;
        self.replenish_after_joining(&report).await;
        Ok(report)
    }

    /// Applies a page of events in one transaction (each event in a savepoint,
    /// so one that fails leaves no trace while the rest stand).
    fn apply_events(
        &self,
        session: &Session,
        events: Vec<proto::DeliveryEvent>,
    ) -> Result<PageOutcome, ClientError> {
        let me = &session.credential_identity;
        self.state().transaction(|provider, connection| {
            let mut outcome = PageOutcome::default();
            for event in events {
                apply_event(provider, connection, me, event, &mut outcome)?;
            }
            Ok::<_, ClientError>(outcome)
        })
    }

    /// What follows a page, group by group: rejoin where the state is lost or
    /// diverged (or a commit is missing), propose again to leave if an epoch
    /// ended without the removal, commit other members' proposals. A refusal is
    /// logged and the next group handled; a transport failure ends the round.
    async fn after_events(&self, report: &mut ReceiveReport) -> Result<(), ClientError> {
        let rows = self
            .state()
            .read(|_, connection| stored::groups(connection))?;
        for row in rows {
            let duty = self
                .state()
                .read(|provider, connection| duty(provider, connection, &row))?;
            let group_id = row.group_id.as_slice();
            let result = match duty {
                Duty::None => continue,
                Duty::Rejoin => self.rejoin_locked(group_id).await.map(|_| {
                    report.rejoined.push(GroupId::from_bytes(group_id.to_vec()));
                }),
                Duty::ProposeLeaveAgain => {
                    self.state().transaction(|_, connection| {
                        stored::set_leaving_epoch(connection, group_id, None)
                    })?;
                    self.run_intent(group_id, Intent::Leave).await.map(drop)
                }
                Duty::CommitProposals => self
                    .run_intent(group_id, Intent::CommitProposals)
                    .await
                    .map(drop),
                // Any member may do it; if another's commit wins the epoch,
                // `run_intent` catches up and finds the leaves gone.
                Duty::RemoveDeparted(devices) => {
                    let result = self
                        .run_intent(group_id, Intent::RemoveDevices { devices })
                        .await;
                    if result.is_ok() {
                        self.state().transaction(|provider, connection| {
                            forget_departed_leaves(provider, connection, group_id).map(drop)
                        })?;
                    }
                    result.map(drop)
                }
            };
            match result {
                Ok(()) => {}
                Err(error) if is_transient_error(&error) => return Err(error),
                Err(error) => {
                    tracing::warn!(group = hex::encode(group_id), %error, "could not bring the group up to date");
                }
            }
        }
        Ok(())
    }

    /// A Welcome used up one of this device's key packages: top the stock up.
    /// Failure only delays it (the last-resort package keeps the device addable).
    async fn replenish_after_joining(&self, report: &ReceiveReport) {
        if report.joined.is_empty() {
            return;
        }
        if let Err(error) = self.replenish_key_packages().await {
            tracing::warn!(%error, "could not replenish key packages after joining a group");
        }
    }
}

async fn acknowledge(
    client: &mut DeliveryClient,
    outcome: &PageOutcome,
) -> Result<(), ClientError> {
    if outcome.acks.is_empty() && outcome.inbox_ack == 0 {
        return Ok(());
    }
    let request = proto::AckRequest {
        groups: outcome
            .acks
            .iter()
            .map(|(group_id, seq)| proto::GroupAck {
                group_id: group_id.clone(),
                seq: *seq,
            })
            .collect(),
        inbox_seq: outcome.inbox_ack,
    };
    call("acknowledge events", client.ack(request)).await?;
    Ok(())
}

fn duty(
    provider: &MlsProvider<'_>,
    connection: &Connection,
    row: &GroupRow,
) -> Result<Duty, ClientError> {
    let group_id = row.group_id.as_slice();
    match row.status {
        GroupStatus::Active if row.needs_rejoin => return Ok(Duty::Rejoin),
        GroupStatus::Active => {}
        // A rejoin whose submission is gone without finishing (refused for a
        // passing reason): try again.
        GroupStatus::Rejoining => {
            let pending = stored::pending_submissions(connection, Some(group_id))?;
            // One that lost its race waits for the group to be back.
            return Ok(if pending.iter().all(|submission| submission.lost_race) {
                Duty::Rejoin
            } else {
                Duty::None
            });
        }
        GroupStatus::Creating | GroupStatus::Removed => return Ok(Duty::None),
    }
    let Some(group) = mls::load_group(provider, group_id)? else {
        return Ok(Duty::Rejoin);
    };
    let epoch = group.epoch().as_u64();
    let missing_commit = stored::held_events(connection, group_id)?
        .iter()
        .any(|event| event.epoch > epoch);
    if missing_commit && !stored::has_pending_commit(connection, group_id)? {
        tracing::warn!(
            group = hex::encode(group_id),
            epoch,
            "messages for a later epoch wait but no commit leads there; rejoining"
        );
        return Ok(Duty::Rejoin);
    }
    if row.leaving_epoch.is_some_and(|leaving| epoch > leaving) {
        return Ok(Duty::ProposeLeaveAgain);
    }
    let departed = departed_leaves(&group, connection, group_id)?;
    if !departed.is_empty() && !mls::is_leaving(&group) {
        return Ok(Duty::RemoveDeparted(departed));
    }
    if mls::has_proposals_to_commit(&group) && !mls::is_leaving(&group) {
        return Ok(Duty::CommitProposals);
    }
    Ok(Duty::None)
}

/// Applies one event of a page, as delivered (also the client's fuzz target,
/// `crate::fuzzing::delivery_event`).
pub(crate) fn apply_event(
    provider: &MlsProvider<'_>,
    connection: &Connection,
    me: &CredentialIdentity,
    event: proto::DeliveryEvent,
    outcome: &mut PageOutcome,
) -> Result<(), ClientError> {
    match event.event {
        Some(Event::GroupEvent(event)) => {
            let event = GroupEventData::from(event);
            let ack = outcome.acks.entry(event.group_id.clone()).or_default();
            *ack = (*ack).max(event.seq);
            apply_group_event(provider, connection, me, &event, outcome)
        }
        Some(Event::InboxEvent(event)) => {
            outcome.inbox_ack = outcome.inbox_ack.max(event.seq);
            apply_inbox_event(provider, connection, me, event, outcome)
        }
        None => Ok(()),
    }
}

/// Applies one group event: skipped if already processed, held if the group
/// waits for a commit, else applied to the group.
fn apply_group_event(
    provider: &MlsProvider<'_>,
    connection: &Connection,
    me: &CredentialIdentity,
    event: &GroupEventData,
    outcome: &mut PageOutcome,
) -> Result<(), ClientError> {
    let group_id = event.group_id.as_slice();
    let Some(row) = stored::group(connection, group_id)? else {
        // The hub counts this device as a member of a group it knows nothing of:
        // its state was lost. Note the group, to rejoin it after the page.
        tracing::warn!(
            group = hex::encode(group_id),
            "an event for a group this device does not know; it will rejoin"
        );
        stored::put_group(
            connection,
            &GroupRow {
                group_id: group_id.to_vec(),
                name: String::new(),
                status: GroupStatus::Active,
                last_seq: event.seq,
                leaving_epoch: None,
                needs_rejoin: true,
            },
            now_ms(),
        )?;
        return Ok(());
    };
    if event.seq <= row.last_seq {
        return Ok(());
    }
    outcome.events += 1;
    if let Some(notice) = &event.departure {
        // Only the hub writes these, and they carry no MLS message: nothing to
        // hold or apply. A device still in this device's state of the group is
        // noted, to commit its removal after the page; one already gone (or a
        // group not usable now) needs nothing.
        if row.status == GroupStatus::Active && !row.needs_rejoin {
            note_departure(provider, connection, me, group_id, notice)?;
        }
        stored::advance_last_seq(connection, group_id, event.seq)?;
        return Ok(());
    }
    match row.status {
        GroupStatus::Active if !row.needs_rejoin => {
            if apply_message(provider, connection, me, event, outcome, false)? {
                retry_held_into(provider, connection, me, group_id, outcome)?;
            }
        }
        // Until the hub accepts this device's external commit, events cannot be
        // read; those after it are kept for when it has.
        GroupStatus::Rejoining => hold(connection, event)?,
        // Nothing to read before the rejoin, nothing after a removal.
        GroupStatus::Active | GroupStatus::Creating | GroupStatus::Removed => {}
    }
    stored::advance_last_seq(connection, group_id, event.seq)?;
    Ok(())
}

fn hold(connection: &Connection, event: &GroupEventData) -> Result<(), ClientError> {
    stored::hold_event(
        connection,
        &HeldEvent {
            group_id: event.group_id.clone(),
            seq: event.seq,
            epoch: mls::message_epoch(&event.message).unwrap_or(0),
            message: event.message.clone(),
            sender_user_id: event.sender_user_id.clone(),
            sender_device_id: event.sender_device_id.clone(),
            server_time_ms: event.server_time_ms,
        },
    )?;
    Ok(())
}

/// What [`apply_message`] did with an event.
#[derive(Debug, PartialEq, Eq)]
enum Applied {
    /// A commit was merged: held events may be ready now.
    Merged,
    /// The event is for a later epoch and waits.
    Held,
    Other,
}

/// Applies one event to the group's MLS state and keeps the books. Returns
/// whether a commit was merged.
fn apply_message(
    provider: &MlsProvider<'_>,
    connection: &Connection,
    me: &CredentialIdentity,
    event: &GroupEventData,
    outcome: &mut PageOutcome,
    from_held: bool,
) -> Result<bool, ClientError> {
    Ok(
        apply_message_inner(provider, connection, me, event, outcome, from_held)?
            == Applied::Merged,
    )
}

fn apply_message_inner(
    provider: &MlsProvider<'_>,
    connection: &Connection,
    me: &CredentialIdentity,
    event: &GroupEventData,
    outcome: &mut PageOutcome,
    from_held: bool,
) -> Result<Applied, ClientError> {
    let group_id = event.group_id.as_slice();
    let Some(mut group) = mls::load_group(provider, group_id)? else {
        stored::set_needs_rejoin(connection, group_id, true)?;
        return Ok(Applied::Other);
    };
    let from_this_device = event.sender_user_id == me.user_id().to_string()
        && event.sender_device_id == me.device_id().as_str();
    let incoming = stored::savepoint(
        connection,
        || -> Result<Incoming, ClientError> {
            Ok(mls::process_group_message(
                &mut group,
                provider,
                &event.message,
                from_this_device,
            )?)
        },
        |incoming| !incoming.is_failure(),
    )?;
    let group_hex = hex::encode(group_id);
    match incoming {
        Incoming::Application { sender, plaintext } => {
            if sender.user_id().to_string() != event.sender_user_id
                || sender.device_id().as_str() != event.sender_device_id
            {
                tracing::warn!(group = group_hex, seq = event.seq, hub_says = %format!("{}/{}", event.sender_user_id, event.sender_device_id), signed_by = %sender, "the hub names another sender than the message's signature; showing the signer");
            }
            let decoded = mls::decode_envelope(&plaintext);
            let (kind, text) = mls::to_stored(&decoded.body);
            let inserted = stored::insert_message(
                connection,
                &NewMessage {
                    group_id,
                    seq: event.seq,
                    sender_user_id: &sender.user_id().to_string(),
                    sender_device_id: sender.device_id().as_str(),
                    server_time_ms: event.server_time_ms,
                    sent_at_ms: decoded.sent_at_ms,
                    kind,
                    body: text,
                    own: false,
                },
            )?;
            if inserted {
                outcome.messages += 1;
            }
        }
        Incoming::OwnApplication => {
            // The echo of a message whose answer never reached us (a crash, a lost
            // connection): the hub has it at this position.
            if let Some(submission) =
                stored::delete_pending_with_payload(connection, group_id, &event.message)?
            {
                record_own_message(connection, me, &submission, event.seq)?;
            }
        }
        Incoming::OwnProposal => {
            if let Some(submission) =
                stored::delete_pending_with_payload(connection, group_id, &event.message)?
            {
                stored::set_leaving_epoch(connection, group_id, Some(submission.epoch))?;
            }
        }
        Incoming::ProposalQueued => {}
        Incoming::CommitMerged {
            removed_self: true,
            changes,
        } => {
            tracing::info!(group = group_hex, "removed from the group");
            record_changes(
                connection,
                me,
                group_id,
                event.seq,
                event.server_time_ms,
                &changes,
            )?;
            mark_removed(provider, connection, group_id)?;
            outcome.removed.push(group_id.to_vec());
        }
        Incoming::CommitMerged {
            removed_self: false,
            changes,
        } => {
            record_changes(
                connection,
                me,
                group_id,
                event.seq,
                event.server_time_ms,
                &changes,
            )?;
            return Ok(Applied::Merged);
        }
        Incoming::OwnCommitMerged { changes } => {
            // Our commit, accepted while its answer was lost: merged now.
            stored::delete_pending_with_payload(connection, group_id, &event.message)?;
            record_changes(
                connection,
                me,
                group_id,
                event.seq,
                event.server_time_ms,
                &changes,
            )?;
            return Ok(Applied::Merged);
        }
        Incoming::FutureEpoch { epoch } => {
            tracing::debug!(
                group = group_hex,
                seq = event.seq,
                epoch,
                "holding an event for a later epoch"
            );
            if !from_held {
                hold(connection, event)?;
            }
            return Ok(Applied::Held);
        }
        Incoming::Stale { epoch } => {
            tracing::debug!(
                group = group_hex,
                seq = event.seq,
                epoch,
                "skipping a handshake of an ended epoch"
            );
        }
        Incoming::Unreadable { reason } => {
            tracing::warn!(
                group = group_hex,
                seq = event.seq,
                reason,
                "skipping an unreadable event"
            );
        }
        Incoming::Diverged { reason } => {
            tracing::warn!(
                group = group_hex,
                seq = event.seq,
                reason,
                "the group's state diverged; it will rejoin"
            );
            stored::set_needs_rejoin(connection, group_id, true)?;
        }
    }
    Ok(Applied::Other)
}

/// Applies held events that the group's epoch has reached, in log order, until
/// none is ready. (A held event's position is behind the commit that made it
/// ready: it was held exactly because that commit came later.)
pub(crate) fn retry_held(
    provider: &MlsProvider<'_>,
    connection: &Connection,
    me: &CredentialIdentity,
    group_id: &[u8],
) -> Result<(), ClientError> {
    retry_held_into(
        provider,
        connection,
        me,
        group_id,
        &mut PageOutcome::default(),
    )
}

fn retry_held_into(
    provider: &MlsProvider<'_>,
    connection: &Connection,
    me: &CredentialIdentity,
    group_id: &[u8],
    outcome: &mut PageOutcome,
) -> Result<(), ClientError> {
    loop {
        let Some(group) = mls::load_group(provider, group_id)? else {
            return Ok(());
        };
        let epoch = group.epoch().as_u64();
        let ready: Vec<HeldEvent> = stored::held_events(connection, group_id)?
            .into_iter()
            .filter(|event| event.epoch <= epoch)
            .collect();
        if ready.is_empty() {
            return Ok(());
        }
        for held in ready {
            let seq = held.seq;
            let event = GroupEventData::from(held);
            let applied = apply_message_inner(provider, connection, me, &event, outcome, true)?;
            if applied != Applied::Held {
                stored::delete_held(connection, group_id, seq)?;
            }
        }
    }
}

/// The hub accepted this device's external commit at `seq`: the group is usable
/// again from there on. Held events after it are applied; those before it were
/// for epochs this device never had.
pub(crate) fn finish_rejoin(
    provider: &MlsProvider<'_>,
    connection: &Connection,
    me: &CredentialIdentity,
    group_id: &[u8],
    seq: u64,
) -> Result<(), ClientError> {
    stored::set_status(connection, group_id, GroupStatus::Active)?;
    stored::set_needs_rejoin(connection, group_id, false)?;
    stored::advance_last_seq(connection, group_id, seq)?;
    for held in stored::held_events(connection, group_id)? {
        if held.seq <= seq {
            stored::delete_held(connection, group_id, held.seq)?;
        }
    }
    retry_held(provider, connection, me, group_id)
}

/// Stores the membership changes a commit at `seq` made, for listeners and the
/// group's history. A removal of a device whose departure notice was read is
/// shown as that device leaving, with the notice's reason. Changes this device
/// made to others are stored read (its user asked for them), and not at all
/// when no history is kept; changes to this device itself (its own key
/// rotation included) are for listeners to show.
pub(crate) fn record_changes(
    connection: &Connection,
    me: &CredentialIdentity,
    group_id: &[u8],
    seq: u64,
    server_time_ms: Option<i64>,
    changes: &[mls::Change],
) -> Result<(), ClientError> {
    let keep_history = crate::state::keeps_history(connection)?;
    for (part, change) in changes.iter().enumerate() {
        let subject = change.subject.to_string();
        let mut kind = change.kind;
        let mut by = change.by.clone();
        let mut reason = String::new();
        if kind == MembershipKind::Removed
            && let Some(noted) = stored::departure_reason(connection, group_id, &subject)?
        {
            kind = MembershipKind::Left;
            by = Some(change.subject.clone());
            reason = noted;
        }
        let own = by.as_ref() == Some(me);
        let unread = !own || &change.subject == me;
        if !unread && !keep_history {
            continue;
        }
        stored::insert_membership(
            connection,
            &NewMembership {
                group_id,
                seq,
                part: u64::try_from(part).unwrap_or(u64::MAX),
                kind: kind.as_str(),
                subject: &subject,
                by_user_id: &by
                    .as_ref()
                    .map(|by| by.user_id().to_string())
                    .unwrap_or_default(),
                by_device_id: by.as_ref().map_or("", |by| by.device_id().as_str()),
                server_time_ms,
                reason: &reason,
                own,
                unread,
            },
        )?;
    }
    Ok(())
}

/// This device is no longer in the group: forget its MLS state and anything
/// still waiting for it, and keep the row (its messages stay readable). Its
/// stored submissions are kept as refusals, for the application to tell.
pub(crate) fn mark_removed(
    provider: &MlsProvider<'_>,
    connection: &Connection,
    group_id: &[u8],
) -> Result<(), ClientError> {
    if let Some(mut group) = mls::load_group(provider, group_id)? {
        mls::delete_group(provider, &mut group)?;
    }
    for submission in stored::pending_submissions(connection, Some(group_id))? {
        stored::insert_refused(
            connection,
            group_id,
            &submission.intent,
            "this device is no longer a member of the group",
            now_ms(),
        )?;
    }
    stored::set_status(connection, group_id, GroupStatus::Removed)?;
    stored::set_leaving_epoch(connection, group_id, None)?;
    stored::set_needs_rejoin(connection, group_id, false)?;
    stored::delete_pending_for_group(connection, group_id)?;
    stored::delete_held_for_group(connection, group_id)?;
    stored::forget_departures_for_group(connection, group_id)?;
    Ok(())
}

/// Notes the device a departure notice names if its leaf is in the group (and
/// it is not this device, which could not remove itself by commit: a notice
/// naming it means this state outlived its device).
fn note_departure(
    provider: &MlsProvider<'_>,
    connection: &Connection,
    me: &CredentialIdentity,
    group_id: &[u8],
    notice: &proto::DepartureNotice,
) -> Result<(), ClientError> {
    let group_hex = hex::encode(group_id);
    let Ok(departed) = notice.credential_identity.parse::<CredentialIdentity>() else {
        tracing::warn!(
            group = group_hex,
            identity = notice.credential_identity,
            "a departure notice names no device; skipped"
        );
        return Ok(());
    };
    if &departed == me {
        return Ok(());
    }
    let Some(group) = mls::load_group(provider, group_id)? else {
        return Ok(());
    };
    if mls::members(&group)
        .iter()
        .any(|member| member.identity == departed)
    {
        tracing::info!(group = group_hex, departed = %departed, reason = notice.reason, "a member departed; committing its removal");
        stored::note_departure(connection, group_id, &departed.to_string(), &notice.reason)?;
    }
    Ok(())
}

/// The departed devices noted for the group whose leaves are still in it;
/// those gone (removed by any member's commit) are forgotten.
fn departed_leaves(
    group: &openmls::group::MlsGroup,
    connection: &Connection,
    group_id: &[u8],
) -> Result<Vec<String>, ClientError> {
    let members: Vec<String> = mls::members(group)
        .into_iter()
        .map(|member| member.identity.to_string())
        .collect();
    let mut remaining = Vec::new();
    for identity in stored::departures(connection, group_id)? {
        if members.contains(&identity) {
            remaining.push(identity);
        } else {
            stored::forget_departure(connection, group_id, &identity)?;
        }
    }
    Ok(remaining)
}

/// [`departed_leaves`] against the group's stored state.
fn forget_departed_leaves(
    provider: &MlsProvider<'_>,
    connection: &Connection,
    group_id: &[u8],
) -> Result<Vec<String>, ClientError> {
    match mls::load_group(provider, group_id)? {
        Some(group) => departed_leaves(&group, connection, group_id),
        None => Ok(Vec::new()),
    }
}

fn apply_inbox_event(
    provider: &MlsProvider<'_>,
    connection: &Connection,
    me: &CredentialIdentity,
    event: proto::InboxEvent,
    outcome: &mut PageOutcome,
) -> Result<(), ClientError> {
    if event.seq <= stored::inbox_seq(connection)? {
        return Ok(());
    }
    outcome.events += 1;
    if let Some(proto::inbox_event::Event::Welcome(welcome)) = event.event {
        apply_welcome(provider, connection, me, welcome, outcome)?;
    }
    stored::advance_inbox_seq(connection, event.seq)?;
    Ok(())
}

/// Joins a group from a Welcome. Its events start after the commit that added
/// this device. A Welcome that cannot be used (its key package is gone, it is
/// malformed) is logged and skipped: nothing else could be done with it.
fn apply_welcome(
    provider: &MlsProvider<'_>,
    connection: &Connection,
    me: &CredentialIdentity,
    welcome: proto::WelcomeEvent,
    outcome: &mut PageOutcome,
) -> Result<(), ClientError> {
    let group_hex = hex::encode(&welcome.group_id);
    if let Some(row) = stored::group(connection, &welcome.group_id)?
        && row.status == GroupStatus::Active
        && !row.needs_rejoin
        && mls::load_group(provider, &welcome.group_id)?.is_some()
    {
        tracing::warn!(
            group = group_hex,
            "a welcome to a group this device is in already; skipped"
        );
        return Ok(());
    }
    let joined = stored::savepoint(
        connection,
        || -> Result<Result<(Vec<u8>, String), mls::MlsError>, ClientError> {
            // A stale state of the group (removed earlier, or diverged) gives way.
            if let Some(mut old) = mls::load_group(provider, &welcome.group_id)? {
                mls::delete_group(provider, &mut old)?;
            }
            Ok(
                mls::join_from_welcome(provider, &welcome.welcome, &welcome.ratchet_tree)
                    .map(|group| (group.group_id().to_vec(), mls::metadata(&group).name)),
            )
        },
        Result::is_ok,
    )?;
    let (group_id, name) = match joined {
        Ok(joined) => joined,
        Err(error) => {
            tracing::warn!(group = group_hex, %error, "cannot join a group from a welcome; skipped");
            return Ok(());
        }
    };
    if group_id != welcome.group_id {
        tracing::warn!(
            group = group_hex,
            joined = hex::encode(&group_id),
            "the welcome is for another group than the hub said"
        );
    }
    // Submissions kept for the old state of the group cannot be made any more:
    // their refusals are kept, for the application to tell.
    for submission in stored::pending_submissions(connection, Some(&group_id))? {
        stored::insert_refused(
            connection,
            &group_id,
            &submission.intent,
            "this device was added to the group again, which replaced its state of the group",
            now_ms(),
        )?;
    }
    stored::delete_pending_for_group(connection, &group_id)?;
    stored::delete_held_for_group(connection, &group_id)?;
    stored::put_group(
        connection,
        &GroupRow {
            group_id: group_id.clone(),
            name,
            status: GroupStatus::Active,
            last_seq: welcome.commit_seq,
            leaving_epoch: None,
            needs_rejoin: false,
        },
        now_ms(),
    )?;
    // Who added this device is not in the Welcome; the change is shown without.
    record_changes(
        connection,
        me,
        &group_id,
        welcome.commit_seq,
        None,
        &[mls::Change {
            kind: MembershipKind::Joined,
            subject: me.clone(),
            by: None,
        }],
    )?;
    tracing::info!(group = hex::encode(&group_id), "joined a group");
    outcome.joined.push(group_id);
    Ok(())
}
