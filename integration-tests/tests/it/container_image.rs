//! The container image: the Dockerfile's runtime stage built with podman from
//! the binaries this test suite was built with (as CI builds it), run as
//! Kubernetes runs it (read-only root filesystem, uid:gid 10001:10001, no
//! capabilities) against the test PostgreSQL and a private Redis over the host
//! network, until `/readyz` answers and the `conclave` CLI registers a user;
//! stopped with SIGTERM, it exits 0 as PID 1. Also the image's configuration
//! (user, labels, ports, no `CONCLAVE_*` variable) and hadolint on the
//! Dockerfiles.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use conclave_test_support::chart::{python_tool, repository_root};
use conclave_test_support::cluster::{client_binary, free_address, homeserver_binary, http_get_ok};
use conclave_test_support::container::{RuntimeBuild, TestContainer, TestImage, podman_success};
use conclave_test_support::{DatabaseChoice, PASSWORD, TestDatabase, TestRedis, eventually};
use serde_json::Value;

use crate::harness::within_timeout;

/// The uid:gid the image runs as, and the chart's securityContext names.
const IMAGE_USER: &str = "10001:10001";

/// Longest wait for the container's `/readyz` (migrations on a fresh
/// database included; the machine is shared).
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// How long `podman stop` waits after SIGTERM before it kills: well above the
/// server's shutdown deadline (`[shutdown] deadline_seconds`, 20 by default),
/// so an exit code 0 means the server stopped on SIGTERM by itself.
const STOP_TIMEOUT_SECONDS: &str = "60";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_image_serves_read_only_as_its_user_and_stops_on_sigterm() {
    within_timeout(async {
        let version = env!("CARGO_PKG_VERSION");
        let revision = format!("integration-test-{}", std::process::id());
        let image = TestImage::build_runtime(&RuntimeBuild {
            version: version.to_owned(),
            revision: revision.clone(),
            homeserver_binary: homeserver_binary(),
            client_binary: client_binary(),
        })
        .await;

        assert_image_configuration(&image.inspect().await, version, &revision);

        // The debugging CLI runs in the image too, under the same constraints.
        let mut cli_version_args = vec!["run", "--rm", "--entrypoint", "conclave"];
        cli_version_args.extend(hardening_options());
        cli_version_args.extend([image.tag(), "--version"]);
        let cli_version = podman_success(&cli_version_args).await;
        assert_eq!(cli_version.trim(), format!("conclave {version}"));

        // As the chart runs it: PostgreSQL and Redis, nothing written to the
        // container.
        let database = TestDatabase::create(DatabaseChoice::Postgres).await;
        let redis = TestRedis::start().await;
        serve_register_and_stop(
            &image,
            &[
                format!("CONCLAVE_DATABASE__URL={}", database.url()),
                format!("CONCLAVE_REDIS__URL={}", redis.url()),
            ],
        )
        .await;

        // With the default database, SQLite under the working directory: the
        // volume, the one place the image's user may write.
        serve_register_and_stop(&image, &[]).await;
    })
    .await;
}

#[test]
fn the_dockerfiles_pass_hadolint() {
    let root = repository_root();
    let output = std::process::Command::new(python_tool("hadolint"))
        .current_dir(&root)
        .args([
            "--config",
            ".hadolint.yaml",
            "--no-color",
            "Dockerfile",
            "scripts/rust-image.Dockerfile",
        ])
        .output()
        .expect("cannot run hadolint");
    assert!(
        output.status.success(),
        "hadolint found problems ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs the image (its own ENTRYPOINT and CMD, `conclave-homeserver run`)
/// hardened, configured by `environment` and listens on loopback ports; waits
/// for `/readyz`; checks the server is PID 1 as the image's user; registers
/// a user with the CLI from the host; stops the container (SIGTERM) and
/// checks the server exited 0 by itself, logging no error.
async fn serve_register_and_stop(image: &TestImage, environment: &[String]) {
    let client_address = free_address(Ipv4Addr::LOCALHOST);
    let http_address = free_address(Ipv4Addr::LOCALHOST);
    let mut environment = environment.to_vec();
    environment.extend([
        "CONCLAVE_DOMAIN=image.example".to_owned(),
        format!("CONCLAVE_CLIENT_API__LISTEN={client_address}"),
        format!("CONCLAVE_HTTP__LISTEN={http_address}"),
        "CONCLAVE_LOG__FORMAT=json".to_owned(),
    ]);
    let mut run_args = hardening_options();
    for variable in &environment {
        run_args.extend(["--env", variable.as_str()]);
    }
    run_args.push(image.tag());
    let container = TestContainer::start(&run_args).await;

    assert_wait_ready(&container, http_address).await;
    let processes =
        podman_success(&["top", container.name(), "pid", "user", "group", "args"]).await;
    assert_server_is_pid_1_as_image_user(&processes);

    register_with_cli(client_address).await;

    podman_success(&["stop", "--time", STOP_TIMEOUT_SECONDS, container.name()]).await;
    let state = container.inspect().await["State"].clone();
    assert_eq!(
        state["ExitCode"].as_i64(),
        Some(0),
        "the server as PID 1 did not exit cleanly on SIGTERM ({state}); its output:\n{}",
        container.logs().await
    );
    let logs = container.logs().await;
    assert!(
        logs.contains("homeserver stopped"),
        "the server did not shut down gracefully; its output:\n{logs}"
    );
    assert!(
        !logs.contains(r#""level":"ERROR""#),
        "the server logged an error:\n{logs}"
    );
}

/// The `podman run` options of a hardened Kubernetes pod: read-only root
/// filesystem (without the writable /tmp, /var/tmp and /run podman adds by
/// default, which Kubernetes does not), the numeric user, no capabilities, no
/// privilege escalation; and the host's network, where the test's services
/// listen on loopback.
fn hardening_options() -> Vec<&'static str> {
    vec![
        "--read-only",
        "--read-only-tmpfs=false",
        "--user",
        IMAGE_USER,
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--network",
        "host",
    ]
}

/// The image's configuration: numeric user, ENTRYPOINT and CMD, the state
/// directory, ports, stop signal, OCI labels, and no `CONCLAVE_*` variable
/// (it would override the chart's configuration file).
fn assert_image_configuration(image: &Value, version: &str, revision: &str) {
    let config = &image["Config"];
    assert_eq!(config["User"], IMAGE_USER, "{config}");
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["conclave-homeserver"])
    );
    assert_eq!(config["Cmd"], serde_json::json!(["run"]));
    assert_eq!(config["WorkingDir"], "/var/lib/conclave");
    assert!(
        config["Volumes"].get("/var/lib/conclave").is_some(),
        "/var/lib/conclave is not a volume: {config}"
    );
    for port in ["7400/tcp", "7401/tcp", "7480/tcp"] {
        assert!(
            config["ExposedPorts"].get(port).is_some(),
            "{port} is not exposed: {config}"
        );
    }
    assert_eq!(config["StopSignal"], "SIGTERM");
    let environment = config["Env"].as_array().cloned().unwrap_or_default();
    assert!(
        environment.iter().all(|variable| !variable
            .as_str()
            .unwrap_or_default()
            .starts_with("CONCLAVE_")),
        "the image sets CONCLAVE_* variables: {environment:?}"
    );

    let labels = &config["Labels"];
    assert_eq!(
        labels["org.opencontainers.image.title"],
        "conclave-homeserver"
    );
    assert_eq!(labels["org.opencontainers.image.version"], version);
    assert_eq!(labels["org.opencontainers.image.revision"], revision);
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    for label in [
        "org.opencontainers.image.description",
        "org.opencontainers.image.source",
    ] {
        assert!(labels.get(label).is_some(), "no label {label}: {labels}");
    }
}

/// Waits for the container's `/readyz`, failing at once with its output when
/// it stops.
async fn assert_wait_ready(container: &TestContainer, http_address: SocketAddr) {
    let stopped = eventually(READY_TIMEOUT, "the container's /readyz", || async {
        if http_get_ok(http_address, "/readyz").await {
            Some(false)
        } else if !container.is_running().await {
            Some(true)
        } else {
            None
        }
    })
    .await;
    assert!(
        !stopped,
        "the container stopped before /readyz answered; its output:\n{}",
        container.logs().await
    );
}

/// `podman top NAME pid user group args` shows one process, the server as
/// PID 1 (which gets no default signal handlers: it must handle SIGTERM
/// itself), under the image's user (named in its /etc/passwd) and group.
fn assert_server_is_pid_1_as_image_user(processes: &str) {
    let mut lines = processes.lines();
    let header = lines.next().unwrap_or_default();
    assert!(header.contains("USER"), "podman top printed: {processes}");
    let processes_seen: Vec<Vec<&str>> = lines
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert_eq!(
        processes_seen,
        [["1", "conclave", "conclave", "conclave-homeserver", "run"]],
        "podman top printed: {processes}"
    );
}

/// `conclave register` from the host against the container's client API.
async fn register_with_cli(client_address: SocketAddr) {
    let home = tempfile::tempdir().expect("a home directory for the CLI");
    let server = format!("http://{client_address}");
    let output = tokio::process::Command::new(client_binary())
        .arg("--server")
        .arg(&server)
        .arg("--state")
        .arg(home.path().join("state"))
        .args(["register", "alice", "--device-name", "image-test"])
        .env("CONCLAVE_PASSWORD", PASSWORD)
        .env("HOME", home.path())
        .env("NO_COLOR", "1")
        .env_remove("CONCLAVE_SERVER")
        .env_remove("CONCLAVE_STATE")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("cannot run the conclave CLI");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "conclave register against the container failed ({}):\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("alice@image.example"),
        "conclave register printed: {stdout}"
    );
}
