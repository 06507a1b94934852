//! The group and message commands: bring the device up to date, resolve the
//! GROUP argument (a name or a hex id), call the library, describe the result;
//! and the `listen` and `chat` loops, which print as messages arrive.

use std::io::{BufRead, Read};
use std::time::Duration;

use anyhow::{Context, bail};
use conclave_client::{Client, ConnectionNotice, GroupId};
use tokio::sync::mpsc;

use crate::args::GroupCommand;
use crate::group_output;
use crate::output::Report;

pub(crate) async fn group(client: &Client, action: GroupCommand) -> anyhow::Result<Report> {
    client.receive().await?;
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

pub(crate) async fn groups(client: &Client) -> anyhow::Result<Report> {
    client.receive().await?;
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
    client.receive().await?;
    let group_id = client.find_group(group)?;
    Ok(group_output::sent(&client.send(&group_id, &text).await?))
}

/// Prints messages as they arrive until `count` are printed or `timeout`
/// seconds passed (an error if a count was asked for and not reached).
pub(crate) async fn listen(
    client: &Client,
    group: Option<&str>,
    timeout: Option<u64>,
    count: Option<u64>,
    as_json: bool,
) -> anyhow::Result<Report> {
    client.receive().await?;
    let group_id = group.map(|group| client.find_group(group)).transpose()?;
    let mut listener = client
        .listen(group_id)
        .on_connection_change(tell_connection_change);
    let deadline =
        timeout.map(|seconds| tokio::time::Instant::now() + Duration::from_secs(seconds));
    let mut printed = 0;
    while count.is_none_or(|count| printed < count) {
        let message = match deadline {
            None => listener.next().await?,
            Some(deadline) => match tokio::time::timeout_at(deadline, listener.next()).await {
                Ok(message) => message?,
                Err(_) => match (count, timeout) {
                    (Some(count), Some(seconds)) => bail!(
                        "timed out after {seconds} seconds with {printed} of {count} messages"
                    ),
                    _ => break,
                },
            },
        };
        println!("{}", group_output::message_line(&message, as_json));
        printed += 1;
    }
    Ok(Report::printed_already())
}

/// Sends each line typed on stdin to the group and prints incoming messages,
/// until stdin ends.
pub(crate) async fn chat(client: &Client, group: &str, as_json: bool) -> anyhow::Result<Report> {
    client.receive().await?;
    let group_id = client.find_group(group)?;
    let name = client.group(&group_id)?.name;
    let mut lines = stdin_lines();
    let mut listener = client
        .listen(Some(group_id.clone()))
        .on_connection_change(tell_connection_change);
    if !as_json {
        eprintln!("chatting in {name}; type a line to send it, end with Ctrl-D");
    }
    loop {
        tokio::select! {
            line = lines.recv() => match line {
                Some(line) => send_line(client, &group_id, &line).await?,
                None => break,
            },
            message = listener.next() => {
                println!("{}", group_output::message_line(&message?, as_json));
            }
        }
    }
    Ok(Report::printed_already())
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
        } => eprintln!(
            "connection to {server} lost ({reason}); reconnecting to {next} in {:.1} s",
            retry_in.as_secs_f64()
        ),
        ConnectionNotice::Restored { server } => eprintln!("reconnected to {server}"),
    }
}

async fn send_line(client: &Client, group_id: &GroupId, line: &str) -> anyhow::Result<()> {
    let line = line.trim_end_matches(['\r', '\n']);
    if !line.trim().is_empty() {
        client.send(group_id, line).await?;
    }
    Ok(())
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
