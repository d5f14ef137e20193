//! The read path of the three screens. Every query is an index search on a primary key or on
//! the covering index `accounts_by_owner`; none depends on the number of accounts in the
//! snapshot (`tests/plans.rs` checks the plans on both backends).

use diesel::prelude::*;
use invest_proto::server::db::DbConnection;

use super::{
    schema::{accounts, holdings, instruments, snapshots},
    state,
};

/// The snapshot a read is answered from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Queryable)]
pub struct SnapshotRef {
    /// Row id.
    pub id: i64,
    /// Microseconds since the Unix epoch.
    pub as_of: i64,
}

/// One account as stored.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = accounts)]
pub struct AccountRow {
    /// Account number.
    pub account_number: String,
    /// Owner.
    pub customer_name: String,
    /// Brokerage.
    pub brokerage: String,
    /// Account name.
    pub account_name: String,
    /// Principal in won.
    pub principal: i64,
    /// Sum of valuations in won.
    pub total_assets: i64,
}

/// One holding with its instrument.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub struct HoldingRow {
    /// ISIN or `CASH`.
    pub isin: String,
    /// Instrument name.
    pub name: String,
    /// Asset class.
    pub asset_group: String,
    /// Units.
    pub quantity: i64,
    /// Price per unit in won.
    pub current_price: i64,
    /// Price × quantity in won.
    pub valuation: i64,
}

/// Summary of the current snapshot, for metrics and ingest answers.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub struct SnapshotRow {
    /// Row id.
    pub id: i64,
    /// Microseconds since the Unix epoch.
    pub as_of: i64,
    /// Digest of the dataset.
    pub digest: String,
    /// When it became current.
    pub finished_at: Option<i64>,
    /// Instruments.
    pub instrument_count: i64,
    /// Accounts.
    pub account_count: i64,
    /// Holdings.
    pub holding_count: i64,
}

/// The current snapshot, if any was loaded.
pub fn current_snapshot(conn: &mut DbConnection) -> QueryResult<Option<SnapshotRow>> {
    snapshots::table
        .filter(snapshots::state.eq(state::CURRENT))
        .select((
            snapshots::id,
            snapshots::as_of,
            snapshots::digest,
            snapshots::finished_at,
            snapshots::instrument_count,
            snapshots::account_count,
            snapshots::holding_count,
        ))
        .first(conn)
        .optional()
}

/// The snapshot a page token points at, if it is still kept (current or retired).
pub fn readable_snapshot(conn: &mut DbConnection, id: i64) -> QueryResult<Option<SnapshotRef>> {
    snapshots::table
        .filter(snapshots::id.eq(id))
        .filter(snapshots::state.eq_any([state::CURRENT, state::RETIRED]))
        .select((snapshots::id, snapshots::as_of))
        .first(conn)
        .optional()
}

/// The current snapshot's reference.
pub fn current_ref(conn: &mut DbConnection) -> QueryResult<Option<SnapshotRef>> {
    snapshots::table
        .filter(snapshots::state.eq(state::CURRENT))
        .select((snapshots::id, snapshots::as_of))
        .first(conn)
        .optional()
}

/// An account of `owner` in the current snapshot, with that snapshot. Two primary-key
/// lookups rather than one join, so that no planner can start from the wrong table.
pub fn owned_account_current(
    conn: &mut DbConnection,
    account_number: &str,
    owner: &str,
) -> QueryResult<Option<(SnapshotRef, AccountRow)>> {
    let Some(snapshot) = current_ref(conn)? else {
        return Ok(None);
    };
    Ok(owned_account_in(conn, snapshot, account_number, owner)?.map(|row| (snapshot, row)))
}

/// An account of `owner` in a given snapshot.
pub fn owned_account_in(
    conn: &mut DbConnection,
    snapshot: SnapshotRef,
    account_number: &str,
    owner: &str,
) -> QueryResult<Option<AccountRow>> {
    accounts::table
        .filter(accounts::snapshot_id.eq(snapshot.id))
        .filter(accounts::account_number.eq(account_number))
        .filter(accounts::customer_name.eq(owner))
        .select(AccountRow::as_select())
        .first(conn)
        .optional()
}

/// Up to `limit` accounts of `owner` after `after`, in account-number order.
pub fn accounts_page(
    conn: &mut DbConnection,
    snapshot_id: i64,
    owner: &str,
    after: &str,
    limit: i64,
) -> QueryResult<Vec<AccountRow>> {
    accounts::table
        .filter(accounts::snapshot_id.eq(snapshot_id))
        .filter(accounts::customer_name.eq(owner))
        .filter(accounts::account_number.gt(after))
        .order(accounts::account_number.asc())
        .limit(limit)
        .select(AccountRow::as_select())
        .load(conn)
}

/// Up to `limit` holdings of an account after ISIN `after`, in ISIN order, with their
/// instruments.
pub fn holdings_page(
    conn: &mut DbConnection,
    snapshot_id: i64,
    account_number: &str,
    after: &str,
    limit: i64,
) -> QueryResult<Vec<HoldingRow>> {
    holdings::table
        .inner_join(
            instruments::table.on(instruments::snapshot_id
                .eq(holdings::snapshot_id)
                .and(instruments::isin.eq(holdings::isin))),
        )
        .filter(holdings::snapshot_id.eq(snapshot_id))
        .filter(holdings::account_number.eq(account_number))
        .filter(holdings::isin.gt(after))
        .order(holdings::isin.asc())
        .limit(limit)
        .select((
            holdings::isin,
            instruments::name,
            instruments::asset_group,
            holdings::quantity,
            holdings::current_price,
            holdings::valuation,
        ))
        .load(conn)
}
