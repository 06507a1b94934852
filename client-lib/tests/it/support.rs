//! Shared fixtures: a homeserver, devices with state directories of their own.

use std::future::Future;

use conclave_client::{Client, Enrolment, ReceivedMessage, ReplenishPolicy, ServerUrl};
use conclave_test_support::{DatabaseChoice, TestHomeserver, TestOptions};
use tempfile::TempDir;

pub(crate) use conclave_test_support::PASSWORD;

/// A small stock, so tests can use it up with a few claims (the homeserver limits
/// claims per minute).
pub(crate) const SMALL_STOCK: ReplenishPolicy = ReplenishPolicy {
    threshold: 1,
    target: 2,
};

pub(crate) fn server_url(server: &TestHomeserver) -> ServerUrl {
    server
        .client_url()
        .parse()
        .expect("the test server's URL is loopback http")
}

/// One device: its client and the directory its state lives in.
pub(crate) struct TestDevice {
    pub(crate) client: Client,
    pub(crate) state_dir: TempDir,
}

impl TestDevice {
    /// The same device, calling the homeserver at `endpoints` (its replicas,
    /// the first preferred).
    pub(crate) fn with_server_endpoints(self, endpoints: Vec<ServerUrl>) -> TestDevice {
        TestDevice {
            client: self.client.with_server_endpoints(endpoints),
            state_dir: self.state_dir,
        }
    }

    pub(crate) fn new(policy: ReplenishPolicy) -> TestDevice {
        let state_dir = tempfile::tempdir().unwrap();
        let client = Client::open(state_dir.path())
            .unwrap()
            .with_replenish_policy(policy);
        TestDevice { client, state_dir }
    }

    /// Closes the client and opens the same state again, as a restart would.
    pub(crate) fn reopen(self) -> TestDevice {
        let TestDevice { client, state_dir } = self;
        drop(client);
        TestDevice {
            client: Client::open(state_dir.path()).unwrap(),
            state_dir,
        }
    }

    /// Closes the client, keeping the state directory (to copy or change it).
    pub(crate) fn close(self) -> TempDir {
        drop(self.client);
        self.state_dir
    }

    /// This device's `name@domain/device_id`.
    pub(crate) fn identity(&self) -> conclave_core::ids::CredentialIdentity {
        self.client
            .session()
            .unwrap()
            .expect("logged in")
            .credential_identity
    }
}

/// Opens a client on a state directory closed with [`TestDevice::close`].
pub(crate) trait Reopen {
    fn open(self) -> TestDevice;
}

impl Reopen for TempDir {
    fn open(self) -> TestDevice {
        TestDevice {
            client: Client::open(self.path()).unwrap(),
            state_dir: self,
        }
    }
}

/// Registers `username` on a new device with the given replenish policy.
pub(crate) async fn register(
    server: &TestHomeserver,
    username: &str,
    policy: ReplenishPolicy,
) -> (TestDevice, Enrolment) {
    let device = TestDevice::new(policy);
    let enrolment = device
        .client
        .register(&server_url(server), username, PASSWORD, None, "test device")
        .await
        .unwrap_or_else(|error| panic!("registering {username}: {error}"));
    (device, enrolment)
}

/// Logs `user` in on a new device with the given replenish policy.
pub(crate) async fn login(
    server: &TestHomeserver,
    user: &str,
    policy: ReplenishPolicy,
) -> (TestDevice, Enrolment) {
    let device = TestDevice::new(policy);
    let enrolment = device
        .client
        .login(&server_url(server), user, PASSWORD, "second device")
        .await
        .unwrap_or_else(|error| panic!("logging {user} in: {error}"));
    (device, enrolment)
}

/// Key-package stock for group tests: enough for a few invitations, cheap to
/// build. Each Welcome uses one package and triggers a top-up when low.
pub(crate) const GROUP_STOCK: ReplenishPolicy = ReplenishPolicy {
    threshold: 2,
    target: 4,
};

/// A homeserver on the given database, logging to the test output when
/// `RUST_LOG` is set (e.g. `RUST_LOG=conclave_client=debug`). PostgreSQL must be
/// running (the test support panics with a clear message if it is not).
pub(crate) async fn start_server(database: DatabaseChoice) -> TestHomeserver {
    conclave_test_support::init_logging();
    TestHomeserver::start_with(TestOptions::on(database)).await
}

/// Waits for `future` at most `seconds`, panicking with `what` if it takes longer.
pub(crate) fn within<T>(
    seconds: u64,
    what: &str,
    future: impl Future<Output = T>,
) -> impl Future<Output = T> {
    conclave_test_support::within(std::time::Duration::from_secs(seconds), what, future)
}

/// Every unread message of a device, in arrival order.
pub(crate) fn take_all_unread(device: &TestDevice) -> Vec<ReceivedMessage> {
    let mut messages = Vec::new();
    while let Some(message) = device.client.take_unread(None).unwrap() {
        messages.push(message);
    }
    messages
}
