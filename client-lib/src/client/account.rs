//! Enrolling, describing and removing this device: register, login, logout,
//! whoami, and the account's device list.

use crate::call_tracing::TracedChannel;
use chrono::{DateTime, Utc};
use conclave_core::ids::{CredentialIdentity, DeviceId, Domain, UserId, Username};
use conclave_proto::client::v1 as proto;
use openmls_basic_credential::SignatureKeyPair;

use super::{Client, call, invalid_response, to_datetime};
use crate::connection::{BearerAuth, account_client};
use crate::error::ClientError;
use crate::mls;
use crate::server_url::ServerUrl;
use crate::session::{AccessToken, Session};

use super::groups::{GroupId, display};
use super::key_packages::PublishOutcome;
use crate::state::GroupStatus;
use crate::state::groups as stored;

/// A device just enrolled by register or login, and the key packages it published.
#[derive(Debug, Clone)]
pub struct Enrolment {
    pub session: Session,
    /// What the automatic first publication did.
    pub key_packages: PublishOutcome,
}

/// What [`Client::logout`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedOut {
    /// The session that ended.
    pub session: Session,
    /// The groups the device was a member of, by name then id: the homeserver
    /// announced its departure in each, and their remaining members' clients
    /// commit its removal.
    pub groups: Vec<GroupRef>,
}

/// A group, named for a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRef {
    pub group_id: GroupId,
    /// Its name, or its hex id if it has none.
    pub name: String,
}

/// The homeserver's view of this device's session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhoAmI {
    pub server_url: ServerUrl,
    /// `name@domain/device_id`, which also carries the user and device ids.
    pub credential_identity: CredentialIdentity,
}

impl WhoAmI {
    pub fn user_id(&self) -> &UserId {
        self.credential_identity.user_id()
    }

    pub fn device_id(&self) -> &DeviceId {
        self.credential_identity.device_id()
    }
}

/// One device of the account, as listed by the homeserver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub device_id: DeviceId,
    pub display_name: String,
    /// The Ed25519 key the homeserver bound to the device.
    pub signature_public_key: Vec<u8>,
    pub created_at: Option<DateTime<Utc>>,
    /// Last authenticated request (the server updates it at most once a minute).
    pub last_seen_at: Option<DateTime<Utc>>,
    /// Whether this is the device making the request.
    pub current: bool,
    /// Ordinary key packages of the device still claimable.
    pub key_packages_available: u32,
}

/// Who a login or register must come back as.
enum ExpectedUser {
    /// A bare username: any domain (the server's own) will do.
    Name(Username),
    /// A full user id: exactly that user.
    Id(UserId),
}

impl Client {
    /// Creates the account `username@<server domain>` with this state as its first
    /// device, stores the session, and publishes key packages.
    ///
    /// Refused if this state already holds a session. If the account is created
    /// but publishing fails, the session is kept and
    /// [`ClientError::PublishAfterEnrolment`] says so.
    pub async fn register(
        &self,
        server_url: &ServerUrl,
        username: &str,
        password: &str,
        registration_token: Option<String>,
        device_name: &str,
    ) -> Result<Enrolment, ClientError> {
        let username: Username = username.parse()?;
        self.refuse_if_logged_in()?;
        let signer = mls::generate_signer()?;
        let channel = self.channel(server_url).await?;
        let device =
            proved_enrolment("register", &channel, &signer, &username, None, device_name).await?;
        let request = proto::RegisterRequest {
            username: username.to_string(),
            password: password.to_owned(),
            registration_token: registration_token.unwrap_or_default(),
            device: Some(device),
        };
        let reply = call(
            "register",
            account_client(channel, BearerAuth::none()).register(request),
        )
        .await?;
        let session = session_from_reply(
            "register",
            server_url,
            reply,
            &signer,
            &ExpectedUser::Name(username),
        )?;
        self.finish_enrolment("register", session, &signer).await
    }

    /// Enrols this state as a new device of an existing account. `user` is the
    /// username (`alice`) or the full user id (`alice@example.org`).
    ///
    /// Refused with "already logged in as ...; log out first" if this state holds
    /// a session. Publishes key packages like [`Client::register`].
    pub async fn login(
        &self,
        server_url: &ServerUrl,
        user: &str,
        password: &str,
        device_name: &str,
    ) -> Result<Enrolment, ClientError> {
        // Parse before anything else so a typo is reported without a round trip.
        let expected = if user.contains('@') {
            ExpectedUser::Id(user.parse()?)
        } else {
            ExpectedUser::Name(user.parse()?)
        };
        self.refuse_if_logged_in()?;
        let signer = mls::generate_signer()?;
        let channel = self.channel(server_url).await?;
        let (username, domain) = match &expected {
            ExpectedUser::Name(username) => (username, None),
            ExpectedUser::Id(user_id) => (user_id.username(), Some(user_id.domain())),
        };
        let device =
            proved_enrolment("login", &channel, &signer, username, domain, device_name).await?;
        let request = proto::LoginRequest {
            username: user.to_owned(),
            password: password.to_owned(),
            device: Some(device),
        };
        let reply = call(
            "login",
            account_client(channel, BearerAuth::none()).login(request),
        )
        .await?;
        let session = session_from_reply("login", server_url, reply, &signer, &expected)?;
        self.finish_enrolment("login", session, &signer).await
    }

    /// Ends this device's session on the homeserver (which removes the device and
    /// its unclaimed key packages), then forgets the device locally: the session
    /// and all MLS state. The remembered server URL stays.
    ///
    /// The homeserver announces the device's departure in each of its groups
    /// (the report names them), and their remaining members' clients commit
    /// its removal. The local history goes with the keys.
    ///
    /// If the server no longer accepts the session (the device was removed from
    /// another one), the local state is forgotten all the same. If the server
    /// cannot be reached, nothing changes, so the logout can be retried.
    pub async fn logout(&self) -> Result<LoggedOut, ClientError> {
        let (session, channel, auth) = self.authenticated().await?;
        let groups = self
            .state()
            .read(|_, connection| stored::groups(connection))?;
        let groups = groups
            .iter()
            .filter(|row| matches!(row.status, GroupStatus::Active | GroupStatus::Rejoining))
            .map(|row| GroupRef {
                group_id: GroupId::from_bytes(row.group_id.clone()),
                name: display(row),
            })
            .collect();
        let result = call(
            "log out",
            account_client(channel, auth).logout(proto::LogoutRequest {}),
        )
        .await;
        match result {
            Ok(_) => {}
            Err(error) if error.rpc_code() == Some(tonic::Code::Unauthenticated) => {
                tracing::warn!("the server no longer knew this session; forgetting it locally");
            }
            Err(error) => return Err(error),
        }
        self.state().wipe_device()?;
        Ok(LoggedOut { session, groups })
    }

    /// Asks the homeserver who this device is, and checks it agrees with the
    /// stored session.
    pub async fn whoami(&self) -> Result<WhoAmI, ClientError> {
        let (session, channel, auth) = self.authenticated().await?;
        let reply = call(
            "whoami",
            account_client(channel, auth).who_am_i(proto::WhoAmIRequest {}),
        )
        .await?;
        let credential_identity: CredentialIdentity = reply
            .credential_identity
            .parse()
            .map_err(|error| invalid_response("whoami", format!("{error}")))?;
        if credential_identity != session.credential_identity
            || reply.user_id != session.user_id().to_string()
            || reply.device_id != session.device_id().as_str()
        {
            return Err(invalid_response(
                "whoami",
                format!(
                    "the server says this device is {credential_identity} but it is enrolled as {}",
                    session.credential_identity
                ),
            ));
        }
        Ok(WhoAmI {
            server_url: session.server_url,
            credential_identity,
        })
    }

    /// The account's devices, oldest first.
    pub async fn devices(&self) -> Result<Vec<Device>, ClientError> {
        let (_, channel, auth) = self.authenticated().await?;
        let reply = call(
            "list devices",
            account_client(channel, auth).list_devices(proto::ListDevicesRequest {}),
        )
        .await?;
        reply
            .devices
            .into_iter()
            .map(|device| {
                Ok(Device {
                    device_id: device
                        .device_id
                        .parse()
                        .map_err(|error| invalid_response("list devices", format!("{error}")))?,
                    display_name: device.display_name,
                    signature_public_key: device.signature_public_key,
                    created_at: to_datetime(device.created_at),
                    last_seen_at: to_datetime(device.last_seen_at),
                    current: device.current,
                    key_packages_available: device.key_packages_available,
                })
            })
            .collect()
    }

    /// Removes another device of the account: its session ends and its unclaimed
    /// key packages are deleted. This device is refused: use [`Client::logout`],
    /// which also forgets the local state.
    ///
    /// Returns the groups this device shares with the removed one (as far as
    /// this device's state of them says): the homeserver announces the removed
    /// device's departure in every group it was in, and the remaining members'
    /// clients, this one included, commit its removal.
    pub async fn remove_device(&self, device_id: &DeviceId) -> Result<Vec<GroupRef>, ClientError> {
        let (session, channel, auth) = self.authenticated().await?;
        if session.device_id() == device_id {
            return Err(ClientError::RemoveCurrentDevice(device_id.clone()));
        }
        let removed = CredentialIdentity::new(session.user_id().clone(), device_id.clone());
        let shared = self.state().read(|provider, connection| {
            let mut shared = Vec::new();
            for row in stored::groups(connection)? {
                if row.status != GroupStatus::Active {
                    continue;
                }
                let Some(group) = mls::load_group(provider, &row.group_id)? else {
                    continue;
                };
                if mls::members(&group)
                    .iter()
                    .any(|member| member.identity == removed)
                {
                    shared.push(GroupRef {
                        group_id: GroupId::from_bytes(row.group_id.clone()),
                        name: display(&row),
                    });
                }
            }
            Ok::<_, ClientError>(shared)
        })?;
        call(
            "remove device",
            account_client(channel, auth).remove_device(proto::RemoveDeviceRequest {
                device_id: device_id.to_string(),
            }),
        )
        .await?;
        Ok(shared)
    }

    fn refuse_if_logged_in(&self) -> Result<(), ClientError> {
        match self.session()? {
            Some(session) => Err(ClientError::AlreadyLoggedIn {
                user_id: session.user_id().clone(),
            }),
            None => Ok(()),
        }
    }

    /// Stores the new session with its key, then publishes the first key packages.
    async fn finish_enrolment(
        &self,
        operation: &'static str,
        session: Session,
        signer: &SignatureKeyPair,
    ) -> Result<Enrolment, ClientError> {
        self.state().store_session(&session, signer)?;
        tracing::info!(user_id = %session.user_id(), device_id = %session.device_id(), "enrolled");
        match self.replenish_key_packages().await {
            Ok(key_packages) => Ok(Enrolment {
                session,
                key_packages,
            }),
            Err(source) => Err(ClientError::PublishAfterEnrolment {
                operation,
                user_id: session.user_id().clone(),
                device_id: session.device_id().clone(),
                source: Box::new(source),
            }),
        }
    }
}

/// The device of a Register or Login request, with its proof of possession: a
/// fresh challenge from the server (BeginEnrolment), signed with the device's
/// key for `username`. The domain signed is the server's own, as it names it; a
/// login that names the full user id (`expected_domain`) refuses a server of
/// another domain before sending the password.
async fn proved_enrolment(
    operation: &'static str,
    channel: &TracedChannel,
    signer: &SignatureKeyPair,
    username: &Username,
    expected_domain: Option<&Domain>,
    device_name: &str,
) -> Result<proto::DeviceEnrolment, ClientError> {
    let challenge = call(
        operation,
        account_client(channel.clone(), BearerAuth::none())
            .begin_enrolment(proto::BeginEnrolmentRequest {}),
    )
    .await?;
    let domain: Domain = challenge.domain.parse().map_err(|error| {
        invalid_response(operation, format!("the enrolment challenge's {error}"))
    })?;
    if let Some(expected) = expected_domain
        && *expected != domain
    {
        return Err(invalid_response(
            operation,
            format!("the server is the homeserver of {domain}, not of {expected}"),
        ));
    }
    let possession_signature =
        mls::sign_enrolment(signer, &domain, username, &challenge.challenge, device_name)?;
    Ok(proto::DeviceEnrolment {
        signature_public_key: signer.to_public_vec(),
        display_name: device_name.to_owned(),
        challenge: challenge.challenge,
        possession_signature,
    })
}

/// Checks a Register/Login answer and turns it into a session: every id must
/// parse, the credential identity must name the same user and device, and the
/// user must be the one asked for.
fn session_from_reply(
    operation: &'static str,
    server_url: &ServerUrl,
    reply: proto::Session,
    signer: &SignatureKeyPair,
    expected: &ExpectedUser,
) -> Result<Session, ClientError> {
    let invalid = |reason: String| invalid_response(operation, reason);
    let user_id: UserId = reply.user_id.parse().map_err(|e| invalid(format!("{e}")))?;
    let device_id: DeviceId = reply
        .device_id
        .parse()
        .map_err(|e| invalid(format!("{e}")))?;
    let credential_identity: CredentialIdentity = reply
        .credential_identity
        .parse()
        .map_err(|e| invalid(format!("{e}")))?;
    if credential_identity.user_id() != &user_id || credential_identity.device_id() != &device_id {
        return Err(invalid(format!(
            "credential identity {credential_identity} does not name user {user_id} and device {device_id}"
        )));
    }
    let right_user = match expected {
        ExpectedUser::Name(username) => user_id.username() == username,
        ExpectedUser::Id(expected) => user_id == *expected,
    };
    if !right_user {
        return Err(invalid(format!("it enrolled the device as {user_id}")));
    }
    let access_token = AccessToken::new(reply.access_token);
    if access_token.as_str().is_empty() || BearerAuth::new(&access_token).is_err() {
        return Err(invalid(
            "the access token is empty or not valid header text".to_owned(),
        ));
    }
    Ok(Session {
        server_url: server_url.clone(),
        credential_identity,
        signature_public_key: signer.to_public_vec(),
        access_token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(user_id: &str, device_id: &str, identity: &str, token: &str) -> proto::Session {
        proto::Session {
            user_id: user_id.to_owned(),
            device_id: device_id.to_owned(),
            access_token: token.to_owned(),
            credential_identity: identity.to_owned(),
        }
    }

    #[test]
    fn enrolment_answers_are_checked() {
        let server: ServerUrl = "http://127.0.0.1:1".parse().unwrap();
        let signer = mls::generate_signer().unwrap();
        let alice = ExpectedUser::Name("alice".parse().unwrap());
        let check =
            |reply: proto::Session| session_from_reply("login", &server, reply, &signer, &alice);
        const DEVICE: &str = "00000000000000aa";
        const IDENTITY: &str = "alice@localhost/00000000000000aa";

        let session = check(reply("alice@localhost", DEVICE, IDENTITY, "t0k3n")).unwrap();
        assert_eq!(session.credential_identity.to_string(), IDENTITY);
        assert_eq!(session.signature_public_key, signer.public());

        for bad in [
            reply(
                "bob@localhost",
                DEVICE,
                "bob@localhost/00000000000000aa",
                "t",
            ),
            reply(
                "alice@localhost",
                DEVICE,
                "alice@localhost/00000000000000bb",
                "t",
            ),
            reply("alice@localhost", "nothex", IDENTITY, "t"),
            reply("alice@localhost", DEVICE, IDENTITY, ""),
            reply("alice@localhost", DEVICE, IDENTITY, "line\nbreak"),
        ] {
            let error = check(bad).unwrap_err();
            assert!(
                matches!(error, ClientError::InvalidResponse { .. }),
                "{error}"
            );
        }

        let alice_elsewhere = ExpectedUser::Id("alice@example.org".parse().unwrap());
        let error = session_from_reply(
            "login",
            &server,
            reply("alice@localhost", DEVICE, IDENTITY, "t"),
            &signer,
            &alice_elsewhere,
        )
        .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("enrolled the device as alice@localhost"),
            "{error}"
        );
    }
}
