//! The admin service: every operator command, once. The admin API's handlers
//! and the CLI's `--db` mode both call these operations, so a change is checked
//! by the same code, answers the same JSON and leaves the same audit row,
//! whichever way it arrives. The CLI's `--server` mode stays a client of the
//! API, which ends here too.
//!
//! Each mutating operation takes the [`Caller`] and writes one audit row, on
//! success and on failure, naming the action (`job.create`, `module.push` ...),
//! its target, the HTTP status the API answers for the result and a short
//! summary. A call refused before it reaches an operation (a bad token, an
//! unreadable body) is audited by the API's guard instead. Reads are not
//! audited.
//!
//! The service knows no HTTP and no terminal: it returns data ([`Done`],
//! [`AdminError`]); the API turns it into responses and the CLI into output and
//! exit codes. It must never write to the store except through these
//! operations' own checks.

pub mod bulk;
pub mod calendars;
pub mod jobs;
pub mod modules;
pub mod secrets;
pub mod signals;
pub mod spec;
pub mod views;

use crate::engine::alerts::Alerter;
use crate::engine::wake::SchedulerLink;
use crate::metrics::Metrics;
use crate::runtime::{HostServices, Runtime, RuntimeConfig};
use crate::store::model::AuditPut;
use crate::store::{Store, StoreError};
use serde_json::{Value, json};
use std::sync::{Arc, OnceLock};

/// Who asks for a change, as the audit log records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// A token id (`token:` and the start of a hash), `anonymous-loopback`, or
    /// `os:USER` for the CLI working on the database itself.
    pub actor: String,
    /// The client's address (`IP:PORT`), when the call came over the network.
    pub client: Option<String>,
    /// Which surface the call came through, `api` or `cli`: the `source` a
    /// job it adds is stored with.
    pub surface: &'static str,
}

impl Caller {
    /// A caller of the admin API.
    pub fn api(actor: String, client: Option<String>) -> Self {
        Caller {
            actor,
            client,
            surface: "api",
        }
    }
}

impl Caller {
    /// The operating-system user running this process (the CLI's `--db` mode):
    /// `os:` and `$USER` (or `$LOGNAME`, or the numeric uid when neither is set).
    pub fn os_user() -> Self {
        let user = ["USER", "LOGNAME"]
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|u| !u.trim().is_empty()))
            .or_else(os_uid)
            .unwrap_or_else(|| "unknown".into());
        Caller {
            actor: format!("os:{}", user.trim()),
            client: None,
            surface: "cli",
        }
    }
}

/// The real uid, from `/proc/self/status` (Linux), as `uid:N`.
fn os_uid() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    let uid = line.split_whitespace().nth(1)?;
    Some(format!("uid:{uid}"))
}

/// How a change went, in the terms the API answers it with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Done (HTTP 200).
    Ok,
    /// Made something new (HTTP 201).
    Created,
    /// Queued, to happen soon (HTTP 202).
    Accepted,
}

impl Status {
    /// The HTTP status code, as answered and audited.
    pub fn http(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::Created => 201,
            Status::Accepted => 202,
        }
    }
}

/// A change that was made: its answer and what the audit row says of it.
#[derive(Clone, Debug)]
pub struct Done {
    pub status: Status,
    /// The JSON answered by the API and printed by the CLI's `--json`.
    pub body: Value,
    /// The audit row's target, when it is known only now (a pushed module's
    /// `NAME@VERSION`).
    target: Option<String>,
    /// The audit row's summary.
    summary: Value,
}

impl Done {
    fn new(status: Status, body: Value, summary: Value) -> Self {
        Done {
            status,
            body,
            target: None,
            summary,
        }
    }
}

/// Why an operation did nothing. Each kind has one HTTP status and code (the
/// API's answer) and one CLI exit code ([`AdminError::exit_code`]).
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A job field the operator gave is wrong (422 `invalid_field`).
    #[error("{0}")]
    Field(#[from] spec::FieldError),
    /// Another input is wrong (422 `invalid_field`); `message` is the whole text.
    #[error("{message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// The input cannot be read as a request at all (400 `bad_request`).
    #[error("{0}")]
    BadRequest(String),
    /// The object named does not exist (404 `not_found`).
    #[error("{0}")]
    NotFound(String),
    /// The change contradicts what is stored (409 `conflict`).
    #[error("{0}")]
    Conflict(String),
    /// A module cannot be stored (422 `module_rejected`); `field` is the
    /// request part at fault (`body` for the bytes, `name` for a name).
    #[error("{message}")]
    Rejected {
        field: &'static str,
        message: String,
    },
    /// The store failed (503 `store_unavailable`; a store conflict is 409).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The runtime that checks modules cannot start (503 `runtime_unavailable`).
    #[error("cannot start the runtime: {0}")]
    Runtime(String),
}

impl AdminError {
    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        AdminError::Invalid {
            field,
            message: message.into(),
        }
    }

    /// The HTTP status the API answers.
    pub fn http_status(&self) -> u16 {
        match self {
            AdminError::Field(_) | AdminError::Invalid { .. } | AdminError::Rejected { .. } => 422,
            AdminError::BadRequest(_) => 400,
            AdminError::NotFound(_) => 404,
            AdminError::Conflict(_) | AdminError::Store(StoreError::Conflict(_)) => 409,
            AdminError::Store(_) | AdminError::Runtime(_) => 503,
        }
    }

    /// The API's stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            AdminError::Field(_) | AdminError::Invalid { .. } => "invalid_field",
            AdminError::BadRequest(_) => "bad_request",
            AdminError::NotFound(_) => "not_found",
            AdminError::Conflict(_) | AdminError::Store(StoreError::Conflict(_)) => "conflict",
            AdminError::Rejected { .. } => "module_rejected",
            AdminError::Store(_) => "store_unavailable",
            AdminError::Runtime(_) => "runtime_unavailable",
        }
    }

    /// The field at fault, when one is.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            AdminError::Field(e) => Some(e.field),
            AdminError::Invalid { field, .. } | AdminError::Rejected { field, .. } => Some(field),
            _ => None,
        }
    }

    /// The CLI's exit code for an error of this status and code, whether the
    /// CLI made the call itself (`--db`) or the server answered it (`--server`):
    /// 3 a module that cannot run, 2 bad input, 1 anything else.
    pub fn exit_code(http_status: u16, code: &str) -> u8 {
        match (http_status, code) {
            (_, "module_rejected") => 3,
            (400 | 415 | 422, _) => 2,
            _ => 1,
        }
    }
}

/// The admin service of one process: a node's (serving the API) or the CLI's.
#[derive(Clone)]
pub struct Admin {
    pub(crate) store: Arc<dyn Store>,
    /// Checks and describes modules: the node's runtime, or one the CLI
    /// starts on first use (with in-memory host services: it runs no jobs).
    runtime: Arc<OnceLock<Arc<Runtime>>>,
    /// How to start the runtime when there is none yet.
    runtime_config: Option<RuntimeConfig>,
    pub(crate) metrics: Arc<Metrics>,
    /// Woken after a change; connected to nothing in the CLI.
    pub(crate) scheduler: SchedulerLink,
    /// Sends `alert test` samples.
    pub(crate) alerter: Arc<Alerter>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").finish_non_exhaustive()
    }
}

impl Admin {
    pub fn new(
        store: Arc<dyn Store>,
        runtime: Arc<Runtime>,
        metrics: Arc<Metrics>,
        scheduler: SchedulerLink,
        alerter: Arc<Alerter>,
    ) -> Self {
        Admin {
            store,
            runtime: Arc::new(OnceLock::from(runtime)),
            runtime_config: None,
            metrics,
            scheduler,
            alerter,
        }
    }

    /// The admin service of a process without a scheduler (the CLI's `--db`
    /// mode): its changes wake nothing (the scheduler sharing the database sees
    /// them at its next poll) and its runtime starts only when a module must be
    /// checked.
    pub fn detached(store: Arc<dyn Store>, runtime: RuntimeConfig) -> Self {
        let metrics = Arc::new(Metrics::new());
        let alerter = Alerter::new(
            Arc::clone(&store),
            Arc::clone(&metrics),
            runtime.node_id.clone(),
            None,
        );
        Admin {
            store,
            runtime: Arc::default(),
            runtime_config: Some(runtime),
            metrics,
            scheduler: SchedulerLink::new(),
            alerter,
        }
    }

    /// The runtime, started now if this is its first use.
    pub(crate) fn runtime(&self) -> Result<Arc<Runtime>, AdminError> {
        if let Some(r) = self.runtime.get() {
            return Ok(Arc::clone(r));
        }
        let config = self
            .runtime_config
            .clone()
            .unwrap_or_else(|| RuntimeConfig {
                engine: crate::runtime::EngineConfig::default(),
                cache_dir: None,
                node_id: "admin".into(),
            });
        let started = Runtime::new(config, HostServices::in_memory())
            .map_err(|e| AdminError::Runtime(e.to_string()))?;
        Ok(Arc::clone(self.runtime.get_or_init(|| Arc::new(started))))
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Whether this process's scheduler loop runs.
    pub fn scheduler_running(&self) -> bool {
        self.scheduler.is_running()
    }

    /// Runs one mutating operation and writes its audit row, whatever the result.
    async fn audited(
        &self,
        caller: &Caller,
        action: &'static str,
        target: &str,
        op: impl Future<Output = Result<Done, AdminError>>,
    ) -> Result<Done, AdminError> {
        let result = op.await;
        let (status, target, summary) = match &result {
            Ok(done) => (
                done.status.http(),
                done.target.clone().unwrap_or_else(|| target.to_string()),
                done.summary.clone(),
            ),
            Err(e) => (
                e.http_status(),
                target.to_string(),
                json!({ "error": e.code() }),
            ),
        };
        self.audit(caller, action.to_string(), target, status, summary)
            .await;
        result
    }

    /// Writes one audit row. A failure to write is logged, not returned: the
    /// change it records has been made (or refused) already.
    pub async fn audit(
        &self,
        caller: &Caller,
        action: String,
        target: String,
        status: u16,
        summary: Value,
    ) {
        let row = AuditPut {
            actor: caller.actor.clone(),
            action,
            target,
            status,
            summary: summary.to_string(),
            client: caller.client.clone(),
        };
        if let Err(e) = self.store.audit_put(&row).await {
            tracing::error!(error = %e, action = %row.action, target = %row.target, "writing the audit row failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_one_status_code_and_exit_code() {
        let cases: Vec<(AdminError, u16, &str, u8)> = vec![
            (AdminError::invalid("key", "k"), 422, "invalid_field", 2),
            (AdminError::BadRequest("b".into()), 400, "bad_request", 2),
            (AdminError::NotFound("n".into()), 404, "not_found", 1),
            (AdminError::Conflict("c".into()), 409, "conflict", 1),
            (
                AdminError::Rejected {
                    field: "body",
                    message: "r".into(),
                },
                422,
                "module_rejected",
                3,
            ),
            (
                AdminError::Store(StoreError::Conflict("s".into())),
                409,
                "conflict",
                1,
            ),
            (
                AdminError::Runtime("x".into()),
                503,
                "runtime_unavailable",
                1,
            ),
        ];
        for (e, status, code, exit) in cases {
            assert_eq!((e.http_status(), e.code()), (status, code), "{e:?}");
            assert_eq!(AdminError::exit_code(status, code), exit, "{e:?}");
        }
        // What the API answers a client that is not JSON, as the CLI reads it.
        assert_eq!(AdminError::exit_code(415, "unsupported_media_type"), 2);
    }

    #[test]
    fn the_os_user_is_the_actor_of_the_cli() {
        let caller = Caller::os_user();
        assert!(caller.actor.starts_with("os:"), "{caller:?}");
        assert!(caller.actor.len() > "os:".len(), "{caller:?}");
        assert_eq!((caller.client, caller.surface), (None, "cli"));
    }
}
