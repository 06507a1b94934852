//! How many Subscribe streams read the database at once.
//!
//! A read's future is large (sea-orm's and sqlx's state machines, several
//! KB), and it lives from the moment it is made until its connection is
//! returned to the pool. When thousands of streams open at once (clients
//! reconnecting after a deploy), or a commit makes every stream of a large
//! group reload its memberships, each would make its reads at once and wait
//! for one of the pool's few connections holding all of them: the database
//! serves them no faster, and the allocator is left with thousands of freed
//! holes between the streams' small long-lived allocations, which it keeps
//! (the process's RSS grew by about 43 KB per stream opened, of which 8 KB was
//! still in use). So a stream waits for its turn first, holding only its place
//! in a fair queue, and makes its read's future when its turn comes.

use std::future::Future;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// The turns of streams' database reads: as many at once as the database pool
/// has connections, first come first served.
#[derive(Clone)]
pub(crate) struct StreamReads {
    turns: Arc<Semaphore>,
}

impl StreamReads {
    /// `at_once`: the database pool's size (at least 1).
    pub(crate) fn new(at_once: usize) -> StreamReads {
        StreamReads {
            turns: Arc::new(Semaphore::new(at_once.max(1))),
        }
    }

    /// Makes and awaits the read `make_read` returns once it is this stream's
    /// turn; boxed, so that the stream's task does not keep the read's size
    /// while it waits for wake-ups.
    pub(crate) async fn read<F: Future>(&self, make_read: impl FnOnce() -> F) -> F::Output {
        let _turn = self
            .turns
            .acquire()
            .await
            .expect("the stream reads' semaphore is never closed");
        Box::pin(make_read()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// However many streams read at once, no more reads than the pool's size
    /// are made, let alone run: the others wait with no read's state.
    #[tokio::test]
    async fn no_more_reads_are_made_at_once_than_there_are_turns() {
        let reads = StreamReads::new(3);
        let made = Arc::new(AtomicUsize::new(0));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let (release, released) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (reads, made) = (reads.clone(), made.clone());
            let (running, most) = (running.clone(), most.clone());
            let mut released = released.clone();
            tasks.push(tokio::spawn(async move {
                reads
                    .read(|| {
                        made.fetch_add(1, Ordering::SeqCst);
                        async move {
                            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            released.wait_for(|released| *released).await.unwrap();
                            running.fetch_sub(1, Ordering::SeqCst);
                        }
                    })
                    .await;
            }));
        }
        // The first three reads run, the other seventeen wait for a turn.
        tokio::time::timeout(Duration::from_secs(10), async {
            while running.load(Ordering::SeqCst) < 3 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("three reads should start");
        assert_eq!(reads.turns.available_permits(), 0);
        // Let every waiting task poll again: still no fourth read is made.
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(made.load(Ordering::SeqCst), 3);
        release.send(true).unwrap();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 3);
        assert_eq!(made.load(Ordering::SeqCst), 20);
        assert_eq!(reads.turns.available_permits(), 3);
    }
}
