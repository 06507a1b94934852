//! `conclave`: the command-line client, for people and scripts, built on
//! `conclave_client`.
//!
//! Output goes to stdout (text, or one JSON object with `--json`; JSON lines for
//! `listen` and `chat`); errors are one `error: ...` line on stderr with exit
//! code 1; clap's usage errors exit with 2.
//! Logs go to stderr only with `-v`.

mod args;
mod commands;
mod group_output;
mod messaging;
mod output;
mod password;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::args::Cli;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let as_json = cli.json;
    match commands::run(cli).await {
        Ok(report) => {
            report.print(as_json);
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {}", one_line(&error));
            ExitCode::FAILURE
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

fn init_logging(verbose: u8) {
    let filter = match verbose {
        0 => return,
        1 => EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new("conclave_client=debug,conclave=debug,warn")),
        _ => EnvFilter::new("debug"),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
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
