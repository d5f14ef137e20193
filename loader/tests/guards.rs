//! The failures, end to end: the real `loader` binary against portfolio-svc and
//! deposit-svc started in-process on SQLite and PostgreSQL. A stray quote costs one row; a
//! NUL byte is a reject on every backend; a day that lost accounts, or is much smaller than
//! the current one, is refused with nothing pushed; and one service never takes a day the
//! other refused.

use std::{path::Path, process::Output};

use deposit_svc::testkit::TestDeposit;
use invest_daygen::{CsvFormat, GenOptions};
use invest_proto::{
    deposit::v1 as deposit_pb,
    portfolio::v1::{self as pb, SnapshotRecord},
};
use invest_runtime::{backend_tests, testkit::Backend};
use portfolio_svc::testkit::{TEST_SECRET, TestPortfolio};
use tonic::Code;

const HOLDINGS: &str = "account_asset_info_set.csv";
const PRINCIPAL: &str = "account_basic_info_set.csv";

async fn run_loader(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_loader"))
        .args(args)
        .env("INVEST_JWT_SECRET", TEST_SECRET)
        .env_remove("INVEST_JWT_SECRET_FILE")
        .env_remove("LOADER_PORTFOLIO_URL")
        .env_remove("LOADER_DEPOSIT_URL")
        .env_remove("LOADER_AS_OF")
        .env_remove("LOADER_CUTOFF")
        .env("LOADER_LOG_FORMAT", "json")
        .output()
        .await
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn shown(output: &Output) -> String {
    format!(
        "exit {:?}\n{}{}",
        output.status.code(),
        stdout(output),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Both services, on one backend.
struct Services {
    portfolio: TestPortfolio,
    deposit: TestDeposit,
}

impl Services {
    async fn spawn(backend: Backend) -> Option<Self> {
        let portfolio = TestPortfolio::spawn(backend).await?;
        let deposit = TestDeposit::spawn(backend, &portfolio.url()).await?;
        Some(Self { portfolio, deposit })
    }

    async fn load(&self, dir: &Path, as_of: &str, extra: &[&str]) -> Output {
        let (portfolio, deposit) = (self.portfolio.url(), self.deposit.url());
        let mut args = vec![
            "load",
            dir.to_str().unwrap(),
            "--portfolio-url",
            &portfolio,
            "--deposit-url",
            &deposit,
            "--as-of",
            as_of,
            "--attempts",
            "1",
        ];
        args.extend_from_slice(extra);
        run_loader(&args).await
    }

    async fn validate(&self, dir: &Path, extra: &[&str]) -> Output {
        let portfolio = self.portfolio.url();
        let mut args = vec![
            "validate",
            dir.to_str().unwrap(),
            "--portfolio-url",
            &portfolio,
        ];
        args.extend_from_slice(extra);
        run_loader(&args).await
    }

    /// The snapshots portfolio-svc kept, newest first.
    async fn snapshots(&self) -> Vec<SnapshotRecord> {
        self.portfolio
            .ingest()
            .await
            .list_snapshots(pb::ListSnapshotsRequest {
                page_size: 100,
                page_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .snapshots
    }

    async fn current(&self) -> Option<SnapshotRecord> {
        self.snapshots().await.into_iter().find(|s| s.current)
    }

    /// Whether deposit-svc's directory knows the account (a deposit can be registered).
    async fn directory_knows(&self, account: &str, owner: &str) -> bool {
        let registered = self
            .deposit
            .deposits(owner)
            .await
            .register_deposit(deposit_pb::RegisterDepositRequest {
                account_number: account.into(),
                customer_name: owner.into(),
                amount: 1_000,
                request_id: String::new(),
            })
            .await;
        match registered {
            Ok(_) => true,
            Err(status) if status.code() == Code::NotFound => false,
            Err(status) => panic!("RegisterDeposit: {status:?}"),
        }
    }
}

fn rejects_of(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn generated(dir: &Path, accounts: u64, seed: u64) -> GenOptions {
    let options = GenOptions {
        accounts,
        seed,
        format: CsvFormat::plain(),
        ..GenOptions::default()
    };
    invest_daygen::write_day(dir, &options).unwrap();
    options
}

/// (a) The issue's first failure: one `"` at the start of a line 70% into the holdings file
/// of a plain day of 20,000 accounts. `validate` and `load` agree, exactly one row is
/// rejected (`unclosed_quote`), and the services hold every other row.
async fn a_stray_quote_costs_one_row(backend: Backend) {
    let Some(services) = Services::spawn(backend).await else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let day = work.path().join("day");
    let options = generated(&day, 20_000, 3);
    let path = day.join(HOLDINGS);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let at = lines.len() * 7 / 10;
    let hit: Vec<String> = lines[at].split(',').map(str::to_owned).collect();
    lines[at] = format!("\"{}", lines[at]);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let (account, isin) = (hit[2].clone(), hit[4].clone());

    let truth: Vec<invest_daygen::GenAccount> =
        invest_daygen::accounts(&options).unwrap().collect();
    let total_holdings: usize = truth.iter().map(|a| a.holdings.len()).sum();
    let hit_account = truth.iter().find(|a| a.account_number == account).unwrap();
    let expected_accounts = if hit_account.holdings.len() == 1 {
        19_999
    } else {
        20_000
    };

    let validate_rejects = work.path().join("validate.jsonl");
    let validated = services
        .validate(&day, &["--rejects", validate_rejects.to_str().unwrap()])
        .await;
    assert_eq!(validated.status.code(), Some(0), "{}", shown(&validated));
    assert!(stdout(&validated).contains("VALID"));
    assert!(stdout(&validated).contains("a first day passes"));

    let load_rejects = work.path().join("load.jsonl");
    let loaded = services
        .load(
            &day,
            "2026-11-23T04:00:00+09:00",
            &["--rejects", load_rejects.to_str().unwrap()],
        )
        .await;
    assert_eq!(loaded.status.code(), Some(0), "{}", shown(&loaded));
    for path in [&validate_rejects, &load_rejects] {
        let rejects = rejects_of(path);
        let unclosed: Vec<_> = rejects
            .iter()
            .filter(|r| r["rule"] == "unclosed_quote")
            .collect();
        assert_eq!(unclosed.len(), 1, "{rejects:?}");
        assert_eq!(unclosed[0]["line"], at as u64 + 1);
        assert_eq!(rejects.len(), 1 + usize::from(expected_accounts == 19_999));
    }
    let current = services.current().await.unwrap();
    assert_eq!(current.accounts, expected_accounts);
    assert_eq!(current.holdings as usize, total_holdings - 1);

    // The account of the broken row lost exactly that holding.
    if expected_accounts == 20_000 {
        let holdings = services
            .portfolio
            .screens(&hit_account.customer_name)
            .await
            .list_holdings(pb::ListHoldingsRequest {
                account_number: account.clone(),
                page_size: 1000,
                page_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .holdings;
        assert_eq!(holdings.len(), hit_account.holdings.len() - 1);
        assert!(holdings.iter().all(|h| h.isin != isin));
    }
}

/// (b) A NUL byte inside a quoted customer name is a `control_character` reject, and the
/// day loads on every backend (PostgreSQL cannot store NUL at all).
async fn a_nul_byte_is_a_reject_on_every_backend(backend: Backend) {
    let Some(services) = Services::spawn(backend).await else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let day = work.path().join("day");
    let options = generated(&day, 60, 21);
    // The account with the fewest holdings; each of its rows gets the NUL, so the name
    // is the majority (a lone odd row would be rejected as a minority anyway).
    let truth: Vec<invest_daygen::GenAccount> =
        invest_daygen::accounts(&options).unwrap().collect();
    let victim = truth.iter().min_by_key(|a| a.holdings.len()).unwrap();
    let path = day.join(HOLDINGS);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut changed = 0;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            if fields.get(2) == Some(&victim.account_number.as_str()) {
                changed += 1;
                let name = format!("\"{}\0\"", fields[0]);
                std::iter::once(name.as_str())
                    .chain(fields[1..].iter().copied())
                    .collect::<Vec<_>>()
                    .join(",")
            } else {
                line.to_owned()
            }
        })
        .collect();
    assert_eq!(changed, victim.holdings.len());
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();

    let rejects = work.path().join("rejects.jsonl");
    let loaded = services
        .load(
            &day,
            "2026-11-23T04:00:00+09:00",
            &["--rejects", rejects.to_str().unwrap()],
        )
        .await;
    assert_eq!(loaded.status.code(), Some(0), "{}", shown(&loaded));
    let rejects = rejects_of(&rejects);
    let by_rule = |rule: &str| rejects.iter().filter(|r| r["rule"] == rule).count();
    assert_eq!(by_rule("control_character"), victim.holdings.len());
    assert_eq!(by_rule("account_without_holdings"), 1);
    assert!(
        rejects[0]["detail"].as_str().unwrap().contains("U+0000"),
        "{rejects:?}"
    );
    let current = services.current().await.unwrap();
    assert_eq!(current.accounts, 59);
    assert!(
        !services
            .directory_knows(&victim.account_number, &victim.customer_name)
            .await
    );
}

/// (c) A day with half the accounts of the current one is refused (exit 4, nothing pushed
/// to either service) unless the operator says `--allow-shrink`.
async fn a_much_smaller_day_is_refused(backend: Backend) {
    let Some(services) = Services::spawn(backend).await else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let (full, half) = (work.path().join("full"), work.path().join("half"));
    let full_options = generated(&full, 40, 5);
    generated(&half, 20, 6);
    let loaded = services.load(&full, "2026-11-23T04:00:00+09:00", &[]).await;
    assert_eq!(loaded.status.code(), Some(0), "{}", shown(&loaded));
    let before = services.current().await.unwrap();
    assert_eq!(before.accounts, 40);
    let gone = invest_daygen::accounts(&full_options)
        .unwrap()
        .next()
        .unwrap();
    assert!(
        services
            .directory_knows(&gone.account_number, &gone.customer_name)
            .await
    );

    let validated = services.validate(&half, &[]).await;
    assert_eq!(validated.status.code(), Some(4), "{}", shown(&validated));
    let report = work.path().join("report.json");
    let refused = services
        .load(
            &half,
            "2026-11-24T04:00:00+09:00",
            &["--report-json", report.to_str().unwrap()],
        )
        .await;
    assert_eq!(refused.status.code(), Some(4), "{}", shown(&refused));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(report["shrink_guard"]["status"], "checked");
    assert_eq!(report["shrink_guard"]["current"]["accounts"], 40);
    assert!(
        report["shrink_guard"]["tripped"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("accounts"))
    );
    assert!(
        report["loss_guard"]["tripped"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(
        report["verdict"]
            .as_str()
            .unwrap()
            .contains("--allow-shrink"),
        "{report}"
    );
    assert_eq!(report["accounts"]["named"], 20);
    for output in [&validated, &refused] {
        let text = stdout(output);
        assert!(
            text.contains("accounts 40 -> 20 (50.00% fewer)")
                && text.contains("--allow-shrink")
                && text.contains("NOT LOADED"),
            "{text}"
        );
    }
    assert_eq!(services.current().await.unwrap(), before);
    let detail = services
        .portfolio
        .screens(&gone.customer_name)
        .await
        .get_account(pb::GetAccountRequest {
            account_number: gone.account_number.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(detail.as_of, before.as_of);
    assert!(
        services
            .directory_knows(&gone.account_number, &gone.customer_name)
            .await,
        "deposit-svc kept its directory"
    );

    let allowed = services
        .load(&half, "2026-11-24T04:00:00+09:00", &["--allow-shrink"])
        .await;
    assert_eq!(allowed.status.code(), Some(0), "{}", shown(&allowed));
    assert!(stdout(&allowed).contains("--allow-shrink given: loading anyway"));
    assert_eq!(services.current().await.unwrap().accounts, 20);
}

/// (d) A principal file that lost half its rows (the smallest accounts', so that few rows
/// go) is refused for the accounts it lost, although the row and holding ratios alone
/// would pass.
async fn a_day_that_lost_accounts_is_refused(backend: Backend) {
    let Some(services) = Services::spawn(backend).await else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let day = work.path().join("day");
    let options = generated(&day, 60, 8);
    let mut truth: Vec<invest_daygen::GenAccount> =
        invest_daygen::accounts(&options).unwrap().collect();
    truth.sort_by_key(|a| a.holdings.len());
    let dropped: Vec<String> = truth[..30]
        .iter()
        .map(|a| a.account_number.clone())
        .collect();
    let lost_holdings: usize = truth[..30].iter().map(|a| a.holdings.len()).sum();
    let holdings: usize = truth.iter().map(|a| a.holdings.len()).sum();
    let path = day.join(PRINCIPAL);
    let text = std::fs::read_to_string(&path).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .filter(|line| !dropped.iter().any(|n| line.starts_with(&format!("{n},"))))
        .collect();
    assert_eq!(kept.len(), 31);
    std::fs::write(&path, kept.join("\n") + "\n").unwrap();

    // Rows read: instruments + 30 principal + every holding; rows rejected: the holdings of
    // the 30 accounts. A limit between those ratios and the accounts' 50% isolates it.
    // The limit is halfway between the holdings' ratio and the accounts' 1/2 (the rows'
    // ratio is below the holdings': more rows read, as many rejected).
    assert!(
        2 * lost_holdings < holdings,
        "{lost_holdings} of {holdings}"
    );
    let limit = format!("{}/{}", 2 * lost_holdings + holdings, 4 * holdings);

    let validated = services
        .validate(&day, &["--max-reject-ratio", &limit])
        .await;
    let refused = services
        .load(
            &day,
            "2026-11-23T04:00:00+09:00",
            &["--max-reject-ratio", &limit],
        )
        .await;
    for output in [&validated, &refused] {
        assert_eq!(output.status.code(), Some(4), "{}", shown(output));
        let text = stdout(output);
        let tripped: Vec<&str> = text.lines().filter(|l| l.ends_with("TRIPPED")).collect();
        assert_eq!(tripped.len(), 1, "{text}");
        assert!(
            tripped[0].contains("accounts lost") && tripped[0].contains("(30 of 60 accounts"),
            "{text}"
        );
        assert!(text.contains("NOT LOADED: the day failed the loss guard: accounts lost 50.00%"));
    }
    assert_eq!(services.current().await, None);
}

/// (g) deposit-svc is down (nothing listens) while portfolio-svc is up: portfolio-svc
/// receives the whole day, but its stream is held open and then broken off, so it does not
/// switch days; once deposit-svc is reachable, the same command loads both.
async fn one_service_never_takes_a_day_the_other_refuses(backend: Backend) {
    let Some(services) = Services::spawn(backend).await else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let (first, second) = (work.path().join("first"), work.path().join("second"));
    generated(&first, 30, 12);
    generated(&second, 30, 13);
    let loaded = services
        .load(&first, "2026-11-21T04:00:00+09:00", &[])
        .await;
    assert_eq!(loaded.status.code(), Some(0), "{}", shown(&loaded));
    let before = services.current().await.unwrap();

    // A port nothing listens on: the connection is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let portfolio_url = services.portfolio.url();
    let args = |deposit_url: &str| {
        [
            "load",
            second.to_str().unwrap(),
            "--portfolio-url",
            &portfolio_url,
            "--deposit-url",
            deposit_url,
            "--as-of",
            "2026-11-22T04:00:00+09:00",
            "--attempts",
            "1",
        ]
        .map(str::to_owned)
    };
    let refused = run_loader(&args(&down).each_ref().map(String::as_str)).await;
    assert_eq!(refused.status.code(), Some(5), "{}", shown(&refused));
    let text = stdout(&refused);
    assert!(text.contains("deposit-svc: FAILED"), "{text}");
    assert!(
        text.contains(
            "portfolio-svc: NOT LOADED: its stream was cancelled before its end because deposit-svc failed"
        ),
        "{text}"
    );
    assert_eq!(services.current().await.unwrap(), before);

    let deposit_url = services.deposit.url();
    let repaired = run_loader(&args(&deposit_url).each_ref().map(String::as_str)).await;
    assert_eq!(repaired.status.code(), Some(0), "{}", shown(&repaired));
    let after = services.current().await.unwrap();
    assert_ne!(after.as_of, before.as_of);
}

backend_tests!(
    a_stray_quote_costs_one_row,
    a_nul_byte_is_a_reject_on_every_backend,
    a_much_smaller_day_is_refused,
    a_day_that_lost_accounts_is_refused,
    one_service_never_takes_a_day_the_other_refuses,
);
