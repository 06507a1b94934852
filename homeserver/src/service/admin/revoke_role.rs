//! Taking the admin role away (`conclave-homeserver admin revoke USER`).

use super::audit::audited;
use super::grant_role::target_name;
use super::{
    AdminCaller, AdminError, end_admin_sessions, find_local_user, parse_local_user, user_id,
};
use crate::service::Context;
use crate::store;
use conclave_core::ids::UserId;

/// Takes the admin role from `user` and returns its user id;
/// FAILED_PRECONDITION if it has no such role. Audited as `admin.revoke`.
pub(crate) async fn revoke_role(
    context: &Context,
    caller: &AdminCaller,
    user: &str,
) -> Result<UserId, AdminError> {
    let target = target_name(context, user);
    let result = revoke(context, user).await;
    audited(context, caller, "admin.revoke", &target, result).await
}

async fn revoke(context: &Context, user: &str) -> Result<(UserId, String), AdminError> {
    let username = parse_local_user(context, user)?;
    let account = find_local_user(context, &username).await?;
    let user_id = user_id(context, &username);
    if !store::set_admin_role(&context.store, account.key, false).await? {
        return Err(AdminError::FailedPrecondition(format!(
            "{user_id} is not an administrator"
        )));
    }
    let ended = end_admin_sessions(context, account.key).await?;
    Ok((
        user_id,
        format!("revoked the admin role; {ended} admin session(s) ended"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::SystemClock;
    use crate::service::admin::grant_role::grant_role;
    use crate::service::admin::tests::{add_user, context_on};
    use crate::store::{AuditQuery, list_audit_entries_oldest_first};
    use conclave_test_support::{DatabaseChoice, TestDatabase};
    use std::sync::Arc;

    #[tokio::test]
    async fn the_role_is_granted_and_revoked_once_and_every_attempt_is_audited() {
        for choice in DatabaseChoice::ALL {
            let database = TestDatabase::create(choice).await;
            let context = context_on(&database, Arc::new(SystemClock)).await;
            add_user(&context, "alice", "alice's password").await;
            let operator = AdminCaller::operator();
            let is_admin = || async {
                let alice = "alice".parse().unwrap();
                find_local_user(&context, &alice).await.unwrap().is_admin
            };

            let granted = grant_role(&context, &operator, "alice").await.unwrap();
            assert_eq!(granted.to_string(), "alice@a.example", "{choice:?}");
            assert!(is_admin().await, "{choice:?}");
            let again = grant_role(&context, &operator, "alice@a.example").await;
            assert!(
                matches!(&again, Err(AdminError::FailedPrecondition(message)) if message == "alice@a.example is an administrator already"),
                "{choice:?}: {again:?}"
            );
            let unknown = grant_role(&context, &operator, "bob").await;
            assert!(
                matches!(unknown, Err(AdminError::NotFound(_))),
                "{choice:?}"
            );
            let foreign = grant_role(&context, &operator, "alice@b.example").await;
            assert!(matches!(foreign, Err(AdminError::Invalid(_))), "{choice:?}");

            revoke_role(&context, &operator, "alice").await.unwrap();
            assert!(!is_admin().await, "{choice:?}");
            let again = revoke_role(&context, &operator, "alice").await;
            assert!(
                matches!(&again, Err(AdminError::FailedPrecondition(message)) if message == "alice@a.example is not an administrator"),
                "{choice:?}: {again:?}"
            );

            let entries =
                list_audit_entries_oldest_first(&context.store, &AuditQuery::default(), None, 100)
                    .await
                    .unwrap();
            let summary: Vec<_> = entries
                .iter()
                .map(|entry| {
                    assert_eq!(entry.actor, "operator");
                    assert_eq!(entry.address, "");
                    (
                        entry.action.as_str(),
                        entry.target.as_str(),
                        entry.succeeded,
                        entry.detail.as_str(),
                    )
                })
                .collect();
            assert_eq!(
                summary,
                [
                    (
                        "admin.grant",
                        "alice@a.example",
                        true,
                        "granted the admin role"
                    ),
                    (
                        "admin.grant",
                        "alice@a.example",
                        false,
                        "alice@a.example is an administrator already"
                    ),
                    (
                        "admin.grant",
                        "bob@a.example",
                        false,
                        "there is no user bob@a.example"
                    ),
                    (
                        "admin.grant",
                        "alice@b.example",
                        false,
                        "user alice@b.example belongs to domain b.example, not to this homeserver's domain a.example"
                    ),
                    (
                        "admin.revoke",
                        "alice@a.example",
                        true,
                        "revoked the admin role; 0 admin session(s) ended"
                    ),
                    (
                        "admin.revoke",
                        "alice@a.example",
                        false,
                        "alice@a.example is not an administrator"
                    ),
                ],
                "{choice:?}"
            );
        }
    }
}
