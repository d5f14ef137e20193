//! One database layer for SQLite (the embedded default) and PostgreSQL (production, several
//! replicas), chosen once from the URL.
//!
//! Queries are written once against [`DbConnection`], a diesel `MultiConnection` (hot ones
//! run on the concrete connection through [`with_backend!`](crate::with_backend), where
//! diesel's statement cache avoids writing the SQL again). Database work never runs on the
//! async runtime: [`Database::run`] queues it for at most `pool_size` drainers on the
//! blocking pool.

use std::{fmt, path::PathBuf, sync::Arc, time::Duration};

use diesel::{
    connection::{AnsiTransactionManager, SimpleConnection, TransactionManager},
    prelude::*,
    r2d2::R2D2Connection,
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness};

/// A connection to either backend. Queries written against it serve both.
#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    /// PostgreSQL.
    Pg(PgConnection),
    /// SQLite.
    Sqlite(SqliteConnection),
}

impl fmt::Debug for DbConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pg(_) => f.write_str("DbConnection::Pg"),
            Self::Sqlite(_) => f.write_str("DbConnection::Sqlite"),
        }
    }
}

/// Which database a URL names.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A `postgres://` or `postgresql://` URL.
    Postgres(String),
    /// An SQLite file.
    Sqlite(PathBuf),
}

/// A URL the server cannot use.
#[derive(Debug, thiserror::Error)]
#[error("invalid database URL {url:?}: {reason}")]
pub struct UrlError {
    url: String,
    reason: &'static str,
}

impl DatabaseUrl {
    /// `postgres://…` and `postgresql://…` name PostgreSQL; `sqlite://PATH`, `sqlite:PATH` and
    /// a plain path name an SQLite file.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let url = url.trim();
        let err = |reason| UrlError {
            url: url.to_owned(),
            reason,
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(url.to_owned()));
        }
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        if path.is_empty() {
            return Err(err("empty path"));
        }
        if path == ":memory:" {
            return Err(err(
                "an in-memory SQLite database would be private to each pooled connection; use a file",
            ));
        }
        if url.contains("://") && !url.starts_with("sqlite://") {
            return Err(err(
                "unknown scheme; use postgres://, postgresql://, sqlite:// or a plain path",
            ));
        }
        Ok(Self::Sqlite(PathBuf::from(path)))
    }

    /// The `db.system.name` and `db.namespace` of its spans (the database's name; SQLite:
    /// the file's name).
    fn span_names(&self) -> SpanNames {
        match self {
            Self::Postgres(url) => {
                let path = url.split_once("://").map_or("", |(_, rest)| rest);
                let path = path.split_once('/').map_or("", |(_, db)| db);
                let name = path.split(['?', '#']).next().unwrap_or_default();
                SpanNames {
                    system: "postgresql",
                    namespace: if name.is_empty() { "postgres" } else { name }.to_owned(),
                }
            }
            Self::Sqlite(path) => SpanNames {
                system: "sqlite",
                namespace: path.file_name().map_or_else(
                    || path.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                ),
            },
        }
    }

    /// Which backend, for logs and metrics.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::Sqlite(_) => "sqlite",
        }
    }
}

/// Shown without the password.
impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            Self::Postgres(url) => {
                // postgres://user:password@host/db → postgres://user:***@host/db
                match (url.find("://"), url.rfind('@')) {
                    (Some(scheme_end), Some(at)) if at > scheme_end => {
                        let userinfo = &url[scheme_end + 3..at];
                        match userinfo.split_once(':') {
                            Some((user, _)) => {
                                write!(f, "{}{user}:***{}", &url[..scheme_end + 3], &url[at..])
                            }
                            None => f.write_str(url),
                        }
                    }
                    _ => f.write_str(url),
                }
            }
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// How long SQLite waits for a lock held by another connection before giving up.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 5_000;

/// Opens connections of the right kind and prepares them (SQLite pragmas on connect).
#[derive(Debug, Clone)]
struct Manager {
    url: DatabaseUrl,
}

impl r2d2::ManageConnection for Manager {
    type Connection = DbConnection;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<DbConnection, Self::Error> {
        match &self.url {
            DatabaseUrl::Postgres(url) => PgConnection::establish(url)
                .map(DbConnection::Pg)
                .map_err(diesel::r2d2::Error::ConnectionError),
            DatabaseUrl::Sqlite(path) => {
                let path = path.to_string_lossy();
                let mut conn = SqliteConnection::establish(&path)
                    .map_err(diesel::r2d2::Error::ConnectionError)?;
                // WAL lets readers go on while a writer writes; NORMAL is durable in WAL mode
                // except for the last transactions on power loss, never corrupt. The page
                // cache stays SQLite's default (2 MiB per connection), and pages it misses come
                // from the operating system's cache: a larger cache did not read faster yet
                // costs memory per connection, and a memory map's pages count in the
                // process's memory as the database grows (BENCHMARKS.md has the figures).
                conn.batch_execute(&format!(
                    "PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS};
                     PRAGMA journal_mode = WAL;
                     PRAGMA synchronous = NORMAL;
                     PRAGMA foreign_keys = ON;"
                ))
                .map_err(diesel::r2d2::Error::QueryError)?;
                Ok(DbConnection::Sqlite(conn))
            }
        }
    }

    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), Self::Error> {
        conn.ping()
            .map(|_| ())
            .map_err(diesel::r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut DbConnection) -> bool {
        conn.is_broken()
    }
}

/// Errors of the database layer itself (not of a query's business rules).
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection could be had in time: the database is down or overloaded.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Every permit was taken for longer than the acquire timeout.
    #[error("database busy: no connection free within {0:?}")]
    Busy(Duration),
    /// A query failed.
    #[error("database error: {0}")]
    Query(#[from] diesel::result::Error),
    /// Migrations failed.
    #[error("database migration failed: {0}")]
    Migration(String),
}

/// Settings of the pool.
#[derive(Debug, Clone)]
pub struct DbConfig {
    /// Where the database is.
    pub url: DatabaseUrl,
    /// Connections in the pool, which is also how many database tasks run at once.
    pub pool_size: u32,
    /// How long a request waits for a connection before it is answered UNAVAILABLE.
    pub acquire_timeout: Duration,
}

/// The migrations of one service, for each backend, and the key that serialises them.
#[derive(Debug, Clone, Copy)]
pub struct Migrations {
    /// `migrations/sqlite` (a function because embedded migrations are consumed by value).
    pub sqlite: fn() -> EmbeddedMigrations,
    /// `migrations/postgres`.
    pub postgres: fn() -> EmbeddedMigrations,
    /// PostgreSQL advisory-lock key held while migrating, so that replicas starting together
    /// migrate one after the other.
    pub lock_key: i64,
}

/// A pooled database with a bounded number of concurrent tasks.
///
/// Work is queued and run by at most `pool_size` drainers on the blocking pool. A drainer
/// checks out one connection and runs queued work until the queue is empty: under load one
/// `spawn_blocking` and one checkout serve many calls, instead of a thread hand-off (and its
/// context switches) for every call.
#[derive(Clone)]
pub struct Database {
    pool: r2d2::Pool<Manager>,
    /// Background maintenance (pruning, cleaning up abandoned loads): a thread and a
    /// connection of its own, so that it never takes a connection or a worker a request needs.
    maintenance: Arc<Lane>,
    /// The writes of daily loads: likewise, on a lane of their own (so that a long prune does
    /// not hold up a load, nor a load a prune).
    bulk: Arc<Lane>,
    /// SQLite: the queue of this process's writers (see [`WriteQueue`]).
    writes: Option<Arc<WriteQueue>>,
    work: Arc<WorkQueue>,
    acquire_timeout: Duration,
    url: Arc<DatabaseUrl>,
    spans: Arc<SpanNames>,
}

/// What the spans of database work are called (OpenTelemetry database conventions).
#[derive(Debug)]
struct SpanNames {
    system: &'static str,
    namespace: String,
}

impl SpanNames {
    /// The span of one database task (usually one transaction) done for the span `parent`
    /// (captured where the work was asked for, since it runs on another thread); none when
    /// traces are off.
    fn span(&self, parent: Option<&tracing::Span>) -> tracing::Span {
        match parent {
            Some(parent) if !parent.is_none() => tracing::info_span!(
                target: "invest_db",
                parent: parent,
                "db",
                otel.name = %self.namespace,
                otel.kind = "client",
                db.system.name = self.system,
                db.namespace = %self.namespace,
            ),
            _ => tracing::Span::none(),
        }
    }
}

/// The current span, when traces are on (the parent of database work asked for now).
fn traced_parent() -> Option<tracing::Span> {
    crate::telemetry::trace::enabled().then(tracing::Span::current)
}

/// One call's work, type-erased; it answers through its own channel. It gets the connection,
/// or why there is none.
type Job = Box<dyn FnOnce(Result<&mut DbConnection, &str>) + Send>;

struct Queued {
    job: Job,
    /// Past this moment the caller has been answered Busy: skip the work.
    deadline: std::time::Instant,
    /// When it was asked for (the wait for a connection is measured from here).
    queued_at: std::time::Instant,
}

#[derive(Default)]
struct WorkState {
    queue: std::collections::VecDeque<Queued>,
    drainers: usize,
}

struct WorkQueue {
    state: std::sync::Mutex<WorkState>,
    max_drainers: usize,
    metrics: PoolMetrics,
}

/// What an operator watches of the request pool (`db_pool_*`): tasks holding a connection,
/// tasks waiting for one, and how long they waited.
struct PoolMetrics {
    in_use: metrics::Gauge,
    waiting: metrics::Gauge,
    wait: metrics::Histogram,
}

impl PoolMetrics {
    fn new(size: u32) -> Self {
        metrics::gauge!("db_pool_connections_max").set(f64::from(size));
        Self {
            in_use: metrics::gauge!("db_pool_connections_in_use"),
            waiting: metrics::gauge!("db_pool_waiting"),
            wait: metrics::histogram!("db_pool_wait_seconds"),
        }
    }

    fn observe(&self, state: &WorkState) {
        self.in_use.set(state.drainers as f64);
        self.waiting.set(state.queue.len() as f64);
    }
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Database").field("url", &self.url).finish()
    }
}

impl Database {
    /// Opens the pool and brings the schema up to date. Blocking: call it from
    /// `spawn_blocking` or before the runtime serves requests.
    pub fn open(config: &DbConfig, migrations: &Migrations) -> Result<Self, DbError> {
        let pool_size = config.pool_size.max(1);
        let manager = Manager {
            url: config.url.clone(),
        };
        // Migrate on a dedicated connection before the pool exists, so that no pooled
        // connection has seen the old schema.
        let mut conn = r2d2::ManageConnection::connect(&manager)
            .map_err(|e| DbError::Unavailable(e.to_string()))?;
        migrate(&mut conn, migrations)?;
        drop(conn);
        let pool = r2d2::Pool::builder()
            .max_size(pool_size)
            .min_idle(Some(pool_size.min(2)))
            .connection_timeout(config.acquire_timeout)
            .test_on_check_out(false)
            .build(manager.clone())
            .map_err(|e| DbError::Unavailable(e.to_string()))?;
        // Connects when first used, and again after a failure. One task at a time uses it; one
        // that cannot have it within the acquire timeout fails, and the janitor tries again on
        // its next round.
        let lane_pool = || {
            r2d2::Pool::builder()
                .max_size(1)
                .min_idle(Some(0))
                .connection_timeout(config.acquire_timeout)
                .build_unchecked(manager.clone())
        };
        let writes = matches!(config.url, DatabaseUrl::Sqlite(_)).then(Arc::default);
        let spans = Arc::new(config.url.span_names());
        Ok(Self {
            pool,
            maintenance: Arc::new(Lane::new(
                "db-maintenance",
                lane_pool(),
                writes.clone(),
                spans.clone(),
            )),
            bulk: Arc::new(Lane::new(
                "db-bulk",
                lane_pool(),
                writes.clone(),
                spans.clone(),
            )),
            writes,
            work: Arc::new(WorkQueue {
                state: std::sync::Mutex::new(WorkState::default()),
                max_drainers: pool_size as usize,
                metrics: PoolMetrics::new(pool_size),
            }),
            acquire_timeout: config.acquire_timeout,
            url: Arc::new(config.url.clone()),
            spans,
        })
    }

    /// The URL, for logs (the password is hidden by `Display`).
    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    /// Runs `work` with a pooled connection on the blocking pool. Work waiting longer than
    /// the acquire timeout for a connection is answered [`DbError::Busy`] (and never runs); a
    /// connection that cannot be had is [`DbError::Unavailable`]. A panic in `work` is
    /// re-raised here rather than hidden.
    pub async fn run<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        type Outcome<T, E> = std::thread::Result<Result<T, E>>;
        let (tx, rx) = tokio::sync::oneshot::channel::<Outcome<T, E>>();
        let (parent, spans) = (traced_parent(), self.spans.clone());
        let job: Job = Box::new(move |conn| {
            let _span = spans.span(parent.as_ref()).entered();
            let outcome = match conn {
                Ok(conn) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(conn))),
                Err(reason) => Ok(Err(E::from(DbError::Unavailable(reason.to_owned())))),
            };
            let _ = tx.send(outcome);
        });
        let queued_at = std::time::Instant::now();
        let deadline = queued_at + self.acquire_timeout;
        self.enqueue(Queued {
            job,
            deadline,
            queued_at,
        });
        match rx.await {
            Ok(Ok(result)) => result,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            // The job was dropped unrun: it waited past the acquire timeout.
            Err(_) => Err(DbError::Busy(self.acquire_timeout).into()),
        }
    }

    /// Runs background `work` on the maintenance thread with the maintenance connection (both
    /// apart from what requests use). Callers take turns.
    pub async fn maintain<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        self.maintenance.run(work).await
    }

    /// Runs a daily load's `work` (a batch of rows) on the bulk thread with its connection
    /// (both apart from what requests and maintenance use), at the same lower priority as
    /// maintenance. Callers take turns.
    pub async fn bulk<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        self.bulk.run(work).await
    }

    fn enqueue(&self, queued: Queued) {
        let spawn = {
            let mut state = self.work.state.lock().unwrap_or_else(|p| p.into_inner());
            state.queue.push_back(queued);
            let spawn = state.drainers < self.work.max_drainers;
            if spawn {
                state.drainers += 1;
            }
            self.work.metrics.observe(&state);
            spawn
        };
        if spawn {
            let (pool, work, writes) = (self.pool.clone(), self.work.clone(), self.writes.clone());
            tokio::task::spawn_blocking(move || {
                let _queue = WriteScope::enter(writes);
                drain(&pool, &work)
            });
        }
    }
}

/// A background lane (maintenance, bulk loads): one thread running one job at a time with
/// the lane's connection, at a lower CPU priority than the threads that answer requests (nice
/// 10 on Linux), so that on a busy machine a prune or a load yields the processor to reads and
/// deposits instead of sharing it evenly. It is a thread of its own because a thread cannot
/// get its priority back without privileges, so no thread that serves requests may ever be
/// lowered.
struct Lane {
    name: &'static str,
    pool: r2d2::Pool<Manager>,
    jobs: std::sync::Mutex<Option<std::sync::mpsc::Sender<LaneJob>>>,
    writes: Option<Arc<WriteQueue>>,
    spans: Arc<SpanNames>,
}

impl Lane {
    fn new(
        name: &'static str,
        pool: r2d2::Pool<Manager>,
        writes: Option<Arc<WriteQueue>>,
        spans: Arc<SpanNames>,
    ) -> Self {
        Self {
            name,
            pool,
            jobs: std::sync::Mutex::new(None),
            writes,
            spans,
        }
    }

    /// Runs `work` on the lane with its connection; a panic in `work` is re-raised here.
    async fn run<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        type Outcome<T, E> = std::thread::Result<Result<T, E>>;
        let (tx, rx) = tokio::sync::oneshot::channel::<Outcome<T, E>>();
        let pool = self.pool.clone();
        let (parent, spans) = (traced_parent(), self.spans.clone());
        let job: LaneJob = Box::new(move || {
            let _span = spans.span(parent.as_ref()).entered();
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match pool.get() {
                    Ok(mut conn) => work(&mut conn),
                    Err(e) => Err(E::from(DbError::Unavailable(e.to_string()))),
                }));
            let _ = tx.send(outcome);
        });
        let stopped = || {
            E::from(DbError::Unavailable(format!(
                "the {} thread has stopped",
                self.name
            )))
        };
        if self.send(job).is_err() {
            return Err(stopped());
        }
        match rx.await {
            Ok(Ok(result)) => result,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => Err(stopped()),
        }
    }

    /// Queues a job, starting the thread on first use.
    fn send(&self, job: LaneJob) -> Result<(), ()> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        if jobs.is_none() {
            let (tx, rx) = std::sync::mpsc::channel::<LaneJob>();
            let writes = self.writes.clone();
            std::thread::Builder::new()
                .name(self.name.into())
                .spawn(move || {
                    lower_priority();
                    let _queue = WriteScope::enter(writes);
                    while let Ok(job) = rx.recv() {
                        job();
                    }
                })
                .map_err(|e| tracing::error!(error = %e, lane = self.name, "cannot start a database thread"))?;
            *jobs = Some(tx);
        }
        match jobs.as_ref() {
            Some(tx) => tx.send(job).map_err(|_| ()),
            None => Err(()),
        }
    }
}

/// A job of a lane's thread.
type LaneJob = Box<dyn FnOnce() + Send>;

/// Lowers the calling thread's CPU priority (Linux: the nice value is per thread).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain system calls on the calling thread, no memory is shared with them.
        let result = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, LANE_NICE)
        };
        if result != 0 {
            tracing::debug!("cannot lower a database thread's priority; it runs at the default");
        }
    }
}

/// The lanes' nice value: under contention a lane's thread gets about a tenth of what a
/// request thread gets; on an idle machine, all of it.
#[cfg(target_os = "linux")]
const LANE_NICE: libc::c_int = 10;

/// Runs queued work on one connection until the queue is empty. Taking the next job and
/// retiring the drainer happen under the queue's lock, so no job is ever left without one.
fn drain(pool: &r2d2::Pool<Manager>, work: &WorkQueue) {
    let mut conn: Option<r2d2::PooledConnection<Manager>> = None;
    loop {
        let next = {
            let mut state = work.state.lock().unwrap_or_else(|p| p.into_inner());
            let next = state.queue.pop_front();
            if next.is_none() {
                state.drainers -= 1;
            }
            work.metrics.observe(&state);
            match next {
                Some(next) => next,
                None => return,
            }
        };
        work.metrics
            .wait
            .record(next.queued_at.elapsed().as_secs_f64());
        if std::time::Instant::now() > next.deadline {
            // Dropping the job drops its sender: the caller sees Busy.
            drop(next);
            continue;
        }
        if conn.as_mut().is_some_and(|c| c.is_broken()) {
            conn = None;
        }
        let reason = if conn.is_none() {
            match pool.get() {
                Ok(fresh) => {
                    conn = Some(fresh);
                    String::new()
                }
                Err(e) => e.to_string(),
            }
        } else {
            String::new()
        };
        match conn.as_deref_mut() {
            Some(c) => (next.job)(Ok(c)),
            None => (next.job)(Err(&reason)),
        }
    }
}

/// SQLite lets one writer in at a time and makes the others poll under the busy timeout,
/// sleeping longer between tries the longer they wait (up to 100 ms): a write could wait far
/// longer than the transaction ahead of it takes, or lose the lock again and again to a writer
/// that comes straight back (a load's next batch, a prune's next batch). The writers of one
/// process queue here instead, first come, first served, so a write waits for the
/// transactions queued before it and no longer. (Another process's writers still meet the
/// busy timeout; one process per database file is the supported setup.)
#[derive(Debug, Default)]
struct WriteQueue {
    /// (next ticket to hand out, ticket whose turn it is).
    tickets: std::sync::Mutex<(u64, u64)>,
    turn: std::sync::Condvar,
}

impl WriteQueue {
    fn wait_turn(&self) {
        let mut tickets = self.tickets.lock().unwrap_or_else(|p| p.into_inner());
        let mine = tickets.0;
        tickets.0 += 1;
        while tickets.1 != mine {
            tickets = self.turn.wait(tickets).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn done(&self) {
        let mut tickets = self.tickets.lock().unwrap_or_else(|p| p.into_inner());
        tickets.1 += 1;
        self.turn.notify_all();
    }
}

thread_local! {
    /// The write queue of the database whose work this thread runs, and whether this thread
    /// holds its turn now (a write transaction inside another does not queue again).
    static WRITES: std::cell::RefCell<(Option<Arc<WriteQueue>>, bool)> =
        const { std::cell::RefCell::new((None, false)) };
}

/// Sets the write queue of this thread while database work runs on it.
struct WriteScope;

impl WriteScope {
    fn enter(queue: Option<Arc<WriteQueue>>) -> Self {
        WRITES.with(|w| *w.borrow_mut() = (queue, false));
        Self
    }
}

impl Drop for WriteScope {
    fn drop(&mut self) {
        WRITES.with(|w| *w.borrow_mut() = (None, false));
    }
}

/// This thread's turn to write, released when dropped (also when the work panics).
struct WriteTurn(Option<Arc<WriteQueue>>);

impl WriteTurn {
    fn take() -> Self {
        let queue = WRITES.with(|w| {
            let mut w = w.borrow_mut();
            match &w.0 {
                Some(queue) if !w.1 => {
                    let queue = queue.clone();
                    w.1 = true;
                    Some(queue)
                }
                _ => None,
            }
        });
        if let Some(queue) = &queue {
            queue.wait_turn();
        }
        Self(queue)
    }
}

impl Drop for WriteTurn {
    fn drop(&mut self) {
        if let Some(queue) = self.0.take() {
            WRITES.with(|w| w.borrow_mut().1 = false);
            queue.done();
        }
    }
}

/// Runs `work` in a write transaction. On SQLite the writers of this process take turns
/// first ([`WriteQueue`]), and the transaction starts with `BEGIN IMMEDIATE`, so it takes the
/// write lock up front (waiting for it under the busy timeout) instead of failing when a read
/// turns into a write.
pub fn write_transaction<T, E, F>(conn: &mut DbConnection, work: F) -> Result<T, E>
where
    F: FnOnce(&mut DbConnection) -> Result<T, E>,
    E: From<diesel::result::Error>,
{
    let _turn;
    match conn {
        DbConnection::Sqlite(c) => {
            _turn = WriteTurn::take();
            AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE")?
        }
        DbConnection::Pg(c) => AnsiTransactionManager::begin_transaction(c)?,
    }
    finish_transaction(conn, work)
}

/// Runs `work` in the transaction just begun; commits if it succeeds, else rolls back.
fn finish_transaction<T, E, F>(conn: &mut DbConnection, work: F) -> Result<T, E>
where
    F: FnOnce(&mut DbConnection) -> Result<T, E>,
    E: From<diesel::result::Error>,
{
    match work(conn) {
        Ok(value) => match DbConnection::commit_transaction(conn) {
            Ok(()) => Ok(value),
            Err(e) => {
                let _ = DbConnection::rollback_transaction(conn);
                Err(e.into())
            }
        },
        Err(e) => {
            // The caller's error is what matters; a failed rollback marks the connection
            // broken and the pool discards it.
            let _ = DbConnection::rollback_transaction(conn);
            Err(e)
        }
    }
}

/// Applies pending migrations, one replica at a time.
fn migrate(conn: &mut DbConnection, migrations: &Migrations) -> Result<(), DbError> {
    let fail = |e: Box<dyn std::error::Error + Send + Sync>| DbError::Migration(e.to_string());
    match conn {
        DbConnection::Pg(c) => {
            // A session-level advisory lock: a replica that starts at the same time waits here
            // and then finds nothing left to do. The lock dies with the session if we crash.
            c.batch_execute(&format!("SELECT pg_advisory_lock({})", migrations.lock_key))?;
            let result = c
                .run_pending_migrations((migrations.postgres)())
                .map(|_| ())
                .map_err(fail);
            let unlock = c.batch_execute(&format!(
                "SELECT pg_advisory_unlock({})",
                migrations.lock_key
            ));
            result?;
            unlock?;
        }
        DbConnection::Sqlite(c) => {
            // One IMMEDIATE transaction around all migrations: a second process waits for the
            // write lock, then sees them applied. SQLite DDL is transactional.
            AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE")?;
            match c.run_pending_migrations((migrations.sqlite)()) {
                Ok(_) => AnsiTransactionManager::commit_transaction(c)?,
                Err(e) => {
                    let _ = AnsiTransactionManager::rollback_transaction(c);
                    return Err(fail(e));
                }
            }
        }
    }
    Ok(())
}

/// Whether a diesel error means "the database is not reachable or not healthy" (as opposed to
/// a rule of ours), so that it becomes UNAVAILABLE.
pub fn is_unavailable(err: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    match err {
        Error::DatabaseError(kind, info) => {
            matches!(
                kind,
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::SerializationFailure
            ) || info.message().contains("database is locked")
                || info.message().contains("server closed the connection")
        }
        Error::BrokenTransactionManager | Error::AlreadyInTransaction => true,
        _ => false,
    }
}

/// A database that answers but cannot store what it is asked to: an operator must act (free
/// disk space, make the file or the server writable), and the caller may retry later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageProblem {
    /// The disk (or SQLite's page limit) is full.
    Full,
    /// The database file, the file system or the server (a hot standby, or
    /// `default_transaction_read_only`) refuses writes.
    ReadOnly,
    /// The storage failed to read or write.
    Io,
}

impl StorageProblem {
    /// `ErrorInfo.reason` of the UNAVAILABLE answer.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Full => "DATABASE_FULL",
            Self::ReadOnly => "DATABASE_READ_ONLY",
            Self::Io => "DATABASE_IO_ERROR",
        }
    }

    /// What the caller is told.
    pub fn message(self) -> &'static str {
        match self {
            Self::Full => "the database's storage is full; nothing was changed; retry later",
            Self::ReadOnly => {
                "the database refuses writes right now; nothing was changed; retry later"
            }
            Self::Io => "the database's storage failed; nothing was changed; retry later",
        }
    }
}

/// Whether a diesel error is a [`StorageProblem`]. SQLite reports them only in its message
/// (`SQLITE_FULL`, `SQLITE_READONLY`, `SQLITE_IOERR`, `SQLITE_CANTOPEN`); PostgreSQL as
/// `read_only_sql_transaction` (25006) or in the message of `disk_full` (53100) and I/O errors.
pub fn storage_problem(err: &diesel::result::Error) -> Option<StorageProblem> {
    use diesel::result::{DatabaseErrorKind, Error};
    let Error::DatabaseError(kind, info) = err else {
        return None;
    };
    if matches!(kind, DatabaseErrorKind::ReadOnlyTransaction) {
        return Some(StorageProblem::ReadOnly);
    }
    let message = info.message().to_ascii_lowercase();
    if message.contains("database or disk is full")
        || message.contains("no space left on device")
        || message.contains("disk quota exceeded")
    {
        Some(StorageProblem::Full)
    } else if message.contains("readonly database")
        || message.contains("read-only transaction")
        || message.contains("read-only file system")
    {
        Some(StorageProblem::ReadOnly)
    } else if message.contains("disk i/o error")
        || message.contains("unable to open database file")
        || message.contains("could not write to file")
        || message.contains("could not extend file")
        || message.contains("could not read block")
    {
        Some(StorageProblem::Io)
    } else {
        None
    }
}

/// Runs the same diesel code against the concrete connection of either backend, for the few
/// statements `MultiConnection` cannot express (`RETURNING`, `ON CONFLICT`, `COPY`). The body
/// is type-checked once per backend.
#[macro_export]
macro_rules! with_backend {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            $crate::db::DbConnection::Pg($c) => $body,
            $crate::db::DbConnection::Sqlite($c) => $body,
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writers are served in the order they asked: each waiter below queues only once the
    /// previous one has its ticket, and the order they get their turn is recorded.
    #[test]
    fn writers_take_turns_first_come_first_served() {
        let queue = Arc::new(WriteQueue::default());
        queue.wait_turn(); // the writer now writing
        let served = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for n in 1..=5u64 {
            let (mine, served) = (queue.clone(), served.clone());
            waiters.push(std::thread::spawn(move || {
                mine.wait_turn();
                served.lock().unwrap().push(n);
                mine.done();
            }));
            // Until this waiter holds ticket n, start no other.
            while queue.tickets.lock().unwrap().0 <= n {
                std::thread::yield_now();
            }
        }
        assert!(
            served.lock().unwrap().is_empty(),
            "nobody writes out of turn"
        );
        queue.done();
        for waiter in waiters {
            waiter.join().unwrap();
        }
        assert_eq!(*served.lock().unwrap(), [1, 2, 3, 4, 5]);
    }

    /// Maintenance runs on its own thread, at a lower CPU priority than the rest.
    #[cfg(target_os = "linux")]
    #[test]
    fn maintenance_runs_on_a_thread_of_its_own_at_a_lower_priority() {
        let dir = tempfile::tempdir().unwrap();
        let manager = Manager {
            url: DatabaseUrl::Sqlite(dir.path().join("maintenance.db")),
        };
        let spans = Arc::new(manager.url.span_names());
        let pool = r2d2::Pool::builder()
            .max_size(1)
            .min_idle(Some(0))
            .build_unchecked(manager);
        let maintenance = Lane::new("db-maintenance", pool, None, spans);
        let nice = || {
            // SAFETY: reads the calling thread's nice value.
            unsafe {
                libc::getpriority(
                    libc::PRIO_PROCESS,
                    libc::syscall(libc::SYS_gettid) as libc::id_t,
                )
            }
        };
        let (tx, rx) = std::sync::mpsc::channel();
        maintenance
            .send(Box::new(move || {
                let name = std::thread::current().name().map(str::to_owned);
                tx.send((nice(), name)).unwrap();
            }))
            .unwrap();
        let (theirs, name) = rx.recv().unwrap();
        assert_eq!(name.as_deref(), Some("db-maintenance"));
        assert!(theirs >= LANE_NICE, "nice {theirs}");
        assert!(nice() < LANE_NICE, "the caller's thread is not lowered");
    }

    /// A write transaction inside another on the same thread does not queue behind itself.
    #[test]
    fn a_nested_write_keeps_its_turn() {
        let queue = Arc::new(WriteQueue::default());
        let _scope = WriteScope::enter(Some(queue.clone()));
        let outer = WriteTurn::take();
        let inner = WriteTurn::take();
        assert!(inner.0.is_none());
        drop(inner);
        drop(outer);
        assert_eq!(*queue.tickets.lock().unwrap(), (1, 1));
    }

    #[test]
    fn urls() {
        assert_eq!(
            DatabaseUrl::parse("sqlite://data/p.db").unwrap(),
            DatabaseUrl::Sqlite("data/p.db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("/var/lib/p.db").unwrap(),
            DatabaseUrl::Sqlite("/var/lib/p.db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("postgres://u@h/d").unwrap().backend(),
            "postgres"
        );
        assert_eq!(
            DatabaseUrl::parse("postgresql://u@h/d").unwrap().backend(),
            "postgres"
        );
        assert!(DatabaseUrl::parse("mysql://h/d").is_err());
        assert!(DatabaseUrl::parse("").is_err());
        assert!(DatabaseUrl::parse(":memory:").is_err());
        assert_eq!(
            DatabaseUrl::parse("postgres://app:s3cret@db:5432/invest")
                .unwrap()
                .to_string(),
            "postgres://app:***@db:5432/invest"
        );
    }
}
