//! PostgreSQL over TLS, as configuration: the test server has a certificate
//! for "localhost" signed by a CA of `scripts/services.sh`'s own
//! (`.state/tls/ca.crt`, or TEST_PG_CA).

mod common;

use std::time::Duration;

use common::{SinkProcess, World, database_url, drained, quote, send_many};
use timesink::Database;
use timesink::ops::produce::DataType;

fn ca() -> String {
    let path = std::env::var("TEST_PG_CA")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.state/tls/ca.crt").to_owned());
    assert!(
        std::path::Path::new(&path).exists(),
        "{path} is missing: scripts/services.sh start makes it"
    );
    path
}

/// `url` with its host replaced and `query` appended.
fn with(url: &str, host: &str, query: &str) -> String {
    let url = url.replacen("127.0.0.1", host, 1);
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{query}")
}

/// Connects and says whether the session is encrypted, or why it failed.
async fn try_connect(url: &str) -> Result<bool, String> {
    let db = Database::from_url(url).map_err(|e| e.to_string())?;
    let client = db
        .connect()
        .await
        .map_err(|e| timesink::describe_database_error(&e))?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

#[tokio::test]
async fn verify_full_passes_with_the_ca_and_fails_without() {
    let base = database_url();
    let ca = ca();

    let full = with(
        &base,
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    assert_eq!(try_connect(&full).await, Ok(true), "{full}");

    // The system's CAs do not know the test CA.
    let err = try_connect(&with(&base, "localhost", "sslmode=verify-full"))
        .await
        .unwrap_err();
    assert!(err.contains("certificate verify failed"), "{err}");

    // The certificate names localhost, not 127.0.0.1: verify-full refuses,
    // verify-ca (the chain only) accepts.
    let err = try_connect(&with(
        &base,
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await
    .unwrap_err();
    assert!(err.contains("certificate verify failed"), "{err}");
    let ca_only = with(
        &base,
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={ca}"),
    );
    assert_eq!(try_connect(&ca_only).await, Ok(true));

    // require encrypts without checking; disable does not encrypt.
    assert_eq!(
        try_connect(&with(&base, "127.0.0.1", "sslmode=require")).await,
        Ok(true)
    );
    assert_eq!(
        try_connect(&with(&base, "127.0.0.1", "sslmode=disable")).await,
        Ok(false)
    );

    // The key=value form takes the same parameters.
    let port = base
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .unwrap_or("5432");
    let keywords = format!(
        "host=localhost port={port} user=postgres dbname=postgres sslmode=verify-full sslrootcert='{ca}'"
    );
    assert_eq!(try_connect(&keywords).await, Ok(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_writes_over_verify_full() {
    let world = World::new(1).await;
    let topic = world.topic(DataType::Level1);
    send_many(&topic, &[("K1".to_owned(), quote(1, true))]).await;
    let url = with(
        &world.config.database.url,
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", ca()),
    );
    let mut sink = SinkProcess::start(&world, &[("DATABASE_URL", url)]);
    drained(&world, &topic, 60).await;
    assert_eq!(world.count("level1_quotes").await, 1);
    sink.terminate(Duration::from_secs(30));
    // Without the CA the same sink cannot start its work: it says why.
    let url = with(
        &world.config.database.url,
        "localhost",
        "sslmode=verify-full",
    );
    let mut refused = SinkProcess::start(&world, &[("DATABASE_URL", url)]);
    common::eventually(30, "the refused certificate is logged", || {
        let log = refused.log_text();
        async move { log.contains("certificate verify failed") }
    })
    .await;
    refused.terminate(Duration::from_secs(30));
}
