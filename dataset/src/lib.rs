//! The daily delivery as the dataset contract defines it, shared by the side that reads it
//! (the loader) and the side that writes it (the synthetic day generator): the three files and
//! their names, the columns of each with their Korean headers and English aliases, and the
//! stable names of the rules a row can be rejected by.
//!
//! Only names live here. The rules themselves are the loader's (`loader::clean`); the
//! identifier and text rules both services also apply are the wire crate's
//! (`invest_proto::ids`).

use std::fmt;

use serde::{Serialize, Serializer};

/// Why a row was rejected. The string forms ([`Rule::as_str`]) are stable: reports and
/// dashboards key on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    /// Reader rule (ours): the line is longer than the loader's `--max-line-bytes`; its bytes beyond the
    /// limit were skipped unread.
    LineTooLong,
    /// Reader rule (ours): a quoted field opens on the line and does not close on it. A
    /// field may not span lines; reading resumes at the next line.
    UnclosedQuote,
    /// The row has a different number of fields than the header.
    FieldCount,
    /// A field of the row is not valid UTF-8.
    InvalidUtf8,
    /// Text rule (ours): a field is longer than the loader's `--max-field-bytes` after trimming.
    FieldTooLong,
    /// Text rule (ours): a field holds a control character (NUL, tab, CR, LF, DEL, C1), a
    /// line or paragraph separator, a bidirectional control or a byte-order mark
    /// (`invest_proto::ids::check_text`).
    ControlCharacter,
    /// A required text field is empty after trimming.
    EmptyField,
    /// An instrument's ISIN is neither `CASH` nor `^[A-Z]{2}[A-Z0-9]{9}[0-9]$`.
    BadIsin,
    /// An account number is not `^[0-9]{6,20}$`.
    BadAccountNumber,
    /// A holding names an ISIN that is malformed or not among the surviving instruments.
    UnknownIsin,
    /// A price, quantity or principal is not `^[0-9]+$`.
    BadNumber,
    /// A price, quantity or principal is all digits but does not fit in an `i64`.
    NumberOverflow,
    /// `current_price * quantity` does not fit in an `i64`.
    ValuationOverflow,
    /// Set rule 1: the row disagrees with the strict majority of its account's rows on
    /// (customer_name, brokerage, account_name).
    AttributesMinority,
    /// Set rule 1: no combination of (customer_name, brokerage, account_name) holds a strict
    /// majority of the account's rows.
    AttributesNoMajority,
    /// Set rule 2: another row has the same key but different content.
    DuplicateConflict,
    /// Set rule 3: a holding of an account without a valid principal row.
    AccountWithoutPrincipal,
    /// Set rule 3: a principal row of an account without a valid holding.
    AccountWithoutHoldings,
    /// Our extension: the account's valuations add up to more than `i64::MAX`.
    TotalAssetsOverflow,
    /// Our extension: the account has more rows than the loader's `--max-holdings-per-account` in the
    /// holdings file (or in the principal file); all of its rows are rejected.
    TooManyHoldings,
}

impl Rule {
    /// Every rule: the row rules in the order they apply, then the set rules.
    pub const ALL: [Rule; 20] = [
        Rule::LineTooLong,
        Rule::UnclosedQuote,
        Rule::FieldCount,
        Rule::InvalidUtf8,
        Rule::FieldTooLong,
        Rule::ControlCharacter,
        Rule::EmptyField,
        Rule::BadIsin,
        Rule::BadAccountNumber,
        Rule::UnknownIsin,
        Rule::BadNumber,
        Rule::NumberOverflow,
        Rule::ValuationOverflow,
        Rule::AttributesMinority,
        Rule::AttributesNoMajority,
        Rule::DuplicateConflict,
        Rule::AccountWithoutPrincipal,
        Rule::AccountWithoutHoldings,
        Rule::TotalAssetsOverflow,
        Rule::TooManyHoldings,
    ];

    /// The stable identifier used in reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            Rule::LineTooLong => "line_too_long",
            Rule::UnclosedQuote => "unclosed_quote",
            Rule::FieldCount => "field_count",
            Rule::InvalidUtf8 => "invalid_utf8",
            Rule::FieldTooLong => "field_too_long",
            Rule::ControlCharacter => "control_character",
            Rule::EmptyField => "empty_field",
            Rule::BadIsin => "bad_isin",
            Rule::BadAccountNumber => "bad_account_number",
            Rule::UnknownIsin => "unknown_isin",
            Rule::BadNumber => "bad_number",
            Rule::NumberOverflow => "number_overflow",
            Rule::ValuationOverflow => "valuation_overflow",
            Rule::AttributesMinority => "attributes_minority",
            Rule::AttributesNoMajority => "attributes_no_majority",
            Rule::DuplicateConflict => "duplicate_conflict",
            Rule::AccountWithoutPrincipal => "account_without_principal",
            Rule::AccountWithoutHoldings => "account_without_holdings",
            Rule::TotalAssetsOverflow => "total_assets_overflow",
            Rule::TooManyHoldings => "too_many_holdings",
        }
    }

    /// The rule with this identifier, if any.
    pub fn from_name(name: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|rule| rule.as_str() == name)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Rule {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// The three files of a delivery, in the order they are settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FileKind {
    /// `asset_group_info_set.csv`: the instrument master.
    Instruments,
    /// `account_basic_info_set.csv`: one principal row per account.
    Principal,
    /// `account_asset_info_set.csv`: the holdings.
    Holdings,
}

impl FileKind {
    /// The files in settling order.
    pub const ALL: [FileKind; 3] = [
        FileKind::Instruments,
        FileKind::Principal,
        FileKind::Holdings,
    ];

    /// The file's name in the delivery folder.
    pub const fn file_name(self) -> &'static str {
        match self {
            FileKind::Instruments => "asset_group_info_set.csv",
            FileKind::Principal => "account_basic_info_set.csv",
            FileKind::Holdings => "account_asset_info_set.csv",
        }
    }

    /// The file with this name in the delivery folder, if any.
    pub fn from_file_name(name: &str) -> Option<FileKind> {
        FileKind::ALL
            .into_iter()
            .find(|kind| kind.file_name() == name)
    }

    /// The columns the rules read, in `DATASET.md` order (the order checks run in).
    pub const fn columns(self) -> &'static [Column] {
        match self {
            FileKind::Instruments => &[Column::Name, Column::Isin, Column::AssetGroup],
            FileKind::Principal => &[Column::AccountNumber, Column::Principal],
            FileKind::Holdings => &[
                Column::CustomerName,
                Column::Brokerage,
                Column::AccountNumber,
                Column::AccountName,
                Column::Isin,
                Column::CurrentPrice,
                Column::Quantity,
            ],
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.file_name())
    }
}

impl Serialize for FileKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.file_name())
    }
}

/// A column the rules read; displayed as "Korean header (english alias)" so that an operator
/// can find it whichever header the file uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Column {
    /// 종목명 `name`.
    Name,
    /// ISIN `isin`.
    Isin,
    /// 자산그룹 `asset_group`.
    AssetGroup,
    /// 고객이름 `customer_name`.
    CustomerName,
    /// 증권사 `brokerage`.
    Brokerage,
    /// 계좌번호 `account_number`.
    AccountNumber,
    /// 계좌명 `account_name`.
    AccountName,
    /// 현재가 `current_price`.
    CurrentPrice,
    /// 보유수량 `quantity`.
    Quantity,
    /// 투자원금 `principal`.
    Principal,
}

impl Column {
    /// The Korean header of the delivery.
    pub const fn korean(self) -> &'static str {
        match self {
            Column::Name => "종목명",
            Column::Isin => "ISIN",
            Column::AssetGroup => "자산그룹",
            Column::CustomerName => "고객이름",
            Column::Brokerage => "증권사",
            Column::AccountNumber => "계좌번호",
            Column::AccountName => "계좌명",
            Column::CurrentPrice => "현재가",
            Column::Quantity => "보유수량",
            Column::Principal => "투자원금",
        }
    }

    /// The English alias (matched case-insensitively).
    pub const fn english(self) -> &'static str {
        match self {
            Column::Name => "name",
            Column::Isin => "isin",
            Column::AssetGroup => "asset_group",
            Column::CustomerName => "customer_name",
            Column::Brokerage => "brokerage",
            Column::AccountNumber => "account_number",
            Column::AccountName => "account_name",
            Column::CurrentPrice => "current_price",
            Column::Quantity => "quantity",
            Column::Principal => "principal",
        }
    }

    /// Whether a (trimmed) header name designates this column.
    pub fn matches(self, header: &str) -> bool {
        header == self.korean() || header.eq_ignore_ascii_case(self.english())
    }
}

impl fmt::Display for Column {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.korean().eq_ignore_ascii_case(self.english()) {
            f.write_str(self.korean())
        } else {
            write!(f, "{} ({})", self.korean(), self.english())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    #[test]
    fn rule_names_are_stable_and_serialise_as_such() {
        let names: BTreeSet<&str> = Rule::ALL.iter().map(|rule| rule.as_str()).collect();
        assert_eq!(names.len(), Rule::ALL.len());
        for rule in Rule::ALL {
            assert_eq!(
                serde_json::to_value(rule).unwrap(),
                serde_json::json!(rule.as_str())
            );
            assert_eq!(Rule::from_name(rule.as_str()), Some(rule));
            assert_eq!(rule.to_string(), rule.as_str());
        }
        assert_eq!(Rule::TotalAssetsOverflow.as_str(), "total_assets_overflow");
        assert_eq!(Rule::InvalidUtf8.as_str(), "invalid_utf8");
        let map: BTreeMap<Rule, u64> = [(Rule::BadNumber, 2)].into();
        assert_eq!(serde_json::to_string(&map).unwrap(), r#"{"bad_number":2}"#);
    }

    #[test]
    fn files_are_named_as_delivered() {
        for kind in FileKind::ALL {
            assert_eq!(FileKind::from_file_name(kind.file_name()), Some(kind));
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::json!(kind.file_name())
            );
        }
        assert_eq!(FileKind::Holdings.to_string(), "account_asset_info_set.csv");
        assert_eq!(FileKind::from_file_name("ACCOUNT_ASSET_INFO_SET.CSV"), None);
    }

    #[test]
    fn columns_match_korean_and_english_case_insensitively() {
        assert!(Column::CurrentPrice.matches("현재가"));
        assert!(Column::CurrentPrice.matches("Current_Price"));
        assert!(!Column::CurrentPrice.matches("current price"));
        assert!(Column::Isin.matches("ISIN") && Column::Isin.matches("isin"));
        assert_eq!(Column::Quantity.to_string(), "보유수량 (quantity)");
        assert_eq!(Column::Isin.to_string(), "ISIN");
    }
}
