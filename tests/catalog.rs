//! A conformance test per catalog entry — the four built-in tables and the
//! odin example's two: the table created from the description has its
//! columns, types, nullability and key; a message encoded by the
//! description lands, each column holding the value at the source the
//! description names; and the key the writer deduplicates by is the live
//! table's primary key.

mod common;

use std::sync::Arc;

use futures::SinkExt;
use serde_json::Value;

use common::*;
use timesink::catalog::{Catalog, ColumnType, Source, Table, sql};
use timesink::config::Config;
use timesink::message::SourceMessage;
use timesink::ops::produce::odin::event;
use timesink::ops::produce::{DataType, Encoding, Generator, Topics};
use timesink::pipeline::Outcome;
use timesink::pipeline::RowBuffer;
use timesink::time::Timestamp;

/// The built-in tables and the odin example's, as one catalog.
fn catalog() -> Catalog {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/odin.toml");
    Config::load_from(Some(std::path::Path::new(file)), Vec::new())
        .expect("examples/odin.toml loads")
        .catalog()
        .expect("the catalog builds")
}

/// A valid JSON message for `table`: (topic, key, value).
fn sample(table: &Table, now: Timestamp) -> (String, String, String) {
    let kind = DataType::ALL.into_iter().find(|t| t.table() == table.name);
    if let Some(kind) = kind {
        let mut g = Generator::new(
            Topics::default(),
            Vec::new(),
            vec![kind],
            vec![Encoding::Json],
            now,
        );
        let m = g.next_message();
        return (m.topic, m.key, String::from_utf8(m.value).unwrap());
    }
    let odin = match table.name.as_str() {
        "odin_trades" => Some(("BUY_COMPLETED", "odin.trades")),
        "odin_events" => Some(("LIQUIDITY_ADDED", "odin.liquidity")),
        _ => None,
    };
    if let Some((name, topic)) = odin {
        let m = event("", name, topic, "token-7", now.micros() / 1000, 42);
        return (m.topic, m.key, String::from_utf8(m.value).unwrap());
    }
    described(table, now)
}

/// A message made from the description alone, for an entry that has no
/// generator (a built-in added as one more file): every column read from
/// the record gets a value of its type that its rules allow.
fn described(table: &Table, now: Timestamp) -> (String, String, String) {
    let topic = table
        .topics
        .first()
        .unwrap_or_else(|| panic!("{}: name a topic to test it by", table.name))
        .clone();
    let mut record = serde_json::json!({});
    for column in &table.columns {
        let Some(Source::Record(slot)) = column.sources.first() else {
            continue;
        };
        let allowed = column.one_of.as_ref().or_else(|| {
            column
                .one_of_by_topic
                .as_ref()
                .and_then(|by| by.get(&topic))
        });
        let value = match column.column_type {
            ColumnType::Text => Value::from(allowed.map_or("x", |a| a[0].as_str())),
            ColumnType::Numeric => Value::from("1.5"),
            ColumnType::BigInt | ColumnType::Integer => Value::from(7),
            ColumnType::Boolean => Value::from(true),
            ColumnType::Double => Value::from(1.5),
            ColumnType::TimestampTz => Value::from(
                chrono::DateTime::from_timestamp_micros(now.micros())
                    .unwrap()
                    .to_rfc3339(),
            ),
            ColumnType::Jsonb => serde_json::json!({"k": 1}),
        };
        // Each step of the pointer an object.
        let pointer = &table.reading.slot_names[*slot];
        let mut at = &mut record;
        let steps: Vec<&str> = pointer.split('/').skip(1).collect();
        for (i, step) in steps.iter().enumerate() {
            let object = at.as_object_mut().expect("an object on the path");
            at = if i + 1 == steps.len() {
                object.insert((*step).to_owned(), value.clone());
                break;
            } else {
                object
                    .entry((*step).to_owned())
                    .or_insert_with(|| serde_json::json!({}))
            };
        }
    }
    (topic, "k-1".to_owned(), record.to_string())
}

/// COPYs the first row of `rows` with `statement`.
async fn copy_row(
    client: &tokio_postgres::Client,
    statement: &str,
    rows: &timesink::pipeline::EncodedRows,
) -> Result<u64, tokio_postgres::Error> {
    let sink = client.copy_in(statement).await?;
    let mut sink = std::pin::pin!(sink);
    for part in rows.stream(0..1) {
        sink.send(part).await?;
    }
    sink.as_mut().finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_entry_conforms_from_description_to_table_to_row_to_key() {
    let world = World::new(1).await;
    let catalog = catalog();
    let mut client = connect(&world.config.database.url).await;
    timesink::catalog::schema::apply(
        &mut client,
        world.config.database.timescaledb,
        &catalog,
        timesink::catalog::schema::Step::Owner,
    )
    .await
    .expect("tables created from the catalog");
    // The built-ins and the odin example's two.
    assert_eq!(catalog.len(), timesink::catalog::BUILT_IN.len() + 2);
    let now = Timestamp(chrono::Utc::now().timestamp_micros() - 60_000_000);
    for table in catalog.tables() {
        let name = &table.name;
        // Description ↔ created table.
        let shape = timesink::catalog::schema::shape_of(&client, &sql::ident(name))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{name} created"));
        let described: Vec<(String, String, bool)> = table
            .columns
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    c.column_type.catalog_name().to_owned(),
                    c.not_null,
                )
            })
            .collect();
        let live: Vec<(String, String, bool)> = shape
            .columns
            .iter()
            .map(|c| (c.name.clone(), c.type_name.clone(), c.not_null))
            .collect();
        assert_eq!(live, described, "{name}: columns");
        let key: Vec<String> = table
            .key
            .iter()
            .map(|&i| table.columns[i].name.clone())
            .collect();
        assert_eq!(shape.key.as_ref(), Some(&key), "{name}: primary key");

        // Description ↔ encoded row: one message through decode and
        // validate, copied in, each column read back against its source.
        let (topic, msg_key, value) = sample(table, now);
        let route = catalog
            .route(&topic, ".dlq")
            .unwrap_or_else(|| panic!("{topic} routes"));
        assert_eq!(catalog.table(route.table).name, *name);
        let message = SourceMessage::new(
            Arc::from(topic.as_str()),
            3,
            77,
            Some(msg_key.as_bytes()),
            Some(value.as_bytes()),
            timesink::message::NO_HEADERS,
        );
        let mut rows = RowBuffer::default();
        let envelopes = catalog.envelope_names();
        let outcome = timesink::pipeline::process(
            &catalog,
            &route,
            &envelopes,
            &message,
            &Default::default(),
            now,
            &mut rows,
        );
        assert_eq!(outcome, Outcome::Rows(1), "{name}: {value}");
        let rows = rows.freeze();
        let statements = sql::statements(table);
        assert_eq!(
            copy_row(&client, &statements.copy, &rows)
                .await
                .expect("the row copies in"),
            1
        );
        let record: Value = serde_json::from_str(&value).unwrap();
        let stored: String = client
            .query_one(
                &format!("SELECT to_jsonb(t)::text FROM {} t", sql::ident(name)),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        let stored: Value = serde_json::from_str(&stored).unwrap();
        for column in &table.columns {
            let got = &stored[&column.name];
            let want: Option<Value> = column.sources.iter().find_map(|s| match s {
                Source::Record(slot) => {
                    let pointer = &table.reading.slot_names[*slot];
                    record.pointer(pointer).filter(|v| !v.is_null()).cloned()
                }
                Source::Key => Some(Value::String(msg_key.clone())),
                Source::Topic => Some(Value::String(topic.clone())),
                Source::Partition => Some(Value::from(3)),
                Source::Offset => Some(Value::from(77)),
                _ => None,
            });
            let Some(want) = want else {
                continue; // a default, a capture or the envelope's: not in a bare record
            };
            match column.column_type {
                ColumnType::Numeric => {
                    let text = match &want {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    // Exactly as sent: compared in PostgreSQL, not through f64.
                    let same: bool = client
                        .query_one(
                            &format!(
                                "SELECT {} = $1::text::numeric FROM {}",
                                sql::ident(&column.name),
                                sql::ident(name)
                            ),
                            &[&text],
                        )
                        .await
                        .unwrap()
                        .get(0);
                    assert!(same, "{name}.{}: {got} is not {want}", column.name);
                }
                ColumnType::TimestampTz => {
                    let ms = match &want {
                        Value::Number(n) => n.as_i64().unwrap(),
                        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
                            .unwrap()
                            .timestamp_millis(),
                        other => panic!("{other}"),
                    };
                    let got_ms = chrono::DateTime::parse_from_rfc3339(got.as_str().unwrap())
                        .unwrap()
                        .timestamp_millis();
                    assert_eq!(got_ms, ms, "{name}.{}", column.name);
                }
                _ => assert_eq!(got, &want, "{name}.{}", column.name),
            }
        }

        // The key the writer keeps the later row by is the live key: the
        // same row again is a unique violation on exactly those columns.
        let again = copy_row(&client, &statements.copy, &rows)
            .await
            .expect_err("the same key twice");
        assert_eq!(
            again.code(),
            Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
        );
        let mut in_column_order: Vec<String> = key.clone();
        in_column_order.sort_by_key(|k| table.column(k));
        let writer_key: Vec<String> = table
            .key_in_column_order()
            .iter()
            .map(|&i| table.columns[i].name.clone())
            .collect();
        assert_eq!(writer_key, in_column_order, "{name}: the writer's key");
    }
}
