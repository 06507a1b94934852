//! Rules for account and device requests.

use conclave_core::ids::{Domain, IdError, Username};
use conclave_core::mls::SIGNATURE_PUBLIC_KEY_LENGTH;

/// Shortest and longest password, in bytes. The upper bound keeps a hostile
/// request from making Argon2 hash megabytes.
pub(crate) const PASSWORD_LENGTH: std::ops::RangeInclusive<usize> = 8..=1024;
/// Longest device display name, in characters.
pub(crate) const MAX_DISPLAY_NAME_CHARS: usize = 64;

/// Why an account or device request is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AccountRuleError {
    /// The username is not valid.
    #[error(transparent)]
    Username(#[from] IdError),
    /// A login named a user of another domain.
    #[error("user {user} belongs to domain {domain}, not to this homeserver's domain {own}")]
    ForeignUser {
        user: String,
        domain: String,
        own: String,
    },
    /// The password is too short or too long.
    #[error("password must be between 8 and 1024 bytes long, got {0}")]
    PasswordLength(usize),
    /// The device's signature key is missing or not an Ed25519 public key.
    #[error("device.signature_public_key must be a 32-byte Ed25519 public key, got {0} bytes")]
    SignatureKey(usize),
    /// The display name is too long or contains control characters.
    #[error("device.display_name must be at most 64 characters without control characters")]
    DisplayName,
}

pub(crate) fn check_password(password: &str) -> Result<(), AccountRuleError> {
    if PASSWORD_LENGTH.contains(&password.len()) {
        Ok(())
    } else {
        Err(AccountRuleError::PasswordLength(password.len()))
    }
}

pub(crate) fn check_signature_key(key: &[u8]) -> Result<(), AccountRuleError> {
    if key.len() == SIGNATURE_PUBLIC_KEY_LENGTH {
        Ok(())
    } else {
        Err(AccountRuleError::SignatureKey(key.len()))
    }
}

pub(crate) fn check_display_name(name: &str) -> Result<(), AccountRuleError> {
    if name.chars().count() <= MAX_DISPLAY_NAME_CHARS && !name.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(AccountRuleError::DisplayName)
    }
}

/// The device a registration or login enrols: a signature key and a display name.
pub(crate) fn check_device(
    signature_public_key: &[u8],
    display_name: &str,
) -> Result<(), AccountRuleError> {
    check_signature_key(signature_public_key)?;
    check_display_name(display_name)
}

/// A login may name the user as `alice` or as `alice@own.domain`.
pub(crate) fn parse_login_name(input: &str, own: &Domain) -> Result<Username, AccountRuleError> {
    match input.split_once('@') {
        None => Ok(input.parse()?),
        Some((name, domain)) if domain == own.as_str() => Ok(name.parse()?),
        Some((_, domain)) => Err(AccountRuleError::ForeignUser {
            user: input.to_owned(),
            domain: domain.to_owned(),
            own: own.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords() {
        assert!(check_password("12345678").is_ok());
        assert!(check_password(&"x".repeat(1024)).is_ok());
        assert_eq!(
            check_password("1234567"),
            Err(AccountRuleError::PasswordLength(7))
        );
        assert!(check_password(&"x".repeat(1025)).is_err());
    }

    #[test]
    fn signature_keys_and_display_names() {
        assert!(check_signature_key(&[7; 32]).is_ok());
        assert_eq!(
            check_signature_key(&[]),
            Err(AccountRuleError::SignatureKey(0))
        );
        assert!(check_signature_key(&[7; 33]).is_err());
        assert!(check_display_name("").is_ok());
        assert!(check_display_name("Alice's laptop").is_ok());
        assert!(check_display_name(&"é".repeat(64)).is_ok());
        assert!(check_display_name(&"é".repeat(65)).is_err());
        assert!(check_display_name("tab\there").is_err());
    }

    #[test]
    fn devices_need_a_key_and_a_fitting_name() {
        let long_name = "x".repeat(65);
        for (case, key, name, expected) in [
            ("good", &[7u8; 32][..], "laptop", Ok(())),
            (
                "no key",
                &[][..],
                "laptop",
                Err(AccountRuleError::SignatureKey(0)),
            ),
            (
                "bad name",
                &[7; 32][..],
                long_name.as_str(),
                Err(AccountRuleError::DisplayName),
            ),
            (
                "both bad: the key is named",
                &[7; 3][..],
                "\n",
                Err(AccountRuleError::SignatureKey(3)),
            ),
        ] {
            assert_eq!(check_device(key, name), expected, "{case}");
        }
    }

    #[test]
    fn login_names() {
        let own: Domain = "a.example".parse().unwrap();
        let check = |input: &str| parse_login_name(input, &own).map(|name| name.to_string());
        assert_eq!(check("alice"), Ok("alice".to_owned()));
        assert_eq!(check("alice@a.example"), Ok("alice".to_owned()));
        assert!(matches!(
            check("alice@b.example"),
            Err(AccountRuleError::ForeignUser { .. })
        ));
        assert!(matches!(check("Alice"), Err(AccountRuleError::Username(_))));
        assert!(matches!(check(""), Err(AccountRuleError::Username(_))));
    }
}
