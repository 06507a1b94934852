//! The deadline of every call on both gRPC listeners: a tower layer that ends
//! a call not answered within `limits.call_deadline_seconds`, or within the
//! caller's own `grpc-timeout` if that is shorter, with DEADLINE_EXCEEDED.
//!
//! It bounds the time until the response's head: all of a unary call, and for
//! a server stream (Subscribe) only its start (authentication and admission),
//! so a long-lived stream is never cut. Dropping the call's future on expiry
//! cancels its work just as a client's cancellation would: an open transaction
//! is rolled back.
//!
//! tonic's own `Server::timeout` would do the same timing, but ends the call
//! with CANCELLED, which tells a client the caller gave up; gRPC prescribes
//! DEADLINE_EXCEEDED, so the status is made here (in `status.rs`).

use super::status::deadline_exceeded;
use futures::future::BoxFuture;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::{Layer, Service};

/// Applies [`Deadline`] to every call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DeadlineLayer {
    server_deadline: Duration,
}

impl DeadlineLayer {
    pub(crate) fn new(server_deadline: Duration) -> DeadlineLayer {
        DeadlineLayer { server_deadline }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline {
            inner,
            server_deadline: self.server_deadline,
        }
    }
}

/// Ends calls that take longer than their deadline with DEADLINE_EXCEEDED.
#[derive(Debug, Clone)]
pub(crate) struct Deadline<S> {
    inner: S,
    server_deadline: Duration,
}

impl<S, RequestBody> Service<http::Request<RequestBody>> for Deadline<S>
where
    S: Service<http::Request<RequestBody>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        let deadline = match requested_timeout(request.headers()) {
            Some(requested) => requested.min(self.server_deadline),
            None => self.server_deadline,
        };
        let call = self.inner.call(request);
        Box::pin(async move {
            match tokio::time::timeout(deadline, call).await {
                Ok(answered) => answered,
                Err(_) => Ok(deadline_exceeded(deadline).into_http()),
            }
        })
    }
}

/// The caller's `grpc-timeout` (gRPC over HTTP/2: at most 8 digits and a unit,
/// `H`, `M`, `S`, `m`, `u` or `n`); `None` when absent or malformed, which
/// leaves the server's deadline alone.
fn requested_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let unit_at = value.len().checked_sub(1)?;
    let (digits, unit) = value.split_at(unit_at);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tonic::Code;

    /// A call that is never answered, as one blocked on a lock would be.
    #[derive(Clone)]
    struct NeverAnswers;

    impl Service<http::Request<()>> for NeverAnswers {
        type Response = http::Response<tonic::body::Body>;
        type Error = Infallible;
        type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            Box::pin(std::future::pending())
        }
    }

    /// The status of a call to a service that never answers, under a server
    /// deadline of `server_ms`, with `grpc_timeout` as the caller's header.
    async fn expire(server_ms: u64, grpc_timeout: Option<&str>) -> tonic::Status {
        let mut service = DeadlineLayer::new(Duration::from_millis(server_ms)).layer(NeverAnswers);
        let mut request = http::Request::new(());
        if let Some(value) = grpc_timeout {
            request
                .headers_mut()
                .insert("grpc-timeout", http::HeaderValue::from_str(value).unwrap());
        }
        let response = service.call(request).await.unwrap();
        tonic::Status::from_header_map(response.headers()).expect("a trailers-only status")
    }

    #[tokio::test]
    async fn the_shorter_of_the_servers_and_the_callers_deadline_ends_the_call() {
        for (server_ms, grpc_timeout, deadline_ms) in [
            (50, None, 50),
            // The caller's shorter deadline wins (the server's would outlast
            // the test).
            (3_600_000, Some("50m"), 50),
            // The caller cannot extend the server's deadline.
            (50, Some("5M"), 50),
            // Malformed: the server's deadline holds.
            (50, Some("123456789m"), 50),
            (50, Some("10x"), 50),
        ] {
            let status = expire(server_ms, grpc_timeout).await;
            assert_eq!(status.code(), Code::DeadlineExceeded, "{grpc_timeout:?}");
            assert!(
                status
                    .message()
                    .contains(&format!("within its deadline of {deadline_ms} ms")),
                "{grpc_timeout:?}: {}",
                status.message()
            );
        }
    }

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        let parse = |value: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert("grpc-timeout", http::HeaderValue::from_str(value).unwrap());
            requested_timeout(&headers)
        };
        assert_eq!(parse("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse("4m"), Some(Duration::from_millis(4)));
        assert_eq!(parse("5u"), Some(Duration::from_micros(5)));
        assert_eq!(parse("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for malformed in ["", "S", "-1S", "1.5S", "123456789S", "1s"] {
            assert_eq!(parse(malformed), None, "{malformed:?}");
        }
    }
}
