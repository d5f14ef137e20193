//! The rows of a daily snapshot, written batch by batch under a `loading` snapshot that
//! readers never see (the staged-load protocol, `invest_runtime::staged`, does the rest).

use diesel::prelude::*;
use invest_runtime::db::{DbConnection, write_transaction};

use super::{
    SNAPSHOTS,
    schema::{accounts, holdings, instruments},
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
        match conn {
            DbConnection::Pg(c) => {
                diesel::copy_from(instruments::table)
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
        SNAPSHOTS.heartbeat(conn, snapshot_id, now)
    })
}

/// Writes a batch of accounts with their holdings, in one transaction.
pub fn insert_accounts(
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
        match conn {
            DbConnection::Pg(c) => {
                diesel::copy_from(accounts::table)
                    .from_insertable(&account_rows)
                    .execute(c)?;
                diesel::copy_from(holdings::table)
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
        SNAPSHOTS.heartbeat(conn, snapshot_id, now)
    })
}
