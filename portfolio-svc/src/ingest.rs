//! LoadSnapshot: checks every record of the stream again, writes it batch by batch under a
//! `loading` snapshot, and makes it current only when the stream ended well and matches its
//! header. The server never holds more than two batches of the day in memory.

use std::{collections::HashSet, future::Future};

use invest_proto::{
    digest::{RecordDigest, RecordKind},
    ids::{AccountNumber, Isin},
    portfolio::v1::{self as pb, snapshot_part::Part},
    time,
};
use invest_runtime::{db::Database, launch::CleanupGuard};
use tokio::task::JoinHandle;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

use crate::{
    error::{Error, Result},
    store::{
        self,
        ingest::{Begin, Finish},
        read::SnapshotRow,
    },
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
}

impl SnapshotHeader {
    fn parse(header: pb::SnapshotHeader) -> Result<Self> {
        let as_of = header
            .as_of
            .as_ref()
            .ok_or_else(|| Error::invalid("MISSING_AS_OF", "header.as_of", "required"))
            .and_then(|ts| {
                time::to_micros(ts).ok_or_else(|| {
                    Error::invalid("INVALID_AS_OF", "header.as_of", "not a valid timestamp")
                })
            })?;
        let digest = header.digest.to_ascii_lowercase();
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::invalid(
                "INVALID_DIGEST",
                "header.digest",
                "must be the 64 hex digits of a BLAKE3 digest",
            ));
        }
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
        Ok(Self {
            as_of,
            digest,
            instrument_count: header.instrument_count,
            account_count: header.account_count,
            holding_count: header.holding_count,
        })
    }
}

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

/// What LoadSnapshot answers.
#[derive(Debug)]
pub struct Loaded {
    /// True when nothing changed.
    pub unchanged: bool,
    /// The snapshot now current.
    pub current: SnapshotRow,
}

/// Settings of the ingest path.
#[derive(Debug, Clone, Copy)]
pub struct IngestConfig {
    /// Advisory-lock key serialising flips on PostgreSQL.
    pub flip_lock_key: i64,
}

/// A guard that deletes the rows of a load that did not finish.
fn discard_unless_finished(db: Database, snapshot_id: i64) -> CleanupGuard {
    CleanupGuard::new(async move {
        match db
            .run(move |c| store::ingest::discard(c, snapshot_id))
            .await
        {
            Ok(()) => tracing::info!(snapshot_id, "discarded unfinished load"),
            Err(e) => {
                tracing::warn!(snapshot_id, error = %e, "could not discard unfinished load; the janitor will")
            }
        }
    })
}

/// One database write in flight while the next batch is received and checked.
struct Pipeline {
    pending: Option<JoinHandle<Result<()>>>,
}

impl Pipeline {
    async fn wait(&mut self) -> Result<()> {
        if let Some(handle) = self.pending.take() {
            match handle.await {
                Ok(result) => result?,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => return Err(Error::Unavailable(format!("batch write cancelled: {e}"))),
            }
        }
        Ok(())
    }

    async fn submit(
        &mut self,
        write: impl Future<Output = Result<()>> + Send + 'static,
    ) -> Result<()> {
        self.wait().await?;
        self.pending = Some(tokio::spawn(write));
        Ok(())
    }
}

fn order_error(field: &str, what: &str) -> Error {
    Error::invalid("PARTS_OUT_OF_ORDER", field, what.to_owned())
}

/// Runs one LoadSnapshot stream to its end.
pub async fn load_snapshot<S>(
    db: Database,
    mut parts: S,
    config: IngestConfig,
) -> Result<Loaded, Status>
where
    S: Stream<Item = Result<pb::SnapshotPart, Status>> + Unpin,
{
    let first = match parts.next().await {
        Some(part) => part?,
        None => {
            return Err(order_error(
                "part",
                "the stream is empty; the first part must be a header",
            )
            .into());
        }
    };
    let header = match first.part {
        Some(Part::Header(header)) => SnapshotHeader::parse(header)?,
        _ => return Err(order_error("part", "the first part must be a header").into()),
    };
    let begin = {
        let header = header.clone();
        db.run(move |c| store::ingest::begin_load(c, &header, time::now_micros()))
            .await?
    };
    let snapshot_id = match begin {
        Begin::Unchanged(current) => {
            tracing::info!(as_of = %time::rfc3339(header.as_of), digest = %header.digest, "snapshot already current; nothing to load");
            return Ok(Loaded {
                unchanged: true,
                current,
            });
        }
        Begin::Started(id) => id,
    };
    let mut guard = discard_unless_finished(db.clone(), snapshot_id);
    tracing::info!(snapshot_id, as_of = %time::rfc3339(header.as_of), accounts = header.account_count, "loading snapshot");

    let mut digest = RecordDigest::new();
    let mut instruments: HashSet<Isin> = HashSet::new();
    let mut last_isin: Option<Isin> = None;
    let mut last_account: Option<AccountNumber> = None;
    let (mut instrument_count, mut account_count, mut holding_count) = (0i64, 0i64, 0i64);
    let mut pipeline = Pipeline { pending: None };
    let mut part_number = 1u64;

    while let Some(part) = parts.next().await {
        let part = part?;
        part_number += 1;
        match part.part {
            None | Some(Part::Header(_)) => {
                return Err(order_error("part", &format!("part {part_number}: only the first part may be a header, and no part may be empty")).into());
            }
            Some(Part::Instruments(batch)) => {
                if account_count > 0 {
                    return Err(order_error("instruments", &format!("part {part_number}: every instrument must come before the first account")).into());
                }
                for (i, instrument) in batch.instruments.iter().enumerate() {
                    let at = format!("instruments.instruments[{i}]");
                    let isin = validate_instrument(&at, instrument)?;
                    if last_isin.as_ref().is_some_and(|last| *last >= isin) {
                        return Err(Error::invalid(
                            "INSTRUMENTS_OUT_OF_ORDER",
                            format!("{at}.isin"),
                            format!("part {part_number}: instruments must come in strictly ascending ISIN order, each once; {isin} is out of place"),
                        ).into());
                    }
                    if !isin.check_digit_ok() {
                        tracing::debug!(%isin, "ISIN check digit does not match; accepted as delivered");
                    }
                    digest.add(RecordKind::Instrument, instrument);
                    last_isin = Some(isin.clone());
                    instruments.insert(isin);
                    instrument_count += 1;
                }
                let db = db.clone();
                pipeline
                    .submit(async move {
                        db.run(move |c| {
                            store::ingest::insert_instruments(
                                c,
                                snapshot_id,
                                &batch.instruments,
                                time::now_micros(),
                            )
                        })
                        .await
                    })
                    .await?;
            }
            Some(Part::Accounts(batch)) => {
                let mut valid = Vec::with_capacity(batch.accounts.len());
                for (i, account) in batch.accounts.into_iter().enumerate() {
                    let at = format!("accounts.accounts[{i}]");
                    digest.add(RecordKind::Account, &account);
                    let account =
                        validate_account(&at, account, &instruments).map_err(|e| match e {
                            Error::InvalidArgument {
                                reason,
                                message,
                                fields,
                            } => Error::InvalidArgument {
                                reason,
                                message: format!("part {part_number}: {message}"),
                                fields,
                            },
                            other => other,
                        })?;
                    if last_account
                        .as_ref()
                        .is_some_and(|last| *last >= account.account_number)
                    {
                        return Err(Error::invalid(
                            "ACCOUNTS_OUT_OF_ORDER",
                            format!("{at}.account_number"),
                            format!("part {part_number}: accounts must come in strictly ascending account-number order, each once; {} is out of place", account.account_number),
                        ).into());
                    }
                    last_account = Some(account.account_number.clone());
                    account_count += 1;
                    holding_count += account.holdings.len() as i64;
                    valid.push(account);
                }
                let db = db.clone();
                pipeline
                    .submit(async move {
                        db.run(move |c| {
                            store::ingest::insert_accounts(
                                c,
                                snapshot_id,
                                &valid,
                                time::now_micros(),
                            )
                        })
                        .await
                    })
                    .await?;
            }
        }
    }
    pipeline.wait().await?;

    let announced = (
        header.instrument_count,
        header.account_count,
        header.holding_count,
    );
    let received = (instrument_count, account_count, holding_count);
    if announced != received {
        return Err(Error::invalid(
            "INCOMPLETE_SNAPSHOT",
            "header",
            format!(
                "the header announced {} instruments, {} accounts and {} holdings, the stream carried {}, {} and {}; nothing was changed",
                announced.0, announced.1, announced.2, received.0, received.1, received.2
            ),
        )
        .into());
    }
    let computed = digest.finish();
    if computed != header.digest {
        return Err(Error::invalid(
            "DIGEST_MISMATCH",
            "header.digest",
            format!(
                "the records hash to {computed}, not to the header's {}; nothing was changed",
                header.digest
            ),
        )
        .into());
    }
    let finish = {
        let header = header.clone();
        db.run(move |c| {
            store::ingest::finish_load(
                c,
                snapshot_id,
                &header,
                time::now_micros(),
                config.flip_lock_key,
            )
        })
        .await?
    };
    match finish {
        Finish::Current(current) => {
            guard.disarm();
            tracing::info!(
                snapshot_id,
                accounts = current.account_count,
                holdings = current.holding_count,
                "snapshot is current"
            );
            Ok(Loaded {
                unchanged: false,
                current,
            })
        }
        // A concurrent load of the same day won; ours is discarded by the guard.
        Finish::Unchanged(current) => Ok(Loaded {
            unchanged: true,
            current,
        }),
    }
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
