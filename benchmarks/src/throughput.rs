//! Benchmark 1: application messages through one homeserver. One group (or
//! several: sender `i` is in group `i % groups`) holds a creator, up to 100
//! sender devices and one receiver device that is in every group, each a real
//! openmls member that joined from the Welcome. Each sender sends its share of
//! the messages one after another (the next when the previous SendMessage
//! returned), all senders at once; the receiver's Subscribe stream is read as it
//! yields. Latency is from just before a SendMessage call to the moment the
//! receiver's stream yields that message; throughput is the message count over
//! the time from the first send to the last arrival.
//!
//! Encryption is done before the timed section (its cost is reported beside
//! the figures), and the receiver decrypts every message after it, so the run
//! also checks that what arrived is what was sent.

use crate::api::{self, Api};
use crate::devices::enrol_user;
use crate::memory::ProcessMemory;
use crate::mls::{self, Member, MultiMember};
use crate::perf;
use crate::report::Samples;
use crate::server::{Homeserver, Placement};
use anyhow::{Context as _, anyhow, bail, ensure};
use conclave_proto::client::v1::delivery_event::Event;
use conclave_test_support::DatabaseChoice;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Longest wait for the next message at the receiver before the run is failed.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(120);

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct ThroughputSettings {
    /// Messages per run, split evenly between the senders.
    pub(crate) messages: usize,
    /// Numbers of concurrent senders, one run each.
    pub(crate) sender_counts: Vec<usize>,
    /// Groups the senders are spread over (at least 1); one receiver device is
    /// in all of them and reads them on one stream.
    pub(crate) groups: usize,
}

/// One run's figures.
#[derive(Debug)]
pub(crate) struct ThroughputRun {
    pub(crate) database: DatabaseChoice,
    pub(crate) senders: usize,
    /// Groups the senders were spread over.
    pub(crate) groups: usize,
    pub(crate) messages: usize,
    /// From the first send to the last arrival.
    pub(crate) elapsed: Duration,
    pub(crate) latencies: Samples,
    /// With several replicas (benchmark 8): the latencies of the messages sent
    /// through another replica than the receiver's, i.e. woken through Redis.
    pub(crate) cross_replica_latencies: Samples,
    /// Encryption time per message, spent before the timed section.
    pub(crate) encryption_per_message: Duration,
    /// With the homeserver in its own process (`--server-process`): its
    /// memory during the run.
    pub(crate) server_memory: Option<ServerMemory>,
    /// Calls answered UNAVAILABLE and retried during the run.
    pub(crate) retries: u64,
}

/// The homeserver's process's memory during one run, in bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServerMemory {
    /// Resident before the run's first message.
    pub(crate) before: u64,
    /// Peak resident during the run (from the start of its encryption to the
    /// last arrival and decryption).
    pub(crate) peak: u64,
    /// Resident after the run.
    pub(crate) after: u64,
}

impl ThroughputRun {
    pub(crate) fn messages_per_second(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }
}

/// A message as the receiver saw it.
struct Arrival {
    group_id: Vec<u8>,
    message: Vec<u8>,
    at: Instant,
}

pub(crate) async fn run(
    database: DatabaseChoice,
    settings: &ThroughputSettings,
    placement: Placement,
) -> anyhow::Result<Vec<ThroughputRun>> {
    let server = Homeserver::start(database, placement).await?;
    let runs = measure(
        database,
        &[server.client_url()],
        settings,
        server.own_process(),
    )
    .await;
    server.stop().await;
    runs
}

/// The runs of `settings` against the replicas of one domain at `urls` (one
/// homeserver: one URL). The receiver and the group's setup use the first;
/// sender `i` sends through replica `i % urls.len()`, each over its own
/// connection. `server_process`: the homeserver's own process, whose memory
/// each run then records.
pub(crate) async fn measure(
    database: DatabaseChoice,
    urls: &[String],
    settings: &ThroughputSettings,
    server_process: Option<ProcessMemory>,
) -> anyhow::Result<Vec<ThroughputRun>> {
    let url = urls.first().context("no homeserver to measure")?;
    let api = Api::connect(url).await?;
    let max_senders = settings.sender_counts.iter().copied().max().unwrap_or(1);
    let group_count = settings.groups.max(1);

    let creator_devices = enrol_user(&api, "creator", group_count).await?;
    let mut receiver = MultiMember::new(one_device(enrol_user(&api, "receiver", 1).await?)?);
    let mut group_ids = Vec::with_capacity(group_count);
    let mut creators = Vec::with_capacity(group_count);
    let mut members_by_group = Vec::with_capacity(group_count);
    for (group_index, creator_device) in creator_devices.into_iter().enumerate() {
        let new_group = mls::create_group(creator_device)?;
        let mut creator = new_group.creator;
        let group_id = api
            .create_group(
                &creator.device.session,
                new_group.group_info,
                new_group.ratchet_tree,
            )
            .await?;
        let senders_here = (group_index..max_senders).step_by(group_count).count();
        let sender_devices =
            enrol_user(&api, &format!("sender{group_index}"), senders_here.max(1)).await?;
        if group_index > 0 {
            // The receiver's enrolment uploaded one package, for the first group.
            let key_package = receiver.device.key_package()?;
            api.upload_key_package(&receiver.device.session, key_package)
                .await?;
        }
        let mut claimed = api
            .claim(&creator.device.session, &sender_devices[0].session.user_id)
            .await?;
        claimed.extend(
            api.claim(&creator.device.session, &receiver.device.session.user_id)
                .await?,
        );
        let commit = creator.commit_adds(mls::verified_key_packages(&claimed)?)?;
        api.submit_commit(&creator.device.session, &group_id, &commit)
            .await?;
        creator.merge_own_commit()?;
        let ratchet_tree = creator.ratchet_tree()?;
        let welcome = commit
            .welcome
            .as_deref()
            .context("the add commit has no Welcome")?;
        let members = sender_devices
            .into_iter()
            .map(|device| Member::join(device, welcome, &ratchet_tree))
            .collect::<anyhow::Result<Vec<_>>>()?;
        receiver.join(welcome, &ratchet_tree)?;
        members_by_group.push(members.into_iter());
        group_ids.push(group_id);
        creators.push(creator);
    }
    // Sender `i` is the next member of group `i % group_count`.
    let mut senders = Vec::with_capacity(max_senders);
    for index in 0..max_senders {
        let group_index = index % group_count;
        let member = members_by_group[group_index]
            .next()
            .context("a group has too few senders")?;
        senders.push((member, group_index));
    }

    let receiver_api = Api::connect(url).await?;
    let mut stream = receiver_api.subscribe(&receiver.device.session).await?;
    let (arrival_sender, mut arrivals) = mpsc::unbounded_channel();
    let receiver_task = tokio::spawn(async move {
        while let Ok(Some(event)) = stream.message().await {
            let at = Instant::now();
            if let Some(Event::GroupEvent(event)) = event.event {
                let arrival = Arrival {
                    group_id: event.group_id,
                    message: event.message,
                    at,
                };
                if arrival_sender.send(arrival).is_err() {
                    return;
                }
            }
        }
    });

    // A first message makes sure the receiver's stream is live before timing.
    let warm_up = creators[0].encrypt(b"warm-up")?;
    api.send_message(&creators[0].device.session, &group_ids[0], warm_up.clone())
        .await?;
    while next_arrival(&mut arrivals).await?.message != warm_up {}

    let mut sender_apis = Vec::with_capacity(max_senders);
    for index in 0..max_senders {
        let replica = index % urls.len();
        sender_apis.push((Api::connect(&urls[replica]).await?, replica != 0));
    }
    let mut runs = Vec::new();
    for &sender_count in &settings.sender_counts {
        let before = match server_process {
            Some(process) => {
                process.reset_peak()?;
                Some(process.resident()?)
            }
            None => None,
        };
        let mut run = run_once(
            database,
            settings.messages,
            &mut senders[..sender_count],
            &sender_apis,
            &group_ids,
            &mut receiver,
            &mut arrivals,
        )
        .await
        .with_context(|| format!("the run with {sender_count} senders"))?;
        if let (Some(process), Some(before)) = (server_process, before) {
            run.server_memory = Some(ServerMemory {
                before,
                peak: process.peak()?,
                after: process.resident()?,
            });
        }
        eprintln!(
            "  {} senders over {} group(s): {:.0} messages/s, p50 {:?}, p99 {:?}",
            sender_count,
            group_count,
            run.messages_per_second(),
            run.latencies.median(),
            run.latencies.percentile(0.99)
        );
        runs.push(run);
    }
    receiver_task.abort();
    drop((api, receiver_api, sender_apis));
    Ok(runs)
}

fn one_device(mut devices: Vec<mls::Device>) -> anyhow::Result<mls::Device> {
    devices
        .pop()
        .ok_or_else(|| anyhow!("no device was enrolled"))
}

async fn next_arrival(arrivals: &mut mpsc::UnboundedReceiver<Arrival>) -> anyhow::Result<Arrival> {
    match tokio::time::timeout(ARRIVAL_TIMEOUT, arrivals.recv()).await {
        Ok(Some(arrival)) => Ok(arrival),
        Ok(None) => bail!("the receiver's stream ended"),
        Err(_) => bail!("the receiver got nothing for {ARRIVAL_TIMEOUT:?}"),
    }
}

async fn run_once(
    database: DatabaseChoice,
    message_count: usize,
    senders: &mut [(Member, usize)],
    sender_apis: &[(Api, bool)],
    group_ids: &[Vec<u8>],
    receiver: &mut MultiMember,
    arrivals: &mut mpsc::UnboundedReceiver<Arrival>,
) -> anyhow::Result<ThroughputRun> {
    let sender_count = senders.len();
    let plaintexts: Vec<Vec<u8>> = (0..message_count)
        .map(|index| format!("{sender_count} senders, message {index}").into_bytes())
        .collect();
    let encryption_started = Instant::now();
    let mut work: Vec<Vec<(usize, Vec<u8>)>> = vec![Vec::new(); sender_count];
    for (index, plaintext) in plaintexts.iter().enumerate() {
        let sender = index % sender_count;
        work[sender].push((index, senders[sender].0.encrypt(plaintext)?));
    }
    let encryption_per_message = encryption_started.elapsed() / message_count as u32;
    let index_of: HashMap<Vec<u8>, usize> = work
        .iter()
        .flatten()
        .map(|(index, message)| (message.clone(), *index))
        .collect();

    let retries_before = api::retries();
    // Profiled (benchmarks/profile.sh): the timed section alone, without the
    // encryption before it and the decryption after it.
    let window = perf::window(perf::Section::Throughput {
        senders: sender_count,
        groups: group_ids.len(),
    })?;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(sender_count);
    let mut cross_replica = Vec::with_capacity(sender_count);
    for ((messages, sender), (api, other_replica)) in
        work.into_iter().zip(senders.iter()).zip(sender_apis)
    {
        cross_replica.push(*other_replica);
        let api = api.clone();
        let session = sender.0.device.session.clone();
        let group_id = group_ids[sender.1].clone();
        tasks.push(tokio::spawn(async move {
            let mut sent_at = Vec::with_capacity(messages.len());
            for (index, message) in messages {
                sent_at.push((index, Instant::now()));
                api.send_message(&session, &group_id, message).await?;
            }
            anyhow::Ok(sent_at)
        }));
    }

    let mut received_at = vec![None; message_count];
    let mut arrival_order = Vec::with_capacity(message_count);
    let mut last_arrival = started;
    while arrival_order.len() < message_count {
        let arrival = match next_arrival(arrivals).await {
            Ok(arrival) => arrival,
            Err(error) => {
                // A sender that failed explains a silent receiver better.
                for task in tasks.into_iter().filter(|task| task.is_finished()) {
                    task.await??;
                }
                return Err(error);
            }
        };
        let Some(&index) = index_of.get(&arrival.message) else {
            continue;
        };
        ensure!(
            received_at[index].is_none(),
            "message {index} arrived twice"
        );
        received_at[index] = Some(arrival.at);
        last_arrival = arrival.at;
        arrival_order.push((index, arrival.group_id, arrival.message));
    }
    let elapsed = last_arrival - started;
    drop(window);

    let mut latencies = Vec::with_capacity(message_count);
    let mut cross_replica_latencies = Vec::new();
    for (task, other_replica) in tasks.into_iter().zip(cross_replica) {
        for (index, sent_at) in task.await?? {
            let received_at = received_at[index].context("a message never arrived")?;
            let latency = received_at.saturating_duration_since(sent_at);
            latencies.push(latency);
            if other_replica {
                cross_replica_latencies.push(latency);
            }
        }
    }

    // Outside the timed section: everything that arrived decrypts to what was sent.
    for (index, group_id, message) in arrival_order {
        let plaintext = receiver.decrypt(&group_id, &message)?;
        ensure!(
            plaintext == plaintexts[index],
            "message {index} decrypted to something else"
        );
    }

    Ok(ThroughputRun {
        database,
        senders: sender_count,
        groups: group_ids.len().min(sender_count),
        messages: message_count,
        elapsed,
        latencies: Samples::new(latencies),
        cross_replica_latencies: Samples::new(cross_replica_latencies),
        encryption_per_message,
        server_memory: None,
        retries: api::retries() - retries_before,
    })
}
