//! The command line: `load` and `validate`, and `gen`, `token` and `sign`, thin calls to
//! the day generator and the wire crate. Each command returns an [`Exit`] code; every code is
//! documented in the README and in `loader --help`.

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
use invest_cli::{JwtSecretArgs, LogFormat};
use invest_proto::auth::JwtKeys;
use prost_types::Timestamp;

use invest_daygen::{CsvFormat, GenError, GenOptions};

use crate::{
    guard::{CurrentDay, ShrinkGuard},
    pipeline::{self, CleanOptions, CleanedDay, CleaningReport, LossGuard, Phase, Progress, Ratio},
    push::{self, PushError},
    summary,
};

const EXIT_CODES: &str = "\
Exit codes:
  0  done: the day was loaded (or was already loaded), or validated and it passes every guard
  1  unexpected failure (a bug or the machine, such as lines that do not add up); see the log
  2  usage or configuration error (flags, JWT secret, URLs, `load` without --as-of or
     --cutoff)
  3  the delivery cannot be read (missing file or column, a file that is not a regular
     file, a header too long, a file changing while read, too many instruments)
  4  the day failed a guard, so nothing was pushed and the services keep the previous day:
     more than --max-reject-ratio of the rows rejected, of the accounts named lost or of the
     holding rows lost; smaller than the current day by more than --max-shrink (accounts or
     holdings; --allow-shrink to load it anyway); or nothing to load
  5  a service refused the day or could not be reached (also for the shrink check): the
     summary says which; neither service takes a day the other refused before its end;
     re-running the same day is safe and repairs it";

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

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Clean a delivery folder and stream it to portfolio-svc (snapshot) and deposit-svc
    /// (account directory).
    Load(LoadArgs),
    /// Clean a delivery folder and report, pushing nothing: the same guards and verdict as
    /// `load` (the shrink guard only with a portfolio-svc URL).
    Validate(ValidateArgs),
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
    /// Above this share of losses nothing is pushed (protects yesterday's good data), in any
    /// unit: rows rejected, accounts named in the delivery that do not load, holding rows
    /// rejected. A decimal (0.1), a percentage (10%) or a fraction (1/10).
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
    /// Longest line read, in bytes; a longer line is rejected (line_too_long) and its bytes
    /// past the limit are skipped unread. A header longer than this is an input error.
    #[arg(long, default_value_t = pipeline::DEFAULT_MAX_LINE_BYTES as u64, value_name = "BYTES",
        value_parser = clap::value_parser!(u64).range(64..=(64 << 20)))]
    pub max_line_bytes: u64,
    /// Longest field after trimming, in bytes (field_too_long); at most 1024, what the
    /// services accept.
    #[arg(long, default_value_t = pipeline::DEFAULT_MAX_FIELD_BYTES as u64, value_name = "BYTES",
        value_parser = clap::value_parser!(u64).range(1..=(invest_proto::ids::MAX_TEXT_BYTES as u64)))]
    pub max_field_bytes: u64,
    /// Most instrument rows (the master is kept in memory); more is an input error.
    #[arg(long, default_value_t = pipeline::DEFAULT_MAX_INSTRUMENTS, value_name = "ROWS")]
    pub max_instruments: u64,
    /// Most rows of one account in the holdings (or principal) file; an account with more
    /// has all its rows rejected (too_many_holdings).
    #[arg(long, default_value_t = pipeline::DEFAULT_MAX_HOLDINGS_PER_ACCOUNT as u64, value_name = "ROWS",
        value_parser = clap::value_parser!(u64).range(1..=(1 << 24)))]
    pub max_holdings_per_account: u64,
    /// Refuse a day with fewer accounts or fewer holdings than the day portfolio-svc serves
    /// now by more than this share (same forms as --max-reject-ratio).
    #[arg(long, default_value = "0.1", value_parser = parse_ratio)]
    pub max_shrink: Ratio,
    /// Load a day even though it is smaller than the current one by more than --max-shrink
    /// (say, after accounts really closed).
    #[arg(long)]
    pub allow_shrink: bool,
}

/// `loader validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The cleaning options.
    #[command(flatten)]
    pub clean: CleanArgs,
    /// portfolio-svc, to compare the day with the one it serves now (the shrink guard);
    /// without it the check is skipped and the report says so.
    #[arg(long, env = "LOADER_PORTFOLIO_URL")]
    pub portfolio_url: Option<String>,
    /// The shared JWT secret (needed with --portfolio-url).
    #[command(flatten)]
    pub jwt: JwtSecretArgs,
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
    /// The moment the delivery describes (RFC 3339, e.g. 2026-11-23T04:00:00+09:00), or
    /// `now`. Required, or --cutoff: deposits confirmed after as_of are shown on top of the
    /// day, those before are taken to be in it.
    #[arg(long, env = "LOADER_AS_OF", value_parser = parse_as_of)]
    pub as_of: Option<AsOf>,
    /// Instead of --as-of: the daily cut-off as local time and UTC offset, e.g.
    /// "04:00+09:00"; as_of is its latest occurrence (today's, or yesterday's if it has not
    /// come yet). For a scheduled job, which cannot compute dates.
    #[arg(long, env = "LOADER_CUTOFF", value_parser = parse_cutoff)]
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
    /// Space-separated scopes: accounts:read, deposits:write, withdrawals:write (a customer's),
    /// ingest:write, ledger:write (the services'); e.g. "accounts:read deposits:write".
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

/// `--as-of`: a moment, or the moment the command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// `now`.
    Now,
    /// An RFC 3339 moment.
    At(Timestamp),
}

fn parse_as_of(text: &str) -> Result<AsOf, String> {
    if text.trim().eq_ignore_ascii_case("now") {
        return Ok(AsOf::Now);
    }
    Timestamp::from_str(text.trim())
        .map(AsOf::At)
        .map_err(|e| format!("expected RFC 3339 such as 2026-11-23T04:00:00+09:00, or now: {e}"))
}

/// Why `load` needs the moment the delivery describes.
const AS_OF_REQUIRED: &str = "\
load needs the moment the delivery describes: --as-of RFC3339 (e.g. --as-of \
2026-11-23T04:00:00+09:00, or --as-of now) or --cutoff HH:MM+HH:MM (e.g. --cutoff 04:00+09:00: \
the latest such cut-off), or LOADER_AS_OF / LOADER_CUTOFF. portfolio-svc shows deposits \
confirmed after as_of on top of the day and takes those before it to be in the day already: \
an as_of later than the delivery's real cut-off hides the deposits confirmed in between, an \
earlier one counts them twice. `now` is right only for a delivery cut at this very moment";

/// Furthest in the future an `--as-of` may be (clock skew).
const AS_OF_SLACK_MICROS: i64 = 60_000_000;

/// The as_of of a load from `--as-of` / `--cutoff` at `now` (microseconds).
fn resolve_as_of(
    as_of: Option<AsOf>,
    cutoff: Option<Cutoff>,
    now: i64,
) -> Result<Timestamp, String> {
    match (as_of, cutoff) {
        (Some(_), Some(_)) => Err(
            "--as-of (LOADER_AS_OF) and --cutoff (LOADER_CUTOFF) are both given; pass only one"
                .to_owned(),
        ),
        (None, None) => Err(AS_OF_REQUIRED.to_owned()),
        (Some(AsOf::Now), None) => Ok(invest_proto::time::from_micros(now)),
        (Some(AsOf::At(at)), None) => {
            let micros = invest_proto::time::to_micros(&at)
                .ok_or_else(|| format!("--as-of {at} is out of range"))?;
            if micros > now.saturating_add(AS_OF_SLACK_MICROS) {
                return Err(format!(
                    "--as-of {at} is in the future (now is {}); a delivery describes a moment \
                     that has passed",
                    invest_proto::time::from_micros(now)
                ));
            }
            Ok(at)
        }
        (None, Some(cutoff)) => Ok(invest_proto::time::from_micros(
            cutoff.latest_at_or_before(now),
        )),
    }
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

/// Cleans the folder on a blocking thread; prints the summary; checks the accounting.
async fn clean(
    args: &CleanArgs,
    feedback: &Feedback,
) -> Result<(CleanedDay, CleaningReport), Exit> {
    let options = CleanOptions {
        rejects: args.rejects.clone(),
        sort_budget_bytes: args.sort_memory_mib.max(1) << 20,
        scratch_dir: args.scratch_dir.clone(),
        max_line_bytes: usize::try_from(args.max_line_bytes).unwrap_or(usize::MAX),
        max_field_bytes: usize::try_from(args.max_field_bytes).unwrap_or(usize::MAX),
        max_instruments: args.max_instruments,
        max_holdings_per_account: usize::try_from(args.max_holdings_per_account)
            .unwrap_or(usize::MAX),
        progress: Some(feedback.clean_progress()),
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
        summary::cleaning(
            &args.dir,
            &report,
            &day,
            args.max_reject_ratio,
            args.rejects.as_deref()
        )
    );
    if let Err(violation) = report.check_accounting() {
        return Err(fail(
            Exit::Unexpected,
            format!(
                "BUG: the loader's own accounting does not add up ({violation}); nothing was \
                 pushed. Keep the delivery and report it"
            ),
        ));
    }
    Ok((day, report))
}

/// The JSON report: the cleaning report and the guards' verdicts.
#[derive(serde::Serialize)]
struct JsonReport<'a> {
    #[serde(flatten)]
    report: &'a CleaningReport,
    loss_guard: &'a LossGuard,
    shrink_guard: &'a ShrinkGuard,
    /// `pass`, or why the day is refused.
    verdict: &'a str,
}

fn write_json(path: &Path, json: &JsonReport<'_>) -> Result<(), Exit> {
    let json = serde_json::to_vec_pretty(json).map_err(|e| fail(Exit::Unexpected, e))?;
    std::fs::write(path, json)
        .map_err(|e| fail(Exit::Input, format!("cannot write {}: {e}", path.display())))
}

/// Where the shrink guard reads the current day.
struct CurrentDaySource {
    url: String,
    keys: Arc<JwtKeys>,
    attempts: u32,
}

/// The guards shared by `validate` and `load`, in order: the loss guard, something to
/// load, the shrink guard. Prints each verdict, writes the JSON report, and returns `Ok`
/// when the day may be pushed.
async fn judge(
    args: &CleanArgs,
    day: &CleanedDay,
    report: &CleaningReport,
    source: Option<&CurrentDaySource>,
) -> Result<(), Exit> {
    let loss = report.loss_guard(args.max_reject_ratio);
    let refusal = if !loss.passed() {
        let tripped: Vec<String> = loss
            .losses
            .iter()
            .filter(|l| l.exceeded)
            .map(|l| {
                format!(
                    "{} {} ({} of {})",
                    l.unit.as_str(),
                    summary::percent(l.ratio),
                    l.lost,
                    l.of
                )
            })
            .collect();
        Some(format!(
            "the day failed the loss guard: {} above the limit of {} (--max-reject-ratio)",
            tripped.join(", "),
            summary::percent(args.max_reject_ratio)
        ))
    } else if day.account_count == 0 {
        Some("no account survived cleaning".to_owned())
    } else {
        None
    };
    let shrink = match (&refusal, source) {
        (Some(_), _) => ShrinkGuard::Skipped {
            reason: "the day is refused already".to_owned(),
        },
        (None, None) => ShrinkGuard::Skipped {
            reason: "no --portfolio-url or LOADER_PORTFOLIO_URL given, so the day was not \
                     compared with the one portfolio-svc serves now"
                .to_owned(),
        },
        (None, Some(source)) => {
            let current = with_retries("portfolio-svc", source.attempts, || {
                push::current_snapshot(&source.url, source.keys.clone())
            })
            .await;
            match current {
                Ok(None) => ShrinkGuard::FirstDay,
                Ok(Some(record)) => ShrinkGuard::compare(
                    args.max_shrink,
                    args.allow_shrink,
                    CurrentDay {
                        as_of: record.as_of.map(|t| t.to_string()).unwrap_or_default(),
                        accounts: u64::try_from(record.accounts).unwrap_or(0),
                        holdings: u64::try_from(record.holdings).unwrap_or(0),
                    },
                    day.account_count,
                    day.holding_count,
                ),
                Err(e) => {
                    println!(
                        "shrink guard: FAILED: cannot read the day portfolio-svc serves now: {e}"
                    );
                    println!(
                        "NOT LOADED: the day could not be compared with the current one; nothing was pushed. Re-run once portfolio-svc answers."
                    );
                    return Err(Exit::PushFailed);
                }
            }
        }
    };
    print!("{}", summary::shrink_guard(&shrink));
    let refusal = refusal.or_else(|| match &shrink {
        ShrinkGuard::Checked {
            current, shrinks, ..
        } if shrink.refuses() => {
            let counts: Vec<String> = shrinks
                .iter()
                .filter(|s| s.exceeded)
                .map(|s| {
                    format!(
                        "{} {} -> {} ({} fewer)",
                        s.unit,
                        s.current,
                        s.new,
                        summary::percent(s.ratio)
                    )
                })
                .collect();
            Some(format!(
                "the day is smaller than the one portfolio-svc serves now (as_of {}) by more \
                 than {} (--max-shrink): {}; a delivery that lost part of its input looks like \
                 this. If the day is right (accounts really closed), re-run with --allow-shrink",
                current.as_of,
                summary::percent(args.max_shrink),
                counts.join(", ")
            ))
        }
        _ => None,
    });
    if let Some(path) = &args.report_json {
        write_json(
            path,
            &JsonReport {
                report,
                loss_guard: &loss,
                shrink_guard: &shrink,
                verdict: refusal.as_deref().unwrap_or("pass"),
            },
        )?;
    }
    match refusal {
        Some(why) => {
            println!("NOT LOADED: {why}; nothing was pushed, the services keep the previous day.");
            Err(Exit::Rejected)
        }
        None => Ok(()),
    }
}

async fn validate(args: ValidateArgs) -> Exit {
    let source = match &args.portfolio_url {
        Some(url) => match args.jwt.load() {
            Ok(keys) => Some(CurrentDaySource {
                url: url.clone(),
                keys: Arc::new(keys),
                attempts: 3,
            }),
            Err(e) => {
                return fail(
                    Exit::Usage,
                    format!("{e} (needed to ask portfolio-svc for the current day)"),
                );
            }
        },
        None => None,
    };
    let feedback = Feedback::new();
    let (day, report) = match clean(&args.clean, &feedback).await {
        Ok(result) => result,
        Err(exit) => return exit,
    };
    match judge(&args.clean, &day, &report, source.as_ref()).await {
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
    let as_of = match resolve_as_of(args.as_of, args.cutoff, invest_proto::time::now_micros()) {
        Ok(as_of) => as_of,
        Err(e) => return fail(Exit::Usage, e),
    };
    let feedback = Feedback::new();
    let (day, report) = match clean(&args.clean, &feedback).await {
        Ok(result) => result,
        Err(exit) => return exit,
    };
    let source = CurrentDaySource {
        url: args.portfolio_url.clone(),
        keys: keys.clone(),
        attempts: args.attempts,
    };
    if let Err(exit) = judge(&args.clean, &day, &report, Some(&source)).await {
        return exit;
    }
    let day = Arc::new(day);
    println!("as_of {as_of}");

    // Both services get the same cleaned day at once, and neither commits unless both have
    // received all of it; each push is idempotent, so a re-run repairs a partial failure.
    let targets = push::Targets {
        portfolio_url: args.portfolio_url.clone(),
        deposit_url: args.deposit_url.clone(),
    };
    let mut delay = Duration::from_secs(1);
    let mut attempt = 1;
    let outcome = loop {
        let progress = feedback.push_progress(day.account_count);
        let outcome = push::push_day(
            &targets,
            keys.clone(),
            day.clone(),
            as_of,
            args.batch_holdings,
            Some(progress),
        )
        .await;
        let transient = outcome.portfolio.is_transient() && outcome.deposit.is_transient();
        if outcome.succeeded() || !transient || attempt >= args.attempts.max(1) {
            break outcome;
        }
        tracing::warn!(attempt, retry_in = ?delay, portfolio = ?outcome.portfolio, deposit = ?outcome.deposit, "push failed; retrying both services");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
        attempt += 1;
    };
    feedback.finish();
    print!("{}", summary::push_outcome(&outcome));
    if outcome.succeeded() {
        println!("RESULT: OK");
        Exit::Ok
    } else {
        println!(
            "RESULT: FAILED; re-run the same command once the cause is fixed (loading is idempotent)."
        );
        Exit::PushFailed
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

/// The phase-2 signature of the contract, lowercase hex ([`invest_proto::signature`]).
pub fn signature(account: &str, name: &str, amount: i64) -> String {
    invest_proto::signature::Signature::of(account, name, amount).to_hex()
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
        invest_daygen::write_day(&dir, &options)
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
    fn as_of_is_required_and_never_in_the_future() {
        let at = |rfc: &str| rfc.parse::<Timestamp>().unwrap();
        let now = invest_proto::time::to_micros(&at("2026-11-23T06:30:00+09:00")).unwrap();
        let missing = resolve_as_of(None, None, now).unwrap_err();
        assert!(
            missing.contains("--as-of")
                && missing.contains("--cutoff")
                && missing.contains("hides")
                && missing.contains("twice"),
            "{missing}"
        );
        assert_eq!(
            resolve_as_of(Some(AsOf::Now), None, now).unwrap(),
            invest_proto::time::from_micros(now)
        );
        let cutoff = parse_cutoff("04:00+09:00").unwrap();
        assert_eq!(
            resolve_as_of(None, Some(cutoff), now).unwrap(),
            at("2026-11-23T04:00:00+09:00")
        );
        assert!(resolve_as_of(Some(AsOf::Now), Some(cutoff), now).is_err());
        // A minute of clock skew is tolerated, more is not.
        let soon = at("2026-11-23T06:31:00+09:00");
        assert_eq!(
            resolve_as_of(Some(AsOf::At(soon)), None, now).unwrap(),
            soon
        );
        let later = at("2026-11-23T06:31:01+09:00");
        assert!(
            resolve_as_of(Some(AsOf::At(later)), None, now)
                .unwrap_err()
                .contains("future")
        );
        assert_eq!(parse_as_of("now").unwrap(), AsOf::Now);
        assert_eq!(parse_as_of(" NOW ").unwrap(), AsOf::Now);
        assert!(parse_as_of("yesterday").is_err());
    }

    #[test]
    fn the_command_line_parses() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
