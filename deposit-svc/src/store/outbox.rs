//! The outbox of what portfolio-svc has still to be told: confirmed deposits to credit, and
//! withdrawals whose hold is to be taken or released. A row is claimed with a
//! lease (a conditional update, atomic on both databases), so that several replicas never
//! deliver the same row at once; it is deleted in the transaction that records the credit.

use diesel::prelude::*;
use invest_runtime::db::{DbConnection, write_transaction};

use super::schema::{deposits, outbox, withdrawals};
use crate::error::Result;

/// A pending delivery.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = outbox, treat_none_as_default_value = false)]
pub struct OutboxRow {
    /// The transfer (idempotency key in portfolio-svc).
    pub transfer_id: String,
    /// Account credited.
    pub account_number: String,
    /// Won.
    pub amount: i64,
    /// When confirmed.
    pub confirmed_at: i64,
    /// Failed deliveries so far.
    pub attempts: i64,
    /// Not before this moment.
    pub next_attempt_at: i64,
    /// Whoever holds the lease delivers until this moment.
    pub lease_until: i64,
    /// The replica holding the lease.
    pub lease_owner: Option<String>,
    /// Why the last delivery failed.
    pub last_error: Option<String>,
    /// What the delivery does (see [`kind`]).
    pub kind: String,
    /// The trace context of the call that queued it (when traces are on): a redelivery
    /// links to it.
    pub traceparent: Option<String>,
}

/// What a delivery does, as stored in `outbox.kind`.
pub mod kind {
    /// Credit a confirmed deposit (ApplyDeposit).
    pub const DEPOSIT: &str = "deposit";
    /// Take a confirmed withdrawal's hold (TakeHold).
    pub const TAKE: &str = "take";
    /// Release a closed withdrawal's hold (ReleaseHold).
    pub const RELEASE: &str = "release";
}

/// Who delivers, and for how long a claim holds.
#[derive(Debug, Clone)]
pub struct Lease {
    /// Unique per process start.
    pub owner: String,
    /// Length of a claim, in microseconds; longer than a delivery's timeout.
    pub micros: i64,
}

/// A confirmed deposit whose credit is to be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingCredit<'a> {
    /// The transfer (idempotency key in portfolio-svc).
    pub transfer_id: &'a str,
    /// Account to credit.
    pub account_number: &'a str,
    /// Won.
    pub amount: i64,
    /// When it was confirmed (a release: when the withdrawal closed).
    pub confirmed_at: i64,
    /// What the delivery does (see [`kind`]).
    pub kind: &'static str,
}

/// Queues the delivery of a deposit confirmed in the current transaction, leased to the
/// confirming replica, which delivers it at once.
pub fn enqueue(
    conn: &mut DbConnection,
    credit: &PendingCredit<'_>,
    now: i64,
    lease: &Lease,
) -> Result<OutboxRow> {
    let row = OutboxRow {
        transfer_id: credit.transfer_id.to_owned(),
        account_number: credit.account_number.to_owned(),
        amount: credit.amount,
        confirmed_at: credit.confirmed_at,
        attempts: 0,
        next_attempt_at: now,
        lease_until: now + lease.micros,
        lease_owner: Some(lease.owner.clone()),
        last_error: None,
        kind: credit.kind.to_owned(),
        traceparent: invest_runtime::telemetry::trace::current_traceparent(),
    };
    diesel::insert_into(outbox::table)
        .values(&row)
        .execute(conn)?;
    Ok(row)
}

/// Claims up to `limit` due rows whose lease has lapsed.
pub fn claim_due(
    conn: &mut DbConnection,
    now: i64,
    lease: &Lease,
    limit: i64,
) -> Result<Vec<OutboxRow>> {
    let candidates: Vec<String> = outbox::table
        .filter(outbox::next_attempt_at.le(now))
        .filter(outbox::lease_until.lt(now))
        .order(outbox::next_attempt_at.asc())
        .limit(limit)
        .select(outbox::transfer_id)
        .load(conn)?;
    let mut claimed = Vec::with_capacity(candidates.len());
    for transfer_id in candidates {
        // Only one replica's update can find the lease lapsed: the row is re-checked under
        // its write lock.
        let won = diesel::update(outbox::table)
            .filter(outbox::transfer_id.eq(&transfer_id))
            .filter(outbox::lease_until.lt(now))
            .set((
                outbox::lease_until.eq(now + lease.micros),
                outbox::lease_owner.eq(Some(&lease.owner)),
            ))
            .execute(conn)?;
        if won == 1
            && let Some(row) = outbox::table
                .filter(outbox::transfer_id.eq(&transfer_id))
                .select(OutboxRow::as_select())
                .first(conn)
                .optional()?
        {
            claimed.push(row);
        }
    }
    Ok(claimed)
}

/// Claims the row of one transfer if its lease has lapsed (a release queued for any
/// replica, which the replica that closed the withdrawal delivers at once).
pub fn claim_one(
    conn: &mut DbConnection,
    transfer_id: &str,
    now: i64,
    lease: &Lease,
) -> Result<Option<OutboxRow>> {
    let won = diesel::update(outbox::table)
        .filter(outbox::transfer_id.eq(transfer_id))
        .filter(outbox::lease_until.lt(now))
        .set((
            outbox::lease_until.eq(now + lease.micros),
            outbox::lease_owner.eq(Some(&lease.owner)),
        ))
        .execute(conn)?;
    if won == 0 {
        return Ok(None);
    }
    Ok(outbox::table
        .filter(outbox::transfer_id.eq(transfer_id))
        .select(OutboxRow::as_select())
        .first(conn)
        .optional()?)
}

/// Records a delivery: the outbox row goes and the deposit or withdrawal is marked applied,
/// together.
///
/// On PostgreSQL this commit does not wait for the write-ahead log to reach the disk: if a
/// crash loses it, the outbox row is still there, the delivery is repeated, and portfolio-svc
/// answers `already_applied`. Only the confirmation and the credit itself need durability.
pub fn delivered(conn: &mut DbConnection, transfer_id: &str, now: i64) -> Result<()> {
    write_transaction(conn, |conn| {
        if let DbConnection::Pg(c) = conn {
            diesel::connection::SimpleConnection::batch_execute(
                c,
                "SET LOCAL synchronous_commit = off",
            )?;
        }
        diesel::delete(outbox::table.filter(outbox::transfer_id.eq(transfer_id))).execute(conn)?;
        diesel::update(deposits::table)
            .filter(deposits::transfer_id.eq(transfer_id))
            .filter(deposits::applied_at.is_null())
            .set(deposits::applied_at.eq(Some(now)))
            .execute(conn)?;
        diesel::update(withdrawals::table)
            .filter(withdrawals::transfer_id.eq(transfer_id))
            .filter(withdrawals::applied_at.is_null())
            .set(withdrawals::applied_at.eq(Some(now)))
            .execute(conn)?;
        Ok(())
    })
}

/// Records a failed delivery and releases the lease until `next_attempt_at`.
pub fn failed(
    conn: &mut DbConnection,
    transfer_id: &str,
    lease: &Lease,
    error: &str,
    next_attempt_at: i64,
) -> Result<()> {
    diesel::update(outbox::table)
        .filter(outbox::transfer_id.eq(transfer_id))
        .filter(outbox::lease_owner.eq(Some(&lease.owner)))
        .set((
            outbox::attempts.eq(outbox::attempts + 1),
            outbox::next_attempt_at.eq(next_attempt_at),
            outbox::lease_until.eq(0),
            outbox::last_error.eq(Some(error)),
        ))
        .execute(conn)?;
    Ok(())
}

/// Rows waiting, and the confirmation time of the oldest, for metrics.
pub fn backlog(conn: &mut DbConnection) -> Result<(i64, Option<i64>)> {
    let count: i64 = outbox::table.count().get_result(conn)?;
    let oldest: Option<i64> = outbox::table
        .select(outbox::confirmed_at)
        .order(outbox::confirmed_at.asc())
        .first(conn)
        .optional()?;
    Ok((count, oldest))
}
