//! Diesel schema, identical for both backends (see `migrations/{sqlite,postgres}`).

diesel::table! {
    snapshots (id) {
        id -> BigInt,
        as_of -> BigInt,
        digest -> Text,
        state -> Text,
        started_at -> BigInt,
        heartbeat_at -> BigInt,
        finished_at -> Nullable<BigInt>,
        instrument_count -> BigInt,
        account_count -> BigInt,
        holding_count -> BigInt,
    }
}

diesel::table! {
    instruments (snapshot_id, isin) {
        snapshot_id -> BigInt,
        isin -> Text,
        name -> Text,
        asset_group -> Text,
    }
}

diesel::table! {
    accounts (snapshot_id, account_number) {
        snapshot_id -> BigInt,
        account_number -> Text,
        customer_name -> Text,
        brokerage -> Text,
        account_name -> Text,
        principal -> BigInt,
        total_assets -> BigInt,
    }
}

diesel::table! {
    holdings (snapshot_id, account_number, isin) {
        snapshot_id -> BigInt,
        account_number -> Text,
        isin -> Text,
        quantity -> BigInt,
        current_price -> BigInt,
        valuation -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    snapshots,
    instruments,
    accounts,
    holdings,
    ledger_deposits,
    ledger_accounts,
    ledger_holds,
    current_snapshot
);

diesel::table! {
    ledger_deposits (transfer_id) {
        transfer_id -> Text,
        account_number -> Text,
        amount -> BigInt,
        confirmed_at -> BigInt,
        applied_at -> BigInt,
        /// Sum of the account's deposits up to this one in (confirmed_at, transfer_id)
        /// order, kept by a trigger.
        running -> BigInt,
    }
}

diesel::table! {
    current_snapshot (singleton) {
        singleton -> Integer,
        snapshot_id -> BigInt,
    }
}

diesel::table! {
    /// Kept by a trigger on `ledger_deposits`: no deposit to the account was confirmed after
    /// `deposits_until` (the latest confirmation rounded up to the hour).
    ledger_accounts (account_number) {
        account_number -> Text,
        deposits_until -> BigInt,
        /// Cash held by the account's pending withdrawals (`ledger_holds` in state `held`),
        /// kept in the transaction that holds, takes or releases.
        held -> BigInt,
    }
}

diesel::table! {
    /// Withdrawals portfolio-svc has heard of: `held`, then `taken` (recorded in
    /// `ledger_deposits` with a negative amount) or `released`; `released` without `held_at`
    /// when ReleaseHold came before any HoldCash.
    ledger_holds (transfer_id) {
        transfer_id -> Text,
        account_number -> Text,
        amount -> BigInt,
        state -> Text,
        held_at -> Nullable<BigInt>,
        closed_at -> Nullable<BigInt>,
    }
}

/// PostgreSQL only: the parents a loading snapshot's partitions belong to until the stream is
/// complete (the same columns, no indexes; see `invest_runtime::staged`).
pub mod loading {
    diesel::table! {
        #[sql_name = "instruments_loading"]
        instruments (snapshot_id, isin) {
            snapshot_id -> BigInt,
            isin -> Text,
            name -> Text,
            asset_group -> Text,
        }
    }

    diesel::table! {
        #[sql_name = "accounts_loading"]
        accounts (snapshot_id, account_number) {
            snapshot_id -> BigInt,
            account_number -> Text,
            customer_name -> Text,
            brokerage -> Text,
            account_name -> Text,
            principal -> BigInt,
            total_assets -> BigInt,
        }
    }

    diesel::table! {
        #[sql_name = "holdings_loading"]
        holdings (snapshot_id, account_number, isin) {
            snapshot_id -> BigInt,
            account_number -> Text,
            isin -> Text,
            quantity -> BigInt,
            current_price -> BigInt,
            valuation -> BigInt,
        }
    }
}
