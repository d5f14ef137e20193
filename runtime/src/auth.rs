//! Verifying callers on a server: the tonic interceptor that demands a scope, the guard's
//! authenticator, and the server's memory of verified tokens. The claims, the keys and the
//! verification itself are the wire crate's ([`invest_proto::auth`]).

use std::sync::Arc;

use invest_proto::auth::{AuthError, Caller, JwtKeys, LEEWAY_SECONDS, now_seconds};
use tonic::{Request, Status, service::Interceptor};

/// The token of `authorization: Bearer <token>`.
fn bearer<T>(request: &Request<T>) -> Result<&str, AuthError> {
    bearer_in(request.metadata().as_ref())
}

/// The token of an `authorization: Bearer <token>` header.
pub(crate) fn bearer_in(headers: &tonic::codegen::http::HeaderMap) -> Result<&str, AuthError> {
    let value = headers
        .get("authorization")
        .ok_or(AuthError::MissingToken)?;
    let value = value.to_str().map_err(|_| AuthError::MalformedHeader)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::MalformedHeader)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::MalformedHeader);
    }
    Ok(token)
}

/// Tokens verified before, with their expiry: a client sends the same token with every call,
/// and a lookup costs far less than the signature check and the JSON parsing. Only successes
/// are kept, each until its own `exp`, so an answer is never more lenient than verifying
/// again. Keyed by the token's BLAKE3 hash (the server keeps no bearer token in memory);
/// bounded by a number of entries, evicting the least useful (S3-FIFO) when full, so a
/// population larger than the bound costs verifications, not memory. One per server, shared
/// by its services.
#[derive(Debug)]
pub struct VerifiedTokens {
    /// `None`: remember nothing, verify every call.
    tokens: Option<TokenCache>,
}

/// BLAKE3 hash of a token → its caller and its `exp` (seconds since the epoch).
type TokenCache = quick_cache::sync::Cache<[u8; 32], (Arc<Caller>, u64)>;

impl VerifiedTokens {
    /// How many tokens a server remembers unless configured otherwise: about 20 MiB at most.
    pub const DEFAULT_CAPACITY: usize = 100_000;

    /// Remembers up to `capacity` tokens (0: none).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            tokens: (capacity > 0).then(|| quick_cache::sync::Cache::new(capacity)),
        }
    }

    fn verify(&self, keys: &JwtKeys, token: &str) -> Result<Arc<Caller>, AuthError> {
        let Some(tokens) = &self.tokens else {
            return keys.verify(token).map(Arc::new);
        };
        let key = *blake3::hash(token.as_bytes()).as_bytes();
        if let Some((caller, exp)) = tokens.get(&key)
            && now_seconds() <= exp.saturating_add(LEEWAY_SECONDS)
        {
            return Ok(caller);
        }
        let (caller, exp) = keys.verify_until(token)?;
        let caller = Arc::new(caller);
        tokens.insert(key, (caller.clone(), exp));
        Ok(caller)
    }
}

/// Verifies callers for a server: its keys and its memory of verified tokens.
#[derive(Debug, Clone)]
pub struct Authenticator {
    keys: Arc<JwtKeys>,
    verified: Arc<VerifiedTokens>,
}

impl Authenticator {
    /// Verifies with `keys`, remembering in `verified`.
    pub fn new(keys: Arc<JwtKeys>, verified: Arc<VerifiedTokens>) -> Self {
        Self { keys, verified }
    }

    /// The caller proven by the `authorization` header, if any.
    pub fn authenticate(
        &self,
        headers: &tonic::codegen::http::HeaderMap,
    ) -> Result<Arc<Caller>, AuthError> {
        self.verified.verify(&self.keys, bearer_in(headers)?)
    }
}

impl Default for VerifiedTokens {
    fn default() -> Self {
        Self::with_capacity(Self::DEFAULT_CAPACITY)
    }
}

/// Server interceptor: verifies the token, demands one scope, and puts the [`Caller`] into the
/// request extensions for the handler.
#[derive(Debug, Clone)]
pub struct RequireScope {
    keys: Arc<JwtKeys>,
    scope: &'static str,
    verified: Arc<VerifiedTokens>,
}

impl RequireScope {
    /// Demands `scope` from every call, with tokens remembered in `verified` (shared by the
    /// services of one server).
    pub fn new(keys: Arc<JwtKeys>, verified: Arc<VerifiedTokens>, scope: &'static str) -> Self {
        Self {
            keys,
            scope,
            verified,
        }
    }
}

impl Interceptor for RequireScope {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        // The request guard verified the token already (to count the caller's calls) and left
        // the caller or the refusal; only the scope is left to check then.
        let caller = match (
            request.extensions().get::<Arc<Caller>>(),
            request.extensions().get::<AuthError>(),
        ) {
            (Some(caller), _) => caller.clone(),
            (None, Some(refusal)) => return Err(refusal.clone().into()),
            (None, None) => self.verified.verify(&self.keys, bearer(&request)?)?,
        };
        if !caller.has_scope(self.scope) {
            return Err(AuthError::MissingScope(self.scope).into());
        }
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// The verified caller of a request that passed [`RequireScope`].
pub fn caller<T>(request: &Request<T>) -> Result<&Caller, Status> {
    request
        .extensions()
        .get::<Arc<Caller>>()
        .map(|caller| &**caller)
        .ok_or_else(|| Status::unauthenticated("request did not pass authentication"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use invest_proto::auth::{
        AUDIENCE, Claims, SCOPE_ACCOUNTS_READ, SCOPE_INGEST_WRITE, ServiceToken,
    };
    use tonic::Code;

    use super::*;

    fn keys() -> JwtKeys {
        JwtKeys::from_secret(b"test-secret-test-secret-test-secret")
    }

    #[test]
    fn interceptor_demands_scope() {
        let k = Arc::new(keys());
        let mut guard = RequireScope::new(k.clone(), Arc::default(), SCOPE_INGEST_WRITE);
        let mut req = Request::new(());
        let token = k.mint("loader", &[SCOPE_ACCOUNTS_READ], Duration::from_secs(60));
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        assert_eq!(guard.call(req).unwrap_err().code(), Code::PermissionDenied);
        assert_eq!(
            guard.call(Request::new(())).unwrap_err().code(),
            Code::Unauthenticated
        );

        let mut svc = ServiceToken::new(k.clone(), "loader", &[SCOPE_INGEST_WRITE]);
        let req = svc.call(Request::new(())).unwrap();
        let req = guard.call(req).unwrap();
        assert_eq!(caller(&req).unwrap().subject, "loader");
    }

    #[test]
    fn remembered_tokens_still_expire_and_are_per_token() {
        let k = keys();
        let verified = VerifiedTokens::default();
        let now = now_seconds();
        let claims = |sub: &str, exp: u64| Claims {
            sub: sub.into(),
            aud: AUDIENCE.into(),
            exp,
            iat: now.saturating_sub(7_200),
            nbf: None,
            scope: "accounts:read".into(),
        };
        let soon = k.sign(&claims("a", now + 60));
        assert_eq!(verified.verify(&k, &soon).unwrap().subject, "a");
        let remembered = verified.tokens.as_ref().unwrap();
        assert!(
            remembered
                .get(blake3::hash(soon.as_bytes()).as_bytes())
                .is_some()
        );

        // An entry is honoured only until the token's own `exp`: an expired token that was
        // remembered is verified again, and refused.
        let expired = k.sign(&claims("b", now - 3_600));
        let caller = Arc::new(k.verify_until(&soon).unwrap().0);
        remembered.insert(
            *blake3::hash(expired.as_bytes()).as_bytes(),
            (caller, now - 3_600),
        );
        assert_eq!(verified.verify(&k, &expired), Err(AuthError::Expired));

        assert!(verified.verify(&k, "not.a.jwt").is_err());
        let other = JwtKeys::from_secret(b"another-secret").mint(
            "a",
            &["accounts:read"],
            Duration::from_secs(60),
        );
        assert!(
            verified.verify(&k, &other).is_err(),
            "a token is checked on its own, whatever was remembered"
        );
    }

    #[test]
    fn remembered_tokens_are_bounded() {
        let k = keys();
        let verified = VerifiedTokens::with_capacity(100);
        for i in 0..2_000 {
            let token = k.mint(
                &format!("customer-{i}"),
                &["accounts:read"],
                Duration::from_secs(60),
            );
            assert_eq!(
                verified.verify(&k, &token).unwrap().subject,
                format!("customer-{i}")
            );
        }
        let held = verified.tokens.as_ref().unwrap().len();
        assert!(held <= 110, "{held} tokens remembered with room for 100");
        assert!(
            held >= 50,
            "only {held} tokens remembered with room for 100"
        );

        let none = VerifiedTokens::with_capacity(0);
        let token = k.mint("a", &["accounts:read"], Duration::from_secs(60));
        assert_eq!(none.verify(&k, &token).unwrap().subject, "a");
        assert!(none.tokens.is_none());
    }
}
