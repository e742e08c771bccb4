//! Dead letters: a message the sink cannot store goes to `<topic><suffix>`
//! with its key, value and headers byte for byte, plus `dlq.*` headers.
//!
//! A dead letter is produced and acknowledged before the source offset is
//! stored, so dead letters are at-least-once. A missing dead-letter topic is
//! created with its source topic's partition count.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::config::Config;
use crate::message::SourceMessage;

/// How long to wait for broker metadata and topic creation.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("creating the dead-letter producer: {0}")]
    Client(#[source] KafkaError),
    #[error("dead-letter topic {topic}: {source}")]
    Topic {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("dead letter for {topic}[{partition}]@{offset} not acknowledged: {source}")]
    Produce {
        topic: String,
        partition: i32,
        offset: i64,
        #[source]
        source: KafkaError,
    },
}

/// Produces dead letters; shared by the writers.
pub struct DeadLetters {
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    suffix: String,
    replication_factor: i32,
    /// The consumer group, repeated in `dlq.sink`.
    sink: String,
    /// Dead-letter topics known to exist and their partition counts, so
    /// metadata is asked once per topic.
    known_topics: Mutex<HashMap<String, i32>>,
}

/// One message to dead-letter and why.
pub struct DeadLetter<'a> {
    pub message: &'a SourceMessage,
    pub reason: &'a str,
}

impl DeadLetters {
    pub fn new(config: &Config) -> Result<DeadLetters, DeadLetterError> {
        let mut client = ClientConfig::new();
        // A dead letter carries whatever the consumer received, oversized
        // values included (librdkafka's receive limit is 100 MB).
        client.set("message.max.bytes", "104857600");
        for (k, v) in &config.kafka.properties {
            client.set(k, v);
        }
        client
            .set("bootstrap.servers", &config.kafka.brokers)
            // A metadata lookup must not create the dead-letter topic with the
            // broker's defaults: ensure_topic creates it like its source.
            .set("allow.auto.create.topics", "false")
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "30000");
        // Consumer-only pass-through properties would only produce warnings here.
        client.set_log_level(rdkafka::config::RDKafkaLogLevel::Error);
        let producer: FutureProducer = client.create().map_err(DeadLetterError::Client)?;
        let admin: AdminClient<DefaultClientContext> =
            client.create().map_err(DeadLetterError::Client)?;
        Ok(DeadLetters {
            producer,
            admin,
            suffix: config.dead_letter.suffix.clone(),
            replication_factor: config.dead_letter.replication_factor,
            sink: config.kafka.group_id.clone(),
            known_topics: Mutex::new(HashMap::new()),
        })
    }

    /// The dead-letter topic of a source topic.
    pub fn topic_for(&self, source: &str) -> String {
        format!("{source}{}", self.suffix)
    }

    /// Produces every dead letter and waits until each is acknowledged.
    pub async fn send_all(&self, letters: &[DeadLetter<'_>]) -> Result<(), DeadLetterError> {
        let mut topics: Vec<&str> = letters.iter().map(|l| &*l.message.topic).collect();
        topics.sort_unstable();
        topics.dedup();
        let mut partitions = HashMap::new();
        for source in topics {
            partitions.insert(source, self.ensure_topic(source).await?);
        }
        let sends = letters
            .iter()
            .map(|l| self.send(l, partitions[&*l.message.topic]));
        for result in futures::future::join_all(sends).await {
            result?;
        }
        Ok(())
    }

    /// Sends one dead letter to the same partition number as its source where
    /// the dead-letter topic has it (it has when the sink created it).
    async fn send(
        &self,
        letter: &DeadLetter<'_>,
        dlq_partitions: i32,
    ) -> Result<(), DeadLetterError> {
        let m = letter.message;
        let topic = self.topic_for(&m.topic);
        let mut headers = OwnedHeaders::new_with_capacity(m.header_count() + 6);
        for (key, value) in m.header_pairs() {
            headers = headers.insert(Header { key, value });
        }
        // One line, human readable.
        let reason: String = letter
            .reason
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let partition = m.partition.to_string();
        let offset = m.offset.to_string();
        let timestamp = m.timestamp_ms.map(|t| t.to_string());
        let mut added = vec![
            ("dlq.reason", reason.as_str()),
            ("dlq.topic", &*m.topic),
            ("dlq.partition", partition.as_str()),
            ("dlq.offset", offset.as_str()),
        ];
        if let Some(t) = &timestamp {
            added.push(("dlq.timestamp", t.as_str()));
        }
        added.push(("dlq.sink", self.sink.as_str()));
        for (key, value) in added {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topic).headers(headers);
        if m.partition < dlq_partitions {
            record = record.partition(m.partition);
        }
        if let Some(key) = m.key() {
            record = record.key(key);
        }
        if let Some(value) = m.value() {
            record = record.payload(value);
        }
        if let Some(t) = m.timestamp_ms {
            record = record.timestamp(t);
        }
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map(|_| ())
            .map_err(|(source, _)| DeadLetterError::Produce {
                topic,
                partition: m.partition,
                offset: m.offset,
                source,
            })
    }

    /// Creates the dead-letter topic of `source` if it is missing, with the
    /// source's partition count; returns its partition count.
    async fn ensure_topic(&self, source: &str) -> Result<i32, DeadLetterError> {
        let topic = self.topic_for(source);
        if let Some(&n) = self.lock_known().get(&topic) {
            return Ok(n);
        }
        let topic_error = |e: KafkaError| DeadLetterError::Topic {
            topic: topic.clone(),
            source: e,
        };
        let client = self.producer.client();
        let partitions_of = |name: &str| -> Result<Option<i32>, KafkaError> {
            let metadata = client.fetch_metadata(Some(name), ADMIN_TIMEOUT)?;
            Ok(metadata
                .topics()
                .iter()
                .find(|t| t.name() == name && t.error().is_none() && !t.partitions().is_empty())
                .map(|t| t.partitions().len() as i32))
        };
        // Metadata calls block: keep them off the async workers.
        let exists = tokio::task::block_in_place(|| partitions_of(&topic)).map_err(topic_error)?;
        let count = if let Some(n) = exists {
            n
        } else {
            let partitions = tokio::task::block_in_place(|| partitions_of(source))
                .map_err(topic_error)?
                .unwrap_or(1);
            // The source's message size limit, so every message it holds fits.
            let max_message_bytes = self.max_message_bytes_of(source).await;
            let mut new_topic = NewTopic::new(
                &topic,
                partitions,
                TopicReplication::Fixed(self.replication_factor),
            );
            if let Some(limit) = max_message_bytes.as_deref() {
                new_topic = new_topic.set("max.message.bytes", limit);
            }
            let results = self
                .admin
                .create_topics(
                    [&new_topic],
                    &AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT)),
                )
                .await
                .map_err(topic_error)?;
            for result in results {
                match result {
                    Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((_, code)) => return Err(topic_error(KafkaError::AdminOp(code))),
                }
            }
            tracing::info!(topic = %topic, partitions, "created dead-letter topic");
            partitions
        };
        self.lock_known().insert(topic, count);
        Ok(count)
    }

    /// The source topic's `max.message.bytes`, when set on the topic and
    /// readable (None leaves the broker's default).
    async fn max_message_bytes_of(&self, source: &str) -> Option<String> {
        let resources = self
            .admin
            .describe_configs(
                [&ResourceSpecifier::Topic(source)],
                &AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT)),
            )
            .await
            .ok()?;
        let resource = resources.into_iter().next()?.ok()?;
        let entry = resource.get("max.message.bytes")?;
        if entry.is_default {
            return None;
        }
        entry.value.clone()
    }

    fn lock_known(&self) -> std::sync::MutexGuard<'_, HashMap<String, i32>> {
        // A poisoned set of names is still a valid set of names.
        self.known_topics.lock().unwrap_or_else(|p| p.into_inner())
    }
}
