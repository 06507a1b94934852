//! Devices low on key packages, emptiest first, a page at a time: the devices
//! `conclave_devices_low_on_key_packages` counts (the same statement's FROM
//! and WHERE, `store::list_devices_low_on_key_packages`), with their accounts.
//! Not audited (a read).

use super::super::AdminError;
use super::super::paging::Page;
use super::views::{DeviceSummary, describe_devices};
use crate::service::Context;
use crate::store;
use std::collections::HashMap;

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 200;
const MILLIS_PER_DAY: i64 = 86_400_000;

/// A page of devices low on key packages.
#[derive(Debug, Clone)]
pub(crate) struct LowStockPage {
    /// The threshold applied: devices with fewer ordinary packages are listed.
    pub(crate) threshold: u32,
    /// Emptiest first.
    pub(crate) devices: Vec<DeviceSummary>,
    /// Empty on the last page.
    pub(crate) next_page_token: String,
}

/// Devices seen within `[key_packages] low_stock_active_days` with fewer than
/// `threshold` ordinary key packages (0: `[key_packages]
/// low_stock_threshold`), after `page_token`'s position.
pub(crate) async fn list_low_stock(
    context: &Context,
    threshold: u32,
    page_size: u32,
    page_token: &str,
) -> Result<LowStockPage, AdminError> {
    let settings = &context.config.key_packages;
    let threshold = match threshold {
        0 => settings.low_stock_threshold,
        threshold => threshold,
    };
    let page = Page::parse(page_size, page_token, DEFAULT_PAGE, MAX_PAGE)?;
    let after = page.after.as_deref().map(parse_position).transpose()?;
    let now_ms = context.now_ms();
    let active_since_ms = now_ms
        .saturating_sub(i64::from(settings.low_stock_active_days).saturating_mul(MILLIS_PER_DAY));
    let mut low = store::list_devices_low_on_key_packages(
        &context.store,
        threshold,
        now_ms,
        active_since_ms,
        after
            .as_ref()
            .map(|(usable, device_id)| (*usable, device_id.as_str())),
        page.fetch_limit(),
    )
    .await?;
    let next_page_token = page.finish(&mut low, |device| {
        position(device.usable, &device.device_id)
    });
    let ids: Vec<String> = low.iter().map(|device| device.device_id.clone()).collect();
    let mut found: HashMap<String, _> = store::find_devices_with_accounts(&context.store, &ids)
        .await?
        .into_iter()
        .map(|(device, user)| {
            (
                device.device_id.as_str().to_owned(),
                (device, user.username),
            )
        })
        .collect();
    // In the listing's order; a device deleted between the two reads is left out.
    let devices = ids.iter().filter_map(|id| found.remove(id)).collect();
    let (devices, _) = describe_devices(context, devices).await?;
    Ok(LowStockPage {
        threshold,
        devices,
        next_page_token,
    })
}

/// A row's position in the listing, as its page token carries it.
fn position(usable: u64, device_id: &str) -> String {
    format!("{usable}/{device_id}")
}

fn parse_position(text: &str) -> Result<(u64, String), AdminError> {
    text.split_once('/')
        .and_then(|(usable, device_id)| Some((usable.parse().ok()?, device_id.to_owned())))
        .ok_or_else(|| {
            AdminError::Invalid(
                "page_token is not a token this listing gave; pass the next_page_token of the previous page, or none for the first".to_owned(),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_survive_their_token() {
        assert_eq!(
            parse_position(&position(3, "00000000000000d1")).unwrap(),
            (3, "00000000000000d1".to_owned())
        );
        assert!(parse_position("3").is_err());
        assert!(parse_position("x/00").is_err());
    }
}
