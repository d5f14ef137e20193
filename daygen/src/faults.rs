//! The fault plan: which rows are injected where, and exactly what a correct cleaner does
//! with each (see the table in the crate's docs).
//!
//! The plan is small (a few entries per fault) and is built before anything is written, so
//! the truth iterator and the writer agree on it without holding the day in memory.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};

use invest_dataset::{FileKind, Rule};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::csv_out::CsvOut;
use super::names::{BROKERAGES, generated_instrument};
use super::perm::{Perm, mix};
use super::{AccountDraft, Day, GenError, Who};

/// One kind of injected row (or group of rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fault {
    InstrumentFieldCount,
    InstrumentInvalidUtf8,
    InstrumentEmptyField,
    InstrumentBadIsin,
    InstrumentConflict,
    InstrumentRepeat,
    PrincipalFieldCount,
    PrincipalInvalidUtf8,
    PrincipalBadAccountNumber,
    PrincipalBadNumber,
    PrincipalNumberOverflow,
    PrincipalRepeat,
    HoldingFieldCount,
    HoldingInvalidUtf8,
    HoldingEmptyField,
    HoldingBadAccountNumber,
    HoldingUnknownIsin,
    HoldingBadNumber,
    HoldingNumberOverflow,
    HoldingValuationOverflow,
    HoldingMinority,
    HoldingConflict,
    HoldingRepeat,
    PrincipalConflict,
    PrincipalOnly,
    HoldingNoMajority,
    HoldingsOnly,
    TotalAssetsOverflow,
}

/// Faults that need a whole account of their own (never part of the truth); the day
/// reserves `faults` accounts for each.
pub(super) const FAULT_ACCOUNT_KINDS: [Fault; 5] = [
    Fault::PrincipalConflict,
    Fault::PrincipalOnly,
    Fault::HoldingNoMajority,
    Fault::HoldingsOnly,
    Fault::TotalAssetsOverflow,
];

/// Faults on one row of a truth account whose effect must not reach the set rules, so the
/// account they sit on is used by no other of them.
const EXCLUSIVE_KINDS: [Fault; 3] = [
    Fault::HoldingMinority,
    Fault::HoldingConflict,
    Fault::HoldingRepeat,
];

/// Faults on one row that the row rules reject (or an identical repeat): any truth account.
const ROW_KINDS: [Fault; 14] = [
    Fault::PrincipalFieldCount,
    Fault::PrincipalInvalidUtf8,
    Fault::PrincipalBadAccountNumber,
    Fault::PrincipalBadNumber,
    Fault::PrincipalNumberOverflow,
    Fault::PrincipalRepeat,
    Fault::HoldingFieldCount,
    Fault::HoldingInvalidUtf8,
    Fault::HoldingEmptyField,
    Fault::HoldingBadAccountNumber,
    Fault::HoldingUnknownIsin,
    Fault::HoldingBadNumber,
    Fault::HoldingNumberOverflow,
    Fault::HoldingValuationOverflow,
];

/// Columns of a holdings row in the standard order.
const CUSTOMER: usize = 0;
const BROKERAGE: usize = 1;
const NUMBER: usize = 2;
const ACCOUNT_NAME: usize = 3;
const ISIN: usize = 4;
const PRICE: usize = 5;
const QUANTITY: usize = 6;

/// Separates the plan's random stream from the accounts' ones.
const PLAN_DOMAIN: u64 = 0x504C_414E;
const TARGET_DOMAIN: u64 = 0x5441_5247;
const EXTRA_DOMAIN: u64 = 0x4558_5452;

/// One injected row or group of rows, written just before the master row or the account at
/// file position `pos` (or at the end when `pos` is the row count).
#[derive(Debug, Clone, Copy)]
pub(super) struct Extra {
    pub(super) pos: u64,
    pub(super) fault: Fault,
    /// Which fault of its kind (0..faults): picks the variant.
    pub(super) number: u64,
    /// The truth account, the fault account, the master position or the fault ISIN.
    pub(super) subject: u64,
    /// The holding copied, or the first master position a fault account uses.
    pub(super) holding: usize,
    /// Which of the two rows of an instrument conflict.
    pub(super) part: u8,
}

/// Everything about the injected faults that the writer and the truth need.
#[derive(Debug, Default)]
pub(super) struct Plan {
    pub(super) instrument_extras: Vec<Extra>,
    pub(super) account_extras: Vec<Extra>,
    /// Truth account index → position (in its draft) of the holding a conflict removes.
    pub(super) dropped: HashMap<u64, usize>,
    /// Valid ISINs that are not in the master: 4 per fault for the instrument faults, then
    /// one per fault for `unknown_isin` rows that name an ISIN never delivered.
    pub(super) fault_isins: Vec<String>,
    pub(super) rejects: BTreeMap<(String, String), u64>,
    pub(super) collapsed: BTreeMap<String, u64>,
}

impl Plan {
    /// Plans `faults` faults of each kind over `day` (whose plan is still empty).
    pub(super) fn build(day: &Day, faults: u64) -> Result<Self, GenError> {
        let mut plan = Plan::default();
        if faults == 0 {
            return Ok(plan);
        }
        let accounts = day.accounts;
        let master = day.master.len() as u64;
        let mut rng = ChaCha8Rng::seed_from_u64(mix(day.seed, PLAN_DOMAIN));
        for k in 0..5 * faults {
            plan.fault_isins.push(fault_isin(k)?);
        }

        for number in 0..faults {
            let instrument_faults = [
                (Fault::InstrumentFieldCount, 4 * number, Rule::FieldCount),
                (
                    Fault::InstrumentInvalidUtf8,
                    4 * number + 1,
                    Rule::InvalidUtf8,
                ),
                (
                    Fault::InstrumentEmptyField,
                    4 * number + 2,
                    Rule::EmptyField,
                ),
                (Fault::InstrumentBadIsin, 4 * number, Rule::BadIsin),
            ];
            for (fault, subject, rule) in instrument_faults {
                let pos = rng.random_range(0..=master);
                plan.instrument_extras.push(Extra {
                    pos,
                    fault,
                    number,
                    subject,
                    holding: 0,
                    part: 0,
                });
                plan.reject(FileKind::Instruments, rule, 1);
            }
            for part in 0..2 {
                let pos = rng.random_range(0..=master);
                let fault = Fault::InstrumentConflict;
                plan.instrument_extras.push(Extra {
                    pos,
                    fault,
                    number,
                    subject: 4 * number + 3,
                    holding: 0,
                    part,
                });
            }
            plan.reject(FileKind::Instruments, Rule::DuplicateConflict, 2);
            let pos = rng.random_range(0..=master);
            let subject = rng.random_range(0..master);
            plan.instrument_extras.push(Extra {
                pos,
                fault: Fault::InstrumentRepeat,
                number,
                subject,
                holding: 0,
                part: 0,
            });
            plan.collapse(FileKind::Instruments, 1);
        }

        // Truth accounts are visited in a random order; the exclusive faults take the first
        // eligible ones, the row faults the next ones (wrapping round on small days).
        let order = Perm::new(accounts, mix(day.seed, TARGET_DOMAIN));
        let mut cursor = 0;
        let mut draft = AccountDraft::default();
        for fault in EXCLUSIVE_KINDS {
            for number in 0..faults {
                let subject = loop {
                    if cursor >= accounts {
                        return Err(GenError::Options(format!(
                            "{faults} faults of each kind need at least {} accounts with two or more holdings; \
                             the day has {accounts} accounts",
                            3 * faults
                        )));
                    }
                    let index = order.apply(cursor);
                    cursor += 1;
                    day.draft(Who::Truth(index), &mut draft);
                    // Two holdings at least: the majority must stay strict beside a minority
                    // row, and a conflict must leave the account a holding to load.
                    if draft.holdings.len() >= 2 {
                        break index;
                    }
                };
                let holding = rng.random_range(0..draft.holdings.len());
                let pos = rng.random_range(0..=accounts);
                plan.account_extras.push(Extra {
                    pos,
                    fault,
                    number,
                    subject,
                    holding,
                    part: 0,
                });
                match fault {
                    Fault::HoldingMinority => {
                        plan.reject(FileKind::Holdings, Rule::AttributesMinority, 1)
                    }
                    Fault::HoldingConflict => {
                        plan.reject(FileKind::Holdings, Rule::DuplicateConflict, 2);
                        plan.dropped.insert(subject, holding);
                    }
                    _ => plan.collapse(FileKind::Holdings, 1),
                }
            }
        }
        for fault in ROW_KINDS {
            for number in 0..faults {
                let subject = order.apply(cursor % accounts);
                cursor += 1;
                day.draft(Who::Truth(subject), &mut draft);
                let holding = rng.random_range(0..draft.holdings.len());
                let pos = rng.random_range(0..=accounts);
                plan.account_extras.push(Extra {
                    pos,
                    fault,
                    number,
                    subject,
                    holding,
                    part: 0,
                });
                let (file, rule) = match fault {
                    Fault::PrincipalFieldCount => (FileKind::Principal, Rule::FieldCount),
                    Fault::PrincipalInvalidUtf8 => (FileKind::Principal, Rule::InvalidUtf8),
                    Fault::PrincipalBadAccountNumber => {
                        (FileKind::Principal, Rule::BadAccountNumber)
                    }
                    Fault::PrincipalBadNumber => (FileKind::Principal, Rule::BadNumber),
                    Fault::PrincipalNumberOverflow => (FileKind::Principal, Rule::NumberOverflow),
                    Fault::HoldingFieldCount => (FileKind::Holdings, Rule::FieldCount),
                    Fault::HoldingInvalidUtf8 => (FileKind::Holdings, Rule::InvalidUtf8),
                    Fault::HoldingEmptyField => (FileKind::Holdings, Rule::EmptyField),
                    Fault::HoldingBadAccountNumber => (FileKind::Holdings, Rule::BadAccountNumber),
                    Fault::HoldingUnknownIsin => (FileKind::Holdings, Rule::UnknownIsin),
                    Fault::HoldingBadNumber => (FileKind::Holdings, Rule::BadNumber),
                    Fault::HoldingNumberOverflow => (FileKind::Holdings, Rule::NumberOverflow),
                    Fault::HoldingValuationOverflow => {
                        (FileKind::Holdings, Rule::ValuationOverflow)
                    }
                    _ => {
                        plan.collapse(FileKind::Principal, 1);
                        continue;
                    }
                };
                plan.reject(file, rule, 1);
            }
        }
        for (kind, fault) in (0u64..).zip(FAULT_ACCOUNT_KINDS) {
            for number in 0..faults {
                let subject = kind * faults + number;
                day.draft(Who::Fault(subject), &mut draft);
                let holdings = draft.holdings.len() as u64;
                let holding = rng.random_range(0..day.master.len());
                let pos = rng.random_range(0..=accounts);
                plan.account_extras.push(Extra {
                    pos,
                    fault,
                    number,
                    subject,
                    holding,
                    part: 0,
                });
                match fault {
                    Fault::PrincipalConflict => {
                        plan.reject(FileKind::Principal, Rule::DuplicateConflict, 2);
                        plan.reject(FileKind::Holdings, Rule::AccountWithoutPrincipal, holdings);
                    }
                    Fault::PrincipalOnly => {
                        plan.reject(FileKind::Principal, Rule::AccountWithoutHoldings, 1)
                    }
                    Fault::HoldingNoMajority => {
                        let rows = no_majority_rows(number, day.master.len());
                        plan.reject(FileKind::Holdings, Rule::AttributesNoMajority, rows as u64);
                        plan.reject(FileKind::Principal, Rule::AccountWithoutHoldings, 1);
                    }
                    Fault::HoldingsOnly => {
                        plan.reject(FileKind::Holdings, Rule::AccountWithoutPrincipal, holdings)
                    }
                    _ => {
                        plan.reject(FileKind::Holdings, Rule::TotalAssetsOverflow, 2);
                        plan.reject(FileKind::Principal, Rule::TotalAssetsOverflow, 1);
                    }
                }
            }
        }
        // Stable sorts: extras at one position keep the order they were planned in.
        plan.instrument_extras.sort_by_key(|extra| extra.pos);
        plan.account_extras.sort_by_key(|extra| extra.pos);
        Ok(plan)
    }

    fn reject(&mut self, file: FileKind, rule: Rule, rows: u64) {
        *self
            .rejects
            .entry((file.file_name().to_owned(), rule.as_str().to_owned()))
            .or_default() += rows;
    }

    fn collapse(&mut self, file: FileKind, rows: u64) {
        *self
            .collapsed
            .entry(file.file_name().to_owned())
            .or_default() += rows;
    }

    /// The ISIN an `unknown_isin` row names: alternately one whose instrument row the
    /// instrument rules rejected (the cascade) and one never delivered at all.
    fn unknown_isin(&self, number: u64) -> &str {
        let instrument_faults = self.fault_isins.len() as u64 / 5 * 4;
        let k = if number.is_multiple_of(2) {
            // Conflict, invalid UTF-8, empty field, field count, in that order of preference.
            let j = number / 2;
            4 * (j / 4) + [3, 1, 2, 0][(j % 4) as usize]
        } else {
            instrument_faults + number
        };
        &self.fault_isins[k as usize]
    }
}

/// Holdings rows of a no-majority account: 1 against 1, or 2 against 2 when the master has
/// four instruments for distinct ISINs.
fn no_majority_rows(number: u64, master: usize) -> usize {
    if number.is_multiple_of(2) || master < 4 {
        2
    } else {
        4
    }
}

/// A valid ISIN outside the master: codes 700000.. are never given to master instruments.
fn fault_isin(k: u64) -> Result<String, GenError> {
    let code = 700_000 + (k * 7_919) % 300_000;
    let isin = invest_proto::ids::isin_with_check_digit(&format!("KR7{code:06}00"))?;
    Ok(isin.into_string())
}

/// A name for an instrument row that only a fault uses.
fn fault_instrument(number: u64) -> (String, &'static str) {
    generated_instrument(10_000 + number)
}

/// Invalid UTF-8 as it really arrives: text saved in EUC-KR (approximately "미국주식",
/// "디셈버증권", "원").
const EUC_KR_INSTRUMENT: &[u8] = b"\xB9\xCC\xB1\xB9\xC1\xD6\xBD\xC4";
const EUC_KR_BROKERAGE: &[u8] = b"\xB5\xF0\xBC\xC0\xB9\xF6\xC1\xF5\xB1\xC7";
const EUC_KR_WON: &[u8] = b"\xBF\xF8";

fn full_width_digits(text: &str) -> String {
    text.chars()
        .map(|c| match c.to_digit(10) {
            Some(d) => char::from_u32(0xFF10 + d).unwrap_or(c),
            None => c,
        })
        .collect()
}

fn arabic_indic_digits(text: &str) -> String {
    text.chars()
        .map(|c| match c.to_digit(10) {
            Some(d) => char::from_u32(0x0660 + d).unwrap_or(c),
            None => c,
        })
        .collect()
}

fn thousands(value: i64) -> String {
    let digits = value.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// An amount written the ways people write amounts, none of them `^[0-9]+$`.
fn bad_amount(value: i64, variant: u64) -> Vec<u8> {
    let text = match variant % 8 {
        0 => thousands(value.max(1_000)),
        1 => format!("-{value}"),
        2 => format!("{value}.5"),
        3 => arabic_indic_digits(&value.to_string()),
        4 => format!("{value}원"),
        5 => format!("+{value}"),
        6 => full_width_digits(&value.to_string()),
        _ => format!("{value}e0"),
    };
    text.into_bytes()
}

/// Digits that do not fit in a signed 64-bit integer.
fn overflowing_amount(variant: u64) -> &'static [u8] {
    match variant % 3 {
        0 => b"9223372036854775808",
        1 => b"99999999999999999999",
        _ => b"18446744073709551616",
    }
}

/// An account number mangled the ways real files mangle them.
fn bad_account_number(number: &str, variant: u64) -> Vec<u8> {
    let text = match variant % 6 {
        0 => format!("{}-{}-{}", &number[..3], &number[3..7], &number[7..]),
        1 => number[..5].to_owned(),
        2 => format!("{number:0<21}"),
        3 => format!("{}O{}", &number[..5], &number[6..]),
        4 => full_width_digits(number),
        _ => format!("{} {}", &number[..6], &number[6..]),
    };
    text.into_bytes()
}

/// An ISIN that fails `^[A-Z]{2}[A-Z0-9]{9}[0-9]$` (and is not `CASH`).
fn bad_isin(isin: &str, variant: u64) -> (Vec<u8>, bool) {
    let text = match variant % 8 {
        0 => isin.to_ascii_lowercase(),
        1 => isin[..11].to_owned(),
        2 => format!("{isin}0"),
        3 => format!("{}-{}-{}", &isin[..3], &isin[3..9], &isin[9..]),
        4 => format!("{}X", &isin[..11]),
        5 => format!("KR{}", full_width_digits(&isin[2..])),
        6 => format!("{} {}", &isin[..2], &isin[2..]),
        // The cash row delivered in lower case: named like the cash instrument.
        _ => return (b"cash".to_vec(), true),
    };
    (text.into_bytes(), false)
}

/// The customer name with its last syllable changed, as a typing slip would.
fn typo(name: &str) -> String {
    let mut chars: Vec<char> = name.chars().collect();
    if let Some(last) = chars.last_mut() {
        let code = u32::from(*last);
        // Hangul syllables start at U+AC00: stepping down from above it stays inside.
        let changed = if code > 0xAC00 { code - 1 } else { code + 1 };
        *last = char::from_u32(changed).unwrap_or(*last);
    }
    chars.into_iter().collect()
}

/// The account's attributes changed in one way (`variant`): customer name, brokerage or
/// account name.
fn change_attributes(row: &mut [Vec<u8>], draft: &AccountDraft, variant: u64) {
    match variant % 3 {
        0 => row[CUSTOMER] = typo(&draft.customer).into_bytes(),
        1 => {
            row[BROKERAGE] = BROKERAGES[(draft.brokerage + 1) % BROKERAGES.len()]
                .0
                .as_bytes()
                .to_vec()
        }
        // "계좌14" → "계좌 14": the space is inside the value, trimming keeps it.
        _ => row[ACCOUNT_NAME] = draft.account_name.replacen("계좌", "계좌 ", 1).into_bytes(),
    }
}

fn holding_row(day: &Day, draft: &AccountDraft, holding: usize) -> Vec<Vec<u8>> {
    let held = draft.holdings[holding];
    vec![
        draft.customer.as_bytes().to_vec(),
        BROKERAGES[draft.brokerage].0.as_bytes().to_vec(),
        draft.number.as_bytes().to_vec(),
        draft.account_name.as_bytes().to_vec(),
        day.master[held.position].isin.as_bytes().to_vec(),
        held.price.to_string().into_bytes(),
        held.quantity.to_string().into_bytes(),
    ]
}

fn principal_row(draft: &AccountDraft) -> Vec<Vec<u8>> {
    vec![
        draft.number.as_bytes().to_vec(),
        draft.principal.to_string().into_bytes(),
    ]
}

fn write_row<W: Write>(out: &mut CsvOut<W>, row: &[Vec<u8>]) -> io::Result<()> {
    let fields: Vec<&[u8]> = row.iter().map(Vec::as_slice).collect();
    out.row(&fields)
}

/// Writes the rows of one instrument extra.
pub(super) fn write_instrument_extra<W: Write>(
    day: &Day,
    extra: &Extra,
    out: &mut CsvOut<W>,
) -> io::Result<()> {
    let plan = &day.plan;
    let variant = extra.number;
    if extra.fault == Fault::InstrumentRepeat {
        let row = &day.master[extra.subject as usize];
        return out.row(&[
            row.name.as_bytes(),
            row.isin.as_bytes(),
            row.group.as_bytes(),
        ]);
    }
    let isin = plan.fault_isins[extra.subject as usize].as_bytes().to_vec();
    let (name, group) = fault_instrument(extra.number);
    let (name, group) = (name.into_bytes(), group.as_bytes().to_vec());
    let row: Vec<Vec<u8>> = match extra.fault {
        Fault::InstrumentFieldCount if variant.is_multiple_of(2) => {
            vec![name, isin, group, Vec::new()]
        }
        Fault::InstrumentFieldCount => vec![name, isin],
        Fault::InstrumentInvalidUtf8 => vec![EUC_KR_INSTRUMENT.to_vec(), isin, group],
        Fault::InstrumentEmptyField if variant.is_multiple_of(2) => vec![Vec::new(), isin, group],
        Fault::InstrumentEmptyField => vec![name, isin, b"  ".to_vec()],
        Fault::InstrumentBadIsin => {
            let text = &plan.fault_isins[extra.subject as usize];
            match bad_isin(text, variant) {
                (bad, true) => vec![
                    "현금".as_bytes().to_vec(),
                    bad,
                    "채권 / 현금".as_bytes().to_vec(),
                ],
                (bad, false) => vec![name, bad, group],
            }
        }
        Fault::InstrumentConflict if extra.part == 0 => vec![name, isin, group],
        // The second row differs in the name or in the group.
        Fault::InstrumentConflict if variant.is_multiple_of(2) => {
            let mut other = name;
            other.extend_from_slice("(H)".as_bytes());
            vec![other, isin, group]
        }
        Fault::InstrumentConflict => vec![name, isin, "전세계 주식".as_bytes().to_vec()],
        _ => return Ok(()),
    };
    write_row(out, &row)
}

/// Writes the rows of one account extra (to the holdings file, the principal file or both).
pub(super) fn write_account_extra<H: Write, P: Write>(
    day: &Day,
    extra: &Extra,
    draft: &mut AccountDraft,
    holdings: &mut CsvOut<H>,
    principal: &mut CsvOut<P>,
) -> io::Result<()> {
    let variant = extra.number;
    let fault_account = FAULT_ACCOUNT_KINDS.contains(&extra.fault);
    day.draft(
        if fault_account {
            Who::Fault(extra.subject)
        } else {
            Who::Truth(extra.subject)
        },
        draft,
    );
    let draft = &*draft;
    match extra.fault {
        Fault::PrincipalFieldCount => {
            let mut row = principal_row(draft);
            if variant.is_multiple_of(2) {
                row.push(Vec::new());
            } else {
                row.truncate(1);
            }
            write_row(principal, &row)
        }
        Fault::PrincipalInvalidUtf8 => {
            let mut row = principal_row(draft);
            if variant.is_multiple_of(2) {
                row[1].extend_from_slice(EUC_KR_WON);
            } else {
                // A multi-byte sequence cut after its first byte.
                row[0].push(0xEC);
            }
            write_row(principal, &row)
        }
        Fault::PrincipalBadAccountNumber => {
            let mut row = principal_row(draft);
            row[0] = bad_account_number(&draft.number, variant);
            write_row(principal, &row)
        }
        Fault::PrincipalBadNumber => {
            let mut row = principal_row(draft);
            row[1] = bad_amount(draft.principal, variant);
            write_row(principal, &row)
        }
        Fault::PrincipalNumberOverflow => {
            let mut row = principal_row(draft);
            row[1] = overflowing_amount(variant).to_vec();
            write_row(principal, &row)
        }
        Fault::PrincipalRepeat => write_row(principal, &principal_row(draft)),
        Fault::HoldingFieldCount => {
            let mut row = holding_row(day, draft, extra.holding);
            if variant.is_multiple_of(2) {
                row.push(Vec::new());
            } else {
                row.truncate(6);
            }
            write_row(holdings, &row)
        }
        Fault::HoldingInvalidUtf8 => {
            let mut row = holding_row(day, draft, extra.holding);
            if variant.is_multiple_of(2) {
                // The name cut inside its last character, as a byte limit would.
                row[CUSTOMER].pop();
            } else {
                row[BROKERAGE] = EUC_KR_BROKERAGE.to_vec();
            }
            write_row(holdings, &row)
        }
        Fault::HoldingEmptyField => {
            let mut row = holding_row(day, draft, extra.holding);
            match variant % 3 {
                0 => row[CUSTOMER].clear(),
                1 => row[BROKERAGE] = b"  ".to_vec(),
                _ => row[ACCOUNT_NAME].clear(),
            }
            write_row(holdings, &row)
        }
        Fault::HoldingBadAccountNumber => {
            let mut row = holding_row(day, draft, extra.holding);
            row[NUMBER] = bad_account_number(&draft.number, variant);
            write_row(holdings, &row)
        }
        Fault::HoldingUnknownIsin => {
            let mut row = holding_row(day, draft, extra.holding);
            row[ISIN] = day.plan.unknown_isin(variant).as_bytes().to_vec();
            write_row(holdings, &row)
        }
        Fault::HoldingBadNumber => {
            let mut row = holding_row(day, draft, extra.holding);
            let held = draft.holdings[extra.holding];
            if variant.is_multiple_of(2) {
                row[PRICE] = bad_amount(held.price, variant);
            } else {
                row[QUANTITY] = bad_amount(held.quantity, variant);
            }
            write_row(holdings, &row)
        }
        Fault::HoldingNumberOverflow => {
            let mut row = holding_row(day, draft, extra.holding);
            let column = if variant.is_multiple_of(2) {
                PRICE
            } else {
                QUANTITY
            };
            row[column] = overflowing_amount(variant / 2).to_vec();
            write_row(holdings, &row)
        }
        Fault::HoldingValuationOverflow => {
            let mut row = holding_row(day, draft, extra.holding);
            // Each fits in 64 bits, the product does not.
            let (price, quantity): (&[u8], &[u8]) = if variant.is_multiple_of(2) {
                (b"3037000500", b"3037000500")
            } else {
                (b"1000000000000", b"10000000")
            };
            row[PRICE] = price.to_vec();
            row[QUANTITY] = quantity.to_vec();
            write_row(holdings, &row)
        }
        Fault::HoldingMinority => {
            let mut row = holding_row(day, draft, extra.holding);
            change_attributes(&mut row, draft, variant);
            write_row(holdings, &row)
        }
        Fault::HoldingConflict => {
            let mut row = holding_row(day, draft, extra.holding);
            let held = draft.holdings[extra.holding];
            if variant.is_multiple_of(2) {
                row[QUANTITY] = (held.quantity + 1).to_string().into_bytes();
            } else {
                row[PRICE] = (held.price + 1).to_string().into_bytes();
            }
            write_row(holdings, &row)
        }
        Fault::HoldingRepeat => write_row(holdings, &holding_row(day, draft, extra.holding)),
        Fault::PrincipalConflict => {
            for holding in 0..draft.holdings.len() {
                write_row(holdings, &holding_row(day, draft, holding))?;
            }
            write_row(principal, &principal_row(draft))?;
            let mut other = principal_row(draft);
            other[1] = (draft.principal + 1_000).to_string().into_bytes();
            write_row(principal, &other)
        }
        Fault::PrincipalOnly => write_row(principal, &principal_row(draft)),
        Fault::HoldingsOnly => {
            for holding in 0..draft.holdings.len() {
                write_row(holdings, &holding_row(day, draft, holding))?;
            }
            Ok(())
        }
        Fault::HoldingNoMajority => {
            let mut rng =
                ChaCha8Rng::seed_from_u64(mix(day.seed, mix(EXTRA_DOMAIN, extra.subject)));
            let rows = no_majority_rows(variant, day.master.len());
            for at in 0..rows {
                let position = (extra.holding + at) % day.master.len();
                let mut row = holding_row(day, draft, 0);
                row[ISIN] = day.master[position].isin.as_bytes().to_vec();
                row[PRICE] = rng.random_range(1_000..=15_000i64).to_string().into_bytes();
                row[QUANTITY] = rng.random_range(1..=25i64).to_string().into_bytes();
                if at >= rows / 2 {
                    change_attributes(&mut row, draft, variant);
                }
                write_row(holdings, &row)?;
            }
            write_row(principal, &principal_row(draft))
        }
        Fault::TotalAssetsOverflow => {
            for at in 0..2 {
                let position = (extra.holding + at) % day.master.len();
                let mut row = holding_row(day, draft, 0);
                row[ISIN] = day.master[position].isin.as_bytes().to_vec();
                // 5 * 10^18 each: each valuation fits in 64 bits, their sum does not.
                row[PRICE] = b"5000000000000".to_vec();
                row[QUANTITY] = b"1000000".to_vec();
                write_row(holdings, &row)?;
            }
            let mut row = principal_row(draft);
            row[1] = b"5000000000000000000".to_vec();
            write_row(principal, &row)
        }
        Fault::InstrumentFieldCount
        | Fault::InstrumentInvalidUtf8
        | Fault::InstrumentEmptyField
        | Fault::InstrumentBadIsin
        | Fault::InstrumentConflict
        | Fault::InstrumentRepeat => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use invest_proto::ids::{AccountNumber, Isin};

    #[test]
    fn generate_fault_values_fail_their_rule() {
        for variant in 0..16 {
            for number in ["5736692368320", "280684198921"] {
                let bad = String::from_utf8(bad_account_number(number, variant)).unwrap();
                assert!(AccountNumber::parse(bad.trim()).is_err(), "{bad}");
            }
            for value in [0, 7, 21, 1_911_386] {
                let bad = String::from_utf8(bad_amount(value, variant)).unwrap();
                assert!(!bad.trim().bytes().all(|b| b.is_ascii_digit()), "{bad}");
            }
            let (bad, _) = bad_isin("KR7360750004", variant);
            let bad = String::from_utf8(bad).unwrap();
            assert!(Isin::parse(bad.trim()).is_err(), "{bad}");
        }
        for bytes in [EUC_KR_INSTRUMENT, EUC_KR_BROKERAGE, EUC_KR_WON] {
            assert!(std::str::from_utf8(bytes).is_err());
        }
        assert_eq!(thousands(1_911_386), "1,911,386");
        let slip = typo("이정희");
        assert!(
            slip.starts_with("이정") && slip.chars().count() == 3 && slip != "이정희",
            "{slip}"
        );
    }
}
