//! `Client`: one device's handle on its homeserver, tying the local state, the MLS
//! core and the connection together. Each use case lives in a submodule; this file
//! holds the shared plumbing (state access, channels, calls, session checks).

mod account;
mod key_packages;

use std::future::Future;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tonic::transport::Channel;

pub use account::{Device, Enrolment, WhoAmI};
pub use key_packages::{ClaimedKeyPackage, PublishOutcome};

use crate::connection::{self, BearerAuth, error_chain};
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
    /// `Channel` multiplexes requests over one HTTP/2 connection).
    channel: Mutex<Option<(ServerUrl, Channel)>>,
    replenish_policy: ReplenishPolicy,
}

impl Client {
    /// Opens the device state in `state_dir`, creating it (mode 0700, file 0600)
    /// if needed. Does not touch the network.
    pub fn open(state_dir: impl AsRef<Path>) -> Result<Client, ClientError> {
        let state = State::open(state_dir.as_ref())?;
        Ok(Client {
            state: Mutex::new(state),
            channel: Mutex::new(None),
            replenish_policy: ReplenishPolicy::default(),
        })
    }

    /// Replaces the policy [`Client::replenish_key_packages`] follows.
    pub fn with_replenish_policy(mut self, policy: ReplenishPolicy) -> Client {
        self.replenish_policy = policy;
        self
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
    async fn channel(&self, server_url: &ServerUrl) -> Result<Channel, ClientError> {
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
        let channel = connection::connect(server_url).await?;
        *self.channel.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((server_url.clone(), channel.clone()));
        Ok(channel)
    }

    /// The session, a channel to its server, and the interceptor carrying its token.
    async fn authenticated(&self) -> Result<(Session, Channel, BearerAuth), ClientError> {
        let session = self.require_session()?;
        let auth = BearerAuth::new(&session.access_token)?;
        let channel = self.channel(&session.server_url).await?;
        Ok((session, channel, auth))
    }
}

/// Awaits one unary request, with a deadline, turning a refusal into [`RpcError`].
async fn call<T>(
    operation: &'static str,
    request: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, ClientError> {
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
            Err(error.into())
        }
        Err(_) => Err(RpcError {
            operation,
            code: tonic::Code::DeadlineExceeded,
            message: format!("no answer within {} seconds", REQUEST_TIMEOUT.as_secs()),
        }
        .into()),
    }
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
