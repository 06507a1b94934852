//! The serving side of federation, apart from the RPCs themselves (which the
//! homeserver implements): the stream of mutually authenticated TLS connections
//! handed to tonic, and the [`PeerGate`] every request passes before it reaches a
//! use case.

use crate::identity::{PeerRefusal, check_peer_certificate};
use crate::peers::PeerRegistry;
use conclave_core::ids::Domain;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, Stream, StreamExt};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use rustls::ServerConfig;
use rustls_pki_types::CertificateDer;
use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A peer whose request passed the gate: its certificate is valid for `domain`
/// under the trust roots (and the pin), `domain` is a configured peer, and it is
/// within its rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedPeer {
    pub domain: Domain,
}

/// Counts each peer domain's requests against its rate. The gate's own is
/// in-process ([`PeerGate::new`]); a homeserver running as several replicas
/// gives the gate one that the replicas share ([`PeerGate::with_rate_limiter`]),
/// so this crate knows nothing of where the counts are kept.
pub trait PeerRateLimiter: Send + Sync + 'static {
    /// Counts one request of `peer`; `false` if it is over its rate (and then
    /// nothing is counted).
    fn check<'a>(&'a self, peer: &'a Domain) -> BoxFuture<'a, bool>;
}

/// Requests per peer domain in this process's memory; keys are only ever
/// configured peers (the certificate check comes first), so the map is bounded.
struct LocalPeerRateLimiter(DefaultKeyedRateLimiter<Domain>);

impl PeerRateLimiter for LocalPeerRateLimiter {
    fn check<'a>(&'a self, peer: &'a Domain) -> BoxFuture<'a, bool> {
        Box::pin(std::future::ready(self.0.check_key(peer).is_ok()))
    }
}

/// Told of each request the gate refuses for its peer's rate (the homeserver
/// counts them in its metrics; this crate knows nothing of those). Called
/// once per refused request, with a configured peer's domain only.
pub type RateLimitObserver = Arc<dyn Fn(&Domain) + Send + Sync>;

/// Decides, per request, whether the calling peer may act for the domain the
/// request names, and limits each peer domain's request rate.
pub struct PeerGate {
    registry: PeerRegistry,
    requests_per_minute: NonZeroU32,
    limiter: Arc<dyn PeerRateLimiter>,
    on_rate_limited: Option<RateLimitObserver>,
}

impl PeerGate {
    /// A gate counting each peer's requests in this process.
    pub fn new(registry: PeerRegistry, requests_per_minute: NonZeroU32) -> PeerGate {
        let limiter =
            LocalPeerRateLimiter(RateLimiter::keyed(Quota::per_minute(requests_per_minute)));
        PeerGate::with_rate_limiter(registry, requests_per_minute, Arc::new(limiter))
    }

    /// A gate counting each peer's requests with `limiter`, which applies
    /// `requests_per_minute` (named in refusals).
    pub fn with_rate_limiter(
        registry: PeerRegistry,
        requests_per_minute: NonZeroU32,
        limiter: Arc<dyn PeerRateLimiter>,
    ) -> PeerGate {
        PeerGate {
            registry,
            requests_per_minute,
            limiter,
            on_rate_limited: None,
        }
    }

    /// The same gate, telling `observer` of each request refused for its
    /// peer's rate.
    pub fn observing_rate_limits(self, observer: RateLimitObserver) -> PeerGate {
        PeerGate {
            on_rate_limited: Some(observer),
            ..self
        }
    }

    /// Admits a request made for `claimed` over a connection whose client
    /// presented `peer_certificates`, or refuses it; every refusal is logged with
    /// the domain the request was made for. The certificate is checked first,
    /// so only configured peers are ever counted.
    pub async fn admit(
        &self,
        peer_certificates: Option<&[CertificateDer<'_>]>,
        claimed: &Domain,
    ) -> Result<AuthenticatedPeer, PeerRefusal> {
        let mut result = check_peer_certificate(peer_certificates, claimed, &self.registry);
        if result.is_ok() && !self.limiter.check(claimed).await {
            if let Some(observer) = &self.on_rate_limited {
                observer(claimed);
            }
            result = Err(PeerRefusal::RateLimited {
                domain: claimed.clone(),
                per_minute: self.requests_per_minute.get(),
            });
        }
        match result {
            Ok(()) => Ok(AuthenticatedPeer {
                domain: claimed.clone(),
            }),
            Err(refusal) => {
                tracing::warn!(peer_domain = %claimed, %refusal, "refused a federation request");
                Err(refusal)
            }
        }
    }

    pub fn registry(&self) -> &PeerRegistry {
        &self.registry
    }
}

/// The TLS server configuration a listener's next handshake uses: fixed, or
/// the current one of material that is replaced when its files are renewed
/// ([`crate::reloadable::ReloadableTls`]).
pub trait CurrentServerConfig: Send + Sync + 'static {
    fn current(&self) -> Arc<ServerConfig>;
}

/// A configuration that never changes.
impl CurrentServerConfig for Arc<ServerConfig> {
    fn current(&self) -> Arc<ServerConfig> {
        self.clone()
    }
}

/// Most TLS handshakes in progress at once; beyond it, new connections wait in
/// the listen backlog.
const MAX_HANDSHAKES_IN_PROGRESS: usize = 256;

type Handshake = Pin<Box<dyn Future<Output = Option<TlsStream<TcpStream>>> + Send>>;

/// A TLS listener's connections, each through a completed TLS handshake (on
/// the federation listener, with a verified client certificate), for tonic's
/// `serve_with_incoming`. Each handshake takes the configuration current when
/// its connection is accepted.
///
/// Handshakes run concurrently inside the stream (a slow or silent client holds
/// up nobody) and are abandoned after the handshake timeout; failures are logged
/// with the remote address. Dropping the stream closes the listening socket at
/// once, so a stopped server refuses new connections immediately.
pub struct TlsIncoming {
    listener: TcpListener,
    /// Which listener, for the logs: `federation` or `client_api`.
    name: &'static str,
    config: Arc<dyn CurrentServerConfig>,
    handshake_timeout: Duration,
    /// Idle time before TCP keepalive probes on accepted sockets; none if `None`.
    tcp_keepalive: Option<Duration>,
    handshakes: FuturesUnordered<Handshake>,
}

impl TlsIncoming {
    /// Accepts on `listener` (`name` in the logs), each handshake with the
    /// configuration `config` gives at that moment.
    pub fn new(
        listener: TcpListener,
        name: &'static str,
        config: Arc<dyn CurrentServerConfig>,
        handshake_timeout: Duration,
    ) -> TlsIncoming {
        TlsIncoming {
            listener,
            name,
            config,
            handshake_timeout,
            tcp_keepalive: None,
            handshakes: FuturesUnordered::new(),
        }
    }

    /// Turns on TCP keepalive on every accepted socket, probing after `idle`
    /// without traffic, so a peer that vanished without closing is noticed even
    /// where HTTP/2 PINGs are not sent.
    pub fn with_tcp_keepalive(self, idle: Duration) -> TlsIncoming {
        TlsIncoming {
            tcp_keepalive: Some(idle),
            ..self
        }
    }

    fn start_handshake(&self, tcp: TcpStream, remote: SocketAddr) {
        let accept = TlsAcceptor::from(self.config.current()).accept(tcp);
        let timeout = self.handshake_timeout;
        let listener = self.name;
        self.handshakes.push(Box::pin(async move {
            match tokio::time::timeout(timeout, accept).await {
                Ok(Ok(stream)) => Some(stream),
                Ok(Err(error)) => {
                    tracing::warn!(listener, %remote, %error, "TLS handshake failed");
                    None
                }
                Err(_) => {
                    tracing::warn!(listener, %remote, ?timeout, "TLS handshake timed out");
                    None
                }
            }
        }));
    }
}

impl Stream for TlsIncoming {
    type Item = Result<TlsStream<TcpStream>, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        while this.handshakes.len() < MAX_HANDSHAKES_IN_PROGRESS {
            match this.listener.poll_accept(cx) {
                Poll::Ready(Ok((tcp, remote))) => {
                    let _ = tcp.set_nodelay(true);
                    if let Some(idle) = this.tcp_keepalive {
                        let keepalive = socket2::TcpKeepalive::new().with_time(idle);
                        if let Err(error) =
                            socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive)
                        {
                            tracing::debug!(%remote, %error, "cannot turn on TCP keepalive");
                        }
                    }
                    this.start_handshake(tcp, remote);
                }
                // tonic logs the error and polls again (e.g. after EMFILE).
                Poll::Ready(Err(error)) => return Poll::Ready(Some(Err(error))),
                Poll::Pending => break,
            }
        }
        loop {
            match this.handshakes.poll_next_unpin(cx) {
                Poll::Ready(Some(Some(stream))) => return Poll::Ready(Some(Ok(stream))),
                // A failed handshake: look at the next one.
                Poll::Ready(Some(None)) => continue,
                // No handshake in progress, or none finished: the listener's and
                // the handshakes' wakers are registered.
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peers::{CertificatePin, PeerSettings};

    fn domain(name: &str) -> Domain {
        name.parse().unwrap()
    }

    fn certificate(name: &str) -> CertificateDer<'static> {
        rcgen::generate_simple_self_signed(vec![name.to_owned()])
            .unwrap()
            .cert
            .der()
            .clone()
    }

    fn gate(per_minute: u32, pinned: Option<CertificatePin>) -> PeerGate {
        let pin = pinned.map(|pin| pin.to_string());
        let registry = PeerRegistry::new(
            domain("a.example"),
            [
                PeerSettings {
                    domain: "b.example",
                    endpoint: "https://127.0.0.2:7401",
                    pinned_sha256: pin.as_deref(),
                },
                PeerSettings {
                    domain: "c.example",
                    endpoint: "https://127.0.0.3:7401",
                    pinned_sha256: None,
                },
            ],
        )
        .unwrap();
        PeerGate::new(registry, NonZeroU32::new(per_minute).unwrap())
    }

    #[tokio::test]
    async fn requests_are_admitted_only_for_the_certificates_domain() {
        let gate = gate(100, None);
        let b = [certificate("b.example")];
        let c = [certificate("c.example")];
        assert_eq!(
            gate.admit(Some(&b), &domain("b.example")).await,
            Ok(AuthenticatedPeer {
                domain: domain("b.example")
            })
        );
        assert!(matches!(
            gate.admit(Some(&c), &domain("b.example")).await,
            Err(PeerRefusal::NotValidForDomain { .. })
        ));
        assert_eq!(
            gate.admit(None, &domain("b.example")).await,
            Err(PeerRefusal::NoClientCertificate)
        );
        assert_eq!(gate.registry().own_domain(), &domain("a.example"));
    }

    #[tokio::test]
    async fn each_peer_has_its_own_rate() {
        let gate = gate(2, None);
        let b = [certificate("b.example")];
        let c = [certificate("c.example")];
        for _ in 0..2 {
            gate.admit(Some(&b), &domain("b.example")).await.unwrap();
        }
        assert_eq!(
            gate.admit(Some(&b), &domain("b.example")).await,
            Err(PeerRefusal::RateLimited {
                domain: domain("b.example"),
                per_minute: 2
            })
        );
        // c is counted apart.
        gate.admit(Some(&c), &domain("c.example")).await.unwrap();
    }

    #[tokio::test]
    async fn an_injected_limiter_decides_the_rate() {
        /// Lets through every peer but c.example.
        struct AllButC;
        impl PeerRateLimiter for AllButC {
            fn check<'a>(&'a self, peer: &'a Domain) -> BoxFuture<'a, bool> {
                Box::pin(std::future::ready(peer.as_str() != "c.example"))
            }
        }
        let gate = PeerGate::with_rate_limiter(
            gate(1, None).registry().clone(),
            NonZeroU32::new(7).unwrap(),
            Arc::new(AllButC),
        );
        let b = [certificate("b.example")];
        let c = [certificate("c.example")];
        for _ in 0..3 {
            gate.admit(Some(&b), &domain("b.example")).await.unwrap();
        }
        assert_eq!(
            gate.admit(Some(&c), &domain("c.example")).await,
            Err(PeerRefusal::RateLimited {
                domain: domain("c.example"),
                per_minute: 7
            })
        );
    }

    #[tokio::test]
    async fn the_observer_hears_of_each_request_refused_for_the_rate() {
        let refused = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = refused.clone();
        let gate = gate(1, None).observing_rate_limits(Arc::new(move |peer: &Domain| {
            seen.lock().unwrap().push(peer.to_string());
        }));
        let b = [certificate("b.example")];
        gate.admit(Some(&b), &domain("b.example")).await.unwrap();
        for _ in 0..2 {
            assert!(gate.admit(Some(&b), &domain("b.example")).await.is_err());
        }
        // A certificate refusal is no rate refusal.
        assert!(gate.admit(Some(&b), &domain("c.example")).await.is_err());
        assert_eq!(*refused.lock().unwrap(), ["b.example", "b.example"]);
    }

    #[tokio::test]
    async fn certificates_are_checked_before_the_rate() {
        let gate = gate(1, Some(CertificatePin::of(b"another certificate")));
        let b = [certificate("b.example")];
        for _ in 0..3 {
            assert!(matches!(
                gate.admit(Some(&b), &domain("b.example")).await,
                Err(PeerRefusal::PinMismatch { .. })
            ));
        }
    }
}
