//! Federation: the peers and their delivery, the federation doctor per peer,
//! and the check of this homeserver's own certificate.

use crate::console::{Console, Posted, Session, Visitor};
use crate::failure::Failure;
use crate::pages::{Layout, render};
use crate::{AdminApi, view};
use askama::Template;
use axum::extract::State;
use axum::response::Response;
use conclave_proto::admin::v1::federation_admin_service_server::FederationAdminService;
use conclave_proto::admin::v1::{
    CheckOwnCertificateRequest, DoctorReport, ListPeersRequest, Peer, RunDoctorRequest,
};
use std::sync::Arc;

/// A peer as its row shows it.
pub(crate) struct PeerView {
    pub(crate) domain: String,
    pub(crate) configured: bool,
    pub(crate) endpoint: String,
    pub(crate) last_success: String,
    pub(crate) last_error: String,
    pub(crate) last_error_at: String,
    pub(crate) consecutive_failures: u64,
    pub(crate) outbox_depth: u64,
    pub(crate) oldest_pending: String,
    pub(crate) outbox_owner: String,
    /// No failed delivery since the last success.
    pub(crate) healthy: bool,
}

impl From<&Peer> for PeerView {
    fn from(peer: &Peer) -> Self {
        PeerView {
            domain: peer.domain.clone(),
            configured: peer.configured,
            endpoint: peer.endpoint.clone(),
            last_success: view::timestamp(peer.last_success_at.as_ref()),
            last_error: peer.last_error.clone(),
            last_error_at: view::timestamp_or(peer.last_error_at.as_ref(), ""),
            consecutive_failures: peer.consecutive_failures,
            outbox_depth: peer.outbox_depth,
            oldest_pending: view::timestamp_or(peer.oldest_pending_at.as_ref(), "none pending"),
            outbox_owner: peer.outbox_owner.clone(),
            healthy: peer.consecutive_failures == 0,
        }
    }
}

/// The doctor's findings as the page shows them.
pub(crate) struct ReportView {
    /// What was checked: a peer's domain, or "this homeserver's certificate".
    subject: String,
    endpoint: String,
    checked_at: String,
    healthy: bool,
    checks: Vec<CheckView>,
}

struct CheckView {
    name: String,
    /// `pass`, `warn`, `fail` or `skipped`.
    outcome: &'static str,
    detail: String,
    duration_ms: u32,
}

impl ReportView {
    fn new(report: DoctorReport, subject: String) -> ReportView {
        ReportView {
            subject,
            endpoint: report.endpoint,
            checked_at: view::timestamp(report.checked_at.as_ref()),
            healthy: report.healthy,
            checks: report
                .checks
                .into_iter()
                .map(|check| CheckView {
                    outcome: view::check_outcome(check.outcome),
                    name: check.name,
                    detail: check.detail,
                    duration_ms: check.duration_ms,
                })
                .collect(),
        }
    }
}

#[derive(Template)]
#[template(path = "federation.html")]
struct FederationPage {
    layout: Layout,
    peers: Vec<PeerView>,
    /// The peers' table with the doctor's buttons.
    doctor: bool,
    report: Option<ReportView>,
}

/// The report alone, swapped into the page by htmx.
#[derive(Template)]
#[template(path = "doctor_fragment.html")]
struct DoctorFragment {
    report: ReportView,
}

pub(crate) async fn peers<A: AdminApi>(
    State(console): State<Arc<Console<A>>>,
    visitor: Visitor,
) -> Response {
    let result = async {
        let session = visitor.session()?;
        page(&console, &visitor, &session, None).await
    }
    .await;
    visitor.finish(result)
}

async fn page<A: AdminApi>(
    console: &Console<A>,
    visitor: &Visitor,
    session: &Session,
    report: Option<ReportView>,
) -> Result<Response, Failure> {
    let peers = FederationAdminService::list_peers(
        console.api.as_ref(),
        session.request(ListPeersRequest {})?,
    )
    .await?
    .into_inner()
    .peers;
    render(&FederationPage {
        layout: Layout::new(visitor, "Federation", "federation"),
        peers: peers.iter().map(PeerView::from).collect(),
        doctor: true,
        report,
    })
}

/// The report as a fragment for htmx, or the whole page with it. This POST
/// answers with the page rather than a redirect: the report exists only in
/// this response (the doctor is audited, and run again on each POST).
async fn show_report<A: AdminApi>(
    console: &Console<A>,
    visitor: &Visitor,
    session: &Session,
    report: ReportView,
) -> Result<Response, Failure> {
    if visitor.htmx && !visitor.boosted {
        render(&DoctorFragment { report })
    } else {
        page(console, visitor, session, Some(report)).await
    }
}

#[derive(serde::Deserialize)]
pub(crate) struct DoctorForm {
    domain: String,
}

pub(crate) async fn doctor<A: AdminApi>(
    State(console): State<Arc<Console<A>>>,
    posted: Posted<DoctorForm>,
) -> Response {
    let Posted {
        visitor,
        session,
        form,
    } = posted;
    let result = async {
        let report = FederationAdminService::run_doctor(
            console.api.as_ref(),
            session.request(RunDoctorRequest {
                domain: form.domain,
            })?,
        )
        .await?
        .into_inner();
        let subject = report.domain.clone();
        show_report(
            &console,
            &visitor,
            &session,
            ReportView::new(report, subject),
        )
        .await
    }
    .await;
    visitor.finish(result)
}

pub(crate) async fn own_certificate<A: AdminApi>(
    State(console): State<Arc<Console<A>>>,
    posted: Posted<super::login::NoFields>,
) -> Response {
    let Posted {
        visitor, session, ..
    } = posted;
    let result = async {
        let report = FederationAdminService::check_own_certificate(
            console.api.as_ref(),
            session.request(CheckOwnCertificateRequest {})?,
        )
        .await?
        .into_inner();
        let subject = format!("this homeserver's certificate ({})", report.domain);
        show_report(
            &console,
            &visitor,
            &session,
            ReportView::new(report, subject),
        )
        .await
    }
    .await;
    visitor.finish(result)
}
