//! Deposits credited by deposit-svc, and the overlay they put on top of a snapshot.

use std::collections::HashMap;

use diesel::{prelude::*, result::DatabaseErrorKind};
use invest_runtime::db::{DbConnection, write_transaction};

use super::{
    schema::{accounts, holdings, instruments, ledger_deposits, snapshots},
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
#[derive(Debug, Clone, PartialEq, Eq, Insertable, Queryable)]
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

/// Sum of the deposits of each account confirmed after `after` (a snapshot's as_of), with
/// checked arithmetic: `None` for an account whose sum does not fit in 64 bits. Accounts
/// without such deposits are absent.
pub fn overlay_each(
    conn: &mut DbConnection,
    accounts: &[&str],
    after: i64,
) -> Result<HashMap<String, Option<i64>>> {
    let rows: Vec<(String, i64)> = ledger_deposits::table
        .filter(ledger_deposits::account_number.eq_any(accounts))
        .filter(ledger_deposits::confirmed_at.gt(after))
        .select((ledger_deposits::account_number, ledger_deposits::amount))
        .load(conn)?;
    let mut sums: HashMap<String, Option<i64>> = HashMap::new();
    for (account, amount) in rows {
        let sum = sums.entry(account).or_insert(Some(0));
        *sum = sum.and_then(|sum| sum.checked_add(amount));
    }
    Ok(sums)
}

/// [`overlay_each`], failing (FIGURE_OUT_OF_RANGE) when a sum does not fit.
pub fn overlay(
    conn: &mut DbConnection,
    accounts: &[&str],
    after: i64,
) -> Result<HashMap<String, i64>> {
    overlay_each(conn, accounts, after)?
        .into_iter()
        .map(|(account, sum)| {
            sum.map(|sum| (account, sum))
                .ok_or_else(|| crate::domain::overflow("sum of recent deposits"))
        })
        .collect()
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
    let instrument = instruments::table
        .filter(instruments::snapshot_id.eq(snapshot_id))
        .filter(instruments::isin.eq(invest_proto::ids::CASH_ISIN))
        .select((instruments::name, instruments::asset_group))
        .first(conn)
        .optional()?;
    Ok((held, instrument))
}
