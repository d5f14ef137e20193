//! Storage: the only place that knows SQL. Every function takes a connection of either
//! backend and is meant to run inside `Database::run`.

pub mod deposits;
pub mod directory;
pub mod outbox;
pub mod schema;
pub mod withdrawals;

use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use invest_runtime::{
    db::Migrations,
    staged::{RowTable, StagedTables},
};

const SQLITE: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// The schema of deposit-svc for both backends.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: || SQLITE,
    postgres: || POSTGRES,
    // Any constant unique to this service: replicas of deposit-svc migrate one at a time.
    lock_key: 0x6465_706f_7369_7473, // "deposits"
};

/// The account directory under the staged-load protocol: `directories`, the
/// `current_directory` pointer, and its entries.
pub static DIRECTORIES: StagedTables = StagedTables {
    what: "directory",
    versions: "directories",
    pointer: "current_directory",
    pointer_column: "directory_id",
    rows: &[RowTable {
        name: "directory_entries",
        version_column: "directory_id",
        key_column: "account_number",
    }],
    outdated_reason: "DIRECTORY_OUTDATED",
};
