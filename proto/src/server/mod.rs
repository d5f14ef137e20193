//! Plumbing shared by portfolio-svc and deposit-svc (feature `server`).

pub mod db;
pub mod error;
pub mod grpc;
pub mod guard;
pub mod launch;
pub mod listener;
pub mod paging;
pub mod telemetry;
#[cfg(feature = "testkit")]
pub mod testkit;
