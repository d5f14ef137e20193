//! Test support for both servers (feature `testkit`): a fresh database per test on SQLite or
//! PostgreSQL. PostgreSQL tests need `INVEST_TEST_POSTGRES_URL` (e.g.
//! `postgres://postgres@127.0.0.1:5432/test`); without it they say so and skip, unless
//! `INVEST_TEST_REQUIRE_POSTGRES=1` (CI sets it) turns the skip into a failure.

use std::{
    fmt,
    sync::atomic::{AtomicU64, Ordering},
};

use diesel::{Connection, PgConnection, RunQueryDsl};

/// The variable naming the PostgreSQL server tests may use.
pub const POSTGRES_URL_VAR: &str = "INVEST_TEST_POSTGRES_URL";
/// Set to `1` to make a missing PostgreSQL a test failure rather than a skip.
pub const REQUIRE_POSTGRES_VAR: &str = "INVEST_TEST_REQUIRE_POSTGRES";

/// PostgreSQL: the `n` column of a one-row query such as `SELECT COUNT(*) AS n …`.
pub fn pg_count(conn: &mut PgConnection, sql: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query(sql)
        .get_result::<Count>(conn)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .n
}

/// PostgreSQL: applies every migration of `migrations`, then reverts the newest ones until
/// the relation `relation` no longer exists: the schema as it stood before the migration that
/// made it (to test that migration on data of the previous version).
pub fn pg_migrate_to_before(
    conn: &mut PgConnection,
    migrations: fn() -> diesel_migrations::EmbeddedMigrations,
    relation: &str,
) {
    use diesel_migrations::MigrationHarness as _;
    let applied = conn
        .run_pending_migrations(migrations())
        .expect("the migrations apply")
        .len();
    let exists = |conn: &mut PgConnection| {
        pg_count(
            conn,
            &format!("SELECT COUNT(*) AS n FROM pg_class WHERE relname = '{relation}'"),
        ) > 0
    };
    for _ in 0..applied {
        if !exists(conn) {
            return;
        }
        conn.revert_last_migration(migrations())
            .expect("the migration reverts");
    }
    assert!(!exists(conn), "no migration made {relation}");
}

/// Which backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A fresh SQLite file in a temporary directory.
    Sqlite,
    /// A fresh database on the server named by `INVEST_TEST_POSTGRES_URL`.
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        })
    }
}

/// A database that exists for one test and is dropped after it.
pub struct TestDatabase {
    url: String,
    backend: Backend,
    _dir: Option<tempfile::TempDir>,
    postgres: Option<(String, String)>,
}

impl fmt::Debug for TestDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestDatabase")
            .field("url", &self.url)
            .finish()
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{prefix}_{}_{n}_{nanos}", std::process::id())
}

/// Replaces the database name of a PostgreSQL URL.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map(|i| i + authority_start);
    let root = match path_start {
        Some(i) => &base[..i],
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{name}?{q}"),
        None => format!("{root}/{name}"),
    }
}

impl TestDatabase {
    /// A fresh database, or `None` (after saying why on stderr) when PostgreSQL is not
    /// configured.
    pub fn create(backend: Backend, prefix: &str) -> Option<Self> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("a temporary directory");
                let url = format!(
                    "sqlite://{}",
                    dir.path().join(format!("{prefix}.db")).display()
                );
                Some(Self {
                    url,
                    backend,
                    _dir: Some(dir),
                    postgres: None,
                })
            }
            Backend::Postgres => {
                let Ok(admin) = std::env::var(POSTGRES_URL_VAR) else {
                    if std::env::var(REQUIRE_POSTGRES_VAR).as_deref() == Ok("1") {
                        panic!("{REQUIRE_POSTGRES_VAR}=1 but {POSTGRES_URL_VAR} is not set");
                    }
                    eprintln!(
                        "SKIPPED on PostgreSQL: set {POSTGRES_URL_VAR}=postgres://postgres@127.0.0.1:5432/test to run it"
                    );
                    return None;
                };
                let name = unique_name(prefix);
                let mut conn = PgConnection::establish(&admin).unwrap_or_else(|e| {
                    panic!("cannot connect to {POSTGRES_URL_VAR} ({admin}): {e}")
                });
                diesel::sql_query(format!("CREATE DATABASE \"{name}\""))
                    .execute(&mut conn)
                    .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
                Some(Self {
                    url: with_database(&admin, &name),
                    backend,
                    _dir: None,
                    postgres: Some((admin, name)),
                })
            }
        }
    }

    /// Another handle on the same database, for a second server (a replica); dropping it
    /// leaves the database to the original handle.
    pub fn shared(&self) -> Self {
        Self {
            url: self.url.clone(),
            backend: self.backend,
            _dir: None,
            postgres: None,
        }
    }

    /// The URL to give the server.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// PostgreSQL only: drops the database now, cutting every connection to it (a database
    /// that goes away under a running server).
    pub fn drop_now(&self) {
        if let Some((admin, name)) = &self.postgres {
            let mut conn = PgConnection::establish(admin).expect("the admin connection");
            diesel::sql_query(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut conn)
                .expect("the test database can be dropped");
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.postgres.take()
            && let Ok(mut conn) = PgConnection::establish(&admin)
        {
            let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut conn);
        }
    }
}

/// A server binary running as a real process for one test (for promises about processes:
/// signals, connections, memory). Killed when dropped.
pub struct ServerProcess {
    /// The child.
    pub child: tokio::process::Child,
    /// The gRPC address it logged.
    pub addr: std::net::SocketAddr,
    /// Every line it has written to stderr so far.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl fmt::Debug for ServerProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerProcess")
            .field("addr", &self.addr)
            .finish()
    }
}

impl ServerProcess {
    /// Starts `binary` with `args` (listening on port 0 is the caller's to ask for), the JWT
    /// secret in the environment, and waits until it has logged its address (`listening on`)
    /// and reports SERVING. The log keeps being drained (and echoed when `TEST_LOG` is set).
    pub async fn start(binary: &str, args: &[&str], jwt_secret: &str) -> Self {
        Self::start_with_env(binary, args, jwt_secret, &[]).await
    }

    /// [`ServerProcess::start`] with more environment variables (they win over its defaults:
    /// text logs at `info`, no OpenTelemetry export).
    pub async fn start_with_env(
        binary: &str,
        args: &[&str],
        jwt_secret: &str,
        env: &[(&str, &str)],
    ) -> Self {
        use tokio::io::AsyncBufReadExt as _;
        let mut command = tokio::process::Command::new(binary);
        command
            .args(args)
            .env("INVEST_JWT_SECRET", jwt_secret)
            .env_remove("INVEST_JWT_SECRET_FILE")
            .env("INVEST_LOG_FORMAT", "text")
            .env("RUST_LOG", "info")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{binary} starts: {e}"));
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let echo = std::env::var_os("TEST_LOG").is_some();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = |line: &str| {
            log.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(line.to_owned());
        };
        let addr = loop {
            let line = tokio::time::timeout(std::time::Duration::from_secs(60), lines.next_line())
                .await
                .expect("the server logs its address within a minute")
                .expect("its log is readable")
                .expect("the server exited before listening");
            if echo {
                eprintln!("{line}");
            }
            keep(&line);
            if let Some(rest) = line.split("listening on ").nth(1) {
                // Text (`… listening on ADDR server=…`) or JSON (`"listening on ADDR",`).
                let addr = rest
                    .split(|c: char| c.is_whitespace() || c == '"')
                    .next()
                    .unwrap_or_default();
                break addr
                    .parse()
                    .unwrap_or_else(|e| panic!("address {addr:?}: {e}"));
            }
        };
        let kept = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if echo {
                    eprintln!("{line}");
                }
                kept.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
        let process = Self { child, addr, log };
        process.until_serving().await;
        process
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits (up to a minute) until health reports SERVING.
    pub async fn until_serving(&self) {
        use tonic_health::pb::{
            HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
        };
        let channel = tonic::transport::Channel::from_shared(self.url())
            .expect("a valid URL")
            .connect_lazy();
        let mut health = HealthClient::new(channel);
        let serving = async {
            loop {
                let watch = health
                    .watch(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await;
                let Ok(watch) = watch else {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                };
                let mut watch = watch.into_inner();
                while let Ok(Some(status)) = watch.message().await {
                    if status.status == ServingStatus::Serving as i32 {
                        return;
                    }
                }
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(60), serving)
            .await
            .expect("the server reports SERVING within a minute");
    }
}

/// How the proxy treats connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forwards everything.
    Up,
    /// Closes every connection at once (the target is down).
    Down,
    /// Accepts connections and never answers (the target hangs).
    Hang,
}

/// A TCP proxy in front of a server, whose mode a test switches; switching closes the
/// connections open so far, so clients notice at once.
#[derive(Debug)]
pub struct Proxy {
    /// Where clients connect.
    pub addr: std::net::SocketAddr,
    mode: tokio::sync::watch::Sender<(ProxyMode, u64)>,
}

impl Proxy {
    /// A proxy to `target`, starting in `mode`.
    pub async fn start(target: std::net::SocketAddr, mode: ProxyMode) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let addr = listener.local_addr().expect("a bound address");
        let (tx, rx) = tokio::sync::watch::channel((mode, 0u64));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut rx = rx.clone();
                let (mode, generation) = *rx.borrow_and_update();
                tokio::spawn(async move {
                    let relay = async {
                        match mode {
                            ProxyMode::Down => {}
                            ProxyMode::Hang => std::future::pending::<()>().await,
                            ProxyMode::Up => {
                                if let Ok(mut server) = tokio::net::TcpStream::connect(target).await
                                {
                                    let mut client = client;
                                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server)
                                        .await;
                                }
                            }
                        }
                    };
                    tokio::select! {
                        _ = relay => {}
                        _ = rx.wait_for(|(_, g)| *g != generation) => {}
                    }
                });
            }
        });
        Self { addr, mode: tx }
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Switches mode and cuts every open connection.
    pub fn set(&self, mode: ProxyMode) {
        self.mode.send_modify(|(m, generation)| {
            *m = mode;
            *generation += 1;
        });
    }
}

/// Generates one `#[tokio::test]` per backend for an `async fn(Backend)`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),+ $(,)?) => {
        /// The tests on SQLite.
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::testkit::Backend::Sqlite).await
                }
            )+
        }
        /// The tests on PostgreSQL.
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::testkit::Backend::Postgres).await
                }
            )+
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_replaced() {
        assert_eq!(
            with_database("postgres://u@h:5432/test", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h/test?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
    }
}
