//! The admin console (`/admin` on a.example's HTTP port) in a headless
//! Chromium, as an administrator uses it, on a two-domain network whose
//! homeservers run in this process on a real database: logging in, finding a
//! user, revoking a device (whose next `conclave` CLI call is refused),
//! creating and revoking a registration token, inspecting the group of a real
//! three-member chat, running the federation doctor against a healthy peer and
//! against one whose certificate names another domain, the overview on a
//! 375 px phone screen (no sideways scrolling), and logging out (after which
//! the old session cookie opens nothing). Each page is saved as a screenshot
//! under `<target>/test-artifacts/admin-console/<database>/`.
//!
//! The admin account gets its role from the real
//! `conclave-homeserver admin grant`, as an operator gives it.

use std::path::Path;
use std::process::{Output, Stdio};

use conclave_homeserver::config::FederationPeerConfig;
use conclave_test_support::cluster::{client_binary, homeserver_binary};
use conclave_test_support::{DatabaseChoice, PASSWORD, TestBrowser, TestNetwork};
use serde_json::Value;

use crate::harness::{User, group_of};

on_both_databases!(the_console_in_a_browser);

/// The domain whose console the test drives.
const DOMAIN: &str = "a.example";

/// The name under which a.example knows a peer at b.example's endpoint: its
/// certificate names b.example, so the doctor's name check must fail.
const MISDIRECTED_PEER: &str = "c.example";

async fn the_console_in_a_browser(database: DatabaseChoice) {
    let network = TestNetwork::builder(&[DOMAIN, "b.example"], database)
        .configure_domain(DOMAIN, |config| {
            let endpoint = config.federation.peers["b.example"].endpoint.clone();
            config.federation.peers.insert(
                MISDIRECTED_PEER.to_owned(),
                FederationPeerConfig {
                    endpoint,
                    pinned_sha256: None,
                },
            );
        })
        .start()
        .await;
    let console = format!("http://{}/admin", network.server(DOMAIN).http_address());

    // The administrator: an ordinary account given the role on the host.
    let _root = User::register(&network, "root@a.example").await;
    grant_admin(&network, "root").await;

    // A real three-member chat hosted here, with a member on b.example.
    let [alice, bob, carol] = User::register_all(
        &network,
        ["alice@a.example", "bob@b.example", "carol@a.example"],
    )
    .await;
    let group_id = group_of(&alice, "the console's group", &[&bob, &carol]).await;
    for user in [&alice, &bob, &carol] {
        user.send(&group_id, &format!("hello from {}", user.user_id()))
            .await;
    }

    // dave's only device, enrolled with the CLI.
    let cli = Cli::new();
    cli.succeeds(&["--server", &network.client_url(DOMAIN), "register", "dave"])
        .await;
    let whoami: Value = serde_json::from_str(&cli.succeeds(&["--json", "whoami"]).await)
        .expect("whoami --json prints one JSON object");
    let dave_device = whoami["device_id"]
        .as_str()
        .expect("whoami names the device")
        .to_owned();

    let browser = TestBrowser::launch(format!("admin-console/{}", database_name(database))).await;

    // Logging in: any console page leads to the login form first.
    browser.goto(&console).await;
    browser.wait_for("#login-username").await;
    browser.screenshot("01-login").await;
    browser.fill("#login-username", "root").await;
    browser.fill("#login-password", PASSWORD).await;
    browser.click_for_new_page("#login-submit").await;
    browser.wait_for("#counts").await;
    assert_eq!(browser.count("#login-username").await, 0, "logged in");
    browser.screenshot("02-overview").await;

    // Finding a user: the search shows dave and nobody else.
    browser.goto(&format!("{console}/users")).await;
    browser.fill("#user-search", "dav").await;
    browser
        .click_for_new_page("form[role=search] button[type=submit]")
        .await;
    browser.wait_for("[data-user-id='dave@a.example']").await;
    assert_eq!(
        browser.count("[data-user-id]").await,
        1,
        "only dave matches"
    );
    browser.screenshot("03-users-search").await;
    browser
        .click_for_new_page("[data-user-id='dave@a.example'] a")
        .await;

    // Revoking dave's device: gone from his page, and the CLI on it refused.
    let device_row = format!("[data-device-id='{dave_device}']");
    browser.wait_for(&device_row).await;
    browser.screenshot("04-user").await;
    browser
        .click_for_new_page(&format!("{device_row} button.revoke"))
        .await;
    browser.wait_for("#no-devices").await;
    assert_eq!(browser.count(&device_row).await, 0);
    browser.screenshot("05-device-revoked").await;
    let refused = cli.run(&["devices"]).await;
    assert!(
        !refused.status.success(),
        "a revoked device's CLI call succeeded: {}",
        String::from_utf8_lossy(&refused.stdout)
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.starts_with("error:"), "{stderr}");

    // A registration token: created (its secret shown once), then revoked.
    browser.goto(&format!("{console}/tokens")).await;
    browser.fill("#token-create-uses", "5").await;
    browser.click_for_new_page("#token-create-submit").await;
    let secret = browser.text("#token-secret").await;
    assert!(secret.trim().len() >= 16, "a token's secret: {secret:?}");
    let token_id: String = browser
        .evaluate("document.querySelector('#token-secret').dataset.createdTokenId")
        .await;
    let token_row = format!("[data-token-id='{token_id}']");
    assert!(
        browser.text(&token_row).await.contains("5 left"),
        "the new token is listed, unused"
    );
    browser.screenshot("06-token-created").await;
    browser
        .click_for_new_page(&format!("{token_row} button.revoke"))
        .await;
    assert_eq!(
        browser.count(&token_row).await,
        0,
        "a revoked token is not listed as usable"
    );
    assert_eq!(
        browser.count("#token-secret").await,
        0,
        "the secret shown once"
    );
    browser.click_for_new_page("#tokens-all").await;
    let revoked = browser.text(&token_row).await;
    assert!(revoked.contains("revoked"), "{revoked}");
    assert_eq!(
        browser.count(&format!("{token_row} button.revoke")).await,
        0
    );
    browser.screenshot("07-token-revoked").await;

    // The group inspector: the chat's epoch and its three member devices.
    browser.goto(&format!("{console}/groups")).await;
    browser.fill("#group-search", "carol@a.example").await;
    browser
        .click_for_new_page("form[role=search] button[type=submit]")
        .await;
    browser
        .click_for_new_page(&format!("[data-group-id='{group_id}'] a"))
        .await;
    assert_eq!(
        browser.text("#group-epoch").await.trim(),
        alice
            .epoch(&group_id)
            .expect("alice is a member")
            .to_string()
    );
    assert_eq!(browser.text("#group-member-count").await.trim(), "3");
    browser.screenshot("08-group").await;

    // The federation doctor: every check passes against b.example...
    browser.goto(&format!("{console}/federation")).await;
    browser.click("[data-peer='b.example'] button.doctor").await;
    browser
        .wait_for_text("#doctor-report-heading", "b.example")
        .await;
    let checks = browser.count("#doctor-report [data-check]").await;
    assert!(checks > 0, "the doctor ran checks");
    let passed = browser
        .count("#doctor-report [data-check][data-outcome='pass']")
        .await;
    let report = browser.text("#doctor-report").await;
    assert_eq!(passed, checks, "every check passes: {report}");
    browser.screenshot("09-doctor-healthy").await;

    // ... and the certificate name check fails, saying why, against a peer
    // whose certificate names another domain.
    browser
        .click(&format!("[data-peer='{MISDIRECTED_PEER}'] button.doctor"))
        .await;
    browser
        .wait_for_text("#doctor-report-heading", MISDIRECTED_PEER)
        .await;
    let name_check = browser
        .text("#doctor-report [data-check='certificate_name'][data-outcome='fail']")
        .await;
    assert!(
        name_check.contains(&format!("names b.example, not {MISDIRECTED_PEER}")),
        "{name_check}"
    );
    browser.screenshot("10-doctor-wrong-name").await;

    // The overview on a phone: nothing wider than the screen.
    browser.emulate_phone().await;
    browser.goto(&console).await;
    browser.wait_for("#counts").await;
    let width: u32 = browser
        .evaluate("document.scrollingElement.scrollWidth")
        .await;
    browser.screenshot("11-overview-phone").await;
    assert!(
        width <= 375,
        "the overview scrolls sideways on a 375 px screen ({width} px wide)"
    );
    browser.emulate_desktop().await;

    // Logging out ends the session: its cookie opens nothing afterwards.
    let session = browser
        .cookie("conclave_admin")
        .await
        .expect("the session cookie");
    browser.click_for_new_page("#logout").await;
    browser.wait_for("#login-username").await;
    assert_eq!(
        browser
            .cookie("conclave_admin")
            .await
            .filter(|value| !value.is_empty()),
        None
    );
    browser.screenshot("12-logged-out").await;
    browser
        .set_cookie("conclave_admin", &session, "/admin")
        .await;
    browser.goto(&console).await;
    browser.wait_for("#login-username").await;
    assert_eq!(
        browser.count("#counts").await,
        0,
        "the old cookie opens nothing"
    );
    browser.screenshot("13-old-cookie").await;

    // No page broke a Content Security Policy rule, failed to load a
    // resource or threw.
    assert_eq!(browser.page_errors(), Vec::<String>::new());

    browser.close().await;
    network.shutdown().await;
}

fn database_name(database: DatabaseChoice) -> &'static str {
    match database {
        DatabaseChoice::Sqlite => "sqlite",
        DatabaseChoice::Postgres => "postgres",
    }
}

/// `conclave-homeserver admin grant USER` on the host of `DOMAIN`'s
/// homeserver (its database, while it runs), as an operator gives the role.
async fn grant_admin(network: &TestNetwork, user: &str) {
    let output = tokio::process::Command::new(homeserver_binary())
        .args(["admin", "grant", user])
        .env_clear()
        .env("CONCLAVE_DOMAIN", DOMAIN)
        .env(
            "CONCLAVE_DATABASE__URL",
            &network.config(DOMAIN).database.url,
        )
        .env("CONCLAVE_LOG__FILTER", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("running conclave-homeserver admin grant");
    assert!(
        output.status.success(),
        "conclave-homeserver admin grant {user} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The `conclave` CLI on a device state of its own, with the test password
/// and a home directory of its own.
struct Cli {
    state: tempfile::TempDir,
    home: tempfile::TempDir,
}

impl Cli {
    fn new() -> Cli {
        Cli {
            state: tempfile::tempdir().expect("a directory for the CLI's state"),
            home: tempfile::tempdir().expect("a home directory for the CLI"),
        }
    }

    fn state(&self) -> &Path {
        self.state.path()
    }

    /// Runs `conclave --state STATE ARGS`.
    async fn run(&self, args: &[&str]) -> Output {
        tokio::process::Command::new(client_binary())
            .arg("--state")
            .arg(self.state())
            .args(args)
            .env_remove("CONCLAVE_SERVER")
            .env_remove("CONCLAVE_STATE")
            .env("CONCLAVE_PASSWORD", PASSWORD)
            .env("HOME", self.home.path())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .expect("running the conclave CLI")
    }

    /// Runs `conclave ARGS`, which must succeed, and returns its stdout.
    async fn succeeds(&self, args: &[&str]) -> String {
        let output = self.run(args).await;
        assert!(
            output.status.success(),
            "conclave {args:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("the CLI prints text")
    }
}
