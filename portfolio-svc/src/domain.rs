//! Domain values and the arithmetic of the screens: money in `i64` won with checked
//! arithmetic, rates as exact decimals, page tokens and page sizes.

pub use invest_proto::server::paging::page_size;
use invest_proto::server::paging::{decode_token, encode_token};

use crate::error::{Error, Result};

/// total_assets - principal, checked.
pub fn total_profit(total_assets: i64, principal: i64) -> Result<i64> {
    total_assets
        .checked_sub(principal)
        .ok_or_else(|| overflow("total profit"))
}

/// An arithmetic overflow on stored figures: the data is wrong, not the request.
pub fn overflow(what: &str) -> Error {
    Error::FailedPrecondition {
        reason: "FIGURE_OUT_OF_RANGE",
        message: format!("the {what} of this account does not fit in 64 bits"),
    }
}

/// profit / principal * 100 with exactly two fractional digits, rounded half away from zero,
/// in integer arithmetic; `None` when the principal is 0.
pub fn profit_rate(profit: i64, principal: i64) -> Option<String> {
    if principal == 0 {
        return None;
    }
    // Hundredths of a percent: |profit| * 10_000 / |principal|, rounded half away from zero.
    // i128 holds i64::MAX * 10_000 comfortably.
    let numerator = i128::from(profit).abs() * 10_000;
    let denominator = i128::from(principal).abs();
    let mut hundredths = numerator / denominator;
    if (numerator % denominator) * 2 >= denominator {
        hundredths += 1;
    }
    let negative = (profit < 0) != (principal < 0) && hundredths != 0;
    Some(format!(
        "{}{}.{:02}",
        if negative { "-" } else { "" },
        hundredths / 100,
        hundredths % 100
    ))
}

/// Where a listing continues: the snapshot it started on and the last key returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageToken {
    /// Snapshot of the first page; later pages read the same one.
    pub snapshot_id: i64,
    /// Last key (account number or ISIN) of the previous page.
    pub after: String,
}

impl PageToken {
    /// Opaque text for `next_page_token`.
    pub fn encode(&self) -> String {
        encode_token(&[&self.snapshot_id.to_string(), &self.after])
    }

    /// Parses `page_token`; empty means the first page.
    pub fn decode(text: &str) -> Result<Option<Self>> {
        let Some([id, after]) = decode_token::<2>(text)? else {
            return Ok(None);
        };
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

impl SnapshotsToken {
    /// Opaque text for `next_page_token`.
    pub fn encode(&self) -> String {
        encode_token(&["snapshots", &self.as_of.to_string(), &self.id.to_string()])
    }

    /// Parses `page_token`; empty means the first page.
    pub fn decode(text: &str) -> Result<Option<Self>> {
        let Some([kind, as_of, id]) = decode_token::<3>(text)? else {
            return Ok(None);
        };
        match (kind.as_str(), as_of.parse(), id.parse()) {
            ("snapshots", Ok(as_of), Ok(id)) => Ok(Some(Self { as_of, id })),
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
    fn rates_round_half_away_from_zero() {
        assert_eq!(profit_rate(-125, 1_000).as_deref(), Some("-12.50"));
        assert_eq!(profit_rate(1, 8).as_deref(), Some("12.50"));
        // 1/3 % = 0.3333… → 0.33; 2/3 → 0.67; exactly half → away from zero.
        assert_eq!(profit_rate(1, 300).as_deref(), Some("0.33"));
        assert_eq!(profit_rate(2, 300).as_deref(), Some("0.67"));
        assert_eq!(profit_rate(1, 20_000).as_deref(), Some("0.01")); // 0.005 → 0.01
        assert_eq!(profit_rate(-1, 20_000).as_deref(), Some("-0.01"));
        assert_eq!(profit_rate(-1, 20_001).as_deref(), Some("0.00")); // no "-0.00"
        assert_eq!(profit_rate(0, 5).as_deref(), Some("0.00"));
        assert_eq!(profit_rate(5, 0), None);
        assert_eq!(profit_rate(-1_000, 1_000).as_deref(), Some("-100.00"));
        assert_eq!(
            profit_rate(i64::MAX, 1).as_deref(),
            Some("922337203685477580700.00")
        );
    }

    #[test]
    fn page_tokens() {
        let token = PageToken {
            snapshot_id: 42,
            after: "KR7360750004".into(),
        };
        assert_eq!(PageToken::decode(&token.encode()).unwrap(), Some(token));
        assert_eq!(PageToken::decode("").unwrap(), None);
        assert!(PageToken::decode("garbage!").is_err());
    }
}
