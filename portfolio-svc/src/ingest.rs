//! LoadSnapshot: checks every record of the stream again and writes it batch by batch under
//! the staged-load protocol (`invest_runtime::staged`): current only when the stream ended
//! well and matches its header. The server never holds more than two batches of the day in
//! memory.

use std::collections::HashSet;

use invest_proto::{
    digest::{RecordDigest, RecordKind},
    ids::{AccountNumber, Isin},
    portfolio::v1::{self as pb, snapshot_part::Part},
};
use invest_runtime::{
    db::{Database, DbConnection},
    staged::{self, Ingest, StagedTables},
};
use tokio_stream::Stream;
use tonic::Status;

// The staged-load protocol's errors: the ingest's refusals are the runtime's.
use invest_runtime::error::{Error, Result};

use crate::{
    domain::{ValidAccount, ValidHolding},
    store::{self, SNAPSHOTS, read::SnapshotRow},
};

/// A checked header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// Microseconds since the Unix epoch.
    pub as_of: i64,
    /// Lowercase hex BLAKE3.
    pub digest: String,
    /// Announced number of instruments.
    pub instrument_count: i64,
    /// Announced number of accounts.
    pub account_count: i64,
    /// Announced number of holdings.
    pub holding_count: i64,
    /// The loader's rejected rows: (file, rule, rows).
    pub rejects: Vec<(String, String, i64)>,
}

/// Most entries of `header.rejects` (files × rules of a delivery are far fewer).
const MAX_REJECT_ENTRIES: usize = 256;

impl SnapshotHeader {
    /// Rows rejected over all files and rules.
    pub fn rejected_rows(&self) -> i64 {
        self.rejects
            .iter()
            .fold(0i64, |sum, (_, _, rows)| sum.saturating_add(*rows))
    }

    fn parse(header: pb::SnapshotHeader) -> Result<Self> {
        let (as_of, digest) = staged::check_header(header.as_of.as_ref(), &header.digest)?;
        for (field, count) in [
            ("header.instrument_count", header.instrument_count),
            ("header.account_count", header.account_count),
            ("header.holding_count", header.holding_count),
        ] {
            if count < 0 {
                return Err(Error::invalid(
                    "INVALID_COUNT",
                    field,
                    "must not be negative",
                ));
            }
        }
        if header.account_count == 0 {
            return Err(Error::invalid(
                "EMPTY_SNAPSHOT",
                "header.account_count",
                "a snapshot without accounts would empty every screen; refusing it",
            ));
        }
        if header.rejects.len() > MAX_REJECT_ENTRIES {
            return Err(Error::invalid(
                "INVALID_REJECTS",
                "header.rejects",
                format!("at most {MAX_REJECT_ENTRIES} entries"),
            ));
        }
        let mut rejects = Vec::with_capacity(header.rejects.len());
        for (i, reject) in header.rejects.into_iter().enumerate() {
            let plain =
                |s: &str| (1..=64).contains(&s.len()) && s.chars().all(|c| c.is_ascii_graphic());
            if !plain(&reject.file) || !plain(&reject.rule) || reject.rows <= 0 {
                return Err(Error::invalid(
                    "INVALID_REJECTS",
                    format!("header.rejects[{i}]"),
                    "file and rule must be 1 to 64 printable ASCII bytes and rows positive",
                ));
            }
            rejects.push((reject.file, reject.rule, reject.rows));
        }
        Ok(Self {
            as_of,
            digest,
            instrument_count: header.instrument_count,
            account_count: header.account_count,
            holding_count: header.holding_count,
            rejects,
        })
    }
}

fn non_empty(value: &str, field: String) -> Result<String> {
    invest_runtime::error::required_text(value, field)
}

fn validate_instrument(at: &str, instrument: &pb::Instrument) -> Result<Isin> {
    let isin = Isin::parse(&instrument.isin)
        .map_err(|e| Error::invalid("INVALID_ISIN", format!("{at}.isin"), e.0))?;
    non_empty(&instrument.name, format!("{at}.name"))?;
    non_empty(&instrument.asset_group, format!("{at}.asset_group"))?;
    Ok(isin)
}

/// Checks an account and its holdings against the rules of the dataset and the instruments
/// of this snapshot, and totals it with checked arithmetic.
pub fn validate_account(
    at: &str,
    account: pb::SnapshotAccount,
    instruments: &HashSet<Isin>,
) -> Result<ValidAccount> {
    let account_number = AccountNumber::parse(&account.account_number).map_err(|e| {
        Error::invalid(
            "INVALID_ACCOUNT_NUMBER",
            format!("{at}.account_number"),
            e.0,
        )
    })?;
    let customer_name = non_empty(&account.customer_name, format!("{at}.customer_name"))?;
    let brokerage = non_empty(&account.brokerage, format!("{at}.brokerage"))?;
    let account_name = non_empty(&account.account_name, format!("{at}.account_name"))?;
    if account.principal < 0 {
        return Err(Error::invalid(
            "NEGATIVE_AMOUNT",
            format!("{at}.principal"),
            format!("must not be negative, got {}", account.principal),
        ));
    }
    if account.holdings.is_empty() {
        return Err(Error::invalid(
            "ACCOUNT_WITHOUT_HOLDINGS",
            format!("{at}.holdings"),
            format!(
                "account {account_number} has no holding; an account loads only with at least one"
            ),
        ));
    }
    let mut holdings: Vec<ValidHolding> = Vec::with_capacity(account.holdings.len());
    let mut total: i64 = 0;
    for (j, holding) in account.holdings.into_iter().enumerate() {
        let hat = format!("{at}.holdings[{j}]");
        let isin = Isin::parse(&holding.isin)
            .map_err(|e| Error::invalid("INVALID_ISIN", format!("{hat}.isin"), e.0))?;
        if !instruments.contains(&isin) {
            return Err(Error::invalid(
                "UNKNOWN_ISIN",
                format!("{hat}.isin"),
                format!(
                    "{isin} of account {account_number} is not among the instruments sent before it"
                ),
            ));
        }
        for (name, value) in [
            ("quantity", holding.quantity),
            ("current_price", holding.current_price),
        ] {
            if value < 0 {
                return Err(Error::invalid(
                    "NEGATIVE_AMOUNT",
                    format!("{hat}.{name}"),
                    format!("must not be negative, got {value}"),
                ));
            }
        }
        let valuation = holding.quantity.checked_mul(holding.current_price).ok_or_else(|| {
            Error::invalid(
                "VALUATION_OVERFLOW",
                hat.clone(),
                format!("current_price × quantity of {isin} in account {account_number} does not fit in 64 bits"),
            )
        })?;
        total = total.checked_add(valuation).ok_or_else(|| {
            Error::invalid(
                "TOTAL_ASSETS_OVERFLOW",
                format!("{at}.holdings"),
                format!("the total assets of account {account_number} do not fit in 64 bits"),
            )
        })?;
        if let Some(previous) = holdings.last()
            && previous.isin >= isin
        {
            return Err(Error::invalid(
                "HOLDINGS_OUT_OF_ORDER",
                format!("{hat}.isin"),
                format!(
                    "holdings of account {account_number} must be in strictly ascending ISIN order (each ISIN once); {isin} follows {}",
                    previous.isin
                ),
            ));
        }
        holdings.push(ValidHolding {
            isin,
            quantity: holding.quantity,
            current_price: holding.current_price,
            valuation,
        });
    }
    Ok(ValidAccount {
        account_number,
        customer_name,
        brokerage,
        account_name,
        principal: account.principal,
        total_assets: total,
        holdings,
    })
}

/// The ingest of a snapshot under the staged-load protocol: each part checked again (formats,
/// order, instruments known, totals in 64 bits) and digested; rows written in batches.
#[derive(Debug, Default)]
pub struct SnapshotIngest {
    header: Option<SnapshotHeader>,
    digest: RecordDigest,
    instruments: HashSet<Isin>,
    last_isin: Option<Isin>,
    last_account: Option<AccountNumber>,
    instrument_count: i64,
    account_count: i64,
    holding_count: i64,
}

/// Checked rows of one part.
#[derive(Debug)]
pub enum SnapshotBatch {
    /// Instruments, in ISIN order.
    Instruments(Vec<pb::Instrument>),
    /// Accounts with their holdings, in account-number order.
    Accounts(Vec<ValidAccount>),
}

fn order_error(field: &str, what: &str) -> Error {
    Error::invalid("PARTS_OUT_OF_ORDER", field, what.to_owned())
}

impl Ingest for SnapshotIngest {
    type Part = pb::SnapshotPart;
    type Batch = SnapshotBatch;

    fn header(&mut self, first: pb::SnapshotPart) -> Result<(i64, String)> {
        let header = match first.part {
            Some(Part::Header(header)) => SnapshotHeader::parse(header)?,
            _ => return Err(order_error("part", "the first part must be a header")),
        };
        let as_of_digest = (header.as_of, header.digest.clone());
        self.header = Some(header);
        Ok(as_of_digest)
    }

    fn rejected_rows(&self) -> i64 {
        self.header
            .as_ref()
            .map_or(0, SnapshotHeader::rejected_rows)
    }

    fn accept(&mut self, part: pb::SnapshotPart, number: u64) -> Result<SnapshotBatch> {
        match part.part {
            None | Some(Part::Header(_)) => Err(order_error(
                "part",
                &format!(
                    "part {number}: only the first part may be a header, and no part may be empty"
                ),
            )),
            Some(Part::Instruments(batch)) => {
                if self.account_count > 0 {
                    return Err(order_error(
                        "instruments",
                        &format!(
                            "part {number}: every instrument must come before the first account"
                        ),
                    ));
                }
                for (i, instrument) in batch.instruments.iter().enumerate() {
                    let at = format!("instruments.instruments[{i}]");
                    let isin = validate_instrument(&at, instrument)?;
                    if self.last_isin.as_ref().is_some_and(|last| *last >= isin) {
                        return Err(Error::invalid(
                            "INSTRUMENTS_OUT_OF_ORDER",
                            format!("{at}.isin"),
                            format!(
                                "part {number}: instruments must come in strictly ascending ISIN order, each once; {isin} is out of place"
                            ),
                        ));
                    }
                    if !isin.check_digit_ok() {
                        tracing::debug!(%isin, "ISIN check digit does not match; accepted as delivered");
                    }
                    self.digest.add(RecordKind::Instrument, instrument);
                    self.last_isin = Some(isin.clone());
                    self.instruments.insert(isin);
                    self.instrument_count += 1;
                }
                Ok(SnapshotBatch::Instruments(batch.instruments))
            }
            Some(Part::Accounts(batch)) => {
                let mut valid = Vec::with_capacity(batch.accounts.len());
                for (i, account) in batch.accounts.into_iter().enumerate() {
                    let at = format!("accounts.accounts[{i}]");
                    self.digest.add(RecordKind::Account, &account);
                    let account =
                        validate_account(&at, account, &self.instruments).map_err(|e| match e {
                            Error::InvalidArgument {
                                reason,
                                message,
                                fields,
                            } => Error::InvalidArgument {
                                reason,
                                message: format!("part {number}: {message}"),
                                fields,
                            },
                            other => other,
                        })?;
                    if self
                        .last_account
                        .as_ref()
                        .is_some_and(|last| *last >= account.account_number)
                    {
                        return Err(Error::invalid(
                            "ACCOUNTS_OUT_OF_ORDER",
                            format!("{at}.account_number"),
                            format!(
                                "part {number}: accounts must come in strictly ascending account-number order, each once; {} is out of place",
                                account.account_number
                            ),
                        ));
                    }
                    self.last_account = Some(account.account_number.clone());
                    self.account_count += 1;
                    self.holding_count += account.holdings.len() as i64;
                    valid.push(account);
                }
                Ok(SnapshotBatch::Accounts(valid))
            }
        }
    }

    fn write(
        conn: &mut DbConnection,
        _tables: &StagedTables,
        id: i64,
        batch: &SnapshotBatch,
        now: i64,
    ) -> Result<()> {
        match batch {
            SnapshotBatch::Instruments(instruments) => {
                store::ingest::insert_instruments(conn, id, instruments, now)
            }
            SnapshotBatch::Accounts(accounts) => {
                store::ingest::insert_accounts(conn, id, accounts, now)
            }
        }
    }

    fn complete(&self) -> Result<Vec<(&'static str, i64)>> {
        let Some(header) = &self.header else {
            return Err(order_error("part", "the first part must be a header"));
        };
        let announced = (
            header.instrument_count,
            header.account_count,
            header.holding_count,
        );
        let received = (
            self.instrument_count,
            self.account_count,
            self.holding_count,
        );
        if announced != received {
            return Err(Error::invalid(
                "INCOMPLETE_SNAPSHOT",
                "header",
                format!(
                    "the header announced {} instruments, {} accounts and {} holdings, the stream carried {}, {} and {}; nothing was changed",
                    announced.0, announced.1, announced.2, received.0, received.1, received.2
                ),
            ));
        }
        let computed = self.digest.clone().finish();
        if computed != header.digest {
            return Err(Error::invalid(
                "DIGEST_MISMATCH",
                "header.digest",
                format!(
                    "the records hash to {computed}, not to the header's {}; nothing was changed",
                    header.digest
                ),
            ));
        }
        Ok(vec![
            ("instrument_count", self.instrument_count),
            ("account_count", self.account_count),
            ("holding_count", self.holding_count),
        ])
    }
}

/// Settings of the ingest path.
#[derive(Debug, Clone, Copy)]
pub struct IngestConfig {
    /// Advisory-lock key serialising flips on PostgreSQL.
    pub flip_lock_key: i64,
}

/// What LoadSnapshot answers.
#[derive(Debug)]
pub struct Loaded {
    /// True when nothing changed.
    pub unchanged: bool,
    /// The snapshot now current.
    pub current: SnapshotRow,
}

/// Runs one LoadSnapshot stream to its end.
pub async fn load_snapshot<S>(
    db: Database,
    parts: S,
    config: IngestConfig,
) -> Result<Loaded, Status>
where
    S: Stream<Item = Result<pb::SnapshotPart, Status>> + Unpin,
{
    let loaded = staged::load(
        db.clone(),
        &SNAPSHOTS,
        config.flip_lock_key,
        SnapshotIngest::default(),
        parts,
    )
    .await?;
    let current = db
        .run(|c| -> Result<_> { Ok(store::read::current(c)?) })
        .await?
        .ok_or_else(|| {
            Error::Unavailable("the snapshot just loaded is gone; load it again".into())
        })?;
    Ok(Loaded {
        unchanged: loaded.unchanged,
        current,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instruments() -> HashSet<Isin> {
        ["CASH", "KR7360750004"]
            .iter()
            .map(|i| Isin::parse(i).unwrap())
            .collect()
    }

    fn account() -> pb::SnapshotAccount {
        pb::SnapshotAccount {
            account_number: "5736692368320".into(),
            customer_name: "류영길".into(),
            brokerage: "디셈버증권".into(),
            account_name: "계좌1".into(),
            principal: 1_000,
            holdings: vec![
                pb::SnapshotHolding {
                    isin: "CASH".into(),
                    quantity: 1,
                    current_price: 500,
                },
                pb::SnapshotHolding {
                    isin: "KR7360750004".into(),
                    quantity: 3,
                    current_price: 200,
                },
            ],
        }
    }

    #[test]
    fn totals_an_account() {
        let valid = validate_account("a", account(), &instruments()).unwrap();
        assert_eq!(valid.total_assets, 1_100);
        assert_eq!(valid.holdings[1].valuation, 600);
    }

    #[test]
    fn refuses_bad_records() {
        let reason = |a: pb::SnapshotAccount| match validate_account("a", a, &instruments()) {
            Err(Error::InvalidArgument { reason, .. }) => reason,
            other => panic!("expected InvalidArgument, got {other:?}"),
        };
        let mut a = account();
        a.account_number = "12-34".into();
        assert_eq!(reason(a), "INVALID_ACCOUNT_NUMBER");
        let mut a = account();
        a.customer_name = "  ".into();
        assert_eq!(reason(a), "EMPTY_FIELD");
        for bad in ["류\0영길", "계좌\n1", "\u{202E}1좌계", &"가".repeat(400)] {
            let mut a = account();
            a.account_name = bad.into();
            assert_eq!(reason(a), "INVALID_TEXT", "{bad:?}");
        }
        let mut a = account();
        a.principal = -1;
        assert_eq!(reason(a), "NEGATIVE_AMOUNT");
        let mut a = account();
        a.holdings.clear();
        assert_eq!(reason(a), "ACCOUNT_WITHOUT_HOLDINGS");
        let mut a = account();
        a.holdings[1].isin = "KR7133690008".into();
        assert_eq!(reason(a), "UNKNOWN_ISIN");
        let mut a = account();
        a.holdings[1].quantity = -3;
        assert_eq!(reason(a), "NEGATIVE_AMOUNT");
        let mut a = account();
        a.holdings[1].current_price = i64::MAX;
        assert_eq!(reason(a), "VALUATION_OVERFLOW");
        let mut a = account();
        a.holdings[0].current_price = i64::MAX;
        a.holdings[1].quantity = 1;
        assert_eq!(reason(a), "TOTAL_ASSETS_OVERFLOW");
        let mut a = account();
        a.holdings.swap(0, 1);
        assert_eq!(reason(a), "HOLDINGS_OUT_OF_ORDER");
        let mut a = account();
        a.holdings[1].isin = "CASH".into();
        assert_eq!(reason(a), "HOLDINGS_OUT_OF_ORDER");
    }
}
