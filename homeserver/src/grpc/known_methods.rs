//! The gRPC methods a listener serves, by their path (`/package.Service/Method`),
//! read from the compiled-in descriptors: the only names the metrics of calls
//! may carry. Any other path, which a client chooses freely, is counted under
//! one `unknown` name, so that garbage paths cannot create new series. The
//! spans of calls take their `rpc.service`/`rpc.method` from here too
//! ([`KnownMethods::into_rpc_names`]): spans become series downstream
//! (span metrics), and they are made before the caller is authenticated.

use crate::metrics::GrpcMethodLabels;
use conclave_federation::trace_context::{RpcName, RpcNames};
use prost::Message as _;
use std::collections::HashMap;
use std::sync::Arc;

/// The service and method names of calls to paths not served here.
pub(crate) const UNKNOWN: &str = "unknown";

/// The methods of the services one listener serves.
#[derive(Debug)]
pub(crate) struct KnownMethods {
    /// Fully qualified service name -> method name -> the labels of its calls.
    services: HashMap<String, HashMap<String, GrpcMethodLabels>>,
}

impl KnownMethods {
    /// The methods of the `served` services (fully qualified names, as tonic's
    /// `NamedService::NAME`), described in `descriptor_sets` (encoded
    /// `FileDescriptorSet`s). Panics when a set does not decode or a served
    /// service is in none of them: the descriptors are compiled in, so either
    /// is a mistake in the build, which the tests catch.
    pub(crate) fn of_services(descriptor_sets: &[&[u8]], served: &[&str]) -> KnownMethods {
        let mut described: HashMap<String, Vec<String>> = HashMap::new();
        for encoded in descriptor_sets {
            let set = prost_types::FileDescriptorSet::decode(*encoded)
                .expect("the compiled-in descriptor sets are valid");
            for file in set.file {
                let package = file.package.unwrap_or_default();
                for service in file.service {
                    let name = service.name.unwrap_or_default();
                    let full_name = if package.is_empty() {
                        name
                    } else {
                        format!("{package}.{name}")
                    };
                    let methods = service.method.into_iter().filter_map(|method| method.name);
                    described.entry(full_name).or_default().extend(methods);
                }
            }
        }
        let services = served
            .iter()
            .map(|service| {
                let methods = described
                    .get(*service)
                    .unwrap_or_else(|| panic!("no descriptor describes the served {service}"))
                    .iter()
                    .map(|method| {
                        let labels = GrpcMethodLabels {
                            service: (*service).to_owned(),
                            method: method.clone(),
                        };
                        (method.clone(), labels)
                    })
                    .collect();
                ((*service).to_owned(), methods)
            })
            .collect();
        KnownMethods { services }
    }

    /// The labels of a call to `path`: its service and method when served
    /// here, `unknown` for both otherwise.
    pub(crate) fn labels(&self, path: &str) -> GrpcMethodLabels {
        path.strip_prefix('/')
            .and_then(|path| path.split_once('/'))
            .and_then(|(service, method)| self.services.get(service)?.get(method))
            .cloned()
            .unwrap_or_else(|| GrpcMethodLabels {
                service: UNKNOWN.to_owned(),
                method: UNKNOWN.to_owned(),
            })
    }

    /// The names the spans of calls to a path carry: as [`Self::labels`].
    pub(crate) fn into_rpc_names(self) -> RpcNames {
        Arc::new(move |path: &str| {
            let GrpcMethodLabels { service, method } = self.labels(path);
            RpcName { service, method }
        })
    }

    /// How many methods are known, in all services.
    #[cfg(test)]
    fn count(&self) -> usize {
        self.services.values().map(HashMap::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(service: &str, method: &str) -> GrpcMethodLabels {
        GrpcMethodLabels {
            service: service.to_owned(),
            method: method.to_owned(),
        }
    }

    #[test]
    fn served_paths_are_named_and_every_other_path_is_unknown() {
        let known = KnownMethods::of_services(
            &[
                conclave_proto::FILE_DESCRIPTOR_SET,
                tonic_health::pb::FILE_DESCRIPTOR_SET,
            ],
            &["conclave.client.v1.GroupService", "grpc.health.v1.Health"],
        );
        assert_eq!(
            known.labels("/conclave.client.v1.GroupService/SubmitCommit"),
            labels("conclave.client.v1.GroupService", "SubmitCommit")
        );
        assert_eq!(
            known.labels("/grpc.health.v1.Health/Check"),
            labels("grpc.health.v1.Health", "Check")
        );
        let unknown = labels(UNKNOWN, UNKNOWN);
        for path in [
            "/evil.Service/x1",
            // A method this service does not have.
            "/conclave.client.v1.GroupService/x1",
            // Described, but not served by this listener.
            "/conclave.client.v1.AccountService/Login",
            "/conclave.client.v1.GroupService",
            "/conclave.client.v1.GroupService/SubmitCommit/more",
            "conclave.client.v1.GroupService/SubmitCommit",
            "",
            "/",
        ] {
            assert_eq!(known.labels(path), unknown, "{path:?}");
        }
    }

    #[test]
    #[should_panic(expected = "no descriptor describes the served conclave.client.v1.Nothing")]
    fn a_served_service_without_a_descriptor_is_a_build_mistake() {
        KnownMethods::of_services(
            &[conclave_proto::FILE_DESCRIPTOR_SET],
            &["conclave.client.v1.Nothing"],
        );
    }

    #[test]
    fn both_listeners_know_every_method_of_what_they_serve() {
        let client = super::super::client_api_methods();
        for path in [
            "/conclave.client.v1.AccountService/Register",
            "/conclave.client.v1.KeyPackageService/ClaimKeyPackages",
            "/conclave.client.v1.DeliveryService/Subscribe",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.health.v1.Health/Watch",
        ] {
            assert_ne!(client.labels(path).service, UNKNOWN, "{path}");
        }
        let federation = super::super::federation::federation_api_methods();
        assert_eq!(
            federation.labels("/conclave.federation.v1.FederationService/SubmitToHub"),
            labels("conclave.federation.v1.FederationService", "SubmitToHub")
        );
        // The federation listener does not serve the client API.
        assert_eq!(
            federation
                .labels("/conclave.client.v1.AccountService/Register")
                .service,
            UNKNOWN
        );
        assert!(client.count() > federation.count());
    }
}
