//! What librdkafka says, in the sink's log, without a flood: while the
//! brokers are out of reach librdkafka reports every reconnect attempt (tens
//! of lines a second); the sink says so once per change of state, with the
//! endpoint, and keeps the attempts at debug level.

use std::sync::atomic::{AtomicBool, Ordering};

use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// Whether a librdkafka error says the brokers cannot be reached (or
/// spoken to: TLS, authentication), as opposed to one about a request.
pub fn is_unreachable(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::Resolve
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::SSL
                | RDKafkaErrorCode::Authentication
        )
    )
}

/// One client's view of the brokers: reachable or not, said once per change.
#[derive(Debug)]
pub struct Link {
    /// `bootstrap.servers`.
    brokers: String,
    /// Which of the sink's clients this is (consumer, dead letters).
    client: &'static str,
    down: AtomicBool,
}

impl Link {
    pub fn new(brokers: &str, client: &'static str) -> Link {
        Link {
            brokers: brokers.to_owned(),
            client,
            down: AtomicBool::new(false),
        }
    }

    /// An error librdkafka reported (it retries on its own).
    pub fn error(&self, error: &KafkaError, reason: &str) {
        if !is_unreachable(error) {
            tracing::warn!(client = self.client, %error, reason, "Kafka client error");
        } else if !self.down.swap(true, Ordering::Relaxed) {
            tracing::error!(
                client = self.client, brokers = %self.brokers, %error, reason,
                "Kafka brokers unreachable; retrying (one line until they are back)"
            );
        } else {
            tracing::debug!(client = self.client, %error, reason, "Kafka brokers still unreachable");
        }
    }

    /// The brokers answered (statistics, an acknowledged message).
    pub fn reachable(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!(client = self.client, brokers = %self.brokers, "Kafka brokers reachable again");
        }
    }
}

/// librdkafka's own log lines, at their level; a failed connection
/// (`FAIL`) at debug, since [`Link`] reports the state.
pub fn log(level: RDKafkaLogLevel, fac: &str, message: &str) {
    match level {
        _ if fac == "FAIL" => tracing::debug!(target: "librdkafka", fac, "{message}"),
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => tracing::error!(target: "librdkafka", fac, "{message}"),
        RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", fac, "{message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", fac, "{message}")
        }
        RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", fac, "{message}"),
    }
}

/// The context of the sink's producer, admin and topic-id clients.
pub struct Quiet {
    pub link: std::sync::Arc<Link>,
}

impl ClientContext for Quiet {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.link.error(&error, reason);
    }
}

/// The topic-id watch is a consumer of no group: nothing to rebalance.
impl rdkafka::consumer::ConsumerContext for Quiet {}
