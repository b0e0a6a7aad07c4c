//! Trace context across nodes: W3C Trace Context (`traceparent`) carried by HTTP requests, bus
//! envelopes and task records, so the work one request starts is one trace on every node it
//! reaches.
//!
//! The spans are `tracing` spans; the trace and span ids come from OpenTelemetry through
//! `tracing-opentelemetry`'s layer, which the process's subscriber installs (the `stellar` binary
//! always does; an embedding binary decides). Without that layer [`TraceParent::current`] is
//! `None` and nothing is propagated: the code paths are the same, only without ids.
//!
//! The work's root spans (an HTTP request, a task run, a bus message handled) carry a `trace_id`
//! field ([`follow`] records it), so every log line written inside them names the trace.

use std::fmt;

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The HTTP header (and task record field) holding a [`TraceParent`].
pub const TRACEPARENT: &str = "traceparent";

/// One position in a trace: the W3C `traceparent` of the span that caused some work.
///
/// Its text form is `00-{trace id: 32 hex}-{parent span id: 16 hex}-{flags: 2 hex}`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// The trace's id (never all zeros).
    pub trace_id: [u8; 16],
    /// The id of the span that caused the work (never all zeros).
    pub span_id: [u8; 8],
    /// Trace flags; bit 0 says the caller sampled (recorded) the trace.
    pub flags: u8,
}

impl TraceParent {
    /// A trace position from its parts; `None` if either id is all zeros (not a valid trace).
    pub fn new(trace_id: [u8; 16], span_id: [u8; 8], flags: u8) -> Option<Self> {
        let parent = Self {
            trace_id,
            span_id,
            flags,
        };
        parent.is_valid().then_some(parent)
    }

    /// Parses the text form; `None` for a malformed value or all-zero ids (the caller then
    /// starts a new trace, as the W3C spec asks). A version above `00` (but not the invalid
    /// `ff`) is read for the fields `00` defines, ignoring what follows them, as the spec asks.
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        let mut parts = value.split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let lower_hex = |part: &str, len: usize| {
            part.len() == len && part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        if !lower_hex(version, 2) || version == "ff" {
            return None;
        }
        if version == "00" && parts.next().is_some() {
            return None;
        }
        if !lower_hex(trace, 32) || !lower_hex(span, 16) || !lower_hex(flags, 2) {
            return None;
        }
        Self::new(
            TraceId::from_hex(trace).ok()?.to_bytes(),
            SpanId::from_hex(span).ok()?.to_bytes(),
            u8::from_str_radix(flags, 16).ok()?,
        )
    }

    /// The trace position of the current span, if a trace is being recorded.
    pub fn current() -> Option<Self> {
        Self::of(&Span::current())
    }

    /// The trace position of `span`, if it belongs to a trace.
    pub fn of(span: &Span) -> Option<Self> {
        if span.is_disabled() {
            return None;
        }
        let context = span.context();
        let span_context = context.span().span_context().clone();
        Self::from_span_context(&span_context)
    }

    /// The trace id as 32 lowercase hex digits, as log lines and collectors show it.
    pub fn trace_id_hex(&self) -> String {
        TraceId::from_bytes(self.trace_id).to_string()
    }

    fn is_valid(&self) -> bool {
        self.trace_id != [0; 16] && self.span_id != [0; 8]
    }

    fn from_span_context(context: &SpanContext) -> Option<Self> {
        context.is_valid().then(|| Self {
            trace_id: context.trace_id().to_bytes(),
            span_id: context.span_id().to_bytes(),
            flags: context.trace_flags().to_u8(),
        })
    }

    fn span_context(&self) -> SpanContext {
        SpanContext::new(
            TraceId::from_bytes(self.trace_id),
            SpanId::from_bytes(self.span_id),
            TraceFlags::new(self.flags),
            true,
            TraceState::NONE,
        )
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            TraceId::from_bytes(self.trace_id),
            SpanId::from_bytes(self.span_id),
            self.flags
        )
    }
}

impl fmt::Debug for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceParent({self})")
    }
}

/// Makes `span` continue the trace of `parent` (work caused on another node), or start a trace
/// when `parent` is `None`, and records the trace id in the span's `trace_id` field so the log
/// lines inside it name the trace. Declare the field as `trace_id = tracing::field::Empty`.
///
/// Call it right after creating the span, before entering it.
pub fn follow(span: &Span, parent: Option<TraceParent>) {
    if span.is_disabled() {
        return;
    }
    let context = match parent {
        Some(parent) => {
            opentelemetry::Context::new().with_remote_span_context(parent.span_context())
        }
        // A root even inside another span (a WebSocket action inside its connection's span).
        None => opentelemetry::Context::new(),
    };
    // Fails only without the OpenTelemetry layer: then there are no ids to follow.
    let _ = span.set_parent(context);
    if let Some(position) = TraceParent::of(span) {
        span.record("trace_id", tracing::field::display(position.trace_id_hex()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_text_form_round_trips() {
        let parent = TraceParent::parse(SAMPLE).expect("parses");
        assert_eq!(parent.to_string(), SAMPLE);
        assert_eq!(parent.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parent.flags, 1);
        assert_eq!(TraceParent::parse(&format!(" {SAMPLE}\n")), Some(parent));
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next";
        assert_eq!(
            TraceParent::parse(later),
            Some(parent),
            "a later version is read for the fields version 00 defines"
        );
    }

    #[test]
    fn malformed_or_unknown_values_start_a_new_trace() {
        for bad in [
            "",
            "00",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn without_the_opentelemetry_layer_nothing_is_traced() {
        let span = tracing::info_span!("work", trace_id = tracing::field::Empty);
        follow(&span, TraceParent::parse(SAMPLE));
        assert_eq!(TraceParent::of(&span), None);
        assert_eq!(TraceParent::current(), None);
    }
}
