//! Every query of the read path is answered from an index: the plan of each statement the
//! screens run is checked on both backends, so that a query that would scan a table (and
//! slow down with the number of accounts) fails here instead of in production. Three
//! snapshots are kept, so on PostgreSQL (a partition per snapshot) each statement must also
//! read one partition only, with the plan made for its values and with a generic plan (what
//! a prepared statement may switch to).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use diesel::{
    QueryableByName, RunQueryDsl, connection::SimpleConnection, prelude::*, sql_types::Text,
};
use invest_runtime::{
    backend_tests,
    db::{Database, DatabaseUrl, DbConfig, DbConnection},
    staged::Begin,
    testkit::{Backend, TestDatabase},
};
use portfolio_svc::{
    error::Result,
    store::{MIGRATIONS, SNAPSHOTS, holds, ledger, read},
};

#[derive(QueryableByName)]
struct SqlitePlanRow {
    #[diesel(sql_type = Text)]
    detail: String,
}

#[derive(QueryableByName)]
struct PgPlanRow {
    #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
    line: String,
}

/// A bind value as diesel's debug output prints it, back to an SQL literal.
fn literal(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => format!("'{}'", s.replace('\'', "''")),
        serde_json::Value::Array(items) => {
            format!(
                "ARRAY[{}]",
                items.iter().map(literal).collect::<Vec<_>>().join(",")
            )
        }
        other => other.to_string(),
    }
}

fn plan(conn: &mut DbConnection, statement: &str) -> Vec<String> {
    let (sql, binds) = statement
        .split_once(" -- binds: ")
        .unwrap_or((statement, "[]"));
    match conn {
        DbConnection::Sqlite(c) => diesel::sql_query(format!("EXPLAIN QUERY PLAN {sql}"))
            .load::<SqlitePlanRow>(c)
            .unwrap()
            .into_iter()
            .map(|r| r.detail)
            .collect(),
        DbConnection::Pg(c) => {
            let binds: Vec<serde_json::Value> = serde_json::from_str(binds).unwrap();
            let args = binds.iter().map(literal).collect::<Vec<_>>().join(", ");
            let execute = if binds.is_empty() {
                "EXECUTE q".to_owned()
            } else {
                format!("EXECUTE q({args})")
            };
            // With sequential scans priced out, a plan that still scans has no index to use.
            // Executed (ANALYZE), so that partitions pruned while it runs show as never
            // executed.
            let mut lines = Vec::new();
            for mode in ["force_custom_plan", "force_generic_plan"] {
                c.batch_execute(&format!(
                    "SET enable_seqscan = off; SET plan_cache_mode = {mode}; DEALLOCATE ALL; \
                     PREPARE q AS {sql}"
                ))
                .unwrap();
                lines.push(format!("-- {mode}"));
                lines.extend(
                    diesel::sql_query(format!(
                        "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) {execute}"
                    ))
                    .load::<PgPlanRow>(c)
                    .unwrap()
                    .into_iter()
                    .map(|r| r.line),
                );
            }
            lines
        }
    }
}

async fn read_queries_use_indexes(backend: Backend) {
    let Some(test_db) = TestDatabase::create(backend, "plans") else {
        return;
    };
    let config = DbConfig {
        url: DatabaseUrl::parse(test_db.url()).unwrap(),
        pool_size: 1,
        acquire_timeout: Duration::from_secs(10),
    };
    let db = tokio::task::spawn_blocking(move || Database::open(&config, &MIGRATIONS).unwrap())
        .await
        .unwrap();
    db.run(|c| -> Result<()> {
        let account = invest_proto::ids::AccountNumber::parse("111111111111").unwrap();
        let account = &account;
        // Three snapshots through the staged-load protocol (ids 1, 2, 3; 3 is current).
        for day in 1..=3_i64 {
            let as_of = day * 86_400_000_000;
            let digest = format!("{day:064x}");
            let Begin::Started(id) = SNAPSHOTS.begin(c, as_of, &digest, as_of)? else {
                unreachable!("a new day begins")
            };
            let into = match c {
                DbConnection::Pg(_) => "_loading",
                DbConnection::Sqlite(_) => "",
            };
            c.batch_execute(&format!(
                "INSERT INTO instruments{into} VALUES ({id}, 'CASH', '현금', '채권 / 현금');
                 INSERT INTO accounts{into} VALUES ({id}, '111111111111', '이정희', 'b', 'n', 0, 10);
                 INSERT INTO holdings{into} VALUES ({id}, '111111111111', 'CASH', 1, 10, 10);"
            ))?;
            SNAPSHOTS.finish(c, id, as_of, &digest, &[], as_of, 1)?;
        }
        let statements = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = statements.clone();
        c.set_instrumentation(move |event: diesel::connection::InstrumentationEvent<'_>| {
            if let diesel::connection::InstrumentationEvent::StartQuery { query, .. } = event {
                sink.lock().unwrap().push(query.to_string());
            }
        });
        read::current(c)?;
        read::current_ref(c)?;
        read::readable_snapshot(c, 1)?;
        read::owned_account(c, read::Pin::Current, account, "이정희")?;
        read::owned_account(c, read::Pin::Snapshot(1), account, "이정희")?;
        read::accounts_page(c, 1, "이정희", "", 51)?;
        read::owned_holdings_page(c, read::Pin::Current, account, "이정희", "", 101)?;
        read::owned_holdings_page(c, read::Pin::Snapshot(1), account, "이정희", "", 101)?;
        read::account_at(c, 1, account)?;
        read::account_holdings(c, 1, account, 1001)?;
        read::current_with_cash(c)?;
        read::cash_instrument(c, 1)?;
        ledger::overlay_each(c, &["111111111111", "222222222222"], 0)?;
        ledger::overlay_since(c, "111111111111", 0)?;
        ledger::cash_line(c, 1, account)?;
        // What GetAccount's available cash and a withdrawal's hold read (one statement).
        holds::cash(c, read::SnapshotRef { id: 1, as_of: 0 }, "111111111111")?;
        c.set_instrumentation(|_: diesel::connection::InstrumentationEvent<'_>| {});
        let statements = statements.lock().unwrap().clone();
        // With a current snapshot, current_with_cash also reads its cash instrument.
        assert_eq!(statements.len(), 18, "{statements:#?}");
        for statement in statements {
            let plan = plan(c, &statement);
            if std::env::var_os("SHOW_PLANS").is_some() {
                eprintln!("{statement}\n  {}", plan.join("\n  "));
            }
            // SQLite: no SCAN. PostgreSQL: no Seq Scan, and every index condition on a
            // snapshot table starts from the snapshot (a condition without it walks the whole
            // index).
            let scans: Vec<_> = plan
                .iter()
                .filter(|line| {
                    (line.starts_with("SCAN ") && !line.contains("CONSTANT ROW"))
                        || line.contains("Seq Scan")
                        || (line.contains("Index Cond")
                            && !line.contains("snapshot_id =")
                            && !line.contains("(id =")
                            && !line.contains("(account_number =")
                            && !line.contains("(singleton ="))
                })
                .collect();
            assert!(
                scans.is_empty(),
                "{statement}\nscans a table:\n{}",
                plan.join("\n")
            );
            // One snapshot, one partition: the others are pruned when the plan is made or when
            // it starts, never read.
            for table in ["instruments", "accounts", "holdings"] {
                let read: std::collections::BTreeSet<&str> = plan
                    .iter()
                    .filter(|line| !line.contains("never executed"))
                    .filter_map(|line| {
                        // `… on holdings_v3 …` or `… on holdings_v3_pkey` (an index of it):
                        // the partition is the version number.
                        let prefix = format!(" on {table}_v");
                        let at = line.find(&prefix)? + prefix.len();
                        let digits = line[at..].find(|c: char| !c.is_ascii_digit())?;
                        Some(&line[at..at + digits])
                    })
                    .collect();
                assert!(
                    read.len() <= 1,
                    "{statement}\nreads {read:?}, more than one snapshot's partition:\n{}",
                    plan.join("\n")
                );
            }
            // A page must come in index order: sorting means reading the whole range first.
            assert!(
                !plan.iter().any(|line| line.contains("TEMP B-TREE")),
                "{statement}\nsorts instead of reading in index order:\n{}",
                plan.join("\n")
            );
            // A customer's page must seek to the customer, not walk the snapshot's accounts
            // in number order filtering by owner (which a primary-key range would also allow).
            let order = statement.split_once("ORDER BY").map(|(_, order)| order);
            if order.is_some_and(|o| o.contains("accounts")) && statement.contains("customer_name")
            {
                // On PostgreSQL, a partition's copy of accounts_by_owner is named after its
                // columns.
                assert!(
                    plan.iter().any(|line| line.contains("accounts_by_owner")
                        || line.contains("_snapshot_id_customer_name_")),
                    "{statement}\ndoes not seek by owner:\n{}",
                    plan.join("\n")
                );
            }
        }
        Ok(())
    })
    .await
    .unwrap();
}

backend_tests!(read_queries_use_indexes);
