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
//! The column types of each table are listed next to its SQL in `sql/`.

use bytes::Bytes;

use crate::decimal::Decimal;
use crate::record::{DataType, Row, Timestamp};

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
    /// Appends a row, encoded.
    pub fn push(&mut self, row: &Row) {
        encode_row(row, &mut self.buf);
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

/// Keeps, for every primary key, only the row read last (offset order within a
/// partition, array order within a message). `rows` are encoded rows of
/// `data_type`'s table. Returns indexes into `rows`, in order.
pub fn latest_per_key(data_type: DataType, rows: &[&[u8]]) -> Vec<usize> {
    let columns = key_columns(data_type);
    // foldhash: a third of SipHash's cost, still seeded per process.
    let mut last: foldhash::HashMap<[&[u8]; 4], usize> =
        foldhash::HashMap::with_capacity_and_hasher(rows.len(), Default::default());
    for (i, row) in rows.iter().enumerate() {
        last.insert(key_of(row, columns), i);
    }
    if last.len() == rows.len() {
        return (0..rows.len()).collect();
    }
    let mut keep: Vec<usize> = last.into_values().collect();
    keep.sort_unstable();
    keep
}

/// The columns of a table's primary key, in column order (see `sql/`).
fn key_columns(data_type: DataType) -> &'static [usize] {
    match data_type {
        // time, coin_id, exchange_id
        DataType::Price => &[0, 1, 3],
        // time, coin_id, exchange_id, timeframe
        DataType::Ohlcv => &[0, 1, 3, 4],
        // time, source
        DataType::Analytics => &[0, 8],
        // time, exchange_id, symbol, sequence
        DataType::Level1 => &[0, 1, 2, 7],
    }
}

/// The bytes of an encoded row's `columns` (ascending). Equal bytes are
/// equal values: each column has one encoding.
fn key_of<'a>(row: &'a [u8], columns: &[usize]) -> [&'a [u8]; 4] {
    let mut key: [&[u8]; 4] = [&[]; 4];
    let (mut at, mut column, mut found) = (2, 0, 0); // after the field count
    while found < columns.len() {
        let Some(len) = row.get(at..at + 4) else {
            break;
        };
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        at += 4;
        let end = at + usize::try_from(len).unwrap_or(0); // NULL: -1
        if column == columns[found] {
            key[found] = row.get(at..end).unwrap_or_default();
            found += 1;
        }
        at = end;
        column += 1;
    }
    key
}

struct Fields<'a>(&'a mut Vec<u8>);

impl Fields<'_> {
    fn text(&mut self, s: &str) {
        self.0.extend_from_slice(&(s.len() as i32).to_be_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn time(&mut self, t: Timestamp) {
        self.0.extend_from_slice(&8i32.to_be_bytes());
        self.0.extend_from_slice(&t.postgres_micros().to_be_bytes());
    }
    fn decimal(&mut self, d: &Decimal) {
        let at = self.0.len();
        self.0.extend_from_slice(&[0; 4]);
        d.write_numeric(self.0);
        let len = (self.0.len() - at - 4) as i32;
        self.0[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }
    fn opt_decimal(&mut self, d: &Option<Decimal>) {
        match d {
            Some(d) => self.decimal(d),
            None => self.null(),
        }
    }
    fn bigint(&mut self, v: i64) {
        self.0.extend_from_slice(&8i32.to_be_bytes());
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn opt_bigint(&mut self, v: Option<i64>) {
        match v {
            Some(v) => self.bigint(v),
            None => self.null(),
        }
    }
    fn opt_integer(&mut self, v: Option<i32>) {
        match v {
            Some(v) => {
                self.0.extend_from_slice(&4i32.to_be_bytes());
                self.0.extend_from_slice(&v.to_be_bytes());
            }
            None => self.null(),
        }
    }
    fn null(&mut self) {
        self.0.extend_from_slice(&(-1i32).to_be_bytes());
    }
}

/// Appends one tuple: field count, then each column in the table's order.
fn encode_row(row: &Row, buf: &mut Vec<u8>) {
    let mut f = Fields(buf);
    match row {
        Row::Price(r) => {
            f.0.extend_from_slice(&11i16.to_be_bytes());
            f.time(r.time);
            f.text(&r.coin_id);
            f.text(&r.symbol);
            f.text(&r.exchange_id);
            f.decimal(&r.usd_price);
            f.opt_decimal(&r.btc_price);
            f.opt_decimal(&r.market_cap);
            f.opt_decimal(&r.volume_24h);
            f.opt_decimal(&r.change_24h);
            f.text(&r.source);
            f.text(&r.attribution);
        }
        Row::Ohlcv(r) => {
            f.0.extend_from_slice(&13i16.to_be_bytes());
            f.time(r.time);
            f.text(&r.coin_id);
            f.text(&r.symbol);
            f.text(&r.exchange_id);
            f.text(&r.timeframe);
            f.decimal(&r.open_price);
            f.decimal(&r.high_price);
            f.decimal(&r.low_price);
            f.decimal(&r.close_price);
            f.decimal(&r.volume);
            f.opt_bigint(r.trades);
            f.text(&r.source);
            f.text(&r.attribution);
        }
        Row::Analytics(r) => {
            f.0.extend_from_slice(&10i16.to_be_bytes());
            f.time(r.time);
            f.decimal(&r.total_market_cap);
            f.decimal(&r.total_volume);
            f.decimal(&r.btc_dominance);
            f.opt_decimal(&r.eth_dominance);
            f.opt_integer(r.active_cryptocurrencies);
            f.opt_integer(r.active_exchanges);
            f.opt_decimal(&r.market_cap_change_24h);
            f.text(&r.source);
            f.text(&r.attribution);
        }
        Row::Level1(r) => {
            f.0.extend_from_slice(&9i16.to_be_bytes());
            f.time(r.time);
            f.text(&r.exchange_id);
            f.text(&r.symbol);
            f.decimal(&r.best_bid);
            f.decimal(&r.best_ask);
            f.opt_decimal(&r.bid_size);
            f.opt_decimal(&r.ask_size);
            f.bigint(r.sequence);
            f.text(&r.source);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quote(seq: i64, source: &str) -> Row {
        // The PostgreSQL epoch, 2000-01-01.
        Row::test_quote(946_684_800_000_000, seq, source)
    }

    fn encode(rows: &[Row]) -> EncodedRows {
        let mut buffer = RowBuffer::default();
        for row in rows {
            buffer.push(row);
        }
        buffer.freeze()
    }

    #[test]
    fn later_row_wins_per_key() {
        // The key of a quote is (time, exchange, symbol, sequence): the
        // source is not part of it.
        let rows = encode(&[quote(1, "a"), quote(2, "b"), quote(1, "c")]);
        let refs: Vec<&[u8]> = rows.rows().collect();
        assert_eq!(latest_per_key(DataType::Level1, &refs), [1, 2]);
        let other_time = encode(&[Row::test_quote(1, 1, "a"), quote(1, "a")]);
        let refs: Vec<&[u8]> = other_time.rows().collect();
        assert_eq!(latest_per_key(DataType::Level1, &refs), [0, 1]);
    }

    #[test]
    fn keys_are_read_from_the_right_columns() {
        use crate::decimal::Decimal;
        use crate::record::{AnalyticsRow, OhlcvRow, PriceRow};
        let d = |v| Decimal::from_i64(v);
        let price = |coin: &str, exchange: &str, symbol: &str, usd| {
            Row::Price(PriceRow {
                time: Timestamp(1),
                coin_id: coin.into(),
                symbol: symbol.into(),
                exchange_id: exchange.into(),
                usd_price: d(usd),
                btc_price: None,
                market_cap: Some(d(5)),
                volume_24h: None,
                change_24h: None,
                source: "s".into(),
                attribution: "a".into(),
            })
        };
        // Same coin, exchange and time: one key, whatever the other columns.
        let rows = encode(&[
            price("btc", "x", "BTC", 1),
            price("btc", "x", "XBT", 2),
            price("btc", "y", "BTC", 3),
            price("eth", "x", "BTC", 4),
        ]);
        let refs: Vec<&[u8]> = rows.rows().collect();
        assert_eq!(latest_per_key(DataType::Price, &refs), [1, 2, 3]);
        let candle = |timeframe: &str, trades| {
            Row::Ohlcv(OhlcvRow {
                time: Timestamp(1),
                coin_id: "btc".into(),
                symbol: "BTC".into(),
                exchange_id: "x".into(),
                timeframe: timeframe.into(),
                open_price: d(1),
                high_price: d(1),
                low_price: d(1),
                close_price: d(1),
                volume: d(1),
                trades,
                source: "s".into(),
                attribution: "a".into(),
            })
        };
        let rows = encode(&[
            candle("1m", None),
            candle("5m", Some(3)),
            candle("1m", Some(4)),
        ]);
        let refs: Vec<&[u8]> = rows.rows().collect();
        assert_eq!(latest_per_key(DataType::Ohlcv, &refs), [1, 2]);
        let market = |source: &str, cap| {
            Row::Analytics(AnalyticsRow {
                time: Timestamp(1),
                total_market_cap: d(cap),
                total_volume: d(1),
                btc_dominance: d(1),
                eth_dominance: None,
                active_cryptocurrencies: Some(3),
                active_exchanges: None,
                market_cap_change_24h: None,
                source: source.into(),
                attribution: "a".into(),
            })
        };
        let rows = encode(&[market("cg", 1), market("cmc", 2), market("cg", 3)]);
        let refs: Vec<&[u8]> = rows.rows().collect();
        assert_eq!(latest_per_key(DataType::Analytics, &refs), [1, 2]);
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
