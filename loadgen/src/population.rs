//! The customers the workload acts as: accounts sampled from the generated day that was loaded,
//! one pre-minted token per owner, so that minting is not measured, and how often each
//! sampled account is acted on ([`AccountPicker`], `--skew`).

use std::{collections::HashMap, time::Duration};

use invest_proto::auth::{
    JwtKeys, SCOPE_ACCOUNTS_READ, SCOPE_DEPOSITS_WRITE, SCOPE_WITHDRAWALS_WRITE,
};
use rand::Rng;
use tonic::metadata::AsciiMetadataValue;

use invest_daygen::{GenAccount, GenError, GenOptions};

/// Lifetime of the pre-minted tokens: longer than any sensible run.
pub const TOKEN_TTL: Duration = Duration::from_secs(3600);

/// A sampled account and the index of its owner in [`Population::customers`].
#[derive(Debug, Clone)]
pub struct SampledAccount {
    /// Account number.
    pub account_number: String,
    /// Its owner.
    pub customer: usize,
}

/// One owner of sampled accounts.
#[derive(Debug, Clone)]
pub struct Customer {
    /// The customer name: the token's `sub` and the deposit's `customer_name`.
    pub name: String,
    /// `Bearer <JWT>` with `accounts:read deposits:write withdrawals:write`.
    pub authorization: AsciiMetadataValue,
}

/// Every `stride`-th account of the day, by index.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Accounts in the day.
    pub day_accounts: u64,
    /// Distance between two sampled accounts; 0 when one account was chosen by its number
    /// ([`Sample::only`]).
    pub stride: u64,
    /// The sampled accounts: number and owner's name.
    pub accounts: Vec<(String, String)>,
    /// A typical sampled account (its holding count is the median of the sample), in full:
    /// the model of the canned responses of the ceiling.
    pub representative: GenAccount,
    /// Its position in `accounts`.
    pub representative_index: usize,
}

impl Sample {
    /// Walks the day of `options` once and keeps at most `max` evenly spaced accounts.
    pub fn take(options: &GenOptions, max: usize) -> Result<Self, GenError> {
        let max = max.max(1) as u64;
        let stride = options.accounts.div_ceil(max).max(1);
        let mut accounts = Vec::new();
        // The first sampled account of each holding count, and how many have it.
        let mut first_by_count: HashMap<usize, (usize, GenAccount)> = HashMap::new();
        let mut counts: Vec<u64> = Vec::new();
        for account in invest_daygen::accounts(options)?.step_by(stride as usize) {
            let held = account.holdings.len();
            if counts.len() <= held {
                counts.resize(held + 1, 0);
            }
            counts[held] += 1;
            let at = accounts.len();
            accounts.push((
                account.account_number.clone(),
                account.customer_name.clone(),
            ));
            first_by_count.entry(held).or_insert((at, account));
        }
        let half = (accounts.len() as u64).div_ceil(2);
        let mut seen = 0;
        let median = counts
            .iter()
            .position(|&count| {
                seen += count;
                seen >= half
            })
            .ok_or_else(|| GenError::Options("the day has no account".to_owned()))?;
        let (representative_index, representative) = first_by_count
            .remove(&median)
            .ok_or_else(|| GenError::Options("the day has no account".to_owned()))?;
        Ok(Self {
            day_accounts: options.accounts,
            stride,
            accounts,
            representative,
            representative_index,
        })
    }

    /// Walks the day of `options` for the account numbered `account_number` and keeps only
    /// it (it is then also the representative); `None` when the day has no such account.
    pub fn only(options: &GenOptions, account_number: &str) -> Result<Option<Self>, GenError> {
        let found = invest_daygen::accounts(options)?
            .find(|account| account.account_number == account_number);
        Ok(found.map(|account| Self {
            day_accounts: options.accounts,
            stride: 0,
            accounts: vec![(
                account.account_number.clone(),
                account.customer_name.clone(),
            )],
            representative: account,
            representative_index: 0,
        }))
    }
}

/// The sampled accounts with their owners' tokens.
#[derive(Debug, Clone)]
pub struct Population {
    /// Accounts in the day.
    pub day_accounts: u64,
    /// Distance between two sampled accounts (0: one account chosen by its number).
    pub stride: u64,
    /// The sampled accounts.
    pub accounts: Vec<SampledAccount>,
    /// Their owners, each once.
    pub customers: Vec<Customer>,
    /// A typical sampled account (see [`Sample::representative`]).
    pub representative: GenAccount,
    /// Its position in `accounts`.
    pub representative_index: usize,
}

impl Population {
    /// Mints one token per owner of the sample.
    pub fn mint(sample: Sample, keys: &JwtKeys) -> Result<Self, InvalidHeader> {
        let mut by_name: HashMap<String, usize> = HashMap::new();
        let mut customers = Vec::new();
        let mut accounts = Vec::with_capacity(sample.accounts.len());
        for (account_number, name) in sample.accounts {
            let customer = match by_name.get(&name) {
                Some(&at) => at,
                None => {
                    let token = keys.mint(
                        &name,
                        &[
                            SCOPE_ACCOUNTS_READ,
                            SCOPE_DEPOSITS_WRITE,
                            SCOPE_WITHDRAWALS_WRITE,
                        ],
                        TOKEN_TTL,
                    );
                    let authorization = format!("Bearer {token}")
                        .parse()
                        .map_err(|_| InvalidHeader(name.clone()))?;
                    customers.push(Customer {
                        name: name.clone(),
                        authorization,
                    });
                    by_name.insert(name, customers.len() - 1);
                    customers.len() - 1
                }
            };
            accounts.push(SampledAccount {
                account_number,
                customer,
            });
        }
        Ok(Self {
            day_accounts: sample.day_accounts,
            stride: sample.stride,
            accounts,
            customers,
            representative: sample.representative,
            representative_index: sample.representative_index,
        })
    }

    /// The owner of `account`.
    pub fn owner(&self, account: &SampledAccount) -> &Customer {
        &self.customers[account.customer]
    }
}

/// How a worker chooses the account of each operation among the `n` sampled ones (`--skew`):
/// uniformly, or with Zipf-like weights `1 / (rank + 1)^skew` over the sample's order (by
/// ascending account number, so the lowest-numbered sampled accounts are the hot customers).
#[derive(Debug, Clone, PartialEq)]
pub enum AccountPicker {
    /// Every account alike: one uniform draw of an index, as before `--skew` existed, so
    /// that a seed gives the same sequence of choices.
    Uniform {
        /// Sampled accounts (at least 1).
        accounts: usize,
    },
    /// By weight: one uniform draw in `[0, total)`, then a binary search of the running sums.
    Skewed {
        /// `cumulative[rank]`: the weights of ranks `0..=rank` added up; increasing.
        cumulative: Vec<f64>,
    },
}

impl AccountPicker {
    /// The picker of `accounts` sampled accounts (at least 1) with `skew` (0, or a skew that is
    /// not a positive finite number, picks uniformly; the command line refuses the latter).
    pub fn new(accounts: usize, skew: f64) -> Self {
        if !(skew > 0.0 && skew.is_finite()) {
            return Self::Uniform { accounts };
        }
        let mut total = 0.0;
        let cumulative = (0..accounts)
            .map(|rank| {
                total += ((rank + 1) as f64).powf(-skew);
                total
            })
            .collect();
        Self::Skewed { cumulative }
    }

    /// The index of the next account, drawn from `rng`.
    pub fn pick<R: Rng + ?Sized>(&self, rng: &mut R) -> usize {
        match self {
            Self::Uniform { accounts } => rng.random_range(0..*accounts),
            Self::Skewed { cumulative } => {
                let total = cumulative.last().copied().unwrap_or(0.0);
                let roll = rng.random::<f64>() * total;
                // The first rank whose running sum passes the roll; rounding can put the roll
                // on the very total, which belongs to the last rank.
                cumulative
                    .partition_point(|&sum| sum <= roll)
                    .min(cumulative.len().saturating_sub(1))
            }
        }
    }

    /// The expected share of operations (0 to 1) that go to the `hottest` first accounts.
    pub fn share_of_hottest(&self, hottest: usize) -> f64 {
        match self {
            Self::Uniform { accounts } if *accounts > 0 => {
                hottest.min(*accounts) as f64 / *accounts as f64
            }
            Self::Uniform { .. } => 0.0,
            Self::Skewed { cumulative } => match (hottest.checked_sub(1), cumulative.last()) {
                (Some(last_hot), Some(&total)) if total > 0.0 => {
                    cumulative[last_hot.min(cumulative.len() - 1)] / total
                }
                _ => 0.0,
            },
        }
    }
}

/// A minted token that is not valid metadata (a bug: JWTs are ASCII).
#[derive(Debug, thiserror::Error)]
#[error("the token minted for {0} is not valid gRPC metadata")]
pub struct InvalidHeader(pub String);

#[cfg(test)]
mod tests {
    use rand::SeedableRng as _;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    #[test]
    fn samples_evenly_and_mints_one_token_per_owner() {
        let options = GenOptions {
            accounts: 1_000,
            seed: 1,
            ..GenOptions::default()
        };
        let sample = Sample::take(&options, 300).unwrap();
        assert_eq!(sample.stride, 4);
        assert_eq!(sample.accounts.len(), 250);
        let all: Vec<GenAccount> = invest_daygen::accounts(&options).unwrap().collect();
        for (at, (number, name)) in sample.accounts.iter().enumerate() {
            assert_eq!(number, &all[at * 4].account_number);
            assert_eq!(name, &all[at * 4].customer_name);
        }
        assert_eq!(
            sample.representative,
            all[sample.representative_index * 4],
            "the representative is a sampled account"
        );
        assert_eq!(sample.representative.holdings.len(), 14, "most hold all 14");

        let keys = JwtKeys::from_secret(b"population-test-secret");
        let population = Population::mint(sample, &keys).unwrap();
        assert_eq!(population.accounts.len(), 250);
        let names: std::collections::HashSet<&str> = population
            .accounts
            .iter()
            .map(|a| population.owner(a).name.as_str())
            .collect();
        assert_eq!(names.len(), population.customers.len());
        let customer = &population.customers[0];
        let token = customer.authorization.to_str().unwrap();
        let caller = keys.verify(token.strip_prefix("Bearer ").unwrap()).unwrap();
        assert_eq!(caller.subject, customer.name);
        assert!(caller.has_scope(SCOPE_ACCOUNTS_READ) && caller.has_scope(SCOPE_DEPOSITS_WRITE));
    }

    #[test]
    fn one_account_by_its_number() {
        let options = GenOptions {
            accounts: 300,
            seed: 2,
            ..GenOptions::default()
        };
        let all: Vec<GenAccount> = invest_daygen::accounts(&options).unwrap().collect();
        let wanted = &all[123];
        let sample = Sample::only(&options, &wanted.account_number)
            .unwrap()
            .unwrap();
        assert_eq!(sample.day_accounts, 300);
        assert_eq!(
            sample.accounts,
            [(wanted.account_number.clone(), wanted.customer_name.clone())]
        );
        assert_eq!(
            &sample.representative, wanted,
            "it is its own representative"
        );
        assert_eq!(sample.representative_index, 0);
        assert!(Sample::only(&options, "000000").unwrap().is_none());
    }

    fn tally(picker: &AccountPicker, accounts: usize, draws: usize) -> Vec<u32> {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut counts = vec![0u32; accounts];
        for _ in 0..draws {
            counts[picker.pick(&mut rng)] += 1;
        }
        counts
    }

    #[test]
    fn no_skew_picks_uniformly_with_the_draws_of_before() {
        let picker = AccountPicker::new(10, 0.0);
        assert_eq!(picker, AccountPicker::Uniform { accounts: 10 });
        // The very sequence of the uniform draw the workers made before --skew existed.
        let mut before = ChaCha8Rng::seed_from_u64(5);
        let mut now = ChaCha8Rng::seed_from_u64(5);
        for _ in 0..1_000 {
            assert_eq!(picker.pick(&mut now), before.random_range(0..10));
        }
        for count in tally(&picker, 10, 100_000) {
            assert!((9_500..10_500).contains(&count), "{count}");
        }
        assert!((picker.share_of_hottest(1) - 0.1).abs() < 1e-12);
        for odd in [-1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(
                AccountPicker::new(10, odd),
                AccountPicker::Uniform { accounts: 10 }
            );
        }
    }

    #[test]
    fn skew_favours_the_first_ranks() {
        let picker = AccountPicker::new(1_000, 1.0);
        let AccountPicker::Skewed { cumulative } = &picker else {
            panic!("a positive skew weighs");
        };
        let weights: Vec<f64> = std::iter::once(cumulative[0])
            .chain(cumulative.windows(2).map(|pair| pair[1] - pair[0]))
            .collect();
        assert!(
            weights.windows(2).all(|pair| pair[0] > pair[1]),
            "decreasing"
        );
        assert!((weights[1] / weights[0] - 0.5).abs() < 1e-12, "1/2^1");

        let counts = tally(&picker, 1_000, 200_000);
        assert!(
            counts.windows(2).take(5).all(|pair| pair[0] > pair[1]),
            "{counts:?}"
        );
        // Rank 0 weighs 1/H(1000) ≈ 13.4 % of the draws.
        let first = f64::from(counts[0]) / 200_000.0;
        assert!(
            (first - picker.share_of_hottest(1)).abs() < 0.005,
            "{first}"
        );
        assert!((picker.share_of_hottest(1) - 0.1336).abs() < 0.001);
        assert!(counts[999] > 0, "the last rank still gets its share");
        assert_eq!(picker.share_of_hottest(1_000), 1.0);
        assert_eq!(picker.share_of_hottest(0), 0.0);

        let one = AccountPicker::new(1, 2.0);
        assert_eq!(tally(&one, 1, 100), [100]);
    }

    #[test]
    fn the_documented_hot_share_holds() {
        // The figure of `--skew`'s documentation.
        let picker = AccountPicker::new(100_000, 1.1);
        let hot = picker.share_of_hottest(1_000);
        assert!((hot - 0.75).abs() < 0.005, "{hot}");
    }
}
