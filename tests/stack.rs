//! The `make up` stack, checked without Docker (none runs here): the compose
//! file's references hold, and the Grafana dashboard queries only metrics
//! the sink exports.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_norway::Value;
use timesink::ops::telemetry::METRICS;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn compose() -> BTreeMap<String, Value> {
    let file = yaml(&root().join("docker-compose.yml"));
    serde_norway::from_value(file["services"].clone()).expect("services is a map")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn env(service: &Value, name: &str) -> Option<String> {
    service["environment"][name].as_str().map(str::to_owned)
}

#[test]
fn the_compose_file_runs_the_whole_stack_and_its_references_hold() {
    let services = compose();
    let names: BTreeSet<&str> = services.keys().map(String::as_str).collect();
    for needed in [
        "redpanda",
        "topics",
        "timescaledb",
        "timesink",
        "loadgen",
        "prometheus",
        "grafana",
    ] {
        assert!(names.contains(needed), "no service {needed}");
    }
    let top = yaml(&root().join("docker-compose.yml"));
    let declared: BTreeSet<&str> = top["volumes"]
        .as_mapping()
        .into_iter()
        .flatten()
        .filter_map(|(k, _)| k.as_str())
        .collect();
    let mut host_ports = BTreeSet::new();
    for (name, s) in &services {
        // An image with a pinned tag, or the Dockerfile here.
        match (s["image"].as_str(), s["build"].as_str()) {
            (Some(image), None) => {
                let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
                assert!(
                    !tag.is_empty() && tag != "latest",
                    "{name}: image {image} has no pinned tag"
                );
            }
            (None, Some(context)) => {
                assert!(
                    root().join(context).join("Dockerfile").exists(),
                    "{name}: no Dockerfile in {context}"
                );
            }
            _ => panic!("{name}: needs exactly one of image or build"),
        }
        for port in strings(&s["ports"]) {
            let (host, container) = port
                .split_once(':')
                .unwrap_or_else(|| panic!("{name}: port {port}"));
            assert!(
                host.parse::<u16>().is_ok() && container.parse::<u16>().is_ok(),
                "{name}: port {port}"
            );
            assert!(
                host_ports.insert(host.to_owned()),
                "{name}: host port {host} used twice"
            );
        }
        for volume in strings(&s["volumes"]) {
            let source = volume.split(':').next().unwrap_or("");
            if source.starts_with("./") {
                assert!(
                    root().join(source).exists(),
                    "{name}: volume source {source} does not exist"
                );
            } else {
                assert!(
                    declared.contains(source),
                    "{name}: named volume {source} is not declared"
                );
            }
        }
        let deps: Vec<String> = match &s["depends_on"] {
            Value::Sequence(_) => strings(&s["depends_on"]),
            Value::Mapping(m) => m
                .keys()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        for dep in deps {
            assert!(
                names.contains(dep.as_str()),
                "{name} depends on unknown {dep}"
            );
        }
    }

    // TimescaleDB on PostgreSQL 15 or later.
    let image = services["timescaledb"]["image"].as_str().unwrap_or("");
    let pg: u32 = image
        .rsplit_once("-pg")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("timescaledb image {image} names no -pgNN"));
    assert!(
        image.starts_with("timescale/timescaledb:") && pg >= 15,
        "{image}"
    );

    // The sink reaches the broker and the database by their service names,
    // and serves its endpoints on the port Prometheus scrapes.
    let sink = &services["timesink"];
    assert_eq!(env(sink, "KAFKA_BROKERS").as_deref(), Some("redpanda:9092"));
    let url = env(sink, "DATABASE_URL").unwrap_or_default();
    assert!(url.contains("@timescaledb:5432/"), "{url}");
    let listen = env(sink, "TIMESINK_HTTP__LISTEN").expect("the sink serves /metrics");
    let sink_port = listen
        .rsplit_once(':')
        .map(|(_, p)| p.to_owned())
        .unwrap_or_default();
    let config = timesink::config::Config::load_from(
        None,
        sink["environment"]
            .as_mapping()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_str()?.to_owned()))),
    );
    assert!(
        config.is_ok(),
        "the sink's environment is a valid configuration: {:?}",
        config.err()
    );
    let topics = strings(&services["topics"]["command"]);
    assert_eq!(topics[..2], ["topics", "create"], "{topics:?}");
    let file = topics
        .iter()
        .skip_while(|a| *a != "--file")
        .nth(1)
        .expect("--file");
    assert_eq!(file, "/etc/timesink/topics.yaml");
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("COPY topics.yaml /etc/timesink/topics.yaml"));

    // Prometheus: its file is mounted, and it scrapes the sink and Redpanda.
    let prometheus = yaml(&root().join("ops/prometheus.yml"));
    let targets: Vec<String> = prometheus["scrape_configs"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|job| {
            job["static_configs"]
                .as_sequence()
                .cloned()
                .unwrap_or_default()
        })
        .flat_map(|c| strings(&c["targets"]))
        .collect();
    assert!(
        targets.contains(&format!("timesink:{sink_port}")),
        "{targets:?}"
    );
    assert!(
        targets.iter().any(|t| t.starts_with("redpanda:")),
        "{targets:?}"
    );
    assert!(
        strings(&services["prometheus"]["volumes"])
            .iter()
            .any(|v| v.starts_with("./ops/prometheus.yml:/etc/prometheus/prometheus.yml")),
        "prometheus.yml is mounted where --config.file points"
    );

    // Grafana: the datasource is this Prometheus; the dashboards folder is
    // mounted where the provider reads it.
    let datasource = yaml(&root().join("ops/grafana/provisioning/datasources/prometheus.yml"));
    assert_eq!(
        datasource["datasources"][0]["url"].as_str(),
        Some("http://prometheus:9090")
    );
    let provider = yaml(&root().join("ops/grafana/provisioning/dashboards/timesink.yml"));
    let path = provider["providers"][0]["options"]["path"]
        .as_str()
        .unwrap_or("");
    assert!(
        strings(&services["grafana"]["volumes"])
            .contains(&format!("./ops/grafana/dashboards:{path}:ro")),
        "the dashboards are mounted at {path}"
    );
}

/// Every `timesink_…` name in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("timesink_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

#[test]
fn the_dashboard_queries_only_what_the_sink_exports() {
    let text =
        std::fs::read_to_string(root().join("ops/grafana/dashboards/timesink.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let mut queried = BTreeSet::new();
    let mut titles = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        titles.push(panel["title"].as_str().unwrap_or("").to_lowercase());
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a PromQL expr");
            assert_eq!(target["datasource"]["uid"], "prometheus", "{expr}");
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{expr} queries no timesink metric");
            for name in names {
                let base = ["_sum", "_count"]
                    .iter()
                    .find_map(|s| {
                        name.strip_suffix(s)
                            .filter(|b| METRICS.iter().any(|m| m.name == *b))
                    })
                    .unwrap_or(&name)
                    .to_owned();
                assert!(
                    METRICS.iter().any(|m| m.name == base),
                    "the dashboard queries {name}, which the sink does not export"
                );
                queried.insert(base);
            }
        }
    }
    // What an operator looks at first.
    for needed in [
        "timesink_rows_written_total",
        "timesink_consumer_lag_seconds",
        "timesink_produce_to_commit_seconds",
        "timesink_dead_letters_total",
        "timesink_copy_duration_seconds",
    ] {
        assert!(queried.contains(needed), "no panel shows {needed}");
    }
    assert!(text.contains("quantile=\\\"0.99\\\""), "a p99 panel");
    assert!(
        titles.iter().any(|t| t.contains("lag in seconds")),
        "{titles:?}"
    );
}
