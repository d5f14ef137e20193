//! JWT authentication as the contract says: `authorization: Bearer <JWT>`, HS256 with a shared
//! secret, required claims `sub`, `aud` = `invest` and `exp`, space-separated `scope`.
//!
//! The claims, the keys, minting and verifying a token, and [`ServiceToken`], the client
//! interceptor with which a process that calls on its own behalf (deposit-svc, the loader)
//! attaches a token it mints. The servers' side (the scope interceptor, the memory of
//! verified tokens) is in the runtime crate; the flags of the secret in `invest-cli`.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use tonic::{Code, Request, Status, metadata::MetadataValue, service::Interceptor};

use crate::status::error_status;

/// The only audience tokens are minted for and accepted with.
pub const AUDIENCE: &str = "invest";

/// Scope of `PortfolioService`: read the caller's own accounts.
pub const SCOPE_ACCOUNTS_READ: &str = "accounts:read";
/// Scope of `PortfolioIngest` and `DirectoryIngest`: replace the daily data.
pub const SCOPE_INGEST_WRITE: &str = "ingest:write";
/// Scope of `PortfolioLedger`: credit confirmed deposits, hold, take and release withdrawals.
pub const SCOPE_LEDGER_WRITE: &str = "ledger:write";
/// Scope of `DepositService`: deposit into the caller's own accounts.
pub const SCOPE_DEPOSITS_WRITE: &str = "deposits:write";
/// Scope of `WithdrawalService`: withdraw from the caller's own accounts.
pub const SCOPE_WITHDRAWALS_WRITE: &str = "withdrawals:write";

/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECONDS: u64 = 30;

/// The claims of an invest token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The customer name (or service name) the token speaks for.
    pub sub: String,
    /// [`AUDIENCE`], alone or among others.
    pub aud: Audience,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issue time, seconds since the Unix epoch.
    #[serde(default)]
    pub iat: u64,
    /// Not before, seconds since the Unix epoch: the token is refused until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Space-separated scopes.
    #[serde(default)]
    pub scope: String,
}

/// The `aud` claim: one string, or a list of strings (RFC 7519, section 4.1.3).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Audience {
    /// `"aud": "invest"`.
    One(String),
    /// `"aud": ["invest", "other"]`.
    Many(Vec<String>),
}

impl From<&str> for Audience {
    fn from(audience: &str) -> Self {
        Self::One(audience.to_owned())
    }
}

impl From<String> for Audience {
    fn from(audience: String) -> Self {
        Self::One(audience)
    }
}

/// Signing and verification keys derived from the shared secret.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    page_token_key: [u8; 32],
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys(..)")
    }
}

/// Who is calling, as proven by a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's `sub`: a customer name, or a service name for service tokens.
    pub subject: String,
    scopes: Vec<String>,
}

impl Caller {
    /// Whether the token carries `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `authorization` metadata.
    #[error("missing authorization metadata: send `authorization: Bearer <JWT>`")]
    MissingToken,
    /// Not of the form `Bearer <token>`.
    #[error("authorization metadata must be `Bearer <JWT>`")]
    MalformedHeader,
    /// Expired.
    #[error("the token has expired")]
    Expired,
    /// Its `nbf` is still in the future.
    #[error("the token is not valid yet (its `nbf` is in the future)")]
    NotYetValid,
    /// Wrong audience.
    #[error("the token's audience is not `{AUDIENCE}`")]
    WrongAudience,
    /// Anything else: bad signature, bad shape, missing claims.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// Valid, but without the scope the method needs.
    #[error("the token lacks the scope `{0}` this method needs")]
    MissingScope(&'static str),
}

impl From<AuthError> for Status {
    fn from(err: AuthError) -> Self {
        let (code, reason) = match &err {
            AuthError::MissingToken => (Code::Unauthenticated, "MISSING_TOKEN"),
            AuthError::MalformedHeader => (Code::Unauthenticated, "MALFORMED_AUTHORIZATION"),
            AuthError::Expired => (Code::Unauthenticated, "TOKEN_EXPIRED"),
            AuthError::NotYetValid => (Code::Unauthenticated, "TOKEN_NOT_YET_VALID"),
            AuthError::WrongAudience => (Code::Unauthenticated, "WRONG_AUDIENCE"),
            AuthError::Invalid(_) => (Code::Unauthenticated, "INVALID_TOKEN"),
            AuthError::MissingScope(_) => (Code::PermissionDenied, "MISSING_SCOPE"),
        };
        error_status(code, reason, err.to_string())
    }
}

/// Seconds since the Unix epoch, as `exp` and `nbf` count.
pub fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl JwtKeys {
    /// Keys for a raw secret.
    pub fn from_secret(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "sub", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECONDS;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            // Its own key, derived from the shared secret: every replica signs and checks page
            // tokens alike, and a page token is never a JWT signature.
            page_token_key: blake3::derive_key("invest 2026-12-02 page tokens", secret),
        }
    }

    /// The key page tokens are signed with (derived from the shared secret).
    pub fn page_token_key(&self) -> [u8; 32] {
        self.page_token_key
    }

    /// Mints a token for `sub` with the given scopes, valid for `ttl`.
    pub fn mint(&self, sub: &str, scopes: &[&str], ttl: Duration) -> String {
        let iat = now_seconds();
        let claims = Claims {
            sub: sub.to_owned(),
            aud: AUDIENCE.into(),
            exp: iat.saturating_add(ttl.as_secs()),
            iat,
            nbf: None,
            scope: scopes.join(" "),
        };
        self.sign(&claims)
    }

    /// Signs arbitrary claims (tests use it to forge expired or mis-addressed tokens).
    pub fn sign(&self, claims: &Claims) -> String {
        // HS256 signing of serialisable claims cannot fail.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .expect("HS256 signing does not fail")
    }

    /// Verifies a bare token (without the `Bearer ` prefix).
    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        self.verify_until(token).map(|(caller, _)| caller)
    }

    /// Verifies a token and tells until when (its `exp`, seconds since the epoch) the answer
    /// holds.
    pub fn verify_until(&self, token: &str) -> Result<(Caller, u64), AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| refusal(token, e.kind()))?;
        let claims = data.claims;
        if claims.sub.is_empty() {
            return Err(AuthError::Invalid("empty `sub` claim".into()));
        }
        let caller = Caller {
            subject: claims.sub,
            scopes: claims
                .scope
                .split_ascii_whitespace()
                .map(str::to_owned)
                .collect(),
        };
        Ok((caller, claims.exp))
    }
}

/// Why `token` was refused, in words for the caller rather than the JWT library's.
fn refusal(token: &str, kind: &ErrorKind) -> AuthError {
    let invalid = |why: &str| AuthError::Invalid(why.to_owned());
    match kind {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::InvalidSignature => {
            invalid("the signature does not match (signed with another secret, or altered)")
        }
        ErrorKind::MissingRequiredClaim(claim) => AuthError::Invalid(format!(
            "the token has no `{claim}` claim; `sub`, `aud` and `exp` are required"
        )),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => match algorithm(token) {
            Some(alg) => AuthError::Invalid(format!(
                "the token is signed with {}; only HS256 is accepted",
                crate::ids::echo(&alg)
            )),
            None => invalid("only HS256 tokens are accepted"),
        },
        _ => match algorithm(token) {
            Some(alg) if alg != "HS256" => AuthError::Invalid(format!(
                "the token is signed with {}; only HS256 is accepted",
                crate::ids::echo(&alg)
            )),
            _ => invalid(
                "not a well-formed JWT: three base64url parts separated by dots, a JSON header and JSON claims with `sub` (text), `aud` (text or list), `exp` (seconds)",
            ),
        },
    }
}

/// The `alg` of a token's header, if the header is readable.
fn algorithm(token: &str) -> Option<String> {
    use base64::Engine as _;
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .ok()?;
    let header: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    header.get("alg")?.as_str().map(str::to_owned)
}

/// An `authorization` value and when to renew it (seconds since the epoch).
type CachedHeader = (MetadataValue<tonic::metadata::Ascii>, u64);

/// Client interceptor: attaches a token this process mints for itself, renewed well before
/// it expires.
#[derive(Debug, Clone)]
pub struct ServiceToken {
    keys: Arc<JwtKeys>,
    subject: String,
    scopes: Vec<&'static str>,
    cached: Arc<Mutex<Option<CachedHeader>>>,
}

const SERVICE_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);

impl ServiceToken {
    /// Tokens for `subject` with `scopes`.
    pub fn new(keys: Arc<JwtKeys>, subject: impl Into<String>, scopes: &[&'static str]) -> Self {
        Self {
            keys,
            subject: subject.into(),
            scopes: scopes.to_vec(),
            cached: Arc::default(),
        }
    }

    fn header(&self) -> MetadataValue<tonic::metadata::Ascii> {
        let now = now_seconds();
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((value, renew_at)) = cached.as_ref()
            && now < *renew_at
        {
            return value.clone();
        }
        let token = self
            .keys
            .mint(&self.subject, &self.scopes, SERVICE_TOKEN_TTL);
        let value = MetadataValue::try_from(format!("Bearer {token}"))
            .expect("a JWT is valid ASCII metadata");
        *cached = Some((value.clone(), now + SERVICE_TOKEN_TTL.as_secs() / 2));
        value
    }
}

impl Interceptor for ServiceToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.header());
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> JwtKeys {
        JwtKeys::from_secret(b"test-secret-test-secret-test-secret")
    }

    #[test]
    fn round_trip_and_scopes() {
        let token = keys().mint(
            "류영길",
            &["accounts:read", "deposits:write"],
            Duration::from_secs(60),
        );
        let caller = keys().verify(&token).unwrap();
        assert_eq!(caller.subject, "류영길");
        assert!(caller.has_scope("accounts:read"));
        assert!(caller.has_scope("deposits:write"));
        assert!(!caller.has_scope("ingest:write"));
    }

    #[test]
    fn refusals() {
        let k = keys();
        let other = JwtKeys::from_secret(b"another-secret");
        let token = other.mint("a", &["accounts:read"], Duration::from_secs(60));
        assert!(matches!(k.verify(&token), Err(AuthError::Invalid(_))));

        let now = now_seconds();
        let expired = k.sign(&Claims {
            sub: "a".into(),
            aud: AUDIENCE.into(),
            exp: now - 3600,
            iat: now - 7200,
            nbf: None,
            scope: String::new(),
        });
        assert_eq!(k.verify(&expired), Err(AuthError::Expired));

        let wrong_aud = k.sign(&Claims {
            sub: "a".into(),
            aud: "elsewhere".into(),
            exp: now + 3600,
            iat: now,
            nbf: None,
            scope: String::new(),
        });
        assert_eq!(k.verify(&wrong_aud), Err(AuthError::WrongAudience));
        assert!(matches!(k.verify("not.a.jwt"), Err(AuthError::Invalid(_))));

        // RFC 7519: `aud` may be a list; ours must be in it.
        let listed = |aud: &[&str]| Claims {
            sub: "a".into(),
            aud: Audience::Many(aud.iter().map(|a| (*a).to_owned()).collect()),
            exp: now + 3600,
            iat: now,
            nbf: None,
            scope: "accounts:read".into(),
        };
        assert_eq!(
            k.verify(&k.sign(&listed(&["other", AUDIENCE])))
                .unwrap()
                .subject,
            "a"
        );
        assert_eq!(
            k.verify(&k.sign(&listed(&["other"]))),
            Err(AuthError::WrongAudience)
        );

        // `nbf` in the future (beyond the leeway) is refused; in the past it is fine.
        let not_before = |nbf: u64| Claims {
            nbf: Some(nbf),
            ..listed(&[AUDIENCE])
        };
        assert_eq!(
            k.verify(&k.sign(&not_before(now + 3600))),
            Err(AuthError::NotYetValid)
        );
        assert!(k.verify(&k.sign(&not_before(now - 10))).is_ok());
    }

    /// Refusals speak of the token, not of the JWT library's internals.
    #[test]
    fn refusal_messages_are_ours() {
        use base64::Engine as _;
        let k = keys();
        let b64 = |text: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
        let now = now_seconds();
        let claims = b64(&format!(
            r#"{{"sub":"a","aud":"invest","exp":{}}}"#,
            now + 60
        ));
        let unsigned = format!("{}.{claims}.", b64(r#"{"alg":"none","typ":"JWT"}"#));
        let message = k.verify(&unsigned).unwrap_err().to_string();
        assert!(
            message.contains("\"none\"") && message.contains("only HS256"),
            "{message}"
        );
        assert!(!message.contains("variant"), "{message}");

        let other = JwtKeys::from_secret(b"another-secret").mint("a", &[], Duration::from_secs(60));
        let message = k.verify(&other).unwrap_err().to_string();
        assert!(message.contains("signature does not match"), "{message}");

        let no_sub = k.sign(&Claims {
            sub: String::new(),
            aud: AUDIENCE.into(),
            exp: now + 60,
            iat: now,
            nbf: None,
            scope: String::new(),
        });
        assert!(k.verify(&no_sub).is_err());
        for garbage in ["", "abc", "a.b.c", "....", "eyJ.eyJ.x"] {
            let message = k.verify(garbage).unwrap_err().to_string();
            assert!(
                message.contains("well-formed JWT"),
                "{garbage:?}: {message}"
            );
        }
    }
}
