//! A message as consumed from Kafka, owned, so that it can travel through the
//! pipeline and be dead-lettered byte for byte.

use std::sync::Arc;

/// One Kafka message with everything a dead letter must repeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceMessage {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// Headers in their original order; a header may have no value.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// The message's own timestamp (epoch ms), when the broker gave one.
    pub timestamp_ms: Option<i64>,
    /// When the sink polled it (epoch ms): the sink's own share of the
    /// latency starts here, the broker's and the producer's ends.
    pub polled_ms: i64,
}

impl SourceMessage {
    /// The headers as the decode stage reads them.
    pub fn header_pairs(&self) -> impl Iterator<Item = (&str, Option<&[u8]>)> {
        self.headers.iter().map(|(k, v)| (k.as_str(), v.as_deref()))
    }

    /// Bytes this message holds in memory (key, value and headers), for the
    /// batch byte limit.
    pub fn size(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len)
            + self.value.as_ref().map_or(0, Vec::len)
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
                .sum::<usize>()
    }
}
