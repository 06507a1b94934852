//! `admin audit list` and `admin audit export`: the audit log on the
//! server's host.

use super::{AdminCommandError, print};
use crate::service::Context;
use crate::service::admin::AdminCaller;
use crate::service::admin::export_audit_log::export_audit_log;
use crate::service::admin::list_audit_entries::{MAX_PAGE_SIZE, list_audit_entries};
use crate::service::admin::paging::Page;
use crate::store::{AuditEntryRecord, AuditQuery};

/// `conclave-homeserver admin audit ...`.
#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// The newest entries first, one per line.
    List {
        /// Only entries by this actor (`alice@a.example`, or `operator`).
        #[arg(long)]
        actor: Option<String>,
        /// Only entries whose action starts with this (e.g. `user.`).
        #[arg(long = "action")]
        action_prefix: Option<String>,
        /// At most this many entries.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_PAGE_SIZE)))]
        limit: u32,
        /// One JSON object per entry, one per line.
        #[arg(long)]
        json: bool,
    },
    /// Every entry, oldest first, as JSON lines (the export is itself
    /// audited, as `audit.export`).
    Export {
        /// Only entries by this actor.
        #[arg(long)]
        actor: Option<String>,
        /// Only entries whose action starts with this.
        #[arg(long = "action")]
        action_prefix: Option<String>,
    },
}

pub(super) async fn run(
    context: &Context,
    caller: &AdminCaller,
    command: AuditCommand,
    out: &mut impl std::io::Write,
) -> Result<(), AdminCommandError> {
    match command {
        AuditCommand::List {
            actor,
            action_prefix,
            limit,
            json,
        } => {
            let query = AuditQuery {
                actor,
                action_prefix,
                ..AuditQuery::default()
            };
            let page = Page::parse(limit, "", limit, MAX_PAGE_SIZE)?;
            let (entries, _) = list_audit_entries(context, &query, &page).await?;
            for entry in &entries {
                print(out, json, entry, line(entry))?;
            }
            Ok(())
        }
        AuditCommand::Export {
            actor,
            action_prefix,
        } => {
            let query = AuditQuery {
                actor,
                action_prefix,
                ..AuditQuery::default()
            };
            let mut export = export_audit_log(context, caller, query).await?;
            loop {
                let entries = export.next_chunk(context).await?;
                if entries.is_empty() {
                    return Ok(());
                }
                for entry in &entries {
                    print(out, true, entry, "")?;
                }
            }
        }
    }
}

/// One entry as a line of text.
fn line(entry: &AuditEntryRecord) -> String {
    let at = chrono::DateTime::from_timestamp_millis(entry.at_ms).map_or_else(
        || entry.at_ms.to_string(),
        |at| at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    );
    let outcome = if entry.succeeded { "done" } else { "refused" };
    let address = if entry.address.is_empty() {
        String::new()
    } else {
        format!(" from {}", entry.address)
    };
    let target = if entry.target.is_empty() {
        String::new()
    } else {
        format!(" {}", entry.target)
    };
    format!(
        "{at}  {}{address}  {}{target}  {outcome}: {}",
        entry.actor, entry.action, entry.detail
    )
}
