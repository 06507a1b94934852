//! Benchmarks 2 to 4, on one group grown step by step to each size in turn
//! (10, 100, 1,000, 10,000 members). At each size:
//!
//! - writes: the creator sends messages one after another; the SendMessage
//!   latency, and on PostgreSQL the rows written per message;
//! - fan-out (at the fan-out sizes): every member device, caught up by Ack,
//!   opens a Subscribe stream; after a warm-up message, each timed message is
//!   sent to an idle server and timed until the last stream yields it;
//! - commits: single-member add commits, each timed three ways: the creator
//!   building it with openmls, SubmitCommit at the hub (the hub's validation
//!   is internal to the homeserver, so it is measured through the public gRPC
//!   path: load the group's state, validate with openmls's PublicGroup, check
//!   the new leaf, store everything), and another member processing and
//!   merging the same commit with openmls.
//!
//! The group grows by add commits of up to `add_batch` members, each batch the
//! devices of one user (one claim returns a package of each). The devices that
//! fill the group never join with their Welcome: they only need to be members
//! at the hub, to be delivered to. The creator and one observer member keep
//! real openmls state throughout.

use crate::api::{self, Api, Session};
use crate::devices::enrol_user;
use crate::memory::{HeapProbe, ProcessMemory};
use crate::mls::{self, Member};
use crate::perf;
use crate::postgres::{DatabaseProbe, Writes};
use crate::report::Samples;
use crate::server::{Homeserver, Placement};
use anyhow::{Context as _, anyhow, bail, ensure};
use conclave_proto::client::v1::delivery_event::Event;
use conclave_test_support::DatabaseChoice;
use futures::{StreamExt as _, TryStreamExt as _};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Longest wait for one message to reach every subscriber.
const FAN_OUT_TIMEOUT: Duration = Duration::from_secs(600);
/// Added to the pause between fan-out messages (see [`Scaling::fan_out`]).
const SETTLE_MARGIN: Duration = Duration::from_millis(500);
/// Acks and Subscribe calls in flight at once.
const CALL_CONCURRENCY: usize = 64;

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct ScalingSettings {
    /// Group sizes, ascending.
    pub(crate) group_sizes: Vec<usize>,
    /// The sizes at which to measure fan-out.
    pub(crate) fan_out_sizes: Vec<usize>,
    /// Most members added by one commit while growing the group.
    pub(crate) add_batch: usize,
    /// Single-member add commits timed at each size.
    pub(crate) probe_commits: usize,
    /// Messages sent at each size to count writes.
    pub(crate) write_messages: usize,
    /// Timed fan-out messages at each fan-out size (after one warm-up message).
    pub(crate) fan_out_messages: usize,
    /// Subscribe streams multiplexed over one HTTP/2 connection.
    pub(crate) streams_per_connection: usize,
}

/// Growing the group to one size.
#[derive(Debug)]
pub(crate) struct BuildStep {
    pub(crate) size: usize,
    pub(crate) commits: usize,
    /// Everything: enrolling devices, claiming, committing, the observer following.
    pub(crate) elapsed: Duration,
    /// Of which enrolling devices (Argon2id at the server, key-package uploads).
    pub(crate) enrolment: Duration,
    /// Of which SubmitCommit calls.
    pub(crate) submit: Duration,
    /// TLS-serialised ratchet tree at this size.
    pub(crate) tree_bytes: usize,
}

/// Single-member add commits at one size.
#[derive(Debug)]
pub(crate) struct CommitStep {
    pub(crate) size: usize,
    pub(crate) build: Samples,
    pub(crate) submit: Samples,
    pub(crate) process: Samples,
    pub(crate) commit_bytes: usize,
    pub(crate) welcome_bytes: usize,
}

/// Messages at one size.
#[derive(Debug)]
pub(crate) struct WriteStep {
    pub(crate) size: usize,
    pub(crate) messages: usize,
    pub(crate) send: Samples,
    /// PostgreSQL only.
    pub(crate) writes: Option<Writes>,
}

/// One message to every member.
#[derive(Debug)]
pub(crate) struct FanOutStep {
    pub(crate) subscribers: usize,
    /// Time to open every stream.
    pub(crate) open: Duration,
    /// The warm-up message: the first delivery to freshly opened streams.
    pub(crate) warm_up: Deliveries,
    pub(crate) timed: Vec<Deliveries>,
    /// With the homeserver in its own process (`--server-process`).
    pub(crate) server_memory: Option<StreamMemory>,
}

/// The homeserver's process's memory around a fan-out, in bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamMemory {
    /// Resident before the subscribers connected.
    pub(crate) before: u64,
    /// Resident when every Subscribe call had returned, before any message.
    pub(crate) opened: u64,
    /// Resident with every stream open and idle: after the warm-up message
    /// reached them all and their reads after it settled, before the first
    /// timed message.
    pub(crate) idle: u64,
    /// Peak resident from before the subscribers connected to the last timed
    /// delivery.
    pub(crate) peak: u64,
    /// Live heap (bytes allocated and not freed) before the subscribers
    /// connected, and with every stream open and idle.
    pub(crate) live_heap_before: u64,
    pub(crate) live_heap_idle: u64,
}

impl StreamMemory {
    /// What the server holds per open idle stream: the growth from no stream
    /// to every stream open, over the streams (their HTTP/2 connections, 50
    /// streams each here, included).
    pub(crate) fn bytes_per_stream(&self, streams: usize) -> f64 {
        self.idle.saturating_sub(self.before) as f64 / streams.max(1) as f64
    }

    /// The live heap the server holds per open idle stream, the same way:
    /// what the streams keep allocated, without what the allocator keeps of
    /// memory freed since (the warm-up's reads, for one).
    pub(crate) fn live_bytes_per_stream(&self, streams: usize) -> f64 {
        self.live_heap_idle.saturating_sub(self.live_heap_before) as f64 / streams.max(1) as f64
    }
}

/// When one message reached the subscribers, from just before SendMessage.
#[derive(Debug, Clone)]
pub(crate) struct Deliveries {
    pub(crate) arrivals: Samples,
}

#[derive(Debug)]
pub(crate) struct ScalingResults {
    pub(crate) database: DatabaseChoice,
    pub(crate) builds: Vec<BuildStep>,
    pub(crate) commits: Vec<CommitStep>,
    pub(crate) writes: Vec<WriteStep>,
    pub(crate) fan_outs: Vec<FanOutStep>,
    /// PostgreSQL only: (parameter bytes, query durations), see
    /// [`DatabaseProbe::round_trips`].
    pub(crate) round_trips: Vec<(usize, Samples)>,
    /// Calls answered UNAVAILABLE and retried, by phase (only phases with any).
    pub(crate) retries: Vec<(String, u64)>,
    /// Set when a step failed: the results above are those that finished.
    pub(crate) failure: Option<String>,
    /// With the homeserver in its own process: its resident set size once
    /// started, and its peak over the whole part.
    pub(crate) server_memory: Option<(u64, u64)>,
}

/// The group and everyone in it.
struct Scaling {
    url: String,
    api: Api,
    group_id: Vec<u8>,
    creator: Member,
    observer: Member,
    /// Every member device, the creator first.
    members: Vec<Session>,
    /// The newest sequence number in the group's log.
    last_seq: u64,
    /// Users enrolled so far, for unique names.
    users: usize,
    /// PostgreSQL only.
    probe: Option<DatabaseProbe>,
    /// With `--server-process`: the homeserver's live heap.
    heap: Option<Arc<HeapProbe>>,
    /// The homeserver's own process, with `--server-process`.
    server_process: Option<ProcessMemory>,
    /// The highest of its peaks before each reset (each fan-out starts its
    /// own), so that the part's peak is known at the end.
    earlier_peak: u64,
}

pub(crate) async fn run(
    database: DatabaseChoice,
    settings: &ScalingSettings,
    placement: Placement,
) -> anyhow::Result<ScalingResults> {
    let server = Homeserver::start(database, placement).await?;
    let server_process = server.own_process();
    let started_resident = match server_process {
        Some(process) => Some(process.resident()?),
        None => None,
    };
    let probe = match database {
        DatabaseChoice::Postgres => Some(DatabaseProbe::connect(&server.database_url()).await?),
        DatabaseChoice::Sqlite => None,
    };
    let round_trips = match &probe {
        Some(probe) => probe.round_trips().await?,
        None => Vec::new(),
    };
    let mut scaling = Scaling::start(
        server.client_url(),
        probe,
        server_process,
        server.heap_probe(),
    )
    .await?;
    let mut results = ScalingResults {
        database,
        builds: Vec::new(),
        commits: Vec::new(),
        writes: Vec::new(),
        fan_outs: Vec::new(),
        round_trips,
        retries: Vec::new(),
        failure: None,
        server_memory: None,
    };
    if let Err(error) = scaling.run(settings, &mut results).await {
        eprintln!("  failed: {error:#}");
        results.failure = Some(format!("{error:#}"));
    }
    if let Some(probe) = scaling.probe.take() {
        probe.close().await?;
    }
    let earlier_peak = scaling.earlier_peak;
    drop(scaling);
    if let (Some(process), Some(started)) = (server_process, started_resident) {
        results.server_memory = Some((started, process.peak()?.max(earlier_peak)));
    }
    server.stop().await;
    Ok(results)
}

impl Scaling {
    /// The creator makes the group and adds the observer.
    async fn start(
        url: String,
        probe: Option<DatabaseProbe>,
        server_process: Option<ProcessMemory>,
        heap: Option<Arc<HeapProbe>>,
    ) -> anyhow::Result<Scaling> {
        let api = Api::connect(&url).await?;
        let creator_device = enrol_user(&api, "creator", 1)
            .await?
            .pop()
            .context("no creator")?;
        let new_group = mls::create_group(creator_device)?;
        let mut creator = new_group.creator;
        let group_id = api
            .create_group(
                &creator.device.session,
                new_group.group_info,
                new_group.ratchet_tree,
            )
            .await?;
        let observer_device = enrol_user(&api, "observer", 1)
            .await?
            .pop()
            .context("no observer")?;
        let claimed = api
            .claim(&creator.device.session, &observer_device.session.user_id)
            .await?;
        let commit = creator.commit_adds(mls::verified_key_packages(&claimed)?)?;
        let accepted = api
            .submit_commit(&creator.device.session, &group_id, &commit)
            .await?;
        creator.merge_own_commit()?;
        let welcome = commit.welcome.as_deref().context("no Welcome")?;
        let observer = Member::join(observer_device, welcome, &creator.ratchet_tree()?)?;
        Ok(Scaling {
            url,
            api,
            group_id,
            members: vec![
                creator.device.session.clone(),
                observer.device.session.clone(),
            ],
            creator,
            observer,
            last_seq: accepted.seq,
            users: 0,
            probe,
            server_process,
            heap,
            earlier_peak: 0,
        })
    }

    async fn run(
        &mut self,
        settings: &ScalingSettings,
        results: &mut ScalingResults,
    ) -> anyhow::Result<()> {
        for &size in &settings.group_sizes {
            let mut retries_before = api::retries();
            let mut count_retries = |phase: &str, results: &mut ScalingResults| {
                let retries = api::retries() - retries_before;
                if retries > 0 {
                    results
                        .retries
                        .push((format!("{phase} at {size}"), retries));
                }
                retries_before = api::retries();
            };
            let build = self
                .grow_to(size, settings.add_batch)
                .await
                .with_context(|| format!("growing the group to {size}"))?;
            eprintln!(
                "  grew to {} members in {:.1} s ({} commits; enrolment {:.1} s, SubmitCommit {:.1} s); tree {} bytes",
                build.size,
                build.elapsed.as_secs_f64(),
                build.commits,
                build.enrolment.as_secs_f64(),
                build.submit.as_secs_f64(),
                build.tree_bytes
            );
            results.builds.push(build);
            count_retries("growing the group", results);

            if settings.write_messages > 0 {
                let writes = self
                    .measure_writes(settings.write_messages)
                    .await
                    .with_context(|| format!("sending messages at {size}"))?;
                eprintln!(
                    "  {} members: SendMessage p50 {:?}{}",
                    size,
                    writes.send.median(),
                    writes
                        .writes
                        .as_ref()
                        .map(|w| format!(
                            ", {:.2} rows/message",
                            w.rows() as f64 / writes.messages as f64
                        ))
                        .unwrap_or_default()
                );
                results.writes.push(writes);
                count_retries("sending messages", results);
            }

            if settings.fan_out_sizes.contains(&size) {
                let fan_out = self
                    .fan_out(settings)
                    .await
                    .with_context(|| format!("fan-out to {size}"))?;
                eprintln!(
                    "  fan-out to {}: opened in {:.1} s; warm-up last {:?}; timed last {:?}",
                    fan_out.subscribers,
                    fan_out.open.as_secs_f64(),
                    fan_out.warm_up.arrivals.max(),
                    fan_out
                        .timed
                        .iter()
                        .map(|d| d.arrivals.max())
                        .collect::<Vec<_>>()
                );
                results.fan_outs.push(fan_out);
                count_retries("fan-out", results);
            }

            let commits = self
                .probe_commits(settings.probe_commits)
                .await
                .with_context(|| format!("add commits at {size}"))?;
            eprintln!(
                "  add-one commits at {}: build {:?}, SubmitCommit {:?}, member {:?} (medians)",
                commits.size,
                commits.build.median(),
                commits.submit.median(),
                commits.process.median()
            );
            results.commits.push(commits);
            count_retries("add-one commits", results);
        }
        Ok(())
    }

    fn next_username(&mut self, prefix: &str) -> String {
        self.users += 1;
        format!("{prefix}{}", self.users)
    }

    /// Adds members in batches until the group has `size`.
    async fn grow_to(&mut self, size: usize, add_batch: usize) -> anyhow::Result<BuildStep> {
        let started = Instant::now();
        let mut enrolment = Duration::ZERO;
        let mut submit = Duration::ZERO;
        let mut commits = 0;
        while self.members.len() < size {
            let batch = (size - self.members.len()).min(add_batch);
            let username = self.next_username("member");
            let enrolment_started = Instant::now();
            let devices = enrol_user(&self.api, &username, batch).await?;
            enrolment += enrolment_started.elapsed();
            let claimed = self
                .api
                .claim(&self.creator.device.session, &devices[0].session.user_id)
                .await?;
            ensure!(
                claimed.len() == batch,
                "claimed {} key packages of {username}, expected {batch}",
                claimed.len()
            );
            let commit = self
                .creator
                .commit_adds(mls::verified_key_packages(&claimed)?)?;
            let submit_started = Instant::now();
            let accepted = self
                .api
                .submit_commit(&self.creator.device.session, &self.group_id, &commit)
                .await?;
            submit += submit_started.elapsed();
            self.creator.merge_own_commit()?;
            self.observer.process_commit(&commit.commit)?;
            self.last_seq = accepted.seq;
            self.members
                .extend(devices.into_iter().map(|device| device.session));
            commits += 1;
        }
        Ok(BuildStep {
            size,
            commits,
            elapsed: started.elapsed(),
            enrolment,
            submit,
            tree_bytes: self.creator.ratchet_tree()?.len(),
        })
    }

    /// Sends messages one after another from the creator.
    async fn measure_writes(&mut self, messages: usize) -> anyhow::Result<WriteStep> {
        let size = self.members.len();
        let encrypted = (0..messages)
            .map(|index| {
                self.creator
                    .encrypt(format!("message {index} at {size}").as_bytes())
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let before = match &self.probe {
            Some(probe) => Some(probe.snapshot().await?),
            None => None,
        };
        let mut send = Vec::with_capacity(messages);
        for message in encrypted {
            let started = Instant::now();
            let accepted = self
                .api
                .send_message(&self.creator.device.session, &self.group_id, message)
                .await?;
            send.push(started.elapsed());
            self.last_seq = accepted.seq;
        }
        let writes = match (&self.probe, before) {
            (Some(probe), Some(before)) => Some(before.writes_until(&probe.snapshot().await?)),
            _ => None,
        };
        Ok(WriteStep {
            size,
            messages,
            send: Samples::new(send),
            writes,
        })
    }

    /// Single-member add commits, timed at the committer, the hub and a member.
    async fn probe_commits(&mut self, count: usize) -> anyhow::Result<CommitStep> {
        let size = self.members.len();
        let username = self.next_username("probe");
        let devices = enrol_user(&self.api, &username, count).await?;
        let claimed = self
            .api
            .claim(&self.creator.device.session, &devices[0].session.user_id)
            .await?;
        let key_packages = mls::verified_key_packages(&claimed)?;
        let (mut build, mut submit, mut process) = (Vec::new(), Vec::new(), Vec::new());
        let (mut commit_bytes, mut welcome_bytes) = (0, 0);
        let window = perf::window(perf::Section::Commits { size })?;
        for key_package in key_packages {
            let started = Instant::now();
            let commit = self.creator.commit_adds(vec![key_package])?;
            build.push(started.elapsed());
            let started = Instant::now();
            let accepted = self
                .api
                .submit_commit(&self.creator.device.session, &self.group_id, &commit)
                .await?;
            submit.push(started.elapsed());
            self.creator.merge_own_commit()?;
            let started = Instant::now();
            self.observer.process_commit(&commit.commit)?;
            process.push(started.elapsed());
            self.last_seq = accepted.seq;
            commit_bytes = commit.commit.len();
            welcome_bytes = commit.welcome.as_ref().map_or(0, Vec::len);
        }
        drop(window);
        self.members
            .extend(devices.into_iter().map(|device| device.session));
        Ok(CommitStep {
            size,
            build: Samples::new(build),
            submit: Samples::new(submit),
            process: Samples::new(process),
            commit_bytes,
            welcome_bytes,
        })
    }

    /// Every member acknowledges everything so far (its Welcome and the log),
    /// opens a stream, and receives a warm-up message and then the timed ones.
    async fn fan_out(&mut self, settings: &ScalingSettings) -> anyhow::Result<FanOutStep> {
        let subscribers = self.members.len();
        let memory_before = match self.server_process {
            Some(process) => {
                self.earlier_peak = self.earlier_peak.max(process.peak()?);
                process.reset_peak()?;
                Some(process.resident()?)
            }
            None => None,
        };
        let heap_before = match &self.heap {
            Some(heap) => Some(heap.live_bytes().await?),
            None => None,
        };
        let connection_count = subscribers.div_ceil(settings.streams_per_connection);
        let mut connections = Vec::with_capacity(connection_count);
        for _ in 0..connection_count {
            connections.push(Api::connect(&self.url).await?);
        }
        let connection_of = |index: usize| &connections[index / settings.streams_per_connection];

        // Caught up, as a device that processed its Welcome and the log would be:
        // otherwise each stream would first replay its Welcome with the tree.
        let (group_id, last_seq) = (&self.group_id, self.last_seq);
        futures::stream::iter(self.members.iter().enumerate())
            .map(|(index, member)| {
                // Every member but the creator has exactly one inbox event: its Welcome.
                let inbox_seq = u64::from(index > 0);
                connection_of(index).ack(member, group_id, last_seq, inbox_seq)
            })
            .buffer_unordered(CALL_CONCURRENCY)
            .try_collect::<()>()
            .await?;

        let opened = Instant::now();
        let streams = futures::stream::iter(self.members.iter().enumerate())
            .map(|(index, member)| connection_of(index).subscribe(member))
            .buffer_unordered(CALL_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        let open = opened.elapsed();
        let opened_resident = match self.server_process {
            Some(process) => Some(process.resident()?),
            None => None,
        };
        let (arrival_sender, mut arrivals) = mpsc::unbounded_channel::<(u64, Instant)>();
        let tasks: Vec<JoinHandle<()>> = streams
            .into_iter()
            .map(|mut stream| {
                let arrival_sender = arrival_sender.clone();
                tokio::spawn(async move {
                    while let Ok(Some(event)) = stream.message().await {
                        let at = Instant::now();
                        if let Some(Event::GroupEvent(event)) = event.event
                            && arrival_sender.send((event.seq, at)).is_err()
                        {
                            return;
                        }
                    }
                })
            })
            .collect();
        drop(arrival_sender);

        let result = async {
            let warm_up = self.deliver_to_all(subscribers, &mut arrivals).await?;
            let mut timed = Vec::with_capacity(settings.fan_out_messages);
            let mut previous = warm_up.arrivals.max();
            let mut idle_resident = None;
            let mut idle_heap = None;
            for _ in 0..settings.fan_out_messages {
                // After yielding an event, each subscriber reads the database once
                // more before it waits; a message sent meanwhile would queue behind
                // those reads. Letting them finish measures a message to an idle
                // group. They take about as long as the delivery did.
                tokio::time::sleep(previous * 2 + SETTLE_MARGIN).await;
                if idle_resident.is_none()
                    && let Some(process) = self.server_process
                {
                    idle_resident = Some(process.resident()?);
                    if let Some(heap) = &self.heap {
                        idle_heap = Some(heap.live_bytes().await?);
                    }
                }
                let deliveries = self.deliver_to_all(subscribers, &mut arrivals).await?;
                previous = deliveries.arrivals.max();
                timed.push(deliveries);
            }
            anyhow::Ok((warm_up, timed, idle_resident, idle_heap))
        }
        .await;
        for task in tasks {
            task.abort();
        }
        let (warm_up, timed, idle_resident, idle_heap) = result?;
        let server_memory = match (
            self.server_process,
            memory_before,
            opened_resident,
            idle_resident,
            heap_before,
            idle_heap,
        ) {
            (
                Some(process),
                Some(before),
                Some(opened),
                Some(idle),
                Some(live_heap_before),
                Some(live_heap_idle),
            ) => Some(StreamMemory {
                before,
                opened,
                idle,
                peak: process.peak()?,
                live_heap_before,
                live_heap_idle,
            }),
            _ => None,
        };
        Ok(FanOutStep {
            subscribers,
            open,
            warm_up,
            timed,
            server_memory,
        })
    }

    /// Sends one message and waits until `subscribers` streams yielded it.
    async fn deliver_to_all(
        &mut self,
        subscribers: usize,
        arrivals: &mut mpsc::UnboundedReceiver<(u64, Instant)>,
    ) -> anyhow::Result<Deliveries> {
        let message = self.creator.encrypt(b"fan-out")?;
        let sent = Instant::now();
        let accepted = self
            .api
            .send_message(&self.creator.device.session, &self.group_id, message)
            .await?;
        self.last_seq = accepted.seq;
        let deadline = tokio::time::Instant::now() + FAN_OUT_TIMEOUT;
        let mut seen: HashMap<u64, Vec<Duration>> = HashMap::new();
        loop {
            let received = seen.get(&accepted.seq).map_or(0, Vec::len);
            if received == subscribers {
                break;
            }
            match tokio::time::timeout_at(deadline, arrivals.recv()).await {
                Ok(Some((seq, at))) => seen
                    .entry(seq)
                    .or_default()
                    .push(at.saturating_duration_since(sent)),
                Ok(None) => {
                    bail!("every stream ended; {received} of {subscribers} got the message")
                }
                Err(_) => {
                    return Err(anyhow!(
                        "only {received} of {subscribers} streams yielded message {} within {FAN_OUT_TIMEOUT:?}",
                        accepted.seq
                    ));
                }
            }
        }
        let arrivals = seen.remove(&accepted.seq).unwrap_or_default();
        Ok(Deliveries {
            arrivals: Samples::new(arrivals),
        })
    }
}
