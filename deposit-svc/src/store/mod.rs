//! Storage: the only place that knows SQL. Every function takes a connection of either
//! backend and is meant to run inside `Database::run`.

pub mod deposits;
pub mod directory;
pub mod outbox;
pub mod schema;

use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use invest_runtime::db::Migrations;

const SQLITE: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// The schema of deposit-svc for both backends.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: || SQLITE,
    postgres: || POSTGRES,
    // Any constant unique to this service: replicas of deposit-svc migrate one at a time.
    lock_key: 0x6465_706f_7369_7473, // "deposits"
};

/// Directory states as stored.
pub mod state {
    /// Being written; not used.
    pub const LOADING: &str = "loading";
    /// What deposits are checked against.
    pub const CURRENT: &str = "current";
    /// Replaced; pruned.
    pub const RETIRED: &str = "retired";
}
