//! Waiting with a deadline. A test waits for the event it expects (a stream
//! item, a notification) or polls for a condition no event announces; it never
//! sleeps a fixed time and hopes the thing happened meanwhile.

use std::future::Future;
use std::time::Duration;

/// Longest wait for what a homeserver does in the background (its outbox
/// delivering to a peer, a peer applying what it got). A hub that could not
/// reach a follower retries after a backoff that grows with the outage (up to
/// 60 s): after the outages of the tests (seconds), well under this.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// Awaits `future` for at most `limit`; panics naming `what` when it takes
/// longer.
///
/// `future` is moved to the heap at once: a whole test's future is large, and
/// each async layer around it would otherwise hold another copy of it in its
/// own state, on the test thread's stack.
pub fn within<T>(
    limit: Duration,
    what: &str,
    future: impl Future<Output = T>,
) -> impl Future<Output = T> {
    let timeout = tokio::time::timeout(limit, Box::pin(future));
    async move {
        timeout
            .await
            .unwrap_or_else(|_| panic!("{what} took longer than {} seconds", limit.as_secs_f32()))
    }
}

/// Calls `poll` until it returns `Some`, for at most `limit` in all (panicking
/// with `what` after that), pausing after each miss as [`Backoff`] does: for
/// what no event announces, such as an outbox draining or a copy of a group
/// catching up. The condition, not the pause, is what the caller waits for.
///
/// A poll that needs `&mut` access to something can loop over [`Backoff`]
/// inside [`within`] instead.
pub async fn eventually<T, F: Future<Output = Option<T>>>(
    limit: Duration,
    what: &str,
    mut poll: impl FnMut() -> F,
) -> T {
    within(limit, what, async {
        let mut backoff = Backoff::new();
        loop {
            if let Some(value) = poll().await {
                return value;
            }
            backoff.pause().await;
        }
    })
    .await
}

/// The pause between two looks at a condition: 10 ms, doubling after each miss
/// up to 250 ms, so that a quick condition is seen quickly and a slow one is
/// not polled in a busy loop.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(10);
    const LONGEST: Duration = Duration::from_millis(250);

    pub fn new() -> Backoff {
        Backoff { next: Self::FIRST }
    }

    /// Waits before the next look.
    pub async fn pause(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(Self::LONGEST);
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}
