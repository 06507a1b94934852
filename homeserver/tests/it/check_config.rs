//! `conclave-homeserver check-config`, the real binary: a usable configuration
//! passes without binding its ports or creating its database's directory;
//! each unusable file is reported at once, and a start refuses the same
//! configuration with the same message; `--connect` reports the schema's
//! state and Redis, and tells a service that is down (exit 1) from a bad
//! configuration (exit 2).

use conclave_federation::dev_certs::{DevCertificateAuthority, VALIDITY_DAYS};
use conclave_test_support::{DatabaseChoice, TestDatabase, TestHomeserver, TestPki, TestRedis};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::process::Command;

const DAY: i64 = 24 * 3600;

/// What one run of the binary said.
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn of(output: Output) -> Outcome {
        Outcome {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// The report's own lines only: no log line, no colour, on either stream.
    fn assert_only_the_report(&self) {
        for line in self.stdout.lines() {
            assert!(
                line.starts_with("ok   ")
                    || line.starts_with("warn ")
                    || line.starts_with("the configuration can start the server"),
                "not a report line on stdout: {line:?}\n{}",
                self.stdout
            );
        }
        for line in self.stderr.lines() {
            assert!(
                line.starts_with("error ") || line.starts_with("the configuration "),
                "not a report line on stderr: {line:?}\n{}",
                self.stderr
            );
        }
        assert!(!self.stdout.contains('\x1b') && !self.stderr.contains('\x1b'));
    }
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs the binary with `arguments` on the configuration file `config`, with
/// no other environment, and waits for it to exit.
async fn homeserver(config: &Path, arguments: &[&str]) -> Outcome {
    let output = Command::new(env!("CARGO_BIN_EXE_conclave-homeserver"))
        .arg("--config")
        .arg(config)
        .args(arguments)
        .env_clear()
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("running conclave-homeserver");
    Outcome::of(output)
}

fn now_unix_seconds() -> i64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    i64::try_from(since_epoch.as_secs()).unwrap()
}

/// A certificate and key for `domain` from a CA made `made_seconds_ago` (valid
/// for [`VALIDITY_DAYS`] from then), written into `directory`.
fn certificate_made_ago(
    directory: &Path,
    domain: &str,
    made_seconds_ago: i64,
) -> (PathBuf, PathBuf) {
    let authority =
        DevCertificateAuthority::generate(now_unix_seconds() - made_seconds_ago).unwrap();
    let issued = authority.issue(&domain.parse().unwrap(), &[]).unwrap();
    let certificate = directory.join(format!("{domain}-{made_seconds_ago}.pem"));
    let private_key = directory.join(format!("{domain}-{made_seconds_ago}.key.pem"));
    std::fs::write(&certificate, issued.certificate_pem).unwrap();
    std::fs::write(&private_key, issued.private_key_pem).unwrap();
    (certificate, private_key)
}

/// A loopback address whose port this test holds, so nobody else (the
/// command under test included) can bind it.
fn held_address() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
    let address = listener.local_addr().unwrap();
    (listener, address)
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    held_address().1.port()
}

/// The configuration of a.example: client TLS and federation from `pki`
/// (or the files given), listeners at `addresses`, and `extra` TOML.
struct Setup {
    directory: tempfile::TempDir,
    pki: TestPki,
}

impl Setup {
    fn new() -> Setup {
        Setup {
            directory: tempfile::tempdir().unwrap(),
            pki: TestPki::new(),
        }
    }

    fn write_config(&self, name: &str, text: &str) -> PathBuf {
        let path = self.directory.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// TOML for a.example with client TLS and federation on these files.
    fn config_text(
        &self,
        federation_files: (&Path, &Path),
        database_url: &str,
        addresses: [SocketAddr; 3],
    ) -> String {
        let client = self.pki.issue("a.example");
        let [client_api, http, federation] = addresses;
        format!(
            "domain = 'a.example'\n\
             [database]\nurl = '{database_url}'\n\
             [client_api]\nlisten = '{client_api}'\ntls_certificate = '{}'\ntls_private_key = '{}'\n\
             [http]\nlisten = '{http}'\n\
             [federation]\nlisten = '{federation}'\ncertificate = '{}'\nprivate_key = '{}'\ntrust_roots = '{}'\n\
             [federation.peers.'b.example']\nendpoint = 'https://127.0.0.2:7401'\n",
            client.certificate.display(),
            client.private_key.display(),
            federation_files.0.display(),
            federation_files.1.display(),
            self.pki.trust_roots().display(),
        )
    }
}

#[tokio::test]
async fn a_usable_configuration_passes_binds_nothing_and_creates_nothing() {
    let setup = Setup::new();
    let federation = setup.pki.issue("a.example");
    let listeners = [held_address(), held_address(), held_address()];
    let addresses = listeners.each_ref().map(|(_, address)| *address);
    let data_directory = setup.directory.path().join("data");
    let database_url = format!(
        "sqlite://{}/conclave.sqlite?mode=rwc",
        data_directory.display()
    );
    let text = setup.config_text(
        (&federation.certificate, &federation.private_key),
        &database_url,
        addresses,
    );
    let config = setup.write_config("a.toml", &text);

    for arguments in [&["check-config"][..], &["check-config", "--connect"][..]] {
        // The configured ports are held by this test all along: binding any
        // of them would fail.
        let outcome = homeserver(&config, arguments).await;
        assert_eq!(outcome.code, Some(0), "{arguments:?}: {outcome:?}");
        outcome.assert_only_the_report();
        assert!(outcome.stderr.is_empty(), "{outcome:?}");
        let lines: Vec<&str> = outcome.stdout.lines().collect();
        let expected_starts = [
            "ok   configuration: ",
            "ok   client_api.tls_certificate: ",
            "ok   client_api.tls_private_key: ",
            "ok   federation.certificate: ",
            "ok   federation.private_key: ",
            "ok   federation.trust_roots: ",
            "ok   federation.peers: b.example at https://127.0.0.2:7401",
            "ok   database.url: sqlite at ",
        ];
        for (line, start) in lines.iter().zip(expected_starts) {
            assert!(
                line.starts_with(start),
                "{line:?} is not {start:?}: {outcome:?}"
            );
        }
        assert!(
            lines[3]
                .contains("names [\"a.example\"], valid for the domain a.example, valid until "),
            "{outcome:?}"
        );
        assert!(lines[5].ends_with(": 1 CA certificate(s)"), "{outcome:?}");
        if arguments.contains(&"--connect") {
            assert!(
                lines[8].starts_with("ok   database: sqlite at ")
                    && lines[8].ends_with("the file does not exist yet; a start creates it and applies every migration"),
                "{outcome:?}"
            );
        }
        assert!(
            lines
                .last()
                .unwrap()
                .starts_with("the configuration can start the server"),
            "{outcome:?}"
        );
        assert!(
            !data_directory.exists(),
            "{arguments:?} created {}",
            data_directory.display()
        );
    }

    // A start accepts it too (on ports of its own, the test's being held).
    drop(listeners);
    let database = TestDatabase::create(DatabaseChoice::Sqlite).await;
    let mut config = conclave_homeserver::config::Config::parse(Some(&config)).unwrap();
    config.database.url = database.url().to_owned();
    config.client_api.listen = "127.0.0.1:0".parse().unwrap();
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.federation.listen = "127.0.0.1:0".parse().unwrap();
    let server =
        TestHomeserver::start_on(config, database, Arc::new(conclave_homeserver::SystemClock))
            .await;
    server.stop().await;
}

/// Each case: the federation files, and the message both `check-config` and
/// a start give for them.
#[tokio::test]
async fn what_check_config_refuses_a_start_refuses_with_the_same_message() {
    let setup = Setup::new();
    let directory = setup.directory.path();
    let usable = setup.pki.issue("a.example");
    let other = setup.pki.issue("a.example");
    let (expired, expired_key) =
        certificate_made_ago(directory, "a.example", (VALIDITY_DAYS + 30) * DAY);
    let (wrong_domain, wrong_domain_key) = certificate_made_ago(directory, "b.example", DAY);
    let missing = directory.join("missing.pem");
    let cases: [(&str, &Path, &Path, String); 4] = [
        (
            "expired",
            &expired,
            &expired_key,
            format!(
                "federation.certificate: {}: the certificate expired at ",
                expired.display()
            ),
        ),
        (
            "wrong domain",
            &wrong_domain,
            &wrong_domain_key,
            format!(
                "federation.certificate: {}: the certificate is valid for [\"b.example\"], not for this homeserver's domain a.example",
                wrong_domain.display()
            ),
        ),
        (
            "another certificate's key",
            &usable.certificate,
            &other.private_key,
            format!(
                "federation.private_key: {}: not usable with the certificate {}",
                other.private_key.display(),
                usable.certificate.display()
            ),
        ),
        (
            "missing file",
            &missing,
            &usable.private_key,
            format!(
                "federation.certificate: cannot read a PEM certificate from {}",
                missing.display()
            ),
        ),
    ];
    for (case, certificate, private_key, message) in cases {
        let addresses = [held_address().1, held_address().1, held_address().1];
        let text = setup.config_text((certificate, private_key), "sqlite::memory:", addresses);
        let config = setup.write_config(&format!("{}.toml", case.replace(' ', "-")), &text);
        let checked = homeserver(&config, &["check-config"]).await;
        assert_eq!(checked.code, Some(2), "{case}: {checked:?}");
        checked.assert_only_the_report();
        assert!(
            checked
                .stderr
                .lines()
                .any(|line| line.starts_with(&format!("error {message}"))),
            "{case}: {checked:?}"
        );
        assert!(
            checked
                .stderr
                .lines()
                .last()
                .unwrap()
                .starts_with("the configuration cannot start the server: "),
            "{case}: {checked:?}"
        );
        let started = homeserver(&config, &["run"]).await;
        assert_eq!(started.code, Some(2), "{case}: {started:?}");
        assert!(
            started.stderr.contains(&format!(
                "conclave-homeserver: invalid configuration: {message}"
            )),
            "{case}: {started:?}"
        );
    }
}

/// Several independent problems are all reported; a certificate near its
/// end is a warning only.
#[tokio::test]
async fn every_problem_is_reported_at_once_and_expiry_soon_is_a_warning() {
    let setup = Setup::new();
    let directory = setup.directory.path();
    let (expiring, expiring_key) = certificate_made_ago(
        directory,
        "a.example",
        // Four and a half days left: "4 day(s)" however long the test takes.
        (VALIDITY_DAYS - 5) * DAY + DAY / 2,
    );
    let addresses = [held_address().1, held_address().1, held_address().1];
    let text = setup.config_text((&expiring, &expiring_key), "sqlite::memory:", addresses);
    let config = setup.write_config("expiring.toml", &text);
    let outcome = homeserver(&config, &["check-config"]).await;
    assert_eq!(outcome.code, Some(0), "{outcome:?}");
    outcome.assert_only_the_report();
    assert!(
        outcome.stdout.lines().any(|line| line.starts_with(&format!(
            "warn federation.certificate: {}: the certificate expires at ",
            expiring.display()
        )) && line.ends_with("in 4 day(s): renew it")),
        "{outcome:?}"
    );
    assert!(outcome.stdout.contains("1 warning(s)"), "{outcome:?}");

    let broken = text
        .replace(
            "domain = 'a.example'",
            "domain = 'a.example'\n[shutdown]\ndeadline_seconds = 0",
        )
        .replace(
            &setup.pki.trust_roots().display().to_string(),
            &expiring_key.display().to_string(),
        )
        .replace("https://127.0.0.2:7401", "http://127.0.0.2:7401");
    let config = setup.write_config("broken.toml", &broken);
    let outcome = homeserver(&config, &["check-config"]).await;
    assert_eq!(outcome.code, Some(2), "{outcome:?}");
    outcome.assert_only_the_report();
    let errors: Vec<&str> = outcome
        .stderr
        .lines()
        .filter(|line| line.starts_with("error "))
        .collect();
    let expected = [
        "error federation.peers: peer \"b.example\": endpoint \"http://127.0.0.2:7401\" must be an https:// URL",
        "error shutdown.deadline_seconds: must be between 1 and 600",
        "error federation.trust_roots: ",
    ];
    assert_eq!(errors.len(), expected.len(), "{outcome:?}");
    for (line, start) in errors.iter().zip(expected) {
        assert!(
            line.starts_with(start),
            "{line:?} is not {start:?}: {outcome:?}"
        );
    }
    // What still passed is still reported.
    assert!(
        outcome.stdout.contains("ok   federation.private_key: "),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn connect_reports_the_schema_and_redis() {
    let setup = Setup::new();
    let database = TestDatabase::create(DatabaseChoice::Postgres).await;
    let redis = TestRedis::start().await;
    let config = setup.write_config(
        "cluster.toml",
        &format!(
            "[database]\nurl = '{}'\n[redis]\nurl = '{}'\n",
            database.url(),
            redis.url()
        ),
    );
    let line = |outcome: &Outcome, start: &str| {
        outcome
            .stdout
            .lines()
            .chain(outcome.stderr.lines())
            .find(|line| line.starts_with(start))
            .unwrap_or_else(|| panic!("no line {start:?}: {outcome:?}"))
            .to_owned()
    };

    let fresh = homeserver(&config, &["check-config", "--connect"]).await;
    assert_eq!(fresh.code, Some(0), "{fresh:?}");
    fresh.assert_only_the_report();
    let database_line = line(
        &fresh,
        "ok   database: connected to postgres at 127.0.0.1:5432",
    );
    assert!(
        database_line.contains(" migration(s) pending, which a start or `conclave-homeserver migrate` applies: m0001_create_accounts_and_key_packages, "),
        "{fresh:?}"
    );
    line(
        &fresh,
        &format!(
            "ok   redis: connected to redis at {}, database 0; PING answered PONG",
            redis.address()
        ),
    );

    let migrated = homeserver(&config, &["migrate"]).await;
    assert_eq!(migrated.code, Some(0), "{migrated:?}");
    let current = homeserver(&config, &["check-config", "--connect"]).await;
    assert_eq!(current.code, Some(0), "{current:?}");
    assert!(
        line(&current, "ok   database: ").ends_with("the schema is up to date"),
        "{current:?}"
    );

    database
        .execute("INSERT INTO seaql_migrations (version, applied_at) VALUES ('m9999_of_a_newer_release', 0)")
        .await
        .expect("recording a migration of a newer release");
    let newer = homeserver(&config, &["check-config", "--connect"]).await;
    assert_eq!(newer.code, Some(1), "{newer:?}");
    newer.assert_only_the_report();
    let error = line(&newer, "error database: postgres at 127.0.0.1:5432");
    assert!(
        error.contains("the database schema is newer than this conclave-homeserver")
            && error.contains("m9999_of_a_newer_release"),
        "{newer:?}"
    );
    assert!(
        newer.stderr.lines().last().unwrap()
            == "the configuration is valid, but 1 service check(s) failed",
        "{newer:?}"
    );
    // Without --connect nothing is reached, and the configuration passes.
    let offline = homeserver(&config, &["check-config"]).await;
    assert_eq!(offline.code, Some(0), "{offline:?}");
}

#[tokio::test]
async fn unreachable_services_exit_1_and_a_bad_configuration_still_2() {
    let setup = Setup::new();
    let database_port = closed_port();
    let redis_port = closed_port();
    let text = format!(
        "[database]\nurl = 'postgres://conclave:hunter2@127.0.0.1:{database_port}/conclave'\n\
         [redis]\nurl = 'redis://:hunter2@127.0.0.1:{redis_port}'\n"
    );
    let config = setup.write_config("down.toml", &text);
    let outcome = homeserver(&config, &["check-config", "--connect"]).await;
    assert_eq!(outcome.code, Some(1), "{outcome:?}");
    outcome.assert_only_the_report();
    assert!(
        outcome.stderr.contains(&format!(
            "error database: cannot connect to postgres at 127.0.0.1:{database_port}, database conclave: "
        )) && outcome.stderr.contains(&format!(
            "error redis: cannot reach redis at 127.0.0.1:{redis_port}, database 0: "
        )),
        "{outcome:?}"
    );
    assert!(
        !outcome.stdout.contains("hunter2") && !outcome.stderr.contains("hunter2"),
        "{outcome:?}"
    );

    let config = setup.write_config(
        "down-and-bad.toml",
        &format!("{text}[groups]\nmax_members = 1\n"),
    );
    let outcome = homeserver(&config, &["check-config", "--connect"]).await;
    assert_eq!(outcome.code, Some(2), "{outcome:?}");
    assert!(
        outcome.stderr.contains("error groups.max_members: ")
            && outcome.stderr.contains("error redis: cannot reach"),
        "{outcome:?}"
    );
}

/// An existing SQLite database is read, not written: no file appears beside
/// it (not even SQLite's write-ahead log files).
#[tokio::test]
async fn connect_reads_a_sqlite_database_without_creating_a_file() {
    let setup = Setup::new();
    let data_directory = setup.directory.path().join("data");
    let config = setup.write_config(
        "sqlite.toml",
        &format!(
            "[database]\nurl = 'sqlite://{}/conclave.sqlite?mode=rwc'\n",
            data_directory.display()
        ),
    );
    let migrated = homeserver(&config, &["migrate"]).await;
    assert_eq!(migrated.code, Some(0), "{migrated:?}");
    let files = || {
        let mut names: Vec<String> = std::fs::read_dir(&data_directory)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = files();
    let outcome = homeserver(&config, &["check-config", "--connect"]).await;
    assert_eq!(outcome.code, Some(0), "{outcome:?}");
    outcome.assert_only_the_report();
    assert!(
        outcome.stdout.lines().any(|line| line
            .starts_with("ok   database: connected to sqlite at ")
            && line.ends_with("; the schema is up to date")),
        "{outcome:?}"
    );
    assert_eq!(files(), before);
}
