//! Secrets: bearer tokens from the OS random number generator, stored only as
//! SHA-256 hashes, and passwords stored only as Argon2id hashes.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// A fresh 256-bit secret from the OS RNG, as unpadded base64url (43 characters).
pub(crate) fn new_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random number generator failed");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Eight random bytes from the OS RNG (for device ids).
pub(crate) fn random_bytes_8() -> [u8; 8] {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the operating system's random number generator failed");
    bytes
}

/// What the database keeps of a token. Tokens carry 256 bits of entropy, so a
/// plain hash (no salt, no stretching) is enough and allows lookup by hash.
pub(crate) fn hash_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Why a password could not be hashed or checked: the server's failure, never
/// the client's.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PasswordHashError {
    /// The operating system's random number generator gave no salt.
    #[error("no random salt for a password hash: {0}")]
    Salt(getrandom::Error),
    /// Argon2 refused the salt or the password.
    #[error("argon2 could not hash a password: {0}")]
    Hash(argon2::password_hash::Error),
    /// A stored hash is not a PHC string that Argon2 can read.
    #[error("a stored password hash is unreadable: {0}")]
    UnreadableHash(argon2::password_hash::Error),
    /// The blocking task that hashes panicked or was cancelled.
    #[error("the password hashing task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Hashes a password with Argon2id (default parameters, random salt) on a blocking
/// thread, so the async workers stay free.
pub(crate) async fn hash_password(password: String) -> Result<String, PasswordHashError> {
    tokio::task::spawn_blocking(move || {
        let mut salt_bytes = [0u8; 16];
        getrandom::fill(&mut salt_bytes).map_err(PasswordHashError::Salt)?;
        let salt = SaltString::encode_b64(&salt_bytes).map_err(PasswordHashError::Hash)?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(PasswordHashError::Hash)
    })
    .await?
}

/// Checks a password against a stored hash. With no stored hash (unknown user) it
/// still does the work of a check against a dummy hash, so response times do not
/// tell which usernames exist.
pub(crate) async fn verify_password(
    password: String,
    stored_hash: Option<String>,
) -> Result<bool, PasswordHashError> {
    tokio::task::spawn_blocking(move || {
        let known_user = stored_hash.is_some();
        let hash_text = stored_hash.unwrap_or_else(|| DUMMY_HASH.to_owned());
        let hash = PasswordHash::new(&hash_text).map_err(PasswordHashError::UnreadableHash)?;
        let matches = Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok();
        Ok(known_user && matches)
    })
    .await?
}

/// An Argon2id hash (default parameters) of a random password nobody knows.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Zq+rCl3Eyb2hM7V/9XNq6J1y2pVXuL3Zx5j5qUJbZ8E";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_hash_stably() {
        let first = new_token();
        let second = new_token();
        assert_eq!(first.len(), 43);
        assert_ne!(first, second);
        assert_eq!(hash_token(&first), hash_token(&first));
        assert_ne!(hash_token(&first), hash_token(&second));
        assert_eq!(hash_token(&first).len(), 32);
    }

    #[tokio::test]
    async fn passwords_verify_only_against_their_own_hash() {
        let hash = hash_password("correct horse".to_owned()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(
            verify_password("correct horse".to_owned(), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(
            !verify_password("wrong horse".to_owned(), Some(hash))
                .await
                .unwrap()
        );
        assert!(
            !verify_password("correct horse".to_owned(), None)
                .await
                .unwrap()
        );
    }
}
