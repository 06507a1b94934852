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
//! - The client's sampled flag is ignored: the decision is this server's, at
//!   `sampling_ratio`, on a keyed hash of the trace id with a key drawn at
//!   random when the process starts. A client chooses its trace id but cannot
//!   predict the hash, so no choice of ids made in advance (such as ones with
//!   low bits zero, which the SDK's `TraceIdRatioBased` always samples) gets
//!   more than `sampling_ratio` of its requests recorded. One trace id gets
//!   one decision within a process, so that a client's calls of one command
//!   stay one trace; the price is that someone who sees this server's
//!   decisions (the operator of a peer domain reading `traceparent`) could
//!   reuse a sampled id. Peers follow the decision that reaches them.
//! - The client's `tracestate` is dropped: vendor data this server did not
//!   write, which would travel on to every peer.

use opentelemetry::Context;
use opentelemetry::trace::{SpanContext, TraceContextExt as _, TraceFlags, TraceId, TraceState};
use std::hash::{BuildHasher as _, RandomState};
use std::sync::LazyLock;

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

/// The process's key for sampling client traces: SipHash keys drawn at random
/// once (`RandomState`), so that a client cannot predict which trace ids are
/// sampled, while one trace id always gets the same decision here.
static SAMPLING_KEY: LazyLock<RandomState> = LazyLock::new(RandomState::new);

/// Whether a client's trace is sampled at `ratio`: its keyed hash, uniform
/// over `u64` whatever ids a client picks, falls in the lowest `ratio` of
/// the range.
fn sampled(trace_id: TraceId, ratio: f64) -> bool {
    sampled_with(&SAMPLING_KEY, trace_id, ratio)
}

fn sampled_with(key: &RandomState, trace_id: TraceId, ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 || ratio.is_nan() {
        return false;
    }
    let hash = key.hash_one(trace_id.to_bytes());
    // `ratio` is in (0, 1), so the bound is below 2^64 (the cast saturates).
    let bound = (ratio * 2f64.powi(64)) as u64;
    hash < bound
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
        let trace_ids = (0..64u128).map(|n| format!("{:032x}", (n + 1) * 0x9e37_79b9_7f4a_7c15));
        let mut decisions = [0; 2];
        for trace_id in trace_ids {
            let with_flags = |flags: &str| {
                parent_of(&format!("00-{trace_id}-{SPAN_ID}-{flags}"), true, 0.5).is_sampled()
            };
            let decision = with_flags("00");
            assert_eq!(with_flags("01"), decision, "{trace_id}");
            assert_eq!(with_flags("00"), decision, "the same id, the same decision");
            decisions[usize::from(decision)] += 1;
        }
        assert!(decisions[0] > 0 && decisions[1] > 0, "{decisions:?}");
    }

    /// Trace ids whose low 64 bits are zero, which the SDK's
    /// `TraceIdRatioBased` samples at any ratio above 0.
    fn ids_with_zero_low_bits() -> impl Iterator<Item = TraceId> {
        (1..=10_000u128).map(|n| TraceId::from_bytes((n << 64).to_be_bytes()))
    }

    #[test]
    fn a_client_cannot_pick_trace_ids_that_are_always_sampled() {
        let sampled_count = ids_with_zero_low_bits()
            .filter(|trace_id| sampled(*trace_id, 0.01))
            .count();
        // About 100 of 10,000 expected; outside 20..300 has a probability far
        // below 1e-9 for a uniform hash.
        assert!(
            (20..=300).contains(&sampled_count),
            "{sampled_count} of 10000 sampled at 0.01"
        );
        // Another process (another key) decides on its own.
        let other_key = RandomState::new();
        let other_count = ids_with_zero_low_bits()
            .filter(|trace_id| sampled_with(&other_key, *trace_id, 0.01))
            .count();
        assert!((20..=300).contains(&other_count), "{other_count}");
    }

    #[test]
    fn ratio_zero_samples_nothing_and_one_everything() {
        let random = (1..=1000u128).map(|n| TraceId::from(n.wrapping_mul(0x2545_f491_4f6c_dd1d)));
        for trace_id in ids_with_zero_low_bits().take(1000).chain(random) {
            assert!(!sampled(trace_id, 0.0), "{trace_id}");
            assert!(sampled(trace_id, 1.0), "{trace_id}");
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
