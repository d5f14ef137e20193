//! Errors in the AIP-193 style: every error status carries one `google.rpc.ErrorInfo`
//! (`reason` in UPPER_SNAKE_CASE, `domain` `invest`) and, for bad fields, a
//! `google.rpc.BadRequest` naming each field.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// The `domain` of every `ErrorInfo` we send.
pub const ERROR_DOMAIN: &str = "invest";

/// A status with an `ErrorInfo`.
pub fn error_status(code: Code, reason: &str, message: impl Into<String>) -> Status {
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, HashMap::new()),
    )
}

/// INVALID_ARGUMENT with an `ErrorInfo` and a `BadRequest` naming the offending fields.
pub fn invalid_argument(
    reason: &str,
    message: impl Into<String>,
    violations: impl IntoIterator<Item = (String, String)>,
) -> Status {
    let mut details = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, HashMap::new());
    let violations: Vec<FieldViolation> = violations
        .into_iter()
        .map(|(field, description)| FieldViolation::new(field, description))
        .collect();
    if !violations.is_empty() {
        details.set_bad_request(violations);
    }
    Status::with_error_details(Code::InvalidArgument, message, details)
}

/// INVALID_ARGUMENT for one bad field; the message names the field.
pub fn invalid_field(reason: &str, field: &str, description: impl Into<String>) -> Status {
    let description = description.into();
    invalid_argument(
        reason,
        format!("{field}: {description}"),
        [(field.to_owned(), description)],
    )
}

/// The canonical name of a gRPC code, as in the gRPC specification.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The `ErrorInfo.reason` of a status, if it carries one (tests and clients use it).
pub fn reason(status: &Status) -> Option<String> {
    status
        .get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
}

/// The fields named by the `BadRequest` of a status.
pub fn bad_fields(status: &Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_survive() {
        let s = invalid_field("INVALID_ACCOUNT_NUMBER", "account_number", "must be digits");
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(reason(&s).as_deref(), Some("INVALID_ACCOUNT_NUMBER"));
        assert_eq!(bad_fields(&s), vec!["account_number".to_owned()]);
        assert!(s.message().contains("account_number"));
    }
}
