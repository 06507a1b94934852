//! Operator commands that act on the database directly, without a running server
//! (the `conclave-homeserver migrate` and `registration-token ...` subcommands),
//! and what they read of it (federation status, a group's overview).

use crate::config::Config;
use crate::service::admin::AdminCaller;
use crate::service::admin::create_registration_token::create_registration_token as create;
use crate::service::leases::outbox_lease;
use crate::service::{Clock, Context};
use crate::store::{Store, StoreError};
use std::sync::Arc;

/// Why an operator command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The action was refused; the message says why.
    #[error("{0}")]
    Refused(String),
}

impl From<crate::service::admin::AdminError> for AdminError {
    fn from(error: crate::service::admin::AdminError) -> AdminError {
        match error {
            crate::service::admin::AdminError::Store(store) => AdminError::Store(store),
            other => AdminError::Refused(other.to_string()),
        }
    }
}

/// A freshly made token; the secret is shown once and only its hash is kept.
pub struct NewRegistrationToken {
    pub token: String,
    pub uses_allowed: u32,
    /// Milliseconds since the Unix epoch; `None` never expires.
    pub expires_at_ms: Option<i64>,
}

/// By hand: the token must never reach a log or a panic message.
impl std::fmt::Debug for NewRegistrationToken {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("NewRegistrationToken")
            .field("token", &"<redacted>")
            .field("uses_allowed", &self.uses_allowed)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

/// Applies the migrations the database lacks and returns their names, oldest
/// first (none: the schema was up to date). Safe beside running replicas and
/// other `migrate` runs: on PostgreSQL they take turns under one advisory lock.
/// Refuses a database migrated by a newer release
/// ([`StoreError::SchemaTooNew`]).
pub async fn migrate(config: Config) -> Result<Vec<String>, AdminError> {
    let store = Store::connect(&config.database.url, 1).await?;
    let applied = store.migrate().await;
    store.close().await?;
    Ok(applied?)
}

/// Makes a registration token good for `uses` registrations (1 to
/// 1,000,000), expiring after `valid_for_days` days (1 to 3650) if given: the
/// admin API's use case, as the operator (audited as `operator`).
pub async fn create_registration_token(
    config: Config,
    clock: Arc<dyn Clock>,
    uses: u32,
    valid_for_days: Option<u32>,
) -> Result<NewRegistrationToken, AdminError> {
    let store = Store::connect(&config.database.url, 1).await?;
    store.migrate().await?;
    let context = Context::new(store.clone(), config, clock);
    let valid_for_days = valid_for_days.unwrap_or(crate::rules::registration::NEVER_EXPIRES);
    let created = create(&context, &AdminCaller::operator(), uses, valid_for_days).await;
    store.close().await?;
    let created = created?;
    Ok(NewRegistrationToken {
        uses_allowed: created.registration_token.uses_allowed,
        expires_at_ms: created.registration_token.expires_at_ms,
        token: created.token,
    })
}

/// One peer domain's federation delivery, as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PeerOutboxStatus {
    pub domain: String,
    /// True if the domain is in this homeserver's `[federation.peers]`.
    pub configured: bool,
    /// Events of hosted groups the domain has not confirmed yet.
    pub outbox_depth: u64,
    /// Milliseconds since the Unix epoch.
    pub last_success_at_ms: Option<i64>,
    pub last_error: Option<String>,
    pub last_error_at_ms: Option<i64>,
    /// Failed attempts since the last success.
    pub consecutive_failures: u64,
    /// The replica id of the replica that sends to the domain (the holder of
    /// the outbox's lease, as each replica logs its id at start); `None` if no
    /// replica has held it, or the last holder released it.
    pub outbox_owner: Option<String>,
    /// When that lease expires unless renewed, in milliseconds since the Unix
    /// epoch; in the past, the holder is gone and another replica is about to
    /// take over.
    pub outbox_lease_expires_at_ms: Option<i64>,
}

/// Each peer's outbox depth, last success and last error, and which replica
/// sends to it, from the database (so it works while the server runs, and
/// shows what every replica did).
pub async fn federation_status(config: Config) -> Result<Vec<PeerOutboxStatus>, AdminError> {
    let store = Store::connect(&config.database.url, 1).await?;
    store.migrate().await?;
    let connection = &store;
    let depths = crate::store::outbox_depths(connection).await?;
    let recorded = crate::store::peer_statuses(connection).await?;
    let leases = crate::store::leases(connection).await?;
    let mut domains: std::collections::BTreeSet<String> =
        config.federation.peers.keys().cloned().collect();
    domains.extend(depths.iter().map(|(domain, _)| domain.clone()));
    domains.extend(recorded.iter().map(|status| status.domain.clone()));
    let statuses = domains
        .into_iter()
        .map(|domain| {
            let record = recorded.iter().find(|status| status.domain == domain);
            let lease_name = outbox_lease(&domain);
            let lease = leases.iter().find(|lease| lease.name == lease_name);
            PeerOutboxStatus {
                configured: config.federation.peers.contains_key(&domain),
                outbox_depth: depths
                    .iter()
                    .find(|(peer, _)| *peer == domain)
                    .map_or(0, |(_, depth)| *depth),
                last_success_at_ms: record.and_then(|status| status.last_success_at_ms),
                last_error: record.and_then(|status| status.last_error.clone()),
                last_error_at_ms: record.and_then(|status| status.last_error_at_ms),
                consecutive_failures: record.map_or(0, |status| status.consecutive_failures),
                outbox_owner: lease.map(|lease| lease.owner.clone()),
                outbox_lease_expires_at_ms: lease.map(|lease| lease.expires_at_ms),
                domain,
            }
        })
        .collect();
    store.close().await?;
    Ok(statuses)
}

/// A group as this homeserver's database holds it: hosted here, or a
/// follower's copy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GroupOverview {
    /// The hub's domain for a follower's copy; `None` if hosted here.
    pub hub_domain: Option<String>,
    pub epoch: u64,
    /// The newest sequence number of the group's log (or of this copy of it).
    pub last_seq: u64,
    /// Current member devices of the group here (for a follower's copy, this
    /// domain's devices only).
    pub member_devices: u64,
}

/// What the database holds of the group `mls_group_id`; `None` if it knows no
/// such group.
pub async fn group_overview(
    config: Config,
    mls_group_id: &[u8],
) -> Result<Option<GroupOverview>, AdminError> {
    let store = Store::connect(&config.database.url, 1).await?;
    store.migrate().await?;
    let group_id = crate::rules::ids::GroupId::from(mls_group_id);
    // The admin API's record of the group, which counts its current members.
    let overview = crate::store::find_admin_group(&store, &group_id)
        .await?
        .map(|record| GroupOverview {
            epoch: record.epoch.get(),
            last_seq: record.last_seq.get(),
            member_devices: record.member_devices,
            hub_domain: record.hub_domain,
        });
    store.close().await?;
    Ok(overview)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_token_is_debugged_without_its_secret() {
        let token = NewRegistrationToken {
            token: "token-4f2a9b".to_owned(),
            uses_allowed: 5,
            expires_at_ms: None,
        };
        let shown = format!("{token:?}");
        assert!(!shown.contains("token-4f2a9b"), "{shown}");
        assert!(shown.contains("uses_allowed: 5"), "{shown}");
    }
}
