//! Serving and stopping: the listener with the guard in front of the routes until SIGTERM,
//! then a graceful shutdown that first reports NOT_SERVING, then drains. The request guard is
//! in [`crate::guard`], the listener in [`crate::listener`], health in [`crate::health`].

use std::{net::SocketAddr, time::Duration};

use tokio::{net::TcpListener, task::JoinHandle};
use tonic::service::Routes;

use crate::{
    guard::{GuardLayer, GuardedRoutes},
    health::Lifecycle,
    listener::{self, ConnectionLimits},
};

/// Settings of how the server stops.
#[derive(Debug, Clone, Copy)]
pub struct ShutdownConfig {
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
    task: JoinHandle<()>,
}

impl RunningServer {
    /// Starts a graceful shutdown, as SIGTERM would.
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits until the server has stopped.
    pub async fn wait(self) {
        match self.task.await {
            Ok(()) => {}
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => {}
        }
    }

    /// Stops the server at once, without draining (tests use it to simulate a crash).
    pub fn abort(&self) {
        self.task.abort();
    }
}

/// Serves `routes` behind the guard on `listener`, within `limits`, until SIGTERM/SIGINT or
/// [`RunningServer::shutdown`]; then reports NOT_SERVING, waits the drain delay, stops
/// accepting, closes every connection gracefully and gives in-flight calls the grace period.
pub fn spawn(
    listener: TcpListener,
    routes: Routes,
    guard: GuardLayer,
    lifecycle: Lifecycle,
    limits: ConnectionLimits,
    shutdown: ShutdownConfig,
    handle_signals: bool,
) -> std::io::Result<RunningServer> {
    let addr = listener.local_addr()?;
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let (close, closing) = tokio::sync::watch::channel(false);
    let server_name = guard.server();
    let signal = async move {
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => {}
            _ = async { if handle_signals { termination_signal().await } else { std::future::pending().await } } => {}
        }
        tracing::info!(server = server_name, drain_delay = ?shutdown.drain_delay, "shutting down: reporting NOT_SERVING, then draining");
        lifecycle.set_not_serving().await;
        tokio::time::sleep(shutdown.drain_delay).await;
        let _ = close.send(true);
    };
    let routes = GuardedRoutes {
        guard,
        routes: routes.prepare(),
    };
    let limits = ConnectionLimits {
        grace: shutdown.grace,
        ..limits
    };
    let serve = listener::serve(listener, routes, limits, server_name, closing.clone());
    let task = tokio::spawn(async move {
        tokio::pin!(serve);
        tokio::select! {
            () = &mut serve => {}
            () = signal => {
                // The listener is closing and connections drain; bounded by the grace.
                if tokio::time::timeout(shutdown.grace, serve).await.is_err() {
                    tracing::warn!(server = server_name, grace = ?shutdown.grace, "in-flight calls did not finish within the grace period; stopping anyway");
                }
            }
        }
    });
    Ok(RunningServer { addr, stop, task })
}
