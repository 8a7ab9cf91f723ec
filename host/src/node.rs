//! The composition root: the one module that knows every layer. It builds a
//! node from its options (store, runtime, scheduler, admin API), connects
//! them, runs it until a signal or a stop, and stops it in order. Nothing below
//! imports it; the CLI's `serve` only turns flags and config into
//! [`ServeOptions`] and calls [`serve`].
//!
//! Starting a node, in order: config -> manifest (parsed and validated) ->
//! runtime -> module files checked -> connect + migrate -> admin API -> push modules ->
//! reconcile jobs -> delete orphaned jobs -> reset ERROR triggers -> recover
//! fires of dead nodes -> on-start / once fires -> start acquiring.
//!
//! Everything that can reject a start (a bad manifest, a module file that does
//! not load) is checked before the first write, so a rejected start changes
//! nothing in the store.

use crate::admin::Admin;
use crate::api::{self, ApiOptions, ApiState};
use crate::engine::alerts::Alerter;
use crate::engine::jobs::job_from_manifest;
use crate::engine::locks::StoreLocks;
use crate::engine::modules::{ModuleResolver, PushError, push_bytes, read_module};
use crate::engine::scheduler::{Scheduler, SchedulerConfig};
use crate::engine::services::{StoreEvents, StoreKv};
use crate::engine::wake::SchedulerLink;
use crate::manifest::{self, Manifest};
use crate::metrics::Metrics;
use crate::runtime::{HostServices, JobImpl, Runtime, RuntimeConfig};
use crate::store::{self, Store, StoreError};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;

/// What `serve` needs.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub db_url: String,
    /// The manifest; `None` runs without one.
    pub manifest: Option<PathBuf>,
    pub node_id: String,
    /// Bootstrap, then do not acquire fires (standby / scheduler disabled).
    pub standby: bool,
    pub scheduler: SchedulerConfig,
    pub runtime: RuntimeConfig,
}

/// Why a node did not start.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("{0}")]
    Manifest(#[from] manifest::ManifestErrors),
    #[error("{file}: module {name:?} ({path}): {reason}")]
    Module {
        file: String,
        name: String,
        path: String,
        reason: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot start the runtime: {0}")]
    Runtime(String),
    #[error("admin API: {0}")]
    Api(String),
    #[error("{0}")]
    Config(String),
}

/// The admin API of a started node.
#[derive(Debug)]
pub struct ApiRunning {
    pub state: Arc<ApiState>,
    /// Where it listens (the port chosen when asked for port 0).
    pub local_addr: std::net::SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// A started node: its store, runtime and scheduler.
pub struct Node {
    pub store: Arc<dyn Store>,
    pub runtime: Arc<Runtime>,
    pub scheduler: Arc<Scheduler>,
    /// The admin API, when the node serves one.
    pub api: Option<ApiRunning>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("node_id", &self.scheduler.node_id())
            .finish_non_exhaustive()
    }
}

/// Bootstraps a node. See the module docs for the order.
///
/// # Errors
///
/// A manifest error (every one, with file, line and field), a module file that
/// cannot be loaded, or a store error.
pub async fn start(options: &ServeOptions) -> Result<Node, BootError> {
    start_with_api(options, None).await
}

/// [`start`], serving the admin API from the point DESIGN.md names: once the
/// store and runtime exist, before the manifest is applied, so an operator can
/// watch a long bootstrap. `/readyz` answers 200 once the scheduler runs.
///
/// # Errors
///
/// As [`start`]; also when the API's address cannot be bound or is not loopback
/// and no admin token is set.
pub async fn start_with_api(
    options: &ServeOptions,
    api_options: Option<ApiOptions>,
) -> Result<Node, BootError> {
    let keys =
        crate::secrets::SecretKeys::from_env().map_err(|e| BootError::Config(e.to_string()))?;
    start_with_keys(options, api_options, Arc::new(keys)).await
}

/// [`start_with_api`] with the secret keys given rather than read from the
/// environment ([`crate::secrets::SecretKeys::from_env`]).
///
/// # Errors
///
/// As [`start_with_api`].
pub async fn start_with_keys(
    options: &ServeOptions,
    api_options: Option<ApiOptions>,
    secret_keys: Arc<crate::secrets::SecretKeys>,
) -> Result<Node, BootError> {
    // Refused before anything else: a server that would expose the scheduler
    // without a token must not start at all.
    let auth = api_options
        .as_ref()
        .map(|a| api::auth::Auth::new(a.listen, a.token_sha256))
        .transpose()
        .map_err(BootError::Api)?;
    options.scheduler.wit().map_err(BootError::Config)?;
    let manifest = match &options.manifest {
        Some(path) => Some(Manifest::load(path)?),
        None => None,
    };
    // Module files are checked with a runtime of their own before the store is
    // touched; the disk cache makes the real runtime's loads below cheap.
    if let Some(m) = &manifest {
        let checker = Runtime::new(options.runtime.clone(), HostServices::in_memory())
            .map_err(|e| BootError::Runtime(e.to_string()))?;
        let checker = Arc::new(checker);
        for decl in &m.modules {
            let rt = Arc::clone(&checker);
            let path = decl.path.clone();
            let loaded = tokio::task::spawn_blocking(move || rt.load_file(&path))
                .await
                .map_err(|e| BootError::Runtime(e.to_string()))?;
            if let Err(r) = loaded {
                return Err(BootError::Module {
                    file: m.path.display().to_string(),
                    name: decl.name.clone(),
                    path: decl.path.display().to_string(),
                    reason: r.to_string(),
                });
            }
        }
    }
    let store = store::open(&options.db_url).await?;
    let metrics = Arc::new(Metrics::with_options(&options.scheduler.metrics_options()));
    let events = StoreEvents::with_metrics(
        Arc::clone(&store),
        options.scheduler.emit_bounds(),
        Arc::clone(&metrics),
    );
    // A node without a key starts and runs every job that needs no secret.
    if !secret_keys.has_key() {
        tracing::info!(
            "no secret key ({}): jobs whose grants name secrets will fail on this node",
            crate::secrets::KEY_ENV
        );
    }
    let services = HostServices {
        kv: Arc::new(StoreKv::new(Arc::clone(&store))),
        locks: StoreLocks::with_metrics(
            Arc::clone(&store),
            options.scheduler.lease_ms.max(2_000) * 5,
            Arc::clone(&metrics),
        ),
        events: events.clone(),
        grants: crate::secrets::StoreGrants::new(
            Arc::clone(&store),
            Arc::clone(&secret_keys),
            Some(Arc::clone(&metrics)),
        ),
    };
    let runtime = Arc::new(
        Runtime::new(options.runtime.clone(), services)
            .map_err(|e| BootError::Runtime(e.to_string()))?,
    );
    let link = SchedulerLink::new();
    let mut scheduler_config = options.scheduler.clone();
    let api = match (api_options, auth) {
        (Some(a), Some(auth)) => {
            let bound = api::bind(a.listen).await.map_err(BootError::Api)?;
            let local_addr = bound.local_addr;
            // Alert links point at this API unless the config names another URL.
            if scheduler_config
                .public_url
                .as_deref()
                .is_none_or(str::is_empty)
            {
                scheduler_config.public_url = Some(format!("http://{local_addr}"));
            }
            let alerter = Alerter::new(
                Arc::clone(&store),
                Arc::clone(&metrics),
                options.node_id.clone(),
                scheduler_config.public_url.as_deref(),
            );
            let admin = Admin::new(
                Arc::clone(&store),
                Arc::clone(&runtime),
                Arc::clone(&metrics),
                link.clone(),
                alerter,
            );
            let state = ApiState::new(
                admin,
                auth,
                api::origin::Origins::new(local_addr, a.allowed_hosts.as_deref()),
                options.scheduler.dead_after_ms,
            );
            let _ = state.secret_keys.set(Arc::clone(&secret_keys));
            let (stop, stop_rx) = watch::channel(false);
            let task = api::serve(bound, Arc::clone(&state), stop_rx);
            tracing::info!(addr = %local_addr, token = a.token_sha256.is_some(), "admin API listening");
            Some(ApiRunning {
                state,
                local_addr,
                stop,
                task,
            })
        }
        _ => None,
    };

    if let Some(m) = &manifest {
        // The overlap hints of the manifest's modules, by name: a job that
        // writes no `overlap` takes its module's.
        let mut hinted = std::collections::HashMap::new();
        for decl in &m.modules {
            let pushed = match read_module(&decl.path).await {
                Ok(bytes) => {
                    push_bytes(
                        &store,
                        &runtime,
                        bytes,
                        Some(&decl.name),
                        decl.version.as_deref(),
                        Some(&metrics),
                        false,
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            match pushed {
                Ok((record, info)) => {
                    tracing::info!(module = %record.name, version = %record.version, digest = %record.digest, "module pushed");
                    if let Some(o) = info.overlap {
                        hinted.insert(record.name.clone(), o);
                    }
                }
                Err(PushError::Store(e)) => return Err(e.into()),
                Err(e) => {
                    return Err(BootError::Module {
                        file: m.path.display().to_string(),
                        name: decl.name.clone(),
                        path: decl.path.display().to_string(),
                        reason: e.to_string(),
                    });
                }
            }
        }
        let jobs: Vec<_> = m
            .jobs
            .iter()
            .map(|decl| {
                let (mut job, triggers) = job_from_manifest(decl);
                let name = decl.module.module_name();
                if !decl.overlap_given
                    && let Some(o) = name.and_then(|n| hinted.get(n))
                {
                    job.overlap = *o;
                }
                (job, triggers)
            })
            .collect();
        // Calendars first: the triggers naming them are checked against them.
        for calendar in &m.calendars {
            store.calendar_put(calendar, "manifest").await?;
        }
        store.jobs_put(&jobs).await?;
        store.alert_rules_sync("manifest", &m.alerts).await?;
        delete_orphans(&store, &runtime, m).await?;
        delete_orphan_calendars(&store, m).await?;
    }
    let reset = store.trigger_reset_errors().await?;
    if reset > 0 {
        tracing::info!(triggers = reset, "reset ERROR triggers to WAITING");
    }
    // A node restarted under its id within the dead-after interval still looks
    // alive: end its previous run first, or its new run would renew the old
    // run's leases and those fires would never run.
    store.node_restart(&options.node_id).await?;
    let recovered = store
        .fire_recover(options.scheduler.dead_after_ms, None)
        .await?;
    if recovered > 0 {
        tracing::warn!(
            fires = recovered,
            "recovered fires left in flight by a stopped node"
        );
    }
    let startup = store.fire_startup().await?;
    if startup > 0 {
        tracing::info!(fires = startup, "on-start and once fires created");
    }
    let scheduler = Scheduler::with_metrics(
        Arc::clone(&store),
        Arc::clone(&runtime),
        options.node_id.clone(),
        scheduler_config,
        metrics,
    );
    events.wake_on_fires(scheduler.wake_handle());
    scheduler.connect(&link);
    Ok(Node {
        store,
        runtime,
        scheduler,
        api,
    })
}

/// Manifest jobs no longer in the manifest whose module is gone are deleted (the
/// reference's orphan clean-up); those whose module still resolves are kept and
/// reported, since deleting a job that could still run loses its history link.
async fn delete_orphans(
    store: &Arc<dyn Store>,
    runtime: &Arc<Runtime>,
    m: &Manifest,
) -> Result<(), StoreError> {
    let resolver = ModuleResolver::new(Arc::clone(store), Arc::clone(runtime));
    let declared: Vec<String> = m.jobs.iter().map(manifest::JobDecl::key).collect();
    for job in store.job_list().await? {
        if job.source != "manifest" || declared.contains(&job.job_key) {
            continue;
        }
        match resolver.resolve(&job.module).await? {
            JobImpl::NoOp(reason) => {
                store.job_delete(&job.job_key).await?;
                tracing::warn!(job = %job.job_key, reason = %reason, "deleted orphaned job: not in the manifest and its module is gone");
            }
            JobImpl::Wasm(_) => {
                tracing::warn!(job = %job.job_key, "job is no longer in the manifest; delete it with `quartzite job delete` if it should go");
            }
        }
    }
    Ok(())
}

/// Manifest calendars no longer in the manifest are deleted, as a declared
/// thing that is no longer declared should be; one still named by a trigger
/// (of a job kept or added outside the manifest) or by another calendar's
/// `base` is kept, and reported with what uses it.
async fn delete_orphan_calendars(store: &Arc<dyn Store>, m: &Manifest) -> Result<(), StoreError> {
    let declared: std::collections::HashSet<&str> =
        m.calendars.iter().map(|c| c.name.as_str()).collect();
    let mut left: Vec<String> = store
        .calendar_list()
        .await?
        .into_iter()
        .filter(|row| row.source == "manifest" && !declared.contains(row.def.name.as_str()))
        .map(|row| row.def.name)
        .collect();
    // A calendar that is another's `base` can go once that one has gone.
    loop {
        let tried = left.len();
        let mut used = Vec::new();
        for name in left {
            match store.calendar_delete(&name).await {
                Ok(_) => {
                    tracing::info!(calendar = %name, "deleted calendar: no longer in the manifest")
                }
                Err(StoreError::Conflict(why)) => used.push((name, why)),
                Err(e) => return Err(e),
            }
        }
        if used.len() == tried {
            for (name, why) in &used {
                tracing::warn!(calendar = %name, "calendar is no longer in the manifest but is still used, so it is kept: {why}");
            }
            return Ok(());
        }
        left = used.into_iter().map(|(name, _)| name).collect();
    }
}

/// Runs a started node until `stop` turns true.
/// The admin API stops after the scheduler has drained, so it can be watched
/// until the end.
pub async fn run(node: Node, standby: bool, stop: watch::Receiver<bool>) {
    if standby {
        tracing::info!("standby: the scheduler is disabled on this node");
        if let Some(a) = &node.api {
            a.state.set_standby_ready();
        }
        let mut stop = stop;
        let _ = stop.wait_for(|s| *s).await;
    } else {
        Arc::clone(&node.scheduler).run(stop).await;
    }
    if let Some(a) = node.api {
        let _ = a.stop.send(true);
        let _ = a.task.await;
    }
}

/// Runs a started node until SIGTERM or SIGINT, with the module directory
/// watcher when one is given: what `quartzite serve` does once its options are
/// known.
pub async fn serve(node: Node, standby: bool, modules_dir: Option<PathBuf>) {
    let (stop_tx, stop_rx) = watch::channel(false);
    if let Some(dir) = modules_dir {
        tokio::spawn(crate::engine::watch::watch_modules(
            Arc::clone(&node.store),
            Arc::clone(&node.runtime),
            dir,
            stop_rx.clone(),
        ));
    }
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received: stopping");
        let _ = stop_tx.send(true);
    });
    run(node, standby, stop_rx).await;
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
