//! `loadgen`: a closed-loop load generator for portfolio-svc and deposit-svc, measured against
//! a ceiling.
//!
//! The workload acts as the customers of a generated day (the one `loader gen --accounts N
//! --seed S` wrote and `loader load` loaded): up to `--sample` accounts taken at an even stride,
//! one token minted per owner before the run. `--concurrency` workers share `--connections`
//! channels; each sends one operation at a time, chosen by `--mix` from its own seeded random
//! stream, and records the latency of each success in its own histogram (microseconds,
//! 3 significant figures); the histograms are merged at the end. Operations completed during
//! the warm-up (or after the end of a timed run) are not in the figures.
//!
//! The ceiling is a no-op server on the same runtime ([`noop`]) that answers with responses
//! of the real size (captured from the real servers, or synthetic with `--ceiling-only`).
//! The same workload runs against it, so every figure also has a ratio measured in the same
//! invocation: how far the real servers are from doing nothing at all.
//!
//! The workload sends only valid requests, so any error fails the run (exit 1).
//!
//! Beside the benchmark, `freshness` measures how long a deposit applied through one
//! portfolio-svc replica takes to show on another, and `credit` gives one account many
//! deposits, both through `PortfolioLedger.ApplyDeposit` as deposit-svc calls it.
//!
//! - [`cli`]: the command line and the run of a benchmark.
//! - [`mix`]: the operations and their weights.
//! - [`population`]: the sampled accounts and their owners' tokens.
//! - [`workload`]: the workers, the channels, the capture of real responses.
//! - [`stats`]: histograms and error counts, merged.
//! - [`noop`]: the ceiling server.
//! - [`report`]: the JSON document and the tables.
//! - [`ledger`]: deposits sent straight to portfolio-svc's ledger, and `credit`.
//! - [`freshness`]: the delay until another replica shows a deposit.
//! - [`steady`]: an open-loop workload at a fixed rate, every request written down (to watch
//!   the daily switch).

pub mod cli;
pub mod freshness;
pub mod ledger;
pub mod mix;
pub mod noop;
pub mod population;
pub mod report;
pub mod stats;
pub mod steady;
pub mod workload;
