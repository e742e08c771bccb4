//! The running sink: wires consume → decode → validate → batch → write → commit.
//!
//! One task routes the consumer's events: it decodes and validates each
//! message, keeps the open batches, and hands full or due batches to a
//! writer task of their table (`tables.<name>.writers`; a partition always to the
//! same one), which takes them as they arrive and joins them
//! into its next transaction while PostgreSQL takes the current one
//! (bounded: a slow database slows fetching, never grows memory). Writers
//! report back; the consumer thread commits to Kafka what the database has
//! committed.

pub(crate) mod batch;
mod budget;
mod coalesce;
pub(crate) mod consume;
pub(crate) mod copy_format;
pub(crate) mod dead_letter;
pub(crate) mod decode;
mod mapping_watch;
mod native_headers;
pub(crate) mod outcome;
mod topic_watch;
mod validate;
pub(crate) mod write;

pub use copy_format::{EncodedRows, RowBuffer};
pub use decode::lz4_frame::inflate as inflate_lz4_frame;
pub use decode::{Bounds, DecodeError};
pub use outcome::{Outcome, RejectClass, Rejection};

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::catalog::schema;
use crate::catalog::{Catalog, CatalogError, Route, TableId};
use crate::config::Config;
use crate::database::Database;
use crate::message::SourceMessage;
use crate::ops::health::{Health, TopicCounters};
use crate::pipeline::batch::{Batch, Batcher, Entry, Limits};
use crate::pipeline::budget::{Cost, Fetching, TableBudget};
use crate::pipeline::coalesce::Coalescer;
use crate::pipeline::consume::{Assignment, Command, Event};
use crate::pipeline::dead_letter::DeadLetters;
use crate::pipeline::decode::Encoding;
use crate::pipeline::validate::Context;
use crate::pipeline::write::{Fence, Flush, Report, Writer};
use crate::time::Timestamp;

/// Chunks of messages the consumer thread may queue ahead of the pipeline
/// (each at most 256 messages or about 1 MiB, so 32 MiB at most):
/// librdkafka prefetches behind them.
const EVENT_QUEUE: usize = 32;
/// Batches that may queue for a writer besides the one it writes and the one
/// it prepares next (full, or of another topic).
/// Memory is bounded by the tables' budgets (`batch.max_rows_in_flight`,
/// `batch.max_bytes_in_flight`), not by this: it only has to let small
/// batches add up to a large transaction.
const WRITER_QUEUE: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("connecting to PostgreSQL: {}", crate::pg_error::describe(.0))]
    Database(#[source] tokio_postgres::Error),
    #[error("configuration key `database.url`: {0}")]
    DatabaseUrl(#[from] crate::database::UrlError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Schema(#[from] schema::SchemaError),
    #[error(transparent)]
    DeadLetter(#[from] crate::pipeline::dead_letter::DeadLetterError),
    #[error(transparent)]
    Consume(#[from] consume::ConsumeError),
    #[error("creating the Kafka client that confirms topic ids: {0}")]
    TopicWatch(#[source] rdkafka::error::KafkaError),
    #[error(
        "shutdown_timeout_ms ({}) reached with {rows} rows not yet committed: they, and whatever was read after them, will be read again from the stored offsets on the next start (nothing is lost)",
        .timeout.as_millis()
    )]
    ShutdownTimeout { timeout: Duration, rows: usize },
}

/// The state of one assigned partition, as the pipeline sees it.
#[derive(Debug, Clone)]
struct PartitionState {
    epoch: u64,
    /// The topic's id when the partition started, if the broker gives one.
    topic_id: Option<Arc<str>>,
    /// The `next_offset` the database will hold once every batch handed out
    /// so far is committed; the fence of the next batch.
    expected: Option<i64>,
    /// Its topic's counters, at hand for every message.
    counters: Arc<TopicCounters>,
    /// Whether a message has been read since the assignment (the first one
    /// is where lag in seconds is measured from until a commit).
    read_any: bool,
    /// The table its topic feeds and the captures of the table's topic
    /// pattern (None: a topic no table takes).
    route: Option<Arc<Route>>,
    /// When its topic's batches are flushed.
    limits: Limits,
}

/// What the start found of the tables: the report, and the shape of each
/// table as the sink writes it.
type Prepared = (schema::SchemaReport, Vec<(String, schema::Shape)>);

/// Makes the tables ready (creating those missing) and compares the live
/// ones with what the sink writes: a table that differs is reported
/// blocked, by name, column, expected and found. Waits out an unreachable
/// database with capped backoff (None: shutdown came first). Other errors
/// end the start.
async fn prepare_schema(
    config: &Config,
    catalog: &Catalog,
    database: &Database,
    health: &Health,
    shutdown: &CancellationToken,
) -> Result<Option<Prepared>, RunError> {
    let mut backoff = crate::pg_error::Backoff::new();
    let mut failed = false;
    loop {
        let attempt = async {
            let mut client = database.connect().await.map_err(RunError::Database)?;
            let report = schema::prepare(&mut client, config.database.timescaledb, catalog).await?;
            let shapes = schema::expected_shapes(&mut client, catalog).await?;
            for t in catalog.tables() {
                let Some((table, shape)) = shapes.iter().find(|(name, _)| *name == t.name) else {
                    continue;
                };
                let found = schema::check_table(&client, table, shape)
                    .await
                    .map_err(schema::SchemaError::Catalog)?;
                if let Some(reason) = found {
                    tracing::error!(%table, %reason, "table blocked: it does not match what the sink writes; re-checked every few seconds until it does");
                    health.set_blocked(table, Some(reason));
                }
            }
            Ok::<_, RunError>((report, shapes))
        };
        // A server that accepts connections but never answers (frozen)
        // must not hold up a shutdown.
        let result = tokio::select! {
            result = attempt => result,
            _ = shutdown.cancelled() => return Ok(None),
        };
        match result {
            Ok(report) => {
                if failed {
                    tracing::info!(database = %database.target(), "database reachable");
                }
                return Ok(Some(report));
            }
            Err(e) if e.is_transient() => {
                let delay = backoff.step();
                // One line, then one at debug level per retry.
                if !std::mem::replace(&mut failed, true) {
                    tracing::warn!(database = %database.target(), error = %e, retry_in = ?delay, "database not reachable at start; retrying");
                } else {
                    tracing::debug!(error = %e, retry_in = ?delay, "database still not reachable");
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return Ok(None),
                }
            }
            Err(e) => return Err(e),
        }
    }
}

impl RunError {
    /// Whether waiting may cure it: the server is down, restarting or full.
    fn is_transient(&self) -> bool {
        let db = match self {
            RunError::Database(e) => e,
            RunError::Schema(
                schema::SchemaError::Tables(e)
                | schema::SchemaError::Timescale(e)
                | schema::SchemaError::TimescaleChange { source: e, .. },
            ) => e,
            _ => return false,
        };
        crate::pg_error::classify(db) == crate::pg_error::Class::Transient
    }
}

/// Creates the schema and runs the sink until `shutdown` is cancelled; then
/// stops fetching, writes what is batched, commits, and returns.
pub async fn run(
    config: Config,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let database = config.database()?;
    let catalog = Arc::new(config.catalog()?);
    tokio::spawn(crate::ops::health::probe_database(
        health.clone(),
        database.clone(),
        shutdown.clone(),
    ));
    let Some((report, shapes)) =
        prepare_schema(&config, &catalog, &database, &health, &shutdown).await?
    else {
        return Ok(()); // shut down while waiting for the database
    };
    for change in &report.changed {
        tracing::warn!(%change, "TimescaleDB setting of a live table changed to match the configuration");
    }
    for difference in &report.left_alone {
        tracing::warn!(%difference, "TimescaleDB setting not as configured");
    }
    tracing::info!(
        timescaledb = report.timescaledb,
        created = report.created,
        "schema ready"
    );

    let dead_letters = Arc::new(DeadLetters::new(&config)?);
    // The watch asks the broker until the sink has stopped.
    let watch_stop = CancellationToken::new();
    let topic_watch = topic_watch::TopicWatch::start(&config, watch_stop.clone())
        .map_err(RunError::TopicWatch)?;
    tokio::spawn(mapping_watch::run(
        mapping_watch::Mappings::of(&config),
        database.clone(),
        health.clone(),
        watch_stop.clone(),
    ));
    let _watch_stop = watch_stop.drop_guard();
    let (event_tx, mut events) = mpsc::channel::<Event>(EVENT_QUEUE);
    let (command_tx, command_rx) = std_mpsc::channel::<Command>();
    let (report_tx, mut reports) = mpsc::unbounded_channel::<Written>();

    // Writers stop retrying only when the shutdown deadline has passed.
    let writers_stop = CancellationToken::new();
    let mut writer_queues: HashMap<(TableId, usize), mpsc::Sender<Flush>> = HashMap::new();
    let mut writer_tasks: Vec<JoinHandle<()>> = Vec::new();
    // How large a transaction may grow by coalescing the batches that
    // arrive while the writer writes: under a backlog, fewer and larger
    // COPYs; with none, each batch goes alone as soon as it is due.
    let coalesce = if config.batch.adaptive {
        (
            config.batch.max_transaction_rows,
            config.batch.max_transaction_bytes,
        )
    } else {
        (0, 0)
    };
    // Exported from the start, so that dashboards show 0, not "no data".
    for reason in ["recreated", "before_log_start", "past_log_end"] {
        metrics::counter!("timesink_offset_resets_total", "reason" => reason).absolute(0);
    }
    metrics::counter!("timesink_dead_letter_stubs_total").absolute(0);
    let writers = catalog
        .tables()
        .iter()
        .flat_map(|t| (0..t.writers).map(move |w| (t, w)));
    for (t, w) in writers {
        let name = t.name.clone();
        // Exported from the start, so that dashboards show 0, not "no data".
        metrics::counter!("timesink_write_retries_total", "table" => name.clone()).absolute(0);
        metrics::counter!("timesink_batch_splits_total", "table" => name.clone()).absolute(0);
        metrics::counter!("timesink_decompression_limit_lifted_total", "table" => name.clone())
            .absolute(0);
        // A table found changed at start is already reported blocked.
        let blocked = if health.is_blocked(&name) { 1.0 } else { 0.0 };
        metrics::gauge!("timesink_table_blocked", "table" => name.clone()).set(blocked);
        metrics::gauge!("timesink_table_paused", "table" => name.clone()).set(0.0);
        metrics::counter!("timesink_table_pauses_total", "table" => name.clone()).absolute(0);
        metrics::gauge!("timesink_backpressure_seconds", "table" => name.clone()).set(0.0);
        let expected = shapes
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, shape)| shape.clone());
        let writer = Writer::new(
            t,
            database.clone(),
            config.kafka.group_id.clone(),
            dead_letters.clone(),
            health.clone(),
            expected,
            topic_watch.clone(),
        );
        let (tx, rx) = mpsc::channel::<Flush>(WRITER_QUEUE);
        let task = WriterTask {
            table: t.id,
            name: Arc::from(name.as_str()),
            index: w,
            commands: command_tx.clone(),
            reports: report_tx.clone(),
            stop: writers_stop.clone(),
            health: health.clone(),
        };
        let run = tokio::spawn(task.run(writer, rx, Coalescer::new(coalesce.0, coalesce.1)));
        writer_tasks.push(tokio::spawn(supervise(
            run,
            Arc::from(name.as_str()),
            w,
            health.clone(),
        )));
        writer_queues.insert((t.id, w), tx);
    }
    drop(report_tx);

    let consumer = consume::start(
        &config,
        catalog.clone(),
        tokio::runtime::Handle::current(),
        event_tx,
        command_rx,
        health.clone(),
        &database,
    )?;
    let progress_task = spawn_progress(&config, &catalog, health.clone());

    let mut router = Router {
        config: &config,
        catalog: &catalog,
        envelopes: catalog.envelope_names(),
        batcher: Batcher::new(
            config.batch.adaptive,
            catalog.tables().iter().map(|t| t.writers).collect(),
        ),
        partitions: HashMap::new(),
        writers: writer_queues,
        commands: command_tx.clone(),
        budgets: catalog
            .tables()
            .iter()
            .map(|t| {
                let limit = Cost::new(
                    config.batch.max_rows_in_flight,
                    config.batch.max_bytes_in_flight,
                );
                (t.id, TableBudget::new(limit))
            })
            .collect(),
        held_since: None,
        health: health.clone(),
        rows: RowBuffer::default(),
    };

    // Main loop: until shutdown, then until the consumer confirms it stopped.
    // From the signal on, everything left has `shutdown_timeout` in all.
    let timeout = config.shutdown_timeout();
    let mut deadline: Option<Instant> = None;
    loop {
        let due = router.batcher.next_deadline();
        // A table out of room holds reading up until a commit frees room,
        // or until its partitions pause (see budget.rs).
        let held_up = router.held_up();
        tokio::select! {
            event = events.recv(), if !held_up => match event {
                Some(Event::Stopped) | None => break,
                Some(event) => router.handle(event),
            },
            Some(written) = reports.recv() => router.written(written),
            _ = sleep_until(due) => {
                for batch in router.batcher.take_due(Instant::now()) {
                    router.ship(batch);
                }
            }
            _ = sleep_until(router.pause_due()), if held_up => router.pause_overdue(),
            _ = shutdown.cancelled(), if deadline.is_none() => {
                tracing::info!(timeout = ?timeout, "shutting down: fetching stops, batched rows are written and committed");
                consumer.stop.store(true, std::sync::atomic::Ordering::Relaxed);
                deadline = Some(Instant::now() + timeout);
            }
            // The consumer thread may be held up (a rebalance waiting for
            // the database): the shutdown does not wait for it.
            _ = sleep_until(deadline.map(|d| d - timeout / 5)) => break,
        }
    }
    let deadline = deadline.unwrap_or_else(|| Instant::now() + timeout);

    // Write what is batched, then let the writers finish; a fifth of the
    // time stays for the consumer's last Kafka commit and leaving the group.
    let finish = async {
        for batch in router.batcher.take_all() {
            router.ship(batch);
        }
        // Batches waiting for room go as earlier ones are written. A
        // blocked table waits for the operator, not for the shutdown: its
        // rows are read again at the next start.
        while !router.all_written_but_blocked() {
            tokio::select! {
                written = reports.recv() => match written {
                    Some(written) => router.written(written),
                    None => break,
                },
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        let blocked = router.blocked_with_rows();
        writers_stop.cancel();
        router.writers.clear();
        for task in writer_tasks {
            let _ = task.await;
        }
        blocked
    };
    let finished = tokio::time::timeout_at((deadline - timeout / 5).into(), finish).await;
    let left = router.rows_left();
    writers_stop.cancel();
    let (finished, blocked) = match finished {
        Ok(blocked) => (true, blocked),
        Err(_) => (false, Vec::new()),
    };
    let _ = command_tx.send(Command::Close);
    drop(command_tx);
    while !consumer.thread.is_finished() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let closed = consumer.thread.is_finished();
    if let Some(task) = progress_task {
        task.abort();
    }
    match (finished, closed) {
        (true, _) if !blocked.is_empty() => {
            tracing::warn!(
                tables = ?blocked, rows = left,
                "stopped without waiting for blocked tables: their rows are not committed and are read again from the stored offsets at the next start (nothing is lost)"
            );
            Ok(())
        }
        (true, true) => {
            tracing::info!("stopped cleanly: everything read is committed");
            Ok(())
        }
        (true, false) => {
            tracing::warn!(
                "stopped: everything read is committed, but the consumer did not leave the group in time (its partitions move after the session timeout)"
            );
            Ok(())
        }
        (false, _) => {
            let e = RunError::ShutdownTimeout {
                timeout,
                rows: left,
            };
            tracing::error!("{e}");
            Err(e)
        }
    }
}

/// One writer's task: where its reports go.
struct WriterTask {
    table: TableId,
    name: Arc<str>,
    index: usize,
    /// The consumer thread: Kafka commits of what the database committed.
    commands: std_mpsc::Sender<Command>,
    /// The router: what was written, how long it took, the budget it held.
    reports: mpsc::UnboundedSender<Written>,
    /// Cancelled when the shutdown deadline has passed: retries stop.
    stop: CancellationToken,
    health: Arc<Health>,
}

/// Waits for a writer's task; one that ends by a panic (a defect of the
/// sink) is reported: one `error` line, and its table blocked with the
/// reason, so that `/ready` and `/status` say so rather than the table
/// silently no longer being written. Its batches stay uncommitted and are
/// read again after a restart.
async fn supervise(task: JoinHandle<()>, table: Arc<str>, writer: usize, health: Arc<Health>) {
    let Err(error) = task.await else {
        return;
    };
    let what = if error.is_panic() {
        let panic = error.into_panic();
        panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_owned())
    } else {
        error.to_string()
    };
    let reason = format!(
        "writer {writer} of table {table} stopped ({}): a defect of the sink — its rows are not committed, and a restart reads them again",
        crate::quote::capped(&what)
    );
    tracing::error!(%table, writer, "{reason}");
    health.set_blocked(&table, Some(reason));
}

impl WriterTask {
    /// Takes the table's flushes from `rx` and writes them, joining those
    /// that arrive meanwhile ([`Coalescer`]); reports each; re-checks a
    /// blocked table while nothing arrives. Ends when `rx` closes (or the
    /// shutdown deadline stops a write).
    async fn run(self, mut writer: Writer, mut rx: mpsc::Receiver<Flush>, mut next: Coalescer) {
        writer.warm_up().await;
        loop {
            let current = match next.take() {
                Some(flush) => flush,
                None if next.is_closed() => break,
                None => {
                    // A blocked table with nothing to write is re-checked
                    // all the same, so that it heals.
                    let recheck = writer.is_blocked().then_some(RECHECK);
                    match recv_or_recheck(&mut rx, recheck).await {
                        Some(Some(flush)) => flush,
                        Some(None) => {
                            writer.recheck().await;
                            continue;
                        }
                        None => break,
                    }
                }
            };
            fail::fail_point!("writer-write", &*self.name == "level1_quotes", |_| {});
            let started = Instant::now();
            let held = current.held;
            let write = writer.write(current, &self.stop);
            tokio::pin!(write);
            let report = loop {
                tokio::select! {
                    report = &mut write => break report,
                    flush = rx.recv(), if next.wants_more() => next.offer(flush),
                }
            };
            let Some(report) = report else { break };
            self.report(report, started.elapsed(), held);
        }
    }

    /// Counts a written flush, asks for its Kafka commit, and tells the router.
    fn report(&self, report: Report, took: Duration, held: Cost) {
        if let Some(topic) = &report.topic {
            account(&self.health, &self.name, topic, &report);
        }
        // Between the database commit and the Kafka commit.
        fail::fail_point!("commit-after", |_| std::process::abort());
        if let (Some(topic), false) = (&report.topic, report.committed.is_empty()) {
            let _ = self.commands.send(Command::Commit {
                topic: topic.clone(),
                offsets: report.committed.clone(),
            });
        }
        let _ = self.reports.send(Written {
            table: self.table,
            writer: self.index,
            took,
            held,
            report,
        });
    }
}

/// How often a blocked table with nothing to write is re-checked.
const RECHECK: Duration = Duration::from_secs(5);

/// The next flush (Some(Some)), or Some(None) when `recheck` passed first,
/// or None when the queue is closed.
async fn recv_or_recheck(
    rx: &mut mpsc::Receiver<Flush>,
    recheck: Option<Duration>,
) -> Option<Option<Flush>> {
    let Some(after) = recheck else {
        return rx.recv().await.map(Some);
    };
    tokio::select! {
        flush = rx.recv() => flush.map(Some),
        _ = tokio::time::sleep(after) => Some(None),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// A writer's news for the router: how long a transaction took (what
/// adaptive lingers follow), and what it committed or found fenced.
struct Written {
    table: TableId,
    writer: usize,
    took: Duration,
    /// What of the table's budget the written flush held.
    held: Cost,
    report: Report,
}

/// Routes events: decodes, validates, batches and ships.
struct Router<'c> {
    config: &'c Config,
    catalog: &'c Catalog,
    /// The envelope dataTypes any table takes.
    envelopes: Vec<&'c str>,
    batcher: Batcher,
    partitions: HashMap<(Arc<str>, i32), PartitionState>,
    /// The writer tasks' queues, by table and writer.
    writers: HashMap<(TableId, usize), mpsc::Sender<Flush>>,
    commands: std_mpsc::Sender<Command>,
    /// Per table, the rows between batching and commit and the batches
    /// waiting for room (with their writer): a table out of room holds
    /// reading up until a commit frees room, at most 0.5 s, then pauses
    /// its own partitions.
    budgets: HashMap<TableId, TableBudget<(usize, Flush)>>,
    /// Since when reading has been held up, and by which table first.
    held_since: Option<(TableId, Instant)>,
    health: Arc<Health>,
    /// The rows of the message at hand, encoded, on their way into its
    /// batch: one buffer for every message, so none allocates its own.
    rows: RowBuffer,
}

impl Router<'_> {
    fn handle(&mut self, event: Event) {
        match event {
            Event::Messages(messages) => {
                // One reading of the clocks for the chunk: its messages
                // arrived together.
                let clock = (now(), Instant::now());
                for (message, epoch) in messages {
                    self.message(message, epoch, clock);
                }
            }
            Event::Assigned(assigned) => {
                for Assignment {
                    topic,
                    partition,
                    epoch,
                    stored,
                    start,
                    high,
                    topic_id,
                } in assigned
                {
                    self.batcher.drop_partitions(&topic, &[partition]);
                    // The stored offset may be ahead of the group's Kafka
                    // commit (a crash between the two commits): commit where
                    // reading starts, so lag tools agree even before anything
                    // new arrives. (Not the stored offset when it lies
                    // outside the log: reading starts elsewhere then.)
                    if let Some(next) = stored {
                        let _ = self.commands.send(Command::Commit {
                            topic: topic.clone(),
                            offsets: vec![(partition, start.unwrap_or(next))],
                        });
                    }
                    self.health.assigned(&topic, partition, start, high);
                    let counters = self.health.topic(&topic);
                    let route = self
                        .catalog
                        .route(&topic, &self.config.dead_letter.suffix)
                        .map(Arc::new);
                    if route.is_none() {
                        tracing::error!(%topic, partition, "assigned a topic no table takes (its messages are not read): the subscription pattern and the tables' topic patterns disagree");
                    }
                    let limits = match (self.config.batch.topics.get(&*topic), &route) {
                        (Some(l), _) => Limits::from(l),
                        (None, Some(r)) => Limits::from(&self.catalog.table(r.table).batch),
                        (None, None) => Limits::from(&Default::default()),
                    };
                    // A partition of a table out of room waits with the others.
                    if route
                        .as_ref()
                        .and_then(|r| self.budgets.get(&r.table))
                        .is_some_and(TableBudget::is_paused)
                    {
                        let _ = self
                            .commands
                            .send(Command::Pause(vec![(topic.clone(), partition)]));
                    }
                    self.partitions.insert(
                        (topic, partition),
                        PartitionState {
                            epoch,
                            topic_id,
                            expected: stored,
                            counters,
                            read_any: false,
                            route,
                            limits,
                        },
                    );
                }
            }
            Event::Revoked(revoked) => {
                for (topic, partition) in revoked {
                    self.health.revoked(&topic, partition);
                    self.batcher.drop_partitions(&topic, &[partition]);
                    self.partitions.remove(&(topic, partition));
                }
            }
            Event::Stopped => {}
        }
    }

    fn message(&mut self, message: SourceMessage, epoch: u64, clock: (Timestamp, Instant)) {
        let key = (message.topic.clone(), message.partition);
        let (route, limits) = match self.partitions.get_mut(&key) {
            Some(state) if state.epoch == epoch => {
                state.counters.consumed.fetch_add(1, Relaxed);
                state.counters.consumed_metric.increment(1);
                if !state.read_any {
                    state.read_any = true;
                    if let Some(t) = message.timestamp_ms {
                        self.health.first_read(&message.topic, message.partition, t);
                    }
                }
                // A topic no table takes was reported at its assignment.
                let Some(route) = state.route.clone() else {
                    return;
                };
                (route, state.limits)
            }
            // Read under an earlier assignment: it will be read again.
            _ => return,
        };
        let outcome = process(
            self.catalog,
            &route,
            &self.envelopes,
            &message,
            &self.config.bounds(),
            clock.0,
            &mut self.rows,
        );
        if let Outcome::DeadLetter(rejection) = &outcome {
            tracing::warn!(
                topic = %message.topic, partition = message.partition, offset = message.offset,
                reason = %rejection.reason, class = rejection.class.label(),
                "invalid message goes to the dead-letter topic"
            );
        }
        let entry = Entry { message, outcome };
        if let Some(batch) = self
            .batcher
            .push(route.table, entry, &mut self.rows, limits, clock.1)
        {
            self.ship(batch);
        }
    }

    /// Hands a batch to its writer, with the fences of its partitions.
    fn ship(&mut self, batch: Batch) {
        let mut fences = Vec::with_capacity(batch.spans.len());
        for (&partition, span) in &batch.spans {
            let Some(state) = self.partitions.get_mut(&(batch.topic.clone(), partition)) else {
                continue;
            };
            fences.push(Fence {
                partition,
                expected: state.expected,
                next: span.last + 1,
                epoch: state.epoch,
                topic_id: state.topic_id.clone(),
            });
            state.expected = Some(span.last + 1);
        }
        if fences.is_empty() {
            return;
        }
        let table = self.catalog.table(batch.table).name.clone();
        metrics::histogram!("timesink_batch_rows", "table" => table.clone())
            .record(batch.rows as f64);
        metrics::histogram!("timesink_batch_bytes", "table" => table).record(batch.bytes as f64);
        let (table, writer) = (batch.table, batch.writer);
        let cost = Cost::new(batch.rows, batch.bytes);
        if let Some(budget) = self.budgets.get_mut(&table) {
            let flush = Flush {
                batch,
                fences,
                held: Cost::default(),
            };
            budget.push(cost, (writer, flush));
        }
        self.admit(table);
    }

    /// Hands a table's waiting batches to its writers while its budget has
    /// room and their queues take them; pauses or resumes the table's
    /// partitions as that changes.
    fn admit(&mut self, table: TableId) {
        let Some(budget) = self.budgets.get_mut(&table) else {
            return;
        };
        while let Some((held, (writer, mut flush))) = budget.admit() {
            let Some(queue) = self.writers.get(&(table, writer)) else {
                budget.release(held);
                continue;
            };
            flush.held = held;
            match queue.try_send(flush) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(mut flush)) => {
                    flush.held = Cost::default();
                    budget.put_back(held, (writer, flush));
                    break;
                }
                // Its writer stopped (see `supervise`): the batch waits,
                // uncommitted, and the table is reported blocked.
                Err(mpsc::error::TrySendError::Closed(flush)) => {
                    budget.put_back(held, (writer, flush));
                    break;
                }
            }
        }
        // Only a change is exported: this runs for every batch shipped.
        let Some(change) = budget.fetching(Instant::now()) else {
            return;
        };
        let name = self.catalog.table(table).name.clone();
        let paused = if change == Fetching::Pause {
            metrics::counter!("timesink_table_pauses_total", "table" => name.clone()).increment(1);
            1.0
        } else {
            0.0
        };
        metrics::gauge!("timesink_table_paused", "table" => name.clone()).set(paused);
        let partitions = self.partitions_of(table);
        let what = match change {
            Fetching::Pause => "table freed no room for 0.5 s: its partitions paused",
            Fetching::Resume => "table has room again: its partitions resumed",
        };
        tracing::debug!(
            table = %name,
            partitions = partitions.len(),
            "{what}"
        );
        let _ = self.commands.send(match change {
            Fetching::Pause => Command::Pause(partitions),
            Fetching::Resume => Command::Resume(partitions),
        });
    }

    /// Whether a table out of room (and not paused) holds reading up.
    /// The time it does is counted against the table that held it up
    /// first: backpressure, the sink waiting for PostgreSQL.
    fn held_up(&mut self) -> bool {
        let holding = self
            .budgets
            .iter()
            .find_map(|(table, budget)| budget.holds_up().then_some(*table));
        match (holding, self.held_since) {
            (Some(table), None) => self.held_since = Some((table, Instant::now())),
            (None, Some((table, since))) => {
                self.held_since = None;
                let name = self.catalog.table(table).name.clone();
                metrics::gauge!("timesink_backpressure_seconds", "table" => name)
                    .increment(since.elapsed().as_secs_f64());
            }
            _ => {}
        }
        holding.is_some()
    }

    /// The earliest moment a table holding reading up is due to pause.
    fn pause_due(&self) -> Option<Instant> {
        self.budgets
            .values()
            .filter_map(TableBudget::pause_due)
            .min()
    }

    /// Pauses the partitions of the tables that held reading up for
    /// [`budget::PAUSE_AFTER`] without room, so that the router reads on.
    fn pause_overdue(&mut self) {
        let now = Instant::now();
        let overdue: Vec<TableId> = self
            .budgets
            .iter()
            .filter(|(_, b)| b.pause_due().is_some_and(|due| due <= now))
            .map(|(table, _)| *table)
            .collect();
        for table in overdue {
            self.admit(table);
        }
    }

    /// The assigned partitions whose topic feeds `table`.
    fn partitions_of(&self, table: TableId) -> Vec<(Arc<str>, i32)> {
        self.partitions
            .iter()
            .filter(|(_, state)| state.route.as_ref().is_some_and(|r| r.table == table))
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// The rows batched, waiting or being written: not yet committed.
    fn rows_left(&self) -> usize {
        self.batcher.buffered_rows() + self.budgets.values().map(TableBudget::rows).sum::<usize>()
    }

    /// Whether every batch handed out has been written, but those of
    /// tables reported blocked (which wait for the operator).
    fn all_written_but_blocked(&self) -> bool {
        self.budgets.iter().all(|(table, budget)| {
            budget.is_idle() || self.health.is_blocked(&self.catalog.table(*table).name)
        })
    }

    /// The blocked tables that still hold rows.
    fn blocked_with_rows(&self) -> Vec<String> {
        self.budgets
            .iter()
            .filter(|(_, budget)| !budget.is_idle())
            .map(|(table, _)| self.catalog.table(*table).name.clone())
            .filter(|name| self.health.is_blocked(name))
            .collect()
    }

    fn written(&mut self, written: Written) {
        let Written {
            table,
            writer,
            took,
            held,
            report,
        } = written;
        if let Some(budget) = self.budgets.get_mut(&table) {
            budget.release(held);
        }
        self.admit(table);
        self.batcher.observe_write(table, took);
        let spec = self.catalog.table(table);
        let limits = Limits::from(&spec.batch);
        metrics::gauge!("timesink_batch_linger_seconds", "table" => spec.name.clone())
            .set(self.batcher.linger(table, writer, &limits).as_secs_f64());
        if !report.fenced.is_empty() {
            self.fenced(report);
        }
    }

    /// Another instance wrote these partitions: drop what is buffered and re-read.
    fn fenced(&mut self, report: Report) {
        let Some(topic) = report.topic else { return };
        for fence in report.fenced {
            let key = (topic.clone(), fence.partition);
            if self
                .partitions
                .get(&key)
                .is_some_and(|s| s.epoch == fence.epoch)
            {
                self.batcher.drop_partitions(&topic, &[fence.partition]);
                self.partitions.remove(&key);
                let _ = self.commands.send(Command::Resync {
                    topic: topic.clone(),
                    partition: fence.partition,
                });
            }
        }
    }
}

/// Counts what a writer committed and dead-lettered, in the metrics and in `/status`.
fn account(health: &Health, table: &str, topic: &Arc<str>, report: &Report) {
    metrics::counter!(
        "timesink_rows_written_total",
        "table" => table.to_owned(),
        "topic" => topic.to_string()
    )
    .increment(report.rows as u64);
    health.committed(topic, report.rows as u64, &report.committed_timestamps);
    if !report.dead_letters.is_empty() {
        health.dead_lettered(topic, report.dead_letters.len() as u64);
        for class in RejectClass::ALL {
            let n = report.dead_letters.iter().filter(|&&c| c == class).count();
            if n > 0 {
                metrics::counter!(
                    "timesink_dead_letters_total",
                    "topic" => topic.to_string(),
                    "reason" => class.label()
                )
                .increment(n as u64);
            }
        }
    }
}

fn now() -> Timestamp {
    Timestamp(chrono::Utc::now().timestamp_micros())
}

/// Decodes and validates one message: its rows, encoded into `rows` (which
/// it leaves as it found them when the message is dead-lettered), or why it
/// is dead-lettered. `route` is where its topic goes; `envelopes` the
/// dataTypes any table takes.
pub fn process(
    catalog: &Catalog,
    route: &Route,
    envelopes: &[&str],
    message: &SourceMessage,
    bounds: &Bounds,
    now: Timestamp,
    rows: &mut RowBuffer,
) -> Outcome {
    if let Some(value) = message.value().filter(|v| v.len() > bounds.value_bytes) {
        return Outcome::DeadLetter(Rejection::new(
            RejectClass::TooLarge,
            format!(
                "value of {} bytes exceeds max_value_bytes ({})",
                value.len(),
                bounds.value_bytes
            ),
        ));
    }
    let table = catalog.table(route.table);
    let mut inflated = Vec::new();
    let decoded = Encoding::from_headers(message.header_pairs()).and_then(|encoding| {
        decode::decode(
            table,
            encoding,
            message.value(),
            &mut inflated,
            bounds,
            envelopes,
        )
    });
    let records = match decoded {
        Ok(records) => records,
        Err(e) => return Outcome::DeadLetter(Rejection::new(e.class(), e.to_string())),
    };
    let ctx = Context {
        message,
        captures: &route.captures,
        now,
    };
    let many = records.len() > 1;
    let before = rows.len();
    crate::decimal::with_max_digits(bounds.decimal_digits, || {
        for (i, record) in records.iter().enumerate() {
            if let Err(e) = validate::validate(table, record, &ctx, rows) {
                rows.truncate(before);
                let reason = if many {
                    format!("element {i}: {e}")
                } else {
                    e.to_string()
                };
                let class = if e.unreadable {
                    RejectClass::Decode
                } else {
                    RejectClass::Validation
                };
                return Outcome::DeadLetter(Rejection::new(class, reason));
            }
        }
        Outcome::Rows(rows.len() - before)
    })
}

/// Logs rows/s per table, dead letters and the consumer lag every
/// `progress_interval_ms`, from the counters of `/status`.
fn spawn_progress(
    config: &Config,
    catalog: &Arc<Catalog>,
    health: Arc<Health>,
) -> Option<JoinHandle<()>> {
    if config.progress_interval_ms == 0 {
        return None;
    }
    let interval = Duration::from_millis(config.progress_interval_ms);
    let catalog = catalog.clone();
    let suffix = config.dead_letter.suffix.clone();
    Some(tokio::spawn(async move {
        let tables = catalog.tables();
        let mut last = vec![0u64; tables.len()];
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let status = health.status();
            let (mut rows, mut dead_letters) = (vec![0u64; tables.len()], 0);
            for (topic, counts) in &status.topics {
                if let Some(route) = catalog.route(topic, &suffix) {
                    rows[route.table.index()] += counts.rows_written;
                }
                dead_letters += counts.dead_letters;
            }
            let secs = interval.as_secs_f64();
            let mut parts = Vec::new();
            for (i, t) in tables.iter().enumerate() {
                let rate = (rows[i] - last[i]) as f64 / secs;
                parts.push(format!("{} {:.0}/s ({})", t.name, rate, rows[i]));
            }
            last = rows;
            tracing::info!(
                "progress: {} | dead letters {dead_letters} | lag {} messages",
                parts.join(", "),
                status.lag_messages
            );
        }
    }))
}
