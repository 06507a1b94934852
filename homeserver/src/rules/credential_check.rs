//! Which credential checks a peer may ask of this homeserver as its domain's
//! Authentication Service: about a device of this domain, with the signature
//! key to compare.

use conclave_core::ids::{CredentialIdentity, Domain};

/// Why a peer's credential check is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CredentialCheckRejection {
    /// The identity belongs to another domain: this homeserver answers for its own.
    #[error(
        "credential identity {identity} is on domain {}; this homeserver answers for {own} only",
        .identity.user_id().domain()
    )]
    ForeignIdentity {
        identity: CredentialIdentity,
        own: Domain,
    },
    /// No signature key to compare.
    #[error("signature_public_key is required")]
    MissingKey,
}

/// Checks that a peer asks about a device of `own`, this homeserver's domain,
/// and names the key to compare.
pub(crate) fn check_credential_query(
    identity: &CredentialIdentity,
    signature_public_key: &[u8],
    own: &Domain,
) -> Result<(), CredentialCheckRejection> {
    if identity.user_id().domain() != own {
        return Err(CredentialCheckRejection::ForeignIdentity {
            identity: identity.clone(),
            own: own.clone(),
        });
    }
    if signature_public_key.is_empty() {
        return Err(CredentialCheckRejection::MissingKey);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_about_this_domain_with_a_key() {
        let own: Domain = "a.example".parse().unwrap();
        let local: CredentialIdentity = "bob@a.example/00000000000000b1".parse().unwrap();
        let foreign: CredentialIdentity = "carol@c.example/00000000000000c1".parse().unwrap();
        for (case, identity, key, expected) in [
            ("local with a key", &local, &[7u8; 32][..], Ok(())),
            (
                "local without a key",
                &local,
                &[][..],
                Err("signature_public_key is required"),
            ),
            (
                "foreign: the domain is named before the key is looked at",
                &foreign,
                &[][..],
                Err(
                    "credential identity carol@c.example/00000000000000c1 is on domain c.example; this homeserver answers for a.example only",
                ),
            ),
        ] {
            let result = check_credential_query(identity, key, &own).map_err(|e| e.to_string());
            assert_eq!(result, expected.map_err(str::to_owned), "{case}");
        }
    }
}
