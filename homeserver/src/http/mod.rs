//! The HTTP endpoint: `GET /healthz` (the process answers; its JSON body says
//! whether Redis is reachable in cluster mode) and `GET /readyz` (the database
//! answers, every migration is applied, and the server is not shutting down),
//! for load balancers and Kubernetes probes; `GET /metrics` for Prometheus
//! (404 when `[telemetry] metrics = false`), as OpenMetrics when the `Accept`
//! header asks for it and as the classic text format otherwise. A Redis outage does not make a
//! replica unready: it serves on, with wake-ups from polling the database. The
//! endpoint keeps serving while the server shuts down, so that probes see the
//! 503 until the end.
//!
//! When `[admin] enabled`, the admin web console (crate `conclave-admin-ui`)
//! is nested under `/admin`, over the admin API called in-process
//! ([`console`]); the listener passes each connection's address to it, for
//! the audit log.

use crate::cluster::RedisLink;
use crate::grpc::admin::AdminApi;
use crate::metrics::Metrics;
use crate::service::Context;
use crate::store::{Store, StoreError};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse as _, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use conclave_admin_ui::ConsoleSettings;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::trace::TraceLayer;

/// What the probes look at.
#[derive(Clone)]
pub(crate) struct Health {
    pub(crate) store: Store,
    /// The replica's link to Redis in cluster mode; `None` when alone.
    pub(crate) redis: Option<Arc<RedisLink>>,
    /// True once the server began to shut down.
    pub(crate) stopping: watch::Receiver<bool>,
    /// What `/metrics` renders; `None` when metrics are off.
    pub(crate) metrics: Option<Arc<Metrics>>,
    /// The admin console's routes (from [`console`]); `None` when
    /// `[admin] enabled` is false, and `/admin` is then not found.
    pub(crate) console: Option<Router>,
}

/// Where the admin console is mounted (the API's warnings name its pages
/// under it).
pub(crate) const CONSOLE_PATH: &str = "/admin";

/// The admin console over this homeserver's admin API, or `None` when
/// `[admin] enabled` is false.
pub(crate) fn console(context: &Arc<Context>) -> Option<Router> {
    let admin = &context.config.admin;
    admin.enabled.then(|| {
        let settings = ConsoleSettings {
            secure_cookies: admin.behind_tls_proxy,
            base_path: CONSOLE_PATH.to_owned(),
        };
        let api = AdminApi {
            context: context.clone(),
        };
        conclave_admin_ui::router(Arc::new(api), settings)
    })
}

pub(crate) fn router(health: Health) -> Router {
    let console = health.console.clone();
    let probes = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health);
    let router = match console {
        // `/admin/` as well as `/admin`: the address people type and the
        // chart's NOTES give.
        Some(console) => probes
            .route(
                &format!("{CONSOLE_PATH}/"),
                get(|| async { Redirect::permanent(CONSOLE_PATH) }),
            )
            .nest(CONSOLE_PATH, console),
        None => probes,
    };
    router.layer(TraceLayer::new_for_http())
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

async fn metrics(State(health): State<Health>, headers: HeaderMap) -> Response {
    match &health.metrics {
        Some(metrics) => {
            let accept = headers
                .get(header::ACCEPT)
                .and_then(|value| value.to_str().ok());
            let format = crate::metrics::Format::negotiate(accept);
            (
                [(header::CONTENT_TYPE, format.content_type())],
                metrics.render_as(format),
            )
                .into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            "metrics are off ([telemetry] metrics = false)\n",
        )
            .into_response(),
    }
}

async fn readyz(State(health): State<Health>) -> (StatusCode, &'static str) {
    // First: a load balancer should stop sending the moment shutdown begins,
    // whatever the database says.
    if *health.stopping.borrow() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: shutting down\n",
        );
    }
    match health.store.is_ready().await {
        Ok(true) => (StatusCode::OK, "ready\n"),
        Ok(false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: database migrations are pending\n",
        ),
        // A newer release migrated the database while this replica runs: a
        // rolling upgrade in progress. Migrations keep the previous release
        // working (they only add), so this replica stays in service until it is
        // replaced; taking every old replica out at once would leave none. A
        // replica *starting* on such a schema refuses to (`Store::migrate`).
        Err(StoreError::SchemaTooNew { .. }) => (
            StatusCode::OK,
            "ready (the database schema is a newer release's: upgrade this replica)\n",
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

/// Serves the probes until `shutdown` resolves; `/readyz` answers 503 from
/// the moment `health.stopping` turns true.
pub(crate) async fn serve(
    health: Health,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // The console needs each request's peer address (for the audit log).
    let service = router(health).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, service)
        .with_graceful_shutdown(shutdown)
        .await
}
