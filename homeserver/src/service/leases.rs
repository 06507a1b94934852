//! Background work that runs on one replica of a domain at a time: each peer's
//! federation outbox (lease `outbox:{peer}`) and the janitor (lease `janitor`).
//! Every replica runs the same tasks; each task does its work only while this
//! replica holds the task's lease (`store::leases`), and the others poll for it.
//!
//! The holder renews its lease every `leases.renew_interval_ms`; a renewal
//! that fails, takes longer than one interval, or finds the lease taken stops
//! the work at once (its future is dropped), so two replicas never work under
//! one lease. A replica that dies stops renewing and another takes over once
//! the lease expires (`leases.ttl_ms`); one that shuts down releases its
//! leases after its work stopped, and another takes over at its next poll.
//!
//! Why this is safe across replicas: a lease renewed at `t` (the holder's clock
//! read before the statement) expires at `t + ttl`; the next renewal starts at
//! `t + interval` and succeeds or stops the work by `t + 2 * interval`, so the
//! work stops at least `ttl - 2 * interval` before anyone else may take over
//! (the configuration requires `ttl >= 3 * interval`: at least one interval,
//! 2 s by default). That margin covers the replicas' clock skew (expiry is
//! compared with each replica's own clock) and the time to drop the work.
//! Even so, work under a lease must be harmless if repeated: an outbox batch
//! that was already on the wire when its sender stopped may arrive after the
//! next sender's, and the follower applies each `(group, seq)` once.

use super::Clock;
use crate::config::LeasesConfig;
use crate::store::{self, Store};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// The janitor's lease.
pub(crate) const JANITOR_LEASE: &str = "janitor";

/// The lease of the outbox to `peer`.
pub(crate) fn outbox_lease(peer: &str) -> String {
    format!("outbox:{peer}")
}

/// Longest a release may take at shutdown; after it, the lease simply expires.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

/// This replica's side of the leases: who it is, and how it holds them.
pub(crate) struct Leases {
    store: Store,
    clock: Arc<dyn Clock>,
    /// This replica's owner id in lease rows: random, made at start.
    replica_id: String,
    ttl_ms: i64,
    renew_interval: Duration,
}

/// Why a holder stopped working under a lease.
enum Ended {
    /// `stopped` resolved: release and return.
    Stopped,
    /// The work returned on its own: release and return.
    WorkDone,
    /// A renewal failed or found the lease taken: the work was dropped.
    Lost(String),
}

impl Leases {
    pub(crate) fn new(store: Store, clock: Arc<dyn Clock>, config: &LeasesConfig) -> Leases {
        Leases::with_replica_id(store, clock, config, new_replica_id())
    }

    fn with_replica_id(
        store: Store,
        clock: Arc<dyn Clock>,
        config: &LeasesConfig,
        replica_id: String,
    ) -> Leases {
        Leases {
            store,
            clock,
            replica_id,
            ttl_ms: i64::try_from(config.ttl_ms).unwrap_or(i64::MAX), // tidy: saturating (validated at most 600000)
            renew_interval: Duration::from_millis(config.renew_interval_ms),
        }
    }

    /// This replica's owner id in lease rows (shown by `federation status`).
    pub(crate) fn replica_id(&self) -> &str {
        &self.replica_id
    }

    /// Runs `work()` whenever this replica holds lease `name`, until `stopped`
    /// resolves or the work returns; then drops the work, releases the lease
    /// and returns. While another replica holds the lease, tries to take it
    /// every renewal interval; after losing it, the work starts afresh (a new
    /// `work()`) once the lease is taken again.
    pub(crate) async fn run_while_holding<W, F>(
        &self,
        name: &str,
        stopped: impl Future<Output = ()>,
        mut work: W,
    ) where
        W: FnMut() -> F,
        F: Future<Output = ()>,
    {
        tokio::pin!(stopped);
        loop {
            let attempted_at = tokio::time::Instant::now();
            match self.try_acquire(name).await {
                Ok(true) => {
                    tracing::info!(lease = name, replica = %self.replica_id, "took the lease; working");
                    let ended = tokio::select! {
                        biased;
                        () = &mut stopped => Ended::Stopped,
                        reason = self.keep_renewing(name, attempted_at) => Ended::Lost(reason),
                        () = work() => Ended::WorkDone,
                    };
                    match ended {
                        Ended::Stopped | Ended::WorkDone => {
                            self.release(name).await;
                            return;
                        }
                        Ended::Lost(reason) => {
                            tracing::warn!(lease = name, replica = %self.replica_id, %reason, "lost the lease; work stopped");
                        }
                    }
                }
                Ok(false) => {}
                Err(reason) => {
                    tracing::warn!(lease = name, %reason, "could not try to take the lease");
                }
            }
            tokio::select! {
                biased;
                () = &mut stopped => return,
                () = tokio::time::sleep(self.renew_interval) => {}
            }
        }
    }

    /// Takes or renews the lease; bounded by one renewal interval, so a holder
    /// never works on past the margin the module doc explains.
    async fn try_acquire(&self, name: &str) -> Result<bool, String> {
        let now_ms = self.clock.now_ms();
        let acquire =
            store::acquire_lease(&self.store, name, &self.replica_id, now_ms, self.ttl_ms);
        match tokio::time::timeout(self.renew_interval, acquire).await {
            Ok(Ok(held)) => Ok(held),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("the database did not answer within the renewal interval".to_owned()),
        }
    }

    /// Renews the held lease every interval, counted from `acquired_at` (when
    /// the statement that took it started: the lease's expiry counts from
    /// then, so the margin above holds however long that statement took);
    /// returns why it could not.
    async fn keep_renewing(&self, name: &str, acquired_at: tokio::time::Instant) -> String {
        let start = acquired_at + self.renew_interval;
        let mut ticks = tokio::time::interval_at(start, self.renew_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match self.try_acquire(name).await {
                Ok(true) => {}
                Ok(false) => return "another replica holds it".to_owned(),
                Err(reason) => return format!("renewal failed: {reason}"),
            }
        }
    }

    /// Gives the lease up, if still held, so another replica takes over at its
    /// next try instead of waiting for the expiry.
    async fn release(&self, name: &str) {
        let release = store::release_lease(&self.store, name, &self.replica_id);
        match tokio::time::timeout(RELEASE_TIMEOUT, release).await {
            Ok(Ok(true)) => {
                tracing::info!(lease = name, replica = %self.replica_id, "released the lease");
            }
            Ok(Ok(false)) => {}
            Ok(Err(error)) => {
                tracing::warn!(lease = name, %error, "could not release the lease; it expires");
            }
            Err(_) => tracing::warn!(lease = name, "releasing the lease timed out; it expires"),
        }
    }
}

/// 64 random bits in hex: replicas of one domain tell their leases apart by it,
/// and a restarted process is a new replica.
fn new_replica_id() -> String {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // Without the OS's randomness, the time and process id still make a
        // collision between two live replicas implausible.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        bytes[..4].copy_from_slice(&nanos.to_le_bytes());
        bytes[4..].copy_from_slice(&std::process::id().to_le_bytes());
    }
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use conclave_test_support::{DatabaseChoice, TestDatabase, eventually};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

    /// A clock that moves only when told, so leases expire only when a test
    /// says so (whatever the machine's speed).
    #[derive(Debug)]
    struct ManualClock(AtomicI64);

    impl Clock for ManualClock {
        fn now_ms(&self) -> i64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    const TIMING: LeasesConfig = LeasesConfig {
        ttl_ms: 600,
        renew_interval_ms: 100,
    };
    const WAIT: Duration = Duration::from_secs(20);

    /// Which replicas are working now, and whether two ever were at once.
    #[derive(Default)]
    struct Workers {
        working: Mutex<Vec<&'static str>>,
        overlaps: AtomicUsize,
        started: AtomicUsize,
    }

    /// Marks `replica` working for as long as it lives.
    struct Working<'a>(&'a Workers, &'static str);

    impl Drop for Working<'_> {
        fn drop(&mut self) {
            let mut working = self.0.working.lock().unwrap();
            working.retain(|replica| *replica != self.1);
        }
    }

    impl Workers {
        async fn work(&self, replica: &'static str) {
            let _working = {
                let mut working = self.working.lock().unwrap();
                if !working.is_empty() {
                    self.overlaps.fetch_add(1, Ordering::SeqCst);
                }
                working.push(replica);
                self.started.fetch_add(1, Ordering::SeqCst);
                Working(self, replica)
            };
            std::future::pending::<()>().await;
        }

        fn working(&self) -> Vec<&'static str> {
            self.working.lock().unwrap().clone()
        }

        async fn until_working(&self, expected: &[&'static str]) {
            eventually(WAIT, &format!("{expected:?} working"), || async {
                (self.working() == expected).then_some(())
            })
            .await;
        }
    }

    /// Runs `replica`'s lease loop for `janitor` on a task until `stop` fires.
    fn replica(
        leases: Arc<Leases>,
        workers: Arc<Workers>,
        name: &'static str,
    ) -> (
        tokio::task::JoinHandle<()>,
        tokio::sync::oneshot::Sender<()>,
    ) {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let stopped = async move {
                let _ = stopped.await;
            };
            leases
                .run_while_holding(JANITOR_LEASE, stopped, || workers.work(name))
                .await;
        });
        (task, stop)
    }

    async fn setup(
        choice: DatabaseChoice,
    ) -> (TestDatabase, Store, Arc<ManualClock>, Arc<Workers>) {
        let database = TestDatabase::create(choice).await;
        let store = Store::connect(database.url(), 4).await.unwrap();
        store.migrate().await.unwrap();
        let clock = Arc::new(ManualClock(AtomicI64::new(1_000_000)));
        (database, store, clock, Arc::new(Workers::default()))
    }

    fn leases_of(store: &Store, clock: &Arc<ManualClock>, replica: &str) -> Arc<Leases> {
        Arc::new(Leases::with_replica_id(
            store.clone(),
            clock.clone(),
            &TIMING,
            replica.to_owned(),
        ))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_replica_works_and_a_stopping_one_hands_over_without_expiry() {
        for choice in DatabaseChoice::ALL {
            let (_database, store, clock, workers) = setup(choice).await;
            let (a_task, stop_a) = replica(leases_of(&store, &clock, "a"), workers.clone(), "a");
            workers.until_working(&["a"]).await;
            let (b_task, stop_b) = replica(leases_of(&store, &clock, "b"), workers.clone(), "b");
            // The clock stands still: the lease never expires, so only a's
            // release can let b in.
            stop_a.send(()).unwrap();
            a_task.await.unwrap();
            workers.until_working(&["b"]).await;
            stop_b.send(()).unwrap();
            b_task.await.unwrap();
            assert!(workers.working().is_empty());
            assert_eq!(workers.overlaps.load(Ordering::SeqCst), 0, "{choice:?}");
            assert!(store::leases(&store).await.unwrap().is_empty(), "released");
            store.close().await.unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_holder_is_taken_over_once_its_lease_expires() {
        for choice in DatabaseChoice::ALL {
            let (_database, store, clock, workers) = setup(choice).await;
            let (a_task, _stop_a) = replica(leases_of(&store, &clock, "a"), workers.clone(), "a");
            workers.until_working(&["a"]).await;
            let (b_task, stop_b) = replica(leases_of(&store, &clock, "b"), workers.clone(), "b");
            // Killed: no release, no more renewals.
            a_task.abort();
            let _ = a_task.await;
            let lease = store::leases(&store).await.unwrap();
            assert_eq!(lease[0].owner, "a", "{choice:?}: not released");
            clock
                .0
                .fetch_add(TIMING.ttl_ms as i64 + 1, Ordering::SeqCst);
            workers.until_working(&["b"]).await;
            stop_b.send(()).unwrap();
            b_task.await.unwrap();
            assert_eq!(workers.overlaps.load(Ordering::SeqCst), 0, "{choice:?}");
            store.close().await.unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn work_stops_when_a_renewal_finds_the_lease_taken() {
        for choice in DatabaseChoice::ALL {
            let (_database, store, clock, workers) = setup(choice).await;
            let (a_task, stop_a) = replica(leases_of(&store, &clock, "a"), workers.clone(), "a");
            workers.until_working(&["a"]).await;
            // As if a's clock fell far behind: another replica judges the lease
            // expired and takes it. a's next renewal finds it taken and stops.
            let later = clock.now_ms() + TIMING.ttl_ms as i64 + 1;
            let taken = store::acquire_lease(&store, JANITOR_LEASE, "c", later, 60_000).await;
            assert!(taken.unwrap(), "{choice:?}");
            workers.until_working(&[]).await;
            assert_eq!(workers.started.load(Ordering::SeqCst), 1);
            stop_a.send(()).unwrap();
            a_task.await.unwrap();
            let lease = store::leases(&store).await.unwrap();
            assert_eq!(lease[0].owner, "c", "{choice:?}: a released only its own");
            store.close().await.unwrap();
        }
    }

    #[test]
    fn replica_ids_differ() {
        assert_ne!(new_replica_id(), new_replica_id());
        assert_eq!(new_replica_id().len(), 16);
    }
}
