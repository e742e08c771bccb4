// Shared by the fuzz targets: one message through the pure stages (decode,
// then validate), exactly as the pipeline runs them. Whatever the bytes,
// the answer is rows or a dead-letter reason — never a panic.

use std::sync::{Arc, OnceLock};

use timesink::catalog::{Catalog, Route};
use timesink::message::SourceMessage;
use timesink::pipeline::Bounds;
use timesink::pipeline::Outcome;
use timesink::pipeline::RowBuffer;
use timesink::pipeline::process;
use timesink::time::Timestamp;

/// The built-in tables, described as the sink runs them.
fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        timesink::config::Config::default()
            .catalog()
            .expect("the built-in tables")
    })
}

/// The table a fuzz input's first byte selects (in the contract's order of
/// data types, as the seeds are written), with the captures of a
/// per-exchange topic (`binance`).
pub fn data_type(selector: u8) -> Route {
    const ORDER: [&str; 4] = [
        "crypto_prices",
        "ohlcv_data",
        "market_analytics",
        "level1_quotes",
    ];
    let catalog = catalog();
    let name = ORDER[usize::from(selector) % ORDER.len()];
    let table = catalog.by_name(name).expect("a built-in table");
    Route {
        table: table.id,
        captures: vec![Some("binance".to_owned()); table.captures.len()],
    }
}

pub fn run(route: Route, headers: Vec<(String, Option<Vec<u8>>)>, value: &[u8]) {
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
    let catalog = catalog();
    match process(
        catalog,
        &route,
        &catalog.envelope_names(),
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
