//! The `conclave` CLI against a homeserver that serves its client API over
//! TLS with a certificate of a private CA: refused in plain words until the CA
//! is given (`--ca-file` or `CONCLAVE_CA_FILE`), then the chat walkthrough.

use conclave_test_support::{TestHomeserver, TestOptions, TestPki};

use crate::cli::{conclave_with_stdin, fail, path, succeed, succeed_json, succeed_json_lines};
use crate::support::PASSWORD;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_walkthrough_runs_over_tls_with_a_private_ca() {
    let pki = TestPki::new();
    let issued = pki.issue("localhost");
    let (certificate, private_key) = (issued.certificate.clone(), issued.private_key.clone());
    let server = TestHomeserver::start_with(TestOptions::default().configure(move |config| {
        config.client_api.tls_certificate = Some(certificate);
        config.client_api.tls_private_key = Some(private_key);
    }))
    .await;
    let port = server.client_address().port();
    let url = format!("https://localhost:{port}");
    let ca_file = pki.trust_roots().to_str().unwrap().to_owned();
    let alice_dir = tempfile::tempdir().unwrap();
    let bob_dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (path(alice_dir.path()), path(bob_dir.path()));
    let password = ("CONCLAVE_PASSWORD", PASSWORD);

    // Without the CA: which name, which issuer, what to do.
    let refused = fail(
        &["--server", &url, "--state", alice, "register", "alice"],
        &[password],
    )
    .await;
    assert!(
        refused.starts_with(&format!(
            "error: cannot connect to {url}: the certificate of localhost (issued by Conclave development CA "
        )),
        "{refused}"
    );
    assert!(
        refused.contains(") is not trusted: pass --ca-file with that CA"),
        "{refused}"
    );
    // With the CA, but by another name than the certificate's.
    let by_address = format!("https://127.0.0.1:{port}");
    let refused = fail(
        &[
            "--ca-file",
            &ca_file,
            "--server",
            &by_address,
            "--state",
            alice,
            "register",
            "alice",
        ],
        &[password],
    )
    .await;
    assert!(
        refused.ends_with("the certificate presented by 127.0.0.1 is for localhost, not 127.0.0.1"),
        "{refused}"
    );
    // A CA file that is not one.
    let refused = fail(
        &[
            "--ca-file",
            alice,
            "--server",
            &url,
            "--state",
            alice,
            "whoami",
        ],
        &[],
    )
    .await;
    assert!(refused.contains("cannot read the CA file"), "{refused}");

    // Alice names the CA on the command line, Bob in the environment.
    let alice_ca = ["--ca-file", ca_file.as_str(), "--state", alice];
    let bob_ca = [password, ("CONCLAVE_CA_FILE", ca_file.as_str())];
    let registered = succeed(
        &[&alice_ca[..], &["--server", &url, "register", "alice"]].concat(),
        &[password],
    )
    .await;
    assert!(
        registered.starts_with("registered alice@localhost"),
        "{registered}"
    );
    succeed(
        &["--server", &url, "--state", bob, "register", "bob"],
        &bob_ca,
    )
    .await;
    let created = succeed_json(
        &[&alice_ca[..], &["group", "create", "team", "--json"]].concat(),
        &[],
    )
    .await;
    assert_eq!(created["name"], "team");
    succeed(
        &[&alice_ca[..], &["group", "invite", "team", "bob@localhost"]].concat(),
        &[],
    )
    .await;

    // Alice chats two lines; Bob listens.
    let chat = conclave_with_stdin(
        &[&alice_ca[..], &["chat", "team"]].concat(),
        &[],
        Some("hello over TLS\nsecond line\n"),
    )
    .await;
    assert!(
        chat.status.success(),
        "{}",
        String::from_utf8_lossy(&chat.stderr)
    );
    let lines = succeed_json_lines(&[
        "--ca-file",
        &ca_file,
        "--state",
        bob,
        "listen",
        "team",
        "--count",
        "2",
        "--timeout",
        "60",
        "--json",
    ])
    .await;
    // The messages, after the membership line of Bob's own joining.
    let messages: Vec<_> = lines
        .iter()
        .filter(|line| line["event"] == "message")
        .collect();
    let bodies: Vec<_> = messages.iter().map(|line| line["body"].clone()).collect();
    assert_eq!(bodies, ["hello over TLS", "second line"]);
    assert!(
        messages
            .iter()
            .all(|line| line["sender"] == "alice@localhost")
    );
}
