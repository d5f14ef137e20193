//! From the daily files to the three screens over real gRPC: the loader (library and binary)
//! against portfolio-svc started in-process on port 0, on SQLite and PostgreSQL. Expected
//! figures are computed here, independently of the cleaner and of the server.

use std::{collections::BTreeMap, path::Path, process::Output, sync::Arc};

use deposit_svc::testkit::{TestDeposit, sign};
use invest_daygen::{CsvFormat, GenOptions};
use invest_proto::deposit::v1 as deposit_pb;
use invest_proto::{
    auth::JwtKeys,
    portfolio::v1::{self as pb, LoadSnapshotResponse},
};
use invest_runtime::{backend_tests, testkit::Backend};
use loader::{
    pipeline::{CleanOptions, clean_day},
    push,
};
use portfolio_svc::testkit::{TEST_SECRET, TestPortfolio};

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/sample");

async fn load_dir(app: &TestPortfolio, dir: &Path, as_of: i64) -> LoadSnapshotResponse {
    let dir = dir.to_owned();
    let (day, report) =
        tokio::task::spawn_blocking(move || clean_day(&dir, &CleanOptions::default()).unwrap())
            .await
            .unwrap();
    assert!(report.totals.balanced());
    let channel = push::connect(&app.url(), 1).await.unwrap();
    push::push_snapshot(
        channel,
        Arc::new(JwtKeys::from_secret(TEST_SECRET.as_bytes())),
        Arc::new(day),
        invest_proto::time::from_micros(as_of),
        50,
        None,
    )
    .await
    .unwrap()
}

/// total_profit / principal * 100 to two decimals, half away from zero, as the dataset
/// defines it; written here independently of the server's arithmetic.
fn expected_rate(profit: i64, principal: i64) -> Option<String> {
    if principal == 0 {
        return None;
    }
    let (n, d) = (i128::from(profit).abs() * 10_000, i128::from(principal));
    let hundredths = (2 * n + d) / (2 * d);
    let sign = if profit < 0 && hundredths > 0 {
        "-"
    } else {
        ""
    };
    Some(format!(
        "{sign}{}.{:02}",
        hundredths / 100,
        hundredths % 100
    ))
}

#[derive(Debug, Default, Clone)]
struct ExpectedAccount {
    owner: String,
    principal: i64,
    holdings: BTreeMap<String, (i64, i64)>,
}

/// The sample read with the csv crate and nothing else of ours.
fn sample_expectations() -> BTreeMap<String, ExpectedAccount> {
    fn rows(file: &str) -> Vec<csv::StringRecord> {
        let text = std::fs::read_to_string(Path::new(SAMPLE).join(file)).unwrap();
        let text = text.trim_start_matches('\u{feff}');
        csv::Reader::from_reader(text.as_bytes())
            .records()
            .map(|r| r.unwrap())
            .collect()
    }
    let mut accounts: BTreeMap<String, ExpectedAccount> = BTreeMap::new();
    for row in rows("account_asset_info_set.csv") {
        let account = accounts.entry(row[2].trim().to_owned()).or_default();
        account.owner = row[0].trim().to_owned();
        account.holdings.insert(
            row[4].trim().to_owned(),
            (
                row[6].trim().parse().unwrap(),
                row[5].trim().parse().unwrap(),
            ),
        );
    }
    for row in rows("account_basic_info_set.csv") {
        accounts.get_mut(row[0].trim()).unwrap().principal = row[1].trim().parse().unwrap();
    }
    accounts
}

async fn check_account(app: &TestPortfolio, number: &str, expected: &ExpectedAccount) {
    let mut client = app.screens(&expected.owner).await;
    let total: i64 = expected.holdings.values().map(|(q, p)| q * p).sum();
    let detail = client
        .get_account(pb::GetAccountRequest {
            account_number: number.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(detail.total_assets, total, "total assets of {number}");
    assert_eq!(
        detail.principal, expected.principal,
        "principal of {number}"
    );
    assert_eq!(
        detail.total_profit,
        total - expected.principal,
        "profit of {number}"
    );
    assert_eq!(
        detail.profit_rate,
        expected_rate(total - expected.principal, expected.principal),
        "rate of {number}"
    );

    let mut holdings = BTreeMap::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_holdings(pb::ListHoldingsRequest {
                account_number: number.into(),
                page_size: 5,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        for h in page.holdings {
            assert_eq!(h.valuation, h.quantity * h.current_price);
            assert!(!h.name.is_empty() && !h.asset_group.is_empty());
            holdings.insert(h.isin, (h.quantity, h.current_price));
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(holdings, expected.holdings, "holdings of {number}");
}

async fn the_sample_loads(backend: Backend) {
    let Some(app) = TestPortfolio::spawn(backend).await else {
        return;
    };
    let loaded = load_dir(&app, Path::new(SAMPLE), 1_795_000_000_000_000).await;
    assert_eq!(
        (
            loaded.account_count,
            loaded.holding_count,
            loaded.instrument_count
        ),
        (50, 700, 14)
    );

    let expected = sample_expectations();
    assert_eq!(expected.len(), 50);
    for (number, account) in &expected {
        check_account(&app, number, account).await;
    }

    // The worked example of DATASET.md, to the won.
    let detail = app
        .screens("류영길")
        .await
        .get_account(pb::GetAccountRequest {
            account_number: "5736692368320".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            detail.account_name.as_str(),
            detail.brokerage.as_str(),
            detail.total_assets,
            detail.principal,
            detail.total_profit
        ),
        ("계좌1", "디셈버증권", 1_929_245, 1_911_386, 17_859)
    );
    assert_eq!(detail.profit_rate.as_deref(), Some("0.93"));

    // The customer with two accounts sees both.
    let lee = app
        .screens("이정희")
        .await
        .list_accounts(pb::ListAccountsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mine: Vec<_> = expected
        .iter()
        .filter(|(_, a)| a.owner == "이정희")
        .map(|(n, _)| n.clone())
        .collect();
    assert_eq!(mine.len(), 2);
    assert_eq!(
        lee.accounts
            .iter()
            .map(|a| a.account_number.clone())
            .collect::<Vec<_>>(),
        mine
    );
}

async fn a_generated_day_matches_the_truth(backend: Backend) {
    let Some(app) = TestPortfolio::spawn(backend).await else {
        return;
    };
    let options = GenOptions {
        accounts: 150,
        seed: 42,
        faults: 1,
        format: CsvFormat::varied(),
        ..GenOptions::default()
    };
    let dir = tempfile::tempdir().unwrap();
    invest_daygen::write_day(dir.path(), &options).unwrap();
    load_dir(&app, dir.path(), 1_795_000_000_000_000).await;

    let mut by_owner: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for account in invest_daygen::accounts(&options).unwrap() {
        let expected = ExpectedAccount {
            owner: account.customer_name.clone(),
            principal: account.principal,
            holdings: account
                .holdings
                .iter()
                .map(|h| (h.isin.clone(), (h.quantity, h.current_price)))
                .collect(),
        };
        check_account(&app, &account.account_number, &expected).await;
        by_owner
            .entry(account.customer_name)
            .or_default()
            .push(account.account_number);
    }
    assert!(
        by_owner.values().any(|a| a.len() > 1),
        "the day has customers with several accounts"
    );
    for (owner, accounts) in by_owner {
        let listed = app
            .screens(&owner)
            .await
            .list_accounts(pb::ListAccountsRequest::default())
            .await
            .unwrap()
            .into_inner();
        let listed: Vec<_> = listed
            .accounts
            .into_iter()
            .map(|a| a.account_number)
            .collect();
        assert_eq!(listed, accounts, "accounts of {owner}");
    }
}

async fn run_loader(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_loader"))
        .args(args)
        .env("INVEST_JWT_SECRET", TEST_SECRET)
        .env_remove("INVEST_JWT_SECRET_FILE")
        .env("LOADER_LOG_FORMAT", "json")
        .output()
        .await
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn current_as_of(
    app: &TestPortfolio,
    owner: &str,
    account: &str,
) -> Option<prost_types::Timestamp> {
    app.screens(owner)
        .await
        .get_account(pb::GetAccountRequest {
            account_number: account.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .as_of
}

async fn the_binary_loads_reports_and_protects(backend: Backend) {
    let Some(app) = TestPortfolio::spawn(backend).await else {
        return;
    };
    let Some(deposit) = TestDeposit::spawn(backend, &app.url()).await else {
        return;
    };
    let url = app.url();
    let deposit_url = deposit.url();
    let work = tempfile::tempdir().unwrap();
    let good = work.path().join("good");
    let bad = work.path().join("bad");
    let rejects = work.path().join("rejects.jsonl");
    let clean = GenOptions {
        accounts: 40,
        seed: 7,
        ..GenOptions::default()
    };
    invest_daygen::write_day(&good, &clean).unwrap();
    invest_daygen::write_day(
        &bad,
        &GenOptions {
            faults: 3,
            ..clean.clone()
        },
    )
    .unwrap();
    let first = invest_daygen::accounts(&clean).unwrap().next().unwrap();

    let output = run_loader(&[
        "load",
        good.to_str().unwrap(),
        "--portfolio-url",
        &url,
        "--deposit-url",
        &deposit_url,
        "--as-of",
        "2026-11-23T06:00:00+09:00",
    ])
    .await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}{}",
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout(&output).contains("RESULT: OK"));
    assert!(stdout(&output).contains("40 accounts"));
    let as_of = current_as_of(&app, &first.customer_name, &first.account_number).await;
    assert_eq!(as_of.unwrap().to_string(), "2026-11-22T21:00:00Z");

    let again = run_loader(&[
        "load",
        good.to_str().unwrap(),
        "--portfolio-url",
        &url,
        "--deposit-url",
        &deposit_url,
        "--as-of",
        "2026-11-23T06:00:00+09:00",
    ])
    .await;
    assert_eq!(again.status.code(), Some(0));
    assert!(stdout(&again).contains("unchanged"), "{}", stdout(&again));

    // Above the reject ratio: nothing is pushed, yesterday stays.
    let refused = run_loader(&[
        "load",
        bad.to_str().unwrap(),
        "--portfolio-url",
        &url,
        "--deposit-url",
        &deposit_url,
        "--as-of",
        "2026-11-24T06:00:00+09:00",
        "--max-reject-ratio",
        "1%",
        "--rejects",
        rejects.to_str().unwrap(),
    ])
    .await;
    assert_eq!(refused.status.code(), Some(4), "{}", stdout(&refused));
    assert!(stdout(&refused).contains("NOT LOADED"));
    assert_eq!(
        current_as_of(&app, &first.customer_name, &first.account_number).await,
        as_of
    );
    let lines = std::fs::read_to_string(&rejects).unwrap();
    let first_reject: serde_json::Value =
        serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    for key in ["file", "line", "rule", "detail", "raw"] {
        assert!(first_reject.get(key).is_some(), "{key} in {first_reject}");
    }

    // Within a generous ratio the same day loads, rejects and all.
    let accepted = run_loader(&[
        "load",
        bad.to_str().unwrap(),
        "--portfolio-url",
        &url,
        "--deposit-url",
        &deposit_url,
        "--as-of",
        "2026-11-24T06:00:00+09:00",
        "--max-reject-ratio",
        "0.5",
    ])
    .await;
    assert_eq!(accepted.status.code(), Some(0), "{}", stdout(&accepted));
    assert_ne!(
        current_as_of(&app, &first.customer_name, &first.account_number).await,
        as_of
    );

    // A service that cannot be reached: exit 5, and the summary says which (here the
    // shrink guard's read of the current day already fails).
    let unreachable = run_loader(&[
        "load",
        good.to_str().unwrap(),
        "--portfolio-url",
        "http://127.0.0.1:1",
        "--deposit-url",
        &deposit_url,
        "--attempts",
        "1",
        "--as-of",
        "now",
    ])
    .await;
    assert_eq!(
        unreachable.status.code(),
        Some(5),
        "{}",
        stdout(&unreachable)
    );
    assert!(stdout(&unreachable).contains("cannot read the day portfolio-svc serves now"));

    // No as_of: exit 2 before anything is read, and the message says why it matters.
    let no_as_of = run_loader(&[
        "load",
        good.to_str().unwrap(),
        "--portfolio-url",
        &url,
        "--deposit-url",
        &deposit_url,
    ])
    .await;
    assert_eq!(no_as_of.status.code(), Some(2), "{}", stdout(&no_as_of));
    let why = String::from_utf8_lossy(&no_as_of.stderr);
    assert!(
        why.contains("--as-of") && why.contains("--cutoff") && why.contains("hides"),
        "{why}"
    );
    assert!(stdout(&no_as_of).is_empty(), "nothing was cleaned");
    // An as_of in the future is refused the same way.
    let future = run_loader(&[
        "load",
        good.to_str().unwrap(),
        "--portfolio-url",
        &url,
        "--deposit-url",
        &deposit_url,
        "--as-of",
        "2999-01-01T00:00:00Z",
    ])
    .await;
    assert_eq!(future.status.code(), Some(2));

    // A folder that is not a delivery: exit 3.
    let missing = run_loader(&["validate", work.path().to_str().unwrap()]).await;
    assert_eq!(missing.status.code(), Some(3));

    // A token for grpcurl verifies with the shared secret.
    let token = run_loader(&[
        "token",
        "--sub",
        "류영길",
        "--scope",
        "accounts:read",
        "--ttl",
        "5m",
    ])
    .await;
    assert_eq!(token.status.code(), Some(0));
    let caller = app.keys.verify(stdout(&token).trim()).unwrap();
    assert_eq!(caller.subject, "류영길");
    assert!(caller.has_scope("accounts:read"));
}

/// The whole system: the loader feeds both services, then a customer deposits in two phases
/// and sees it on the detail screen.
async fn a_loaded_day_takes_deposits(backend: Backend) {
    let Some(app) = TestPortfolio::spawn(backend).await else {
        return;
    };
    let Some(deposit) = TestDeposit::spawn(backend, &app.url()).await else {
        return;
    };
    let day = tempfile::tempdir().unwrap();
    let options = GenOptions {
        accounts: 30,
        seed: 11,
        ..GenOptions::default()
    };
    invest_daygen::write_day(day.path(), &options).unwrap();
    let yesterday =
        invest_proto::time::from_micros(invest_proto::time::now_micros() - 86_400_000_000)
            .to_string();

    // deposit-svc is unreachable at first: the summary names it and the exit code says so,
    // and portfolio-svc does not take the day either (its stream is cancelled, not ended).
    let dir = day.path().to_str().unwrap();
    let partial = run_loader(&[
        "load",
        dir,
        "--portfolio-url",
        &app.url(),
        "--deposit-url",
        "http://127.0.0.1:1",
        "--attempts",
        "1",
        "--as-of",
        &yesterday,
    ])
    .await;
    assert_eq!(partial.status.code(), Some(5), "{}", stdout(&partial));
    assert!(
        stdout(&partial).contains("portfolio-svc: NOT LOADED")
            && stdout(&partial).contains("because deposit-svc failed"),
        "{}",
        stdout(&partial)
    );
    assert!(stdout(&partial).contains("deposit-svc: FAILED"));
    let snapshots = app
        .ingest()
        .await
        .list_snapshots(pb::ListSnapshotsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        snapshots.snapshots.iter().all(|s| !s.current),
        "{snapshots:?}"
    );

    // Re-running the same day with both up loads it into both.
    let repaired = run_loader(&[
        "load",
        dir,
        "--portfolio-url",
        &app.url(),
        "--deposit-url",
        &deposit.url(),
        "--as-of",
        &yesterday,
    ])
    .await;
    assert_eq!(repaired.status.code(), Some(0), "{}", stdout(&repaired));
    assert!(stdout(&repaired).contains("portfolio-svc: loaded"));
    assert!(stdout(&repaired).contains("deposit-svc: loaded: directory"));

    let account = invest_daygen::accounts(&options).unwrap().nth(3).unwrap();
    let (number, owner) = (
        account.account_number.as_str(),
        account.customer_name.as_str(),
    );
    let before = app
        .screens(owner)
        .await
        .get_account(pb::GetAccountRequest {
            account_number: number.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let cash_before: i64 = account
        .holdings
        .iter()
        .filter(|h| h.isin == "CASH")
        .map(|h| h.quantity * h.current_price)
        .sum();

    let mut deposits = deposit.deposits(owner).await;
    let transfer = deposits
        .register_deposit(deposit_pb::RegisterDepositRequest {
            account_number: number.into(),
            customer_name: owner.into(),
            amount: 50_000,
            request_id: "e2e-1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .transfer_id;
    let confirmed = deposits
        .confirm_deposit(deposit_pb::ConfirmDepositRequest {
            transfer_id: transfer,
            signature: sign(number, owner, 50_000),
        })
        .await
        .unwrap()
        .into_inner()
        .deposit
        .unwrap();
    assert!(confirmed.applied);

    let mut screens = app.screens(owner).await;
    let after = screens
        .get_account(pb::GetAccountRequest {
            account_number: number.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.principal, before.principal + 50_000);
    assert_eq!(after.total_assets, before.total_assets + 50_000);
    assert_eq!(after.total_profit, before.total_profit);
    let cash = screens
        .list_holdings(pb::ListHoldingsRequest {
            account_number: number.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .holdings
        .into_iter()
        .find(|h| h.isin == "CASH")
        .unwrap();
    assert_eq!(cash.valuation, cash_before + 50_000);
}

backend_tests!(
    the_sample_loads,
    a_generated_day_matches_the_truth,
    the_binary_loads_reports_and_protects,
    a_loaded_day_takes_deposits,
);
