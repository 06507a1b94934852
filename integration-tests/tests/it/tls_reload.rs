//! Renewed TLS files taken without a restart: one process of the real
//! `conclave-homeserver` whose certificates live in directories laid out as
//! Kubernetes lays out a mounted Secret (files that are links through a
//! `..data` link, renewed by writing a new directory and renaming a new link
//! over `..data`), looked at every second (`[tls] reload_interval_seconds`).
//!
//! Each renewal is checked with new TLS handshakes to the listeners (the
//! certificate presented; for federation, whether a peer's client certificate
//! is accepted), and each broken one with the certificate still presented,
//! the failure counter and the ERROR in the log. How a homeserver's outgoing
//! federation connections take its renewed client certificate is tested in
//! `conclave_federation::reloadable`.

use conclave_federation::peers::CertificatePin;
use conclave_test_support::cluster::free_address;
use conclave_test_support::metrics::{sample, scrape_ok};
use conclave_test_support::{ClusterOptions, IssuedCertificate, TestCluster, TestPki, eventually};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Longest wait for a reload (the interval is a second; the machine is shared).
const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest one probe's connection and handshake may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// A directory laid out as Kubernetes mounts a Secret: `NAME -> ..data/NAME`
/// for each file, `..data -> ..<version>`.
struct SecretVolume {
    directory: PathBuf,
    versions: usize,
}

impl SecretVolume {
    /// Publishes the first version of `files` (name, contents).
    fn new(parent: &Path, name: &str, files: &[(&str, &str)]) -> SecretVolume {
        let directory = parent.join(name);
        std::fs::create_dir(&directory).unwrap();
        let mut volume = SecretVolume {
            directory,
            versions: 0,
        };
        volume.publish(files);
        for (file, _) in files {
            std::os::unix::fs::symlink(Path::new("..data").join(file), volume.path(file)).unwrap();
        }
        volume
    }

    fn path(&self, file: &str) -> PathBuf {
        self.directory.join(file)
    }

    /// Writes `files` to a new version directory, then points `..data` at it
    /// in one rename, as the kubelet does.
    fn publish(&mut self, files: &[(&str, &str)]) {
        self.versions += 1;
        let version = format!("..version-{}", self.versions);
        std::fs::create_dir(self.directory.join(&version)).unwrap();
        for (file, contents) in files {
            std::fs::write(self.directory.join(&version).join(file), contents).unwrap();
        }
        let new_link = self.directory.join("..data_tmp");
        std::os::unix::fs::symlink(&version, &new_link).unwrap();
        std::fs::rename(&new_link, self.directory.join("..data")).unwrap();
    }
}

fn roots(pkis: &[&TestPki]) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for pki in pkis {
        roots
            .add(CertificateDer::from_pem_slice(pki.ca_pem().as_bytes()).unwrap())
            .unwrap();
    }
    Arc::new(roots)
}

fn fingerprint(issued: &IssuedCertificate) -> CertificatePin {
    issued.pin
}

/// Connects to `address` as a client trusting `trusted` and presenting
/// `client_certificate` (if any), expecting `a.example`'s certificate; sends
/// the HTTP/2 preface and reads the server's first bytes (a TLS 1.3 client
/// learns that its certificate was refused only when it reads). The SHA-256
/// of the certificate the server presented, or why the connection failed.
async fn probe(
    address: SocketAddr,
    trusted: &[&TestPki],
    client_certificate: Option<&IssuedCertificate>,
) -> Result<CertificatePin, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(trusted));
    let mut config = match client_certificate {
        Some(issued) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(issued.certificate_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(issued.private_key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connect = async {
        let tcp = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|error| format!("connect: {error}"))?;
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("a.example").unwrap(), tcp)
            .await
            .map_err(|error| format!("handshake: {error}"))?;
        let presented = CertificatePin::of(&tls.get_ref().1.peer_certificates().unwrap()[0]);
        // The client preface and an empty SETTINGS frame.
        tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .map_err(|error| format!("write: {error}"))?;
        let mut first = [0u8; 9];
        tls.read_exact(&mut first)
            .await
            .map_err(|error| format!("read: {error}"))?;
        Ok(presented)
    };
    tokio::time::timeout(PROBE_TIMEOUT, connect)
        .await
        .unwrap_or_else(|_| Err("timed out".to_owned()))
}

async fn metric(cluster: &TestCluster, series: &str) -> Option<f64> {
    sample(&scrape_ok(cluster.http_address(0)).await, series)
}

/// Waits until the replica's log has a line containing every one of `parts`.
async fn logged(cluster: &TestCluster, what: &str, parts: &[&str]) {
    let log = cluster.log_path(0);
    eventually(RELOAD_TIMEOUT, what, || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let found = text
            .lines()
            .any(|line| parts.iter().all(|part| line.contains(part)));
        std::future::ready(found.then_some(()))
    })
    .await;
}

fn count_lines(cluster: &TestCluster, parts: &[&str]) -> usize {
    std::fs::read_to_string(cluster.log_path(0))
        .unwrap_or_default()
        .lines()
        .filter(|line| parts.iter().all(|part| line.contains(part)))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewed_certificates_keys_and_trust_roots_are_taken_without_a_restart() {
    let pki = TestPki::new();
    let other_pki = TestPki::new();
    let secrets = tempfile::tempdir().unwrap();
    let federation_first = pki.issue("a.example");
    let client_api_first = pki.issue("a.example");
    let peer = pki.issue("b.example");
    let peer_of_other_ca = other_pki.issue("b.example");
    let mut federation_volume = SecretVolume::new(
        secrets.path(),
        "federation",
        &[
            ("tls.crt", &federation_first.certificate_pem),
            ("tls.key", &federation_first.private_key_pem),
        ],
    );
    let mut trust_volume = SecretVolume::new(
        secrets.path(),
        "federation-trust",
        &[("ca.crt", &pki.ca_pem())],
    );
    let mut client_api_volume = SecretVolume::new(
        secrets.path(),
        "client-tls",
        &[
            ("tls.crt", &client_api_first.certificate_pem),
            ("tls.key", &client_api_first.private_key_pem),
        ],
    );
    let federation_address = free_address(Ipv4Addr::LOCALHOST);
    let toml = format!(
        "[client_api]\ntls_certificate = {:?}\ntls_private_key = {:?}\n\
         [federation]\nlisten = \"{federation_address}\"\ncertificate = {:?}\nprivate_key = {:?}\ntrust_roots = {:?}\n\
         [tls]\nreload_interval_seconds = 1\n",
        client_api_volume.path("tls.crt"),
        client_api_volume.path("tls.key"),
        federation_volume.path("tls.crt"),
        federation_volume.path("tls.key"),
        trust_volume.path("ca.crt"),
    );
    let cluster = TestCluster::start(
        ClusterOptions::replicas(1)
            .domain("a.example")
            .config(&toml)
            .env("RUST_LOG", "info"),
    )
    .await;
    let client_api_address = cluster.client_address(0);

    // As started: the first certificates; a peer of the trusted CA is
    // accepted, one of the other CA refused; nothing failed.
    assert_eq!(
        probe(federation_address, &[&pki], Some(&peer)).await,
        Ok(fingerprint(&federation_first))
    );
    let refused = probe(federation_address, &[&pki], Some(&peer_of_other_ca))
        .await
        .unwrap_err();
    assert!(refused.starts_with("read: "), "{refused}");
    assert_eq!(
        probe(client_api_address, &[&pki], None).await,
        Ok(fingerprint(&client_api_first))
    );
    for listener in ["federation", "client_api"] {
        assert_eq!(
            metric(
                &cluster,
                &format!("conclave_tls_reload_failures_total{{listener=\"{listener}\"}}")
            )
            .await,
            Some(0.0),
            "{listener}"
        );
    }
    let loaded_at_start = metric(
        &cluster,
        "conclave_tls_certificate_loaded_timestamp_seconds{listener=\"federation\"}",
    )
    .await
    .expect("the federation certificate's load time");

    // The federation certificate renewed: new handshakes get it, and the
    // peer is still accepted.
    let federation_renewed = pki.issue("a.example");
    federation_volume.publish(&[
        ("tls.crt", &federation_renewed.certificate_pem),
        ("tls.key", &federation_renewed.private_key_pem),
    ]);
    eventually(
        RELOAD_TIMEOUT,
        "the renewed federation certificate",
        || async {
            let presented = probe(federation_address, &[&pki], Some(&peer)).await;
            (presented == Ok(fingerprint(&federation_renewed))).then_some(())
        },
    )
    .await;
    logged(
        &cluster,
        "the reload's log line",
        &[
            "INFO",
            "reloaded the TLS certificate",
            "federation",
            &fingerprint(&federation_renewed).to_string(),
        ],
    )
    .await;
    let loaded_after_renewal = metric(
        &cluster,
        "conclave_tls_certificate_loaded_timestamp_seconds{listener=\"federation\"}",
    )
    .await
    .expect("the federation certificate's load time");
    assert!(loaded_after_renewal >= loaded_at_start);

    // A certificate with the key of another: not taken, counted, logged once
    // naming the files; the renewed certificate is still presented.
    let federation_unmatched = pki.issue("a.example");
    federation_volume.publish(&[
        ("tls.crt", &federation_unmatched.certificate_pem),
        ("tls.key", &federation_renewed.private_key_pem),
    ]);
    eventually(RELOAD_TIMEOUT, "the failed reload counted", || async {
        let failures = metric(
            &cluster,
            "conclave_tls_reload_failures_total{listener=\"federation\"}",
        )
        .await;
        (failures == Some(1.0)).then_some(())
    })
    .await;
    let key_path = federation_volume.path("tls.key").display().to_string();
    let error_line = [
        "ERROR",
        "the renewed TLS files cannot be used",
        key_path.as_str(),
    ];
    logged(&cluster, "the failed reload's ERROR", &error_line).await;
    assert_eq!(
        probe(federation_address, &[&pki], Some(&peer)).await,
        Ok(fingerprint(&federation_renewed))
    );

    // The trust roots gain the other CA: its peer is accepted from then on.
    // The key is fixed in the same renewal, so it is taken.
    trust_volume.publish(&[("ca.crt", &format!("{}{}", pki.ca_pem(), other_pki.ca_pem()))]);
    federation_volume.publish(&[
        ("tls.crt", &federation_unmatched.certificate_pem),
        ("tls.key", &federation_unmatched.private_key_pem),
    ]);
    eventually(
        RELOAD_TIMEOUT,
        "the peer of the other CA accepted",
        || async {
            let presented = probe(federation_address, &[&pki], Some(&peer_of_other_ca)).await;
            (presented == Ok(fingerprint(&federation_unmatched))).then_some(())
        },
    )
    .await;
    // The broken state was reported once, not every second it lasted.
    assert_eq!(count_lines(&cluster, &error_line), 1);
    assert_eq!(
        metric(
            &cluster,
            "conclave_tls_reload_failures_total{listener=\"federation\"}"
        )
        .await,
        Some(1.0)
    );

    // The client API's certificate renewed.
    let client_api_renewed = pki.issue("a.example");
    client_api_volume.publish(&[
        ("tls.crt", &client_api_renewed.certificate_pem),
        ("tls.key", &client_api_renewed.private_key_pem),
    ]);
    eventually(
        RELOAD_TIMEOUT,
        "the renewed client API certificate",
        || async {
            let presented = probe(client_api_address, &[&pki], None).await;
            (presented == Ok(fingerprint(&client_api_renewed))).then_some(())
        },
    )
    .await;
    // A half-written certificate: not taken.
    let pem = &client_api_renewed.certificate_pem;
    client_api_volume.publish(&[
        ("tls.crt", &pem[..pem.len() / 2]),
        ("tls.key", &client_api_renewed.private_key_pem),
    ]);
    eventually(RELOAD_TIMEOUT, "the half-written file counted", || async {
        let failures = metric(
            &cluster,
            "conclave_tls_reload_failures_total{listener=\"client_api\"}",
        )
        .await;
        (failures == Some(1.0)).then_some(())
    })
    .await;
    let certificate_path = client_api_volume.path("tls.crt").display().to_string();
    logged(
        &cluster,
        "the half-written file's ERROR",
        &[
            "ERROR",
            "client_api",
            "the renewed TLS files cannot be used",
            certificate_path.as_str(),
        ],
    )
    .await;
    assert_eq!(
        probe(client_api_address, &[&pki], None).await,
        Ok(fingerprint(&client_api_renewed))
    );
    assert!(
        cluster.is_ready(0).await,
        "the replica serves throughout: {}",
        cluster.log_tail(0)
    );
}
