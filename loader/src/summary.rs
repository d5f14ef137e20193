//! The human summary printed after cleaning and after each push: the numbers an operator at
//! 4 a.m. needs, aligned, without floating point.

use std::{fmt::Write as _, path::Path};

use invest_proto::{deposit::v1::LoadDirectoryResponse, portfolio::v1::LoadSnapshotResponse};

use crate::{
    clean::FileKind,
    pipeline::{CleanedDay, report::Ratio, report::Report},
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

/// The cleaning summary.
pub fn render(
    dir: &Path,
    report: &Report,
    day: &CleanedDay,
    max: Ratio,
    rejects: Option<&Path>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "delivery {}", dir.display());
    let _ = writeln!(
        out,
        "  {:<28} {:>10} {:>10} {:>10} {:>10}",
        "file", "read", "loaded", "collapsed", "rejected"
    );
    for kind in FileKind::ALL {
        let c = report.file(kind);
        let _ = writeln!(
            out,
            "  {:<28} {:>10} {:>10} {:>10} {:>10}",
            kind.file_name(),
            c.read,
            c.loaded,
            c.collapsed,
            c.rejected
        );
    }
    let t = &report.totals;
    let _ = writeln!(
        out,
        "  {:<28} {:>10} {:>10} {:>10} {:>10}",
        "total", t.read, t.loaded, t.collapsed, t.rejected
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
    let _ = writeln!(
        out,
        "reject ratio {} ({} of {} rows); limit {}",
        percent(report.reject_ratio()),
        t.rejected,
        t.read,
        percent(max)
    );
    if !report.warnings.is_empty() {
        let _ = writeln!(out, "warnings ({})", report.warnings.len());
        for w in report.warnings.iter().take(10) {
            let _ = writeln!(out, "  {}:{}: {}", w.file.file_name(), w.line, w.message);
        }
        if report.warnings.len() > 10 {
            let _ = writeln!(out, "  … and {} more", report.warnings.len() - 10);
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
