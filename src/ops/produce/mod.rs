//! `timesink produce`: a load generator that writes what the platform's
//! producers write at a chosen rate: the crypto stream ([`Generator`]: all
//! four data types, on the base and per-exchange topics, in every encoding
//! of the contract) or seed 004's odin events ([`odin::OdinGenerator`]).
//!
//! Every row it makes has a primary key of its own (the time moves one
//! microsecond per row), so the rows a sink stores can be counted against it.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use serde_json::{Value, json};

use crate::catalog::Catalog;
use crate::config::KafkaConfig;
use crate::time::Timestamp;

pub mod odin;

/// The contract's data types: which record a message carries.
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

/// The base topic of each data type (per-exchange topics are
/// `<base>-<exchangeId>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub prices: String,
    pub ohlcv: String,
    pub analytics: String,
    pub level1: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            prices: DataType::Price.default_topic().into(),
            ohlcv: DataType::Ohlcv.default_topic().into(),
            analytics: DataType::Analytics.default_topic().into(),
            level1: DataType::Level1.default_topic().into(),
        }
    }
}

impl Topics {
    pub fn base(&self, data_type: DataType) -> &str {
        match data_type {
            DataType::Price => &self.prices,
            DataType::Ohlcv => &self.ohlcv,
            DataType::Analytics => &self.analytics,
            DataType::Level1 => &self.level1,
        }
    }

    /// The topics the sink reads each type from: the first topic its
    /// table names, else the fixed start of its table's topic pattern.
    pub fn of(catalog: &Catalog) -> Topics {
        let base = |t: DataType| {
            let Some(table) = catalog.by_name(t.table()) else {
                return t.default_topic().to_owned();
            };
            if let Some(first) = table.topics.first() {
                return first.clone();
            }
            table
                .pattern
                .as_ref()
                .map(|p| literal_prefix(p.as_str()))
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| t.default_topic().to_owned())
        };
        Topics {
            prices: base(DataType::Price),
            ohlcv: base(DataType::Ohlcv),
            analytics: base(DataType::Analytics),
            level1: base(DataType::Level1),
        }
    }
}

/// The text a pattern starts with before its first operator (`^crypto\-prices(…` → `crypto-prices`).
fn literal_prefix(pattern: &str) -> String {
    let mut out = String::new();
    let mut chars = pattern.strip_prefix('^').unwrap_or(pattern).chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e) if !e.is_ascii_alphanumeric() => out.push(e),
                _ => break,
            },
            c if c.is_ascii_alphanumeric() || c == '-' || c == '_' => out.push(c),
            _ => break,
        }
    }
    out
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

/// The encodings a message can be produced in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Encoding {
    /// A bare JSON record.
    Json,
    /// The standard JSON envelope.
    Envelope,
    /// A JSON array of three records.
    Array,
    /// bincode 2, standard configuration.
    Bincode,
    /// An LZ4 frame of an envelope.
    Lz4Json,
    /// An LZ4 frame of a bincode record.
    Lz4Bincode,
}

impl Encoding {
    pub const ALL: [Encoding; 6] = [
        Encoding::Json,
        Encoding::Envelope,
        Encoding::Array,
        Encoding::Bincode,
        Encoding::Lz4Json,
        Encoding::Lz4Bincode,
    ];
}

/// One message to produce.
#[derive(Debug, Clone)]
pub struct Generated {
    pub topic: String,
    pub key: String,
    pub value: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
    /// The table its rows go to.
    pub table: &'static str,
    /// Rows the message holds.
    pub rows: usize,
    /// The Kafka timestamp to give it (None: the producer's clock).
    pub timestamp_ms: Option<i64>,
}

/// What `timesink produce` sends: one message after another.
pub trait Load {
    fn next_message(&mut self) -> Generated;
    /// How the producer compresses batches (`compression.type`).
    fn compression(&self) -> &'static str;
}

impl Load for Generator {
    fn next_message(&mut self) -> Generated {
        Generator::next_message(self)
    }

    fn compression(&self) -> &'static str {
        "lz4"
    }
}

const COINS: [(&str, &str); 8] = [
    ("bitcoin", "BTC"),
    ("ethereum", "ETH"),
    ("solana", "SOL"),
    ("cardano", "ADA"),
    ("ripple", "XRP"),
    ("polkadot", "DOT"),
    ("dogecoin", "DOGE"),
    ("chainlink", "LINK"),
];

/// Makes messages; deterministic for a given start time.
pub struct Generator {
    topics: Topics,
    exchanges: Vec<String>,
    types: Vec<DataType>,
    encodings: Vec<Encoding>,
    /// Time of the first row, in microseconds; row `n` is at `start + n`.
    start: i64,
    rows: i64,
    messages: u64,
}

impl Generator {
    pub fn new(
        topics: Topics,
        exchanges: Vec<String>,
        types: Vec<DataType>,
        encodings: Vec<Encoding>,
        start: Timestamp,
    ) -> Generator {
        Generator {
            topics,
            exchanges,
            types,
            encodings,
            start: start.micros(),
            rows: 0,
            messages: 0,
        }
    }

    /// The next message: types, encodings and topics take turns.
    pub fn next_message(&mut self) -> Generated {
        let n = self.messages;
        self.messages += 1;
        let data_type = self.types[(n % self.types.len() as u64) as usize];
        let encoding =
            self.encodings[((n / self.types.len() as u64) % self.encodings.len() as u64) as usize];
        let exchange_slot = (n / (self.types.len() * self.encodings.len()) as u64)
            % (self.exchanges.len() as u64 + 1);
        let exchange = if exchange_slot == 0 {
            None
        } else {
            Some(self.exchanges[exchange_slot as usize - 1].as_str())
        };
        let base = self.topics.base(data_type);
        let topic = match exchange {
            Some(e) => format!("{base}-{e}"),
            None => base.to_owned(),
        };
        let count = if encoding == Encoding::Array { 3 } else { 1 };
        let first = self.rows;
        self.rows += count as i64;
        let times: Vec<i64> = (0..count).map(|i| self.start + first + i as i64).collect();
        let coin = COINS[(n % COINS.len() as u64) as usize];
        let exchange_id = exchange.unwrap_or("aggregate");
        let key = match data_type {
            DataType::Price | DataType::Ohlcv => coin.0.to_owned(),
            DataType::Level1 => format!("{}-USD", coin.1),
            DataType::Analytics => format!("{exchange_id}-market"),
        };
        let mut headers = vec![
            ("source", "timesink-produce".to_owned()),
            ("dataType", data_type.name().to_owned()),
        ];
        let value = match encoding {
            Encoding::Json | Encoding::Envelope | Encoding::Array | Encoding::Lz4Json => {
                let records: Vec<Value> = times
                    .iter()
                    .map(|&t| json_record(data_type, coin, exchange, t, n))
                    .collect();
                let doc = match encoding {
                    Encoding::Json => records.into_iter().next().unwrap_or(Value::Null),
                    Encoding::Array => Value::Array(records),
                    _ => envelope(
                        data_type,
                        records.into_iter().next().unwrap_or(Value::Null),
                        times[0],
                    ),
                };
                let mut bytes = doc.to_string().into_bytes();
                if encoding == Encoding::Lz4Json {
                    bytes = lz4(&bytes);
                    headers.push(("compressed", "true".into()));
                }
                headers.push(("content-type", "application/json".into()));
                bytes
            }
            Encoding::Bincode | Encoding::Lz4Bincode => {
                let mut bytes = bincode_record(data_type, coin, exchange, times[0], n);
                headers.push(("content-type", "application/x-bincode".into()));
                headers.push(("schema-version", "1".into()));
                if encoding == Encoding::Lz4Bincode {
                    bytes = lz4(&bytes);
                    headers.push(("compressed", "true".into()));
                }
                bytes
            }
        };
        Generated {
            topic,
            key,
            value,
            headers,
            table: data_type.table(),
            rows: count,
            timestamp_ms: None,
        }
    }
}

fn lz4(bytes: &[u8]) -> Vec<u8> {
    let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::with_capacity(bytes.len()));
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(bytes);
    enc.finish().unwrap_or_default()
}

fn iso(micros: i64) -> String {
    Timestamp(micros).to_string()
}

/// A price with many significant digits: the sink must keep them all.
fn digits(n: u64, scale: u32) -> String {
    let whole = 1000 + n % 90_000;
    let frac = (n.wrapping_mul(2_654_435_761) % 10u64.pow(scale)).to_string();
    format!("{whole}.{frac:0>width$}", width = scale as usize)
}

fn json_record(
    t: DataType,
    coin: (&str, &str),
    exchange: Option<&str>,
    time: i64,
    n: u64,
) -> Value {
    let mut v = match t {
        DataType::Price => json!({
            "coinId": coin.0, "symbol": coin.1,
            "usdPrice": digits(n, 8), "btcPrice": "0.00001234",
            "marketCap": "1234567890123456789.12", "volume24h": 98765.4321, "change24h": -1.25,
            "lastUpdated": iso(time), "source": "coingecko", "attribution": "CoinGecko API"
        }),
        DataType::Ohlcv => json!({
            "coinId": coin.0, "symbol": coin.1, "timeframe": "1m", "timestamp": iso(time),
            "openPrice": "100.5", "highPrice": "101.25", "lowPrice": "99.75", "closePrice": "100.75",
            "volume": digits(n, 6), "trades": n, "source": "binance-rest"
        }),
        DataType::Analytics => json!({
            "timestamp": iso(time), "totalMarketCap": "3012345678901.23", "totalVolume": "123456789012.5",
            "btcDominance": "54.21", "ethDominance": 17.5, "activeCryptocurrencies": 9876,
            "activeExchanges": 812, "marketCapChange24h": "-0.75", "source": format!("gen-{}", exchange.unwrap_or("all"))
        }),
        DataType::Level1 => json!({
            "symbol": format!("{}-USD", coin.1), "exchangeId": exchange.unwrap_or("coinbase"),
            "bestBid": "67000.5", "bestAsk": "67001.25", "bidSize": "0.5", "askSize": 1.25,
            "timestamp": iso(time), "sequence": n, "source": "ws"
        }),
    };
    if let (Some(e), DataType::Price | DataType::Ohlcv) = (exchange, t) {
        // On a per-exchange topic the topic's exchange is the default; say it only sometimes.
        if n.is_multiple_of(2) {
            v["exchangeId"] = json!(e);
        }
    }
    v
}

fn envelope(t: DataType, payload: Value, time: i64) -> Value {
    json!({
        "messageId": format!("gen-{time}"), "timestamp": time / 1000, "source": "timesink-produce",
        "dataType": t.name(), "payload": payload,
        "metadata": {"attribution": "timesink load generator", "processingLatency": 1, "originalTimestamp": time / 1000}
    })
}

fn bincode_record(
    t: DataType,
    coin: (&str, &str),
    exchange: Option<&str>,
    time: i64,
    n: u64,
) -> Vec<u8> {
    let config = bincode::config::standard();
    let encoded = match t {
        DataType::Price => bincode::encode_to_vec(
            PriceBincode {
                coin_id: coin.0.into(),
                symbol: coin.1.into(),
                exchange_id: exchange.map(Into::into),
                usd_price: digits(n, 8),
                btc_price: Some("0.00001234".into()),
                market_cap: None,
                volume_24h: Some("98765.4321".into()),
                change_24h: Some("-1.25".into()),
                last_updated: time,
                source: "coingecko".into(),
                attribution: None,
            },
            config,
        ),
        DataType::Ohlcv => bincode::encode_to_vec(
            OhlcvBincode {
                coin_id: coin.0.into(),
                symbol: coin.1.into(),
                exchange_id: exchange.map(Into::into),
                timeframe: "1m".into(),
                timestamp: time,
                open_price: "100.5".into(),
                high_price: "101.25".into(),
                low_price: "99.75".into(),
                close_price: "100.75".into(),
                volume: digits(n, 6),
                trades: Some(n),
                source: "binance-rest".into(),
                attribution: Some("Binance".into()),
            },
            config,
        ),
        DataType::Analytics => bincode::encode_to_vec(
            AnalyticsBincode {
                timestamp: time,
                total_market_cap: "3012345678901.23".into(),
                total_volume: "123456789012.5".into(),
                btc_dominance: "54.21".into(),
                eth_dominance: None,
                active_cryptocurrencies: Some(9876),
                active_exchanges: None,
                market_cap_change_24h: Some("0.5".into()),
                source: format!("gen-{}", exchange.unwrap_or("all")),
                attribution: None,
            },
            config,
        ),
        DataType::Level1 => bincode::encode_to_vec(
            Level1Bincode {
                symbol: format!("{}-USD", coin.1),
                exchange_id: exchange.unwrap_or("coinbase").into(),
                best_bid: "67000.5".into(),
                best_ask: "67001.25".into(),
                bid_size: Some("0.5".into()),
                ask_size: None,
                timestamp: time,
                sequence: Some(n),
                source: "ws".into(),
            },
            config,
        ),
    };
    // Encoding owned strings and integers into a Vec cannot fail.
    encoded.unwrap_or_default()
}

/// What a produce run sent.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub messages: u64,
    /// Bytes of message values sent (what the sink will read).
    pub value_bytes: u64,
    pub per_topic: BTreeMap<String, u64>,
    pub rows_per_table: BTreeMap<&'static str, u64>,
    pub elapsed: Duration,
}

/// Produces `count` messages at `rate` per second (0: as fast as the broker takes them).
pub fn run(
    kafka: &KafkaConfig,
    generator: &mut dyn Load,
    count: u64,
    rate: u64,
) -> Result<Summary, KafkaError> {
    let mut client = ClientConfig::new();
    for (k, v) in &kafka.properties {
        client.set(k, v);
    }
    client
        .set("bootstrap.servers", &kafka.brokers)
        .set("enable.idempotence", "true")
        .set("compression.type", generator.compression())
        .set("linger.ms", "5");
    let producer: ThreadedProducer<DefaultProducerContext> = client.create()?;
    let started = Instant::now();
    let mut summary = Summary::default();
    for i in 0..count {
        if rate > 0 {
            let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let g = generator.next_message();
        let mut headers = OwnedHeaders::new_with_capacity(g.headers.len());
        for (key, value) in &g.headers {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        let mut record = BaseRecord::to(&g.topic)
            .key(&g.key)
            .payload(&g.value)
            .headers(headers);
        if let Some(t) = g.timestamp_ms {
            record = record.timestamp(t);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(e),
            }
        }
        summary.messages += 1;
        summary.value_bytes += g.value.len() as u64;
        *summary.per_topic.entry(g.topic.clone()).or_default() += 1;
        *summary.rows_per_table.entry(g.table).or_default() += g.rows as u64;
    }
    producer.flush(Duration::from_secs(60))?;
    summary.elapsed = started.elapsed();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::SourceMessage;
    use crate::pipeline::copy_format::RowBuffer;
    use crate::pipeline::outcome::Outcome;

    #[test]
    fn every_generated_message_decodes_and_validates() {
        let start = Timestamp(1_795_370_400_000_000);
        let catalog = crate::config::Config::default().catalog().unwrap();
        let topics = Topics::of(&catalog);
        assert_eq!(topics, Topics::default());
        let mut g = Generator::new(
            topics,
            vec!["binance".into()],
            DataType::ALL.to_vec(),
            Encoding::ALL.to_vec(),
            start,
        );
        let envelopes = catalog.envelope_names();
        let mut seen = std::collections::HashSet::new();
        let mut rows = RowBuffer::default();
        for _ in 0..200 {
            let m = g.next_message();
            seen.insert(m.topic.clone());
            let route = catalog.route(&m.topic, ".dlq").unwrap();
            assert_eq!(catalog.table(route.table).name, m.table);
            let message = SourceMessage::new(
                m.topic.as_str().into(),
                0,
                0,
                Some(m.key.as_bytes()),
                Some(&m.value),
                m.headers.iter().map(|(k, v)| (*k, Some(v.as_bytes()))),
            );
            let outcome = crate::pipeline::process(
                &catalog,
                &route,
                &envelopes,
                &message,
                &Default::default(),
                start,
                &mut rows,
            );
            assert_eq!(outcome, Outcome::Rows(m.rows), "{}", m.topic);
        }
        assert_eq!(
            seen.len(),
            8,
            "base and per-exchange topics of all four types"
        );
    }
}
