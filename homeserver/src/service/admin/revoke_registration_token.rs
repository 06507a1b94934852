//! RevokeRegistrationToken: no registration may use the token from now on
//! (the registration's check and the conditional UPDATE that spends a use
//! both refuse a revoked token). Audited, refusals included.

use super::registration_token_view::RegistrationTokenView;
use super::{AdminCaller, AdminError, audit};
use crate::service::Context;
use crate::store;

/// The audit log's action.
const ACTION: &str = "registration_token.revoke";

/// Revokes the token `id`: NOT_FOUND if there is none, FAILED_PRECONDITION if
/// it is already revoked.
pub(crate) async fn revoke_registration_token(
    context: &Context,
    caller: &AdminCaller,
    id: u64,
) -> Result<RegistrationTokenView, AdminError> {
    let target = id.to_string();
    let now_ms = context.now_ms();
    // The conditional UPDATE decides between two revocations; the reads around
    // it only say why a refusal was one.
    let revoked = store::revoke_registration_token(&context.store, id, now_ms).await?;
    let record = store::find_registration_token_by_id(&context.store, id).await?;
    let outcome = match (record, revoked) {
        (Some(record), true) => Ok(record),
        (None, _) => Err(AdminError::NotFound(format!(
            "there is no registration token {id}"
        ))),
        (Some(record), false) => Err(AdminError::FailedPrecondition(format!(
            "registration token {id} is already revoked (at {} ms)",
            record.token.revoked_at_ms.unwrap_or_default()
        ))),
    };
    let record = match outcome {
        Ok(record) => record,
        Err(refusal) => {
            audit::record(context, caller, ACTION, &target, &Err(refusal.to_string())).await?;
            return Err(refusal);
        }
    };
    let view = RegistrationTokenView::at(record, now_ms);
    let detail = format!(
        "revoked with {} of {} uses spent",
        view.uses_count, view.uses_allowed
    );
    audit::record(context, caller, ACTION, &target, &Ok(detail)).await?;
    Ok(view)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::registration::TokenState;
    use crate::service::admin::create_registration_token::create_registration_token;
    use crate::service::admin::list_registration_tokens::list_registration_tokens;
    use crate::service::admin::tests::{add_user, admin_caller, context_on};
    use crate::store::{AuditQuery, list_audit_entries_newest_first};
    use conclave_test_support::{DatabaseChoice, TestDatabase};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};

    /// A clock that moves only when told, so times can be compared exactly.
    #[derive(Debug)]
    struct ManualClock(AtomicI64);

    impl crate::service::Clock for ManualClock {
        fn now_ms(&self) -> i64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    const DAY_MS: i64 = 24 * 3600 * 1000;

    /// The ids of a page of tokens, and its next page token.
    async fn listed(
        context: &Context,
        include_unusable: bool,
        page_size: u32,
        page_token: &str,
    ) -> (Vec<u64>, String) {
        let page = list_registration_tokens(context, include_unusable, page_size, page_token)
            .await
            .unwrap();
        let ids = page
            .registration_tokens
            .iter()
            .map(|token| token.id)
            .collect();
        (ids, page.next_page_token)
    }

    #[tokio::test]
    async fn tokens_are_made_listed_revoked_and_audited() {
        for choice in DatabaseChoice::ALL {
            let database = TestDatabase::create(choice).await;
            let clock = Arc::new(ManualClock(AtomicI64::new(1_800_000_000_000)));
            let context = context_on(&database, clock.clone()).await;
            let alice = add_user(&context, "alice", "alice's password").await;
            let caller = admin_caller(&context, &alice, "192.0.2.7");

            for (uses, days, message) in [
                (0, 0, "uses must be 1 to 1000000, not 0"),
                (1_000_001, 0, "uses must be 1 to 1000000, not 1000001"),
                (
                    1,
                    3651,
                    "valid_for_days must be 1 to 3650, or 0 for never, not 3651",
                ),
            ] {
                let refused = create_registration_token(&context, &caller, uses, days).await;
                assert!(
                    matches!(&refused, Err(AdminError::Invalid(refusal)) if refusal == message),
                    "{choice:?}: {refused:?}"
                );
            }
            let first = create_registration_token(&context, &caller, 1, 0)
                .await
                .unwrap();
            let second = create_registration_token(&context, &caller, 5, 7)
                .await
                .unwrap();
            let third = create_registration_token(&context, &caller, 2, 1)
                .await
                .unwrap();
            let [first_id, second_id, third_id] =
                [&first, &second, &third].map(|created| created.registration_token.id);
            let made = &second.registration_token;
            assert_eq!(made.created_by, "alice@a.example");
            assert_eq!((made.uses_allowed, made.uses_remaining), (5, 5));
            assert_eq!(made.state, TokenState::Usable);
            assert_eq!(made.expires_at_ms, Some(context.now_ms() + 7 * DAY_MS));
            assert_eq!(first.registration_token.expires_at_ms, None);
            let shown = format!("{second:?}");
            assert!(!shown.contains(&second.token), "{shown}");

            // Newest first, a page at a time.
            let (page, next) = listed(&context, true, 2, "").await;
            assert_eq!(page, vec![third_id, second_id], "{choice:?}");
            let (page, last) = listed(&context, true, 2, &next).await;
            assert_eq!(page, vec![first_id]);
            assert!(last.is_empty());
            let refused = list_registration_tokens(&context, true, 2, "not a token!").await;
            assert!(
                matches!(refused, Err(AdminError::Invalid(_))),
                "{refused:?}"
            );

            let revoked = revoke_registration_token(&context, &caller, second_id)
                .await
                .unwrap();
            assert_eq!(revoked.state, TokenState::Revoked);
            assert_eq!(revoked.revoked_at_ms, Some(context.now_ms()));
            assert_eq!(revoked.uses_remaining, 0);
            let again = revoke_registration_token(&context, &caller, second_id).await;
            assert!(
                matches!(&again, Err(AdminError::FailedPrecondition(message)) if message.starts_with(&format!("registration token {second_id} is already revoked"))),
                "{again:?}"
            );
            let unknown = revoke_registration_token(&context, &caller, 987_654).await;
            assert!(
                matches!(&unknown, Err(AdminError::NotFound(message)) if message == "there is no registration token 987654"),
                "{unknown:?}"
            );

            // Usable only: the revoked one is left out, then the expired one.
            assert_eq!(
                listed(&context, false, 10, "").await.0,
                vec![third_id, first_id]
            );
            clock.0.fetch_add(2 * DAY_MS, Ordering::SeqCst);
            assert_eq!(listed(&context, false, 10, "").await.0, vec![first_id]);
            let everything = list_registration_tokens(&context, true, 10, "")
                .await
                .unwrap();
            let states: Vec<TokenState> = everything
                .registration_tokens
                .iter()
                .map(|token| token.state)
                .collect();
            assert_eq!(
                states,
                [TokenState::Expired, TokenState::Revoked, TokenState::Usable]
            );

            // Every change and refusal is in the audit log, newest first, by
            // the token's id and never with a secret.
            let query = AuditQuery {
                action_prefix: Some("registration_token.".to_owned()),
                ..AuditQuery::default()
            };
            let entries = list_audit_entries_newest_first(&context.store, &query, None, 20)
                .await
                .unwrap();
            let summary: Vec<(&str, String, bool)> = entries
                .iter()
                .map(|entry| (entry.action.as_str(), entry.target.clone(), entry.succeeded))
                .collect();
            let create = "registration_token.create";
            let revoke = "registration_token.revoke";
            assert_eq!(
                summary,
                vec![
                    (revoke, "987654".to_owned(), false),
                    (revoke, second_id.to_string(), false),
                    (revoke, second_id.to_string(), true),
                    (create, third_id.to_string(), true),
                    (create, second_id.to_string(), true),
                    (create, first_id.to_string(), true),
                    (create, String::new(), false),
                    (create, String::new(), false),
                    (create, String::new(), false),
                ],
                "{choice:?}"
            );
            for entry in &entries {
                assert_eq!(entry.actor, "alice@a.example");
                assert_eq!(entry.address, "192.0.2.7");
                for secret in [&first.token, &second.token, &third.token] {
                    assert!(!entry.detail.contains(secret.as_str()), "{entry:?}");
                }
            }
        }
    }
}
