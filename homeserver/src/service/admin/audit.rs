//! Writing the audit log: every admin use case that changes something records
//! its outcome here once, done or refused, with who acted, on what and from
//! where.

use super::{AdminCaller, AdminError};
use crate::service::Context;
use crate::store::{self, NewAuditEntry, StoreError};
use std::net::IpAddr;

/// Records `action` (`area.verb`, e.g. `user.suspend`) on `target` by `caller`:
/// `Ok(detail)` if it was done (what changed), `Err(reason)` if it was refused
/// (why).
pub(crate) async fn record(
    context: &Context,
    caller: &AdminCaller,
    action: &str,
    target: &str,
    outcome: &Result<String, String>,
) -> Result<(), StoreError> {
    record_as(
        context,
        &caller.actor_name(),
        caller.address,
        action,
        target,
        outcome,
    )
    .await
}

/// Records the outcome of a use case and passes it on: `Ok((value,
/// detail))` is recorded as done with `detail`, an error as refused with its
/// message. A database failure is recorded too if the database still takes
/// the entry (it may have been passing). A use case that changes something
/// ends with `audited(...).await`, so it records exactly once.
pub(crate) async fn audited<T>(
    context: &Context,
    caller: &AdminCaller,
    action: &str,
    target: &str,
    result: Result<(T, String), AdminError>,
) -> Result<T, AdminError> {
    match result {
        Ok((value, detail)) => {
            record(context, caller, action, target, &Ok(detail)).await?;
            Ok(value)
        }
        Err(error) => {
            let reason = match &error {
                // What the caller is told is not what the log needs.
                AdminError::Store(_) | AdminError::Internal(_) | AdminError::PasswordHash(_) => {
                    format!("failed on the server's side: {error}")
                }
                _ => error.to_string(),
            };
            if let Err(store_error) = record(context, caller, action, target, &Err(reason)).await {
                tracing::warn!(%store_error, action, target, "could not record a refused admin action");
            }
            Err(error)
        }
    }
}

/// [`record`] for an actor that is not (yet) an [`AdminCaller`]: who tried to
/// log in, named as they wrote it.
pub(crate) async fn record_as(
    context: &Context,
    actor: &str,
    address: Option<IpAddr>,
    action: &str,
    target: &str,
    outcome: &Result<String, String>,
) -> Result<(), StoreError> {
    let address = address.map(|address| address.to_canonical().to_string());
    let (succeeded, detail) = match outcome {
        Ok(detail) => (true, detail.as_str()),
        Err(reason) => (false, reason.as_str()),
    };
    let entry = NewAuditEntry {
        at_ms: context.now_ms(),
        actor,
        action,
        target,
        address: address.as_deref().unwrap_or_default(),
        succeeded,
        detail,
    };
    store::insert_audit_entry(&context.store, entry).await?;
    tracing::info!(actor, action, target, succeeded, detail, "admin action");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::SystemClock;
    use crate::service::admin::tests::{add_user, admin_caller, context_on};
    use crate::store::AuditQuery;
    use conclave_test_support::{DatabaseChoice, TestDatabase};
    use std::sync::Arc;

    #[tokio::test]
    async fn outcomes_are_recorded_with_actor_and_address() {
        for choice in DatabaseChoice::ALL {
            let database = TestDatabase::create(choice).await;
            let context = context_on(&database, Arc::new(SystemClock)).await;
            let alice = add_user(&context, "alice", "alice's password").await;
            let caller = admin_caller(&context, &alice, "::ffff:192.0.2.9");
            let done = Ok("suspended; 2 sessions ended".to_owned());
            record(&context, &caller, "user.suspend", "bob@a.example", &done)
                .await
                .unwrap();
            let refused = Err("bob@a.example is not suspended".to_owned());
            let operator = AdminCaller::operator();
            record(
                &context,
                &operator,
                "user.unsuspend",
                "bob@a.example",
                &refused,
            )
            .await
            .unwrap();
            let entries = store::list_audit_entries_oldest_first(
                &context.store,
                &AuditQuery::default(),
                None,
                10,
            )
            .await
            .unwrap();
            let summary: Vec<_> = entries
                .iter()
                .map(|entry| {
                    (
                        entry.actor.as_str(),
                        entry.action.as_str(),
                        entry.target.as_str(),
                        entry.address.as_str(),
                        entry.succeeded,
                        entry.detail.as_str(),
                    )
                })
                .collect();
            assert_eq!(
                summary,
                [
                    (
                        "alice@a.example",
                        "user.suspend",
                        "bob@a.example",
                        // An IPv4-mapped address is written as IPv4.
                        "192.0.2.9",
                        true,
                        "suspended; 2 sessions ended"
                    ),
                    (
                        "operator",
                        "user.unsuspend",
                        "bob@a.example",
                        "",
                        false,
                        "bob@a.example is not suspended"
                    ),
                ],
                "{choice:?}"
            );
            assert!(entries[0].id < entries[1].id, "{choice:?}");
        }
    }
}
