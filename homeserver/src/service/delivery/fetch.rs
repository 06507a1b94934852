//! Fetch: up to a page of what lies after the device's acknowledged cursors,
//! without moving them.

use super::super::Context;
use super::super::accounts::AuthenticatedDevice;
use super::pages::{LogSource, load_memberships, read_page};
use super::{DEFAULT_PAGE, Delivery, DeliveryError, MAX_PAGE, Positions};
use crate::store;

/// Up to `limit` events after the device's acknowledged cursors.
pub(crate) async fn fetch(
    context: &Context,
    device: &AuthenticatedDevice,
    limit: u32,
) -> Result<Vec<Delivery>, DeliveryError> {
    let limit = match u64::from(limit) {
        0 => DEFAULT_PAGE,
        limit => limit.min(MAX_PAGE),
    };
    let device_id = device.device_id().as_str();
    let (memberships, group_ids) = load_memberships(context, device_id).await?;
    let inbox = store::inbox_position(&context.store, device_id).await?;
    let mut positions = Positions::new(inbox.acked_seq);
    read_page(
        context,
        LogSource::Database,
        device_id,
        &mut positions,
        &memberships,
        &group_ids,
        limit,
    )
    .await
}
