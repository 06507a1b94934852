//! Calling peers. One tonic `Channel` per configured peer, made when the client is
//! built and connected on first use; the channel keeps its HTTP/2 connection
//! (multiplexing concurrent calls over it), re-makes it after a failure, and pings
//! it to notice a dead peer. Every call has a deadline.
//!
//! The connection is made by this crate's own connector, with this crate's rustls
//! configuration (client certificate, trust roots, pin) as it is when the
//! connection is made (renewed material applies from the next connection on;
//! an open connection keeps its handshake), to the endpoint's host
//! and port, and verified against the peer's domain. tonic's own TLS is off for
//! these channels: it offers neither pinning nor a verifier of our own.

use crate::observer::{CallObserver, CallOutcome, NoObserver};
use crate::peers::{Peer, PeerRegistry, UnknownPeer};
use crate::reloadable::ReloadableTls;
use crate::tls::{TlsError, TlsMaterial, server_name};
use conclave_core::ids::{CredentialIdentity, Domain, UserId};
use conclave_proto::federation::v1 as proto;
use conclave_proto::federation::v1::federation_service_client::FederationServiceClient;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

/// How calls to peers behave.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Deadline of each call, from sending to the complete answer (connecting
    /// included). Sent to the peer as `grpc-timeout` too.
    pub call_timeout: Duration,
    /// Longest wait for the TCP connection.
    pub connect_timeout: Duration,
    /// HTTP/2 PING interval, also on idle connections.
    pub keepalive_interval: Duration,
    /// A connection whose PING goes unanswered this long is dropped and re-made
    /// on the next call.
    pub keepalive_timeout: Duration,
    /// Largest answer accepted, in bytes.
    pub max_message_bytes: usize,
}

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientSetupError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The endpoint cannot be turned into a channel.
    #[error("peer {domain}: endpoint {endpoint}: {reason}")]
    Endpoint {
        domain: Domain,
        endpoint: String,
        reason: String,
    },
}

/// How a peer refused a call, by its gRPC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    InvalidArgument,
    NotFound,
    FailedPrecondition,
    /// The peer does not accept this homeserver for the domain it acts for
    /// (certificate name, pin, not a configured peer).
    PermissionDenied,
    /// The peer saw no usable client certificate.
    Unauthenticated,
    /// The peer's rate limit (per requester or per peer) or size limit.
    ResourceExhausted,
    /// What was asked for is no longer there (e.g. pruned events).
    OutOfRange,
    /// Any other code that means "no" rather than "try again".
    Other,
}

/// Why a call to a peer failed. Messages name the peer's domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The domain is not configured as a peer.
    #[error(transparent)]
    UnknownPeer(#[from] UnknownPeer),
    /// The request would be made for a device of another domain than this
    /// homeserver's: a bug of the caller, never sent.
    #[error("{requester} is not a device of this homeserver's domain {own_domain}")]
    ForeignRequester {
        requester: String,
        own_domain: Domain,
    },
    /// The peer could not be reached or did not answer in time (connection
    /// refused, TLS handshake refused either way, deadline, connection lost).
    #[error("{domain} is unreachable: {reason}")]
    Unavailable { domain: Domain, reason: String },
    /// The peer answered with an error.
    #[error("{domain} refused the request: {message}")]
    Refused {
        domain: Domain,
        kind: RefusalKind,
        message: String,
    },
    /// The peer's answer breaks the protocol.
    #[error("{domain} sent an invalid answer: {reason}")]
    InvalidResponse { domain: Domain, reason: String },
}

/// A KeyPackage claimed from a peer, its shape checked (not its contents: the
/// claiming device verifies the package itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteKeyPackage {
    /// The device's credential identity; its user is the claimed user.
    pub identity: CredentialIdentity,
    /// The TLS-serialised KeyPackage as the device uploaded it.
    pub key_package: Vec<u8>,
    pub last_resort: bool,
    /// The signature key the peer bound to the device.
    pub signature_public_key: Vec<u8>,
}

/// A domain's answer about a new group leaf of one of its devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafCheck {
    /// The identity is a current device with exactly that signature key.
    pub registered: bool,
    /// The key package asked about was handed out by the domain's directory.
    pub key_package_claimed: bool,
}

/// Calls the federation API of configured peers, as this homeserver.
pub struct FederationClient {
    own_domain: Domain,
    call_timeout: Duration,
    /// The generated client of each peer, over the peer's one channel.
    peers: BTreeMap<Domain, FederationServiceClient<Channel>>,
    /// Told of each call the methods make (not of calls through
    /// [`FederationClient::peer_client`]) and of each peer certificate.
    observer: Arc<dyn CallObserver>,
}

impl FederationClient {
    /// Prepares a channel per peer; nothing connects until the first call. Must run
    /// inside a tokio runtime (each channel spawns its worker). Always calls
    /// with `tls`.
    pub fn new(
        tls: &TlsMaterial,
        registry: &PeerRegistry,
        options: &ClientOptions,
    ) -> Result<FederationClient, ClientSetupError> {
        let tls = Arc::new(ReloadableTls::new(tls.clone())?);
        FederationClient::observed(tls, registry, options, Arc::new(NoObserver))
    }

    /// [`FederationClient::new`] calling with the material `tls` holds when
    /// each connection is made, telling `observer` how each call ended and
    /// which certificate each peer presented.
    pub fn observed(
        tls: Arc<ReloadableTls>,
        registry: &PeerRegistry,
        options: &ClientOptions,
        observer: Arc<dyn CallObserver>,
    ) -> Result<FederationClient, ClientSetupError> {
        let mut peers = BTreeMap::new();
        for peer in registry.iter() {
            // Made once here, so a configuration that cannot be made is a
            // setup error rather than a failure of the first call.
            tls.client_config(peer.pin)?;
            let channel = channel(peer, tls.clone(), options, observer.clone())?;
            let client = FederationServiceClient::new(channel)
                .max_decoding_message_size(options.max_message_bytes)
                .max_encoding_message_size(options.max_message_bytes);
            peers.insert(peer.domain.clone(), client);
        }
        Ok(FederationClient {
            own_domain: registry.own_domain().clone(),
            call_timeout: options.call_timeout,
            peers,
            observer,
        })
    }

    /// The domain this homeserver calls as.
    pub fn own_domain(&self) -> &Domain {
        &self.own_domain
    }

    /// True if `domain` is a configured peer.
    pub fn is_peer(&self, domain: &Domain) -> bool {
        self.peers.contains_key(domain)
    }

    /// The generated client for `domain`'s federation API, over the shared
    /// channel, for calls this type has no method for. Its calls are not
    /// reported to the observer (only their connections' certificates are).
    pub fn peer_client(
        &self,
        domain: &Domain,
    ) -> Result<FederationServiceClient<Channel>, UnknownPeer> {
        self.peers
            .get(domain)
            .cloned()
            .ok_or_else(|| UnknownPeer(domain.clone()))
    }

    /// Claims one KeyPackage of `cipher_suite` (its number on the wire, 0 for
    /// classic) per device of `user` from the user's homeserver, for
    /// `requester`, a device of this homeserver. A peer that predates suites
    /// ignores the suite: the caller checks the packages' suite.
    pub async fn claim_key_packages(
        &self,
        requester: &CredentialIdentity,
        user: &UserId,
        cipher_suite: u32,
    ) -> Result<Vec<RemoteKeyPackage>, CallError> {
        if requester.user_id().domain() != &self.own_domain {
            return Err(CallError::ForeignRequester {
                requester: requester.to_string(),
                own_domain: self.own_domain.clone(),
            });
        }
        let domain = user.domain();
        let mut client = self.peer_client(domain)?;
        let request = self.request(proto::ClaimKeyPackagesRequest {
            requester: requester.to_string(),
            user_id: user.to_string(),
            cipher_suite,
        });
        let response = self
            .observe(
                domain,
                "ClaimKeyPackages",
                client.claim_key_packages(request),
            )
            .await?;
        check_claimed(user, response.key_packages).map_err(|reason| {
            let error = CallError::InvalidResponse {
                domain: domain.clone(),
                reason,
            };
            tracing::warn!(peer_domain = %domain, %error, "federation call failed");
            error
        })
    }

    /// Asks `identity`'s homeserver whether `identity` is one of its devices,
    /// enrolled with `signature_public_key`.
    pub async fn verify_credential(
        &self,
        identity: &CredentialIdentity,
        signature_public_key: &[u8],
    ) -> Result<bool, CallError> {
        Ok(self
            .check_leaf(identity, signature_public_key, None)
            .await?
            .registered)
    }

    /// Asks `identity`'s homeserver, as a hub about to accept a new group leaf:
    /// is `identity` one of its devices with `signature_public_key`, and (for an
    /// Add) did its directory hand out the key package `key_package_ref`?
    pub async fn check_leaf(
        &self,
        identity: &CredentialIdentity,
        signature_public_key: &[u8],
        key_package_ref: Option<&[u8]>,
    ) -> Result<LeafCheck, CallError> {
        let domain = identity.user_id().domain();
        let mut client = self.peer_client(domain)?;
        let request = self.request(proto::VerifyCredentialRequest {
            asking_domain: self.own_domain.to_string(),
            credential_identity: identity.to_string(),
            signature_public_key: signature_public_key.to_vec(),
            key_package_ref: key_package_ref.map(<[u8]>::to_vec).unwrap_or_default(),
        });
        let response = self
            .observe(
                domain,
                "VerifyCredential",
                client.verify_credential(request),
            )
            .await?;
        Ok(LeafCheck {
            registered: response.registered,
            key_package_claimed: response.key_package_claimed,
        })
    }

    /// Relays a submission of a device of this homeserver to the group's hub.
    pub async fn submit_to_hub(
        &self,
        hub: &Domain,
        submission: proto::SubmitToHubRequest,
    ) -> Result<proto::SubmitToHubResponse, CallError> {
        self.check_own(&submission.sender)?;
        let mut client = self.peer_client(hub)?;
        let request = self.request(submission);
        self.observe(hub, "SubmitToHub", client.submit_to_hub(request))
            .await
    }

    /// Delivers a batch of a hosted group's events to a follower domain.
    pub async fn deliver_events(
        &self,
        follower: &Domain,
        group_id: Vec<u8>,
        events: Vec<proto::FederatedEvent>,
        member_count: u64,
    ) -> Result<proto::DeliverEventsResponse, CallError> {
        let mut client = self.peer_client(follower)?;
        let request = self.request(proto::DeliverEventsRequest {
            hub_domain: self.own_domain.to_string(),
            group_id,
            events,
            member_count,
        });
        self.observe(follower, "DeliverEvents", client.deliver_events(request))
            .await
    }

    /// Fetches a group's events after `after_seq` from its hub, to repair this
    /// homeserver's copy.
    pub async fn fetch_events(
        &self,
        hub: &Domain,
        group_id: Vec<u8>,
        after_seq: u64,
        limit: u32,
    ) -> Result<proto::FetchEventsResponse, CallError> {
        let mut client = self.peer_client(hub)?;
        let request = self.request(proto::FetchEventsRequest {
            follower_domain: self.own_domain.to_string(),
            group_id,
            after_seq,
            limit,
        });
        self.observe(hub, "FetchEvents", client.fetch_events(request))
            .await
    }

    /// Fetches a group's newest GroupInfo from its hub, for `requester`, a device
    /// of this homeserver.
    pub async fn fetch_group_info(
        &self,
        hub: &Domain,
        requester: &CredentialIdentity,
        group_id: Vec<u8>,
    ) -> Result<proto::FetchGroupInfoResponse, CallError> {
        self.check_own(&requester.to_string())?;
        let mut client = self.peer_client(hub)?;
        let request = self.request(proto::FetchGroupInfoRequest {
            requester: requester.to_string(),
            group_id,
        });
        self.observe(hub, "FetchGroupInfo", client.fetch_group_info(request))
            .await
    }

    /// Refuses to send a request for a device of another domain.
    /// Tells a group's hub that `departed`, a device of this homeserver, left
    /// its domain, so the group gets a departure notice.
    pub async fn announce_departure(
        &self,
        hub: &Domain,
        group_id: Vec<u8>,
        departed: &str,
        reason: &str,
    ) -> Result<proto::AnnounceDepartureResponse, CallError> {
        self.check_own(departed)?;
        let mut client = self.peer_client(hub)?;
        let request = self.request(proto::AnnounceDepartureRequest {
            follower_domain: self.own_domain.to_string(),
            group_id,
            credential_identity: departed.to_owned(),
            reason: reason.to_owned(),
        });
        self.observe(hub, "AnnounceDeparture", client.announce_departure(request))
            .await
    }

    fn check_own(&self, identity: &str) -> Result<(), CallError> {
        let own = identity
            .parse::<CredentialIdentity>()
            .is_ok_and(|identity| identity.user_id().domain() == &self.own_domain);
        if own {
            Ok(())
        } else {
            Err(CallError::ForeignRequester {
                requester: identity.to_owned(),
                own_domain: self.own_domain.clone(),
            })
        }
    }

    /// Awaits the call of `rpc` to `peer`, tells the observer how it ended, and
    /// turns a failure into a [`CallError`]. Every method's call passes here,
    /// so the observer sees each one once.
    async fn observe<T>(
        &self,
        peer: &Domain,
        rpc: &'static str,
        call: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, CallError> {
        match call.await {
            Ok(response) => {
                self.observer.call_ended(peer, rpc, CallOutcome::OK);
                Ok(response.into_inner())
            }
            Err(status) => {
                self.observer
                    .call_ended(peer, rpc, CallOutcome::of_status(&status));
                Err(call_error(peer, rpc, status))
            }
        }
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(self.call_timeout);
        crate::trace_context::inject(request.metadata_mut());
        request
    }
}

/// The answer to a claim of `user`: one well-formed entry per device of that
/// user, no device twice.
fn check_claimed(
    user: &UserId,
    entries: Vec<proto::ClaimedKeyPackage>,
) -> Result<Vec<RemoteKeyPackage>, String> {
    let mut seen = BTreeSet::new();
    entries
        .into_iter()
        .map(|entry| {
            let identity: CredentialIdentity = entry
                .credential_identity
                .parse()
                .map_err(|error| format!("{error}"))?;
            if identity.user_id() != user || identity.device_id().as_str() != entry.device_id {
                return Err(format!(
                    "a package for {identity} came back as device {:?} of {user}",
                    entry.device_id
                ));
            }
            if !seen.insert(identity.clone()) {
                return Err(format!("{identity} appears twice"));
            }
            if entry.key_package.is_empty() || entry.signature_public_key.is_empty() {
                return Err(format!("the entry of {identity} is incomplete"));
            }
            Ok(RemoteKeyPackage {
                identity,
                key_package: entry.key_package,
                last_resort: entry.last_resort,
                signature_public_key: entry.signature_public_key,
            })
        })
        .collect()
}

/// A failed connection attempt, as the connector reports it to tonic.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("cannot connect to {address}: {error}")]
    Tcp {
        address: String,
        error: std::io::Error,
    },
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    /// The current TLS material makes no client configuration for this peer.
    #[error("no TLS configuration for this peer: {0}")]
    Configuration(TlsError),
    #[error("the peer did not agree to HTTP/2 (ALPN h2)")]
    NoHttp2,
}

fn channel(
    peer: &Peer,
    tls: Arc<ReloadableTls>,
    options: &ClientOptions,
    observer: Arc<dyn CallObserver>,
) -> Result<Channel, ClientSetupError> {
    let endpoint_error = |reason: String| ClientSetupError::Endpoint {
        domain: peer.domain.clone(),
        endpoint: peer.endpoint.to_string(),
        reason,
    };
    let server_name = server_name(&peer.domain)?;
    // tonic sees a plain-HTTP/2 endpoint (so it does not try TLS of its own);
    // `origin` gives the requests the real scheme and authority.
    let authority = peer
        .endpoint
        .uri()
        .authority()
        .ok_or_else(|| endpoint_error("names no host".to_owned()))?
        .clone();
    let plain = http::Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query("/")
        .build()
        .map_err(|error| endpoint_error(error.to_string()))?;
    let endpoint = Endpoint::from(plain)
        .origin(peer.endpoint.uri().clone())
        .connect_timeout(options.connect_timeout)
        .timeout(options.call_timeout)
        .http2_keep_alive_interval(options.keepalive_interval)
        .keep_alive_timeout(options.keepalive_timeout)
        .keep_alive_while_idle(true)
        .tcp_nodelay(true);
    let host = peer.endpoint.host().to_owned();
    let port = peer.endpoint.port();
    let domain = peer.domain.clone();
    let pin = peer.pin;
    let connector = tower::service_fn(move |_: http::Uri| {
        let connected = connect(
            host.clone(),
            port,
            server_name.clone(),
            tls.client_config(pin),
        );
        let (domain, observer) = (domain.clone(), observer.clone());
        async move {
            let stream = connected.await?;
            // Verified by the handshake: chains to a root, valid for the
            // peer's domain, the pinned one if pinned.
            if let Some(certificate) = stream
                .inner()
                .get_ref()
                .1
                .peer_certificates()
                .and_then(<[_]>::first)
            {
                observer.peer_certificate(&domain, certificate);
            }
            Ok::<_, ConnectError>(stream)
        }
    });
    Ok(endpoint.connect_with_connector_lazy(connector))
}

async fn connect(
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    config: Result<Arc<rustls::ClientConfig>, TlsError>,
) -> Result<TokioIo<TlsStream<TcpStream>>, ConnectError> {
    let config = config.map_err(ConnectError::Configuration)?;
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|error| ConnectError::Tcp {
            address: format!("{host}:{port}"),
            error,
        })?;
    let _ = tcp.set_nodelay(true);
    let tls = TlsConnector::from(config)
        .connect(server_name, tcp)
        .await
        .map_err(ConnectError::Tls)?;
    if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
        return Err(ConnectError::NoHttp2);
    }
    Ok(TokioIo::new(tls))
}

/// Turns a failed call's status into a [`CallError`], and logs it with the peer's
/// domain.
fn call_error(domain: &Domain, rpc: &'static str, status: Status) -> CallError {
    let refused = |kind| CallError::Refused {
        domain: domain.clone(),
        kind,
        message: status.message().to_owned(),
    };
    let error = match status.code() {
        // Statuses made on this side for a failed connection or a missed
        // deadline, and what a peer answers when it is overloaded or stopping.
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
            CallError::Unavailable {
                domain: domain.clone(),
                reason: describe_failure(&status),
            }
        }
        Code::InvalidArgument => refused(RefusalKind::InvalidArgument),
        Code::NotFound => refused(RefusalKind::NotFound),
        Code::FailedPrecondition => refused(RefusalKind::FailedPrecondition),
        Code::PermissionDenied => refused(RefusalKind::PermissionDenied),
        Code::Unauthenticated => refused(RefusalKind::Unauthenticated),
        Code::ResourceExhausted => refused(RefusalKind::ResourceExhausted),
        Code::OutOfRange => refused(RefusalKind::OutOfRange),
        _ => refused(RefusalKind::Other),
    };
    match &error {
        CallError::Refused {
            kind: RefusalKind::NotFound | RefusalKind::InvalidArgument,
            ..
        } => tracing::debug!(peer_domain = %domain, rpc, %error, "federation call refused"),
        _ => tracing::warn!(peer_domain = %domain, rpc, %error, "federation call failed"),
    }
    error
}

/// The status's message, followed by the innermost cause when there is one (for
/// a failed connection: the connector's own error, e.g. the TLS failure).
pub(crate) fn describe_failure(status: &Status) -> String {
    let mut innermost: Option<&(dyn std::error::Error + 'static)> = None;
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if let Some(connect) = error.downcast_ref::<ConnectError>() {
            return connect.to_string();
        }
        innermost = Some(error);
        source = error.source().or_else(|| {
            // io::Error hides its payload from `source`; look inside.
            error
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .map(|inner| inner as &(dyn std::error::Error + 'static))
        });
    }
    match innermost {
        Some(cause) if !status.message().contains(&cause.to_string()) => {
            format!("{}: {cause}", status.message())
        }
        _ => status.message().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(identity: &str, device_id: &str) -> proto::ClaimedKeyPackage {
        proto::ClaimedKeyPackage {
            device_id: device_id.to_owned(),
            credential_identity: identity.to_owned(),
            key_package: vec![1],
            last_resort: false,
            signature_public_key: vec![2],
        }
    }

    const DEVICE_1: &str = "0000000000000001";
    const DEVICE_2: &str = "0000000000000002";

    #[test]
    fn claimed_packages_must_belong_to_the_claimed_user() {
        let bob: UserId = "bob@b.example".parse().unwrap();
        let bob_1 = format!("bob@b.example/{DEVICE_1}");
        let bob_2 = format!("bob@b.example/{DEVICE_2}");
        let checked =
            check_claimed(&bob, vec![entry(&bob_1, DEVICE_1), entry(&bob_2, DEVICE_2)]).unwrap();
        assert_eq!(checked.len(), 2);
        assert_eq!(checked[0].identity.to_string(), bob_1);

        for (case, entries, fragment) in [
            (
                "another user",
                vec![entry(&format!("eve@b.example/{DEVICE_1}"), DEVICE_1)],
                "came back as device",
            ),
            (
                "another domain",
                vec![entry(&format!("bob@c.example/{DEVICE_1}"), DEVICE_1)],
                "came back as device",
            ),
            (
                "device id differs",
                vec![entry(&bob_1, DEVICE_2)],
                "came back as device",
            ),
            (
                "twice",
                vec![entry(&bob_1, DEVICE_1), entry(&bob_1, DEVICE_1)],
                "appears twice",
            ),
            ("malformed", vec![entry("bob", DEVICE_1)], "is invalid"),
            (
                "empty package",
                vec![proto::ClaimedKeyPackage {
                    key_package: vec![],
                    ..entry(&bob_1, DEVICE_1)
                }],
                "incomplete",
            ),
        ] {
            let error = check_claimed(&bob, entries).unwrap_err();
            assert!(error.contains(fragment), "{case}: {error:?}");
        }
    }

    #[test]
    fn statuses_become_call_errors() {
        let b: Domain = "b.example".parse().unwrap();
        for (status, expected) in [
            (Status::unavailable("down"), None),
            (Status::deadline_exceeded("slow"), None),
            (Status::cancelled("Timeout expired"), None),
            (Status::not_found("no bob"), Some(RefusalKind::NotFound)),
            (
                Status::permission_denied("not you"),
                Some(RefusalKind::PermissionDenied),
            ),
            (
                Status::resource_exhausted("slow down"),
                Some(RefusalKind::ResourceExhausted),
            ),
            (Status::internal("oops"), Some(RefusalKind::Other)),
        ] {
            let message = status.message().to_owned();
            match (call_error(&b, "Test", status), expected) {
                (CallError::Unavailable { domain, reason }, None) => {
                    assert_eq!(domain, b);
                    assert_eq!(reason, message);
                }
                (
                    CallError::Refused {
                        domain,
                        kind,
                        message: refused,
                    },
                    Some(expected),
                ) => {
                    assert_eq!((domain, kind, refused), (b.clone(), expected, message));
                }
                (error, expected) => panic!("{message}: got {error:?}, expected {expected:?}"),
            }
        }
    }
}
