//! The trace of a fire: how its spans are named and tied together, on any node.
//!
//! A fire is one trace. Its id is derived from the fire id, so every attempt
//! of a fire (each claimed anew, perhaps by another node) lands in the same
//! trace without the store carrying anything. The root span `fire` is sent
//! once, by the node that ends the fire, and reaches back to the fire's
//! scheduled time (or to the claim of its first attempt, if that came
//! first); each attempt's span `attempt` names that root as its parent
//! through an id derived from the fire id too. An attempt records how long
//! its steps took (`wait_us`, `mark_us`, `resolve_us`, `commit_us`:
//! attributes, as a span per step cost more than it told); below it, `run`
//! (the guest), and below `run` the guest's host calls that reach the store
//! (`kv-get`, `kv-set`, `kv-delete`, `lock`, `emit`) and its outbound HTTP
//! requests (`http`).
//!
//! `fire`, `attempt` and `run` are kept as plain data while the attempt goes
//! on ([`AttemptTrace`]) and built on the trace SDK when its end is committed,
//! with ids chosen at the claim so that children can name them before they
//! are sent: as `tracing` spans they cost a traced fire twice as much (each
//! poll of the attempt's task entered and left one, each step was a record
//! through the subscriber). Host calls and requests are `tracing` spans of
//! [`FIRE_TARGET`] at TRACE level under the run's [`RunContext`]. Nothing but
//! a trace exporter listening to that target turns any of it on; without one,
//! a fire costs a check of a cached interest.
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

/// A traced attempt of a fire: the span `attempt`, kept as plain data while
/// the attempt runs and sent once, when its end is committed
/// ([`AttemptTrace::end`]). Built straight on the trace SDK rather than as a
/// `tracing` span: the attempt's task would otherwise enter and leave a
/// subscriber span on every poll and record each step through it.
#[derive(Debug)]
pub struct AttemptTrace {
    /// The fire's trace and its root span, derived from the fire id ([`fire_ids`]).
    trace: TraceId,
    root: SpanId,
    /// When the attempt began (its claim).
    pub began: SystemTime,
    /// The attempt's own span id, and its run's, chosen when it is claimed
    /// so that children can name them as parents before they are sent.
    span: SpanId,
    run: SpanId,
    /// When the guest's run began and ended, and how it went.
    pub run_began: Option<SystemTime>,
    pub run_ended: Option<SystemTime>,
    pub outcome: Option<&'static str>,
    pub job_key: String,
    pub trigger_key: String,
    pub fire_id: String,
    pub attempt: u32,
    /// Set once the module is resolved.
    pub module_digest: Option<String>,
    /// How long the attempt waited for a run slot, a worker and its due time.
    pub wait_us: Option<u64>,
    /// How long marking the fire started took (when not marked in the claim).
    pub mark_us: Option<u64>,
    /// How long resolving the module took.
    pub resolve_us: Option<u64>,
}

/// Whether fires are traced: a trace exporter listens to [`FIRE_TARGET`]
/// (a cached check).
pub fn fires_traced() -> bool {
    tracing::enabled!(target: FIRE_TARGET, tracing::Level::TRACE)
}

impl AttemptTrace {
    /// Starts tracing an attempt of `fire_id`, if fires are traced.
    pub fn start(fire_id: &str, job_key: &str, trigger_key: &str, attempt: u32) -> Option<Self> {
        if !fires_traced() {
            return None;
        }
        use opentelemetry_sdk::trace::IdGenerator as _;
        let ids = opentelemetry_sdk::trace::RandomIdGenerator::default();
        let (trace, root) = fire_ids(fire_id);
        Some(AttemptTrace {
            trace,
            root,
            began: SystemTime::now(),
            span: ids.new_span_id(),
            run: ids.new_span_id(),
            run_began: None,
            run_ended: None,
            outcome: None,
            job_key: job_key.to_string(),
            trigger_key: trigger_key.to_string(),
            fire_id: fire_id.to_string(),
            attempt,
            module_digest: None,
            wait_us: None,
            mark_us: None,
            resolve_us: None,
        })
    }

    /// Where the attempt's run goes in the trace: below its `run` span.
    pub fn run_context(&self) -> RunContext {
        RunContext {
            trace: self.trace,
            span: self.run,
        }
    }

    /// Sends the attempt's span, from its claim to now, under the fire's
    /// root span, with the node that ran it, its status and how long the
    /// commit of its end took; then its run's. When this attempt ended the
    /// fire, `fire_start` is when the fire's root span starts (its due time,
    /// or the claim of its first attempt if that came earlier), and the root
    /// span is sent first.
    pub fn end(self, node: &str, status: &str, commit_us: u64, fire_start: Option<SystemTime>) {
        use opentelemetry::trace::Tracer as _;
        let tracer = tracer();
        // The attempt and the fire it ended end together.
        let ended = SystemTime::now();
        if let Some(start) = fire_start {
            let builder = tracer
                .span_builder("fire")
                .with_start_time(start)
                .with_attributes([
                    KeyValue::new("job_key", self.job_key.clone()),
                    KeyValue::new("trigger_key", self.trigger_key.clone()),
                    KeyValue::new("fire_id", self.fire_id.clone()),
                    KeyValue::new("attempts", i64::from(self.attempt)),
                    KeyValue::new("status", status.to_string()),
                ]);
            send(
                tracer,
                builder,
                (self.trace, self.root),
                &Context::new(),
                ended,
            );
        }
        let mut attributes = Vec::with_capacity(11);
        attributes.extend([
            KeyValue::new("job_key", self.job_key),
            KeyValue::new("trigger_key", self.trigger_key),
            KeyValue::new("fire_id", self.fire_id),
            KeyValue::new("attempt", i64::from(self.attempt)),
            KeyValue::new("node", node.to_string()),
            KeyValue::new("status", status.to_string()),
            KeyValue::new("commit_us", clamp(commit_us)),
        ]);
        if let Some(digest) = self.module_digest {
            attributes.push(KeyValue::new("module_digest", digest));
        }
        for (key, us) in [
            ("wait_us", self.wait_us),
            ("mark_us", self.mark_us),
            ("resolve_us", self.resolve_us),
        ] {
            if let Some(us) = us {
                attributes.push(KeyValue::new(key, clamp(us)));
            }
        }
        let builder = tracer
            .span_builder("attempt")
            .with_start_time(self.began)
            .with_attributes(attributes);
        let parent = Context::new().with_remote_span_context(remote(self.trace, self.root));
        send(tracer, builder, (self.trace, self.span), &parent, ended);
        if let (Some(began), Some(run_ended)) = (self.run_began, self.run_ended) {
            let builder = tracer
                .span_builder("run")
                .with_start_time(began)
                .with_attributes([KeyValue::new("outcome", self.outcome.unwrap_or(""))]);
            let parent = Context::new().with_remote_span_context(remote(self.trace, self.span));
            send(tracer, builder, (self.trace, self.run), &parent, run_ended);
        }
    }
}

/// A span context of another span of the trace, to make spans its children.
fn remote(trace: TraceId, span: SpanId) -> SpanContext {
    SpanContext::new(
        trace,
        span,
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    )
}

/// Builds a span with the ids `ids` under `parent` and sends it, ended at `end`.
fn send(
    tracer: &opentelemetry::global::BoxedTracer,
    builder: opentelemetry::trace::SpanBuilder,
    ids: (TraceId, SpanId),
    parent: &Context,
    end: SystemTime,
) {
    use opentelemetry::trace::{Span as _, Tracer as _};
    let mut span = NEXT_IDS.with(|next| {
        next.set(Some(ids));
        let span = tracer.build_with_context(builder, parent);
        next.set(None);
        span
    });
    span.end_with_timestamp(end);
}

/// Where a run is in its fire's trace: what its host calls' and requests'
/// spans name as their parent, and the `traceparent` the guest sees.
#[derive(Clone, Copy, Debug)]
pub struct RunContext {
    trace: TraceId,
    span: SpanId,
}

impl RunContext {
    /// Makes `child` (a span of [`FIRE_TARGET`] not yet entered) a child of the run.
    pub fn adopt(&self, child: &tracing::Span) {
        if child.is_disabled() {
            return;
        }
        let parent = Context::new().with_remote_span_context(remote(self.trace, self.span));
        let _ = child.set_parent(parent);
    }

    /// The run's W3C `traceparent`.
    pub fn traceparent(&self) -> String {
        format!("00-{:032x}-{:016x}-01", self.trace, self.span)
    }
}

/// An attribute value of microseconds.
fn clamp(us: u64) -> i64 {
    i64::try_from(us).unwrap_or(i64::MAX)
}

/// The tracer of the global provider (set by the trace exporter before any
/// fire is traced), taken once.
fn tracer() -> &'static opentelemetry::global::BoxedTracer {
    static TRACER: std::sync::OnceLock<opentelemetry::global::BoxedTracer> =
        std::sync::OnceLock::new();
    TRACER.get_or_init(|| opentelemetry::global::tracer("quartzite"))
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

/// The trace exporter's id generator: random ids, except for the spans a
/// fire's attempt sends ([`AttemptTrace::end`]), whose ids were chosen
/// before: the root's derived from the fire id, the attempt's and the run's
/// at the claim.
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
        // Without an exporter no attempt is traced.
        assert!(AttemptTrace::start("f", "g/j", "g/j:t", 1).is_none());
    }
}
