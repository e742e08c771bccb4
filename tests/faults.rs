//! Nothing lost, nothing duplicated, under faults, on the real services:
//! the `timesink` binary killed at random moments (and at crash points
//! inside a COPY, before COMMIT, and between the database commit and the
//! Kafka commit), several instances in one group, outages, a slow database.
//!
//! Every test ends with [`assert_exactly_once`]. Run with `make test-faults`
//! (the crash points need `--features failpoints`). FAULT_SEED repeats a run.

mod common;

use std::time::{Duration, Instant};

use common::private;
use common::*;
use timesink::ops::produce::DataType;

/// Session timeout of the test sinks, so a killed member leaves the group
/// in seconds rather than librdkafka's default 45.
fn fast_group(env: &mut Vec<(&'static str, String)>) {
    env.push(("TIMESINK_RDKAFKA_SESSION_TIMEOUT_MS", "6000".into()));
    env.push(("TIMESINK_RDKAFKA_HEARTBEAT_INTERVAL_MS", "500".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: make test-faults"]
async fn killed_at_random_moments_and_at_crash_points() {
    let world = World::new(4).await;
    let topic = world.topic(DataType::Level1);
    let mut rng = Rng::from_env();
    let load = spawn_load(topic.clone(), 30_000, 2_000, 997);
    // Static membership: a restarted instance takes its partitions back at
    // once instead of waiting for the dead one's session to expire.
    let instance = format!("{}-a", world.config.kafka.group_id);
    let crash_points = ["copy-mid", "commit-before", "commit-after"];
    let (mut kills, mut aborts) = (0, 0);
    let mut round = 0u64;
    let started = Instant::now();
    while kills < 20 || !load.is_finished() {
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "crash rounds did not finish"
        );
        let mut env = vec![("TIMESINK_RDKAFKA_GROUP_INSTANCE_ID", instance.clone())];
        // Every other round arms one crash point, at a low probability per hit.
        if round % 2 == 1 {
            let point = crash_points[(round / 2 % 3) as usize];
            env.push(("FAILPOINTS", format!("{point}=5%return")));
        }
        round += 1;
        let mut sink = SinkProcess::start(&world, &env);
        // A crash point needs a sink that writes: its round outlasts the
        // restart (taking the partitions back takes up to a second).
        let span = if round.is_multiple_of(2) {
            1500..3000
        } else {
            300..1500
        };
        let until = Instant::now() + Duration::from_millis(rng.range(span));
        let mut aborted = false;
        while Instant::now() < until {
            if let Some(status) = sink.exited() {
                use std::os::unix::process::ExitStatusExt;
                assert_eq!(
                    status.signal(),
                    Some(6),
                    "the sink exited on its own ({status}); log: {}",
                    sink.log.display()
                );
                aborted = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if aborted {
            aborts += 1;
        } else {
            sink.kill();
            kills += 1;
        }
    }
    let sent = load.await.expect("load");
    let mut sink = SinkProcess::start(
        &world,
        &[("TIMESINK_RDKAFKA_GROUP_INSTANCE_ID", instance.clone())],
    );
    drained(&world, &topic, 120).await;
    // The earlier rounds may have stored everything already: a SIGTERM
    // before the sink listens for it would kill it, not stop it.
    eventually(60, "the last sink has its partitions", || async {
        sink.log_text().contains("partitions assigned")
    })
    .await;
    sink.terminate(Duration::from_secs(20));
    eprintln!(
        "{kills} SIGKILLs and {aborts} crash-point aborts over {round} rounds in {:?}",
        started.elapsed()
    );
    if cfg!(feature = "failpoints") {
        assert!(aborts > 0, "no crash point fired");
    }
    assert!(kills >= 20);
    assert_exactly_once(&world, &topic, &sent).await;
}

/// The sum of rows written so far.
async fn rows(world: &World) -> i64 {
    world.count("level1_quotes").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: make test-faults"]
async fn instances_added_stopped_and_killed_under_load() {
    let world = World::new(6).await;
    let topic = world.topic(DataType::Level1);
    let load = spawn_load(topic.clone(), 40_000, 2_000, 1009);
    let mut env = Vec::new();
    fast_group(&mut env);
    let mut a = SinkProcess::start(&world, &env);
    let mut b = SinkProcess::start(&world, &env);
    let mut c = SinkProcess::start(&world, &env);
    eventually(60, "5,000 rows with three instances", || async {
        rows(&world).await >= 5_000
    })
    .await;
    let mut d = SinkProcess::start(&world, &env);
    eventually(60, "15,000 rows after one was added", || async {
        rows(&world).await >= 15_000
    })
    .await;
    a.terminate(Duration::from_secs(20));
    eventually(60, "25,000 rows after one was stopped", || async {
        rows(&world).await >= 25_000
    })
    .await;
    b.kill();
    let sent = load.await.expect("load");
    // Bounded: the killed member's partitions move after its session times
    // out (6 s), and the two left drain the rest.
    let load_done = Instant::now();
    drained(&world, &topic, 60).await;
    eprintln!("drained {:?} after the load ended", load_done.elapsed());
    for sink in [&mut c, &mut d] {
        sink.terminate(Duration::from_secs(20));
        let log = sink.log_text();
        assert!(
            log.contains("protocol=\"cooperative\""),
            "cooperative-sticky assignment; log: {}",
            sink.log.display()
        );
    }
    assert_exactly_once(&world, &topic, &sent).await;
}

/// The retry delays a sink logged (`retry_in=…`), in seconds.
fn retry_delays(log: &str) -> Vec<f64> {
    log.lines()
        .filter_map(|l| l.split("retry_in=").nth(1))
        .filter_map(|v| {
            let v = v.split_whitespace().next()?;
            if let Some(ms) = v.strip_suffix("ms") {
                ms.parse::<f64>().ok().map(|x| x / 1000.0)
            } else {
                v.strip_suffix('s')?.parse().ok()
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: make test-faults"]
async fn postgres_down_at_start_stopped_30s_and_connections_killed_mid_copy() {
    let pg = private::PrivatePg::start();
    let mut world = World::on(&pg.admin_url(), 4).await;
    let topic = world.topic(DataType::Level1);
    let url = world.config.database.url.clone();
    // Down at start: the sink waits for it instead of exiting.
    pg.down();
    let mut env = vec![
        ("TIMESINK_RDKAFKA_MAX_POLL_INTERVAL_MS", "10000".to_string()),
        // Each retry and its delay: the first is a warning, the rest debug.
        (
            "RUST_LOG",
            "info,timesink=debug,librdkafka=warn".to_string(),
        ),
    ];
    fast_group(&mut env);
    let mut sink = SinkProcess::start(&world, &env);
    let load = spawn_load(topic.clone(), 50_000, 1_000, 1013);
    eventually(20, "the sink reports the database unreachable", || async {
        sink.log_text()
            .contains("database not reachable at start; retrying")
    })
    .await;
    assert!(
        sink.exited().is_none(),
        "the sink exited with the database down"
    );
    pg.up();
    world.db = connect(&url).await;
    eventually(60, "rows once the database is up", || async {
        rows(&world).await > 2_000
    })
    .await;

    // Connections terminated mid-COPY, repeatedly.
    let mut terminated = 0i64;
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        terminated += world
            .db
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid() \
                 AND query LIKE 'COPY%'",
                &[],
            )
            .await
            .expect("terminate COPY backends")
            .get::<_, i64>(0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(terminated > 0, "no COPY was caught in flight");

    // Stopped for 30 s mid-run: more than max.poll.interval.ms (10 s), so
    // the consumer must keep polling while its writers wait.
    let before = rows(&world).await;
    pg.down();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(sink.exited().is_none(), "the sink exited during the outage");
    pg.up();
    world.db = connect(&url).await;
    eventually(60, "rows after the outage", || async {
        rows(&world).await > before
    })
    .await;
    let sent = load.await.expect("load");
    drained(&world, &topic, 120).await;
    sink.terminate(Duration::from_secs(20));
    let log = sink.log_text();
    let delays = retry_delays(&log);
    assert!(!delays.is_empty(), "no retries logged");
    let longest = delays.iter().copied().fold(0.0, f64::max);
    assert!(longest <= 5.0, "backoff above its 5 s cap: {longest}s");
    let revoked = log
        .lines()
        .filter(|l| l.contains("partitions revoked"))
        .count();
    assert_eq!(
        revoked,
        1,
        "the group membership lasted through the outage (the one revocation is the shutdown); log: {}",
        sink.log.display()
    );
    eprintln!(
        "{terminated} COPY backends terminated; {} retries, longest wait {longest}s",
        delays.len()
    );
    assert_exactly_once(&world, &topic, &sent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: make test-faults"]
async fn a_dead_letter_topic_that_refuses_blocks_the_source_commit() {
    use rdkafka::ClientConfig;
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let world = World::new(2).await;
    let topic = world.topic(DataType::Level1);
    let dlq = format!("{topic}.dlq");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("admin");
    // A dead-letter topic that refuses every dead letter: too small a limit.
    let small = NewTopic::new(&dlq, 2, TopicReplication::Fixed(1)).set("max.message.bytes", "100");
    for r in admin
        .create_topics([&small], &AdminOptions::new())
        .await
        .expect("create")
    {
        r.expect("dlq created");
    }
    let producer = producer();
    let mut invalid = std::collections::BTreeSet::new();
    let total = 40u64;
    for i in 0..total {
        let valid = i != 20;
        let at = send(
            &producer,
            &topic,
            Some(&format!("K{i}")),
            quote(i, valid).as_bytes(),
            &[],
        )
        .await;
        if !valid {
            invalid.insert(at);
        }
    }
    let &(partition, offset) = invalid.first().expect("one invalid");
    let mut sink = SinkProcess::start(&world, &[]);
    eventually(30, "the table reported blocked", || async {
        sink.log_text().contains("table blocked")
    })
    .await;
    let stored = world
        .stored_offsets()
        .await
        .get(&(topic.clone(), partition))
        .copied()
        .unwrap_or(0);
    assert!(
        stored <= offset,
        "the source offset {offset} was committed ({stored}) before its dead letter was acknowledged"
    );
    // The operator deletes the topic; the sink's retry creates it again,
    // like its source, and gets through.
    for r in admin
        .delete_topics(&[&dlq], &AdminOptions::new())
        .await
        .expect("delete")
    {
        r.expect("dlq deleted");
    }
    drained(&world, &topic, 60).await;
    assert_eq!(
        end_offsets(&dlq).len(),
        2,
        "created again with the source's partitions"
    );
    sink.terminate(Duration::from_secs(20));
    assert_exactly_once(
        &world,
        &topic,
        &Sent {
            total,
            invalid,
            repeats: 0,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: make test-faults"]
async fn copies_slower_than_max_poll_interval_keep_the_group_and_memory_bounded() {
    let world = World::new(4).await;
    let topic = world.topic(DataType::Level1);
    let mut env = vec![
        ("TIMESINK_RDKAFKA_MAX_POLL_INTERVAL_MS", "10000".to_string()),
        (
            "RUST_LOG",
            "info,librdkafka=warn,timesink::pipeline::consume=debug,timesink::pipeline=debug"
                .into(),
        ),
    ];
    fast_group(&mut env);
    let mut sink = SinkProcess::start(&world, &env);
    eventually(30, "the sink created its tables", || async {
        world.count("level1_quotes").await == 0
    })
    .await;
    // Every COPY into level1_quotes now takes 11 s: longer than max.poll.interval.ms.
    world
        .db
        .batch_execute(
            "CREATE FUNCTION slow_down() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN PERFORM pg_sleep(11); RETURN NULL; END $$; \
             CREATE TRIGGER slow_down BEFORE INSERT ON level1_quotes \
             FOR EACH STATEMENT EXECUTE FUNCTION slow_down();",
        )
        .await
        .expect("slow-down trigger");
    // A backlog (about 80 MB) larger than librdkafka's fetch queue (64 MiB).
    let load = spawn_load(topic.clone(), 450_000, 50_000, 0);
    let sent = load.await.expect("load");
    // Two slow COPYs committed while the backlog waits.
    let (mut last, mut steps) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while steps < 2 {
        assert!(Instant::now() < deadline, "two slow batches within 60 s");
        let n = world.count("level1_quotes").await;
        if n > last {
            (last, steps) = (n, steps + 1);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let peak_kib = sink.peak_rss_kib().expect("the sink's VmHWM");
    let log = sink.log_text();
    assert!(
        log.contains("table freed no room for 0.5 s: its partitions paused"),
        "the slow table paused its partitions; log: {}",
        sink.log.display()
    );
    assert!(
        !log.contains("partitions revoked"),
        "the sink lost its group membership while COPY was slow; log: {}",
        sink.log.display()
    );
    assert!(
        peak_kib < 256 * 1024,
        "peak RSS {peak_kib} KiB with a backlog of {} messages",
        sent.total
    );
    world
        .db
        .batch_execute("DROP TRIGGER slow_down ON level1_quotes")
        .await
        .expect("drop trigger");
    drained(&world, &topic, 120).await;
    sink.terminate(Duration::from_secs(30));
    eprintln!(
        "peak RSS {} MiB while {} messages waited behind 11 s COPYs",
        peak_kib / 1024,
        sent.total
    );
    assert_exactly_once(&world, &topic, &sent).await;
}

/// How long after each of `kills` SIGKILL-and-restart rounds every
/// partition flows again: from the restart until a message sent to each
/// partition after it is committed. Keys from `first_key` on.
async fn back_after_kills(
    world: &World,
    env: Env<'_>,
    kills: usize,
    first_key: u64,
) -> Vec<Duration> {
    let topic = world.topic(DataType::Level1);
    let mut sink = SinkProcess::start(world, env);
    let mut next = first_key;
    send_many(&topic, &keyed_quotes(next..next + 40)).await;
    next += 40;
    drained(world, &topic, 60).await;
    let mut took = Vec::new();
    for _ in 0..kills {
        sink.kill();
        let restarted = Instant::now();
        sink = SinkProcess::start(world, env);
        let sent = send_many(&topic, &keyed_quotes(next..next + 40)).await;
        next += 40;
        let partitions: std::collections::BTreeSet<i32> = sent.iter().map(|&(p, _)| p).collect();
        assert_eq!(partitions.len(), 4, "40 keys reach every partition");
        drained(world, &topic, 60).await;
        took.push(restarted.elapsed());
    }
    sink.terminate(Duration::from_secs(20));
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: make test-faults"]
async fn a_killed_instance_flows_again_within_15s_and_within_2s_with_a_stable_id() {
    let world = World::new(4).await;
    let defaults = back_after_kills(&world, &[], 3, 0).await;
    let id = [(
        "TIMESINK_RDKAFKA_GROUP_INSTANCE_ID",
        format!("{}-0", world.config.kafka.group_id),
    )];
    let static_membership = back_after_kills(&world, &id, 3, 1_000).await;
    eprintln!("back after a kill: defaults {defaults:?}; static membership {static_membership:?}");
    for took in &defaults {
        assert!(*took <= Duration::from_secs(15), "defaults: {defaults:?}");
    }
    for took in &static_membership {
        assert!(
            *took <= Duration::from_secs(2),
            "static membership: {static_membership:?}"
        );
    }
    let sent = Sent {
        total: 40 * 8,
        ..Sent::default()
    };
    assert_exactly_once(&world, &world.topic(DataType::Level1), &sent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: make test-faults"]
async fn a_second_instance_joining_during_a_database_outage_keeps_the_group() {
    let pg = private::PrivatePg::start();
    let mut world = World::on(&pg.admin_url(), 4).await;
    let topic = world.topic(DataType::Level1);
    let url = world.config.database.url.clone();
    let mut env = vec![("TIMESINK_RDKAFKA_MAX_POLL_INTERVAL_MS", "10000".to_string())];
    fast_group(&mut env);
    let mut first = SinkProcess::start(&world, &env);
    let load = spawn_load(topic.clone(), 30_000, 1_000, 1021);
    eventually(60, "rows from the first instance", || async {
        rows(&world).await > 2_000
    })
    .await;
    // The second instance joins; its assignment waits 3 s at the crash
    // point, long enough for the database to freeze under it.
    let mut second_env = env.clone();
    second_env.push(("FAILPOINTS", "assign-lookup=1*sleep(3000)".to_string()));
    let mut second = SinkProcess::start(&world, &second_env);
    eventually(30, "the second instance subscribed", || async {
        second.log_text().contains("subscribed")
    })
    .await;
    pg.freeze();
    eventually(
        30,
        "the second instance's partitions wait for their offsets",
        || async { second.log_text().contains("reading stored offsets failed") },
    )
    .await;
    // The outage outlasts max.poll.interval.ms (10 s) twice over.
    let outage = Instant::now() + Duration::from_secs(20);
    while Instant::now() < outage {
        assert!(first.exited().is_none(), "the first instance exited");
        assert!(second.exited().is_none(), "the second instance exited");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    pg.thaw();
    world.db = connect(&url).await;
    let sent = load.await.expect("load");
    drained(&world, &topic, 120).await;
    let logs = [first.log_text(), second.log_text()];
    second.terminate(Duration::from_secs(20));
    first.terminate(Duration::from_secs(20));
    for log in &logs {
        assert!(
            !log.contains("maximum poll interval"),
            "evicted for not polling:\n{log}"
        );
    }
    assert!(
        logs[1].contains("stored offset read: the partition starts"),
        "the waiting partitions started after the outage:\n{}",
        logs[1]
    );
    assert_exactly_once(&world, &topic, &sent).await;
}
