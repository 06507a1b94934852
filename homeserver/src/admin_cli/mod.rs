//! `conclave-homeserver admin ...`: the admin API's actions on the server's
//! host, for the operator. Each command opens the database, builds a
//! [`Context`] and calls the same `service::admin` use case as the API and
//! the console, as [`AdminCaller::operator`] (audited as `operator`). A
//! command prints only its result on stdout, as text or, with `--json`, one
//! JSON object per line; its errors go to stderr through `main`.
//!
//! # Layout
//! One file per area: `role` (grant and revoke the admin role), `audit` (list
//! and export the audit log), `users` (accounts, devices, key-package stock),
//! `federation` (peers, the doctor, our own certificate), and one per
//! area of the admin API as it comes (`users`, `devices`, `tokens`,
//! `groups`, `federation`, `audit`).

mod audit;
mod federation;
mod groups;
mod role;
mod tokens;

pub use groups::GroupsCommand;
pub use tokens::TokensCommand;
mod users;

pub use audit::AuditCommand;
pub use federation::{FederationCommand, write_peers};
pub use users::{DevicesCommand, KeyStockArgs, UsersCommand};

use crate::config::Config;
use crate::service::admin::{AdminCaller, AdminError};
use crate::service::{Clock, Context};
use crate::store::{Store, StoreError};
use std::sync::Arc;

/// `conclave-homeserver admin ...`.
#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// Give an account of this domain the admin role: it can then log in to
    /// the admin API and the web console (/admin) with its password.
    Grant {
        /// The account: `alice` or `alice@<this domain>`.
        user: String,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Take the admin role away; the account's admin sessions end at once.
    Revoke {
        /// The account: `alice` or `alice@<this domain>`.
        user: String,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Read the audit log of administration.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Registration tokens: create, list, revoke.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Groups hosted here and this domain's copies of others': list, inspect.
    #[command(subcommand)]
    Groups(GroupsCommand),
    /// Accounts: list, show, suspend, unsuspend, deactivate.
    #[command(subcommand)]
    Users(UsersCommand),
    /// An account's devices: list, revoke.
    #[command(subcommand)]
    Devices(DevicesCommand),
    /// Devices low on key packages, emptiest first.
    KeyStock(KeyStockArgs),
    /// Federation: the peers, the doctor, our own certificate.
    #[command(subcommand)]
    Federation(FederationCommand),
}

/// Why an admin command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminCommandError {
    /// The action was refused, or failed; the message says why.
    #[error("{0}")]
    Refused(String),
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The result could not be written to stdout.
    #[error("cannot write the result: {0}")]
    Output(#[from] std::io::Error),
    /// The federation doctor ran, and this many checks failed (its report is
    /// on stdout).
    #[error("{0} check(s) failed")]
    ChecksFailed(usize),
}

impl From<AdminError> for AdminCommandError {
    fn from(error: AdminError) -> AdminCommandError {
        match error {
            AdminError::Store(store) => AdminCommandError::Store(store),
            other => AdminCommandError::Refused(other.to_string()),
        }
    }
}

/// Runs `command` against the database of `config`, applying pending
/// migrations first (as `registration-token create` does), with `clock` as
/// the time of the audit log's entries.
pub async fn run(
    config: Config,
    clock: Arc<dyn Clock>,
    command: AdminCommand,
) -> Result<(), AdminCommandError> {
    let store = Store::connect(&config.database.url, 1).await?;
    store.migrate().await?;
    let context = Context::new(store.clone(), config, clock);
    let caller = AdminCaller::operator();
    let mut stdout = std::io::stdout().lock();
    let result = match command {
        AdminCommand::Grant { user, json } => {
            role::grant(&context, &caller, &user, json, &mut stdout).await
        }
        AdminCommand::Revoke { user, json } => {
            role::revoke(&context, &caller, &user, json, &mut stdout).await
        }
        AdminCommand::Audit(command) => audit::run(&context, &caller, command, &mut stdout).await,
        AdminCommand::Tokens(command) => tokens::run(&context, &caller, command, &mut stdout).await,
        AdminCommand::Groups(command) => groups::run(&context, command, &mut stdout).await,
        AdminCommand::Users(command) => {
            users::run_users(&context, &caller, command, &mut stdout).await
        }
        AdminCommand::Devices(command) => {
            users::run_devices(&context, &caller, command, &mut stdout).await
        }
        AdminCommand::KeyStock(arguments) => {
            users::run_key_stock(&context, arguments, &mut stdout).await
        }
        AdminCommand::Federation(command) => {
            federation::run(&context, &caller, command, &mut stdout).await
        }
    };
    store.close().await?;
    result
}

/// Writes `value` as one JSON line, or `text` as it is, followed by a newline.
fn print(
    out: &mut impl std::io::Write,
    json: bool,
    value: &impl serde::Serialize,
    text: impl std::fmt::Display,
) -> Result<(), AdminCommandError> {
    if json {
        serde_json::to_writer(&mut *out, value).map_err(std::io::Error::from)?;
        writeln!(out)?;
    } else {
        writeln!(out, "{text}")?;
    }
    Ok(())
}
