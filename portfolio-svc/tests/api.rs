//! portfolio-svc over real gRPC on port 0, on SQLite and PostgreSQL.

use std::time::Duration;

use invest_proto::{
    auth::{AUDIENCE, Claims, JwtKeys, SCOPE_ACCOUNTS_READ, SCOPE_INGEST_WRITE},
    portfolio::v1::{self as pb, portfolio_service_client::PortfolioServiceClient},
    status::{bad_fields, reason},
};
use invest_runtime::{
    backend_tests,
    testkit::{Backend, TestDatabase},
};
use portfolio_svc::testkit::{Snapshot, TestPortfolio, http_get};
use tokio_stream::StreamExt;
use tonic::{Code, Request, Status, metadata::MetadataValue};

const DAY: i64 = 86_400_000_000;
const AS_OF: i64 = 1_795_000_000_000_000; // 2026-11-18T..Z

fn instrument(isin: &str, name: &str, group: &str) -> pb::Instrument {
    pb::Instrument {
        isin: isin.into(),
        name: name.into(),
        asset_group: group.into(),
    }
}

fn holding(isin: &str, quantity: i64, current_price: i64) -> pb::SnapshotHolding {
    pb::SnapshotHolding {
        isin: isin.into(),
        quantity,
        current_price,
    }
}

fn account(
    number: &str,
    owner: &str,
    name: &str,
    principal: i64,
    holdings: Vec<pb::SnapshotHolding>,
) -> pb::SnapshotAccount {
    pb::SnapshotAccount {
        account_number: number.into(),
        customer_name: owner.into(),
        brokerage: "디셈버증권".into(),
        account_name: name.into(),
        principal,
        holdings,
    }
}

/// Three customers; 이정희 owns two accounts. Figures are small enough to check by hand.
fn fixture(as_of: i64) -> Snapshot {
    Snapshot {
        as_of,
        instruments: vec![
            instrument("CASH", "현금", "채권 / 현금"),
            instrument("KR7133690008", "미국나스닥100", "미국 주식"),
            instrument("KR7360750004", "미국S&P500", "미국 주식"),
        ],
        accounts: vec![
            account(
                "111111111111",
                "이정희",
                "계좌1",
                1_000,
                vec![holding("CASH", 1, 500), holding("KR7360750004", 3, 200)],
            ),
            account(
                "222222222222",
                "류영길",
                "계좌2",
                2_000,
                vec![holding("KR7133690008", 4, 450)],
            ),
            account(
                "333333333333",
                "이정희",
                "계좌3",
                0,
                vec![
                    holding("CASH", 1, 70),
                    holding("KR7133690008", 0, 999),
                    holding("KR7360750004", 1, 30),
                ],
            ),
        ],
    }
}

async fn load(
    app: &TestPortfolio,
    snapshot: &Snapshot,
) -> Result<pb::LoadSnapshotResponse, Status> {
    let parts = snapshot.parts(2);
    app.ingest()
        .await
        .load_snapshot(tokio_stream::iter(parts))
        .await
        .map(|r| r.into_inner())
}

async fn spawn(backend: Backend) -> Option<TestPortfolio> {
    TestPortfolio::spawn(backend).await
}

async fn screens_show_the_loaded_snapshot(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let loaded = load(&app, &fixture(AS_OF)).await.unwrap();
    assert!(!loaded.unchanged);
    assert_eq!(
        (
            loaded.instrument_count,
            loaded.account_count,
            loaded.holding_count
        ),
        (3, 3, 6)
    );

    let mut lee = app.screens("이정희").await;
    let accounts = lee
        .list_accounts(pb::ListAccountsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let numbers: Vec<_> = accounts
        .accounts
        .iter()
        .map(|a| (a.account_number.as_str(), a.total_assets))
        .collect();
    assert_eq!(
        numbers,
        [("111111111111", 500 + 600), ("333333333333", 70 + 30)]
    );
    assert_eq!(accounts.next_page_token, "");

    let detail = lee
        .get_account(pb::GetAccountRequest {
            account_number: "111111111111".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (detail.total_assets, detail.principal, detail.total_profit),
        (1_100, 1_000, 100)
    );
    assert_eq!(detail.profit_rate.as_deref(), Some("10.00"));
    assert_eq!(detail.as_of, Some(invest_proto::time::from_micros(AS_OF)));
    assert_eq!(
        (detail.account_name.as_str(), detail.brokerage.as_str()),
        ("계좌1", "디셈버증권")
    );

    // Principal 0: no rate.
    let zero = lee
        .get_account(pb::GetAccountRequest {
            account_number: "333333333333".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((zero.total_profit, zero.profit_rate), (100, None));

    let holdings = lee
        .list_holdings(pb::ListHoldingsRequest {
            account_number: "333333333333".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let rows: Vec<_> = holdings
        .holdings
        .iter()
        .map(|h| {
            (
                h.isin.as_str(),
                h.name.as_str(),
                h.asset_group.as_str(),
                h.quantity,
                h.current_price,
                h.valuation,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("CASH", "현금", "채권 / 현금", 1, 70, 70),
            ("KR7133690008", "미국나스닥100", "미국 주식", 0, 999, 0),
            ("KR7360750004", "미국S&P500", "미국 주식", 1, 30, 30),
        ]
    );

    let mut ryu = app.screens("류영길").await;
    let detail = ryu
        .get_account(pb::GetAccountRequest {
            account_number: "222222222222".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            detail.total_assets,
            detail.total_profit,
            detail.profit_rate.as_deref()
        ),
        (1_800, -200, Some("-10.00"))
    );
}

fn with_token(
    token: Option<String>,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |mut request: Request<()>| {
        if let Some(token) = &token {
            request.metadata_mut().insert(
                "authorization",
                MetadataValue::try_from(format!("Bearer {token}")).unwrap(),
            );
        }
        Ok(request)
    }
}

async fn get_with(app: &TestPortfolio, token: Option<String>, account: &str) -> Status {
    let mut client =
        PortfolioServiceClient::with_interceptor(app.channel().await, with_token(token));
    client
        .get_account(pb::GetAccountRequest {
            account_number: account.into(),
        })
        .await
        .expect_err("the call must be refused")
}

async fn auth_is_enforced(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    load(&app, &fixture(AS_OF)).await.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = |sub: &str, aud: &str, exp: u64, scope: &str| Claims {
        sub: sub.into(),
        aud: aud.into(),
        exp,
        iat: now,
        nbf: None,
        scope: scope.into(),
    };

    let status = get_with(&app, None, "111111111111").await;
    assert_eq!(
        (status.code(), reason(&status).as_deref()),
        (Code::Unauthenticated, Some("MISSING_TOKEN"))
    );

    let stranger = JwtKeys::from_secret(b"not-the-shared-secret");
    let token = stranger.sign(&claims("이정희", AUDIENCE, now + 600, SCOPE_ACCOUNTS_READ));
    let status = get_with(&app, Some(token), "111111111111").await;
    assert_eq!(
        (status.code(), reason(&status).as_deref()),
        (Code::Unauthenticated, Some("INVALID_TOKEN"))
    );

    let token = app.keys.sign(&claims(
        "이정희",
        AUDIENCE,
        now - 3_600,
        SCOPE_ACCOUNTS_READ,
    ));
    let status = get_with(&app, Some(token), "111111111111").await;
    assert_eq!(
        (status.code(), reason(&status).as_deref()),
        (Code::Unauthenticated, Some("TOKEN_EXPIRED"))
    );

    let token = app.keys.sign(&claims(
        "이정희",
        "somebody-else",
        now + 600,
        SCOPE_ACCOUNTS_READ,
    ));
    let status = get_with(&app, Some(token), "111111111111").await;
    assert_eq!(
        (status.code(), reason(&status).as_deref()),
        (Code::Unauthenticated, Some("WRONG_AUDIENCE"))
    );

    let token = app
        .keys
        .sign(&claims("이정희", AUDIENCE, now + 600, SCOPE_INGEST_WRITE));
    let status = get_with(&app, Some(token), "111111111111").await;
    assert_eq!(
        (status.code(), reason(&status).as_deref()),
        (Code::PermissionDenied, Some("MISSING_SCOPE"))
    );

    // Another customer's account answers exactly like an account that does not exist.
    let token = app
        .keys
        .sign(&claims("류영길", AUDIENCE, now + 600, SCOPE_ACCOUNTS_READ));
    let theirs = get_with(&app, Some(token.clone()), "111111111111").await;
    assert_eq!(theirs.code(), Code::NotFound);
    let missing = get_with(&app, Some(token.clone()), "999999999999").await;
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(
        theirs.message().replace("111111111111", "X"),
        missing.message().replace("999999999999", "X")
    );
    let mut client =
        PortfolioServiceClient::with_interceptor(app.channel().await, with_token(Some(token)));
    let status = client
        .list_holdings(pb::ListHoldingsRequest {
            account_number: "111111111111".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let theirs = client
        .list_accounts(pb::ListAccountsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        theirs.accounts.len(),
        1,
        "류영길 sees only their own account"
    );

    // The screens' scope does not open the ingest.
    let mut ingest = pb::portfolio_ingest_client::PortfolioIngestClient::with_interceptor(
        app.channel().await,
        with_token(Some(app.keys.mint(
            "loader",
            &[SCOPE_ACCOUNTS_READ],
            Duration::from_secs(60),
        ))),
    );
    let status = ingest
        .load_snapshot(tokio_stream::iter(fixture(AS_OF + DAY).parts(10)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
}

async fn malformed_arguments_are_named(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    load(&app, &fixture(AS_OF)).await.unwrap();
    let mut lee = app.screens("이정희").await;
    let status = lee
        .get_account(pb::GetAccountRequest {
            account_number: "12-34".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(reason(&status).as_deref(), Some("INVALID_ACCOUNT_NUMBER"));
    assert_eq!(bad_fields(&status), ["account_number"]);

    let status = lee
        .list_accounts(pb::ListAccountsRequest {
            page_size: -1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), bad_fields(&status)),
        (Code::InvalidArgument, vec!["page_size".to_owned()])
    );

    let status = lee
        .list_accounts(pb::ListAccountsRequest {
            page_token: "forged".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), bad_fields(&status)),
        (Code::InvalidArgument, vec!["page_token".to_owned()])
    );
}

/// One page of holdings of `account`, one holding per page, from `token`.
async fn holdings_page(
    client: &mut PortfolioServiceClient<
        tonic::service::interceptor::InterceptedService<
            tonic::transport::Channel,
            invest_proto::auth::ServiceToken,
        >,
    >,
    account: &str,
    token: &str,
) -> Result<pb::ListHoldingsResponse, Status> {
    client
        .list_holdings(pb::ListHoldingsRequest {
            account_number: account.into(),
            page_size: 1,
            page_token: token.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Page tokens are signed and bound: to the caller, to the method and to the listing (the
/// account of ListHoldings). An altered, cut or borrowed token never starts elsewhere.
async fn page_tokens_are_bound_to_caller_and_listing(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    load(&app, &fixture(AS_OF)).await.unwrap();
    let mut lee = app.screens("이정희").await;
    let accounts_token = lee
        .list_accounts(pb::ListAccountsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    let holdings_token = holdings_page(&mut lee, "333333333333", "")
        .await
        .unwrap()
        .next_page_token;
    assert!(!accounts_token.is_empty() && !holdings_token.is_empty());

    let refused = |status: Status| (status.code(), reason(&status).unwrap_or_default());
    let invalid = (Code::InvalidArgument, "INVALID_PAGE_TOKEN".to_owned());
    // Another customer cannot use Lee's token.
    let status = app
        .screens("류영길")
        .await
        .list_accounts(pb::ListAccountsRequest {
            page_size: 1,
            page_token: accounts_token.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused(status), invalid);
    // A token of one method is not a token of another.
    let status = holdings_page(&mut lee, "333333333333", &accounts_token)
        .await
        .unwrap_err();
    assert_eq!(refused(status), invalid);
    // Lee's holdings token for another of Lee's accounts: a mismatch, said as such.
    let status = holdings_page(&mut lee, "111111111111", &holdings_token)
        .await
        .unwrap_err();
    assert_eq!(
        refused(status),
        (Code::InvalidArgument, "PAGE_TOKEN_MISMATCH".to_owned())
    );
    // Cut or altered.
    let mut altered = holdings_token.clone().into_bytes();
    let middle = altered.len() / 2;
    altered[middle] = if altered[middle] == b'A' { b'B' } else { b'A' };
    for token in [
        holdings_token[..holdings_token.len() - 1].to_owned(),
        String::from_utf8(altered).unwrap(),
    ] {
        let status = holdings_page(&mut lee, "333333333333", &token)
            .await
            .unwrap_err();
        assert_eq!(refused(status), invalid);
    }
    // The genuine token still works.
    let second = holdings_page(&mut lee, "333333333333", &holdings_token)
        .await
        .unwrap();
    assert_eq!(second.holdings[0].isin, "KR7133690008");
}

/// A huge invalid argument is refused with a short message; past the request size limit the
/// message itself is refused as it arrives.
async fn huge_arguments_get_short_answers(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    load(&app, &fixture(AS_OF)).await.unwrap();
    let mut lee = app.screens("이정희").await;
    let status = lee
        .get_account(pb::GetAccountRequest {
            account_number: "9".repeat(60_000),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&status).as_deref(), Some("INVALID_ACCOUNT_NUMBER"));
    assert!(status.message().len() < 200, "{}", status.message());
    assert!(
        status.message().contains("60000 bytes"),
        "{}",
        status.message()
    );
    let status = lee
        .get_account(pb::GetAccountRequest {
            account_number: "9".repeat(3 << 20),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_deref()),
        (Code::ResourceExhausted, Some("REQUEST_TOO_LARGE"))
    );
    assert!(status.message().len() < 200, "{}", status.message());
    // The server is fine afterwards.
    assert!(
        lee.get_account(pb::GetAccountRequest {
            account_number: "111111111111".into(),
        })
        .await
        .is_ok()
    );
}

/// ListSnapshots: the kept snapshots, newest first, with their counts; the first is current.
async fn snapshots_are_listed(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let mut ingest = app.ingest().await;
    let empty = ingest
        .list_snapshots(pb::ListSnapshotsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(empty.snapshots.is_empty() && empty.next_page_token.is_empty());
    for day in 0..3 {
        load(&app, &fixture(AS_OF + day * DAY)).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = ingest
            .list_snapshots(pb::ListSnapshotsRequest {
                page_size: 2,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.snapshots);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let as_of: Vec<i64> = seen
        .iter()
        .map(|s| invest_proto::time::to_micros(s.as_of.as_ref().unwrap()).unwrap())
        .collect();
    assert_eq!(as_of, [AS_OF + 2 * DAY, AS_OF + DAY, AS_OF]);
    assert_eq!(
        seen.iter().map(|s| s.current).collect::<Vec<_>>(),
        [true, false, false]
    );
    let newest = &seen[0];
    assert_eq!(
        (newest.accounts, newest.holdings, newest.instruments),
        (3, 6, 3)
    );
    assert_eq!(newest.digest, fixture(AS_OF + 2 * DAY).digest());
    assert!(newest.loaded_at.is_some() && newest.load_duration.is_some());
    // A customer's token cannot list snapshots.
    let status = pb::portfolio_ingest_client::PortfolioIngestClient::with_interceptor(
        app.channel().await,
        invest_proto::auth::ServiceToken::new(app.keys.clone(), "이정희", &[SCOPE_ACCOUNTS_READ]),
    )
    .list_snapshots(pb::ListSnapshotsRequest::default())
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
}

/// Rows of loads in progress, read from the database itself (on PostgreSQL they are in
/// partitions of `accounts_loading` until the stream ends).
fn loading_accounts(backend: Backend, url: &str) -> i64 {
    use diesel::{Connection, RunQueryDsl, sql_types::BigInt};
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let table = match backend {
        Backend::Sqlite => "accounts",
        Backend::Postgres => "accounts_loading",
    };
    let query = diesel::sql_query(format!(
        "SELECT COUNT(*) AS n FROM {table} WHERE snapshot_id IN \
         (SELECT id FROM snapshots WHERE state = 'loading')"
    ));
    match backend {
        Backend::Sqlite => {
            let mut c =
                diesel::SqliteConnection::establish(url.trim_start_matches("sqlite://")).unwrap();
            query.get_result::<Count>(&mut c).unwrap().n
        }
        Backend::Postgres => {
            let mut c = diesel::PgConnection::establish(url).unwrap();
            query.get_result::<Count>(&mut c).unwrap().n
        }
    }
}

/// A client that sent every part of a day and then broke the stream off (RST_STREAM with
/// CANCEL, what dropping a call does) never makes that day current: a reset is not an end.
async fn a_reset_stream_never_commits(backend: Backend) {
    use prost::Message as _;
    let Some(app) = spawn(backend).await else {
        return;
    };
    load(&app, &fixture(AS_OF)).await.unwrap();
    let mut next = fixture(AS_OF + DAY);
    next.accounts[0].holdings[0].current_price = 9_999;

    let tcp = tokio::net::TcpStream::connect(app.server.addr)
        .await
        .unwrap();
    let (sender, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let token = app
        .keys
        .mint("loader", &[SCOPE_INGEST_WRITE], Duration::from_secs(600));
    let request = http::Request::post(format!(
        "http://{}/invest.portfolio.v1.PortfolioIngest/LoadSnapshot",
        app.server.addr
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .header("authorization", format!("Bearer {token}"))
    .body(())
    .unwrap();
    let mut sender = sender.ready().await.unwrap();
    let (response, mut body) = sender.send_request(request, false).unwrap();
    for part in next.parts(1) {
        let encoded = part.encode_to_vec();
        let mut frame = vec![0u8];
        frame.extend_from_slice(&u32::try_from(encoded.len()).unwrap().to_be_bytes());
        frame.extend_from_slice(&encoded);
        body.send_data(bytes::Bytes::from(frame), false).unwrap();
    }
    // Every account of the day is written under the loading snapshot: the server holds it all
    // and waits for the end of the stream.
    let expected = next.accounts.len() as i64;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while loading_accounts(backend, app.db.url()) != expected {
        assert!(
            std::time::Instant::now() < deadline,
            "the parts never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    body.send_reset(h2::Reason::CANCEL);
    drop(response);
    // The load is discarded, not made current.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while loading_accounts(backend, app.db.url()) != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the broken load was never discarded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let snapshots = app
        .ingest()
        .await
        .list_snapshots(pb::ListSnapshotsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .snapshots;
    assert_eq!(snapshots.len(), 1, "{snapshots:?}");
    assert_eq!(snapshots[0].digest, fixture(AS_OF).digest());
    let detail = app
        .screens("이정희")
        .await
        .get_account(pb::GetAccountRequest {
            account_number: "111111111111".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(detail.total_assets, 1_100, "yesterday's figures");
}

async fn pages_are_stable_across_a_new_snapshot(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    load(&app, &fixture(AS_OF)).await.unwrap();
    let mut lee = app.screens("이정희").await;
    let first = lee
        .list_accounts(pb::ListAccountsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.accounts.len(), 1);
    assert_ne!(first.next_page_token, "");

    // A new day arrives between the pages: the listing finishes on the snapshot it began on.
    let mut next_day = fixture(AS_OF + DAY);
    next_day.accounts[2].holdings[0].current_price = 5_000;
    load(&app, &next_day).await.unwrap();

    let second = lee
        .list_accounts(pb::ListAccountsRequest {
            page_size: 1,
            page_token: first.next_page_token,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.accounts[0].account_number, "333333333333");
    assert_eq!(
        second.accounts[0].total_assets, 100,
        "old snapshot's figure"
    );
    assert_eq!(second.next_page_token, "");

    let fresh = lee
        .list_accounts(pb::ListAccountsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        fresh.accounts[1].total_assets,
        5_000 + 30,
        "new snapshot's figure"
    );

    // Holdings page one by one in ISIN order.
    let mut isins = Vec::new();
    let mut token = String::new();
    loop {
        let page = lee
            .list_holdings(pb::ListHoldingsRequest {
                account_number: "333333333333".into(),
                page_size: 1,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        isins.extend(page.holdings.into_iter().map(|h| h.isin));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(isins, ["CASH", "KR7133690008", "KR7360750004"]);
}

async fn reloading_is_idempotent_and_never_goes_back(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let day = fixture(AS_OF);
    assert!(!load(&app, &day).await.unwrap().unchanged);
    let again = load(&app, &day).await.unwrap();
    assert!(
        again.unchanged,
        "same digest, same as_of: a no-op that says so"
    );

    let mut corrected = fixture(AS_OF);
    corrected.accounts[1].principal = 1_800;
    let replaced = load(&app, &corrected).await.unwrap();
    assert!(
        !replaced.unchanged,
        "same as_of, new digest: a correction replaces the day"
    );
    let mut ryu = app.screens("류영길").await;
    let detail = ryu
        .get_account(pb::GetAccountRequest {
            account_number: "222222222222".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(detail.total_profit, 0);

    let status = load(&app, &fixture(AS_OF - DAY)).await.unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_deref()),
        (Code::FailedPrecondition, Some("SNAPSHOT_OUTDATED"))
    );
}

async fn total_assets_of(app: &TestPortfolio, owner: &str, account: &str) -> i64 {
    app.screens(owner)
        .await
        .get_account(pb::GetAccountRequest {
            account_number: account.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .total_assets
}

async fn bad_streams_change_nothing(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    load(&app, &fixture(AS_OF)).await.unwrap();
    let mut next = fixture(AS_OF + DAY);
    next.accounts[0].holdings[0].current_price = 9_999;

    // A header that announces more than the stream carries.
    let mut parts = next.parts(1);
    parts.pop();
    let status = app
        .ingest()
        .await
        .load_snapshot(tokio_stream::iter(parts))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_deref()),
        (Code::InvalidArgument, Some("INCOMPLETE_SNAPSHOT"))
    );

    // Records that do not hash to the header's digest.
    let mut parts = next.parts(1);
    if let Some(pb::snapshot_part::Part::Accounts(batch)) = &mut parts.last_mut().unwrap().part {
        batch.accounts[0].principal += 1;
    }
    let status = app
        .ingest()
        .await
        .load_snapshot(tokio_stream::iter(parts))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_deref()),
        (Code::InvalidArgument, Some("DIGEST_MISMATCH"))
    );

    // A bad record in the middle: named by its path.
    let mut broken = next.clone();
    broken.accounts[1].holdings[0].isin = "KR7999999999".into();
    let status = load(&app, &broken).await.unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_deref()),
        (Code::InvalidArgument, Some("UNKNOWN_ISIN"))
    );
    assert_eq!(
        bad_fields(&status),
        ["accounts.accounts[1].holdings[0].isin"]
    );

    // A NUL inside a name: the same answer on both backends (PostgreSQL cannot store NUL at
    // all), never INTERNAL.
    let mut broken = next.clone();
    broken.accounts[2].customer_name = "이정\0희".into();
    let status = load(&app, &broken).await.unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_deref()),
        (Code::InvalidArgument, Some("INVALID_TEXT"))
    );
    // Two accounts per part: the path is within its part (the third account is the first of
    // the second part), which the message names.
    assert_eq!(bad_fields(&status), ["accounts.accounts[0].customer_name"]);
    assert!(status.message().contains("U+0000"), "{}", status.message());

    // A stream cut by the client after some batches were written.
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut ingest = app.ingest().await;
    let call = tokio::spawn(async move {
        ingest
            .load_snapshot(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    let parts = next.parts(1);
    for part in &parts[..parts.len() - 1] {
        tx.send(part.clone()).await.unwrap();
    }
    call.abort();
    let _ = call.await;

    assert_eq!(
        total_assets_of(&app, "이정희", "111111111111").await,
        1_100,
        "the previous snapshot is intact"
    );

    // The day itself then loads cleanly: nothing of the failed attempts is in the way.
    load(&app, &next).await.unwrap();
    assert_eq!(
        total_assets_of(&app, "이정희", "111111111111").await,
        9_999 + 600
    );
}

async fn only_a_header_first_and_instruments_before_accounts(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let day = fixture(AS_OF);
    let mut parts = day.parts(3);
    parts.swap(1, 2);
    let status = app
        .ingest()
        .await
        .load_snapshot(tokio_stream::iter(parts))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let parts = day.parts(3)[1..].to_vec();
    let status = app
        .ingest()
        .await
        .load_snapshot(tokio_stream::iter(parts))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_deref()),
        (Code::InvalidArgument, Some("PARTS_OUT_OF_ORDER"))
    );
    let status = app
        .ingest()
        .await
        .load_snapshot(tokio_stream::iter(Vec::new()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    // The loader's reject summary: malformed entries are refused, named by their path.
    for bad in [
        pb::RejectCount {
            file: String::new(),
            rule: "invalid_isin".into(),
            rows: 1,
        },
        pb::RejectCount {
            file: "holdings.csv".into(),
            rule: "invalid_isin".into(),
            rows: 0,
        },
        pb::RejectCount {
            file: "holdings.csv".into(),
            rule: "x".repeat(65),
            rows: 1,
        },
    ] {
        let mut parts = day.parts(3);
        if let Some(pb::snapshot_part::Part::Header(header)) = &mut parts[0].part {
            header.rejects = vec![bad.clone()];
        }
        let status = app
            .ingest()
            .await
            .load_snapshot(tokio_stream::iter(parts))
            .await
            .unwrap_err();
        assert_eq!(
            (status.code(), reason(&status).as_deref()),
            (Code::InvalidArgument, Some("INVALID_REJECTS")),
            "{bad:?}"
        );
        assert_eq!(bad_fields(&status), ["header.rejects[0]"]);
    }
    // Nothing was ever loaded: the screens are empty, not broken.
    let empty = app
        .screens("이정희")
        .await
        .list_accounts(pb::ListAccountsRequest::default())
        .await
        .unwrap();
    assert!(empty.into_inner().accounts.is_empty());
}

async fn health_reflection_and_metrics(backend: Backend) {
    let Some(db) = TestDatabase::create(backend, "portfolio") else {
        return;
    };
    let app = TestPortfolio::spawn_on(db, |c| c.server.drain_delay = Duration::from_secs(30)).await;
    // A day with the loader's reject summary in its header: accepted, and its total reported.
    let day = fixture(AS_OF);
    let mut parts = day.parts(3);
    if let Some(pb::snapshot_part::Part::Header(header)) = &mut parts[0].part {
        header.rejects = vec![
            pb::RejectCount {
                file: "holdings.csv".into(),
                rule: "invalid_isin".into(),
                rows: 2,
            },
            pb::RejectCount {
                file: "principal.csv".into(),
                rule: "duplicate_account".into(),
                rows: 1,
            },
        ];
    }
    app.ingest()
        .await
        .load_snapshot(tokio_stream::iter(parts))
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel().await);
    for service in [
        "",
        "liveness",
        "invest.portfolio.v1.PortfolioLedger",
        "invest.portfolio.v1.PortfolioService",
        "invest.portfolio.v1.PortfolioIngest",
    ] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service:?}"
        );
    }

    let mut reflection =
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(
            app.channel().await,
        );
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.next().await.unwrap().unwrap();
    let Some(
        tonic_reflection::pb::v1::server_reflection_response::MessageResponse::ListServicesResponse(
            list,
        ),
    ) = answer.message_response
    else {
        panic!("not a list of services");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "invest.portfolio.v1.PortfolioService",
        "invest.portfolio.v1.PortfolioIngest",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }

    app.screens("이정희")
        .await
        .get_account(pb::GetAccountRequest {
            account_number: "111111111111".into(),
        })
        .await
        .unwrap();
    let metrics = http_get(app.server.metrics_addr, "/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("grpc_server_handled_total")
                && l.contains("grpc_method=\"GetAccount\"")
                && l.contains("grpc_code=\"OK\"")),
        "{metrics}"
    );
    assert!(
        metrics.contains("grpc_server_handling_seconds_bucket"),
        "{metrics}"
    );
    // What an operator pages on (the tests of this binary share one recorder, so only the
    // series are checked here, not values other tests may have moved).
    for series in [
        "ingest_loads_total{what=\"snapshot\",result=\"current\"}",
        "ingest_last_load_success{what=\"snapshot\"}",
        "ingest_last_load_timestamp_seconds{what=\"snapshot\"}",
        "ingest_last_load_duration_seconds{what=\"snapshot\"}",
        "ingest_last_load_rejected_rows{what=\"snapshot\"}",
        "ingest_last_load_rows{what=\"snapshot\",table=\"holding\"}",
        "db_pool_connections_in_use",
        "db_pool_connections_max",
        "db_pool_waiting",
        "db_pool_wait_seconds_bucket",
    ] {
        assert!(
            metrics.lines().any(|l| l.starts_with(series)),
            "{series} in:\n{metrics}"
        );
    }

    // Draining: NOT_SERVING while the listener still answers.
    let mut watch = health
        .watch(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let serving = watch.next().await.unwrap().unwrap().status;
    assert_eq!(
        serving,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    app.server.shutdown();
    let draining = watch.next().await.unwrap().unwrap().status;
    assert_eq!(
        draining,
        tonic_health::pb::health_check_response::ServingStatus::NotServing as i32
    );
}

async fn replicas_starting_together_migrate_once(backend: Backend) {
    let Some(db) = TestDatabase::create(backend, "portfolio") else {
        return;
    };
    let url = db.url().to_owned();
    let (a, b) = tokio::join!(
        portfolio_svc::start(portfolio_svc::testkit::test_config(&url)),
        portfolio_svc::start(portfolio_svc::testkit::test_config(&url)),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(a.ready(), b.ready())
    })
    .await
    .expect("both replicas become ready");
    // Both serve the same data.
    let app = TestPortfolio::spawn_on(db, |_| {}).await;
    load(&app, &fixture(AS_OF)).await.unwrap();
    for server in [&a, &b] {
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = PortfolioServiceClient::with_interceptor(
            channel,
            invest_proto::auth::ServiceToken::new(
                app.keys.clone(),
                "이정희",
                &[SCOPE_ACCOUNTS_READ],
            ),
        );
        let list = client
            .list_accounts(pb::ListAccountsRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(list.accounts.len(), 2);
    }
}

backend_tests!(
    screens_show_the_loaded_snapshot,
    auth_is_enforced,
    malformed_arguments_are_named,
    pages_are_stable_across_a_new_snapshot,
    page_tokens_are_bound_to_caller_and_listing,
    huge_arguments_get_short_answers,
    snapshots_are_listed,
    a_reset_stream_never_commits,
    reloading_is_idempotent_and_never_goes_back,
    bad_streams_change_nothing,
    only_a_header_first_and_instruments_before_accounts,
    health_reflection_and_metrics,
    replicas_starting_together_migrate_once,
);
