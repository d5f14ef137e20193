//! The digest that identifies a cleaned dataset on the wire.
//!
//! Both ends compute it the same way: BLAKE3 over every record in the order it is sent, each
//! record as a kind byte, its encoded length (u64, little endian) and its protobuf encoding.
//! prost encodes a message deterministically, so the sender's digest and the digest the
//! server recomputes from what it received agree exactly when the records do.

use prost::Message;

/// Incremental digest of a record stream.
#[derive(Debug, Clone, Default)]
pub struct RecordDigest {
    hasher: blake3::Hasher,
    scratch: Vec<u8>,
}

/// Kind bytes: a record of one kind can never hash like a record of another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// A snapshot instrument.
    Instrument = 1,
    /// A snapshot account with its holdings.
    Account = 2,
    /// A directory entry.
    DirectoryEntry = 3,
}

impl RecordDigest {
    /// An empty digest.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one record.
    pub fn add(&mut self, kind: RecordKind, record: &impl Message) {
        self.scratch.clear();
        record
            .encode(&mut self.scratch)
            .expect("a Vec grows as needed");
        self.hasher.update(&[kind as u8]);
        self.hasher
            .update(&(self.scratch.len() as u64).to_le_bytes());
        self.hasher.update(&self.scratch);
    }

    /// Lowercase hex of the digest so far.
    pub fn finish(&self) -> String {
        self.hasher.finalize().to_hex().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::portfolio::v1::Instrument;

    fn instrument(isin: &str) -> Instrument {
        Instrument {
            isin: isin.into(),
            name: "n".into(),
            asset_group: "g".into(),
        }
    }

    #[test]
    fn order_and_content_matter() {
        let mut a = RecordDigest::new();
        a.add(RecordKind::Instrument, &instrument("CASH"));
        a.add(RecordKind::Instrument, &instrument("KR7360750004"));
        let mut b = RecordDigest::new();
        b.add(RecordKind::Instrument, &instrument("KR7360750004"));
        b.add(RecordKind::Instrument, &instrument("CASH"));
        assert_ne!(a.finish(), b.finish());
        let mut c = RecordDigest::new();
        c.add(RecordKind::Instrument, &instrument("CASH"));
        c.add(RecordKind::Instrument, &instrument("KR7360750004"));
        assert_eq!(a.finish(), c.finish());
        assert_eq!(a.finish().len(), 64);
    }
}
