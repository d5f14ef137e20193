//! Storage: the only place that knows SQL. Every function takes a connection of either
//! backend and is meant to run inside `Database::run`.

pub mod ingest;
pub mod ledger;
pub mod read;
pub mod schema;

use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use invest_runtime::db::Migrations;

const SQLITE: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// The schema of portfolio-svc for both backends.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: || SQLITE,
    postgres: || POSTGRES,
    // Any constant unique to this service: replicas of portfolio-svc migrate one at a time.
    lock_key: 0x706f_7274_666f_6c69, // "portfoli"
};

/// Snapshot states as stored.
pub mod state {
    /// Being written; invisible to readers.
    pub const LOADING: &str = "loading";
    /// What readers see.
    pub const CURRENT: &str = "current";
    /// Replaced, kept for paging that started on it, then pruned.
    pub const RETIRED: &str = "retired";
}

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
