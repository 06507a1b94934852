//! `conclave-homeserver`: command line, configuration loading, and logging and
//! traces (`conclave_homeserver::telemetry`, flushed at the end) around
//! [`conclave_homeserver::run`]. The only place `anyhow` appears.

use anyhow::Context as _;
use clap::{ArgMatches, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use conclave_core::ids::Domain;
use conclave_federation::dev_certs::{DevCertificate, DevCertificateAuthority};
use conclave_homeserver::admin_cli::AdminCommand;
use conclave_homeserver::config::{Config, LogFormat};
use conclave_homeserver::preflight::Severity;
use conclave_homeserver::{Clock as _, Listeners, SystemClock};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

/// Exit code for a configuration that cannot be used.
const EXIT_BAD_CONFIG: u8 = 2;

/// Conclave homeserver: its domain's MLS Authentication Service, key-package
/// directory and Delivery Service.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// TOML configuration file (see conclave-homeserver.example.toml). Without one,
    /// the embedded defaults apply; CONCLAVE_* environment variables override both.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// One-shot commands (all but `run`) log only warnings and errors, on
    /// stderr, around their result on stdout; with --verbose they log at the
    /// configured level (`log.filter`; `RUST_LOG` wins either way).
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the homeserver (the default). Applies pending migrations first.
    Run,
    /// Check the configuration as a start would, and report each check on a
    /// line of its own: the values, the certificates and keys (readable, the
    /// key the certificate's, valid now, the federation certificate valid for
    /// the domain; a warning within 14 days of expiry), the trust roots, the
    /// peers, the database and Redis URLs. Binds no port, creates no file and
    /// migrates nothing, so it can run as an init container.
    ///
    /// Exit codes: 0 every check passed (warnings allowed); 1 (with
    /// --connect) a service is unreachable or unusable, the configuration
    /// itself being valid; 2 the configuration cannot start the server. Each
    /// failure is a line `error KEY: WHY` on stderr.
    CheckConfig {
        /// Also connect to the database (reporting whether its schema is up to
        /// date, has migrations pending, or was migrated by a newer release)
        /// and to Redis when configured (PING), each within 5 seconds.
        #[arg(long)]
        connect: bool,
    },
    /// Apply pending database migrations, print what was applied, and exit.
    /// Safe to run beside running replicas and other `migrate` runs (they take
    /// turns under a PostgreSQL advisory lock). Refuses a database migrated by
    /// a newer release.
    Migrate,
    /// Manage registration tokens (for `registration.policy = "token"`).
    #[command(subcommand)]
    RegistrationToken(RegistrationTokenCommand),
    /// Federation with other domains' homeservers.
    #[command(subcommand)]
    Federation(FederationCommand),
    /// Administer the domain from its host: the admin role, and the admin
    /// API's actions (audited as `operator`). Prints only the result; `--json`
    /// for one JSON object per line.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Make a development CA and a certificate per domain, to try federation on one
    /// machine, and print the [federation] settings to use. Not for production:
    /// the CA's private key is not kept. Needs no configuration.
    DevCerts {
        /// Directory for the PEM files (created if missing; existing files are
        /// never overwritten).
        #[arg(long)]
        out: PathBuf,
        /// A domain to certify (SAN dNSName); repeat for each homeserver.
        #[arg(long = "domain", required = true)]
        domains: Vec<String>,
        /// An IP address to add to every certificate (SAN iPAddress); repeatable.
        #[arg(long = "ip")]
        ip_addresses: Vec<IpAddr>,
    },
    /// Print the shell completion script for SHELL on stdout (see README,
    /// "Shell completions and manual pages"). Needs no configuration.
    Completions {
        /// The shell to complete in.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) on stdout, or write one page per command
    /// into a directory. Needs no configuration.
    Man {
        /// Write `conclave-homeserver.1` and a page per subcommand here
        /// (created if missing) instead.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum FederationCommand {
    /// Show each peer domain's outbox: events of groups hosted here it has not
    /// confirmed yet, its last successful delivery, and the last error. Reads
    /// the database, so it works beside running servers (and shows what every
    /// replica did).
    Status {
        /// One JSON object per peer, one per line.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum RegistrationTokenCommand {
    /// Create a token and print it (it is shown only this once).
    Create {
        /// How many registrations the token allows.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        uses: u32,
        /// Days until the token expires (default: never).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        valid_days: Option<u32>,
    },
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    match &cli.command {
        Some(Command::Completions { shell }) => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "conclave-homeserver",
                &mut std::io::stdout(),
            );
            return ExitCode::SUCCESS;
        }
        Some(Command::Man { out }) => {
            return match manual(out.as_deref()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("conclave-homeserver: {error:#}");
                    ExitCode::FAILURE
                }
            };
        }
        _ => {}
    }
    if let Some(Command::DevCerts {
        out,
        domains,
        ip_addresses,
    }) = &cli.command
    {
        return match dev_certs(out, domains, ip_addresses) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("conclave-homeserver: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::CheckConfig { connect }) = &cli.command {
        return check_config(cli.config.as_deref(), *connect);
    }
    let mut config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("conclave-homeserver: invalid configuration: {error}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    // What `run` checks again before serving, checked here too so that a
    // refusal comes before any port is bound, with the configuration's exit
    // code (the warnings are logged by `run`, once logging is set up).
    if matches!(cli.command, None | Some(Command::Run)) {
        let preflight = conclave_homeserver::preflight::check(&config, SystemTime::now());
        if preflight.has_errors() {
            for error in preflight.errors() {
                eprintln!("conclave-homeserver: invalid configuration: {error}");
            }
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("conclave-homeserver: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let serving = matches!(cli.command, None | Some(Command::Run));
    // A one-shot command's answer is its output; its logs stay quiet unless
    // asked for (`--verbose`, or `RUST_LOG`, which the filter reads first).
    if !serving && !cli.verbose {
        "warn".clone_into(&mut config.log.filter);
    }
    let colour = config.log.format == LogFormat::Human
        && !json_requested(&matches)
        && conclave_homeserver::telemetry::colour_allowed(&std::io::stderr());
    // Within the runtime: the OTLP exporter's channel is spawned on it.
    let log_format = config.log.format;
    let telemetry =
        match runtime.block_on(async { conclave_homeserver::telemetry::init(&config, colour) }) {
            Ok(telemetry) => telemetry,
            Err(error) => {
                eprintln!("conclave-homeserver: {error}");
                return ExitCode::from(EXIT_BAD_CONFIG);
            }
        };
    let result = runtime.block_on(async {
        match cli.command.unwrap_or(Command::Run) {
            Command::Run => run(config).await,
            Command::Migrate => migrate(config).await,
            Command::RegistrationToken(RegistrationTokenCommand::Create { uses, valid_days }) => {
                create_registration_token(config, uses, valid_days).await
            }
            Command::Federation(FederationCommand::Status { json }) => {
                federation_status(config, json).await
            }
            Command::Admin(command) => {
                conclave_homeserver::admin_cli::run(config, Arc::new(SystemClock), command)
                    .await
                    .map_err(anyhow::Error::from)
            }
            Command::DevCerts { .. }
            | Command::CheckConfig { .. }
            | Command::Completions { .. }
            | Command::Man { .. } => {
                unreachable!("handled before the configuration is loaded")
            }
        }
    });
    if serving && let Err(error) = &result {
        report_serving_failure(error, log_format);
    }
    // After the server stopped, with the runtime still running (the exporter's
    // connection is on it): the last requests' spans leave before the exit.
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // A one-shot command's error is its answer, like its output.
            if !serving {
                eprintln!("conclave-homeserver: {error:#}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Why serving stopped, once as an ERROR event with the error's whole chain
/// (a JSON log collector reads only the log), and as a plain line on stderr
/// unless the log already wrote it there as text: on a terminal the same
/// failure twice would read as two.
fn report_serving_failure(error: &anyhow::Error, log_format: LogFormat) {
    let chain = error_chain(error);
    tracing::error!(error = %chain, "serving failed");
    let logged_as_text = log_format == LogFormat::Human && tracing::enabled!(tracing::Level::ERROR);
    if !logged_as_text {
        eprintln!("conclave-homeserver: {chain}");
    }
}

/// The error and its causes joined by ": ". Errors that name their source in
/// their own message are common (sqlx's, through sea-orm's), so a cause whose
/// text is already there is skipped rather than repeated.
fn error_chain(error: &anyhow::Error) -> String {
    let mut chain = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if chain.contains(&text) {
            continue;
        }
        if !chain.is_empty() {
            chain.push_str(": ");
        }
        chain.push_str(&text);
    }
    chain
}

/// Whether the command line asks for JSON output (`--json` at any level of
/// subcommands): the log lines around it then have no colour codes either.
fn json_requested(matches: &ArgMatches) -> bool {
    let here = matches
        .try_get_one::<bool>("json")
        .ok()
        .flatten()
        .copied()
        .unwrap_or(false);
    here || matches
        .subcommand()
        .is_some_and(|(_, sub_matches)| json_requested(sub_matches))
}

/// `man`: the page of `conclave-homeserver` on stdout, or every page (one per
/// command, as `clap_mangen` names them) into `out`.
fn manual(out: Option<&Path>) -> anyhow::Result<()> {
    let command = Cli::command();
    match out {
        None => clap_mangen::Man::new(command)
            .render(&mut std::io::stdout().lock())
            .context("cannot write the manual page"),
        Some(directory) => {
            std::fs::create_dir_all(directory)
                .with_context(|| format!("cannot create {}", directory.display()))?;
            clap_mangen::generate_to(command, directory).with_context(|| {
                format!("cannot write the manual pages into {}", directory.display())
            })
        }
    }
}

/// `check-config`: prints each finding (`ok` and `warn` on stdout, `error` on
/// stderr) and a closing line, with no logging around them.
fn check_config(file: Option<&Path>, connect: bool) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("conclave-homeserver: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let report = runtime.block_on(conclave_homeserver::check_config::check_config(
        file,
        connect,
        SystemTime::now(),
    ));
    for finding in &report.findings {
        match finding.severity {
            Severity::Ok => println!("ok   {finding}"),
            Severity::Warning => println!("warn {finding}"),
            Severity::Error => eprintln!("error {finding}"),
        }
    }
    if report.error_count() > 0 {
        eprintln!("{}", report.summary());
    } else {
        println!("{}", report.summary());
    }
    ExitCode::from(report.exit_code())
}

async fn run(config: Config) -> anyhow::Result<()> {
    let listeners = Listeners::bind(&config).await?;
    conclave_homeserver::run(config, listeners, Arc::new(SystemClock), shutdown_signal())
        .await
        .context("homeserver failed")
}

async fn migrate(config: Config) -> anyhow::Result<()> {
    let applied = conclave_homeserver::admin::migrate(config).await?;
    if applied.is_empty() {
        println!("the database schema is up to date; nothing to apply");
    }
    for name in &applied {
        println!("applied {name}");
    }
    Ok(())
}

async fn federation_status(config: Config, json: bool) -> anyhow::Result<()> {
    let statuses = conclave_homeserver::admin::federation_status(config).await?;
    // The same text and JSON as `admin federation peers`.
    conclave_homeserver::admin_cli::write_peers(
        &mut std::io::stdout().lock(),
        &statuses,
        json,
        SystemClock.now_ms(),
    )?;
    Ok(())
}

async fn create_registration_token(
    config: Config,
    uses: u32,
    valid_days: Option<u32>,
) -> anyhow::Result<()> {
    let token = conclave_homeserver::admin::create_registration_token(
        config,
        Arc::new(SystemClock),
        uses,
        valid_days,
    )
    .await?;
    println!("{}", token.token);
    Ok(())
}

/// `dev-certs`: writes `ca.pem`, and `DOMAIN.pem` and `DOMAIN.key.pem` per domain,
/// into `out`, and prints each homeserver's federation settings.
fn dev_certs(out: &Path, domains: &[String], ip_addresses: &[IpAddr]) -> anyhow::Result<()> {
    let mut parsed: Vec<Domain> = Vec::new();
    for domain in domains {
        let domain: Domain = domain.parse()?;
        anyhow::ensure!(
            !parsed.contains(&domain),
            "--domain {domain} is given twice"
        );
        parsed.push(domain);
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let out = out
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", out.display()))?;
    let ca_path = out.join("ca.pem");
    let paths = |domain: &Domain| {
        (
            out.join(format!("{domain}.pem")),
            out.join(format!("{domain}.key.pem")),
        )
    };
    // Check every file first, so a refusal leaves nothing half-written.
    let mut all_paths = vec![ca_path.clone()];
    for domain in &parsed {
        let (certificate, key) = paths(domain);
        all_paths.extend([certificate, key]);
    }
    for path in &all_paths {
        anyhow::ensure!(
            !path.exists(),
            "{} exists already; remove it or choose another --out",
            path.display()
        );
    }
    let now_unix_seconds = SystemClock.now_ms() / 1000;
    let authority = DevCertificateAuthority::generate(now_unix_seconds)?;
    let issued = parsed
        .iter()
        .map(|domain| authority.issue(domain, ip_addresses))
        .collect::<Result<Vec<DevCertificate>, _>>()?;
    write_new_file(&ca_path, &authority.certificate_pem(), false)?;
    for certificate in &issued {
        let (certificate_path, key_path) = paths(&certificate.domain);
        write_new_file(&certificate_path, &certificate.certificate_pem, false)?;
        write_new_file(&key_path, &certificate.private_key_pem, true)?;
    }

    println!(
        "Wrote a development CA and certificates to {}:",
        out.display()
    );
    println!("  ca.pem  the CA: trust_roots of every homeserver");
    for certificate in &issued {
        println!(
            "  {domain}.pem, {domain}.key.pem  certificate (SHA-256 {pin}) and key of {domain}",
            domain = certificate.domain,
            pin = certificate.pin,
        );
    }
    for certificate in &issued {
        let (certificate_path, key_path) = paths(&certificate.domain);
        println!();
        println!(
            "# Configuration of the homeserver for {}",
            certificate.domain
        );
        println!("domain = \"{}\"", certificate.domain);
        println!();
        println!("[federation]");
        println!("certificate = \"{}\"", certificate_path.display());
        println!("private_key = \"{}\"", key_path.display());
        println!("trust_roots = \"{}\"", ca_path.display());
        for peer in issued
            .iter()
            .filter(|peer| peer.domain != certificate.domain)
        {
            println!();
            println!("[federation.peers.\"{}\"]", peer.domain);
            println!(
                "# Where {}'s federation API listens (its federation.listen).",
                peer.domain
            );
            println!("endpoint = \"https://{}:7401\"", peer.domain);
            println!("# pinned_sha256 = \"{}\"", peer.pin);
        }
    }
    Ok(())
}

/// Creates `path` with `contents`, failing if it exists; `private` files are
/// readable by their owner only.
fn write_new_file(path: &Path, contents: &str, private: bool) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Resolves on SIGTERM (Kubernetes stopping the pod) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing a SIGTERM handler cannot fail on unix");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
