//! The gRPC listener: our own accept loop over hyper's HTTP/2 server, because tonic's offers
//! no bound on connections and no deadline for a client that connects and says nothing.
//!
//! Every connection costs memory before it has proven anything, so each one is bounded:
//! - at most `max_connections` at once; one more is closed as soon as it is accepted;
//! - the HTTP/2 preface must arrive within `handshake_timeout`, or the connection is closed;
//! - at most `max_streams` concurrent streams, advertised in SETTINGS_MAX_CONCURRENT_STREAMS;
//! - a connection with no open stream for `idle_timeout` is closed gracefully (GOAWAY), as is
//!   one older than `max_age`; after GOAWAY its streams get `grace` to finish;
//! - PING every `keepalive_interval` detects peers that vanished without closing;
//! - request headers are limited to `max_header_list_size` bytes.

use std::{
    convert::Infallible,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, watch},
};
use tonic::body::Body;
use tower::Service;

/// The first bytes of every HTTP/2 connection (RFC 9113, section 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Limits of the listener; see the module documentation.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Time from accept to the end of the HTTP/2 preface.
    pub handshake_timeout: Duration,
    /// A connection without open streams for this long is closed gracefully (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// A connection is closed gracefully after this long (`None`: never).
    pub max_age: Option<Duration>,
    /// Concurrent streams per connection (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_streams: u32,
    /// Interval of HTTP/2 PINGs (`None`: none).
    pub keepalive_interval: Option<Duration>,
    /// A PING not answered within this closes the connection.
    pub keepalive_timeout: Duration,
    /// Largest request header block, in bytes (SETTINGS_MAX_HEADER_LIST_SIZE).
    pub max_header_list_size: u32,
    /// After a graceful close starts, streams get this long before the connection is cut.
    pub grace: Duration,
}

/// One accepted connection, as the request guard sees it: who is at the other end and how
/// many of its streams are open.
#[derive(Debug)]
pub struct Connection {
    /// Unique within the process.
    pub id: u64,
    /// The peer's address.
    pub peer: SocketAddr,
    open_streams: AtomicUsize,
    /// Milliseconds since `EPOCH` when the last stream closed.
    last_close: AtomicU64,
}

impl Connection {
    fn new(id: u64, peer: SocketAddr) -> Self {
        Self {
            id,
            peer,
            open_streams: AtomicUsize::new(0),
            last_close: AtomicU64::new(millis_now()),
        }
    }

    /// A stream starts; the returned guard ends it when dropped (when the response body is
    /// finished or the stream is reset).
    pub fn stream_opened(self: &Arc<Self>) -> StreamGuard {
        self.open_streams.fetch_add(1, Ordering::Relaxed);
        StreamGuard {
            connection: self.clone(),
        }
    }

    fn idle_for(&self) -> Option<Duration> {
        if self.open_streams.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = self.last_close.load(Ordering::Acquire);
        Some(Duration::from_millis(millis_now().saturating_sub(since)))
    }
}

/// Counts a stream as open until dropped.
#[derive(Debug)]
pub struct StreamGuard {
    connection: Arc<Connection>,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.connection
            .last_close
            .store(millis_now(), Ordering::Release);
        self.connection.open_streams.fetch_sub(1, Ordering::AcqRel);
    }
}

fn millis_now() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Makes the service of one connection (the request guard, told which connection it serves).
pub trait ConnectionService: Send + Sync + 'static {
    /// The service for this connection.
    type Service: Service<
            http::Request<Incoming>,
            Response = http::Response<Body>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static;

    /// Builds the service of `connection`.
    fn for_connection(&self, connection: Arc<Connection>) -> Self::Service;
}

/// Accepts connections on `listener` and serves each with `make`, within `limits`, until
/// `stop` turns true; then every connection is closed gracefully and this resolves once all
/// are gone.
pub async fn serve<M: ConnectionService>(
    listener: TcpListener,
    make: M,
    limits: ConnectionLimits,
    server: &'static str,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let next_id = AtomicU64::new(1);
    let make = Arc::new(make);
    let open_gauge = metrics::gauge!("grpc_server_connections", "server" => server);
    let refused = metrics::counter!("grpc_server_connections_refused_total", "server" => server, "reason" => "max_connections");
    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams)
        .keep_alive_interval(limits.keepalive_interval)
        .keep_alive_timeout(limits.keepalive_timeout)
        .max_header_list_size(limits.max_header_list_size);
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, typically: wait instead of spinning.
                tracing::warn!(server, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused.increment(1);
            tracing::debug!(server, %peer, limit = limits.max_connections, "connection refused: too many connections");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = Arc::new(Connection::new(
            next_id.fetch_add(1, Ordering::Relaxed),
            peer,
        ));
        let service = make.for_connection(connection.clone());
        let http2 = http2.clone();
        let stop = stop.clone();
        let open_gauge = open_gauge.clone();
        tokio::spawn(async move {
            open_gauge.increment(1.0);
            serve_connection(stream, connection, service, http2, limits, server, stop).await;
            open_gauge.decrement(1.0);
            drop(slot);
        });
    }
    drop(listener);
    // Every connection holds a slot until it is gone.
    let _ = slots
        .acquire_many(u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX))
        .await;
}

async fn serve_connection<S>(
    mut stream: TcpStream,
    connection: Arc<Connection>,
    service: S,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
    limits: ConnectionLimits,
    server: &'static str,
    mut stop: watch::Receiver<bool>,
) where
    S: Service<
            http::Request<Incoming>,
            Response = http::Response<Body>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static,
{
    let mut preface = [0u8; 24];
    match tokio::time::timeout(limits.handshake_timeout, stream.read_exact(&mut preface)).await {
        Ok(Ok(_)) if &preface == PREFACE => {}
        Ok(Ok(_)) => {
            metrics::counter!("grpc_server_connections_refused_total", "server" => server, "reason" => "not_http2").increment(1);
            tracing::debug!(server, peer = %connection.peer, "connection closed: not HTTP/2 (gRPC needs HTTP/2 with prior knowledge)");
            return;
        }
        Ok(Err(_)) => return,
        Err(_) => {
            metrics::counter!("grpc_server_connections_refused_total", "server" => server, "reason" => "handshake_timeout").increment(1);
            tracing::debug!(server, peer = %connection.peer, timeout = ?limits.handshake_timeout, "connection closed: no HTTP/2 preface in time");
            return;
        }
    }
    let io = TokioIo::new(Rewind {
        preface,
        position: 0,
        stream,
    });
    let conn = http2.serve_connection(io, TowerToHyperService::new(service));
    tokio::pin!(conn);

    let born = Instant::now();
    let age = async {
        match limits.max_age {
            Some(age) => tokio::time::sleep(age).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(age);
    let idle = idle_watch(&connection, limits.idle_timeout);
    tokio::pin!(idle);
    let closing = tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(server, peer = %connection.peer, error = %e, "connection ended with an error");
            }
            return;
        }
        _ = stop.wait_for(|stop| *stop) => "shutdown",
        () = &mut age => "max_age",
        () = &mut idle => "idle",
    };
    tracing::debug!(server, peer = %connection.peer, reason = closing, age = ?born.elapsed(), "closing connection gracefully");
    conn.as_mut().graceful_shutdown();
    if tokio::time::timeout(limits.grace, conn.as_mut())
        .await
        .is_err()
    {
        tracing::debug!(server, peer = %connection.peer, grace = ?limits.grace, "connection cut: streams outlived the grace period");
    }
}

/// Resolves once the connection has had no open stream for `timeout`.
async fn idle_watch(connection: &Connection, timeout: Option<Duration>) {
    let Some(timeout) = timeout else {
        return std::future::pending().await;
    };
    let step = (timeout / 4).max(Duration::from_millis(10));
    loop {
        match connection.idle_for() {
            Some(idle) if idle >= timeout => return,
            Some(idle) => {
                tokio::time::sleep((timeout - idle).min(step).max(Duration::from_millis(1))).await
            }
            None => tokio::time::sleep(step).await,
        }
    }
}

/// The stream with the preface we read put back in front, for hyper to read again.
struct Rewind {
    preface: [u8; 24],
    position: usize,
    stream: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.position < self.preface.len() {
            let rest = &self.preface[self.position..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            self.position += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
