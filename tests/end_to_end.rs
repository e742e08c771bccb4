//! The whole pipeline against the real PostgreSQL and broker: every data
//! type in every encoding, on base and per-exchange topics; dead letters;
//! exact decimals; shutdown and restart from the stored offsets.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::message::Message;
use std::sync::Arc;
use timesink::ops::health::Health;
use timesink::ops::produce::DataType;
use timesink::ops::produce::{Encoding, Generator};
use timesink::pipeline;
use timesink::time::Timestamp;
use tokio_util::sync::CancellationToken;

/// Every key sent is present once, rows == distinct keys, and the stored
/// offsets equal the end offsets of every partition written to.
async fn assert_invariant(world: &World, topics: &[String], rows: &HashMap<&'static str, i64>) {
    for (table, expected) in rows {
        assert_eq!(world.count(table).await, *expected, "rows in {table}");
    }
    let stored = world.stored_offsets().await;
    for topic in topics {
        for (partition, end) in end_offsets(topic) {
            if end > 0 {
                assert_eq!(
                    stored.get(&(topic.clone(), partition)).copied(),
                    Some(end),
                    "stored offset of {topic}[{partition}]"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_and_encoding_lands_exactly_once() {
    let world = World::new(3).await;
    let exchange_topics: Vec<String> = DataType::ALL
        .iter()
        .map(|&t| format!("{}-binance", world.topic(t)))
        .collect();
    create_topics(&exchange_topics, 2).await;

    let producer = producer();
    let mut generator = Generator::new(
        world.topics.clone(),
        vec!["binance".into()],
        DataType::ALL.to_vec(),
        Encoding::ALL.to_vec(),
        Timestamp(chrono::Utc::now().timestamp_micros() - 60_000_000),
    );
    let mut rows: HashMap<&'static str, i64> =
        DataType::ALL.iter().map(|t| (t.table(), 0)).collect();
    for _ in 0..480 {
        let m = generator.next_message();
        let headers: Vec<(&str, &str)> = m.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        send(&producer, &m.topic, Some(&m.key), &m.value, &headers).await;
        *rows.get_mut(m.table).unwrap() += m.rows as i64;
    }
    // Exact decimals with more than 20 significant digits, as a number and as a string.
    let prices = world.topic(DataType::Price);
    let exact = r#"{"coinId":"exact","symbol":"EX","usdPrice":12345678901234567890.123456789012,
        "marketCap":"98765432109876543210.00000000001","btcPrice":"42.10","lastUpdated":"2026-11-22T20:00:00.123456+02:00","source":"test"}"#;
    send(&producer, &prices, Some("exact"), exact.as_bytes(), &[]).await;
    *rows.get_mut("crypto_prices").unwrap() += 1;
    // Invalid: zero price, and a value that is not JSON.
    let bad = [
        r#"{"coinId":"bad","symbol":"B","usdPrice":0,"lastUpdated":1763834400000,"source":"s"}"#
            .as_bytes(),
        b"not json".as_slice(),
    ];
    let mut bad_at = Vec::new();
    for value in bad {
        bad_at.push(send(&producer, &prices, Some("bad"), value, &[("trace", "t1")]).await);
    }

    let shutdown = CancellationToken::new();
    let sink = tokio::spawn(pipeline::run(
        world.config.clone(),
        Arc::new(Health::new(world.config.health.clone())),
        shutdown.clone(),
    ));

    let mut all_topics: Vec<String> = DataType::ALL.iter().map(|&t| world.topic(t)).collect();
    all_topics.extend(exchange_topics.clone());
    let total: i64 = rows.values().sum();
    eventually(60, "all rows written", || async {
        let mut n = 0;
        for t in DataType::ALL {
            n += world.count(t.table()).await;
        }
        n >= total
    })
    .await;
    eventually(30, "stored offsets reach the end offsets", || async {
        let stored = world.stored_offsets().await;
        all_topics.iter().all(|topic| {
            end_offsets(topic)
                .into_iter()
                .all(|(p, end)| end == 0 || stored.get(&(topic.clone(), p)) == Some(&end))
        })
    })
    .await;

    let started = Instant::now();
    shutdown.cancel();
    let result = tokio::time::timeout(Duration::from_secs(30), sink)
        .await
        .expect("shutdown within 30s");
    result.expect("sink task").expect("sink ran without error");
    assert!(started.elapsed() < Duration::from_secs(30));

    assert_invariant(&world, &all_topics, &rows).await;

    // Values stored exactly as sent.
    let row = world
        .db
        .query_one(
            "SELECT usd_price::text, market_cap::text, btc_price::text, exchange_id, attribution, time = '2026-11-22T18:00:00.123456Z'::timestamptz \
             FROM crypto_prices WHERE coin_id = 'exact'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "12345678901234567890.123456789012");
    assert_eq!(row.get::<_, String>(1), "98765432109876543210.00000000001");
    assert_eq!(row.get::<_, String>(2), "42.10");
    assert_eq!(row.get::<_, String>(3), "aggregate");
    assert_eq!(row.get::<_, String>(4), "test");
    assert!(row.get::<_, bool>(5));
    // Per-exchange topics default the exchange to the topic's.
    let binance: i64 = world
        .db
        .query_one(
            "SELECT count(*) FROM crypto_prices WHERE exchange_id = 'binance'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(binance > 0);

    // The two invalid messages are in the dead-letter topic, byte for byte, with the dlq headers.
    let letters = read_all(&format!("{prices}.dlq"), 2, 20);
    assert_eq!(letters.len(), 2, "dead letters");
    for letter in &letters {
        let headers = dlq_headers(letter);
        let offset: i64 = headers["dlq.offset"].parse().unwrap();
        let partition: i32 = headers["dlq.partition"].parse().unwrap();
        let i = bad_at
            .iter()
            .position(|&(p, o)| p == partition && o == offset)
            .expect("dead letter of a sent bad message");
        assert_eq!(letter.payload(), Some(bad[i]));
        assert_eq!(letter.key(), Some(b"bad".as_slice()));
        assert_eq!(headers["trace"], "t1");
        assert_eq!(headers["dlq.topic"], prices);
        assert_eq!(headers["dlq.sink"], world.config.kafka.group_id);
        assert!(headers.contains_key("dlq.timestamp"));
        let reason = &headers["dlq.reason"];
        assert!(
            if i == 0 {
                reason.contains("usdPrice")
            } else {
                reason.contains("JSON")
            },
            "{reason}"
        );
    }
}
