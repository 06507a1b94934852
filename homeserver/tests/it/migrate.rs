//! `conclave-homeserver migrate`, the real binary: it applies what is pending
//! and says what it applied; replicas (or `migrate` runs) started together
//! apply each migration once; a database migrated by a newer release is
//! refused, by `migrate` and by `run`, naming the migrations it does not know;
//! but a replica already running when a newer release migrates stays ready (a
//! rolling upgrade must not take every old replica out at once).

use conclave_test_support::{DatabaseChoice, TestDatabase, TestHomeserver};
use std::process::{Output, Stdio};
use tokio::process::Command;

on_both_databases!(
    migrate_applies_what_is_pending_and_says_so,
    a_database_of_a_newer_release_is_refused,
    a_running_replica_stays_ready_when_a_newer_release_migrates,
);

/// The migration of a release this binary does not know.
const UNKNOWN_MIGRATION: &str = "m9999_of_a_newer_release";

/// Runs the binary with `command` on `database_url`, configured by the
/// environment only, and waits for it to exit (`run` exits on a refusal).
async fn homeserver(command: &str, database_url: &str) -> Output {
    let free_address = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port")
            .to_string()
    };
    Command::new(env!("CARGO_BIN_EXE_conclave-homeserver"))
        .arg(command)
        .env_clear()
        .env("CONCLAVE_DATABASE__URL", database_url)
        .env("CONCLAVE_CLIENT_API__LISTEN", free_address())
        .env("CONCLAVE_HTTP__LISTEN", free_address())
        .env("CONCLAVE_LOG__FILTER", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("running conclave-homeserver")
}

/// The names after "applied " on stdout, in order.
fn applied(output: &Output) -> Vec<String> {
    assert!(
        output.status.success(),
        "migrate failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.strip_prefix("applied "))
        .map(str::to_owned)
        .collect()
}

async fn migrate_applies_what_is_pending_and_says_so(database: DatabaseChoice) {
    let database = TestDatabase::create(database).await;
    let first = applied(&homeserver("migrate", database.url()).await);
    assert!(
        first.len() >= 6 && first[0] == "m0001_create_accounts_and_key_packages",
        "{first:?}"
    );
    let again = homeserver("migrate", database.url()).await;
    assert_eq!(applied(&again), Vec::<String>::new());
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("up to date"),
        "{again:?}"
    );
}

async fn a_database_of_a_newer_release_is_refused(database: DatabaseChoice) {
    let database = TestDatabase::create(database).await;
    applied(&homeserver("migrate", database.url()).await);
    database
        .execute(&format!(
            "INSERT INTO seaql_migrations (version, applied_at) VALUES ('{UNKNOWN_MIGRATION}', 0)"
        ))
        .await
        .expect("recording a migration of a newer release");
    for command in ["migrate", "run"] {
        let output = homeserver(command, database.url()).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{command} went ahead: {stderr}");
        assert!(
            stderr.contains(UNKNOWN_MIGRATION)
                && stderr.contains("newer than this conclave-homeserver")
                && stderr.contains("upgrade conclave-homeserver"),
            "{command}: {stderr}"
        );
    }
}

async fn a_running_replica_stays_ready_when_a_newer_release_migrates(database: DatabaseChoice) {
    let database = TestDatabase::create(database).await;
    let mut config = conclave_homeserver::config::Config::default();
    config.database.url = database.url().to_owned();
    config.client_api.listen = "127.0.0.1:0".parse().unwrap();
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    let server = TestHomeserver::start_on(
        config,
        database.share(),
        std::sync::Arc::new(conclave_homeserver::SystemClock),
    )
    .await;
    database
        .execute(&format!(
            "INSERT INTO seaql_migrations (version, applied_at) VALUES ('{UNKNOWN_MIGRATION}', 0)"
        ))
        .await
        .expect("recording a migration of a newer release");
    let readyz = http_get(server.http_address(), "/readyz").await;
    assert!(
        readyz.starts_with("HTTP/1.1 200") && readyz.contains("newer release"),
        "{readyz}"
    );
    server.stop().await;
}

/// A plain HTTP/1.1 GET: the status line and the body.
async fn http_get(address: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

/// Two `migrate` runs (as two replicas starting) on one fresh PostgreSQL
/// database at once: both succeed, and together they applied each migration
/// once. (SQLite serves one process; nothing to race there.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrate_runs_on_postgres_apply_each_migration_once() {
    crate::harness::within_timeout(async {
        let database = TestDatabase::create(DatabaseChoice::Postgres).await;
        let (first, second) = tokio::join!(
            homeserver("migrate", database.url()),
            homeserver("migrate", database.url())
        );
        let mut all = applied(&first);
        all.extend(applied(&second));
        let mut once = all.clone();
        once.sort();
        once.dedup();
        assert_eq!(all.len(), once.len(), "applied twice: {all:?}");
        assert_eq!(
            applied(&homeserver("migrate", database.url()).await),
            Vec::<String>::new(),
            "the two runs left something pending"
        );
        assert!(all.len() >= 6, "{all:?}");
    })
    .await;
}
