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
use timesink::config::{Config, TimescaleMode};
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

/// A world whose database has the sink's tables on TimescaleDB, and its
/// configuration requiring TimescaleDB; None (SKIPPED printed) without it.
async fn timescaledb_world(partitions: i32, test: &str) -> Option<(World, Config)> {
    let world = World::new(partitions).await;
    if !timescaledb_installed(&world, test).await {
        return None;
    }
    let mut config = world.config.clone();
    config.database.timescaledb = TimescaleMode::Required;
    let mut client = connect(&config.database.url).await;
    schema::apply(
        &mut client,
        TimescaleMode::Required,
        &config.catalog().expect("catalog"),
        timesink::catalog::schema::Step::Owner,
    )
    .await
    .expect("schema");
    Some((world, config))
}

/// The sink, running in the test's process.
struct Sink {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), pipeline::RunError>>,
}

impl Sink {
    fn start(config: &Config) -> Sink {
        Sink::start_with(config, Arc::new(Health::new(config.health.clone())))
    }

    /// Starts it reporting to `health`, for a test to read its status.
    fn start_with(config: &Config, health: Arc<Health>) -> Sink {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(pipeline::run(config.clone(), health, shutdown.clone()));
        Sink { shutdown, task }
    }

    /// Stops it; it must have run without error.
    async fn stop(self) {
        self.shutdown.cancel();
        self.task
            .await
            .expect("sink task")
            .expect("sink ran without error");
    }
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
        let report = schema::apply(
            &mut client,
            TimescaleMode::Required,
            &catalog,
            timesink::catalog::schema::Step::Owner,
        )
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
    // The candles need TimescaleDB: said plainly, and the rest goes on.
    let mut client = connect(&world.config.database.url).await;
    let report = schema::apply(
        &mut client,
        TimescaleMode::Off,
        &world.config.catalog().expect("catalog"),
        timesink::catalog::schema::Step::Owner,
    )
    .await
    .expect("plain tables");
    assert!(!report.timescaledb);
    assert_eq!(
        report.left_alone,
        [
            "continuous aggregates (crypto_candles_1d, crypto_candles_1h, crypto_candles_1m) need TimescaleDB, which this database does not use: going on without them"
        ]
    );
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
    let sink = Sink::start(&config);
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
    sink.stop().await;
    assert_eq!(world.count("crypto_prices").await, 20);
    assert_eq!(
        world.stored_offsets().await.get(&(topic.clone(), 0)),
        Some(&40)
    );
}

/// What the database holds of the policies and aggregates, read directly:
/// (relation, setting, value) rows, sorted.
async fn timescaledb_settings(world: &World) -> Vec<String> {
    let rows = world
        .db
        .query(
            "SELECT coalesce(x::text, 'NULL') FROM ( \
             SELECT hypertable_name || ' ' || proc_name || ' ' || \
                    coalesce(config->>'compress_after', config->>'drop_after', \
                             coalesce(config->>'start_offset', 'null') || '..' || (config->>'end_offset') || ' every ' || schedule_interval::text) \
               FROM timescaledb_information.jobs WHERE hypertable_name IS NOT NULL \
             UNION ALL \
             SELECT hypertable_name || ' chunk ' || time_interval::text FROM timescaledb_information.dimensions \
             UNION ALL \
             SELECT hypertable::text || ' segment ' || segmentby || ' order ' || orderby \
               FROM timescaledb_information.hypertable_compression_settings \
             UNION ALL \
             SELECT view_name || ' materialized_only ' || materialized_only::text \
               FROM timescaledb_information.continuous_aggregates \
             ) AS u(x) ORDER BY 1",
            &[],
        )
        .await
        .expect("read TimescaleDB's settings");
    rows.iter().map(|r| r.get(0)).collect()
}

/// Policies are configuration: applied at start, nothing done when the
/// database holds them, changed when the configuration changes, removed
/// when it no longer asks for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_follow_the_configuration_at_every_start() {
    let world = World::new(1).await;
    if !timescaledb_installed(&world, "policies_follow_the_configuration_at_every_start").await {
        return;
    }
    let start = |config: Config| {
        let url = config.database.url.clone();
        async move {
            let mut client = connect(&url).await;
            schema::prepare(
                &mut client,
                TimescaleMode::Required,
                &config.catalog().expect("catalog"),
            )
            .await
            .expect("start")
        }
    };
    let first = start(world.config.clone()).await;
    assert!(first.created);
    let defaults = timescaledb_settings(&world).await;
    for expected in [
        "crypto_prices policy_compression 7 days",
        "crypto_prices chunk 7 days",
        "crypto_candles_1m policy_refresh_continuous_aggregate null..00:01:00 every 00:01:00",
        "crypto_candles_1h policy_refresh_continuous_aggregate null..01:00:00 every 00:10:00",
        "crypto_candles_1d policy_refresh_continuous_aggregate null..1 day every 01:00:00",
        "crypto_candles_1m materialized_only false",
        "level1_quotes segment exchange_id,symbol order \"time\" DESC,sequence",
    ] {
        assert!(
            defaults.iter().any(|s| s == expected),
            "{expected} in {defaults:#?}"
        );
    }
    assert!(
        !defaults.iter().any(|s| s.contains("policy_retention")),
        "no retention unless configured: {defaults:#?}"
    );
    let again = start(world.config.clone()).await;
    assert!(!again.created);
    assert_eq!(again.changed, Vec::<String>::new(), "nothing to change");
    assert_eq!(again.left_alone, Vec::<String>::new());

    let mut changed = world.config.clone();
    let prices = changed.tables.get_mut("crypto_prices").expect("built-in");
    prices.timescaledb.chunk_interval = Some("1 day".into());
    prices.timescaledb.compress_after = Some("3 days".into());
    prices.timescaledb.segment_by = vec!["coin_id".into()];
    prices.timescaledb.retention = Some("90 days".into());
    for a in prices.aggregates.values_mut() {
        a.refresh.start_offset = Some("30 days".into());
    }
    prices
        .aggregates
        .get_mut("crypto_candles_1m")
        .expect("built-in")
        .real_time = false;
    changed
        .tables
        .get_mut("level1_quotes")
        .expect("built-in")
        .timescaledb
        .compress_after = None;
    // A table the sink did not just create changes only where the
    // configuration names the key: the same settings as defaults of the
    // code, not named, change nothing.
    let unnamed = start(changed.clone()).await;
    assert_eq!(unnamed.changed, Vec::<String>::new(), "nothing named yet");
    assert_eq!(unnamed.left_alone.len(), 9, "{:#?}", unnamed.left_alone);
    for key in [
        "tables.crypto_prices.timescaledb.chunk_interval",
        "tables.crypto_prices.timescaledb.compress_after",
        "tables.crypto_prices.timescaledb.segment_by",
        "tables.crypto_prices.timescaledb.retention",
        "tables.crypto_prices.aggregates.crypto_candles_1m.refresh.start_offset",
        "tables.crypto_prices.aggregates.crypto_candles_1h.refresh.start_offset",
        "tables.crypto_prices.aggregates.crypto_candles_1d.refresh.start_offset",
        "tables.crypto_prices.aggregates.crypto_candles_1m.real_time",
        "tables.level1_quotes.timescaledb.compress_after",
    ] {
        changed.named.insert(key);
    }
    let report = start(changed.clone()).await;
    assert_eq!(report.changed.len(), 9, "{:#?}", report.changed);
    let now = timescaledb_settings(&world).await;
    for expected in [
        "crypto_prices policy_compression 3 days",
        "crypto_prices policy_retention 90 days",
        "crypto_prices chunk 1 day",
        "crypto_prices segment coin_id order \"time\" DESC",
        "crypto_candles_1m policy_refresh_continuous_aggregate 30 days..00:01:00 every 00:01:00",
        "crypto_candles_1h policy_refresh_continuous_aggregate 30 days..01:00:00 every 00:10:00",
        "crypto_candles_1d policy_refresh_continuous_aggregate 30 days..1 day every 01:00:00",
        "crypto_candles_1m materialized_only true",
    ] {
        assert!(now.iter().any(|s| s == expected), "{expected} in {now:#?}");
    }
    assert!(
        !now.iter()
            .any(|s| s.starts_with("level1_quotes policy_compression")),
        "{now:#?}"
    );
    let again = start(changed).await;
    assert_eq!(again.changed, Vec::<String>::new(), "nothing to change");

    // `timesink check` shows what the database holds, and how it differs
    // from the defaults, which a start leaves as it is.
    let mut defaults_required = world.config.clone();
    defaults_required.database.timescaledb = TimescaleMode::Required;
    let report = timesink::ops::check::run(&defaults_required)
        .await
        .expect("check passes");
    for expected in [
        "table crypto_prices (11 columns, primary key (coin_id, exchange_id, time)): present, hypertable, matches what the sink writes\n",
        "  hypertable: 0 chunks, 0 compressed; chunks of 1 day; compression segmented by (coin_id), ordered by (\"time\" DESC), policy after 3 days; retention 90 days\n",
        "  aggregate crypto_candles_1m: materialized only, refreshed every 1 minute from 30 days to 1 minute ago\n",
        "  aggregate crypto_candles_1h: real time, refreshed every 10 minutes from 30 days to 1 hour ago\n",
        "  differs from the configuration, left alone: crypto_prices: no retention policy (database: after 90 days) — left as it is: not named in the configuration (set `tables.crypto_prices.timescaledb.retention` to have the sink change it)\n",
        "  differs from the configuration, left alone: crypto_candles_1m: real-time aggregation on — left as it is: not named in the configuration (set `tables.crypto_prices.aggregates.crypto_candles_1m.real_time` to have the sink change it)\n",
        "  differs from the configuration, left alone: level1_quotes: compression policy after 1 day (database: none) — left as it is: not named in the configuration (set `tables.level1_quotes.timescaledb.compress_after` to have the sink change it)\n",
    ] {
        assert!(report.contains(expected), "{expected:?} in\n{report}");
    }

    // A deployment with the defaults (another instance, a restart without
    // the keys) flips nothing back: the settings stay as they are.
    let back = start(world.config.clone()).await;
    assert_eq!(back.changed, Vec::<String>::new());
    assert_eq!(timescaledb_settings(&world).await, now);

    // Named again, at the defaults' values: back to them. The chunk width
    // stays (an unset `chunk_interval` leaves it as it is).
    let mut named_defaults = world.config.clone();
    for key in [
        "tables.crypto_prices.timescaledb",
        "tables.crypto_prices.aggregates",
        "tables.level1_quotes.timescaledb.compress_after",
    ] {
        named_defaults.named.insert(key);
    }
    let back = start(named_defaults).await;
    assert!(!back.changed.is_empty());
    let expected: Vec<String> = defaults
        .iter()
        .map(|s| s.replace("crypto_prices chunk 7 days", "crypto_prices chunk 1 day"))
        .collect();
    assert_eq!(timescaledb_settings(&world).await, expected);
}

/// Rows of a query, each as its columns' text joined by `|`.
async fn text_rows(
    world: &World,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Vec<String> {
    let rows = world
        .db
        .query(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.iter()
        .map(|r| {
            (0..r.len())
                .map(|i| {
                    r.get::<_, Option<String>>(i)
                        .unwrap_or_else(|| "NULL".into())
                })
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect()
}

const CANDLES: [(&str, &str); 3] = [
    ("crypto_candles_1m", "1 minute"),
    ("crypto_candles_1h", "1 hour"),
    ("crypto_candles_1d", "1 day"),
];

/// Each candle aggregate as it reads, and the same candles computed from
/// the raw table: (aggregate, its rows, the raw query's rows).
async fn candles_and_raw(world: &World) -> Vec<(&'static str, Vec<String>, Vec<String>)> {
    let mut out = Vec::new();
    for (view, bucket) in CANDLES {
        let candles = text_rows(
            world,
            &format!(
                "SELECT bucket::text, coin_id, exchange_id, open::text, high::text, low::text, close::text, ticks::text \
                 FROM {view} ORDER BY 1, 2, 3"
            ),
            &[],
        )
        .await;
        let raw = text_rows(
            world,
            &format!(
                "SELECT time_bucket('{bucket}', time)::text, coin_id, exchange_id, first(usd_price, time)::text, \
                        max(usd_price)::text, min(usd_price)::text, last(usd_price, time)::text, count(*)::text \
                 FROM crypto_prices GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
            ),
            &[],
        )
        .await;
        out.push((view, candles, raw));
    }
    out
}

/// Fails naming the rows only one side has (the first few of each).
fn assert_same_rows(view: &str, when: &str, candles: &[String], raw: &[String]) {
    if candles == raw {
        return;
    }
    let only = |a: &[String], b: &[String]| -> Vec<String> {
        a.iter()
            .filter(|r| !b.contains(r))
            .take(5)
            .cloned()
            .collect()
    };
    panic!(
        "{view}, {when}: {} candle rows, {} from the raw query; only in the aggregate: {:#?}; only in the raw query: {:#?}",
        candles.len(),
        raw.len(),
        only(candles, raw),
        only(raw, candles)
    );
}

/// Runs each candle aggregate's refresh policy now, as TimescaleDB's
/// scheduler would.
async fn run_refresh_policies(world: &World) {
    for (view, _) in CANDLES {
        let job: i32 = world
            .db
            .query_one(
                "SELECT job_id FROM timescaledb_information.jobs \
                 WHERE proc_name = 'policy_refresh_continuous_aggregate' AND hypertable_name = $1",
                &[&view],
            )
            .await
            .expect("the aggregate's refresh policy")
            .get(0);
        world
            .db
            .batch_execute(&format!("CALL run_job({job})"))
            .await
            .expect("run the refresh policy");
    }
}

/// The contract's candles: each aggregate equals the same query over the
/// raw table, value for value. Buckets newer than the materialized ones
/// are current at once (real-time aggregation); a late row into a
/// materialized bucket, and a repeated key's later price, are in the
/// candles once the refresh policy has run. Seed 000's daily report over
/// the hourly candles returns what the seed's query over the ticks does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candles_equal_the_raw_query_in_real_time_and_after_late_data() {
    // The schema first, and TimescaleDB's scheduler kept off the refresh
    // policies: the test runs them when it says so.
    let Some((world, config)) = timescaledb_world(
        2,
        "candles_equal_the_raw_query_in_real_time_and_after_late_data",
    )
    .await
    else {
        return;
    };
    world
        .db
        .batch_execute(
            "SELECT alter_job(job_id, scheduled => false) FROM timescaledb_information.jobs \
             WHERE proc_name = 'policy_refresh_continuous_aggregate'",
        )
        .await
        .expect("unschedule the refresh policies");

    let topic = world.topic(DataType::Price);
    let price = |coin: &str,
                 exchange: Option<&str>,
                 usd: &str,
                 at: chrono::DateTime<chrono::Utc>| {
        let exchange = exchange
            .map(|e| format!(r#","exchangeId":"{e}""#))
            .unwrap_or_default();
        format!(
            r#"{{"coinId":"{coin}","symbol":"S","usdPrice":"{usd}"{exchange},"lastUpdated":"{}","source":"t"}}"#,
            at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        )
    };
    let now = chrono::Utc::now();
    let old = now - chrono::Duration::days(3);
    // 70 minutes of ticks three days ago: coins a and b on exchanges x and
    // y, and coin c on the aggregate feed; prices of varied scale.
    let mut ticks = Vec::new();
    for i in 0..600i64 {
        let at = old + chrono::Duration::seconds(7 * i);
        let (coin, exchange) = match i % 5 {
            0 => ("a", Some("x")),
            1 => ("a", Some("y")),
            2 => ("b", Some("x")),
            3 => ("b", Some("y")),
            _ => ("c", None),
        };
        let usd = format!(
            "{}.{:0>width$}",
            100 + (i * 37) % 91,
            (i * 7919) % 100_000,
            width = (i % 6 + 1) as usize
        );
        ticks.push((coin.to_owned(), price(coin, exchange, &usd, at)));
    }
    send_many(&topic, &ticks).await;
    let sink = Sink::start(&config);
    eventually(60, "the old ticks", || async {
        world.count("crypto_prices").await == 600
    })
    .await;
    run_refresh_policies(&world).await;
    for (view, candles, raw) in candles_and_raw(&world).await {
        assert!(!candles.is_empty(), "{view} holds candles");
        assert_same_rows(view, "materialized", &candles, &raw);
    }

    // Newer ticks than any materialized bucket: in the candles at once.
    let recent: Vec<(String, String)> = (0..40i64)
        .map(|i| {
            let coin = if i % 2 == 0 { "a" } else { "c" };
            let exchange = (i % 2 == 0).then_some("x");
            let at = now - chrono::Duration::seconds(40 - i);
            (
                coin.to_owned(),
                price(coin, exchange, &format!("2{i}.5"), at),
            )
        })
        .collect();
    send_many(&topic, &recent).await;
    eventually(60, "the recent ticks", || async {
        world.count("crypto_prices").await == 640
    })
    .await;
    for (view, candles, raw) in candles_and_raw(&world).await {
        assert_same_rows(view, "real time", &candles, &raw);
    }

    // A late tick into a materialized bucket, and a later price for a key
    // already stored: the candles are stale until the refresh runs.
    let late = vec![
        (
            "a".to_owned(),
            price(
                "a",
                Some("x"),
                "999.125",
                old + chrono::Duration::seconds(7 * 10 + 3),
            ),
        ),
        (
            "a".to_owned(),
            price(
                "a",
                Some("x"),
                "1.000001",
                old + chrono::Duration::seconds(7 * 20),
            ),
        ),
    ];
    send_many(&topic, &late).await;
    eventually(60, "the late tick and the later price", || async {
        world.count("crypto_prices").await == 641
            && world
                .db
                .query_one(
                    "SELECT count(*) FROM crypto_prices WHERE usd_price = 1.000001",
                    &[],
                )
                .await
                .map(|r| r.get::<_, i64>(0) == 1)
                .unwrap_or(false)
    })
    .await;
    let stale = candles_and_raw(&world).await;
    assert!(
        stale[0].1 != stale[0].2,
        "the minute candles were materialized before the late data, so they are stale until refreshed"
    );
    run_refresh_policies(&world).await;
    for (view, candles, raw) in candles_and_raw(&world).await {
        assert_same_rows(view, "after the late data and the refresh", &candles, &raw);
    }

    // Seed 000's daily report: the README's query over the hourly candles
    // returns what the seed's query over the ticks does.
    let day = old.date_naive();
    let report = text_rows(
        &world,
        &format!(
            "SELECT hour::text, open::text, high::text, low::text, close::text, data_points::text FROM ({}) AS r ORDER BY 1",
            include_str!("../examples/daily_report.sql").trim_end()
        ),
        &[&"c", &day],
    )
    .await;
    let seed = text_rows(
        &world,
        "SELECT time_bucket('1 hour', time)::text AS hour, first(usd_price, time)::text, max(usd_price)::text, \
                min(usd_price)::text, last(usd_price, time)::text, count(*)::text \
         FROM crypto_prices WHERE coin_id = $1 AND DATE(time) = $2 GROUP BY 1 ORDER BY 1",
        &[&"c", &day],
    )
    .await;
    assert!(!seed.is_empty());
    assert_eq!(report, seed, "the daily report over crypto_candles_1h");

    sink.stop().await;
}

/// Late data into compressed chunks: new keys and later records of stored
/// keys land in chunks already compressed, the later record wins, exactly
/// once — with one batch decompressing more tuples than TimescaleDB's
/// `max_tuples_decompressed_per_dml_transaction` (100,000) allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_rows_and_repeated_keys_land_in_compressed_chunks_past_the_decompression_limit() {
    let Some((world, mut config)) = timescaledb_world(
        2,
        "late_rows_and_repeated_keys_land_in_compressed_chunks_past_the_decompression_limit",
    )
    .await
    else {
        return;
    };
    // Below what the late batch decompresses (200,200): the raised limit
    // holds, and the batch lands in parts.
    config
        .tables
        .get_mut("crypto_prices")
        .expect("built-in")
        .timescaledb
        .max_tuples_decompressed = 150_000;
    // History: 200,000 prices of one coin on one exchange, a second apart,
    // three days ago — one segment, compressed in batches of 1,000.
    let base = (chrono::Utc::now() - chrono::Duration::days(3))
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc();
    world
        .db
        .execute(
            "INSERT INTO crypto_prices (time, coin_id, symbol, exchange_id, usd_price, source) \
             SELECT $1::timestamptz + i * interval '1 second', 'a', 'A', 'x', 100 + (i % 1000) / 100.0, 'history' \
               FROM generate_series(0, 199999) AS i",
            &[&base],
        )
        .await
        .expect("history");
    let compressed: i64 = world
        .db
        .query_one(
            "SELECT count(compress_chunk(c)) FROM show_chunks('crypto_prices') AS c",
            &[],
        )
        .await
        .expect("compress")
        .get(0);
    assert!(compressed >= 1);
    let uncompressed: i64 = world
        .db
        .query_one("SELECT count(*) FROM ONLY crypto_prices", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(uncompressed, 0);

    // Into each of the 200 compressed batches: a later record of a stored
    // key, and a row between two stored ones.
    let topic = world.topic(DataType::Price);
    let price = |usd: &str, at: chrono::DateTime<chrono::Utc>| {
        format!(
            r#"{{"coinId":"a","symbol":"A","usdPrice":"{usd}","exchangeId":"x","lastUpdated":"{}","source":"late"}}"#,
            at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        )
    };
    let mut late = Vec::new();
    for k in 0..200i64 {
        let stored = base + chrono::Duration::seconds(1000 * k + 500);
        late.push(("a".to_owned(), price(&format!("7.{k:03}"), stored)));
        let between = base + chrono::Duration::milliseconds(1_000_000 * k + 250_500);
        late.push(("a".to_owned(), price(&format!("8.{k:03}"), between)));
    }
    send_many(&topic, &late).await;
    let sink = Sink::start(&config);
    drained(&world, &topic, 120).await;
    sink.stop().await;

    assert_eq!(world.count("crypto_prices").await, 200_200);
    let row = world
        .db
        .query_one(
            "SELECT count(*), count(DISTINCT time), \
                    count(*) FILTER (WHERE usd_price::text LIKE '7.%'), \
                    count(*) FILTER (WHERE usd_price::text LIKE '8.%') \
               FROM crypto_prices WHERE source = 'late'",
            &[],
        )
        .await
        .unwrap();
    let (late_rows, distinct, replaced, between): (i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(
        (late_rows, distinct, replaced, between),
        (400, 400, 200, 200),
        "each late record once, the later record of a stored key in its place"
    );
    let stored = world.stored_offsets().await;
    for (p, end) in end_offsets(&topic) {
        let at = stored.get(&(topic.clone(), p)).copied().unwrap_or(0);
        assert_eq!(at, end, "partition {p}: stored offset = end offset");
    }
    // The late rows took more than the default limit out of compression:
    // the chunks' uncompressed parts hold the decompressed batches.
    let decompressed: i64 = world
        .db
        .query_one(
            "SELECT sum((xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM ONLY %s', c), false, true, '')))[1]::text::bigint)::bigint \
               FROM show_chunks('crypto_prices') AS c",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    eprintln!("late data: {decompressed} tuples decompressed by the late batch");
    assert!(
        decompressed > 100_000,
        "{decompressed} tuples decompressed: the test must pass the default limit"
    );
}

/// The raised decompression limit is a bound: a row that needs more
/// tuples decompressed than the table's `max_tuples_decompressed` is not
/// written with the limit off; the table is blocked, naming the key, and
/// nothing is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_past_the_raised_decompression_limit_blocks_its_table_naming_the_key() {
    let Some((world, mut config)) = timescaledb_world(
        1,
        "a_row_past_the_raised_decompression_limit_blocks_its_table_naming_the_key",
    )
    .await
    else {
        return;
    };
    let prices = config.tables.get_mut("crypto_prices").expect("built-in");
    prices.timescaledb.max_tuples_decompressed = 500;
    let base = (chrono::Utc::now() - chrono::Duration::days(3))
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc();
    // Three compressed batches of 1,000 tuples.
    world
        .db
        .batch_execute(&format!(
            "INSERT INTO crypto_prices (time, coin_id, symbol, exchange_id, usd_price, source) \
             SELECT '{}'::timestamptz + i * interval '1 second', 'a', 'A', 'x', 100, 'history' \
               FROM generate_series(0, 2999) AS i; \
             SELECT count(compress_chunk(c)) FROM show_chunks('crypto_prices') AS c",
            base.to_rfc3339()
        ))
        .await
        .expect("history, compressed");
    // The server allows the sink's sessions less than one compressed batch.
    world
        .db
        .batch_execute(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET \
             timescaledb.max_tuples_decompressed_per_dml_transaction = 100', current_database()); END $$",
        )
        .await
        .expect("the server's limit");
    let topic = world.topic(DataType::Price);
    // A later record of a stored key: its batch (1,000 tuples) is
    // decompressed to check the key.
    let at = (base + chrono::Duration::seconds(1500))
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    send_many(
        &topic,
        &[(
            "a".to_owned(),
            format!(r#"{{"coinId":"a","symbol":"A","usdPrice":"7","exchangeId":"x","lastUpdated":"{at}","source":"late"}}"#),
        )],
    )
    .await;
    let health = Arc::new(Health::new(config.health.clone()));
    let sink = Sink::start_with(&config, health.clone());
    eventually(60, "crypto_prices blocked", || {
        let health = health.clone();
        async move { health.is_blocked("crypto_prices") }
    })
    .await;
    let status = serde_json::to_value(health.status()).expect("status");
    let reason = status.to_string();
    assert!(
        reason.contains("timescaledb.max_tuples_decompressed"),
        "the reason names the key: {reason}"
    );
    sink.stop().await;
    let late: i64 = world
        .db
        .query_one(
            "SELECT count(*) FROM crypto_prices WHERE source = 'late'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(late, 0, "not written past the bound");
    assert_eq!(
        world
            .stored_offsets()
            .await
            .get(&(topic.clone(), 0))
            .copied()
            .unwrap_or(0),
        0,
        "its offset stays put"
    );
}

/// Compression that compresses: a day of market data per table
/// (`tests/sql/day_of_ticks.sql`), every chunk compressed, and the space
/// saved reported per table (heap, indexes and TOAST together, as
/// `hypertable_compression_stats` counts them) — the README's figures
/// beside the seeds' 90 %.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_of_ticks_compresses_per_table() {
    let Some((world, _)) = timescaledb_world(1, "a_day_of_ticks_compresses_per_table").await else {
        return;
    };
    world
        .db
        .batch_execute(include_str!("sql/day_of_ticks.sql"))
        .await
        .expect("a day of ticks");
    let mut report = Vec::new();
    // What each table saved when the README was written, less a margin:
    // a change to a table's compression settings that loses it fails here.
    for (table, floor) in [
        ("crypto_prices", 0.80),
        ("ohlcv_data", 0.80),
        ("market_analytics", 0.55),
        ("level1_quotes", 0.80),
    ] {
        let rows = world.count(table).await;
        world
            .db
            .batch_execute(&format!(
                "SELECT compress_chunk(c) FROM show_chunks('{table}') AS c"
            ))
            .await
            .expect("compress");
        let row = world
            .db
            .query_one(
                &format!(
                    "SELECT before_compression_total_bytes, after_compression_total_bytes \
                     FROM hypertable_compression_stats('{table}')"
                ),
                &[],
            )
            .await
            .expect("compression stats");
        let (before, after): (i64, i64) = (row.get(0), row.get(1));
        let saved = 1.0 - after as f64 / before as f64;
        // Compressed, every row is still there, value for value.
        assert_eq!(world.count(table).await, rows, "{table}");
        report.push(format!(
            "{table}: {rows} rows, {:.1} MiB → {:.1} MiB, {:.1} % saved",
            before as f64 / 1048576.0,
            after as f64 / 1048576.0,
            100.0 * saved
        ));
        assert!(rows > 1000, "{table} holds a day");
        assert!(saved > floor, "{table}: only {:.1} % saved", 100.0 * saved);
    }
    eprintln!("a day of ticks, compressed:\n  {}", report.join("\n  "));
}

/// Rows in the uncompressed part of a hypertable's chunks.
async fn uncompressed_rows(world: &World, table: &str) -> i64 {
    world
        .db
        .query_one(
            &format!(
                "SELECT coalesce(sum((xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM ONLY %s', c), false, true, '')))[1]::text::bigint), 0)::bigint \
                   FROM show_chunks('{table}') AS c"
            ),
            &[],
        )
        .await
        .expect("uncompressed rows")
        .get(0)
}

/// Direct compress: the append-only archive of `examples/quotes_archive.toml`
/// is written compressed by the COPY itself, every message once (a quote
/// sent twice is two rows: the table has no key), while the same table
/// without the option holds the same rows uncompressed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_only_table_is_written_compressed_by_direct_compress() {
    let Some((world, mut config)) = timescaledb_world(
        2,
        "an_append_only_table_is_written_compressed_by_direct_compress",
    )
    .await
    else {
        return;
    };
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/quotes_archive.toml");
    let loaded = Config::load_from(Some(std::path::Path::new(example)), Vec::new())
        .expect("the example loads");
    let archive = loaded.tables["quotes_archive"].clone();
    let (direct, plain) = (
        world.topic(DataType::Level1) + "-archive",
        world.topic(DataType::Level1) + "-plain",
    );
    create_topics(&[direct.clone(), plain.clone()], 2).await;
    let mut with = archive.clone();
    with.topics = vec![direct.clone()];
    let mut without = archive;
    without.topics = vec![plain.clone()];
    without.timescaledb.direct_compress = false;
    config.tables.insert("quotes_archive".into(), with);
    config.tables.insert("quotes_plain".into(), without);

    // Quotes over two days (two chunks), each sent twice to each topic.
    let base = chrono::DateTime::parse_from_rfc3339("2026-11-02T00:00:00Z").expect("time");
    let quotes: Vec<(String, String)> = (0..2000i64)
        .flat_map(|i| {
            let at = base + chrono::Duration::seconds(i * 86);
            let symbol = ["BTC-USD", "ETH-USD", "SOL-USD"][(i % 3) as usize];
            let quote = format!(
                r#"{{"symbol":"{symbol}","exchangeId":"x","bestBid":"{}.25","bestAsk":"{}.5","bidSize":"0.{i:04}","timestamp":"{}","sequence":{i},"source":"t"}}"#,
                1000 + i,
                1000 + i,
                at.to_rfc3339()
            );
            [(symbol.to_owned(), quote.clone()), (symbol.to_owned(), quote)]
        })
        .collect();
    send_many(&direct, &quotes).await;
    send_many(&plain, &quotes).await;
    let sink = Sink::start(&config);
    drained(&world, &direct, 120).await;
    drained(&world, &plain, 120).await;
    sink.stop().await;

    for table in ["quotes_archive", "quotes_plain"] {
        assert_eq!(
            world.count(table).await,
            4000,
            "{table}: every message once"
        );
        let distinct: i64 = world
            .db
            .query_one(
                &format!("SELECT count(DISTINCT (time, symbol, sequence, best_bid, bid_size)) FROM {table}"),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(distinct, 2000, "{table}: each quote as sent, twice");
    }
    assert_eq!(
        uncompressed_rows(&world, "quotes_archive").await,
        0,
        "direct compress wrote every row compressed"
    );
    let compressed: i64 = world
        .db
        .query_one(
            "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'quotes_archive' AND is_compressed",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(compressed >= 2, "{compressed} compressed chunks");
    assert_eq!(uncompressed_rows(&world, "quotes_plain").await, 4000);
    let same: bool = world
        .db
        .query_one(
            "SELECT NOT EXISTS (SELECT time, symbol, best_bid, best_ask, bid_size, sequence FROM quotes_archive \
                                EXCEPT ALL SELECT time, symbol, best_bid, best_ask, bid_size, sequence FROM quotes_plain)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        same,
        "the compressed archive holds the same rows, value for value"
    );
}

/// `timesink check` on a database with TimescaleDB in use, for a
/// configuration that adds a table not created yet: it passes, says the
/// table is created at start, and prints each table once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_a_new_table_not_created_yet_and_prints_each_table_once() {
    let Some((world, _)) = timescaledb_world(
        1,
        "check_passes_a_new_table_not_created_yet_and_prints_each_table_once",
    )
    .await
    else {
        return;
    };
    let topic = format!("{}readings", world.prefix());
    let config = format!(
        r#"
[tables.readings]
topics = ["{topic}"]
time = "at"
primary_key = ["id", "at"]
timescaledb = {{ compress_after = "7 days" }}
columns = [
  {{ name = "id", type = "text", from = "key", required = true }},
  {{ name = "at", type = "timestamptz", from = "/at", required = true }},
]
"#
    );
    let mut cmd = sink_command(&world, "check");
    let (key, file) = world.config_file("check-readings", &config);
    cmd.env(key, file);
    let out = cmd.output().expect("run timesink check");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("TimescaleDB 2."), "{stdout}");
    for table in [
        "readings",
        "crypto_prices",
        "ohlcv_data",
        "market_analytics",
        "level1_quotes",
    ] {
        let heading = format!("table {table} ");
        assert_eq!(
            stdout.lines().filter(|l| l.starts_with(&heading)).count(),
            1,
            "one heading for {table}:\n{stdout}"
        );
    }
    let readings: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("table readings "))
        .take_while(|l| l.starts_with("table readings ") || l.starts_with("  "))
        .collect();
    let readings = readings.join("\n");
    assert!(readings.contains("missing (created at start)"), "{stdout}");
    assert!(readings.contains(&topic), "{stdout}");
}

/// What an operator set stays set: a compression policy changed to 2 days
/// and a retention policy added by hand survive a start whose
/// configuration does not name them; a plain table holding rows is never
/// migrated by a start (`timesink schema`, the owner's step, does it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_never_overrides_what_an_operator_set_nor_migrates_rows() {
    let world = World::new(1).await;
    if !timescaledb_installed(
        &world,
        "a_start_never_overrides_what_an_operator_set_nor_migrates_rows",
    )
    .await
    {
        return;
    }
    let mut client = connect(&world.config.database.url).await;
    // Plain tables first (as before TimescaleDB was loaded), one holding rows.
    let catalog = world.config.catalog().expect("catalog");
    schema::apply(
        &mut client,
        TimescaleMode::Off,
        &catalog,
        schema::Step::Owner,
    )
    .await
    .expect("plain tables");
    world
        .db
        .batch_execute(
            "INSERT INTO level1_quotes (time, exchange_id, symbol, best_bid, best_ask, sequence, source) \
             VALUES (now(), 'x', 'BTC', 1, 2, 0, 'history'); \
             CREATE EXTENSION IF NOT EXISTS timescaledb",
        )
        .await
        .expect("rows, then TimescaleDB");
    let start = schema::prepare(&mut client, TimescaleMode::Required, &catalog)
        .await
        .expect("start");
    assert!(
        start
            .left_alone
            .iter()
            .any(|l| l.starts_with("level1_quotes: a plain table holding rows, not a hypertable — `timesink schema` makes it one")),
        "{:#?}",
        start.left_alone
    );
    let hypertables = || async {
        text_rows(
            &world,
            "SELECT hypertable_name::text FROM timescaledb_information.hypertables ORDER BY 1",
            &[],
        )
        .await
    };
    assert_eq!(
        hypertables().await,
        ["crypto_prices", "market_analytics", "ohlcv_data"],
        "the empty plain tables became hypertables, the one with rows did not"
    );
    let owner = schema::apply(
        &mut client,
        TimescaleMode::Required,
        &catalog,
        schema::Step::Owner,
    )
    .await
    .expect("schema");
    assert!(
        owner
            .changed
            .iter()
            .any(|c| c == "level1_quotes: a hypertable on time (migrating the rows it holds)"),
        "{:#?}",
        owner.changed
    );
    assert_eq!(hypertables().await.len(), 4);
    assert_eq!(world.count("level1_quotes").await, 1, "the row migrated");

    // The operator's policies.
    world
        .db
        .batch_execute(
            "SELECT remove_compression_policy('crypto_prices'); \
             SELECT add_compression_policy('crypto_prices', INTERVAL '2 days'); \
             SELECT add_retention_policy('crypto_prices', INTERVAL '30 days')",
        )
        .await
        .expect("the operator's policies");
    let before = timescaledb_settings(&world).await;
    assert!(
        before
            .iter()
            .any(|s| s == "crypto_prices policy_compression 2 days")
    );
    assert!(
        before
            .iter()
            .any(|s| s == "crypto_prices policy_retention 30 days")
    );
    let again = schema::prepare(&mut client, TimescaleMode::Required, &catalog)
        .await
        .expect("start again");
    assert_eq!(again.changed, Vec::<String>::new());
    assert_eq!(
        timescaledb_settings(&world).await,
        before,
        "all as the operator set it"
    );
    let shown: Vec<&String> = again
        .left_alone
        .iter()
        .filter(|l| l.starts_with("crypto_prices:"))
        .collect();
    assert_eq!(shown.len(), 2, "{:#?}", again.left_alone);
    assert!(shown[0].contains(
        "compression policy after 7 days (database: after 2 days) — left as it is: not named"
    ));
    assert!(
        shown[1]
            .contains("no retention policy (database: after 30 days) — left as it is: not named")
    );

    // Named in the configuration, the setting is the configuration's.
    let mut named = world.config.clone();
    named
        .named
        .insert("tables.crypto_prices.timescaledb.compress_after");
    let catalog = named.catalog().expect("catalog");
    let changed = schema::prepare(&mut client, TimescaleMode::Required, &catalog)
        .await
        .expect("start, named");
    assert_eq!(
        changed.changed,
        ["crypto_prices: compression policy after 7 days (database: after 2 days)"]
    );
    let after = timescaledb_settings(&world).await;
    assert!(
        after
            .iter()
            .any(|s| s == "crypto_prices policy_compression 7 days")
    );
    assert!(
        after
            .iter()
            .any(|s| s == "crypto_prices policy_retention 30 days")
    );
}
