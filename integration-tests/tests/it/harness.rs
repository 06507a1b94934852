//! The test network: a development PKI, one in-process homeserver per domain
//! (each with a database of its own, peered with all the others over mutual
//! TLS), and users driving the real client library, each on a state directory
//! of its own.
//!
//! A domain keeps its addresses for the whole test, across restarts of its
//! homeserver (`TestHomeserver::start_on` binds the addresses of the previous
//! run): its federation listener, on a loopback address of its own (a.example
//! on 127.0.0.1, b.example on 127.0.0.2, ...), so that the endpoints its peers
//! were configured with keep working; and its client API, so that a restarted
//! homeserver is where its users' clients (which keep the URL they registered
//! with) expect it.
//!
//! For what the client library cannot do (act as a homeserver, or as an
//! impostor), [`Federation::federation_client`] calls a domain's federation API
//! directly, presenting a certificate of the test's choice.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use conclave_client::{
    ClaimedKeyPackage, Client, ClientError, CommitOutcome, GroupId, GroupStatus, GroupSummary,
    KeyPackageStock, MembershipChange, ReceiveReport, ReceivedMessage, ReplenishPolicy,
    SentMessage, ServerUrl,
};
use conclave_core::ids::{CredentialIdentity, Domain, UserId};
use conclave_federation::dev_certs::DevCertificateAuthority;
use conclave_homeserver::SystemClock;
use conclave_homeserver::admin::PeerOutboxStatus;
use conclave_homeserver::config::{Config, FederationConfig, FederationPeerConfig};
use conclave_homeserver::test_support::{
    DatabaseChoice, StoredGroup, TestDatabase, TestFederation, TestHomeserver, TestOptions,
};
use conclave_proto::federation::v1::federation_service_client::FederationServiceClient;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// The three domains most tests use.
pub(crate) const THREE_DOMAINS: [&str; 3] = ["a.example", "b.example", "c.example"];

/// Longest a whole test may take; a hang fails instead of blocking the run.
const TEST_TIMEOUT: Duration = Duration::from_secs(180);

/// Longest one wait for what a homeserver delivers (a Welcome, messages). A
/// hub that could not reach a follower retries after a backoff that grows with
/// the outage (up to 60 s): after the outages of these tests (seconds), well
/// under this.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// Every test user's password.
const PASSWORD: &str = "correct horse battery staple";

/// Key packages per device: enough for a few invitations and claims, cheap to
/// build.
const STOCK: ReplenishPolicy = ReplenishPolicy {
    threshold: 2,
    target: 4,
};

/// Runs one test body with a deadline, logging to the test output when
/// `RUST_LOG` is set (e.g. `RUST_LOG=conclave_homeserver=debug`).
pub(crate) async fn within_timeout(test: impl Future<Output = ()>) {
    init_logging();
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("the test did not finish within its timeout");
}

/// Awaits `future` for at most [`DELIVERY_TIMEOUT`], panicking with `what`.
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(DELIVERY_TIMEOUT, future)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{what} took longer than {} seconds",
                DELIVERY_TIMEOUT.as_secs()
            )
        })
}

/// Calls `poll` until it returns `Some`, for at most [`DELIVERY_TIMEOUT`],
/// pausing a little longer after each miss (10 ms doubling to 250 ms): for
/// what no event announces, such as a homeserver's outbox draining. The
/// condition, not the pause, is what the caller waits for.
pub(crate) async fn eventually<T, F: Future<Output = Option<T>>>(
    what: &str,
    mut poll: impl FnMut() -> F,
) -> T {
    within(what, async {
        let mut pause = Duration::from_millis(10);
        loop {
            if let Some(value) = poll().await {
                return value;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    })
    .await
}

fn init_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .init();
        }
    });
}

/// A development CA and the certificates it issued, as files in a temporary
/// directory (a homeserver is configured with paths).
pub(crate) struct Pki {
    directory: TempDir,
    authority: DevCertificateAuthority,
    /// The CA certificate: every homeserver's `trust_roots`.
    trust_roots: PathBuf,
}

/// A domain's certificate and private key, as PEM files.
pub(crate) struct IssuedFiles {
    pub(crate) certificate: PathBuf,
    pub(crate) private_key: PathBuf,
}

/// A certificate and its private key in PEM, as a raw federation client
/// presents them.
pub(crate) struct PemIdentity {
    certificate_pem: String,
    private_key_pem: String,
}

impl Pki {
    pub(crate) fn new() -> Pki {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_secs();
        let authority = DevCertificateAuthority::generate(
            i64::try_from(now).expect("the time fits a certificate"),
        )
        .expect("a development CA");
        let trust_roots = directory.path().join("ca.pem");
        std::fs::write(&trust_roots, authority.certificate_pem()).expect("write ca.pem");
        Pki {
            directory,
            authority,
            trust_roots,
        }
    }

    /// A certificate for `domain` (its SAN dNSName), written to
    /// `<domain>.pem` and `<domain>.key.pem`.
    pub(crate) fn issue(&self, domain: &Domain) -> IssuedFiles {
        let issued = self.identity(domain.as_str());
        let certificate = self.directory.path().join(format!("{domain}.pem"));
        let private_key = self.directory.path().join(format!("{domain}.key.pem"));
        std::fs::write(&certificate, &issued.certificate_pem).expect("write a certificate");
        std::fs::write(&private_key, &issued.private_key_pem).expect("write a key");
        IssuedFiles {
            certificate,
            private_key,
        }
    }

    /// A new certificate for `domain` from this CA, in memory.
    pub(crate) fn identity(&self, domain: &str) -> PemIdentity {
        let domain: Domain = domain.parse().expect("a valid domain");
        let issued = self.authority.issue(&domain, &[]).expect("a certificate");
        PemIdentity {
            certificate_pem: issued.certificate_pem,
            private_key_pem: issued.private_key_pem,
        }
    }
}

/// Homeservers of several domains, each a federation peer of all the others,
/// found by domain name.
pub(crate) struct Federation {
    /// Issued the homeservers' certificates (whose files must outlive them) and
    /// issues more for raw clients.
    pki: Pki,
    homeservers: BTreeMap<String, DomainHomeserver>,
}

/// One domain's homeserver, running or stopped.
enum DomainHomeserver {
    Running(TestHomeserver),
    /// Its configuration (addresses included) and database.
    Stopped(Config, TestDatabase),
    /// Only while it is being stopped or started.
    Changing,
}

/// How a raw federation call went wrong.
#[derive(Debug)]
pub(crate) enum RawFailure {
    /// The connection (TCP, TLS or HTTP/2) could not be made.
    Connect(String),
    /// The call got this status (from a handler, or made by tonic from a
    /// transport failure).
    Call(tonic::Status),
}

impl Federation {
    /// Starts a homeserver for each of `domains`, on a fresh database of kind
    /// `database` each, the n-th domain's federation API on 127.0.0.n. Every
    /// federation listener is bound first, so each homeserver starts knowing
    /// all its peers' endpoints.
    pub(crate) async fn start(database: DatabaseChoice, domains: &[&str]) -> Federation {
        let pki = Pki::new();
        let domains: Vec<Domain> = domains
            .iter()
            .map(|name| name.parse().expect("a valid domain"))
            .collect();
        let mut listeners = Vec::with_capacity(domains.len());
        for position in 0..domains.len() {
            let host = u8::try_from(position + 1)
                .ok()
                .filter(|host| *host < 255)
                .map(|host| Ipv4Addr::new(127, 0, 0, host))
                .expect("at most 254 domains");
            let listener = TcpListener::bind((host, 0))
                .await
                .expect("bind a federation listener");
            listeners.push(listener);
        }
        let endpoints: BTreeMap<String, String> = domains
            .iter()
            .zip(&listeners)
            .map(|(domain, listener)| {
                let address = listener.local_addr().expect("a bound listener");
                (domain.to_string(), format!("https://{address}"))
            })
            .collect();
        assert_eq!(endpoints.len(), domains.len(), "the domains are distinct");
        // Started side by side: each mostly waits for its database.
        let mut starting = tokio::task::JoinSet::new();
        for (domain, listener) in domains.iter().zip(listeners) {
            let issued = pki.issue(domain);
            let peers = endpoints
                .iter()
                .filter(|(peer, _)| **peer != domain.as_str())
                .map(|(peer, endpoint)| {
                    let peer_config = FederationPeerConfig {
                        endpoint: endpoint.clone(),
                        pinned_sha256: None,
                    };
                    (peer.clone(), peer_config)
                })
                .collect();
            let settings = FederationConfig {
                certificate: Some(issued.certificate),
                private_key: Some(issued.private_key),
                trust_roots: Some(pki.trust_roots.clone()),
                peers,
                ..FederationConfig::default()
            };
            let options = TestOptions {
                database,
                domain: domain.to_string(),
                federation: Some(TestFederation { listener, settings }),
                ..TestOptions::default()
            };
            let domain = domain.to_string();
            starting.spawn(async move { (domain, TestHomeserver::start_with(options).await) });
        }
        let mut homeservers = BTreeMap::new();
        while let Some(started) = starting.join_next().await {
            let (domain, server) = started.expect("a homeserver starts");
            homeservers.insert(domain, DomainHomeserver::Running(server));
        }
        Federation { pki, homeservers }
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
    pub(crate) fn config(&self, domain: &str) -> &Config {
        match self.homeserver(domain) {
            DomainHomeserver::Running(server) => server.config(),
            DomainHomeserver::Stopped(config, _) => config,
            DomainHomeserver::Changing => unreachable!("{domain} is being stopped or started"),
        }
    }

    /// `domain`'s running homeserver.
    pub(crate) fn server(&self, domain: &str) -> &TestHomeserver {
        match self.homeserver(domain) {
            DomainHomeserver::Running(server) => server,
            _ => panic!("{domain}'s homeserver is not running"),
        }
    }

    /// `http://127.0.0.1:PORT` of `domain`'s client API, the same for the whole
    /// test (restarts included).
    pub(crate) fn client_url(&self, domain: &str) -> ServerUrl {
        format!("http://{}", self.config(domain).client_api.listen)
            .parse()
            .expect("a loopback http URL")
    }

    /// Where `domain`'s federation API listens (running or stopped).
    pub(crate) fn federation_address(&self, domain: &str) -> SocketAddr {
        self.config(domain).federation.listen
    }

    /// Stops `domain`'s homeserver gracefully, keeping its database and
    /// configuration; its clients' connections are closed, and new ones are
    /// refused until [`Federation::start_again`]. A graceful stop waits for
    /// open Subscribe streams: no listener of its users may be open.
    pub(crate) async fn stop(&mut self, domain: &str) {
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
    pub(crate) async fn start_again(&mut self, domain: &str) {
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

    /// [`Federation::stop`], then [`Federation::start_again`].
    pub(crate) async fn restart(&mut self, domain: &str) {
        self.restart_with(domain, |_| {}).await;
    }

    /// Restarts `domain`'s homeserver with its configuration changed by
    /// `change` (its addresses must stay).
    pub(crate) async fn restart_with(&mut self, domain: &str, change: impl FnOnce(&mut Config)) {
        self.stop(domain).await;
        if let DomainHomeserver::Stopped(config, _) = self.homeserver_mut(domain) {
            change(config);
        }
        self.start_again(domain).await;
    }

    /// What `domain`'s database holds of the group (hosted or followed).
    pub(crate) async fn stored_group(
        &self,
        domain: &str,
        group_id: &GroupId,
    ) -> Option<StoredGroup> {
        self.server(domain).stored_group(group_id.as_bytes()).await
    }

    /// The events of `hub`'s hosted groups that `follower` has not confirmed.
    pub(crate) async fn outbox_depth(&self, hub: &str, follower: &str) -> u64 {
        self.outbox_status(hub, follower).await.outbox_depth
    }

    /// How `hub`'s deliveries to `follower` go, as the operator's
    /// `federation_status` reports it (works while `hub` is stopped, too).
    pub(crate) async fn outbox_status(&self, hub: &str, follower: &str) -> PeerOutboxStatus {
        let statuses = conclave_homeserver::admin::federation_status(self.config(hub).clone())
            .await
            .unwrap_or_else(|error| panic!("{hub}'s federation status: {error}"));
        statuses
            .into_iter()
            .find(|status| status.domain == follower)
            .unwrap_or_else(|| panic!("{follower} is not a peer of {hub}"))
    }

    /// Waits until `follower` confirmed every event of `hub`'s groups.
    pub(crate) async fn outbox_drained(&self, hub: &str, follower: &str) {
        eventually(
            &format!("{hub}'s outbox to {follower} to drain"),
            || async { (self.outbox_depth(hub, follower).await == 0).then_some(()) },
        )
        .await;
    }

    /// A new certificate for `domain` from the network's CA: homeservers of
    /// the network take it as `domain`'s.
    pub(crate) fn identity(&self, domain: &str) -> PemIdentity {
        self.pki.identity(domain)
    }

    /// A raw client of `domain`'s federation API over a TLS connection of
    /// its own that trusts the network's CA and presents `identity` (or no
    /// client certificate), as a peer homeserver or an impostor would call.
    pub(crate) async fn federation_client(
        &self,
        domain: &str,
        identity: Option<&PemIdentity>,
    ) -> Result<FederationServiceClient<Channel>, RawFailure> {
        let ca_pem = std::fs::read_to_string(&self.pki.trust_roots).expect("read ca.pem");
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca_pem))
            .domain_name(domain);
        if let Some(identity) = identity {
            tls = tls.identity(Identity::from_pem(
                &identity.certificate_pem,
                &identity.private_key_pem,
            ));
        }
        let channel = Channel::from_shared(format!("https://{}", self.federation_address(domain)))
            .expect("a valid URL")
            .tls_config(tls)
            .expect("a TLS configuration")
            .connect()
            .await
            .map_err(|error| RawFailure::Connect(format!("{error:?}")))?;
        Ok(FederationServiceClient::new(channel))
    }
}

/// The raw call was refused with `code` by a handler (or the gate in front of
/// it), its message containing `fragment`.
#[track_caller]
pub(crate) fn assert_refused<T: std::fmt::Debug>(
    case: &str,
    result: Result<T, RawFailure>,
    code: Code,
    fragment: &str,
) {
    match result {
        Err(RawFailure::Call(status)) => {
            assert_eq!(status.code(), code, "{case}: {status:?}");
            assert!(
                status.message().contains(fragment),
                "{case}: {:?} does not contain {fragment:?}",
                status.message()
            );
        }
        other => panic!("{case}: expected {code:?}, got {other:?}"),
    }
}

/// The raw call was refused during the TLS handshake, before any handler ran.
/// In TLS 1.3 the server checks the client certificate after the client
/// considers the handshake done, so the refusal reaches the client either while
/// connecting or on its first call, as the server's alert or a closed
/// connection (which one is a race, and so is the status tonic makes of it);
/// a handler's UNAUTHENTICATED counts as well. What must not happen is an
/// answer.
#[track_caller]
pub(crate) fn assert_refused_at_tls<T: std::fmt::Debug>(case: &str, result: Result<T, RawFailure>) {
    match result {
        Err(RawFailure::Connect(error)) => eprintln!("{case}: refused while connecting: {error}"),
        Err(RawFailure::Call(status))
            if status.code() == Code::Unauthenticated
                || std::error::Error::source(&status)
                    .is_some_and(|source| source.is::<tonic::transport::Error>()) => {}
        other => panic!("{case}: expected a refusal of the TLS connection, got {other:?}"),
    }
}

/// A message as the hub ordered it: log position, sending device, text.
pub(crate) type Logged = (u64, CredentialIdentity, String);

pub(crate) fn logged(message: &ReceivedMessage) -> Logged {
    let text = message.body.text().expect("a text message");
    (message.seq, message.sender.clone(), text.to_owned())
}

/// Every user holds the group at the same epoch, with `members` member devices
/// and the same epoch authenticator and tree hash (so the same keys and tree).
#[track_caller]
pub(crate) fn assert_same_state(users: &[&User], group_id: &GroupId, members: usize) {
    let summaries: Vec<_> = users.iter().map(|user| user.group(group_id)).collect();
    for (user, summary) in users.iter().zip(&summaries) {
        let who = user.user_id();
        assert_eq!(summary.status, GroupStatus::Active, "{who}");
        assert_eq!(summary.member_devices, members, "{who}: {summary:?}");
        assert_eq!(summary.epoch, summaries[0].epoch, "{who}: {summaries:#?}");
        assert_eq!(
            summary.epoch_authenticator, summaries[0].epoch_authenticator,
            "{who}: {summaries:#?}"
        );
        assert_eq!(summary.tree_hash, summaries[0].tree_hash, "{who}");
    }
}

/// A user with one device: the client library on a state directory of its own,
/// registered on its domain's homeserver. The helpers panic, naming the user,
/// when an operation fails; call `client` directly to look at a failure.
pub(crate) struct User {
    pub(crate) client: Client,
    user_id: UserId,
    /// Keeps the client's state alive.
    _state_dir: TempDir,
}

impl User {
    /// Registers `user_id` (`name@domain`) on its domain's homeserver, on a
    /// fresh client state, which publishes a small stock of key packages.
    pub(crate) async fn register(network: &Federation, user_id: &str) -> User {
        let user_id: UserId = user_id.parse().expect("a valid user id");
        let state_dir = tempfile::tempdir().expect("a temporary directory");
        let client = Client::open(state_dir.path())
            .expect("a client state")
            .with_replenish_policy(STOCK);
        let enrolment = client
            .register(
                &network.client_url(user_id.domain().as_str()),
                user_id.username().as_str(),
                PASSWORD,
                None,
                "test device",
            )
            .await
            .unwrap_or_else(|error| panic!("registering {user_id}: {error}"));
        assert_eq!(enrolment.session.user_id(), &user_id);
        assert_eq!(enrolment.key_packages.stock.available, STOCK.target);
        User {
            client,
            user_id,
            _state_dir: state_dir,
        }
    }

    /// Logs `user_id` in on a fresh client state: another device of the user.
    pub(crate) async fn login(network: &Federation, user_id: &str) -> User {
        let user_id: UserId = user_id.parse().expect("a valid user id");
        let state_dir = tempfile::tempdir().expect("a temporary directory");
        let client = Client::open(state_dir.path())
            .expect("a client state")
            .with_replenish_policy(STOCK);
        let enrolment = client
            .login(
                &network.client_url(user_id.domain().as_str()),
                &user_id.to_string(),
                PASSWORD,
                "another test device",
            )
            .await
            .unwrap_or_else(|error| panic!("logging {user_id} in: {error}"));
        assert_eq!(enrolment.session.user_id(), &user_id);
        User {
            client,
            user_id,
            _state_dir: state_dir,
        }
    }

    pub(crate) fn user_id(&self) -> &UserId {
        &self.user_id
    }

    /// This device's `name@domain/device_id`.
    pub(crate) fn identity(&self) -> CredentialIdentity {
        self.client
            .session()
            .expect("a readable state")
            .expect("logged in")
            .credential_identity
    }

    /// Claims a key package of each of `user`'s devices, through this user's
    /// homeserver (which forwards the claim if `user` is on another domain).
    pub(crate) async fn claim(&self, user: &User) -> Vec<ClaimedKeyPackage> {
        self.client
            .claim_key_packages(user.user_id())
            .await
            .unwrap_or_else(|error| panic!("{} claiming {}: {error}", self.user_id, user.user_id))
    }

    /// This device's unclaimed key packages, as its homeserver counts them.
    pub(crate) async fn stock(&self) -> KeyPackageStock {
        self.client
            .key_package_status()
            .await
            .unwrap_or_else(|error| panic!("{} asking for its stock: {error}", self.user_id))
    }

    /// A new group with this device as its only member; this user's homeserver
    /// is its hub.
    pub(crate) async fn create_group(&self, name: &str) -> GroupId {
        let summary = self
            .client
            .create_group(name)
            .await
            .unwrap_or_else(|error| panic!("{} creating {name}: {error}", self.user_id));
        assert_eq!(summary.status, GroupStatus::Active);
        summary.group_id
    }

    pub(crate) async fn invite(&self, group_id: &GroupId, users: &[&User]) -> MembershipChange {
        let user_ids: Vec<UserId> = users.iter().map(|user| user.user_id.clone()).collect();
        self.client
            .invite(group_id, &user_ids)
            .await
            .unwrap_or_else(|error| {
                let invited: Vec<String> = user_ids.iter().map(ToString::to_string).collect();
                panic!("{} inviting {}: {error}", self.user_id, invited.join(", "))
            })
    }

    pub(crate) async fn remove(&self, group_id: &GroupId, user: &User) -> MembershipChange {
        self.client
            .remove(group_id, user.user_id())
            .await
            .unwrap_or_else(|error| panic!("{} removing {}: {error}", self.user_id, user.user_id))
    }

    /// A self-update commit of this device.
    pub(crate) async fn rotate(&self, group_id: &GroupId) -> CommitOutcome {
        self.client
            .rotate(group_id)
            .await
            .unwrap_or_else(|error| panic!("{} rotating: {error}", self.user_id))
    }

    pub(crate) async fn send(&self, group_id: &GroupId, text: &str) -> SentMessage {
        self.client
            .send(group_id, text)
            .await
            .unwrap_or_else(|error| panic!("{} sending {text:?}: {error}", self.user_id))
    }

    /// Sends `text` until the hub has it, through outages: after a passing
    /// failure (this user's homeserver, or the group's hub, is unreachable), the
    /// client keeps the encrypted message and its idempotency key, and
    /// [`Client::receive`] sends it again, as often as it takes (pausing 10 ms
    /// doubling to 250 ms in between). Calls `on_failure` after each failure.
    pub(crate) async fn send_through_outages(
        &self,
        group_id: &GroupId,
        text: &str,
        on_failure: impl Fn(),
    ) {
        let what = format!("{} sending {text:?}", self.user_id);
        within(&what, async {
            let Err(error) = self.client.send(group_id, text).await else {
                assert_eq!(self.sent(group_id, text), 1, "{what}: in the history once");
                return;
            };
            assert_passing(&error, &what);
            on_failure();
            let mut pause = Duration::from_millis(10);
            while let Err(error) = self.client.receive().await {
                assert_passing(&error, &what);
                on_failure();
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(250));
            }
            // Kept and resent by `receive` until the hub had it: once, always.
            assert_eq!(self.sent(group_id, text), 1, "{what}: in the history once");
        })
        .await;
    }

    /// How often this device's history holds `text` as its own.
    fn sent(&self, group_id: &GroupId, text: &str) -> usize {
        let me = self.identity();
        let history = self.history(group_id);
        history
            .iter()
            .filter(|(_, sender, logged)| *sender == me && logged == text)
            .count()
    }

    /// The group's messages as this device stored them, its own included, in
    /// log order.
    pub(crate) fn history(&self, group_id: &GroupId) -> Vec<Logged> {
        self.client
            .messages(group_id, usize::MAX)
            .unwrap_or_else(|error| panic!("{}'s history: {error}", self.user_id))
            .iter()
            .map(logged)
            .collect()
    }

    /// Applies everything waiting at this user's homeserver.
    pub(crate) async fn receive(&self) -> ReceiveReport {
        within(
            &format!("{} receiving", self.user_id),
            self.client.receive(),
        )
        .await
        .unwrap_or_else(|error| panic!("{} receiving: {error}", self.user_id))
    }

    /// Receives until `condition` holds, for at most [`DELIVERY_TIMEOUT`].
    ///
    /// Across domains, what the hub accepted reaches another domain's homeserver
    /// a little later, so one receive right after the sender's call may come too
    /// early. Only messages can be awaited (with a `Listener`); for anything else
    /// (a Welcome, a removal, a commit) the client library offers no wait, so
    /// this polls: the condition, not the pause between polls, is what the test
    /// waits for.
    pub(crate) async fn receive_until(&self, what: &str, condition: impl Fn(&User) -> bool) {
        within(&format!("{} waiting for {what}", self.user_id), async {
            let mut pause = Duration::from_millis(10);
            loop {
                self.receive().await;
                if condition(self) {
                    return;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(250));
            }
        })
        .await;
    }

    /// The next `count` messages of other members in the group, in log order,
    /// awaited on the homeserver's Subscribe stream.
    pub(crate) async fn next_messages(
        &self,
        group_id: &GroupId,
        count: usize,
    ) -> Vec<ReceivedMessage> {
        let mut listener = self.client.listen(Some(group_id.clone()));
        let mut messages = Vec::with_capacity(count);
        within(
            &format!("{} waiting for {count} messages", self.user_id),
            async {
                while messages.len() < count {
                    let message = listener
                        .next()
                        .await
                        .unwrap_or_else(|error| panic!("{} listening: {error}", self.user_id));
                    messages.push(message);
                }
            },
        )
        .await;
        messages
    }

    /// What this device knows of the group (it must know the group).
    pub(crate) fn group(&self, group_id: &GroupId) -> GroupSummary {
        self.client
            .group(group_id)
            .unwrap_or_else(|error| panic!("{}: {error}", self.user_id))
    }

    /// The group's epoch on this device; `None` if it holds no state of it.
    pub(crate) fn epoch(&self, group_id: &GroupId) -> Option<u64> {
        self.status(group_id)?;
        self.group(group_id).epoch
    }

    /// Where this device stands in the group; `None` if it has not heard of it.
    pub(crate) fn status(&self, group_id: &GroupId) -> Option<GroupStatus> {
        match self.client.group(group_id) {
            Ok(summary) => Some(summary.status),
            Err(ClientError::UnknownGroup(_)) => None,
            Err(error) => panic!("{}: {error}", self.user_id),
        }
    }
}

/// Panics unless `error` is a passing failure after which the same request may
/// succeed: the server unreachable, or unavailable (UNAVAILABLE, a connection
/// broken mid-call, or a call refused unprocessed by a server shutting down).
#[track_caller]
fn assert_passing(error: &ClientError, what: &str) {
    let passing = matches!(error, ClientError::Connect(_))
        || matches!(
            error.rpc_code(),
            Some(Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded)
        );
    assert!(passing, "{what}: {error}");
}
