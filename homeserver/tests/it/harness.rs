//! What every test here needs: a server on the database under test, a client that
//! speaks the generated gRPC API, registered devices with real Ed25519 keys, and
//! KeyPackages built with openmls exactly as a device would build them.

use conclave_core::enrolment::EnrolmentTranscript;
use conclave_core::ids::{Domain, Username};
use conclave_core::mls::{CIPHERSUITE, GROUP_METADATA_EXTENSION_TYPE, verification_crypto};
use conclave_proto::client::v1 as proto;
use conclave_proto::client::v1::account_service_client::AccountServiceClient;
use conclave_proto::client::v1::key_package_service_client::KeyPackageServiceClient;
use conclave_test_support::{DatabaseChoice, PASSWORD, TestHomeserver, TestOptions};
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::{
    BasicCredential, Capabilities, CredentialType, CredentialWithKey, ExtensionType, KeyPackage,
    KeyPackageIn, Lifetime, ProtocolVersion,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use openmls_traits::crypto::OpenMlsCrypto as _;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request, Status, Streaming};

/// Longest a whole test may take; a hang fails instead of blocking the run.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs one test body with a deadline.
pub(crate) fn within_timeout(test: impl Future<Output = ()>) -> impl Future<Output = ()> {
    conclave_test_support::within(TEST_TIMEOUT, "the test", test)
}

/// A server on `database` with every other option at its default.
pub(crate) async fn start(database: DatabaseChoice) -> TestHomeserver {
    TestHomeserver::start_with(TestOptions::on(database)).await
}

/// [`start`], and a client of its API.
pub(crate) async fn start_with_api(database: DatabaseChoice) -> (TestHomeserver, Api) {
    let server = start(database).await;
    let api = Api::connect(&server).await;
    (server, api)
}

/// A plaintext channel to the server's client API.
pub(crate) async fn channel(server: &TestHomeserver) -> Channel {
    Channel::from_shared(server.client_url())
        .expect("client_url is a valid URI")
        .connect()
        .await
        .expect("cannot connect to the test homeserver")
}

/// Clients of both services over one channel. Each call clones the generated client
/// (cheap), so a `&Api` can make calls from many places at once.
#[derive(Clone)]
pub(crate) struct Api {
    accounts: AccountServiceClient<Channel>,
    key_packages: KeyPackageServiceClient<Channel>,
}

/// A device enrolled by Register or Login, with the key pair it enrolled.
pub(crate) struct TestDevice {
    pub(crate) user_id: String,
    pub(crate) device_id: String,
    /// `name@domain/device_id`, what the device's MLS credential must carry.
    pub(crate) identity: String,
    pub(crate) token: String,
    pub(crate) signer: SignatureKeyPair,
}

/// A fresh Ed25519 key pair of Conclave's cipher suite. The harness keeps its
/// private key, to sign enrolments that enrol it as a device would (see
/// [`Api::try_register`]).
pub(crate) fn new_signer() -> SignatureKeyPair {
    let scheme = CIPHERSUITE.signature_algorithm();
    let (private, public) = verification_crypto()
        .signature_key_gen(scheme)
        .expect("Ed25519 key generation");
    private_keys()
        .lock()
        .expect("the key registry is not poisoned")
        .insert(public.clone(), private.clone());
    SignatureKeyPair::from_raw(scheme, private, public)
}

/// Private keys of the key pairs [`new_signer`] made, by public key.
fn private_keys() -> &'static Mutex<HashMap<Vec<u8>, Vec<u8>>> {
    static KEYS: OnceLock<Mutex<HashMap<Vec<u8>, Vec<u8>>>> = OnceLock::new();
    KEYS.get_or_init(Default::default)
}

/// The key pair [`new_signer`] made with this public key, if any.
fn known_signer(public_key: &[u8]) -> Option<SignatureKeyPair> {
    let keys = private_keys()
        .lock()
        .expect("the key registry is not poisoned");
    keys.get(public_key).map(|private| {
        SignatureKeyPair::from_raw(
            CIPHERSUITE.signature_algorithm(),
            private.clone(),
            public_key.to_vec(),
        )
    })
}

/// A Register request for `username` with the test password and a fresh key.
pub(crate) fn register_request(
    username: &str,
    signer: &SignatureKeyPair,
) -> proto::RegisterRequest {
    proto::RegisterRequest {
        username: username.to_owned(),
        password: PASSWORD.to_owned(),
        registration_token: String::new(),
        device: Some(enrolment(signer)),
    }
}

pub(crate) fn login_request(username: &str, signer: &SignatureKeyPair) -> proto::LoginRequest {
    proto::LoginRequest {
        username: username.to_owned(),
        password: PASSWORD.to_owned(),
        device: Some(enrolment(signer)),
    }
}

/// A device without its proof of possession, which [`Api::try_register`] and
/// [`Api::try_login`] add.
fn enrolment(signer: &SignatureKeyPair) -> proto::DeviceEnrolment {
    proto::DeviceEnrolment {
        signature_public_key: signer.to_public_vec(),
        display_name: "test device".to_owned(),
        ..Default::default()
    }
}

/// A device with a key of `signer` and `display_name`, without its proof.
pub(crate) fn device(signer: &SignatureKeyPair, display_name: &str) -> proto::DeviceEnrolment {
    proto::DeviceEnrolment {
        display_name: display_name.to_owned(),
        ..enrolment(signer)
    }
}

/// `message` with `authorization: Bearer <token>`.
pub(crate) fn authorized<T>(token: &str, message: T) -> Request<T> {
    with_authorization(Some(&format!("Bearer {token}")), message)
}

/// `message` with the given `authorization` value, or none.
pub(crate) fn with_authorization<T>(authorization: Option<&str>, message: T) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(value) = authorization {
        let value = MetadataValue::try_from(value).expect("a valid metadata value");
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// Asserts that `result` failed with `code` and a message containing `fragment`,
/// and returns the status.
#[track_caller]
pub(crate) fn assert_status<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    fragment: &str,
) -> Status {
    assert_refused("request", result, code, fragment)
}

/// [`assert_status`] for one case of a table, named in the failure message.
#[track_caller]
pub(crate) fn assert_refused<T: std::fmt::Debug>(
    case: &str,
    result: Result<T, Status>,
    code: Code,
    fragment: &str,
) -> Status {
    let status = match result {
        Ok(value) => panic!("{case}: expected {code:?} ({fragment:?}), got {value:?}"),
        Err(status) => status,
    };
    assert_eq!(status.code(), code, "{case}: unexpected status {status:?}");
    assert!(
        status.message().contains(fragment),
        "{case}: status message {:?} does not mention {fragment:?}",
        status.message()
    );
    status
}

/// The status an open stream ends with, reading past whatever it still
/// delivers. Fails the test with `expectation` unless it ends within
/// `deadline`, and if it ends without a status.
pub(crate) async fn end_status<T>(
    stream: &mut Streaming<T>,
    deadline: Duration,
    expectation: &str,
) -> Status {
    tokio::time::timeout(deadline, async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended without a status"),
                Err(status) => return status,
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{expectation}"))
}

impl Api {
    pub(crate) fn new(channel: Channel) -> Api {
        Api {
            accounts: AccountServiceClient::new(channel.clone()),
            key_packages: KeyPackageServiceClient::new(channel)
                .max_encoding_message_size(usize::MAX),
        }
    }

    pub(crate) async fn connect(server: &TestHomeserver) -> Api {
        Api::new(channel(server).await)
    }

    pub(crate) async fn try_begin_enrolment(&self) -> Result<proto::EnrolmentChallenge, Status> {
        let request = proto::BeginEnrolmentRequest {};
        Ok(self
            .accounts
            .clone()
            .begin_enrolment(request)
            .await?
            .into_inner())
    }

    /// A fresh enrolment challenge; panics if there is none.
    pub(crate) async fn begin_enrolment(&self) -> proto::EnrolmentChallenge {
        self.try_begin_enrolment()
            .await
            .expect("BeginEnrolment answers")
    }

    /// Adds the proof of possession a device adds, when `device` carries neither
    /// challenge nor signature, its key came from [`new_signer`], and `username`
    /// names a user of this server (otherwise the request is refused before the
    /// proof matters, or the test sends a proof of its own).
    async fn prove_possession(&self, username: &str, device: Option<&mut proto::DeviceEnrolment>) {
        let Some(device) = device else { return };
        if !device.challenge.is_empty() || !device.possession_signature.is_empty() {
            return;
        }
        let Some(signer) = known_signer(&device.signature_public_key) else {
            return;
        };
        let local_part = username.split('@').next().unwrap_or_default();
        let Ok(username) = local_part.parse::<Username>() else {
            return;
        };
        // Without a challenge (the server cannot be reached, say) the request
        // goes as it is, and meets the same trouble.
        let Ok(challenge) = self.try_begin_enrolment().await else {
            return;
        };
        let domain: Domain = challenge.domain.parse().expect("the server's domain");
        device.possession_signature = EnrolmentTranscript {
            domain: &domain,
            username: &username,
            challenge: &challenge.challenge,
            signature_public_key: &device.signature_public_key,
            display_name: &device.display_name,
        }
        .sign(&signer)
        .expect("signing the enrolment");
        device.challenge = challenge.challenge;
    }

    /// Register, with a proof of possession added as a device adds it (see
    /// [`Api::prove_possession`]).
    pub(crate) async fn try_register(
        &self,
        mut request: proto::RegisterRequest,
    ) -> Result<proto::Session, Status> {
        self.prove_possession(&request.username, request.device.as_mut())
            .await;
        self.try_register_as_is(request).await
    }

    /// Register exactly as `request` says.
    pub(crate) async fn try_register_as_is(
        &self,
        request: proto::RegisterRequest,
    ) -> Result<proto::Session, Status> {
        Ok(self.accounts.clone().register(request).await?.into_inner())
    }

    /// Registers `username` with a fresh key pair; panics if that fails.
    pub(crate) async fn register(&self, username: &str) -> TestDevice {
        let signer = new_signer();
        let session = self
            .try_register(register_request(username, &signer))
            .await
            .unwrap_or_else(|status| panic!("registering {username} failed: {status:?}"));
        test_device(session, signer)
    }

    /// Login, with a proof of possession added as for [`Api::try_register`].
    pub(crate) async fn try_login(
        &self,
        mut request: proto::LoginRequest,
    ) -> Result<proto::Session, Status> {
        self.prove_possession(&request.username, request.device.as_mut())
            .await;
        self.try_login_as_is(request).await
    }

    /// Login exactly as `request` says.
    pub(crate) async fn try_login_as_is(
        &self,
        request: proto::LoginRequest,
    ) -> Result<proto::Session, Status> {
        Ok(self.accounts.clone().login(request).await?.into_inner())
    }

    /// Logs `username` in on a new device with a fresh key pair; panics if that fails.
    pub(crate) async fn login(&self, username: &str) -> TestDevice {
        let signer = new_signer();
        let session = self
            .try_login(login_request(username, &signer))
            .await
            .unwrap_or_else(|status| panic!("logging {username} in failed: {status:?}"));
        test_device(session, signer)
    }

    pub(crate) async fn who_am_i(&self, token: &str) -> Result<proto::WhoAmIResponse, Status> {
        let request = authorized(token, proto::WhoAmIRequest {});
        Ok(self.accounts.clone().who_am_i(request).await?.into_inner())
    }

    pub(crate) async fn try_list_devices(&self, token: &str) -> Result<Vec<proto::Device>, Status> {
        let request = authorized(token, proto::ListDevicesRequest {});
        let response = self.accounts.clone().list_devices(request).await?;
        Ok(response.into_inner().devices)
    }

    /// The device's account's devices, oldest first; panics on failure.
    pub(crate) async fn list_devices(&self, device: &TestDevice) -> Vec<proto::Device> {
        self.try_list_devices(&device.token)
            .await
            .expect("listing devices failed")
    }

    /// Ids of the device's account's devices, oldest first.
    pub(crate) async fn device_ids(&self, device: &TestDevice) -> Vec<String> {
        let devices = self.list_devices(device).await;
        devices.into_iter().map(|device| device.device_id).collect()
    }

    pub(crate) async fn remove_device(
        &self,
        caller: &TestDevice,
        device_id: &str,
    ) -> Result<(), Status> {
        let message = proto::RemoveDeviceRequest {
            device_id: device_id.to_owned(),
        };
        let request = authorized(&caller.token, message);
        self.accounts.clone().remove_device(request).await?;
        Ok(())
    }

    pub(crate) async fn logout(&self, token: &str) -> Result<(), Status> {
        let request = authorized(token, proto::LogoutRequest {});
        self.accounts.clone().logout(request).await?;
        Ok(())
    }

    pub(crate) async fn upload(
        &self,
        device: &TestDevice,
        ordinary: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
    ) -> Result<proto::KeyPackageStock, Status> {
        let message = proto::UploadKeyPackagesRequest {
            key_packages: ordinary,
            last_resort_key_package: last_resort,
        };
        let request = authorized(&device.token, message);
        let response = self
            .key_packages
            .clone()
            .upload_key_packages(request)
            .await?;
        Ok(response
            .into_inner()
            .stock
            .expect("an upload response carries the stock"))
    }

    /// Uploads `count` new ordinary packages of `device` and a last-resort one;
    /// panics on failure.
    pub(crate) async fn stock_up(&self, device: &TestDevice, count: usize) {
        let last_resort = last_resort_key_package(device);
        self.upload(device, key_packages(device, count), Some(last_resort))
            .await
            .expect("upload");
    }

    pub(crate) async fn try_stock(&self, token: &str) -> Result<proto::KeyPackageStock, Status> {
        let request = authorized(token, proto::GetKeyPackageStockRequest {});
        let response = self
            .key_packages
            .clone()
            .get_key_package_stock(request)
            .await?;
        Ok(response.into_inner())
    }

    /// The device's stock; panics on failure.
    pub(crate) async fn stock(&self, device: &TestDevice) -> proto::KeyPackageStock {
        self.try_stock(&device.token)
            .await
            .expect("reading the stock failed")
    }

    pub(crate) async fn try_claim(
        &self,
        token: &str,
        user_id: &str,
    ) -> Result<Vec<proto::ClaimedKeyPackage>, Status> {
        let message = proto::ClaimKeyPackagesRequest {
            user_id: user_id.to_owned(),
            cipher_suite: 0,
        };
        let response = self
            .key_packages
            .clone()
            .claim_key_packages(authorized(token, message))
            .await?;
        Ok(response.into_inner().key_packages)
    }

    /// Claims `user_id`'s packages as `claimer`; panics on failure.
    pub(crate) async fn claim(
        &self,
        claimer: &TestDevice,
        user_id: &str,
    ) -> Vec<proto::ClaimedKeyPackage> {
        self.try_claim(&claimer.token, user_id)
            .await
            .unwrap_or_else(|status| panic!("claiming {user_id} failed: {status:?}"))
    }
}

fn test_device(session: proto::Session, signer: SignatureKeyPair) -> TestDevice {
    TestDevice {
        user_id: session.user_id,
        device_id: session.device_id,
        identity: session.credential_identity,
        token: session.access_token,
        signer,
    }
}

/// A stock as the API reports it, without the expiry (checked separately).
pub(crate) fn stock_counts(stock: &proto::KeyPackageStock) -> (u32, bool) {
    (stock.available, stock.has_last_resort)
}

/// Lifetime of packages unless a test says otherwise: one day, the shortest
/// maximum a server can be configured with, so they pass on every test server.
pub(crate) const DEFAULT_LIFETIME_SECONDS: u64 = 24 * 3600;

/// A KeyPackage as a device builds it; each property can be changed before
/// [`KeyPackageBuilder::build`], to make packages the server must refuse.
pub(crate) struct KeyPackageBuilder<'a> {
    identity: String,
    signer: &'a SignatureKeyPair,
    lifetime_seconds: u64,
    last_resort: bool,
    /// Whether the leaf lists Conclave's group metadata extension.
    group_metadata: bool,
}

impl<'a> KeyPackageBuilder<'a> {
    /// A valid ordinary package of `device`.
    pub(crate) fn new(device: &'a TestDevice) -> Self {
        KeyPackageBuilder {
            identity: device.identity.clone(),
            signer: &device.signer,
            lifetime_seconds: DEFAULT_LIFETIME_SECONDS,
            last_resort: false,
            group_metadata: true,
        }
    }

    /// The credential names `identity` instead of the device.
    pub(crate) fn identity(mut self, identity: &str) -> Self {
        self.identity = identity.to_owned();
        self
    }

    /// The package is made with, and signed by, another key pair.
    pub(crate) fn signer(mut self, signer: &'a SignatureKeyPair) -> Self {
        self.signer = signer;
        self
    }

    /// As passed to openmls's `Lifetime::new`, which also backdates an hour.
    pub(crate) fn lifetime_seconds(mut self, seconds: u64) -> Self {
        self.lifetime_seconds = seconds;
        self
    }

    pub(crate) fn last_resort(mut self) -> Self {
        self.last_resort = true;
        self
    }

    /// The leaf's capabilities leave out Conclave's group metadata extension.
    pub(crate) fn without_group_metadata(mut self) -> Self {
        self.group_metadata = false;
        self
    }

    /// The TLS-serialised KeyPackage (bare, not wrapped in an MLSMessage).
    pub(crate) fn build(self) -> Vec<u8> {
        self.build_in(&OpenMlsRustCrypto::default())
    }

    /// [`KeyPackageBuilder::build`], keeping the package's private keys in
    /// `provider`, so that the device holding it can join from a Welcome.
    pub(crate) fn build_in(self, provider: &OpenMlsRustCrypto) -> Vec<u8> {
        let mut builder = KeyPackage::builder()
            .key_package_lifetime(Lifetime::new(self.lifetime_seconds))
            .leaf_node_capabilities(if self.group_metadata {
                capabilities()
            } else {
                Capabilities::builder()
                    .extensions(vec![ExtensionType::LastResort])
                    .credentials(vec![CredentialType::Basic])
                    .build()
            });
        if self.last_resort {
            builder = builder.mark_as_last_resort();
        }
        let credential_with_key = CredentialWithKey {
            credential: BasicCredential::new(self.identity.into_bytes()).into(),
            signature_key: self.signer.to_public_vec().into(),
        };
        builder
            .build(CIPHERSUITE, provider, self.signer, credential_with_key)
            .expect("openmls builds the key package")
            .key_package()
            .tls_serialize_detached()
            .expect("a key package serialises")
    }
}

/// The capabilities of every leaf a test device makes: openmls refuses a package
/// with an extension its leaf does not list, and `mark_as_last_resort` does not
/// list LastResort by itself; the homeserver refuses a package whose leaf does
/// not list Conclave's group metadata extension.
pub(crate) fn capabilities() -> Capabilities {
    Capabilities::builder()
        .extensions(vec![
            ExtensionType::LastResort,
            ExtensionType::Unknown(GROUP_METADATA_EXTENSION_TYPE),
        ])
        .credentials(vec![CredentialType::Basic])
        .build()
}

/// `count` valid ordinary packages of `device`.
pub(crate) fn key_packages(device: &TestDevice, count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|_| KeyPackageBuilder::new(device).build())
        .collect()
}

/// A valid last-resort package of `device`.
pub(crate) fn last_resort_key_package(device: &TestDevice) -> Vec<u8> {
    KeyPackageBuilder::new(device).last_resort().build()
}

/// The `not_after` of a serialised KeyPackage, in seconds since the epoch.
pub(crate) fn not_after(bytes: &[u8]) -> u64 {
    // The io::Read decoder: the byte-slice one can panic on bad input in debug builds.
    let mut rest = bytes;
    let key_package_in = KeyPackageIn::tls_deserialize(&mut rest).expect("a key package");
    key_package_in
        .validate(&verification_crypto(), ProtocolVersion::Mls10)
        .expect("a valid key package")
        .life_time()
        .not_after()
}
