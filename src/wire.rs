//! The records as producers put them on the wire: JSON field sets and the
//! bincode layouts of the contract.
//!
//! JSON fields are all optional here, so that a missing required field is
//! reported by validation with its name, and an envelope can fill `source`
//! and `attribution` in before that. The bincode structs are the contract's
//! layouts field for field; `timesink produce` encodes with them too.

use std::borrow::Cow;

use compact_str::CompactString;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde::de::{self, Deserializer};
use serde_json::value::RawValue;

use crate::decimal::Decimal;
use crate::record::{DataType, Timestamp};

/// A decimal as JSON carries it: a number (exponent allowed) or a string,
/// read from the raw text so no digit is lost to `f64`.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonDecimal(pub Decimal);

impl<'de> Deserialize<'de> for JsonDecimal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw: &RawValue = Deserialize::deserialize(deserializer)?;
        let text = raw.get();
        let digits: Cow<'_, str> = if text.starts_with('"') {
            string_text(text).map_err(de::Error::custom)?
        } else if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
            Cow::Borrowed(text)
        } else {
            return Err(de::Error::custom(format_args!(
                "expected a decimal number or string, found {}",
                json_kind(text)
            )));
        };
        Decimal::parse(&digits)
            .map(JsonDecimal)
            .map_err(|e| de::Error::custom(format_args!("{e}")))
    }
}

/// The text of a JSON string, given as its raw JSON (quotes included). Most
/// carry no escape: their text is what stands between the quotes, with no
/// second parse (serde_json has already checked the string).
fn string_text(raw: &str) -> Result<Cow<'_, str>, serde_json::Error> {
    match raw.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(inner) if !inner.contains('\\') => Ok(Cow::Borrowed(inner)),
        _ => serde_json::from_str(raw),
    }
}

/// A timestamp as JSON carries it: an ISO-8601 string with an offset, or
/// an integer of epoch milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JsonTime(pub Timestamp);

impl<'de> Deserialize<'de> for JsonTime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw: &RawValue = Deserialize::deserialize(deserializer)?;
        let text = raw.get();
        if text.starts_with('"') {
            let s = string_text(text).map_err(de::Error::custom)?;
            parse_iso8601(&s).map(JsonTime).map_err(de::Error::custom)
        } else if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
            let ms: i64 = text.parse().map_err(|_| {
                de::Error::custom("expected epoch milliseconds as an integer or an ISO-8601 string")
            })?;
            Timestamp::from_millis(ms)
                .map(JsonTime)
                .ok_or_else(|| de::Error::custom("epoch milliseconds out of range"))
        } else {
            Err(de::Error::custom(format_args!(
                "expected an ISO-8601 string or epoch milliseconds, found {}",
                json_kind(text)
            )))
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

fn json_kind(text: &str) -> &'static str {
    match text.as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b't') | Some(b'f') => "a boolean",
        Some(b'n') => "null",
        Some(b'"') => "a string",
        _ => "a number",
    }
}

/// The fields of a price record, as sent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PriceFields {
    pub coin_id: Option<CompactString>,
    pub symbol: Option<CompactString>,
    pub exchange_id: Option<CompactString>,
    pub usd_price: Option<JsonDecimal>,
    pub btc_price: Option<JsonDecimal>,
    pub market_cap: Option<JsonDecimal>,
    pub volume_24h: Option<JsonDecimal>,
    pub change_24h: Option<JsonDecimal>,
    pub last_updated: Option<JsonTime>,
    pub source: Option<CompactString>,
    pub attribution: Option<CompactString>,
    /// Envelope keys, read only to tell an envelope from this record in
    /// one pass (see `decode`), and to refuse them twice as the probe does.
    #[serde(rename = "payload", default)]
    pub envelope_payload: Option<IgnoredAny>,
    #[serde(rename = "dataType", default)]
    pub envelope_data_type: Option<IgnoredAny>,
    #[serde(rename = "metadata", default)]
    pub envelope_metadata: Option<IgnoredAny>,
}

/// The fields of an OHLCV record, as sent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OhlcvFields {
    pub coin_id: Option<CompactString>,
    pub symbol: Option<CompactString>,
    pub exchange_id: Option<CompactString>,
    pub timeframe: Option<CompactString>,
    pub timestamp: Option<JsonTime>,
    pub open_price: Option<JsonDecimal>,
    pub high_price: Option<JsonDecimal>,
    pub low_price: Option<JsonDecimal>,
    pub close_price: Option<JsonDecimal>,
    pub volume: Option<JsonDecimal>,
    pub trades: Option<u64>,
    pub source: Option<CompactString>,
    pub attribution: Option<CompactString>,
    /// Envelope keys, read only to tell an envelope from this record in
    /// one pass (see `decode`), and to refuse them twice as the probe does.
    #[serde(rename = "payload", default)]
    pub envelope_payload: Option<IgnoredAny>,
    #[serde(rename = "dataType", default)]
    pub envelope_data_type: Option<IgnoredAny>,
    #[serde(rename = "metadata", default)]
    pub envelope_metadata: Option<IgnoredAny>,
}

/// The fields of a market analytics record, as sent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalyticsFields {
    pub timestamp: Option<JsonTime>,
    pub total_market_cap: Option<JsonDecimal>,
    pub total_volume: Option<JsonDecimal>,
    pub btc_dominance: Option<JsonDecimal>,
    pub eth_dominance: Option<JsonDecimal>,
    pub active_cryptocurrencies: Option<u32>,
    pub active_exchanges: Option<u32>,
    pub market_cap_change_24h: Option<JsonDecimal>,
    pub source: Option<CompactString>,
    pub attribution: Option<CompactString>,
    /// Envelope keys, read only to tell an envelope from this record in
    /// one pass (see `decode`), and to refuse them twice as the probe does.
    #[serde(rename = "payload", default)]
    pub envelope_payload: Option<IgnoredAny>,
    #[serde(rename = "dataType", default)]
    pub envelope_data_type: Option<IgnoredAny>,
    #[serde(rename = "metadata", default)]
    pub envelope_metadata: Option<IgnoredAny>,
}

/// The fields of a level-1 quote, as sent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Level1Fields {
    pub symbol: Option<CompactString>,
    pub exchange_id: Option<CompactString>,
    pub best_bid: Option<JsonDecimal>,
    pub best_ask: Option<JsonDecimal>,
    pub bid_size: Option<JsonDecimal>,
    pub ask_size: Option<JsonDecimal>,
    pub timestamp: Option<JsonTime>,
    pub sequence: Option<u64>,
    pub source: Option<CompactString>,
    /// Envelope keys, read only to tell an envelope from this record in
    /// one pass (see `decode`), and to refuse them twice as the probe does.
    #[serde(rename = "payload", default)]
    pub envelope_payload: Option<IgnoredAny>,
    #[serde(rename = "dataType", default)]
    pub envelope_data_type: Option<IgnoredAny>,
    #[serde(rename = "metadata", default)]
    pub envelope_metadata: Option<IgnoredAny>,
}

/// One decoded record of any type, not yet validated.
#[derive(Debug, Clone)]
pub enum Fields {
    Price(PriceFields),
    Ohlcv(OhlcvFields),
    Analytics(AnalyticsFields),
    Level1(Level1Fields),
}

impl Fields {
    pub fn data_type(&self) -> DataType {
        match self {
            Fields::Price(_) => DataType::Price,
            Fields::Ohlcv(_) => DataType::Ohlcv,
            Fields::Analytics(_) => DataType::Analytics,
            Fields::Level1(_) => DataType::Level1,
        }
    }

    /// Fills `source` and `attribution` from an envelope where the record lacks them.
    pub fn fill_from_envelope(&mut self, source: Option<&str>, attribution: Option<&str>) {
        let fill = |field: &mut Option<CompactString>, value: Option<&str>| {
            if field.is_none() {
                *field = value.map(CompactString::from);
            }
        };
        match self {
            Fields::Price(f) => {
                fill(&mut f.source, source);
                fill(&mut f.attribution, attribution);
            }
            Fields::Ohlcv(f) => {
                fill(&mut f.source, source);
                fill(&mut f.attribution, attribution);
            }
            Fields::Analytics(f) => {
                fill(&mut f.source, source);
                fill(&mut f.attribution, attribution);
            }
            // A level-1 quote has no attribution column.
            Fields::Level1(f) => fill(&mut f.source, source),
        }
    }
}

/// The bincode layout of a price record (field order is the contract's).
#[derive(Debug, Clone, PartialEq, bincode::Encode, bincode::Decode)]
pub struct PriceBincode {
    pub coin_id: String,
    pub symbol: String,
    pub exchange_id: Option<String>,
    pub usd_price: String,
    pub btc_price: Option<String>,
    pub market_cap: Option<String>,
    pub volume_24h: Option<String>,
    pub change_24h: Option<String>,
    pub last_updated: i64,
    pub source: String,
    pub attribution: Option<String>,
}

/// The bincode layout of an OHLCV record.
#[derive(Debug, Clone, PartialEq, bincode::Encode, bincode::Decode)]
pub struct OhlcvBincode {
    pub coin_id: String,
    pub symbol: String,
    pub exchange_id: Option<String>,
    pub timeframe: String,
    pub timestamp: i64,
    pub open_price: String,
    pub high_price: String,
    pub low_price: String,
    pub close_price: String,
    pub volume: String,
    pub trades: Option<u64>,
    pub source: String,
    pub attribution: Option<String>,
}

/// The bincode layout of a market analytics record.
#[derive(Debug, Clone, PartialEq, bincode::Encode, bincode::Decode)]
pub struct AnalyticsBincode {
    pub timestamp: i64,
    pub total_market_cap: String,
    pub total_volume: String,
    pub btc_dominance: String,
    pub eth_dominance: Option<String>,
    pub active_cryptocurrencies: Option<u32>,
    pub active_exchanges: Option<u32>,
    pub market_cap_change_24h: Option<String>,
    pub source: String,
    pub attribution: Option<String>,
}

/// The bincode layout of a level-1 quote.
#[derive(Debug, Clone, PartialEq, bincode::Encode, bincode::Decode)]
pub struct Level1Bincode {
    pub symbol: String,
    pub exchange_id: String,
    pub best_bid: String,
    pub best_ask: String,
    pub bid_size: Option<String>,
    pub ask_size: Option<String>,
    pub timestamp: i64,
    pub sequence: Option<u64>,
    pub source: String,
}

/// A bincode decimal that does not parse, named by its JSON field name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {reason}")]
pub struct BincodeFieldError {
    pub field: &'static str,
    pub reason: String,
}

fn dec(field: &'static str, text: String) -> Result<JsonDecimal, BincodeFieldError> {
    Decimal::parse(&text)
        .map(JsonDecimal)
        .map_err(|e| BincodeFieldError {
            field,
            reason: e.to_string(),
        })
}

fn opt_dec(
    field: &'static str,
    text: Option<String>,
) -> Result<Option<JsonDecimal>, BincodeFieldError> {
    text.map(|t| dec(field, t)).transpose()
}

fn micros(t: i64) -> Option<JsonTime> {
    Some(JsonTime(Timestamp(t)))
}

impl PriceBincode {
    pub fn into_fields(self) -> Result<PriceFields, BincodeFieldError> {
        Ok(PriceFields {
            coin_id: Some(self.coin_id.into()),
            symbol: Some(self.symbol.into()),
            exchange_id: self.exchange_id.map(Into::into),
            usd_price: Some(dec("usdPrice", self.usd_price)?),
            btc_price: opt_dec("btcPrice", self.btc_price)?,
            market_cap: opt_dec("marketCap", self.market_cap)?,
            volume_24h: opt_dec("volume24h", self.volume_24h)?,
            change_24h: opt_dec("change24h", self.change_24h)?,
            last_updated: micros(self.last_updated),
            source: Some(self.source.into()),
            attribution: self.attribution.map(Into::into),
            ..Default::default()
        })
    }
}

impl OhlcvBincode {
    pub fn into_fields(self) -> Result<OhlcvFields, BincodeFieldError> {
        Ok(OhlcvFields {
            coin_id: Some(self.coin_id.into()),
            symbol: Some(self.symbol.into()),
            exchange_id: self.exchange_id.map(Into::into),
            timeframe: Some(self.timeframe.into()),
            timestamp: micros(self.timestamp),
            open_price: Some(dec("openPrice", self.open_price)?),
            high_price: Some(dec("highPrice", self.high_price)?),
            low_price: Some(dec("lowPrice", self.low_price)?),
            close_price: Some(dec("closePrice", self.close_price)?),
            volume: Some(dec("volume", self.volume)?),
            trades: self.trades,
            source: Some(self.source.into()),
            attribution: self.attribution.map(Into::into),
            ..Default::default()
        })
    }
}

impl AnalyticsBincode {
    pub fn into_fields(self) -> Result<AnalyticsFields, BincodeFieldError> {
        Ok(AnalyticsFields {
            timestamp: micros(self.timestamp),
            total_market_cap: Some(dec("totalMarketCap", self.total_market_cap)?),
            total_volume: Some(dec("totalVolume", self.total_volume)?),
            btc_dominance: Some(dec("btcDominance", self.btc_dominance)?),
            eth_dominance: opt_dec("ethDominance", self.eth_dominance)?,
            active_cryptocurrencies: self.active_cryptocurrencies,
            active_exchanges: self.active_exchanges,
            market_cap_change_24h: opt_dec("marketCapChange24h", self.market_cap_change_24h)?,
            source: Some(self.source.into()),
            attribution: self.attribution.map(Into::into),
            ..Default::default()
        })
    }
}

impl Level1Bincode {
    pub fn into_fields(self) -> Result<Level1Fields, BincodeFieldError> {
        Ok(Level1Fields {
            symbol: Some(self.symbol.into()),
            exchange_id: Some(self.exchange_id.into()),
            best_bid: Some(dec("bestBid", self.best_bid)?),
            best_ask: Some(dec("bestAsk", self.best_ask)?),
            bid_size: opt_dec("bidSize", self.bid_size)?,
            ask_size: opt_dec("askSize", self.ask_size)?,
            timestamp: micros(self.timestamp),
            sequence: self.sequence,
            source: Some(self.source.into()),
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_with_and_without_escapes_read_the_same() {
        let plain: JsonDecimal = serde_json::from_str(r#""12.50""#).unwrap();
        let escaped: JsonDecimal = serde_json::from_str(r#""\u0031\u0032.50""#).unwrap();
        assert_eq!(plain, escaped);
        assert_eq!(string_text(r#""a\"b""#).unwrap(), "a\"b");
        assert!(matches!(
            string_text(r#""2026""#),
            Ok(Cow::Borrowed("2026"))
        ));
        let iso: JsonTime = serde_json::from_str(r#""2026-11-23T00:00:00Z""#).unwrap();
        let iso_escaped: JsonTime = serde_json::from_str(r#""2026-11-23T00:00:00\u005a""#).unwrap();
        assert_eq!(iso, iso_escaped);
    }
}
