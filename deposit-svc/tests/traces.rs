//! One trace across the pair, end to end with real processes: an OTLP receiver started here
//! (the collector's trace service, from the published opentelemetry-proto definitions) gets,
//! for one ConfirmDeposit sent with a W3C `traceparent`, the spans of deposit-svc and of
//! portfolio-svc under that trace id with every parent link intact; and the JSON logs of both
//! processes carry the trace id. A credit delivered later by the background loop is a trace
//! of its own, linked to the confirmation's.
//!
//! portfolio-svc runs from its binary beside deposit-svc's (`cargo test --workspace` builds
//! every binary of the workspace before it runs a test).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use deposit_svc::testkit::{Directory, Proxy, ProxyMode, TEST_SECRET, deposits_client, sign};
use invest_proto::{
    auth::{JwtKeys, SCOPE_INGEST_WRITE, ServiceToken},
    deposit::v1::{self as pb, directory_ingest_client::DirectoryIngestClient},
    portfolio::v1::portfolio_ingest_client::PortfolioIngestClient,
};
use invest_runtime::{
    backend_tests,
    testkit::{Backend, ServerProcess, TestDatabase},
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value::Value,
    trace::v1::{Span, span::SpanKind},
};
use portfolio_svc::testkit::Snapshot;
use tokio::sync::Notify;

const ACCOUNT: &str = "111111111111";
const OWNER: &str = "류영길";
/// The caller's trace and span, as a gateway in front of deposit-svc would send them.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
/// The trace of a confirmation whose credit is delivered later.
const LATER_TRACE_ID: &str = "5c0a1e3f9d2b4c6e8a0b1c2d3e4f5a6b";

/// A span as received, with the name of the service that sent it.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    span: Span,
}

/// The test's collector: keeps every span it is sent.
#[derive(Default, Clone)]
struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
    arrived: Arc<Notify>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.as_ref()?.value.as_ref())
                .map(|v| match v {
                    Value::StringValue(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push(Received {
                        service: service.clone(),
                        span,
                    });
                }
            }
        }
        drop(spans);
        self.arrived.notify_waiters();
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    /// Starts the receiver on a port of its own; its `http://` address.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        format!("http://{addr}")
    }

    /// The spans of trace `trace_id` received so far.
    fn trace(&self, trace_id: &[u8]) -> Vec<Received> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.span.trace_id == trace_id)
            .cloned()
            .collect()
    }

    /// Waits (up to 30 s) until `done` holds for every span received.
    async fn wait_for_any(&self, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let wait = async {
            loop {
                let arrived = self.arrived.notified();
                let spans = self.spans.lock().unwrap().clone();
                if done(&spans) {
                    return spans;
                }
                arrived.await;
            }
        };
        match tokio::time::timeout(Duration::from_secs(30), wait).await {
            Ok(spans) => spans,
            Err(_) => panic!(
                "the spans did not arrive within 30 s; received: {:#?}",
                summary(&self.spans.lock().unwrap())
            ),
        }
    }

    /// Waits (up to 30 s) until `done` holds for the spans of `trace_id`.
    async fn wait_for(&self, trace_id: &[u8], done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let wait = async {
            loop {
                let arrived = self.arrived.notified();
                let spans = self.trace(trace_id);
                if done(&spans) {
                    return spans;
                }
                arrived.await;
            }
        };
        match tokio::time::timeout(Duration::from_secs(30), wait).await {
            Ok(spans) => spans,
            Err(_) => panic!(
                "the spans did not all arrive within 30 s; received: {:#?}",
                summary(&self.trace(trace_id))
            ),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// `service: name (kind) span <- parent` lines, for failure messages.
fn summary(spans: &[Received]) -> Vec<String> {
    spans
        .iter()
        .map(|r| {
            format!(
                "{}: {} ({:?}) {} <- {}",
                r.service,
                r.span.name,
                SpanKind::try_from(r.span.kind).unwrap_or(SpanKind::Unspecified),
                hex(&r.span.span_id),
                hex(&r.span.parent_span_id)
            )
        })
        .collect()
}

fn find<'a>(spans: &'a [Received], service: &str, name: &str, kind: SpanKind) -> Option<&'a Span> {
    spans
        .iter()
        .find(|r| r.service == service && r.span.name == name && r.span.kind == kind as i32)
        .map(|r| &r.span)
}

fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref()?.value.as_ref())
}

const CONFIRM: &str = "invest.deposit.v1.DepositService/ConfirmDeposit";
const APPLY: &str = "invest.portfolio.v1.PortfolioLedger/ApplyDeposit";

/// The spans the test waits for: both servers' RPC spans, the call between them, and a
/// database span on each side.
fn complete(spans: &[Received]) -> bool {
    let db = |service: &str| {
        spans
            .iter()
            .any(|r| r.service == service && attribute(&r.span, "db.system.name").is_some())
    };
    find(spans, "deposit-svc", CONFIRM, SpanKind::Server).is_some()
        && find(spans, "deposit-svc", APPLY, SpanKind::Client).is_some()
        && find(spans, "portfolio-svc", APPLY, SpanKind::Server).is_some()
        && db("deposit-svc")
        && db("portfolio-svc")
}

fn binary_beside_ours(name: &str) -> String {
    let ours = std::path::Path::new(env!("CARGO_BIN_EXE_deposit-svc"));
    let theirs = ours.with_file_name(name);
    assert!(
        theirs.exists(),
        "{} is not built: run the tests with `cargo test --workspace` (or `cargo build -p {name}` first)",
        theirs.display()
    );
    theirs.display().to_string()
}

async fn start(binary: &str, args: &[&str], collector: &str) -> ServerProcess {
    ServerProcess::start_with_env(
        binary,
        args,
        TEST_SECRET,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector),
            // Export within 100 ms rather than the default 5 s.
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("INVEST_LOG_FORMAT", "json"),
        ],
    )
    .await
}

async fn one_trace_across_both_services(backend: Backend) {
    let Some(portfolio_db) = TestDatabase::create(backend, "traces_portfolio") else {
        return;
    };
    let Some(deposit_db) = TestDatabase::create(backend, "traces_deposit") else {
        return;
    };
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let keys = Arc::new(JwtKeys::from_secret(TEST_SECRET.as_bytes()));

    let portfolio = start(
        &binary_beside_ours("portfolio-svc"),
        &[
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--database-url",
            portfolio_db.url(),
        ],
        &endpoint,
    )
    .await;
    let as_of = invest_proto::time::now_micros() - 86_400_000_000;
    let day = Snapshot::cash(as_of, &[ACCOUNT], OWNER, 1_000);
    PortfolioIngestClient::with_interceptor(
        deposit_svc::testkit::connect(&portfolio.url()).await,
        ServiceToken::new(keys.clone(), "loader", &[SCOPE_INGEST_WRITE]),
    )
    .load_snapshot(tokio_stream::iter(day.parts(10)))
    .await
    .unwrap();

    // deposit-svc reaches portfolio-svc through a proxy the test can take down.
    let proxy = Proxy::start(portfolio.addr, ProxyMode::Up).await;
    let deposit = start(
        env!("CARGO_BIN_EXE_deposit-svc"),
        &[
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--database-url",
            deposit_db.url(),
            "--portfolio-url",
            &proxy.url(),
            "--delivery-max-backoff",
            "200ms",
            "--delivery-poll",
            "50ms",
        ],
        &endpoint,
    )
    .await;
    let directory = Directory {
        as_of,
        entries: vec![pb::DirectoryEntry {
            account_number: ACCOUNT.into(),
            customer_name: OWNER.into(),
        }],
    };
    DirectoryIngestClient::with_interceptor(
        deposit_svc::testkit::connect(&deposit.url()).await,
        ServiceToken::new(keys.clone(), "loader", &[SCOPE_INGEST_WRITE]),
    )
    .load_directory(tokio_stream::iter(directory.parts(10)))
    .await
    .unwrap();

    let mut client = deposits_client(&deposit.url(), &keys, OWNER).await;
    let transfer_id = client
        .register_deposit(pb::RegisterDepositRequest {
            account_number: ACCOUNT.into(),
            customer_name: OWNER.into(),
            amount: 500,
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .transfer_id;
    let mut confirm = tonic::Request::new(pb::ConfirmDepositRequest {
        transfer_id,
        signature: sign(ACCOUNT, OWNER, 500),
    });
    confirm.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{CALLER_SPAN}-01").parse().unwrap(),
    );
    let confirmed = client.confirm_deposit(confirm).await.unwrap().into_inner();
    assert!(
        confirmed.deposit.is_some_and(|d| d.applied),
        "the credit was delivered at once"
    );

    let trace_id = unhex(TRACE_ID);
    let spans = collector.wait_for(&trace_id, complete).await;
    let all = summary(&spans);

    // The chain: caller -> deposit-svc server -> … -> client call -> portfolio-svc server.
    let confirm = find(&spans, "deposit-svc", CONFIRM, SpanKind::Server).unwrap();
    assert_eq!(
        hex(&confirm.parent_span_id),
        CALLER_SPAN,
        "ConfirmDeposit is a child of the caller's span: {all:#?}"
    );
    assert_eq!(
        attribute(confirm, "rpc.system"),
        Some(&Value::StringValue("grpc".into()))
    );
    assert_eq!(
        attribute(confirm, "rpc.method"),
        Some(&Value::StringValue("ConfirmDeposit".into()))
    );
    assert_eq!(
        attribute(confirm, "rpc.grpc.status_code"),
        Some(&Value::IntValue(0))
    );
    let call = find(&spans, "deposit-svc", APPLY, SpanKind::Client).unwrap();
    let apply = find(&spans, "portfolio-svc", APPLY, SpanKind::Server).unwrap();
    assert_eq!(
        apply.parent_span_id, call.span_id,
        "portfolio-svc's ApplyDeposit is a child of deposit-svc's call: {all:#?}"
    );

    // Every parent link is intact: each span's parent is the caller's span or a span of the
    // trace, and the client call descends from the confirmation.
    let by_id: HashMap<&[u8], &Span> = spans
        .iter()
        .map(|r| (r.span.span_id.as_slice(), &r.span))
        .collect();
    for r in &spans {
        let parent = r.span.parent_span_id.as_slice();
        assert!(
            hex(parent) == CALLER_SPAN || by_id.contains_key(parent),
            "{}'s span {} has a parent outside the trace: {all:#?}",
            r.service,
            r.span.name
        );
    }
    let mut at = call;
    while at.span_id != confirm.span_id {
        at = by_id.get(at.parent_span_id.as_slice()).unwrap_or_else(|| {
            panic!("the call to ApplyDeposit descends from ConfirmDeposit: {all:#?}")
        });
    }
    for service in ["deposit-svc", "portfolio-svc"] {
        let db = spans
            .iter()
            .find(|r| r.service == service && attribute(&r.span, "db.system.name").is_some())
            .unwrap();
        let system = match backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgresql",
        };
        assert_eq!(
            attribute(&db.span, "db.system.name"),
            Some(&Value::StringValue(system.into())),
            "{service}: {all:#?}"
        );
    }

    // A deposit confirmed while portfolio-svc cannot be reached is delivered later by the
    // background loop: in a trace of its own that links to the confirmation's, and
    // portfolio-svc's ApplyDeposit is part of that trace.
    proxy.set(ProxyMode::Down);
    let transfer_id = client
        .register_deposit(pb::RegisterDepositRequest {
            account_number: ACCOUNT.into(),
            customer_name: OWNER.into(),
            amount: 300,
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .transfer_id;
    let mut confirm = tonic::Request::new(pb::ConfirmDepositRequest {
        transfer_id,
        signature: sign(ACCOUNT, OWNER, 300),
    });
    confirm.metadata_mut().insert(
        "traceparent",
        format!("00-{LATER_TRACE_ID}-{CALLER_SPAN}-01")
            .parse()
            .unwrap(),
    );
    let confirmed = client.confirm_deposit(confirm).await.unwrap().into_inner();
    assert!(
        confirmed.deposit.is_some_and(|d| !d.applied),
        "portfolio-svc is unreachable: the credit waits in the outbox"
    );
    let later = unhex(LATER_TRACE_ID);
    collector
        .wait_for(&later, |spans| {
            find(spans, "deposit-svc", CONFIRM, SpanKind::Server).is_some()
        })
        .await;
    proxy.set(ProxyMode::Up);
    let redelivered = collector
        .wait_for_any(|spans| {
            spans.iter().any(|r| {
                r.span.name == "redelivery" && r.span.links.iter().any(|l| l.trace_id == later)
            })
        })
        .await;
    let redelivery = redelivered
        .iter()
        .find(|r| r.span.name == "redelivery" && r.span.links.iter().any(|l| l.trace_id == later))
        .unwrap();
    assert_eq!(redelivery.service, "deposit-svc");
    assert!(
        redelivery.span.parent_span_id.is_empty(),
        "a redelivery starts a trace of its own"
    );
    let its_trace = redelivery.span.trace_id.clone();
    let spans = collector
        .wait_for(&its_trace, |spans| {
            find(spans, "portfolio-svc", APPLY, SpanKind::Server).is_some()
        })
        .await;
    let call = find(&spans, "deposit-svc", APPLY, SpanKind::Client).unwrap();
    let apply = find(&spans, "portfolio-svc", APPLY, SpanKind::Server).unwrap();
    assert_eq!(apply.parent_span_id, call.span_id);

    // Both processes' JSON logs carry the trace id on the lines written inside the call.
    for (service, process) in [("deposit-svc", &deposit), ("portfolio-svc", &portfolio)] {
        let log = process.log.lock().unwrap();
        let lines: Vec<&String> = log
            .iter()
            .filter(|line| line.contains(&format!("\"trace_id\":\"{TRACE_ID}\"")))
            .collect();
        assert!(
            !lines.is_empty(),
            "{service} logged no line with the trace id; its log:\n{}",
            log.join("\n")
        );
        for line in lines {
            let json: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{service}: not JSON ({e}): {line}"));
            let span_id = json["span_id"].as_str().unwrap_or_default();
            assert!(
                span_id.len() == 16 && by_id.contains_key(unhex(span_id).as_slice()),
                "{service}: the line's span_id is a span of the trace: {line}"
            );
        }
    }
}

backend_tests!(one_trace_across_both_services);
