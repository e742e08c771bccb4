//! Points in time as the tables store them: microseconds since the Unix
//! epoch, read from ISO-8601 text or epoch integers.

use std::fmt;

/// A point in time, in microseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// 2009-01-01T00:00:00Z: every valid record is strictly after it.
    pub const EARLIEST_EXCLUSIVE: Timestamp = Timestamp(1_230_768_000_000_000);

    /// The earliest instant a PostgreSQL `timestamptz` holds, 4714-11-24
    /// BC 00:00 UTC. Every later microsecond an i64 counts from 1970 is
    /// within its range (which ends in 294276 AD, past an i64's reach).
    pub const EARLIEST_STORABLE: Timestamp = Timestamp(-210_866_803_200_000_000);

    pub fn from_millis(ms: i64) -> Option<Timestamp> {
        ms.checked_mul(1000).map(Timestamp)
    }

    pub fn micros(self) -> i64 {
        self.0
    }

    /// Microseconds since 2000-01-01, PostgreSQL's epoch. Exact from
    /// [`Timestamp::EARLIEST_STORABLE`] on, which validation ensures; never
    /// wraps below it.
    pub fn postgres_micros(self) -> i64 {
        const UNIX_TO_POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;
        self.0.saturating_sub(UNIX_TO_POSTGRES_EPOCH_MICROS)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match chrono::DateTime::from_timestamp_micros(self.0) {
            Some(t) => write!(
                f,
                "{}",
                t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            ),
            None => write!(f, "{}us", self.0),
        }
    }
}

/// Parses an ISO-8601 (RFC 3339) timestamp that carries an offset, to the
/// microsecond; finer digits are rounded to the nearest microsecond.
pub fn parse_iso8601(text: &str) -> Result<Timestamp, String> {
    let t = chrono::DateTime::parse_from_rfc3339(text).map_err(|e| {
        format!(
            "not an ISO-8601 timestamp with an offset ({e}): expected e.g. 2026-11-22T18:00:00.123Z"
        )
    })?;
    let nanos = i64::from(t.timestamp_subsec_nanos());
    let micros = t
        .timestamp()
        .checked_mul(1_000_000)
        .and_then(|s| s.checked_add((nanos + 500) / 1000))
        .ok_or_else(|| "timestamp out of range".to_string())?;
    Ok(Timestamp(micros))
}
