//! Deposits credited by deposit-svc, and the overlay they (and taken withdrawals, see
//! `holds`) put on top of a snapshot.

use std::collections::HashMap;

use diesel::{prelude::*, result::DatabaseErrorKind};
use invest_runtime::{
    db::{DbConnection, write_transaction},
    with_backend,
};

use super::{
    schema::{accounts, holdings, ledger_accounts, ledger_deposits, snapshots},
    state,
};
use invest_proto::ids::{AccountNumber, TransferId, Won};

use crate::error::{Error, Result};

/// A deposit to credit, its values parsed at the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credit {
    /// Idempotency key.
    pub transfer_id: TransferId,
    /// Account credited.
    pub account_number: AccountNumber,
    /// Positive.
    pub amount: Won,
    /// Microseconds since the Unix epoch.
    pub confirmed_at: i64,
    /// When portfolio-svc recorded it.
    pub applied_at: i64,
}

/// A credit as stored.
#[derive(Debug, Clone, PartialEq, Eq, Insertable, Queryable, Selectable)]
#[diesel(table_name = ledger_deposits)]
struct CreditRow {
    transfer_id: String,
    account_number: String,
    amount: i64,
    confirmed_at: i64,
    applied_at: i64,
}

impl From<&Credit> for CreditRow {
    fn from(credit: &Credit) -> Self {
        Self {
            transfer_id: credit.transfer_id.as_str().to_owned(),
            account_number: credit.account_number.as_str().to_owned(),
            amount: credit.amount.get(),
            confirmed_at: credit.confirmed_at,
            applied_at: credit.applied_at,
        }
    }
}

/// Whether a credit was new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Recorded now.
    New,
    /// Recorded before: nothing credited now.
    Already,
}

fn existing(conn: &mut DbConnection, transfer_id: &TransferId) -> QueryResult<Option<CreditRow>> {
    ledger_deposits::table
        .filter(ledger_deposits::transfer_id.eq(transfer_id.as_str()))
        .select(CreditRow::as_select())
        .first(conn)
        .optional()
}

fn same_credit(stored: &CreditRow, credit: &Credit) -> bool {
    (
        stored.account_number.as_str(),
        stored.amount,
        stored.confirmed_at,
    ) == (
        credit.account_number.as_str(),
        credit.amount.get(),
        credit.confirmed_at,
    )
}

fn reused(transfer_id: &TransferId) -> Error {
    Error::TransferIdReused(transfer_id.as_str().to_owned())
}

/// Whether the account is in a snapshot readers may see (the current one, or one kept for
/// paging): a primary-key search per kept snapshot, of which there are a few.
fn account_known(conn: &mut DbConnection, account_number: &AccountNumber) -> QueryResult<bool> {
    let kept = snapshots::table
        .filter(snapshots::state.ne(state::LOADING))
        .select(snapshots::id);
    diesel::select(diesel::dsl::exists(
        accounts::table
            .filter(accounts::snapshot_id.eq_any(kept))
            .filter(accounts::account_number.eq(account_number.as_str())),
    ))
    .get_result(conn)
}

/// Records a credit once. The primary key on the transfer id is the guarantee: of two
/// concurrent calls one inserts, the other finds it. A credit to an account no loaded
/// snapshot knows is NOT_FOUND (deposit-svc keeps it and delivers it again later); a repeat
/// of a credit already recorded is answered as such even if the account has gone since.
pub fn apply(conn: &mut DbConnection, credit: &Credit) -> Result<Applied> {
    let inserted = write_transaction(conn, |conn| -> Result<Applied> {
        if let Some(previous) = existing(conn, &credit.transfer_id)? {
            return if same_credit(&previous, credit) {
                Ok(Applied::Already)
            } else {
                Err(reused(&credit.transfer_id))
            };
        }
        if !account_known(conn, &credit.account_number)? {
            return Err(Error::AccountNotLoaded(
                credit.account_number.as_str().to_owned(),
            ));
        }
        // The running sums must stay 64-bit (SQLite would silently turn them into floats;
        // PostgreSQL's trigger fails the insert).
        if running_total(conn, &credit.account_number)?
            .checked_add(credit.amount.get())
            .is_none()
        {
            return Err(crate::domain::overflow("sum of deposits"));
        }
        diesel::insert_into(ledger_deposits::table)
            .values(CreditRow::from(credit))
            .execute(conn)?;
        Ok(Applied::New)
    });
    match inserted {
        Err(Error::Runtime(invest_runtime::error::Error::Db(
            invest_runtime::db::DbError::Query(diesel::result::Error::DatabaseError(
                DatabaseErrorKind::UniqueViolation,
                _,
            )),
        ))) => match existing(conn, &credit.transfer_id)? {
            Some(previous) if same_credit(&previous, credit) => Ok(Applied::Already),
            _ => Err(reused(&credit.transfer_id)),
        },
        other => other,
    }
}

/// The sum of the movements of `account_number` confirmed after `after` (a snapshot's
/// as_of): deposits, and taken withdrawals as negative amounts; from the running sums: the latest running sum minus the running sum of the last
/// deposit confirmed at or before `after`, two index searches in one statement (one
/// snapshot of the table), whatever the number of deposits. `None` only if the stored sums
/// are inconsistent (a corrupt database).
pub fn overlay_since(
    conn: &mut DbConnection,
    account_number: &str,
    after: i64,
) -> QueryResult<Option<i64>> {
    macro_rules! last_running {
        () => {
            ledger_deposits::table
                .filter(ledger_deposits::account_number.eq(account_number))
                .order((
                    ledger_deposits::confirmed_at.desc(),
                    ledger_deposits::transfer_id.desc(),
                ))
                .select(ledger_deposits::running)
        };
    }
    let (latest, base): (Option<i64>, Option<i64>) = with_backend!(conn, c => diesel::select((
        last_running!().single_value(),
        last_running!()
            .filter(ledger_deposits::confirmed_at.le(after))
            .single_value(),
    ))
    .get_result(c))?;
    Ok(latest.unwrap_or(0).checked_sub(base.unwrap_or(0)))
}

/// [`overlay_since`] for each of `accounts` that may have deposits after `after` (one
/// search of `ledger_accounts` for the page, then two per account that has); accounts
/// without such deposits are absent.
pub fn overlay_each(
    conn: &mut DbConnection,
    accounts: &[&str],
    after: i64,
) -> QueryResult<HashMap<String, Option<i64>>> {
    let candidates: Vec<String> = with_backend!(conn, c => ledger_accounts::table
        .filter(ledger_accounts::account_number.eq_any(accounts))
        .filter(ledger_accounts::deposits_until.gt(after))
        .select(ledger_accounts::account_number)
        .load(c))?;
    let mut sums = HashMap::with_capacity(candidates.len());
    for account in candidates {
        let sum = overlay_since(conn, &account, after)?;
        if sum != Some(0) {
            sums.insert(account, sum);
        }
    }
    Ok(sums)
}

/// The latest running sum of the account's deposits (0 without any).
pub(crate) fn running_total(
    conn: &mut DbConnection,
    account_number: &AccountNumber,
) -> QueryResult<i64> {
    Ok(ledger_deposits::table
        .filter(ledger_deposits::account_number.eq(account_number.as_str()))
        .order((
            ledger_deposits::confirmed_at.desc(),
            ledger_deposits::transfer_id.desc(),
        ))
        .select(ledger_deposits::running)
        .first::<i64>(conn)
        .optional()?
        .unwrap_or(0))
}

/// Whether the account holds `CASH` in the snapshot, and the name and asset group of the
/// `CASH` instrument of the snapshot (if the master has one).
pub fn cash_line(
    conn: &mut DbConnection,
    snapshot_id: i64,
    account_number: &AccountNumber,
) -> QueryResult<(bool, Option<(String, String)>)> {
    let held = holdings::table
        .filter(holdings::snapshot_id.eq(snapshot_id))
        .filter(holdings::account_number.eq(account_number.as_str()))
        .filter(holdings::isin.eq(invest_proto::ids::CASH_ISIN))
        .select(holdings::isin)
        .first::<String>(conn)
        .optional()?
        .is_some();
    Ok((held, super::read::cash_instrument(conn, snapshot_id)?))
}
