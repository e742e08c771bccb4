//! Never silently stuck, on the real broker and database: what a production
//! database and its operators do to a running sink — privileges revoked,
//! tables changed, shutdowns at bad moments — is classified, isolated to
//! its table, reported, and healed without losing or repeating anything.

mod common;

use std::time::{Duration, Instant};

use common::private::PrivatePg;
use common::*;
use timesink::ops::produce::DataType;

/// A login role that owns `world`'s database (so it may create the tables
/// there, and owns them), as a least-privilege sink would run; with the
/// TimescaleDB extension created ahead by the superuser where it is
/// installed. Returns the role and a URL that connects as it.
async fn owner_role(world: &World) -> (String, String) {
    let url = &world.config.database.url;
    let (head, db) = url.rsplit_once('/').expect("a database in the URL");
    let role = format!("{db}_sink");
    world
        .db
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; ALTER DATABASE {db} OWNER TO {role}; \
             GRANT pg_read_all_settings TO {role}"
        ))
        .await
        .expect("create the sink's role");
    let preloaded: bool = world
        .db
        .query_one(
            "SELECT current_setting('shared_preload_libraries') LIKE '%timescaledb%'",
            &[],
        )
        .await
        .expect("settings")
        .get(0);
    if preloaded {
        world
            .db
            .batch_execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            .await
            .expect("create the extension");
    }
    let head = head.replacen("postgres@", &format!("{role}@"), 1);
    (role.clone(), format!("{head}/{db}"))
}

fn try_get(port: u16, path: &str) -> Option<(u16, String)> {
    get(&format!("http://127.0.0.1:{port}{path}"))
}

fn status(port: u16) -> Option<serde_json::Value> {
    try_get(port, "/status").and_then(|(_, body)| serde_json::from_str(&body).ok())
}

/// Valid prices keyed `P{i}` (coin `P{i}`).
fn prices(range: std::ops::Range<u64>) -> Vec<(String, String)> {
    range
        .map(|i| {
            (
                format!("P{i}"),
                format!(
                    r#"{{"coinId":"P{i}","symbol":"P","usdPrice":"1.5","lastUpdated":"2026-11-01T12:00:00Z","source":"t"}}"#
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_table_is_blocked_loudly_while_the_others_flow_and_heals_on_grant() {
    let world = World::new(1).await;
    let (role, url) = owner_role(&world).await;
    let level1 = world.topic(DataType::Level1);
    let prices_topic = world.topic(DataType::Price);
    let port = free_port();
    let mut sink = SinkProcess::start(
        &world,
        &[
            ("DATABASE_URL", url),
            ("TIMESINK_HTTP__LISTEN", format!("127.0.0.1:{port}")),
            ("TIMESINK_BATCH__MAX_ROWS_IN_FLIGHT", "1000".into()),
        ],
    );
    send_many(&level1, &keyed_quotes(0..1)).await;
    drained(&world, &level1, 60).await;

    // The operator revokes INSERT on one table; ten times its row budget
    // arrives behind it.
    world
        .db
        .batch_execute(&format!("REVOKE INSERT ON level1_quotes FROM {role}"))
        .await
        .expect("revoke");
    send_many(&level1, &keyed_quotes(1..10_001)).await;
    let revoked = Instant::now();
    eventually(15, "/status reports level1_quotes blocked", || async {
        status(port).is_some_and(|s| {
            s["state"] == "unhealthy"
                && s["blocked"]["level1_quotes"]
                    .as_str()
                    .is_some_and(|r| r.contains("42501") && r.contains("permission denied"))
        })
    })
    .await;
    let reported = revoked.elapsed();
    let (code, ready) = try_get(port, "/ready").expect("/ready");
    assert_eq!(code, 503, "{ready}");
    assert!(
        ready.contains("level1_quotes") && ready.contains("42501"),
        "/ready names the table and the SQLSTATE: {ready}"
    );
    let (_, metrics) = try_get(port, "/metrics").expect("/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l == "timesink_table_blocked{table=\"level1_quotes\"} 1"),
        "{metrics}"
    );

    // Meanwhile another table flows at full speed.
    send_many(&prices_topic, &prices(0..5_000)).await;
    let started = Instant::now();
    drained(&world, &prices_topic, 30).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "5,000 prices took {took:?} beside a blocked table"
    );
    assert_eq!(world.count("crypto_prices").await, 5_000);
    assert_eq!(
        world.count("level1_quotes").await,
        1,
        "nothing gets past the REVOKE"
    );
    let (_, metrics) = try_get(port, "/metrics").expect("/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l == "timesink_table_paused{table=\"level1_quotes\"} 1"),
        "the blocked table's partitions are paused:\n{metrics}"
    );

    // GRANT: it catches up by itself.
    world
        .db
        .batch_execute(&format!("GRANT INSERT ON level1_quotes TO {role}"))
        .await
        .expect("grant");
    drained(&world, &level1, 60).await;
    eventually(15, "no longer blocked", || async {
        status(port).is_some_and(|s| s["blocked"] == serde_json::json!({}))
    })
    .await;
    let log = sink.log_text();
    sink.terminate(Duration::from_secs(20));
    let sent = Sent {
        total: 10_001,
        ..Sent::default()
    };
    assert_exactly_once(&world, &level1, &sent).await;
    assert_eq!(
        log.matches("table blocked").count(),
        1,
        "one line when it blocks:\n{log}"
    );
    assert_eq!(
        log.matches("no longer blocked").count(),
        1,
        "one when it heals:\n{log}"
    );
    eprintln!("blocked reported after {reported:?}; 5,000 prices beside it in {took:?}");
}

/// A series of the scrape text, 0 when it is not there.
fn series(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// A table that commits, only slower than its input arrives, is ordinary
/// backpressure: reading waits for its room, again and again, and its
/// partitions are never paused (a pause drops librdkafka's prefetch and
/// starves the writer until it is fetched again, at every fill).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_behind_its_input_holds_reading_up_and_pauses_nothing() {
    let world = World::new(1).await;
    let topic = world.topic(DataType::Price);
    send_many(&topic, &prices(0..20_000)).await;
    let port = free_port();
    let mut sink = SinkProcess::start(
        &world,
        &[
            ("TIMESINK_HTTP__LISTEN", format!("127.0.0.1:{port}")),
            // Forty budgets' worth behind it, in batches of the budget's
            // size: each waits for the commit of the one before.
            ("TIMESINK_BATCH__MAX_ROWS_IN_FLIGHT", "500".into()),
            (
                "TIMESINK_TABLES__CRYPTO_PRICES__BATCH__MAX_ROWS",
                "500".into(),
            ),
        ],
    );
    drained(&world, &topic, 60).await;
    let (_, metrics) = try_get(port, "/metrics").expect("/metrics");
    sink.terminate(Duration::from_secs(20));
    let waited = series(
        &metrics,
        "timesink_backpressure_seconds{table=\"crypto_prices\"}",
    );
    let pauses = series(
        &metrics,
        "timesink_table_pauses_total{table=\"crypto_prices\"}",
    );
    // A commit that takes longer than the grace on a loaded machine may
    // pause once; a pause at every fill would be forty.
    assert!(
        pauses <= 1.0,
        "{pauses} pauses, {waited} s waiting for room:\n{metrics}"
    );
    assert!(waited > 0.0, "reading never waited for room:\n{metrics}");
    // Nothing lost, nothing twice: every key once, offsets at the end.
    let row = world
        .db
        .query_one(
            "SELECT count(*), count(DISTINCT coin_id) FROM crypto_prices",
            &[],
        )
        .await
        .expect("count rows");
    let (rows, keys): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!((rows, keys), (20_000, 20_000), "rows, distinct keys");
    let stored = world.stored_offsets().await;
    for (p, end) in end_offsets(&topic) {
        assert_eq!(stored.get(&(topic.clone(), p)), Some(&end), "partition {p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_timeout_shorter_than_a_flush_splits_it_until_it_fits() {
    let world = World::new(1).await;
    let level1 = world.topic(DataType::Level1);
    // The tables ahead, with a trigger that makes each row take 2 ms, and
    // a statement_timeout a 1,000-row COPY cannot meet.
    let mut client = connect(&world.config.database.url).await;
    timesink::catalog::schema::apply(
        &mut client,
        world.config.database.timescaledb,
        &world.config.catalog().expect("catalog"),
        timesink::catalog::schema::Step::Owner,
    )
    .await
    .expect("schema");
    let db = world.config.database.url.rsplit('/').next().expect("db");
    world
        .db
        .batch_execute(&format!(
            "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS \
               $$ BEGIN PERFORM pg_sleep(0.002); RETURN NEW; END $$; \
             CREATE TRIGGER slow BEFORE INSERT ON level1_quotes \
               FOR EACH ROW EXECUTE FUNCTION slow(); \
             ALTER DATABASE {db} SET statement_timeout = '1s'"
        ))
        .await
        .expect("slow table");
    send_many(&level1, &keyed_quotes(0..3_000)).await;
    let port = free_port();
    let mut sink = SinkProcess::start(
        &world,
        &[("TIMESINK_HTTP__LISTEN", format!("127.0.0.1:{port}"))],
    );
    drained(&world, &level1, 60).await;
    let (_, metrics) = try_get(port, "/metrics").expect("/metrics");
    let log = sink.log_text();
    sink.terminate(Duration::from_secs(20));
    let splits = series(
        &metrics,
        "timesink_batch_splits_total{table=\"level1_quotes\"}",
    );
    assert!(splits >= 1.0, "no split counted:\n{metrics}");
    assert!(
        log.contains("57014"),
        "the split names the SQLSTATE:\n{log}"
    );
    assert!(!log.contains("table blocked"), "{log}");
    let sent = Sent {
        total: 3_000,
        ..Sent::default()
    };
    assert_exactly_once(&world, &level1, &sent).await;
}

/// A sink started once more reads what the ones stopped before left:
/// all `sent` quotes land exactly once.
async fn all_land(world: &World, env: Env<'_>, sent: u64) {
    let mut sink = SinkProcess::start(world, env);
    let level1 = world.topic(DataType::Level1);
    drained(world, &level1, 60).await;
    sink.terminate(Duration::from_secs(20));
    let sent = Sent {
        total: sent,
        ..Sent::default()
    };
    assert_exactly_once(world, &level1, &sent).await;
}

/// The shutdown timeout of the sinks stopped at bad moments below.
const SHUTDOWN: Duration = Duration::from_secs(4);

fn stoppable(port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("TIMESINK_HTTP__LISTEN", format!("127.0.0.1:{port}")),
        (
            "TIMESINK_SHUTDOWN_TIMEOUT_MS",
            SHUTDOWN.as_millis().to_string(),
        ),
    ]
}

/// Stops the sink with `signal` and checks that it ends within its
/// shutdown timeout, with exit code 3 and one line naming what is left to
/// be read again.
fn stopped_in_time(sink: &mut SinkProcess, signal: &str) {
    let started = Instant::now();
    sink.signal(signal);
    let status = sink.wait(Duration::from_secs(30));
    let took = started.elapsed();
    let log = sink.log_text();
    assert!(
        took < SHUTDOWN + Duration::from_millis(1500),
        "SIG{signal}: the exit took {took:?}, over shutdown_timeout_ms ({SHUTDOWN:?}):\n{log}"
    );
    assert_eq!(status.code(), Some(3), "SIG{signal}: {status}\n{log}");
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("will be read again"))
        .collect();
    assert_eq!(lines.len(), 1, "one line says what is left:\n{log}");
    assert!(lines[0].contains("rows not yet committed"), "{}", lines[0]);
    eprintln!("SIG{signal}: exited with 3 after {took:?}");
}

/// The messages of `topic` the sink has read since it started (its /status).
fn consumed(port: u16, topic: &str) -> u64 {
    status(port)
        .and_then(|s| s["topics"][topic]["messages_consumed"].as_u64())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_sigint_during_a_database_outage_end_within_the_timeout() {
    let pg = PrivatePg::start();
    let world = World::on(&pg.admin_url(), 1).await;
    let level1 = world.topic(DataType::Level1);
    let mut sent = 0;
    for signal in ["TERM", "INT"] {
        let port = free_port();
        let mut sink = SinkProcess::start(&world, &stoppable(port));
        send_many(&level1, &keyed_quotes(sent..sent + 100)).await;
        sent += 100;
        drained(&world, &level1, 60).await;
        // The database host hangs: connections open, nothing answers.
        let before = consumed(port, &level1);
        pg.freeze();
        send_many(&level1, &keyed_quotes(sent..sent + 1_000)).await;
        sent += 1_000;
        eventually(30, "1,000 more messages read", || async {
            consumed(port, &level1) >= before + 1_000
        })
        .await;
        stopped_in_time(&mut sink, signal);
        pg.thaw();
    }
    all_land(&world, &[], sent).await;
}

/// Stops the sink with `signal` while a table is blocked: it exits 0
/// before its shutdown timeout, with one line naming the table whose rows
/// are read again.
fn stopped_past_a_blocked_table(sink: &mut SinkProcess, signal: &str) {
    let started = Instant::now();
    sink.signal(signal);
    let status = sink.wait(Duration::from_secs(30));
    let took = started.elapsed();
    let log = sink.log_text();
    assert!(
        took < SHUTDOWN,
        "SIG{signal}: the exit took {took:?}, waiting for the blocked table:\n{log}"
    );
    assert_eq!(status.code(), Some(0), "SIG{signal}: {status}\n{log}");
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("read again")).collect();
    assert_eq!(lines.len(), 1, "one line says what is left:\n{log}");
    assert!(
        lines[0].contains("blocked tables") && lines[0].contains("level1_quotes"),
        "{}",
        lines[0]
    );
    eprintln!("SIG{signal}: exited with 0 after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_sigint_with_a_blocked_table_do_not_wait_for_it() {
    let world = World::new(1).await;
    let (role, url) = owner_role(&world).await;
    let level1 = world.topic(DataType::Level1);
    let mut sent = 0;
    for signal in ["TERM", "INT"] {
        let port = free_port();
        let mut env = stoppable(port);
        env.push(("DATABASE_URL", url.clone()));
        let mut sink = SinkProcess::start(&world, &env);
        send_many(&level1, &keyed_quotes(sent..sent + 100)).await;
        sent += 100;
        drained(&world, &level1, 60).await;
        world
            .db
            .batch_execute(&format!("REVOKE INSERT ON level1_quotes FROM {role}"))
            .await
            .expect("revoke");
        send_many(&level1, &keyed_quotes(sent..sent + 1_000)).await;
        sent += 1_000;
        eventually(15, "level1_quotes blocked", || async {
            status(port).is_some_and(|s| s["blocked"]["level1_quotes"].is_string())
        })
        .await;
        stopped_past_a_blocked_table(&mut sink, signal);
        world
            .db
            .batch_execute(&format!("GRANT INSERT ON level1_quotes TO {role}"))
            .await
            .expect("grant");
    }
    all_land(&world, &[("DATABASE_URL", url)], sent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_sigint_with_a_full_pipeline_end_within_the_timeout() {
    let world = World::new(1).await;
    let level1 = world.topic(DataType::Level1);
    let mut sent = 0;
    for signal in ["TERM", "INT"] {
        let port = free_port();
        let mut env = stoppable(port);
        env.push(("TIMESINK_BATCH__MAX_ROWS_IN_FLIGHT", "2000".into()));
        let mut sink = SinkProcess::start(&world, &env);
        send_many(&level1, &keyed_quotes(sent..sent + 100)).await;
        sent += 100;
        drained(&world, &level1, 60).await;
        // A lock holds every write: the table's budget fills, its
        // partitions pause, and the rest waits in the pipeline.
        let locker = connect(&world.config.database.url).await;
        locker
            .batch_execute("BEGIN; LOCK TABLE level1_quotes IN ACCESS EXCLUSIVE MODE")
            .await
            .expect("lock");
        send_many(&level1, &keyed_quotes(sent..sent + 10_000)).await;
        sent += 10_000;
        eventually(30, "the table's partitions paused", || async {
            try_get(port, "/metrics").is_some_and(|(_, m)| {
                m.lines()
                    .any(|l| l == "timesink_table_paused{table=\"level1_quotes\"} 1")
            })
        })
        .await;
        stopped_in_time(&mut sink, signal);
        locker.batch_execute("COMMIT").await.expect("unlock");
    }
    all_land(&world, &[], sent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_is_one_line_per_client_not_a_flood() {
    let world = World::new(1).await;
    let nowhere = format!("127.0.0.1:{}", free_port());
    let mut sink = SinkProcess::start(&world, &[("KAFKA_BROKERS", nowhere.clone())]);
    eventually(
        30,
        "the consumer says the brokers are unreachable",
        || async {
            sink.log_text()
                .lines()
                .any(|l| l.contains("Kafka brokers unreachable") && l.contains("consumer"))
        },
    )
    .await;
    // librdkafka retries several times a second all along: a window of
    // its attempts, which used to be ~44 error lines a second.
    let window = Instant::now() + Duration::from_secs(5);
    while Instant::now() < window {
        assert!(sink.exited().is_none(), "the sink exited");
        std::thread::sleep(Duration::from_millis(100));
    }
    sink.terminate(Duration::from_secs(20));
    let log = sink.log_text();
    let loud = loud_lines(&log);
    assert!(
        loud.len() <= 2 && loud.iter().all(|l| l.contains("Kafka brokers unreachable")),
        "one line per client:\n{}",
        loud.join("\n")
    );
    assert!(
        loud.iter().all(|l| l.contains(&nowhere)),
        "each names the endpoint:\n{}",
        loud.join("\n")
    );
}

#[test]
fn a_configuration_error_from_the_environment_names_the_variable() {
    let world = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(World::new(1));
    let out = sink_command(&world, "run")
        .env("TIMESINK_BIN", "/usr/local/bin/timesink")
        .output()
        .expect("run timesink");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("environment variable TIMESINK_BIN")
            && stderr.contains("not a configuration key"),
        "{stderr}"
    );
    assert!(!stderr.contains("src/config.rs"), "{stderr}");
}

/// The README's least-privilege block for `role` on database `db`.
fn readme_grants(role: &str, db: &str) -> String {
    let readme = include_str!("../README.md");
    let section = readme
        .split("### Least privilege")
        .nth(1)
        .expect("the README has the section");
    let block = section
        .split("```sql")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("an sql block");
    block
        .replace("timesink_writer", role)
        .replace("DATABASE timesink", &format!("DATABASE {db}"))
}

/// A role that may read `timesink_topics` but not record in it (the grants
/// of an earlier README): every assignment's id check is refused. The
/// table is reported blocked, naming the grant, while the partitions wait;
/// granted, they start and every message lands once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_bookkeeping_table_is_blocked_loudly_and_heals_on_grant() {
    let world = World::new(1).await;
    let mut owner = connect(&world.config.database.url).await;
    timesink::catalog::schema::apply(
        &mut owner,
        world.config.database.timescaledb,
        &world.config.catalog().expect("catalog"),
        timesink::catalog::schema::Step::Owner,
    )
    .await
    .expect("schema");
    let url = &world.config.database.url;
    let (head, db) = url.rsplit_once('/').expect("a database in the URL");
    let role = format!("{db}_writer");
    let grants =
        readme_grants(&role, db).replace("timesink_offsets, timesink_topics", "timesink_offsets");
    world
        .db
        .batch_execute(&format!(
            "{grants}; GRANT SELECT ON timesink_topics TO {role}"
        ))
        .await
        .expect("grants");
    let role_url = format!(
        "{}/{db}",
        head.replacen("postgres@", &format!("{role}@"), 1)
    );
    let level1 = world.topic(DataType::Level1);
    send_many(&level1, &keyed_quotes(0..300)).await;
    let port = free_port();
    let mut sink = SinkProcess::start(
        &world,
        &[
            ("DATABASE_URL", role_url),
            ("TIMESINK_HTTP__LISTEN", format!("127.0.0.1:{port}")),
        ],
    );
    eventually(
        30,
        "the bookkeeping table blocked by name and grant",
        || async {
            status(port).is_some_and(|s| {
                s["blocked"]["timesink_topics"].as_str().is_some_and(|r| {
                    r.contains("42501")
                        && r.contains("SELECT, INSERT and UPDATE on timesink_topics")
                }) && s["held_back"]
                    .as_array()
                    .is_some_and(|h| h.iter().any(|p| p["reason"] == "start_unknown"))
            })
        },
    )
    .await;
    let (code, _) = try_get(port, "/ready").expect("/ready answers");
    assert_eq!(code, 503, "not ready while its bookkeeping is refused");
    assert_eq!(world.count("level1_quotes").await, 0);

    world
        .db
        .batch_execute(&format!(
            "GRANT INSERT, UPDATE ON timesink_topics TO {role}"
        ))
        .await
        .expect("grant");
    drained(&world, &level1, 60).await;
    eventually(30, "healed", || async {
        status(port).is_some_and(|s| {
            s["blocked"] == serde_json::json!({}) && s["held_back"] == serde_json::json!([])
        })
    })
    .await;
    let log = sink.log_text();
    sink.terminate(Duration::from_secs(20));
    assert_eq!(
        log.matches("bookkeeping table refused").count(),
        1,
        "one error line while refused:\n{log}"
    );
    assert!(log.contains("bookkeeping table usable again"), "{log}");
    let sent = Sent {
        total: 300,
        ..Sent::default()
    };
    assert_exactly_once(&world, &level1, &sent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_with_only_the_documented_grants_runs_the_sink() {
    let world = World::new(1).await;
    // The tables ahead, by their owner, as `timesink schema` makes them
    // (hypertables where TimescaleDB is loaded).
    let mut owner = connect(&world.config.database.url).await;
    let report = timesink::catalog::schema::apply(
        &mut owner,
        world.config.database.timescaledb,
        &world.config.catalog().expect("catalog"),
        timesink::catalog::schema::Step::Owner,
    )
    .await
    .expect("schema");
    let url = &world.config.database.url;
    let (head, db) = url.rsplit_once('/').expect("a database in the URL");
    let role = format!("{db}_writer");
    world
        .db
        .batch_execute(&readme_grants(&role, db))
        .await
        .expect("the README's grants");
    let privileged: bool = world
        .db
        .query_one(
            "SELECT has_schema_privilege($1, 'public', 'CREATE') \
                 OR pg_has_role($1, 'pg_read_all_settings', 'MEMBER') \
                 OR (SELECT rolsuper FROM pg_roles WHERE rolname = $1)",
            &[&role],
        )
        .await
        .expect("privileges")
        .get(0);
    assert!(!privileged, "the role holds more than the README's grants");
    let role_url = format!(
        "{}/{db}",
        head.replacen("postgres@", &format!("{role}@"), 1)
    );

    let check = sink_command(&world, "check")
        .env("DATABASE_URL", &role_url)
        .output()
        .expect("timesink check");
    let printed = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert_eq!(
        printed.matches("matches what the sink writes").count(),
        7,
        "{printed}"
    );

    let level1 = world.topic(DataType::Level1);
    let prices_topic = world.topic(DataType::Price);
    send_many(&level1, &keyed_quotes(0..500)).await;
    send_many(&prices_topic, &prices(0..100)).await;
    // Repeated keys take the merge path (ON CONFLICT DO UPDATE).
    send_many(&level1, &keyed_quotes(0..100)).await;
    // A retention the owner has not applied yet: the role may not add the
    // policy, says so, and writes on.
    let mut sink = SinkProcess::start(
        &world,
        &[
            ("DATABASE_URL", role_url),
            (
                "TIMESINK_TABLES__LEVEL1_QUOTES__TIMESCALEDB__RETENTION",
                "30 days".into(),
            ),
        ],
    );
    drained(&world, &level1, 60).await;
    drained(&world, &prices_topic, 60).await;
    let log = sink.log_text();
    sink.terminate(Duration::from_secs(20));
    assert!(log.contains("created=false"), "no DDL ran:\n{log}");
    if report.timescaledb {
        assert!(
            log.contains("TimescaleDB setting not as configured")
                && log.contains("level1_quotes: retention policy after 30 days (database: none): this role may not make the change"),
            "{log}"
        );
    }
    assert!(!log.contains(" ERROR "), "{log}");
    assert_eq!(world.count("level1_quotes").await, 500);
    assert_eq!(world.count("crypto_prices").await, 100);
    if report.timescaledb {
        let hypertables: i64 = world
            .db
            .query_one(
                "SELECT count(*) FROM timescaledb_information.hypertables",
                &[],
            )
            .await
            .expect("hypertables")
            .get(0);
        assert_eq!(hypertables, 4, "written as hypertables");
    }
    eprintln!("least privilege, TimescaleDB: {}", report.timescaledb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_table_is_blocked_by_name_not_dead_lettered_and_heals() {
    let world = World::new(1).await;
    let mut client = connect(&world.config.database.url).await;
    timesink::catalog::schema::apply(
        &mut client,
        timesink::config::TimescaleMode::Off,
        &world.config.catalog().expect("catalog"),
        timesink::catalog::schema::Step::Owner,
    )
    .await
    .expect("schema");
    // At start: a NOT NULL column no row fills, and a table without its
    // primary key.
    world
        .db
        .batch_execute(
            "ALTER TABLE level1_quotes ADD COLUMN desk TEXT NOT NULL; \
             ALTER TABLE market_analytics DROP CONSTRAINT market_analytics_pkey",
        )
        .await
        .expect("change the tables");
    let level1 = world.topic(DataType::Level1);
    let prices_topic = world.topic(DataType::Price);
    send_many(&level1, &keyed_quotes(0..100)).await;
    send_many(&prices_topic, &prices(0..100)).await;
    let port = free_port();
    let mut sink = SinkProcess::start(
        &world,
        &[
            ("TIMESINK_HTTP__LISTEN", format!("127.0.0.1:{port}")),
            ("TIMESINK_DATABASE__TIMESCALEDB", "off".into()),
        ],
    );
    eventually(
        15,
        "both changed tables reported blocked by name",
        || async {
            status(port).is_some_and(|s| {
                s["blocked"]["level1_quotes"]
                    .as_str()
                    .is_some_and(|r| r.contains("extra column desk is NOT NULL without a default"))
                    && s["blocked"]["market_analytics"]
                        .as_str()
                        .is_some_and(|r| r.contains("no primary key"))
            })
        },
    )
    .await;
    drained(&world, &prices_topic, 30).await;
    assert_eq!(world.count("level1_quotes").await, 0);

    // Fixed: both heal by themselves, the quotes land.
    world
        .db
        .batch_execute(
            "ALTER TABLE level1_quotes DROP COLUMN desk; \
             ALTER TABLE market_analytics ADD PRIMARY KEY (source, time)",
        )
        .await
        .expect("fix the tables");
    drained(&world, &level1, 60).await;
    eventually(15, "nothing blocked", || async {
        status(port).is_some_and(|s| s["blocked"] == serde_json::json!({}))
    })
    .await;

    // While running: a column's type changed under the sink (COPY's binary
    // format no longer fits: SQLSTATE 22P03 for every row).
    world
        .db
        .batch_execute("ALTER TABLE level1_quotes ALTER COLUMN best_bid TYPE text")
        .await
        .expect("change a type");
    send_many(&level1, &keyed_quotes(100..200)).await;
    eventually(30, "the changed column named", || async {
        status(port).is_some_and(|s| {
            s["blocked"]["level1_quotes"]
                .as_str()
                .is_some_and(|r| r.contains("column best_bid is text, expected numeric"))
        })
    })
    .await;
    world
        .db
        .batch_execute(
            "ALTER TABLE level1_quotes ALTER COLUMN best_bid TYPE numeric USING best_bid::numeric",
        )
        .await
        .expect("change it back");
    drained(&world, &level1, 60).await;
    sink.terminate(Duration::from_secs(20));
    // Nothing was dead-lettered on the way: every quote is a row.
    let sent = Sent {
        total: 200,
        ..Sent::default()
    };
    assert_exactly_once(&world, &level1, &sent).await;
}

/// The same for a user's mapped table: changed under the running sink, it
/// is blocked by its own name and column while a built-in table flows, and
/// heals when changed back, every reading a row exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_mapped_table_is_blocked_by_name_while_the_others_flow_and_heals() {
    let world = World::new(2).await;
    let prefix = world.prefix();
    let sensors = format!("{prefix}sensors");
    create_topics(std::slice::from_ref(&sensors), 2).await;
    let config = format!(
        r#"
[tables.readings]
topics = ["{sensors}"]
primary_key = ["id"]
columns = [
  {{ name = "id", type = "text", from = "key", required = true }},
  {{ name = "celsius", type = "double precision", from = "/t", required = true }},
]
"#
    );
    let readings = |range: std::ops::Range<u64>| -> Vec<(String, String)> {
        range
            .map(|i| (format!("r{i}"), format!(r#"{{"t":{i}.5}}"#)))
            .collect()
    };
    let port = free_port();
    let mut sink = SinkProcess::start(
        &world,
        &[
            world.config_file("stuck-readings", &config),
            ("TIMESINK_HTTP__LISTEN", format!("127.0.0.1:{port}")),
        ],
    );
    send_many(&sensors, &readings(0..50)).await;
    drained(&world, &sensors, 30).await;

    // A column's type changed under the sink: every COPY into the table
    // fails (22P03), the table is blocked by name, the prices flow.
    world
        .db
        .batch_execute("ALTER TABLE readings ALTER COLUMN celsius TYPE text")
        .await
        .expect("change a type");
    send_many(&sensors, &readings(50..100)).await;
    let prices_topic = world.topic(DataType::Price);
    send_many(&prices_topic, &prices(0..50)).await;
    eventually(
        30,
        "the mapped table blocked by name and column",
        || async {
            status(port).is_some_and(|s| {
                s["blocked"]["readings"].as_str().is_some_and(|r| {
                    r.contains("column celsius is text, expected double precision")
                })
            })
        },
    )
    .await;
    drained(&world, &prices_topic, 30).await;
    assert_eq!(world.count("crypto_prices").await, 50);
    assert_eq!(
        world.count("readings").await,
        50,
        "nothing more while blocked"
    );

    world
        .db
        .batch_execute(
            "ALTER TABLE readings ALTER COLUMN celsius TYPE double precision \
             USING celsius::double precision",
        )
        .await
        .expect("change it back");
    drained(&world, &sensors, 60).await;
    eventually(15, "nothing blocked", || async {
        status(port).is_some_and(|s| s["blocked"] == serde_json::json!({}))
    })
    .await;
    sink.terminate(Duration::from_secs(20));
    // Every reading a row, once, with its value; nothing dead-lettered.
    let rows: Vec<(String, f64)> = world
        .db
        .query("SELECT id, celsius FROM readings", &[])
        .await
        .expect("read")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut ids: Vec<&str> = rows.iter().map(|(id, _)| id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!((rows.len(), ids.len()), (100, 100));
    for (id, celsius) in &rows {
        let i: f64 = id[1..].parse().expect("an id");
        assert_eq!(*celsius, i + 0.5, "{id}");
    }
    assert!(end_offsets_if_exists(&format!("{sensors}.dlq")).is_none());
}

/// A writer task that dies (a defect: here a panic injected into the
/// level1_quotes writer) is reported — its table blocked with the reason,
/// one `error` line — while the other tables flow; a stop does not wait
/// for it, and after a restart every quote lands once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_dies_is_reported_not_dropped() {
    let world = World::new(1).await;
    let level1 = world.topic(DataType::Level1);
    let prices_topic = world.topic(DataType::Price);
    let port = free_port();
    let mut env = stoppable(port);
    env.push((
        "FAILPOINTS",
        "writer-write=panic(injected writer defect)".into(),
    ));
    let mut sink = SinkProcess::start(&world, &env);
    send_many(&level1, &keyed_quotes(0..200)).await;
    send_many(&prices_topic, &prices(0..50)).await;
    eventually(30, "level1_quotes blocked by its dead writer", || async {
        status(port).is_some_and(|s| {
            s["blocked"]["level1_quotes"].as_str().is_some_and(|r| {
                r.contains("writer 0 of table level1_quotes stopped (injected writer defect)")
            })
        })
    })
    .await;
    drained(&world, &prices_topic, 60).await;
    assert_eq!(world.count("crypto_prices").await, 50, "the others flow");
    assert_eq!(world.count("level1_quotes").await, 0);
    stopped_past_a_blocked_table(&mut sink, "TERM");
    let log = sink.log_text();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains(" ERROR ") && l.contains("a defect of the sink"))
            .count(),
        1,
        "{log}"
    );
    all_land(&world, &[], 200).await;
}

/// Rows of 500 kB documents: the table's byte budget
/// (`batch.max_bytes_in_flight`), not its 30,000-row budget, bounds what
/// the sink holds while the table is held by a lock — the peak RSS shows
/// it — and every document lands once the lock goes. (With
/// `LARGE_ROWS_BUDGET=1073741824`, a budget that never binds, the same
/// load held 421 MiB on the project's CI machine; 16 MiB held 118 MiB.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_rows_are_bounded_by_bytes_in_flight() {
    let world = World::new(1).await;
    let topic = format!("{}docs", world.prefix());
    create_topics(std::slice::from_ref(&topic), 1).await;
    let config = format!(
        "[tables.docs]\ntopics = [\"{topic}\"]\nprimary_key = [\"id\"]\ncolumns = [\n  {{ name = \"id\", type = \"text\", from = \"key\", required = true }},\n  {{ name = \"doc\", type = \"jsonb\", from = \"/doc\", required = true }},\n]\n"
    );
    let file = world.config_file("docs", &config);
    let mut schema = sink_command(&world, "schema");
    schema.env(file.0, &file.1);
    assert!(schema.output().expect("schema").status.success());
    // A session holds the table: COPY waits, reads go on.
    let locker = connect(&world.config.database.url).await;
    locker
        .batch_execute("BEGIN; LOCK TABLE docs IN SHARE MODE")
        .await
        .expect("lock");
    let budget = std::env::var("LARGE_ROWS_BUDGET").unwrap_or_else(|_| (16 << 20).to_string());
    let mut sink = SinkProcess::start(
        &world,
        &[
            file,
            ("TIMESINK_BATCH__MAX_BYTES_IN_FLIGHT", budget.clone()),
        ],
    );
    let padding = "x".repeat(500_000);
    let docs: Vec<(String, String)> = (0..300)
        .map(|i| {
            (
                format!("d{i:03}"),
                format!(r#"{{"doc":{{"i":{i},"pad":"{padding}"}}}}"#),
            )
        })
        .collect();
    for chunk in docs.chunks(50) {
        send_many(&topic, chunk).await;
    }
    // Room for the sink to read what it may while the lock holds.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let held_peak = sink.peak_rss_kib().expect("peak RSS") / 1024;
    locker.batch_execute("COMMIT").await.expect("unlock");
    drained(&world, &topic, 120).await;
    let peak = sink.peak_rss_kib().expect("peak RSS") / 1024;
    sink.terminate(Duration::from_secs(20));
    eprintln!(
        "300 documents of 500 kB (150 MB) behind a lock, byte budget {budget}: peak RSS {held_peak} MiB held, {peak} MiB after draining"
    );
    assert_eq!(world.count("docs").await, 300);
    assert!(
        held_peak < 200,
        "{held_peak} MiB held behind the lock: the byte budget does not bound it"
    );
}
