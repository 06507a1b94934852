//! Administering the domain (`conclave.admin.v1`, the web console and
//! `conclave-homeserver admin`): one use case per file, each called with the
//! [`AdminCaller`] it acts for, and each recording its outcome in the audit
//! log (`audit::record`), refusals included. Read-only listings are not
//! audited (the export of the audit log is).
//!
//! # Layout
//! - this module: who acts ([`Actor`], [`AdminCaller`]), the one error
//!   ([`AdminError`]) and [`parse_local_user`].
//! - `paging`: page size and opaque page tokens of the listings.
//! - `audit`: writing the audit log.
//! - `login`, `authenticate`: admin sessions: opened with a password, checked
//!   on every call, ended by logout, by time, or with the account's role.
//! - `grant_role`, `revoke_role`: the admin role, given and taken on the
//!   server's host.
//! - `list_audit_entries`, `export_audit_log`: reading the audit log.
//! - `overview`: counts and warnings for the console's front page.
//! - `list_groups`, `inspect_group` (and `group_name`, a hosted group's name
//!   from its public state): groups without any message content.
//! - `create_registration_token`, `list_registration_tokens`,
//!   `revoke_registration_token` (and `registration_token_view`, a token as
//!   administrators see it).
//! - `users/`: accounts and devices (list, show, suspend, unsuspend,
//!   deactivate, revoke a device, devices low on key packages).
//! - `list_peers`, `federation_doctor`, `check_own_certificate`: the
//!   federation's peers, the doctor against one peer, and the checks of our
//!   own federation certificate.

pub(crate) mod audit;
pub(crate) mod authenticate;
pub(crate) mod check_own_certificate;
pub(crate) mod create_registration_token;
pub(crate) mod export_audit_log;
pub(crate) mod federation_doctor;
pub(crate) mod grant_role;
pub(crate) mod group_name;
pub(crate) mod inspect_group;
pub(crate) mod list_audit_entries;
pub(crate) mod list_groups;
pub(crate) mod list_peers;
pub(crate) mod list_registration_tokens;
pub(crate) mod login;
pub(crate) mod overview;
pub(crate) mod paging;
pub(crate) mod registration_token_view;
pub(crate) mod revoke_registration_token;
pub(crate) mod revoke_role;
pub(crate) mod users;

pub(crate) use authenticate::end_admin_sessions;

use super::Context;
use super::secrets::PasswordHashError;
use crate::rules::account::parse_login_name;
use crate::rules::attempt_limits::AttemptRefusal;
use crate::store::{self, StoreError, UserKey, UserRecord};
use conclave_core::ids::{UserId, Username};
use std::net::IpAddr;

/// Who performs an admin action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Actor {
    /// An administrator, through an admin session (the API or the console).
    Admin { user: UserKey, user_id: UserId },
    /// `conclave-homeserver admin ...` on the server's host: whoever can read
    /// the configuration and reach the database is trusted as the operator.
    Operator,
}

/// The actor of an admin action, and where the call came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AdminCaller {
    pub(crate) actor: Actor,
    /// The caller's IP address (for the console, its browser's); `None` on
    /// the command line.
    pub(crate) address: Option<IpAddr>,
}

impl AdminCaller {
    /// The operator on the server's host.
    pub(crate) fn operator() -> AdminCaller {
        AdminCaller {
            actor: Actor::Operator,
            address: None,
        }
    }

    /// The actor as the audit log names it: `alice@a.example`, or `operator`.
    pub(crate) fn actor_name(&self) -> String {
        match &self.actor {
            Actor::Admin { user_id, .. } => user_id.to_string(),
            Actor::Operator => OPERATOR.to_owned(),
        }
    }
}

/// The audit log's name for the command line's actor.
pub(crate) const OPERATOR: &str = "operator";

/// Why an admin request failed. Every variant's message is sent to the caller.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AdminError {
    /// A field is missing or malformed; the message names it.
    #[error("{0}")]
    Invalid(String),
    /// The user, device, token, group or peer named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The action does not apply to the target's state; the message says
    /// which state it is in.
    #[error("{0}")]
    FailedPrecondition(String),
    /// No admin session, an unknown or ended one, or a wrong password.
    #[error("{0}")]
    Unauthenticated(String),
    /// The account has no admin role.
    #[error("{0}")]
    PermissionDenied(String),
    /// A login limit refused the attempt before any password was hashed.
    #[error(transparent)]
    TooManyAttempts(#[from] AttemptRefusal),
    /// A password could not be checked (hashing overloaded, or a stored hash
    /// unreadable).
    #[error(transparent)]
    PasswordHash(#[from] PasswordHashError),
    /// The database failed, or holds a value that does not fit its type.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Something on the server's side failed; the message is logged, not sent.
    #[allow(
        dead_code,
        reason = "for the use cases of the other admin areas (users, groups, federation)"
    )]
    #[error("{0}")]
    Internal(String),
}

/// The username of a user of this domain, written `alice` or
/// `alice@<this domain>`; another domain's user is [`AdminError::Invalid`]
/// (an administrator acts on their own domain's accounts only).
pub(crate) fn parse_local_user(context: &Context, text: &str) -> Result<Username, AdminError> {
    parse_login_name(text.trim(), &context.domain)
        .map_err(|error| AdminError::Invalid(error.to_string()))
}

/// The account named `username`, or [`AdminError::NotFound`].
pub(crate) async fn find_local_user(
    context: &Context,
    username: &Username,
) -> Result<UserRecord, AdminError> {
    store::find_user_by_username(&context.store, username)
        .await?
        .ok_or_else(|| {
            AdminError::NotFound(format!("there is no user {}", user_id(context, username)))
        })
}

/// `name@domain` of a user of this domain.
pub(crate) fn user_id(context: &Context, username: &Username) -> UserId {
    UserId::new(username.clone(), context.domain.clone())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::Config;
    use crate::service::SystemClock;
    use crate::store::Store;
    use conclave_test_support::TestDatabase;
    use std::sync::Arc;

    /// A clock that tests move by hand.
    #[derive(Debug)]
    pub(crate) struct ManualClock(pub(crate) std::sync::atomic::AtomicI64);

    impl ManualClock {
        pub(crate) fn starting_now() -> Arc<ManualClock> {
            use crate::service::Clock as _;
            Arc::new(ManualClock(SystemClock.now_ms().into()))
        }

        pub(crate) fn advance_ms(&self, by_ms: i64) {
            self.0.fetch_add(by_ms, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl crate::service::Clock for ManualClock {
        fn now_ms(&self) -> i64 {
            self.0.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    /// A migrated store on `database` and a context for `a.example` with
    /// `clock`.
    pub(crate) async fn context_on(
        database: &TestDatabase,
        clock: Arc<dyn crate::service::Clock>,
    ) -> Context {
        let store = Store::connect(database.url(), 2).await.unwrap();
        store.migrate().await.unwrap();
        let config = Config {
            domain: "a.example".to_owned(),
            ..Config::default()
        };
        Context::new(store, config, clock)
    }

    #[tokio::test]
    async fn local_users_are_named_with_or_without_the_domain() {
        let database = TestDatabase::create(conclave_test_support::DatabaseChoice::Sqlite).await;
        let context = context_on(&database, Arc::new(SystemClock)).await;
        let alice: Username = "alice".parse().unwrap();
        for text in ["alice", "alice@a.example", " alice "] {
            assert_eq!(parse_local_user(&context, text).unwrap(), alice, "{text}");
        }
        for text in ["alice@b.example", "", "Alice!", "@a.example"] {
            let refused = parse_local_user(&context, text);
            assert!(
                matches!(refused, Err(AdminError::Invalid(_))),
                "{text}: {refused:?}"
            );
        }
        let refused = find_local_user(&context, &alice).await;
        assert!(
            matches!(&refused, Err(AdminError::NotFound(message)) if message == "there is no user alice@a.example"),
            "{refused:?}"
        );
    }

    /// Adds the account `username` with `password` (hashed as Register does).
    pub(crate) async fn add_user(context: &Context, username: &str, password: &str) -> UserRecord {
        let hash = context
            .password_hasher
            .hash_password(password.to_owned())
            .await
            .unwrap();
        let username: Username = username.parse().unwrap();
        store::insert_user(&context.store, &username, &hash, context.now_ms())
            .await
            .unwrap()
            .expect("a new username")
    }

    /// Enrols device `device_id` of `user` with the bearer token `token-<id>`.
    pub(crate) async fn add_device(
        context: &Context,
        user: &store::UserRecord,
        device_id: &str,
    ) -> String {
        let token = format!("token-{device_id}");
        let device_id: conclave_core::ids::DeviceId = device_id.parse().unwrap();
        let new_device = store::NewDevice {
            device_id: &device_id,
            user: user.key,
            display_name: "laptop",
            signature_public_key: device_id.as_str().as_bytes(),
            access_token_hash: &crate::service::secrets::hash_token(&token),
            now_ms: context.now_ms(),
        };
        assert!(
            store::insert_device(&context.store, new_device)
                .await
                .unwrap()
        );
        token
    }

    /// The caller acting as the administrator `user`, from `address`.
    pub(crate) fn admin_caller(context: &Context, user: &UserRecord, address: &str) -> AdminCaller {
        AdminCaller {
            actor: Actor::Admin {
                user: user.key,
                user_id: user_id(context, &user.username),
            },
            address: Some(address.parse().unwrap()),
        }
    }

    #[tokio::test]
    async fn actors_are_named_for_the_audit_log() {
        let database = TestDatabase::create(conclave_test_support::DatabaseChoice::Sqlite).await;
        let context = context_on(&database, Arc::new(SystemClock)).await;
        let alice = add_user(&context, "alice", "alice's password").await;
        assert!(!alice.is_admin, "a new account is no administrator");
        let admin = admin_caller(&context, &alice, "192.0.2.1");
        assert_eq!(admin.actor_name(), "alice@a.example");
        assert_eq!(AdminCaller::operator().actor_name(), "operator");
        assert_eq!(AdminCaller::operator().address, None);
    }
}
