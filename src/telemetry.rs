//! OTLP tracing. With `--otlp-endpoint` (or `OTEL_EXPORTER_OTLP_ENDPOINT`) the server exports
//! spans over OTLP/gRPC: each HTTP request (its parent taken from an incoming W3C
//! `traceparent`), each emit, each dispatch of a run to a worker or a push endpoint, each
//! commit of a worker's report, each push request (which carries `traceparent` onward). The
//! emit's trace context is stored with the event, so every dispatch and commit of the runs it
//! started joins the emit's trace, on any node and after restarts; workers get the dispatch's
//! context in the job (`context.trace_id`, `context.metadata.traceparent`) to parent their own
//! spans on.
//!
//! Off by default, and then free: the spans are `debug` level under `ironflow::trace`, enabled
//! only by the OTLP layer's own filter, so without it their callsites are disabled and nothing
//! is stored or looked up.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::registry::LookupSpan;

use crate::domain::trace::TraceParent;

/// The target every span of ours carries (so the OTLP layer can enable just these).
pub const TARGET: &str = "ironflow::trace";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Dispatches in flight on this node and the traceparent of their dispatch span, so a report's
/// commit span joins the run's trace. Bounded: cleared when it grows past [`MAX_DISPATCHES`]
/// (leases that expired unreported would otherwise stay).
static DISPATCHES: Mutex<Option<HashMap<String, String>>> = Mutex::new(None);
const MAX_DISPATCHES: usize = 100_000;

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Flushes and stops the exporter when dropped (at shutdown).
pub struct TracingGuard {
    provider: SdkTracerProvider,
}

impl Drop for TracingGuard {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("ironflow: flushing OTLP spans failed: {e}");
        }
    }
}

/// The tracing layer exporting to `endpoint` (`http://collector:4317`), filtered to our spans
/// and the request spans. Must be called inside the Tokio runtime.
pub fn otlp_layer<S>(
    endpoint: &str,
) -> anyhow::Result<(Box<dyn Layer<S> + Send + Sync>, TracingGuard)>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("ironflow")
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("ironflow");
    let filter = Targets::new()
        .with_target(TARGET, LevelFilter::DEBUG)
        .with_target("ironflow::api", LevelFilter::INFO);
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(filter)
        .boxed();
    ENABLED.store(true, Ordering::Relaxed);
    *DISPATCHES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(HashMap::new());
    Ok((layer, TracingGuard { provider }))
}

fn span_context(tp: &TraceParent) -> SpanContext {
    SpanContext::new(
        TraceId::from(tp.trace_id),
        SpanId::from(tp.span_id),
        if tp.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        },
        true,
        TraceState::default(),
    )
}

/// Makes a remote `traceparent` the span's parent (ignored when malformed or tracing is off).
pub fn set_parent(span: &Span, traceparent: Option<&str>) {
    if !enabled() {
        return;
    }
    if let Some(tp) = traceparent.and_then(TraceParent::parse) {
        let cx = opentelemetry::Context::new().with_remote_span_context(span_context(&tp));
        let _ = span.set_parent(cx);
    }
}

/// Makes the span the root of a trace of its own (not a child of whatever request it runs in).
fn set_root(span: &Span) {
    let _ = span.set_parent(opentelemetry::Context::new());
}

/// The span's own context as a `traceparent`, when tracing is on and the span is recorded.
pub fn traceparent_of(span: &Span) -> Option<String> {
    if !enabled() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if !sc.is_valid() {
        return None;
    }
    Some(
        TraceParent {
            trace_id: u128::from_be_bytes(sc.trace_id().to_bytes()),
            span_id: u64::from_be_bytes(sc.span_id().to_bytes()),
            sampled: sc.is_sampled(),
        }
        .to_string(),
    )
}

/// The traceparent of the span the caller is in.
pub fn current_traceparent() -> Option<String> {
    if !enabled() {
        return None;
    }
    traceparent_of(&Span::current())
}

/// Records one dispatch as a span in its run's trace and returns the span's context for the
/// worker (and for the commit of its reports).
pub fn dispatch(
    dispatch_id: &str,
    run_id: &str,
    function_id: &str,
    attempt: i32,
    parent: Option<&str>,
) -> Option<String> {
    if !enabled() {
        return None;
    }
    let span = tracing::debug_span!(target: TARGET, "ironflow.dispatch", run_id, function_id, attempt, dispatch_id);
    // A run with no stored context (an invoke, a cron tick) starts a trace of its own rather than
    // joining the worker's poll request.
    match parent.and_then(TraceParent::parse) {
        Some(_) => set_parent(&span, parent),
        None => set_root(&span),
    }
    let traceparent = traceparent_of(&span)?;
    let mut map = DISPATCHES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(map) = map.as_mut() {
        if map.len() >= MAX_DISPATCHES {
            map.clear();
        }
        map.insert(dispatch_id.to_owned(), traceparent.clone());
    }
    Some(traceparent)
}

/// The span a report's commit runs in: a child of its dispatch's span when this node
/// dispatched it. Disabled (free) when tracing is off.
pub fn commit_span(dispatch_id: &str, ends_dispatch: bool) -> Span {
    if !enabled() {
        return Span::none();
    }
    let parent = {
        let mut map = DISPATCHES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.as_mut().and_then(|m| {
            if ends_dispatch {
                m.remove(dispatch_id)
            } else {
                m.get(dispatch_id).cloned()
            }
        })
    };
    let span = tracing::debug_span!(target: TARGET, "ironflow.commit", dispatch_id);
    set_parent(&span, parent.as_deref());
    span
}
