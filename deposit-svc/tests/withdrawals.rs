//! Withdrawals over real gRPC: deposit-svc and portfolio-svc in-process on port 0 (two
//! deposit-svc replicas on PostgreSQL), on SQLite and PostgreSQL.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::Duration,
};

use deposit_svc::{
    clock::Clock,
    testkit::{Directory, TestDeposit, sign},
};
use invest_proto::{
    deposit::v1::{self as pb, WithdrawalStatus},
    portfolio::v1 as portfolio,
    status::reason,
};
use invest_runtime::{
    backend_tests,
    testkit::{Backend, TestDatabase},
};
use portfolio_svc::testkit::{Snapshot, TestPortfolio};
use tonic::Code;

const DAY: i64 = 86_400_000_000;
const RYU: &str = "류영길";
const LEE: &str = "이정희";
/// 500 won of `CASH` and 600 of a fund; principal 1,000.
const ACCOUNT: &str = "111111111111";

fn snapshot(as_of: i64) -> Snapshot {
    let holding = |isin: &str, quantity, current_price| portfolio::SnapshotHolding {
        isin: isin.into(),
        quantity,
        current_price,
    };
    let account = |number: &str, owner: &str, principal, holdings| portfolio::SnapshotAccount {
        account_number: number.into(),
        customer_name: owner.into(),
        brokerage: "디셈버증권".into(),
        account_name: "계좌1".into(),
        principal,
        holdings,
    };
    let instrument = |isin: &str, name: &str| portfolio::Instrument {
        isin: isin.into(),
        name: name.into(),
        asset_group: "그룹".into(),
    };
    Snapshot {
        as_of,
        instruments: vec![
            instrument("CASH", "현금"),
            instrument("KR7360750004", "미국S&P500"),
        ],
        accounts: vec![
            account(
                ACCOUNT,
                RYU,
                1_000,
                vec![holding("CASH", 1, 500), holding("KR7360750004", 3, 200)],
            ),
            account("222222222222", LEE, 70, vec![holding("CASH", 1, 70)]),
        ],
    }
}

struct World {
    portfolio: TestPortfolio,
    deposit: TestDeposit,
    /// A second deposit-svc on the same database (PostgreSQL only).
    other: Option<TestDeposit>,
    clock: Option<Arc<AtomicI64>>,
}

async fn world(backend: Backend, manual_clock: bool) -> Option<World> {
    let portfolio = TestPortfolio::spawn(backend).await?;
    let yesterday = invest_proto::time::now_micros() - DAY;
    portfolio.load(&snapshot(yesterday)).await;
    let db = TestDatabase::create(backend, "withdraw")?;
    let (clock, handle) = if manual_clock {
        let (clock, handle) = Clock::manual(invest_proto::time::now_micros());
        (clock, Some(handle))
    } else {
        (Clock::system(), None)
    };
    let shared = db.shared();
    let url = portfolio.url();
    let deposit = TestDeposit::spawn_on(db, &url, |c| {
        c.clock = clock.clone();
        c.max_signature_attempts = 3;
    })
    .await;
    let entries = snapshot(yesterday)
        .accounts
        .into_iter()
        .map(|a| pb::DirectoryEntry {
            account_number: a.account_number,
            customer_name: a.customer_name,
        })
        .collect();
    let directory = Directory {
        as_of: yesterday,
        entries,
    };
    deposit
        .directory()
        .await
        .load_directory(tokio_stream::iter(directory.parts(2)))
        .await
        .unwrap();
    let other = match backend {
        Backend::Postgres => Some(TestDeposit::spawn_on(shared, &url, |c| c.clock = clock).await),
        Backend::Sqlite => None,
    };
    Some(World {
        portfolio,
        deposit,
        other,
        clock: handle,
    })
}

fn refusal(status: &tonic::Status) -> (Code, Option<String>) {
    (status.code(), reason(status))
}

fn code(code: Code, reason: &str) -> (Code, Option<String>) {
    (code, Some(reason.to_owned()))
}

impl World {
    async fn detail(&self, owner: &str, account: &str) -> portfolio::AccountDetail {
        self.portfolio.account(owner, account).await
    }

    async fn available(&self) -> i64 {
        self.detail(RYU, ACCOUNT).await.available_cash
    }

    fn replica(&self, n: usize) -> &TestDeposit {
        match (&self.other, n % 2) {
            (Some(other), 1) => other,
            _ => &self.deposit,
        }
    }

    async fn register_on(
        &self,
        n: usize,
        amount: i64,
        request_id: &str,
    ) -> Result<String, tonic::Status> {
        self.replica(n)
            .withdrawals(RYU)
            .await
            .register_withdrawal(pb::RegisterWithdrawalRequest {
                account_number: ACCOUNT.into(),
                customer_name: RYU.into(),
                amount,
                request_id: request_id.into(),
            })
            .await
            .map(|r| r.into_inner().transfer_id)
    }

    async fn confirm_on(
        &self,
        n: usize,
        transfer_id: &str,
        amount: i64,
    ) -> Result<pb::Withdrawal, tonic::Status> {
        self.replica(n)
            .withdrawals(RYU)
            .await
            .confirm_withdrawal(pb::ConfirmWithdrawalRequest {
                transfer_id: transfer_id.into(),
                signature: sign(ACCOUNT, RYU, amount),
            })
            .await
            .map(|r| r.into_inner().withdrawal.unwrap())
    }

    async fn get(&self, transfer_id: &str) -> pb::Withdrawal {
        self.deposit
            .withdrawals(RYU)
            .await
            .get_withdrawal(pb::GetWithdrawalRequest {
                transfer_id: transfer_id.into(),
            })
            .await
            .unwrap()
            .into_inner()
    }

    /// Waits (bounded) until portfolio-svc has taken or released the withdrawal.
    async fn until_applied(&self, transfer_id: &str) -> pb::Withdrawal {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let withdrawal = self.get(transfer_id).await;
            if withdrawal.applied {
                return withdrawal;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not delivered within 30 s: {withdrawal:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Phase 1 holds, phase 2 takes once; the figures move as the contract says.
async fn two_phases_take_the_cash_once(backend: Backend) {
    let Some(w) = world(backend, false).await else {
        return;
    };
    assert_eq!(w.available().await, 500);
    let id = w.register_on(0, 300, "").await.unwrap();
    assert_eq!(w.available().await, 200, "held before phase 1 answers");
    let pending = w.get(&id).await;
    assert_eq!(pending.status, WithdrawalStatus::Pending as i32);

    let done = w.confirm_on(1, &id, 300).await.unwrap();
    // Phase 1 retried with its request id after phase 2: the same transfer, nothing held.
    let first = w.register_on(0, 100, "retry-after-confirm").await.unwrap();
    w.confirm_on(0, &first, 100).await.unwrap();
    assert_eq!(
        w.register_on(1, 100, "retry-after-confirm").await.unwrap(),
        first
    );
    assert_eq!(
        (done.status, done.applied),
        (WithdrawalStatus::Confirmed as i32, true)
    );
    let after = w.detail(RYU, ACCOUNT).await;
    assert_eq!(
        (
            after.principal,
            after.total_assets,
            after.total_profit,
            after.available_cash
        ),
        (600, 700, 100, 100)
    );
    // Again: the same answer, nothing taken twice.
    let again = w.confirm_on(0, &id, 300).await.unwrap();
    assert_eq!(again.transfer_id, id);
    assert_eq!(w.detail(RYU, ACCOUNT).await.principal, 600);
    let status = w
        .deposit
        .withdrawals(RYU)
        .await
        .cancel_withdrawal(pb::CancelWithdrawalRequest {
            transfer_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        refusal(&status),
        code(Code::FailedPrecondition, "NOT_CANCELLABLE")
    );
}

/// More than the available cash: FAILED_PRECONDITION, nothing held, nothing registered; the
/// same request id works once there is cash.
async fn insufficient_funds_holds_nothing(backend: Backend) {
    let Some(w) = world(backend, false).await else {
        return;
    };
    let status = w.register_on(0, 501, "try-1").await.unwrap_err();
    assert_eq!(
        refusal(&status),
        code(Code::FailedPrecondition, "INSUFFICIENT_FUNDS")
    );
    assert_eq!(w.available().await, 500);
    let listed = w
        .deposit
        .withdrawals(RYU)
        .await
        .list_withdrawals(pb::ListWithdrawalsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.withdrawals.is_empty(), "{listed:?}");
    // A request id retried with the same fields returns the same transfer, held once.
    let first = w.register_on(0, 200, "try-2").await.unwrap();
    let again = w.register_on(1, 200, "try-2").await.unwrap();
    assert_eq!(first, again);
    assert_eq!(w.available().await, 300);
    let status = w.register_on(0, 201, "try-2").await.unwrap_err();
    assert_eq!(
        refusal(&status),
        code(Code::AlreadyExists, "REQUEST_ID_REUSED")
    );
}

/// Cancel, the attempt limit and expiry each release the hold once.
async fn cancel_rejection_and_expiry_release_the_hold(backend: Backend) {
    let Some(w) = world(backend, true).await else {
        return;
    };
    let mut client = w.deposit.withdrawals(RYU).await;

    let cancelled = w.register_on(0, 100, "").await.unwrap();
    assert_eq!(w.available().await, 400);
    let answer = client
        .cancel_withdrawal(pb::CancelWithdrawalRequest {
            transfer_id: cancelled.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.status, WithdrawalStatus::Cancelled as i32);
    w.until_applied(&cancelled).await;
    assert_eq!(w.available().await, 500);
    let status = w.confirm_on(1, &cancelled, 100).await.unwrap_err();
    assert_eq!(
        refusal(&status),
        code(Code::FailedPrecondition, "TRANSFER_CANCELLED")
    );
    assert_eq!(w.available().await, 500);

    let rejected = w.register_on(0, 200, "").await.unwrap();
    assert_eq!(w.available().await, 300);
    for _ in 0..3 {
        let status = w.confirm_on(0, &rejected, 201).await.unwrap_err();
        assert_eq!(
            refusal(&status),
            code(Code::InvalidArgument, "SIGNATURE_MISMATCH")
        );
    }
    assert_eq!(
        w.get(&rejected).await.status,
        WithdrawalStatus::Rejected as i32
    );
    w.until_applied(&rejected).await;
    assert_eq!(w.available().await, 500);
    let status = w.confirm_on(0, &rejected, 200).await.unwrap_err();
    assert_eq!(
        refusal(&status),
        code(Code::FailedPrecondition, "TRANSFER_REJECTED")
    );

    let expired = w.register_on(0, 300, "").await.unwrap();
    assert_eq!(w.available().await, 200);
    let clock = w.clock.as_ref().unwrap();
    clock.fetch_add(DAY, Ordering::SeqCst);
    let status = w.confirm_on(0, &expired, 300).await.unwrap_err();
    assert_eq!(
        refusal(&status),
        code(Code::FailedPrecondition, "TRANSFER_EXPIRED")
    );
    w.until_applied(&expired).await;
    assert_eq!(
        w.get(&expired).await.status,
        WithdrawalStatus::Expired as i32
    );
    assert_eq!(w.available().await, 500);
    assert_eq!(
        w.detail(RYU, ACCOUNT).await.principal,
        1_000,
        "nothing taken"
    );
}

/// Another customer's account, another customer's transfer, and the wrong scope.
async fn only_the_owner_with_the_scope(backend: Backend) {
    let Some(w) = world(backend, false).await else {
        return;
    };
    let status = w
        .deposit
        .withdrawals(LEE)
        .await
        .register_withdrawal(pb::RegisterWithdrawalRequest {
            account_number: ACCOUNT.into(),
            customer_name: LEE.into(),
            amount: 1,
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let id = w.register_on(0, 100, "").await.unwrap();
    let status = w
        .deposit
        .withdrawals(LEE)
        .await
        .get_withdrawal(pb::GetWithdrawalRequest { transfer_id: id })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    // A deposits token does not withdraw.
    let mut wrong = pb::withdrawal_service_client::WithdrawalServiceClient::with_interceptor(
        w.deposit.channel().await,
        invest_proto::auth::ServiceToken::new(
            w.deposit.keys.clone(),
            RYU,
            &[invest_proto::auth::SCOPE_DEPOSITS_WRITE],
        ),
    );
    let status = wrong
        .register_withdrawal(pb::RegisterWithdrawalRequest {
            account_number: ACCOUNT.into(),
            customer_name: RYU.into(),
            amount: 1,
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(w.available().await, 400);
}

/// 200 withdrawals of 5 won ask for twice the account's 500 won while 40 deposits of 3 won
/// arrive, phase 1 and phase 2 on different replicas (PostgreSQL); a watcher reads the
/// available cash all along. The money taken never exceeds what was there, the available
/// cash is never negative, and the end figures are start + deposits - withdrawals taken.
async fn concurrent_withdrawals_never_overdraw(backend: Backend) {
    let Some(w) = world(backend, false).await else {
        return;
    };
    let w = Arc::new(w);
    let start = w.detail(RYU, ACCOUNT).await;
    let running = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (w, running) = (w.clone(), running.clone());
        tokio::spawn(async move {
            let mut reads = 0;
            while running.load(Ordering::SeqCst) {
                let available = w.available().await;
                assert!(available >= 0, "available cash {available}");
                reads += 1;
            }
            reads
        })
    };
    let mut tasks = Vec::new();
    for n in 0..200usize {
        let w = w.clone();
        tasks.push(tokio::spawn(async move {
            match w.register_on(n, 5, "").await {
                Ok(id) => {
                    let taken = w.confirm_on(n + 1, &id, 5).await.unwrap();
                    assert_eq!(taken.status, WithdrawalStatus::Confirmed as i32);
                    (5, 0)
                }
                Err(status) => {
                    assert_eq!(
                        refusal(&status),
                        code(Code::FailedPrecondition, "INSUFFICIENT_FUNDS")
                    );
                    (0, 0)
                }
            }
        }));
    }
    for n in 0..40usize {
        let w = w.clone();
        tasks.push(tokio::spawn(async move {
            let mut deposits = w.replica(n).deposits(RYU).await;
            let id = deposits
                .register_deposit(pb::RegisterDepositRequest {
                    account_number: ACCOUNT.into(),
                    customer_name: RYU.into(),
                    amount: 3,
                    request_id: String::new(),
                })
                .await
                .unwrap()
                .into_inner()
                .transfer_id;
            let mut other = w.replica(n + 1).deposits(RYU).await;
            other
                .confirm_deposit(pb::ConfirmDepositRequest {
                    transfer_id: id,
                    signature: sign(ACCOUNT, RYU, 3),
                })
                .await
                .unwrap();
            (0, 3)
        }));
    }
    let (mut taken, mut deposited) = (0, 0);
    for task in tasks {
        let (t, d) = task.await.unwrap();
        taken += t;
        deposited += d;
    }
    running.store(false, Ordering::SeqCst);
    assert!(watcher.await.unwrap() > 0);
    assert!(
        taken <= 500 + deposited,
        "took {taken} of {}",
        500 + deposited
    );
    assert!(
        taken >= 500,
        "every refusal saw less than 5 won: took {taken}"
    );
    let end = w.detail(RYU, ACCOUNT).await;
    assert_eq!(end.principal, start.principal + deposited - taken);
    assert_eq!(end.total_assets, start.total_assets + deposited - taken);
    assert_eq!(end.available_cash, 500 + deposited - taken);
}

backend_tests!(
    two_phases_take_the_cash_once,
    insufficient_funds_holds_nothing,
    cancel_rejection_and_expiry_release_the_hold,
    only_the_owner_with_the_scope,
    concurrent_withdrawals_never_overdraw,
);
