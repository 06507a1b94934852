//! Moments inside the in-process homeservers, taken from their own debug
//! events by a tracing layer: when the follower committed a batch from the hub
//! (`service::follower`, "applied events from the hub", field `last_seq`), and
//! when the hub's outbox had the follower's answer (`service::outbox`,
//! "delivered a batch", field `sent_through`). They split the cross-domain
//! latency of benchmark 5 without changing the homeserver. The benchmark's
//! messages are sent one at a time, so each batch holds exactly one event and
//! its sequence number names it. If the homeserver renames those events, the
//! split is simply missing from the output.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Instant;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::Context;

const FOLLOWER_TARGET: &str = "conclave_homeserver::service::follower";
const FOLLOWER_MESSAGE: &str = "applied events from the hub";
const OUTBOX_TARGET: &str = "conclave_homeserver::service::outbox";
const OUTBOX_MESSAGE: &str = "delivered a batch";

/// What was seen, by sequence number, since the last [`take`].
#[derive(Debug, Default)]
pub(crate) struct Milestones {
    /// The follower committed a batch ending at this seq.
    pub(crate) applied: HashMap<u64, Instant>,
    /// The hub's outbox had the answer for a batch ending at this seq.
    pub(crate) delivered: HashMap<u64, Instant>,
}

static SEEN: Mutex<Option<Milestones>> = Mutex::new(None);

/// Starts recording afresh (in-process homeservers of earlier runs may have
/// used the same sequence numbers).
pub(crate) fn clear() {
    *SEEN.lock().unwrap_or_else(|poison| poison.into_inner()) = Some(Milestones::default());
}

/// What was recorded since [`clear`].
pub(crate) fn take() -> Milestones {
    SEEN.lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .take()
        .unwrap_or_default()
}

/// The layer, with a filter of its own: the two debug events only, whatever the
/// log output shows.
pub(crate) fn layer<S>() -> impl Layer<S>
where
    S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    MilestoneLayer.with_filter(
        Targets::new()
            .with_target(FOLLOWER_TARGET, Level::DEBUG)
            .with_target(OUTBOX_TARGET, Level::DEBUG),
    )
}

struct MilestoneLayer;

impl<S: Subscriber> Layer<S> for MilestoneLayer {
    fn on_event(&self, event: &Event<'_>, _context: Context<'_, S>) {
        let at = Instant::now();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let target = event.metadata().target();
        let mut seen = SEEN.lock().unwrap_or_else(|poison| poison.into_inner());
        let Some(seen) = seen.as_mut() else {
            return;
        };
        match (target, fields.message.as_deref()) {
            (FOLLOWER_TARGET, Some(FOLLOWER_MESSAGE)) => {
                if let Some(seq) = fields.last_seq {
                    seen.applied.entry(seq).or_insert(at);
                }
            }
            (OUTBOX_TARGET, Some(OUTBOX_MESSAGE)) => {
                if let Some(seq) = fields.sent_through {
                    seen.delivered.entry(seq).or_insert(at);
                }
            }
            _ => {}
        }
    }
}

/// The fields the two events carry.
#[derive(Default)]
struct Fields {
    message: Option<String>,
    last_seq: Option<u64>,
    sent_through: Option<u64>,
}

impl Fields {
    fn number(&mut self, field: &Field, value: u64) {
        match field.name() {
            "last_seq" => self.last_seq = Some(value),
            "sent_through" => self.sent_through = Some(value),
            _ => {}
        }
    }
}

impl Visit for Fields {
    fn record_i64(&mut self, field: &Field, value: i64) {
        if let Ok(value) = u64::try_from(value) {
            self.number(field, value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.number(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.message = Some(format!("{value:?}"));
        }
    }
}
