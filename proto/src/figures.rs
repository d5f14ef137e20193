//! The figures of the screens that are rules of the contract: the profit rate as a string.

/// `AccountDetail.profit_rate`: profit / principal × 100 with exactly two fractional digits,
/// rounded half away from zero, in integer arithmetic; `None` when the principal is 0.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worked_example_of_the_dataset() {
        // Account 5736692368320: total assets 1929245, principal 1911386, profit 17859.
        assert_eq!(profit_rate(17_859, 1_911_386).as_deref(), Some("0.93"));
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
}
