//! `conclave-bench`: Conclave's benchmark. Starts homeservers in this process
//! (on 127.0.0.1, each on a fresh SQLite or PostgreSQL database), drives them
//! over gRPC as clients do, with real openmls clients, and prints Markdown
//! tables. BENCHMARKS.md says how to run it, what each figure means, and the
//! results on the reference machine.
//!
//! # Layout
//! - `api`: the gRPC client API with tokens and idempotency keys.
//! - `mls`: openmls devices and members: key packages, commits, Welcomes, messages.
//! - `devices`: enrolling devices (Register/Login and one key package each).
//! - `server`: the in-process homeserver and its settings.
//! - `throughput`: benchmark 1, message throughput and end-to-end latency.
//! - `scaling`: benchmarks 2 to 4 on one growing group: fan-out, add commits at
//!   the hub and at a member, writes per message.
//! - `postgres`: PostgreSQL's row counters and a query-size diagnostic.
//! - `report`: percentiles and Markdown tables.

mod api;
mod devices;
mod mls;
mod postgres;
mod report;
mod scaling;
mod server;
mod throughput;

use clap::{Parser, ValueEnum};
use conclave_homeserver::test_support::DatabaseChoice;
use report::{Table, count, ms, seconds};
use scaling::{ScalingResults, ScalingSettings};
use std::time::Instant;
use throughput::{ThroughputRun, ThroughputSettings};

/// Conclave's benchmark: message throughput and latency, fan-out, add commits at
/// the hub and at a member, and database writes per message. See BENCHMARKS.md.
#[derive(Debug, Parser)]
#[command(name = "conclave-bench")]
struct Args {
    /// Smaller sizes and counts, for a sanity run of a few minutes.
    #[arg(long)]
    quick: bool,
    /// The database(s) to run the homeserver on.
    #[arg(long, value_enum, default_value_t = DatabaseArg::Both)]
    database: DatabaseArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DatabaseArg {
    Sqlite,
    Postgres,
    Both,
}

impl DatabaseArg {
    fn choices(self) -> Vec<DatabaseChoice> {
        match self {
            DatabaseArg::Sqlite => vec![DatabaseChoice::Sqlite],
            DatabaseArg::Postgres => vec![DatabaseChoice::Postgres],
            DatabaseArg::Both => DatabaseChoice::ALL.to_vec(),
        }
    }
}

fn throughput_settings(quick: bool) -> ThroughputSettings {
    ThroughputSettings {
        messages: if quick { 300 } else { 3000 },
        sender_counts: vec![1, 10, 100],
    }
}

fn scaling_settings(quick: bool) -> ScalingSettings {
    if quick {
        ScalingSettings {
            group_sizes: vec![10, 100],
            fan_out_sizes: vec![100],
            add_batch: 1000,
            probe_commits: 3,
            write_messages: 50,
            fan_out_messages: 3,
            streams_per_connection: 100,
        }
    } else {
        ScalingSettings {
            group_sizes: vec![10, 100, 1000, 10_000],
            fan_out_sizes: vec![1000, 10_000],
            add_batch: 1000,
            probe_commits: 5,
            write_messages: 200,
            fan_out_messages: 3,
            streams_per_connection: 100,
        }
    }
}

/// Server-side errors go to stderr (`RUST_LOG` chooses more, e.g. `info`).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// The 1, 5 and 15 minute load averages, to show whether anything else was
/// using the machine.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".to_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging();
    let started = Instant::now();
    let mut loads = Vec::new();
    let databases = args.database.choices();
    let throughput = throughput_settings(args.quick);
    let scaling = scaling_settings(args.quick);

    let mut throughput_runs = Vec::new();
    for &database in &databases {
        let phase = format!("throughput on {}", server::database_name(database));
        loads.push((phase.clone(), load_average()));
        eprintln!(
            "[{:>6.1} s] {phase} (load average {})",
            started.elapsed().as_secs_f64(),
            load_average()
        );
        throughput_runs.extend(throughput::run(database, &throughput).await?);
    }
    let mut scaling_results = Vec::new();
    for &database in &databases {
        let phase = format!("growing group on {}", server::database_name(database));
        loads.push((phase.clone(), load_average()));
        eprintln!(
            "[{:>6.1} s] {phase} (load average {})",
            started.elapsed().as_secs_f64(),
            load_average()
        );
        scaling_results.push(scaling::run(database, &scaling).await?);
    }
    loads.push(("end".to_owned(), load_average()));
    eprintln!("[{:>6.1} s] done", started.elapsed().as_secs_f64());

    println!(
        "## conclave-bench{} ({} s)\n",
        if args.quick { " --quick" } else { "" },
        started.elapsed().as_secs()
    );
    println!("{}", throughput_table(&throughput_runs, &throughput));
    println!("{}", fan_out_table(&scaling_results));
    println!("{}", commit_table(&scaling_results));
    println!("{}", write_table(&scaling_results));
    println!("{}", build_table(&scaling_results));
    if scaling_results.iter().any(|r| !r.round_trips.is_empty()) {
        println!("{}", round_trip_table(&scaling_results));
    }
    for results in &scaling_results {
        for (phase, retries) in &results.retries {
            println!(
                "- {}: {retries} calls answered UNAVAILABLE and retried while {phase}",
                server::database_name(results.database)
            );
        }
        if let Some(failure) = &results.failure {
            println!(
                "**{}: stopped early:** {failure}\n",
                server::database_name(results.database)
            );
        }
    }
    let loads: Vec<String> = loads
        .iter()
        .map(|(phase, load)| format!("{phase}: {load}"))
        .collect();
    println!(
        "\nLoad averages (1, 5, 15 min) at the start of each part: {}",
        loads.join("; ")
    );
    Ok(())
}

fn throughput_table(runs: &[ThroughputRun], settings: &ThroughputSettings) -> Table {
    let mut table = Table::new(
        format!(
            "1. Application messages: {} per run, one receiver (latency: SendMessage call to the receiver's stream yielding it)",
            count(settings.messages as u64)
        ),
        vec![
            "Database",
            "Senders",
            "Messages/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "encryption µs/message (untimed)",
            "UNAVAILABLE retries",
        ],
    );
    for run in runs {
        table.row(vec![
            server::database_name(run.database).to_owned(),
            run.senders.to_string(),
            format!("{:.0}", run.messages_per_second()),
            ms(run.latencies.median()),
            ms(run.latencies.percentile(0.99)),
            ms(run.latencies.max()),
            format!("{:.0}", run.encryption_per_message.as_secs_f64() * 1e6),
            run.retries.to_string(),
        ]);
    }
    table
}

fn fan_out_table(results: &[ScalingResults]) -> Table {
    let mut table = Table::new(
        "2. Fan-out: one message to every member device's Subscribe stream (ms from the SendMessage call)",
        vec![
            "Database",
            "Subscribed devices",
            "last device, median of timed",
            "last device, each timed",
            "median device",
            "first device",
            "last device, first message on fresh streams",
            "opening all streams s",
        ],
    );
    for result in results {
        for step in &result.fan_outs {
            let lasts = report::Samples::new(step.timed.iter().map(|d| d.arrivals.max()).collect());
            let medians =
                report::Samples::new(step.timed.iter().map(|d| d.arrivals.median()).collect());
            let firsts =
                report::Samples::new(step.timed.iter().map(|d| d.arrivals.min()).collect());
            table.row(vec![
                server::database_name(result.database).to_owned(),
                count(step.subscribers as u64),
                ms(lasts.median()),
                step.timed
                    .iter()
                    .map(|d| ms(d.arrivals.max()))
                    .collect::<Vec<_>>()
                    .join(", "),
                ms(medians.median()),
                ms(firsts.median()),
                ms(step.warm_up.arrivals.max()),
                seconds(step.open),
            ]);
        }
    }
    table
}

fn commit_table(results: &[ScalingResults]) -> Table {
    let mut table = Table::new(
        "3. Add-one commit (no path): hub (SubmitCommit over gRPC) vs. an openmls member, medians in ms",
        vec![
            "Database",
            "Group size",
            "hub: SubmitCommit",
            "member: process_message + merge",
            "committer: build (openmls)",
            "commit bytes",
            "Welcome bytes",
        ],
    );
    for result in results {
        for step in &result.commits {
            table.row(vec![
                server::database_name(result.database).to_owned(),
                count(step.size as u64),
                ms(step.submit.median()),
                ms(step.process.median()),
                ms(step.build.median()),
                count(step.commit_bytes as u64),
                count(step.welcome_bytes as u64),
            ]);
        }
    }
    table
}

fn write_table(results: &[ScalingResults]) -> Table {
    let mut table = Table::new(
        "4. Writes per application message as the group grows (one sender, messages one after another)",
        vec![
            "Database",
            "Group size",
            "Messages",
            "rows written/message",
            "of which (inserted/updated/deleted per message)",
            "SendMessage p50 ms",
            "p99 ms",
        ],
    );
    for result in results {
        for step in &result.writes {
            let per_message = |value: i64| value as f64 / step.messages as f64;
            let (rows, breakdown) = match &step.writes {
                Some(writes) => (
                    format!("{:.2}", per_message(writes.rows())),
                    writes
                        .tables
                        .iter()
                        .map(|(table, rows)| {
                            format!(
                                "{table} {:.2}/{:.2}/{:.2}",
                                per_message(rows.inserted),
                                per_message(rows.updated),
                                per_message(rows.deleted)
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
                None => (
                    "n/a".to_owned(),
                    "n/a (PostgreSQL counters only)".to_owned(),
                ),
            };
            table.row(vec![
                server::database_name(result.database).to_owned(),
                count(step.size as u64),
                step.messages.to_string(),
                rows,
                breakdown,
                ms(step.send.median()),
                ms(step.send.percentile(0.99)),
            ]);
        }
    }
    table
}

fn build_table(results: &[ScalingResults]) -> Table {
    let mut table = Table::new(
        "Setup: growing the group (batches of add commits; includes enrolling the devices)",
        vec![
            "Database",
            "Grown to",
            "add commits",
            "total s",
            "of which enrolment s",
            "of which SubmitCommit s",
            "ratchet tree bytes",
        ],
    );
    for result in results {
        for step in &result.builds {
            table.row(vec![
                server::database_name(result.database).to_owned(),
                count(step.size as u64),
                step.commits.to_string(),
                seconds(step.elapsed),
                seconds(step.enrolment),
                seconds(step.submit),
                count(step.tree_bytes as u64),
            ]);
        }
    }
    table
}

fn round_trip_table(results: &[ScalingResults]) -> Table {
    let mut table = Table::new(
        "Diagnostic: one PostgreSQL query with one bytea parameter (sea-orm, sqlx 0.9 over TCP, as the homeserver connects), ms",
        vec!["Parameter bytes", "median", "min", "max"],
    );
    for result in results {
        for (size, durations) in &result.round_trips {
            table.row(vec![
                count(*size as u64),
                ms(durations.median()),
                ms(durations.min()),
                ms(durations.max()),
            ]);
        }
    }
    table
}
