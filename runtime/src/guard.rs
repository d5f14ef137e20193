//! The request guard in front of every call: who may hold how much of the server, for how
//! long, and the metrics of what happened.
//!
//! - **Budgets.** Application calls share `max_in_flight` permits; beyond, UNAVAILABLE
//!   (`OVERLOADED`) at once rather than a queue. Each caller (the `sub` of a verified token, or
//!   the connection when there is no valid token) is sure of `max_in_flight_per_caller` of
//!   them; beyond its share it may borrow idle permits only while more than half of the
//!   budget is free, and is otherwise answered RESOURCE_EXHAUSTED
//!   (`CALLER_CONCURRENCY_LIMIT`). So a burst from one caller uses an idle server, yet one
//!   caller's stalled calls never hold more than half of it: they are that caller's problem. Health checks and the streams of health `Watch` and
//!   reflection have budgets of their own ([`INFRA_MAX_IN_FLIGHT`], per connection
//!   [`INFRA_PER_CONNECTION`]), so that probes answer while the application budget is full and
//!   tokenless streams cannot grow memory without bound.
//! - **Deadlines.** A unary request's whole body must arrive within `request_body_timeout` of
//!   its headers (DEADLINE_EXCEEDED, `REQUEST_BODY_TIMEOUT`); a streaming request may wait at
//!   most `stream_idle_timeout` for each next message. A unary call must be answered within
//!   the request timeout, or the client's `grpc-timeout` if shorter (DEADLINE_EXCEEDED,
//!   `REQUEST_TIMEOUT`). Health `Watch` and reflection streams end after
//!   [`INFRA_STREAM_MAX_AGE`].
//! - **Sizes.** A unary request message larger than `max_request_bytes` is refused as it
//!   arrives (RESOURCE_EXHAUSTED, `REQUEST_TOO_LARGE`); streaming methods have their own
//!   message limit in the service.
//!
//! A permit is held until the response body is finished (or the stream is reset), so a client
//! that does not read its answers holds its own share, not everyone's.

use std::{
    collections::{HashMap, HashSet},
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::{Bytes, Incoming};
use tokio::{sync::Semaphore, time::Sleep};
use tonic::{Code, Status, body::Body};
use tower::Service;
use tracing::Instrument as _;

use crate::{
    auth::Authenticator,
    listener::{Connection, ConnectionService, StreamGuard},
    telemetry::trace,
};
use invest_proto::{auth::Caller, status::error_status};

/// Health checks in flight at once, and health `Watch` plus reflection streams at once (two
/// budgets of this size).
pub const INFRA_MAX_IN_FLIGHT: usize = 256;
/// Of each infrastructure budget, what one connection may hold.
pub const INFRA_PER_CONNECTION: usize = 16;
/// Health `Watch` and reflection streams end after this long (clients reconnect).
pub const INFRA_STREAM_MAX_AGE: Duration = Duration::from_secs(300);

/// Settings of the request guard.
#[derive(Debug, Clone)]
pub struct GuardConfig {
    /// Label of the server in metrics, e.g. `portfolio-svc`.
    pub server: &'static str,
    /// Application calls served at once.
    pub max_in_flight: usize,
    /// Of those, what one caller may hold.
    pub max_in_flight_per_caller: usize,
    /// Deadline of unary calls.
    pub request_timeout: Duration,
    /// Time from a unary request's headers to the end of its body.
    pub request_body_timeout: Duration,
    /// Longest wait for the next message of a streaming request.
    pub stream_idle_timeout: Duration,
    /// Largest unary request body, in bytes.
    pub max_request_bytes: usize,
    /// Full method paths (`/pkg.Service/Method`) of client-streaming methods: no call
    /// deadline, a per-message wait instead of a whole-body deadline, no size limit here.
    pub streaming_methods: HashSet<&'static str>,
    /// Verifies tokens so that calls are counted per caller (`None`: per connection).
    pub authenticator: Option<Authenticator>,
}

/// Who a call is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum CallerKey {
    /// A verified token's subject (its BLAKE3 hash, truncated).
    Subject(u128),
    /// A connection without a valid token.
    Connection(u64),
}

/// A number of permits, with a cap per key.
#[derive(Debug)]
struct Budget {
    permits: Arc<Semaphore>,
    total: usize,
    per_key: usize,
    held: Mutex<HashMap<CallerKey, usize>>,
}

/// Why a budget said no.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Every permit is taken.
    Full,
    /// This caller holds its whole share.
    CallerFull,
}

impl Budget {
    fn new(total: usize, per_key: usize) -> Arc<Self> {
        let total = total.max(1);
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(total)),
            total,
            per_key: per_key.clamp(1, total),
            held: Mutex::new(HashMap::new()),
        })
    }

    fn try_acquire(self: &Arc<Self>, key: CallerKey) -> Result<Permit, Refusal> {
        {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            let count = held.entry(key).or_insert(0);
            // Beyond its share a caller may borrow idle capacity, but never the half of the
            // budget kept for everyone else.
            if *count >= self.per_key && self.permits.available_permits() <= self.total / 2 {
                return Err(Refusal::CallerFull);
            }
            *count += 1;
        }
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => Ok(Permit {
                budget: self.clone(),
                key,
                _permit: permit,
            }),
            Err(_) => {
                self.release(key);
                Err(Refusal::Full)
            }
        }
    }

    fn release(&self, key: CallerKey) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = held.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                held.remove(&key);
            }
        }
    }
}

/// One permit of a budget, counted against its key until dropped.
#[derive(Debug)]
struct Permit {
    budget: Arc<Budget>,
    key: CallerKey,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.budget.release(self.key);
    }
}

/// What kind of call a path is, for budgets and deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A unary application call.
    Unary,
    /// A client-streaming application call (ingest).
    Streaming,
    /// `grpc.health.v1.Health/Check`.
    HealthCheck,
    /// Health `Watch` and reflection: long-lived streams that need no token.
    InfraStream,
}

fn kind_of(path: &str, streaming: &HashSet<&'static str>) -> Kind {
    if path == "/grpc.health.v1.Health/Check" {
        Kind::HealthCheck
    } else if path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.") {
        Kind::InfraStream
    } else if streaming.contains(path) {
        Kind::Streaming
    } else {
        Kind::Unary
    }
}

/// The guard of a server: shared state, from which each connection gets its [`Guard`].
#[derive(Debug, Clone)]
pub struct GuardLayer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: GuardConfig,
    app: Arc<Budget>,
    health: Arc<Budget>,
    streams: Arc<Budget>,
    metrics: MetricsByPath,
}

impl GuardLayer {
    /// A guard with its own budgets.
    pub fn new(config: GuardConfig) -> Self {
        let per_caller = match config.max_in_flight_per_caller {
            0 => (config.max_in_flight / 8).max(1),
            n => n,
        };
        Self {
            shared: Arc::new(Shared {
                app: Budget::new(config.max_in_flight, per_caller),
                health: Budget::new(INFRA_MAX_IN_FLIGHT, INFRA_PER_CONNECTION),
                streams: Budget::new(INFRA_MAX_IN_FLIGHT, INFRA_PER_CONNECTION),
                config,
                metrics: MetricsByPath::default(),
            }),
        }
    }

    /// The server's label in metrics.
    pub fn server(&self) -> &'static str {
        self.shared.config.server
    }

    /// The guard of one connection, in front of `inner`.
    pub fn guard<S>(&self, inner: S, connection: Arc<Connection>) -> Guard<S> {
        Guard {
            inner,
            shared: self.shared.clone(),
            connection,
        }
    }
}

/// [`GuardLayer`] with the routes it guards: makes the service of each connection.
#[derive(Debug, Clone)]
pub struct GuardedRoutes<S> {
    /// The guard.
    pub guard: GuardLayer,
    /// The routes.
    pub routes: S,
}

impl<S> ConnectionService for GuardedRoutes<S>
where
    S: Service<http::Request<RequestBody>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    type Service = Guard<S>;

    fn for_connection(&self, connection: Arc<Connection>) -> Self::Service {
        self.guard.guard(self.routes.clone(), connection)
    }
}

/// The guard of one connection.
#[derive(Debug, Clone)]
pub struct Guard<S> {
    inner: S,
    shared: Arc<Shared>,
    connection: Arc<Connection>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S> Service<http::Request<Incoming>> for Guard<S>
where
    S: Service<http::Request<RequestBody>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Incoming>) -> Self::Future {
        // The clone is not ready; keep the ready one for this call (tower's usual dance).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        let stream = self.connection.stream_opened();
        let started = Instant::now();
        let config = &shared.config;
        let kind = kind_of(request.uri().path(), &config.streaming_methods);
        let (mut parts, body) = request.into_parts();

        // Whom to count the call against: the token's subject when it verifies, else the
        // connection. (Calls with a bad token are refused by the service at once.)
        let connection_key = CallerKey::Connection(self.connection.id);
        let key = match (kind, &config.authenticator) {
            (Kind::Unary | Kind::Streaming, Some(authenticator)) => {
                match authenticator.authenticate(&parts.headers) {
                    Ok(caller) => {
                        let key = subject_key(&caller);
                        parts.extensions.insert::<Arc<Caller>>(caller);
                        key
                    }
                    Err(refusal) => {
                        // The service answers with it without verifying the token again.
                        parts.extensions.insert(refusal);
                        connection_key
                    }
                }
            }
            _ => connection_key,
        };
        let budget = match kind {
            Kind::Unary | Kind::Streaming => &shared.app,
            Kind::HealthCheck => &shared.health,
            Kind::InfraStream => &shared.streams,
        };
        let metrics = match kind {
            Kind::Unary | Kind::Streaming => {
                Some(shared.metrics.get(config.server, parts.uri.path()))
            }
            _ => None,
        };
        // The call's span (when traces are exported), child of the caller's trace context.
        let span = match &metrics {
            Some(m) => trace::server_span(&m.service, &m.method, &parts.headers),
            None => tracing::Span::none(),
        };
        let permit = match budget.try_acquire(key) {
            Ok(permit) => permit,
            Err(refusal) => {
                let status = refused(config, kind, refusal, budget);
                let response = status.into_http();
                if let Some(metrics) = &metrics {
                    let code = response_code(&response);
                    metrics.record(code, started.elapsed());
                    trace::record_status(&span, code, true);
                }
                return Box::pin(async move {
                    drop(stream);
                    Ok(response)
                });
            }
        };

        let body_rule = match kind {
            Kind::Unary | Kind::HealthCheck => BodyRule::Whole {
                deadline: tokio::time::Instant::from_std(started + config.request_body_timeout),
                timeout: config.request_body_timeout,
                max_bytes: config.max_request_bytes,
            },
            Kind::Streaming | Kind::InfraStream => BodyRule::EachMessage {
                wait: config.stream_idle_timeout,
            },
        };
        let request = http::Request::from_parts(parts, RequestBody::new(body, body_rule));
        let call_timeout = match kind {
            Kind::Unary | Kind::HealthCheck => {
                let client = request
                    .headers()
                    .get("grpc-timeout")
                    .and_then(|value| parse_grpc_timeout(value.as_bytes()));
                Some(client.map_or(config.request_timeout, |c| c.min(config.request_timeout)))
            }
            Kind::Streaming | Kind::InfraStream => None,
        };
        let lifetime = (kind == Kind::InfraStream).then_some(INFRA_STREAM_MAX_AGE);
        let server = config.server;
        Box::pin(async move {
            let call = inner.call(request).instrument(span.clone());
            let response = match call_timeout {
                None => call.await?,
                Some(timeout) => match tokio::time::timeout(timeout, call).await {
                    Ok(response) => response?,
                    Err(_) => error_status(
                        Code::DeadlineExceeded,
                        "REQUEST_TIMEOUT",
                        format!(
                            "{server} did not answer within the call's deadline of {timeout:?}"
                        ),
                    )
                    .into_http(),
                },
            };
            if let Some(metrics) = &metrics {
                let code = response_code(&response);
                metrics.record(code, started.elapsed());
                trace::record_status(&span, code, true);
            }
            Ok(response.map(|body| {
                Body::new(ResponseBody {
                    inner: body,
                    _permit: permit,
                    _stream: stream,
                    lifetime: lifetime.map(|age| Box::pin(tokio::time::sleep(age))),
                    ended: false,
                })
            }))
        })
    }
}

fn subject_key(caller: &Caller) -> CallerKey {
    let hash = blake3::hash(caller.subject.as_bytes());
    let mut first = [0u8; 16];
    first.copy_from_slice(&hash.as_bytes()[..16]);
    CallerKey::Subject(u128::from_le_bytes(first))
}

/// The answer to a call a budget refused.
fn refused(config: &GuardConfig, kind: Kind, refusal: Refusal, budget: &Budget) -> Status {
    let server = config.server;
    match (kind, refusal) {
        (Kind::Unary | Kind::Streaming, Refusal::Full) => error_status(
            Code::Unavailable,
            "OVERLOADED",
            format!(
                "{server} is overloaded ({} calls in flight); retry with backoff",
                budget.total
            ),
        ),
        (Kind::Unary | Kind::Streaming, Refusal::CallerFull) => error_status(
            Code::ResourceExhausted,
            "CALLER_CONCURRENCY_LIMIT",
            format!(
                "this caller already has {} calls in flight on {server}, its share; wait for some to finish",
                budget.per_key
            ),
        ),
        (_, Refusal::Full) => error_status(
            Code::Unavailable,
            "OVERLOADED",
            format!(
                "{server} has {} health or reflection calls in flight; retry with backoff",
                budget.total
            ),
        ),
        (_, Refusal::CallerFull) => error_status(
            Code::ResourceExhausted,
            "CONNECTION_CONCURRENCY_LIMIT",
            format!(
                "this connection already has {} health or reflection calls in flight on {server}",
                budget.per_key
            ),
        ),
    }
}

/// `grpc-timeout`: up to 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(amount * 3600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// How long a request body may take.
#[derive(Debug, Clone, Copy)]
enum BodyRule {
    /// All of it by `deadline`, and at most `max_bytes`.
    Whole {
        deadline: tokio::time::Instant,
        timeout: Duration,
        max_bytes: usize,
    },
    /// Each next message within `wait` of asking for it.
    EachMessage { wait: Duration },
}

pin_project_lite::pin_project! {
    /// A request body under its [`BodyRule`]: the error it yields when the rule is broken is a
    /// [`Status`], which tonic passes to the client as the call's answer.
    pub struct RequestBody {
        #[pin]
        inner: Incoming,
        rule: BodyRule,
        timer: Option<Pin<Box<Sleep>>>,
        received: usize,
        failed: bool,
    }
}

impl RequestBody {
    fn new(inner: Incoming, rule: BodyRule) -> Self {
        Self {
            inner,
            rule,
            timer: None,
            received: 0,
            failed: false,
        }
    }
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if *this.failed {
            return Poll::Ready(None);
        }
        let rule = *this.rule;
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), BodyRule::Whole { max_bytes, .. }) = (frame.data_ref(), rule) {
                    *this.received = this.received.saturating_add(data.len());
                    if *this.received > max_bytes {
                        *this.failed = true;
                        return Poll::Ready(Some(Err(Box::new(error_status(
                            Code::ResourceExhausted,
                            "REQUEST_TOO_LARGE",
                            format!(
                                "the request message is larger than {max_bytes} bytes, the most this method accepts"
                            ),
                        )))));
                    }
                }
                if let BodyRule::EachMessage { .. } = rule {
                    *this.timer = None;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            // A stream the client reset (RST_STREAM with CANCEL) would reach tonic as code
            // CANCELLED, which its decoder takes for a clean end of the request stream: a
            // server holding every part of an ingest stream would then commit a load the
            // client broke off. Said as ABORTED, it is an error the handler sees.
            Poll::Ready(Some(Err(e))) => {
                *this.failed = true;
                Poll::Ready(Some(Err(Box::new(error_status(
                    Code::Aborted,
                    "REQUEST_RESET",
                    format!("the client broke off the request ({e}); none of it is applied"),
                )))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let timer = this.timer.get_or_insert_with(|| {
                    Box::pin(match rule {
                        BodyRule::Whole { deadline, .. } => tokio::time::sleep_until(deadline),
                        BodyRule::EachMessage { wait } => tokio::time::sleep(wait),
                    })
                });
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                *this.failed = true;
                let message = match rule {
                    BodyRule::Whole { timeout, .. } => format!(
                        "the request message did not arrive within {timeout:?} of the call's headers"
                    ),
                    BodyRule::EachMessage { wait } => {
                        format!("no request message for {wait:?}; the stream is closed")
                    }
                };
                Poll::Ready(Some(Err(Box::new(error_status(
                    Code::DeadlineExceeded,
                    "REQUEST_BODY_TIMEOUT",
                    message,
                )))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// A response body that holds the call's permit and keeps its stream counted until it is
    /// finished; an infrastructure stream ends with DEADLINE_EXCEEDED after its lifetime.
    struct ResponseBody {
        #[pin]
        inner: Body,
        _permit: Permit,
        _stream: StreamGuard,
        lifetime: Option<Pin<Box<Sleep>>>,
        ended: bool,
    }
}

impl HttpBody for ResponseBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if *this.ended {
            return Poll::Ready(None);
        }
        if let Some(lifetime) = this.lifetime
            && lifetime.as_mut().poll(cx).is_ready()
        {
            *this.ended = true;
            let status = error_status(
                Code::DeadlineExceeded,
                "STREAM_MAX_AGE",
                format!(
                    "streams of health and reflection last at most {INFRA_STREAM_MAX_AGE:?}; open a new one"
                ),
            );
            let mut trailers = http::HeaderMap::new();
            return match status.add_header(&mut trailers) {
                Ok(()) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
                Err(status) => Poll::Ready(Some(Err(status))),
            };
        }
        let frame = this.inner.poll_frame(cx);
        if let Poll::Ready(None) = frame {
            *this.ended = true;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The gRPC code of a response: in the headers for errors (trailers-only responses, which is
/// how tonic answers a unary call that failed), otherwise OK.
fn response_code(response: &http::Response<Body>) -> i32 {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Splits `/invest.portfolio.v1.PortfolioService/GetAccount` into service and method labels,
/// folding unknown paths into one label so that scanners cannot blow up the metrics.
fn labels(path: &str) -> (String, String) {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    match (parts.next(), parts.next()) {
        (Some(service), Some(method))
            if (service.starts_with("invest.") || service.starts_with("grpc."))
                && !method.contains('/') =>
        {
            (service.to_owned(), method.to_owned())
        }
        _ => ("unknown".to_owned(), "unknown".to_owned()),
    }
}

/// The metric handles of one method, registered once: recording a call then costs no label
/// allocation and no registry lookup.
#[derive(Debug)]
struct MethodMetrics {
    /// `rpc.service` and `rpc.method` of the call's span.
    service: String,
    method: String,
    latency: metrics::Histogram,
    /// One counter per gRPC code (17 codes).
    handled: Vec<metrics::Counter>,
}

impl MethodMetrics {
    fn new(server: &'static str, service: &str, method: &str) -> Self {
        let latency = metrics::histogram!(
            "grpc_server_handling_seconds",
            "server" => server,
            "grpc_service" => service.to_owned(),
            "grpc_method" => method.to_owned(),
        );
        let handled = (0..17)
            .map(|code| {
                metrics::counter!(
                    "grpc_server_handled_total",
                    "server" => server,
                    "grpc_service" => service.to_owned(),
                    "grpc_method" => method.to_owned(),
                    "grpc_code" => invest_proto::status::code_name(Code::from_i32(code)),
                )
            })
            .collect();
        Self {
            service: service.to_owned(),
            method: method.to_owned(),
            latency,
            handled,
        }
    }

    fn record(&self, code: i32, elapsed: Duration) {
        let index = usize::try_from(code)
            .unwrap_or(2)
            .min(self.handled.len() - 1);
        self.handled[index].increment(1);
        self.latency.record(elapsed.as_secs_f64());
    }
}

/// Metric handles by request path, created on first use. Unknown paths share one entry, so
/// scanners cannot grow it.
#[derive(Debug, Default)]
struct MetricsByPath {
    known: std::sync::RwLock<HashMap<String, Arc<MethodMetrics>>>,
}

impl MetricsByPath {
    fn get(&self, server: &'static str, path: &str) -> Arc<MethodMetrics> {
        if let Some(found) = self
            .known
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(path)
        {
            return found.clone();
        }
        let (service, method) = labels(path);
        let key = if service == "unknown" {
            "unknown"
        } else {
            path
        };
        let mut known = self.known.write().unwrap_or_else(|p| p.into_inner());
        known
            .entry(key.to_owned())
            .or_insert_with(|| Arc::new(MethodMetrics::new(server, &service, &method)))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_labels() {
        assert_eq!(
            labels("/invest.portfolio.v1.PortfolioService/GetAccount"),
            (
                "invest.portfolio.v1.PortfolioService".into(),
                "GetAccount".into()
            )
        );
        assert_eq!(
            labels("/wp-login.php"),
            ("unknown".into(), "unknown".into())
        );
        assert_eq!(
            labels("/evil.Service/X"),
            ("unknown".into(), "unknown".into())
        );
    }

    #[test]
    fn grpc_timeouts() {
        assert_eq!(
            parse_grpc_timeout(b"100m"),
            Some(Duration::from_millis(100))
        );
        assert_eq!(parse_grpc_timeout(b"2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout(b"5n"), Some(Duration::from_nanos(5)));
        for bad in [&b""[..], b"m", b"123456789m", b"10x", b"-1S", b"1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn budgets_share_fairly() {
        let budget = Budget::new(8, 2);
        let (a, b, c) = (
            CallerKey::Subject(1),
            CallerKey::Connection(7),
            CallerKey::Subject(3),
        );
        // A caller borrows beyond its share of 2 while more than half (4) is free...
        let mut held_by_a: Vec<Permit> = (0..4).map(|_| budget.try_acquire(a).unwrap()).collect();
        // ...and not into the half kept for the others.
        assert_eq!(budget.try_acquire(a).unwrap_err(), Refusal::CallerFull);
        // The others are sure of their share whatever a does.
        let b_share: Vec<Permit> = (0..2).map(|_| budget.try_acquire(b).unwrap()).collect();
        assert_eq!(budget.try_acquire(b).unwrap_err(), Refusal::CallerFull);
        let c1 = budget.try_acquire(c).unwrap();
        let _c2 = budget.try_acquire(c).unwrap();
        assert_eq!(
            budget.try_acquire(CallerKey::Subject(4)).unwrap_err(),
            Refusal::Full
        );
        // A refusal for a full budget takes nothing from the caller's share.
        drop(c1);
        let _c3 = budget.try_acquire(CallerKey::Subject(4)).unwrap();
        drop(b_share);
        held_by_a.clear();
        assert!(
            budget.held.lock().unwrap().get(&a).is_none()
                && budget.held.lock().unwrap().get(&b).is_none(),
            "a caller with nothing in flight is forgotten"
        );
    }
}
