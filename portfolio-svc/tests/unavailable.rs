//! When the database is not there, calls answer UNAVAILABLE (never a panic, never INTERNAL),
//! and the server keeps running.

use std::time::Duration;

use diesel::{Connection, SqliteConnection, connection::SimpleConnection};
use invest_proto::{
    backend_tests,
    portfolio::v1 as pb,
    server::testkit::{Backend, TestDatabase},
    status::reason,
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
        Backend::Postgres => match std::env::var(invest_proto::server::testkit::POSTGRES_URL_VAR) {
            Ok(admin) => format!(
                "{}/database_that_does_not_exist",
                admin.rsplit_once('/').unwrap().0
            ),
            Err(_) => {
                eprintln!(
                    "SKIPPED on PostgreSQL: set {}",
                    invest_proto::server::testkit::POSTGRES_URL_VAR
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
        transfer_id: "t1".into(),
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
