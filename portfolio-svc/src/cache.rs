//! The current snapshot in memory: reads answered on the async runtime, without a database
//! round trip, and never staler than a stated bound on any replica.
//!
//! # What is kept
//!
//! A snapshot is immutable once current, so what a read needs of it can be kept as long as it
//! stays current: an account's row, its holdings (up to [`HOLDINGS_KEPT_MAX`]), a customer's
//! account numbers (up to [`ACCOUNTS_KEPT_MAX`]). Only the deposits confirmed after the
//! snapshot (the overlay) change; they are kept per account too and dropped whenever a deposit
//! to the account is applied anywhere. Everything lives in one bounded cache
//! (`quick_cache`, S3-FIFO), weighed in bytes against the budget
//! (`--read-cache-bytes`): a day of a million accounts keeps only the accounts that are read,
//! as many as fit. A miss reads the database on the blocking pool (index searches only, see
//! `tests/plans.rs`) and fills the cache.
//!
//! Entries belong to a *generation*: one per current snapshot (and a new one after the
//! listener reconnects). A switch starts a new generation and empties the cache, so a read,
//! which takes everything from one generation, never mixes two snapshots. A miss reads the
//! database pinned to the generation's snapshot, never "whatever is current now".
//!
//! # Fresh on every replica
//!
//! On SQLite there is one process: the handlers that change what readers see (ApplyDeposit,
//! the flip of a load) update the cache themselves, before they answer.
//!
//! On PostgreSQL other replicas change the data too. Each replica listens on the channel
//! `invest_portfolio` on a connection of its own ([`spawn_listener`]); triggers on
//! `ledger_deposits` and `current_snapshot` send `NOTIFY` inside the writing transaction, so
//! a notification exists exactly when the change committed, whoever wrote it (also a replica
//! of the previous version during a rolling update). Why `LISTEN`/`NOTIFY` and not a version
//! row polled every few milliseconds: the notification names what changed (one account, not
//! "something"), so a deposit drops one entry instead of the whole cache; it costs nothing
//! while nothing changes; and PostgreSQL delivers notifications in commit order, which is what
//! makes the bound below provable.
//!
//! The bound: every [`HEARTBEAT`] the listener notifies the channel itself and notes when it
//! sent it. When its own heartbeat comes back, every notification of a transaction that
//! committed before that heartbeat was sent has already been received and applied (commit
//! order). So the cache reflects every change committed before `fresh_as_of`, and a read is
//! answered from memory only while `now - fresh_as_of < staleness` (`--read-staleness`,
//! default 1 s): a deposit confirmed on any replica is seen by every replica within that
//! bound, usually within milliseconds. A replica that loses its listening connection (or
//! whose listener stalls) stops being sure within the bound and answers from the database
//! until it is sure again; after a reconnect it starts a new generation, because
//! notifications sent while it was away are lost.
//!
//! # Races between a miss and an invalidation
//!
//! A miss that reads an overlay from the database and a deposit's invalidation can cross: the
//! miss may read before the deposit committed and store after the invalidation ran. Overlays
//! are therefore stored with a ticket: the epoch of the account's stripe taken before the
//! read. An invalidation bumps the stripe's epoch, then removes the entry; a fill stores, then
//! checks the epoch and removes what it stored if the epoch moved. Whichever order the two
//! take, a stale overlay does not stay.

use std::{
    hash::{BuildHasher, Hash},
    sync::{
        Arc, Mutex, RwLock, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use invest_runtime::db::DbConnection;

use crate::store::read::{AccountRow, HoldingRow, SnapshotRef};

/// How often the listener proves it is up to date.
pub const HEARTBEAT: Duration = Duration::from_millis(100);

/// How often the listener polls its connection for notifications (a non-blocking read).
const POLL: Duration = Duration::from_millis(2);

/// Accounts with more holdings than this are read from the database page by page.
pub const HOLDINGS_KEPT_MAX: usize = 1_000;

/// Customers with more accounts than this are listed from the database page by page.
pub const ACCOUNTS_KEPT_MAX: usize = 1_000;

/// The channel the triggers notify (see migration `2026-12-02-000005_running_sums`).
pub const CHANNEL: &str = "invest_portfolio";

const STRIPES: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Account(u64, Box<str>),
    Holdings(u64, Box<str>),
    Owner(u64, Box<str>),
    Overlay(u64, Box<str>),
    Cash(u64, Box<str>),
}

#[derive(Debug, Clone)]
enum Value {
    Account(Arc<AccountRow>),
    Holdings(Arc<[CachedHolding]>),
    Owner(Arc<[Box<str>]>),
    Overlay(i64),
    Cash(CashHeld),
}

/// An account's `CASH` valuation in the generation's snapshot and what its pending
/// withdrawals hold: with the overlay, its available cash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CashHeld {
    /// The `CASH` valuation in the snapshot (0 without a `CASH` holding).
    pub valuation: i64,
    /// Held by pending withdrawals.
    pub held: i64,
}

/// Weighs entries in bytes: what they hold on the heap plus a fixed cost per entry for the
/// cache's own bookkeeping and the allocations' headers.
#[derive(Debug, Clone, Copy)]
struct Bytes;

const ENTRY_OVERHEAD: u64 = 96;

impl quick_cache::Weighter<Key, Value> for Bytes {
    fn weight(&self, key: &Key, value: &Value) -> u64 {
        let key = match key {
            Key::Account(_, k)
            | Key::Holdings(_, k)
            | Key::Owner(_, k)
            | Key::Overlay(_, k)
            | Key::Cash(_, k) => k.len(),
        };
        let value = match value {
            Value::Account(row) => {
                std::mem::size_of::<AccountRow>()
                    + row.account_number.len()
                    + row.customer_name.len()
                    + row.brokerage.len()
                    + row.account_name.len()
            }
            // The instruments themselves are shared by the generation (see `Generation`).
            Value::Holdings(rows) => rows.len() * std::mem::size_of::<CachedHolding>(),
            Value::Owner(numbers) => numbers.iter().map(|n| 16 + n.len()).sum(),
            Value::Overlay(_) => 8,
            Value::Cash(_) => 16,
        };
        ENTRY_OVERHEAD + key as u64 + value as u64
    }
}

/// An instrument of the snapshot, shared by every kept holding of it.
#[derive(Debug, PartialEq, Eq)]
pub struct Instrument {
    /// ISIN or `CASH`.
    pub isin: Box<str>,
    /// Name.
    pub name: Box<str>,
    /// Asset class.
    pub asset_group: Box<str>,
}

/// A kept holding: 32 bytes, its instrument shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedHolding {
    /// The instrument.
    pub instrument: Arc<Instrument>,
    /// Units.
    pub quantity: i64,
    /// Won per unit.
    pub current_price: i64,
    /// Won.
    pub valuation: i64,
}

impl CachedHolding {
    /// As the read path returns it.
    pub fn to_row(&self) -> HoldingRow {
        HoldingRow {
            isin: self.instrument.isin.to_string(),
            name: self.instrument.name.to_string(),
            asset_group: self.instrument.asset_group.to_string(),
            quantity: self.quantity,
            current_price: self.current_price,
            valuation: self.valuation,
        }
    }
}

/// The snapshot a generation serves.
#[derive(Debug)]
pub struct Generation {
    number: u64,
    /// The current snapshot when the generation started.
    pub snapshot: SnapshotRef,
    /// Name and asset group of the snapshot's `CASH` instrument, if its master has one.
    pub cash: Option<(String, String)>,
    /// The instruments of kept holdings, each once. Outside the byte budget, and bounded by
    /// the day's instrument master (which the loader bounds), whatever the number of accounts.
    instruments: Mutex<std::collections::HashMap<Box<str>, Arc<Instrument>>>,
}

impl Generation {
    fn intern(&self, row: &HoldingRow) -> Arc<Instrument> {
        let mut instruments = self.instruments.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = instruments.get(row.isin.as_str())
            && *known.name == *row.name
            && *known.asset_group == *row.asset_group
        {
            return known.clone();
        }
        let instrument = Arc::new(Instrument {
            isin: row.isin.as_str().into(),
            name: row.name.as_str().into(),
            asset_group: row.asset_group.as_str().into(),
        });
        instruments.insert(row.isin.as_str().into(), instrument.clone());
        instrument
    }
}

/// The cache of one replica. See the module documentation.
pub struct ReadCache {
    entries: Option<quick_cache::sync::Cache<Key, Value, Bytes>>,
    budget: u64,
    generation: RwLock<Option<Arc<Generation>>>,
    next_generation: AtomicU64,
    /// Serialises "read the current snapshot, then install it", so that a slower refresh never
    /// installs an older snapshot over a newer one.
    switching: Mutex<()>,
    stripes: Box<[AtomicU64]>,
    freshness: Freshness,
    started: Instant,
}

impl std::fmt::Debug for ReadCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadCache")
            .field("budget", &self.budget)
            .field("freshness", &self.freshness)
            .finish_non_exhaustive()
    }
}

/// Whether the cache can be trusted now.
#[derive(Debug)]
enum Freshness {
    /// One process changes the data, and updates the cache itself (SQLite).
    Local,
    /// Other replicas change it too: trusted while the listener's latest proof is recent.
    Listened {
        /// Nanoseconds since `started` at which the last returned heartbeat was sent; 0: none.
        fresh_as_of: AtomicU64,
        staleness: Duration,
        /// Whether the listener is connected (for the gauge and logs only).
        connected: AtomicBool,
    },
}

/// A ticket taken before reading an overlay from the database (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    stripe: usize,
    epoch: u64,
}

impl ReadCache {
    /// A cache of at most `budget` bytes; `shared`: other processes write the database too
    /// (PostgreSQL), so reads need the listener's proof, no older than `staleness`.
    pub fn new(budget: u64, shared: bool, staleness: Duration) -> Self {
        let entries = (budget > 0).then(|| {
            // quick_cache sizes its tables from an estimate of the number of entries.
            let estimated = usize::try_from(budget / 512).unwrap_or(usize::MAX).max(64);
            quick_cache::sync::Cache::with_weighter(estimated, budget, Bytes)
        });
        Self {
            entries,
            budget,
            generation: RwLock::new(None),
            next_generation: AtomicU64::new(1),
            switching: Mutex::new(()),
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            freshness: if shared {
                Freshness::Listened {
                    fresh_as_of: AtomicU64::new(0),
                    staleness,
                    connected: AtomicBool::new(false),
                }
            } else {
                Freshness::Local
            },
            started: Instant::now(),
        }
    }

    /// The generation reads may use now, if the cache is on and sure it is fresh.
    pub fn generation(&self) -> Option<Arc<Generation>> {
        self.entries.as_ref()?;
        if let Freshness::Listened {
            fresh_as_of,
            staleness,
            ..
        } = &self.freshness
        {
            let proof = fresh_as_of.load(Ordering::Acquire);
            let now = self.nanos();
            if proof == 0 || now.saturating_sub(proof) >= staleness.as_nanos() as u64 {
                metrics::counter!("portfolio_read_cache_requests_total", "result" => "bypass")
                    .increment(1);
                return None;
            }
        }
        self.generation
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn nanos(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    fn get(&self, key: &Key) -> Option<Value> {
        self.entries.as_ref()?.get(key)
    }

    fn put(&self, key: Key, value: Value) {
        if let Some(entries) = &self.entries {
            entries.insert(key, value);
            metrics::gauge!("portfolio_read_cache_bytes").set(entries.weight() as f64);
        }
    }

    /// An account's row in `generation`.
    pub fn account(&self, generation: &Generation, number: &str) -> Option<Arc<AccountRow>> {
        match self.get(&Key::Account(generation.number, number.into()))? {
            Value::Account(row) => Some(row),
            _ => None,
        }
    }

    /// An account's holdings in `generation`, all of them, in ISIN order.
    pub fn holdings(&self, generation: &Generation, number: &str) -> Option<Arc<[CachedHolding]>> {
        match self.get(&Key::Holdings(generation.number, number.into()))? {
            Value::Holdings(rows) => Some(rows),
            _ => None,
        }
    }

    /// A customer's account numbers in `generation`, in order.
    pub fn owner(&self, generation: &Generation, owner: &str) -> Option<Arc<[Box<str>]>> {
        match self.get(&Key::Owner(generation.number, owner.into()))? {
            Value::Owner(numbers) => Some(numbers),
            _ => None,
        }
    }

    /// The deposits to an account confirmed after `generation`'s snapshot.
    pub fn overlay(&self, generation: &Generation, number: &str) -> Option<i64> {
        match self.get(&Key::Overlay(generation.number, number.into()))? {
            Value::Overlay(sum) => Some(sum),
            _ => None,
        }
    }

    /// An account's `CASH` valuation and held cash in `generation`.
    pub fn cash(&self, generation: &Generation, number: &str) -> Option<CashHeld> {
        match self.get(&Key::Cash(generation.number, number.into()))? {
            Value::Cash(cash) => Some(cash),
            _ => None,
        }
    }

    /// Keeps an account's row.
    pub fn keep_account(&self, generation: &Generation, row: AccountRow) {
        let key = Key::Account(generation.number, row.account_number.as_str().into());
        self.put(key, Value::Account(Arc::new(row)));
    }

    /// Keeps an account's holdings (all of them, in ISIN order) and returns them as kept.
    pub fn keep_holdings(
        &self,
        generation: &Generation,
        number: &str,
        rows: &[HoldingRow],
    ) -> Arc<[CachedHolding]> {
        let kept: Arc<[CachedHolding]> = rows
            .iter()
            .map(|row| CachedHolding {
                instrument: generation.intern(row),
                quantity: row.quantity,
                current_price: row.current_price,
                valuation: row.valuation,
            })
            .collect();
        self.put(
            Key::Holdings(generation.number, number.into()),
            Value::Holdings(kept.clone()),
        );
        kept
    }

    /// Keeps a customer's account numbers (all of them).
    pub fn keep_owner(&self, generation: &Generation, owner: &str, numbers: Arc<[Box<str>]>) {
        self.put(
            Key::Owner(generation.number, owner.into()),
            Value::Owner(numbers),
        );
    }

    fn stripe(&self, number: &str) -> usize {
        let hash =
            std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
                .hash_one(number);
        (hash % STRIPES as u64) as usize
    }

    /// Taken before reading an account's overlay from the database.
    pub fn ticket(&self, number: &str) -> Ticket {
        let stripe = self.stripe(number);
        Ticket {
            stripe,
            epoch: self.stripes[stripe].load(Ordering::SeqCst),
        }
    }

    /// Keeps an overlay read from the database after `ticket` was taken, unless a deposit to
    /// an account of the same stripe was applied meanwhile.
    pub fn keep_overlay(&self, generation: &Generation, number: &str, ticket: Ticket, sum: i64) {
        let key = Key::Overlay(generation.number, number.into());
        self.keep_ticketed(key, Value::Overlay(sum), ticket);
    }

    /// Keeps an account's `CASH` valuation and held cash read after `ticket` was taken,
    /// unless its cash changed meanwhile (as [`ReadCache::keep_overlay`]).
    pub fn keep_cash(&self, generation: &Generation, number: &str, ticket: Ticket, cash: CashHeld) {
        let key = Key::Cash(generation.number, number.into());
        self.keep_ticketed(key, Value::Cash(cash), ticket);
    }

    fn keep_ticketed(&self, key: Key, value: Value, ticket: Ticket) {
        let Some(entries) = &self.entries else {
            return;
        };
        let epoch = &self.stripes[ticket.stripe];
        if epoch.load(Ordering::SeqCst) != ticket.epoch {
            return;
        }
        entries.insert(key.clone(), value);
        if epoch.load(Ordering::SeqCst) != ticket.epoch {
            entries.remove(&key);
        }
    }

    /// The cash of `number` changed (a deposit applied, a withdrawal held, taken or
    /// released; here or, on PostgreSQL, anywhere): forget its overlay and held cash.
    pub fn deposit_applied(&self, number: &str) {
        let Some(entries) = &self.entries else {
            return;
        };
        self.stripes[self.stripe(number)].fetch_add(1, Ordering::SeqCst);
        if let Some(generation) = self
            .generation
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            entries.remove(&Key::Overlay(generation.number, number.into()));
            entries.remove(&Key::Cash(generation.number, number.into()));
        }
    }

    /// The snapshot the current generation serves, if any.
    pub fn snapshot(&self) -> Option<SnapshotRef> {
        self.generation
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|g| g.snapshot)
    }

    /// Reads the current snapshot with `read` and serves it, starting a new generation if it
    /// is not the one served (or `fresh_start`: after a reconnect, when what is kept may
    /// have missed changes). Serialised, so that the last snapshot read is the one served.
    pub fn refresh<E>(
        &self,
        fresh_start: bool,
        read: impl FnOnce() -> Result<Option<(SnapshotRef, Option<(String, String)>)>, E>,
    ) -> Result<(), E> {
        let _switching = self.switching.lock().unwrap_or_else(|p| p.into_inner());
        let current = read()?;
        let mut generation = self.generation.write().unwrap_or_else(|p| p.into_inner());
        let same = match (&*generation, &current) {
            (Some(g), Some((snapshot, _))) => g.snapshot == *snapshot,
            (None, None) => true,
            _ => false,
        };
        if same && !fresh_start {
            return Ok(());
        }
        *generation = current.map(|(snapshot, cash)| {
            Arc::new(Generation {
                number: self.next_generation.fetch_add(1, Ordering::SeqCst),
                snapshot,
                cash,
                instruments: Mutex::default(),
            })
        });
        drop(generation);
        if let Some(entries) = &self.entries {
            entries.clear();
        }
        metrics::counter!("portfolio_read_cache_generations_total").increment(1);
        Ok(())
    }

    /// Bytes held now.
    pub fn weight(&self) -> u64 {
        self.entries.as_ref().map_or(0, |e| e.weight())
    }

    /// The budget in bytes.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    fn heartbeat_returned(&self, sent_at: u64) {
        if let Freshness::Listened { fresh_as_of, .. } = &self.freshness {
            fresh_as_of.fetch_max(sent_at, Ordering::AcqRel);
        }
    }

    fn set_connected(&self, up: bool) {
        if let Freshness::Listened {
            connected,
            fresh_as_of,
            ..
        } = &self.freshness
        {
            connected.store(up, Ordering::Release);
            if !up {
                // Not sure any more; reads use the database until the next proof.
                fresh_as_of.store(0, Ordering::Release);
            }
            metrics::gauge!("portfolio_read_cache_listening").set(if up { 1.0 } else { 0.0 });
        }
    }
}

/// Counts a read answered from memory or not.
pub fn count(hit: bool) {
    let result = if hit { "hit" } else { "miss" };
    metrics::counter!("portfolio_read_cache_requests_total", "result" => result).increment(1);
}

/// The listening connection's URL: the configured one, named in `pg_stat_activity`, with TCP
/// keepalives and a user timeout so that a dead peer is noticed in seconds, not hours (the
/// reads fall back to the database long before, see the module docs).
fn listener_url(url: &str) -> String {
    let mut url = url.to_owned();
    for (name, value) in [
        ("application_name", "portfolio-svc-listener"),
        ("keepalives_idle", "5"),
        ("keepalives_interval", "2"),
        ("keepalives_count", "3"),
        ("tcp_user_timeout", "10000"),
    ] {
        if !url.contains(&format!("{name}=")) {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(&format!("{name}={value}"));
        }
    }
    url
}

/// Starts the listener thread of a replica on PostgreSQL. It runs until `cache` is dropped.
/// `read_current` reads the current snapshot and its `CASH` instrument on the listener's
/// own connection.
pub fn spawn_listener(cache: &Arc<ReadCache>, url: &str, read_current: ReadCurrent) {
    let weak = Arc::downgrade(cache);
    let url = listener_url(url);
    let spawned = std::thread::Builder::new()
        .name("portfolio-listen".into())
        .spawn(move || listen(weak, &url, read_current));
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the listener thread; reads use the database");
    }
}

/// Reads the current snapshot (and its `CASH` instrument) on a connection.
pub type ReadCurrent =
    fn(&mut DbConnection) -> diesel::QueryResult<Option<(SnapshotRef, Option<(String, String)>)>>;

fn listen(cache: Weak<ReadCache>, url: &str, read_current: ReadCurrent) {
    use diesel::{Connection, connection::SimpleConnection};
    let nonce = format!("{:016x}", rand_nonce());
    let mut backoff = Duration::from_millis(50);
    loop {
        let Some(strong) = cache.upgrade() else {
            return;
        };
        let mut conn = match diesel::PgConnection::establish(url) {
            Ok(conn) => DbConnection::Pg(conn),
            Err(e) => {
                strong.set_connected(false);
                drop(strong);
                tracing::warn!(error = %e, "read cache: cannot connect to listen; reads use the database");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        // Listen first, then start a new generation: a change after LISTEN is notified, a
        // change before it is in what the new generation reads.
        let ready = conn
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .and_then(|()| strong.refresh(true, || read_current(&mut conn)));
        if let Err(e) = ready {
            strong.set_connected(false);
            drop(strong);
            tracing::warn!(error = %e, "read cache: cannot listen; reads use the database");
            std::thread::sleep(backoff);
            continue;
        }
        strong.set_connected(true);
        tracing::info!("read cache: listening for changes on {CHANNEL}");
        backoff = Duration::from_millis(50);
        drop(strong);
        let failed = serve(&cache, &mut conn, &nonce, read_current);
        match failed {
            None => return,
            Some(e) => {
                if let Some(strong) = cache.upgrade() {
                    strong.set_connected(false);
                }
                tracing::warn!(error = %e, "read cache: lost the listening connection; reads use the database until it is back");
            }
        }
    }
}

/// Applies notifications and sends heartbeats until the connection fails (`Some`) or the
/// cache is gone (`None`).
fn serve(
    cache: &Weak<ReadCache>,
    conn: &mut DbConnection,
    nonce: &str,
    read_current: ReadCurrent,
) -> Option<diesel::result::Error> {
    use diesel::RunQueryDsl;
    let mut sequence: u64 = 0;
    // Heartbeats in flight: (sequence, sent at).
    let mut in_flight = std::collections::VecDeque::<(u64, u64)>::new();
    let mut next_beat = Instant::now();
    loop {
        let cache = cache.upgrade()?;
        if Instant::now() >= next_beat {
            sequence += 1;
            let sent_at = cache.nanos();
            in_flight.push_back((sequence, sent_at));
            if in_flight.len() > 64 {
                in_flight.pop_front();
            }
            let payload = format!("h{nonce}:{sequence}");
            if let Err(e) = diesel::sql_query("SELECT pg_notify($1, $2)")
                .bind::<diesel::sql_types::Text, _>(CHANNEL)
                .bind::<diesel::sql_types::Text, _>(&payload)
                .execute(conn)
            {
                return Some(e);
            }
            next_beat = Instant::now() + HEARTBEAT;
        }
        let mut snapshot_changed = false;
        // The first error ends the batch (the iterator would repeat it forever).
        let mut notifications = Vec::new();
        match conn {
            DbConnection::Pg(pg) => {
                for notification in pg.notifications_iter() {
                    match notification {
                        Ok(n) => notifications.push(n),
                        Err(e) => return Some(e),
                    }
                }
            }
            DbConnection::Sqlite(_) => return None,
        }
        for notification in notifications {
            let payload = notification.payload;
            if let Some(account) = payload.strip_prefix('d') {
                cache.deposit_applied(account);
            } else if payload.starts_with('s') {
                snapshot_changed = true;
            } else if let Some(beat) = payload.strip_prefix('h') {
                let Some((from, seq)) = beat.split_once(':') else {
                    continue;
                };
                if from != nonce {
                    continue;
                }
                let Ok(seq) = seq.parse::<u64>() else {
                    continue;
                };
                // Everything committed before this heartbeat was sent has been applied, snapshot
                // switches included: apply a pending one before vouching for it.
                if snapshot_changed {
                    snapshot_changed = false;
                    if let Err(e) = cache.refresh(false, || read_current(conn)) {
                        return Some(e);
                    }
                }
                while let Some(&(s, sent_at)) = in_flight.front() {
                    if s > seq {
                        break;
                    }
                    in_flight.pop_front();
                    if s == seq {
                        cache.heartbeat_returned(sent_at);
                    }
                }
            }
        }
        if snapshot_changed && let Err(e) = cache.refresh(false, || read_current(conn)) {
            return Some(e);
        }
        drop(cache);
        std::thread::sleep(POLL);
    }
}

fn rand_nonce() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return std::process::id() as u64;
    }
    u64::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(number: &str) -> AccountRow {
        AccountRow {
            account_number: number.into(),
            customer_name: "이정희".into(),
            brokerage: "b".into(),
            account_name: "a".into(),
            principal: 1,
            total_assets: 2,
        }
    }

    fn cache_with_snapshot(budget: u64) -> ReadCache {
        let cache = ReadCache::new(budget, false, Duration::from_secs(1));
        cache
            .refresh(false, || {
                Ok::<_, ()>(Some((SnapshotRef { id: 1, as_of: 10 }, None)))
            })
            .unwrap();
        cache
    }

    #[test]
    fn an_overlay_read_before_a_deposit_is_not_kept_after_it() {
        let cache = cache_with_snapshot(1 << 20);
        let generation = cache.generation().unwrap();
        let ticket = cache.ticket("1");
        // The deposit lands between the database read and the fill.
        cache.deposit_applied("1");
        cache.keep_overlay(&generation, "1", ticket, 5);
        assert_eq!(cache.overlay(&generation, "1"), None);
        let ticket = cache.ticket("1");
        cache.keep_overlay(&generation, "1", ticket, 7);
        assert_eq!(cache.overlay(&generation, "1"), Some(7));
        cache.deposit_applied("1");
        assert_eq!(cache.overlay(&generation, "1"), None);
    }

    #[test]
    fn a_new_snapshot_starts_an_empty_generation() {
        let cache = cache_with_snapshot(1 << 20);
        let first = cache.generation().unwrap();
        cache.keep_account(&first, row("1"));
        assert!(cache.account(&first, "1").is_some());
        cache
            .refresh(false, || {
                Ok::<_, ()>(Some((SnapshotRef { id: 2, as_of: 20 }, None)))
            })
            .unwrap();
        let second = cache.generation().unwrap();
        assert_eq!(second.snapshot.id, 2);
        assert!(cache.account(&second, "1").is_none());
        // A fill of a read that started on the old generation cannot reach the new one.
        cache.keep_account(&first, row("2"));
        assert!(cache.account(&second, "2").is_none());
        // The same snapshot again: nothing is dropped.
        cache.keep_account(&second, row("3"));
        cache
            .refresh(false, || {
                Ok::<_, ()>(Some((SnapshotRef { id: 2, as_of: 20 }, None)))
            })
            .unwrap();
        assert!(cache.account(&cache.generation().unwrap(), "3").is_some());
    }

    #[test]
    fn the_budget_bounds_the_bytes_kept() {
        let budget = 64 * 1024;
        let cache = cache_with_snapshot(budget);
        let generation = cache.generation().unwrap();
        for i in 0..10_000 {
            cache.keep_account(&generation, row(&format!("{i:012}")));
        }
        assert!(cache.weight() <= budget, "{} > {budget}", cache.weight());
        assert!(cache.weight() > budget / 2);
    }

    #[test]
    fn a_shared_cache_without_a_recent_proof_is_bypassed() {
        let cache = ReadCache::new(1 << 20, true, Duration::from_secs(60));
        cache
            .refresh(false, || {
                Ok::<_, ()>(Some((SnapshotRef { id: 1, as_of: 10 }, None)))
            })
            .unwrap();
        assert!(cache.generation().is_none(), "no heartbeat yet");
        cache.heartbeat_returned(cache.nanos());
        assert!(cache.generation().is_some());
        cache.set_connected(false);
        assert!(cache.generation().is_none(), "connection lost");
    }

    #[test]
    fn kept_holdings_share_their_instruments() {
        let cache = cache_with_snapshot(1 << 20);
        let generation = cache.generation().unwrap();
        let holding = |price| HoldingRow {
            isin: "KR7000000001".into(),
            name: "일".into(),
            asset_group: "주식".into(),
            quantity: 2,
            current_price: price,
            valuation: 2 * price,
        };
        let first = cache.keep_holdings(&generation, "1", &[holding(10)]);
        let second = cache.keep_holdings(&generation, "2", &[holding(11)]);
        assert!(Arc::ptr_eq(&first[0].instrument, &second[0].instrument));
        assert_eq!(second[0].to_row(), holding(11));
        assert_eq!(
            cache.holdings(&generation, "1").unwrap()[0].to_row(),
            holding(10)
        );
    }

    #[test]
    fn a_zero_budget_turns_the_cache_off() {
        let cache = cache_with_snapshot(0);
        assert!(cache.generation().is_none());
    }

    #[test]
    fn the_listener_url_keeps_what_is_configured() {
        assert_eq!(
            listener_url("postgres://u@h/db?application_name=x"),
            "postgres://u@h/db?application_name=x&keepalives_idle=5&keepalives_interval=2&keepalives_count=3&tcp_user_timeout=10000"
        );
    }
}
