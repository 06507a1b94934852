//! The shared tail cache of group logs: the newest events of each group that
//! an open Subscribe stream reads, read from the database once per wake-up
//! and handed to every stream of the group, so a message to N subscribers
//! costs one read of its group's log, not N.
//!
//! # Exactness
//! A group's tail holds every stored event of the log in `(base, end]`, in
//! order: it is filled only by reads of the database after `end` (events are
//! committed in sequence order, the same rule the devices' cursors rely on),
//! one at a time per group, so it never holds what is not committed and has no
//! gap. Whether events after `end` may exist is told by the notifier's wake
//! mark ([`Notifier::wake_mark`]): a stream is woken only after the event's
//! transaction committed and the mark moved, so it needs a read of the
//! database that started after the mark it sees. A tail read completely (fewer
//! rows than asked) after that mark answers "nothing newer" for it; otherwise
//! the stream (or whoever got there first, the others waiting for it) reads
//! the database again after `end`. A stream that starts to read a group
//! (opened, or newly added) asks for a read that starts after that moment
//! ([`GroupTails::expect_new_reader`]), as it read the database directly
//! before. A position before `base` (a device catching up on older events) is
//! read from the database directly, not cached.
//!
//! # Memory
//! At most [`TAIL_EVENTS`] events per group, and [`TAIL_BYTES`] of messages
//! and [`TAIL_GROUPS`] groups in all, the least recently used tails dropped
//! first (a dropped tail is read again when next asked for).

use crate::notify::{Notifier, Topic};
use crate::rules::ids::{GroupKey, Seq};
use crate::store::{self, LogEvent, Store, StoreError};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

/// Most events kept per group: more than a page, so streams a little behind
/// the newest event are served too.
pub(crate) const TAIL_EVENTS: usize = 256;
/// Most message bytes kept for all groups.
pub(crate) const TAIL_BYTES: usize = 16 * 1024 * 1024;
/// Most groups with a tail.
pub(crate) const TAIL_GROUPS: usize = 8192;
/// Most events one read of the database adds to a tail.
const REFRESH_EVENTS: u64 = TAIL_EVENTS as u64;
/// Reads of a tail one request tries before it reads the database directly
/// (only when tails are dropped as fast as they are read).
const ATTEMPTS: usize = 3;

/// The tails of the groups that streams read; one per server process.
#[derive(Default)]
pub(crate) struct GroupTails {
    state: Mutex<State>,
    /// Reads of the database for tails, so far.
    #[cfg(test)]
    reads: std::sync::atomic::AtomicUsize,
}

#[derive(Default)]
struct State {
    tails: HashMap<GroupKey, Tail>,
    /// Message bytes held by all tails.
    bytes: usize,
    /// Counts uses, for dropping the least recently used tails.
    uses: u64,
}

struct Tail {
    /// Every event of the log in `(base, end]` is in `events`, in order.
    base: Seq,
    end: Seq,
    events: VecDeque<LogEvent>,
    /// The wake mark taken before the last read that found no more than it
    /// asked for, with the `readers` count then; `None` before the first.
    complete_at: Option<(u64, u64)>,
    /// Counts the streams that started to read the group (see
    /// [`GroupTails::expect_new_reader`]).
    readers: u64,
    bytes: usize,
    last_used: u64,
    /// Held while the database is read for this tail: one read at a time, and
    /// those who wait for it use what it found.
    reading: Arc<tokio::sync::Mutex<()>>,
}

/// What a look at a tail found.
enum Look {
    Served(Vec<LogEvent>),
    /// The position lies before the tail: read the database directly.
    Before,
    /// The tail may be behind the database: read it under this lock.
    Stale(Arc<tokio::sync::Mutex<()>>),
}

impl GroupTails {
    /// Up to `limit` events of `group` after `after`, up to `up_to`
    /// (inclusive, if given), oldest first: exactly what
    /// [`store::events_after`] would return now, except events whose wake-up
    /// has not reached this process yet (the caller is woken for those).
    pub(crate) async fn events_after(
        &self,
        database: &Store,
        notifier: &dyn Notifier,
        group: GroupKey,
        after: Seq,
        up_to: Option<Seq>,
        limit: u64,
    ) -> Result<Vec<LogEvent>, StoreError> {
        let topic = Topic::Group(group);
        // Any wake-up the caller had is counted in this mark or an older one.
        let needed = notifier.wake_mark(&topic);
        for _ in 0..ATTEMPTS {
            let reading = match self.look(group, after, up_to, limit, needed) {
                Look::Served(events) => return Ok(events),
                Look::Before => break,
                Look::Stale(reading) => reading,
            };
            let _reading = reading.lock().await;
            // Whoever held the lock may have read what this caller needs.
            match self.look(group, after, up_to, limit, needed) {
                Look::Served(events) => return Ok(events),
                Look::Before => break,
                Look::Stale(current) if Arc::ptr_eq(&current, &reading) => {
                    self.read(database, notifier, group, &reading).await?;
                }
                // The tail was dropped and made anew meanwhile.
                Look::Stale(_) => {}
            }
        }
        store::events_after(database, group, after, up_to, limit).await
    }

    /// A stream starts to read `group`: the next read of the group's tail for
    /// anyone starts after this call, so the stream finds everything
    /// committed before it (as a direct read would), whether or not its
    /// wake-up reached this process.
    pub(crate) fn expect_new_reader(&self, group: GroupKey) {
        if let Some(tail) = self.lock().tails.get_mut(&group) {
            tail.readers += 1;
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn look(
        &self,
        group: GroupKey,
        after: Seq,
        up_to: Option<Seq>,
        limit: u64,
        needed: u64,
    ) -> Look {
        let mut state = self.lock();
        state.uses += 1;
        let used = state.uses;
        if !state.tails.contains_key(&group) {
            state.make_room();
        }
        let tail = state.tails.entry(group).or_insert_with(|| Tail {
            // Starts where its first reader is.
            base: after,
            end: after,
            events: VecDeque::new(),
            complete_at: None,
            readers: 0,
            bytes: 0,
            last_used: used,
            reading: Arc::default(),
        });
        tail.last_used = used;
        if after < tail.base {
            return Look::Before;
        }
        let first = tail.events.partition_point(|event| event.seq <= after);
        let served: Vec<LogEvent> = tail
            .events
            .iter()
            .skip(first)
            .take_while(|event| up_to.is_none_or(|up_to| event.seq <= up_to))
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .cloned()
            .collect();
        let up_to_date = tail
            .complete_at
            .is_some_and(|(mark, readers)| mark >= needed && readers == tail.readers);
        // A full answer, or all there is: otherwise the database may have more.
        if served.len() as u64 == limit
            || up_to_date
            || up_to.is_some_and(|up_to| up_to <= tail.end)
        {
            Look::Served(served)
        } else {
            Look::Stale(tail.reading.clone())
        }
    }

    /// Reads the database after the tail's end, holding its `reading` lock.
    async fn read(
        &self,
        database: &Store,
        notifier: &dyn Notifier,
        group: GroupKey,
        reading: &Arc<tokio::sync::Mutex<()>>,
    ) -> Result<(), StoreError> {
        // Taken before the query: a wake-up counted in it was for an event
        // committed before the query started, which the query therefore sees.
        let mark = notifier.wake_mark(&Topic::Group(group));
        let (end, readers) = {
            let state = self.lock();
            match state.tails.get(&group) {
                Some(tail) if Arc::ptr_eq(&tail.reading, reading) => (tail.end, tail.readers),
                _ => return Ok(()),
            }
        };
        #[cfg(test)]
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let events = store::events_after(database, group, end, None, REFRESH_EVENTS).await?;
        let complete = (events.len() as u64) < REFRESH_EVENTS;
        let mut state = self.lock();
        let state = &mut *state;
        let Some(tail) = state.tails.get_mut(&group) else {
            return Ok(());
        };
        if !Arc::ptr_eq(&tail.reading, reading) {
            return Ok(());
        }
        let before = tail.bytes;
        for event in events {
            // Only this read moves `end`, under the lock: all are newer.
            tail.end = event.seq;
            tail.bytes += event_bytes(&event);
            tail.events.push_back(event);
        }
        if complete {
            tail.complete_at = Some((mark, readers));
        }
        while tail.events.len() > TAIL_EVENTS {
            if let Some(oldest) = tail.events.pop_front() {
                tail.base = oldest.seq;
                tail.bytes -= event_bytes(&oldest);
            }
        }
        state.bytes = state.bytes - before + tail.bytes;
        if state.bytes > TAIL_BYTES {
            state.shrink_to(TAIL_BYTES / 4 * 3, group);
        }
        Ok(())
    }
}

impl State {
    /// Room for one more tail: drops the least recently used quarter when full.
    fn make_room(&mut self) {
        if self.tails.len() < TAIL_GROUPS {
            return;
        }
        let mut uses: Vec<u64> = self.tails.values().map(|tail| tail.last_used).collect();
        uses.sort_unstable();
        let cutoff = uses[uses.len() / 4];
        self.drop_where(|_, tail| tail.last_used <= cutoff);
    }

    /// Drops the least recently used tails other than `keep` until they hold
    /// at most `bytes`.
    fn shrink_to(&mut self, bytes: usize, keep: GroupKey) {
        let mut by_use: Vec<(u64, GroupKey, usize)> = self
            .tails
            .iter()
            .filter(|(group, _)| **group != keep)
            .map(|(group, tail)| (tail.last_used, *group, tail.bytes))
            .collect();
        by_use.sort_unstable_by_key(|(used, _, _)| *used);
        let mut held = self.bytes;
        let mut dropped = HashSet::new();
        for (_, group, tail_bytes) in by_use {
            if held <= bytes {
                break;
            }
            held -= tail_bytes;
            dropped.insert(group);
        }
        self.drop_where(|group, _| dropped.contains(group));
    }

    fn drop_where(&mut self, mut condition: impl FnMut(&GroupKey, &Tail) -> bool) {
        let mut freed = 0;
        self.tails.retain(|group, tail| {
            let drop = condition(group, tail);
            if drop {
                freed += tail.bytes;
            }
            !drop
        });
        self.bytes -= freed;
    }
}

/// What an event costs a tail, roughly.
fn event_bytes(event: &LogEvent) -> usize {
    event.message.len()
        + event.sender_identity.len()
        + event.trace_parent.as_ref().map_or(0, String::len)
        + std::mem::size_of::<LogEvent>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::LocalNotifier;
    use crate::rules::ids::Epoch;
    use crate::store::{EventKind, NewEvent, Transaction, heads_tests::insert_test_group};
    use conclave_test_support::{DatabaseChoice, TestDatabase};
    use std::time::Duration;
    use tokio::sync::Notify;

    /// Events appended while the readers stream: more than a tail holds.
    const EVENTS: u64 = TAIL_EVENTS as u64 + 150;
    const READERS: usize = 8;
    /// Longest wait for one wake-up (a deadline, not a pace).
    const WAKE_DEADLINE: Duration = Duration::from_secs(30);

    async fn append(store: &Store, group: GroupKey, seq: u64) -> Transaction {
        let transaction = store.begin().await.unwrap();
        crate::store::append_event(
            &transaction,
            NewEvent {
                group,
                seq: Seq::new(seq),
                kind: EventKind::Application,
                epoch: Epoch::new(0),
                sender_identity: "sender",
                message: format!("message {seq}").as_bytes(),
                now_ms: 0,
                trace_parent: None,
                message_digest: None,
            },
        )
        .await
        .unwrap();
        transaction
    }

    /// A stream as `subscribe` reads: registered for the group's wake-ups
    /// first, then reading after its position, waiting for a wake-up when
    /// there is nothing, until it has `EVENTS` events.
    async fn stream(
        store: Store,
        notifier: Arc<LocalNotifier>,
        tails: Arc<GroupTails>,
        group: GroupKey,
        limit: u64,
    ) -> Vec<u64> {
        let waker = Arc::new(Notify::new());
        notifier.register(Topic::Group(group), &waker);
        tails.expect_new_reader(group);
        let mut received = Vec::new();
        let mut position = Seq::ZERO;
        while (received.len() as u64) < EVENTS {
            let events = tails
                .events_after(&store, notifier.as_ref(), group, position, None, limit)
                .await
                .unwrap();
            if events.is_empty() {
                tokio::time::timeout(WAKE_DEADLINE, waker.notified())
                    .await
                    .unwrap_or_else(|_| panic!("no wake-up after {position}"));
                continue;
            }
            for event in events {
                assert_eq!(event.message, format!("message {}", event.seq).into_bytes());
                position = event.seq;
                received.push(event.seq.get());
            }
        }
        received
    }

    #[tokio::test]
    async fn streams_get_every_event_once_in_order_while_events_are_appended() {
        for choice in DatabaseChoice::ALL {
            let database = TestDatabase::create(choice).await;
            let store = Store::connect(database.url(), 4).await.unwrap();
            store.migrate().await.unwrap();
            let group = insert_test_group(&store, 1, "d1").await.key;
            let notifier = Arc::new(LocalNotifier::default());
            let tails = Arc::new(GroupTails::default());
            let mut readers = Vec::new();
            for index in 0..READERS {
                // Page sizes differ, so the readers are at different positions.
                let limit = 1 + index as u64 * 7;
                readers.push(tokio::spawn(stream(
                    store.clone(),
                    notifier.clone(),
                    tails.clone(),
                    group,
                    limit,
                )));
            }
            for seq in 1..=EVENTS {
                append(&store, group, seq).await.commit().await.unwrap();
                // As the write path does: the wake-up after the commit.
                notifier.publish(&Topic::Group(group));
                if seq == EVENTS / 2 {
                    // A late reader starts from the beginning, before the
                    // tail's oldest event by the end.
                    readers.push(tokio::spawn(stream(
                        store.clone(),
                        notifier.clone(),
                        tails.clone(),
                        group,
                        100,
                    )));
                }
            }
            let expected: Vec<u64> = (1..=EVENTS).collect();
            for reader in readers {
                assert_eq!(reader.await.unwrap(), expected, "{choice:?}");
            }
            // Bounded: the tail keeps the newest events only.
            let state = tails.lock();
            let tail = &state.tails[&group];
            assert_eq!(tail.events.len(), TAIL_EVENTS, "{choice:?}");
            assert_eq!(tail.end, Seq::new(EVENTS), "{choice:?}");
        }
    }

    #[tokio::test]
    async fn an_uncommitted_event_is_never_served_and_a_committed_one_always_is() {
        for choice in DatabaseChoice::ALL {
            let database = TestDatabase::create(choice).await;
            let store = Store::connect(database.url(), 4).await.unwrap();
            store.migrate().await.unwrap();
            let group = insert_test_group(&store, 1, "d1").await.key;
            let notifier = LocalNotifier::default();
            let waker = Arc::new(Notify::new());
            notifier.register(Topic::Group(group), &waker);
            let tails = GroupTails::default();
            let read = |after: u64| {
                tails.events_after(&store, &notifier, group, Seq::new(after), None, 100)
            };
            assert!(read(0).await.unwrap().is_empty(), "{choice:?}");

            // Stored but not committed, with a wake-up (one published early,
            // or for another event): nothing to serve, and nothing cached.
            let pending = append(&store, group, 1).await;
            notifier.publish(&Topic::Group(group));
            assert!(read(0).await.unwrap().is_empty(), "{choice:?}");
            pending.commit().await.unwrap();
            // The tail read after the last wake-up: it stays as it was until
            // the commit's own wake-up, which makes the next read see it.
            notifier.publish(&Topic::Group(group));
            let seqs = |events: Vec<LogEvent>| -> Vec<u64> {
                events.iter().map(|event| event.seq.get()).collect()
            };
            assert_eq!(seqs(read(0).await.unwrap()), [1], "{choice:?}");

            append(&store, group, 2).await.commit().await.unwrap();
            notifier.publish(&Topic::Group(group));
            assert_eq!(seqs(read(0).await.unwrap()), [1, 2], "{choice:?}");
            assert_eq!(seqs(read(1).await.unwrap()), [2], "{choice:?}");

            // Without a wake-up here (another replica's write, its wake-up
            // still on its way), a new reader still finds it.
            append(&store, group, 3).await.commit().await.unwrap();
            tails.expect_new_reader(group);
            assert_eq!(seqs(read(2).await.unwrap()), [3], "{choice:?}");
        }
    }

    /// Streams subscribed to one group, woken by one message.
    const SUBSCRIBERS: usize = 100;

    #[tokio::test]
    async fn one_read_of_the_database_serves_every_woken_stream() {
        for choice in DatabaseChoice::ALL {
            let database = TestDatabase::create(choice).await;
            let store = Store::connect(database.url(), 4).await.unwrap();
            store.migrate().await.unwrap();
            let group = insert_test_group(&store, 1, "d1").await.key;
            let notifier = Arc::new(LocalNotifier::default());
            let tails = Arc::new(GroupTails::default());
            let wakers: Vec<Arc<Notify>> = (0..SUBSCRIBERS)
                .map(|_| {
                    let waker = Arc::new(Notify::new());
                    notifier.register(Topic::Group(group), &waker);
                    waker
                })
                .collect();
            append(&store, group, 1).await.commit().await.unwrap();
            notifier.publish(&Topic::Group(group));
            let reads_before = tails.reads.load(std::sync::atomic::Ordering::Relaxed);
            let mut streams = Vec::new();
            for waker in wakers {
                let (store, notifier, tails) = (store.clone(), notifier.clone(), tails.clone());
                streams.push(tokio::spawn(async move {
                    tokio::time::timeout(WAKE_DEADLINE, waker.notified())
                        .await
                        .expect("woken");
                    tails
                        .events_after(&store, notifier.as_ref(), group, Seq::ZERO, None, 100)
                        .await
                        .unwrap()
                        .iter()
                        .map(|event| event.seq.get())
                        .collect::<Vec<u64>>()
                }));
            }
            for stream in streams {
                assert_eq!(stream.await.unwrap(), [1], "{choice:?}");
            }
            let reads = tails.reads.load(std::sync::atomic::Ordering::Relaxed) - reads_before;
            assert_eq!(
                reads, 1,
                "{choice:?}: reads of the database for one wake-up"
            );
        }
    }
}
