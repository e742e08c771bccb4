//! What producers and brokers really send, on the real broker: record
//! batches compressed with each codec a Kafka producer may use, and the
//! edge cases of a record — a tombstone, an empty value, no key, a header
//! given twice — each with the outcome the README documents.

mod common;

use std::time::Duration;

use common::*;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use timesink::ops::produce::DataType;

/// A producer that compresses its record batches with `codec`, and lingers
/// so that a batch holds many records.
fn producer_with(codec: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("compression.type", codec)
        .set("linger.ms", "20")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer")
}

/// 200 quotes sent as `codec` batches all land, once each.
async fn codec_lands(codec: &str) {
    let world = World::new(2).await;
    let topic = world.topic(DataType::Level1);
    let producer = producer_with(codec);
    let quotes = keyed_quotes(0..200);
    let sends: Vec<_> = quotes
        .iter()
        .map(|(key, value)| {
            producer.send(
                FutureRecord::to(&topic).key(key).payload(value),
                Duration::from_secs(30),
            )
        })
        .collect();
    for sent in futures::future::join_all(sends).await {
        sent.unwrap_or_else(|(e, _)| panic!("{codec}: produce failed: {e}"));
    }
    let mut sink = SinkProcess::start(&world, &[]);
    drained(&world, &topic, 60).await;
    sink.terminate(Duration::from_secs(20));
    let sent = Sent {
        total: 200,
        ..Sent::default()
    };
    assert_exactly_once(&world, &topic, &sent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_batches_land() {
    codec_lands("gzip").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snappy_batches_land() {
    codec_lands("snappy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lz4_batches_land() {
    codec_lands("lz4").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_batches_land() {
    codec_lands("zstd").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncompressed_batches_land() {
    codec_lands("none").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstone_empty_keyless_and_a_repeated_header_get_their_documented_outcome() {
    let world = World::new(1).await;
    let topic = world.topic(DataType::Level1);
    let producer = producer();
    // A tombstone (no value at all) and an empty value: dead-lettered.
    let tombstone: FutureRecord<'_, str, [u8]> = FutureRecord::to(&topic).key("tombstone");
    producer
        .send(tombstone, Duration::from_secs(30))
        .await
        .expect("tombstone sent");
    send(&producer, &topic, Some("empty"), b"", &[]).await;
    // No key: written like any other.
    send(&producer, &topic, None, quote(1, true).as_bytes(), &[]).await;
    // Two content-type headers: the last one counts. JSON first, then
    // bincode: a JSON value is refused as bincode...
    let twice = |first: &'static str, last: &'static str| {
        OwnedHeaders::new()
            .insert(Header {
                key: "content-type",
                value: Some(first),
            })
            .insert(Header {
                key: "content-type",
                value: Some(last),
            })
    };
    let value = quote(2, true);
    let record = FutureRecord::to(&topic)
        .key("bincode-last")
        .payload(value.as_str())
        .headers(twice("application/json", "application/x-bincode"));
    producer
        .send(record, Duration::from_secs(30))
        .await
        .expect("sent");
    // ...and read as JSON when JSON comes last.
    let value = quote(3, true);
    let record = FutureRecord::to(&topic)
        .key("json-last")
        .payload(value.as_str())
        .headers(twice("application/x-bincode", "application/json"));
    producer
        .send(record, Duration::from_secs(30))
        .await
        .expect("sent");

    let mut sink = SinkProcess::start(&world, &[]);
    drained(&world, &topic, 60).await;
    sink.terminate(Duration::from_secs(20));
    assert_eq!(stored_symbols(&world).await, ["K1", "K3"]);
    let letters = read_to_end(&format!("{topic}.dlq"), 30);
    let reasons = dead_letter_reasons(&letters);
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert_eq!(reasons[0].0, "bincode-last");
    assert!(reasons[0].1.contains("bincode"), "{reasons:?}");
    assert_eq!(reasons[1].0, "empty");
    assert_eq!(reasons[2].0, "tombstone");
    assert!(reasons[2].1.contains("no value"), "{reasons:?}");
    // The tombstone's dead letter is a tombstone too: byte for byte.
    let tombstone = letters
        .iter()
        .find(|m| rdkafka::message::Message::key(*m) == Some(b"tombstone".as_slice()))
        .expect("the tombstone's dead letter");
    assert!(rdkafka::message::Message::payload(tombstone).is_none());
}
