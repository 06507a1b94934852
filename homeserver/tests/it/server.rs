//! Server plumbing: gRPC health and reflection, the HTTP probes, a restart on the
//! same database, and TLS on the client API.

use crate::harness::{
    Api, assert_refused, channel, key_packages, last_resort_key_package, login_request, new_signer,
    register_request, start,
};
use conclave_homeserver::{Clock, SystemClock};
use conclave_test_support::{DatabaseChoice, TestHomeserver, TestOptions};
use prost::Message as _;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

on_both_databases!(
    health_and_http_probes_answer,
    reflection_describes_the_api,
    state_survives_a_restart,
    tls_serves_the_client_api,
);

/// The status code of a plain HTTP/1.1 GET.
async fn http_get_status(address: SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect to the HTTP endpoint");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("receive");
    let status_line = response.lines().next().unwrap_or_default();
    status_line.split(' ').nth(1).unwrap_or_default().to_owned()
}

async fn health_and_http_probes_answer(database: DatabaseChoice) {
    let server = start(database).await;
    let mut health = HealthClient::new(channel(&server).await);
    for service in [
        "",
        "conclave.client.v1.AccountService",
        "conclave.client.v1.KeyPackageService",
    ] {
        let request = HealthCheckRequest {
            service: service.to_owned(),
        };
        let response = health.check(request).await.expect("health check");
        assert_eq!(
            response.into_inner().status(),
            ServingStatus::Serving,
            "{service:?}"
        );
    }
    let unknown = HealthCheckRequest {
        service: "conclave.client.v1.NoSuchService".to_owned(),
    };
    assert_refused(
        "unknown service",
        health.check(unknown).await,
        Code::NotFound,
        "",
    );

    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            http_get_status(server.http_address(), path).await,
            "200",
            "{path}"
        );
    }
    assert_eq!(
        http_get_status(server.http_address(), "/nothing").await,
        "404"
    );
}

/// Sends one reflection request and returns its answer.
async fn reflect(channel: &Channel, request: MessageRequest) -> MessageResponse {
    let mut client = ServerReflectionClient::new(channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut responses = client
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("reflection stream")
        .into_inner();
    responses
        .message()
        .await
        .expect("a reflection response")
        .expect("the stream carries a response")
        .message_response
        .expect("the response has a message")
}

/// The files of a reflection FileDescriptorResponse, decoded.
fn descriptor_files(response: MessageResponse) -> Vec<prost_types::FileDescriptorProto> {
    let MessageResponse::FileDescriptorResponse(files) = response else {
        panic!("expected file descriptors, got {response:?}");
    };
    files
        .file_descriptor_proto
        .iter()
        .map(|bytes| prost_types::FileDescriptorProto::decode(bytes.as_slice()).expect("decode"))
        .collect()
}

async fn reflection_describes_the_api(database: DatabaseChoice) {
    let server = start(database).await;
    let channel = channel(&server).await;

    let MessageResponse::ListServicesResponse(list) =
        reflect(&channel, MessageRequest::ListServices(String::new())).await
    else {
        panic!("expected a service list");
    };
    let services: Vec<_> = list
        .service
        .iter()
        .map(|service| service.name.as_str())
        .collect();
    for expected in [
        "conclave.client.v1.AccountService",
        "conclave.client.v1.KeyPackageService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.contains(&expected),
            "{expected} is not in {services:?}"
        );
    }

    let symbol =
        MessageRequest::FileContainingSymbol("conclave.client.v1.KeyPackageService".into());
    let files = descriptor_files(reflect(&channel, symbol).await);
    let key_package_file = files
        .iter()
        .find(|file| file.name() == "conclave/client/v1/key_package.proto")
        .unwrap_or_else(|| panic!("key_package.proto is missing from {files:?}"));
    let service_names: Vec<_> = key_package_file.service.iter().map(|s| s.name()).collect();
    assert_eq!(service_names, ["KeyPackageService"]);
    assert!(
        key_package_file
            .dependency
            .iter()
            .any(|dependency| dependency == "google/protobuf/timestamp.proto")
    );

    // Tools such as grpcurl follow the import and ask for it by name.
    let by_name = MessageRequest::FileByFilename("google/protobuf/timestamp.proto".into());
    let files = descriptor_files(reflect(&channel, by_name).await);
    assert!(
        files
            .iter()
            .any(|file| file.name() == "google/protobuf/timestamp.proto"
                && file
                    .message_type
                    .iter()
                    .any(|message| message.name() == "Timestamp")),
        "timestamp.proto is missing from {files:?}"
    );
}

async fn state_survives_a_restart(database: DatabaseChoice) {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let server = TestHomeserver::start_with(TestOptions::on(database).clock(clock.clone())).await;
    let api = Api::connect(&server).await;
    let alice = api.register("alice").await;
    let claimer = api.register("bob").await;
    let uploaded = key_packages(&alice, 3);
    api.upload(
        &alice,
        uploaded.clone(),
        Some(last_resort_key_package(&alice)),
    )
    .await
    .expect("upload");
    assert_eq!(api.claim(&claimer, "alice@localhost").await.len(), 1);
    let stock_before = api.stock(&alice).await;
    let config = server.config().clone();

    let database = server.stop().await;
    let server = TestHomeserver::start_on(config, database, clock).await;

    let api = Api::connect(&server).await;
    let who = api
        .who_am_i(&alice.token)
        .await
        .expect("the token still works");
    assert_eq!(who.credential_identity, alice.identity);
    assert_eq!(api.stock(&alice).await, stock_before);
    let claimed = api.claim(&claimer, "alice@localhost").await;
    assert_eq!(claimed.len(), 1);
    assert!(uploaded.contains(&claimed[0].key_package));
    assert_eq!(
        api.stock(&alice).await.available,
        stock_before.available - 1
    );
}

async fn tls_serves_the_client_api(database: DatabaseChoice) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("a self-signed certificate");
    let certificate_pem = certified.cert.pem();
    let directory = tempfile::tempdir().expect("a temporary directory");
    let certificate_path = directory.path().join("certificate.pem");
    let private_key_path = directory.path().join("private_key.pem");
    std::fs::write(&certificate_path, &certificate_pem).expect("write the certificate");
    std::fs::write(&private_key_path, certified.signing_key.serialize_pem())
        .expect("write the key");
    let server = TestHomeserver::start_with(TestOptions::on(database).configure(move |config| {
        config.client_api.tls_certificate = Some(certificate_path);
        config.client_api.tls_private_key = Some(private_key_path);
    }))
    .await;
    let tls_url = format!("https://{}", server.client_address());

    // Plaintext to the TLS port gets nowhere.
    let plaintext = match Channel::from_shared(server.client_url())
        .unwrap()
        .connect()
        .await
    {
        Ok(channel) => Api::new(channel)
            .try_register(register_request("mallory", &new_signer()))
            .await
            .map(drop)
            .map_err(|status| status.to_string()),
        Err(error) => Err(error.to_string()),
    };
    assert!(plaintext.is_err(), "a plaintext registration succeeded");

    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&certificate_pem))
        .domain_name("localhost");
    let channel = Channel::from_shared(tls_url)
        .unwrap()
        .tls_config(tls)
        .expect("a TLS configuration")
        .connect()
        .await
        .expect("a TLS connection");
    let api = Api::new(channel);
    let alice = api.register("alice").await;
    assert_eq!(alice.user_id, "alice@localhost");
    let who = api.who_am_i(&alice.token).await.expect("whoami over TLS");
    assert_eq!(who.device_id, alice.device_id);
    // The plaintext attempt created nothing.
    let mallory = api.try_login(login_request("mallory", &new_signer())).await;
    assert_refused(
        "mallory",
        mallory,
        Code::Unauthenticated,
        "wrong username or password",
    );

    // The certificate's expiry, for the alert that it is due for renewal:
    // rcgen's default notAfter, 4096-01-01T00:00:00Z.
    let text = conclave_test_support::metrics::scrape_ok(server.http_address()).await;
    assert_eq!(
        conclave_test_support::metrics::sample(
            &text,
            "conclave_tls_certificate_expiry_timestamp_seconds{listener=\"client_api\"}"
        ),
        Some(67_090_118_400.0),
        "{text}"
    );
}

#[tokio::test]
async fn metrics_are_served_on_the_http_listener_and_can_be_turned_off() {
    let server = TestHomeserver::start().await;
    let text = conclave_test_support::metrics::scrape_ok(server.http_address()).await;
    assert_eq!(
        conclave_test_support::metrics::sample(
            &text,
            &format!(
                "conclave_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        Some(1.0),
        "{text}"
    );
    server.stop().await;

    let server = TestHomeserver::start_with(
        TestOptions::default().configure(|config| config.telemetry.metrics = false),
    )
    .await;
    let (status, body) = conclave_test_support::metrics::scrape(server.http_address()).await;
    assert_eq!(status, 404, "{body}");
    server.stop().await;
}
