//! Counts the calls being answered on a gRPC listener, so that a shutdown cut
//! short by its deadline can log how many it cut. A call counts from its
//! request until its handler answered (a Subscribe stream only until it
//! starts streaming: open streams are counted by the stream registry).

use futures::future::BoxFuture;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use tower::{Layer, Service};

#[derive(Debug, Clone)]
pub(crate) struct InFlightLayer {
    calls: Arc<AtomicUsize>,
}

impl InFlightLayer {
    pub(crate) fn new(calls: Arc<AtomicUsize>) -> InFlightLayer {
        InFlightLayer { calls }
    }
}

impl<S> Layer<S> for InFlightLayer {
    type Service = InFlight<S>;

    fn layer(&self, inner: S) -> InFlight<S> {
        InFlight {
            inner,
            calls: self.calls.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct InFlight<S> {
    inner: S,
    calls: Arc<AtomicUsize>,
}

/// One counted call; dropping it (answered, failed or cancelled) uncounts it.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<S, Request> Service<Request> for InFlight<S>
where
    S: Service<Request>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let counted = Counted(self.calls.clone());
        let call = self.inner.call(request);
        Box::pin(async move {
            let answer = call.await;
            drop(counted);
            answer
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    #[tokio::test]
    async fn a_call_counts_until_it_is_answered_or_dropped() {
        let calls = Arc::new(AtomicUsize::new(0));
        let (answer, answered) = oneshot::channel::<()>();
        let answered = std::sync::Mutex::new(Some(answered));
        let mut service =
            InFlightLayer::new(calls.clone()).layer(tower::service_fn(move |_: ()| {
                let answered = answered.lock().unwrap().take();
                async move {
                    if let Some(answered) = answered {
                        let _ = answered.await;
                    }
                    Ok::<_, std::convert::Infallible>(())
                }
            }));
        let waiting = service.call(());
        let dropped = service.call(());
        assert_eq!(calls.load(Ordering::Relaxed), 2);
        drop(dropped);
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        answer.send(()).unwrap();
        waiting.await.unwrap();
        assert_eq!(calls.load(Ordering::Relaxed), 0);
    }
}
