//! The cleaner against the generator: every fault the generator injects is rejected by
//! exactly the rule it was built to break, every identical copy collapses, and what survives
//! is exactly the generator's truth, whatever the CSV style and whether the sort spills.

use std::collections::BTreeMap;

use invest_daygen::{CsvFormat, GenOptions};
use loader::pipeline::{CleanOptions, clean_day};

fn check(options: GenOptions, sort_budget_bytes: usize) {
    let dir = tempfile::tempdir().unwrap();
    let written = invest_daygen::write_day(dir.path(), &options).unwrap();
    let (day, report) = clean_day(
        dir.path(),
        &CleanOptions {
            sort_budget_bytes,
            ..CleanOptions::default()
        },
    )
    .unwrap();

    let mut rejected: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut collapsed: BTreeMap<String, u64> = BTreeMap::new();
    for file in &report.files {
        for (rule, n) in &file.counts.rejected_by_rule {
            rejected.insert(
                (file.file.file_name().to_owned(), rule.as_str().to_owned()),
                *n,
            );
        }
        if file.counts.collapsed > 0 {
            collapsed.insert(file.file.file_name().to_owned(), file.counts.collapsed);
        }
        assert!(file.counts.balanced(), "{:?}", file);
    }
    let expected_collapsed: BTreeMap<String, u64> = written
        .expected_collapsed
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    assert_eq!(
        rejected, written.expected_rejects,
        "rejects per (file, rule)"
    );
    assert_eq!(collapsed, expected_collapsed, "collapsed rows per file");

    let instruments: Vec<_> = invest_daygen::instruments(&options)
        .unwrap()
        .into_iter()
        .map(|i| (i.isin, i.name, i.asset_group))
        .collect();
    let cleaned_instruments: Vec<_> = day
        .instruments
        .iter()
        .map(|i| (i.isin.clone(), i.name.clone(), i.asset_group.clone()))
        .collect();
    assert_eq!(cleaned_instruments, instruments);

    let mut truth = invest_daygen::accounts(&options).unwrap();
    let mut count = 0;
    for account in day.accounts().unwrap() {
        let account = account.unwrap();
        let expected = truth.next().expect("no more accounts in the truth");
        assert_eq!(
            (
                &account.account_number,
                &account.customer_name,
                &account.brokerage,
                &account.account_name,
                account.principal
            ),
            (
                &expected.account_number,
                &expected.customer_name,
                &expected.brokerage,
                &expected.account_name,
                expected.principal
            )
        );
        let holdings: Vec<_> = account
            .holdings
            .iter()
            .map(|h| (h.isin.as_str(), h.quantity, h.current_price))
            .collect();
        let expected: Vec<_> = expected
            .holdings
            .iter()
            .map(|h| (h.isin.as_str(), h.quantity, h.current_price))
            .collect();
        assert_eq!(holdings, expected, "holdings of {}", account.account_number);
        count += 1;
    }
    assert!(
        truth.next().is_none(),
        "the truth has more accounts than were cleaned"
    );
    assert_eq!(count, options.accounts);
    assert_eq!(day.account_count, options.accounts);
}

#[test]
fn faults_of_every_kind_are_rejected_by_their_rule() {
    for (seed, format) in [
        (1, CsvFormat::sample()),
        (2, CsvFormat::plain()),
        (3, CsvFormat::varied()),
    ] {
        check(
            GenOptions {
                accounts: 120,
                seed,
                faults: 2,
                format,
                ..GenOptions::default()
            },
            pipeline_default(),
        );
    }
}

#[test]
fn a_clean_day_loads_whole() {
    check(
        GenOptions {
            accounts: 300,
            seed: 9,
            instruments: 40,
            ..GenOptions::default()
        },
        pipeline_default(),
    );
}

#[test]
fn spilling_the_sort_changes_nothing() {
    check(
        GenOptions {
            accounts: 400,
            seed: 5,
            faults: 3,
            format: CsvFormat::varied(),
            ..GenOptions::default()
        },
        16 * 1024,
    );
}

fn pipeline_default() -> usize {
    loader::pipeline::DEFAULT_SORT_BUDGET
}
