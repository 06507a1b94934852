//! `conclave.admin.v1.AuditService`: proto <-> domain conversion only.

use super::{AdminApi, authorize};
use crate::grpc::{invalid_argument, timestamp};
use crate::service::admin::export_audit_log::{AuditExport, export_audit_log};
use crate::service::admin::list_audit_entries::{
    DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, list_audit_entries,
};
use crate::service::admin::paging::Page;
use crate::store::{AuditEntryRecord, AuditQuery};
use conclave_proto::admin::v1 as proto;
use conclave_proto::admin::v1::audit_service_server::AuditService;
use futures::{Stream, StreamExt as _};
use std::pin::Pin;
use tonic::{Request, Response, Status};

/// The entries of an export, as they are read.
type EntryStream = Pin<Box<dyn Stream<Item = Result<proto::AuditEntry, Status>> + Send>>;

#[tonic::async_trait]
impl AuditService for AdminApi {
    async fn list_audit_entries(
        &self,
        request: Request<proto::ListAuditEntriesRequest>,
    ) -> Result<Response<proto::ListAuditEntriesResponse>, Status> {
        authorize(&self.context, &request).await?;
        let request = request.into_inner();
        let query = audit_query(request.filter)?;
        let page = Page::parse(
            request.page_size,
            &request.page_token,
            DEFAULT_PAGE_SIZE,
            MAX_PAGE_SIZE,
        )?;
        let (entries, next_page_token) = list_audit_entries(&self.context, &query, &page).await?;
        Ok(Response::new(proto::ListAuditEntriesResponse {
            entries: entries.into_iter().map(entry_to_proto).collect(),
            next_page_token,
        }))
    }

    type ExportAuditLogStream = EntryStream;

    async fn export_audit_log(
        &self,
        request: Request<proto::ExportAuditLogRequest>,
    ) -> Result<Response<EntryStream>, Status> {
        let caller = authorize(&self.context, &request).await?;
        let query = audit_query(request.into_inner().filter)?;
        let export = export_audit_log(&self.context, &caller, query).await?;
        let context = self.context.clone();
        // Chunk by chunk until one comes back empty, or an error ends it.
        let chunks = futures::stream::unfold(Some(export), move |export: Option<AuditExport>| {
            let context = context.clone();
            async move {
                let mut export = export?;
                match export.next_chunk(&context).await {
                    Ok(entries) if entries.is_empty() => None,
                    Ok(entries) => {
                        let entries: Vec<_> = entries
                            .into_iter()
                            .map(|entry| Ok(entry_to_proto(entry)))
                            .collect();
                        Some((entries, Some(export)))
                    }
                    Err(error) => Some((vec![Err(Status::from(error))], None)),
                }
            }
        });
        let entries = chunks.flat_map(futures::stream::iter);
        Ok(Response::new(Box::pin(entries)))
    }
}

/// The request's filter; an unset filter, and empty fields, filter nothing.
fn audit_query(filter: Option<proto::AuditFilter>) -> Result<AuditQuery, Status> {
    let filter = filter.unwrap_or_default();
    let non_empty = |text: String| Some(text).filter(|text| !text.is_empty());
    Ok(AuditQuery {
        actor: non_empty(filter.actor),
        action_prefix: non_empty(filter.action_prefix),
        since_ms: filter
            .since
            .map(|at| unix_ms(at, "filter.since"))
            .transpose()?,
        until_ms: filter
            .until
            .map(|at| unix_ms(at, "filter.until"))
            .transpose()?,
    })
}

/// A timestamp in milliseconds since the Unix epoch, or INVALID_ARGUMENT
/// naming `field`.
fn unix_ms(at: prost_types::Timestamp, field: &str) -> Result<i64, Status> {
    if !(0..1_000_000_000).contains(&at.nanos) {
        return Err(invalid_argument(format!(
            "{field} has nanos {}, which is not between 0 and 999999999",
            at.nanos
        )));
    }
    at.seconds
        .checked_mul(1000)
        .and_then(|ms| ms.checked_add(i64::from(at.nanos / 1_000_000)))
        .ok_or_else(|| invalid_argument(format!("{field} is out of range")))
}

fn entry_to_proto(entry: AuditEntryRecord) -> proto::AuditEntry {
    proto::AuditEntry {
        id: entry.id,
        at: Some(timestamp(entry.at_ms)),
        actor: entry.actor,
        action: entry.action,
        target: entry.target,
        address: entry.address,
        succeeded: entry.succeeded,
        detail: entry.detail,
    }
}
