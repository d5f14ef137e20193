//! Hostile callers against a real portfolio-svc process, spoken to with a raw HTTP/2 client
//! (the `h2` crate) where a well-behaved gRPC client could not misbehave enough: stalled
//! streams, connections that never speak, idle connections, piles of reflection streams.
//! Every test is bounded in time and aims only at 127.0.0.1. The limits live in the shared
//! server runtime (invest-proto), so deposit-svc has the same; they do not depend on the
//! database, so these tests run on SQLite only.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use invest_proto::{
    auth::{JwtKeys, SCOPE_ACCOUNTS_READ, SCOPE_INGEST_WRITE, ServiceToken},
    portfolio::v1::{
        self as pb, portfolio_ingest_client::PortfolioIngestClient,
        portfolio_service_client::PortfolioServiceClient,
    },
    status::reason,
};
use invest_runtime::testkit::{Backend, ServerProcess, TestDatabase};
use portfolio_svc::testkit::{Snapshot, TEST_SECRET};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic::{Code, Status, transport::Channel};

const ALICE: &str = "이정희";
const ALICE_ACCOUNT: &str = "111111111111";
const BOB: &str = "류영길";
const BOB_ACCOUNT: &str = "222222222222";

fn keys() -> Arc<JwtKeys> {
    Arc::new(JwtKeys::from_secret(TEST_SECRET.as_bytes()))
}

fn token(customer: &str) -> String {
    keys().mint(customer, &[SCOPE_ACCOUNTS_READ], Duration::from_secs(600))
}

fn day() -> Snapshot {
    let account = |number: &str, owner: &str| pb::SnapshotAccount {
        account_number: number.into(),
        customer_name: owner.into(),
        brokerage: "디셈버증권".into(),
        account_name: "계좌1".into(),
        principal: 1_000,
        holdings: vec![pb::SnapshotHolding {
            isin: "CASH".into(),
            quantity: 1,
            current_price: 1_200,
        }],
    };
    Snapshot {
        as_of: invest_proto::time::now_micros() - 86_400_000_000,
        instruments: vec![pb::Instrument {
            isin: "CASH".into(),
            name: "현금".into(),
            asset_group: "채권 / 현금".into(),
        }],
        accounts: vec![account(ALICE_ACCOUNT, ALICE), account(BOB_ACCOUNT, BOB)],
    }
}

/// A portfolio-svc process on a fresh SQLite file with `args` added, with the day loaded.
async fn server(args: &[&str]) -> (ServerProcess, TestDatabase) {
    let db = TestDatabase::create(Backend::Sqlite, "hostile").expect("SQLite is always there");
    let mut all = vec![
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--database-url",
        db.url(),
    ];
    all.extend_from_slice(args);
    let process =
        ServerProcess::start(env!("CARGO_BIN_EXE_portfolio-svc"), &all, TEST_SECRET).await;
    let channel = Channel::from_shared(process.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    PortfolioIngestClient::with_interceptor(
        channel,
        ServiceToken::new(keys(), "loader", &[SCOPE_INGEST_WRITE]),
    )
    .load_snapshot(tokio_stream::iter(day().parts(10)))
    .await
    .expect("the day loads");
    (process, db)
}

async fn get_account(
    process: &ServerProcess,
    customer: &str,
    account: &str,
) -> Result<pb::AccountDetail, Status> {
    let channel = Channel::from_shared(process.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    PortfolioServiceClient::with_interceptor(
        channel,
        ServiceToken::new(keys(), customer, &[SCOPE_ACCOUNTS_READ]),
    )
    .get_account(pb::GetAccountRequest {
        account_number: account.into(),
    })
    .await
    .map(tonic::Response::into_inner)
}

async fn health_check(process: &ServerProcess) -> i32 {
    let channel = Channel::from_shared(process.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health answers")
        .into_inner()
        .status
}

/// A raw HTTP/2 connection, with the peer's SETTINGS_MAX_CONCURRENT_STREAMS as last seen and
/// whether the connection has ended.
struct RawConnection {
    sender: h2::client::SendRequest<Bytes>,
    /// usize::MAX until the server's SETTINGS have been read.
    max_streams: tokio::sync::watch::Receiver<usize>,
    ended: tokio::sync::watch::Receiver<bool>,
    addr: SocketAddr,
}

impl RawConnection {
    async fn open(addr: SocketAddr) -> Self {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (sender, mut connection) = h2::client::handshake(tcp).await.unwrap();
        let (seen, max_streams) = tokio::sync::watch::channel(usize::MAX);
        let (ended_tx, ended) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let _ = std::future::poll_fn(|cx| {
                let poll = std::pin::Pin::new(&mut connection).poll(cx);
                let now = connection.max_concurrent_send_streams();
                seen.send_if_modified(|seen| std::mem::replace(seen, now) != now);
                poll
            })
            .await;
            let _ = ended_tx.send(true);
        });
        let connection = Self {
            sender,
            max_streams,
            ended,
            addr,
        };
        // One answered call: the server's SETTINGS arrive before it.
        let (status, _) = connection
            .call(
                "/grpc.health.v1.Health/Check",
                None,
                Some(health_request()),
                true,
            )
            .await
            .finish()
            .await;
        assert_eq!(status.code(), Code::Ok, "{status:?}");
        let mut settings = connection.max_streams.clone();
        tokio::time::timeout(
            Duration::from_secs(10),
            settings.wait_for(|max| *max != usize::MAX),
        )
        .await
        .expect("the server's SETTINGS are read")
        .unwrap();
        connection
    }

    /// SETTINGS_MAX_CONCURRENT_STREAMS as the server advertised it.
    fn advertised_streams(&self) -> usize {
        *self.max_streams.borrow()
    }

    /// Opens a call to `path`; sends `message` (a gRPC frame) if given, and ends the request
    /// body if `end`.
    async fn call(
        &self,
        path: &str,
        token: Option<&str>,
        message: Option<Bytes>,
        end: bool,
    ) -> RawCall {
        let mut request = http::Request::post(format!("http://{}{path}", self.addr))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request.body(()).unwrap();
        let mut sender = self.sender.clone().ready().await.unwrap();
        let (response, mut body) = sender.send_request(request, false).unwrap();
        match message {
            Some(message) => body.send_data(message, end).unwrap(),
            None if end => body.send_data(Bytes::new(), true).unwrap(),
            None => {}
        }
        RawCall {
            response,
            _body: body,
            opened: Instant::now(),
        }
    }
}

fn health_request() -> Bytes {
    // A gRPC frame: not compressed, length 0 (an empty HealthCheckRequest).
    Bytes::from_static(&[0, 0, 0, 0, 0])
}

struct RawCall {
    response: h2::client::ResponseFuture,
    _body: h2::SendStream<Bytes>,
    opened: Instant,
}

impl RawCall {
    /// The call's gRPC status (from trailers-only headers or the trailers) and how long after
    /// it was opened it came.
    async fn finish(self) -> (Status, Duration) {
        let response = self.response.await.unwrap();
        let status = match Status::from_header_map(response.headers()) {
            Some(status) => status,
            None => {
                let mut body = response.into_body();
                while let Some(chunk) = body.data().await {
                    let chunk = chunk.unwrap();
                    let _ = body.flow_control().release_capacity(chunk.len());
                }
                let trailers = body.trailers().await.unwrap().unwrap_or_default();
                Status::from_header_map(&trailers)
                    .unwrap_or_else(|| Status::unknown("no grpc-status"))
            }
        };
        (status, self.opened.elapsed())
    }
}

/// 1,030 stalled calls from one customer (3 of the 5 bytes of the gRPC frame header, then
/// nothing) cannot starve another customer: each connection holds at most its advertised
/// streams, the customer at most its fair share of the server, the rest are refused at once
/// with ErrorInfo, and the stalled calls end at the request-body deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_calls_are_the_stallers_problem() {
    let (process, _db) = server(&[
        "--max-in-flight",
        "64",
        "--max-streams-per-connection",
        "32",
        "--request-body-timeout",
        "4s",
    ])
    .await;
    let alice = token(ALICE);
    let mut connections = Vec::new();
    for _ in 0..2 {
        let connection = RawConnection::open(process.addr).await;
        assert_eq!(
            connection.advertised_streams(),
            32,
            "SETTINGS_MAX_CONCURRENT_STREAMS is advertised"
        );
        connections.push(connection);
    }
    let (results_tx, mut results) = tokio::sync::mpsc::unbounded_channel();
    for connection in &connections {
        for _ in 0..32 {
            let call = connection
                .call(
                    "/invest.portfolio.v1.PortfolioService/GetAccount",
                    Some(&alice),
                    Some(Bytes::from_static(&[0, 0, 0])),
                    false,
                )
                .await;
            let results_tx = results_tx.clone();
            tokio::spawn(async move {
                let _ = results_tx.send(call.finish().await);
            });
        }
    }
    // The share of one caller: 8 sure, and idle permits while more than half (32) is free.
    // So 32 calls are held and 32 are refused at once.
    for _ in 0..32 {
        let (status, _) = results.recv().await.unwrap();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert_eq!(reason(&status).as_deref(), Some("CALLER_CONCURRENCY_LIMIT"));
    }
    // While Alice's calls stall, Bob is served, health answers, and Alice herself is told why
    // not.
    let bob = get_account(&process, BOB, BOB_ACCOUNT)
        .await
        .expect("Bob is served");
    assert_eq!(bob.total_assets, 1_200);
    assert_eq!(health_check(&process).await, 1, "SERVING");
    let refused = get_account(&process, ALICE, ALICE_ACCOUNT)
        .await
        .unwrap_err();
    assert_eq!(
        reason(&refused).as_deref(),
        Some("CALLER_CONCURRENCY_LIMIT")
    );
    // The stalled calls end at the body deadline, with a reason.
    for _ in 0..32 {
        let (status, after) = tokio::time::timeout(Duration::from_secs(30), results.recv())
            .await
            .expect("stalled calls end within 30 s")
            .unwrap();
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
        assert_eq!(reason(&status).as_deref(), Some("REQUEST_BODY_TIMEOUT"));
        assert!(
            after >= Duration::from_millis(3_900),
            "ended after {after:?}"
        );
    }
    let alice_again = get_account(&process, ALICE, ALICE_ACCOUNT).await;
    assert!(alice_again.is_ok(), "{alice_again:?}");
}

/// Connections that never send the HTTP/2 preface are closed after the handshake timeout;
/// one that speaks something else is closed at once; beyond the cap, connections are closed
/// as soon as they are accepted; the server serves again when they are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_surplus_connections_are_closed() {
    let (process, _db) = server(&["--handshake-timeout", "1s", "--max-connections", "16"]).await;

    let mut http1 = TcpStream::connect(process.addr).await.unwrap();
    http1
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_closed(&mut http1, Duration::from_secs(10)).await;

    let started = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..40 {
        silent.push(TcpStream::connect(process.addr).await.unwrap());
    }
    for stream in &mut silent {
        assert_closed(stream, Duration::from_secs(10)).await;
    }
    // The first 16 waited for the handshake timeout; all are gone within bounded time.
    assert!(started.elapsed() >= Duration::from_millis(900));

    // A well-behaved client is served once they are gone.
    let bob = get_account(&process, BOB, BOB_ACCOUNT).await;
    assert!(bob.is_ok(), "{bob:?}");
}

/// The connection cap holds against connections that did complete the handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_refused() {
    let (process, _db) = server(&["--max-connections", "4"]).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(RawConnection::open(process.addr).await);
    }
    let mut surplus = TcpStream::connect(process.addr).await.unwrap();
    surplus
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    assert_closed(&mut surplus, Duration::from_secs(10)).await;
    drop(held.pop());
    // A slot frees when that connection's end reaches the server.
    let mut served = false;
    for _ in 0..100 {
        if let Ok(stream) = TcpStream::connect(process.addr).await
            && let Ok(Ok((sender, connection))) =
                tokio::time::timeout(Duration::from_secs(2), h2::client::handshake(stream)).await
        {
            tokio::spawn(connection);
            if sender.ready().await.is_ok() {
                served = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served, "a slot frees when a connection closes");
}

/// A connection without calls is closed with GOAWAY after the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    let (process, _db) = server(&["--connection-idle-timeout", "1s"]).await;
    let connection = RawConnection::open(process.addr).await;
    let opened = Instant::now();
    let mut ended = connection.ended.clone();
    tokio::time::timeout(Duration::from_secs(20), ended.wait_for(|ended| *ended))
        .await
        .expect("the idle connection is closed within 20 s")
        .unwrap();
    assert!(opened.elapsed() >= Duration::from_millis(900));
}

/// Streams that need no token (reflection, health Watch) have a budget of their own: one
/// connection cannot hold more than its share, each stream waits at most the stream idle
/// timeout for its next message, and the refusals say why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokenless_streams_are_bounded() {
    let (process, _db) = server(&["--stream-idle-timeout", "2s"]).await;
    let connection = RawConnection::open(process.addr).await;
    assert_eq!(connection.advertised_streams(), 256);
    let mut calls = Vec::new();
    for _ in 0..200 {
        calls.push(
            connection
                .call(
                    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                    None,
                    None,
                    false,
                )
                .await,
        );
    }
    let (mut refused, mut timed_out) = (0, 0);
    for call in calls {
        let (status, _) = tokio::time::timeout(Duration::from_secs(30), call.finish())
            .await
            .expect("every stream ends within 30 s");
        match reason(&status).as_deref() {
            Some("CONNECTION_CONCURRENCY_LIMIT") => {
                assert_eq!(status.code(), Code::ResourceExhausted);
                refused += 1;
            }
            _ => timed_out += 1,
        }
    }
    // 16 sure, then idle permits while more than half of the 256 is free: at most 128 held.
    assert_eq!((refused, timed_out), (72, 128));
}

/// Reads until the peer closes; fails if it does not within `limit`.
async fn assert_closed(stream: &mut TcpStream, limit: Duration) {
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the server did not close the connection within {limit:?}"
    );
}
