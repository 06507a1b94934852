//! Wake-ups across replicas: every topic published here wakes this replica's
//! subscribers at once and goes to one Redis channel (`{key_prefix}:wakeups`),
//! which every replica subscribes to and turns back into local wake-ups.
//!
//! One channel for all topics, not one per topic: a replica then holds one
//! subscription, re-made by the connection manager after a reconnect, instead
//! of thousands that come and go with streams; each replica reads every
//! wake-up of the domain and drops those nobody here waits for (a map lookup).
//!
//! Publishing never waits for Redis: [`Notifier::publish`] puts the topic in a
//! bounded set (duplicates coalesce) that one task sends, all pending topics in
//! one round trip. A full set or a failed send drops wake-ups, which is safe:
//! they are hints, and each replica's resync (`service::resync`) finds what
//! moved within `redis.poll_interval_ms`.

use super::{LocalNotifier, Notifier, Topic};
use crate::cluster::{PushEvent, Pushes, RedisLink};
use std::collections::HashSet;
use std::future::Future;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Most distinct topics waiting to be published; more are dropped until the
/// sender catches up (or Redis is back).
const MAX_PENDING_TOPICS: usize = 10_000;

/// The [`Notifier`] of a replica in a cluster.
pub(crate) struct ClusterNotifier {
    local: LocalNotifier,
    queue: PublishQueue,
    /// This replica's mark on its messages, so it skips its own: its
    /// subscribers were already woken when the topic was published.
    origin: String,
}

impl ClusterNotifier {
    pub(crate) fn new() -> ClusterNotifier {
        // 64 bits from std's randomly keyed hasher: unique per notifier with
        // overwhelming odds, and it cannot fail (two replicas with the same
        // origin would skip each other's wake-ups).
        let origin = std::hash::RandomState::new().hash_one(0u8);
        ClusterNotifier {
            local: LocalNotifier::default(),
            queue: PublishQueue::new(MAX_PENDING_TOPICS),
            origin: format!("{origin:016x}"),
        }
    }

    /// Sends published topics to Redis and wakes local subscribers of the
    /// topics other replicas publish, until `stopped` resolves.
    pub(crate) async fn run(
        self: Arc<Self>,
        link: Arc<RedisLink>,
        pushes: Pushes,
        stopped: impl Future<Output = ()>,
    ) {
        let channel = link.key(CHANNEL_SUFFIX);
        tokio::select! {
            () = self.send_published(&link, &channel) => {}
            () = self.receive(pushes, &channel) => {}
            () = keep_subscribed(&link, &channel) => {}
            () = stopped => {}
        }
    }

    /// Sends what is pending, in one round trip per batch.
    async fn send_published(&self, link: &RedisLink, channel: &str) {
        loop {
            self.queue.ready.notified().await;
            let topics = self.queue.take();
            if topics.is_empty() {
                continue;
            }
            let messages: Vec<String> = topics
                .iter()
                .map(|topic| format!("{} {}", self.origin, topic.to_message()))
                .collect();
            // `publish` records the outcome on the link (logged once per outage).
            if link.publish(channel, &messages).await {
                let dropped = self.queue.take_dropped();
                if dropped > 0 {
                    tracing::info!(
                        dropped,
                        "wake-ups were dropped while Redis was slow or down; replicas find their events at their next resync"
                    );
                }
            }
        }
    }

    /// Wakes the local subscribers of each topic another replica publishes.
    async fn receive(&self, mut pushes: Pushes, channel: &str) {
        while let Some(event) = crate::cluster::next_push(&mut pushes).await {
            match event {
                PushEvent::Message {
                    channel: from,
                    payload,
                } if from == channel.as_bytes() => {
                    if let Some(topic) = self.topic_from_peer(&payload) {
                        self.local.wake_locally(&topic);
                    }
                }
                PushEvent::Subscribed => {
                    tracing::debug!(%channel, "subscribed to the wake-up channel");
                }
                PushEvent::Message { .. } | PushEvent::Other => {}
            }
        }
    }

    /// The topic of another replica's message; `None` for this replica's own
    /// messages and for anything unreadable.
    fn topic_from_peer(&self, payload: &[u8]) -> Option<Topic> {
        let separator = payload.iter().position(|byte| *byte == b' ')?;
        let (origin, message) = payload.split_at(separator);
        if origin == self.origin.as_bytes() {
            return None;
        }
        Topic::from_message(message.get(1..)?)
    }
}

/// The channel's name after the key prefix.
const CHANNEL_SUFFIX: &str = "wakeups";

/// How long to wait before asking again for a subscription Redis did not confirm.
const SUBSCRIBE_RETRY: Duration = Duration::from_secs(1);

/// Subscribes to `channel`, and again each time Redis comes back after an
/// outage. The connection manager re-subscribes after a reconnect by itself
/// (`RedisLink`); asking again costs one command and covers a re-subscription
/// that failed on the way (a second SUBSCRIBE of a connection is a no-op).
async fn keep_subscribed(link: &RedisLink, channel: &str) {
    let mut up = link.watch_up();
    loop {
        while !link.subscribe(channel).await {
            tokio::time::sleep(SUBSCRIBE_RETRY).await;
        }
        // The link lives as long as the replica: an error means it stops.
        if up.wait_for(|up| !*up).await.is_err() || up.wait_for(|up| *up).await.is_err() {
            return;
        }
    }
}

impl Notifier for ClusterNotifier {
    fn publish(&self, topic: &Topic) {
        // This replica's subscribers need no round trip through Redis.
        self.local.wake_locally(topic);
        self.queue.push(topic);
    }

    fn register(&self, topic: Topic, waker: &Arc<Notify>) {
        self.local.register(topic, waker);
    }

    fn wake_locally(&self, topic: &Topic) {
        self.local.wake_locally(topic);
    }

    fn registered_topics(&self) -> Vec<Topic> {
        self.local.registered_topics()
    }

    fn wake_mark(&self, topic: &Topic) -> u64 {
        self.local.wake_mark(topic)
    }
}

/// Topics waiting to be sent: a set, so a topic published many times before
/// the sender runs goes once; bounded, so a stalled Redis cannot grow memory.
struct PublishQueue {
    pending: Mutex<Pending>,
    /// Woken when a topic is added; its stored permit covers a push that comes
    /// while the sender is busy.
    ready: Notify,
    capacity: usize,
}

#[derive(Default)]
struct Pending {
    topics: HashSet<Topic>,
    /// Topics refused since the last successful send, for the log.
    dropped: u64,
}

impl PublishQueue {
    fn new(capacity: usize) -> PublishQueue {
        PublishQueue {
            pending: Mutex::new(Pending::default()),
            ready: Notify::new(),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn push(&self, topic: &Topic) {
        let mut pending = self.lock();
        if pending.topics.contains(topic) {
            return;
        }
        if pending.topics.len() >= self.capacity {
            pending.dropped = pending.dropped.saturating_add(1);
            return;
        }
        pending.topics.insert(topic.clone());
        drop(pending);
        self.ready.notify_one();
    }

    fn take(&self) -> Vec<Topic> {
        self.lock().topics.drain().collect()
    }

    fn take_dropped(&self) -> u64 {
        std::mem::take(&mut self.lock().dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::ids::GroupKey;

    #[test]
    fn the_queue_coalesces_duplicates_and_drops_beyond_its_bound() {
        let queue = PublishQueue::new(2);
        let group = Topic::Group(GroupKey::from_row(1));
        queue.push(&group);
        queue.push(&group);
        queue.push(&Topic::Outbox);
        queue.push(&Topic::Inbox("d".to_owned()));
        queue.push(&group);
        let mut taken = queue.take();
        taken.sort_by_key(Topic::to_message);
        assert_eq!(taken, vec![group.clone(), Topic::Outbox]);
        assert_eq!(queue.take_dropped(), 1);
        assert_eq!(queue.take_dropped(), 0);
        // Room again once taken.
        queue.push(&Topic::Inbox("d".to_owned()));
        assert_eq!(queue.take(), vec![Topic::Inbox("d".to_owned())]);
        assert!(queue.take().is_empty());
    }

    #[tokio::test]
    async fn publishing_wakes_local_subscribers_at_once_and_queues_the_topic() {
        let notifier = ClusterNotifier::new();
        let waker = Arc::new(Notify::new());
        let topic = Topic::Inbox("d".to_owned());
        notifier.register(topic.clone(), &waker);
        notifier.publish(&topic);
        tokio::time::timeout(Duration::from_secs(5), waker.notified())
            .await
            .expect("woken without Redis");
        assert_eq!(notifier.queue.take(), vec![topic.clone()]);
        assert_eq!(notifier.registered_topics(), vec![topic]);
    }

    #[test]
    fn messages_of_other_replicas_are_read_and_own_ones_skipped() {
        let here = ClusterNotifier::new();
        let there = ClusterNotifier::new();
        let topic = Topic::Group(GroupKey::from_row(9));
        let from_there = format!("{} {}", there.origin, topic.to_message());
        let from_here = format!("{} {}", here.origin, topic.to_message());
        assert_eq!(here.topic_from_peer(from_there.as_bytes()), Some(topic));
        assert_eq!(here.topic_from_peer(from_here.as_bytes()), None);
        assert_eq!(here.topic_from_peer(b"no-separator"), None);
        assert_eq!(here.topic_from_peer(b"abc "), None);
    }
}
