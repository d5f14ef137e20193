//! The report of a benchmark: the JSON document (`--json`) and the tables on stdout.

use std::{collections::BTreeMap, fmt::Write as _};

use hdrhistogram::errors::AdditionError;
use serde::Serialize;

use crate::{
    mix::{Mix, Operation},
    stats::OperationReport,
    workload::RunResult,
};

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Every option of the run.
    pub config: ConfigReport,
    /// Against the real servers; null with `--ceiling-only`.
    pub real: Option<TargetReport>,
    /// Against the no-op server; null without `--ceiling` or `--ceiling-only`.
    pub ceiling: Option<TargetReport>,
    /// real / ceiling per RPC (and `total`); null unless both ran.
    pub ratios: Option<BTreeMap<String, RatioReport>>,
    /// Errors of every kind, measured or not, over both targets.
    pub unexpected_errors: u64,
    /// No error at all.
    pub ok: bool,
}

/// The options, as used.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigReport {
    /// portfolio-svc.
    pub portfolio_url: String,
    /// deposit-svc.
    pub deposit_url: String,
    /// Accounts of the generated day.
    pub accounts: u64,
    /// Its seed.
    pub seed: u64,
    /// Its instruments.
    pub instruments: usize,
    /// Most accounts sampled.
    pub sample: usize,
    /// Accounts sampled.
    pub sampled_accounts: usize,
    /// Their distinct owners (one token each).
    pub sampled_customers: usize,
    /// Every `stride`-th account was sampled (0 with `--only-account`).
    pub stride: u64,
    /// `--only-account`: the one account acted on, if any.
    pub only_account: Option<String>,
    /// Weight per operation (`get_account`, `list_holdings`, `list_accounts`, `deposit`).
    pub mix: BTreeMap<String, u32>,
    /// `--skew`: each operation's account is picked with weight `1 / (rank + 1)^skew` over
    /// the sample's order; 0 is uniform.
    pub skew: f64,
    /// Closed-loop workers.
    pub concurrency: usize,
    /// Channels (TCP connections) per service.
    pub connections: usize,
    /// Measured time, when the run is timed.
    pub duration_s: Option<f64>,
    /// Measured operations, when the run is counted.
    pub requests: Option<u64>,
    /// Unrecorded time first.
    pub warmup_s: f64,
    /// Client-side deadline of one RPC.
    pub timeout_s: f64,
    /// `--ceiling`.
    pub ceiling: bool,
    /// `--ceiling-only`.
    pub ceiling_only: bool,
    /// The no-op server measured as the ceiling when it ran in its own process.
    pub ceiling_url: Option<String>,
    /// Measurement rounds alternating the targets (`--rounds`, at most one per operation of
    /// `--requests`).
    pub rounds: u32,
    /// `--json`.
    pub json: Option<String>,
}

impl ConfigReport {
    /// The mix as a map.
    pub fn mix_map(mix: &Mix) -> BTreeMap<String, u32> {
        Operation::ALL
            .into_iter()
            .map(|op| (op.flag_name().to_owned(), mix.weight(op)))
            .collect()
    }
}

/// What one target did.
#[derive(Debug, Clone, Serialize)]
pub struct TargetReport {
    /// Per operation of the mix (weight above 0), by report name.
    pub rpcs: BTreeMap<String, OperationReport>,
    /// All operations together.
    pub total: OperationReport,
    /// Length of the measured window.
    pub duration_s: f64,
    /// Completed outside the window (warm-up, or after the end): not in the figures.
    pub unmeasured: UnmeasuredReport,
    /// The first message of each kind of error, by `Method/CODE`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub error_messages: BTreeMap<String, String>,
    /// Ceiling only: encoded size of each canned response, by RPC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_bytes: Option<BTreeMap<String, usize>>,
}

/// Requests outside the window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UnmeasuredReport {
    /// Completed requests.
    pub requests: u64,
    /// Their failures by code (unexpected all the same).
    pub errors: BTreeMap<String, u64>,
}

impl TargetReport {
    /// Summarises a run of `mix`.
    pub fn new(
        run: &RunResult,
        mix: &Mix,
        response_bytes: Option<BTreeMap<String, usize>>,
    ) -> Result<Self, AdditionError> {
        let seconds = run.measured.as_secs_f64();
        let recorder = &run.recorder;
        let rpcs = mix
            .operations()
            .map(|op| {
                let stats = &recorder.operations[op.index()];
                (
                    op.report_name().to_owned(),
                    stats.report(seconds, op.is_two_phase()),
                )
            })
            .collect();
        let mut unmeasured = UnmeasuredReport {
            requests: recorder.unmeasured.requests,
            ..UnmeasuredReport::default()
        };
        for (&(_, code), &count) in &recorder.unmeasured.errors {
            *unmeasured.errors.entry(code.to_owned()).or_default() += count;
        }
        Ok(Self {
            rpcs,
            total: recorder.total()?.report(seconds, false),
            duration_s: seconds,
            unmeasured,
            error_messages: recorder
                .first_messages
                .iter()
                .map(|((method, code), message)| (format!("{method}/{code}"), message.clone()))
                .collect(),
            response_bytes,
        })
    }

    /// Failures, measured or not.
    pub fn unexpected_errors(&self) -> u64 {
        self.total.error_count() + self.unmeasured.errors.values().sum::<u64>()
    }
}

/// real / ceiling for one RPC.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RatioReport {
    /// Throughput of the real servers over the ceiling's (1 would be as fast as doing nothing).
    pub throughput: Option<f64>,
    /// p99 latency of the real servers over the ceiling's.
    pub p99: Option<f64>,
}

fn ratio(real: f64, ceiling: f64) -> Option<f64> {
    (ceiling > 0.0 && real.is_finite()).then(|| real / ceiling)
}

impl RatioReport {
    fn of(real: &OperationReport, ceiling: &OperationReport) -> Self {
        let p99 = |r: &OperationReport| r.latency_us.map(|l| l.p99 as f64);
        Self {
            throughput: ratio(real.throughput_rps, ceiling.throughput_rps),
            p99: p99(real).zip(p99(ceiling)).and_then(|(r, c)| ratio(r, c)),
        }
    }
}

/// The ratios of every RPC both targets ran, and of the totals.
pub fn ratios(real: &TargetReport, ceiling: &TargetReport) -> BTreeMap<String, RatioReport> {
    let mut ratios: BTreeMap<String, RatioReport> = real
        .rpcs
        .iter()
        .filter_map(|(rpc, r)| {
            let c = ceiling.rpcs.get(rpc)?;
            Some((rpc.clone(), RatioReport::of(r, c)))
        })
        .collect();
    ratios.insert(
        "total".to_owned(),
        RatioReport::of(&real.total, &ceiling.total),
    );
    ratios
}

/// A latency in microseconds, readable: `412µs`, `1.23ms`, `12.3ms`, `123ms`, `1.23s`.
pub fn readable_us(us: u64) -> String {
    let ms = us as f64 / 1000.0;
    match us {
        0..1_000 => format!("{us}µs"),
        1_000..10_000 => format!("{ms:.2}ms"),
        10_000..100_000 => format!("{ms:.1}ms"),
        100_000..1_000_000 => format!("{ms:.0}ms"),
        _ => format!("{:.2}s", ms / 1000.0),
    }
}

/// The table of one target: one row per RPC, then the total.
pub fn render_table(target: &TargetReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "  {:<14} {:>10} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "rpc", "requests", "req/s", "p50", "p90", "p99", "p99.9", "max", "errors"
    );
    let rows = Operation::ALL
        .into_iter()
        .filter_map(|op| {
            let name = op.report_name();
            target.rpcs.get(name).map(|r| (name, r))
        })
        .chain([("total", &target.total)]);
    for (name, report) in rows {
        let latency = |pick: fn(&crate::stats::LatencyReport) -> u64| {
            report
                .latency_us
                .as_ref()
                .map_or_else(|| "-".to_owned(), |l| readable_us(pick(l)))
        };
        let _ = writeln!(
            out,
            "  {:<14} {:>10} {:>11.1} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}",
            name,
            report.requests,
            report.throughput_rps,
            latency(|l| l.p50),
            latency(|l| l.p90),
            latency(|l| l.p99),
            latency(|l| l.p999),
            latency(|l| l.max),
            report.error_count(),
        );
    }
    out
}

/// The ratio table.
pub fn render_ratios(ratios: &BTreeMap<String, RatioReport>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "  {:<14} {:>11} {:>9}", "rpc", "throughput", "p99");
    let shown = |value: Option<f64>| value.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}×"));
    let names = Operation::ALL
        .into_iter()
        .map(Operation::report_name)
        .chain(["total"]);
    for name in names {
        if let Some(ratio) = ratios.get(name) {
            let _ = writeln!(
                out,
                "  {:<14} {:>11} {:>9}",
                name,
                shown(ratio.throughput),
                shown(ratio.p99)
            );
        }
    }
    out
}

/// Every error of a target, with the first message of each kind.
pub fn render_errors(target: &TargetReport) -> String {
    let mut out = String::new();
    for name in Operation::ALL.map(Operation::report_name) {
        let Some(report) = target.rpcs.get(name) else {
            continue;
        };
        let by_phase = report
            .phase_errors
            .clone()
            .unwrap_or_else(|| BTreeMap::from([(name.to_owned(), report.errors.clone())]));
        for (method, codes) in by_phase {
            for (code, count) in codes {
                let message = target
                    .error_messages
                    .get(&format!("{method}/{code}"))
                    .map_or("", String::as_str);
                let _ = writeln!(out, "  {method} {code} × {count}: {message}");
            }
        }
    }
    for (code, count) in &target.unmeasured.errors {
        let _ = writeln!(out, "  outside the measured window: {code} × {count}");
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tonic::Code;

    use super::*;
    use crate::stats::Recorder;

    fn run(latencies_us: &[u64], errors: u64, seconds: u64) -> RunResult {
        let mut recorder = Recorder::default();
        for &us in latencies_us {
            recorder
                .operation(Operation::GetAccount)
                .record_ok(Duration::from_micros(us));
            recorder
                .operation(Operation::Deposit)
                .record_ok(Duration::from_micros(us * 2));
        }
        for _ in 0..errors {
            recorder
                .operation(Operation::Deposit)
                .record_error("RegisterDeposit", Code::Unavailable);
            recorder.note_message("RegisterDeposit", Code::Unavailable, "down");
        }
        recorder.unmeasured.requests = 3;
        RunResult {
            recorder,
            measured: Duration::from_secs(seconds),
        }
    }

    fn config() -> ConfigReport {
        ConfigReport {
            portfolio_url: "http://127.0.0.1:50051".into(),
            deposit_url: "http://127.0.0.1:50052".into(),
            accounts: 50,
            seed: 1,
            instruments: 14,
            sample: 100_000,
            sampled_accounts: 50,
            sampled_customers: 40,
            stride: 1,
            only_account: None,
            mix: ConfigReport::mix_map(&Mix::default()),
            skew: 0.0,
            concurrency: 32,
            connections: 4,
            duration_s: Some(10.0),
            requests: None,
            warmup_s: 2.0,
            timeout_s: 10.0,
            ceiling: true,
            ceiling_only: false,
            ceiling_url: None,
            rounds: 1,
            json: None,
        }
    }

    #[test]
    fn the_json_has_the_documented_shape() {
        let mix: Mix = "get_account=1,deposit=1".parse().unwrap();
        let real = TargetReport::new(&run(&[100, 200, 300, 400], 1, 2), &mix, None).unwrap();
        let ceiling = TargetReport::new(
            &run(&[50, 50, 100, 100], 0, 1),
            &mix,
            Some(BTreeMap::from([("GetAccount".to_owned(), 180)])),
        )
        .unwrap();
        let ratios = ratios(&real, &ceiling);
        let report = BenchReport {
            config: config(),
            unexpected_errors: real.unexpected_errors() + ceiling.unexpected_errors(),
            ok: false,
            real: Some(real),
            ceiling: Some(ceiling),
            ratios: Some(ratios),
        };
        let json = serde_json::to_value(&report).unwrap();
        let keys = |v: &serde_json::Value| {
            v.as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(",")
        };
        assert_eq!(
            keys(&json),
            "ceiling,config,ok,ratios,real,unexpected_errors"
        );
        assert_eq!(json["config"]["mix"]["deposit"], 0);
        assert_eq!(json["config"]["skew"], 0.0);
        assert_eq!(json["config"]["only_account"], serde_json::Value::Null);
        assert_eq!(json["config"]["requests"], serde_json::Value::Null);
        assert_eq!(keys(&json["real"]["rpcs"]), "Deposit,GetAccount");
        let get = &json["real"]["rpcs"]["GetAccount"];
        assert_eq!(keys(get), "errors,latency_us,requests,throughput_rps");
        assert_eq!(get["requests"], 4);
        assert_eq!(get["throughput_rps"], 2.0);
        assert_eq!(keys(&get["latency_us"]), "max,p50,p90,p99,p999");
        assert_eq!(get["latency_us"]["p50"], 200);
        assert_eq!(get["latency_us"]["max"], 400);
        let deposit = &json["real"]["rpcs"]["Deposit"];
        assert_eq!(deposit["errors"]["UNAVAILABLE"], 1);
        assert_eq!(deposit["phase_errors"]["RegisterDeposit"]["UNAVAILABLE"], 1);
        assert_eq!(json["real"]["total"]["requests"], 9);
        assert_eq!(json["real"]["duration_s"], 2.0);
        assert_eq!(json["real"]["unmeasured"]["requests"], 3);
        assert_eq!(
            json["real"]["error_messages"]["RegisterDeposit/UNAVAILABLE"],
            "down"
        );
        assert_eq!(json["ceiling"]["response_bytes"]["GetAccount"], 180);
        assert!(json["ceiling"].get("error_messages").is_none());
        // Real: 4 GetAccount in 2 s, p99 400 µs; ceiling: 4 in 1 s, p99 100 µs.
        assert_eq!(json["ratios"]["GetAccount"]["throughput"], 0.5);
        assert_eq!(json["ratios"]["GetAccount"]["p99"], 4.0);
        assert!(json["ratios"]["total"].is_object());
        assert_eq!(json["unexpected_errors"], 1);
        assert_eq!(json["ok"], false);
    }

    #[test]
    fn tables_are_readable() {
        assert_eq!(readable_us(412), "412µs");
        assert_eq!(readable_us(1_234), "1.23ms");
        assert_eq!(readable_us(12_345), "12.3ms");
        assert_eq!(readable_us(123_456), "123ms");
        assert_eq!(readable_us(1_234_567), "1.23s");

        let mix: Mix = "get_account=1,deposit=1".parse().unwrap();
        let target = TargetReport::new(&run(&[100, 200, 300, 400], 2, 2), &mix, None).unwrap();
        let table = render_table(&target);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[1].trim_start().starts_with("GetAccount"), "{table}");
        assert!(lines[2].trim_start().starts_with("Deposit"), "{table}");
        assert!(lines[2].ends_with(" 2"), "{table}");
        assert!(lines[3].trim_start().starts_with("total"), "{table}");
        assert_eq!(
            render_errors(&target),
            "  RegisterDeposit UNAVAILABLE × 2: down\n"
        );
        let ratios = ratios(&target, &target);
        assert!(render_ratios(&ratios).contains("1.00×"));
    }
}
