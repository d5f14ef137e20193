//! The bank invariant, Jepsen style: one customer with several accounts, random deposits and
//! withdrawals from several workers through deposit-svc processes (two on PostgreSQL, one on
//! SQLite) that are killed with SIGKILL and restarted while it runs, and a watcher reading
//! every account's available cash all along. At the end every account's figures in
//! portfolio-svc equal its starting figures plus the deposits minus the withdrawals that
//! deposit-svc has CONFIRMED, to the won, nothing was ever negative, and so the total over
//! the accounts is exact. Bounded: about 6 s of operations, 127.0.0.1 only.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use deposit_svc::testkit::{
    Directory, TEST_SECRET, connect, deposits_client, sign, withdrawals_client,
};
use invest_proto::{
    auth::{SCOPE_DEPOSITS_WRITE, SCOPE_INGEST_WRITE, SCOPE_WITHDRAWALS_WRITE, ServiceToken},
    deposit::v1::{
        self as pb, DepositStatus, WithdrawalStatus, deposit_service_client::DepositServiceClient,
        directory_ingest_client::DirectoryIngestClient,
        withdrawal_service_client::WithdrawalServiceClient,
    },
    portfolio::v1 as portfolio,
};
use invest_runtime::{
    backend_tests,
    testkit::{Backend, ServerProcess, TestDatabase},
};
use portfolio_svc::testkit::{Snapshot, TestPortfolio};
use rand::Rng as _;

const OWNER: &str = "류영길";
const ACCOUNTS: [&str; 4] = [
    "100000000001",
    "100000000002",
    "100000000003",
    "100000000004",
];
const START_CASH: i64 = 1_000;
const RUN: Duration = Duration::from_secs(6);
const WORKERS: usize = 6;

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
            "2s",
            "--delivery-lease",
            "3s",
            "--delivery-max-backoff",
            "200ms",
            "--delivery-poll",
            "50ms",
        ],
        TEST_SECRET,
    )
    .await
}

/// A channel that connects when used (the replica may be down: then the call fails).
fn lazy(url: &str) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(url.to_owned())
        .expect("a valid URL")
        .connect_lazy()
}

fn token(keys: &Arc<invest_proto::auth::JwtKeys>, scope: &'static str) -> ServiceToken {
    ServiceToken::new(keys.clone(), OWNER, &[scope])
}

/// One random operation through the replica at `url`: a deposit or a withdrawal of a random
/// amount on a random account, both phases (the second on whichever replica is up then).
/// Any failure is fine: the truth is what deposit-svc recorded, read at the end.
async fn operate(urls: &RwLock<Vec<String>>, keys: &Arc<invest_proto::auth::JwtKeys>) {
    let (account, amount, deposit, first, second) = {
        let mut rng = rand::rng();
        let urls = urls.read().unwrap();
        (
            ACCOUNTS[rng.random_range(0..ACCOUNTS.len())],
            rng.random_range(1..=400i64),
            rng.random_bool(0.4),
            urls[rng.random_range(0..urls.len())].clone(),
            urls[rng.random_range(0..urls.len())].clone(),
        )
    };
    let signature = sign(account, OWNER, amount);
    if deposit {
        let Ok(registered) =
            DepositServiceClient::with_interceptor(lazy(&first), token(keys, SCOPE_DEPOSITS_WRITE))
                .register_deposit(pb::RegisterDepositRequest {
                    account_number: account.into(),
                    customer_name: OWNER.into(),
                    amount,
                    request_id: String::new(),
                })
                .await
        else {
            return;
        };
        let _ = DepositServiceClient::with_interceptor(
            lazy(&second),
            token(keys, SCOPE_DEPOSITS_WRITE),
        )
        .confirm_deposit(pb::ConfirmDepositRequest {
            transfer_id: registered.into_inner().transfer_id,
            signature,
        })
        .await;
    } else {
        let Ok(registered) = WithdrawalServiceClient::with_interceptor(
            lazy(&first),
            token(keys, SCOPE_WITHDRAWALS_WRITE),
        )
        .register_withdrawal(pb::RegisterWithdrawalRequest {
            account_number: account.into(),
            customer_name: OWNER.into(),
            amount,
            request_id: String::new(),
        })
        .await
        else {
            return;
        };
        let _ = WithdrawalServiceClient::with_interceptor(
            lazy(&second),
            token(keys, SCOPE_WITHDRAWALS_WRITE),
        )
        .confirm_withdrawal(pb::ConfirmWithdrawalRequest {
            transfer_id: registered.into_inner().transfer_id,
            signature,
        })
        .await;
    }
}

async fn the_bank_balances_through_kills(backend: Backend) {
    let Some(portfolio) = TestPortfolio::spawn(backend).await else {
        return;
    };
    let Some(db) = TestDatabase::create(backend, "bank") else {
        return;
    };
    let as_of = invest_proto::time::now_micros() - 86_400_000_000;
    let day = Snapshot::cash(as_of, &ACCOUNTS, OWNER, START_CASH);
    portfolio.load(&day).await;
    let keys = portfolio.keys.clone();
    let replicas = match backend {
        Backend::Postgres => 2,
        Backend::Sqlite => 1,
    };
    let mut processes = Vec::new();
    for _ in 0..replicas {
        processes.push(start(db.url(), &portfolio.url()).await);
    }
    DirectoryIngestClient::with_interceptor(
        connect(&processes[0].url()).await,
        ServiceToken::new(keys.clone(), "loader", &[SCOPE_INGEST_WRITE]),
    )
    .load_directory(tokio_stream::iter(
        Directory {
            as_of,
            entries: ACCOUNTS
                .iter()
                .map(|number| pb::DirectoryEntry {
                    account_number: (*number).into(),
                    customer_name: OWNER.into(),
                })
                .collect(),
        }
        .parts(10),
    ))
    .await
    .unwrap();
    let urls = Arc::new(RwLock::new(
        processes.iter().map(ServerProcess::url).collect::<Vec<_>>(),
    ));

    let running = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (running, portfolio_url) = (running.clone(), portfolio.url());
        let keys = keys.clone();
        tokio::spawn(async move {
            let mut screens =
                portfolio::portfolio_service_client::PortfolioServiceClient::with_interceptor(
                    connect(&portfolio_url).await,
                    ServiceToken::new(keys, OWNER, &[invest_proto::auth::SCOPE_ACCOUNTS_READ]),
                );
            let mut reads = 0u64;
            while running.load(Ordering::SeqCst) {
                for account in ACCOUNTS {
                    let detail = screens
                        .get_account(portfolio::GetAccountRequest {
                            account_number: account.into(),
                        })
                        .await
                        .unwrap()
                        .into_inner();
                    assert!(detail.available_cash >= 0, "{detail:?}");
                    assert!(detail.total_assets >= 0, "{detail:?}");
                    reads += 1;
                }
            }
            reads
        })
    };
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (urls, keys, running) = (urls.clone(), keys.clone(), running.clone());
            tokio::spawn(async move {
                while running.load(Ordering::SeqCst) {
                    operate(&urls, &keys).await;
                }
            })
        })
        .collect();

    // Kill a replica every ~1.2 s and start it again on the same database.
    let deadline = tokio::time::Instant::now() + RUN;
    let mut kills = 0;
    let mut victim = 0;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        let process = &mut processes[victim];
        process.child.start_kill().unwrap();
        process.child.wait().await.unwrap();
        kills += 1;
        let restarted = start(db.url(), &portfolio.url()).await;
        urls.write().unwrap()[victim] = restarted.url();
        processes[victim] = restarted;
        victim = (victim + 1) % processes.len();
    }
    running.store(false, Ordering::SeqCst);
    for worker in workers {
        worker.await.unwrap();
    }
    assert!(watcher.await.unwrap() > 0);
    assert!(kills >= 3, "{kills} kills");

    // Close what is still pending (releasing its hold), then wait until portfolio-svc has
    // been told about everything.
    let url = processes[0].url();
    let mut deposits = deposits_client(&url, &keys, OWNER).await;
    let mut withdrawals = withdrawals_client(&url, &keys, OWNER).await;
    let list_withdrawals =
        |client: &mut pb::withdrawal_service_client::WithdrawalServiceClient<_>| {
            let mut client = client.clone();
            async move {
                let mut all = Vec::new();
                let mut token = String::new();
                loop {
                    let page = client
                        .list_withdrawals(pb::ListWithdrawalsRequest {
                            page_size: 500,
                            page_token: token,
                            ..Default::default()
                        })
                        .await
                        .unwrap()
                        .into_inner();
                    all.extend(page.withdrawals);
                    if page.next_page_token.is_empty() {
                        return all;
                    }
                    token = page.next_page_token;
                }
            }
        };
    for w in list_withdrawals(&mut withdrawals).await {
        if w.status == WithdrawalStatus::Pending as i32 {
            withdrawals
                .cancel_withdrawal(pb::CancelWithdrawalRequest {
                    transfer_id: w.transfer_id,
                })
                .await
                .unwrap();
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (all_deposits, all_withdrawals) = loop {
        let mut all_deposits = Vec::new();
        let mut token = String::new();
        loop {
            let page = deposits
                .list_deposits(pb::ListDepositsRequest {
                    page_size: 500,
                    page_token: token,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            all_deposits.extend(page.deposits);
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        let all_withdrawals = list_withdrawals(&mut withdrawals).await;
        let settled = all_deposits
            .iter()
            .filter(|d| d.status == DepositStatus::Confirmed as i32)
            .all(|d| d.applied)
            && all_withdrawals.iter().all(|w| w.applied);
        if settled {
            break (all_deposits, all_withdrawals);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "deliveries did not settle within a minute"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let mut expected: HashMap<&str, i64> = ACCOUNTS.iter().map(|a| (*a, START_CASH)).collect();
    let mut confirmed = (0, 0);
    for d in all_deposits
        .iter()
        .filter(|d| d.status == DepositStatus::Confirmed as i32)
    {
        *expected.get_mut(d.account_number.as_str()).unwrap() += d.amount;
        confirmed.0 += 1;
    }
    for w in all_withdrawals
        .iter()
        .filter(|w| w.status == WithdrawalStatus::Confirmed as i32)
    {
        *expected.get_mut(w.account_number.as_str()).unwrap() -= w.amount;
        confirmed.1 += 1;
    }
    assert!(
        confirmed.0 > 0 && confirmed.1 > 0,
        "the run confirmed deposits and withdrawals: {confirmed:?}"
    );
    let (mut total, mut expected_total) = (0, 0);
    for account in ACCOUNTS {
        let detail = portfolio.account(OWNER, account).await;
        let want = expected[account];
        assert!(want >= 0, "{account} overdrawn: {want}");
        assert_eq!(
            (detail.principal, detail.total_assets, detail.available_cash),
            (want, want, want),
            "{account}: the figures are the sum of its confirmed transfers"
        );
        total += detail.total_assets;
        expected_total += want;
    }
    assert_eq!(total, expected_total);
}

backend_tests!(the_bank_balances_through_kills);
