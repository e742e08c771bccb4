//! The worked example of tables as data: seed 004's odin token events,
//! stored by the mapping shipped in `examples/odin.toml` (configuration, no
//! code) on the real broker and database. Every event type, a trade sent
//! twice, events sent twice, and every kind of invalid message the contract
//! names; then every row, every dead letter and the offsets are checked,
//! and a re-read of everything changes no row.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

use common::*;
use timesink::ops::produce::odin::{EVENTS, TOPICS, event};

/// A row of odin_trades but its hash: token, type, price, amount, buyer,
/// seller, time (epoch ms).
type TradeRow = (
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    i64,
);

/// One message as sent, and what must become of it.
struct Sent {
    topic: String,
    key: Option<String>,
    value: String,
    /// None: stored; Some(text): dead-lettered with a reason containing it.
    dead: Option<&'static str>,
    at: (i32, i64),
}

async fn send_event(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&str>,
    value: &str,
    time_ms: i64,
) -> (i32, i64) {
    let mut record: FutureRecord<'_, str, str> =
        FutureRecord::to(topic).payload(value).timestamp(time_ms);
    if let Some(k) = key {
        record = record.key(k);
    }
    let d = producer
        .send(record, Duration::from_secs(10))
        .await
        .expect("produce");
    (d.partition, d.offset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_odin_stream_lands_by_its_declared_mapping() {
    let world = World::new(1).await;
    let prefix = world.prefix();
    let topics: Vec<String> = TOPICS.iter().map(|t| format!("{prefix}{t}")).collect();
    create_topics(&topics, 3).await;
    // The shipped example, its topics renamed for this test.
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/odin.toml"))
            .expect("examples/odin.toml");
    let config = example.replace("\"odin.", &format!("\"{prefix}odin."));
    let file = std::env::temp_dir().join(format!("{prefix}odin.toml"));
    std::fs::write(&file, config).expect("write config");
    let port = free_port();
    let env = [
        ("TIMESINK_CONFIG_FILE", file.display().to_string()),
        ("TIMESINK_HTTP__LISTEN", format!("127.0.0.1:{port}")),
    ];

    // Seed 004's publisher: gzip, keyed by token, the event's timestamp.
    let producer: FutureProducer = kafka_client()
        .set("compression.type", "gzip")
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    let now_ms = chrono::Utc::now().timestamp_millis() - 60_000;
    let mut sent: Vec<Sent> = Vec::new();
    let push = |topic: &str, key: Option<&str>, value: String, dead, time_ms| {
        (
            format!("{prefix}{topic}"),
            key.map(str::to_owned),
            value,
            dead,
            time_ms,
        )
    };
    let mut plan = Vec::new();
    // Every event type, once.
    for (n, (name, topic, _)) in EVENTS.iter().enumerate() {
        let g = event(
            "",
            name,
            topic,
            &format!("token-{}", n % 5),
            now_ms + n as i64,
            n as u64,
        );
        let value = String::from_utf8(g.value).unwrap();
        plan.push(push(topic, Some(&g.key), value, None, now_ms + n as i64));
    }
    // The same trade twice: one row, the later one's values.
    let t = now_ms + 100;
    for (price, buyer) in [("1.10", "0xfirst"), ("1.20", "0xlater")] {
        let value = format!(
            r#"{{"type":"BUY_COMPLETED","timestamp":{t},"extra":1,"data":{{"price":"{price}","amount":"2.000","buyer":"{buyer}","txHash":"0xdup","note":"ignored"}}}}"#
        );
        plan.push(push("odin.trades", Some("token-dup"), value, None, t));
    }
    // Decimals as sent: an exponent, and more digits than f64 keeps.
    let value = format!(
        r#"{{"type":"SELL_COMPLETED","timestamp":{t},"data":{{"price":1.5e2,"amount":"12345678901234567890.123456789","txHash":"0xexact"}}}}"#
    );
    plan.push(push("odin.trades", Some("token-x"), value, None, t));
    // An event sent twice: two messages, two rows.
    let twice = format!(
        r#"{{"type":"COMMENT_POSTED","timestamp":{t},"data":{{"text":"twice","n":[1,{{"a":null}}]}}}}"#
    );
    for _ in 0..2 {
        plan.push(push(
            "odin.community",
            Some("token-c"),
            twice.clone(),
            None,
            t,
        ));
    }
    // Everything the contract dead-letters.
    let trade =
        |kind: &str, data: &str| format!(r#"{{"type":"{kind}","timestamp":{t},"data":{data}}}"#);
    let good = r#"{"price":"1","amount":"1","txHash":"0xbad"}"#;
    plan.push(push(
        "odin.trades",
        None,
        trade("TRADE_EXECUTED", good),
        Some("column `token_id` (key): required but missing or null"),
        t,
    ));
    plan.push(push(
        "odin.trades",
        Some("k"),
        trade("trade_executed", good),
        Some("column `event_type` (/type): \"trade_executed\" is not one of"),
        t,
    ));
    plan.push(push(
        "odin.liquidity",
        Some("k"),
        trade("TRADE_EXECUTED", r#"{"a":1}"#),
        Some("column `event_type` (/type): \"TRADE_EXECUTED\" is not one of topic"),
        t,
    ));
    plan.push(push(
        "odin.community",
        Some("k"),
        trade("COMMENT_POSTED", "[1,2]"),
        Some("column `data` (/data): expected a JSON object, found an array"),
        t,
    ));
    plan.push(push(
        "odin.metadata",
        Some("k"),
        trade("METADATA_UPDATED", "\"text\""),
        Some("column `data` (/data): expected a JSON object, found a string"),
        t,
    ));
    plan.push(push(
        "odin.social",
        Some("k"),
        format!("[{}]", trade("TWITTER_VERIFIED", "{}")),
        Some("expected one JSON object, found an array"),
        t,
    ));
    // The seed's timestamp is integer epoch milliseconds, the only form.
    let iso = chrono::DateTime::from_timestamp_millis(t)
        .expect("time")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    plan.push(push(
        "odin.trades",
        Some("k"),
        format!(r#"{{"type":"TRADE_EXECUTED","timestamp":"{iso}","data":{good}}}"#),
        Some(
            "column `time` (/timestamp): expected epoch milliseconds as an integer, found a string",
        ),
        t,
    ));
    plan.push(push(
        "odin.balances",
        Some("k"),
        format!(r#"{{"type":"BALANCE_UPDATED","timestamp":"{iso}","data":{{}}}}"#),
        Some(
            "column `time` (/timestamp): expected epoch milliseconds as an integer, found a string",
        ),
        t,
    ));
    plan.push(push(
        "odin.creation",
        Some("k"),
        "not json".to_owned(),
        Some("value is not valid JSON"),
        t,
    ));
    plan.push(push(
        "odin.trades",
        Some("k"),
        trade(
            "TRADE_EXECUTED",
            r#"{"price":"0","amount":"1","txHash":"0xz"}"#,
        ),
        Some("column `price` (/data/price): must be > 0, got 0"),
        t,
    ));
    plan.push(push(
        "odin.trades",
        Some("k"),
        trade("TRADE_EXECUTED", r#"{"price":"1","amount":"1"}"#),
        Some("column `tx_hash` (/data/txHash): required but missing or null"),
        t,
    ));
    plan.push(push(
        "odin.balances",
        Some("k"),
        r#"{"type":"BALANCE_UPDATED","timestamp":1230768000000,"data":{}}"#.to_owned(),
        Some("column `time` (/timestamp): must be > 2009-01-01T00:00:00Z"),
        t,
    ));
    plan.push(push(
        "odin.analytics",
        Some("k"),
        r#"{"type":"TRENDING_UPDATED","data":{}}"#.to_owned(),
        Some("column `time` (/timestamp): required but missing or null"),
        t,
    ));
    for (topic, key, value, dead, time_ms) in plan {
        let at = send_event(&producer, &topic, key.as_deref(), &value, time_ms).await;
        sent.push(Sent {
            topic,
            key,
            value,
            dead,
            at,
        });
    }

    let mut sink = SinkProcess::start(&world, &env);
    for topic in &topics {
        drained(&world, topic, 60).await;
    }

    // odin_trades: every valid trade once, the later of the repeated one,
    // every value as sent.
    let rows = world
        .db
        .query(
            "SELECT tx_hash, token_id, event_type, price::text, amount::text, buyer, seller, \
                    (extract(epoch FROM time) * 1000)::bigint FROM odin_trades ORDER BY tx_hash",
            &[],
        )
        .await
        .expect("odin_trades");
    let mut expected: HashMap<String, TradeRow> = HashMap::new();
    for s in sent
        .iter()
        .filter(|s| s.dead.is_none() && s.topic.ends_with("odin.trades"))
    {
        let v: serde_json::Value = serde_json::from_str(&s.value).unwrap();
        let d = &v["data"];
        let text = |x: &serde_json::Value| match x {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let price = match text(&d["price"]).as_str() {
            "150.0" | "1.5e2" => "150".to_owned(),
            p => p.to_owned(),
        };
        expected.insert(
            text(&d["txHash"]),
            (
                s.key.clone().unwrap(),
                text(&v["type"]),
                price,
                text(&d["amount"]),
                d["buyer"].as_str().map(str::to_owned),
                d["seller"].as_str().map(str::to_owned),
                v["timestamp"].as_i64().unwrap(),
            ),
        );
    }
    assert_eq!(rows.len(), expected.len(), "one row per trade");
    for r in &rows {
        let hash: String = r.get(0);
        let want = &expected[&hash];
        let got = (
            r.get::<_, String>(1),
            r.get::<_, String>(2),
            r.get::<_, String>(3),
            r.get::<_, String>(4),
            r.get::<_, Option<String>>(5),
            r.get::<_, Option<String>>(6),
            r.get::<_, i64>(7),
        );
        assert_eq!(&got, want, "trade {hash}");
    }
    assert_eq!(expected["0xdup"].4.as_deref(), Some("0xlater"));
    assert_eq!(expected["0xdup"].2, "1.20");
    assert_eq!(expected["0xexact"].3, "12345678901234567890.123456789");

    // odin_events: every valid event at its partition and offset, its data
    // equal (as jsonb) to what was sent.
    let events: Vec<&Sent> = sent
        .iter()
        .filter(|s| s.dead.is_none() && !s.topic.ends_with("odin.trades"))
        .collect();
    assert_eq!(world.count("odin_events").await, events.len() as i64);
    for s in &events {
        let v: serde_json::Value = serde_json::from_str(&s.value).unwrap();
        let row = world
            .db
            .query_one(
                "SELECT token_id, event_type, data = $4::text::jsonb, \
                        (extract(epoch FROM time) * 1000)::bigint \
                   FROM odin_events WHERE topic = $1 AND kafka_partition = $2 AND kafka_offset = $3",
                &[&s.topic, &s.at.0, &s.at.1, &v["data"].to_string()],
            )
            .await
            .unwrap_or_else(|e| panic!("{} at {:?}: {e}", s.topic, s.at));
        assert_eq!(row.get::<_, String>(0), s.key.clone().unwrap());
        assert_eq!(row.get::<_, String>(1), v["type"].as_str().unwrap());
        assert!(row.get::<_, bool>(2), "data as sent: {}", s.value);
        assert_eq!(row.get::<_, i64>(3), v["timestamp"].as_i64().unwrap());
    }

    // Every dead letter: byte for byte, its reason naming column and source.
    let dead: Vec<&Sent> = sent.iter().filter(|s| s.dead.is_some()).collect();
    let mut letters = Vec::new();
    for topic in &topics {
        if end_offsets_if_exists(&format!("{topic}.dlq")).is_some() {
            letters.extend(read_to_end(&format!("{topic}.dlq"), 30));
        }
    }
    assert_eq!(
        letters.len(),
        dead.len(),
        "one dead letter per invalid message"
    );
    for s in &dead {
        let letter = letters
            .iter()
            .find(|m| {
                let h = dlq_headers(m);
                h["dlq.topic"] == s.topic
                    && h["dlq.offset"] == s.at.1.to_string()
                    && h["dlq.partition"] == s.at.0.to_string()
            })
            .unwrap_or_else(|| panic!("no dead letter for {} at {:?}", s.topic, s.at));
        assert_eq!(letter.payload(), Some(s.value.as_bytes()));
        assert_eq!(letter.key(), s.key.as_deref().map(str::as_bytes));
        let reason = &dlq_headers(letter)["dlq.reason"];
        assert!(
            reason.contains(s.dead.unwrap()),
            "{reason:?} lacks {:?}",
            s.dead
        );
    }

    // Offsets: stored == end == Kafka's commits, for every topic.
    let stored = world.stored_offsets().await;
    for topic in &topics {
        for (p, end) in end_offsets(topic) {
            assert_eq!(
                stored.get(&(topic.clone(), p)).copied().unwrap_or(0),
                end,
                "{topic}/{p}"
            );
        }
        eventually(30, "Kafka commits follow the stored offsets", || async {
            let committed = committed_offsets(&world.config.kafka.group_id, topic);
            end_offsets(topic)
                .into_iter()
                .all(|(p, end)| end == 0 || committed.get(&p) == Some(&end))
        })
        .await;
    }

    // Per-table metrics, /status and `timesink check` know the mapped tables.
    let (_, metrics) = get(&format!("http://127.0.0.1:{port}/metrics")).expect("/metrics");
    for series in [
        format!(
            "timesink_rows_written_total{{table=\"odin_trades\",topic=\"{prefix}odin.trades\"}}"
        ),
        "timesink_table_blocked{table=\"odin_events\"} 0".to_owned(),
        "timesink_table_paused{table=\"odin_trades\"} 0".to_owned(),
    ] {
        assert!(metrics.contains(&series), "no {series} in /metrics");
    }
    let (code, status) = get(&format!("http://127.0.0.1:{port}/status")).expect("/status");
    assert_eq!(code, 200, "{status}");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let trades_topic = format!("{prefix}odin.trades");
    assert_eq!(
        status["topics"][&trades_topic]["dead_letters"].as_u64(),
        Some(dead.iter().filter(|s| s.topic == trades_topic).count() as u64),
        "{status}"
    );
    let mut check = sink_command(&world, "check");
    check.env("TIMESINK_CONFIG_FILE", &file);
    let out = check.output().expect("timesink check");
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.lines()
            .skip_while(|l| !l.starts_with("table odin_trades (8 columns, primary key (tx_hash, time)): present"))
            .nth(1)
            == Some(&format!("  reads {prefix}odin.trades: {prefix}odin.trades (3 partitions)"))
            && out.contains("table odin_events (7 columns, primary key (topic, kafka_partition, kafka_offset, time)): present"),
        "{out}"
    );

    // With TimescaleDB, both are hypertables compressed by token.
    let timescale: bool = world
        .db
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    if timescale {
        let segments: Vec<(String, String)> = world
            .db
            .query(
                "SELECT hypertable_name::text, attname::text FROM timescaledb_information.compression_settings \
                  WHERE hypertable_name LIKE 'odin%' AND segmentby_column_index IS NOT NULL ORDER BY 1",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(
            segments,
            [
                ("odin_events".to_owned(), "token_id".to_owned()),
                ("odin_trades".to_owned(), "token_id".to_owned())
            ]
        );
    } else {
        assert!(
            std::env::var("REQUIRE_TIMESCALEDB").is_err(),
            "TimescaleDB required"
        );
    }

    // A re-read of everything (stored offsets back to 0) changes no row.
    sink.terminate(Duration::from_secs(30));
    let before_trades = world.count("odin_trades").await;
    let before_events = world.count("odin_events").await;
    world
        .db
        .execute(
            "UPDATE timesink_offsets SET next_offset = 0 WHERE consumer_group = $1",
            &[&world.config.kafka.group_id],
        )
        .await
        .unwrap();
    let mut sink = SinkProcess::start(&world, &env);
    for topic in &topics {
        drained(&world, topic, 60).await;
    }
    sink.terminate(Duration::from_secs(30));
    assert_eq!(world.count("odin_trades").await, before_trades);
    assert_eq!(world.count("odin_events").await, before_events);
    let price: String = world
        .db
        .query_one(
            "SELECT price::text FROM odin_trades WHERE tx_hash = '0xdup'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(price, "1.20", "the later record still wins");
}

/// A user's table fed by a pattern: a topic created while the sink runs is
/// picked up, and a named capture of its name fills a column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapped_table_picks_up_topics_by_pattern_and_captures_their_names() {
    let world = World::new(1).await;
    let prefix = world.prefix();
    let config = format!(
        r#"
[tables.readings]
topic_pattern = '^{prefix}sensor-(?<site>[a-z]+)$'
primary_key = ["site", "id"]
columns = [
  {{ name = "site", type = "text", from = "capture:site", required = true }},
  {{ name = "id", type = "bigint", from = "/id", required = true }},
  {{ name = "ok", type = "boolean", from = "/ok" }},
  {{ name = "celsius", type = "double precision", from = "/t" }},
  {{ name = "raw", type = "jsonb", from = "/extra", default = '"none"' }},
]
"#
    );
    let file = std::env::temp_dir().join(format!("{prefix}readings.toml"));
    std::fs::write(&file, config).expect("write config");
    let mut sink = SinkProcess::start(
        &world,
        &[("TIMESINK_CONFIG_FILE", file.display().to_string())],
    );
    eventually(30, "the table is created", || async {
        world.count("readings").await == 0
    })
    .await;
    // Created after the sink started.
    let topics = [
        format!("{prefix}sensor-north"),
        format!("{prefix}sensor-south"),
    ];
    create_topics(&topics, 2).await;
    let producer = producer();
    for (i, topic) in topics.iter().enumerate() {
        for id in 0..3 {
            let value = format!(r#"{{"id":{id},"ok":true,"t":21.5,"extra":{{"i":{i}}}}}"#);
            send(&producer, topic, Some("k"), value.as_bytes(), &[]).await;
        }
    }
    for topic in &topics {
        drained(&world, topic, 30).await;
    }
    let rows: Vec<(String, i64, bool, f64, String)> = world
        .db
        .query(
            "SELECT site, id, ok, celsius, raw::text FROM readings ORDER BY site, id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    let expected: Vec<(String, i64, bool, f64, String)> = ["north", "south"]
        .iter()
        .enumerate()
        .flat_map(|(i, site)| {
            (0..3).map(move |id| (site.to_string(), id, true, 21.5, format!(r#"{{"i": {i}}}"#)))
        })
        .collect();
    assert_eq!(rows, expected);
    sink.terminate(Duration::from_secs(30));
}
