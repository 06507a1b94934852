//! The janitor: every hour, deletes key packages (and the records of which
//! domains claimed them) a day after they expired, prunes group logs of what no
//! device or follower domain still needs or what is older than the retention
//! (`rules::retention`), forgets old idempotency records, the uses of expired
//! enrolment challenges, the membership changes and Welcomes every follower
//! received, and admin sessions that ended by time.
//!
//! One replica of a domain does this at a time: the one holding the `janitor`
//! lease (`leases`); the others wait to take over.

use super::Context;
use super::leases::JANITOR_LEASE;
use crate::rules::retention;
use crate::store;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How often the janitor runs.
const INTERVAL: Duration = Duration::from_secs(3600);

/// Runs until `stopped` resolves, cleaning up while this replica holds the
/// janitor's lease (first at once when it takes it, then every [`INTERVAL`]);
/// then releases the lease.
pub(crate) async fn run(context: Arc<Context>, stopped: impl Future<Output = ()>) {
    let work = || async {
        let mut interval = tokio::time::interval(INTERVAL);
        loop {
            interval.tick().await;
            clean_up(&context).await;
        }
    };
    context
        .leases
        .run_while_holding(JANITOR_LEASE, stopped, work)
        .await;
}

async fn clean_up(context: &Context) {
    let cutoffs = retention::cutoffs(context.now_ms(), context.config.groups.retention_days);
    let store = &context.store;
    match store::delete_expired_key_packages(store, cutoffs.key_packages_expired_before_ms).await {
        Ok(0) => {}
        Ok(deleted) => tracing::info!(deleted, "deleted expired key packages"),
        Err(error) => tracing::warn!(%error, "could not delete expired key packages"),
    }
    match store::prune_group_events(
        store,
        cutoffs.events_before_ms,
        cutoffs.submissions_before_ms,
    )
    .await
    {
        Ok(0) => {}
        Ok(deleted) => tracing::info!(deleted, "pruned group events"),
        Err(error) => tracing::warn!(%error, "could not prune group events"),
    }
    match store::delete_expired_enrolment_challenges(store, cutoffs.enrolment_challenges_before_ms)
        .await
    {
        Ok(0) => {}
        Ok(deleted) => tracing::info!(deleted, "forgot used enrolment challenges"),
        Err(error) => tracing::warn!(%error, "could not forget used enrolment challenges"),
    }
    match super::admin::authenticate::delete_ended_admin_sessions(context).await {
        Ok(0) => {}
        Ok(deleted) => tracing::info!(deleted, "deleted ended admin sessions"),
        Err(error) => tracing::warn!(%error, "could not delete ended admin sessions"),
    }
    match store::delete_unused_shared_welcomes(store).await {
        Ok(0) => {}
        Ok(deleted) => tracing::info!(deleted, "deleted shared Welcomes no device needs"),
        Err(error) => tracing::warn!(%error, "could not delete unused shared Welcomes"),
    }
    if let Err(error) = store::prune_delivered_federation_records(store).await {
        tracing::warn!(%error, "could not prune delivered federation records");
    }
}
