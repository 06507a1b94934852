//! `conclave-homeserver admin federation ...` as a process, as an operator
//! runs it on a.example's host beside a test network: the peers, the doctor
//! against a healthy peer and an unreachable one, the own certificate, the
//! exit codes (1 when a check failed), `--json` (one object per line, and
//! nothing else on stdout); and `FederationAdminService` through a.example's
//! client port, for an administrator, with the audit entries it leaves.

use crate::admin_cli::{admin_command, succeeded};
use crate::harness::{Api, assert_status, authorized, channel, with_authorization};
use conclave_proto::admin::v1 as admin;
use conclave_proto::admin::v1::admin_session_service_client::AdminSessionServiceClient;
use conclave_proto::admin::v1::audit_service_client::AuditServiceClient;
use conclave_proto::admin::v1::federation_admin_service_client::FederationAdminServiceClient;
use conclave_test_support::{DatabaseChoice, PASSWORD, TestDatabase, TestNetwork};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use tokio::process::Command;
use tonic::Code;

/// a.example's configuration file: its network certificate, b.example at
/// its real endpoint and c.example where nothing listens.
fn write_config(directory: &Path, network: &TestNetwork, database_url: &str) -> PathBuf {
    let certificate = network.certificate("a.example");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let text = format!(
        "domain = 'a.example'\n\
         [database]\nurl = '{database_url}'\n\
         [federation]\ncertificate = '{}'\nprivate_key = '{}'\ntrust_roots = '{}'\n\
         [federation.peers.'b.example']\nendpoint = '{}'\n\
         [federation.peers.'c.example']\nendpoint = 'https://{closed}'\n",
        certificate.certificate.display(),
        certificate.private_key.display(),
        network.pki().trust_roots().display(),
        network.endpoint("b.example"),
    );
    let path = directory.join("a.example.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn admin(config: &Path, arguments: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_conclave-homeserver"))
        .arg("--config")
        .arg(config)
        .arg("admin")
        .arg("federation")
        .args(arguments)
        .env_clear()
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("running conclave-homeserver")
}

/// stdout as JSON objects, one per line (and nothing else).
fn json_lines(output: &Output) -> Vec<Value> {
    String::from_utf8(output.stdout.clone())
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{line:?}: {error}")))
        .collect()
}

fn outcomes(report: &Value) -> Vec<(String, String)> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|check| {
            (
                check["name"].as_str().unwrap().to_owned(),
                check["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_doctor_and_the_peers_from_the_command_line() {
    let network = TestNetwork::start(&["a.example", "b.example"], DatabaseChoice::Sqlite).await;
    let database = TestDatabase::create(DatabaseChoice::Sqlite).await;
    let directory = tempfile::tempdir().unwrap();
    let config = write_config(directory.path(), &network, database.url());

    let healthy = admin(&config, &["doctor", "b.example", "--json"]).await;
    assert_eq!(healthy.status.code(), Some(0), "{healthy:?}");
    let reports = json_lines(&healthy);
    assert_eq!(reports.len(), 1, "{healthy:?}");
    assert_eq!(reports[0]["healthy"], true);
    assert_eq!(reports[0]["domain"], "b.example");
    let names = [
        "connect",
        "tls_handshake",
        "certificate_chain",
        "certificate_name",
        "pin",
        "certificate_expiry",
        "clock_skew",
        "protocol_version",
    ];
    assert_eq!(
        outcomes(&reports[0]),
        names.map(|name| (name.to_owned(), "PASS".to_owned()))
    );

    let unreachable = admin(&config, &["doctor", "c.example", "--json"]).await;
    assert_eq!(unreachable.status.code(), Some(1), "{unreachable:?}");
    let reports = json_lines(&unreachable);
    assert_eq!(reports.len(), 1, "{unreachable:?}");
    assert_eq!(reports[0]["healthy"], false);
    let outcomes = outcomes(&reports[0]);
    assert_eq!(outcomes[0], ("connect".to_owned(), "FAIL".to_owned()));
    assert!(
        outcomes[1..]
            .iter()
            .all(|(_, outcome)| outcome == "SKIPPED"),
        "{outcomes:?}"
    );

    let text = admin(&config, &["doctor", "c.example"]).await;
    assert_eq!(text.status.code(), Some(1), "{text:?}");
    let stdout = String::from_utf8(text.stdout).unwrap();
    assert!(stdout.contains("FAIL     connect"), "{stdout}");
    assert!(stdout.contains("SKIPPED  protocol_version"), "{stdout}");

    let unknown = admin(&config, &["doctor", "d.example", "--json"]).await;
    assert_ne!(unknown.status.code(), Some(0), "{unknown:?}");
    assert!(unknown.stdout.is_empty(), "{unknown:?}");
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("d.example is not a federation peer"),
        "{unknown:?}"
    );

    let own = admin(&config, &["check-certificate", "--json"]).await;
    assert_eq!(own.status.code(), Some(0), "{own:?}");
    let reports = json_lines(&own);
    assert_eq!(reports[0]["domain"], "a.example");
    assert_eq!(reports[0]["healthy"], true);
    assert_eq!(reports[0]["checks"].as_array().unwrap().len(), 6);

    let peers = admin(&config, &["peers", "--json"]).await;
    assert_eq!(peers.status.code(), Some(0), "{peers:?}");
    let peers = json_lines(&peers);
    let domains: Vec<&str> = peers
        .iter()
        .map(|peer| peer["domain"].as_str().unwrap())
        .collect();
    assert_eq!(domains, ["b.example", "c.example"]);
    assert_eq!(peers[0]["endpoint"], network.endpoint("b.example").as_str());
    assert_eq!(peers[0]["outbox_depth"], 0);
    assert_eq!(peers[0]["oldest_pending_at_ms"], Value::Null);

    network.shutdown().await;
}

#[tokio::test]
async fn the_federation_admin_api_for_an_administrator() {
    let network = TestNetwork::start(&["a.example", "b.example"], DatabaseChoice::Sqlite).await;
    let server = network.server("a.example");
    let channel = channel(server).await;
    Api::new(channel.clone()).register("alice").await;
    succeeded(
        &admin_command(
            "a.example",
            &server.config().database.url,
            &["grant", "alice"],
        )
        .await,
    );
    let token = AdminSessionServiceClient::new(channel.clone())
        .login(admin::AdminLoginRequest {
            username: "alice".to_owned(),
            password: PASSWORD.to_owned(),
        })
        .await
        .expect("alice logs in")
        .into_inner()
        .token;
    let mut federation = FederationAdminServiceClient::new(channel.clone());

    assert_status(
        federation
            .run_doctor(with_authorization(
                None,
                admin::RunDoctorRequest {
                    domain: "b.example".to_owned(),
                },
            ))
            .await,
        Code::Unauthenticated,
        "",
    );

    let peers = federation
        .list_peers(authorized(&token, admin::ListPeersRequest {}))
        .await
        .expect("the peers")
        .into_inner()
        .peers;
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert_eq!(peers[0].domain, "b.example");
    assert!(peers[0].configured);
    assert_eq!(
        peers[0].endpoint,
        network.endpoint("b.example").trim_start_matches("https://")
    );
    assert_eq!(peers[0].oldest_pending_at, None);

    let report = federation
        .run_doctor(authorized(
            &token,
            admin::RunDoctorRequest {
                domain: "b.example".to_owned(),
            },
        ))
        .await
        .expect("the doctor's report")
        .into_inner();
    assert!(report.healthy, "{report:#?}");
    assert_eq!(report.checks.len(), 8, "{report:#?}");
    assert!(
        report
            .checks
            .iter()
            .all(|check| check.outcome == admin::CheckOutcome::Pass as i32),
        "{report:#?}"
    );
    assert!(report.checked_at.is_some());

    assert_status(
        federation
            .run_doctor(authorized(
                &token,
                admin::RunDoctorRequest {
                    domain: "c.example".to_owned(),
                },
            ))
            .await,
        Code::NotFound,
        "c.example is not a federation peer",
    );

    let own = federation
        .check_own_certificate(authorized(&token, admin::CheckOwnCertificateRequest {}))
        .await
        .expect("the own certificate's report")
        .into_inner();
    assert!(own.healthy, "{own:#?}");
    assert_eq!(own.domain, "a.example");
    assert_eq!(own.checks.len(), 6);

    let entries = AuditServiceClient::new(channel)
        .list_audit_entries(authorized(
            &token,
            admin::ListAuditEntriesRequest {
                filter: Some(admin::AuditFilter {
                    action_prefix: "federation.".to_owned(),
                    ..admin::AuditFilter::default()
                }),
                ..admin::ListAuditEntriesRequest::default()
            },
        ))
        .await
        .expect("the audit log")
        .into_inner()
        .entries;
    let seen: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|entry| {
            (
                entry.actor.as_str(),
                entry.action.as_str(),
                entry.target.as_str(),
            )
        })
        .collect();
    // Newest first.
    assert_eq!(
        seen,
        [
            (
                "alice@a.example",
                "federation.check_own_certificate",
                "a.example"
            ),
            ("alice@a.example", "federation.doctor", "c.example"),
            ("alice@a.example", "federation.doctor", "b.example"),
        ]
    );
    network.shutdown().await;
}
