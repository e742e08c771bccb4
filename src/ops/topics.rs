//! `topics.yaml` and `timesink topics create`: the platform's topics, and
//! per-exchange siblings with half the partitions and 1.5× the retention.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use serde::Deserialize;

use crate::config::KafkaConfig;

/// The file's shape.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicsFile {
    /// Replication factor of every topic created.
    pub replication_factor: i32,
    pub topics: BTreeMap<String, TopicSpec>,
}

/// One base topic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSpec {
    /// For the contract's topics: `price`, `ohlcv`, `analytics` or
    /// `level1` (informational; the tables say what a topic feeds).
    #[serde(default)]
    pub data_type: Option<String>,
    pub partitions: i32,
    /// Topic configuration, as Kafka names it.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TopicsError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("exchange id {0:?}: use letters, digits, '_' or '-'")]
    Exchange(String),
    #[error("creating topics: {0}")]
    Kafka(#[from] KafkaError),
    #[error("creating topic {topic}: {code}")]
    Create {
        topic: String,
        code: RDKafkaErrorCode,
    },
}

/// A topic to create.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub name: String,
    pub partitions: i32,
    pub config: BTreeMap<String, String>,
}

impl TopicsFile {
    pub fn load(path: &Path) -> Result<TopicsFile, TopicsError> {
        let text = std::fs::read_to_string(path).map_err(|source| TopicsError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let file: TopicsFile = serde_norway::from_str(&text).map_err(|e| TopicsError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        for (name, spec) in &file.topics {
            if let Some(data_type) = &spec.data_type
                && crate::ops::produce::DataType::from_name(data_type).is_none()
            {
                return Err(TopicsError::Parse {
                    path: path.display().to_string(),
                    message: format!(
                        "topics.{name}.data_type: {data_type:?} is not price, ohlcv, analytics or level1"
                    ),
                });
            }
            if spec.partitions < 1 {
                return Err(TopicsError::Parse {
                    path: path.display().to_string(),
                    message: format!("topics.{name}.partitions: must be at least 1"),
                });
            }
        }
        Ok(file)
    }

    /// The base topics and, for each exchange, `<topic>-<exchange>`.
    pub fn plan(&self, exchanges: &[String]) -> Result<Vec<Planned>, TopicsError> {
        let mut planned = Vec::new();
        let min_isr = self.replication_factor.min(2).to_string();
        for (name, spec) in &self.topics {
            let mut config = spec.config.clone();
            config.insert("min.insync.replicas".into(), min_isr.clone());
            planned.push(Planned {
                name: name.clone(),
                partitions: spec.partitions,
                config: config.clone(),
            });
            for exchange in exchanges {
                if exchange.is_empty()
                    || !exchange
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                {
                    return Err(TopicsError::Exchange(exchange.clone()));
                }
                let mut config = config.clone();
                if let Some(ms) = config
                    .get("retention.ms")
                    .and_then(|v| v.parse::<i64>().ok())
                {
                    config.insert("retention.ms".into(), (ms * 3 / 2).to_string());
                }
                planned.push(Planned {
                    name: format!("{name}-{exchange}"),
                    partitions: (spec.partitions / 2).max(1),
                    config,
                });
            }
        }
        Ok(planned)
    }
}

/// Creates the planned topics; existing ones are left as they are.
/// Returns the names created now.
pub async fn create(
    kafka: &KafkaConfig,
    replication_factor: i32,
    planned: &[Planned],
) -> Result<Vec<String>, TopicsError> {
    let mut client = ClientConfig::new();
    for (k, v) in &kafka.properties {
        client.set(k, v);
    }
    client.set("bootstrap.servers", &kafka.brokers);
    let admin: AdminClient<DefaultClientContext> = client.create()?;
    let new_topics: Vec<NewTopic<'_>> = planned
        .iter()
        .map(|p| {
            p.config.iter().fold(
                NewTopic::new(
                    &p.name,
                    p.partitions,
                    TopicReplication::Fixed(replication_factor),
                ),
                |t, (k, v)| t.set(k, v),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let mut created = Vec::new();
    for result in admin.create_topics(new_topics.iter(), &options).await? {
        match result {
            Ok(name) => created.push(name),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(TopicsError::Create { topic, code }),
        }
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_file_matches_the_contract() {
        let file = TopicsFile::load(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/topics.yaml"
        )))
        .unwrap();
        let partitions: Vec<(&str, i32)> = file
            .topics
            .iter()
            .map(|(n, s)| (n.as_str(), s.partitions))
            .collect();
        assert_eq!(
            partitions,
            [
                ("crypto-analytics", 6),
                ("crypto-level1", 48),
                ("crypto-ohlcv", 12),
                ("crypto-prices", 24)
            ]
        );
        let plan = file.plan(&["binance".into()]).unwrap();
        let binance = plan
            .iter()
            .find(|p| p.name == "crypto-prices-binance")
            .unwrap();
        assert_eq!(binance.partitions, 12);
        assert_eq!(binance.config["retention.ms"], "907200000");
        assert_eq!(binance.config["compression.type"], "lz4");
        assert!(file.plan(&["bad.name".into()]).is_err());
    }
}
