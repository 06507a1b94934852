//! The group and message commands: bring the device up to date, resolve the
//! GROUP argument (a name or a hex id), call the library, describe the result;
//! `history`, from the local state; and the `listen` and `chat` loops, which
//! print messages and membership changes as they arrive.

use std::collections::VecDeque;
use std::io::{BufRead, Read};
use std::time::Duration;

use anyhow::{Context, bail};
use conclave_client::{
    Client, ClientError, ConnectionNotice, GroupId, RefusedSubmission, TimelineEvent,
};
use tokio::sync::mpsc;

use crate::args::GroupCommand;
use crate::group_output;
use crate::output::Report;

pub(crate) async fn group(client: &Client, action: GroupCommand) -> anyhow::Result<Report> {
    receive(client).await?;
    let report = group_action(client, action).await;
    // The operation resent the group's kept submissions first.
    tell_refused(&client.take_refused_submissions(None)?, None);
    report
}

async fn group_action(client: &Client, action: GroupCommand) -> anyhow::Result<Report> {
    Ok(match action {
        GroupCommand::Create { name, cipher_suite } => {
            group_output::created(&client.create_group_in(&name, cipher_suite.into()).await?)
        }
        GroupCommand::Invite { group, users } => {
            let group_id = client.find_group(&group)?;
            group_output::invited(&group_id, &client.invite(&group_id, &users).await?)
        }
        GroupCommand::Remove { group, user } => {
            let group_id = client.find_group(&group)?;
            group_output::removed(&group_id, &client.remove(&group_id, &user).await?)
        }
        GroupCommand::Leave { group } => {
            let group_id = client.find_group(&group)?;
            let name = client.group(&group_id)?.name;
            client.leave(&group_id).await?;
            group_output::left(&group_id, &name)
        }
        GroupCommand::Rotate { group } => {
            let group_id = client.find_group(&group)?;
            group_output::rotated(&group_id, &client.rotate(&group_id).await?)
        }
        GroupCommand::Members { group } => {
            let group_id = client.find_group(&group)?;
            group_output::members(&client.group(&group_id)?, &client.members(&group_id)?)
        }
    })
}

/// Brings the device up to date, telling on stderr of kept submissions that
/// were not made after all (a message `chat` or `send` kept while the
/// homeserver was away, refused since).
async fn receive(client: &Client) -> Result<(), ClientError> {
    let report = client.receive().await?;
    tell_refused(&report.refused, None);
    Ok(())
}

/// One stderr line per kept submission that was not made: for a message, its
/// text and why (the group named unless it is the chat's own).
fn tell_refused(refused: &[RefusedSubmission], chat_group: Option<&GroupId>) {
    for refusal in refused {
        let RefusedSubmission {
            group_id,
            group_name,
            action,
            text,
            reason,
        } = refusal;
        match text {
            Some(text) if chat_group == Some(group_id) => eprintln!("not sent: {text}: {reason}"),
            Some(text) => eprintln!("not sent to {group_name}: {text}: {reason}"),
            None => eprintln!("not done in {group_name}: {action}: {reason}"),
        }
    }
}

pub(crate) async fn groups(client: &Client) -> anyhow::Result<Report> {
    receive(client).await?;
    Ok(group_output::groups(&client.groups()?))
}

pub(crate) async fn send(
    client: &Client,
    group: &str,
    text: Option<String>,
) -> anyhow::Result<Report> {
    let text = match text.as_deref() {
        None | Some("-") => read_stdin_message()?,
        Some(text) => text.to_owned(),
    };
    if text.is_empty() {
        bail!("the message is empty");
    }
    // Fetching first spares the message a lost race for its epoch, but the
    // homeserver being away does not stop it: the library keeps it
    // (`ClientError::NotSentYet`, exit status 75) and rebuilds it for the
    // group's epoch of the day it goes out.
    let fetch_failure = match receive(client).await {
        Ok(()) => None,
        Err(error) if error.is_transient() => Some(error),
        Err(error) => return Err(error.into()),
    };
    let group_id = match client.find_group(group) {
        Ok(group_id) => group_id,
        // The group may be an invitation the failed fetch would have brought:
        // its error is the one to tell.
        Err(unknown) => return Err(fetch_failure.unwrap_or(unknown).into()),
    };
    let sent = client.send(&group_id, &text).await;
    // Sending resent the group's kept submissions first.
    tell_refused(&client.take_refused_submissions(None)?, None);
    Ok(group_output::sent(&sent?))
}

/// A group's history from the local state (no network).
pub(crate) fn history(
    client: &Client,
    group: &str,
    limit: usize,
    before: Option<u64>,
) -> anyhow::Result<Report> {
    let group_id = client.find_group(group)?;
    let name = client.group(&group_id)?.name;
    let events = client.history(&group_id, limit, before)?;
    Ok(group_output::history(&group_id, &name, &events))
}

/// Prints messages and membership changes as they arrive until `count`
/// messages are printed or `timeout` seconds passed (an error if a count was
/// asked for and not reached).
pub(crate) async fn listen(
    client: &Client,
    group: Option<&str>,
    timeout: Option<u64>,
    count: Option<u64>,
    as_json: bool,
) -> anyhow::Result<Report> {
    receive(client).await?;
    let group_id = group.map(|group| client.find_group(group)).transpose()?;
    let mut listener = client
        .listen(group_id)
        .on_connection_change(tell_connection_change);
    let deadline =
        timeout.map(|seconds| tokio::time::Instant::now() + Duration::from_secs(seconds));
    let mut printed = 0;
    while count.is_none_or(|count| printed < count) {
        let event = match deadline {
            None => listener.next_event().await?,
            Some(deadline) => {
                match tokio::time::timeout_at(deadline, listener.next_event()).await {
                    Ok(event) => event?,
                    Err(_) => match (count, timeout) {
                        (Some(count), Some(seconds)) => bail!(
                            "timed out after {seconds} seconds with {printed} of {count} messages"
                        ),
                        _ => break,
                    },
                }
            }
        };
        println!("{}", group_output::event_line(&event, as_json));
        if matches!(event, TimelineEvent::Message(_)) {
            printed += 1;
        }
    }
    Ok(Report::printed_already())
}

/// How long chat waits before trying again to hand over lines the homeserver
/// did not take, unless the listener reports it back first.
const RESEND_INTERVAL: Duration = Duration::from_secs(5);

/// Sends each line typed on stdin to the group and prints incoming messages,
/// until stdin ends and every line is sent. While the homeserver is away, lines
/// wait (kept by the library, or here when it could not even store them) and
/// go out in order once it answers again.
pub(crate) async fn chat(client: &Client, group: &str, as_json: bool) -> anyhow::Result<Report> {
    receive(client).await?;
    let group_id = client.find_group(group)?;
    let name = client.group(&group_id)?.name;
    let mut lines = stdin_lines();
    let (back_sender, mut back) = mpsc::unbounded_channel();
    let mut listener = client
        .listen(Some(group_id.clone()))
        .on_connection_change(move |notice| {
            let restored = matches!(notice, ConnectionNotice::Restored { .. });
            tell_connection_change(notice);
            if restored {
                // The receiver lives as long as the chat; nothing to do if not.
                let _ = back_sender.send(());
            }
        });
    if !as_json {
        eprintln!("chatting in {name}; type a line to send it, end with Ctrl-D");
    }
    let mut outbox = Outbox::default();
    let chatted = chat_rounds(
        client,
        &group_id,
        as_json,
        &mut lines,
        &mut listener,
        &mut back,
        &mut outbox,
    )
    .await;
    if let Err(error) = chatted {
        // The chat ends on an error no wait cures: no line goes unmentioned.
        if let Ok(refused) = client.take_refused_submissions(Some(&group_id)) {
            outbox.note_refused(&refused, &group_id);
        }
        outbox.tell_unsent();
        return Err(error);
    }
    Ok(Report::printed_already())
}

/// The chat until stdin ends and every line is sent, or an error no wait
/// cures.
async fn chat_rounds(
    client: &Client,
    group_id: &GroupId,
    as_json: bool,
    lines: &mut mpsc::Receiver<String>,
    listener: &mut conclave_client::Listener<'_>,
    back: &mut mpsc::UnboundedReceiver<()>,
    outbox: &mut Outbox,
) -> anyhow::Result<()> {
    // One timer for the whole chat, not a sleep made anew each round: incoming
    // events end rounds often, and would otherwise put the resend off forever.
    let mut resend = tokio::time::interval(RESEND_INTERVAL);
    resend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut input_open = true;
    while input_open || !outbox.is_empty() {
        let was_empty = outbox.is_empty();
        // `listener.next()` is dropped whenever another branch wins: that is
        // safe (see `Listener::next`), and it must not hold the client's group
        // lock while a line is sent.
        tokio::select! {
            line = lines.recv(), if input_open => match line {
                Some(line) => {
                    outbox.push(&line);
                    outbox.flush(client, group_id).await?;
                }
                None => input_open = false,
            },
            event = listener.next_event() => {
                println!("{}", group_output::event_line(&event?, as_json));
            }
            Some(()) = back.recv() => outbox.flush(client, group_id).await?,
            _ = resend.tick(), if !outbox.is_empty() => {
                outbox.flush(client, group_id).await?;
            }
        }
        if was_empty && !outbox.is_empty() {
            // Lines started waiting: the first resend is a full interval away
            // (not at once for a tick missed while nothing waited).
            resend.reset();
        }
    }
    Ok(())
}

/// The chat's lines not yet taken by the homeserver, in order.
#[derive(Default)]
struct Outbox {
    /// Lines the library has not stored yet (it could not reach the
    /// homeserver for what had to go first).
    lines: VecDeque<String>,
    /// Lines the library stored but could not send; it sends them before
    /// anything else of the group (or tells of their refusal).
    kept: Vec<String>,
    /// Whether the user was told that lines wait.
    waiting: bool,
    /// Lines of this chat that waited since the user was told, but for those
    /// reported as refused.
    waited: Vec<String>,
    /// Lines of `waited` the library reported as refused.
    refused: usize,
}

impl Outbox {
    fn push(&mut self, line: &str) {
        let line = line.trim_end_matches(['\r', '\n']);
        if !line.trim().is_empty() {
            self.lines.push_back(line.to_owned());
            if self.waiting {
                self.waited.push(line.to_owned());
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.kept.is_empty()
    }

    /// Hands the waiting lines to the library, in order, until one cannot be
    /// sent for now; tells of kept lines refused meanwhile, and, when no line
    /// waits any more, that the others are sent.
    async fn flush(&mut self, client: &Client, group_id: &GroupId) -> anyhow::Result<()> {
        self.hand_over(client, group_id).await?;
        let refused = client.take_refused_submissions(Some(group_id))?;
        self.note_refused(&refused, group_id);
        if self.is_empty() && std::mem::take(&mut self.waiting) {
            if self.refused == 0 {
                eprintln!("the waiting messages are sent");
            } else if !self.waited.is_empty() {
                eprintln!("the other waiting messages are sent");
            }
            self.waited.clear();
            self.refused = 0;
        }
        Ok(())
    }

    async fn hand_over(&mut self, client: &Client, group_id: &GroupId) -> anyhow::Result<()> {
        if !self.kept.is_empty() && self.lines.is_empty() {
            // Sends what the library kept (and fetches what is new, which the
            // listener then shows).
            match client.receive().await {
                Ok(report) => {
                    self.kept.clear();
                    self.note_refused(&report.refused, group_id);
                }
                Err(error) if error.is_transient() => return Ok(()),
                Err(error) => return Err(error.into()),
            }
        }
        while let Some(line) = self.lines.front() {
            match client.send(group_id, line).await {
                // What the library kept went out (or was refused) first.
                Ok(_) => {
                    self.lines.pop_front();
                    self.kept.clear();
                }
                Err(ClientError::NotSentYet { source, .. }) => {
                    if let Some(line) = self.lines.pop_front() {
                        self.kept.push(line);
                    }
                    self.tell_waiting(&source);
                    return Ok(());
                }
                Err(error) if error.is_transient() => {
                    self.tell_waiting(&error);
                    return Ok(());
                }
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }

    /// Tells of refused kept lines (and anything else refused), counting
    /// those of this chat's waiting lines: a refusal of a message kept before
    /// the chat started (by `send`, or an earlier chat) is told, not counted.
    fn note_refused(&mut self, refused: &[RefusedSubmission], group_id: &GroupId) {
        tell_refused(refused, Some(group_id));
        for refusal in refused {
            if &refusal.group_id != group_id {
                continue;
            }
            let Some(text) = &refusal.text else {
                continue;
            };
            if let Some(index) = self.waited.iter().position(|line| line == text) {
                self.waited.remove(index);
                self.refused += 1;
            }
        }
    }

    /// Says once per outage that lines wait, and why.
    fn tell_waiting(&mut self, error: &ClientError) {
        if !std::mem::replace(&mut self.waiting, true) {
            self.waited = self.kept.iter().chain(&self.lines).cloned().collect();
            self.refused = 0;
            eprintln!(
                "not sent yet ({error}); your messages wait and go out in order once sending gets through"
            );
        }
    }

    /// Names, as the chat ends on an error, each line that did not go out:
    /// those never stored are lost with the chat, those the library kept go
    /// out with this device's next command that gets through.
    fn tell_unsent(&self) {
        for line in &self.lines {
            eprintln!("not sent: {line}");
        }
        for line in &self.kept {
            eprintln!(
                "not sent yet, kept (it goes out with the next send, groups, listen, chat or group command): {line}"
            );
        }
    }
}

/// One line on stderr when the listener loses its homeserver and when it is
/// back (stdout carries only messages, for scripts).
fn tell_connection_change(notice: ConnectionNotice) {
    match notice {
        ConnectionNotice::Lost {
            server,
            reason,
            next,
            retry_in,
        } if next == server => eprintln!(
            "connection to {server} lost ({reason}); reconnecting in {:.1} s",
            retry_in.as_secs_f64()
        ),
        ConnectionNotice::Lost {
            server,
            reason,
            next,
            retry_in,
        } => eprintln!(
            "connection to {server} lost ({reason}); reconnecting to {next} in {:.1} s",
            retry_in.as_secs_f64()
        ),
        ConnectionNotice::Restored { server } => eprintln!("reconnected to {server}"),
    }
}

/// The lines of stdin, read on a thread of their own (reading a terminal blocks).
fn stdin_lines() -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if sender.blocking_send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

/// The whole of stdin as the message, without its final line ending.
fn read_stdin_message() -> anyhow::Result<String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("cannot read the message from stdin")?;
    let trimmed = text
        .strip_suffix('\n')
        .map(|text| text.strip_suffix('\r').unwrap_or(text))
        .unwrap_or(&text);
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(group_id: &GroupId, text: &str) -> RefusedSubmission {
        RefusedSubmission {
            group_id: group_id.clone(),
            group_name: "team".to_owned(),
            action: "send a message".to_owned(),
            text: Some(text.to_owned()),
            reason: "refused".to_owned(),
        }
    }

    /// Only refusals of this chat's waiting lines count against them: one of a
    /// message kept before the chat started (or of another group) is told but
    /// does not make the chat's sent lines look refused.
    #[test]
    fn refusals_count_only_the_chats_own_waiting_lines() {
        let chat_group = GroupId::from_bytes(vec![1; 16]);
        let other_group = GroupId::from_bytes(vec![2; 16]);
        let mut outbox = Outbox {
            lines: VecDeque::from(["typed while waiting".to_owned()]),
            kept: vec!["kept by the chat".to_owned()],
            ..Outbox::default()
        };
        outbox.tell_waiting(&ClientError::NotLoggedIn);
        outbox.note_refused(
            &[
                refusal(&chat_group, "kept by an earlier send"),
                refusal(&other_group, "kept by the chat"),
                refusal(&chat_group, "kept by the chat"),
            ],
            &chat_group,
        );
        assert_eq!(outbox.refused, 1);
        assert_eq!(outbox.waited, ["typed while waiting"]);
    }
}
