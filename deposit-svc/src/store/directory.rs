//! The account directory: who owns which account, one version per daily delivery, replaced
//! under the staged-load protocol like portfolio-svc's snapshots.

use diesel::prelude::*;
use invest_runtime::{
    db::{DbConnection, write_transaction},
    with_backend,
};

use invest_proto::ids::AccountNumber;

use super::{
    DIRECTORIES,
    schema::{current_directory, directories, directory_entries, loading},
};
// Written under the staged-load protocol, whose errors are the runtime's.
use invest_runtime::error::Result;

/// The current directory, for answers and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub struct DirectoryRow {
    /// Row id.
    pub id: i64,
    /// Microseconds since the Unix epoch.
    pub as_of: i64,
    /// Digest of the entries.
    pub digest: String,
    /// Entries.
    pub entry_count: i64,
}

#[derive(Insertable)]
#[diesel(table_name = directory_entries, treat_none_as_default_value = false)]
struct NewEntry<'a> {
    directory_id: i64,
    account_number: &'a str,
    customer_name: &'a str,
}

/// PostgreSQL: the same row, into the loading parent.
#[derive(Insertable)]
#[diesel(table_name = loading::directory_entries, treat_none_as_default_value = false)]
struct LoadingEntry<'a> {
    directory_id: i64,
    account_number: &'a str,
    customer_name: &'a str,
}

/// A checked entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Account number.
    pub account_number: AccountNumber,
    /// Owner's name, trimmed and within the text rule.
    pub customer_name: String,
}

/// The id of the current directory, as a subquery (the pointer row's primary key).
fn current_id() -> diesel::dsl::Select<
    diesel::dsl::Filter<
        current_directory::table,
        diesel::dsl::Eq<current_directory::singleton, i32>,
    >,
    current_directory::directory_id,
> {
    current_directory::table
        .filter(current_directory::singleton.eq(1))
        .select(current_directory::directory_id)
}

/// The current directory.
pub fn current(conn: &mut DbConnection) -> QueryResult<Option<DirectoryRow>> {
    // No `.first()`: a bound LIMIT makes SQLite prepare the statement again on every call,
    // and the pointer yields at most one row anyway.
    let rows: Vec<DirectoryRow> = directories::table
        .filter(directories::id.eq_any(current_id()))
        .select((
            directories::id,
            directories::as_of,
            directories::digest,
            directories::entry_count,
        ))
        .load(conn)?;
    Ok(rows.into_iter().next())
}

/// The owner of an account in the current directory: one primary-key search.
pub fn owner_of(
    conn: &mut DbConnection,
    account_number: &AccountNumber,
) -> QueryResult<Option<String>> {
    let owners: Vec<String> = with_backend!(conn, c => directory_entries::table
        .filter(directory_entries::directory_id.eq_any(current_id()))
        .filter(directory_entries::account_number.eq(account_number.as_str()))
        .select(directory_entries::customer_name)
        .load(c))?;
    Ok(owners.into_iter().next())
}

/// Writes a batch of entries of a loading directory: on PostgreSQL in one transaction, on
/// SQLite in transactions of [`SQLITE_ENTRIES_PER_TRANSACTION`], so that a deposit waiting for
/// the write lock waits for a short one (a loading directory is unused, and a load that fails
/// is discarded whole).
pub fn insert_entries(
    conn: &mut DbConnection,
    directory_id: i64,
    batch: &[Entry],
    now: i64,
) -> Result<()> {
    if matches!(conn, DbConnection::Sqlite(_)) {
        for chunk in batch.chunks(SQLITE_ENTRIES_PER_TRANSACTION) {
            insert_entries_in_one(conn, directory_id, chunk, now)?;
        }
        return Ok(());
    }
    insert_entries_in_one(conn, directory_id, batch, now)
}

/// Entries per write transaction of a load on SQLite: a few milliseconds.
const SQLITE_ENTRIES_PER_TRANSACTION: usize = 1_000;

fn insert_entries_in_one(
    conn: &mut DbConnection,
    directory_id: i64,
    batch: &[Entry],
    now: i64,
) -> Result<()> {
    let rows: Vec<NewEntry<'_>> = batch
        .iter()
        .map(|e| NewEntry {
            directory_id,
            account_number: e.account_number.as_str(),
            customer_name: &e.customer_name,
        })
        .collect();
    write_transaction(conn, |conn| {
        // First: a load declared abandoned fails here with that reason (and the row lock
        // keeps the janitor from forgetting the load while the batch is written).
        DIRECTORIES.heartbeat(conn, directory_id, now)?;
        match conn {
            DbConnection::Pg(c) => {
                let rows: Vec<LoadingEntry<'_>> = rows
                    .iter()
                    .map(|r| LoadingEntry {
                        directory_id: r.directory_id,
                        account_number: r.account_number,
                        customer_name: r.customer_name,
                    })
                    .collect();
                diesel::copy_from(loading::directory_entries::table)
                    .from_insertable(&rows)
                    .execute(c)?;
            }
            DbConnection::Sqlite(c) => {
                // 3 parameters per row, well below SQLite's 32766.
                for chunk in rows.chunks(SQLITE_ENTRIES_PER_TRANSACTION) {
                    diesel::insert_into(directory_entries::table)
                        .values(chunk)
                        .execute(c)?;
                }
            }
        }
        Ok(())
    })
}
