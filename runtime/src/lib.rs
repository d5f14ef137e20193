//! The server runtime portfolio-svc and deposit-svc share: how a server starts and stops,
//! listens and guards every call, authenticates callers, reaches its database, pages lists,
//! reports health and metrics, and the test kit of both. The wire contract it serves is the
//! `invest-proto` crate.

pub mod auth;
pub mod db;
pub mod error;
pub mod guard;
pub mod health;
pub mod launch;
pub mod listener;
pub mod paging;
pub mod serve;
pub mod staged;
pub mod telemetry;
#[cfg(feature = "testkit")]
pub mod testkit;
