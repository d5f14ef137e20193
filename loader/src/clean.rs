//! The cleaning rules of `DATASET.md`, as pure functions over rows already split into fields.
//!
//! Row rules look at one row at a time ([`split_row`], [`check_instrument_row`],
//! [`check_principal_row`], [`check_holding_row`]); set rules look at every row sharing a key
//! ([`settle_instruments`], [`settle_account`]). Nothing here does I/O: the pipeline feeds rows
//! in and writes out what comes back, so each rule is testable on a few literal rows.
//!
//! A row gets exactly one [`Rule`]: the first check it fails. Row checks run in the column
//! order of `DATASET.md` (not the file's, so a row's verdict does not depend on how the
//! columns happen to be arranged); set rules run in `DATASET.md` order.
//!
//! One rule is ours, not `DATASET.md`'s: [`Rule::TotalAssetsOverflow`]. An account whose
//! valuations add up to more than `i64::MAX` won cannot be expressed on the wire, so the
//! whole account (its holdings and its principal row) is rejected.

use std::collections::BTreeMap;

use invest_dataset::{Column, FileKind, Rule};
use invest_proto::ids::{
    AccountNumber, Isin, MAX_TEXT_BYTES, TextError, check_text, isin_with_check_digit,
};
use invest_proto::portfolio::v1::{Instrument, SnapshotAccount, SnapshotHolding};

/// A row rule's verdict: the rule and a sentence naming the column and the offending value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The rule the row broke.
    pub rule: Rule,
    /// What is wrong, for the operator.
    pub detail: String,
}

impl Fault {
    /// A verdict.
    pub fn new(rule: Rule, detail: String) -> Self {
        Self { rule, detail }
    }
}

/// Digest of a row's trimmed text, all fields in file order: set rule 2 calls two rows
/// identical when their fingerprints are equal, without keeping their text around.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 16]);

impl Fingerprint {
    /// Fingerprint of trimmed fields; each field is length-prefixed so that ("ab", "c") and
    /// ("a", "bc") differ.
    pub fn of<'a>(fields: impl IntoIterator<Item = &'a str>) -> Self {
        let mut hasher = blake3::Hasher::new();
        for field in fields {
            hasher.update(&(field.len() as u64).to_le_bytes());
            hasher.update(field.as_bytes());
        }
        let mut out = [0; 16];
        let hash = hasher.finalize();
        out.copy_from_slice(&hash.as_bytes()[..16]);
        Self(out)
    }
}

/// Where a row came from and what it said. The rules only read `line` and `content`; the
/// byte span is carried through so that the raw text of a rejected row can be read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowRef {
    /// Physical line number of the row's first line (header = 1).
    pub line: u64,
    /// Byte offset of the row in its file.
    pub offset: u64,
    /// Length in bytes of the row, without its line terminator.
    pub len: u64,
    /// Fingerprint of the row's trimmed fields.
    pub content: Fingerprint,
}

/// A row rejected by a set rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// The file the row is in.
    pub file: FileKind,
    /// The row.
    pub row: RowRef,
    /// The rule it broke.
    pub rule: Rule,
    /// What is wrong, for the operator.
    pub detail: String,
}

/// Trimmed fields of an instrument row.
#[derive(Debug, Clone, Copy)]
pub struct InstrumentFields<'a> {
    /// 종목명 `name`.
    pub name: &'a str,
    /// ISIN `isin`.
    pub isin: &'a str,
    /// 자산그룹 `asset_group`.
    pub asset_group: &'a str,
}

/// Trimmed fields of a principal row.
#[derive(Debug, Clone, Copy)]
pub struct PrincipalFields<'a> {
    /// 계좌번호 `account_number`.
    pub account_number: &'a str,
    /// 투자원금 `principal`.
    pub principal: &'a str,
}

/// Trimmed fields of a holding row.
#[derive(Debug, Clone, Copy)]
pub struct HoldingFields<'a> {
    /// 고객이름 `customer_name`.
    pub customer_name: &'a str,
    /// 증권사 `brokerage`.
    pub brokerage: &'a str,
    /// 계좌번호 `account_number`.
    pub account_number: &'a str,
    /// 계좌명 `account_name`.
    pub account_name: &'a str,
    /// ISIN `isin`.
    pub isin: &'a str,
    /// 현재가 `current_price`.
    pub current_price: &'a str,
    /// 보유수량 `quantity`.
    pub quantity: &'a str,
}

/// An instrument row that passed the row rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstrumentRow {
    /// Where it came from.
    pub row: RowRef,
    /// The ISIN (or `CASH`).
    pub isin: Isin,
    /// 종목명, not empty.
    pub name: String,
    /// 자산그룹, not empty.
    pub asset_group: String,
}

/// A principal row that passed the row rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalRow {
    /// Where it came from.
    pub row: RowRef,
    /// The account.
    pub account_number: AccountNumber,
    /// 투자원금 in won.
    pub principal: i64,
}

/// A holding row that passed the row rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldingRow {
    /// Where it came from.
    pub row: RowRef,
    /// The account.
    pub account_number: AccountNumber,
    /// 고객이름, not empty.
    pub customer_name: String,
    /// 증권사, not empty.
    pub brokerage: String,
    /// 계좌명, not empty.
    pub account_name: String,
    /// An ISIN among the surviving instruments.
    pub isin: Isin,
    /// 현재가 in won.
    pub current_price: i64,
    /// 보유수량.
    pub quantity: i64,
    /// `current_price * quantity`, known to fit.
    pub valuation: i64,
}

/// Longest value quoted in full in a detail; a runaway field would drown the sentence.
const SHOWN_CHARS: usize = 60;

/// A value quoted for a detail, cut at `SHOWN_CHARS` characters.
fn shown(text: &str) -> String {
    match text.char_indices().nth(SHOWN_CHARS) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &text[..cut], text.len()),
    }
}

/// "3", "3 and 9", "3, 9 and 12", cut after a few lines.
fn lines_list(lines: &[u64]) -> String {
    const SHOWN_LINES: usize = 8;
    let shown: Vec<String> = lines.iter().take(SHOWN_LINES).map(u64::to_string).collect();
    let more = lines.len().saturating_sub(SHOWN_LINES);
    match (shown.split_last(), more) {
        (None, _) => String::new(),
        (Some((last, [])), 0) => last.clone(),
        (Some((last, rest)), 0) => format!("{} and {last}", rest.join(", ")),
        (Some(_), more) => format!("{} and {more} more", shown.join(", ")),
    }
}

/// Structural row rules (`field_count`, then `invalid_utf8`), then trimming, then the text
/// rules of every field (`field_too_long`, `control_character`: [`check_text`] with
/// `max_field_bytes`, the check portfolio-svc and deposit-svc apply to what they receive):
/// the trimmed fields of a row in file order. `header` gives the column names for the detail.
pub fn split_row<'a, I>(
    fields: I,
    header: &[String],
    max_field_bytes: usize,
) -> Result<Vec<&'a str>, Fault>
where
    I: ExactSizeIterator<Item = &'a [u8]>,
{
    if fields.len() != header.len() {
        return Err(Fault::new(
            Rule::FieldCount,
            format!(
                "the row has {} fields but the header has {}; look for an unquoted comma inside a \
                 field, or a missing or extra separator",
                fields.len(),
                header.len()
            ),
        ));
    }
    let trimmed = fields
        .zip(header)
        .enumerate()
        .map(|(index, (bytes, name))| match std::str::from_utf8(bytes) {
            Ok(text) => Ok(text.trim()),
            Err(error) => Err(Fault::new(
                Rule::InvalidUtf8,
                format!(
                    "field {} ({name:?}) is not valid UTF-8 (bad byte at offset {} of the field); \
                     the file must be saved as UTF-8, not CP949/EUC-KR",
                    index + 1,
                    error.valid_up_to()
                ),
            )),
        })
        .collect::<Result<Vec<&str>, Fault>>()?;
    for (index, (text, name)) in trimmed.iter().zip(header).enumerate() {
        check_field_text(index, name, text, max_field_bytes)?;
    }
    Ok(trimmed)
}

/// Whether `text` certainly passes [`check_text`]'s character rule: it holds no byte that
/// can start a forbidden character (C0 and DEL; and the lead bytes of C1, U+061C, U+200E-F,
/// U+2028-E, U+2066-9 and U+FEFF). Hangul and Latin text passes without decoding.
fn plainly_printable(text: &str) -> bool {
    !text
        .bytes()
        .any(|b| b < 0x20 || matches!(b, 0x7F | 0xC2 | 0xD8 | 0xE2 | 0xEF))
}

/// The text rules of one trimmed field (0-based `index`, header `name`).
fn check_field_text(
    index: usize,
    name: &str,
    text: &str,
    max_field_bytes: usize,
) -> Result<(), Fault> {
    if text.len() <= max_field_bytes.min(MAX_TEXT_BYTES) && plainly_printable(text) {
        return Ok(());
    }
    match check_text(text, max_field_bytes) {
        Ok(()) => Ok(()),
        Err(TextError::TooLong { len, max }) => Err(Fault::new(
            Rule::FieldTooLong,
            format!(
                "field {} ({name:?}) is {len} bytes long after trimming; at most {max} bytes are \
                 accepted (--max-field-bytes): no name is that long, so the field probably \
                 swallowed its neighbours",
                index + 1
            ),
        )),
        Err(error @ TextError::ForbiddenCharacter { .. }) => Err(Fault::new(
            Rule::ControlCharacter,
            format!(
                "field {} ({name:?}) {error}; control characters (NUL, tab, line breaks, DEL), \
                 line separators, bidirectional controls and byte-order marks are refused in \
                 every field, here and by portfolio-svc and deposit-svc; got {}",
                index + 1,
                shown(text)
            ),
        )),
    }
}

fn require_text(column: Column, text: &str, why: &str) -> Result<(), Fault> {
    if text.is_empty() {
        Err(Fault::new(
            Rule::EmptyField,
            format!("{column} is empty; {why}"),
        ))
    } else {
        Ok(())
    }
}

fn parse_account_number(text: &str) -> Result<AccountNumber, Fault> {
    AccountNumber::parse(text).map_err(|_| {
        Fault::new(
            Rule::BadAccountNumber,
            format!(
                "{} must be 6 to 20 digits (nothing else, no dashes); got {}",
                Column::AccountNumber,
                shown(text)
            ),
        )
    })
}

/// `^[0-9]+$` that fits in an `i64`; leading zeros are fine ("007" is 7).
fn parse_amount(column: Column, text: &str) -> Result<i64, Fault> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Fault::new(
            Rule::BadNumber,
            format!(
                "{column} must be a whole number written with digits only (no sign, thousands \
                 separator, decimal point or unit); got {}",
                shown(text)
            ),
        ));
    }
    text.bytes()
        .try_fold(0i64, |acc, b| {
            acc.checked_mul(10)?.checked_add(i64::from(b - b'0'))
        })
        .ok_or_else(|| {
            Fault::new(
                Rule::NumberOverflow,
                format!(
                    "{column} is {} which is larger than the largest supported value {}",
                    shown(text),
                    i64::MAX
                ),
            )
        })
}

/// Row rules of an instrument: `name`, `isin`, `asset_group`, in that order.
pub fn check_instrument_row(
    fields: &InstrumentFields<'_>,
    row: RowRef,
) -> Result<InstrumentRow, Fault> {
    require_text(Column::Name, fields.name, "every instrument needs a name")?;
    let isin = Isin::parse(fields.isin).map_err(|_| {
        Fault::new(
            Rule::BadIsin,
            format!(
                "{} must be CASH or 2 capital letters, 9 capital letters or digits and a digit \
                 (like KR7360750004); got {}",
                Column::Isin,
                shown(fields.isin)
            ),
        )
    })?;
    require_text(
        Column::AssetGroup,
        fields.asset_group,
        "every instrument needs an asset group",
    )?;
    Ok(InstrumentRow {
        row,
        isin,
        name: fields.name.to_owned(),
        asset_group: fields.asset_group.to_owned(),
    })
}

/// The warning for an ISIN whose check digit is wrong, if it is: such ISINs load (the real
/// master carries one), but the operator may want to tell upstream.
pub fn check_digit_warning(isin: &Isin) -> Option<String> {
    if isin.check_digit_ok() {
        return None;
    }
    let expected = isin_with_check_digit(&isin.as_str()[..11])
        .ok()
        .and_then(|valid| valid.as_str().chars().last());
    let expected = expected
        .map(|digit| format!(" (expected {digit})"))
        .unwrap_or_default();
    Some(format!(
        "{} {isin} has a wrong check digit{expected}; loaded anyway, as the dataset contract requires (loader/CLEANING.md)",
        Column::Isin
    ))
}

/// Row rules of a principal row: `account_number`, `principal`.
pub fn check_principal_row(
    fields: &PrincipalFields<'_>,
    row: RowRef,
) -> Result<PrincipalRow, Fault> {
    let account_number = parse_account_number(fields.account_number)?;
    let principal = parse_amount(Column::Principal, fields.principal)?;
    Ok(PrincipalRow {
        row,
        account_number,
        principal,
    })
}

/// Row rules of a holding, in column order, then the valuation. `is_instrument` tells
/// whether an ISIN survived the instrument rules.
pub fn check_holding_row(
    fields: &HoldingFields<'_>,
    row: RowRef,
    is_instrument: impl Fn(&Isin) -> bool,
) -> Result<HoldingRow, Fault> {
    require_text(
        Column::CustomerName,
        fields.customer_name,
        "every holding needs its owner's name",
    )?;
    require_text(
        Column::Brokerage,
        fields.brokerage,
        "every holding needs its brokerage",
    )?;
    let account_number = parse_account_number(fields.account_number)?;
    require_text(
        Column::AccountName,
        fields.account_name,
        "every holding needs its account's name",
    )?;
    let isin = match Isin::parse(fields.isin) {
        Ok(isin) if is_instrument(&isin) => isin,
        Ok(_) => {
            return Err(Fault::new(
                Rule::UnknownIsin,
                format!(
                    "{} {} is not among the instruments loaded from {} (missing there, or \
                     rejected there: see that file's rejects)",
                    Column::Isin,
                    shown(fields.isin),
                    FileKind::Instruments.file_name()
                ),
            ));
        }
        Err(_) => {
            return Err(Fault::new(
                Rule::UnknownIsin,
                format!(
                    "{} {} is not a well-formed ISIN (CASH or like KR7360750004), so it names \
                     no instrument",
                    Column::Isin,
                    shown(fields.isin)
                ),
            ));
        }
    };
    let current_price = parse_amount(Column::CurrentPrice, fields.current_price)?;
    let quantity = parse_amount(Column::Quantity, fields.quantity)?;
    let valuation = current_price.checked_mul(quantity).ok_or_else(|| {
        Fault::new(
            Rule::ValuationOverflow,
            format!(
                "{} {current_price} × {} {quantity} is larger than {} won; one of them is wrong",
                Column::CurrentPrice,
                Column::Quantity,
                i64::MAX
            ),
        )
    })?;
    Ok(HoldingRow {
        row,
        account_number,
        customer_name: fields.customer_name.to_owned(),
        brokerage: fields.brokerage.to_owned(),
        account_name: fields.account_name.to_owned(),
        isin,
        current_price,
        quantity,
        valuation,
    })
}

/// Set rule 2 over the rows of one key.
enum Dedup<T> {
    /// No rows.
    Empty,
    /// All rows identical: the first (lowest line) stands for all, the others are copies.
    Kept { row: T, copies: Vec<T> },
    /// Rows differ: all of them go.
    Conflict(Vec<T>),
}

fn dedup<T>(mut rows: Vec<T>, row_ref: impl Fn(&T) -> &RowRef) -> Dedup<T> {
    rows.sort_by_key(|row| row_ref(row).line);
    let mut rows = rows.into_iter();
    let Some(first) = rows.next() else {
        return Dedup::Empty;
    };
    let copies: Vec<T> = rows.collect();
    if copies
        .iter()
        .all(|copy| row_ref(copy).content == row_ref(&first).content)
    {
        Dedup::Kept { row: first, copies }
    } else {
        let mut all = Vec::with_capacity(copies.len() + 1);
        all.push(first);
        all.extend(copies);
        Dedup::Conflict(all)
    }
}

/// What set rule 2 leaves of the instruments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstrumentSettlement {
    /// The instruments that load, by ascending ISIN.
    pub instruments: Vec<Instrument>,
    /// Rows rejected by set rule 2, by line.
    pub rejects: Vec<Reject>,
    /// Rows that were identical copies of a loaded instrument.
    pub collapsed: u64,
}

/// Set rule 2 over the instrument rows that passed their row rules.
pub fn settle_instruments(rows: Vec<InstrumentRow>) -> InstrumentSettlement {
    let mut by_isin: BTreeMap<Isin, Vec<InstrumentRow>> = BTreeMap::new();
    for row in rows {
        by_isin.entry(row.isin.clone()).or_default().push(row);
    }
    let mut settlement = InstrumentSettlement {
        instruments: Vec::new(),
        rejects: Vec::new(),
        collapsed: 0,
    };
    for (isin, group) in by_isin {
        match dedup(group, |row| &row.row) {
            Dedup::Empty => {}
            Dedup::Kept { row, copies } => {
                settlement.collapsed += copies.len() as u64;
                settlement.instruments.push(Instrument {
                    isin: row.isin.into_string(),
                    name: row.name,
                    asset_group: row.asset_group,
                });
            }
            Dedup::Conflict(rows) => {
                let lines: Vec<u64> = rows.iter().map(|row| row.row.line).collect();
                let detail = format!(
                    "{} {isin} is on {} rows (lines {}) that differ; all of them are rejected \
                     because we cannot tell which is right",
                    Column::Isin,
                    rows.len(),
                    lines_list(&lines)
                );
                settlement
                    .rejects
                    .extend(rows.into_iter().map(|row| Reject {
                        file: FileKind::Instruments,
                        row: row.row,
                        rule: Rule::DuplicateConflict,
                        detail: detail.clone(),
                    }));
            }
        }
    }
    settlement.rejects.sort_by_key(|reject| reject.row.line);
    settlement
}

/// What the set rules leave of one account.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountSettlement {
    /// The account with its holdings by ascending ISIN, when it loads.
    pub account: Option<SnapshotAccount>,
    /// Rows rejected by the set rules: principal rows first, then holdings, each by line.
    pub rejects: Vec<Reject>,
    /// Holding rows that were identical copies of a loaded holding.
    pub holdings_collapsed: u64,
    /// Principal rows that were identical copies of the loaded principal row.
    pub principal_collapsed: u64,
}

/// The (customer_name, brokerage, account_name) of a holding row.
type Attributes<'a> = (&'a str, &'a str, &'a str);

fn attributes(row: &HoldingRow) -> Attributes<'_> {
    (&row.customer_name, &row.brokerage, &row.account_name)
}

fn attributes_text((customer_name, brokerage, account_name): Attributes<'_>) -> String {
    format!(
        "({}, {}, {})",
        shown(customer_name),
        shown(brokerage),
        shown(account_name)
    )
}

fn attribute_columns() -> String {
    let [a, b, c] = [Column::CustomerName, Column::Brokerage, Column::AccountName];
    format!(
        "{}, {}, {} ({}, {}, {})",
        a.korean(),
        b.korean(),
        c.korean(),
        a.english(),
        b.english(),
        c.english()
    )
}

/// Set rule 1 over the holding rows of one account: the strict majority wins.
fn settle_attributes(
    account: &str,
    rows: Vec<HoldingRow>,
    rejects: &mut Vec<Reject>,
) -> Vec<HoldingRow> {
    let total = rows.len();
    let mut votes: BTreeMap<Attributes<'_>, usize> = BTreeMap::new();
    for row in &rows {
        *votes.entry(attributes(row)).or_default() += 1;
    }
    if votes.len() <= 1 {
        return rows;
    }
    let winner = votes
        .iter()
        .find(|(_, count)| **count * 2 > total)
        .map(|(attrs, count)| {
            (
                attributes_text(*attrs),
                *count,
                (attrs.0.to_owned(), attrs.1.to_owned(), attrs.2.to_owned()),
            )
        });
    match winner {
        Some((winner_text, winner_count, (customer_name, brokerage, account_name))) => {
            let (kept, minority): (Vec<_>, Vec<_>) = rows.into_iter().partition(|row| {
                row.customer_name == customer_name
                    && row.brokerage == brokerage
                    && row.account_name == account_name
            });
            rejects.extend(minority.into_iter().map(|row| Reject {
                file: FileKind::Holdings,
                detail: format!(
                    "account {account}: this row's {} are {} but {winner_count} of the \
                     account's {total} rows say {winner_text}; the majority wins",
                    attribute_columns(),
                    attributes_text(attributes(&row)),
                ),
                row: row.row,
                rule: Rule::AttributesMinority,
            }));
            kept
        }
        None => {
            const SHOWN_COMBINATIONS: usize = 3;
            let mut combinations: Vec<String> = votes
                .iter()
                .take(SHOWN_COMBINATIONS)
                .map(|(attrs, count)| format!("{} on {count}", attributes_text(*attrs)))
                .collect();
            if votes.len() > SHOWN_COMBINATIONS {
                combinations.push(format!("{} more", votes.len() - SHOWN_COMBINATIONS));
            }
            let detail = format!(
                "account {account}: no combination of {} is on more than half of the account's \
                 {total} rows ({}); every row of the account is rejected",
                attribute_columns(),
                combinations.join("; ")
            );
            rejects.extend(rows.into_iter().map(|row| Reject {
                file: FileKind::Holdings,
                row: row.row,
                rule: Rule::AttributesNoMajority,
                detail: detail.clone(),
            }));
            Vec::new()
        }
    }
}

fn reject_all<'a>(
    file: FileKind,
    rows: impl IntoIterator<Item = &'a RowRef>,
    rule: Rule,
    detail: &str,
    rejects: &mut Vec<Reject>,
) {
    rejects.extend(rows.into_iter().map(|row| Reject {
        file,
        row: *row,
        rule,
        detail: detail.to_owned(),
    }));
}

/// Set rules 1 to 3 and the total-assets check over the rows of ONE account that passed
/// their row rules: its holding rows and its principal rows (normally one).
///
/// Identical copies collapse only into a row that loads: when the row they collapse into is
/// rejected (say by rule 3), its copies are rejected with it, so that `collapsed` always
/// means "folded into something that is in the snapshot".
pub fn settle_account(
    holdings: Vec<HoldingRow>,
    principals: Vec<PrincipalRow>,
) -> AccountSettlement {
    let account = holdings
        .first()
        .map(|row| row.account_number.as_str())
        .or_else(|| principals.first().map(|row| row.account_number.as_str()))
        .unwrap_or_default()
        .to_owned();
    debug_assert!(
        holdings
            .iter()
            .all(|row| row.account_number.as_str() == account)
            && principals
                .iter()
                .all(|row| row.account_number.as_str() == account),
        "settle_account takes the rows of one account"
    );
    let mut rejects = Vec::new();

    // Principal rows: set rule 2.
    let principal = match dedup(principals, |row| &row.row) {
        Dedup::Empty => None,
        Dedup::Kept { row, copies } => Some((row, copies)),
        Dedup::Conflict(rows) => {
            let lines: Vec<u64> = rows.iter().map(|row| row.row.line).collect();
            let detail = format!(
                "{} {account} is on {} rows (lines {}) with different content; all of them are \
                 rejected because we cannot tell which is right",
                Column::AccountNumber,
                rows.len(),
                lines_list(&lines)
            );
            reject_all(
                FileKind::Principal,
                rows.iter().map(|row| &row.row),
                Rule::DuplicateConflict,
                &detail,
                &mut rejects,
            );
            None
        }
    };

    // Holding rows: set rule 1, then set rule 2 per ISIN.
    let holdings = settle_attributes(&account, holdings, &mut rejects);
    let mut by_isin: BTreeMap<Isin, Vec<HoldingRow>> = BTreeMap::new();
    for row in holdings {
        by_isin.entry(row.isin.clone()).or_default().push(row);
    }
    let mut kept: Vec<(HoldingRow, Vec<HoldingRow>)> = Vec::with_capacity(by_isin.len());
    for (isin, group) in by_isin {
        match dedup(group, |row| &row.row) {
            Dedup::Empty => {}
            Dedup::Kept { row, copies } => kept.push((row, copies)),
            Dedup::Conflict(rows) => {
                let lines: Vec<u64> = rows.iter().map(|row| row.row.line).collect();
                let detail = format!(
                    "account {account} holds {} {isin} on {} rows (lines {}) that differ; all of \
                     them are rejected because we cannot tell which is right",
                    Column::Isin,
                    rows.len(),
                    lines_list(&lines)
                );
                reject_all(
                    FileKind::Holdings,
                    rows.iter().map(|row| &row.row),
                    Rule::DuplicateConflict,
                    &detail,
                    &mut rejects,
                );
            }
        }
    }
    let kept_refs = || {
        kept.iter().flat_map(|(row, copies)| {
            std::iter::once(&row.row).chain(copies.iter().map(|copy| &copy.row))
        })
    };

    // Set rule 3, then the total.
    let mut settlement = AccountSettlement {
        account: None,
        rejects: Vec::new(),
        holdings_collapsed: 0,
        principal_collapsed: 0,
    };
    match principal {
        None if !kept.is_empty() => {
            let detail = format!(
                "account {account} has no valid row in {}: missing there, or rejected there \
                 (see that file's rejects)",
                FileKind::Principal.file_name(),
            );
            reject_all(
                FileKind::Holdings,
                kept_refs(),
                Rule::AccountWithoutPrincipal,
                &detail,
                &mut rejects,
            );
        }
        None => {}
        Some((principal, copies)) if kept.is_empty() => {
            let detail = format!(
                "account {account} has no valid holding in {}: missing there, or all of its rows \
                 were rejected (see that file's rejects)",
                FileKind::Holdings.file_name()
            );
            let rows = std::iter::once(&principal.row).chain(copies.iter().map(|copy| &copy.row));
            reject_all(
                FileKind::Principal,
                rows,
                Rule::AccountWithoutHoldings,
                &detail,
                &mut rejects,
            );
        }
        Some((principal, principal_copies)) => {
            let total = kept
                .iter()
                .try_fold(0i64, |total, (row, _)| total.checked_add(row.valuation));
            match total {
                None => {
                    let detail = format!(
                        "the valuations ({} × {}) of account {account} add up to more than {} \
                         won, which no report can show; every row of the account is rejected",
                        Column::CurrentPrice,
                        Column::Quantity,
                        i64::MAX
                    );
                    let principal_rows = std::iter::once(&principal.row)
                        .chain(principal_copies.iter().map(|copy| &copy.row));
                    reject_all(
                        FileKind::Principal,
                        principal_rows,
                        Rule::TotalAssetsOverflow,
                        &detail,
                        &mut rejects,
                    );
                    reject_all(
                        FileKind::Holdings,
                        kept_refs(),
                        Rule::TotalAssetsOverflow,
                        &detail,
                        &mut rejects,
                    );
                }
                Some(_) => {
                    settlement.principal_collapsed = principal_copies.len() as u64;
                    settlement.holdings_collapsed =
                        kept.iter().map(|(_, copies)| copies.len() as u64).sum();
                    let (customer_name, brokerage, account_name) = kept
                        .first()
                        .map(|(row, _)| {
                            (
                                row.customer_name.clone(),
                                row.brokerage.clone(),
                                row.account_name.clone(),
                            )
                        })
                        .unwrap_or_default();
                    settlement.account = Some(SnapshotAccount {
                        account_number: account.clone(),
                        customer_name,
                        brokerage,
                        account_name,
                        principal: principal.principal,
                        holdings: kept
                            .into_iter()
                            .map(|(row, _)| SnapshotHolding {
                                isin: row.isin.into_string(),
                                quantity: row.quantity,
                                current_price: row.current_price,
                            })
                            .collect(),
                    });
                }
            }
        }
    }
    rejects.sort_by_key(|reject| (reject.file, reject.row.line));
    settlement.rejects = rejects;
    settlement
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT: &str = "5736692368320";

    fn row_ref(line: u64, fields: &[&str]) -> RowRef {
        RowRef {
            line,
            offset: line * 100,
            len: 10,
            content: Fingerprint::of(fields.iter().copied()),
        }
    }

    fn instrument(
        line: u64,
        name: &str,
        isin: &str,
        asset_group: &str,
    ) -> Result<InstrumentRow, Fault> {
        check_instrument_row(
            &InstrumentFields {
                name,
                isin,
                asset_group,
            },
            row_ref(line, &[name, isin, asset_group]),
        )
    }

    fn principal(line: u64, account_number: &str, amount: &str) -> Result<PrincipalRow, Fault> {
        check_principal_row(
            &PrincipalFields {
                account_number,
                principal: amount,
            },
            row_ref(line, &[account_number, amount]),
        )
    }

    fn known(isin: &Isin) -> bool {
        ["CASH", "KR7360750004", "KR7133690008", "KR7195980002"].contains(&isin.as_str())
    }

    /// customer_name, brokerage, account_number, account_name, isin, current_price, quantity
    fn holding(line: u64, f: [&str; 7]) -> Result<HoldingRow, Fault> {
        let fields = HoldingFields {
            customer_name: f[0],
            brokerage: f[1],
            account_number: f[2],
            account_name: f[3],
            isin: f[4],
            current_price: f[5],
            quantity: f[6],
        };
        check_holding_row(&fields, row_ref(line, &f), known)
    }

    fn good_holding(line: u64, isin: &str, price: &str, quantity: &str) -> HoldingRow {
        holding(
            line,
            [
                "류영길",
                "디셈버증권",
                ACCOUNT,
                "계좌1",
                isin,
                price,
                quantity,
            ],
        )
        .unwrap()
    }

    fn rule_of<T: std::fmt::Debug>(result: Result<T, Fault>) -> Rule {
        result.unwrap_err().rule
    }

    fn rules(rejects: &[Reject]) -> Vec<(FileKind, u64, Rule)> {
        rejects
            .iter()
            .map(|reject| (reject.file, reject.row.line, reject.rule))
            .collect()
    }

    #[test]
    fn field_count() {
        let header: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let short: [&[u8]; 2] = [b"x", b"y"];
        let fault = split_row(short.into_iter(), &header, MAX_TEXT_BYTES).unwrap_err();
        assert_eq!(fault.rule, Rule::FieldCount);
        assert!(
            fault.detail.contains("2 fields") && fault.detail.contains("header has 3"),
            "{}",
            fault.detail
        );
        let long: [&[u8]; 4] = [b"x", b"y", b"z", b"w"];
        assert_eq!(
            split_row(long.into_iter(), &header, MAX_TEXT_BYTES)
                .unwrap_err()
                .rule,
            Rule::FieldCount
        );
        let right: [&[u8]; 3] = [b" x ", b"\ty", b"z \r"];
        assert_eq!(
            split_row(right.into_iter(), &header, MAX_TEXT_BYTES).unwrap(),
            ["x", "y", "z"]
        );
    }

    #[test]
    fn invalid_utf8() {
        let header: Vec<String> = ["고객이름", "증권사"].map(String::from).to_vec();
        let bad: [&[u8]; 2] = [b"ok", b"\xb7\xf9\xbf\xb5"];
        let fault = split_row(bad.into_iter(), &header, MAX_TEXT_BYTES).unwrap_err();
        assert_eq!(fault.rule, Rule::InvalidUtf8);
        assert!(
            fault.detail.contains("증권사") && fault.detail.contains("field 2"),
            "{}",
            fault.detail
        );
        // The count is checked first.
        let both: [&[u8]; 1] = [b"\xff"];
        assert_eq!(
            split_row(both.into_iter(), &header, MAX_TEXT_BYTES)
                .unwrap_err()
                .rule,
            Rule::FieldCount
        );
        let good: [&[u8]; 2] = ["류영길".as_bytes(), "디셈버증권".as_bytes()];
        assert_eq!(
            split_row(good.into_iter(), &header, MAX_TEXT_BYTES).unwrap(),
            ["류영길", "디셈버증권"]
        );
    }

    #[test]
    fn the_fast_path_never_accepts_what_check_text_refuses() {
        // Every character whose UTF-8 starts with a byte the fast path lets through.
        for code in 0..=0x10FFFFu32 {
            let Some(c) = char::from_u32(code) else {
                continue;
            };
            let text = c.to_string();
            if plainly_printable(&text) {
                assert!(check_text(&text, MAX_TEXT_BYTES).is_ok(), "U+{code:04X}");
            }
        }
    }

    #[test]
    fn control_characters_and_long_fields() {
        let header: Vec<String> = ["고객이름", "증권사", "계좌명"].map(String::from).to_vec();
        for (bad, shown_as) in [
            ("류영\0길", "U+0000"),
            ("류영\t길", "U+0009"),
            ("류영\r길", "U+000D"),
            ("류영\n길", "U+000A"),
            ("\u{202e}길영류", "U+202E"),
            ("류영길\u{7f}", "U+007F"),
            ("\u{feff}류영길", "U+FEFF"),
        ] {
            let row: [&[u8]; 3] = [b"ok", bad.as_bytes(), b"x"];
            let fault = split_row(row.into_iter(), &header, MAX_TEXT_BYTES).unwrap_err();
            assert_eq!(fault.rule, Rule::ControlCharacter, "{bad:?}");
            assert!(
                fault.detail.contains(shown_as) && fault.detail.contains("field 2 (\"증권사\")"),
                "{}",
                fault.detail
            );
        }
        // White space around a value is trimmed before the text rules: a tab or CR at an
        // edge is padding, not content.
        let padded: [&[u8]; 3] = [b"\tok\r", b" x ", b"\xc2\x85y"];
        assert_eq!(
            split_row(padded.into_iter(), &header, MAX_TEXT_BYTES).unwrap(),
            ["ok", "x", "y"]
        );
        let long = "가".repeat(342); // 1026 bytes
        let row: [&[u8]; 3] = [b"ok", b"x", long.as_bytes()];
        let fault = split_row(row.into_iter(), &header, MAX_TEXT_BYTES).unwrap_err();
        assert_eq!(fault.rule, Rule::FieldTooLong);
        assert!(fault.detail.contains("1026 bytes"), "{}", fault.detail);
        // A stricter limit, and the limit is never looser than the servers'.
        let row: [&[u8]; 3] = [b"ok", b"12345", b"x"];
        assert_eq!(
            split_row(row.into_iter(), &header, 4).unwrap_err().rule,
            Rule::FieldTooLong
        );
        let row: [&[u8]; 3] = [b"ok", long.as_bytes(), b"x"];
        assert_eq!(
            split_row(row.into_iter(), &header, usize::MAX)
                .unwrap_err()
                .rule,
            Rule::FieldTooLong
        );
        // Invalid UTF-8 anywhere in the row comes before the text rules.
        let row: [&[u8]; 3] = [b"a\0b", b"x", b"\xff"];
        assert_eq!(
            split_row(row.into_iter(), &header, MAX_TEXT_BYTES)
                .unwrap_err()
                .rule,
            Rule::InvalidUtf8
        );
    }

    #[test]
    fn empty_field() {
        let fault = instrument(2, "", "KR7360750004", "미국 주식").unwrap_err();
        assert_eq!(fault.rule, Rule::EmptyField);
        assert!(fault.detail.contains("종목명 (name)"), "{}", fault.detail);
        let fault = instrument(2, "미국S&P500", "KR7360750004", "").unwrap_err();
        assert!(
            fault.detail.contains("자산그룹 (asset_group)"),
            "{}",
            fault.detail
        );
        assert!(instrument(2, "미국S&P500", "KR7360750004", "미국 주식").is_ok());

        for (index, column) in [(0, "고객이름"), (1, "증권사"), (3, "계좌명")] {
            let mut fields = ["류영길", "디셈버증권", ACCOUNT, "계좌1", "CASH", "1", "1"];
            fields[index] = "";
            let fault = holding(2, fields).unwrap_err();
            assert_eq!(fault.rule, Rule::EmptyField);
            assert!(fault.detail.contains(column), "{}", fault.detail);
        }
    }

    #[test]
    fn bad_isin() {
        for bad in [
            "",
            "kr7360750004",
            "KR736075000",
            "KR73607500041",
            "KR736075000A",
            "cash",
            "12KR60750004",
        ] {
            let fault = instrument(2, "n", bad, "g").unwrap_err();
            assert_eq!(fault.rule, Rule::BadIsin, "{bad:?}");
            assert!(
                fault.detail.contains("ISIN") && fault.detail.contains(&format!("{bad:?}")),
                "{}",
                fault.detail
            );
        }
        let cash = instrument(2, "현금", "CASH", "채권 / 현금").unwrap();
        assert!(check_digit_warning(&cash.isin).is_none());
        // A wrong check digit loads, with a warning.
        let odd = instrument(2, "전세계MSCI", "KR7195980002", "전세계 주식").unwrap();
        let warning = check_digit_warning(&odd.isin).unwrap();
        assert!(
            warning.contains("KR7195980002") && warning.contains("expected 8"),
            "{warning}"
        );
        assert!(check_digit_warning(&Isin::parse("KR7360750004").unwrap()).is_none());
    }

    #[test]
    fn bad_account_number() {
        for bad in [
            "",
            "12345",
            "123456789012345678901",
            "12-345678",
            "１２３４５６",
            "-123456",
            "123 456",
        ] {
            let fault = principal(2, bad, "1").unwrap_err();
            assert_eq!(fault.rule, Rule::BadAccountNumber, "{bad:?}");
            assert!(
                fault.detail.contains("계좌번호 (account_number)"),
                "{}",
                fault.detail
            );
            let fault = holding(2, ["a", "b", bad, "c", "CASH", "1", "1"]).unwrap_err();
            assert_eq!(fault.rule, Rule::BadAccountNumber, "{bad:?}");
        }
        for good in ["123456", "12345678901234567890", "000001"] {
            assert!(principal(2, good, "1").is_ok());
            assert!(holding(2, ["a", "b", good, "c", "CASH", "1", "1"]).is_ok());
        }
    }

    #[test]
    fn unknown_isin() {
        let fault = holding(2, ["a", "b", ACCOUNT, "c", "US0378331005", "1", "1"]).unwrap_err();
        assert_eq!(fault.rule, Rule::UnknownIsin);
        assert!(
            fault.detail.contains("US0378331005")
                && fault.detail.contains("asset_group_info_set.csv")
        );
        let fault = holding(2, ["a", "b", ACCOUNT, "c", "kr7360750004", "1", "1"]).unwrap_err();
        assert_eq!(fault.rule, Rule::UnknownIsin);
        assert!(
            fault.detail.contains("not a well-formed ISIN"),
            "{}",
            fault.detail
        );
        assert_eq!(
            rule_of(holding(2, ["a", "b", ACCOUNT, "c", "", "1", "1"])),
            Rule::UnknownIsin
        );
        assert!(holding(2, ["a", "b", ACCOUNT, "c", "KR7195980002", "1", "1"]).is_ok());
    }

    #[test]
    fn bad_number() {
        for bad in ["", "-1", "+1", "1,000", "1.5", "1e3", "12원", "１"] {
            let fault = holding(2, ["a", "b", ACCOUNT, "c", "CASH", bad, "1"]).unwrap_err();
            assert_eq!(fault.rule, Rule::BadNumber, "{bad:?}");
            assert!(
                fault.detail.contains("현재가 (current_price)"),
                "{}",
                fault.detail
            );
            let fault = holding(2, ["a", "b", ACCOUNT, "c", "CASH", "1", bad]).unwrap_err();
            assert!(
                fault.detail.contains("보유수량 (quantity)"),
                "{}",
                fault.detail
            );
            let fault = principal(2, ACCOUNT, bad).unwrap_err();
            assert_eq!(fault.rule, Rule::BadNumber);
            assert!(
                fault.detail.contains("투자원금 (principal)"),
                "{}",
                fault.detail
            );
        }
        // Quantity 0, principal 0 and leading zeros are valid.
        let row = holding(2, ["a", "b", ACCOUNT, "c", "CASH", "007", "0"]).unwrap();
        assert_eq!((row.current_price, row.quantity, row.valuation), (7, 0, 0));
        assert_eq!(principal(2, ACCOUNT, "0").unwrap().principal, 0);
        assert_eq!(principal(2, ACCOUNT, "000100").unwrap().principal, 100);
    }

    #[test]
    fn number_overflow() {
        let max = "9223372036854775807";
        let over = "9223372036854775808";
        assert_eq!(principal(2, ACCOUNT, max).unwrap().principal, i64::MAX);
        assert_eq!(
            principal(2, ACCOUNT, "0009223372036854775807")
                .unwrap()
                .principal,
            i64::MAX
        );
        let fault = principal(2, ACCOUNT, over).unwrap_err();
        assert_eq!(fault.rule, Rule::NumberOverflow);
        assert!(
            fault.detail.contains(over) && fault.detail.contains("투자원금"),
            "{}",
            fault.detail
        );
        assert_eq!(
            rule_of(principal(2, ACCOUNT, "99999999999999999999999999")),
            Rule::NumberOverflow
        );
        assert_eq!(
            rule_of(holding(2, ["a", "b", ACCOUNT, "c", "CASH", over, "1"])),
            Rule::NumberOverflow
        );
        assert_eq!(
            rule_of(holding(2, ["a", "b", ACCOUNT, "c", "CASH", "1", over])),
            Rule::NumberOverflow
        );
        assert_eq!(
            holding(2, ["a", "b", ACCOUNT, "c", "CASH", "1", max])
                .unwrap()
                .valuation,
            i64::MAX
        );
    }

    #[test]
    fn valuation_overflow() {
        let max = "9223372036854775807";
        let fault = holding(2, ["a", "b", ACCOUNT, "c", "CASH", max, "2"]).unwrap_err();
        assert_eq!(fault.rule, Rule::ValuationOverflow);
        assert!(
            fault.detail.contains("현재가") && fault.detail.contains("보유수량"),
            "{}",
            fault.detail
        );
        assert_eq!(
            rule_of(holding(
                2,
                ["a", "b", ACCOUNT, "c", "CASH", "3037000500", "3037000500"]
            )),
            Rule::ValuationOverflow
        );
        assert_eq!(
            holding(
                2,
                ["a", "b", ACCOUNT, "c", "CASH", "3037000499", "3037000499"]
            )
            .unwrap()
            .valuation,
            9_223_372_030_926_249_001
        );
        assert_eq!(
            holding(2, ["a", "b", ACCOUNT, "c", "CASH", max, "0"])
                .unwrap()
                .valuation,
            0
        );
    }

    #[test]
    fn first_failing_column_wins() {
        // Empty customer name before a bad number; bad account number before an unknown ISIN.
        assert_eq!(
            rule_of(holding(2, ["", "b", ACCOUNT, "c", "CASH", "x", "1"])),
            Rule::EmptyField
        );
        assert_eq!(
            rule_of(holding(2, ["a", "b", "1", "c", "XX", "x", "1"])),
            Rule::BadAccountNumber
        );
        assert_eq!(
            rule_of(holding(2, ["a", "b", ACCOUNT, "c", "XX", "x", "1"])),
            Rule::UnknownIsin
        );
        assert_eq!(
            rule_of(holding(
                2,
                ["a", "b", ACCOUNT, "c", "CASH", "99999999999999999999", "x"]
            )),
            Rule::NumberOverflow
        );
        assert_eq!(rule_of(instrument(2, "", "bad", "")), Rule::EmptyField);
        assert_eq!(rule_of(instrument(2, "n", "bad", "")), Rule::BadIsin);
        assert_eq!(rule_of(principal(2, "x", "x")), Rule::BadAccountNumber);
    }

    #[test]
    fn instruments_collapse_identical_and_reject_conflicts() {
        let rows = vec![
            instrument(2, "현금", "CASH", "채권 / 현금").unwrap(),
            instrument(3, "미국S&P500", "KR7360750004", "미국 주식").unwrap(),
            instrument(4, "미국나스닥100", "KR7133690008", "미국 주식").unwrap(),
            instrument(5, "미국S&P500", "KR7360750004", "미국 주식").unwrap(),
            instrument(6, "미국나스닥100", "KR7133690008", "해외 주식").unwrap(),
        ];
        let settlement = settle_instruments(rows);
        let isins: Vec<&str> = settlement
            .instruments
            .iter()
            .map(|i| i.isin.as_str())
            .collect();
        assert_eq!(isins, ["CASH", "KR7360750004"]);
        assert_eq!(settlement.collapsed, 1);
        assert_eq!(
            rules(&settlement.rejects),
            [
                (FileKind::Instruments, 4, Rule::DuplicateConflict),
                (FileKind::Instruments, 6, Rule::DuplicateConflict)
            ]
        );
        assert!(
            settlement.rejects[0].detail.contains("lines 4 and 6"),
            "{}",
            settlement.rejects[0].detail
        );
    }

    #[test]
    fn a_clean_account_loads_with_holdings_by_isin() {
        let holdings = vec![
            good_holding(2, "KR7360750004", "8585", "21"),
            good_holding(3, "CASH", "24269", "1"),
            good_holding(4, "KR7133690008", "14459", "0"),
        ];
        let settlement = settle_account(holdings, vec![principal(9, ACCOUNT, "0").unwrap()]);
        assert!(settlement.rejects.is_empty());
        let account = settlement.account.unwrap();
        assert_eq!(
            (
                account.account_number.as_str(),
                account.customer_name.as_str(),
                account.brokerage.as_str(),
                account.account_name.as_str(),
                account.principal
            ),
            (ACCOUNT, "류영길", "디셈버증권", "계좌1", 0)
        );
        let isins: Vec<&str> = account.holdings.iter().map(|h| h.isin.as_str()).collect();
        assert_eq!(isins, ["CASH", "KR7133690008", "KR7360750004"]);
        assert_eq!(account.holdings[1].quantity, 0);
        assert_eq!(account.holdings[2].current_price, 8585);
    }

    #[test]
    fn attributes_majority_two_against_one() {
        let minority = holding(
            3,
            [
                "류영길",
                "다른증권",
                ACCOUNT,
                "계좌1",
                "KR7133690008",
                "1",
                "1",
            ],
        )
        .unwrap();
        let holdings = vec![
            good_holding(2, "CASH", "1", "1"),
            minority,
            good_holding(4, "KR7360750004", "1", "1"),
        ];
        let settlement = settle_account(holdings, vec![principal(2, ACCOUNT, "5").unwrap()]);
        assert_eq!(
            rules(&settlement.rejects),
            [(FileKind::Holdings, 3, Rule::AttributesMinority)]
        );
        let detail = &settlement.rejects[0].detail;
        assert!(
            detail.contains("다른증권") && detail.contains("2 of the account's 3 rows"),
            "{detail}"
        );
        let account = settlement.account.unwrap();
        assert_eq!(account.brokerage, "디셈버증권");
        assert_eq!(account.holdings.len(), 2);
    }

    #[test]
    fn attributes_without_majority_reject_the_account() {
        let other = holding(
            3,
            [
                "류영길",
                "디셈버증권",
                ACCOUNT,
                "계좌2",
                "KR7133690008",
                "1",
                "1",
            ],
        )
        .unwrap();
        let settlement = settle_account(
            vec![good_holding(2, "CASH", "1", "1"), other],
            vec![principal(7, ACCOUNT, "5").unwrap()],
        );
        assert_eq!(
            rules(&settlement.rejects),
            [
                (FileKind::Principal, 7, Rule::AccountWithoutHoldings),
                (FileKind::Holdings, 2, Rule::AttributesNoMajority),
                (FileKind::Holdings, 3, Rule::AttributesNoMajority),
            ]
        );
        assert!(
            settlement.rejects[1].detail.contains("계좌2"),
            "{}",
            settlement.rejects[1].detail
        );
        assert!(settlement.account.is_none());
    }

    #[test]
    fn identical_holdings_collapse_and_conflicts_reject_all() {
        let holdings = vec![
            good_holding(2, "CASH", "100", "1"),
            good_holding(3, "CASH", "100", "1"),
            good_holding(4, "KR7360750004", "7", "2"),
            // Same number, different text: not identical.
            good_holding(5, "KR7360750004", "007", "2"),
            good_holding(6, "KR7133690008", "1", "1"),
        ];
        let settlement = settle_account(holdings, vec![principal(2, ACCOUNT, "5").unwrap()]);
        assert_eq!(
            rules(&settlement.rejects),
            [
                (FileKind::Holdings, 4, Rule::DuplicateConflict),
                (FileKind::Holdings, 5, Rule::DuplicateConflict)
            ]
        );
        assert_eq!(settlement.holdings_collapsed, 1);
        let account = settlement.account.unwrap();
        let isins: Vec<&str> = account.holdings.iter().map(|h| h.isin.as_str()).collect();
        assert_eq!(isins, ["CASH", "KR7133690008"]);
    }

    #[test]
    fn principal_duplicates() {
        let identical = vec![
            principal(2, ACCOUNT, "5").unwrap(),
            principal(9, ACCOUNT, "5").unwrap(),
        ];
        let settlement = settle_account(vec![good_holding(2, "CASH", "1", "1")], identical);
        assert!(settlement.rejects.is_empty());
        assert_eq!(settlement.principal_collapsed, 1);
        assert_eq!(settlement.account.unwrap().principal, 5);

        let conflict = vec![
            principal(2, ACCOUNT, "5").unwrap(),
            principal(9, ACCOUNT, "05").unwrap(),
        ];
        let settlement = settle_account(vec![good_holding(4, "CASH", "1", "1")], conflict);
        assert_eq!(
            rules(&settlement.rejects),
            [
                (FileKind::Principal, 2, Rule::DuplicateConflict),
                (FileKind::Principal, 9, Rule::DuplicateConflict),
                (FileKind::Holdings, 4, Rule::AccountWithoutPrincipal),
            ]
        );
        assert!(settlement.account.is_none());
    }

    #[test]
    fn account_without_principal() {
        // Identical copies of a rejected row are rejected with it, not counted as collapsed.
        let holdings = vec![
            good_holding(2, "CASH", "1", "1"),
            good_holding(3, "CASH", "1", "1"),
        ];
        let settlement = settle_account(holdings, Vec::new());
        assert_eq!(
            rules(&settlement.rejects),
            [
                (FileKind::Holdings, 2, Rule::AccountWithoutPrincipal),
                (FileKind::Holdings, 3, Rule::AccountWithoutPrincipal)
            ]
        );
        assert!(
            settlement.rejects[0].detail.contains(ACCOUNT)
                && settlement.rejects[0]
                    .detail
                    .contains("account_basic_info_set.csv")
        );
        assert_eq!(settlement.holdings_collapsed, 0);
        assert!(settlement.account.is_none());
    }

    #[test]
    fn account_without_holdings() {
        let settlement = settle_account(Vec::new(), vec![principal(5, ACCOUNT, "1").unwrap()]);
        assert_eq!(
            rules(&settlement.rejects),
            [(FileKind::Principal, 5, Rule::AccountWithoutHoldings)]
        );
        assert!(
            settlement.rejects[0]
                .detail
                .contains("account_asset_info_set.csv")
        );
        assert!(settlement.account.is_none());
        let settlement = settle_account(Vec::new(), Vec::new());
        assert!(settlement.rejects.is_empty() && settlement.account.is_none());
    }

    #[test]
    fn total_assets_overflow() {
        let half = (i64::MAX / 2 + 1).to_string();
        let holdings = vec![
            good_holding(2, "CASH", &half, "1"),
            good_holding(3, "KR7360750004", &half, "1"),
        ];
        let settlement = settle_account(holdings, vec![principal(4, ACCOUNT, "1").unwrap()]);
        assert_eq!(
            rules(&settlement.rejects),
            [
                (FileKind::Principal, 4, Rule::TotalAssetsOverflow),
                (FileKind::Holdings, 2, Rule::TotalAssetsOverflow),
                (FileKind::Holdings, 3, Rule::TotalAssetsOverflow),
            ]
        );
        assert!(settlement.account.is_none());
        // Exactly i64::MAX in total still loads.
        let holdings = vec![
            good_holding(2, "CASH", &(i64::MAX / 2).to_string(), "1"),
            good_holding(3, "KR7360750004", &(i64::MAX / 2 + 1).to_string(), "1"),
        ];
        let settlement = settle_account(holdings, vec![principal(4, ACCOUNT, "1").unwrap()]);
        assert!(settlement.rejects.is_empty());
        let total: i64 = settlement
            .account
            .unwrap()
            .holdings
            .iter()
            .map(|h| h.current_price * h.quantity)
            .sum();
        assert_eq!(total, i64::MAX);
    }

    #[test]
    fn details_cut_long_values() {
        let long = "9".repeat(500);
        let fault = holding(
            2,
            ["a", "b", ACCOUNT, "c", "CASH", &format!("x{long}"), "1"],
        )
        .unwrap_err();
        assert!(fault.detail.len() < 300, "{}", fault.detail);
        assert!(fault.detail.contains("501 bytes"), "{}", fault.detail);
    }

    #[test]
    fn fingerprints_separate_fields() {
        assert_ne!(Fingerprint::of(["ab", "c"]), Fingerprint::of(["a", "bc"]));
        assert_eq!(Fingerprint::of(["a", "b"]), Fingerprint::of(["a", "b"]));
    }
}
