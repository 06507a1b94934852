//! The Subscribe streams open on this server process, per device and per
//! connection: a new stream is admitted by `rules::streams`, and holds a
//! [`StreamSlot`] while it runs. The slot is released when it is dropped, so a
//! stream that ends for any reason (the client cancels, the connection drops,
//! the server stops, the stream fails) gives its place back.
//!
//! Counted per process, like the rate limits: with several replicas a device
//! may hold the limit on each.

use crate::rules::streams::{
    OpenStreams, StreamAdmission, StreamLimits, StreamRefusal, admit_stream,
};
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
}

#[derive(Debug, Default)]
struct State {
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
    /// Tells the stream it was closed to make room for a newer one of its device.
    replaced: oneshot::Sender<()>,
}

/// A stream's place in the registry; dropping it gives the place back.
#[derive(Debug)]
pub(crate) struct StreamSlot {
    state: Arc<Mutex<State>>,
    device_id: String,
    id: u64,
    replaced: oneshot::Receiver<()>,
}

impl SubscribeStreams {
    pub(crate) fn new(limits: StreamLimits) -> SubscribeStreams {
        SubscribeStreams {
            limits,
            state: Arc::default(),
        }
    }

    pub(crate) fn limits(&self) -> StreamLimits {
        self.limits
    }

    /// Admits a new stream of `device_id` on `connection`, closing the device's
    /// oldest stream if it is at its limit, or refuses it.
    pub(crate) fn open(
        &self,
        device_id: &str,
        connection: Option<ConnectionKey>,
    ) -> Result<StreamSlot, StreamRefusal> {
        let mut state = lock(&self.state);
        let state = &mut *state;
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
                let _ = oldest.replaced.send(());
            }
        }
        let id = state.next_id;
        state.next_id += 1;
        let (replaced_sender, replaced) = oneshot::channel();
        state
            .devices
            .entry(device_id.to_owned())
            .or_default()
            .push_back(OpenStream {
                id,
                connection,
                replaced: replaced_sender,
            });
        if let Some(key) = connection {
            *state.connections.entry(key).or_default() += 1;
        }
        Ok(StreamSlot {
            state: self.state.clone(),
            device_id: device_id.to_owned(),
            id,
            replaced,
        })
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
    /// Resolves when a newer stream of the same device took this one's place.
    pub(crate) async fn replaced(&mut self) {
        // The sender is dropped without sending only with the slot itself, so
        // either outcome means the registry let go of this stream.
        let _ = (&mut self.replaced).await;
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
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

    fn connection(port: u16) -> ConnectionKey {
        ConnectionKey {
            local: SocketAddr::from(([127, 0, 0, 1], 7400)),
            remote: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    fn registry() -> SubscribeStreams {
        SubscribeStreams::new(StreamLimits {
            per_device: 2,
            per_connection: 3,
        })
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
        oldest.replaced().await;
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
        assert_eq!(refusal, StreamRefusal::ConnectionFull { limit: 3 });
        assert_eq!(streams.count("d4", connection(1)), (0, 3));
        // Another connection is not affected, nor is a stream without addresses.
        streams.open("d4", Some(connection(2))).unwrap();
        streams.open("d5", None).unwrap();
    }
}
