//! Identifier formats shared by the daily files, the loader and both servers
//! (`DATASET.md`): parsed once at the edge, so the rest of the code never re-checks them.

use std::fmt;

/// Why a text is not a valid identifier; the message is meant for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FormatError(pub String);

/// An account number: 6 to 20 ASCII digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccountNumber(String);

impl AccountNumber {
    /// Accepts `^[0-9]{6,20}$`.
    pub fn parse(text: &str) -> Result<Self, FormatError> {
        let digits = text.bytes().all(|b| b.is_ascii_digit());
        if digits && (6..=20).contains(&text.len()) {
            Ok(Self(text.to_owned()))
        } else {
            Err(FormatError(format!(
                "account number must be 6 to 20 digits, got {}",
                echo(text)
            )))
        }
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digits, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for AccountNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An amount of money: whole KRW won, never negative (amounts that can be negative, such as
/// a profit, stay plain `i64`). Sums are checked: they never wrap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Won(i64);

impl Won {
    /// Nothing.
    pub const ZERO: Won = Won(0);

    /// `value` won, if it is not negative.
    pub fn new(value: i64) -> Option<Self> {
        (value >= 0).then_some(Self(value))
    }

    /// The number of won.
    pub fn get(self) -> i64 {
        self.0
    }

    /// `self + other`, if it fits in 64 bits.
    pub fn checked_add(self, other: Won) -> Option<Won> {
        self.0.checked_add(other.0).map(Self)
    }
}

impl fmt::Display for Won {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} won", self.0)
    }
}

/// A transfer id: 128 random bits as 32 lowercase hex digits, as deposit-svc issues them and
/// portfolio-svc records credits under them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TransferId(String);

impl TransferId {
    /// 32 hex digits, either case (kept in lowercase).
    pub fn parse(text: &str) -> Result<Self, FormatError> {
        if text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(text.to_ascii_lowercase()))
        } else {
            Err(FormatError(format!(
                "transfer id must be the 32 hex digits RegisterDeposit returned, got {}",
                echo(text)
            )))
        }
    }

    /// The id of 16 random bytes.
    pub fn from_random(bytes: [u8; 16]) -> Self {
        Self(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for TransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Longest text field (names of customers, brokerages, accounts, instruments and asset
/// groups) anywhere in the system, in UTF-8 bytes. The loader may be stricter, never looser:
/// a day it cleans must pass the servers' checks.
pub const MAX_TEXT_BYTES: usize = 1024;

/// Why a text field cannot be stored or shown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// Longer than [`MAX_TEXT_BYTES`] (or the caller's stricter limit).
    #[error("is {len} bytes long; at most {max} bytes are accepted")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Holds a character that a screen must never receive: a control character (C0, DEL,
    /// C1: NUL, line breaks, tabs, escapes), a line or paragraph separator, a bidirectional
    /// embedding, override or isolate (which can make a name display as another), or a
    /// byte-order mark.
    #[error("holds the invisible or control character {} at character {position}", codepoint(*character))]
    ForbiddenCharacter {
        /// The character.
        character: char,
        /// 1-based position in characters.
        position: usize,
    },
}

fn codepoint(c: char) -> String {
    format!("U+{:04X}", u32::from(c))
}

/// Whether a character may appear in a stored name. Everything printable is allowed
/// (Hangul, Latin, digits, punctuation, spaces); see [`TextError::ForbiddenCharacter`].
pub fn is_forbidden_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' // line and paragraph separators
            | '\u{202A}'..='\u{202E}' // bidi embeddings and overrides
            | '\u{2066}'..='\u{2069}' // bidi isolates
            | '\u{200E}' | '\u{200F}' | '\u{061C}' // bidi marks
            | '\u{FEFF}' // byte-order mark / zero-width no-break space
        )
}

/// Checks a text field (already trimmed) against the rules every side shares: at most `max`
/// bytes (never more than [`MAX_TEXT_BYTES`]) and no forbidden character. The same text is
/// accepted by the loader, portfolio-svc and deposit-svc, on SQLite and PostgreSQL alike
/// (PostgreSQL cannot store NUL at all).
pub fn check_text(text: &str, max: usize) -> Result<(), TextError> {
    let max = max.min(MAX_TEXT_BYTES);
    if text.len() > max {
        return Err(TextError::TooLong {
            len: text.len(),
            max,
        });
    }
    match text
        .chars()
        .enumerate()
        .find(|(_, c)| is_forbidden_char(*c))
    {
        Some((index, character)) => Err(TextError::ForbiddenCharacter {
            character,
            position: index + 1,
        }),
        None => Ok(()),
    }
}

/// How much of a caller's input an error message quotes.
const ECHO_CHARS: usize = 64;

/// A caller's input quoted for an error message: in Rust debug quoting (control characters
/// escaped), cut to its first 64 characters with its full length said, so that a megabyte
/// of garbage never comes back in a status message (clients refuse metadata that large).
pub fn echo(text: &str) -> String {
    let mut chars = text.char_indices();
    match chars.nth(ECHO_CHARS) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes in all)", &text[..cut], text.len()),
    }
}

/// The ISIN under which the cash balance of an account is delivered.
pub const CASH_ISIN: &str = "CASH";

/// An instrument identifier: `CASH`, or an ISIN of the form `^[A-Z]{2}[A-Z0-9]{9}[0-9]$`.
///
/// The check digit is deliberately not enforced: the real master carries `KR7195980002`,
/// whose check digit is wrong, and it must load ([`Isin::check_digit_ok`] tells).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Isin(String);

impl Isin {
    /// Accepts `CASH` or `^[A-Z]{2}[A-Z0-9]{9}[0-9]$`.
    pub fn parse(text: &str) -> Result<Self, FormatError> {
        let b = text.as_bytes();
        let well_formed = text == CASH_ISIN
            || (b.len() == 12
                && b[..2].iter().all(u8::is_ascii_uppercase)
                && b[2..11]
                    .iter()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
                && b[11].is_ascii_digit());
        if well_formed {
            Ok(Self(text.to_owned()))
        } else {
            Err(FormatError(format!(
                "ISIN must be CASH or 2 capital letters, 9 capitals or digits and a digit, got {}",
                echo(text)
            )))
        }
    }

    /// Whether this is the cash balance rather than an instrument.
    pub fn is_cash(&self) -> bool {
        self.0 == CASH_ISIN
    }

    /// Whether the last digit is the ISO 6166 (Luhn) check digit of the first eleven
    /// characters. Always true for `CASH`.
    pub fn check_digit_ok(&self) -> bool {
        if self.is_cash() {
            return true;
        }
        // Letters become two digits (A = 10 … Z = 35); then Luhn over the digit string.
        let mut digits = Vec::with_capacity(22);
        for c in self.0[..11].bytes() {
            if c.is_ascii_digit() {
                digits.push(c - b'0');
            } else {
                let v = c - b'A' + 10;
                digits.push(v / 10);
                digits.push(v % 10);
            }
        }
        let sum: u32 = digits
            .iter()
            .rev()
            .enumerate()
            .map(|(i, &d)| {
                let d = u32::from(d);
                if i % 2 == 0 {
                    let x = d * 2;
                    x / 10 + x % 10
                } else {
                    d
                }
            })
            .sum();
        let check = (10 - sum % 10) % 10;
        u32::from(self.0.as_bytes()[11] - b'0') == check
    }

    /// The identifier.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The identifier, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Isin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Computes a valid ISIN check digit for an 11-character prefix (used by the generator).
pub fn isin_with_check_digit(prefix: &str) -> Result<Isin, FormatError> {
    for d in b'0'..=b'9' {
        let candidate = Isin::parse(&format!("{prefix}{}", d as char))?;
        if candidate.check_digit_ok() {
            return Ok(candidate);
        }
    }
    Err(FormatError(format!("no check digit fits {prefix:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_numbers() {
        assert!(AccountNumber::parse("5736692368320").is_ok());
        assert!(AccountNumber::parse("123456").is_ok());
        assert!(AccountNumber::parse("12345").is_err());
        assert!(AccountNumber::parse("123456789012345678901").is_err());
        assert!(AccountNumber::parse("12345a").is_err());
        assert!(AccountNumber::parse("-123456").is_err());
        assert!(
            AccountNumber::parse("１２３４５６").is_err(),
            "full-width digits are not digits"
        );
    }

    #[test]
    fn won() {
        assert_eq!(Won::new(-1), None);
        assert_eq!(Won::new(5).unwrap().get(), 5);
        assert_eq!(
            Won::new(i64::MAX)
                .unwrap()
                .checked_add(Won::new(1).unwrap()),
            None
        );
        assert_eq!(Won::new(2).unwrap().to_string(), "2 won");
    }

    #[test]
    fn transfer_ids() {
        let id = TransferId::from_random([0xab; 16]);
        assert_eq!(id.as_str(), "ab".repeat(16));
        assert_eq!(TransferId::parse(&"AB".repeat(16)).unwrap(), id);
        for bad in ["", "1234", &"g".repeat(32), &"a".repeat(33), "transfer-1"] {
            assert!(TransferId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn text_rules() {
        assert_eq!(check_text("류영길", MAX_TEXT_BYTES), Ok(()));
        assert_eq!(
            check_text("미국S&P IT(합성) / 현금", MAX_TEXT_BYTES),
            Ok(())
        );
        assert_eq!(
            check_text("a\0b", MAX_TEXT_BYTES),
            Err(TextError::ForbiddenCharacter {
                character: '\0',
                position: 2
            })
        );
        for bad in [
            "x\ny",
            "x\ty",
            "\u{7f}",
            "\u{85}",
            "abc\u{202E}cba",
            "\u{2028}",
            "\u{feff}x",
        ] {
            assert!(check_text(bad, MAX_TEXT_BYTES).is_err(), "{bad:?}");
        }
        assert_eq!(
            check_text("가나", 5),
            Err(TextError::TooLong { len: 6, max: 5 })
        );
        assert!(check_text(&"a".repeat(MAX_TEXT_BYTES + 1), usize::MAX).is_err());
        let message = check_text("a\u{0}", 10).unwrap_err().to_string();
        assert!(message.contains("U+0000"), "{message}");
    }

    #[test]
    fn echoes_are_short() {
        assert_eq!(echo("12-34"), "\"12-34\"");
        let long = "9".repeat(3 << 20);
        let echoed = echo(&long);
        assert!(echoed.len() < 100, "{echoed}");
        assert!(echoed.ends_with(&format!("({} bytes in all)", 3 << 20)));
        assert_eq!(echo("a\0"), "\"a\\0\"");
        let error = AccountNumber::parse(&long).unwrap_err().to_string();
        assert!(error.len() < 160, "{error}");
    }

    #[test]
    fn isins() {
        assert!(Isin::parse("KR7360750004").unwrap().check_digit_ok());
        assert!(Isin::parse("US0378331005").unwrap().check_digit_ok());
        // Real data with a wrong check digit must still parse.
        let odd = Isin::parse("KR7195980002").unwrap();
        assert!(!odd.check_digit_ok());
        assert!(Isin::parse("CASH").unwrap().is_cash());
        for bad in [
            "cash",
            "KR736075000",
            "KR73607500045",
            "kr7360750004",
            "K17360750004",
            "KR736075000A",
        ] {
            assert!(Isin::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            isin_with_check_digit("KR736075000").unwrap().as_str(),
            "KR7360750004"
        );
    }
}
