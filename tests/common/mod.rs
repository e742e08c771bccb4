//! Shared by the integration tests: each test gets its own database, topics
//! and consumer group on the real PostgreSQL and broker that
//! `scripts/services.sh start` runs (TEST_DATABASE_URL and TEST_KAFKA_BROKERS,
//! else loopback on PG_PORT and KAFKA_PORT as the script uses them).
#![allow(dead_code)]

pub mod private;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use timesink::config::Config;
use timesink::ops::produce::DataType;
use timesink::ops::produce::Topics;
use tokio_postgres::{Client, NoTls};

/// The services' ports, as `scripts/services.sh` reads them.
fn port(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.into())
}

pub fn database_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            port("PG_PORT", "55432")
        )
    })
}

pub fn brokers() -> String {
    std::env::var("TEST_KAFKA_BROKERS")
        .unwrap_or_else(|_| format!("127.0.0.1:{}", port("KAFKA_PORT", "19092")))
}

/// A Kafka client of the test broker: `TEST_KAFKA_BROKERS`, and each
/// `TEST_RDKAFKA_<NAME>` as the property `<name>` (`_` for `.`), as the
/// sink's `TIMESINK_RDKAFKA_` does (TLS and SASL for tests/kafka_tls.rs).
pub fn kafka_client() -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", brokers());
    for (name, value) in std::env::vars() {
        if let Some(property) = name.strip_prefix("TEST_RDKAFKA_") {
            client.set(property.to_ascii_lowercase().replace('_', "."), value);
        }
    }
    client
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}{}x{}x{}",
        std::process::id(),
        nanos % 1_000_000_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// One test's world: a database, topics per data type, a group.
pub struct World {
    pub config: Config,
    pub db: Client,
    /// The base topic of each built-in table (its per-exchange topics are
    /// `<base>-<exchangeId>`).
    pub topics: Topics,
}

/// The topic pattern of a built-in table whose base topic is `base`: the
/// base and `<base>-<exchangeId>`, the exchange captured.
pub fn base_pattern(base: &str) -> String {
    format!("^{base}(-(?<exchange>[A-Za-z0-9_-]+))?$")
}

pub async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("connect to the test PostgreSQL (scripts/services.sh start)");
    tokio::spawn(connection);
    client
}

impl World {
    /// Creates the database and the base topics (with `partitions` each).
    pub async fn new(partitions: i32) -> World {
        World::on(&database_url(), partitions).await
    }

    /// As [`World::new`], with the database on the server of `admin_url`.
    pub async fn on(admin_url: &str, partitions: i32) -> World {
        let name = unique("ts");
        let admin_db = connect(admin_url).await;
        admin_db
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        let url = match admin_url.rsplit_once('/') {
            Some((head, _)) => format!("{head}/{name}"),
            None => panic!("TEST_DATABASE_URL needs a database part"),
        };
        let mut config = Config::default();
        config.kafka.brokers = brokers();
        config.kafka.group_id = format!("{name}-group");
        config.database.url = url.clone();
        let topics = Topics {
            prices: format!("{name}-crypto-prices"),
            ohlcv: format!("{name}-crypto-ohlcv"),
            analytics: format!("{name}-crypto-analytics"),
            level1: format!("{name}-crypto-level1"),
        };
        for t in DataType::ALL {
            if let Some(table) = config.tables.get_mut(t.table()) {
                table.topic_pattern = Some(base_pattern(topics.base(t)));
            }
        }
        config.shutdown_timeout_ms = 20_000;
        let world = World {
            config,
            db: connect(&url).await,
            topics,
        };
        let topics: Vec<String> = DataType::ALL
            .iter()
            .map(|&t| world.topics.base(t).to_owned())
            .collect();
        create_topics(&topics, partitions).await;
        world
    }

    /// The prefix of this world's names: a test's own topics (those of a
    /// user's mapping) start with it too, so that tests stay apart.
    pub fn prefix(&self) -> String {
        self.topics
            .prices
            .trim_end_matches("crypto-prices")
            .to_owned()
    }

    /// Writes `toml`, a user's mapping, to a file of this world's named
    /// after `name`; returns the sink's setting that reads it.
    pub fn config_file(&self, name: &str, toml: &str) -> (&'static str, String) {
        let file = std::env::temp_dir().join(format!("{}{name}.toml", self.prefix()));
        std::fs::write(&file, toml).expect("write config");
        ("TIMESINK_CONFIG_FILE", file.display().to_string())
    }

    pub fn topic(&self, t: DataType) -> String {
        self.topics.base(t).to_owned()
    }

    pub async fn count(&self, table: &str) -> i64 {
        self.db
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .map(|r| r.get(0))
            .unwrap_or(-1)
    }

    /// The first column of each row of `sql`, as text.
    pub async fn texts(&self, sql: &str) -> Vec<String> {
        self.db
            .query(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// The stored next offsets of this world's group.
    pub async fn stored_offsets(&self) -> HashMap<(String, i32), i64> {
        let rows = self
            .db
            .query("SELECT topic, partition, next_offset FROM timesink_offsets WHERE consumer_group = $1", &[&self.config.kafka.group_id])
            .await
            .unwrap_or_default();
        rows.iter()
            .map(|r| ((r.get(0), r.get(1)), r.get(2)))
            .collect()
    }
}

pub async fn create_topics(names: &[String], partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = kafka_client().create().expect("admin client");
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1)))
        .collect();
    let results = admin
        .create_topics(topics.iter(), &AdminOptions::new())
        .await
        .expect("create topics");
    for r in results {
        r.expect("topic created");
    }
}

pub fn producer() -> FutureProducer {
    kafka_client()
        .set("enable.idempotence", "true")
        .set("linger.ms", "2")
        .create()
        .expect("producer")
}

/// Produces one message and waits for its acknowledgement.
pub async fn send(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&str>,
    value: &[u8],
    headers: &[(&str, &str)],
) -> (i32, i64) {
    let mut h = OwnedHeaders::new();
    for (k, v) in headers {
        h = h.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        });
    }
    let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).payload(value).headers(h);
    if let Some(k) = key {
        record = record.key(k);
    }
    let delivery = producer
        .send(record, Duration::from_secs(10))
        .await
        .expect("produce");
    (delivery.partition, delivery.offset)
}

/// High watermarks of `topic`'s partitions, or None when it does not exist.
pub fn end_offsets_if_exists(topic: &str) -> Option<HashMap<i32, i64>> {
    let consumer: BaseConsumer = kafka_client().create().expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .ok()?;
    let t = metadata.topics().first()?;
    if t.error().is_some() || t.partitions().is_empty() {
        return None;
    }
    Some(end_offsets(topic))
}

/// High watermarks of every partition of `topic`.
pub fn end_offsets(topic: &str) -> HashMap<i32, i64> {
    let consumer: BaseConsumer = kafka_client()
        .set("group.id", unique("probe"))
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut out = HashMap::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            let (_, high) = consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                .expect("watermarks");
            out.insert(p.id(), high);
        }
    }
    out
}

/// Waits until the stored offsets of `topic` reach its end offsets.
pub async fn drained(world: &World, topic: &str, secs: u64) {
    eventually(secs, "stored offsets reach the end offsets", || async {
        let stored = world.stored_offsets().await;
        end_offsets(topic)
            .into_iter()
            .all(|(p, end)| stored.get(&(topic.to_owned(), p)).copied().unwrap_or(0) == end)
    })
    .await;
}

/// Polls `check` until it returns true or `secs` pass.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs}s waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Reads every message of a topic from the start (for dead-letter checks).
pub fn read_all(topic: &str, expected: usize, secs: u64) -> Vec<rdkafka::message::OwnedMessage> {
    let consumer: BaseConsumer = kafka_client()
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut out = Vec::new();
    while out.len() < expected && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            out.push(m.detach());
        }
    }
    out
}

/// A `timesink run` child process of this test. Dropping it (a failed
/// assertion included) kills it, so no sink outlives its test.
/// The sink binary with `subcommand`, set up for `world`'s database,
/// topics and group.
pub fn sink_command(world: &World, subcommand: &str) -> std::process::Command {
    let c = &world.config;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_timesink"));
    for t in DataType::ALL {
        let variable = format!(
            "TIMESINK_TABLES__{}__TOPIC_PATTERN",
            t.table().to_ascii_uppercase()
        );
        cmd.env(variable, base_pattern(world.topics.base(t)));
    }
    cmd.arg(subcommand)
        .env("KAFKA_BROKERS", &c.kafka.brokers)
        .env("DATABASE_URL", &c.database.url)
        .env("TIMESINK_GROUP_ID", &c.kafka.group_id)
        .env("RUST_LOG", "info,librdkafka=warn")
        .env_remove("FAILPOINTS");
    cmd
}

pub struct SinkProcess {
    child: std::process::Child,
    /// Where its stderr (the log) goes, for assertions on what it logged.
    pub log: std::path::PathBuf,
}

/// Extra environment for a sink (`TIMESINK_*`, `FAILPOINTS`, …).
pub type Env<'a> = &'a [(&'a str, String)];

impl SinkProcess {
    /// Starts the test binary against `world`'s database, topics and group.
    pub fn start(world: &World, env: Env<'_>) -> SinkProcess {
        let c = &world.config;
        use std::process::Stdio;
        static N: AtomicU32 = AtomicU32::new(0);
        let log = std::env::temp_dir().join(format!(
            "{}-sink{}.log",
            c.kafka.group_id,
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let file = std::fs::File::create(&log).expect("sink log file");
        let mut cmd = sink_command(world, "run");
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start timesink");
        SinkProcess { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. "TERM", "KILL", "STOP").
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} {}", self.pid());
    }

    /// SIGTERM, then waits for exit 0 within `bound`; returns the time taken.
    pub fn terminate(&mut self, bound: Duration) -> Duration {
        let started = Instant::now();
        self.signal("TERM");
        let status = self.wait(bound);
        assert!(
            status.success(),
            "timesink exited with {status} after SIGTERM; log: {}",
            self.log.display()
        );
        started.elapsed()
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether it has exited (without waiting).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    pub fn wait(&mut self, bound: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "timesink did not exit within {bound:?}; log: {}",
                self.log.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Peak resident memory (VmHWM) in KiB, while it runs.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

impl Drop for SinkProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The group's committed Kafka offsets for `topic` (partition → offset).
pub fn committed_offsets(group: &str, topic: &str) -> HashMap<i32, i64> {
    use rdkafka::TopicPartitionList;
    let consumer: BaseConsumer = kafka_client()
        .set("group.id", group)
        .create()
        .expect("consumer");
    let partitions = end_offsets(topic);
    let mut tpl = TopicPartitionList::new();
    for p in partitions.keys() {
        tpl.add_partition(topic, *p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            rdkafka::Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

/// Commits `offsets` (partition → offset) of `topic` as the group's Kafka
/// offsets, as another consumer of the group would have.
pub fn commit_offsets(group: &str, topic: &str, offsets: &[(i32, i64)]) {
    use rdkafka::TopicPartitionList;
    use rdkafka::consumer::CommitMode;
    let consumer: BaseConsumer = kafka_client()
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for &(p, o) in offsets {
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Offset(o))
            .expect("offset");
    }
    consumer.commit(&tpl, CommitMode::Sync).expect("commit");
}

/// Valid quotes keyed `K{i}` for each `i` of `range` (symbol `K{i}` too).
pub fn keyed_quotes(range: std::ops::Range<u64>) -> Vec<(String, String)> {
    range.map(|i| (format!("K{i}"), quote(i, true))).collect()
}

/// The symbols stored in `level1_quotes`, sorted.
pub async fn stored_symbols(world: &World) -> Vec<String> {
    let mut symbols: Vec<String> = world
        .db
        .query("SELECT symbol FROM level1_quotes", &[])
        .await
        .expect("rows")
        .iter()
        .map(|r| r.get(0))
        .collect();
    symbols.sort();
    symbols
}

/// A level1 quote with a unique symbol per `i`; `valid = false` makes its bid
/// negative, which validation refuses.
pub fn quote(i: u64, valid: bool) -> String {
    let bid = if valid { "1.5" } else { "-1.5" };
    format!(
        r#"{{"symbol":"K{i}","exchangeId":"x","bestBid":"{bid}","bestAsk":"1.6","timestamp":{},"sequence":{i},"source":"t"}}"#,
        1_763_834_400_000u64 + i
    )
}

/// What a load sent: where the invalid messages landed.
#[derive(Default)]
pub struct Sent {
    pub total: u64,
    pub invalid: std::collections::BTreeSet<(i32, i64)>,
    /// Valid messages that repeat an earlier one's record (its key): no row
    /// of their own.
    pub repeats: u64,
}

impl Sent {
    pub fn valid(&self) -> i64 {
        (self.total - self.invalid.len() as u64) as i64
    }

    /// The rows the table must hold: one per distinct key.
    pub fn rows(&self) -> i64 {
        self.valid() - self.repeats as i64
    }
}

/// Produces `total` level1 quotes (keys `K0…`) to `topic` at about `rate`
/// per second in a background task; every `invalid_every`-th is invalid.
pub fn spawn_load(
    topic: String,
    total: u64,
    rate: u64,
    invalid_every: u64,
) -> tokio::task::JoinHandle<Sent> {
    tokio::spawn(async move {
        let producer = producer();
        let started = Instant::now();
        let mut invalid = std::collections::BTreeSet::new();
        let mut pending = Vec::new();
        for i in 0..total {
            let valid = invalid_every == 0 || i % invalid_every != invalid_every - 1;
            let value = quote(i, valid);
            let key = format!("K{i}");
            let record: FutureRecord<'_, str, str> = FutureRecord::to(&topic)
                .key(key.as_str())
                .payload(value.as_str());
            let delivery = producer
                .send_result(record)
                .map_err(|(e, _)| e)
                .expect("enqueue");
            pending.push((valid, delivery));
            if pending.len() >= 200 {
                for (valid, d) in pending.drain(..) {
                    let (p, o) = match d.await.expect("delivery") {
                        Ok(d) => (d.partition, d.offset),
                        Err((e, _)) => panic!("produce failed: {e}"),
                    };
                    if !valid {
                        invalid.insert((p, o));
                    }
                }
            }
            // Pace to `rate`.
            let due = started + Duration::from_micros(i * 1_000_000 / rate.max(1));
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                tokio::time::sleep(wait).await;
            }
        }
        for (valid, d) in pending {
            let (p, o) = match d.await.expect("delivery") {
                Ok(d) => (d.partition, d.offset),
                Err((e, _)) => panic!("produce failed: {e}"),
            };
            if !valid {
                invalid.insert((p, o));
            }
        }
        Sent {
            total,
            invalid,
            repeats: 0,
        }
    })
}

/// The invariant every fault test ends with: every valid key present once
/// (rows == distinct keys == valid messages less repeats), stored offsets == end offsets
/// == the group's Kafka commits, and the dead letters are exactly the
/// invalid messages (at-least-once: a repeat carries the same source offset).
pub async fn assert_exactly_once(world: &World, topic: &str, sent: &Sent) {
    let row = world
        .db
        .query_one(
            "SELECT count(*), count(DISTINCT symbol) FROM level1_quotes",
            &[],
        )
        .await
        .expect("count rows");
    let (rows, keys): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(
        (rows, keys),
        (sent.rows(), sent.rows()),
        "rows, distinct keys"
    );
    let stored = world.stored_offsets().await;
    let ends = end_offsets(topic);
    assert_eq!(ends.values().sum::<i64>(), sent.total as i64, "end offsets");
    let committed = committed_offsets(&world.config.kafka.group_id, topic);
    for (p, end) in &ends {
        assert_eq!(
            stored.get(&(topic.to_owned(), *p)).copied(),
            Some(*end),
            "stored offset of partition {p}"
        );
        assert_eq!(committed.get(p).copied(), Some(*end), "Kafka commit of {p}");
    }
    let dlq = format!("{topic}.dlq");
    let letters = if sent.invalid.is_empty() && end_offsets_if_exists(&dlq).is_none() {
        Vec::new()
    } else {
        read_to_end(&dlq, 30)
    };
    let lettered: std::collections::BTreeSet<(i32, i64)> = letters
        .iter()
        .map(|m| {
            let h = dlq_headers(m);
            (
                h["dlq.partition"].parse().expect("dlq.partition"),
                h["dlq.offset"].parse().expect("dlq.offset"),
            )
        })
        .collect();
    assert_eq!(
        lettered, sent.invalid,
        "dead letters == the invalid messages"
    );
}

/// A sink log's error and warning lines.
pub fn loud_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains(" ERROR ") || l.contains(" WARN "))
        .collect()
}

/// The dead letters read so far from `<topic>.dlq`, as (key, reason),
/// sorted.
pub fn dead_letter_reasons(letters: &[rdkafka::message::OwnedMessage]) -> Vec<(String, String)> {
    use rdkafka::message::Message;
    let mut reasons: Vec<(String, String)> = letters
        .iter()
        .map(|m| {
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            (key, dlq_headers(m)["dlq.reason"].clone())
        })
        .collect();
    reasons.sort();
    reasons
}

/// The headers of a message, by name.
pub fn dlq_headers(m: &rdkafka::message::OwnedMessage) -> HashMap<String, String> {
    use rdkafka::message::{Headers, Message};
    m.headers()
        .map(|h| {
            h.iter()
                .map(|h| {
                    (
                        h.key.to_owned(),
                        String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A small deterministic random source for fault timing; the seed is printed
/// so a failing run can be repeated (FAULT_SEED).
pub struct Rng(u64);

impl Rng {
    pub fn from_env() -> Rng {
        let seed = std::env::var("FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        eprintln!("FAULT_SEED={seed}");
        Rng(seed | 1)
    }

    /// A fixed sequence, for data that must look random but stay the same.
    pub fn seeded(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// Uniform in `range`.
    pub fn range(&mut self, range: std::ops::Range<u64>) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        range.start + x % (range.end - range.start).max(1)
    }
}

/// Every message of `topic` up to its current end offsets (all of them,
/// repeats included), or panics after `secs`.
pub fn read_to_end(topic: &str, secs: u64) -> Vec<rdkafka::message::OwnedMessage> {
    use rdkafka::{Offset, TopicPartitionList};
    let ends = end_offsets(topic);
    let consumer: BaseConsumer = kafka_client()
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in ends.keys() {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    let mut next: HashMap<i32, i64> = ends.keys().map(|p| (*p, 0)).collect();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut out = Vec::new();
    while ends.iter().any(|(p, end)| next[p] < *end) {
        assert!(
            Instant::now() < deadline,
            "read {topic} to its end within {secs}s"
        );
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            use rdkafka::message::Message;
            next.insert(m.partition(), m.offset() + 1);
            out.push(m.detach());
        }
    }
    out
}

/// Produces `(key, value)` messages quickly (acknowledged in groups);
/// returns where each landed, in order.
pub async fn send_many(topic: &str, messages: &[(String, String)]) -> Vec<(i32, i64)> {
    let producer = producer();
    let mut at = Vec::with_capacity(messages.len());
    for chunk in messages.chunks(500) {
        let mut pending = Vec::with_capacity(chunk.len());
        for (key, value) in chunk {
            let record: FutureRecord<'_, str, str> = FutureRecord::to(topic)
                .key(key.as_str())
                .payload(value.as_str());
            pending.push(
                producer
                    .send_result(record)
                    .map_err(|(e, _)| e)
                    .expect("enqueue"),
            );
        }
        for d in pending {
            match d.await.expect("delivery") {
                Ok(d) => at.push((d.partition, d.offset)),
                Err((e, _)) => panic!("produce failed: {e}"),
            }
        }
    }
    at
}

/// A loopback port nothing listens on now (for a sink's or Prometheus's HTTP).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// GET `url`: the status code and body, or None when nothing answers.
pub fn get(url: &str) -> Option<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut response = agent.get(url).call().ok()?;
    let code = response.status().as_u16();
    let body = response.body_mut().read_to_string().ok()?;
    Some((code, body))
}
