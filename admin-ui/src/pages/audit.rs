//! The audit log: filtered and paged, and exported as JSON lines.

use crate::console::{Console, Visitor};
use crate::failure::Failure;
use crate::pages::{Layout, Paging, render, with_query};
use crate::{AdminApi, view};
use askama::Template;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;
use conclave_proto::admin::v1::audit_service_server::AuditService;
use conclave_proto::admin::v1::{
    AuditEntry, AuditFilter, ExportAuditLogRequest, ListAuditEntriesRequest,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

const PAGE_SIZE: u32 = 100;

#[derive(Serialize, Deserialize, Default, Clone)]
pub(crate) struct AuditQuery {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    actor: String,
    /// Entries whose action starts with this, e.g. `user.`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    action: String,
    /// `YYYY-MM-DD`: entries from the start of that day (UTC).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    since: String,
    /// `YYYY-MM-DD`: entries up to the end of that day (UTC).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    until: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    page: String,
}

fn parse_day(field: &str, text: &str) -> Result<Option<NaiveDate>, Failure> {
    match text.trim() {
        "" => Ok(None),
        text => NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .map(Some)
            .map_err(|_| {
                Failure::BadInput(format!(
                    "{field} must be a date as YYYY-MM-DD, not {text:?}"
                ))
            }),
    }
}

impl AuditQuery {
    /// The API's filter: `until` names a day, so the bound is the next midnight.
    fn filter(&self) -> Result<AuditFilter, Failure> {
        let since = parse_day("since", &self.since)?;
        let until = parse_day("until", &self.until)?;
        Ok(AuditFilter {
            actor: self.actor.trim().to_owned(),
            action_prefix: self.action.trim().to_owned(),
            since: since.map(view::start_of_day),
            until: until.and_then(|day| day.succ_opt()).map(view::start_of_day),
        })
    }
}

struct EntryView {
    id: u64,
    at: String,
    actor: String,
    action: String,
    target: String,
    address: String,
    succeeded: bool,
    detail: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    layout: Layout,
    query: AuditQuery,
    export_href: String,
    entries: Vec<EntryView>,
    paging: Paging,
}

pub(crate) async fn list<A: AdminApi>(
    State(console): State<Arc<Console<A>>>,
    visitor: Visitor,
    Query(query): Query<AuditQuery>,
) -> Response {
    let result = async {
        let session = visitor.session()?;
        let filter = query.filter()?;
        let response = AuditService::list_audit_entries(
            console.api.as_ref(),
            session.request(ListAuditEntriesRequest {
                filter: Some(filter),
                page_size: PAGE_SIZE,
                page_token: query.page.clone(),
            })?,
        )
        .await?
        .into_inner();
        let link = |path: &str, page: &str| {
            let link = AuditQuery {
                page: page.to_owned(),
                ..query.clone()
            };
            with_query(visitor.path(path), &link)
        };
        let paging = Paging::new(&query.page, &response.next_page_token, |token| {
            link("/audit", token)
        });
        render(&AuditPage {
            layout: Layout::new(&visitor, "Audit log", "audit"),
            export_href: link("/audit/export", ""),
            entries: response
                .entries
                .into_iter()
                .map(|entry| EntryView {
                    at: view::timestamp(entry.at.as_ref()),
                    id: entry.id,
                    actor: entry.actor,
                    action: entry.action,
                    target: entry.target,
                    address: entry.address,
                    succeeded: entry.succeeded,
                    detail: entry.detail,
                })
                .collect(),
            paging,
            query,
        })
    }
    .await;
    visitor.finish(result)
}

/// One entry as a JSON line.
fn json_line(entry: &AuditEntry) -> Bytes {
    let mut line = serde_json::json!({
        "id": entry.id,
        "at": view::rfc3339(entry.at.as_ref()),
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "address": entry.address,
        "succeeded": entry.succeeded,
        "detail": entry.detail,
    })
    .to_string();
    line.push('\n');
    Bytes::from(line)
}

/// Streams the filtered log as `application/x-ndjson`, oldest first, as the
/// API streams it. An error after the first entry can only end the body
/// early (the status is sent): the download is then short, and the server's
/// log says why.
pub(crate) async fn export<A: AdminApi>(
    State(console): State<Arc<Console<A>>>,
    visitor: Visitor,
    Query(query): Query<AuditQuery>,
) -> Response {
    let result = async {
        let session = visitor.session()?;
        let request = session.request(ExportAuditLogRequest {
            filter: Some(query.filter()?),
        })?;
        let entries = AuditService::export_audit_log(console.api.as_ref(), request)
            .await?
            .into_inner();
        let body = entries.map(|entry| match entry {
            Ok(entry) => Ok(json_line(&entry)),
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "audit export ended early");
                Err(std::io::Error::other(status.message().to_owned()))
            }
        });
        Ok((
            [
                (header::CONTENT_TYPE, "application/x-ndjson"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"conclave-audit.ndjson\"",
                ),
            ],
            Body::from_stream(body),
        )
            .into_response())
    }
    .await;
    visitor.finish(result)
}
