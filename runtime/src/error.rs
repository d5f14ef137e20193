//! The one error type of both servers and its one mapping to gRPC statuses (AIP-193 details).

use crate::db::{DbError, is_unavailable, storage_problem};
use invest_proto::status::{error_status, invalid_argument};
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
    /// A service this call needs did not answer; retrying later may succeed.
    #[error("{message}")]
    DependencyUnavailable {
        /// `ErrorInfo.reason`.
        reason: &'static str,
        /// For a person.
        message: String,
    },
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

/// A required text field of a record: trimmed, not empty (EMPTY_FIELD), and within the text
/// rules every side shares (INVALID_TEXT: no control or invisible characters, at most
/// [`invest_proto::ids::MAX_TEXT_BYTES`]), so that what is stored is the same on SQLite and
/// PostgreSQL and safe to show.
pub fn required_text(value: &str, field: impl Into<String>) -> Result<String> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(Error::invalid("EMPTY_FIELD", field, "must not be empty"));
    }
    invest_proto::ids::check_text(trimmed, invest_proto::ids::MAX_TEXT_BYTES)
        .map_err(|e| Error::invalid("INVALID_TEXT", field, e.to_string()))?;
    Ok(trimmed.to_owned())
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
            Error::DependencyUnavailable { reason, message } => {
                error_status(Code::Unavailable, reason, message)
            }
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
            Error::Db(DbError::Query(e)) if storage_problem(&e).is_some() => {
                let problem = storage_problem(&e).unwrap_or(crate::db::StorageProblem::Io);
                tracing::error!(error = %e, reason = problem.reason(), "the database cannot store: an operator must act");
                metrics::counter!("database_storage_errors_total", "reason" => problem.reason())
                    .increment(1);
                error_status(Code::Unavailable, problem.reason(), problem.message())
            }
            Error::Db(DbError::Query(e)) => {
                tracing::error!(error = %e, "database query failed");
                error_status(Code::Internal, "DATABASE_ERROR", "internal database error")
            }
        }
    }
}

/// What a service's own error enum needs to meet the runtime's: `From<$error>` for
/// `tonic::Status` (through the one mapping of [`Error`]), `From` the database's errors, and
/// `$error::invalid` for an invalid field. The enum must have a `Runtime(Error)` variant and
/// `impl From<$error> for Error` (its own refusals mapped to codes and reasons).
#[macro_export]
macro_rules! service_error {
    ($error:ty) => {
        impl From<$error> for ::tonic::Status {
            fn from(err: $error) -> Self {
                $crate::error::Error::from(err).into()
            }
        }

        impl From<$crate::db::DbError> for $error {
            fn from(err: $crate::db::DbError) -> Self {
                Self::Runtime(err.into())
            }
        }

        impl From<::diesel::result::Error> for $error {
            fn from(err: ::diesel::result::Error) -> Self {
                Self::Runtime(err.into())
            }
        }

        impl $error {
            /// INVALID_ARGUMENT for one field (the runtime's).
            pub fn invalid(
                reason: &'static str,
                field: impl Into<String>,
                description: impl Into<String>,
            ) -> Self {
                Self::Runtime($crate::error::Error::invalid(reason, field, description))
            }
        }
    };
}

/// Result of server operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use diesel::result::{DatabaseErrorKind, Error as DieselError};

    use super::*;
    use invest_proto::status::reason;

    fn db_error(kind: DatabaseErrorKind, message: &str) -> Error {
        Error::Db(DbError::Query(DieselError::DatabaseError(
            kind,
            Box::new(message.to_owned()),
        )))
    }

    /// What SQLite and PostgreSQL say when storage fails reaches the caller as UNAVAILABLE
    /// with a reason, never as INTERNAL.
    #[test]
    fn storage_problems_are_unavailable_with_a_reason() {
        for (kind, message, expected) in [
            (
                DatabaseErrorKind::Unknown,
                "database or disk is full",
                "DATABASE_FULL",
            ),
            (
                DatabaseErrorKind::Unknown,
                "could not extend file \"base/16384/2619\": No space left on device",
                "DATABASE_FULL",
            ),
            (
                DatabaseErrorKind::Unknown,
                "attempt to write a readonly database",
                "DATABASE_READ_ONLY",
            ),
            (
                DatabaseErrorKind::ReadOnlyTransaction,
                "cannot execute INSERT in a read-only transaction",
                "DATABASE_READ_ONLY",
            ),
            (
                DatabaseErrorKind::Unknown,
                "disk I/O error",
                "DATABASE_IO_ERROR",
            ),
        ] {
            let status = Status::from(db_error(kind, message));
            assert_eq!(status.code(), Code::Unavailable, "{message}");
            assert_eq!(reason(&status).as_deref(), Some(expected), "{message}");
            assert!(!status.message().contains(message), "{}", status.message());
        }
        let status = Status::from(db_error(DatabaseErrorKind::Unknown, "syntax error"));
        assert_eq!(status.code(), Code::Internal);
    }
}
