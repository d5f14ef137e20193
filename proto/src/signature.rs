//! The phase-2 signature of a deposit (and, later, a withdrawal): lowercase hex BLAKE3 over the
//! UTF-8 bytes of `account_number + customer_name + amount` as given in phase 1, the amount in
//! plain decimal digits; the same as `printf '%s' '5736692368320류영길1000' | b3sum`.

use crate::ids::FormatError;

/// A phase-2 signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature(blake3::Hash);

impl Signature {
    /// What the signature of these phase-1 fields is.
    pub fn of(account_number: &str, customer_name: &str, amount: i64) -> Self {
        let mut hasher = blake3::Hasher::new();
        hasher.update(account_number.as_bytes());
        hasher.update(customer_name.as_bytes());
        hasher.update(amount.to_string().as_bytes());
        Self(hasher.finalize())
    }

    /// 64 hex digits, either case.
    pub fn parse(text: &str) -> Result<Self, FormatError> {
        if text.len() != 64 {
            return Err(FormatError(format!(
                "must be the 64 hex digits of a BLAKE3 hash, got {} characters",
                text.len()
            )));
        }
        blake3::Hash::from_hex(text.to_ascii_lowercase())
            .map(Self)
            .map_err(|_| FormatError("must be 64 hexadecimal digits (0-9, a-f)".to_owned()))
    }

    /// Compares in constant time (`blake3::Hash` equality is constant-time).
    pub fn matches(&self, expected: &Signature) -> bool {
        self.0 == expected.0
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        self.0.to_hex().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_example() {
        let expected = Signature::of("5736692368320", "류영길", 1000);
        assert_eq!(
            expected.to_hex(),
            blake3::hash("5736692368320류영길1000".as_bytes())
                .to_hex()
                .to_string()
        );
        let upper = Signature::parse(&expected.to_hex().to_uppercase()).unwrap();
        assert!(upper.matches(&expected), "hex is case-insensitive");
        assert!(!Signature::of("5736692368320", "류영길", 1001).matches(&expected));
        assert!(Signature::parse("abc").is_err());
        assert!(Signature::parse(&"g".repeat(64)).is_err());
    }
}
