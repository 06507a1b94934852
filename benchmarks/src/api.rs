//! The homeserver's client API as the benchmark speaks it: the generated gRPC
//! clients over plaintext HTTP/2 channels to 127.0.0.1, with bearer tokens and
//! idempotency keys handled here.

use anyhow::Context as _;
use conclave_core::enrolment::EnrolmentTranscript;
use conclave_core::ids::{Domain, Username};
use conclave_proto::client::v1 as proto;
use conclave_proto::client::v1::account_service_client::AccountServiceClient;
use conclave_proto::client::v1::delivery_service_client::DeliveryServiceClient;
use conclave_proto::client::v1::group_service_client::GroupServiceClient;
use conclave_proto::client::v1::key_package_service_client::KeyPackageServiceClient;
use openmls_basic_credential::SignatureKeyPair;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// The password of every benchmark account.
const PASSWORD: &str = "benchmark password";

/// Source of idempotency keys: unique within the process, so unique per device.
static NEXT_IDEMPOTENCY_KEY: AtomicU64 = AtomicU64::new(1);

/// Calls answered UNAVAILABLE ("retry the same call") and retried.
static RETRIES: AtomicU64 = AtomicU64::new(0);
/// Attempts of one call before its UNAVAILABLE is final.
const MAX_ATTEMPTS: u32 = 20;
/// Pause before the first retry; each further retry waits one more of these.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// How many calls have been retried so far, over the whole process.
pub(crate) fn retries() -> u64 {
    RETRIES.load(Ordering::Relaxed)
}

/// Makes a call, and on UNAVAILABLE makes it again after a pause, as the gRPC
/// docs (and the homeserver's status mapping) tell clients to. Submissions keep
/// their idempotency key across attempts, so a retry never duplicates one.
async fn with_retries<T, Call, Fut>(mut call: Call) -> Result<T, Status>
where
    Call: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Err(status) if status.code() == Code::Unavailable && attempt < MAX_ATTEMPTS => {
                RETRIES.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(RETRY_PAUSE * attempt).await;
                attempt += 1;
            }
            result => return result,
        }
    }
}

fn idempotency_key() -> Vec<u8> {
    NEXT_IDEMPOTENCY_KEY
        .fetch_add(1, Ordering::Relaxed)
        .to_be_bytes()
        .to_vec()
}

/// What a device needs to call the API: its bearer token and identities.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) user_id: String,
    /// `name@domain/device_id`, the identity in the device's MLS credential.
    pub(crate) identity: String,
    /// `Bearer <access token>`.
    authorization: MetadataValue<Ascii>,
}

/// One HTTP/2 connection to a homeserver. Cloning shares the connection: calls
/// made through clones are multiplexed as HTTP/2 streams.
#[derive(Clone)]
pub(crate) struct Api {
    channel: Channel,
}

fn authorized<T>(session: &Session, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", session.authorization.clone());
    request
}

impl Api {
    /// Opens a new connection to `url` (`http://127.0.0.1:PORT`).
    pub(crate) async fn connect(url: &str) -> anyhow::Result<Api> {
        let channel = Channel::from_shared(url.to_owned())?
            .connect()
            .await
            .with_context(|| format!("cannot connect to {url}"))?;
        Ok(Api { channel })
    }

    fn accounts(&self) -> AccountServiceClient<Channel> {
        AccountServiceClient::new(self.channel.clone())
    }

    fn key_packages(&self) -> KeyPackageServiceClient<Channel> {
        KeyPackageServiceClient::new(self.channel.clone()).max_decoding_message_size(usize::MAX)
    }

    fn groups(&self) -> GroupServiceClient<Channel> {
        GroupServiceClient::new(self.channel.clone())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX)
    }

    fn delivery(&self) -> DeliveryServiceClient<Channel> {
        DeliveryServiceClient::new(self.channel.clone()).max_decoding_message_size(usize::MAX)
    }

    /// The device `signer` enrols as `username`, with its proof of possession
    /// over a fresh challenge.
    async fn enrolment(
        &self,
        username: &str,
        signer: &SignatureKeyPair,
    ) -> anyhow::Result<proto::DeviceEnrolment> {
        let challenge = with_retries(|| {
            let mut client = self.accounts();
            async move {
                client
                    .begin_enrolment(proto::BeginEnrolmentRequest {})
                    .await
            }
        })
        .await
        .context("beginning an enrolment")?
        .into_inner();
        let domain: Domain = challenge.domain.parse()?;
        let username: Username = username.parse()?;
        let device = proto::DeviceEnrolment {
            signature_public_key: signer.to_public_vec(),
            display_name: "benchmark".to_owned(),
            ..Default::default()
        };
        let possession_signature = EnrolmentTranscript {
            domain: &domain,
            username: &username,
            challenge: &challenge.challenge,
            signature_public_key: &device.signature_public_key,
            display_name: &device.display_name,
        }
        .sign(signer)?;
        Ok(proto::DeviceEnrolment {
            challenge: challenge.challenge,
            possession_signature,
            ..device
        })
    }

    /// Creates `username` and enrols its first device with `signer`'s key.
    pub(crate) async fn register(
        &self,
        username: &str,
        signer: &SignatureKeyPair,
    ) -> anyhow::Result<Session> {
        let message = proto::RegisterRequest {
            username: username.to_owned(),
            password: PASSWORD.to_owned(),
            registration_token: String::new(),
            device: Some(self.enrolment(username, signer).await?),
        };
        let session = with_retries(|| {
            let (mut client, message) = (self.accounts(), message.clone());
            async move { client.register(message).await }
        })
        .await
        .with_context(|| format!("registering {username}"))?;
        to_session(session.into_inner())
    }

    /// Enrols another device of `username`, with `signer`'s key.
    pub(crate) async fn login(
        &self,
        username: &str,
        signer: &SignatureKeyPair,
    ) -> anyhow::Result<Session> {
        let message = proto::LoginRequest {
            username: username.to_owned(),
            password: PASSWORD.to_owned(),
            device: Some(self.enrolment(username, signer).await?),
        };
        let session = with_retries(|| {
            let (mut client, message) = (self.accounts(), message.clone());
            async move { client.login(message).await }
        })
        .await
        .with_context(|| format!("logging {username} in"))?;
        to_session(session.into_inner())
    }

    /// Uploads one ordinary KeyPackage of the device.
    pub(crate) async fn upload_key_package(
        &self,
        session: &Session,
        key_package: Vec<u8>,
    ) -> anyhow::Result<()> {
        let message = proto::UploadKeyPackagesRequest {
            key_packages: vec![key_package],
            last_resort_key_package: None,
        };
        with_retries(|| {
            let (mut client, request) = (self.key_packages(), authorized(session, message.clone()));
            async move { client.upload_key_packages(request).await }
        })
        .await
        .with_context(|| format!("uploading a key package of {}", session.identity))?;
        Ok(())
    }

    /// Claims one KeyPackage of each device of `user_id`.
    pub(crate) async fn claim(
        &self,
        session: &Session,
        user_id: &str,
    ) -> anyhow::Result<Vec<proto::ClaimedKeyPackage>> {
        let message = proto::ClaimKeyPackagesRequest {
            user_id: user_id.to_owned(),
            cipher_suite: 0,
        };
        let response = with_retries(|| {
            let (mut client, request) = (self.key_packages(), authorized(session, message.clone()));
            async move { client.claim_key_packages(request).await }
        })
        .await
        .with_context(|| format!("claiming the key packages of {user_id}"))?;
        Ok(response.into_inner().key_packages)
    }

    /// Registers a group; returns its id.
    pub(crate) async fn create_group(
        &self,
        session: &Session,
        group_info: Vec<u8>,
        ratchet_tree: Vec<u8>,
    ) -> anyhow::Result<Vec<u8>> {
        let message = proto::CreateGroupRequest {
            idempotency_key: idempotency_key(),
            group_info,
            ratchet_tree,
        };
        let response = with_retries(|| {
            let (mut client, request) = (self.groups(), authorized(session, message.clone()));
            async move { client.create_group(request).await }
        })
        .await
        .context("creating the group")?;
        Ok(response.into_inner().group_id)
    }

    pub(crate) async fn submit_commit(
        &self,
        session: &Session,
        group_id: &[u8],
        commit: &Commit,
    ) -> anyhow::Result<proto::SubmitResponse> {
        let message = proto::SubmitCommitRequest {
            idempotency_key: idempotency_key(),
            group_id: group_id.to_vec(),
            commit: commit.commit.clone(),
            welcome: commit.welcome.clone(),
            group_info: commit.group_info.clone(),
        };
        let response = with_retries(|| {
            let (mut client, request) = (self.groups(), authorized(session, message.clone()));
            async move { client.submit_commit(request).await }
        })
        .await
        .context("submitting a commit")?;
        Ok(response.into_inner())
    }

    pub(crate) async fn send_message(
        &self,
        session: &Session,
        group_id: &[u8],
        message: Vec<u8>,
    ) -> anyhow::Result<proto::SubmitResponse> {
        let message = proto::SendMessageRequest {
            idempotency_key: idempotency_key(),
            group_id: group_id.to_vec(),
            message,
        };
        let response = with_retries(|| {
            let (mut client, request) = (self.groups(), authorized(session, message.clone()));
            async move { client.send_message(request).await }
        })
        .await
        .with_context(|| format!("sending a message as {}", session.identity))?;
        Ok(response.into_inner())
    }

    /// The groups the device is a member of, with each one's newest sequence number.
    pub(crate) async fn list_groups(
        &self,
        session: &Session,
    ) -> anyhow::Result<Vec<proto::GroupSummary>> {
        let response = with_retries(|| {
            let (mut client, request) = (
                self.groups(),
                authorized(session, proto::ListGroupsRequest {}),
            );
            async move { client.list_groups(request).await }
        })
        .await
        .with_context(|| format!("listing the groups of {}", session.identity))?;
        Ok(response.into_inner().groups)
    }

    /// Moves the device's cursor in `group_id` to `seq` and its inbox cursor to
    /// `inbox_seq` (0 leaves it).
    pub(crate) async fn ack(
        &self,
        session: &Session,
        group_id: &[u8],
        seq: u64,
        inbox_seq: u64,
    ) -> anyhow::Result<()> {
        let message = proto::AckRequest {
            groups: vec![proto::GroupAck {
                group_id: group_id.to_vec(),
                seq,
            }],
            inbox_seq,
        };
        with_retries(|| {
            let (mut client, request) = (self.delivery(), authorized(session, message.clone()));
            async move { client.ack(request).await }
        })
        .await
        .with_context(|| format!("acknowledging as {}", session.identity))?;
        Ok(())
    }

    /// Opens the device's event stream.
    pub(crate) async fn subscribe(
        &self,
        session: &Session,
    ) -> anyhow::Result<tonic::Streaming<proto::DeliveryEvent>> {
        let response = with_retries(|| {
            let (mut client, request) = (
                self.delivery(),
                authorized(session, proto::SubscribeRequest {}),
            );
            async move { client.subscribe(request).await }
        })
        .await
        .with_context(|| format!("subscribing as {}", session.identity))?;
        Ok(response.into_inner())
    }
}

/// A commit as submitted: the MLSMessages openmls produced.
#[derive(Debug, Clone)]
pub(crate) struct Commit {
    pub(crate) commit: Vec<u8>,
    pub(crate) welcome: Option<Vec<u8>>,
    pub(crate) group_info: Vec<u8>,
}

fn to_session(session: proto::Session) -> anyhow::Result<Session> {
    let authorization = MetadataValue::try_from(format!("Bearer {}", session.access_token))
        .context("the access token is not a valid header value")?;
    Ok(Session {
        user_id: session.user_id,
        identity: session.credential_identity,
        authorization,
    })
}
