//! Profiling windows: `benchmarks/profile.sh` runs the benchmark under
//! `perf record` with its events off (`--delay -1`) and a control channel
//! (`--control fd:CTL,ACK`); the benchmark turns the events on for exactly one
//! section (`--perf-section`), such as the run with 100 senders or the
//! add-one commits at 10,000 members, and off again after it, so that the
//! profile holds that section alone and not the set-up before it.

use anyhow::Context as _;
use std::fmt;
use std::io::{BufRead as _, Write as _};
use std::path::PathBuf;
use std::sync::OnceLock;

/// A section of the benchmark that can be profiled alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    /// One throughput run (benchmark 1).
    Throughput { senders: usize, groups: usize },
    /// The timed add-one commits at one group size (benchmark 3).
    Commits { size: usize },
}

impl fmt::Display for Section {
    /// The name `--perf-section` takes: `throughput:SENDERS:GROUPS`, `commits:SIZE`.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Section::Throughput { senders, groups } => {
                write!(formatter, "throughput:{senders}:{groups}")
            }
            Section::Commits { size } => write!(formatter, "commits:{size}"),
        }
    }
}

/// Where perf's control and acknowledgement FIFOs are, and which section to
/// profile.
#[derive(Debug)]
struct Control {
    directory: PathBuf,
    section: String,
}

static CONTROL: OnceLock<Control> = OnceLock::new();

/// Profile `section` (by its name, see [`Section`]'s `Display`) through the
/// FIFOs `control` and `ack` in `directory`, which perf reads and answers.
pub(crate) fn configure(directory: PathBuf, section: String) {
    // Set once, from the command line, before any part runs.
    let _ = CONTROL.set(Control { directory, section });
    // The script tells this process's samples from the homeserver's by pid.
    eprintln!("  perf: benchmark in process {}", std::process::id());
}

/// Turns perf's events on if `section` is the one to profile; they go off
/// again when the returned window is dropped.
pub(crate) fn window(section: Section) -> anyhow::Result<Option<Window>> {
    let Some(control) = CONTROL.get() else {
        return Ok(None);
    };
    if control.section != section.to_string() {
        return Ok(None);
    }
    command(control, "enable")?;
    eprintln!("  perf: recording {section}");
    Ok(Some(Window { control }))
}

/// Profiling on until dropped.
#[derive(Debug)]
pub(crate) struct Window {
    control: &'static Control,
}

impl Drop for Window {
    fn drop(&mut self) {
        if let Err(error) = command(self.control, "disable") {
            eprintln!("  perf: could not turn recording off: {error:#}");
        }
    }
}

/// Sends perf one command and waits for its acknowledgement, so that the
/// events are on (or off) before the section's work starts (or goes on).
fn command(control: &Control, command: &str) -> anyhow::Result<()> {
    let control_path = control.directory.join("control");
    let ack_path = control.directory.join("ack");
    // Both FIFOs are held open read-write by the script, so neither open blocks.
    let mut fifo = std::fs::OpenOptions::new()
        .write(true)
        .open(&control_path)
        .with_context(|| format!("opening {}", control_path.display()))?;
    writeln!(fifo, "{command}")?;
    let ack = std::fs::File::open(&ack_path)
        .with_context(|| format!("opening {}", ack_path.display()))?;
    let mut line = String::new();
    std::io::BufReader::new(ack).read_line(&mut line)?;
    anyhow::ensure!(line.trim() == "ack", "perf answered {line:?} to {command}");
    Ok(())
}
