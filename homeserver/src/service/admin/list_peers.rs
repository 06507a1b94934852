//! ListPeers: every configured peer and every domain an outbox holds events
//! for, with its endpoint, delivery record and backlog. The same function as
//! `conclave-homeserver federation status` ([`crate::admin::peer_statuses`]),
//! so the two never disagree. Read-only, so not audited.

use super::AdminError;
use crate::admin::{PeerOutboxStatus, peer_statuses};
use crate::service::Context;

/// Each peer's federation as this homeserver's database shows it, ordered by
/// domain.
pub(crate) async fn list_peers(context: &Context) -> Result<Vec<PeerOutboxStatus>, AdminError> {
    Ok(peer_statuses(&context.config, &context.store).await?)
}
