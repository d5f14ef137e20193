//! deposit-svc: the two-phase deposit. Phase 1 registers a transfer (account, customer name,
//! amount) and returns an unguessable transfer id; phase 2 checks a BLAKE3 signature of those
//! fields and confirms the deposit, which is then credited exactly once in portfolio-svc
//! (`delivery`). The account directory that phase 1 checks comes from the loader.

pub mod clock;
pub mod delivery;
pub mod directory;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod store;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod transfer;
pub mod withdrawal;

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{Arc, OnceLock},
    time::Duration,
};

use invest_proto::{
    auth::{
        SCOPE_DEPOSITS_WRITE, SCOPE_INGEST_WRITE, SCOPE_LEDGER_WRITE, SCOPE_WITHDRAWALS_WRITE,
        ServiceToken,
    },
    deposit::v1::{
        deposit_service_server::DepositServiceServer,
        directory_ingest_server::DirectoryIngestServer,
        withdrawal_service_server::WithdrawalServiceServer,
    },
    portfolio::v1::portfolio_ledger_client::PortfolioLedgerClient,
    time,
};
use invest_runtime::{
    auth::RequireScope,
    db::Database,
    launch::{Launch, LaunchError, Running, ServerArgs},
    staged, telemetry,
};
use tonic::transport::Endpoint;

use crate::{
    clock::Clock,
    delivery::{Delivery, DeliveryConfig},
    grpc::{AppState, DepositApi, DirectoryApi},
    transfer::Rules,
    withdrawal::WithdrawalApi,
};

/// Configuration: every flag has its environment variable (the contract's operating
/// interface).
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "deposit-svc",
    version,
    about = "gRPC server of the two-phase deposit"
)]
pub struct Config {
    /// Address of the gRPC listener (port 0 picks a free port).
    #[arg(long, env = "DEPOSIT_LISTEN", default_value = "127.0.0.1:50052")]
    pub listen: SocketAddr,
    /// `sqlite://PATH`, a plain path, or `postgres://…`.
    #[arg(
        long,
        env = "DEPOSIT_DATABASE_URL",
        default_value = "sqlite://deposit.db"
    )]
    pub database_url: String,
    /// portfolio-svc, which credits confirmed deposits (PortfolioLedger).
    #[arg(
        long,
        env = "DEPOSIT_PORTFOLIO_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub portfolio_url: String,
    /// Address of the Prometheus endpoint (`/metrics`).
    #[arg(long, env = "DEPOSIT_METRICS_LISTEN", default_value = "127.0.0.1:9452")]
    pub metrics_listen: SocketAddr,
    /// Largest amount of one deposit, in won.
    #[arg(long, env = "DEPOSIT_MAX_AMOUNT", default_value_t = 1_000_000_000)]
    pub max_amount: i64,
    /// How long phase 2 may wait after phase 1.
    #[arg(long, env = "DEPOSIT_TRANSFER_TTL", default_value = "10m", value_parser = humantime::parse_duration)]
    pub transfer_ttl: Duration,
    /// Wrong signatures after which a transfer is rejected.
    #[arg(long, env = "DEPOSIT_MAX_SIGNATURE_ATTEMPTS", default_value_t = 5)]
    pub max_signature_attempts: u32,
    /// Deadline of one delivery to portfolio-svc.
    #[arg(long, env = "DEPOSIT_DELIVERY_TIMEOUT", default_value = "3s", value_parser = humantime::parse_duration)]
    pub delivery_timeout: Duration,
    /// How long a replica's claim on a delivery holds (longer than the delivery timeout).
    #[arg(long, env = "DEPOSIT_DELIVERY_LEASE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub delivery_lease: Duration,
    /// Longest wait between two delivery attempts of one deposit.
    #[arg(long, env = "DEPOSIT_DELIVERY_MAX_BACKOFF", default_value = "5m", value_parser = humantime::parse_duration)]
    pub delivery_max_backoff: Duration,
    /// How often the background delivery looks for deposits to (re)deliver.
    #[arg(long, env = "DEPOSIT_DELIVERY_POLL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub delivery_poll: Duration,
    /// A loading directory without a new batch for this long is considered abandoned.
    #[arg(long, env = "DEPOSIT_STALE_LOAD_AFTER", default_value = "15m", value_parser = humantime::parse_duration)]
    pub stale_load_after: Duration,
    /// Settings shared with portfolio-svc.
    #[command(flatten)]
    pub server: ServerArgs,
    /// Business time (tests move it by hand).
    #[arg(skip)]
    pub clock: Clock,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The shared start-up failed.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// A setting is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// A running deposit-svc.
pub type DepositServer = Running;

/// Identifier of this server in metrics, logs and its service tokens.
pub const SERVER_NAME: &str = "deposit-svc";

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// Binds, starts serving (NOT_SERVING until the database is migrated) and returns.
pub async fn start(config: Config) -> Result<DepositServer, StartError> {
    if config.max_amount <= 0 {
        return Err(StartError::Config("--max-amount must be positive".into()));
    }
    if config.delivery_lease <= config.delivery_timeout {
        return Err(StartError::Config(
            "--delivery-lease must be longer than --delivery-timeout, or two replicas could deliver one deposit at once".into(),
        ));
    }
    let portfolio = Endpoint::from_shared(config.portfolio_url.clone())
        .map_err(|e| {
            StartError::Config(format!("--portfolio-url {:?}: {e}", config.portfolio_url))
        })?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true);
    let launch = Launch {
        name: SERVER_NAME,
        listen: config.listen,
        metrics_listen: config.metrics_listen,
        database_url: &config.database_url,
        args: &config.server,
        services: &[
            <DepositServiceServer<DepositApi> as tonic::server::NamedService>::NAME,
            <DirectoryIngestServer<DirectoryApi> as tonic::server::NamedService>::NAME,
            <WithdrawalServiceServer<WithdrawalApi> as tonic::server::NamedService>::NAME,
        ],
        streaming_methods: HashSet::from(["/invest.deposit.v1.DirectoryIngest/LoadDirectory"]),
        migrations: store::MIGRATIONS,
    };
    let keys = launch.keys()?;
    let verified = launch.verified_tokens();
    let ledger = PortfolioLedgerClient::with_interceptor(
        portfolio.connect_lazy(),
        telemetry::trace::Propagate(ServiceToken::new(
            keys.clone(),
            SERVER_NAME,
            &[SCOPE_LEDGER_WRITE],
        )),
    );
    let db = Arc::new(OnceLock::new());
    let state = Arc::new(AppState {
        db: db.clone(),
        delivery: OnceLock::new(),
        rules: Rules {
            max_amount: config.max_amount,
            transfer_ttl: micros(config.transfer_ttl),
            max_signature_attempts: i64::from(config.max_signature_attempts.max(1)),
        },
        clock: config.clock.clone(),
        flip_lock_key: store::MIGRATIONS.lock_key + 1,
        tokens: invest_runtime::paging::PageTokens::new(&keys),
    });
    let delivery_config = DeliveryConfig {
        timeout: config.delivery_timeout,
        lease: config.delivery_lease,
        max_backoff: config.delivery_max_backoff,
        poll: config.delivery_poll,
    };
    let janitor = Janitor {
        clock: config.clock.clone(),
        stale_after: config.stale_load_after,
    };
    let ready_state = state.clone();
    let running = launch
        .start(
            db,
            (keys.clone(), verified.clone()),
            |routes| {
                routes
                    .add_service(DepositServiceServer::with_interceptor(
                        DepositApi::new(state.clone()),
                        RequireScope::new(keys.clone(), verified.clone(), SCOPE_DEPOSITS_WRITE),
                    ))
                    .add_service(WithdrawalServiceServer::with_interceptor(
                        WithdrawalApi::new(state.clone()),
                        RequireScope::new(keys.clone(), verified.clone(), SCOPE_WITHDRAWALS_WRITE),
                    ))
                    .add_service(DirectoryIngestServer::with_interceptor(
                        DirectoryApi::new(state.clone()),
                        RequireScope::new(keys.clone(), verified.clone(), SCOPE_INGEST_WRITE),
                    ));
            },
            Box::new(move |db: Database| {
                Box::pin(async move {
                    let lease_owner = format!(
                        "{SERVER_NAME}-{}",
                        crate::domain::new_transfer_id()
                            .map(|t| t.into_string())
                            .unwrap_or_default()
                    );
                    let delivery = Arc::new(Delivery::new(
                        db.clone(),
                        ledger,
                        lease_owner,
                        delivery_config,
                    ));
                    let _ = ready_state.delivery.set(delivery.clone());
                    tokio::spawn(delivery.run());
                    janitor.run(db).await;
                })
            }),
        )
        .await?;
    Ok(running)
}

/// Writes down expired transfers, prunes old directories, publishes the outbox gauges.
struct Janitor {
    clock: Clock,
    stale_after: Duration,
}

impl Janitor {
    async fn run(self, db: Database) {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            let now = self.clock.now();
            match db
                .run(move |c| -> error::Result<usize> {
                    Ok(store::deposits::expire(c, now, None)?)
                })
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::info!(expired = n, "pending transfers expired"),
                Err(e) => tracing::warn!(error = %e, "cannot expire pending transfers"),
            }
            match db
                .run(move |c| store::withdrawals::expire(c, now, None))
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    expired = n,
                    "pending withdrawals expired; their holds are being released"
                ),
                Err(e) => tracing::warn!(error = %e, "cannot expire pending withdrawals"),
            }
            match db.run(store::outbox::backlog).await {
                Ok((count, oldest)) => {
                    metrics::gauge!("deposit_outbox_pending").set(count as f64);
                    let age = oldest.map_or(0.0, |t| (time::now_micros() - t).max(0) as f64 / 1e6);
                    metrics::gauge!("deposit_outbox_oldest_seconds").set(age);
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the outbox backlog"),
            }
            match db
                .run(|c| -> error::Result<i64> { Ok(store::withdrawals::pending_count(c)?) })
                .await
            {
                Ok(n) => metrics::gauge!("withdrawals_pending").set(n as f64),
                Err(e) => tracing::warn!(error = %e, "cannot count pending withdrawals"),
            }
            // Retired directories serve nothing: keep none.
            let stale_before = time::now_micros() - micros(self.stale_after);
            staged::prune(&db, &store::DIRECTORIES, 0, stale_before).await;
        }
    }
}

/// Installs logging and, when a collector is configured, traces (the binary calls it and
/// keeps the guard; tests use `TEST_LOG`).
pub fn init_tracing(config: &Config) -> telemetry::TracingGuard {
    telemetry::init_tracing(config.server.log_format, SERVER_NAME)
}
