//! LoadDirectory: the account directory of a day (account number and owner), checked entry
//! by entry and written batch by batch under the staged-load protocol
//! (`invest_runtime::staged`): current only when the stream ended well and matches its header.

use invest_proto::{
    deposit::v1::{self as pb, directory_part::Part},
    digest::{RecordDigest, RecordKind},
    ids::AccountNumber,
};
use invest_runtime::{
    db::{Database, DbConnection},
    error::required_text,
    staged::{self, Ingest, StagedTables},
};
use tokio_stream::Stream;
use tonic::Status;

// The staged-load protocol's errors: the ingest's refusals are the runtime's.
use invest_runtime::error::{Error, Result};

use crate::store::{
    DIRECTORIES,
    directory::{self, DirectoryRow, Entry},
};

/// What LoadDirectory answers.
#[derive(Debug)]
pub struct Loaded {
    /// True when nothing changed.
    pub unchanged: bool,
    /// The directory now current.
    pub current: DirectoryRow,
}

/// The ingest of a directory: each entry checked (account number, owner's name, order) and
/// digested; entries written in batches.
#[derive(Debug, Default)]
pub struct DirectoryIngest {
    /// `(entry_count, digest)` announced by the header.
    announced: Option<(i64, String)>,
    digest: RecordDigest,
    last: Option<AccountNumber>,
    count: i64,
    rejected_rows: i64,
}

impl Ingest for DirectoryIngest {
    type Part = pb::DirectoryPart;
    type Batch = Vec<Entry>;

    fn header(&mut self, first: pb::DirectoryPart) -> Result<(i64, String)> {
        let Some(Part::Header(header)) = first.part else {
            return Err(Error::invalid(
                "PARTS_OUT_OF_ORDER",
                "part",
                "the first part must be a header",
            ));
        };
        let (as_of, digest) = staged::check_header(header.as_of.as_ref(), &header.digest)?;
        if header.entry_count <= 0 {
            return Err(Error::invalid(
                "EMPTY_DIRECTORY",
                "header.entry_count",
                "a directory without accounts would refuse every deposit; refusing it",
            ));
        }
        if header.rejected_rows < 0 {
            return Err(Error::invalid(
                "INVALID_COUNT",
                "header.rejected_rows",
                "must not be negative",
            ));
        }
        self.rejected_rows = header.rejected_rows;
        self.announced = Some((header.entry_count, digest.clone()));
        Ok((as_of, digest))
    }

    fn rejected_rows(&self) -> i64 {
        self.rejected_rows
    }

    fn accept(&mut self, part: pb::DirectoryPart, number: u64) -> Result<Vec<Entry>> {
        let Some(Part::Entries(batch)) = part.part else {
            return Err(Error::invalid(
                "PARTS_OUT_OF_ORDER",
                "part",
                format!("part {number}: after the header only entry batches may follow"),
            ));
        };
        let mut entries = Vec::with_capacity(batch.entries.len());
        for (i, entry) in batch.entries.iter().enumerate() {
            let at = format!("entries.entries[{i}]");
            let account = AccountNumber::parse(&entry.account_number).map_err(|e| {
                Error::invalid(
                    "INVALID_ACCOUNT_NUMBER",
                    format!("{at}.account_number"),
                    e.0,
                )
            })?;
            let customer_name = required_text(&entry.customer_name, format!("{at}.customer_name"))?;
            if self.last.as_ref().is_some_and(|l| *l >= account) {
                return Err(Error::invalid(
                    "ENTRIES_OUT_OF_ORDER",
                    format!("{at}.account_number"),
                    format!(
                        "part {number}: entries must come in strictly ascending account-number order, each once; {account} is out of place"
                    ),
                ));
            }
            self.digest.add(RecordKind::DirectoryEntry, entry);
            entries.push(Entry {
                account_number: account.clone(),
                customer_name,
            });
            self.last = Some(account);
            self.count += 1;
        }
        Ok(entries)
    }

    fn write(
        conn: &mut DbConnection,
        _tables: &StagedTables,
        id: i64,
        batch: &Vec<Entry>,
        now: i64,
    ) -> Result<()> {
        directory::insert_entries(conn, id, batch, now)
    }

    fn complete(&self) -> Result<Vec<(&'static str, i64)>> {
        let Some((entry_count, digest)) = &self.announced else {
            return Err(Error::invalid(
                "PARTS_OUT_OF_ORDER",
                "part",
                "the first part must be a header",
            ));
        };
        if self.count != *entry_count {
            return Err(Error::invalid(
                "INCOMPLETE_DIRECTORY",
                "header.entry_count",
                format!(
                    "the header announced {entry_count} entries, the stream carried {}; nothing was changed",
                    self.count
                ),
            ));
        }
        let computed = self.digest.clone().finish();
        if computed != *digest {
            return Err(Error::invalid(
                "DIGEST_MISMATCH",
                "header.digest",
                format!(
                    "the entries hash to {computed}, not to the header's {digest}; nothing was changed"
                ),
            ));
        }
        Ok(vec![("entry_count", self.count)])
    }
}

/// Runs one LoadDirectory stream to its end.
pub async fn load_directory<S>(db: Database, parts: S, flip_lock_key: i64) -> Result<Loaded, Status>
where
    S: Stream<Item = Result<pb::DirectoryPart, Status>> + Unpin,
{
    let loaded = staged::load(
        db.clone(),
        &DIRECTORIES,
        flip_lock_key,
        DirectoryIngest::default(),
        parts,
    )
    .await?;
    let current = db
        .run(|c| -> Result<_> { Ok(directory::current(c)?) })
        .await?
        .ok_or_else(|| {
            Error::Unavailable("the directory just loaded is gone; load it again".into())
        })?;
    Ok(Loaded {
        unchanged: loaded.unchanged,
        current,
    })
}
