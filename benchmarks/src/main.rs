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
//! - `federation`: benchmarks 5 and 6 across two domains: end-to-end latency
//!   through the hub and the follower, and hub-to-follower throughput (live,
//!   and catching up after the follower was down) per outbox batch size.
//! - `milestones`: moments inside the in-process homeservers, from their own
//!   debug events, which split the cross-domain latency.
//! - `cluster`: benchmark 8, benchmark 1 on a cluster of 1, 2 and 3
//!   replicas (PostgreSQL and Redis), with the wake-up latency across replicas.
//! - `telemetry`: benchmark 9, benchmark 1 with metrics and tracing off, metrics
//!   on, and both on with every span exported over OTLP.
//! - `suites`: benchmark 10, the classic and post-quantum cipher suites'
//!   key packages, commits and Welcomes on the client.
//! - `memory`: benchmark 7, the process's memory after 1,000 registrations
//!   (an Argon2id hash each), and another process's memory (table 11).
//! - `perf`: turning a `perf record` on for one section alone.
//! - `postgres`: PostgreSQL's row counters and a query-size diagnostic.
//! - `report`: percentiles and Markdown tables.

mod api;
mod cluster;
mod devices;
mod federation;
mod memory;
mod milestones;
mod mls;
mod perf;
mod postgres;
mod report;
mod scaling;
mod server;

/// The system's allocator, as `conclave-homeserver` uses, with a count of the
/// bytes allocated and not yet freed: the live heap a `--serve` child reports
/// (table 11), which the resident set size cannot tell apart from what the
/// allocator keeps of freed memory.
#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);
mod suites;
mod telemetry;
mod throughput;

use clap::{Parser, ValueEnum};
use cluster::{ClusterRun, ClusterSettings};
use conclave_test_support::DatabaseChoice;
use federation::{FederationResults, FederationSettings};
use memory::{MemoryRun, MemorySettings};
use report::{Table, count, ms, seconds};
use scaling::{ScalingResults, ScalingSettings};
use std::time::Instant;
use throughput::{ThroughputRun, ThroughputSettings};

/// Conclave's benchmark: message throughput and latency, fan-out, add commits at
/// the hub and at a member, database writes per message, and the same across
/// two federated domains. See BENCHMARKS.md.
#[derive(Debug, Parser)]
#[command(name = "conclave-bench")]
struct Args {
    /// Smaller sizes and counts, for a sanity run of a few minutes.
    #[arg(long)]
    quick: bool,
    /// The database(s) to run the homeserver on.
    #[arg(long, value_enum, default_value_t = DatabaseArg::Both)]
    database: DatabaseArg,
    /// Only these parts (comma-separated; all when not given).
    #[arg(long, value_enum, value_delimiter = ',')]
    part: Vec<Part>,
    /// Scaling: grow the group to these sizes only (comma-separated).
    #[arg(long, value_delimiter = ',')]
    sizes: Vec<usize>,
    /// Scaling: only grow the group and time add-one commits (no message
    /// writes, no fan-out).
    #[arg(long)]
    commits_only: bool,
    /// Throughput and scaling: run the homeserver in a child process of its
    /// own (this binary with `--serve`), so that its memory is measured apart
    /// from the clients' (table 11).
    #[arg(long)]
    server_process: bool,
    /// Profiling (`benchmarks/profile.sh`): the directory holding the FIFOs
    /// `control` and `ack` of a `perf record --control`.
    #[arg(long, requires = "perf_section")]
    perf_control: Option<std::path::PathBuf>,
    /// Profiling: the one section recorded, `throughput:SENDERS:GROUPS` or
    /// `commits:SIZE`.
    #[arg(long, requires = "perf_control")]
    perf_section: Option<String>,
    /// Internal: run only a homeserver on a fresh database of this kind, for a
    /// parent benchmark run with `--server-process`; answers the parent's
    /// live-heap requests on stdin, and stops when stdin closes.
    #[arg(long, value_enum, hide = true)]
    serve: Option<DatabaseArg>,
}

/// The benchmark's parts, each on homeservers of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    /// Benchmark 1: application messages through one homeserver.
    Throughput,
    /// Benchmarks 2 to 4: one group grown to each size.
    Scaling,
    /// Benchmarks 5 and 6: two federated homeservers.
    Federation,
    /// Benchmark 7: the process's memory after many registrations.
    Memory,
    /// Benchmark 8: benchmark 1 on clusters of 1, 2 and 3 replicas (PostgreSQL
    /// only, whatever `--database` says).
    Cluster,
    /// Benchmark 9: benchmark 1 with metrics and tracing off, metrics on, and
    /// both on with every span exported (PostgreSQL only).
    Telemetry,
    /// Benchmark 10: key packages, commits and Welcomes of the classic and
    /// the post-quantum cipher suite, on the client (no server, no database).
    Suites,
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

/// Benchmark 1's settings: 1, 10 and 100 senders in one group, then 100
/// senders over 10 groups with one receiver in all.
fn throughput_settings(quick: bool) -> Vec<ThroughputSettings> {
    let messages = if quick { 300 } else { 3000 };
    vec![
        ThroughputSettings {
            messages,
            sender_counts: vec![1, 10, 100],
            groups: 1,
        },
        ThroughputSettings {
            messages,
            sender_counts: vec![100],
            groups: 10,
        },
    ]
}

fn cluster_settings(quick: bool) -> ClusterSettings {
    ClusterSettings {
        replica_counts: vec![1, 2, 3],
        throughput: ThroughputSettings {
            messages: if quick { 300 } else { 3000 },
            sender_counts: vec![3, 30],
            groups: 1,
        },
    }
}

fn telemetry_settings(quick: bool) -> ThroughputSettings {
    ThroughputSettings {
        messages: if quick { 300 } else { 3000 },
        sender_counts: vec![10, 100],
        groups: 1,
    }
}

fn federation_settings(quick: bool) -> FederationSettings {
    FederationSettings {
        latency_messages: if quick { 100 } else { 500 },
        throughput_messages: if quick { 2000 } else { 10_000 },
        senders: 10,
        batch_sizes: vec![1, 10, 100],
    }
}

fn memory_settings(quick: bool) -> MemorySettings {
    MemorySettings {
        registrations: if quick { 100 } else { 1000 },
        concurrency: 32,
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
            streams_per_connection: 50,
        }
    } else {
        ScalingSettings {
            group_sizes: vec![10, 100, 1000, 10_000],
            fan_out_sizes: vec![1000, 10_000],
            add_batch: 1000,
            probe_commits: 5,
            write_messages: 200,
            fan_out_messages: 3,
            streams_per_connection: 50,
        }
    }
}

/// Server-side errors go to stderr (`RUST_LOG` chooses more, e.g. `info`);
/// two of the homeserver's debug events are recorded apart, whatever the log
/// shows (see `milestones`).
fn init_logging(tracing: Option<&telemetry::Tracing>) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(filter),
        )
        .with(milestones::layer())
        .with(tracing.map(telemetry::Tracing::layer))
        .init();
}

/// The 1, 5 and 15 minute load averages, to show whether anything else was
/// using the machine.
/// Notes the load average at the start of a part (for the report) and says on
/// stderr which part starts.
fn announce_phase(loads: &mut Vec<(String, String)>, started: std::time::Instant, phase: String) {
    let load = load_average();
    eprintln!(
        "[{:>6.1} s] {phase} (load average {load})",
        started.elapsed().as_secs_f64()
    );
    loads.push((phase, load));
}

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
    if let Some(database) = args.serve {
        init_logging(None);
        let database = match database {
            DatabaseArg::Sqlite => DatabaseChoice::Sqlite,
            DatabaseArg::Postgres => DatabaseChoice::Postgres,
            DatabaseArg::Both => anyhow::bail!("--serve takes one database: sqlite or postgres"),
        };
        return server::serve(database).await;
    }
    if let (Some(directory), Some(section)) = (&args.perf_control, &args.perf_section) {
        perf::configure(directory.clone(), section.clone());
    }
    let placement = if args.server_process {
        server::Placement::OwnProcess
    } else {
        server::Placement::InProcess
    };
    let runs = |part: Part| args.part.is_empty() || args.part.contains(&part);
    // Before the subscriber is set: its OpenTelemetry layer exports to it.
    let tracing = if runs(Part::Telemetry) {
        Some(telemetry::Tracing::start().await?)
    } else {
        None
    };
    init_logging(tracing.as_ref());
    let started = Instant::now();
    let mut loads = Vec::new();
    let databases = args.database.choices();
    let throughput = throughput_settings(args.quick);
    let mut scaling = scaling_settings(args.quick);
    if !args.sizes.is_empty() {
        scaling.group_sizes = args.sizes.clone();
    }
    if args.commits_only {
        scaling.fan_out_sizes.clear();
        scaling.write_messages = 0;
    }
    let federation = federation_settings(args.quick);
    let memory = memory_settings(args.quick);
    let cluster = cluster_settings(args.quick);

    // First, so that no other part's memory is counted in its figures.
    let mut memory_runs = Vec::new();
    for &database in databases.iter().filter(|_| runs(Part::Memory)) {
        announce_phase(
            &mut loads,
            started,
            format!("registrations on {}", server::database_name(database)),
        );
        memory_runs.push(memory::run(database, &memory).await?);
    }
    let mut throughput_runs = Vec::new();
    for &database in databases.iter().filter(|_| runs(Part::Throughput)) {
        announce_phase(
            &mut loads,
            started,
            format!("throughput on {}", server::database_name(database)),
        );
        for settings in &throughput {
            throughput_runs.extend(throughput::run(database, settings, placement).await?);
        }
    }
    let mut scaling_results = Vec::new();
    for &database in databases.iter().filter(|_| runs(Part::Scaling)) {
        announce_phase(
            &mut loads,
            started,
            format!("growing group on {}", server::database_name(database)),
        );
        scaling_results.push(scaling::run(database, &scaling, placement).await?);
    }
    let mut federation_results = Vec::new();
    for &database in databases.iter().filter(|_| runs(Part::Federation)) {
        announce_phase(
            &mut loads,
            started,
            format!("federation on {}", server::database_name(database)),
        );
        federation_results.push(federation::run(database, &federation).await);
    }
    let mut cluster_runs = Vec::new();
    if runs(Part::Cluster) {
        announce_phase(
            &mut loads,
            started,
            "clusters of 1 to 3 replicas on PostgreSQL".to_owned(),
        );
        cluster_runs = cluster::run(&cluster).await?;
    }
    let mut telemetry_results = None;
    if let Some(tracing) = &tracing {
        announce_phase(
            &mut loads,
            started,
            "metrics and tracing on and off, on PostgreSQL".to_owned(),
        );
        telemetry_results = Some(telemetry::run(tracing, &telemetry_settings(args.quick)).await?);
    }
    let suite_repetitions = if args.quick { 5 } else { 50 };
    let mut suite_runs = Vec::new();
    if runs(Part::Suites) {
        announce_phase(
            &mut loads,
            started,
            "cipher suites on the client".to_owned(),
        );
        suite_runs = suites::run(suite_repetitions)?;
    }
    loads.push(("end".to_owned(), load_average()));
    eprintln!("[{:>6.1} s] done", started.elapsed().as_secs_f64());

    let parts: Vec<String> = args
        .part
        .iter()
        .filter_map(|part| part.to_possible_value())
        .map(|value| value.get_name().to_owned())
        .collect();
    let sizes: Vec<String> = args.sizes.iter().map(usize::to_string).collect();
    println!(
        "## conclave-bench{}{}{}{}{} ({} s)\n",
        if args.quick { " --quick" } else { "" },
        if parts.is_empty() {
            String::new()
        } else {
            format!(" --part {}", parts.join(","))
        },
        if sizes.is_empty() {
            String::new()
        } else {
            format!(" --sizes {}", sizes.join(","))
        },
        if args.commits_only {
            " --commits-only"
        } else {
            ""
        },
        if args.server_process {
            " --server-process"
        } else {
            ""
        },
        started.elapsed().as_secs()
    );
    if runs(Part::Throughput) {
        println!("{}", throughput_table(&throughput_runs, &throughput[0]));
    }
    if runs(Part::Scaling) {
        println!("{}", fan_out_table(&scaling_results));
        println!("{}", commit_table(&scaling_results));
        println!("{}", write_table(&scaling_results));
        println!("{}", build_table(&scaling_results));
    }
    if runs(Part::Federation) {
        println!("{}", cross_domain_latency_table(&federation_results));
        if federation_results.iter().any(|results| {
            results
                .latency
                .as_ref()
                .is_some_and(|latency| latency.split.is_some())
        }) {
            println!("{}", latency_split_table(&federation_results));
        }
        println!(
            "{}",
            live_federation_table(&federation_results, &federation)
        );
        println!("{}", backlog_table(&federation_results, &federation));
        if federation_results
            .iter()
            .flat_map(|results| &results.batches)
            .any(|run| run.live.writes.is_some())
        {
            println!("{}", federation_write_table(&federation_results));
        }
        for results in &federation_results {
            let database = server::database_name(results.database);
            if results.retries > 0 {
                println!(
                    "- {database}: {} calls answered UNAVAILABLE and retried in benchmarks 5 and 6",
                    results.retries
                );
            }
            if let Some(failure) = &results.failure {
                println!("**{database}, federation: stopped early:** {failure}\n");
            }
        }
    }
    if runs(Part::Suites) {
        println!("{}", suites::table(&suite_runs, suite_repetitions));
    }
    if runs(Part::Memory) {
        println!("{}", memory_table(&memory_runs, &memory));
    }
    if args.server_process && (runs(Part::Throughput) || runs(Part::Scaling)) {
        println!(
            "{}",
            server_memory_table(&throughput_runs, &scaling_results)
        );
    }
    if runs(Part::Cluster) {
        println!("{}", cluster_table(&cluster_runs, &cluster));
    }
    if let Some(results) = &telemetry_results {
        println!(
            "{}",
            telemetry_table(results, &telemetry_settings(args.quick))
        );
        println!(
            "- spans the OTLP receiver got from the traced runs: {}\n",
            count(results.spans_received as u64)
        );
    }
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

/// Benchmark 9: each set-up's mean over its four runs, per sender count, and
/// its throughput against the bare set-up's.
fn telemetry_table(results: &telemetry::TelemetryResults, settings: &ThroughputSettings) -> Table {
    let mut table = Table::new(
        format!(
            "9. Metrics and tracing on and off (PostgreSQL): {} messages per run, four runs per set-up, means",
            count(settings.messages as u64)
        ),
        vec![
            "Set-up",
            "Senders",
            "Messages/s",
            "runs' range",
            "p50 ms",
            "p99 ms",
            "Messages/s against bare",
        ],
    );
    let rates = |setup: telemetry::Setup, senders: usize| -> Vec<f64> {
        results
            .runs
            .iter()
            .filter(|runs| runs.setup == setup)
            .flat_map(|runs| &runs.runs)
            .filter(|run| run.senders == senders)
            .map(ThroughputRun::messages_per_second)
            .collect()
    };
    let mean = |setup: telemetry::Setup, senders: usize, figure: &dyn Fn(&ThroughputRun) -> f64| {
        let figures: Vec<f64> = results
            .runs
            .iter()
            .filter(|runs| runs.setup == setup)
            .flat_map(|runs| &runs.runs)
            .filter(|run| run.senders == senders)
            .map(figure)
            .collect();
        figures.iter().sum::<f64>() / figures.len().max(1) as f64
    };
    let rate = |run: &ThroughputRun| run.messages_per_second();
    let p50 = |run: &ThroughputRun| run.latencies.median().as_secs_f64() * 1e3;
    let p99 = |run: &ThroughputRun| run.latencies.percentile(0.99).as_secs_f64() * 1e3;
    for &senders in &settings.sender_counts {
        let bare = mean(telemetry::Setup::Bare, senders, &rate);
        for setup in [
            telemetry::Setup::Bare,
            telemetry::Setup::Metrics,
            telemetry::Setup::MetricsAndTraces,
        ] {
            let messages_per_second = mean(setup, senders, &rate);
            let runs = rates(setup, senders);
            let lowest = runs.iter().copied().fold(f64::INFINITY, f64::min);
            let highest = runs.iter().copied().fold(0.0, f64::max);
            table.row(vec![
                setup.name().to_owned(),
                senders.to_string(),
                format!("{messages_per_second:.0}"),
                format!("{lowest:.0}-{highest:.0}"),
                format!("{:.1}", mean(setup, senders, &p50)),
                format!("{:.1}", mean(setup, senders, &p99)),
                format!("{:+.1}%", (messages_per_second / bare - 1.0) * 100.0),
            ]);
        }
    }
    table
}

fn cluster_table(runs: &[ClusterRun], settings: &ClusterSettings) -> Table {
    let mut table = Table::new(
        format!(
            "8. A cluster of replicas in one process (PostgreSQL, Redis): {} messages per run, \
             the receiver on replica 1, sender i through replica i mod N; \
             across replicas = the messages sent through another replica than the receiver's",
            count(settings.throughput.messages as u64)
        ),
        vec![
            "Replicas",
            "Senders",
            "Messages/s",
            "p50 ms",
            "p99 ms",
            "across replicas: messages",
            "p50 ms",
            "p99 ms",
            "max ms",
            "UNAVAILABLE retries",
        ],
    );
    for cluster in runs {
        for run in &cluster.runs {
            let across = &run.cross_replica_latencies;
            let (p50, p99, max) = if across.is_empty() {
                ("-".to_owned(), "-".to_owned(), "-".to_owned())
            } else {
                (
                    ms(across.median()),
                    ms(across.percentile(0.99)),
                    ms(across.max()),
                )
            };
            table.row(vec![
                cluster.replicas.to_string(),
                run.senders.to_string(),
                format!("{:.0}", run.messages_per_second()),
                ms(run.latencies.median()),
                ms(run.latencies.percentile(0.99)),
                count(across.len() as u64),
                p50,
                p99,
                max,
                run.retries.to_string(),
            ]);
        }
    }
    table
}

fn memory_table(runs: &[MemoryRun], settings: &MemorySettings) -> Table {
    let mut table = Table::new(
        format!(
            "7. Memory: {} registrations, {} at a time (resident set size of the whole process)",
            count(settings.registrations as u64),
            settings.concurrency
        ),
        vec![
            "Database",
            "RSS before MB",
            "RSS after MB",
            "peak RSS MB",
            "registrations/s",
        ],
    );
    let megabytes = |bytes: u64| format!("{:.0}", bytes as f64 / 1e6);
    for run in runs {
        table.row(vec![
            server::database_name(run.database).to_owned(),
            megabytes(run.rss_before),
            megabytes(run.rss_after),
            megabytes(run.peak),
            format!(
                "{:.1}",
                settings.registrations as f64 / run.elapsed.as_secs_f64()
            ),
        ]);
    }
    table
}

/// Table 11: the homeserver's own process's memory (`--server-process`),
/// during each throughput run and around each fan-out, and the bytes it
/// holds per open idle stream.
fn server_memory_table(throughput_runs: &[ThroughputRun], scaling: &[ScalingResults]) -> Table {
    let mut table = Table::new(
        "11. The homeserver's memory, in its own process (VmRSS and VmHWM of /proc/PID/status; \
         the peak is reset before each row's phase)"
            .to_owned(),
        vec![
            "Database",
            "Phase",
            "RSS before MB",
            "live heap before MB",
            "peak RSS MB",
            "RSS after MB",
            "streams just opened: RSS MB",
            "bytes per idle stream",
            "live heap bytes per idle stream",
        ],
    );
    let megabytes = |bytes: u64| format!("{:.1}", bytes as f64 / 1e6);
    for run in throughput_runs {
        let Some(memory) = run.server_memory else {
            continue;
        };
        table.row(vec![
            server::database_name(run.database).to_owned(),
            format!(
                "throughput: {} senders, {} group(s), {} messages",
                run.senders,
                run.groups,
                count(run.messages as u64)
            ),
            megabytes(memory.before),
            "-".to_owned(),
            megabytes(memory.peak),
            megabytes(memory.after),
            "-".to_owned(),
            "-".to_owned(),
            "-".to_owned(),
        ]);
    }
    for results in scaling {
        let database = server::database_name(results.database);
        for fan_out in &results.fan_outs {
            let Some(memory) = fan_out.server_memory else {
                continue;
            };
            table.row(vec![
                database.to_owned(),
                format!(
                    "fan-out: {} streams open and idle (\"after\"), then {} messages",
                    count(fan_out.subscribers as u64),
                    fan_out.timed.len() + 1
                ),
                megabytes(memory.before),
                megabytes(memory.live_heap_before),
                megabytes(memory.peak),
                megabytes(memory.idle),
                format!(
                    "{:.1} ({:.0} per stream)",
                    memory.opened as f64 / 1e6,
                    memory.opened.saturating_sub(memory.before) as f64
                        / fan_out.subscribers.max(1) as f64
                ),
                format!("{:.0}", memory.bytes_per_stream(fan_out.subscribers)),
                format!("{:.0}", memory.live_bytes_per_stream(fan_out.subscribers)),
            ]);
        }
        if let Some((started, peak)) = results.server_memory {
            let largest = results.builds.last().map_or(0, |build| build.size);
            table.row(vec![
                database.to_owned(),
                format!(
                    "the whole scaling part (group grown to {})",
                    count(largest as u64)
                ),
                megabytes(started),
                "-".to_owned(),
                megabytes(peak),
                "-".to_owned(),
                "-".to_owned(),
                "-".to_owned(),
                "-".to_owned(),
            ]);
        }
    }
    table
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
            "Groups",
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
            run.groups.to_string(),
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

fn cross_domain_latency_table(results: &[FederationResults]) -> Table {
    let mut table = Table::new(
        "5. Across domains: messages one at a time (a.example hosts the group, b.example follows; ms from the SendMessage call to the receiver's stream yielding it)",
        vec![
            "Database",
            "Path",
            "Messages",
            "p50 ms",
            "p99 ms",
            "max ms",
            "sender's SendMessage p50 ms",
            "p99 ms",
        ],
    );
    for result in results {
        let Some(latency) = &result.latency else {
            continue;
        };
        let paths = [
            (
                "a→a (same domain)",
                &latency.same_domain,
                &latency.send_at_hub,
            ),
            (
                "a→b (hub to follower)",
                &latency.hub_to_follower,
                &latency.send_at_hub,
            ),
            (
                "b→a (follower to hub, relayed)",
                &latency.follower_to_hub,
                &latency.send_at_follower,
            ),
            (
                "b→b (relayed, back through the outbox)",
                &latency.follower_to_follower,
                &latency.send_at_follower,
            ),
        ];
        for (path, arrivals, sends) in paths {
            table.row(vec![
                server::database_name(result.database).to_owned(),
                path.to_owned(),
                count(latency.messages as u64),
                ms(arrivals.median()),
                ms(arrivals.percentile(0.99)),
                ms(arrivals.max()),
                ms(sends.median()),
                ms(sends.percentile(0.99)),
            ]);
        }
    }
    table
}

fn latency_split_table(results: &[FederationResults]) -> Table {
    let mut table = Table::new(
        "5b. Where the time goes: p50 ms from the SendMessage call to each moment (one event per batch; the homeservers' moments from their own debug events)",
        vec![
            "Database",
            "Path",
            "SendMessage returned",
            "b committed the batch",
            "receiver's stream yielded it",
            "a's outbox had b's answer",
        ],
    );
    for result in results {
        let Some(latency) = &result.latency else {
            continue;
        };
        let database = server::database_name(result.database);
        table.row(vec![
            database.to_owned(),
            "a→a".to_owned(),
            ms(latency.send_at_hub.median()),
            String::new(),
            ms(latency.same_domain.median()),
            String::new(),
        ]);
        let Some((from_hub, from_follower)) = &latency.split else {
            continue;
        };
        for (path, send, split, arrival) in [
            (
                "a→b",
                &latency.send_at_hub,
                from_hub,
                &latency.hub_to_follower,
            ),
            (
                "b→b",
                &latency.send_at_follower,
                from_follower,
                &latency.follower_to_follower,
            ),
        ] {
            table.row(vec![
                database.to_owned(),
                path.to_owned(),
                ms(send.median()),
                ms(split.follower_committed.median()),
                ms(arrival.median()),
                ms(split.hub_answered.median()),
            ]);
        }
    }
    table
}

fn live_federation_table(results: &[FederationResults], settings: &FederationSettings) -> Table {
    let mut table = Table::new(
        format!(
            "6a. Hub to follower, live: {} messages from {} concurrent senders on a.example",
            count(settings.throughput_messages as u64),
            settings.senders
        ),
        vec![
            "Database",
            "hub's outbox_batch_size",
            "sent, messages/s",
            "at a's receiver, messages/s",
            "at b's receiver, events/s",
            "b's last after a's last, s",
            "latency at a p50 / p99 ms",
            "latency at b p50 / p99 ms",
        ],
    );
    for result in results {
        for run in &result.batches {
            let live = &run.live;
            let messages = live.messages as u64;
            table.row(vec![
                server::database_name(result.database).to_owned(),
                run.batch_size.to_string(),
                format!("{:.0}", federation::rate(messages, live.sending)),
                format!("{:.0}", federation::rate(messages, live.at_hub.elapsed)),
                format!(
                    "{:.0}",
                    federation::rate(messages, live.at_follower.elapsed)
                ),
                seconds(live.at_follower.elapsed.saturating_sub(live.at_hub.elapsed)),
                format!(
                    "{} / {}",
                    ms(live.at_hub.latencies.median()),
                    ms(live.at_hub.latencies.percentile(0.99))
                ),
                format!(
                    "{} / {}",
                    ms(live.at_follower.latencies.median()),
                    ms(live.at_follower.latencies.percentile(0.99))
                ),
            ]);
        }
    }
    table
}

fn federation_write_table(results: &[FederationResults]) -> Table {
    let mut table = Table::new(
        "6c. Rows written per message during the live runs (PostgreSQL's counters; inserted/updated/deleted per message)",
        vec![
            "Database",
            "hub's outbox_batch_size",
            "a.example rows/message",
            "of which",
            "b.example rows/message",
            "of which",
        ],
    );
    for result in results {
        for run in &result.batches {
            let Some((hub, follower)) = &run.live.writes else {
                continue;
            };
            let messages = run.live.messages as f64;
            let describe = |writes: &postgres::Writes| {
                let per_message = |value: i64| value as f64 / messages;
                (
                    format!("{:.2}", per_message(writes.rows())),
                    writes
                        .tables
                        .iter()
                        .map(|(table, rows)| {
                            format!(
                                "{table} {:.3}/{:.3}/{:.3}",
                                per_message(rows.inserted),
                                per_message(rows.updated),
                                per_message(rows.deleted)
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; "),
                )
            };
            let (hub_rows, hub_tables) = describe(hub);
            let (follower_rows, follower_tables) = describe(follower);
            table.row(vec![
                server::database_name(result.database).to_owned(),
                run.batch_size.to_string(),
                hub_rows,
                hub_tables,
                follower_rows,
                follower_tables,
            ]);
        }
    }
    table
}

fn backlog_table(results: &[FederationResults], settings: &FederationSettings) -> Table {
    let mut table = Table::new(
        format!(
            "6b. Hub to follower, backlog: {} messages stored on a.example while b.example was down, then b.example started again",
            count(settings.throughput_messages as u64)
        ),
        vec![
            "Database",
            "hub's outbox_batch_size",
            "sending them, s",
            "b's start until ready, s",
            "b started → first events seen, s",
            "catch-up, events/s",
            "b started → all, s",
            "b started → all, events/s",
        ],
    );
    for result in results {
        for run in &result.batches {
            let backlog = &run.backlog;
            table.row(vec![
                server::database_name(result.database).to_owned(),
                run.batch_size.to_string(),
                seconds(backlog.sending),
                format!("{:.2}", backlog.start.as_secs_f64()),
                seconds(backlog.to_first),
                backlog.catch_up_rate().map_or_else(
                    || "n/a (all there at the first look)".to_owned(),
                    |rate| format!("{rate:.0}"),
                ),
                seconds(backlog.total),
                format!("{:.0}", federation::rate(backlog.events, backlog.total)),
            ]);
        }
    }
    table
}
