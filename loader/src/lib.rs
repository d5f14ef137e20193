//! The daily loader: reads a delivery folder, cleans it by the rules of `DATASET.md`, and
//! streams the cleaned day to portfolio-svc.
//!
//! - [`clean`]: the rules, as pure functions over rows (no I/O).
//! - [`pipeline`]: reading the three files, grouping rows by account with bounded memory,
//!   and producing the cleaned day plus the cleaning report.
//! - [`guard`]: the shrink guard (the loss guard is the cleaning report's).
//! - [`push`]: streaming the cleaned day over gRPC, to both services or neither.
//! - [`cli`]: the command line (`load`, `validate`, and `gen`, `token`, `sign` as thin calls
//!   to `invest_daygen` and `invest_proto`).
//! - [`summary`]: what it prints: the cleaning report, the guards' verdicts, the push.

pub mod clean;
pub mod cli;
pub mod guard;
pub mod pipeline;
pub mod push;
pub mod summary;
