//! The sink's own CPU per message, without Kafka or PostgreSQL: decode,
//! validate and COPY-encode the messages `timesink produce` makes, per
//! table and encoding, as the consumer loop does (`pipeline::process`).
//!
//! `cargo bench --bench pipeline` prints ns per message, the fastest of
//! BENCH_PASSES (7) passes over BENCH_MESSAGES (100000) messages each: on
//! a shared machine the fastest pass is the one least disturbed.
//! BENCH_TABLE keeps one table.

use std::sync::Arc;
use std::time::Instant;

use timesink::catalog::Catalog;
use timesink::message::SourceMessage;
use timesink::ops::produce::{DataType, Encoding, Generator, Topics};
use timesink::pipeline::Outcome;
use timesink::pipeline::RowBuffer;
use timesink::pipeline::process;
use timesink::time::Timestamp;

/// As in the binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let config = timesink::config::Config::default();
    let catalog: Catalog = config.catalog().expect("the built-in catalog builds");
    let bounds = config.bounds();
    let envelopes = catalog.envelope_names();
    let suffix = &config.dead_letter.suffix;
    // `cargo bench` passes `--bench`; under `cargo test` one small pass
    // shows that every table and encoding still goes through.
    let timed = std::env::args().any(|a| a == "--bench");
    let messages = if timed {
        env("BENCH_MESSAGES", 100_000)
    } else {
        100
    };
    let passes = if timed { env("BENCH_PASSES", 7) } else { 1 };
    let now = Timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("a clock after 1970")
            .as_micros() as i64,
    );
    println!("| table | encoding | ns/message |");
    println!("|---|---|---|");
    let only = std::env::var("BENCH_TABLE").ok();
    for data_type in DataType::ALL {
        if only.as_deref().is_some_and(|t| t != data_type.table()) {
            continue;
        }
        for encoding in [Encoding::Json, Encoding::Bincode, Encoding::Lz4Json] {
            let mut generator = Generator::new(
                Topics::of(&catalog),
                vec![],
                vec![data_type],
                vec![encoding],
                now,
            );
            let batch: Vec<(SourceMessage, Arc<_>)> = (0..messages)
                .map(|i| {
                    let g = generator.next_message();
                    let route = catalog.route(&g.topic, suffix).expect("a routed topic");
                    let headers: Vec<(&str, Option<&[u8]>)> = g
                        .headers
                        .iter()
                        .map(|(n, v)| (*n, Some(v.as_bytes())))
                        .collect();
                    let mut m = SourceMessage::new(
                        g.topic.as_str().into(),
                        0,
                        i as i64,
                        Some(g.key.as_bytes()),
                        Some(&g.value),
                        headers,
                    );
                    m.timestamp_ms = Some(now.micros() / 1000);
                    (m, Arc::new(route))
                })
                .collect();
            let mut times = Vec::with_capacity(passes);
            let mut rows = RowBuffer::default();
            for _ in 0..passes {
                rows.clear();
                let start = Instant::now();
                for (message, route) in &batch {
                    let outcome = process(
                        &catalog, route, &envelopes, message, &bounds, now, &mut rows,
                    );
                    assert!(matches!(outcome, Outcome::Rows(_)), "{outcome:?}");
                }
                times.push(start.elapsed().as_nanos() as f64 / messages as f64);
            }
            times.sort_by(f64::total_cmp);
            println!("| {} | {encoding:?} | {:.0} |", data_type.table(), times[0]);
        }
    }
}
