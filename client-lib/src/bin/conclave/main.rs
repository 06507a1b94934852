//! `conclave`: the command-line client, for people and scripts, built on
//! `conclave_client`.
//!
//! Output goes to stdout (text, or one JSON object with `--json`; JSON lines for
//! `listen` and `chat`); errors are one `error: ...` line on stderr with exit
//! code 1; clap's usage errors exit with 2; a message kept but not sent yet
//! (`ClientError::NotSentYet`) is one line saying so, with exit code 75.
//! Logs go to stderr only with `-v`. With `OTEL_EXPORTER_OTLP_ENDPOINT` set,
//! the command's spans go to that OTLP collector (`telemetry`).

mod args;
mod commands;
mod group_output;
mod messaging;
mod output;
mod password;
mod telemetry;

use std::io::IsTerminal as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{CommandFactory as _, FromArgMatches as _};
use conclave_client::ClientError;
use tracing::Instrument as _;

use crate::args::{Cli, Command};

/// Exit status of a message kept but not sent yet: sysexits.h's EX_TEMPFAIL,
/// so that a script tells "try later" from "failed" and does not send the
/// message again (it would go out twice).
const EXIT_NOT_SENT_YET: u8 = 75;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    match &cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "conclave",
                &mut std::io::stdout(),
            );
            return ExitCode::SUCCESS;
        }
        Command::Man { out } => {
            return match manual(out.as_deref()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("error: {}", one_line(&error));
                    ExitCode::FAILURE
                }
            };
        }
        _ => {}
    }
    // The subcommand's name only (a fixed set): never its arguments, which
    // hold message text and user names.
    let command = matches.subcommand_name().unwrap_or("").to_owned();
    // Colour codes only on a terminal, never around JSON or with NO_COLOR.
    let colour = !cli.json
        && std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty());
    let telemetry = match telemetry::init(cli.verbose, colour) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("error: {}", one_line(&error));
            return ExitCode::FAILURE;
        }
    };
    let as_json = cli.json;
    let span = tracing::info_span!("cli_command", conclave.command = command.as_str());
    let result = commands::run(cli).instrument(span).await;
    telemetry.shutdown().await;
    match result {
        Ok(report) => {
            report.print(as_json);
            ExitCode::SUCCESS
        }
        Err(error) => match error.downcast_ref::<ClientError>() {
            Some(ClientError::NotSentYet { group, source }) => {
                eprintln!("{}", not_sent_yet_line(group, source));
                ExitCode::from(EXIT_NOT_SENT_YET)
            }
            _ => {
                eprintln!("error: {}", one_line(&error));
                ExitCode::FAILURE
            }
        },
    }
}

/// The one stderr line of a message kept but not sent yet. In the CLI's own
/// words rather than the library's: why it is not sent (the homeserver away,
/// its certificate refused, ...), and the commands that send it.
fn not_sent_yet_line(group: &str, cause: &ClientError) -> String {
    let line = format!(
        "not sent yet: the message to {group} is kept, because {cause}; it goes out with this \
         device's next send, groups, listen, chat or group command that gets through (do not \
         send it again)"
    );
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `man`: the page of `conclave` on stdout, or every page (one per command,
/// as `clap_mangen` names them) into `out`.
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

/// The error and its causes joined by ": ", on one line. The library's messages
/// already name their cause, so a cause whose text is already there is skipped
/// rather than repeated.
fn one_line(error: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if message.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    // A multi-line cause still makes one line, as scripts expect.
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use anyhow::Context;

    use super::*;

    #[test]
    fn errors_print_as_one_line_without_repeated_causes() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        // A library error that already names its cause, and also exposes it.
        #[derive(Debug, thiserror::Error)]
        #[error("cannot open state: {source}")]
        struct Open {
            source: std::io::Error,
        }
        let error = anyhow::Error::from(Open { source: io });
        assert_eq!(one_line(&error), "cannot open state: no such file");

        let error = anyhow::anyhow!("first\nline").context("reading password file");
        assert_eq!(one_line(&error), "reading password file: first line");
        let error: anyhow::Result<()> = Err(anyhow::anyhow!("inner")).context("outer");
        assert_eq!(one_line(&error.unwrap_err()), "outer: inner");
    }
}
