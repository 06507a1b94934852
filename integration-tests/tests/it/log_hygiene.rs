//! No secret in the logs: the walkthrough of the README, run with the real
//! binaries at trace level, then every line the homeservers and the CLI logged
//! is searched for every secret the walkthrough used.
//!
//! Two domains, a.example and b.example, each one process of the real
//! `conclave-homeserver` (a one-replica `TestCluster`) with JSON logs, token
//! registration and federation to the other; a.example in cluster mode, with
//! passwords in its database and Redis URLs; the `conclave` CLI run as a
//! person would, with `-v` and `RUST_LOG=trace` (every crate's events on
//! stderr). The
//! walkthrough: registration tokens created, accounts registered with them, a
//! second device logged in, key packages published and claimed, a group
//! created with members of both domains, messages sent both ways, every device
//! logged out.
//!
//! The secrets: the passwords (of the accounts, the database and Redis), the
//! registration tokens, every device's access
//! token and signature private key (read from the CLI's state before logout),
//! the federation private keys (PEM body, DER as hex) and the message texts.
//! Each is looked for as it is and in the encodings a careless log line would
//! use (hex, base64, a `Debug` list of bytes). A hit names the secret, the log
//! and the line (with the secret cut out). The homeservers' lines must also
//! each be one JSON object.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use base64::Engine as _;
use conclave_test_support::cluster::{client_binary, free_address, homeserver_binary};
use conclave_test_support::wait::DELIVERY_TIMEOUT;
use conclave_test_support::{
    ClusterOptions, IssuedCertificate, TestCluster, TestPki, eventually, within,
};

/// Longest the whole walkthrough may take (trace logging of every crate
/// makes each step slower; the machine is shared).
const TEST_TIMEOUT: Duration = Duration::from_secs(400);

/// Longest one CLI command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// Longest `listen` waits for a message, in seconds (it passes the
/// federation's outbox for the other domain's member).
const LISTEN_TIMEOUT_SECONDS: &str = "90";

/// A homeserver log line of the cluster harness's own, not the server's.
const HARNESS_MARKER: &str = "=====";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_walkthrough_at_trace_level_logs_no_secret() {
    within(TEST_TIMEOUT, "the logged walkthrough", walkthrough()).await;
}

async fn walkthrough() {
    let mut secrets = Secrets::default();
    let pki = TestPki::new();
    let a_certificate = pki.issue("a.example");
    let b_certificate = pki.issue("b.example");
    secrets.add_private_key_pem("a.example's federation key", &a_certificate);
    secrets.add_private_key_pem("b.example's federation key", &b_certificate);
    let a_federation = free_address(std::net::Ipv4Addr::LOCALHOST);
    let b_federation = free_address(std::net::Ipv4Addr::LOCALHOST);
    let mut a_example = TestCluster::start(
        ClusterOptions::replicas(1)
            .with_redis()
            .env("RUST_LOG", "trace")
            .domain("a.example")
            .config(&logged_domain_config(
                &pki,
                &a_certificate,
                a_federation,
                ("b.example", b_federation),
            )),
    )
    .await;
    let b_example = TestCluster::start(
        ClusterOptions::replicas(1)
            .env("RUST_LOG", "trace")
            .domain("b.example")
            .config(&logged_domain_config(
                &pki,
                &b_certificate,
                b_federation,
                ("a.example", a_federation),
            )),
    )
    .await;

    restart_with_passwords(&mut a_example, &mut secrets).await;

    let mut logs = Logs::default();
    let a_token = registration_token(&a_example, &mut logs).await;
    let b_token = registration_token(&b_example, &mut logs).await;
    secrets.add_text("a.example's registration token", &a_token);
    secrets.add_text("b.example's registration token", &b_token);

    let states = tempfile::tempdir().expect("a directory for the CLI's states");
    let mut cli = Cli::new(logs);
    let alice = Device::new(states.path(), "alice", "alice's password", &mut secrets);
    let alice_laptop = Device {
        state: states.path().join("alice-laptop"),
        password: alice.password.clone(),
    };
    let bob = Device::new(states.path(), "bob", "bob's password", &mut secrets);
    let carol = Device::new(states.path(), "carol", "carol's password", &mut secrets);
    let (a_url, b_url) = (a_example.client_url(0), b_example.client_url(0));

    for (device, user, url, token) in [
        (&alice, "alice", &a_url, &a_token),
        (&bob, "bob", &a_url, &a_token),
        (&carol, "carol", &b_url, &b_token),
    ] {
        cli.run(
            device,
            &[
                "--server",
                url,
                "register",
                user,
                "--registration-token",
                token,
            ],
        )
        .await;
    }
    cli.run(&alice_laptop, &["--server", &a_url, "login", "alice"])
        .await;
    cli.run(&alice, &["whoami"]).await;
    cli.run(&alice_laptop, &["devices"]).await;
    cli.run(&bob, &["keys", "publish", "--count", "5"]).await;
    cli.run(&bob, &["keys", "status"]).await;
    cli.run(&alice, &["keys", "claim", "bob@a.example"]).await;
    cli.run(&alice, &["group", "create", "team"]).await;
    cli.run(
        &alice,
        &[
            "group",
            "invite",
            "team",
            "bob@a.example",
            "carol@b.example",
        ],
    )
    .await;

    let from_alice = secrets.add_message("alice's message", "hello from alice");
    cli.run(&alice, &["send", "team", &from_alice]).await;
    for receiver in [&bob, &carol] {
        let received = cli.listen_for_one(receiver).await;
        assert!(
            received.contains(&from_alice),
            "alice's message did not arrive: {received}"
        );
    }
    let from_carol = secrets.add_message("carol's message", "hi from b.example");
    cli.run(&carol, &["send", "team", &from_carol]).await;
    let received = cli.listen_for_one(&alice).await;
    assert!(
        received.contains(&from_carol),
        "carol's message did not arrive across domains: {received}"
    );

    // A post-quantum group across the two domains, from the command line
    // (docs/cipher-suites.md): Carol's device published key packages of both
    // suites at registration, and her homeserver hands out the pq one.
    cli.run(
        &alice,
        &["group", "create", "quantum", "--cipher-suite", "pq"],
    )
    .await;
    cli.run(&alice, &["group", "invite", "quantum", "carol@b.example"])
        .await;
    let quantum = secrets.add_message("alice's post-quantum message", "sealed for later");
    cli.run(&alice, &["send", "quantum", &quantum]).await;
    let received = cli.listen_for_one(&carol).await;
    assert!(
        received.contains(&quantum) && received.contains("[quantum]"),
        "the post-quantum group's message did not arrive across domains: {received}"
    );
    let listed = cli.run(&carol, &["groups", "--json"]).await;
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("groups --json");
    let quantum_group = listed["groups"]
        .as_array()
        .and_then(|groups| groups.iter().find(|group| group["name"] == "quantum"))
        .unwrap_or_else(|| panic!("carol's groups: {listed}"));
    assert_eq!(quantum_group["cipher_suite"], "pq", "{listed}");

    cli.run(&bob, &["groups"]).await;
    cli.run(&carol, &["group", "members", "team"]).await;

    for (device, name) in [
        (&alice, "alice's"),
        (&alice_laptop, "alice's laptop's"),
        (&bob, "bob's"),
        (&carol, "carol's"),
    ] {
        secrets.add_device_state(name, &device.state);
    }
    for device in [&alice_laptop, &bob, &carol, &alice] {
        cli.run(device, &["logout"]).await;
    }

    // Stopped, so that their shutdown is logged too and nothing is written
    // while the files are read.
    a_example.terminate(0).await;
    b_example.terminate(0).await;
    let mut logs = cli.logs;
    for (cluster, domain) in [(&a_example, "a.example"), (&b_example, "b.example")] {
        let path = cluster.log_path(0);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
        assert_json_lines(domain, &text);
        logs.add(
            LogSource::Homeserver,
            format!("{domain}'s homeserver"),
            text,
        );
    }
    logs.assert_trace_level();
    secrets.assert_absent_from(&logs);
}

/// The TOML a domain's homeserver runs with, over the cluster harness's:
/// JSON logs of every crate at trace level, registration by token, and
/// federation with the other domain.
fn logged_domain_config(
    pki: &TestPki,
    certificate: &IssuedCertificate,
    listen: std::net::SocketAddr,
    (peer, peer_address): (&str, std::net::SocketAddr),
) -> String {
    format!(
        "[log]\nformat = 'json'\nfilter = 'trace'\n\
         [registration]\npolicy = 'token'\n\
         [federation]\nlisten = '{listen}'\ncertificate = '{}'\nprivate_key = '{}'\ntrust_roots = '{}'\n\
         [federation.peers.'{peer}']\nendpoint = 'https://{peer_address}'",
        certificate.certificate.display(),
        certificate.private_key.display(),
        pki.trust_roots().display(),
    )
}

/// Restarts the cluster's replica with passwords in its database and Redis
/// URLs, which become secrets. Both servers take any: the test's PostgreSQL
/// trusts local connections, and the private Redis's default user has no
/// password (`AUTH default ANYTHING` succeeds). A database URL that has a
/// password already keeps it.
async fn restart_with_passwords(cluster: &mut TestCluster, secrets: &mut Secrets) {
    let path = cluster.config_path(0);
    let mut config = std::fs::read_to_string(&path).expect("the replica's configuration");
    let database_url = cluster.database_url().to_owned();
    let (scheme, rest) = database_url.split_once("://").expect("a postgres:// URL");
    let (credentials, _) = rest.split_once('@').unwrap_or_else(|| {
        panic!("the test database's URL names no user; set CONCLAVE_TEST_POSTGRES_URL with one")
    });
    let database_password = match credentials.split_once(':') {
        Some((_, password)) => password.to_owned(),
        None => {
            let password = random_hex("dbpass");
            let with_password = database_url.replacen(
                &format!("{scheme}://{credentials}@"),
                &format!("{scheme}://{credentials}:{password}@"),
                1,
            );
            replace_once(&mut config, &database_url, &with_password);
            password
        }
    };
    // Short passwords of a local setup would match by accident.
    if database_password.len() >= 8 {
        secrets.add_text("a.example's database password", &database_password);
    }
    let redis_url = cluster.redis().url();
    let redis_password = random_hex("redispass");
    let with_password =
        redis_url.replacen("redis://", &format!("redis://default:{redis_password}@"), 1);
    replace_once(&mut config, &redis_url, &with_password);
    secrets.add_text("a.example's Redis password", &redis_password);
    cluster.terminate(0).await;
    std::fs::write(&path, config).expect("the replica's configuration");
    cluster.restart(0).await;
    // Ready means the database answered; Redis is connected in the
    // background.
    let http = cluster.http_address(0);
    eventually(
        DELIVERY_TIMEOUT,
        "a.example reaching Redis",
        || async move {
            healthz(http)
                .await
                .contains(r#""redis":"up""#)
                .then_some(())
        },
    )
    .await;
}

/// The response to `GET /healthz` at `address` (status line, headers, body).
async fn healthz(address: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Ok(mut stream) = tokio::net::TcpStream::connect(address).await else {
        return String::new();
    };
    let request = "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response).await;
    response
}

/// Replaces the one occurrence of `from` in `text`.
fn replace_once(text: &mut String, from: &str, to: &str) {
    assert_eq!(text.matches(from).count(), 1, "{from} in:\n{text}");
    *text = text.replacen(from, to, 1);
}

/// `prefix` and 24 random hex digits.
fn random_hex(prefix: &str) -> String {
    let mut random = [0u8; 12];
    getrandom::fill(&mut random).expect("random bytes");
    format!("{prefix}{}", hex::encode(random))
}

/// `conclave-homeserver registration-token create`, as an operator runs it;
/// its log (stderr) is collected, its output is the token.
async fn registration_token(cluster: &TestCluster, logs: &mut Logs) -> String {
    let config = cluster.config_path(0);
    let mut command = tokio::process::Command::new(homeserver_binary());
    command
        .arg("--config")
        .arg(&config)
        .args(["registration-token", "create", "--uses", "10"])
        .env("RUST_LOG", "trace")
        .env("NO_COLOR", "1");
    let output = run_to_end(command, "conclave-homeserver registration-token create").await;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "registration-token create failed: {stderr}"
    );
    assert_json_lines("registration-token create", &stderr);
    logs.add(
        LogSource::Homeserver,
        format!("registration-token create for {}", config.display()),
        stderr,
    );
    let token = String::from_utf8(output.stdout).expect("the token is text");
    let token = token.trim();
    assert!(
        !token.is_empty(),
        "registration-token create printed nothing"
    );
    token.to_owned()
}

/// Runs `command` to its end (at most [`COMMAND_TIMEOUT`]), capturing its
/// output.
async fn run_to_end(mut command: tokio::process::Command, what: &str) -> Output {
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = command
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {what}: {error}"));
    tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {COMMAND_TIMEOUT:?}"))
        .unwrap_or_else(|error| panic!("cannot wait for {what}: {error}"))
}

/// Panics unless every line of a homeserver's log (but the harness's
/// markers) is one JSON object.
fn assert_json_lines(source: &str, text: &str) {
    for (number, line) in text.lines().enumerate() {
        if line.starts_with(HARNESS_MARKER) || line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(value) if value.is_object() => {}
            _ => panic!(
                "line {} of {source}'s log is not a JSON object: {}",
                number + 1,
                cut(line)
            ),
        }
    }
}

/// One device's CLI state directory and its account's password.
struct Device {
    state: PathBuf,
    password: String,
}

impl Device {
    /// A device with a state of its own under `states` and a fresh random
    /// password, which becomes a secret.
    fn new(states: &Path, name: &str, secret_name: &str, secrets: &mut Secrets) -> Device {
        Device {
            state: states.join(name),
            password: secrets.add_random_text(secret_name, "password"),
        }
    }
}

/// The `conclave` CLI, run at trace level, and the logs it wrote so far.
struct Cli {
    binary: PathBuf,
    /// `HOME` for every command, so nothing of the caller's is read.
    home: tempfile::TempDir,
    logs: Logs,
}

impl Cli {
    fn new(logs: Logs) -> Cli {
        Cli {
            binary: client_binary(),
            home: tempfile::tempdir().expect("a home directory for the CLI"),
            logs,
        }
    }

    /// Runs `conclave -vv --state STATE ARGS` as `device`, which must succeed;
    /// keeps its stderr (the log) and returns its stdout.
    async fn run(&mut self, device: &Device, args: &[&str]) -> String {
        let mut command = tokio::process::Command::new(&self.binary);
        command
            // `-v` takes its filter from RUST_LOG.
            .arg("-v")
            .env("RUST_LOG", "trace")
            .arg("--state")
            .arg(&device.state)
            .args(args)
            .env_remove("CONCLAVE_SERVER")
            .env_remove("CONCLAVE_STATE")
            .env("CONCLAVE_PASSWORD", &device.password)
            .env("HOME", self.home.path())
            .env("NO_COLOR", "1");
        let what = format!("conclave {args:?} ({})", device.state.display());
        let output = run_to_end(command, &what).await;
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{what} failed ({}); its stderr ends:\n{}",
            output.status,
            tail(&stderr)
        );
        self.logs.add(
            LogSource::CliOutput,
            format!("the output of {what}"),
            stdout.clone(),
        );
        self.logs.add(LogSource::Cli, what, stderr);
        stdout
    }

    /// `listen --count 1`: the next message `device` receives (its output).
    async fn listen_for_one(&mut self, device: &Device) -> String {
        self.run(
            device,
            &[
                "listen",
                "--count",
                "1",
                "--timeout",
                LISTEN_TIMEOUT_SECONDS,
            ],
        )
        .await
    }
}

/// Who wrote a log.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LogSource {
    Homeserver,
    Cli,
    /// What a command prints for its user (not a log): the messages it
    /// received may be there, no other secret.
    CliOutput,
}

/// Every log collected: (who, which process or command, the text).
#[derive(Default)]
struct Logs {
    entries: Vec<(LogSource, String, String)>,
}

impl Logs {
    fn add(&mut self, source: LogSource, name: String, text: String) {
        self.entries.push((source, name, text));
    }

    /// Panics unless both the homeservers and the CLI logged at trace level:
    /// a walkthrough logged at a higher level would prove less.
    fn assert_trace_level(&self) {
        let homeserver_trace = self.entries.iter().any(|(source, _, text)| {
            *source == LogSource::Homeserver && text.contains(r#""level":"TRACE""#)
        });
        assert!(homeserver_trace, "no TRACE line in the homeservers' logs");
        let cli_trace = self
            .entries
            .iter()
            .any(|(source, _, text)| *source == LogSource::Cli && text.contains("TRACE"));
        assert!(cli_trace, "no TRACE line in the CLI's logs");
    }
}

/// A secret and the forms it is looked for in.
struct Secret {
    name: String,
    forms: Vec<String>,
    /// A message text, which the CLI shows its user.
    message: bool,
}

#[derive(Default)]
struct Secrets {
    secrets: Vec<Secret>,
}

impl Secrets {
    fn add_text(&mut self, name: &str, text: &str) {
        assert!(text.len() >= 8, "{name} is too short to look for");
        self.secrets.push(Secret {
            name: name.to_owned(),
            forms: vec![text.to_owned()],
            message: false,
        });
    }

    /// A fresh text (`prefix` and random hex) that becomes a secret.
    fn add_random_text(&mut self, name: &str, prefix: &str) -> String {
        let text = random_hex(&format!("{prefix} "));
        self.add_text(name, &text);
        text
    }

    /// A fresh message text, which the CLI may show but nothing may log.
    fn add_message(&mut self, name: &str, prefix: &str) -> String {
        let text = self.add_random_text(name, prefix);
        self.secrets.last_mut().expect("just added").message = true;
        text
    }

    /// Key bytes, as hex, base64 and the start of a `Debug` list.
    fn add_bytes(&mut self, name: &str, bytes: &[u8]) {
        assert!(bytes.len() >= 16, "{name} is too short to look for");
        let debug_prefix = bytes[..12]
            .iter()
            .map(u8::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        self.secrets.push(Secret {
            name: name.to_owned(),
            forms: vec![
                hex::encode(bytes),
                hex::encode_upper(bytes),
                base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes),
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
                debug_prefix,
            ],
            message: false,
        });
    }

    /// A PEM private key: each line of its body, and its DER.
    fn add_private_key_pem(&mut self, name: &str, certificate: &IssuedCertificate) {
        let body: Vec<&str> = certificate
            .private_key_pem
            .lines()
            .filter(|line| !line.starts_with("-----") && !line.trim().is_empty())
            .collect();
        assert!(!body.is_empty(), "{name} has no PEM body");
        let der = base64::engine::general_purpose::STANDARD
            .decode(body.concat())
            .expect("a PEM body is base64");
        self.add_bytes(name, &der);
        // Lines long enough that a match is no accident (the last may be
        // short).
        let lines = body
            .iter()
            .filter(|line| line.len() >= 16)
            .map(|line| (*line).to_owned());
        self.secrets
            .last_mut()
            .expect("just added")
            .forms
            .extend(lines);
    }

    /// A device's access token and signature private key, from its CLI state.
    fn add_device_state(&mut self, device: &str, state: &Path) {
        let path = state.join(conclave_client::STATE_FILE_NAME);
        let connection = rusqlite::Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap_or_else(|error| panic!("cannot open {}: {error}", path.display()));
        let token: String = connection
            .query_row("SELECT access_token FROM client_session", [], |row| {
                row.get(0)
            })
            .unwrap_or_else(|error| panic!("no session in {}: {error}", path.display()));
        self.add_text(&format!("{device} access token"), &token);
        // openmls's storage keeps each key pair as JSON (the client's
        // codec), the private key a list of bytes; a state holds one device.
        let mut statement = connection
            .prepare("SELECT signature_key FROM openmls_signature_keys")
            .expect("openmls's signature key table");
        let key_pairs: Vec<Vec<u8>> = statement
            .query_map([], |row| row.get(0))
            .and_then(Iterator::collect)
            .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
        assert!(
            !key_pairs.is_empty(),
            "no signature key in {}",
            path.display()
        );
        for key_pair in key_pairs {
            let key_pair: serde_json::Value =
                serde_json::from_slice(&key_pair).expect("the signature key pair is JSON");
            let private: Vec<u8> = key_pair
                .get("private")
                .and_then(serde_json::Value::as_array)
                .expect("the key pair has a private key")
                .iter()
                .map(|byte| {
                    byte.as_u64()
                        .and_then(|byte| u8::try_from(byte).ok())
                        .expect("a byte")
                })
                .collect();
            self.add_bytes(&format!("{device} signature private key"), &private);
        }
    }

    /// `line` with every form of every secret replaced by its name.
    fn redact(&self, line: &str) -> String {
        let mut line = line.to_owned();
        for secret in &self.secrets {
            for form in &secret.forms {
                line = line.replace(form.as_str(), &format!("<{}>", secret.name));
            }
        }
        line
    }

    /// Panics, naming every secret found in a log and the line, unless no
    /// log holds any.
    fn assert_absent_from(&self, logs: &Logs) {
        let mut hits = Vec::new();
        for (source, log, text) in &logs.entries {
            for (number, line) in text.lines().enumerate() {
                for secret in &self.secrets {
                    if secret.message && *source == LogSource::CliOutput {
                        continue;
                    }
                    if secret.forms.iter().any(|form| line.contains(form.as_str())) {
                        hits.push(format!(
                            "{} in {log}, line {}: {}",
                            secret.name,
                            number + 1,
                            cut(&self.redact(line))
                        ));
                    }
                }
            }
        }
        assert!(
            hits.is_empty(),
            "{} log lines hold a secret:\n{}",
            hits.len(),
            hits.join("\n")
        );
    }
}

/// A log line short enough for a failure message.
fn cut(line: &str) -> String {
    const LONGEST: usize = 400;
    match line.char_indices().nth(LONGEST) {
        Some((index, _)) => format!("{} [...]", &line[..index]),
        None => line.to_owned(),
    }
}

/// The last lines of a command's stderr.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
