//! The command line: `load`, `validate`, `token`, `gen`. Each command returns an [`Exit`]
//! code; every code is documented in the README and in `loader --help`.

use std::{
    io::IsTerminal as _,
    path::{Path, PathBuf},
    process::ExitCode,
    str::FromStr as _,
    sync::Arc,
    time::Duration,
};

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use invest_proto::auth::JwtSecretArgs;
use prost_types::Timestamp;

use crate::{
    generate::{self, CsvFormat, GenError, GenOptions},
    pipeline::{self, CleanOptions, CleanedDay, Phase, Progress, report::Ratio, report::Report},
    push::{self, PushError},
    summary,
};

const EXIT_CODES: &str = "\
Exit codes:
  0  done: the day was loaded (or was already loaded), or validated within the reject ratio
  1  unexpected failure (a bug or the machine); see the log
  2  usage or configuration error (flags, JWT secret, URLs)
  3  the delivery cannot be read (missing file or column, unreadable folder)
  4  too many rejected rows (above --max-reject-ratio) or nothing to load: nothing was pushed
  5  a service refused the day or could not be reached: the summary says which; re-running
     the same day is safe and repairs it";

/// The daily loader of the invest services.
#[derive(Debug, Parser)]
#[command(name = "loader", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// Log format (logs go to stderr; summaries to stdout).
    #[arg(long, env = "LOADER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// JSON objects, for log collectors.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Clean a delivery folder and stream it to portfolio-svc (snapshot) and deposit-svc
    /// (account directory).
    Load(LoadArgs),
    /// Clean a delivery folder and report, pushing nothing.
    Validate(CleanArgs),
    /// Print a JWT signed with the configured secret, for grpcurl.
    Token(TokenArgs),
    /// Write a synthetic delivery in the exact format.
    Gen(GenArgs),
    /// Print the phase-2 signature of a deposit: lowercase hex BLAKE3 of
    /// account_number + customer_name + amount (same as `printf '%s' … | b3sum`).
    Sign(SignArgs),
}

/// `loader sign`.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// Account number as given in RegisterDeposit.
    #[arg(long)]
    pub account: String,
    /// Customer name as given in RegisterDeposit.
    #[arg(long)]
    pub name: String,
    /// Amount in won as given in RegisterDeposit.
    #[arg(long)]
    pub amount: i64,
}

/// What cleaning needs.
#[derive(Debug, Args)]
pub struct CleanArgs {
    /// The delivery folder (asset_group_info_set.csv, account_asset_info_set.csv,
    /// account_basic_info_set.csv).
    pub dir: PathBuf,
    /// Write every rejected row here as JSON Lines (file, line, rule, detail, raw).
    #[arg(long, value_name = "FILE")]
    pub rejects: Option<PathBuf>,
    /// Above this share of rejected rows nothing is pushed (protects yesterday's good data):
    /// a decimal (0.1), a percentage (10%) or a fraction (1/10).
    #[arg(long, default_value = "0.1", value_parser = parse_ratio)]
    pub max_reject_ratio: Ratio,
    /// Also write the report as JSON here.
    #[arg(long, value_name = "FILE")]
    pub report_json: Option<PathBuf>,
    /// Folder for temporary files (sort runs, the cleaned day); the system's by default.
    #[arg(long, value_name = "DIR")]
    pub scratch_dir: Option<PathBuf>,
    /// Memory the sort may use before spilling to the scratch folder, in MiB.
    #[arg(long, default_value_t = 64, value_name = "MIB")]
    pub sort_memory_mib: usize,
}

/// `loader load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The cleaning options.
    #[command(flatten)]
    pub clean: CleanArgs,
    /// portfolio-svc.
    #[arg(
        long,
        env = "LOADER_PORTFOLIO_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub portfolio_url: String,
    /// deposit-svc (receives the account directory).
    #[arg(
        long,
        env = "LOADER_DEPOSIT_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    pub deposit_url: String,
    /// The moment the delivery describes (RFC 3339); now by default.
    #[arg(long, value_parser = parse_timestamp)]
    pub as_of: Option<Timestamp>,
    /// Instead of --as-of: the daily cut-off as local time and UTC offset, e.g.
    /// "04:00+09:00"; as_of is its latest occurrence (today's, or yesterday's if it has not
    /// come yet). For a scheduled job, which cannot compute dates.
    #[arg(long, value_parser = parse_cutoff, conflicts_with = "as_of")]
    pub cutoff: Option<Cutoff>,
    /// Holdings per streamed part.
    #[arg(long, default_value_t = 20_000)]
    pub batch_holdings: usize,
    /// Attempts per service when it is unreachable or overloaded.
    #[arg(long, default_value_t = 3)]
    pub attempts: u32,
    /// The shared JWT secret (the loader mints its own `ingest:write` token).
    #[command(flatten)]
    pub jwt: JwtSecretArgs,
}

/// `loader token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The `sub` claim: a customer name (e.g. 류영길) or a service name.
    #[arg(long)]
    pub sub: String,
    /// Space-separated scopes, e.g. "accounts:read deposits:write".
    #[arg(long)]
    pub scope: String,
    /// Lifetime, e.g. 1h, 30m.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// The shared JWT secret.
    #[command(flatten)]
    pub jwt: JwtSecretArgs,
}

/// `loader gen`.
#[derive(Debug, Args)]
pub struct GenArgs {
    /// Folder to write the three files into (created if missing).
    pub dir: PathBuf,
    /// Accounts that must load.
    #[arg(long, default_value_t = 50)]
    pub accounts: u64,
    /// Seed: the same seed and options give byte-identical files.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Instruments in the master.
    #[arg(long, default_value_t = 14)]
    pub instruments: usize,
    /// Faults of each kind to inject (0: a clean day).
    #[arg(long, default_value_t = 0)]
    pub faults: u64,
    /// CSV style: `sample` mimics the real delivery (BOM, CRLF, quoting), `plain` is the
    /// simplest, `varied` mixes headers, column orders, blank lines and padding.
    #[arg(long, value_enum, default_value_t = GenFormat::Sample)]
    pub format: GenFormat,
}

/// The CSV style presets of `loader gen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GenFormat {
    /// Like the real sample.
    Sample,
    /// Korean headers, LF, no BOM, quoting only when needed.
    Plain,
    /// English and Korean headers, reversed columns, blank lines, padding.
    Varied,
}

fn parse_ratio(text: &str) -> Result<Ratio, String> {
    text.parse::<Ratio>().map_err(|e| e.to_string())
}

/// A daily cut-off: minutes after local midnight, and the local offset from UTC in minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutoff {
    minute_of_day: i64,
    offset_minutes: i64,
}

const MINUTE: i64 = 60_000_000;
const DAY: i64 = 24 * 60 * MINUTE;

impl Cutoff {
    /// The latest cut-off at or before `now` (microseconds since the epoch).
    pub fn latest_at_or_before(&self, now: i64) -> i64 {
        let offset = self.offset_minutes * MINUTE;
        let local = now + offset;
        let mut cut = local.div_euclid(DAY) * DAY + self.minute_of_day * MINUTE;
        if cut > local {
            cut -= DAY;
        }
        cut - offset
    }
}

fn parse_cutoff(text: &str) -> Result<Cutoff, String> {
    let invalid = || {
        format!(
            "expected HH:MM followed by a UTC offset, such as 04:00+09:00 or 21:30Z; got {text:?}"
        )
    };
    let hh_mm = |t: &str| -> Option<i64> {
        let (h, m) = t.split_once(':')?;
        let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
        ((0..24).contains(&h) && (0..60).contains(&m)).then_some(h * 60 + m)
    };
    let (time, offset) = if let Some(time) = text.strip_suffix('Z') {
        (time, 0)
    } else {
        let at = text.rfind(['+', '-']).ok_or_else(invalid)?;
        let sign = if text[at..].starts_with('-') { -1 } else { 1 };
        (
            &text[..at],
            sign * hh_mm(&text[at + 1..]).ok_or_else(invalid)?,
        )
    };
    Ok(Cutoff {
        minute_of_day: hh_mm(time).ok_or_else(invalid)?,
        offset_minutes: offset,
    })
}

fn parse_timestamp(text: &str) -> Result<Timestamp, String> {
    Timestamp::from_str(text)
        .map_err(|e| format!("expected RFC 3339 such as 2026-11-23T06:00:00+09:00: {e}"))
}

/// A process exit code (see `EXIT_CODES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0.
    Ok,
    /// 1.
    Unexpected,
    /// 2.
    Usage,
    /// 3.
    Input,
    /// 4.
    Rejected,
    /// 5.
    PushFailed,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(match exit {
            Exit::Ok => 0,
            Exit::Unexpected => 1,
            Exit::Usage => 2,
            Exit::Input => 3,
            Exit::Rejected => 4,
            Exit::PushFailed => 5,
        })
    }
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Exit {
    match cli.command {
        Command::Load(args) => load(args).await,
        Command::Validate(args) => validate(args).await,
        Command::Token(args) => token(&args),
        Command::Gen(args) => gen_day(&args).await,
        Command::Sign(args) => {
            println!("{}", signature(&args.account, &args.name, args.amount));
            Exit::Ok
        }
    }
}

fn fail(exit: Exit, message: impl std::fmt::Display) -> Exit {
    eprintln!("loader: {message}");
    exit
}

/// Progress on a terminal, log lines otherwise.
struct Feedback {
    bar: Option<ProgressBar>,
}

impl Feedback {
    fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} {msg:28} [{bar:40}] {percent:>3}% {elapsed}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar
        });
        Self { bar }
    }

    fn clean_progress(&self) -> pipeline::ProgressFn {
        let bar = self.bar.clone();
        let last_logged = Arc::new(std::sync::Mutex::new((String::new(), 0u64)));
        Arc::new(move |event: Progress| {
            let (label, done, total) = match event {
                Progress::Phase(phase) => {
                    let label = match phase {
                        Phase::Reading(file) => format!("reading {}", file.file_name()),
                        Phase::Sorting => "sorting".to_owned(),
                        Phase::Settling => "applying the set rules".to_owned(),
                        Phase::Done => "cleaned".to_owned(),
                    };
                    if bar.is_none() {
                        tracing::info!("{label}");
                    }
                    if let Some(bar) = &bar {
                        bar.set_message(label);
                        bar.set_position(0);
                    }
                    return;
                }
                Progress::Read { file, bytes, total } => {
                    (format!("reading {}", file.file_name()), bytes, total)
                }
                Progress::Settled { rows, total } => {
                    ("applying the set rules".to_owned(), rows, total)
                }
            };
            match &bar {
                Some(bar) => {
                    bar.set_length(total.max(1));
                    bar.set_position(done);
                }
                None => {
                    // Plain logs: one line per tenth.
                    let tenth = done.saturating_mul(10).checked_div(total).unwrap_or(10);
                    let mut last = last_logged.lock().unwrap_or_else(|p| p.into_inner());
                    if last.0 != label || tenth > last.1 {
                        tracing::info!("{label}: {}%", tenth * 10);
                        *last = (label, tenth);
                    }
                }
            }
        })
    }

    fn push_progress(&self, total: u64) -> push::PushProgress {
        let bar = self.bar.clone();
        if let Some(bar) = &bar {
            bar.set_message("streaming to portfolio-svc");
            bar.set_length(total.max(1));
            bar.set_position(0);
        }
        let last = Arc::new(std::sync::atomic::AtomicU64::new(0));
        Arc::new(move |sent: u64| match &bar {
            Some(bar) => bar.set_position(sent),
            None => {
                let tenth = sent.saturating_mul(10).checked_div(total).unwrap_or(10);
                if tenth > last.swap(tenth, std::sync::atomic::Ordering::Relaxed) {
                    tracing::info!("streaming to portfolio-svc: {}%", tenth * 10);
                }
            }
        })
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Cleans the folder on a blocking thread; prints the summary; writes the JSON report.
async fn clean(args: &CleanArgs, feedback: &Feedback) -> Result<(CleanedDay, Report), Exit> {
    let options = CleanOptions {
        rejects: args.rejects.clone(),
        sort_budget_bytes: args.sort_memory_mib.max(1) << 20,
        scratch_dir: args.scratch_dir.clone(),
        progress: Some(feedback.clean_progress()),
        ..CleanOptions::default()
    };
    let dir = args.dir.clone();
    let cleaned = tokio::task::spawn_blocking(move || pipeline::clean_day(&dir, &options)).await;
    feedback.finish();
    let (day, report) = match cleaned {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => return Err(fail(Exit::Input, e)),
        Err(e) => return Err(fail(Exit::Unexpected, format!("cleaning failed: {e}"))),
    };
    print!(
        "{}",
        summary::render(
            &args.dir,
            &report,
            &day,
            args.max_reject_ratio,
            args.rejects.as_deref()
        )
    );
    if let Some(path) = &args.report_json {
        write_json(path, &report)?;
    }
    Ok((day, report))
}

fn write_json(path: &Path, report: &Report) -> Result<(), Exit> {
    let json = serde_json::to_vec_pretty(report).map_err(|e| fail(Exit::Unexpected, e))?;
    std::fs::write(path, json)
        .map_err(|e| fail(Exit::Input, format!("cannot write {}: {e}", path.display())))
}

/// The ratio check shared by `load` and `validate`.
fn within_ratio(day: &CleanedDay, report: &Report, max: Ratio) -> Result<(), Exit> {
    if report.exceeds(max) {
        println!(
            "NOT LOADED: {} of rows rejected is above the limit of {}; the services keep the previous day.",
            report.reject_ratio(),
            max
        );
        return Err(Exit::Rejected);
    }
    if day.account_count == 0 {
        println!("NOT LOADED: no account survived cleaning; the services keep the previous day.");
        return Err(Exit::Rejected);
    }
    Ok(())
}

async fn validate(args: CleanArgs) -> Exit {
    let feedback = Feedback::new();
    let (day, report) = match clean(&args, &feedback).await {
        Ok(result) => result,
        Err(exit) => return exit,
    };
    match within_ratio(&day, &report, args.max_reject_ratio) {
        Ok(()) => {
            println!(
                "VALID: the day would load ({} accounts, {} holdings).",
                day.account_count, day.holding_count
            );
            Exit::Ok
        }
        Err(exit) => exit,
    }
}

async fn load(args: LoadArgs) -> Exit {
    let keys = match args.jwt.load() {
        Ok(keys) => Arc::new(keys),
        Err(e) => return fail(Exit::Usage, e),
    };
    let as_of = args
        .as_of
        .unwrap_or_else(|| invest_proto::time::from_micros(invest_proto::time::now_micros()));
    let feedback = Feedback::new();
    let (day, report) = match clean(&args.clean, &feedback).await {
        Ok(result) => result,
        Err(exit) => return exit,
    };
    if let Err(exit) = within_ratio(&day, &report, args.clean.max_reject_ratio) {
        return exit;
    }
    let day = Arc::new(day);

    // Both services get the same cleaned day at once; each push is idempotent, so a
    // re-run after a partial failure repairs the one that failed.
    let progress = feedback.push_progress(day.account_count);
    let (portfolio_url, deposit_url, batch) =
        (&args.portfolio_url, &args.deposit_url, args.batch_holdings);
    let (portfolio, deposit) = tokio::join!(
        with_retries("portfolio-svc", args.attempts, || {
            let (keys, day) = (keys.clone(), day.clone());
            let progress = progress.clone();
            async move {
                let channel = push::connect(portfolio_url, 3).await?;
                push::push_snapshot(channel, keys, day, as_of, batch, Some(progress)).await
            }
        }),
        with_retries("deposit-svc", args.attempts, || {
            let (keys, day) = (keys.clone(), day.clone());
            async move {
                let channel = push::connect(deposit_url, 3).await?;
                push::push_directory(channel, keys, day, as_of, batch).await
            }
        }),
    );
    feedback.finish();
    let mut failed = false;
    match portfolio {
        Ok(response) => println!("{}", summary::portfolio_loaded(&response)),
        Err(e) => {
            println!("portfolio-svc: FAILED: {e}");
            failed = true;
        }
    }
    match deposit {
        Ok(response) => println!("{}", summary::directory_loaded(&response)),
        Err(e) => {
            println!("deposit-svc: FAILED: {e}");
            failed = true;
        }
    }
    if failed {
        println!(
            "RESULT: FAILED; re-run the same command once the cause is fixed (loading is idempotent)."
        );
        Exit::PushFailed
    } else {
        println!("RESULT: OK");
        Exit::Ok
    }
}

/// Runs `push` until it succeeds, fails for good, or `attempts` transient failures.
async fn with_retries<T, F, Fut>(service: &str, attempts: u32, push: F) -> Result<T, PushError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, PushError>>,
{
    let mut delay = Duration::from_secs(1);
    let mut attempt = 1;
    loop {
        match push().await {
            Err(e) if e.is_transient() && attempt < attempts.max(1) => {
                tracing::warn!(service, attempt, error = %e, retry_in = ?delay, "push failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// The phase-2 signature of the contract: BLAKE3 over the UTF-8 bytes of
/// account_number + customer_name + amount (plain decimal digits), lowercase hex.
pub fn signature(account: &str, name: &str, amount: i64) -> String {
    blake3::hash(format!("{account}{name}{amount}").as_bytes())
        .to_hex()
        .to_string()
}

fn token(args: &TokenArgs) -> Exit {
    let keys = match args.jwt.load() {
        Ok(keys) => keys,
        Err(e) => return fail(Exit::Usage, e),
    };
    let scopes: Vec<&str> = args.scope.split_ascii_whitespace().collect();
    if scopes.is_empty() {
        return fail(
            Exit::Usage,
            "--scope must name at least one scope, e.g. \"accounts:read\"",
        );
    }
    println!("{}", keys.mint(&args.sub, &scopes, args.ttl));
    Exit::Ok
}

async fn gen_day(args: &GenArgs) -> Exit {
    let options = GenOptions {
        accounts: args.accounts,
        seed: args.seed,
        instruments: args.instruments,
        faults: args.faults,
        format: match args.format {
            GenFormat::Sample => CsvFormat::sample(),
            GenFormat::Plain => CsvFormat::plain(),
            GenFormat::Varied => CsvFormat::varied(),
        },
    };
    let dir = args.dir.clone();
    let written = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir).map_err(GenError::Io)?;
        generate::write_day(&dir, &options)
    })
    .await;
    match written {
        Ok(Ok(summary)) => {
            println!(
                "wrote {} instruments, {} accounts, {} holdings to {}",
                summary.instruments,
                summary.accounts,
                summary.holdings,
                args.dir.display()
            );
            print!("{summary}");
            Exit::Ok
        }
        Ok(Err(GenError::Options(e))) => fail(Exit::Usage, e),
        Ok(Err(e)) => fail(
            Exit::Input,
            format!("cannot write {}: {e}", args.dir.display()),
        ),
        Err(e) => fail(Exit::Unexpected, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_an_independent_blake3() {
        // printf '%s' '5736692368320류영길1000' | b3sum  (computed with Python's blake3 package)
        assert_eq!(
            signature("5736692368320", "류영길", 1000),
            "555215c81bfe9cd863525b24f0dd25faf0d9d04f7bc313e6fa2f113cc6ab21ce"
        );
    }

    #[test]
    fn cutoffs() {
        let seoul = parse_cutoff("04:00+09:00").unwrap();
        let at =
            |rfc: &str| invest_proto::time::to_micros(&rfc.parse::<Timestamp>().unwrap()).unwrap();
        // 05:00 in Seoul: today's 04:00.
        assert_eq!(
            seoul.latest_at_or_before(at("2026-11-22T20:00:00Z")),
            at("2026-11-22T19:00:00Z")
        );
        // 03:00 in Seoul: yesterday's 04:00.
        assert_eq!(
            seoul.latest_at_or_before(at("2026-11-22T18:00:00Z")),
            at("2026-11-21T19:00:00Z")
        );
        // Exactly at the cut-off.
        assert_eq!(
            seoul.latest_at_or_before(at("2026-11-22T19:00:00Z")),
            at("2026-11-22T19:00:00Z")
        );
        let utc = parse_cutoff("21:30Z").unwrap();
        assert_eq!(
            utc.latest_at_or_before(at("2026-11-23T01:00:00Z")),
            at("2026-11-22T21:30:00Z")
        );
        let west = parse_cutoff("23:00-05:00").unwrap();
        assert_eq!(
            west.latest_at_or_before(at("2026-11-23T05:00:00Z")),
            at("2026-11-23T04:00:00Z")
        );
        for bad in ["4", "24:00+09:00", "04:60Z", "04:00", "04:00+9", "x"] {
            assert!(parse_cutoff(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_command_line_parses() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
