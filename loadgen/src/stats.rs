//! What one worker records (latency histograms and errors per operation), how the workers'
//! records merge, and the figures a report shows.

use std::{collections::BTreeMap, time::Duration, time::Instant};

use hdrhistogram::{Histogram, errors::AdditionError};
use serde::Serialize;
use tonic::Code;

use crate::mix::Operation;

/// Precision of the latency histograms: 3 significant figures (0.1 %).
const SIGNIFICANT_FIGURES: u8 = 3;

/// An empty latency histogram in microseconds that grows to any value recorded.
fn latency_histogram() -> Histogram<u64> {
    // `new` fails only for more than 5 significant figures.
    Histogram::new(SIGNIFICANT_FIGURES).expect("3 significant figures are valid")
}

/// Errors by (RPC method, gRPC code name): the method tells the two phases of a deposit apart.
pub type ErrorCounts = BTreeMap<(&'static str, &'static str), u64>;

/// The figures of one operation in the measured window.
#[derive(Debug, Clone)]
pub struct OperationStats {
    /// Operations completed in the window, successful or not.
    pub requests: u64,
    /// Latency of the successful ones, in microseconds.
    pub latency_us: Histogram<u64>,
    /// Failed ones.
    pub errors: ErrorCounts,
}

impl Default for OperationStats {
    fn default() -> Self {
        Self {
            requests: 0,
            latency_us: latency_histogram(),
            errors: ErrorCounts::new(),
        }
    }
}

impl OperationStats {
    /// A success that took `latency`.
    pub fn record_ok(&mut self, latency: Duration) {
        self.requests += 1;
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        if self.latency_us.record(micros).is_err() {
            // Only if the histogram cannot grow any more: clamp instead.
            self.latency_us.saturating_record(micros);
        }
    }

    /// A failure of `method` with `code`.
    pub fn record_error(&mut self, method: &'static str, code: Code) {
        self.requests += 1;
        *self.errors.entry((method, code_name(code))).or_default() += 1;
    }

    /// Adds `other` to these figures.
    pub fn merge(&mut self, other: &Self) -> Result<(), AdditionError> {
        self.requests += other.requests;
        self.latency_us.add(&other.latency_us)?;
        merge_errors(&mut self.errors, &other.errors);
        Ok(())
    }

    /// Number of failed operations.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The report of these figures over a window of `seconds`.
    pub fn report(&self, seconds: f64, with_phases: bool) -> OperationReport {
        let mut errors = BTreeMap::new();
        let mut phases: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for (&(method, code), &count) in &self.errors {
            *errors.entry(code.to_owned()).or_default() += count;
            *phases
                .entry(method.to_owned())
                .or_default()
                .entry(code.to_owned())
                .or_default() += count;
        }
        OperationReport {
            requests: self.requests,
            errors,
            phase_errors: with_phases.then_some(phases),
            throughput_rps: if seconds > 0.0 {
                self.requests as f64 / seconds
            } else {
                0.0
            },
            latency_us: LatencyReport::of(&self.latency_us),
        }
    }
}

fn merge_errors(into: &mut ErrorCounts, from: &ErrorCounts) {
    for (key, count) in from {
        *into.entry(*key).or_default() += count;
    }
}

/// Requests that completed outside the measured window (warm-up, or after its end).
#[derive(Debug, Clone, Default)]
pub struct Unmeasured {
    /// Completed requests, successful or not.
    pub requests: u64,
    /// The failed ones: they still count as unexpected errors.
    pub errors: ErrorCounts,
}

/// Everything one worker (or, merged, one run) recorded.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    /// By [`Operation::index`].
    pub operations: [OperationStats; Operation::ALL.len()],
    /// Outside the measured window.
    pub unmeasured: Unmeasured,
    /// The first message seen per (method, code), to show what went wrong.
    pub first_messages: BTreeMap<(&'static str, &'static str), String>,
    /// When the last measured operation completed.
    pub last_completion: Option<Instant>,
}

impl Recorder {
    /// The figures of `operation`.
    pub fn operation(&mut self, operation: Operation) -> &mut OperationStats {
        &mut self.operations[operation.index()]
    }

    /// Keeps the first message of each kind of error.
    pub fn note_message(&mut self, method: &'static str, code: Code, message: &str) {
        self.first_messages
            .entry((method, code_name(code)))
            .or_insert_with(|| message.to_owned());
    }

    /// Adds another worker's records.
    pub fn merge(&mut self, other: &Self) -> Result<(), AdditionError> {
        for (mine, theirs) in self.operations.iter_mut().zip(&other.operations) {
            mine.merge(theirs)?;
        }
        self.unmeasured.requests += other.unmeasured.requests;
        merge_errors(&mut self.unmeasured.errors, &other.unmeasured.errors);
        for (key, message) in &other.first_messages {
            self.first_messages
                .entry(*key)
                .or_insert_with(|| message.clone());
        }
        self.last_completion = self.last_completion.max(other.last_completion);
        Ok(())
    }

    /// All operations together.
    pub fn total(&self) -> Result<OperationStats, AdditionError> {
        let mut total = OperationStats::default();
        for stats in &self.operations {
            total.merge(stats)?;
        }
        Ok(total)
    }

    /// Every error, measured or not: any of them fails the run.
    pub fn unexpected_errors(&self) -> u64 {
        self.operations
            .iter()
            .map(OperationStats::error_count)
            .sum::<u64>()
            + self.unmeasured.errors.values().sum::<u64>()
    }
}

/// The figures of one operation (or of all of them) as reported.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OperationReport {
    /// Operations completed in the measured window, successful or not.
    pub requests: u64,
    /// Failures by gRPC code name (`UNAVAILABLE`, …).
    pub errors: BTreeMap<String, u64>,
    /// For deposits: failures by phase (`RegisterDeposit`, `ConfirmDeposit`), then by code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase_errors: Option<BTreeMap<String, BTreeMap<String, u64>>>,
    /// `requests` per second of the window.
    pub throughput_rps: f64,
    /// Latency of the successful operations; null when none succeeded.
    pub latency_us: Option<LatencyReport>,
}

impl OperationReport {
    /// Number of failures.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Latency percentiles in microseconds (exact to 3 significant figures).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LatencyReport {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

impl LatencyReport {
    /// The percentiles of `histogram`, or `None` when it is empty.
    pub fn of(histogram: &Histogram<u64>) -> Option<Self> {
        (!histogram.is_empty()).then(|| Self {
            p50: histogram.value_at_quantile(0.5),
            p90: histogram.value_at_quantile(0.9),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
        })
    }
}

pub use invest_proto::status::code_name;

#[cfg(test)]
mod tests {
    use super::*;

    fn within_precision(actual: u64, expected: u64) -> bool {
        actual.abs_diff(expected) * 1000 <= expected
    }

    #[test]
    fn merged_workers_give_the_percentiles_of_all_samples() {
        // Two workers share 1..=10_000 µs between them (odds and evens).
        let mut workers = [Recorder::default(), Recorder::default()];
        for us in 1..=10_000u64 {
            workers[(us % 2) as usize]
                .operation(Operation::GetAccount)
                .record_ok(Duration::from_micros(us));
        }
        workers[1]
            .operation(Operation::GetAccount)
            .record_error("GetAccount", Code::Unavailable);
        workers[0]
            .operation(Operation::Deposit)
            .record_error("ConfirmDeposit", Code::Unavailable);
        workers[1].unmeasured.requests = 5;
        workers[1]
            .unmeasured
            .errors
            .insert(("ListHoldings", "NOT_FOUND"), 2);
        let mut run = Recorder::default();
        for worker in &workers {
            run.merge(worker).unwrap();
        }

        let get = run.operations[Operation::GetAccount.index()].report(2.0, false);
        assert_eq!(get.requests, 10_001);
        assert_eq!(get.errors, BTreeMap::from([("UNAVAILABLE".to_owned(), 1)]));
        assert_eq!(get.phase_errors, None);
        assert!((get.throughput_rps - 5000.5).abs() < 1e-9);
        let latency = get.latency_us.unwrap();
        for (actual, expected) in [
            (latency.p50, 5_000),
            (latency.p90, 9_000),
            (latency.p99, 9_900),
            (latency.p999, 9_990),
            (latency.max, 10_000),
        ] {
            assert!(within_precision(actual, expected), "{actual} vs {expected}");
        }

        let deposit = run.operations[Operation::Deposit.index()].report(2.0, true);
        assert_eq!(deposit.requests, 1);
        assert_eq!(deposit.latency_us, None, "no success, no latency");
        assert_eq!(
            deposit.phase_errors.unwrap()["ConfirmDeposit"]["UNAVAILABLE"],
            1
        );

        let total = run.total().unwrap().report(2.0, false);
        assert_eq!(total.requests, 10_002);
        assert_eq!(total.error_count(), 2);
        assert_eq!(run.unexpected_errors(), 4, "2 measured + 2 unmeasured");
    }

    #[test]
    fn sub_microsecond_latencies_count_as_one() {
        let mut stats = OperationStats::default();
        stats.record_ok(Duration::from_nanos(10));
        stats.record_ok(Duration::from_secs(3600));
        let latency = LatencyReport::of(&stats.latency_us).unwrap();
        assert_eq!(latency.p50, 1);
        assert!(within_precision(latency.max, 3_600_000_000));
    }
}
