//! `conclave-homeserver`: command line, configuration loading and logging around
//! [`conclave_homeserver::run`]. The only place `anyhow` appears.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use conclave_homeserver::config::{Config, LogFormat};
use conclave_homeserver::{Listeners, SystemClock};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

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
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the homeserver (the default).
    Run,
    /// Manage registration tokens (for `registration.policy = "token"`).
    #[command(subcommand)]
    RegistrationToken(RegistrationTokenCommand),
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
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("conclave-homeserver: invalid configuration: {error}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    init_tracing(&config);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("conclave-homeserver: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command.unwrap_or(Command::Run) {
            Command::Run => run(config).await,
            Command::RegistrationToken(RegistrationTokenCommand::Create { uses, valid_days }) => {
                create_registration_token(config, uses, valid_days).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("conclave-homeserver: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let listeners = Listeners::bind(&config).await?;
    conclave_homeserver::run(config, listeners, Arc::new(SystemClock), shutdown_signal())
        .await
        .context("homeserver failed")
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

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
