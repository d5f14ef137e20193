//! The account directory: who owns which account, one version per daily delivery, replaced
//! atomically like portfolio-svc's snapshots.

use diesel::prelude::*;
use invest_runtime::{
    db::{DbConnection, write_transaction},
    with_backend,
};

use super::{
    schema::{current_directory, directories, directory_entries},
    state,
};
use crate::error::{Error, Result};

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

/// What `begin_load` decided.
#[derive(Debug)]
pub enum Begin {
    /// The same digest for the same `as_of` is already current.
    Unchanged(DirectoryRow),
    /// A new `loading` directory.
    Started(i64),
}

#[derive(Insertable)]
#[diesel(table_name = directory_entries, treat_none_as_default_value = false)]
struct NewEntry<'a> {
    directory_id: i64,
    account_number: &'a str,
    customer_name: &'a str,
}

/// A checked entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Account number.
    pub account_number: String,
    /// Owner.
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
pub fn owner_of(conn: &mut DbConnection, account_number: &str) -> QueryResult<Option<String>> {
    let owners: Vec<String> = with_backend!(conn, c => directory_entries::table
        .filter(directory_entries::directory_id.eq_any(current_id()))
        .filter(directory_entries::account_number.eq(account_number))
        .select(directory_entries::customer_name)
        .load(c))?;
    Ok(owners.into_iter().next())
}

fn outdated(as_of: i64, current: &DirectoryRow) -> Error {
    Error::FailedPrecondition {
        reason: "DIRECTORY_OUTDATED",
        message: format!(
            "as_of {} is older than the current directory's {}; a directory never replaces a newer one",
            invest_proto::time::rfc3339(as_of),
            invest_proto::time::rfc3339(current.as_of)
        ),
    }
}

/// Checks the header against the current directory and opens a `loading` one.
pub fn begin_load(conn: &mut DbConnection, as_of: i64, digest: &str, now: i64) -> Result<Begin> {
    write_transaction(conn, |conn| {
        if let Some(current) = current(conn)? {
            if current.as_of == as_of && current.digest == digest {
                return Ok(Begin::Unchanged(current));
            }
            if current.as_of > as_of {
                return Err(outdated(as_of, &current));
            }
        }
        let id = with_backend!(conn, c => diesel::insert_into(directories::table)
            .values((
                directories::as_of.eq(as_of),
                directories::digest.eq(digest),
                directories::state.eq(state::LOADING),
                directories::started_at.eq(now),
                directories::heartbeat_at.eq(now),
            ))
            .returning(directories::id)
            .get_result::<i64>(c))?;
        Ok(Begin::Started(id))
    })
}

/// Writes a batch of entries of a loading directory.
pub fn insert_entries(
    conn: &mut DbConnection,
    directory_id: i64,
    batch: &[Entry],
    now: i64,
) -> Result<()> {
    let rows: Vec<NewEntry<'_>> = batch
        .iter()
        .map(|e| NewEntry {
            directory_id,
            account_number: &e.account_number,
            customer_name: &e.customer_name,
        })
        .collect();
    write_transaction(conn, |conn| {
        match conn {
            DbConnection::Pg(c) => {
                diesel::copy_from(directory_entries::table)
                    .from_insertable(&rows)
                    .execute(c)?;
            }
            DbConnection::Sqlite(c) => {
                // 3 parameters per row, well below SQLite's 32766.
                for chunk in rows.chunks(10_000) {
                    diesel::insert_into(directory_entries::table)
                        .values(chunk)
                        .execute(c)?;
                }
            }
        }
        let alive = diesel::update(directories::table)
            .filter(directories::id.eq(directory_id))
            .filter(directories::state.eq(state::LOADING))
            .set(directories::heartbeat_at.eq(now))
            .execute(conn)?;
        if alive == 0 {
            return Err(abandoned(directory_id));
        }
        Ok(())
    })
}

fn abandoned(directory_id: i64) -> Error {
    Error::Unavailable(format!(
        "loading directory {directory_id} was abandoned and cleaned up; send the day again"
    ))
}

/// What `finish_load` did.
#[derive(Debug)]
pub enum Finish {
    /// Now current.
    Current(DirectoryRow),
    /// An identical directory became current meanwhile; ours must be discarded.
    Unchanged(DirectoryRow),
}

/// Makes a fully written directory current.
pub fn finish_load(
    conn: &mut DbConnection,
    directory_id: i64,
    as_of: i64,
    digest: &str,
    entry_count: i64,
    now: i64,
    flip_lock_key: i64,
) -> Result<Finish> {
    write_transaction(conn, |conn| {
        if let DbConnection::Pg(c) = conn {
            diesel::sql_query(format!("SELECT pg_advisory_xact_lock({flip_lock_key})"))
                .execute(c)?;
        }
        if let Some(current) = current(conn)? {
            if current.as_of == as_of && current.digest == digest {
                return Ok(Finish::Unchanged(current));
            }
            if current.as_of > as_of {
                return Err(outdated(as_of, &current));
            }
        }
        diesel::update(directories::table)
            .filter(directories::state.eq(state::CURRENT))
            .set(directories::state.eq(state::RETIRED))
            .execute(conn)?;
        let updated = diesel::update(directories::table)
            .filter(directories::id.eq(directory_id))
            .filter(directories::state.eq(state::LOADING))
            .set((
                directories::state.eq(state::CURRENT),
                directories::finished_at.eq(Some(now)),
                directories::entry_count.eq(entry_count),
            ))
            .execute(conn)?;
        if updated == 0 {
            return Err(abandoned(directory_id));
        }
        // The pointer deposits follow; its primary key admits one row.
        diesel::delete(current_directory::table).execute(conn)?;
        diesel::insert_into(current_directory::table)
            .values((
                current_directory::singleton.eq(1),
                current_directory::directory_id.eq(directory_id),
            ))
            .execute(conn)?;
        current(conn)?
            .map(Finish::Current)
            .ok_or_else(|| abandoned(directory_id))
    })
}

/// Deletes a directory that is not current (retiring it first if it was loading; `retired`
/// is terminal, so nothing can make it current while its entries go).
pub fn discard(conn: &mut DbConnection, directory_id: i64) -> Result<()> {
    diesel::update(directories::table)
        .filter(directories::id.eq(directory_id))
        .filter(directories::state.eq(state::LOADING))
        .set(directories::state.eq(state::RETIRED))
        .execute(conn)?;
    let state: Option<String> = directories::table
        .filter(directories::id.eq(directory_id))
        .select(directories::state)
        .first(conn)
        .optional()?;
    if state.as_deref() != Some(state::RETIRED) {
        return Ok(());
    }
    diesel::delete(
        directory_entries::table.filter(directory_entries::directory_id.eq(directory_id)),
    )
    .execute(conn)?;
    diesel::delete(directories::table.filter(directories::id.eq(directory_id))).execute(conn)?;
    Ok(())
}

/// Directories to delete: every retired one, and loading ones whose last batch is older than
/// `stale_before`.
pub fn prunable(conn: &mut DbConnection, stale_before: i64) -> Result<Vec<i64>> {
    Ok(directories::table
        .filter(
            directories::state.eq(state::RETIRED).or(directories::state
                .eq(state::LOADING)
                .and(directories::heartbeat_at.lt(stale_before))),
        )
        .select(directories::id)
        .limit(1_000)
        .load(conn)?)
}
