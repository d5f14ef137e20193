//! PortfolioLedger.ApplyDeposit and the overlay of deposits on top of snapshots, over real
//! gRPC on SQLite and PostgreSQL.

use invest_proto::{
    portfolio::v1::{self as pb},
    status::reason,
};
use invest_runtime::{backend_tests, testkit::Backend};
use portfolio_svc::testkit::{Snapshot, TestPortfolio};
use tonic::Code;

const HOUR: i64 = 3_600_000_000;
const AS_OF: i64 = 1_795_000_000_000_000;

fn fixture(as_of: i64) -> Snapshot {
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
                account_number: "111111111111".into(),
                customer_name: "이정희".into(),
                brokerage: "디셈버증권".into(),
                account_name: "계좌1".into(),
                principal: 1_000,
                holdings: vec![holding("CASH", 1, 500), holding("KR7360750004", 3, 200)],
            },
            pb::SnapshotAccount {
                account_number: "222222222222".into(),
                customer_name: "이정희".into(),
                brokerage: "디셈버증권".into(),
                account_name: "계좌2".into(),
                principal: 100,
                holdings: vec![holding("KR7360750004", 1, 90)],
            },
        ],
    }
}

async fn load(app: &TestPortfolio, snapshot: &Snapshot) {
    app.ingest()
        .await
        .load_snapshot(tokio_stream::iter(snapshot.parts(10)))
        .await
        .unwrap();
}

/// A transfer id (32 hex digits, as deposit-svc issues them) named after `name`.
fn transfer_id(name: &str) -> String {
    let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{hex:0>32}")
}

fn deposit(name: &str, account: &str, amount: i64, confirmed_at: i64) -> pb::ApplyDepositRequest {
    pb::ApplyDepositRequest {
        transfer_id: if name.is_empty() {
            String::new()
        } else {
            transfer_id(name)
        },
        account_number: account.into(),
        amount,
        confirmed_at: Some(invest_proto::time::from_micros(confirmed_at)),
    }
}

async fn detail(app: &TestPortfolio, account: &str) -> pb::AccountDetail {
    app.screens("이정희")
        .await
        .get_account(pb::GetAccountRequest {
            account_number: account.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn holdings(app: &TestPortfolio, account: &str, page_size: i32) -> Vec<pb::Holding> {
    let mut client = app.screens("이정희").await;
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_holdings(pb::ListHoldingsRequest {
                account_number: account.into(),
                page_size,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        all.extend(page.holdings);
        if page.next_page_token.is_empty() {
            return all;
        }
        token = page.next_page_token;
    }
}

/// The `CASH` line of an account, read with each page size (one holding per page, and all on
/// one page): both must agree.
async fn cash(app: &TestPortfolio, account: &str) -> i64 {
    let mut values = Vec::new();
    for page_size in [1, 100] {
        let lines = holdings(app, account, page_size).await;
        let cash = lines.iter().find(|h| h.isin == "CASH").unwrap();
        assert_eq!(cash.valuation, cash.current_price * cash.quantity);
        values.push(cash.valuation);
    }
    assert_eq!(values[0], values[1], "page sizes 1 and 100 disagree");
    values[0]
}

async fn deposits_raise_principal_assets_and_cash(backend: Backend) {
    let Some(app) = TestPortfolio::spawn(backend).await else {
        return;
    };
    load(&app, &fixture(AS_OF)).await;
    let before = detail(&app, "111111111111").await;

    let mut ledger = app.ledger().await;
    let first = ledger
        .apply_deposit(deposit("t1", "111111111111", 1_000, AS_OF + HOUR))
        .await
        .unwrap()
        .into_inner();
    assert!(!first.already_applied);
    let again = ledger
        .apply_deposit(deposit("t1", "111111111111", 1_000, AS_OF + HOUR))
        .await
        .unwrap()
        .into_inner();
    assert!(again.already_applied, "the same transfer credits once");

    let after = detail(&app, "111111111111").await;
    assert_eq!(after.principal, before.principal + 1_000);
    assert_eq!(after.total_assets, before.total_assets + 1_000);
    assert_eq!(after.total_profit, before.total_profit);

    let cash = holdings(&app, "111111111111", 100)
        .await
        .into_iter()
        .find(|h| h.isin == "CASH")
        .unwrap();
    assert_eq!(
        (cash.quantity, cash.current_price, cash.valuation),
        (1, 1_500, 1_500)
    );

    let accounts = app
        .screens("이정희")
        .await
        .list_accounts(pb::ListAccountsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(accounts.accounts[0].total_assets, 1_100 + 1_000);
    assert_eq!(accounts.accounts[1].total_assets, 90);

    // Same id, other fields: refused, nothing credited.
    let status = ledger
        .apply_deposit(deposit("t1", "111111111111", 5, AS_OF + HOUR))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_deref()),
        (Code::AlreadyExists, Some("TRANSFER_ID_REUSED"))
    );
    assert_eq!(
        detail(&app, "111111111111").await.principal,
        after.principal
    );
}

async fn an_account_without_cash_gets_a_cash_line(backend: Backend) {
    let Some(app) = TestPortfolio::spawn(backend).await else {
        return;
    };
    load(&app, &fixture(AS_OF)).await;
    let mut ledger = app.ledger().await;
    ledger
        .apply_deposit(deposit("t2", "222222222222", 700, AS_OF + HOUR))
        .await
        .unwrap();
    ledger
        .apply_deposit(deposit("t3", "222222222222", 300, AS_OF + 2 * HOUR))
        .await
        .unwrap();
    for page_size in [1, 100] {
        let lines = holdings(&app, "222222222222", page_size).await;
        let lines: Vec<_> = lines
            .iter()
            .map(|h| {
                (
                    h.isin.as_str(),
                    h.name.as_str(),
                    h.quantity,
                    h.current_price,
                    h.valuation,
                )
            })
            .collect();
        assert_eq!(
            lines,
            [
                ("CASH", "현금", 1, 1_000, 1_000),
                ("KR7360750004", "미국S&P500", 1, 90, 90)
            ],
            "page size {page_size}"
        );
    }
    let d = detail(&app, "222222222222").await;
    assert_eq!(
        (d.principal, d.total_assets, d.total_profit),
        (1_100, 1_090, -10)
    );
}

async fn deposits_stay_visible_until_a_snapshot_includes_them(backend: Backend) {
    let Some(app) = TestPortfolio::spawn(backend).await else {
        return;
    };
    load(&app, &fixture(AS_OF)).await;
    let mut ledger = app.ledger().await;
    ledger
        .apply_deposit(deposit("early", "111111111111", 10, AS_OF + HOUR))
        .await
        .unwrap();
    ledger
        .apply_deposit(deposit("late", "111111111111", 1_000, AS_OF + 3 * HOUR))
        .await
        .unwrap();
    // Confirmed at or before the snapshot's as_of: already in it, never added.
    ledger
        .apply_deposit(deposit("old", "111111111111", 100_000, AS_OF))
        .await
        .unwrap();
    assert_eq!(
        detail(&app, "111111111111").await.principal,
        1_000 + 10 + 1_000
    );
    // The holdings page agrees, although the deposit applied last ("old") is not the latest
    // confirmed: the latest is what tells a page that deposits follow its snapshot.
    assert_eq!(cash(&app, "111111111111").await, 500 + 10 + 1_000);

    // A new day cut between the two deposits: it includes "early" upstream, not "late".
    let mut next = fixture(AS_OF + 2 * HOUR);
    next.accounts[0].principal = 1_010;
    next.accounts[0].holdings[0].current_price = 510;
    load(&app, &next).await;
    let d = detail(&app, "111111111111").await;
    assert_eq!(
        (d.principal, d.total_assets),
        (1_010 + 1_000, 510 + 600 + 1_000)
    );
    assert_eq!(
        d.as_of,
        Some(invest_proto::time::from_micros(AS_OF + 2 * HOUR))
    );
    assert_eq!(cash(&app, "111111111111").await, 510 + 1_000);

    // A day after both: nothing on top any more.
    load(&app, &fixture(AS_OF + 4 * HOUR)).await;
    assert_eq!(detail(&app, "111111111111").await.principal, 1_000);
    assert_eq!(cash(&app, "111111111111").await, 500);
}

async fn concurrent_credits_of_one_transfer_count_once(backend: Backend) {
    let Some(app) = TestPortfolio::spawn(backend).await else {
        return;
    };
    load(&app, &fixture(AS_OF)).await;
    let mut calls = Vec::new();
    for _ in 0..50 {
        let mut ledger = app.ledger().await;
        calls.push(async move {
            ledger
                .apply_deposit(deposit("same", "111111111111", 777, AS_OF + HOUR))
                .await
                .unwrap()
                .into_inner()
                .already_applied
        });
    }
    let results = futures_join_all(calls).await;
    assert_eq!(
        results.iter().filter(|already| !**already).count(),
        1,
        "exactly one call credits"
    );
    assert_eq!(detail(&app, "111111111111").await.principal, 1_000 + 777);
}

async fn futures_join_all<
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<T> {
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

async fn bad_credits_are_refused(backend: Backend) {
    let Some(app) = TestPortfolio::spawn(backend).await else {
        return;
    };
    load(&app, &fixture(AS_OF)).await;
    let mut ledger = app.ledger().await;
    for (request, field) in [
        (deposit("", "111111111111", 1, AS_OF), "transfer_id"),
        (
            pb::ApplyDepositRequest {
                transfer_id: "transfer-1".into(),
                ..deposit("t", "111111111111", 1, AS_OF)
            },
            "transfer_id",
        ),
        (deposit("t", "12-34", 1, AS_OF), "account_number"),
        (deposit("t", "111111111111", 0, AS_OF), "amount"),
        (deposit("t", "111111111111", -5, AS_OF), "amount"),
        (
            pb::ApplyDepositRequest {
                confirmed_at: None,
                ..deposit("t", "111111111111", 1, AS_OF)
            },
            "confirmed_at",
        ),
    ] {
        let status = ledger.apply_deposit(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(invest_proto::status::bad_fields(&status), [field]);
    }
    // An account no loaded snapshot knows is not credited.
    let status = ledger
        .apply_deposit(deposit("u", "999999999999", 1, AS_OF + HOUR))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_deref()),
        (Code::NotFound, Some("NOT_FOUND"))
    );
    // The customers' scope cannot credit.
    let mut customer = pb::portfolio_ledger_client::PortfolioLedgerClient::with_interceptor(
        app.channel().await,
        invest_proto::auth::ServiceToken::new(
            app.keys.clone(),
            "이정희",
            &[invest_proto::auth::SCOPE_ACCOUNTS_READ],
        ),
    );
    let status = customer
        .apply_deposit(deposit("t", "111111111111", 1, AS_OF + HOUR))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(detail(&app, "111111111111").await.principal, 1_000);
}

/// An account whose figures no longer fit in 64 bits once deposits are added (only corrupt
/// data gets there) is left out of ListAccounts instead of failing the customer's other
/// accounts; GetAccount on it says why.
async fn one_account_out_of_range_hides_no_other(backend: Backend) {
    let Some(app) = TestPortfolio::spawn(backend).await else {
        return;
    };
    let mut day = fixture(AS_OF);
    day.accounts[1].holdings[0].current_price = i64::MAX - 50;
    load(&app, &day).await;
    app.ledger()
        .await
        .apply_deposit(deposit("huge", "222222222222", 100, AS_OF + HOUR))
        .await
        .unwrap();
    let listed = app
        .screens("이정희")
        .await
        .list_accounts(pb::ListAccountsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed
            .accounts
            .iter()
            .map(|a| a.account_number.as_str())
            .collect::<Vec<_>>(),
        ["111111111111"]
    );
    let status = app
        .screens("이정희")
        .await
        .get_account(pb::GetAccountRequest {
            account_number: "222222222222".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_deref()),
        (Code::FailedPrecondition, Some("FIGURE_OUT_OF_RANGE"))
    );
}

backend_tests!(
    one_account_out_of_range_hides_no_other,
    deposits_raise_principal_assets_and_cash,
    an_account_without_cash_gets_a_cash_line,
    deposits_stay_visible_until_a_snapshot_includes_them,
    concurrent_credits_of_one_transfer_count_once,
    bad_credits_are_refused,
);
