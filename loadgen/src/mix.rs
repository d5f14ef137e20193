//! The operations of the workload and their weights (`--mix`).

use std::{fmt, str::FromStr};

use rand::Rng;

/// One operation of the workload: a single RPC, or the two-phase deposit measured as one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    /// `PortfolioService.GetAccount` of a sampled account.
    GetAccount,
    /// `PortfolioService.ListHoldings` of a sampled account (first page).
    ListHoldings,
    /// `PortfolioService.ListAccounts` of a sampled account's owner (first page).
    ListAccounts,
    /// `DepositService.RegisterDeposit` then `ConfirmDeposit`, as one operation.
    Deposit,
    /// `WithdrawalService.RegisterWithdrawal` then `ConfirmWithdrawal` of 1 won, as one
    /// operation.
    Withdrawal,
}

impl Operation {
    /// Every operation, in report order.
    pub const ALL: [Self; 5] = [
        Self::GetAccount,
        Self::ListHoldings,
        Self::ListAccounts,
        Self::Deposit,
        Self::Withdrawal,
    ];

    /// The name in `--mix`.
    pub fn flag_name(self) -> &'static str {
        match self {
            Self::GetAccount => "get_account",
            Self::ListHoldings => "list_holdings",
            Self::ListAccounts => "list_accounts",
            Self::Deposit => "deposit",
            Self::Withdrawal => "withdrawal",
        }
    }

    /// The name in reports: the RPC's name, or `Deposit` for the two phases.
    pub fn report_name(self) -> &'static str {
        match self {
            Self::GetAccount => "GetAccount",
            Self::ListHoldings => "ListHoldings",
            Self::ListAccounts => "ListAccounts",
            Self::Deposit => "Deposit",
            Self::Withdrawal => "Withdrawal",
        }
    }

    /// Position in [`Operation::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether the operation goes to portfolio-svc (else to deposit-svc).
    pub fn is_portfolio(self) -> bool {
        !self.is_two_phase()
    }

    /// Whether the operation is both phases of a transfer (to deposit-svc).
    pub fn is_two_phase(self) -> bool {
        matches!(self, Self::Deposit | Self::Withdrawal)
    }
}

/// Largest weight of one operation, so that the sum never overflows.
const MAX_WEIGHT: u32 = 1_000_000;

/// Relative weights of the operations; an operation left out of `--mix` has weight 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    weights: [u32; 5],
    total: u32,
}

/// Why a `--mix` value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MixError {
    /// An entry is not `name=weight`.
    #[error("expected name=weight, got {0:?}")]
    NotAPair(String),
    /// The name is none of the operations.
    #[error(
        "unknown operation {0:?}: expected get_account, list_holdings, list_accounts, deposit or withdrawal"
    )]
    UnknownOperation(String),
    /// The weight is not a whole number within range.
    #[error("weight of {name} must be a whole number from 0 to {MAX_WEIGHT}, got {weight:?}")]
    BadWeight {
        /// The operation.
        name: String,
        /// What was given.
        weight: String,
    },
    /// The same operation twice.
    #[error("{0} is given twice")]
    Repeated(String),
    /// Nothing to run.
    #[error("at least one weight must be above 0")]
    AllZero,
}

impl Mix {
    /// The weight of `operation`.
    pub fn weight(&self, operation: Operation) -> u32 {
        self.weights[operation.index()]
    }

    /// The operations with a weight above 0, in report order.
    pub fn operations(&self) -> impl Iterator<Item = Operation> + '_ {
        Operation::ALL
            .into_iter()
            .filter(|&operation| self.weight(operation) > 0)
    }

    /// Whether some operation goes to portfolio-svc.
    pub fn uses_portfolio(&self) -> bool {
        self.operations().any(Operation::is_portfolio)
    }

    /// Whether deposits or withdrawals (deposit-svc) are part of the workload.
    pub fn uses_deposit(&self) -> bool {
        self.operations().any(Operation::is_two_phase)
    }

    /// Draws an operation with probability weight / total.
    pub fn pick<R: Rng + ?Sized>(&self, rng: &mut R) -> Operation {
        let mut roll = rng.random_range(0..self.total);
        for operation in Operation::ALL {
            let weight = self.weight(operation);
            if roll < weight {
                return operation;
            }
            roll -= weight;
        }
        // The weights sum to `total`, so the loop has returned; keep the compiler content.
        Operation::GetAccount
    }
}

impl Default for Mix {
    /// The three reads, equally; no deposits.
    fn default() -> Self {
        Self {
            weights: [1, 1, 1, 0, 0],
            total: 3,
        }
    }
}

impl FromStr for Mix {
    type Err = MixError;

    fn from_str(text: &str) -> Result<Self, MixError> {
        let mut weights = [None; 5];
        for entry in text.split(',').map(str::trim) {
            let (name, weight) = entry
                .split_once('=')
                .ok_or_else(|| MixError::NotAPair(entry.to_owned()))?;
            let (name, weight) = (name.trim(), weight.trim());
            let operation = Operation::ALL
                .into_iter()
                .find(|op| op.flag_name() == name)
                .ok_or_else(|| MixError::UnknownOperation(name.to_owned()))?;
            let value = weight
                .parse::<u32>()
                .ok()
                .filter(|&w| w <= MAX_WEIGHT)
                .ok_or_else(|| MixError::BadWeight {
                    name: name.to_owned(),
                    weight: weight.to_owned(),
                })?;
            let slot = &mut weights[operation.index()];
            if slot.is_some() {
                return Err(MixError::Repeated(name.to_owned()));
            }
            *slot = Some(value);
        }
        let weights = weights.map(|w| w.unwrap_or(0));
        let total = weights.iter().sum();
        if total == 0 {
            return Err(MixError::AllZero);
        }
        Ok(Self { weights, total })
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (at, operation) in Operation::ALL.into_iter().enumerate() {
            if at > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}={}", operation.flag_name(), self.weight(operation))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng as _;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    #[test]
    fn parses_the_default_and_round_trips() {
        let mix: Mix = "get_account=1,list_holdings=1,list_accounts=1,deposit=0"
            .parse()
            .unwrap();
        assert_eq!(mix, Mix::default());
        assert_eq!(mix.to_string().parse::<Mix>().unwrap(), mix);
        assert!(mix.uses_portfolio());
        assert!(!mix.uses_deposit());
        assert_eq!(
            mix.operations().collect::<Vec<_>>(),
            [
                Operation::GetAccount,
                Operation::ListHoldings,
                Operation::ListAccounts
            ]
        );
    }

    #[test]
    fn a_single_operation_leaves_the_others_at_zero() {
        let mix: Mix = " deposit = 3 ".parse().unwrap();
        assert_eq!(mix.operations().collect::<Vec<_>>(), [Operation::Deposit]);
        assert!(!mix.uses_portfolio());
        assert_eq!(
            mix.to_string(),
            "get_account=0,list_holdings=0,list_accounts=0,deposit=3,withdrawal=0"
        );
    }

    #[test]
    fn refuses_bad_values() {
        let err = |text: &str| text.parse::<Mix>().unwrap_err();
        assert_eq!(err("get_account"), MixError::NotAPair("get_account".into()));
        assert_eq!(err(""), MixError::NotAPair(String::new()));
        assert_eq!(
            err("get_account=1,"),
            MixError::NotAPair(String::new()),
            "a trailing comma"
        );
        assert_eq!(
            err("GetAccount=1"),
            MixError::UnknownOperation("GetAccount".into())
        );
        assert!(matches!(err("deposit=-1"), MixError::BadWeight { .. }));
        assert!(matches!(err("deposit=1.5"), MixError::BadWeight { .. }));
        assert!(matches!(err("deposit=1000001"), MixError::BadWeight { .. }));
        assert_eq!(
            err("deposit=1,deposit=1"),
            MixError::Repeated("deposit".into())
        );
        assert_eq!(err("deposit=0,get_account=0"), MixError::AllZero);
    }

    #[test]
    fn picks_by_weight_and_never_a_zero_weight() {
        let mix: Mix = "get_account=3,list_holdings=1,deposit=0".parse().unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut counts = [0u32; 5];
        for _ in 0..40_000 {
            counts[mix.pick(&mut rng).index()] += 1;
        }
        assert_eq!(counts[Operation::ListAccounts.index()], 0);
        assert_eq!(counts[Operation::Deposit.index()], 0);
        let share = f64::from(counts[0]) / 40_000.0;
        assert!((share - 0.75).abs() < 0.02, "{share}");
        // Same seed, same sequence.
        let draw = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (0..32).map(|_| mix.pick(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
    }
}
