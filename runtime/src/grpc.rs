//! What every invest gRPC server does the same way: health and reflection, and a graceful
//! shutdown that first reports NOT_SERVING, then drains. The request guard is in
//! [`super::guard`], the listener in [`super::listener`].

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::TcpListener, task::JoinHandle};
use tonic::{server::NamedService, service::Routes};
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    guard::{GuardLayer, GuardedRoutes},
    listener::{self, ConnectionLimits},
};

/// Health (`grpc.health.v1`) and reflection (v1 and v1alpha) for the given services, all
/// NOT_SERVING until [`Lifecycle::set_serving`].
pub struct Infrastructure {
    /// Flips the health status.
    pub lifecycle: Lifecycle,
    /// Routes of health and reflection, to which the service adds its own.
    pub routes: tonic::service::RoutesBuilder,
}

/// Flips the health status of the server and of each of its services: SERVING when the
/// database is migrated and reachable and the server is not draining.
#[derive(Clone)]
pub struct Lifecycle {
    reporter: HealthReporter,
    services: Vec<&'static str>,
    /// Held while a change is published, so that the last status published is the one of
    /// the last change.
    state: Arc<tokio::sync::Mutex<Readiness>>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Readiness {
    migrated: bool,
    database_reachable: bool,
    draining: bool,
}

impl Lifecycle {
    async fn set(&self, status: ServingStatus) {
        self.reporter.set_service_status("", status).await;
        for service in &self.services {
            self.reporter.set_service_status(*service, status).await;
        }
    }

    async fn update(&self, change: impl FnOnce(&mut Readiness)) {
        let mut state = self.state.lock().await;
        change(&mut state);
        let serving = state.migrated && state.database_reachable && !state.draining;
        self.set(if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        })
        .await;
    }

    /// Publishes the current state (NOT_SERVING until the database is migrated).
    pub async fn publish(&self) {
        self.update(|_| {}).await;
    }

    /// The database is migrated: ready for traffic unless draining.
    pub async fn set_serving(&self) {
        self.update(|state| {
            state.migrated = true;
            state.database_reachable = true;
        })
        .await;
    }

    /// Draining: NOT_SERVING from now on.
    pub async fn set_not_serving(&self) {
        self.update(|state| state.draining = true).await;
    }

    /// Whether the database answered the last probe; NOT_SERVING while it does not.
    pub async fn set_database_reachable(&self, reachable: bool) {
        self.update(|state| state.database_reachable = reachable)
            .await;
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
        .register_encoded_file_descriptor_set(invest_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(invest_proto::FILE_DESCRIPTOR_SET)
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
            state: Arc::default(),
        },
        routes,
    })
}

/// The full name of a generated service, for health.
pub fn service_name<S: NamedService>() -> &'static str {
    S::NAME
}

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
