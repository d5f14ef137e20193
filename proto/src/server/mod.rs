//! Plumbing shared by portfolio-svc and deposit-svc (feature `server`).

pub mod db;
pub mod grpc;
pub mod launch;
pub mod telemetry;
#[cfg(feature = "testkit")]
pub mod testkit;
