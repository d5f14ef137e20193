//! Withdrawals: registration (idempotent on the caller's request id), the hold's answer,
//! confirmation, cancellation, rejection and expiry, each a compare-and-set written with the
//! outbox row that tells portfolio-svc to take or release the hold, so that every closed
//! withdrawal is taken or released exactly once.

use diesel::prelude::*;
use invest_proto::ids::{AccountNumber, TransferId, Won};
use invest_runtime::{
    db::{DbConnection, write_transaction},
    with_backend,
};

use super::{
    deposits::{ListFilter, register_once},
    outbox::{self, Lease, OutboxRow, PendingCredit},
    schema::{outbox as outbox_table, withdrawals},
};
use crate::{domain::Status, error::Result};

/// A withdrawal as stored.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = withdrawals, treat_none_as_default_value = false)]
pub struct WithdrawalRow {
    /// 32 hex digits.
    pub transfer_id: String,
    /// The token `sub` that registered it (the account's owner).
    pub owner: String,
    /// Account the cash comes from.
    pub account_number: String,
    /// Owner's name as given in phase 1 (part of the signature).
    pub customer_name: String,
    /// Won.
    pub amount: i64,
    /// AIP-155 request id, if given.
    pub request_id: Option<String>,
    /// Where it stands, as written down (see [`WithdrawalRow::effective_status`]).
    pub status: Status,
    /// portfolio-svc answered the hold.
    pub held: bool,
    /// Wrong signatures so far.
    pub failed_attempts: i64,
    /// Microseconds since the Unix epoch.
    pub created_at: i64,
    /// Phase 2 deadline.
    pub expires_at: i64,
    /// When confirmed.
    pub confirmed_at: Option<i64>,
    /// When portfolio-svc took it (confirmed) or released its hold (closed otherwise).
    pub applied_at: Option<i64>,
}

impl WithdrawalRow {
    /// The status a reader sees: a pending withdrawal past its deadline is expired, whether or
    /// not the sweep has written it down (and queued its release) yet.
    pub fn effective_status(&self, now: i64) -> Status {
        self.status.effective(self.expires_at, now)
    }

    fn same_request(&self, other: &WithdrawalRow) -> bool {
        (&self.account_number, &self.customer_name, self.amount)
            == (&other.account_number, &other.customer_name, other.amount)
    }

    /// What portfolio-svc is told when the withdrawal closes: take (confirmed) or release.
    fn delivery(&self, kind: &'static str, at: i64) -> PendingCredit<'_> {
        PendingCredit {
            transfer_id: &self.transfer_id,
            account_number: &self.account_number,
            amount: self.amount,
            confirmed_at: at,
            kind,
        }
    }
}

/// A withdrawal to register, its values parsed at the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWithdrawal {
    /// A fresh id.
    pub transfer_id: TransferId,
    /// The token `sub` registering it.
    pub owner: String,
    /// Account to take the cash from.
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

fn one(rows: Vec<WithdrawalRow>) -> Option<WithdrawalRow> {
    rows.into_iter().next()
}

fn by_request(
    conn: &mut DbConnection,
    owner: &str,
    request_id: &str,
) -> QueryResult<Option<WithdrawalRow>> {
    withdrawals::table
        .filter(withdrawals::owner.eq(owner))
        .filter(withdrawals::request_id.eq(request_id))
        .select(WithdrawalRow::as_select())
        .load(conn)
        .map(one)
}

/// Registers a withdrawal, not yet held; with a request id, a retry with the same fields
/// returns the first registration (held or not) and other fields are ALREADY_EXISTS.
pub fn register(conn: &mut DbConnection, new: &NewWithdrawal) -> Result<WithdrawalRow> {
    let new = WithdrawalRow {
        transfer_id: new.transfer_id.as_str().to_owned(),
        owner: new.owner.clone(),
        account_number: new.account_number.as_str().to_owned(),
        customer_name: new.customer_name.clone(),
        amount: new.amount.get(),
        request_id: new.request_id.clone(),
        status: Status::Pending,
        held: false,
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
        WithdrawalRow::same_request,
        |conn, row| {
            diesel::insert_into(withdrawals::table)
                .values(row)
                .execute(conn)
        },
    )
}

/// portfolio-svc holds the amount: the withdrawal can be confirmed.
pub fn mark_held(conn: &mut DbConnection, transfer_id: &str) -> QueryResult<()> {
    diesel::update(withdrawals::table)
        .filter(withdrawals::transfer_id.eq(transfer_id))
        .set(withdrawals::held.eq(true))
        .execute(conn)?;
    Ok(())
}

/// portfolio-svc refused the hold (not enough cash, or no such account): the registration
/// goes, so that the same request id may try again later; nothing was held.
pub fn forget(conn: &mut DbConnection, transfer_id: &str) -> QueryResult<()> {
    diesel::delete(
        withdrawals::table
            .filter(withdrawals::transfer_id.eq(transfer_id))
            .filter(withdrawals::held.eq(false))
            .filter(withdrawals::status.eq(Status::Pending)),
    )
    .execute(conn)?;
    Ok(())
}

/// A withdrawal of `owner`.
pub fn get(
    conn: &mut DbConnection,
    transfer_id: &TransferId,
    owner: &str,
) -> QueryResult<Option<WithdrawalRow>> {
    with_backend!(conn, c => withdrawals::table
        .filter(withdrawals::transfer_id.eq(transfer_id.as_str()))
        .filter(withdrawals::owner.eq(owner))
        .select(WithdrawalRow::as_select())
        .load(c))
    .map(one)
}

fn reload(conn: &mut DbConnection, transfer_id: &str) -> QueryResult<WithdrawalRow> {
    withdrawals::table
        .filter(withdrawals::transfer_id.eq(transfer_id))
        .select(WithdrawalRow::as_select())
        .load(conn)
        .map(one)?
        .ok_or(diesel::result::Error::NotFound)
}

/// A release not leased to anyone: the first delivery loop to look delivers it. `closed_at`
/// is business time; the outbox's timing runs on the system clock (see `delivery.rs`).
fn enqueue_release(conn: &mut DbConnection, row: &WithdrawalRow, closed_at: i64) -> Result<()> {
    let release = row.delivery(outbox::kind::RELEASE, closed_at);
    let unleased = Lease {
        owner: String::new(),
        micros: -1,
    };
    outbox::enqueue(conn, &release, invest_proto::time::now_micros(), &unleased)?;
    diesel::update(outbox_table::table)
        .filter(outbox_table::transfer_id.eq(&row.transfer_id))
        .set(outbox_table::lease_owner.eq(None::<String>))
        .execute(conn)?;
    Ok(())
}

/// Pending → `to` as a compare-and-set (only a pending, unexpired withdrawal, or with
/// `expired_only` one past its deadline), with its release in the same transaction. True if
/// this call closed it.
fn close(
    conn: &mut DbConnection,
    transfer_id: &str,
    to: Status,
    now: i64,
    expired_only: bool,
) -> Result<bool> {
    let base = withdrawals::table
        .filter(withdrawals::transfer_id.eq(transfer_id))
        .filter(withdrawals::status.eq(Status::Pending));
    let won = if expired_only {
        diesel::update(base.filter(withdrawals::expires_at.le(now)))
            .set(withdrawals::status.eq(to))
            .execute(conn)?
    } else {
        diesel::update(base.filter(withdrawals::expires_at.gt(now)))
            .set(withdrawals::status.eq(to))
            .execute(conn)?
    };
    if won == 1 {
        let row = reload(conn, transfer_id)?;
        enqueue_release(conn, &row, now)?;
    }
    Ok(won == 1)
}

/// Counts a wrong signature on a pending withdrawal; at `max_attempts` it is rejected and its
/// hold released.
pub fn wrong_signature(
    conn: &mut DbConnection,
    transfer_id: &TransferId,
    max_attempts: i64,
    now: i64,
) -> Result<WithdrawalRow> {
    write_transaction(conn, |conn| {
        let id = transfer_id.as_str();
        diesel::update(withdrawals::table)
            .filter(withdrawals::transfer_id.eq(id))
            .filter(withdrawals::status.eq(Status::Pending))
            .set(withdrawals::failed_attempts.eq(withdrawals::failed_attempts + 1))
            .execute(conn)?;
        let row = reload(conn, id)?;
        if row.status == Status::Pending && row.failed_attempts >= max_attempts {
            close(conn, id, Status::Rejected, now, false)?;
        }
        Ok(reload(conn, id)?)
    })
}

/// Writes down the expiry of pending withdrawals past their deadline (all of them, or one)
/// and queues the release of each. Returns how many this call expired.
pub fn expire(
    conn: &mut DbConnection,
    now: i64,
    transfer_id: Option<&TransferId>,
) -> Result<usize> {
    let mut due = withdrawals::table
        .filter(withdrawals::status.eq(Status::Pending))
        .filter(withdrawals::expires_at.le(now))
        .select(withdrawals::transfer_id)
        .limit(500)
        .into_boxed();
    if let Some(id) = transfer_id {
        due = due.filter(withdrawals::transfer_id.eq(id.as_str()));
    }
    let due: Vec<String> = due.load(conn)?;
    let mut expired = 0;
    for id in due {
        if write_transaction(conn, |conn| close(conn, &id, Status::Expired, now, true))? {
            expired += 1;
        }
    }
    Ok(expired)
}

/// What a confirmation found.
#[derive(Debug)]
pub enum Confirmation {
    /// Confirmed now; the outbox row (the take), leased to us, is to be delivered.
    Confirmed(WithdrawalRow, OutboxRow),
    /// Someone confirmed it before (a replay, or a concurrent call that won).
    AlreadyConfirmed(WithdrawalRow),
    /// Not pending any more (expired, rejected or cancelled).
    Closed(WithdrawalRow),
}

/// PENDING → CONFIRMED as a compare-and-set (only a held, unexpired withdrawal), and the
/// take in the outbox in the same transaction.
pub fn confirm(
    conn: &mut DbConnection,
    transfer_id: &TransferId,
    now: i64,
    lease: &Lease,
    lease_now: i64,
) -> Result<Confirmation> {
    write_transaction(conn, |conn| {
        let id = transfer_id.as_str();
        let won = diesel::update(withdrawals::table)
            .filter(withdrawals::transfer_id.eq(id))
            .filter(withdrawals::status.eq(Status::Pending))
            .filter(withdrawals::held.eq(true))
            .filter(withdrawals::expires_at.gt(now))
            .set((
                withdrawals::status.eq(Status::Confirmed),
                withdrawals::confirmed_at.eq(Some(now)),
            ))
            .execute(conn)?;
        let row = reload(conn, id)?;
        if won == 1 {
            let take = row.delivery(outbox::kind::TAKE, now);
            let outbox = outbox::enqueue(conn, &take, lease_now, lease)?;
            return Ok(Confirmation::Confirmed(row, outbox));
        }
        Ok(match row.status {
            Status::Confirmed => Confirmation::AlreadyConfirmed(row),
            _ => Confirmation::Closed(row),
        })
    })
}

/// Cancels a pending withdrawal (and queues its release); returns it as it stands after.
pub fn cancel(
    conn: &mut DbConnection,
    transfer_id: &TransferId,
    now: i64,
) -> Result<WithdrawalRow> {
    write_transaction(conn, |conn| {
        let id = transfer_id.as_str();
        close(conn, id, Status::Cancelled, now, false)?;
        Ok(reload(conn, id)?)
    })
}

/// Up to `limit` withdrawals of `owner`, newest first, strictly after the cursor
/// (created_at, transfer_id) of the previous page.
pub fn list(
    conn: &mut DbConnection,
    owner: &str,
    filter: &ListFilter,
    cursor: Option<(i64, String)>,
    limit: i64,
    now: i64,
) -> QueryResult<Vec<WithdrawalRow>> {
    let mut query = withdrawals::table
        .filter(withdrawals::owner.eq(owner.to_owned()))
        .select(WithdrawalRow::as_select())
        .into_boxed();
    if let Some(account) = &filter.account_number {
        query = query.filter(withdrawals::account_number.eq(account.as_str().to_owned()));
    }
    query = match filter.status {
        None => query,
        Some(Status::Pending) => query
            .filter(withdrawals::status.eq(Status::Pending))
            .filter(withdrawals::expires_at.gt(now)),
        Some(Status::Expired) => query.filter(
            withdrawals::status
                .eq(Status::Expired)
                .or(withdrawals::status
                    .eq(Status::Pending)
                    .and(withdrawals::expires_at.le(now))),
        ),
        Some(status) => query.filter(withdrawals::status.eq(status)),
    };
    if let Some(start) = filter.start {
        query = query.filter(withdrawals::created_at.ge(start));
    }
    if let Some(end) = filter.end {
        query = query.filter(withdrawals::created_at.lt(end));
    }
    if let Some((created_at, transfer_id)) = cursor {
        query = query.filter(
            withdrawals::created_at
                .lt(created_at)
                .or(withdrawals::created_at
                    .eq(created_at)
                    .and(withdrawals::transfer_id.lt(transfer_id))),
        );
    }
    query
        .order((
            withdrawals::created_at.desc(),
            withdrawals::transfer_id.desc(),
        ))
        .limit(limit)
        .load(conn)
}

/// Withdrawals waiting for phase 2 (the metric `withdrawals_pending`): a range of the status
/// index.
pub fn pending_count(conn: &mut DbConnection) -> QueryResult<i64> {
    withdrawals::table
        .filter(withdrawals::status.eq(Status::Pending.as_str()))
        .count()
        .get_result(conn)
}
