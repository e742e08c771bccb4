//! The id a broker gives each topic (KIP-516), read with librdkafka's
//! `DescribeTopics`, which the rdkafka crate does not wrap.
//!
//! A topic deleted and created again under the same name gets a new id, and
//! its offsets start again: the id is what tells the sink that offsets stored
//! for the old topic mean nothing in the new one (see `consume`).

use std::collections::HashMap;
use std::ffi::{CStr, CString, c_char};
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::client::{Client, ClientContext};

/// Why the ids could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicIdError {
    #[error("topic name {0:?} contains a NUL byte")]
    Name(String),
    #[error("DescribeTopics: no answer within {0:?}")]
    Timeout(Duration),
    #[error("DescribeTopics: {0}")]
    Kafka(String),
}

/// The id of each of `topics` the broker describes (base64, as Kafka's tools
/// print it). A topic the broker does not know, or describes without an id
/// (a broker before KIP-516 answers zeros; an empty id is none either), is
/// missing from the answer.
pub fn describe<C: ClientContext>(
    client: &Client<C>,
    topics: &[&str],
    timeout: Duration,
) -> Result<HashMap<String, String>, TopicIdError> {
    if topics.is_empty() {
        return Ok(HashMap::new());
    }
    let names = topics
        .iter()
        .map(|t| CString::new(*t).map_err(|_| TopicIdError::Name((*t).to_owned())))
        .collect::<Result<Vec<CString>, _>>()?;
    let mut pointers: Vec<*const c_char> = names.iter().map(|n| n.as_ptr()).collect();
    let rk = client.native_ptr();
    let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: `rk` is the live client handle; every object made here is
    // destroyed below, and the names outlive the call that copies them.
    unsafe {
        let collection =
            rd::rd_kafka_TopicCollection_of_topic_names(pointers.as_mut_ptr(), pointers.len());
        let queue = rd::rd_kafka_queue_new(rk);
        let options = rd::rd_kafka_AdminOptions_new(
            rk,
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBETOPICS,
        );
        let mut errstr = [0 as c_char; 256];
        rd::rd_kafka_AdminOptions_set_request_timeout(
            options,
            timeout_ms,
            errstr.as_mut_ptr(),
            errstr.len(),
        );
        rd::rd_kafka_DescribeTopics(rk, collection, options, queue);
        // The admin request's own timeout answers first; the margin is for
        // the event to arrive.
        let event = rd::rd_kafka_queue_poll(queue, timeout_ms.saturating_add(1_000));
        let answer = if event.is_null() {
            Err(TopicIdError::Timeout(timeout))
        } else {
            let read = read_result(event);
            rd::rd_kafka_event_destroy(event);
            read
        };
        rd::rd_kafka_AdminOptions_destroy(options);
        rd::rd_kafka_queue_destroy(queue);
        rd::rd_kafka_TopicCollection_destroy(collection);
        answer
    }
}

/// The ids in a DescribeTopics result event.
///
/// # Safety
/// `event` must be a live event of a DescribeTopics request.
unsafe fn read_result(
    event: *mut rd::rd_kafka_event_t,
) -> Result<HashMap<String, String>, TopicIdError> {
    // SAFETY: the caller's promise; the descriptions, names and ids belong
    // to the event and are copied out before it is destroyed.
    unsafe {
        let code = rd::rd_kafka_event_error(event);
        // A broker that cannot describe topics gives no ids: not a failure
        // to wait out.
        if code == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__UNSUPPORTED_FEATURE {
            return Ok(HashMap::new());
        }
        if code != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Err(TopicIdError::Kafka(text(rd::rd_kafka_event_error_string(
                event,
            ))));
        }
        let result = rd::rd_kafka_event_DescribeTopics_result(event);
        if result.is_null() {
            return Err(TopicIdError::Kafka(
                "the answer is not a DescribeTopics result".into(),
            ));
        }
        let mut count = 0usize;
        let descriptions = rd::rd_kafka_DescribeTopics_result_topics(result, &mut count);
        let mut ids = HashMap::with_capacity(count);
        for i in 0..count {
            let description = *descriptions.add(i);
            if description.is_null() || !rd::rd_kafka_TopicDescription_error(description).is_null()
            {
                continue;
            }
            let id = rd::rd_kafka_TopicDescription_topic_id(description);
            if id.is_null()
                || (rd::rd_kafka_Uuid_most_significant_bits(id) == 0
                    && rd::rd_kafka_Uuid_least_significant_bits(id) == 0)
            {
                continue;
            }
            let id = text(rd::rd_kafka_Uuid_base64str(id));
            if id.is_empty() {
                continue;
            }
            ids.insert(text(rd::rd_kafka_TopicDescription_name(description)), id);
        }
        Ok(ids)
    }
}

/// A C string of librdkafka's, copied (lossily: names are UTF-8 in practice).
///
/// # Safety
/// `s` is null or a NUL-terminated string that lives through the call.
unsafe fn text(s: *const c_char) -> String {
    if s.is_null() {
        return String::new();
    }
    // SAFETY: the caller's promise.
    unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned()
}
