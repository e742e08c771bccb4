//! The HTTP endpoints an operator and an orchestrator use:
//!
//! - `GET /metrics`: Prometheus text format (see [`crate::ops::telemetry`]).
//! - `GET /health`: 200 while the process serves requests (liveness).
//! - `GET /ready`: 200 when a broker is up, the database answers and a
//!   partition is assigned; 503 with the reasons otherwise (readiness).
//! - `GET /status`: JSON: healthy / degraded / unhealthy by lag, and
//!   per-topic counters (see [`crate::ops::health`]).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use crate::ops::health::{Health, Status};

#[derive(Clone)]
struct Shared {
    health: Arc<Health>,
    metrics: PrometheusHandle,
}

/// Serves the endpoints on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    health: Arc<Health>,
    metrics: PrometheusHandle,
    shutdown: CancellationToken,
) -> Result<(), std::io::Error> {
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/health", get(alive))
        .route("/ready", get(ready))
        .route("/status", get(status))
        .with_state(Shared { health, metrics });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn metrics_text(State(shared): State<Shared>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        shared.metrics.render(),
    )
}

async fn alive() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "alive" }))
}

async fn ready(State(shared): State<Shared>) -> impl IntoResponse {
    let status = shared.health.status();
    let code = if status.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(serde_json::json!({
            "ready": status.ready,
            "not_ready": status.not_ready,
            "state": status.state,
            "lag_messages": status.lag_messages,
            "blocked": status.blocked,
        })),
    )
}

async fn status(State(shared): State<Shared>) -> Json<Status> {
    Json(shared.health.status())
}
