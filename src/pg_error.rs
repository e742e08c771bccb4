//! What a PostgreSQL error means for the sink: the one place that decides,
//! for the writer, the schema step and the offset lookup alike, whether to
//! dead-letter a row, wait, write less at once, or tell the operator.
//!
//! The README's "When PostgreSQL says no" table is this module in prose
//! (a test keeps the two in step).

use std::fmt::Write as _;
use std::time::Duration;

use tokio_postgres::error::SqlState;

/// How an error from PostgreSQL is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A row's key is already in the table: take the merge path.
    Conflict,
    /// PostgreSQL refuses a row's values: dead-letter that row, write the rest.
    Row,
    /// The connection, the server or the moment: retry on a capped backoff.
    Transient,
    /// More work in one statement than the server allows (a
    /// `statement_timeout`, a statement too complex): write the batch in
    /// halves.
    TooBig,
    /// Rows for chunks TimescaleDB has compressed made it decompress more
    /// tuples than `timescaledb.max_tuples_decompressed_per_dml_transaction`
    /// allows (SQLSTATE 53400): written again with the limit raised to the
    /// table's `timescaledb.max_tuples_decompressed` for the transaction;
    /// over that too, in halves; a single row over it blocks the table.
    Decompression,
    /// Only the operator can cure it (privileges, a missing or changed table
    /// or column, a read-only server, authentication): the table is reported
    /// blocked and re-checked on a capped backoff until it heals.
    Blocked,
}

impl Class {
    /// The label of `/status` and the README.
    pub fn label(self) -> &'static str {
        match self {
            Class::Conflict => "conflict",
            Class::Row => "row",
            Class::Transient => "transient",
            Class::TooBig => "too big",
            Class::Decompression => "decompression limit",
            Class::Blocked => "blocked",
        }
    }
}

/// Classifies an error from `tokio_postgres`.
pub fn classify(error: &tokio_postgres::Error) -> Class {
    match error.code() {
        Some(code) if *code == SqlState::UNIQUE_VIOLATION => Class::Conflict,
        Some(code) => classify_sqlstate(code.code()),
        // Not an error PostgreSQL sent: the connection failed or closed.
        None => Class::Transient,
    }
}

/// Classifies an SQLSTATE. Anything not known to be a row's doing, passing
/// or too much at once is `Blocked`: retried too, but loudly, never in
/// silence.
pub fn classify_sqlstate(code: &str) -> Class {
    let class = code.get(..2).unwrap_or(code);
    match (class, code) {
        (_, "23505") => Class::Conflict,
        // 22 data exception (a NUL in text, a value out of range), 23
        // integrity constraint violation, 44 a view's WITH CHECK OPTION, P0
        // raised by a trigger, 54000 a row over a limit of PostgreSQL's (an
        // index entry over 2,704 bytes): the same row fails however often
        // it is retried, and the rest of its batch does not.
        ("22" | "23" | "44" | "P0", _) | (_, "54000") => Class::Row,
        // 57014 a statement cancelled (statement_timeout), 54001 a
        // statement too complex: a smaller batch gets through.
        (_, "57014" | "54001") => Class::TooBig,
        // 53400 a configuration limit: TimescaleDB's on tuples decompressed
        // by one transaction (PostgreSQL's own uses of it are limits a
        // retry meets again, and then it is retried as transient).
        (_, "53400") => Class::Decompression,
        // 08 connection exception, 40001/40P01/40003 serialization failure,
        // deadlock, completion unknown, 53 insufficient resources (disk
        // full, out of memory, too many connections), 55P03 lock not
        // available, 57P01-57P03 the server shutting down or starting, 58
        // I/O errors, 25P03 an idle transaction timed out, XX internal.
        ("08" | "53" | "58" | "XX", _)
        | (_, "40001" | "40P01" | "40003" | "55P03" | "57P01" | "57P02" | "57P03" | "25P03") => {
            Class::Transient
        }
        // 42 privileges, a missing or changed table or column; 25006 a
        // read-only transaction (a standby after failover); 28
        // authentication; 3D000/3F000 no such database/schema; 57P04 the
        // database dropped; 0A feature not supported; the rest.
        _ => Class::Blocked,
    }
}

/// How PostgreSQL said no, for logs, `/status` and `dlq.reason`: the
/// SQLSTATE and message, or for a failed connection the whole chain of causes.
pub fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => {
            // The message may quote a row's value: cut, as every quoted value.
            let mut text = format!(
                "SQLSTATE {}: {}",
                db.code().code(),
                crate::quote::capped(db.message())
            );
            if let Some(column) = db.column() {
                let _ = write!(text, " (column {column})");
            }
            if let Some(constraint) = db.constraint() {
                let _ = write!(text, " (constraint {constraint})");
            }
            text
        }
        // "error connecting to server" says little without its cause.
        None => {
            let mut text = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(e) = source {
                let _ = write!(text, ": {e}");
                source = e.source();
            }
            text
        }
    }
}

/// Capped exponential backoff between retries.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    cap: Duration,
}

impl Backoff {
    pub fn new() -> Backoff {
        Backoff {
            next: Duration::from_millis(100),
            // A retry costs one connection attempt; 5 s keeps recovery
            // quick, and a blocked table is re-checked that often.
            cap: Duration::from_secs(5),
        }
    }

    /// The delay to wait now; each call doubles the next one, up to the cap.
    pub fn step(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(self.cap);
        now
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_errors_are_the_rows_doing() {
        for code in [
            "22021", "22003", "22P02", "23502", "23514", "23503", "44000", "P0001", "P0004",
            "54000",
        ] {
            assert_eq!(classify_sqlstate(code), Class::Row, "{code}");
        }
        assert_eq!(classify_sqlstate("23505"), Class::Conflict);
    }

    #[test]
    fn transient_errors_pass_by_themselves() {
        for code in [
            "08000", "08003", "08006", "08001", "40001", "40P01", "40003", "53100", "53200",
            "53300", "55P03", "57P01", "57P02", "57P03", "58030", "25P03", "XX000",
        ] {
            assert_eq!(classify_sqlstate(code), Class::Transient, "{code}");
        }
    }

    #[test]
    fn too_big_errors_pass_with_less_at_once() {
        for code in ["57014", "54001"] {
            assert_eq!(classify_sqlstate(code), Class::TooBig, "{code}");
        }
    }

    #[test]
    fn timescaledbs_decompression_limit_is_its_own_class() {
        assert_eq!(classify_sqlstate("53400"), Class::Decompression);
    }

    #[test]
    fn what_only_the_operator_can_cure_blocks() {
        for code in [
            "42501", "42P01", "42703", "42804", "42601", "25006", "28000", "28P01", "3D000",
            "3F000", "57P04", "0A000", "55000", "", "Z",
        ] {
            assert_eq!(classify_sqlstate(code), Class::Blocked, "{code:?}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        let mut b = Backoff::new();
        let steps: Vec<Duration> = (0..8).map(|_| b.step()).collect();
        assert_eq!(steps[0], Duration::from_millis(100));
        assert_eq!(steps[1], Duration::from_millis(200));
        assert_eq!(steps[7], Duration::from_secs(5));
    }

    #[test]
    fn the_readme_table_matches_the_classifier() {
        let readme = include_str!("../README.md");
        let section = readme
            .split("### When PostgreSQL says no")
            .nth(1)
            .expect("the README has the section");
        let mut checked = 0;
        for line in section.lines().skip_while(|l| !l.starts_with("| `")) {
            if !line.starts_with('|') {
                break;
            }
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let (codes, class) = (cells[1], cells[2]);
            for code in codes.split('`').skip(1).step_by(2) {
                // `42xxx` stands for its class: any code of it.
                let code = code.replace("xxx", "000");
                assert_eq!(
                    classify_sqlstate(&code).label(),
                    class,
                    "README says {code} is {class}"
                );
                checked += 1;
            }
        }
        assert!(
            checked > 20,
            "only {checked} codes found in the README table"
        );
    }
}
