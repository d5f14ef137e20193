//! deposit-svc's errors: the refusals of its own rules, and the runtime's (invalid arguments,
//! the database, start-up). All are mapped to gRPC statuses in one place, the runtime's
//! mapping (`invest_runtime::error`).

use invest_proto::ids::{AccountNumber, TransferId};
use invest_runtime::error::Error as RuntimeError;

/// Everything a deposit call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The account is not in the directory, or is not the caller's: one answer for both.
    #[error("account {0} not found")]
    AccountNotFound(AccountNumber),
    /// The transfer does not exist, or is not the caller's: one answer for both.
    #[error("transfer {0} not found")]
    TransferNotFound(TransferId),
    /// Phase 1 named someone else than the account's owner.
    #[error("customer_name: is not the name of the owner of account {0}")]
    CustomerNameMismatch(AccountNumber),
    /// Phase 2 carried a signature that does not match phase 1's fields.
    #[error(
        "signature: does not match BLAKE3(account_number + customer_name + amount) of the registered transfer; {what_next}"
    )]
    SignatureMismatch {
        /// What happens now (attempts left, or rejected).
        what_next: String,
    },
    /// Too many wrong signatures: the transfer can no longer be confirmed.
    #[error("transfer {0} was rejected after too many wrong signatures; register a new one")]
    TransferRejected(TransferId),
    /// Phase 2 came after the deadline.
    #[error("transfer {id} expired at {at} before it was confirmed; register a new one")]
    TransferExpired {
        /// The transfer.
        id: TransferId,
        /// Its deadline, RFC 3339.
        at: String,
    },
    /// The AIP-155 request id was used before with other fields.
    #[error(
        "request_id {0:?} was already used for a transfer with other fields; use a new request_id for a new transfer"
    )]
    RequestIdReused(String),
    /// A withdrawal cancelled by the customer cannot be confirmed.
    #[error("withdrawal {0} was cancelled; register a new one")]
    TransferCancelled(TransferId),
    /// Only a pending withdrawal can be cancelled.
    #[error("withdrawal {id} is {status} and can no longer be cancelled")]
    NotCancellable {
        /// The withdrawal.
        id: TransferId,
        /// Where it stands.
        status: &'static str,
    },
    /// portfolio-svc refused to hold the amount: not enough available cash.
    #[error("{0}")]
    InsufficientFunds(String),
    /// The withdrawal's hold was never confirmed by portfolio-svc (phase 1 failed).
    #[error(
        "withdrawal {0} holds no cash (its phase 1 did not complete); register it again with the same request_id"
    )]
    NotHeld(TransferId),
    /// A rule of the runtime: an invalid argument, the database, not ready yet.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

impl From<Error> for RuntimeError {
    fn from(err: Error) -> Self {
        let message = err.to_string();
        match err {
            Error::AccountNotFound(_) | Error::TransferNotFound(_) => Self::NotFound(message),
            Error::CustomerNameMismatch(_) => Self::InvalidArgument {
                reason: "CUSTOMER_NAME_MISMATCH",
                message,
                fields: vec![(
                    "customer_name".into(),
                    "is not the name of the account's owner".into(),
                )],
            },
            Error::SignatureMismatch { .. } => Self::InvalidArgument {
                reason: "SIGNATURE_MISMATCH",
                message,
                fields: vec![(
                    "signature".into(),
                    "does not match the registered deposit".into(),
                )],
            },
            Error::TransferRejected(_) => Self::FailedPrecondition {
                reason: "TRANSFER_REJECTED",
                message,
            },
            Error::TransferExpired { .. } => Self::FailedPrecondition {
                reason: "TRANSFER_EXPIRED",
                message,
            },
            Error::TransferCancelled(_) => Self::FailedPrecondition {
                reason: "TRANSFER_CANCELLED",
                message,
            },
            Error::NotCancellable { .. } => Self::FailedPrecondition {
                reason: "NOT_CANCELLABLE",
                message,
            },
            Error::InsufficientFunds(_) => Self::FailedPrecondition {
                reason: "INSUFFICIENT_FUNDS",
                message,
            },
            Error::NotHeld(_) => Self::FailedPrecondition {
                reason: "NOT_HELD",
                message,
            },
            Error::RequestIdReused(_) => Self::AlreadyExists {
                reason: "REQUEST_ID_REUSED",
                message,
            },
            Error::Runtime(err) => err,
        }
    }
}

invest_runtime::service_error!(Error);

/// Result of deposit-svc's operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
