//! The move to a partition per directory on PostgreSQL (migration `000003_partitions`) keeps
//! the directories a deployment already holds, and drops a load in progress. (On SQLite that
//! migration changes nothing.)

use deposit_svc::store::MIGRATIONS;
use diesel::{Connection, PgConnection, connection::SimpleConnection};
use diesel_migrations::MigrationHarness;
use invest_runtime::testkit::{Backend, TestDatabase, pg_count, pg_migrate_to_before};

#[test]
fn kept_directories_move_into_their_partitions() {
    let Some(db) = TestDatabase::create(Backend::Postgres, "migration") else {
        return;
    };
    let mut c = PgConnection::establish(db.url()).unwrap();
    pg_migrate_to_before(&mut c, MIGRATIONS.postgres, "directory_entries_loading");
    c.batch_execute(
        "INSERT INTO directories (as_of, digest, state, started_at, heartbeat_at)
             VALUES (10, 'a', 'current', 1, 1), (20, 'b', 'loading', 2, 2);
         INSERT INTO current_directory (singleton, directory_id) VALUES (1, 1);
         INSERT INTO directory_entries VALUES (1, '111111111111', '이정희'), (1, '222222222222', '류영길'),
             (2, '111111111111', '이정희');",
    )
    .unwrap();

    c.run_pending_migrations((MIGRATIONS.postgres)()).unwrap();

    assert_eq!(
        pg_count(
            &mut c,
            "SELECT COUNT(*) AS n FROM ONLY directory_entries_v1"
        ),
        2
    );
    assert_eq!(
        pg_count(
            &mut c,
            "SELECT COUNT(*) AS n FROM directory_entries WHERE directory_id = 1 AND customer_name = '류영길'"
        ),
        1,
        "readable through the parent"
    );
    assert_eq!(
        pg_count(
            &mut c,
            "SELECT COUNT(*) AS n FROM pg_class WHERE relkind = 'r' AND relname = 'directory_entries_v2'"
        ),
        0,
        "the load in progress is dropped"
    );
    assert_eq!(pg_count(&mut c, "SELECT COUNT(*) AS n FROM directories"), 1);
}
