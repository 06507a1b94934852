//! What a start checks beyond the configuration's values, before it binds a
//! port or touches the database: the certificates and keys the configuration
//! names (readable, the key the certificate's, valid now and, for federation,
//! valid for the domain), the trust roots, the peers, the database and Redis
//! URLs, and plaintext served beyond loopback.
//!
//! [`crate::run`] refuses to start on any error found here and logs the
//! warnings; `conclave-homeserver check-config` prints every finding. Both go
//! through [`check`], so what `check-config` accepts is what a start accepts.
//! Nothing here binds, connects, or creates a file.

use crate::config::Config;
use crate::rules::federation_doctor::{Validity, validity};
use conclave_core::ids::Domain;
use conclave_federation::identity::{is_valid_for, presented_dns_names};
use conclave_federation::tls::{self, TlsError, TlsMaterial};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A certificate expiring sooner than this gets a warning: time to renew it
/// before peers and clients refuse it (the federation doctor's threshold too).
pub const EXPIRY_WARNING: Duration = crate::rules::federation_doctor::EXPIRY_WARNING;

/// How a finding bears on a start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Ok,
    /// Worth the operator's attention; a start goes ahead (and logs it).
    Warning,
    /// A start refuses.
    Error,
}

/// One line of the report: what was checked (a configuration key, or a
/// service) and what was found. Never holds a password: URLs are shown by
/// their kind and host only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub subject: String,
    pub detail: String,
}

impl Finding {
    pub fn ok(subject: impl Into<String>, detail: impl Into<String>) -> Finding {
        Finding::new(Severity::Ok, subject, detail)
    }

    pub fn warning(subject: impl Into<String>, detail: impl Into<String>) -> Finding {
        Finding::new(Severity::Warning, subject, detail)
    }

    pub fn error(subject: impl Into<String>, detail: impl Into<String>) -> Finding {
        Finding::new(Severity::Error, subject, detail)
    }

    fn new(severity: Severity, subject: impl Into<String>, detail: impl Into<String>) -> Finding {
        Finding {
            severity,
            subject: subject.into(),
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for Finding {
    /// `subject: detail`, as start's refusal and `check-config` print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.subject, self.detail)
    }
}

/// The findings of [`check`], in a fixed order. A start goes on only when
/// none of them is an error, and then loads the same files for serving (and
/// for reloading: `tls`).
pub struct Preflight {
    pub findings: Vec<Finding>,
}

impl Preflight {
    /// Whether some finding stops a start.
    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }

    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings_of(Severity::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Finding> {
        self.findings_of(Severity::Warning)
    }

    fn findings_of(&self, severity: Severity) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(move |finding| finding.severity == severity)
    }

    /// Every error (`subject: detail`), if any.
    pub(crate) fn into_result(self) -> Result<(), Vec<String>> {
        let errors: Vec<String> = self.errors().map(Finding::to_string).collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// Checks everything a start checks beyond [`Config::validate`], at `now` by
/// the system clock (the clock TLS handshakes judge certificates by). Works
/// on a configuration [`Config::problems`] refuses too, judging what can be
/// judged, so `check-config` shows every problem at once.
pub fn check(config: &Config, now: SystemTime) -> Preflight {
    let mut findings = Vec::new();
    check_client_api(config, now, &mut findings);
    check_federation(config, now, &mut findings);
    check_database_url(config, &mut findings);
    check_redis_url(config, &mut findings);
    check_admin_console(config, &mut findings);
    Preflight { findings }
}

/// The client API's listener: TLS here (certificate and key usable), at a
/// proxy in front (a warning: plaintext on the network), or loopback only.
fn check_client_api(config: &Config, now: SystemTime, findings: &mut Vec<Finding>) {
    let client_api = &config.client_api;
    let listen = client_api.listen;
    let (Some(certificate_path), Some(private_key_path)) =
        (&client_api.tls_certificate, &client_api.tls_private_key)
    else {
        if client_api.serves_plaintext_beyond_loopback() && client_api.behind_tls_proxy {
            findings.push(Finding::warning(
                "client_api.listen",
                format!(
                    "{listen} serves plaintext gRPC (behind_tls_proxy): TLS for clients must end at the proxy in front of this server, and this port must be reachable only through it"
                ),
            ));
        } else if !client_api.serves_plaintext_beyond_loopback() {
            findings.push(Finding::ok(
                "client_api.listen",
                format!("{listen}, without TLS (loopback only)"),
            ));
        }
        // Otherwise refused by the configuration's own check.
        return;
    };
    let chain = check_certificate(
        "client_api.tls_certificate",
        certificate_path,
        None,
        now,
        findings,
    );
    check_private_key(
        "client_api.tls_private_key",
        private_key_path,
        chain
            .as_deref()
            .map(|chain| (certificate_path.as_path(), chain)),
        findings,
    );
}

/// The federation files (certificate for the domain, its key, the trust
/// roots) and the peers, when federation is on.
fn check_federation(config: &Config, now: SystemTime, findings: &mut Vec<Finding>) {
    let settings = &config.federation;
    let (Some(certificate_path), Some(private_key_path), Some(trust_roots_path)) = (
        &settings.certificate,
        &settings.private_key,
        &settings.trust_roots,
    ) else {
        // Off, or half set (refused by the configuration's own check).
        return;
    };
    let domain = config.domain.parse::<Domain>().ok();
    let errors_before = count_errors(findings);
    let chain = check_certificate(
        "federation.certificate",
        certificate_path,
        Some(domain.as_ref()),
        now,
        findings,
    );
    let private_key = check_private_key(
        "federation.private_key",
        private_key_path,
        chain
            .as_deref()
            .map(|chain| (certificate_path.as_path(), chain)),
        findings,
    );
    let trust_roots = match tls::read_trust_roots(trust_roots_path) {
        Ok(roots) => {
            findings.push(Finding::ok(
                "federation.trust_roots",
                format!(
                    "{}: {} CA certificate(s)",
                    trust_roots_path.display(),
                    roots.len()
                ),
            ));
            Some(roots)
        }
        Err(error) => {
            findings.push(Finding::error("federation.trust_roots", error.to_string()));
            None
        }
    };
    // Malformed peers, and peers judged against an invalid domain, are the
    // configuration's own check's to report.
    if let Some(domain) = &domain
        && let Ok(registry) = settings.peer_registry(domain.clone())
    {
        let peers: Vec<String> = registry
            .iter()
            .map(|peer| {
                let pinned = if peer.pin.is_some() { ", pinned" } else { "" };
                format!("{} at {}{pinned}", peer.domain, peer.endpoint)
            })
            .collect();
        let detail = if peers.is_empty() {
            "none: requests from and for every other domain are refused".to_owned()
        } else {
            peers.join("; ")
        };
        findings.push(Finding::ok("federation.peers", detail));
    }
    let (Some(domain), Some(chain), Some(private_key), Some(trust_roots)) =
        (domain, chain, private_key, trust_roots)
    else {
        return;
    };
    if count_errors(findings) > errors_before {
        return;
    }
    // Everything above passed, so this only fails on what the parts could not
    // show apart (the trust roots and the key in one rustls configuration).
    if let Err(error) = TlsMaterial::new(&domain, chain, private_key, trust_roots) {
        findings.push(Finding::error("federation.certificate", error.to_string()));
    }
}

fn count_errors(findings: &[Finding]) -> usize {
    findings
        .iter()
        .filter(|finding| finding.severity == Severity::Error)
        .count()
}

/// Reads the certificate chain at `path` and judges its end-entity
/// certificate: it parses, is valid now (a warning within
/// [`EXPIRY_WARNING`] of its end) and, with `for_domain`, is valid for the
/// domain (`Some(None)`: the domain is invalid, so that is not judged).
/// Without `for_domain` (the client API) a certificate naming nothing at all
/// is worth a warning. Returns the chain unless it is unreadable.
fn check_certificate(
    subject: &'static str,
    path: &Path,
    for_domain: Option<Option<&Domain>>,
    now: SystemTime,
    findings: &mut Vec<Finding>,
) -> Option<Vec<CertificateDer<'static>>> {
    let chain = match tls::read_certificate_chain(path) {
        Ok(chain) => chain,
        Err(error) => {
            findings.push(Finding::error(subject, error.to_string()));
            return None;
        }
    };
    let shown = path.display();
    let end_entity = &chain[0];
    let facts = match CertificateFacts::of(end_entity) {
        Ok(facts) => facts,
        Err(reason) => {
            findings.push(Finding::error(
                subject,
                format!("{shown}: the certificate cannot be parsed: {reason}"),
            ));
            return Some(chain);
        }
    };
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut detail = format!("{shown}: names {:?}", facts.names);
    match for_domain {
        Some(Some(domain)) => match is_valid_for(end_entity, domain) {
            Ok(true) => detail.push_str(&format!(", valid for the domain {domain}")),
            Ok(false) => errors.push(format!(
                "{shown}: {}",
                TlsError::NotValidForDomain {
                    domain: domain.clone(),
                    presented: presented_dns_names(end_entity),
                }
            )),
            Err(error) => errors.push(format!(
                "{shown}: the certificate cannot be parsed: {error}"
            )),
        },
        Some(None) => {}
        None if facts.names.is_empty() => warnings.push(format!(
            "{shown}: the certificate names no DNS name or IP address, so clients that check the server's name refuse it"
        )),
        None => {}
    }
    let now_seconds = unix_seconds(now);
    match validity(facts.not_before, facts.not_after, now_seconds) {
        Validity::NotYetValid => errors.push(format!(
            "{shown}: the certificate is not valid before {} (the system clock says {})",
            utc(facts.not_before),
            utc(now_seconds)
        )),
        Validity::Expired => errors.push(format!(
            "{shown}: the certificate expired at {}",
            utc(facts.not_after)
        )),
        Validity::ExpiresSoon { days_left } => warnings.push(format!(
            "{shown}: the certificate expires at {}, in {days_left} day(s): renew it",
            utc(facts.not_after),
        )),
        Validity::Valid => {
            detail.push_str(&format!(", valid until {}", utc(facts.not_after)));
        }
    }
    if !errors.is_empty() {
        findings.extend(
            errors
                .into_iter()
                .map(|error| Finding::error(subject, error)),
        );
    } else if !warnings.is_empty() {
        findings.extend(
            warnings
                .into_iter()
                .map(|warning| Finding::warning(subject, warning)),
        );
    } else {
        findings.push(Finding::ok(subject, detail));
    }
    Some(chain)
}

/// Reads the private key at `path` and, when the certificate is readable,
/// checks it is that certificate's key (as rustls does when it builds the
/// listener's configuration).
fn check_private_key(
    subject: &'static str,
    path: &Path,
    certificate: Option<(&Path, &[CertificateDer<'static>])>,
    findings: &mut Vec<Finding>,
) -> Option<PrivateKeyDer<'static>> {
    let private_key = match tls::read_private_key(path) {
        Ok(private_key) => private_key,
        Err(error) => {
            findings.push(Finding::error(subject, error.to_string()));
            return None;
        }
    };
    let shown = path.display();
    let Some((certificate_path, chain)) = certificate else {
        findings.push(Finding::ok(
            subject,
            format!("{shown}: a PEM private key (not compared: the certificate is unreadable)"),
        ));
        return Some(private_key);
    };
    match key_fits(chain, &private_key) {
        Ok(()) => findings.push(Finding::ok(
            subject,
            format!("{shown}: the private key of {}", certificate_path.display()),
        )),
        Err(error) => {
            findings.push(Finding::error(
                subject,
                format!(
                    "{shown}: not usable with the certificate {}: {error}",
                    certificate_path.display()
                ),
            ));
            return None;
        }
    }
    Some(private_key)
}

/// Whether rustls accepts `private_key` as the key of `chain`: it compares
/// the key's public half with the certificate's where it can tell.
pub(crate) fn key_fits(
    chain: &[CertificateDer<'static>],
    private_key: &PrivateKeyDer<'static>,
) -> Result<(), rustls::Error> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain.to_vec(), private_key.clone_key())
        .map(drop)
}

/// What the report (and the federation doctor) says of a certificate.
pub(crate) struct CertificateFacts {
    /// SAN dNSNames and iPAddresses, as a client compares them.
    pub(crate) names: Vec<String>,
    /// The issuer's distinguished name, such as `CN=Conclave development CA 1a2b3c4d`.
    pub(crate) issuer: String,
    pub(crate) not_before: i64,
    pub(crate) not_after: i64,
    /// Whether an extended key usage extension is present, and whether it
    /// allows TLS server and client authentication (`anyExtendedKeyUsage`
    /// allows both).
    pub(crate) extended_key_usage: Option<ExtendedKeyUsage>,
}

/// The purposes an extended key usage extension allows (of those TLS uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExtendedKeyUsage {
    pub(crate) server_auth: bool,
    pub(crate) client_auth: bool,
}

impl CertificateFacts {
    pub(crate) fn of(certificate: &CertificateDer<'_>) -> Result<CertificateFacts, String> {
        use x509_parser::extensions::GeneralName;
        let (_, parsed) =
            x509_parser::parse_x509_certificate(certificate).map_err(|error| error.to_string())?;
        let mut names = Vec::new();
        if let Some(alternative_names) = parsed
            .subject_alternative_name()
            .map_err(|error| error.to_string())?
        {
            for name in &alternative_names.value.general_names {
                match name {
                    GeneralName::DNSName(dns_name) => names.push((*dns_name).to_owned()),
                    GeneralName::IPAddress(octets) => {
                        let address = match octets.len() {
                            4 => <[u8; 4]>::try_from(*octets).ok().map(IpAddr::from),
                            16 => <[u8; 16]>::try_from(*octets).ok().map(IpAddr::from),
                            _ => None,
                        };
                        if let Some(address) = address {
                            names.push(address.to_string());
                        }
                    }
                    _ => {}
                }
            }
        }
        let extended_key_usage = parsed
            .extended_key_usage()
            .map_err(|error| error.to_string())?
            .map(|extension| ExtendedKeyUsage {
                server_auth: extension.value.any || extension.value.server_auth,
                client_auth: extension.value.any || extension.value.client_auth,
            });
        let validity = parsed.validity();
        Ok(CertificateFacts {
            names,
            issuer: parsed.issuer().to_string(),
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
            extended_key_usage,
        })
    }
}

/// The database URL as its driver reads it, shown by kind and host (or
/// file) only: the URL may hold a password. Refused schemes are the
/// configuration's own check's to report.
/// The admin console on the HTTP listener: beyond loopback and not behind a
/// TLS proxy, administrators' passwords and session cookies would cross the
/// network in plaintext (a warning, not a refusal: a Kubernetes pod listens on
/// all addresses and is reached by `kubectl port-forward`).
fn check_admin_console(config: &Config, findings: &mut Vec<Finding>) {
    let listen = config.http.listen;
    if config.admin.enabled && !config.admin.behind_tls_proxy && !listen.ip().is_loopback() {
        findings.push(Finding::warning(
            "admin.behind_tls_proxy",
            format!(
                "the admin console (/admin) is served in plaintext on {listen}, beyond loopback: reach it only through an HTTPS proxy (then set [admin] behind_tls_proxy = true) or kubectl port-forward, restrict who reaches the port, or set [admin] enabled = false"
            ),
        ));
    }
}

fn check_database_url(config: &Config, findings: &mut Vec<Finding>) {
    match crate::store::describe_database_url(&config.database.url) {
        Some(Ok(description)) => findings.push(Finding::ok("database.url", description)),
        Some(Err(reason)) => findings.push(Finding::error("database.url", reason)),
        None => {}
    }
}

/// The Redis URL, shown by host and database only (it may hold a password);
/// a URL Redis refuses is the configuration's own check's to report.
fn check_redis_url(config: &Config, findings: &mut Vec<Finding>) {
    let Some(url) = &config.redis.url else {
        return;
    };
    if let Ok(description) = crate::cluster::describe_redis_url(url) {
        findings.push(Finding::ok("redis.url", description));
    }
}

/// Seconds since the Unix epoch (negative before it).
pub(crate) fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX), // tidy: saturating (past any certificate's end)
        Err(before) => {
            i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |seconds| -seconds)
        }
    }
}

/// `2027-01-31 12:00:00 UTC`.
pub(crate) fn utc(unix_seconds: i64) -> String {
    chrono::DateTime::from_timestamp(unix_seconds, 0).map_or_else(
        || format!("{unix_seconds} (Unix time)"),
        |time| time.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use conclave_federation::dev_certs::{DevCertificateAuthority, VALIDITY_DAYS};

    /// When the test CA is made: its certificates are valid from an hour
    /// before until [`VALIDITY_DAYS`] after. `check` takes the time as an
    /// argument, so expiry is tested without waiting or old certificates.
    const MADE_AT: i64 = 1_800_000_000;
    const DAY: i64 = 24 * 3600;

    fn at(unix_seconds: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(u64::try_from(unix_seconds).unwrap())
    }

    /// A CA, a certificate for a.example and one for b.example, and a
    /// certificate naming nothing, as files in a temporary directory.
    struct Files {
        directory: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Files {
            let directory = tempfile::tempdir().unwrap();
            let authority = DevCertificateAuthority::generate(MADE_AT).unwrap();
            let write = |name: &str, contents: &str| {
                std::fs::write(directory.path().join(name), contents).unwrap();
            };
            write("ca.pem", &authority.certificate_pem());
            for domain in ["a.example", "b.example"] {
                let issued = authority.issue(&domain.parse().unwrap(), &[]).unwrap();
                write(&format!("{domain}.pem"), &issued.certificate_pem);
                write(&format!("{domain}.key.pem"), &issued.private_key_pem);
            }
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2040, 1, 1);
            let nameless = params.self_signed(&key).unwrap();
            write("nameless.pem", &nameless.pem());
            write("nameless.key.pem", &key.serialize_pem());
            write("empty.pem", "");
            Files { directory }
        }

        fn path(&self, name: &str) -> String {
            self.directory.path().join(name).display().to_string()
        }

        /// `template` with each `{NAME}` replaced by the path of the file NAME.
        fn config(&self, template: &str) -> Config {
            let mut text = template.to_owned();
            for name in [
                "ca.pem",
                "a.example.pem",
                "a.example.key.pem",
                "b.example.pem",
                "b.example.key.pem",
                "nameless.pem",
                "nameless.key.pem",
                "empty.pem",
                "missing.pem",
            ] {
                text = text.replace(&format!("{{{name}}}"), &self.path(name));
            }
            Config::from_toml(&text).unwrap()
        }
    }

    const FEDERATION: &str = "domain = 'a.example'\n[federation]\ncertificate = '{a.example.pem}'\n\
                              private_key = '{a.example.key.pem}'\ntrust_roots = '{ca.pem}'\n\
                              [federation.peers.'b.example']\nendpoint = 'https://127.0.0.2:7401'\n";
    const CLIENT_TLS: &str = "[client_api]\nlisten = '0.0.0.0:7400'\n\
                              tls_certificate = '{a.example.pem}'\ntls_private_key = '{a.example.key.pem}'\n";

    /// Runs `check` on `template` at `now` and compares the findings, as
    /// (severity, subject, a fragment of the detail), in order.
    fn check_findings(
        files: &Files,
        template: &str,
        now: i64,
        expected: &[(Severity, &str, &str)],
    ) -> Preflight {
        let preflight = check(&files.config(template), at(now));
        let found: Vec<(Severity, &str, &str)> = preflight
            .findings
            .iter()
            .map(|finding| {
                (
                    finding.severity,
                    finding.subject.as_str(),
                    finding.detail.as_str(),
                )
            })
            .collect();
        let matches = found.len() == expected.len()
            && found.iter().zip(expected).all(|(found, expected)| {
                found.0 == expected.0 && found.1 == expected.1 && found.2.contains(expected.2)
            });
        assert!(
            matches,
            "{template}\nfound:    {found:#?}\nexpected: {expected:#?}"
        );
        preflight
    }

    use Severity::{Error, Ok as Fine, Warning};

    #[test]
    fn usable_files_are_described_and_handed_to_the_start() {
        let files = Files::new();
        let preflight = check_findings(
            &files,
            &format!("{FEDERATION}{CLIENT_TLS}"),
            MADE_AT,
            &[
                (
                    Fine,
                    "client_api.tls_certificate",
                    "names [\"a.example\"], valid until 2028-01-15 08:00:00 UTC",
                ),
                (
                    Fine,
                    "client_api.tls_private_key",
                    "a.example.key.pem: the private key of",
                ),
                (
                    Fine,
                    "federation.certificate",
                    "names [\"a.example\"], valid for the domain a.example, valid until 2028-01-15",
                ),
                (Fine, "federation.private_key", "the private key of"),
                (
                    Fine,
                    "federation.trust_roots",
                    "ca.pem: 1 CA certificate(s)",
                ),
                (
                    Fine,
                    "federation.peers",
                    "b.example at https://127.0.0.2:7401",
                ),
                (
                    Fine,
                    "database.url",
                    "sqlite at conclave-data/conclave.sqlite",
                ),
            ],
        );
        preflight.into_result().unwrap();
    }

    #[test]
    fn a_console_in_plaintext_beyond_loopback_is_a_warning() {
        let files = Files::new();
        let database = (
            Fine,
            "database.url",
            "sqlite at conclave-data/conclave.sqlite",
        );
        let open = "[http]\nlisten = '0.0.0.0:7480'\n";
        check_findings(
            &files,
            open,
            MADE_AT,
            &[
                (Fine, "client_api.listen", "without TLS (loopback only)"),
                database,
                (
                    Warning,
                    "admin.behind_tls_proxy",
                    "served in plaintext on 0.0.0.0:7480, beyond loopback",
                ),
            ],
        );
        for quiet in [
            format!("{open}[admin]\nbehind_tls_proxy = true\n"),
            format!("{open}[admin]\nenabled = false\n"),
            String::new(),
        ] {
            check_findings(
                &files,
                &quiet,
                MADE_AT,
                &[
                    (Fine, "client_api.listen", "without TLS (loopback only)"),
                    database,
                ],
            );
        }
    }

    #[test]
    fn the_certificates_are_judged_by_the_clock() {
        let files = Files::new();
        let not_after = MADE_AT + VALIDITY_DAYS * DAY;
        for (now, severity, fragment) in [
            (
                MADE_AT - 2 * 3600,
                Error,
                "the certificate is not valid before 2027-01-15 07:00:00 UTC (the system clock says 2027-01-15 06:00:00 UTC)",
            ),
            (
                not_after + 1,
                Error,
                "the certificate expired at 2028-01-15 08:00:00 UTC",
            ),
            (
                not_after - 10 * DAY,
                Warning,
                "the certificate expires at 2028-01-15 08:00:00 UTC, in 10 day(s): renew it",
            ),
            (
                not_after - 14 * DAY - 1,
                Fine,
                "valid until 2028-01-15 08:00:00 UTC",
            ),
        ] {
            let preflight = check_findings(
                &files,
                &format!("{FEDERATION}{CLIENT_TLS}"),
                now,
                &[
                    (severity, "client_api.tls_certificate", fragment),
                    (Fine, "client_api.tls_private_key", "the private key of"),
                    (severity, "federation.certificate", fragment),
                    (Fine, "federation.private_key", "the private key of"),
                    (Fine, "federation.trust_roots", "1 CA certificate(s)"),
                    (Fine, "federation.peers", "b.example"),
                    (Fine, "database.url", "sqlite"),
                ],
            );
            assert_eq!(preflight.has_errors(), severity == Error, "{fragment}");
        }
    }

    /// Each unusable file is its own error, and the files that are fine are
    /// still reported: the operator sees every problem at once.
    #[test]
    fn unusable_files_are_each_refused() {
        let files = Files::new();
        let federation = |certificate: &str, key: &str, roots: &str| {
            format!(
                "domain = 'a.example'\n[federation]\ncertificate = '{{{certificate}}}'\n\
                 private_key = '{{{key}}}'\ntrust_roots = '{{{roots}}}'\n"
            )
        };
        let database = (Fine, "database.url", "sqlite");
        let loopback = (Fine, "client_api.listen", "loopback only");
        for (template, expected) in [
            (
                federation("b.example.pem", "b.example.key.pem", "ca.pem"),
                vec![
                    loopback,
                    (Error, "federation.certificate", "b.example.pem: the certificate is valid for [\"b.example\"], not for this homeserver's domain a.example"),
                    (Fine, "federation.private_key", "the private key of"),
                    (Fine, "federation.trust_roots", "1 CA"),
                    (Fine, "federation.peers", "none: requests from and for every other domain are refused"),
                    database,
                ],
            ),
            (
                federation("a.example.pem", "b.example.key.pem", "a.example.key.pem"),
                vec![
                    loopback,
                    (Fine, "federation.certificate", "valid for the domain a.example"),
                    (Error, "federation.private_key", "b.example.key.pem: not usable with the certificate"),
                    (Error, "federation.trust_roots", "a.example.key.pem contains no PEM certificate"),
                    (Fine, "federation.peers", "none"),
                    database,
                ],
            ),
            (
                federation("missing.pem", "ca.pem", "empty.pem"),
                vec![
                    loopback,
                    (Error, "federation.certificate", "cannot read a PEM certificate from"),
                    (Error, "federation.private_key", "cannot read a PEM private key from"),
                    (Error, "federation.trust_roots", "empty.pem contains no PEM certificate"),
                    (Fine, "federation.peers", "none"),
                    database,
                ],
            ),
            (
                "[client_api]\ntls_certificate = '{missing.pem}'\ntls_private_key = '{a.example.key.pem}'\n".to_owned(),
                vec![
                    (Error, "client_api.tls_certificate", "missing.pem"),
                    (Fine, "client_api.tls_private_key", "not compared: the certificate is unreadable"),
                    database,
                ],
            ),
            (
                "[client_api]\ntls_certificate = '{a.example.pem}'\ntls_private_key = '{nameless.key.pem}'\n".to_owned(),
                vec![
                    (Fine, "client_api.tls_certificate", "a.example"),
                    (Error, "client_api.tls_private_key", "not usable with the certificate"),
                    database,
                ],
            ),
        ] {
            let preflight = check_findings(&files, &template, MADE_AT, &expected);
            let errors = preflight.into_result().expect_err("refused");
            assert!(!errors.is_empty() && errors.iter().all(|error| error.contains(": ")));
        }
    }

    #[test]
    fn a_client_certificate_need_not_name_the_domain_but_should_name_something() {
        let files = Files::new();
        check_findings(
            &files,
            "domain = 'b.example'\n[client_api]\ntls_certificate = '{a.example.pem}'\ntls_private_key = '{a.example.key.pem}'\n",
            MADE_AT,
            &[
                (
                    Fine,
                    "client_api.tls_certificate",
                    "names [\"a.example\"], valid until",
                ),
                (Fine, "client_api.tls_private_key", "the private key of"),
                (Fine, "database.url", "sqlite"),
            ],
        );
        let preflight = check_findings(
            &files,
            "[client_api]\ntls_certificate = '{nameless.pem}'\ntls_private_key = '{nameless.key.pem}'\n",
            MADE_AT,
            &[
                (
                    Warning,
                    "client_api.tls_certificate",
                    "names no DNS name or IP address",
                ),
                (Fine, "client_api.tls_private_key", "the private key of"),
                (Fine, "database.url", "sqlite"),
            ],
        );
        preflight.into_result().unwrap();
    }

    #[test]
    fn listeners_and_urls_are_described_without_secrets() {
        let files = Files::new();
        for (template, expected) in [
            (
                "[client_api]\nlisten = '0.0.0.0:7400'\nbehind_tls_proxy = true\n",
                vec![
                    (
                        Warning,
                        "client_api.listen",
                        "0.0.0.0:7400 serves plaintext gRPC (behind_tls_proxy)",
                    ),
                    (Fine, "database.url", "sqlite"),
                ],
            ),
            (
                "[client_api]\nlisten = '127.0.0.1:7400'\nbehind_tls_proxy = true\n",
                vec![
                    (
                        Fine,
                        "client_api.listen",
                        "127.0.0.1:7400, without TLS (loopback only)",
                    ),
                    (Fine, "database.url", "sqlite"),
                ],
            ),
            (
                "[database]\nurl = 'postgres://conclave:hunter2@db.internal:5433/chat'\n\
                 [redis]\nurl = 'redis://:hunter2@redis.internal:6380/3'\n",
                vec![
                    (Fine, "client_api.listen", "loopback only"),
                    (
                        Fine,
                        "database.url",
                        "postgres at db.internal:5433, database chat",
                    ),
                    (
                        Fine,
                        "redis.url",
                        "redis at redis.internal:6380, database 3",
                    ),
                ],
            ),
            (
                "[database]\nurl = 'postgres://conclave:hunter2@db.internal:99999/chat'\n\
                 [redis]\nurl = 'rediss://user:hunter2@redis.internal'\n",
                vec![
                    (Fine, "client_api.listen", "loopback only"),
                    (Error, "database.url", "not a usable postgres:// URL"),
                    (
                        Fine,
                        "redis.url",
                        "rediss (TLS) at redis.internal:6379, database 0",
                    ),
                ],
            ),
        ] {
            let preflight = check_findings(&files, template, MADE_AT, &expected);
            for finding in &preflight.findings {
                assert!(!finding.detail.contains("hunter2"), "{finding}");
            }
        }
    }
}
