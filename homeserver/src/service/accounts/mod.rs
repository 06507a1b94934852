//! Accounts and devices: registration, login, logout, bearer-token authentication
//! and device management. Enrolling a device binds its credential identity
//! `name@domain/device_id` to its signature key: this is the homeserver acting as
//! its domain's MLS Authentication Service.
//!
//! Register and Login enrol a device only with proof that it holds the private
//! key it enrols: a signature over a transcript that binds a fresh challenge from
//! `begin_enrolment` (`rules::enrolment`, `conclave_core::enrolment`).
//!
//! # Layout
//! One use case per file: `begin_enrolment`, `register`, `login`, `logout`,
//! `authenticate` (with `session_cache`), `list_devices`, `remove_device`;
//! `enrolment` holds the steps register and login share (the proof of
//! possession, and binding the device). This module holds what they share: the
//! error, the authenticated device, the session.

mod authenticate;
mod begin_enrolment;
mod enrolment;
mod list_devices;
mod login;
mod logout;
mod register;
mod remove_device;
mod session_cache;

pub(crate) use authenticate::authenticate;
pub(crate) use begin_enrolment::begin_enrolment;
pub(crate) use list_devices::list_devices;
pub(crate) use login::{Login, login};
pub(crate) use logout::logout;
pub(crate) use register::{Registration, register};
pub(crate) use remove_device::remove_device;
pub(crate) use session_cache::SessionCache;

use super::Context;
use super::secrets::PasswordHashError;
use crate::metrics::RateLimit;
use crate::rules::account::AccountRuleError;
use crate::rules::attempt_limits::{Attempt, AttemptRefusal, Limit};
use crate::rules::enrolment::PossessionRefusal;
use crate::rules::registration::RegistrationRefusal;
use crate::store::{StoreError, UserKey};
use conclave_core::ids::{CredentialIdentity, DeviceId, UserId, Username};

/// Why an account request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AccountError {
    /// The request is malformed.
    #[error(transparent)]
    Invalid(#[from] AccountRuleError),
    /// The device did not prove it holds the key it enrols, or its challenge is
    /// stale.
    #[error(transparent)]
    Possession(#[from] PossessionRefusal),
    /// The username is taken.
    #[error("username {0} is already taken")]
    UsernameTaken(Username),
    /// The signature key is bound to another device already.
    #[error("this signature key is already bound to another device; generate a new key pair")]
    SignatureKeyTaken,
    /// The registration policy refused, or the registration token did.
    #[error(transparent)]
    RegistrationRefused(#[from] RegistrationRefusal),
    /// A brute-force limit refused the attempt before any password was hashed.
    #[error(transparent)]
    TooManyAttempts(#[from] AttemptRefusal),
    /// Wrong username or password (deliberately one error for both).
    #[error("wrong username or password")]
    WrongCredentials,
    /// No `authorization: Bearer` metadata.
    #[error("missing access token: send the metadata 'authorization: Bearer <token>'")]
    MissingToken,
    /// The token is unknown or was revoked.
    #[error("the access token is invalid or was revoked; log in again")]
    InvalidToken,
    /// An administrator suspended the account: its devices' calls and its
    /// logins are refused until the suspension is lifted.
    #[error("this account is suspended")]
    AccountSuspended,
    /// An administrator deactivated the account for good.
    #[error("this account is deactivated")]
    AccountDeactivated,
    /// The caller has no device with that id (as the request spelled it).
    #[error("you have no device {0}")]
    UnknownDevice(String),
    /// A password could not be hashed or checked.
    #[error(transparent)]
    PasswordHash(#[from] PasswordHashError),
    /// The database failed, or holds a value that does not fit its type.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A device whose bearer token checked out.
#[derive(Debug, Clone)]
pub(crate) struct AuthenticatedDevice {
    /// The user the device belongs to.
    pub(crate) user: UserKey,
    pub(crate) identity: CredentialIdentity,
    pub(crate) signature_public_key: Vec<u8>,
}

impl AuthenticatedDevice {
    pub(crate) fn user_id(&self) -> &UserId {
        self.identity.user_id()
    }

    pub(crate) fn device_id(&self) -> &DeviceId {
        self.identity.device_id()
    }
}

/// The device to enrol, with its proof of possession.
pub(crate) struct Enrolment {
    pub(crate) signature_public_key: Vec<u8>,
    pub(crate) display_name: String,
    /// From BeginEnrolment; empty if the request carries none.
    pub(crate) challenge: Vec<u8>,
    /// The key's signature over the enrolment transcript; empty if none.
    pub(crate) possession_signature: Vec<u8>,
}

/// A new device's session, returned once.
pub(crate) struct Session {
    pub(crate) identity: CredentialIdentity,
    pub(crate) access_token: String,
}

/// By hand: the access token must never reach a log or a panic message.
impl std::fmt::Debug for Session {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Session")
            .field("identity", &self.identity)
            .field("access_token", &"<redacted>")
            .finish()
    }
}

/// The credential identity of a device of a user of this domain.
pub(crate) fn identity_of(
    context: &Context,
    username: &Username,
    device_id: &DeviceId,
) -> CredentialIdentity {
    CredentialIdentity::new(
        UserId::new(username.clone(), context.domain.clone()),
        device_id.clone(),
    )
}

/// Passes `attempt` through the attempt limits (in-process or shared, the
/// limiter decides), counting a refusal in `conclave_ratelimit_rejections_total`
/// once, here, whichever implementation refused it.
pub(crate) async fn admit_attempt(
    context: &Context,
    attempt: Attempt,
) -> Result<(), AttemptRefusal> {
    let is_login = matches!(attempt, Attempt::Login { .. });
    context
        .attempt_limiter
        .admit(attempt, context.now_ms())
        .await
        .inspect_err(|refusal| {
            let limit = match (refusal.limit, is_login) {
                (Limit::LoginBackoff, _) => RateLimit::LoginBackoff,
                (Limit::SourceRate, true) => RateLimit::LoginAttempts,
                (Limit::SourceRate, false) => RateLimit::RegisterAttempts,
            };
            context.metrics.count_rejection(limit);
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::rules::attempt_limits::Source;
    use crate::service::{SystemClock, secrets};
    use crate::store::{self, Store};
    use conclave_test_support::{DatabaseChoice, TestDatabase};
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    const SOURCE: Source = Source::V4(Ipv4Addr::LOCALHOST);

    #[test]
    fn a_session_is_debugged_without_its_token() {
        let session = Session {
            identity: "alice@a.example/0123456789abcdef".parse().unwrap(),
            access_token: "bearer-9c1e5d".to_owned(),
        };
        let shown = format!("{session:?}");
        assert!(!shown.contains("bearer-9c1e5d"), "{shown}");
        assert!(shown.contains("0123456789abcdef"), "{shown}");
    }

    fn enrolment() -> Enrolment {
        Enrolment {
            signature_public_key: vec![7; 32],
            display_name: "laptop".to_owned(),
            // Never looked at: the attempt limit refuses first.
            challenge: Vec::new(),
            possession_signature: Vec::new(),
        }
    }

    /// A context whose password hasher has no slot: a hash would wait for one
    /// that never comes and end in `PasswordHashError::Busy` (after 30 s), so
    /// any other answer shows that nothing was hashed. The source's bucket
    /// holds one attempt, spent here, so the next attempt is refused.
    async fn context_with_spent_bucket(database: &TestDatabase) -> Context {
        let store = Store::connect(database.url(), 2).await.unwrap();
        store.migrate().await.unwrap();
        let mut config = Config::default();
        config.limits.auth_attempt_burst = 1;
        config.limits.auth_attempts_per_minute = 1;
        let mut context = Context::new(store, config, Arc::new(SystemClock));
        context.password_hasher = secrets::PasswordHasher::with_slots(0);
        let now_ms = context.now_ms();
        context
            .attempt_limiter
            .admit(Attempt::Register { source: SOURCE }, now_ms)
            .await
            .unwrap();
        context
    }

    #[tokio::test]
    async fn refused_attempts_hash_nothing_and_write_nothing() {
        for choice in DatabaseChoice::ALL {
            let database = TestDatabase::create(choice).await;
            let context = context_with_spent_bucket(&database).await;
            let registration = Registration {
                username: "alice".to_owned(),
                password: "correct horse battery staple".to_owned(),
                registration_token: String::new(),
                device: enrolment(),
            };
            let refused = register(&context, SOURCE, registration).await;
            assert!(
                matches!(&refused, Err(AccountError::TooManyAttempts(refusal)) if refusal.limit == Limit::SourceRate),
                "{choice:?}: {refused:?}"
            );
            let alice: Username = "alice".parse().unwrap();
            let stored = store::find_user_by_username(&context.store, &alice).await;
            assert!(stored.unwrap().is_none(), "{choice:?}: alice was created");
            let rejections = |limit| context.metrics.rejections(limit);
            assert_eq!(rejections(RateLimit::RegisterAttempts), 1, "{choice:?}");
            assert_eq!(rejections(RateLimit::LoginAttempts), 0, "{choice:?}");

            let login_attempt = Login {
                username: "alice".to_owned(),
                password: "guess".to_owned(),
                device: enrolment(),
            };
            let refused = login(&context, SOURCE, login_attempt).await;
            assert!(
                matches!(&refused, Err(AccountError::TooManyAttempts(_))),
                "{choice:?}: {refused:?}"
            );
            assert_eq!(rejections(RateLimit::LoginAttempts), 1, "{choice:?}");
            assert_eq!(rejections(RateLimit::RegisterAttempts), 1, "{choice:?}");
        }
    }
}
