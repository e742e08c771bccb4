//! Hostile input: each message below goes to the dead-letter topic with a
//! reason that names the field or the byte offset, and none of them crashes
//! the sink or stalls its partition (a valid message after each lands).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use rdkafka::ClientConfig;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use timesink::ops::produce::DataType;
use timesink::ops::produce::{Encoding, Generator};
use timesink::time::Timestamp;

/// What a case is, its value, its headers, a part of the reason it must carry.
type Case = (
    &'static str,
    Vec<u8>,
    Vec<(&'static str, String)>,
    &'static str,
);

fn price(fields: &str) -> String {
    format!(r#"{{"coinId":"h","symbol":"H","lastUpdated":1763834400000,"source":"t",{fields}}}"#)
}

/// One generated message of `encoding` (prices), as value and headers.
fn generated(world: &World, encoding: Encoding) -> (Vec<u8>, Vec<(&'static str, String)>) {
    let mut generator = Generator::new(
        world.topics.clone(),
        Vec::new(),
        vec![DataType::Price],
        vec![encoding],
        Timestamp(chrono::Utc::now().timestamp_micros() - 60_000_000),
    );
    let m = generator.next_message();
    (m.value, m.headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_are_dead_lettered_with_a_reason_and_nothing_stalls() {
    let world = World::new(1).await;
    let topic = world.topic(DataType::Price);
    // The prices topic again, taking messages up to 16 MiB (so the 5 MB one
    // arrives; its dead-letter topic must inherit the limit).
    {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .create()
            .expect("admin");
        for r in admin
            .delete_topics(&[&topic], &AdminOptions::new())
            .await
            .expect("delete")
        {
            r.expect("deleted");
        }
        let big = NewTopic::new(&topic, 1, TopicReplication::Fixed(1))
            .set("max.message.bytes", "16777216");
        for r in admin
            .create_topics([&big], &AdminOptions::new())
            .await
            .expect("create")
        {
            r.expect("created");
        }
    }
    let now_ms = chrono::Utc::now().timestamp_millis();
    let ten_years_ms = 10 * 365 * 24 * 3_600_000i64;

    let (lz4_json, lz4_headers) = generated(&world, Encoding::Lz4Json);
    let (bincode, bincode_headers) = generated(&world, Encoding::Bincode);
    let mut corrupt_lz4 = lz4_json.clone();
    let middle = corrupt_lz4.len() / 2;
    for b in &mut corrupt_lz4[middle..middle + 8] {
        *b ^= 0x5a;
    }
    let mut nested = "[".repeat(10_000);
    nested.push_str(&"]".repeat(10_000));
    let mut invalid_utf8 = price(r#""usdPrice":"1.5""#).into_bytes();
    invalid_utf8[10] = 0xff;
    let mut huge = price(r#""usdPrice":"1.5","padding":""#).into_bytes();
    huge.pop();
    huge.extend(std::iter::repeat_n(b'x', 5 * 1024 * 1024));
    huge.extend(b"\"}");

    let compressed = vec![("compressed", "true".to_string())];
    let with = |mut h: Vec<(&'static str, String)>, k: &'static str, v: &str| {
        h.retain(|(name, _)| *name != k);
        h.push((k, v.to_string()));
        h
    };
    let cases: Vec<Case> = vec![
        ("malformed JSON", br#"{"coinId": "x",,}"#.to_vec(), vec![], "column"),
        ("wrong type", price(r#""usdPrice":true"#).into_bytes(), vec![], "usdPrice"),
        ("NaN", price(r#""usdPrice":"NaN""#).into_bytes(), vec![], "usdPrice"),
        ("Infinity", price(r#""usdPrice":"Infinity""#).into_bytes(), vec![], "usdPrice"),
        ("negative price", price(r#""usdPrice":"-1""#).into_bytes(), vec![], "usdPrice"),
        ("zero price", price(r#""usdPrice":0"#).into_bytes(), vec![], "usdPrice"),
        (
            "before 2009",
            br#"{"coinId":"h","symbol":"H","usdPrice":1,"lastUpdated":"2008-12-31T23:59:59Z","source":"t"}"#.to_vec(),
            vec![],
            "lastUpdated",
        ),
        (
            "ten years ahead",
            format!(
                r#"{{"coinId":"h","symbol":"H","usdPrice":1,"lastUpdated":{},"source":"t"}}"#,
                now_ms + ten_years_ms
            )
            .into_bytes(),
            vec![],
            "lastUpdated",
        ),
        (
            "truncated LZ4 frame",
            lz4_json[..lz4_json.len() - 7].to_vec(),
            lz4_headers.clone(),
            "LZ4",
        ),
        ("corrupt LZ4 frame", corrupt_lz4, lz4_headers.clone(), ""),
        (
            "LZ4 header on plain bytes",
            price(r#""usdPrice":"1.5""#).into_bytes(),
            compressed.clone(),
            "LZ4",
        ),
        (
            "truncated bincode",
            bincode[..bincode.len() - 3].to_vec(),
            bincode_headers.clone(),
            "byte offset",
        ),
        (
            "unknown schema-version",
            bincode.clone(),
            with(bincode_headers.clone(), "schema-version", "7"),
            "schema-version",
        ),
        (
            "unknown dataType",
            br#"{"messageId":"m","timestamp":1763834400000,"source":"s","dataType":"weather","payload":{}}"#.to_vec(),
            vec![],
            "dataType",
        ),
        ("5 MB message", huge, vec![], "max_value_bytes"),
        ("invalid UTF-8", invalid_utf8, vec![], "UTF-8"),
        ("deeply nested JSON", nested.into_bytes(), vec![], "element 0"),
    ];

    // A producer that may send the 5 MB message.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("message.max.bytes", "16777216")
        .create()
        .expect("producer");
    let mut expected: HashMap<i64, (&str, &str)> = HashMap::new();
    for (i, (what, value, headers, reason)) in cases.iter().enumerate() {
        let mut h = rdkafka::message::OwnedHeaders::new();
        for (k, v) in headers {
            h = h.insert(rdkafka::message::Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let record: FutureRecord<'_, str, [u8]> = FutureRecord::to(&topic)
            .payload(value.as_slice())
            .headers(h);
        let offset = producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .expect("produce")
            .offset;
        expected.insert(offset, (what, reason));
        // A valid message after each: it must land.
        let canary = format!(
            r#"{{"coinId":"canary{i}","symbol":"C","usdPrice":"{i}.5","lastUpdated":1763834400000,"source":"t"}}"#
        );
        send(&producer, &topic, None, canary.as_bytes(), &[]).await;
    }
    let mut sink = SinkProcess::start(&world, &[]);
    eventually(60, "every canary stored", || async {
        world.count("crypto_prices").await == cases.len() as i64
    })
    .await;
    let letters = read_to_end(&format!("{topic}.dlq"), 60);
    sink.terminate(Duration::from_secs(20));
    assert!(sink.log_text().lines().all(|l| !l.contains("panicked")));

    let mut seen = HashMap::new();
    for m in &letters {
        let h = dlq_headers(m);
        let offset: i64 = h["dlq.offset"].parse().expect("dlq.offset");
        let (what, part) = expected
            .get(&offset)
            .unwrap_or_else(|| panic!("unexpected dead letter at {offset}: {}", h["dlq.reason"]));
        eprintln!("{what:>28}: {}", h["dlq.reason"]);
        assert!(
            h["dlq.reason"].contains(part),
            "{what}: reason {:?} should mention {part:?}",
            h["dlq.reason"]
        );
        assert!(!h["dlq.reason"].contains('\n'), "one line");
        // Byte for byte.
        let sent = &cases.iter().find(|c| c.0 == *what).expect("case").1;
        assert_eq!(m.payload().map(<[u8]>::len), Some(sent.len()), "{what}");
        assert!(m.payload() == Some(sent.as_slice()), "{what}: value kept");
        seen.insert(offset, ());
    }
    assert_eq!(
        seen.len(),
        cases.len(),
        "every hostile message dead-lettered"
    );
}

/// A header name that is not UTF-8 (Kafka does not check them): rdkafka's
/// own header reader panics on one. The sink reads it with U+FFFD in place
/// of the bad byte: the valid message is stored, the invalid one
/// dead-lettered with its header, and nothing panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_name_that_is_not_utf8_is_read_not_panicked_on() {
    use rdkafka::bindings as rd;
    use rdkafka::producer::{BaseProducer, Producer};

    let world = World::new(1).await;
    let topic = world.topic(DataType::Price);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("producer");
    let topic_c = std::ffi::CString::new(topic.clone()).expect("topic name");
    let name = c"\xffbad";
    let header_value = b"kept";
    let valid = price(r#""usdPrice":"2.5""#).replace(r#""h""#, r#""h1""#);
    let invalid = price(r#""usdPrice":"NaN""#);
    // The invalid one first: once the valid one is stored, its dead letter
    // has been acknowledged.
    for value in [invalid.as_bytes(), valid.as_bytes()] {
        let vus = [
            rd::rd_kafka_vu_t {
                vtype: rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_TOPIC,
                u: rd::rd_kafka_vu_s__bindgen_ty_1 {
                    cstr: topic_c.as_ptr(),
                },
            },
            rd::rd_kafka_vu_t {
                vtype: rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_VALUE,
                u: rd::rd_kafka_vu_s__bindgen_ty_1 {
                    mem: rd::rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_1 {
                        ptr: value.as_ptr() as *mut _,
                        size: value.len(),
                    },
                },
            },
            rd::rd_kafka_vu_t {
                vtype: rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_HEADER,
                u: rd::rd_kafka_vu_s__bindgen_ty_1 {
                    header: rd::rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_2 {
                        name: name.as_ptr(),
                        val: header_value.as_ptr().cast(),
                        size: header_value.len() as isize,
                    },
                },
            },
        ];
        // SAFETY: every pointer lives until the call returns; librdkafka
        // copies the value (no RD_KAFKA_MSG_F_FREE) and the header.
        let error = unsafe {
            rd::rd_kafka_produceva(producer.client().native_ptr(), vus.as_ptr(), vus.len())
        };
        assert!(error.is_null(), "rd_kafka_produceva refused the message");
    }
    producer.flush(Duration::from_secs(30)).expect("flushed");

    let mut sink = SinkProcess::start(&world, &[]);
    eventually(60, "the valid message stored", || async {
        world.count("crypto_prices").await == 1
    })
    .await;
    let letters = read_to_end(&format!("{topic}.dlq"), 60);
    sink.terminate(Duration::from_secs(20));
    assert!(sink.log_text().lines().all(|l| !l.contains("panicked")));
    assert_eq!(letters.len(), 1, "the NaN price dead-lettered");
    let h = dlq_headers(&letters[0]);
    assert_eq!(
        h.get("\u{fffd}bad").map(String::as_str),
        Some("kept"),
        "{h:?}"
    );
    assert!(h["dlq.reason"].contains("usdPrice"), "{}", h["dlq.reason"]);
}

/// Values beyond what PostgreSQL's types hold are dead letters naming the
/// column, never stored as something else: a double of `1e400` (not
/// `Infinity`), `1e-400` (not 0), an epoch in milliseconds before 4714 BC
/// (not a date in the year 294247).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_beyond_their_type_are_dead_lettered_not_stored_otherwise() {
    let world = World::new(1).await;
    let prefix = world.prefix();
    let topic = format!("{prefix}readings");
    create_topics(std::slice::from_ref(&topic), 1).await;
    let config = format!(
        r#"
[tables.readings]
topics = ["{topic}"]
primary_key = ["id"]
columns = [
  {{ name = "id", type = "text", from = "key", required = true }},
  {{ name = "celsius", type = "double precision", from = "/t", required = true }},
  {{ name = "at", type = "timestamptz", from = "/at", epoch = "ms", required = true }},
]
"#
    );
    let messages: Vec<(String, String)> = [
        ("ok1", r#"{"t":1.5,"at":1763834400000}"#),
        ("huge", r#"{"t":1e400,"at":1763834400000}"#),
        ("tiny", r#"{"t":1e-400,"at":1763834400000}"#),
        ("ancient", r#"{"t":2.5,"at":-9223372036854775}"#),
        ("ok2", r#"{"t":1e-310,"at":1763834400001}"#),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .to_vec();
    send_many(&topic, &messages).await;
    let mut sink = SinkProcess::start(&world, &[world.config_file("readings", &config)]);
    drained(&world, &topic, 60).await;
    let letters = read_to_end(&format!("{topic}.dlq"), 60);
    sink.terminate(Duration::from_secs(20));

    let rows = world.texts("SELECT id FROM readings ORDER BY id").await;
    assert_eq!(rows, ["ok1", "ok2"], "only the values their types hold");
    let reasons = dead_letter_reasons(&letters);
    let expected = [
        ("ancient", "column `at`", "before 4714-11-24 BC"),
        (
            "huge",
            "column `celsius`",
            "1e400 is out of range for double precision",
        ),
        (
            "tiny",
            "column `celsius`",
            "1e-400 is out of range for double precision",
        ),
    ];
    assert_eq!(reasons.len(), expected.len(), "{reasons:?}");
    for ((key, reason), (k, column, problem)) in reasons.iter().zip(expected) {
        assert_eq!(key, k);
        assert!(
            reason.contains(column) && reason.contains(problem),
            "{key}: {reason}"
        );
    }
}

/// A value quoted in a reason is cut to 200 characters with its length:
/// a 500 kB `timeframe`, `dataType` or header value is neither one log line
/// nor one `dlq.reason` header whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_value_is_quoted_cut_in_the_log_and_the_reason() {
    let world = World::new(1).await;
    let (ohlcv, prices) = (world.topic(DataType::Ohlcv), world.topic(DataType::Price));
    let long = "x".repeat(500_000);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("producer");
    let candle = format!(
        r#"{{"coinId":"bitcoin","symbol":"BTC","timeframe":"{long}","timestamp":1763834400000,"openPrice":"10","highPrice":"12","lowPrice":"9","closePrice":"11","volume":"100","trades":5,"source":"s"}}"#
    );
    send(&producer, &ohlcv, None, candle.as_bytes(), &[]).await;
    let envelope = format!(
        r#"{{"messageId":"m","timestamp":1763834400000,"source":"s","dataType":"{long}","payload":{{}}}}"#
    );
    send(&producer, &prices, None, envelope.as_bytes(), &[]).await;
    send(
        &producer,
        &prices,
        None,
        b"{}",
        &[("content-type", long.as_str())],
    )
    .await;

    let mut sink = SinkProcess::start(&world, &[]);
    drained(&world, &prices, 60).await;
    drained(&world, &ohlcv, 60).await;
    let mut letters = read_to_end(&format!("{ohlcv}.dlq"), 60);
    letters.extend(read_to_end(&format!("{prices}.dlq"), 60));
    sink.terminate(Duration::from_secs(20));
    assert_eq!(letters.len(), 3, "each dead-lettered");
    for m in &letters {
        let reason = &dlq_headers(m)["dlq.reason"];
        eprintln!("{reason}");
        assert!(
            reason.len() < 400 && reason.contains("… (500000 bytes)"),
            "cut, with the length: {} bytes: {}…",
            reason.len(),
            reason.chars().take(300).collect::<String>()
        );
    }
    let log = sink.log_text();
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(
        longest < 2_000,
        "a log line of {longest} bytes quotes a value whole"
    );
    assert_eq!(
        log.lines().filter(|l| l.contains("(500000 bytes)")).count(),
        3,
        "each logged, cut:\n{}",
        log.lines()
            .map(|l| &l[..l.len().min(300)])
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Key values PostgreSQL holds equal are one key within a batch: `1.0`
/// and `1.00` in a numeric key, `0.0` and `-0.0` in a double key. The
/// later record wins, as for any repeated key, and the table is never
/// blocked by `ON CONFLICT DO UPDATE` meeting one row twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_equal_to_postgres_are_one_key_and_the_later_wins() {
    let world = World::new(1).await;
    let topic = format!("{}levels", world.prefix());
    create_topics(std::slice::from_ref(&topic), 1).await;
    let config = format!(
        r#"
[tables.levels]
topics = ["{topic}"]
primary_key = ["price", "offset_bp"]
columns = [
  {{ name = "price", type = "numeric", from = "/price", required = true }},
  {{ name = "offset_bp", type = "double precision", from = "/bp", required = true }},
  {{ name = "size", type = "bigint", from = "/size", required = true }},
]
"#
    );
    let messages: Vec<(String, String)> = [
        r#"{"price":"1.0","bp":0.0,"size":1}"#,
        r#"{"price":"1.00","bp":-0.0,"size":2}"#,
        r#"{"price":"2.50","bp":1.5,"size":3}"#,
        r#"{"price":2.5,"bp":1.5,"size":4}"#,
    ]
    .iter()
    .map(|v| ("k".to_owned(), (*v).to_owned()))
    .collect();
    // Before the sink starts: all four in one batch.
    send_many(&topic, &messages).await;
    let mut sink = SinkProcess::start(&world, &[world.config_file("levels", &config)]);
    drained(&world, &topic, 60).await;
    sink.terminate(Duration::from_secs(20));
    let rows: Vec<(String, i64)> = world
        .db
        .query("SELECT price::text, size FROM levels ORDER BY size", &[])
        .await
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        rows,
        [("1.00".to_owned(), 2), ("2.5".to_owned(), 4)],
        "one row per key, the later record's"
    );
    let log = sink.log_text();
    assert!(!log.contains("table blocked"), "{log}");
}

/// A deep document: past `max_json_depth` it is dead-lettered at decode;
/// within it but past what PostgreSQL's jsonb input takes (54001), the one
/// message is dead-lettered with the SQLSTATE — never the table blocked —
/// and the messages around it land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_document_is_a_dead_letter_not_a_blocked_table() {
    let world = World::new(1).await;
    let topic = format!("{}docs", world.prefix());
    create_topics(std::slice::from_ref(&topic), 1).await;
    let config = format!(
        r#"
[tables.docs]
topics = ["{topic}"]
primary_key = ["id"]
columns = [
  {{ name = "id", type = "text", from = "key", required = true }},
  {{ name = "doc", type = "jsonb", from = "/doc" }},
]
"#
    );
    let deep = |n: usize| format!(r#"{{"doc":{}{}}}"#, "[".repeat(n), "]".repeat(n));
    let env = world.config_file("docs", &config);

    // Within PostgreSQL's reach, past the sink's bound.
    let first = vec![
        ("a".to_owned(), r#"{"doc":{"x":1}}"#.to_owned()),
        ("deep".to_owned(), deep(2_000)),
        ("b".to_owned(), r#"{"doc":[1]}"#.to_owned()),
    ];
    send_many(&topic, &first).await;
    let mut sink = SinkProcess::start(&world, std::slice::from_ref(&env));
    drained(&world, &topic, 60).await;
    sink.terminate(Duration::from_secs(20));

    // The bound lifted: PostgreSQL itself refuses 100,000 levels.
    let second = vec![
        ("c".to_owned(), r#"{"doc":{"y":2}}"#.to_owned()),
        ("deeper".to_owned(), deep(100_000)),
        ("d".to_owned(), r#"{"doc":null}"#.to_owned()),
    ];
    send_many(&topic, &second).await;
    let mut sink = SinkProcess::start(
        &world,
        &[
            env.clone(),
            ("TIMESINK_MAX_JSON_DEPTH", "1000000".to_owned()),
        ],
    );
    drained(&world, &topic, 60).await;
    let letters = read_to_end(&format!("{topic}.dlq"), 60);
    sink.terminate(Duration::from_secs(20));

    let ids = world.texts("SELECT id FROM docs ORDER BY id").await;
    assert_eq!(ids, ["a", "b", "c", "d"]);
    let reasons = dead_letter_reasons(&letters);
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert_eq!(reasons[0].0, "deep");
    assert!(
        reasons[0]
            .1
            .contains("column `doc`: JSON nested deeper than 1000 levels (max_json_depth)"),
        "{reasons:?}"
    );
    assert_eq!(reasons[1].0, "deeper");
    assert!(reasons[1].1.contains("SQLSTATE 54001"), "{reasons:?}");
    assert!(!sink.log_text().contains("table blocked"));
}
