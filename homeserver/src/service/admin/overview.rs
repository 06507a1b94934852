//! The overview of the domain for the console's front page: counts (one
//! cheap query each) and warnings (`rules::admin_overview`).

use super::AdminError;
use crate::rules::admin_overview::{FailingPeer, OverviewFacts, OverviewWarning, warnings};
use crate::service::Context;
use crate::store;

const MILLIS_PER_DAY: i64 = 86_400_000;

/// The domain at a glance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Overview {
    pub(crate) counts: store::DomainCounts,
    /// `[federation.peers]`.
    pub(crate) peers: u64,
    /// Peers whose last delivery attempt failed.
    pub(crate) peers_failing: u64,
    /// Events of hosted groups not yet confirmed by their followers.
    pub(crate) outbox_depth: u64,
    pub(crate) devices_low_on_key_packages: u64,
    pub(crate) warnings: Vec<OverviewWarning>,
}

pub(crate) async fn overview(context: &Context) -> Result<Overview, AdminError> {
    let now_ms = context.now_ms();
    let counts = store::domain_counts(&context.store, now_ms).await?;
    let failing_peers: Vec<FailingPeer> = store::peer_statuses(&context.store)
        .await?
        .into_iter()
        .filter(|status| status.consecutive_failures > 0)
        .map(|status| FailingPeer {
            domain: status.domain,
            consecutive_failures: status.consecutive_failures,
            last_success_at_ms: status.last_success_at_ms,
            last_error: status.last_error,
        })
        .collect();
    let outbox_depth = store::outbox_depths(&context.store)
        .await?
        .iter()
        .map(|(_, depth)| depth)
        .sum();
    let stock = &context.config.key_packages;
    let active_since_ms = now_ms
        .saturating_sub(i64::from(stock.low_stock_active_days).saturating_mul(MILLIS_PER_DAY));
    let devices_low_on_key_packages = store::count_devices_low_on_key_packages(
        &context.store,
        stock.low_stock_threshold,
        now_ms,
        active_since_ms,
    )
    .await?;
    let facts = OverviewFacts {
        certificates: context
            .metrics
            .tls_certificate_expiries(&["client_api", "federation"]),
        failing_peers,
        devices_low_on_key_packages,
    };
    Ok(Overview {
        counts,
        peers: u64::try_from(context.config.federation.peers.len()).unwrap_or(u64::MAX), // tidy: saturating (a configuration that large cannot load)
        peers_failing: u64::try_from(facts.failing_peers.len()).unwrap_or(u64::MAX), // tidy: saturating (as many as peers)
        outbox_depth,
        devices_low_on_key_packages,
        warnings: warnings(&facts, now_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::admin_overview::Severity;
    use crate::service::admin::AdminCaller;
    use crate::service::admin::create_registration_token::create_registration_token;
    use crate::service::admin::revoke_registration_token::revoke_registration_token;
    use crate::service::admin::tests::{ManualClock, add_user, context_on};
    use crate::service::admin::users::{deactivate_user, suspend_user};
    use conclave_test_support::{DatabaseChoice, TestDatabase};

    #[tokio::test]
    async fn the_overview_counts_and_warns() {
        for choice in DatabaseChoice::ALL {
            let database = TestDatabase::create(choice).await;
            let clock = ManualClock::starting_now();
            let context = context_on(&database, clock.clone()).await;
            let empty = overview(&context).await.unwrap();
            assert_eq!(empty.counts.active_users, 0, "{choice:?}");
            assert_eq!(empty.warnings, [], "{choice:?}");

            add_user(&context, "alice", "alice's password").await;
            add_user(&context, "bob", "bob's password").await;
            add_user(&context, "carol", "carol's password").await;
            add_user(&context, "dave", "dave's password").await;
            let operator = AdminCaller::operator();
            suspend_user(&context, &operator, "carol", "")
                .await
                .unwrap();
            suspend_user(&context, &operator, "dave", "").await.unwrap();
            deactivate_user(&context, &operator, "dave", "")
                .await
                .unwrap();
            create_registration_token(&context, &operator, 1, 0)
                .await
                .unwrap();
            create_registration_token(&context, &operator, 3, 1)
                .await
                .unwrap();
            let revoked = create_registration_token(&context, &operator, 2, 0)
                .await
                .unwrap();
            revoke_registration_token(&context, &operator, revoked.registration_token.id)
                .await
                .unwrap();
            clock.advance_ms(24 * 3600 * 1000);
            store::record_peer_failure(
                &context.store,
                "b.example",
                "connection refused",
                context.now_ms(),
            )
            .await
            .unwrap();
            let now_s = context.now_ms() / 1000;
            // The client API's certificate, as its loading records it, ends in 3 days.
            let client_api = crate::metrics::ListenerLabels {
                listener: "client_api",
            };
            context
                .metrics
                .tls_certificate_expiry
                .get_or_create(&client_api)
                .set(now_s + 3 * 86_400);

            let seen = overview(&context).await.unwrap();
            let users = &seen.counts;
            assert_eq!(
                (
                    users.active_users,
                    users.suspended_users,
                    users.deactivated_users
                ),
                (2, 1, 1),
                "a deactivated account counts once, as deactivated: {choice:?}"
            );
            assert_eq!(seen.counts.devices, 0, "{choice:?}");
            // The second token expired, the third was revoked.
            assert_eq!(seen.counts.usable_registration_tokens, 1, "{choice:?}");
            assert_eq!((seen.peers, seen.peers_failing), (0, 1), "{choice:?}");
            let warnings: Vec<_> = seen
                .warnings
                .iter()
                .map(|warning| (warning.severity, warning.page))
                .collect();
            assert_eq!(
                warnings,
                [
                    (Severity::Critical, "/admin/federation"),
                    (Severity::Warning, ""),
                ],
                "{choice:?}: {:?}",
                seen.warnings
            );
        }
    }
}
