//! deposit-svc as a real process, killed with SIGKILL after a confirmation was committed and
//! before it was delivered: after a restart the deposit lands in portfolio-svc exactly once,
//! and a withdrawal held before a kill and confirmed before another is taken exactly once.

use std::time::Duration;

use deposit_svc::testkit::{
    Directory, Proxy, ProxyMode, TEST_SECRET, deposits_client, sign, withdrawals_client,
};
use invest_proto::{
    auth::{SCOPE_INGEST_WRITE, ServiceToken},
    deposit::v1::{
        self as pb, DepositStatus, WithdrawalStatus, directory_ingest_client::DirectoryIngestClient,
    },
    portfolio::v1 as portfolio,
};
use invest_runtime::{
    backend_tests,
    testkit::{Backend, ServerProcess, TestDatabase},
};
use portfolio_svc::testkit::{Snapshot, TestPortfolio};

const ACCOUNT: &str = "111111111111";
const OWNER: &str = "류영길";

/// Starts the deposit-svc binary and waits until it reports SERVING.
async fn start(database_url: &str, portfolio_url: &str) -> ServerProcess {
    ServerProcess::start(
        env!("CARGO_BIN_EXE_deposit-svc"),
        &[
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--database-url",
            database_url,
            "--portfolio-url",
            portfolio_url,
            "--delivery-timeout",
            "5s",
            "--delivery-lease",
            "6s",
            "--delivery-max-backoff",
            "200ms",
            "--delivery-poll",
            "50ms",
        ],
        TEST_SECRET,
    )
    .await
}

async fn principal(portfolio: &TestPortfolio) -> i64 {
    portfolio
        .screens(OWNER)
        .await
        .get_account(portfolio::GetAccountRequest {
            account_number: ACCOUNT.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .principal
}

/// portfolio-svc with one account of 1,000 won in `CASH` (principal 1,000), and a fresh
/// database for deposit-svc; `None` when the backend is not available here.
async fn setup(backend: Backend) -> Option<(TestPortfolio, TestDatabase, i64)> {
    let portfolio = TestPortfolio::spawn(backend).await?;
    let db = TestDatabase::create(backend, "deposit")?;
    let as_of = invest_proto::time::now_micros() - 86_400_000_000;
    let day = Snapshot::cash(as_of, &[ACCOUNT], OWNER, 1_000);
    portfolio.load(&day).await;
    Some((portfolio, db, as_of))
}

/// Loads the directory of the one account into the deposit-svc at `url`.
async fn load_directory(url: &str, portfolio: &TestPortfolio, as_of: i64) {
    let directory = Directory {
        as_of,
        entries: vec![pb::DirectoryEntry {
            account_number: ACCOUNT.into(),
            customer_name: OWNER.into(),
        }],
    };
    DirectoryIngestClient::with_interceptor(
        deposit_svc::testkit::connect(url).await,
        ServiceToken::new(portfolio.keys.clone(), "loader", &[SCOPE_INGEST_WRITE]),
    )
    .load_directory(tokio_stream::iter(directory.parts(10)))
    .await
    .unwrap();
}

async fn killed_after_confirmation_delivers_once_after_restart(backend: Backend) {
    let Some((portfolio, db, as_of)) = setup(backend).await else {
        return;
    };
    // portfolio-svc hangs: the confirmation commits, its delivery never gets an answer.
    let proxy = Proxy::start(portfolio.server.addr, ProxyMode::Hang).await;

    let mut first = start(db.url(), &proxy.url()).await;
    load_directory(&first.url(), &portfolio, as_of).await;

    let mut client = deposits_client(&first.url(), &portfolio.keys, OWNER).await;
    let transfer = client
        .register_deposit(pb::RegisterDepositRequest {
            account_number: ACCOUNT.into(),
            customer_name: OWNER.into(),
            amount: 777,
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .transfer_id;
    let confirming = {
        let mut client = client.clone();
        let request = pb::ConfirmDepositRequest {
            transfer_id: transfer.clone(),
            signature: sign(ACCOUNT, OWNER, 777),
        };
        tokio::spawn(async move { client.confirm_deposit(request).await })
    };
    // Wait until the confirmation is committed (its delivery is now hanging), then kill.
    loop {
        let deposit = client
            .get_deposit(pb::GetDepositRequest {
                transfer_id: transfer.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        if deposit.status == DepositStatus::Confirmed as i32 {
            assert!(!deposit.applied);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.child.start_kill().unwrap();
    first.child.wait().await.unwrap();
    assert!(
        confirming.await.unwrap().is_err(),
        "the killed server never answered"
    );
    assert_eq!(principal(&portfolio).await, 1_000, "nothing credited yet");

    // portfolio-svc is back; a new process on the same database finishes the job.
    proxy.set(ProxyMode::Up);
    let second = start(db.url(), &proxy.url()).await;
    let mut client = deposits_client(&second.url(), &portfolio.keys, OWNER).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let deposit = client
            .get_deposit(pb::GetDepositRequest {
                transfer_id: transfer.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        if deposit.applied {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not delivered after the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        principal(&portfolio).await,
        1_000 + 777,
        "credited exactly once"
    );
}

async fn detail(portfolio: &TestPortfolio) -> portfolio::AccountDetail {
    portfolio.account(OWNER, ACCOUNT).await
}

/// A withdrawal held by one deposit-svc process, which is then killed (between hold and
/// take); confirmed through a second while portfolio-svc hangs, which is killed too while
/// the take waits for an answer; a third process, with portfolio-svc back, takes it: once.
async fn withdrawal_killed_between_hold_and_take_is_taken_once(backend: Backend) {
    let Some((portfolio, db, as_of)) = setup(backend).await else {
        return;
    };
    let proxy = Proxy::start(portfolio.server.addr, ProxyMode::Up).await;
    let mut first = start(db.url(), &proxy.url()).await;
    load_directory(&first.url(), &portfolio, as_of).await;
    let mut client = withdrawals_client(&first.url(), &portfolio.keys, OWNER).await;
    let transfer = client
        .register_withdrawal(pb::RegisterWithdrawalRequest {
            account_number: ACCOUNT.into(),
            customer_name: OWNER.into(),
            amount: 400,
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .transfer_id;
    assert_eq!(detail(&portfolio).await.available_cash, 600, "held");
    first.child.start_kill().unwrap();
    first.child.wait().await.unwrap();

    // Phase 2 through another process while portfolio-svc hangs: the confirmation commits,
    // the take waits for an answer; kill that process too.
    proxy.set(ProxyMode::Hang);
    let mut second = start(db.url(), &proxy.url()).await;
    let mut client = withdrawals_client(&second.url(), &portfolio.keys, OWNER).await;
    let confirming = {
        let mut client = client.clone();
        let request = pb::ConfirmWithdrawalRequest {
            transfer_id: transfer.clone(),
            signature: sign(ACCOUNT, OWNER, 400),
        };
        tokio::spawn(async move { client.confirm_withdrawal(request).await })
    };
    loop {
        let withdrawal = client
            .get_withdrawal(pb::GetWithdrawalRequest {
                transfer_id: transfer.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        if withdrawal.status == WithdrawalStatus::Confirmed as i32 {
            assert!(!withdrawal.applied);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    second.child.start_kill().unwrap();
    second.child.wait().await.unwrap();
    assert!(
        confirming.await.unwrap().is_err(),
        "the killed server never answered"
    );
    let held = detail(&portfolio).await;
    assert_eq!(
        (held.principal, held.available_cash),
        (1_000, 600),
        "held, not taken yet"
    );

    proxy.set(ProxyMode::Up);
    let third = start(db.url(), &proxy.url()).await;
    let mut client = withdrawals_client(&third.url(), &portfolio.keys, OWNER).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let withdrawal = client
            .get_withdrawal(pb::GetWithdrawalRequest {
                transfer_id: transfer.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        if withdrawal.applied {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not taken after the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let taken = detail(&portfolio).await;
    assert_eq!(
        (taken.principal, taken.total_assets, taken.available_cash),
        (600, 600, 600),
        "taken exactly once"
    );
}

backend_tests!(
    killed_after_confirmation_delivers_once_after_restart,
    withdrawal_killed_between_hold_and_take_is_taken_once,
);
