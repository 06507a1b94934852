//! The HTTP endpoint: `GET /healthz` (the process answers) and `GET /readyz` (the
//! database answers and every migration is applied), for load balancers and
//! Kubernetes probes.

use crate::store::{Store, StoreError};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use std::future::Future;
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;

pub(crate) fn router(store: Store) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .layer(TraceLayer::new_for_http())
        .with_state(store)
}

async fn readyz(State(store): State<Store>) -> (StatusCode, &'static str) {
    match store.is_ready().await {
        Ok(true) => (StatusCode::OK, "ready\n"),
        Ok(false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: database migrations are pending\n",
        ),
        Err(error @ StoreError::SchemaTooNew { .. }) => {
            tracing::error!(%error, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: the database schema is newer than this binary\n",
            )
        }
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
    store: Store,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(store))
        .with_graceful_shutdown(shutdown)
        .await
}
