//! Accounts and devices: registration, login, logout, bearer-token authentication
//! and device management. Enrolling a device binds its credential identity
//! `name@domain/device_id` to its signature key: this is the homeserver acting as
//! its domain's MLS Authentication Service.

use super::{Context, InternalError, registration_tokens, secrets};
use crate::config::RegistrationPolicy;
use crate::rules::account::{
    AccountRuleError, check_display_name, check_password, check_signature_key, parse_login_name,
};
use crate::store::{self, DeviceRecord, NewDevice};
use conclave_core::ids::{CredentialIdentity, DeviceId, UserId, Username};

/// How often, at most, a device's `last_seen_at` is written.
const LAST_SEEN_GRANULARITY_MS: i64 = 60_000;

/// Why an account request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AccountError {
    /// The request is malformed.
    #[error(transparent)]
    Invalid(#[from] AccountRuleError),
    /// The username is taken.
    #[error("username {0} is already taken")]
    UsernameTaken(String),
    /// The signature key is bound to another device already.
    #[error("this signature key is already bound to another device; generate a new key pair")]
    SignatureKeyTaken,
    /// Registration is closed on this homeserver.
    #[error("registration is closed on this homeserver")]
    RegistrationClosed,
    /// The `token` policy is on and the token is missing.
    #[error("this homeserver requires a registration token")]
    RegistrationTokenMissing,
    /// The token is unknown, expired or used up.
    #[error("the registration token is unknown, expired or used up")]
    RegistrationTokenRejected,
    /// Wrong username or password (deliberately one error for both).
    #[error("wrong username or password")]
    WrongCredentials,
    /// No `authorization: Bearer` metadata.
    #[error("missing access token: send the metadata 'authorization: Bearer <token>'")]
    MissingToken,
    /// The token is unknown or was revoked.
    #[error("the access token is invalid or was revoked; log in again")]
    InvalidToken,
    /// The caller has no device with that id.
    #[error("you have no device {0}")]
    UnknownDevice(String),
    #[error(transparent)]
    Internal(#[from] InternalError),
}

impl From<store::StoreError> for AccountError {
    fn from(error: store::StoreError) -> Self {
        AccountError::Internal(error.into())
    }
}

/// A device whose bearer token checked out.
#[derive(Debug, Clone)]
pub(crate) struct AuthenticatedDevice {
    pub(crate) user_row_id: i64,
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

/// The device to enrol.
pub(crate) struct Enrolment {
    pub(crate) signature_public_key: Vec<u8>,
    pub(crate) display_name: String,
}

/// A new device's session, returned once.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) identity: CredentialIdentity,
    pub(crate) access_token: String,
}

pub(crate) struct Registration {
    pub(crate) username: String,
    pub(crate) password: String,
    pub(crate) registration_token: String,
    pub(crate) device: Enrolment,
}

pub(crate) async fn register(
    context: &Context,
    request: Registration,
) -> Result<Session, AccountError> {
    let username: Username = request.username.parse().map_err(AccountRuleError::from)?;
    check_password(&request.password)?;
    check_enrolment(&request.device)?;
    let token_hash = match context.config.registration.policy {
        RegistrationPolicy::Closed => return Err(AccountError::RegistrationClosed),
        RegistrationPolicy::Token if request.registration_token.is_empty() => {
            return Err(AccountError::RegistrationTokenMissing);
        }
        RegistrationPolicy::Token => Some(secrets::hash_token(&request.registration_token)),
        RegistrationPolicy::Open => None,
    };
    // Cheap refusals before the expensive hash; the transaction below re-checks
    // (spends the token, inserts through the unique keys), which is what actually
    // guarantees both. The token comes first so that without a valid one nobody
    // can probe which usernames exist.
    if let Some(token_hash) = &token_hash
        && !store::registration_token_usable(&context.store, token_hash, context.now_ms()).await?
    {
        return Err(AccountError::RegistrationTokenRejected);
    }
    if store::find_user_by_username(&context.store, username.as_str())
        .await?
        .is_some()
    {
        return Err(AccountError::UsernameTaken(username.to_string()));
    }
    let password_hash = secrets::hash_password(request.password).await?;
    let now_ms = context.now_ms();
    let transaction = context.store.begin().await?;
    if let Some(token_hash) = token_hash
        && !registration_tokens::consume(&transaction, &token_hash, now_ms).await?
    {
        return Err(AccountError::RegistrationTokenRejected);
    }
    let user = store::insert_user(&transaction, username.as_str(), &password_hash, now_ms)
        .await?
        .ok_or_else(|| AccountError::UsernameTaken(username.to_string()))?;
    let session = enrol_device(context, &transaction, user.id, &username, request.device).await?;
    transaction.commit().await?;
    tracing::info!(user = %session.identity.user_id(), device = %session.identity.device_id(), "registered");
    Ok(session)
}

pub(crate) struct Login {
    pub(crate) username: String,
    pub(crate) password: String,
    pub(crate) device: Enrolment,
}

pub(crate) async fn login(context: &Context, request: Login) -> Result<Session, AccountError> {
    let username = parse_login_name(&request.username, &context.domain)?;
    check_enrolment(&request.device)?;
    let user = store::find_user_by_username(&context.store, username.as_str()).await?;
    let password_matches = secrets::verify_password(
        request.password,
        user.as_ref().map(|user| user.password_hash.clone()),
    )
    .await?;
    let user = match user {
        Some(user) if password_matches => user,
        _ => return Err(AccountError::WrongCredentials),
    };
    let transaction = context.store.begin().await?;
    let session = enrol_device(context, &transaction, user.id, &username, request.device).await?;
    transaction.commit().await?;
    tracing::info!(user = %session.identity.user_id(), device = %session.identity.device_id(), "logged in");
    Ok(session)
}

fn check_enrolment(device: &Enrolment) -> Result<(), AccountRuleError> {
    check_signature_key(&device.signature_public_key)?;
    check_display_name(&device.display_name)
}

async fn enrol_device(
    context: &Context,
    transaction: &store::Transaction,
    user_row_id: i64,
    username: &Username,
    device: Enrolment,
) -> Result<Session, AccountError> {
    if store::signature_key_in_use(transaction, &device.signature_public_key).await? {
        return Err(AccountError::SignatureKeyTaken);
    }
    let device_id = DeviceId::from_random_bytes(secrets::random_bytes_8());
    let access_token = secrets::new_token();
    let inserted = store::insert_device(
        transaction,
        NewDevice {
            device_id: device_id.as_str(),
            user_id: user_row_id,
            display_name: &device.display_name,
            signature_public_key: &device.signature_public_key,
            access_token_hash: &secrets::hash_token(&access_token),
            now_ms: context.now_ms(),
        },
    )
    .await?;
    if !inserted {
        // The key check above ran in this transaction, but a concurrent login may
        // have committed the same key since; the unique key caught it. (A device id
        // collision, 1 in 2^64, lands here too and the client simply retries.)
        return Err(AccountError::SignatureKeyTaken);
    }
    let user_id = UserId::new(username.clone(), context.domain.clone());
    Ok(Session {
        identity: CredentialIdentity::new(user_id, device_id),
        access_token,
    })
}

/// Resolves a bearer token to its device.
pub(crate) async fn authenticate(
    context: &Context,
    access_token: Option<&str>,
) -> Result<AuthenticatedDevice, AccountError> {
    let access_token = access_token.ok_or(AccountError::MissingToken)?;
    let (device, user) =
        store::find_device_by_token_hash(&context.store, &secrets::hash_token(access_token))
            .await?
            .ok_or(AccountError::InvalidToken)?;
    store::touch_device(
        &context.store,
        &device.id,
        context.now_ms(),
        LAST_SEEN_GRANULARITY_MS,
    )
    .await?;
    let identity = identity_of(context, &user.username, &device)?;
    Ok(AuthenticatedDevice {
        user_row_id: user.id,
        identity,
        signature_public_key: device.signature_public_key,
    })
}

/// Rebuilds the credential identity of a stored device.
pub(crate) fn identity_of(
    context: &Context,
    username: &str,
    device: &DeviceRecord,
) -> Result<CredentialIdentity, AccountError> {
    // Both were validated before they were stored; a failure means the database
    // was edited by hand, which is the server's problem, not the client's.
    let corrupt = |what: &str| {
        AccountError::Internal(InternalError::Corrupt(format!(
            "{what} of device {} is not valid",
            device.id
        )))
    };
    let username: Username = username.parse().map_err(|_| corrupt("username"))?;
    let device_id: DeviceId = device.id.parse().map_err(|_| corrupt("device id"))?;
    Ok(CredentialIdentity::new(
        UserId::new(username, context.domain.clone()),
        device_id,
    ))
}

/// Logs the calling device out: it is removed with its token and key packages.
pub(crate) async fn logout(
    context: &Context,
    device: &AuthenticatedDevice,
) -> Result<(), AccountError> {
    remove_device(context, device, device.device_id().as_str()).await
}

pub(crate) async fn list_devices(
    context: &Context,
    device: &AuthenticatedDevice,
) -> Result<Vec<DeviceRecord>, AccountError> {
    Ok(store::list_devices(&context.store, device.user_row_id).await?)
}

/// Removes one of the caller's own devices.
pub(crate) async fn remove_device(
    context: &Context,
    caller: &AuthenticatedDevice,
    device_id: &str,
) -> Result<(), AccountError> {
    if !store::delete_device(&context.store, caller.user_row_id, device_id).await? {
        return Err(AccountError::UnknownDevice(device_id.to_owned()));
    }
    tracing::info!(user = %caller.user_id(), device = device_id, by = %caller.device_id(), "device removed");
    Ok(())
}
