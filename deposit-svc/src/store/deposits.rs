//! Transfers: registration (idempotent on the caller's request id), confirmation by
//! compare-and-set together with its outbox row, wrong-signature counting, expiry, history.

use diesel::{prelude::*, result::DatabaseErrorKind};
use invest_runtime::{
    db::{DbConnection, DbError, write_transaction},
    error::Error as RuntimeError,
    with_backend,
};

use invest_proto::ids::{AccountNumber, TransferId, Won};

use super::{
    outbox::{self, Lease, OutboxRow, PendingCredit},
    schema::deposits,
};
use crate::{
    domain::Status,
    error::{Error, Result},
};

/// A transfer as stored.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = deposits, treat_none_as_default_value = false)]
pub struct DepositRow {
    /// 32 hex digits.
    pub transfer_id: String,
    /// The token `sub` that registered it (the account's owner).
    pub owner: String,
    /// Account credited.
    pub account_number: String,
    /// Owner's name as given in phase 1 (part of the signature).
    pub customer_name: String,
    /// Won.
    pub amount: i64,
    /// AIP-155 request id, if given.
    pub request_id: Option<String>,
    /// Where it stands, as written down (see [`DepositRow::effective_status`]).
    pub status: Status,
    /// Wrong signatures so far.
    pub failed_attempts: i64,
    /// Microseconds since the Unix epoch.
    pub created_at: i64,
    /// Phase 2 deadline.
    pub expires_at: i64,
    /// When confirmed.
    pub confirmed_at: Option<i64>,
    /// When portfolio-svc credited it.
    pub applied_at: Option<i64>,
}

impl DepositRow {
    /// The status a reader sees: a pending transfer past its deadline is expired, whether or
    /// not the sweep has written it down yet.
    pub fn effective_status(&self, now: i64) -> Status {
        self.status.effective(self.expires_at, now)
    }

    fn same_request(&self, other: &Self) -> bool {
        (&self.account_number, &self.customer_name, self.amount)
            == (&other.account_number, &other.customer_name, other.amount)
    }
}

/// At most one row by construction (a unique key): no `.first()`, whose bound LIMIT makes
/// SQLite prepare the statement again on every call.
fn one(rows: Vec<DepositRow>) -> Option<DepositRow> {
    rows.into_iter().next()
}

fn by_request(
    conn: &mut DbConnection,
    owner: &str,
    request_id: &str,
) -> QueryResult<Option<DepositRow>> {
    deposits::table
        .filter(deposits::owner.eq(owner))
        .filter(deposits::request_id.eq(request_id))
        .select(DepositRow::as_select())
        .load(conn)
        .map(one)
}

fn request_reused(request_id: &str) -> Error {
    Error::RequestIdReused(request_id.to_owned())
}

/// A transfer to register, its values parsed at the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDeposit {
    /// A fresh id.
    pub transfer_id: TransferId,
    /// The token `sub` registering it.
    pub owner: String,
    /// Account to credit.
    pub account_number: AccountNumber,
    /// Owner's name as given in phase 1.
    pub customer_name: String,
    /// Positive, within the maximum.
    pub amount: Won,
    /// AIP-155 request id, if given.
    pub request_id: Option<String>,
    /// Microseconds since the Unix epoch.
    pub created_at: i64,
    /// Phase 2 deadline.
    pub expires_at: i64,
}

/// Registers a transfer; with a request id, a retry with the same fields returns the first
/// registration and other fields are ALREADY_EXISTS.
pub fn register(conn: &mut DbConnection, new: &NewDeposit) -> Result<DepositRow> {
    let new = DepositRow {
        transfer_id: new.transfer_id.as_str().to_owned(),
        owner: new.owner.clone(),
        account_number: new.account_number.as_str().to_owned(),
        customer_name: new.customer_name.clone(),
        amount: new.amount.get(),
        request_id: new.request_id.clone(),
        status: Status::Pending,
        failed_attempts: 0,
        created_at: new.created_at,
        expires_at: new.expires_at,
        confirmed_at: None,
        applied_at: None,
    };
    register_once(
        conn,
        &new,
        new.request_id.as_deref().map(|id| (new.owner.as_str(), id)),
        by_request,
        DepositRow::same_request,
        |conn, row| {
            diesel::insert_into(deposits::table)
                .values(row)
                .execute(conn)
        },
    )
}

/// Inserts a new transfer (a deposit or a withdrawal), idempotent on the caller's request id
/// (AIP-155): with `request` = (owner, request id), a retry with the same fields (`same`)
/// returns the first registration, found by `find`, and other fields are ALREADY_EXISTS. Of
/// two concurrent retries the unique index lets one insert; the other answers with its row.
pub(crate) fn register_once<R: Clone>(
    conn: &mut DbConnection,
    new: &R,
    request: Option<(&str, &str)>,
    find: impl Fn(&mut DbConnection, &str, &str) -> QueryResult<Option<R>>,
    same: impl Fn(&R, &R) -> bool,
    insert: impl Fn(&mut DbConnection, &R) -> QueryResult<usize>,
) -> Result<R> {
    let replay =
        |conn: &mut DbConnection, (owner, request_id): (&str, &str)| -> Result<Option<R>> {
            match find(conn, owner, request_id)? {
                Some(first) if same(&first, new) => Ok(Some(first)),
                Some(_) => Err(request_reused(request_id)),
                None => Ok(None),
            }
        };
    let inserted = write_transaction(conn, |conn| -> Result<R> {
        if let Some(request) = request
            && let Some(first) = replay(conn, request)?
        {
            return Ok(first);
        }
        insert(conn, new)?;
        Ok(new.clone())
    });
    match (inserted, request) {
        // A concurrent retry with the same request id won the race: answer with its transfer.
        (
            Err(Error::Runtime(RuntimeError::Db(DbError::Query(
                diesel::result::Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _),
            )))),
            Some(request),
        ) => replay(conn, request)?.ok_or_else(|| request_reused(request.1)),
        (result, _) => result,
    }
}

/// A transfer of `owner`.
pub fn get(
    conn: &mut DbConnection,
    transfer_id: &TransferId,
    owner: &str,
) -> QueryResult<Option<DepositRow>> {
    with_backend!(conn, c => deposits::table
        .filter(deposits::transfer_id.eq(transfer_id.as_str()))
        .filter(deposits::owner.eq(owner))
        .select(DepositRow::as_select())
        .load(c))
    .map(one)
}

fn reload(conn: &mut DbConnection, transfer_id: &TransferId) -> QueryResult<DepositRow> {
    deposits::table
        .filter(deposits::transfer_id.eq(transfer_id.as_str()))
        .select(DepositRow::as_select())
        .load(conn)
        .map(one)?
        .ok_or(diesel::result::Error::NotFound)
}

/// Counts a wrong signature on a pending transfer; at `max_attempts` it becomes rejected.
pub fn wrong_signature(
    conn: &mut DbConnection,
    transfer_id: &TransferId,
    max_attempts: i64,
) -> Result<DepositRow> {
    write_transaction(conn, |conn| {
        diesel::update(deposits::table)
            .filter(deposits::transfer_id.eq(transfer_id.as_str()))
            .filter(deposits::status.eq(Status::Pending))
            .set(deposits::failed_attempts.eq(deposits::failed_attempts + 1))
            .execute(conn)?;
        diesel::update(deposits::table)
            .filter(deposits::transfer_id.eq(transfer_id.as_str()))
            .filter(deposits::status.eq(Status::Pending))
            .filter(deposits::failed_attempts.ge(max_attempts))
            .set(deposits::status.eq(Status::Rejected))
            .execute(conn)?;
        Ok(reload(conn, transfer_id)?)
    })
}

/// Writes down the expiry of pending transfers past their deadline (all of them, or one).
pub fn expire(
    conn: &mut DbConnection,
    now: i64,
    transfer_id: Option<&TransferId>,
) -> QueryResult<usize> {
    let mut update = diesel::update(deposits::table)
        .filter(deposits::status.eq(Status::Pending))
        .filter(deposits::expires_at.le(now))
        .into_boxed();
    if let Some(id) = transfer_id {
        update = update.filter(deposits::transfer_id.eq(id.as_str()));
    }
    update
        .set(deposits::status.eq(Status::Expired))
        .execute(conn)
}

/// What a confirmation found.
#[derive(Debug)]
pub enum Confirmation {
    /// Confirmed now; the outbox row, leased to us, is to be delivered.
    Confirmed(DepositRow, OutboxRow),
    /// Someone confirmed it before (a replay, or a concurrent call that won).
    AlreadyConfirmed(DepositRow),
    /// Not pending any more (expired or rejected).
    Closed(DepositRow),
}

/// PENDING → CONFIRMED as a compare-and-set, and the outbox row in the same transaction:
/// of concurrent confirmations exactly one succeeds, and a confirmation never exists
/// without its delivery.
/// `now` is the business time of the confirmation; `lease_now` the system time the outbox
/// lease starts at.
pub fn confirm(
    conn: &mut DbConnection,
    transfer_id: &TransferId,
    now: i64,
    lease: &Lease,
    lease_now: i64,
) -> Result<Confirmation> {
    write_transaction(conn, |conn| {
        let won = diesel::update(deposits::table)
            .filter(deposits::transfer_id.eq(transfer_id.as_str()))
            .filter(deposits::status.eq(Status::Pending))
            .filter(deposits::expires_at.gt(now))
            .set((
                deposits::status.eq(Status::Confirmed),
                deposits::confirmed_at.eq(Some(now)),
            ))
            .execute(conn)?;
        let row = reload(conn, transfer_id)?;
        if won == 1 {
            let credit = PendingCredit {
                transfer_id: &row.transfer_id,
                account_number: &row.account_number,
                amount: row.amount,
                confirmed_at: now,
                kind: outbox::kind::DEPOSIT,
            };
            let outbox = outbox::enqueue(conn, &credit, lease_now, lease)?;
            return Ok(Confirmation::Confirmed(row, outbox));
        }
        Ok(match row.status {
            Status::Confirmed => Confirmation::AlreadyConfirmed(row),
            _ => Confirmation::Closed(row),
        })
    })
}

/// Filters of a history listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// One account, or all.
    pub account_number: Option<AccountNumber>,
    /// One status, or any.
    pub status: Option<Status>,
    /// created_at >= this.
    pub start: Option<i64>,
    /// created_at < this.
    pub end: Option<i64>,
}

/// Up to `limit` transfers of `owner`, newest first, strictly after the cursor
/// (created_at, transfer_id) of the previous page.
pub fn list(
    conn: &mut DbConnection,
    owner: &str,
    filter: &ListFilter,
    cursor: Option<(i64, String)>,
    limit: i64,
    now: i64,
) -> QueryResult<Vec<DepositRow>> {
    let mut query = deposits::table
        .filter(deposits::owner.eq(owner.to_owned()))
        .select(DepositRow::as_select())
        .into_boxed();
    if let Some(account) = &filter.account_number {
        query = query.filter(deposits::account_number.eq(account.as_str().to_owned()));
    }
    query = match filter.status {
        None => query,
        // What a reader sees: pending past the deadline counts as expired.
        Some(Status::Pending) => query
            .filter(deposits::status.eq(Status::Pending))
            .filter(deposits::expires_at.gt(now)),
        Some(Status::Expired) => query.filter(
            deposits::status.eq(Status::Expired).or(deposits::status
                .eq(Status::Pending)
                .and(deposits::expires_at.le(now))),
        ),
        Some(status) => query.filter(deposits::status.eq(status)),
    };
    if let Some(start) = filter.start {
        query = query.filter(deposits::created_at.ge(start));
    }
    if let Some(end) = filter.end {
        query = query.filter(deposits::created_at.lt(end));
    }
    if let Some((created_at, transfer_id)) = cursor {
        query = query.filter(
            deposits::created_at.lt(created_at).or(deposits::created_at
                .eq(created_at)
                .and(deposits::transfer_id.lt(transfer_id))),
        );
    }
    query
        .order((deposits::created_at.desc(), deposits::transfer_id.desc()))
        .limit(limit)
        .load(conn)
}
