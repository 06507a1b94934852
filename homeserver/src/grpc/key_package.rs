//! `conclave.client.v1.KeyPackageService`: proto <-> domain conversion only.

use super::auth::authenticate;
use super::status::missing_field;
use super::timestamp;
use crate::service::Context;
use crate::service::key_packages::{self, KeyPackageStock};
use conclave_core::mls::CipherSuite;
use conclave_proto::client::v1 as proto;
use conclave_proto::client::v1::key_package_service_server::KeyPackageService;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub(crate) struct KeyPackageApi {
    pub(crate) context: Arc<Context>,
}

/// The classic suite's stock in the fields that predate suites, and each
/// offered suite's in `suites`.
fn stock_to_proto(
    classic: KeyPackageStock,
    suites: Vec<(CipherSuite, KeyPackageStock)>,
) -> proto::KeyPackageStock {
    let count = |stock: &KeyPackageStock| u32::try_from(stock.available).unwrap_or(u32::MAX);
    proto::KeyPackageStock {
        available: count(&classic),
        has_last_resort: classic.has_last_resort,
        earliest_expiry: classic.earliest_expiry_ms.map(timestamp),
        suites: suites
            .into_iter()
            .map(|(suite, stock)| proto::CipherSuiteStock {
                cipher_suite: suite.to_wire(),
                available: count(&stock),
                has_last_resort: stock.has_last_resort,
                earliest_expiry: stock.earliest_expiry_ms.map(timestamp),
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl KeyPackageService for KeyPackageApi {
    async fn upload_key_packages(
        &self,
        request: Request<proto::UploadKeyPackagesRequest>,
    ) -> Result<Response<proto::UploadKeyPackagesResponse>, Status> {
        let device = authenticate(&self.context, request.metadata()).await?;
        let request = request.into_inner();
        let (classic, suites) = key_packages::upload(
            &self.context,
            &device,
            request.key_packages,
            request.last_resort_key_package,
        )
        .await?;
        Ok(Response::new(proto::UploadKeyPackagesResponse {
            stock: Some(stock_to_proto(classic, suites)),
        }))
    }

    async fn get_key_package_stock(
        &self,
        request: Request<proto::GetKeyPackageStockRequest>,
    ) -> Result<Response<proto::KeyPackageStock>, Status> {
        let device = authenticate(&self.context, request.metadata()).await?;
        let (classic, suites) = key_packages::stock(&self.context, &device).await?;
        Ok(Response::new(stock_to_proto(classic, suites)))
    }

    async fn claim_key_packages(
        &self,
        request: Request<proto::ClaimKeyPackagesRequest>,
    ) -> Result<Response<proto::ClaimKeyPackagesResponse>, Status> {
        let claimer = authenticate(&self.context, request.metadata()).await?;
        let request = request.into_inner();
        if request.user_id.is_empty() {
            return Err(missing_field("user_id"));
        }
        let claimed = key_packages::claim(
            &self.context,
            &claimer,
            &request.user_id,
            request.cipher_suite,
        )
        .await?;
        let key_packages = claimed
            .into_iter()
            .map(|claimed| proto::ClaimedKeyPackage {
                device_id: claimed.identity.device_id().to_string(),
                credential_identity: claimed.identity.to_string(),
                key_package: claimed.package.data,
                last_resort: claimed.package.last_resort,
                signature_public_key: claimed.signature_public_key,
            })
            .collect();
        Ok(Response::new(proto::ClaimKeyPackagesResponse {
            key_packages,
        }))
    }
}
