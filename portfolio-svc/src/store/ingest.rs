//! The rows of a daily snapshot, written batch by batch under a `loading` snapshot that
//! readers never see (the staged-load protocol, `invest_runtime::staged`, does the rest).

use diesel::prelude::*;
use invest_runtime::db::{DbConnection, write_transaction};

use super::{
    SNAPSHOTS,
    schema::{accounts, holdings, instruments, loading},
};
// Written under the staged-load protocol, whose errors are the runtime's.
use invest_runtime::error::Result;

use crate::domain::ValidAccount;

#[derive(Insertable)]
#[diesel(table_name = instruments, treat_none_as_default_value = false)]
struct NewInstrument<'a> {
    snapshot_id: i64,
    isin: &'a str,
    name: &'a str,
    asset_group: &'a str,
}

/// PostgreSQL: the same row, into the loading parent.
#[derive(Insertable)]
#[diesel(table_name = loading::instruments, treat_none_as_default_value = false)]
struct LoadingNewInstrument<'a> {
    snapshot_id: i64,
    isin: &'a str,
    name: &'a str,
    asset_group: &'a str,
}

impl<'a> From<&NewInstrument<'a>> for LoadingNewInstrument<'a> {
    fn from(row: &NewInstrument<'a>) -> Self {
        Self {
            snapshot_id: row.snapshot_id,
            isin: row.isin,
            name: row.name,
            asset_group: row.asset_group,
        }
    }
}

#[derive(Insertable)]
#[diesel(table_name = accounts, treat_none_as_default_value = false)]
struct NewAccount<'a> {
    snapshot_id: i64,
    account_number: &'a str,
    customer_name: &'a str,
    brokerage: &'a str,
    account_name: &'a str,
    principal: i64,
    total_assets: i64,
}

/// PostgreSQL: the same row, into the loading parent.
#[derive(Insertable)]
#[diesel(table_name = loading::accounts, treat_none_as_default_value = false)]
struct LoadingNewAccount<'a> {
    snapshot_id: i64,
    account_number: &'a str,
    customer_name: &'a str,
    brokerage: &'a str,
    account_name: &'a str,
    principal: i64,
    total_assets: i64,
}

impl<'a> From<&NewAccount<'a>> for LoadingNewAccount<'a> {
    fn from(row: &NewAccount<'a>) -> Self {
        Self {
            snapshot_id: row.snapshot_id,
            account_number: row.account_number,
            customer_name: row.customer_name,
            brokerage: row.brokerage,
            account_name: row.account_name,
            principal: row.principal,
            total_assets: row.total_assets,
        }
    }
}

#[derive(Insertable)]
#[diesel(table_name = holdings, treat_none_as_default_value = false)]
struct NewHolding<'a> {
    snapshot_id: i64,
    account_number: &'a str,
    isin: &'a str,
    quantity: i64,
    current_price: i64,
    valuation: i64,
}

/// PostgreSQL: the same row, into the loading parent.
#[derive(Insertable)]
#[diesel(table_name = loading::holdings, treat_none_as_default_value = false)]
struct LoadingNewHolding<'a> {
    snapshot_id: i64,
    account_number: &'a str,
    isin: &'a str,
    quantity: i64,
    current_price: i64,
    valuation: i64,
}

impl<'a> From<&NewHolding<'a>> for LoadingNewHolding<'a> {
    fn from(row: &NewHolding<'a>) -> Self {
        Self {
            snapshot_id: row.snapshot_id,
            account_number: row.account_number,
            isin: row.isin,
            quantity: row.quantity,
            current_price: row.current_price,
            valuation: row.valuation,
        }
    }
}

/// SQLite allows 32766 bound parameters per statement; stay well below.
const SQLITE_MAX_PARAMS: usize = 30_000;

/// Writes a batch of instruments of a loading snapshot.
pub fn insert_instruments(
    conn: &mut DbConnection,
    snapshot_id: i64,
    batch: &[invest_proto::portfolio::v1::Instrument],
    now: i64,
) -> Result<()> {
    let rows: Vec<NewInstrument<'_>> = batch
        .iter()
        .map(|i| NewInstrument {
            snapshot_id,
            isin: &i.isin,
            name: &i.name,
            asset_group: &i.asset_group,
        })
        .collect();
    write_transaction(conn, |conn| {
        // First: a load declared abandoned fails here with that reason (and the row lock
        // keeps the janitor from forgetting the load while the batch is written).
        SNAPSHOTS.heartbeat(conn, snapshot_id, now)?;
        match conn {
            DbConnection::Pg(c) => {
                let rows: Vec<LoadingNewInstrument<'_>> = rows.iter().map(Into::into).collect();
                diesel::copy_from(loading::instruments::table)
                    .from_insertable(&rows)
                    .execute(c)?;
            }
            DbConnection::Sqlite(c) => {
                for chunk in rows.chunks(SQLITE_MAX_PARAMS / 4) {
                    diesel::insert_into(instruments::table)
                        .values(chunk)
                        .execute(c)?;
                }
            }
        }
        Ok(())
    })
}

/// Writes a batch of accounts with their holdings: on PostgreSQL in one transaction, on
/// SQLite in transactions of about [`SQLITE_ROWS_PER_TRANSACTION`] rows, so that a deposit
/// waiting for the write lock waits for a short one (the rows of a loading snapshot are
/// invisible, and a load that fails is discarded whole, so nothing needs the batch to be one
/// transaction).
pub fn insert_accounts(
    conn: &mut DbConnection,
    snapshot_id: i64,
    batch: &[ValidAccount],
    now: i64,
) -> Result<()> {
    if matches!(conn, DbConnection::Sqlite(_)) {
        let mut from = 0;
        while from < batch.len() {
            let mut rows = 0;
            let mut to = from;
            while to < batch.len() && (to == from || rows < SQLITE_ROWS_PER_TRANSACTION) {
                rows += 1 + batch[to].holdings.len();
                to += 1;
            }
            insert_accounts_in_one(conn, snapshot_id, &batch[from..to], now)?;
            from = to;
        }
        return Ok(());
    }
    insert_accounts_in_one(conn, snapshot_id, batch, now)
}

/// Rows (accounts and holdings) per write transaction of a load on SQLite: a few milliseconds.
const SQLITE_ROWS_PER_TRANSACTION: usize = 500;

fn insert_accounts_in_one(
    conn: &mut DbConnection,
    snapshot_id: i64,
    batch: &[ValidAccount],
    now: i64,
) -> Result<()> {
    let account_rows: Vec<NewAccount<'_>> = batch
        .iter()
        .map(|a| NewAccount {
            snapshot_id,
            account_number: a.account_number.as_str(),
            customer_name: &a.customer_name,
            brokerage: &a.brokerage,
            account_name: &a.account_name,
            principal: a.principal,
            total_assets: a.total_assets,
        })
        .collect();
    let holding_rows: Vec<NewHolding<'_>> = batch
        .iter()
        .flat_map(|a| {
            a.holdings.iter().map(move |h| NewHolding {
                snapshot_id,
                account_number: a.account_number.as_str(),
                isin: h.isin.as_str(),
                quantity: h.quantity,
                current_price: h.current_price,
                valuation: h.valuation,
            })
        })
        .collect();
    write_transaction(conn, |conn| {
        // First: a load declared abandoned fails here with that reason (and the row lock
        // keeps the janitor from forgetting the load while the batch is written).
        SNAPSHOTS.heartbeat(conn, snapshot_id, now)?;
        match conn {
            DbConnection::Pg(c) => {
                let account_rows: Vec<LoadingNewAccount<'_>> =
                    account_rows.iter().map(Into::into).collect();
                diesel::copy_from(loading::accounts::table)
                    .from_insertable(&account_rows)
                    .execute(c)?;
                let holding_rows: Vec<LoadingNewHolding<'_>> =
                    holding_rows.iter().map(Into::into).collect();
                diesel::copy_from(loading::holdings::table)
                    .from_insertable(&holding_rows)
                    .execute(c)?;
            }
            DbConnection::Sqlite(c) => {
                for chunk in account_rows.chunks(SQLITE_MAX_PARAMS / 7) {
                    diesel::insert_into(accounts::table)
                        .values(chunk)
                        .execute(c)?;
                }
                for chunk in holding_rows.chunks(SQLITE_MAX_PARAMS / 6) {
                    diesel::insert_into(holdings::table)
                        .values(chunk)
                        .execute(c)?;
                }
            }
        }
        Ok(())
    })
}
