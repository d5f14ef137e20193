//! The command line of `loadgen`: `bench` (the real servers, the ceiling, or both), `noop`
//! (the ceiling server alone), `freshness` (how long a deposit applied through one
//! portfolio-svc replica takes to show on another) and `credit` (many deposits to one account
//! at once). Exit codes follow the loader's.

use std::{
    io::Write,
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use clap::{Args, Parser, Subcommand};
use invest_cli::{JwtSecretArgs, SecretError};
use invest_daygen::{GenError, GenOptions};
use invest_proto::{auth::JwtKeys, ids::AccountNumber};
use serde::Serialize;

use crate::{
    freshness::{self, FreshnessConfig, FreshnessReport},
    ledger::{self, Credit, LedgerError},
    mix::{Mix, Operation},
    noop::{CannedResponses, NoopServer},
    population::{AccountPicker, InvalidHeader, Population, Sample},
    report::{self, BenchReport, ConfigReport, TargetReport},
    workload::{self, ConnectError, Failure, RunError, RunResult, Stop, Target, Workload},
};

const EXIT_CODES: &str = "\
Exit codes:
  0  RESULT: OK: every request succeeded (freshness: and every deposit showed in time)
  1  RESULT: FAILED: some request failed (loadgen sends only valid requests, so any error is
     unexpected), a server could not be reached, the report could not be written, or
     (freshness) a deposit did not show on the reading replica within --give-up
  2  usage or configuration error (flags, JWT secret, an account not in the day)";

/// A process exit code (see `EXIT_CODES`): the loader's numbers for the same outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0.
    Ok,
    /// 1.
    Unexpected,
    /// 2.
    Usage,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(match exit {
            Exit::Ok => 0,
            Exit::Unexpected => 1,
            Exit::Usage => 2,
        })
    }
}

/// Load generator of the invest services: a closed-loop workload against portfolio-svc and
/// deposit-svc, measured against a no-op server that shares the machine (the ceiling).
#[derive(Debug, Parser)]
#[command(name = "loadgen", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a closed-loop workload against portfolio-svc and deposit-svc, and optionally the
    /// same workload against a no-op server (the ceiling); print latency and throughput.
    Bench(Box<BenchArgs>),
    /// Serve the no-op PortfolioService and DepositService (canned responses, no auth, no
    /// database) until Ctrl-C or SIGTERM.
    Noop(NoopArgs),
    /// Measure how long a deposit applied through one portfolio-svc replica (ApplyDeposit)
    /// takes to show in GetAccount on another.
    Freshness(Box<FreshnessArgs>),
    /// Apply many deposits of 1 won to one account through portfolio-svc's ApplyDeposit (as
    /// deposit-svc would), e.g. to give it 10,000 deposits after the snapshot before a bench.
    Credit(Box<CreditArgs>),
    /// Print the account numbers of a generated day as the servers hold it once loaded, one
    /// per line, in account-number order (for scripts: which account to credit or to watch).
    Accounts(AccountsArgs),
    /// Send operations at a fixed rate (open loop) until Ctrl-C, SIGTERM or --duration, and
    /// write every request's start, latency and status as a CSV line: to watch a daily load,
    /// its switch and the prune after it from a customer's side.
    Steady(Box<SteadyArgs>),
}

/// `loadgen steady`.
#[derive(Debug, Args)]
pub struct SteadyArgs {
    /// portfolio-svc.
    #[arg(
        long,
        env = "LOADER_PORTFOLIO_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub portfolio_url: String,
    /// deposit-svc.
    #[arg(
        long,
        env = "LOADER_DEPOSIT_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    pub deposit_url: String,
    /// Accounts of the generated day that was loaded (`loader gen --accounts`).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub accounts: u64,
    /// Seed of that day (`loader gen --seed`); also seeds the choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Instruments of that day (`loader gen --instruments`).
    #[arg(long, default_value_t = 14)]
    pub instruments: usize,
    /// Most accounts to act on, taken at an even stride over the day.
    #[arg(long, default_value_t = 10_000, value_name = "N", value_parser = at_least_one)]
    pub sample: usize,
    /// Weights of the operations (as `loadgen bench --mix`).
    #[arg(long, default_value = "get_account=2,list_holdings=2,deposit=1")]
    pub mix: Mix,
    /// Operations started per second, whatever the answers take.
    #[arg(long, default_value_t = 20.0, value_parser = rate)]
    pub rate: f64,
    /// Stop after this long (default: at Ctrl-C or SIGTERM).
    #[arg(long, value_parser = positive_duration)]
    pub duration: Option<Duration>,
    /// Client-side deadline of one RPC; beyond, it counts as DEADLINE_EXCEEDED.
    #[arg(long, default_value = "10s", value_parser = positive_duration)]
    pub timeout: Duration,
    /// Channels (TCP connections) per service.
    #[arg(long, default_value_t = 2, value_parser = at_least_one)]
    pub connections: usize,
    /// Where the CSV goes (`started_unix_ms,operation,latency_us,code`).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// The shared JWT secret (tokens of the sampled customers are minted with it).
    #[command(flatten)]
    pub jwt: JwtSecretArgs,
}

fn rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 && r <= 100_000.0 => Ok(r),
        Ok(_) => Err("must be more than 0 and at most 100000 per second".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

/// `loadgen accounts`.
#[derive(Debug, Args)]
pub struct AccountsArgs {
    /// Accounts of the generated day (`loader gen --accounts`).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub accounts: u64,
    /// Its seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Its instruments.
    #[arg(long, default_value_t = 14)]
    pub instruments: usize,
    /// How many to print, from the first.
    #[arg(long, default_value_t = 1, value_parser = at_least_one)]
    pub count: usize,
}

/// `loadgen bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// portfolio-svc.
    #[arg(
        long,
        env = "LOADER_PORTFOLIO_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub portfolio_url: String,
    /// deposit-svc.
    #[arg(
        long,
        env = "LOADER_DEPOSIT_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    pub deposit_url: String,
    /// Accounts of the generated day that was loaded (`loader gen --accounts`).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub accounts: u64,
    /// Seed of that day (`loader gen --seed`); also seeds the workers' choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Instruments of that day (`loader gen --instruments`).
    #[arg(long, default_value_t = 14)]
    pub instruments: usize,
    /// Most accounts to act on, taken at an even stride over the day; one token is minted
    /// per owner before the run.
    #[arg(long, default_value_t = 100_000, value_name = "N", value_parser = at_least_one)]
    pub sample: usize,
    /// Act on this one account of the day only (and as its owner), instead of a sample: e.g.
    /// to compare GetAccount on an account with many deposits and on one with none.
    #[arg(long, value_name = "NUMBER", value_parser = account_number, conflicts_with = "sample")]
    pub only_account: Option<AccountNumber>,
    /// Skew of the accounts' popularity, to model a few hot customers: each operation picks
    /// its account among the sampled ones with weight 1/(rank+1)^S over the sample's order (by
    /// account number, so the lowest-numbered sampled accounts are the hottest). 0 picks
    /// uniformly, with the same choices for a seed as without this flag. With S=1.1 over
    /// 100,000 sampled accounts, the hottest 1% of the accounts get about 75% of the
    /// operations (the hottest one about 13%).
    #[arg(long, default_value_t = 0.0, value_name = "S", value_parser = skew)]
    pub skew: f64,
    /// Weights of the operations: get_account, list_holdings, list_accounts, deposit
    /// (RegisterDeposit then ConfirmDeposit, measured as one). Operations left out weigh 0.
    #[arg(
        long,
        default_value = "get_account=1,list_holdings=1,list_accounts=1,deposit=0"
    )]
    pub mix: Mix,
    /// Closed-loop workers (requests in flight).
    #[arg(long, default_value_t = 32, value_parser = at_least_one)]
    pub concurrency: usize,
    /// Channels (TCP connections) per service, shared round-robin by the workers.
    #[arg(long, default_value_t = 4, value_parser = at_least_one)]
    pub connections: usize,
    /// Measure for this long, e.g. 10s, 1m.
    #[arg(long, default_value = "10s", value_parser = positive_duration)]
    pub duration: Duration,
    /// Instead of --duration: measure this many operations.
    #[arg(long, conflicts_with = "duration", value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: Option<u64>,
    /// Run unrecorded for this long first (0s for none).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Client-side deadline of one RPC; beyond, it counts as DEADLINE_EXCEEDED.
    #[arg(long, default_value = "10s", value_parser = positive_duration)]
    pub timeout: Duration,
    /// Also run the same workload against an in-process no-op server answering with the
    /// real servers' responses (captured first), and report real / ceiling ratios.
    #[arg(long, conflicts_with = "ceiling_only")]
    pub ceiling: bool,
    /// With --ceiling or --ceiling-only: measure this no-op server instead of one inside this
    /// process, e.g. a `loadgen noop` of the same day started beside the real servers. A
    /// server in its own process pays what the real servers pay for being one (the operating
    /// system's scheduling between processes on a busy machine), which an in-process one
    /// does not; its responses are the synthetic ones of the day (the real size).
    #[arg(long, value_name = "URL")]
    pub ceiling_url: Option<String>,
    /// Measure only the no-op server, with synthetic responses of the real size; no real
    /// server is needed (nor a JWT secret: a throwaway one signs the tokens). For CI smoke
    /// tests.
    #[arg(long)]
    pub ceiling_only: bool,
    /// Split the measurement into this many rounds that alternate the real servers and the
    /// ceiling (each round measures an equal share of --duration or --requests), so that a
    /// change in the machine's speed during the run (other tenants, CPU steal) weighs on both
    /// alike and the ratios stay fair.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
    /// Also write the report as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// The shared JWT secret (tokens of the sampled customers are minted with it).
    #[command(flatten)]
    pub jwt: JwtSecretArgs,
}

/// `loadgen freshness`.
#[derive(Debug, Args)]
pub struct FreshnessArgs {
    /// portfolio-svc replica A: the deposits are applied through it.
    #[arg(long, value_name = "URL")]
    pub apply_url: String,
    /// portfolio-svc replica B: it is read until it shows each deposit.
    #[arg(long, value_name = "URL")]
    pub read_url: String,
    /// Accounts of the generated day that was loaded (`loader gen --accounts`).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub accounts: u64,
    /// Seed of that day (`loader gen --seed`).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Instruments of that day (`loader gen --instruments`).
    #[arg(long, default_value_t = 14)]
    pub instruments: usize,
    /// The account credited and read: the one at this position of the day (from 0, by
    /// account number). Nothing else may credit it during the run.
    #[arg(long, default_value_t = 0, value_name = "K")]
    pub account_index: u64,
    /// Deposits of 1 won, applied one at a time.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: u64,
    /// Give up on a deposit that replica B has not shown this long after A applied it: it
    /// counts as a timeout, and any timeout fails the run.
    #[arg(long, default_value = "10s", value_parser = positive_duration)]
    pub give_up: Duration,
    /// Also write the figures as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// The shared JWT secret (the owner's and deposit-svc's tokens are minted with it).
    #[command(flatten)]
    pub jwt: JwtSecretArgs,
}

/// `loadgen credit`.
#[derive(Debug, Args)]
pub struct CreditArgs {
    /// portfolio-svc (any replica).
    #[arg(
        long,
        env = "LOADER_PORTFOLIO_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub portfolio_url: String,
    /// The account credited (6 to 20 digits; it must be in the current snapshot).
    #[arg(long, value_name = "NUMBER", value_parser = account_number)]
    pub account: AccountNumber,
    /// Deposits of 1 won to apply, each under a fresh transfer id.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: u64,
    /// Deposits in flight at once.
    #[arg(long, default_value_t = 8, value_parser = at_least_one)]
    pub concurrency: usize,
    /// The shared JWT secret (deposit-svc's token is minted with it).
    #[command(flatten)]
    pub jwt: JwtSecretArgs,
}

/// `loadgen noop`.
#[derive(Debug, Args)]
pub struct NoopArgs {
    /// Address to serve on, e.g. 127.0.0.1:50061 (port 0 picks one; the address is printed).
    #[arg(long)]
    pub listen: SocketAddr,
    /// Accounts of the generated day the canned responses are taken from.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    pub accounts: u64,
    /// Its seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Its instruments.
    #[arg(long, default_value_t = 14)]
    pub instruments: usize,
}

fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn account_number(text: &str) -> Result<AccountNumber, String> {
    AccountNumber::parse(text).map_err(|e| e.0)
}

fn skew(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => Ok(s),
        Ok(_) => Err("must be a finite number of at least 0".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

fn positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err("must be longer than 0".to_owned()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

/// Signs the tokens of `--ceiling-only` when no secret is configured: the no-op server
/// checks nothing, and tokens of the real size keep the requests of the real size.
const THROWAWAY_SECRET: &[u8] = b"loadgen-ceiling-only-throwaway-secret";

/// Why a benchmark could not run to the end.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The JWT secret is missing or unreadable.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The day cannot be generated (bad options) or sampled.
    #[error(transparent)]
    Generate(#[from] GenError),
    /// `--only-account` names an account the day does not have.
    #[error("{0}")]
    NotInDay(String),
    /// A token is not valid metadata.
    #[error(transparent)]
    Token(#[from] InvalidHeader),
    /// A server cannot be reached.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// Capturing the real responses failed.
    #[error("cannot capture the real responses for the ceiling: {0}")]
    Capture(Failure),
    /// The no-op server cannot start.
    #[error("cannot start the no-op server: {0}")]
    Noop(std::io::Error),
    /// A run failed.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The figures cannot be merged.
    #[error("cannot merge the latency histograms: {0}")]
    Merge(#[from] hdrhistogram::errors::AdditionError),
    /// A blocking task failed.
    #[error("sampling the day failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// The JSON report cannot be written.
    #[error("cannot write {path}: {reason}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Standard output is gone.
    #[error("cannot print the report: {0}")]
    Output(#[from] std::io::Error),
}

impl BenchError {
    /// The exit code it warrants.
    pub fn exit(&self) -> Exit {
        match self {
            Self::Secret(_) | Self::Generate(GenError::Options(_)) | Self::NotInDay(_) => {
                Exit::Usage
            }
            _ => Exit::Unexpected,
        }
    }
}

/// `loadgen steady`: runs until the duration ends or a termination signal, and says how many
/// requests failed.
pub async fn steady(args: &SteadyArgs) -> Result<Option<String>, BenchError> {
    let keys = args.jwt.load()?;
    let options = day(args.accounts, args.seed, args.instruments);
    let (population, _) = populate(options, args.sample, None, keys).await?;
    let target = Target::connect(
        &args.portfolio_url,
        &args.deposit_url,
        &args.mix,
        args.connections,
    )
    .await?;
    let out = std::fs::File::create(&args.out).map_err(|e| BenchError::Write {
        path: args.out.clone(),
        reason: e.to_string(),
    })?;
    let config = crate::steady::SteadyConfig {
        mix: args.mix,
        rate: args.rate,
        timeout: args.timeout,
        seed: args.seed,
    };
    let duration = args.duration;
    let stop = async move {
        match duration {
            Some(length) => tokio::select! {
                () = tokio::time::sleep(length) => {}
                () = termination() => {}
            },
            None => termination().await,
        }
    };
    let summary = crate::steady::run(
        &config,
        Arc::new(population),
        &target,
        stop,
        std::io::BufWriter::new(out),
    )
    .await?;
    println!(
        "loadgen steady: {} requests, {} failed; each one in {}",
        summary.sent,
        summary.errors,
        args.out.display()
    );
    Ok((summary.errors > 0)
        .then(|| format!("{} of {} requests failed", summary.errors, summary.sent)))
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Exit {
    match cli.command {
        Command::Steady(args) => finish(steady(&args).await, BenchError::exit),
        Command::Bench(args) => finish(
            bench(&args, &mut std::io::stdout()).await.map(|report| {
                (!report.ok).then(|| format!("{} unexpected errors", report.unexpected_errors))
            }),
            BenchError::exit,
        ),
        Command::Noop(args) => noop(&args).await,
        Command::Freshness(args) => finish(
            freshness(&args, &mut std::io::stdout())
                .await
                .map(|report| {
                    (!report.ok).then(|| {
                        format!(
                            "{} of {} deposits not shown by the reading replica within {}",
                            report.timeouts,
                            report.applied,
                            humantime::format_duration(args.give_up)
                        )
                    })
                }),
            LedgerError::exit,
        ),
        Command::Credit(args) => finish(
            credit(&args, &mut std::io::stdout()).await.map(|()| None),
            LedgerError::exit,
        ),
        Command::Accounts(args) => {
            let options = day(args.accounts, args.seed, args.instruments);
            match invest_daygen::accounts(&options) {
                Ok(accounts) => {
                    for account in accounts.take(args.count) {
                        println!("{}", account.account_number);
                    }
                    Exit::Ok
                }
                Err(e) => {
                    eprintln!("loadgen: {e}");
                    Exit::Usage
                }
            }
        }
    }
}

/// The verdict line of a measuring subcommand and its exit code: `RESULT: OK`, or
/// `RESULT: FAILED (why)` for a run that found a failure (`Ok(Some(why))`) or stopped on an
/// unexpected error; an error of usage (exit 2) only goes to standard error.
fn finish<E: std::fmt::Display>(
    outcome: Result<Option<String>, E>,
    exit: impl Fn(&E) -> Exit,
) -> Exit {
    match outcome {
        Ok(None) => {
            println!("RESULT: OK");
            Exit::Ok
        }
        Ok(Some(why)) => {
            println!("RESULT: FAILED ({why})");
            Exit::Unexpected
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            let code = exit(&e);
            if code == Exit::Unexpected {
                println!("RESULT: FAILED ({e})");
            }
            code
        }
    }
}

/// The day the options describe (as `loader gen` writes it).
fn day(accounts: u64, seed: u64, instruments: usize) -> GenOptions {
    GenOptions {
        accounts,
        seed,
        instruments,
        ..GenOptions::default()
    }
}

/// Samples the day (or takes its account `only`) and mints the tokens, on a blocking thread.
async fn populate(
    options: GenOptions,
    max: usize,
    only: Option<AccountNumber>,
    keys: JwtKeys,
) -> Result<(Population, CannedResponses), BenchError> {
    tokio::task::spawn_blocking(move || {
        let sample = match only {
            None => Sample::take(&options, max)?,
            Some(number) => Sample::only(&options, number.as_str())?.ok_or_else(|| {
                BenchError::NotInDay(format!(
                    "--only-account {}: the day of --accounts {} --seed {} has no such account",
                    number.as_str(),
                    options.accounts,
                    options.seed
                ))
            })?,
        };
        let instruments = invest_daygen::instruments(&options)?;
        let synthetic = CannedResponses::synthetic(&sample.representative, &instruments);
        Ok((Population::mint(sample, &keys)?, synthetic))
    })
    .await?
}

/// Runs the benchmark `args` describes, printing the tables to `out`; the caller prints the
/// verdict.
pub async fn bench(
    args: &BenchArgs,
    out: &mut (dyn Write + Send),
) -> Result<BenchReport, BenchError> {
    let keys = match args.jwt.load() {
        Err(SecretError::Missing) if args.ceiling_only => JwtKeys::from_secret(THROWAWAY_SECRET),
        other => other?,
    };
    let workload = Workload {
        mix: args.mix,
        concurrency: args.concurrency,
        stop: args
            .requests
            .map_or(Stop::After(args.duration), Stop::Requests),
        warmup: args.warmup,
        timeout: args.timeout,
        seed: args.seed,
        skew: args.skew,
    };

    let started = Instant::now();
    let options = day(args.accounts, args.seed, args.instruments);
    let (population, synthetic) =
        populate(options, args.sample, args.only_account.clone(), keys).await?;
    tracing::info!(
        sampled = population.accounts.len(),
        of = population.day_accounts,
        stride = population.stride,
        customers = population.customers.len(),
        took = ?started.elapsed(),
        "accounts sampled and tokens minted"
    );
    let population = Arc::new(population);
    // No more rounds than operations to measure: every round measures at least one.
    let rounds = match workload.stop {
        Stop::Requests(count) => args.rounds.min(u32::try_from(count).unwrap_or(u32::MAX)),
        Stop::After(_) => args.rounds,
    };
    let config = config(args, &population, rounds);
    let stop = match workload.stop {
        Stop::After(length) => format!("{} measured", humantime::format_duration(length)),
        Stop::Requests(count) => format!("{count} operations measured"),
    };
    let only = args
        .only_account
        .as_ref()
        .map_or_else(String::new, |number| {
            format!(", only account {}", number.as_str())
        });
    let skew = if args.skew > 0.0 {
        let sampled = population.accounts.len();
        let share = AccountPicker::new(sampled, args.skew).share_of_hottest(sampled.div_ceil(100));
        format!(
            "skew {} (the hottest 1% of accounts get {:.0}% of operations)",
            args.skew,
            share * 100.0
        )
    } else {
        "skew 0 (uniform)".to_owned()
    };
    writeln!(
        out,
        "loadgen: {} of {} accounts ({} customers){}, {}, mix {}, concurrency {}, {} connections, {} after {} of warm-up{}",
        population.accounts.len(),
        population.day_accounts,
        population.customers.len(),
        only,
        skew,
        args.mix,
        args.concurrency,
        args.connections,
        stop,
        humantime::format_duration(args.warmup),
        if rounds > 1 {
            format!(", in {rounds} alternating rounds")
        } else {
            String::new()
        },
    )?;

    let real_target = if args.ceiling_only {
        None
    } else {
        Some(
            Target::connect(
                &args.portfolio_url,
                &args.deposit_url,
                &args.mix,
                args.connections,
            )
            .await?,
        )
    };
    let mut canned = synthetic;
    if let (Some(target), true, None) = (&real_target, args.ceiling, &args.ceiling_url) {
        canned = workload::capture(target, &population, &args.mix, args.timeout, canned)
            .await
            .map_err(BenchError::Capture)?;
    }
    let sizes = canned.sizes();
    let external = match (&args.ceiling_url, args.ceiling || args.ceiling_only) {
        (Some(url), true) => Some(Target::connect(url, url, &args.mix, args.connections).await?),
        _ => None,
    };
    let noop = if external.is_some() {
        None
    } else if args.ceiling || args.ceiling_only {
        let server = NoopServer::start((Ipv4Addr::LOCALHOST, 0).into(), canned)
            .await
            .map_err(BenchError::Noop)?;
        let url = server.url();
        match Target::connect(&url, &url, &args.mix, args.connections).await {
            Ok(target) => Some((server, url, target)),
            Err(e) => {
                server.stop().await;
                return Err(e.into());
            }
        }
    } else {
        None
    };
    let targets = [
        real_target.as_ref(),
        external
            .as_ref()
            .or(noop.as_ref().map(|(_, _, target)| target)),
    ];
    let measured = measure(&workload, rounds, &population, targets).await;
    drop(real_target);
    drop(external);
    let url = match noop {
        Some((server, url, target)) => {
            drop(target);
            server.stop().await;
            url
        }
        None => args.ceiling_url.clone().unwrap_or_default(),
    };
    let [real_run, ceiling_run] = measured?;

    let mut real = None;
    if let Some(run) = real_run {
        let report = TargetReport::new(&run, &args.mix, None)?;
        writeln!(
            out,
            "\nreal: portfolio-svc {}, deposit-svc {}",
            args.portfolio_url, args.deposit_url
        )?;
        write_target(out, &report)?;
        real = Some(report);
    }
    let mut ceiling = None;
    if let Some(run) = ceiling_run {
        let report = TargetReport::new(&run, &args.mix, Some(sizes.clone()))?;
        let origin = if args.ceiling_url.is_some() {
            "synthetic, in its own process"
        } else if args.ceiling_only {
            "synthetic"
        } else {
            "captured from the real servers"
        };
        let shown: Vec<String> = responses_of(&args.mix)
            .map(|rpc| format!("{rpc} {} B", sizes.get(rpc).copied().unwrap_or(0)))
            .collect();
        writeln!(
            out,
            "\nceiling: no-op server at {url}, responses {origin} ({})",
            shown.join(", ")
        )?;
        write_target(out, &report)?;
        ceiling = Some(report);
    }

    let ratios = match (&real, &ceiling) {
        (Some(real), Some(ceiling)) => {
            let ratios = report::ratios(real, ceiling);
            writeln!(out, "\nreal / ceiling")?;
            write!(out, "{}", report::render_ratios(&ratios))?;
            Some(ratios)
        }
        _ => None,
    };
    let unexpected_errors = [&real, &ceiling]
        .into_iter()
        .flatten()
        .map(TargetReport::unexpected_errors)
        .sum();
    let report = BenchReport {
        config,
        real,
        ceiling,
        ratios,
        unexpected_errors,
        ok: unexpected_errors == 0,
    };
    if let Some(path) = &args.json {
        write_json(path, &report).map_err(|reason| BenchError::Write {
            path: path.clone(),
            reason,
        })?;
    }
    Ok(report)
}

/// Writes `report` as pretty JSON to `path`.
fn write_json(path: &std::path::Path, report: &impl Serialize) -> Result<(), String> {
    let json = serde_json::to_vec_pretty(report).map_err(|e| e.to_string())?;
    std::fs::write(path, json).map_err(|e| e.to_string())
}

/// Runs the measurement `args` describes, printing the table to `out`; the caller prints
/// the verdict.
pub async fn freshness(
    args: &FreshnessArgs,
    out: &mut (dyn Write + Send),
) -> Result<FreshnessReport, LedgerError> {
    let keys = args.jwt.load()?;
    let options = day(args.accounts, args.seed, args.instruments);
    let index = args.account_index;
    let account = tokio::task::spawn_blocking(move || {
        let found = match usize::try_from(index) {
            Ok(at) => invest_daygen::accounts(&options)?.nth(at),
            Err(_) => None,
        };
        found.ok_or_else(|| {
            LedgerError::NotInDay(format!(
                "--account-index {index}: the day of --accounts {} --seed {} has no account there (positions start at 0)",
                options.accounts, options.seed
            ))
        })
    })
    .await??;
    let config = FreshnessConfig {
        apply_url: args.apply_url.clone(),
        read_url: args.read_url.clone(),
        accounts: args.accounts,
        seed: args.seed,
        instruments: args.instruments,
        account_index: args.account_index,
        account_number: account.account_number,
        owner: account.customer_name,
        count: args.count,
        give_up: args.give_up,
        json: args.json.as_ref().map(|p| p.display().to_string()),
    };
    let report = freshness::measure(config, Arc::new(keys), out).await?;
    if let Some(path) = &args.json {
        write_json(path, &report).map_err(|reason| LedgerError::Write {
            path: path.clone(),
            reason,
        })?;
    }
    Ok(report)
}

/// Applies the deposits `args` describes, printing what was done to `out`.
pub async fn credit(args: &CreditArgs, out: &mut (dyn Write + Send)) -> Result<(), LedgerError> {
    let keys = Arc::new(args.jwt.load()?);
    let channel = invest_cli::connect(&args.portfolio_url, 1).await?;
    let plan = Credit {
        account: args.account.clone(),
        count: args.count,
        concurrency: args.concurrency,
    };
    let credited = ledger::credit(channel, keys, &plan).await;
    let seconds = credited.took.as_secs_f64();
    writeln!(
        out,
        "credit: {} of {} deposits of 1 won applied to account {} through {} in {:.2} s ({:.0} deposits/s)",
        credited.applied,
        args.count,
        args.account.as_str(),
        args.portfolio_url,
        seconds,
        if seconds > 0.0 {
            credited.applied as f64 / seconds
        } else {
            0.0
        }
    )?;
    credited.failure.map_or(Ok(()), Err)
}

/// Runs `workload` against each present target, in `rounds` rounds that alternate them,
/// and merges each target's rounds.
async fn measure(
    workload: &Workload,
    rounds: u32,
    population: &Arc<Population>,
    targets: [Option<&Target>; 2],
) -> Result<[Option<RunResult>; 2], BenchError> {
    let mut results: [Option<RunResult>; 2] = [None, None];
    for round in 0..rounds {
        let this_round = workload.round(round, rounds);
        for ((name, target), result) in ["real servers", "no-op server"]
            .into_iter()
            .zip(targets)
            .zip(&mut results)
        {
            let Some(target) = target else { continue };
            tracing::info!(round, "running against the {name}");
            let run = workload::run(&this_round, population.clone(), target).await?;
            match result {
                Some(so_far) => so_far.absorb(&run)?,
                None => *result = Some(run),
            }
        }
    }
    Ok(results)
}

/// The RPCs whose responses the mix receives.
fn responses_of(mix: &Mix) -> impl Iterator<Item = &'static str> + '_ {
    mix.operations().flat_map(|op| match op {
        Operation::Deposit => vec!["RegisterDeposit", "ConfirmDeposit"],
        Operation::Withdrawal => vec!["RegisterWithdrawal", "ConfirmWithdrawal"],
        other => vec![other.report_name()],
    })
}

fn write_target(out: &mut (dyn Write + Send), report: &TargetReport) -> std::io::Result<()> {
    let unmeasured = &report.unmeasured;
    writeln!(
        out,
        "  {:.2} s measured; {} requests outside the window (warm-up, tail)",
        report.duration_s, unmeasured.requests
    )?;
    write!(out, "{}", report::render_table(report))?;
    if report.unexpected_errors() > 0 {
        writeln!(out, "  errors:")?;
        write!(out, "{}", report::render_errors(report))?;
    }
    Ok(())
}

fn config(args: &BenchArgs, population: &Population, rounds: u32) -> ConfigReport {
    ConfigReport {
        portfolio_url: args.portfolio_url.clone(),
        deposit_url: args.deposit_url.clone(),
        accounts: args.accounts,
        seed: args.seed,
        instruments: args.instruments,
        sample: args.sample,
        sampled_accounts: population.accounts.len(),
        sampled_customers: population.customers.len(),
        stride: population.stride,
        only_account: args
            .only_account
            .as_ref()
            .map(|number| number.as_str().to_owned()),
        mix: ConfigReport::mix_map(&args.mix),
        skew: args.skew,
        concurrency: args.concurrency,
        connections: args.connections,
        duration_s: args
            .requests
            .is_none()
            .then_some(args.duration.as_secs_f64()),
        requests: args.requests,
        warmup_s: args.warmup.as_secs_f64(),
        timeout_s: args.timeout.as_secs_f64(),
        ceiling: args.ceiling,
        ceiling_only: args.ceiling_only,
        ceiling_url: args.ceiling_url.clone(),
        rounds,
        json: args.json.as_ref().map(|p| p.display().to_string()),
    }
}

async fn noop(args: &NoopArgs) -> Exit {
    let options = day(args.accounts, args.seed, args.instruments);
    let canned = tokio::task::spawn_blocking(move || {
        let sample = Sample::take(&options, 1_000)?;
        let instruments = invest_daygen::instruments(&options)?;
        Ok::<_, GenError>(CannedResponses::synthetic(
            &sample.representative,
            &instruments,
        ))
    })
    .await;
    let canned = match canned {
        Ok(Ok(canned)) => canned,
        Ok(Err(e @ GenError::Options(_))) => return fail(Exit::Usage, e),
        Ok(Err(e)) => return fail(Exit::Unexpected, e),
        Err(e) => return fail(Exit::Unexpected, e),
    };
    let server = match NoopServer::start(args.listen, canned).await {
        Ok(server) => server,
        Err(e) => {
            return fail(
                Exit::Unexpected,
                format!("cannot listen on {}: {e}", args.listen),
            );
        }
    };
    tracing::info!(addr = %server.addr(), "no-op server listening on {}", server.addr());
    println!("listening on {}", server.addr());
    tokio::select! {
        served = server.wait() => match served {
            Ok(()) => Exit::Ok,
            Err(e) => fail(Exit::Unexpected, format!("the no-op server failed: {e}")),
        },
        () = termination() => Exit::Ok,
    }
}

/// Ctrl-C, or SIGTERM on Unix.
async fn termination() {
    #[cfg(unix)]
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        return;
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn fail(exit: Exit, message: impl std::fmt::Display) -> Exit {
    eprintln!("loadgen: {message}");
    exit
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn the_command_line_parses() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "loadgen",
            "bench",
            "--accounts",
            "1000",
            "--mix",
            "deposit=1",
            "--requests",
            "10",
        ])
        .unwrap();
        let Command::Bench(args) = cli.command else {
            panic!("not bench");
        };
        assert_eq!(args.requests, Some(10));
        assert!(args.mix.uses_deposit() && !args.mix.uses_portfolio());
        for bad in [
            &["loadgen", "bench"][..],
            &["loadgen", "bench", "--accounts", "5", "--mix", "x=1"],
            &[
                "loadgen",
                "bench",
                "--accounts",
                "5",
                "--ceiling",
                "--ceiling-only",
            ],
            &[
                "loadgen",
                "bench",
                "--accounts",
                "5",
                "--requests",
                "5",
                "--duration",
                "1s",
            ],
            &["loadgen", "bench", "--accounts", "5", "--concurrency", "0"],
            &["loadgen", "bench", "--accounts", "0"],
            &["loadgen", "bench", "--accounts", "5", "--skew", "-0.5"],
            &["loadgen", "bench", "--accounts", "5", "--skew", "nan"],
            &["loadgen", "bench", "--accounts", "5", "--skew", "inf"],
            &[
                "loadgen",
                "bench",
                "--accounts",
                "5",
                "--only-account",
                "12ab56",
            ],
            &[
                "loadgen",
                "bench",
                "--accounts",
                "5",
                "--only-account",
                "123456",
                "--sample",
                "5",
            ],
            &[
                "loadgen",
                "freshness",
                "--accounts",
                "5",
                "--apply-url",
                "x",
            ],
            &[
                "loadgen",
                "freshness",
                "--accounts",
                "5",
                "--apply-url",
                "x",
                "--read-url",
                "y",
                "--count",
                "0",
            ],
            &["loadgen", "credit", "--account", "123456"],
            &["loadgen", "credit", "--account", "12345", "--count", "1"],
            &[
                "loadgen",
                "credit",
                "--account",
                "123456",
                "--count",
                "1",
                "--concurrency",
                "0",
            ],
        ] {
            let err = Cli::try_parse_from(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn the_new_subcommands_parse_with_their_defaults() {
        let cli = Cli::try_parse_from([
            "loadgen",
            "bench",
            "--accounts",
            "1000",
            "--skew",
            "1.1",
            "--only-account",
            "0012345678",
        ])
        .unwrap();
        let Command::Bench(args) = cli.command else {
            panic!("not bench");
        };
        assert_eq!(args.skew, 1.1);
        assert_eq!(
            args.only_account.as_ref().map(AccountNumber::as_str),
            Some("0012345678")
        );
        let cli = Cli::try_parse_from(["loadgen", "bench", "--accounts", "5"]).unwrap();
        let Command::Bench(args) = cli.command else {
            panic!("not bench");
        };
        assert_eq!((args.skew, args.only_account), (0.0, None));

        let cli = Cli::try_parse_from([
            "loadgen",
            "freshness",
            "--apply-url",
            "http://a:50051",
            "--read-url",
            "http://b:50051",
            "--accounts",
            "10",
        ])
        .unwrap();
        let Command::Freshness(args) = cli.command else {
            panic!("not freshness");
        };
        assert_eq!((args.count, args.account_index, args.seed), (200, 0, 1));
        assert_eq!(args.give_up, Duration::from_secs(10));
        assert_eq!(args.json, None);

        let cli = Cli::try_parse_from([
            "loadgen",
            "credit",
            "--account",
            "123456",
            "--count",
            "10000",
        ])
        .unwrap();
        let Command::Credit(args) = cli.command else {
            panic!("not credit");
        };
        assert_eq!((args.count, args.concurrency), (10_000, 8));
        assert_eq!(args.account.as_str(), "123456");
    }

    fn smoke_args(json: Option<PathBuf>) -> BenchArgs {
        let cli = Cli::try_parse_from([
            "loadgen",
            "bench",
            "--accounts",
            "200",
            "--seed",
            "3",
            "--mix",
            "get_account=2,list_holdings=1,list_accounts=1,deposit=1",
            "--concurrency",
            "4",
            "--connections",
            "2",
            "--requests",
            "200",
            "--warmup",
            "0s",
            "--ceiling-only",
        ])
        .unwrap();
        let Command::Bench(mut args) = cli.command else {
            panic!("not bench");
        };
        // No secret from the environment: the throwaway one must do.
        args.jwt = JwtSecretArgs::default();
        args.json = json;
        *args
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_ceiling_only_run_adds_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        let args = smoke_args(Some(path.clone()));
        let mut out = Vec::new();
        let report = bench(&args, &mut out).await.unwrap();
        let text = String::from_utf8(out).unwrap();

        assert!(report.ok, "{text}");
        assert_eq!(report.unexpected_errors, 0);
        assert!(report.real.is_none() && report.ratios.is_none());
        let ceiling = report.ceiling.as_ref().unwrap();
        assert_eq!(ceiling.total.requests, 200, "{text}");
        assert_eq!(ceiling.rpcs.values().map(|r| r.requests).sum::<u64>(), 200);
        assert_eq!(ceiling.rpcs.len(), 4);
        for (rpc, figures) in &ceiling.rpcs {
            assert!(figures.requests > 0, "{rpc} never ran");
            assert!(figures.errors.is_empty(), "{rpc}: {:?}", figures.errors);
            let latency = figures.latency_us.unwrap();
            assert!(latency.p50 <= latency.p99 && latency.p99 <= latency.max);
        }
        assert!(ceiling.duration_s > 0.0);
        let bytes = ceiling.response_bytes.as_ref().unwrap();
        assert!(bytes["ListHoldings"] > bytes["GetAccount"]);

        for line in ["ceiling: no-op server at http://127.0.0.1:", "  total "] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(json["ok"], true);
        assert_eq!(json["real"], serde_json::Value::Null);
        assert_eq!(json["ceiling"]["total"]["requests"], 200);
        assert_eq!(json["config"]["requests"], 200);
        assert_eq!(json["config"]["mix"]["get_account"], 2);
        assert_eq!(json["config"]["sampled_accounts"], 200);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rounds_add_up_to_the_requested_measurement() {
        let mut args = smoke_args(None);
        args.rounds = 3;
        let mut out = Vec::new();
        let report = bench(&args, &mut out).await.unwrap();
        let text = String::from_utf8(out).unwrap();

        assert!(report.ok, "{text}");
        assert!(text.contains("in 3 alternating rounds"), "{text}");
        assert_eq!(report.config.rounds, 3);
        let ceiling = report.ceiling.as_ref().unwrap();
        // 200 operations in rounds of 67, 67 and 66: merged, nothing lost or counted twice.
        assert_eq!(ceiling.total.requests, 200, "{text}");
        assert_eq!(ceiling.rpcs.values().map(|r| r.requests).sum::<u64>(), 200);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreachable_server_fails_with_exit_1() {
        // A port nothing listens on: bind one, then free it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut args = smoke_args(None);
        args.ceiling_only = false;
        args.portfolio_url = format!("http://127.0.0.1:{port}");
        args.jwt.jwt_secret = Some("a-secret".into());
        let err = bench(&args, &mut Vec::new()).await.unwrap_err();
        assert!(matches!(err, BenchError::Connect(_)), "{err}");
        assert_eq!(err.exit(), Exit::Unexpected);

        args.jwt.jwt_secret = None;
        let err = bench(&args, &mut Vec::new()).await.unwrap_err();
        assert_eq!(err.exit(), Exit::Usage, "no secret for real servers");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn skew_and_one_account_reach_the_report() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        let mut args = smoke_args(Some(path.clone()));
        args.skew = 1.1;
        let mut out = Vec::new();
        let report = bench(&args, &mut out).await.unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(report.ok, "{text}");
        assert!(
            text.contains("200 of 200 accounts (")
                && text.contains(", skew 1.1 (the hottest 1% of accounts get "),
            "{text}"
        );
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(json["config"]["skew"], 1.1);
        assert_eq!(json["config"]["only_account"], serde_json::Value::Null);

        let options = day(200, 3, 14);
        let wanted = invest_daygen::accounts(&options).unwrap().nth(17).unwrap();
        let mut args = smoke_args(Some(path.clone()));
        args.only_account = Some(AccountNumber::parse(&wanted.account_number).unwrap());
        let mut out = Vec::new();
        let report = bench(&args, &mut out).await.unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(report.ok, "{text}");
        assert_eq!(
            (
                report.config.sampled_accounts,
                report.config.sampled_customers
            ),
            (1, 1)
        );
        assert_eq!(report.config.stride, 0);
        assert!(
            text.contains(&format!(
                "1 of 200 accounts (1 customers), only account {}, skew 0 (uniform)",
                wanted.account_number
            )),
            "{text}"
        );
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(
            json["config"]["only_account"],
            wanted.account_number.as_str()
        );
        assert_eq!(json["ceiling"]["total"]["requests"], 200);

        args.only_account = Some(AccountNumber::parse("000001").unwrap());
        let err = bench(&args, &mut Vec::new()).await.unwrap_err();
        assert!(matches!(err, BenchError::NotInDay(_)), "{err}");
        assert_eq!(err.exit(), Exit::Usage);
        assert!(err.to_string().contains("--only-account 000001"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn freshness_and_credit_run_from_the_command_line() {
        let options = day(30, 4, 14);
        let account = invest_daygen::accounts(&options).unwrap().nth(2).unwrap();
        let server =
            crate::ledger::fake::start(&account.customer_name, &account.account_number, 2).await;
        let secret = std::str::from_utf8(crate::ledger::fake::SECRET).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("freshness.json");
        let cli = Cli::try_parse_from([
            "loadgen",
            "freshness",
            "--apply-url",
            &server.url,
            "--read-url",
            &server.url,
            "--accounts",
            "30",
            "--seed",
            "4",
            "--account-index",
            "2",
            "--count",
            "5",
            "--json",
            path.to_str().unwrap(),
        ])
        .unwrap();
        let Command::Freshness(mut args) = cli.command else {
            panic!("not freshness");
        };
        args.jwt = JwtSecretArgs {
            jwt_secret: Some(secret.to_owned()),
            ..JwtSecretArgs::default()
        };
        let mut out = Vec::new();
        let report = freshness(&args, &mut out).await.unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(report.ok, "{text}");
        assert_eq!(report.reads_per_deposit, Some(2.0));
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(
            json["config"]["account_number"],
            account.account_number.as_str()
        );
        assert_eq!(json["config"]["count"], 5);
        assert_eq!(json["from_call_us"]["count"], 5);
        assert_eq!(json["timeouts"], 0);

        args.account_index = 30;
        let err = freshness(&args, &mut Vec::new()).await.unwrap_err();
        assert!(matches!(err, LedgerError::NotInDay(_)), "{err}");
        assert_eq!(err.exit(), Exit::Usage);

        let cli = Cli::try_parse_from([
            "loadgen",
            "credit",
            "--portfolio-url",
            &server.url,
            "--account",
            &account.account_number,
            "--count",
            "40",
            "--concurrency",
            "3",
        ])
        .unwrap();
        let Command::Credit(mut args) = cli.command else {
            panic!("not credit");
        };
        args.jwt = JwtSecretArgs {
            jwt_secret: Some(secret.to_owned()),
            ..JwtSecretArgs::default()
        };
        let mut out = Vec::new();
        credit(&args, &mut out).await.unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with(&format!(
                "credit: 40 of 40 deposits of 1 won applied to account {}",
                account.account_number
            )),
            "{text}"
        );
        assert_eq!(server.state.lock().unwrap().credited, 5 + 40);

        args.jwt = JwtSecretArgs::default();
        let err = credit(&args, &mut Vec::new()).await.unwrap_err();
        assert_eq!(err.exit(), Exit::Usage, "no secret");
    }
}
