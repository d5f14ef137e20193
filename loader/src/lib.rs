//! The daily loader: reads a delivery folder, cleans it by the rules of `DATASET.md`, and
//! streams the cleaned day to portfolio-svc (and the account directory to deposit-svc).
//!
//! - [`clean`]: the rules, as pure functions over rows (no I/O).
//! - [`pipeline`]: reading the three files, grouping rows by account with bounded memory,
//!   and producing the cleaned day plus the report.
//! - [`generate`]: a synthetic delivery in the exact format, deterministic for a seed.

pub mod clean;
pub mod generate;
pub mod pipeline;
