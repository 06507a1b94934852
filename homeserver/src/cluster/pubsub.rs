//! Pub/sub on the [`RedisLink`], for the cluster's wake-ups (`notify::cluster`):
//! publishing many messages in one round trip, subscribing to a channel (the
//! connection manager re-subscribes after a reconnect), and the connection's
//! push messages read into [`PushEvent`]s, so no other module names a Redis type.

use super::link::RedisLink;
use redis::{PushInfo, PushKind, RedisResult, Value};
use tokio::sync::mpsc::UnboundedReceiver;

/// The push messages of the link's connection (`RedisLink::start`'s receiver).
pub(crate) type Pushes = UnboundedReceiver<PushInfo>;

/// What a push message says, as far as the wake-ups care.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PushEvent {
    /// A message published on a subscribed channel.
    Message { channel: Vec<u8>, payload: Vec<u8> },
    /// The server confirmed a subscription (also after a reconnect).
    Subscribed,
    /// Anything else (a disconnection, an unsubscription, other kinds).
    Other,
}

/// The next push message; `None` once the link is gone.
pub(crate) async fn next_push(pushes: &mut Pushes) -> Option<PushEvent> {
    pushes.recv().await.map(read_push)
}

fn read_push(push: PushInfo) -> PushEvent {
    match push.kind {
        // RESP3: ["message", channel, payload], of which `data` holds the last two.
        PushKind::Message => {
            let mut data = push.data.into_iter();
            match (data.next(), data.next()) {
                (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) => {
                    PushEvent::Message { channel, payload }
                }
                _ => PushEvent::Other,
            }
        }
        PushKind::Subscribe => PushEvent::Subscribed,
        _ => PushEvent::Other,
    }
}

impl RedisLink {
    /// Publishes each of `messages` on `channel`, in one round trip; `false`
    /// if Redis did not take them (recorded on the link either way).
    pub(crate) async fn publish(&self, channel: &str, messages: &[String]) -> bool {
        let Some(mut connection) = self.connection() else {
            return false;
        };
        let mut pipeline = redis::pipe();
        for message in messages {
            pipeline.cmd("PUBLISH").arg(channel).arg(message).ignore();
        }
        let result: RedisResult<()> = self.bounded(pipeline.query_async(&mut connection)).await;
        result.is_ok()
    }

    /// Subscribes the link's connection to `channel`; once confirmed, the
    /// connection manager subscribes again after each reconnect.
    pub(crate) async fn subscribe(&self, channel: &str) -> bool {
        // Tried even while Redis looks down: the health check may lag behind.
        let mut connection = self.connection_even_if_down();
        let result = connection.subscribe(channel).await;
        self.observe(&result);
        result.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_confirmations_are_read_and_the_rest_ignored() {
        let push = |kind, data| PushInfo { kind, data };
        assert_eq!(
            read_push(push(
                PushKind::Message,
                vec![
                    Value::BulkString(b"conclave:wakeups".to_vec()),
                    Value::BulkString(b"o".to_vec())
                ]
            )),
            PushEvent::Message {
                channel: b"conclave:wakeups".to_vec(),
                payload: b"o".to_vec()
            }
        );
        assert_eq!(
            read_push(push(PushKind::Message, vec![Value::Int(1)])),
            PushEvent::Other
        );
        assert_eq!(
            read_push(push(
                PushKind::Subscribe,
                vec![Value::BulkString(b"c".to_vec()), Value::Int(1)]
            )),
            PushEvent::Subscribed
        );
        assert_eq!(
            read_push(push(PushKind::Disconnection, vec![])),
            PushEvent::Other
        );
    }
}
