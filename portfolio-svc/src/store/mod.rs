//! Storage: the only place that knows SQL. Every function takes a connection of either
//! backend and is meant to run inside `Database::run`.

pub mod holds;
pub mod ingest;
pub mod ledger;
pub mod read;
pub mod schema;

use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use invest_runtime::{
    db::Migrations,
    staged::{RowTable, StagedTables},
};

const SQLITE: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// The schema of portfolio-svc for both backends.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: || SQLITE,
    postgres: || POSTGRES,
    // Any constant unique to this service: replicas of portfolio-svc migrate one at a time.
    lock_key: 0x706f_7274_666f_6c69, // "portfoli"
};

/// Snapshot states as stored (the staged-load protocol's).
pub use invest_runtime::staged::state;

/// The daily snapshot under the staged-load protocol: `snapshots`, the `current_snapshot`
/// pointer, and its rows (holdings first, so that a reader never finds a holding without its
/// account while a snapshot is deleted).
pub static SNAPSHOTS: StagedTables = StagedTables {
    what: "snapshot",
    versions: "snapshots",
    pointer: "current_snapshot",
    pointer_column: "snapshot_id",
    rows: &[
        RowTable {
            name: "holdings",
            version_column: "snapshot_id",
            key_column: "account_number",
        },
        RowTable {
            name: "accounts",
            version_column: "snapshot_id",
            key_column: "account_number",
        },
        RowTable {
            name: "instruments",
            version_column: "snapshot_id",
            key_column: "isin",
        },
    ],
    outdated_reason: "SNAPSHOT_OUTDATED",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_backends_have_the_same_migrations() {
        let names = |m: EmbeddedMigrations| -> Vec<String> {
            diesel::migration::MigrationSource::<diesel::sqlite::Sqlite>::migrations(&m)
                .unwrap()
                .iter()
                .map(|m| m.name().to_string())
                .collect()
        };
        assert_eq!(names(SQLITE), names(POSTGRES));
    }
}
