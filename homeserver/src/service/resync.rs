//! The wake-up resync of a server on PostgreSQL (a replica of a cluster, or
//! replicas sharing a database without Redis): every
//! `redis.poll_interval_ms`, one look at the database for the topics this
//! replica's subscribers wait on, waking those that moved. Wake-ups through
//! Redis are hints; this is what makes a lost one (or a Redis outage) cost at
//! most one interval, never an event.
//!
//! One task per replica, not a timer per stream: it reads the log heads of the
//! registered groups and inboxes in a few statements (`store::group_heads`,
//! `store::inbox_heads`), however many streams are open, and compares them with
//! its previous look. A topic seen for the first time is woken too (its
//! subscriber may have read the database just before an event it was not yet
//! registered for at the last look); a spurious wake-up costs one read.
//! The federation outbox (`Topic::Outbox`) is woken on every tick: its pass
//! is its own query for pending work. The streams of devices whose access
//! ended (`Topic::DeviceAccess`: revoked, or the account suspended or
//! deactivated) are woken when one statement finds them, so a stream on a
//! replica that missed the wake-up still ends within an interval, and so does
//! a cached session (`accounts::session_cache`).
//!
//! On SQLite too: the `conclave-homeserver admin` commands are another process
//! writing the database (revoking, suspending, deactivating), and their
//! wake-ups reach nobody.

use super::Context;
use crate::notify::Topic;
use crate::rules::ids::Seq;
use crate::store::{self, StoreError};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Resyncs every `interval` until `stopped` resolves.
pub(crate) async fn run(
    context: Arc<Context>,
    interval: Duration,
    stopped: impl Future<Output = ()>,
) {
    let resync = async {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heads = HashMap::new();
        let mut failing = false;
        loop {
            ticker.tick().await;
            match resync_once(&context, &mut last_heads).await {
                Ok(_) if failing => {
                    failing = false;
                    tracing::info!("the wake-up resync reads the database again");
                }
                Ok(_) => {}
                Err(error) if !failing => {
                    failing = true;
                    tracing::warn!(%error, "the wake-up resync cannot read the database");
                }
                Err(_) => {}
            }
        }
    };
    tokio::select! {
        () = resync => {}
        () = stopped => {}
    }
}

/// One look: wakes the registered topics whose head moved since `last_heads`
/// (and the outbox), and remembers the heads for the next look. Returns how
/// many topics it woke.
pub(crate) async fn resync_once(
    context: &Context,
    last_heads: &mut HashMap<Topic, Seq>,
) -> Result<usize, StoreError> {
    // Idle devices' cached sessions go first, so they are not asked about.
    context.sessions.forget_expired(context.now_ms());
    let topics = context.notifier.registered_topics();
    let mut groups = Vec::new();
    let mut devices = Vec::new();
    let mut outbox = false;
    let mut streaming_devices = Vec::new();
    for topic in &topics {
        match topic {
            Topic::Group(key) => groups.push(*key),
            Topic::Inbox(device_id) => devices.push(device_id.clone()),
            Topic::Outbox => outbox = true,
            Topic::PeerAlive(_) => {}
            Topic::DeviceAccess(device_id) => streaming_devices.push(device_id.clone()),
        }
    }
    // A registered topic without a row (an inbox never written) is at zero.
    let mut heads: HashMap<Topic, Seq> = groups
        .iter()
        .map(|key| (Topic::Group(*key), Seq::ZERO))
        .chain(
            devices
                .iter()
                .map(|id| (Topic::Inbox(id.clone()), Seq::ZERO)),
        )
        .collect();
    if !groups.is_empty() {
        for (key, seq) in store::group_heads(&context.store, &groups).await? {
            heads.insert(Topic::Group(key), seq);
        }
    }
    if !devices.is_empty() {
        for (device_id, seq) in store::inbox_heads(&context.store, &devices).await? {
            heads.insert(Topic::Inbox(device_id), seq);
        }
    }
    let mut woken = moved_topics(last_heads, &heads);
    if outbox {
        woken.push(Topic::Outbox);
    }
    // Streams of devices whose access ended without this replica hearing of
    // it: they re-check and end.
    for device_id in store::devices_without_access(&context.store, &streaming_devices).await? {
        woken.push(Topic::DeviceAccess(device_id));
    }
    for topic in &woken {
        context.notifier.wake_locally(topic);
    }
    *last_heads = heads;
    Ok(woken.len())
}

/// The topics whose head differs from the last look, or that were not looked
/// at then.
fn moved_topics(last_heads: &HashMap<Topic, Seq>, heads: &HashMap<Topic, Seq>) -> Vec<Topic> {
    heads
        .iter()
        .filter(|(topic, seq)| last_heads.get(topic) != Some(seq))
        .map(|(topic, _)| topic.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::rules::ids::GroupKey;
    use crate::service::SystemClock;
    use crate::store::{NewInboxEvent, Store};
    use conclave_test_support::{DatabaseChoice, TestDatabase};
    use tokio::sync::Notify;

    /// Another replica's write, as far as this replica's notifier knows: a
    /// Welcome in `device_id`'s inbox, with no wake-up published here.
    async fn welcome_elsewhere(store: &Store, device_id: &str, group: GroupKey) {
        let transaction = store.begin().await.unwrap();
        store::append_inbox_event(
            &transaction,
            NewInboxEvent {
                device_id,
                group,
                commit_seq: Seq::new(1),
                welcome: b"w",
                ratchet_tree: b"t",
                now_ms: 0,
            },
        )
        .await
        .unwrap();
        transaction.commit().await.unwrap();
    }

    const DEVICE: &str = "00000000000000d1";

    #[tokio::test]
    async fn a_write_without_a_wake_up_is_found_at_the_next_look() {
        for choice in DatabaseChoice::ALL {
            let database = TestDatabase::create(choice).await;
            let store = Store::connect(database.url(), 2).await.unwrap();
            store.migrate().await.unwrap();
            let context = Context::new(store.clone(), Config::default(), Arc::new(SystemClock));
            let group = crate::store::heads_tests::insert_test_group(&store, 1, "d").await;
            crate::store::heads_tests::insert_test_device(&store, DEVICE).await;
            let waker = Arc::new(Notify::new());
            context
                .notifier
                .register(Topic::Inbox(DEVICE.to_owned()), &waker);
            context.notifier.register(Topic::Group(group.key), &waker);
            let mut last_heads = HashMap::new();

            // The first look wakes what it has not seen before.
            assert_eq!(
                resync_once(&context, &mut last_heads).await.unwrap(),
                2,
                "{choice:?}"
            );
            tokio::time::timeout(Duration::from_secs(10), waker.notified())
                .await
                .expect("woken");
            assert_eq!(
                resync_once(&context, &mut last_heads).await.unwrap(),
                0,
                "{choice:?}"
            );

            welcome_elsewhere(&store, DEVICE, group.key).await;
            assert_eq!(
                resync_once(&context, &mut last_heads).await.unwrap(),
                1,
                "{choice:?}"
            );
            tokio::time::timeout(Duration::from_secs(10), waker.notified())
                .await
                .expect("woken");
            assert_eq!(
                last_heads.get(&Topic::Inbox(DEVICE.to_owned())),
                Some(&Seq::new(1)),
                "{choice:?}"
            );
            assert_eq!(
                resync_once(&context, &mut last_heads).await.unwrap(),
                0,
                "{choice:?}"
            );
        }
    }

    fn heads(entries: &[(Topic, u64)]) -> HashMap<Topic, Seq> {
        entries
            .iter()
            .map(|(topic, seq)| (topic.clone(), Seq::new(*seq)))
            .collect()
    }

    #[test]
    fn moved_and_new_topics_are_woken_unchanged_and_gone_ones_are_not() {
        let group = |row| Topic::Group(GroupKey::from_row(row));
        let inbox = |id: &str| Topic::Inbox(id.to_owned());
        let last = heads(&[
            (group(1), 5),
            (group(2), 3),
            (inbox("a"), 0),
            (inbox("gone"), 9),
        ]);
        let now = heads(&[
            (group(1), 6),
            (group(2), 3),
            (inbox("a"), 0),
            (inbox("new"), 0),
        ]);
        let mut woken = moved_topics(&last, &now);
        woken.sort_by_key(Topic::to_message);
        assert_eq!(woken, vec![group(1), inbox("new")]);
        assert!(moved_topics(&now, &now).is_empty());
    }
}
