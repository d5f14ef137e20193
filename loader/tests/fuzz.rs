//! Property-based fuzzing of the reader and the cleaner: random mutations of a valid
//! generated day (bytes inserted and deleted, quotes, line breaks, NUL, CR, BOM, very long
//! runs, truncation, duplicated lines) never make cleaning panic, and whatever comes out
//! keeps the invariants: per file, lines = 1 header + blank + rows and rows = loaded +
//! collapsed + rejected; every loaded field passes the servers' text check; cleaning the
//! same input twice gives the same day and the same report.
//!
//! 48 cases by default, in seconds; `INVEST_FUZZ_CASES=5000 cargo test -p loader --test
//! fuzz` runs a longer campaign.

use std::path::Path;

use invest_daygen::{CsvFormat, GenOptions};
use invest_proto::ids::{MAX_TEXT_BYTES, check_text};
use loader::pipeline::{CleanOptions, clean_day};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};

const FILES: [&str; 3] = [
    "asset_group_info_set.csv",
    "account_basic_info_set.csv",
    "account_asset_info_set.csv",
];

/// A line limit small enough for the long runs below to cross it.
const MAX_LINE_BYTES: usize = 4096;

#[derive(Debug, Clone)]
enum Mutation {
    Insert(Vec<u8>),
    Delete(usize),
    Quote,
    LineBreak(bool),
    Nul,
    Cr,
    Bom,
    LongRun(u8, usize),
    Truncate,
    DuplicateLine,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 1..8).prop_map(Mutation::Insert),
        (1usize..64).prop_map(Mutation::Delete),
        Just(Mutation::Quote),
        any::<bool>().prop_map(Mutation::LineBreak),
        Just(Mutation::Nul),
        Just(Mutation::Cr),
        Just(Mutation::Bom),
        (
            prop_oneof![Just(b'"'), Just(b','), Just(b'a'), Just(b' '), Just(0xEAu8)],
            1usize..20_000
        )
            .prop_map(|(byte, len)| Mutation::LongRun(byte, len)),
        Just(Mutation::Truncate),
        Just(Mutation::DuplicateLine),
    ]
}

/// Applies a mutation at `at` (a fraction of the file in 1/65536).
fn apply(bytes: &mut Vec<u8>, mutation: &Mutation, at: u16) {
    let pos = bytes.len() * usize::from(at) / 65_536;
    match mutation {
        Mutation::Insert(inserted) => {
            bytes.splice(pos..pos, inserted.iter().copied());
        }
        Mutation::Delete(len) => {
            let end = (pos + len).min(bytes.len());
            bytes.drain(pos..end);
        }
        Mutation::Quote => bytes.insert(pos, b'"'),
        Mutation::LineBreak(crlf) => {
            let inserted: &[u8] = if *crlf { b"\r\n" } else { b"\n" };
            bytes.splice(pos..pos, inserted.iter().copied());
        }
        Mutation::Nul => bytes.insert(pos, 0),
        Mutation::Cr => bytes.insert(pos, b'\r'),
        Mutation::Bom => {
            bytes.splice(pos..pos, b"\xEF\xBB\xBF".iter().copied());
        }
        Mutation::LongRun(byte, len) => {
            bytes.splice(pos..pos, std::iter::repeat_n(*byte, *len));
        }
        Mutation::Truncate => bytes.truncate(pos),
        Mutation::DuplicateLine => {
            let start = bytes[..pos]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |at| at + 1);
            let end = bytes[pos..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(bytes.len(), |at| pos + at + 1);
            let line = bytes[start..end].to_vec();
            bytes.splice(end..end, line);
        }
    }
}

/// The three files of a valid generated day (some faults in it, so that every rule is in
/// play before the mutations).
fn base_day() -> [Vec<u8>; 3] {
    let dir = tempfile::tempdir().unwrap();
    invest_daygen::write_day(
        dir.path(),
        &GenOptions {
            accounts: 40,
            seed: 17,
            faults: 1,
            format: CsvFormat::varied(),
            ..GenOptions::default()
        },
    )
    .unwrap();
    FILES.map(|name| std::fs::read(dir.path().join(name)).unwrap())
}

fn options(sort_budget_bytes: usize) -> CleanOptions {
    CleanOptions {
        max_line_bytes: MAX_LINE_BYTES,
        sort_budget_bytes,
        ..CleanOptions::default()
    }
}

fn check_day(dir: &Path, sort_budget_bytes: usize) -> Result<(), TestCaseError> {
    let first = clean_day(dir, &options(sort_budget_bytes));
    let second = clean_day(dir, &options(sort_budget_bytes));
    let ((day, report), (again, report_again)) = match (first, second) {
        (Ok(first), Ok(second)) => (first, second),
        // A delivery that cannot be read at all (say, a header broken) is an input error,
        // the same one both times.
        (Err(first), Err(second)) => {
            prop_assert_eq!(first.to_string(), second.to_string());
            return Ok(());
        }
        (first, second) => {
            return Err(TestCaseError::fail(format!(
                "two cleanings disagree: {:?} / {:?}",
                first.err(),
                second.err()
            )));
        }
    };
    prop_assert_eq!(&day.digest, &again.digest);
    prop_assert_eq!(&report, &report_again);
    if let Err(violation) = report.check_accounting() {
        return Err(TestCaseError::fail(violation));
    }
    for file in &report.files {
        let c = &file.counts;
        prop_assert_eq!(c.lines, 1 + c.blank + c.read, "{:?}", file);
        prop_assert_eq!(c.read, c.loaded + c.collapsed + c.rejected, "{:?}", file);
    }
    let text_ok = |text: &str| check_text(text, MAX_TEXT_BYTES).is_ok() && !text.is_empty();
    for instrument in &day.instruments {
        prop_assert!(text_ok(&instrument.name), "{:?}", instrument);
        prop_assert!(text_ok(&instrument.asset_group), "{:?}", instrument);
        prop_assert!(text_ok(&instrument.isin), "{:?}", instrument);
    }
    let mut accounts = 0;
    for account in day.accounts().unwrap() {
        let account = account.unwrap();
        accounts += 1;
        for field in [
            &account.account_number,
            &account.customer_name,
            &account.brokerage,
            &account.account_name,
        ] {
            prop_assert!(text_ok(field), "{:?}", account);
        }
        prop_assert!(!account.holdings.is_empty());
    }
    prop_assert_eq!(accounts, day.account_count);
    Ok(())
}

fn cases() -> u32 {
    std::env::var("INVEST_FUZZ_CASES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(48)
}

proptest! {
    #![proptest_config(Config {
        cases: cases(),
        // Shrinking stops in bounded time; failures are printed, not written to the tree.
        max_shrink_iters: 256,
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..Config::default()
    })]

    #[test]
    fn mutated_days_keep_the_invariants(
        mutations in proptest::collection::vec((0usize..3, mutation(), any::<u16>()), 1..8),
        spill in any::<bool>(),
    ) {
        let mut files = base_day();
        for (file, mutation, at) in &mutations {
            apply(&mut files[*file], mutation, *at);
        }
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in FILES.iter().zip(&files) {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        check_day(dir.path(), if spill { 2 << 10 } else { 64 << 20 })?;
    }
}
