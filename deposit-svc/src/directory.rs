//! LoadDirectory: the account directory of a day, checked record by record, written under a
//! `loading` directory and made current in one short transaction when the stream ended well
//! and matches its header.

use invest_proto::{
    deposit::v1::{self as pb, directory_part::Part},
    digest::{RecordDigest, RecordKind},
    ids::AccountNumber,
    time,
};
use invest_runtime::{db::Database, launch::CleanupGuard};
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

use crate::{
    error::{Error, Result},
    store::directory::{self, Begin, DirectoryRow, Entry, Finish},
};

/// What LoadDirectory answers.
#[derive(Debug)]
pub struct Loaded {
    /// True when nothing changed.
    pub unchanged: bool,
    /// The directory now current.
    pub current: DirectoryRow,
}

fn invalid(
    reason: &'static str,
    field: impl Into<String>,
    description: impl Into<String>,
) -> Status {
    Error::invalid(reason, field, description).into()
}

/// Runs one LoadDirectory stream to its end.
pub async fn load_directory<S>(
    db: Database,
    mut parts: S,
    flip_lock_key: i64,
) -> Result<Loaded, Status>
where
    S: Stream<Item = Result<pb::DirectoryPart, Status>> + Unpin,
{
    let header = match parts.next().await {
        Some(part) => match part?.part {
            Some(Part::Header(header)) => header,
            _ => {
                return Err(invalid(
                    "PARTS_OUT_OF_ORDER",
                    "part",
                    "the first part must be a header",
                ));
            }
        },
        None => {
            return Err(invalid(
                "PARTS_OUT_OF_ORDER",
                "part",
                "the stream is empty; the first part must be a header",
            ));
        }
    };
    let as_of = header
        .as_of
        .as_ref()
        .and_then(time::to_micros)
        .ok_or_else(|| {
            invalid(
                "INVALID_AS_OF",
                "header.as_of",
                "required, a valid timestamp",
            )
        })?;
    let digest = header.digest.to_ascii_lowercase();
    if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid(
            "INVALID_DIGEST",
            "header.digest",
            "must be the 64 hex digits of a BLAKE3 digest",
        ));
    }
    if header.entry_count <= 0 {
        return Err(invalid(
            "EMPTY_DIRECTORY",
            "header.entry_count",
            "a directory without accounts would refuse every deposit; refusing it",
        ));
    }
    let begin = {
        let digest = digest.clone();
        db.run(move |c| directory::begin_load(c, as_of, &digest, time::now_micros()))
            .await?
    };
    let directory_id = match begin {
        Begin::Unchanged(current) => {
            return Ok(Loaded {
                unchanged: true,
                current,
            });
        }
        Begin::Started(id) => id,
    };
    let mut guard = {
        let db = db.clone();
        CleanupGuard::new(async move {
            if let Err(e) = db.run(move |c| directory::discard(c, directory_id)).await {
                tracing::warn!(directory_id, error = %e, "could not discard unfinished directory; the janitor will");
            }
        })
    };

    let mut hasher = RecordDigest::new();
    let mut last: Option<AccountNumber> = None;
    let mut count = 0i64;
    let mut part_number = 1u64;
    while let Some(part) = parts.next().await {
        part_number += 1;
        let batch = match part?.part {
            Some(Part::Entries(batch)) => batch,
            _ => {
                return Err(invalid(
                    "PARTS_OUT_OF_ORDER",
                    "part",
                    format!("part {part_number}: after the header only entry batches may follow"),
                ));
            }
        };
        let mut entries = Vec::with_capacity(batch.entries.len());
        for (i, entry) in batch.entries.iter().enumerate() {
            let at = format!("entries.entries[{i}]");
            let account = AccountNumber::parse(&entry.account_number).map_err(|e| {
                invalid(
                    "INVALID_ACCOUNT_NUMBER",
                    format!("{at}.account_number"),
                    e.0,
                )
            })?;
            let customer_name = invest_runtime::error::required_text(
                &entry.customer_name,
                format!("{at}.customer_name"),
            )?;
            if last.as_ref().is_some_and(|l| *l >= account) {
                return Err(invalid(
                    "ENTRIES_OUT_OF_ORDER",
                    format!("{at}.account_number"),
                    format!(
                        "part {part_number}: entries must come in strictly ascending account-number order, each once; {account} is out of place"
                    ),
                ));
            }
            hasher.add(RecordKind::DirectoryEntry, entry);
            entries.push(Entry {
                account_number: account.as_str().to_owned(),
                customer_name,
            });
            last = Some(account);
            count += 1;
        }
        db.run(move |c| directory::insert_entries(c, directory_id, &entries, time::now_micros()))
            .await?;
    }
    if count != header.entry_count {
        return Err(invalid(
            "INCOMPLETE_DIRECTORY",
            "header.entry_count",
            format!(
                "the header announced {} entries, the stream carried {count}; nothing was changed",
                header.entry_count
            ),
        ));
    }
    let computed = hasher.finish();
    if computed != digest {
        return Err(invalid(
            "DIGEST_MISMATCH",
            "header.digest",
            format!(
                "the entries hash to {computed}, not to the header's {digest}; nothing was changed"
            ),
        ));
    }
    let finish = db
        .run(move |c| {
            directory::finish_load(
                c,
                directory_id,
                as_of,
                &digest,
                count,
                time::now_micros(),
                flip_lock_key,
            )
        })
        .await?;
    match finish {
        Finish::Current(current) => {
            guard.disarm();
            tracing::info!(directory_id, entries = count, "directory is current");
            Ok(Loaded {
                unchanged: false,
                current,
            })
        }
        Finish::Unchanged(current) => Ok(Loaded {
            unchanged: true,
            current,
        }),
    }
}
