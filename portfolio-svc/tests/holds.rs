//! PortfolioLedger.HoldCash, TakeHold and ReleaseHold, and `AccountDetail.available_cash`,
//! over real gRPC on SQLite and PostgreSQL (two replicas on PostgreSQL where the guarantee
//! is about replicas).

use invest_proto::{
    portfolio::v1::{self as pb},
    status::reason,
};
use invest_runtime::{backend_tests, testkit::Backend};
use portfolio_svc::testkit::{Snapshot, TestPortfolio};
use tonic::Code;

const HOUR: i64 = 3_600_000_000;
const AS_OF: i64 = 1_795_000_000_000_000;
const OWNER: &str = "이정희";
const ACCOUNT: &str = "111111111111";

/// One account with 500 won of `CASH` and 600 won of a fund (principal 1,000), and one
/// without cash.
fn day(as_of: i64, cash: i64) -> Snapshot {
    let instrument = |isin: &str, name: &str| pb::Instrument {
        isin: isin.into(),
        name: name.into(),
        asset_group: "그룹".into(),
    };
    let holding = |isin: &str, quantity, current_price| pb::SnapshotHolding {
        isin: isin.into(),
        quantity,
        current_price,
    };
    Snapshot {
        as_of,
        instruments: vec![
            instrument("CASH", "현금"),
            instrument("KR7360750004", "미국S&P500"),
        ],
        accounts: vec![
            pb::SnapshotAccount {
                account_number: ACCOUNT.into(),
                customer_name: OWNER.into(),
                brokerage: "디셈버증권".into(),
                account_name: "계좌1".into(),
                principal: 1_000,
                holdings: vec![holding("CASH", 1, cash), holding("KR7360750004", 3, 200)],
            },
            pb::SnapshotAccount {
                account_number: "222222222222".into(),
                customer_name: OWNER.into(),
                brokerage: "디셈버증권".into(),
                account_name: "계좌2".into(),
                principal: 100,
                holdings: vec![holding("KR7360750004", 1, 90)],
            },
        ],
    }
}

/// A transfer id (32 hex digits, as deposit-svc issues them) named after `name`.
fn id(name: &str) -> String {
    let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{hex:0>32}")
}

fn hold(name: &str, account: &str, amount: i64) -> pb::HoldCashRequest {
    pb::HoldCashRequest {
        transfer_id: id(name),
        account_number: account.into(),
        amount,
    }
}

fn take(name: &str, amount: i64, confirmed_at: i64) -> pb::TakeHoldRequest {
    pb::TakeHoldRequest {
        transfer_id: id(name),
        account_number: ACCOUNT.into(),
        amount,
        confirmed_at: Some(invest_proto::time::from_micros(confirmed_at)),
    }
}

fn release(name: &str, amount: i64) -> pb::ReleaseHoldRequest {
    pb::ReleaseHoldRequest {
        transfer_id: id(name),
        account_number: ACCOUNT.into(),
        amount,
    }
}

fn refusal(status: &tonic::Status) -> (Code, Option<String>) {
    (status.code(), reason(status))
}

fn code(code: Code, reason: &str) -> (Code, Option<String>) {
    (code, Some(reason.to_owned()))
}

async fn cash_line(app: &TestPortfolio) -> i64 {
    app.screens(OWNER)
        .await
        .list_holdings(pb::ListHoldingsRequest {
            account_number: ACCOUNT.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .holdings
        .into_iter()
        .find(|h| h.isin == "CASH")
        .map(|h| h.valuation)
        .unwrap()
}

/// The life of holds by hand: what is available after each step, what a take does to the
/// figures, and that holds and taken withdrawals outlive the daily switch.
async fn holds_take_and_release_by_hand(backend: Backend) {
    let Some(app) = TestPortfolio::spawn(backend).await else {
        return;
    };
    app.load(&day(AS_OF, 500)).await;
    let mut ledger = app.ledger().await;
    let start = app.account(OWNER, ACCOUNT).await;
    assert_eq!(
        (start.available_cash, start.principal, start.total_assets),
        (500, 1_000, 1_100)
    );

    let first = ledger.hold_cash(hold("h1", ACCOUNT, 300)).await.unwrap();
    assert_eq!(
        (first.get_ref().already_held, first.get_ref().available_cash),
        (false, 200)
    );
    let after_hold = app.account(OWNER, ACCOUNT).await;
    assert_eq!(after_hold.available_cash, 200);
    assert_eq!(
        (after_hold.principal, after_hold.total_assets),
        (1_000, 1_100),
        "a hold moves no figure but the available cash"
    );

    // More than is available: refused, and nothing held.
    let status = ledger
        .hold_cash(hold("h2", ACCOUNT, 201))
        .await
        .unwrap_err();
    assert_eq!(
        refusal(&status),
        code(Code::FailedPrecondition, "INSUFFICIENT_FUNDS")
    );
    assert_eq!(app.account(OWNER, ACCOUNT).await.available_cash, 200);
    // The same hold again answers it again; the same id with other fields is refused.
    let again = ledger.hold_cash(hold("h1", ACCOUNT, 300)).await.unwrap();
    assert!(again.get_ref().already_held);
    let status = ledger
        .hold_cash(hold("h1", ACCOUNT, 301))
        .await
        .unwrap_err();
    assert_eq!(
        refusal(&status),
        code(Code::AlreadyExists, "TRANSFER_ID_REUSED")
    );
    assert_eq!(app.account(OWNER, ACCOUNT).await.available_cash, 200);

    // A deposit raises what is available.
    ledger
        .apply_deposit(pb::ApplyDepositRequest {
            transfer_id: id("d1"),
            account_number: ACCOUNT.into(),
            amount: 1_000,
            confirmed_at: Some(invest_proto::time::from_micros(AS_OF + 2 * HOUR)),
        })
        .await
        .unwrap();
    assert_eq!(app.account(OWNER, ACCOUNT).await.available_cash, 1_200);

    // Taking the hold: principal, total assets and CASH fall by 300; profit stays; what is
    // available does not move (the cash and the hold fall together).
    let taken = ledger
        .take_hold(take("h1", 300, AS_OF + 3 * HOUR))
        .await
        .unwrap();
    assert!(!taken.get_ref().already_taken);
    let after_take = app.account(OWNER, ACCOUNT).await;
    assert_eq!(
        (
            after_take.principal,
            after_take.total_assets,
            after_take.total_profit,
            after_take.available_cash
        ),
        (1_700, 1_800, 100, 1_200)
    );
    assert_eq!(cash_line(&app).await, 500 + 1_000 - 300);
    let again = ledger
        .take_hold(take("h1", 300, AS_OF + 3 * HOUR))
        .await
        .unwrap();
    assert!(again.get_ref().already_taken, "taken once");
    assert_eq!(app.account(OWNER, ACCOUNT).await.principal, 1_700);
    let status = ledger.release_hold(release("h1", 300)).await.unwrap_err();
    assert_eq!(
        refusal(&status),
        code(Code::FailedPrecondition, "HOLD_CLOSED")
    );

    // Everything that is left, held.
    let all = ledger.hold_cash(hold("h3", ACCOUNT, 1_200)).await.unwrap();
    assert_eq!(all.get_ref().available_cash, 0);
    assert_eq!(app.account(OWNER, ACCOUNT).await.available_cash, 0);

    // A new day from before the deposit and the take: both stay on top of it, and so does
    // the pending hold.
    app.load(&day(AS_OF + HOUR, 500)).await;
    let next_day = app.account(OWNER, ACCOUNT).await;
    assert_eq!(
        (next_day.principal, next_day.available_cash),
        (1_700, 0),
        "{next_day:?}"
    );
    let released = ledger.release_hold(release("h3", 1_200)).await.unwrap();
    assert!(!released.get_ref().already_released);
    assert_eq!(app.account(OWNER, ACCOUNT).await.available_cash, 1_200);
    assert!(
        ledger
            .release_hold(release("h3", 1_200))
            .await
            .unwrap()
            .get_ref()
            .already_released
    );

    // A day after the take, which includes it upstream (its CASH is 1,200): only the day's
    // figures count, nothing twice.
    app.load(&day(AS_OF + 4 * HOUR, 1_200)).await;
    assert_eq!(app.account(OWNER, ACCOUNT).await.available_cash, 1_200);

    // A release that comes before its hold: the late hold holds nothing.
    assert!(
        !ledger
            .release_hold(release("h4", 100))
            .await
            .unwrap()
            .get_ref()
            .already_released
    );
    let status = ledger
        .hold_cash(hold("h4", ACCOUNT, 100))
        .await
        .unwrap_err();
    assert_eq!(
        refusal(&status),
        code(Code::FailedPrecondition, "HOLD_CLOSED")
    );
    assert_eq!(app.account(OWNER, ACCOUNT).await.available_cash, 1_200);

    // Unknown holds and accounts.
    let status = ledger.take_hold(take("h5", 100, AS_OF)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = ledger
        .hold_cash(hold("h6", "333333333333", 1))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    // An account without cash has nothing to hold.
    let status = ledger
        .hold_cash(hold("h7", "222222222222", 1))
        .await
        .unwrap_err();
    assert_eq!(
        refusal(&status),
        code(Code::FailedPrecondition, "INSUFFICIENT_FUNDS")
    );
    let status = ledger.hold_cash(hold("h8", ACCOUNT, 0)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

/// 40 holds of 50 won race for 500 won, half through each of two replicas (one on SQLite):
/// exactly ten are held, the rest refused, and nothing more is held than there was.
async fn concurrent_holds_never_overdraw(backend: Backend) {
    let Some(app) = TestPortfolio::spawn(backend).await else {
        return;
    };
    app.load(&day(AS_OF, 500)).await;
    let other = match backend {
        Backend::Postgres => Some(app.replica(|_| {}).await),
        Backend::Sqlite => None,
    };
    let mut calls = Vec::new();
    for n in 0..40 {
        let target = match (&other, n % 2) {
            (Some(other), 1) => other,
            _ => &app,
        };
        let mut ledger = target.ledger().await;
        calls.push(tokio::spawn(async move {
            ledger
                .hold_cash(hold(&format!("race{n}"), ACCOUNT, 50))
                .await
        }));
    }
    let mut held = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => held += 1,
            Err(status) => assert_eq!(
                refusal(&status),
                code(Code::FailedPrecondition, "INSUFFICIENT_FUNDS")
            ),
        }
    }
    assert_eq!(held, 10, "500 won hold ten withdrawals of 50");
    assert_eq!(app.account(OWNER, ACCOUNT).await.available_cash, 0);
    if let Some(other) = &other {
        assert_eq!(other.account(OWNER, ACCOUNT).await.available_cash, 0);
    }
}

backend_tests!(
    holds_take_and_release_by_hand,
    concurrent_holds_never_overdraw
);
