//! `Client`: one device's handle on its homeserver, tying the local state, the MLS
//! core and the connection together. Each use case lives in a submodule; this file
//! holds the shared plumbing (state access, channels, calls, session checks).

mod account;
mod groups;
mod key_packages;
mod messages;
mod rejoin;
mod submit;
mod sync;

pub(crate) use submit::is_transient_error;
pub(crate) use sync::{PageOutcome, apply_event};

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::call_tracing::TracedChannel;
use crate::trust;
use chrono::{DateTime, Utc};
use rustls::pki_types::CertificateDer;

pub use account::{Device, Enrolment, GroupRef, LoggedOut, WhoAmI};
pub use groups::{CommitOutcome, GroupId, GroupSummary, Member, MembershipChange};
pub use key_packages::{ClaimedKeyPackage, PublishOutcome};
pub use messages::{
    ConnectionNotice, Listener, MembershipEvent, ReceivedMessage, SentMessage, TimelineEvent,
};
pub use submit::RefusedSubmission;
pub use sync::ReceiveReport;

use crate::connection::{self, BearerAuth, error_chain, refused_certificate};
use crate::endpoints::Endpoints;
use crate::error::{ClientError, RpcError};
use crate::key_package_stock::ReplenishPolicy;
use crate::server_url::ServerUrl;
use crate::session::Session;
use crate::state::State;

/// How long a unary request may wait for its answer before it is abandoned.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A device: its durable state and its connection to its homeserver.
///
/// Methods take `&self` and may run concurrently; the state sits behind a mutex
/// that is never held across an `.await`. SQLite work is done inline on the
/// calling task: it is a local file, and each operation touches it for
/// milliseconds, far less than the network round trip around it.
pub struct Client {
    state: Mutex<State>,
    /// The last channel opened, reused while the server stays the same (a tonic
    /// `TracedChannel` multiplexes requests over one HTTP/2 connection).
    channel: Mutex<Option<(ServerUrl, TracedChannel)>>,
    /// The addresses of the session's homeserver, and the one in use.
    endpoints: Mutex<Endpoints>,
    replenish_policy: ReplenishPolicy,
    /// Held by every group operation and by event processing, across their
    /// network round trips: a submission is built, sent and applied (or undone)
    /// before anything else touches the groups, so that, say, a listener never
    /// sees the echo of a commit this client has not merged yet. Another process
    /// on the same state is not excluded; the state copes with that on its own
    /// (each step is a transaction, and an echo of our own commit merges it).
    group_operations: tokio::sync::Mutex<()>,
    /// A test hook: stop the next submission at this point, as a crash would.
    fail_point: Mutex<Option<FailPoint>>,
    /// CA certificates trusted for `https://` homeservers besides the
    /// system's trust store ([`Client::with_ca_files`]).
    extra_roots: Vec<CertificateDer<'static>>,
}

/// Where a test can make the client stop as if it crashed. Not for production
/// use: it exists to prove that stored intents survive a crash.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailPoint {
    /// After a submission is stored, before it is sent.
    BeforeSend,
    /// After the hub accepted a submission, before it is applied here.
    AfterAccepted,
    /// After a submission lost the race for its epoch and was rolled back
    /// here, before catching up with the winner and rebuilding it.
    AfterLostRace,
}

impl Client {
    /// Opens the device state in `state_dir`, creating it (mode 0700, file 0600)
    /// if needed. Does not touch the network.
    pub fn open(state_dir: impl AsRef<Path>) -> Result<Client, ClientError> {
        let state = State::open(state_dir.as_ref())?;
        Ok(Client {
            state: Mutex::new(state),
            channel: Mutex::new(None),
            endpoints: Mutex::new(Endpoints::default()),
            replenish_policy: ReplenishPolicy::default(),
            group_operations: tokio::sync::Mutex::new(()),
            fail_point: Mutex::new(None),
            extra_roots: Vec::new(),
        })
    }

    /// Also trusts the CA certificates in these PEM files for `https://`
    /// homeservers, besides the system's trust store (as a private or
    /// enterprise CA needs). Each file is read and checked now.
    pub fn with_ca_files(mut self, paths: &[PathBuf]) -> Result<Client, ClientError> {
        for path in paths {
            self.extra_roots.extend(trust::read_ca_file(path)?);
        }
        Ok(self)
    }

    /// Replaces the policy [`Client::replenish_key_packages`] follows.
    pub fn with_replenish_policy(mut self, policy: ReplenishPolicy) -> Client {
        self.replenish_policy = policy;
        self
    }

    /// Other addresses of the session's homeserver: its replicas, when no
    /// load balancer stands in front of them (the session's own address may
    /// be among them; it is used first either way). When the address in use
    /// is unreachable or its server shuts down, sending and listening move to
    /// the next one, round-robin, and resume from the durable cursors: nothing
    /// is lost or shown twice.
    pub fn with_server_endpoints(self, endpoints: Vec<ServerUrl>) -> Client {
        self.set_server_endpoints(endpoints);
        self
    }

    /// [`Client::with_server_endpoints`] on a client in use.
    pub fn set_server_endpoints(&self, endpoints: Vec<ServerUrl>) {
        *self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Endpoints::new(endpoints);
    }

    /// The address of the homeserver in use now: the session's, or the one
    /// the client moved to after losing it. `None` without a session.
    pub fn server_endpoint(&self) -> Result<Option<ServerUrl>, ClientError> {
        Ok(self.session()?.map(|session| {
            self.endpoints
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .current(&session.server_url)
        }))
    }

    /// How many addresses the session's homeserver has (at least 1).
    fn endpoint_count(&self) -> usize {
        match self.session() {
            Ok(Some(session)) => self
                .endpoints
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .all(&session.server_url)
                .len(),
            _ => 1,
        }
    }

    /// The connection through `failed` was lost or its server is shutting
    /// down: moves to the homeserver's next address (unless another caller
    /// already did) and returns the one to use now.
    fn fail_over(&self, failed: &ServerUrl) -> Result<ServerUrl, ClientError> {
        let session = self.require_session()?;
        let next = self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .move_past(&session.server_url, failed);
        if &next != failed {
            tracing::info!(%failed, %next, "lost the homeserver at one address; moving to the next");
        }
        Ok(next)
    }

    /// The stored session, if this device is logged in. Local only.
    pub fn session(&self) -> Result<Option<Session>, ClientError> {
        Ok(self.state().session()?)
    }

    /// The homeserver remembered from the last register or login (kept after
    /// logout, so logging in again needs no URL). Local only.
    pub fn remembered_server_url(&self) -> Result<Option<ServerUrl>, ClientError> {
        Ok(self.state().server_url()?)
    }

    /// Makes the next submission stop at `fail_point` with
    /// [`ClientError::SimulatedCrash`], leaving the state as a crash there would.
    /// For tests.
    #[doc(hidden)]
    pub fn set_fail_point(&self, fail_point: Option<FailPoint>) {
        *self
            .fail_point
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = fail_point;
    }

    /// Fails with [`ClientError::SimulatedCrash`] if the test hook is set to
    /// `here`, and clears it.
    fn check_fail_point(&self, here: FailPoint) -> Result<(), ClientError> {
        let mut fail_point = self
            .fail_point
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if *fail_point == Some(here) {
            *fail_point = None;
            return Err(ClientError::SimulatedCrash(match here {
                FailPoint::BeforeSend => "before send",
                FailPoint::AfterAccepted => "after the hub accepted",
                FailPoint::AfterLostRace => "after losing the race for an epoch",
            }));
        }
        Ok(())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held cannot have left the database half
        // written: every multi-step write runs in a SQLite transaction, which
        // rolls back when dropped. So a poisoned lock is safe to take over.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn require_session(&self) -> Result<Session, ClientError> {
        self.session()?.ok_or(ClientError::NotLoggedIn)
    }

    /// A channel to `server_url`, reusing the previous one if it goes there.
    async fn channel(&self, server_url: &ServerUrl) -> Result<TracedChannel, ClientError> {
        let cached = self
            .channel
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|(url, _)| url == server_url)
            .map(|(_, channel)| channel.clone());
        if let Some(channel) = cached {
            return Ok(channel);
        }
        let channel = connection::connect(server_url, &self.extra_roots).await?;
        *self.channel.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((server_url.clone(), channel.clone()));
        Ok(channel)
    }

    /// The session, a channel to its homeserver (at the address in use), and
    /// the interceptor carrying its token.
    async fn authenticated(&self) -> Result<(Session, TracedChannel, BearerAuth), ClientError> {
        let session = self.require_session()?;
        let auth = BearerAuth::new(&session.access_token)?;
        let endpoint = self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .current(&session.server_url);
        let channel = self.channel(&endpoint).await?;
        Ok((session, channel, auth))
    }
}

/// Awaits one unary request, with a deadline, turning a refusal into [`RpcError`].
async fn call<T>(
    operation: &'static str,
    request: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, ClientError> {
    call_with_status(operation, request)
        .await
        .map_err(call_error)
}

/// A failed call as the client's error: a certificate refused when the
/// channel reconnected in the words a first connection's refusal has (which
/// name, which issuer), anything else as the homeserver's refusal.
fn call_error((error, status): (RpcError, Option<tonic::Status>)) -> ClientError {
    match status.as_ref().and_then(refused_certificate) {
        Some(refused) => refused.into(),
        None => error.into(),
    }
}

/// Like [`call`], but a refusal also comes back as the status itself, whose
/// details some callers read (a commit conflict names the winning commit).
async fn call_with_status<T>(
    operation: &'static str,
    request: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, (RpcError, Option<tonic::Status>)> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => {
            let mut error = RpcError::from_status(operation, &status);
            // A status made from a transport failure keeps its cause as a source.
            if let Some(source) = std::error::Error::source(&status) {
                let cause = error_chain(source);
                if !error.message.contains(&cause) {
                    error.message = format!("{}: {cause}", error.message);
                }
            }
            tracing::debug!(operation, code = ?error.code, message = %error.message, "request refused");
            Err((error, Some(status)))
        }
        Err(_) => Err((
            RpcError {
                operation,
                code: tonic::Code::DeadlineExceeded,
                message: format!("no answer within {} seconds", REQUEST_TIMEOUT.as_secs()),
                retry_after: None,
            },
            None,
        )),
    }
}

/// The local clock in milliseconds since the Unix epoch, for bookkeeping columns.
fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// A protobuf timestamp as a UTC time; `None` when unset or out of range.
fn to_datetime(timestamp: Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    let timestamp = timestamp?;
    DateTime::from_timestamp(timestamp.seconds, u32::try_from(timestamp.nanos).ok()?)
}

fn invalid_response(operation: &'static str, reason: impl Into<String>) -> ClientError {
    ClientError::InvalidResponse {
        operation,
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Callers spawn client operations on multi-threaded runtimes; that needs the
    /// futures to be `Send`, i.e. no state lock held across an `.await`.
    #[test]
    fn operations_can_be_spawned() {
        fn assert_send<T: Send>(_: &T) {}
        fn assert_sync<T: Sync>(_: &T) {}
        let dir = tempfile::tempdir().unwrap();
        let client = Client::open(dir.path()).unwrap();
        assert_sync(&client);
        let url: ServerUrl = "http://127.0.0.1:1".parse().unwrap();
        let user: conclave_core::ids::UserId = "bob@localhost".parse().unwrap();
        assert_send(&client.register(&url, "alice", "password", None, ""));
        assert_send(&client.login(&url, "alice", "password", ""));
        assert_send(&client.logout());
        assert_send(&client.whoami());
        assert_send(&client.devices());
        assert_send(&client.publish_key_packages(1));
        assert_send(&client.replenish_key_packages());
        assert_send(&client.claim_key_packages(&user));
        let group_id = GroupId::from_bytes(vec![1; 16]);
        assert_send(&client.create_group("team"));
        assert_send(&client.invite(&group_id, std::slice::from_ref(&user)));
        assert_send(&client.remove(&group_id, &user));
        assert_send(&client.leave(&group_id));
        assert_send(&client.rotate(&group_id));
        assert_send(&client.rejoin(&group_id));
        assert_send(&client.send(&group_id, "hello"));
        assert_send(&client.receive());
        let mut listener = client.listen(None);
        assert_send(&listener.next());
    }

    #[tokio::test]
    async fn a_new_state_has_no_session() {
        let dir = tempfile::tempdir().unwrap();
        let client = Client::open(dir.path()).unwrap();
        assert_eq!(client.session().unwrap(), None);
        assert_eq!(client.remembered_server_url().unwrap(), None);
        let error = client.whoami().await.unwrap_err();
        assert!(matches!(error, ClientError::NotLoggedIn), "{error}");
        let error = client.publish_key_packages(1).await.unwrap_err();
        assert!(matches!(error, ClientError::NotLoggedIn), "{error}");
    }
}
