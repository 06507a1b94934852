//! Identifier newtypes, parsed once at the edge and trusted afterwards.
//!
//! A user is `name@domain`; a device is identified by 16 lowercase hex digits chosen
//! by its homeserver; the MLS credential identity of a device is
//! `name@domain/device_id`, which is what every member of a group sees as the sender.

use std::fmt;
use std::str::FromStr;

/// Shortest and longest allowed username.
pub const USERNAME_LENGTH: std::ops::RangeInclusive<usize> = 1..=32;
/// Longest allowed domain name (RFC 1035's limit on a full name).
pub const MAX_DOMAIN_LENGTH: usize = 253;
/// Number of hex digits in a device id.
pub const DEVICE_ID_HEX_DIGITS: usize = 16;

/// Most characters of an input echoed into an error message; the rest is cut
/// and marked with an ellipsis, so a hostile or mistaken 100 KB value cannot
/// make an error message (a gRPC header) too large to send.
pub const MAX_ECHO_CHARS: usize = 64;

/// `input` as an error message shows it: whole if at most [`MAX_ECHO_CHARS`]
/// characters long, else its first [`MAX_ECHO_CHARS`] characters and `…`.
pub fn echo(input: &str) -> String {
    match input.char_indices().nth(MAX_ECHO_CHARS) {
        Some((cut, _)) => format!("{}…", &input[..cut]),
        None => input.to_owned(),
    }
}

/// Why an identifier was refused. The messages name the offending input (cut by
/// [`echo`]), so they can be shown to the user as they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The username breaks the character or length rules.
    #[error(
        "username {0:?} is invalid: use 1 to 32 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
    )]
    Username(String),
    /// The domain is not a valid lowercase DNS name.
    #[error(
        "domain {0:?} is invalid: use a lowercase DNS name such as example.org (labels of letters, digits and '-', separated by '.')"
    )]
    Domain(String),
    /// The user id is not `name@domain`.
    #[error("user id {0:?} is invalid: expected name@domain, for example alice@example.org")]
    UserId(String),
    /// The device id is not 16 lowercase hex digits.
    #[error("device id {0:?} is invalid: expected 16 lowercase hex digits")]
    DeviceId(String),
    /// The credential identity is not `name@domain/device_id`.
    #[error("credential identity {0:?} is invalid: expected name@domain/device_id")]
    CredentialIdentity(String),
}

/// The local part of a user id: 1 to 32 of `a-z 0-9 . _ -`, starting with a letter
/// or digit (so it can never look like an option or a hidden file in tools).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Username(String);

impl Username {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Username {
    type Err = IdError;

    fn from_str(input: &str) -> Result<Self, IdError> {
        let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c);
        let starts_well = input
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if USERNAME_LENGTH.contains(&input.len()) && starts_well && input.chars().all(allowed) {
            Ok(Username(input.to_owned()))
        } else {
            Err(IdError::Username(echo(input)))
        }
    }
}

/// A homeserver's domain: a lowercase DNS name such as `a.example`, or `localhost`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Domain(String);

impl Domain {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Domain {
    type Err = IdError;

    fn from_str(input: &str) -> Result<Self, IdError> {
        let valid_label = |label: &str| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        };
        if input.len() <= MAX_DOMAIN_LENGTH && input.split('.').all(valid_label) {
            Ok(Domain(input.to_owned()))
        } else {
            Err(IdError::Domain(echo(input)))
        }
    }
}

/// A user, `name@domain`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId {
    username: Username,
    domain: Domain,
}

impl UserId {
    pub fn new(username: Username, domain: Domain) -> Self {
        UserId { username, domain }
    }

    pub fn username(&self) -> &Username {
        &self.username
    }

    pub fn domain(&self) -> &Domain {
        &self.domain
    }
}

impl FromStr for UserId {
    type Err = IdError;

    fn from_str(input: &str) -> Result<Self, IdError> {
        let invalid = || IdError::UserId(echo(input));
        let (name, domain) = input.split_once('@').ok_or_else(invalid)?;
        Ok(UserId {
            username: name.parse().map_err(|_| invalid())?,
            domain: domain.parse().map_err(|_| invalid())?,
        })
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.username.0, self.domain.0)
    }
}

/// A device, as 16 lowercase hex digits (64 random bits chosen by the homeserver).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(String);

impl DeviceId {
    /// Makes a device id from 8 random bytes; the caller supplies the randomness so
    /// this module stays free of I/O.
    pub fn from_random_bytes(bytes: [u8; 8]) -> Self {
        DeviceId(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for DeviceId {
    type Err = IdError;

    fn from_str(input: &str) -> Result<Self, IdError> {
        let hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
        if input.len() == DEVICE_ID_HEX_DIGITS && input.chars().all(hex) {
            Ok(DeviceId(input.to_owned()))
        } else {
            Err(IdError::DeviceId(echo(input)))
        }
    }
}

/// The identity inside a device's MLS BasicCredential: `name@domain/device_id`.
/// Its homeserver binds it to the device's signature key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CredentialIdentity {
    user_id: UserId,
    device_id: DeviceId,
}

impl CredentialIdentity {
    pub fn new(user_id: UserId, device_id: DeviceId) -> Self {
        CredentialIdentity { user_id, device_id }
    }

    pub fn user_id(&self) -> &UserId {
        &self.user_id
    }

    pub fn device_id(&self) -> &DeviceId {
        &self.device_id
    }

    /// Parses the raw bytes of a BasicCredential's identity.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IdError> {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| IdError::CredentialIdentity(echo(&String::from_utf8_lossy(bytes))))?;
        text.parse()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }
}

impl FromStr for CredentialIdentity {
    type Err = IdError;

    fn from_str(input: &str) -> Result<Self, IdError> {
        let invalid = || IdError::CredentialIdentity(echo(input));
        let (user, device) = input.rsplit_once('/').ok_or_else(invalid)?;
        Ok(CredentialIdentity {
            user_id: user.parse().map_err(|_| invalid())?,
            device_id: device.parse().map_err(|_| invalid())?,
        })
    }
}

impl fmt::Display for CredentialIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.user_id, self.device_id.0)
    }
}

macro_rules! display_as_str {
    ($($name:ident),*) => {$(
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    )*};
}
display_as_str!(Username, Domain, DeviceId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_inputs_are_echoed_cut_with_an_ellipsis() {
        assert_eq!(echo("bob"), "bob");
        let exactly = "é".repeat(MAX_ECHO_CHARS);
        assert_eq!(echo(&exactly), exactly);
        let long = "é".repeat(100_000);
        assert_eq!(echo(&long), format!("{}…", "é".repeat(MAX_ECHO_CHARS)));
        let error = long.parse::<Username>().expect_err("too long");
        assert!(error.to_string().len() < 300, "{error}");
        assert!(
            error
                .to_string()
                .ends_with("starting with a letter or digit")
        );
    }

    fn check<T: FromStr<Err = IdError> + fmt::Display>(input: &str, valid: bool) {
        match input.parse::<T>() {
            Ok(parsed) => {
                assert!(valid, "{input:?} was accepted");
                assert_eq!(parsed.to_string(), input, "round trip");
            }
            Err(error) => assert!(!valid, "{input:?} was refused: {error}"),
        }
    }

    #[test]
    fn usernames() {
        for (input, valid) in [
            ("alice", true),
            ("a", true),
            ("bob.smith_2-x", true),
            ("0day", true),
            (&"a".repeat(32), true),
            (&"a".repeat(33), false),
            ("", false),
            ("Alice", false),
            ("-alice", false),
            (".alice", false),
            ("al ice", false),
            ("alice@x", false),
            ("alïce", false),
            ("al/ice", false),
        ] {
            check::<Username>(input, valid);
        }
    }

    #[test]
    fn domains() {
        for (input, valid) in [
            ("localhost", true),
            ("a.example", true),
            ("xn--bcher-kva.example", true),
            ("127.0.0.1", true),
            ("", false),
            ("A.example", false),
            ("a..example", false),
            (".example", false),
            ("-a.example", false),
            ("a_b.example", false),
            ("a.example:443", false),
            (&format!("{}.example", "a".repeat(64)), false),
        ] {
            check::<Domain>(input, valid);
        }
    }

    #[test]
    fn user_ids() {
        for (input, valid) in [
            ("alice@a.example", true),
            ("alice@localhost", true),
            ("alice", false),
            ("@a.example", false),
            ("alice@", false),
            ("alice@b@a.example", false),
            ("Alice@a.example", false),
        ] {
            check::<UserId>(input, valid);
        }
    }

    #[test]
    fn device_ids_and_credential_identities() {
        check::<DeviceId>("0123456789abcdef", true);
        check::<DeviceId>("0123456789ABCDEF", false);
        check::<DeviceId>("0123456789abcde", false);
        check::<DeviceId>("0123456789abcdeg", false);
        assert_eq!(
            DeviceId::from_random_bytes([0, 1, 2, 0xab, 0xcd, 0xef, 0x10, 0xff]).as_str(),
            "000102abcdef10ff"
        );
        check::<CredentialIdentity>("alice@a.example/0123456789abcdef", true);
        check::<CredentialIdentity>("alice@a.example", false);
        check::<CredentialIdentity>("alice@a.example/", false);
        check::<CredentialIdentity>("alice/0123456789abcdef", false);
        assert!(CredentialIdentity::from_bytes(&[0xff, 0xfe]).is_err());
    }
}
