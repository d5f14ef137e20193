//! The tonic services: thin adapters that parse requests into domain values, run the rules
//! of [`crate::transfer`] and the store in one database call, and answer; errors are mapped
//! once, in the runtime's mapping.

use std::sync::{Arc, OnceLock};

use invest_proto::{
    deposit::v1::{
        self as pb, deposit_service_server::DepositService,
        directory_ingest_server::DirectoryIngest,
    },
    ids::AccountNumber,
    time,
};
use invest_runtime::{
    auth::caller,
    db::Database,
    paging::{PageTokens, page_size, token_mismatch},
};
use tonic::{Request, Response, Status, Streaming};

use invest_runtime::error::Error as RuntimeError;

use crate::{
    clock::Clock,
    delivery::Delivery,
    directory,
    domain::{
        Status as DepositState, check_amount, new_transfer_id, parse_request_id, parse_signature,
        parse_transfer_id,
    },
    error::{Error, Result},
    store::deposits::{self, Confirmation, DepositRow, ListFilter, NewDeposit},
    transfer::{self, Confirm, Rules},
};

const PAGE_DEFAULT: i64 = 50;
const PAGE_MAX: i64 = 500;

/// State shared by the handlers.
#[derive(Debug)]
pub struct AppState {
    /// Set once migrations are done; until then calls answer UNAVAILABLE.
    pub db: Arc<OnceLock<Database>>,
    /// Set with the database: delivers confirmed deposits.
    pub delivery: OnceLock<Arc<Delivery>>,
    /// Business rules.
    pub rules: Rules,
    /// Business time.
    pub clock: Clock,
    /// Advisory-lock key serialising directory flips on PostgreSQL.
    pub flip_lock_key: i64,
    /// Signs and checks page tokens.
    pub tokens: PageTokens,
}

impl AppState {
    pub(crate) fn db(&self) -> Result<Database> {
        self.db.get().cloned().ok_or_else(|| {
            RuntimeError::Unavailable(
                "deposit-svc is starting: the database is not ready yet; retry shortly".into(),
            )
            .into()
        })
    }

    pub(crate) fn delivery(&self) -> Result<Arc<Delivery>> {
        self.delivery.get().cloned().ok_or_else(|| {
            RuntimeError::Unavailable("deposit-svc is starting; retry shortly".into()).into()
        })
    }
}

fn to_wire(row: &DepositRow, now: i64) -> pb::Deposit {
    pb::Deposit {
        transfer_id: row.transfer_id.clone(),
        account_number: row.account_number.clone(),
        amount: row.amount,
        status: row.effective_status(now).to_wire() as i32,
        created_at: Some(time::from_micros(row.created_at)),
        expires_at: Some(time::from_micros(row.expires_at)),
        confirmed_at: row.confirmed_at.map(time::from_micros),
        applied: row.applied_at.is_some(),
    }
}

/// `invest.deposit.v1.DepositService`.
#[derive(Debug, Clone)]
pub struct DepositApi {
    state: Arc<AppState>,
}

impl DepositApi {
    /// Handlers over shared state.
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl DepositService for DepositApi {
    async fn register_deposit(
        &self,
        request: Request<pb::RegisterDepositRequest>,
    ) -> Result<Response<pb::RegisterDepositResponse>, Status> {
        let owner = caller(&request)?.subject.clone();
        let request = request.into_inner();
        let account_number = AccountNumber::parse(&request.account_number)
            .map_err(|e| Error::invalid("INVALID_ACCOUNT_NUMBER", "account_number", e.0))?;
        if request.customer_name.is_empty() {
            return Err(Error::invalid("EMPTY_FIELD", "customer_name", "must not be empty").into());
        }
        let now = self.state.clock.now();
        let new = NewDeposit {
            transfer_id: new_transfer_id()?,
            owner,
            account_number,
            customer_name: request.customer_name,
            amount: check_amount(request.amount, self.state.rules.max_amount)?,
            request_id: parse_request_id(&request.request_id)?,
            created_at: now,
            expires_at: now.saturating_add(self.state.rules.transfer_ttl),
        };
        let db = self.state.db()?;
        let registered = db.run(move |c| transfer::register(c, &new)).await?;
        metrics::counter!("deposits_registered_total").increment(1);
        Ok(Response::new(pb::RegisterDepositResponse {
            transfer_id: registered.transfer_id,
            expires_at: Some(time::from_micros(registered.expires_at)),
        }))
    }

    async fn confirm_deposit(
        &self,
        request: Request<pb::ConfirmDepositRequest>,
    ) -> Result<Response<pb::ConfirmDepositResponse>, Status> {
        let owner = caller(&request)?.subject.clone();
        let request = request.into_inner();
        let request = Confirm {
            transfer_id: parse_transfer_id(&request.transfer_id)?,
            owner,
            signature: parse_signature(&request.signature)?,
        };
        let transfer_id = request.transfer_id.clone();
        let now = self.state.clock.now();
        let db = self.state.db()?;
        let delivery = self.state.delivery()?;
        let rules = self.state.rules;
        let lease = delivery.lease().clone();
        let outcome = db
            .run(move |c| transfer::confirm(c, &request, rules, now, &lease))
            .await?;

        let deposit = match outcome {
            Confirmation::Closed(row) => {
                return Err(transfer::closed(transfer_id, &row, now).into());
            }
            Confirmation::AlreadyConfirmed(row) => to_wire(&row, now),
            Confirmation::Confirmed(row, outbox) => {
                metrics::counter!("deposits_confirmed_total").increment(1);
                let applied = delivery.deliver(&outbox).await;
                let mut deposit = to_wire(&row, now);
                deposit.applied = applied;
                deposit
            }
        };
        Ok(Response::new(pb::ConfirmDepositResponse {
            deposit: Some(deposit),
        }))
    }

    async fn get_deposit(
        &self,
        request: Request<pb::GetDepositRequest>,
    ) -> Result<Response<pb::Deposit>, Status> {
        let owner = caller(&request)?.subject.clone();
        let transfer_id = parse_transfer_id(&request.get_ref().transfer_id)?;
        let db = self.state.db()?;
        let row = db
            .run(move |c| -> Result<_> {
                deposits::get(c, &transfer_id, &owner)?.ok_or(Error::TransferNotFound(transfer_id))
            })
            .await?;
        Ok(Response::new(to_wire(&row, self.state.clock.now())))
    }

    async fn list_deposits(
        &self,
        request: Request<pb::ListDepositsRequest>,
    ) -> Result<Response<pb::ListDepositsResponse>, Status> {
        let owner = caller(&request)?.subject.clone();
        let request = request.into_inner();
        let filter = list_filter(&request)?;
        let limit = page_size(request.page_size, PAGE_DEFAULT, PAGE_MAX)?;
        let fingerprint = filter_fingerprint(&filter);
        let tokens = &self.state.tokens;
        let cursor = history_cursor(
            tokens,
            LIST_DEPOSITS,
            &owner,
            &request.page_token,
            &fingerprint,
        )?;
        let now = self.state.clock.now();
        let db = self.state.db()?;
        let listed_for = owner.clone();
        let mut rows = db
            .run(move |c| -> Result<_> {
                Ok(deposits::list(
                    c,
                    &listed_for,
                    &filter,
                    cursor,
                    limit + 1,
                    now,
                )?)
            })
            .await?;
        let next_page_token = history_next_page(
            tokens,
            LIST_DEPOSITS,
            &owner,
            &fingerprint,
            &mut rows,
            limit,
            |r| (r.created_at, &r.transfer_id),
        );
        Ok(Response::new(pb::ListDepositsResponse {
            deposits: rows.iter().map(|r| to_wire(r, now)).collect(),
            next_page_token,
        }))
    }
}

fn list_filter(request: &pb::ListDepositsRequest) -> Result<ListFilter> {
    history_filter(
        &request.account_number,
        DepositState::from_filter(request.status)?,
        &request.start_time,
        &request.end_time,
    )
}

/// Where a history listing (ListDeposits, ListWithdrawals) continues: `(created_at,
/// transfer_id)` of the previous page's last transfer, from a token signed for the method,
/// the caller and the filters (`fingerprint`).
pub(crate) fn history_cursor(
    tokens: &PageTokens,
    method: &str,
    owner: &str,
    page_token: &str,
    fingerprint: &str,
) -> Result<Option<(i64, String)>> {
    let Some([created_at, transfer_id, issued_for]) =
        tokens.decode::<3>(method, owner, page_token)?
    else {
        return Ok(None);
    };
    if issued_for != fingerprint {
        return Err(token_mismatch("other filters").into());
    }
    let created_at = created_at.parse::<i64>().map_err(|_| {
        Error::invalid(
            "INVALID_PAGE_TOKEN",
            "page_token",
            "not a token this server issued",
        )
    })?;
    Ok(Some((created_at, transfer_id)))
}

/// Given up to `limit + 1` rows of a history listing, trims to `limit` and returns the token
/// of the next page (empty on the last page).
pub(crate) fn history_next_page<T>(
    tokens: &PageTokens,
    method: &str,
    owner: &str,
    fingerprint: &str,
    rows: &mut Vec<T>,
    limit: i64,
    key: impl Fn(&T) -> (i64, &str),
) -> String {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if rows.len() <= limit {
        return String::new();
    }
    rows.truncate(limit);
    rows.last()
        .map(|last| {
            let (created_at, transfer_id) = key(last);
            tokens.encode(
                method,
                owner,
                &[&created_at.to_string(), transfer_id, fingerprint],
            )
        })
        .unwrap_or_default()
}

/// The filters of a history listing (deposits or withdrawals), checked.
pub(crate) fn history_filter(
    account_number: &str,
    status: Option<DepositState>,
    start_time: &Option<prost_types::Timestamp>,
    end_time: &Option<prost_types::Timestamp>,
) -> Result<ListFilter> {
    let account_number = if account_number.is_empty() {
        None
    } else {
        Some(
            AccountNumber::parse(account_number)
                .map_err(|e| Error::invalid("INVALID_ACCOUNT_NUMBER", "account_number", e.0))?,
        )
    };
    let instant = |field: &str, ts: &Option<prost_types::Timestamp>| -> Result<Option<i64>> {
        ts.as_ref()
            .map(|t| {
                time::to_micros(t).ok_or_else(|| {
                    Error::invalid("INVALID_TIME", field.to_owned(), "not a valid timestamp")
                })
            })
            .transpose()
    };
    let start = instant("start_time", start_time)?;
    let end = instant("end_time", end_time)?;
    if let (Some(s), Some(e)) = (start, end)
        && s >= e
    {
        return Err(Error::invalid(
            "INVALID_TIME_RANGE",
            "end_time",
            "must be after start_time",
        ));
    }
    Ok(ListFilter {
        account_number,
        status,
        start,
        end,
    })
}

/// Binds a page token to the filters it was issued for (AIP-158).
/// The method page tokens of ListDeposits are signed for.
const LIST_DEPOSITS: &str = "ListDeposits";

pub(crate) fn filter_fingerprint(filter: &ListFilter) -> String {
    let text = format!(
        "{:?}|{:?}|{:?}|{:?}",
        filter.account_number,
        filter.status.map(DepositState::as_str),
        filter.start,
        filter.end
    );
    blake3::hash(text.as_bytes()).to_hex()[..16].to_owned()
}

/// `invest.deposit.v1.DirectoryIngest`.
#[derive(Debug, Clone)]
pub struct DirectoryApi {
    state: Arc<AppState>,
}

impl DirectoryApi {
    /// Handlers over shared state.
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl DirectoryIngest for DirectoryApi {
    async fn load_directory(
        &self,
        request: Request<Streaming<pb::DirectoryPart>>,
    ) -> Result<Response<pb::LoadDirectoryResponse>, Status> {
        let db = self.state.db()?;
        let loaded =
            directory::load_directory(db, request.into_inner(), self.state.flip_lock_key).await?;
        Ok(Response::new(pb::LoadDirectoryResponse {
            unchanged: loaded.unchanged,
            as_of: Some(time::from_micros(loaded.current.as_of)),
            digest: loaded.current.digest,
            entry_count: loaded.current.entry_count,
        }))
    }
}
