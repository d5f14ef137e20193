//! The wire contract of the invest services (see `CONTRACT.md`): the generated prost messages
//! and tonic stubs, plus the few helpers every side of the wire must agree on: JWT claims and
//! verification, AIP-193 error details, the snapshot digest and the identifier formats.
//!
//! With the `server` feature it also carries the plumbing both servers share (database pool
//! and migrations, health, reflection, request guard, metrics, shutdown); the loader does not
//! compile it.

pub mod auth;
pub mod digest;
pub mod ids;
pub mod status;
pub mod time;

#[cfg(feature = "server")]
pub mod server;

/// `invest.portfolio.v1`: the portfolio screens, the daily ingest and the deposit ledger.
pub mod portfolio {
    /// Version 1 of the package.
    pub mod v1 {
        #![allow(missing_docs, clippy::all, clippy::pedantic)]
        tonic::include_proto!("invest.portfolio.v1");
    }
}

/// `invest.deposit.v1`: two-phase deposits and the account directory.
pub mod deposit {
    /// Version 1 of the package.
    pub mod v1 {
        #![allow(missing_docs, clippy::all, clippy::pedantic)]
        tonic::include_proto!("invest.deposit.v1");
    }
}

/// Encoded `FileDescriptorSet` of every `.proto` file of this crate and its imports, for
/// server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/invest_descriptor.bin"));
