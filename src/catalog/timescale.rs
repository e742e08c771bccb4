//! What a table becomes under TimescaleDB, as checked from its description:
//! the hypertable and its chunk width, compression, retention, and the
//! continuous aggregates over it. [`super::schema`] makes the database
//! hold it; [`super::sql`] writes the SQL.

use super::interval::Interval;
use super::spec::{AggregateSpec, TimescaleSpec};
use super::{Column, ColumnType};

/// A table's TimescaleDB settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timescale {
    /// Whether the table is a hypertable on its time column.
    pub hypertable: bool,
    pub chunk_interval: Option<Interval>,
    pub compression: Option<Compression>,
    pub retention: Option<Interval>,
    /// COPY writes compressed batches (an append-only table).
    pub direct_compress: bool,
    /// The most tuples a transaction of the sink's may decompress.
    pub max_tuples_decompressed: u64,
    /// The keys under the table the configuration names, dotted
    /// (`timescaledb.retention`, `aggregates.c.refresh.every`): the
    /// settings the sink changes in a table it did not just create.
    pub named: Vec<String>,
}

/// Chunks older than `after` are compressed, segmented and ordered so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compression {
    pub after: Interval,
    pub segment_by: Vec<String>,
    /// Columns and whether descending.
    pub order_by: Vec<(String, bool)>,
}

/// A continuous aggregate over a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aggregate {
    pub name: String,
    pub bucket: Interval,
    pub group_by: Vec<String>,
    pub columns: Vec<AggregateColumn>,
    pub real_time: bool,
    pub refresh: Option<Refresh>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateColumn {
    pub name: String,
    pub function: Function,
    pub of: Option<String>,
}

/// The aggregate functions a column may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    First,
    Last,
    Min,
    Max,
    Sum,
    Avg,
    Count,
}

impl Function {
    fn parse(name: &str) -> Option<Function> {
        Some(match name {
            "first" => Function::First,
            "last" => Function::Last,
            "min" => Function::Min,
            "max" => Function::Max,
            "sum" => Function::Sum,
            "avg" => Function::Avg,
            "count" => Function::Count,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Function::First => "first",
            Function::Last => "last",
            Function::Min => "min",
            Function::Max => "max",
            Function::Sum => "sum",
            Function::Avg => "avg",
            Function::Count => "count",
        }
    }
}

/// A refresh policy: every `every`, the changed buckets between
/// `start_offset` (None: the table's beginning) and `end_offset` ago.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refresh {
    pub start_offset: Option<Interval>,
    pub end_offset: Interval,
    pub every: Interval,
}

/// A problem with a key under the table (`.timescaledb.retention`), and what.
pub type Problem = (String, String);

fn interval(key: &str, text: &str) -> Result<Interval, Problem> {
    Interval::parse(text).map_err(|e| (key.to_owned(), e))
}

/// Checks the table's TimescaleDB settings against its columns.
pub fn build(
    spec: &TimescaleSpec,
    columns: &[Column],
    time: Option<usize>,
    has_key: bool,
) -> Result<Timescale, Problem> {
    let has = |key: &str, name: &str| {
        if columns.iter().any(|c| c.name == name) {
            Ok(())
        } else {
            Err((key.to_owned(), format!("no column `{name}`")))
        }
    };
    let hypertable = spec.hypertable && time.is_some();
    if spec.hypertable
        && time.is_none()
        && (spec.compress_after.is_some()
            || spec.chunk_interval.is_some()
            || spec.retention.is_some())
    {
        return Err((".timescaledb".into(), "a hypertable needs `time`".into()));
    }
    for column in &spec.segment_by {
        has(".timescaledb.segment_by", column)?;
    }
    let mut order_by = Vec::new();
    for item in &spec.order_by {
        let item = item.trim();
        let (column, desc) = match item.rsplit_once(' ') {
            Some((c, "DESC")) => (c.trim(), true),
            Some((c, "ASC")) => (c.trim(), false),
            _ => (item, false),
        };
        has(".timescaledb.order_by", column)?;
        order_by.push((column.to_owned(), desc));
    }
    if order_by.is_empty()
        && let Some(t) = time
    {
        order_by.push((columns[t].name.clone(), true));
    }
    let compression = match &spec.compress_after {
        None => None,
        Some(after) => Some(Compression {
            after: interval(".timescaledb.compress_after", after)?,
            segment_by: spec.segment_by.clone(),
            order_by,
        }),
    };
    if spec.direct_compress {
        // TimescaleDB turns it off, silently but for a warning, on a table
        // with a unique index, and has nothing to do without compression.
        let problem = if has_key {
            Some(
                "needs a table without a primary key (`primary_key = []`): TimescaleDB turns it off on a table with a unique index",
            )
        } else if spec.compress_after.is_none() || !hypertable {
            Some("needs compression (`compress_after`) on a hypertable")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err((".timescaledb.direct_compress".into(), problem.into()));
        }
    }
    if spec.max_tuples_decompressed == 0 {
        return Err((
            ".timescaledb.max_tuples_decompressed".into(),
            "must be above 0: with no limit, late rows could leave a whole table decompressed on disk".into(),
        ));
    }
    Ok(Timescale {
        hypertable,
        direct_compress: spec.direct_compress,
        max_tuples_decompressed: spec.max_tuples_decompressed,
        named: Vec::new(),
        chunk_interval: spec
            .chunk_interval
            .as_deref()
            .map(|t| interval(".timescaledb.chunk_interval", t))
            .transpose()?,
        compression,
        retention: spec
            .retention
            .as_deref()
            .map(|t| interval(".timescaledb.retention", t))
            .transpose()?,
    })
}

/// Checks an aggregate declared over a table (`key`: `.aggregates.<name>`).
pub fn build_aggregate(
    name: &str,
    spec: &AggregateSpec,
    columns: &[Column],
    timescale: &Timescale,
) -> Result<Aggregate, Problem> {
    let key = |k: &str| format!(".aggregates.{name}{k}");
    if let Err(problem) = super::check_name("aggregate", name) {
        return Err((key(""), problem));
    }
    if name.contains('.') {
        return Err((
            key(""),
            "an aggregate's name has no `.`: it lives in the table's schema".into(),
        ));
    }
    if !timescale.hypertable {
        return Err((
            key(""),
            "a continuous aggregate needs the table to be a hypertable (`time`)".into(),
        ));
    }
    let bucket = interval(&key(".bucket"), &spec.bucket)?;
    let column = |k: &str, c: &str| {
        columns
            .iter()
            .find(|x| x.name == c)
            .ok_or_else(|| (key(k), format!("no column `{c}` in the table")))
    };
    let mut names: Vec<&str> = vec!["bucket"];
    for g in &spec.group_by {
        column(".group_by", g)?;
        names.push(g);
    }
    if spec.columns.is_empty() {
        return Err((key(".columns"), "an aggregate needs a column".into()));
    }
    let mut built = Vec::new();
    for (i, c) in spec.columns.iter().enumerate() {
        let k = format!(".columns[{i}]");
        let function = Function::parse(&c.function).ok_or_else(|| {
            (
                key(&k),
                format!(
                    "fn {:?} is not first, last, min, max, sum, avg or count",
                    c.function
                ),
            )
        })?;
        match (&c.of, function) {
            (None, Function::Count) => {}
            (None, _) => {
                return Err((key(&k), format!("fn {} needs `of`", function.name())));
            }
            (Some(of), _) => {
                let source = column(&k, of)?;
                let numeric = matches!(
                    source.column_type,
                    ColumnType::Numeric
                        | ColumnType::BigInt
                        | ColumnType::Integer
                        | ColumnType::Double
                );
                if matches!(function, Function::Sum | Function::Avg) && !numeric {
                    return Err((
                        key(&k),
                        format!(
                            "fn {} of `{of}`, a {}: it takes a number",
                            function.name(),
                            source.column_type.name()
                        ),
                    ));
                }
                if source.column_type == ColumnType::Jsonb && function != Function::Count {
                    return Err((key(&k), format!("`{of}` is jsonb, which has no order")));
                }
            }
        }
        if names.contains(&c.name.as_str()) {
            return Err((key(&k), format!("column `{}` twice", c.name)));
        }
        names.push(&c.name);
        built.push(super::timescale::AggregateColumn {
            name: c.name.clone(),
            function,
            of: c.of.clone(),
        });
    }
    let refresh = if spec.refresh.enabled {
        let r = &spec.refresh;
        let start_offset = r
            .start_offset
            .as_deref()
            .map(|t| interval(&key(".refresh.start_offset"), t))
            .transpose()?;
        let end_offset = match &r.end_offset {
            Some(t) => interval(&key(".refresh.end_offset"), t)?,
            None => bucket.clone(),
        };
        let every = match &r.every {
            Some(t) => interval(&key(".refresh.every"), t)?,
            None => bucket.clone(),
        };
        // TimescaleDB refuses a refresh window of less than two buckets.
        if let Some(start) = &start_offset
            && start.micros() - end_offset.micros() < 2 * bucket.micros()
        {
            return Err((
                key(".refresh.start_offset"),
                format!(
                    "the refresh window from {start} to {end_offset} ago must span at least two buckets of {bucket}"
                ),
            ));
        }
        // A refresh over chunks that retention dropped empties their
        // buckets: the window must stay within what is kept.
        if let Some(retention) = &timescale.retention {
            match &start_offset {
                Some(start) if start.micros() < retention.micros() => {}
                _ => {
                    return Err((
                        key(".refresh.start_offset"),
                        format!(
                            "the table drops chunks older than {retention} (timescaledb.retention): set a start_offset shorter than that, so that a refresh never empties the buckets of dropped rows"
                        ),
                    ));
                }
            }
        }
        Some(Refresh {
            start_offset,
            end_offset,
            every,
        })
    } else {
        None
    };
    Ok(Aggregate {
        name: name.to_owned(),
        bucket,
        group_by: spec.group_by.clone(),
        columns: built,
        real_time: spec.real_time,
        refresh,
    })
}

/// What the database holds of a table's TimescaleDB settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveTable {
    pub hypertable: bool,
    /// The width of new chunks, in microseconds.
    pub chunk_interval: Option<i64>,
    pub compression_enabled: bool,
    /// As `timescaledb_information.hypertable_compression_settings` shows
    /// them: segment-by columns joined by `,`, order-by items likewise.
    pub segment_by: Option<String>,
    pub order_by: Option<String>,
    /// The described order-by items as TimescaleDB shows them (it quotes
    /// what PostgreSQL would).
    pub wanted_order_by: Option<String>,
    /// The policies' ages, in microseconds.
    pub compress_after: Option<i64>,
    pub retention: Option<i64>,
    /// Unique indexes and the table's own triggers.
    pub unique_indexes: i64,
    pub triggers: i64,
    /// The sink created the table in this step: everything of it is set
    /// from the description.
    pub created: bool,
    /// A plain table that holds rows (making it a hypertable migrates
    /// them under an exclusive lock).
    pub has_rows: bool,
}

/// What the database holds of an aggregate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveAggregate {
    /// A relation of that name exists.
    pub exists: bool,
    /// It is a continuous aggregate.
    pub continuous: bool,
    /// The mark the sink left on it (its query), if any.
    pub mark: Option<String>,
    pub materialized_only: bool,
    /// Its refresh policy: start offset (None: unbounded), end offset and
    /// schedule, in microseconds.
    pub refresh: Option<(Option<i64>, Option<i64>, i64)>,
}

/// One change that makes the database hold what the description says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// In words, for the log and `timesink check`.
    pub what: String,
    pub sql: String,
    /// The description's keys that ask for it (under the table), e.g.
    /// `timescaledb.retention`; empty for something the sink creates (a
    /// hypertable of a new table, a missing aggregate).
    pub keys: Vec<String>,
}

/// What differs between a table's description and the database, as the
/// changes that fix it, and what the sink leaves alone: a setting of a
/// table it did not just create whose key the configuration does not name
/// (a default never overrides an operator's setting), a plain table holding
/// rows where `run` would have to migrate them, an aggregate of another
/// definition (dropping it would lose what it holds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub changes: Vec<Change>,
    pub left_alone: Vec<String>,
}

/// An interval in microseconds, in the largest whole unit.
pub fn shown(micros: Option<i64>) -> String {
    let Some(us) = micros else {
        return "none".to_owned();
    };
    for (unit, size) in [
        ("day", 86_400_000_000),
        ("hour", 3_600_000_000),
        ("minute", 60_000_000),
        ("second", 1_000_000),
    ] {
        if us != 0 && us % size == 0 {
            let n = us / size;
            return format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
        }
    }
    format!("{} seconds", us as f64 / 1e6)
}

/// The change that makes the table's policy of `kind` (`compression`,
/// `retention`) act on chunks older than `wanted` (None: no policy), where
/// the database's acts after `live`; None when they agree.
fn policy_change(
    table: &super::Table,
    kind: &str,
    wanted: Option<&Interval>,
    live: Option<i64>,
) -> Option<Change> {
    if live == wanted.map(Interval::micros) {
        return None;
    }
    let database = match live {
        None => "none".to_owned(),
        Some(_) => format!("after {}", shown(live)),
    };
    let what = match wanted {
        Some(after) => format!(
            "{}: {kind} policy after {after} (database: {database})",
            table.name
        ),
        None => format!("{}: no {kind} policy (database: {database})", table.name),
    };
    Some(Change {
        what,
        sql: super::sql::policy(table, kind, wanted),
        keys: vec![format!("timescaledb.{}", policy_key(kind))],
    })
}

/// The description's key of a policy kind.
fn policy_key(kind: &str) -> &'static str {
    match kind {
        "compression" => "compress_after",
        _ => "retention",
    }
}

/// Who applies a plan: `run` at start, or `timesink schema`, the owner's
/// step, which may also migrate a plain table's rows into a hypertable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Run,
    Owner,
}

/// The changes that bring `live` to what `table` describes. Pure: the
/// caller reads the live state and runs the changes.
pub fn plan(
    table: &super::Table,
    live: &LiveTable,
    aggregates: &[LiveAggregate],
    step: Step,
) -> Plan {
    let mut plan = everything(table, live, aggregates, step);
    // A new table, or a plain one becoming a hypertable now: its settings
    // are the sink's to set.
    if live.created || !live.hypertable {
        return plan;
    }
    // A table the sink did not just create: what an operator set stays,
    // unless the configuration names the key.
    // Named: the key itself, a key within it, or a section holding it.
    let within = |a: &str, b: &str| a.strip_prefix(b).is_some_and(|r| r.starts_with('.'));
    let named = |key: &String| {
        table
            .timescaledb
            .named
            .iter()
            .any(|n| n == key || within(n, key) || within(key, n))
    };
    let (kept, left): (Vec<Change>, Vec<Change>) = plan
        .changes
        .into_iter()
        .partition(|c| c.keys.is_empty() || c.keys.iter().any(named));
    plan.changes = kept;
    plan.left_alone.extend(left.into_iter().map(|c| {
        format!(
            "{} — left as it is: not named in the configuration (set `tables.{}.{}` to have the sink change it)",
            c.what, table.name, c.keys[0]
        )
    }));
    plan
}

/// Every change that brings `live` to the description, named or not.
fn everything(
    table: &super::Table,
    live: &LiveTable,
    aggregates: &[LiveAggregate],
    step: Step,
) -> Plan {
    use super::sql;
    let mut plan = Plan::default();
    let ts = &table.timescaledb;
    let Some(time) = table.time.filter(|_| ts.hypertable) else {
        return plan;
    };
    let time = &table.columns[time].name;
    let name = &table.name;
    let mut change = |what: String, sql: String, keys: &[String]| {
        plan.changes.push(Change {
            what,
            sql,
            keys: keys.to_vec(),
        })
    };
    let key = |k: &str| vec![format!("timescaledb.{k}")];
    if !live.hypertable {
        if live.has_rows && step == Step::Run {
            plan.left_alone.push(format!(
                "{name}: a plain table holding rows, not a hypertable — `timesink schema` makes it one \
                 (migrating its rows under an exclusive lock); `run` never does"
            ));
            return plan;
        }
        change(
            format!(
                "{name}: a hypertable on {time}{}",
                if live.has_rows {
                    " (migrating the rows it holds)"
                } else {
                    ""
                }
            ),
            sql::create_hypertable(table, time, ts.chunk_interval.as_ref()),
            &[],
        );
    } else if let Some(interval) = &ts.chunk_interval
        && live.chunk_interval != Some(interval.micros())
    {
        change(
            format!(
                "{name}: new chunks span {interval} (database: {})",
                shown(live.chunk_interval)
            ),
            sql::set_chunk_interval(table, interval),
            &key("chunk_interval"),
        );
    }
    if let Some(c) = &ts.compression {
        let settings_match = live.compression_enabled
            && live.segment_by.as_deref() == Some(c.segment_by.join(",").as_str())
            && live.wanted_order_by.is_some()
            && live.order_by == live.wanted_order_by;
        if !settings_match {
            change(
                format!(
                    "{name}: compression segmented by ({}), ordered by ({}) (database: {})",
                    c.segment_by.join(", "),
                    c.order_by
                        .iter()
                        .map(|(c, d)| format!("{c}{}", if *d { " DESC" } else { "" }))
                        .collect::<Vec<_>>()
                        .join(", "),
                    if live.compression_enabled {
                        format!(
                            "segmented by ({}), ordered by ({})",
                            live.segment_by.as_deref().unwrap_or(""),
                            live.order_by.as_deref().unwrap_or("")
                        )
                    } else {
                        "off".to_owned()
                    }
                ),
                sql::compression_settings(table, c),
                &[
                    key("compress_after").remove(0),
                    key("segment_by").remove(0),
                    key("order_by").remove(0),
                ],
            );
        }
    }
    let after = ts.compression.as_ref().map(|c| &c.after);
    for c in policy_change(table, "compression", after, live.compress_after)
        .into_iter()
        .chain(policy_change(
            table,
            "retention",
            ts.retention.as_ref(),
            live.retention,
        ))
    {
        change(c.what, c.sql, &c.keys);
    }
    if ts.direct_compress && (live.unique_indexes > 0 || live.triggers > 0) {
        plan.left_alone.push(format!(
            "{name}: direct compress is configured, but TimescaleDB turns it off for this table: it has {} unique index(es) and {} trigger(s) (rows are written, uncompressed)",
            live.unique_indexes, live.triggers
        ));
    }
    for (a, found) in table.aggregates.iter().zip(aggregates) {
        let mark = sql::aggregate_mark(&sql::aggregate_query(table, time, a));
        let aggregate_key = |k: &str| vec![format!("aggregates.{}.{k}", a.name)];
        if !found.exists {
            change(
                format!("{}: a continuous aggregate over {name}", a.name),
                sql::create_aggregate(table, time, a),
                &[],
            );
        } else if !found.continuous || found.mark.as_deref() != Some(mark.as_str()) {
            plan.left_alone.push(format!(
                "{}: {} exists but is not the declared one (drop it to have the sink create it: DROP MATERIALIZED VIEW {} — its materialized buckets are computed again from {name})",
                a.name,
                if found.continuous { "a continuous aggregate" } else { "a relation" },
                sql::ident(&a.name)
            ));
            continue;
        } else if found.materialized_only == a.real_time {
            change(
                format!(
                    "{}: real-time aggregation {}",
                    a.name,
                    if a.real_time { "on" } else { "off" }
                ),
                sql::real_time(a),
                &aggregate_key("real_time"),
            );
        }
        let wanted = a.refresh.as_ref().map(|r| {
            (
                r.start_offset.as_ref().map(Interval::micros),
                Some(r.end_offset.micros()),
                r.every.micros(),
            )
        });
        if (found.exists && found.refresh != wanted) || (!found.exists && wanted.is_some()) {
            change(
                match &a.refresh {
                    Some(r) => format!(
                        "{}: refreshed every {} from {} to {} ago",
                        a.name,
                        r.every,
                        r.start_offset
                            .as_ref()
                            .map_or("the beginning".to_owned(), |s| format!("{s}")),
                        r.end_offset
                    ),
                    None => format!("{}: no refresh policy", a.name),
                },
                sql::refresh_policy(a),
                // Part of creating it, when it is new.
                &if found.exists {
                    aggregate_key("refresh")
                } else {
                    Vec::new()
                },
            );
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Catalog, built_in, toml_spec};

    fn prices() -> crate::catalog::Table {
        let catalog = Catalog::build(&built_in(), ".dlq").unwrap();
        catalog.by_name("crypto_prices").unwrap().clone()
    }

    /// What the database holds when it holds what `table` describes.
    fn as_described(table: &crate::catalog::Table) -> (LiveTable, Vec<LiveAggregate>) {
        let ts = &table.timescaledb;
        let c = ts.compression.as_ref().unwrap();
        let order = Some(
            c.order_by
                .iter()
                .map(|(c, d)| format!("\"{c}\"{}", if *d { " DESC" } else { "" }))
                .collect::<Vec<_>>()
                .join(","),
        );
        let live = LiveTable {
            hypertable: true,
            chunk_interval: Some(7 * 86_400_000_000),
            compression_enabled: true,
            segment_by: Some(c.segment_by.join(",")),
            order_by: order.clone(),
            wanted_order_by: order,
            compress_after: Some(c.after.micros()),
            ..LiveTable::default()
        };
        let aggregates = table
            .aggregates
            .iter()
            .map(|a| LiveAggregate {
                exists: true,
                continuous: true,
                mark: Some(crate::catalog::sql::aggregate_mark(
                    &crate::catalog::sql::aggregate_query(table, "time", a),
                )),
                materialized_only: !a.real_time,
                refresh: a.refresh.as_ref().map(|r| {
                    (
                        r.start_offset.as_ref().map(Interval::micros),
                        Some(r.end_offset.micros()),
                        r.every.micros(),
                    )
                }),
            })
            .collect();
        (live, aggregates)
    }

    #[test]
    fn nothing_changes_when_the_database_holds_the_description() {
        let table = prices();
        let (live, aggregates) = as_described(&table);
        assert_eq!(plan(&table, &live, &aggregates, Step::Run), Plan::default());
    }

    #[test]
    fn an_empty_database_gets_everything_in_order() {
        let table = prices();
        let missing = vec![LiveAggregate::default(); table.aggregates.len()];
        let what: Vec<String> = plan(&table, &LiveTable::default(), &missing, Step::Run)
            .changes
            .into_iter()
            .map(|c| c.what)
            .collect();
        assert_eq!(
            what,
            [
                "crypto_prices: a hypertable on time",
                "crypto_prices: compression segmented by (coin_id, exchange_id), ordered by (time DESC) (database: off)",
                "crypto_prices: compression policy after 7 days (database: none)",
                "crypto_candles_1d: a continuous aggregate over crypto_prices",
                "crypto_candles_1d: refreshed every 1 hour from the beginning to 1 day ago",
                "crypto_candles_1h: a continuous aggregate over crypto_prices",
                "crypto_candles_1h: refreshed every 10 minutes from the beginning to 1 hour ago",
                "crypto_candles_1m: a continuous aggregate over crypto_prices",
                "crypto_candles_1m: refreshed every 1 minute from the beginning to 1 minute ago",
            ]
        );
    }

    #[test]
    fn an_aggregate_of_another_definition_is_left_alone() {
        let table = prices();
        let (live, mut aggregates) = as_described(&table);
        aggregates[0].mark = Some("timesink: SELECT something else".into());
        let plan = plan(&table, &live, &aggregates, Step::Run);
        assert!(plan.changes.is_empty());
        assert!(
            plan.left_alone[0].starts_with(
                "crypto_candles_1d: a continuous aggregate exists but is not the declared one"
            ),
            "{:?}",
            plan.left_alone
        );
    }

    #[test]
    fn direct_compress_on_a_table_with_a_unique_index_is_said_to_be_off() {
        let spec = toml_spec(
            r#"
            topics = ["q"]
            primary_key = []
            time = "time"
            timescaledb = { compress_after = "1 day", direct_compress = true }
            columns = [{ name = "time", type = "timestamptz", from = "/t", required = true }]
        "#,
        )
        .unwrap();
        let catalog = Catalog::build(&[("q".to_owned(), spec)].into(), ".dlq").unwrap();
        let table = catalog.by_name("q").unwrap();
        let (mut live, _) = as_described(table);
        live.unique_indexes = 1;
        let plan = plan(table, &live, &[], Step::Run);
        assert_eq!(
            plan.left_alone,
            [
                "q: direct compress is configured, but TimescaleDB turns it off for this table: it has 1 unique index(es) and 0 trigger(s) (rows are written, uncompressed)"
            ]
        );
    }
}
