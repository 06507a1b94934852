//! A test network: homeservers of several domains in this process, each on a
//! database of its own and each a federation peer of all the others over
//! mutual TLS, with certificates of one development CA ([`TestPki`]).
//!
//! The n-th domain's federation API listens on 127.0.0.n (a.example on
//! 127.0.0.1, b.example on 127.0.0.2, ...), so that endpoints differ by host as
//! they would between organisations; Linux routes all of 127.0.0.0/8 to the
//! loopback interface. Every federation listener is bound before any server
//! starts, so each starts knowing all its peers' endpoints.
//!
//! A domain keeps its addresses for the whole test, across restarts of its
//! homeserver: its federation listener, so that the endpoints its peers were
//! configured with keep working, and its client API, so that a restarted
//! homeserver is where its users' clients (which keep the URL they registered
//! with) expect it.

use crate::database::{DatabaseChoice, TestDatabase};
use crate::homeserver::{StoredGroup, TestFederation, TestHomeserver, TestOptions};
use crate::pki::{IssuedCertificate, TestPki};
use crate::wait::{DELIVERY_TIMEOUT, eventually};
use conclave_federation::client::FederationClient;
use conclave_homeserver::SystemClock;
use conclave_homeserver::admin::PeerOutboxStatus;
use conclave_homeserver::config::{Config, FederationConfig, FederationPeerConfig};
use conclave_proto::federation::v1::federation_service_client::FederationServiceClient;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use tokio::net::TcpListener;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// The certificate each domain of a network serves and calls with, by domain.
pub type Certificates = BTreeMap<String, IssuedCertificate>;

/// Changes a domain's configuration before its homeserver first starts, given
/// the domain and every domain's certificate (for pins).
type Configure = dyn Fn(&str, &Certificates, &mut Config) + Send + Sync;

/// Homeservers of several domains, each a federation peer of all the others,
/// found by domain name.
pub struct TestNetwork {
    /// Declared first, so dropped first: before the files they read.
    homeservers: BTreeMap<String, DomainHomeserver>,
    certificates: Arc<Certificates>,
    /// Issued the homeservers' certificates (whose files must outlive them) and
    /// issues more for raw clients.
    pki: TestPki,
}

/// One domain's homeserver, running or stopped.
enum DomainHomeserver {
    Running(TestHomeserver),
    /// Its configuration (addresses included) and database.
    Stopped(Config, TestDatabase),
    /// Only while it is being stopped or started.
    Changing,
}

/// How to start a [`TestNetwork`]; from [`TestNetwork::builder`].
pub struct TestNetworkBuilder {
    domains: Vec<String>,
    database: DatabaseChoice,
    pki: Option<TestPki>,
    configure: Arc<Configure>,
}

impl TestNetworkBuilder {
    /// Issues the certificates from `pki` (made beforehand, e.g. to issue an
    /// extra certificate first) instead of a new CA.
    pub fn pki(mut self, pki: TestPki) -> Self {
        self.pki = Some(pki);
        self
    }

    /// Calls `configure(domain, certificates, config)` on each domain's
    /// configuration before its homeserver first starts (restarts keep it).
    pub fn configure(
        mut self,
        configure: impl Fn(&str, &Certificates, &mut Config) + Send + Sync + 'static,
    ) -> Self {
        self.configure = Arc::new(configure);
        self
    }

    /// Changes `domain`'s configuration only, after what
    /// [`configure`](Self::configure) changes.
    pub fn configure_domain(
        mut self,
        domain: &str,
        change: impl Fn(&mut Config) + Send + Sync + 'static,
    ) -> Self {
        let (before, domain) = (self.configure, domain.to_owned());
        self.configure = Arc::new(move |name, certificates, config| {
            before(name, certificates, config);
            if name == domain {
                change(config);
            }
        });
        self
    }

    /// Issues the certificates, binds every federation listener, then starts
    /// the homeservers side by side (each mostly waits for its database).
    pub async fn start(self) -> TestNetwork {
        let pki = self.pki.unwrap_or_default();
        let mut listeners = Vec::with_capacity(self.domains.len());
        for position in 0..self.domains.len() {
            let host = u8::try_from(position + 1)
                .ok()
                .filter(|host| *host < 255)
                .map(|host| Ipv4Addr::new(127, 0, 0, host))
                .expect("at most 254 domains");
            let listener = TcpListener::bind((host, 0))
                .await
                .unwrap_or_else(|error| panic!("cannot bind {host}:0: {error}"));
            listeners.push(listener);
        }
        let endpoints: BTreeMap<&str, String> = self
            .domains
            .iter()
            .zip(&listeners)
            .map(|(domain, listener)| {
                let address = listener.local_addr().expect("a bound listener");
                (domain.as_str(), format!("https://{address}"))
            })
            .collect();
        assert_eq!(
            endpoints.len(),
            self.domains.len(),
            "the domains are distinct"
        );
        let certificates: Arc<Certificates> = Arc::new(
            self.domains
                .iter()
                .map(|domain| (domain.clone(), pki.issue(domain)))
                .collect(),
        );
        let mut starting = tokio::task::JoinSet::new();
        for (domain, listener) in self.domains.iter().zip(listeners) {
            let issued = &certificates[domain];
            let peers = endpoints
                .iter()
                .filter(|(peer, _)| **peer != domain.as_str())
                .map(|(peer, endpoint)| {
                    let peer_config = FederationPeerConfig {
                        endpoint: endpoint.clone(),
                        pinned_sha256: None,
                    };
                    (peer.to_string(), peer_config)
                })
                .collect();
            let settings = FederationConfig {
                certificate: Some(issued.certificate.clone()),
                private_key: Some(issued.private_key.clone()),
                trust_roots: Some(pki.trust_roots().to_owned()),
                peers,
                ..FederationConfig::default()
            };
            let (configure, all_certificates) = (self.configure.clone(), certificates.clone());
            let configured_domain = domain.clone();
            let options = TestOptions {
                database: self.database,
                domain: domain.clone(),
                federation: Some(TestFederation { listener, settings }),
                configure: Box::new(move |config| {
                    configure(&configured_domain, &all_certificates, config);
                }),
                ..TestOptions::default()
            };
            let domain = domain.clone();
            starting.spawn(async move { (domain, TestHomeserver::start_with(options).await) });
        }
        let mut homeservers = BTreeMap::new();
        while let Some(started) = starting.join_next().await {
            let (domain, server) = started.expect("a homeserver starts");
            homeservers.insert(domain, DomainHomeserver::Running(server));
        }
        TestNetwork {
            homeservers,
            certificates,
            pki,
        }
    }
}

/// How a raw federation call went wrong.
#[derive(Debug)]
pub enum RawFailure {
    /// The connection (TCP, TLS or HTTP/2) could not be made.
    Connect(String),
    /// The call got this status (from a handler, or made by tonic from a
    /// transport failure).
    Call(tonic::Status),
}

impl TestNetwork {
    /// A homeserver for each of `domains`, each on a fresh database of kind
    /// `database`, with a new CA and every setting at its default.
    pub async fn start(domains: &[&str], database: DatabaseChoice) -> TestNetwork {
        TestNetwork::builder(domains, database).start().await
    }

    /// [`TestNetwork::start`], with a CA or configuration of the test's choice.
    pub fn builder(domains: &[&str], database: DatabaseChoice) -> TestNetworkBuilder {
        TestNetworkBuilder {
            domains: domains.iter().map(|domain| domain.to_string()).collect(),
            database,
            pki: None,
            configure: Arc::new(|_, _, _| {}),
        }
    }

    fn homeserver(&self, domain: &str) -> &DomainHomeserver {
        self.homeservers
            .get(domain)
            .unwrap_or_else(|| panic!("{domain} is not a domain of this network"))
    }

    fn homeserver_mut(&mut self, domain: &str) -> &mut DomainHomeserver {
        self.homeservers
            .get_mut(domain)
            .unwrap_or_else(|| panic!("{domain} is not a domain of this network"))
    }

    /// `domain`'s configuration, addresses included (running or stopped).
    pub fn config(&self, domain: &str) -> &Config {
        match self.homeserver(domain) {
            DomainHomeserver::Running(server) => server.config(),
            DomainHomeserver::Stopped(config, _) => config,
            DomainHomeserver::Changing => unreachable!("{domain} is being stopped or started"),
        }
    }

    /// `domain`'s running homeserver.
    pub fn server(&self, domain: &str) -> &TestHomeserver {
        match self.homeserver(domain) {
            DomainHomeserver::Running(server) => server,
            _ => panic!("{domain}'s homeserver is not running"),
        }
    }

    /// `http://127.0.0.1:PORT` of `domain`'s client API, the same for the whole
    /// test (restarts included).
    pub fn client_url(&self, domain: &str) -> String {
        format!("http://{}", self.config(domain).client_api.listen)
    }

    /// Where `domain`'s federation API listens (running or stopped).
    pub fn federation_address(&self, domain: &str) -> SocketAddr {
        self.config(domain).federation.listen
    }

    /// `https://127.0.0.n:PORT`, `domain`'s federation endpoint.
    pub fn endpoint(&self, domain: &str) -> String {
        format!("https://{}", self.federation_address(domain))
    }

    /// The certificate `domain`'s homeserver serves and calls with.
    pub fn certificate(&self, domain: &str) -> &IssuedCertificate {
        self.certificates
            .get(domain)
            .unwrap_or_else(|| panic!("{domain} is not a domain of this network"))
    }

    /// The network's CA: every homeserver of the network trusts what it issues.
    pub fn pki(&self) -> &TestPki {
        &self.pki
    }

    /// Stops `domain`'s homeserver gracefully, keeping its database and
    /// configuration; its clients' connections are closed, and new ones are
    /// refused until [`TestNetwork::start_again`]. A graceful stop waits for
    /// open Subscribe streams: no listener of its users may be open.
    pub async fn stop(&mut self, domain: &str) {
        let homeserver = self.homeserver_mut(domain);
        let DomainHomeserver::Running(server) =
            std::mem::replace(homeserver, DomainHomeserver::Changing)
        else {
            panic!("{domain}'s homeserver is not running");
        };
        let config = server.config().clone();
        let database = server.stop().await;
        *homeserver = DomainHomeserver::Stopped(config, database);
    }

    /// Starts `domain`'s stopped homeserver again on its database, with its
    /// configuration and addresses: its clients and its peers reach it where
    /// they did before.
    pub async fn start_again(&mut self, domain: &str) {
        let homeserver = self.homeserver_mut(domain);
        let DomainHomeserver::Stopped(config, database) =
            std::mem::replace(homeserver, DomainHomeserver::Changing)
        else {
            panic!("{domain}'s homeserver is not stopped");
        };
        let client_address = config.client_api.listen;
        let server = TestHomeserver::start_on(config, database, Arc::new(SystemClock)).await;
        assert_eq!(server.client_address(), client_address, "the same port");
        *homeserver = DomainHomeserver::Running(server);
    }

    /// [`TestNetwork::stop`], then [`TestNetwork::start_again`].
    pub async fn restart(&mut self, domain: &str) {
        self.restart_with(domain, |_| {}).await;
    }

    /// Restarts `domain`'s homeserver with its configuration changed by
    /// `change` (its addresses must stay).
    pub async fn restart_with(&mut self, domain: &str, change: impl FnOnce(&mut Config)) {
        self.stop(domain).await;
        if let DomainHomeserver::Stopped(config, _) = self.homeserver_mut(domain) {
            change(config);
        }
        self.start_again(domain).await;
    }

    /// Stops every running homeserver gracefully, then removes every database.
    pub async fn shutdown(self) {
        for (_, homeserver) in self.homeservers {
            if let DomainHomeserver::Running(server) = homeserver {
                server.stop().await;
            }
        }
    }

    /// What `domain`'s database holds of a group (hosted or followed; running
    /// or stopped).
    pub async fn stored_group(&self, domain: &str, mls_group_id: &[u8]) -> Option<StoredGroup> {
        crate::homeserver::stored_group(self.config(domain), mls_group_id).await
    }

    /// The events of `hub`'s hosted groups that `follower` has not confirmed.
    pub async fn outbox_depth(&self, hub: &str, follower: &str) -> u64 {
        self.outbox_status(hub, follower).await.outbox_depth
    }

    /// How `hub`'s deliveries to `follower` go, as the operator's
    /// `federation_status` reports it (works while `hub` is stopped, too).
    pub async fn outbox_status(&self, hub: &str, follower: &str) -> PeerOutboxStatus {
        // Boxed: opening and migrating a store is a large future, which would
        // otherwise be part of every test's future (and stack).
        let statuses = Box::pin(conclave_homeserver::admin::federation_status(
            self.config(hub).clone(),
        ))
        .await
        .unwrap_or_else(|error| panic!("{hub}'s federation status: {error}"));
        statuses
            .into_iter()
            .find(|status| status.domain == follower)
            .unwrap_or_else(|| panic!("{follower} is not a peer of {hub}"))
    }

    /// Waits until `follower` confirmed every event of `hub`'s groups (at most
    /// [`DELIVERY_TIMEOUT`]).
    pub async fn outbox_drained(&self, hub: &str, follower: &str) {
        eventually(
            DELIVERY_TIMEOUT,
            &format!("{hub}'s outbox to {follower} to drain"),
            || async { (self.outbox_depth(hub, follower).await == 0).then_some(()) },
        )
        .await;
    }

    /// A federation client with `domain`'s own certificate, calling `peers` of
    /// this network, as `domain`'s homeserver would.
    pub fn federation_client_as(&self, domain: &str, peers: &[&str]) -> FederationClient {
        let peers: Vec<(&str, String)> = peers
            .iter()
            .map(|peer| (*peer, self.endpoint(peer)))
            .collect();
        self.pki.federation_client(self.certificate(domain), &peers)
    }

    /// A raw client of `domain`'s federation API over a TLS connection of its
    /// own (tonic's TLS, not the federation crate's) that trusts the network's
    /// CA and presents `identity` (or no client certificate), as a peer
    /// homeserver or an impostor would call.
    pub async fn raw_federation_client(
        &self,
        domain: &str,
        identity: Option<&IssuedCertificate>,
    ) -> Result<FederationServiceClient<Channel>, RawFailure> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.pki.ca_pem()))
            .domain_name(domain);
        if let Some(identity) = identity {
            tls = tls.identity(Identity::from_pem(
                &identity.certificate_pem,
                &identity.private_key_pem,
            ));
        }
        let channel = Channel::from_shared(self.endpoint(domain))
            .expect("a valid URL")
            .tls_config(tls)
            .expect("a TLS configuration")
            .connect()
            .await
            .map_err(|error| RawFailure::Connect(format!("{error:?}")))?;
        Ok(FederationServiceClient::new(channel))
    }
}
