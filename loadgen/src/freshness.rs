//! `loadgen freshness`: how long a deposit applied through one portfolio-svc replica takes to
//! show on another.
//!
//! One deposit of 1 won at a time goes to replica A (`PortfolioLedger.ApplyDeposit`, as
//! deposit-svc sends it); as soon as A answers, replica B is read (`GetAccount`, as the
//! account's owner) in a tight loop until its principal counts every deposit so far. The delay
//! of a deposit runs from A's answer (and, second figure, from the start of the call to A) to
//! the start of the first read of B that showed it. The account must not be credited by
//! anything else during the run.

use std::{
    fmt::Write as _,
    io::Write,
    sync::Arc,
    time::{Duration, Instant},
};

use invest_proto::{
    auth::{JwtKeys, SCOPE_ACCOUNTS_READ, ServiceToken},
    portfolio::v1::{GetAccountRequest, portfolio_service_client::PortfolioServiceClient},
};
use serde::{Serialize, Serializer};
use tonic::{service::interceptor::InterceptedService, transport::Channel};

use crate::{
    ledger::{self, LedgerClient, LedgerError, RPC_TIMEOUT},
    report::readable_us,
    workload::{Failure, within},
};

/// The settings of one measurement, as reported.
#[derive(Debug, Clone, Serialize)]
pub struct FreshnessConfig {
    /// Replica A: the deposits are applied through it.
    pub apply_url: String,
    /// Replica B: it is read.
    pub read_url: String,
    /// Accounts of the generated day.
    pub accounts: u64,
    /// Its seed.
    pub seed: u64,
    /// Its instruments.
    pub instruments: usize,
    /// Position of the account in the day (from 0).
    pub account_index: u64,
    /// The account credited and read.
    pub account_number: String,
    /// Its owner (the reading token's subject).
    pub owner: String,
    /// Deposits of 1 won.
    pub count: u64,
    /// How long B may take to show one deposit before it counts as a timeout.
    #[serde(rename = "give_up_s", serialize_with = "seconds")]
    pub give_up: Duration,
    /// `--json`.
    pub json: Option<String>,
}

fn seconds<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64())
}

/// Percentiles of delays in microseconds (nearest rank: exact, no interpolation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DelaySummary {
    /// Delays summarised.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest.
    pub max: u64,
}

impl DelaySummary {
    /// The summary of `delays`, or `None` when there is none.
    pub fn of(delays: &[Duration]) -> Option<Self> {
        let mut micros: Vec<u64> = delays
            .iter()
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .collect();
        micros.sort_unstable();
        let count = micros.len();
        // The smallest value that at least `percent` % of the delays do not exceed.
        let at = |percent: usize| {
            let rank = (count * percent).div_ceil(100).clamp(1, count);
            micros[rank - 1]
        };
        let max = *micros.last()?;
        Some(Self {
            count: count as u64,
            p50: at(50),
            p90: at(90),
            p99: at(99),
            max,
        })
    }
}

/// What a measurement found.
#[derive(Debug, Clone, Serialize)]
pub struct FreshnessReport {
    /// The settings.
    pub config: FreshnessConfig,
    /// The principal B showed before the first deposit.
    pub baseline_principal: i64,
    /// Deposits applied through A.
    pub applied: u64,
    /// Of them, shown by B within `give_up_s`.
    pub seen: u64,
    /// Of them, not shown by B within `give_up_s`.
    pub timeouts: u64,
    /// Delay from A's answer to the start of the first read of B that showed the deposit.
    pub after_apply_us: Option<DelaySummary>,
    /// The same, from the start of the call to A.
    pub from_call_us: Option<DelaySummary>,
    /// Reads of B until it showed a deposit, on average over the deposits seen (1: at once).
    pub reads_per_deposit: Option<f64>,
    /// Every deposit was seen in time.
    pub ok: bool,
}

/// Reads as the account's owner (`accounts:read`), its token renewed however long the run.
type ReadClient = PortfolioServiceClient<InterceptedService<Channel, ServiceToken>>;

/// How one deposit went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// B showed it.
    Seen {
        after_apply: Duration,
        from_call: Duration,
        reads: u64,
    },
    /// B did not show it in time.
    TimedOut,
}

/// Measures `config.count` deposits (tokens signed with `keys`), printing the table to
/// `out`; the caller prints the verdict and writes the JSON.
pub async fn measure(
    config: FreshnessConfig,
    keys: Arc<JwtKeys>,
    out: &mut (dyn Write + Send),
) -> Result<FreshnessReport, LedgerError> {
    let mut ledger = ledger::ledger_client(
        invest_cli::connect(&config.apply_url, 1).await?,
        keys.clone(),
    );
    let mut reader = PortfolioServiceClient::with_interceptor(
        invest_cli::connect(&config.read_url, 1).await?,
        ServiceToken::new(keys, config.owner.clone(), &[SCOPE_ACCOUNTS_READ]),
    );
    let account = config.account_number.clone();
    let baseline = within(
        "GetAccount",
        RPC_TIMEOUT,
        reader.get_account(GetAccountRequest {
            account_number: account.clone(),
        }),
    )
    .await?
    .principal;
    writeln!(
        out,
        "freshness: {} deposits of 1 won to account {} (principal {baseline} won), applied through {}, read through {}",
        config.count, account, config.apply_url, config.read_url
    )?;

    let mut after_apply = Vec::new();
    let mut from_call = Vec::new();
    let mut reads = 0;
    let mut timeouts = 0;
    for applied in 1..=config.count {
        let expected = i64::try_from(applied)
            .ok()
            .and_then(|won| baseline.checked_add(won))
            .ok_or_else(|| LedgerError::Overflow {
                account: account.clone(),
                baseline,
                deposits: applied,
            })?;
        match one(&mut ledger, &mut reader, &account, expected, config.give_up).await? {
            Outcome::Seen {
                after_apply: delay,
                from_call: total,
                reads: taken,
            } => {
                after_apply.push(delay);
                from_call.push(total);
                reads += taken;
            }
            Outcome::TimedOut => {
                timeouts += 1;
                tracing::warn!(
                    deposit = applied,
                    "replica B did not show the deposit within {}",
                    humantime::format_duration(config.give_up)
                );
            }
        }
    }

    let seen = after_apply.len() as u64;
    let report = FreshnessReport {
        baseline_principal: baseline,
        applied: config.count,
        seen,
        timeouts,
        after_apply_us: DelaySummary::of(&after_apply),
        from_call_us: DelaySummary::of(&from_call),
        reads_per_deposit: (seen > 0).then(|| reads as f64 / seen as f64),
        ok: timeouts == 0,
        config,
    };
    write!(out, "{}", render(&report))?;
    Ok(report)
}

/// Applies one deposit through A, then reads B until its principal is `expected`.
async fn one(
    ledger: &mut LedgerClient,
    reader: &mut ReadClient,
    account: &str,
    expected: i64,
    give_up: Duration,
) -> Result<Outcome, LedgerError> {
    let request = ledger::deposit_now(account, 1)?;
    let called = Instant::now();
    ledger::apply(ledger, request).await?;
    let applied = Instant::now();
    let mut reads = 0;
    loop {
        let read = Instant::now();
        let remaining = give_up.saturating_sub(read.saturating_duration_since(applied));
        if remaining.is_zero() {
            return Ok(Outcome::TimedOut);
        }
        reads += 1;
        let call = reader.get_account(GetAccountRequest {
            account_number: account.to_owned(),
        });
        // A read may take what is left of the time given to this deposit, no more.
        let principal = match tokio::time::timeout(remaining, call).await {
            Ok(Ok(response)) => response.into_inner().principal,
            Ok(Err(status)) => {
                return Err(Failure {
                    method: "GetAccount",
                    status,
                }
                .into());
            }
            Err(_) => return Ok(Outcome::TimedOut),
        };
        if principal == expected {
            return Ok(Outcome::Seen {
                after_apply: read.saturating_duration_since(applied),
                from_call: read.saturating_duration_since(called),
                reads,
            });
        }
        if principal > expected {
            return Err(LedgerError::Interference {
                account: account.to_owned(),
                expected,
                seen: principal,
            });
        }
        // No sleep: only let the runtime's other tasks (the connections) run.
        tokio::task::yield_now().await;
    }
}

/// The table of a report.
pub fn render(report: &FreshnessReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "  {:<26} {:>7} {:>9} {:>9} {:>9} {:>9}",
        "delay until B shows it", "count", "p50", "p90", "p99", "max"
    );
    for (name, summary) in [
        ("after ApplyDeposit's OK", &report.after_apply_us),
        ("from the ApplyDeposit call", &report.from_call_us),
    ] {
        match summary {
            Some(s) => {
                let _ = writeln!(
                    out,
                    "  {:<26} {:>7} {:>9} {:>9} {:>9} {:>9}",
                    name,
                    s.count,
                    readable_us(s.p50),
                    readable_us(s.p90),
                    readable_us(s.p99),
                    readable_us(s.max)
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "  {:<26} {:>7} {:>9} {:>9} {:>9} {:>9}",
                    name, 0, "-", "-", "-", "-"
                );
            }
        }
    }
    let reads = report
        .reads_per_deposit
        .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}"));
    let _ = writeln!(
        out,
        "  reads of B per deposit seen: {reads} on average; {} of {} deposits not shown within {}",
        report.timeouts,
        report.applied,
        humantime::format_duration(report.config.give_up)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::fake;

    #[test]
    fn percentiles_are_nearest_ranks() {
        let ms = |n: u64| Duration::from_millis(n);
        // 1..=100 ms, shuffled.
        let delays: Vec<Duration> = (1..=100).rev().map(ms).collect();
        let summary = DelaySummary::of(&delays).unwrap();
        assert_eq!(
            summary,
            DelaySummary {
                count: 100,
                p50: 50_000,
                p90: 90_000,
                p99: 99_000,
                max: 100_000
            }
        );
        let one = DelaySummary::of(&[Duration::from_micros(7)]).unwrap();
        assert_eq!((one.p50, one.p99, one.max, one.count), (7, 7, 7, 1));
        // Ten delays: p50 is the 5th, p90 the 9th, p99 the 10th.
        let ten: Vec<Duration> = (1..=10).map(ms).collect();
        let summary = DelaySummary::of(&ten).unwrap();
        assert_eq!(
            (summary.p50, summary.p90, summary.p99),
            (5_000, 9_000, 10_000)
        );
        assert_eq!(DelaySummary::of(&[]), None);
    }

    fn config(url: &str, count: u64, give_up: Duration) -> FreshnessConfig {
        FreshnessConfig {
            apply_url: url.to_owned(),
            read_url: url.to_owned(),
            accounts: 1,
            seed: 1,
            instruments: 14,
            account_index: 0,
            account_number: "12345678".to_owned(),
            owner: "고객".to_owned(),
            count,
            give_up,
            json: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lagging_replica_is_measured() {
        // B shows each credit from the third read after it.
        let server = fake::start("고객", "12345678", 3).await;
        let keys = Arc::new(JwtKeys::from_secret(fake::SECRET));
        let mut out = Vec::new();
        let report = measure(
            config(&server.url, 20, Duration::from_secs(10)),
            keys,
            &mut out,
        )
        .await
        .unwrap();
        let text = String::from_utf8(out).unwrap();

        assert!(report.ok, "{text}");
        assert_eq!(report.baseline_principal, fake::BASELINE);
        assert_eq!((report.applied, report.seen, report.timeouts), (20, 20, 0));
        assert_eq!(report.reads_per_deposit, Some(3.0));
        let (after, from) = (report.after_apply_us.unwrap(), report.from_call_us.unwrap());
        assert_eq!(after.count, 20);
        assert!(after.p50 <= after.p90 && after.p90 <= after.p99 && after.p99 <= after.max);
        assert!(after.p50 > 0, "two reads of B came before");
        assert!(
            from.p50 >= after.p50 && from.max >= after.max,
            "the call came first"
        );
        assert_eq!(server.state.lock().unwrap().credited, 20);
        let row: Vec<&str> = text
            .lines()
            .find(|line| line.trim_start().starts_with("after ApplyDeposit's OK"))
            .unwrap()
            .split_whitespace()
            .collect();
        assert_eq!(row.len(), 8, "{text}");
        assert_eq!(row[3], "20", "the count column: {text}");
        assert!(text.contains("3.00 on average; 0 of 20"), "{text}");

        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["config"]["give_up_s"], 10.0);
        assert_eq!(json["after_apply_us"]["count"], 20);
        assert_eq!(json["reads_per_deposit"], 3.0);
        assert_eq!(json["ok"], true);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replica_that_never_shows_times_out() {
        let server = fake::start("고객", "12345678", u32::MAX).await;
        let keys = Arc::new(JwtKeys::from_secret(fake::SECRET));
        let mut out = Vec::new();
        let report = measure(
            config(&server.url, 2, Duration::from_millis(50)),
            keys,
            &mut out,
        )
        .await
        .unwrap();
        assert!(!report.ok);
        assert_eq!((report.applied, report.seen, report.timeouts), (2, 0, 2));
        assert_eq!(report.after_apply_us, None);
        assert_eq!(report.reads_per_deposit, None);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("2 of 2 deposits not shown within 50ms"),
            "{text}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wrong_owner_is_an_rpc_failure() {
        let server = fake::start("someone else", "12345678", 1).await;
        let keys = Arc::new(JwtKeys::from_secret(fake::SECRET));
        // Not the owner's account: NOT_FOUND from the baseline read on.
        let err = measure(
            config(&server.url, 1, Duration::from_secs(1)),
            keys,
            &mut Vec::new(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, LedgerError::Rpc(_)), "{err}");
        assert!(
            err.to_string().starts_with("GetAccount failed: NOT_FOUND"),
            "{err}"
        );
        assert_eq!(server.state.lock().unwrap().credited, 0);
    }
}
