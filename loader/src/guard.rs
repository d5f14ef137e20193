//! The guards a day must pass before anything is pushed, besides the loss guard of the
//! cleaning report ([`crate::pipeline::CleaningReport::loss_guard`]): the shrink guard
//! compares the new day with the one portfolio-svc serves now. Pure: the caller fetches the
//! current day.

use serde::Serialize;

use crate::pipeline::Ratio;

/// The day portfolio-svc serves now, as `ListSnapshots` tells.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CurrentDay {
    /// Its `as_of`, RFC 3339.
    pub as_of: String,
    /// Its accounts.
    pub accounts: u64,
    /// Its holdings.
    pub holdings: u64,
}

/// How much smaller the new day is than the current one in one unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shrink {
    /// `accounts` or `holdings`.
    pub unit: &'static str,
    /// The current day's count.
    pub current: u64,
    /// The new day's count.
    pub new: u64,
    /// `(current - new) / current`, 0 when the new day is not smaller.
    pub ratio: Ratio,
    /// Whether the ratio is above the limit.
    pub exceeded: bool,
}

/// The shrink guard's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ShrinkGuard {
    /// Not checked, and why.
    Skipped {
        /// For the operator.
        reason: String,
    },
    /// portfolio-svc has no current day: a first day passes.
    FirstDay,
    /// Compared with the current day.
    Checked {
        /// `--max-shrink`.
        limit: Ratio,
        /// The day served now.
        current: CurrentDay,
        /// Accounts, then holdings.
        shrinks: Vec<Shrink>,
        /// The units above the limit.
        tripped: Vec<&'static str>,
        /// `--allow-shrink`: the operator accepts a tripped guard.
        allowed: bool,
    },
}

impl ShrinkGuard {
    /// Compares the new day (`accounts`, `holdings`) with `current`.
    pub fn compare(
        limit: Ratio,
        allowed: bool,
        current: CurrentDay,
        accounts: u64,
        holdings: u64,
    ) -> Self {
        let shrinks: Vec<Shrink> = [
            ("accounts", current.accounts, accounts),
            ("holdings", current.holdings, holdings),
        ]
        .into_iter()
        .map(|(unit, current, new)| {
            let ratio = Ratio::new(current.saturating_sub(new), current).unwrap_or(Ratio::ZERO);
            Shrink {
                unit,
                current,
                new,
                ratio,
                exceeded: ratio.exceeds(limit),
            }
        })
        .collect();
        let tripped = shrinks
            .iter()
            .filter(|shrink| shrink.exceeded)
            .map(|shrink| shrink.unit)
            .collect();
        ShrinkGuard::Checked {
            limit,
            current,
            shrinks,
            tripped,
            allowed,
        }
    }

    /// Whether the day must not be pushed.
    pub fn refuses(&self) -> bool {
        matches!(self, ShrinkGuard::Checked { tripped, allowed: false, .. } if !tripped.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current(accounts: u64, holdings: u64) -> CurrentDay {
        CurrentDay {
            as_of: "2026-11-22T19:00:00Z".into(),
            accounts,
            holdings,
        }
    }

    #[test]
    fn a_day_smaller_by_more_than_the_limit_is_refused() {
        let limit: Ratio = "10%".parse().unwrap();
        // Exactly 10% fewer accounts passes; one more account lost does not.
        let guard = ShrinkGuard::compare(limit, false, current(1000, 5000), 900, 5000);
        assert!(!guard.refuses(), "{guard:?}");
        let guard = ShrinkGuard::compare(limit, false, current(1000, 5000), 899, 5000);
        assert!(guard.refuses());
        let ShrinkGuard::Checked { tripped, .. } = &guard else {
            panic!("{guard:?}")
        };
        assert_eq!(tripped, &["accounts"]);
        // Holdings alone.
        let guard = ShrinkGuard::compare(limit, false, current(1000, 5000), 1000, 4000);
        assert!(guard.refuses());
        // A bigger day, an empty current day.
        assert!(!ShrinkGuard::compare(limit, false, current(1000, 5000), 2000, 9000).refuses());
        assert!(!ShrinkGuard::compare(limit, false, current(0, 0), 10, 10).refuses());
        // The operator's override.
        assert!(!ShrinkGuard::compare(limit, true, current(1000, 5000), 500, 2500).refuses());
        assert!(!ShrinkGuard::FirstDay.refuses());
        assert!(
            !ShrinkGuard::Skipped {
                reason: "no URL".into()
            }
            .refuses()
        );
        let json = serde_json::to_value(ShrinkGuard::FirstDay).unwrap();
        assert_eq!(json["status"], "first_day");
    }
}
