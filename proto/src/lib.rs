//! The wire contract of the invest services: the generated prost messages, tonic clients and
//! service traits, plus the few values every side of the wire must agree on: JWT claims and
//! the service token, AIP-193 error details, the snapshot digest, identifier and text rules,
//! the deposit signature and the profit rate. What a client needs, and nothing else; the
//! servers' runtime is the `invest-runtime` crate.

pub mod auth;
pub mod digest;
pub mod figures;
pub mod ids;
pub mod signature;
pub mod status;
pub mod time;

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
