//! The front page: the domain's counts, the warnings an operator should act
//! on, and the peers' health.

use crate::console::{Console, Session, Visitor};
use crate::failure::Failure;
use crate::pages::federation::PeerView;
use crate::pages::{Layout, render};
use crate::{AdminApi, view};
use askama::Template;
use axum::extract::State;
use axum::response::Response;
use conclave_proto::admin::v1::admin_session_service_server::AdminSessionService;
use conclave_proto::admin::v1::federation_admin_service_server::FederationAdminService;
use conclave_proto::admin::v1::{GetOverviewRequest, ListPeersRequest, Overview};
use std::sync::Arc;

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    layout: Layout,
    overview: Overview,
    warnings: Vec<WarningView>,
    peers: Vec<PeerView>,
    /// The peers' table without the doctor's buttons (they are on the federation page).
    doctor: bool,
}

struct WarningView {
    severity: &'static str,
    message: String,
    /// A console path; only paths under the console are linked.
    page: Option<String>,
}

pub(crate) async fn show<A: AdminApi>(
    State(console): State<Arc<Console<A>>>,
    visitor: Visitor,
) -> Response {
    let result = async {
        let session = visitor.session()?;
        page(&console, &visitor, &session).await
    }
    .await;
    visitor.finish(result)
}

async fn page<A: AdminApi>(
    console: &Console<A>,
    visitor: &Visitor,
    session: &Session,
) -> Result<Response, Failure> {
    let api = console.api.as_ref();
    let overview = AdminSessionService::get_overview(api, session.request(GetOverviewRequest {})?)
        .await?
        .into_inner();
    let peers = FederationAdminService::list_peers(api, session.request(ListPeersRequest {})?)
        .await?
        .into_inner()
        .peers;
    let base = &visitor.settings.base_path;
    let warnings = overview
        .warnings
        .iter()
        .map(|warning| WarningView {
            severity: view::severity(warning.severity),
            message: warning.message.clone(),
            // The API names pages as `/admin/...`; link them under wherever
            // the console is mounted.
            page: warning
                .page
                .strip_prefix("/admin")
                .filter(|rest| rest.is_empty() || rest.starts_with('/'))
                .map(|rest| format!("{base}{rest}")),
        })
        .collect();
    render(&OverviewPage {
        layout: Layout::new(
            visitor,
            &format!("Overview of {}", overview.domain),
            "overview",
        ),
        warnings,
        peers: peers.iter().map(PeerView::from).collect(),
        doctor: false,
        overview,
    })
}
