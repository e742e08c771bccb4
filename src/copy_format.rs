//! PostgreSQL's binary `COPY` format, written straight from rows.
//!
//! Pure. Rows are encoded once into one buffer, and the buffer remembers
//! where each row ends, so the writer can send any run of rows again (to
//! find a row PostgreSQL refuses) without encoding anything twice; and
//! several buffers go in one COPY (batches coalesced into one transaction)
//! without being joined.
//! The column types of each table are listed next to its SQL in `sql/`.

use bytes::Bytes;

use crate::decimal::Decimal;
use crate::record::{Row, RowKey, Timestamp};

/// `PGCOPY\n\xff\r\n\0`, then flags and header-extension length (both 0).
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
const TRAILER: &[u8] = &(-1i16).to_be_bytes();

/// Encoded rows, one after another, in the binary COPY tuple format.
#[derive(Debug, Default, Clone)]
pub struct EncodedRows {
    /// Shared, so that a COPY of any run of rows sends a slice of it, not a copy.
    buf: Bytes,
    /// `ends[i]` is where row `i` ends in `buf`.
    ends: Vec<usize>,
}

impl EncodedRows {
    /// Encodes `rows`; `expected` is how many there are (for capacity).
    pub fn encode<'a>(rows: impl IntoIterator<Item = &'a Row>, expected: usize) -> EncodedRows {
        // A price row takes about 200 bytes: one allocation, no regrowth.
        let mut buf = Vec::with_capacity(expected * 256);
        let mut ends = Vec::with_capacity(expected);
        for row in rows {
            encode_row(row, &mut buf);
            ends.push(buf.len());
        }
        EncodedRows {
            buf: buf.into(),
            ends,
        }
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
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
/// partition, array order within a message). Returns indexes into `rows`, in order.
pub fn latest_per_key(rows: &[&Row]) -> Vec<usize> {
    // foldhash: a third of SipHash's cost, still seeded per process.
    let mut last: foldhash::HashMap<RowKey<'_>, usize> =
        foldhash::HashMap::with_capacity_and_hasher(rows.len(), Default::default());
    for (i, row) in rows.iter().enumerate() {
        last.insert(row.key(), i);
    }
    if last.len() == rows.len() {
        return (0..rows.len()).collect();
    }
    let mut keep: Vec<usize> = last.into_values().collect();
    keep.sort_unstable();
    keep
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

    #[test]
    fn later_row_wins_per_key() {
        let rows = [quote(1, "a"), quote(2, "b"), quote(1, "c")];
        let refs: Vec<&Row> = rows.iter().collect();
        assert_eq!(latest_per_key(&refs), [1, 2]);
    }

    #[test]
    fn stream_of_any_run() {
        let rows = [quote(1, "a"), quote(2, "bb")];
        let enc = EncodedRows::encode(&rows, rows.len());
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
        let parts = [
            EncodedRows::encode(&rows[..1], 1),
            EncodedRows::encode(&rows[1..], 1),
        ];
        assert_eq!(stream_all(&parts).concat(), whole);
        // The PostgreSQL epoch is zero microseconds.
        assert_eq!(
            &first[HEADER.len() + 2..HEADER.len() + 14],
            &[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0]
        );
    }
}
