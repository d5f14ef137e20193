//! The daily switch's mechanics on SQLite and PostgreSQL: pruning a snapshot while page
//! tokens of it are in use, a server killed in the middle of a prune, and a load abandoned
//! half-way. On PostgreSQL a snapshot's rows live in partitions of their own
//! (`{table}_v{id}`); on SQLite they are deleted in batches with pauses (see
//! runtime/src/staged.rs).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use diesel::{Connection, RunQueryDsl, sql_types::BigInt};
use invest_proto::{
    auth::{JwtKeys, SCOPE_ACCOUNTS_READ, SCOPE_INGEST_WRITE, ServiceToken},
    portfolio::v1::{
        self as pb, portfolio_ingest_client::PortfolioIngestClient,
        portfolio_service_client::PortfolioServiceClient, snapshot_part::Part,
    },
    status::reason,
};
use invest_runtime::{
    backend_tests,
    testkit::{Backend, ServerProcess, TestDatabase},
};
use portfolio_svc::testkit::{Authed, Snapshot, TEST_SECRET, TestPortfolio};
use tonic::{Code, transport::Channel};

const DAY: i64 = 86_400_000_000;
const AS_OF: i64 = 1_795_000_000_000_000;
const CUSTOMERS: usize = 10;
const ISINS: [&str; 3] = ["CASH", "KR7133690008", "KR7360750004"];

/// `accounts` accounts of [`CUSTOMERS`] customers, three holdings each, priced `price`.
fn day(as_of: i64, accounts: usize, price: i64) -> Snapshot {
    Snapshot {
        as_of,
        instruments: ISINS
            .iter()
            .map(|isin| pb::Instrument {
                isin: (*isin).into(),
                name: format!("{isin} 종목"),
                asset_group: "미국 주식".into(),
            })
            .collect(),
        accounts: (0..accounts)
            .map(|i| pb::SnapshotAccount {
                account_number: number(i),
                customer_name: customer(i % CUSTOMERS),
                brokerage: "디셈버증권".into(),
                account_name: format!("계좌{i}"),
                principal: 1_000,
                holdings: ISINS
                    .iter()
                    .map(|isin| pb::SnapshotHolding {
                        isin: (*isin).into(),
                        quantity: 1,
                        current_price: price,
                    })
                    .collect(),
            })
            .collect(),
    }
}

fn number(i: usize) -> String {
    format!("{:012}", 100_000_000_000 + i)
}

fn customer(i: usize) -> String {
    format!("고객{i}")
}

fn keys() -> Arc<JwtKeys> {
    Arc::new(JwtKeys::from_secret(TEST_SECRET.as_bytes()))
}

async fn channel(url: String) -> Channel {
    Channel::from_shared(url).unwrap().connect().await.unwrap()
}

async fn load_at(url: String, snapshot: Snapshot) {
    PortfolioIngestClient::with_interceptor(
        channel(url).await,
        ServiceToken::new(keys(), "loader", &[SCOPE_INGEST_WRITE]),
    )
    .max_encoding_message_size(32 * 1024 * 1024)
    .load_snapshot(tokio_stream::iter(snapshot.parts(1_000)))
    .await
    .expect("the day loads");
}

async fn screens_at(url: String, customer: &str) -> PortfolioServiceClient<Authed<ServiceToken>> {
    PortfolioServiceClient::with_interceptor(
        channel(url).await,
        ServiceToken::new(keys(), customer, &[SCOPE_ACCOUNTS_READ]),
    )
}

/// The database itself, for what the API does not show.
enum Db {
    Sqlite(diesel::SqliteConnection),
    Pg(diesel::PgConnection),
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

impl Db {
    fn open(db: &TestDatabase) -> Self {
        match db.backend() {
            Backend::Sqlite => Self::Sqlite(
                diesel::SqliteConnection::establish(db.url().trim_start_matches("sqlite://"))
                    .unwrap(),
            ),
            Backend::Postgres => Self::Pg(diesel::PgConnection::establish(db.url()).unwrap()),
        }
    }

    fn count(&mut self, sql: &str) -> i64 {
        let query = diesel::sql_query(sql);
        match self {
            Self::Sqlite(c) => query.get_result::<Count>(c).unwrap().n,
            Self::Pg(c) => query.get_result::<Count>(c).unwrap().n,
        }
    }

    /// The newest snapshot's id.
    fn newest(&mut self) -> i64 {
        self.count("SELECT MAX(id) AS n FROM snapshots")
    }

    /// What is left of snapshot `id` besides its row: its rows on SQLite, its partitions on
    /// PostgreSQL (attached, loading, pending a detach, or detached and not dropped).
    fn leftovers(&mut self, id: i64) -> i64 {
        match self {
            Self::Sqlite(_) => ["instruments", "accounts", "holdings"]
                .iter()
                .map(|t| {
                    self.count(&format!(
                        "SELECT COUNT(*) AS n FROM {t} WHERE snapshot_id = {id}"
                    ))
                })
                .sum(),
            Self::Pg(_) => self.count(&format!(
                "SELECT COUNT(*) AS n FROM pg_class WHERE relkind = 'r' \
                 AND relname IN ('instruments_v{id}', 'accounts_v{id}', 'holdings_v{id}')"
            )),
        }
    }

    /// Rows of snapshot `id` that readers see.
    fn holdings(&mut self, id: i64) -> i64 {
        self.count(&format!(
            "SELECT COUNT(*) AS n FROM holdings WHERE snapshot_id = {id}"
        ))
    }

    fn snapshot_exists(&mut self, id: i64) -> bool {
        self.count(&format!(
            "SELECT COUNT(*) AS n FROM snapshots WHERE id = {id}"
        )) == 1
    }
}

/// Waits for `done`, polling the database (bounded: the test fails after `limit`).
async fn until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A continued listing's answer: the page it answered before, whole (1), or
/// PAGE_TOKEN_EXPIRED (0, and the listing is marked expired); once expired, always expired.
fn whole_or_expired<T: PartialEq + std::fmt::Debug>(
    answer: Result<tonic::Response<T>, tonic::Status>,
    expected: &T,
    expired: &mut bool,
) -> usize {
    match answer {
        Ok(page) => {
            assert!(!*expired, "a listing came back after it expired");
            assert_eq!(
                &page.into_inner(),
                expected,
                "a whole page of the first day"
            );
            1
        }
        Err(status) => {
            assert_eq!(
                (status.code(), reason(&status).as_deref()),
                (Code::InvalidArgument, Some("PAGE_TOKEN_EXPIRED")),
                "{status:?}"
            );
            *expired = true;
            0
        }
    }
}

/// A listing continued on a snapshot that is being pruned answers either the page it would
/// have answered before, whole, or PAGE_TOKEN_EXPIRED; never an empty or partial page. Reads
/// that start fresh meanwhile answer from one day or the other, never NOT_FOUND.
async fn a_prune_racing_page_tokens_answers_whole_pages_or_expired(backend: Backend) {
    let Some(db) = TestDatabase::create(backend, "switch_race") else {
        return;
    };
    let app = TestPortfolio::spawn_on(db, |c| c.keep_snapshots = 0).await;
    let accounts = 20_000;
    load_at(app.url(), day(AS_OF, accounts, 100)).await;
    let first_day = Db::open(&app.db).newest();

    // Page tokens on the first day, with the page each continues to.
    let mut listings = Vec::new();
    for c in 0..CUSTOMERS {
        let mut client = screens_at(app.url(), &customer(c)).await;
        let first = client
            .list_accounts(pb::ListAccountsRequest {
                page_size: 7,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let request = pb::ListAccountsRequest {
            page_size: 500,
            page_token: first.next_page_token,
        };
        let expected = client
            .list_accounts(request.clone())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(expected.accounts.len(), 500);
        listings.push((client, request, expected));
    }
    let mut holdings = Vec::new();
    for i in (0..accounts).step_by(accounts / 10) {
        let mut client = screens_at(app.url(), &customer(i % CUSTOMERS)).await;
        let first = client
            .list_holdings(pb::ListHoldingsRequest {
                account_number: number(i),
                page_size: 1,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let request = pb::ListHoldingsRequest {
            account_number: number(i),
            page_size: 10,
            page_token: first.next_page_token,
        };
        let expected = client
            .list_holdings(request.clone())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(expected.holdings.len(), 2);
        holdings.push((client, request, expected));
    }

    // The next day, with nothing kept: the first day is pruned as soon as it is replaced.
    let next = tokio::spawn(load_at(app.url(), day(AS_OF + DAY, accounts, 200)));
    let mut fresh = screens_at(app.url(), &customer(3)).await;
    let (mut whole, mut expired) = (0, vec![false; listings.len() + holdings.len()]);
    let deadline = Instant::now() + Duration::from_secs(180);
    while expired.iter().any(|e| !e) {
        assert!(Instant::now() < deadline, "the first day was never pruned");
        for (k, (client, request, expected)) in listings.iter_mut().enumerate() {
            let answer = client.list_accounts(request.clone()).await;
            whole += whole_or_expired(answer, expected, &mut expired[k]);
        }
        for (k, (client, request, expected)) in holdings.iter_mut().enumerate() {
            let answer = client.list_holdings(request.clone()).await;
            whole += whole_or_expired(answer, expected, &mut expired[k + listings.len()]);
        }
        let detail = fresh
            .get_account(pb::GetAccountRequest {
                account_number: number(13),
            })
            .await
            .expect("a fresh read answers during the switch")
            .into_inner();
        assert!(
            [300, 600].contains(&detail.total_assets),
            "one day or the other: {detail:?}"
        );
    }
    next.await.unwrap();
    let mut db = Db::open(&app.db);
    until(Duration::from_secs(60), "the first day's rows go", || {
        db.leftovers(first_day) == 0
    })
    .await;
    let newest = db.newest();
    assert_eq!(db.holdings(newest), 3 * accounts as i64);
    eprintln!("{whole} whole pages of the replaced day answered before their tokens expired");
}

/// A load whose loader stops sending half-way (without closing the stream) is declared
/// abandoned after `--stale-load-after`: its rows or partitions go, nothing else does, and a
/// late batch fails instead of bringing it back.
async fn an_abandoned_load_leaves_nothing_behind(backend: Backend) {
    let Some(db) = TestDatabase::create(backend, "switch_abandoned") else {
        return;
    };
    let app = TestPortfolio::spawn_on(db, |c| {
        c.stale_load_after = Duration::from_millis(500);
    })
    .await;
    let accounts = 2_000;
    let today = day(AS_OF, accounts, 100);
    load_at(app.url(), today.clone()).await;
    let current = Db::open(&app.db).newest();

    let (tx, rx) = tokio::sync::mpsc::channel::<pb::SnapshotPart>(16);
    let mut ingest = app.ingest().await;
    let call = tokio::spawn(async move {
        ingest
            .load_snapshot(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    let tomorrow = day(AS_OF + DAY, accounts, 200);
    let parts = tomorrow.parts(100);
    for part in &parts[..parts.len() / 2] {
        tx.send(part.clone()).await.unwrap();
    }
    let mut db = Db::open(&app.db);
    let loading = {
        let mut id = 0;
        until(Duration::from_secs(30), "the load begins", || {
            id = db.newest();
            id != current
        })
        .await;
        id
    };
    until(
        Duration::from_secs(30),
        "half of the day is written",
        || match &mut db {
            Db::Sqlite(_) => {
                db.count(&format!(
                    "SELECT COUNT(*) AS n FROM accounts WHERE snapshot_id = {loading}"
                )) >= 900
            }
            Db::Pg(_) => db.count(&format!("SELECT COUNT(*) AS n FROM accounts_v{loading}")) >= 900,
        },
    )
    .await;
    // The loader hangs: no batch, no end.
    until(
        Duration::from_secs(60),
        "the abandoned load is cleaned up",
        || !db.snapshot_exists(loading) && db.leftovers(loading) == 0,
    )
    .await;
    // A late batch finds its load gone.
    let _ = tx.send(parts[parts.len() / 2].clone()).await;
    drop(tx);
    let status = call.await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("abandoned"), "{status:?}");

    // The current day is untouched.
    assert_eq!(db.newest(), current);
    assert_eq!(db.holdings(current), 3 * accounts as i64);
    let detail = app.account(&customer(1), &number(1)).await;
    assert_eq!(detail.total_assets, 300);
    let Some(Part::Header(header)) = &parts[0].part else {
        unreachable!()
    };
    assert_eq!(header.account_count, accounts as i64);
}

/// portfolio-svc killed with SIGKILL right after a new day became current, while the day it
/// replaced is being pruned: after a restart the prune is finished, and the current day and
/// its reads are whole.
async fn killed_while_pruning_finishes_after_restart(backend: Backend) {
    let Some(db) = TestDatabase::create(backend, "switch_killed") else {
        return;
    };
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--keep-snapshots",
        "0",
        "--database-url",
        db.url(),
    ];
    let binary = env!("CARGO_BIN_EXE_portfolio-svc");
    let mut first = ServerProcess::start(binary, &args, TEST_SECRET).await;
    let accounts = 20_000;
    load_at(first.url(), day(AS_OF, accounts, 100)).await;
    let mut conn = Db::open(&db);
    let old = conn.newest();
    load_at(first.url(), day(AS_OF + DAY, accounts, 200)).await;
    // The janitor starts pruning the first day as soon as the second is current.
    first.child.start_kill().unwrap();
    first.child.wait().await.unwrap();
    let left = conn.leftovers(old);
    eprintln!(
        "killed with {left} {} of the replaced day left",
        if backend == Backend::Sqlite {
            "rows"
        } else {
            "tables"
        }
    );

    let second = ServerProcess::start(binary, &args, TEST_SECRET).await;
    until(Duration::from_secs(120), "the prune is finished", || {
        !conn.snapshot_exists(old) && conn.leftovers(old) == 0
    })
    .await;
    let current = conn.newest();
    assert_ne!(current, old);
    assert_eq!(conn.holdings(current), 3 * accounts as i64);
    let mut client = screens_at(second.url(), &customer(7)).await;
    let detail = client
        .get_account(pb::GetAccountRequest {
            account_number: number(17),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(detail.total_assets, 600);
    let listed = client
        .list_accounts(pb::ListAccountsRequest {
            page_size: 500,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.accounts.len(), 500);
    assert!(listed.accounts.iter().all(|a| a.total_assets == 600));
}

backend_tests!(
    a_prune_racing_page_tokens_answers_whole_pages_or_expired,
    an_abandoned_load_leaves_nothing_behind,
    killed_while_pruning_finishes_after_restart,
);
