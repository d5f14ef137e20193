//! AIP-158 paging shared by the list methods: page sizes, and opaque page tokens that carry
//! the position where the next page starts.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};

use super::error::{Error, Result};

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

const TOKEN_VERSION: &str = "v1";

/// Opaque text for `next_page_token` from the fields of a position (none may contain `\n`).
pub fn encode_token(fields: &[&str]) -> String {
    let mut text = String::from(TOKEN_VERSION);
    for field in fields {
        text.push('\n');
        text.push_str(field);
    }
    URL_SAFE_NO_PAD.encode(text)
}

/// The `N` fields of a `page_token`; `None` for an empty token (the first page).
pub fn decode_token<const N: usize>(text: &str) -> Result<Option<[String; N]>> {
    if text.is_empty() {
        return Ok(None);
    }
    let invalid = || {
        Error::invalid(
            "INVALID_PAGE_TOKEN",
            "page_token",
            "not a token this server issued; pass the next_page_token of the previous response, or empty for the first page",
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let mut parts = text.split('\n');
    if parts.next() != Some(TOKEN_VERSION) {
        return Err(invalid());
    }
    let fields: Vec<String> = parts.map(str::to_owned).collect();
    <[String; N]>::try_from(fields)
        .map(Some)
        .map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes() {
        assert_eq!(page_size(0, 50, 500).unwrap(), 50);
        assert_eq!(page_size(7, 50, 500).unwrap(), 7);
        assert_eq!(page_size(10_000, 50, 500).unwrap(), 500);
        assert!(page_size(-1, 50, 500).is_err());
    }

    #[test]
    fn tokens_round_trip() {
        let token = encode_token(&["42", "KR7360750004"]);
        assert_eq!(
            decode_token::<2>(&token).unwrap(),
            Some(["42".to_owned(), "KR7360750004".to_owned()])
        );
        assert_eq!(decode_token::<2>("").unwrap(), None);
        assert!(decode_token::<2>("garbage!").is_err());
        assert!(decode_token::<3>(&token).is_err());
        assert!(decode_token::<2>(&URL_SAFE_NO_PAD.encode("v2\n1\nx")).is_err());
    }
}
