//! `conclave-homeserver admin tokens ...`: registration tokens, made, listed
//! and revoked through the same use cases as the admin API.

use super::groups::time;
use super::{AdminCommandError, print};
use crate::service::Context;
use crate::service::admin::AdminCaller;
use crate::service::admin::create_registration_token::create_registration_token;
use crate::service::admin::list_registration_tokens::{MAX_PAGE_SIZE, list_registration_tokens};
use crate::service::admin::registration_token_view::RegistrationTokenView;
use crate::service::admin::revoke_registration_token::revoke_registration_token;

/// `admin tokens ...`.
#[derive(Debug, clap::Subcommand)]
pub enum TokensCommand {
    /// Create a token and print it (it is shown only this once; with
    /// `--json`, with its record).
    Create {
        /// How many registrations it allows (1 to 1,000,000).
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// Days until it expires (1 to 3650); 0 for never.
        #[arg(long, default_value_t = 0)]
        valid_days: u32,
        /// The token and its record as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// List tokens, newest first: those still usable, or with `--all` every
    /// one (used up, expired and revoked too).
    List {
        /// Spent, expired and revoked tokens too.
        #[arg(long)]
        all: bool,
        /// One JSON object per token, one per line.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token: no registration can use it from now on.
    Revoke {
        /// The token's id (from `admin tokens list`).
        id: u64,
        /// The revoked token's record as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

pub(super) async fn run(
    context: &Context,
    caller: &AdminCaller,
    command: TokensCommand,
    out: &mut impl std::io::Write,
) -> Result<(), AdminCommandError> {
    match command {
        TokensCommand::Create {
            uses,
            valid_days,
            json,
        } => {
            let created = create_registration_token(context, caller, uses, valid_days).await?;
            print(out, json, &created, &created.token)
        }
        TokensCommand::List { all, json } => {
            let mut page_token = String::new();
            loop {
                let page =
                    list_registration_tokens(context, all, MAX_PAGE_SIZE, &page_token).await?;
                for token in &page.registration_tokens {
                    print(out, json, token, token_line(token))?;
                }
                if page.next_page_token.is_empty() {
                    return Ok(());
                }
                page_token = page.next_page_token;
            }
        }
        TokensCommand::Revoke { id, json } => {
            let revoked = revoke_registration_token(context, caller, id).await?;
            print(
                out,
                json,
                &revoked,
                format!("registration token {id} is revoked"),
            )
        }
    }
}

/// `7  usable  3 of 5 uses left  expires 2026-12-10 10:00:00 UTC  by operator`
fn token_line(token: &RegistrationTokenView) -> String {
    let state = serde_json::to_value(token.state)
        .ok()
        .and_then(|state| state.as_str().map(str::to_owned))
        .unwrap_or_default();
    format!(
        "{}  {state}  {} of {} uses left  expires {}  by {}",
        token.id,
        token.uses_remaining,
        token.uses_allowed,
        time(token.expires_at_ms),
        token.created_by
    )
}
