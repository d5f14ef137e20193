//! portfolio-svc's errors: the refusals of its own rules, and the runtime's (invalid arguments,
//! the database, start-up). All are mapped to gRPC statuses in one place, the runtime's
//! mapping (`invest_runtime::error`).

use invest_runtime::error::Error as RuntimeError;

/// Everything a portfolio call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The account does not exist, or is not the caller's: one answer for both.
    #[error("account {0} not found")]
    AccountNotFound(String),
    /// A credit to an account that no kept snapshot holds.
    #[error("account {0} is in no loaded snapshot; the credit is not recorded")]
    AccountNotLoaded(String),
    /// A figure of an account does not fit in 64 bits: the data is wrong, not the request.
    #[error("the {0} of this account does not fit in 64 bits")]
    FigureOutOfRange(&'static str),
    /// The snapshot a page token started on is no longer kept.
    #[error(
        "page_token: the snapshot this listing started on is no longer kept; start again from the first page"
    )]
    PageTokenExpired,
    /// A transfer id credited before with other fields.
    #[error(
        "transfer {0} was already recorded with other fields; a transfer id is one deposit or one withdrawal only"
    )]
    TransferIdReused(String),
    /// A withdrawal asks for more than the account's available cash.
    #[error("account {account} has {available} won of available cash; {amount} won cannot be held")]
    InsufficientFunds {
        /// The account.
        account: String,
        /// Its available cash.
        available: i64,
        /// What was asked.
        amount: i64,
    },
    /// A hold that is closed (taken or released) cannot change any more.
    #[error("the hold of transfer {id} is {state}: {what}")]
    HoldClosed {
        /// The transfer.
        id: String,
        /// `taken` or `released`.
        state: &'static str,
        /// What the call would have done.
        what: &'static str,
    },
    /// No hold of this transfer.
    #[error("no hold of transfer {0}")]
    HoldNotFound(String),
    /// A rule of the runtime: an invalid argument, the database, not ready yet.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

impl From<Error> for RuntimeError {
    fn from(err: Error) -> Self {
        let message = err.to_string();
        match err {
            Error::AccountNotFound(_) | Error::AccountNotLoaded(_) => Self::NotFound(message),
            Error::FigureOutOfRange(_) => Self::FailedPrecondition {
                reason: "FIGURE_OUT_OF_RANGE",
                message,
            },
            Error::PageTokenExpired => Self::InvalidArgument {
                reason: "PAGE_TOKEN_EXPIRED",
                message,
                fields: vec![(
                    "page_token".into(),
                    "the snapshot of this listing is no longer kept".into(),
                )],
            },
            Error::InsufficientFunds { .. } => Self::FailedPrecondition {
                reason: "INSUFFICIENT_FUNDS",
                message,
            },
            Error::HoldClosed { .. } => Self::FailedPrecondition {
                reason: "HOLD_CLOSED",
                message,
            },
            Error::HoldNotFound(_) => Self::NotFound(message),
            Error::TransferIdReused(_) => Self::AlreadyExists {
                reason: "TRANSFER_ID_REUSED",
                message,
            },
            Error::Runtime(err) => err,
        }
    }
}

invest_runtime::service_error!(Error);

/// Result of portfolio-svc's operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
