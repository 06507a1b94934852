//! RunDoctor: the federation doctor for one configured peer. It makes a fresh
//! connection of its own (never the pooled federation client's, whose
//! failures say only that the handshake failed) and reports each check
//! separately, in order:
//!
//! 1. `connect`: DNS, then TCP to the configured endpoint, each within the
//!    federation call timeout.
//! 2. `tls_handshake`: TLS 1.3 with ALPN h2, presenting our certificate and
//!    reading the peer's chain without judging it.
//! 3. `certificate_chain`: the chain leads to our trust roots, for TLS server
//!    authentication (judged within the certificate's validity, so an expired
//!    certificate is `certificate_expiry`'s to report).
//! 4. `certificate_name`: valid for the peer's domain.
//! 5. `pin`: the pinned certificate, if the peer is pinned; PASS ("no pin
//!    configured") otherwise, since an unpinned peer is configured as
//!    intended.
//! 6. `certificate_expiry`: FAIL expired or not yet valid, WARN within 14 days.
//! 7. `clock_skew` and 8. `protocol_version`: from the peer's GetServerInfo,
//!    over the same connection.
//!
//! A failed `connect` or `tls_handshake` (or a chain that cannot be parsed)
//! leaves nothing to judge: the rest is SKIPPED. The two RPC checks run only
//! if the federation client would accept the certificate (chain, name, pin
//! and expiry), since until then the peer is not known to be the peer.
//! Each run is audited as `federation.doctor` with the domain and a summary.

use super::audit::audited;
use super::{AdminCaller, AdminError};
use crate::preflight::{CertificateFacts, unix_seconds, utc};
use crate::rules::federation_doctor::{
    CheckOutcome, Checklist, DoctorReport, judge_clock_skew, judge_expiry, judge_name,
    judge_protocol_version,
};
use crate::service::Context;
use conclave_core::ids::Domain;
use conclave_federation::diagnosis::{
    self, ChainError, DiagnosticConnection, KeyPurpose, PROTOCOL_VERSION, ServerInfoFailureKind,
    verify_chain,
};
use conclave_federation::identity::{is_valid_for, presented_dns_names};
use conclave_federation::peers::{CertificatePin, Peer, PeerEndpoint};
use conclave_federation::tls::TlsMaterial;
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, UnixTime};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};
use tokio::net::TcpStream;

const CONNECT: &str = "connect";
const TLS_HANDSHAKE: &str = "tls_handshake";
const CERTIFICATE_CHAIN: &str = "certificate_chain";
const CERTIFICATE_NAME: &str = "certificate_name";
const PIN: &str = "pin";
const CERTIFICATE_EXPIRY: &str = "certificate_expiry";
const CLOCK_SKEW: &str = "clock_skew";
const PROTOCOL_VERSION_CHECK: &str = "protocol_version";

/// Every check after the handshake, in order.
const AFTER_HANDSHAKE: [&str; 6] = [
    CERTIFICATE_CHAIN,
    CERTIFICATE_NAME,
    PIN,
    CERTIFICATE_EXPIRY,
    CLOCK_SKEW,
    PROTOCOL_VERSION_CHECK,
];

/// Runs the doctor against `domain` for `caller`, and audits it.
pub(crate) async fn run_doctor(
    context: &Context,
    caller: &AdminCaller,
    domain: &str,
) -> Result<DoctorReport, AdminError> {
    let result = diagnose_peer(context, domain).await.map(|report| {
        let summary = report.summary();
        (report, summary)
    });
    audited(context, caller, "federation.doctor", domain.trim(), result).await
}

/// The checks of `domain`, a configured peer.
pub(crate) async fn diagnose_peer(
    context: &Context,
    domain: &str,
) -> Result<DoctorReport, AdminError> {
    let settings = &context.config.federation;
    let (Some(certificate), Some(private_key), Some(trust_roots)) = (
        &settings.certificate,
        &settings.private_key,
        &settings.trust_roots,
    ) else {
        return Err(AdminError::FailedPrecondition(
            "federation is off: [federation] sets no certificate, private_key and trust_roots"
                .to_owned(),
        ));
    };
    let domain: Domain = domain
        .trim()
        .parse()
        .map_err(|error| AdminError::Invalid(format!("domain {:?}: {error}", domain.trim())))?;
    let registry = settings
        .peer_registry(context.domain.clone())
        .map_err(|error| AdminError::FailedPrecondition(format!("[federation.peers]: {error}")))?;
    let peer = registry
        .get(&domain)
        .map_err(|_| {
            AdminError::NotFound(format!(
                "{domain} is not a federation peer of this homeserver ([federation.peers])"
            ))
        })?
        .clone();
    let timeout = Duration::from_secs(settings.call_timeout_seconds.max(1));
    let checked_at_ms = context.now_ms();
    let mut checklist = Checklist::default();
    let material = TlsMaterial::load(&context.domain, certificate, private_key, trust_roots);
    run_checks(context, &peer, material, timeout, &mut checklist).await;
    Ok(DoctorReport {
        domain: domain.to_string(),
        endpoint: host_and_port(&peer.endpoint),
        checks: checklist.into_checks(),
        checked_at_ms,
    })
}

/// `host:port` of an endpoint (an IPv6 host in brackets).
pub(crate) fn host_and_port(endpoint: &PeerEndpoint) -> String {
    if endpoint.host().contains(':') {
        format!("[{}]:{}", endpoint.host(), endpoint.port())
    } else {
        format!("{}:{}", endpoint.host(), endpoint.port())
    }
}

async fn run_checks(
    context: &Context,
    peer: &Peer,
    material: Result<TlsMaterial, conclave_federation::tls::TlsError>,
    timeout: Duration,
    checklist: &mut Checklist,
) {
    let started = Instant::now();
    let tcp = match connect(peer, timeout).await {
        Ok((tcp, address)) => {
            checklist.record(
                CONNECT,
                CheckOutcome::Pass,
                format!("connected to {address} ({})", peer.endpoint),
                started.elapsed(),
            );
            tcp
        }
        Err(detail) => {
            checklist.record(CONNECT, CheckOutcome::Fail, detail, started.elapsed());
            checklist.skip(&[TLS_HANDSHAKE], CONNECT);
            checklist.skip(&AFTER_HANDSHAKE, CONNECT);
            return;
        }
    };
    let started = Instant::now();
    let handshake = match material {
        Ok(material) => {
            match tokio::time::timeout(timeout, diagnosis::handshake(tcp, &material, &peer.domain))
                .await
            {
                Ok(Ok(connection)) => Ok((connection, material)),
                Ok(Err(error)) => Err(format!(
                    "the TLS handshake failed: {error}: check that {} is the peer's federation listener (TLS 1.3, ALPN h2)",
                    peer.endpoint
                )),
                Err(_) => Err(format!(
                    "the peer did not complete the TLS handshake within {} s: check that {} is its federation listener",
                    timeout.as_secs(),
                    peer.endpoint
                )),
            }
        }
        Err(error) => Err(format!(
            "our own federation certificate cannot be used ({error}): run `conclave-homeserver admin federation check-certificate`"
        )),
    };
    let (connection, material) = match handshake {
        Ok((connection, material)) if !connection.speaks_http2() => {
            drop((connection, material));
            checklist.record(
                TLS_HANDSHAKE,
                CheckOutcome::Fail,
                format!(
                    "the peer at {} did not agree to HTTP/2 (ALPN h2): it is not a Conclave federation listener",
                    peer.endpoint
                ),
                started.elapsed(),
            );
            checklist.skip(&AFTER_HANDSHAKE, TLS_HANDSHAKE);
            return;
        }
        Ok(pair) => pair,
        Err(detail) => {
            checklist.record(TLS_HANDSHAKE, CheckOutcome::Fail, detail, started.elapsed());
            checklist.skip(&AFTER_HANDSHAKE, TLS_HANDSHAKE);
            return;
        }
    };
    let chain = connection.peer_chain();
    let facts = match chain.first().map(CertificateFacts::of) {
        Some(Ok(facts)) => facts,
        Some(Err(reason)) => {
            checklist.record(
                TLS_HANDSHAKE,
                CheckOutcome::Fail,
                format!("the peer's certificate cannot be parsed ({reason}): it must present an X.509 certificate for {}", peer.domain),
                started.elapsed(),
            );
            checklist.skip(&AFTER_HANDSHAKE, TLS_HANDSHAKE);
            return;
        }
        None => {
            checklist.record(
                TLS_HANDSHAKE,
                CheckOutcome::Fail,
                "the peer presented no certificate: its federation listener must present one for its domain",
                started.elapsed(),
            );
            checklist.skip(&AFTER_HANDSHAKE, TLS_HANDSHAKE);
            return;
        }
    };
    checklist.record(
        TLS_HANDSHAKE,
        CheckOutcome::Pass,
        format!(
            "TLS 1.3 with HTTP/2, our certificate presented; the peer presented {} certificate(s), the first issued by {}",
            chain.len(),
            facts.issuer
        ),
        started.elapsed(),
    );
    judge_certificate(peer, &chain, &facts, material.trust_roots(), checklist);
    let blocking = [CERTIFICATE_CHAIN, CERTIFICATE_NAME, PIN, CERTIFICATE_EXPIRY]
        .into_iter()
        .find(|name| checklist.outcome(name) == Some(CheckOutcome::Fail));
    if let Some(cause) = blocking {
        checklist.skip(&[CLOCK_SKEW, PROTOCOL_VERSION_CHECK], cause);
        return;
    }
    ask_server_info(context, peer, connection, timeout, checklist).await;
}

/// DNS, then TCP to each address in turn: the connection and the address,
/// or the check's detail.
async fn connect(peer: &Peer, timeout: Duration) -> Result<(TcpStream, SocketAddr), String> {
    let (host, port) = (peer.endpoint.host(), peer.endpoint.port());
    let addresses: Vec<SocketAddr> = match tokio::time::timeout(
        timeout,
        tokio::net::lookup_host((host, port)),
    )
    .await
    {
        Ok(Ok(found)) => found.collect(),
        Ok(Err(error)) => {
            return Err(format!(
                "DNS lookup of {host} failed ({error}): check the endpoint in [federation.peers.\"{}\"] and the peer's DNS records",
                peer.domain
            ));
        }
        Err(_) => {
            return Err(format!(
                "DNS lookup of {host} took longer than {} s: check this host's DNS resolver",
                timeout.as_secs()
            ));
        }
    };
    if addresses.is_empty() {
        return Err(format!(
            "DNS lookup of {host} found no address: check the peer's DNS records"
        ));
    }
    let mut failures = Vec::new();
    for address in addresses {
        match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
            Ok(Ok(tcp)) => return Ok((tcp, address)),
            Ok(Err(error)) => failures.push(format!("{address}: {error}")),
            Err(_) => failures.push(format!(
                "{address}: no answer within {} s",
                timeout.as_secs()
            )),
        }
    }
    Err(format!(
        "cannot connect to {} ({}): check that the peer's federation listener runs there and that no firewall is in the way",
        peer.endpoint,
        failures.join("; ")
    ))
}

/// certificate_chain, certificate_name, pin and certificate_expiry, each on
/// its own.
fn judge_certificate(
    peer: &Peer,
    chain: &[CertificateDer<'static>],
    facts: &CertificateFacts,
    trust_roots: &RootCertStore,
    checklist: &mut Checklist,
) {
    let started = Instant::now();
    let (outcome, detail) = judge_chain(
        "the peer's",
        chain,
        facts,
        trust_roots,
        KeyPurpose::ServerAuth,
    );
    checklist.record(CERTIFICATE_CHAIN, outcome, detail, started.elapsed());

    let started = Instant::now();
    let end_entity = &chain[0];
    let (outcome, detail) = judge_name(
        "the peer's",
        is_valid_for(end_entity, &peer.domain).unwrap_or(false),
        &presented_dns_names(end_entity),
        peer.domain.as_str(),
    );
    checklist.record(CERTIFICATE_NAME, outcome, detail, started.elapsed());

    let started = Instant::now();
    let presented = CertificatePin::of(end_entity);
    let (outcome, detail) = match peer.pin {
        None => (
            CheckOutcome::Pass,
            format!(
                "no pin configured: the trust roots and the name decide (its SHA-256 is {presented}, should you pin it)"
            ),
        ),
        Some(pinned) if pinned == presented => (
            CheckOutcome::Pass,
            format!("the peer's certificate is the pinned one ({pinned})"),
        ),
        Some(pinned) => (
            CheckOutcome::Fail,
            format!(
                "the peer's certificate has SHA-256 {presented}, but {pinned} is pinned: update pinned_sha256 in [federation.peers.\"{}\"] if the peer renewed its certificate",
                peer.domain
            ),
        ),
    };
    checklist.record(PIN, outcome, detail, started.elapsed());

    let started = Instant::now();
    let (outcome, detail) = judge_expiry(
        "the peer's",
        facts.not_before,
        facts.not_after,
        unix_seconds(SystemTime::now()),
        utc,
    );
    checklist.record(CERTIFICATE_EXPIRY, outcome, detail, started.elapsed());
}

/// The `certificate_chain` check of `whose` certificate: does `chain` lead to
/// `trust_roots`, allowed for `purpose`? Judged now by the system clock (as a
/// handshake judges it) or, if the certificate is outside its validity, at
/// its last valid second: expiry is reported by its own check.
pub(crate) fn judge_chain(
    whose: &str,
    chain: &[CertificateDer<'static>],
    facts: &CertificateFacts,
    trust_roots: &RootCertStore,
    purpose: KeyPurpose,
) -> (CheckOutcome, String) {
    let now = UnixTime::now();
    let mut result = verify_chain(chain, trust_roots, now, purpose);
    let mut judged_within_validity = false;
    if matches!(
        result,
        Err(ChainError::CertExpired { .. } | ChainError::CertNotValidYet { .. })
    ) && let Ok(last_valid_second) = u64::try_from(facts.not_after)
    {
        let within = UnixTime::since_unix_epoch(Duration::from_secs(last_valid_second));
        result = verify_chain(chain, trust_roots, within, purpose);
        judged_within_validity = true;
    }
    let issuer = &facts.issuer;
    match result {
        Ok(()) if judged_within_validity => (
            CheckOutcome::Pass,
            format!(
                "{whose} certificate, issued by {issuer}, chains to our trust roots (judged within its validity: see certificate_expiry)"
            ),
        ),
        Ok(()) => (
            CheckOutcome::Pass,
            format!("{whose} certificate, issued by {issuer}, chains to our trust roots"),
        ),
        Err(ChainError::UnknownIssuer) => (
            CheckOutcome::Fail,
            format!(
                "{whose} certificate, issued by {issuer}, does not chain to our trust roots (federation.trust_roots): add that CA to the bundle, or use a certificate from a CA in it"
            ),
        ),
        Err(ChainError::RequiredEkuNotFoundContext(_)) => (
            CheckOutcome::Fail,
            format!(
                "{whose} certificate's extended key usage does not allow TLS {}: reissue it allowing serverAuth and clientAuth",
                match purpose {
                    KeyPurpose::ClientAuth => "client authentication",
                    _ => "server authentication",
                }
            ),
        ),
        Err(error) => (
            CheckOutcome::Fail,
            format!(
                "{whose} certificate, issued by {issuer}, is refused against our trust roots ({error:?}): check the chain it presents and the CA bundle"
            ),
        ),
    }
}

/// clock_skew and protocol_version, from GetServerInfo over `connection`.
async fn ask_server_info(
    context: &Context,
    peer: &Peer,
    connection: DiagnosticConnection,
    timeout: Duration,
    checklist: &mut Checklist,
) {
    let sent_at_ms = context.now_ms();
    let started = Instant::now();
    let answer =
        diagnosis::get_server_info(connection, &peer.endpoint, &context.domain, timeout).await;
    let round_trip = started.elapsed();
    match answer {
        Ok(info) => {
            let (outcome, detail) =
                judge_clock_skew(info.server_time_unix_ms, sent_at_ms, round_trip);
            checklist.record(CLOCK_SKEW, outcome, detail, round_trip);
            let (outcome, detail) = judge_protocol_version(
                PROTOCOL_VERSION,
                &info.protocol_version,
                &info.server_version,
            );
            checklist.record(PROTOCOL_VERSION_CHECK, outcome, detail, Duration::ZERO);
        }
        Err(failure) if failure.kind == ServerInfoFailureKind::Unimplemented => {
            checklist.record(
                CLOCK_SKEW,
                CheckOutcome::Skipped,
                "not run: the peer does not answer GetServerInfo (see protocol_version)",
                round_trip,
            );
            checklist.record(
                PROTOCOL_VERSION_CHECK,
                CheckOutcome::Fail,
                format!(
                    "the peer does not implement GetServerInfo of {PROTOCOL_VERSION}: it runs an older release; upgrade it"
                ),
                Duration::ZERO,
            );
        }
        Err(failure) => {
            let advice = match failure.kind {
                ServerInfoFailureKind::NotAccepted => format!(
                    "the peer does not accept us as {}: it must list {} in its [federation.peers] and trust our CA",
                    context.domain, context.domain
                ),
                ServerInfoFailureKind::NoClientCertificate => {
                    "the peer saw no usable client certificate: it must trust our CA".to_owned()
                }
                ServerInfoFailureKind::RateLimited => {
                    "the peer rate-limits us: try again in a minute".to_owned()
                }
                ServerInfoFailureKind::Unimplemented | ServerInfoFailureKind::Other => "if it names a TLS alert (such as UnknownCA or BadCertificate), the peer refused our certificate: it must trust our CA".to_owned(),
            };
            checklist.record(
                CLOCK_SKEW,
                CheckOutcome::Fail,
                format!("the peer did not answer GetServerInfo ({failure}): {advice}"),
                round_trip,
            );
            checklist.skip(&[PROTOCOL_VERSION_CHECK], CLOCK_SKEW);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The doctor against real peers: a test network's homeserver (healthy,
    //! and with certificates about to expire), and handshake-only listeners
    //! presenting what a homeserver would refuse to start with (another
    //! domain's certificate, another CA's, an expired one). On SQLite, but
    //! for the audit entries (both databases): the doctor reads nothing of
    //! the database.
    use super::*;
    use crate::config::{Config, FederationPeerConfig};
    use crate::service::SystemClock;
    use crate::store::Store;
    use conclave_federation::dev_certs::DevCertificateAuthority;
    use conclave_test_support::{
        DatabaseChoice, IssuedCertificate, TestDatabase, TestNetwork, TestPki,
        handshake_only_listener,
    };
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    const DAY: i64 = 24 * 3600;

    fn now() -> i64 {
        unix_seconds(SystemTime::now())
    }

    /// The domain of `certificate` (a.example, unless a test says otherwise),
    /// presenting it and trusting `trust_roots`, with `peers` (domain,
    /// endpoint, pin), on a database of its own.
    struct Doctor {
        context: Context,
        _database: TestDatabase,
    }

    impl Doctor {
        async fn new(
            certificate: &IssuedCertificate,
            trust_roots: &Path,
            peers: &[(&str, String, Option<String>)],
        ) -> Doctor {
            Doctor::on(DatabaseChoice::Sqlite, certificate, trust_roots, peers).await
        }

        async fn on(
            choice: DatabaseChoice,
            certificate: &IssuedCertificate,
            trust_roots: &Path,
            peers: &[(&str, String, Option<String>)],
        ) -> Doctor {
            let database = TestDatabase::create(choice).await;
            let store = Store::connect(database.url(), 2).await.unwrap();
            store.migrate().await.unwrap();
            let mut config = Config {
                domain: certificate.domain.to_string(),
                ..Config::default()
            };
            config.federation.certificate = Some(certificate.certificate.clone());
            config.federation.private_key = Some(certificate.private_key.clone());
            config.federation.trust_roots = Some(trust_roots.to_owned());
            for (domain, endpoint, pin) in peers {
                config.federation.peers.insert(
                    (*domain).to_owned(),
                    FederationPeerConfig {
                        endpoint: endpoint.clone(),
                        pinned_sha256: pin.clone(),
                    },
                );
            }
            Doctor {
                context: Context::new(store, config, Arc::new(SystemClock)),
                _database: database,
            }
        }

        async fn examine(&self, domain: &str) -> DoctorReport {
            run_doctor(&self.context, &AdminCaller::operator(), domain)
                .await
                .unwrap()
        }
    }

    /// Each check's name and outcome, in order.
    fn outcomes(report: &DoctorReport) -> Vec<(&'static str, CheckOutcome)> {
        report
            .checks
            .iter()
            .map(|check| (check.name, check.outcome))
            .collect()
    }

    fn detail<'a>(report: &'a DoctorReport, name: &str) -> &'a str {
        &report
            .checks
            .iter()
            .find(|check| check.name == name)
            .unwrap_or_else(|| panic!("no check {name} in {report:#?}"))
            .detail
    }

    const ALL: [&str; 8] = [
        CONNECT,
        TLS_HANDSHAKE,
        CERTIFICATE_CHAIN,
        CERTIFICATE_NAME,
        PIN,
        CERTIFICATE_EXPIRY,
        CLOCK_SKEW,
        PROTOCOL_VERSION_CHECK,
    ];

    /// `ALL` with the outcomes given for some checks and PASS for the others.
    fn expected(changed: &[(&'static str, CheckOutcome)]) -> Vec<(&'static str, CheckOutcome)> {
        ALL.iter()
            .map(|name| {
                let outcome = changed
                    .iter()
                    .find(|(changed, _)| changed == name)
                    .map_or(CheckOutcome::Pass, |(_, outcome)| *outcome);
                (*name, outcome)
            })
            .collect()
    }

    fn write(directory: &Path, name: &str, contents: &str) -> PathBuf {
        let path = directory.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[tokio::test]
    async fn a_healthy_peer_passes_every_check_and_pins_are_judged() {
        let network = TestNetwork::start(&["a.example", "b.example"], DatabaseChoice::Sqlite).await;
        let endpoint = network.endpoint("b.example");
        let b_pin = network.certificate("b.example").pin.to_string();
        let a = network.certificate("a.example");
        let trust_roots = network.pki().trust_roots();
        for (pin, pin_outcome, fragment) in [
            (None, CheckOutcome::Pass, "no pin configured"),
            (Some(b_pin.clone()), CheckOutcome::Pass, "is the pinned one"),
            (
                Some("00".repeat(32)),
                CheckOutcome::Fail,
                "is pinned: update pinned_sha256",
            ),
        ] {
            let doctor = Doctor::new(a, trust_roots, &[("b.example", endpoint.clone(), pin)]).await;
            let report = doctor.examine("b.example").await;
            let mut wanted = expected(&[(PIN, pin_outcome)]);
            if pin_outcome == CheckOutcome::Fail {
                wanted = expected(&[
                    (PIN, CheckOutcome::Fail),
                    (CLOCK_SKEW, CheckOutcome::Skipped),
                    (PROTOCOL_VERSION_CHECK, CheckOutcome::Skipped),
                ]);
            }
            assert_eq!(outcomes(&report), wanted, "{report:#?}");
            assert!(detail(&report, PIN).contains(fragment), "{report:#?}");
            assert_eq!(report.healthy(), pin_outcome == CheckOutcome::Pass);
            assert_eq!(report.domain, "b.example");
            assert_eq!(report.endpoint, endpoint.trim_start_matches("https://"));
        }
        let doctor = Doctor::new(a, trust_roots, &[("b.example", endpoint.clone(), None)]).await;
        let report = doctor.examine("b.example").await;
        assert!(
            detail(&report, PROTOCOL_VERSION_CHECK)
                .contains("the peer speaks conclave.federation.v1"),
            "{report:#?}"
        );
        assert!(
            detail(&report, CLOCK_SKEW).contains("round trip"),
            "{report:#?}"
        );
        assert!(
            detail(&report, CERTIFICATE_NAME).contains("valid for b.example"),
            "{report:#?}"
        );
        network.shutdown().await;
    }

    #[tokio::test]
    async fn a_peer_that_refuses_us_fails_the_call_and_says_why() {
        let network = TestNetwork::start(&["a.example", "b.example"], DatabaseChoice::Sqlite).await;
        let endpoint = network.endpoint("b.example");
        // Trusted, but not one of b.example's peers.
        let stranger = network.pki().issue("x.example");
        let doctor = Doctor::new(
            &stranger,
            network.pki().trust_roots(),
            &[("b.example", endpoint.clone(), None)],
        )
        .await;
        let report = doctor.examine("b.example").await;
        let wanted = expected(&[
            (CLOCK_SKEW, CheckOutcome::Fail),
            (PROTOCOL_VERSION_CHECK, CheckOutcome::Skipped),
        ]);
        assert_eq!(outcomes(&report), wanted, "{report:#?}");
        assert!(
            detail(&report, CLOCK_SKEW).contains("does not accept us as x.example"),
            "{report:#?}"
        );
        // a.example's name, but from a CA b.example does not trust: it ends
        // the connection when it sees our certificate.
        let untrusted = TestPki::new();
        let impostor = untrusted.issue("a.example");
        let directory = tempfile::tempdir().unwrap();
        let bundle = write(
            directory.path(),
            "bundle.pem",
            &format!("{}{}", network.pki().ca_pem(), untrusted.ca_pem()),
        );
        let doctor = Doctor::new(&impostor, &bundle, &[("b.example", endpoint, None)]).await;
        let report = doctor.examine("b.example").await;
        assert_eq!(outcomes(&report), wanted, "{report:#?}");
        assert!(
            detail(&report, CLOCK_SKEW).contains("the peer refused our certificate"),
            "{report:#?}"
        );
        network.shutdown().await;
    }

    #[tokio::test]
    async fn a_certificate_for_another_domain_fails_its_name_and_stops_the_calls() {
        let pki = TestPki::new();
        let a = pki.issue("a.example");
        let other = pki.issue("b-other.example");
        let endpoint = handshake_only_listener(
            "b-other.example",
            &other.certificate_pem,
            &other.private_key_pem,
            &pki.ca_pem(),
        )
        .await;
        let doctor = Doctor::new(&a, pki.trust_roots(), &[("b.example", endpoint, None)]).await;
        let report = doctor.examine("b.example").await;
        assert_eq!(
            outcomes(&report),
            expected(&[
                (CERTIFICATE_NAME, CheckOutcome::Fail),
                (CLOCK_SKEW, CheckOutcome::Skipped),
                (PROTOCOL_VERSION_CHECK, CheckOutcome::Skipped),
            ]),
            "{report:#?}"
        );
        assert!(
            detail(&report, CERTIFICATE_NAME)
                .starts_with("the peer's certificate names b-other.example, not b.example"),
            "{report:#?}"
        );
        assert_eq!(
            detail(&report, CLOCK_SKEW),
            "not run: it needs certificate_name to pass first"
        );
        assert!(!report.healthy());
    }

    #[tokio::test]
    async fn an_unreachable_endpoint_fails_connect_and_skips_the_rest() {
        let pki = TestPki::new();
        let a = pki.issue("a.example");
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let doctor = Doctor::new(
            &a,
            pki.trust_roots(),
            &[
                ("b.example", format!("https://{closed}"), None),
                (
                    "c.example",
                    "https://doctor-test.invalid:7401".to_owned(),
                    None,
                ),
            ],
        )
        .await;
        for (domain, fragment) in [
            ("b.example", format!("cannot connect to https://{closed}")),
            ("c.example", "DNS lookup of doctor-test.invalid".to_owned()),
        ] {
            let report = doctor.examine(domain).await;
            let mut wanted: Vec<_> = ALL
                .iter()
                .map(|name| (*name, CheckOutcome::Skipped))
                .collect();
            wanted[0].1 = CheckOutcome::Fail;
            assert_eq!(outcomes(&report), wanted, "{report:#?}");
            assert!(detail(&report, CONNECT).contains(&fragment), "{report:#?}");
            assert_eq!(
                detail(&report, PROTOCOL_VERSION_CHECK),
                "not run: it needs connect to pass first"
            );
        }
    }

    #[tokio::test]
    async fn a_certificate_of_an_untrusted_ca_fails_the_chain() {
        let pki = TestPki::new();
        let a = pki.issue("a.example");
        let untrusted = DevCertificateAuthority::generate(now()).unwrap();
        let b = untrusted.issue(&"b.example".parse().unwrap(), &[]).unwrap();
        let endpoint = handshake_only_listener(
            "b.example",
            &b.certificate_pem,
            &b.private_key_pem,
            &pki.ca_pem(),
        )
        .await;
        let doctor = Doctor::new(&a, pki.trust_roots(), &[("b.example", endpoint, None)]).await;
        let report = doctor.examine("b.example").await;
        assert_eq!(
            outcomes(&report),
            expected(&[
                (CERTIFICATE_CHAIN, CheckOutcome::Fail),
                (CLOCK_SKEW, CheckOutcome::Skipped),
                (PROTOCOL_VERSION_CHECK, CheckOutcome::Skipped),
            ]),
            "{report:#?}"
        );
        assert!(
            detail(&report, CERTIFICATE_CHAIN).contains("does not chain to our trust roots"),
            "{report:#?}"
        );
        assert_eq!(
            detail(&report, CLOCK_SKEW),
            "not run: it needs certificate_chain to pass first"
        );
    }

    #[tokio::test]
    async fn an_expired_certificate_fails_its_expiry_but_still_chains() {
        let pki = TestPki::new();
        let a = pki.issue("a.example");
        let old = DevCertificateAuthority::generate(now() - 400 * DAY).unwrap();
        let b = old.issue(&"b.example".parse().unwrap(), &[]).unwrap();
        let endpoint = handshake_only_listener(
            "b.example",
            &b.certificate_pem,
            &b.private_key_pem,
            &pki.ca_pem(),
        )
        .await;
        let directory = tempfile::tempdir().unwrap();
        let bundle = write(
            directory.path(),
            "bundle.pem",
            &format!("{}{}", pki.ca_pem(), old.certificate_pem()),
        );
        let doctor = Doctor::new(&a, &bundle, &[("b.example", endpoint, None)]).await;
        let report = doctor.examine("b.example").await;
        assert_eq!(
            outcomes(&report),
            expected(&[
                (CERTIFICATE_EXPIRY, CheckOutcome::Fail),
                (CLOCK_SKEW, CheckOutcome::Skipped),
                (PROTOCOL_VERSION_CHECK, CheckOutcome::Skipped),
            ]),
            "{report:#?}"
        );
        assert!(
            detail(&report, CERTIFICATE_EXPIRY).contains("certificate expired at"),
            "{report:#?}"
        );
        assert!(
            detail(&report, CERTIFICATE_CHAIN).contains("judged within its validity"),
            "{report:#?}"
        );
    }

    #[tokio::test]
    async fn a_certificate_expiring_within_two_weeks_is_a_warning() {
        let pki = TestPki::made_at(now() - 355 * DAY);
        let network = TestNetwork::builder(&["a.example", "b.example"], DatabaseChoice::Sqlite)
            .pki(pki)
            .start()
            .await;
        let doctor = Doctor::new(
            network.certificate("a.example"),
            network.pki().trust_roots(),
            &[("b.example", network.endpoint("b.example"), None)],
        )
        .await;
        let report = doctor.examine("b.example").await;
        assert_eq!(
            outcomes(&report),
            expected(&[(CERTIFICATE_EXPIRY, CheckOutcome::Warn)]),
            "{report:#?}"
        );
        assert!(
            detail(&report, CERTIFICATE_EXPIRY).contains("day(s): renew it before then"),
            "{report:#?}"
        );
        assert!(report.healthy());
        network.shutdown().await;
    }

    #[tokio::test]
    async fn unknown_peers_malformed_domains_and_federation_off_are_refused() {
        let pki = TestPki::new();
        let a = pki.issue("a.example");
        let doctor = Doctor::new(&a, pki.trust_roots(), &[]).await;
        let caller = AdminCaller::operator();
        let refused = run_doctor(&doctor.context, &caller, "c.example").await;
        assert!(
            matches!(&refused, Err(AdminError::NotFound(message)) if message.contains("c.example is not a federation peer")),
            "{refused:?}"
        );
        let refused = run_doctor(&doctor.context, &caller, "not a domain").await;
        assert!(
            matches!(&refused, Err(AdminError::Invalid(_))),
            "{refused:?}"
        );
        let mut off = doctor.context.config.clone();
        off.federation.certificate = None;
        let context = Context::new(doctor.context.store.clone(), off, Arc::new(SystemClock));
        let refused = run_doctor(&context, &caller, "b.example").await;
        assert!(
            matches!(&refused, Err(AdminError::FailedPrecondition(message)) if message.contains("federation is off")),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn every_run_is_audited_with_its_summary_refusals_included() {
        for choice in DatabaseChoice::ALL {
            let pki = TestPki::new();
            let a = pki.issue("a.example");
            let closed = {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                listener.local_addr().unwrap()
            };
            let doctor = Doctor::on(
                choice,
                &a,
                pki.trust_roots(),
                &[("b.example", format!("https://{closed}"), None)],
            )
            .await;
            let context = &doctor.context;
            let caller = AdminCaller::operator();
            run_doctor(context, &caller, " b.example ").await.unwrap();
            run_doctor(context, &caller, "c.example").await.unwrap_err();
            super::super::check_own_certificate::check_own_certificate(context, &caller)
                .await
                .unwrap();
            let entries = crate::store::list_audit_entries_oldest_first(
                &context.store,
                &crate::store::AuditQuery::default(),
                None,
                10,
            )
            .await
            .unwrap();
            let seen: Vec<(&str, &str, &str, bool, &str)> = entries
                .iter()
                .map(|entry| {
                    (
                        entry.actor.as_str(),
                        entry.action.as_str(),
                        entry.target.as_str(),
                        entry.succeeded,
                        entry.detail.as_str(),
                    )
                })
                .collect();
            assert_eq!(
                seen,
                [
                    (
                        "operator",
                        "federation.doctor",
                        "b.example",
                        true,
                        "0 passed, 0 warned, 1 failed (connect), 7 skipped"
                    ),
                    (
                        "operator",
                        "federation.doctor",
                        "c.example",
                        false,
                        "c.example is not a federation peer of this homeserver ([federation.peers])"
                    ),
                    (
                        "operator",
                        "federation.check_own_certificate",
                        "a.example",
                        true,
                        "6 passed, 0 warned, 0 failed, 0 skipped"
                    ),
                ],
                "{choice:?}"
            );
        }
    }
}
