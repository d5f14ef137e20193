//! The staged-load protocol both daily ingests share (portfolio-svc's snapshot, deposit-svc's
//! account directory), written once; only the rows and their checks are the services' own.
//!
//! A day is a *version*: a row of a versions table (`id`, `as_of`, `digest`, `state`,
//! `started_at`, `heartbeat_at`, `finished_at` and counts) whose rows live in tables keyed by
//! its id. The protocol:
//!
//! 1. The first part of the stream is a header (`as_of`, `digest`). The same digest for the
//!    same `as_of` as the current version is a no-op that says so (`unchanged`); an `as_of`
//!    older than the current one is FAILED_PRECONDITION. Otherwise a `loading` version opens.
//! 2. Each later part is checked by the service and written under the loading version, one
//!    write in flight while the next part is received and checked; every write refreshes the
//!    version's heartbeat. Readers never see a loading version.
//! 3. When the stream ends well, the service checks it against its header (counts, digest);
//!    then one short transaction retires the current version, makes this one current and
//!    moves the pointer row readers follow. Flips on several replicas take turns (an advisory
//!    lock on PostgreSQL, the write lock on SQLite).
//! 4. A stream that breaks, is reset, or fails a check changes nothing: a guard discards the
//!    loading version even if the call's future is dropped. `retired` is terminal, so a late
//!    batch of an abandoned load fails instead of resurrecting it.
//! 5. A janitor prunes retired versions beyond the ones kept, and loading versions whose
//!    heartbeat is older than the stale-load limit (their loader is gone).
//!
//! The statements are plain SQL over table names the service gives ([`StagedTables`]), the
//! same text on both backends (`$n` parameters are positional on PostgreSQL and SQLite alike).

use std::future::Future;
use std::pin::Pin;

use diesel::{
    QueryableByName, RunQueryDsl,
    sql_types::{BigInt, Text},
};
use tokio::task::JoinHandle;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

use crate::{
    db::{Database, DbConnection, write_transaction},
    error::{Error, Result},
};

/// The versions table of a staged load, its pointer row and its row tables.
#[derive(Debug)]
pub struct StagedTables {
    /// What a version is called in messages: `snapshot`, `directory`.
    pub what: &'static str,
    /// The versions table.
    pub versions: &'static str,
    /// The pointer table (`singleton = 1`, the current version's id).
    pub pointer: &'static str,
    /// Its column holding the current version's id.
    pub pointer_column: &'static str,
    /// The tables of a version's rows and the column naming the version, deleted in this order.
    pub rows: &'static [(&'static str, &'static str)],
    /// `ErrorInfo.reason` for a header older than the current version.
    pub outdated_reason: &'static str,
}

/// States of a version as stored.
pub mod state {
    /// Being written; invisible to readers.
    pub const LOADING: &str = "loading";
    /// What readers see.
    pub const CURRENT: &str = "current";
    /// Replaced or discarded; terminal. Kept for paging that started on it, then pruned.
    pub const RETIRED: &str = "retired";
}

/// A version, as the protocol needs it.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct Version {
    /// Row id.
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// Microseconds since the Unix epoch.
    #[diesel(sql_type = BigInt)]
    pub as_of: i64,
    /// Lowercase hex digest of its records.
    #[diesel(sql_type = Text)]
    pub digest: String,
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

#[derive(QueryableByName)]
struct State {
    #[diesel(sql_type = Text)]
    state: String,
}

/// What [`StagedTables::begin`] decided.
#[derive(Debug)]
pub enum Begin {
    /// The same digest for the same `as_of` is already current: nothing to do.
    Unchanged(Version),
    /// A new loading version, by id.
    Started(i64),
}

/// What [`StagedTables::finish`] did.
#[derive(Debug)]
pub enum Finish {
    /// The version is now current.
    Current,
    /// An identical version became current meanwhile (a concurrent load of the same day);
    /// ours is redundant and is discarded.
    Unchanged(Version),
}

impl StagedTables {
    /// The current version, if any: through the pointer row.
    pub fn current(&self, conn: &mut DbConnection) -> Result<Option<Version>> {
        let sql = format!(
            "SELECT id, as_of, digest FROM {} WHERE id IN (SELECT {} FROM {} WHERE singleton = 1)",
            self.versions, self.pointer_column, self.pointer
        );
        let rows: Vec<Version> = diesel::sql_query(sql).load(conn)?;
        Ok(rows.into_iter().next())
    }

    fn outdated(&self, as_of: i64, current: &Version) -> Error {
        Error::FailedPrecondition {
            reason: self.outdated_reason,
            message: format!(
                "as_of {} is older than the current {}'s {}; a {} never replaces a newer one",
                invest_proto::time::rfc3339(as_of),
                self.what,
                invest_proto::time::rfc3339(current.as_of),
                self.what
            ),
        }
    }

    fn abandoned(&self, id: i64) -> Error {
        Error::Unavailable(format!(
            "loading {} {id} was abandoned (no batch for too long) and cleaned up; send the day again",
            self.what
        ))
    }

    /// `unchanged` or `outdated` against the current version, or `None` to go on.
    fn against_current(
        &self,
        conn: &mut DbConnection,
        as_of: i64,
        digest: &str,
    ) -> Result<Option<Version>> {
        match self.current(conn)? {
            Some(current) if current.as_of == as_of && current.digest == digest => {
                Ok(Some(current))
            }
            Some(current) if current.as_of > as_of => Err(self.outdated(as_of, &current)),
            _ => Ok(None),
        }
    }

    /// Checks a header against the current version and opens a loading one.
    pub fn begin(
        &self,
        conn: &mut DbConnection,
        as_of: i64,
        digest: &str,
        now: i64,
    ) -> Result<Begin> {
        write_transaction(conn, |conn| {
            if let Some(current) = self.against_current(conn, as_of, digest)? {
                return Ok(Begin::Unchanged(current));
            }
            let sql = format!(
                "INSERT INTO {} (as_of, digest, state, started_at, heartbeat_at) \
                 VALUES ($1, $2, $3, $4, $5) RETURNING id",
                self.versions
            );
            let id: Id = diesel::sql_query(sql)
                .bind::<BigInt, _>(as_of)
                .bind::<Text, _>(digest)
                .bind::<Text, _>(state::LOADING)
                .bind::<BigInt, _>(now)
                .bind::<BigInt, _>(now)
                .get_result(conn)?;
            Ok(Begin::Started(id.id))
        })
    }

    /// Marks a loading version alive (call it in the transaction that writes a batch), so
    /// that the janitor does not take it for abandoned; an abandoned one is an error.
    pub fn heartbeat(&self, conn: &mut DbConnection, id: i64, now: i64) -> Result<()> {
        let sql = format!(
            "UPDATE {} SET heartbeat_at = $1 WHERE id = $2 AND state = $3",
            self.versions
        );
        let updated = diesel::sql_query(sql)
            .bind::<BigInt, _>(now)
            .bind::<BigInt, _>(id)
            .bind::<Text, _>(state::LOADING)
            .execute(conn)?;
        if updated == 0 {
            return Err(self.abandoned(id));
        }
        Ok(())
    }

    /// Makes a fully written version current, with its counts (`(column, value)`), in one
    /// short transaction; `flip_lock_key` serialises flips of replicas on PostgreSQL.
    #[allow(clippy::too_many_arguments)]
    pub fn finish(
        &self,
        conn: &mut DbConnection,
        id: i64,
        as_of: i64,
        digest: &str,
        counts: &[(&'static str, i64)],
        now: i64,
        flip_lock_key: i64,
    ) -> Result<Finish> {
        write_transaction(conn, |conn| {
            if let DbConnection::Pg(c) = conn {
                // SQLite's write lock already serialises flips.
                diesel::sql_query(format!("SELECT pg_advisory_xact_lock({flip_lock_key})"))
                    .execute(c)?;
            }
            if let Some(current) = self.against_current(conn, as_of, digest)? {
                return Ok(Finish::Unchanged(current));
            }
            diesel::sql_query(format!(
                "UPDATE {} SET state = $1 WHERE state = $2",
                self.versions
            ))
            .bind::<Text, _>(state::RETIRED)
            .bind::<Text, _>(state::CURRENT)
            .execute(conn)?;
            let mut set = String::from("state = $1, finished_at = $2, heartbeat_at = $2");
            for (column, value) in counts {
                set.push_str(&format!(", {column} = {value}"));
            }
            let updated = diesel::sql_query(format!(
                "UPDATE {} SET {set} WHERE id = $3 AND state = $4",
                self.versions
            ))
            .bind::<Text, _>(state::CURRENT)
            .bind::<BigInt, _>(now)
            .bind::<BigInt, _>(id)
            .bind::<Text, _>(state::LOADING)
            .execute(conn)?;
            if updated == 0 {
                return Err(self.abandoned(id));
            }
            // The pointer readers follow; its primary key admits one row.
            diesel::sql_query(format!("DELETE FROM {}", self.pointer)).execute(conn)?;
            diesel::sql_query(format!(
                "INSERT INTO {} (singleton, {}) VALUES (1, $1)",
                self.pointer, self.pointer_column
            ))
            .bind::<BigInt, _>(id)
            .execute(conn)?;
            Ok(Finish::Current)
        })
    }

    /// Deletes a version that is not current: retires it first if it is still loading, so
    /// that a late batch or a late finish of an abandoned load fails instead of resurrecting
    /// it; `retired` is terminal, so deleting its rows is then safe. Each table in its own
    /// transaction, so that a large delete does not hold the write lock for the whole time.
    pub fn discard(&self, conn: &mut DbConnection, id: i64) -> Result<()> {
        diesel::sql_query(format!(
            "UPDATE {} SET state = $1 WHERE id = $2 AND state = $3",
            self.versions
        ))
        .bind::<Text, _>(state::RETIRED)
        .bind::<BigInt, _>(id)
        .bind::<Text, _>(state::LOADING)
        .execute(conn)?;
        let states: Vec<State> =
            diesel::sql_query(format!("SELECT state FROM {} WHERE id = $1", self.versions))
                .bind::<BigInt, _>(id)
                .load(conn)?;
        if states.first().map(|s| s.state.as_str()) != Some(state::RETIRED) {
            return Ok(());
        }
        for (table, column) in self.rows {
            diesel::sql_query(format!("DELETE FROM {table} WHERE {column} = $1"))
                .bind::<BigInt, _>(id)
                .execute(conn)?;
        }
        diesel::sql_query(format!("DELETE FROM {} WHERE id = $1", self.versions))
            .bind::<BigInt, _>(id)
            .execute(conn)?;
        Ok(())
    }

    /// Versions to delete: retired ones beyond the newest `keep`, and loading ones whose last
    /// batch is older than `stale_before` (their loader is gone).
    pub fn prunable(
        &self,
        conn: &mut DbConnection,
        keep: u32,
        stale_before: i64,
    ) -> Result<Vec<i64>> {
        let retired: Vec<Id> = diesel::sql_query(format!(
            "SELECT id FROM {} WHERE state = $1 ORDER BY as_of DESC, id DESC LIMIT 1000 OFFSET {keep}",
            self.versions
        ))
        .bind::<Text, _>(state::RETIRED)
        .load(conn)?;
        let stale: Vec<Id> = diesel::sql_query(format!(
            "SELECT id FROM {} WHERE state = $1 AND heartbeat_at < $2",
            self.versions
        ))
        .bind::<Text, _>(state::LOADING)
        .bind::<BigInt, _>(stale_before)
        .load(conn)?;
        Ok(retired.into_iter().chain(stale).map(|row| row.id).collect())
    }
}

/// The `as_of` and `digest` of a header, checked: a valid timestamp (MISSING_AS_OF,
/// INVALID_AS_OF) and the 64 hex digits of a BLAKE3 digest (INVALID_DIGEST), in lowercase.
pub fn check_header(as_of: Option<&prost_types::Timestamp>, digest: &str) -> Result<(i64, String)> {
    let as_of = as_of
        .ok_or_else(|| Error::invalid("MISSING_AS_OF", "header.as_of", "required"))
        .and_then(|ts| {
            invest_proto::time::to_micros(ts).ok_or_else(|| {
                Error::invalid("INVALID_AS_OF", "header.as_of", "not a valid timestamp")
            })
        })?;
    let digest = digest.to_ascii_lowercase();
    if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::invalid(
            "INVALID_DIGEST",
            "header.digest",
            "must be the 64 hex digits of a BLAKE3 digest",
        ));
    }
    Ok((as_of, digest))
}

/// A service's side of a staged load: what its parts are, how each is checked, and how its
/// rows are written.
pub trait Ingest: Send + 'static {
    /// An item of the request stream.
    type Part: Send + 'static;
    /// Checked rows of one part, ready to write.
    type Batch: Send + 'static;

    /// The header from the first part, checked: `(as_of, digest)`.
    fn header(&mut self, first: Self::Part) -> Result<(i64, String)>;

    /// Checks part number `number` (the header is part 1) and returns its rows to write.
    fn accept(&mut self, part: Self::Part, number: u64) -> Result<Self::Batch>;

    /// Writes a batch under the loading version `id`, in one transaction that also calls
    /// [`StagedTables::heartbeat`].
    fn write(
        conn: &mut DbConnection,
        tables: &StagedTables,
        id: i64,
        batch: &Self::Batch,
        now: i64,
    ) -> Result<()>;

    /// After the last part: the stream matches its header (counts, digest); the counts to
    /// record (`(column, value)`).
    fn complete(&self) -> Result<Vec<(&'static str, i64)>>;
}

/// How a staged load ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// True when the same day was current already: nothing changed.
    pub unchanged: bool,
    /// The version now current.
    pub current: i64,
}

/// Runs one ingest stream to its end under the protocol of this module.
pub async fn load<I, S>(
    db: Database,
    tables: &'static StagedTables,
    flip_lock_key: i64,
    mut ingest: I,
    mut parts: S,
) -> Result<Loaded, Status>
where
    I: Ingest,
    S: Stream<Item = Result<I::Part, Status>> + Unpin,
{
    let first = match parts.next().await {
        Some(part) => part?,
        None => {
            return Err(Error::invalid(
                "PARTS_OUT_OF_ORDER",
                "part",
                "the stream is empty; the first part must be a header",
            )
            .into());
        }
    };
    let (as_of, digest) = ingest.header(first)?;
    let begin = {
        let digest = digest.clone();
        db.run(move |c| tables.begin(c, as_of, &digest, invest_proto::time::now_micros()))
            .await?
    };
    let id = match begin {
        Begin::Unchanged(current) => {
            tracing::info!(what = tables.what, as_of = %invest_proto::time::rfc3339(as_of), digest = %digest, "already current; nothing to load");
            return Ok(Loaded {
                unchanged: true,
                current: current.id,
            });
        }
        Begin::Started(id) => id,
    };
    let mut guard = discard_unless_finished(db.clone(), tables, id);
    tracing::info!(what = tables.what, id, as_of = %invest_proto::time::rfc3339(as_of), "loading");

    let mut writer = BatchWriter { pending: None };
    let mut number = 1u64;
    while let Some(part) = parts.next().await {
        number += 1;
        let batch = ingest.accept(part?, number)?;
        let db = db.clone();
        writer
            .submit(async move {
                db.run(move |c| I::write(c, tables, id, &batch, invest_proto::time::now_micros()))
                    .await
            })
            .await?;
    }
    writer.wait().await?;
    let counts = ingest.complete()?;
    let finish = db
        .run(move |c| {
            tables.finish(
                c,
                id,
                as_of,
                &digest,
                &counts,
                invest_proto::time::now_micros(),
                flip_lock_key,
            )
        })
        .await?;
    match finish {
        Finish::Current => {
            guard.disarm();
            tracing::info!(what = tables.what, id, "current");
            Ok(Loaded {
                unchanged: false,
                current: id,
            })
        }
        // A concurrent load of the same day won; ours is discarded by the guard.
        Finish::Unchanged(current) => Ok(Loaded {
            unchanged: true,
            current: current.id,
        }),
    }
}

/// Deletes the versions the janitor may delete (see [`StagedTables::prunable`]).
pub async fn prune(db: &Database, tables: &'static StagedTables, keep: u32, stale_before: i64) {
    let ids = match db
        .run(move |c| tables.prunable(c, keep, stale_before))
        .await
    {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!(what = tables.what, error = %e, "cannot list versions to prune");
            return;
        }
    };
    for id in ids {
        match db.run(move |c| tables.discard(c, id)).await {
            Ok(()) => tracing::info!(what = tables.what, id, "pruned"),
            Err(e) => tracing::warn!(what = tables.what, id, error = %e, "cannot prune"),
        }
    }
}

/// A guard that deletes the rows of a load that did not finish.
fn discard_unless_finished(db: Database, tables: &'static StagedTables, id: i64) -> CleanupGuard {
    CleanupGuard::new(async move {
        match db.run(move |c| tables.discard(c, id)).await {
            Ok(()) => tracing::info!(what = tables.what, id, "discarded unfinished load"),
            Err(e) => {
                tracing::warn!(what = tables.what, id, error = %e, "could not discard unfinished load; the janitor will")
            }
        }
    })
}

/// One database write in flight while the next batch is received and checked.
struct BatchWriter {
    pending: Option<JoinHandle<Result<()>>>,
}

impl BatchWriter {
    async fn wait(&mut self) -> Result<()> {
        if let Some(handle) = self.pending.take() {
            match handle.await {
                Ok(result) => result?,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => return Err(Error::Unavailable(format!("batch write cancelled: {e}"))),
            }
        }
        Ok(())
    }

    async fn submit(
        &mut self,
        write: impl Future<Output = Result<()>> + Send + 'static,
    ) -> Result<()> {
        self.wait().await?;
        self.pending = Some(tokio::spawn(write));
        Ok(())
    }
}

/// Runs a cleanup when dropped unless disarmed, even when the request future that owns it
/// is dropped mid-way (a client that went away): the cleanup runs as its own task.
pub struct CleanupGuard {
    cleanup: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl std::fmt::Debug for CleanupGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CleanupGuard")
            .field("armed", &self.cleanup.is_some())
            .finish()
    }
}

impl CleanupGuard {
    /// Arms the guard with `cleanup`.
    pub fn new(cleanup: impl Future<Output = ()> + Send + 'static) -> Self {
        Self {
            cleanup: Some(Box::pin(cleanup)),
        }
    }

    /// The work succeeded: nothing to clean up.
    pub fn disarm(&mut self) {
        self.cleanup = None;
    }
}

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        if let Some(cleanup) = self.cleanup.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(cleanup);
        }
    }
}
