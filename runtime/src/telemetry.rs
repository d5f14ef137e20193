//! Prometheus metrics served on their own port (logs and traces: `invest_cli::trace`).

use std::{net::SocketAddr, sync::OnceLock};

use http_body_util::Full;
use hyper::{Request, Response, body::Bytes, service::service_fn};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

pub use invest_cli::{
    LogFormat, init_tracing,
    trace::{self, TracingGuard},
};

/// Latency buckets (seconds) for every `*_seconds` histogram.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (a test harness); then ours only renders.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Connections the metrics listener serves at once (a scraper needs one).
const METRICS_MAX_CONNECTIONS: usize = 32;
/// A metrics request must have sent its headers this long after connecting.
const METRICS_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves `GET /metrics` (Prometheus text format) on `listener` until the runtime stops.
/// Bounded like the gRPC listener: a few connections at once, each closed after one answer
/// or when its request does not arrive in time.
pub fn serve_metrics(listener: TcpListener) -> std::io::Result<SocketAddr> {
    let addr = listener.local_addr()?;
    let handle = prometheus().clone();
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(METRICS_MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                drop(stream);
                continue;
            };
            let handle = handle.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let handle = handle.clone();
                    async move {
                        let response = if request.uri().path() == "/metrics" {
                            handle.run_upkeep();
                            Response::builder()
                                .header("content-type", "text/plain; version=0.0.4")
                                .body(Full::new(Bytes::from(handle.render())))
                        } else {
                            Response::builder()
                                .status(404)
                                .body(Full::new(Bytes::from_static(b"metrics are on /metrics\n")))
                        };
                        response.map_err(std::io::Error::other)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(METRICS_HEADER_TIMEOUT)
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}
