//! Decode stage: a message's headers and value bytes → the records it carries.
//!
//! Pure: no I/O, no clock. The headers choose the encoding (JSON by default,
//! bincode), whether the value is an LZ4 frame, and the bincode layout
//! version. A JSON value is a bare record, an envelope, or an array of either.
//! Every failure names where it happened (header, array element, field, byte).

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::batch::RejectClass;
use crate::record::DataType;
use crate::wire::{
    AnalyticsBincode, AnalyticsFields, Fields, Level1Bincode, Level1Fields, OhlcvBincode,
    OhlcvFields, PriceBincode, PriceFields,
};

/// bincode 2's standard configuration (varint integers, little endian), with
/// a limit so that a forged length cannot make the decoder allocate wildly.
const BINCODE_LIMIT: usize = 64 * 1024 * 1024;

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
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            value_bytes: 4 * 1024 * 1024,
            array_elements: 10_000,
            decimal_digits: crate::decimal::DEFAULT_MAX_DIGITS,
        }
    }
}

/// Why a message could not be decoded; the text becomes `dlq.reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("header `{header}`: unsupported value {value:?}")]
    Header { header: &'static str, value: String },
    #[error("message has no value")]
    NoValue,
    #[error("header compressed=true but the value is not an LZ4 frame (no magic 04 22 4D 18)")]
    NotLz4Frame,
    #[error("LZ4 frame: {0}")]
    Lz4(String),
    #[error("LZ4 frame inflates past {limit} bytes (max_value_bytes)")]
    TooLarge { limit: usize },
    #[error("JSON array has more than {limit} elements (max_array_elements)")]
    TooManyElements { limit: usize },
    #[error("value is not valid JSON: {0}")]
    Json(String),
    #[error("{location}: {message}")]
    Record { location: String, message: String },
    #[error("envelope dataType {found:?} does not match the topic's type `{expected}`")]
    WrongDataType { found: String, expected: DataType },
    #[error("envelope dataType {0:?} is unknown (expected price, ohlcv, analytics or level1)")]
    UnknownDataType(String),
    #[error("bincode: {0}")]
    Bincode(String),
    #[error("bincode: {trailing} trailing bytes after the record (at byte offset {at})")]
    BincodeTrailing { trailing: usize, at: usize },
}

impl DecodeError {
    /// The kind of problem, for the dead-letter metric.
    pub fn class(&self) -> RejectClass {
        match self {
            DecodeError::Header { .. } => RejectClass::Encoding,
            DecodeError::TooLarge { .. } | DecodeError::TooManyElements { .. } => {
                RejectClass::TooLarge
            }
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

/// Decodes one message value into the records it carries, in order, within
/// `bounds` (the caller checks the value's own size).
pub fn decode(
    data_type: DataType,
    encoding: Encoding,
    value: Option<&[u8]>,
    bounds: &Bounds,
) -> Result<Vec<Fields>, DecodeError> {
    let value = value.ok_or(DecodeError::NoValue)?;
    let inflated;
    let bytes = if encoding.compressed {
        inflated = crate::lz4_frame::inflate(value, bounds.value_bytes)?;
        &inflated[..]
    } else {
        value
    };
    crate::decimal::with_max_digits(bounds.decimal_digits, || match encoding.content_type {
        ContentType::Json => decode_json(data_type, bytes, bounds.array_elements),
        ContentType::Bincode => decode_bincode(data_type, bytes).map(|f| vec![f]),
    })
}

/// The parts of an object that tell an envelope from a bare record. Every
/// field is raw, so a bare record's own fields of any type never fail here.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe<'a> {
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
    #[serde(borrow)]
    data_type: Option<&'a RawValue>,
    #[serde(borrow)]
    source: Option<&'a RawValue>,
    #[serde(borrow)]
    metadata: Option<&'a RawValue>,
}

/// The envelope's `metadata`: only its attribution is used.
#[derive(Deserialize)]
struct Metadata<'a> {
    #[serde(borrow)]
    attribution: Option<Text<'a>>,
}

/// A JSON string, borrowed from the message unless it has escapes.
#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

fn decode_json(
    data_type: DataType,
    bytes: &[u8],
    max_elements: usize,
) -> Result<Vec<Fields>, DecodeError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        DecodeError::Json(format!("invalid UTF-8 at byte offset {}", e.valid_up_to()))
    })?;
    // The common case, one object: parsed as such straight away (an error
    // is then reported exactly as for any other top-level value).
    if text.trim_start().starts_with('{') {
        if let Some(fields) = parse_bare(data_type, text) {
            return Ok(vec![fields]);
        }
        if let Ok(probe) = serde_json::from_str::<Probe<'_>>(text) {
            return decode_object(data_type, text.trim(), probe, "record").map(|f| vec![f]);
        }
    }
    let top: &RawValue =
        serde_json::from_str(text).map_err(|e| DecodeError::Json(e.to_string()))?;
    let top_text = top.get();
    if top_text.starts_with('[') {
        let elements = array_elements(top_text, max_elements)?;
        elements
            .iter()
            .enumerate()
            .map(|(i, element)| decode_element(data_type, element, &format!("element {i}")))
            .collect()
    } else {
        decode_element(data_type, top, "record").map(|f| vec![f])
    }
}

/// The elements of a JSON array, refused past `max` before more are kept.
fn array_elements(text: &str, max: usize) -> Result<Vec<&RawValue>, DecodeError> {
    struct Elements {
        max: usize,
        exceeded: std::cell::Cell<bool>,
    }
    impl<'de> serde::de::Visitor<'de> for &Elements {
        type Value = Vec<&'de RawValue>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON array")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut elements = Vec::new();
            while let Some(element) = seq.next_element::<&RawValue>()? {
                if elements.len() == self.max {
                    self.exceeded.set(true);
                    return Err(serde::de::Error::custom("too many elements"));
                }
                elements.push(element);
            }
            Ok(elements)
        }
    }
    let visitor = Elements {
        max,
        exceeded: std::cell::Cell::new(false),
    };
    let mut reader = serde_json::Deserializer::from_str(text);
    let elements = serde::Deserializer::deserialize_seq(&mut reader, &visitor);
    if visitor.exceeded.get() {
        return Err(DecodeError::TooManyElements { limit: max });
    }
    elements.map_err(|e| DecodeError::Json(e.to_string()))
}

fn record_error(location: &str, message: impl std::fmt::Display) -> DecodeError {
    DecodeError::Record {
        location: location.to_owned(),
        message: message.to_string(),
    }
}

/// Decodes one object: an envelope (it has `payload`) or a bare record.
fn decode_element(
    data_type: DataType,
    element: &RawValue,
    location: &str,
) -> Result<Fields, DecodeError> {
    if !element.get().starts_with('{') {
        return Err(record_error(location, "expected a JSON object"));
    }
    if let Some(fields) = parse_bare(data_type, element.get()) {
        return Ok(fields);
    }
    let probe: Probe<'_> =
        serde_json::from_str(element.get()).map_err(|e| record_error(location, e))?;
    decode_object(data_type, element.get(), probe, location)
}

/// A bare record in one pass, or None: the object is an envelope, or has
/// an error, and takes the general path (probe, then record), which
/// reports it. The record structs also read the envelope's keys, so that
/// this pass fails wherever the probe would (a repeated `dataType`, say)
/// and succeeds with exactly what the general path would return.
fn parse_bare(data_type: DataType, text: &str) -> Option<Fields> {
    // An envelope that names its payload plainly skips the attempt.
    if text.contains("\"payload\"") {
        return None;
    }
    fn bare<'de, T: Deserialize<'de>>(text: &'de str, payload: impl Fn(&T) -> bool) -> Option<T> {
        serde_json::from_str::<T>(text).ok().filter(|f| !payload(f))
    }
    match data_type {
        DataType::Price => {
            bare(text, |f: &PriceFields| f.envelope_payload.is_some()).map(Fields::Price)
        }
        DataType::Ohlcv => {
            bare(text, |f: &OhlcvFields| f.envelope_payload.is_some()).map(Fields::Ohlcv)
        }
        DataType::Analytics => {
            bare(text, |f: &AnalyticsFields| f.envelope_payload.is_some()).map(Fields::Analytics)
        }
        DataType::Level1 => {
            bare(text, |f: &Level1Fields| f.envelope_payload.is_some()).map(Fields::Level1)
        }
    }
}

/// Decodes one object, given what its probe found: an envelope (it has
/// `payload`) or a bare record.
fn decode_object(
    data_type: DataType,
    text: &str,
    probe: Probe<'_>,
    location: &str,
) -> Result<Fields, DecodeError> {
    let Some(payload) = probe.payload else {
        return parse_fields(data_type, text, || location.to_owned());
    };
    // Locations are only written out for an error: a valid envelope
    // allocates nothing here (its strings are borrowed unless escaped).
    let envelope = |field: &str, e: &dyn std::fmt::Display| {
        record_error(
            &format!("{location} (envelope)"),
            format_args!("field `{field}`: {e}"),
        )
    };
    if let Some(raw) = probe.data_type {
        let Text(name) = serde_json::from_str(raw.get()).map_err(|e| envelope("dataType", &e))?;
        match DataType::from_name(&name) {
            Some(t) if t == data_type => {}
            Some(_) => {
                return Err(DecodeError::WrongDataType {
                    found: name.into_owned(),
                    expected: data_type,
                });
            }
            None => return Err(DecodeError::UnknownDataType(name.into_owned())),
        }
    }
    let source: Option<Text<'_>> = match probe.source {
        Some(raw) => serde_json::from_str(raw.get()).map_err(|e| envelope("source", &e))?,
        None => None,
    };
    let attribution = match probe.metadata {
        Some(raw) => {
            let metadata: Option<Metadata<'_>> =
                serde_json::from_str(raw.get()).map_err(|e| envelope("metadata", &e))?;
            metadata.and_then(|m| m.attribution)
        }
        None => None,
    };
    if !payload.get().starts_with('{') {
        return Err(envelope("payload", &"expected a JSON object"));
    }
    let mut fields = parse_fields(data_type, payload.get(), || {
        format!("{location} (envelope) payload")
    })?;
    fields.fill_from_envelope(
        source.as_ref().map(|s| &*s.0),
        attribution.as_ref().map(|a| &*a.0),
    );
    Ok(fields)
}

/// Parses a record object into the fields of the topic's type; a field of the
/// wrong type is named by its JSON path.
/// `location` names the record in an error.
fn parse_fields(
    data_type: DataType,
    text: &str,
    location: impl Fn() -> String,
) -> Result<Fields, DecodeError> {
    fn parse<'de, T: Deserialize<'de>>(
        text: &'de str,
        location: impl Fn() -> String,
    ) -> Result<T, DecodeError> {
        // Tracking the path costs a third of the parse: only an error needs
        // it, so a failed parse is simply repeated with it.
        if let Ok(value) = serde_json::from_str(text) {
            return Ok(value);
        }
        let mut de = serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." {
                record_error(&location(), inner)
            } else {
                record_error(&location(), format_args!("field `{path}`: {inner}"))
            }
        })
    }
    Ok(match data_type {
        DataType::Price => Fields::Price(parse::<PriceFields>(text, &location)?),
        DataType::Ohlcv => Fields::Ohlcv(parse::<OhlcvFields>(text, &location)?),
        DataType::Analytics => Fields::Analytics(parse::<AnalyticsFields>(text, &location)?),
        DataType::Level1 => Fields::Level1(parse::<Level1Fields>(text, &location)?),
    })
}

/// A slice reader that knows how far bincode got, for the error message.
struct CountingReader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl bincode::de::read::Reader for CountingReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> Result<(), bincode::error::DecodeError> {
        let end = self.at.saturating_add(out.len());
        let Some(src) = self.bytes.get(self.at..end) else {
            return Err(bincode::error::DecodeError::UnexpectedEnd {
                additional: end - self.bytes.len(),
            });
        };
        out.copy_from_slice(src);
        self.at = end;
        Ok(())
    }
}

/// bincode's errors in words, with the byte offset it had reached (its own
/// Display is its Debug).
fn describe_bincode(e: &bincode::error::DecodeError, at: usize) -> String {
    use bincode::error::DecodeError as E;
    let what = match e {
        E::UnexpectedEnd { additional } => {
            format!("the value ends early ({additional} more bytes expected)")
        }
        E::LimitExceeded => "a length exceeds the size limit".to_owned(),
        E::UnexpectedVariant { found, .. } => format!("option tag {found} is neither 0 nor 1"),
        E::Utf8 { inner } => format!("text is not valid UTF-8 ({inner})"),
        E::InvalidIntegerType { found, .. } => format!("invalid integer encoding ({found:?})"),
        other => format!("{other:?}"),
    };
    format!("{what} at byte offset {at}")
}

fn decode_bincode(data_type: DataType, bytes: &[u8]) -> Result<Fields, DecodeError> {
    fn read<T: bincode::Decode<()>>(bytes: &[u8]) -> Result<T, DecodeError> {
        let config = bincode::config::standard().with_limit::<BINCODE_LIMIT>();
        let mut reader = CountingReader { bytes, at: 0 };
        let value = bincode::decode_from_reader::<T, _, _>(&mut reader, config)
            .map_err(|e| DecodeError::Bincode(describe_bincode(&e, reader.at)))?;
        let used = reader.at;
        if used != bytes.len() {
            return Err(DecodeError::BincodeTrailing {
                trailing: bytes.len() - used,
                at: used,
            });
        }
        Ok(value)
    }
    let field_error = |e: crate::wire::BincodeFieldError| DecodeError::Bincode(e.to_string());
    Ok(match data_type {
        DataType::Price => Fields::Price(
            read::<PriceBincode>(bytes)?
                .into_fields()
                .map_err(field_error)?,
        ),
        DataType::Ohlcv => Fields::Ohlcv(
            read::<OhlcvBincode>(bytes)?
                .into_fields()
                .map_err(field_error)?,
        ),
        DataType::Analytics => Fields::Analytics(
            read::<AnalyticsBincode>(bytes)?
                .into_fields()
                .map_err(field_error)?,
        ),
        DataType::Level1 => Fields::Level1(
            read::<Level1Bincode>(bytes)?
                .into_fields()
                .map_err(field_error)?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Timestamp;

    const LIMIT: &Bounds = &Bounds {
        value_bytes: 1 << 20,
        array_elements: 10_000,
        decimal_digits: 1_000,
    };

    fn json() -> Encoding {
        Encoding {
            content_type: ContentType::Json,
            compressed: false,
        }
    }

    fn price(value: &str) -> Result<Vec<Fields>, DecodeError> {
        decode(DataType::Price, json(), Some(value.as_bytes()), LIMIT)
    }

    fn one_price(value: &str) -> PriceFields {
        match price(value).unwrap().pop() {
            Some(Fields::Price(p)) => p,
            other => panic!("not a price: {other:?}"),
        }
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
    }

    #[test]
    fn headers_refuse_unknown_values() {
        let err = Encoding::from_headers([("content-type", Some(&b"text/csv"[..]))]).unwrap_err();
        assert!(err.to_string().contains("content-type"), "{err}");
        let err = Encoding::from_headers([
            ("content-type", Some(&b"application/x-bincode"[..])),
            ("schema-version", Some(&b"2"[..])),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("schema-version"), "{err}");
        assert!(Encoding::from_headers([("compressed", Some(&b"yes"[..]))]).is_err());
    }

    #[test]
    fn bare_record_keeps_decimals_exact() {
        let p = one_price(
            r#"{"coinId":"bitcoin","symbol":"BTC","usdPrice":12345678901234567890.123456789,
               "marketCap":"98765432109876543210.0123456789","lastUpdated":1763834400100,"source":"s"}"#,
        );
        assert_eq!(
            p.usd_price.unwrap().0.to_string(),
            "12345678901234567890.123456789"
        );
        assert_eq!(
            p.market_cap.unwrap().0.to_string(),
            "98765432109876543210.0123456789"
        );
        assert_eq!(p.last_updated.unwrap().0, Timestamp(1_763_834_400_100_000));
    }

    #[test]
    fn envelope_fills_source_and_attribution() {
        let p = one_price(
            r#"{"messageId":"m","timestamp":1,"source":"coingecko","dataType":"price",
               "payload":{"coinId":"bitcoin","symbol":"BTC","usdPrice":"1","lastUpdated":"2026-11-22T20:00:00.123456+02:00"},
               "metadata":{"attribution":"CoinGecko API"}}"#,
        );
        assert_eq!(p.source.as_deref(), Some("coingecko"));
        assert_eq!(p.attribution.as_deref(), Some("CoinGecko API"));
        assert_eq!(p.last_updated.unwrap().0, Timestamp(1_795_370_400_123_456));
        // The payload's own fields win.
        let p = one_price(
            r#"{"source":"env","payload":{"source":"own","attribution":"mine"},"metadata":{"attribution":"env"}}"#,
        );
        assert_eq!(
            (p.source.as_deref(), p.attribution.as_deref()),
            (Some("own"), Some("mine"))
        );
    }

    /// The one-pass path for bare records answers exactly as the probe's.
    #[test]
    fn bare_records_in_one_pass_match_the_general_path() {
        // A key the probe reads, repeated: refused, as before.
        let err =
            price(r#"{"coinId":"bitcoin","dataType":"price","dataType":"price"}"#).unwrap_err();
        assert!(
            err.to_string().contains("duplicate field `dataType`"),
            "{err}"
        );
        // An envelope whose key is escaped is still an envelope.
        let p = one_price(
            r#"{"\u0070ayload":{"coinId":"bitcoin","symbol":"BTC","usdPrice":"1.50"},"source":"env"}"#,
        );
        assert_eq!(p.coin_id.as_deref(), Some("bitcoin"));
        assert_eq!(p.source.as_deref(), Some("env"));
        // `payload: null` is no envelope, on either path.
        let p = one_price(r#"{"coinId":"bitcoin","payload":null}"#);
        assert_eq!(p.coin_id.as_deref(), Some("bitcoin"));
        let p = one_price(r#"{"coinId":"bitcoin","\u0070ayload":null}"#);
        assert_eq!(p.coin_id.as_deref(), Some("bitcoin"));
        // A field of the wrong type is named, from the general path.
        let err = price(r#"{"coinId":7}"#).unwrap_err();
        assert!(err.to_string().contains("coinId"), "{err}");
    }

    #[test]
    fn envelope_strings_with_escapes_and_envelope_errors_name_their_field() {
        let rows = price(
            r#"{"source":"co\u0069n\"g","dataType":"pri\u0063e","payload":{"coinId":"b"},
               "metadata":{"attribution":"A\/B"}}"#,
        )
        .unwrap();
        let Fields::Price(p) = &rows[0] else { panic!() };
        assert_eq!(
            (p.source.as_deref(), p.attribution.as_deref()),
            (Some("coin\"g"), Some("A/B"))
        );
        for (value, expected) in [
            (
                r#"{"source":5,"payload":{}}"#,
                "record (envelope): field `source`: invalid type: integer `5`, expected a string",
            ),
            (
                r#"{"metadata":{"attribution":[]},"payload":{}}"#,
                "record (envelope): field `metadata`: invalid type: sequence, expected a string",
            ),
            (
                r#"{"payload":[1]}"#,
                "record (envelope): field `payload`: expected a JSON object",
            ),
            (
                r#"{"payload":{"usdPrice":true}}"#,
                "record (envelope) payload: field `usdPrice`: ",
            ),
            (
                r#"[1,{"payload":{"coinId":1}}]"#,
                "element 0: expected a JSON object",
            ),
        ] {
            let err = price(value).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{value}: {err}");
        }
    }

    #[test]
    fn envelope_of_another_type_is_refused() {
        let err = price(r#"{"dataType":"ohlcv","payload":{}}"#).unwrap_err();
        assert!(matches!(err, DecodeError::WrongDataType { .. }), "{err}");
        let err = price(r#"{"dataType":"trades","payload":{}}"#).unwrap_err();
        assert!(matches!(err, DecodeError::UnknownDataType(_)), "{err}");
    }

    #[test]
    fn array_keeps_order_and_names_the_bad_element() {
        let rows =
            price(r#"[{"coinId":"a"},{"dataType":"price","payload":{"coinId":"b"}}]"#).unwrap();
        let ids: Vec<_> = rows
            .iter()
            .map(|f| match f {
                Fields::Price(p) => p.coin_id.clone().unwrap(),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(ids, ["a", "b"]);
        let err = price(r#"[{"coinId":"a"},{"usdPrice":true}]"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("element 1") && err.contains("usdPrice"),
            "{err}"
        );
        assert!(price("[]").unwrap().is_empty());
    }

    #[test]
    fn wrong_types_name_the_field() {
        let err = price(r#"{"coinId":5}"#).unwrap_err().to_string();
        assert!(err.contains("coinId"), "{err}");
        let err = price(r#"{"usdPrice":"NaN"}"#).unwrap_err().to_string();
        assert!(err.contains("usdPrice"), "{err}");
        let err = price(r#"{"lastUpdated":"2026-11-22T18:00:00"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("lastUpdated") && err.contains("offset"),
            "{err}"
        );
        let err = price(r#"{"lastUpdated":1.5}"#).unwrap_err().to_string();
        assert!(err.contains("lastUpdated"), "{err}");
        assert!(matches!(price("{"), Err(DecodeError::Json(_))));
        assert!(matches!(price("\"x\""), Err(DecodeError::Record { .. })));
    }

    #[test]
    fn unknown_fields_and_odd_bare_fields_are_ignored() {
        let p = one_price(r#"{"coinId":"a","metadata":5,"dataType":7,"extra":{"x":[1]}}"#);
        assert_eq!(p.coin_id.as_deref(), Some("a"));
    }

    #[test]
    fn invalid_utf8_names_the_byte() {
        let err = decode(
            DataType::Price,
            json(),
            Some(b"{\"coinId\":\"\xff\"}"),
            LIMIT,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "value is not valid JSON: invalid UTF-8 at byte offset 11"
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(price(&deep).is_err());
        // Inside an unknown field it is skipped without recursion, and ignored.
        let deep = format!("{{\"x\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(&price(&deep).unwrap()[0], Fields::Price(p) if p.coin_id.is_none()));
    }

    #[test]
    fn arrays_and_decimals_are_bounded_by_name() {
        let element =
            r#"{"coinId":"a","symbol":"A","usdPrice":1,"lastUpdated":1763834400000,"source":"s"}"#;
        let array = |n: usize| format!("[{}]", vec![element; n].join(","));
        let bounds = Bounds {
            array_elements: 3,
            ..*LIMIT
        };
        let decode_json =
            |text: &str| decode(DataType::Price, json(), Some(text.as_bytes()), &bounds);
        assert_eq!(decode_json(&array(3)).map(|rows| rows.len()), Ok(3));
        let err = decode_json(&array(4)).unwrap_err();
        assert_eq!(err, DecodeError::TooManyElements { limit: 3 });
        assert_eq!(err.class(), RejectClass::TooLarge);
        assert_eq!(
            err.to_string(),
            "JSON array has more than 3 elements (max_array_elements)"
        );
        // A broken array is still a JSON error.
        assert!(matches!(decode_json("[1,"), Err(DecodeError::Json(_))));
        // The bomb: a decimal of 131,072 digits, six bytes as sent.
        let bomb = array(2).replace(r#""usdPrice":1"#, r#""usdPrice":1e131071"#);
        let err = decode_json(&bomb).unwrap_err().to_string();
        assert!(
            err.contains("element 0") && err.contains("more than max_decimal_digits (1000)"),
            "{err}"
        );
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
        let rows = decode(DataType::Price, encoding, Some(&frame), LIMIT).unwrap();
        assert!(matches!(&rows[0], Fields::Price(p) if p.coin_id.as_deref() == Some("lz")));
        assert_eq!(
            decode(DataType::Price, encoding, Some(body), LIMIT).unwrap_err(),
            DecodeError::NotLz4Frame
        );
        for cut in 1..frame.len() {
            assert!(
                matches!(
                    decode(DataType::Price, encoding, Some(&frame[..cut]), LIMIT),
                    Err(DecodeError::Lz4(_) | DecodeError::NotLz4Frame)
                ),
                "frame cut at {cut} of {}",
                frame.len()
            );
        }
        let mut longer = frame.clone();
        longer.push(0);
        assert!(matches!(
            decode(DataType::Price, encoding, Some(&longer), LIMIT),
            Err(DecodeError::Lz4(_))
        ));
        assert!(matches!(
            decode(
                DataType::Price,
                encoding,
                Some(&frame),
                &Bounds {
                    value_bytes: 4,
                    ..*LIMIT
                }
            ),
            Err(DecodeError::TooLarge { limit: 4 })
        ));
    }

    #[test]
    fn bincode_uses_the_standard_config() {
        let record = Level1Bincode {
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
        let bytes = bincode::encode_to_vec(&record, bincode::config::standard()).unwrap();
        let encoding = Encoding {
            content_type: ContentType::Bincode,
            compressed: false,
        };
        let rows = decode(DataType::Level1, encoding, Some(&bytes), LIMIT).unwrap();
        let Fields::Level1(f) = &rows[0] else {
            panic!()
        };
        assert_eq!(f.timestamp.unwrap().0, Timestamp(1_763_834_400_123_456));
        assert_eq!(f.best_ask.as_ref().unwrap().0.to_string(), "67001.25");
        assert_eq!(f.sequence, Some(300));

        let err = decode(
            DataType::Level1,
            encoding,
            Some(&bytes[..bytes.len() - 2]),
            LIMIT,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "bincode: the value ends early (2 more bytes expected) at byte offset {}",
                bytes.len() - 2
            )
        );
        // A string length far beyond the value is refused before allocating.
        let huge_claim = [0xfc, 0xff, 0xff, 0xff, 0x7f];
        let err = decode(DataType::Level1, encoding, Some(&huge_claim), LIMIT)
            .unwrap_err()
            .to_string();
        assert!(err.contains("at byte offset"), "{err}");
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            decode(DataType::Level1, encoding, Some(&longer), LIMIT),
            Err(DecodeError::BincodeTrailing { trailing: 1, .. })
        ));
        let mut bad = record;
        bad.best_bid = "abc".into();
        let bytes = bincode::encode_to_vec(&bad, bincode::config::standard()).unwrap();
        let err = decode(DataType::Level1, encoding, Some(&bytes), LIMIT)
            .unwrap_err()
            .to_string();
        assert!(err.contains("bestBid"), "{err}");
    }
}
