//! The sessions of recent callers, so that an authenticated call costs no
//! database read: every client call is authenticated, and at thousands of
//! messages a second the token look-up was the one statement per message
//! (the message itself shares its group's batch).
//!
//! A cached session is dropped as soon as its device's access may have ended.
//! Every way access ends (logout, removing or revoking the device, suspending
//! or deactivating the account) publishes a [`Topic::DeviceAccess`] wake-up
//! after its change commits (`delivery::close_device_streams`). The token
//! names its device only once read, so filling an entry takes two reads: the
//! first finds the device, then the entry registers for the device's topic and
//! takes its wake mark, then the second read gives what is kept. A wake-up
//! after the registration, from this replica or (through Redis) another,
//! changes the mark and the next call reads the database again; one before it
//! came after a change the second read sees. Filling is rare: once per device
//! and [`MAX_AGE_MS`]. A wake-up lost with Redis is found by the replica's
//! resync, which asks the database about every registered device
//! (`service::resync`; it runs on every server, since even on SQLite the
//! `conclave-homeserver admin` commands are another process changing devices
//! and accounts, whose wake-ups reach nobody). The only cached answer is "this token is an active
//! device's": refusals are never cached, so a new or restored session is seen
//! at once. Entries also expire after [`MAX_AGE_MS`], which bounds what a change
//! made outside the server (an operator editing rows) leaves cached.

use crate::notify::{Notifier, Topic};
use crate::store::{DeviceRecord, UserKey};
use conclave_core::ids::Username;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Longest an entry is trusted without reading the database again.
pub(crate) const MAX_AGE_MS: i64 = 60_000;

/// Most sessions kept: about 0.5 KB each with the notifier's registration, so
/// at most a few megabytes however many devices call. When more devices than
/// this call within a minute, a miss scans the entries for the oldest: a cost
/// paid only on a miss, which reads the database anyway.
const CAPACITY: usize = 10_000;

/// A device and its account as read from the database for a token: only
/// what a call needs (no password hash, no admin role, which admin calls
/// read afresh).
#[derive(Clone)]
pub(crate) struct Session {
    pub(crate) device: DeviceRecord,
    pub(crate) user: UserKey,
    pub(crate) username: Username,
}

/// Token hash to session, for active devices only.
#[derive(Default)]
pub(crate) struct SessionCache {
    entries: Mutex<HashMap<Vec<u8>, Entry>>,
}

struct Entry {
    session: Session,
    /// The device's [`Topic::DeviceAccess`] wake mark taken before the read.
    mark: u64,
    /// Keeps the device's topic registered while the entry lives.
    _access: Arc<Notify>,
    cached_at_ms: i64,
}

/// Taken before the database read that fills an entry: the registration and
/// the mark it must still have when the entry is used.
pub(crate) struct Watch {
    topic: Topic,
    mark: u64,
    access: Arc<Notify>,
}

impl SessionCache {
    /// The session of `token_hash` if cached, still young and not woken since.
    pub(crate) fn get(
        &self,
        notifier: &dyn Notifier,
        token_hash: &[u8],
        now_ms: i64,
    ) -> Option<Session> {
        let mut entries = self.lock();
        let entry = entries.get(token_hash)?;
        let topic = access_topic(&entry.session);
        if notifier.wake_mark(&topic) != entry.mark || is_expired(entry, now_ms) {
            entries.remove(token_hash);
            return None;
        }
        Some(entry.session.clone())
    }

    /// Registers for the access topic of `device_id`, which the database is
    /// about to be asked about again. Must come before that read: a wake-up
    /// between the two then changes the mark and the entry is never used.
    pub(crate) fn watch(notifier: &dyn Notifier, device_id: &str) -> Watch {
        let topic = Topic::DeviceAccess(device_id.to_owned());
        let access = Arc::new(Notify::new());
        notifier.register(topic.clone(), &access);
        let mark = notifier.wake_mark(&topic);
        Watch {
            topic,
            mark,
            access,
        }
    }

    /// Keeps `session`, read after `watch` was taken, for `token_hash`.
    pub(crate) fn insert(&self, token_hash: Vec<u8>, session: Session, watch: Watch, now_ms: i64) {
        if watch.topic != access_topic(&session) {
            // Read for another device than watched: not safe to keep.
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= CAPACITY && !entries.contains_key(&token_hash) {
            entries.retain(|_, entry| !is_expired(entry, now_ms));
            if entries.len() >= CAPACITY {
                let oldest = entries
                    .iter()
                    .min_by_key(|(_, entry)| entry.cached_at_ms)
                    .map(|(key, _)| key.clone());
                if let Some(oldest) = oldest {
                    entries.remove(&oldest);
                }
            }
        }
        entries.insert(
            token_hash,
            Entry {
                session,
                mark: watch.mark,
                _access: watch.access,
                cached_at_ms: now_ms,
            },
        );
    }

    /// Drops the expired entries, and with them their registrations: the
    /// resync asks the database about every registered device, so idle
    /// devices must not stay registered. Called by each resync.
    pub(crate) fn forget_expired(&self, now_ms: i64) {
        self.lock().retain(|_, entry| !is_expired(entry, now_ms));
    }

    /// Notes that the device's `last_seen_at_ms` was written, so the cached
    /// copy does not ask for the write again.
    pub(crate) fn seen(&self, token_hash: &[u8], now_ms: i64) {
        if let Some(entry) = self.lock().get_mut(token_hash) {
            entry.session.device.last_seen_at_ms = now_ms;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Entry>> {
        // Every step under the lock leaves the map whole.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn access_topic(session: &Session) -> Topic {
    Topic::DeviceAccess(session.device.device_id.as_str().to_owned())
}

fn is_expired(entry: &Entry, now_ms: i64) -> bool {
    // A clock that went back counts as expired too: better a read than trust.
    let age = now_ms - entry.cached_at_ms;
    !(0..MAX_AGE_MS).contains(&age)
}
