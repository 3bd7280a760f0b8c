//! W3C Trace Context (`traceparent`) for carrying a trace across services through Kafka headers.
//!
//! The format is four dash-separated hex fields (`00-<32 trace id>-<16 parent id>-<2 flags>`).
//!
//! choreo's own spans (`choreo.process`, `choreo.publish`, the coordinator's `choreo.saga`, the
//! ingest's `choreo.ingest`) join the caller's trace through [`join`] and [`publishing`]: when the
//! process installs an OpenTelemetry layer (the `choreo` binary does when OTLP export is
//! configured), each span becomes a child of the record's `traceparent`, and the records it
//! writes carry the span's own id, so a trace viewer shows one connected tree across every
//! service and language. Without a layer (no SDK in the process) the same calls cost a lookup
//! and fall back to a fresh child id in the same trace, so the trace id still runs through.

use std::fmt;

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// A parsed `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// 16-byte trace id.
    pub trace_id: u128,
    /// 8-byte id of the span that sent the record.
    pub span_id: u64,
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceParent {
    /// A new trace, sampled.
    pub fn new_root() -> Self {
        Self {
            trace_id: nonzero_u128(),
            span_id: nonzero_u64(),
            flags: 1,
        }
    }

    /// A child span in the same trace.
    pub fn child(&self) -> Self {
        Self {
            trace_id: self.trace_id,
            span_id: nonzero_u64(),
            flags: self.flags,
        }
    }

    /// Parses a header value; `None` when it is not a valid version-00 traceparent.
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.trim().split('-');
        let (v, t, p, f) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || v != "00" || t.len() != 32 || p.len() != 16 || f.len() != 2 {
            return None;
        }
        // W3C: lowercase hexadecimal digits only (`from_str_radix` would take a sign and
        // uppercase digits, and the value would print back as another).
        let lower_hex = |x: &str| x.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if ![t, p, f].into_iter().all(lower_hex) {
            return None;
        }
        let trace_id = u128::from_str_radix(t, 16).ok()?;
        let span_id = u64::from_str_radix(p, 16).ok()?;
        let flags = u8::from_str_radix(f, 16).ok()?;
        (trace_id != 0 && span_id != 0).then_some(Self {
            trace_id,
            span_id,
            flags,
        })
    }

    /// The trace id as 32 hex digits.
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `00-{trace_id:032x}-{span_id:016x}-{flags:02x}`, written digit by digit: every
        // published event carries one, and `write!` of three hex numbers took a tenth of the
        // publishing path's time.
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [b'-'; 55];
        out[0] = b'0';
        out[1] = b'0';
        for (at, value, digits) in [
            (3, self.trace_id, 32),
            (36, u128::from(self.span_id), 16),
            (53, u128::from(self.flags), 2),
        ] {
            for i in 0..digits {
                #[allow(clippy::cast_possible_truncation)]
                let nibble = (value >> (4 * (digits - 1 - i))) as usize & 0xf;
                out[at + i] = HEX[nibble];
            }
        }
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

impl TraceParent {
    /// The OpenTelemetry context of a remote parent with this trace and span id.
    fn remote_context(&self) -> opentelemetry::Context {
        let span = SpanContext::new(
            TraceId::from(self.trace_id),
            SpanId::from(self.span_id),
            TraceFlags::new(self.flags),
            true,
            TraceState::default(),
        );
        opentelemetry::Context::new().with_remote_span_context(span)
    }

    /// `span`'s own trace context, when an OpenTelemetry layer records it.
    fn of_span(span: &tracing::Span) -> Option<Self> {
        let cx = span.context();
        let own = cx.span().span_context().clone();
        own.is_valid().then(|| Self {
            trace_id: u128::from_be_bytes(own.trace_id().to_bytes()),
            span_id: u64::from_be_bytes(own.span_id().to_bytes()),
            flags: own.trace_flags().to_u8(),
        })
    }
}

/// Makes `span` (not yet entered) a child of `parent` — the `traceparent` of the record or
/// request being handled — and returns the trace context that effects of this span carry: the
/// span's own id when an OpenTelemetry layer records it, otherwise a new child id of `parent`
/// (a new trace without one).
pub fn join(span: &tracing::Span, parent: Option<TraceParent>) -> TraceParent {
    if let Some(p) = parent
        && !span.is_disabled()
    {
        // Fails only without an OpenTelemetry layer: then there is no span of ours to join,
        // and the fallback below applies. (A disabled span has none either; building the
        // remote context for it is an allocation per record for nothing.)
        let _ = span.set_parent(p.remote_context());
    }
    TraceParent::of_span(span)
        .unwrap_or_else(|| parent.map_or_else(TraceParent::new_root, |t| t.child()))
}

/// `span`'s own trace context when an OpenTelemetry layer records it (the `traceparent` that
/// records written on its behalf carry), else `None`.
pub fn recorded(span: &tracing::Span) -> Option<TraceParent> {
    TraceParent::of_span(span)
}

/// The `traceparent` a record written inside `span` carries. With an OpenTelemetry layer:
/// `span`'s own id, `span` being a child of the span it runs in (a handler's `choreo.process`,
/// the ingest's `choreo.ingest`, a caller's own span) or, outside any recorded span, of
/// `carried` (the envelope's trace). Without one: `carried` unchanged.
pub fn publishing(span: &tracing::Span, carried: Option<TraceParent>) -> Option<TraceParent> {
    let inside_a_recorded_span = TraceParent::of_span(&tracing::Span::current()).is_some();
    if !inside_a_recorded_span
        && !span.is_disabled()
        && let Some(c) = carried
    {
        let _ = span.set_parent(c.remote_context());
    }
    TraceParent::of_span(span).or(carried)
}

fn nonzero_u64() -> u64 {
    loop {
        let v: u64 = rand::random();
        if v != 0 {
            return v;
        }
    }
}

fn nonzero_u128() -> u128 {
    loop {
        let v: u128 = rand::random();
        if v != 0 {
            return v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_written_as_the_w3c_format_writes_it() {
        for (trace_id, span_id, flags) in [
            (0, 0, 0),
            (u128::MAX, u64::MAX, 0xff),
            (
                0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c,
                0xb7ad_6b71_6920_3331,
                1,
            ),
            (1, 0x10, 0x0f),
        ] {
            let tp = TraceParent {
                trace_id,
                span_id,
                flags,
            };
            assert_eq!(
                tp.to_string(),
                format!("00-{trace_id:032x}-{span_id:016x}-{flags:02x}")
            );
        }
    }

    #[test]
    fn round_trips_and_rejects_garbage() {
        let tp = TraceParent::new_root();
        let s = tp.to_string();
        assert_eq!(s.len(), 55);
        assert_eq!(TraceParent::parse(&s), Some(tp));
        let child = tp.child();
        assert_eq!(child.trace_id, tp.trace_id);
        assert_ne!(child.span_id, tp.span_id);
        let w3c = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let p = TraceParent::parse(w3c).expect("spec example");
        assert_eq!(p.to_string(), w3c);
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-xyz-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }

    /// Found by fuzzing (`integration-tests/fuzz`, target `traceparent`): the W3C grammar
    /// allows only lowercase hexadecimal digits, yet a sign or uppercase digits were read (and
    /// the value printed back differed from the one read).
    #[test]
    fn only_lowercase_hex_digits_are_read() {
        for bad in [
            "00-+af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-+7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-+1",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-B7AD6B7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0A",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }

    /// A process with an OpenTelemetry layer, exporting into memory.
    fn recording() -> (
        opentelemetry_sdk::trace::InMemorySpanExporter,
        tracing::Dispatch,
    ) {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::layer::SubscriberExt;
        let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        (exporter, tracing::Dispatch::new(subscriber))
    }

    const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_joined_span_is_a_child_of_the_records_traceparent_and_its_effects_name_it() {
        let (exporter, dispatch) = recording();
        let caller = TraceParent::parse(CALLER).expect("caller");
        let (handling, written) = tracing::dispatcher::with_default(&dispatch, || {
            let span = tracing::info_span!("choreo.process");
            let handling = join(&span, Some(caller));
            let written = span.in_scope(|| {
                let publish = tracing::info_span!("choreo.publish");
                // The envelope's own (fallback) id is ignored: the publish span is a child of
                // the handling span.
                publishing(&publish, Some(handling.child())).expect("a traceparent")
            });
            (handling, written)
        });
        assert_eq!(
            handling.trace_id, caller.trace_id,
            "the caller's trace goes on"
        );
        assert_eq!(written.trace_id, caller.trace_id);
        let spans = exporter.get_finished_spans().expect("spans");
        let by_name = |n: &str| {
            spans
                .iter()
                .find(|s| s.name == n)
                .unwrap_or_else(|| panic!("no {n} span in {spans:?}"))
        };
        let process = by_name("choreo.process");
        let publish = by_name("choreo.publish");
        assert_eq!(
            process.parent_span_id,
            SpanId::from(caller.span_id),
            "choreo.process is the caller's child"
        );
        assert_eq!(
            process.span_context.span_id(),
            SpanId::from(handling.span_id)
        );
        assert_eq!(publish.parent_span_id, process.span_context.span_id());
        assert_eq!(
            publish.span_context.span_id(),
            SpanId::from(written.span_id),
            "the record written names the publish span"
        );
        assert_eq!(
            publish.span_context.trace_id(),
            TraceId::from(caller.trace_id)
        );
    }

    #[test]
    fn publishing_outside_any_span_continues_the_envelopes_trace() {
        let (exporter, dispatch) = recording();
        let carried = TraceParent::parse(CALLER).expect("carried");
        let written = tracing::dispatcher::with_default(&dispatch, || {
            let publish = tracing::info_span!("choreo.publish");
            publishing(&publish, Some(carried)).expect("a traceparent")
        });
        let spans = exporter.get_finished_spans().expect("spans");
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].parent_span_id, SpanId::from(carried.span_id));
        assert_eq!(written.trace_id, carried.trace_id);
        assert_eq!(
            spans[0].span_context.span_id(),
            SpanId::from(written.span_id)
        );
    }

    #[test]
    fn without_an_opentelemetry_layer_the_trace_id_still_runs_through() {
        let caller = TraceParent::parse(CALLER).expect("caller");
        let span = tracing::info_span!("choreo.process");
        let handling = join(&span, Some(caller));
        assert_eq!(handling.trace_id, caller.trace_id);
        assert_ne!(handling.span_id, caller.span_id);
        let publish = tracing::info_span!("choreo.publish");
        assert_eq!(publishing(&publish, Some(handling)), Some(handling));
        assert_eq!(join(&span, None).flags, 1, "a new, sampled trace");
    }
}
