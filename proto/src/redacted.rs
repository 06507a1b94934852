//! `Debug` for the messages that carry a secret (a password, a registration
//! token, an access token): every field but the secret, which shows as
//! `<redacted>` (`<empty>` when unset, which helps debugging and tells
//! nothing). build.rs keeps prost from deriving theirs.

use std::fmt;

use crate::admin::v1::{AdminLoginRequest, AdminSession, CreateRegistrationTokenResponse};
use crate::client::v1::{LoginRequest, RegisterRequest, Session};

/// A secret field as `Debug` shows it.
struct Redacted<'a>(&'a str);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(if self.0.is_empty() {
            "<empty>"
        } else {
            "<redacted>"
        })
    }
}

impl fmt::Debug for RegisterRequest {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("RegisterRequest")
            .field("username", &self.username)
            .field("password", &Redacted(&self.password))
            .field("registration_token", &Redacted(&self.registration_token))
            .field("device", &self.device)
            .finish()
    }
}

impl fmt::Debug for LoginRequest {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("LoginRequest")
            .field("username", &self.username)
            .field("password", &Redacted(&self.password))
            .field("device", &self.device)
            .finish()
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Session")
            .field("user_id", &self.user_id)
            .field("device_id", &self.device_id)
            .field("access_token", &Redacted(&self.access_token))
            .field("credential_identity", &self.credential_identity)
            .finish()
    }
}

impl fmt::Debug for AdminLoginRequest {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("AdminLoginRequest")
            .field("username", &self.username)
            .field("password", &Redacted(&self.password))
            .finish()
    }
}

impl fmt::Debug for AdminSession {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("AdminSession")
            .field("token", &Redacted(&self.token))
            .field("user_id", &self.user_id)
            .field("expires_at", &self.expires_at)
            .field("idle_timeout_seconds", &self.idle_timeout_seconds)
            .finish()
    }
}

impl fmt::Debug for CreateRegistrationTokenResponse {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("CreateRegistrationTokenResponse")
            .field("token", &Redacted(&self.token))
            .field("registration_token", &self.registration_token)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_left_out_and_the_rest_is_shown() {
        let register = RegisterRequest {
            username: "alice".to_owned(),
            password: "hunter2-password".to_owned(),
            registration_token: "token-4f2a".to_owned(),
            device: None,
        };
        let login = LoginRequest {
            username: "alice".to_owned(),
            password: "hunter2-password".to_owned(),
            device: None,
        };
        let session = Session {
            user_id: "alice@a.example".to_owned(),
            device_id: "0123456789abcdef".to_owned(),
            access_token: "bearer-9c1e".to_owned(),
            credential_identity: "alice@a.example/0123456789abcdef".to_owned(),
        };
        for shown in [
            format!("{register:?}"),
            format!("{login:?}"),
            format!("{session:?}"),
            format!("{register:#?}{login:#?}{session:#?}"),
        ] {
            for secret in ["hunter2-password", "token-4f2a", "bearer-9c1e"] {
                assert!(!shown.contains(secret), "{secret} in {shown}");
            }
            assert!(shown.contains("alice"), "{shown}");
        }
        assert!(format!("{session:?}").contains("access_token: <redacted>"));
        let unset = RegisterRequest::default();
        assert!(format!("{unset:?}").contains("registration_token: <empty>"));
    }

    #[test]
    fn admin_secrets_are_left_out() {
        let login = AdminLoginRequest {
            username: "root".to_owned(),
            password: "admin-password-77".to_owned(),
        };
        let session = AdminSession {
            token: "admin-session-5d0c".to_owned(),
            user_id: "root@a.example".to_owned(),
            ..Default::default()
        };
        let token = CreateRegistrationTokenResponse {
            token: "reg-token-8e1f".to_owned(),
            registration_token: None,
        };
        let shown = format!("{login:?}{session:?}{token:#?}");
        for secret in ["admin-password-77", "admin-session-5d0c", "reg-token-8e1f"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("root@a.example"), "{shown}");
    }
}
