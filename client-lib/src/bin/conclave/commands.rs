//! Each command: gather what it needs (server, password), call the library, and
//! describe the result.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use conclave_client::{Client, ServerUrl};

use crate::args::{Cli, Command, DeviceArgs, DevicesCommand, KeysCommand, PasswordArgs};
use crate::messaging;
use crate::output::{self, Report};
use crate::password::{self, Confirm};

/// Longest device name the homeserver accepts.
const MAX_DEVICE_NAME_CHARS: usize = 64;

pub(crate) async fn run(cli: Cli) -> anyhow::Result<Report> {
    let state_dir = state_dir(cli.state)?;
    let servers = cli.server;
    let explicit_server = servers.first().cloned();
    refuse_without_state(&state_dir, &cli.command, explicit_server.is_some())?;
    let client = Client::open(&state_dir)?
        .with_server_endpoints(servers.clone())
        .with_ca_files(&cli.ca_file)?;
    match cli.command {
        Command::Register {
            user,
            registration_token,
            device,
            password,
        } => {
            let server_url = server_for_enrolment(&client, explicit_server)?;
            refuse_if_logged_in(&client)?;
            let password = read_password(&password, Confirm::Twice)?;
            choose_history(&client, &device)?;
            let enrolment = client
                .register(
                    &server_url,
                    user.as_str(),
                    &password,
                    registration_token,
                    &device_name(device),
                )
                .await?;
            Ok(output::enrolment("registered", &enrolment))
        }
        Command::Login {
            user,
            device,
            password,
        } => {
            let server_url = server_for_enrolment(&client, explicit_server)?;
            refuse_if_logged_in(&client)?;
            let password = read_password(&password, Confirm::Once)?;
            choose_history(&client, &device)?;
            let enrolment = client
                .login(&server_url, &user, &password, &device_name(device))
                .await?;
            Ok(output::enrolment("logged in", &enrolment))
        }
        command => {
            check_session_server(&client, &servers)?;
            run_with_session(&client, command, cli.json).await
        }
    }
}

/// Commands that act through the stored session.
async fn run_with_session(
    client: &Client,
    command: Command,
    as_json: bool,
) -> anyhow::Result<Report> {
    Ok(match command {
        Command::Logout => output::logout(&client.logout().await?),
        Command::Whoami => output::whoami(&client.whoami().await?),
        Command::Devices { action: None } => output::devices(&client.devices().await?),
        Command::Devices {
            action: Some(DevicesCommand::Remove { device_id }),
        } => {
            let shared = client.remove_device(&device_id).await?;
            output::device_removed(device_id.as_str(), &shared)
        }
        Command::Keys { action } => match action {
            KeysCommand::Publish { count } => {
                output::published(&client.publish_key_packages(usize::from(count)).await?)
            }
            KeysCommand::Status => output::stock(&client.key_package_status().await?),
            KeysCommand::Claim { user_id } => {
                let packages = client.claim_key_packages(&user_id).await?;
                output::claimed(&user_id, &packages)
            }
        },
        Command::Group { action } => messaging::group(client, action).await?,
        Command::Groups => messaging::groups(client).await?,
        Command::Send { group, text } => messaging::send(client, &group, text).await?,
        Command::Listen {
            group,
            timeout,
            count,
        } => messaging::listen(client, group.as_deref(), timeout, count, as_json).await?,
        Command::Chat { group } => messaging::chat(client, &group, as_json).await?,
        Command::History {
            group,
            limit,
            before,
        } => messaging::history(client, &group, limit, before)?,
        Command::Settings { history: None } => {
            output::history_setting(client.keeps_history()?, None)
        }
        Command::Settings {
            history: Some(keep),
        } => {
            let forgotten = client.set_keeps_history(keep)?;
            output::history_setting(keep, Some(forgotten))
        }
        Command::Register { .. }
        | Command::Login { .. }
        | Command::Completions { .. }
        | Command::Man { .. } => {
            bail!("internal error: this command is handled before this point")
        }
    })
}

/// Only `register` and `login` (with a server to enrol on) create a state
/// directory: any other command, or one bound to fail, on a directory
/// without state leaves the disk as it was.
fn refuse_without_state(
    state_dir: &Path,
    command: &Command,
    server_given: bool,
) -> anyhow::Result<()> {
    if state_dir.join(conclave_client::STATE_FILE_NAME).is_file() {
        return Ok(());
    }
    match command {
        Command::Register { .. } | Command::Login { .. } if server_given => Ok(()),
        Command::Register { .. } | Command::Login { .. } => {
            bail!("no server known: pass --server URL once")
        }
        _ => bail!(
            "not logged in: no device state in {}; run `conclave register` or `conclave login` first",
            state_dir.display()
        ),
    }
}

/// `--no-history` at register or login: stop keeping history before the first
/// message can arrive.
fn choose_history(client: &Client, device: &DeviceArgs) -> anyhow::Result<()> {
    if device.no_history {
        client.set_keeps_history(false)?;
    }
    Ok(())
}

/// Refuses before asking for a password that would not be used (the library
/// refuses too, but only once it has the password).
fn refuse_if_logged_in(client: &Client) -> anyhow::Result<()> {
    if let Some(session) = client.session()? {
        bail!("already logged in as {}; log out first", session.user_id());
    }
    Ok(())
}

/// `--state`, else `~/.local/share/conclave`.
fn state_dir(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = explicit {
        return Ok(dir);
    }
    let home = std::env::var_os("HOME")
        .filter(|home| !home.is_empty())
        .context("no state directory: pass --state DIR, or set CONCLAVE_STATE or HOME")?;
    Ok(Path::new(&home).join(".local/share/conclave"))
}

/// The server to register or log in on: `--server`/`$CONCLAVE_SERVER`, else the
/// one remembered from last time.
fn server_for_enrolment(client: &Client, explicit: Option<ServerUrl>) -> anyhow::Result<ServerUrl> {
    match explicit {
        Some(server_url) => Ok(server_url),
        None => client
            .remembered_server_url()?
            .context("no server known: pass --server URL once"),
    }
}

/// A session always talks to the homeserver it was enrolled on; `--server`
/// addresses that do not include the one it was enrolled at are a mistake
/// worth stopping for rather than silently ignoring. (The other addresses
/// given are taken to be replicas of the same homeserver.)
fn check_session_server(client: &Client, explicit: &[ServerUrl]) -> anyhow::Result<()> {
    if let Some(session) = client.session()?
        && !explicit.is_empty()
        && !explicit.contains(&session.server_url)
    {
        let given: Vec<String> = explicit.iter().map(ToString::to_string).collect();
        bail!(
            "this device is logged in on {}, not {}; log out first to use another server",
            session.server_url,
            given.join(", ")
        );
    }
    Ok(())
}

fn read_password(args: &PasswordArgs, confirm: Confirm) -> anyhow::Result<String> {
    password::obtain(
        args.password_file.as_deref(),
        std::env::var(password::PASSWORD_ENV).ok(),
        confirm,
    )
}

/// `--device-name`, else the host name (a label for the user's device list, so
/// a missing or odd host name just leaves it empty).
fn device_name(args: DeviceArgs) -> String {
    if let Some(name) = args.device_name {
        return name;
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .and_then(|name| conclave_core::ids::normalize_display_text(name.trim()).ok())
        .filter(|name| name.chars().count() <= MAX_DEVICE_NAME_CHARS)
        .unwrap_or_default()
}
