//! Benchmarks 5 and 6: across domains. Two homeservers in this process, each
//! on a fresh database: a.example, the hub of the group, and b.example, a
//! follower, federating over mutual TLS with certificates of a development CA
//! made at run time, their federation listeners on 127.0.0.1 and 127.0.0.2.
//!
//! One group, hosted on a.example: its creator (the sender on a.example in
//! benchmark 5), `senders` further sender devices and a receiver on a.example,
//! and a sender and a receiver on b.example, all real openmls members that
//! joined from the Welcome. The hub forwards the claims for b.example's users to
//! b.example, and its outbox delivers the add commit there, which makes
//! b.example's copy of the group.
//!
//! - Latency (benchmark 5): messages one at a time, alternately from the
//!   creator and from b.example's sender (which b.example relays to the hub with
//!   SubmitToHub), each sent when the previous one reached both receivers'
//!   Subscribe streams. Latency is from the SendMessage call to each receiver's
//!   stream yielding the message: a→a, a→b, b→a and b→b.
//! - Live throughput (benchmark 6): the senders on a.example send as fast as
//!   they can; when do the messages reach the receiver on a.example and the one
//!   on b.example.
//! - Backlog (benchmark 6): b.example is stopped (its database kept), the
//!   senders on a.example send the same number of messages, b.example starts
//!   again on its database and federation address, and its copy of the group is
//!   watched (ListGroups' `last_seq`, as its receiver sees it) until it has them
//!   all.
//!
//! Benchmark 6 runs once per `federation.outbox_batch_size` of the hub, each
//! time on a fresh pair of homeservers; benchmark 5 on the pair with the default
//! batch size. On PostgreSQL, the rows each homeserver wrote during the live run
//! are counted too.

use crate::api::{self, Api, Session};
use crate::devices::enrol_user;
use crate::milestones;
use crate::mls::{self, Device, Member};
use crate::postgres::{DatabaseProbe, Writes};
use crate::report::Samples;
use crate::server;
use anyhow::{Context as _, anyhow, bail, ensure};
use conclave_homeserver::config::FederationConfig;
use conclave_proto::client::v1::delivery_event::Event;
use conclave_test_support::{DatabaseChoice, TestNetwork};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The domain hosting the group.
const HUB: &str = "a.example";
/// The domain following it.
const FOLLOWER: &str = "b.example";

/// Longest wait for the next event at a receiver, or for b.example's copy to
/// grow, before the run is failed. Longer than the outbox's longest backoff
/// (60 s), which the backlog run may meet.
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(120);
/// How often b.example's copy is looked at while it catches up.
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// How long a graceful stop of b.example may take before the run fails (and of
/// both homeservers at the end, before they are aborted).
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// Federation requests each homeserver accepts from its peer per minute. The
/// default (6,000, as a burst, then 100 a second) is below what the outbox
/// sends with small batches, and a refused batch ends the group's delivery to
/// the follower for good (see BENCHMARKS.md), so the benchmark raises it.
const PEER_REQUESTS_PER_MINUTE: u32 = 1_000_000;

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct FederationSettings {
    /// Messages one at a time from each of the two sending domains.
    pub(crate) latency_messages: usize,
    /// Messages per live run, and per backlog.
    pub(crate) throughput_messages: usize,
    /// Concurrent senders on a.example in the live and backlog runs.
    pub(crate) senders: usize,
    /// The hub's `federation.outbox_batch_size`, one pair of homeservers each.
    pub(crate) batch_sizes: Vec<u64>,
}

/// Benchmark 5: from the SendMessage call to each receiver's stream.
#[derive(Debug)]
pub(crate) struct LatencyResults {
    /// Messages from each sending domain.
    pub(crate) messages: usize,
    /// a→a: the creator to the receiver on a.example.
    pub(crate) same_domain: Samples,
    /// a→b: the creator to the receiver on b.example, through the outbox.
    pub(crate) hub_to_follower: Samples,
    /// b→a: b.example's sender, relayed to the hub, to the receiver on a.example.
    pub(crate) follower_to_hub: Samples,
    /// b→b: relayed to the hub and back through the outbox.
    pub(crate) follower_to_follower: Samples,
    /// How long SendMessage took at a.example (stored by the hub itself).
    pub(crate) send_at_hub: Samples,
    /// How long SendMessage took at b.example (relayed to the hub).
    pub(crate) send_at_follower: Samples,
    /// Where the time to b.example went, for messages from a.example and from
    /// b.example; `None` if the homeserver's events were not all seen (see
    /// `milestones`).
    pub(crate) split: Option<(Split, Split)>,
}

/// Moments inside the homeservers, from the SendMessage call.
#[derive(Debug)]
pub(crate) struct Split {
    /// b.example committed the batch holding the message.
    pub(crate) follower_committed: Samples,
    /// a.example's outbox had b.example's answer.
    pub(crate) hub_answered: Samples,
}

/// When the messages of one live run reached one receiver.
#[derive(Debug)]
pub(crate) struct Reception {
    /// From the first SendMessage call to the last message's arrival.
    pub(crate) elapsed: Duration,
    /// Each message's latency, from its SendMessage call.
    pub(crate) latencies: Samples,
}

/// Benchmark 6, live: the senders on a.example as fast as they can.
#[derive(Debug)]
pub(crate) struct LiveRun {
    pub(crate) messages: usize,
    /// From the first SendMessage call to the last one's return.
    pub(crate) sending: Duration,
    pub(crate) at_hub: Reception,
    pub(crate) at_follower: Reception,
    /// PostgreSQL only: the rows a.example and b.example wrote during the run
    /// (sending and delivering; the receivers' reads write nothing).
    pub(crate) writes: Option<(Writes, Writes)>,
}

/// Benchmark 6, backlog: messages stored while b.example was down.
#[derive(Debug)]
pub(crate) struct BacklogRun {
    pub(crate) events: u64,
    /// Sending them at a.example while b.example was down.
    pub(crate) sending: Duration,
    /// From starting b.example again until it was ready (its `/readyz`).
    pub(crate) start: Duration,
    /// From starting b.example again to its copy first having grown.
    pub(crate) to_first: Duration,
    /// From the copy first having grown to its having every event.
    pub(crate) catch_up: Duration,
    /// Events that arrived during `catch_up` (those of the first batches seen
    /// are not counted in it).
    pub(crate) catch_up_events: u64,
    /// From starting b.example again to its copy having every event.
    pub(crate) total: Duration,
}

impl BacklogRun {
    /// Events per second while b.example was catching up; `None` when the
    /// first look already found every event.
    pub(crate) fn catch_up_rate(&self) -> Option<f64> {
        (self.catch_up_events > 0).then(|| rate(self.catch_up_events, self.catch_up))
    }
}

/// Benchmark 6 at one batch size.
#[derive(Debug)]
pub(crate) struct BatchRun {
    pub(crate) batch_size: u64,
    pub(crate) live: LiveRun,
    pub(crate) backlog: BacklogRun,
}

#[derive(Debug)]
pub(crate) struct FederationResults {
    pub(crate) database: DatabaseChoice,
    pub(crate) latency: Option<LatencyResults>,
    pub(crate) batches: Vec<BatchRun>,
    /// Calls answered UNAVAILABLE and retried over all runs.
    pub(crate) retries: u64,
    /// Set when a run failed: the results above are those that finished.
    pub(crate) failure: Option<String>,
}

pub(crate) async fn run(
    database: DatabaseChoice,
    settings: &FederationSettings,
) -> FederationResults {
    let retries_before = api::retries();
    let mut results = FederationResults {
        database,
        latency: None,
        batches: Vec::new(),
        retries: 0,
        failure: None,
    };
    let default_batch_size = FederationConfig::default().outbox_batch_size;
    for &batch_size in &settings.batch_sizes {
        let measure_latency = batch_size == default_batch_size;
        if let Err(error) = run_pair(
            database,
            settings,
            batch_size,
            measure_latency,
            &mut results,
        )
        .await
        .with_context(|| format!("outbox_batch_size {batch_size}"))
        {
            eprintln!("  failed: {error:#}");
            results.failure = Some(format!("{error:#}"));
            break;
        }
    }
    results.retries = api::retries() - retries_before;
    results
}

/// Everything measured on one fresh pair of homeservers.
async fn run_pair(
    database: DatabaseChoice,
    settings: &FederationSettings,
    batch_size: u64,
    measure_latency: bool,
    results: &mut FederationResults,
) -> anyhow::Result<()> {
    let mut pair = start_pair(database, batch_size).await;
    let probes = match database {
        DatabaseChoice::Postgres => Some((
            DatabaseProbe::connect(&pair.config(HUB).database.url).await?,
            DatabaseProbe::connect(&pair.config(FOLLOWER).database.url).await?,
        )),
        DatabaseChoice::Sqlite => None,
    };
    let outcome = async {
        // Dropped at the end of this block, so that its streams and connections
        // are closed before the homeservers stop.
        let mut group = FederatedGroup::set_up(&pair, settings.senders).await?;
        group.warm_up().await?;
        if measure_latency {
            let latency = group.latency(settings.latency_messages).await?;
            eprintln!(
                "  latency p50: a→a {:?}, a→b {:?}, b→a {:?}, b→b {:?}",
                latency.same_domain.median(),
                latency.hub_to_follower.median(),
                latency.follower_to_hub.median(),
                latency.follower_to_follower.median()
            );
            results.latency = Some(latency);
        }
        let live = group
            .live(settings.throughput_messages, probes.as_ref())
            .await?;
        eprintln!(
            "  batch size {batch_size}, live: {:.0} messages/s at a, {:.0} events/s at b",
            rate(live.messages as u64, live.at_hub.elapsed),
            rate(live.messages as u64, live.at_follower.elapsed)
        );
        let backlog = group
            .backlog(&mut pair, settings.throughput_messages)
            .await?;
        eprintln!(
            "  batch size {batch_size}, backlog: first events after {:.1} s, then {} events/s; all after {:.1} s",
            backlog.to_first.as_secs_f64(),
            backlog
                .catch_up_rate()
                .map_or_else(|| "n/a".to_owned(), |rate| format!("{rate:.0}")),
            backlog.total.as_secs_f64()
        );
        results.batches.push(BatchRun {
            batch_size,
            live,
            backlog,
        });
        anyhow::Ok(())
    }
    .await;
    if let Some((hub_probe, follower_probe)) = probes {
        hub_probe.close().await?;
        follower_probe.close().await?;
    }
    stop_pair(pair).await;
    outcome
}

/// `count` per `elapsed`, per second.
pub(crate) fn rate(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

/// The two homeservers with the benchmark's limits, federation on, and this
/// outbox batch size at the hub; a.example's federation API on 127.0.0.1,
/// b.example's on 127.0.0.2 (see `conclave_test_support::network`).
async fn start_pair(database: DatabaseChoice, batch_size: u64) -> TestNetwork {
    TestNetwork::builder(&[HUB, FOLLOWER], database)
        .configure(move |domain, _, config| {
            server::raise_limits(config);
            config.federation.peer_requests_per_minute = PEER_REQUESTS_PER_MINUTE;
            if domain == HUB {
                config.federation.outbox_batch_size = batch_size;
            }
        })
        .start()
        .await
}

/// Stops both homeservers gracefully and drops their databases. Homeservers
/// that do not stop within a while are dropped instead, which aborts them.
async fn stop_pair(pair: TestNetwork) {
    if tokio::time::timeout(STOP_TIMEOUT, pair.shutdown())
        .await
        .is_err()
    {
        eprintln!("  the homeservers did not stop within {STOP_TIMEOUT:?}; aborted them");
    }
}

/// A group event as a receiver's stream yielded it.
struct Arrival {
    seq: u64,
    message: Vec<u8>,
    at: Instant,
}

/// A device's open Subscribe stream, on a connection of its own, read as it
/// yields by a task of its own; closed when dropped.
struct Subscription {
    task: JoinHandle<()>,
    arrivals: mpsc::UnboundedReceiver<Arrival>,
}

impl Subscription {
    /// Opens `session`'s stream at `url` and keeps the events of `group_id`.
    async fn open(url: &str, session: &Session, group_id: &[u8]) -> anyhow::Result<Subscription> {
        let api = Api::connect(url).await?;
        let mut stream = api.subscribe(session).await?;
        let (arrival_sender, arrivals) = mpsc::unbounded_channel();
        let group_id = group_id.to_vec();
        let task = tokio::spawn(async move {
            // The connection lives as long as the task reads from it.
            let _api = api;
            while let Ok(Some(event)) = stream.message().await {
                let at = Instant::now();
                if let Some(Event::GroupEvent(event)) = event.event
                    && event.group_id == group_id
                {
                    let arrival = Arrival {
                        seq: event.seq,
                        message: event.message,
                        at,
                    };
                    if arrival_sender.send(arrival).is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Subscription { task, arrivals })
    }

    async fn next(&mut self, receiver: &str) -> anyhow::Result<Arrival> {
        match tokio::time::timeout(PROGRESS_TIMEOUT, self.arrivals.recv()).await {
            Ok(Some(arrival)) => Ok(arrival),
            Ok(None) => bail!("the stream of the receiver on {receiver} ended"),
            Err(_) => bail!("the receiver on {receiver} got nothing for {PROGRESS_TIMEOUT:?}"),
        }
    }

    /// Waits for event `seq`, which must be the next one after those seen.
    async fn wait_for(&mut self, receiver: &str, seq: u64) -> anyhow::Result<Arrival> {
        let arrival = self.next(receiver).await?;
        ensure!(
            arrival.seq == seq,
            "the receiver on {receiver} got event {} while waiting for {seq}",
            arrival.seq
        );
        Ok(arrival)
    }

    /// When each event from `first` to `last` arrived (by seq), waiting until
    /// `last` did; earlier events are skipped.
    async fn arrivals_of(
        &mut self,
        receiver: &str,
        first: u64,
        last: u64,
    ) -> anyhow::Result<Vec<Instant>> {
        let mut arrived: Vec<Option<Instant>> = vec![None; usize::try_from(last - first + 1)?];
        let mut missing = arrived.len();
        while missing > 0 {
            let arrival = self.next(receiver).await?;
            let Some(slot) = arrival
                .seq
                .checked_sub(first)
                .and_then(|offset| arrived.get_mut(usize::try_from(offset).ok()?))
            else {
                continue;
            };
            ensure!(
                slot.is_none(),
                "event {} reached {receiver} twice",
                arrival.seq
            );
            *slot = Some(arrival.at);
            missing -= 1;
        }
        Ok(arrived.into_iter().flatten().collect())
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The group and its devices on both domains.
struct FederatedGroup {
    group_id: Vec<u8>,
    /// The creator's connection to a.example.
    hub_api: Api,
    /// b.example's sender's connection; `None` while b.example is down.
    follower_api: Option<Api>,
    /// Sends in benchmark 5, on a.example.
    creator: Member,
    /// Send in benchmark 6, each over a connection of its own to a.example.
    senders: Vec<(Member, Api)>,
    /// On a.example.
    receiver: Member,
    at_hub: Subscription,
    remote_sender: Member,
    remote_receiver: Member,
    /// `None` while b.example is down.
    at_follower: Option<Subscription>,
    /// The newest sequence number in the group's log.
    last_seq: u64,
}

/// A message of benchmark 5.
struct Timed {
    seq: u64,
    started: Instant,
    /// From the SendMessage call to its return.
    send: Duration,
    to_hub: Duration,
    to_follower: Duration,
}

/// Messages sent from a.example by all the senders at once.
struct Sent {
    started: Instant,
    /// From the first call to the last return.
    elapsed: Duration,
    /// When each was sent, by seq (contiguous from `first_seq`).
    sent_at: Vec<Instant>,
    first_seq: u64,
}

impl FederatedGroup {
    /// Enrols the devices, creates the group on a.example, adds everyone with
    /// one commit (the hub claims b.example's key packages from b.example, and
    /// asks it about their credentials), waits until b.example has its copy,
    /// and opens both receivers' streams.
    async fn set_up(pair: &TestNetwork, sender_count: usize) -> anyhow::Result<FederatedGroup> {
        let hub_url = pair.client_url(HUB);
        let follower_url = pair.client_url(FOLLOWER);
        let hub_api = Api::connect(&hub_url).await?;
        let follower_api = Api::connect(&follower_url).await?;
        let creator_device = one_device(enrol_user(&hub_api, "creator", 1).await?)?;
        let sender_devices = enrol_user(&hub_api, "sender", sender_count).await?;
        let receiver_device = one_device(enrol_user(&hub_api, "receiver", 1).await?)?;
        let remote_sender_device = one_device(enrol_user(&follower_api, "sender", 1).await?)?;
        let remote_receiver_device = one_device(enrol_user(&follower_api, "receiver", 1).await?)?;

        let new_group = mls::create_group(creator_device)?;
        let mut creator = new_group.creator;
        let group_id = hub_api
            .create_group(
                &creator.device.session,
                new_group.group_info,
                new_group.ratchet_tree,
            )
            .await?;
        let mut claimed = Vec::new();
        for device in [
            &sender_devices[0],
            &receiver_device,
            &remote_sender_device,
            &remote_receiver_device,
        ] {
            claimed.extend(
                hub_api
                    .claim(&creator.device.session, &device.session.user_id)
                    .await?,
            );
        }
        ensure!(
            claimed.len() == sender_count + 3,
            "claimed {} key packages, expected {}",
            claimed.len(),
            sender_count + 3
        );
        let commit = creator.commit_adds(mls::verified_key_packages(&claimed)?)?;
        let accepted = hub_api
            .submit_commit(&creator.device.session, &group_id, &commit)
            .await?;
        creator.merge_own_commit()?;
        let ratchet_tree = creator.ratchet_tree()?;
        let welcome = commit
            .welcome
            .as_deref()
            .context("the add commit has no Welcome")?;
        let join = |device: Device| Member::join(device, welcome, &ratchet_tree);
        let mut senders = Vec::with_capacity(sender_count);
        for device in sender_devices {
            senders.push((join(device)?, Api::connect(&hub_url).await?));
        }
        let receiver = join(receiver_device)?;
        let remote_sender = join(remote_sender_device)?;
        let remote_receiver = join(remote_receiver_device)?;

        // b.example has the group once the hub's outbox delivered the commit.
        let deadline = Instant::now() + PROGRESS_TIMEOUT;
        while copy_last_seq(&follower_api, &remote_receiver.device.session, &group_id)
            .await?
            .is_none_or(|last_seq| last_seq < accepted.seq)
        {
            ensure!(
                Instant::now() < deadline,
                "{FOLLOWER} did not get the group within {PROGRESS_TIMEOUT:?}"
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        let at_hub = Subscription::open(&hub_url, &receiver.device.session, &group_id).await?;
        let at_follower =
            Subscription::open(&follower_url, &remote_receiver.device.session, &group_id).await?;
        Ok(FederatedGroup {
            group_id,
            hub_api,
            follower_api: Some(follower_api),
            creator,
            senders,
            receiver,
            at_hub,
            remote_sender,
            remote_receiver,
            at_follower: Some(at_follower),
            last_seq: accepted.seq,
        })
    }

    /// One message from each side, untimed: both streams are live, and the TLS
    /// connections between the homeservers are open both ways.
    async fn warm_up(&mut self) -> anyhow::Result<()> {
        self.send_one(false, b"warm-up from a").await?;
        self.send_one(true, b"warm-up from b").await?;
        Ok(())
    }

    /// Benchmark 5: `messages` from each side, alternately, one at a time.
    async fn latency(&mut self, messages: usize) -> anyhow::Result<LatencyResults> {
        let mut from_hub = Vec::with_capacity(messages);
        let mut from_follower = Vec::with_capacity(messages);
        milestones::clear();
        for index in 0..messages {
            from_hub.push(
                self.send_one(false, format!("from a, {index}").as_bytes())
                    .await?,
            );
            from_follower.push(
                self.send_one(true, format!("from b, {index}").as_bytes())
                    .await?,
            );
        }
        let seen = milestones::take();
        let split = |timed: &[Timed]| -> Option<Split> {
            let mut follower_committed = Vec::with_capacity(timed.len());
            let mut hub_answered = Vec::with_capacity(timed.len());
            for message in timed {
                let since_call = |at: &Instant| at.saturating_duration_since(message.started);
                follower_committed.push(seen.applied.get(&message.seq).map(since_call)?);
                hub_answered.push(seen.delivered.get(&message.seq).map(since_call)?);
            }
            Some(Split {
                follower_committed: Samples::new(follower_committed),
                hub_answered: Samples::new(hub_answered),
            })
        };
        let samples = |timed: &[Timed], pick: fn(&Timed) -> Duration| {
            Samples::new(timed.iter().map(pick).collect())
        };
        Ok(LatencyResults {
            messages,
            same_domain: samples(&from_hub, |timed| timed.to_hub),
            hub_to_follower: samples(&from_hub, |timed| timed.to_follower),
            follower_to_hub: samples(&from_follower, |timed| timed.to_hub),
            follower_to_follower: samples(&from_follower, |timed| timed.to_follower),
            send_at_hub: samples(&from_hub, |timed| timed.send),
            send_at_follower: samples(&from_follower, |timed| timed.send),
            split: split(&from_hub).zip(split(&from_follower)),
        })
    }

    /// Sends one message from the creator (a.example) or from b.example's
    /// sender, and waits until both receivers' streams yielded it. Encrypting
    /// comes before the timing; after it, both receivers decrypt the message
    /// and check it is what was sent.
    async fn send_one(&mut self, from_follower: bool, plaintext: &[u8]) -> anyhow::Result<Timed> {
        let (sender, api) = if from_follower {
            let api = self.follower_api.as_ref().context("b.example is down")?;
            (&mut self.remote_sender, api)
        } else {
            (&mut self.creator, &self.hub_api)
        };
        let message = sender.encrypt(plaintext)?;
        let started = Instant::now();
        let accepted = api
            .send_message(&sender.device.session, &self.group_id, message)
            .await?;
        let send = started.elapsed();
        self.last_seq = accepted.seq;
        let at_hub = self.at_hub.wait_for(HUB, accepted.seq).await?;
        let at_follower = self
            .at_follower
            .as_mut()
            .context("b.example is down")?
            .wait_for(FOLLOWER, accepted.seq)
            .await?;
        for (receiver, arrival) in [
            (&mut self.receiver, &at_hub),
            (&mut self.remote_receiver, &at_follower),
        ] {
            ensure!(
                receiver.decrypt(&arrival.message)? == plaintext,
                "event {} decrypted to something else",
                arrival.seq
            );
        }
        Ok(Timed {
            seq: accepted.seq,
            started,
            send,
            to_hub: at_hub.at.saturating_duration_since(started),
            to_follower: at_follower.at.saturating_duration_since(started),
        })
    }

    /// Benchmark 6, live: `messages` from all the senders on a.example at once,
    /// until both receivers have them all; with `probes` (PostgreSQL), the rows
    /// a.example and b.example wrote meanwhile.
    async fn live(
        &mut self,
        messages: usize,
        probes: Option<&(DatabaseProbe, DatabaseProbe)>,
    ) -> anyhow::Result<LiveRun> {
        let before = match probes {
            Some((hub, follower)) => {
                let (hub, follower) = tokio::join!(hub.snapshot(), follower.snapshot());
                Some((hub?, follower?))
            }
            None => None,
        };
        let sent = self.send_from_hub(messages, "live").await?;
        let last_seq = self.last_seq;
        let at_hub = self
            .at_hub
            .arrivals_of(HUB, sent.first_seq, last_seq)
            .await?;
        let at_follower = self
            .at_follower
            .as_mut()
            .context("b.example is down")?
            .arrivals_of(FOLLOWER, sent.first_seq, last_seq)
            .await?;
        let writes = match (probes, before) {
            (Some((hub, follower)), Some((hub_before, follower_before))) => {
                let (hub_after, follower_after) = tokio::join!(hub.snapshot(), follower.snapshot());
                Some((
                    hub_before.writes_until(&hub_after?),
                    follower_before.writes_until(&follower_after?),
                ))
            }
            _ => None,
        };
        let reception = |arrived: Vec<Instant>| {
            let last = arrived.iter().max().copied().unwrap_or(sent.started);
            Reception {
                elapsed: last.saturating_duration_since(sent.started),
                latencies: Samples::new(
                    arrived
                        .iter()
                        .zip(&sent.sent_at)
                        .map(|(arrived, sent_at)| arrived.saturating_duration_since(*sent_at))
                        .collect(),
                ),
            }
        };
        Ok(LiveRun {
            messages,
            sending: sent.elapsed,
            at_hub: reception(at_hub),
            at_follower: reception(at_follower),
            writes,
        })
    }

    /// Benchmark 6, backlog: stops b.example, sends `messages` on a.example,
    /// starts b.example again and watches its copy until it has them all (its
    /// client API answers once it is ready).
    async fn backlog(
        &mut self,
        pair: &mut TestNetwork,
        messages: usize,
    ) -> anyhow::Result<BacklogRun> {
        // b.example's clients go first, so that no open stream holds up its
        // graceful stop.
        self.at_follower = None;
        self.follower_api = None;
        tokio::time::timeout(STOP_TIMEOUT, pair.stop(FOLLOWER))
            .await
            .map_err(|_| anyhow!("{FOLLOWER} did not stop within {STOP_TIMEOUT:?}"))?;
        let sent = self.send_from_hub(messages, "backlog").await?;
        let (before, target) = (sent.first_seq - 1, self.last_seq);
        // Timed from the start, not from readiness: b.example may begin to catch
        // up before it reports ready.
        let starting = Instant::now();
        pair.start_again(FOLLOWER).await;
        let start = starting.elapsed();
        let api = Api::connect(&pair.client_url(FOLLOWER)).await?;
        let session = &self.remote_receiver.device.session;
        let mut first: Option<(Instant, u64)> = None;
        let (mut seen, mut progressed) = (before, starting);
        let done = loop {
            let last_seq = copy_last_seq(&api, session, &self.group_id)
                .await?
                .with_context(|| format!("{FOLLOWER} lost its copy of the group"))?;
            let now = Instant::now();
            if last_seq > seen {
                seen = last_seq;
                progressed = now;
                first.get_or_insert((now, last_seq));
            }
            if last_seq >= target {
                break now;
            }
            ensure!(
                now.duration_since(progressed) < PROGRESS_TIMEOUT,
                "{FOLLOWER}'s copy stayed at {seen} of {target} for {PROGRESS_TIMEOUT:?}"
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        };
        let (first_at, first_seq) = first.context("the copy never grew")?;
        self.follower_api = Some(api);
        Ok(BacklogRun {
            events: target - before,
            sending: sent.elapsed,
            start,
            to_first: first_at.duration_since(starting),
            catch_up: done.duration_since(first_at),
            catch_up_events: target - first_seq,
            total: done.duration_since(starting),
        })
    }

    /// Sends `messages` from the senders on a.example, each sender its share
    /// one after another, all senders at once. Encrypting comes first, untimed.
    async fn send_from_hub(&mut self, messages: usize, run: &str) -> anyhow::Result<Sent> {
        let sender_count = self.senders.len();
        let mut work: Vec<Vec<Vec<u8>>> = vec![Vec::new(); sender_count];
        for index in 0..messages {
            let (sender, _) = &mut self.senders[index % sender_count];
            work[index % sender_count].push(sender.encrypt(format!("{run} {index}").as_bytes())?);
        }
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(sender_count);
        for (messages, (sender, api)) in work.into_iter().zip(&self.senders) {
            let (api, session) = (api.clone(), sender.device.session.clone());
            let group_id = self.group_id.clone();
            tasks.push(tokio::spawn(async move {
                let mut sent = Vec::with_capacity(messages.len());
                for message in messages {
                    let sent_at = Instant::now();
                    let accepted = api.send_message(&session, &group_id, message).await?;
                    sent.push((accepted.seq, sent_at));
                }
                anyhow::Ok(sent)
            }));
        }
        let mut sent = Vec::with_capacity(messages);
        for task in tasks {
            sent.extend(task.await??);
        }
        let elapsed = started.elapsed();
        sent.sort_unstable_by_key(|(seq, _)| *seq);
        let first_seq = self.last_seq + 1;
        for (offset, (seq, _)) in sent.iter().enumerate() {
            ensure!(
                *seq == first_seq + offset as u64,
                "the {run} messages are not events {first_seq} onwards (found {seq})"
            );
        }
        self.last_seq += messages as u64;
        Ok(Sent {
            started,
            elapsed,
            sent_at: sent.into_iter().map(|(_, sent_at)| sent_at).collect(),
            first_seq,
        })
    }
}

/// The newest sequence number of `group_id` as `session`'s homeserver has it,
/// `None` if it does not list the group.
async fn copy_last_seq(
    api: &Api,
    session: &Session,
    group_id: &[u8],
) -> anyhow::Result<Option<u64>> {
    Ok(api
        .list_groups(session)
        .await?
        .into_iter()
        .find(|group| group.group_id == group_id)
        .map(|group| group.last_seq))
}

fn one_device(mut devices: Vec<Device>) -> anyhow::Result<Device> {
    devices
        .pop()
        .ok_or_else(|| anyhow!("no device was enrolled"))
}
