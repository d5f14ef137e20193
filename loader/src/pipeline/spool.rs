//! The cleaned accounts on disk: length-delimited protobuf `SnapshotAccount`s in a temporary
//! file, written once and readable any number of times.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::Arc;

use invest_proto::portfolio::v1::SnapshotAccount;
use prost::Message;
use tempfile::NamedTempFile;

const BUFFER: usize = 256 << 10;

pub(crate) struct SpoolWriter {
    file: NamedTempFile,
    writer: BufWriter<File>,
}

impl SpoolWriter {
    pub fn create(scratch_parent: Option<&Path>) -> io::Result<Self> {
        let mut builder = tempfile::Builder::new();
        builder.prefix("loader-spool-");
        let file = match scratch_parent {
            Some(parent) => builder.tempfile_in(parent)?,
            None => builder.tempfile()?,
        };
        let writer = BufWriter::with_capacity(BUFFER, file.reopen()?);
        Ok(Self { file, writer })
    }

    pub fn write(&mut self, account: &SnapshotAccount) -> io::Result<()> {
        self.writer
            .write_all(&account.encode_length_delimited_to_vec())
    }

    pub fn finish(mut self) -> io::Result<Spool> {
        self.writer.flush()?;
        Ok(Spool(Arc::new(self.file)))
    }
}

/// The written spool; shared with its readers so that the file outlives all of them.
#[derive(Debug, Clone)]
pub(crate) struct Spool(Arc<NamedTempFile>);

impl Spool {
    pub fn accounts(&self) -> io::Result<Accounts> {
        Ok(Accounts {
            reader: BufReader::with_capacity(BUFFER, self.0.reopen()?),
            scratch: Vec::new(),
            _spool: Arc::clone(&self.0),
            failed: false,
        })
    }
}

/// The cleaned accounts in ascending account-number order, read from the spool. Each call
/// of [`super::CleanedDay::accounts`] gives an independent reader.
#[derive(Debug)]
pub struct Accounts {
    reader: BufReader<File>,
    scratch: Vec<u8>,
    _spool: Arc<NamedTempFile>,
    failed: bool,
}

impl Accounts {
    /// The varint length prefix, or `None` at a clean end of file.
    fn read_len(&mut self) -> io::Result<Option<usize>> {
        let mut value: u64 = 0;
        for index in 0..10 {
            let mut byte = [0u8; 1];
            if self.reader.read(&mut byte)? == 0 {
                return if index == 0 {
                    Ok(None)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "spool ends inside a length",
                    ))
                };
            }
            value |= u64::from(byte[0] & 0x7f) << (7 * index);
            if byte[0] < 0x80 {
                let len = usize::try_from(value)
                    .map_err(|_| io::Error::other("spool record too long"))?;
                return Ok(Some(len));
            }
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "spool length prefix is too long",
        ))
    }

    fn read_account(&mut self) -> io::Result<Option<SnapshotAccount>> {
        let Some(len) = self.read_len()? else {
            return Ok(None);
        };
        self.scratch.resize(len, 0);
        self.reader.read_exact(&mut self.scratch)?;
        SnapshotAccount::decode(self.scratch.as_slice())
            .map(Some)
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))
    }
}

impl Iterator for Accounts {
    type Item = io::Result<SnapshotAccount>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let next = self.read_account().transpose();
        if matches!(next, Some(Err(_))) {
            // After a broken record the stream has lost its framing: stop there.
            self.failed = true;
        }
        next
    }
}
