//! This device's key packages on its homeserver (publish, stock, replenish), and
//! claiming other users' packages to add them to groups.

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use conclave_core::ids::{CredentialIdentity, DeviceId, UserId};
use conclave_core::mls::CipherSuite;
use conclave_proto::client::v1 as proto;
use openmls::prelude::KeyPackage;

use super::{Client, call, invalid_response, to_datetime};
use crate::connection::key_package_client;
use crate::error::ClientError;
use crate::key_package_stock::KeyPackageStock;
use crate::mls;

/// Ordinary packages per upload. A homeserver's default limit is 100 per upload;
/// half of it leaves room for a lower configured limit and for the last-resort
/// package riding along in the final upload.
const UPLOAD_CHUNK: usize = 50;

/// What a publication did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishOutcome {
    /// Ordinary packages uploaded.
    pub published: usize,
    /// Whether a new last-resort package was uploaded (it comes with every
    /// publication, so this is false only when the stock needed nothing).
    pub published_last_resort: bool,
    /// The server's stock afterwards.
    pub stock: KeyPackageStock,
}

/// A key package claimed for one device of a user, verified.
#[derive(Debug, Clone)]
pub struct ClaimedKeyPackage {
    pub device_id: DeviceId,
    /// `name@domain/device_id` of the device; the package's credential carries it.
    pub credential_identity: CredentialIdentity,
    /// The device's ordinary stock was empty, so this is its reusable last-resort
    /// package.
    pub last_resort: bool,
    /// The KeyPackageRef (RFC 9420 §5.2) by which a Welcome names the package.
    pub hash_ref: Vec<u8>,
    /// The package exactly as the server sent it (TLS-encoded `KeyPackage`).
    pub key_package_bytes: Vec<u8>,
    /// The verified package, ready for an Add proposal.
    pub key_package: KeyPackage,
}

impl Client {
    /// Builds and uploads `count` ordinary key packages of the classic suite and
    /// a new last-resort one (which replaces the previous on the server). Their
    /// private keys stay in the local state; those of a batch the server refused
    /// are deleted again.
    pub async fn publish_key_packages(&self, count: usize) -> Result<PublishOutcome, ClientError> {
        self.publish_key_packages_in(CipherSuite::Classic, count)
            .await
    }

    /// [`Client::publish_key_packages`] in `suite`; the outcome's stock is that
    /// suite's.
    pub async fn publish_key_packages_in(
        &self,
        suite: CipherSuite,
        count: usize,
    ) -> Result<PublishOutcome, ClientError> {
        let (session, channel, auth) = self.authenticated().await?;
        let signer = self.state().signer(&session)?;
        let mut client = key_package_client(channel, auth);
        let mut remaining = count;
        loop {
            let chunk = remaining.min(UPLOAD_CHUNK);
            remaining -= chunk;
            let with_last_resort = remaining == 0;
            let batch = self.state().transaction(|provider, _| {
                mls::build_key_packages(
                    provider,
                    &signer,
                    &session.credential_identity,
                    suite,
                    chunk,
                    with_last_resort,
                    mls::KEY_PACKAGE_LIFETIME_SECONDS,
                )
            })?;
            let request = proto::UploadKeyPackagesRequest {
                key_packages: batch.ordinary,
                last_resort_key_package: batch.last_resort,
            };
            let result = call("publish key packages", client.upload_key_packages(request)).await;
            let reply = match result {
                Ok(reply) => reply,
                Err(error) => {
                    // Keys are deleted only when the server surely stored nothing;
                    // after a timeout or a lost connection the packages may be
                    // live, and without their keys their Welcomes could never be
                    // opened.
                    if error.rpc_code().is_some_and(upload_surely_refused) {
                        let forgotten = self.state().transaction(|provider, _| {
                            mls::forget_key_packages(provider, &batch.hash_refs)
                        });
                        if let Err(forget_error) = forgotten {
                            tracing::warn!(%forget_error, "could not delete the keys of refused key packages");
                        }
                    }
                    return Err(error);
                }
            };
            tracing::debug!(
                chunk,
                with_last_resort,
                suite = suite.short_name(),
                "uploaded key packages"
            );
            if with_last_resort {
                let stock = suite_stock("publish key packages", reply.stock, suite)?;
                return Ok(PublishOutcome {
                    published: count,
                    published_last_resort: true,
                    stock,
                });
            }
        }
    }

    /// The server's stock of this device's unclaimed key packages of the
    /// classic suite.
    pub async fn key_package_status(&self) -> Result<KeyPackageStock, ClientError> {
        let reply = self.stock_reply().await?;
        to_stock("get key package stock", Some(reply))
    }

    /// The server's stock of this device's unclaimed key packages in each
    /// cipher suite the server offers (a server that predates suites offers the
    /// classic one only).
    pub async fn key_package_stocks(
        &self,
    ) -> Result<Vec<(CipherSuite, KeyPackageStock)>, ClientError> {
        let reply = self.stock_reply().await?;
        suite_stocks("get key package stock", &reply)
    }

    async fn stock_reply(&self) -> Result<proto::KeyPackageStock, ClientError> {
        let (_, channel, auth) = self.authenticated().await?;
        call(
            "get key package stock",
            key_package_client(channel, auth)
                .get_key_package_stock(proto::GetKeyPackageStockRequest {}),
        )
        .await
    }

    /// Publishes key packages where the server's stock is low, following the
    /// client's [`ReplenishPolicy`](crate::ReplenishPolicy) (by default: below 10
    /// left, fill up to 50), in every cipher suite the server offers (this
    /// library supports both of Conclave's). Runs after every register and
    /// login; call it again whenever convenient, it costs one request when
    /// nothing is needed. The outcome is the classic suite's (the first
    /// offered one's on a server without it).
    pub async fn replenish_key_packages(&self) -> Result<PublishOutcome, ClientError> {
        let stocks = self.key_package_stocks().await?;
        let mut first = None;
        for (suite, stock) in stocks {
            let outcome = match self.replenish_policy.packages_to_publish(&stock) {
                Some(count) => self.publish_key_packages_in(suite, count).await?,
                None => PublishOutcome {
                    published: 0,
                    published_last_resort: false,
                    stock,
                },
            };
            first.get_or_insert(outcome);
        }
        first.ok_or_else(|| {
            invalid_response(
                "get key package stock",
                "it offers no cipher suite this client supports",
            )
        })
    }

    /// Claims one key package of the classic suite for every device of
    /// `user_id`; see [`Client::claim_key_packages_in`].
    pub async fn claim_key_packages(
        &self,
        user_id: &UserId,
    ) -> Result<Vec<ClaimedKeyPackage>, ClientError> {
        self.claim_key_packages_in(user_id, CipherSuite::Classic)
            .await
    }

    /// Claims one key package of `suite` for every device of `user_id` (each
    /// ordinary package is handed out once; a device with none left yields its
    /// last-resort one), and verifies every package: it must be valid, in
    /// `suite`, and carry the credential of the device it was claimed for. One
    /// bad package fails the whole claim. A device of the user with packages,
    /// but none in `suite`, fails it too (FAILED_PRECONDITION, from the server).
    pub async fn claim_key_packages_in(
        &self,
        user_id: &UserId,
        suite: CipherSuite,
    ) -> Result<Vec<ClaimedKeyPackage>, ClientError> {
        const OPERATION: &str = "claim key packages";
        let (_, channel, auth) = self.authenticated().await?;
        let reply = call(
            OPERATION,
            key_package_client(channel, auth).claim_key_packages(proto::ClaimKeyPackagesRequest {
                user_id: user_id.to_string(),
                cipher_suite: suite.to_wire(),
            }),
        )
        .await?;
        let now = unix_now();
        let mut seen = HashSet::new();
        let mut claimed = Vec::with_capacity(reply.key_packages.len());
        for entry in reply.key_packages {
            let device_id: DeviceId = entry
                .device_id
                .parse()
                .map_err(|error| invalid_response(OPERATION, format!("{error}")))?;
            let credential_identity: CredentialIdentity = entry
                .credential_identity
                .parse()
                .map_err(|error| invalid_response(OPERATION, format!("{error}")))?;
            if credential_identity.user_id() != user_id
                || credential_identity.device_id() != &device_id
            {
                return Err(invalid_response(
                    OPERATION,
                    format!(
                        "a package for {credential_identity} came back for device {device_id} of {user_id}"
                    ),
                ));
            }
            if !seen.insert(device_id.clone()) {
                return Err(invalid_response(
                    OPERATION,
                    format!("device {device_id} appears twice"),
                ));
            }
            let verified =
                mls::verify_claimed_key_package(&entry.key_package, &credential_identity, now)
                    .map_err(|source| ClientError::InvalidClaimedKeyPackage {
                        device_id: device_id.to_string(),
                        source,
                    })?;
            if verified.cipher_suite != suite {
                return Err(invalid_response(
                    OPERATION,
                    format!(
                        "the package of device {device_id} is of cipher suite {} but {suite} was claimed",
                        verified.cipher_suite
                    ),
                ));
            }
            if entry.last_resort && !verified.last_resort {
                return Err(invalid_response(
                    OPERATION,
                    format!(
                        "the package of device {device_id} is marked last-resort but has no last_resort extension"
                    ),
                ));
            }
            claimed.push(ClaimedKeyPackage {
                device_id,
                credential_identity,
                last_resort: entry.last_resort,
                hash_ref: verified.hash_ref,
                key_package_bytes: entry.key_package,
                key_package: verified.key_package,
            });
        }
        Ok(claimed)
    }
}

/// Whether a failed upload certainly stored nothing: the server answered with a
/// refusal, as opposed to a timeout, a lost connection or an internal error.
fn upload_surely_refused(code: tonic::Code) -> bool {
    use tonic::Code;
    matches!(
        code,
        Code::InvalidArgument
            | Code::ResourceExhausted
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::FailedPrecondition
            | Code::NotFound
            | Code::AlreadyExists
            | Code::OutOfRange
            | Code::Unimplemented
    )
}

/// The stock of each suite the server lists and this library supports; the
/// classic one alone from a server that lists none (it predates suites).
fn suite_stocks(
    operation: &'static str,
    stock: &proto::KeyPackageStock,
) -> Result<Vec<(CipherSuite, KeyPackageStock)>, ClientError> {
    if stock.suites.is_empty() {
        return Ok(vec![(
            CipherSuite::Classic,
            to_stock(operation, Some(stock.clone()))?,
        )]);
    }
    Ok(stock
        .suites
        .iter()
        .filter_map(|entry| {
            // A suite this library does not know is one it cannot publish for.
            let suite = CipherSuite::from_wire(entry.cipher_suite).ok()?;
            Some((
                suite,
                KeyPackageStock {
                    available: entry.available,
                    has_last_resort: entry.has_last_resort,
                    earliest_expiry: to_datetime(entry.earliest_expiry),
                },
            ))
        })
        .collect())
}

/// The stock of `suite` in an upload's answer.
fn suite_stock(
    operation: &'static str,
    stock: Option<proto::KeyPackageStock>,
    suite: CipherSuite,
) -> Result<KeyPackageStock, ClientError> {
    let stock = stock.ok_or_else(|| invalid_response(operation, "it has no stock"))?;
    suite_stocks(operation, &stock)?
        .into_iter()
        .find(|(listed, _)| *listed == suite)
        .map(|(_, stock)| stock)
        .ok_or_else(|| invalid_response(operation, format!("its stock lacks cipher suite {suite}")))
}

fn to_stock(
    operation: &'static str,
    stock: Option<proto::KeyPackageStock>,
) -> Result<KeyPackageStock, ClientError> {
    let stock = stock.ok_or_else(|| invalid_response(operation, "it has no stock"))?;
    Ok(KeyPackageStock {
        available: stock.available,
        has_last_resort: stock.has_last_resort,
        earliest_expiry: to_datetime(stock.earliest_expiry),
    })
}

/// Seconds since the Unix epoch by the system clock; a clock set before 1970
/// counts as the epoch itself, which only makes packages look not yet valid.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}
