//! `loadgen steady`: an open-loop workload at a fixed rate, for watching latency while
//! something else happens (a daily load, its switch, the prune after it).
//!
//! Each operation is sent at its scheduled moment in a task of its own, whether or not the
//! previous ones have answered, so that a stall shows as the latency of every request caught
//! in it (a closed loop would send fewer requests exactly when the server is slow). Every
//! request is written as one CSV line when it ends: `started_unix_ms,operation,latency_us,code`,
//! where `code` is `OK` or the gRPC status code's name (a request without an answer within
//! `--timeout` is `DEADLINE_EXCEEDED`).

use std::{
    io::Write,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;

use crate::{
    mix::{Mix, Operation},
    population::{AccountPicker, Population},
    stats::code_name,
    workload::{Call, MAX_DEPOSIT_WON, Target, send},
};

/// What a steady run does.
#[derive(Debug, Clone)]
pub struct SteadyConfig {
    /// Operation weights.
    pub mix: Mix,
    /// Operations started per second.
    pub rate: f64,
    /// Client-side deadline of one RPC.
    pub timeout: Duration,
    /// Seed of the choices.
    pub seed: u64,
}

/// Counts of a finished run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SteadySummary {
    /// Operations sent.
    pub sent: u64,
    /// Of which answered with an error (or not within the timeout).
    pub errors: u64,
}

/// One request as written.
struct Line {
    started_ms: u128,
    operation: Operation,
    latency: Duration,
    code: &'static str,
}

/// Sends `config.rate` operations per second until `stop` completes, then waits for those in
/// flight (each at most `config.timeout`), writing one line per request to `out`.
pub async fn run(
    config: &SteadyConfig,
    population: Arc<Population>,
    target: &Target,
    stop: impl std::future::Future<Output = ()>,
    mut out: impl Write + Send + 'static,
) -> std::io::Result<SteadySummary> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Line>();
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<SteadySummary> {
        let mut summary = SteadySummary::default();
        writeln!(out, "started_unix_ms,operation,latency_us,code")?;
        while let Some(line) = rx.blocking_recv() {
            summary.sent += 1;
            summary.errors += u64::from(line.code != "OK");
            writeln!(
                out,
                "{},{},{},{}",
                line.started_ms,
                line.operation.flag_name(),
                line.latency.as_micros(),
                line.code
            )?;
        }
        out.flush()?;
        Ok(summary)
    });

    let picker = AccountPicker::new(population.accounts.len(), 0.0);
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let period = Duration::from_secs_f64(1.0 / config.rate);
    let mut ticks = tokio::time::interval(period);
    // Late ticks are sent at once, not dropped: the offered rate stays the configured one.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    tokio::pin!(stop);
    let mut in_flight = tokio::task::JoinSet::new();
    let mut id = 0usize;
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = ticks.tick() => {}
        }
        let operation = config.mix.pick(&mut rng);
        let index = picker.pick(&mut rng);
        let amount = rng.random_range(1..=MAX_DEPOSIT_WON);
        let population = population.clone();
        let mut clients = target.clients(id);
        id = id.wrapping_add(1);
        let (tx, timeout) = (tx.clone(), config.timeout);
        in_flight.spawn(async move {
            let account = &population.accounts[index];
            let customer = population.owner(account);
            let call = Call::new(operation, account, customer, amount);
            let started_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis();
            let started = Instant::now();
            let outcome = send(&mut clients, &call, timeout).await;
            let _ = tx.send(Line {
                started_ms,
                operation,
                latency: started.elapsed(),
                code: match &outcome {
                    Ok(()) => "OK",
                    Err(failure) => code_name(failure.status.code()),
                },
            });
        });
        // Reap the finished ones as we go, so that a long run keeps no handles.
        while in_flight.try_join_next().is_some() {}
    }
    while in_flight.join_next().await.is_some() {}
    drop(tx);
    writer.await.map_err(std::io::Error::other)?
}
