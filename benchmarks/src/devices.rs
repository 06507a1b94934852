//! Enrolling benchmark devices the way real ones enrol: Register (or Login for a
//! user's further devices) with a fresh Ed25519 key, then one KeyPackage upload.
//! Every enrolment costs the server an Argon2id password hash or check, which
//! dominates building large groups.

use crate::api::Api;
use crate::mls::{Device, new_signer};
use futures::{StreamExt as _, TryStreamExt as _};
use openmls_rust_crypto::OpenMlsRustCrypto;

/// Enrolments in flight at once: enough to keep both cores busy with Argon2id.
const ENROLMENT_CONCURRENCY: usize = 8;

/// Registers `username` and enrols `device_count` devices for it (at least one),
/// each with one KeyPackage in the directory.
pub(crate) async fn enrol_user(
    api: &Api,
    username: &str,
    device_count: usize,
) -> anyhow::Result<Vec<Device>> {
    let first = enrol_device(api, username, true).await?;
    let mut devices = futures::stream::iter(1..device_count.max(1))
        .map(|_| enrol_device(api, username, false))
        .buffer_unordered(ENROLMENT_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    devices.insert(0, first);
    Ok(devices)
}

async fn enrol_device(api: &Api, username: &str, register: bool) -> anyhow::Result<Device> {
    let signer = new_signer()?;
    let session = if register {
        api.register(username, &signer).await?
    } else {
        api.login(username, &signer).await?
    };
    let device = Device {
        session,
        signer,
        provider: OpenMlsRustCrypto::default(),
    };
    api.upload_key_package(&device.session, device.key_package()?)
        .await?;
    Ok(device)
}
