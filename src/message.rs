//! A message as consumed from Kafka, owned, so that it can travel through the
//! pipeline and be dead-lettered byte for byte.

use std::ops::Range;
use std::sync::Arc;

/// One Kafka message with everything a dead letter must repeat.
///
/// Its key, value and header values share one allocation, and its header
/// names another: the consumer copies every message out of librdkafka, and
/// an allocation per header name and value (a dozen per message) showed in
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
    /// The key, the value, then each header's value, one after another.
    bytes: Box<[u8]>,
    /// The header names, one after another.
    names: Box<str>,
    key: Option<Span>,
    value: Option<Span>,
    /// Per header in its original order: its name in `names`, its value in
    /// `bytes` (a header may have no value).
    headers: Box<[(Span, Option<Span>)]>,
}

/// Where a part lies in one of the message's buffers.
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

/// Appends `part` to `buf`; where it went.
fn put(buf: &mut Vec<u8>, part: &[u8]) -> Span {
    let start = buf.len() as u32;
    buf.extend_from_slice(part);
    Span {
        start,
        end: buf.len() as u32,
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
        let (mut name_len, mut value_len, mut count) = (0, 0, 0);
        for (name, value) in headers.clone() {
            name_len += name.as_ref().len();
            value_len += value.map_or(0, <[u8]>::len);
            count += 1;
        }
        let own_len = key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len);
        let mut bytes = Vec::with_capacity(own_len + value_len);
        let mut names = String::with_capacity(name_len);
        let key = key.map(|k| put(&mut bytes, k));
        let value = value.map(|v| put(&mut bytes, v));
        let mut spans = Vec::with_capacity(count);
        for (name, v) in headers {
            let start = names.len() as u32;
            names.push_str(name.as_ref());
            let name = Span {
                start,
                end: names.len() as u32,
            };
            spans.push((name, v.map(|v| put(&mut bytes, v))));
        }
        SourceMessage {
            topic,
            partition,
            offset,
            timestamp_ms: None,
            polled_ms: 0,
            bytes: bytes.into_boxed_slice(),
            names: names.into_boxed_str(),
            key,
            value,
            headers: spans.into_boxed_slice(),
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
        self.headers.iter().map(|(name, value)| {
            (
                &self.names[name.range()],
                value.map(|v| &self.bytes[v.range()]),
            )
        })
    }

    pub fn header_count(&self) -> usize {
        self.headers.len()
    }

    /// Bytes this message holds in memory (key, value and headers), for the
    /// batch byte limit.
    pub fn size(&self) -> usize {
        self.bytes.len() + self.names.len()
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
