//! Validate stage: decoded fields → a row of its table, or the rule it breaks.
//!
//! Pure: the clock reading and the topic's default exchange come in as
//! [`Context`]. Required fields must be present, defaults are filled in
//! (`exchangeId`, `attribution`, level-1 `sequence`), and every rule of the
//! contract is checked; the error names the field.

use std::cmp::Ordering;

use crate::decimal::Decimal;
use crate::record::{AnalyticsRow, Level1Row, OhlcvRow, PriceRow, Row, Timestamp};
use crate::wire::{
    AnalyticsFields, Fields, JsonDecimal, JsonTime, Level1Fields, OhlcvFields, PriceFields,
};

/// How far ahead of the sink's clock a record's time may be.
pub const MAX_FUTURE_MICROS: i64 = 5 * 60 * 1_000_000;

/// The OHLCV timeframes of the contract.
pub const TIMEFRAMES: [&str; 6] = ["1m", "5m", "15m", "1h", "4h", "1d"];

/// What validation needs besides the record.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The exchange of a per-exchange topic, or `aggregate` on a base topic.
    pub default_exchange: &'a str,
    /// The sink's clock, for the "at most 5 minutes ahead" rule.
    pub now: Timestamp,
}

/// A rule a record breaks; the text becomes `dlq.reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {problem}")]
pub struct ValidationError {
    pub field: &'static str,
    pub problem: String,
}

fn fail<T>(field: &'static str, problem: impl Into<String>) -> Result<T, ValidationError> {
    Err(ValidationError {
        field,
        problem: problem.into(),
    })
}

fn required<T>(field: &'static str, value: Option<T>) -> Result<T, ValidationError> {
    match value {
        Some(v) => Ok(v),
        None => fail(field, "required but missing or null"),
    }
}

/// A price: finite and strictly above zero.
fn price(field: &'static str, value: JsonDecimal) -> Result<Decimal, ValidationError> {
    let value = value.0;
    if value.is_negative() || value.is_zero() {
        return fail(field, format!("must be > 0, got {value}"));
    }
    Ok(value)
}

/// A size, volume or cap: finite and not below zero.
fn non_negative(field: &'static str, value: JsonDecimal) -> Result<Decimal, ValidationError> {
    let value = value.0;
    if value.is_negative() {
        return fail(field, format!("must be >= 0, got {value}"));
    }
    Ok(value)
}

/// A dominance percentage: within 0..100.
fn percentage(field: &'static str, value: JsonDecimal) -> Result<Decimal, ValidationError> {
    let value = value.0;
    if value.is_negative() || value.cmp_value(&Decimal::from_i64(100)) == Ordering::Greater {
        return fail(field, format!("must be within 0..100, got {value}"));
    }
    Ok(value)
}

fn time(
    field: &'static str,
    value: Option<JsonTime>,
    ctx: &Context<'_>,
) -> Result<Timestamp, ValidationError> {
    let t = required(field, value)?.0;
    if t <= Timestamp::EARLIEST_EXCLUSIVE {
        return fail(field, format!("{t} is not after 2009-01-01T00:00:00Z"));
    }
    if t.micros() > ctx.now.micros().saturating_add(MAX_FUTURE_MICROS) {
        return fail(
            field,
            format!(
                "{t} is more than 5 minutes ahead of the sink's clock ({})",
                ctx.now
            ),
        );
    }
    Ok(t)
}

/// `trades` and `sequence` are BIGINT columns.
fn bigint(field: &'static str, value: u64) -> Result<i64, ValidationError> {
    i64::try_from(value).or_else(|_| fail(field, format!("{value} exceeds 2^63-1")))
}

/// The two counts are INTEGER columns.
fn integer(field: &'static str, value: u32) -> Result<i32, ValidationError> {
    i32::try_from(value).or_else(|_| fail(field, format!("{value} exceeds 2^31-1")))
}

fn opt<T, U>(
    field: &'static str,
    value: Option<T>,
    check: impl FnOnce(&'static str, T) -> Result<U, ValidationError>,
) -> Result<Option<U>, ValidationError> {
    value.map(|v| check(field, v)).transpose()
}

/// Validates one decoded record and turns it into its table's row.
pub fn validate(fields: Fields, ctx: &Context<'_>) -> Result<Row, ValidationError> {
    match fields {
        Fields::Price(f) => validate_price(f, ctx).map(Row::Price),
        Fields::Ohlcv(f) => validate_ohlcv(f, ctx).map(Row::Ohlcv),
        Fields::Analytics(f) => validate_analytics(f, ctx).map(Row::Analytics),
        Fields::Level1(f) => validate_level1(f, ctx).map(Row::Level1),
    }
}

fn validate_price(f: PriceFields, ctx: &Context<'_>) -> Result<PriceRow, ValidationError> {
    let source = required("source", f.source)?;
    Ok(PriceRow {
        time: time("lastUpdated", f.last_updated, ctx)?,
        coin_id: required("coinId", f.coin_id)?,
        symbol: required("symbol", f.symbol)?,
        exchange_id: f.exchange_id.unwrap_or_else(|| ctx.default_exchange.into()),
        usd_price: price("usdPrice", required("usdPrice", f.usd_price)?)?,
        btc_price: opt("btcPrice", f.btc_price, price)?,
        market_cap: opt("marketCap", f.market_cap, non_negative)?,
        volume_24h: opt("volume24h", f.volume_24h, non_negative)?,
        change_24h: f.change_24h.map(|d| d.0),
        attribution: f.attribution.unwrap_or_else(|| source.clone()),
        source,
    })
}

fn validate_ohlcv(f: OhlcvFields, ctx: &Context<'_>) -> Result<OhlcvRow, ValidationError> {
    let source = required("source", f.source)?;
    let timeframe = required("timeframe", f.timeframe)?;
    if !TIMEFRAMES.contains(&timeframe.as_str()) {
        return fail(
            "timeframe",
            format!("{timeframe:?} is not one of 1m 5m 15m 1h 4h 1d"),
        );
    }
    let open = price("openPrice", required("openPrice", f.open_price)?)?;
    let high = price("highPrice", required("highPrice", f.high_price)?)?;
    let low = price("lowPrice", required("lowPrice", f.low_price)?)?;
    let close = price("closePrice", required("closePrice", f.close_price)?)?;
    for (field, value) in [("openPrice", &open), ("closePrice", &close)] {
        if value.cmp_value(&low) == Ordering::Less {
            return fail(field, format!("{value} is below lowPrice {low}"));
        }
        if value.cmp_value(&high) == Ordering::Greater {
            return fail(field, format!("{value} is above highPrice {high}"));
        }
    }
    Ok(OhlcvRow {
        time: time("timestamp", f.timestamp, ctx)?,
        coin_id: required("coinId", f.coin_id)?,
        symbol: required("symbol", f.symbol)?,
        exchange_id: f.exchange_id.unwrap_or_else(|| ctx.default_exchange.into()),
        timeframe,
        open_price: open,
        high_price: high,
        low_price: low,
        close_price: close,
        volume: non_negative("volume", required("volume", f.volume)?)?,
        trades: opt("trades", f.trades, bigint)?,
        attribution: f.attribution.unwrap_or_else(|| source.clone()),
        source,
    })
}

fn validate_analytics(
    f: AnalyticsFields,
    ctx: &Context<'_>,
) -> Result<AnalyticsRow, ValidationError> {
    let source = required("source", f.source)?;
    Ok(AnalyticsRow {
        time: time("timestamp", f.timestamp, ctx)?,
        total_market_cap: non_negative(
            "totalMarketCap",
            required("totalMarketCap", f.total_market_cap)?,
        )?,
        total_volume: non_negative("totalVolume", required("totalVolume", f.total_volume)?)?,
        btc_dominance: percentage("btcDominance", required("btcDominance", f.btc_dominance)?)?,
        eth_dominance: opt("ethDominance", f.eth_dominance, percentage)?,
        active_cryptocurrencies: opt("activeCryptocurrencies", f.active_cryptocurrencies, integer)?,
        active_exchanges: opt("activeExchanges", f.active_exchanges, integer)?,
        market_cap_change_24h: f.market_cap_change_24h.map(|d| d.0),
        attribution: f.attribution.unwrap_or_else(|| source.clone()),
        source,
    })
}

fn validate_level1(f: Level1Fields, ctx: &Context<'_>) -> Result<Level1Row, ValidationError> {
    let best_bid = price("bestBid", required("bestBid", f.best_bid)?)?;
    let best_ask = price("bestAsk", required("bestAsk", f.best_ask)?)?;
    if best_bid.cmp_value(&best_ask) == Ordering::Greater {
        return fail("bestBid", format!("{best_bid} is above bestAsk {best_ask}"));
    }
    Ok(Level1Row {
        time: time("timestamp", f.timestamp, ctx)?,
        exchange_id: required("exchangeId", f.exchange_id)?,
        symbol: required("symbol", f.symbol)?,
        best_bid,
        best_ask,
        bid_size: opt("bidSize", f.bid_size, non_negative)?,
        ask_size: opt("askSize", f.ask_size, non_negative)?,
        sequence: opt("sequence", f.sequence, bigint)?.unwrap_or(0),
        source: required("source", f.source)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{ContentType, Encoding, decode};
    use crate::record::DataType;

    const NOW: Timestamp = Timestamp(1_795_370_400_000_000); // 2026-11-23T...

    fn check(data_type: DataType, json: &str, exchange: &str) -> Result<Row, ValidationError> {
        let encoding = Encoding {
            content_type: ContentType::Json,
            compressed: false,
        };
        let mut fields = decode(
            data_type,
            encoding,
            Some(json.as_bytes()),
            &Default::default(),
        )
        .unwrap();
        let ctx = Context {
            default_exchange: exchange,
            now: NOW,
        };
        validate(fields.remove(0), &ctx)
    }

    const PRICE: &str = r#"{"coinId":"bitcoin","symbol":"BTC","usdPrice":"67500.12345678","lastUpdated":"2026-11-22T18:00:00.123Z","source":"coingecko"}"#;

    fn with(base: &str, field: &str, value: &str) -> String {
        // Sets a field in a JSON object given as text (tests only).
        let mut v: serde_json::Value = serde_json::from_str(base).unwrap();
        v[field] = serde_json::from_str(value).unwrap();
        v.to_string()
    }

    fn without(base: &str, field: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(base).unwrap();
        v.as_object_mut().unwrap().remove(field);
        v.to_string()
    }

    fn field_of(r: Result<Row, ValidationError>) -> &'static str {
        r.expect_err("should be invalid").field
    }

    #[test]
    fn price_defaults() {
        let Row::Price(p) = check(DataType::Price, PRICE, "aggregate").unwrap() else {
            panic!()
        };
        assert_eq!(p.exchange_id, "aggregate");
        assert_eq!(p.attribution, "coingecko");
        let Row::Price(p) = check(DataType::Price, PRICE, "binance").unwrap() else {
            panic!()
        };
        assert_eq!(p.exchange_id, "binance");
        let Row::Price(p) = check(
            DataType::Price,
            &with(PRICE, "exchangeId", "\"kraken\""),
            "binance",
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(p.exchange_id, "kraken");
    }

    #[test]
    fn price_rules() {
        for field in ["coinId", "symbol", "usdPrice", "lastUpdated", "source"] {
            assert_eq!(
                field_of(check(DataType::Price, &without(PRICE, field), "x")),
                field
            );
            assert_eq!(
                field_of(check(DataType::Price, &with(PRICE, field, "null"), "x")),
                field
            );
        }
        assert_eq!(
            field_of(check(DataType::Price, &with(PRICE, "usdPrice", "0"), "x")),
            "usdPrice"
        );
        assert_eq!(
            field_of(check(DataType::Price, &with(PRICE, "usdPrice", "-1"), "x")),
            "usdPrice"
        );
        assert_eq!(
            field_of(check(DataType::Price, &with(PRICE, "btcPrice", "0"), "x")),
            "btcPrice"
        );
        assert_eq!(
            field_of(check(
                DataType::Price,
                &with(PRICE, "marketCap", "-0.1"),
                "x"
            )),
            "marketCap"
        );
        assert!(check(DataType::Price, &with(PRICE, "marketCap", "0"), "x").is_ok());
        assert!(check(DataType::Price, &with(PRICE, "change24h", "-5.5"), "x").is_ok());
    }

    #[test]
    fn time_rules() {
        let at = |t: &str| check(DataType::Price, &with(PRICE, "lastUpdated", t), "x");
        assert_eq!(field_of(at("\"2009-01-01T00:00:00Z\"")), "lastUpdated");
        assert!(at("\"2009-01-01T00:00:00.001Z\"").is_ok());
        assert_eq!(field_of(at("1230768000000")), "lastUpdated");
        assert!(at("1230768000001").is_ok());
        let limit_ms = (NOW.micros() + MAX_FUTURE_MICROS) / 1000;
        assert!(at(&limit_ms.to_string()).is_ok());
        assert_eq!(field_of(at(&(limit_ms + 1).to_string())), "lastUpdated");
    }

    const OHLCV: &str = r#"{"coinId":"bitcoin","symbol":"BTC","timeframe":"1h","timestamp":1763834400000,
        "openPrice":"10","highPrice":"12","lowPrice":"9","closePrice":"11","volume":"100","trades":5,"source":"s"}"#;

    #[test]
    fn ohlcv_rules() {
        let Row::Ohlcv(o) = check(DataType::Ohlcv, OHLCV, "aggregate").unwrap() else {
            panic!()
        };
        assert_eq!(
            (o.trades, o.exchange_id.as_str(), o.attribution.as_str()),
            (Some(5), "aggregate", "s")
        );
        assert_eq!(
            field_of(check(
                DataType::Ohlcv,
                &with(OHLCV, "timeframe", "\"2h\""),
                "x"
            )),
            "timeframe"
        );
        assert_eq!(
            field_of(check(DataType::Ohlcv, &with(OHLCV, "openPrice", "8"), "x")),
            "openPrice"
        );
        assert_eq!(
            field_of(check(
                DataType::Ohlcv,
                &with(OHLCV, "closePrice", "12.5"),
                "x"
            )),
            "closePrice"
        );
        assert!(check(DataType::Ohlcv, &with(OHLCV, "closePrice", "12.000"), "x").is_ok());
        assert_eq!(
            field_of(check(DataType::Ohlcv, &with(OHLCV, "volume", "-1"), "x")),
            "volume"
        );
        assert_eq!(
            field_of(check(
                DataType::Ohlcv,
                &with(OHLCV, "trades", "9223372036854775808"),
                "x"
            )),
            "trades"
        );
        assert!(
            check(
                DataType::Ohlcv,
                &with(OHLCV, "trades", "9223372036854775807"),
                "x"
            )
            .is_ok()
        );
    }

    const ANALYTICS: &str = r#"{"timestamp":"2026-11-22T18:00:00Z","totalMarketCap":"3000000000000",
        "totalVolume":"1","btcDominance":"54.2","source":"s"}"#;

    #[test]
    fn analytics_rules() {
        assert!(check(DataType::Analytics, ANALYTICS, "x").is_ok());
        assert_eq!(
            field_of(check(
                DataType::Analytics,
                &with(ANALYTICS, "btcDominance", "100.01"),
                "x"
            )),
            "btcDominance"
        );
        assert!(
            check(
                DataType::Analytics,
                &with(ANALYTICS, "btcDominance", "100"),
                "x"
            )
            .is_ok()
        );
        assert_eq!(
            field_of(check(
                DataType::Analytics,
                &with(ANALYTICS, "ethDominance", "-1"),
                "x"
            )),
            "ethDominance"
        );
        assert_eq!(
            field_of(check(
                DataType::Analytics,
                &with(ANALYTICS, "activeExchanges", "2147483648"),
                "x"
            )),
            "activeExchanges"
        );
        assert!(
            check(
                DataType::Analytics,
                &with(ANALYTICS, "activeExchanges", "2147483647"),
                "x"
            )
            .is_ok()
        );
        assert!(
            check(
                DataType::Analytics,
                &with(ANALYTICS, "marketCapChange24h", "-3.2"),
                "x"
            )
            .is_ok()
        );
    }

    const LEVEL1: &str = r#"{"symbol":"BTC-USD","exchangeId":"binance","bestBid":"10","bestAsk":"10",
        "timestamp":1763834400000,"source":"s"}"#;

    #[test]
    fn level1_rules() {
        let Row::Level1(q) = check(DataType::Level1, LEVEL1, "aggregate").unwrap() else {
            panic!()
        };
        assert_eq!(q.sequence, 0);
        assert_eq!(
            field_of(check(
                DataType::Level1,
                &with(LEVEL1, "bestBid", "10.5"),
                "x"
            )),
            "bestBid"
        );
        assert_eq!(
            field_of(check(DataType::Level1, &without(LEVEL1, "exchangeId"), "x")),
            "exchangeId"
        );
        assert_eq!(
            field_of(check(DataType::Level1, &with(LEVEL1, "askSize", "-2"), "x")),
            "askSize"
        );
        assert!(check(DataType::Level1, &with(LEVEL1, "bidSize", "0"), "x").is_ok());
    }
}
