//! Traces across the services: OpenTelemetry spans exported over OTLP/gRPC when a collector is
//! configured with the standard variables, W3C trace context (`traceparent`, `tracestate`)
//! read from incoming calls and written on outgoing ones, and the trace and span ids in every
//! JSON log line written inside a span.
//!
//! Tracing is on when `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
//! is set, unless `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`. The exporter and
//! the SDK read the other `OTEL_*` variables themselves (headers, timeout, compression,
//! `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`, `OTEL_RESOURCE_ATTRIBUTES`); `OTEL_SERVICE_NAME`
//! defaults to the binary's name. When it is off no span is created by our code (each site
//! checks [`enabled`], one relaxed atomic load) and no OpenTelemetry layer is installed.
//!
//! Span names and attributes follow the OpenTelemetry semantic conventions: RPC spans are
//! named `package.Service/Method` with `rpc.system`, `rpc.service`, `rpc.method` and
//! `rpc.grpc.status_code`; database spans carry `db.system.name` and `db.namespace` and are
//! named after the namespace (the conventions' name when no query summary is known).

use std::{
    collections::HashMap,
    fmt,
    sync::atomic::{AtomicBool, Ordering},
};

use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{SpanContext, TraceContextExt, TracerProvider as _},
};
use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    EnvFilter, Layer as _,
    filter::filter_fn,
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    layer::SubscriberExt as _,
    registry::LookupSpan,
    util::SubscriberInitExt as _,
};

use crate::LogFormat;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// The standard variables read here, by the OTLP exporter and by the SDK (for tools that
/// check a deployment's environment against what the binaries read).
pub const ENVIRONMENT: &[&str] = &[
    "OTEL_SDK_DISABLED",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_EXPORTER",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_EXPORTER_OTLP_COMPRESSION",
    "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    "OTEL_BSP_EXPORT_TIMEOUT",
];

/// Whether spans are exported (see the module documentation).
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Whether the environment asks for traces.
fn configured() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let is = |name: &str, value: &str| {
        std::env::var(name).is_ok_and(|v| v.trim().eq_ignore_ascii_case(value))
    };
    (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        && !is("OTEL_SDK_DISABLED", "true")
        && !is("OTEL_TRACES_EXPORTER", "none")
}

/// Keeps the exporter alive; dropping it flushes the spans not yet sent (within the
/// exporter's timeout) and stops it. A binary holds it until it exits.
#[must_use = "dropping the guard stops the export of spans"]
pub struct TracingGuard {
    provider: Option<SdkTracerProvider>,
}

impl fmt::Debug for TracingGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TracingGuard")
            .field("exporting", &self.provider.is_some())
            .finish()
    }
}

impl Drop for TracingGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("could not send the last spans to the collector: {e}");
        }
    }
}

/// Installs the global subscriber: logs on stderr in `format` (`RUST_LOG` filters; default
/// `info`) and, when configured, spans exported as `service` (see the module documentation).
/// Must run inside the Tokio runtime (the exporter is a tonic client). Safe to call twice (the
/// second call installs nothing), so tests can start several servers in one process.
pub fn init(format: LogFormat, service: &'static str) -> TracingGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let provider = if configured() {
        match build_provider(service) {
            Ok(provider) => Some(provider),
            Err(e) => {
                eprintln!("{service}: traces are not exported: {e}");
                None
            }
        }
    } else {
        None
    };
    // Only our own spans and events at `info` and above, whatever `RUST_LOG` says of the logs
    // (the exporter's tonic client must not trace itself).
    let otel = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(service))
            .with_location(false)
            .with_threads(false)
            .with_filter(filter_fn(|meta| {
                is_ours(meta.target()) && *meta.level() <= tracing::Level::INFO
            }))
    });
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .event_format(WithTraceIds(
                tracing_subscriber::fmt::format().json().flatten_event(true),
            ))
            .boxed(),
    };
    let installed = tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(otel)
        .try_init()
        .is_ok();
    if installed && provider.is_some() {
        ENABLED.store(true, Ordering::Relaxed);
    }
    TracingGuard {
        provider: provider.filter(|_| installed),
    }
}

fn build_provider(service: &'static str) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|e| e.to_string())?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service);
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// Targets of our crates (their spans and events are exported; a library's are not).
fn is_ours(target: &str) -> bool {
    [
        "invest_",
        "portfolio_svc",
        "deposit_svc",
        "loader",
        "loadgen",
    ]
    .iter()
    .any(|prefix| target.starts_with(prefix))
}

/// The JSON log formatter with `trace_id` and `span_id` added to every line written inside a
/// span that has them.
struct WithTraceIds<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        // The current span whatever the log filter shows of it (a `warn` line inside a call
        // carries the call's ids when `RUST_LOG=warn`), read before the inner formatter
        // borrows any span's extensions.
        let ids = enabled()
            .then(|| Span::current().context().span().span_context().clone())
            .filter(SpanContext::is_valid);
        let Some(ids) = ids else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::with_capacity(256);
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let end = line.trim_end().len();
        match line[..end].strip_suffix('}') {
            Some(body) => write!(
                writer,
                "{body},\"trace_id\":\"{}\",\"span_id\":\"{}\"}}{}",
                ids.trace_id(),
                ids.span_id(),
                &line[end..]
            ),
            None => writer.write_str(&line),
        }
    }
}

/// gRPC metadata (HTTP/2 headers) as a carrier of trace context.
struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct Metadata<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for Metadata<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// The span of a call this server answers (`service`, `method` as the metrics label them),
/// child of the caller's trace when the headers carry one; [`Span::none`] when tracing is off.
pub fn server_span(service: &str, method: &str, headers: &http::HeaderMap) -> Span {
    let span = rpc_span("server", service, method);
    if !span.is_none() {
        let parent = TraceContextPropagator::new().extract(&Headers(headers));
        if parent.span().span_context().is_valid() {
            let _ = span.set_parent(parent);
        }
    }
    span
}

/// The span of a call this process makes to `service`/`method`; record its outcome with
/// [`record_status`]. [`Span::none`] when tracing is off.
pub fn client_span(service: &str, method: &str) -> Span {
    rpc_span("client", service, method)
}

fn rpc_span(kind: &'static str, service: &str, method: &str) -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(
        target: "invest_rpc",
        "rpc",
        otel.name = format!("{service}/{method}"),
        otel.kind = kind,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    )
}

/// Records a call's gRPC code on its span. On the server side only the codes the conventions
/// count as the server's fault mark the span as an error; on the client side every code but OK.
pub fn record_status(span: &Span, code: i32, server: bool) {
    if span.is_none() {
        return;
    }
    span.record("rpc.grpc.status_code", code);
    // UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS.
    let servers_fault = matches!(code, 2 | 4 | 12 | 13 | 14 | 15);
    if (server && servers_fault) || (!server && code != 0) {
        span.record("otel.status_code", "ERROR");
    }
}

/// The current span's context as a `traceparent` value, to store with work done later on its
/// behalf (an outbox row); `None` when tracing is off or there is no span.
pub fn current_traceparent() -> Option<String> {
    if !enabled() {
        return None;
    }
    let cx = Span::current().context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// Links `span` to the span a stored `traceparent` names (a redelivery to the confirmation it
/// delivers); nothing when either is missing or malformed.
pub fn link(span: &Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    if span.is_none() {
        return;
    }
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let cx: Context = TraceContextPropagator::new().extract(&carrier);
    let linked = cx.span().span_context().clone();
    if linked.is_valid() {
        span.add_link(linked);
    }
}

/// A tonic interceptor that adds the current trace context to every call, around another
/// interceptor (the service token).
#[derive(Debug, Clone)]
pub struct Propagate<I>(pub I);

impl<I: tonic::service::Interceptor> tonic::service::Interceptor for Propagate<I> {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let mut request = self.0.call(request)?;
        if enabled() {
            let cx = Span::current().context();
            if cx.span().span_context().is_valid() {
                TraceContextPropagator::new()
                    .inject_context(&cx, &mut Metadata(request.metadata_mut()));
            }
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_targets_only() {
        assert!(is_ours("invest_runtime::db"));
        assert!(is_ours("invest_rpc"));
        assert!(is_ours("deposit_svc::delivery"));
        assert!(!is_ours("h2::codec"));
        assert!(!is_ours("tonic::transport"));
        assert!(!is_ours("opentelemetry_sdk"));
    }
}
