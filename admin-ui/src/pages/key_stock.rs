//! Devices low on key packages, emptiest first.

use crate::console::{Console, Visitor};
use crate::failure::Failure;
use crate::pages::{Layout, Paging, render, with_query};
use crate::{AdminApi, view};
use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use conclave_proto::admin::v1::ListLowKeyPackageStockRequest;
use conclave_proto::admin::v1::user_admin_service_server::UserAdminService;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

const PAGE_SIZE: u32 = 50;

struct StockView {
    user_id: String,
    user_href: String,
    device_id: String,
    display_name: String,
    key_packages: u32,
    has_last_resort: bool,
    last_seen: String,
}

#[derive(Serialize, Deserialize, Default)]
pub(crate) struct StockQuery {
    /// Empty for the server's own low-stock threshold.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    threshold: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    page: String,
}

#[derive(Template)]
#[template(path = "key_stock.html")]
struct StockPage {
    layout: Layout,
    threshold: u32,
    devices: Vec<StockView>,
    paging: Paging,
}

pub(crate) async fn list<A: AdminApi>(
    State(console): State<Arc<Console<A>>>,
    visitor: Visitor,
    Query(query): Query<StockQuery>,
) -> Response {
    let result = async {
        let session = visitor.session()?;
        let threshold = match query.threshold.trim() {
            "" => 0,
            text => text.parse().map_err(|_| {
                Failure::BadInput(format!("threshold must be a whole number, not {text:?}"))
            })?,
        };
        let response = UserAdminService::list_low_key_package_stock(
            console.api.as_ref(),
            session.request(ListLowKeyPackageStockRequest {
                threshold,
                page_size: PAGE_SIZE,
                page_token: query.page.clone(),
            })?,
        )
        .await?
        .into_inner();
        let paging = Paging::new(&query.page, &response.next_page_token, |token| {
            let link = StockQuery {
                threshold: query.threshold.clone(),
                page: token.to_owned(),
            };
            with_query(visitor.path("/key-stock"), &link)
        });
        let devices = response
            .devices
            .into_iter()
            .map(|stock| {
                let device = stock.device.unwrap_or_default();
                StockView {
                    user_href: visitor.path(&format!("/users/{}", view::segment(&stock.user_id))),
                    user_id: stock.user_id,
                    device_id: device.device_id,
                    display_name: device.display_name,
                    key_packages: device.key_packages,
                    has_last_resort: device.has_last_resort,
                    last_seen: view::timestamp(device.last_seen_at.as_ref()),
                }
            })
            .collect();
        render(&StockPage {
            layout: Layout::new(&visitor, "Key-package stock", "key-stock"),
            threshold: response.threshold,
            devices,
            paging,
        })
    }
    .await;
    visitor.finish(result)
}
