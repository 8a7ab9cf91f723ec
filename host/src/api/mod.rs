//! The HTTP admin API of a node (`quartzite serve --listen ADDR`): jobs,
//! triggers, modules, history, fires in flight, cluster nodes and locks under
//! `/api/v1/`, its OpenAPI document at `/api/v1/openapi.json`, `/metrics` for
//! Prometheus, `/healthz` / `/readyz` for probes, and the web dashboard at
//! `/ui/` (static assets that call this API from the browser).
//!
//! Every change goes through the admin service ([`crate::admin::Admin`]), the
//! same operations the CLI's `--db` mode calls, which check it and audit it;
//! this module only translates HTTP, authenticates, and audits calls refused
//! before they reach the service.
//! It never panics on input: every malformed request is a JSON error naming
//! what was wrong ([`error::ApiError`]).

pub mod auth;
mod bulk;
mod calendars;
mod dashboard;
pub mod error;
mod handlers;
pub mod openapi;
pub mod origin;
mod signals;

use crate::admin::Admin;
use axum::Router;
use axum::http::Method;
use axum::routing::{MethodRouter, get};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::watch;

pub use crate::domain::DEFAULT_LISTEN;

/// How the API is served.
#[derive(Clone, Debug)]
pub struct ApiOptions {
    pub listen: SocketAddr,
    /// SHA-256 of the admin token; the token itself is not kept.
    pub token_sha256: Option<[u8; 32]>,
    /// `Host` names answered besides the server's own (`[api] allowed_hosts`).
    pub allowed_hosts: Option<Vec<String>>,
}

impl ApiOptions {
    /// Options from what the operator wrote: an address, and the token in clear
    /// or as its lowercase hex SHA-256.
    ///
    /// # Errors
    ///
    /// An address that does not parse, an empty token, or a hash that is not 64
    /// hex digits.
    pub fn parse(
        listen: &str,
        token: Option<&str>,
        token_sha256: Option<&str>,
    ) -> Result<Self, String> {
        let listen: SocketAddr = listen.parse().map_err(|e| {
            format!("--listen {listen:?}: {e} (expected IP:PORT, e.g. {DEFAULT_LISTEN})")
        })?;
        let token_sha256 = match (token, token_sha256) {
            // The token's id in the audit log is derived from it, so a short,
            // guessable token could be recovered from a readable audit log.
            (Some(t), _) if t.trim().chars().count() < auth::MIN_TOKEN_CHARS => {
                return Err(format!(
                    "the admin token is too short: use at least {} characters (e.g. the output of `openssl rand -hex 32`)",
                    auth::MIN_TOKEN_CHARS
                ));
            }
            (Some(t), _) => Some(auth::Auth::hash(t.trim())),
            (None, Some(h)) => {
                let bytes = hex::decode(h.trim())
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok());
                Some(bytes.ok_or_else(|| {
                    format!(
                        "admin_token_sha256 {h:?}: expected 64 hex digits (sha256sum of the token)"
                    )
                })?)
            }
            (None, None) => None,
        };
        Ok(ApiOptions {
            listen,
            token_sha256,
            allowed_hosts: None,
        })
    }
}

/// What the handlers share.
pub struct ApiState {
    /// Every operation the API offers, checked and audited.
    pub admin: Admin,
    pub auth: auth::Auth,
    /// The `Host` names and page origins the API answers.
    pub origins: origin::Origins,
    /// Refused calls per client, limited before they are audited.
    pub refusals: auth::RefusalLimiter,
    /// A node counts as dead after this long without a check-in (nodes gauge, cluster view).
    pub dead_after_ms: i64,
    /// A standby node is ready once bootstrapped: it never runs the scheduler.
    standby_ready: AtomicBool,
    /// The key secrets are sealed with (set by bootstrap; none: secrets cannot be set here).
    pub secret_keys: OnceLock<Arc<crate::secrets::SecretKeys>>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState").finish_non_exhaustive()
    }
}

impl ApiState {
    pub fn new(
        admin: Admin,
        auth: auth::Auth,
        origins: origin::Origins,
        dead_after_ms: i64,
    ) -> Arc<Self> {
        Arc::new(ApiState {
            admin,
            auth,
            origins,
            refusals: auth::RefusalLimiter::default(),
            dead_after_ms,
            standby_ready: AtomicBool::new(false),
            secret_keys: OnceLock::new(),
        })
    }

    /// Whether `/readyz` answers 200: the scheduler's loop runs, or a standby
    /// node finished bootstrapping.
    pub fn ready(&self) -> bool {
        self.standby_ready.load(Ordering::Relaxed) || self.admin.scheduler_running()
    }

    /// Marks a standby node ready.
    pub fn set_standby_ready(&self) {
        self.standby_ready.store(true, Ordering::Relaxed);
    }
}

/// Every route: method, path (axum syntax) and handler. The router is built from
/// this table alone, and the OpenAPI test checks the document against it.
pub fn routes() -> Vec<(Method, &'static str, MethodRouter<Arc<ApiState>>)> {
    use axum::routing::{delete, post, put};
    use bulk as b;
    use calendars as c;
    use handlers as h;
    use signals as s;
    vec![
        (Method::GET, "/metrics", get(h::metrics)),
        (Method::GET, "/api/v1/openapi.json", get(h::openapi)),
        (Method::GET, "/api/v1/jobs", get(h::job_list)),
        (Method::POST, "/api/v1/jobs", post(h::job_create)),
        (Method::GET, "/api/v1/jobs/{group}/{name}", get(h::job_show)),
        (
            Method::PUT,
            "/api/v1/jobs/{group}/{name}",
            put(h::job_update),
        ),
        (
            Method::DELETE,
            "/api/v1/jobs/{group}/{name}",
            delete(h::job_delete),
        ),
        (
            Method::POST,
            "/api/v1/jobs/{group}/{name}/pause",
            post(h::job_pause),
        ),
        (
            Method::POST,
            "/api/v1/jobs/{group}/{name}/resume",
            post(h::job_resume),
        ),
        (
            Method::POST,
            "/api/v1/jobs/{group}/{name}/run-now",
            post(h::job_run_now),
        ),
        (
            Method::POST,
            "/api/v1/jobs/{group}/{name}/backfill",
            post(b::job_backfill),
        ),
        (
            Method::POST,
            "/api/v1/groups/{group}/pause",
            post(h::group_pause),
        ),
        (
            Method::POST,
            "/api/v1/groups/{group}/resume",
            post(h::group_resume),
        ),
        (Method::GET, "/api/v1/triggers", get(h::trigger_list)),
        (
            Method::POST,
            "/api/v1/triggers/{group}/{name}/pause",
            post(h::trigger_pause),
        ),
        (
            Method::POST,
            "/api/v1/triggers/{group}/{name}/resume",
            post(h::trigger_resume),
        ),
        (Method::GET, "/api/v1/modules", get(h::module_list)),
        (Method::POST, "/api/v1/modules", post(h::module_push)),
        (
            Method::POST,
            "/api/v1/modules/{name}/rollback",
            post(h::module_rollback),
        ),
        (Method::GET, "/api/v1/history", get(h::history_list)),
        (Method::GET, "/api/v1/history/{id}", get(s::history_get)),
        (
            Method::POST,
            "/api/v1/history/replay",
            post(b::history_replay),
        ),
        (Method::GET, "/api/v1/events", get(s::event_list)),
        (Method::POST, "/api/v1/events/{name}", post(s::event_emit)),
        (Method::GET, "/api/v1/secrets", get(h::secret_list)),
        (Method::PUT, "/api/v1/secrets/{name}", put(h::secret_set)),
        (
            Method::DELETE,
            "/api/v1/secrets/{name}",
            delete(h::secret_delete),
        ),
        (Method::GET, "/api/v1/calendars", get(c::calendar_list)),
        (
            Method::GET,
            "/api/v1/calendars/{name}",
            get(c::calendar_show),
        ),
        (
            Method::PUT,
            "/api/v1/calendars/{name}",
            put(c::calendar_put),
        ),
        (
            Method::DELETE,
            "/api/v1/calendars/{name}",
            delete(c::calendar_delete),
        ),
        (Method::GET, "/api/v1/alerts", get(s::alert_list)),
        (Method::PUT, "/api/v1/alerts/{name}", put(s::alert_put)),
        (
            Method::DELETE,
            "/api/v1/alerts/{name}",
            delete(s::alert_delete),
        ),
        (
            Method::POST,
            "/api/v1/alerts/{name}/test",
            post(s::alert_test),
        ),
        (
            Method::GET,
            "/api/v1/alerts/deliveries",
            get(s::delivery_list),
        ),
        (Method::GET, "/api/v1/fires", get(h::fire_list)),
        (Method::POST, "/api/v1/fires/cancel", post(b::fire_cancel)),
        // Deprecated: the old name of /api/v1/fires (see the glossary in ARCHITECTURE.md).
        (Method::GET, "/api/v1/executions", get(h::fire_list)),
        (Method::GET, "/api/v1/cluster/nodes", get(h::node_list)),
        (Method::GET, "/api/v1/cluster/locks", get(h::lock_list)),
        (Method::GET, "/api/v1/audit", get(h::audit_list)),
        (Method::GET, "/api/v1/stats/runs", get(h::stats_runs)),
        // Deprecated: the old name of /api/v1/stats/runs.
        (Method::GET, "/api/v1/stats/executions", get(h::stats_runs)),
    ]
}

/// The whole HTTP surface of a node.
pub fn router(state: Arc<ApiState>) -> Router {
    let mut api = Router::new();
    for (_, path, handler) in routes() {
        api = api.route(path, handler);
    }
    let api = api
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::guard,
        ))
        // Modules are uploaded whole; the runtime refuses anything larger anyway.
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::runtime::module::MAX_MODULE_BYTES,
        ));
    // Probes stay open under any Host (they reveal nothing); everything else
    // answers only the server's own names, against DNS rebinding.
    let checked = Router::new()
        .merge(dashboard::router())
        .merge(api)
        .fallback(handlers::no_route)
        .method_not_allowed_fallback(handlers::no_method)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            host_guard,
        ));
    Router::new()
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .merge(checked)
        .with_state(state)
}

/// Refuses a request whose `Host` is not one of the server's names.
async fn host_guard(
    axum::extract::State(state): axum::extract::State<Arc<ApiState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match state.origins.check_host(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

/// A bound API server, not yet serving.
#[derive(Debug)]
pub struct Bound {
    listener: tokio::net::TcpListener,
    pub local_addr: SocketAddr,
}

/// Binds the API's address: done early in bootstrap so a taken port stops the
/// start before anything is written.
///
/// # Errors
///
/// When the address cannot be bound.
pub async fn bind(listen: SocketAddr) -> Result<Bound, String> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen} for the admin API: {e}"))?;
    let local_addr = listener.local_addr().map_err(|e| e.to_string())?;
    Ok(Bound {
        listener,
        local_addr,
    })
}

/// Serves the API on `bound` until `stop` turns true.
pub fn serve(
    bound: Bound,
    state: Arc<ApiState>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let app = router(state);
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        // The peer address is recorded in audit rows and keys the refusal limit.
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(e) = axum::serve(bound.listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "the admin API stopped");
        }
    })
}
