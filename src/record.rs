//! The four kinds of market data, as rows of their tables.
//!
//! A row here has passed validation: required fields are present, defaults are
//! filled in, and every rule of the contract holds. Its fields are the table's
//! columns, in the table's order.

use std::fmt;

use compact_str::CompactString;

use crate::decimal::Decimal;

/// The data type of a topic: which record its messages carry and which table they land in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DataType {
    Price,
    Ohlcv,
    Analytics,
    Level1,
}

impl DataType {
    pub const ALL: [DataType; 4] = [
        DataType::Price,
        DataType::Ohlcv,
        DataType::Analytics,
        DataType::Level1,
    ];

    /// The `dataType` name used in envelopes.
    pub fn name(self) -> &'static str {
        match self {
            DataType::Price => "price",
            DataType::Ohlcv => "ohlcv",
            DataType::Analytics => "analytics",
            DataType::Level1 => "level1",
        }
    }

    pub fn from_name(name: &str) -> Option<DataType> {
        DataType::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The table its rows are stored in.
    pub fn table(self) -> &'static str {
        match self {
            DataType::Price => "crypto_prices",
            DataType::Ohlcv => "ohlcv_data",
            DataType::Analytics => "market_analytics",
            DataType::Level1 => "level1_quotes",
        }
    }

    /// The base topic of the contract.
    pub fn default_topic(self) -> &'static str {
        match self {
            DataType::Price => "crypto-prices",
            DataType::Ohlcv => "crypto-ohlcv",
            DataType::Analytics => "crypto-analytics",
            DataType::Level1 => "crypto-level1",
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A point in time, in microseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// 2009-01-01T00:00:00Z: every valid record is strictly after it.
    pub const EARLIEST_EXCLUSIVE: Timestamp = Timestamp(1_230_768_000_000_000);

    pub fn from_millis(ms: i64) -> Option<Timestamp> {
        ms.checked_mul(1000).map(Timestamp)
    }

    pub fn micros(self) -> i64 {
        self.0
    }

    /// Microseconds since 2000-01-01, PostgreSQL's epoch.
    pub fn postgres_micros(self) -> i64 {
        const UNIX_TO_POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;
        self.0 - UNIX_TO_POSTGRES_EPOCH_MICROS
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

/// A row of `crypto_prices`.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceRow {
    pub time: Timestamp,
    pub coin_id: CompactString,
    pub symbol: CompactString,
    pub exchange_id: CompactString,
    pub usd_price: Decimal,
    pub btc_price: Option<Decimal>,
    pub market_cap: Option<Decimal>,
    pub volume_24h: Option<Decimal>,
    pub change_24h: Option<Decimal>,
    pub source: CompactString,
    pub attribution: CompactString,
}

/// A row of `ohlcv_data`.
#[derive(Debug, Clone, PartialEq)]
pub struct OhlcvRow {
    pub time: Timestamp,
    pub coin_id: CompactString,
    pub symbol: CompactString,
    pub exchange_id: CompactString,
    pub timeframe: CompactString,
    pub open_price: Decimal,
    pub high_price: Decimal,
    pub low_price: Decimal,
    pub close_price: Decimal,
    pub volume: Decimal,
    pub trades: Option<i64>,
    pub source: CompactString,
    pub attribution: CompactString,
}

/// A row of `market_analytics`.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalyticsRow {
    pub time: Timestamp,
    pub total_market_cap: Decimal,
    pub total_volume: Decimal,
    pub btc_dominance: Decimal,
    pub eth_dominance: Option<Decimal>,
    pub active_cryptocurrencies: Option<i32>,
    pub active_exchanges: Option<i32>,
    pub market_cap_change_24h: Option<Decimal>,
    pub source: CompactString,
    pub attribution: CompactString,
}

/// A row of `level1_quotes`.
#[derive(Debug, Clone, PartialEq)]
pub struct Level1Row {
    pub time: Timestamp,
    pub exchange_id: CompactString,
    pub symbol: CompactString,
    pub best_bid: Decimal,
    pub best_ask: Decimal,
    pub bid_size: Option<Decimal>,
    pub ask_size: Option<Decimal>,
    pub sequence: i64,
    pub source: CompactString,
}

/// A validated row of any table.
#[derive(Debug, Clone, PartialEq)]
pub enum Row {
    Price(PriceRow),
    Ohlcv(OhlcvRow),
    Analytics(AnalyticsRow),
    Level1(Level1Row),
}

impl Row {
    pub fn data_type(&self) -> DataType {
        match self {
            Row::Price(_) => DataType::Price,
            Row::Ohlcv(_) => DataType::Ohlcv,
            Row::Analytics(_) => DataType::Analytics,
            Row::Level1(_) => DataType::Level1,
        }
    }

    pub fn time(&self) -> Timestamp {
        match self {
            Row::Price(r) => r.time,
            Row::Ohlcv(r) => r.time,
            Row::Analytics(r) => r.time,
            Row::Level1(r) => r.time,
        }
    }
}

#[cfg(test)]
impl Row {
    /// A level-1 quote for tests: `time` in microseconds since the Unix
    /// epoch, bid 1, ask 2.
    pub fn test_quote(time: i64, sequence: i64, source: &str) -> Row {
        Row::Level1(Level1Row {
            time: Timestamp(time),
            exchange_id: "e".into(),
            symbol: "s".into(),
            best_bid: Decimal::from_i64(1),
            best_ask: Decimal::from_i64(2),
            bid_size: None,
            ask_size: None,
            sequence,
            source: source.into(),
        })
    }
}
