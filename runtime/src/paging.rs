//! AIP-158 paging shared by the list methods: page sizes, and opaque page tokens that carry
//! the position where the next page starts.
//!
//! A page token is signed (a keyed BLAKE3 MAC with a key derived from the shared secret, so
//! any replica accepts it) and bound to the method and the caller it was issued to: a token
//! that was altered, cut, made up, or issued to another caller or for another method is
//! INVALID_PAGE_TOKEN, never a silent start somewhere else. Methods put the request fields
//! that define their listing (an account number, filters) among the token's fields and check
//! them on return (PAGE_TOKEN_MISMATCH).

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};

use crate::error::{Error, Result};
use invest_proto::auth::JwtKeys;

/// AIP-158 page size: 0 is the default, negative is INVALID_ARGUMENT, too large is capped.
pub fn page_size(requested: i32, default: i64, max: i64) -> Result<i64> {
    match requested {
        0 => Ok(default),
        n if n < 0 => Err(Error::invalid(
            "INVALID_PAGE_SIZE",
            "page_size",
            format!("must not be negative, got {n}"),
        )),
        n => Ok(i64::from(n).min(max)),
    }
}

const TOKEN_VERSION: &str = "v2";
const MAC_LEN: usize = 32;
/// Longer than any token we issue: a bigger one is refused before any work.
const MAX_TOKEN_LEN: usize = 1024;

/// Signs and checks page tokens.
#[derive(Clone)]
pub struct PageTokens {
    key: [u8; 32],
}

impl std::fmt::Debug for PageTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PageTokens(..)")
    }
}

fn invalid() -> Error {
    Error::invalid(
        "INVALID_PAGE_TOKEN",
        "page_token",
        "not a page token this server issued to you for this method; pass the next_page_token of the previous response unchanged, or empty for the first page",
    )
}

impl PageTokens {
    /// Tokens signed with the key derived from the shared secret.
    pub fn new(keys: &JwtKeys) -> Self {
        Self {
            key: keys.page_token_key(),
        }
    }

    fn mac(&self, method: &str, caller: &str, payload: &[u8]) -> blake3::Hash {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        for part in [method.as_bytes(), caller.as_bytes()] {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        hasher.update(payload);
        hasher.finalize()
    }

    /// Opaque text for `next_page_token`: `fields` (none may contain `\n`), signed for
    /// `method` and `caller`.
    pub fn encode(&self, method: &str, caller: &str, fields: &[&str]) -> String {
        let mut payload = String::from(TOKEN_VERSION);
        for field in fields {
            debug_assert!(!field.contains('\n'), "page token fields are single lines");
            payload.push('\n');
            payload.push_str(field);
        }
        let mut bytes = payload.into_bytes();
        let mac = self.mac(method, caller, &bytes);
        bytes.extend_from_slice(mac.as_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The `N` fields of a `page_token` issued by [`Self::encode`] for the same method and
    /// caller; `None` for an empty token (the first page).
    pub fn decode<const N: usize>(
        &self,
        method: &str,
        caller: &str,
        text: &str,
    ) -> Result<Option<[String; N]>> {
        if text.is_empty() {
            return Ok(None);
        }
        if text.len() > MAX_TOKEN_LEN {
            return Err(invalid());
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| invalid())?;
        let Some(split) = bytes.len().checked_sub(MAC_LEN) else {
            return Err(invalid());
        };
        let (payload, mac) = bytes.split_at(split);
        let mac: [u8; MAC_LEN] = mac.try_into().map_err(|_| invalid())?;
        // `blake3::Hash` compares in constant time.
        if self.mac(method, caller, payload) != blake3::Hash::from(mac) {
            return Err(invalid());
        }
        let payload = std::str::from_utf8(payload).map_err(|_| invalid())?;
        let mut parts = payload.split('\n');
        if parts.next() != Some(TOKEN_VERSION) {
            return Err(invalid());
        }
        let fields: Vec<String> = parts.map(str::to_owned).collect();
        <[String; N]>::try_from(fields)
            .map(Some)
            .map_err(|_| invalid())
    }
}

/// PAGE_TOKEN_MISMATCH: a genuine token of this caller, for a different listing.
pub fn token_mismatch(what: &str) -> Error {
    Error::invalid(
        "PAGE_TOKEN_MISMATCH",
        "page_token",
        format!(
            "was issued for {what}; pass the same request as for the first page, or start again with an empty page_token"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> PageTokens {
        PageTokens::new(&JwtKeys::from_secret(b"a secret for page tokens"))
    }

    #[test]
    fn page_sizes() {
        assert_eq!(page_size(0, 50, 500).unwrap(), 50);
        assert_eq!(page_size(7, 50, 500).unwrap(), 7);
        assert_eq!(page_size(10_000, 50, 500).unwrap(), 500);
        assert!(page_size(-1, 50, 500).is_err());
    }

    fn reason(result: Result<Option<[String; 2]>>) -> &'static str {
        match result {
            Err(Error::InvalidArgument { reason, .. }) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn tokens_round_trip_for_their_method_and_caller_only() {
        let t = tokens();
        let token = t.encode("ListHoldings", "류영길", &["42", "KR7360750004"]);
        assert_eq!(
            t.decode::<2>("ListHoldings", "류영길", &token).unwrap(),
            Some(["42".to_owned(), "KR7360750004".to_owned()])
        );
        assert_eq!(t.decode::<2>("ListHoldings", "류영길", "").unwrap(), None);
        for (method, caller) in [("ListHoldings", "이정희"), ("ListAccounts", "류영길")] {
            assert_eq!(
                reason(t.decode::<2>(method, caller, &token)),
                "INVALID_PAGE_TOKEN"
            );
        }
        let other_secret = PageTokens::new(&JwtKeys::from_secret(b"another secret"));
        assert_eq!(
            reason(other_secret.decode::<2>("ListHoldings", "류영길", &token)),
            "INVALID_PAGE_TOKEN"
        );
        assert!(t.decode::<3>("ListHoldings", "류영길", &token).is_err());
    }

    #[test]
    fn altered_tokens_are_refused() {
        let t = tokens();
        let token = t.encode("ListAccounts", "a", &["7", "5736692368320"]);
        let bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        // Every single bit flipped, every cut.
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            let text = URL_SAFE_NO_PAD.encode(&flipped);
            assert_eq!(
                reason(t.decode::<2>("ListAccounts", "a", &text)),
                "INVALID_PAGE_TOKEN"
            );
        }
        for cut in 1..token.len() {
            assert!(t.decode::<2>("ListAccounts", "a", &token[..cut]).is_err());
        }
        // The unsigned tokens of the previous version are refused too.
        let old = URL_SAFE_NO_PAD.encode("v1\n7\n5736692368320");
        assert_eq!(
            reason(t.decode::<2>("ListAccounts", "a", &old)),
            "INVALID_PAGE_TOKEN"
        );
        assert!(
            t.decode::<2>("ListAccounts", "a", &"A".repeat(5_000))
                .is_err()
        );
        assert!(t.decode::<2>("ListAccounts", "a", "garbage!").is_err());
    }
}

/// Fuzzing the page-token decoder with generated input (proptest, stable Rust). The number of
/// cases is `INVEST_FUZZ_CASES` (default 2,000: a second or two); raise it for a longer run.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    fn cases() -> u32 {
        std::env::var("INVEST_FUZZ_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(2_000)
    }

    fn tokens() -> PageTokens {
        PageTokens::new(&JwtKeys::from_secret(b"fuzzing secret"))
    }

    fn field() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[^\n]{0,40}").expect("a valid regex")
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: cases(),
            // Failures are printed, not written into the tree.
            failure_persistence: Some(Box::new(
                proptest::test_runner::FileFailurePersistence::Off,
            )),
            ..ProptestConfig::default()
        })]

        /// Any text at all: an answer, never a panic; and never a position unless it is "".
        #[test]
        fn arbitrary_text_is_refused_without_panic(text in any::<String>()) {
            let decoded = tokens().decode::<2>("ListAccounts", "a", &text);
            if text.is_empty() {
                prop_assert!(matches!(decoded, Ok(None)));
            } else {
                prop_assert!(decoded.is_err());
            }
        }

        /// Base64url text of arbitrary bytes (what a forger would try): refused.
        #[test]
        fn arbitrary_bytes_are_refused(bytes in proptest::collection::vec(any::<u8>(), 1..200)) {
            let text = URL_SAFE_NO_PAD.encode(&bytes);
            prop_assert!(tokens().decode::<2>("ListAccounts", "a", &text).is_err());
        }

        /// What is encoded comes back, for its method and caller only.
        #[test]
        fn round_trip(a in field(), b in field(), caller in field(), other in field()) {
            let t = tokens();
            let token = t.encode("ListHoldings", &caller, &[&a, &b]);
            prop_assert_eq!(
                t.decode::<2>("ListHoldings", &caller, &token).unwrap(),
                Some([a.clone(), b.clone()])
            );
            if other != caller {
                prop_assert!(t.decode::<2>("ListHoldings", &other, &token).is_err());
            }
            prop_assert!(t.decode::<2>("ListAccounts", &caller, &token).is_err());
        }

        /// Any change to a genuine token's text is refused: a changed character, a cut, an
        /// insertion.
        #[test]
        fn altered_tokens_are_refused(
            a in field(),
            at in any::<prop::sample::Index>(),
            replacement in proptest::char::any(),
            cut in any::<prop::sample::Index>(),
        ) {
            let t = tokens();
            let token = t.encode("ListAccounts", "a", &[&a, "x"]);
            let position = at.index(token.len());
            let mut changed = token.clone();
            changed.replace_range(position..=position, &replacement.to_string());
            if changed != token {
                prop_assert!(t.decode::<2>("ListAccounts", "a", &changed).is_err());
            }
            // Cut to 1..len characters (cut to nothing is the first page, by design).
            let cut = 1 + cut.index(token.len() - 1);
            prop_assert!(t.decode::<2>("ListAccounts", "a", &token[..cut]).is_err());
            let mut longer = token.clone();
            longer.insert(position, 'A');
            prop_assert!(t.decode::<2>("ListAccounts", "a", &longer).is_err());
        }
    }
}
