//! The broker frozen while the sink is in its rebalance callback: the
//! callback's look-ups end within their time limit, the partitions it did
//! not reach wait for their start, and everything lands once the broker is
//! back. A test binary of its own, because it points every helper at a
//! private broker.

mod common;

use std::time::{Duration, Instant};

use common::*;
use timesink::ops::produce::DataType;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: make test-faults"]
async fn a_broker_stopped_during_a_rebalance_holds_the_callback_up_for_a_bounded_time() {
    let broker = private::PrivateBroker::start();
    // SAFETY: this binary's only test sets it before any thread reads the
    // environment (the helpers read TEST_KAFKA_BROKERS on each call).
    unsafe { std::env::set_var("TEST_KAFKA_BROKERS", broker.address()) };
    let world = World::new(2).await;
    let topic = world.topic(DataType::Level1);
    send_many(&topic, &keyed_quotes(0..200)).await;
    let port = free_port();
    // The first topic's look-up waits 3 s: the broker is frozen meanwhile,
    // so every look-up after it waits for an answer that does not come.
    let mut sink = SinkProcess::start(
        &world,
        &[
            ("FAILPOINTS", "assign-lookup=1*sleep(3000)".into()),
            ("TIMESINK_HTTP__LISTEN", format!("127.0.0.1:{port}")),
        ],
    );
    eventually(60, "the assignment begun", || async {
        sink.log_text().contains("partitions being assigned")
    })
    .await;
    broker.pause();
    let frozen = Instant::now();
    eventually(60, "the callback returned", || async {
        sink.log_text().contains("partitions assigned")
    })
    .await;
    let held = frozen.elapsed();
    let log = sink.log_text();
    // Four topics, each a Kafka-commit and a range look-up of 5 s without
    // the limit: 40 s. The limit is 8 s from the callback's start.
    assert!(
        held < Duration::from_secs(12),
        "the callback held polling up for {held:?}:\n{log}"
    );
    assert!(
        log.contains("the assignment's look-ups took their time limit"),
        "{log}"
    );
    broker.resume();

    send_many(&topic, &keyed_quotes(200..400)).await;
    drained(&world, &topic, 120).await;
    eventually(30, "nothing held back", || async {
        get(&format!("http://127.0.0.1:{port}/status")).is_some_and(|(_, body)| {
            serde_json::from_str::<serde_json::Value>(&body)
                .is_ok_and(|s| s["held_back"] == serde_json::json!([]))
        })
    })
    .await;
    sink.terminate(Duration::from_secs(30));
    let sent = Sent {
        total: 400,
        ..Sent::default()
    };
    assert_exactly_once(&world, &topic, &sent).await;
}
