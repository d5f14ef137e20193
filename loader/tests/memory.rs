//! The loader's memory bound ([`loader::pipeline::memory_bound`], the README's formula)
//! holds on hostile input: the real binary reads a delivery with a 50 MB line, and one whose
//! holdings file is a 64 MiB line with no end, and its peak resident memory (`ru_maxrss` of
//! the child, from `wait4`) stays under the bound computed from the settings it ran with;
//! the rejects file holds the cut raw text, not the line.

use std::{
    fs::File,
    io::{BufWriter, Write},
    path::Path,
    process::{Command, Stdio},
};

use loader::pipeline::{CleanOptions, memory_bound};

const INSTRUMENTS: &str = "종목명,ISIN,자산그룹\n현금,CASH,현금\n";
const PRINCIPAL: &str = "계좌번호,투자원금\n111111,1000\n222222,2000\n";
const HEADER: &str = "고객이름,증권사,계좌번호,계좌명,ISIN,현재가,보유수량\n";

/// Settings small enough that a line held in memory (or copied a few times) would show.
const SORT_MIB: usize = 8;
const MAX_INSTRUMENTS: u64 = 1_000;
const MAX_HOLDINGS: usize = 1_000;

fn bound() -> u64 {
    memory_bound(&CleanOptions {
        sort_budget_bytes: SORT_MIB << 20,
        max_instruments: MAX_INSTRUMENTS,
        max_holdings_per_account: MAX_HOLDINGS,
        ..CleanOptions::default()
    })
}

/// Writes `len` bytes of a repeated Hangul name (a field that never ends).
fn write_run(out: &mut impl Write, len: usize) {
    let chunk = "가".repeat(1 << 16); // 192 KiB
    let mut left = len;
    while left >= chunk.len() {
        out.write_all(chunk.as_bytes()).unwrap();
        left -= chunk.len();
    }
    out.write_all(&b"x".repeat(left)).unwrap();
}

fn delivery(dir: &Path, holdings: impl FnOnce(&mut BufWriter<File>)) {
    std::fs::write(dir.join("asset_group_info_set.csv"), INSTRUMENTS).unwrap();
    std::fs::write(dir.join("account_basic_info_set.csv"), PRINCIPAL).unwrap();
    let mut out = BufWriter::new(File::create(dir.join("account_asset_info_set.csv")).unwrap());
    holdings(&mut out);
    out.flush().unwrap();
}

/// Runs `loader validate` and returns its exit code and peak RSS in bytes.
fn validate(dir: &Path, rejects: &Path) -> (i32, u64) {
    let child = Command::new(env!("CARGO_BIN_EXE_loader"))
        .args(["validate", dir.to_str().unwrap(), "--rejects"])
        .arg(rejects)
        .args(["--sort-memory-mib", &SORT_MIB.to_string()])
        .args(["--max-instruments", &MAX_INSTRUMENTS.to_string()])
        .args(["--max-holdings-per-account", &MAX_HOLDINGS.to_string()])
        .env_remove("LOADER_PORTFOLIO_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = i32::try_from(child.id()).unwrap();
    let mut status = 0;
    // SAFETY: rusage is plain old data, zeroed is a valid value; wait4 fills it for the
    // child we spawned (and reaps it, so `child` must not be waited for again).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid);
    std::mem::forget(child);
    assert!(
        libc::WIFEXITED(status),
        "the loader did not exit normally: {status}"
    );
    // Linux reports ru_maxrss in KiB.
    (
        libc::WEXITSTATUS(status),
        u64::try_from(usage.ru_maxrss).unwrap() * 1024,
    )
}

fn rejects(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.len() < 16 << 10, "{} bytes of rejects", text.len());
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn a_50_mb_line_stays_within_the_bound() {
    let work = tempfile::tempdir().unwrap();
    let line = 50_000_000;
    delivery(work.path(), |out| {
        out.write_all(HEADER.as_bytes()).unwrap();
        out.write_all("김,A증권,111111,계좌1,CASH,1,100\n".as_bytes())
            .unwrap();
        out.write_all("김,A증권,111111,".as_bytes()).unwrap();
        write_run(out, line - "김,A증권,111111,".len());
        out.write_all(b"\n").unwrap();
        out.write_all("이,B증권,222222,계좌1,CASH,1,2000\n".as_bytes())
            .unwrap();
    });
    let path = work.path().join("rejects.jsonl");
    let (code, peak) = validate(work.path(), &path);
    let bound = bound();
    assert!(
        peak < bound,
        "peak RSS {peak} bytes is above the documented bound {bound}"
    );
    // One of four rows rejected: above the default 10% limit.
    assert_eq!(code, 4);
    let rejects = rejects(&path);
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    assert_eq!(rejects[0]["rule"], "line_too_long");
    assert_eq!(rejects[0]["line"], 3);
    let raw = rejects[0]["raw"].as_str().unwrap();
    assert!(
        raw.len() <= 256 && raw.starts_with("김,A증권,111111,가가"),
        "{raw}"
    );
    let detail = rejects[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("is {line} bytes long")),
        "{detail}"
    );
}

#[test]
fn an_endless_64_mib_line_stays_within_the_bound() {
    let work = tempfile::tempdir().unwrap();
    delivery(work.path(), |out| {
        out.write_all(HEADER.as_bytes()).unwrap();
        write_run(out, 64 << 20);
    });
    let path = work.path().join("rejects.jsonl");
    let (code, peak) = validate(work.path(), &path);
    let bound = bound();
    assert!(
        peak < bound,
        "peak RSS {peak} bytes is above the documented bound {bound}"
    );
    assert_eq!(code, 4);
    let rejects = rejects(&path);
    let rules: Vec<&str> = rejects
        .iter()
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    assert_eq!(
        rules,
        [
            "line_too_long",
            "account_without_holdings",
            "account_without_holdings"
        ]
    );
    assert!(rejects[0]["raw"].as_str().unwrap().len() <= 256);
}

#[test]
fn the_bound_is_a_formula_of_the_settings() {
    let defaults = memory_bound(&CleanOptions::default());
    // About 463 MiB with the defaults: within the CronJob's 512 MiB limit.
    assert!(defaults < 480 << 20 && defaults > 440 << 20, "{defaults}");
    assert!(bound() < 128 << 20, "{}", bound());
}
