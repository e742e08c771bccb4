//! Validate stage: a decoded record → a row of its table, or the rule it breaks.
//!
//! Pure: the clock reading and the message's facts come in as [`Context`].
//! Each column, in the table's order, takes the first value its sources
//! have (else its default), read as its type; then its rules are checked,
//! then the checks between columns. The row goes into the batch's COPY
//! buffer straight away. An error names the column and where its value came
//! from: `column `usd_price` (/usdPrice): must be > 0, got 0`.

use std::borrow::Cow;
use std::cmp::Ordering;

use smallvec::SmallVec;

use crate::catalog::{
    Bound, BoundValue, Check, Column, ColumnType, Epoch, JsonKind, Source, Table,
};
use crate::decimal::Decimal;
use crate::message::SourceMessage;
use crate::pipeline::copy_format::{Cell, RowBuffer};
use crate::pipeline::decode::{Record, Value};
use crate::quote::{capped, quoted};
use crate::time::Timestamp;

/// What validation needs besides the record.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The message the record came in (key, headers, topic, partition,
    /// offset, timestamp).
    pub message: &'a SourceMessage,
    /// The captures of the table's topic pattern for this topic.
    pub captures: &'a [Option<String>],
    /// The sink's clock, for `max_ahead_ms`.
    pub now: Timestamp,
}

/// A rule a record breaks; the text becomes `dlq.reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{subject}: {problem}")]
pub struct ValidationError {
    /// `column `x` (/y)`, or `check `a <= b``.
    pub subject: String,
    pub problem: String,
    /// The value does not read as its column's type (a value that does not
    /// decode), rather than breaking a rule.
    pub unreadable: bool,
}

fn fail<T>(column: &Column, problem: impl Into<String>) -> Result<T, ValidationError> {
    Err(ValidationError {
        subject: column.label(),
        problem: problem.into(),
        unreadable: false,
    })
}

/// Validates one record of `table` and appends its row to `rows`.
pub fn validate(
    table: &Table,
    record: &Record<'_>,
    ctx: &Context<'_>,
    rows: &mut RowBuffer,
) -> Result<(), ValidationError> {
    // On the stack for tables of up to 16 columns: this runs for every row.
    let mut cells: SmallVec<[Cell<'_>; 16]> = SmallVec::with_capacity(table.columns.len());
    for column in &table.columns {
        cells.push(cell(column, record, ctx)?);
    }
    for check in &table.checks {
        holds(table, check, &cells)?;
    }
    rows.push(&cells);
    Ok(())
}

/// One column's value: read, typed and checked.
fn cell<'r>(
    column: &'r Column,
    record: &'r Record<'_>,
    ctx: &Context<'r>,
) -> Result<Cell<'r>, ValidationError> {
    let sent = column
        .sources
        .iter()
        .find_map(|source| source_value(source, record, ctx));
    let value = match (sent, column.default.as_deref()) {
        (Some(value), _) => Given::Sent(value),
        (None, Some(default)) => Given::Default(default),
        (None, None) if column.required => {
            return fail(column, "required but missing or null");
        }
        (None, None) => return Ok(Cell::Null),
    };
    let cell = read(column, value).map_err(|problem| ValidationError {
        subject: column.label(),
        problem,
        unreadable: true,
    })?;
    rules(column, &cell, ctx).or_else(|problem| fail(column, problem))?;
    Ok(cell)
}

/// A source's value, if it has one (JSON `null` counts as none).
fn source_value<'r>(
    source: &Source,
    record: &'r Record<'_>,
    ctx: &Context<'r>,
) -> Option<Value<'r>> {
    let m = ctx.message;
    match source {
        Source::Record(slot) | Source::Envelope(slot) => match record.slots.get(*slot)? {
            None | Some(Value::Json("null")) => None,
            Some(v) => Some(v.clone()),
        },
        Source::Key => m.key().map(|k| match std::str::from_utf8(k) {
            Ok(text) => Value::Text(Cow::Borrowed(text)),
            Err(_) => Value::NotUtf8("the message key"),
        }),
        Source::Header(name) => m
            .header_pairs()
            .filter(|(n, _)| n == name)
            .last()
            .and_then(|(_, v)| v)
            .map(|v| match std::str::from_utf8(v) {
                Ok(text) => Value::Text(Cow::Borrowed(text)),
                Err(_) => Value::NotUtf8("the header"),
            }),
        Source::Topic => Some(Value::Text(Cow::Borrowed(&m.topic))),
        Source::Capture(i) => ctx
            .captures
            .get(*i)?
            .as_deref()
            .map(|c| Value::Text(Cow::Borrowed(c))),
        Source::Partition => Some(Value::Int(i64::from(m.partition))),
        Source::Offset => Some(Value::Int(m.offset)),
        Source::Timestamp => m
            .timestamp_ms
            .and_then(Timestamp::from_millis)
            .map(Value::Time),
    }
}

/// What a JSON value is, for messages.
fn kind(raw: &str) -> &'static str {
    match raw.as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b't') | Some(b'f') => "a boolean",
        Some(b'n') => "null",
        Some(b'"') => "a string",
        _ => "a number",
    }
}

/// The text of a JSON string, given as its raw JSON (quotes included). Most
/// carry no escape: their text is what stands between the quotes, with no
/// second parse (serde_json has already checked the string).
fn string_text(raw: &str) -> Result<Cow<'_, str>, String> {
    match raw.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(inner) if !inner.contains('\\') => Ok(Cow::Borrowed(inner)),
        _ => serde_json::from_str(raw).map_err(|e| e.to_string()),
    }
}

fn is_number(raw: &str) -> bool {
    raw.starts_with(|c: char| c == '-' || c.is_ascii_digit())
}

fn is_integer(raw: &str) -> bool {
    is_number(raw) && !raw.contains(['.', 'e', 'E'])
}

/// Where a column's value comes from: the message, or the column's
/// `default` (text in the configuration's own forms: a timestamp's is
/// ISO-8601 whatever forms the column reads from messages, a jsonb's is
/// JSON).
enum Given<'r> {
    Sent(Value<'r>),
    Default(&'r str),
}

/// Reads a value as the column's type.
fn read<'r>(column: &Column, given: Given<'r>) -> Result<Cell<'r>, String> {
    let value = match given {
        Given::Sent(value) => value,
        Given::Default(text) if column.column_type == ColumnType::TimestampTz => {
            return crate::time::parse_iso8601(text).and_then(storable);
        }
        // A jsonb default is JSON text, a boolean's `true` or `false`:
        // checked when the catalog loads.
        Given::Default(text)
            if matches!(column.column_type, ColumnType::Jsonb | ColumnType::Boolean) =>
        {
            Value::Json(text)
        }
        Given::Default(text) => Value::Text(Cow::Borrowed(text)),
    };
    let ty = column.column_type;
    if let Value::NotUtf8(what) = value {
        return Err(format!("{what} is not UTF-8"));
    }
    match (ty, value) {
        (ColumnType::Text, Value::Json(raw)) if raw.starts_with('"') => {
            string_text(raw).map(Cell::Text)
        }
        (ColumnType::Text, Value::Text(t)) => Ok(Cell::Text(t)),
        (ColumnType::Text, Value::Int(v)) => Ok(Cell::Text(v.to_string().into())),
        (ColumnType::Text, Value::UInt(v)) => Ok(Cell::Text(v.to_string().into())),
        (ColumnType::Text, Value::Json(raw)) => {
            Err(format!("expected a string, found {}", kind(raw)))
        }

        (ColumnType::Numeric, Value::Json(raw)) => {
            let text = if raw.starts_with('"') {
                string_text(raw)?
            } else if is_number(raw) {
                Cow::Borrowed(raw)
            } else {
                return Err(format!(
                    "expected a decimal number or string, found {}",
                    kind(raw)
                ));
            };
            Decimal::parse(&text)
                .map(Cell::Numeric)
                .map_err(|e| e.to_string())
        }
        (ColumnType::Numeric, Value::Text(t)) => Decimal::parse(&t)
            .map(Cell::Numeric)
            .map_err(|e| e.to_string()),
        (ColumnType::Numeric, Value::Int(v)) => Ok(Cell::Numeric(Decimal::from_i64(v))),
        (ColumnType::Numeric, Value::UInt(v)) => Decimal::parse(&v.to_string())
            .map(Cell::Numeric)
            .map_err(|e| e.to_string()),

        (ColumnType::BigInt | ColumnType::Integer, value) => {
            let v = integer(value)?;
            if ty == ColumnType::BigInt {
                i64::try_from(v)
                    .map(Cell::BigInt)
                    .map_err(|_| format!("{v} is outside bigint (-2^63..2^63-1)"))
            } else {
                i32::try_from(v)
                    .map(Cell::Integer)
                    .map_err(|_| format!("{v} is outside integer (-2^31..2^31-1)"))
            }
        }

        (ColumnType::Boolean, Value::Json("true")) | (ColumnType::Boolean, Value::Bool(true)) => {
            Ok(Cell::Boolean(true))
        }
        (ColumnType::Boolean, Value::Json("false")) | (ColumnType::Boolean, Value::Bool(false)) => {
            Ok(Cell::Boolean(false))
        }
        (ColumnType::Boolean, Value::Text(t)) if t == "true" || t == "false" => {
            Ok(Cell::Boolean(t == "true"))
        }
        (ColumnType::Boolean, Value::Json(raw)) => {
            Err(format!("expected a boolean, found {}", kind(raw)))
        }

        (ColumnType::Double, Value::Json(raw)) if is_number(raw) => double(raw).map(Cell::Double),
        (ColumnType::Double, Value::Float(v)) => Ok(Cell::Double(v)),
        (ColumnType::Double, Value::Int(v)) => Ok(Cell::Double(v as f64)),
        (ColumnType::Double, Value::UInt(v)) => Ok(Cell::Double(v as f64)),
        (ColumnType::Double, Value::Text(t)) => double(&t).map(Cell::Double),
        (ColumnType::Double, Value::Json(raw)) => {
            Err(format!("expected a number, found {}", kind(raw)))
        }

        (ColumnType::TimestampTz, value) => timestamp(column, value),

        (ColumnType::Jsonb, Value::Json(raw)) => Ok(Cell::Jsonb(Cow::Borrowed(raw))),
        (ColumnType::Jsonb, Value::Text(t)) => serde_json::to_string(&*t)
            .map(|s| Cell::Jsonb(s.into()))
            .map_err(|e| e.to_string()),
        (ColumnType::Jsonb, Value::Int(v)) => Ok(Cell::Jsonb(v.to_string().into())),
        (ColumnType::Jsonb, Value::UInt(v)) => Ok(Cell::Jsonb(v.to_string().into())),
        (ColumnType::Jsonb, Value::Bool(v)) => Ok(Cell::Jsonb(v.to_string().into())),

        (ty, other) => Err(format!(
            "a {} cannot hold {}",
            ty.name(),
            match other {
                Value::Time(_) => "a timestamp",
                Value::Bool(_) => "a boolean",
                Value::Float(_) => "a floating-point number",
                Value::Int(_) | Value::UInt(_) => "an integer",
                Value::Text(_) | Value::Json(_) | Value::NotUtf8(_) => "this value",
            }
        )),
    }
}

/// A timestamp in one of the forms the column declares: ISO-8601 strings
/// (`iso8601`), integers of an epoch unit (`epoch`), or a value the source
/// gives as a time (the Kafka timestamp, a bincode timestamp).
fn timestamp<'r>(column: &Column, value: Value<'r>) -> Result<Cell<'r>, String> {
    let iso = |text: &str| {
        if column.iso8601 {
            crate::time::parse_iso8601(text).and_then(storable)
        } else {
            Err(expected(column, "a string"))
        }
    };
    let integer = |v: Option<i64>| match column.epoch {
        Some(unit) => epoch(v, unit),
        None => Err(expected(column, "an integer")),
    };
    match value {
        Value::Time(t) => storable(t),
        Value::Json(raw) if raw.starts_with('"') => iso(&string_text(raw)?),
        Value::Text(t) => iso(&t),
        Value::Json(raw) if is_integer(raw) => integer(raw.parse::<i64>().ok()),
        Value::Int(v) => integer(Some(v)),
        Value::UInt(v) => integer(i64::try_from(v).ok()),
        Value::Json(raw) if is_number(raw) => Err(expected(column, "a fraction")),
        Value::Json(raw) => Err(expected(column, kind(raw))),
        Value::NotUtf8(what) => Err(format!("{what} is not UTF-8")),
        Value::Bool(_) => Err(expected(column, "a boolean")),
        Value::Float(_) => Err(expected(column, "a floating-point number")),
    }
}

/// What a timestamp column expects, and what it found instead.
fn expected(column: &Column, found: &str) -> String {
    let forms = match (column.iso8601, column.epoch) {
        (true, Some(unit)) => format!(
            "an ISO-8601 string or epoch {} as an integer",
            epoch_name(unit)
        ),
        (false, Some(unit)) => format!("epoch {} as an integer", epoch_name(unit)),
        (_, None) => "an ISO-8601 string with an offset".to_owned(),
    };
    format!("expected {forms}, found {found}")
}

/// An integer value, as i128 so that the range error can name it.
fn integer(value: Value<'_>) -> Result<i128, String> {
    match value {
        Value::Int(v) => Ok(i128::from(v)),
        Value::UInt(v) => Ok(i128::from(v)),
        Value::Json(raw) if is_integer(raw) => raw
            .parse::<i128>()
            .map_err(|_| format!("{} is out of range", capped(raw))),
        Value::Text(t) if is_integer(&t) => t
            .parse::<i128>()
            .map_err(|_| format!("{} is out of range", capped(&t))),
        Value::Json(raw) if is_number(raw) => {
            Err(format!("expected an integer, found {}", capped(raw)))
        }
        Value::Json(raw) => Err(format!("expected an integer, found {}", kind(raw))),
        Value::Text(t) => Err(format!("{} is not an integer", quoted(&t))),
        Value::Bool(_) => Err("expected an integer, found a boolean".into()),
        Value::Float(v) => Err(format!("expected an integer, found {v}")),
        Value::Time(_) => Err("expected an integer, found a timestamp".into()),
        Value::NotUtf8(what) => Err(format!("{what} is not UTF-8")),
    }
}

fn epoch_name(epoch: Epoch) -> &'static str {
    match epoch {
        Epoch::Seconds => "seconds",
        Epoch::Millis => "milliseconds",
        Epoch::Micros => "microseconds",
    }
}

fn epoch<'r>(value: Option<i64>, unit: Epoch) -> Result<Cell<'r>, String> {
    value
        .and_then(|v| v.checked_mul(unit.micros()))
        .ok_or_else(|| format!("epoch {} out of range", epoch_name(unit)))
        .and_then(|micros| storable(Timestamp(micros)))
}

/// A timestamp PostgreSQL's `timestamptz` holds; one before its range
/// would otherwise wrap into a date far in the future.
fn storable<'r>(t: Timestamp) -> Result<Cell<'r>, String> {
    if t < Timestamp::EARLIEST_STORABLE {
        return Err(format!(
            "{t} is before 4714-11-24 BC, the earliest timestamptz PostgreSQL holds"
        ));
    }
    Ok(Cell::Time(t))
}

/// A numeral as PostgreSQL reads a `double precision`: one beyond the
/// type's range (`1e400`), or a non-zero one so small that it would read as
/// 0 (`1e-400`), is refused as PostgreSQL's own input refuses it, where a
/// plain parse would store `Infinity` or 0. `Infinity` and `NaN` spelled
/// out are values of the type.
fn double(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("{} is not a number", quoted(text)))?;
    // Looked at only for the two results a numeral out of range gives.
    let spelled = || {
        text.bytes()
            .any(|b| b.is_ascii_alphabetic() && b != b'e' && b != b'E')
    };
    let non_zero = || {
        let mantissa = text.split(['e', 'E']).next().unwrap_or(text);
        mantissa.bytes().any(|b| (b'1'..=b'9').contains(&b))
    };
    if (value.is_infinite() && !spelled()) || (value == 0.0 && non_zero()) {
        return Err(format!(
            "{} is out of range for double precision",
            capped(text)
        ));
    }
    Ok(value)
}

/// The column's own rules: bounds, how far ahead, allowed values, JSON kind.
fn rules(column: &Column, cell: &Cell<'_>, ctx: &Context<'_>) -> Result<(), String> {
    if let Some(bound) = &column.lower {
        check_bound(cell, bound, Ordering::Greater)?;
    }
    if let Some(bound) = &column.upper {
        check_bound(cell, bound, Ordering::Less)?;
    }
    if let (Some(ahead), Cell::Time(t)) = (column.max_ahead_micros, cell)
        && t.micros() > ctx.now.micros().saturating_add(ahead)
    {
        return Err(format!(
            "{t} is more than {} ahead of the sink's clock ({})",
            duration_words(ahead),
            ctx.now
        ));
    }
    if let Cell::Text(text) = cell {
        if let Some(allowed) = &column.one_of
            && !allowed.iter().any(|a| a == text)
        {
            return Err(format!(
                "{} is not one of {}",
                quoted(text),
                allowed.join(" ")
            ));
        }
        if let Some(by_topic) = &column.one_of_by_topic {
            let topic = &*ctx.message.topic;
            match by_topic.get(topic) {
                Some(allowed) if allowed.iter().any(|a| a == text) => {}
                Some(allowed) => {
                    return Err(format!(
                        "{} is not one of topic {topic}'s: {}",
                        quoted(text),
                        allowed.join(" ")
                    ));
                }
                None => return Err(format!("topic {topic} takes no value here")),
            }
        }
    }
    if let (Some(want), Cell::Jsonb(raw)) = (column.json_type, cell) {
        let found = JsonKind::of(raw);
        if found != Some(want) {
            return Err(format!(
                "expected a JSON {}, found {}",
                want.name(),
                kind(raw)
            ));
        }
    }
    Ok(())
}

fn duration_words(micros: i64) -> String {
    match micros {
        m if m % 60_000_000 == 0 => {
            let n = m / 60_000_000;
            format!("{n} minute{}", if n == 1 { "" } else { "s" })
        }
        m if m % 1_000_000 == 0 => format!("{} s", m / 1_000_000),
        m => format!("{} ms", m / 1000),
    }
}

/// Checks one bound: `side` is where the value must lie (Greater: above a
/// lower bound).
fn check_bound(cell: &Cell<'_>, bound: &Bound, side: Ordering) -> Result<(), String> {
    let order = match (cell, &bound.value) {
        (Cell::Numeric(d), BoundValue::Decimal(b)) => d.cmp_value(b),
        (Cell::BigInt(v), BoundValue::Decimal(b)) => Decimal::from_i64(*v).cmp_value(b),
        (Cell::Integer(v), BoundValue::Decimal(b)) => Decimal::from_i64(i64::from(*v)).cmp_value(b),
        (Cell::Double(v), BoundValue::Double(b)) => match v.partial_cmp(b) {
            Some(o) => o,
            None => return Err(format!("{v} is not a number")),
        },
        (Cell::Time(t), BoundValue::Time(b)) => t.cmp(b),
        _ => return Ok(()),
    };
    let ok = order == side || (bound.inclusive && order == Ordering::Equal);
    if ok {
        return Ok(());
    }
    let op = match (side, bound.inclusive) {
        (Ordering::Greater, false) => ">",
        (Ordering::Greater, true) => ">=",
        (_, false) => "<",
        (_, true) => "<=",
    };
    // Formatted only here: every row passes through this check.
    Err(format!("must be {op} {}, got {}", bound.text, shown(cell)))
}

/// A check between two columns; NULL on either side passes.
fn holds(table: &Table, check: &Check, cells: &[Cell<'_>]) -> Result<(), ValidationError> {
    let (a, b) = (&cells[check.left], &cells[check.right]);
    let Some(order) = compare(a, b) else {
        return Ok(());
    };
    if order == Ordering::Less || (!check.strict && order == Ordering::Equal) {
        return Ok(());
    }
    let (left, right) = (&table.columns[check.left], &table.columns[check.right]);
    let op = if check.strict { "<" } else { "<=" };
    Err(ValidationError {
        subject: format!("check `{} {op} {}`", left.name, right.name),
        problem: format!(
            "{} is {}, {} is {}",
            left.label(),
            shown(a),
            right.label(),
            shown(b)
        ),
        unreadable: false,
    })
}

fn shown(cell: &Cell<'_>) -> String {
    match cell {
        Cell::Null => "null".into(),
        Cell::Text(t) => quoted(t),
        Cell::Numeric(d) => capped(&d.to_string()).into_owned(),
        Cell::BigInt(v) => v.to_string(),
        Cell::Integer(v) => v.to_string(),
        Cell::Boolean(v) => v.to_string(),
        Cell::Double(v) => v.to_string(),
        Cell::Time(t) => t.to_string(),
        Cell::Jsonb(j) => capped(j).into_owned(),
    }
}

/// The order of two cells of comparable columns; None when either is NULL.
fn compare(a: &Cell<'_>, b: &Cell<'_>) -> Option<Ordering> {
    let as_decimal = |c: &Cell<'_>| match c {
        Cell::Numeric(d) => Some(d.clone()),
        Cell::BigInt(v) => Some(Decimal::from_i64(*v)),
        Cell::Integer(v) => Some(Decimal::from_i64(i64::from(*v))),
        _ => None,
    };
    let as_double = |c: &Cell<'_>| match c {
        Cell::Double(v) => Some(*v),
        Cell::Numeric(d) => d.to_string().parse().ok(),
        Cell::BigInt(v) => Some(*v as f64),
        Cell::Integer(v) => Some(f64::from(*v)),
        _ => None,
    };
    match (a, b) {
        (Cell::Null, _) | (_, Cell::Null) => None,
        (Cell::Text(x), Cell::Text(y)) => Some(x.cmp(y)),
        (Cell::Time(x), Cell::Time(y)) => Some(x.cmp(y)),
        (Cell::Boolean(x), Cell::Boolean(y)) => Some(x.cmp(y)),
        (Cell::Double(_), _) | (_, Cell::Double(_)) => as_double(a)?.partial_cmp(&as_double(b)?),
        _ => Some(as_decimal(a)?.cmp_value(&as_decimal(b)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;

    /// 2026-11-23T…: the sink's clock in these tests.
    pub(super) const NOW: Timestamp = Timestamp(1_795_370_400_000_000);

    fn catalog() -> Catalog {
        crate::config::Config::default().catalog().unwrap()
    }

    /// Validates one JSON record of `table` read from `topic`: its row's
    /// bytes, or the error.
    fn check(topic: &str, json: &str) -> Result<Vec<u8>, ValidationError> {
        let rows = super::sources::validated(&catalog(), topic, json, &[])?;
        Ok(rows.rows().next().unwrap().to_vec())
    }

    fn row(cells: &[Cell<'_>]) -> Vec<u8> {
        let mut rows = RowBuffer::default();
        rows.push(cells);
        rows.freeze().rows().next().unwrap().to_vec()
    }

    fn with(base: &str, field: &str, value: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(base).unwrap();
        v[field] = serde_json::from_str(value).unwrap();
        v.to_string()
    }

    fn without(base: &str, field: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(base).unwrap();
        v.as_object_mut().unwrap().remove(field);
        v.to_string()
    }

    /// The source an error names (`/usdPrice`), or the check.
    fn blamed(r: Result<Vec<u8>, ValidationError>) -> String {
        let e = r.expect_err("should be invalid");
        e.subject
    }

    const PRICE: &str = r#"{"coinId":"bitcoin","symbol":"BTC","usdPrice":"67500.12345678","lastUpdated":"2026-11-22T18:00:00.123Z","source":"coingecko"}"#;

    fn t(s: &str) -> Cell<'static> {
        Cell::Text(s.to_owned().into())
    }

    fn d(s: &str) -> Cell<'static> {
        Cell::Numeric(Decimal::parse(s).unwrap())
    }

    #[test]
    fn a_price_gets_its_defaults_in_column_order() {
        let time = Cell::Time(crate::time::parse_iso8601("2026-11-22T18:00:00.123Z").unwrap());
        let expected = |exchange: &str| {
            row(&[
                time.clone(),
                t("bitcoin"),
                t("BTC"),
                t(exchange),
                d("67500.12345678"),
                Cell::Null,
                Cell::Null,
                Cell::Null,
                Cell::Null,
                t("coingecko"),
                t("coingecko"),
            ])
        };
        assert_eq!(check("crypto-prices", PRICE), Ok(expected("aggregate")));
        assert_eq!(
            check("crypto-prices-binance", PRICE),
            Ok(expected("binance"))
        );
        assert_eq!(
            check(
                "crypto-prices-binance",
                &with(PRICE, "exchangeId", "\"kraken\"")
            ),
            Ok(expected("kraken"))
        );
    }

    #[test]
    fn price_rules() {
        let at = |json: &str| check("crypto-prices", json);
        for (field, column) in [
            ("coinId", "coin_id"),
            ("symbol", "symbol"),
            ("usdPrice", "usd_price"),
            ("lastUpdated", "time"),
        ] {
            let e = at(&without(PRICE, field)).unwrap_err();
            assert_eq!(e.subject, format!("column `{column}` (/{field})"));
            assert_eq!(e.problem, "required but missing or null");
            assert!(blamed(at(&with(PRICE, field, "null"))).contains(field));
        }
        let e = at(&without(PRICE, "source")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "column `source` (/source | envelope:/source): required but missing or null"
        );
        let e = at(&with(PRICE, "usdPrice", "0")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "column `usd_price` (/usdPrice): must be > 0, got 0"
        );
        assert!(blamed(at(&with(PRICE, "usdPrice", "-1"))).contains("usdPrice"));
        assert!(blamed(at(&with(PRICE, "btcPrice", "0"))).contains("btcPrice"));
        assert!(blamed(at(&with(PRICE, "marketCap", "-0.1"))).contains("marketCap"));
        assert!(at(&with(PRICE, "marketCap", "0")).is_ok());
        assert!(at(&with(PRICE, "change24h", "-5.5")).is_ok());
        // A value of the wrong kind does not read: a decode problem.
        let e = at(&with(PRICE, "coinId", "5")).unwrap_err();
        assert!(e.unreadable);
        assert_eq!(
            e.to_string(),
            "column `coin_id` (/coinId): expected a string, found a number"
        );
        let e = at(&with(PRICE, "usdPrice", "\"NaN\"")).unwrap_err();
        assert!(e.unreadable && e.subject.contains("usdPrice"), "{e}");
    }

    #[test]
    fn time_rules() {
        let at = |v: &str| check("crypto-prices", &with(PRICE, "lastUpdated", v));
        assert_eq!(
            at("\"2009-01-01T00:00:00Z\"").unwrap_err().to_string(),
            "column `time` (/lastUpdated): must be > 2009-01-01T00:00:00Z, got 2009-01-01T00:00:00Z"
        );
        assert!(at("\"2009-01-01T00:00:00.001Z\"").is_ok());
        assert!(at("1230768000000").is_err());
        assert!(at("1230768000001").is_ok());
        let limit_ms = (NOW.micros() + 300_000_000) / 1000;
        assert!(at(&limit_ms.to_string()).is_ok());
        let e = at(&(limit_ms + 1).to_string()).unwrap_err();
        assert!(e.problem.contains("more than 5 minutes ahead"), "{e}");
        let e = at("\"2026-11-22T18:00:00\"").unwrap_err();
        assert!(e.unreadable && e.problem.contains("offset"), "{e}");
        let e = at("1.5").unwrap_err();
        assert!(e.problem.contains("epoch milliseconds"), "{e}");
    }

    const OHLCV: &str = r#"{"coinId":"bitcoin","symbol":"BTC","timeframe":"1h","timestamp":1763834400000,
        "openPrice":"10","highPrice":"12","lowPrice":"9","closePrice":"11","volume":"100","trades":5,"source":"s"}"#;

    #[test]
    fn ohlcv_rules() {
        let at = |json: &str| check("crypto-ohlcv", json);
        assert!(at(OHLCV).is_ok());
        let e = at(&with(OHLCV, "timeframe", "\"2h\"")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "column `timeframe` (/timeframe): \"2h\" is not one of 1m 5m 15m 1h 4h 1d"
        );
        let e = at(&with(OHLCV, "openPrice", "8")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "check `low_price <= open_price`: column `low_price` (/lowPrice) is 9, column `open_price` (/openPrice) is 8"
        );
        assert!(
            blamed(at(&with(OHLCV, "closePrice", "12.5"))).contains("close_price <= high_price")
        );
        assert!(at(&with(OHLCV, "closePrice", "12.000")).is_ok());
        assert!(blamed(at(&with(OHLCV, "volume", "-1"))).contains("volume"));
        let e = at(&with(OHLCV, "trades", "9223372036854775808")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "column `trades` (/trades): 9223372036854775808 is outside bigint (-2^63..2^63-1)"
        );
        assert!(at(&with(OHLCV, "trades", "9223372036854775807")).is_ok());
        assert!(blamed(at(&with(OHLCV, "trades", "-1"))).contains("trades"));
        assert!(at(&with(OHLCV, "trades", "5.0")).unwrap_err().unreadable);
    }

    const ANALYTICS: &str = r#"{"timestamp":"2026-11-22T18:00:00Z","totalMarketCap":"3000000000000",
        "totalVolume":"1","btcDominance":"54.2","source":"s"}"#;

    #[test]
    fn analytics_rules() {
        let at = |json: &str| check("crypto-analytics", json);
        assert!(at(ANALYTICS).is_ok());
        let e = at(&with(ANALYTICS, "btcDominance", "100.01")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "column `btc_dominance` (/btcDominance): must be <= 100, got 100.01"
        );
        assert!(at(&with(ANALYTICS, "btcDominance", "100")).is_ok());
        assert!(blamed(at(&with(ANALYTICS, "ethDominance", "-1"))).contains("ethDominance"));
        assert!(
            blamed(at(&with(ANALYTICS, "activeExchanges", "2147483648")))
                .contains("activeExchanges")
        );
        assert!(at(&with(ANALYTICS, "activeExchanges", "2147483647")).is_ok());
        assert!(at(&with(ANALYTICS, "marketCapChange24h", "-3.2")).is_ok());
    }

    const LEVEL1: &str = r#"{"symbol":"BTC-USD","exchangeId":"binance","bestBid":"10","bestAsk":"10",
        "timestamp":1763834400000,"source":"s"}"#;

    #[test]
    fn level1_rules() {
        let at = |json: &str| check("crypto-level1", json);
        let stored = at(LEVEL1).unwrap();
        // A missing sequence is stored as 0 (its default).
        assert!(
            stored
                .windows(12)
                .any(|w| w == [0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0])
        );
        let e = at(&with(LEVEL1, "bestBid", "10.5")).unwrap_err();
        assert!(e.subject.contains("best_bid <= best_ask"), "{e}");
        assert!(blamed(at(&without(LEVEL1, "exchangeId"))).contains("exchangeId"));
        assert!(blamed(at(&with(LEVEL1, "askSize", "-2"))).contains("askSize"));
        assert!(at(&with(LEVEL1, "bidSize", "0")).is_ok());
    }
}

#[cfg(test)]
mod sources {
    use super::*;
    use crate::catalog::Catalog;
    use crate::pipeline::copy_format::EncodedRows;
    use crate::pipeline::decode::{ContentType, Encoding, decode};

    /// A catalog of the one table `spec` declares, named `name`.
    fn catalog_of(name: &str, spec: &str) -> Catalog {
        let mut specs = std::collections::BTreeMap::new();
        specs.insert(name.to_owned(), crate::catalog::toml_spec(spec).unwrap());
        Catalog::build(&specs, ".dlq").unwrap()
    }

    /// `json` as a plain JSON message of `topic` (key `key-1`, partition 4,
    /// offset 99, Kafka timestamp 1795370400123 ms, `headers`), decoded
    /// and validated into its row at the clock [`super::tests::NOW`].
    pub(super) fn validated(
        catalog: &Catalog,
        topic: &str,
        json: &str,
        headers: &[(&str, &[u8])],
    ) -> Result<EncodedRows, ValidationError> {
        let route = catalog.route(topic, ".dlq").unwrap();
        let table = catalog.table(route.table);
        let mut message = SourceMessage::new(
            topic.into(),
            4,
            99,
            Some(b"key-1"),
            Some(json.as_bytes()),
            headers.iter().map(|(k, v)| (*k, Some(*v))),
        );
        message.timestamp_ms = Some(1_795_370_400_123);
        let encoding = Encoding {
            content_type: ContentType::Json,
            compressed: false,
        };
        let mut inflated = Vec::new();
        let records = decode(
            table,
            encoding,
            Some(json.as_bytes()),
            &mut inflated,
            &Default::default(),
            &[],
        )
        .unwrap();
        let ctx = Context {
            message: &message,
            captures: &route.captures,
            now: super::tests::NOW,
        };
        let mut rows = RowBuffer::default();
        validate(table, &records[0], &ctx, &mut rows).map(|()| rows.freeze())
    }

    /// A message's own facts as columns: a header, the Kafka timestamp, the
    /// key, partition and offset, and a constant.
    #[test]
    fn every_kind_of_source_fills_its_column() {
        let catalog = catalog_of(
            "facts",
            r#"
            topics = ["facts"]
            primary_key = ["id"]
            columns = [
              { name = "id", type = "bigint", from = "/id", required = true },
              { name = "origin", type = "text", from = ["header:origin", "/origin"], default = "unknown" },
              { name = "sent", type = "timestamptz", from = "timestamp" },
              { name = "k", type = "text", from = "key" },
              { name = "p", type = "integer", from = "partition" },
              { name = "o", type = "bigint", from = "offset" },
              { name = "at", type = "timestamptz", from = "/at", epoch = "s" },
              { name = "fixed", type = "numeric", default = 1.5 },
            ]"#,
        );
        let row =
            |json: &str, headers: &[(&str, &[u8])]| validated(&catalog, "facts", json, headers);
        let expected = |origin: &str| {
            let mut rows = RowBuffer::default();
            rows.push(&[
                Cell::BigInt(7),
                Cell::Text(origin.to_owned().into()),
                Cell::Time(Timestamp(1_795_370_400_123_000)),
                Cell::Text("key-1".into()),
                Cell::Integer(4),
                Cell::BigInt(99),
                Cell::Time(Timestamp(1_700_000_000_000_000)),
                Cell::Numeric(Decimal::parse("1.5").unwrap()),
            ]);
            rows.freeze()
        };
        // The header wins over the record; the last header of a name counts.
        let headers: [(&str, &[u8]); 2] = [("origin", b"first"), ("origin", b"ws")];
        assert_eq!(
            row(r#"{"id":7,"origin":"rec","at":1700000000}"#, &headers),
            Ok(expected("ws"))
        );
        assert_eq!(
            row(r#"{"id":7,"origin":"rec","at":1700000000}"#, &[]),
            Ok(expected("rec"))
        );
        assert_eq!(
            row(r#"{"id":7,"at":1700000000}"#, &[]),
            Ok(expected("unknown"))
        );
        let e = row(r#"{"id":7,"at":1700000000}"#, &[("origin", b"\xff")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "column `origin` (header:origin | /origin): the header is not UTF-8"
        );
    }

    /// A timestamp column reads the forms its description names: `epoch`
    /// integers only, ISO-8601 strings only (no `epoch`), or both
    /// (`epoch` and `iso8601 = true`); a `default` is ISO-8601 in any case.
    #[test]
    fn a_timestamp_reads_the_forms_its_column_declares() {
        let catalog = catalog_of(
            "times",
            r#"
            topics = ["times"]
            primary_key = []
            columns = [
              { name = "ms", type = "timestamptz", from = "/ms", epoch = "ms", default = "2026-01-01T00:00:00Z" },
              { name = "iso", type = "timestamptz", from = "/iso" },
              { name = "both", type = "timestamptz", from = "/both", epoch = "s", iso8601 = true },
            ]"#,
        );
        let row = |json: &str| validated(&catalog, "times", json, &[]);
        assert!(row(r#"{"ms":1700000000000,"iso":"2026-01-01T00:00:00Z","both":1}"#).is_ok());
        assert!(row(r#"{"both":"2026-01-01T00:00:00Z"}"#).is_ok(), "default");
        for (json, reason) in [
            (
                r#"{"ms":"2026-01-01T00:00:00Z"}"#,
                "column `ms` (/ms): expected epoch milliseconds as an integer, found a string",
            ),
            (
                r#"{"iso":1700000000000}"#,
                "column `iso` (/iso): expected an ISO-8601 string with an offset, found an integer",
            ),
            (
                r#"{"both":1.5}"#,
                "column `both` (/both): expected an ISO-8601 string or epoch seconds as an integer, found a fraction",
            ),
        ] {
            assert_eq!(row(json).unwrap_err().to_string(), reason);
        }
    }

    /// Each type's `default` is stored as its value: a jsonb default as the
    /// JSON it is (not as a string), a boolean as a boolean.
    #[test]
    fn defaults_are_stored_as_their_type() {
        let catalog = catalog_of(
            "defaults",
            r#"
            topics = ["defaults"]
            primary_key = []
            columns = [
              { name = "j", type = "jsonb", from = "/j", default = "{}" },
              { name = "b", type = "boolean", from = "/b", default = true },
              { name = "n", type = "integer", from = "/n", default = 3 },
            ]"#,
        );
        let mut rows = RowBuffer::default();
        rows.push(&[
            Cell::Jsonb("{}".into()),
            Cell::Boolean(true),
            Cell::Integer(3),
        ]);
        assert_eq!(
            validated(&catalog, "defaults", "{}", &[]),
            Ok(rows.freeze())
        );
    }

    /// A JSON pointer steps into arrays by index (RFC 6901), nested too; an
    /// index past the end is a missing value.
    #[test]
    fn a_pointer_steps_into_arrays_by_index() {
        let catalog = catalog_of(
            "book",
            r#"
            topics = ["book"]
            primary_key = ["bid"]
            columns = [
              { name = "bid", type = "numeric", from = "/bids/0/price", required = true },
              { name = "second", type = "numeric", from = "/bids/1/size" },
              { name = "corner", type = "bigint", from = "/grid/1/0" },
              { name = "zero_key", type = "text", from = "/named/0" },
            ]"#,
        );
        let row = |json: &str| validated(&catalog, "book", json, &[]);
        let expected = |second: Option<&str>| {
            let mut rows = RowBuffer::default();
            rows.push(&[
                Cell::Numeric(Decimal::parse("10.5").unwrap()),
                second.map_or(Cell::Null, |s| Cell::Numeric(Decimal::parse(s).unwrap())),
                Cell::BigInt(3),
                Cell::Text("z".into()),
            ]);
            rows.freeze()
        };
        assert_eq!(
            row(
                r#"{"bids":[{"price":"10.5","size":1},{"price":"10.4","size":"2.25"},{"x":1}],
                   "grid":[[1,2],[3,4]],"named":{"0":"z"}}"#
            ),
            Ok(expected(Some("2.25")))
        );
        // One element only: the second is missing, not an error.
        assert_eq!(
            row(r#"{"bids":[{"price":"10.5"}],"grid":[[],[3]],"named":{"0":"z"}}"#),
            Ok(expected(None))
        );
        let e = row(r#"{"bids":[],"grid":[],"named":{}}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "column `bid` (/bids/0/price): required but missing or null"
        );
    }
}

#[cfg(test)]
mod ranges {
    use super::*;
    use crate::catalog::Epoch;

    #[test]
    fn a_double_beyond_its_range_is_refused_not_stored_as_infinity_or_zero() {
        assert_eq!(double("1.5"), Ok(1.5));
        assert_eq!(
            double("-2e308").unwrap_err(),
            "-2e308 is out of range for double precision"
        );
        assert!(double("1e400").is_err());
        assert!(double("1e-400").is_err());
        assert!(
            double("-0.0000e-999").is_ok_and(|v| v == 0.0),
            "zero is zero"
        );
        assert!(double("0e-400").is_ok_and(|v| v == 0.0));
        // A denormal is a value of the type, as PostgreSQL reads it.
        assert!(double("1e-310").is_ok_and(|v| v > 0.0));
        assert!(double("Infinity").is_ok_and(f64::is_infinite));
        assert!(double("-inf").is_ok_and(f64::is_infinite));
        assert!(double("NaN").is_ok_and(f64::is_nan));
        let long = format!("1{}e400", "0".repeat(1_000));
        let reason = double(&long).unwrap_err();
        assert!(
            reason.len() < 260 && reason.contains("(1005 bytes)"),
            "{reason}"
        );
    }

    #[test]
    fn an_epoch_before_postgres_range_is_refused_not_wrapped() {
        let Err(reason) = epoch(Some(-9_223_372_036_854_775), Epoch::Millis) else {
            panic!("stored");
        };
        assert!(reason.contains("before 4714-11-24 BC"), "{reason}");
        assert!(epoch(Some(i64::MIN), Epoch::Millis).is_err());
        // 4714-11-24 BC itself is the first storable instant.
        assert!(epoch(Some(-210_866_803_200_000), Epoch::Millis).is_ok());
        assert!(epoch(Some(-210_866_803_200_001), Epoch::Millis).is_err());
        assert_eq!(Timestamp(i64::MIN).postgres_micros(), i64::MIN);
    }
}
