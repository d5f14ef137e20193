//! The one error type of both servers and its one mapping to gRPC statuses (AIP-193 details).

use super::db::{DbError, is_unavailable};
use crate::status::{error_status, invalid_argument};
use tonic::{Code, Status};

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database failed or could not be reached.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The account (or snapshot) does not exist or is not the caller's: one answer for both.
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed; `fields` name each offending field.
    #[error("{message}")]
    InvalidArgument {
        /// `ErrorInfo.reason`.
        reason: &'static str,
        /// For a person.
        message: String,
        /// (field path, description) for `BadRequest`.
        fields: Vec<(String, String)>,
    },
    /// The request is well-formed but the system is not in a state to accept it.
    #[error("{message}")]
    FailedPrecondition {
        /// `ErrorInfo.reason`.
        reason: &'static str,
        /// For a person.
        message: String,
    },
    /// The request conflicts with what is stored (an idempotency key reused).
    #[error("{message}")]
    AlreadyExists {
        /// `ErrorInfo.reason`.
        reason: &'static str,
        /// For a person.
        message: String,
    },
    /// Not ready yet (still migrating) or shutting down.
    #[error("{0}")]
    Unavailable(String),
}

impl Error {
    /// INVALID_ARGUMENT for one field.
    pub fn invalid(
        reason: &'static str,
        field: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        let field = field.into();
        let description = description.into();
        Self::InvalidArgument {
            reason,
            message: format!("{field}: {description}"),
            fields: vec![(field, description)],
        }
    }
}

impl From<diesel::result::Error> for Error {
    fn from(err: diesel::result::Error) -> Self {
        Self::Db(DbError::Query(err))
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        match err {
            Error::NotFound(message) => error_status(Code::NotFound, "NOT_FOUND", message),
            Error::InvalidArgument {
                reason,
                message,
                fields,
            } => invalid_argument(reason, message, fields),
            Error::FailedPrecondition { reason, message } => {
                error_status(Code::FailedPrecondition, reason, message)
            }
            Error::AlreadyExists { reason, message } => {
                error_status(Code::AlreadyExists, reason, message)
            }
            Error::Unavailable(message) => error_status(Code::Unavailable, "NOT_READY", message),
            Error::Db(DbError::Busy(wait)) => error_status(
                Code::Unavailable,
                "DATABASE_BUSY",
                format!(
                    "the database is saturated (no connection free within {wait:?}); retry with backoff"
                ),
            ),
            Error::Db(DbError::Unavailable(detail) | DbError::Migration(detail)) => {
                tracing::warn!(error = %detail, "database unavailable");
                error_status(
                    Code::Unavailable,
                    "DATABASE_UNAVAILABLE",
                    "the database is unreachable; retry with backoff",
                )
            }
            Error::Db(DbError::Query(e)) if is_unavailable(&e) => {
                tracing::warn!(error = %e, "database unavailable");
                error_status(
                    Code::Unavailable,
                    "DATABASE_UNAVAILABLE",
                    "the database is unreachable or busy; retry with backoff",
                )
            }
            Error::Db(DbError::Query(e)) => {
                tracing::error!(error = %e, "database query failed");
                error_status(Code::Internal, "DATABASE_ERROR", "internal database error")
            }
        }
    }
}

/// Result of server operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
