//! The summary printed on stdout after cleaning, after each guard and after the push: the
//! numbers an operator at 4 a.m. needs, aligned, without floating point. The data behind it
//! is the cleaning report ([`crate::pipeline::CleaningReport`]); `--report-json` writes that.

use std::{fmt::Write as _, path::Path};

use invest_dataset::FileKind;
use invest_proto::{deposit::v1::LoadDirectoryResponse, portfolio::v1::LoadSnapshotResponse};

use crate::{
    guard::ShrinkGuard,
    pipeline::{CleanedDay, CleaningReport, LossGuard, Ratio},
    push::{DayOutcome, Outcome},
};

/// `numerator / denominator` as a percentage with two decimals, rounded half up, in integers.
pub fn percent(ratio: Ratio) -> String {
    if ratio.denominator == 0 {
        return "0.00%".to_owned();
    }
    let n = u128::from(ratio.numerator) * 10_000;
    let d = u128::from(ratio.denominator);
    let hundredths = (n + d / 2) / d;
    format!("{}.{:02}%", hundredths / 100, hundredths % 100)
}

/// The cleaning report, as printed.
pub fn cleaning(
    dir: &Path,
    report: &CleaningReport,
    day: &CleanedDay,
    max: Ratio,
    rejects: Option<&Path>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "delivery {}", dir.display());
    let _ = writeln!(
        out,
        "  {:<28} {:>10} {:>8} {:>10} {:>10} {:>10} {:>10}",
        "file", "lines", "blank", "read", "loaded", "collapsed", "rejected"
    );
    for kind in FileKind::ALL {
        let c = report.file(kind);
        let _ = writeln!(
            out,
            "  {:<28} {:>10} {:>8} {:>10} {:>10} {:>10} {:>10}",
            kind.file_name(),
            c.lines,
            c.blank,
            c.read,
            c.loaded,
            c.collapsed,
            c.rejected
        );
    }
    let t = &report.totals;
    let _ = writeln!(
        out,
        "  {:<28} {:>10} {:>8} {:>10} {:>10} {:>10} {:>10}",
        "total", t.lines, t.blank, t.read, t.loaded, t.collapsed, t.rejected
    );
    let _ = writeln!(
        out,
        "accounts: {} named in the delivery, {} loaded",
        report.accounts.named, report.accounts.loaded
    );
    if t.rejected > 0 {
        let _ = writeln!(out, "rejected rows by rule");
        for kind in FileKind::ALL {
            for (rule, n) in &report.file(kind).rejected_by_rule {
                let _ = writeln!(
                    out,
                    "  {:<28} {:<28} {:>10}",
                    kind.file_name(),
                    rule.as_str(),
                    n
                );
            }
        }
    }
    out.push_str(&loss_guard(&report.loss_guard(max)));
    if report.warnings_total > 0 {
        let _ = writeln!(out, "warnings ({})", report.warnings_total);
        for w in report.warnings.iter().take(10) {
            let _ = writeln!(out, "  {}:{}: {}", w.file.file_name(), w.line, w.message);
        }
        if report.warnings_total > 10 {
            let _ = writeln!(out, "  … and {} more", report.warnings_total - 10);
        }
    }
    if !report.examples.is_empty() {
        let _ = writeln!(out, "first rejected rows");
        for r in &report.examples {
            let _ = writeln!(
                out,
                "  {}:{} [{}] {}",
                r.file.file_name(),
                r.line,
                r.rule.as_str(),
                r.detail
            );
        }
        match rejects {
            Some(path) => {
                let _ = writeln!(out, "every rejected row is in {}", path.display());
            }
            None => {
                let _ = writeln!(out, "pass --rejects FILE to keep every rejected row");
            }
        }
    }
    let _ = writeln!(
        out,
        "cleaned day: {} instruments, {} accounts, {} holdings, digest {}",
        day.instruments.len(),
        day.account_count,
        day.holding_count,
        day.digest
    );
    out
}

/// The loss guard: each unit's ratio, and which tripped.
pub fn loss_guard(guard: &LossGuard) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "loss guard: a day that lost more than {} in any unit is refused (--max-reject-ratio)",
        percent(guard.limit)
    );
    for loss in &guard.losses {
        let _ = writeln!(
            out,
            "  {:<20} {:>8}  ({} of {} {}){}",
            loss.unit.as_str(),
            percent(loss.ratio),
            loss.lost,
            loss.of,
            loss.unit.of_what(),
            if loss.exceeded { "  TRIPPED" } else { "" }
        );
    }
    out
}

/// The shrink guard's verdict.
pub fn shrink_guard(guard: &ShrinkGuard) -> String {
    match guard {
        ShrinkGuard::Skipped { reason } => format!("shrink guard: skipped: {reason}\n"),
        ShrinkGuard::FirstDay => {
            "shrink guard: portfolio-svc serves no day yet: a first day passes\n".to_owned()
        }
        ShrinkGuard::Checked {
            limit,
            current,
            shrinks,
            allowed,
            tripped,
        } => {
            let mut out = String::new();
            let _ = writeln!(
                out,
                "shrink guard: against the day served now (as_of {}), a day smaller by more than {} is refused (--max-shrink){}",
                current.as_of,
                percent(*limit),
                if *allowed && !tripped.is_empty() {
                    "; --allow-shrink given: loading anyway"
                } else {
                    ""
                }
            );
            for shrink in shrinks {
                let _ = writeln!(
                    out,
                    "  {:<20} {:>10} now, {:>10} in the new day: {} smaller{}",
                    shrink.unit,
                    shrink.current,
                    shrink.new,
                    percent(shrink.ratio),
                    if shrink.exceeded { "  TRIPPED" } else { "" }
                );
            }
            out
        }
    }
}

/// What became of each service in a push.
pub fn push_outcome(outcome: &DayOutcome) -> String {
    let mut out = String::new();
    let other_failed = |other_failed: bool, other: &str| {
        if other_failed {
            format!(
                "NOT LOADED: its stream was cancelled before its end because {other} failed; it changed nothing and keeps the previous day"
            )
        } else {
            "NOT LOADED: its stream was cancelled before its end; it changed nothing and keeps the previous day".to_owned()
        }
    };
    let deposit_failed = matches!(outcome.deposit, Outcome::Failed(_));
    let portfolio_failed = matches!(outcome.portfolio, Outcome::Failed(_));
    let _ = match &outcome.portfolio {
        Outcome::Done(response) => writeln!(out, "{}", portfolio_loaded(response)),
        Outcome::Failed(e) => writeln!(out, "portfolio-svc: FAILED: {e}"),
        Outcome::Cancelled => writeln!(
            out,
            "portfolio-svc: {}",
            other_failed(deposit_failed, "deposit-svc")
        ),
    };
    let _ = match &outcome.deposit {
        Outcome::Done(response) => writeln!(out, "{}", directory_loaded(response)),
        Outcome::Failed(e) => writeln!(out, "deposit-svc: FAILED: {e}"),
        Outcome::Cancelled => writeln!(
            out,
            "deposit-svc: {}",
            other_failed(portfolio_failed, "portfolio-svc")
        ),
    };
    if outcome.released && outcome.portfolio.is_done() != outcome.deposit.is_done() {
        let _ = writeln!(
            out,
            "the two services now serve different days: one failed at its own commit, after both \
             had received the whole day; re-run the same command to repair (loading is idempotent)"
        );
    }
    out
}

/// One line saying what portfolio-svc now serves.
pub fn portfolio_loaded(response: &LoadSnapshotResponse) -> String {
    let as_of = response.as_of.map(|t| t.to_string()).unwrap_or_default();
    if response.unchanged {
        format!("portfolio-svc: unchanged: this day (as_of {as_of}) was already current")
    } else {
        format!(
            "portfolio-svc: loaded: as_of {as_of}, {} accounts, {} holdings, {} instruments",
            response.account_count, response.holding_count, response.instrument_count
        )
    }
}

/// One line saying what deposit-svc now checks deposits against.
pub fn directory_loaded(response: &LoadDirectoryResponse) -> String {
    let as_of = response.as_of.map(|t| t.to_string()).unwrap_or_default();
    if response.unchanged {
        format!("deposit-svc: unchanged: this day's directory (as_of {as_of}) was already current")
    } else {
        format!(
            "deposit-svc: loaded: directory as_of {as_of}, {} accounts",
            response.entry_count
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages() {
        assert_eq!(percent(Ratio::new(1, 10).unwrap()), "10.00%");
        assert_eq!(percent(Ratio::new(3, 764).unwrap()), "0.39%");
        assert_eq!(percent(Ratio::new(0, 700).unwrap()), "0.00%");
        assert_eq!(percent(Ratio::new(1, 3).unwrap()), "33.33%");
        assert_eq!(percent(Ratio::new(2, 3).unwrap()), "66.67%");
    }
}
