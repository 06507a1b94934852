//! The reload task: every interval it reads each TLS listener's files and,
//! when their contents differ from what is served, builds new material from
//! them and swaps it in for new handshakes (open connections keep theirs).
//!
//! Polling the contents rather than waiting for file-change events: a
//! Kubernetes Secret volume changes by swapping a symbolic link to a new
//! directory, which inotify reports on the directory, not on the files, and a
//! digest of the contents sees every kind of change the same way.
//!
//! New files that cannot be used (half written, a key of another certificate,
//! a certificate for another domain) are not taken: the old material stays,
//! one ERROR names the files and the reason, the failure is counted, and the
//! files are looked at again every interval until they change.

use super::files::{FileContents, PemFiles};
use crate::Clock;
use crate::metrics::Metrics;
use conclave_federation::peers::CertificatePin;
use conclave_federation::tls::TlsError;
use rustls_pki_types::CertificateDer;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// A TLS listener whose material the task can replace.
pub(crate) trait TlsListener: Send + Sync + 'static {
    /// `client_api` or `federation`, in the metrics and the logs.
    fn listener(&self) -> &'static str;

    fn files(&self) -> &PemFiles;

    /// Builds material from `contents` (of [`TlsListener::files`]) and, if it
    /// is usable, makes it the one of new handshakes; returns its end-entity
    /// certificate. Changes nothing on error.
    fn replace(&self, contents: &FileContents) -> Result<CertificateDer<'static>, TlsError>;
}

/// One listener watched by the task, and what it last saw.
pub(crate) struct Watched {
    target: Arc<dyn TlsListener>,
    /// Digest of the files the served material was made of.
    served: [u8; 32],
    /// The last failure reported, so that files which stay broken are
    /// reported once, not every interval.
    reported: Option<Failure>,
}

/// What failed, to recognise the same failure again.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    /// Files with these contents make no usable material.
    Unusable([u8; 32]),
    /// A file could not be read, with this message.
    Unreadable(String),
}

impl Watched {
    /// `target`, serving material made of files whose contents had `served`
    /// as digest.
    pub(crate) fn new(target: Arc<dyn TlsListener>, served: [u8; 32]) -> Watched {
        Watched {
            target,
            served,
            reported: None,
        }
    }

    /// Reads the files once and replaces the material if they changed.
    async fn check(&mut self, metrics: &Metrics, clock: &dyn Clock) {
        let listener = self.target.listener();
        let files = self.target.files();
        let contents = match files.read().await {
            Ok(contents) => contents,
            Err(error) => {
                self.report(
                    metrics,
                    Failure::Unreadable(error.to_string()),
                    &error.to_string(),
                );
                return;
            }
        };
        if contents.digest() == self.served {
            self.reported = None;
            return;
        }
        match self.target.replace(&contents) {
            Ok(certificate) => {
                self.served = contents.digest();
                self.reported = None;
                metrics.record_tls_certificate_loaded(listener, &certificate, clock.now_ms());
                tracing::info!(
                    listener,
                    files = %files.describe(),
                    certificate_sha256 = %CertificatePin::of(&certificate),
                    not_after = %not_after(&certificate),
                    "reloaded the TLS certificate; new connections use it"
                );
            }
            Err(error) => {
                // The files may have been caught halfway through a change
                // (one file renamed into place, the next not yet): if they
                // read differently now, this was no broken file, and the next
                // interval looks at the finished change.
                if let Ok(again) = files.read().await
                    && again.digest() != contents.digest()
                {
                    tracing::debug!(
                        listener,
                        "the TLS files changed while they were read; looking again at the next interval"
                    );
                    return;
                }
                self.report(
                    metrics,
                    Failure::Unusable(contents.digest()),
                    &error.to_string(),
                );
            }
        }
    }

    /// Counts and logs `failure`, unless it is the one reported last.
    fn report(&mut self, metrics: &Metrics, failure: Failure, reason: &str) {
        if self.reported.as_ref() == Some(&failure) {
            return;
        }
        let listener = self.target.listener();
        metrics.count_tls_reload_failure(listener);
        tracing::error!(
            listener,
            files = %self.target.files().describe(),
            reason,
            "the renewed TLS files cannot be used; still serving the previous certificate"
        );
        self.reported = Some(failure);
    }
}

/// The certificate's notAfter in RFC 3339, or a note that it cannot be read.
fn not_after(certificate: &CertificateDer<'_>) -> String {
    crate::metrics::not_after_unix_seconds(certificate)
        .and_then(|seconds| chrono::DateTime::from_timestamp(seconds, 0))
        .map_or_else(
            || "unreadable".to_owned(),
            |not_after| not_after.to_rfc3339(),
        )
}

/// Looks at every watched listener's files each `interval` until `stopped`
/// resolves.
pub(crate) async fn run(
    mut watched: Vec<Watched>,
    interval: Duration,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    stopped: impl Future<Output = ()>,
) {
    let mut ticker = tokio::time::interval(interval);
    // A tick missed while the process was stalled is not made up in a burst.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is at once, and the files were just read at start.
    ticker.tick().await;
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            () = &mut stopped => return,
            _ = ticker.tick() => {}
        }
        for listener in &mut watched {
            listener.check(&metrics, clock.as_ref()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SystemClock;
    use crate::metrics::ListenerLabels;
    use crate::tls::ClientApiTls;
    use conclave_federation::server::CurrentServerConfig;

    /// A self-signed certificate and its key, in PEM.
    fn certificate() -> (String, String) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        (certified.cert.pem(), certified.signing_key.serialize_pem())
    }

    #[tokio::test]
    async fn changes_are_taken_and_broken_files_reported_once_each() {
        let directory = tempfile::tempdir().unwrap();
        let certificate_path = directory.path().join("tls.crt");
        let key_path = directory.path().join("tls.key");
        let (first, first_key) = certificate();
        std::fs::write(&certificate_path, &first).unwrap();
        std::fs::write(&key_path, &first_key).unwrap();
        let files = ClientApiTls::files(certificate_path.clone(), key_path.clone());
        let contents = files.read().await.unwrap();
        let (tls, _) =
            ClientApiTls::new(certificate_path.clone(), key_path.clone(), &contents).unwrap();
        let tls = Arc::new(tls);
        let mut watched = Watched::new(tls.clone(), contents.digest());
        let metrics = Metrics::new();
        let failures = || {
            metrics
                .tls_reload_failures
                .get_or_create(&ListenerLabels {
                    listener: "client_api",
                })
                .get()
        };
        let expiry_set = || {
            metrics
                .tls_certificate_expiry
                .get_or_create(&ListenerLabels {
                    listener: "client_api",
                })
                .get()
                != 0
        };
        let config_before = tls.current();

        // Unchanged: nothing happens.
        watched.check(&metrics, &SystemClock).await;
        assert!(Arc::ptr_eq(&config_before, &tls.current()));
        assert!(!expiry_set());

        // A key of another certificate: kept out, reported once however
        // often it is looked at.
        let (second, second_key) = certificate();
        std::fs::write(&certificate_path, &second).unwrap();
        for _ in 0..3 {
            watched.check(&metrics, &SystemClock).await;
        }
        assert_eq!(failures(), 1);
        assert!(Arc::ptr_eq(&config_before, &tls.current()));

        // A missing file: another failure, reported once too.
        std::fs::remove_file(&key_path).unwrap();
        watched.check(&metrics, &SystemClock).await;
        watched.check(&metrics, &SystemClock).await;
        assert_eq!(failures(), 2);
        assert!(Arc::ptr_eq(&config_before, &tls.current()));

        // Fixed: taken, with the expiry of the new certificate.
        std::fs::write(&key_path, &second_key).unwrap();
        watched.check(&metrics, &SystemClock).await;
        assert_eq!(failures(), 2);
        assert!(!Arc::ptr_eq(&config_before, &tls.current()));
        assert!(expiry_set());
        // (Which certificate new handshakes get is checked with real ones in
        // the integration tests' `tls_reload`.)
    }
}
