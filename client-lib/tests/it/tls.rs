//! The `conclave` CLI against a homeserver that serves its client API over
//! TLS with a certificate of a private CA: refused in plain words until the CA
//! is given (`--ca-file` or `CONCLAVE_CA_FILE`), then the chat walkthrough.
//! The library once connected: a certificate of another CA after a restart is
//! refused in the same words, by calls and by a running listener.

use conclave_client::{
    CertificateRefusal, Client, ClientError, ConnectError, ConnectionNotice, GroupId,
};
use conclave_test_support::{IssuedCertificate, TestHomeserver, TestOptions, TestPki};
use tempfile::TempDir;

use crate::cli::{conclave_with_stdin, fail, path, succeed, succeed_json, succeed_json_lines};
use crate::support::{GROUP_STOCK, PASSWORD, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_walkthrough_runs_over_tls_with_a_private_ca() {
    let pki = TestPki::new();
    let server = start_serving(&pki.issue("localhost")).await;
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

/// The common name of a test CA, as a refusal names the issuer.
fn ca_name(pki: &TestPki) -> String {
    let pem = pki.ca_pem();
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    let certificate = pem.parse_x509().unwrap();
    certificate
        .subject()
        .iter_common_name()
        .next()
        .and_then(|name| name.as_str().ok())
        .unwrap()
        .to_owned()
}

/// A homeserver serving its client API over TLS with `issued`.
async fn start_serving(issued: &IssuedCertificate) -> TestHomeserver {
    let (certificate, private_key) = (issued.certificate.clone(), issued.private_key.clone());
    TestHomeserver::start_with(TestOptions::default().configure(move |config| {
        config.client_api.tls_certificate = Some(certificate);
        config.client_api.tls_private_key = Some(private_key);
    }))
    .await
}

/// `server` restarted on the same port and database, serving `issued`.
async fn restart_serving(server: TestHomeserver, issued: &IssuedCertificate) -> TestHomeserver {
    server
        .restart_with(|config| {
            config.client_api.tls_certificate = Some(issued.certificate.clone());
            config.client_api.tls_private_key = Some(issued.private_key.clone());
        })
        .await
}

/// Alice and Bob, each on a device that trusts a test CA, in a group "team"
/// on a homeserver serving its client API with a certificate of that CA.
struct TeamOverTls {
    server: TestHomeserver,
    /// The homeserver's certificate, to serve again after a restart.
    issued: IssuedCertificate,
    alice: Client,
    bob: Client,
    group_id: GroupId,
    /// Kept to the end: the devices' states live in these directories.
    _state_dirs: [TempDir; 2],
    /// Kept to the end: the CA's and the certificate's files live in its
    /// directory.
    _pki: TestPki,
}

impl TeamOverTls {
    async fn start() -> TeamOverTls {
        let pki = TestPki::new();
        let issued = pki.issue("localhost");
        let server = start_serving(&issued).await;
        let url = format!("https://localhost:{}", server.client_address().port())
            .parse()
            .unwrap();
        let state_dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let [alice, bob] = state_dirs.each_ref().map(|state_dir| {
            Client::open(state_dir.path())
                .unwrap()
                .with_replenish_policy(GROUP_STOCK)
                .with_ca_files(&[pki.trust_roots().to_owned()])
                .unwrap()
        });
        alice
            .register(&url, "alice", PASSWORD, None, "laptop")
            .await
            .unwrap();
        bob.register(&url, "bob", PASSWORD, None, "laptop")
            .await
            .unwrap();
        let group_id = alice.create_group("team").await.unwrap().group_id;
        alice
            .invite(&group_id, &["bob@localhost".parse().unwrap()])
            .await
            .unwrap();
        bob.receive().await.unwrap();
        TeamOverTls {
            server,
            issued,
            alice,
            bob,
            group_id,
            _state_dirs: state_dirs,
            _pki: pki,
        }
    }
}

/// A client connected once to a homeserver it trusts, which then restarts on
/// the same port with a certificate of a CA the client does not trust (tonic
/// reconnects inside the channel): the running listener tells the lost
/// connection in plain words (which name, which issuer) and keeps trying, and
/// the next call fails with the same words, as a first connection would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_refused_on_reconnecting_is_explained() {
    let team = TeamOverTls::start().await;

    // Alice's listener is connected once it hands out Bob's message.
    let (notices, mut noticed) = tokio::sync::mpsc::unbounded_channel();
    let mut listener = team
        .alice
        .listen(Some(team.group_id.clone()))
        .on_connection_change(move |notice| {
            let _ = notices.send(notice);
        });
    team.bob
        .send(&team.group_id, "before the restart")
        .await
        .unwrap();
    let message = within(60, "bob's message", listener.next()).await.unwrap();
    assert_eq!(message.body.text(), Some("before the restart"));

    let untrusted = TestPki::new();
    let replacement = untrusted.issue("localhost");
    let server = team.server;
    let restarting = tokio::spawn(async move { restart_serving(server, &replacement).await });
    let issuer = ca_name(&untrusted);
    let refused_words = format!(
        "the certificate of localhost (issued by {issuer}) is not trusted: pass --ca-file with that CA"
    );
    // The first notices may be of the restart itself (the stream ends, the
    // port is closed for a moment); the listener goes on until the refusal.
    within(60, "a notice of the refused certificate", async {
        loop {
            tokio::select! {
                event = listener.next_event() => panic!("the listener stopped waiting: {event:?}"),
                notice = noticed.recv() => {
                    if let Some(ConnectionNotice::Lost { reason, .. }) = notice
                        && reason.contains(&refused_words)
                    {
                        break;
                    }
                }
            }
        }
    })
    .await;
    drop(listener);
    let _server = restarting.await.unwrap();

    let error = within(60, "a call", team.alice.receive())
        .await
        .unwrap_err();
    let ClientError::Connect(ConnectError::Certificate { refusal, .. }) = &error else {
        panic!("not a certificate refusal: {error:?}");
    };
    assert_eq!(
        refusal,
        &CertificateRefusal::UntrustedIssuer {
            server: "localhost".to_owned(),
            issuer,
        }
    );
    assert!(error.to_string().contains(&refused_words), "{error}");
}

/// A client connected once; its homeserver restarts with a certificate of a
/// CA the client does not trust. A message sent then is stored before the
/// refusal, so the error says it is kept (`NotSentYet`, with the refusal as
/// its cause): sending it again would send it twice. Once the certificate is
/// trusted again, the next receive sends it, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_stored_before_a_certificate_refusal_is_kept() {
    let team = TeamOverTls::start().await;
    team.alice.send(&team.group_id, "before").await.unwrap();

    // Kept to the end: the certificate's files live in its directory.
    let untrusted_pki = TestPki::new();
    let untrusted = untrusted_pki.issue("localhost");
    let server = restart_serving(team.server, &untrusted).await;
    let error = within(
        60,
        "sending",
        team.alice.send(&team.group_id, "while refused"),
    )
    .await
    .unwrap_err();
    let ClientError::NotSentYet { group, source } = &error else {
        panic!("expected the message kept, got {error:?}");
    };
    assert_eq!(group, "team");
    assert!(
        matches!(
            source.as_ref(),
            ClientError::Connect(ConnectError::Certificate { .. })
        ),
        "{source:?}"
    );

    let _server = restart_serving(server, &team.issued).await;
    let report = within(60, "alice receiving", team.alice.receive())
        .await
        .unwrap();
    assert!(report.refused.is_empty(), "{report:?}");
    within(60, "bob receiving", team.bob.receive())
        .await
        .unwrap();
    let mut texts = Vec::new();
    while let Some(message) = team.bob.take_unread(None).unwrap() {
        texts.push(message.body.text().unwrap().to_owned());
    }
    assert_eq!(texts, ["before", "while refused"], "sent once");
}
