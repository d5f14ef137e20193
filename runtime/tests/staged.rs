//! The staged-load protocol's statements on both backends, on a schema of its own shape.

use diesel::{Connection, PgConnection, SqliteConnection, connection::SimpleConnection};
use invest_runtime::{
    backend_tests,
    db::DbConnection,
    error::Error,
    staged::{Begin, Finish, StagedTables},
    testkit::{Backend, TestDatabase},
};

static VERSIONS: StagedTables = StagedTables {
    what: "day",
    versions: "days",
    pointer: "current_day",
    pointer_column: "day_id",
    rows: &[("day_rows", "day_id")],
    outdated_reason: "DAY_OUTDATED",
};

fn connect(db: &TestDatabase) -> DbConnection {
    let columns = "as_of BIGINT NOT NULL, digest TEXT NOT NULL, state TEXT NOT NULL, \
        started_at BIGINT NOT NULL, heartbeat_at BIGINT NOT NULL, finished_at BIGINT, \
        row_count BIGINT NOT NULL DEFAULT 0";
    let rest =
        "CREATE TABLE current_day (singleton INTEGER NOT NULL PRIMARY KEY, day_id BIGINT NOT NULL);
         CREATE TABLE day_rows (day_id BIGINT NOT NULL, name TEXT NOT NULL);";
    match db.backend() {
        Backend::Sqlite => {
            let mut c =
                SqliteConnection::establish(db.url().trim_start_matches("sqlite://")).unwrap();
            c.batch_execute(&format!(
                "CREATE TABLE days (id INTEGER PRIMARY KEY AUTOINCREMENT, {columns}); {rest}"
            ))
            .unwrap();
            DbConnection::Sqlite(c)
        }
        Backend::Postgres => {
            let mut c = PgConnection::establish(db.url()).unwrap();
            c.batch_execute(&format!(
                "CREATE TABLE days (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, {columns}); {rest}"
            ))
            .unwrap();
            DbConnection::Pg(c)
        }
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
    c.batch_execute(&format!(
        "INSERT INTO day_rows (day_id, name) VALUES ({first}, 'x')"
    ))
    .unwrap();
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
    c.batch_execute(&format!(
        "INSERT INTO day_rows (day_id, name) VALUES ({third}, 'y')"
    ))
    .unwrap();
    t.discard(&mut c, third).unwrap();
    assert!(matches!(
        t.heartbeat(&mut c, third, 310),
        Err(Error::Unavailable(_))
    ));
    assert!(matches!(
        t.finish(&mut c, third, 30, "c", &[], 320, 1),
        Err(Error::Unavailable(_))
    ));
    assert_eq!(rows(&mut c), 1, "only the first day's row is left");
    // Discarding the current version does nothing.
    t.discard(&mut c, second).unwrap();
    assert_eq!(t.current(&mut c).unwrap().unwrap().id, second);

    // A loading day whose loader went away is pruned once its heartbeat is stale.
    let stale = started(t.begin(&mut c, 40, "d", 400).unwrap());
    assert_eq!(t.prunable(&mut c, 1, 400).unwrap(), Vec::<i64>::new());
    assert_eq!(t.prunable(&mut c, 1, 401).unwrap(), vec![stale]);
    for id in t.prunable(&mut c, 0, 401).unwrap() {
        t.discard(&mut c, id).unwrap();
    }
    assert_eq!(rows(&mut c), 0);
    assert_eq!(t.current(&mut c).unwrap().unwrap().id, second);
}

backend_tests!(the_protocol_on_its_own_tables);
