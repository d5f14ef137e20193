//! The customers the workload acts as: accounts sampled from the generated day that was loaded,
//! and one pre-minted token per owner, so that minting is not measured.

use std::{collections::HashMap, time::Duration};

use invest_proto::auth::{JwtKeys, SCOPE_ACCOUNTS_READ, SCOPE_DEPOSITS_WRITE};
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
    /// `Bearer <JWT>` with `accounts:read deposits:write`.
    pub authorization: AsciiMetadataValue,
}

/// Every `stride`-th account of the day, by index.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Accounts in the day.
    pub day_accounts: u64,
    /// Distance between two sampled accounts.
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
}

/// The sampled accounts with their owners' tokens.
#[derive(Debug, Clone)]
pub struct Population {
    /// Accounts in the day.
    pub day_accounts: u64,
    /// Distance between two sampled accounts.
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
                        &[SCOPE_ACCOUNTS_READ, SCOPE_DEPOSITS_WRITE],
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

/// A minted token that is not valid metadata (a bug: JWTs are ASCII).
#[derive(Debug, thiserror::Error)]
#[error("the token minted for {0} is not valid gRPC metadata")]
pub struct InvalidHeader(pub String);

#[cfg(test)]
mod tests {
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
}
