//! Kafka over TLS with a SASL/SCRAM login, end to end: a broker of the
//! test's own serves only TLS (a certificate for "localhost" from the test
//! CA `scripts/services.sh` makes) and requires SCRAM-SHA-512. The sink
//! reads and commits through it with the CA and the password; without the
//! CA, or with a wrong password, it fails closed: nothing is read, and its
//! log says why. A test binary of its own: every helper speaks TLS here.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use timesink::ops::produce::DataType;

/// The test CA's directory (`scripts/services.sh` makes it).
fn tls_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".state/tls")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_over_tls_with_scram_works_and_fails_closed() {
    let tls = tls_dir();
    let ca = tls.join("ca.crt").display().to_string();
    let broker = private::PrivateBroker::start_secure(
        &tls.join("server.crt"),
        &tls.join("server.key"),
        "sink",
        "s3cret",
    );
    let address = format!("localhost:{}", broker.port);
    let secure = [
        ("SECURITY_PROTOCOL", "sasl_ssl"),
        ("SASL_MECHANISM", "SCRAM-SHA-512"),
        ("SASL_USERNAME", "sink"),
        ("SASL_PASSWORD", "s3cret"),
        ("SSL_CA_LOCATION", ca.as_str()),
    ];
    // SAFETY: this binary's only test sets them before any thread reads
    // the environment (the helpers read it on each call).
    unsafe {
        std::env::set_var("TEST_KAFKA_BROKERS", &address);
        for (name, value) in secure {
            std::env::set_var(format!("TEST_RDKAFKA_{name}"), value);
        }
    }
    let world = World::new(1).await;
    let topic = world.topic(DataType::Level1);
    send_many(&topic, &keyed_quotes(0..100)).await;

    let sink_env = |skip: &str, password: &str| -> Vec<(&'static str, String)> {
        let mut env = vec![("KAFKA_BROKERS", address.clone())];
        for (name, value) in secure {
            let value = if name == "SASL_PASSWORD" {
                password
            } else {
                value
            };
            if name != skip {
                env.push((
                    match name {
                        "SECURITY_PROTOCOL" => "TIMESINK_RDKAFKA_SECURITY_PROTOCOL",
                        "SASL_MECHANISM" => "TIMESINK_RDKAFKA_SASL_MECHANISM",
                        "SASL_USERNAME" => "TIMESINK_RDKAFKA_SASL_USERNAME",
                        "SASL_PASSWORD" => "TIMESINK_RDKAFKA_SASL_PASSWORD",
                        _ => "TIMESINK_RDKAFKA_SSL_CA_LOCATION",
                    },
                    value.to_owned(),
                ));
            }
        }
        env
    };

    // Fails closed: without the CA the broker's certificate is not
    // trusted; with a wrong password the login is refused.
    for (what, env, says) in [
        (
            "no CA",
            sink_env("SSL_CA_LOCATION", "s3cret"),
            "certificate verify failed",
        ),
        (
            "a wrong password",
            sink_env("", "wr0ngpass"),
            "Authentication",
        ),
    ] {
        let mut sink = SinkProcess::start(&world, &env);
        eventually(
            30,
            &format!("{what}: the sink says the brokers are unreachable"),
            || async {
                let log = sink.log_text();
                log.contains("Kafka brokers unreachable") && log.contains(says)
            },
        )
        .await;
        assert!(sink.exited().is_none(), "{what}: the sink exited");
        sink.terminate(Duration::from_secs(20));
        assert_eq!(
            world.count("level1_quotes").await,
            0,
            "{what}: nothing read"
        );
        assert!(
            !sink.log_text().contains("s3cret") && !sink.log_text().contains("wr0ngpass"),
            "no password in the log"
        );
    }

    // With the CA and the password: everything lands, exactly once.
    let mut sink = SinkProcess::start(&world, &sink_env("", "s3cret"));
    drained(&world, &topic, 60).await;
    sink.terminate(Duration::from_secs(20));
    let sent = Sent {
        total: 100,
        ..Sent::default()
    };
    assert_exactly_once(&world, &topic, &sent).await;
    drop(broker);
}
