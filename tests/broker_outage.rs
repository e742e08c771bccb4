//! The broker frozen for 30 s mid-run (SIGSTOP, then SIGCONT): the sink does
//! not crash, recovers, and loses or repeats nothing. A test binary of its
//! own, because it points every helper at a private broker.

mod common;

use std::time::Duration;

use common::*;
use timesink::ops::produce::DataType;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: make test-faults"]
async fn broker_paused_30s_mid_run() {
    let broker = private::PrivateBroker::start();
    // SAFETY: this binary's only test sets it before any thread reads the
    // environment (the helpers read TEST_KAFKA_BROKERS on each call).
    unsafe { std::env::set_var("TEST_KAFKA_BROKERS", broker.address()) };
    let world = World::new(4).await;
    let topic = world.topic(DataType::Level1);
    let mut sink = SinkProcess::start(
        &world,
        &[
            ("TIMESINK_RDKAFKA_SESSION_TIMEOUT_MS", "6000".into()),
            ("TIMESINK_RDKAFKA_HEARTBEAT_INTERVAL_MS", "500".into()),
        ],
    );
    let load = spawn_load(topic.clone(), 40_000, 1_000, 1019);
    eventually(60, "5,000 rows before the pause", || async {
        world.count("level1_quotes").await >= 5_000
    })
    .await;
    broker.pause();
    let frozen_at = world.count("level1_quotes").await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    broker.resume();
    assert!(
        sink.exited().is_none(),
        "the sink exited while the broker was frozen"
    );
    let sent = load.await.expect("load");
    drained(&world, &topic, 120).await;
    sink.terminate(Duration::from_secs(20));
    // librdkafka's reconnect attempts are not a flood in the log: each
    // client says the brokers are unreachable once, and once they are back.
    let log = sink.log_text();
    // Each invalid message of the load is one warning by design; the rest
    // is what the outage made the sink say.
    let loud: Vec<&str> = loud_lines(&log)
        .into_iter()
        .filter(|l| !l.contains("invalid message goes to the dead-letter topic"))
        .collect();
    assert!(
        loud.len() <= 15,
        "{} error and warning lines over a 30 s outage:\n{}",
        loud.len(),
        loud.join("\n")
    );
    eprintln!(
        "{frozen_at} rows when the broker froze; all {} after it came back",
        sent.valid()
    );
    assert_exactly_once(&world, &topic, &sent).await;
}
