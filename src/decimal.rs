//! Exact decimals: parsed from the text a producer sent, compared for the
//! validation rules, and written as PostgreSQL `NUMERIC` in binary form.
//!
//! No value ever passes through `f64`: a decimal is kept as its digits and
//! its scale (the number of digits after the point, as sent), so `"42.10"`
//! is stored as `42.10` and a 30-digit number keeps all 30 digits.

use std::cell::Cell;
use std::cmp::Ordering;
use std::fmt;

use compact_str::{CompactString, ToCompactString};

/// PostgreSQL's own limits for `NUMERIC`: digits before the point and after it.
const MAX_INTEGER_DIGITS: usize = 131_072;
const MAX_SCALE: usize = 16_383;

/// The default of `max_decimal_digits`.
pub const DEFAULT_MAX_DIGITS: usize = 1_000;

thread_local! {
    /// The most digits a decimal parsed on this thread may hold (see
    /// [`with_max_digits`]). A thread-local because decimals are parsed deep
    /// inside the validate stage's value readers, which take no context.
    static MAX_DIGITS: Cell<usize> = const { Cell::new(DEFAULT_MAX_DIGITS) };
}

/// Runs `f` with decimals bounded to `max` digits as stored (integer digits
/// plus scale, after the exponent's shift): `1e131071` is six bytes in a
/// message and 131,072 digits in memory, so the bound is checked before any
/// digit is copied.
pub fn with_max_digits<T>(max: usize, f: impl FnOnce() -> T) -> T {
    let before = MAX_DIGITS.replace(max);
    let result = f();
    MAX_DIGITS.set(before);
    result
}

/// An exact decimal number.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Decimal {
    /// True for a value below zero (never for zero itself).
    negative: bool,
    /// The integer digits without leading zeros, then exactly `scale`
    /// fraction digits: ASCII `0`-`9` only.
    digits: CompactString,
    /// How many of `digits` stand after the decimal point.
    scale: u32,
}

/// Why a text is not a decimal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    #[error("not a decimal number: {0}")]
    Syntax(&'static str),
    #[error("decimal has more digits than PostgreSQL NUMERIC holds")]
    TooLarge,
    #[error("decimal has {digits} digits, more than max_decimal_digits ({max})")]
    TooManyDigits { digits: usize, max: usize },
}

impl Decimal {
    /// Parses a decimal: optional sign, digits with an optional fraction, an
    /// optional exponent (`1.5e-3`). `NaN`, `Infinity` and anything else are refused.
    /// The scale kept is the fraction digits sent, shifted by the exponent.
    pub fn parse(text: &str) -> Result<Decimal, DecimalError> {
        let bytes = text.as_bytes();
        let mut i = 0;
        let mut negative = false;
        if let Some(&sign) = bytes.first()
            && (sign == b'-' || sign == b'+')
        {
            negative = sign == b'-';
            i = 1;
        }
        let int_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let int_part = &text[int_start..i];
        let mut frac_part = "";
        if i < bytes.len() && bytes[i] == b'.' {
            i += 1;
            let frac_start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            frac_part = &text[frac_start..i];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(DecimalError::Syntax("no digits"));
        }
        let mut exponent: i64 = 0;
        if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
            i += 1;
            let mut exp_negative = false;
            if i < bytes.len() && (bytes[i] == b'-' || bytes[i] == b'+') {
                exp_negative = bytes[i] == b'-';
                i += 1;
            }
            let exp_start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                // Saturate: anything this large is refused below anyway.
                exponent = (exponent * 10 + i64::from(bytes[i] - b'0')).min(1 << 40);
                i += 1;
            }
            if i == exp_start {
                return Err(DecimalError::Syntax("exponent without digits"));
            }
            if exp_negative {
                exponent = -exponent;
            }
        }
        if i != bytes.len() {
            return Err(DecimalError::Syntax("unexpected character"));
        }

        // Shift the point by the exponent: the digits stay, the scale moves.
        let sent_scale = frac_part.len() as i64;
        let scale = sent_scale - exponent;
        let all_digits = int_part.len() + frac_part.len();
        let (scale, pad) = if scale < 0 {
            (0usize, (-scale) as usize)
        } else {
            (scale as usize, 0usize)
        };
        if scale > MAX_SCALE || pad > MAX_INTEGER_DIGITS {
            return Err(DecimalError::TooLarge);
        }
        let stored = (all_digits + pad).max(scale);
        let max = MAX_DIGITS.get();
        if stored > max {
            return Err(DecimalError::TooManyDigits {
                digits: stored,
                max,
            });
        }
        let mut digits = CompactString::with_capacity(all_digits + pad + scale);
        digits.push_str(int_part);
        digits.push_str(frac_part);
        digits.extend(std::iter::repeat_n('0', pad));
        // When the scale exceeds the digits sent (1e-5), zeros lead the fraction.
        if scale > digits.len() {
            let missing = scale - digits.len();
            digits.insert_str(0, &"0".repeat(missing));
        }
        // Drop leading zeros of the integer part only.
        let int_len = digits.len() - scale;
        let leading = digits[..int_len].bytes().take_while(|&b| b == b'0').count();
        digits.drain(..leading);
        if digits.len() - scale > MAX_INTEGER_DIGITS {
            return Err(DecimalError::TooLarge);
        }
        let is_zero = digits.bytes().all(|b| b == b'0');
        Ok(Decimal {
            negative: negative && !is_zero,
            digits,
            scale: scale as u32,
        })
    }

    /// Builds a decimal from an integer (used for the bounds of the rules).
    pub fn from_i64(value: i64) -> Decimal {
        let digits = value.unsigned_abs().to_compact_string();
        let digits = if digits == "0" {
            CompactString::default()
        } else {
            digits
        };
        Decimal {
            negative: value < 0,
            digits,
            scale: 0,
        }
    }

    /// True when the value is zero (at any scale).
    pub fn is_zero(&self) -> bool {
        self.digits.bytes().all(|b| b == b'0')
    }

    /// True when the value is below zero.
    pub fn is_negative(&self) -> bool {
        self.negative
    }

    /// The number of fraction digits kept.
    pub fn scale(&self) -> u32 {
        self.scale
    }

    fn integer_digits(&self) -> &str {
        &self.digits[..self.digits.len() - self.scale as usize]
    }

    fn fraction_digits(&self) -> &str {
        &self.digits[self.digits.len() - self.scale as usize..]
    }

    /// Compares magnitudes, ignoring sign.
    fn cmp_magnitude(&self, other: &Decimal) -> Ordering {
        let (a_int, b_int) = (self.integer_digits(), other.integer_digits());
        a_int
            .len()
            .cmp(&b_int.len())
            .then_with(|| a_int.cmp(b_int))
            .then_with(|| {
                let (a, b) = (
                    self.fraction_digits().as_bytes(),
                    other.fraction_digits().as_bytes(),
                );
                let n = a.len().max(b.len());
                (0..n)
                    .map(|k| {
                        let x = a.get(k).copied().unwrap_or(b'0');
                        let y = b.get(k).copied().unwrap_or(b'0');
                        x.cmp(&y)
                    })
                    .find(|o| o.is_ne())
                    .unwrap_or(Ordering::Equal)
            })
    }

    /// Compares values numerically (`1.50` equals `1.5`).
    pub fn cmp_value(&self, other: &Decimal) -> Ordering {
        match (self.negative, other.negative) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => self.cmp_magnitude(other),
            (true, true) => other.cmp_magnitude(self),
        }
    }

    /// Appends the value in PostgreSQL's binary `NUMERIC` format:
    /// ndigits, weight, sign, dscale (all 16 bit) and base-10000 digits.
    pub fn write_numeric(&self, out: &mut Vec<u8>) {
        let int = self.integer_digits().as_bytes();
        let frac = self.fraction_digits().as_bytes();
        // Integer groups of four, aligned from the point leftwards.
        let int_groups = int.len().div_ceil(4);
        let frac_groups = frac.len().div_ceil(4);
        // On the stack up to 64 digits: this runs for every numeric cell.
        let mut groups: smallvec::SmallVec<[i16; 16]> =
            smallvec::SmallVec::with_capacity(int_groups + frac_groups);
        let first = int.len() - (int_groups.saturating_sub(1)) * 4;
        let mut start = 0;
        for g in 0..int_groups {
            let end = if g == 0 { first } else { start + 4 };
            groups.push(group_value(&int[start..end]));
            start = end;
        }
        for chunk in frac.chunks(4) {
            let mut value = group_value(chunk);
            for _ in chunk.len()..4 {
                value *= 10;
            }
            groups.push(value);
        }
        // Trim zero groups at both ends; the weight tells where the point is.
        let mut weight = int_groups as i32 - 1;
        let lead = groups.iter().take_while(|&&g| g == 0).count();
        let trail = groups[lead..].iter().rev().take_while(|&&g| g == 0).count();
        let kept = &groups[lead..groups.len() - trail];
        weight -= lead as i32;
        if kept.is_empty() {
            weight = 0;
        }
        out.extend_from_slice(&(kept.len() as i16).to_be_bytes());
        out.extend_from_slice(&(weight as i16).to_be_bytes());
        let sign: u16 = if self.negative { 0x4000 } else { 0x0000 };
        out.extend_from_slice(&sign.to_be_bytes());
        out.extend_from_slice(&(self.scale as u16).to_be_bytes());
        for g in kept {
            out.extend_from_slice(&g.to_be_bytes());
        }
    }
}

fn group_value(digits: &[u8]) -> i16 {
    digits
        .iter()
        .fold(0i16, |acc, &d| acc * 10 + i16::from(d - b'0'))
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.negative {
            f.write_str("-")?;
        }
        let int = self.integer_digits();
        f.write_str(if int.is_empty() { "0" } else { int })?;
        if self.scale > 0 {
            write!(f, ".{}", self.fraction_digits())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Decimal({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::parse(s).unwrap()
    }

    #[test]
    fn keeps_digits_and_scale_as_sent() {
        assert_eq!(d("42.10").to_string(), "42.10");
        assert_eq!(d("67500.12345678").to_string(), "67500.12345678");
        assert_eq!(
            d("12345678901234567890.123456789012").to_string(),
            "12345678901234567890.123456789012"
        );
        assert_eq!(d("007").to_string(), "7");
        assert_eq!(d("-0.0").to_string(), "0.0");
        assert_eq!(d(".5").to_string(), "0.5");
        assert_eq!(d("5.").to_string(), "5");
        assert_eq!(d("+3").to_string(), "3");
    }

    #[test]
    fn exponent_moves_the_point() {
        assert_eq!(d("1.5e3").to_string(), "1500");
        assert_eq!(d("1.5E-3").to_string(), "0.0015");
        assert_eq!(d("1e-5").to_string(), "0.00001");
        assert_eq!(d("-2.50e1").to_string(), "-25.0");
        assert_eq!(d("0e10").to_string(), "0");
    }

    #[test]
    fn refuses_what_is_not_a_finite_decimal() {
        for bad in [
            "", "-", ".", "NaN", "Infinity", "-inf", "1e", "1.2.3", "0x10", " 1", "1 ", "1e+",
        ] {
            assert!(Decimal::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(
            Decimal::parse("1e999999999999"),
            Err(DecimalError::TooLarge)
        );
        assert_eq!(Decimal::parse("1e-20000"), Err(DecimalError::TooLarge));
    }

    #[test]
    fn digits_as_stored_are_bounded_before_they_are_copied() {
        assert_eq!(
            Decimal::parse("1e131071"),
            Err(DecimalError::TooManyDigits {
                digits: 131_072,
                max: DEFAULT_MAX_DIGITS
            })
        );
        // The exponent's shift counts, either way, and so do digits sent.
        assert!(Decimal::parse("1e999").is_ok());
        assert!(Decimal::parse("1e1000").is_err());
        assert!(Decimal::parse("1e-1000").is_ok());
        assert!(Decimal::parse("1e-1001").is_err());
        assert!(Decimal::parse(&"7".repeat(1_001)).is_err());
        let reason = with_max_digits(5, || Decimal::parse("123.456"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            reason,
            "decimal has 6 digits, more than max_decimal_digits (5)"
        );
        // The bound is the caller's only while it runs.
        assert!(Decimal::parse("123.456").is_ok());
        let digits = 131_072;
        let bound = with_max_digits(digits, || Decimal::parse("1e131071"));
        assert_eq!(bound.map(|d| d.to_string().len()), Ok(digits));
    }

    #[test]
    fn compares_by_value() {
        assert_eq!(d("1.50").cmp_value(&d("1.5")), Ordering::Equal);
        assert_eq!(d("-1").cmp_value(&d("0")), Ordering::Less);
        assert_eq!(
            d("100.0001").cmp_value(&Decimal::from_i64(100)),
            Ordering::Greater
        );
        assert_eq!(
            d("99.9999").cmp_value(&Decimal::from_i64(100)),
            Ordering::Less
        );
        assert_eq!(d("-2").cmp_value(&d("-10")), Ordering::Greater);
        assert_eq!(d("0.00").cmp_value(&Decimal::from_i64(0)), Ordering::Equal);
        assert!(d("0.000").is_zero() && !d("-0.000").is_negative());
    }

    fn numeric(s: &str) -> (i16, i16, u16, u16, Vec<i16>) {
        let mut out = Vec::new();
        d(s).write_numeric(&mut out);
        let word = |k: usize| i16::from_be_bytes([out[2 * k], out[2 * k + 1]]);
        let n = word(0) as usize;
        (
            word(0),
            word(1),
            word(2) as u16,
            word(3) as u16,
            (0..n).map(|k| word(4 + k)).collect(),
        )
    }

    #[test]
    fn binary_numeric_matches_postgresql_layout() {
        assert_eq!(
            numeric("67500.12345678"),
            (4, 1, 0, 8, vec![6, 7500, 1234, 5678])
        );
        assert_eq!(numeric("42.10"), (2, 0, 0, 2, vec![42, 1000]));
        assert_eq!(numeric("-0.0015"), (1, -1, 0x4000, 4, vec![15]));
        assert_eq!(numeric("0"), (0, 0, 0, 0, vec![]));
        assert_eq!(numeric("10000"), (1, 1, 0, 0, vec![1]));
        assert_eq!(numeric("0.00001"), (1, -2, 0, 5, vec![1000]));
    }
}
