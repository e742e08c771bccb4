//! Nothing skipped, no partition blocked, on the real broker and database:
//! offsets checked against the log (a topic created again, a stored offset
//! past the end), dead letters that always fit (compressed, or a stub), a
//! deleted dead-letter topic created again, a row PostgreSQL cannot index,
//! a decimal bomb, and lag before the first commit.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use timesink::ops::produce::DataType;

fn price(coin: &str) -> String {
    format!(
        r#"{{"coinId":"{coin}","symbol":"S","usdPrice":"1.5","lastUpdated":1763834400000,"source":"t"}}"#
    )
}

/// Prices keyed and named `c{i}` for each `i` of `range`.
fn prices(range: std::ops::Range<u64>) -> Vec<(String, String)> {
    range
        .map(|i| (format!("c{i}"), price(&format!("c{i}"))))
        .collect()
}

fn admin() -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("admin client")
}

/// Deletes `topic` and waits until the broker no longer has it.
async fn delete_topic(topic: &str) {
    for r in admin()
        .delete_topics(&[topic], &AdminOptions::new())
        .await
        .expect("delete topic")
    {
        r.expect("topic deleted");
    }
    eventually(30, "the topic is gone", || async {
        end_offsets_if_exists(topic).is_none()
    })
    .await;
}

/// Creates `topic` with `partitions` and topic configs `config`.
async fn create_topic(topic: &str, partitions: i32, config: &[(&str, &str)]) {
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (k, v) in config {
        new = new.set(k, v);
    }
    for r in admin()
        .create_topics([&new], &AdminOptions::new())
        .await
        .expect("create topic")
    {
        r.expect("topic created");
    }
}

/// A producer that compresses with zstd, so that a message of several MB
/// reaches the broker under its limit.
fn zstd_producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("compression.type", "zstd")
        .set("message.max.bytes", "10000000")
        .create()
        .expect("producer")
}

/// The coin ids stored, sorted.
async fn stored_coins(world: &World) -> Vec<String> {
    let rows = world
        .db
        .query("SELECT coin_id FROM crypto_prices ORDER BY coin_id", &[])
        .await
        .expect("coins");
    rows.iter().map(|r| r.get(0)).collect()
}

fn coins(range: std::ops::Range<u64>) -> Vec<String> {
    let mut coins: Vec<String> = range.map(|i| format!("c{i}")).collect();
    coins.sort();
    coins
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_created_again_is_read_from_its_start() {
    let world = World::new(1).await;
    let topic = world.topic(DataType::Price);
    send_many(&topic, &prices(0..5)).await;
    let mut sink = SinkProcess::start(&world, &[]);
    drained(&world, &topic, 60).await;
    sink.terminate(Duration::from_secs(20));

    // Purged: deleted and created again, with 8 new messages. The stored
    // offset 5 lies inside the new topic's range: only its id tells.
    delete_topic(&topic).await;
    create_topic(&topic, 1, &[]).await;
    send_many(&topic, &prices(100..108)).await;
    let mut sink = SinkProcess::start(&world, &[]);
    drained(&world, &topic, 60).await;
    let log = sink.log_text();
    sink.terminate(Duration::from_secs(20));

    let mut expected = coins(0..5);
    expected.extend(coins(100..108));
    expected.sort();
    assert_eq!(
        stored_coins(&world).await,
        expected,
        "every message of both topics, once"
    );
    assert_eq!(world.stored_offsets().await[&(topic.clone(), 0)], 8);
    assert!(log.contains("deleted and created again"), "{log}");
    assert_eq!(
        committed_offsets(&world.config.kafka.group_id, &topic)[&0],
        8
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_created_again_while_the_sink_runs_is_read_from_its_start() {
    let world = World::new(1).await;
    let topic = world.topic(DataType::Price);
    let mut sink = SinkProcess::start(&world, &[]);
    send_many(&topic, &prices(0..5)).await;
    drained(&world, &topic, 60).await;

    delete_topic(&topic).await;
    create_topic(&topic, 1, &[]).await;
    send_many(&topic, &prices(100..108)).await;
    let mut expected = coins(0..5);
    expected.extend(coins(100..108));
    expected.sort();
    eventually(60, "every message of the new topic stored", || async {
        stored_coins(&world).await == expected
    })
    .await;
    drained(&world, &topic, 30).await;
    sink.terminate(Duration::from_secs(20));
    assert_eq!(world.stored_offsets().await[&(topic.clone(), 0)], 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_offset_past_the_end_is_not_used_silently() {
    let world = World::new(1).await;
    let topic = world.topic(DataType::Price);
    send_many(&topic, &prices(0..3)).await;
    // A stored offset far past the end (a log truncated or replaced).
    let schema = sink_command(&world, "schema")
        .output()
        .expect("timesink schema");
    assert!(schema.status.success(), "{schema:?}");
    world
        .db
        .execute(
            "INSERT INTO timesink_offsets (consumer_group, topic, partition, next_offset) VALUES ($1, $2, 0, 1000)",
            &[&world.config.kafka.group_id, &topic],
        )
        .await
        .expect("stored offset");
    let port = free_port();
    let mut sink = SinkProcess::start(
        &world,
        &[("TIMESINK_HTTP__LISTEN", format!("127.0.0.1:{port}"))],
    );
    send_many(&topic, &prices(3..6)).await;
    drained(&world, &topic, 60).await;
    let metrics = http_get(port, "/metrics");
    let log = sink.log_text();
    sink.terminate(Duration::from_secs(20));

    assert_eq!(stored_coins(&world).await, coins(0..6));
    assert_eq!(world.stored_offsets().await[&(topic.clone(), 0)], 6);
    assert_eq!(
        committed_offsets(&world.config.kafka.group_id, &topic)[&0],
        6
    );
    let line = log
        .lines()
        .find(|l| l.contains("outside the partition's log"))
        .unwrap_or_else(|| panic!("no warning:\n{log}"));
    // The end is 3, or 6 when the later prices came before the assignment.
    let high_3_or_6 = line.contains("high=3") || line.contains("high=6");
    for part in [topic.as_str(), "partition=0", "offset=1000", "low=0"] {
        assert!(
            line.contains(part) && high_3_or_6,
            "{part} missing from {line}"
        );
    }
    assert!(
        metrics
            .lines()
            .any(|l| l == "timesink_offset_resets_total{reason=\"past_log_end\"} 1"),
        "{metrics}"
    );
}

/// A mapped table that keeps every message (`primary_key = []`) from a
/// topic of its own, `{prefix}ticks`: a message read twice is a row twice.
/// Returns the topic and the sink's environment.
async fn append_only_ticks(world: &World) -> (String, Vec<(&'static str, String)>) {
    let prefix = world.prefix();
    let topic = format!("{prefix}ticks");
    create_topics(std::slice::from_ref(&topic), 1).await;
    let config = format!(
        r#"
[tables.ticks]
topics = ["{topic}"]
primary_key = []
columns = [
  {{ name = "id", type = "text", from = "key", required = true }},
  {{ name = "n", type = "bigint", from = "/n", required = true }},
]
"#
    );
    let env = vec![world.config_file("ticks", &config)];
    (topic, env)
}

fn ticks(range: std::ops::Range<u64>) -> Vec<(String, String)> {
    range
        .map(|i| (format!("t{i}"), format!(r#"{{"n":{i}}}"#)))
        .collect()
}

/// Rows of `ticks` and distinct ids among them.
async fn tick_rows(world: &World) -> (i64, i64) {
    let row = world
        .db
        .query_one("SELECT count(*), count(DISTINCT id) FROM ticks", &[])
        .await
        .expect("count ticks");
    (row.get(0), row.get(1))
}

/// A topic deleted and created again under the running sink, refilled past
/// where the sink had read the old one: librdkafka fetches on at that offset
/// in the new topic, and nothing in the messages tells the two apart. The
/// writer asks the broker for the topic's id before it commits: a new id
/// refuses the batch, the new id is recorded (and the stored offsets reset)
/// before the partition starts again, and every message of the new topic is
/// stored once, in an append-only table where a message read twice is a
/// row twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_created_again_under_the_running_sink_is_read_once() {
    let world = World::new(1).await;
    let (topic, env) = append_only_ticks(&world).await;
    let mut sink = SinkProcess::start(&world, &env);
    send_many(&topic, &ticks(0..5)).await;
    drained(&world, &topic, 60).await;

    delete_topic(&topic).await;
    create_topic(&topic, 1, &[]).await;
    // Eight messages: offsets 5, 6 and 7 are where the sink reads on.
    send_many(&topic, &ticks(100..108)).await;
    eventually(60, "the id change seen", || async {
        sink.log_text().contains("deleted and created again")
    })
    .await;
    // The id change is recorded with the stored offsets reset to 0: the
    // partition is drained once it is read from there.
    drained(&world, &topic, 60).await;
    let log = sink.log_text();
    sink.terminate(Duration::from_secs(20));
    assert_eq!(
        tick_rows(&world).await,
        (13, 13),
        "rows == messages, each once:\n{log}"
    );
    assert_eq!(world.stored_offsets().await[&(topic.clone(), 0)], 8);
}

/// An empty id recorded for a topic is no id: it is replaced by the
/// broker's and resets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_recorded_topic_id_is_no_id() {
    let world = World::new(1).await;
    let topic = world.topic(DataType::Price);
    send_many(&topic, &prices(0..6)).await;
    let schema = sink_command(&world, "schema")
        .output()
        .expect("timesink schema");
    assert!(schema.status.success(), "{schema:?}");
    let group = &world.config.kafka.group_id;
    world
        .db
        .batch_execute(&format!(
            "INSERT INTO timesink_offsets (consumer_group, topic, partition, next_offset) \
             VALUES ('{group}', '{topic}', 0, 3); \
             INSERT INTO timesink_topics (consumer_group, topic, topic_id) \
             VALUES ('{group}', '{topic}', '')"
        ))
        .await
        .expect("bookkeeping");
    let mut sink = SinkProcess::start(&world, &[]);
    drained(&world, &topic, 60).await;
    sink.terminate(Duration::from_secs(20));
    assert_eq!(stored_coins(&world).await, coins(3..6), "read on from 3");
    let id: String = world
        .db
        .query_one(
            "SELECT topic_id FROM timesink_topics WHERE topic = $1",
            &[&topic],
        )
        .await
        .expect("recorded id")
        .get(0);
    assert!(!id.is_empty(), "the broker's id is recorded");
}

/// A stored offset past the end of a log whose topic id is unchanged: the
/// log was truncated (an unclean leader election), and everything below its
/// end was read. Reading starts at the end; the log's start would store
/// every message of the retention again in an append-only table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_end_of_the_same_topic_reads_on_from_its_end() {
    let world = World::new(1).await;
    let (topic, mut env) = append_only_ticks(&world).await;
    let port = free_port();
    env.push(("TIMESINK_HTTP__LISTEN", format!("127.0.0.1:{port}")));
    send_many(&topic, &ticks(0..100)).await;
    let mut sink = SinkProcess::start(&world, &env);
    drained(&world, &topic, 60).await;
    sink.terminate(Duration::from_secs(20));
    assert_eq!(tick_rows(&world).await, (100, 100));

    world
        .db
        .execute(
            "UPDATE timesink_offsets SET next_offset = next_offset + 1000 WHERE topic = $1",
            &[&topic],
        )
        .await
        .expect("move the stored offset past the end");
    let mut sink = SinkProcess::start(&world, &env);
    eventually(60, "the start checked against the log", || async {
        sink.log_text().contains("outside the partition's log")
    })
    .await;
    // Messages after the truncation are read; the retention is not again.
    send_many(&topic, &ticks(100..110)).await;
    drained(&world, &topic, 60).await;
    let metrics = http_get(port, "/metrics");
    let log = sink.log_text();
    sink.terminate(Duration::from_secs(20));

    assert_eq!(
        tick_rows(&world).await,
        (110, 110),
        "rows == messages, each once"
    );
    assert_eq!(world.stored_offsets().await[&(topic.clone(), 0)], 110);
    let line = log
        .lines()
        .find(|l| l.contains("outside the partition's log"))
        .unwrap_or_else(|| panic!("no warning:\n{log}"));
    for part in [
        "offset=1100",
        "high=100",
        "reading_from=100",
        "reading from the log's end",
    ] {
        assert!(line.contains(part), "{part} missing from {line}");
    }
    assert!(
        metrics
            .lines()
            .any(|l| l == "timesink_offset_resets_total{reason=\"past_log_end\"} 1"),
        "{metrics}"
    );
}

/// A topic deleted and created again while the sink was stopped, and the
/// sink started while its bookkeeping is slow: the broker's id read at the
/// assignment is checked against the recorded one before the partition
/// starts, so the new topic is read from its start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_created_again_is_told_even_when_the_bookkeeping_is_slow_at_start() {
    let world = World::new(1).await;
    let topic = world.topic(DataType::Price);
    send_many(&topic, &prices(0..5)).await;
    let mut sink = SinkProcess::start(&world, &[]);
    drained(&world, &topic, 60).await;
    sink.terminate(Duration::from_secs(20));

    delete_topic(&topic).await;
    create_topic(&topic, 1, &[]).await;
    send_many(&topic, &prices(100..112)).await;
    // The recorded ids are locked: the id check at the assignment waits
    // past its bound, and the partition waits for its start.
    let locker = connect(&world.config.database.url).await;
    locker
        .batch_execute("BEGIN; LOCK TABLE timesink_topics IN EXCLUSIVE MODE")
        .await
        .expect("lock");
    let mut sink = SinkProcess::start(&world, &[]);
    eventually(60, "the lookup at the assignment failed", || async {
        sink.log_text().contains("reading stored offsets failed")
    })
    .await;
    locker.batch_execute("COMMIT").await.expect("unlock");
    let mut expected = coins(0..5);
    expected.extend(coins(100..112));
    expected.sort();
    eventually(60, "every message of both topics stored", || async {
        stored_coins(&world).await == expected
    })
    .await;
    drained(&world, &topic, 30).await;
    let log = sink.log_text();
    sink.terminate(Duration::from_secs(20));
    assert_eq!(world.stored_offsets().await[&(topic.clone(), 0)], 12);
    assert!(log.contains("deleted and created again"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_dead_letter_is_compressed_and_holds_nothing_back() {
    let world = World::new(1).await;
    let topic = world.topic(DataType::Price);
    let mut sink = SinkProcess::start(&world, &[]);
    // 1.6 MB of JSON with one invalid element: over the dead-letter topic's
    // default limit as it is, far under it compressed.
    let pad = "x".repeat(100);
    let mut elements: Vec<String> = (0..8_000).map(|i| price(&format!("big{i}{pad}"))).collect();
    elements[4_000] = elements[4_000].replace("\"1.5\"", "\"-1\"");
    let array = format!("[{}]", elements.join(","));
    assert!(array.len() > 1_500_000, "{}", array.len());
    let producer = zstd_producer();
    let record: FutureRecord<'_, str, str> = FutureRecord::to(&topic).key("big").payload(&array);
    producer
        .send(record, Duration::from_secs(10))
        .await
        .expect("the broker takes it compressed");
    // A valid message right behind it, likely in the same flush.
    send(&producer, &topic, Some("ok"), price("ok").as_bytes(), &[]).await;
    drained(&world, &topic, 60).await;
    sink.terminate(Duration::from_secs(20));

    assert_eq!(stored_coins(&world).await, ["ok"]);
    let letters = read_to_end(&format!("{topic}.dlq"), 30);
    assert_eq!(letters.len(), 1);
    assert_eq!(
        letters[0].payload(),
        Some(array.as_bytes()),
        "byte for byte"
    );
    let h = dlq_headers(&letters[0]);
    assert!(h["dlq.reason"].contains("element 4000"), "{h:?}");
    assert!(!h.contains_key("dlq.stub"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_too_large_even_compressed_becomes_a_stub() {
    let world = World::new(1).await;
    let topic = world.topic(DataType::Price);
    // The dead-letter topic exists, with a limit smaller than the message.
    create_topic(
        &format!("{topic}.dlq"),
        1,
        &[("max.message.bytes", "100000")],
    )
    .await;
    let mut sink = SinkProcess::start(&world, &[]);
    // 300 kB that do not compress (and are not JSON).
    let mut rng = Rng::seeded(0x9E37_79B9_7F4A_7C15);
    let noise: Vec<u8> = (0..300_000).map(|_| rng.range(0..256) as u8).collect();
    let producer = producer();
    let record: FutureRecord<'_, str, [u8]> = FutureRecord::to(&topic)
        .key("noise")
        .payload(noise.as_slice())
        .headers(
            rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
                key: "source",
                value: Some("test".as_bytes()),
            }),
        );
    let (_, offset) = producer
        .send(record, Duration::from_secs(10))
        .await
        .map(|d| (d.partition, d.offset))
        .expect("produce");
    send(&producer, &topic, Some("ok"), price("ok").as_bytes(), &[]).await;
    drained(&world, &topic, 60).await;
    let log = sink.log_text();
    sink.terminate(Duration::from_secs(20));

    assert_eq!(stored_coins(&world).await, ["ok"]);
    let letters = read_to_end(&format!("{topic}.dlq"), 30);
    assert_eq!(letters.len(), 1, "{log}");
    let stub = &letters[0];
    assert_eq!(stub.payload(), None, "no value");
    assert_eq!(stub.key(), Some("noise".as_bytes()));
    let h = dlq_headers(stub);
    assert_eq!(h["dlq.stub"], "true");
    assert_eq!(h["dlq.value_bytes"], "300000");
    assert_eq!(h["dlq.offset"], offset.to_string());
    assert_eq!(h["source"], "test");
    assert!(h["dlq.reason"].contains("not valid JSON"), "{h:?}");
    assert!(log.contains("sending a stub"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_dead_letter_topic_is_created_again() {
    let world = World::new(2).await;
    let topic = world.topic(DataType::Price);
    let dlq = format!("{topic}.dlq");
    let mut sink = SinkProcess::start(&world, &[]);
    let producer = producer();
    send(&producer, &topic, Some("bad1"), b"not json", &[]).await;
    eventually(60, "the first dead letter", || async {
        end_offsets_if_exists(&dlq).is_some_and(|e| e.values().sum::<i64>() == 1)
    })
    .await;
    delete_topic(&dlq).await;
    send(&producer, &topic, Some("bad2"), b"not json either", &[]).await;
    send(&producer, &topic, Some("ok"), price("ok").as_bytes(), &[]).await;
    drained(&world, &topic, 90).await;
    sink.terminate(Duration::from_secs(20));

    assert_eq!(stored_coins(&world).await, ["ok"]);
    let letters = read_to_end(&dlq, 30);
    let keys: Vec<&[u8]> = letters.iter().filter_map(|m| m.key()).collect();
    assert_eq!(keys, [b"bad2".as_slice()]);
    assert_eq!(
        end_offsets(&dlq).len(),
        2,
        "created with the source's partitions"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_postgres_cannot_index_is_dead_lettered_and_the_rest_lands() {
    let world = World::new(1).await;
    let topic = world.topic(DataType::Price);
    // 6,000 characters that do not compress: an index entry over 2,704 bytes.
    let mut rng = Rng::seeded(0x2545_F491_4F6C_DD1D);
    let long: String = (0..6_000)
        .map(|_| char::from(b'a' + rng.range(0..26) as u8))
        .collect();
    let mut messages = prices(0..50);
    messages.push(("long".into(), price(&long)));
    messages.extend(prices(50..100));
    let at = send_many(&topic, &messages).await;
    let mut sink = SinkProcess::start(&world, &[]);
    drained(&world, &topic, 60).await;
    sink.terminate(Duration::from_secs(20));

    assert_eq!(stored_coins(&world).await, coins(0..100));
    let letters = read_to_end(&format!("{topic}.dlq"), 30);
    assert_eq!(letters.len(), 1);
    let h = dlq_headers(&letters[0]);
    assert_eq!(h["dlq.offset"], at[50].1.to_string());
    assert!(h["dlq.reason"].contains("SQLSTATE 54000"), "{h:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decimal_bomb_is_dead_lettered_at_once_in_little_memory() {
    let world = World::new(1).await;
    let topic = world.topic(DataType::Price);
    let mut sink = SinkProcess::start(&world, &[]);
    // Wait until the sink reads the topic, so the clock below times the bomb.
    let producer = producer();
    send(
        &producer,
        &topic,
        Some("first"),
        price("first").as_bytes(),
        &[],
    )
    .await;
    drained(&world, &topic, 60).await;

    // Elements whose prices hold 131,072 digits each as stored: 3.9 MB of
    // them (43,000 elements), and 249 kB (2,700).
    let element = r#"{"coinId":"b","symbol":"B","usdPrice":1e131071,"lastUpdated":1763834400000,"source":"t"}"#;
    let array =
        |bytes: usize| format!("[{}]", vec![element; bytes / (element.len() + 1)].join(","));
    let zstd = zstd_producer();
    let started = Instant::now();
    for (key, bytes) in [("bomb", 3_900_000), ("small bomb", 249_000)] {
        let bomb = array(bytes);
        let record: FutureRecord<'_, str, str> = FutureRecord::to(&topic).key(key).payload(&bomb);
        zstd.send(record, Duration::from_secs(10))
            .await
            .expect("bomb sent");
    }
    send_many(&topic, &prices(0..100)).await;
    drained(&world, &topic, 60).await;
    let took = started.elapsed();
    let peak_mib = sink.peak_rss_kib().expect("peak RSS") / 1024;
    sink.terminate(Duration::from_secs(20));

    let mut expected = coins(0..100);
    expected.push("first".into());
    expected.sort();
    assert_eq!(
        stored_coins(&world).await,
        expected,
        "the prices behind it land"
    );
    let letters = read_to_end(&format!("{topic}.dlq"), 30);
    let reasons: Vec<String> = letters
        .iter()
        .map(|m| dlq_headers(m)["dlq.reason"].clone())
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons[0].contains("more than 10000 elements (max_array_elements)"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].contains("element 0")
            && reasons[1].contains("131072 digits, more than max_decimal_digits (1000)"),
        "{reasons:?}"
    );
    assert!(peak_mib < 256, "peak RSS {peak_mib} MiB");
    // Produced, dead-lettered and the 100 prices behind it committed.
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_is_shown_before_the_first_commit_and_start_is_not_unhealthy() {
    let world = World::new(1).await;
    let topic = world.topic(DataType::Price);
    let port = free_port();
    let mut sink = SinkProcess::start(
        &world,
        &[("TIMESINK_HTTP__LISTEN", format!("127.0.0.1:{port}"))],
    );
    // Starting normally: never unhealthy, ready once assigned.
    let mut states = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        if let Some((_, body)) = try_get(port, "/status") {
            let s: serde_json::Value = serde_json::from_str(&body).expect("JSON");
            *states
                .entry(s["state"].as_str().unwrap_or("?").to_owned())
                .or_insert(0) += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(states.keys().collect::<Vec<_>>(), ["healthy"], "{states:?}");
    eventually(30, "ready", || async {
        try_get(port, "/ready").is_some_and(|(code, _)| code == 200)
    })
    .await;

    // A writer that cannot write: the table is locked, nothing commits.
    let (locker, connection) =
        tokio_postgres::connect(&world.config.database.url, tokio_postgres::NoTls)
            .await
            .expect("connect");
    tokio::spawn(connection);
    locker
        .batch_execute("BEGIN; LOCK TABLE crypto_prices IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    send_many(&topic, &prices(0..3_000)).await;
    eventually(30, "/status shows 3,000 messages of lag", || async {
        try_get(port, "/status").is_some_and(|(_, body)| {
            let s: serde_json::Value = serde_json::from_str(&body).expect("JSON");
            s["lag_messages"] == 3_000 && s["state"] == "degraded"
        })
    })
    .await;
    let metrics = http_get(port, "/metrics");
    let series =
        format!("timesink_consumer_lag_messages{{topic=\"{topic}\",partition=\"0\"}} 3000");
    assert!(
        metrics.lines().any(|l| l == series),
        "{series} missing:\n{metrics}"
    );
    let (_, ready) = try_get(port, "/ready").expect("/ready");
    assert!(ready.contains("\"lag_messages\":3000"), "{ready}");
    assert_eq!(
        world.count("timesink_offsets").await,
        0,
        "nothing committed yet"
    );

    locker.batch_execute("COMMIT").await.expect("unlock");
    drained(&world, &topic, 60).await;
    eventually(30, "lag back to 0", || async {
        try_get(port, "/status").is_some_and(|(_, body)| body.contains("\"lag_messages\":0"))
    })
    .await;
    sink.terminate(Duration::from_secs(20));
}

/// GET a path of the sink's HTTP port: the status code and body, or None.
fn try_get(port: u16, path: &str) -> Option<(u16, String)> {
    get(&format!("http://127.0.0.1:{port}{path}"))
}

fn http_get(port: u16, path: &str) -> String {
    try_get(port, path)
        .unwrap_or_else(|| panic!("{path} answers"))
        .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_topic_that_takes_nothing_blocks_its_table_loudly_until_it_does() {
    let world = World::new(1).await;
    let topic = world.topic(DataType::Price);
    let dlq = format!("{topic}.dlq");
    // A dead-letter topic whose limit not even a stub's headers fit.
    create_topic(&dlq, 1, &[("max.message.bytes", "50")]).await;
    let port = free_port();
    let mut sink = SinkProcess::start(
        &world,
        &[("TIMESINK_HTTP__LISTEN", format!("127.0.0.1:{port}"))],
    );
    let producer = producer();
    send(&producer, &topic, Some("bad"), b"not json", &[]).await;
    send(&producer, &topic, Some("ok"), price("ok").as_bytes(), &[]).await;
    eventually(60, "/status reports crypto_prices blocked", || async {
        try_get(port, "/status").is_some_and(|(_, body)| {
            let s: serde_json::Value = serde_json::from_str(&body).expect("JSON");
            s["state"] == "unhealthy"
                && s["blocked"]["crypto_prices"]
                    .as_str()
                    .is_some_and(|r| r.contains(&dlq))
        })
    })
    .await;
    let (code, ready) = try_get(port, "/ready").expect("/ready");
    assert_eq!(code, 503, "{ready}");
    assert!(ready.contains("blocked"), "{ready}");
    assert!(
        http_get(port, "/metrics")
            .lines()
            .any(|l| l == "timesink_table_blocked{table=\"crypto_prices\"} 1")
    );
    assert_eq!(
        world.count("crypto_prices").await,
        0,
        "held behind the dead letter"
    );

    // The operator deletes the topic: the sink creates it again, with the
    // source's settings, and goes on by itself (so it is not waited gone).
    for r in admin()
        .delete_topics(&[dlq.as_str()], &AdminOptions::new())
        .await
        .expect("delete topic")
    {
        r.expect("topic deleted");
    }
    drained(&world, &topic, 60).await;
    eventually(30, "no longer blocked", || async {
        try_get(port, "/status").is_some_and(|(_, body)| body.contains("\"blocked\":{}"))
    })
    .await;
    let log = sink.log_text();
    sink.terminate(Duration::from_secs(20));
    assert_eq!(stored_coins(&world).await, ["ok"]);
    assert_eq!(read_to_end(&dlq, 30).len(), 1);
    assert_eq!(
        log.matches("table blocked").count(),
        1,
        "one line per change:\n{log}"
    );
    assert_eq!(log.matches("no longer blocked").count(), 1, "{log}");
}
