//! How both servers start and stop, in one place: bind, serve health and reflection at once
//! (NOT_SERVING), open and migrate the database in the background with backoff, report
//! SERVING, and stop gracefully.

use std::{
    collections::HashSet,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, OnceLock},
    time::Duration,
};

use tokio::{net::TcpListener, sync::watch};
use tonic::service::RoutesBuilder;

use crate::auth::{Authenticator, VerifiedTokens};
use crate::{
    db::{Database, DatabaseUrl, DbConfig, Migrations, UrlError},
    guard::{GuardConfig, GuardLayer},
    health::{self, Lifecycle, ReflectionError},
    listener::ConnectionLimits,
    serve::{self, RunningServer, ShutdownConfig},
    telemetry,
};
use invest_cli::{JwtSecretArgs, LogFormat, SecretError};
use invest_proto::auth::JwtKeys;

/// Settings both servers share. The names are the same for both (`INVEST_*`); what the
/// contract fixes per server (listen address, database URL, metrics address) is in each
/// server's own configuration.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// The shared JWT secret.
    #[command(flatten)]
    pub jwt: JwtSecretArgs,
    /// Database connections, which is also how many database tasks run at once. 0 picks one
    /// per CPU on SQLite (its work is CPU-bound; more only adds context switches) and two per
    /// CPU on PostgreSQL (its work waits on the network).
    #[arg(long, env = "INVEST_DB_POOL_SIZE", default_value_t = 0)]
    pub db_pool_size: u32,
    /// How long a call waits for a database connection before it is answered UNAVAILABLE.
    #[arg(long, env = "INVEST_DB_ACQUIRE_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub db_acquire_timeout: Duration,
    /// Deadline of a unary call (ingest streams are exempt); a client's shorter
    /// `grpc-timeout` wins.
    #[arg(long, env = "INVEST_REQUEST_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// A unary request's message must have arrived this long after its headers
    /// (DEADLINE_EXCEEDED `REQUEST_BODY_TIMEOUT`), so that stalled calls free their place.
    #[arg(long, env = "INVEST_REQUEST_BODY_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub request_body_timeout: Duration,
    /// Longest wait for the next message of a streaming call (ingest, reflection).
    #[arg(long, env = "INVEST_STREAM_IDLE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub stream_idle_timeout: Duration,
    /// Largest unary request message, in bytes (RESOURCE_EXHAUSTED `REQUEST_TOO_LARGE`).
    #[arg(long, env = "INVEST_MAX_REQUEST_BYTES", default_value_t = 64 * 1024)]
    pub max_request_bytes: usize,
    /// Calls served at once; more are answered UNAVAILABLE (`OVERLOADED`) at once.
    #[arg(long, env = "INVEST_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub max_in_flight: usize,
    /// Of those, what one caller (a token's `sub`, or a connection without a valid token)
    /// may hold; more are answered RESOURCE_EXHAUSTED (`CALLER_CONCURRENCY_LIMIT`). 0: an
    /// eighth of `--max-in-flight`.
    #[arg(long, env = "INVEST_MAX_IN_FLIGHT_PER_CALLER", default_value_t = 0)]
    pub max_in_flight_per_caller: usize,
    /// Connections open at once; one more is closed as soon as it is accepted.
    #[arg(long, env = "INVEST_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Concurrent streams per connection, advertised in HTTP/2 SETTINGS.
    #[arg(long, env = "INVEST_MAX_STREAMS_PER_CONNECTION", default_value_t = 256)]
    pub max_streams_per_connection: u32,
    /// A new connection must send the HTTP/2 preface within this long, or it is closed.
    #[arg(long, env = "INVEST_HANDSHAKE_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,
    /// A connection without a call for this long is closed gracefully (0: never); clients
    /// reconnect when they need to.
    #[arg(long, env = "INVEST_CONNECTION_IDLE_TIMEOUT", default_value = "5m", value_parser = humantime::parse_duration)]
    pub connection_idle_timeout: Duration,
    /// HTTP/2 PING interval that finds peers gone without a word (0: none); a PING not
    /// answered in 20 s closes the connection.
    #[arg(long, env = "INVEST_KEEPALIVE_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub keepalive_interval: Duration,
    /// How often the database is probed; health is NOT_SERVING while it does not answer.
    #[arg(long, env = "INVEST_HEALTH_CHECK_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub health_check_interval: Duration,
    /// After SIGTERM, how long to keep serving while reporting NOT_SERVING.
    #[arg(long, env = "INVEST_DRAIN_DELAY", default_value = "0s", value_parser = humantime::parse_duration)]
    pub drain_delay: Duration,
    /// How long in-flight calls may take to finish after the listener closes.
    #[arg(long, env = "INVEST_SHUTDOWN_GRACE", default_value = "20s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// Connections are closed gracefully after this long (0: never), so that clients behind
    /// an L4 load balancer (a Kubernetes ClusterIP Service) spread over new replicas.
    #[arg(long, env = "INVEST_MAX_CONNECTION_AGE", default_value = "0s", value_parser = humantime::parse_duration)]
    pub max_connection_age: Duration,
    /// Verified tokens remembered until they expire, so that a customer's next call skips the
    /// signature check (about 200 bytes each; 0: verify every call).
    #[arg(long, env = "INVEST_TOKEN_CACHE_SIZE", default_value_t = VerifiedTokens::DEFAULT_CAPACITY)]
    pub token_cache_size: usize,
    /// Log format (`RUST_LOG` filters; default `info`).
    #[arg(long, env = "INVEST_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Stop on SIGTERM/SIGINT (the binaries set it; tests call `shutdown` instead).
    #[arg(skip)]
    pub handle_signals: bool,
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// No usable JWT secret.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// A database URL we cannot use.
    #[error(transparent)]
    DatabaseUrl(#[from] UrlError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Reflection could not be built (a bug in the descriptors).
    #[error("cannot build reflection: {0}")]
    Reflection(#[from] ReflectionError),
}

/// What a server is and where it listens.
#[derive(Debug)]
pub struct Launch<'a> {
    /// Name in logs and metrics, e.g. `portfolio-svc`.
    pub name: &'static str,
    /// gRPC address.
    pub listen: SocketAddr,
    /// Metrics address.
    pub metrics_listen: SocketAddr,
    /// Database URL as configured.
    pub database_url: &'a str,
    /// Shared settings.
    pub args: &'a ServerArgs,
    /// Full names of the services, for health.
    pub services: &'a [&'static str],
    /// Client-streaming methods: exempt from the request timeout and the unary body rules.
    pub streaming_methods: HashSet<&'static str>,
    /// The schema.
    pub migrations: Migrations,
}

/// Work to start once the database is ready (janitors, delivery loops).
pub type OnReady = Box<dyn FnOnce(Database) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// A running server.
#[derive(Debug)]
pub struct Running {
    /// The bound gRPC address.
    pub addr: SocketAddr,
    /// The bound metrics address.
    pub metrics_addr: SocketAddr,
    server: RunningServer,
    ready: watch::Receiver<bool>,
}

impl Running {
    /// Resolves once migrations are done and the server reports SERVING.
    pub async fn ready(&self) {
        let mut ready = self.ready.clone();
        let _ = ready.wait_for(|r| *r).await;
    }

    /// Graceful shutdown, as on SIGTERM.
    pub fn shutdown(&self) {
        self.server.shutdown();
    }

    /// Stops at once without draining (a crash, for tests).
    pub fn abort(&self) {
        self.server.abort();
    }

    /// Waits until the server has stopped.
    pub async fn wait(self) {
        self.server.wait().await;
    }
}

impl Launch<'_> {
    /// Loads the JWT keys (a server refuses to start without them).
    pub fn keys(&self) -> Result<Arc<JwtKeys>, LaunchError> {
        Ok(Arc::new(self.args.jwt.load()?))
    }

    /// The server's memory of verified tokens, shared by its services.
    pub fn verified_tokens(&self) -> Arc<VerifiedTokens> {
        Arc::new(VerifiedTokens::with_capacity(self.args.token_cache_size))
    }

    /// Binds and serves `routes` (plus health and reflection); the database is opened in the
    /// background and put into `db` when migrated, then `on_ready` runs. The guard verifies
    /// tokens with `keys` and `verified` (the services' own) to count calls per caller.
    pub async fn start(
        self,
        db: Arc<OnceLock<Database>>,
        auth: (Arc<JwtKeys>, Arc<VerifiedTokens>),
        add_routes: impl FnOnce(&mut RoutesBuilder),
        on_ready: OnReady,
    ) -> Result<Running, LaunchError> {
        let url = DatabaseUrl::parse(self.database_url)?;
        let bind_error = |addr| move |source| LaunchError::Bind { addr, source };
        let listener = TcpListener::bind(self.listen)
            .await
            .map_err(bind_error(self.listen))?;
        let metrics_listener = TcpListener::bind(self.metrics_listen)
            .await
            .map_err(bind_error(self.metrics_listen))?;
        let metrics_addr =
            telemetry::serve_metrics(metrics_listener).map_err(bind_error(self.metrics_listen))?;

        let infra = health::infrastructure(self.services)?;
        let mut routes = infra.routes;
        add_routes(&mut routes);
        let args = self.args;
        let guard = GuardLayer::new(GuardConfig {
            server: self.name,
            max_in_flight: args.max_in_flight,
            max_in_flight_per_caller: args.max_in_flight_per_caller,
            request_timeout: args.request_timeout,
            request_body_timeout: args.request_body_timeout,
            stream_idle_timeout: args.stream_idle_timeout,
            max_request_bytes: args.max_request_bytes,
            streaming_methods: self.streaming_methods,
            authenticator: Some(Authenticator::new(auth.0, auth.1)),
        });
        let nonzero = |d: Duration| (!d.is_zero()).then_some(d);
        let limits = ConnectionLimits {
            max_connections: args.max_connections,
            handshake_timeout: args.handshake_timeout,
            idle_timeout: nonzero(args.connection_idle_timeout),
            max_age: nonzero(args.max_connection_age),
            max_streams: args.max_streams_per_connection.max(1),
            keepalive_interval: nonzero(args.keepalive_interval),
            keepalive_timeout: KEEPALIVE_TIMEOUT,
            max_header_list_size: MAX_HEADER_LIST_SIZE,
            grace: args.shutdown_grace,
        };
        let lifecycle = infra.lifecycle;
        lifecycle.publish().await;
        lifecycle.set_alive().await;
        let server = serve::spawn(
            listener,
            routes.routes(),
            guard,
            lifecycle.clone(),
            limits,
            ShutdownConfig {
                drain_delay: args.drain_delay,
                grace: args.shutdown_grace,
            },
            args.handle_signals,
        )
        .map_err(bind_error(self.listen))?;
        tracing::info!(server = self.name, addr = %server.addr, metrics = %metrics_addr, database = %url, "listening on {}", server.addr);

        let (ready_tx, ready) = watch::channel(false);
        let pool_size = match self.args.db_pool_size {
            0 => {
                let cpus = std::thread::available_parallelism().map_or(2, |n| n.get() as u32);
                match url {
                    DatabaseUrl::Sqlite(_) => cpus.max(2),
                    DatabaseUrl::Postgres(_) => 2 * cpus,
                }
            }
            n => n,
        };
        let config = DbConfig {
            url,
            pool_size,
            acquire_timeout: self.args.db_acquire_timeout,
        };
        let migrations = self.migrations;
        let probe_every = args.health_check_interval;
        tokio::spawn(async move {
            let database = open_with_backoff(config, migrations).await;
            let _ = db.set(database.clone());
            lifecycle.set_serving().await;
            let _ = ready_tx.send(true);
            if !probe_every.is_zero() {
                tokio::spawn(watch_database(database.clone(), lifecycle, probe_every));
            }
            on_ready(database).await;
        });
        Ok(Running {
            addr: server.addr,
            metrics_addr,
            server,
            ready,
        })
    }
}

/// The body of a server binary's `main` once its configuration is parsed: starts the server,
/// serves until SIGTERM/SIGINT, and turns the outcome into the exit code (2 when it cannot
/// start, 1 when it stopped with an error).
pub async fn serve_until_stopped<E: std::fmt::Display>(
    name: &str,
    start: impl Future<Output = Result<Running, E>>,
) -> std::process::ExitCode {
    let server = match start.await {
        Ok(server) => server,
        Err(e) => {
            tracing::error!(error = %e, "{name} cannot start");
            eprintln!("{name}: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    server.wait().await;
    std::process::ExitCode::SUCCESS
}

/// How long an HTTP/2 PING may go unanswered before the connection is closed.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Largest request header block: a token is a few hundred bytes.
const MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;

/// Probes the database every `every`: health turns NOT_SERVING while it does not answer (so
/// that load balancers and Kubernetes readiness take the replica out), and SERVING again when
/// it does. Liveness stays SERVING: a database outage is not fixed by a restart.
async fn watch_database(database: Database, lifecycle: Lifecycle, every: Duration) {
    let mut reachable = true;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let probe = database.run(|c| {
            use diesel::connection::SimpleConnection as _;
            c.batch_execute("SELECT 1")
                .map_err(crate::db::DbError::from)
        });
        let answered = matches!(
            tokio::time::timeout(every.max(Duration::from_secs(1)), probe).await,
            Ok(Ok(()))
        );
        if answered != reachable {
            reachable = answered;
            if answered {
                tracing::info!(database = %database.url(), "the database answers again: SERVING");
            } else {
                tracing::warn!(database = %database.url(), "the database does not answer: health NOT_SERVING until it does");
            }
            lifecycle.set_database_reachable(answered).await;
        }
    }
}

/// Opens (and migrates) the database, retrying while it is unreachable.
async fn open_with_backoff(config: DbConfig, migrations: Migrations) -> Database {
    let mut backoff = Duration::from_millis(250);
    loop {
        let attempt = config.clone();
        match tokio::task::spawn_blocking(move || Database::open(&attempt, &migrations)).await {
            Ok(Ok(db)) => {
                tracing::info!(database = %db.url(), "database migrated; serving");
                return db;
            }
            Ok(Err(e)) => tracing::warn!(error = %e, retry_in = ?backoff, "database not ready"),
            Err(e) => tracing::error!(error = %e, "database start-up task failed"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}
