//! Test support (feature `testkit`): the real server on port 0 over a fresh database, clients
//! with tokens, and snapshot streams built from records. Used by this crate's tests and by the
//! end-to-end tests of the loader and deposit-svc.

use std::{sync::Arc, time::Duration};

use clap::Parser as _;
use invest_proto::{
    auth::{JwtKeys, SCOPE_ACCOUNTS_READ, SCOPE_INGEST_WRITE, SCOPE_LEDGER_WRITE, ServiceToken},
    digest::{RecordDigest, RecordKind},
    portfolio::v1::{
        self as pb, portfolio_ingest_client::PortfolioIngestClient,
        portfolio_ledger_client::PortfolioLedgerClient,
        portfolio_service_client::PortfolioServiceClient, snapshot_part::Part,
    },
};
use invest_runtime::testkit::{Backend, TestDatabase};
use tonic::{service::interceptor::InterceptedService, transport::Channel};

use crate::{Config, Portfolio, start};

/// The JWT secret every test server and client shares.
pub const TEST_SECRET: &str = "test-secret-of-the-invest-test-suite-0123456789";

/// A client that sends a token of its own.
pub type Authed<C> = InterceptedService<Channel, C>;

/// A portfolio-svc for one test.
pub struct TestPortfolio {
    /// The running server.
    pub server: Portfolio,
    /// Its database (dropped after the test).
    pub db: TestDatabase,
    /// Keys for minting tokens.
    pub keys: Arc<JwtKeys>,
}

/// Installs logging for tests when `TEST_LOG` is set; silent otherwise.
pub fn init_test_log() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = invest_runtime::telemetry::init_tracing(
            invest_runtime::telemetry::LogFormat::Text,
            "test",
        );
    }
}

/// A configuration for tests: port 0 everywhere, the test secret.
pub fn test_config(database_url: &str) -> Config {
    let mut config = Config::parse_from([
        "portfolio-svc",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--database-url",
        database_url,
    ]);
    config.server.jwt.jwt_secret = Some(TEST_SECRET.to_owned());
    config.server.jwt.jwt_secret_file = None;
    config
}

impl TestPortfolio {
    /// Starts a server on a fresh database and waits until it serves; `None` when the backend
    /// is not available here (the reason is printed).
    pub async fn spawn(backend: Backend) -> Option<Self> {
        let db = TestDatabase::create(backend, "portfolio")?;
        Some(Self::spawn_on(db, |_| {}).await)
    }

    /// Starts a server on the given database with a tweaked configuration.
    pub async fn spawn_on(db: TestDatabase, tweak: impl FnOnce(&mut Config)) -> Self {
        init_test_log();
        let mut config = test_config(db.url());
        tweak(&mut config);
        let server = start(config).await.expect("portfolio-svc starts");
        tokio::time::timeout(Duration::from_secs(60), server.ready())
            .await
            .expect("portfolio-svc migrates within a minute");
        Self {
            server,
            db,
            keys: Arc::new(JwtKeys::from_secret(TEST_SECRET.as_bytes())),
        }
    }

    /// Another replica on the same database, with a tweaked configuration.
    pub async fn replica(&self, tweak: impl FnOnce(&mut Config)) -> Self {
        Self::spawn_on(self.db.shared(), tweak).await
    }

    /// `http://ADDR` of the gRPC listener.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// A connected channel.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url())
            .expect("a valid URL")
            .connect()
            .await
            .expect("the test server accepts connections")
    }

    /// A client of the screens speaking for `customer`.
    pub async fn screens(&self, customer: &str) -> PortfolioServiceClient<Authed<ServiceToken>> {
        PortfolioServiceClient::with_interceptor(
            self.channel().await,
            ServiceToken::new(self.keys.clone(), customer, &[SCOPE_ACCOUNTS_READ]),
        )
    }

    /// An ingest client with the loader's scope.
    pub async fn ingest(&self) -> PortfolioIngestClient<Authed<ServiceToken>> {
        PortfolioIngestClient::with_interceptor(
            self.channel().await,
            ServiceToken::new(self.keys.clone(), "loader", &[SCOPE_INGEST_WRITE]),
        )
        .max_encoding_message_size(32 * 1024 * 1024)
    }
}

impl TestPortfolio {
    /// Loads `snapshot` through the ingest stream (batches of 10 accounts); panics if refused.
    pub async fn load(&self, snapshot: &Snapshot) {
        self.ingest()
            .await
            .load_snapshot(tokio_stream::iter(snapshot.parts(10)))
            .await
            .expect("the snapshot loads");
    }

    /// GetAccount of `account` as `customer`; panics on an error status.
    pub async fn account(&self, customer: &str, account: &str) -> pb::AccountDetail {
        self.screens(customer)
            .await
            .get_account(pb::GetAccountRequest {
                account_number: account.into(),
            })
            .await
            .expect("GetAccount answers")
            .into_inner()
    }

    /// A ledger client with deposit-svc's scope.
    pub async fn ledger(&self) -> PortfolioLedgerClient<Authed<ServiceToken>> {
        PortfolioLedgerClient::with_interceptor(
            self.channel().await,
            ServiceToken::new(self.keys.clone(), "deposit-svc", &[SCOPE_LEDGER_WRITE]),
        )
    }
}

/// A snapshot as records, turned into a well-formed stream by [`Snapshot::parts`].
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Microseconds since the Unix epoch.
    pub as_of: i64,
    /// Ascending ISIN.
    pub instruments: Vec<pb::Instrument>,
    /// Ascending account number, holdings ascending ISIN.
    pub accounts: Vec<pb::SnapshotAccount>,
}

impl Snapshot {
    /// A day of accounts (ascending numbers) of `owner`, each holding `won` in `CASH` with a
    /// principal of as much: the fixture of the deposit and withdrawal tests.
    pub fn cash(as_of: i64, accounts: &[&str], owner: &str, won: i64) -> Self {
        Self {
            as_of,
            instruments: vec![pb::Instrument {
                isin: "CASH".into(),
                name: "현금".into(),
                asset_group: "채권 / 현금".into(),
            }],
            accounts: accounts
                .iter()
                .map(|number| pb::SnapshotAccount {
                    account_number: (*number).into(),
                    customer_name: owner.into(),
                    brokerage: "디셈버증권".into(),
                    account_name: "계좌".into(),
                    principal: won,
                    holdings: vec![pb::SnapshotHolding {
                        isin: "CASH".into(),
                        quantity: 1,
                        current_price: won,
                    }],
                })
                .collect(),
        }
    }

    /// The digest the header must carry.
    pub fn digest(&self) -> String {
        let mut digest = RecordDigest::new();
        for i in &self.instruments {
            digest.add(RecordKind::Instrument, i);
        }
        for a in &self.accounts {
            digest.add(RecordKind::Account, a);
        }
        digest.finish()
    }

    /// The header.
    pub fn header(&self) -> pb::SnapshotHeader {
        pb::SnapshotHeader {
            as_of: Some(invest_proto::time::from_micros(self.as_of)),
            digest: self.digest(),
            instrument_count: self.instruments.len() as i64,
            account_count: self.accounts.len() as i64,
            holding_count: self.accounts.iter().map(|a| a.holdings.len() as i64).sum(),
            rejects: Vec::new(),
        }
    }

    /// Header, then instruments, then accounts in batches of `batch`.
    pub fn parts(&self, batch: usize) -> Vec<pb::SnapshotPart> {
        let mut parts = vec![pb::SnapshotPart {
            part: Some(Part::Header(self.header())),
        }];
        parts.push(pb::SnapshotPart {
            part: Some(Part::Instruments(pb::InstrumentBatch {
                instruments: self.instruments.clone(),
            })),
        });
        for chunk in self.accounts.chunks(batch.max(1)) {
            parts.push(pb::SnapshotPart {
                part: Some(Part::Accounts(pb::AccountBatch {
                    accounts: chunk.to_vec(),
                })),
            });
        }
        parts
    }
}

/// The body of `GET path` on a plain HTTP/1.1 listener (the metrics endpoint), with headers.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}
