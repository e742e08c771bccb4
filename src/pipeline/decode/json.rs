//! JSON values: a bare record, the contract's envelope, or an array of
//! either, read along the table's JSON paths in one pass over the text.
//!
//! Only the keys on a declared path are looked at; every other value is
//! skipped unparsed. A value on a path is kept as its raw text (no copy), so
//! that the validate stage reads it exactly as sent: decimals never pass
//! through `f64`, and a jsonb column takes the sub-document as it stands.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::{DecodeError, Record, Records, Value};
use crate::catalog::{ColumnType, PathNode, PathTree, Source, Table};

pub(super) fn decode<'a>(
    table: &Table,
    bytes: &'a [u8],
    max_elements: usize,
    envelopes: &[&str],
) -> Result<Records<'a>, DecodeError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        DecodeError::Json(format!("invalid UTF-8 at byte offset {}", e.valid_up_to()))
    })?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        return read_object(table, text.trim(), "record", envelopes)
            .map(|r| smallvec::smallvec![r]);
    }
    let top: &RawValue =
        serde_json::from_str(text).map_err(|e| DecodeError::Json(e.to_string()))?;
    let top_text = top.get();
    if !top_text.starts_with('[') {
        return Err(record_error("record", "expected a JSON object"));
    }
    if !table.arrays {
        return Err(record_error(
            "record",
            format_args!(
                "expected one JSON object, found an array (table {} takes no arrays)",
                table.name
            ),
        ));
    }
    array_elements(top_text, max_elements)?
        .iter()
        .enumerate()
        .map(|(i, element)| {
            let location = format!("element {i}");
            if !element.get().starts_with('{') {
                return Err(record_error(&location, "expected a JSON object"));
            }
            read_object(table, element.get(), &location, envelopes)
        })
        .collect()
}

fn record_error(location: &str, message: impl fmt::Display) -> DecodeError {
    DecodeError::Record {
        location: location.to_owned(),
        message: message.to_string(),
    }
}

/// A JSON syntax error is the value's; anything else (a repeated field) is
/// the record's at `location`.
fn walk_error(location: &str, e: serde_json::Error) -> DecodeError {
    match e.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            DecodeError::Json(e.to_string())
        }
        _ => record_error(location, e),
    }
}

/// Reads one object: an envelope (when the table takes envelopes and the
/// object has a non-null `payload`) or a bare record.
fn read_object<'a>(
    table: &Table,
    text: &'a str,
    location: &str,
    envelopes: &[&str],
) -> Result<Record<'a>, DecodeError> {
    let reading = &table.reading;
    let mut record = Record::empty(reading.slots);
    let slots = &mut record.slots;
    let Some(envelope) = reading.envelope_slots else {
        walk(&reading.record, text, slots).map_err(|e| walk_error(location, e))?;
        return Ok(record);
    };
    // An envelope that names its payload plainly skips the bare reading.
    if !text.contains("\"payload\"") {
        walk(&reading.record, text, slots).map_err(|e| walk_error(location, e))?;
        if !is_present(&slots[envelope.probe]) {
            return Ok(record);
        }
        slots.iter_mut().for_each(|s| *s = None);
    }
    let at = || format!("{location} (envelope)");
    walk(&reading.envelope, text, slots).map_err(|e| walk_error(&at(), e))?;
    let payload = match slots[envelope.payload] {
        Some(Value::Json(raw)) if raw != "null" => raw,
        // `payload` absent or null: a bare record after all.
        _ => {
            slots.iter_mut().for_each(|s| *s = None);
            walk(&reading.record, text, slots).map_err(|e| walk_error(location, e))?;
            return Ok(record);
        }
    };
    if let Some(Value::Json(raw)) = slots[envelope.data_type]
        && raw != "null"
    {
        let Text(name) = serde_json::from_str(raw)
            .map_err(|e| record_error(&at(), format_args!("field `dataType`: {e}")))?;
        let expected = table.envelope.as_deref().unwrap_or_default();
        if name != expected {
            return Err(if envelopes.contains(&&*name) {
                DecodeError::WrongDataType {
                    found: name.into_owned(),
                    expected: expected.to_owned(),
                }
            } else {
                DecodeError::UnknownDataType {
                    found: name.into_owned(),
                    known: envelopes.join(", "),
                }
            });
        }
    }
    if !payload.starts_with('{') {
        return Err(record_error(
            &at(),
            "field `payload`: expected a JSON object",
        ));
    }
    walk(&reading.record, payload, slots)
        .map_err(|e| walk_error(&format!("{location} (envelope) payload"), e))?;
    Ok(record)
}

fn is_present(value: &Option<Value<'_>>) -> bool {
    !matches!(value, None | Some(Value::Json("null")))
}

/// Reads the object `text` along `tree`, filling `slots`.
fn walk<'a>(
    tree: &PathTree,
    text: &'a str,
    slots: &mut [Option<Value<'a>>],
) -> Result<(), serde_json::Error> {
    let mut reader = serde_json::Deserializer::from_str(text);
    Walk { tree, slots }.deserialize(&mut reader)?;
    reader.end()
}

/// Follows the paths below `node` into its value `raw`: an object's fields
/// or an array's elements by index (RFC 6901: `/bids/0/price`); a scalar
/// has nothing below it.
fn descend<'a>(
    node: &PathNode,
    raw: &'a str,
    slots: &mut [Option<Value<'a>>],
) -> Result<(), serde_json::Error> {
    if node.children.is_empty() {
        Ok(())
    } else if raw.starts_with('{') {
        walk(&node.children, raw, slots)
    } else if raw.starts_with('[') {
        walk_array(&node.children, raw, slots)
    } else {
        Ok(())
    }
}

/// Reads the array `text` along `tree`, whose keys are element indexes
/// (`0`, `1`, …); elements no path names are skipped unparsed.
fn walk_array<'a>(
    tree: &PathTree,
    text: &'a str,
    slots: &mut [Option<Value<'a>>],
) -> Result<(), serde_json::Error> {
    let mut reader = serde_json::Deserializer::from_str(text);
    de::Deserializer::deserialize_seq(&mut reader, Elements { tree, slots })?;
    reader.end()
}

/// The array at hand and the paths through its elements.
struct Elements<'t, 's, 'a> {
    tree: &'t PathTree,
    slots: &'s mut [Option<Value<'a>>],
}

impl<'de> Visitor<'de> for Elements<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Elements { tree, slots } = self;
        let mut name = String::new();
        for index in 0usize.. {
            name.clear();
            std::fmt::Write::write_fmt(&mut name, format_args!("{index}"))
                .map_err(de::Error::custom)?;
            let Some(node) = tree.get(&name) else {
                if seq.next_element::<IgnoredAny>()?.is_none() {
                    break;
                }
                continue;
            };
            let Some(raw) = seq.next_element::<&'de RawValue>()? else {
                break;
            };
            let raw = raw.get();
            if let Some(slot) = node.slot {
                slots[slot] = Some(Value::Json(raw));
            }
            descend(node, raw, slots)
                .map_err(|e| de::Error::custom(format_args!("element {index}: {e}")))?;
        }
        Ok(())
    }
}

/// The object at hand and the paths through it.
struct Walk<'t, 's, 'a> {
    tree: &'t PathTree,
    slots: &'s mut [Option<Value<'a>>],
}

impl<'de> DeserializeSeed<'de> for Walk<'_, '_, 'de> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Walk { tree, slots } = self;
        while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
            let Some(node) = tree.get(&key) else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let raw: &'de RawValue = map.next_value()?;
            let raw = raw.get();
            if let Some(slot) = node.slot {
                if slots[slot].is_some() {
                    return Err(de::Error::custom(format_args!("duplicate field `{key}`")));
                }
                slots[slot] = Some(Value::Json(raw));
            }
            descend(node, raw, slots)
                .map_err(|e| de::Error::custom(format_args!("field `{key}`: {e}")))?;
        }
        Ok(())
    }
}

/// A JSON string, borrowed from the message unless it has escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// Refuses a record whose value for a `jsonb` column nests deeper than
/// `max`: PostgreSQL's jsonb input would fail the whole statement on it.
/// Only the table's jsonb columns are looked at, once per record.
pub(super) fn check_depth(
    table: &Table,
    records: &Records<'_>,
    max: usize,
) -> Result<(), DecodeError> {
    for column in table
        .columns
        .iter()
        .filter(|c| c.column_type == ColumnType::Jsonb)
    {
        for source in &column.sources {
            let (Source::Record(slot) | Source::Envelope(slot)) = source else {
                continue;
            };
            for record in records {
                if let Some(Some(Value::Json(raw))) = record.slots.get(*slot)
                    && deeper_than(raw, max)
                {
                    return Err(DecodeError::TooDeep {
                        column: column.name.clone(),
                        limit: max,
                    });
                }
            }
        }
    }
    Ok(())
}

/// Whether valid JSON `raw` nests arrays and objects deeper than `max`.
fn deeper_than(raw: &str, max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in raw.as_bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// The elements of a JSON array, refused past `max` before more are kept.
fn array_elements(text: &str, max: usize) -> Result<Vec<&RawValue>, DecodeError> {
    struct Elements {
        max: usize,
        exceeded: std::cell::Cell<bool>,
    }
    impl<'de> Visitor<'de> for &Elements {
        type Value = Vec<&'de RawValue>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON array")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut elements = Vec::new();
            while let Some(element) = seq.next_element::<&RawValue>()? {
                if elements.len() == self.max {
                    self.exceeded.set(true);
                    return Err(de::Error::custom("too many elements"));
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
    let elements = de::Deserializer::deserialize_seq(&mut reader, &visitor);
    if visitor.exceeded.get() {
        return Err(DecodeError::TooManyElements { limit: max });
    }
    elements.map_err(|e| DecodeError::Json(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::deeper_than;

    #[test]
    fn depth_counts_arrays_and_objects_not_brackets_in_strings() {
        assert!(!deeper_than("1", 0));
        assert!(!deeper_than(r#"{"a":[1,{"b":2}]}"#, 3));
        assert!(deeper_than(r#"{"a":[1,{"b":2}]}"#, 2));
        assert!(!deeper_than(r#"{"a":"[[[[{{{{","b":"\"[[["}"#, 1));
        assert!(!deeper_than(r#"[[],[],[[]]]"#, 3));
        assert!(deeper_than(
            &format!("{}{}", "[".repeat(1001), "]".repeat(1001)),
            1000
        ));
    }
}
