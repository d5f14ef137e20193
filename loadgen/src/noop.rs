//! The ceiling: a server of `PortfolioService` and `DepositService` that does no work (no
//! authentication, no database) and answers every call with a canned response of the same
//! size as the real server's. Whatever the real servers reach is measured against it.

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use invest_proto::{
    deposit::v1::{
        CancelWithdrawalRequest, ConfirmDepositRequest, ConfirmDepositResponse,
        ConfirmWithdrawalRequest, ConfirmWithdrawalResponse, Deposit, DepositStatus,
        GetDepositRequest, GetWithdrawalRequest, ListDepositsRequest, ListDepositsResponse,
        ListWithdrawalsRequest, ListWithdrawalsResponse, RegisterDepositRequest,
        RegisterDepositResponse, RegisterWithdrawalRequest, RegisterWithdrawalResponse, Withdrawal,
        WithdrawalStatus,
        deposit_service_server::{DepositService, DepositServiceServer},
        withdrawal_service_server::{WithdrawalService, WithdrawalServiceServer},
    },
    portfolio::v1::{
        AccountDetail, AccountSummary, GetAccountRequest, Holding, ListAccountsRequest,
        ListAccountsResponse, ListHoldingsRequest, ListHoldingsResponse,
        portfolio_service_server::{PortfolioService, PortfolioServiceServer},
    },
};
use prost::Message as _;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::{Request, Response, Status, transport::server::TcpIncoming};

use invest_daygen::{GenAccount, GenInstrument};

/// One response per RPC, served as is.
#[derive(Debug, Clone, PartialEq)]
pub struct CannedResponses {
    /// `GetAccount`.
    pub account: AccountDetail,
    /// `ListHoldings`.
    pub holdings: ListHoldingsResponse,
    /// `ListAccounts`.
    pub accounts: ListAccountsResponse,
    /// `RegisterDeposit`.
    pub registered: RegisterDepositResponse,
    /// `ConfirmDeposit` (its deposit also answers `GetDeposit` and `ListDeposits`).
    pub confirmed: ConfirmDepositResponse,
    /// `RegisterWithdrawal`.
    pub withdrawal_registered: RegisterWithdrawalResponse,
    /// `ConfirmWithdrawal` (its withdrawal also answers the other withdrawal RPCs).
    pub withdrawal_confirmed: ConfirmWithdrawalResponse,
}

/// A typical deposit amount of the workload (1..=1000 won), for the synthetic deposit.
const TYPICAL_AMOUNT: i64 = 500;

impl CannedResponses {
    /// What the real servers would answer about `account` (its owner holding only it), built
    /// without them: for a ceiling measured alone.
    pub fn synthetic(account: &GenAccount, instruments: &[GenInstrument]) -> Self {
        let now = invest_proto::time::now_micros();
        let at = |micros: i64| invest_proto::time::from_micros(micros);
        let holdings: Vec<Holding> = account
            .holdings
            .iter()
            .map(|held| {
                let instrument = instruments.iter().find(|i| i.isin == held.isin);
                Holding {
                    isin: held.isin.clone(),
                    name: instrument.map(|i| i.name.clone()).unwrap_or_default(),
                    asset_group: instrument
                        .map(|i| i.asset_group.clone())
                        .unwrap_or_default(),
                    quantity: held.quantity,
                    current_price: held.current_price,
                    valuation: held.quantity.saturating_mul(held.current_price),
                }
            })
            .collect();
        let total_assets = holdings.iter().map(|h| h.valuation).sum::<i64>();
        let total_profit = total_assets - account.principal;
        let account_detail = AccountDetail {
            account_number: account.account_number.clone(),
            account_name: account.account_name.clone(),
            brokerage: account.brokerage.clone(),
            total_assets,
            principal: account.principal,
            total_profit,
            profit_rate: invest_proto::figures::profit_rate(total_profit, account.principal),
            as_of: Some(at(now)),
            available_cash: holdings
                .iter()
                .filter(|h| h.isin == invest_proto::ids::CASH_ISIN)
                .map(|h| h.valuation)
                .sum(),
        };
        let transfer_id = blake3::hash(account.account_number.as_bytes()).to_hex()[..32].to_owned();
        let expires_at = Some(at(now + 600_000_000));
        Self {
            accounts: ListAccountsResponse {
                accounts: vec![AccountSummary {
                    account_number: account.account_number.clone(),
                    account_name: account.account_name.clone(),
                    brokerage: account.brokerage.clone(),
                    total_assets,
                }],
                next_page_token: String::new(),
            },
            account: account_detail,
            holdings: ListHoldingsResponse {
                holdings,
                next_page_token: String::new(),
            },
            registered: RegisterDepositResponse {
                transfer_id: transfer_id.clone(),
                expires_at,
            },
            withdrawal_registered: RegisterWithdrawalResponse {
                transfer_id: transfer_id.clone(),
                expires_at,
            },
            withdrawal_confirmed: ConfirmWithdrawalResponse {
                withdrawal: Some(Withdrawal {
                    transfer_id: transfer_id.clone(),
                    account_number: account.account_number.clone(),
                    amount: 1,
                    status: WithdrawalStatus::Confirmed.into(),
                    created_at: Some(at(now)),
                    expires_at,
                    confirmed_at: Some(at(now)),
                    applied: true,
                }),
            },
            confirmed: ConfirmDepositResponse {
                deposit: Some(Deposit {
                    transfer_id,
                    account_number: account.account_number.clone(),
                    amount: TYPICAL_AMOUNT,
                    status: DepositStatus::Confirmed.into(),
                    created_at: Some(at(now)),
                    expires_at,
                    confirmed_at: Some(at(now)),
                    applied: true,
                }),
            },
        }
    }

    /// Encoded size of each canned response, by RPC.
    pub fn sizes(&self) -> BTreeMap<String, usize> {
        [
            ("GetAccount", self.account.encoded_len()),
            ("ListHoldings", self.holdings.encoded_len()),
            ("ListAccounts", self.accounts.encoded_len()),
            ("RegisterDeposit", self.registered.encoded_len()),
            ("ConfirmDeposit", self.confirmed.encoded_len()),
            (
                "RegisterWithdrawal",
                self.withdrawal_registered.encoded_len(),
            ),
            ("ConfirmWithdrawal", self.withdrawal_confirmed.encoded_len()),
        ]
        .into_iter()
        .map(|(rpc, bytes)| (rpc.to_owned(), bytes))
        .collect()
    }
}

#[derive(Debug, Clone)]
struct Noop {
    canned: Arc<CannedResponses>,
}

#[tonic::async_trait]
impl PortfolioService for Noop {
    async fn list_accounts(
        &self,
        _: Request<ListAccountsRequest>,
    ) -> Result<Response<ListAccountsResponse>, Status> {
        Ok(Response::new(self.canned.accounts.clone()))
    }

    async fn get_account(
        &self,
        _: Request<GetAccountRequest>,
    ) -> Result<Response<AccountDetail>, Status> {
        Ok(Response::new(self.canned.account.clone()))
    }

    async fn list_holdings(
        &self,
        _: Request<ListHoldingsRequest>,
    ) -> Result<Response<ListHoldingsResponse>, Status> {
        Ok(Response::new(self.canned.holdings.clone()))
    }
}

#[tonic::async_trait]
impl DepositService for Noop {
    async fn register_deposit(
        &self,
        _: Request<RegisterDepositRequest>,
    ) -> Result<Response<RegisterDepositResponse>, Status> {
        Ok(Response::new(self.canned.registered.clone()))
    }

    async fn confirm_deposit(
        &self,
        _: Request<ConfirmDepositRequest>,
    ) -> Result<Response<ConfirmDepositResponse>, Status> {
        Ok(Response::new(self.canned.confirmed.clone()))
    }

    async fn get_deposit(
        &self,
        _: Request<GetDepositRequest>,
    ) -> Result<Response<Deposit>, Status> {
        Ok(Response::new(
            self.canned.confirmed.deposit.clone().unwrap_or_default(),
        ))
    }

    async fn list_deposits(
        &self,
        _: Request<ListDepositsRequest>,
    ) -> Result<Response<ListDepositsResponse>, Status> {
        Ok(Response::new(ListDepositsResponse {
            deposits: self.canned.confirmed.deposit.clone().into_iter().collect(),
            next_page_token: String::new(),
        }))
    }
}

#[tonic::async_trait]
impl WithdrawalService for Noop {
    async fn register_withdrawal(
        &self,
        _: Request<RegisterWithdrawalRequest>,
    ) -> Result<Response<RegisterWithdrawalResponse>, Status> {
        Ok(Response::new(self.canned.withdrawal_registered.clone()))
    }

    async fn confirm_withdrawal(
        &self,
        _: Request<ConfirmWithdrawalRequest>,
    ) -> Result<Response<ConfirmWithdrawalResponse>, Status> {
        Ok(Response::new(self.canned.withdrawal_confirmed.clone()))
    }

    async fn cancel_withdrawal(
        &self,
        _: Request<CancelWithdrawalRequest>,
    ) -> Result<Response<Withdrawal>, Status> {
        Ok(Response::new(self.withdrawal()))
    }

    async fn get_withdrawal(
        &self,
        _: Request<GetWithdrawalRequest>,
    ) -> Result<Response<Withdrawal>, Status> {
        Ok(Response::new(self.withdrawal()))
    }

    async fn list_withdrawals(
        &self,
        _: Request<ListWithdrawalsRequest>,
    ) -> Result<Response<ListWithdrawalsResponse>, Status> {
        Ok(Response::new(ListWithdrawalsResponse {
            withdrawals: vec![self.withdrawal()],
            next_page_token: String::new(),
        }))
    }
}

impl Noop {
    fn withdrawal(&self) -> Withdrawal {
        self.canned
            .withdrawal_confirmed
            .withdrawal
            .clone()
            .unwrap_or_default()
    }
}

/// A running no-op server.
#[derive(Debug)]
pub struct NoopServer {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl NoopServer {
    /// Binds `listen` (port 0 picks one) and serves `canned` on the current runtime.
    pub async fn start(listen: SocketAddr, canned: CannedResponses) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let noop = Noop {
            canned: Arc::new(canned),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let serve = tonic::transport::Server::builder()
            .add_service(PortfolioServiceServer::new(noop.clone()))
            .add_service(DepositServiceServer::new(noop.clone()))
            .add_service(WithdrawalServiceServer::new(noop))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            });
        Ok(Self {
            addr,
            stop,
            task: tokio::spawn(serve),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, for a client.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serves until the server fails (for `loadgen noop`, with Ctrl-C racing it).
    pub async fn wait(self) -> Result<(), String> {
        let _keep_running = self.stop;
        match self.task.await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Stops accepting and waits a little for the connections to close.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let mut task = self.task;
        match tokio::time::timeout(Duration::from_secs(5), &mut task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "the no-op server failed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "the no-op server task failed"),
            Err(_) => task.abort(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use invest_daygen::GenOptions;

    #[test]
    fn synthetic_responses_look_like_the_real_ones() {
        let options = GenOptions {
            accounts: 5,
            seed: 1,
            ..GenOptions::default()
        };
        let instruments = invest_daygen::instruments(&options).unwrap();
        let account = invest_daygen::accounts(&options)
            .unwrap()
            .find(|a| a.holdings.len() == 14)
            .unwrap();
        let canned = CannedResponses::synthetic(&account, &instruments);
        assert_eq!(canned.holdings.holdings.len(), 14);
        assert!(canned.holdings.holdings.iter().all(|h| !h.name.is_empty()));
        assert_eq!(
            canned.account.total_assets,
            canned
                .holdings
                .holdings
                .iter()
                .map(|h| h.valuation)
                .sum::<i64>()
        );
        assert_eq!(canned.registered.transfer_id.len(), 32);
        assert!(canned.sizes()["ListHoldings"] > 14 * 40);
    }
}
