//! The rules of the two phases, on values parsed at the edge, run inside one database call:
//! who may register a deposit into which account, and what a phase-2 signature does to a
//! transfer (confirm it once, count a wrong one, reject at the limit, refuse a closed one).

use invest_proto::{ids::TransferId, signature::Signature, time};
use invest_runtime::db::DbConnection;

use crate::{
    domain::Status,
    error::{Error, Result},
    store::{
        deposits::{self, Confirmation, DepositRow, NewDeposit},
        directory,
        outbox::Lease,
    },
};

/// Business rules of deposits.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// Largest amount of one deposit, in won.
    pub max_amount: i64,
    /// How long phase 2 may wait, in microseconds.
    pub transfer_ttl: i64,
    /// Wrong signatures after which a transfer is rejected.
    pub max_signature_attempts: i64,
}

/// Phase 1: the account must be in the directory and belong to the caller (one answer for
/// both: NOT_FOUND), `customer_name` must be its owner's; then the transfer is registered
/// (idempotent on the caller's request id).
pub fn register(conn: &mut DbConnection, new: &NewDeposit) -> Result<DepositRow> {
    match directory::owner_of(conn, &new.account_number)? {
        Some(holder) if holder == new.owner => {
            if new.customer_name != holder {
                return Err(Error::CustomerNameMismatch(new.account_number.clone()));
            }
            deposits::register(conn, new)
        }
        _ => Err(Error::AccountNotFound(new.account_number.clone())),
    }
}

/// A phase-2 request, parsed.
#[derive(Debug, Clone)]
pub struct Confirm {
    /// The transfer.
    pub transfer_id: TransferId,
    /// The token `sub` confirming it.
    pub owner: String,
    /// What the caller signed.
    pub signature: Signature,
}

/// Phase 2. A transfer past its deadline or rejected is closed (FAILED_PRECONDITION). A
/// signature that does not match the registered fields counts as a wrong attempt, and the
/// attempt that reaches the limit rejects the transfer; on a confirmed transfer it is refused
/// without counting. A match confirms a pending transfer once (a compare-and-set written
/// with its outbox row, leased to this replica) or returns the confirmed one again.
pub fn confirm(
    conn: &mut DbConnection,
    request: &Confirm,
    rules: Rules,
    now: i64,
    lease: &Lease,
) -> Result<Confirmation> {
    let id = &request.transfer_id;
    let row = deposits::get(conn, id, &request.owner)?
        .ok_or_else(|| Error::TransferNotFound(id.clone()))?;
    let state = row.effective_status(now);
    if matches!(state, Status::Expired | Status::Rejected) {
        deposits::expire(conn, now, Some(id))?;
        return Ok(Confirmation::Closed(row));
    }
    let expected = Signature::of(&row.account_number, &row.customer_name, row.amount);
    if !request.signature.matches(&expected) {
        if state == Status::Confirmed {
            return Err(Error::SignatureMismatch {
                what_next: "the transfer is confirmed already".into(),
            });
        }
        let row = deposits::wrong_signature(conn, id, rules.max_signature_attempts)?;
        metrics::counter!("deposit_signature_mismatches_total").increment(1);
        let left = rules.max_signature_attempts - row.failed_attempts;
        return Err(Error::SignatureMismatch {
            what_next: if left > 0 {
                format!("{left} attempts left before the transfer is rejected")
            } else {
                metrics::counter!("deposits_rejected_total").increment(1);
                "that was the last attempt: the transfer is now rejected".into()
            },
        });
    }
    if state == Status::Confirmed {
        return Ok(Confirmation::AlreadyConfirmed(row));
    }
    deposits::confirm(conn, id, now, lease, time::now_micros())
}

/// Why the closed transfer `id` cannot be confirmed.
pub fn closed(id: TransferId, row: &DepositRow, now: i64) -> Error {
    match row.effective_status(now) {
        Status::Rejected => Error::TransferRejected(id),
        _ => Error::TransferExpired {
            id,
            at: time::rfc3339(row.expires_at),
        },
    }
}
