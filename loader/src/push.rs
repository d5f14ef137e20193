//! Streaming a cleaned day to the services: the snapshot to portfolio-svc, the account
//! directory to deposit-svc. The day is read from the spool on a blocking
//! thread and sent in batches through a small bounded channel, so neither the loader nor the
//! server ever holds more than a few batches.

use std::{
    marker::PhantomData,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use invest_cli::ConnectError;
use invest_proto::{
    auth::{JwtKeys, SCOPE_INGEST_WRITE, ServiceToken},
    deposit::v1::{self as dpb},
    portfolio::v1::{
        self as pb, SnapshotAccount, portfolio_ingest_client::PortfolioIngestClient,
        snapshot_part::Part,
    },
};
use prost::Message as _;
use prost_types::Timestamp;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::Stream;
use tonic::{
    Code, Status,
    client::Grpc,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::http::uri::PathAndQuery,
    service::interceptor::InterceptedService,
    transport::Channel,
};

use invest_cli::trace::{self, Propagate};
use tracing::Instrument as _;

use crate::pipeline::{CleanedDay, directory_entry};

/// Subject of the loader's own tokens.
pub const LOADER_SUBJECT: &str = "loader";

/// Largest message the loader sends (the server accepts 32 MiB).
const MAX_MESSAGE: usize = 32 * 1024 * 1024;

/// How long an aborted call may take to end on its broken stream before it is dropped.
const ABORT_GRACE: Duration = Duration::from_secs(30);

/// A batch ends once its accounts encode to this many bytes, whatever their row count: long
/// names cannot make a batch (and the few batches in flight) grow past a bound.
const MAX_BATCH_BYTES: usize = 2 << 20;

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

/// Connects to a service, retrying a few times while it starts up.
pub async fn connect(url: &str, attempts: u32) -> Result<Channel, PushError> {
    invest_cli::connect(url, attempts)
        .await
        .map_err(|e| match e {
            ConnectError::Url { url, reason } => PushError::Url { url, reason },
            ConnectError::Unreachable { url, reason } => PushError::Unreachable { url, reason },
        })
}

/// Progress of a push, in accounts sent.
pub type PushProgress = Arc<dyn Fn(u64) + Send + Sync>;

/// Keeps the directory's stream in step with the snapshot's when both are pushed together.
/// The directory is a small fraction of the day: sent freely, it would have sent every part
/// long before the snapshot and then wait, silent, for the snapshot to end, and a server
/// closes a stream that sends nothing for a minute (`SECURITY.md`). So the directory sends the
/// entries of accounts that the snapshot has already sent, and no more.
#[derive(Debug, Default)]
struct Lockstep {
    /// (accounts the snapshot has sent, whether it has stopped sending).
    sent: std::sync::Mutex<(u64, bool)>,
    moved: std::sync::Condvar,
}

impl Lockstep {
    /// The snapshot has sent `accounts` accounts.
    fn advance(&self, accounts: u64) {
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        sent.0 = accounts;
        self.moved.notify_all();
    }

    /// The snapshot sends no more (every part sent, or its call ended): nothing to wait for.
    fn stop(&self) {
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        sent.1 = true;
        self.moved.notify_all();
    }

    /// Blocks until the snapshot has sent `accounts` accounts or stopped.
    fn wait_for(&self, accounts: u64) {
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        while sent.0 < accounts && !sent.1 {
            sent = self.moved.wait(sent).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Stops a [`Lockstep`] when the snapshot's producer ends, however it ends.
struct StopOnExit(Option<Arc<Lockstep>>);

impl Drop for StopOnExit {
    fn drop(&mut self) {
        if let Some(lockstep) = &self.0 {
            lockstep.stop();
        }
    }
}

/// A producer's side of a [`Lockstep`].
enum Step {
    /// Sends freely.
    Free,
    /// The snapshot: says how far it has got.
    Lead(Arc<Lockstep>),
    /// The directory: waits for the snapshot.
    Follow(Arc<Lockstep>),
}

/// What the stream of a push carries from the producer.
enum Produced<P> {
    Part(P),
    /// Every part was produced: the stream may end once the gate says so.
    End,
}

/// An item of a gated request stream.
enum Gated<P> {
    /// A part, encoded as itself.
    Part(P),
    /// Fails the encoder, which makes the transport reset the stream with INTERNAL_ERROR:
    /// the server sees a broken stream and changes nothing. (A reset with CANCEL, what
    /// dropping the call or tonic's cancellation handle sends, reaches a hyper server as a
    /// clean end of the stream: a server holding every part would then commit.)
    Abort,
}

/// Protobuf codec of a gated stream: parts as themselves, `Abort` as an encoding error.
struct GateCodec<P, R>(PhantomData<fn() -> (P, R)>);

impl<P, R> GateCodec<P, R> {
    fn new() -> Self {
        Self(PhantomData)
    }
}

struct GateEncoder<P>(PhantomData<fn() -> P>);

struct ProtoDecoder<R>(PhantomData<fn() -> R>);

impl<P, R> Codec for GateCodec<P, R>
where
    P: prost::Message + Send + 'static,
    R: prost::Message + Default + Send + 'static,
{
    type Encode = Gated<P>;
    type Decode = R;
    type Encoder = GateEncoder<P>;
    type Decoder = ProtoDecoder<R>;

    fn encoder(&mut self) -> Self::Encoder {
        GateEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProtoDecoder(PhantomData)
    }
}

impl<P: prost::Message> Encoder for GateEncoder<P> {
    type Item = Gated<P>;
    type Error = Status;

    fn encode(&mut self, item: Gated<P>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        match item {
            Gated::Part(part) => part
                .encode(dst)
                .map_err(|e| Status::internal(format!("encoding a part: {e}"))),
            Gated::Abort => Err(Status::aborted(
                "the loader aborted the load: the other service failed",
            )),
        }
    }
}

impl<R: prost::Message + Default> Decoder for ProtoDecoder<R> {
    type Item = R;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<R>, Status> {
        R::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("decoding the response: {e}")))
    }
}

/// What the coordinator decides for a stream that has sent every part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    /// End the stream: the server commits.
    Commit,
    /// Never end it: cancel it (RST_STREAM), the server changes nothing.
    Abort,
}

/// The coordinator's side of a gate.
struct GateControl {
    decision: mpsc::Sender<Decision>,
    /// Fires once the stream has handed every part to the transport.
    sent_all: Option<oneshot::Receiver<()>>,
}

impl GateControl {
    fn decide(&self, decision: Decision) {
        // A full or closed channel means the stream has decided or is gone already.
        let _ = self.decision.try_send(decision);
    }
}

/// The stream's side of a gate.
struct Gate {
    decision: mpsc::Receiver<Decision>,
    sent_all: Option<oneshot::Sender<()>>,
}

/// A gate whose stream ends only when the coordinator says `Commit`.
fn gate() -> (Gate, GateControl) {
    let (decision_tx, decision_rx) = mpsc::channel(2);
    let (sent_tx, sent_rx) = oneshot::channel();
    (
        Gate {
            decision: decision_rx,
            sent_all: Some(sent_tx),
        },
        GateControl {
            decision: decision_tx,
            sent_all: Some(sent_rx),
        },
    )
}

/// A gate already open: the stream ends as soon as every part is sent (one service alone).
fn open_gate() -> Gate {
    let (gate, control) = gate();
    control.decide(Decision::Commit);
    gate
}

/// The request stream of a push: the produced parts, then, instead of ending (which makes
/// the server commit), a wait for the coordinator's decision. `Abort` (or the coordinator
/// gone) fails the stream ([`Gated::Abort`]): the server sees a broken stream and changes
/// nothing. It never ends without `Commit`.
struct GatedParts<P> {
    parts: mpsc::Receiver<Produced<P>>,
    gate: Gate,
    committed: bool,
    sent_all: bool,
    aborted: bool,
}

impl<P> GatedParts<P> {
    fn abort(&mut self) -> Poll<Option<Gated<P>>> {
        self.aborted = true;
        Poll::Ready(Some(Gated::Abort))
    }
}

impl<P> Stream for GatedParts<P> {
    type Item = Gated<P>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Gated<P>>> {
        let this = self.get_mut();
        if this.aborted {
            // The encoder failed on `Abort`; never end, whatever polls next.
            return Poll::Pending;
        }
        while !this.committed {
            match this.gate.decision.poll_recv(cx) {
                Poll::Ready(Some(Decision::Commit)) => this.committed = true,
                Poll::Ready(Some(Decision::Abort)) | Poll::Ready(None) => return this.abort(),
                Poll::Pending => break,
            }
        }
        if !this.sent_all {
            match this.parts.poll_recv(cx) {
                Poll::Ready(Some(Produced::Part(part))) => {
                    return Poll::Ready(Some(Gated::Part(part)));
                }
                Poll::Ready(Some(Produced::End)) => {
                    this.sent_all = true;
                    if let Some(sent_all) = this.gate.sent_all.take() {
                        let _ = sent_all.send(());
                    }
                }
                // The producer stopped short (the spool could not be read): never commit.
                Poll::Ready(None) => return this.abort(),
                Poll::Pending => return Poll::Pending,
            }
        }
        if this.committed {
            Poll::Ready(None)
        } else {
            // The decision channel's waker is registered above.
            Poll::Pending
        }
    }
}

/// Calls a client-streaming ingest method with a stream that only ends through `gate`.
async fn call_gated<P, R>(
    channel: Channel,
    keys: Arc<JwtKeys>,
    service: &'static str,
    method: &'static str,
    parts: mpsc::Receiver<Produced<P>>,
    gate: Gate,
) -> Result<R, PushError>
where
    P: prost::Message + Send + Sync + 'static,
    R: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = Grpc::new(InterceptedService::new(
        channel,
        Propagate(ServiceToken::new(
            keys,
            LOADER_SUBJECT,
            &[SCOPE_INGEST_WRITE],
        )),
    ))
    .max_encoding_message_size(MAX_MESSAGE);
    let (rpc_service, rpc_method) = method
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or((method, ""));
    let span = trace::client_span(rpc_service, rpc_method);
    grpc.ready().await.map_err(|e| PushError::Unreachable {
        url: service.to_owned(),
        reason: e.to_string(),
    })?;
    let request = tonic::Request::new(GatedParts {
        parts,
        gate,
        committed: false,
        sent_all: false,
        aborted: false,
    });
    let answer = grpc
        .client_streaming(request, PathAndQuery::from_static(method), GateCodec::new())
        .instrument(span.clone())
        .await;
    let code = answer.as_ref().map_or_else(|s| s.code() as i32, |_| 0);
    trace::record_status(&span, code, false);
    answer
        .map(tonic::Response::into_inner)
        .map_err(|status| refused(service, status))
}

/// Reads the spool on a blocking thread and feeds a small bounded channel: the `head` parts,
/// then one part per batch of accounts holding about `batch_rows` rows (`rows_of` counts an
/// account's rows) and at most about [`MAX_BATCH_BYTES`] encoded, then `End`. When the call
/// ends early (the server answered, or failed), the receiver is dropped and the producer
/// stops at its next send.
#[allow(clippy::too_many_arguments)] // the parts of one stream, each its own
fn produce<P: Send + 'static>(
    day: Arc<CleanedDay>,
    head: Vec<P>,
    batch_rows: usize,
    rows_of: fn(&SnapshotAccount) -> usize,
    bytes_of: fn(&SnapshotAccount) -> usize,
    part_of: fn(Vec<SnapshotAccount>) -> P,
    progress: Option<PushProgress>,
    step: Step,
) -> (mpsc::Receiver<Produced<P>>, JoinHandle<std::io::Result<()>>) {
    let (tx, rx) = mpsc::channel::<Produced<P>>(4);
    let producer = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let _stop = StopOnExit(match &step {
            Step::Lead(lockstep) => Some(lockstep.clone()),
            _ => None,
        });
        for part in head {
            if tx.blocking_send(Produced::Part(part)).is_err() {
                return Ok(());
            }
        }
        let mut batch = Vec::new();
        let (mut rows, mut bytes, mut sent) = (0usize, 0usize, 0u64);
        let mut accounts = day.accounts()?.peekable();
        while let Some(account) = accounts.next() {
            let account = account?;
            rows += rows_of(&account);
            bytes += bytes_of(&account);
            batch.push(account);
            if rows >= batch_rows.max(1) || bytes >= MAX_BATCH_BYTES || accounts.peek().is_none() {
                sent += batch.len() as u64;
                if let Step::Follow(lockstep) = &step {
                    lockstep.wait_for(sent);
                }
                if tx
                    .blocking_send(Produced::Part(part_of(std::mem::take(&mut batch))))
                    .is_err()
                {
                    return Ok(());
                }
                if let Some(progress) = &progress {
                    progress(sent);
                }
                if let Step::Lead(lockstep) = &step {
                    lockstep.advance(sent);
                }
                (rows, bytes) = (0, 0);
            }
        }
        let _ = tx.blocking_send(Produced::End);
        Ok(())
    });
    (rx, producer)
}

/// Waits for the producer: a spool read error surfaces as such rather than as a confusing
/// cancelled call.
async fn join(producer: JoinHandle<std::io::Result<()>>) -> Result<(), PushError> {
    match producer.await {
        Ok(result) => result.map_err(PushError::Spool),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Ok(()),
    }
}

fn snapshot_client(
    channel: Channel,
    keys: Arc<JwtKeys>,
) -> PortfolioIngestClient<InterceptedService<Channel, Propagate<ServiceToken>>> {
    PortfolioIngestClient::with_interceptor(
        channel,
        Propagate(ServiceToken::new(
            keys,
            LOADER_SUBJECT,
            &[SCOPE_INGEST_WRITE],
        )),
    )
    .max_encoding_message_size(MAX_MESSAGE)
}

/// Streams the day to `PortfolioIngest.LoadSnapshot` on its own (no other service waits):
/// header, instruments, then accounts in parts of about `batch_holdings` holdings.
pub async fn push_snapshot(
    channel: Channel,
    keys: Arc<JwtKeys>,
    day: Arc<CleanedDay>,
    as_of: Timestamp,
    batch_holdings: usize,
    progress: Option<PushProgress>,
) -> Result<pb::LoadSnapshotResponse, PushError> {
    load_snapshot(
        channel,
        keys,
        day,
        as_of,
        batch_holdings,
        progress,
        open_gate(),
        Step::Free,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn load_snapshot(
    channel: Channel,
    keys: Arc<JwtKeys>,
    day: Arc<CleanedDay>,
    as_of: Timestamp,
    batch_holdings: usize,
    progress: Option<PushProgress>,
    gate: Gate,
    step: Step,
) -> Result<pb::LoadSnapshotResponse, PushError> {
    let head = vec![
        pb::SnapshotPart {
            part: Some(Part::Header(pb::SnapshotHeader {
                as_of: Some(as_of),
                digest: day.digest.clone(),
                instrument_count: day.instruments.len() as i64,
                account_count: day.account_count as i64,
                holding_count: day.holding_count as i64,
                rejects: day
                    .rejects
                    .iter()
                    .map(|r| pb::RejectCount {
                        file: r.file.to_owned(),
                        rule: r.rule.to_owned(),
                        rows: i64::try_from(r.rows).unwrap_or(i64::MAX),
                    })
                    .collect(),
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
        |account| account.encoded_len(),
        |accounts| pb::SnapshotPart {
            part: Some(Part::Accounts(pb::AccountBatch { accounts })),
        },
        progress,
        step,
    );
    let result = call_gated(
        channel,
        keys,
        "portfolio-svc",
        "/invest.portfolio.v1.PortfolioIngest/LoadSnapshot",
        parts,
        gate,
    )
    .await;
    join(producer).await?;
    result
}

/// Streams the account directory of the day to `DirectoryIngest.LoadDirectory` on its own.
pub async fn push_directory(
    channel: Channel,
    keys: Arc<JwtKeys>,
    day: Arc<CleanedDay>,
    as_of: Timestamp,
    batch_entries: usize,
) -> Result<dpb::LoadDirectoryResponse, PushError> {
    load_directory(
        channel,
        keys,
        day,
        as_of,
        batch_entries,
        open_gate(),
        Step::Free,
    )
    .await
}

async fn load_directory(
    channel: Channel,
    keys: Arc<JwtKeys>,
    day: Arc<CleanedDay>,
    as_of: Timestamp,
    batch_entries: usize,
    gate: Gate,
    step: Step,
) -> Result<dpb::LoadDirectoryResponse, PushError> {
    let head = vec![dpb::DirectoryPart {
        part: Some(dpb::directory_part::Part::Header(dpb::DirectoryHeader {
            as_of: Some(as_of),
            digest: day.directory_digest.clone(),
            entry_count: day.account_count as i64,
            rejected_rows: day.rejects.iter().fold(0i64, |sum, r| {
                sum.saturating_add(i64::try_from(r.rows).unwrap_or(i64::MAX))
            }),
        })),
    }];
    let (parts, producer) = produce(
        day,
        head,
        batch_entries,
        |_| 1,
        |account| directory_entry(account).encoded_len(),
        |accounts| dpb::DirectoryPart {
            part: Some(dpb::directory_part::Part::Entries(dpb::DirectoryBatch {
                entries: accounts.iter().map(directory_entry).collect(),
            })),
        },
        None,
        step,
    );
    let result = call_gated(
        channel,
        keys,
        "deposit-svc",
        "/invest.deposit.v1.DirectoryIngest/LoadDirectory",
        parts,
        gate,
    )
    .await;
    join(producer).await?;
    result
}

/// What became of one service in a push of the day.
#[derive(Debug)]
pub enum Outcome<R> {
    /// The service answered: loaded, or already had the day (`unchanged`).
    Done(R),
    /// The service (or the way to it) failed.
    Failed(PushError),
    /// Its stream was cancelled before its end because the other service failed: it
    /// changed nothing and keeps the previous day.
    Cancelled,
}

impl<R> Outcome<R> {
    /// Whether trying the whole push again can help.
    pub fn is_transient(&self) -> bool {
        match self {
            Outcome::Done(_) => true,
            Outcome::Failed(e) => e.is_transient(),
            Outcome::Cancelled => true,
        }
    }

    /// Whether the service has the day.
    pub fn is_done(&self) -> bool {
        matches!(self, Outcome::Done(_))
    }
}

/// What became of a push of the day to both services.
#[derive(Debug)]
pub struct DayOutcome {
    /// portfolio-svc (the snapshot).
    pub portfolio: Outcome<pb::LoadSnapshotResponse>,
    /// deposit-svc (the directory).
    pub deposit: Outcome<dpb::LoadDirectoryResponse>,
    /// Whether both streams were ended (released for commit): from then on each server
    /// commits on its own, and only a failure at its own commit can leave them apart.
    pub released: bool,
}

impl DayOutcome {
    /// Both services have the day.
    pub fn succeeded(&self) -> bool {
        self.portfolio.is_done() && self.deposit.is_done()
    }
}

/// Where a day goes.
#[derive(Debug, Clone)]
pub struct Targets {
    /// portfolio-svc.
    pub portfolio_url: String,
    /// deposit-svc.
    pub deposit_url: String,
}

/// One side of a coordinated push, as the coordinator sees it.
enum Side<R> {
    /// Still sending parts.
    Sending,
    /// Every part sent; waiting for the decision.
    Sent,
    /// The call finished.
    Finished(Result<R, PushError>),
}

impl<R> Side<R> {
    fn releasable(&self) -> bool {
        matches!(self, Side::Sent | Side::Finished(Ok(_)))
    }

    fn failed(&self) -> bool {
        matches!(self, Side::Finished(Err(_)))
    }

    fn finished(&self) -> bool {
        matches!(self, Side::Finished(_))
    }

    /// A side that had not finished when the push ended was cancelled.
    fn outcome(self) -> Outcome<R> {
        match self {
            Side::Finished(Ok(response)) => Outcome::Done(response),
            Side::Finished(Err(e)) => Outcome::Failed(e),
            Side::Sending | Side::Sent => Outcome::Cancelled,
        }
    }
}

/// Waits for a stream to report that it sent every part: true if it did, false if it went
/// away first (its call failed).
async fn sent_all(signal: &mut Option<oneshot::Receiver<()>>) -> bool {
    match signal.as_mut() {
        Some(rx) => rx.await.is_ok(),
        None => false,
    }
}

/// Streams the day to both services at once so that one never takes a day the other
/// refuses: neither stream is ended (which makes a server commit) until both have sent
/// every part with no error from either server; if either fails before that, the other's
/// call is cancelled (RST_STREAM: the server sees a broken stream and changes nothing).
/// Then both streams end together. A service that answers early that it already has the
/// day (`unchanged`) counts as ready.
pub async fn push_day(
    targets: &Targets,
    keys: Arc<JwtKeys>,
    day: Arc<CleanedDay>,
    as_of: Timestamp,
    batch: usize,
    progress: Option<PushProgress>,
) -> DayOutcome {
    let (portfolio_gate, mut portfolio_control) = gate();
    let (deposit_gate, mut deposit_control) = gate();
    let lockstep = Arc::new(Lockstep::default());
    // One trace for the day: both streams are its children.
    let day_span = if trace::enabled() {
        let as_of = invest_proto::time::to_micros(&as_of).map(invest_proto::time::rfc3339);
        tracing::info_span!("push day", as_of = as_of.as_deref().unwrap_or("?"))
    } else {
        tracing::Span::none()
    };
    let portfolio = {
        let (keys, day, lead) = (keys.clone(), day.clone(), Step::Lead(lockstep.clone()));
        // However the snapshot's side ends (even before its producer starts, or dropped),
        // the directory stops waiting for it.
        let stop = StopOnExit(Some(lockstep.clone()));
        async move {
            let _stop = stop;
            let channel = connect(&targets.portfolio_url, 3).await?;
            load_snapshot(
                channel,
                keys,
                day,
                as_of,
                batch,
                progress,
                portfolio_gate,
                lead,
            )
            .await
        }
        .instrument(day_span.clone())
    };
    let deposit = {
        let follow = Step::Follow(lockstep.clone());
        async move {
            let channel = connect(&targets.deposit_url, 3).await?;
            load_directory(channel, keys, day, as_of, batch, deposit_gate, follow).await
        }
        .instrument(day_span)
    };
    tokio::pin!(portfolio, deposit);
    let mut portfolio_sent = portfolio_control.sent_all.take();
    let mut deposit_sent = deposit_control.sent_all.take();
    let (mut portfolio_side, mut deposit_side) = (Side::Sending, Side::Sending);
    let mut released = false;
    loop {
        if !released && (portfolio_side.failed() || deposit_side.failed()) {
            // Abort whichever has not finished, and let its call end on the broken stream
            // before dropping it: dropping a call that is still running resets its stream
            // with CANCEL, which a hyper server takes for a clean end.
            portfolio_control.decide(Decision::Abort);
            deposit_control.decide(Decision::Abort);
            let drain = async {
                if !portfolio_side.finished() {
                    let _ = (&mut portfolio).await;
                }
                if !deposit_side.finished() {
                    let _ = (&mut deposit).await;
                }
            };
            if tokio::time::timeout(ABORT_GRACE, drain).await.is_err() {
                tracing::warn!(
                    "an aborted stream did not end within {ABORT_GRACE:?}; dropping it (its server holds only part of the day)"
                );
            }
            // Sides that had not finished when the push was aborted were cancelled.
            return DayOutcome {
                portfolio: portfolio_side.outcome(),
                deposit: deposit_side.outcome(),
                released,
            };
        }
        if !released && portfolio_side.releasable() && deposit_side.releasable() {
            portfolio_control.decide(Decision::Commit);
            deposit_control.decide(Decision::Commit);
            released = true;
        }
        if let (Side::Finished(_), Side::Finished(_)) = (&portfolio_side, &deposit_side) {
            break;
        }
        tokio::select! {
            result = &mut portfolio, if !portfolio_side.finished() => {
                portfolio_side = Side::Finished(result);
            }
            result = &mut deposit, if !deposit_side.finished() => {
                deposit_side = Side::Finished(result);
            }
            sent = sent_all(&mut portfolio_sent), if portfolio_sent.is_some() => {
                portfolio_sent = None;
                if sent && matches!(portfolio_side, Side::Sending) {
                    portfolio_side = Side::Sent;
                }
            }
            sent = sent_all(&mut deposit_sent), if deposit_sent.is_some() => {
                deposit_sent = None;
                if sent && matches!(deposit_side, Side::Sending) {
                    deposit_side = Side::Sent;
                }
            }
        }
    }
    DayOutcome {
        portfolio: portfolio_side.outcome(),
        deposit: deposit_side.outcome(),
        released,
    }
}

/// Pages `current_snapshot` reads at most before it concludes there is no current day.
const MAX_SNAPSHOT_PAGES: usize = 100;

/// The current snapshot of portfolio-svc (the one the screens read), if any: the shrink
/// guard compares the new day with it. It is normally the first record; records that are
/// not current (a load being cleaned up) are paged past.
pub async fn current_snapshot(
    url: &str,
    keys: Arc<JwtKeys>,
) -> Result<Option<pb::SnapshotRecord>, PushError> {
    let channel = connect(url, 3).await?;
    let mut client = snapshot_client(channel, keys);
    let mut page_token = String::new();
    for _ in 0..MAX_SNAPSHOT_PAGES {
        let page = client
            .list_snapshots(pb::ListSnapshotsRequest {
                page_size: 1,
                page_token,
            })
            .await
            .map_err(|status| refused("portfolio-svc", status))?
            .into_inner();
        if let Some(current) = page.snapshots.into_iter().find(|record| record.current) {
            return Ok(Some(current));
        }
        if page.next_page_token.is_empty() {
            return Ok(None);
        }
        page_token = page.next_page_token;
    }
    Err(PushError::Refused {
        service: "portfolio-svc",
        code: Code::Internal,
        message: format!(
            "ListSnapshots gave {MAX_SNAPSHOT_PAGES} pages without the current snapshot"
        ),
    })
}

fn refused(service: &'static str, status: Status) -> PushError {
    PushError::Refused {
        service,
        code: status.code(),
        message: status.message().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The directory sends what the snapshot has sent, and stops waiting once the snapshot
    /// stops, however far it got.
    #[test]
    fn the_directory_follows_the_snapshot_and_never_waits_for_a_stopped_one() {
        let lockstep = Arc::new(Lockstep::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let follower = {
            let lockstep = lockstep.clone();
            std::thread::spawn(move || {
                for accounts in [10, 20, 30] {
                    lockstep.wait_for(accounts);
                    tx.send(accounts).unwrap();
                }
            })
        };
        assert!(rx.try_recv().is_err(), "nothing before the snapshot sends");
        lockstep.advance(15);
        assert_eq!(rx.recv().unwrap(), 10);
        assert!(rx.try_recv().is_err(), "not beyond the snapshot");
        {
            let _stopped = StopOnExit(Some(lockstep.clone()));
        }
        assert_eq!(rx.recv().unwrap(), 20);
        assert_eq!(rx.recv().unwrap(), 30);
        follower.join().unwrap();
    }
}
