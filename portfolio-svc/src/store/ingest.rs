//! The write path of a daily snapshot: rows are written under a `loading` snapshot that
//! readers never see, batch by batch, and one short transaction makes it current.

use diesel::prelude::*;
use invest_runtime::{
    db::{DbConnection, write_transaction},
    with_backend,
};

use super::{
    read::{self, SnapshotRow},
    schema::{accounts, current_snapshot, holdings, instruments, snapshots},
    state,
};
use crate::{
    error::{Error, Result},
    ingest::{SnapshotHeader, ValidAccount},
};

/// What `begin_load` decided.
#[derive(Debug)]
pub enum Begin {
    /// The same digest for the same `as_of` is already current: nothing to do.
    Unchanged(SnapshotRow),
    /// A new `loading` snapshot was created.
    Started(i64),
}

/// What `finish_load` did.
#[derive(Debug)]
pub enum Finish {
    /// The snapshot is now current.
    Current(SnapshotRow),
    /// An identical snapshot became current meanwhile (a concurrent load of the same day);
    /// ours is redundant and must be discarded.
    Unchanged(SnapshotRow),
}

#[derive(Insertable)]
#[diesel(table_name = snapshots)]
struct NewSnapshot<'a> {
    as_of: i64,
    digest: &'a str,
    state: &'a str,
    started_at: i64,
    heartbeat_at: i64,
}

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

fn outdated(as_of: i64, current: &SnapshotRow) -> Error {
    Error::FailedPrecondition {
        reason: "SNAPSHOT_OUTDATED",
        message: format!(
            "as_of {} is older than the current snapshot's {}; a snapshot never replaces a newer one",
            invest_proto::time::rfc3339(as_of),
            invest_proto::time::rfc3339(current.as_of)
        ),
    }
}

/// Checks the header against the current snapshot and opens a `loading` snapshot.
pub fn begin_load(conn: &mut DbConnection, header: &SnapshotHeader, now: i64) -> Result<Begin> {
    write_transaction(conn, |conn| {
        if let Some(current) = read::current(conn)? {
            if current.as_of == header.as_of && current.digest == header.digest {
                return Ok(Begin::Unchanged(current));
            }
            if current.as_of > header.as_of {
                return Err(outdated(header.as_of, &current));
            }
        }
        let row = NewSnapshot {
            as_of: header.as_of,
            digest: &header.digest,
            state: state::LOADING,
            started_at: now,
            heartbeat_at: now,
        };
        let id = with_backend!(conn, c => diesel::insert_into(snapshots::table)
            .values(&row)
            .returning(snapshots::id)
            .get_result::<i64>(c))?;
        Ok(Begin::Started(id))
    })
}

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
        touch(conn, snapshot_id, now)
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
        touch(conn, snapshot_id, now)
    })
}

/// Marks a loading snapshot as alive, so that the janitor does not take it for abandoned.
fn touch(conn: &mut DbConnection, snapshot_id: i64, now: i64) -> Result<()> {
    let updated = diesel::update(snapshots::table)
        .filter(snapshots::id.eq(snapshot_id))
        .filter(snapshots::state.eq(state::LOADING))
        .set(snapshots::heartbeat_at.eq(now))
        .execute(conn)?;
    if updated == 0 {
        return Err(abandoned(snapshot_id));
    }
    Ok(())
}

fn abandoned(snapshot_id: i64) -> Error {
    Error::Unavailable(format!(
        "loading snapshot {snapshot_id} was abandoned (no batch for too long) and cleaned up; send the day again"
    ))
}

/// Makes a fully written snapshot current, in one short transaction.
pub fn finish_load(
    conn: &mut DbConnection,
    snapshot_id: i64,
    header: &SnapshotHeader,
    now: i64,
    flip_lock_key: i64,
) -> Result<Finish> {
    write_transaction(conn, |conn| {
        if let DbConnection::Pg(c) = conn {
            // Loads finishing on two replicas at once take turns (SQLite's write lock already
            // serialises them).
            diesel::sql_query(format!("SELECT pg_advisory_xact_lock({flip_lock_key})"))
                .execute(c)?;
        }
        if let Some(current) = read::current(conn)? {
            if current.as_of == header.as_of && current.digest == header.digest {
                return Ok(Finish::Unchanged(current));
            }
            if current.as_of > header.as_of {
                return Err(outdated(header.as_of, &current));
            }
        }
        diesel::update(snapshots::table)
            .filter(snapshots::state.eq(state::CURRENT))
            .set(snapshots::state.eq(state::RETIRED))
            .execute(conn)?;
        let updated = diesel::update(snapshots::table)
            .filter(snapshots::id.eq(snapshot_id))
            .filter(snapshots::state.eq(state::LOADING))
            .set((
                snapshots::state.eq(state::CURRENT),
                snapshots::finished_at.eq(Some(now)),
                snapshots::heartbeat_at.eq(now),
                snapshots::instrument_count.eq(header.instrument_count),
                snapshots::account_count.eq(header.account_count),
                snapshots::holding_count.eq(header.holding_count),
            ))
            .execute(conn)?;
        if updated == 0 {
            return Err(abandoned(snapshot_id));
        }
        // The pointer readers follow; its primary key admits one row, so one current snapshot.
        diesel::delete(current_snapshot::table).execute(conn)?;
        diesel::insert_into(current_snapshot::table)
            .values((
                current_snapshot::singleton.eq(1),
                current_snapshot::snapshot_id.eq(snapshot_id),
            ))
            .execute(conn)?;
        read::current(conn)?
            .map(Finish::Current)
            .ok_or_else(|| abandoned(snapshot_id))
    })
}

/// Deletes every row of a snapshot that is not current. Each table in its own transaction,
/// so that a large delete does not hold the write lock for the whole time.
pub fn discard(conn: &mut DbConnection, snapshot_id: i64) -> Result<()> {
    // First retire it if it is still loading, so that a late batch or a late finish of an
    // abandoned load fails instead of resurrecting it. `retired` is terminal: once we see it,
    // nothing can make this snapshot current again and deleting its rows is safe.
    diesel::update(snapshots::table)
        .filter(snapshots::id.eq(snapshot_id))
        .filter(snapshots::state.eq(state::LOADING))
        .set(snapshots::state.eq(state::RETIRED))
        .execute(conn)?;
    let state: Option<String> = snapshots::table
        .filter(snapshots::id.eq(snapshot_id))
        .select(snapshots::state)
        .first(conn)
        .optional()?;
    if state.as_deref() != Some(state::RETIRED) {
        return Ok(());
    }
    diesel::delete(holdings::table.filter(holdings::snapshot_id.eq(snapshot_id))).execute(conn)?;
    diesel::delete(accounts::table.filter(accounts::snapshot_id.eq(snapshot_id))).execute(conn)?;
    diesel::delete(instruments::table.filter(instruments::snapshot_id.eq(snapshot_id)))
        .execute(conn)?;
    diesel::delete(snapshots::table.filter(snapshots::id.eq(snapshot_id))).execute(conn)?;
    Ok(())
}

/// Snapshots to delete: retired ones beyond the newest `keep`, and loading ones whose last
/// batch is older than `stale_before` (their loader is gone).
pub fn prunable(conn: &mut DbConnection, keep: u32, stale_before: i64) -> Result<Vec<i64>> {
    let mut ids: Vec<i64> = snapshots::table
        .filter(snapshots::state.eq(state::RETIRED))
        .order((snapshots::as_of.desc(), snapshots::id.desc()))
        .offset(i64::from(keep))
        .limit(1_000)
        .select(snapshots::id)
        .load(conn)?;
    ids.extend(
        snapshots::table
            .filter(snapshots::state.eq(state::LOADING))
            .filter(snapshots::heartbeat_at.lt(stale_before))
            .select(snapshots::id)
            .load::<i64>(conn)?,
    );
    Ok(ids)
}
