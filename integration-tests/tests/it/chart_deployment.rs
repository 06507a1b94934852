//! The real binary on the configuration the Helm chart renders: the chart's
//! CI values (`helm/conclave/ci/default-values.yaml`) with the test's own
//! PostgreSQL and Redis URLs set as a user sets theirs (`--set-json`),
//! rendered offline; then, as Helm and Kubernetes would, the migration hook
//! Job runs, each of the Deployment's two pods runs its `check-config` init
//! container and then its homeserver, exactly as rendered (arguments,
//! environment from the rendered Secrets, the ConfigMap's TOML), only moved
//! to local directories and loopback ports (`conclave_test_support::
//! rendered_pod`). Both replicas become ready at their readiness probe, and
//! a message a `conclave` CLI user sends through one replica reaches a user
//! streaming from the other, woken through Redis.

use std::process::Stdio;
use std::time::Duration;

use conclave_test_support::chart::{Render, chart_directory};
use conclave_test_support::cluster::client_binary;
use conclave_test_support::metrics::{sample, scrape_ok};
use conclave_test_support::{
    DatabaseChoice, LocalDeployment, RenderedRelease, SecretValues, TestDatabase, TestRedis,
    eventually, within,
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
        assert_eq!(migrations.len(), 1, "one pre-install hook Job: {migrations:?}");
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
            assert_eq!(names, ["check-config"], "replica {replica}'s init containers");
        }

        // Both replicas are one cluster: each subscribed to the wake-ups of
        // the Redis the chart's Secret names (key prefix from values).
        let channel = format!("{key_prefix}:wakeups");
        let redis = deployment.cluster_mut().redis();
        eventually(COMMAND_TIMEOUT, "both replicas subscribing to wake-ups", || async {
            (redis.subscribers(&channel).await == Some(2)).then_some(())
        })
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
        let mut listen = bob.spawn(&[
            "--json",
            "listen",
            "team",
            "--count",
            "1",
            "--timeout",
            LISTEN_TIMEOUT_SECONDS,
        ]);
        let replica_1_http = cluster.http_address(1);
        eventually(COMMAND_TIMEOUT, "bob's stream opening on replica 1", || async {
            let metrics = scrape_ok(replica_1_http).await;
            (sample(&metrics, "conclave_subscribe_streams") == Some(1.0)).then_some(())
        })
        .await;
        let text = "hello from the rendered release";
        alice.run(&["send", "team", text]).await;

        let stdout = listen.stdout.take().expect("listen's output is piped");
        let line = BufReader::new(stdout)
            .lines()
            .next_line()
            .await
            .expect("reading listen's output");
        let Some(line) = line else {
            let output = listen.wait_with_output().await.expect("bob's listen");
            panic!(
                "bob's listen ended without a message ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        };
        let message: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|error| panic!("listen printed no JSON ({error}): {line}"));
        assert_eq!(message["body"], json!(text), "{message}");
        assert_eq!(message["sender"], json!(format!("alice@{domain}")), "{message}");
        let status = listen.wait().await.expect("waiting for bob's listen");
        assert!(status.success(), "bob's listen exited with {status}");
    })
    .await;
}

/// The TOML of the rendered ConfigMap (`<fullname>-config`, one key).
fn rendered_config(manifests: &[conclave_test_support::chart::Manifest]) -> toml::Table {
    let config_map = conclave_test_support::chart::find(manifests, "ConfigMap", "-config");
    let text = config_map.object["data"]["conclave-homeserver.toml"]
        .as_str()
        .unwrap_or_else(|| panic!("ConfigMap {} has no conclave-homeserver.toml", config_map.name()));
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

    /// Starts `conclave ARGS` with its output piped.
    fn spawn(&self, args: &[&str]) -> tokio::process::Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start conclave {args:?}: {error}"))
    }
}
