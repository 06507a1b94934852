//! Users driving the real client library, each on a state directory of its
//! own, on a `conclave_test_support::TestNetwork` (the development PKI and one
//! in-process homeserver per domain, each with a database of its own, peered
//! with all the others over mutual TLS; a domain keeps its addresses across
//! restarts of its homeserver, so its users' clients and its peers find it
//! where they did).
//!
//! For what the client library cannot do (act as a homeserver, or as an
//! impostor), `TestNetwork::raw_federation_client` calls a domain's federation
//! API directly, presenting a certificate of the test's choice; the checks of
//! its answers are here.

use std::future::Future;
use std::time::Duration;

use conclave_client::{
    ClaimedKeyPackage, Client, ClientError, CommitOutcome, GroupId, GroupStatus, GroupSummary,
    KeyPackageStock, MembershipChange, ReceiveReport, ReceivedMessage, ReplenishPolicy,
    SentMessage, ServerUrl,
};
use conclave_core::ids::{CredentialIdentity, UserId};
use conclave_proto::federation::v1 as proto;
use conclave_test_support::wait::DELIVERY_TIMEOUT;
use conclave_test_support::{IssuedCertificate, PASSWORD, RawFailure, TestNetwork, eventually};
use tempfile::TempDir;
use tonic::Code;

/// The three domains most tests use.
pub(crate) const THREE_DOMAINS: [&str; 3] = ["a.example", "b.example", "c.example"];

/// A user on each of the three domains.
pub(crate) const ALICE_BOB_AND_CAROL: [&str; 3] =
    ["alice@a.example", "bob@b.example", "carol@c.example"];

/// Longest a whole test may take; a hang fails instead of blocking the run.
const TEST_TIMEOUT: Duration = Duration::from_secs(180);

/// Key packages per device: enough for a few invitations and claims, cheap to
/// build.
const STOCK: ReplenishPolicy = ReplenishPolicy {
    threshold: 2,
    target: 4,
};

/// Runs one test body with a deadline, logging to the test output when
/// `RUST_LOG` is set (e.g. `RUST_LOG=conclave_homeserver=debug`).
pub(crate) fn within_timeout(test: impl Future<Output = ()>) -> impl Future<Output = ()> {
    conclave_test_support::init_logging();
    conclave_test_support::within(TEST_TIMEOUT, "the test", test)
}

/// Awaits `future` for at most [`DELIVERY_TIMEOUT`], panicking with `what`.
fn within<T>(what: &str, future: impl Future<Output = T>) -> impl Future<Output = T> {
    conclave_test_support::within(DELIVERY_TIMEOUT, what, future)
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

/// `receiver` gets the `count` messages of `sender`'s history of the group,
/// in the hub's order, each once: nothing more arrives, and its own history
/// ends up the same.
pub(crate) async fn assert_received_once_in_order(
    sender: &User,
    receiver: &User,
    group_id: &GroupId,
    count: usize,
) {
    let log: Vec<Logged> = sender.history(group_id);
    assert_eq!(log.len(), count);
    let received: Vec<Logged> = receiver
        .next_messages(group_id, log.len())
        .await
        .iter()
        .map(logged)
        .collect();
    assert_eq!(received, log, "the receiver reads the hub's order");
    // Nothing more, and nothing twice.
    assert_eq!(receiver.receive().await.new_messages, 0);
    assert_eq!(receiver.history(group_id), log);
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

/// The domain of `user_id` (`name@domain`).
fn domain_of(user_id: &str) -> &str {
    user_id
        .rsplit_once('@')
        .map(|(_, domain)| domain)
        .expect("a user id is name@domain")
}

/// A test homeserver's client URL, as the client library takes it.
pub(crate) fn parse_url(url: &str) -> ServerUrl {
    url.parse().expect("a loopback http URL")
}

/// `creator` makes a group named `name` and invites `members`, each of whom
/// then receives the Welcome: the group is at epoch 1 for everyone.
pub(crate) async fn group_of(creator: &User, name: &str, members: &[&User]) -> GroupId {
    let group_id = creator.create_group(name).await;
    creator.invite(&group_id, members).await;
    for member in members {
        member
            .receive_until("the Welcome", |user| user.epoch(&group_id) == Some(1))
            .await;
    }
    group_id
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
    /// `user_id` (`name@domain`) on a fresh client state, not enrolled yet.
    fn fresh(user_id: &str) -> User {
        let user_id: UserId = user_id.parse().expect("a valid user id");
        let state_dir = tempfile::tempdir().expect("a temporary directory");
        let client = Client::open(state_dir.path())
            .expect("a client state")
            .with_replenish_policy(STOCK);
        User {
            client,
            user_id,
            _state_dir: state_dir,
        }
    }

    /// Registers `user_id` (`name@domain`) on its domain's homeserver, on a
    /// fresh client state, which publishes a small stock of key packages.
    pub(crate) async fn register(network: &TestNetwork, user_id: &str) -> User {
        User::register_at(&network.client_url(domain_of(user_id)), user_id).await
    }

    /// Registers `user_id` at the homeserver (or replica) at `server_url`, on
    /// a fresh client state.
    pub(crate) async fn register_at(server_url: &str, user_id: &str) -> User {
        let user = User::fresh(user_id);
        let user_id = &user.user_id;
        let enrolment = user
            .client
            .register(
                &parse_url(server_url),
                user_id.username().as_str(),
                PASSWORD,
                None,
                "test device",
            )
            .await
            .unwrap_or_else(|error| panic!("registering {user_id}: {error}"));
        assert_eq!(enrolment.session.user_id(), user_id);
        assert_eq!(enrolment.key_packages.stock.available, STOCK.target);
        user
    }

    /// [`User::register`] for each of `user_ids`, in that order.
    pub(crate) async fn register_all<const N: usize>(
        network: &TestNetwork,
        user_ids: [&str; N],
    ) -> [User; N] {
        let mut users = Vec::with_capacity(N);
        for user_id in user_ids {
            users.push(User::register(network, user_id).await);
        }
        let Ok(users) = <[User; N]>::try_from(users) else {
            unreachable!("one user per user id");
        };
        users
    }

    /// Logs `user_id` in on a fresh client state: another device of the user.
    pub(crate) async fn login(network: &TestNetwork, user_id: &str) -> User {
        User::login_at(&network.client_url(domain_of(user_id)), user_id).await
    }

    /// Logs `user_id` in at the homeserver (or replica) at `server_url`, on a
    /// fresh client state: another device of the user.
    pub(crate) async fn login_at(server_url: &str, user_id: &str) -> User {
        let user = User::fresh(user_id);
        let user_id = &user.user_id;
        let enrolment = user
            .client
            .login(
                &parse_url(server_url),
                &user_id.to_string(),
                PASSWORD,
                "another test device",
            )
            .await
            .unwrap_or_else(|error| panic!("logging {user_id} in: {error}"));
        assert_eq!(enrolment.session.user_id(), user_id);
        user
    }

    pub(crate) fn user_id(&self) -> &UserId {
        &self.user_id
    }

    /// The client's state directory, for the `conclave` CLI to act as this
    /// device (`--state`) while this client is idle.
    pub(crate) fn state_dir(&self) -> &std::path::Path {
        self._state_dir.path()
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
    /// [`Client::receive`] sends it again, as often as it takes (for at most
    /// [`DELIVERY_TIMEOUT`], pausing 10 ms doubling to 250 ms in between).
    /// Calls `on_failure` after each failure.
    pub(crate) async fn send_through_outages(
        &self,
        group_id: &GroupId,
        text: &str,
        on_failure: impl Fn(),
    ) {
        let what = format!("{} sending {text:?}", self.user_id);
        let first = within(&what, self.client.send(group_id, text)).await;
        if let Err(error) = first {
            // Stored and not taken yet is what `receive` resends.
            let error = match error {
                ClientError::NotSentYet { source, .. } => *source,
                error => error,
            };
            assert_passing(&error, &what);
            on_failure();
            let (what, on_failure) = (&what, &on_failure);
            eventually(DELIVERY_TIMEOUT, what, || async move {
                match self.client.receive().await {
                    Ok(_) => Some(()),
                    Err(error) => {
                        assert_passing(&error, what);
                        on_failure();
                        None
                    }
                }
            })
            .await;
        }
        // Kept and resent by `receive` until the hub had it: once, always.
        assert_eq!(self.sent(group_id, text), 1, "{what}: in the history once");
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
        let what = format!("{} waiting for {what}", self.user_id);
        let condition = &condition;
        eventually(DELIVERY_TIMEOUT, &what, || async move {
            self.receive().await;
            condition(self).then_some(())
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

/// Connects to `to`'s federation API presenting `identity`, and makes one call.
pub(crate) async fn call<T, F>(
    network: &TestNetwork,
    to: &str,
    identity: Option<&IssuedCertificate>,
    make_call: impl FnOnce(
        proto::federation_service_client::FederationServiceClient<tonic::transport::Channel>,
    ) -> F,
) -> Result<T, RawFailure>
where
    F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let client = network.raw_federation_client(to, identity).await?;
    make_call(client)
        .await
        .map(tonic::Response::into_inner)
        .map_err(RawFailure::Call)
}

/// Calls `to`'s DeliverEvents presenting `identity`.
pub(crate) async fn deliver(
    network: &TestNetwork,
    to: &str,
    identity: Option<&IssuedCertificate>,
    request: proto::DeliverEventsRequest,
) -> Result<proto::DeliverEventsResponse, RawFailure> {
    call(network, to, identity, |mut client| async move {
        client.deliver_events(request).await
    })
    .await
}
