//! Decode stage: a message's headers and value bytes → the records it
//! carries, each as the values its table reads ([`Record`]).
//!
//! Pure: no I/O, no clock. The headers choose the encoding (JSON by default,
//! bincode), whether the value is an LZ4 frame ([`lz4_frame`]), and the
//! bincode layout version. A JSON value is a bare record, an envelope, or an
//! array of either (`json`); a bincode value follows the table's declared
//! layout (`bincode`). Nothing is converted here: a record holds each value
//! as sent (raw JSON text, or the bincode field), and the validate stage reads
//! it as its column's type. Every failure names where it happened (header,
//! array element, field, byte).

use std::borrow::Cow;

use smallvec::SmallVec;

use crate::catalog::Table;
use crate::pipeline::outcome::RejectClass;
use crate::quote::{capped, quoted};
use crate::time::Timestamp;

mod bincode;
mod json;
pub mod lz4_frame;

/// Bounds on the work one message may cause, each checked before the large
/// allocation it prevents; beyond one the message is dead-lettered naming it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// `max_value_bytes`: the value as sent, and what an LZ4 frame inflates to.
    pub value_bytes: usize,
    /// `max_array_elements`: the records of one JSON array.
    pub array_elements: usize,
    /// `max_decimal_digits`: the digits of one decimal as stored (the
    /// exponent's shift included).
    pub decimal_digits: usize,
    /// `max_json_depth`: the nesting of a document a `jsonb` column stores.
    pub json_depth: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            value_bytes: 4 * 1024 * 1024,
            array_elements: 10_000,
            decimal_digits: crate::decimal::DEFAULT_MAX_DIGITS,
            json_depth: 1_000,
        }
    }
}

/// Why a message could not be decoded; the text becomes `dlq.reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("header `{header}`: unsupported value {}", quoted(.value))]
    Header { header: &'static str, value: String },
    #[error("message has no value")]
    NoValue,
    #[error("header compressed=true but the value is not an LZ4 frame (no magic 04 22 4D 18)")]
    NotLz4Frame,
    #[error("LZ4 frame: {}", capped(.0))]
    Lz4(String),
    #[error("LZ4 frame inflates past {limit} bytes (max_value_bytes)")]
    TooLarge { limit: usize },
    #[error("JSON array has more than {limit} elements (max_array_elements)")]
    TooManyElements { limit: usize },
    #[error("column `{column}`: JSON nested deeper than {limit} levels (max_json_depth)")]
    TooDeep { column: String, limit: usize },
    #[error("value is not valid JSON: {}", capped(.0))]
    Json(String),
    #[error("{location}: {}", capped(.message))]
    Record { location: String, message: String },
    #[error("envelope dataType {} does not match the topic's type `{expected}`", quoted(.found))]
    WrongDataType { found: String, expected: String },
    #[error("envelope dataType {} is unknown (expected one of {known})", quoted(.found))]
    UnknownDataType { found: String, known: String },
    #[error("content-type application/x-bincode, but table {table} declares no bincode layout")]
    NoBincodeLayout { table: String },
    #[error("bincode: {}", capped(.0))]
    Bincode(String),
    #[error("bincode: {trailing} trailing bytes after the record (at byte offset {at})")]
    BincodeTrailing { trailing: usize, at: usize },
}

impl DecodeError {
    /// The kind of problem, for the dead-letter metric.
    pub fn class(&self) -> RejectClass {
        match self {
            DecodeError::Header { .. } => RejectClass::Encoding,
            DecodeError::TooLarge { .. }
            | DecodeError::TooManyElements { .. }
            | DecodeError::TooDeep { .. } => RejectClass::TooLarge,
            _ => RejectClass::Decode,
        }
    }
}

/// How a message's value is encoded, read from its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentType {
    Json,
    Bincode,
}

/// What the headers say about the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    pub content_type: ContentType,
    pub compressed: bool,
}

impl Encoding {
    /// Reads `content-type`, `compressed` and `schema-version`; a missing header
    /// means its default. When a header repeats, the last one counts.
    pub fn from_headers<'a>(
        headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
    ) -> Result<Encoding, DecodeError> {
        let mut content_type = None;
        let mut compressed = None;
        let mut schema_version = None;
        for (name, value) in headers {
            let slot = if name.eq_ignore_ascii_case("content-type") {
                &mut content_type
            } else if name.eq_ignore_ascii_case("compressed") {
                &mut compressed
            } else if name.eq_ignore_ascii_case("schema-version") {
                &mut schema_version
            } else {
                continue;
            };
            *slot = Some(value.unwrap_or_default());
        }
        // Compared without allocating: this runs for every message.
        let text = |header: &'static str, bytes: &'a [u8]| -> Result<&'a str, DecodeError> {
            std::str::from_utf8(bytes)
                .map(str::trim)
                .map_err(|_| DecodeError::Header {
                    header,
                    value: String::from_utf8_lossy(bytes).into_owned(),
                })
        };
        let refuse = |header: &'static str, value: &str| DecodeError::Header {
            header,
            value: value.to_ascii_lowercase(),
        };
        let content_type = match content_type {
            None => ContentType::Json,
            Some(bytes) => {
                let value = text("content-type", bytes)?;
                // Parameters such as `; charset=utf-8` do not change the encoding.
                let media = value.split(';').next().map_or("", str::trim);
                if media.eq_ignore_ascii_case("application/json") {
                    ContentType::Json
                } else if media.eq_ignore_ascii_case("application/x-bincode") {
                    ContentType::Bincode
                } else {
                    return Err(refuse("content-type", value));
                }
            }
        };
        let compressed = match compressed {
            None => false,
            Some(bytes) => {
                let value = text("compressed", bytes)?;
                if value.eq_ignore_ascii_case("true") {
                    true
                } else if value.eq_ignore_ascii_case("false") {
                    false
                } else {
                    return Err(refuse("compressed", value));
                }
            }
        };
        // schema-version only governs bincode; JSON ignores it.
        if content_type == ContentType::Bincode
            && let Some(bytes) = schema_version
        {
            let version = text("schema-version", bytes)?;
            if version != "1" {
                return Err(refuse("schema-version", version));
            }
        }
        Ok(Encoding {
            content_type,
            compressed,
        })
    }
}

/// One value of a record, as sent: what a JSON pointer or a bincode field gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// JSON text of any kind, as it stands in the message (a string with
    /// its quotes and escapes; `null` is kept and reads as missing).
    Json(&'a str),
    Text(Cow<'a, str>),
    Int(i64),
    UInt(u64),
    Bool(bool),
    Float(f64),
    Time(Timestamp),
    /// A key or header whose bytes are not UTF-8 (named here), where text
    /// was wanted.
    NotUtf8(&'static str),
}

/// One record: the value of each slot of its table's reading (None where
/// the record has none).
#[derive(Debug, Clone, PartialEq)]
pub struct Record<'a> {
    pub slots: Slots<'a>,
}

/// A record's values; on the stack for tables of up to 16 slots, as every
/// message has its own.
pub type Slots<'a> = SmallVec<[Option<Value<'a>>; 16]>;

/// The records of one message: most carry one, kept on the stack.
pub type Records<'a> = SmallVec<[Record<'a>; 1]>;

impl<'a> Record<'a> {
    /// A record with `slots` slots, none of them read yet.
    fn empty(slots: usize) -> Record<'a> {
        Record {
            slots: smallvec::smallvec![None; slots],
        }
    }
}

/// Decodes one message value into the records it carries, in order, within
/// `bounds` (the caller checks the value's own size). An LZ4 frame is
/// inflated into `inflated`, which the records may borrow from.
/// `envelopes` are the dataTypes any table takes (to tell a wrong one from
/// an unknown one).
pub fn decode<'a>(
    table: &Table,
    encoding: Encoding,
    value: Option<&'a [u8]>,
    inflated: &'a mut Vec<u8>,
    bounds: &Bounds,
    envelopes: &[&str],
) -> Result<Records<'a>, DecodeError> {
    let value = value.ok_or(DecodeError::NoValue)?;
    let bytes: &'a [u8] = if encoding.compressed {
        *inflated = lz4_frame::inflate(value, bounds.value_bytes)?;
        inflated
    } else {
        value
    };
    match encoding.content_type {
        ContentType::Json => {
            let records = json::decode(table, bytes, bounds.array_elements, envelopes)?;
            json::check_depth(table, &records, bounds.json_depth)?;
            Ok(records)
        }
        ContentType::Bincode => bincode::decode(table, bytes).map(|r| smallvec::smallvec![r]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;

    const LIMIT: &Bounds = &Bounds {
        value_bytes: 1 << 20,
        array_elements: 10_000,
        decimal_digits: 1_000,
        json_depth: 1_000,
    };

    fn catalog() -> Catalog {
        crate::config::Config::default().catalog().unwrap()
    }

    fn json() -> Encoding {
        Encoding {
            content_type: ContentType::Json,
            compressed: false,
        }
    }

    /// Decodes `value` for `table` and gives each record's values by the
    /// pointer they were declared as.
    fn read(
        table: &str,
        encoding: Encoding,
        value: &[u8],
        bounds: &Bounds,
    ) -> Result<Vec<Vec<(String, String)>>, DecodeError> {
        let catalog = catalog();
        let table = catalog.by_name(table).unwrap();
        let mut inflated = Vec::new();
        let records = decode(
            table,
            encoding,
            Some(value),
            &mut inflated,
            bounds,
            &catalog.envelope_names(),
        )?;
        Ok(records
            .iter()
            .map(|r| {
                r.slots
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| {
                        let shown = match v.as_ref()? {
                            Value::Json(raw) => (*raw).to_owned(),
                            Value::Text(t) => format!("text {t}"),
                            other => format!("{other:?}"),
                        };
                        Some((table.reading.slot_names[i].clone(), shown))
                    })
                    .collect()
            })
            .collect())
    }

    fn price(value: &str) -> Result<Vec<Vec<(String, String)>>, DecodeError> {
        read("crypto_prices", json(), value.as_bytes(), LIMIT)
    }

    fn get<'a>(record: &'a [(String, String)], name: &str) -> Option<&'a str> {
        record
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn headers_default_to_plain_json() {
        assert_eq!(Encoding::from_headers([]).unwrap(), json());
        let h = [
            ("content-type", Some(&b"application/x-bincode"[..])),
            ("compressed", Some(&b"TRUE"[..])),
            ("schema-version", Some(&b"1"[..])),
            ("source", Some(&b"x"[..])),
        ];
        assert_eq!(
            Encoding::from_headers(h).unwrap(),
            Encoding {
                content_type: ContentType::Bincode,
                compressed: true
            }
        );
        // JSON ignores schema-version.
        assert!(Encoding::from_headers([("schema-version", Some(&b"7"[..]))]).is_ok());
        let err = Encoding::from_headers([("content-type", Some(&b"text/csv"[..]))]).unwrap_err();
        assert!(err.to_string().contains("content-type"), "{err}");
        assert!(Encoding::from_headers([("compressed", Some(&b"yes"[..]))]).is_err());
    }

    #[test]
    fn values_are_kept_as_sent() {
        let r = price(
            r#"{"coinId":"bitcoin","usdPrice":12345678901234567890.123456789,
               "marketCap":"98765432109876543210.0123456789","lastUpdated":1763834400100,"extra":{"x":[1]}}"#,
        )
        .unwrap();
        assert_eq!(
            get(&r[0], "/usdPrice"),
            Some("12345678901234567890.123456789")
        );
        assert_eq!(
            get(&r[0], "/marketCap"),
            Some(r#""98765432109876543210.0123456789""#)
        );
        assert_eq!(get(&r[0], "/coinId"), Some(r#""bitcoin""#));
        assert_eq!(get(&r[0], "/lastUpdated"), Some("1763834400100"));
    }

    #[test]
    fn an_envelope_gives_its_payload_and_its_own_fields() {
        let r = price(
            r#"{"messageId":"m","timestamp":1,"source":"coingecko","dataType":"price",
               "payload":{"coinId":"bitcoin","source":"own"},
               "metadata":{"attribution":"CoinGecko API"}}"#,
        )
        .unwrap();
        assert_eq!(get(&r[0], "/coinId"), Some(r#""bitcoin""#));
        assert_eq!(get(&r[0], "/source"), Some(r#""own""#));
        assert_eq!(get(&r[0], "envelope:/source"), Some(r#""coingecko""#));
        assert_eq!(
            get(&r[0], "envelope:/metadata/attribution"),
            Some(r#""CoinGecko API""#)
        );
        // An envelope whose key is escaped is still an envelope.
        let r = price(r#"{"\u0070ayload":{"coinId":"b"},"source":"env"}"#).unwrap();
        assert_eq!(get(&r[0], "/coinId"), Some(r#""b""#));
        assert_eq!(get(&r[0], "envelope:/source"), Some(r#""env""#));
        // `payload: null` is no envelope, on either path.
        for value in [
            r#"{"coinId":"bitcoin","payload":null}"#,
            r#"{"coinId":"bitcoin","\u0070ayload":null}"#,
        ] {
            let r = price(value).unwrap();
            assert_eq!(get(&r[0], "/coinId"), Some(r#""bitcoin""#), "{value}");
        }
    }

    #[test]
    fn envelope_errors_name_their_field() {
        for (value, expected) in [
            (
                r#"{"dataType":5,"payload":{}}"#,
                "record (envelope): field `dataType`: invalid type: integer `5`, expected a string",
            ),
            (
                r#"{"payload":[1]}"#,
                "record (envelope): field `payload`: expected a JSON object",
            ),
            (r#"[1,{"payload":{}}]"#, "element 0: expected a JSON object"),
            (
                r#"{"coinId":"a","coinId":"b"}"#,
                "record: duplicate field `coinId`",
            ),
        ] {
            let err = price(value).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{value}: {err}");
        }
        let err = price(r#"{"dataType":"ohlcv","payload":{}}"#).unwrap_err();
        assert!(matches!(err, DecodeError::WrongDataType { .. }), "{err}");
        let err = price(r#"{"dataType":"trades","payload":{}}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "envelope dataType \"trades\" is unknown (expected one of price, level1, analytics, ohlcv)"
        );
    }

    #[test]
    fn an_array_keeps_its_order_and_its_bound() {
        let r = price(r#"[{"coinId":"a"},{"dataType":"price","payload":{"coinId":"b"}}]"#).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(get(&r[1], "/coinId"), Some(r#""b""#));
        assert!(price("[]").unwrap().is_empty());
        let bounds = Bounds {
            array_elements: 3,
            ..*LIMIT
        };
        let array = |n: usize| format!("[{}]", vec![r#"{"coinId":"a"}"#; n].join(","));
        let decode = |text: &str| read("crypto_prices", json(), text.as_bytes(), &bounds);
        assert_eq!(decode(&array(3)).map(|r| r.len()), Ok(3));
        let err = decode(&array(4)).unwrap_err();
        assert_eq!(err, DecodeError::TooManyElements { limit: 3 });
        assert_eq!(err.class(), RejectClass::TooLarge);
        assert!(matches!(decode("[1,"), Err(DecodeError::Json(_))));
    }

    #[test]
    fn broken_values_are_errors_never_panics() {
        assert!(matches!(price("{"), Err(DecodeError::Json(_))));
        assert!(matches!(
            price(r#"{"coinId":"a"} x"#),
            Err(DecodeError::Json(_))
        ));
        assert!(matches!(price("\"x\""), Err(DecodeError::Record { .. })));
        let err = read("crypto_prices", json(), b"{\"coinId\":\"\xff\"}", LIMIT).unwrap_err();
        assert_eq!(
            err.to_string(),
            "value is not valid JSON: invalid UTF-8 at byte offset 11"
        );
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(price(&deep).is_err());
        // Inside an unknown field it is skipped, and ignored.
        let deep = format!("{{\"x\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(price(&deep).is_ok());
    }

    #[test]
    fn lz4_frame_wraps_any_encoding() {
        let body = br#"{"coinId":"lz"}"#;
        let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
        std::io::Write::write_all(&mut enc, body).unwrap();
        let frame = enc.finish().unwrap();
        let encoding = Encoding {
            content_type: ContentType::Json,
            compressed: true,
        };
        let r = read("crypto_prices", encoding, &frame, LIMIT).unwrap();
        assert_eq!(get(&r[0], "/coinId"), Some(r#""lz""#));
        assert_eq!(
            read("crypto_prices", encoding, body, LIMIT).unwrap_err(),
            DecodeError::NotLz4Frame
        );
        for cut in 1..frame.len() {
            assert!(read("crypto_prices", encoding, &frame[..cut], LIMIT).is_err());
        }
        let small = Bounds {
            value_bytes: 4,
            ..*LIMIT
        };
        assert!(matches!(
            read("crypto_prices", encoding, &frame, &small),
            Err(DecodeError::TooLarge { limit: 4 })
        ));
    }

    #[test]
    fn bincode_follows_the_declared_layout() {
        let record = crate::ops::produce::Level1Bincode {
            symbol: "BTC-USD".into(),
            exchange_id: "binance".into(),
            best_bid: "67000.5".into(),
            best_ask: "67001.25".into(),
            bid_size: None,
            ask_size: Some("0.5".into()),
            timestamp: 1_763_834_400_123_456,
            sequence: Some(300),
            source: "ws".into(),
        };
        let bytes = ::bincode::encode_to_vec(&record, ::bincode::config::standard()).unwrap();
        let encoding = Encoding {
            content_type: ContentType::Bincode,
            compressed: false,
        };
        let r = read("level1_quotes", encoding, &bytes, LIMIT).unwrap();
        assert_eq!(get(&r[0], "/bestAsk"), Some("text 67001.25"));
        assert_eq!(get(&r[0], "/bidSize"), None);
        assert_eq!(get(&r[0], "/sequence"), Some("UInt(300)"));
        assert_eq!(
            get(&r[0], "/timestamp"),
            Some("Time(Timestamp(1763834400123456))")
        );
        let err = read("level1_quotes", encoding, &bytes[..bytes.len() - 2], LIMIT).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "bincode: field `/source`: the value ends early (2 more bytes expected) at byte offset {}",
                bytes.len() - 2
            )
        );
        // A string length far beyond the value is refused before allocating.
        let err = read(
            "level1_quotes",
            encoding,
            &[0xfc, 0xff, 0xff, 0xff, 0x7f],
            LIMIT,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("at byte offset"), "{err}");
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            read("level1_quotes", encoding, &longer, LIMIT),
            Err(DecodeError::BincodeTrailing { trailing: 1, .. })
        ));
    }
}
