//! The real binary on the configuration the Helm chart renders. A values
//! file of the chart's CI matrix (`helm/conclave/ci/*-values.yaml`) or of its
//! examples (`helm/examples/`), unmodified, with only what a user would set
//! (`--set-json`: the URLs of the test's own PostgreSQL and Redis, a peer's
//! address), is rendered offline; then, as Helm and Kubernetes would, the
//! migration hook Job runs, each of the Deployment's pods runs its
//! `check-config` init container and then its homeserver, exactly as
//! rendered (arguments, environment from the Secrets, the ConfigMap's TOML,
//! Secret volumes), only moved to local directories and loopback ports
//! (`conclave_test_support::rendered_pod`). Secrets the values name as
//! existing are made by the test, as an operator would, from its own
//! PostgreSQL, Redis and development CA (`TestPki`).
//!
//! - The CI defaults (plus Redis): two replicas ready at their readiness
//!   probe; a message a `conclave` CLI user sends through one replica
//!   reaches a user streaming from the other, woken through Redis.
//! - The CI existing-Secrets values: every secret from Secrets the chart
//!   does not make (client TLS at the pod, federation certificate, trust
//!   roots under another key); two replicas ready, federation listening.
//! - The two-domain example (a.example and b.example values): each domain
//!   two replicas behind its federation LoadBalancer (a TCP balancer), a
//!   message crossing the domains over mutual TLS.

use std::process::Stdio;
use std::time::Duration;

use conclave_test_support::chart::{Manifest, Render, chart_directory, find, repository_root};
use conclave_test_support::cluster::{client_binary, free_address};
use conclave_test_support::metrics::{sample, scrape_ok};
use conclave_test_support::wait::DELIVERY_TIMEOUT;
use conclave_test_support::{
    DatabaseChoice, LocalDeployment, RenderedRelease, SecretValues, TestBalancer, TestDatabase,
    TestPki, TestRedis, eventually, within,
};
use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, BufReader};

/// Longest the whole test may take (a render, a migration, two replicas
/// and five CLI commands on a shared machine).
const TEST_TIMEOUT: Duration = Duration::from_secs(300);

/// Longest one CLI command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// `listen --timeout` for the message, in seconds: well under the resync
/// interval the test sets, so that only a Redis wake-up delivers it in time.
const LISTEN_TIMEOUT_SECONDS: &str = "45";

/// `redis.pollIntervalMs` for the release: the longest the homeserver
/// allows, so that a replica learns of another's message within the test
/// only through Redis.
const POLL_INTERVAL_MS: u64 = 60_000;

/// The Deployment's homeserver container.
const CONTAINER: &str = "homeserver";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rendered_release_runs_two_replicas_that_deliver_a_message() {
    within(TEST_TIMEOUT, "the rendered release", async {
        let database = TestDatabase::create(DatabaseChoice::Postgres).await;
        let redis = TestRedis::start().await;
        let manifests = Render::values(chart_directory().join("ci/default-values.yaml"))
            .set("database.url", json!(database.url()))
            // The chart leaves Redis out by default; two replicas need it.
            .set("redis.url", json!(redis.url()))
            .set("redis.pollIntervalMs", json!(POLL_INTERVAL_MS))
            .run()
            .unwrap_or_else(|error| panic!("the chart does not render: {error}"));
        let release = RenderedRelease::new(&manifests, "conclave");
        let config = rendered_config(&manifests);
        let domain = config["domain"]
            .as_str()
            .expect("the rendered configuration names the domain")
            .to_owned();
        let key_prefix = config["redis"]["key_prefix"]
            .as_str()
            .expect("the rendered configuration names Redis's key prefix")
            .to_owned();

        let mut deployment = LocalDeployment::install(
            &release,
            CONTAINER,
            &SecretValues::new(),
            database,
            Some(redis),
        )
        .await;
        assert_eq!(deployment.replicas(), 2, "the chart's default replicas");
        let migrations = deployment.hook_outputs();
        assert_eq!(
            migrations.len(),
            1,
            "one pre-install hook Job: {migrations:?}"
        );
        assert!(
            migrations[0].1.contains("applied "),
            "the hook Job {} migrated nothing on a fresh database:\n{}",
            migrations[0].0,
            migrations[0].1
        );
        for replica in 0..2 {
            let names: Vec<&str> = deployment
                .init_outputs(replica)
                .iter()
                .map(|(name, _)| name.as_str())
                .collect();
            assert_eq!(
                names,
                ["check-config"],
                "replica {replica}'s init containers"
            );
            assert_can_start(&deployment, replica);
        }

        // Both replicas are one cluster: each subscribed to the wake-ups of
        // the Redis the chart's Secret names (key prefix from values).
        let channel = format!("{key_prefix}:wakeups");
        let redis = deployment.cluster_mut().redis();
        eventually(
            COMMAND_TIMEOUT,
            "both replicas subscribing to wake-ups",
            || async { (redis.subscribers(&channel).await == Some(2)).then_some(()) },
        )
        .await;

        let cluster = deployment.cluster();
        let states = tempfile::tempdir().expect("a directory for the CLI's states");
        let alice = Cli::new(states.path().join("alice"));
        let bob = Cli::new(states.path().join("bob"));
        alice
            .run(&["--server", &cluster.client_url(0), "register", "alice"])
            .await;
        bob.run(&["--server", &cluster.client_url(1), "register", "bob"])
            .await;
        alice.run(&["group", "create", "team"]).await;
        let bob_id = format!("bob@{domain}");
        alice.run(&["group", "invite", "team", &bob_id]).await;

        // Bob streams from replica 1; alice sends once the stream is open.
        let listen = bob.listen_for_one("team");
        let replica_1_http = cluster.http_address(1);
        eventually(
            COMMAND_TIMEOUT,
            "bob's stream opening on replica 1",
            || async {
                let metrics = scrape_ok(replica_1_http).await;
                (sample(&metrics, "conclave_subscribe_streams") == Some(1.0)).then_some(())
            },
        )
        .await;
        let text = "hello from the rendered release";
        alice.run(&["send", "team", text]).await;

        expect_message(listen, text, &format!("alice@{domain}")).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_existing_secrets_values_run_with_secrets_the_operator_made() {
    within(TEST_TIMEOUT, "the existing-Secrets release", async {
        let database = TestDatabase::create(DatabaseChoice::Postgres).await;
        let redis = TestRedis::start().await;
        let pki = TestPki::new();
        let federation = pki.issue("a.example");
        let client_tls = pki.issue("chat.a.example");
        // The Secrets the values file names, made as an operator would.
        let secrets = SecretValues::new()
            .secret("conclave-database", [("url", database.url().to_owned())])
            .secret("conclave-redis", [("url", redis.url())])
            .secret(
                "chat-a-example-tls",
                [
                    ("tls.crt", client_tls.certificate_pem.clone()),
                    ("tls.key", client_tls.private_key_pem.clone()),
                ],
            )
            .secret(
                "federation-a-example-tls",
                [
                    ("tls.crt", federation.certificate_pem.clone()),
                    ("tls.key", federation.private_key_pem.clone()),
                ],
            )
            .secret("federation-trust-roots", [("bundle.pem", pki.ca_pem())]);
        let manifests = Render::values(chart_directory().join("ci/existing-secrets-values.yaml"))
            .run()
            .unwrap_or_else(|error| panic!("the chart does not render: {error}"));
        assert!(
            !manifests.iter().any(|manifest| manifest.kind() == "Secret"),
            "the existing-Secrets values make no Secret"
        );
        let release = RenderedRelease::new(&manifests, "conclave");
        let deployment =
            LocalDeployment::install(&release, CONTAINER, &secrets, database, Some(redis)).await;
        assert_eq!(deployment.replicas(), 2, "the chart's default replicas");
        for replica in 0..2 {
            let output = assert_can_start(&deployment, replica);
            for checked in [
                "client_api.tls_certificate: ",
                "federation.certificate: ",
                "valid for the domain a.example",
                "federation.trust_roots: ",
            ] {
                assert!(
                    output.contains(checked),
                    "check-config did not check {checked:?}:\n{output}"
                );
            }
            // Federation is on: its listener accepts connections (TLS).
            let federation = deployment.listeners(replica).by_table["federation"];
            tokio::net::TcpStream::connect(federation)
                .await
                .unwrap_or_else(|error| {
                    panic!("replica {replica}'s federation listener at {federation}: {error}")
                });
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_crosses_the_two_example_domains() {
    within(TEST_TIMEOUT, "the two-domain example", async {
        let pki = TestPki::new();
        // Each domain's federation LoadBalancer, by the address its peer is
        // given; nothing behind it until the domain's pods run.
        let nowhere = free_address(std::net::Ipv4Addr::LOCALHOST);
        let a_balancer = TestBalancer::start(vec![nowhere]).await;
        let b_balancer = TestBalancer::start(vec![nowhere]).await;
        let a_example = install_example(&pki, "a.example", ("b.example", &b_balancer)).await;
        a_balancer.set_backends(a_example.addresses_of("federation"));
        let b_example = install_example(&pki, "b.example", ("a.example", &a_balancer)).await;
        b_balancer.set_backends(b_example.addresses_of("federation"));

        let states = tempfile::tempdir().expect("a directory for the CLI's states");
        let alice = Cli::new(states.path().join("alice"));
        let bob = Cli::new(states.path().join("bob"));
        let a_url = a_example.cluster().client_url(0);
        let b_url = b_example.cluster().client_url(1);
        alice.run(&["--server", &a_url, "register", "alice"]).await;
        bob.run(&["--server", &b_url, "register", "bob"]).await;
        alice.run(&["group", "create", "team"]).await;
        alice
            .run(&["group", "invite", "team", "bob@b.example"])
            .await;
        // The Welcome crosses to b.example through a.example's outbox.
        eventually(
            DELIVERY_TIMEOUT,
            "bob's invitation reaching b.example",
            || async { bob.run(&["groups"]).await.contains("team").then_some(()) },
        )
        .await;

        let listen = bob.listen_for_one("team");
        let text = "hello from a.example";
        alice.run(&["send", "team", text]).await;
        expect_message(listen, text, "alice@a.example").await;
    })
    .await;
}

/// What replica `replica`'s `check-config` init container printed, which
/// must end saying that the configuration can start the server.
fn assert_can_start(deployment: &LocalDeployment, replica: usize) -> &str {
    let outputs = deployment.init_outputs(replica);
    let (_, output) = outputs
        .iter()
        .find(|(name, _)| name == "check-config")
        .unwrap_or_else(|| panic!("replica {replica} ran no check-config: {outputs:?}"));
    assert!(
        output.contains("the configuration can start the server"),
        "replica {replica}'s check-config:\n{output}"
    );
    output
}

/// Installs `helm/examples/DOMAIN-values.yaml` as release `conclave` in
/// the namespace the example names (`a-example`), with the peer's address
/// set to its balancer (as a user sets the address of the peer's
/// LoadBalancer) and the Secrets the example's steps make: the backing
/// URLs, the federation certificate and the trust roots.
async fn install_example(
    pki: &TestPki,
    domain: &str,
    (peer, peer_balancer): (&str, &TestBalancer),
) -> LocalDeployment {
    let database = TestDatabase::create(DatabaseChoice::Postgres).await;
    let redis = TestRedis::start().await;
    let certificate = pki.issue(domain);
    let secrets = SecretValues::new()
        .secret(
            "conclave-backing",
            [
                ("database-url", database.url().to_owned()),
                ("redis-url", redis.url()),
            ],
        )
        .secret(
            "federation-tls",
            [
                ("tls.crt", certificate.certificate_pem.clone()),
                ("tls.key", certificate.private_key_pem.clone()),
            ],
        )
        .secret("federation-trust", [("ca.crt", pki.ca_pem())]);
    let namespace = domain.replace('.', "-");
    let mut render =
        Render::values(repository_root().join(format!("helm/examples/{domain}-values.yaml"))).set(
            "federation.peers",
            json!({ peer: { "endpoint": format!("https://{}", peer_balancer.address()) } }),
        );
    render.namespace = Some(namespace.clone());
    let manifests = render
        .run()
        .unwrap_or_else(|error| panic!("the chart does not render {domain}'s example: {error}"));
    let release = RenderedRelease::new(&manifests, &namespace);
    let config = rendered_config(&manifests);
    assert_eq!(config["domain"].as_str(), Some(domain));
    LocalDeployment::install(&release, CONTAINER, &secrets, database, Some(redis)).await
}

/// Waits for `listen` (a `--json listen --count 1`) to print one message
/// and end; panics unless it is `text` from `sender`.
async fn expect_message(mut listen: tokio::process::Child, text: &str, sender: &str) {
    let stdout = listen.stdout.take().expect("listen's output is piped");
    let mut lines = BufReader::new(stdout).lines();
    // Membership changes (this device joining) come before the message.
    let message = loop {
        let line = lines.next_line().await.expect("reading listen's output");
        let Some(line) = line else {
            let output = listen.wait_with_output().await.expect("the listen command");
            panic!(
                "listen ended without a message ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        };
        let event: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|error| panic!("listen printed no JSON ({error}): {line}"));
        if event["event"] != "membership" {
            break event;
        }
    };
    assert_eq!(message["body"], json!(text), "{message}");
    assert_eq!(message["sender"], json!(sender), "{message}");
    let status = listen.wait().await.expect("waiting for listen");
    assert!(status.success(), "listen exited with {status}");
}

/// The TOML of the rendered ConfigMap (`<fullname>-config`, one key).
fn rendered_config(manifests: &[Manifest]) -> toml::Table {
    let config_map = find(manifests, "ConfigMap", "-config");
    let text = config_map.object["data"]["conclave-homeserver.toml"]
        .as_str()
        .unwrap_or_else(|| {
            panic!(
                "ConfigMap {} has no conclave-homeserver.toml",
                config_map.name()
            )
        });
    text.parse()
        .unwrap_or_else(|error| panic!("the rendered TOML does not parse: {error}\n{text}"))
}

/// The `conclave` CLI for one device (a state directory of its own).
struct Cli {
    state: std::path::PathBuf,
}

impl Cli {
    fn new(state: std::path::PathBuf) -> Cli {
        Cli { state }
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(client_binary());
        command
            .arg("--state")
            .arg(&self.state)
            .args(args)
            .env_remove("CONCLAVE_SERVER")
            .env_remove("CONCLAVE_STATE")
            .env("CONCLAVE_PASSWORD", conclave_test_support::PASSWORD)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// Runs `conclave ARGS` to its end, which must succeed.
    async fn run(&self, args: &[&str]) -> String {
        let what = format!("conclave {args:?}");
        let mut command = self.command(args);
        let output = within(COMMAND_TIMEOUT, &what, command.output())
            .await
            .unwrap_or_else(|error| panic!("cannot run {what}: {error}"));
        assert!(
            output.status.success(),
            "{what} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Starts `conclave listen GROUP` for one message, as JSON, with its
    /// output piped (read by [`expect_message`]).
    fn listen_for_one(&self, group: &str) -> tokio::process::Child {
        self.spawn(&[
            "--json",
            "listen",
            group,
            "--count",
            "1",
            "--timeout",
            LISTEN_TIMEOUT_SECONDS,
        ])
    }

    /// Starts `conclave ARGS` with its output piped.
    fn spawn(&self, args: &[&str]) -> tokio::process::Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start conclave {args:?}: {error}"))
    }
}

/// Changes a rendered pod spec.
type PodSpecChange = fn(&mut serde_json::Value);

#[test]
fn what_the_harness_cannot_run_fails_the_test() {
    let manifests = Render::values(chart_directory().join("ci/default-values.yaml"))
        .run()
        .unwrap_or_else(|error| panic!("the chart does not render: {error}"));
    let cases: [(&str, PodSpecChange, &str); 4] = [
        (
            "a pod field",
            |spec| spec["hostNetwork"] = json!(true),
            "\"hostNetwork\"",
        ),
        (
            "a container field",
            |spec| spec["containers"][0]["volumeDevices"] = json!([]),
            "\"volumeDevices\"",
        ),
        (
            "an environment source",
            |spec| {
                spec["containers"][0]["env"]
                    .as_array_mut()
                    .expect("the container has env")
                    .push(json!({
                        "name": "MEMORY",
                        "valueFrom": {"resourceFieldRef": {"resource": "limits.memory"}},
                    }));
            },
            "env MEMORY",
        ),
        (
            "a volume type",
            |spec| {
                spec["volumes"][0] = json!({"name": "config", "hostPath": {"path": "/etc"}});
            },
            "hostPath",
        ),
    ];
    for (case, change, expected) in cases {
        let mut manifests = manifests.clone();
        let deployment = manifests
            .iter_mut()
            .find(|manifest| manifest.kind() == "Deployment")
            .expect("a Deployment");
        change(&mut deployment.object["spec"]["template"]["spec"]);
        let release = RenderedRelease::new(&manifests, "conclave");
        let template = &release.deployment().object["spec"]["template"];
        let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let pod = conclave_test_support::LocalPod::new(
                &release,
                template,
                "conclave-0",
                std::net::Ipv4Addr::new(127, 0, 0, 1),
                &SecretValues::new(),
            );
            pod.container_named(CONTAINER);
        }))
        .expect_err(case);
        let message = refused
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(
            message.contains(expected),
            "{case}: the message does not name {expected}: {message}"
        );
    }
}

#[test]
fn service_links_reach_the_environment_only_when_the_pod_allows_them() {
    let mut manifests = Render::values(chart_directory().join("ci/default-values.yaml"))
        .run()
        .unwrap_or_else(|error| panic!("the chart does not render: {error}"));
    let environment = |manifests: &[Manifest]| {
        let release = RenderedRelease::new(manifests, "conclave");
        let template = &release.deployment().object["spec"]["template"];
        let pod = conclave_test_support::LocalPod::new(
            &release,
            template,
            "conclave-0",
            std::net::Ipv4Addr::new(127, 0, 0, 1),
            &SecretValues::new(),
        );
        pod.container_named(CONTAINER).env
    };
    let service = find(&manifests, "Service", "-client").name().to_owned();
    let link = format!("{}_SERVICE_HOST", service.to_uppercase().replace('-', "_"));
    let rendered = environment(&manifests);
    assert!(
        !rendered.iter().any(|(name, _)| *name == link),
        "the chart turns service links off, yet {link} is set: {rendered:?}"
    );
    let deployment = manifests
        .iter_mut()
        .find(|manifest| manifest.kind() == "Deployment")
        .expect("a Deployment");
    let spec = deployment.object["spec"]["template"]["spec"]
        .as_object_mut()
        .expect("a pod spec");
    spec.remove("enableServiceLinks");
    let linked = environment(&manifests);
    assert!(
        linked.iter().any(|(name, _)| *name == link),
        "Kubernetes's default service links are missing ({link}): {linked:?}"
    );
}
