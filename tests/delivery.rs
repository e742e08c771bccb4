//! Delivery guarantees on the real services: the `timesink` binary stopped by
//! SIGTERM mid-stream and restarted; a per-exchange topic created while the
//! sink runs; the same key twice; a row PostgreSQL refuses; several writers
//! for one table.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use timesink::ops::produce::DataType;

fn start_sink(world: &World) -> SinkProcess {
    SinkProcess::start(world, &[])
}

fn terminate(sink: &mut SinkProcess, bound: Duration) -> Duration {
    sink.terminate(bound)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_stream_then_restart_loses_and_duplicates_nothing() {
    let world = World::new(4).await;
    let topic = world.topic(DataType::Level1);
    let producer = producer();
    let total = 3000u64;
    let mut sink = start_sink(&world);
    let mut restarts = 0;
    for i in 0..total {
        send(
            &producer,
            &topic,
            Some(&format!("K{i}")),
            quote(i, true).as_bytes(),
            &[],
        )
        .await;
        // Stop and restart the sink twice while messages keep coming.
        if i == 1000 || i == 2000 {
            let took = terminate(&mut sink, Duration::from_secs(20));
            assert!(took < Duration::from_secs(20));
            sink = start_sink(&world);
            restarts += 1;
        }
    }
    eventually(90, "every key stored", || async {
        world.count("level1_quotes").await >= total as i64
    })
    .await;
    drained(&world, &topic, 30).await;
    terminate(&mut sink, Duration::from_secs(20));
    assert_eq!(restarts, 2);

    // Every key once; rows == distinct keys == messages sent; stored offsets
    // == end offsets == the group's Kafka commits; no dead letters.
    let sent = Sent {
        total,
        ..Sent::default()
    };
    assert_exactly_once(&world, &topic, &sent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_exchange_topic_created_while_running_is_consumed() {
    let world = World::new(2).await;
    let mut sink = start_sink(&world);
    let producer = producer();
    let base = world.topic(DataType::Price);
    let price = |coin: &str| {
        format!(
            r#"{{"coinId":"{coin}","symbol":"S","usdPrice":"2.5","lastUpdated":1763834400000,"source":"t"}}"#
        )
    };
    send(&producer, &base, None, price("base-coin").as_bytes(), &[]).await;
    eventually(30, "the base topic's row", || async {
        world.count("crypto_prices").await == 1
    })
    .await;

    let created = Instant::now();
    let late = format!("{base}-kraken");
    create_topics(std::slice::from_ref(&late), 2).await;
    send(&producer, &late, None, price("late-coin").as_bytes(), &[]).await;
    eventually(30, "the new topic's row", || async {
        world.count("crypto_prices").await == 2
    })
    .await;
    let took = created.elapsed();
    eprintln!("a per-exchange topic created while running was consumed after {took:?}");
    assert!(
        took < Duration::from_secs(10),
        "a new per-exchange topic took {took:?}"
    );
    let exchange: String = world
        .db
        .query_one(
            "SELECT exchange_id FROM crypto_prices WHERE coin_id = 'late-coin'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(exchange, "kraken");
    // The dead-letter topic of the new topic is never consumed.
    send(&producer, &late, None, b"{broken", &[]).await;
    eventually(30, "the dead letter", || async {
        read_all(&format!("{late}.dlq"), 1, 5).len() == 1
    })
    .await;
    terminate(&mut sink, Duration::from_secs(20));
    assert_eq!(world.count("crypto_prices").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_twice_keeps_the_later_and_refused_rows_are_dead_lettered() {
    let world = World::new(1).await;
    let topic = world.topic(DataType::Price);
    let producer = producer();
    let price = |coin: &str, usd: &str| {
        format!(
            r#"{{"coinId":"{coin}","symbol":"S","usdPrice":"{usd}","lastUpdated":1763834400000,"source":"t"}}"#
        )
    };
    let mut sink = start_sink(&world);
    // First version, written and committed on its own.
    send(&producer, &topic, None, price("dup", "1.0").as_bytes(), &[]).await;
    eventually(30, "first version", || async {
        world.count("crypto_prices").await == 1
    })
    .await;
    // Then: the same key again (merge path across batches), ten times within a
    // batch, and a row PostgreSQL refuses (a NUL character in text) among good ones.
    for v in 2..=11 {
        send(
            &producer,
            &topic,
            None,
            price("dup", &format!("{v}.0")).as_bytes(),
            &[],
        )
        .await;
    }
    let refused = price("nul\\u0000coin", "3.0");
    let mut sent_refused = (0, 0);
    for i in 0..50 {
        if i == 25 {
            sent_refused = send(&producer, &topic, Some("refused"), refused.as_bytes(), &[]).await;
        }
        send(
            &producer,
            &topic,
            None,
            price(&format!("ok{i}"), "4.0").as_bytes(),
            &[],
        )
        .await;
    }
    eventually(30, "all good rows", || async {
        world.count("crypto_prices").await == 51
    })
    .await;
    let letters = read_all(&format!("{topic}.dlq"), 1, 20);
    terminate(&mut sink, Duration::from_secs(20));

    let usd: String = world
        .db
        .query_one(
            "SELECT usd_price::text FROM crypto_prices WHERE coin_id = 'dup'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(usd, "11.0", "the record read later wins");
    assert_eq!(letters.len(), 1);
    let headers: HashMap<String, String> = dlq_headers(&letters[0]);
    assert_eq!(headers["dlq.offset"], sent_refused.1.to_string());
    assert!(
        headers["dlq.reason"].contains("SQLSTATE 22"),
        "{}",
        headers["dlq.reason"]
    );
    let stored = world.stored_offsets().await;
    assert_eq!(stored.get(&(topic.clone(), 0)).copied(), Some(62));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_with_repeats_and_one_refused_row() {
    let world = World::new(2).await;
    let topic = world.topic(DataType::Price);
    let price = |coin: &str, usd: u64| {
        format!(
            r#"{{"coinId":"{coin}","symbol":"S","usdPrice":"{usd}.5","lastUpdated":1763834400000,"source":"t"}}"#
        )
    };
    // c0…c989 twice (the second carries usd + 9000), "ten" ten times, and
    // message 5000 carries a NUL, which PostgreSQL refuses in text.
    let mut messages: Vec<(String, String)> = (0..9990u64)
        .map(|i| {
            let coin = format!("c{}", i % 9000);
            (coin.clone(), price(&coin, i))
        })
        .collect();
    messages[5000] = ("c5000".into(), price("nul\\u0000c5000", 5000));
    messages.extend((1..=10).map(|v| ("ten".to_string(), price("ten", v))));
    assert_eq!(messages.len(), 10_000);
    let at = send_many(&topic, &messages).await;
    let mut sink = start_sink(&world);
    drained(&world, &topic, 60).await;
    sink.terminate(Duration::from_secs(20));
    let row = world
        .db
        .query_one(
            "SELECT count(*), count(DISTINCT coin_id), \
                    count(*) FILTER (WHERE coin_id ~ '^c' AND substr(coin_id, 2)::int < 990 \
                                     AND usd_price = substr(coin_id, 2)::int + 9000.5), \
                    max(usd_price::text) FILTER (WHERE coin_id = 'ten') \
             FROM crypto_prices",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 9000, "rows: 8,999 c-keys + ten");
    assert_eq!(row.get::<_, i64>(1), 9000, "distinct keys");
    assert_eq!(row.get::<_, i64>(2), 990, "the later of each pair");
    assert_eq!(row.get::<_, String>(3), "10.5", "the last of ten");
    let letters = read_to_end(&format!("{topic}.dlq"), 30);
    assert_eq!(letters.len(), 1, "exactly the refused row");
    let h = dlq_headers(&letters[0]);
    assert_eq!(
        (h["dlq.partition"].as_str(), h["dlq.offset"].as_str()),
        (
            at[5000].0.to_string().as_str(),
            at[5000].1.to_string().as_str()
        )
    );
    assert!(
        h["dlq.reason"].contains("SQLSTATE 22021"),
        "{}",
        h["dlq.reason"]
    );
    // No loop: the row was refused once.
    let refusals = sink
        .log_text()
        .matches("dead-lettering a row PostgreSQL refuses")
        .count();
    assert_eq!(refusals, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_batches_deliver_exactly_once_too() {
    // `batch.adaptive = false`: every batch waits its own linger or fills
    // max_rows and is one transaction; no batches join. Small batches, so
    // that there are many transactions while a restart cuts through them.
    let world = World::new(4).await;
    let topic = world.topic(DataType::Level1);
    let env = [
        ("TIMESINK_BATCH__ADAPTIVE", "false".to_string()),
        (
            "TIMESINK_TABLES__LEVEL1_QUOTES__BATCH__MAX_ROWS",
            "37".to_string(),
        ),
        (
            "TIMESINK_TABLES__LEVEL1_QUOTES__BATCH__LINGER_MS",
            "20".to_string(),
        ),
    ];
    let total = 3000u64;
    let messages = keyed_quotes(0..total);
    send_many(&topic, &messages[..1500]).await;
    let mut sink = SinkProcess::start(&world, &env);
    eventually(60, "some rows stored", || async {
        world.count("level1_quotes").await > 0
    })
    .await;
    terminate(&mut sink, Duration::from_secs(20));
    send_many(&topic, &messages[1500..]).await;
    let mut sink = SinkProcess::start(&world, &env);
    drained(&world, &topic, 60).await;
    terminate(&mut sink, Duration::from_secs(20));
    let sent = Sent {
        total,
        ..Sent::default()
    };
    assert_exactly_once(&world, &topic, &sent).await;
}

/// `tables.<name>.writers`: three connections write one table at once, each its own
/// partitions (4 partitions: writer 0 has two). The same records also come
/// again under other message keys, so mostly in other partitions, written
/// by other writers at the same moment: they meet as conflicts (or a
/// deadlock, retried) between concurrent transactions, never as two rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_writers_for_a_table_deliver_exactly_once() {
    let world = World::new(4).await;
    let topic = world.topic(DataType::Level1);
    let env = [
        ("TIMESINK_TABLES__LEVEL1_QUOTES__WRITERS", "3".to_string()),
        (
            "TIMESINK_TABLES__LEVEL1_QUOTES__BATCH__MAX_ROWS",
            "50".to_string(),
        ),
    ];
    let distinct = 3000u64;
    let first = keyed_quotes(0..distinct);
    let again: Vec<(String, String)> = first
        .iter()
        .map(|(key, value)| (format!("again-{key}"), value.clone()))
        .collect();
    send_many(&topic, &first[..1500]).await;
    let mut sink = SinkProcess::start(&world, &env);
    eventually(60, "some rows stored", || async {
        world.count("level1_quotes").await > 0
    })
    .await;
    // A restart while transactions of all three writers are under way.
    terminate(&mut sink, Duration::from_secs(20));
    let mut sink = SinkProcess::start(&world, &env);
    let interleaved: Vec<(String, String)> = first[1500..]
        .iter()
        .zip(&again)
        .flat_map(|(a, b)| [a.clone(), b.clone()])
        .chain(again[1500..].iter().cloned())
        .collect();
    send_many(&topic, &interleaved).await;
    drained(&world, &topic, 90).await;
    // Each writer keeps its own connection and staging table: three for
    // level1_quotes while the sink runs.
    let stages: i64 = world
        .db
        .query_one(
            "SELECT count(*) FROM pg_class \
             WHERE relname = 'timesink_stage_level1_quotes' AND relpersistence = 't'",
            &[],
        )
        .await
        .expect("count staging tables")
        .get(0);
    assert_eq!(stages, 3, "level1 writer connections");
    terminate(&mut sink, Duration::from_secs(20));

    // Every key once: rows == distinct keys == distinct records sent;
    // stored offsets == end offsets == Kafka commits (every message,
    // repeats included); no dead letters.
    let sent = Sent {
        total: 2 * distinct,
        repeats: distinct,
        ..Sent::default()
    };
    assert_exactly_once(&world, &topic, &sent).await;
    let mut expected: Vec<String> = (0..distinct).map(|i| format!("K{i}")).collect();
    expected.sort();
    assert_eq!(stored_symbols(&world).await, expected, "every key present");
}

/// Where nothing is stored in PostgreSQL, each partition starts at the
/// group's committed Kafka offset (what a group moving to timesink from
/// another consumer has); where neither exists, at `auto.offset.reset`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_stored_offset_it_starts_at_the_kafka_commit() {
    let world = World::new(3).await;
    let topic = world.topic(DataType::Level1);
    let messages = keyed_quotes(0..60);
    let at = send_many(&topic, &messages).await;
    // The group committed the middle of partition 0 and the end of
    // partition 1; partition 2 has no commit, so it starts at the earliest.
    let end = end_offsets(&topic);
    let commits = [(0, end[&0] / 2), (1, end[&1])];
    commit_offsets(&world.config.kafka.group_id, &topic, &commits);
    assert_eq!(
        committed_offsets(&world.config.kafka.group_id, &topic),
        commits.into_iter().collect()
    );

    let start = |p: i32| commits.iter().find(|c| c.0 == p).map_or(0, |c| c.1);
    // A partition with nothing after its commit has nothing to store.
    let expected_offsets: HashMap<(String, i32), i64> = end
        .iter()
        .filter(|&(&p, &e)| start(p) < e)
        .map(|(&p, &e)| ((topic.clone(), p), e))
        .collect();
    let mut sink = start_sink(&world);
    eventually(60, "stored offsets reach the end offsets", || async {
        world.stored_offsets().await == expected_offsets
    })
    .await;
    sink.terminate(Duration::from_secs(20));
    let mut expected: Vec<String> = messages
        .iter()
        .zip(&at)
        .filter(|(_, (p, o))| *o >= start(*p))
        .map(|((key, _), _)| key.clone())
        .collect();
    expected.sort();
    assert!(!expected.is_empty() && expected.len() < messages.len());
    assert_eq!(stored_symbols(&world).await, expected);
    assert_eq!(world.stored_offsets().await, expected_offsets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_offset_reset_latest_skips_what_was_there_before() {
    let world = World::new(2).await;
    let topic = world.topic(DataType::Level1);
    send_many(&topic, &keyed_quotes(0..20)).await;
    let mut sink = SinkProcess::start(
        &world,
        &[("TIMESINK_RDKAFKA_AUTO_OFFSET_RESET", "latest".into())],
    );
    eventually(60, "partitions assigned", || async {
        sink.log_text().contains("partitions assigned")
    })
    .await;
    let after = keyed_quotes(20..40);
    send_many(&topic, &after).await;
    drained(&world, &topic, 60).await;
    sink.terminate(Duration::from_secs(20));
    let mut expected: Vec<String> = after.into_iter().map(|(k, _)| k).collect();
    expected.sort();
    assert_eq!(stored_symbols(&world).await, expected);
}
