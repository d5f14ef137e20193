//! Principal and holding rows on their way through the external sort: ordered by account,
//! principal before holdings, then by line, so that one pass over the sorted stream sees each
//! account's rows together and in file order.

use std::cmp::Ordering;
use std::io;

use invest_proto::ids::{AccountNumber, Isin};

use super::sort::Spill;
use crate::clean::{Fingerprint, HoldingRow, PrincipalRow, RowRef};

#[derive(Debug, Clone)]
pub(crate) enum SortEntry {
    Principal(PrincipalRow),
    Holding(HoldingRow),
    /// A row rejected by a row rule whose account number is well-formed, at this line: it
    /// makes its account one the delivery names (the loss guard counts those).
    Mention(AccountNumber, u64),
}

impl SortEntry {
    pub fn account_number(&self) -> &AccountNumber {
        match self {
            SortEntry::Principal(row) => &row.account_number,
            SortEntry::Holding(row) => &row.account_number,
            SortEntry::Mention(account_number, _) => account_number,
        }
    }

    fn key(&self) -> (&str, u8, u64) {
        match self {
            SortEntry::Principal(row) => (row.account_number.as_str(), 0, row.row.line),
            SortEntry::Holding(row) => (row.account_number.as_str(), 1, row.row.line),
            // A line holds one row, so (file, line) is unique; mentions come from both files.
            SortEntry::Mention(account_number, line) => (account_number.as_str(), 2, *line),
        }
    }
}

// Keys are unique but for mentions, which carry no more than their key: ordering by key
// alone is total, and two equal mentions are interchangeable.
impl PartialEq for SortEntry {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for SortEntry {}

impl PartialOrd for SortEntry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SortEntry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    put_u64(out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

fn put_row(out: &mut Vec<u8>, row: &RowRef) {
    put_u64(out, row.line);
    put_u64(out, row.offset);
    put_u64(out, row.len);
    out.extend_from_slice(&row.content.0);
}

/// Reads back what the `put_*` functions wrote.
struct Decoder<'a>(&'a [u8]);

fn corrupt(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("sort run is corrupt: {what}"),
    )
}

impl<'a> Decoder<'a> {
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(corrupt("truncated item"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> io::Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> io::Result<u64> {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(bytes))
    }

    fn i64(&mut self) -> io::Result<i64> {
        i64::try_from(self.u64()?).map_err(|_| corrupt("negative amount"))
    }

    fn str(&mut self) -> io::Result<&'a str> {
        let len = usize::try_from(self.u64()?).map_err(|_| corrupt("length"))?;
        std::str::from_utf8(self.take(len)?).map_err(|_| corrupt("text"))
    }

    fn row(&mut self) -> io::Result<RowRef> {
        let line = self.u64()?;
        let offset = self.u64()?;
        let len = self.u64()?;
        let mut content = [0; 16];
        content.copy_from_slice(self.take(16)?);
        Ok(RowRef {
            line,
            offset,
            len,
            content: Fingerprint(content),
        })
    }

    fn account_number(&mut self) -> io::Result<AccountNumber> {
        AccountNumber::parse(self.str()?).map_err(|error| corrupt(&error.0))
    }
}

const PRINCIPAL: u8 = 0;
const HOLDING: u8 = 1;
const MENTION: u8 = 2;

impl Spill for SortEntry {
    fn heap_bytes(&self) -> usize {
        match self {
            SortEntry::Principal(row) => row.account_number.as_str().len(),
            SortEntry::Holding(row) => {
                row.account_number.as_str().len()
                    + row.customer_name.len()
                    + row.brokerage.len()
                    + row.account_name.len()
                    + row.isin.as_str().len()
            }
            SortEntry::Mention(account_number, _) => account_number.as_str().len(),
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            SortEntry::Principal(row) => {
                out.push(PRINCIPAL);
                put_row(out, &row.row);
                put_str(out, row.account_number.as_str());
                put_u64(out, row.principal.unsigned_abs());
            }
            SortEntry::Holding(row) => {
                out.push(HOLDING);
                put_row(out, &row.row);
                put_str(out, row.account_number.as_str());
                put_str(out, &row.customer_name);
                put_str(out, &row.brokerage);
                put_str(out, &row.account_name);
                put_str(out, row.isin.as_str());
                // Amounts passed the row rules, so they are not negative.
                put_u64(out, row.current_price.unsigned_abs());
                put_u64(out, row.quantity.unsigned_abs());
                put_u64(out, row.valuation.unsigned_abs());
            }
            SortEntry::Mention(account_number, line) => {
                out.push(MENTION);
                put_u64(out, *line);
                put_str(out, account_number.as_str());
            }
        }
    }

    fn decode(bytes: &[u8]) -> io::Result<Self> {
        let mut decoder = Decoder(bytes);
        let entry = match decoder.u8()? {
            PRINCIPAL => SortEntry::Principal(PrincipalRow {
                row: decoder.row()?,
                account_number: decoder.account_number()?,
                principal: decoder.i64()?,
            }),
            HOLDING => SortEntry::Holding(HoldingRow {
                row: decoder.row()?,
                account_number: decoder.account_number()?,
                customer_name: decoder.str()?.to_owned(),
                brokerage: decoder.str()?.to_owned(),
                account_name: decoder.str()?.to_owned(),
                isin: Isin::parse(decoder.str()?).map_err(|error| corrupt(&error.0))?,
                current_price: decoder.i64()?,
                quantity: decoder.i64()?,
                valuation: decoder.i64()?,
            }),
            MENTION => {
                let line = decoder.u64()?;
                SortEntry::Mention(decoder.account_number()?, line)
            }
            _ => return Err(corrupt("unknown tag")),
        };
        if decoder.0.is_empty() {
            Ok(entry)
        } else {
            Err(corrupt("trailing bytes"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let row = RowRef {
            line: 17,
            offset: 1234,
            len: 56,
            content: Fingerprint([7; 16]),
        };
        let items = [
            SortEntry::Principal(PrincipalRow {
                row,
                account_number: AccountNumber::parse("5736692368320").unwrap(),
                principal: i64::MAX,
            }),
            SortEntry::Holding(HoldingRow {
                row,
                account_number: AccountNumber::parse("000123").unwrap(),
                customer_name: "류영길".into(),
                brokerage: "디셈버증권".into(),
                account_name: "계좌1".into(),
                isin: Isin::parse("CASH").unwrap(),
                current_price: 0,
                quantity: 3,
                valuation: 0,
            }),
            SortEntry::Mention(AccountNumber::parse("000123").unwrap(), 9),
        ];
        for item in items {
            let mut bytes = Vec::new();
            item.encode(&mut bytes);
            let back = SortEntry::decode(&bytes).unwrap();
            assert_eq!(format!("{back:?}"), format!("{item:?}"));
            assert!(SortEntry::decode(&bytes[..bytes.len() - 1]).is_err());
        }
    }
}
