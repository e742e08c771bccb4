//! The tables in PostgreSQL: created at start from the catalog (and the
//! sink's bookkeeping tables from `sql/001_bookkeeping.sql`), and the live
//! ones compared with what the sink writes.

use tokio_postgres::{Client, GenericClient};

pub use crate::catalog::timescale::Step;
use crate::catalog::{Catalog, Table, sql, timescale};
use crate::config::TimescaleMode;

const BOOKKEEPING_SQL: &str = include_str!("../../sql/001_bookkeeping.sql");
const MISSING_TABLES_SQL: &str = include_str!("../../sql/queries/missing_tables.sql");
const TIMESCALEDB_CREATED_SQL: &str = include_str!("../../sql/queries/timescaledb_created.sql");
const SCHEMA_LOCK_SQL: &str = include_str!("../../sql/queries/schema_lock.sql");
const TIMESCALEDB_STATE_SQL: &str = include_str!("../../sql/queries/timescaledb_state.sql");
const TIMESCALEDB_TABLE_SQL: &str = include_str!("../../sql/queries/timescaledb_table.sql");
const TIMESCALEDB_AGGREGATE_SQL: &str = include_str!("../../sql/queries/timescaledb_aggregate.sql");

/// The sink's own tables.
pub const BOOKKEEPING: [&str; 3] = ["timesink_offsets", "timesink_topics", MAPPINGS];

/// The bookkeeping table `run` can do without: missing (a database set up
/// before it existed, a role that may not create it), the instances'
/// descriptions are not compared, and `timesink schema` creates it.
pub const MAPPINGS: &str = "timesink_mappings";

/// Every table the sink writes, data and bookkeeping.
pub fn all_tables(catalog: &Catalog) -> Vec<String> {
    catalog
        .tables()
        .iter()
        .map(|t| t.name.clone())
        .chain(BOOKKEEPING.iter().map(|b| (*b).to_owned()))
        .collect()
}

/// The DDL of the catalog's tables (no TimescaleDB), in one script.
pub fn tables_sql(catalog: &Catalog) -> String {
    catalog.tables().iter().map(sql::create_table).collect()
}

/// What the database holds of one table's TimescaleDB settings and
/// aggregates, and the changes that would make it hold the description.
pub struct TimescaleState {
    pub table: String,
    pub live: timescale::LiveTable,
    /// The table's aggregates, by name, in the catalog's order.
    pub aggregates: Vec<(String, timescale::LiveAggregate)>,
    pub plan: timescale::Plan,
}

/// [`TimescaleState`] of each table of the catalog, as `step` would
/// change it; `created`: the tables created in this step.
pub async fn timescaledb_plans(
    client: &impl GenericClient,
    catalog: &Catalog,
    step: Step,
    created: &[String],
) -> Result<Vec<TimescaleState>, tokio_postgres::Error> {
    let mut states = Vec::new();
    for table in catalog.tables() {
        let mut live = live_table(client, table).await?;
        live.created = created.contains(&table.name);
        let mut found = Vec::with_capacity(table.aggregates.len());
        for a in &table.aggregates {
            found.push(live_aggregate(client, &a.name).await?);
        }
        let plan = timescale::plan(table, &live, &found, step);
        let aggregates = table
            .aggregates
            .iter()
            .map(|a| a.name.clone())
            .zip(found)
            .collect();
        states.push(TimescaleState {
            table: table.name.clone(),
            live,
            aggregates,
            plan,
        });
    }
    Ok(states)
}

async fn live_table(
    client: &impl GenericClient,
    table: &Table,
) -> Result<timescale::LiveTable, tokio_postgres::Error> {
    let (columns, descending): (Vec<&str>, Vec<bool>) = table
        .timescaledb
        .compression
        .iter()
        .flat_map(|c| c.order_by.iter().map(|(c, d)| (c.as_str(), *d)))
        .unzip();
    let row = client
        .query_one(TIMESCALEDB_TABLE_SQL, &[&table.name, &columns, &descending])
        .await?;
    let hypertable: bool = row.get(0);
    // Only a plain table's rows matter (making it a hypertable migrates
    // them); a table not created yet has none.
    let becomes_hypertable = table.timescaledb.hypertable && table.time.is_some();
    let has_rows = if hypertable || !becomes_hypertable {
        false
    } else {
        let ident = sql::ident(&table.name);
        let exists: bool = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&ident])
            .await?
            .get(0);
        exists
            && client
                .query_one(&format!("SELECT EXISTS (SELECT 1 FROM {ident})"), &[])
                .await?
                .get::<_, bool>(0)
    };
    Ok(timescale::LiveTable {
        hypertable: row.get(0),
        chunk_interval: row.get(1),
        compression_enabled: row.get(2),
        segment_by: row.get(3),
        order_by: row.get(4),
        wanted_order_by: row.get(5),
        compress_after: row.get(6),
        retention: row.get(7),
        unique_indexes: row.get(8),
        triggers: row.get(9),
        created: false,
        has_rows,
    })
}

async fn live_aggregate(
    client: &impl GenericClient,
    name: &str,
) -> Result<timescale::LiveAggregate, tokio_postgres::Error> {
    let row = client
        .query_one(TIMESCALEDB_AGGREGATE_SQL, &[&name])
        .await?;
    let policy: bool = row.get(4);
    Ok(timescale::LiveAggregate {
        exists: row.get(0),
        continuous: row.get(1),
        mark: row.get(2),
        materialized_only: row.get(3),
        refresh: policy.then(|| (row.get(5), row.get(6), row.get(7))),
    })
}

/// Makes the database hold each table's TimescaleDB settings as the
/// catalog describes them; returns what changed and what was left alone.
/// Changes nothing (and needs no privilege) when all is as described.
async fn apply_timescaledb(
    client: &impl GenericClient,
    catalog: &Catalog,
    step: Step,
    created: &[String],
) -> Result<(Vec<String>, Vec<String>), SchemaError> {
    let plans = timescaledb_plans(client, catalog, step, created)
        .await
        .map_err(SchemaError::Timescale)?;
    let (mut changed, mut left_alone) = (Vec::new(), Vec::new());
    for state in plans {
        let plan = state.plan;
        for change in plan.changes {
            // A migration can take long: said before it starts.
            if state.live.has_rows && !state.live.hypertable {
                tracing::info!(table = %state.table, change = %change.what, "changing a table that holds rows: this takes as long as they take to copy");
            }
            let started = std::time::Instant::now();
            client.batch_execute(&change.sql).await.map_err(|source| {
                SchemaError::TimescaleChange {
                    what: change.what.clone(),
                    source,
                }
            })?;
            tracing::debug!(change = %change.what, took = ?started.elapsed(), "changed");
            if state.live.created {
                tracing::info!(change = %change.what, "TimescaleDB setting of a new table");
            } else {
                changed.push(change.what);
            }
        }
        left_alone.extend(plan.left_alone);
    }
    Ok((changed, left_alone))
}

/// Where TimescaleDB is not in use, the aggregates the catalog declares
/// are not made: said once, by name.
fn aggregates_without_timescaledb(catalog: &Catalog) -> Option<String> {
    let names: Vec<&str> = catalog
        .tables()
        .iter()
        .flat_map(|t| t.aggregates.iter().map(|a| a.name.as_str()))
        .collect();
    (!names.is_empty()).then(|| {
        format!(
            "continuous aggregates ({}) need TimescaleDB, which this database does not use: going on without them",
            names.join(", ")
        )
    })
}

/// What schema setup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaReport {
    pub timescaledb: bool,
    /// Whether DDL ran (some table was missing); when every table exists
    /// the sink changes nothing, so it needs no CREATE and no ownership.
    pub created: bool,
    /// TimescaleDB settings of tables that existed, changed to match the
    /// configuration (keys it names), in words. A new table's are set
    /// from the description and logged at `info`.
    pub changed: Vec<String>,
    /// What differs from the configuration and was left as it is, and why.
    pub left_alone: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("creating the tables: {}", crate::pg_error::describe(.0))]
    Tables(#[source] tokio_postgres::Error),
    #[error("reading TimescaleDB's settings of the tables: {}", crate::pg_error::describe(.0))]
    Timescale(#[source] tokio_postgres::Error),
    #[error("TimescaleDB refused a setting of the configuration ({what}): {}", crate::pg_error::describe(.source))]
    TimescaleChange {
        what: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("reading the live tables' columns and keys: {}", crate::pg_error::describe(.0))]
    Catalog(#[source] tokio_postgres::Error),
    #[error("{what}: {}", crate::pg_error::describe(.source))]
    Evolve {
        what: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("database.timescaledb = \"required\" but the timescaledb extension is not installed")]
    TimescaleMissing,
    #[error(
        "database.timescaledb = \"required\" but timescaledb is not in the server's shared_preload_libraries"
    )]
    TimescaleNotPreloaded,
    #[error(
        "database.timescaledb = \"required\" but this role cannot read shared_preload_libraries: \
         create the extension ahead (CREATE EXTENSION timescaledb, as a superuser) or grant pg_read_all_settings"
    )]
    TimescaleUnknown,
}

/// Makes the tables ready for `run`: when they all exist, nothing is
/// changed (no DDL: a role with only the grants the README lists can
/// start); else [`apply`] creates what is missing.
pub async fn prepare(
    client: &mut Client,
    mode: TimescaleMode,
    catalog: &Catalog,
) -> Result<SchemaReport, SchemaError> {
    if !missing_tables(client, catalog).await?.is_empty() {
        return apply(client, mode, catalog, Step::Run).await;
    }
    let installed: bool = client
        .query_one(TIMESCALEDB_CREATED_SQL, &[])
        .await
        .map_err(SchemaError::Catalog)?
        .get(0);
    if mode == TimescaleMode::Required && !installed {
        return Err(SchemaError::TimescaleMissing);
    }
    let mut report = SchemaReport {
        timescaledb: installed && mode != TimescaleMode::Off,
        created: false,
        changed: Vec::new(),
        left_alone: Vec::new(),
    };
    if !report.timescaledb {
        report
            .left_alone
            .extend(aggregates_without_timescaledb(catalog));
        return Ok(report);
    }
    // Policies follow the configuration at every start. A role that may
    // write but not own the tables (README, "Least privilege") leaves a
    // difference to `timesink schema` run by the owner, and says so.
    let tx = client.transaction().await.map_err(SchemaError::Timescale)?;
    tx.batch_execute(SCHEMA_LOCK_SQL)
        .await
        .map_err(SchemaError::Timescale)?;
    match apply_timescaledb(&tx, catalog, Step::Run, &[]).await {
        Ok((changed, left_alone)) => {
            tx.commit().await.map_err(SchemaError::Timescale)?;
            report.changed = changed;
            report.left_alone = left_alone;
        }
        Err(SchemaError::TimescaleChange { what, source })
            if source.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) =>
        {
            drop(tx);
            let plans = timescaledb_plans(client, catalog, Step::Run, &[])
                .await
                .map_err(SchemaError::Timescale)?;
            for plan in plans.into_iter().map(|s| s.plan) {
                report.left_alone.extend(plan.left_alone);
                report.left_alone.extend(plan.changes.into_iter().map(|c| {
                    format!(
                        "{}: this role may not make the change ({}); run `timesink schema` as the tables' owner",
                        c.what,
                        crate::pg_error::describe(&source)
                    )
                }));
            }
            tracing::debug!(%what, "first change refused");
        }
        Err(e) => return Err(e),
    }
    Ok(report)
}

/// The catalog's tables (bookkeeping included) that do not exist, by name.
async fn missing_tables(
    client: &impl GenericClient,
    catalog: &Catalog,
) -> Result<Vec<String>, SchemaError> {
    let tables: Vec<String> = all_tables(catalog)
        .into_iter()
        .filter(|t| t != MAPPINGS)
        .collect();
    let names: Vec<String> = tables.iter().map(|t| sql::ident(t)).collect();
    let missing: Vec<String> = client
        .query_one(MISSING_TABLES_SQL, &[&names])
        .await
        .map_err(SchemaError::Catalog)?
        .get(0);
    Ok(tables
        .into_iter()
        .zip(names)
        .filter(|(_, quoted)| missing.contains(quoted))
        .map(|(table, _)| table)
        .collect())
}

/// Creates the tables (and hypertables where TimescaleDB is loaded), and
/// sets what it creates from the description; in tables that exist it
/// changes only what the configuration names. Idempotent, and serialised
/// by an advisory lock so that instances starting together do not race.
/// `timesink schema` runs it as [`Step::Owner`] (which also makes a plain
/// table holding rows a hypertable); `run` only when a table is missing.
pub async fn apply(
    client: &mut Client,
    mode: TimescaleMode,
    catalog: &Catalog,
    step: Step,
) -> Result<SchemaReport, SchemaError> {
    // What the tables should look like, for the owner's step to add the
    // columns a description gained (read before the transaction: it
    // takes one of its own).
    let shapes = match step {
        Step::Owner => expected_shapes(client, catalog).await?,
        Step::Run => Vec::new(),
    };
    let tx = client.transaction().await.map_err(SchemaError::Tables)?;
    tx.batch_execute(SCHEMA_LOCK_SQL)
        .await
        .map_err(SchemaError::Tables)?;
    let new_tables = missing_tables(&tx, catalog).await?;
    tx.batch_execute(BOOKKEEPING_SQL)
        .await
        .map_err(SchemaError::Tables)?;
    tx.batch_execute(&tables_sql(catalog))
        .await
        .map_err(SchemaError::Tables)?;
    let (added, differing) = evolve(&tx, &shapes, &new_tables).await?;
    // Installed is not enough: TimescaleDB must also be preloaded, and
    // creating it without that is FATAL (it closes the connection). The
    // setting is readable only by superusers and pg_read_all_settings
    // (pg_settings hides it from others: NULL); an extension already
    // created in the database says it is loaded.
    let row = tx
        .query_one(TIMESCALEDB_STATE_SQL, &[])
        .await
        .map_err(SchemaError::Tables)?;
    let (available, created, preloaded): (bool, bool, Option<bool>) =
        (row.get(0), row.get(1), row.get(2));
    let preloaded = if created { Some(true) } else { preloaded };
    let use_timescale = match (mode, preloaded) {
        (TimescaleMode::Off, _) => false,
        (TimescaleMode::Auto, _) if !available => false,
        (TimescaleMode::Auto, Some(true)) => true,
        (TimescaleMode::Auto, Some(false)) => {
            // Plain tables, which 002 turns into hypertables (migrating
            // their rows) when `timesink schema` runs once it loads.
            tracing::warn!(
                "the timescaledb extension is installed but not in shared_preload_libraries; \
                 using plain tables (database.timescaledb = \"required\" makes this an error)"
            );
            false
        }
        (TimescaleMode::Auto, None) => {
            tracing::warn!(
                "this role cannot read shared_preload_libraries to see whether TimescaleDB is loaded; \
                 using plain tables (create the extension ahead, or grant pg_read_all_settings)"
            );
            false
        }
        (TimescaleMode::Required, _) if !available => return Err(SchemaError::TimescaleMissing),
        (TimescaleMode::Required, Some(false)) => return Err(SchemaError::TimescaleNotPreloaded),
        (TimescaleMode::Required, None) => return Err(SchemaError::TimescaleUnknown),
        (TimescaleMode::Required, Some(true)) => true,
    };
    let (mut changed, mut left_alone) = if use_timescale {
        tx.batch_execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            .await
            .map_err(|source| SchemaError::TimescaleChange {
                what: "CREATE EXTENSION timescaledb".into(),
                source,
            })?;
        apply_timescaledb(&tx, catalog, step, &new_tables).await?
    } else {
        (Vec::new(), Vec::new())
    };
    if !use_timescale {
        left_alone.extend(aggregates_without_timescaledb(catalog));
    }
    changed.splice(0..0, added);
    left_alone.splice(0..0, differing);
    tx.commit().await.map_err(SchemaError::Tables)?;
    Ok(SchemaReport {
        timescaledb: use_timescale,
        created: true,
        changed,
        left_alone,
    })
}

/// Adds to each table that existed the columns its description gained,
/// nullable (rows stored before hold NULL there); never drops or retypes
/// one. Returns the columns added and the differences left to the
/// operator, in words.
async fn evolve(
    client: &impl GenericClient,
    shapes: &[(String, Shape)],
    new_tables: &[String],
) -> Result<(Vec<String>, Vec<String>), SchemaError> {
    let (mut added, mut differing) = (Vec::new(), Vec::new());
    for (table, expected) in shapes {
        if new_tables.contains(table) {
            continue;
        }
        let ident = sql::ident(table);
        let Some(live) = shape_of(client, &ident)
            .await
            .map_err(SchemaError::Catalog)?
        else {
            continue;
        };
        for column in &expected.columns {
            if live.columns.iter().any(|c| c.name == column.name) {
                continue;
            }
            let what = format!(
                "table {table}: column {} added ({}, nullable: rows stored before hold NULL)",
                column.name, column.type_name
            );
            client
                .batch_execute(&format!(
                    "ALTER TABLE {ident} ADD COLUMN IF NOT EXISTS {} {}",
                    sql::ident(&column.name),
                    column.type_name
                ))
                .await
                .map_err(|source| SchemaError::Evolve {
                    what: what.clone(),
                    source,
                })?;
            added.push(what);
        }
        let now = shape_of(client, &ident)
            .await
            .map_err(SchemaError::Catalog)?
            .unwrap_or(live);
        differing.extend(compare(table, expected, &now).into_iter().map(|p| {
            format!("{p} — the operator's to change (`timesink schema` adds columns only)")
        }));
    }
    Ok((added, differing))
}

/// One column of a live table, as the catalog has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// `format_type`: `numeric`, `timestamp with time zone`, ...
    pub type_name: String,
    pub not_null: bool,
    pub has_default: bool,
    /// `GENERATED ALWAYS AS (…) STORED`: PostgreSQL computes it, and
    /// refuses a value for it.
    pub generated: bool,
}

/// A table's columns and primary key, as the catalog has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    pub columns: Vec<Column>,
    /// The primary key's columns in order; None without one.
    pub key: Option<Vec<String>>,
}

const SHAPE_SQL: &str = include_str!("../../sql/queries/table_shape.sql");

/// The shape of the table `name` resolves to (search path; a quoted
/// identifier), or None when there is none.
pub async fn shape_of(
    client: &impl tokio_postgres::GenericClient,
    name: &str,
) -> Result<Option<Shape>, tokio_postgres::Error> {
    let rows = client.query(SHAPE_SQL, &[&name]).await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let key: Option<Vec<String>> = rows[0].get(4);
    let columns = rows
        .iter()
        .map(|r| Column {
            name: r.get(0),
            type_name: r.get(1),
            not_null: r.get(2),
            has_default: r.get(3),
            generated: r.get(5),
        })
        .collect();
    Ok(Some(Shape { columns, key }))
}

/// What the sink writes: the shape of each table as the catalog's DDL
/// makes it, read from temporary copies made in a transaction rolled back
/// (PostgreSQL's own reading of it; no CREATE on the schema needed).
pub async fn expected_shapes(
    client: &mut Client,
    catalog: &Catalog,
) -> Result<Vec<(String, Shape)>, SchemaError> {
    let tx = client.transaction().await.map_err(SchemaError::Catalog)?;
    tx.batch_execute("SET LOCAL search_path = pg_temp")
        .await
        .map_err(SchemaError::Catalog)?;
    tx.batch_execute(BOOKKEEPING_SQL)
        .await
        .map_err(SchemaError::Catalog)?;
    tx.batch_execute(&tables_sql(catalog))
        .await
        .map_err(SchemaError::Catalog)?;
    let mut shapes = Vec::new();
    for table in all_tables(catalog) {
        if let Some(shape) = shape_of(&tx, &format!("pg_temp.{}", sql::ident(&table)))
            .await
            .map_err(SchemaError::Catalog)?
        {
            shapes.push((table, shape));
        }
    }
    tx.rollback().await.map_err(SchemaError::Catalog)?;
    Ok(shapes)
}

/// How a live table differs from what the sink writes, in words naming the
/// table, the column, what is expected and what was found; empty when the
/// sink can write it. Looser is fine: a NOT NULL the sink does not need, an
/// extra column that is nullable or has a default.
pub fn compare(table: &str, expected: &Shape, found: &Shape) -> Vec<String> {
    let mut problems = Vec::new();
    for want in &expected.columns {
        match found.columns.iter().find(|c| c.name == want.name) {
            None => problems.push(format!(
                "table {table}: column {} is missing (expected {})",
                want.name, want.type_name
            )),
            Some(have) if have.type_name != want.type_name => problems.push(format!(
                "table {table}: column {} is {}, expected {}",
                want.name, have.type_name, want.type_name
            )),
            Some(have) if have.generated => problems.push(format!(
                "table {table}: column {} is generated in the table, and PostgreSQL refuses a value for it \
                 (take it out of the table's description, or make it a plain column)",
                want.name
            )),
            // A default does not help: the sink sends NULL for a message
            // without a value, and NULL is a value.
            Some(have) if have.not_null && !want.not_null => problems.push(format!(
                "table {table}: column {} is NOT NULL{}, expected nullable (the sink writes NULL where a \
                 message has no value; make the column nullable, or give it `required` or a `default` \
                 in the table's description)",
                want.name,
                if have.has_default { " with a default" } else { "" }
            )),
            Some(_) => {}
        }
    }
    for extra in &found.columns {
        let known = expected.columns.iter().any(|c| c.name == extra.name);
        if !known && extra.not_null && !extra.has_default {
            problems.push(format!(
                "table {table}: extra column {} is NOT NULL without a default, expected nullable or absent (no row the sink writes fills it)",
                extra.name
            ));
        }
    }
    match (&expected.key, &found.key) {
        (Some(want), None) => problems.push(format!(
            "table {table}: no primary key, expected PRIMARY KEY ({}) (without it a repeated record becomes a second row)",
            want.join(", ")
        )),
        (Some(want), Some(have)) if want != have => problems.push(format!(
            "table {table}: primary key ({}), expected ({})",
            have.join(", "),
            want.join(", ")
        )),
        (None, Some(have)) => problems.push(format!(
            "table {table}: primary key ({}), expected none (the description is append-only, \
             `primary_key = []`: a record sent twice would be refused by the key, not kept; \
             give the description the table's key, or drop the key)",
            have.join(", ")
        )),
        _ => {}
    }
    problems
}

/// Compares the live table `table` with `expected`: None when the sink can
/// write it, else why not.
pub async fn check_table(
    client: &Client,
    table: &str,
    expected: &Shape,
) -> Result<Option<String>, tokio_postgres::Error> {
    let problems = match shape_of(client, &sql::ident(table)).await? {
        None => vec![format!("table {table} does not exist")],
        Some(found) => compare(table, expected, &found),
    };
    Ok((!problems.is_empty()).then(|| problems.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, type_name: &str, not_null: bool) -> Column {
        Column {
            name: name.into(),
            type_name: type_name.into(),
            not_null,
            has_default: false,
            generated: false,
        }
    }

    fn quotes() -> Shape {
        Shape {
            columns: vec![
                col("time", "timestamp with time zone", true),
                col("symbol", "text", true),
                col("best_bid", "numeric", true),
                col("bid_size", "numeric", false),
            ],
            key: Some(vec!["symbol".into(), "time".into()]),
        }
    }

    #[test]
    fn a_live_table_matching_or_looser_is_writable() {
        let expected = quotes();
        assert!(compare("q", &expected, &expected).is_empty());
        let mut looser = quotes();
        looser.columns[3].not_null = false;
        looser.columns.push(col("note", "text", false));
        // An extra column the sink does not write: its default fills it.
        let mut defaulted = col("added", "integer", true);
        defaulted.has_default = true;
        looser.columns.push(defaulted);
        assert!(compare("q", &expected, &looser).is_empty());
    }

    #[test]
    fn a_changed_table_is_named_with_column_expected_and_found() {
        let expected = quotes();
        let mut found = quotes();
        found.columns[2].type_name = "text".into();
        found.columns.retain(|c| c.name != "bid_size");
        found.columns.push(col("desk", "text", true));
        found.columns[0].not_null = true;
        let problems = compare("level1_quotes", &expected, &found);
        assert_eq!(
            problems,
            [
                "table level1_quotes: column best_bid is text, expected numeric",
                "table level1_quotes: column bid_size is missing (expected numeric)",
                "table level1_quotes: extra column desk is NOT NULL without a default, expected nullable or absent (no row the sink writes fills it)",
            ]
        );
        let mut stricter = quotes();
        stricter.columns[3].not_null = true;
        assert!(compare("q", &expected, &stricter)[0].contains("bid_size is NOT NULL"));
    }

    #[test]
    fn a_missing_or_different_primary_key_refuses() {
        let expected = quotes();
        let mut found = quotes();
        found.key = None;
        assert!(
            compare("q", &expected, &found)[0]
                .contains("no primary key, expected PRIMARY KEY (symbol, time)")
        );
        found.key = Some(vec!["time".into()]);
        assert_eq!(
            compare("q", &expected, &found),
            ["table q: primary key (time), expected (symbol, time)"]
        );
        let mut append_only = quotes();
        append_only.key = None;
        assert!(
            compare("q", &append_only, &found)[0]
                .contains("primary key (time), expected none (the description is append-only")
        );
    }

    #[test]
    fn a_generated_column_or_a_not_null_default_on_a_nullable_one_refuses() {
        let expected = quotes();
        let mut found = quotes();
        found.columns[1].generated = true;
        found.columns[3].not_null = true;
        found.columns[3].has_default = true;
        assert_eq!(
            compare("q", &expected, &found),
            [
                "table q: column symbol is generated in the table, and PostgreSQL refuses a value for it (take it out of the table's description, or make it a plain column)",
                "table q: column bid_size is NOT NULL with a default, expected nullable (the sink writes NULL where a message has no value; make the column nullable, or give it `required` or a `default` in the table's description)",
            ]
        );
    }
}
