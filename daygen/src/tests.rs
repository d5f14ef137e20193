//! Tests of the generator against an independent, deliberately naive reading of
//! `DATASET.md` (whole files in memory), so that the advertised truth and rejects are
//! checked row by row.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use invest_proto::ids::{AccountNumber, Isin};

use super::*;

const INSTRUMENTS_FILE: &str = FileKind::Instruments.file_name();
const HOLDINGS_FILE: &str = FileKind::Holdings.file_name();
const PRINCIPAL_FILE: &str = FileKind::Principal.file_name();
const FILES: [&str; 3] = [INSTRUMENTS_FILE, HOLDINGS_FILE, PRINCIPAL_FILE];

fn opts(accounts: u64, seed: u64, faults: u64, format: CsvFormat) -> GenOptions {
    GenOptions {
        accounts,
        seed,
        faults,
        format,
        ..GenOptions::default()
    }
}

/// What the reference cleaner makes of a delivery folder.
#[derive(Debug, Default)]
struct Cleaned {
    instruments: Vec<GenInstrument>,
    accounts: Vec<GenAccount>,
    rows: BTreeMap<String, u64>,
    rejects: BTreeMap<(String, String), u64>,
    collapsed: BTreeMap<String, u64>,
}

impl Cleaned {
    fn reject(&mut self, file: &str, rule: &str, rows: u64) {
        if rows > 0 {
            *self
                .rejects
                .entry((file.to_owned(), rule.to_owned()))
                .or_default() += rows;
        }
    }
}

/// The data rows of a file (blank lines skipped) with each field trimmed, or the rule that
/// rejects the row at decoding; the fields are put in `columns` order by header name.
fn read(path: &Path, columns: &[(&str, &str)]) -> Vec<Result<Vec<String>, &'static str>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_path(path)
        .unwrap();
    let mut records = reader.byte_records();
    let header = records.next().unwrap().unwrap();
    let header: Vec<String> = header
        .iter()
        .map(|h| std::str::from_utf8(h).unwrap().trim().to_owned())
        .collect();
    let index: Vec<usize> = columns
        .iter()
        .map(|(korean, english)| {
            header
                .iter()
                .position(|h| h == korean || h == english)
                .unwrap()
        })
        .collect();
    let mut rows = Vec::new();
    for record in records {
        let record = record.unwrap();
        if record.iter().all(|field| field.trim_ascii().is_empty()) {
            continue;
        }
        if record.len() != header.len() {
            rows.push(Err("field_count"));
            continue;
        }
        let fields: Option<Vec<&str>> =
            record.iter().map(|f| std::str::from_utf8(f).ok()).collect();
        rows.push(match fields {
            None => Err("invalid_utf8"),
            Some(fields) => Ok(index.iter().map(|&i| fields[i].trim().to_owned()).collect()),
        });
    }
    rows
}

fn amount(text: &str) -> Result<i64, &'static str> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err("bad_number");
    }
    text.parse().map_err(|_| "number_overflow")
}

/// Rule 2: rows with one key collapse when identical and are all rejected otherwise.
fn settle<K: Ord + Clone, R: PartialEq + Clone>(
    out: &mut Cleaned,
    file: &str,
    rows: Vec<(K, R)>,
) -> BTreeMap<K, R> {
    let mut by_key: BTreeMap<K, Vec<R>> = BTreeMap::new();
    for (key, row) in rows {
        by_key.entry(key).or_default().push(row);
    }
    let mut kept = BTreeMap::new();
    for (key, rows) in by_key {
        if rows.iter().all(|row| *row == rows[0]) {
            *out.collapsed.entry(file.to_owned()).or_default() += rows.len() as u64 - 1;
            kept.insert(key, rows[0].clone());
        } else {
            out.reject(file, "duplicate_conflict", rows.len() as u64);
        }
    }
    kept
}

fn clean(dir: &Path) -> Cleaned {
    let mut out = Cleaned::default();
    for file in FILES {
        out.collapsed.insert(file.to_owned(), 0);
    }

    let rows = read(
        &dir.join(INSTRUMENTS_FILE),
        &[
            ("종목명", "name"),
            ("ISIN", "isin"),
            ("자산그룹", "asset_group"),
        ],
    );
    out.rows
        .insert(INSTRUMENTS_FILE.to_owned(), rows.len() as u64);
    let mut valid = Vec::new();
    for row in rows {
        let checked = row.and_then(|f| {
            if f[0].is_empty() {
                Err("empty_field")
            } else if Isin::parse(&f[1]).is_err() {
                Err("bad_isin")
            } else if f[2].is_empty() {
                Err("empty_field")
            } else {
                Ok(f)
            }
        });
        match checked {
            Ok(f) => valid.push((f[1].clone(), f)),
            Err(rule) => out.reject(INSTRUMENTS_FILE, rule, 1),
        }
    }
    let master = settle(&mut out, INSTRUMENTS_FILE, valid);
    out.instruments = master
        .values()
        .map(|f| GenInstrument {
            isin: f[1].clone(),
            name: f[0].clone(),
            asset_group: f[2].clone(),
        })
        .collect();

    let rows = read(
        &dir.join(PRINCIPAL_FILE),
        &[("계좌번호", "account_number"), ("투자원금", "principal")],
    );
    out.rows
        .insert(PRINCIPAL_FILE.to_owned(), rows.len() as u64);
    let mut valid = Vec::new();
    for row in rows {
        let checked = row.and_then(|f| {
            AccountNumber::parse(&f[0]).map_err(|_| "bad_account_number")?;
            Ok((f[0].clone(), amount(&f[1])?))
        });
        match checked {
            Ok(row) => valid.push(row),
            Err(rule) => out.reject(PRINCIPAL_FILE, rule, 1),
        }
    }
    let mut principals = settle(&mut out, PRINCIPAL_FILE, valid);

    let columns = [
        ("고객이름", "customer_name"),
        ("증권사", "brokerage"),
        ("계좌번호", "account_number"),
        ("계좌명", "account_name"),
        ("ISIN", "isin"),
        ("현재가", "current_price"),
        ("보유수량", "quantity"),
    ];
    let rows = read(&dir.join(HOLDINGS_FILE), &columns);
    out.rows.insert(HOLDINGS_FILE.to_owned(), rows.len() as u64);
    let mut by_account: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
    for row in rows {
        let checked = row.and_then(|f| {
            if f[0].is_empty() || f[1].is_empty() {
                return Err("empty_field");
            }
            AccountNumber::parse(&f[2]).map_err(|_| "bad_account_number")?;
            if f[3].is_empty() {
                return Err("empty_field");
            }
            if !master.contains_key(&f[4]) {
                return Err("unknown_isin");
            }
            let price = amount(&f[5])?;
            let quantity = amount(&f[6])?;
            price.checked_mul(quantity).ok_or("valuation_overflow")?;
            Ok(f)
        });
        match checked {
            Ok(f) => by_account.entry(f[2].clone()).or_default().push(f),
            Err(rule) => out.reject(HOLDINGS_FILE, rule, 1),
        }
    }
    let mut loaded = Vec::new();
    for (number, rows) in by_account {
        // Rule 1: a strict majority of the account's rows decides its attributes.
        let mut votes: HashMap<(String, String, String), u64> = HashMap::new();
        for f in &rows {
            *votes
                .entry((f[0].clone(), f[1].clone(), f[3].clone()))
                .or_default() += 1;
        }
        let Some((winner, _)) = votes
            .iter()
            .find(|&(_, &count)| 2 * count > rows.len() as u64)
        else {
            out.reject(HOLDINGS_FILE, "attributes_no_majority", rows.len() as u64);
            continue;
        };
        let winner = winner.clone();
        let (agree, minority): (Vec<_>, Vec<_>) = rows
            .into_iter()
            .partition(|f| (f[0].clone(), f[1].clone(), f[3].clone()) == winner);
        out.reject(HOLDINGS_FILE, "attributes_minority", minority.len() as u64);
        let holdings = settle(
            &mut out,
            HOLDINGS_FILE,
            agree.into_iter().map(|f| (f[4].clone(), f)).collect(),
        );
        if holdings.is_empty() {
            continue;
        }
        // Rule 3 and the total.
        let Some(principal) = principals.remove(&number) else {
            out.reject(
                HOLDINGS_FILE,
                "account_without_principal",
                holdings.len() as u64,
            );
            continue;
        };
        let total = holdings.values().try_fold(0i64, |total, f| {
            let value = amount(&f[5]).ok()?.checked_mul(amount(&f[6]).ok()?)?;
            total.checked_add(value)
        });
        if total.is_none() {
            out.reject(
                HOLDINGS_FILE,
                "total_assets_overflow",
                holdings.len() as u64,
            );
            out.reject(PRINCIPAL_FILE, "total_assets_overflow", 1);
            continue;
        }
        loaded.push(GenAccount {
            account_number: number,
            customer_name: winner.0,
            brokerage: winner.1,
            account_name: winner.2,
            principal,
            holdings: holdings
                .values()
                .map(|f| GenHolding {
                    isin: f[4].clone(),
                    current_price: amount(&f[5]).unwrap(),
                    quantity: amount(&f[6]).unwrap(),
                })
                .collect(),
        });
    }
    out.reject(
        PRINCIPAL_FILE,
        "account_without_holdings",
        principals.len() as u64,
    );
    out.accounts = loaded;
    out
}

/// Checks a written day against the reference cleaner, the truth and its own arithmetic.
fn check_day(opts: &GenOptions) -> GenSummary {
    let dir = tempfile::tempdir().unwrap();
    let summary = write_day(dir.path(), opts).unwrap();
    let cleaned = clean(dir.path());
    assert_eq!(cleaned.rows, summary.rows, "rows");
    assert_eq!(cleaned.rejects, summary.expected_rejects, "rejects");
    assert_eq!(cleaned.collapsed, summary.expected_collapsed, "collapsed");
    assert_eq!(
        cleaned.instruments,
        instruments(opts).unwrap(),
        "instruments"
    );
    let truth: Vec<GenAccount> = accounts(opts).unwrap().collect();
    assert_eq!(cleaned.accounts.len(), truth.len());
    for (got, want) in cleaned.accounts.iter().zip(&truth) {
        assert_eq!(got, want);
    }
    assert_eq!(summary.accounts, truth.len() as u64);
    assert_eq!(
        summary.holdings,
        truth.iter().map(|a| a.holdings.len() as u64).sum::<u64>()
    );
    for file in FILES {
        assert_eq!(
            summary.rows[file],
            summary.loaded(file) + summary.collapsed(file) + summary.rejected(file),
            "{file}: rows = loaded + collapsed + rejected"
        );
    }
    summary
}

fn read_dir(dir: &Path) -> Vec<Vec<u8>> {
    FILES
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect()
}

#[test]
fn generate_is_deterministic() {
    let day = |seed| {
        let dir = tempfile::tempdir().unwrap();
        write_day(dir.path(), &opts(300, seed, 2, CsvFormat::varied())).unwrap();
        read_dir(dir.path())
    };
    let first = day(7);
    assert_eq!(first, day(7));
    let other = day(8);
    for (a, b) in first.iter().zip(&other) {
        assert_ne!(a, b);
    }
}

#[test]
fn generate_clean_days_match_the_truth_in_every_format() {
    for (seed, format) in [CsvFormat::plain(), CsvFormat::sample(), CsvFormat::varied()]
        .into_iter()
        .enumerate()
    {
        let summary = check_day(&opts(500, seed as u64, 0, format));
        assert!(summary.expected_rejects.is_empty());
        assert_eq!(summary.accounts, 500);
    }
    // Large masters, tiny masters, an empty day.
    check_day(&GenOptions {
        instruments: 120,
        ..opts(300, 3, 0, CsvFormat::varied())
    });
    check_day(&GenOptions {
        instruments: 1,
        ..opts(30, 4, 0, CsvFormat::plain())
    });
    check_day(&opts(0, 5, 0, CsvFormat::sample()));
}

#[test]
fn generate_faulty_days_are_exactly_advertised() {
    let rules = [
        "field_count",
        "invalid_utf8",
        "empty_field",
        "bad_isin",
        "bad_account_number",
        "unknown_isin",
        "bad_number",
        "number_overflow",
        "valuation_overflow",
        "attributes_minority",
        "attributes_no_majority",
        "duplicate_conflict",
        "account_without_principal",
        "account_without_holdings",
        "total_assets_overflow",
    ];
    for (faults, format) in [
        (1, CsvFormat::varied()),
        (3, CsvFormat::sample()),
        (17, CsvFormat::varied()),
    ] {
        let options = opts(400, faults, faults, format);
        let summary = check_day(&options);
        let seen: HashSet<&str> = summary
            .expected_rejects
            .keys()
            .map(|(_, rule)| rule.as_str())
            .collect();
        for rule in rules {
            assert!(seen.contains(rule), "{rule} not injected");
        }
        for file in FILES {
            assert!(summary.collapsed(file) >= faults, "{file}: repeats");
        }
    }
    // Four instruments: the 2-against-2 no-majority accounts; many instruments.
    check_day(&GenOptions {
        instruments: 4,
        ..opts(60, 9, 4, CsvFormat::varied())
    });
    check_day(&GenOptions {
        instruments: 40,
        ..opts(60, 10, 4, CsvFormat::plain())
    });
}

#[test]
fn generate_faults_leave_the_rest_of_the_truth_alone() {
    let clean: Vec<GenAccount> = accounts(&opts(200, 11, 0, CsvFormat::plain()))
        .unwrap()
        .collect();
    let faulty: Vec<GenAccount> = accounts(&opts(200, 11, 5, CsvFormat::plain()))
        .unwrap()
        .collect();
    assert_eq!(clean.len(), faulty.len());
    let mut missing = 0;
    for (a, b) in clean.iter().zip(&faulty) {
        assert_eq!(
            (
                &a.account_number,
                &a.customer_name,
                &a.account_name,
                a.principal
            ),
            (
                &b.account_number,
                &b.customer_name,
                &b.account_name,
                b.principal
            )
        );
        assert!(b.holdings.iter().all(|h| a.holdings.contains(h)));
        missing += a.holdings.len() - b.holdings.len();
    }
    assert_eq!(missing, 5, "one holding per conflict");
}

#[test]
fn generate_account_numbers_and_customer_names_are_unique() {
    let options = opts(20_000, 12, 0, CsvFormat::plain());
    let day = Day::new(&options).unwrap();
    let mut owner_of_name: HashMap<String, u64> = HashMap::new();
    let mut accounts_of_customer: HashMap<u64, u64> = HashMap::new();
    let mut previous = String::new();
    let mut short = 0;
    for (index, account) in (0u64..).zip(accounts(&options).unwrap()) {
        let number = &account.account_number;
        assert!(number.len() == 12 || number.len() == 13, "{number}");
        assert!(AccountNumber::parse(number).is_ok());
        assert!(
            *number > previous,
            "ascending and unique: {previous} then {number}"
        );
        short += u64::from(number.len() == 12);
        previous = number.clone();
        let customer = day.truth_customer(index);
        let owner = *owner_of_name
            .entry(account.customer_name.clone())
            .or_insert(customer);
        assert_eq!(
            owner, customer,
            "{} names two customers",
            account.customer_name
        );
        *accounts_of_customer.entry(customer).or_default() += 1;
    }
    assert!(
        (1_000..2_700).contains(&short),
        "about 1 in 11 numbers has 12 digits: {short}"
    );
    let multi = accounts_of_customer.values().filter(|&&n| n > 1).count();
    assert!(accounts_of_customer.values().all(|&n| n <= 3));
    assert!(
        (500..2_000).contains(&multi),
        "{multi} customers with several accounts"
    );
    // Fault accounts use numbers and names of their own.
    let faulty = Day::new(&opts(200, 12, 50, CsvFormat::plain())).unwrap();
    let mut numbers = HashSet::new();
    let mut names = HashSet::new();
    let mut draft = AccountDraft::default();
    for who in (0..200).map(Who::Truth).chain((0..250).map(Who::Fault)) {
        faulty.draft(who, &mut draft);
        assert!(numbers.insert(draft.number.clone()), "{}", draft.number);
        if let Who::Fault(_) = who {
            assert!(names.insert(draft.customer.clone()), "{}", draft.customer);
        }
    }
}

#[test]
fn generate_instruments_have_valid_isins() {
    let master = instruments(&GenOptions {
        instruments: 100,
        ..GenOptions::default()
    })
    .unwrap();
    assert_eq!(master.len(), 100);
    let mut names = HashSet::new();
    for instrument in &master {
        let isin = Isin::parse(&instrument.isin).unwrap();
        assert!(names.insert(&instrument.name));
        if REAL_INSTRUMENTS
            .iter()
            .any(|real| real.1 == instrument.isin)
        {
            continue;
        }
        assert!(isin.check_digit_ok(), "{}", instrument.isin);
        assert!(isin.is_cash() || instrument.isin.starts_with("KR7"));
    }
    // The sample's master, wrong check digit included.
    let sample = instruments(&GenOptions::default()).unwrap();
    assert_eq!(sample.len(), 14);
    assert!(sample.iter().any(|i| i.isin == "KR7195980002"));
    assert!(
        sample
            .iter()
            .any(|i| i.isin == "CASH" && i.name == "현금" && i.asset_group == "채권 / 현금")
    );
    assert_eq!(
        instruments(&GenOptions {
            instruments: 3,
            ..GenOptions::default()
        })
        .unwrap()
        .len(),
        3
    );
}

#[test]
fn generate_default_day_looks_like_the_sample() {
    let truth: Vec<GenAccount> = accounts(&GenOptions {
        accounts: 2_000,
        ..GenOptions::default()
    })
    .unwrap()
    .collect();
    let holdings: usize = truth.iter().map(|a| a.holdings.len()).sum();
    let mean = holdings as f64 / truth.len() as f64;
    assert!((12.5..=14.0).contains(&mean), "{mean} holdings per account");
    let mut zero_quantities = 0;
    let mut names = HashSet::new();
    for account in &truth {
        assert!(names.insert(account.account_name.clone()));
        assert!(account.account_name.starts_with("계좌"));
        assert!(BROKERAGES.iter().any(|b| b.0 == account.brokerage));
        let total: i64 = account
            .holdings
            .iter()
            .map(|h| h.current_price * h.quantity)
            .sum();
        assert!(
            account.principal == 0
                || (account.principal * 100 >= total * 95
                    && account.principal * 100 <= total * 102)
        );
        for holding in &account.holdings {
            if holding.isin == "CASH" {
                assert_eq!(holding.quantity, 1);
                assert!((10_000..=25_000).contains(&holding.current_price));
            } else {
                assert!((1_000..=15_000).contains(&holding.current_price));
                assert!((0..=25).contains(&holding.quantity));
                zero_quantities += usize::from(holding.quantity == 0);
            }
        }
        let isins: Vec<&String> = account.holdings.iter().map(|h| &h.isin).collect();
        assert!(isins.windows(2).all(|w| w[0] < w[1]), "ascending ISIN");
    }
    assert!(zero_quantities > 0);
    let brokerages: HashSet<&str> = truth.iter().map(|a| a.brokerage.as_str()).collect();
    assert!(brokerages.len() >= 4);
    // The file lists accounts in another order than the truth.
    let dir = tempfile::tempdir().unwrap();
    write_day(dir.path(), &GenOptions::default()).unwrap();
    let principal = std::fs::read(dir.path().join(PRINCIPAL_FILE)).unwrap();
    assert!(
        principal.starts_with(b"\xEF\xBB\xBF\xEA\xB3\x84\xEC\xA2\x8C\xEB\xB2\x88\xED\x98\xB8,")
    );
    assert!(principal.windows(2).any(|w| w == b"\r\n") && !principal.ends_with(b"\n"));
    let holdings = std::fs::read_to_string(dir.path().join(HOLDINGS_FILE)).unwrap();
    assert!(holdings.starts_with(
        "\"고객이름\",\"증권사\",\"계좌번호\",\"계좌명\",\"ISIN\",\"현재가\",\"보유수량\"\n"
    ));
    assert!(holdings.lines().nth(1).unwrap().contains("\"계좌1\""));
}

#[test]
fn generate_refuses_impossible_options() {
    assert!(
        accounts(&GenOptions {
            instruments: 0,
            ..GenOptions::default()
        })
        .is_err()
    );
    assert!(accounts(&opts(0, 1, 1, CsvFormat::plain())).is_err());
    assert!(
        accounts(&GenOptions {
            instruments: 1,
            ..opts(50, 1, 1, CsvFormat::plain())
        })
        .is_err()
    );
    // Three exclusive faults per kind need 3 x 20 accounts with two holdings.
    assert!(accounts(&opts(50, 1, 20, CsvFormat::plain())).is_err());
    assert!(accounts(&opts(50, 1, 5, CsvFormat::plain())).is_ok());
}

/// `cargo test -p invest-daygen --lib --release generate_throughput -- --ignored --nocapture`
#[test]
#[ignore = "writes a million accounts; run in release mode"]
fn generate_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let summary = write_day(dir.path(), &opts(1_000_000, 1, 10, CsvFormat::varied())).unwrap();
    let elapsed = started.elapsed();
    let rows: u64 = summary.rows.values().sum();
    println!(
        "{summary}{rows} rows in {elapsed:?}: {:.0} rows/s",
        rows as f64 / elapsed.as_secs_f64()
    );
}
