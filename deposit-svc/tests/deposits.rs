//! The two-phase deposit over real gRPC: deposit-svc and portfolio-svc in-process on port 0,
//! portfolio-svc behind a proxy that a test takes down and up, on SQLite and PostgreSQL.

use std::{
    sync::{Arc, atomic::AtomicI64, atomic::Ordering},
    time::Duration,
};

use deposit_svc::{
    clock::Clock,
    testkit::{Directory, Proxy, ProxyMode, TestDeposit, sign},
};
use invest_proto::{
    deposit::v1::{self as pb, DepositStatus},
    portfolio::v1 as portfolio,
    status::{bad_fields, reason},
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
const RYU_ACCOUNT: &str = "111111111111";

struct World {
    portfolio: TestPortfolio,
    proxy: Proxy,
    deposit: TestDeposit,
    /// Set when the test drives deposit-svc's clock.
    clock: Option<Arc<AtomicI64>>,
    /// The as_of of the loaded snapshot and directory.
    as_of: i64,
}

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
    Snapshot {
        as_of,
        instruments: vec![
            portfolio::Instrument {
                isin: "CASH".into(),
                name: "현금".into(),
                asset_group: "채권 / 현금".into(),
            },
            portfolio::Instrument {
                isin: "KR7360750004".into(),
                name: "미국S&P500".into(),
                asset_group: "미국 주식".into(),
            },
        ],
        accounts: vec![
            account(
                RYU_ACCOUNT,
                RYU,
                1_000,
                vec![holding("CASH", 1, 500), holding("KR7360750004", 3, 200)],
            ),
            account(
                "222222222222",
                LEE,
                2_000,
                vec![holding("KR7360750004", 10, 200)],
            ),
            account("333333333333", LEE, 0, vec![holding("CASH", 1, 70)]),
        ],
    }
}

fn directory(as_of: i64) -> Directory {
    Directory {
        as_of,
        entries: snapshot(as_of)
            .accounts
            .into_iter()
            .map(|a| pb::DirectoryEntry {
                account_number: a.account_number,
                customer_name: a.customer_name,
            })
            .collect(),
    }
}

async fn world(backend: Backend, manual_clock: bool) -> Option<World> {
    let portfolio = TestPortfolio::spawn(backend).await?;
    let yesterday = invest_proto::time::now_micros() - DAY;
    portfolio
        .ingest()
        .await
        .load_snapshot(tokio_stream::iter(snapshot(yesterday).parts(10)))
        .await
        .unwrap();
    let proxy = Proxy::start(portfolio.server.addr, ProxyMode::Up).await;
    let db = TestDatabase::create(backend, "deposit")?;
    let (clock, handle) = if manual_clock {
        let (clock, handle) = Clock::manual(invest_proto::time::now_micros());
        (clock, Some(handle))
    } else {
        (Clock::system(), None)
    };
    let deposit = TestDeposit::spawn_on(db, &proxy.url(), |c| {
        c.clock = clock;
        c.max_amount = 1_000_000;
    })
    .await;
    deposit
        .directory()
        .await
        .load_directory(tokio_stream::iter(directory(yesterday).parts(2)))
        .await
        .unwrap();
    Some(World {
        portfolio,
        proxy,
        deposit,
        clock: handle,
        as_of: yesterday,
    })
}

impl World {
    async fn account(&self, owner: &str, number: &str) -> portfolio::AccountDetail {
        self.portfolio
            .screens(owner)
            .await
            .get_account(portfolio::GetAccountRequest {
                account_number: number.into(),
            })
            .await
            .unwrap()
            .into_inner()
    }

    async fn cash(&self, owner: &str, number: &str) -> Option<portfolio::Holding> {
        self.portfolio
            .screens(owner)
            .await
            .list_holdings(portfolio::ListHoldingsRequest {
                account_number: number.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .holdings
            .into_iter()
            .find(|h| h.isin == "CASH")
    }

    async fn register(&self, owner: &str, account: &str, amount: i64) -> String {
        self.deposit
            .deposits(owner)
            .await
            .register_deposit(pb::RegisterDepositRequest {
                account_number: account.into(),
                customer_name: owner.into(),
                amount,
                request_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .transfer_id
    }

    async fn confirm(
        &self,
        owner: &str,
        transfer_id: &str,
        signature: String,
    ) -> Result<pb::Deposit, tonic::Status> {
        self.deposit
            .deposits(owner)
            .await
            .confirm_deposit(pb::ConfirmDepositRequest {
                transfer_id: transfer_id.into(),
                signature,
            })
            .await
            .map(|r| r.into_inner().deposit.unwrap())
    }

    async fn get(&self, owner: &str, transfer_id: &str) -> pb::Deposit {
        self.deposit
            .deposits(owner)
            .await
            .get_deposit(pb::GetDepositRequest {
                transfer_id: transfer_id.into(),
            })
            .await
            .unwrap()
            .into_inner()
    }

    /// Waits (bounded) until the background delivery has credited the transfer.
    async fn until_applied(&self, owner: &str, transfer_id: &str) -> pb::Deposit {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let deposit = self.get(owner, transfer_id).await;
            if deposit.applied {
                return deposit;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not delivered within 30 s: {deposit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn two_phases_credit_the_account(backend: Backend) {
    let Some(w) = world(backend, false).await else {
        return;
    };
    let before = w.account(RYU, RYU_ACCOUNT).await;
    let cash_before = w.cash(RYU, RYU_ACCOUNT).await.unwrap();

    let registered = w
        .deposit
        .deposits(RYU)
        .await
        .register_deposit(pb::RegisterDepositRequest {
            account_number: RYU_ACCOUNT.into(),
            customer_name: RYU.into(),
            amount: 1_000,
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(registered.transfer_id.len(), 32);
    let pending = w.get(RYU, &registered.transfer_id).await;
    assert_eq!(pending.status, DepositStatus::Pending as i32);
    assert!(!pending.applied);

    // The signature exactly as the contract shows it: printf '%s' '<account><name><amount>' | b3sum
    let deposit = w
        .confirm(RYU, &registered.transfer_id, sign(RYU_ACCOUNT, RYU, 1_000))
        .await
        .unwrap();
    assert_eq!(deposit.status, DepositStatus::Confirmed as i32);
    assert!(deposit.applied, "credited before ConfirmDeposit returns");
    assert!(deposit.confirmed_at.is_some());

    let after = w.account(RYU, RYU_ACCOUNT).await;
    assert_eq!(after.principal, before.principal + 1_000);
    assert_eq!(after.total_assets, before.total_assets + 1_000);
    assert_eq!(after.total_profit, before.total_profit);
    let cash_after = w.cash(RYU, RYU_ACCOUNT).await.unwrap();
    assert_eq!(cash_after.valuation, cash_before.valuation + 1_000);

    // Confirming again returns the same deposit and credits nothing.
    let again = w
        .confirm(
            RYU,
            &registered.transfer_id,
            sign(RYU_ACCOUNT, RYU, 1_000).to_uppercase(),
        )
        .await
        .unwrap();
    assert_eq!(
        (again.transfer_id.as_str(), again.status),
        (
            registered.transfer_id.as_str(),
            DepositStatus::Confirmed as i32
        )
    );
    assert_eq!(w.account(RYU, RYU_ACCOUNT).await.principal, after.principal);

    // An account without a CASH line gets one.
    let lee = w.register(LEE, "222222222222", 300).await;
    w.confirm(LEE, &lee, sign("222222222222", LEE, 300))
        .await
        .unwrap();
    let cash = w.cash(LEE, "222222222222").await.unwrap();
    assert_eq!(
        (cash.quantity, cash.current_price, cash.valuation),
        (1, 300, 300)
    );
}

async fn request_ids_make_phase_one_safe_to_retry(backend: Backend) {
    let Some(w) = world(backend, false).await else {
        return;
    };
    let mut client = w.deposit.deposits(RYU).await;
    let request = pb::RegisterDepositRequest {
        account_number: RYU_ACCOUNT.into(),
        customer_name: RYU.into(),
        amount: 5_000,
        request_id: "0f8e7c3a-retry".into(),
    };
    let first = client
        .register_deposit(request.clone())
        .await
        .unwrap()
        .into_inner();
    let retry = client
        .register_deposit(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        first, retry,
        "the same request id and fields return the same transfer"
    );

    let status = client
        .register_deposit(pb::RegisterDepositRequest {
            amount: 5_001,
            ..request.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_deref()),
        (Code::AlreadyExists, Some("REQUEST_ID_REUSED"))
    );

    // Another customer's identical request id is theirs.
    let lee = w
        .deposit
        .deposits(LEE)
        .await
        .register_deposit(pb::RegisterDepositRequest {
            account_number: "222222222222".into(),
            customer_name: LEE.into(),
            ..request
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(lee.transfer_id, first.transfer_id);
}

async fn bad_requests_change_nothing(backend: Backend) {
    let Some(w) = world(backend, true).await else {
        return;
    };
    let clock = w.clock.clone().unwrap();
    let before = w.account(RYU, RYU_ACCOUNT).await.principal;
    let mut ryu = w.deposit.deposits(RYU).await;
    let register = |account: &str, name: &str, amount: i64| pb::RegisterDepositRequest {
        account_number: account.into(),
        customer_name: name.into(),
        amount,
        request_id: String::new(),
    };

    for (amount, why) in [
        (0, "zero"),
        (-5, "negative"),
        (1_000_001, "above the maximum"),
    ] {
        let status = ryu
            .register_deposit(register(RYU_ACCOUNT, RYU, amount))
            .await
            .unwrap_err();
        assert_eq!(
            (status.code(), reason(&status).as_deref()),
            (Code::InvalidArgument, Some("AMOUNT_OUT_OF_RANGE")),
            "{why}"
        );
        assert_eq!(bad_fields(&status), ["amount"]);
    }
    let status = ryu
        .register_deposit(register(RYU_ACCOUNT, "류영길 ", 10))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_deref()),
        (Code::InvalidArgument, Some("CUSTOMER_NAME_MISMATCH"))
    );
    let status = ryu
        .register_deposit(register("222222222222", RYU, 10))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "another customer's account");
    let missing = ryu
        .register_deposit(register("999999999999", RYU, 10))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(
        status.message().replace("222222222222", "X"),
        missing.message().replace("999999999999", "X")
    );

    // Wrong signature: refused, nothing credited, attempts counted.
    let transfer = w.register(RYU, RYU_ACCOUNT, 100).await;
    let status = w
        .confirm(RYU, &transfer, sign(RYU_ACCOUNT, RYU, 101))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_deref()),
        (Code::InvalidArgument, Some("SIGNATURE_MISMATCH"))
    );
    assert!(
        status.message().contains("4 attempts left"),
        "{}",
        status.message()
    );
    let status = w
        .confirm(RYU, &transfer, "not hex".into())
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), bad_fields(&status)),
        (Code::InvalidArgument, vec!["signature".to_owned()])
    );

    // Unknown transfer, and another customer's transfer: the same NOT_FOUND.
    let status = w
        .confirm(
            RYU,
            "00000000000000000000000000000000",
            sign(RYU_ACCOUNT, RYU, 100),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = w
        .confirm(LEE, &transfer, sign(RYU_ACCOUNT, RYU, 100))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    // Too many wrong signatures: rejected for good, even with the right one afterwards.
    for _ in 0..4 {
        w.confirm(RYU, &transfer, sign(RYU_ACCOUNT, RYU, 1))
            .await
            .unwrap_err();
    }
    assert_eq!(
        w.get(RYU, &transfer).await.status,
        DepositStatus::Rejected as i32
    );
    let status = w
        .confirm(RYU, &transfer, sign(RYU_ACCOUNT, RYU, 100))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_deref()),
        (Code::FailedPrecondition, Some("TRANSFER_REJECTED"))
    );

    // Expiry: ten minutes later phase 2 is too late.
    let late = w.register(RYU, RYU_ACCOUNT, 100).await;
    clock.fetch_add(10 * 60 * 1_000_000, Ordering::SeqCst);
    assert_eq!(
        w.get(RYU, &late).await.status,
        DepositStatus::Expired as i32
    );
    let status = w
        .confirm(RYU, &late, sign(RYU_ACCOUNT, RYU, 100))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_deref()),
        (Code::FailedPrecondition, Some("TRANSFER_EXPIRED"))
    );
    let expired = ryu
        .list_deposits(pb::ListDepositsRequest {
            status: DepositStatus::Expired as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        expired
            .deposits
            .iter()
            .map(|d| d.transfer_id.as_str())
            .collect::<Vec<_>>(),
        [late.as_str()]
    );

    assert_eq!(
        w.account(RYU, RYU_ACCOUNT).await.principal,
        before,
        "nothing was credited"
    );
}

async fn concurrency_credits_exact_sums(backend: Backend) {
    let Some(w) = world(backend, false).await else {
        return;
    };
    let w = Arc::new(w);
    let before = w.account(LEE, "333333333333").await.principal;

    // 200 deposits on one account, confirmed all at once.
    let mut transfers = Vec::new();
    for i in 0..200i64 {
        transfers.push((w.register(LEE, "333333333333", 1_000 + i).await, 1_000 + i));
    }
    let expected: i64 = transfers.iter().map(|(_, amount)| amount).sum();
    let confirms: Vec<_> = transfers
        .into_iter()
        .map(|(id, amount)| {
            let w = w.clone();
            tokio::spawn(async move {
                w.confirm(LEE, &id, sign("333333333333", LEE, amount))
                    .await
                    .unwrap()
            })
        })
        .collect();
    for confirm in confirms {
        let deposit = confirm.await.unwrap();
        assert_eq!(deposit.status, DepositStatus::Confirmed as i32);
    }
    assert_eq!(
        w.account(LEE, "333333333333").await.principal,
        before + expected
    );

    // 50 confirmations of one transfer credit it once.
    let one = w.register(RYU, RYU_ACCOUNT, 4_321).await;
    let before = w.account(RYU, RYU_ACCOUNT).await.principal;
    let confirms: Vec<_> = (0..50)
        .map(|_| {
            let (w, one) = (w.clone(), one.clone());
            tokio::spawn(async move {
                w.confirm(RYU, &one, sign(RYU_ACCOUNT, RYU, 4_321))
                    .await
                    .unwrap()
            })
        })
        .collect();
    for confirm in confirms {
        assert_eq!(confirm.await.unwrap().transfer_id, one);
    }
    w.until_applied(RYU, &one).await;
    assert_eq!(w.account(RYU, RYU_ACCOUNT).await.principal, before + 4_321);
}

async fn portfolio_down_during_phase_two(backend: Backend) {
    let Some(w) = world(backend, false).await else {
        return;
    };
    let before = w.account(RYU, RYU_ACCOUNT).await.principal;
    let transfer = w.register(RYU, RYU_ACCOUNT, 2_500).await;

    w.proxy.set(ProxyMode::Down);
    let deposit = w
        .confirm(RYU, &transfer, sign(RYU_ACCOUNT, RYU, 2_500))
        .await
        .unwrap();
    assert_eq!(
        deposit.status,
        DepositStatus::Confirmed as i32,
        "the confirmation stands"
    );
    assert!(!deposit.applied);
    assert_eq!(w.account(RYU, RYU_ACCOUNT).await.principal, before);

    w.proxy.set(ProxyMode::Up);
    let delivered = w.until_applied(RYU, &transfer).await;
    assert_eq!(delivered.status, DepositStatus::Confirmed as i32);
    assert_eq!(
        w.account(RYU, RYU_ACCOUNT).await.principal,
        before + 2_500,
        "credited exactly once"
    );
}

async fn history_pages_newest_first(backend: Backend) {
    let Some(w) = world(backend, true).await else {
        return;
    };
    let clock = w.clock.clone().unwrap();
    let mut ids = Vec::new();
    for i in 0..7 {
        clock.fetch_add(1_000_000, Ordering::SeqCst);
        let account = if i % 2 == 0 {
            "222222222222"
        } else {
            "333333333333"
        };
        ids.push(w.register(LEE, account, 100 + i).await);
    }
    w.confirm(LEE, &ids[2], sign("222222222222", LEE, 102))
        .await
        .unwrap();
    let mut lee = w.deposit.deposits(LEE).await;

    // Page by 3 while new deposits keep arriving: no repeats, no gaps, newest first.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = lee
            .list_deposits(pb::ListDepositsRequest {
                page_size: 3,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.deposits.into_iter().map(|d| d.transfer_id));
        clock.fetch_add(1_000_000, Ordering::SeqCst);
        w.register(LEE, "333333333333", 1).await;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let newest_first: Vec<_> = ids.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);

    // Filters: account, status, time range.
    let on_two = lee
        .list_deposits(pb::ListDepositsRequest {
            account_number: "222222222222".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(on_two.deposits.len(), 4);
    let confirmed = lee
        .list_deposits(pb::ListDepositsRequest {
            status: DepositStatus::Confirmed as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        confirmed
            .deposits
            .iter()
            .map(|d| d.transfer_id.clone())
            .collect::<Vec<_>>(),
        [ids[2].clone()]
    );
    let third = w.get(LEE, &ids[2]).await.created_at.unwrap();
    let fifth = w.get(LEE, &ids[4]).await.created_at.unwrap();
    let window = lee
        .list_deposits(pb::ListDepositsRequest {
            start_time: Some(third),
            end_time: Some(fifth),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        window
            .deposits
            .iter()
            .map(|d| d.transfer_id.clone())
            .collect::<Vec<_>>(),
        [ids[3].clone(), ids[2].clone()]
    );

    // A token is bound to its filters; a customer sees only their own deposits.
    let first = lee
        .list_deposits(pb::ListDepositsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let status = lee
        .list_deposits(pb::ListDepositsRequest {
            page_size: 1,
            page_token: first.next_page_token.clone(),
            status: DepositStatus::Pending as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), bad_fields(&status)),
        (Code::InvalidArgument, vec!["page_token".to_owned()])
    );
    assert_eq!(reason(&status).as_deref(), Some("PAGE_TOKEN_MISMATCH"));
    let mut ryu = w.deposit.deposits(RYU).await;
    let listed = ryu
        .list_deposits(pb::ListDepositsRequest::default())
        .await
        .unwrap();
    assert!(listed.into_inner().deposits.is_empty());
    // Nor can another customer continue Lee's listing with Lee's token, or anyone with a
    // token that was cut.
    let status = ryu
        .list_deposits(pb::ListDepositsRequest {
            page_size: 1,
            page_token: first.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&status).as_deref(), Some("INVALID_PAGE_TOKEN"));
    let cut = &first.next_page_token[..first.next_page_token.len() - 2];
    let status = lee
        .list_deposits(pb::ListDepositsRequest {
            page_size: 1,
            page_token: cut.to_owned(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&status).as_deref(), Some("INVALID_PAGE_TOKEN"));
}

async fn a_new_day_keeps_deposits_confirmed_after_its_as_of(backend: Backend) {
    let Some(w) = world(backend, false).await else {
        return;
    };
    let transfer = w.register(RYU, RYU_ACCOUNT, 9_000).await;
    let confirmed = w
        .confirm(RYU, &transfer, sign(RYU_ACCOUNT, RYU, 9_000))
        .await
        .unwrap();
    let confirmed_at = invest_proto::time::to_micros(&confirmed.confirmed_at.unwrap()).unwrap();

    // Today's delivery was cut an hour before the deposit: it is not in it, so it stays on top.
    let mut today = snapshot(confirmed_at - DAY / 24);
    today.accounts[0].holdings[1].current_price = 300;
    w.portfolio
        .ingest()
        .await
        .load_snapshot(tokio_stream::iter(today.parts(10)))
        .await
        .unwrap();
    let d = w.account(RYU, RYU_ACCOUNT).await;
    assert_eq!(
        (d.principal, d.total_assets),
        (1_000 + 9_000, 500 + 900 + 9_000)
    );

    // A delivery cut after the deposit includes it upstream: nothing is added twice.
    let mut tomorrow = snapshot(confirmed_at + DAY / 24);
    tomorrow.accounts[0].principal = 10_000;
    tomorrow.accounts[0].holdings[0].current_price = 9_500;
    w.portfolio
        .ingest()
        .await
        .load_snapshot(tokio_stream::iter(tomorrow.parts(10)))
        .await
        .unwrap();
    let d = w.account(RYU, RYU_ACCOUNT).await;
    assert_eq!((d.principal, d.total_assets), (10_000, 9_500 + 600));
}

async fn the_directory_loads_atomically(backend: Backend) {
    let Some(w) = world(backend, false).await else {
        return;
    };
    let yesterday = w.as_of;
    let mut ingest = w.deposit.directory().await;

    let again = ingest
        .load_directory(tokio_stream::iter(directory(yesterday).parts(2)))
        .await
        .unwrap()
        .into_inner();
    assert!(
        again.unchanged,
        "same digest, same as_of: a no-op that says so"
    );
    let status = ingest
        .load_directory(tokio_stream::iter(directory(yesterday - DAY).parts(2)))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_deref()),
        (Code::FailedPrecondition, Some("DIRECTORY_OUTDATED"))
    );

    // A new day where 111111111111 changed hands; every broken version of it changes nothing.
    let mut today = directory(yesterday + DAY / 2);
    today.entries[0].customer_name = LEE.into();
    let mut short = today.parts(1);
    short.pop();
    let status = ingest
        .load_directory(tokio_stream::iter(short))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_deref()),
        (Code::InvalidArgument, Some("INCOMPLETE_DIRECTORY"))
    );
    let mut forged = today.parts(1);
    if let Some(pb::directory_part::Part::Entries(batch)) = &mut forged.last_mut().unwrap().part {
        batch.entries[0].customer_name = "someone else".into();
    }
    let status = ingest
        .load_directory(tokio_stream::iter(forged))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_deref()),
        (Code::InvalidArgument, Some("DIGEST_MISMATCH"))
    );
    // A NUL inside a name: INVALID_TEXT on both backends, never INTERNAL.
    let mut nul = today.clone();
    nul.entries[1].customer_name = "류\0영길".into();
    let status = ingest
        .load_directory(tokio_stream::iter(nul.parts(5)))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_deref()),
        (Code::InvalidArgument, Some("INVALID_TEXT"))
    );
    let mut unordered = today.clone();
    unordered.entries.swap(0, 1);
    let status = ingest
        .load_directory(tokio_stream::iter(unordered.parts(5)))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_deref()),
        (Code::InvalidArgument, Some("ENTRIES_OUT_OF_ORDER"))
    );
    w.register(RYU, RYU_ACCOUNT, 10).await;

    ingest
        .load_directory(tokio_stream::iter(today.parts(2)))
        .await
        .unwrap();
    let status = w
        .deposit
        .deposits(RYU)
        .await
        .register_deposit(pb::RegisterDepositRequest {
            account_number: RYU_ACCOUNT.into(),
            customer_name: RYU.into(),
            amount: 10,
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "the account is 이정희's now");
    w.register(LEE, RYU_ACCOUNT, 10).await;
}

async fn scopes_are_enforced(backend: Backend) {
    let Some(w) = world(backend, false).await else {
        return;
    };
    let channel = w.deposit.channel().await;
    let mut no_token = pb::deposit_service_client::DepositServiceClient::new(channel.clone());
    let status = no_token
        .list_deposits(pb::ListDepositsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let mut screens_only = pb::deposit_service_client::DepositServiceClient::with_interceptor(
        channel.clone(),
        invest_proto::auth::ServiceToken::new(
            w.deposit.keys.clone(),
            RYU,
            &[invest_proto::auth::SCOPE_ACCOUNTS_READ],
        ),
    );
    let status = screens_only
        .list_deposits(pb::ListDepositsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let mut customer_as_loader =
        pb::directory_ingest_client::DirectoryIngestClient::with_interceptor(
            channel,
            invest_proto::auth::ServiceToken::new(
                w.deposit.keys.clone(),
                RYU,
                &[invest_proto::auth::SCOPE_DEPOSITS_WRITE],
            ),
        );
    let status = customer_as_loader
        .load_directory(tokio_stream::iter(directory(0).parts(1)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
}

backend_tests!(
    the_directory_loads_atomically,
    scopes_are_enforced,
    two_phases_credit_the_account,
    request_ids_make_phase_one_safe_to_retry,
    bad_requests_change_nothing,
    concurrency_credits_exact_sums,
    portfolio_down_during_phase_two,
    history_pages_newest_first,
    a_new_day_keeps_deposits_confirmed_after_its_as_of,
);
