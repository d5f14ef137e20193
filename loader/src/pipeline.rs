//! Cleaning a delivery folder: reads the three files, applies the rules of [`crate::clean`],
//! and produces the cleaned day (instruments in memory, accounts spooled to a temporary file)
//! with its digest and a [`CleaningReport`] of what became of every row.
//!
//! Memory does not grow with the size of the day: instruments are few and kept in memory;
//! principal and holding rows go through an external sort by account number (spilling to
//! temporary files past [`CleanOptions::sort_budget_bytes`]), and the sorted stream is settled
//! one account at a time straight into the spool. Raw text is never kept: a row's byte span
//! is, and rejects read their text back from the file.

pub mod cleaning_report;
mod csvfile;
mod sort;
mod sort_entry;
mod spool;

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::mem;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use invest_dataset::{FileKind, Rule};
use invest_proto::deposit::v1::DirectoryEntry;
use invest_proto::digest::{RecordDigest, RecordKind};
use invest_proto::ids::{AccountNumber, Isin, MAX_TEXT_BYTES};
use invest_proto::portfolio::v1::{Instrument, SnapshotAccount};

pub use self::cleaning_report::{
    AccountCounts, CleaningReport, Counts, EXAMPLE_REJECTS, FileReport, KEPT_WARNINGS, Loss,
    LossGuard, LossUnit, Ratio, RejectRecord, SortReport, Warning,
};
use self::cleaning_report::{Raw, RowTally};
use self::csvfile::{CsvFile, RawRow, RawText};
use self::sort::{DEFAULT_FAN_IN, ExternalSorter};
use self::sort_entry::SortEntry;
pub use self::spool::Accounts;
use self::spool::{Spool, SpoolWriter};
use crate::clean::{
    Fault, Fingerprint, HoldingFields, HoldingRow, InstrumentFields, PrincipalFields, PrincipalRow,
    RowRef, check_digit_warning, check_holding_row, check_instrument_row, check_principal_row,
    settle_account, settle_instruments, split_row,
};

/// Why a delivery cannot be cleaned at all (as opposed to rows being rejected).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// One of the three files is not in the folder.
    #[error("{}: file not found; a delivery folder holds {}, {} and {}", path.display(),
        FileKind::Instruments.file_name(), FileKind::Principal.file_name(), FileKind::Holdings.file_name())]
    MissingFile {
        /// The file looked for.
        path: PathBuf,
    },
    /// The file has no line at all, so no header.
    #[error("{}: the file is empty; its first line must be the header", path.display())]
    EmptyFile {
        /// The file.
        path: PathBuf,
    },
    /// A header name is not UTF-8, so columns cannot be found by name.
    #[error("{}: header field {position} is not valid UTF-8; the file must be saved as UTF-8", path.display())]
    HeaderNotUtf8 {
        /// The file.
        path: PathBuf,
        /// 1-based position of the field.
        position: usize,
    },
    /// A column the rules need is not in the header.
    #[error("{}: required column {column} is not in the header {header:?}", path.display())]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// "Korean / english" names of the column.
        column: String,
        /// The header as found (trimmed).
        header: Vec<String>,
    },
    /// A column the rules need appears twice (say as Korean and as English).
    #[error("{}: column {column} appears twice, as fields {first} and {second}; we cannot tell which to read", path.display())]
    DuplicateColumn {
        /// The file.
        path: PathBuf,
        /// "Korean / english" names of the column.
        column: String,
        /// 1-based position of the first occurrence.
        first: usize,
        /// 1-based position of the second occurrence.
        second: usize,
    },
    /// Reading a delivery file failed.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A delivery file is not a regular file (a FIFO, a device such as `/dev/zero` behind a
    /// symlink, a directory, a socket): reading it could block or never end.
    #[error("{}: is {what}, not a regular file; a delivery holds three regular files (check symlinks and how the folder is filled)", path.display())]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is instead.
        what: &'static str,
    },
    /// The header line cannot be read as a header.
    #[error("{}: {reason}", path.display())]
    Header {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The file changed size while it was read: the upstream is probably still writing it.
    #[error("{}: changed while being read (it had {size} bytes when opened, then {now}); the upstream is probably still writing it: load the day once it is complete", path.display())]
    Changed {
        /// The file.
        path: PathBuf,
        /// Its size when opened.
        size: u64,
        /// The size (or bytes read) found later.
        now: u64,
    },
    /// The instrument master has more rows than the loader keeps in memory.
    #[error("{}: more than {max} instrument rows (--max-instruments); the master is kept in memory and a real one has a few thousand, so this is not an instrument master: check the file, or raise --max-instruments if it really is one", path.display())]
    TooManyInstruments {
        /// The file.
        path: PathBuf,
        /// The limit.
        max: u64,
    },
    /// Writing the rejects file failed.
    #[error("{}: cannot write the rejects file: {source}", path.display())]
    Rejects {
        /// The rejects file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Temporary files (sort runs, spool) failed, typically a full disk.
    #[error("temporary files ({what}): {source}; check the free space of the scratch folder")]
    Scratch {
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A threshold given as text is not a ratio.
    #[error(
        "invalid ratio {text:?}: expected a decimal such as 0.1, a percentage such as 5% or a fraction such as 1/20"
    )]
    InvalidRatio {
        /// The text given.
        text: String,
    },
}

fn scratch(what: &'static str) -> impl Fn(io::Error) -> InputError {
    move |source| InputError::Scratch { what, source }
}

/// The stage cleaning is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading and row-checking one file.
    Reading(FileKind),
    /// Merging spilled sort runs (instant when nothing spilled).
    Sorting,
    /// Applying the set rules account by account and writing the spool.
    Settling,
    /// Finished.
    Done,
}

/// A progress event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A new phase starts.
    Phase(Phase),
    /// Bytes of a file read so far, out of its size.
    Read {
        /// The file.
        file: FileKind,
        /// Bytes read so far.
        bytes: u64,
        /// Size of the file.
        total: u64,
    },
    /// Sorted rows settled so far, out of all principal and holding rows that passed their
    /// row rules.
    Settled {
        /// Rows settled so far.
        rows: u64,
        /// Rows to settle.
        total: u64,
    },
}

/// Receives progress events (from the cleaning thread).
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// Default memory budget of the sort: 64 MiB.
pub const DEFAULT_SORT_BUDGET: usize = 64 << 20;

/// Default longest line: 64 KiB (a real row is about 100 bytes).
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 << 10;

/// Default (and largest) field after trimming: what the servers accept.
pub const DEFAULT_MAX_FIELD_BYTES: usize = MAX_TEXT_BYTES;

/// Default cap on instrument rows (kept in memory): a real master has a few thousand.
pub const DEFAULT_MAX_INSTRUMENTS: u64 = 100_000;

/// Default cap on one account's rows (gathered in memory to settle it): a real account has
/// a few dozen holdings.
pub const DEFAULT_MAX_HOLDINGS_PER_ACCOUNT: usize = 10_000;

/// The memory the loader may use, whatever the delivery holds (the README's formula):
///
/// ```text
/// 48 MiB (program, runtime, connections)
/// + 2 × sort budget (the sort's items and the vector holding them)
/// + 8 × max line bytes (read buffer, field buffers, a row's raw text read back)
/// + max instruments × (2 × max field bytes + 256 B) (the master, kept whole)
/// + max holdings per account × (3 × max field bytes + 512 B) (one account being settled)
/// + 32 MiB (push: batches of at most 2 MiB, a few in flight per service)
/// ```
///
/// The parts add up although they never all live at once (the sort is gone before the
/// push), so the bound holds with room. With the defaults it is about 463 MiB, within the
/// CronJob's 512 MiB limit; a real day (names of tens of bytes, a few thousand
/// instruments) stays far below it.
pub fn memory_bound(options: &CleanOptions) -> u64 {
    const MIB: u64 = 1 << 20;
    let field = options.max_field_bytes.min(MAX_TEXT_BYTES) as u64;
    48 * MIB
        + 2 * options.sort_budget_bytes as u64
        + 8 * options.max_line_bytes as u64
        + options.max_instruments * (2 * field + 256)
        + options.max_holdings_per_account as u64 * (3 * field + 512)
        + 32 * MIB
}

/// How often settling reports progress, in rows.
const SETTLE_PROGRESS_STEP: u64 = 1 << 16;

/// How to clean a day.
#[derive(Clone)]
pub struct CleanOptions {
    /// Where to write every rejected row as JSON Lines ([`RejectRecord`]); nowhere if `None`.
    /// Order: the instruments file (row rules, then duplicates), the row rules of the
    /// principal file, then of the holdings file, then the set rules account by account.
    pub rejects: Option<PathBuf>,
    /// Memory the sort may hold before spilling sorted runs to disk.
    pub sort_budget_bytes: usize,
    /// Folder for the sort runs and the spool; the system's temporary folder if `None`.
    pub scratch_dir: Option<PathBuf>,
    /// Longest line read, without its terminator; a longer one is rejected as
    /// `line_too_long` and its bytes past the limit are skipped unread.
    pub max_line_bytes: usize,
    /// Longest field after trimming (`field_too_long`); never above
    /// [`MAX_TEXT_BYTES`], whatever is asked.
    pub max_field_bytes: usize,
    /// Most instrument rows; more is an input error ([`InputError::TooManyInstruments`]).
    pub max_instruments: u64,
    /// Most rows of one account in the holdings file (or in the principal file); an account
    /// with more has all its rows rejected as `too_many_holdings`.
    pub max_holdings_per_account: usize,
    /// Called with progress events.
    pub progress: Option<ProgressFn>,
}

impl Default for CleanOptions {
    fn default() -> Self {
        Self {
            rejects: None,
            sort_budget_bytes: DEFAULT_SORT_BUDGET,
            scratch_dir: None,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            max_field_bytes: DEFAULT_MAX_FIELD_BYTES,
            max_instruments: DEFAULT_MAX_INSTRUMENTS,
            max_holdings_per_account: DEFAULT_MAX_HOLDINGS_PER_ACCOUNT,
            progress: None,
        }
    }
}

impl fmt::Debug for CleanOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CleanOptions")
            .field("rejects", &self.rejects)
            .field("sort_budget_bytes", &self.sort_budget_bytes)
            .field("scratch_dir", &self.scratch_dir)
            .field("max_line_bytes", &self.max_line_bytes)
            .field("max_field_bytes", &self.max_field_bytes)
            .field("max_instruments", &self.max_instruments)
            .field("max_holdings_per_account", &self.max_holdings_per_account)
            .field("progress", &self.progress.as_ref().map(|_| "callback"))
            .finish()
    }
}

/// The cleaned day: what the loader sends.
#[derive(Debug, Clone)]
pub struct CleanedDay {
    /// Instruments that load, by ascending ISIN.
    pub instruments: Vec<Instrument>,
    /// Lowercase hex [`RecordDigest`] of the instruments then the accounts, in that order.
    pub digest: String,
    /// Lowercase hex [`RecordDigest`] of the account directory: one entry (account number,
    /// owner) per account, in spool order.
    pub directory_digest: String,
    /// Accounts in the spool.
    pub account_count: u64,
    /// Holdings over all accounts.
    pub holding_count: u64,
    /// Rows rejected while cleaning, by file and rule: what the loader tells the services.
    pub rejects: Vec<RejectCount>,
    spool: Spool,
}

/// Rows of one file rejected by one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectCount {
    /// The file's name, e.g. `holdings.csv`.
    pub file: &'static str,
    /// The rule's name as the report prints it.
    pub rule: &'static str,
    /// Rows.
    pub rows: u64,
}

impl CleanedDay {
    /// The accounts, by ascending account number (string order), each with its holdings by
    /// ascending ISIN. Every call reads the spool again from the start; the readers are
    /// independent and keep the spool alive.
    pub fn accounts(&self) -> io::Result<Accounts> {
        self.spool.accounts()
    }
}

/// What the readers need besides the file.
struct Reading<'a> {
    tally: &'a mut RowTally,
    max_field_bytes: usize,
}

/// Cleans the delivery in `dir`. Rows that break a rule are counted in the report (and
/// written to `options.rejects`); only a folder that cannot be read as a delivery at all
/// is an error.
pub fn clean_day(
    dir: &Path,
    options: &CleanOptions,
) -> Result<(CleanedDay, CleaningReport), InputError> {
    let progress = options.progress.clone();
    let emit = |event: Progress| {
        if let Some(progress) = &progress {
            progress(event);
        }
    };
    let max_line = options.max_line_bytes;
    // All three files are opened and their headers checked before any work, so a bad
    // delivery fails in seconds.
    let mut instruments_file =
        CsvFile::open(dir, FileKind::Instruments, max_line, progress.clone())?;
    let mut principal_file = CsvFile::open(dir, FileKind::Principal, max_line, progress.clone())?;
    let mut holdings_file = CsvFile::open(dir, FileKind::Holdings, max_line, progress.clone())?;
    let raw_text = RawText::new(
        dir,
        vec![
            (FileKind::Instruments, instruments_file.handle()?),
            (FileKind::Principal, principal_file.handle()?),
            (FileKind::Holdings, holdings_file.handle()?),
        ],
    );
    let mut tally = RowTally::new(options.rejects.clone(), raw_text)?;
    let max_field_bytes = options.max_field_bytes.min(MAX_TEXT_BYTES);

    emit(Progress::Phase(Phase::Reading(FileKind::Instruments)));
    let mut reading = Reading {
        tally: &mut tally,
        max_field_bytes,
    };
    let instruments =
        read_instruments(&mut instruments_file, &mut reading, options.max_instruments)?;
    let known: BTreeSet<Isin> = instruments
        .iter()
        .filter_map(|instrument| Isin::parse(&instrument.isin).ok())
        .collect();

    let mut sorter = ExternalSorter::new(
        options.sort_budget_bytes,
        DEFAULT_FAN_IN,
        options.scratch_dir.clone(),
    );
    emit(Progress::Phase(Phase::Reading(FileKind::Principal)));
    read_principal(&mut principal_file, &mut reading, &mut sorter)?;
    emit(Progress::Phase(Phase::Reading(FileKind::Holdings)));
    read_holdings(&mut holdings_file, &known, &mut reading, &mut sorter)?;
    for (kind, file) in [
        (FileKind::Instruments, &instruments_file),
        (FileKind::Principal, &principal_file),
        (FileKind::Holdings, &holdings_file),
    ] {
        let counts = file.counts();
        tally.lines(kind, counts.lines, counts.blank);
    }
    let sort_report = SortReport {
        rows: sorter.len(),
        runs_spilled: sorter.runs_spilled(),
    };

    emit(Progress::Phase(Phase::Sorting));
    let sorted = sorter.finish().map_err(scratch("merging sort runs"))?;

    emit(Progress::Phase(Phase::Settling));
    let mut digest = RecordDigest::new();
    for instrument in &instruments {
        digest.add(RecordKind::Instrument, instrument);
    }
    let mut settler = Settler {
        spool: SpoolWriter::create(options.scratch_dir.as_deref())
            .map_err(scratch("creating the spool"))?,
        digest,
        directory_digest: RecordDigest::new(),
        tally,
        account_count: 0,
        holding_count: 0,
        accounts_named: 0,
        max_rows: options.max_holdings_per_account.max(1),
    };
    let mut group = Group::default();
    let mut settled_rows = 0;
    for entry in sorted {
        let entry = entry.map_err(scratch("reading sort runs"))?;
        if group.account.as_ref() != Some(entry.account_number()) {
            settler.finish_group(&mut group)?;
            group.account = Some(entry.account_number().clone());
        }
        settler.add(&mut group, entry)?;
        settled_rows += 1;
        if settled_rows % SETTLE_PROGRESS_STEP == 0 {
            emit(Progress::Settled {
                rows: settled_rows,
                total: sort_report.rows,
            });
        }
    }
    settler.finish_group(&mut group)?;
    emit(Progress::Settled {
        rows: settled_rows,
        total: sort_report.rows,
    });

    let Settler {
        spool,
        digest,
        directory_digest,
        mut tally,
        account_count,
        holding_count,
        accounts_named,
        ..
    } = settler;
    tally.accounts(accounts_named, account_count);
    let spool = spool.finish().map_err(scratch("writing the spool"))?;
    let report = tally.finish(sort_report)?;
    debug_assert!(report.check_accounting().is_ok(), "{report:?}");
    emit(Progress::Phase(Phase::Done));
    let rejects = FileKind::ALL
        .into_iter()
        .flat_map(|kind| {
            report
                .file(kind)
                .rejected_by_rule
                .iter()
                .filter(|(_, rows)| **rows > 0)
                .map(move |(rule, rows)| RejectCount {
                    file: kind.file_name(),
                    rule: rule.as_str(),
                    rows: *rows,
                })
        })
        .collect();
    let day = CleanedDay {
        instruments,
        digest: digest.finish(),
        directory_digest: directory_digest.finish(),
        account_count,
        holding_count,
        rejects,
        spool,
    };
    Ok((day, report))
}

/// The fields at the positions of the file kind's columns, in `FileKind::columns` order.
fn pick<'a, const N: usize>(fields: &[&'a str], columns: &[usize]) -> [&'a str; N] {
    // Positions come from the header and `split_row` checked the row has as many fields.
    std::array::from_fn(|index| {
        columns
            .get(index)
            .and_then(|&column| fields.get(column))
            .copied()
            .unwrap_or("")
    })
}

fn row_ref(raw: &RawRow<'_>, fields: &[&str]) -> RowRef {
    RowRef {
        line: raw.line,
        offset: raw.offset,
        len: raw.len,
        content: Fingerprint::of(fields.iter().copied()),
    }
}

fn span(row: &RowRef) -> Raw<'static> {
    Raw::Span {
        offset: row.offset,
        len: row.len,
    }
}

/// The structural rules, then trimming and the text rules.
fn fields_of<'a>(raw: &RawRow<'a>, max_field_bytes: usize) -> Result<Vec<&'a str>, Fault> {
    match &raw.fields {
        Ok(fields) => split_row(fields.clone(), raw.header, max_field_bytes),
        Err(fault) => Err(fault.clone()),
    }
}

/// The account a rejected row names, when its account number is well-formed: the row
/// counts towards the accounts named in the delivery (the loss guard).
fn mentioned_account(raw: &RawRow<'_>, column: usize) -> Option<AccountNumber> {
    let index = *raw.columns.get(column)?;
    let text = std::str::from_utf8(raw.field(index)?).ok()?;
    AccountNumber::parse(text.trim()).ok()
}

fn read_instruments(
    file: &mut CsvFile,
    reading: &mut Reading<'_>,
    max_instruments: u64,
) -> Result<Vec<Instrument>, InputError> {
    let kind = FileKind::Instruments;
    let path = file.path().to_owned();
    let mut rows = Vec::new();
    let mut read = 0u64;
    while let Some(raw) = file.next_row()? {
        read += 1;
        if read > max_instruments {
            return Err(InputError::TooManyInstruments {
                path,
                max: max_instruments,
            });
        }
        reading.tally.read(kind);
        let checked = fields_of(&raw, reading.max_field_bytes).and_then(|fields| {
            let [name, isin, asset_group] = pick(&fields, raw.columns);
            check_instrument_row(
                &InstrumentFields {
                    name,
                    isin,
                    asset_group,
                },
                row_ref(&raw, &fields),
            )
        });
        match checked {
            Ok(row) => {
                if let Some(warning) = check_digit_warning(&row.isin) {
                    reading.tally.warn(kind, row.row.line, warning);
                }
                rows.push(row);
            }
            Err(fault) => reading.tally.reject(
                kind,
                raw.line,
                fault.rule,
                fault.detail,
                Raw::Bytes(raw.raw),
            )?,
        }
    }
    let settlement = settle_instruments(rows);
    for reject in settlement.rejects {
        reading.tally.reject(
            reject.file,
            reject.row.line,
            reject.rule,
            reject.detail,
            span(&reject.row),
        )?;
    }
    reading.tally.collapsed(kind, settlement.collapsed);
    reading
        .tally
        .loaded(kind, settlement.instruments.len() as u64);
    Ok(settlement.instruments)
}

fn stage(sorter: &mut ExternalSorter<SortEntry>, entry: SortEntry) -> Result<(), InputError> {
    sorter.push(entry).map_err(scratch("spilling sort runs"))
}

fn read_principal(
    file: &mut CsvFile,
    reading: &mut Reading<'_>,
    sorter: &mut ExternalSorter<SortEntry>,
) -> Result<(), InputError> {
    let kind = FileKind::Principal;
    while let Some(raw) = file.next_row()? {
        reading.tally.read(kind);
        let checked = fields_of(&raw, reading.max_field_bytes).and_then(|fields| {
            let [account_number, principal] = pick(&fields, raw.columns);
            check_principal_row(
                &PrincipalFields {
                    account_number,
                    principal,
                },
                row_ref(&raw, &fields),
            )
        });
        match checked {
            Ok(row) => stage(sorter, SortEntry::Principal(row))?,
            Err(fault) => {
                reading.tally.reject(
                    kind,
                    raw.line,
                    fault.rule,
                    fault.detail,
                    Raw::Bytes(raw.raw),
                )?;
                // Column 0 of the principal file is the account number.
                if let Some(account_number) = mentioned_account(&raw, 0) {
                    stage(sorter, SortEntry::Mention(account_number, raw.line))?;
                }
            }
        }
    }
    Ok(())
}

fn read_holdings(
    file: &mut CsvFile,
    known: &BTreeSet<Isin>,
    reading: &mut Reading<'_>,
    sorter: &mut ExternalSorter<SortEntry>,
) -> Result<(), InputError> {
    let kind = FileKind::Holdings;
    while let Some(raw) = file.next_row()? {
        reading.tally.read(kind);
        let checked = fields_of(&raw, reading.max_field_bytes).and_then(|fields| {
            let [
                customer_name,
                brokerage,
                account_number,
                account_name,
                isin,
                current_price,
                quantity,
            ] = pick(&fields, raw.columns);
            let fields_by_name = HoldingFields {
                customer_name,
                brokerage,
                account_number,
                account_name,
                isin,
                current_price,
                quantity,
            };
            check_holding_row(&fields_by_name, row_ref(&raw, &fields), |isin| {
                known.contains(isin)
            })
        });
        match checked {
            Ok(row) => stage(sorter, SortEntry::Holding(row))?,
            Err(fault) => {
                reading.tally.reject(
                    kind,
                    raw.line,
                    fault.rule,
                    fault.detail,
                    Raw::Bytes(raw.raw),
                )?;
                // Column 2 of the holdings file is the account number.
                if let Some(account_number) = mentioned_account(&raw, 2) {
                    stage(sorter, SortEntry::Mention(account_number, raw.line))?;
                }
            }
        }
    }
    Ok(())
}

/// The directory entry deposit-svc gets for an account.
pub fn directory_entry(account: &SnapshotAccount) -> DirectoryEntry {
    DirectoryEntry {
        account_number: account.account_number.clone(),
        customer_name: account.customer_name.clone(),
    }
}

/// The sorted rows of the account being settled.
#[derive(Default)]
struct Group {
    account: Option<AccountNumber>,
    holdings: Vec<HoldingRow>,
    principals: Vec<PrincipalRow>,
    /// Past the cap: its rows are rejected as they come, none is kept.
    too_many: bool,
}

/// Settles accounts one by one into the spool and the digest.
struct Settler {
    spool: SpoolWriter,
    digest: RecordDigest,
    directory_digest: RecordDigest,
    tally: RowTally,
    account_count: u64,
    holding_count: u64,
    /// Distinct well-formed account numbers among the principal and holding rows.
    accounts_named: u64,
    /// Most rows of one account in one file.
    max_rows: usize,
}

impl Settler {
    fn too_many_detail(&self, account: &str) -> String {
        format!(
            "account {account} has more than {} rows in {} or {} (--max-holdings-per-account); \
             all of its rows are rejected: no real account holds that many, and one account's \
             rows are kept in memory to settle it",
            self.max_rows,
            FileKind::Holdings.file_name(),
            FileKind::Principal.file_name()
        )
    }

    fn reject_too_many(
        &mut self,
        file: FileKind,
        row: &RowRef,
        account: &str,
    ) -> Result<(), InputError> {
        let detail = self.too_many_detail(account);
        self.tally
            .reject(file, row.line, Rule::TooManyHoldings, detail, span(row))
    }

    /// Adds one sorted row to the account's group; past the cap, rejects it at once.
    fn add(&mut self, group: &mut Group, entry: SortEntry) -> Result<(), InputError> {
        let account = entry.account_number().as_str().to_owned();
        let (file, row) = match &entry {
            SortEntry::Mention(..) => return Ok(()),
            SortEntry::Principal(row) => (FileKind::Principal, row.row),
            SortEntry::Holding(row) => (FileKind::Holdings, row.row),
        };
        if group.too_many {
            return self.reject_too_many(file, &row, &account);
        }
        match entry {
            SortEntry::Principal(row) => group.principals.push(row),
            SortEntry::Holding(row) => group.holdings.push(row),
            SortEntry::Mention(..) => {}
        }
        if group.holdings.len() > self.max_rows || group.principals.len() > self.max_rows {
            group.too_many = true;
            let principals = mem::take(&mut group.principals);
            let holdings = mem::take(&mut group.holdings);
            for row in &principals {
                self.reject_too_many(FileKind::Principal, &row.row, &account)?;
            }
            for row in &holdings {
                self.reject_too_many(FileKind::Holdings, &row.row, &account)?;
            }
        }
        Ok(())
    }

    /// Settles the group's account (if any) and empties the group.
    fn finish_group(&mut self, group: &mut Group) -> Result<(), InputError> {
        if group.account.take().is_none() {
            return Ok(());
        }
        self.accounts_named += 1;
        let holdings = mem::take(&mut group.holdings);
        let principals = mem::take(&mut group.principals);
        if mem::take(&mut group.too_many) || (holdings.is_empty() && principals.is_empty()) {
            return Ok(());
        }
        self.settle(holdings, principals)
    }

    fn settle(
        &mut self,
        holdings: Vec<HoldingRow>,
        principals: Vec<PrincipalRow>,
    ) -> Result<(), InputError> {
        let settlement = settle_account(holdings, principals);
        for reject in settlement.rejects {
            self.tally.reject(
                reject.file,
                reject.row.line,
                reject.rule,
                reject.detail,
                span(&reject.row),
            )?;
        }
        self.tally
            .collapsed(FileKind::Holdings, settlement.holdings_collapsed);
        self.tally
            .collapsed(FileKind::Principal, settlement.principal_collapsed);
        if let Some(account) = settlement.account {
            self.spool
                .write(&account)
                .map_err(scratch("writing the spool"))?;
            self.digest.add(RecordKind::Account, &account);
            self.directory_digest
                .add(RecordKind::DirectoryEntry, &directory_entry(&account));
            let holdings = account.holdings.len() as u64;
            self.tally.loaded(FileKind::Principal, 1);
            self.tally.loaded(FileKind::Holdings, holdings);
            self.account_count += 1;
            self.holding_count += holdings;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fs;
    use std::sync::Mutex;

    use invest_proto::portfolio::v1::SnapshotAccount;
    use serde_json::Value;
    use tempfile::TempDir;

    use super::*;

    const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/sample");

    const INSTRUMENTS: &str =
        "종목명,ISIN,자산그룹\n미국S&P500,KR7360750004,미국 주식\n현금,CASH,채권 / 현금\n";
    const PRINCIPAL: &str = "계좌번호,투자원금\n111111,1000\n222222,2000\n";
    const HOLDINGS: &str = "고객이름,증권사,계좌번호,계좌명,ISIN,현재가,보유수량\n\
        김,A증권,111111,계좌1,KR7360750004,100,3\n\
        김,A증권,111111,계좌1,CASH,1,50\n\
        이,B증권,222222,계좌1,CASH,1,2000\n";

    /// A delivery folder written by the test, plus a place for the rejects file.
    struct Delivery {
        root: TempDir,
    }

    struct Cleaned {
        day: CleanedDay,
        report: CleaningReport,
        rejects: Vec<Value>,
        rejects_text: String,
    }

    impl Cleaned {
        fn accounts(&self) -> Vec<SnapshotAccount> {
            self.day
                .accounts()
                .unwrap()
                .collect::<io::Result<_>>()
                .unwrap()
        }

        fn account(&self, number: &str) -> SnapshotAccount {
            self.accounts()
                .into_iter()
                .find(|account| account.account_number == number)
                .unwrap()
        }

        /// (file, line, rule) of every reject, by file (settling order) and line.
        fn rejected(&self) -> Vec<(FileKind, u64, Rule)> {
            let mut rejected: Vec<_> = self
                .rejects
                .iter()
                .map(|reject| {
                    let file = FileKind::ALL
                        .into_iter()
                        .find(|kind| reject["file"] == kind.file_name())
                        .unwrap();
                    (
                        file,
                        reject["line"].as_u64().unwrap(),
                        Rule::from_name(reject["rule"].as_str().unwrap()).unwrap(),
                    )
                })
                .collect();
            rejected.sort();
            rejected
        }

        fn reject_at(&self, file: FileKind, line: u64) -> &Value {
            self.rejects
                .iter()
                .find(|reject| reject["file"] == file.file_name() && reject["line"] == line)
                .unwrap_or_else(|| panic!("no reject at {file}:{line} in {:#?}", self.rejects))
        }
    }

    fn reject(file: FileKind, line: u64, rule: Rule) -> (FileKind, u64, Rule) {
        (file, line, rule)
    }

    impl Delivery {
        fn new(
            instruments: impl AsRef<[u8]>,
            principal: impl AsRef<[u8]>,
            holdings: impl AsRef<[u8]>,
        ) -> Self {
            let root = TempDir::new().unwrap();
            fs::create_dir(root.path().join("day")).unwrap();
            let delivery = Self { root };
            delivery.write(FileKind::Instruments, instruments);
            delivery.write(FileKind::Principal, principal);
            delivery.write(FileKind::Holdings, holdings);
            delivery
        }

        fn dir(&self) -> PathBuf {
            self.root.path().join("day")
        }

        fn write(&self, kind: FileKind, content: impl AsRef<[u8]>) {
            fs::write(self.dir().join(kind.file_name()), content).unwrap();
        }

        fn clean_with(&self, options: CleanOptions) -> Cleaned {
            let path = self
                .root
                .path()
                .join(format!("rejects-{}.jsonl", options.sort_budget_bytes));
            let options = CleanOptions {
                rejects: Some(path.clone()),
                ..options
            };
            let (day, report) = clean_day(&self.dir(), &options).unwrap();
            let rejects_text = fs::read_to_string(&path).unwrap();
            let rejects = rejects_text
                .lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect();
            let cleaned = Cleaned {
                day,
                report,
                rejects,
                rejects_text,
            };
            check_balance(&cleaned);
            cleaned
        }

        fn clean(&self) -> Cleaned {
            self.clean_with(CleanOptions::default())
        }

        fn error(&self) -> InputError {
            clean_day(&self.dir(), &CleanOptions::default()).unwrap_err()
        }
    }

    /// Every line is the header, a blank line or a row; every row read is exactly one of
    /// loaded, collapsed, rejected; and the rejects file, the counts and the cleaned day agree.
    fn check_balance(cleaned: &Cleaned) {
        let report = &cleaned.report;
        report.check_accounting().unwrap();
        for file in &report.files {
            assert!(file.counts.balanced(), "{file:?}");
        }
        assert!(report.totals.balanced());
        assert_eq!(report.totals.rejected, cleaned.rejects.len() as u64);
        for kind in FileKind::ALL {
            let in_file = cleaned
                .rejects
                .iter()
                .filter(|reject| reject["file"] == kind.file_name())
                .count();
            assert_eq!(report.file(kind).rejected, in_file as u64, "{kind}");
            // What the loader sends the services: the same counts by file and rule.
            for (rule, rows) in report
                .file(kind)
                .rejected_by_rule
                .iter()
                .filter(|(_, n)| **n > 0)
            {
                let sent = cleaned
                    .day
                    .rejects
                    .iter()
                    .find(|r| r.file == kind.file_name() && r.rule == rule.as_str());
                assert_eq!(sent.map(|r| r.rows), Some(*rows), "{kind} {rule:?}");
            }
        }
        assert_eq!(
            cleaned.day.rejects.iter().map(|r| r.rows).sum::<u64>(),
            report.totals.rejected
        );
        assert_eq!(
            report.file(FileKind::Instruments).loaded,
            cleaned.day.instruments.len() as u64
        );
        assert_eq!(
            report.file(FileKind::Principal).loaded,
            cleaned.day.account_count
        );
        assert_eq!(
            report.file(FileKind::Holdings).loaded,
            cleaned.day.holding_count
        );
        let accounts = cleaned.accounts();
        assert_eq!(accounts.len() as u64, cleaned.day.account_count);
        assert_eq!(
            accounts
                .iter()
                .map(|a| a.holdings.len() as u64)
                .sum::<u64>(),
            cleaned.day.holding_count
        );
        let examples: Vec<Value> = report
            .examples
            .iter()
            .map(|example| serde_json::to_value(example).unwrap())
            .collect();
        let expected: Vec<Value> = cleaned
            .rejects
            .iter()
            .take(EXAMPLE_REJECTS)
            .cloned()
            .collect();
        assert_eq!(examples, expected);
        // Accounts in ascending order, holdings by ISIN, digest over instruments then accounts.
        assert!(
            accounts
                .windows(2)
                .all(|pair| pair[0].account_number < pair[1].account_number)
        );
        assert!(accounts.iter().all(
            |a| !a.holdings.is_empty() && a.holdings.windows(2).all(|p| p[0].isin < p[1].isin)
        ));
        let mut digest = RecordDigest::new();
        cleaned
            .day
            .instruments
            .iter()
            .for_each(|instrument| digest.add(RecordKind::Instrument, instrument));
        accounts
            .iter()
            .for_each(|account| digest.add(RecordKind::Account, account));
        assert_eq!(digest.finish(), cleaned.day.digest);
    }

    fn total_assets(account: &SnapshotAccount) -> i64 {
        account
            .holdings
            .iter()
            .map(|holding| holding.current_price * holding.quantity)
            .sum()
    }

    #[test]
    fn the_real_sample() {
        let (day, report) = clean_day(Path::new(SAMPLE), &CleanOptions::default()).unwrap();
        assert_eq!(day.instruments.len(), 14);
        assert_eq!(day.account_count, 50);
        assert_eq!(day.holding_count, 700);
        assert_eq!(report.totals.rejected, 0, "{:#?}", report.examples);
        assert_eq!(report.totals.collapsed, 0);
        assert_eq!(report.totals.read, 14 + 50 + 700);
        assert_eq!(
            report.reject_ratio(),
            Ratio {
                numerator: 0,
                denominator: 764
            }
        );
        assert!(!report.exceeds("0".parse().unwrap()));
        assert_eq!(report.sort.runs_spilled, 0, "a small day stays in memory");
        assert_eq!(report.sort.rows, 750);
        assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
        let warning = &report.warnings[0];
        assert_eq!((warning.file, warning.line), (FileKind::Instruments, 10));
        assert!(warning.message.contains("KR7195980002"));

        let accounts: Vec<SnapshotAccount> =
            day.accounts().unwrap().collect::<io::Result<_>>().unwrap();
        assert_eq!(accounts.len(), 50);
        let account = accounts
            .iter()
            .find(|a| a.account_number == "5736692368320")
            .unwrap();
        assert_eq!(
            (
                account.customer_name.as_str(),
                account.brokerage.as_str(),
                account.account_name.as_str()
            ),
            ("류영길", "디셈버증권", "계좌1")
        );
        assert_eq!(account.principal, 1_911_386);
        assert_eq!(account.holdings.len(), 14);
        assert_eq!(total_assets(account), 1_929_245);
        assert_eq!(
            accounts
                .iter()
                .filter(|a| a.customer_name == "이정희")
                .count(),
            2
        );
        // Re-readable, identically.
        let again: Vec<SnapshotAccount> =
            day.accounts().unwrap().collect::<io::Result<_>>().unwrap();
        assert_eq!(accounts, again);
        let cleaned = Cleaned {
            day,
            report,
            rejects: Vec::new(),
            rejects_text: String::new(),
        };
        check_balance(&cleaned);
    }

    #[test]
    fn a_plain_delivery() {
        let cleaned = Delivery::new(INSTRUMENTS, PRINCIPAL, HOLDINGS).clean();
        assert!(cleaned.rejects.is_empty());
        assert_eq!(cleaned.rejects_text, "");
        let instruments: Vec<&str> = cleaned
            .day
            .instruments
            .iter()
            .map(|i| i.isin.as_str())
            .collect();
        assert_eq!(instruments, ["CASH", "KR7360750004"]);
        let kim = cleaned.account("111111");
        assert_eq!(
            (
                kim.customer_name.as_str(),
                kim.principal,
                total_assets(&kim)
            ),
            ("김", 1000, 350)
        );
        assert_eq!(cleaned.report.file(FileKind::Holdings).read, 3);
        assert!(cleaned.report.warnings.is_empty());
        let json = serde_json::to_value(&cleaned.report).unwrap();
        assert_eq!(json["files"][2]["file"], "account_asset_info_set.csv");
        assert_eq!(json["files"][2]["loaded"], 3);
        assert_eq!(
            json["reject_ratio"],
            serde_json::json!({"numerator": 0, "denominator": 7})
        );
    }

    #[test]
    fn bom_crlf_and_quoted_fields() {
        let instruments = "\u{feff}\"종목명\",\"ISIN\",\"자산그룹\"\r\n\
            \"S&P 500, \"\"hedged\"\"\",\"KR7360750004\",\"미국 주식\"\r\n\
            현금,CASH,\"채권 / 현금\"\r\n";
        let principal = "\u{feff}계좌번호,투자원금\r\n111111,1000\r\n\"222222\",\"2000\"";
        let holdings = format!("\u{feff}{}", HOLDINGS.replace('\n', "\r\n"));
        let cleaned = Delivery::new(instruments, principal, holdings).clean();
        assert!(cleaned.rejects.is_empty(), "{:#?}", cleaned.rejects);
        let names: Vec<&str> = cleaned
            .day
            .instruments
            .iter()
            .map(|i| i.name.as_str())
            .collect();
        assert_eq!(names, ["현금", "S&P 500, \"hedged\""]);
        assert_eq!(cleaned.day.account_count, 2);
        assert_eq!(cleaned.account("222222").principal, 2000);
    }

    #[test]
    fn english_headers_in_another_order_with_extra_columns() {
        let instruments =
            "ISIN,Asset_Group,NAME,note\nKR7360750004,미국 주식,미국S&P500,x\nCASH,현금,현금,\n";
        let principal = "Principal,memo,ACCOUNT_NUMBER\n1000,,111111\n";
        let holdings = "quantity,Isin,memo,account_number,customer_name,brokerage,account_name,current_price\n\
            3,KR7360750004,hello,111111,김,A증권,계좌1,100\n";
        let cleaned = Delivery::new(instruments, principal, holdings).clean();
        assert!(cleaned.rejects.is_empty(), "{:#?}", cleaned.rejects);
        let kim = cleaned.account("111111");
        assert_eq!(
            (kim.brokerage.as_str(), kim.principal, total_assets(&kim)),
            ("A증권", 1000, 300)
        );
        assert_eq!(cleaned.day.instruments[1].asset_group, "미국 주식");
        // Extra columns still count for field_count.
        let holdings = format!("{holdings}3,KR7360750004,111111,김,A증권,계좌1,100\n");
        let cleaned = Delivery::new(instruments, principal, holdings).clean();
        assert_eq!(
            cleaned.rejected(),
            [reject(FileKind::Holdings, 3, Rule::FieldCount)]
        );
    }

    #[test]
    fn blank_and_separator_only_lines_are_not_rows() {
        let holdings = "고객이름,증권사,계좌번호,계좌명,ISIN,현재가,보유수량\n\
            \n\
            ,,,,,,\n\
            김,A증권,111111,계좌1,KR7360750004,100,3\n   \n\
            \t, ,\u{3000},\n\
            \r\n\
            김,A증권,111111,계좌1,CASH,1,50\n\
            이,B증권,222222,계좌1,CASH,1,2000\n\
            \"\",\"\",\"\",\"\",\"\",\"\",\"\"\n\n";
        let cleaned = Delivery::new(INSTRUMENTS, PRINCIPAL, holdings).clean();
        // The quoted empty row is a row (quotes are neither separators nor white space).
        assert_eq!(cleaned.report.file(FileKind::Holdings).read, 4);
        assert_eq!(
            cleaned.rejected(),
            [reject(FileKind::Holdings, 10, Rule::EmptyField)]
        );
        assert_eq!(cleaned.day.holding_count, 3);
    }

    #[test]
    fn white_space_is_trimmed_including_around_numbers() {
        let principal = "계좌번호,투자원금\n  111111 , 0 \n\t222222\t,\t2000\n";
        let holdings = "고객이름,증권사,계좌번호,계좌명,ISIN,현재가,보유수량\n\
            \u{20}김 , A증권 ,111111, 계좌1 , KR7360750004 , 100 ,  3\n\
            \"  김\",A증권,111111,계좌1,CASH,\" 0001 \",0\n\
            이,B증권,222222,계좌1,CASH,1,2000\n";
        let cleaned = Delivery::new(INSTRUMENTS, principal, holdings).clean();
        assert!(cleaned.rejects.is_empty(), "{:#?}", cleaned.rejects);
        let kim = cleaned.account("111111");
        assert_eq!(
            (
                kim.customer_name.as_str(),
                kim.account_name.as_str(),
                kim.principal
            ),
            ("김", "계좌1", 0)
        );
        assert_eq!(
            (
                kim.holdings[0].isin.as_str(),
                kim.holdings[0].current_price,
                kim.holdings[0].quantity
            ),
            ("CASH", 1, 0)
        );
        assert_eq!(total_assets(&kim), 300);
    }

    #[test]
    fn physical_line_numbers_and_raw_text() {
        // A quoted field may not span lines: line 3 opens a quote it does not close, line 4
        // is read as a row of its own (and has too few fields), everything else stands.
        let holdings = "고객이름,증권사,계좌번호,계좌명,ISIN,현재가,보유수량\n\
            \n\
            김,A증권,111111,\"계좌\n\
            1\",KR7360750004,100,3\n\
            \n\
            김,A증권,111111,계좌1,CASH,1,x\n\
            ,,,\n\
            \"이\", B증권 ,222222,계좌1,CASH,1.5,2000\n\
            이,B증권,222222,계좌1,CASH,1,2000\n\
            김,A증권,111111,계좌1,KR7360750004,100,3";
        let cleaned = Delivery::new(INSTRUMENTS, PRINCIPAL, holdings).clean();
        assert_eq!(
            cleaned.rejected(),
            [
                reject(FileKind::Holdings, 3, Rule::UnclosedQuote),
                reject(FileKind::Holdings, 4, Rule::FieldCount),
                reject(FileKind::Holdings, 6, Rule::BadNumber),
                reject(FileKind::Holdings, 8, Rule::BadNumber)
            ]
        );
        let open = cleaned.reject_at(FileKind::Holdings, 3);
        assert_eq!(open["raw"], "김,A증권,111111,\"계좌");
        let detail = open["detail"].as_str().unwrap();
        assert!(
            detail.contains("field 4 (\"계좌명\")")
                && detail.contains("line 3")
                && detail.contains("may not span lines")
                && detail.contains("resumes at line 4"),
            "{detail}"
        );
        assert_eq!(
            cleaned.reject_at(FileKind::Holdings, 4)["raw"],
            "1\",KR7360750004,100,3"
        );
        let first = cleaned.reject_at(FileKind::Holdings, 6);
        assert!(
            first["detail"]
                .as_str()
                .unwrap()
                .contains("보유수량 (quantity)")
        );
        let second = cleaned.reject_at(FileKind::Holdings, 8);
        assert_eq!(second["raw"], "\"이\", B증권 ,222222,계좌1,CASH,1.5,2000");
        assert!(second["detail"].as_str().unwrap().contains("\"1.5\""));
        assert_eq!(cleaned.account("111111").account_name, "계좌1");
        let counts = cleaned.report.file(FileKind::Holdings);
        assert_eq!((counts.lines, counts.blank, counts.read), (10, 3, 6));
        // The JSON Lines file has one object per line.
        assert_eq!(cleaned.rejects_text.lines().count(), 4);
        assert!(cleaned.rejects_text.starts_with(
            r#"{"file":"account_asset_info_set.csv","line":3,"rule":"unclosed_quote","detail":"#
        ));
    }

    #[test]
    fn line_numbers_with_crlf_and_set_rule_raw_text() {
        // Set-rule rejects read their raw text back from the file by byte span.
        let principal =
            "\u{feff}계좌번호,투자원금\r\n\r\n111111,1000\r\n333333,5\r\n  \r\n222222,2000\r\n";
        let holdings = "\u{feff}고객이름,증권사,계좌번호,계좌명,ISIN,현재가,보유수량\r\n\
            김,A증권,111111,계좌1,KR7360750004,100,3\r\n\
            \r\n\
            \"김\",A증권,111111,\"계좌 1\",CASH,1,50\r\n\
            이,B증권,222222,계좌1,CASH,1,2000\r\n\
            박,C증권,444444,계좌1,CASH,1,2000\r\n\
            김,A증권,555555,\"계좌\r\n\
            1\",CASH,1,50\r\n";
        let cleaned = Delivery::new(INSTRUMENTS, principal, holdings).clean();
        assert_eq!(
            cleaned.rejected(),
            [
                reject(FileKind::Principal, 3, Rule::AccountWithoutHoldings),
                reject(FileKind::Principal, 4, Rule::AccountWithoutHoldings),
                reject(FileKind::Holdings, 2, Rule::AttributesNoMajority),
                reject(FileKind::Holdings, 4, Rule::AttributesNoMajority),
                reject(FileKind::Holdings, 6, Rule::AccountWithoutPrincipal),
                reject(FileKind::Holdings, 7, Rule::UnclosedQuote),
                reject(FileKind::Holdings, 8, Rule::FieldCount),
            ]
        );
        assert_eq!(cleaned.reject_at(FileKind::Principal, 4)["raw"], "333333,5");
        assert_eq!(
            cleaned.reject_at(FileKind::Principal, 3)["raw"],
            "111111,1000"
        );
        assert_eq!(
            cleaned.reject_at(FileKind::Holdings, 2)["raw"],
            "김,A증권,111111,계좌1,KR7360750004,100,3"
        );
        assert_eq!(
            cleaned.reject_at(FileKind::Holdings, 4)["raw"],
            "\"김\",A증권,111111,\"계좌 1\",CASH,1,50"
        );
        assert_eq!(
            cleaned.reject_at(FileKind::Holdings, 6)["raw"],
            "박,C증권,444444,계좌1,CASH,1,2000"
        );
        assert_eq!(
            cleaned.reject_at(FileKind::Holdings, 7)["raw"],
            "김,A증권,555555,\"계좌"
        );
        assert_eq!(cleaned.day.account_count, 1);
        // 111111, 222222, 333333 and 444444 are named; 555555 only on a line that was
        // never split into fields.
        assert_eq!(
            cleaned.report.accounts,
            AccountCounts {
                named: 4,
                loaded: 1
            }
        );
    }

    /// A plain holdings file of `accounts` accounts with `per_account` holdings each (the
    /// ISINs of [`many_instruments`]), and its principal file.
    fn plain_day(accounts: u64, per_account: u64) -> (String, String) {
        let mut principal = String::from("계좌번호,투자원금\n");
        let mut holdings = String::from("고객이름,증권사,계좌번호,계좌명,ISIN,현재가,보유수량\n");
        for account in 0..accounts {
            let number = 100_000 + account;
            principal.push_str(&format!("{number},{}\n", 1_000 + account));
            for holding in 0..per_account {
                holdings.push_str(&format!(
                    "고객{account},A증권,{number},계좌1,{},{},{}\n",
                    instrument_isin(holding),
                    100 + holding,
                    1 + account % 7
                ));
            }
        }
        (principal, holdings)
    }

    fn instrument_isin(index: u64) -> String {
        if index == 0 {
            return "CASH".to_owned();
        }
        invest_proto::ids::isin_with_check_digit(&format!("KR7{:06}00", index))
            .unwrap()
            .into_string()
    }

    fn many_instruments(count: u64) -> String {
        let mut instruments = String::from("종목명,ISIN,자산그룹\n");
        for index in 0..count {
            instruments.push_str(&format!("종목{index},{},그룹\n", instrument_isin(index)));
        }
        instruments
    }

    #[test]
    fn a_stray_quote_costs_one_row() {
        // The issue's failure: one `"` at the start of a line 70% into the holdings file
        // used to swallow the rest of the file into one field.
        let (principal, holdings) = plain_day(200, 3);
        let mut lines: Vec<&str> = holdings.lines().collect();
        let at = lines.len() * 7 / 10;
        let stray = format!("\"{}", lines[at]);
        lines[at] = &stray;
        let holdings = lines.join("\n") + "\n";
        let cleaned = Delivery::new(many_instruments(3), principal, holdings).clean();
        assert_eq!(
            cleaned.rejected(),
            [reject(
                FileKind::Holdings,
                at as u64 + 1,
                Rule::UnclosedQuote
            )]
        );
        assert_eq!(cleaned.day.account_count, 200);
        assert_eq!(cleaned.day.holding_count, 599);
        let guard = cleaned.report.loss_guard(Ratio::ZERO);
        assert_eq!(guard.tripped, [LossUnit::Rows, LossUnit::Holdings]);
        assert!(cleaned.report.loss_guard("1%".parse().unwrap()).passed());
    }

    #[test]
    fn a_bare_cr_or_nul_inside_a_field_is_a_control_character() {
        let holdings = "고객이름,증권사,계좌번호,계좌명,ISIN,현재가,보유수량\n\
            김,A증권,111111,계좌1,KR7360750004,100,3\n\
            \"김\0\",A증권,111111,계좌1,CASH,1,50\n\
            김,A\r증권,111111,계좌1,CASH,1,50\n\
            김,A증권,111111,\"계좌\t1\",CASH,1,50\n\
            김,A증권,111111,\u{202e}1좌계,CASH,1,50\n\
            이,B증권,222222,계좌1,CASH,1,2000\r\n";
        let cleaned = Delivery::new(INSTRUMENTS, PRINCIPAL, holdings).clean();
        assert_eq!(
            cleaned.rejected(),
            (3..=6)
                .map(|line| reject(FileKind::Holdings, line, Rule::ControlCharacter))
                .collect::<Vec<_>>()
        );
        assert!(
            cleaned.reject_at(FileKind::Holdings, 3)["detail"]
                .as_str()
                .unwrap()
                .contains("U+0000")
        );
        assert_eq!(cleaned.day.account_count, 2);
        // A field over --max-field-bytes.
        let holdings = format!("{HOLDINGS}김,A증권,111111,{},CASH,1,1\n", "계".repeat(20));
        let cleaned = Delivery::new(INSTRUMENTS, PRINCIPAL, holdings).clean_with(CleanOptions {
            max_field_bytes: 59,
            ..CleanOptions::default()
        });
        assert_eq!(
            cleaned.rejected(),
            [reject(FileKind::Holdings, 5, Rule::FieldTooLong)]
        );
    }

    #[test]
    fn a_line_over_the_limit_is_cut_and_skipped() {
        let long_name = "가".repeat(2_000); // 6,000 bytes
        let holdings = format!(
            "고객이름,증권사,계좌번호,계좌명,ISIN,현재가,보유수량\n\
             김,A증권,111111,계좌1,KR7360750004,100,3\n\
             x{long_name},A증권,111111,계좌1,CASH,1,50\r\n\
             김,A증권,111111,계좌1,CASH,1,50\n\
             이,B증권,222222,계좌1,CASH,1,2000\n\
             {long_name}"
        );
        let cleaned = Delivery::new(INSTRUMENTS, PRINCIPAL, &holdings).clean_with(CleanOptions {
            max_line_bytes: 1_000,
            ..CleanOptions::default()
        });
        assert_eq!(
            cleaned.rejected(),
            [
                reject(FileKind::Holdings, 3, Rule::LineTooLong),
                reject(FileKind::Holdings, 6, Rule::LineTooLong)
            ]
        );
        let cut = cleaned.reject_at(FileKind::Holdings, 3);
        let raw = cut["raw"].as_str().unwrap();
        // The first 256 bytes, cut back to a character boundary: "x" and 85 syllables.
        assert_eq!(raw, format!("x{}", "가".repeat(85)));
        let detail = cut["detail"].as_str().unwrap();
        assert!(
            detail.contains("line 3 is 6034 bytes long") && detail.contains("1000 bytes"),
            "{detail}"
        );
        let last = cleaned.reject_at(FileKind::Holdings, 6);
        assert!(
            last["detail"]
                .as_str()
                .unwrap()
                .contains("is 6000 bytes long")
        );
        assert_eq!(cleaned.account("111111").holdings.len(), 2);
        assert_eq!(cleaned.day.account_count, 2);
        let counts = cleaned.report.file(FileKind::Holdings);
        assert_eq!((counts.lines, counts.blank, counts.read), (6, 0, 5));

        // The same line within a higher limit is a row like any other (with a long field).
        let cleaned = Delivery::new(INSTRUMENTS, PRINCIPAL, &holdings).clean();
        assert_eq!(
            cleaned.rejected(),
            [
                reject(FileKind::Holdings, 3, Rule::FieldTooLong),
                reject(FileKind::Holdings, 6, Rule::FieldCount)
            ]
        );

        // A header over the limit is an input error.
        let delivery = Delivery::new(INSTRUMENTS, PRINCIPAL, &holdings);
        let error = clean_day(
            &delivery.dir(),
            &CleanOptions {
                max_line_bytes: 20,
                ..CleanOptions::default()
            },
        )
        .unwrap_err();
        assert!(matches!(error, InputError::Header { .. }), "{error}");
        assert!(error.to_string().contains("--max-line-bytes"), "{error}");
    }

    #[test]
    fn a_line_longer_than_the_buffer_streams_by() {
        // Longer than the read buffer: skipped chunk by chunk, its CRLF split across reads.
        let huge = "9".repeat(300_000);
        let holdings = format!(
            "{HOLDINGS}김,A증권,111111,계좌1,CASH,1,{huge}\r\n이,B증권,222222,계좌1,CASH,1,2000\n"
        );
        let cleaned = Delivery::new(INSTRUMENTS, PRINCIPAL, &holdings).clean();
        assert_eq!(
            cleaned.rejected(),
            [reject(FileKind::Holdings, 5, Rule::LineTooLong)]
        );
        let cut = cleaned.reject_at(FileKind::Holdings, 5);
        assert_eq!(cut["raw"].as_str().unwrap().len(), 256);
        let expected = format!(
            "is {} bytes long",
            "김,A증권,111111,계좌1,CASH,1,".len() + huge.len()
        );
        assert!(cut["detail"].as_str().unwrap().contains(&expected), "{cut}");
        assert_eq!(
            cleaned.report.file(FileKind::Holdings).collapsed,
            1,
            "the line after it is read (a copy of line 4)"
        );
    }

    #[test]
    fn a_file_that_grows_while_read_is_refused() {
        let (principal, holdings) = plain_day(30_000, 1);
        assert!(holdings.len() > 1 << 20);
        let delivery = Delivery::new(many_instruments(1), principal, holdings);
        let path = delivery.dir().join(FileKind::Holdings.file_name());
        let appended = Arc::new(Mutex::new(false));
        let options = CleanOptions {
            progress: Some(Arc::new(move |event| {
                if let Progress::Read {
                    file: FileKind::Holdings,
                    ..
                } = event
                {
                    let mut appended = appended.lock().unwrap();
                    if !*appended {
                        // The upstream still writing.
                        let mut file = fs::OpenOptions::new().append(true).open(&path).unwrap();
                        std::io::Write::write_all(&mut file, b"late,row\n").unwrap();
                        *appended = true;
                    }
                }
            })),
            ..CleanOptions::default()
        };
        let error = clean_day(&delivery.dir(), &options).unwrap_err();
        assert!(matches!(error, InputError::Changed { .. }), "{error}");
        assert!(error.to_string().contains("still writing"), "{error}");
    }

    /// Runs `clean_day` on a thread and fails (instead of hanging) if it takes long.
    fn clean_within(
        dir: PathBuf,
        seconds: u64,
    ) -> Result<(CleanedDay, CleaningReport), InputError> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(clean_day(&dir, &CleanOptions::default()));
        });
        rx.recv_timeout(std::time::Duration::from_secs(seconds))
            .expect("clean_day did not return in time")
    }

    #[test]
    fn fifos_devices_and_folders_are_refused_at_once() {
        let delivery = Delivery::new(INSTRUMENTS, PRINCIPAL, HOLDINGS);
        let holdings = delivery.dir().join(FileKind::Holdings.file_name());

        fs::remove_file(&holdings).unwrap();
        let path = std::ffi::CString::new(holdings.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo only creates a file.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        let error = clean_within(delivery.dir(), 10).unwrap_err();
        assert!(
            matches!(error, InputError::NotRegular { what, .. } if what.contains("FIFO")),
            "{error}"
        );
        assert!(error.to_string().contains("account_asset_info_set.csv"));

        fs::remove_file(&holdings).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &holdings).unwrap();
        let error = clean_within(delivery.dir(), 10).unwrap_err();
        assert!(
            matches!(error, InputError::NotRegular { what, .. } if what.contains("character device")),
            "{error}"
        );

        fs::remove_file(&holdings).unwrap();
        fs::create_dir(&holdings).unwrap();
        let error = clean_within(delivery.dir(), 10).unwrap_err();
        assert!(
            matches!(error, InputError::NotRegular { what, .. } if what.contains("directory")),
            "{error}"
        );
    }

    #[test]
    fn an_account_above_the_cap_is_rejected_whole() {
        let (principal, mut holdings) = plain_day(30, 3);
        // Account 100007 gets five more rows: eight in all, above a cap of six.
        for index in 3..8 {
            holdings.push_str(&format!(
                "고객7,A증권,100007,계좌1,{},1,1\n",
                instrument_isin(index)
            ));
        }
        for budget in [DEFAULT_SORT_BUDGET, 512] {
            let cleaned = Delivery::new(many_instruments(8), &principal, &holdings).clean_with(
                CleanOptions {
                    max_holdings_per_account: 6,
                    sort_budget_bytes: budget,
                    ..CleanOptions::default()
                },
            );
            let rules = &cleaned.report.totals.rejected_by_rule;
            assert_eq!(rules.get(&Rule::TooManyHoldings), Some(&9), "{rules:?}");
            assert_eq!(cleaned.report.totals.rejected, 9);
            assert!(
                cleaned
                    .rejects
                    .iter()
                    .all(|r| r["detail"].as_str().unwrap().contains("100007"))
            );
            assert_eq!(cleaned.day.account_count, 29);
            assert_eq!(
                cleaned.report.accounts,
                AccountCounts {
                    named: 30,
                    loaded: 29
                }
            );
        }
    }

    #[test]
    fn too_many_instruments_is_an_input_error() {
        let delivery = Delivery::new(many_instruments(11), PRINCIPAL, HOLDINGS);
        let error = clean_day(
            &delivery.dir(),
            &CleanOptions {
                max_instruments: 10,
                ..CleanOptions::default()
            },
        )
        .unwrap_err();
        assert!(
            matches!(error, InputError::TooManyInstruments { max: 10, .. }),
            "{error}"
        );
        assert!(error.to_string().contains("--max-instruments"));
    }

    #[test]
    fn each_loss_ratio_trips_on_its_own() {
        let limit: Ratio = "10%".parse().unwrap();
        let tripped = |cleaned: &Cleaned| cleaned.report.loss_guard(limit).tripped;

        // Rows: bad instrument rows nobody holds.
        let (principal, holdings) = plain_day(20, 3);
        let mut instruments = many_instruments(3);
        for index in 0..12 {
            instruments.push_str(&format!("나쁜{index},XX,그룹\n"));
        }
        let cleaned = Delivery::new(&instruments, &principal, &holdings).clean();
        assert_eq!(cleaned.report.totals.rejected, 12);
        assert_eq!(tripped(&cleaned), [LossUnit::Rows]);

        // Accounts: principal rows of accounts whose holdings never came (a file cut short
        // loses accounts long before it loses a tenth of the rows).
        let (mut principal, holdings) = plain_day(20, 10);
        for index in 0..5 {
            principal.push_str(&format!("{},5\n", 900_000 + index));
        }
        let cleaned = Delivery::new(many_instruments(10), &principal, &holdings).clean();
        assert_eq!(
            cleaned.report.accounts,
            AccountCounts {
                named: 25,
                loaded: 20
            }
        );
        assert_eq!(tripped(&cleaned), [LossUnit::Accounts]);

        // Holdings: a few bad holding rows in many accounts, diluted among instrument rows.
        let (principal, holdings) = plain_day(20, 10);
        let holdings: String = holdings
            .lines()
            .enumerate()
            .map(|(index, line)| {
                if index > 0 && index % 8 == 0 {
                    format!("{line}.5\n")
                } else {
                    format!("{line}\n")
                }
            })
            .collect();
        let cleaned = Delivery::new(many_instruments(120), &principal, &holdings).clean();
        assert_eq!(cleaned.day.account_count, 20);
        assert_eq!(tripped(&cleaned), [LossUnit::Holdings]);
        let guard = cleaned.report.loss_guard(limit);
        let holdings_loss = guard.losses[2];
        assert_eq!((holdings_loss.lost, holdings_loss.of), (25, 200));
    }

    #[test]
    fn invalid_utf8_and_field_count_rows() {
        let mut holdings = HOLDINGS.as_bytes().to_vec();
        // "류영길" in EUC-KR.
        holdings
            .extend_from_slice(b"\xb7\xf9\xbf\xb5\xb1\xe6,A\xc1\xf5\xb1\xc7,111111,x,CASH,1,1\n");
        holdings.extend_from_slice("김,A증권,111111,계좌1,KR7360750004,100\n".as_bytes());
        let cleaned = Delivery::new(INSTRUMENTS, PRINCIPAL, holdings).clean();
        assert_eq!(
            cleaned.rejected(),
            [
                reject(FileKind::Holdings, 5, Rule::InvalidUtf8),
                reject(FileKind::Holdings, 6, Rule::FieldCount)
            ]
        );
        let bad = cleaned.reject_at(FileKind::Holdings, 5);
        assert!(bad["raw"].as_str().unwrap().contains('\u{fffd}'));
        assert!(bad["raw"].as_str().unwrap().ends_with(",111111,x,CASH,1,1"));
        assert!(bad["detail"].as_str().unwrap().contains("고객이름"));
        assert_eq!(cleaned.day.holding_count, 3);
    }

    #[test]
    fn a_rejected_instrument_rejects_its_holdings() {
        let instruments = "종목명,ISIN,자산그룹\n미국S&P500,KR7360750004,\n현금,CASH,채권 / 현금\n";
        let holdings = "고객이름,증권사,계좌번호,계좌명,ISIN,현재가,보유수량\n\
            김,A증권,111111,계좌1,KR7360750004,100,3\n\
            이,B증권,222222,계좌1,CASH,1,2000\n";
        let cleaned = Delivery::new(instruments, PRINCIPAL, holdings).clean();
        assert_eq!(
            cleaned.rejected(),
            [
                reject(FileKind::Instruments, 2, Rule::EmptyField),
                reject(FileKind::Principal, 2, Rule::AccountWithoutHoldings),
                reject(FileKind::Holdings, 2, Rule::UnknownIsin),
            ]
        );
        assert_eq!(cleaned.day.account_count, 1);
        assert_eq!(
            cleaned.report.reject_ratio(),
            Ratio {
                numerator: 3,
                denominator: 6
            }
        );
        assert!(cleaned.report.exceeds("0.4".parse().unwrap()));
        assert!(!cleaned.report.exceeds("1/2".parse().unwrap()));
        assert!(!cleaned.report.exceeds("50%".parse().unwrap()));
    }

    #[test]
    fn duplicates_across_the_pipeline() {
        let instruments = format!("{INSTRUMENTS}현금,CASH,채권 / 현금\n현금 ,CASH, 채권 / 현금\n");
        let principal = format!("{PRINCIPAL}111111,1000\n222222,02000\n");
        let holdings = format!(
            "{HOLDINGS}김,A증권,111111,계좌1,KR7360750004,100,3\n이,B증권,222222,계좌1,KR7360750004,1,1\n\
             이,B증권,222222,계좌1,KR7360750004,1,2\n"
        );
        let cleaned = Delivery::new(instruments, principal, holdings).clean();
        assert_eq!(cleaned.report.file(FileKind::Instruments).collapsed, 2);
        assert_eq!(cleaned.report.file(FileKind::Principal).collapsed, 1);
        assert_eq!(cleaned.report.file(FileKind::Holdings).collapsed, 1);
        assert_eq!(
            cleaned.rejected(),
            [
                reject(FileKind::Principal, 3, Rule::DuplicateConflict),
                reject(FileKind::Principal, 5, Rule::DuplicateConflict),
                reject(FileKind::Holdings, 4, Rule::AccountWithoutPrincipal),
                reject(FileKind::Holdings, 6, Rule::DuplicateConflict),
                reject(FileKind::Holdings, 7, Rule::DuplicateConflict),
            ]
        );
        assert_eq!(cleaned.day.account_count, 1);
        assert_eq!(cleaned.account("111111").holdings.len(), 2);
    }

    #[test]
    fn fatal_input_errors() {
        let delivery = Delivery::new(INSTRUMENTS, PRINCIPAL, HOLDINGS);
        fs::remove_file(delivery.dir().join(FileKind::Principal.file_name())).unwrap();
        let error = delivery.error();
        assert!(matches!(error, InputError::MissingFile { .. }), "{error}");
        assert!(error.to_string().contains("account_basic_info_set.csv"));

        let delivery = Delivery::new(INSTRUMENTS, "계좌번호,원금\n111111,1\n", HOLDINGS);
        let error = delivery.error();
        assert!(matches!(error, InputError::MissingColumn { .. }), "{error}");
        assert!(
            error.to_string().contains("투자원금 / principal"),
            "{error}"
        );

        let delivery = Delivery::new(
            INSTRUMENTS,
            "계좌번호,투자원금,Account_Number\n111111,1,1\n",
            HOLDINGS,
        );
        let error = delivery.error();
        assert!(
            matches!(
                error,
                InputError::DuplicateColumn {
                    first: 1,
                    second: 3,
                    ..
                }
            ),
            "{error}"
        );

        let delivery = Delivery::new("", PRINCIPAL, HOLDINGS);
        assert!(matches!(delivery.error(), InputError::EmptyFile { .. }));
        let delivery = Delivery::new("\u{feff}", PRINCIPAL, HOLDINGS);
        assert!(matches!(delivery.error(), InputError::EmptyFile { .. }));

        let delivery = Delivery::new(
            b"\xc1\xbe,ISIN,asset_group\n".as_slice(),
            PRINCIPAL,
            HOLDINGS,
        );
        assert!(matches!(
            delivery.error(),
            InputError::HeaderNotUtf8 { position: 1, .. }
        ));
    }

    #[test]
    fn header_only_files_make_an_empty_day() {
        let delivery = Delivery::new(
            "name,isin,asset_group\n",
            "account_number,principal",
            "고객이름,증권사,계좌번호,계좌명,ISIN,현재가,보유수량\n",
        );
        let cleaned = delivery.clean();
        assert_eq!(
            (cleaned.day.account_count, cleaned.report.totals.read),
            (0, 0)
        );
        assert_eq!(
            cleaned.report.reject_ratio(),
            Ratio {
                numerator: 0,
                denominator: 1
            }
        );
        assert_eq!(cleaned.day.accounts().unwrap().count(), 0);
    }

    #[test]
    fn progress_is_reported() {
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&events);
        let options = CleanOptions {
            progress: Some(Arc::new(move |event| sink.lock().unwrap().push(event))),
            ..CleanOptions::default()
        };
        let (_, _) = clean_day(Path::new(SAMPLE), &options).unwrap();
        let events = events.lock().unwrap();
        let phases: Vec<Phase> = events
            .iter()
            .filter_map(|event| match event {
                Progress::Phase(phase) => Some(*phase),
                _ => None,
            })
            .collect();
        assert_eq!(
            phases,
            [
                Phase::Reading(FileKind::Instruments),
                Phase::Reading(FileKind::Principal),
                Phase::Reading(FileKind::Holdings),
                Phase::Sorting,
                Phase::Settling,
                Phase::Done
            ]
        );
        for kind in FileKind::ALL {
            let size = fs::metadata(Path::new(SAMPLE).join(kind.file_name()))
                .unwrap()
                .len();
            assert!(
                events.contains(&Progress::Read {
                    file: kind,
                    bytes: size,
                    total: size
                }),
                "{kind}"
            );
        }
        assert!(events.contains(&Progress::Settled {
            rows: 750,
            total: 750
        }));
    }

    /// A synthetic day of a few thousand rows, in scrambled order, with every kind of fault.
    fn synthetic_day() -> Delivery {
        let isins = [
            "CASH",
            "KR7360750004",
            "KR7133690008",
            "KR7203780002",
            "KR7200020006",
            "KR7251350005",
        ];
        let mut instruments = String::from("종목명,ISIN,자산그룹\n");
        for (index, isin) in isins.iter().enumerate() {
            instruments.push_str(&format!("종목{index},{isin},그룹{}\n", index % 3));
        }
        instruments.push_str("나쁜종목,KR720378000X,그룹\n");
        let mut principal = String::from("계좌번호,투자원금\n");
        let mut rows: Vec<(u64, String)> = Vec::new();
        let accounts = 400u64;
        for account in 0..accounts {
            let number = format!("{:08}", (account * 7_919) % 100_000_000 + 100_000);
            if account % 31 != 5 {
                principal.push_str(&format!("{number},{}\n", account * 1_000));
            }
            if account % 37 == 3 {
                principal.push_str(&format!("{number},{}\n", account * 1_000 + 1));
            }
            if account % 41 == 7 {
                continue; // principal without holdings
            }
            let holdings = 1 + account % isins.len() as u64;
            for index in 0..holdings {
                let isin = isins[index as usize];
                let brokerage = if account % 29 == 2 && index == 0 {
                    "다른증권"
                } else {
                    "디셈버증권"
                };
                let price = if account % 43 == 9 && index == 1 {
                    "12.5".to_owned()
                } else {
                    (1_000 + account * 3 + index).to_string()
                };
                let row = format!(
                    "고객{},{brokerage},{number},계좌{},{isin},{price},{}\n",
                    account % 97,
                    account % 3,
                    index * 2
                );
                // Scramble: rows of one account are far apart in the file.
                let position = (account * 131 + index * 7_907) % 10_007;
                if account % 17 == 0 && index == 0 {
                    rows.push((position + 5_003, row.clone()));
                }
                if account % 23 == 1 && index == 0 {
                    rows.push((position + 3, row.replace(",0\n", ",1\n")));
                }
                rows.push((position, row));
            }
        }
        rows.sort();
        let mut holdings = String::from("고객이름,증권사,계좌번호,계좌명,ISIN,현재가,보유수량\n");
        for (_, row) in rows {
            holdings.push_str(&row);
        }
        Delivery::new(instruments, principal, holdings)
    }

    #[test]
    fn spilling_gives_the_same_day_as_memory() {
        let delivery = synthetic_day();
        let in_memory = delivery.clean();
        let spilled = delivery.clean_with(CleanOptions {
            sort_budget_bytes: 4 << 10,
            ..CleanOptions::default()
        });
        assert_eq!(in_memory.report.sort.runs_spilled, 0);
        assert!(
            spilled.report.sort.runs_spilled > DEFAULT_FAN_IN as u64,
            "{:?}",
            spilled.report.sort
        );
        assert!(
            in_memory.report.totals.read > 1_500,
            "{:?}",
            in_memory.report.totals
        );
        assert!(in_memory.day.account_count > 300);

        assert_eq!(spilled.day.digest, in_memory.day.digest);
        assert_eq!(spilled.day.account_count, in_memory.day.account_count);
        assert_eq!(spilled.day.holding_count, in_memory.day.holding_count);
        assert_eq!(spilled.accounts(), in_memory.accounts());
        assert_eq!(spilled.rejects_text, in_memory.rejects_text);
        let without_sort = |report: &CleaningReport| CleaningReport {
            sort: SortReport::default(),
            ..report.clone()
        };
        assert_eq!(
            without_sort(&spilled.report),
            without_sort(&in_memory.report)
        );

        // Every fault the generator planted shows up.
        let by_rule = &in_memory.report.totals.rejected_by_rule;
        for rule in [
            Rule::BadIsin,
            Rule::BadNumber,
            Rule::AttributesMinority,
            Rule::DuplicateConflict,
            Rule::AccountWithoutPrincipal,
            Rule::AccountWithoutHoldings,
        ] {
            assert!(
                by_rule.get(&rule).copied().unwrap_or(0) > 0,
                "{rule}: {by_rule:?}"
            );
        }
        assert!(in_memory.report.file(FileKind::Holdings).collapsed > 0);
        let rules: BTreeMap<Rule, u64> = in_memory.report.totals.rejected_by_rule.clone();
        assert_eq!(rules.values().sum::<u64>(), in_memory.rejects.len() as u64);
    }
}
