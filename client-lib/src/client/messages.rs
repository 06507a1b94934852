//! Messages and membership changes: sending text to a group, and receiving what
//! members send and the changes their commits make (a group's timeline), either
//! from the local store (everything [`Client::receive`] stored, kept as the
//! group's history) or live from a [`Listener`] on the hub's Subscribe stream.
//!
//! Every received message or change is stored (with its log position) in the
//! same transaction that advances the group past it, and marked read when a
//! listener hands it out (deleted then, if no history is kept): after a crash,
//! nothing is shown twice and nothing is lost.

use std::time::Duration;

use chrono::{DateTime, Utc};
use conclave_core::ids::CredentialIdentity;
use conclave_proto::client::v1 as proto;

use super::groups::{GroupId, display};
use super::submit::{Intent, is_connection_lost, is_transient_error};
use super::{Client, call, now_ms};
use crate::connection::{ConnectError, delivery_client, refused_certificate};
use crate::endpoints::{random_unit, reconnect_delay};
use crate::error::{ClientError, RpcError};
use crate::mls::{self, MembershipKind, MessageBody};
use crate::server_url::ServerUrl;
use crate::state::StateError;
use crate::state::groups::{self as stored, StoredEntry};

/// Events taken from the stream into one transaction, at most.
const STREAM_PAGE: usize = 500;

/// A message of a group, as this device stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub group_id: GroupId,
    /// The group's name (or its id, if it has none).
    pub group_name: String,
    /// Position in the group's log.
    pub seq: u64,
    /// The sending device, from the MLS credential that signed the message.
    pub sender: CredentialIdentity,
    /// When the hub accepted it; `None` for this device's own messages (the hub
    /// does not report it back to the sender).
    pub server_time: Option<DateTime<Utc>>,
    /// When the sender sent it, by the sender's clock (as its encrypted
    /// envelope says: trust it as far as the sender's clock); `None` from
    /// clients older than the field.
    pub sent_at: Option<DateTime<Utc>>,
    pub body: MessageBody,
    /// Sent by this device.
    pub own: bool,
}

/// A change of a group's members, derived from a commit this device processed
/// (or the Welcome that added it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipEvent {
    pub group_id: GroupId,
    /// The group's name (or its id, if it has none).
    pub group_name: String,
    /// Position in the group's log of the commit that made the change.
    pub seq: u64,
    pub kind: MembershipKind,
    /// The device whose membership changed.
    pub subject: CredentialIdentity,
    /// Who made the change: who added or removed the subject, or the subject
    /// itself for leaving and rotating; `None` when unknown (the Welcome that
    /// added this device does not say who sent it).
    pub by: Option<CredentialIdentity>,
    /// Why, as the departed device's homeserver said (a logout, a device
    /// removed); empty otherwise.
    pub reason: String,
    /// When the hub accepted the commit, if this device saw it.
    pub server_time: Option<DateTime<Utc>>,
    /// The change is about this device.
    pub this_device: bool,
    /// This device made it.
    pub own: bool,
}

/// An entry of a group's timeline: a message, or a change of its members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimelineEvent {
    Message(ReceivedMessage),
    Membership(MembershipEvent),
}

impl TimelineEvent {
    /// Position in the group's log.
    pub fn seq(&self) -> u64 {
        match self {
            TimelineEvent::Message(message) => message.seq,
            TimelineEvent::Membership(event) => event.seq,
        }
    }
}

/// Where a sent message landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMessage {
    pub group_id: GroupId,
    /// Position in the group's log (with `by_another_process`: the group's
    /// last position this device has processed, at or after the message's).
    pub seq: u64,
    /// The group's epoch when the hub took it (with `by_another_process`: this
    /// device's epoch of the group, at or after it).
    pub epoch: u64,
    /// The message lost the race for its epoch, and another process on this
    /// device's state sent it while this one caught up: it went out once, but
    /// this call does not know where.
    pub by_another_process: bool,
}

impl Client {
    /// Sends a text message to the group. Other members' pending proposals are
    /// committed first (MLS forbids sending while proposals are pending). The
    /// encrypted message is stored before it is sent, so after a crash it is
    /// sent again, exactly once. Stored unsent submissions of the group go
    /// first, keeping the order.
    ///
    /// A failure is [`ClientError::NotSentYet`] whenever the message is still
    /// stored afterwards, whatever the cause (the homeserver unreachable, its
    /// certificate refused, a failed catch-up after a lost race): it goes out
    /// with the next send, receive or listener catch-up; do not send it again.
    /// Any other error means nothing of it is kept. A message that loses the
    /// race for its epoch stays stored until it is rebuilt for the next, so a
    /// failure in between keeps it too. A kept message the homeserver refuses
    /// later is reported once, by [`Client::take_refused_submissions`] or in a
    /// [`ReceiveReport`]; one forgotten while this call caught up (this device
    /// removed from the group) is this call's error ([`ClientError::NotDone`]),
    /// and only that.
    ///
    /// [`ReceiveReport`]: super::ReceiveReport
    pub async fn send(&self, group_id: &GroupId, text: &str) -> Result<SentMessage, ClientError> {
        let _operations = self.group_operations.lock().await;
        self.resume_pending(Some(group_id.as_bytes())).await?;
        let intent = Intent::Text {
            body: text.to_owned(),
            sent_at_ms: Some(now_ms()),
        };
        let intent_json = intent.to_json();
        let mut stored_row = None;
        let completion = match self
            .run_intent_tracked(group_id.as_bytes(), intent, &mut stored_row)
            .await
        {
            Ok(completion) => completion,
            // A crash tells its caller nothing; the test hook's error stands
            // for that.
            Err(error @ ClientError::SimulatedCrash(_)) => return Err(error),
            Err(error) => {
                // Whatever the error, the database says whether the message
                // waits to be sent: the failure may have left it stored (the
                // homeserver away, its certificate refused, the catch-up after
                // a lost race failed), or forgotten it (a removal from the
                // group, or a final refusal).
                let kept = match stored_row {
                    Some(row_id) => self.state().read(|_, connection| {
                        stored::pending_intent_exists(connection, row_id, &intent_json)
                    })?,
                    None => false,
                };
                if kept {
                    return Err(ClientError::NotSentYet {
                        group: self.display_name(group_id)?,
                        source: Box::new(error),
                    });
                }
                return Err(error);
            }
        };
        if completion.made_elsewhere {
            // Another process on this state sent it while this one caught up
            // after a lost race: sent, at a position this device has reached.
            let (seq, epoch) = self.state().read(|provider, connection| {
                let seq =
                    stored::group(connection, group_id.as_bytes())?.map_or(0, |row| row.last_seq);
                let epoch = mls::load_group(provider, group_id.as_bytes())?
                    .map_or(0, |group| group.epoch().as_u64());
                Ok::<_, ClientError>((seq, epoch))
            })?;
            return Ok(SentMessage {
                group_id: group_id.clone(),
                seq,
                epoch,
                by_another_process: true,
            });
        }
        let accepted = completion
            .accepted
            .ok_or_else(|| ClientError::InvalidResponse {
                operation: "send message",
                reason: "no message was sent".to_owned(),
            })?;
        Ok(SentMessage {
            group_id: group_id.clone(),
            seq: accepted.seq,
            epoch: accepted.epoch,
            by_another_process: false,
        })
    }

    /// The oldest message from another member not yet handed out (of one group,
    /// or of any), marked read as it is returned; membership changes before it
    /// are passed over (marked read too). Local only.
    pub fn take_unread(
        &self,
        group_id: Option<&GroupId>,
    ) -> Result<Option<ReceivedMessage>, ClientError> {
        loop {
            match self.take_unread_event(group_id)? {
                None => return Ok(None),
                Some(TimelineEvent::Message(message)) => return Ok(Some(message)),
                Some(TimelineEvent::Membership(_)) => {}
            }
        }
    }

    /// The oldest message or membership change not yet handed out (of one
    /// group, or of any), marked read as it is returned (deleted, if no history
    /// is kept). Local only.
    pub fn take_unread_event(
        &self,
        group_id: Option<&GroupId>,
    ) -> Result<Option<TimelineEvent>, ClientError> {
        let me = self.session()?.map(|session| session.credential_identity);
        let stored = self.state().transaction(|_, connection| {
            let keep = crate::state::keeps_history(connection)?;
            let Some(entry) =
                stored::take_unread(connection, group_id.map(GroupId::as_bytes), keep)?
            else {
                return Ok(None);
            };
            let name = stored::group(connection, &entry.group_id)?
                .map(|row| display(&row))
                .unwrap_or_else(|| hex::encode(&entry.group_id));
            Ok::<_, StateError>(Some((entry, name)))
        })?;
        stored
            .map(|(entry, name)| to_event(entry, name, me.as_ref()))
            .transpose()
    }

    /// The newest `limit` messages of a group in log order, this device's own
    /// included, read or not. Local only.
    pub fn messages(
        &self,
        group_id: &GroupId,
        limit: usize,
    ) -> Result<Vec<ReceivedMessage>, ClientError> {
        let name = self.display_name(group_id)?;
        let entries = self.state().read(|_, connection| {
            stored::entries(connection, group_id.as_bytes(), usize::MAX, None)
        })?;
        let mut messages = entries
            .into_iter()
            .filter(|entry| !entry.membership)
            .map(|entry| to_received(entry, name.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        messages.drain(..messages.len().saturating_sub(limit));
        Ok(messages)
    }

    /// The group's history: the newest `limit` messages and membership changes
    /// before log position `before` (or the newest of all), in log order, read
    /// or not, this device's own included. A page never splits a log entry:
    /// when the oldest log position on it made several entries (a commit
    /// adding two devices), all of them are on it, even past `limit`, so the
    /// first entry's [`TimelineEvent::seq`] is the `before` of the next older
    /// page, and paging until an empty page sees every entry once. Reading it
    /// marks nothing read. Empty when no history is kept, but for what no
    /// listener has shown yet. Local only.
    pub fn history(
        &self,
        group_id: &GroupId,
        limit: usize,
        before: Option<u64>,
    ) -> Result<Vec<TimelineEvent>, ClientError> {
        let name = self.display_name(group_id)?;
        let me = self.session()?.map(|session| session.credential_identity);
        let entries = self.state().read(|_, connection| {
            stored::entries(connection, group_id.as_bytes(), limit, before)
        })?;
        entries
            .into_iter()
            .map(|entry| to_event(entry, name.clone(), me.as_ref()))
            .collect()
    }

    /// How many messages and membership changes of the group no listener has
    /// shown yet. Local only.
    pub fn unread_count(&self, group_id: &GroupId) -> Result<u64, ClientError> {
        Ok(self
            .state()
            .read(|_, connection| stored::unread_count(connection, group_id.as_bytes()))?)
    }

    /// Whether shown messages are kept as history (the default).
    pub fn keeps_history(&self) -> Result<bool, ClientError> {
        Ok(self.state().keeps_history()?)
    }

    /// Keeps the history of shown messages from now on, or stops keeping it
    /// and deletes what is kept (what no listener has shown yet stays until
    /// shown). A setting of this state directory, surviving logout. Returns how
    /// many stored entries were deleted.
    pub fn set_keeps_history(&self, keep: bool) -> Result<usize, ClientError> {
        Ok(self.state().set_keeps_history(keep)?)
    }

    /// A listener for messages from other members, of one group or of all.
    pub fn listen(&self, group_id: Option<GroupId>) -> Listener<'_> {
        Listener {
            client: self,
            group_id,
            stream: None,
            buffered: Vec::new(),
            caught_up: false,
            failures: 0,
            retry_at: None,
            interrupted: false,
            connected_before: false,
            endpoint: None,
            on_connection: None,
        }
    }

    async fn subscribe(&self) -> Result<tonic::Streaming<proto::DeliveryEvent>, ClientError> {
        let (_, channel, auth) = self.authenticated().await?;
        call(
            "subscribe",
            delivery_client(channel, auth).subscribe(proto::SubscribeRequest {}),
        )
        .await
    }
}

/// A change in a [`Listener`]'s connection, for a program to tell its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionNotice {
    /// The homeserver at `server` could not be reached or is shutting down;
    /// the listener tries again at `next` (the same address if it knows no
    /// other) after `retry_in`.
    Lost {
        server: ServerUrl,
        reason: String,
        next: ServerUrl,
        retry_in: Duration,
    },
    /// The homeserver answers again, at `server`, after a
    /// [`ConnectionNotice::Lost`]: the listener caught up or is streaming.
    Restored { server: ServerUrl },
}

/// Hands out messages from other members as they arrive: first those stored
/// unread, then new ones from the hub's Subscribe stream, which it applies (and
/// acknowledges) like [`Client::receive`] does, commits and Welcomes included.
/// It reconnects on its own when the stream breaks: after a jittered back-off,
/// to the homeserver's next address when the one in use is gone (see
/// [`Client::with_server_endpoints`]), resuming from the acknowledged cursors.
pub struct Listener<'a> {
    client: &'a Client,
    /// Only messages of this group; others stay unread for another listener.
    group_id: Option<GroupId>,
    stream: Option<tonic::Streaming<proto::DeliveryEvent>>,
    /// Events taken from the stream and not applied yet.
    buffered: Vec<proto::DeliveryEvent>,
    /// Whether [`Client::receive`] (stored submissions, Fetch) ran since the
    /// last (re)subscription.
    caught_up: bool,
    /// Failed subscriptions in a row, for the reconnection backoff.
    failures: u32,
    /// When the next attempt may be made, after a failure. Kept here rather
    /// than in a sleeping future, so that a caller cancelling `next` (as a
    /// `select!` does) neither cuts the back-off short nor restarts it.
    retry_at: Option<tokio::time::Instant>,
    /// A connection was lost and no stream is open again yet.
    interrupted: bool,
    /// The homeserver answered once: a certificate refused from then on is a
    /// lost connection (told, and tried again, in case the server's operator
    /// puts a trusted one back), not a refusal to start with.
    connected_before: bool,
    /// The homeserver's address the last network step used.
    endpoint: Option<ServerUrl>,
    /// Told of lost and restored connections.
    on_connection: Option<Box<dyn FnMut(ConnectionNotice) + Send + 'a>>,
}

impl<'a> Listener<'a> {
    /// Calls `notice` when the connection is lost and when streaming resumes
    /// (the `conclave` CLI says so on stderr).
    pub fn on_connection_change(
        mut self,
        notice: impl FnMut(ConnectionNotice) + Send + 'a,
    ) -> Listener<'a> {
        self.on_connection = Some(Box::new(notice));
        self
    }

    /// The next message, waiting as long as it takes (wrap it in a timeout to
    /// bound the wait); membership changes are passed over (see
    /// [`Listener::next_event`]). Cancelling it loses nothing: a message is
    /// marked read only as it is returned, and events are acknowledged only
    /// once stored.
    pub async fn next(&mut self) -> Result<ReceivedMessage, ClientError> {
        loop {
            if let TimelineEvent::Message(message) = self.next_event().await? {
                return Ok(message);
            }
        }
    }

    /// The next message or membership change, as [`Listener::next`] does for
    /// messages.
    pub async fn next_event(&mut self) -> Result<TimelineEvent, ClientError> {
        loop {
            if let Some(retry_at) = self.retry_at {
                tokio::time::sleep_until(retry_at).await;
                self.retry_at = None;
            }
            if let Some(event) = self.client.take_unread_event(self.group_id.as_ref())? {
                return Ok(event);
            }
            if !self.buffered.is_empty() {
                // Applied from the buffer, which is emptied only once that
                // succeeded: a cancelled call leaves the events for the next one
                // (applying them twice changes nothing).
                self.endpoint = self.client.server_endpoint()?;
                match self.client.apply_stream_events(self.buffered.clone()).await {
                    Ok(_) => {
                        self.buffered.clear();
                        self.failures = 0;
                    }
                    Err(error) => self.wait_after_failure(error).await?,
                }
                continue;
            }
            if !self.caught_up {
                self.endpoint = self.client.server_endpoint()?;
                match self.client.receive_keeping_refusals().await {
                    Ok(_) => {
                        self.caught_up = true;
                        self.connected_before = true;
                        self.restored()?;
                    }
                    Err(error) => self.wait_after_failure(error).await?,
                }
                continue;
            }
            let stream = match &mut self.stream {
                Some(stream) => stream,
                None => {
                    self.endpoint = self.client.server_endpoint()?;
                    match self.client.subscribe().await {
                        Ok(stream) => {
                            self.stream = Some(stream);
                            self.restored()?;
                        }
                        Err(error) => self.wait_after_failure(error).await?,
                    }
                    continue;
                }
            };
            match stream.message().await {
                Ok(Some(event)) => {
                    self.buffered.push(event);
                    // Whatever else has arrived already goes into the same
                    // transaction; `message` is cancel-safe, so polling it once
                    // with a zero timeout loses nothing.
                    while self.buffered.len() < STREAM_PAGE {
                        match tokio::time::timeout(Duration::ZERO, stream.message()).await {
                            Ok(Ok(Some(event))) => self.buffered.push(event),
                            _ => break,
                        }
                    }
                }
                // The hub ended the stream (shutting down, or this consumer fell
                // behind): catch up and subscribe again, from the acknowledged
                // cursors.
                Ok(None) => {
                    self.stream = None;
                    self.caught_up = false;
                }
                Err(status) => {
                    let error = match refused_certificate(&status) {
                        Some(refused) => refused.into(),
                        None => RpcError::from_status("subscribe", &status).into(),
                    };
                    self.wait_after_failure(error).await?;
                }
            }
        }
    }

    /// After a passing failure, drops the stream and sets the time to wait
    /// until before catching up and subscribing again (at the homeserver's next address if the
    /// connection was lost, or its certificate refused after the listener was
    /// connected once); gives up on any other failure.
    async fn wait_after_failure(&mut self, error: ClientError) -> Result<(), ClientError> {
        let refused_since = self.connected_before
            && matches!(
                error,
                ClientError::Connect(ConnectError::Certificate { .. })
            );
        if !is_transient_error(&error) && !refused_since {
            return Err(error);
        }
        self.stream = None;
        self.caught_up = false;
        let retry_in = reconnect_delay(self.failures, random_unit());
        tracing::debug!(%error, failures = self.failures, ?retry_in, "subscription failed; retrying");
        // The address the failed step used: the client may have moved on
        // already (a send noticed first), and must not move again.
        if (is_connection_lost(&error) || refused_since)
            && let Some(server) = self.endpoint.clone()
        {
            let next = self.client.fail_over(&server)?;
            self.interrupted = true;
            self.notify(ConnectionNotice::Lost {
                server,
                reason: error.to_string(),
                next,
                retry_in,
            });
        }
        self.retry_at = Some(tokio::time::Instant::now() + retry_in);
        self.failures = self.failures.saturating_add(1);
        Ok(())
    }

    /// The server answered again after a lost connection: says so, once.
    fn restored(&mut self) -> Result<(), ClientError> {
        if std::mem::take(&mut self.interrupted)
            && let Some(server) = self.client.server_endpoint()?
        {
            self.notify(ConnectionNotice::Restored { server });
        }
        Ok(())
    }

    fn notify(&mut self, notice: ConnectionNotice) {
        if let Some(on_connection) = &mut self.on_connection {
            on_connection(notice);
        }
    }
}

fn to_event(
    entry: StoredEntry,
    group_name: String,
    me: Option<&CredentialIdentity>,
) -> Result<TimelineEvent, ClientError> {
    if !entry.membership {
        return to_received(entry, group_name).map(TimelineEvent::Message);
    }
    let corrupt = |what: &str| StateError::Corrupt(format!("stored membership change {what}"));
    let kind = MembershipKind::parse(&entry.kind).ok_or_else(|| corrupt("kind"))?;
    let subject: CredentialIdentity = entry
        .subject
        .as_deref()
        .unwrap_or_default()
        .parse()
        .map_err(|_| corrupt("subject"))?;
    let by = if entry.sender_user_id.is_empty() {
        None
    } else {
        Some(sender_identity(&entry)?)
    };
    Ok(TimelineEvent::Membership(MembershipEvent {
        group_id: GroupId::from_bytes(entry.group_id),
        group_name,
        seq: entry.seq,
        kind,
        this_device: me == Some(&subject),
        subject,
        by,
        reason: entry.body,
        server_time: entry
            .server_time_ms
            .and_then(DateTime::from_timestamp_millis),
        own: entry.own,
    }))
}

fn sender_identity(entry: &StoredEntry) -> Result<CredentialIdentity, StateError> {
    let corrupt = |what: &str| StateError::Corrupt(format!("stored message sender {what}"));
    Ok(CredentialIdentity::new(
        entry
            .sender_user_id
            .parse()
            .map_err(|_| corrupt("user id"))?,
        entry
            .sender_device_id
            .parse()
            .map_err(|_| corrupt("device id"))?,
    ))
}

fn to_received(entry: StoredEntry, group_name: String) -> Result<ReceivedMessage, ClientError> {
    Ok(ReceivedMessage {
        sender: sender_identity(&entry)?,
        group_id: GroupId::from_bytes(entry.group_id),
        group_name,
        seq: entry.seq,
        server_time: entry
            .server_time_ms
            .and_then(DateTime::from_timestamp_millis),
        sent_at: entry.sent_at_ms.and_then(DateTime::from_timestamp_millis),
        body: mls::from_stored(entry.kind, entry.body),
        own: entry.own,
    })
}
