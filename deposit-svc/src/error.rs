//! Errors: the type both servers share, mapped to gRPC statuses in one place.

pub use invest_runtime::error::{Error, Result};
