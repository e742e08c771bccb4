//! Shared by the integration tests: each test gets its own database, topics
//! and consumer group on the real PostgreSQL and broker that
//! `scripts/services.sh start` runs (TEST_DATABASE_URL and TEST_KAFKA_BROKERS,
//! else loopback on PG_PORT and KAFKA_PORT as the script uses them).
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use timesink::config::{Config, TopicsConfig};
use timesink::record::DataType;
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
        let name = unique("ts");
        let admin_db = connect(&database_url()).await;
        admin_db
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        let base = database_url();
        let url = match base.rsplit_once('/') {
            Some((head, _)) => format!("{head}/{name}"),
            None => panic!("TEST_DATABASE_URL needs a database part"),
        };
        let mut config = Config::default();
        config.kafka.brokers = brokers();
        config.kafka.group_id = format!("{name}-group");
        config.database.url = url.clone();
        config.topics = TopicsConfig {
            prices: format!("{name}-crypto-prices"),
            ohlcv: format!("{name}-crypto-ohlcv"),
            analytics: format!("{name}-crypto-analytics"),
            level1: format!("{name}-crypto-level1"),
        };
        config.shutdown_timeout_ms = 20_000;
        let world = World {
            config,
            db: connect(&url).await,
        };
        let topics: Vec<String> = DataType::ALL
            .iter()
            .map(|&t| world.config.topics.base(t).to_owned())
            .collect();
        create_topics(&topics, partitions).await;
        world
    }

    pub fn topic(&self, t: DataType) -> String {
        self.config.topics.base(t).to_owned()
    }

    pub async fn count(&self, table: &str) -> i64 {
        self.db
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .map(|r| r.get(0))
            .unwrap_or(-1)
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
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("admin client");
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
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
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

/// High watermarks of every partition of `topic`.
pub fn end_offsets(topic: &str) -> HashMap<i32, i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
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
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
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
