//! The tonic services: thin adapters from requests to the store, with errors mapped once in
//! `crate::error`.

use std::sync::{Arc, OnceLock};

use invest_proto::{
    ids::{AccountNumber, CASH_ISIN, TransferId, Won},
    portfolio::v1::{
        self as pb, portfolio_ingest_server::PortfolioIngest,
        portfolio_ledger_server::PortfolioLedger, portfolio_service_server::PortfolioService,
    },
    time,
};
use invest_runtime::{
    auth::caller,
    db::{Database, DbConnection},
};
use tonic::{Request, Response, Status, Streaming};

use crate::{
    cache::{
        ACCOUNTS_KEPT_MAX, CachedHolding, CashHeld, Generation, HOLDINGS_KEPT_MAX, ReadCache,
        Ticket, count,
    },
    domain::{
        Listing, PageToken, PageTokens, SnapshotsToken, overflow, page_size, profit_rate,
        total_profit,
    },
    error::{Error, Result},
    ingest::{self, IngestConfig},
    store::{
        holds::{self, Hold, Outcome},
        ledger::{self, Applied, Credit},
        read::{self, AccountRow, HoldingRow, Pin, SnapshotRef},
    },
};

const ACCOUNTS_PAGE_DEFAULT: i64 = 50;
const ACCOUNTS_PAGE_MAX: i64 = 500;
const HOLDINGS_PAGE_DEFAULT: i64 = 100;
const HOLDINGS_PAGE_MAX: i64 = 1_000;

/// State shared by the handlers.
#[derive(Debug)]
pub struct AppState {
    /// Set once migrations are done; until then calls answer UNAVAILABLE.
    pub db: Arc<OnceLock<Database>>,
    /// Ingest settings.
    pub ingest: IngestConfig,
    /// Signs and checks page tokens.
    pub tokens: PageTokens,
    /// The current snapshot in memory.
    pub cache: Arc<ReadCache>,
}

impl AppState {
    fn db(&self) -> Result<Database> {
        self.db.get().cloned().ok_or_else(|| {
            invest_runtime::error::Error::Unavailable(
                "portfolio-svc is starting: the database is not ready yet; retry shortly".into(),
            )
            .into()
        })
    }
}

fn not_found(account_number: &str) -> Error {
    Error::AccountNotFound(account_number.to_owned())
}

fn parse_account_number(text: &str) -> Result<AccountNumber> {
    AccountNumber::parse(text)
        .map_err(|e| Error::invalid("INVALID_ACCOUNT_NUMBER", "account_number", e.0))
}

fn expired_token() -> Error {
    Error::PageTokenExpired
}

/// How often a read is tried again when the snapshot it started on is pruned under it.
const READ_ATTEMPTS: usize = 3;

/// After a read of several statements from snapshot `id`: whether the snapshot still exists,
/// and so whether what was read is whole. Pruning forgets a snapshot (deletes its row) before
/// it removes any of its rows, so a snapshot found after the reads was whole during them. A
/// listing continued by a page token whose snapshot went is PAGE_TOKEN_EXPIRED; any other read
/// starts again on the current snapshot.
fn still_kept(c: &mut DbConnection, id: i64, by_token: bool) -> Result<bool> {
    let kept = read::readable_snapshot(c, id)?.is_some();
    if !kept && by_token {
        return Err(expired_token());
    }
    Ok(kept)
}

/// A read that found its snapshot pruned under it on every attempt (new snapshots in quick
/// succession with none kept).
fn changing() -> Error {
    invest_runtime::error::Error::Unavailable(
        "the current snapshot changed during the read, more than once; retry".into(),
    )
    .into()
}

fn summary(row: AccountRow) -> pb::AccountSummary {
    pb::AccountSummary {
        account_number: row.account_number,
        account_name: row.account_name,
        brokerage: row.brokerage,
        total_assets: row.total_assets,
    }
}

fn detail(
    snapshot: SnapshotRef,
    row: AccountRow,
    available_cash: i64,
) -> Result<pb::AccountDetail> {
    let profit = total_profit(row.total_assets, row.principal)?;
    Ok(pb::AccountDetail {
        available_cash,
        profit_rate: profit_rate(profit, row.principal),
        account_number: row.account_number,
        account_name: row.account_name,
        brokerage: row.brokerage,
        total_assets: row.total_assets,
        principal: row.principal,
        total_profit: profit,
        as_of: Some(time::from_micros(snapshot.as_of)),
    })
}

/// `invest.portfolio.v1.PortfolioService`.
#[derive(Debug, Clone)]
pub struct PortfolioApi {
    state: Arc<AppState>,
}

impl PortfolioApi {
    /// Handlers over shared state.
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl PortfolioService for PortfolioApi {
    async fn list_accounts(
        &self,
        request: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsResponse>, Status> {
        let owner = caller(&request)?.subject.clone();
        let request = request.into_inner();
        let limit = page_size(request.page_size, ACCOUNTS_PAGE_DEFAULT, ACCOUNTS_PAGE_MAX)?;
        let listing = Listing {
            method: "ListAccounts",
            caller: &owner,
            account_number: "",
        };
        let token = PageToken::decode(&self.state.tokens, listing, &request.page_token)?;
        let after = token.as_ref().map(|t| t.after.clone()).unwrap_or_default();
        let cache = &self.state.cache;
        // From memory: the customer's account numbers, and the row and overlay of each
        // account on the page, all of one generation.
        let generation = generation_for(cache, token.as_ref());
        if let Some(g) = &generation {
            if let Some(page) = accounts_from_memory(cache, g, &owner, &after, limit) {
                count(true);
                return Ok(Response::new(accounts_page(
                    &self.state.tokens,
                    listing,
                    g.snapshot,
                    page,
                    limit,
                )));
            }
            count(false);
        }
        let owner_for_db = owner.clone();
        let state = self.state.clone();
        let db = self.state.db()?;
        let page = db
            .run(move |c| -> Result<_> {
                if let Some(g) = generation
                    && let Some(all) = fill_owner(c, &state.cache, &g, &owner_for_db)?
                {
                    let page = all
                        .into_iter()
                        .filter(|(row, _)| row.account_number > after)
                        .take(usize::try_from(limit + 1).unwrap_or(usize::MAX))
                        .collect();
                    return Ok(Some((g.snapshot, page)));
                }
                // Pruning a snapshot forgets it before removing its rows: a page read while
                // its snapshot still exists afterwards is complete (see `still_kept`).
                for _ in 0..READ_ATTEMPTS {
                    let snapshot = match &token {
                        Some(token) => read::readable_snapshot(c, token.snapshot_id)?
                            .ok_or_else(expired_token)?,
                        None => match read::current_ref(c)? {
                            Some(snapshot) => snapshot,
                            None => return Ok(None),
                        },
                    };
                    let rows =
                        read::accounts_page(c, snapshot.id, &owner_for_db, &after, limit + 1)?;
                    let numbers: Vec<&str> =
                        rows.iter().map(|r| r.account_number.as_str()).collect();
                    let deposits = ledger::overlay_each(c, &numbers, snapshot.as_of)?;
                    if !still_kept(c, snapshot.id, token.is_some())? {
                        continue;
                    }
                    let page = rows
                        .into_iter()
                        .map(|row| {
                            let sum = deposits
                                .get(&row.account_number)
                                .copied()
                                .unwrap_or(Some(0));
                            (row, sum)
                        })
                        .collect();
                    return Ok(Some((snapshot, page)));
                }
                Err(changing())
            })
            .await?;
        let Some((snapshot, page)) = page else {
            return Ok(Response::new(pb::ListAccountsResponse::default()));
        };
        Ok(Response::new(accounts_page(
            &self.state.tokens,
            listing,
            snapshot,
            page,
            limit,
        )))
    }

    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::AccountDetail>, Status> {
        let owner = caller(&request)?.subject.clone();
        let account_number = parse_account_number(&request.get_ref().account_number)?;
        let cache = &self.state.cache;
        let generation = cache.generation();
        if let Some(g) = &generation {
            if let (Some(row), Some(deposits), Some(cash)) = (
                cache.account(g, account_number.as_str()),
                cache.overlay(g, account_number.as_str()),
                cache.cash(g, account_number.as_str()),
            ) {
                count(true);
                if row.customer_name != owner {
                    return Err(not_found(account_number.as_str()).into());
                }
                let cash = holds::Cash {
                    valuation: cash.valuation,
                    movements: deposits,
                    held: cash.held,
                };
                return Ok(Response::new(account_detail(
                    g.snapshot,
                    (*row).clone(),
                    cash,
                )?));
            }
            count(false);
        }
        let state = self.state.clone();
        let db = self.state.db()?;
        let found = db
            .run(move |c| -> Result<_> {
                if let Some(g) = generation
                    && let Some((row, _)) = fill_account(c, &state.cache, &g, &account_number)?
                {
                    if row.customer_name != owner {
                        return Ok(None);
                    }
                    let ticket = state.cache.ticket(account_number.as_str());
                    let Some(cash) = holds::cash(c, g.snapshot, account_number.as_str())? else {
                        return Ok(None);
                    };
                    state
                        .cache
                        .keep_overlay(&g, account_number.as_str(), ticket, cash.movements);
                    let held = CashHeld {
                        valuation: cash.valuation,
                        held: cash.held,
                    };
                    state
                        .cache
                        .keep_cash(&g, account_number.as_str(), ticket, held);
                    return Ok(Some((g.snapshot, row, cash)));
                }
                let Some((snapshot, row, _)) =
                    read::owned_account(c, Pin::Current, &account_number, &owner)?
                else {
                    return Ok(None);
                };
                // Gone between the two statements (a switch): not found on this snapshot,
                // which is what a read a moment later would say too.
                let Some(cash) = holds::cash(c, snapshot, account_number.as_str())? else {
                    return Ok(None);
                };
                Ok(Some((snapshot, row, cash)))
            })
            .await?;
        let (snapshot, row, cash) =
            found.ok_or_else(|| not_found(&request.get_ref().account_number))?;
        Ok(Response::new(account_detail(snapshot, row, cash)?))
    }

    async fn list_holdings(
        &self,
        request: Request<pb::ListHoldingsRequest>,
    ) -> Result<Response<pb::ListHoldingsResponse>, Status> {
        let owner = caller(&request)?.subject.clone();
        let request = request.into_inner();
        let account_number = parse_account_number(&request.account_number)?;
        let limit = page_size(request.page_size, HOLDINGS_PAGE_DEFAULT, HOLDINGS_PAGE_MAX)?;
        let listing = Listing {
            method: "ListHoldings",
            caller: &owner,
            account_number: account_number.as_str(),
        };
        let token = PageToken::decode(&self.state.tokens, listing, &request.page_token)?;
        let after = token.as_ref().map(|t| t.after.clone()).unwrap_or_default();
        let cache = &self.state.cache;
        let generation = generation_for(cache, token.as_ref());
        if let Some(g) = &generation {
            let number = account_number.as_str();
            if let (Some(row), Some(all), Some(deposits)) = (
                cache.account(g, number),
                cache.holdings(g, number),
                cache.overlay(g, number),
            ) {
                count(true);
                if row.customer_name != owner {
                    return Err(not_found(number).into());
                }
                let rows = holdings_from(&all, &after, limit, deposits, g.cash.clone())?;
                return Ok(Response::new(holdings_page(
                    &self.state.tokens,
                    listing,
                    g.snapshot,
                    rows,
                    limit,
                )));
            }
            count(false);
        }
        let state = self.state.clone();
        let db = self.state.db()?;
        let account = account_number.clone();
        let owner_for_db = owner.clone();
        let page = db
            .run(move |c| -> Result<_> {
                if let Some(g) = generation
                    && let Some((row, deposits)) = fill_account(c, &state.cache, &g, &account)?
                {
                    if row.customer_name != owner_for_db {
                        return Ok(None);
                    }
                    let all = read::account_holdings(
                        c,
                        g.snapshot.id,
                        &account,
                        HOLDINGS_KEPT_MAX as i64 + 1,
                    )?;
                    if all.len() <= HOLDINGS_KEPT_MAX && still_kept(c, g.snapshot.id, false)? {
                        let all = state.cache.keep_holdings(&g, account.as_str(), &all);
                        let deposits =
                            deposits.ok_or_else(|| overflow("sum of recent deposits"))?;
                        let rows = holdings_from(&all, &after, limit, deposits, g.cash.clone())?;
                        return Ok(Some((g.snapshot, rows)));
                    }
                }
                for _ in 0..READ_ATTEMPTS {
                    let page = holdings_from_database(
                        c,
                        token.as_ref().map(|t| t.snapshot_id),
                        &account,
                        &owner_for_db,
                        &after,
                        limit,
                    )?;
                    match (&page, &token) {
                        (Some((snapshot, _)), _)
                            if !still_kept(c, snapshot.id, token.is_some())? => {}
                        // Nothing found on a token's snapshot: the account is not the caller's,
                        // or the snapshot's rows went under the read (PAGE_TOKEN_EXPIRED).
                        (None, Some(token)) => {
                            still_kept(c, token.snapshot_id, true)?;
                            return Ok(None);
                        }
                        _ => return Ok(page),
                    }
                }
                Err(changing())
            })
            .await?;
        let (snapshot, rows) = page.ok_or_else(|| not_found(account_number.as_str()))?;
        Ok(Response::new(holdings_page(
            &self.state.tokens,
            listing,
            snapshot,
            rows,
            limit,
        )))
    }
}

/// The generation a listing may be answered from: the cache's, if the listing starts now or
/// continues on the snapshot the cache serves (a listing started on an older snapshot is read
/// from the database).
fn generation_for(cache: &ReadCache, token: Option<&PageToken>) -> Option<Arc<Generation>> {
    cache
        .generation()
        .filter(|g| token.is_none_or(|t| t.snapshot_id == g.snapshot.id))
}

/// GetAccount's answer: the snapshot's figures with the movements after it (deposits, and
/// taken withdrawals), and the cash available.
fn account_detail(
    snapshot: SnapshotRef,
    mut row: AccountRow,
    cash: holds::Cash,
) -> Result<pb::AccountDetail> {
    if cash.movements != 0 {
        credit(&mut row, cash.movements)?;
    }
    detail(snapshot, row, cash.available()?)
}

/// Accounts with the deposits after their snapshot (`None`: the stored sums are inconsistent).
type AccountsWithDeposits = Vec<(AccountRow, Option<i64>)>;

/// A page of ListAccounts from memory, if the cache holds everything it needs.
fn accounts_from_memory(
    cache: &ReadCache,
    generation: &Generation,
    owner: &str,
    after: &str,
    limit: i64,
) -> Option<AccountsWithDeposits> {
    let numbers = cache.owner(generation, owner)?;
    let start = numbers.partition_point(|n| &**n <= after);
    numbers[start..]
        .iter()
        .take(usize::try_from(limit + 1).unwrap_or(usize::MAX))
        .map(|number| {
            let row = cache.account(generation, number)?;
            let deposits = cache.overlay(generation, number)?;
            Some(((*row).clone(), Some(deposits)))
        })
        .collect()
}

/// Reads every account of `owner` in the generation's snapshot with its deposits, keeps them
/// and the list, and returns them; `None` when the generation's snapshot is gone (or going:
/// nothing read then is kept) or the customer has too many accounts to keep (the caller reads
/// the database page by page).
fn fill_owner(
    c: &mut DbConnection,
    cache: &ReadCache,
    generation: &Generation,
    owner: &str,
) -> Result<Option<AccountsWithDeposits>> {
    let snapshot = generation.snapshot;
    let rows = read::accounts_page(c, snapshot.id, owner, "", ACCOUNTS_KEPT_MAX as i64 + 1)?;
    if rows.len() > ACCOUNTS_KEPT_MAX {
        return Ok(None);
    }
    let tickets: Vec<Ticket> = rows
        .iter()
        .map(|r| cache.ticket(&r.account_number))
        .collect();
    let numbers: Vec<&str> = rows.iter().map(|r| r.account_number.as_str()).collect();
    let deposits = ledger::overlay_each(c, &numbers, snapshot.as_of)?;
    if !still_kept(c, snapshot.id, false)? {
        return Ok(None);
    }
    let all: Vec<(AccountRow, Option<i64>)> = rows
        .into_iter()
        .zip(tickets)
        .map(|(row, ticket)| {
            let sum = deposits
                .get(&row.account_number)
                .copied()
                .unwrap_or(Some(0));
            if let Some(sum) = sum {
                cache.keep_overlay(generation, &row.account_number, ticket, sum);
            }
            cache.keep_account(generation, row.clone());
            (row, sum)
        })
        .collect();
    let numbers: Arc<[Box<str>]> = all
        .iter()
        .map(|(row, _)| row.account_number.as_str().into())
        .collect();
    cache.keep_owner(generation, owner, numbers);
    Ok(Some(all))
}

/// Reads an account (whoever owns it) and its deposits in the generation's snapshot and keeps
/// them; `None` when the snapshot has no such account (or is gone: the caller then reads the
/// current snapshot).
fn fill_account(
    c: &mut DbConnection,
    cache: &ReadCache,
    generation: &Generation,
    account_number: &AccountNumber,
) -> Result<Option<(AccountRow, Option<i64>)>> {
    let ticket = cache.ticket(account_number.as_str());
    let Some((_, row, deposits)) = read::account_at(c, generation.snapshot.id, account_number)?
    else {
        return Ok(None);
    };
    if let Some(sum) = deposits {
        cache.keep_overlay(generation, account_number.as_str(), ticket, sum);
    }
    cache.keep_account(generation, row.clone());
    Ok(Some((row, deposits)))
}

/// ListAccounts' answer from the accounts after the previous page (up to `limit + 1`) and
/// their deposits. An account whose figures cannot be represented (only corrupt data gets
/// there) is left out rather than failing the customer's other accounts; GetAccount on it
/// says why.
fn accounts_page(
    tokens: &PageTokens,
    listing: Listing<'_>,
    snapshot: SnapshotRef,
    page: Vec<(AccountRow, Option<i64>)>,
    limit: i64,
) -> pb::ListAccountsResponse {
    let mut rows: Vec<AccountRow> = page
        .into_iter()
        .filter_map(|(mut row, deposits)| {
            let fits = match deposits {
                Some(0) => true,
                Some(amount) => credit(&mut row, amount).is_ok(),
                None => false,
            };
            if !fits {
                tracing::error!(account = %row.account_number, "figures out of range; left out of ListAccounts");
                metrics::counter!("portfolio_figures_out_of_range_total").increment(1);
            }
            fits.then_some(row)
        })
        .collect();
    let next_page_token = next_token(tokens, listing, &mut rows, limit, snapshot.id, |r| {
        &r.account_number
    });
    pb::ListAccountsResponse {
        accounts: rows.into_iter().map(summary).collect(),
        next_page_token,
    }
}

/// A holdings page (up to `limit + 1` rows) from all of an account's holdings, with the
/// deposits after the snapshot on its `CASH` line.
fn holdings_from(
    all: &[CachedHolding],
    after: &str,
    limit: i64,
    deposits: i64,
    cash: Option<(String, String)>,
) -> Result<Vec<HoldingRow>> {
    let start = all.partition_point(|h| &*h.instrument.isin <= after);
    let mut rows: Vec<HoldingRow> = all[start..]
        .iter()
        .take(usize::try_from(limit + 1).unwrap_or(usize::MAX))
        .map(CachedHolding::to_row)
        .collect();
    if deposits != 0 {
        let held = all.iter().any(|h| &*h.instrument.isin == CASH_ISIN);
        credit_cash(&mut rows, deposits, held, cash, after)?;
    }
    Ok(rows)
}

/// A holdings page read from the database: the current snapshot, or the one a page token
/// started on.
fn holdings_from_database(
    c: &mut DbConnection,
    token_snapshot: Option<i64>,
    account: &AccountNumber,
    owner: &str,
    after: &str,
    limit: i64,
) -> Result<Option<(SnapshotRef, Vec<HoldingRow>)>> {
    let pin = match token_snapshot {
        Some(id) => {
            read::readable_snapshot(c, id)?.ok_or_else(expired_token)?;
            Pin::Snapshot(id)
        }
        None => Pin::Current,
    };
    // Most pages: one statement (page, ownership, snapshot, and whether deposits may follow
    // the snapshot).
    let (snapshot, mut rows, deposits) =
        match read::owned_holdings_page(c, pin, account, owner, after, limit + 1)? {
            Some(read::HoldingsPage {
                snapshot,
                deposits_until,
                holdings,
            }) => {
                let deposits = if deposits_until.is_some_and(|until| until > snapshot.as_of) {
                    ledger::overlay_since(c, account.as_str(), snapshot.as_of)?
                        .ok_or_else(|| overflow("sum of recent deposits"))?
                } else {
                    0
                };
                (snapshot, holdings, deposits)
            }
            // Nothing after `after`: not the caller's account, or an empty last page (which
            // deposits may still give a `CASH` line).
            None => {
                let Some((snapshot, _, deposits)) = read::owned_account(c, pin, account, owner)?
                else {
                    return Ok(None);
                };
                let deposits = deposits.ok_or_else(|| overflow("sum of recent deposits"))?;
                (snapshot, Vec::new(), deposits)
            }
        };
    if deposits != 0 {
        let (held, instrument) = ledger::cash_line(c, snapshot.id, account)?;
        credit_cash(&mut rows, deposits, held, instrument, after)?;
    }
    Ok(Some((snapshot, rows)))
}

/// ListHoldings' answer from up to `limit + 1` rows.
fn holdings_page(
    tokens: &PageTokens,
    listing: Listing<'_>,
    snapshot: SnapshotRef,
    mut rows: Vec<HoldingRow>,
    limit: i64,
) -> pb::ListHoldingsResponse {
    let next_page_token = next_token(tokens, listing, &mut rows, limit, snapshot.id, |r| &r.isin);
    pb::ListHoldingsResponse {
        holdings: rows
            .into_iter()
            .map(|h| pb::Holding {
                isin: h.isin,
                name: h.name,
                asset_group: h.asset_group,
                quantity: h.quantity,
                current_price: h.current_price,
                valuation: h.valuation,
            })
            .collect(),
        next_page_token,
    }
}

/// Adds deposits confirmed after the snapshot to an account's figures: principal and total
/// assets rise by the amount, profit does not change.
fn credit(row: &mut AccountRow, amount: i64) -> Result<()> {
    row.principal = row
        .principal
        .checked_add(amount)
        .ok_or_else(|| overflow("principal"))?;
    row.total_assets = row
        .total_assets
        .checked_add(amount)
        .ok_or_else(|| overflow("total assets"))?;
    Ok(())
}

/// Name and asset group of `CASH` when the snapshot's master has no such instrument.
const CASH_NAME: (&str, &str) = ("현금", "채권 / 현금");

/// Adds deposits to the `CASH` line of a holdings page: the line shows quantity 1 and the
/// whole cash balance as its price. An account without a `CASH` line gets one, in ISIN order
/// (so on whichever page that order puts it).
fn credit_cash(
    rows: &mut Vec<HoldingRow>,
    amount: i64,
    held: bool,
    instrument: Option<(String, String)>,
    after: &str,
) -> Result<()> {
    if let Some(cash) = rows.iter_mut().find(|h| h.isin == CASH_ISIN) {
        cash.valuation = cash
            .valuation
            .checked_add(amount)
            .ok_or_else(|| overflow("cash balance"))?;
        cash.quantity = 1;
        cash.current_price = cash.valuation;
        return Ok(());
    }
    if held || after >= CASH_ISIN {
        // The cash line exists on another page, or this page starts after where it belongs.
        return Ok(());
    }
    let (name, asset_group) =
        instrument.unwrap_or_else(|| (CASH_NAME.0.to_owned(), CASH_NAME.1.to_owned()));
    let at = rows.partition_point(|h| h.isin.as_str() < CASH_ISIN);
    rows.insert(
        at,
        HoldingRow {
            isin: CASH_ISIN.to_owned(),
            name,
            asset_group,
            quantity: 1,
            current_price: amount,
            valuation: amount,
        },
    );
    Ok(())
}

/// Given `limit + 1` rows fetched, trims to `limit` and returns the token of the next page
/// (empty when there is none).
fn next_token<T>(
    tokens: &PageTokens,
    listing: Listing<'_>,
    rows: &mut Vec<T>,
    limit: i64,
    snapshot_id: i64,
    key: impl Fn(&T) -> &String,
) -> String {
    next_page(rows, limit, |last| {
        PageToken {
            snapshot_id,
            after: key(last).clone(),
        }
        .encode(tokens, listing)
    })
}

/// Given `limit + 1` rows fetched, trims to `limit` and returns the token `token` makes of
/// the last row kept, or empty when there is no next page.
fn next_page<T>(rows: &mut Vec<T>, limit: i64, token: impl Fn(&T) -> String) -> String {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if rows.len() <= limit {
        return String::new();
    }
    rows.truncate(limit);
    rows.last().map(token).unwrap_or_default()
}

/// Serves the current snapshot from memory if it is not the one served. A failure leaves the
/// cache as it was (readers then see the previous snapshot until the next refresh: the
/// janitor's tick, or on PostgreSQL the listener).
pub async fn refresh_cache(cache: &Arc<ReadCache>, db: &Database) {
    let cache = cache.clone();
    let refreshed = db
        .run(move |c| -> Result<()> { Ok(cache.refresh(false, || read::current_with_cash(c))?) })
        .await;
    if let Err(e) = refreshed {
        tracing::warn!(error = %e, "cannot read the current snapshot for the read cache");
    }
}

/// `invest.portfolio.v1.PortfolioIngest`.
#[derive(Debug, Clone)]
pub struct IngestApi {
    state: Arc<AppState>,
    on_loaded: tokio::sync::mpsc::Sender<()>,
}

impl IngestApi {
    /// Handlers over shared state; `on_loaded` wakes the janitor after a new snapshot.
    pub fn new(state: Arc<AppState>, on_loaded: tokio::sync::mpsc::Sender<()>) -> Self {
        Self { state, on_loaded }
    }
}

#[tonic::async_trait]
impl PortfolioIngest for IngestApi {
    async fn load_snapshot(
        &self,
        request: Request<Streaming<pb::SnapshotPart>>,
    ) -> Result<Response<pb::LoadSnapshotResponse>, Status> {
        let db = self.state.db()?;
        let loaded =
            ingest::load_snapshot(db.clone(), request.into_inner(), self.state.ingest).await?;
        if !loaded.unchanged {
            // Readers of this replica see the new snapshot once this answers (other replicas
            // learn it from the notification of the flip).
            refresh_cache(&self.state.cache, &db).await;
            let _ = self.on_loaded.try_send(());
        }
        let current = loaded.current;
        Ok(Response::new(pb::LoadSnapshotResponse {
            unchanged: loaded.unchanged,
            as_of: Some(time::from_micros(current.as_of)),
            digest: current.digest,
            instrument_count: current.instrument_count,
            account_count: current.account_count,
            holding_count: current.holding_count,
        }))
    }

    async fn list_snapshots(
        &self,
        request: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
        let caller_name = caller(&request)?.subject.clone();
        let request = request.into_inner();
        let limit = page_size(
            request.page_size,
            SNAPSHOTS_PAGE_DEFAULT,
            SNAPSHOTS_PAGE_MAX,
        )?;
        let after = SnapshotsToken::decode(&self.state.tokens, &caller_name, &request.page_token)?;
        let db = self.state.db()?;
        let mut rows = db
            .run(move |c| -> Result<_> {
                Ok(read::snapshots_page(
                    c,
                    after.map(|t| (t.as_of, t.id)),
                    limit + 1,
                )?)
            })
            .await?;
        let next_page_token = next_page(&mut rows, limit, |last| {
            SnapshotsToken {
                as_of: last.as_of,
                id: last.id,
            }
            .encode(&self.state.tokens, &caller_name)
        });
        Ok(Response::new(pb::ListSnapshotsResponse {
            snapshots: rows.into_iter().map(snapshot_record).collect(),
            next_page_token,
        }))
    }
}

const SNAPSHOTS_PAGE_DEFAULT: i64 = 20;
const SNAPSHOTS_PAGE_MAX: i64 = 100;

fn snapshot_record(row: read::SnapshotRecordRow) -> pb::SnapshotRecord {
    let finished_at = row.finished_at.unwrap_or(row.started_at);
    let took = finished_at.saturating_sub(row.started_at).max(0);
    pb::SnapshotRecord {
        as_of: Some(time::from_micros(row.as_of)),
        digest: row.digest,
        accounts: row.account_count,
        holdings: row.holding_count,
        instruments: row.instrument_count,
        loaded_at: Some(time::from_micros(finished_at)),
        load_duration: Some(prost_types::Duration {
            seconds: took / 1_000_000,
            nanos: i32::try_from((took % 1_000_000) * 1_000).unwrap_or(0),
        }),
        current: row.state == crate::store::state::CURRENT,
    }
}

/// `invest.portfolio.v1.PortfolioLedger`.
#[derive(Debug, Clone)]
pub struct LedgerApi {
    state: Arc<AppState>,
}

impl LedgerApi {
    /// Handlers over shared state.
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }
}

/// A transfer id as deposit-svc issues it (the one format, from invest-proto).
fn parse_transfer_id(text: &str) -> Result<TransferId> {
    TransferId::parse(text).map_err(|e| Error::invalid("INVALID_TRANSFER_ID", "transfer_id", e.0))
}

/// A positive amount of won.
fn parse_amount(amount: i64) -> Result<Won> {
    Won::new(amount).filter(|a| a.get() > 0).ok_or_else(|| {
        Error::invalid(
            "AMOUNT_OUT_OF_RANGE",
            "amount",
            format!("must be positive, got {amount}"),
        )
    })
}

/// The hold a HoldCash, TakeHold or ReleaseHold names.
fn parse_hold(transfer_id: &str, account_number: &str, amount: i64) -> Result<Hold> {
    Ok(Hold {
        transfer_id: parse_transfer_id(transfer_id)?,
        account_number: parse_account_number(account_number)?,
        amount: parse_amount(amount)?,
    })
}

impl LedgerApi {
    /// Runs a change of an account's cash and makes this replica's readers see it before
    /// the call answers (other replicas learn it from the notification the change sent).
    async fn change_cash<T: Send + 'static>(
        &self,
        account: AccountNumber,
        change: impl FnOnce(&mut DbConnection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let db = self.state.db()?;
        let outcome = db.run(change).await;
        self.state.cache.deposit_applied(account.as_str());
        outcome
    }
}

#[tonic::async_trait]
impl PortfolioLedger for LedgerApi {
    async fn apply_deposit(
        &self,
        request: Request<pb::ApplyDepositRequest>,
    ) -> Result<Response<pb::ApplyDepositResponse>, Status> {
        let request = request.into_inner();
        let transfer_id = parse_transfer_id(&request.transfer_id)?;
        let account_number = parse_account_number(&request.account_number)?;
        let amount = Won::new(request.amount)
            .filter(|amount| amount.get() > 0)
            .ok_or_else(|| {
                Error::invalid(
                    "AMOUNT_OUT_OF_RANGE",
                    "amount",
                    format!("must be positive, got {}", request.amount),
                )
            })?;
        let confirmed_at = request
            .confirmed_at
            .as_ref()
            .and_then(time::to_micros)
            .ok_or_else(|| {
                Error::invalid(
                    "INVALID_CONFIRMED_AT",
                    "confirmed_at",
                    "required, a valid timestamp",
                )
            })?;
        let credit = Credit {
            transfer_id,
            account_number,
            amount,
            confirmed_at,
            applied_at: time::now_micros(),
        };
        let db = self.state.db()?;
        let account = credit.account_number.clone();
        let applied = db.run(move |c| ledger::apply(c, &credit)).await?;
        // Readers of this replica see the credit once this answers (other replicas learn it
        // from the notification the insert sent).
        self.state.cache.deposit_applied(account.as_str());
        if applied == Applied::New {
            metrics::counter!("portfolio_deposits_applied_total").increment(1);
        }
        tracing::info!(transfer_id = %request.transfer_id, already_applied = applied == Applied::Already, "deposit applied");
        Ok(Response::new(pb::ApplyDepositResponse {
            already_applied: applied == Applied::Already,
        }))
    }

    async fn hold_cash(
        &self,
        request: Request<pb::HoldCashRequest>,
    ) -> Result<Response<pb::HoldCashResponse>, Status> {
        let r = request.into_inner();
        let hold = parse_hold(&r.transfer_id, &r.account_number, r.amount)?;
        let flip_lock_key = self.state.ingest.flip_lock_key;
        let (outcome, available) = self
            .change_cash(hold.account_number.clone(), move |c| {
                holds::hold(c, &hold, time::now_micros(), flip_lock_key)
            })
            .await
            .inspect_err(|e| {
                if matches!(e, Error::InsufficientFunds { .. }) {
                    metrics::counter!("portfolio_holds_refused_total").increment(1);
                }
            })?;
        if outcome == Outcome::New {
            metrics::counter!("portfolio_holds_total").increment(1);
        }
        Ok(Response::new(pb::HoldCashResponse {
            already_held: outcome == Outcome::Already,
            available_cash: available,
        }))
    }

    async fn take_hold(
        &self,
        request: Request<pb::TakeHoldRequest>,
    ) -> Result<Response<pb::TakeHoldResponse>, Status> {
        let r = request.into_inner();
        let hold = parse_hold(&r.transfer_id, &r.account_number, r.amount)?;
        let confirmed_at = r
            .confirmed_at
            .as_ref()
            .and_then(time::to_micros)
            .ok_or_else(|| {
                Error::invalid(
                    "INVALID_CONFIRMED_AT",
                    "confirmed_at",
                    "required, a valid timestamp",
                )
            })?;
        let outcome = self
            .change_cash(hold.account_number.clone(), move |c| {
                holds::take(c, &hold, confirmed_at, time::now_micros())
            })
            .await?;
        if outcome == Outcome::New {
            metrics::counter!("portfolio_holds_taken_total").increment(1);
        }
        Ok(Response::new(pb::TakeHoldResponse {
            already_taken: outcome == Outcome::Already,
        }))
    }

    async fn release_hold(
        &self,
        request: Request<pb::ReleaseHoldRequest>,
    ) -> Result<Response<pb::ReleaseHoldResponse>, Status> {
        let r = request.into_inner();
        let hold = parse_hold(&r.transfer_id, &r.account_number, r.amount)?;
        let outcome = self
            .change_cash(hold.account_number.clone(), move |c| {
                holds::release(c, &hold, time::now_micros())
            })
            .await?;
        if outcome == Outcome::New {
            metrics::counter!("portfolio_holds_released_total").increment(1);
        }
        Ok(Response::new(pb::ReleaseHoldResponse {
            already_released: outcome == Outcome::Already,
        }))
    }
}
