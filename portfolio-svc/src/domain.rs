//! Domain values and the arithmetic of the screens: money in `i64` won with checked
//! arithmetic, rates as exact decimals, page tokens and page sizes.

pub use invest_runtime::paging::{PageTokens, page_size, token_mismatch};

use crate::error::{Error, Result};

/// total_assets - principal, checked.
pub fn total_profit(total_assets: i64, principal: i64) -> Result<i64> {
    total_assets
        .checked_sub(principal)
        .ok_or_else(|| overflow("total profit"))
}

/// An arithmetic overflow on stored figures: the data is wrong, not the request.
pub fn overflow(what: &'static str) -> Error {
    Error::FigureOutOfRange(what)
}

pub use invest_proto::figures::profit_rate;
use invest_proto::ids::{AccountNumber, Isin};

/// A holding that passed every check, with its valuation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidHolding {
    /// ISIN or `CASH`.
    pub isin: Isin,
    /// Units.
    pub quantity: i64,
    /// Won per unit.
    pub current_price: i64,
    /// quantity × current_price.
    pub valuation: i64,
}

/// An account that passed every check, with its total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidAccount {
    /// Account number.
    pub account_number: AccountNumber,
    /// Owner.
    pub customer_name: String,
    /// Brokerage.
    pub brokerage: String,
    /// Account name.
    pub account_name: String,
    /// Won.
    pub principal: i64,
    /// Sum of valuations, won.
    pub total_assets: i64,
    /// At least one, ascending ISIN.
    pub holdings: Vec<ValidHolding>,
}

/// Where a listing continues: the snapshot it started on and the last key returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageToken {
    /// Snapshot of the first page; later pages read the same one.
    pub snapshot_id: i64,
    /// Last key (account number or ISIN) of the previous page.
    pub after: String,
}

/// A listing's identity: the method, the caller, and the request field that defines it (the
/// account of ListHoldings; empty for ListAccounts).
#[derive(Debug, Clone, Copy)]
pub struct Listing<'a> {
    /// `ListAccounts` or `ListHoldings`.
    pub method: &'static str,
    /// The token's `sub`.
    pub caller: &'a str,
    /// The account listed, or empty.
    pub account_number: &'a str,
}

impl PageToken {
    /// Opaque text for `next_page_token`, signed for `listing`.
    pub fn encode(&self, tokens: &PageTokens, listing: Listing<'_>) -> String {
        tokens.encode(
            listing.method,
            listing.caller,
            &[
                &self.snapshot_id.to_string(),
                &self.after,
                listing.account_number,
            ],
        )
    }

    /// Parses `page_token` for `listing`; empty means the first page.
    pub fn decode(tokens: &PageTokens, listing: Listing<'_>, text: &str) -> Result<Option<Self>> {
        let Some([id, after, account_number]) =
            tokens.decode::<3>(listing.method, listing.caller, text)?
        else {
            return Ok(None);
        };
        if account_number != listing.account_number {
            return Err(token_mismatch(&format!(
                "the listing of another account ({account_number})"
            ))
            .into());
        }
        let snapshot_id = id.parse().map_err(|_| {
            Error::invalid(
                "INVALID_PAGE_TOKEN",
                "page_token",
                "not a token this server issued",
            )
        })?;
        Ok(Some(Self { snapshot_id, after }))
    }
}

/// Where a ListSnapshots listing continues: after the snapshot `(as_of, id)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotsToken {
    /// as_of of the last snapshot returned.
    pub as_of: i64,
    /// Its id.
    pub id: i64,
}

const LIST_SNAPSHOTS: &str = "ListSnapshots";

impl SnapshotsToken {
    /// Opaque text for `next_page_token`, signed for `caller`.
    pub fn encode(&self, tokens: &PageTokens, caller: &str) -> String {
        tokens.encode(
            LIST_SNAPSHOTS,
            caller,
            &[&self.as_of.to_string(), &self.id.to_string()],
        )
    }

    /// Parses `page_token`; empty means the first page.
    pub fn decode(tokens: &PageTokens, caller: &str, text: &str) -> Result<Option<Self>> {
        let Some([as_of, id]) = tokens.decode::<2>(LIST_SNAPSHOTS, caller, text)? else {
            return Ok(None);
        };
        match (as_of.parse(), id.parse()) {
            (Ok(as_of), Ok(id)) => Ok(Some(Self { as_of, id })),
            _ => Err(Error::invalid(
                "INVALID_PAGE_TOKEN",
                "page_token",
                "not a token this server issued",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worked_example_of_the_dataset() {
        // DATASET.md: account 5736692368320, total assets 1929245, principal 1911386.
        let profit = total_profit(1_929_245, 1_911_386).unwrap();
        assert_eq!(profit, 17_859);
        assert_eq!(profit_rate(profit, 1_911_386).as_deref(), Some("0.93"));
    }

    #[test]
    fn page_tokens_are_bound_to_their_listing() {
        let tokens = PageTokens::new(&invest_proto::auth::JwtKeys::from_secret(b"secret"));
        let token = PageToken {
            snapshot_id: 42,
            after: "KR7360750004".into(),
        };
        let listing = Listing {
            method: "ListHoldings",
            caller: "류영길",
            account_number: "5736692368320",
        };
        let text = token.encode(&tokens, listing);
        assert_eq!(
            PageToken::decode(&tokens, listing, &text).unwrap(),
            Some(token)
        );
        assert_eq!(PageToken::decode(&tokens, listing, "").unwrap(), None);
        let reason = |result: Result<Option<PageToken>>| match result {
            Err(Error::Runtime(invest_runtime::error::Error::InvalidArgument {
                reason, ..
            })) => reason,
            other => panic!("{other:?}"),
        };
        let other_account = Listing {
            account_number: "1111111111",
            ..listing
        };
        assert_eq!(
            reason(PageToken::decode(&tokens, other_account, &text)),
            "PAGE_TOKEN_MISMATCH"
        );
        let other_caller = Listing {
            caller: "이정희",
            ..listing
        };
        assert_eq!(
            reason(PageToken::decode(&tokens, other_caller, &text)),
            "INVALID_PAGE_TOKEN"
        );
        assert_eq!(
            reason(PageToken::decode(&tokens, listing, "garbage!")),
            "INVALID_PAGE_TOKEN"
        );
    }
}
