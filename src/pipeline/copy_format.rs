//! PostgreSQL's binary `COPY` format, written straight from rows.
//!
//! Pure. The router encodes each row as it validates it, into its batch's
//! buffer ([`RowBuffer`]): a row is kept as the bytes COPY sends, not as a
//! struct to be encoded later (that struct, its allocation and its drop took
//! a tenth of the sink's CPU in profiles). A buffer remembers where each row
//! ends, so the writer can send any run of rows again (to find a row
//! PostgreSQL refuses) without encoding anything twice, and read a row's
//! primary key back from its bytes; and several buffers go in one COPY
//! (batches coalesced into one transaction) without being joined.
//! A row is written from its typed values ([`Cell`]), in its table's column
//! order (the catalog's).

use std::borrow::Cow;

use bytes::Bytes;

use crate::decimal::Decimal;
use crate::time::Timestamp;

/// `PGCOPY\n\xff\r\n\0`, then flags and header-extension length (both 0).
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
const TRAILER: &[u8] = &(-1i16).to_be_bytes();

/// Rows in the binary COPY tuple format, one after another; `B` holds
/// their bytes. Two kinds: [`RowBuffer`] while rows are added,
/// [`EncodedRows`] once they are frozen for COPY.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Rows<B> {
    buf: B,
    /// `ends[i]` is where row `i` ends in `buf`.
    ends: Vec<usize>,
}

/// Rows encoded one at a time, as the router validates them: the rows of an
/// open batch. Frozen into [`EncodedRows`] once the batch is flushed.
pub type RowBuffer = Rows<Vec<u8>>;

/// Rows ready for COPY. The bytes are shared, so that a COPY of any run of
/// rows sends a slice of them, not a copy.
pub type EncodedRows = Rows<Bytes>;

impl<B: AsRef<[u8]>> Rows<B> {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The last row's bytes, without walking the others.
    pub fn last_row(&self) -> Option<&[u8]> {
        let end = *self.ends.last()?;
        let start = self.ends.len().checked_sub(2).map_or(0, |i| self.ends[i]);
        Some(&self.buf.as_ref()[start..end])
    }

    /// Each row's bytes, in order.
    pub fn rows(&self) -> impl Iterator<Item = &[u8]> {
        let buf = self.buf.as_ref();
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(&self.ends)
            .map(move |(start, &end)| &buf[start..end])
    }
}

impl RowBuffer {
    /// Appends a row: its cells, in column order.
    pub fn push(&mut self, cells: &[Cell<'_>]) {
        encode_row(cells, &mut self.buf);
        self.ends.push(self.buf.len());
    }

    /// Appends a row encoded already (by [`RowBuffer::push`]).
    pub fn push_encoded(&mut self, row: &[u8]) {
        self.buf.extend_from_slice(row);
        self.ends.push(self.buf.len());
    }

    /// Moves every row of `other` to the end of this buffer; `other` keeps
    /// its capacity for the next rows.
    pub fn append(&mut self, other: &mut RowBuffer) {
        let base = self.buf.len();
        self.buf.extend_from_slice(&other.buf);
        self.ends.extend(other.ends.iter().map(|end| base + end));
        other.clear();
    }

    /// Keeps the first `rows` rows.
    pub fn truncate(&mut self, rows: usize) {
        if rows < self.ends.len() {
            self.buf
                .truncate(if rows == 0 { 0 } else { self.ends[rows - 1] });
            self.ends.truncate(rows);
        }
    }

    /// Makes room for `bytes` more bytes of rows.
    pub fn reserve(&mut self, bytes: usize) {
        self.buf.reserve(bytes);
    }

    /// The bytes of the rows held.
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    pub fn clear(&mut self) {
        self.buf.clear();
        self.ends.clear();
    }

    pub fn freeze(self) -> EncodedRows {
        Rows {
            buf: self.buf.into(),
            ends: self.ends,
        }
    }
}

impl EncodedRows {
    /// Rows encoded already, copied into one buffer.
    pub fn from_rows<'a>(rows: impl IntoIterator<Item = &'a [u8]>) -> EncodedRows {
        let mut buffer = RowBuffer::default();
        for row in rows {
            buffer.push_encoded(row);
        }
        buffer.freeze()
    }

    /// A complete COPY stream in three pieces: header, rows `range`, trailer.
    pub fn stream(&self, range: std::ops::Range<usize>) -> [Bytes; 3] {
        let start = if range.start == 0 {
            0
        } else {
            self.ends[range.start - 1]
        };
        let end = if range.end == 0 {
            0
        } else {
            self.ends[range.end - 1]
        };
        [
            Bytes::from_static(HEADER),
            self.buf.slice(start..end),
            Bytes::from_static(TRAILER),
        ]
    }
}

/// A complete COPY stream of several runs of rows, each sent whole, in order.
pub fn stream_all(parts: &[EncodedRows]) -> Vec<Bytes> {
    let mut stream = Vec::with_capacity(parts.len() + 2);
    stream.push(Bytes::from_static(HEADER));
    stream.extend(
        parts
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| p.buf.clone()),
    );
    stream.push(Bytes::from_static(TRAILER));
    stream
}

/// A primary key column: its place in the row (ascending in a key), and
/// how its bytes compare as PostgreSQL compares its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyColumn {
    pub index: usize,
    pub form: KeyForm,
}

/// Whether equal values of a column have one encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyForm {
    /// Equal values, equal bytes (text, integers, times, booleans).
    Exact,
    /// `numeric`: `1.0` and `1.00` differ only in their display scale, and
    /// PostgreSQL's unique index holds them equal.
    Numeric,
    /// `double precision`: `0` and `-0`, and every NaN, are equal to
    /// PostgreSQL.
    Double,
}

impl KeyColumn {
    /// The table's key columns, in column order.
    pub fn of(table: &crate::catalog::Table) -> Vec<KeyColumn> {
        use crate::catalog::ColumnType;
        table
            .key_in_column_order()
            .into_iter()
            .map(|index| KeyColumn {
                index,
                form: match table.columns[index].column_type {
                    ColumnType::Numeric => KeyForm::Numeric,
                    ColumnType::Double => KeyForm::Double,
                    _ => KeyForm::Exact,
                },
            })
            .collect()
    }

    /// Columns of one encoding each.
    #[cfg(test)]
    pub fn exact(indexes: &[usize]) -> Vec<KeyColumn> {
        indexes
            .iter()
            .map(|&index| KeyColumn {
                index,
                form: KeyForm::Exact,
            })
            .collect()
    }
}

/// Keeps, for every primary key, only the row read last (offset order within a
/// partition, array order within a message). `rows` are encoded rows of a
/// table whose key columns are `key` (see [`KeyColumn::of`]). Keys are
/// compared as PostgreSQL compares them, so that two rows its unique index
/// holds equal never reach one statement (`ON CONFLICT DO UPDATE` refuses
/// to affect a row twice). Returns indexes into `rows`, in order.
pub fn latest_per_key(key: &[KeyColumn], rows: &[&[u8]]) -> Vec<usize> {
    // An append-only table: every row is its own.
    if key.is_empty() {
        return (0..rows.len()).collect();
    }
    // Each row's key: two slices per key column, `width` slices in a row
    // of this one vector (no allocation per row).
    let width = 2 * key.len();
    let mut parts: Vec<&[u8]> = Vec::with_capacity(rows.len() * width);
    for row in rows {
        key_of(row, key, width, &mut parts);
    }
    // foldhash: a third of SipHash's cost, still seeded per process.
    let mut last: foldhash::HashMap<&[&[u8]], usize> =
        foldhash::HashMap::with_capacity_and_hasher(rows.len(), Default::default());
    for (i, k) in parts.chunks(width).enumerate() {
        last.insert(k, i);
    }
    if last.len() == rows.len() {
        return (0..rows.len()).collect();
    }
    let mut keep: Vec<usize> = last.into_values().collect();
    keep.sort_unstable();
    keep
}

/// Appends the bytes of an encoded row's key `columns` (ascending) as two
/// slices each, in a form where equal values are equal bytes; `width`
/// slices in all (empty ones for a short row).
fn key_of<'a>(row: &'a [u8], columns: &[KeyColumn], width: usize, out: &mut Vec<&'a [u8]>) {
    let before = out.len();
    let (mut at, mut column, mut found) = (2, 0, 0); // after the field count
    while found < columns.len() {
        let Some(len) = row.get(at..at + 4) else {
            break;
        };
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        at += 4;
        let end = at + usize::try_from(len).unwrap_or(0); // NULL: -1
        if column == columns[found].index {
            let value = row.get(at..end).unwrap_or_default();
            let (a, b) = comparable(value, columns[found].form);
            out.push(a);
            out.push(b);
            found += 1;
        }
        at = end;
        column += 1;
    }
    out.resize(before + width, &[]);
}

/// Zero as a `numeric`'s header: no digits, weight 0, positive, scale 0.
const NUMERIC_ZERO: [u8; 8] = [0; 8];
/// `0.0` as a `double precision`.
const DOUBLE_ZERO: [u8; 8] = 0f64.to_bits().to_be_bytes();
/// The one NaN every NaN compares as.
const DOUBLE_NAN: [u8; 8] = f64::NAN.to_bits().to_be_bytes();

/// A key value's bytes in a form where the values PostgreSQL holds equal
/// are equal: a `numeric` without its display scale (bytes 6–7), and
/// zero always positive; a `double` with `-0` as `0` and one NaN.
fn comparable(value: &[u8], form: KeyForm) -> (&[u8], &[u8]) {
    match form {
        KeyForm::Exact => (value, &[]),
        KeyForm::Numeric if value.len() >= 8 => {
            if value[..2] == [0, 0] {
                (&NUMERIC_ZERO, &[])
            } else {
                (&value[..6], &value[8..])
            }
        }
        KeyForm::Double => match <[u8; 8]>::try_from(value).map(f64::from_be_bytes) {
            // A float pattern matches by `==`: `-0.0` too.
            Ok(0.0) => (&DOUBLE_ZERO, &[]),
            Ok(v) if v.is_nan() => (&DOUBLE_NAN, &[]),
            _ => (value, &[]),
        },
        KeyForm::Numeric => (value, &[]),
    }
}

/// One value of a row, typed as its column.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell<'a> {
    Null,
    Text(Cow<'a, str>),
    Numeric(Decimal),
    BigInt(i64),
    Integer(i32),
    Boolean(bool),
    Double(f64),
    Time(Timestamp),
    /// JSON text, stored as jsonb.
    Jsonb(Cow<'a, str>),
}

/// Appends one tuple: field count, then each cell.
fn encode_row(cells: &[Cell<'_>], buf: &mut Vec<u8>) {
    buf.extend_from_slice(&(cells.len() as i16).to_be_bytes());
    for cell in cells {
        match cell {
            Cell::Null => buf.extend_from_slice(&(-1i32).to_be_bytes()),
            Cell::Text(s) => {
                buf.extend_from_slice(&(s.len() as i32).to_be_bytes());
                buf.extend_from_slice(s.as_bytes());
            }
            Cell::Numeric(d) => {
                let at = buf.len();
                buf.extend_from_slice(&[0; 4]);
                d.write_numeric(buf);
                let len = (buf.len() - at - 4) as i32;
                buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
            }
            Cell::BigInt(v) => {
                buf.extend_from_slice(&8i32.to_be_bytes());
                buf.extend_from_slice(&v.to_be_bytes());
            }
            Cell::Integer(v) => {
                buf.extend_from_slice(&4i32.to_be_bytes());
                buf.extend_from_slice(&v.to_be_bytes());
            }
            Cell::Boolean(b) => {
                buf.extend_from_slice(&1i32.to_be_bytes());
                buf.push(u8::from(*b));
            }
            Cell::Double(v) => {
                buf.extend_from_slice(&8i32.to_be_bytes());
                buf.extend_from_slice(&v.to_bits().to_be_bytes());
            }
            Cell::Time(t) => {
                buf.extend_from_slice(&8i32.to_be_bytes());
                buf.extend_from_slice(&t.postgres_micros().to_be_bytes());
            }
            Cell::Jsonb(text) => {
                // jsonb's binary form: version 1, then the text.
                buf.extend_from_slice(&(text.len() as i32 + 1).to_be_bytes());
                buf.push(1);
                buf.extend_from_slice(text.as_bytes());
            }
        }
    }
}

/// A level-1 quote's cells for tests: `time` in microseconds since the
/// Unix epoch, bid 1, ask 2; its key columns are 0, 1, 2 and 7.
#[cfg(test)]
pub fn test_quote(time: i64, sequence: i64, source: &str) -> Vec<Cell<'static>> {
    vec![
        Cell::Time(Timestamp(time)),
        Cell::Text("e".into()),
        Cell::Text("s".into()),
        Cell::Numeric(Decimal::from_i64(1)),
        Cell::Numeric(Decimal::from_i64(2)),
        Cell::Null,
        Cell::Null,
        Cell::BigInt(sequence),
        Cell::Text(source.to_owned().into()),
    ]
}

/// The key columns of [`test_quote`].
#[cfg(test)]
pub fn test_quote_key() -> Vec<KeyColumn> {
    KeyColumn::exact(&[0, 1, 2, 7])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quote(seq: i64, source: &str) -> Vec<Cell<'static>> {
        // The PostgreSQL epoch, 2000-01-01.
        test_quote(946_684_800_000_000, seq, source)
    }

    fn encode(rows: &[Vec<Cell<'_>>]) -> EncodedRows {
        let mut buffer = RowBuffer::default();
        for row in rows {
            buffer.push(row);
        }
        buffer.freeze()
    }

    #[test]
    fn the_last_row_is_the_last_of_the_rows() {
        let rows = encode(&[quote(1, "a"), quote(2, "bb"), quote(3, "ccc")]);
        assert_eq!(rows.last_row(), rows.rows().last());
        let one = encode(&[quote(1, "a")]);
        assert_eq!(one.last_row(), one.rows().last());
        assert_eq!(encode(&[]).last_row(), None);
    }

    #[test]
    fn later_row_wins_per_key() {
        // The key of a quote is (time, exchange, symbol, sequence): the
        // source is not part of it.
        let rows = encode(&[quote(1, "a"), quote(2, "b"), quote(1, "c")]);
        let refs: Vec<&[u8]> = rows.rows().collect();
        assert_eq!(latest_per_key(&test_quote_key(), &refs), [1, 2]);
        let other_time = encode(&[test_quote(1, 1, "a"), quote(1, "a")]);
        let refs: Vec<&[u8]> = other_time.rows().collect();
        assert_eq!(latest_per_key(&test_quote_key(), &refs), [0, 1]);
        // Without a key (an append-only table), the same row twice is two.
        let rows = encode(&[quote(1, "a"), quote(1, "a")]);
        let refs: Vec<&[u8]> = rows.rows().collect();
        assert_eq!(latest_per_key(&[], &refs), [0, 1]);
    }

    /// Values PostgreSQL's unique index holds equal are one key: `1.0`
    /// and `1.00`, `0` and `-0.0`, two NaNs; the later row wins.
    #[test]
    fn keys_are_compared_as_postgres_compares_them() {
        let n = |text: &str| Cell::Numeric(Decimal::parse(text).unwrap());
        let key = [
            KeyColumn {
                index: 0,
                form: KeyForm::Numeric,
            },
            KeyColumn {
                index: 1,
                form: KeyForm::Double,
            },
        ];
        let rows = encode(&[
            vec![n("1.0"), Cell::Double(0.0), Cell::BigInt(1)],
            vec![n("1.00"), Cell::Double(-0.0), Cell::BigInt(2)],
            vec![n("0.000"), Cell::Double(f64::NAN), Cell::BigInt(3)],
            vec![n("-0"), Cell::Double(-f64::NAN), Cell::BigInt(4)],
            vec![n("10"), Cell::Double(1.5), Cell::BigInt(5)],
            vec![n("10.0"), Cell::Double(1.5), Cell::BigInt(6)],
            vec![n("100"), Cell::Double(1.5), Cell::BigInt(7)],
            vec![n("0.1"), Cell::Double(1.5), Cell::BigInt(8)],
        ]);
        let refs: Vec<&[u8]> = rows.rows().collect();
        assert_eq!(latest_per_key(&key, &refs), [1, 3, 5, 6, 7]);
    }

    #[test]
    fn keys_are_read_from_the_right_columns() {
        let d = |v| Cell::Numeric(Decimal::from_i64(v));
        let t = |s: &str| Cell::Text(s.to_owned().into());
        // A price: key (time, coin_id, exchange_id) = columns 0, 1, 3.
        let price = |coin: &str, exchange: &str, symbol: &str, usd| {
            vec![
                Cell::Time(Timestamp(1)),
                t(coin),
                t(symbol),
                t(exchange),
                d(usd),
                Cell::Null,
            ]
        };
        let rows = encode(&[
            price("btc", "x", "BTC", 1),
            price("btc", "x", "XBT", 2),
            price("btc", "y", "BTC", 3),
            price("eth", "x", "BTC", 4),
        ]);
        let refs: Vec<&[u8]> = rows.rows().collect();
        assert_eq!(
            latest_per_key(&KeyColumn::exact(&[0, 1, 3]), &refs),
            [1, 2, 3]
        );
        // A key column after a NULL column is still found.
        let row = |a: Option<i64>, b: i64| {
            vec![
                a.map_or(Cell::Null, Cell::BigInt),
                Cell::Jsonb("{}".into()),
                Cell::BigInt(b),
            ]
        };
        let rows = encode(&[row(None, 1), row(Some(1), 1), row(None, 2)]);
        let refs: Vec<&[u8]> = rows.rows().collect();
        assert_eq!(latest_per_key(&KeyColumn::exact(&[2]), &refs), [1, 2]);
    }

    #[test]
    fn every_cell_type_has_postgres_binary_form() {
        let mut buffer = RowBuffer::default();
        buffer.push(&[
            Cell::Boolean(true),
            Cell::Integer(-2),
            Cell::Double(1.5),
            Cell::Jsonb(r#"{"a":1}"#.into()),
        ]);
        let rows = buffer.freeze();
        let row = rows.rows().next().unwrap();
        let mut expected = vec![0, 4];
        expected.extend_from_slice(&[0, 0, 0, 1, 1]);
        expected.extend_from_slice(&[0, 0, 0, 4, 0xff, 0xff, 0xff, 0xfe]);
        expected.extend_from_slice(&[0, 0, 0, 8]);
        expected.extend_from_slice(&1.5f64.to_bits().to_be_bytes());
        expected.extend_from_slice(&[0, 0, 0, 8, 1]);
        expected.extend_from_slice(br#"{"a":1}"#);
        assert_eq!(row, &expected[..]);
    }

    #[test]
    fn stream_of_any_run() {
        let rows = [quote(1, "a"), quote(2, "bb")];
        let enc = encode(&rows);
        let stream = |range| enc.stream(range).concat();
        let whole = stream(0..2);
        assert!(whole.starts_with(b"PGCOPY\n\xff\r\n\0"));
        assert!(whole.ends_with(&[0xff, 0xff]));
        let second = stream(1..2);
        let first = stream(0..1);
        assert_eq!(
            first.len() + second.len() - HEADER.len() - TRAILER.len(),
            whole.len()
        );
        // Two runs in one stream: the same bytes as one run of both.
        let parts = [encode(&rows[..1]), encode(&rows[1..])];
        assert_eq!(stream_all(&parts).concat(), whole);
        // Rows copied as they are: the same stream.
        assert_eq!(
            stream_all(&[EncodedRows::from_rows(enc.rows())]).concat(),
            whole
        );
        // The PostgreSQL epoch is zero microseconds.
        assert_eq!(
            &first[HEADER.len() + 2..HEADER.len() + 14],
            &[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn a_buffer_appends_truncates_and_freezes() {
        let mut a = RowBuffer::default();
        a.push(&quote(1, "a"));
        let mut b = RowBuffer::default();
        b.push(&quote(2, "b"));
        b.push(&quote(3, "c"));
        a.append(&mut b);
        assert!(b.is_empty());
        assert_eq!(a.len(), 3);
        assert_eq!(
            a.clone().freeze(),
            encode(&[quote(1, "a"), quote(2, "b"), quote(3, "c")])
        );
        a.truncate(1);
        assert_eq!(a.freeze(), encode(&[quote(1, "a")]));
    }
}
