//! The client's own group bookkeeping beside openmls's group state: what it knows
//! of each group (name, status, how far its log is processed), submissions the
//! hub has not confirmed yet, received messages, events waiting for a commit,
//! and the inbox cursor. Plain queries over a connection, which is usually a
//! transaction that also carries openmls's writes.

use std::fmt;

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::StateError;

/// Where this device stands in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupStatus {
    /// Created here; the hub has not registered it yet.
    Creating,
    /// A member.
    Active,
    /// Joining again by external commit; the hub has not accepted it yet.
    Rejoining,
    /// No longer a member: removed by another member, or left.
    Removed,
}

impl GroupStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupStatus::Creating => "creating",
            GroupStatus::Active => "active",
            GroupStatus::Rejoining => "rejoining",
            GroupStatus::Removed => "removed",
        }
    }

    fn parse(text: &str) -> Result<GroupStatus, StateError> {
        match text {
            "creating" => Ok(GroupStatus::Creating),
            "active" => Ok(GroupStatus::Active),
            "rejoining" => Ok(GroupStatus::Rejoining),
            "removed" => Ok(GroupStatus::Removed),
            other => Err(StateError::Corrupt(format!("group status {other:?}"))),
        }
    }
}

impl fmt::Display for GroupStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of `client_groups`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupRow {
    pub(crate) group_id: Vec<u8>,
    pub(crate) name: String,
    pub(crate) status: GroupStatus,
    /// Every event of the group's log up to here is processed.
    pub(crate) last_seq: u64,
    /// The epoch at which the hub took this device's leave proposal.
    pub(crate) leaving_epoch: Option<u64>,
    /// The local state is lost or diverged: rejoin by external commit.
    pub(crate) needs_rejoin: bool,
}

/// Which RPC carries a pending submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubmissionKind {
    Create,
    Commit,
    Proposal,
    Message,
}

impl SubmissionKind {
    fn as_str(self) -> &'static str {
        match self {
            SubmissionKind::Create => "create",
            SubmissionKind::Commit => "commit",
            SubmissionKind::Proposal => "proposal",
            SubmissionKind::Message => "message",
        }
    }

    fn parse(text: &str) -> Result<SubmissionKind, StateError> {
        match text {
            "create" => Ok(SubmissionKind::Create),
            "commit" => Ok(SubmissionKind::Commit),
            "proposal" => Ok(SubmissionKind::Proposal),
            "message" => Ok(SubmissionKind::Message),
            other => Err(StateError::Corrupt(format!("submission kind {other:?}"))),
        }
    }
}

/// A submission stored before it was first sent, kept until the hub's answer is
/// applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PendingSubmission {
    /// Row id; 0 for one not inserted yet.
    pub(crate) id: i64,
    pub(crate) group_id: Vec<u8>,
    pub(crate) kind: SubmissionKind,
    /// The intent as JSON (see `client::intent`).
    pub(crate) intent: String,
    pub(crate) idempotency_key: Vec<u8>,
    /// The MLSMessage submitted; for a creation, the GroupInfo.
    pub(crate) payload: Vec<u8>,
    /// For a commit: the Welcome, if it adds members.
    pub(crate) welcome: Option<Vec<u8>>,
    /// For a commit: the new GroupInfo; for a creation: the ratchet tree.
    pub(crate) extra: Option<Vec<u8>>,
    /// The group's epoch when it was built.
    pub(crate) epoch: u64,
    /// Its epoch ended before it landed and this device's side of it is rolled
    /// back: the payload is stale and never sent again; the intent is rebuilt
    /// for the current epoch, replacing it.
    pub(crate) lost_race: bool,
}

/// A stored submission refused after its caller had moved on (resent later, or
/// rebuilt after a lost race), kept until the application is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RefusedRow {
    pub(crate) group_id: Vec<u8>,
    /// The intent as JSON.
    pub(crate) intent: String,
    pub(crate) reason: String,
}

/// An entry of a group's timeline as stored: a message (received, or sent by
/// this device) or a membership change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredEntry {
    pub(crate) id: i64,
    pub(crate) group_id: Vec<u8>,
    pub(crate) seq: u64,
    /// A membership change, rather than a message.
    pub(crate) membership: bool,
    /// The message's sender, or who made the change (empty if unknown).
    pub(crate) sender_user_id: String,
    pub(crate) sender_device_id: String,
    pub(crate) server_time_ms: Option<i64>,
    pub(crate) sent_at_ms: Option<i64>,
    /// The envelope's type, or the membership change.
    pub(crate) kind: String,
    /// The text, or the reason of a membership change.
    pub(crate) body: String,
    /// The device a membership change is about.
    pub(crate) subject: Option<String>,
    pub(crate) own: bool,
}

/// A group event kept until the commit for its epoch has been processed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeldEvent {
    pub(crate) group_id: Vec<u8>,
    pub(crate) seq: u64,
    pub(crate) epoch: u64,
    pub(crate) message: Vec<u8>,
    pub(crate) sender_user_id: String,
    pub(crate) sender_device_id: String,
    pub(crate) server_time_ms: Option<i64>,
}

/// SQLite integers are signed; sequence numbers and epochs never come near 2^63.
fn to_sql(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn from_sql(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// A `client_groups` row as SQLite returns it, before its status is parsed.
type RawGroupRow = (Vec<u8>, String, String, i64, Option<i64>, bool);

fn group_row(row: &Row<'_>) -> rusqlite::Result<RawGroupRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
    ))
}

fn to_group_row(
    (group_id, name, status, last_seq, leaving_epoch, needs_rejoin): RawGroupRow,
) -> Result<GroupRow, StateError> {
    Ok(GroupRow {
        group_id,
        name,
        status: GroupStatus::parse(&status)?,
        last_seq: from_sql(last_seq),
        leaving_epoch: leaving_epoch.map(from_sql),
        needs_rejoin,
    })
}

const GROUP_COLUMNS: &str = "group_id, name, status, last_seq, leaving_epoch, needs_rejoin";

pub(crate) fn group(
    connection: &Connection,
    group_id: &[u8],
) -> Result<Option<GroupRow>, StateError> {
    connection
        .query_row(
            &format!("SELECT {GROUP_COLUMNS} FROM client_groups WHERE group_id = ?1"),
            [group_id],
            group_row,
        )
        .optional()?
        .map(to_group_row)
        .transpose()
}

/// Every group, by name then id.
pub(crate) fn groups(connection: &Connection) -> Result<Vec<GroupRow>, StateError> {
    let mut statement = connection.prepare(&format!(
        "SELECT {GROUP_COLUMNS} FROM client_groups ORDER BY name, group_id"
    ))?;
    let rows = statement
        .query_map([], group_row)?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter().map(to_group_row).collect()
}

/// Inserts a group, or replaces everything known about it.
pub(crate) fn put_group(
    connection: &Connection,
    row: &GroupRow,
    now_ms: i64,
) -> Result<(), StateError> {
    connection.execute(
        "INSERT INTO client_groups
             (group_id, name, status, last_seq, leaving_epoch, needs_rejoin, updated_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (group_id) DO UPDATE SET
             name = excluded.name, status = excluded.status, last_seq = excluded.last_seq,
             leaving_epoch = excluded.leaving_epoch, needs_rejoin = excluded.needs_rejoin,
             updated_at_ms = excluded.updated_at_ms",
        params![
            row.group_id,
            row.name,
            row.status.as_str(),
            to_sql(row.last_seq),
            row.leaving_epoch.map(to_sql),
            row.needs_rejoin,
            now_ms,
        ],
    )?;
    Ok(())
}

/// Marks the group's log processed up to `seq` (never backwards).
pub(crate) fn advance_last_seq(
    connection: &Connection,
    group_id: &[u8],
    seq: u64,
) -> Result<(), StateError> {
    connection.execute(
        "UPDATE client_groups SET last_seq = MAX(last_seq, ?2) WHERE group_id = ?1",
        params![group_id, to_sql(seq)],
    )?;
    Ok(())
}

pub(crate) fn set_status(
    connection: &Connection,
    group_id: &[u8],
    status: GroupStatus,
) -> Result<(), StateError> {
    connection.execute(
        "UPDATE client_groups SET status = ?2 WHERE group_id = ?1",
        params![group_id, status.as_str()],
    )?;
    Ok(())
}

pub(crate) fn set_leaving_epoch(
    connection: &Connection,
    group_id: &[u8],
    epoch: Option<u64>,
) -> Result<(), StateError> {
    connection.execute(
        "UPDATE client_groups SET leaving_epoch = ?2 WHERE group_id = ?1",
        params![group_id, epoch.map(to_sql)],
    )?;
    Ok(())
}

pub(crate) fn set_needs_rejoin(
    connection: &Connection,
    group_id: &[u8],
    needs_rejoin: bool,
) -> Result<(), StateError> {
    connection.execute(
        "UPDATE client_groups SET needs_rejoin = ?2 WHERE group_id = ?1",
        params![group_id, needs_rejoin],
    )?;
    Ok(())
}

pub(crate) fn delete_group(connection: &Connection, group_id: &[u8]) -> Result<(), StateError> {
    connection.execute("DELETE FROM client_groups WHERE group_id = ?1", [group_id])?;
    delete_pending_for_group(connection, group_id)?;
    delete_held_for_group(connection, group_id)?;
    forget_departures_for_group(connection, group_id)?;
    Ok(())
}

/// Notes a departed device (its departure notice, and the reason it gives)
/// whose leaf is still in the group, for this device to commit its removal.
pub(crate) fn note_departure(
    connection: &Connection,
    group_id: &[u8],
    identity: &str,
    reason: &str,
) -> Result<(), StateError> {
    connection.execute(
        "INSERT INTO departed_members (group_id, identity, reason) VALUES (?1, ?2, ?3)
         ON CONFLICT (group_id, identity) DO NOTHING",
        params![group_id, identity, reason],
    )?;
    Ok(())
}

/// The reason given for a departed device of the group, if one was noted.
pub(crate) fn departure_reason(
    connection: &Connection,
    group_id: &[u8],
    identity: &str,
) -> Result<Option<String>, StateError> {
    Ok(connection
        .query_row(
            "SELECT reason FROM departed_members WHERE group_id = ?1 AND identity = ?2",
            params![group_id, identity],
            |row| row.get(0),
        )
        .optional()?)
}

/// The departed devices noted for the group, in order.
pub(crate) fn departures(
    connection: &Connection,
    group_id: &[u8],
) -> Result<Vec<String>, StateError> {
    let mut statement = connection
        .prepare("SELECT identity FROM departed_members WHERE group_id = ?1 ORDER BY identity")?;
    Ok(statement
        .query_map([group_id], |row| row.get(0))?
        .collect::<Result<Vec<String>, _>>()?)
}

/// Forgets a departed device of the group (its leaf is gone).
pub(crate) fn forget_departure(
    connection: &Connection,
    group_id: &[u8],
    identity: &str,
) -> Result<(), StateError> {
    connection.execute(
        "DELETE FROM departed_members WHERE group_id = ?1 AND identity = ?2",
        params![group_id, identity],
    )?;
    Ok(())
}

pub(crate) fn forget_departures_for_group(
    connection: &Connection,
    group_id: &[u8],
) -> Result<(), StateError> {
    connection.execute(
        "DELETE FROM departed_members WHERE group_id = ?1",
        [group_id],
    )?;
    Ok(())
}

/// Stores a submission before it is sent; returns its row id.
pub(crate) fn insert_pending(
    connection: &Connection,
    submission: &PendingSubmission,
    now_ms: i64,
) -> Result<i64, StateError> {
    connection.execute(
        "INSERT INTO pending_submissions
             (group_id, kind, intent, idempotency_key, payload, welcome, extra, epoch,
              created_at_ms, lost_race)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            submission.group_id,
            submission.kind.as_str(),
            submission.intent,
            submission.idempotency_key,
            submission.payload,
            submission.welcome,
            submission.extra,
            to_sql(submission.epoch),
            now_ms,
            submission.lost_race,
        ],
    )?;
    Ok(connection.last_insert_rowid())
}

/// Forgets `replaced` (a submission that lost its race) and gives its row id
/// to `replacement`, the rebuild of its intent stored as row
/// `replacement_id`: the rebuild takes its place in the order of the group's
/// submissions. False (and nothing changed) if `replaced` is gone already.
pub(crate) fn replace_pending(
    connection: &Connection,
    replaced: &PendingSubmission,
    replacement_id: i64,
) -> Result<bool, StateError> {
    if !delete_pending(connection, replaced)? {
        return Ok(false);
    }
    connection.execute(
        "UPDATE pending_submissions SET id = ?1 WHERE id = ?2",
        [replaced.id, replacement_id],
    )?;
    Ok(true)
}

/// Flags a submission as having lost the race for its epoch; false if it was
/// gone already.
pub(crate) fn mark_lost_race(
    connection: &Connection,
    submission: &PendingSubmission,
) -> Result<bool, StateError> {
    Ok(connection.execute(
        "UPDATE pending_submissions SET lost_race = 1 WHERE id = ?1 AND idempotency_key = ?2",
        params![submission.id, submission.idempotency_key],
    )? > 0)
}

/// Whether a submission is stored as row `id` (the one given, or the rebuild
/// that replaced it).
pub(crate) fn pending_id_exists(connection: &Connection, id: i64) -> Result<bool, StateError> {
    Ok(connection.query_row(
        "SELECT EXISTS (SELECT 1 FROM pending_submissions WHERE id = ?1)",
        [id],
        |row| row.get(0),
    )?)
}

/// Whether row `id` holds a submission of exactly this intent (JSON): the
/// one stored for it, or the rebuild that replaced it after a lost race.
pub(crate) fn pending_intent_exists(
    connection: &Connection,
    id: i64,
    intent: &str,
) -> Result<bool, StateError> {
    Ok(connection.query_row(
        "SELECT EXISTS (SELECT 1 FROM pending_submissions WHERE id = ?1 AND intent = ?2)",
        params![id, intent],
        |row| row.get(0),
    )?)
}

/// Whether a submission is still stored.
pub(crate) fn pending_exists(
    connection: &Connection,
    submission: &PendingSubmission,
) -> Result<bool, StateError> {
    Ok(connection.query_row(
        "SELECT EXISTS (SELECT 1 FROM pending_submissions WHERE id = ?1 AND idempotency_key = ?2)",
        params![submission.id, submission.idempotency_key],
        |row| row.get(0),
    )?)
}

/// Pending submissions, oldest first; of one group, or of all.
pub(crate) fn pending_submissions(
    connection: &Connection,
    group_id: Option<&[u8]>,
) -> Result<Vec<PendingSubmission>, StateError> {
    let mut statement = connection.prepare(
        "SELECT id, group_id, kind, intent, idempotency_key, payload, welcome, extra, epoch,
                lost_race
         FROM pending_submissions WHERE ?1 IS NULL OR group_id = ?1 ORDER BY id",
    )?;
    let rows = statement
        .query_map([group_id], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, Vec<u8>>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, Vec<u8>>(4)?,
                row.get::<_, Vec<u8>>(5)?,
                row.get::<_, Option<Vec<u8>>>(6)?,
                row.get::<_, Option<Vec<u8>>>(7)?,
                row.get::<_, i64>(8)?,
                row.get::<_, bool>(9)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(
            |(
                id,
                group_id,
                kind,
                intent,
                idempotency_key,
                payload,
                welcome,
                extra,
                epoch,
                lost_race,
            )| {
                Ok(PendingSubmission {
                    id,
                    group_id,
                    kind: SubmissionKind::parse(&kind)?,
                    intent,
                    idempotency_key,
                    payload,
                    welcome,
                    extra,
                    epoch: from_sql(epoch),
                    lost_race,
                })
            },
        )
        .collect()
}

/// Deletes a pending submission; false if it was gone already (another process
/// completed it). Matched by its idempotency key too, because a rebuild after
/// a lost race takes over the row id of the submission it replaces.
pub(crate) fn delete_pending(
    connection: &Connection,
    submission: &PendingSubmission,
) -> Result<bool, StateError> {
    Ok(connection.execute(
        "DELETE FROM pending_submissions WHERE id = ?1 AND idempotency_key = ?2",
        params![submission.id, submission.idempotency_key],
    )? > 0)
}

/// Deletes the pending submission that carries exactly `payload` (its echo came
/// back from the hub); false if there was none.
pub(crate) fn delete_pending_with_payload(
    connection: &Connection,
    group_id: &[u8],
    payload: &[u8],
) -> Result<Option<PendingSubmission>, StateError> {
    // One that lost its race was refused by the hub, so never echoed.
    let found = pending_submissions(connection, Some(group_id))?
        .into_iter()
        .find(|submission| !submission.lost_race && submission.payload == payload);
    if let Some(submission) = &found {
        delete_pending(connection, submission)?;
    }
    Ok(found)
}

pub(crate) fn delete_pending_for_group(
    connection: &Connection,
    group_id: &[u8],
) -> Result<(), StateError> {
    connection.execute(
        "DELETE FROM pending_submissions WHERE group_id = ?1",
        [group_id],
    )?;
    Ok(())
}

/// Whether a commit of this device for the group awaits the hub's answer (one
/// that lost its race awaits nothing: it is rolled back).
pub(crate) fn has_pending_commit(
    connection: &Connection,
    group_id: &[u8],
) -> Result<bool, StateError> {
    Ok(connection.query_row(
        "SELECT EXISTS (SELECT 1 FROM pending_submissions
                        WHERE group_id = ?1 AND kind = 'commit' AND lost_race = 0)",
        [group_id],
        |row| row.get(0),
    )?)
}

/// Keeps the refusal of a stored submission for the application to be told.
pub(crate) fn insert_refused(
    connection: &Connection,
    group_id: &[u8],
    intent: &str,
    reason: &str,
    now_ms: i64,
) -> Result<(), StateError> {
    connection.execute(
        "INSERT INTO refused_submissions (group_id, intent, reason, refused_at_ms)
         VALUES (?1, ?2, ?3, ?4)",
        params![group_id, intent, reason, now_ms],
    )?;
    Ok(())
}

/// Takes the oldest kept refusal of a submission of this intent (JSON) in the
/// group, if there is one: its reason.
pub(crate) fn take_refused_of(
    connection: &Connection,
    group_id: &[u8],
    intent: &str,
) -> Result<Option<String>, StateError> {
    let found = connection
        .query_row(
            "SELECT id, reason FROM refused_submissions
             WHERE group_id = ?1 AND intent = ?2 ORDER BY id LIMIT 1",
            params![group_id, intent],
            |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?)),
        )
        .optional()?;
    let Some((id, reason)) = found else {
        return Ok(None);
    };
    connection.execute("DELETE FROM refused_submissions WHERE id = ?1", [id])?;
    Ok(Some(reason))
}

/// Takes the kept refusals (of one group, or of all), oldest first.
pub(crate) fn take_refused(
    connection: &Connection,
    group_id: Option<&[u8]>,
) -> Result<Vec<RefusedRow>, StateError> {
    let rows = connection
        .prepare(
            "SELECT group_id, intent, reason FROM refused_submissions
             WHERE ?1 IS NULL OR group_id = ?1 ORDER BY id",
        )?
        .query_map([group_id], |row| {
            Ok(RefusedRow {
                group_id: row.get(0)?,
                intent: row.get(1)?,
                reason: row.get(2)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    connection.execute(
        "DELETE FROM refused_submissions WHERE ?1 IS NULL OR group_id = ?1",
        [group_id],
    )?;
    Ok(rows)
}

/// A message to store.
pub(crate) struct NewMessage<'a> {
    pub(crate) group_id: &'a [u8],
    pub(crate) seq: u64,
    pub(crate) sender_user_id: &'a str,
    pub(crate) sender_device_id: &'a str,
    pub(crate) server_time_ms: Option<i64>,
    /// The sender's clock at sending, as its envelope says.
    pub(crate) sent_at_ms: Option<i64>,
    pub(crate) kind: &'a str,
    pub(crate) body: &'a str,
    pub(crate) own: bool,
}

/// Stores a message, unread unless it is this device's own. A message already
/// stored at that position is left as it is (false).
pub(crate) fn insert_message(
    connection: &Connection,
    message: &NewMessage<'_>,
) -> Result<bool, StateError> {
    let inserted = connection.execute(
        "INSERT INTO messages
             (group_id, seq, part, entry, sender_user_id, sender_device_id, server_time_ms,
              sent_at_ms, kind, body, own, unread)
         VALUES (?1, ?2, 0, 'message', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (group_id, seq, part) DO NOTHING",
        params![
            message.group_id,
            to_sql(message.seq),
            message.sender_user_id,
            message.sender_device_id,
            message.server_time_ms,
            message.sent_at_ms,
            message.kind,
            message.body,
            message.own,
            !message.own,
        ],
    )?;
    Ok(inserted > 0)
}

/// A membership change to store.
pub(crate) struct NewMembership<'a> {
    pub(crate) group_id: &'a [u8],
    /// The log position of the commit (or Welcome) that made it.
    pub(crate) seq: u64,
    /// Its place among the changes of that commit, from 0.
    pub(crate) part: u64,
    /// joined, left, removed, rotated or rejoined.
    pub(crate) kind: &'a str,
    /// The device whose membership changed.
    pub(crate) subject: &'a str,
    /// Who made it, as user and device (empty if unknown).
    pub(crate) by_user_id: &'a str,
    pub(crate) by_device_id: &'a str,
    pub(crate) server_time_ms: Option<i64>,
    /// Why, in words (a departure notice's reason), or empty.
    pub(crate) reason: &'a str,
    /// Made by this device.
    pub(crate) own: bool,
    /// For a listener to show.
    pub(crate) unread: bool,
}

/// Stores a membership change; one already stored at that position is left
/// as it is.
pub(crate) fn insert_membership(
    connection: &Connection,
    change: &NewMembership<'_>,
) -> Result<(), StateError> {
    connection.execute(
        "INSERT INTO messages
             (group_id, seq, part, entry, sender_user_id, sender_device_id, server_time_ms,
              kind, body, subject, own, unread)
         VALUES (?1, ?2, ?3, 'membership', ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (group_id, seq, part) DO NOTHING",
        params![
            change.group_id,
            to_sql(change.seq),
            to_sql(change.part),
            change.by_user_id,
            change.by_device_id,
            change.server_time_ms,
            change.kind,
            change.reason,
            change.subject,
            change.own,
            change.unread,
        ],
    )?;
    Ok(())
}

const ENTRY_COLUMNS: &str = "id, group_id, seq, entry, sender_user_id, sender_device_id, \
     server_time_ms, sent_at_ms, kind, body, subject, own";

fn stored_entry(row: &Row<'_>) -> rusqlite::Result<StoredEntry> {
    Ok(StoredEntry {
        id: row.get(0)?,
        group_id: row.get(1)?,
        seq: from_sql(row.get(2)?),
        membership: row.get::<_, String>(3)? == "membership",
        sender_user_id: row.get(4)?,
        sender_device_id: row.get(5)?,
        server_time_ms: row.get(6)?,
        sent_at_ms: row.get(7)?,
        kind: row.get(8)?,
        body: row.get(9)?,
        subject: row.get(10)?,
        own: row.get(11)?,
    })
}

/// Takes the oldest unread entry (of one group, or of any) and marks it read,
/// or deletes it when `keep` is false (no history is kept), inside the
/// caller's transaction.
pub(crate) fn take_unread(
    connection: &Connection,
    group_id: Option<&[u8]>,
    keep: bool,
) -> Result<Option<StoredEntry>, StateError> {
    let entry = connection
        .query_row(
            &format!(
                "SELECT {ENTRY_COLUMNS} FROM messages
                 WHERE unread = 1 AND (?1 IS NULL OR group_id = ?1) ORDER BY id LIMIT 1"
            ),
            [group_id],
            stored_entry,
        )
        .optional()?;
    if let Some(entry) = &entry {
        if keep {
            connection.execute("UPDATE messages SET unread = 0 WHERE id = ?1", [entry.id])?;
        } else {
            connection.execute("DELETE FROM messages WHERE id = ?1", [entry.id])?;
        }
    }
    Ok(entry)
}

/// The group's timeline in log order, own entries included, read or not: the
/// newest `limit` entries before log position `before` (all, if `None`), and
/// every other part of the oldest log entry among them. One log entry can make
/// several timeline entries (a commit adding two devices), and paging goes by
/// log position, so a page that split a log entry would lose its older parts
/// to the next page's `before`: a page holds whole log entries, even past
/// `limit`.
pub(crate) fn entries(
    connection: &Connection,
    group_id: &[u8],
    limit: usize,
    before: Option<u64>,
) -> Result<Vec<StoredEntry>, StateError> {
    // The oldest log position among the newest `limit` entries; NULL when
    // there are none (or `limit` is 0), which selects nothing.
    let mut statement = connection.prepare(&format!(
        "SELECT {ENTRY_COLUMNS} FROM messages
         WHERE group_id = ?1 AND (?3 IS NULL OR seq < ?3)
           AND seq >= (SELECT MIN(seq) FROM
                         (SELECT seq FROM messages
                          WHERE group_id = ?1 AND (?3 IS NULL OR seq < ?3)
                          ORDER BY seq DESC, part DESC LIMIT ?2))
         ORDER BY seq, part"
    ))?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    Ok(statement
        .query_map(params![group_id, limit, before.map(to_sql)], stored_entry)?
        .collect::<Result<Vec<_>, _>>()?)
}

/// How many entries of the group no listener has shown yet.
pub(crate) fn unread_count(connection: &Connection, group_id: &[u8]) -> Result<u64, StateError> {
    let count: i64 = connection.query_row(
        "SELECT COUNT(*) FROM messages WHERE group_id = ?1 AND unread = 1",
        [group_id],
        |row| row.get(0),
    )?;
    Ok(from_sql(count))
}

/// Deletes every entry already shown (history is no longer kept); unread ones
/// stay until a listener takes them.
pub(crate) fn forget_read_entries(connection: &Connection) -> Result<usize, StateError> {
    Ok(connection.execute("DELETE FROM messages WHERE unread = 0", [])?)
}

pub(crate) fn hold_event(connection: &Connection, event: &HeldEvent) -> Result<(), StateError> {
    connection.execute(
        "INSERT INTO held_events
             (group_id, seq, epoch, message, sender_user_id, sender_device_id, server_time_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (group_id, seq) DO NOTHING",
        params![
            event.group_id,
            to_sql(event.seq),
            to_sql(event.epoch),
            event.message,
            event.sender_user_id,
            event.sender_device_id,
            event.server_time_ms,
        ],
    )?;
    Ok(())
}

/// The group's held events, in log order.
pub(crate) fn held_events(
    connection: &Connection,
    group_id: &[u8],
) -> Result<Vec<HeldEvent>, StateError> {
    let mut statement = connection.prepare(
        "SELECT group_id, seq, epoch, message, sender_user_id, sender_device_id, server_time_ms
         FROM held_events WHERE group_id = ?1 ORDER BY seq",
    )?;
    Ok(statement
        .query_map([group_id], |row| {
            Ok(HeldEvent {
                group_id: row.get(0)?,
                seq: from_sql(row.get(1)?),
                epoch: from_sql(row.get(2)?),
                message: row.get(3)?,
                sender_user_id: row.get(4)?,
                sender_device_id: row.get(5)?,
                server_time_ms: row.get(6)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?)
}

pub(crate) fn delete_held(
    connection: &Connection,
    group_id: &[u8],
    seq: u64,
) -> Result<(), StateError> {
    connection.execute(
        "DELETE FROM held_events WHERE group_id = ?1 AND seq = ?2",
        params![group_id, to_sql(seq)],
    )?;
    Ok(())
}

pub(crate) fn delete_held_for_group(
    connection: &Connection,
    group_id: &[u8],
) -> Result<(), StateError> {
    connection.execute("DELETE FROM held_events WHERE group_id = ?1", [group_id])?;
    Ok(())
}

/// Every inbox event up to here is processed.
pub(crate) fn inbox_seq(connection: &Connection) -> Result<u64, StateError> {
    let seq: Option<i64> = connection
        .query_row("SELECT seq FROM inbox_cursor WHERE id = 1", [], |row| {
            row.get(0)
        })
        .optional()?;
    Ok(seq.map_or(0, from_sql))
}

pub(crate) fn advance_inbox_seq(connection: &Connection, seq: u64) -> Result<(), StateError> {
    connection.execute(
        "INSERT INTO inbox_cursor (id, seq) VALUES (1, ?1)
         ON CONFLICT (id) DO UPDATE SET seq = MAX(seq, excluded.seq)",
        [to_sql(seq)],
    )?;
    Ok(())
}

/// Runs `work` inside a savepoint of the caller's transaction: rolled back (and
/// the error or the rejected value returned) if `keep` says no, released if yes.
/// Lets one transaction apply many events while a failing one leaves no trace.
pub(crate) fn savepoint<T, E>(
    connection: &Connection,
    work: impl FnOnce() -> Result<T, E>,
    keep: impl FnOnce(&T) -> bool,
) -> Result<T, E>
where
    E: From<rusqlite::Error>,
{
    connection.execute_batch("SAVEPOINT event")?;
    let result = work();
    let keep = matches!(&result, Ok(value) if keep(value));
    if keep {
        connection.execute_batch("RELEASE event")?;
    } else {
        connection.execute_batch("ROLLBACK TO event; RELEASE event")?;
    }
    result
}
