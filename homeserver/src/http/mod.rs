//! The HTTP endpoint: `GET /healthz` (the process answers; its JSON body says
//! whether Redis is reachable in cluster mode) and `GET /readyz` (the database
//! answers and every migration is applied), for load balancers and Kubernetes
//! probes. A Redis outage does not make a replica unready: it serves on, with
//! wake-ups from polling the database.

use crate::cluster::RedisLink;
use crate::store::Store;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;

/// What the probes look at.
#[derive(Clone)]
pub(crate) struct Health {
    pub(crate) store: Store,
    /// The replica's link to Redis in cluster mode; `None` when alone.
    pub(crate) redis: Option<Arc<RedisLink>>,
}

pub(crate) fn router(health: Health) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .layer(TraceLayer::new_for_http())
        .with_state(health)
}

/// `{"status":"ok","redis":"up"}`; `redis` is `"up"` or `"down"` in cluster
/// mode and `"off"` without `[redis]`.
async fn healthz(State(health): State<Health>) -> Json<serde_json::Value> {
    let redis = match &health.redis {
        None => "off",
        Some(link) if link.is_up() => "up",
        Some(_) => "down",
    };
    Json(serde_json::json!({ "status": "ok", "redis": redis }))
}

async fn readyz(State(health): State<Health>) -> (StatusCode, &'static str) {
    match health.store.is_ready().await {
        Ok(true) => (StatusCode::OK, "ready\n"),
        Ok(false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: database migrations are pending\n",
        ),
        Err(error) => {
            tracing::warn!(%error, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: the database is unreachable\n",
            )
        }
    }
}

pub(crate) async fn serve(
    health: Health,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(health))
        .with_graceful_shutdown(shutdown)
        .await
}
