//! The cleaning report: what became of every row (counts per file and rule, warnings,
//! example rejects), the loss guard's verdict on it, and the `RowTally` that keeps the
//! counts and writes the rejects file while the day is cleaned. Fractions are exact
//! (numerator and denominator), never floating point.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::str::FromStr;

use invest_dataset::{FileKind, Rule};
use serde::Serialize;

use super::InputError;
use super::csvfile::RawText;

/// How many rejects the report keeps as examples.
pub const EXAMPLE_REJECTS: usize = 10;

/// How many warnings the report keeps (the rest are only counted).
pub const KEPT_WARNINGS: usize = 100;

/// What became of the lines and rows of one file (or of all files).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Physical lines, the header included: always `1 + blank + read` for a file.
    pub lines: u64,
    /// Blank lines (empty, or only separators and white space): not rows.
    pub blank: u64,
    /// Rows read: every other line but the header.
    pub read: u64,
    /// Rows that are in the cleaned day.
    pub loaded: u64,
    /// Identical copies folded into a loaded row.
    pub collapsed: u64,
    /// Rows rejected, all rules together.
    pub rejected: u64,
    /// Rows rejected, per rule.
    pub rejected_by_rule: BTreeMap<Rule, u64>,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.lines += other.lines;
        self.blank += other.blank;
        self.read += other.read;
        self.loaded += other.loaded;
        self.collapsed += other.collapsed;
        self.rejected += other.rejected;
        for (rule, count) in &other.rejected_by_rule {
            *self.rejected_by_rule.entry(*rule).or_default() += count;
        }
    }

    /// Whether every row read is exactly one of loaded, collapsed, rejected.
    pub fn balanced(&self) -> bool {
        self.read == self.loaded + self.collapsed + self.rejected
            && self.rejected == self.rejected_by_rule.values().sum::<u64>()
    }

    /// Whether the lines of one file are exactly its header, its blank lines and its rows.
    pub fn lines_balanced(&self) -> bool {
        self.lines == 1 + self.blank + self.read
    }
}

/// Accounts the delivery names against the accounts that load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AccountCounts {
    /// Distinct well-formed account numbers among the principal and holding rows (rejected
    /// rows included).
    pub named: u64,
    /// Accounts in the cleaned day.
    pub loaded: u64,
}

/// A unit in which the loss guard counts what a day lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LossUnit {
    /// Rows rejected over rows read, all files together (every non-blank line but the
    /// headers is a row).
    Rows,
    /// Accounts named in the delivery that do not load.
    Accounts,
    /// Holding rows rejected over holding rows read (identical copies that collapsed into a
    /// loaded holding are not losses).
    Holdings,
}

impl LossUnit {
    /// Every unit.
    pub const ALL: [LossUnit; 3] = [LossUnit::Rows, LossUnit::Accounts, LossUnit::Holdings];

    /// The name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            LossUnit::Rows => "rows rejected",
            LossUnit::Accounts => "accounts lost",
            LossUnit::Holdings => "holding rows lost",
        }
    }

    /// What the denominator counts.
    pub fn of_what(self) -> &'static str {
        match self {
            LossUnit::Rows => "rows read",
            LossUnit::Accounts => "accounts named in the delivery",
            LossUnit::Holdings => "holding rows read",
        }
    }
}

/// What a day lost in one unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Loss {
    /// The unit.
    pub unit: LossUnit,
    /// How many were lost.
    pub lost: u64,
    /// Out of how many.
    pub of: u64,
    /// `lost / of` (0/1 when there was nothing).
    pub ratio: Ratio,
    /// Whether the ratio is above the limit.
    pub exceeded: bool,
}

/// The loss guard's verdict: a day that lost more than the limit in any unit is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LossGuard {
    /// `--max-reject-ratio`.
    pub limit: Ratio,
    /// One per unit.
    pub losses: Vec<Loss>,
    /// The units whose ratio is above the limit (empty when the day passes).
    pub tripped: Vec<LossUnit>,
}

impl LossGuard {
    /// Whether the day passes.
    pub fn passed(&self) -> bool {
        self.tripped.is_empty()
    }
}

/// The counts of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileReport {
    /// Which file.
    pub file: FileKind,
    /// Its counts.
    #[serde(flatten)]
    pub counts: Counts,
}

/// Something worth telling that does not reject the row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// The file.
    pub file: FileKind,
    /// Physical line number.
    pub line: u64,
    /// What is odd, for the operator.
    pub message: String,
}

/// One rejected row, as written to the rejects file (one JSON object per line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectRecord {
    /// The file.
    pub file: FileKind,
    /// Physical line number of the row's first line.
    pub line: u64,
    /// The rule it broke.
    pub rule: Rule,
    /// What is wrong, for the operator.
    pub detail: String,
    /// The row exactly as in the file (its lines, without the final line terminator);
    /// bytes that are not UTF-8 show as U+FFFD.
    pub raw: String,
}

/// Sort figures, to see whether a day spilled to disk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SortReport {
    /// Principal and holding rows that went through the sort.
    pub rows: u64,
    /// Sorted runs spilled to temporary files (0 when the day fit in the budget).
    pub runs_spilled: u64,
}

/// The outcome of cleaning a day (printed by `summary`, written by `--report-json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CleaningReport {
    /// Per file, in settling order (instruments, principal, holdings).
    pub files: Vec<FileReport>,
    /// All files together.
    pub totals: Counts,
    /// Rows rejected over rows read, all files together.
    pub reject_ratio: Ratio,
    /// Accounts named against accounts loaded.
    pub accounts: AccountCounts,
    /// The first [`KEPT_WARNINGS`] warnings, in file order.
    pub warnings: Vec<Warning>,
    /// Warnings in all.
    pub warnings_total: u64,
    /// The first rejects, in the order they were found.
    pub examples: Vec<RejectRecord>,
    /// How the sort went.
    pub sort: SortReport,
}

impl CleaningReport {
    /// The counts of one file.
    pub fn file(&self, kind: FileKind) -> &Counts {
        self.files
            .iter()
            .find(|report| report.file == kind)
            .map_or(&EMPTY_COUNTS, |report| &report.counts)
    }

    /// Rejected rows over rows read, all files together (0/1 when nothing was read).
    pub fn reject_ratio(&self) -> Ratio {
        self.reject_ratio
    }

    /// Whether the reject ratio is strictly above `max`.
    pub fn exceeds(&self, max: Ratio) -> bool {
        self.reject_ratio.exceeds(max)
    }

    /// What the day lost, per unit.
    pub fn losses(&self) -> [(LossUnit, u64, u64); 3] {
        let holdings = self.file(FileKind::Holdings);
        LossUnit::ALL.map(|unit| match unit {
            LossUnit::Rows => (unit, self.totals.rejected, self.totals.read),
            LossUnit::Accounts => (
                unit,
                self.accounts.named.saturating_sub(self.accounts.loaded),
                self.accounts.named,
            ),
            LossUnit::Holdings => (unit, holdings.rejected, holdings.read),
        })
    }

    /// The loss guard against `limit`: the same verdict for `validate` and `load`.
    pub fn loss_guard(&self, limit: Ratio) -> LossGuard {
        let losses: Vec<Loss> = self
            .losses()
            .into_iter()
            .map(|(unit, lost, of)| {
                let ratio = Ratio::new(lost, of).unwrap_or(Ratio::ZERO);
                Loss {
                    unit,
                    lost,
                    of,
                    ratio,
                    exceeded: ratio.exceeds(limit),
                }
            })
            .collect();
        let tripped = losses
            .iter()
            .filter(|loss| loss.exceeded)
            .map(|loss| loss.unit)
            .collect();
        LossGuard {
            limit,
            losses,
            tripped,
        }
    }

    /// The accounting invariants: per file, every physical line is the header, a blank line
    /// or a row, and every row is exactly one of loaded, collapsed, rejected; no more
    /// accounts load than are named. A violation is a bug in the loader, never bad input.
    pub fn check_accounting(&self) -> Result<(), String> {
        for file in &self.files {
            let c = &file.counts;
            if !c.lines_balanced() {
                return Err(format!(
                    "{}: {} lines is not 1 header + {} blank + {} rows",
                    file.file, c.lines, c.blank, c.read
                ));
            }
            if !c.balanced() {
                return Err(format!(
                    "{}: {} rows read is not {} loaded + {} collapsed + {} rejected (by rule: {:?})",
                    file.file, c.read, c.loaded, c.collapsed, c.rejected, c.rejected_by_rule
                ));
            }
        }
        if self.accounts.loaded > self.accounts.named
            || self.accounts.loaded != self.file(FileKind::Principal).loaded
        {
            return Err(format!(
                "{} accounts loaded, {} named, {} principal rows loaded",
                self.accounts.loaded,
                self.accounts.named,
                self.file(FileKind::Principal).loaded
            ));
        }
        Ok(())
    }
}

static EMPTY_COUNTS: Counts = Counts {
    lines: 0,
    blank: 0,
    read: 0,
    loaded: 0,
    collapsed: 0,
    rejected: 0,
    rejected_by_rule: BTreeMap::new(),
};

/// An exact non-negative fraction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Ratio {
    /// Above the line.
    pub numerator: u64,
    /// Below the line; never 0.
    pub denominator: u64,
}

impl Ratio {
    /// Nothing: 0/1.
    pub const ZERO: Ratio = Ratio {
        numerator: 0,
        denominator: 1,
    };

    /// `numerator / denominator`, or `None` when the denominator is 0.
    pub fn new(numerator: u64, denominator: u64) -> Option<Self> {
        (denominator != 0).then_some(Self {
            numerator,
            denominator,
        })
    }

    /// Whether `self > other`, by cross-multiplication in 128 bits (cannot overflow).
    pub fn exceeds(self, other: Ratio) -> bool {
        u128::from(self.numerator) * u128::from(other.denominator)
            > u128::from(other.numerator) * u128::from(self.denominator)
    }
}

impl fmt::Display for Ratio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.numerator, self.denominator)
    }
}

/// Parses a threshold such as `0.1`, `.05`, `1`, `2%` or `1/20`.
impl FromStr for Ratio {
    type Err = InputError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || InputError::InvalidRatio {
            text: text.to_owned(),
        };
        let trimmed = text.trim();
        if let Some((numerator, denominator)) = trimmed.split_once('/') {
            let numerator = parse_digits(numerator.trim()).ok_or_else(invalid)?;
            let denominator = parse_digits(denominator.trim()).ok_or_else(invalid)?;
            return Ratio::new(numerator, denominator).ok_or_else(invalid);
        }
        let (decimal, percent) = match trimmed.strip_suffix('%') {
            Some(decimal) => (decimal.trim_end(), true),
            None => (trimmed, false),
        };
        let (whole, fraction) = decimal.split_once('.').unwrap_or((decimal, ""));
        if whole.is_empty() && fraction.is_empty() {
            return Err(invalid());
        }
        let digits = format!("{whole}{fraction}");
        let numerator = parse_digits(&digits).ok_or_else(invalid)?;
        let scale = u32::try_from(fraction.len())
            .ok()
            .filter(|scale| *scale <= 18)
            .ok_or_else(invalid)?;
        let denominator = 10u64.checked_pow(scale).ok_or_else(invalid)?;
        let denominator = if percent {
            denominator.checked_mul(100).ok_or_else(invalid)?
        } else {
            denominator
        };
        Ratio::new(numerator, denominator).ok_or_else(invalid)
    }
}

fn parse_digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.bytes().try_fold(0u64, |acc, b| {
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// Where the raw text of a reject comes from.
pub(crate) enum Raw<'a> {
    /// Still in hand (row rules, while the file is being read).
    Bytes(&'a [u8]),
    /// To be read back from the file (set rules).
    Span { offset: u64, len: u64 },
}

/// Tallies what becomes of every row while a day is cleaned (read, loaded, collapsed,
/// rejected by which rule) and writes each reject to the rejects file as it happens;
/// [`RowTally::finish`] gives the [`CleaningReport`].
pub(crate) struct RowTally {
    counts: BTreeMap<FileKind, Counts>,
    accounts: AccountCounts,
    warnings: Vec<Warning>,
    warnings_total: u64,
    examples: Vec<RejectRecord>,
    rejects: Option<(PathBuf, BufWriter<File>)>,
    raw_text: RawText,
}

impl RowTally {
    pub fn new(rejects: Option<PathBuf>, raw_text: RawText) -> Result<Self, InputError> {
        let rejects = match rejects {
            None => None,
            Some(path) => {
                let file = File::create(&path).map_err(|source| InputError::Rejects {
                    path: path.clone(),
                    source,
                })?;
                Some((path, BufWriter::new(file)))
            }
        };
        let counts = FileKind::ALL
            .into_iter()
            .map(|kind| (kind, Counts::default()))
            .collect();
        Ok(Self {
            counts,
            accounts: AccountCounts::default(),
            warnings: Vec::new(),
            warnings_total: 0,
            examples: Vec::new(),
            rejects,
            raw_text,
        })
    }

    fn counts(&mut self, file: FileKind) -> &mut Counts {
        self.counts.entry(file).or_default()
    }

    pub fn read(&mut self, file: FileKind) {
        self.counts(file).read += 1;
    }

    pub fn loaded(&mut self, file: FileKind, rows: u64) {
        self.counts(file).loaded += rows;
    }

    pub fn collapsed(&mut self, file: FileKind, rows: u64) {
        self.counts(file).collapsed += rows;
    }

    /// The physical lines of a file, once read.
    pub fn lines(&mut self, file: FileKind, lines: u64, blank: u64) {
        let counts = self.counts(file);
        counts.lines = lines;
        counts.blank = blank;
    }

    /// Accounts named in the delivery and accounts loaded.
    pub fn accounts(&mut self, named: u64, loaded: u64) {
        self.accounts = AccountCounts { named, loaded };
    }

    pub fn warn(&mut self, file: FileKind, line: u64, message: String) {
        self.warnings_total += 1;
        if self.warnings.len() >= KEPT_WARNINGS {
            return;
        }
        self.warnings.push(Warning {
            file,
            line,
            message,
        });
    }

    /// Counts a reject and writes it out; the raw text is read back only when someone will
    /// see it (the rejects file or the examples).
    pub fn reject(
        &mut self,
        file: FileKind,
        line: u64,
        rule: Rule,
        detail: String,
        raw: Raw<'_>,
    ) -> Result<(), InputError> {
        let counts = self.counts(file);
        counts.rejected += 1;
        *counts.rejected_by_rule.entry(rule).or_default() += 1;
        let wanted = self.rejects.is_some() || self.examples.len() < EXAMPLE_REJECTS;
        if !wanted {
            return Ok(());
        }
        let raw = match raw {
            Raw::Bytes(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            Raw::Span { offset, len } => {
                String::from_utf8_lossy(&self.raw_text.read(file, offset, len)?).into_owned()
            }
        };
        let record = RejectRecord {
            file,
            line,
            rule,
            detail,
            raw,
        };
        if let Some((path, writer)) = &mut self.rejects {
            let rejects_error = |source| InputError::Rejects {
                path: path.clone(),
                source,
            };
            serde_json::to_writer(&mut *writer, &record)
                .map_err(|error| rejects_error(error.into()))?;
            writer.write_all(b"\n").map_err(rejects_error)?;
        }
        if self.examples.len() < EXAMPLE_REJECTS {
            self.examples.push(record);
        }
        Ok(())
    }

    pub fn finish(mut self, sort: SortReport) -> Result<CleaningReport, InputError> {
        if let Some((path, writer)) = &mut self.rejects {
            writer.flush().map_err(|source| InputError::Rejects {
                path: path.clone(),
                source,
            })?;
        }
        let files: Vec<FileReport> = FileKind::ALL
            .into_iter()
            .map(|file| FileReport {
                file,
                counts: self.counts(file).clone(),
            })
            .collect();
        let mut totals = Counts::default();
        for file in &files {
            totals.add(&file.counts);
        }
        let reject_ratio = Ratio::new(totals.rejected, totals.read).unwrap_or(Ratio::ZERO);
        Ok(CleaningReport {
            files,
            totals,
            reject_ratio,
            accounts: self.accounts,
            warnings: self.warnings,
            warnings_total: self.warnings_total,
            examples: self.examples,
            sort,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ratio(text: &str) -> Ratio {
        text.parse().unwrap()
    }

    #[test]
    fn parses_thresholds() {
        assert_eq!(
            ratio("0.1"),
            Ratio {
                numerator: 1,
                denominator: 10
            }
        );
        assert_eq!(
            ratio(" .05 "),
            Ratio {
                numerator: 5,
                denominator: 100
            }
        );
        assert_eq!(
            ratio("1"),
            Ratio {
                numerator: 1,
                denominator: 1
            }
        );
        assert_eq!(
            ratio("2%"),
            Ratio {
                numerator: 2,
                denominator: 100
            }
        );
        assert_eq!(
            ratio("0.5%"),
            Ratio {
                numerator: 5,
                denominator: 1000
            }
        );
        assert_eq!(
            ratio("1/20"),
            Ratio {
                numerator: 1,
                denominator: 20
            }
        );
        assert_eq!(
            ratio("3."),
            Ratio {
                numerator: 3,
                denominator: 1
            }
        );
        for bad in [
            "",
            ".",
            "-0.1",
            "0,1",
            "1e-3",
            "abc",
            "1/0",
            "0.1234567890123456789",
            "1.2.3",
        ] {
            assert!(bad.parse::<Ratio>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn compares_exactly() {
        let tenth = ratio("0.1");
        assert!(
            !Ratio::new(1, 10).unwrap().exceeds(tenth),
            "equal is not above"
        );
        assert!(
            Ratio::new(100_000_001, 1_000_000_000)
                .unwrap()
                .exceeds(tenth)
        );
        assert!(
            !Ratio::new(99_999_999, 1_000_000_000)
                .unwrap()
                .exceeds(tenth)
        );
        assert!(
            Ratio::new(u64::MAX, u64::MAX - 1)
                .unwrap()
                .exceeds(ratio("1"))
        );
        assert!(!Ratio::new(0, 1).unwrap().exceeds(ratio("0")));
    }
}
