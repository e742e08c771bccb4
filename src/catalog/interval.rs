//! The intervals a table description names (a chunk's width, an age for
//! compression or retention, a candle's bucket, a refresh's offsets), read
//! when the configuration loads so that a typo is named by its key before
//! anything reaches the database.

use std::fmt;

/// A PostgreSQL interval written as `<n> <unit>` pairs: `7 days`,
/// `1 hour 30 minutes`. Units: seconds, minutes, hours, days, weeks, months,
/// years (singular or plural).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interval {
    /// As written (trimmed): what PostgreSQL is sent, as a literal.
    text: String,
    months: i64,
    micros: i64,
}

const SECOND: i64 = 1_000_000;
const DAY: i64 = 86_400 * SECOND;

impl Interval {
    /// Reads `text`; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Interval, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        if words.is_empty() || !words.len().is_multiple_of(2) {
            return Err(format!(
                "{text:?} is not an interval: write `<number> <unit>` pairs, e.g. \"7 days\" or \"1 hour 30 minutes\""
            ));
        }
        let (mut months, mut micros) = (0i64, 0i64);
        for pair in words.chunks(2) {
            let n: i64 = pair[0]
                .parse()
                .ok()
                .filter(|n| *n > 0 && *n <= 1_000_000)
                .ok_or_else(|| {
                    format!(
                        "{text:?}: {:?} is not a whole number from 1 to 1000000",
                        pair[0]
                    )
                })?;
            let unit = pair[1].to_ascii_lowercase();
            let unit = unit.strip_suffix('s').unwrap_or(&unit);
            match unit {
                "second" => micros += n * SECOND,
                "minute" => micros += n * 60 * SECOND,
                "hour" => micros += n * 3_600 * SECOND,
                "day" => micros += n * DAY,
                "week" => micros += n * 7 * DAY,
                "month" => months += n,
                "year" => months += 12 * n,
                _ => {
                    return Err(format!(
                        "{text:?}: {:?} is not a unit (seconds, minutes, hours, days, weeks, months, years)",
                        pair[1]
                    ));
                }
            }
        }
        Ok(Interval {
            text: words.join(" "),
            months,
            micros,
        })
    }

    /// Its length in microseconds as PostgreSQL's `extract(epoch from …)`
    /// counts it (a year 365.25 days, a remaining month 30): how it is
    /// compared with what the database holds.
    pub fn micros(&self) -> i64 {
        (self.months / 12) * 31_557_600 * SECOND + (self.months % 12) * 30 * DAY + self.micros
    }

    /// `INTERVAL '<text>'`.
    pub fn sql(&self) -> String {
        format!("INTERVAL {}", super::sql::literal(&self.text))
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_read_as_postgresql_counts_them() {
        assert_eq!(Interval::parse("7 days").unwrap().micros(), 7 * DAY);
        assert_eq!(
            Interval::parse(" 1 hour  30 Minutes ").unwrap().to_string(),
            "1 hour 30 Minutes"
        );
        assert_eq!(
            Interval::parse("1 hour 30 minutes").unwrap().micros(),
            5_400 * SECOND
        );
        // extract(epoch from interval '1 year 1 month') = 34149600
        assert_eq!(
            Interval::parse("1 year 1 month").unwrap().micros(),
            34_149_600 * SECOND
        );
        assert_eq!(
            Interval::parse("1 week").unwrap().sql(),
            "INTERVAL '1 week'"
        );
    }

    #[test]
    fn a_malformed_interval_is_named() {
        for bad in [
            "",
            "7",
            "days",
            "7 dayz",
            "-1 day",
            "1.5 hours",
            "0 days",
            "7 days 3",
        ] {
            let e = Interval::parse(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
    }
}
