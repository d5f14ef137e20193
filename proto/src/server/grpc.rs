//! What every invest gRPC server does the same way: a request guard (overload shedding,
//! timeouts, metrics), health and reflection, and a graceful shutdown that first reports
//! NOT_SERVING, then drains.

use std::{
    collections::HashSet,
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tokio::{net::TcpListener, sync::Semaphore, task::JoinHandle};
use tonic::{
    Status, body::Body, server::NamedService, service::Routes, transport::server::TcpIncoming,
};
use tonic_health::{ServingStatus, server::HealthReporter};
use tower::{Layer, Service};

/// Settings of the request guard.
#[derive(Debug, Clone)]
pub struct GuardConfig {
    /// Label of the server in metrics, e.g. `portfolio-svc`.
    pub server: &'static str,
    /// Requests served at once; beyond it requests are answered UNAVAILABLE at once rather
    /// than queued without bound.
    pub max_in_flight: usize,
    /// Deadline of unary calls; DEADLINE_EXCEEDED after it.
    pub request_timeout: Duration,
    /// Full method paths (`/pkg.Service/Method`) without the deadline: long ingest streams.
    pub untimed_methods: HashSet<&'static str>,
}

/// Tower layer applying [`GuardConfig`] to every call except health and reflection, which
/// must answer even when the server is saturated.
#[derive(Debug, Clone)]
pub struct GuardLayer {
    shared: Arc<GuardShared>,
}

#[derive(Debug)]
struct GuardShared {
    config: GuardConfig,
    permits: Arc<Semaphore>,
    metrics: MetricsByPath,
}

impl GuardLayer {
    /// A guard with its own in-flight budget.
    pub fn new(config: GuardConfig) -> Self {
        let permits = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
        Self {
            shared: Arc::new(GuardShared {
                config,
                permits,
                metrics: MetricsByPath::default(),
            }),
        }
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Guard {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service produced by [`GuardLayer`].
#[derive(Debug, Clone)]
pub struct Guard<S> {
    inner: S,
    shared: Arc<GuardShared>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

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

fn is_infrastructure(path: &str) -> bool {
    path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.")
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

fn code_name(code: i32) -> &'static str {
    match tonic::Code::from_i32(code) {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "CANCELLED",
        tonic::Code::Unknown => "UNKNOWN",
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::AlreadyExists => "ALREADY_EXISTS",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
        tonic::Code::Aborted => "ABORTED",
        tonic::Code::OutOfRange => "OUT_OF_RANGE",
        tonic::Code::Unimplemented => "UNIMPLEMENTED",
        tonic::Code::Internal => "INTERNAL",
        tonic::Code::Unavailable => "UNAVAILABLE",
        tonic::Code::DataLoss => "DATA_LOSS",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The metric handles of one method, registered once: recording a call then costs no label
/// allocation and no registry lookup.
#[derive(Debug)]
struct MethodMetrics {
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
                    "grpc_code" => code_name(code),
                )
            })
            .collect();
        Self { latency, handled }
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
    known: std::sync::RwLock<std::collections::HashMap<String, Arc<MethodMetrics>>>,
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

impl<S, B> Service<http::Request<B>> for Guard<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The clone is not ready; keep the ready one for this call (tower's usual dance).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = request.uri().path();
        if is_infrastructure(path) {
            return Box::pin(inner.call(request));
        }
        let shared = self.shared.clone();
        let server = shared.config.server;
        let metrics = shared.metrics.get(server, path);
        let timeout = (!shared.config.untimed_methods.contains(path))
            .then_some(shared.config.request_timeout);
        Box::pin(async move {
            let started = Instant::now();
            let Ok(permit) = shared.permits.clone().try_acquire_owned() else {
                let status = Status::unavailable(format!(
                    "{server} is overloaded ({} calls in flight); retry with backoff",
                    shared.config.max_in_flight
                ));
                let response = status.into_http();
                metrics.record(response_code(&response), started.elapsed());
                return Ok(response);
            };
            let response = match timeout {
                None => inner.call(request).await?,
                Some(timeout) => match tokio::time::timeout(timeout, inner.call(request)).await {
                    Ok(response) => response?,
                    Err(_) => Status::deadline_exceeded(format!(
                        "{server} did not answer within its {timeout:?} request timeout"
                    ))
                    .into_http(),
                },
            };
            drop(permit);
            metrics.record(response_code(&response), started.elapsed());
            Ok(response)
        })
    }
}

/// Health (`grpc.health.v1`) and reflection (v1 and v1alpha) for the given services, all
/// NOT_SERVING until [`Lifecycle::set_serving`].
pub struct Infrastructure {
    /// Flips the health status.
    pub lifecycle: Lifecycle,
    /// Routes of health and reflection, to which the service adds its own.
    pub routes: tonic::service::RoutesBuilder,
}

/// Flips the health status of the server and of each of its services.
#[derive(Clone)]
pub struct Lifecycle {
    reporter: HealthReporter,
    services: Vec<&'static str>,
}

impl Lifecycle {
    async fn set(&self, status: ServingStatus) {
        self.reporter.set_service_status("", status).await;
        for service in &self.services {
            self.reporter.set_service_status(*service, status).await;
        }
    }

    /// Ready for traffic.
    pub async fn set_serving(&self) {
        self.set(ServingStatus::Serving).await;
    }

    /// Not ready (starting, or draining).
    pub async fn set_not_serving(&self) {
        self.set(ServingStatus::NotServing).await;
    }

    /// The process is up and answering. Liveness probes ask for this name: it is SERVING
    /// from the start to the end, so that a database outage or a drain makes the server
    /// unready (readiness asks for "") without getting it restarted.
    pub async fn set_alive(&self) {
        self.reporter
            .set_service_status(LIVENESS_SERVICE, ServingStatus::Serving)
            .await;
    }
}

/// The health service name liveness probes ask for.
pub const LIVENESS_SERVICE: &str = "liveness";

/// Why reflection could not be built.
pub type ReflectionError = tonic_reflection::server::Error;

/// Builds health and reflection for services named `services`.
pub fn infrastructure(services: &[&'static str]) -> Result<Infrastructure, ReflectionError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let mut routes = Routes::builder();
    routes
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    Ok(Infrastructure {
        lifecycle: Lifecycle {
            reporter,
            services: services.to_vec(),
        },
        routes,
    })
}

/// The full name of a generated service, for health.
pub fn service_name<S: NamedService>() -> &'static str {
    S::NAME
}

/// Settings of how the server stops (and of its connections).
#[derive(Debug, Clone, Copy)]
pub struct ShutdownConfig {
    /// Connections are closed (gracefully) after this long, so that clients behind an L4
    /// load balancer spread over new replicas.
    pub max_connection_age: Option<Duration>,
    /// After SIGTERM, how long to keep serving while reporting NOT_SERVING, so that load
    /// balancers stop sending new calls before the listener closes.
    pub drain_delay: Duration,
    /// How long in-flight calls may take to finish before they are cut.
    pub grace: Duration,
}

/// Resolves on SIGTERM or SIGINT.
pub async fn termination_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A server started by [`spawn`].
#[derive(Debug)]
pub struct RunningServer {
    /// The address the gRPC listener is bound to.
    pub addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl RunningServer {
    /// Starts a graceful shutdown, as SIGTERM would.
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits until the server has stopped.
    pub async fn wait(self) -> Result<(), tonic::transport::Error> {
        match self.task.await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Ok(()),
        }
    }

    /// Stops the server at once, without draining (tests use it to simulate a crash).
    pub fn abort(&self) {
        self.task.abort();
    }
}

/// Serves `routes` behind the guard on `listener` until SIGTERM/SIGINT or
/// [`RunningServer::shutdown`]; then reports NOT_SERVING, waits the drain delay, stops
/// accepting, and gives in-flight calls the grace period.
pub fn spawn(
    listener: TcpListener,
    routes: Routes,
    guard: GuardLayer,
    lifecycle: Lifecycle,
    shutdown: ShutdownConfig,
    handle_signals: bool,
) -> std::io::Result<RunningServer> {
    let addr = listener.local_addr()?;
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let server_name = guard.shared.config.server;
    let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => {}
            _ = async { if handle_signals { termination_signal().await } else { std::future::pending().await } } => {}
        }
        tracing::info!(server = server_name, drain_delay = ?shutdown.drain_delay, "shutting down: reporting NOT_SERVING, then draining");
        lifecycle.set_not_serving().await;
        tokio::time::sleep(shutdown.drain_delay).await;
        let _ = drained_tx.send(());
    };
    let mut builder = tonic::transport::Server::builder();
    if let Some(age) = shutdown.max_connection_age {
        builder = builder.max_connection_age(age);
    }
    let serve = builder
        .layer(guard)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, signal);
    let task = tokio::spawn(async move {
        tokio::pin!(serve);
        tokio::select! {
            result = &mut serve => result,
            _ = async {
                // Once the listener is closed, in-flight calls get the grace period.
                let _ = drained_rx.await;
                tokio::time::sleep(shutdown.grace).await;
            } => {
                tracing::warn!(server = server_name, grace = ?shutdown.grace, "in-flight calls did not finish within the grace period; stopping anyway");
                Ok(())
            }
        }
    });
    Ok(RunningServer { addr, stop, task })
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
}
