//! Two portfolio-svc replicas on one PostgreSQL database, changes made through one and reads
//! through the other: the freshness promise of the read cache (`portfolio_svc::cache`). A
//! deposit, a withdrawal's hold or a new snapshot committed through replica A is in every read of replica B that
//! starts `--read-staleness` after it, whether B answers from memory or, having lost its
//! listening connection, from the database; and B answers from memory again once it listens
//! again.
//!
//! Alone in its test binary: it reads the process-wide metrics to tell memory from database.

use std::time::{Duration, Instant};

use diesel::{Connection, RunQueryDsl};
use invest_proto::portfolio::v1::{self as pb};
use invest_runtime::testkit::Backend;
use portfolio_svc::testkit::{Snapshot, TestPortfolio, http_get};

const DAY: i64 = 86_400_000_000;
const AS_OF: i64 = 1_795_000_000_000_000;
const OWNER: &str = "이정희";
const ACCOUNT: &str = "111111111111";
const STALENESS: Duration = Duration::from_millis(300);
/// However slow the machine: the test gives up waiting after this.
const PATIENCE: Duration = Duration::from_secs(30);

fn day(day: i64) -> Snapshot {
    Snapshot {
        as_of: AS_OF + day * DAY,
        instruments: vec![pb::Instrument {
            isin: "CASH".into(),
            name: "현금".into(),
            asset_group: "현금".into(),
        }],
        accounts: vec![pb::SnapshotAccount {
            account_number: ACCOUNT.into(),
            customer_name: OWNER.into(),
            brokerage: "디셈버증권".into(),
            account_name: "계좌".into(),
            principal: 1_000,
            holdings: vec![pb::SnapshotHolding {
                isin: "CASH".into(),
                quantity: 1,
                current_price: 1_000,
            }],
        }],
    }
}

async fn detail(app: &TestPortfolio) -> pb::AccountDetail {
    app.account(OWNER, ACCOUNT).await
}

async fn deposit(app: &TestPortfolio, n: u32, amount: i64) {
    app.ledger()
        .await
        .apply_deposit(pb::ApplyDepositRequest {
            transfer_id: format!("{n:032x}"),
            account_number: ACCOUNT.into(),
            amount,
            confirmed_at: Some(invest_proto::time::from_micros(AS_OF + 2 * DAY)),
        })
        .await
        .unwrap();
}

/// Reads answered from memory so far (this process).
async fn hits(app: &TestPortfolio) -> u64 {
    let metrics = http_get(app.server.metrics_addr, "/metrics").await;
    metrics
        .lines()
        .find(|l| l.starts_with("portfolio_read_cache_requests_total{result=\"hit\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Reads B until it answers from memory.
async fn until_served_from_memory(b: &TestPortfolio) {
    let deadline = Instant::now() + PATIENCE;
    let before = hits(b).await;
    while hits(b).await == before {
        assert!(Instant::now() < deadline, "B never answered from memory");
        detail(b).await;
        tokio::task::yield_now().await;
    }
}

/// Reads B until `seen` holds; every read that starts `STALENESS` after `changed` must see
/// it. Returns how long after `changed` B first showed it.
async fn seen_within_the_bound(
    b: &TestPortfolio,
    changed: Instant,
    seen: impl Fn(&pb::AccountDetail) -> bool,
) -> Duration {
    loop {
        let started = Instant::now();
        let read = detail(b).await;
        if seen(&read) {
            return started.saturating_duration_since(changed);
        }
        assert!(
            started < changed + STALENESS,
            "a read started {:?} after the change does not show it: {read:?}",
            started - changed
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_sees_the_changes_of_another_within_the_bound() {
    let Some(a) = TestPortfolio::spawn(Backend::Postgres).await else {
        return;
    };
    let b = a.replica(|c| c.read_staleness = STALENESS).await;
    a.load(&day(1)).await;
    let mut principal = 1_000;

    // A deposit through A, while B answers from memory.
    until_served_from_memory(&b).await;
    deposit(&a, 1, 10).await;
    principal += 10;
    let delay = seen_within_the_bound(&b, Instant::now(), |d| d.principal == principal).await;
    eprintln!("deposit seen on the other replica after {delay:?}");

    // A withdrawal's hold through A, then its release: B's available cash follows each
    // within the bound (the held cash is kept in memory too).
    until_served_from_memory(&b).await;
    let available = detail(&b).await.available_cash;
    let hold = pb::HoldCashRequest {
        transfer_id: format!("{:032x}", 1_000),
        account_number: ACCOUNT.into(),
        amount: 40,
    };
    a.ledger().await.hold_cash(hold.clone()).await.unwrap();
    seen_within_the_bound(&b, Instant::now(), |d| d.available_cash == available - 40).await;
    until_served_from_memory(&b).await;
    a.ledger()
        .await
        .release_hold(pb::ReleaseHoldRequest {
            transfer_id: hold.transfer_id,
            account_number: hold.account_number,
            amount: hold.amount,
        })
        .await
        .unwrap();
    seen_within_the_bound(&b, Instant::now(), |d| d.available_cash == available).await;

    // B loses its listening connection (A too): B must not answer from what it remembers.
    let mut admin = diesel::PgConnection::establish(a.db.url()).unwrap();
    until_served_from_memory(&b).await;
    let terminated = diesel::sql_query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'portfolio-svc-listener' AND datname = current_database()",
    )
    .execute(&mut admin)
    .unwrap();
    assert!(terminated >= 2, "both replicas listen ({terminated} found)");
    deposit(&a, 2, 20).await;
    principal += 20;
    seen_within_the_bound(&b, Instant::now(), |d| d.principal == principal).await;

    // It listens again, starts afresh, and answers from memory, still exactly.
    until_served_from_memory(&b).await;
    assert_eq!(detail(&b).await.principal, principal);
    deposit(&a, 3, 30).await;
    principal += 30;
    seen_within_the_bound(&b, Instant::now(), |d| d.principal == principal).await;

    // Heartbeats keep B sure of itself long after the bound: time passing is what is tested.
    tokio::time::sleep(3 * STALENESS).await;
    until_served_from_memory(&b).await;
    tokio::time::sleep(3 * STALENESS).await;

    // A new snapshot through A.
    until_served_from_memory(&b).await;
    a.load(&day(2)).await;
    let as_of = Some(invest_proto::time::from_micros(AS_OF + 2 * DAY));
    seen_within_the_bound(&b, Instant::now(), |d| d.as_of == as_of).await;
}
