//! What the binaries of the invest services share on their command line and as clients: the
//! flags of the JWT secret, the log format and its set-up, and connecting to a service. Its
//! own crate because the servers (through `invest-runtime`), the loader and loadgen all need
//! it, and the wire crate is for what every client needs, not our binaries' flags.

use std::{path::PathBuf, time::Duration};

use invest_proto::auth::JwtKeys;
use tonic::transport::Channel;

pub mod trace;

/// Where the shared secret comes from: the same flags and variables for all three binaries.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct JwtSecretArgs {
    /// File holding the HS256 secret shared by all services (surrounding white space is
    /// ignored).
    #[arg(long, env = "INVEST_JWT_SECRET_FILE", value_name = "FILE")]
    pub jwt_secret_file: Option<PathBuf>,
    /// The HS256 secret itself. Prefer the environment variable or the file: a flag shows in
    /// the process list.
    #[arg(
        long,
        env = "INVEST_JWT_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub jwt_secret: Option<String>,
}

/// Why the secret could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Neither the file nor the variable was given.
    #[error(
        "no JWT secret configured: pass --jwt-secret-file FILE or set INVEST_JWT_SECRET_FILE or INVEST_JWT_SECRET"
    )]
    Missing,
    /// The file could not be read.
    #[error("cannot read the JWT secret file {path}: {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The secret is empty after trimming.
    #[error("the JWT secret is empty")]
    Empty,
}

impl JwtSecretArgs {
    /// Loads the secret; the file wins over the variable when both are given.
    pub fn load(&self) -> Result<JwtKeys, SecretError> {
        let secret = match (&self.jwt_secret_file, &self.jwt_secret) {
            (Some(path), _) => std::fs::read(path).map_err(|source| SecretError::Unreadable {
                path: path.clone(),
                source,
            })?,
            (None, Some(secret)) => secret.clone().into_bytes(),
            (None, None) => return Err(SecretError::Missing),
        };
        let trimmed = secret.trim_ascii();
        if trimmed.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(JwtKeys::from_secret(trimmed))
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per event, for log collectors.
    Json,
}

/// Installs the global subscriber: logs in `format` (`RUST_LOG` filters; default `info`), and
/// spans exported as `service` when an OpenTelemetry collector is configured (see [`trace`]).
/// Call it inside the Tokio runtime and keep the guard until the process ends. Safe to call
/// twice (the second call installs nothing), so tests can start several servers.
pub fn init_tracing(format: LogFormat, service: &'static str) -> trace::TracingGuard {
    trace::init(format, service)
}

/// Why a service cannot be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL is not usable.
    #[error("invalid URL {url:?}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// Nobody answers.
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
}

/// Opens one HTTP/2 connection to `url`, trying up to `attempts` times (1 s, 2 s, … up to
/// 5 s apart) while the service starts.
pub async fn connect(url: &str, attempts: u32) -> Result<Channel, ConnectError> {
    let endpoint = Channel::from_shared(url.to_owned())
        .map_err(|e| ConnectError::Url {
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
                return Err(ConnectError::Unreachable {
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

/// An error with its sources, on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
