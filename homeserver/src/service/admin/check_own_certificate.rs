//! CheckOwnCertificate: the doctor's checks of this homeserver's own
//! federation certificate, from the configured files as they are now (what
//! the next reload or start would use), each reported on its own:
//! `certificate_readable`, `key_matches`, `certificate_chain` (to our own
//! trust roots: peers trusting the same CA accept it), `certificate_name`
//! (valid for our domain), `certificate_usage` (extended key usage allows TLS
//! server and client authentication: peers call in, and we call out with the
//! same certificate) and `certificate_expiry`. An unreadable certificate
//! leaves nothing else to check. The reading and the key comparison are
//! `preflight`'s, which a start and `check-config` use. Audited as
//! `federation.check_own_certificate`.

use super::audit::audited;
use super::federation_doctor::judge_chain;
use super::{AdminCaller, AdminError};
use crate::config::Config;
use crate::preflight::{CertificateFacts, key_fits, unix_seconds, utc};
use crate::rules::federation_doctor::{
    CheckOutcome, Checklist, DoctorReport, judge_expiry, judge_name,
};
use crate::service::Context;
use conclave_core::ids::Domain;
use conclave_federation::diagnosis::KeyPurpose;
use conclave_federation::identity::{is_valid_for, presented_dns_names};
use conclave_federation::tls;
use std::time::{Instant, SystemTime};

const CERTIFICATE_READABLE: &str = "certificate_readable";
const KEY_MATCHES: &str = "key_matches";
const CERTIFICATE_CHAIN: &str = "certificate_chain";
const CERTIFICATE_NAME: &str = "certificate_name";
const CERTIFICATE_USAGE: &str = "certificate_usage";
const CERTIFICATE_EXPIRY: &str = "certificate_expiry";

/// Checks our own certificate for `caller`, and audits it.
pub(crate) async fn check_own_certificate(
    context: &Context,
    caller: &AdminCaller,
) -> Result<DoctorReport, AdminError> {
    let result = diagnose_own_certificate(&context.config, &context.domain, context.now_ms()).map(
        |report| {
            let summary = report.summary();
            (report, summary)
        },
    );
    audited(
        context,
        caller,
        "federation.check_own_certificate",
        context.domain.as_str(),
        result,
    )
    .await
}

/// The checks of the certificate `config` names for `domain`; `checked_at_ms`
/// is when, by the homeserver's clock (validity is judged by the system
/// clock, as handshakes judge it).
pub(crate) fn diagnose_own_certificate(
    config: &Config,
    domain: &Domain,
    checked_at_ms: i64,
) -> Result<DoctorReport, AdminError> {
    let settings = &config.federation;
    let (Some(certificate_path), Some(private_key_path), Some(trust_roots_path)) = (
        &settings.certificate,
        &settings.private_key,
        &settings.trust_roots,
    ) else {
        return Err(AdminError::FailedPrecondition(
            "federation is off: [federation] sets no certificate, private_key and trust_roots"
                .to_owned(),
        ));
    };
    let mut checklist = Checklist::default();
    let certificate_shown = certificate_path.display();

    let started = Instant::now();
    let read = tls::read_certificate_chain(certificate_path).and_then(|chain| {
        CertificateFacts::of(&chain[0])
            .map(|facts| (chain, facts))
            .map_err(|reason| tls::TlsError::UnreadableCertificate { reason })
    });
    let (chain, facts) = match read {
        Ok(read) => read,
        Err(error) => {
            checklist.record(
                CERTIFICATE_READABLE,
                CheckOutcome::Fail,
                format!(
                    "{error}: federation.certificate must name a PEM certificate chain, ours first"
                ),
                started.elapsed(),
            );
            checklist.skip(
                &[
                    KEY_MATCHES,
                    CERTIFICATE_CHAIN,
                    CERTIFICATE_NAME,
                    CERTIFICATE_USAGE,
                    CERTIFICATE_EXPIRY,
                ],
                CERTIFICATE_READABLE,
            );
            return Ok(report(domain, checklist, checked_at_ms));
        }
    };
    checklist.record(
        CERTIFICATE_READABLE,
        CheckOutcome::Pass,
        format!(
            "{certificate_shown}: {} certificate(s), ours naming {:?}, issued by {}",
            chain.len(),
            facts.names,
            facts.issuer
        ),
        started.elapsed(),
    );

    let started = Instant::now();
    let private_key_shown = private_key_path.display();
    let (outcome, detail) = match tls::read_private_key(private_key_path) {
        Err(error) => (
            CheckOutcome::Fail,
            format!("{error}: federation.private_key must name the certificate's PEM key"),
        ),
        Ok(private_key) => match key_fits(&chain, &private_key) {
            Ok(()) => (
                CheckOutcome::Pass,
                format!("{private_key_shown} is the key of {certificate_shown}"),
            ),
            Err(error) => (
                CheckOutcome::Fail,
                format!(
                    "{private_key_shown} is not the key of {certificate_shown} ({error}): configure the key the certificate was issued for"
                ),
            ),
        },
    };
    checklist.record(KEY_MATCHES, outcome, detail, started.elapsed());

    let started = Instant::now();
    let (outcome, detail) = match tls::read_trust_roots(trust_roots_path) {
        Err(error) => (
            CheckOutcome::Fail,
            format!("{error}: federation.trust_roots must name a PEM bundle of CA certificates"),
        ),
        Ok(trust_roots) => judge_chain("our", &chain, &facts, &trust_roots, KeyPurpose::Any),
    };
    checklist.record(CERTIFICATE_CHAIN, outcome, detail, started.elapsed());

    let started = Instant::now();
    let (outcome, detail) = judge_name(
        "our",
        is_valid_for(&chain[0], domain).unwrap_or(false),
        &presented_dns_names(&chain[0]),
        domain.as_str(),
    );
    checklist.record(CERTIFICATE_NAME, outcome, detail, started.elapsed());

    let started = Instant::now();
    let (outcome, detail) = judge_usage(&facts);
    checklist.record(CERTIFICATE_USAGE, outcome, detail, started.elapsed());

    let started = Instant::now();
    let (outcome, detail) = judge_expiry(
        "our",
        facts.not_before,
        facts.not_after,
        unix_seconds(SystemTime::now()),
        utc,
    );
    checklist.record(CERTIFICATE_EXPIRY, outcome, detail, started.elapsed());
    Ok(report(domain, checklist, checked_at_ms))
}

fn report(domain: &Domain, checklist: Checklist, checked_at_ms: i64) -> DoctorReport {
    DoctorReport {
        domain: domain.to_string(),
        endpoint: String::new(),
        checks: checklist.into_checks(),
        checked_at_ms,
    }
}

/// The `certificate_usage` check: the same certificate serves peers calling
/// in (server authentication) and is presented when calling out (client
/// authentication); without an extended key usage extension it may do both.
fn judge_usage(facts: &CertificateFacts) -> (CheckOutcome, String) {
    let Some(usage) = facts.extended_key_usage else {
        return (
            CheckOutcome::Pass,
            "our certificate has no extended key usage restriction, so it serves for TLS server and client authentication".to_owned(),
        );
    };
    let missing: Vec<&str> = [
        (!usage.server_auth).then_some("serverAuth (peers calling us refuse it)"),
        (!usage.client_auth).then_some("clientAuth (peers refuse our calls)"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if missing.is_empty() {
        (
            CheckOutcome::Pass,
            "our certificate allows TLS server and client authentication (serverAuth, clientAuth)"
                .to_owned(),
        )
    } else {
        (
            CheckOutcome::Fail,
            format!(
                "our certificate's extended key usage lacks {}: reissue it with both serverAuth and clientAuth",
                missing.join(" and ")
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conclave_federation::dev_certs::DevCertificateAuthority;
    use conclave_test_support::{IssuedCertificate, TestPki};
    use std::path::{Path, PathBuf};

    const DAY: i64 = 24 * 3600;

    fn a_example() -> Domain {
        "a.example".parse().unwrap()
    }

    fn config(certificate: &Path, private_key: &Path, trust_roots: &Path) -> Config {
        let mut config = Config {
            domain: "a.example".to_owned(),
            ..Config::default()
        };
        config.federation.certificate = Some(certificate.to_owned());
        config.federation.private_key = Some(private_key.to_owned());
        config.federation.trust_roots = Some(trust_roots.to_owned());
        config
    }

    fn check(config: &Config) -> Vec<(&'static str, CheckOutcome, String)> {
        diagnose_own_certificate(config, &a_example(), 0)
            .unwrap()
            .checks
            .into_iter()
            .map(|check| (check.name, check.outcome, check.detail))
            .collect()
    }

    fn outcome_of(
        checks: &[(&'static str, CheckOutcome, String)],
        name: &str,
    ) -> (CheckOutcome, String) {
        let (_, outcome, detail) = checks
            .iter()
            .find(|(check, _, _)| *check == name)
            .unwrap_or_else(|| panic!("no {name} in {checks:#?}"));
        (*outcome, detail.clone())
    }

    fn files(pki: &TestPki, issued: &IssuedCertificate) -> Config {
        config(&issued.certificate, &issued.private_key, pki.trust_roots())
    }

    fn write(directory: &Path, name: &str, contents: &str) -> PathBuf {
        let path = directory.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn a_usable_certificate_passes_every_check() {
        let pki = TestPki::new();
        let checks = check(&files(&pki, &pki.issue("a.example")));
        let names: Vec<&str> = checks.iter().map(|(name, _, _)| *name).collect();
        assert_eq!(
            names,
            [
                CERTIFICATE_READABLE,
                KEY_MATCHES,
                CERTIFICATE_CHAIN,
                CERTIFICATE_NAME,
                CERTIFICATE_USAGE,
                CERTIFICATE_EXPIRY
            ]
        );
        for (name, outcome, detail) in &checks {
            assert_eq!(*outcome, CheckOutcome::Pass, "{name}: {detail}");
        }
        assert!(
            outcome_of(&checks, CERTIFICATE_USAGE)
                .1
                .contains("serverAuth, clientAuth"),
            "{checks:#?}"
        );
    }

    #[test]
    fn each_fault_fails_its_own_check() {
        let pki = TestPki::new();
        let a = pki.issue("a.example");
        let other_a = pki.issue("a.example");
        let b = pki.issue("b.example");
        let directory = tempfile::tempdir().unwrap();
        let missing = directory.path().join("missing.pem");

        // The key of another certificate.
        let checks = check(&config(
            &a.certificate,
            &other_a.private_key,
            pki.trust_roots(),
        ));
        let (outcome, detail) = outcome_of(&checks, KEY_MATCHES);
        assert_eq!(outcome, CheckOutcome::Fail, "{detail}");
        assert!(detail.contains("is not the key of"), "{detail}");
        assert_eq!(outcome_of(&checks, CERTIFICATE_CHAIN).0, CheckOutcome::Pass);

        // Another domain's certificate.
        let checks = check(&files(&pki, &b));
        let (outcome, detail) = outcome_of(&checks, CERTIFICATE_NAME);
        assert_eq!(outcome, CheckOutcome::Fail, "{detail}");
        assert!(
            detail.starts_with("our certificate names b.example, not a.example"),
            "{detail}"
        );

        // Trust roots of another CA.
        let stranger = DevCertificateAuthority::generate(unix_seconds(SystemTime::now())).unwrap();
        let roots = write(
            directory.path(),
            "stranger.pem",
            &stranger.certificate_pem(),
        );
        let checks = check(&config(&a.certificate, &a.private_key, &roots));
        let (outcome, detail) = outcome_of(&checks, CERTIFICATE_CHAIN);
        assert_eq!(outcome, CheckOutcome::Fail, "{detail}");
        assert!(
            detail.contains("does not chain to our trust roots"),
            "{detail}"
        );

        // No certificate at all: nothing else can be judged.
        let checks = check(&config(&missing, &a.private_key, pki.trust_roots()));
        let (outcome, detail) = outcome_of(&checks, CERTIFICATE_READABLE);
        assert_eq!(outcome, CheckOutcome::Fail, "{detail}");
        assert!(detail.contains("cannot read a PEM certificate"), "{detail}");
        for (name, outcome, detail) in &checks[1..] {
            assert_eq!(*outcome, CheckOutcome::Skipped, "{name}");
            assert_eq!(
                detail,
                "not run: it needs certificate_readable to pass first"
            );
        }
    }

    #[test]
    fn a_certificate_only_for_servers_fails_its_usage() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["a.example".to_owned()]).unwrap();
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let certificate = params.self_signed(&key).unwrap();
        let directory = tempfile::tempdir().unwrap();
        let certificate_path = write(directory.path(), "a.pem", &certificate.pem());
        let key_path = write(directory.path(), "a.key.pem", &key.serialize_pem());
        let checks = check(&config(&certificate_path, &key_path, &certificate_path));
        let (outcome, detail) = outcome_of(&checks, CERTIFICATE_USAGE);
        assert_eq!(outcome, CheckOutcome::Fail, "{detail}");
        assert!(
            detail.contains("lacks clientAuth (peers refuse our calls)"),
            "{detail}"
        );
        assert_eq!(outcome_of(&checks, KEY_MATCHES).0, CheckOutcome::Pass);
    }

    #[test]
    fn expiry_within_two_weeks_warns_and_past_it_fails() {
        let now = unix_seconds(SystemTime::now());
        for (made_days_ago, outcome, fragment) in [
            (355, CheckOutcome::Warn, "day(s): renew it before then"),
            (400, CheckOutcome::Fail, "our certificate expired at"),
        ] {
            let pki = TestPki::made_at(now - made_days_ago * DAY);
            let checks = check(&files(&pki, &pki.issue("a.example")));
            let (judged, detail) = outcome_of(&checks, CERTIFICATE_EXPIRY);
            assert_eq!(judged, outcome, "{detail}");
            assert!(detail.contains(fragment), "{detail}");
        }
    }

    #[test]
    fn federation_off_is_a_precondition() {
        let refused = diagnose_own_certificate(&Config::default(), &a_example(), 0);
        assert!(
            matches!(&refused, Err(AdminError::FailedPrecondition(message)) if message.contains("federation is off")),
            "{refused:?}"
        );
    }
}
