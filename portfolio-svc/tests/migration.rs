//! The move to a partition per snapshot on PostgreSQL (migration `000006_partitions`) keeps
//! the days a deployment already holds: each kept snapshot lands in partitions of its own
//! with every row, a load in progress is dropped, and the screens read the same figures
//! after it. (On SQLite that migration changes nothing.)

use diesel::{Connection, PgConnection, connection::SimpleConnection};
use diesel_migrations::MigrationHarness;
use invest_runtime::testkit::{Backend, TestDatabase, pg_count, pg_migrate_to_before};
use portfolio_svc::{store::MIGRATIONS, testkit::TestPortfolio};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_days_move_into_their_partitions() {
    let Some(db) = TestDatabase::create(Backend::Postgres, "migration") else {
        return;
    };
    let mut c = PgConnection::establish(db.url()).unwrap();
    // The schema as the previous version left it: every migration before the partitions.
    pg_migrate_to_before(&mut c, MIGRATIONS.postgres, "holdings_loading");
    // Two kept days (1 retired, 2 current) and a load in progress (3).
    c.batch_execute(
        "INSERT INTO snapshots (as_of, digest, state, started_at, heartbeat_at)
             VALUES (10, 'a', 'retired', 1, 1), (20, 'b', 'current', 2, 2), (30, 'c', 'loading', 3, 3);
         INSERT INTO current_snapshot (singleton, snapshot_id) VALUES (1, 2);
         INSERT INTO instruments VALUES (1, 'CASH', '현금', '채권 / 현금'), (2, 'CASH', '현금', '채권 / 현금'),
             (3, 'CASH', '현금', '채권 / 현금');
         INSERT INTO accounts VALUES (1, '111111111111', '이정희', 'b', 'n', 100, 100),
             (2, '111111111111', '이정희', 'b', 'n', 100, 250), (2, '222222222222', '류영길', 'b', 'n', 5, 5),
             (3, '111111111111', '이정희', 'b', 'n', 100, 999);
         INSERT INTO holdings VALUES (1, '111111111111', 'CASH', 1, 100, 100),
             (2, '111111111111', 'CASH', 1, 250, 250), (2, '222222222222', 'CASH', 1, 5, 5),
             (3, '111111111111', 'CASH', 1, 999, 999);",
    )
    .unwrap();

    c.run_pending_migrations((MIGRATIONS.postgres)()).unwrap();

    for (table, day, rows) in [
        ("accounts", 1, 1),
        ("accounts", 2, 2),
        ("holdings", 1, 1),
        ("holdings", 2, 2),
        ("instruments", 1, 1),
        ("instruments", 2, 1),
    ] {
        assert_eq!(
            pg_count(
                &mut c,
                &format!("SELECT COUNT(*) AS n FROM ONLY {table}_v{day}")
            ),
            rows,
            "{table} of day {day} in its partition"
        );
    }
    assert_eq!(
        pg_count(
            &mut c,
            "SELECT COUNT(*) AS n FROM pg_class WHERE relkind = 'r' AND relname ~ '_v3$'"
        ),
        0,
        "the load in progress is dropped"
    );
    assert_eq!(
        pg_count(&mut c, "SELECT COUNT(*) AS n FROM snapshots"),
        2,
        "the kept days stay"
    );
    assert_eq!(
        pg_count(
            &mut c,
            "SELECT COUNT(*) AS n FROM pg_class WHERE relname LIKE '%unpartitioned%'"
        ),
        0
    );
    drop(c);

    // The server reads the kept current day as before.
    let app = TestPortfolio::spawn_on(db, |_| {}).await;
    let detail = app.account("이정희", "111111111111").await;
    assert_eq!((detail.total_assets, detail.principal), (250, 100));
}
