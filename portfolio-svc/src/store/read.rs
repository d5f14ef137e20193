//! The read path of the three screens. Every query is an index search on a primary key or on
//! the covering index `accounts_by_owner`; none depends on the number of accounts in the
//! snapshot (`tests/plans.rs` checks the plans on both backends).

use diesel::prelude::*;
use invest_proto::ids::AccountNumber;
use invest_runtime::{db::DbConnection, with_backend};

use super::{
    ledger,
    schema::{accounts, current_snapshot, holdings, instruments, ledger_accounts, snapshots},
    state,
};

/// The id of the current snapshot, as a subquery (the pointer row's primary key).
fn current_id() -> diesel::dsl::Select<
    diesel::dsl::Filter<current_snapshot::table, diesel::dsl::Eq<current_snapshot::singleton, i32>>,
    current_snapshot::snapshot_id,
> {
    current_snapshot::table
        .filter(current_snapshot::singleton.eq(1))
        .select(current_snapshot::snapshot_id)
}

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
pub fn current(conn: &mut DbConnection) -> QueryResult<Option<SnapshotRow>> {
    snapshots::table
        .filter(snapshots::id.eq_any(current_id()))
        .select((
            snapshots::id,
            snapshots::as_of,
            snapshots::digest,
            snapshots::finished_at,
            snapshots::instrument_count,
            snapshots::account_count,
            snapshots::holding_count,
        ))
        .load(conn)
        .map(first)
}

/// The name and asset group of a snapshot's `CASH` instrument, if its master has one.
pub type Cash = Option<(String, String)>;

/// The current snapshot and the name and asset group of its `CASH` instrument (if its
/// master has one): what a generation of the memory cache serves.
pub fn current_with_cash(conn: &mut DbConnection) -> QueryResult<Option<(SnapshotRef, Cash)>> {
    let Some(snapshot) = current_ref(conn)? else {
        return Ok(None);
    };
    Ok(Some((snapshot, cash_instrument(conn, snapshot.id)?)))
}

/// The snapshot a page token points at, if it is still kept (current or retired).
pub fn readable_snapshot(conn: &mut DbConnection, id: i64) -> QueryResult<Option<SnapshotRef>> {
    snapshots::table
        .filter(snapshots::id.eq(id))
        .filter(snapshots::state.ne(state::LOADING))
        .select((snapshots::id, snapshots::as_of))
        .load(conn)
        .map(first)
}

/// The current snapshot's reference.
pub fn current_ref(conn: &mut DbConnection) -> QueryResult<Option<SnapshotRef>> {
    with_backend!(conn, c => snapshots::table
        .filter(snapshots::id.eq_any(current_id()))
        .select((snapshots::id, snapshots::as_of))
        .load(c))
    .map(first)
}

/// Which snapshot a read is answered from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin {
    /// The current one.
    Current,
    /// The one a page token started on, if it is still kept.
    Snapshot(i64),
}

/// An account (of `owner`, when given), its snapshot, and whether deposits may follow the
/// snapshot (`ledger_accounts`), in one statement: the snapshot comes from the
/// `current_snapshot` pointer (or is the pinned id), the account from a primary-key search.
macro_rules! account_query {
    ($conn:expr, $pin:expr, $number:expr, $($owner:expr)?) => {{
        // Not boxed: a boxed query has no static identity, so diesel would prepare it again
        // on every call. Each arm is one statement the connection prepares once.
        macro_rules! account {
            () => {
                accounts::table
                    .inner_join(snapshots::table.on(snapshots::id.eq(accounts::snapshot_id)))
                    .left_join(
                        ledger_accounts::table
                            .on(ledger_accounts::account_number.eq(accounts::account_number)),
                    )
                    .filter(accounts::account_number.eq($number))
                    $(.filter(accounts::customer_name.eq($owner)))?
                    .select((
                        (snapshots::id, snapshots::as_of),
                        AccountRow::as_select(),
                        ledger_accounts::deposits_until.nullable(),
                    ))
            };
        }
        // On the concrete connection: through `MultiConnection` diesel would write the SQL
        // text out again on every call, cached statement or not.
        let rows: Vec<(SnapshotRef, AccountRow, Option<i64>)> = match $pin {
            Pin::Current => with_backend!($conn, c => account!()
                .filter(accounts::snapshot_id.eq_any(current_id()))
                .load(c))?,
            Pin::Snapshot(id) => with_backend!($conn, c => account!()
                .filter(accounts::snapshot_id.eq(id))
                .filter(snapshots::state.ne(state::LOADING))
                .load(c))?,
        };
        rows
    }};
}

/// Adds to an account read by `account_query!` the sum of the deposits confirmed after its
/// snapshot's as_of, read from the running sums ([`ledger::overlay_since`]) only when
/// `ledger_accounts` says deposits may follow the snapshot.
fn with_overlay(
    conn: &mut DbConnection,
    rows: Vec<(SnapshotRef, AccountRow, Option<i64>)>,
) -> QueryResult<Option<(SnapshotRef, AccountRow, Option<i64>)>> {
    let Some((snapshot, account, deposits_until)) = first(rows) else {
        return Ok(None);
    };
    let deposits = if deposits_until.is_some_and(|until| until > snapshot.as_of) {
        ledger::overlay_since(conn, &account.account_number, snapshot.as_of)?
    } else {
        Some(0)
    };
    Ok(Some((snapshot, account, deposits)))
}

/// An account of `owner`, its snapshot, and the sum of the deposits confirmed after that
/// snapshot's as_of (`None` if the stored sums are inconsistent): one statement, and a second
/// only when deposits may follow the snapshot.
pub fn owned_account(
    conn: &mut DbConnection,
    pin: Pin,
    account_number: &AccountNumber,
    owner: &str,
) -> QueryResult<Option<(SnapshotRef, AccountRow, Option<i64>)>> {
    let rows = account_query!(conn, pin, account_number.as_str(), owner);
    with_overlay(conn, rows)
}

/// [`owned_account`] whoever owns it, in a given snapshot: what the memory cache keeps (the
/// owner is checked when it answers).
pub fn account_at(
    conn: &mut DbConnection,
    snapshot_id: i64,
    account_number: &AccountNumber,
) -> QueryResult<Option<(SnapshotRef, AccountRow, Option<i64>)>> {
    let rows = account_query!(conn, Pin::Snapshot(snapshot_id), account_number.as_str(),);
    with_overlay(conn, rows)
}

/// Every holding of an account in a snapshot (with its instrument), in ISIN order, up to
/// `limit`: what the memory cache keeps of an account for its holdings pages.
pub fn account_holdings(
    conn: &mut DbConnection,
    snapshot_id: i64,
    account_number: &AccountNumber,
    limit: i64,
) -> QueryResult<Vec<HoldingRow>> {
    let account_number = account_number.as_str();
    macro_rules! all {
        () => {
            holdings::table
                .inner_join(
                    instruments::table.on(instruments::snapshot_id
                        .eq(holdings::snapshot_id)
                        .and(instruments::isin.eq(holdings::isin))),
                )
                .filter(holdings::snapshot_id.eq(snapshot_id))
                .filter(holdings::account_number.eq(account_number))
                .order(holdings::isin.asc())
                .select((
                    holdings::isin,
                    instruments::name,
                    instruments::asset_group,
                    holdings::quantity,
                    holdings::current_price,
                    holdings::valuation,
                ))
        };
    }
    match conn {
        DbConnection::Pg(c) => all!().limit(limit).load(c),
        DbConnection::Sqlite(c) => first_rows(all!().load_iter(c)?, limit),
    }
}

/// The name and asset group of the `CASH` instrument of a snapshot, if its master has one.
pub fn cash_instrument(
    conn: &mut DbConnection,
    snapshot_id: i64,
) -> QueryResult<Option<(String, String)>> {
    with_backend!(conn, c => instruments::table
        .filter(instruments::snapshot_id.eq(snapshot_id))
        .filter(instruments::isin.eq(invest_proto::ids::CASH_ISIN))
        .select((instruments::name, instruments::asset_group))
        .load(c))
    .map(first)
}

/// Up to `limit` accounts of `owner` after `after`, in account-number order.
pub fn accounts_page(
    conn: &mut DbConnection,
    snapshot_id: i64,
    owner: &str,
    after: &str,
    limit: i64,
) -> QueryResult<Vec<AccountRow>> {
    macro_rules! page {
        () => {
            accounts::table
                .filter(accounts::snapshot_id.eq(snapshot_id))
                .filter(accounts::customer_name.eq(owner))
                .filter(accounts::account_number.gt(after))
                .order(accounts::account_number.asc())
                .select(AccountRow::as_select())
        };
    }
    match conn {
        DbConnection::Pg(c) => page!().limit(limit).load(c),
        DbConnection::Sqlite(c) => first_rows(page!().load_iter(c)?, limit),
    }
}

/// A page of holdings as [`owned_holdings_page`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldingsPage {
    /// The snapshot it comes from.
    pub snapshot: SnapshotRef,
    /// No deposit to the account was confirmed after this instant (microseconds since the
    /// epoch; `None`: the account never had one). An upper bound: the latest confirmation
    /// rounded up to the hour.
    pub deposits_until: Option<i64>,
    /// Up to the limit asked for, in ISIN order.
    pub holdings: Vec<HoldingRow>,
}

/// A page of the holdings of an account of `owner`, read with the ownership check and the
/// snapshot in one statement, and the instant after which no deposit to the account was
/// confirmed (if it had any), so that the overlay needs a statement of its own only when
/// that instant is after the snapshot's as_of. `None` when nothing matched: not the owner's
/// account, or no holdings after `after` (the caller tells the two apart with
/// [`owned_account`]).
pub fn owned_holdings_page(
    conn: &mut DbConnection,
    pin: Pin,
    account_number: &AccountNumber,
    owner: &str,
    after: &str,
    limit: i64,
) -> QueryResult<Option<HoldingsPage>> {
    let account_number = account_number.as_str();
    macro_rules! page {
        () => {
            holdings::table
                .inner_join(
                    instruments::table.on(instruments::snapshot_id
                        .eq(holdings::snapshot_id)
                        .and(instruments::isin.eq(holdings::isin))),
                )
                .inner_join(
                    accounts::table.on(accounts::snapshot_id
                        .eq(holdings::snapshot_id)
                        .and(accounts::account_number.eq(holdings::account_number))),
                )
                .inner_join(snapshots::table.on(snapshots::id.eq(holdings::snapshot_id)))
                .left_join(
                    ledger_accounts::table
                        .on(ledger_accounts::account_number.eq(holdings::account_number)),
                )
                .filter(holdings::account_number.eq(account_number))
                .filter(accounts::customer_name.eq(owner))
                .filter(holdings::isin.gt(after))
                .order(holdings::isin.asc())
                .select((
                    (snapshots::id, snapshots::as_of),
                    ledger_accounts::deposits_until.nullable(),
                    (
                        holdings::isin,
                        instruments::name,
                        instruments::asset_group,
                        holdings::quantity,
                        holdings::current_price,
                        holdings::valuation,
                    ),
                ))
        };
    }
    type Row = (SnapshotRef, Option<i64>, HoldingRow);
    // The current snapshot as a scalar subquery (`=`, not `IN`): with one snapshot id the
    // planner knows the primary key of `holdings` already yields the page in ISIN order, and
    // starts from it instead of sorting.
    let rows: Vec<Row> = match (pin, conn) {
        (Pin::Current, DbConnection::Pg(c)) => page!()
            .filter(
                holdings::snapshot_id
                    .nullable()
                    .eq(current_id().single_value()),
            )
            .limit(limit)
            .load(c)?,
        (Pin::Snapshot(id), DbConnection::Pg(c)) => page!()
            .filter(holdings::snapshot_id.eq(id))
            .filter(snapshots::state.ne(state::LOADING))
            .limit(limit)
            .load(c)?,
        (Pin::Current, DbConnection::Sqlite(c)) => first_rows(
            page!()
                .filter(
                    holdings::snapshot_id
                        .nullable()
                        .eq(current_id().single_value()),
                )
                .load_iter(c)?,
            limit,
        )?,
        (Pin::Snapshot(id), DbConnection::Sqlite(c)) => first_rows(
            page!()
                .filter(holdings::snapshot_id.eq(id))
                .filter(snapshots::state.ne(state::LOADING))
                .load_iter(c)?,
            limit,
        )?,
    };
    let Some(&(snapshot, deposits_until, _)) = rows.first() else {
        return Ok(None);
    };
    Ok(Some(HoldingsPage {
        snapshot,
        deposits_until,
        holdings: rows.into_iter().map(|(_, _, holding)| holding).collect(),
    }))
}

/// The first row of a result that has at most one by construction (a primary key or the
/// pointer row). Not `LIMIT 1`: on SQLite a bound LIMIT makes the statement be prepared
/// again on every call.
fn first<T>(rows: Vec<T>) -> Option<T> {
    rows.into_iter().next()
}

/// The first `limit` rows of a lazily stepped SQLite statement: the index order makes the
/// statement produce rows one by one, so stopping early does the work of a LIMIT without a
/// bound LIMIT, which SQLite would re-prepare the statement for on every call.
fn first_rows<T>(rows: impl Iterator<Item = QueryResult<T>>, limit: i64) -> QueryResult<Vec<T>> {
    rows.take(usize::try_from(limit).unwrap_or(0)).collect()
}

/// A snapshot that became current, as ListSnapshots shows it.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub struct SnapshotRecordRow {
    /// Row id.
    pub id: i64,
    /// Microseconds since the Unix epoch.
    pub as_of: i64,
    /// Digest of the dataset.
    pub digest: String,
    /// `current` or `retired`.
    pub state: String,
    /// When its load started.
    pub started_at: i64,
    /// When it became current.
    pub finished_at: Option<i64>,
    /// Instruments.
    pub instrument_count: i64,
    /// Accounts.
    pub account_count: i64,
    /// Holdings.
    pub holding_count: i64,
}

/// Up to `limit` snapshots that became current (the current one and retired ones that were
/// current once: a discarded load is retired too, but never finished), newest `as_of` first
/// (then newest id), after the position `(as_of, id)` of the previous page. Few rows: the
/// janitor keeps only a handful.
pub fn snapshots_page(
    conn: &mut DbConnection,
    after: Option<(i64, i64)>,
    limit: i64,
) -> QueryResult<Vec<SnapshotRecordRow>> {
    macro_rules! page {
        () => {
            snapshots::table
                .filter(snapshots::state.ne(state::LOADING))
                .filter(snapshots::finished_at.is_not_null())
                .select((
                    snapshots::id,
                    snapshots::as_of,
                    snapshots::digest,
                    snapshots::state,
                    snapshots::started_at,
                    snapshots::finished_at,
                    snapshots::instrument_count,
                    snapshots::account_count,
                    snapshots::holding_count,
                ))
                .order((snapshots::as_of.desc(), snapshots::id.desc()))
                .limit(limit)
        };
    }
    match after {
        None => with_backend!(conn, c => page!().load(c)),
        Some((as_of, id)) => with_backend!(conn, c => page!()
            .filter(
                snapshots::as_of
                    .lt(as_of)
                    .or(snapshots::as_of.eq(as_of).and(snapshots::id.lt(id))),
            )
            .load(c)),
    }
}
