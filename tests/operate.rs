//! What an operator sees: the HTTP endpoints of a running sink, its
//! metrics as a real Prometheus scrapes them, and `check` on what it is given.
//!
//! Prometheus is the Debian package (`apt-get install prometheus`, which
//! `.ci/run` does). Without it the Prometheus part prints SKIPPED, unless
//! `REQUIRE_PROMETHEUS=1` (CI) makes that a failure.

mod common;

use std::time::Duration;

use common::{
    SinkProcess, World, create_topics, drained, eventually, free_port, get, quote, send_many,
    sink_command, unique,
};
use timesink::ops::produce::DataType;
use timesink::ops::telemetry::METRICS;

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_and_prometheus_report_a_real_run() {
    let world = World::new(2).await;
    let topic = world.topic(DataType::Level1);
    let messages: Vec<(String, String)> = (0..300u64)
        .map(|i| (format!("K{i}"), quote(i, i % 10 != 0)))
        .collect();
    send_many(&topic, &messages).await;

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut sink = SinkProcess::start(
        &world,
        &[("TIMESINK_HTTP__LISTEN", format!("127.0.0.1:{port}"))],
    );
    eventually(30, "/health answers 200", || async {
        get(&format!("{base}/health")).is_some_and(|(code, _)| code == 200)
    })
    .await;
    drained(&world, &topic, 60).await;

    // Ready once librdkafka's statistics (every 5 s) saw the broker and the
    // database probe answered.
    eventually(30, "/ready answers 200", || async {
        get(&format!("{base}/ready")).is_some_and(|(code, _)| code == 200)
    })
    .await;
    // Lag 0 once the Kafka commit and the next statistics report are in.
    eventually(
        30,
        "/status: healthy, every message counted, no lag",
        || async {
            let Some((200, body)) = get(&format!("{base}/status")) else {
                return false;
            };
            let s = json(&body);
            let t = &s["topics"][&topic];
            s["state"] == "healthy"
                && s["lag_messages"] == 0
                && t["messages_consumed"] == 300
                && t["rows_written"] == 270
                && t["dead_letters"] == 30
                && t["assigned_partitions"] == 2
        },
    )
    .await;

    let (code, text) = get(&format!("{base}/metrics")).expect("/metrics answers");
    assert_eq!(code, 200);
    for line in [
        format!("timesink_rows_written_total{{table=\"level1_quotes\",topic=\"{topic}\"}} 270"),
        format!("timesink_dead_letters_total{{topic=\"{topic}\",reason=\"validation\"}} 30"),
        format!("timesink_messages_consumed_total{{topic=\"{topic}\"}} 300"),
        "timesink_database_up 1".to_owned(),
        "timesink_kafka_brokers_up 1".to_owned(),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "/metrics lacks {line:?}:\n{text}"
        );
    }
    for m in METRICS {
        assert!(
            text.contains(&format!("# HELP {} ", m.name)),
            "/metrics has no HELP for {}",
            m.name
        );
    }

    scraped_by_prometheus(port, &topic).await;
    let took = sink.terminate(Duration::from_secs(30));
    assert!(took < Duration::from_secs(30));
}

/// A real Prometheus scrapes the sink; every catalogued metric arrives.
async fn scraped_by_prometheus(sink_port: u16, topic: &str) {
    if std::process::Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("REQUIRE_PROMETHEUS").is_err(),
            "REQUIRE_PROMETHEUS is set but `prometheus` is not installed"
        );
        println!(
            "SKIPPED: the Prometheus scrape (no `prometheus` binary; apt-get install prometheus)"
        );
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: timesink\n    static_configs:\n      - targets: ['127.0.0.1:{sink_port}']\n"
        ),
    )
    .expect("write prometheus.yml");
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
    let mut prometheus = std::process::Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start prometheus");
    let api = format!("http://127.0.0.1:{port}/api/v1/query?query=");
    let result = |query: String| {
        let (code, body) = get(&format!("{api}{query}"))?;
        (code == 200).then(|| json(&body)["data"]["result"].clone())
    };
    for m in METRICS {
        eventually(60, &format!("Prometheus has {}", m.name), || async {
            result(m.name.to_owned()).is_some_and(|r| r.as_array().is_some_and(|a| !a.is_empty()))
        })
        .await;
    }
    // A labelled series carries the sink's value.
    let rows = result(format!(
        "timesink_rows_written_total%7Btopic%3D%22{topic}%22%7D"
    ))
    .expect("query answered");
    assert_eq!(rows[0]["value"][1], "270", "{rows}");
    let lag = result(format!(
        "timesink_consumer_lag_messages%7Btopic%3D%22{topic}%22%7D"
    ))
    .expect("query answered");
    assert_eq!(
        lag.as_array().map(Vec::len),
        Some(2),
        "one series per partition: {lag}"
    );
    let _ = prometheus.kill();
    let _ = prometheus.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_database_it_is_alive_but_neither_ready_nor_healthy() {
    let world = World::new(1).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    // Nothing listens on port 1: the sink waits for its database.
    let mut sink = SinkProcess::start(
        &world,
        &[
            ("TIMESINK_HTTP__LISTEN", format!("127.0.0.1:{port}")),
            (
                "DATABASE_URL",
                format!("postgres://postgres@127.0.0.1:1/{}", unique("none")),
            ),
        ],
    );
    eventually(30, "/health answers 200", || async {
        get(&format!("{base}/health")).is_some_and(|(code, _)| code == 200)
    })
    .await;
    eventually(30, "the database probe has failed", || async {
        get(&format!("{base}/status")).is_some_and(|(_, body)| {
            let s = json(&body);
            s["database_up"] == false && s["state"] == "unhealthy"
        })
    })
    .await;
    let (code, body) = get(&format!("{base}/ready")).expect("/ready answers");
    assert_eq!(code, 503, "{body}");
    let reasons = json(&body)["not_ready"].to_string();
    assert!(reasons.contains("database"), "{reasons}");
    sink.terminate(Duration::from_secs(30));
}

/// Runs a subcommand that must succeed; its stdout.
fn stdout_of(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().expect("run timesink");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `timesink check` with `env` on top of `world`'s: exit success, stdout, stderr.
fn check(world: &World, env: &[(&str, String)]) -> (bool, String, String) {
    let mut cmd = sink_command(world, "check");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run timesink check");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_what_it_finds_and_names_what_fails() {
    let world = World::new(2).await;
    let topic = world.topic(DataType::Level1);
    let (ok, out, err) = check(&world, &[]);
    assert!(ok, "{out}{err}");
    for expected in [
        "configuration: valid".to_owned(),
        format!("{topic} (2 partitions)"),
        "table level1_quotes (9 columns, primary key (exchange_id, symbol, time, sequence)): missing (created at start)\n  reads ".to_owned(),
        format!("  reads ^{topic}(-(?<exchange>"),
        "check passed".to_owned(),
    ] {
        assert!(out.contains(&expected), "no {expected:?} in:\n{out}");
    }

    // `schema` creates the tables, and says so.
    let out = stdout_of(&mut sink_command(&world, "schema"));
    assert!(out.contains("tables ready in"), "{out}");
    let (_, out, _) = check(&world, &[]);
    assert!(out.contains("sequence)): present"), "{out}");

    // Once the sink has run: offsets stored.
    send_many(&topic, &[("K1".to_owned(), quote(1, true))]).await;
    let mut sink = SinkProcess::start(&world, &[]);
    drained(&world, &topic, 60).await;
    sink.terminate(Duration::from_secs(30));
    let (ok, out, _) = check(&world, &[]);
    assert!(ok);
    assert!(out.contains("sequence)): present"), "{out}");
    assert!(
        out.contains(&format!("on {topic}: ")) && out.contains("1 messages stored"),
        "{out}"
    );

    let secret = "pw-never-printed";
    let (ok, out, err) = check(
        &world,
        &[(
            "DATABASE_URL",
            format!("postgres://postgres:{secret}@127.0.0.1:1/db"),
        )],
    );
    assert!(!ok);
    assert!(
        err.contains("database.url (postgres@127.0.0.1:1/db)"),
        "{err}"
    );
    assert!(err.contains("refused"), "the cause is given: {err}");
    assert!(!out.contains(secret) && !err.contains(secret));

    let (ok, _, err) = check(&world, &[("KAFKA_BROKERS", "127.0.0.1:1".into())]);
    assert!(!ok);
    assert!(
        err.contains("kafka.brokers (127.0.0.1:1): no metadata"),
        "{err}"
    );

    let (ok, _, err) = check(
        &world,
        &[(
            "TIMESINK_TABLES__LEVEL1_QUOTES__BATCH__MAX_ROWS",
            "0".into(),
        )],
    );
    assert!(!ok);
    assert!(err.contains("tables.level1_quotes.batch.max_rows"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_no_payload_and_no_secret() {
    let world = World::new(1).await;
    let topic = world.topic(DataType::Level1);
    // Invalid (negative bid), with a marker in a field the reason does not quote.
    let value = quote(7, false).replace("\"source\":\"t\"", "\"source\":\"PAYLOAD-MARKER\"");
    assert!(value.contains("PAYLOAD-MARKER"));
    send_many(&topic, &[("KEY-MARKER".to_owned(), value)]).await;
    let secret = "sasl-secret-never-logged";
    let mut sink = SinkProcess::start(
        &world,
        &[
            ("TIMESINK_LOG_FORMAT", "json".to_owned()),
            ("TIMESINK_RDKAFKA_SASL_PASSWORD", secret.to_owned()),
            ("TIMESINK_RDKAFKA_SASL_USERNAME", "sink".to_owned()),
            (
                "RUST_LOG",
                "debug,librdkafka=debug,rdkafka=debug".to_owned(),
            ),
        ],
    );
    drained(&world, &topic, 60).await;
    sink.terminate(Duration::from_secs(30));

    // And one that cannot reach its database, whose URL holds a password.
    let db_secret = "db-secret-never-logged";
    let mut waiting = SinkProcess::start(
        &world,
        &[
            ("TIMESINK_LOG_FORMAT", "json".to_owned()),
            (
                "DATABASE_URL",
                format!("postgres://postgres:{db_secret}@127.0.0.1:1/db"),
            ),
        ],
    );
    eventually(30, "the unreachable database is logged", || {
        let text = waiting.log_text();
        async move { text.contains("database not reachable at start") }
    })
    .await;
    waiting.terminate(Duration::from_secs(30));

    for (log, secrets) in [
        (
            sink.log_text(),
            vec![secret, "PAYLOAD-MARKER", "KEY-MARKER"],
        ),
        (waiting.log_text(), vec![db_secret]),
    ] {
        assert!(
            log.contains("dead-letter") || log.contains("not reachable"),
            "{log}"
        );
        for line in log.lines() {
            let parsed: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
            assert!(parsed["level"].is_string(), "{line}");
            for s in &secrets {
                assert!(!line.contains(s), "{s} logged: {line}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_create_makes_per_exchange_siblings_and_is_idempotent() {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;

    let world = World::new(1).await;
    let base = unique("tc");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("topics.yaml");
    std::fs::write(
        &file,
        format!(
            "replication_factor: 1\ntopics:\n  {base}-prices:\n    data_type: price\n    partitions: 4\n    config:\n      retention.ms: \"1000000\"\n      compression.type: lz4\n"
        ),
    )
    .unwrap();
    let run = || {
        stdout_of(
            sink_command(&world, "topics")
                .args(["create", "--file"])
                .arg(&file)
                .args(["--exchanges", "binance,okx"]),
        )
    };
    let first = run();
    assert!(first.contains("3 topics planned, 3 created"), "{first}");
    let partitions = |topic: &str| common::end_offsets(topic).len();
    assert_eq!(partitions(&format!("{base}-prices")), 4);
    assert_eq!(partitions(&format!("{base}-prices-binance")), 2);
    assert_eq!(partitions(&format!("{base}-prices-okx")), 2);
    let second = run();
    assert!(second.contains("3 topics planned, 0 created"), "{second}");

    // The sibling keeps the base's settings, with 1.5x the retention.
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", common::brokers())
        .create()
        .unwrap();
    let sibling = format!("{base}-prices-binance");
    let described = admin
        .describe_configs(
            [&ResourceSpecifier::Topic(&sibling)],
            &AdminOptions::new().request_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("describe configs");
    let resource = described[0].as_ref().expect("the sibling's configs");
    let value = |name: &str| {
        resource
            .get(name)
            .and_then(|e| e.value.clone())
            .unwrap_or_default()
    };
    assert_eq!(value("retention.ms"), "1500000");
    assert_eq!(value("compression.type"), "lz4");
}

/// What cannot work is refused when the configuration loads, naming the
/// key — before `check` passes it and every message pays for it — and a
/// jsonb default is stored as the JSON it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_refuses_at_load_what_cannot_work_and_stores_defaults_as_their_type() {
    let world = World::new(1).await;
    let topic = format!("{}settings", world.prefix());
    let table = |columns: &str, extra: &str| {
        format!(
            "[tables.settings]\ntopics = [\"{topic}\"]\nprimary_key = [\"id\"]\n{extra}\ncolumns = [\n  {{ name = \"id\", type = \"text\", from = \"key\", required = true }},\n  {columns}\n]\n"
        )
    };
    for (name, config, expected) in [
        (
            "numeric-default",
            table(
                r#"{ name = "p", type = "numeric", from = "/p", default = "n/a" }"#,
                "",
            ),
            "tables.settings.columns[1]`: column `p`: default \"n/a\"",
        ),
        (
            "time-default",
            table(
                r#"{ name = "at", type = "timestamptz", from = "/at", default = "yesterday" }"#,
                "",
            ),
            "tables.settings.columns[1]`: column `at`: default \"yesterday\"",
        ),
        (
            "integer-default",
            table(
                r#"{ name = "n", type = "integer", from = "/n", default = 1.5 }"#,
                "",
            ),
            "tables.settings.columns[1]`: column `n`: default \"1.5\"",
        ),
        (
            "bounds",
            table(
                r#"{ name = "p", type = "numeric", from = "/p", gt = 10, lt = 5 }"#,
                "",
            ),
            "the bounds leave no value",
        ),
        (
            "key-without-time",
            table(
                r#"{ name = "at", type = "timestamptz", from = "/at", required = true }"#,
                "time = \"at\"",
            ),
            "tables.settings.primary_key`: a hypertable's primary key includes its time column `at`",
        ),
        (
            "nul",
            table(
                "{ name = \"a\\u0000b\", type = \"text\", from = \"/a\" }",
                "",
            ),
            "no control character",
        ),
        (
            "pointer",
            table(r#"{ name = "a", type = "text", from = "/a~2" }"#, ""),
            "in a JSON pointer",
        ),
    ] {
        let mut cmd = sink_command(&world, "check");
        let (key, file) = world.config_file(name, &config);
        cmd.env(key, file);
        let out = cmd.output().expect("run timesink check");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: check passed");
        assert!(
            stderr.contains(expected),
            "{name}: {expected:?} not in {stderr}"
        );
    }

    // A jsonb default is JSON: `{}` is stored as an object.
    let config = table(
        r#"{ name = "doc", type = "jsonb", from = "/doc", default = "{}" }"#,
        "",
    );
    create_topics(std::slice::from_ref(&topic), 1).await;
    send_many(&topic, &[("k".to_owned(), "{}".to_owned())]).await;
    let mut sink = SinkProcess::start(&world, &[world.config_file("jsonb-default", &config)]);
    drained(&world, &topic, 60).await;
    sink.terminate(Duration::from_secs(20));
    let kind: String = world
        .db
        .query_one("SELECT jsonb_typeof(doc) FROM settings WHERE id = 'k'", &[])
        .await
        .expect("the row")
        .get(0);
    assert_eq!(kind, "object");
}

/// After a description gains a column, `run` blocks the table naming it
/// and `timesink schema` adds it (nullable), printing the change; a column
/// whose type changed is left to the operator, named; nothing is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_adds_the_columns_a_description_gained_and_names_what_it_leaves() {
    let world = World::new(1).await;
    let topic = format!("{}trades", world.prefix());
    create_topics(std::slice::from_ref(&topic), 1).await;
    let table = |columns: &str| {
        format!(
            "[tables.trades]\ntopics = [\"{topic}\"]\nprimary_key = [\"id\"]\ncolumns = [\n  {{ name = \"id\", type = \"text\", from = \"key\", required = true }},\n  {{ name = \"price\", type = \"numeric\", from = \"/p\", required = true }},\n{columns}]\n"
        )
    };
    let schema = |config: &str, name: &str| {
        let mut cmd = sink_command(&world, "schema");
        let (key, file) = world.config_file(name, config);
        cmd.env(key, file);
        let out = cmd.output().expect("run timesink schema");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    schema(&table(""), "v1");
    send_many(
        &topic,
        &[("a".to_owned(), r#"{"p":"1.5","q":1}"#.to_owned())],
    )
    .await;
    let v2 = table(
        "  { name = \"venue\", type = \"text\", from = \"/v\" },\n  { name = \"qty\", type = \"bigint\", from = \"/q\", required = true },\n",
    );
    let port = free_port();
    let mut sink = SinkProcess::start(
        &world,
        &[
            world.config_file("v2", &v2),
            ("TIMESINK_HTTP__LISTEN", format!("127.0.0.1:{port}")),
        ],
    );
    eventually(30, "trades blocked, naming the column", || async {
        get(&format!("http://127.0.0.1:{port}/status"))
            .is_some_and(|(_, body)| body.contains("column venue is missing"))
    })
    .await;
    sink.terminate(Duration::from_secs(20));

    let out = schema(&v2, "v2");
    for expected in [
        "changed: table trades: column venue added (text, nullable: rows stored before hold NULL)",
        "changed: table trades: column qty added (bigint, nullable: rows stored before hold NULL)",
    ] {
        assert!(out.contains(expected), "{expected:?} in\n{out}");
    }
    let columns: Vec<String> = world
        .db
        .query(
            "SELECT column_name::text || ' ' || data_type || ' ' || is_nullable FROM information_schema.columns \
             WHERE table_name = 'trades' ORDER BY ordinal_position",
            &[],
        )
        .await
        .expect("columns")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        columns,
        [
            "id text NO",
            "price numeric NO",
            "venue text YES",
            "qty bigint YES"
        ]
    );
    // The sink writes the table again.
    let mut sink = SinkProcess::start(&world, &[world.config_file("v2-run", &v2)]);
    send_many(
        &topic,
        &[("b".to_owned(), r#"{"p":"2","v":"x","q":3}"#.to_owned())],
    )
    .await;
    drained(&world, &topic, 60).await;
    sink.terminate(Duration::from_secs(20));
    assert_eq!(world.count("trades").await, 2);

    // A retyped column is the operator's: named, not changed.
    let v3 = table(
        "  { name = \"venue\", type = \"text\", from = \"/v\" },\n  { name = \"qty\", type = \"numeric\", from = \"/q\", required = true },\n",
    );
    let out = schema(&v3, "v3");
    assert!(
        out.contains("left alone: table trades: column qty is bigint, expected numeric — the operator's to change"),
        "{out}"
    );
    assert!(!out.contains("changed:"), "{out}");
}
