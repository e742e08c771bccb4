//! A message as consumed from Kafka, owned, so that it can travel through the
//! pipeline and be dead-lettered byte for byte.

use std::ops::Range;
use std::sync::Arc;

/// One Kafka message with everything a dead letter must repeat.
///
/// Its key, value and headers share one allocation: the consumer copies
/// every message out of librdkafka, and an allocation per part showed in
/// profiles, both where messages are read and where batches are freed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceMessage {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    /// The message's own timestamp (epoch ms), when the broker gave one.
    pub timestamp_ms: Option<i64>,
    /// When the sink polled it (epoch ms): the sink's own share of the
    /// latency starts here, the broker's and the producer's ends.
    pub polled_ms: i64,
    /// The key, the value, each header's value, each header's name, one
    /// after another; then, from `table`, per header in its original order
    /// four little-endian u32: where its name starts and ends, where its
    /// value starts and ends (`NO_VALUE` twice for a header without one).
    bytes: Box<[u8]>,
    key: Option<Span>,
    value: Option<Span>,
    table: u32,
}

/// Where a part lies in the message's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
}

impl Span {
    fn range(self) -> Range<usize> {
        self.start as usize..self.end as usize
    }
}

/// Marks a header without a value in the header table.
const NO_VALUE: u32 = u32::MAX;
/// Bytes per header in the header table.
const TABLE_ENTRY: usize = 16;

/// Copies `part` into `buf` at `at`, which moves past it; where it went.
fn fill(buf: &mut [u8], at: &mut usize, part: &[u8]) -> Span {
    let start = *at;
    *at += part.len();
    buf[start..*at].copy_from_slice(part);
    Span {
        start: start as u32,
        end: *at as u32,
    }
}

/// No headers, for [`SourceMessage::new`].
pub const NO_HEADERS: [(&str, Option<&[u8]>); 0] = [];

impl SourceMessage {
    /// A message with no timestamp, polled at 0; set those fields after.
    /// Kafka caps a message far below 4 GiB, which the spans rely on.
    pub fn new<'a>(
        topic: Arc<str>,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: impl IntoIterator<Item = (impl AsRef<str>, Option<&'a [u8]>)> + Clone,
    ) -> SourceMessage {
        let (mut len, mut count) = (key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len), 0);
        for (name, value) in headers.clone() {
            len += name.as_ref().len() + value.map_or(0, <[u8]>::len);
            count += 1;
        }
        let table = len;
        // Sized at once and filled in place: the parts from the front, the
        // header table from `table`.
        let mut bytes = vec![0; table + count * TABLE_ENTRY];
        let mut at = 0;
        let key = key.map(|k| fill(&mut bytes, &mut at, k));
        let value = value.map(|v| fill(&mut bytes, &mut at, v));
        let mut entry = table;
        for (name, value) in headers.into_iter().take(count) {
            let value = value.map(|v| fill(&mut bytes, &mut at, v));
            let name = fill(&mut bytes, &mut at, name.as_ref().as_bytes());
            let (start, end) = value.map_or((NO_VALUE, NO_VALUE), |v| (v.start, v.end));
            for n in [name.start, name.end, start, end] {
                bytes[entry..entry + 4].copy_from_slice(&n.to_le_bytes());
                entry += 4;
            }
        }
        SourceMessage {
            topic,
            partition,
            offset,
            timestamp_ms: None,
            polled_ms: 0,
            bytes: bytes.into_boxed_slice(),
            key,
            value,
            table: table as u32,
        }
    }

    pub fn key(&self) -> Option<&[u8]> {
        self.key.map(|s| &self.bytes[s.range()])
    }

    pub fn value(&self) -> Option<&[u8]> {
        self.value.map(|s| &self.bytes[s.range()])
    }

    /// The headers in their original order.
    pub fn header_pairs(&self) -> impl Iterator<Item = (&str, Option<&[u8]>)> {
        self.bytes[self.table as usize..]
            .chunks_exact(TABLE_ENTRY)
            .map(|entry| {
                let n = |i: usize| {
                    u32::from_le_bytes([entry[i], entry[i + 1], entry[i + 2], entry[i + 3]])
                };
                let name = Span {
                    start: n(0),
                    end: n(4),
                };
                let value = (n(8) != NO_VALUE).then(|| Span {
                    start: n(8),
                    end: n(12),
                });
                // Names went in as `str`: this never falls back.
                let name = std::str::from_utf8(&self.bytes[name.range()]).unwrap_or_default();
                (name, value.map(|v| &self.bytes[v.range()]))
            })
    }

    pub fn header_count(&self) -> usize {
        (self.bytes.len() - self.table as usize) / TABLE_ENTRY
    }

    /// Bytes this message holds in memory (key, value and headers), for the
    /// batch byte limit.
    pub fn size(&self) -> usize {
        self.table as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_come_back_as_they_went_in() {
        let headers = [
            ("content-type", Some(&b"application/json"[..])),
            ("empty", None),
            ("ünïcode", Some(&b""[..])),
            ("content-type", Some(&b"again"[..])),
        ];
        let m = SourceMessage::new("t".into(), 3, 7, Some(b"k"), Some(b"{}"), headers);
        assert_eq!(m.key(), Some(&b"k"[..]));
        assert_eq!(m.value(), Some(&b"{}"[..]));
        assert_eq!(m.header_pairs().collect::<Vec<_>>(), headers);
        assert_eq!(m.header_count(), 4);
        assert_eq!(
            m.size(),
            1 + 2 + 16 + 5 + "content-typeemptyünïcodecontent-type".len()
        );
        let bare = SourceMessage::new("t".into(), 0, 0, None, None, NO_HEADERS);
        assert_eq!((bare.key(), bare.value(), bare.size()), (None, None, 0));
        assert_eq!(bare.header_pairs().count(), 0);
    }
}
