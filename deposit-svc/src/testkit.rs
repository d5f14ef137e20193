//! Test support (feature `testkit`): the real deposit-svc on port 0 over a fresh database,
//! clients with tokens, directory streams built from entries, and a TCP proxy that takes
//! portfolio-svc "down" and "up" without stopping it.

use std::{sync::Arc, time::Duration};

use clap::Parser as _;
use invest_proto::{
    auth::{
        JwtKeys, SCOPE_DEPOSITS_WRITE, SCOPE_INGEST_WRITE, SCOPE_WITHDRAWALS_WRITE, ServiceToken,
    },
    deposit::v1::{
        self as pb, deposit_service_client::DepositServiceClient,
        directory_ingest_client::DirectoryIngestClient, directory_part::Part,
        withdrawal_service_client::WithdrawalServiceClient,
    },
    digest::{RecordDigest, RecordKind},
};
use invest_runtime::testkit::{Backend, TestDatabase};
use tonic::{service::interceptor::InterceptedService, transport::Channel};

use crate::{Config, DepositServer, start};

pub use invest_runtime::testkit::{Proxy, ProxyMode};

/// The JWT secret every test server and client shares (the same as portfolio-svc's tests).
pub const TEST_SECRET: &str = "test-secret-of-the-invest-test-suite-0123456789";

/// A client that sends a token of its own.
pub type Authed = InterceptedService<Channel, ServiceToken>;

/// A configuration for tests: port 0 everywhere, the test secret, and fast delivery retries.
pub fn test_config(database_url: &str, portfolio_url: &str) -> Config {
    let mut config = Config::parse_from([
        "deposit-svc",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--database-url",
        database_url,
        "--portfolio-url",
        portfolio_url,
        "--delivery-timeout",
        "1s",
        "--delivery-lease",
        "2s",
        "--delivery-max-backoff",
        "200ms",
        "--delivery-poll",
        "50ms",
    ]);
    config.server.jwt.jwt_secret = Some(TEST_SECRET.to_owned());
    config.server.jwt.jwt_secret_file = None;
    config
}

/// A deposit-svc for one test.
pub struct TestDeposit {
    /// The running server.
    pub server: DepositServer,
    /// Its database (dropped after the test).
    pub db: TestDatabase,
    /// Keys for minting tokens.
    pub keys: Arc<JwtKeys>,
}

impl TestDeposit {
    /// Starts a server on a fresh database and waits until it serves; `None` when the backend
    /// is not available here (the reason is printed).
    pub async fn spawn(backend: Backend, portfolio_url: &str) -> Option<Self> {
        let db = TestDatabase::create(backend, "deposit")?;
        Some(Self::spawn_on(db, portfolio_url, |_| {}).await)
    }

    /// Starts a server on the given database with a tweaked configuration.
    pub async fn spawn_on(
        db: TestDatabase,
        portfolio_url: &str,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = invest_runtime::telemetry::init_tracing(
                invest_runtime::telemetry::LogFormat::Text,
                "test",
            );
        }
        let mut config = test_config(db.url(), portfolio_url);
        tweak(&mut config);
        let server = start(config).await.expect("deposit-svc starts");
        tokio::time::timeout(Duration::from_secs(60), server.ready())
            .await
            .expect("deposit-svc migrates within a minute");
        Self {
            server,
            db,
            keys: Arc::new(JwtKeys::from_secret(TEST_SECRET.as_bytes())),
        }
    }

    /// `http://ADDR` of the gRPC listener.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// A connected channel.
    pub async fn channel(&self) -> Channel {
        connect(&self.url()).await
    }

    /// A deposits client speaking for `customer`.
    pub async fn deposits(&self, customer: &str) -> DepositServiceClient<Authed> {
        deposits_client(&self.url(), &self.keys, customer).await
    }

    /// A withdrawals client speaking for `customer`.
    pub async fn withdrawals(&self, customer: &str) -> WithdrawalServiceClient<Authed> {
        withdrawals_client(&self.url(), &self.keys, customer).await
    }

    /// A directory client with the loader's scope.
    pub async fn directory(&self) -> DirectoryIngestClient<Authed> {
        DirectoryIngestClient::with_interceptor(
            self.channel().await,
            ServiceToken::new(self.keys.clone(), "loader", &[SCOPE_INGEST_WRITE]),
        )
    }
}

/// A connected channel to `url`.
pub async fn connect(url: &str) -> Channel {
    Channel::from_shared(url.to_owned())
        .expect("a valid URL")
        .connect()
        .await
        .expect("the test server accepts connections")
}

/// A deposits client of the server at `url`, speaking for `customer`.
pub async fn deposits_client(
    url: &str,
    keys: &Arc<JwtKeys>,
    customer: &str,
) -> DepositServiceClient<Authed> {
    DepositServiceClient::with_interceptor(
        connect(url).await,
        ServiceToken::new(keys.clone(), customer, &[SCOPE_DEPOSITS_WRITE]),
    )
}

/// A withdrawals client of the server at `url`, speaking for `customer`.
pub async fn withdrawals_client(
    url: &str,
    keys: &Arc<JwtKeys>,
    customer: &str,
) -> WithdrawalServiceClient<Authed> {
    WithdrawalServiceClient::with_interceptor(
        connect(url).await,
        ServiceToken::new(keys.clone(), customer, &[SCOPE_WITHDRAWALS_WRITE]),
    )
}

/// The phase-2 signature of phase-1 fields, computed here as a client would (with the
/// `blake3` crate, not with deposit-svc's code).
pub fn sign(account_number: &str, customer_name: &str, amount: i64) -> String {
    blake3::hash(format!("{account_number}{customer_name}{amount}").as_bytes())
        .to_hex()
        .to_string()
}

/// A directory as entries, turned into a well-formed stream by [`Directory::parts`].
#[derive(Debug, Clone, Default)]
pub struct Directory {
    /// Microseconds since the Unix epoch.
    pub as_of: i64,
    /// Ascending account number.
    pub entries: Vec<pb::DirectoryEntry>,
}

impl Directory {
    /// Header, then the entries in batches of `batch`.
    pub fn parts(&self, batch: usize) -> Vec<pb::DirectoryPart> {
        let mut digest = RecordDigest::new();
        for entry in &self.entries {
            digest.add(RecordKind::DirectoryEntry, entry);
        }
        let mut parts = vec![pb::DirectoryPart {
            part: Some(Part::Header(pb::DirectoryHeader {
                as_of: Some(invest_proto::time::from_micros(self.as_of)),
                digest: digest.finish(),
                entry_count: self.entries.len() as i64,
                rejected_rows: 0,
            })),
        }];
        for chunk in self.entries.chunks(batch.max(1)) {
            parts.push(pb::DirectoryPart {
                part: Some(Part::Entries(pb::DirectoryBatch {
                    entries: chunk.to_vec(),
                })),
            });
        }
        parts
    }
}
