// Shared by the fuzz targets: one message through the pure stages (decode,
// then validate), exactly as the pipeline runs them. Whatever the bytes,
// the answer is rows or a dead-letter reason — never a panic.

use std::sync::Arc;

use timesink::batch::Outcome;
use timesink::copy_format::RowBuffer;
use timesink::decode::Bounds;
use timesink::message::SourceMessage;
use timesink::pipeline::process;
use timesink::record::{DataType, Timestamp};

/// The data type a fuzz input's first byte selects.
pub fn data_type(selector: u8) -> DataType {
    DataType::ALL[usize::from(selector) % DataType::ALL.len()]
}

pub fn run(data_type: DataType, headers: Vec<(String, Option<Vec<u8>>)>, value: &[u8]) {
    let message = SourceMessage::new(
        Arc::from("crypto-fuzz"),
        0,
        0,
        None,
        Some(value),
        headers.iter().map(|(k, v)| (k.as_str(), v.as_deref())),
    );
    // 2026-11-23T00:00:00Z, so that timestamps near the contract's examples validate.
    let now = Timestamp(1_795_392_000_000_000);
    // A row already in the buffer, as when a batch is open: it stays.
    let mut rows = RowBuffer::default();
    rows.push_encoded(b"a row of another message");
    match process(
        data_type,
        Some("binance"),
        &message,
        &Bounds::default(),
        now,
        &mut rows,
    ) {
        // An empty JSON array is valid and carries no rows.
        Outcome::Rows(n) => assert_eq!(rows.len(), 1 + n),
        Outcome::DeadLetter(rejection) => {
            assert_eq!(rows.len(), 1, "a dead letter leaves no rows behind");
            let reason = &rejection.reason;
            assert!(!reason.is_empty());
            assert!(!reason.contains('\n'), "dlq.reason is one line: {reason:?}");
        }
    }
}

pub fn header(name: &str, value: &str) -> (String, Option<Vec<u8>>) {
    (name.to_owned(), Some(value.as_bytes().to_vec()))
}
