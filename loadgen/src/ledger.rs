//! Credits sent straight to portfolio-svc's `PortfolioLedger.ApplyDeposit`, as deposit-svc
//! delivers them (subject `deposit-svc`, scope `ledger:write`): `loadgen credit`, which gives
//! one account many deposits of 1 won, and the deposits whose visibility `loadgen freshness`
//! measures ([`crate::freshness`]).

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use invest_cli::{ConnectError, SecretError};
use invest_daygen::GenError;
use invest_proto::{
    auth::{JwtKeys, SCOPE_LEDGER_WRITE, ServiceToken},
    ids::{AccountNumber, TransferId},
    portfolio::v1::{ApplyDepositRequest, portfolio_ledger_client::PortfolioLedgerClient},
};
use tonic::{service::interceptor::InterceptedService, transport::Channel};

use crate::{cli::Exit, workload::Failure};

/// Client-side deadline of one RPC of `credit` and `freshness`.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// The subject of the ledger token: the service that calls `ApplyDeposit` in production.
pub const LEDGER_SUBJECT: &str = "deposit-svc";

/// A client of `PortfolioLedger` that calls as deposit-svc (`ledger:write`); its token is
/// renewed before it expires, however long the run.
pub type LedgerClient = PortfolioLedgerClient<InterceptedService<Channel, ServiceToken>>;

/// The ledger client on `channel`.
pub fn ledger_client(channel: Channel, keys: Arc<JwtKeys>) -> LedgerClient {
    PortfolioLedgerClient::with_interceptor(
        channel,
        ServiceToken::new(keys, LEDGER_SUBJECT, &[SCOPE_LEDGER_WRITE]),
    )
}

/// Why `credit` or `freshness` could not run to the end.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The JWT secret is missing or unreadable.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The day cannot be generated (bad options).
    #[error(transparent)]
    Generate(#[from] GenError),
    /// The day has no such account.
    #[error("{0}")]
    NotInDay(String),
    /// A server cannot be reached.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// An RPC failed.
    #[error(transparent)]
    Rpc(#[from] Failure),
    /// A deposit under a fresh transfer id was answered `already_applied`: nothing was
    /// credited, so the principal expected from here on would be wrong.
    #[error("ApplyDeposit answered already_applied for the fresh transfer id {transfer_id}")]
    AlreadyApplied {
        /// The transfer id.
        transfer_id: String,
    },
    /// The operating system gave no random bytes for a transfer id.
    #[error("no randomness available for a transfer id: {0}")]
    Random(getrandom::Error),
    /// The reading replica shows more than was credited: something else credits the account.
    #[error(
        "account {account}: the reading replica shows a principal of {seen} won, above the {expected} won expected; something else credits this account during the run (choose another one)"
    )]
    Interference {
        /// The account.
        account: String,
        /// The principal expected.
        expected: i64,
        /// The principal read.
        seen: i64,
    },
    /// The expected principal leaves the `i64` range.
    #[error("account {account}: the principal {baseline} plus {deposits} won is out of range")]
    Overflow {
        /// The account.
        account: String,
        /// Its principal before the run.
        baseline: i64,
        /// Won credited since.
        deposits: u64,
    },
    /// A worker panicked (a bug).
    #[error("a worker failed: {0}")]
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

impl LedgerError {
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

/// A fresh transfer id from the operating system's random source (as deposit-svc makes them).
pub fn new_transfer_id() -> Result<TransferId, LedgerError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(LedgerError::Random)?;
    Ok(TransferId::from_random(bytes))
}

/// A deposit of `amount` won to `account_number`, confirmed now, under a fresh transfer id.
pub fn deposit_now(account_number: &str, amount: i64) -> Result<ApplyDepositRequest, LedgerError> {
    Ok(ApplyDepositRequest {
        transfer_id: new_transfer_id()?.as_str().to_owned(),
        account_number: account_number.to_owned(),
        amount,
        confirmed_at: Some(invest_proto::time::from_micros(
            invest_proto::time::now_micros(),
        )),
    })
}

/// Sends one deposit; `already_applied` is an error, since every id is fresh.
pub async fn apply(
    client: &mut LedgerClient,
    request: ApplyDepositRequest,
) -> Result<(), LedgerError> {
    let transfer_id = request.transfer_id.clone();
    let response =
        crate::workload::within("ApplyDeposit", RPC_TIMEOUT, client.apply_deposit(request)).await?;
    if response.already_applied {
        return Err(LedgerError::AlreadyApplied { transfer_id });
    }
    Ok(())
}

/// What `loadgen credit` does.
#[derive(Debug, Clone)]
pub struct Credit {
    /// The account credited.
    pub account: AccountNumber,
    /// Deposits of 1 won to apply.
    pub count: u64,
    /// Deposits in flight at once (at least 1).
    pub concurrency: usize,
}

/// What `loadgen credit` did.
#[derive(Debug)]
pub struct Credited {
    /// Deposits applied (credited once each).
    pub applied: u64,
    /// From the first call to the last answer.
    pub took: Duration,
    /// The first failure, after which no new deposit was sent.
    pub failure: Option<LedgerError>,
}

/// Applies `credit.count` deposits of 1 won to the account, `credit.concurrency` at a time,
/// over `channel`; stops sending at the first failure.
pub async fn credit(channel: Channel, keys: Arc<JwtKeys>, credit: &Credit) -> Credited {
    let client = ledger_client(channel, keys);
    let issued = Arc::new(AtomicU64::new(0));
    let applied = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..credit.concurrency.max(1))
        .map(|_| {
            let mut client = client.clone();
            let (issued, applied, failed) = (issued.clone(), applied.clone(), failed.clone());
            let account = credit.account.as_str().to_owned();
            let count = credit.count;
            tokio::spawn(async move {
                while !failed.load(Ordering::Relaxed)
                    && issued.fetch_add(1, Ordering::Relaxed) < count
                {
                    let sent = match deposit_now(&account, 1) {
                        Ok(request) => apply(&mut client, request).await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = sent {
                        failed.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                    applied.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    let mut failure = None;
    for worker in workers {
        let outcome = match worker.await {
            Ok(outcome) => outcome,
            Err(e) => Err(e.into()),
        };
        if let Err(e) = outcome {
            failure.get_or_insert(e);
        }
    }
    Credited {
        applied: applied.load(Ordering::Relaxed),
        took: started.elapsed(),
        failure,
    }
}

/// A replicated portfolio-svc in one process for the tests of `credit` and `freshness`:
/// `ApplyDeposit` credits at once, and `GetAccount` shows the credits only from the
/// `lag_reads`-th read after the last one (as a lagging replica would).
#[cfg(test)]
pub(crate) mod fake {
    use std::{
        collections::HashSet,
        net::{Ipv4Addr, SocketAddr},
        sync::Mutex,
    };

    use invest_proto::{
        auth::SCOPE_ACCOUNTS_READ,
        portfolio::v1::{
            AccountDetail, ApplyDepositResponse, GetAccountRequest, ListAccountsRequest,
            ListAccountsResponse, ListHoldingsRequest, ListHoldingsResponse,
            portfolio_ledger_server::{PortfolioLedger, PortfolioLedgerServer},
            portfolio_service_server::{PortfolioService, PortfolioServiceServer},
        },
    };
    use tokio::{net::TcpListener, sync::oneshot};
    use tonic::{Request, Response, Status, transport::server::TcpIncoming};

    use super::*;

    /// The fake's secret.
    pub const SECRET: &[u8] = b"ledger-fake-test-secret";
    /// The principal before any credit.
    pub const BASELINE: i64 = 1_000;

    /// What the fake has seen.
    #[derive(Debug, Default)]
    pub struct State {
        /// Won credited.
        pub credited: i64,
        /// Won the reads show.
        pub shown: i64,
        /// Reads since the last credit.
        pub reads_since_credit: u32,
        /// Transfer ids credited.
        pub transfer_ids: HashSet<String>,
        /// Reads in all.
        pub reads: u64,
    }

    #[derive(Debug, Clone)]
    struct Fake {
        keys: Arc<JwtKeys>,
        owner: String,
        account: String,
        lag_reads: u32,
        state: Arc<Mutex<State>>,
    }

    impl Fake {
        fn caller<T>(&self, request: &Request<T>, scope: &str) -> Result<String, Status> {
            let token = request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .ok_or_else(|| Status::unauthenticated("no token"))?;
            let caller = self
                .keys
                .verify(token)
                .map_err(|e| Status::unauthenticated(e.to_string()))?;
            if !caller.has_scope(scope) {
                return Err(Status::permission_denied(format!("no {scope}")));
            }
            Ok(caller.subject)
        }
    }

    #[tonic::async_trait]
    impl PortfolioLedger for Fake {
        async fn apply_deposit(
            &self,
            request: Request<ApplyDepositRequest>,
        ) -> Result<Response<ApplyDepositResponse>, Status> {
            if self.caller(&request, SCOPE_LEDGER_WRITE)? != LEDGER_SUBJECT {
                return Err(Status::permission_denied("not deposit-svc"));
            }
            let deposit = request.into_inner();
            let id = TransferId::parse(&deposit.transfer_id)
                .map_err(|e| Status::invalid_argument(e.0))?;
            if id.as_str() != deposit.transfer_id
                || deposit.account_number != self.account
                || deposit.amount != 1
                || deposit.confirmed_at.is_none()
            {
                return Err(Status::invalid_argument(format!("unexpected {deposit:?}")));
            }
            let mut state = self.state.lock().unwrap();
            let fresh = state.transfer_ids.insert(deposit.transfer_id);
            if fresh {
                state.credited += deposit.amount;
                state.reads_since_credit = 0;
            }
            Ok(Response::new(ApplyDepositResponse {
                already_applied: !fresh,
            }))
        }

        // The ledger check sends no withdrawals.
        async fn hold_cash(
            &self,
            _: Request<invest_proto::portfolio::v1::HoldCashRequest>,
        ) -> Result<Response<invest_proto::portfolio::v1::HoldCashResponse>, Status> {
            Err(Status::unimplemented("no withdrawals in the ledger check"))
        }

        async fn take_hold(
            &self,
            _: Request<invest_proto::portfolio::v1::TakeHoldRequest>,
        ) -> Result<Response<invest_proto::portfolio::v1::TakeHoldResponse>, Status> {
            Err(Status::unimplemented("no withdrawals in the ledger check"))
        }

        async fn release_hold(
            &self,
            _: Request<invest_proto::portfolio::v1::ReleaseHoldRequest>,
        ) -> Result<Response<invest_proto::portfolio::v1::ReleaseHoldResponse>, Status> {
            Err(Status::unimplemented("no withdrawals in the ledger check"))
        }
    }

    #[tonic::async_trait]
    impl PortfolioService for Fake {
        async fn list_accounts(
            &self,
            _: Request<ListAccountsRequest>,
        ) -> Result<Response<ListAccountsResponse>, Status> {
            Err(Status::unimplemented("fake"))
        }

        async fn get_account(
            &self,
            request: Request<GetAccountRequest>,
        ) -> Result<Response<AccountDetail>, Status> {
            // Not the caller's and not there are the same NOT_FOUND, as in portfolio-svc.
            if self.caller(&request, SCOPE_ACCOUNTS_READ)? != self.owner
                || request.get_ref().account_number != self.account
            {
                return Err(Status::not_found("no such account"));
            }
            let mut state = self.state.lock().unwrap();
            state.reads += 1;
            state.reads_since_credit = state.reads_since_credit.saturating_add(1);
            if state.reads_since_credit >= self.lag_reads {
                state.shown = state.credited;
            }
            Ok(Response::new(AccountDetail {
                account_number: self.account.clone(),
                principal: BASELINE + state.shown,
                ..AccountDetail::default()
            }))
        }

        async fn list_holdings(
            &self,
            _: Request<ListHoldingsRequest>,
        ) -> Result<Response<ListHoldingsResponse>, Status> {
            Err(Status::unimplemented("fake"))
        }
    }

    /// A running fake.
    pub struct FakeServer {
        /// `http://ADDR`.
        pub url: String,
        /// What it saw.
        pub state: Arc<Mutex<State>>,
        _stop: oneshot::Sender<()>,
    }

    /// Serves `account` of `owner` on a free port; reads show a credit from the
    /// `lag_reads`-th read after it (`u32::MAX`: never).
    pub async fn start(owner: &str, account: &str, lag_reads: u32) -> FakeServer {
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let fake = Fake {
            keys: Arc::new(JwtKeys::from_secret(SECRET)),
            owner: owner.to_owned(),
            account: account.to_owned(),
            lag_reads,
            state: state.clone(),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let serve = tonic::transport::Server::builder()
            .add_service(PortfolioServiceServer::new(fake.clone()))
            .add_service(PortfolioLedgerServer::new(fake))
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                let _ = stopped.await;
            });
        tokio::spawn(serve);
        FakeServer {
            url,
            state,
            _stop: stop,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_ids_are_fresh_lowercase_hex() {
        let request = deposit_now("12345678", 1).unwrap();
        assert_eq!(request.transfer_id.len(), 32);
        assert!(
            request
                .transfer_id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_ne!(
            request.transfer_id,
            deposit_now("12345678", 1).unwrap().transfer_id
        );
        let confirmed = invest_proto::time::to_micros(&request.confirmed_at.unwrap()).unwrap();
        assert!((invest_proto::time::now_micros() - confirmed).abs() < 60_000_000);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn credit_applies_every_deposit_once() {
        let server = fake::start("owner", "12345678", 1).await;
        let channel = invest_cli::connect(&server.url, 1).await.unwrap();
        let keys = Arc::new(JwtKeys::from_secret(fake::SECRET));
        let plan = Credit {
            account: AccountNumber::parse("12345678").unwrap(),
            count: 50,
            concurrency: 4,
        };
        let credited = credit(channel.clone(), keys, &plan).await;
        assert!(credited.failure.is_none(), "{:?}", credited.failure);
        assert_eq!(credited.applied, 50);
        {
            let state = server.state.lock().unwrap();
            assert_eq!(state.transfer_ids.len(), 50);
            assert_eq!(state.credited, 50);
        }

        // A wrong secret: refused at once, nothing more is sent.
        let wrong = Arc::new(JwtKeys::from_secret(b"another-secret"));
        let credited = credit(channel, wrong, &plan).await;
        assert_eq!(credited.applied, 0);
        let failure = credited.failure.unwrap();
        assert!(
            failure
                .to_string()
                .starts_with("ApplyDeposit failed: UNAUTHENTICATED"),
            "{failure}"
        );
        assert_eq!(failure.exit(), Exit::Unexpected);
        assert_eq!(server.state.lock().unwrap().credited, 50);
    }
}
