//! The `timesink` binary: `run` the sink, `produce` load, create `topics`.

/// librdkafka, the pipeline and the writers allocate and free per message
/// on different threads; mimalloc halves what glibc's allocator costs there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use timesink::config::{Config, LogFormat};
use timesink::ops::health::Health;
use timesink::ops::produce::DataType;
use timesink::ops::produce::{self, Encoding, Generator};
use timesink::time::Timestamp;
use timesink::{catalog::schema, ops::check, ops::http, ops::telemetry, ops::topics, pipeline};

#[derive(Parser)]
#[command(
    name = "timesink",
    version,
    about = "Kafka/Redpanda → TimescaleDB sink for crypto market data"
)]
struct Cli {
    /// TOML configuration file; without it the documented defaults apply.
    /// The environment overrides both (KAFKA_BROKERS, DATABASE_URL, TIMESINK_*).
    #[arg(long, global = true, env = "TIMESINK_CONFIG_FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sink until SIGTERM or SIGINT.
    Run,
    /// Create the tables (hypertables where TimescaleDB is installed) and
    /// exit; `run` does the same at start. Idempotent.
    Schema,
    /// Validate the configuration, reach the broker and the database, and
    /// print what is there (topics, tables, TimescaleDB, stored offsets).
    Check,
    /// Produce generated market data (all four types, every encoding), or
    /// seed 004's odin token events (`--stream odin`).
    Produce {
        /// `crypto` (the four data types) or `odin` (token events, gzip).
        #[arg(long, value_enum, default_value = "crypto")]
        stream: Stream,
        /// Prepended to the odin topic names (`<prefix>odin.trades`, …).
        #[arg(long, default_value = "")]
        prefix: String,
        /// Messages to produce.
        #[arg(long, default_value_t = 10_000)]
        count: u64,
        /// Messages per second; 0 produces as fast as the broker takes them.
        #[arg(long, default_value_t = 1_000)]
        rate: u64,
        /// Exchanges whose per-exchange topics also get messages (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "binance,coinbase")]
        exchanges: Vec<String>,
        /// Data types to produce (comma-separated): price, ohlcv, analytics, level1.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "price,ohlcv,analytics,level1"
        )]
        types: Vec<String>,
        /// Encodings to take turns with (comma-separated).
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "json,envelope,array,bincode,lz4-json,lz4-bincode"
        )]
        encodings: Vec<Encoding>,
    },
    /// Manage topics.
    Topics {
        #[command(subcommand)]
        action: TopicsAction,
    },
}

#[derive(Subcommand)]
enum TopicsAction {
    /// Create the topics of topics.yaml and their per-exchange siblings (idempotent).
    Create {
        /// The topics file.
        #[arg(long, default_value = "topics.yaml")]
        file: PathBuf,
        /// Exchanges to create per-exchange topics for (comma-separated).
        #[arg(long, value_delimiter = ',')]
        exchanges: Vec<String>,
    },
}

/// What `timesink produce` sends.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Stream {
    Crypto,
    Odin,
}

fn print_summary(summary: &produce::Summary) {
    println!(
        "produced {} messages ({} value bytes) in {:.1}s ({:.0} msg/s)",
        summary.messages,
        summary.value_bytes,
        summary.elapsed.as_secs_f64(),
        summary.messages as f64 / summary.elapsed.as_secs_f64().max(1e-9)
    );
    for (topic, n) in &summary.per_topic {
        println!("  topic {topic}: {n} messages");
    }
    for (table, n) in &summary.rows_per_table {
        println!("  table {table}: {n} rows");
    }
}

/// Exit codes (README, "Commands"): 0 stopped cleanly, 1 could not start
/// or failed, 3 stopped at `shutdown_timeout_ms` with rows not yet
/// committed (read again on the next start).
const EXIT_SHUTDOWN_TIMEOUT: u8 = 3;

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        // Logged by the sink already, as its last line.
        Err(e)
            if matches!(
                e.downcast_ref::<pipeline::RunError>(),
                Some(pipeline::RunError::ShutdownTimeout { .. })
            ) =>
        {
            ExitCode::from(EXIT_SHUTDOWN_TIMEOUT)
        }
        Err(e) => {
            eprintln!("timesink: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr in the configured format. Nothing logged carries a
/// message's key, value or headers, or a password.
fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // PostgreSQL's notices ("relation already exists, skipping") say nothing to act on.
        tracing_subscriber::EnvFilter::new("info,librdkafka=warn,rdkafka=warn,tokio_postgres=warn")
    });
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs.json().init(),
    }
}

fn real_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Crash points for tests/faults.rs; a no-op unless built with the
    // `failpoints` feature.
    let _failpoints = fail::FailScenario::setup();
    let config = Config::load(cli.config.as_deref())?;
    init_logs(config.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Command::Run => {
            let result = run(&runtime, config);
            // Whatever still runs (a connection to a frozen server) must not
            // hold the exit past the shutdown timeout.
            runtime.shutdown_timeout(std::time::Duration::from_millis(100));
            result
        }
        Command::Schema => runtime.block_on(async {
            let database = config.database()?;
            let mut client = database.connect().await.map_err(|e| {
                anyhow::anyhow!(
                    "database.url ({}): {}",
                    database.target(),
                    timesink::describe_database_error(&e)
                )
            })?;
            let catalog = config.catalog()?;
            let report = schema::apply(
                &mut client,
                config.database.timescaledb,
                &catalog,
                schema::Step::Owner,
            )
            .await?;
            for change in &report.changed {
                println!("changed: {change}");
            }
            for difference in &report.left_alone {
                println!("left alone: {difference}");
            }
            println!(
                "tables ready in {} ({})",
                database.target(),
                if report.timescaledb {
                    "hypertables, TimescaleDB"
                } else {
                    "plain tables"
                }
            );
            Ok(())
        }),
        Command::Check => runtime.block_on(async {
            let report = check::run(&config).await?;
            print!("{report}");
            println!("check passed");
            Ok(())
        }),
        Command::Produce {
            stream: Stream::Odin,
            prefix,
            count,
            rate,
            ..
        } => {
            let start = Timestamp(chrono::Utc::now().timestamp_micros() - 60_000_000);
            let mut generator = produce::odin::OdinGenerator::new(start, &prefix);
            let summary =
                produce::run(&config.kafka, &mut generator, count, rate).context("producing")?;
            print_summary(&summary);
            Ok(())
        }
        Command::Produce {
            count,
            rate,
            exchanges,
            types,
            encodings,
            ..
        } => {
            let types = types
                .iter()
                .map(|t| {
                    DataType::from_name(t).with_context(|| {
                        format!("--types: {t:?} is not price, ohlcv, analytics or level1")
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            anyhow::ensure!(
                !types.is_empty() && !encodings.is_empty(),
                "--types and --encodings need at least one value"
            );
            // `--exchanges ''`: base topics only.
            let exchanges: Vec<String> = exchanges.into_iter().filter(|e| !e.is_empty()).collect();
            // Ten minutes back, so that a long run stays within "5 minutes ahead".
            let start = Timestamp(chrono::Utc::now().timestamp_micros() - 600_000_000);
            let mut generator = Generator::new(
                produce::Topics::of(&config.catalog()?),
                exchanges,
                types,
                encodings,
                start,
            );
            let summary =
                produce::run(&config.kafka, &mut generator, count, rate).context("producing")?;
            print_summary(&summary);
            Ok(())
        }
        Command::Topics {
            action: TopicsAction::Create { file, exchanges },
        } => runtime.block_on(async {
            let spec = topics::TopicsFile::load(&file)?;
            let planned = spec.plan(&exchanges)?;
            let created = topics::create(&config.kafka, spec.replication_factor, &planned).await?;
            println!(
                "{} topics planned, {} created",
                planned.len(),
                created.len()
            );
            for name in created {
                println!("  created {name}");
            }
            Ok(())
        }),
    }
}

/// `timesink run`: the sink, with its HTTP endpoints, until SIGTERM or SIGINT.
fn run(runtime: &tokio::runtime::Runtime, config: Config) -> anyhow::Result<()> {
    runtime.block_on(async {
        let health = Arc::new(Health::new(config.health.clone()));
        let shutdown = CancellationToken::new();
        tokio::spawn(signals(shutdown.clone()));
        // The endpoints outlive the signal: they answer while the sink
        // writes what it has batched.
        let http_stop = CancellationToken::new();
        if let Ok(addr) = config.http.listen.parse::<std::net::SocketAddr>() {
            let metrics = telemetry::install().context("installing the metrics recorder")?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("http.listen = {addr}: cannot listen there"))?;
            tracing::info!(%addr, "serving /metrics, /health, /ready and /status");
            let (health, stop) = (health.clone(), http_stop.clone());
            tokio::spawn(async move {
                if let Err(e) = http::serve(listener, health, metrics, stop).await {
                    tracing::error!(error = %e, "the HTTP server stopped");
                }
            });
        }
        let result = pipeline::run(config, health, shutdown).await;
        http_stop.cancel();
        result.map_err(anyhow::Error::from)
    })
}

/// Cancels `shutdown` on SIGTERM or SIGINT.
async fn signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for SIGTERM/SIGINT");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    shutdown.cancel();
}
