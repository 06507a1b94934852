//! The HTTP endpoint: `GET /healthz` (the process answers) and `GET /readyz` (the
//! database answers, every migration is applied, and the server is not
//! shutting down), for load balancers and Kubernetes probes. It keeps serving
//! while the server shuts down, so that probes see the 503 until the end.

use crate::store::{Store, StoreError};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use std::future::Future;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::trace::TraceLayer;

/// What the probes look at.
#[derive(Clone)]
struct Probed {
    store: Store,
    /// True once the server began to shut down.
    stopping: watch::Receiver<bool>,
}

fn router(store: Store, stopping: watch::Receiver<bool>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .layer(TraceLayer::new_for_http())
        .with_state(Probed { store, stopping })
}

async fn readyz(State(probed): State<Probed>) -> (StatusCode, &'static str) {
    // First: a load balancer should stop sending the moment shutdown begins,
    // whatever the database says.
    if *probed.stopping.borrow() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: shutting down\n",
        );
    }
    match probed.store.is_ready().await {
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

/// Serves the probes until `shutdown` resolves; `/readyz` answers 503 from
/// the moment `stopping` turns true.
pub(crate) async fn serve(
    store: Store,
    listener: TcpListener,
    stopping: watch::Receiver<bool>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(store, stopping))
        .with_graceful_shutdown(shutdown)
        .await
}
