//! The staged-load protocol's statements on both backends, on a schema of its own shape.

use diesel::{Connection, PgConnection, SqliteConnection, connection::SimpleConnection};
use invest_runtime::{
    backend_tests,
    db::DbConnection,
    error::Error,
    staged::{Begin, Finish, Pace, RowTable, StagedTables},
    testkit::{Backend, TestDatabase},
};

static VERSIONS: StagedTables = StagedTables {
    what: "day",
    versions: "days",
    pointer: "current_day",
    pointer_column: "day_id",
    rows: &[RowTable {
        name: "day_rows",
        version_column: "day_id",
        key_column: "name",
    }],
    outdated_reason: "DAY_OUTDATED",
};

fn connect(db: &TestDatabase) -> DbConnection {
    let columns = "as_of BIGINT NOT NULL, digest TEXT NOT NULL, state TEXT NOT NULL, \
        started_at BIGINT NOT NULL, heartbeat_at BIGINT NOT NULL, finished_at BIGINT, \
        row_count BIGINT NOT NULL DEFAULT 0";
    let rest = "CREATE TABLE current_day (singleton INTEGER NOT NULL PRIMARY KEY, day_id BIGINT NOT NULL);";
    match db.backend() {
        Backend::Sqlite => {
            let mut c =
                SqliteConnection::establish(db.url().trim_start_matches("sqlite://")).unwrap();
            c.batch_execute(&format!(
                "CREATE TABLE days (id INTEGER PRIMARY KEY AUTOINCREMENT, {columns}); {rest}
                 CREATE TABLE day_rows (day_id BIGINT NOT NULL, name TEXT NOT NULL,
                     PRIMARY KEY (day_id, name)) WITHOUT ROWID;"
            ))
            .unwrap();
            DbConnection::Sqlite(c)
        }
        Backend::Postgres => {
            let mut c = PgConnection::establish(db.url()).unwrap();
            c.batch_execute(&format!(
                "CREATE TABLE days (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, {columns}); {rest}
                 CREATE TABLE day_rows (day_id BIGINT NOT NULL, name TEXT NOT NULL,
                     PRIMARY KEY (day_id, name)) PARTITION BY LIST (day_id);
                 CREATE TABLE day_rows_loading (LIKE day_rows) PARTITION BY LIST (day_id);"
            ))
            .unwrap();
            DbConnection::Pg(c)
        }
    }
}

/// Writes rows of a loading day where a service writes them: the loading parent on
/// PostgreSQL, the table itself on SQLite.
fn write(conn: &mut DbConnection, day: i64, names: &[&str]) {
    let table = match conn {
        DbConnection::Pg(_) => "day_rows_loading",
        DbConnection::Sqlite(_) => "day_rows",
    };
    for name in names {
        conn.batch_execute(&format!(
            "INSERT INTO {table} (day_id, name) VALUES ({day}, '{name}')"
        ))
        .unwrap();
    }
}

/// Forgets a day and collects its rows, as the janitor does.
fn prune(t: &StagedTables, conn: &mut DbConnection, id: i64) -> bool {
    let forgotten = t.forget(conn, id).unwrap();
    t.collect(conn, &fast()).unwrap();
    forgotten
}

/// A pace for tests: small batches, short pauses.
fn fast() -> Pace {
    Pace {
        first_batch: 2,
        batch_time: std::time::Duration::from_millis(20),
        pause: std::time::Duration::from_millis(1),
        ..Pace::default()
    }
}

fn started(begin: Begin) -> i64 {
    match begin {
        Begin::Started(id) => id,
        other => panic!("expected a new loading version, got {other:?}"),
    }
}

fn rows(conn: &mut DbConnection) -> usize {
    #[derive(diesel::QueryableByName)]
    struct Name {
        #[diesel(sql_type = diesel::sql_types::Text)]
        #[allow(dead_code)]
        name: String,
    }
    let names: Vec<Name> =
        diesel::RunQueryDsl::load(diesel::sql_query("SELECT name FROM day_rows"), conn).unwrap();
    names.len()
}

async fn the_protocol_on_its_own_tables(backend: Backend) {
    let Some(db) = TestDatabase::create(backend, "staged") else {
        return;
    };
    let mut c = connect(&db);
    let t = &VERSIONS;
    assert_eq!(t.current(&mut c).unwrap(), None);

    // A first day: loading, written, made current.
    let first = started(t.begin(&mut c, 10, "a", 100).unwrap());
    write(&mut c, first, &["x"]);
    t.heartbeat(&mut c, first, 110).unwrap();
    assert!(
        t.current(&mut c).unwrap().is_none(),
        "a loading day is invisible"
    );
    assert!(matches!(
        t.finish(&mut c, first, 10, "a", &[("row_count", 1)], 120, 1)
            .unwrap(),
        Finish::Current
    ));
    let current = t.current(&mut c).unwrap().unwrap();
    assert_eq!(
        (current.id, current.as_of, current.digest.as_str()),
        (first, 10, "a")
    );

    // The same day again: unchanged. An older day: refused with the service's reason.
    assert!(matches!(t.begin(&mut c, 10, "a", 130).unwrap(), Begin::Unchanged(v) if v.id == first));
    match t.begin(&mut c, 5, "b", 130) {
        Err(Error::FailedPrecondition { reason, .. }) => assert_eq!(reason, "DAY_OUTDATED"),
        other => panic!("{other:?}"),
    }

    // A second day replaces it; the first is retired, kept until pruned.
    let second = started(t.begin(&mut c, 20, "b", 200).unwrap());
    assert!(matches!(
        t.finish(&mut c, second, 20, "b", &[("row_count", 0)], 210, 1)
            .unwrap(),
        Finish::Current
    ));
    assert_eq!(t.current(&mut c).unwrap().unwrap().id, second);
    assert_eq!(t.prunable(&mut c, 1, 0).unwrap(), Vec::<i64>::new());
    assert_eq!(t.prunable(&mut c, 0, 0).unwrap(), vec![first]);

    // A load that is discarded is gone with its rows, and cannot come back.
    let third = started(t.begin(&mut c, 30, "c", 300).unwrap());
    write(&mut c, third, &["y"]);
    assert!(prune(t, &mut c, third));
    assert!(matches!(
        t.heartbeat(&mut c, third, 310),
        Err(Error::Unavailable(_))
    ));
    assert!(matches!(
        t.finish(&mut c, third, 30, "c", &[], 320, 1),
        Err(Error::Unavailable(_))
    ));
    assert_eq!(rows(&mut c), 1, "only the first day's row is left");
    // Forgetting the current version does nothing.
    assert!(!prune(t, &mut c, second));
    assert_eq!(t.current(&mut c).unwrap().unwrap().id, second);

    // A loading day whose loader went away is pruned once its heartbeat is stale.
    let stale = started(t.begin(&mut c, 40, "d", 400).unwrap());
    assert_eq!(t.prunable(&mut c, 1, 400).unwrap(), Vec::<i64>::new());
    assert_eq!(t.prunable(&mut c, 1, 401).unwrap(), vec![stale]);
    for id in t.prunable(&mut c, 0, 401).unwrap() {
        prune(t, &mut c, id);
    }
    assert_eq!(rows(&mut c), 0);
    assert_eq!(t.current(&mut c).unwrap().unwrap().id, second);
}

/// The states a crash can leave a prune in, each finished by the next collection, which
/// touches nothing of the current day.
async fn a_prune_interrupted_anywhere_is_finished(backend: Backend) {
    let Some(db) = TestDatabase::create(backend, "staged_crash") else {
        return;
    };
    let mut c = connect(&db);
    let t = &VERSIONS;
    let names: Vec<String> = (0..25).map(|i| format!("n{i:02}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let day = |c: &mut DbConnection, as_of: i64| {
        let id = started(t.begin(c, as_of, &format!("d{as_of}"), as_of).unwrap());
        write(c, id, &names);
        t.finish(c, id, as_of, &format!("d{as_of}"), &[], as_of, 1)
            .unwrap();
        id
    };
    let old = [day(&mut c, 10), day(&mut c, 20), day(&mut c, 30)];
    let current = day(&mut c, 40);
    let count = |c: &mut DbConnection, id: i64| -> i64 {
        #[derive(diesel::QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let n: N = diesel::RunQueryDsl::get_result(
            diesel::sql_query(format!(
                "SELECT COUNT(*) AS n FROM day_rows WHERE day_id = {id}"
            )),
            c,
        )
        .unwrap();
        n.n
    };

    // Forgotten, nothing removed yet (a crash right after the first step); on PostgreSQL,
    // detached but not dropped (a crash between the two).
    assert!(t.forget(&mut c, old[0]).unwrap());
    // Forgotten and half removed.
    assert!(t.forget(&mut c, old[1]).unwrap());
    match &mut c {
        DbConnection::Pg(_) => {
            c.batch_execute(&format!(
                "ALTER TABLE day_rows DETACH PARTITION day_rows_v{}",
                old[0]
            ))
            .unwrap();
            // A concurrent detach cut off in its second transaction (which waits for every
            // transaction that may still read the partition, here a reader that stays open)
            // leaves the partition pending, as a crash there does.
            let mut reader = PgConnection::establish(db.url()).unwrap();
            reader
                .batch_execute("BEGIN; SELECT COUNT(*) FROM day_rows;")
                .unwrap();
            c.batch_execute("SET statement_timeout = '300ms'").unwrap();
            let cut = c.batch_execute(&format!(
                "ALTER TABLE day_rows DETACH PARTITION day_rows_v{} CONCURRENTLY",
                old[1]
            ));
            assert!(cut.is_err(), "the detach waits for the open reader");
            reader.batch_execute("COMMIT").unwrap();
            c.batch_execute("SET statement_timeout = 0").unwrap();
            #[derive(diesel::QueryableByName)]
            struct Pending {
                #[diesel(sql_type = diesel::sql_types::Bool)]
                pending: bool,
            }
            let pending: Pending = diesel::RunQueryDsl::get_result(
                diesel::sql_query(format!(
                    "SELECT inhdetachpending AS pending FROM pg_inherits \
                     WHERE inhrelid = 'day_rows_v{}'::regclass",
                    old[1]
                )),
                &mut c,
            )
            .unwrap();
            assert!(pending.pending, "the partition is left pending");
        }
        DbConnection::Sqlite(_) => {
            c.batch_execute(&format!(
                "DELETE FROM day_rows WHERE day_id = {} AND name < 'n10'",
                old[1]
            ))
            .unwrap();
        }
    }
    if backend == Backend::Sqlite {
        assert_eq!(count(&mut c, old[1]), 15);
    }

    assert_eq!(t.collect(&mut c, &fast()).unwrap(), 2);
    assert_eq!(count(&mut c, old[0]), 0);
    assert_eq!(count(&mut c, old[1]), 0);
    assert_eq!(count(&mut c, old[2]), 25, "a day not pruned keeps its rows");
    assert_eq!(count(&mut c, current), 25, "the current day keeps its rows");
    assert_eq!(t.current(&mut c).unwrap().unwrap().id, current);
    // Again: nothing left to do.
    assert_eq!(t.collect(&mut c, &fast()).unwrap(), 0);
    if let DbConnection::Pg(_) = c {
        #[derive(diesel::QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let n: N = diesel::RunQueryDsl::get_result(
            diesel::sql_query(
                "SELECT COUNT(*) AS n FROM pg_class \
                 WHERE relkind = 'r' AND relname ~ '^day_rows_v' AND relnamespace = current_schema()::regnamespace",
            ),
            &mut c,
        )
        .unwrap();
        assert_eq!(n.n, 2, "one partition for each day kept, none left over");
    }
}

/// A collection asked to stop (the server is stopping) ends between two batches, and the next
/// one finishes the work.
async fn a_stopped_collection_is_finished_by_the_next(backend: Backend) {
    let Some(db) = TestDatabase::create(backend, "staged_stop") else {
        return;
    };
    let mut c = connect(&db);
    let t = &VERSIONS;
    let names: Vec<String> = (0..40).map(|i| format!("n{i:02}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let old = started(t.begin(&mut c, 10, "a", 10).unwrap());
    write(&mut c, old, &names);
    t.finish(&mut c, old, 10, "a", &[], 10, 1).unwrap();
    let new = started(t.begin(&mut c, 20, "b", 20).unwrap());
    write(&mut c, new, &names);
    t.finish(&mut c, new, 20, "b", &[], 20, 1).unwrap();
    assert!(t.forget(&mut c, old).unwrap());

    let left = |c: &mut DbConnection| -> usize {
        #[derive(diesel::QueryableByName)]
        struct Name {
            #[diesel(sql_type = diesel::sql_types::Text)]
            #[allow(dead_code)]
            name: String,
        }
        let sql = match c {
            // On PostgreSQL the unit is a partition, removed whole or not at all.
            DbConnection::Pg(_) => format!(
                "SELECT relname::text AS name FROM pg_class \
                 WHERE relkind = 'r' AND relname = 'day_rows_v{old}'"
            ),
            DbConnection::Sqlite(_) => format!("SELECT name FROM day_rows WHERE day_id = {old}"),
        };
        diesel::RunQueryDsl::load::<Name>(diesel::sql_query(sql), c)
            .unwrap()
            .len()
    };
    if backend == Backend::Sqlite {
        let stopped = fast();
        stopped
            .stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
        t.collect(&mut c, &stopped).unwrap();
        assert_eq!(left(&mut c), 40, "stopped before its first batch");
    }
    assert_eq!(t.collect(&mut c, &fast()).unwrap(), 1);
    assert_eq!(left(&mut c), 0);
    assert_eq!(rows(&mut c), 40, "the current day's rows");
}

backend_tests!(
    the_protocol_on_its_own_tables,
    a_prune_interrupted_anywhere_is_finished,
    a_stopped_collection_is_finished_by_the_next,
);
