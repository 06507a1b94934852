//! How many Subscribe streams may be open at once, per device and per HTTP/2
//! connection, and what becomes of a stream over either limit.
//!
//! Over the device's limit, the newest stream wins and the device's oldest
//! stream is closed: a device that moved to another network opens a new
//! stream while its old one is still open here (a dead connection is noticed
//! only when HTTP/2 keepalive gives up on it, up to interval + timeout later),
//! and refusing the new stream would leave that device without live delivery
//! meanwhile. Closing the oldest bounds the device's streams just the same.
//! Over the connection's limit, the new stream is refused: the request came
//! over that very connection, so the connection is alive, and every stream on
//! it may be a live one.

/// The configured limits (`[limits]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamLimits {
    pub(crate) per_device: usize,
    pub(crate) per_connection: usize,
}

/// The streams open when a new one asks to be admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OpenStreams {
    /// Streams of the asking device, on any connection.
    pub(crate) of_device: usize,
    /// Streams on the asking connection, of any device.
    pub(crate) on_connection: usize,
    /// Whether the device's oldest stream is on the asking connection (closing
    /// it frees a place there too).
    pub(crate) oldest_of_device_on_connection: bool,
}

/// A new stream may open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamAdmission {
    Open,
    /// Open, and close the device's oldest stream to stay within its limit.
    OpenClosingOldest,
}

/// A new stream may not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum StreamRefusal {
    #[error(
        "this connection already carries {limit} Subscribe streams, the most allowed \
         (limits.subscribe_streams_per_connection); close one or use another connection"
    )]
    ConnectionFull { limit: usize },
}

/// Decides whether a new stream opens, given the streams open now.
pub(crate) fn admit_stream(
    limits: StreamLimits,
    open: OpenStreams,
) -> Result<StreamAdmission, StreamRefusal> {
    let device_full = open.of_device >= limits.per_device;
    let freed_on_connection = usize::from(device_full && open.oldest_of_device_on_connection);
    if open.on_connection.saturating_sub(freed_on_connection) >= limits.per_connection {
        return Err(StreamRefusal::ConnectionFull {
            limit: limits.per_connection,
        });
    }
    Ok(if device_full {
        StreamAdmission::OpenClosingOldest
    } else {
        StreamAdmission::Open
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        of_device: usize,
        on_connection: usize,
        oldest_of_device_on_connection: bool,
        expected: Result<StreamAdmission, StreamRefusal>,
    ) {
        let limits = StreamLimits {
            per_device: 2,
            per_connection: 3,
        };
        let open = OpenStreams {
            of_device,
            on_connection,
            oldest_of_device_on_connection,
        };
        assert_eq!(admit_stream(limits, open), expected, "{open:?}");
    }

    #[test]
    fn within_both_limits_a_stream_opens() {
        check(0, 0, false, Ok(StreamAdmission::Open));
        check(1, 2, true, Ok(StreamAdmission::Open));
    }

    #[test]
    fn over_the_device_limit_the_oldest_stream_closes() {
        check(2, 0, false, Ok(StreamAdmission::OpenClosingOldest));
        check(2, 2, false, Ok(StreamAdmission::OpenClosingOldest));
        // The connection is full, but the closed stream frees a place on it.
        check(2, 3, true, Ok(StreamAdmission::OpenClosingOldest));
    }

    #[test]
    fn over_the_connection_limit_the_new_stream_is_refused() {
        let refusal = StreamRefusal::ConnectionFull { limit: 3 };
        check(0, 3, false, Err(refusal));
        check(1, 3, true, Err(refusal));
        check(2, 3, false, Err(refusal));
        assert_eq!(
            refusal.to_string(),
            "this connection already carries 3 Subscribe streams, the most allowed \
             (limits.subscribe_streams_per_connection); close one or use another connection"
        );
    }
}
