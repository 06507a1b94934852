//! A device's session with its homeserver: who it is and how it authenticates.

use std::fmt;

use conclave_core::ids::{CredentialIdentity, DeviceId, UserId};

use crate::server_url::ServerUrl;

/// The bearer token a device sends with every authenticated request.
///
/// Kept out of `Debug` output so it never lands in a log or a panic message.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(String);

impl AccessToken {
    pub(crate) fn new(token: String) -> Self {
        AccessToken(token)
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}

/// The session of this device, as enrolled by Register or Login and kept in the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The homeserver the device is enrolled on; every authenticated call goes there.
    pub server_url: ServerUrl,
    /// `name@domain/device_id`: the identity in this device's MLS BasicCredential,
    /// which also carries the user id and the device id.
    pub credential_identity: CredentialIdentity,
    /// Ed25519 public key bound to the device; the private half is in the openmls
    /// storage under this key.
    pub signature_public_key: Vec<u8>,
    pub(crate) access_token: AccessToken,
}

impl Session {
    pub fn user_id(&self) -> &UserId {
        self.credential_identity.user_id()
    }

    pub fn device_id(&self) -> &DeviceId {
        self.credential_identity.device_id()
    }
}
