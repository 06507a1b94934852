//! The users use cases on a real store, SQLite and PostgreSQL: each action,
//! its refusals and its audit entries; what a suspended or revoked device is
//! told; its Subscribe stream ending, on this replica and on another one.

use super::*;
use crate::rules::account_state::AccountState;
use crate::service::accounts::{AccountError, authenticate};
use crate::service::admin::tests::{add_device, add_user, admin_caller, context_on};
use crate::service::delivery::{self, DeliveryError};
use crate::service::{Clock, Context};
use crate::store::{self, AuditQuery, NewKeyPackage, NewMember, Store};
use conclave_core::ids::{DeviceId, Username};
use conclave_test_support::{DatabaseChoice, TestDatabase};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// A clock the test moves by hand.
#[derive(Debug)]
struct ManualClock(AtomicI64);

impl ManualClock {
    fn at(now_ms: i64) -> Arc<ManualClock> {
        Arc::new(ManualClock(AtomicI64::new(now_ms)))
    }

    fn advance(&self, by: Duration) {
        self.0
            .fetch_add(i64::try_from(by.as_millis()).unwrap(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

const START_MS: i64 = 1_800_000_000_000;

/// Stores `ordinary` ordinary packages and a last-resort one for `device_id`.
async fn add_key_packages(context: &Context, device_id: &str, ordinary: u8) {
    let device_id: DeviceId = device_id.parse().unwrap();
    let package = |tag: u8| NewKeyPackage {
        hash_ref: [device_id.as_str().as_bytes(), &[tag]].concat(),
        cipher_suite: 1,
        data: vec![tag],
        not_after_ms: context.now_ms() + 86_400_000,
    };
    store::insert_key_packages(
        &context.store,
        &device_id,
        (0..ordinary).map(package).collect(),
        Some(package(255)),
        context.now_ms(),
    )
    .await
    .unwrap();
}

/// Makes `device_id` of `user_id` a current member of a new hosted group
/// with MLS group id `[id]`.
async fn join_group(context: &Context, id: u8, user_id: &str, device_id: &str) -> Vec<u8> {
    let group = store::heads_tests::insert_test_group(&context.store, id, device_id).await;
    let identity = format!("{user_id}/{device_id}");
    let transaction = context.store.begin().await.unwrap();
    store::upsert_member(
        &transaction,
        group.key,
        NewMember {
            identity: &identity,
            user_id,
            device_id,
            joined_after_seq: crate::rules::ids::Seq::ZERO,
            remote_domain: None,
        },
    )
    .await
    .unwrap();
    transaction.commit().await.unwrap();
    vec![id]
}

/// (action, target, succeeded, detail) of every audit entry, oldest first.
async fn audit_entries(context: &Context) -> Vec<(String, String, bool, String)> {
    store::list_audit_entries_oldest_first(&context.store, &AuditQuery::default(), None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|entry| (entry.action, entry.target, entry.succeeded, entry.detail))
        .collect()
}

const D1: &str = "00000000000000d1";
const D2: &str = "00000000000000d2";
const D3: &str = "00000000000000d3";

#[tokio::test]
async fn suspension_refuses_the_devices_until_it_is_lifted_and_every_outcome_is_audited() {
    for choice in DatabaseChoice::ALL {
        let database = TestDatabase::create(choice).await;
        let context = context_on(&database, ManualClock::at(START_MS)).await;
        let admin = add_user(&context, "root", "root's password").await;
        let bob = add_user(&context, "bob", "bob's password").await;
        let token = add_device(&context, &bob, D1).await;
        let caller = admin_caller(&context, &admin, "192.0.2.7");

        let unknown = suspend_user(&context, &caller, "nobody", "").await;
        assert!(
            matches!(unknown, Err(AdminError::NotFound(_))),
            "{choice:?}: {unknown:?}"
        );
        let own = suspend_user(&context, &caller, "root", "").await;
        assert!(
            matches!(&own, Err(AdminError::FailedPrecondition(message)) if message == "you cannot suspend your own account"),
            "{choice:?}: {own:?}"
        );
        let long = suspend_user(&context, &caller, "bob", &"x".repeat(501)).await;
        assert!(
            matches!(long, Err(AdminError::Invalid(_))),
            "{choice:?}: {long:?}"
        );
        let not_suspended = unsuspend_user(&context, &caller, "bob").await;
        assert!(
            matches!(&not_suspended, Err(AdminError::FailedPrecondition(message)) if message.contains("is active")),
            "{choice:?}: {not_suspended:?}"
        );
        authenticate(&context, Some(&token)).await.unwrap();

        let suspended = suspend_user(&context, &caller, "bob@a.example", "spam")
            .await
            .unwrap();
        assert_eq!(
            suspended.state,
            AccountState::Suspended { since_ms: START_MS },
            "{choice:?}"
        );
        assert_eq!(suspended.state_reason, "spam", "{choice:?}");
        assert_eq!(suspended.device_count, 1, "{choice:?}");
        // UNAUTHENTICATED "this account is suspended" (`hs::admin_suspension`).
        let refused = authenticate(&context, Some(&token)).await;
        assert!(
            matches!(refused, Err(AccountError::AccountSuspended)),
            "{choice:?}: {refused:?}"
        );
        let again = suspend_user(&context, &caller, "bob", "").await;
        assert!(
            matches!(&again, Err(AdminError::FailedPrecondition(message)) if message == "the account is suspended, so it cannot be suspended"),
            "{choice:?}: {again:?}"
        );

        let active = unsuspend_user(&context, &caller, "bob").await.unwrap();
        assert_eq!(active.state, AccountState::Active, "{choice:?}");
        assert_eq!(active.state_reason, "", "{choice:?}");
        // As it was: the same device, with the same token.
        let device = authenticate(&context, Some(&token)).await.unwrap();
        assert_eq!(device.device_id().as_str(), D1, "{choice:?}");

        let entries = audit_entries(&context).await;
        let summary: Vec<_> = entries
            .iter()
            .map(|(action, target, succeeded, _)| (action.as_str(), target.as_str(), *succeeded))
            .collect();
        assert_eq!(
            summary,
            [
                ("user.suspend", "nobody@a.example", false),
                ("user.suspend", "root@a.example", false),
                ("user.suspend", "bob@a.example", false),
                ("user.unsuspend", "bob@a.example", false),
                ("user.suspend", "bob@a.example", true),
                ("user.suspend", "bob@a.example", false),
                ("user.unsuspend", "bob@a.example", true),
            ],
            "{choice:?}"
        );
        assert!(
            entries[4].3.contains("reason: spam"),
            "{choice:?}: {entries:?}"
        );
    }
}

#[tokio::test]
async fn a_revoked_device_is_refused_and_its_key_packages_are_gone() {
    for choice in DatabaseChoice::ALL {
        let database = TestDatabase::create(choice).await;
        let context = context_on(&database, ManualClock::at(START_MS)).await;
        let bob = add_user(&context, "bob", "bob's password").await;
        let revoked_token = add_device(&context, &bob, D1).await;
        let kept_token = add_device(&context, &bob, D2).await;
        add_key_packages(&context, D1, 3).await;
        let operator = AdminCaller::operator();

        let malformed = revoke_device(&context, &operator, "bob", "D1").await;
        assert!(
            matches!(malformed, Err(AdminError::Invalid(_))),
            "{choice:?}: {malformed:?}"
        );
        let unknown = revoke_device(&context, &operator, "bob", D3).await;
        assert!(
            matches!(&unknown, Err(AdminError::NotFound(message)) if message == "bob@a.example has no device 00000000000000d3"),
            "{choice:?}: {unknown:?}"
        );
        let no_user = revoke_device(&context, &operator, "nobody", D1).await;
        assert!(
            matches!(no_user, Err(AdminError::NotFound(_))),
            "{choice:?}: {no_user:?}"
        );

        let done = revoke_device(&context, &operator, "bob", D1).await.unwrap();
        assert_eq!(done.key_packages_deleted, 4, "{choice:?}");
        let refused = authenticate(&context, Some(&revoked_token)).await;
        assert!(
            matches!(refused, Err(AccountError::InvalidToken)),
            "{choice:?}: {refused:?}"
        );
        authenticate(&context, Some(&kept_token)).await.unwrap();
        let stock = store::stock_of_devices(&context.store, &[D1.to_owned()], context.now_ms())
            .await
            .unwrap();
        assert!(stock.is_empty(), "{choice:?}: {stock:?}");
        let again = revoke_device(&context, &operator, "bob", D1).await;
        assert!(
            matches!(again, Err(AdminError::NotFound(_))),
            "{choice:?}: {again:?}"
        );

        let actions: Vec<_> = audit_entries(&context)
            .await
            .into_iter()
            .map(|(action, target, succeeded, _)| (action, target, succeeded))
            .collect();
        assert_eq!(actions.len(), 5, "{choice:?}: {actions:?}");
        assert!(
            actions.contains(&(
                "device.revoke".to_owned(),
                format!("bob@a.example/{D1}"),
                true
            )),
            "{choice:?}: {actions:?}"
        );
        assert_eq!(
            actions
                .iter()
                .filter(|(_, _, succeeded)| !succeeded)
                .count(),
            4,
            "{choice:?}: {actions:?}"
        );
    }
}

#[tokio::test]
async fn deactivation_removes_the_devices_for_good_and_keeps_the_username() {
    for choice in DatabaseChoice::ALL {
        let database = TestDatabase::create(choice).await;
        let context = context_on(&database, ManualClock::at(START_MS)).await;
        let admin = add_user(&context, "root", "root's password").await;
        let bob = add_user(&context, "bob", "bob's password").await;
        let token = add_device(&context, &bob, D1).await;
        add_device(&context, &bob, D2).await;
        add_key_packages(&context, D1, 2).await;
        let caller = admin_caller(&context, &admin, "192.0.2.7");

        let own = deactivate_user(&context, &caller, "root", "").await;
        assert!(
            matches!(own, Err(AdminError::FailedPrecondition(_))),
            "{choice:?}: {own:?}"
        );
        suspend_user(&context, &caller, "bob", "first")
            .await
            .unwrap();
        let done = deactivate_user(&context, &caller, "bob", "left the company")
            .await
            .unwrap();
        assert_eq!(done.devices_removed, 2, "{choice:?}");
        assert_eq!(done.key_packages_deleted, 3, "{choice:?}");
        assert_eq!(
            done.user.state,
            AccountState::Deactivated { since_ms: START_MS },
            "{choice:?}"
        );
        assert_eq!(done.user.device_count, 0, "{choice:?}");
        assert_eq!(done.user.state_reason, "left the company", "{choice:?}");
        let refused = authenticate(&context, Some(&token)).await;
        assert!(
            matches!(refused, Err(AccountError::InvalidToken)),
            "{choice:?}: {refused:?}"
        );
        // The username stays taken, and nothing can undo it.
        let bob_name: Username = "bob".parse().unwrap();
        assert!(
            store::find_user_by_username(&context.store, &bob_name)
                .await
                .unwrap()
                .is_some(),
            "{choice:?}"
        );
        let again = deactivate_user(&context, &caller, "bob", "").await;
        assert!(
            matches!(&again, Err(AdminError::FailedPrecondition(message)) if message.contains("is deactivated")),
            "{choice:?}: {again:?}"
        );
        let unsuspend = unsuspend_user(&context, &caller, "bob").await;
        assert!(
            matches!(unsuspend, Err(AdminError::FailedPrecondition(_))),
            "{choice:?}: {unsuspend:?}"
        );
        let entries = audit_entries(&context).await;
        let deactivations: Vec<_> = entries
            .iter()
            .filter(|(action, ..)| action == "user.deactivate")
            .map(|(_, target, succeeded, _)| (target.as_str(), *succeeded))
            .collect();
        assert_eq!(
            deactivations,
            [
                ("root@a.example", false),
                ("bob@a.example", true),
                ("bob@a.example", false)
            ],
            "{choice:?}"
        );
    }
}

#[tokio::test]
async fn a_user_is_shown_with_devices_stock_and_groups() {
    for choice in DatabaseChoice::ALL {
        let database = TestDatabase::create(choice).await;
        let clock = ManualClock::at(START_MS);
        let context = context_on(&database, clock.clone()).await;
        let bob = add_user(&context, "bob", "bob's password").await;
        let token = add_device(&context, &bob, D1).await;
        clock.advance(Duration::from_secs(10));
        add_device(&context, &bob, D2).await;
        add_key_packages(&context, D1, 3).await;
        let shared = join_group(&context, 1, "bob@a.example", D1).await;
        join_group(&context, 2, "bob@a.example", D1).await;
        let group =
            store::find_group_header(&context.store, &crate::rules::ids::GroupId::new(shared))
                .await
                .unwrap()
                .unwrap();
        let transaction = context.store.begin().await.unwrap();
        store::upsert_member(
            &transaction,
            group.key,
            NewMember {
                identity: &format!("bob@a.example/{D2}"),
                user_id: "bob@a.example",
                device_id: D2,
                joined_after_seq: crate::rules::ids::Seq::ZERO,
                remote_domain: None,
            },
        )
        .await
        .unwrap();
        transaction.commit().await.unwrap();
        clock.advance(Duration::from_secs(120));
        authenticate(&context, Some(&token)).await.unwrap();

        let detail = get_user(&context, "bob").await.unwrap();
        assert_eq!(detail.user.device_count, 2, "{choice:?}");
        assert_eq!(
            detail.user.last_seen_at_ms,
            Some(START_MS + 130_000),
            "{choice:?}"
        );
        let devices: Vec<_> = detail
            .devices
            .iter()
            .map(|device| {
                (
                    device.identity.device_id().as_str(),
                    device.key_packages,
                    device.has_last_resort,
                    device.groups,
                )
            })
            .collect();
        assert_eq!(devices, [(D1, 3, true, 2), (D2, 0, false, 1)], "{choice:?}");
        let groups: Vec<_> = detail
            .groups
            .iter()
            .map(|group| {
                (
                    group.group_id.clone(),
                    group.hub_domain.as_str(),
                    group.device_ids.clone(),
                )
            })
            .collect();
        assert_eq!(
            groups,
            [
                (vec![1], "a.example", vec![D1.to_owned(), D2.to_owned()]),
                (vec![2], "a.example", vec![D1.to_owned()]),
            ],
            "{choice:?}"
        );
        assert_eq!(
            list_devices(&context, "bob@a.example").await.unwrap(),
            detail.devices,
            "{choice:?}"
        );
        let unknown = get_user(&context, "carol").await;
        assert!(
            matches!(unknown, Err(AdminError::NotFound(_))),
            "{choice:?}: {unknown:?}"
        );
    }
}

#[tokio::test]
async fn last_seen_moves_at_most_once_a_minute() {
    for choice in DatabaseChoice::ALL {
        let database = TestDatabase::create(choice).await;
        let clock = ManualClock::at(START_MS);
        let context = context_on(&database, clock.clone()).await;
        let bob = add_user(&context, "bob", "bob's password").await;
        let token = add_device(&context, &bob, D1).await;
        let last_seen = || async {
            store::list_devices(&context.store, bob.key).await.unwrap()[0].last_seen_at_ms
        };
        clock.advance(Duration::from_secs(59));
        authenticate(&context, Some(&token)).await.unwrap();
        assert_eq!(last_seen().await, START_MS, "{choice:?}: within the minute");
        clock.advance(Duration::from_secs(1));
        authenticate(&context, Some(&token)).await.unwrap();
        assert_eq!(
            last_seen().await,
            START_MS + 60_000,
            "{choice:?}: a minute on"
        );
        clock.advance(Duration::from_secs(30));
        authenticate(&context, Some(&token)).await.unwrap();
        assert_eq!(last_seen().await, START_MS + 60_000, "{choice:?}");
        clock.advance(Duration::from_secs(45));
        authenticate(&context, Some(&token)).await.unwrap();
        assert_eq!(last_seen().await, START_MS + 135_000, "{choice:?}");
    }
}

#[tokio::test]
async fn users_are_listed_by_username_a_page_at_a_time() {
    for choice in DatabaseChoice::ALL {
        let database = TestDatabase::create(choice).await;
        let context = context_on(&database, ManualClock::at(START_MS)).await;
        for name in ["erin", "bob", "dave", "carol", "al_x", "alex"] {
            add_user(&context, name, "a password").await;
        }
        let mut seen = Vec::new();
        let mut token = String::new();
        let mut pages = 0;
        loop {
            let page = list_users(&context, "", 4, &token).await.unwrap();
            pages += 1;
            seen.extend(page.users.iter().map(|user| user.user_id.to_string()));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(pages, 2, "{choice:?}");
        assert_eq!(
            seen,
            ["al_x", "alex", "bob", "carol", "dave", "erin"]
                .map(|name| format!("{name}@a.example")),
            "{choice:?}"
        );
        // `_` is a character here, not LIKE's wildcard; case does not matter.
        let found = list_users(&context, "L_", 0, "").await.unwrap();
        let names: Vec<_> = found
            .users
            .iter()
            .map(|user| user.user_id.to_string())
            .collect();
        assert_eq!(names, ["al_x@a.example"], "{choice:?}");
        let refused = list_users(&context, "", 201, "").await;
        assert!(
            matches!(refused, Err(AdminError::Invalid(_))),
            "{choice:?}: {refused:?}"
        );
        let refused = list_users(&context, "", 0, "not a token!").await;
        assert!(
            matches!(refused, Err(AdminError::Invalid(_))),
            "{choice:?}: {refused:?}"
        );
    }
}

#[tokio::test]
async fn devices_low_on_key_packages_are_listed_emptiest_first_a_page_at_a_time() {
    for choice in DatabaseChoice::ALL {
        let database = TestDatabase::create(choice).await;
        let context = context_on(&database, ManualClock::at(START_MS)).await;
        let bob = add_user(&context, "bob", "bob's password").await;
        let carol = add_user(&context, "carol", "carol's password").await;
        add_device(&context, &bob, D1).await;
        add_device(&context, &bob, D2).await;
        add_device(&context, &carol, D3).await;
        let full = "00000000000000d4";
        add_device(&context, &carol, full).await;
        add_key_packages(&context, D1, 2).await;
        add_key_packages(&context, D3, 2).await;
        add_key_packages(&context, full, 5).await;
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let page = list_low_stock(&context, 3, 2, &token).await.unwrap();
            assert_eq!(page.threshold, 3, "{choice:?}");
            seen.extend(
                page.devices
                    .iter()
                    .map(|device| (device.identity.to_string(), device.key_packages)),
            );
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(
            seen,
            [
                (format!("bob@a.example/{D2}"), 0),
                (format!("bob@a.example/{D1}"), 2),
                (format!("carol@a.example/{D3}"), 2),
            ],
            "{choice:?}"
        );
        // The same devices the metric counts.
        let counted =
            store::count_devices_low_on_key_packages(&context.store, 3, context.now_ms(), 0)
                .await
                .unwrap();
        assert_eq!(counted, 3, "{choice:?}");
        let default = list_low_stock(&context, 0, 0, "").await.unwrap();
        assert_eq!(
            default.threshold, context.config.key_packages.low_stock_threshold,
            "{choice:?}"
        );
    }
}

/// Opens a Subscribe stream of the device with `token` on `context`'s
/// replica and returns what it sends.
async fn open_stream(
    context: &Arc<Context>,
    token: &str,
) -> tokio::sync::mpsc::Receiver<delivery::StreamItem> {
    let device = authenticate(context, Some(token)).await.unwrap();
    let slot = delivery::open_stream(context, &device, None).unwrap();
    let (sender, receiver) = tokio::sync::mpsc::channel(8);
    tokio::spawn(delivery::subscribe(context.clone(), device, slot, sender));
    receiver
}

/// The stream's last item, an error, then its end; within a deadline.
async fn stream_end(
    receiver: &mut tokio::sync::mpsc::Receiver<delivery::StreamItem>,
) -> DeliveryError {
    let ending = async {
        loop {
            match receiver.recv().await.map(|item| *item) {
                Some(Ok(_)) => continue,
                Some(Err(error)) => {
                    assert!(
                        receiver.recv().await.is_none(),
                        "the stream ends after its error"
                    );
                    return error;
                }
                None => panic!("the stream ended without an error"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), ending)
        .await
        .expect("the stream ends")
}

#[tokio::test]
async fn a_suspended_devices_stream_ends_at_once() {
    for choice in DatabaseChoice::ALL {
        let database = TestDatabase::create(choice).await;
        let context = Arc::new(context_on(&database, ManualClock::at(START_MS)).await);
        let bob = add_user(&context, "bob", "bob's password").await;
        let token = add_device(&context, &bob, D1).await;
        let mut stream = open_stream(&context, &token).await;
        suspend_user(&context, &AdminCaller::operator(), "bob", "")
            .await
            .unwrap();
        let end = stream_end(&mut stream).await;
        assert!(
            matches!(
                end,
                DeliveryError::AccessEnded(AccountError::AccountSuspended)
            ),
            "{choice:?}: {end:?}"
        );
        assert_eq!(context.subscribe_streams.open_count(), 0, "{choice:?}");
    }
}

/// Two replicas on one database whose wake-ups do not reach each other (as
/// when Redis drops a message): the other replica's stream of a suspended
/// device ends at its next resync, which finds the device refused.
#[tokio::test]
async fn a_stream_on_another_replica_ends_when_that_replica_learns_of_the_suspension() {
    let database = TestDatabase::create(DatabaseChoice::Postgres).await;
    let acting = context_on(&database, ManualClock::at(START_MS)).await;
    let other_store = Store::connect(database.url(), 2).await.unwrap();
    let streaming = Arc::new(Context::new(
        other_store,
        acting.config.clone(),
        ManualClock::at(START_MS),
    ));
    let bob = add_user(&acting, "bob", "bob's password").await;
    let token = add_device(&acting, &bob, D1).await;
    let mut stream = open_stream(&streaming, &token).await;
    let mut last_heads = std::collections::HashMap::new();
    // Wait until the stream runs: it registers its inbox in its first steps,
    // beside its device's access (which the session cache registered
    // already, when the stream's call was authenticated).
    tokio::time::timeout(Duration::from_secs(10), async {
        while !streaming
            .notifier
            .registered_topics()
            .contains(&crate::notify::Topic::Inbox(D1.to_owned()))
        {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the stream registers");
    crate::service::resync::resync_once(&streaming, &mut last_heads)
        .await
        .unwrap();
    assert!(
        stream.try_recv().is_err(),
        "an active device's stream goes on"
    );

    suspend_user(&acting, &AdminCaller::operator(), "bob", "")
        .await
        .unwrap();
    crate::service::resync::resync_once(&streaming, &mut last_heads)
        .await
        .unwrap();
    let end = stream_end(&mut stream).await;
    assert!(
        matches!(
            end,
            DeliveryError::AccessEnded(AccountError::AccountSuspended)
        ),
        "{end:?}"
    );
}

/// Two processes on one database whose wake-ups do not reach each other (a
/// replica that missed a Redis message; on SQLite, `conclave-homeserver
/// admin` acting beside the running server): the other process's cached
/// session of a revoked device is refused from its next resync on, which
/// finds the device gone and wakes its access topic.
#[tokio::test]
async fn a_session_cached_by_another_process_ends_at_its_next_resync() {
    for choice in DatabaseChoice::ALL {
        let database = TestDatabase::create(choice).await;
        let acting = context_on(&database, ManualClock::at(START_MS)).await;
        let other_store = Store::connect(database.url(), 2).await.unwrap();
        let other = Context::new(
            other_store,
            acting.config.clone(),
            ManualClock::at(START_MS),
        );
        let bob = add_user(&acting, "bob", "bob's password").await;
        let token = add_device(&acting, &bob, D1).await;
        authenticate(&other, Some(&token)).await.unwrap();

        revoke_device(&acting, &AdminCaller::operator(), "bob", D1)
            .await
            .unwrap();
        let refused = authenticate(&acting, Some(&token)).await;
        assert!(
            matches!(refused, Err(AccountError::InvalidToken)),
            "{choice:?}: {refused:?}"
        );
        // The other process heard nothing yet: its cache still answers.
        authenticate(&other, Some(&token)).await.unwrap();

        let mut last_heads = std::collections::HashMap::new();
        crate::service::resync::resync_once(&other, &mut last_heads)
            .await
            .unwrap();
        let refused = authenticate(&other, Some(&token)).await;
        assert!(
            matches!(refused, Err(AccountError::InvalidToken)),
            "{choice:?}: {refused:?}"
        );
    }
}
