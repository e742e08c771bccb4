//! Rebalances on the real broker and database, with two instances in one
//! group: what a partition carries from one assignment to the next.

mod common;

use std::time::Duration;

use common::*;
use timesink::ops::produce::DataType;

fn status(port: u16) -> serde_json::Value {
    let (_, body) = get(&format!("http://127.0.0.1:{port}/status")).unwrap_or_default();
    serde_json::from_str(&body).unwrap_or_default()
}

fn metric(port: u16, line: &str) -> bool {
    get(&format!("http://127.0.0.1:{port}/metrics"))
        .is_some_and(|(_, m)| m.lines().any(|l| l == line))
}

/// A partition the sink had paused for its table, revoked and assigned
/// again, fetches again: librdkafka keeps an application's pause across
/// unassign and assign, so the assignment itself must resume it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_paused_when_revoked_fetches_when_it_comes_back() {
    let world = World::new(4).await;
    let level1 = world.topic(DataType::Level1);
    let (port_a, port_b) = (free_port(), free_port());
    let env = |port: u16| {
        vec![
            ("TIMESINK_HTTP__LISTEN", format!("127.0.0.1:{port}")),
            ("TIMESINK_BATCH__MAX_ROWS_IN_FLIGHT", "200".into()),
            (
                "TIMESINK_TABLES__LEVEL1_QUOTES__BATCH__MAX_ROWS",
                "100".into(),
            ),
        ]
    };
    let mut a = SinkProcess::start(&world, &env(port_a));
    send_many(&level1, &keyed_quotes(0..100)).await;
    drained(&world, &level1, 60).await;

    // A lock holds every write of the table: A's budget fills and the
    // table's partitions pause.
    let locker = connect(&world.config.database.url).await;
    locker
        .batch_execute("BEGIN; LOCK TABLE level1_quotes IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    send_many(&level1, &keyed_quotes(100..2_100)).await;
    eventually(30, "A paused the table's partitions", || async {
        metric(port_a, "timesink_table_paused{table=\"level1_quotes\"} 1")
    })
    .await;
    eventually(
        10,
        "A's /status says which partitions wait and why",
        || async {
            let held = status(port_a)["held_back"].clone();
            (0..4).all(|p| {
                held.as_array().is_some_and(|h| {
                    h.contains(&serde_json::json!({
                        "topic": level1, "partition": p, "reason": "table_out_of_room"
                    }))
                })
            })
        },
    )
    .await;

    // B joins and takes some partitions; A's come back once B leaves.
    let mut b = SinkProcess::start(&world, &env(port_b));
    eventually(60, "B holds partitions", || async {
        status(port_b)["assigned_partitions"].as_u64().unwrap_or(0) > 0
    })
    .await;
    locker.batch_execute("COMMIT").await.expect("unlock");
    drained(&world, &level1, 60).await;
    b.terminate(Duration::from_secs(30));
    eventually(60, "A holds every partition again", || async {
        // Four topics of four partitions each.
        status(port_a)["assigned_partitions"].as_u64() == Some(16)
    })
    .await;

    // New messages on every partition land.
    send_many(&level1, &keyed_quotes(2_100..2_500)).await;
    let all: Vec<String> = {
        let mut all: Vec<String> = (0..2_500).map(|i| format!("K{i}")).collect();
        all.sort();
        all
    };
    eventually(60, "every quote stored", || async {
        stored_symbols(&world).await == all
    })
    .await;
    drained(&world, &level1, 30).await;
    let held_back = status(port_a)["held_back"].clone();
    a.terminate(Duration::from_secs(30));
    let sent = Sent {
        total: 2_500,
        ..Sent::default()
    };
    assert_exactly_once(&world, &level1, &sent).await;
    assert_eq!(
        held_back,
        serde_json::json!([]),
        "nothing held back at the end"
    );
}

/// Two instances of one group whose configurations send one topic to
/// different tables: each reports the tables the other describes
/// otherwise, loudly, until they agree again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_describing_a_table_differently_are_reported() {
    let world = World::new(2).await;
    let topic = format!("{}fills", world.prefix());
    create_topics(std::slice::from_ref(&topic), 2).await;
    let table = |name: &str| {
        format!(
            "[tables.{name}]\ntopics = [\"{topic}\"]\nprimary_key = [\"id\"]\ncolumns = [\n  {{ name = \"id\", type = \"text\", from = \"key\", required = true }},\n]\n"
        )
    };
    let (port_a, port_b) = (free_port(), free_port());
    let mut a = SinkProcess::start(
        &world,
        &[
            world.config_file("fills-a", &table("fills_a")),
            ("TIMESINK_HTTP__LISTEN", format!("127.0.0.1:{port_a}")),
        ],
    );
    let mut b = SinkProcess::start(
        &world,
        &[
            world.config_file("fills-b", &table("fills_b")),
            ("TIMESINK_HTTP__LISTEN", format!("127.0.0.1:{port_b}")),
        ],
    );
    for port in [port_a, port_b] {
        eventually(40, "both report the mismatch", || async move {
            let s = status(port);
            s["mapping_mismatch"]["fills_a"].is_string()
                && s["mapping_mismatch"]["fills_b"].is_string()
        })
        .await;
    }
    let s = status(port_b);
    assert_eq!(s["state"], "degraded", "{s}");
    assert!(
        s["mapping_mismatch"]["fills_a"]
            .as_str()
            .is_some_and(|h| h.ends_with("writes it, this instance does not")),
        "{s}"
    );
    assert!(metric(
        port_b,
        "timesink_mapping_mismatch{table=\"fills_a\"} 1"
    ));
    b.terminate(Duration::from_secs(20));
    let log = b.log_text();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains(" ERROR ") && l.contains("describes tables differently"))
            .count(),
        1,
        "{log}"
    );
    // Alone again (b's rows age out of the live window): a says so.
    eventually(60, "a agrees with itself again", || async {
        status(port_a)["mapping_mismatch"]
            .as_object()
            .is_some_and(|m| m.is_empty())
    })
    .await;
    a.terminate(Duration::from_secs(20));
}
