//! Instants on the wire are `google.protobuf.Timestamp`; in storage they are microseconds
//! since the Unix epoch (`i64`), which both databases compare and index natively.

use std::time::{SystemTime, UNIX_EPOCH};

use prost_types::Timestamp;

/// Microseconds since the Unix epoch, or `None` when out of the `i64` range or malformed
/// (nanos outside 0..1e9).
pub fn to_micros(ts: &Timestamp) -> Option<i64> {
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return None;
    }
    ts.seconds
        .checked_mul(1_000_000)?
        .checked_add(i64::from(ts.nanos / 1_000))
}

/// The timestamp of a microsecond count.
pub fn from_micros(micros: i64) -> Timestamp {
    Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1_000) as i32,
    }
}

/// Now, in microseconds since the Unix epoch.
pub fn now_micros() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_micros()).unwrap_or(i64::MAX)
}

/// RFC 3339 text of a microsecond count, for messages and reports.
pub fn rfc3339(micros: i64) -> String {
    from_micros(micros).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for micros in [0, 1, -1, 1_700_000_000_123_456, -1_700_000_000_000_001] {
            assert_eq!(to_micros(&from_micros(micros)), Some(micros));
        }
        assert_eq!(
            to_micros(&Timestamp {
                seconds: i64::MAX,
                nanos: 0
            }),
            None
        );
        assert_eq!(
            to_micros(&Timestamp {
                seconds: 0,
                nanos: -1
            }),
            None
        );
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
