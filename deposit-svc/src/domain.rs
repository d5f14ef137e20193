//! Domain values of deposits, parsed once at the edge: transfer ids, signatures, request
//! ids, amounts and statuses. They travel typed down to the store.

use diesel::{
    backend::Backend,
    deserialize::{self, FromSql, FromSqlRow},
    expression::AsExpression,
    serialize::{self, Output, ToSql},
    sql_types::Text,
};
use invest_proto::{
    deposit::v1::{DepositStatus, WithdrawalStatus},
    ids::Won,
};
use invest_runtime::error::Error as RuntimeError;

use crate::error::{Error, Result};

/// Where a transfer stands; stored as text (`pending`, `confirmed`, `expired`, `rejected`,
/// which the database's CHECK constraint enforces).
#[derive(Debug, Clone, Copy, PartialEq, Eq, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
pub enum Status {
    /// Waiting for phase 2.
    Pending,
    /// Confirmed.
    Confirmed,
    /// Not confirmed in time.
    Expired,
    /// Too many wrong signatures.
    Rejected,
    /// Cancelled by the customer (withdrawals only).
    Cancelled,
}

impl Status {
    /// Stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Confirmed => "confirmed",
            Self::Expired => "expired",
            Self::Rejected => "rejected",
            Self::Cancelled => "cancelled",
        }
    }

    /// From stored text.
    fn from_stored(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(Self::Pending),
            "confirmed" => Some(Self::Confirmed),
            "expired" => Some(Self::Expired),
            "rejected" => Some(Self::Rejected),
            "cancelled" => Some(Self::Cancelled),
            _ => None,
        }
    }

    /// The status a reader sees of a transfer stored as `self` with deadline `expires_at`:
    /// a pending one past its deadline is expired, whether or not the sweep has written it
    /// down yet.
    pub fn effective(self, expires_at: i64, now: i64) -> Self {
        match self {
            Self::Pending if now >= expires_at => Self::Expired,
            status => status,
        }
    }

    /// On the wire, for a deposit (which is never cancelled).
    pub fn to_wire(self) -> DepositStatus {
        match self {
            Self::Pending => DepositStatus::Pending,
            Self::Confirmed => DepositStatus::Confirmed,
            Self::Expired | Self::Cancelled => DepositStatus::Expired,
            Self::Rejected => DepositStatus::Rejected,
        }
    }

    /// On the wire, for a withdrawal.
    pub fn to_withdrawal_wire(self) -> WithdrawalStatus {
        match self {
            Self::Pending => WithdrawalStatus::Pending,
            Self::Confirmed => WithdrawalStatus::Confirmed,
            Self::Expired => WithdrawalStatus::Expired,
            Self::Rejected => WithdrawalStatus::Rejected,
            Self::Cancelled => WithdrawalStatus::Cancelled,
        }
    }

    /// From a withdrawals list filter; UNSPECIFIED is "any".
    pub fn from_withdrawal_filter(value: i32) -> Result<Option<Self>> {
        match WithdrawalStatus::try_from(value) {
            Ok(WithdrawalStatus::Unspecified) => Ok(None),
            Ok(WithdrawalStatus::Pending) => Ok(Some(Self::Pending)),
            Ok(WithdrawalStatus::Confirmed) => Ok(Some(Self::Confirmed)),
            Ok(WithdrawalStatus::Expired) => Ok(Some(Self::Expired)),
            Ok(WithdrawalStatus::Rejected) => Ok(Some(Self::Rejected)),
            Ok(WithdrawalStatus::Cancelled) => Ok(Some(Self::Cancelled)),
            Err(_) => Err(Error::invalid(
                "INVALID_STATUS",
                "status",
                format!("unknown status {value}"),
            )),
        }
    }

    /// From a list filter; UNSPECIFIED is "any".
    pub fn from_filter(value: i32) -> Result<Option<Self>> {
        match DepositStatus::try_from(value) {
            Ok(DepositStatus::Unspecified) => Ok(None),
            Ok(DepositStatus::Pending) => Ok(Some(Self::Pending)),
            Ok(DepositStatus::Confirmed) => Ok(Some(Self::Confirmed)),
            Ok(DepositStatus::Expired) => Ok(Some(Self::Expired)),
            Ok(DepositStatus::Rejected) => Ok(Some(Self::Rejected)),
            Err(_) => Err(Error::invalid(
                "INVALID_STATUS",
                "status",
                format!("unknown status {value}"),
            )),
        }
    }
}

impl<DB: Backend> ToSql<Text, DB> for Status
where
    str: ToSql<Text, DB>,
{
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, DB>) -> serialize::Result {
        self.as_str().to_sql(out)
    }
}

impl<DB: Backend> FromSql<Text, DB> for Status
where
    String: FromSql<Text, DB>,
{
    fn from_sql(bytes: DB::RawValue<'_>) -> deserialize::Result<Self> {
        let text = String::from_sql(bytes)?;
        Self::from_stored(&text).ok_or_else(|| format!("unknown deposit status {text:?}").into())
    }
}

pub use invest_proto::ids::TransferId;

/// A fresh transfer id from the operating system's random source.
pub fn new_transfer_id() -> Result<TransferId> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| {
        RuntimeError::Unavailable(format!("no randomness available for a transfer id: {e}"))
    })?;
    Ok(TransferId::from_random(bytes))
}

/// Accepts exactly what [`new_transfer_id`] produces (hex case-insensitive).
pub fn parse_transfer_id(text: &str) -> Result<TransferId> {
    TransferId::parse(text).map_err(|e| Error::invalid("INVALID_TRANSFER_ID", "transfer_id", e.0))
}

pub use invest_proto::signature::Signature;

/// A phase-2 signature as given (INVALID_SIGNATURE when it is not 64 hex digits).
pub fn parse_signature(text: &str) -> Result<Signature> {
    Signature::parse(text).map_err(|e| Error::invalid("INVALID_SIGNATURE", "signature", e.0))
}

/// An AIP-155 request id: up to 128 printable ASCII characters; empty means none.
pub fn parse_request_id(text: &str) -> Result<Option<String>> {
    if text.is_empty() {
        return Ok(None);
    }
    if text.len() > 128 || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid(
            "INVALID_REQUEST_ID",
            "request_id",
            "must be at most 128 printable ASCII characters without spaces (a UUID is ideal)",
        ));
    }
    Ok(Some(text.to_owned()))
}

/// The amount of a deposit: 0 < amount <= max.
pub fn check_amount(amount: i64, max: i64) -> Result<Won> {
    match Won::new(amount) {
        Some(won) if amount > 0 && amount <= max => Ok(won),
        _ => Err(Error::invalid(
            "AMOUNT_OUT_OF_RANGE",
            "amount",
            format!("must be between 1 and {max} won, got {amount}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_ids() {
        let a = new_transfer_id().unwrap();
        let b = new_transfer_id().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 32);
        assert_eq!(parse_transfer_id(&a.as_str().to_uppercase()).unwrap(), a);
        assert!(parse_transfer_id("1234").is_err());
    }

    #[test]
    fn amounts_and_request_ids() {
        assert!(check_amount(0, 10).is_err());
        assert!(check_amount(-1, 10).is_err());
        assert!(check_amount(11, 10).is_err());
        assert_eq!(check_amount(10, 10).unwrap().get(), 10);
        assert_eq!(parse_request_id("").unwrap(), None);
        assert!(parse_request_id("has space").is_err());
        assert!(parse_request_id(&"x".repeat(129)).is_err());
        assert_eq!(parse_request_id("9b2f").unwrap().as_deref(), Some("9b2f"));
    }
}
