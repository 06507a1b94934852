//! Wake-ups: when a submission is stored, the subscribers it concerns are woken to
//! read the database. A wake-up carries no data (the database is the source of
//! truth), so a lost or duplicated wake-up delays or repeats a read and never loses
//! or duplicates an event. Each topic's wake mark ([`Notifier::wake_mark`])
//! tells a cache of the database (`service::delivery::tails`) whether a
//! wake-up came since it read.
//!
//! # Layout
//! - this file: [`Topic`], the [`Notifier`] trait and [`LocalNotifier`], the
//!   wake-ups of one process (all a single homeserver needs).
//! - `cluster`: [`ClusterNotifier`], the same wake-ups across replicas through
//!   Redis pub/sub (`crate::cluster` speaks Redis); each replica's
//!   `service::resync` re-reads the database on an interval, the bound on delay
//!   when a wake-up is lost or Redis is down.

mod cluster;

pub(crate) use cluster::ClusterNotifier;

use crate::rules::ids::GroupKey;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::Notify;

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Topic {
    /// A group's log grew.
    Group(GroupKey),
    /// A device's inbox grew (by device id).
    Inbox(String),
    /// A hosted group with follower domains grew: the federation outbox has work.
    Outbox,
    /// A peer domain made an authenticated request: it is reachable.
    PeerAlive(String),
    /// A device's access may have ended (by device id): it was revoked or its
    /// account suspended or deactivated. Its open Subscribe streams re-check
    /// the device and end if it may no longer call.
    DeviceAccess(String),
}

/// Publishes wake-ups and registers interest in topics.
pub(crate) trait Notifier: Send + Sync + 'static {
    /// Wakes everyone registered for `topic`, in this process and (in a
    /// cluster) in the other replicas. Never blocks on the network.
    fn publish(&self, topic: &Topic);
    /// Registers `waker` for `topic`, for as long as the waker lives.
    fn register(&self, topic: Topic, waker: &Arc<Notify>);
    /// Wakes the subscribers of `topic` in this process only: each replica's
    /// resync finds what moved for its own subscribers.
    fn wake_locally(&self, topic: &Topic);
    /// The topics someone in this process is registered for now.
    fn registered_topics(&self) -> Vec<Topic>;
    /// A mark of `topic`'s wake-ups in this process: it grows with every
    /// wake-up of the topic (local or from another replica), so a mark taken
    /// before a read and found unchanged later says no wake-up came between.
    /// While nobody is registered for the topic it is the process's newest
    /// mark (as if just woken). The shared tail cache
    /// (`service::delivery::tails`) tells by it whether its read is recent
    /// enough for a woken stream.
    fn wake_mark(&self, topic: &Topic) -> u64;
}

/// Wake-ups within this process: a map from topic to the subscribers' wakers.
/// Wakers are held weakly, so a subscriber that goes away needs no unregistering;
/// dead entries are dropped as topics are published.
#[derive(Default)]
pub(crate) struct LocalNotifier {
    state: Mutex<LocalState>,
}

#[derive(Default)]
struct LocalState {
    topics: HashMap<Topic, Registered>,
    /// Counts every wake-up in this process; see [`Notifier::wake_mark`].
    wake_count: u64,
}

/// The subscribers of one topic.
#[derive(Default)]
struct Registered {
    wakers: Vec<Weak<Notify>>,
    /// The wake count at the topic's last wake-up (or when it was registered).
    mark: u64,
}

impl LocalNotifier {
    fn lock(&self) -> std::sync::MutexGuard<'_, LocalState> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

impl Notifier for LocalNotifier {
    fn publish(&self, topic: &Topic) {
        self.wake_locally(topic);
    }

    fn wake_locally(&self, topic: &Topic) {
        let mut state = self.lock();
        // Every wake-up counts, heard by someone or not, so a mark taken while
        // the topic had no subscriber still differs from one taken after.
        state.wake_count += 1;
        let mark = state.wake_count;
        let Some(registered) = state.topics.get_mut(topic) else {
            return;
        };
        registered.mark = mark;
        // `notify_one` stores a permit when the subscriber is busy, so a wake-up
        // that arrives while it reads the database is not lost.
        registered.wakers.retain(|waker| match waker.upgrade() {
            Some(waker) => {
                waker.notify_one();
                true
            }
            None => false,
        });
        if registered.wakers.is_empty() {
            state.topics.remove(topic);
        }
    }

    fn register(&self, topic: Topic, waker: &Arc<Notify>) {
        let mut state = self.lock();
        let mark = state.wake_count;
        let registered = state.topics.entry(topic).or_insert_with(|| Registered {
            wakers: Vec::new(),
            mark,
        });
        registered
            .wakers
            .retain(|existing| existing.strong_count() > 0);
        if !registered
            .wakers
            .iter()
            .any(|existing| std::ptr::eq(existing.as_ptr(), Arc::as_ptr(waker)))
        {
            registered.wakers.push(Arc::downgrade(waker));
        }
    }

    fn registered_topics(&self) -> Vec<Topic> {
        let mut state = self.lock();
        // Topics are otherwise pruned only as they are published; a quiet topic
        // whose subscribers left is dropped here, so the resync stops asking
        // the database about it.
        state.topics.retain(|_, registered| {
            registered.wakers.retain(|waker| waker.strong_count() > 0);
            !registered.wakers.is_empty()
        });
        state.topics.keys().cloned().collect()
    }

    fn wake_mark(&self, topic: &Topic) -> u64 {
        let state = self.lock();
        state
            .topics
            .get(topic)
            .map_or(state.wake_count, |registered| registered.mark)
    }
}

impl Topic {
    /// The topic as a pub/sub message between replicas: `g:<group row>`,
    /// `i:<device id>`, `o`, `p:<domain>`, `a:<device id>`.
    pub(crate) fn to_message(&self) -> String {
        match self {
            Topic::Group(key) => format!("g:{}", key.row_id()),
            Topic::Inbox(device_id) => format!("i:{device_id}"),
            Topic::Outbox => "o".to_owned(),
            Topic::PeerAlive(domain) => format!("p:{domain}"),
            Topic::DeviceAccess(device_id) => format!("a:{device_id}"),
        }
    }

    /// The topic a replica's message names; `None` for anything else (a
    /// message is a hint: one that cannot be read is ignored).
    pub(crate) fn from_message(message: &[u8]) -> Option<Topic> {
        if message.len() > MAX_MESSAGE_BYTES {
            return None;
        }
        let text = std::str::from_utf8(message).ok()?;
        if text == "o" {
            return Some(Topic::Outbox);
        }
        let (kind, value) = text.split_once(':')?;
        if value.is_empty() {
            return None;
        }
        match kind {
            // The row id another replica read from the same database.
            "g" => value
                .parse()
                .ok()
                .map(|row| Topic::Group(GroupKey::from_row(row))),
            "i" => Some(Topic::Inbox(value.to_owned())),
            "p" => Some(Topic::PeerAlive(value.to_owned())),
            "a" => Some(Topic::DeviceAccess(value.to_owned())),
            _ => None,
        }
    }
}

/// Longest topic message read from Redis: a device id or a domain is far shorter.
const MAX_MESSAGE_BYTES: usize = 512;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_wake_up_reaches_only_registered_subscribers_and_is_not_lost() {
        let notifier = LocalNotifier::default();
        let interested = Arc::new(Notify::new());
        let other = Arc::new(Notify::new());
        notifier.register(Topic::Group(GroupKey::from_row(1)), &interested);
        notifier.register(Topic::Group(GroupKey::from_row(1)), &interested);
        notifier.register(Topic::Inbox("d".to_owned()), &other);
        // Published before anyone waits: the permit is kept.
        notifier.publish(&Topic::Group(GroupKey::from_row(1)));
        tokio::time::timeout(Duration::from_secs(5), interested.notified())
            .await
            .expect("the registered subscriber is woken");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), other.notified())
                .await
                .is_err(),
            "a subscriber of another topic is not woken"
        );
    }

    #[test]
    fn the_wake_mark_moves_with_every_wake_up_of_the_topic_only() {
        let notifier = LocalNotifier::default();
        let topic = Topic::Group(GroupKey::from_row(1));
        let other = Topic::Group(GroupKey::from_row(2));
        let waker = Arc::new(Notify::new());
        // Nobody registered: a wake-up still moves the mark.
        let unregistered = notifier.wake_mark(&topic);
        notifier.publish(&topic);
        assert!(notifier.wake_mark(&topic) > unregistered);
        notifier.register(topic.clone(), &waker);
        let registered = notifier.wake_mark(&topic);
        // Another topic's wake-up leaves it as it is.
        notifier.register(other.clone(), &waker);
        notifier.publish(&other);
        assert_eq!(notifier.wake_mark(&topic), registered);
        notifier.wake_locally(&topic);
        let woken = notifier.wake_mark(&topic);
        assert!(woken > registered);
        // Its subscribers gone, the mark never goes back.
        drop(waker);
        notifier.publish(&other);
        assert!(notifier.registered_topics().is_empty());
        assert!(notifier.wake_mark(&topic) >= woken);
    }

    #[test]
    fn dropped_subscribers_are_forgotten() {
        let notifier = LocalNotifier::default();
        let waker = Arc::new(Notify::new());
        notifier.register(Topic::Group(GroupKey::from_row(7)), &waker);
        drop(waker);
        notifier.publish(&Topic::Group(GroupKey::from_row(7)));
        assert!(notifier.lock().topics.is_empty());
    }

    #[test]
    fn registered_topics_are_those_with_live_subscribers() {
        let notifier = LocalNotifier::default();
        let staying = Arc::new(Notify::new());
        let leaving = Arc::new(Notify::new());
        notifier.register(Topic::Inbox("stays".to_owned()), &staying);
        notifier.register(Topic::Outbox, &staying);
        notifier.register(Topic::Group(GroupKey::from_row(3)), &leaving);
        drop(leaving);
        let mut topics = notifier.registered_topics();
        topics.sort_by_key(Topic::to_message);
        assert_eq!(
            topics,
            vec![Topic::Inbox("stays".to_owned()), Topic::Outbox]
        );
    }

    #[test]
    fn topics_travel_as_messages_and_garbage_is_ignored() {
        for topic in [
            Topic::Group(GroupKey::from_row(42)),
            Topic::Inbox("3f2a".to_owned()),
            Topic::Inbox("odd:id".to_owned()),
            Topic::Outbox,
            Topic::PeerAlive("b.example".to_owned()),
            Topic::DeviceAccess("00000000000000d1".to_owned()),
        ] {
            assert_eq!(
                Topic::from_message(topic.to_message().as_bytes()),
                Some(topic)
            );
        }
        for garbage in [
            &b""[..],
            b"g:",
            b"g:x",
            b"i:",
            b"a:",
            b"x:1",
            b"oo",
            b"\xff\xfe",
            &[b'i'; 600],
        ] {
            assert_eq!(Topic::from_message(garbage), None, "{garbage:?}");
        }
    }
}
