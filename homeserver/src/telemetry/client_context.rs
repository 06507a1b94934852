//! Which trace a client API request joins. Clients are not trusted the way
//! federation peers are (peers authenticate with certificates and run the same
//! software), so a client's `traceparent` is taken for its ids only:
//!
//! - The trace id and parent span id are kept, so that one trace follows a
//!   message from the sending device to every recipient. A client can thereby
//!   put its requests' spans into a trace of its choice (another's trace id,
//!   if it learnt one); that confuses a trace view but reads and changes
//!   nothing. Operators who mind turn `[telemetry] trust_client_trace_context`
//!   off, and every client request starts a trace of its own.
//! - The client's sampled flag is ignored: the decision is this server's, by
//!   the trace id at `sampling_ratio` (as for the roots it starts, so servers
//!   with one ratio decide alike), and a client cannot make the server record
//!   every request it sends.
//! - The client's `tracestate` is dropped: vendor data this server did not
//!   write, which would travel on to every peer.

use opentelemetry::trace::{
    SpanContext, SpanKind, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{Sampler, SamplingDecision, ShouldSample as _};

/// The parent of the span of a client request with `headers`: the client's
/// span (remote) with this server's sampling decision when `trust` and the
/// client sent a valid `traceparent`, or an empty context (a new root).
pub fn client_request_parent(headers: &http::HeaderMap, trust: bool, ratio: f64) -> Context {
    if !trust {
        return Context::new();
    }
    let sent = conclave_federation::trace_context::extract_headers(headers);
    let sent = sent.span().span_context().clone();
    if !sent.is_valid() {
        return Context::new();
    }
    let flags = if sampled(sent.trace_id(), ratio) {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let parent = SpanContext::new(
        sent.trace_id(),
        sent.span_id(),
        flags,
        true,
        TraceState::default(),
    );
    Context::new().with_remote_span_context(parent)
}

/// Whether a trace is sampled at `ratio`, by its id, as the SDK's
/// `TraceIdRatioBased` sampler decides for roots.
fn sampled(trace_id: TraceId, ratio: f64) -> bool {
    let no_attributes: &[KeyValue] = &[];
    let result = Sampler::TraceIdRatioBased(ratio).should_sample(
        None,
        trace_id,
        "client_request",
        &SpanKind::Server,
        no_attributes,
        &[],
    );
    result.decision == SamplingDecision::RecordAndSample
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(traceparent: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", traceparent.parse().expect("ASCII"));
        headers.insert("tracestate", "vendor=secret".parse().expect("ASCII"));
        headers
    }

    fn parent_of(traceparent: &str, trust: bool, ratio: f64) -> SpanContext {
        client_request_parent(&headers(traceparent), trust, ratio)
            .span()
            .span_context()
            .clone()
    }

    const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN_ID: &str = "00f067aa0ba902b7";

    #[test]
    fn the_client_s_ids_are_kept_and_its_tracestate_dropped() {
        let parent = parent_of(&format!("00-{TRACE_ID}-{SPAN_ID}-01"), true, 1.0);
        assert!(parent.is_valid());
        assert!(parent.is_remote());
        assert_eq!(parent.trace_id().to_string(), TRACE_ID);
        assert_eq!(parent.span_id().to_string(), SPAN_ID);
        assert!(parent.is_sampled());
        assert_eq!(parent.trace_state().header(), "");
    }

    #[test]
    fn the_client_s_sampled_flag_is_ignored() {
        let sampled = format!("00-{TRACE_ID}-{SPAN_ID}-01");
        let not_sampled = format!("00-{TRACE_ID}-{SPAN_ID}-00");
        assert!(!parent_of(&sampled, true, 0.0).is_sampled());
        assert!(parent_of(&not_sampled, true, 1.0).is_sampled());
        // At a ratio in between, the decision follows the trace id alone.
        let low_trace = "00000000000000000000000000000001";
        let high_trace = "ffffffffffffffffffffffffffffffff";
        for flags in ["00", "01"] {
            let low = parent_of(&format!("00-{low_trace}-{SPAN_ID}-{flags}"), true, 0.5);
            let high = parent_of(&format!("00-{high_trace}-{SPAN_ID}-{flags}"), true, 0.5);
            assert!(low.is_sampled(), "flags {flags}");
            assert!(!high.is_sampled(), "flags {flags}");
        }
    }

    #[test]
    fn untrusted_or_invalid_context_starts_a_new_trace() {
        let valid = format!("00-{TRACE_ID}-{SPAN_ID}-01");
        assert!(!parent_of(&valid, false, 1.0).is_valid());
        assert!(!parent_of("garbage", true, 1.0).is_valid());
        assert!(!client_request_parent(&http::HeaderMap::new(), true, 1.0).has_active_span());
    }
}
