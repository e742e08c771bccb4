//! The TimescaleDB path of the schema: hypertables on `time`, compression
//! segmented by the key columns, compression policies, applied idempotently,
//! and the sink writing into the hypertables (COPY and the merge path).
//!
//! TimescaleDB is not packaged for Debian; `scripts/services.sh` builds it
//! from the platform's shared folder when that is beside the project. When
//! the extension is not installed and preloaded in the test cluster, each
//! test prints SKIPPED and returns, unless `REQUIRE_TIMESCALEDB=1` (CI)
//! makes that a failure.

mod common;

use common::*;
use std::sync::Arc;
use timesink::catalog::schema;
use timesink::config::TimescaleMode;
use timesink::ops::health::Health;
use timesink::ops::produce::DataType;
use timesink::pipeline;
use tokio_util::sync::CancellationToken;

/// Whether the cluster can run TimescaleDB (installed and preloaded, as
/// `scripts/services.sh` does when it finds it); prints SKIPPED when not.
async fn timescaledb_installed(world: &World, test: &str) -> bool {
    let row = world
        .db
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'), \
                    current_setting('shared_preload_libraries') LIKE '%timescaledb%'",
            &[],
        )
        .await
        .expect("query the extension");
    let (available, preloaded): (bool, bool) = (row.get(0), row.get(1));
    let required = std::env::var("REQUIRE_TIMESCALEDB").is_ok_and(|v| v == "1");
    assert!(
        !required || (available && preloaded),
        "REQUIRE_TIMESCALEDB=1 but the test cluster has timescaledb {} (run ../shared/timescaledb/install.sh, then restart with scripts/services.sh)",
        if available {
            "installed, not preloaded"
        } else {
            "not installed"
        }
    );
    if !available {
        eprintln!("SKIPPED {test}: the timescaledb extension is not installed in the test cluster");
    } else if !preloaded {
        eprintln!("SKIPPED {test}: timescaledb is installed but not in shared_preload_libraries");
    }
    available && preloaded
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hypertables_with_compression_are_created_idempotently() {
    let world = World::new(1).await;
    if !timescaledb_installed(
        &world,
        "hypertables_with_compression_are_created_idempotently",
    )
    .await
    {
        return;
    }
    let mut client = connect(&world.config.database.url).await;
    for _ in 0..2 {
        let catalog = world.config.catalog().expect("catalog");
        let report = schema::apply(&mut client, TimescaleMode::Required, &catalog)
            .await
            .expect("schema applies, twice");
        assert!(report.timescaledb);
    }
    let hypertables: Vec<String> = world
        .db
        .query(
            "SELECT hypertable_name::text FROM timescaledb_information.hypertables \
             WHERE compression_enabled ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        hypertables,
        [
            "crypto_prices",
            "level1_quotes",
            "market_analytics",
            "ohlcv_data"
        ]
    );
    // Segment-by columns, in order, per hypertable.
    let segments: Vec<(String, String)> = world
        .db
        .query(
            "SELECT hypertable_name::text, string_agg(attname::text, ',' ORDER BY segmentby_column_index) \
             FROM timescaledb_information.compression_settings \
             WHERE segmentby_column_index IS NOT NULL GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expected = [
        ("crypto_prices", "coin_id,exchange_id"),
        // The contract: sequence orders level-1 rows, it does not segment them.
        ("level1_quotes", "exchange_id,symbol"),
        ("market_analytics", "source"),
        ("ohlcv_data", "coin_id,exchange_id,timeframe"),
    ];
    assert_eq!(
        segments,
        expected
            .iter()
            .map(|(t, s)| (t.to_string(), s.to_string()))
            .collect::<Vec<_>>()
    );
    let policies: i64 = world
        .db
        .query_one(
            "SELECT count(*) FROM timescaledb_information.jobs WHERE proc_name = 'policy_compression'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(policies, 4, "one compression policy per hypertable");
    let level1_order: String = world
        .db
        .query_one(
            "SELECT string_agg(attname::text || CASE WHEN orderby_asc THEN '' ELSE ' DESC' END, ',' ORDER BY orderby_column_index) \
             FROM timescaledb_information.compression_settings \
             WHERE hypertable_name = 'level1_quotes' AND orderby_column_index IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(level1_order, "time DESC,sequence");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_writes_into_hypertables_and_merges_duplicates() {
    let world = World::new(1).await;
    if !timescaledb_installed(
        &world,
        "the_sink_writes_into_hypertables_and_merges_duplicates",
    )
    .await
    {
        return;
    }
    writes_and_merges(&world, TimescaleMode::Required).await;
    let chunks: i64 = world
        .db
        .query_one(
            "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'crypto_prices'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(chunks >= 2, "rows over 20 days span chunks, got {chunks}");
}

/// The plain-PostgreSQL path stays tested on a cluster that has TimescaleDB:
/// `timescaledb = "off"` never touches the extension, and the same rows
/// land in plain tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_timescaledb_off_the_sink_writes_plain_tables() {
    let world = World::new(1).await;
    writes_and_merges(&world, TimescaleMode::Off).await;
    let extension: i64 = world
        .db
        .query_one(
            "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        extension, 0,
        "timescaledb = off must not create the extension"
    );
}

/// 20 prices over 20 days, then the same keys with a new price: 20 rows
/// hold the later one, and the stored offset is 40.
async fn writes_and_merges(world: &World, mode: TimescaleMode) {
    let mut config = world.config.clone();
    config.database.timescaledb = mode;
    let topic = world.topic(DataType::Price);
    let producer = producer();
    let price = |coin: &str, usd: &str, day: u32| {
        format!(
            r#"{{"coinId":"{coin}","symbol":"S","usdPrice":"{usd}","lastUpdated":"2026-11-{day:02}T12:00:00Z","source":"t"}}"#
        )
    };
    // Rows spread over several days (several chunks), then the same keys again.
    for day in 1..=20 {
        send(
            &producer,
            &topic,
            None,
            price("a", "1.5", day).as_bytes(),
            &[],
        )
        .await;
    }
    let shutdown = CancellationToken::new();
    let sink = tokio::spawn(pipeline::run(
        config.clone(),
        Arc::new(Health::new(config.health.clone())),
        shutdown.clone(),
    ));
    eventually(60, "first rows", || async {
        world.count("crypto_prices").await == 20
    })
    .await;
    for day in 1..=20 {
        send(
            &producer,
            &topic,
            None,
            price("a", "2.75", day).as_bytes(),
            &[],
        )
        .await;
    }
    eventually(60, "the later versions", || async {
        world
            .db
            .query_one(
                "SELECT count(*) FILTER (WHERE usd_price = 2.75) FROM crypto_prices",
                &[],
            )
            .await
            .map(|r| r.get::<_, i64>(0) == 20)
            .unwrap_or(false)
    })
    .await;
    shutdown.cancel();
    sink.await
        .expect("sink task")
        .expect("sink ran without error");
    assert_eq!(world.count("crypto_prices").await, 20);
    assert_eq!(
        world.stored_offsets().await.get(&(topic.clone(), 0)),
        Some(&40)
    );
}
