//! A synthetic daily delivery in the exact format of `DATASET.md` (the files, columns and
//! rule names of [`invest_dataset`]), for `loader gen`, the loader's tests, the quickstart and
//! the benchmarks (50, 10,000 or 1,000,000 accounts; `loadgen` acts as the customers of such
//! a day).
//!
//! Everything is derived from the options: the same options give byte-identical files. Each
//! account is derived from `(seed, index)` alone, with its own random stream, so the writer
//! and the truth iterator ([`accounts`]) regenerate it independently and a day of a million
//! accounts is written in one streaming pass with bounded memory.
//!
//! # What a day looks like
//!
//! Like the sample delivery: customers with unique Korean names (a bijection from the customer
//! id into the name space, so two customers never share a name), some of them with two or three
//! accounts; brokerages 디셈버증권, 핀트투자증권, 베스트투자 and a few smaller ones; account
//! names `계좌N` in file order; 12- or 13-digit account numbers; the sample's real master
//! (including `KR7195980002`, whose check digit is wrong) plus generated `KR7…` ISINs with a
//! valid check digit past 14 instruments, and `CASH` last; about 14 holdings per account (at
//! least the cash row), prices 1,000–15,000, quantities 0–25, cash 10,000–25,000 with
//! quantity 1; principal from 4.5 % below to 1 % above total assets, and 0 for one account
//! in a thousand.
//!
//! Account numbers grow with the account index (a random offset inside an equal slice of the
//! number space per account) so that the truth streams in ascending order without a sort;
//! the files list accounts in a random order (a permutation of the index), as real files do.
//!
//! # Faults
//!
//! With `faults = N`, each kind below is injected N times. Each injected row fails exactly one
//! rule (or collapses), so [`GenSummary::expected_rejects`] is exact per (file, rule) and
//! [`accounts`] yields exactly what a correct cleaner loads. Truth accounts are those of the
//! clean day with the same seed, less the holdings a conflict removes (names could differ only
//! if the extra accounts push the day into a larger name space); extra accounts carry the
//! faults that reject a whole account.
//! Rows injected on a truth account are placed anywhere in the file, not next to its rows.
//!
//! | kind | file | injected rows | rejected as (file: rule × rows) |
//! | --- | --- | --- | --- |
//! | instrument field count | instruments | a fresh ISIN with 4 or 2 fields | instruments: `field_count` × 1 |
//! | instrument invalid UTF-8 | instruments | a fresh ISIN, name in EUC-KR bytes | instruments: `invalid_utf8` × 1 |
//! | instrument empty field | instruments | a fresh ISIN, blank name or asset group | instruments: `empty_field` × 1 |
//! | bad ISIN | instruments | lower case, 11 or 13 characters, hyphens, a letter as check digit, full-width digits, inner space, `cash` | instruments: `bad_isin` × 1 |
//! | instrument conflict | instruments | two rows of a fresh ISIN, differing in name or group | instruments: `duplicate_conflict` × 2 |
//! | principal field count | principal | a truth account's row with 3 or 1 fields | principal: `field_count` × 1 |
//! | principal invalid UTF-8 | principal | a truth account's row with EUC-KR "원" after the amount, or a cut sequence after the number | principal: `invalid_utf8` × 1 |
//! | principal bad account number | principal | hyphens, 5 or 21 digits, a letter O, full-width digits, inner space | principal: `bad_account_number` × 1 |
//! | principal bad number | principal | a truth account's amount as `1,911,386`, `-5`, `5.5`, `١٢`, `5원`, `+5`, `５`, `5e0` | principal: `bad_number` × 1 |
//! | principal overflow | principal | a truth account's amount with 19–20 digits beyond `i64` | principal: `number_overflow` × 1 |
//! | holding field count | holdings | a copy of a truth holding with 8 or 6 fields | holdings: `field_count` × 1 |
//! | holding invalid UTF-8 | holdings | a copy with the customer name cut inside a character, or the brokerage in EUC-KR | holdings: `invalid_utf8` × 1 |
//! | holding empty field | holdings | a copy with blank customer name, brokerage or account name | holdings: `empty_field` × 1 |
//! | holding bad account number | holdings | a copy with a mangled account number (as above) | holdings: `bad_account_number` × 1 |
//! | unknown ISIN | holdings | a copy naming a valid-looking ISIN outside the master: alternately one whose instrument row was rejected above, and one never delivered | holdings: `unknown_isin` × 1 |
//! | holding bad number | holdings | a copy with the price or quantity written as above | holdings: `bad_number` × 1 |
//! | holding overflow | holdings | a copy with the price or quantity beyond `i64` | holdings: `number_overflow` × 1 |
//! | valuation overflow | holdings | a copy with price and quantity that fit but whose product does not | holdings: `valuation_overflow` × 1 |
//! | minority attributes | holdings | a copy of a holding of a truth account with ≥ 2 holdings, customer name (one syllable off), brokerage or account name (`계좌 14`) changed | holdings: `attributes_minority` × 1 |
//! | holding conflict | holdings | a copy of holding h of a truth account with ≥ 2 holdings, quantity or price + 1; h leaves the truth | holdings: `duplicate_conflict` × 2 |
//! | principal conflict | both | an extra account with k valid holdings and two principal rows 1,000 apart | principal: `duplicate_conflict` × 2; holdings: `account_without_principal` × k |
//! | account without holdings | principal | a principal row for an account with no holdings rows | principal: `account_without_holdings` × 1 |
//! | no majority | both | an extra account with 1 against 1 (or 2 against 2) holdings rows differing in one attribute, and a valid principal | holdings: `attributes_no_majority` × 2 (or 4); principal: `account_without_holdings` × 1 |
//! | account without principal | holdings | an extra account with k valid holdings and no principal row | holdings: `account_without_principal` × k |
//! | total assets overflow | both | an extra account with 2 holdings of 5 × 10¹⁸ each and a valid principal | holdings: `total_assets_overflow` × 2; principal: `total_assets_overflow` × 1 |
//! | instrument repeat | instruments | a master row again | collapsed × 1 |
//! | principal repeat | principal | a truth account's principal row again | collapsed × 1 |
//! | holding repeat | holdings | a truth holding again (on an account no conflict or minority touches) | collapsed × 1 |
//!
//! Row rules see one problem per row; the set rules follow `DATASET.md`: the minority row
//! sits beside at least two majority rows, a conflict leaves its account another holding,
//! and no set-level fault shares an account with another. Repeats and padded copies are
//! identical after trimming. Blank lines (empty, white space, separators only) and white-space
//! padding come from [`CsvFormat`], on clean days too.

mod csv_out;
mod faults;
mod names;
mod perm;

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::Path;

use invest_dataset::FileKind;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use csv_out::CsvOut;
use faults::{FAULT_ACCOUNT_KINDS, Plan};
use names::{BROKERAGES, CASH, NameSpace, REAL_INSTRUMENTS, generated_instrument};
use perm::{Perm, mix};

/// Generated instruments use stock codes 400000..700000 (the real ones are below, the
/// fault ISINs above), so at most this many.
const MAX_GENERATED_INSTRUMENTS: usize = 300_000;
/// Fault ISINs use 300,000 codes, five per fault.
const MAX_FAULTS: u64 = 50_000;

/// Domains that keep the random streams of the parts of a day apart.
const ACCOUNT_DOMAIN: u64 = 0x4143_4354;
const FILE_ORDER_DOMAIN: u64 = 0x4F52_4452;
const BLOCK_DOMAIN: u64 = 0x424C_4F43;
const NAME_DOMAIN: u64 = 0x4E41_4D45;
const NUMBER_DOMAIN: u64 = 0x4E55_4D42;
const FORMAT_DOMAIN: u64 = 0x464F_524D;
/// Fault accounts draw from streams no truth index reaches.
const FAULT_STREAM: u64 = 1 << 63;

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenOptions {
    /// Accounts that must load (the truth).
    pub accounts: u64,
    /// Same seed, same bytes.
    pub seed: u64,
    /// Instruments in the master, `CASH` included (14: the sample's 13 ISINs and `CASH`).
    pub instruments: usize,
    /// Injected faults of each kind (0: a clean day).
    pub faults: u64,
    /// How the files are written.
    pub format: CsvFormat,
}

impl Default for GenOptions {
    fn default() -> Self {
        Self {
            accounts: 50,
            seed: 0,
            instruments: 14,
            faults: 0,
            format: CsvFormat::default(),
        }
    }
}

/// The language of a header row (the loader accepts both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderLanguage {
    /// `고객이름,증권사,…`
    Korean,
    /// `customer_name,brokerage,…`
    English,
}

/// When fields are quoted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quoting {
    /// Every field, header included (the sample's holdings and instruments).
    Always,
    /// Only fields with a comma, quote or line break (the sample's principal).
    WhenNeeded,
}

/// Line endings of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineEnding {
    /// `\n`
    Lf,
    /// `\r\n`
    CrLf,
}

/// The order of the columns (the loader finds columns by header name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnOrder {
    /// As listed in `DATASET.md`.
    Standard,
    /// Last column first.
    Reversed,
}

/// How one file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStyle {
    /// Header language.
    pub header: HeaderLanguage,
    /// Quoting.
    pub quoting: Quoting,
    /// Line endings.
    pub line_ending: LineEnding,
    /// A UTF-8 byte-order mark first.
    pub bom: bool,
    /// A line ending after the last line.
    pub final_newline: bool,
    /// Column order.
    pub columns: ColumnOrder,
}

impl FileStyle {
    /// Korean header, quoted only where needed, LF, no mark, final newline, standard order.
    pub fn plain() -> Self {
        Self {
            header: HeaderLanguage::Korean,
            quoting: Quoting::WhenNeeded,
            line_ending: LineEnding::Lf,
            bom: false,
            final_newline: true,
            columns: ColumnOrder::Standard,
        }
    }
}

/// How the three files are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsvFormat {
    /// `asset_group_info_set.csv`
    pub instruments: FileStyle,
    /// `account_asset_info_set.csv`
    pub holdings: FileStyle,
    /// `account_basic_info_set.csv`
    pub principal: FileStyle,
    /// Blank lines (empty, white space only, separators only) here and there and at the end.
    pub blank_lines: bool,
    /// White space around some fields (one row in eight), inside the quotes when quoted.
    pub padding: bool,
}

impl CsvFormat {
    /// The same simple style for all three files, no blank lines, no padding.
    pub fn plain() -> Self {
        let style = FileStyle::plain();
        Self {
            instruments: style,
            holdings: style,
            principal: style,
            blank_lines: false,
            padding: false,
        }
    }

    /// Exactly the sample's styles: master and holdings quoted with LF and a final newline;
    /// principal unquoted with a byte-order mark, CRLF and no final newline.
    pub fn sample() -> Self {
        let quoted = FileStyle {
            quoting: Quoting::Always,
            ..FileStyle::plain()
        };
        let principal = FileStyle {
            line_ending: LineEnding::CrLf,
            bom: true,
            final_newline: false,
            ..FileStyle::plain()
        };
        Self {
            instruments: quoted,
            holdings: quoted,
            principal,
            blank_lines: false,
            padding: false,
        }
    }

    /// The sample's mix and more of what the contract allows: an English header on the
    /// master, a byte-order mark on the holdings, the principal's columns reversed, blank
    /// lines and white-space padding.
    pub fn varied() -> Self {
        let sample = Self::sample();
        Self {
            instruments: FileStyle {
                header: HeaderLanguage::English,
                ..sample.instruments
            },
            holdings: FileStyle {
                bom: true,
                ..sample.holdings
            },
            principal: FileStyle {
                columns: ColumnOrder::Reversed,
                ..sample.principal
            },
            blank_lines: true,
            padding: true,
        }
    }
}

impl Default for CsvFormat {
    fn default() -> Self {
        Self::sample()
    }
}

/// An instrument of the master that survives the instrument rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenInstrument {
    /// `CASH` or an ISIN.
    pub isin: String,
    /// 종목명.
    pub name: String,
    /// 자산그룹.
    pub asset_group: String,
}

/// One holding that must load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenHolding {
    /// The instrument.
    pub isin: String,
    /// 보유수량.
    pub quantity: i64,
    /// 현재가, in won.
    pub current_price: i64,
}

/// One account that must load, exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenAccount {
    /// 계좌번호.
    pub account_number: String,
    /// 고객이름: one name per customer, never shared by two customers.
    pub customer_name: String,
    /// 증권사.
    pub brokerage: String,
    /// 계좌명.
    pub account_name: String,
    /// 투자원금, in won.
    pub principal: i64,
    /// By ascending ISIN; never empty.
    pub holdings: Vec<GenHolding>,
}

/// What [`write_day`] wrote and what a correct cleaner must make of it. For every file,
/// `rows = loaded + collapsed + rejected`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GenSummary {
    /// Instruments that load.
    pub instruments: u64,
    /// Accounts (and so principal rows) that load.
    pub accounts: u64,
    /// Holdings that load.
    pub holdings: u64,
    /// Data rows per file name (header and blank lines not counted).
    pub rows: BTreeMap<String, u64>,
    /// Rows rejected per (file name, rule).
    pub expected_rejects: BTreeMap<(String, String), u64>,
    /// Rows per file name that collapse into an identical row (the first is not counted).
    pub expected_collapsed: BTreeMap<String, u64>,
}

impl GenSummary {
    /// Rows of `file` that load.
    pub fn loaded(&self, file: &str) -> u64 {
        match FileKind::from_file_name(file) {
            Some(FileKind::Instruments) => self.instruments,
            Some(FileKind::Holdings) => self.holdings,
            Some(FileKind::Principal) => self.accounts,
            None => 0,
        }
    }

    /// Rows of `file` that are rejected, whatever the rule.
    pub fn rejected(&self, file: &str) -> u64 {
        self.expected_rejects
            .iter()
            .filter(|((f, _), _)| f == file)
            .map(|(_, rows)| rows)
            .sum()
    }

    /// Rows of `file` that collapse.
    pub fn collapsed(&self, file: &str) -> u64 {
        self.expected_collapsed.get(file).copied().unwrap_or(0)
    }
}

impl fmt::Display for GenSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for file in FileKind::ALL.map(FileKind::file_name) {
            let rows = self.rows.get(file).copied().unwrap_or(0);
            writeln!(
                f,
                "{file}: {rows} rows = {} loaded + {} collapsed + {} rejected",
                self.loaded(file),
                self.collapsed(file),
                self.rejected(file)
            )?;
            for ((_, rule), count) in self.expected_rejects.iter().filter(|((f, _), _)| f == file) {
                writeln!(f, "  {rule}: {count}")?;
            }
        }
        Ok(())
    }
}

/// Why a day cannot be generated.
#[derive(Debug, thiserror::Error)]
pub enum GenError {
    /// The options ask for something impossible.
    #[error("cannot generate this day: {0}")]
    Options(String),
    /// Writing failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// A generated ISIN is malformed (a bug).
    #[error(transparent)]
    Isin(#[from] invest_proto::ids::FormatError),
}

/// The master that survives its rules, by ascending ISIN.
pub fn instruments(opts: &GenOptions) -> Result<Vec<GenInstrument>, GenError> {
    let mut master: Vec<GenInstrument> = master(opts.instruments)?
        .into_iter()
        .map(|row| GenInstrument {
            isin: row.isin,
            name: row.name,
            asset_group: row.group,
        })
        .collect();
    master.sort_by(|a, b| a.isin.cmp(&b.isin));
    Ok(master)
}

/// The accounts that must load, by ascending account number, generated one at a time.
pub fn accounts(opts: &GenOptions) -> Result<Accounts, GenError> {
    Ok(Accounts {
        day: Day::new(opts)?,
        next: 0,
        draft: AccountDraft::default(),
    })
}

/// The truth of a day, streamed (see [`accounts`]).
#[derive(Debug)]
pub struct Accounts {
    day: Day,
    next: u64,
    draft: AccountDraft,
}

impl Iterator for Accounts {
    type Item = GenAccount;

    fn next(&mut self) -> Option<GenAccount> {
        if self.next >= self.day.accounts {
            return None;
        }
        let index = self.next;
        self.next += 1;
        self.day.draft(Who::Truth(index), &mut self.draft);
        let dropped = self.day.plan.dropped.get(&index).copied();
        let mut holdings: Vec<(usize, GenHolding)> = self
            .draft
            .holdings
            .iter()
            .enumerate()
            .filter(|&(at, _)| Some(at) != dropped)
            .map(|(_, held)| {
                let holding = GenHolding {
                    isin: self.day.master[held.position].isin.clone(),
                    quantity: held.quantity,
                    current_price: held.price,
                };
                (self.day.isin_rank[held.position], holding)
            })
            .collect();
        holdings.sort_by_key(|&(rank, _)| rank);
        Some(GenAccount {
            account_number: self.draft.number.clone(),
            customer_name: self.draft.customer.clone(),
            brokerage: BROKERAGES[self.draft.brokerage].0.to_owned(),
            account_name: self.draft.account_name.clone(),
            principal: self.draft.principal,
            holdings: holdings.into_iter().map(|(_, holding)| holding).collect(),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = usize::try_from(self.day.accounts - self.next).unwrap_or(usize::MAX);
        (left, Some(left))
    }
}

/// Writes the three files of a day into `dir` (created if missing), replacing any there.
pub fn write_day(dir: &Path, opts: &GenOptions) -> Result<GenSummary, GenError> {
    let day = Day::new(opts)?;
    fs::create_dir_all(dir)?;
    let instrument_rows = write_instruments(&day, dir, &opts.format)?;
    let (holding_rows, principal_rows, holdings) = write_accounts(&day, dir, &opts.format)?;
    let mut collapsed: BTreeMap<String, u64> = FileKind::ALL
        .iter()
        .map(|kind| (kind.file_name().to_owned(), 0))
        .collect();
    for (file, rows) in &day.plan.collapsed {
        *collapsed.entry(file.clone()).or_default() += rows;
    }
    Ok(GenSummary {
        instruments: day.master.len() as u64,
        accounts: day.accounts,
        holdings,
        rows: [
            (
                FileKind::Instruments.file_name().to_owned(),
                instrument_rows,
            ),
            (FileKind::Holdings.file_name().to_owned(), holding_rows),
            (FileKind::Principal.file_name().to_owned(), principal_rows),
        ]
        .into(),
        expected_rejects: day.plan.rejects.clone(),
        expected_collapsed: collapsed,
    })
}

fn create(dir: &Path, kind: FileKind) -> io::Result<BufWriter<File>> {
    Ok(BufWriter::with_capacity(
        1 << 20,
        File::create(dir.join(kind.file_name()))?,
    ))
}

/// The header of a file in the standard column order.
fn header(kind: FileKind, language: HeaderLanguage) -> Vec<&'static str> {
    kind.columns()
        .iter()
        .map(|column| match language {
            HeaderLanguage::Korean => column.korean(),
            HeaderLanguage::English => column.english(),
        })
        .collect()
}

fn write_instruments(day: &Day, dir: &Path, format: &CsvFormat) -> Result<u64, GenError> {
    let style = format.instruments;
    let header = header(FileKind::Instruments, style.header);
    let seed = mix(day.seed, FORMAT_DOMAIN);
    let file = create(dir, FileKind::Instruments)?;
    let mut out = CsvOut::new(
        file,
        style,
        &header,
        format.blank_lines,
        format.padding,
        seed,
    )?;
    let mut extras = day.plan.instrument_extras.iter().peekable();
    for pos in 0..=day.master.len() {
        while let Some(extra) = extras.next_if(|extra| extra.pos == pos as u64) {
            faults::write_instrument_extra(day, extra, &mut out)?;
        }
        if let Some(row) = day.master.get(pos) {
            out.row(&[
                row.name.as_bytes(),
                row.isin.as_bytes(),
                row.group.as_bytes(),
            ])?;
        }
    }
    let rows = out.rows();
    out.finish()?;
    Ok(rows)
}

/// Writes the holdings and principal files in one pass; returns their row counts and the
/// number of holdings that load.
fn write_accounts(day: &Day, dir: &Path, format: &CsvFormat) -> Result<(u64, u64, u64), GenError> {
    let holdings_style = format.holdings;
    let principal_style = format.principal;
    let mut holdings = CsvOut::new(
        create(dir, FileKind::Holdings)?,
        holdings_style,
        &header(FileKind::Holdings, holdings_style.header),
        format.blank_lines,
        format.padding,
        mix(day.seed, FORMAT_DOMAIN + 1),
    )?;
    let mut principal = CsvOut::new(
        create(dir, FileKind::Principal)?,
        principal_style,
        &header(FileKind::Principal, principal_style.header),
        format.blank_lines,
        format.padding,
        mix(day.seed, FORMAT_DOMAIN + 2),
    )?;
    let mut draft = AccountDraft::default();
    let mut extra_draft = AccountDraft::default();
    let mut extras = day.plan.account_extras.iter().peekable();
    let mut loaded_holdings = 0;
    for pos in 0..=day.accounts {
        while let Some(extra) = extras.next_if(|extra| extra.pos == pos) {
            faults::write_account_extra(
                day,
                extra,
                &mut extra_draft,
                &mut holdings,
                &mut principal,
            )?;
        }
        if pos == day.accounts {
            break;
        }
        let index = day.file_order.apply(pos);
        day.draft(Who::Truth(index), &mut draft);
        write_holdings(day, &draft, &mut holdings)?;
        let mut amount = [0; 20];
        principal.row(&[
            draft.number.as_bytes(),
            digits(draft.principal, &mut amount),
        ])?;
        let dropped = u64::from(day.plan.dropped.contains_key(&index));
        loaded_holdings += draft.holdings.len() as u64 - dropped;
    }
    let rows = (holdings.rows(), principal.rows());
    holdings.finish()?;
    principal.finish()?;
    Ok((rows.0, rows.1, loaded_holdings))
}

/// The hot path: one row per holding, no allocation.
fn write_holdings<W: Write>(
    day: &Day,
    draft: &AccountDraft,
    out: &mut CsvOut<W>,
) -> io::Result<()> {
    let brokerage = BROKERAGES[draft.brokerage].0.as_bytes();
    let mut price = [0; 20];
    let mut quantity = [0; 20];
    for held in &draft.holdings {
        out.row(&[
            draft.customer.as_bytes(),
            brokerage,
            draft.number.as_bytes(),
            draft.account_name.as_bytes(),
            day.master[held.position].isin.as_bytes(),
            digits(held.price, &mut price),
            digits(held.quantity, &mut quantity),
        ])?;
    }
    Ok(())
}

/// The decimal digits of an amount, without allocating (amounts written are never negative).
fn digits(value: i64, buf: &mut [u8; 20]) -> &[u8] {
    digits_u64(value.unsigned_abs(), buf)
}

/// Appends the decimal digits of `value` to `out`.
fn push_decimal(out: &mut String, value: u64) {
    let mut buf = [0; 20];
    for &digit in digits_u64(value, &mut buf) {
        out.push(char::from(digit));
    }
}

fn digits_u64(value: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut rest = value;
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    &buf[at..]
}

/// One row of the master, in file order.
#[derive(Debug, Clone)]
struct MasterRow {
    name: String,
    isin: String,
    group: String,
}

/// The sample's real instruments first, then generated ones, then `CASH` (as in the sample).
fn master(instruments: usize) -> Result<Vec<MasterRow>, GenError> {
    if instruments == 0 {
        return Err(GenError::Options(
            "the master needs at least one instrument (CASH)".into(),
        ));
    }
    let generated = instruments.saturating_sub(REAL_INSTRUMENTS.len() + 1);
    if generated > MAX_GENERATED_INSTRUMENTS {
        return Err(GenError::Options(format!(
            "at most {} instruments",
            MAX_GENERATED_INSTRUMENTS + REAL_INSTRUMENTS.len() + 1
        )));
    }
    let row = |(name, isin, group): (&str, &str, &str)| MasterRow {
        name: name.to_owned(),
        isin: isin.to_owned(),
        group: group.to_owned(),
    };
    let real = (instruments - 1).min(REAL_INSTRUMENTS.len());
    let mut master: Vec<MasterRow> = REAL_INSTRUMENTS[..real].iter().copied().map(row).collect();
    for index in 0..generated as u64 {
        // An odd step coprime with 300,000 visits every code once, in a scattered order.
        let code = 400_000 + (index * 7_919) % MAX_GENERATED_INSTRUMENTS as u64;
        let isin = invest_proto::ids::isin_with_check_digit(&format!("KR7{code:06}00"))?;
        let (name, group) = generated_instrument(index);
        master.push(MasterRow {
            name,
            isin: isin.into_string(),
            group: group.to_owned(),
        });
    }
    master.push(row(CASH));
    Ok(master)
}

/// Account numbers of 12 or 13 digits, ordered like the account index.
///
/// A key in `0..KEY_SPACE` stands for a number: `key / 11` picks the 12-digit prefix and
/// `key % 11` either ends there (0) or appends one more digit. String order then equals key
/// order. Truth account `i` takes a random key in the lower half of the `i`-th slice; fault
/// accounts take keys in the upper halves, so the two never meet.
#[derive(Debug, Clone)]
struct NumberSpace {
    key: u64,
    accounts: u64,
    stride: u64,
    half: u64,
    /// Fault accounts per slice, and the room each gets in the upper half.
    per_slice: u64,
    room: u64,
    spread: Perm,
}

/// 900 billion 12-digit prefixes, each alone or followed by one of ten digits.
const KEY_SPACE: u64 = 900_000_000_000 * 11;

impl NumberSpace {
    fn new(accounts: u64, fault_accounts: u64, key: u64) -> Result<Self, GenError> {
        let stride = KEY_SPACE / accounts.max(1);
        let half = stride / 2;
        let per_slice = fault_accounts.div_ceil(accounts.max(1)).max(1);
        let room = (stride - half) / per_slice;
        if half == 0 || room == 0 {
            return Err(GenError::Options(format!(
                "{accounts} accounts do not fit in 13-digit account numbers"
            )));
        }
        Ok(Self {
            key,
            accounts,
            stride,
            half,
            per_slice,
            room,
            spread: Perm::new(accounts, mix(key, 1)),
        })
    }

    fn truth(&self, index: u64) -> u64 {
        index * self.stride + mix(self.key, index) % self.half
    }

    fn fault(&self, number: u64) -> u64 {
        let slice = self.spread.apply(number % self.accounts);
        let within = number / self.accounts;
        debug_assert!(within < self.per_slice);
        slice * self.stride
            + self.half
            + within * self.room
            + mix(self.key ^ FAULT_STREAM, number) % self.room
    }

    fn write(key: u64, out: &mut String) {
        out.clear();
        push_decimal(out, 100_000_000_000 + key / 11);
        if !key.is_multiple_of(11) {
            push_decimal(out, key % 11 - 1);
        }
    }
}

/// Whose account to draft.
#[derive(Debug, Clone, Copy)]
enum Who {
    /// Truth account by index (ascending account number).
    Truth(u64),
    /// Extra account of a fault.
    Fault(u64),
}

/// One holding of a draft: master position, price, quantity.
#[derive(Debug, Clone, Copy)]
struct HoldingDraft {
    position: usize,
    price: i64,
    quantity: i64,
}

/// An account as written, with buffers reused from one account to the next.
#[derive(Debug, Default)]
struct AccountDraft {
    number: String,
    customer: String,
    /// Index into `BROKERAGES`.
    brokerage: usize,
    account_name: String,
    principal: i64,
    /// In master order, `CASH` last.
    holdings: Vec<HoldingDraft>,
    picks: Vec<usize>,
}

/// Everything derived once from the options.
#[derive(Debug)]
struct Day {
    seed: u64,
    accounts: u64,
    master: Vec<MasterRow>,
    /// Master position → rank by ascending ISIN.
    isin_rank: Vec<usize>,
    /// File position → truth index.
    file_order: Perm,
    /// Truth index → slot in the customer blocks.
    blocks: Perm,
    truth_customers: u64,
    names: NameSpace,
    numbers: NumberSpace,
    account_seed: [u8; 32],
    plan: Plan,
}

/// Accounts are grouped in blocks of 20 owned by 18 customers: one customer with three
/// accounts, or two with two, and the rest with one.
const BLOCK_ACCOUNTS: u64 = 20;
const BLOCK_CUSTOMERS: u64 = 18;

impl Day {
    fn new(opts: &GenOptions) -> Result<Self, GenError> {
        if opts.faults > 0 {
            if opts.accounts == 0 || opts.instruments < 2 {
                return Err(GenError::Options(
                    "faults need at least one account and two instruments (a total-assets overflow needs two holdings)".into(),
                ));
            }
            if opts.faults > MAX_FAULTS {
                return Err(GenError::Options(format!(
                    "at most {MAX_FAULTS} faults of each kind"
                )));
            }
        }
        let master = master(opts.instruments)?;
        let mut by_isin: Vec<usize> = (0..master.len()).collect();
        by_isin.sort_by(|&a, &b| master[a].isin.cmp(&master[b].isin));
        let mut isin_rank = vec![0; master.len()];
        for (rank, &position) in by_isin.iter().enumerate() {
            isin_rank[position] = rank;
        }
        let fault_accounts = opts.faults * FAULT_ACCOUNT_KINDS.len() as u64;
        let truth_customers = opts.accounts.div_ceil(BLOCK_ACCOUNTS) * BLOCK_CUSTOMERS;
        let names = NameSpace::for_customers(
            truth_customers + fault_accounts,
            mix(opts.seed, NAME_DOMAIN),
        )
        .ok_or_else(|| GenError::Options("too many customers for distinct names".into()))?;
        let numbers =
            NumberSpace::new(opts.accounts, fault_accounts, mix(opts.seed, NUMBER_DOMAIN))?;
        let mut account_seed = [0; 32];
        for (at, chunk) in (0u64..).zip(account_seed.chunks_exact_mut(8)) {
            chunk.copy_from_slice(&mix(opts.seed, ACCOUNT_DOMAIN + at).to_le_bytes());
        }
        let mut day = Self {
            seed: opts.seed,
            accounts: opts.accounts,
            master,
            isin_rank,
            file_order: Perm::new(opts.accounts, mix(opts.seed, FILE_ORDER_DOMAIN)),
            blocks: Perm::new(opts.accounts, mix(opts.seed, BLOCK_DOMAIN)),
            truth_customers,
            names,
            numbers,
            account_seed,
            plan: Plan::default(),
        };
        day.plan = Plan::build(&day, opts.faults)?;
        Ok(day)
    }

    /// The customer who owns truth account `index`.
    fn truth_customer(&self, index: u64) -> u64 {
        let slot = self.blocks.apply(index);
        let block = slot / BLOCK_ACCOUNTS;
        let at = slot % BLOCK_ACCOUNTS;
        let part = if mix(self.seed ^ BLOCK_DOMAIN, block).is_multiple_of(2) {
            // Slots 0-2 belong to one customer.
            at.saturating_sub(2)
        } else {
            // Slots 0-1 and 2-3 belong to two customers.
            match at {
                0 | 1 => 0,
                2 | 3 => 1,
                _ => at - 2,
            }
        };
        block * BLOCK_CUSTOMERS + part
    }

    /// Fills `draft` with the account `who`, from its own random stream.
    fn draft(&self, who: Who, draft: &mut AccountDraft) {
        let (stream, customer, key, ordinal) = match who {
            Who::Truth(index) => (
                index,
                self.truth_customer(index),
                self.numbers.truth(index),
                self.file_order.invert(index) + 1,
            ),
            Who::Fault(number) => (
                FAULT_STREAM | number,
                self.truth_customers + number,
                self.numbers.fault(number),
                self.accounts + number + 1,
            ),
        };
        NumberSpace::write(key, &mut draft.number);
        draft.customer.clear();
        self.names.write_name(customer, &mut draft.customer);
        draft.account_name.clear();
        draft.account_name.push_str("계좌");
        push_decimal(&mut draft.account_name, ordinal);

        let mut rng = ChaCha8Rng::from_seed(self.account_seed);
        rng.set_stream(stream);
        let total_weight: u32 = BROKERAGES.iter().map(|b| b.1).sum();
        let mut roll = rng.random_range(0..total_weight);
        draft.brokerage = BROKERAGES.len() - 1;
        for (at, &(_, weight)) in BROKERAGES.iter().enumerate() {
            if roll < weight {
                draft.brokerage = at;
                break;
            }
            roll -= weight;
        }

        // Most accounts hold the whole (small) master like the sample; larger masters give
        // 8 to 20 holdings. The cash row is always there.
        let instruments = self.master.len() as u64;
        let count = if instruments <= 14 {
            if rng.random_ratio(9, 10) {
                instruments
            } else {
                rng.random_range(1..=instruments)
            }
        } else {
            rng.random_range(8..=20u64).min(instruments)
        };
        let others = instruments - 1;
        let picks = count - 1;
        draft.picks.clear();
        if picks == others {
            draft.picks.extend(0..others as usize);
        } else {
            // Floyd's sampling: `picks` distinct positions in O(picks²), whatever the master size.
            for j in others - picks..others {
                let candidate = rng.random_range(0..=j) as usize;
                let taken = draft.picks.contains(&candidate);
                draft.picks.push(if taken { j as usize } else { candidate });
            }
            draft.picks.sort_unstable();
        }
        draft.holdings.clear();
        for &position in &draft.picks {
            let price = rng.random_range(1_000..=15_000);
            let quantity = rng.random_range(0..=25);
            draft.holdings.push(HoldingDraft {
                position,
                price,
                quantity,
            });
        }
        let cash = rng.random_range(10_000..=25_000);
        draft.holdings.push(HoldingDraft {
            position: self.master.len() - 1,
            price: cash,
            quantity: 1,
        });

        // At most 20 holdings of 15,000 x 25 plus cash: far from overflowing.
        let total: i64 = draft.holdings.iter().map(|h| h.price * h.quantity).sum();
        let basis_points = rng.random_range(-100..=450i64);
        let zero = rng.random_ratio(1, 1_000);
        draft.principal = if zero {
            0
        } else {
            total * (10_000 - basis_points) / 10_000
        };
    }
}

#[cfg(test)]
mod tests;
