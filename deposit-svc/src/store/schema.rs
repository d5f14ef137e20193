//! Diesel schema, identical for both backends (see `migrations/{sqlite,postgres}`).

diesel::table! {
    directories (id) {
        id -> BigInt,
        as_of -> BigInt,
        digest -> Text,
        state -> Text,
        started_at -> BigInt,
        heartbeat_at -> BigInt,
        finished_at -> Nullable<BigInt>,
        entry_count -> BigInt,
    }
}

diesel::table! {
    directory_entries (directory_id, account_number) {
        directory_id -> BigInt,
        account_number -> Text,
        customer_name -> Text,
    }
}

diesel::table! {
    deposits (transfer_id) {
        transfer_id -> Text,
        owner -> Text,
        account_number -> Text,
        customer_name -> Text,
        amount -> BigInt,
        request_id -> Nullable<Text>,
        status -> Text,
        failed_attempts -> BigInt,
        created_at -> BigInt,
        expires_at -> BigInt,
        confirmed_at -> Nullable<BigInt>,
        applied_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    outbox (transfer_id) {
        transfer_id -> Text,
        account_number -> Text,
        amount -> BigInt,
        confirmed_at -> BigInt,
        attempts -> BigInt,
        next_attempt_at -> BigInt,
        lease_until -> BigInt,
        lease_owner -> Nullable<Text>,
        last_error -> Nullable<Text>,
        /// `deposit` (ApplyDeposit), `take` (TakeHold) or `release` (ReleaseHold).
        kind -> Text,
        /// W3C trace context of the call that queued it (traces on), for the redelivery's link.
        traceparent -> Nullable<Text>,
    }
}

diesel::table! {
    withdrawals (transfer_id) {
        transfer_id -> Text,
        owner -> Text,
        account_number -> Text,
        customer_name -> Text,
        amount -> BigInt,
        request_id -> Nullable<Text>,
        status -> Text,
        /// portfolio-svc answered the hold.
        held -> Bool,
        failed_attempts -> BigInt,
        created_at -> BigInt,
        expires_at -> BigInt,
        confirmed_at -> Nullable<BigInt>,
        applied_at -> Nullable<BigInt>,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    directories,
    directory_entries,
    deposits,
    withdrawals,
    outbox,
    current_directory
);

diesel::table! {
    current_directory (singleton) {
        singleton -> Integer,
        directory_id -> BigInt,
    }
}

/// PostgreSQL only: the parent a loading directory's partition belongs to until the stream is
/// complete (the same columns, no indexes; see `invest_runtime::staged`).
pub mod loading {
    diesel::table! {
        #[sql_name = "directory_entries_loading"]
        directory_entries (directory_id, account_number) {
            directory_id -> BigInt,
            account_number -> Text,
            customer_name -> Text,
        }
    }
}
