//! Wake-ups: when a submission is stored, the subscribers it concerns are woken to
//! read the database. A wake-up carries no data (the database is the source of
//! truth), so a lost or duplicated wake-up delays or repeats a read and never loses
//! or duplicates an event.
//!
//! This in-process implementation serves one replica; the cluster issue adds a
//! Redis implementation of the same [`Notifier`] so replicas wake each other.

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
}

/// Publishes wake-ups and registers interest in topics.
pub(crate) trait Notifier: Send + Sync + 'static {
    /// Wakes everyone registered for `topic`.
    fn publish(&self, topic: &Topic);
    /// Registers `waker` for `topic`, for as long as the waker lives.
    fn register(&self, topic: Topic, waker: &Arc<Notify>);
}

/// Wake-ups within this process: a map from topic to the subscribers' wakers.
/// Wakers are held weakly, so a subscriber that goes away needs no unregistering;
/// dead entries are dropped as topics are published.
#[derive(Default)]
pub(crate) struct LocalNotifier {
    wakers: Mutex<HashMap<Topic, Vec<Weak<Notify>>>>,
}

impl Notifier for LocalNotifier {
    fn publish(&self, topic: &Topic) {
        let mut wakers = self
            .wakers
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let Some(registered) = wakers.get_mut(topic) else {
            return;
        };
        // `notify_one` stores a permit when the subscriber is busy, so a wake-up
        // that arrives while it reads the database is not lost.
        registered.retain(|waker| match waker.upgrade() {
            Some(waker) => {
                waker.notify_one();
                true
            }
            None => false,
        });
        if registered.is_empty() {
            wakers.remove(topic);
        }
    }

    fn register(&self, topic: Topic, waker: &Arc<Notify>) {
        let mut wakers = self
            .wakers
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let registered = wakers.entry(topic).or_default();
        registered.retain(|existing| existing.strong_count() > 0);
        if !registered
            .iter()
            .any(|existing| std::ptr::eq(existing.as_ptr(), Arc::as_ptr(waker)))
        {
            registered.push(Arc::downgrade(waker));
        }
    }
}

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
    fn dropped_subscribers_are_forgotten() {
        let notifier = LocalNotifier::default();
        let waker = Arc::new(Notify::new());
        notifier.register(Topic::Group(GroupKey::from_row(7)), &waker);
        drop(waker);
        notifier.publish(&Topic::Group(GroupKey::from_row(7)));
        assert!(notifier.wakers.lock().unwrap().is_empty());
    }
}
