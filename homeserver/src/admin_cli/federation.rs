//! `conclave-homeserver admin federation ...`: the peers (as
//! `federation status` shows them: the same function, the same text), the
//! federation doctor against one peer, and the checks of our own
//! certificate. The doctor's commands print the report and exit with 1 when
//! a check failed (warnings do not count), so scripts can watch a peer.

use super::{AdminCommandError, print};
use crate::admin::PeerOutboxStatus;
use crate::rules::federation_doctor::DoctorReport;
use crate::service::Context;
use crate::service::admin::AdminCaller;
use crate::service::admin::check_own_certificate::check_own_certificate;
use crate::service::admin::federation_doctor::run_doctor;
use crate::service::admin::list_peers::list_peers;
use std::io::Write;

/// `conclave-homeserver admin federation ...`.
#[derive(Debug, clap::Subcommand)]
pub enum FederationCommand {
    /// List every configured peer and every domain an outbox holds events
    /// for: endpoint, last success and error, outbox depth and its oldest
    /// event, the replica sending to it.
    Peers {
        /// One JSON object per peer, one per line.
        #[arg(long)]
        json: bool,
    },
    /// Run the federation doctor against a configured peer: connect, TLS
    /// handshake, certificate chain, name, pin and expiry, clock skew and
    /// protocol version, each reported on its own. Exits with 1 if a check
    /// failed.
    Doctor {
        /// The peer's domain, as in [federation.peers].
        domain: String,
        /// The report as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Check this homeserver's own federation certificate: readable, key
    /// matches, chains to the trust roots, valid for the domain, usable for
    /// TLS server and client authentication, expiry. Exits with 1 if a check
    /// failed.
    CheckCertificate {
        /// The report as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

pub(super) async fn run(
    context: &Context,
    caller: &AdminCaller,
    command: FederationCommand,
    out: &mut impl Write,
) -> Result<(), AdminCommandError> {
    match command {
        FederationCommand::Peers { json } => {
            let peers = list_peers(context).await?;
            write_peers(out, &peers, json, context.now_ms())?;
            Ok(())
        }
        FederationCommand::Doctor { domain, json } => {
            let report = run_doctor(context, caller, &domain).await?;
            write_report(out, &report, json)
        }
        FederationCommand::CheckCertificate { json } => {
            let report = check_own_certificate(context, caller).await?;
            write_report(out, &report, json)
        }
    }
}

/// The report as JSON: its fields and whether it is healthy.
#[derive(serde::Serialize)]
struct ReportJson<'a> {
    #[serde(flatten)]
    report: &'a DoctorReport,
    healthy: bool,
}

/// Prints `report`; a failed check makes the command fail (exit 1).
fn write_report(
    out: &mut impl Write,
    report: &DoctorReport,
    json: bool,
) -> Result<(), AdminCommandError> {
    let healthy = report.healthy();
    let mut text = match report.endpoint.as_str() {
        "" => format!("{} (our certificate): {}", report.domain, report.summary()),
        endpoint => format!("{} at {endpoint}: {}", report.domain, report.summary()),
    };
    for check in &report.checks {
        text.push_str(&format!(
            "\n  {:<8} {:<21} {}",
            check.outcome.label(),
            check.name,
            check.detail
        ));
    }
    print(out, json, &ReportJson { report, healthy }, text)?;
    if healthy {
        Ok(())
    } else {
        let failed = report
            .checks
            .iter()
            .filter(|check| check.outcome == crate::rules::federation_doctor::CheckOutcome::Fail)
            .count();
        Err(AdminCommandError::ChecksFailed(failed))
    }
}

/// Prints the peers as `federation status` and `admin federation peers` show
/// them: one JSON object per line, or a block of text per peer. `now_ms`
/// tells a live outbox lease from an expired one.
pub fn write_peers(
    out: &mut impl Write,
    peers: &[PeerOutboxStatus],
    json: bool,
    now_ms: i64,
) -> std::io::Result<()> {
    if json {
        for peer in peers {
            serde_json::to_writer(&mut *out, peer)?;
            writeln!(out)?;
        }
        return Ok(());
    }
    if peers.is_empty() {
        return writeln!(out, "no federation peers are configured or recorded");
    }
    let time = |at_ms: Option<i64>| {
        at_ms
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map_or_else(
                || "never".to_owned(),
                |at| at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            )
    };
    for peer in peers {
        let configured = if peer.configured {
            ""
        } else {
            " (not configured)"
        };
        writeln!(out, "{}{configured}", peer.domain)?;
        if let Some(endpoint) = &peer.endpoint {
            writeln!(out, "  endpoint:      {endpoint}")?;
        }
        writeln!(out, "  outbox depth:  {} events", peer.outbox_depth)?;
        if peer.oldest_pending_at_ms.is_some() {
            writeln!(out, "  oldest event:  {}", time(peer.oldest_pending_at_ms))?;
        }
        writeln!(out, "  last success:  {}", time(peer.last_success_at_ms))?;
        match &peer.last_error {
            Some(error) => writeln!(
                out,
                "  last error:    {} ({error})",
                time(peer.last_error_at_ms)
            )?,
            None => writeln!(out, "  last error:    none")?,
        }
        if peer.consecutive_failures > 0 {
            writeln!(
                out,
                "  failing:       {} attempt(s) since the last success",
                peer.consecutive_failures
            )?;
        }
        match (&peer.outbox_owner, peer.outbox_lease_expires_at_ms) {
            (Some(owner), Some(expires_at_ms)) => {
                let state = if expires_at_ms < now_ms {
                    "expired"
                } else {
                    "until"
                };
                writeln!(
                    out,
                    "  sender:        replica {owner} (lease {state} {})",
                    time(Some(expires_at_ms))
                )?;
            }
            _ => writeln!(
                out,
                "  sender:        none (no replica holds the outbox's lease)"
            )?,
        }
    }
    Ok(())
}
