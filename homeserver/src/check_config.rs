//! `conclave-homeserver check-config [--connect]`: every check a start makes
//! of its configuration ([`Config::problems`], then [`preflight::check`]), each
//! reported on a line of its own, without binding a port, creating a file or
//! directory, or migrating; with `--connect`, also the database (and its
//! schema's state) and Redis, each within [`CONNECT_TIMEOUT`]. Made for an init
//! container: it tells a configuration that cannot start the server (exit 2)
//! from a service that is not there (exit 1).

use crate::Store;
use crate::StoreError;
use crate::cluster;
use crate::config::{Config, ConfigError, database_kind};
use crate::preflight::{self, Finding, Severity};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// How long connecting to the database, or to Redis, may take in all.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Exit code: every check passed (warnings allowed).
pub const EXIT_USABLE: u8 = 0;
/// Exit code: a service the configuration names is unreachable or unusable
/// (`--connect` only); the configuration itself could start the server.
pub const EXIT_SERVICE_FAILED: u8 = 1;
/// Exit code: the configuration cannot start the server.
pub const EXIT_BAD_CONFIGURATION: u8 = 2;

/// The findings in their fixed order: the configuration, the client API, the
/// federation files and peers, the database and Redis URLs; then, with
/// `--connect`, the database and Redis themselves.
pub struct Report {
    pub findings: Vec<Finding>,
    /// Whether a finding is an error of the configuration (not of a service).
    configuration_refused: bool,
}

impl Report {
    /// [`EXIT_BAD_CONFIGURATION`] over [`EXIT_SERVICE_FAILED`] over
    /// [`EXIT_USABLE`].
    pub fn exit_code(&self) -> u8 {
        if self.configuration_refused {
            EXIT_BAD_CONFIGURATION
        } else if self.error_count() > 0 {
            EXIT_SERVICE_FAILED
        } else {
            EXIT_USABLE
        }
    }

    pub fn error_count(&self) -> usize {
        self.count(Severity::Error)
    }

    pub fn warning_count(&self) -> usize {
        self.count(Severity::Warning)
    }

    fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|finding| finding.severity == severity)
            .count()
    }

    /// The closing line: what the exit code means.
    pub fn summary(&self) -> String {
        let warnings = self.warning_count();
        match self.exit_code() {
            EXIT_BAD_CONFIGURATION => format!(
                "the configuration cannot start the server: {} error(s)",
                self.error_count()
            ),
            EXIT_SERVICE_FAILED => format!(
                "the configuration is valid, but {} service check(s) failed",
                self.error_count()
            ),
            _ => format!(
                "the configuration can start the server ({} check(s), {warnings} warning(s))",
                self.findings.len()
            ),
        }
    }
}

/// Loads the configuration as a start does (`file`, then `CONCLAVE_*`
/// variables) and checks it at `now`, keeping on after a failure wherever
/// the later checks do not depend on it.
pub async fn check_config(file: Option<&Path>, connect: bool, now: SystemTime) -> Report {
    let mut findings = Vec::new();
    let config = match Config::parse(file) {
        Ok(config) => config,
        // Nothing else can be judged without the values.
        Err(error) => {
            findings.push(configuration_error(error));
            return Report {
                findings,
                configuration_refused: true,
            };
        }
    };
    let problems = config.problems();
    if problems.is_empty() {
        let source = match file {
            Some(file) => format!("{} and CONCLAVE_* variables", file.display()),
            None => "no file: the defaults and CONCLAVE_* variables".to_owned(),
        };
        findings.push(Finding::ok(
            "configuration",
            format!("{source}; domain {}", config.domain),
        ));
    }
    findings.extend(problems.into_iter().map(configuration_error));
    findings.extend(preflight::check(&config, now).findings);
    let configuration_refused = findings
        .iter()
        .any(|finding| finding.severity == Severity::Error);
    if connect {
        findings.extend(check_database(&config).await);
        findings.extend(check_redis(&config).await);
    }
    Report {
        findings,
        configuration_refused,
    }
}

/// A refusal of the configuration, under the key it names.
fn configuration_error(error: ConfigError) -> Finding {
    match error {
        ConfigError::Invalid { key, reason } => Finding::error(key, reason),
        ConfigError::Load(error) => Finding::error("configuration", error.to_string()),
    }
}

/// Connects to the database (reading only) and reports its schema's state:
/// up to date, migrations pending (a start applies them), or migrated by a
/// newer release (a start refuses).
async fn check_database(config: &Config) -> Option<Finding> {
    let url = &config.database.url;
    database_kind(url).ok()?;
    let place = crate::store::describe_database_url(url)?.ok()?;
    let finding = match Store::connect_to_look(url, CONNECT_TIMEOUT).await {
        Ok(None) => Finding::ok(
            "database",
            format!(
                "{place}: the file does not exist yet; a start creates it and applies every migration"
            ),
        ),
        Ok(Some(store)) => {
            let pending = store.pending_migrations().await;
            let _ = store.close().await;
            match pending {
                Ok(pending) if pending.is_empty() => Finding::ok(
                    "database",
                    format!("connected to {place}; the schema is up to date"),
                ),
                Ok(pending) => Finding::ok(
                    "database",
                    format!(
                        "connected to {place}; {} migration(s) pending, which a start or `conclave-homeserver migrate` applies: {}",
                        pending.len(),
                        pending.join(", ")
                    ),
                ),
                Err(error @ StoreError::SchemaTooNew { .. }) => {
                    Finding::error("database", format!("{place}: {error}"))
                }
                Err(error) => Finding::error(
                    "database",
                    format!(
                        "connected to {place}, but cannot read the schema's migrations: {error}"
                    ),
                ),
            }
        }
        Err(error) => Finding::error("database", format!("cannot connect to {place}: {error}")),
    };
    Some(finding)
}

/// Connects to Redis with the URL's credentials and PINGs it.
async fn check_redis(config: &Config) -> Option<Finding> {
    let url = config.redis.url.as_ref()?;
    let place = cluster::describe_redis_url(url).ok()?;
    Some(match cluster::ping(url, CONNECT_TIMEOUT).await {
        Ok(reply) => Finding::ok(
            "redis",
            format!("connected to {place}; PING answered {reply}"),
        ),
        Err(error) => Finding::error("redis", format!("cannot reach {place}: {error}")),
    })
}
