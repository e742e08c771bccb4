//! bincode values: one record in the table's declared positional layout,
//! read with bincode 2's standard configuration (varint integers, little
//! endian). Strings are borrowed from the message, not copied.

use std::borrow::Cow;

use bincode::de::read::{BorrowReader, Reader};
use bincode::de::{BorrowDecoder, Decoder, DecoderImpl};
use bincode::{BorrowDecode, Decode};

use super::{DecodeError, Record, Value};
use crate::catalog::{Table, WireType};
use crate::time::Timestamp;

/// A limit so that a forged length cannot make the decoder allocate wildly.
const BINCODE_LIMIT: usize = 64 * 1024 * 1024;

pub(super) fn decode<'a>(table: &Table, bytes: &'a [u8]) -> Result<Record<'a>, DecodeError> {
    let Some(layout) = &table.bincode else {
        return Err(DecodeError::NoBincodeLayout {
            table: table.name.clone(),
        });
    };
    let config = bincode::config::standard().with_limit::<BINCODE_LIMIT>();
    let mut decoder = DecoderImpl::new(CountingReader { bytes, at: 0 }, config, ());
    let mut record = Record::empty(table.reading.slots);
    for field in layout {
        let value = read_field(&mut decoder, field.wire, field.optional).map_err(|e| {
            let at = decoder.reader().at;
            DecodeError::Bincode(format!("field `{}`: {}", field.name, describe(&e, at)))
        })?;
        record.slots[field.slot] = value;
    }
    let used = decoder.reader().at;
    if used != bytes.len() {
        return Err(DecodeError::BincodeTrailing {
            trailing: bytes.len() - used,
            at: used,
        });
    }
    Ok(record)
}

/// One field: its value, or None for an `Option` that is `None`.
fn read_field<'a, D: BorrowDecoder<'a, Context = ()>>(
    d: &mut D,
    wire: WireType,
    optional: bool,
) -> Result<Option<Value<'a>>, bincode::error::DecodeError> {
    if optional {
        // An Option is a one-byte tag: 0 None, 1 Some.
        match u8::decode(d)? {
            0 => return Ok(None),
            1 => {}
            found => {
                return Err(bincode::error::DecodeError::UnexpectedVariant {
                    type_name: "Option",
                    allowed: &bincode::error::AllowedEnumVariants::Range { min: 0, max: 1 },
                    found: u32::from(found),
                });
            }
        }
    }
    Ok(Some(match wire {
        WireType::String => Value::Text(Cow::Borrowed(<&str>::borrow_decode(d)?)),
        WireType::U64 => Value::UInt(u64::decode(d)?),
        WireType::I64 => Value::Int(i64::decode(d)?),
        WireType::U32 => Value::UInt(u64::from(u32::decode(d)?)),
        WireType::I32 => Value::Int(i64::from(i32::decode(d)?)),
        WireType::Bool => Value::Bool(bool::decode(d)?),
        WireType::F64 => Value::Float(f64::decode(d)?),
        WireType::TimestampMicros => Value::Time(Timestamp(i64::decode(d)?)),
        WireType::TimestampMillis => {
            let ms = i64::decode(d)?;
            match Timestamp::from_millis(ms) {
                Some(t) => Value::Time(t),
                None => Value::Int(ms),
            }
        }
    }))
}

/// A slice reader that knows how far bincode got, for the error message.
struct CountingReader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> CountingReader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], bincode::error::DecodeError> {
        let end = self.at.saturating_add(len);
        let Some(src) = self.bytes.get(self.at..end) else {
            return Err(bincode::error::DecodeError::UnexpectedEnd {
                additional: end - self.bytes.len(),
            });
        };
        self.at = end;
        Ok(src)
    }
}

impl Reader for CountingReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> Result<(), bincode::error::DecodeError> {
        let src = self.take(out.len())?;
        out.copy_from_slice(src);
        Ok(())
    }
}

impl<'a> BorrowReader<'a> for CountingReader<'a> {
    fn take_bytes(&mut self, length: usize) -> Result<&'a [u8], bincode::error::DecodeError> {
        self.take(length)
    }
}

/// bincode's errors in words, with the byte offset it had reached (its own
/// Display is its Debug).
fn describe(e: &bincode::error::DecodeError, at: usize) -> String {
    use bincode::error::DecodeError as E;
    let what = match e {
        E::UnexpectedEnd { additional } => {
            format!("the value ends early ({additional} more bytes expected)")
        }
        E::LimitExceeded => "a length exceeds the size limit".to_owned(),
        E::UnexpectedVariant { found, .. } => format!("option tag {found} is neither 0 nor 1"),
        E::Utf8 { inner } => format!("text is not valid UTF-8 ({inner})"),
        E::InvalidIntegerType { found, .. } => format!("invalid integer encoding ({found:?})"),
        E::InvalidBooleanValue(v) => format!("boolean byte {v} is neither 0 nor 1"),
        other => format!("{other:?}"),
    };
    format!("{what} at byte offset {at}")
}
