//! The admin web console (`/admin` on the HTTP listener) over the real admin
//! API and store: logging in as an account granted the admin role, the
//! overview, the audit entry of the login with the browser's address, and
//! `/admin` absent when `[admin] enabled` is false.

use crate::harness::{start_with_api, within_timeout};
use conclave_test_support::{DatabaseChoice, PASSWORD, TestHomeserver, TestOptions};
use std::net::SocketAddr;
use std::process::Stdio;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::Command;

on_both_databases!(an_administrator_logs_in_and_sees_the_overview);

/// One HTTP/1.1 exchange with the listener, as a browser would send it.
struct Exchange {
    status: u16,
    head: String,
    body: String,
}

impl Exchange {
    /// The value of the first header named `name` (case-insensitive).
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

async fn exchange(
    address: SocketAddr,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: Option<&str>,
) -> Exchange {
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(cookie) = cookie {
        request.push_str(&format!("Cookie: conclave_admin={cookie}\r\n"));
    }
    let body = form.unwrap_or_default();
    if form.is_some() {
        request.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body);
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect to the HTTP listener");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("receive");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .expect("a response has a head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    Exchange {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// `conclave-homeserver admin grant USER` on the server's database, as the
/// operator does on the host.
async fn grant_admin(server: &TestHomeserver, username: &str) {
    let config = server.config();
    let output = Command::new(env!("CARGO_BIN_EXE_conclave-homeserver"))
        .args(["admin", "grant", username])
        .env_clear()
        .env("CONCLAVE_DOMAIN", &config.domain)
        .env("CONCLAVE_DATABASE__URL", &config.database.url)
        .env("CONCLAVE_LOG__FILTER", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("running conclave-homeserver admin grant");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn login_form(username: &str) -> String {
    format!(
        "username={username}&password={}",
        PASSWORD.replace(' ', "+")
    )
}

async fn an_administrator_logs_in_and_sees_the_overview(database: DatabaseChoice) {
    let (server, api) = start_with_api(database).await;
    api.register("root").await;
    api.register("alice").await;
    grant_admin(&server, "root").await;
    let http = server.http_address();

    // The address as typed, with a slash, leads to the console.
    let with_slash = exchange(http, "GET", "/admin/", None, None).await;
    assert_eq!(with_slash.status, 308);
    assert_eq!(with_slash.header("location"), Some("/admin"));
    let console = exchange(http, "GET", "/admin", None, None).await;
    assert_eq!(console.status, 303);
    assert_eq!(console.header("location"), Some("/admin/login"));

    let login_page = exchange(http, "GET", "/admin/login", None, None).await;
    assert_eq!(login_page.status, 200);
    assert!(login_page.body.contains(r#"id="login-username""#));

    let not_admin = exchange(
        http,
        "POST",
        "/admin/login",
        None,
        Some(&login_form("alice")),
    )
    .await;
    assert_eq!(not_admin.status, 403);
    assert!(
        not_admin
            .body
            .contains("this account is not an administrator")
    );

    let unauthenticated = exchange(http, "GET", "/admin", None, None).await;
    assert_eq!(unauthenticated.status, 303);
    assert_eq!(unauthenticated.header("location"), Some("/admin/login"));

    let login = exchange(
        http,
        "POST",
        "/admin/login",
        None,
        Some(&login_form("root")),
    )
    .await;
    assert_eq!(login.status, 303, "{}", login.body);
    assert_eq!(login.header("location"), Some("/admin"));
    let cookie = login.header("set-cookie").expect("the session cookie");
    let token = cookie
        .strip_prefix("conclave_admin=")
        .and_then(|rest| rest.split(';').next())
        .expect("the cookie holds the session token");
    assert!(!token.is_empty());

    let overview = exchange(http, "GET", "/admin", Some(token), None).await;
    assert_eq!(overview.status, 200, "{}", overview.body);
    assert!(
        overview.body.contains("Overview of localhost"),
        "{}",
        overview.body
    );
    assert!(
        overview
            .body
            .contains(r#"<dd id="count-active-users">2</dd>"#),
        "{}",
        overview.body
    );

    // The refusal and the login are audited, from the browser's address.
    let audit = exchange(
        http,
        "GET",
        "/admin/audit?action=session.",
        Some(token),
        None,
    )
    .await;
    assert_eq!(audit.status, 200, "{}", audit.body);
    assert!(audit.body.contains("session.login"), "{}", audit.body);
    assert!(
        audit
            .body
            .contains(r#"<td data-label="From">127.0.0.1</td>"#),
        "{}",
        audit.body
    );

    let stale = exchange(http, "GET", "/admin/users", Some("not-a-session"), None).await;
    assert_eq!(stale.status, 303);
    assert_eq!(stale.header("location"), Some("/admin/login?expired=1"));
}

#[tokio::test]
async fn the_console_is_not_mounted_when_the_admin_api_is_off() {
    within_timeout(async {
        let options = TestOptions::on(DatabaseChoice::Sqlite).configure(|config| {
            config.admin.enabled = false;
        });
        let server = TestHomeserver::start_with(options).await;
        let login = exchange(server.http_address(), "GET", "/admin/login", None, None).await;
        assert_eq!(login.status, 404);
        let health = exchange(server.http_address(), "GET", "/healthz", None, None).await;
        assert_eq!(health.status, 200);
    })
    .await;
}
