//! The SQL of a table, generated from its description: identifiers always
//! quoted, literals always escaped. Snapshot-tested below for a built-in table.

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
    lines.push(format!("    PRIMARY KEY ({})", key_list(table)));
    format!(
        "CREATE TABLE IF NOT EXISTS {} (\n{}\n);\n",
        ident(&table.name),
        lines.join(",\n")
    )
}

/// What TimescaleDB makes of the table (idempotent): a hypertable on the
/// time column, and compression after an age, segmented and ordered as
/// described. Empty when the description asks for none.
pub fn timescaledb(table: &Table) -> String {
    let ts = &table.timescaledb;
    let Some(time) = table.time.filter(|_| ts.hypertable) else {
        return String::new();
    };
    let name = literal(&ident(&table.name));
    let mut sql = format!(
        "SELECT create_hypertable({name}, {}, if_not_exists => TRUE, migrate_data => TRUE);\n",
        literal(&table.columns[time].name)
    );
    if let Some(after) = &ts.compress_after {
        let segment_by = ts
            .segment_by
            .iter()
            .map(|c| ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        let order_by = if ts.order_by.is_empty() {
            format!("{} DESC", ident(&table.columns[time].name))
        } else {
            ts.order_by
                .iter()
                .map(|item| {
                    let item = item.trim();
                    match item.rsplit_once(' ') {
                        Some((c, dir)) if dir == "DESC" || dir == "ASC" => {
                            format!("{} {dir}", ident(c.trim()))
                        }
                        _ => ident(item),
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        // Compression settings are set once: a table compressed already
        // keeps what it has (changing them needs its chunks decompressed).
        sql.push_str(&format!(
            "DO $timesink$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM timescaledb_information.hypertables h
                   WHERE h.hypertable_name = {table_name} AND h.hypertable_schema = current_schema()
                     AND h.compression_enabled) THEN
        ALTER TABLE {ident} SET (timescaledb.compress, timescaledb.compress_segmentby = {segment_by}, timescaledb.compress_orderby = {order_by});
    END IF;
END $timesink$;
SELECT add_compression_policy({name}::regclass, INTERVAL {after}, if_not_exists => TRUE);
",
            table_name = literal(&table.name),
            ident = ident(&table.name),
            segment_by = literal(&segment_by),
            order_by = literal(&order_by),
            after = literal(after),
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
    let on_conflict = if updates.is_empty() {
        "DO NOTHING".to_owned()
    } else {
        format!("DO UPDATE SET {}", updates.join(", "))
    };
    Statements {
        copy: format!("COPY {name} ({cols}) FROM STDIN (FORMAT binary)"),
        create_stage: format!(
            "CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {name} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        ),
        copy_stage: format!("COPY {stage} ({cols}) FROM STDIN (FORMAT binary)"),
        merge: format!(
            "INSERT INTO {name} ({cols}) SELECT {cols} FROM {stage} ON CONFLICT ({}) {on_conflict}",
            key_list(table)
        ),
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
        assert_eq!(
            timescaledb(&table),
            r#"SELECT create_hypertable('"level1_quotes"', 'time', if_not_exists => TRUE, migrate_data => TRUE);
DO $timesink$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM timescaledb_information.hypertables h
                   WHERE h.hypertable_name = 'level1_quotes' AND h.hypertable_schema = current_schema()
                     AND h.compression_enabled) THEN
        ALTER TABLE "level1_quotes" SET (timescaledb.compress, timescaledb.compress_segmentby = '"exchange_id", "symbol"', timescaledb.compress_orderby = '"time" DESC, "sequence"');
    END IF;
END $timesink$;
SELECT add_compression_policy('"level1_quotes"'::regclass, INTERVAL '1 day', if_not_exists => TRUE);
"#
        );
    }
}
