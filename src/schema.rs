//! The tables: created at start from the files in `sql/`, and the statements
//! the writer runs against them.
//!
//! Each table's columns are listed once, here, in the order of `sql/001_tables.sql`
//! and of the binary COPY tuples in [`crate::copy_format`].

use tokio_postgres::Client;

use crate::config::TimescaleMode;
use crate::record::DataType;

const TABLES_SQL: &str = include_str!("../sql/001_tables.sql");
const TIMESCALEDB_SQL: &str = include_str!("../sql/002_timescaledb.sql");

/// A table's columns and primary key.
pub struct TableSpec {
    pub name: &'static str,
    pub columns: &'static [&'static str],
    pub key: &'static [&'static str],
}

pub const CRYPTO_PRICES: TableSpec = TableSpec {
    name: "crypto_prices",
    columns: &[
        "time",
        "coin_id",
        "symbol",
        "exchange_id",
        "usd_price",
        "btc_price",
        "market_cap",
        "volume_24h",
        "change_24h",
        "source",
        "attribution",
    ],
    key: &["coin_id", "exchange_id", "time"],
};

pub const OHLCV_DATA: TableSpec = TableSpec {
    name: "ohlcv_data",
    columns: &[
        "time",
        "coin_id",
        "symbol",
        "exchange_id",
        "timeframe",
        "open_price",
        "high_price",
        "low_price",
        "close_price",
        "volume",
        "trades",
        "source",
        "attribution",
    ],
    key: &["coin_id", "exchange_id", "timeframe", "time"],
};

pub const MARKET_ANALYTICS: TableSpec = TableSpec {
    name: "market_analytics",
    columns: &[
        "time",
        "total_market_cap",
        "total_volume",
        "btc_dominance",
        "eth_dominance",
        "active_cryptocurrencies",
        "active_exchanges",
        "market_cap_change_24h",
        "source",
        "attribution",
    ],
    key: &["source", "time"],
};

pub const LEVEL1_QUOTES: TableSpec = TableSpec {
    name: "level1_quotes",
    columns: &[
        "time",
        "exchange_id",
        "symbol",
        "best_bid",
        "best_ask",
        "bid_size",
        "ask_size",
        "sequence",
        "source",
    ],
    key: &["exchange_id", "symbol", "time", "sequence"],
};

pub fn spec(data_type: DataType) -> &'static TableSpec {
    match data_type {
        DataType::Price => &CRYPTO_PRICES,
        DataType::Ohlcv => &OHLCV_DATA,
        DataType::Analytics => &MARKET_ANALYTICS,
        DataType::Level1 => &LEVEL1_QUOTES,
    }
}

/// The SQL the writer runs for one table, built once.
#[derive(Debug, Clone)]
pub struct TableStatements {
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

impl TableSpec {
    pub fn statements(&self) -> TableStatements {
        let cols = self.columns.join(", ");
        let stage = format!("timesink_stage_{}", self.name);
        let updates: Vec<String> = self
            .columns
            .iter()
            .filter(|c| !self.key.contains(c))
            .map(|c| format!("{c} = EXCLUDED.{c}"))
            .collect();
        TableStatements {
            copy: format!("COPY {} ({cols}) FROM STDIN (FORMAT binary)", self.name),
            create_stage: format!(
                "CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS",
                self.name
            ),
            copy_stage: format!("COPY {stage} ({cols}) FROM STDIN (FORMAT binary)"),
            merge: format!(
                "INSERT INTO {} ({cols}) SELECT {cols} FROM {stage} ON CONFLICT ({}) DO UPDATE SET {}",
                self.name,
                self.key.join(", "),
                updates.join(", ")
            ),
            clear_stage: format!("TRUNCATE {stage}"),
        }
    }
}

/// What schema setup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaReport {
    pub timescaledb: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("creating the tables (sql/001_tables.sql): {}", crate::pg_error::describe(.0))]
    Tables(#[source] tokio_postgres::Error),
    #[error("setting up TimescaleDB (sql/002_timescaledb.sql): {}", crate::pg_error::describe(.0))]
    Timescale(#[source] tokio_postgres::Error),
    #[error("database.timescaledb = \"required\" but the timescaledb extension is not installed")]
    TimescaleMissing,
    #[error(
        "database.timescaledb = \"required\" but timescaledb is not in the server's shared_preload_libraries"
    )]
    TimescaleNotPreloaded,
}

/// Creates the tables (and hypertables where TimescaleDB is installed).
/// Idempotent, and serialised by an advisory lock so that instances starting
/// together do not race.
pub async fn apply(client: &mut Client, mode: TimescaleMode) -> Result<SchemaReport, SchemaError> {
    let tx = client.transaction().await.map_err(SchemaError::Tables)?;
    tx.batch_execute("SELECT pg_advisory_xact_lock(hashtext('timesink_schema'))")
        .await
        .map_err(SchemaError::Tables)?;
    tx.batch_execute(TABLES_SQL)
        .await
        .map_err(SchemaError::Tables)?;
    // Installed is not enough: TimescaleDB must also be preloaded, and
    // creating it without that is FATAL (it closes the connection).
    let row = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'), \
                    current_setting('shared_preload_libraries') LIKE '%timescaledb%'",
            &[],
        )
        .await
        .map_err(SchemaError::Tables)?;
    let (available, preloaded): (bool, bool) = (row.get(0), row.get(1));
    let use_timescale = match mode {
        TimescaleMode::Off => false,
        TimescaleMode::Auto if available && !preloaded => {
            // Plain tables, which 002 turns into hypertables (migrating
            // their rows) on a later start once the extension loads.
            tracing::warn!(
                "the timescaledb extension is installed but not in shared_preload_libraries; \
                 using plain tables (database.timescaledb = \"required\" makes this an error)"
            );
            false
        }
        TimescaleMode::Auto => available,
        TimescaleMode::Required if !available => return Err(SchemaError::TimescaleMissing),
        TimescaleMode::Required if !preloaded => return Err(SchemaError::TimescaleNotPreloaded),
        TimescaleMode::Required => true,
    };
    if use_timescale {
        tx.batch_execute(TIMESCALEDB_SQL)
            .await
            .map_err(SchemaError::Timescale)?;
    }
    tx.commit().await.map_err(SchemaError::Tables)?;
    Ok(SchemaReport {
        timescaledb: use_timescale,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_match_the_sql_files() {
        for t in DataType::ALL {
            let spec = spec(t);
            assert_eq!(spec.name, t.table());
            let start = TABLES_SQL
                .find(&format!("CREATE TABLE IF NOT EXISTS {} (", spec.name))
                .unwrap();
            let body = &TABLES_SQL[start..start + TABLES_SQL[start..].find(");").unwrap()];
            let columns: Vec<&str> = body
                .lines()
                .skip(1)
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("PRIMARY KEY"))
                .map(|l| l.split_whitespace().next().unwrap())
                .collect();
            assert_eq!(columns, spec.columns, "{}", spec.name);
            assert!(body.contains(&format!("PRIMARY KEY ({})", spec.key.join(", "))));
        }
    }

    #[test]
    fn merge_updates_every_non_key_column() {
        let s = CRYPTO_PRICES.statements();
        assert!(s.merge.contains(
            "ON CONFLICT (coin_id, exchange_id, time) DO UPDATE SET symbol = EXCLUDED.symbol"
        ));
        assert!(!s.merge.contains("coin_id = EXCLUDED"));
    }
}
