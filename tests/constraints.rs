//! The operator's database: constraints, triggers and column settings the
//! sink does not own. A row one of them refuses is a dead letter naming
//! the SQLSTATE and the constraint, found wherever PostgreSQL refuses it
//! (at COPY or at COMMIT); a table that refuses every row, or that the
//! sink cannot write as described, is blocked loudly and heals — never
//! retried in silence, never emptied into the dead letters.

mod common;

use std::time::Duration;

use common::*;
use timesink::ops::produce::DataType;

fn status(port: u16) -> Option<serde_json::Value> {
    get(&format!("http://127.0.0.1:{port}/status"))
        .and_then(|(_, body)| serde_json::from_str(&body).ok())
}

fn blocked_reason(port: u16, table: &str) -> Option<String> {
    status(port).and_then(|s| s["blocked"][table].as_str().map(str::to_owned))
}

/// A unique index besides the primary key, and a DEFERRABLE foreign key
/// (checked at COMMIT): the row that breaks one is dead-lettered with the
/// SQLSTATE and the constraint's name; the rows around it land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_breaking_a_constraint_the_sink_does_not_own_is_a_dead_letter() {
    let world = World::new(1).await;
    let topic = format!("{}fills", world.prefix());
    create_topics(std::slice::from_ref(&topic), 1).await;
    let config = format!(
        r#"
[tables.fills]
topics = ["{topic}"]
primary_key = ["id"]
columns = [
  {{ name = "id", type = "text", from = "key", required = true }},
  {{ name = "coin", type = "text", from = "/coin", required = true }},
  {{ name = "at", type = "bigint", from = "/at", required = true }},
]
"#
    );
    let env = world.config_file("fills", &config);
    // Created as the sink would, then tightened by the operator.
    let mut schema = sink_command(&world, "schema");
    schema.env(env.0, &env.1);
    assert!(schema.output().expect("schema").status.success());
    world
        .db
        .batch_execute(
            "CREATE TABLE coins (coin text PRIMARY KEY); INSERT INTO coins VALUES ('btc'), ('eth'); \
             CREATE UNIQUE INDEX one_fill_per_coin_and_time ON fills (coin, at); \
             ALTER TABLE fills ADD CONSTRAINT known_coin FOREIGN KEY (coin) REFERENCES coins \
               DEFERRABLE INITIALLY DEFERRED",
        )
        .await
        .expect("the operator's constraints");
    let messages: Vec<(String, String)> = [
        ("a", r#"{"coin":"btc","at":1}"#),
        ("b-same-coin-and-time", r#"{"coin":"btc","at":1}"#),
        ("c", r#"{"coin":"eth","at":1}"#),
        ("d-unknown-coin", r#"{"coin":"doge","at":2}"#),
        ("e", r#"{"coin":"btc","at":2}"#),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .to_vec();
    send_many(&topic, &messages).await;
    let port = free_port();
    let mut sink = SinkProcess::start(
        &world,
        &[env, ("TIMESINK_HTTP__LISTEN", format!("127.0.0.1:{port}"))],
    );
    drained(&world, &topic, 60).await;
    let letters = dead_letter_reasons(&read_to_end(&format!("{topic}.dlq"), 30));
    sink.terminate(Duration::from_secs(20));

    assert_eq!(
        world.texts("SELECT id FROM fills ORDER BY id").await,
        ["a", "c", "e"]
    );
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert_eq!(letters[0].0, "b-same-coin-and-time");
    assert!(
        letters[0].1.contains("SQLSTATE 23505")
            && letters[0]
                .1
                .contains("constraint one_fill_per_coin_and_time"),
        "{letters:?}"
    );
    assert_eq!(letters[1].0, "d-unknown-coin");
    assert!(
        letters[1].1.contains("SQLSTATE 23503") && letters[1].1.contains("constraint known_coin"),
        "{letters:?}"
    );
    assert!(!sink.log_text().contains("table blocked"));
}

/// A table that refuses every row — a maintenance trigger raising, added
/// under the running sink — is blocked loudly, its rows kept for later,
/// not dead-lettered; it heals when the trigger goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_refusing_every_row_is_blocked_and_heals_not_dead_lettered() {
    let world = World::new(1).await;
    let topic = world.topic(DataType::Level1);
    let port = free_port();
    let mut sink = SinkProcess::start(
        &world,
        &[("TIMESINK_HTTP__LISTEN", format!("127.0.0.1:{port}"))],
    );
    send_many(&topic, &keyed_quotes(0..50)).await;
    drained(&world, &topic, 60).await;
    world
        .db
        .batch_execute(
            "CREATE FUNCTION maintenance() RETURNS trigger LANGUAGE plpgsql AS \
               $$ BEGIN RAISE EXCEPTION 'level1_quotes is under maintenance'; END $$; \
             CREATE TRIGGER maintenance BEFORE INSERT OR UPDATE ON level1_quotes \
               FOR EACH ROW EXECUTE FUNCTION maintenance()",
        )
        .await
        .expect("trigger");
    send_many(&topic, &keyed_quotes(50..100)).await;
    eventually(30, "level1_quotes blocked", || async {
        blocked_reason(port, "level1_quotes").is_some()
    })
    .await;
    let reason = blocked_reason(port, "level1_quotes").unwrap_or_default();
    assert!(
        reason.contains("refuses every row of table level1_quotes, a row it took before included")
            && reason.contains("under maintenance"),
        "{reason}"
    );
    // A sink started anew has no row the table took to tell by: the same
    // refusal of every row of several messages blocks it too.
    sink.terminate(Duration::from_secs(20));
    let port = free_port();
    let mut sink = SinkProcess::start(
        &world,
        &[("TIMESINK_HTTP__LISTEN", format!("127.0.0.1:{port}"))],
    );
    eventually(30, "level1_quotes blocked again", || async {
        blocked_reason(port, "level1_quotes").is_some()
    })
    .await;
    let reason = blocked_reason(port, "level1_quotes").unwrap_or_default();
    assert!(
        reason.contains("refuses every row of table level1_quotes, the same way for "),
        "{reason}"
    );
    world
        .db
        .batch_execute("DROP TRIGGER maintenance ON level1_quotes")
        .await
        .expect("drop trigger");
    drained(&world, &topic, 60).await;
    sink.terminate(Duration::from_secs(20));
    assert_eq!(world.count("level1_quotes").await, 100);
    assert!(
        end_offsets_if_exists(&format!("{topic}.dlq")).is_none_or(|o| o.values().all(|&e| e == 0)),
        "nothing dead-lettered"
    );
    let log = sink.log_text();
    assert!(log.contains("table no longer blocked"), "{log}");
}

/// A mapped column made `NOT NULL DEFAULT 0` under the running sink: the
/// sink writes NULL where a price has no `btcPrice`, so the table is
/// blocked naming the column — not each such price dead-lettered — and
/// heals when the column is nullable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_not_null_default_on_a_column_the_sink_writes_null_to_blocks_naming_it() {
    let world = World::new(1).await;
    let topic = world.topic(DataType::Price);
    let port = free_port();
    let mut sink = SinkProcess::start(
        &world,
        &[("TIMESINK_HTTP__LISTEN", format!("127.0.0.1:{port}"))],
    );
    let price = |i: u64| {
        (
            format!("P{i}"),
            format!(
                r#"{{"coinId":"P{i}","symbol":"P","usdPrice":"1.5","lastUpdated":"2026-11-22T18:00:00Z","source":"t"}}"#
            ),
        )
    };
    send_many(&topic, &(0..20).map(price).collect::<Vec<_>>()).await;
    drained(&world, &topic, 60).await;
    world
        .db
        .batch_execute(
            "UPDATE crypto_prices SET btc_price = 0; \
             ALTER TABLE crypto_prices ALTER COLUMN btc_price SET DEFAULT 0, \
               ALTER COLUMN btc_price SET NOT NULL",
        )
        .await
        .expect("not null default");
    send_many(&topic, &(20..220).map(price).collect::<Vec<_>>()).await;
    eventually(30, "crypto_prices blocked", || async {
        blocked_reason(port, "crypto_prices").is_some()
    })
    .await;
    let reason = blocked_reason(port, "crypto_prices").unwrap_or_default();
    assert!(
        reason.contains("column btc_price is NOT NULL with a default, expected nullable"),
        "{reason}"
    );
    world
        .db
        .batch_execute("ALTER TABLE crypto_prices ALTER COLUMN btc_price DROP NOT NULL")
        .await
        .expect("nullable again");
    drained(&world, &topic, 60).await;
    sink.terminate(Duration::from_secs(20));
    assert_eq!(world.count("crypto_prices").await, 220);
    assert!(
        end_offsets_if_exists(&format!("{topic}.dlq")).is_none_or(|o| o.values().all(|&e| e == 0)),
        "nothing dead-lettered"
    );
}

/// `check` refuses a description the live table cannot take as written:
/// an append-only mapping onto a table with a key, and a mapped column the
/// table generates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_refuses_an_append_only_mapping_onto_a_keyed_table_and_a_generated_column() {
    let world = World::new(1).await;
    let topic = format!("{}marks", world.prefix());
    world
        .db
        .batch_execute(
            "CREATE TABLE marks (id text PRIMARY KEY, price numeric); \
             CREATE TABLE gauges (id text PRIMARY KEY, celsius double precision, \
               fahrenheit double precision GENERATED ALWAYS AS (celsius * 9 / 5 + 32) STORED)",
        )
        .await
        .expect("the operator's tables");
    for (name, config, expected) in [
        (
            "append-only",
            format!(
                "[tables.marks]\ntopics = [\"{topic}\"]\nprimary_key = []\ncolumns = [\n  {{ name = \"id\", type = \"text\", from = \"key\", required = true }},\n  {{ name = \"price\", type = \"numeric\", from = \"/p\" }},\n]\n"
            ),
            "table marks: primary key (id), expected none",
        ),
        (
            "generated",
            format!(
                "[tables.gauges]\ntopics = [\"{topic}\"]\nprimary_key = [\"id\"]\ncolumns = [\n  {{ name = \"id\", type = \"text\", from = \"key\", required = true }},\n  {{ name = \"celsius\", type = \"double precision\", from = \"/c\" }},\n  {{ name = \"fahrenheit\", type = \"double precision\", from = \"/f\" }},\n]\n"
            ),
            "table gauges: column fahrenheit is generated in the table",
        ),
    ] {
        let mut cmd = sink_command(&world, "check");
        let (key, file) = world.config_file(name, &config);
        cmd.env(key, file);
        let out = cmd.output().expect("run timesink check");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(!out.status.success(), "{name}: check passed:\n{stdout}");
        assert!(
            stderr.contains(expected),
            "{name}: {expected:?} not in {stderr}"
        );
    }
}
