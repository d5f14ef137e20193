//! When the database is not there, calls answer UNAVAILABLE (never a panic, never INTERNAL),
//! and the server keeps running.

use std::time::Duration;

use diesel::{Connection, SqliteConnection, connection::SimpleConnection};
use invest_proto::{portfolio::v1 as pb, status::reason};
use invest_runtime::{
    backend_tests,
    testkit::{Backend, TestDatabase},
};
use portfolio_svc::testkit::{Snapshot, TestPortfolio, test_config};
use tonic::Code;

fn day() -> Snapshot {
    Snapshot {
        as_of: 1_795_000_000_000_000,
        instruments: vec![pb::Instrument {
            isin: "CASH".into(),
            name: "현금".into(),
            asset_group: "채권 / 현금".into(),
        }],
        accounts: vec![pb::SnapshotAccount {
            account_number: "111111111111".into(),
            customer_name: "이정희".into(),
            brokerage: "디셈버증권".into(),
            account_name: "계좌1".into(),
            principal: 10,
            holdings: vec![pb::SnapshotHolding {
                isin: "CASH".into(),
                quantity: 1,
                current_price: 10,
            }],
        }],
    }
}

async fn a_database_that_never_comes_answers_unavailable(backend: Backend) {
    let url = match backend {
        Backend::Sqlite => "sqlite:///nonexistent-folder/for/sure/portfolio.db".to_owned(),
        Backend::Postgres => match std::env::var(invest_runtime::testkit::POSTGRES_URL_VAR) {
            Ok(admin) => format!(
                "{}/database_that_does_not_exist",
                admin.rsplit_once('/').unwrap().0
            ),
            Err(_) => {
                eprintln!(
                    "SKIPPED on PostgreSQL: set {}",
                    invest_runtime::testkit::POSTGRES_URL_VAR
                );
                return;
            }
        },
    };
    let server = portfolio_svc::start(test_config(&url)).await.unwrap();
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(
        status.into_inner().status,
        tonic_health::pb::health_check_response::ServingStatus::NotServing as i32
    );
    // Not ready, but alive: a liveness probe does not restart it during a database outage.
    let alive = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "liveness".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        alive.into_inner().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let keys = std::sync::Arc::new(invest_proto::auth::JwtKeys::from_secret(
        portfolio_svc::testkit::TEST_SECRET.as_bytes(),
    ));
    let mut client = pb::portfolio_service_client::PortfolioServiceClient::with_interceptor(
        channel,
        invest_proto::auth::ServiceToken::new(
            keys,
            "이정희",
            &[invest_proto::auth::SCOPE_ACCOUNTS_READ],
        ),
    );
    let status = client
        .list_accounts(pb::ListAccountsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_deref()),
        (Code::Unavailable, Some("NOT_READY"))
    );
    server.shutdown();
}

async fn losing_the_database_answers_unavailable(backend: Backend) {
    let Some(db) = TestDatabase::create(backend, "portfolio") else {
        return;
    };
    let path = db.url().trim_start_matches("sqlite://").to_owned();
    let app =
        TestPortfolio::spawn_on(db, |c| c.server.db_acquire_timeout = Duration::from_secs(1)).await;
    app.ingest()
        .await
        .load_snapshot(tokio_stream::iter(day().parts(1)))
        .await
        .unwrap();
    let mut ledger = app.ledger().await;
    let credit = pb::ApplyDepositRequest {
        transfer_id: "00000000000000000000000000007431".into(),
        account_number: "111111111111".into(),
        amount: 5,
        confirmed_at: Some(invest_proto::time::from_micros(1_795_000_000_000_001)),
    };

    let status = match backend {
        // Another process holds the write lock longer than the busy timeout.
        Backend::Sqlite => {
            let mut other = SqliteConnection::establish(&path).unwrap();
            other.batch_execute("BEGIN EXCLUSIVE").unwrap();
            let status = ledger.apply_deposit(credit.clone()).await.unwrap_err();
            other.batch_execute("ROLLBACK").unwrap();
            status
        }
        // The database goes away under the server.
        Backend::Postgres => {
            app.db.drop_now();
            app.screens("이정희")
                .await
                .get_account(pb::GetAccountRequest {
                    account_number: "111111111111".into(),
                })
                .await
                .unwrap_err()
        }
    };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        reason(&status).unwrap().starts_with("DATABASE_"),
        "{status:?}"
    );

    if backend == Backend::Sqlite {
        // The lock is gone: the same credit goes through, once.
        assert!(
            !ledger
                .apply_deposit(credit.clone())
                .await
                .unwrap()
                .into_inner()
                .already_applied
        );
        assert!(
            ledger
                .apply_deposit(credit)
                .await
                .unwrap()
                .into_inner()
                .already_applied
        );
    }
}

backend_tests!(
    a_database_that_never_comes_answers_unavailable,
    losing_the_database_answers_unavailable
);

/// The admin URL of the PostgreSQL tests, or `None` (said on stderr) when there is none.
fn postgres_admin() -> Option<String> {
    let url = std::env::var(invest_runtime::testkit::POSTGRES_URL_VAR).ok();
    if url.is_none() {
        // TestDatabase::create says SKIPPED (or fails when PostgreSQL is required).
        let _ = TestDatabase::create(Backend::Postgres, "portfolio");
    }
    url
}

/// `postgres://user@HOST:PORT/db` → (`HOST:PORT` as an address, the database name).
fn host_and_database(url: &str) -> (std::net::SocketAddr, String) {
    let after_scheme = &url[url.find("://").unwrap() + 3..];
    let authority_end = after_scheme.find('/').unwrap_or(after_scheme.len());
    let host = host_of(url);
    let host = if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:5432")
    };
    let database = after_scheme[authority_end..]
        .trim_start_matches('/')
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&host)
        .unwrap()
        .next()
        .unwrap();
    (addr, database)
}

/// The `HOST[:PORT]` of a PostgreSQL URL.
fn host_of(url: &str) -> &str {
    let after_scheme = &url[url.find("://").unwrap() + 3..];
    let authority = &after_scheme[..after_scheme.find('/').unwrap_or(after_scheme.len())];
    authority.rsplit('@').next().unwrap()
}

async fn health_watch(
    addr: std::net::SocketAddr,
) -> tonic::Streaming<tonic_health::pb::HealthCheckResponse> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    tonic_health::pb::health_client::HealthClient::new(channel)
        .watch(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn until_status(
    watch: &mut tonic::Streaming<tonic_health::pb::HealthCheckResponse>,
    wanted: tonic_health::pb::health_check_response::ServingStatus,
) {
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(status) = watch.message().await.unwrap() {
            if status.status == wanted as i32 {
                return;
            }
        }
        panic!("the health stream ended");
    })
    .await
    .unwrap_or_else(|_| panic!("health did not turn {wanted:?} within 30 s"));
}

/// Health follows the database: NOT_SERVING while PostgreSQL does not answer (so that
/// readiness takes the replica out), SERVING again when it does. (On SQLite the database is a
/// file of the process itself; there is no outage of that kind to report.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_database_on_postgres() {
    use invest_runtime::testkit::{Proxy, ProxyMode};
    use tonic_health::pb::health_check_response::ServingStatus;
    if postgres_admin().is_none() {
        return;
    }
    let db = TestDatabase::create(Backend::Postgres, "portfolio").unwrap();
    let (postgres, _) = host_and_database(db.url());
    let proxy = Proxy::start(postgres, ProxyMode::Up).await;
    let proxied = db
        .url()
        .replacen(host_of(db.url()), &proxy.addr.to_string(), 1);
    let mut config = test_config(&proxied);
    config.server.health_check_interval = Duration::from_millis(100);
    config.server.db_acquire_timeout = Duration::from_millis(500);
    let server = portfolio_svc::start(config).await.unwrap();
    tokio::time::timeout(Duration::from_secs(60), server.ready())
        .await
        .unwrap();
    let mut watch = health_watch(server.addr).await;
    until_status(&mut watch, ServingStatus::Serving).await;
    proxy.set(ProxyMode::Down);
    until_status(&mut watch, ServingStatus::NotServing).await;
    proxy.set(ProxyMode::Up);
    until_status(&mut watch, ServingStatus::Serving).await;
    server.shutdown();
}

/// A database that refuses writes (a hot standby, `default_transaction_read_only`) answers a
/// write UNAVAILABLE with the reason `DATABASE_READ_ONLY`, never INTERNAL; the write goes
/// through once it is writable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_answers_unavailable_on_postgres() {
    use diesel::{PgConnection, RunQueryDsl};
    let Some(admin) = postgres_admin() else {
        return;
    };
    let db = TestDatabase::create(Backend::Postgres, "portfolio").unwrap();
    let (_, name) = host_and_database(db.url());
    let app = TestPortfolio::spawn_on(db, |_| {}).await;
    app.ingest()
        .await
        .load_snapshot(tokio_stream::iter(day().parts(1)))
        .await
        .unwrap();
    let mut admin = PgConnection::establish(&admin).unwrap();
    let mut set_read_only = |on: bool| {
        let setting = if on {
            "SET default_transaction_read_only = on"
        } else {
            "RESET default_transaction_read_only"
        };
        diesel::sql_query(format!("ALTER DATABASE \"{name}\" {setting}"))
            .execute(&mut admin)
            .unwrap();
        // Sessions take the setting when they start: end the server's.
        diesel::sql_query(format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        ))
        .execute(&mut admin)
        .unwrap();
    };
    set_read_only(true);
    let mut ledger = app.ledger().await;
    let credit = pb::ApplyDepositRequest {
        transfer_id: "000000000000000000000000000000aa".into(),
        account_number: "111111111111".into(),
        amount: 5,
        confirmed_at: Some(invest_proto::time::from_micros(1_795_000_000_000_001)),
    };
    let mut reasons = Vec::new();
    for _ in 0..20 {
        let status = ledger.apply_deposit(credit.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        let reason = reason(&status).unwrap();
        reasons.push(reason.clone());
        if reason == "DATABASE_READ_ONLY" {
            break;
        }
    }
    // The first calls may meet the sessions that were just ended (DATABASE_UNAVAILABLE).
    assert_eq!(
        reasons.last().map(String::as_str),
        Some("DATABASE_READ_ONLY"),
        "{reasons:?}"
    );
    set_read_only(false);
    let mut applied = None;
    for _ in 0..20 {
        if let Ok(response) = ledger.apply_deposit(credit.clone()).await {
            applied = Some(response.into_inner().already_applied);
            break;
        }
    }
    assert_eq!(applied, Some(false), "credited once it is writable again");
}
