//! Where a claim for a user's KeyPackages is served: the directory of the user's
//! own domain hands them out. A device's claim for a user of another domain is
//! forwarded to that domain's homeserver; a peer's claim is answered for this
//! domain's users only, never relayed further.

use conclave_core::ids::{Domain, UserId};

/// Whether this homeserver can reach a domain through federation; `P` is
/// whatever calls the peer (the rules only pass it on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reach<P> {
    /// Federation is off.
    FederationOff,
    /// The domain is a configured peer, called through this.
    Peer(P),
    /// Federation is on, but the domain is not a peer.
    NotAPeer,
}

/// Where a device's claim goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClaimRoute<P> {
    /// The user is of this domain: this directory hands the packages out.
    Directory,
    /// The user is of a peer domain: its homeserver, called through this,
    /// hands them out.
    Forward(P),
}

/// Why a claim cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ClaimRefusal {
    /// The user belongs to another domain, and this homeserver does not federate
    /// (or a peer asked: peers are answered for this domain only, never relayed).
    #[error(
        "user {user} is on domain {}, and this homeserver serves only {own}",
        .user.domain()
    )]
    ForeignUser { user: UserId, own: Domain },
    /// The user's domain is not a federation peer of this homeserver.
    #[error("domain {0} is not a federation peer of this homeserver")]
    NotAPeer(Domain),
}

/// Routes a device's claim for `user`, given how this homeserver, of domain
/// `own`, reaches the user's domain.
pub(crate) fn route_device_claim<P>(
    user: &UserId,
    own: &Domain,
    reach: Reach<P>,
) -> Result<ClaimRoute<P>, ClaimRefusal> {
    if user.domain() == own {
        return Ok(ClaimRoute::Directory);
    }
    match reach {
        Reach::Peer(peer) => Ok(ClaimRoute::Forward(peer)),
        Reach::NotAPeer => Err(ClaimRefusal::NotAPeer(user.domain().clone())),
        Reach::FederationOff => Err(ClaimRefusal::ForeignUser {
            user: user.clone(),
            own: own.clone(),
        }),
    }
}

/// A peer's claim for `user`: served only if the user is of this domain, `own`.
pub(crate) fn check_peer_claim(user: &UserId, own: &Domain) -> Result<(), ClaimRefusal> {
    if user.domain() == own {
        Ok(())
    } else {
        Err(ClaimRefusal::ForeignUser {
            user: user.clone(),
            own: own.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_claims_go_to_the_users_domain() {
        let own: Domain = "a.example".parse().unwrap();
        let local: UserId = "bob@a.example".parse().unwrap();
        let remote: UserId = "carol@b.example".parse().unwrap();
        let serves_only = "user carol@b.example is on domain b.example, and this homeserver serves only a.example";
        let not_a_peer = "domain b.example is not a federation peer of this homeserver";
        for (case, user, reach, expected) in [
            (
                "local, federation off",
                &local,
                Reach::FederationOff,
                Ok(ClaimRoute::Directory),
            ),
            (
                "local, federation on",
                &local,
                Reach::Peer("b"),
                Ok(ClaimRoute::Directory),
            ),
            (
                "remote peer",
                &remote,
                Reach::Peer("b"),
                Ok(ClaimRoute::Forward("b")),
            ),
            (
                "remote, not a peer",
                &remote,
                Reach::NotAPeer,
                Err(not_a_peer),
            ),
            (
                "remote, federation off",
                &remote,
                Reach::FederationOff,
                Err(serves_only),
            ),
        ] {
            let route = route_device_claim(user, &own, reach).map_err(|e| e.to_string());
            assert_eq!(route, expected.map_err(str::to_owned), "{case}");
        }
    }

    #[test]
    fn peers_are_answered_for_this_domain_only() {
        let own: Domain = "a.example".parse().unwrap();
        let local: UserId = "bob@a.example".parse().unwrap();
        let remote: UserId = "carol@c.example".parse().unwrap();
        assert_eq!(check_peer_claim(&local, &own), Ok(()));
        assert_eq!(
            check_peer_claim(&remote, &own).map_err(|e| e.to_string()),
            Err("user carol@c.example is on domain c.example, and this homeserver serves only a.example".to_owned())
        );
    }
}
