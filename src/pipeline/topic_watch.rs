//! Confirms, before a writer commits, that a batch's messages came from the
//! topic its partitions started on.
//!
//! A topic deleted and created again under the running sink may go on at
//! the offsets the old one had reached: librdkafka fetches on, and nothing
//! in the messages tells the two topics apart. Only the broker's topic id
//! does. So a writer asks for the id as the broker gives it *after* the
//! batch's last message was polled: if it is still the id the partitions
//! started under, every message of the batch came from that topic (ids are
//! never given twice); if not, the batch is not committed, and its
//! partitions start again from a fresh check (`consume`).
//!
//! One DescribeTopics request answers every writer waiting at the time, and
//! it runs while the writers' COPYs do, so a commit seldom waits for it.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::kafka_log::{Link, Quiet};

/// How long one DescribeTopics request may take.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The broker's answer on the topics' ids, and when it was asked.
#[derive(Debug, Clone, Default)]
struct Answer {
    /// When the request went out (epoch ms): it speaks for every message
    /// polled before.
    asked_ms: i64,
    /// The topics asked about.
    topics: Arc<BTreeSet<Arc<str>>>,
    /// Their ids, where the broker gives one.
    ids: Arc<HashMap<String, String>>,
}

/// Asks the broker for topic ids on the writers' behalf.
pub struct TopicWatch {
    client: BaseConsumer<Quiet>,
    /// Whether the brokers answer, said once per change.
    link: Arc<Link>,
    /// Every topic a writer asked about.
    wanted: Mutex<BTreeSet<Arc<str>>>,
    ask: Notify,
    answers: watch::Sender<Option<Answer>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A set of names stays consistent across a panic elsewhere.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl TopicWatch {
    /// A watch with a Kafka client of its own (the consumer's settings,
    /// TLS and SASL included, without the group), asking until `shutdown`.
    pub fn start(config: &Config, shutdown: CancellationToken) -> Result<Arc<Self>, KafkaError> {
        let mut client = super::consume::consumer_config(config);
        // A client of no group: it only asks for metadata.
        client.remove("group.id");
        client.remove("group.instance.id");
        let link = Arc::new(Link::new(&config.kafka.brokers, "topic ids"));
        let watch = Arc::new(TopicWatch {
            client: client.create_with_context(Quiet { link: link.clone() })?,
            link,
            wanted: Mutex::new(BTreeSet::new()),
            ask: Notify::new(),
            answers: watch::Sender::new(None),
        });
        tokio::spawn(watch.clone().run(shutdown));
        Ok(watch)
    }

    /// Asks whenever a writer waits, one request at a time.
    async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.ask.notified() => {}
            }
            let topics = Arc::new(lock(&self.wanted).clone());
            let asked_ms = chrono::Utc::now().timestamp_millis();
            let this = self.clone();
            let asked = topics.clone();
            let answer = tokio::task::spawn_blocking(move || {
                let names: Vec<&str> = asked.iter().map(|t| &**t).collect();
                crate::topic_ids::describe(this.client.client(), &names, DESCRIBE_TIMEOUT)
            })
            .await;
            match answer {
                Ok(Ok(ids)) => {
                    self.link.reachable();
                    self.answers.send_replace(Some(Answer {
                        asked_ms,
                        topics,
                        ids: Arc::new(ids),
                    }));
                }
                // Unanswered: the writers waiting ask again, within their
                // bound.
                Ok(Err(e)) => tracing::debug!(error = %e, "confirming topic ids failed"),
                Err(e) => tracing::debug!(error = %e, "confirming topic ids failed"),
            }
        }
    }

    /// The id the broker gives `topic` (None: it gives none), asked after
    /// `polled_ms`; None when the broker did not answer within `bound`.
    pub async fn confirm(
        &self,
        topic: &Arc<str>,
        polled_ms: i64,
        bound: Duration,
    ) -> Option<Option<String>> {
        lock(&self.wanted).insert(topic.clone());
        let mut answers = self.answers.subscribe();
        let wait = async {
            loop {
                if let Some(answer) = answers.borrow_and_update().as_ref()
                    && answer.asked_ms > polled_ms
                    && answer.topics.contains(topic)
                {
                    return answer.ids.get(&**topic).cloned();
                }
                self.ask.notify_one();
                if answers.changed().await.is_err() {
                    // The watch is gone: the sink is stopping.
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(bound, wait).await.ok()
    }
}

/// A topic replaced under a flush: the id its partitions started under and
/// the one the broker gives now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replaced {
    pub started: Arc<str>,
    pub now: String,
}

/// How long a writer waits for the broker's word before it commits without
/// it: a broker out of reach must not hold back rows already read (they
/// were fetched while it answered, before any replacement it could tell).
const CONFIRM_BOUND: Duration = Duration::from_secs(2);

/// Whether a flush's messages came from the topic its partitions started
/// on: asked as the writer starts on the flush, awaited before it commits.
pub struct Origin {
    asked: Option<tokio::task::JoinHandle<Option<Replaced>>>,
    answer: Option<Replaced>,
}

impl Origin {
    /// Asks `watch` about the topic of `fences`, for messages polled up to
    /// `polled_ms`. Nothing to ask where no partition started with an id.
    pub fn ask(
        watch: &Arc<TopicWatch>,
        topic: &Arc<str>,
        fences: &[super::write::Fence],
        polled_ms: i64,
    ) -> Origin {
        let started: Vec<Arc<str>> = fences.iter().filter_map(|f| f.topic_id.clone()).collect();
        if started.is_empty() {
            return Origin {
                asked: None,
                answer: None,
            };
        }
        let (watch, topic) = (watch.clone(), topic.clone());
        let asked = tokio::spawn(async move {
            match watch.confirm(&topic, polled_ms, CONFIRM_BOUND).await {
                // Gone or without an id now: nothing replaced it yet.
                Some(None) => None,
                Some(Some(now)) => started
                    .into_iter()
                    .find(|id| **id != *now)
                    .map(|started| Replaced { started, now }),
                None => {
                    tracing::debug!(%topic, "the broker did not confirm the topic's id in time; committing without it");
                    None
                }
            }
        });
        Origin {
            asked: Some(asked),
            answer: None,
        }
    }

    /// The replacement, if the topic was replaced (waits for the answer
    /// the first time).
    pub async fn replaced(&mut self) -> Option<&Replaced> {
        if let Some(asked) = self.asked.take() {
            self.answer = asked.await.unwrap_or(None);
        }
        self.answer.as_ref()
    }
}
