//! Dead letters: a message the sink cannot store goes to `<topic><suffix>`
//! with its key, value and headers byte for byte, plus `dlq.*` headers.
//!
//! A dead letter is produced and acknowledged before the source offset is
//! stored, so dead letters are at-least-once. A missing dead-letter topic is
//! created with its source topic's partition count, and created again when
//! it is deleted while the sink runs.
//!
//! A dead letter always fits: it is compressed (`dead_letter.compression`),
//! and one the dead-letter topic still refuses as too large is replaced by a
//! stub that has everything but the value (see [`stub_headers`]), so that no
//! message can hold its partition back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::config::Config;
use crate::kafka_log::{Link, Quiet};
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
    producer: FutureProducer<Quiet>,
    admin: AdminClient<Quiet>,
    /// Whether the brokers are out of reach, as the two clients see it.
    link: Arc<Link>,
    suffix: String,
    replication_factor: i32,
    /// The consumer group, repeated in `dlq.sink`.
    sink: String,
    /// Dead-letter topics known to exist and their partition counts, so
    /// metadata is asked once per topic (until one is found deleted).
    known_topics: Mutex<HashMap<String, i32>>,
}

/// Why the broker refused a dead letter, as far as the sink acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Larger than the topic takes, even compressed: send the stub.
    TooLarge,
    /// The topic is gone: create it again, then send again.
    NoTopic,
    Other,
}

fn refusal(error: &KafkaError) -> Refusal {
    match error.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageSizeTooLarge) => Refusal::TooLarge,
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
            Refusal::NoTopic
        }
        _ => Refusal::Other,
    }
}

/// The value of a dead letter too large for its topic even compressed is
/// left out; the stub says so and how large it was. Its key stays when it is
/// small (it names the record), the source's headers when they are.
const STUB_KEEPS_KEY_BYTES: usize = 1024;
const STUB_KEEPS_HEADER_BYTES: usize = 64 * 1024;

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
            .set("compression.codec", &config.dead_letter.compression)
            .set("bootstrap.servers", &config.kafka.brokers)
            // A metadata lookup must not create the dead-letter topic with the
            // broker's defaults: ensure_topic creates it like its source.
            .set("allow.auto.create.topics", "false")
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "30000");
        // Consumer-only pass-through properties would only produce warnings here.
        client.set_log_level(rdkafka::config::RDKafkaLogLevel::Error);
        // One view of the brokers for both clients: an acknowledged dead
        // letter says they are back.
        let link = Arc::new(Link::new(&config.kafka.brokers, "dead letters"));
        let quiet = || Quiet { link: link.clone() };
        let producer: FutureProducer<Quiet> = client
            .create_with_context(quiet())
            .map_err(DeadLetterError::Client)?;
        let admin: AdminClient<Quiet> = client
            .create_with_context(quiet())
            .map_err(DeadLetterError::Client)?;
        Ok(DeadLetters {
            producer,
            admin,
            link,
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
    ///
    /// They go out together; one the broker refuses as too large (it checks
    /// `max.message.bytes` of the topic per batch, compressed) goes again
    /// alone, and if refused again, as a stub without its value. A topic
    /// found deleted is forgotten, so that the writer's retry creates it again.
    pub async fn send_all(&self, letters: &[DeadLetter<'_>]) -> Result<(), DeadLetterError> {
        let mut topics: Vec<&str> = letters.iter().map(|l| &*l.message.topic).collect();
        topics.sort_unstable();
        topics.dedup();
        let mut partitions = HashMap::new();
        for source in topics {
            partitions.insert(source, self.ensure_topic(source).await?);
        }
        let sends = letters.iter().map(|l| {
            let topic = self.topic_for(&l.message.topic);
            let dlq_partitions = partitions[&*l.message.topic];
            async move {
                let sent = self.produce(l, &topic, dlq_partitions, false).await;
                (l, topic, sent)
            }
        });
        let mut too_large = Vec::new();
        let mut failed = None;
        for (letter, topic, sent) in futures::future::join_all(sends).await {
            match sent.map_err(|e| (refusal(&e), e)) {
                Ok(()) => self.link.reachable(),
                Err((Refusal::TooLarge, _)) => too_large.push((letter, topic)),
                Err((refused, e)) => {
                    if refused == Refusal::NoTopic {
                        tracing::warn!(dead_letter_topic = %topic, "dead-letter topic is gone; creating it again");
                    }
                    // Looked up again at the next try: the topic may be
                    // gone even when the error does not say so (a timeout).
                    self.lock_known().remove(&topic);
                    failed.get_or_insert_with(|| produce_error(letter, topic, e));
                }
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        for (letter, topic) in too_large {
            let dlq_partitions = partitions[&*letter.message.topic];
            let mut sent = self.produce(letter, &topic, dlq_partitions, false).await;
            if matches!(&sent, Err(e) if refusal(e) == Refusal::TooLarge) {
                let m = letter.message;
                tracing::warn!(
                    source_topic = %m.topic, partition = m.partition, offset = m.offset,
                    dead_letter_topic = %topic, value_bytes = m.value().map_or(0, <[u8]>::len),
                    "dead letter too large for its topic even compressed; sending a stub without the value"
                );
                metrics::counter!("timesink_dead_letter_stubs_total").increment(1);
                sent = self.produce(letter, &topic, dlq_partitions, true).await;
            }
            if let Err(e) = sent {
                self.lock_known().remove(&topic);
                return Err(produce_error(letter, topic, e));
            }
        }
        Ok(())
    }

    /// Produces a dead letter (or its stub) and waits for the broker's answer.
    async fn produce(
        &self,
        letter: &DeadLetter<'_>,
        topic: &str,
        dlq_partitions: i32,
        stub: bool,
    ) -> Result<(), KafkaError> {
        let m = letter.message;
        let mut headers = OwnedHeaders::new_with_capacity(m.header_count() + 8);
        let header_bytes: usize = m
            .header_pairs()
            .map(|(k, v)| k.len() + v.map_or(0, <[u8]>::len))
            .sum();
        if !stub || header_bytes <= STUB_KEEPS_HEADER_BYTES {
            for (key, value) in m.header_pairs() {
                headers = headers.insert(Header { key, value });
            }
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
        let stubbed = stub.then(|| stub_headers(m, header_bytes));
        for (key, value) in added
            .into_iter()
            .chain(stubbed.iter().flatten().map(|(k, v)| (*k, v.as_str())))
        {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
        if m.partition < dlq_partitions {
            record = record.partition(m.partition);
        }
        if let Some(key) = m.key().filter(|k| !stub || k.len() <= STUB_KEEPS_KEY_BYTES) {
            record = record.key(key);
        }
        if let Some(value) = m.value().filter(|_| !stub) {
            record = record.payload(value);
        }
        if let Some(t) = m.timestamp_ms {
            record = record.timestamp(t);
        }
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map(|_| ())
            .map_err(|(e, _)| e)
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

fn produce_error(letter: &DeadLetter<'_>, topic: String, source: KafkaError) -> DeadLetterError {
    DeadLetterError::Produce {
        topic,
        partition: letter.message.partition,
        offset: letter.message.offset,
        source,
    }
}

/// The headers a stub adds: that it is one, and what it leaves out.
fn stub_headers(m: &SourceMessage, header_bytes: usize) -> Vec<(&'static str, String)> {
    let mut added = vec![
        ("dlq.stub", "true".to_owned()),
        (
            "dlq.value_bytes",
            m.value().map_or(0, <[u8]>::len).to_string(),
        ),
    ];
    if let Some(key) = m.key().filter(|k| k.len() > STUB_KEEPS_KEY_BYTES) {
        added.push(("dlq.key_bytes", key.len().to_string()));
    }
    if header_bytes > STUB_KEEPS_HEADER_BYTES {
        added.push(("dlq.header_bytes", header_bytes.to_string()));
    }
    added
}
