//! Streaming a cleaned day to the services: the snapshot to portfolio-svc, the account
//! directory to deposit-svc. The day is read from the spool on a blocking
//! thread and sent in batches through a small bounded channel, so neither the loader nor the
//! server ever holds more than a few batches.

use std::{sync::Arc, time::Duration};

use invest_proto::{
    auth::{JwtKeys, SCOPE_INGEST_WRITE, ServiceToken},
    deposit::v1::{self as dpb, directory_ingest_client::DirectoryIngestClient},
    portfolio::v1::{
        self as pb, SnapshotAccount, portfolio_ingest_client::PortfolioIngestClient,
        snapshot_part::Part,
    },
};
use prost_types::Timestamp;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, transport::Channel};

use crate::pipeline::{CleanedDay, directory_entry};

/// Subject of the loader's own tokens.
pub const LOADER_SUBJECT: &str = "loader";

/// Largest message the loader sends (the server accepts 32 MiB).
const MAX_MESSAGE: usize = 32 * 1024 * 1024;

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The URL is not usable.
    #[error("invalid URL {url:?}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The service could not be reached.
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The service refused or failed the load.
    #[error("{service} refused the load: {code:?}: {message}")]
    Refused {
        /// Which service.
        service: &'static str,
        /// gRPC code.
        code: Code,
        /// The server's message.
        message: String,
    },
    /// The spool could not be read back.
    #[error("cannot read the cleaned day back: {0}")]
    Spool(#[from] std::io::Error),
}

impl PushError {
    /// Whether trying again later can help (the service was down or overloaded).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Refused { code, .. } => matches!(
                code,
                Code::Unavailable | Code::DeadlineExceeded | Code::Aborted
            ),
            _ => false,
        }
    }
}

/// Connects to a gRPC endpoint, retrying a few times while it starts up.
pub async fn connect(url: &str, attempts: u32) -> Result<Channel, PushError> {
    let endpoint = Channel::from_shared(url.to_owned())
        .map_err(|e| PushError::Url {
            url: url.to_owned(),
            reason: e.to_string(),
        })?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    let mut delay = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        match endpoint.connect().await {
            Ok(channel) => return Ok(channel),
            Err(e) if attempt >= attempts.max(1) => {
                return Err(PushError::Unreachable {
                    url: url.to_owned(),
                    reason: error_chain(&e),
                });
            }
            Err(e) => {
                tracing::warn!(%url, attempt, error = %error_chain(&e), retry_in = ?delay, "cannot connect yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                attempt += 1;
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Progress of a push, in accounts sent.
pub type PushProgress = Arc<dyn Fn(u64) + Send + Sync>;

/// Reads the spool on a blocking thread and feeds a small bounded channel: the `head` parts,
/// then one part per batch of accounts holding about `batch_rows` rows (`rows_of` counts an
/// account's rows). When the call ends early (the server answered, or failed), the receiver
/// is dropped and the producer stops at its next send.
fn produce<P: Send + 'static>(
    day: Arc<CleanedDay>,
    head: Vec<P>,
    batch_rows: usize,
    rows_of: fn(&SnapshotAccount) -> usize,
    part_of: fn(Vec<SnapshotAccount>) -> P,
    progress: Option<PushProgress>,
) -> (ReceiverStream<P>, JoinHandle<std::io::Result<()>>) {
    let (tx, rx) = tokio::sync::mpsc::channel::<P>(4);
    let producer = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        for part in head {
            if tx.blocking_send(part).is_err() {
                return Ok(());
            }
        }
        let mut batch = Vec::new();
        let (mut rows, mut sent) = (0usize, 0u64);
        let mut accounts = day.accounts()?.peekable();
        while let Some(account) = accounts.next() {
            let account = account?;
            rows += rows_of(&account);
            batch.push(account);
            if rows >= batch_rows.max(1) || accounts.peek().is_none() {
                sent += batch.len() as u64;
                if tx
                    .blocking_send(part_of(std::mem::take(&mut batch)))
                    .is_err()
                {
                    return Ok(());
                }
                if let Some(progress) = &progress {
                    progress(sent);
                }
                rows = 0;
            }
        }
        Ok(())
    });
    (ReceiverStream::new(rx), producer)
}

/// Waits for the producer: a spool read error surfaces as such rather than as a confusing
/// count mismatch on the server.
async fn join(producer: JoinHandle<std::io::Result<()>>) -> Result<(), PushError> {
    match producer.await {
        Ok(result) => result.map_err(PushError::Spool),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Ok(()),
    }
}

/// Streams the day to `PortfolioIngest.LoadSnapshot`: header, instruments, then accounts in
/// parts of about `batch_holdings` holdings.
pub async fn push_snapshot(
    channel: Channel,
    keys: Arc<JwtKeys>,
    day: Arc<CleanedDay>,
    as_of: Timestamp,
    batch_holdings: usize,
    progress: Option<PushProgress>,
) -> Result<pb::LoadSnapshotResponse, PushError> {
    let mut client = PortfolioIngestClient::with_interceptor(
        channel,
        ServiceToken::new(keys, LOADER_SUBJECT, &[SCOPE_INGEST_WRITE]),
    )
    .max_encoding_message_size(MAX_MESSAGE);
    let head = vec![
        pb::SnapshotPart {
            part: Some(Part::Header(pb::SnapshotHeader {
                as_of: Some(as_of),
                digest: day.digest.clone(),
                instrument_count: day.instruments.len() as i64,
                account_count: day.account_count as i64,
                holding_count: day.holding_count as i64,
            })),
        },
        pb::SnapshotPart {
            part: Some(Part::Instruments(pb::InstrumentBatch {
                instruments: day.instruments.clone(),
            })),
        },
    ];
    let (parts, producer) = produce(
        day,
        head,
        batch_holdings,
        |account| account.holdings.len(),
        |accounts| pb::SnapshotPart {
            part: Some(Part::Accounts(pb::AccountBatch { accounts })),
        },
        progress,
    );
    let result = client.load_snapshot(parts).await;
    join(producer).await?;
    result
        .map(|r| r.into_inner())
        .map_err(|status| refused("portfolio-svc", status))
}

/// Streams the account directory of the day to `DirectoryIngest.LoadDirectory`.
pub async fn push_directory(
    channel: Channel,
    keys: Arc<JwtKeys>,
    day: Arc<CleanedDay>,
    as_of: Timestamp,
    batch_entries: usize,
) -> Result<dpb::LoadDirectoryResponse, PushError> {
    let mut client = DirectoryIngestClient::with_interceptor(
        channel,
        ServiceToken::new(keys, LOADER_SUBJECT, &[SCOPE_INGEST_WRITE]),
    )
    .max_encoding_message_size(MAX_MESSAGE);
    let head = vec![dpb::DirectoryPart {
        part: Some(dpb::directory_part::Part::Header(dpb::DirectoryHeader {
            as_of: Some(as_of),
            digest: day.directory_digest.clone(),
            entry_count: day.account_count as i64,
        })),
    }];
    let (parts, producer) = produce(
        day,
        head,
        batch_entries,
        |_| 1,
        |accounts| dpb::DirectoryPart {
            part: Some(dpb::directory_part::Part::Entries(dpb::DirectoryBatch {
                entries: accounts.iter().map(directory_entry).collect(),
            })),
        },
        None,
    );
    let result = client.load_directory(parts).await;
    join(producer).await?;
    result
        .map(|r| r.into_inner())
        .map_err(|status| refused("deposit-svc", status))
}

fn refused(service: &'static str, status: Status) -> PushError {
    PushError::Refused {
        service,
        code: status.code(),
        message: status.message().to_owned(),
    }
}
