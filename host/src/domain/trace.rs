//! The trace of a fire: how its spans are named and tied together, on any node.
//!
//! A fire is one trace. Its id is derived from the fire id, so every attempt
//! of a fire (each claimed anew, perhaps by another node) lands in the same
//! trace without the store carrying anything. The root span `fire` is sent
//! once, by the node that ends the fire, and reaches back to the fire's
//! scheduled time (or to the claim of its first attempt, if that came first); each attempt's span `attempt` names that root as its
//! parent through an id derived from the fire id too. An attempt records
//! how long its steps took (`wait_us`, `mark_us`, `resolve_us`, `commit_us`:
//! attributes, as a span per step cost more than it told); below it, `run`
//! (the guest), and below `run` the guest's host calls that reach the store
//! (`kv-get`, `kv-set`, `kv-delete`, `lock`, `emit`) and its outbound HTTP
//! requests (`http`).
//!
//! All of it is `tracing` spans of [`FIRE_TARGET`] at TRACE level, so nothing
//! but a trace exporter listening to that target turns them on; without one,
//! each costs a check of a cached interest and the helpers here return at once.
//!
//! The run's W3C `traceparent` reaches the guest as the `TRACEPARENT`
//! environment variable (the OpenTelemetry convention for environment
//! carriers, read by the OpenTelemetry SDKs of every guest language), and
//! goes out in the `traceparent` header of each granted request, naming that
//! request's span.

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Context, KeyValue};
use std::cell::Cell;
use std::time::SystemTime;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The `tracing` target of every span of a fire.
pub const FIRE_TARGET: &str = "quartzite::fire";

/// The trace id and root span id of a fire, derived from its id.
pub fn fire_ids(fire_id: &str) -> (TraceId, SpanId) {
    let digest = ring::digest::digest(&ring::digest::SHA256, fire_id.as_bytes());
    let bytes = digest.as_ref();
    let mut trace = [0u8; 16];
    trace.copy_from_slice(&bytes[..16]);
    let mut span = [0u8; 8];
    span.copy_from_slice(&bytes[16..24]);
    // All-zero ids are invalid; a digest makes them vanishingly unlikely.
    if trace == [0; 16] {
        trace[15] = 1;
    }
    if span == [0; 8] {
        span[7] = 1;
    }
    (TraceId::from_bytes(trace), SpanId::from_bytes(span))
}

/// A traced attempt's hold on its fire's trace: the ids [`fire_ids`]
/// derived for it and when the attempt began, for [`end_fire`].
#[derive(Clone, Copy, Debug)]
pub struct FireTrace {
    trace: TraceId,
    root: SpanId,
    /// When the attempt's span began.
    pub began: SystemTime,
}

/// Makes `attempt` (a span of [`FIRE_TARGET`] not yet entered) a child of
/// its fire's root span; `None`, and nothing done, when it is not traced.
pub fn join_fire(attempt: &tracing::Span, fire_id: &str) -> Option<FireTrace> {
    if attempt.is_disabled() {
        return None;
    }
    let (trace, root) = fire_ids(fire_id);
    let parent = SpanContext::new(
        trace,
        root,
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    let _ = attempt.set_parent(Context::new().with_remote_span_context(parent));
    Some(FireTrace {
        trace,
        root,
        began: SystemTime::now(),
    })
}

/// What the root span of a fire says of it.
pub struct FireSpan<'a> {
    pub fire_id: &'a str,
    pub job_key: &'a str,
    pub trigger_key: &'a str,
    /// When the span starts: the fire's due time, or the start of its first
    /// attempt when that was claimed ahead of it.
    pub start: SystemTime,
    /// The attempt that ended it.
    pub attempts: u32,
    pub status: &'a str,
}

/// Sends the root span of a fire that has ended, through the global tracer
/// provider (set by the trace exporter), with the ids its last attempt
/// joined the trace with.
pub fn end_fire(joined: &FireTrace, fire: &FireSpan<'_>) {
    use opentelemetry::trace::{Span as _, Tracer as _};
    // The global provider is set once, by the trace exporter, before any
    // fire is traced: its tracer is taken once too.
    static TRACER: std::sync::OnceLock<opentelemetry::global::BoxedTracer> =
        std::sync::OnceLock::new();
    let FireTrace { trace, root, .. } = *joined;
    let tracer = TRACER.get_or_init(|| opentelemetry::global::tracer("quartzite"));
    let builder = tracer
        .span_builder("fire")
        .with_start_time(fire.start)
        .with_attributes([
            KeyValue::new("job_key", fire.job_key.to_string()),
            KeyValue::new("trigger_key", fire.trigger_key.to_string()),
            KeyValue::new("fire_id", fire.fire_id.to_string()),
            KeyValue::new("attempts", i64::from(fire.attempts)),
            KeyValue::new("status", fire.status.to_string()),
        ]);
    let mut span = NEXT_IDS.with(|next| {
        next.set(Some((trace, root)));
        let span = tracer.build_with_context(builder, &Context::new());
        next.set(None);
        span
    });
    span.end();
}

/// The W3C `traceparent` naming `span`, if it is traced.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| {
        format!(
            "00-{:032x}-{:016x}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

thread_local! {
    /// Ids the next span built on this thread takes ([`FireIdGenerator`]).
    static NEXT_IDS: Cell<Option<(TraceId, SpanId)>> = const { Cell::new(None) };
}

/// The trace exporter's id generator: random ids, except for the root span
/// of a fire, which takes the ids derived from the fire id ([`end_fire`]).
#[derive(Debug, Default)]
pub struct FireIdGenerator {
    random: opentelemetry_sdk::trace::RandomIdGenerator,
}

impl opentelemetry_sdk::trace::IdGenerator for FireIdGenerator {
    fn new_trace_id(&self) -> TraceId {
        match NEXT_IDS.with(Cell::get) {
            Some((trace, _)) => trace,
            None => self.random.new_trace_id(),
        }
    }

    fn new_span_id(&self) -> SpanId {
        match NEXT_IDS.with(Cell::get) {
            Some((_, span)) => span,
            None => self.random.new_span_id(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fire_has_one_trace_id_wherever_it_runs_and_fires_have_their_own() {
        let (t1, s1) = fire_ids("01J0000000000000000000000A");
        let (t2, s2) = fire_ids("01J0000000000000000000000A");
        let (t3, s3) = fire_ids("01J0000000000000000000000B");
        assert_eq!((t1, s1), (t2, s2));
        assert_ne!(t1, t3);
        assert_ne!(s1, s3);
        assert_ne!(t1, TraceId::INVALID);
        assert_ne!(s1, SpanId::INVALID);
    }

    #[test]
    fn an_untraced_span_has_no_traceparent() {
        assert_eq!(traceparent(&tracing::Span::none()), None);
        // And joining it to a fire does nothing (and does not panic).
        assert!(join_fire(&tracing::Span::none(), "f").is_none());
    }
}
