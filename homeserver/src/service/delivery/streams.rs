//! The Subscribe streams open on this server process, per device and per
//! connection: a new stream is admitted by `rules::streams`, and holds a
//! [`StreamSlot`] while it runs. The slot is released when it is dropped, so a
//! stream that ends for any reason (the client cancels, the connection drops,
//! the server stops, the stream fails) gives its place back.
//!
//! When the server begins to shut down, [`SubscribeStreams::close_all`] tells
//! every open stream to end (so its client reconnects elsewhere and the
//! HTTP/2 connection can close), and new streams are refused from then on.
//!
//! Counted per process (unlike the rate limits, which a cluster shares): with
//! several replicas a device may hold the limit on each.
//!
//! # Metrics
//! `conclave_subscribe_streams` is the number of [`StreamSlot`]s alive: up
//! when a stream is admitted, down when its slot is dropped, however the
//! stream ended. A stream replaced or told to stop at shutdown still counts
//! until its task has ended (it leaves the registry's own counts at once).

use super::DeliveryError;
use crate::rules::streams::{OpenStreams, StreamAdmission, StreamLimits, admit_stream};
use prometheus_client::metrics::gauge::Gauge;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::oneshot;

/// One HTTP/2 connection: its local and remote address. No two open TCP
/// connections share both, and a stream is counted only while its connection
/// is open (the stream ends when it closes), so this names one connection for
/// as long as it matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ConnectionKey {
    pub(crate) local: SocketAddr,
    pub(crate) remote: SocketAddr,
}

/// The registry of open streams; one per server.
#[derive(Debug)]
pub(crate) struct SubscribeStreams {
    limits: StreamLimits,
    state: Arc<Mutex<State>>,
    /// `conclave_subscribe_streams`: the slots alive.
    open_gauge: Gauge,
}

#[derive(Debug, Default)]
struct State {
    /// The server is shutting down: open streams were told to end, and no new
    /// one opens.
    closing: bool,
    next_id: u64,
    /// Each device's open streams, oldest first.
    devices: HashMap<String, VecDeque<OpenStream>>,
    /// How many streams each connection carries.
    connections: HashMap<ConnectionKey, usize>,
}

#[derive(Debug)]
struct OpenStream {
    id: u64,
    /// `None` when the transport gives no addresses: not counted per connection.
    connection: Option<ConnectionKey>,
    /// Tells the stream to end, and why.
    end: oneshot::Sender<StreamEnd>,
}

/// Why the registry ended a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamEnd {
    /// A newer stream of its device took its place.
    Replaced,
    /// The server is shutting down.
    ServerStopping,
    /// The device may no longer call: it was revoked, or its account was
    /// suspended or deactivated.
    AccessEnded,
}

/// A stream's place in the registry; dropping it gives the place back.
#[derive(Debug)]
pub(crate) struct StreamSlot {
    state: Arc<Mutex<State>>,
    device_id: String,
    id: u64,
    end: oneshot::Receiver<StreamEnd>,
    open_gauge: Gauge,
}

impl SubscribeStreams {
    /// An empty registry, counting the streams it admits in `open_gauge`.
    pub(crate) fn new(limits: StreamLimits, open_gauge: Gauge) -> SubscribeStreams {
        SubscribeStreams {
            limits,
            state: Arc::default(),
            open_gauge,
        }
    }

    pub(crate) fn limits(&self) -> StreamLimits {
        self.limits
    }

    /// Admits a new stream of `device_id` on `connection`, closing the device's
    /// oldest stream if it is at its limit, or refuses it (over the
    /// connection's limit, or while the server shuts down).
    pub(crate) fn open(
        &self,
        device_id: &str,
        connection: Option<ConnectionKey>,
    ) -> Result<StreamSlot, DeliveryError> {
        let mut state = lock(&self.state);
        let state = &mut *state;
        if state.closing {
            return Err(DeliveryError::ServerStopping);
        }
        let of_device = state.devices.get(device_id);
        let open = OpenStreams {
            of_device: of_device.map_or(0, VecDeque::len),
            on_connection: connection
                .and_then(|key| state.connections.get(&key).copied())
                .unwrap_or_default(),
            oldest_of_device_on_connection: connection.is_some()
                && of_device
                    .and_then(VecDeque::front)
                    .is_some_and(|oldest| oldest.connection == connection),
        };
        if admit_stream(self.limits, open)? == StreamAdmission::OpenClosingOldest {
            let oldest = state
                .devices
                .get_mut(device_id)
                .and_then(VecDeque::pop_front);
            if let Some(oldest) = oldest {
                state.release_connection(oldest.connection);
                // The stream may have ended meanwhile; then nobody listens.
                let _ = oldest.end.send(StreamEnd::Replaced);
            }
        }
        let id = state.next_id;
        state.next_id += 1;
        let (end_sender, end) = oneshot::channel();
        state
            .devices
            .entry(device_id.to_owned())
            .or_default()
            .push_back(OpenStream {
                id,
                connection,
                end: end_sender,
            });
        if let Some(key) = connection {
            *state.connections.entry(key).or_default() += 1;
        }
        self.open_gauge.inc();
        Ok(StreamSlot {
            state: self.state.clone(),
            device_id: device_id.to_owned(),
            id,
            end,
            open_gauge: self.open_gauge.clone(),
        })
    }

    /// The server begins to shut down: tells every open stream to end, and
    /// refuses new ones from now on. Returns how many streams were told.
    pub(crate) fn close_all(&self) -> usize {
        let mut state = lock(&self.state);
        state.closing = true;
        state.connections.clear();
        let mut told = 0;
        for (_, streams) in state.devices.drain() {
            for stream in streams {
                // A stream that ended meanwhile no longer listens.
                let _ = stream.end.send(StreamEnd::ServerStopping);
                told += 1;
            }
        }
        told
    }

    /// Tells every open stream of `device_id` on this process to end at once
    /// (its access ended); returns how many were told. Other replicas' streams
    /// hear of it through [`crate::notify::Topic::DeviceAccess`].
    pub(crate) fn close_device(&self, device_id: &str, end: StreamEnd) -> usize {
        let mut state = lock(&self.state);
        let Some(streams) = state.devices.remove(device_id) else {
            return 0;
        };
        let told = streams.len();
        for stream in streams {
            state.release_connection(stream.connection);
            // A stream that ended meanwhile no longer listens.
            let _ = stream.end.send(end);
        }
        told
    }

    /// Streams open now, in all.
    pub(crate) fn open_count(&self) -> usize {
        lock(&self.state).devices.values().map(VecDeque::len).sum()
    }

    /// Streams open now: of `device_id`, and on `connection`.
    #[cfg(test)]
    fn count(&self, device_id: &str, connection: ConnectionKey) -> (usize, usize) {
        let state = lock(&self.state);
        (
            state.devices.get(device_id).map_or(0, VecDeque::len),
            state
                .connections
                .get(&connection)
                .copied()
                .unwrap_or_default(),
        )
    }
}

impl State {
    fn release_connection(&mut self, connection: Option<ConnectionKey>) {
        let Some(key) = connection else { return };
        if let Some(count) = self.connections.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                self.connections.remove(&key);
            }
        }
    }
}

impl StreamSlot {
    /// Resolves when the registry ends this stream: a newer stream of the same
    /// device took its place, the device's access ended, or the server is
    /// shutting down.
    pub(crate) async fn ended(&mut self) -> StreamEnd {
        // The sender is dropped without sending only with the registry itself
        // (the server is gone), which ends the stream as a shutdown does.
        (&mut self.end).await.unwrap_or(StreamEnd::ServerStopping)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.open_gauge.dec();
        let mut state = lock(&self.state);
        let Some(streams) = state.devices.get_mut(&self.device_id) else {
            return;
        };
        // Absent when the stream was replaced: its place was given back then.
        let Some(index) = streams.iter().position(|stream| stream.id == self.id) else {
            return;
        };
        let connection = streams.remove(index).and_then(|stream| stream.connection);
        if streams.is_empty() {
            state.devices.remove(&self.device_id);
        }
        state.release_connection(connection);
    }
}

/// The registry's lock. Nothing panics while holding it (no call out, no
/// await), so a poisoned lock still holds consistent counts.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::streams::StreamRefusal;

    fn connection(port: u16) -> ConnectionKey {
        ConnectionKey {
            local: SocketAddr::from(([127, 0, 0, 1], 7400)),
            remote: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    fn registry() -> SubscribeStreams {
        SubscribeStreams::new(
            StreamLimits {
                per_device: 2,
                per_connection: 3,
            },
            Gauge::default(),
        )
    }

    #[test]
    fn a_dropped_slot_gives_its_place_back() {
        let streams = registry();
        let first = streams.open("d1", Some(connection(1))).unwrap();
        let second = streams.open("d1", Some(connection(1))).unwrap();
        assert_eq!(streams.count("d1", connection(1)), (2, 2));
        drop(first);
        assert_eq!(streams.count("d1", connection(1)), (1, 1));
        drop(second);
        assert_eq!(streams.count("d1", connection(1)), (0, 0));
        assert!(lock(&streams.state).devices.is_empty());
        assert!(lock(&streams.state).connections.is_empty());
    }

    #[tokio::test]
    async fn a_newer_stream_replaces_the_oldest_and_the_old_slot_releases_nothing_twice() {
        let streams = registry();
        let mut oldest = streams.open("d1", Some(connection(1))).unwrap();
        let _middle = streams.open("d1", Some(connection(2))).unwrap();
        let newest = streams.open("d1", Some(connection(2))).unwrap();
        assert_eq!(oldest.ended().await, StreamEnd::Replaced);
        assert_eq!(streams.count("d1", connection(1)), (2, 0));
        assert_eq!(streams.count("d1", connection(2)), (2, 2));
        // Dropping the replaced stream's slot leaves the newer ones counted.
        drop(oldest);
        assert_eq!(streams.count("d1", connection(2)), (2, 2));
        drop(newest);
        assert_eq!(streams.count("d1", connection(2)), (1, 1));
    }

    #[test]
    fn a_full_connection_refuses_and_counts_nothing() {
        let streams = registry();
        let _slots: Vec<StreamSlot> = ["d1", "d2", "d3"]
            .iter()
            .map(|device| streams.open(device, Some(connection(1))).unwrap())
            .collect();
        let refusal = streams.open("d4", Some(connection(1))).unwrap_err();
        assert!(
            matches!(
                refusal,
                DeliveryError::TooManyStreams(StreamRefusal::ConnectionFull { limit: 3 })
            ),
            "{refusal}"
        );
        assert_eq!(streams.count("d4", connection(1)), (0, 3));
        // Another connection is not affected, nor is a stream without addresses.
        streams.open("d4", Some(connection(2))).unwrap();
        streams.open("d5", None).unwrap();
    }

    #[tokio::test]
    async fn the_gauge_counts_slots_alive_however_their_streams_end() {
        let streams = registry();
        let gauge = streams.open_gauge.clone();
        let mut replaced = streams.open("d1", Some(connection(1))).unwrap();
        let _newer = streams.open("d1", Some(connection(1))).unwrap();
        let newest = streams.open("d1", Some(connection(2))).unwrap();
        let other = streams.open("d2", None).unwrap();
        assert_eq!(gauge.get(), 4);
        assert_eq!(replaced.ended().await, StreamEnd::Replaced);
        // Replaced, but its task still runs until it drops the slot.
        assert_eq!(gauge.get(), 4);
        drop(replaced);
        assert_eq!(gauge.get(), 3);
        drop(newest);
        assert_eq!(gauge.get(), 2);
        // Refused streams are not counted.
        streams.close_all();
        assert!(streams.open("d3", None).is_err());
        assert_eq!(gauge.get(), 2);
        drop(other);
        assert_eq!(gauge.get(), 1);
    }

    #[tokio::test]
    async fn closing_a_device_ends_its_streams_only_and_releases_their_places() {
        let streams = registry();
        let mut first = streams.open("d1", Some(connection(1))).unwrap();
        let mut second = streams.open("d1", Some(connection(2))).unwrap();
        let other = streams.open("d2", Some(connection(1))).unwrap();
        assert_eq!(streams.close_device("d1", StreamEnd::AccessEnded), 2);
        assert_eq!(first.ended().await, StreamEnd::AccessEnded);
        assert_eq!(second.ended().await, StreamEnd::AccessEnded);
        assert_eq!(streams.count("d1", connection(1)), (0, 1));
        assert_eq!(streams.count("d2", connection(2)), (1, 0));
        assert_eq!(streams.close_device("d1", StreamEnd::AccessEnded), 0);
        // Their slots, dropped afterwards, release nothing twice.
        drop(first);
        drop(second);
        assert_eq!(streams.count("d2", connection(1)), (1, 1));
        drop(other);
        assert!(lock(&streams.state).connections.is_empty());
    }

    #[tokio::test]
    async fn shutting_down_ends_every_stream_and_refuses_new_ones() {
        let streams = registry();
        let mut first = streams.open("d1", Some(connection(1))).unwrap();
        let mut second = streams.open("d2", Some(connection(2))).unwrap();
        assert_eq!(streams.close_all(), 2);
        assert_eq!(first.ended().await, StreamEnd::ServerStopping);
        assert_eq!(second.ended().await, StreamEnd::ServerStopping);
        assert_eq!(streams.open_count(), 0);
        let refusal = streams.open("d3", Some(connection(3))).unwrap_err();
        assert!(
            matches!(refusal, DeliveryError::ServerStopping),
            "{refusal}"
        );
        // Their slots, dropped afterwards, release nothing twice.
        drop(first);
        drop(second);
        assert!(lock(&streams.state).connections.is_empty());
    }
}
