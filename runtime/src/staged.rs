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
//! Pruning is two steps, each safe to repeat after a crash: deleting the version's row (one
//! short transaction; from then on no read finds the version, and a late batch or finish of
//! its load fails), then collecting rows whose version row is gone. So a reader that finds a
//! version still there after reading its rows (in statements of their own) has read them
//! whole; one that does not, read them while they went, and reads again.
//!
//! **PostgreSQL: a partition per version.** Each row table is partitioned by version
//! (`PARTITION BY LIST`). A load writes into `{table}_v{id}`, a partition of
//! `{table}_loading` (a parent no reader reads, with the same indexes as `{table}`), so its
//! rows are indexed as they arrive; at the end of the stream it moves to `{table}` by
//! `ATTACH PARTITION`, which attaches the partition's indexes instead of building them and
//! takes only a `SHARE UPDATE EXCLUSIVE` lock on the parent (reads and writes go on). Collecting a version is `DETACH PARTITION … CONCURRENTLY` (readers are
//! never blocked; a detach a crash interrupted is finished with `FINALIZE`) and `DROP TABLE`:
//! constant time, no dead rows, no vacuum debt, no write-ahead log per row.
//!
//! **SQLite: batches with pauses.** One database file, one writer at a time: rows are deleted
//! a batch of about 2 ms per write transaction, with a pause after each at least as long.
//! The process's writers take turns first come, first served (`db::write_transaction`), so a
//! deposit or a load waiting for the write lock waits for one batch at most. The deletes
//! free pages that the next day's load reuses, so the file stops growing after the first
//! days.
//!
//! Maintenance runs on its own connection ([`Database::maintain`]), never on one a request
//! needs. The statements are plain SQL over table names the service gives ([`StagedTables`]),
//! the same text on both backends where they can be (`$n` parameters are positional on
//! PostgreSQL and SQLite alike).

use std::future::Future;
use std::pin::Pin;
use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};
use std::time::{Duration, Instant};

use diesel::{
    QueryableByName, RunQueryDsl,
    sql_types::{BigInt, Bool, Nullable, Text},
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
    /// The tables of a version's rows, collected in this order.
    pub rows: &'static [RowTable],
    /// `ErrorInfo.reason` for a header older than the current version.
    pub outdated_reason: &'static str,
}

/// A table of a version's rows.
#[derive(Debug)]
pub struct RowTable {
    /// Its name (on PostgreSQL the parent partitioned by version).
    pub name: &'static str,
    /// The column naming the version: the partition key, and the first column of the primary
    /// key.
    pub version_column: &'static str,
    /// The next column of the primary key, which SQLite's batched delete walks in order.
    pub key_column: &'static str,
}

impl RowTable {
    /// PostgreSQL: the partition of version `id`.
    fn partition(&self, id: i64) -> String {
        format!("{}_v{id}", self.name)
    }

    /// PostgreSQL: the parent a loading version's partition belongs to until it is complete.
    fn loading_parent(&self) -> String {
        format!("{}_loading", self.name)
    }
}

/// Key space of the advisory lock that lets one replica at a time collect (two-key form, apart
/// from the one-key locks of migrations and flips): "coll".
const COLLECT_LOCK_SPACE: i32 = 0x636f_6c6c;

/// How SQLite's batched delete paces itself.
#[derive(Debug, Clone)]
pub struct Pace {
    /// Rows in the first batch.
    pub first_batch: u32,
    /// The time a batch should take (and so hold the write lock): batches grow or shrink
    /// toward it. The writers of a process take turns first come, first served
    /// (`db::write_transaction`), so a deposit waits for one batch at most.
    pub batch_time: Duration,
    /// The pause after each batch, at least; as long as the batch took if that is longer, so
    /// that requests have the disk and the processor at least half of the time.
    pub pause: Duration,
    /// Set when the work is no longer wanted (the server stops): the delete ends after the
    /// batch in progress, and the next round goes on from there.
    pub stop: Arc<AtomicBool>,
}

impl Default for Pace {
    fn default() -> Self {
        Self {
            first_batch: 1_000,
            batch_time: Duration::from_millis(2),
            pause: Duration::from_millis(2),
            stop: Arc::default(),
        }
    }
}

/// Sets [`Pace::stop`] when dropped: with the future that awaits the work (a janitor's round,
/// dropped when the server stops), so that the blocking work does not keep the process alive.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Pace {
    fn next_batch(&self, batch: u32, took: Duration) -> u32 {
        if took < self.batch_time / 2 {
            batch.saturating_mul(2).min(100_000)
        } else if took > self.batch_time {
            (batch / 2).max(100)
        } else {
            batch
        }
    }
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
            if let DbConnection::Pg(c) = conn {
                // In the same transaction as the version's row: a partition is never seen
                // without its version (which is what tells the collector it is not garbage).
                // The CHECK, added while the partition is empty (no scan), stays with it when
                // it moves to the readers' parent and lets `ATTACH` skip the scan of every
                // row that would otherwise prove the partition's bound.
                for table in self.rows {
                    let partition = table.partition(id.id);
                    diesel::sql_query(format!(
                        "CREATE TABLE {partition} PARTITION OF {} FOR VALUES IN ({id})",
                        table.loading_parent(),
                        id = id.id
                    ))
                    .execute(c)?;
                    diesel::sql_query(format!(
                        "ALTER TABLE {partition} ADD CONSTRAINT {partition}_version \
                         CHECK ({} = {id})",
                        table.version_column,
                        id = id.id
                    ))
                    .execute(c)?;
                }
            }
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
        if matches!(conn, DbConnection::Pg(_)) {
            // Readers never see a loading version, so its rows may join the parent before the
            // flip; `ATTACH` attaches the partition's indexes (built as the rows arrived) and
            // does not block reads or writes of the parent.
            write_transaction(conn, |conn| {
                self.heartbeat(conn, id, now)?;
                for table in self.rows {
                    let partition = table.partition(id);
                    diesel::sql_query(format!(
                        "ALTER TABLE {} DETACH PARTITION {partition}",
                        table.loading_parent()
                    ))
                    .execute(conn)?;
                    diesel::sql_query(format!(
                        "ALTER TABLE {} ATTACH PARTITION {partition} FOR VALUES IN ({id})",
                        table.name
                    ))
                    .execute(conn)?;
                }
                Ok::<_, Error>(())
            })?;
        }
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

    /// Forgets a version that is not current: deletes its row, the first step of pruning it
    /// (its rows are then garbage for [`StagedTables::collect`]). From this commit on no read
    /// finds the version, and a late batch or a late finish of its load fails (they check the
    /// row) instead of resurrecting it. Returns whether there was such a version.
    pub fn forget(&self, conn: &mut DbConnection, id: i64) -> Result<bool> {
        let deleted = write_transaction(conn, |conn| {
            diesel::sql_query(format!(
                "DELETE FROM {} WHERE id = $1 AND state <> $2",
                self.versions
            ))
            .bind::<BigInt, _>(id)
            .bind::<Text, _>(state::CURRENT)
            .execute(conn)
        })?;
        Ok(deleted > 0)
    }

    /// Removes the rows of versions that no longer exist (forgotten ones, and whatever a
    /// crash left half-removed), without holding a lock a request waits for for long (see the
    /// module documentation). Safe to run on several replicas at once, and again after a crash
    /// at any point. Returns the number of versions whose rows it removed.
    pub fn collect(&self, conn: &mut DbConnection, pace: &Pace) -> Result<usize> {
        match conn {
            DbConnection::Pg(_) => self.collect_partitions(conn),
            DbConnection::Sqlite(_) => self.collect_batches(conn, pace),
        }
    }

    /// The ids of the versions that exist.
    fn version_ids(&self, conn: &mut DbConnection) -> Result<std::collections::HashSet<i64>> {
        let ids: Vec<Id> =
            diesel::sql_query(format!("SELECT id FROM {}", self.versions)).load(conn)?;
        Ok(ids.into_iter().map(|row| row.id).collect())
    }

    fn collect_partitions(&self, conn: &mut DbConnection) -> Result<usize> {
        #[derive(QueryableByName)]
        struct Got {
            #[diesel(sql_type = Bool)]
            got: bool,
        }
        // One collector at a time across replicas (a session lock: it dies with a crash).
        let got: Got = diesel::sql_query(format!(
            "SELECT pg_try_advisory_lock({COLLECT_LOCK_SPACE}, hashtext('{}')) AS got",
            self.versions
        ))
        .get_result(conn)?;
        if !got.got {
            return Ok(0);
        }
        let result = self.collect_partitions_locked(conn);
        let unlocked = diesel::sql_query(format!(
            "SELECT pg_advisory_unlock({COLLECT_LOCK_SPACE}, hashtext('{}'))",
            self.versions
        ))
        .execute(conn);
        let collected = result?;
        unlocked?;
        Ok(collected)
    }

    fn collect_partitions_locked(&self, conn: &mut DbConnection) -> Result<usize> {
        #[derive(QueryableByName)]
        struct Partition {
            #[diesel(sql_type = Text)]
            name: String,
            #[diesel(sql_type = Nullable<Text>)]
            parent: Option<String>,
            #[diesel(sql_type = Bool)]
            pending: bool,
        }
        let mut collected = std::collections::BTreeSet::new();
        for table in self.rows {
            // The catalog first, then the versions: a partition is committed with its
            // version's row, so one seen in the first read is not missed by the second.
            let partitions: Vec<Partition> = diesel::sql_query(
                "SELECT c.relname::text AS name, p.relname::text AS parent, \
                        COALESCE(i.inhdetachpending, false) AS pending \
                 FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = current_schema() \
                 LEFT JOIN pg_inherits i ON i.inhrelid = c.oid \
                 LEFT JOIN pg_class p ON p.oid = i.inhparent \
                 WHERE c.relkind = 'r' AND c.relname ~ ('^' || $1 || '_v[0-9]+$')",
            )
            .bind::<Text, _>(table.name)
            .load(conn)?;
            let live = self.version_ids(conn)?;
            for partition in partitions {
                let Some(id) = partition
                    .name
                    .rsplit_once("_v")
                    .and_then(|(_, id)| id.parse::<i64>().ok())
                else {
                    continue;
                };
                if live.contains(&id) {
                    continue;
                }
                let name = &partition.name;
                match partition.parent.as_deref() {
                    // Readers read this parent: a concurrent detach never blocks them; it
                    // waits for the transactions that may still read the partition. One a
                    // crash interrupted is finished instead.
                    Some(parent) if parent == table.name => {
                        let how = if partition.pending {
                            "FINALIZE"
                        } else {
                            "CONCURRENTLY"
                        };
                        diesel::sql_query(format!(
                            "ALTER TABLE {parent} DETACH PARTITION {name} {how}"
                        ))
                        .execute(conn)?;
                    }
                    // A loading parent (only loads use it) or none: dropping is enough.
                    _ => {}
                }
                diesel::sql_query(format!("DROP TABLE IF EXISTS {name}")).execute(conn)?;
                collected.insert(id);
            }
        }
        Ok(collected.len())
    }

    fn collect_batches(&self, conn: &mut DbConnection, pace: &Pace) -> Result<usize> {
        #[derive(QueryableByName)]
        struct Next {
            #[diesel(sql_type = Nullable<BigInt>)]
            next: Option<i64>,
        }
        #[derive(QueryableByName)]
        struct Key {
            #[diesel(sql_type = Text)]
            key: String,
        }
        let mut collected = std::collections::BTreeSet::new();
        for table in self.rows {
            let (t, v, k) = (table.name, table.version_column, table.key_column);
            // The versions present, one index search each; the live ones read afterwards, so
            // that rows of a version begun in between are never taken for garbage.
            let mut present = Vec::new();
            let mut after = i64::MIN;
            loop {
                let next: Next =
                    diesel::sql_query(format!("SELECT MIN({v}) AS next FROM {t} WHERE {v} > $1"))
                        .bind::<BigInt, _>(after)
                        .get_result(conn)?;
                let Some(id) = next.next else { break };
                present.push(id);
                after = id;
            }
            let live = self.version_ids(conn)?;
            for id in present.into_iter().filter(|id| !live.contains(id)) {
                let mut batch = pace.first_batch;
                loop {
                    if pace.stop.load(Ordering::Relaxed) {
                        return Ok(collected.len());
                    }
                    // The key that ends a batch of about `batch` rows, in primary-key order.
                    let last: Vec<Key> = diesel::sql_query(format!(
                        "SELECT {k} AS key FROM {t} WHERE {v} = $1 ORDER BY {k} LIMIT 1 OFFSET $2"
                    ))
                    .bind::<BigInt, _>(id)
                    .bind::<BigInt, _>(i64::from(batch.saturating_sub(1)))
                    .load(conn)?;
                    let started = Instant::now();
                    write_transaction(conn, |conn| match last.first() {
                        Some(last) => diesel::sql_query(format!(
                            "DELETE FROM {t} WHERE {v} = $1 AND {k} <= $2"
                        ))
                        .bind::<BigInt, _>(id)
                        .bind::<Text, _>(&last.key)
                        .execute(conn),
                        None => diesel::sql_query(format!("DELETE FROM {t} WHERE {v} = $1"))
                            .bind::<BigInt, _>(id)
                            .execute(conn),
                    })?;
                    let took = started.elapsed();
                    if last.is_empty() {
                        break;
                    }
                    batch = pace.next_batch(batch, took);
                    std::thread::sleep(pace.pause.max(took));
                }
                collected.insert(id);
            }
        }
        Ok(collected.len())
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

    /// Rows the loader rejected while cleaning the delivery, as its header says (0 when it
    /// does not say); reported in the metrics of the load.
    fn rejected_rows(&self) -> i64 {
        0
    }
}

/// How a staged load ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// True when the same day was current already: nothing changed.
    pub unchanged: bool,
    /// The version now current.
    pub current: i64,
}

/// Runs one ingest stream to its end under the protocol of this module, and reports it in
/// the metrics an operator pages on (`ingest_*{what}`: see the README's metrics).
pub async fn load<I, S>(
    db: Database,
    tables: &'static StagedTables,
    flip_lock_key: i64,
    ingest: I,
    parts: S,
) -> Result<Loaded, Status>
where
    I: Ingest,
    S: Stream<Item = Result<I::Part, Status>> + Unpin,
{
    let started = Instant::now();
    let mut report = LoadReport::default();
    let outcome = run_load(db, tables, flip_lock_key, ingest, parts, &mut report).await;
    let result = match &outcome {
        Ok(Loaded {
            unchanged: true, ..
        }) => "unchanged",
        Ok(_) => "current",
        Err(_) => "failed",
    };
    let what = tables.what;
    metrics::counter!("ingest_loads_total", "what" => what, "result" => result).increment(1);
    // A stream that did not get past its header is no load (a probe, a refused day).
    if report.started || result != "failed" {
        let now = invest_proto::time::now_micros() as f64 / 1e6;
        metrics::gauge!("ingest_last_load_success", "what" => what).set(if result == "failed" {
            0.0
        } else {
            1.0
        });
        metrics::gauge!("ingest_last_load_timestamp_seconds", "what" => what).set(now);
        metrics::gauge!("ingest_last_load_duration_seconds", "what" => what)
            .set(started.elapsed().as_secs_f64());
        metrics::gauge!("ingest_last_load_rejected_rows", "what" => what)
            .set(report.rejected_rows as f64);
        for (column, value) in &report.counts {
            let table = column.strip_suffix("_count").unwrap_or(column);
            metrics::gauge!("ingest_last_load_rows", "what" => what, "table" => table)
                .set(*value as f64);
        }
    }
    outcome
}

/// What [`load`] reports of a load besides its outcome.
#[derive(Debug, Default)]
struct LoadReport {
    /// The header was accepted and a version opened (or found current).
    started: bool,
    rejected_rows: i64,
    counts: Vec<(&'static str, i64)>,
}

async fn run_load<I, S>(
    db: Database,
    tables: &'static StagedTables,
    flip_lock_key: i64,
    mut ingest: I,
    mut parts: S,
    report: &mut LoadReport,
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
    report.rejected_rows = ingest.rejected_rows();
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
    report.started = true;
    let mut guard = discard_unless_finished(db.clone(), tables, id);
    tracing::info!(what = tables.what, id, as_of = %invest_proto::time::rfc3339(as_of), "loading");

    let mut writer = BatchWriter { pending: None };
    let mut number = 1u64;
    while let Some(part) = parts.next().await {
        number += 1;
        let part = part?;
        // Checking a part (every row's format and order, the running digest) costs about as
        // much processor as writing it, so it runs on the bulk thread too, at its lower
        // priority: the runtime's threads, which answer requests, only receive the stream.
        let (back, batch) = db
            .bulk(move |_| -> Result<_> {
                let batch = ingest.accept(part, number);
                Ok((ingest, batch))
            })
            .await?;
        ingest = back;
        let batch = batch?;
        let db = db.clone();
        writer
            .submit(async move {
                db.bulk(move |c| I::write(c, tables, id, &batch, invest_proto::time::now_micros()))
                    .await
            })
            .await?;
    }
    writer.wait().await?;
    let counts = ingest.complete()?;
    report.counts.clone_from(&counts);
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

/// Prunes what the janitor may prune (see [`StagedTables::prunable`]): forgets each version,
/// then collects the rows of every forgotten one, on the maintenance connection.
pub async fn prune(db: &Database, tables: &'static StagedTables, keep: u32, stale_before: i64) {
    let pace = Pace::default();
    let _stop = StopOnDrop(pace.stop.clone());
    let outcome = db
        .maintain(move |c| -> Result<(Vec<i64>, usize)> {
            let mut forgotten = Vec::new();
            for id in tables.prunable(c, keep, stale_before)? {
                if tables.forget(c, id)? {
                    forgotten.push(id);
                }
            }
            let collected = tables.collect(c, &pace)?;
            Ok((forgotten, collected))
        })
        .await;
    match outcome {
        Ok((forgotten, collected)) => {
            if !forgotten.is_empty() || collected > 0 {
                tracing::info!(what = tables.what, ?forgotten, collected, "pruned");
            }
        }
        Err(e) => {
            tracing::warn!(what = tables.what, error = %e, "cannot prune; the janitor tries again")
        }
    }
}

/// A guard that forgets a load that did not finish and removes its rows.
fn discard_unless_finished(db: Database, tables: &'static StagedTables, id: i64) -> CleanupGuard {
    CleanupGuard::new(async move {
        let pace = Pace::default();
        let _stop = StopOnDrop(pace.stop.clone());
        let outcome = db
            .maintain(move |c| -> Result<()> {
                tables.forget(c, id)?;
                tables.collect(c, &pace)?;
                Ok(())
            })
            .await;
        match outcome {
            Ok(()) => tracing::info!(what = tables.what, id, "discarded unfinished load"),
            Err(e) => {
                tracing::warn!(what = tables.what, id, error = %e, "could not discard unfinished load; the janitor will")
            }
        }
    })
}

/// One database write in flight while the next part is received.
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
