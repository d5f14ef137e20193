//! Cash held by pending withdrawals, and what taking or releasing a hold does.
//!
//! # Why a hold can never overdraw
//!
//! An account's available cash is its `CASH` valuation in the current snapshot, plus the
//! movements after the snapshot's `as_of` (deposits, and taken withdrawals as negative
//! amounts, in `ledger_deposits`), minus `ledger_accounts.held`. Only a hold lowers it (a
//! take lowers the cash and the held sum by the same amount; deposits and releases raise
//! it). So the guarantee is that no two holds of one account decide on the same cash, and
//! that each decides on what is committed:
//!
//! - **PostgreSQL** (any number of replicas): every transaction that changes an account's
//!   cash takes the same transaction-scoped advisory lock on the account first, the one the
//!   `ledger_deposits` trigger takes for deposits (key space 1886352244, `hashtext` of the
//!   account number). An advisory lock lives in the database server, so it serialises the
//!   writers of every replica; a hold then reads, under the lock, figures that no other
//!   writer of the account can change until it commits (READ COMMITTED reads what committed
//!   before each statement, and everything that could have changed them waits for the lock).
//!   A hold also takes the snapshot flip's lock in shared mode, so that the snapshot it
//!   checks against is the one current when it commits.
//! - **SQLite** (one process): a write transaction begins `IMMEDIATE`, taking the database's
//!   only write lock before it reads, so the whole check-and-hold is one serial step.
//!
//! `ledger_accounts.held` has `CHECK (held >= 0)`, and the code below never writes the hold's
//! state without it: a take or release that found no `held` hold changes nothing.

use diesel::{
    prelude::*,
    sql_types::{BigInt, Text},
};
use invest_proto::ids::{AccountNumber, CASH_ISIN, TransferId, Won};
use invest_runtime::{
    db::{DbConnection, write_transaction},
    with_backend,
};

use super::{
    ledger,
    read::{self, SnapshotRef},
    schema::{accounts, holdings, ledger_accounts, ledger_deposits, ledger_holds},
};
use crate::error::{Error, Result};

/// The states of a hold as stored.
pub mod state {
    /// Cash held for a pending withdrawal.
    pub const HELD: &str = "held";
    /// Taken: the withdrawal is a movement in `ledger_deposits`.
    pub const TAKEN: &str = "taken";
    /// Released (or refused before any hold: a late HoldCash holds nothing).
    pub const RELEASED: &str = "released";
}

/// A withdrawal's hold, its values parsed at the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// The withdrawal in deposit-svc: the idempotency key.
    pub transfer_id: TransferId,
    /// The account whose cash it holds.
    pub account_number: AccountNumber,
    /// Positive.
    pub amount: Won,
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = ledger_holds)]
struct HoldRow {
    transfer_id: String,
    account_number: String,
    amount: i64,
    state: String,
    held_at: Option<i64>,
    closed_at: Option<i64>,
}

impl HoldRow {
    fn is(&self, hold: &Hold) -> bool {
        (self.account_number.as_str(), self.amount)
            == (hold.account_number.as_str(), hold.amount.get())
    }

    fn closed_state(&self) -> &'static str {
        if self.state == state::TAKEN {
            state::TAKEN
        } else {
            state::RELEASED
        }
    }
}

/// What a call found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done now.
    New,
    /// Done before: nothing changed now.
    Already,
}

/// An account's cash, as a withdrawal sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cash {
    /// The `CASH` valuation in the snapshot (0 without a `CASH` holding).
    pub valuation: i64,
    /// Deposits minus taken withdrawals after the snapshot's `as_of`.
    pub movements: i64,
    /// Held by pending withdrawals.
    pub held: i64,
}

impl Cash {
    /// What can be held or withdrawn now; never below zero (a new day with less `CASH` than
    /// the holds shows nothing available, and the holds stand).
    pub fn available(&self) -> Result<i64> {
        self.valuation
            .checked_add(self.movements)
            .and_then(|cash| cash.checked_sub(self.held))
            .map(|available| available.max(0))
            .ok_or_else(|| crate::domain::overflow("available cash"))
    }
}

/// The account's cash on top of `snapshot`, in one statement (one view of the tables, so a
/// take, which lowers the movements and the held cash together, is seen whole or not at all):
/// the account's existence, its `CASH` valuation and the held cash (primary-key searches) and
/// the movements after the snapshot's as_of (two searches of the running sums, as
/// [`ledger::overlay_since`]). `None` when the snapshot has no such account.
pub fn cash(
    conn: &mut DbConnection,
    snapshot: SnapshotRef,
    account_number: &str,
) -> Result<Option<Cash>> {
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
    type Row = (bool, Option<i64>, Option<i64>, Option<i64>, Option<i64>);
    let (exists, valuation, held, latest, base): Row = with_backend!(conn, c => diesel::select((
        diesel::dsl::exists(
            accounts::table
                .filter(accounts::snapshot_id.eq(snapshot.id))
                .filter(accounts::account_number.eq(account_number)),
        ),
        holdings::table
            .filter(holdings::snapshot_id.eq(snapshot.id))
            .filter(holdings::account_number.eq(account_number))
            .filter(holdings::isin.eq(CASH_ISIN))
            .select(holdings::valuation)
            .single_value(),
        ledger_accounts::table
            .filter(ledger_accounts::account_number.eq(account_number))
            .select(ledger_accounts::held)
            .single_value(),
        last_running!().single_value(),
        last_running!()
            .filter(ledger_deposits::confirmed_at.le(snapshot.as_of))
            .single_value(),
    ))
    .get_result(c))?;
    if !exists {
        return Ok(None);
    }
    let movements = latest
        .unwrap_or(0)
        .checked_sub(base.unwrap_or(0))
        .ok_or_else(|| crate::domain::overflow("sum of recent movements"))?;
    Ok(Some(Cash {
        valuation: valuation.unwrap_or(0),
        movements,
        held: held.unwrap_or(0),
    }))
}

/// Serialises, across every replica, the transactions that change one account's cash (see
/// the module docs). SQLite's write transaction is serial already.
fn lock_account(conn: &mut DbConnection, account_number: &str) -> QueryResult<()> {
    if let DbConnection::Pg(c) = conn {
        // The key the `ledger_deposits_running` trigger takes for a deposit.
        diesel::sql_query("SELECT pg_advisory_xact_lock(1886352244, hashtext($1))")
            .bind::<Text, _>(account_number)
            .execute(c)?;
    }
    Ok(())
}

fn find(conn: &mut DbConnection, transfer_id: &TransferId) -> QueryResult<Option<HoldRow>> {
    ledger_holds::table
        .filter(ledger_holds::transfer_id.eq(transfer_id.as_str()))
        .select(HoldRow::as_select())
        .first(conn)
        .optional()
}

fn reused(transfer_id: &TransferId) -> Error {
    Error::TransferIdReused(transfer_id.as_str().to_owned())
}

/// What the account's pending withdrawals hold falls by `amount` (a hold closed; its row
/// exists since the hold added to it).
fn sub_held(conn: &mut DbConnection, account_number: &str, amount: i64) -> QueryResult<()> {
    diesel::update(ledger_accounts::table)
        .filter(ledger_accounts::account_number.eq(account_number))
        .set(ledger_accounts::held.eq(ledger_accounts::held - amount))
        .execute(conn)?;
    Ok(())
}

/// Adds `delta` (positive) to what the account's pending withdrawals hold.
fn add_held(conn: &mut DbConnection, account_number: &str, delta: i64) -> QueryResult<()> {
    with_backend!(conn, c => diesel::insert_into(ledger_accounts::table)
        .values((
            ledger_accounts::account_number.eq(account_number),
            ledger_accounts::deposits_until.eq(0),
            ledger_accounts::held.eq(delta),
        ))
        .on_conflict(ledger_accounts::account_number)
        .do_update()
        .set(ledger_accounts::held.eq(ledger_accounts::held + delta))
        .execute(c))?;
    Ok(())
}

/// Holds `hold.amount` of the account's available cash, in one transaction under the
/// account's lock: the check and the hold are one step (see the module docs). Returns what
/// is available after it.
pub fn hold(
    conn: &mut DbConnection,
    hold: &Hold,
    now: i64,
    flip_lock_key: i64,
) -> Result<(Outcome, i64)> {
    let account = hold.account_number.as_str();
    write_transaction(conn, |conn| -> Result<(Outcome, i64)> {
        if let DbConnection::Pg(c) = conn {
            diesel::sql_query("SELECT pg_advisory_xact_lock_shared($1)")
                .bind::<BigInt, _>(flip_lock_key)
                .execute(c)?;
        }
        lock_account(conn, account)?;
        let snapshot = read::current_ref(conn)?;
        let cash = match snapshot {
            Some(snapshot) => cash(conn, snapshot, account)?,
            None => None,
        };
        let available = |cash: Option<Cash>| cash.map_or(Ok(0), |c| c.available());
        if let Some(previous) = find(conn, &hold.transfer_id)? {
            if !previous.is(hold) {
                return Err(reused(&hold.transfer_id));
            }
            return match previous.state.as_str() {
                state::RELEASED => Err(Error::HoldClosed {
                    id: previous.transfer_id,
                    state: state::RELEASED,
                    what: "a released withdrawal holds nothing again; register a new one",
                }),
                _ => Ok((Outcome::Already, available(cash)?)),
            };
        }
        let Some(cash) = cash else {
            return Err(Error::AccountNotFound(account.to_owned()));
        };
        let before = cash.available()?;
        let amount = hold.amount.get();
        if before < amount {
            return Err(Error::InsufficientFunds {
                account: account.to_owned(),
                available: before,
                amount,
            });
        }
        diesel::insert_into(ledger_holds::table)
            .values(HoldRow {
                transfer_id: hold.transfer_id.as_str().to_owned(),
                account_number: account.to_owned(),
                amount,
                state: state::HELD.to_owned(),
                held_at: Some(now),
                closed_at: None,
            })
            .execute(conn)?;
        // The change of `held` notifies every replica (a trigger; see the migration).
        add_held(conn, account, amount)?;
        Ok((Outcome::New, before - amount))
    })
}

/// Takes a held withdrawal: the hold closes and the withdrawal becomes a movement of
/// `-amount` confirmed at `confirmed_at`, in one transaction under the account's lock.
pub fn take(conn: &mut DbConnection, hold: &Hold, confirmed_at: i64, now: i64) -> Result<Outcome> {
    let account = hold.account_number.as_str();
    write_transaction(conn, |conn| -> Result<Outcome> {
        lock_account(conn, account)?;
        let Some(previous) = find(conn, &hold.transfer_id)? else {
            return Err(Error::HoldNotFound(hold.transfer_id.as_str().to_owned()));
        };
        if !previous.is(hold) {
            return Err(reused(&hold.transfer_id));
        }
        match previous.state.as_str() {
            state::TAKEN => return Ok(Outcome::Already),
            state::RELEASED => {
                return Err(Error::HoldClosed {
                    id: previous.transfer_id,
                    state: state::RELEASED,
                    what: "a released hold cannot be taken",
                });
            }
            _ => {}
        }
        let amount = hold.amount.get();
        // The running sums stay 64-bit (see `ledger::apply`).
        if ledger::running_total(conn, &hold.account_number)?
            .checked_sub(amount)
            .is_none()
        {
            return Err(crate::domain::overflow("sum of movements"));
        }
        diesel::update(ledger_holds::table)
            .filter(ledger_holds::transfer_id.eq(hold.transfer_id.as_str()))
            .set((
                ledger_holds::state.eq(state::TAKEN),
                ledger_holds::closed_at.eq(Some(now)),
            ))
            .execute(conn)?;
        sub_held(conn, account, amount)?;
        // The movement's trigger announces the change to every replica.
        diesel::insert_into(ledger_deposits::table)
            .values((
                ledger_deposits::transfer_id.eq(hold.transfer_id.as_str()),
                ledger_deposits::account_number.eq(account),
                ledger_deposits::amount.eq(-amount),
                ledger_deposits::confirmed_at.eq(confirmed_at),
                ledger_deposits::applied_at.eq(now),
            ))
            .execute(conn)?;
        Ok(Outcome::New)
    })
}

/// Releases a hold; a transfer never held is recorded as released, so that a HoldCash that
/// arrives after this (late, or repeated) holds nothing.
pub fn release(conn: &mut DbConnection, hold: &Hold, now: i64) -> Result<Outcome> {
    let account = hold.account_number.as_str();
    write_transaction(conn, |conn| -> Result<Outcome> {
        lock_account(conn, account)?;
        let Some(previous) = find(conn, &hold.transfer_id)? else {
            diesel::insert_into(ledger_holds::table)
                .values(HoldRow {
                    transfer_id: hold.transfer_id.as_str().to_owned(),
                    account_number: account.to_owned(),
                    amount: hold.amount.get(),
                    state: state::RELEASED.to_owned(),
                    held_at: None,
                    closed_at: Some(now),
                })
                .execute(conn)?;
            return Ok(Outcome::New);
        };
        if !previous.is(hold) {
            return Err(reused(&hold.transfer_id));
        }
        match previous.state.as_str() {
            state::RELEASED => return Ok(Outcome::Already),
            state::TAKEN => {
                return Err(Error::HoldClosed {
                    id: previous.transfer_id.clone(),
                    state: previous.closed_state(),
                    what: "a taken withdrawal cannot be released",
                });
            }
            _ => {}
        }
        diesel::update(ledger_holds::table)
            .filter(ledger_holds::transfer_id.eq(hold.transfer_id.as_str()))
            .set((
                ledger_holds::state.eq(state::RELEASED),
                ledger_holds::closed_at.eq(Some(now)),
            ))
            .execute(conn)?;
        sub_held(conn, account, hold.amount.get())?;
        Ok(Outcome::New)
    })
}

/// Holds not yet taken or released (the metric `portfolio_holds_open`): a scan of the partial
/// index of open holds.
pub fn open_count(conn: &mut DbConnection) -> QueryResult<i64> {
    ledger_holds::table
        .filter(ledger_holds::state.eq(state::HELD))
        .count()
        .get_result(conn)
}
