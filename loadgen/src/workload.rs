//! The closed-loop workers: `concurrency` tasks over `connections` channels, each sending one
//! operation at a time as a sampled customer and recording what happened.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use invest_proto::{
    deposit::v1::{
        ConfirmDepositRequest, ConfirmWithdrawalRequest, RegisterDepositRequest,
        RegisterWithdrawalRequest, deposit_service_client::DepositServiceClient,
        withdrawal_service_client::WithdrawalServiceClient,
    },
    portfolio::v1::{
        GetAccountRequest, ListAccountsRequest, ListHoldingsRequest,
        portfolio_service_client::PortfolioServiceClient,
    },
};
use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use tokio::task::JoinError;
use tonic::{Request, Response, Status, transport::Channel};

use crate::{
    mix::{Mix, Operation},
    noop::CannedResponses,
    population::{AccountPicker, Customer, Population, SampledAccount},
    stats::Recorder,
};
use invest_proto::signature::Signature;

/// Deposits of the workload are 1 to this many won: small, since every one is credited.
pub const MAX_DEPOSIT_WON: i64 = 1_000;

/// When the measurement ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// After this long (after the warm-up).
    After(Duration),
    /// After this many operations (issued after the warm-up).
    Requests(u64),
}

/// The same for every target of one invocation.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Operation weights.
    pub mix: Mix,
    /// Closed-loop workers.
    pub concurrency: usize,
    /// End of the measurement.
    pub stop: Stop,
    /// Unrecorded time before it.
    pub warmup: Duration,
    /// Client-side deadline of one RPC (DEADLINE_EXCEEDED beyond).
    pub timeout: Duration,
    /// Seed of the workers' random streams.
    pub seed: u64,
    /// Skew of the accounts' popularity (`--skew`; 0: uniform, see [`AccountPicker`]).
    pub skew: f64,
}

pub use invest_cli::ConnectError;

/// Where a run goes: `connections` channels (TCP connections) per service it uses.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// To portfolio-svc (empty when the mix has no portfolio RPC).
    pub portfolio: Vec<Channel>,
    /// To deposit-svc (empty when the mix has no deposit).
    pub deposit: Vec<Channel>,
}

impl Target {
    /// Opens the channels the mix needs.
    pub async fn connect(
        portfolio_url: &str,
        deposit_url: &str,
        mix: &Mix,
        connections: usize,
    ) -> Result<Self, ConnectError> {
        let mut target = Self::default();
        for _ in 0..connections {
            if mix.uses_portfolio() {
                target.portfolio.push(connect(portfolio_url).await?);
            }
            if mix.uses_deposit() {
                target.deposit.push(connect(deposit_url).await?);
            }
        }
        Ok(target)
    }

    /// The clients of worker `id`: its channels round-robin.
    pub(crate) fn clients(&self, id: usize) -> Clients {
        Clients {
            portfolio: pick(&self.portfolio, id).map(PortfolioServiceClient::new),
            deposit: pick(&self.deposit, id).map(DepositServiceClient::new),
            withdrawal: pick(&self.deposit, id).map(WithdrawalServiceClient::new),
        }
    }
}

fn pick(channels: &[Channel], id: usize) -> Option<Channel> {
    channels.get(id.checked_rem(channels.len())?).cloned()
}

/// One HTTP/2 connection: each `connect` opens its own (one attempt: the servers are up).
async fn connect(url: &str) -> Result<Channel, ConnectError> {
    invest_cli::connect(url, 1).await
}

#[derive(Debug, Clone)]
pub(crate) struct Clients {
    portfolio: Option<PortfolioServiceClient<Channel>>,
    deposit: Option<DepositServiceClient<Channel>>,
    withdrawal: Option<WithdrawalServiceClient<Channel>>,
}

/// A failed RPC.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The RPC that failed (for a deposit, the phase).
    pub method: &'static str,
    /// What it answered.
    pub status: Status,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} failed: {}: {}",
            self.method,
            crate::stats::code_name(self.status.code()),
            self.status.message()
        )
    }
}

impl std::error::Error for Failure {}

/// A request as `customer`.
fn authorized<T>(message: T, customer: &Customer) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", customer.authorization.clone());
    request
}

/// Awaits one RPC with a client-side deadline.
pub(crate) async fn within<T>(
    method: &'static str,
    timeout: Duration,
    call: impl Future<Output = Result<Response<T>, Status>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(Failure { method, status }),
        Err(_) => Err(Failure {
            method,
            status: Status::deadline_exceeded(format!(
                "no answer within {} (client-side timeout)",
                humantime::format_duration(timeout)
            )),
        }),
    }
}

fn not_connected(method: &'static str) -> Failure {
    Failure {
        method,
        status: Status::failed_precondition("loadgen opened no channel to this service"),
    }
}

/// What one operation sends.
pub(crate) struct Call<'a> {
    pub(crate) operation: Operation,
    pub(crate) account: &'a SampledAccount,
    pub(crate) customer: &'a Customer,
    pub(crate) amount: i64,
    pub(crate) signature: String,
}

impl<'a> Call<'a> {
    /// An operation as `customer`; a deposit gets its signature now, before phase 1 (the
    /// client knows it before it starts).
    pub(crate) fn new(
        operation: Operation,
        account: &'a SampledAccount,
        customer: &'a Customer,
        amount: i64,
    ) -> Self {
        let signature = if operation.is_two_phase() {
            Signature::of(&account.account_number, &customer.name, amount).to_hex()
        } else {
            String::new()
        };
        Self {
            operation,
            account,
            customer,
            amount,
            signature,
        }
    }
}

/// Sends one operation; for a deposit, both phases.
pub(crate) async fn send(
    clients: &mut Clients,
    call: &Call<'_>,
    timeout: Duration,
) -> Result<(), Failure> {
    let number = || call.account.account_number.clone();
    match call.operation {
        Operation::GetAccount => {
            let client = clients
                .portfolio
                .as_mut()
                .ok_or_else(|| not_connected("GetAccount"))?;
            let request = GetAccountRequest {
                account_number: number(),
            };
            within(
                "GetAccount",
                timeout,
                client.get_account(authorized(request, call.customer)),
            )
            .await?;
        }
        Operation::ListHoldings => {
            let client = clients
                .portfolio
                .as_mut()
                .ok_or_else(|| not_connected("ListHoldings"))?;
            let request = ListHoldingsRequest {
                account_number: number(),
                ..Default::default()
            };
            within(
                "ListHoldings",
                timeout,
                client.list_holdings(authorized(request, call.customer)),
            )
            .await?;
        }
        Operation::ListAccounts => {
            let client = clients
                .portfolio
                .as_mut()
                .ok_or_else(|| not_connected("ListAccounts"))?;
            within(
                "ListAccounts",
                timeout,
                client.list_accounts(authorized(ListAccountsRequest::default(), call.customer)),
            )
            .await?;
        }
        Operation::Deposit => {
            deposit(clients, call, timeout).await?;
        }
        Operation::Withdrawal => {
            withdrawal(clients, call, timeout).await?;
        }
    }
    Ok(())
}

/// Both phases of a withdrawal; returns the two responses.
async fn withdrawal(
    clients: &mut Clients,
    call: &Call<'_>,
    timeout: Duration,
) -> Result<CannedWithdrawal, Failure> {
    let client = clients
        .withdrawal
        .as_mut()
        .ok_or_else(|| not_connected("RegisterWithdrawal"))?;
    let request = RegisterWithdrawalRequest {
        account_number: call.account.account_number.clone(),
        customer_name: call.customer.name.clone(),
        amount: call.amount,
        request_id: String::new(),
    };
    let registered = within(
        "RegisterWithdrawal",
        timeout,
        client.register_withdrawal(authorized(request, call.customer)),
    )
    .await?;
    let request = ConfirmWithdrawalRequest {
        transfer_id: registered.transfer_id.clone(),
        signature: call.signature.clone(),
    };
    let confirmed = within(
        "ConfirmWithdrawal",
        timeout,
        client.confirm_withdrawal(authorized(request, call.customer)),
    )
    .await?;
    Ok((registered, confirmed))
}

type CannedWithdrawal = (
    invest_proto::deposit::v1::RegisterWithdrawalResponse,
    invest_proto::deposit::v1::ConfirmWithdrawalResponse,
);

/// A withdrawal of the workload takes 1 won: every generated account holds 10,000 won or more
/// of cash, so no run exhausts one.
pub const WITHDRAWAL_WON: i64 = 1;

/// Both phases of a deposit; returns the two responses.
async fn deposit(
    clients: &mut Clients,
    call: &Call<'_>,
    timeout: Duration,
) -> Result<CannedDeposit, Failure> {
    let client = clients
        .deposit
        .as_mut()
        .ok_or_else(|| not_connected("RegisterDeposit"))?;
    let request = RegisterDepositRequest {
        account_number: call.account.account_number.clone(),
        customer_name: call.customer.name.clone(),
        amount: call.amount,
        request_id: String::new(),
    };
    let registered = within(
        "RegisterDeposit",
        timeout,
        client.register_deposit(authorized(request, call.customer)),
    )
    .await?;
    let request = ConfirmDepositRequest {
        transfer_id: registered.transfer_id.clone(),
        signature: call.signature.clone(),
    };
    let confirmed = within(
        "ConfirmDeposit",
        timeout,
        client.confirm_deposit(authorized(request, call.customer)),
    )
    .await?;
    Ok((registered, confirmed))
}

type CannedDeposit = (
    invest_proto::deposit::v1::RegisterDepositResponse,
    invest_proto::deposit::v1::ConfirmDepositResponse,
);

/// The measured window of one run.
#[derive(Debug)]
enum Window {
    /// Operations completed before this instant (and after the warm-up).
    Until(Instant),
    /// The first `count` operations issued after the warm-up.
    Requests { count: u64, issued: AtomicU64 },
}

#[derive(Debug)]
struct Plan {
    mix: Mix,
    population: Arc<Population>,
    /// Chooses each operation's account among `population.accounts`.
    picker: AccountPicker,
    seed: u64,
    timeout: Duration,
    measure_from: Instant,
    window: Window,
}

/// What one run against one target recorded.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// All workers merged.
    pub recorder: Recorder,
    /// Length of the measured window.
    pub measured: Duration,
}

impl Workload {
    /// Round `round` (from 0) of `rounds` that split this workload: an even share of the
    /// measured time or operations (the remainder to the first rounds), the full warm-up
    /// first and a short settling time after a switch of target, and a sequence of choices of
    /// its own (the same for every target in that round), so that rounds do not replay the
    /// same accounts.
    pub fn round(&self, round: u32, rounds: u32) -> Self {
        let stop = match self.stop {
            Stop::After(length) => Stop::After(length / rounds),
            Stop::Requests(count) => {
                let (share, rest) = (count / u64::from(rounds), count % u64::from(rounds));
                Stop::Requests(share + u64::from(u64::from(round) < rest))
            }
        };
        let warmup = if round == 0 {
            self.warmup
        } else {
            self.warmup.min(SETTLE)
        };
        Self {
            stop,
            warmup,
            seed: self.seed.wrapping_add(u64::from(round)),
            ..self.clone()
        }
    }
}

/// Unrecorded time at the start of every round but the first.
const SETTLE: Duration = Duration::from_millis(500);

impl RunResult {
    /// Adds another round against the same target.
    pub fn absorb(&mut self, round: &Self) -> Result<(), hdrhistogram::errors::AdditionError> {
        self.recorder.merge(&round.recorder)?;
        self.measured += round.measured;
        Ok(())
    }
}

/// Why a run could not finish.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A worker panicked (a bug).
    #[error("a worker failed: {0}")]
    Worker(#[from] JoinError),
    /// Histograms could not be merged (cannot happen with auto-resizing histograms).
    #[error("cannot merge the latency histograms: {0}")]
    Merge(#[from] hdrhistogram::errors::AdditionError),
}

/// Runs `workload` against `target` as the customers of `population`.
pub async fn run(
    workload: &Workload,
    population: Arc<Population>,
    target: &Target,
) -> Result<RunResult, RunError> {
    // Built before the clock starts: a skewed picker adds up one weight per sampled account.
    let picker = AccountPicker::new(population.accounts.len(), workload.skew);
    let start = Instant::now();
    let measure_from = start + workload.warmup;
    let window = match workload.stop {
        Stop::After(length) => Window::Until(measure_from + length),
        Stop::Requests(count) => Window::Requests {
            count,
            issued: AtomicU64::new(0),
        },
    };
    let plan = Arc::new(Plan {
        mix: workload.mix,
        population,
        picker,
        seed: workload.seed,
        timeout: workload.timeout,
        measure_from,
        window,
    });
    let workers: Vec<_> = (0..workload.concurrency)
        .map(|id| tokio::spawn(worker(id, plan.clone(), target.clients(id))))
        .collect();
    let mut recorder = Recorder::default();
    for worker in workers {
        recorder.merge(&worker.await?)?;
    }
    let measured = match workload.stop {
        Stop::After(length) => length,
        Stop::Requests(_) => recorder.last_completion.map_or(Duration::ZERO, |last| {
            last.saturating_duration_since(measure_from)
        }),
    };
    Ok(RunResult { recorder, measured })
}

async fn worker(id: usize, plan: Arc<Plan>, mut clients: Clients) -> Recorder {
    // One stream per worker: the same seed gives every worker the same sequence of
    // operations, accounts and amounts against every target.
    let mut rng = ChaCha8Rng::seed_from_u64(plan.seed);
    rng.set_stream(id as u64);
    let mut recorder = Recorder::default();
    let population = &plan.population;
    loop {
        let operation = plan.mix.pick(&mut rng);
        let account = &population.accounts[plan.picker.pick(&mut rng)];
        let customer = population.owner(account);
        let amount = rng.random_range(1..=MAX_DEPOSIT_WON);
        let amount = if operation == Operation::Withdrawal {
            WITHDRAWAL_WON
        } else {
            amount
        };
        // The client knows the signature before phase 1: not part of the measured time.
        let call = Call::new(operation, account, customer, amount);

        let issued = Instant::now();
        let ticketed = match &plan.window {
            Window::Until(end) if issued >= *end => break,
            Window::Until(_) => false,
            Window::Requests { count, issued: n } => {
                if issued < plan.measure_from {
                    false
                } else if n.fetch_add(1, Ordering::Relaxed) < *count {
                    true
                } else {
                    break;
                }
            }
        };
        let outcome = send(&mut clients, &call, plan.timeout).await;
        let done = Instant::now();
        let measured = match &plan.window {
            Window::Until(end) => done >= plan.measure_from && done < *end,
            Window::Requests { .. } => ticketed,
        };

        match (&outcome, measured) {
            (Ok(()), true) => recorder
                .operation(operation)
                .record_ok(done.duration_since(issued)),
            (Err(failure), true) => recorder
                .operation(operation)
                .record_error(failure.method, failure.status.code()),
            (Ok(()), false) => recorder.unmeasured.requests += 1,
            (Err(failure), false) => {
                recorder.unmeasured.requests += 1;
                *recorder
                    .unmeasured
                    .errors
                    .entry((
                        failure.method,
                        crate::stats::code_name(failure.status.code()),
                    ))
                    .or_default() += 1;
            }
        }
        if let Err(failure) = &outcome {
            recorder.note_message(
                failure.method,
                failure.status.code(),
                failure.status.message(),
            );
        }
        if measured {
            recorder.last_completion = recorder.last_completion.max(Some(done));
        }
    }
    recorder
}

/// Asks the real servers once per RPC the mix uses, as the representative account's owner,
/// and returns `canned` with those answers in place: the ceiling then serves responses of
/// exactly the real size.
pub async fn capture(
    target: &Target,
    population: &Population,
    mix: &Mix,
    timeout: Duration,
    mut canned: CannedResponses,
) -> Result<CannedResponses, Failure> {
    let mut clients = target.clients(0);
    let account = &population.accounts[population.representative_index];
    let customer = population.owner(account);
    let amount = MAX_DEPOSIT_WON / 2;
    let call = Call {
        operation: Operation::GetAccount,
        account,
        customer,
        amount,
        signature: Signature::of(&account.account_number, &customer.name, amount).to_hex(),
    };
    let number = || account.account_number.clone();
    if let Some(client) = clients.portfolio.as_mut() {
        if mix.weight(Operation::GetAccount) > 0 {
            let request = GetAccountRequest {
                account_number: number(),
            };
            canned.account = within(
                "GetAccount",
                timeout,
                client.get_account(authorized(request, customer)),
            )
            .await?;
        }
        if mix.weight(Operation::ListHoldings) > 0 {
            let request = ListHoldingsRequest {
                account_number: number(),
                ..Default::default()
            };
            canned.holdings = within(
                "ListHoldings",
                timeout,
                client.list_holdings(authorized(request, customer)),
            )
            .await?;
        }
        if mix.weight(Operation::ListAccounts) > 0 {
            canned.accounts = within(
                "ListAccounts",
                timeout,
                client.list_accounts(authorized(ListAccountsRequest::default(), customer)),
            )
            .await?;
        }
    }
    if mix.weight(Operation::Deposit) > 0 {
        (canned.registered, canned.confirmed) = deposit(&mut clients, &call, timeout).await?;
    }
    if mix.weight(Operation::Withdrawal) > 0 {
        let call = Call::new(Operation::Withdrawal, account, customer, WITHDRAWAL_WON);
        (canned.withdrawal_registered, canned.withdrawal_confirmed) =
            withdrawal(&mut clients, &call, timeout).await?;
    }
    Ok(canned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(stop: Stop) -> Workload {
        Workload {
            mix: Mix::default(),
            concurrency: 4,
            stop,
            warmup: Duration::from_secs(3),
            timeout: Duration::from_secs(10),
            seed: 1,
            skew: 0.0,
        }
    }

    #[test]
    fn rounds_share_the_measurement_and_only_the_first_warms_up_fully() {
        let counted = workload(Stop::Requests(200));
        let shares: Vec<u64> = (0..3)
            .map(|round| match counted.round(round, 3).stop {
                Stop::Requests(count) => count,
                Stop::After(_) => panic!("a counted run stays counted"),
            })
            .collect();
        assert_eq!(shares, [67, 67, 66]);

        let timed = workload(Stop::After(Duration::from_secs(30)));
        for round in 0..3 {
            let this = timed.round(round, 3);
            assert!(matches!(this.stop, Stop::After(d) if d == Duration::from_secs(10)));
            let warmup = if round == 0 { timed.warmup } else { SETTLE };
            assert_eq!(this.warmup, warmup, "round {round}");
        }
        assert!(matches!(timed.round(0, 1).stop, Stop::After(d) if d == Duration::from_secs(30)));
        assert_eq!(
            timed.round(0, 3).seed,
            timed.seed,
            "the first round draws what a single run would"
        );
        assert_ne!(timed.round(1, 3).seed, timed.round(2, 3).seed);
    }
}
