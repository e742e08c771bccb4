//! The SQL of a table, generated from its description: identifiers always
//! quoted, literals always escaped. Snapshot-tested below for a built-in table.

use super::interval::Interval;
use super::timescale::{Aggregate, Compression, Function};
use super::{ColumnType, Table};

/// An identifier as PostgreSQL reads it verbatim: in double quotes, inner
/// quotes doubled.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A string literal: in single quotes, inner quotes doubled.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn column_list(table: &Table) -> String {
    table
        .columns
        .iter()
        .map(|c| ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

fn key_list(table: &Table) -> String {
    table
        .key
        .iter()
        .map(|&i| ident(&table.columns[i].name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `CREATE TABLE IF NOT EXISTS`, with the columns in order, NOT NULL where
/// the description says, and the primary key.
pub fn create_table(table: &Table) -> String {
    let mut lines: Vec<String> = table
        .columns
        .iter()
        .map(|c| {
            let null = if c.not_null { " NOT NULL" } else { "" };
            let ty = match c.column_type {
                ColumnType::TimestampTz => "timestamptz",
                other => other.name(),
            };
            format!("    {} {ty}{null}", ident(&c.name))
        })
        .collect();
    if !table.key.is_empty() {
        lines.push(format!("    PRIMARY KEY ({})", key_list(table)));
    }
    format!(
        "CREATE TABLE IF NOT EXISTS {} (\n{}\n);\n",
        ident(&table.name),
        lines.join(",\n")
    )
}

/// `'"<table>"'`: a relation's name as TimescaleDB's functions take it.
fn regclass(name: &str) -> String {
    literal(&ident(name))
}

/// Makes the table a hypertable on its time column (migrating rows it
/// holds), its chunks `interval` wide when given.
pub fn create_hypertable(table: &Table, time: &str, interval: Option<&Interval>) -> String {
    let chunk = interval
        .map(|i| format!(", chunk_time_interval => {}", i.sql()))
        .unwrap_or_default();
    format!(
        "SELECT create_hypertable({}, {}{chunk}, if_not_exists => TRUE, migrate_data => TRUE)",
        regclass(&table.name),
        literal(time)
    )
}

/// New chunks span `interval` (chunks already made keep theirs).
pub fn set_chunk_interval(table: &Table, interval: &Interval) -> String {
    format!(
        "SELECT set_chunk_time_interval({}, {})",
        regclass(&table.name),
        interval.sql()
    )
}

/// Compression on, segmented and ordered as described (chunks compressed
/// already keep what they were compressed with).
pub fn compression_settings(table: &Table, c: &Compression) -> String {
    let segment_by = c
        .segment_by
        .iter()
        .map(|c| ident(c))
        .collect::<Vec<_>>()
        .join(", ");
    let order_by = c
        .order_by
        .iter()
        .map(|(c, desc)| format!("{}{}", ident(c), if *desc { " DESC" } else { "" }))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "ALTER TABLE {} SET (timescaledb.compress, timescaledb.compress_segmentby = {}, timescaledb.compress_orderby = {})",
        ident(&table.name),
        literal(&segment_by),
        literal(&order_by)
    )
}

/// Replaces the table's policy of `kind` (`compression`, `retention`) by
/// one acting on chunks older than `after`, or removes it (None).
pub fn policy(table: &Table, kind: &str, after: Option<&Interval>) -> String {
    let name = regclass(&table.name);
    let mut sql = format!("SELECT remove_{kind}_policy({name}, if_exists => TRUE)");
    if let Some(after) = after {
        sql.push_str(&format!(
            ";\nSELECT add_{kind}_policy({name}, {})",
            after.sql()
        ));
    }
    sql
}

/// The query of an aggregate: its rows, bucketed and grouped.
pub fn aggregate_query(table: &Table, time: &str, a: &Aggregate) -> String {
    let mut select = vec![format!(
        "time_bucket({}, {}) AS \"bucket\"",
        a.bucket.sql(),
        ident(time)
    )];
    select.extend(a.group_by.iter().map(|g| ident(g)));
    for c in &a.columns {
        let call = match (c.function, &c.of) {
            (Function::First | Function::Last, Some(of)) => {
                format!("{}({}, {})", c.function.name(), ident(of), ident(time))
            }
            (f, Some(of)) => format!("{}({})", f.name(), ident(of)),
            (f, None) => format!("{}(*)", f.name()),
        };
        select.push(format!("{call} AS {}", ident(&c.name)));
    }
    let group: Vec<String> = (1..=1 + a.group_by.len()).map(|i| i.to_string()).collect();
    format!(
        "SELECT {} FROM {} GROUP BY {}",
        select.join(", "),
        ident(&table.name),
        group.join(", ")
    )
}

/// What the sink writes on an aggregate it made, to know it by.
pub fn aggregate_mark(query: &str) -> String {
    format!("timesink: {query}")
}

/// Creates the aggregate, empty (the refresh policy fills it: creating
/// it does not read the table), marked with its query.
pub fn create_aggregate(table: &Table, time: &str, a: &Aggregate) -> String {
    let query = aggregate_query(table, time, a);
    format!(
        "CREATE MATERIALIZED VIEW {name} WITH (timescaledb.continuous, timescaledb.materialized_only = {}) AS {query} WITH NO DATA;\nCOMMENT ON VIEW {name} IS {}",
        !a.real_time,
        literal(&aggregate_mark(&query)),
        name = ident(&a.name),
    )
}

/// Real-time aggregation on or off.
pub fn real_time(a: &Aggregate) -> String {
    format!(
        "ALTER MATERIALIZED VIEW {} SET (timescaledb.materialized_only = {})",
        ident(&a.name),
        !a.real_time
    )
}

/// Replaces the aggregate's refresh policy by the described one, or
/// removes it.
pub fn refresh_policy(a: &Aggregate) -> String {
    let name = regclass(&a.name);
    let mut sql = format!("SELECT remove_continuous_aggregate_policy({name}, if_exists => TRUE)");
    if let Some(r) = &a.refresh {
        sql.push_str(&format!(
            ";\nSELECT add_continuous_aggregate_policy({name}, start_offset => {}, end_offset => {}, schedule_interval => {})",
            r.start_offset
                .as_ref()
                .map_or("NULL".to_owned(), Interval::sql),
            r.end_offset.sql(),
            r.every.sql()
        ));
    }
    sql
}

/// The SQL the writer runs for one table, built once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statements {
    /// `COPY <table> (...) FROM STDIN (FORMAT binary)`: the fast path.
    pub copy: String,
    /// Creates the session's staging table for the merge path.
    pub create_stage: String,
    /// `COPY` into the staging table.
    pub copy_stage: String,
    /// Moves the staging rows into the table; a key already there takes the new values.
    pub merge: String,
    /// Empties the staging table.
    pub clear_stage: String,
}

pub fn statements(table: &Table) -> Statements {
    let cols = column_list(table);
    let name = ident(&table.name);
    // A session's own temporary table: each writer has its connection, so
    // no two tables meet in one (PostgreSQL cuts a long name at 63 bytes).
    let stage = ident(&format!("timesink_stage_{}", table.name));
    let updates: Vec<String> = table
        .columns
        .iter()
        .enumerate()
        .filter(|(i, _)| !table.key.contains(i))
        .map(|(_, c)| format!("{0} = EXCLUDED.{0}", ident(&c.name)))
        .collect();
    // Without a key no row conflicts: the merge path is a plain insert
    // (and is never taken: only a key already stored leads to it).
    let on_conflict = if table.key.is_empty() {
        String::new()
    } else if updates.is_empty() {
        format!(" ON CONFLICT ({}) DO NOTHING", key_list(table))
    } else {
        format!(
            " ON CONFLICT ({}) DO UPDATE SET {}",
            key_list(table),
            updates.join(", ")
        )
    };
    Statements {
        copy: format!("COPY {name} ({cols}) FROM STDIN (FORMAT binary)"),
        create_stage: format!(
            "CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {name} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        ),
        copy_stage: format!("COPY {stage} ({cols}) FROM STDIN (FORMAT binary)"),
        merge: format!("INSERT INTO {name} ({cols}) SELECT {cols} FROM {stage}{on_conflict}"),
        clear_stage: format!("TRUNCATE {stage}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level1() -> Table {
        let catalog = crate::catalog::Catalog::build(&crate::catalog::built_in(), ".dlq").unwrap();
        catalog.by_name("level1_quotes").unwrap().clone()
    }

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(ident(r#"we"ird"#), r#""we""ird""#);
        assert_eq!(literal("it's"), "'it''s'");
    }

    /// The SQL generated for a built-in table, as PostgreSQL receives it.
    #[test]
    fn the_sql_of_a_table_is_generated_from_its_description() {
        let table = level1();
        assert_eq!(
            create_table(&table),
            r#"CREATE TABLE IF NOT EXISTS "level1_quotes" (
    "time" timestamptz NOT NULL,
    "exchange_id" text NOT NULL,
    "symbol" text NOT NULL,
    "best_bid" numeric NOT NULL,
    "best_ask" numeric NOT NULL,
    "bid_size" numeric,
    "ask_size" numeric,
    "sequence" bigint NOT NULL,
    "source" text NOT NULL,
    PRIMARY KEY ("exchange_id", "symbol", "time", "sequence")
);
"#
        );
        let s = statements(&table);
        let cols = r#""time", "exchange_id", "symbol", "best_bid", "best_ask", "bid_size", "ask_size", "sequence", "source""#;
        assert_eq!(
            s.copy,
            format!(r#"COPY "level1_quotes" ({cols}) FROM STDIN (FORMAT binary)"#)
        );
        assert_eq!(
            s.merge,
            format!(
                r#"INSERT INTO "level1_quotes" ({cols}) SELECT {cols} FROM "timesink_stage_level1_quotes" ON CONFLICT ("exchange_id", "symbol", "time", "sequence") DO UPDATE SET "best_bid" = EXCLUDED."best_bid", "best_ask" = EXCLUDED."best_ask", "bid_size" = EXCLUDED."bid_size", "ask_size" = EXCLUDED."ask_size", "source" = EXCLUDED."source""#
            )
        );
    }

    /// The TimescaleDB SQL generated for the built-in price table and its
    /// one-minute candles, as PostgreSQL receives it.
    #[test]
    fn the_timescaledb_sql_of_a_table_is_generated_from_its_description() {
        let catalog = crate::catalog::Catalog::build(&crate::catalog::built_in(), ".dlq").unwrap();
        let prices = catalog.by_name("crypto_prices").unwrap();
        let ts = &prices.timescaledb;
        assert_eq!(
            create_hypertable(prices, "time", Some(&Interval::parse("1 day").unwrap())),
            r#"SELECT create_hypertable('"crypto_prices"', 'time', chunk_time_interval => INTERVAL '1 day', if_not_exists => TRUE, migrate_data => TRUE)"#
        );
        assert_eq!(
            compression_settings(prices, ts.compression.as_ref().unwrap()),
            r#"ALTER TABLE "crypto_prices" SET (timescaledb.compress, timescaledb.compress_segmentby = '"coin_id", "exchange_id"', timescaledb.compress_orderby = '"time" DESC')"#
        );
        assert_eq!(
            policy(
                prices,
                "compression",
                Some(&ts.compression.as_ref().unwrap().after)
            ),
            "SELECT remove_compression_policy('\"crypto_prices\"', if_exists => TRUE);\nSELECT add_compression_policy('\"crypto_prices\"', INTERVAL '7 days')"
        );
        assert_eq!(
            policy(prices, "retention", None),
            r#"SELECT remove_retention_policy('"crypto_prices"', if_exists => TRUE)"#
        );
        let candles = prices
            .aggregates
            .iter()
            .find(|a| a.name == "crypto_candles_1m")
            .unwrap();
        let query = r#"SELECT time_bucket(INTERVAL '1 minute', "time") AS "bucket", "coin_id", "exchange_id", first("usd_price", "time") AS "open", max("usd_price") AS "high", min("usd_price") AS "low", last("usd_price", "time") AS "close", count(*) AS "ticks" FROM "crypto_prices" GROUP BY 1, 2, 3"#;
        assert_eq!(aggregate_query(prices, "time", candles), query);
        assert_eq!(
            create_aggregate(prices, "time", candles),
            format!(
                "CREATE MATERIALIZED VIEW \"crypto_candles_1m\" WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS {query} WITH NO DATA;\nCOMMENT ON VIEW \"crypto_candles_1m\" IS 'timesink: {}'",
                query.replace('\'', "''")
            )
        );
        assert_eq!(
            refresh_policy(candles),
            "SELECT remove_continuous_aggregate_policy('\"crypto_candles_1m\"', if_exists => TRUE);\nSELECT add_continuous_aggregate_policy('\"crypto_candles_1m\"', start_offset => NULL, end_offset => INTERVAL '1 minute', schedule_interval => INTERVAL '1 minute')"
        );
    }
}
