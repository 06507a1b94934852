//! Rules for account and device requests.

use conclave_core::ids::{Domain, HiddenCharacter, IdError, Username, normalize_display_text};
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
    /// The display name is too long.
    #[error("device.display_name must be at most 64 characters, got {0}")]
    DisplayNameLength(usize),
    /// The display name holds a control, bidirectional or invisible character.
    #[error(
        "device.display_name may not contain {0}: no control characters, line separators, bidirectional controls or invisible characters"
    )]
    DisplayNameCharacter(HiddenCharacter),
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

/// A device's display name follows the rule for names shown to people
/// ([`normalize_display_text`]) and is at most 64 characters once in NFC.
/// Returns the name to store: its NFC form.
pub(crate) fn check_display_name(name: &str) -> Result<String, AccountRuleError> {
    let normalized =
        normalize_display_text(name).map_err(AccountRuleError::DisplayNameCharacter)?;
    let length = normalized.chars().count();
    if length <= MAX_DISPLAY_NAME_CHARS {
        Ok(normalized)
    } else {
        Err(AccountRuleError::DisplayNameLength(length))
    }
}

/// The device a registration or login enrols: a signature key and a display name.
/// Returns the display name to store (NFC).
pub(crate) fn check_device(
    signature_public_key: &[u8],
    display_name: &str,
) -> Result<String, AccountRuleError> {
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
    }

    #[test]
    fn display_names() {
        use conclave_core::ids::HiddenCharacterKind::*;
        let refused = |character, kind| {
            Err(AccountRuleError::DisplayNameCharacter(HiddenCharacter {
                character,
                kind,
            }))
        };
        // 64 decomposed é are 128 characters, but 64 once in NFC.
        let decomposed = "e\u{301}".repeat(64);
        for (input, expected) in [
            ("", Ok(String::new())),
            ("Alice's laptop", Ok("Alice's laptop".to_owned())),
            (&"é".repeat(64), Ok("é".repeat(64))),
            (&decomposed, Ok("é".repeat(64))),
            (
                &"é".repeat(65),
                Err(AccountRuleError::DisplayNameLength(65)),
            ),
            ("tab\there", refused('\t', Control)),
            ("laptop\u{202E}", refused('\u{202E}', Bidirectional)),
            ("\u{2066}laptop", refused('\u{2066}', Bidirectional)),
            ("lap\u{200B}top", refused('\u{200B}', Invisible)),
            ("\u{FEFF}", refused('\u{FEFF}', Invisible)),
        ] {
            assert_eq!(check_display_name(input), expected, "{input:?}");
        }
        let message = check_display_name("a\u{202E}").unwrap_err().to_string();
        assert!(message.contains("U+202E"), "{message}");
    }

    #[test]
    fn devices_need_a_key_and_a_fitting_name() {
        let long_name = "x".repeat(65);
        for (case, key, name, expected) in [
            ("good", &[7u8; 32][..], "laptop", Ok("laptop".to_owned())),
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
                Err(AccountRuleError::DisplayNameLength(65)),
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
