//! Reads from memory (`portfolio_svc::cache`) against the database's truth, on SQLite and
//! PostgreSQL, over real gRPC: a read never mixes two snapshots, a page token finishes on its
//! snapshot, deposits in any order give the exact overlay, and the cache answers the same as
//! the database does with the cache turned off.

use invest_proto::portfolio::v1::{self as pb};
use invest_runtime::{backend_tests, testkit::Backend};
use portfolio_svc::testkit::{Snapshot, TestPortfolio};

const DAY: i64 = 86_400_000_000;
const AS_OF: i64 = 1_795_000_000_000_000;
const OWNER: &str = "이정희";

/// A day: account 1 with three holdings, account 2 with one; prices move with `day`.
fn day(day: i64) -> Snapshot {
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
        as_of: AS_OF + day * DAY,
        instruments: vec![
            instrument("CASH", "현금"),
            instrument("KR7000000001", "일"),
            instrument("KR7000000002", "이"),
        ],
        accounts: vec![
            pb::SnapshotAccount {
                account_number: "111111111111".into(),
                customer_name: OWNER.into(),
                brokerage: "디셈버증권".into(),
                account_name: format!("계좌1-{day}"),
                principal: 1_000 + day,
                holdings: vec![
                    holding("CASH", 1, 500),
                    holding("KR7000000001", 3, 100 + day),
                    holding("KR7000000002", 2, 50 + day),
                ],
            },
            pb::SnapshotAccount {
                account_number: "222222222222".into(),
                customer_name: OWNER.into(),
                brokerage: "디셈버증권".into(),
                account_name: format!("계좌2-{day}"),
                principal: 100,
                holdings: vec![holding("KR7000000001", 1, 90 + day)],
            },
        ],
    }
}

async fn detail(app: &TestPortfolio, account: &str) -> pb::AccountDetail {
    app.account(OWNER, account).await
}

async fn holdings_page(
    app: &TestPortfolio,
    account: &str,
    page_size: i32,
    page_token: String,
) -> pb::ListHoldingsResponse {
    app.screens(OWNER)
        .await
        .list_holdings(pb::ListHoldingsRequest {
            account_number: account.into(),
            page_size,
            page_token,
        })
        .await
        .unwrap()
        .into_inner()
}

async fn accounts(app: &TestPortfolio) -> Vec<pb::AccountSummary> {
    app.screens(OWNER)
        .await
        .list_accounts(pb::ListAccountsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .accounts
}

async fn reads_never_mix_two_snapshots(backend: Backend) {
    let Some(app) = TestPortfolio::spawn(backend).await else {
        return;
    };
    app.load(&day(1)).await;
    // Warm every kind of entry, and start a listing on day 1.
    let first = detail(&app, "111111111111").await;
    assert_eq!(first.principal, 1_001);
    assert_eq!(accounts(&app).await.len(), 2);
    let page = holdings_page(&app, "111111111111", 1, String::new()).await;
    assert_eq!(page.holdings[0].isin, "CASH");
    assert!(!page.next_page_token.is_empty());

    app.load(&day(2)).await;
    // Once the load has answered, every read is of day 2, entirely.
    let second = detail(&app, "111111111111").await;
    assert_eq!(
        (second.principal, second.account_name.as_str()),
        (1_002, "계좌1-2")
    );
    assert_eq!(
        second.as_of,
        Some(invest_proto::time::from_micros(AS_OF + 2 * DAY))
    );
    let names: Vec<String> = accounts(&app)
        .await
        .into_iter()
        .map(|a| a.account_name)
        .collect();
    assert_eq!(names, ["계좌1-2", "계좌2-2"]);
    let fresh = holdings_page(&app, "111111111111", 10, String::new()).await;
    assert_eq!(fresh.holdings[1].current_price, 102);
    // The listing started on day 1 finishes on day 1.
    let rest = holdings_page(&app, "111111111111", 10, page.next_page_token).await;
    let prices: Vec<i64> = rest.holdings.iter().map(|h| h.current_price).collect();
    assert_eq!(prices, [101, 51]);
}

/// A small deterministic generator (no dependency for one test).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

/// Deposits confirmed before and after the snapshot, applied in random order (late
/// redeliveries included), with reads between them: the overlay is exactly the sum of those
/// after the snapshot, from memory and from the database alike.
async fn deposits_in_any_order_give_the_exact_overlay(backend: Backend) {
    let Some(app) = TestPortfolio::spawn(backend).await else {
        return;
    };
    app.load(&day(0)).await;
    let mut ledger = app.ledger().await;
    let mut random = Lcg(7);
    let mut after_snapshot = 0i64;
    for i in 0..120 {
        let account = if i % 3 == 0 {
            "222222222222"
        } else {
            "111111111111"
        };
        let amount = 1 + random.next(10_000) as i64;
        // Within a day either side of the snapshot, some at the very same instant.
        let confirmed_at = AS_OF - DAY + random.next(2 * DAY as u64) as i64;
        let confirmed_at = if i % 17 == 0 { AS_OF } else { confirmed_at };
        if account == "111111111111" && confirmed_at > AS_OF {
            after_snapshot += amount;
        }
        ledger
            .apply_deposit(pb::ApplyDepositRequest {
                transfer_id: format!("{i:032x}"),
                account_number: account.into(),
                amount,
                confirmed_at: Some(invest_proto::time::from_micros(confirmed_at)),
            })
            .await
            .unwrap();
        if i % 10 == 0 || i == 119 {
            let seen = detail(&app, "111111111111").await;
            assert_eq!(seen.principal, 1_000 + after_snapshot, "after deposit {i}");
            // The cash line carries the same sum.
            let cash = holdings_page(&app, "111111111111", 10, String::new()).await;
            assert_eq!(cash.holdings[0].valuation, 500 + after_snapshot);
        }
    }
    // The same figures from a replica that reads only the database.
    let plain_app = app.replica(|c| c.read_cache_bytes = 0).await;
    for account in ["111111111111", "222222222222"] {
        assert_eq!(
            detail(&plain_app, account).await,
            detail(&app, account).await
        );
        assert_eq!(
            holdings_page(&plain_app, account, 2, String::new()).await,
            holdings_page(&app, account, 2, String::new()).await
        );
    }
    assert_eq!(accounts(&plain_app).await, accounts(&app).await);
}

backend_tests!(
    reads_never_mix_two_snapshots,
    deposits_in_any_order_give_the_exact_overlay
);
