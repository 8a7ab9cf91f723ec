//! The sandboxed WebAssembly runtime: admits modules, runs one fire of a job in
//! a fresh store under its limits, and reports the outcome as data.
//!
//! It owns the wasmtime `Engine`, the linker (WASI p2 with nothing granted plus
//! the `quartzite:job/host` interface), the compiled-module caches, and the NoOp
//! fallback. It knows nothing of SQL, schedules or clusters: kv state and locks
//! reach it through the [`services`] traits.
//!
//! Guarantees: no module bytes and no guest behaviour make the host panic; a run
//! ends by its timeout plus grace whatever the guest does (CPU loops through epoch
//! interruption, blocking host calls through an async timeout); a lock a guest
//! holds is released when its run ends, however it ends.

#[doc(hidden)]
pub(crate) mod bindings;
pub mod engine;
mod http;
pub mod limits;
mod logs;
pub mod module;
pub mod outcome;
pub mod services;
mod state;

pub use bindings::{WIT_PACKAGE, WIT_VERSION, WitVersion};
pub use engine::{CowImages, EngineConfig};
pub use limits::Limits;
pub use module::{LoadOrigin, LoadedModule};
pub use outcome::{
    JobInfo, LimitKind, LogLevel, LogLine, LogSource, ModuleRejection, Overlap, RunOutcome,
    RunReport, SkipCode,
};
pub use services::{GrantRefusal, GrantSource, GrantsFrom, HostServices, MemoryGrants, RunGrants};

pub use state::NodeState;

use crate::grants;
use bindings::wit;
use module::{DiskCache, error_chain};
use state::{HostData, RunState};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Engine, Store, Trap, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;

/// Errors building a runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot configure the WebAssembly engine: {0}")]
    Engine(String),
    #[error("cannot start the epoch thread: {0}")]
    Ticker(#[from] std::io::Error),
}

/// Node-wide runtime settings.
#[derive(Clone, Debug, Default)]
pub struct RuntimeConfig {
    pub engine: EngineConfig,
    /// Where compiled modules are cached; `None` disables the disk cache.
    pub cache_dir: Option<PathBuf>,
    /// This node's id, recorded as the holder of locks its guests take.
    pub node_id: String,
}

/// One fire to run.
#[derive(Clone, Debug)]
pub struct RunRequest {
    pub job_key: String,
    pub trigger_key: String,
    pub fire_id: String,
    pub scheduled_at: SystemTime,
    pub attempt: u32,
    pub recovering: bool,
    /// The job data, JSON text.
    pub data: String,
    /// The event that caused the fire, if an event did.
    pub event: Option<TriggerEvent>,
    /// The fire's event depth (0 unless an event caused it): its emits are one deeper.
    pub depth: u32,
    pub limits: Limits,
    /// Where the run's grants come from.
    pub grants: GrantsFrom,
    /// Where the run is in its fire's trace (`domain::trace`), if it is
    /// traced: the parent of the spans of its host calls and requests, and the
    /// `TRACEPARENT` its guest sees.
    pub trace: Option<crate::domain::trace::RunContext>,
    /// Where a request to stop this one run comes from (overlap
    /// `cancel-other`): its `cancelled()` turns true when one comes, and past
    /// the grace the run is stopped. `None`: only the node's state stops it.
    pub stop: Option<watch::Receiver<Option<StopRequest>>>,
    /// What the guest's wall clock (WASI `wall-clock`) reads at the start of
    /// the run, moving on with the run's own elapsed (monotonic) time; `None`:
    /// the real clock. A backfill's fire sets its scheduled time, so a job
    /// computing "yesterday" from the clock computes the backfilled day.
    pub wall_clock_from: Option<SystemTime>,
}

/// A request to stop one run: the fire that superseded it, and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StopRequest {
    pub by: String,
    pub at: Instant,
}

/// Whether `stop` holds a request, and its grace's end.
fn stop_deadline(
    stop: Option<&watch::Receiver<Option<StopRequest>>>,
    grace: Duration,
) -> Option<Instant> {
    stop.and_then(|s| s.borrow().as_ref().map(|r| r.at + grace))
}

/// Waits for a request on `stop` and its grace to pass; forever without one.
async fn stopped(stop: Option<watch::Receiver<Option<StopRequest>>>, grace: Duration) {
    let Some(mut stop) = stop else {
        return std::future::pending().await;
    };
    let at = match stop.wait_for(Option::is_some).await {
        Ok(request) => request.as_ref().map(|r| r.at),
        Err(_) => None,
    };
    match at {
        Some(at) => tokio::time::sleep_until((at + grace).into()).await,
        None => std::future::pending().await,
    }
}

/// A guest wall clock that starts at a given instant and advances with the
/// host's monotonic clock from when the run's store was made.
struct ShiftedWallClock {
    from: Duration,
    began: Instant,
}

impl ShiftedWallClock {
    fn new(from: SystemTime) -> Self {
        ShiftedWallClock {
            // Before 1970 reads as 1970: the clock never goes negative.
            from: from.duration_since(UNIX_EPOCH).unwrap_or_default(),
            began: Instant::now(),
        }
    }
}

impl wasmtime_wasi::HostWallClock for ShiftedWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        self.from.saturating_add(self.began.elapsed())
    }
}

/// The event behind a fire, as the guest's `trigger-event` returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TriggerEvent {
    pub id: String,
    pub name: String,
    /// JSON text.
    pub payload: String,
    pub key: Option<String>,
    pub depth: u32,
    pub emitted_at: SystemTime,
    pub source_job: Option<String>,
}

impl RunRequest {
    /// A request with defaults for everything but the job key: fire id `manual`,
    /// due now, attempt 1, no data, default limits.
    pub fn new(job_key: impl Into<String>) -> Self {
        RunRequest {
            job_key: job_key.into(),
            trigger_key: "manual/run-once".into(),
            fire_id: "manual".into(),
            scheduled_at: SystemTime::now(),
            attempt: 1,
            recovering: false,
            data: String::new(),
            event: None,
            depth: 0,
            limits: Limits::default(),
            grants: GrantsFrom::Source,
            trace: None,
            stop: None,
            wall_clock_from: None,
        }
    }
}

/// What a job resolves to: its module, or the NoOp job and the reason.
#[derive(Clone, Debug)]
pub enum JobImpl {
    Wasm(Arc<LoadedModule>),
    NoOp(ModuleRejection),
}

/// An engine and what is tied to it: the linker, the compiled-module cache.
struct Engined {
    engine: Engine,
    linker: Linker<RunState>,
    cache: Option<DiskCache>,
    /// Whether its runs map initial memory images copy-on-write.
    mapped: bool,
}

impl Engined {
    /// An engine mapping images copy-on-write if `mapped`, its linker and cache.
    fn build(
        config: &RuntimeConfig,
        mapped: bool,
        grants_linked: bool,
    ) -> Result<Engined, RuntimeError> {
        let engine = engine::build(&config.engine, mapped)
            .map_err(|e| RuntimeError::Engine(error_chain(&e)))?;
        let linker = Runtime::linker(&engine, grants_linked)
            .map_err(|e| RuntimeError::Engine(error_chain(&e)))?;
        let cache = config
            .cache_dir
            .as_deref()
            .map(|dir| DiskCache::new(dir, &engine::fingerprint(&engine)));
        Ok(Engined {
            engine,
            linker,
            cache,
            mapped,
        })
    }
}

/// The runtime. One per node; cheap to share behind an `Arc`.
pub struct Runtime {
    /// The engine for modules whose initial memory is copied into each run
    /// (with `CowImages::On`, mapped for every module).
    engine: Engined,
    /// With `CowImages::Auto`, the engine for modules whose image is mapped
    /// copy-on-write (see `CowImages`), built with the first such module: a
    /// node running only small modules reserves no second pool. `None`: it
    /// could not be built, and large modules copy too.
    mapping: std::sync::OnceLock<Option<Engined>>,
    /// What the engines were built from.
    config: RuntimeConfig,
    modules: Mutex<HashMap<String, Arc<LoadedModule>>>,
    /// Compiles in progress by digest: a second load of the same bytes waits for
    /// the first one's result instead of compiling its own copy.
    compiling: Mutex<HashMap<String, Arc<CompileGate>>>,
    budget: module::CompileBudget,
    services: HostServices,
    node: watch::Sender<NodeState>,
    node_id: Arc<str>,
    /// False only in [`Runtime::without_grants`].
    grants_linked: bool,
    ticker: engine::EpochTicker,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Builds the engine, the linker and the caches.
    ///
    /// # Errors
    ///
    /// When wasmtime rejects the engine configuration or the epoch thread cannot start.
    pub fn new(config: RuntimeConfig, services: HostServices) -> Result<Runtime, RuntimeError> {
        Runtime::build(config, services, true)
    }

    /// A runtime without `wasi:http`, `wasi:config` and grants: only for
    /// measuring what they cost a run (the runtime bench).
    #[doc(hidden)]
    pub fn without_grants(
        config: RuntimeConfig,
        services: HostServices,
    ) -> Result<Runtime, RuntimeError> {
        Runtime::build(config, services, false)
    }

    fn build(
        config: RuntimeConfig,
        services: HostServices,
        grants_linked: bool,
    ) -> Result<Runtime, RuntimeError> {
        let all_mapped = config.engine.memory_image_cow == engine::CowImages::On;
        let main = Engined::build(&config, all_mapped, grants_linked)?;
        let ticker = engine::EpochTicker::start(&main.engine)?;
        let node_id = if config.node_id.is_empty() {
            "local".to_string()
        } else {
            config.node_id.clone()
        };
        Ok(Runtime {
            engine: main,
            mapping: std::sync::OnceLock::new(),
            modules: Mutex::new(HashMap::new()),
            compiling: Mutex::new(HashMap::new()),
            budget: module::CompileBudget {
                max_functions: config.engine.max_module_functions,
                ..module::CompileBudget::default()
            },
            services,
            node: watch::Sender::new(NodeState::Running),
            node_id: node_id.into(),
            grants_linked,
            ticker,
            config,
        })
    }

    /// The host's imports on `engine`.
    fn linker(engine: &Engine, grants_linked: bool) -> wasmtime::Result<Linker<RunState>> {
        let mut linker = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        // Every component may import wasi:http and wasi:config: what it may
        // reach through them is decided per request by the job's grants.
        if grants_linked {
            wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
            wasmtime_wasi_config::add_to_linker(&mut linker, |s: &mut RunState| {
                wasmtime_wasi_config::WasiConfig::from(&s.config)
            })?;
        }
        bindings::Job::add_to_linker::<RunState, HostData>(&mut linker, |s| s)?;
        Ok(linker)
    }

    /// The engine a module with `image_bytes` of initial memory image loads into.
    fn engine_for(&self, image_bytes: u64) -> &Engined {
        let cow = self.config.engine.memory_image_cow;
        if cow != engine::CowImages::Auto || !cow.maps(image_bytes) {
            return &self.engine;
        }
        let mapping = self.mapping.get_or_init(|| {
            match Engined::build(&self.config, true, self.grants_linked) {
                Ok(e) => {
                    self.ticker.add(&e.engine);
                    Some(e)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot build the copy-on-write engine; large modules copy their memory");
                    None
                }
            }
        });
        mapping.as_ref().unwrap_or(&self.engine)
    }

    /// Admits module bytes: checks, compiles (or loads the cached artifact) and
    /// links them. Modules already loaded are returned from memory by digest.
    ///
    /// Compiling takes milliseconds to seconds: call it off the async executor
    /// (`spawn_blocking`) on a busy node.
    ///
    /// # Errors
    ///
    /// A [`ModuleRejection`] with the reason code and the exact cause.
    pub fn load_bytes(&self, bytes: &[u8]) -> Result<Arc<LoadedModule>, ModuleRejection> {
        let started = Instant::now();
        module::check_header(bytes)?;
        let digest = module::digest(bytes);
        if let Some(m) = self.cached(&digest) {
            return Ok(m);
        }
        let gate = Arc::clone(
            self.compiling
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(digest.clone())
                .or_default(),
        );
        let mut result = gate.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(done) = result.as_ref() {
            return done.clone();
        }
        // The compile that held the gate before us may have finished and left.
        if let Some(m) = self.cached(&digest) {
            return Ok(m);
        }
        let loaded = self.compile_and_admit(bytes, &digest, started);
        *result = Some(loaded.clone());
        let mut compiling = self
            .compiling
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if compiling
            .get(&digest)
            .is_some_and(|g| Arc::ptr_eq(g, &gate))
        {
            compiling.remove(&digest);
        }
        loaded
    }

    fn compile_and_admit(
        &self,
        bytes: &[u8],
        digest: &str,
        started: Instant,
    ) -> Result<Arc<LoadedModule>, ModuleRejection> {
        // The budget is checked on a cache hit too: the image size it counts
        // picks the engine, and with it the cache directory.
        let image_bytes = module::check_budget(bytes, &self.budget)?;
        let engined = self.engine_for(image_bytes);
        let from_disk = engined
            .cache
            .as_ref()
            .and_then(|c| c.load(&engined.engine, digest));
        let (component, origin) = match from_disk {
            Some(c) => (c, LoadOrigin::DiskCache),
            None => {
                let component = module::compile(&engined.engine, bytes)?;
                // Admit first, so the cache never holds a component we refuse.
                module::scan(&engined.engine, &component)?;
                if let Some(cache) = &engined.cache {
                    cache.store(digest, &component);
                }
                (component, LoadOrigin::Compiled)
            }
        };
        let mut loaded = module::admit(
            &engined.engine,
            &engined.linker,
            &component,
            digest.to_string(),
            bytes.len(),
            origin,
            started,
        )?;
        loaded.image_bytes = image_bytes;
        loaded.image_mapped = engined.mapped;
        let loaded = Arc::new(loaded);
        self.modules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(digest.to_string(), Arc::clone(&loaded));
        Ok(loaded)
    }

    /// Reads and admits a module file.
    ///
    /// # Errors
    ///
    /// `module-missing` when the file cannot be read, else as [`Runtime::load_bytes`].
    pub fn load_file(&self, path: &Path) -> Result<Arc<LoadedModule>, ModuleRejection> {
        self.load_bytes(&module::read_file(path)?)
    }

    /// Resolves a module file for a job, falling back to the NoOp job.
    pub fn resolve_file(&self, path: &Path) -> JobImpl {
        match self.load_file(path) {
            Ok(m) => JobImpl::Wasm(m),
            Err(r) => JobImpl::NoOp(r),
        }
    }

    /// A module already loaded in memory, by digest.
    pub fn module_by_digest(&self, digest: &str) -> Option<Arc<LoadedModule>> {
        self.cached(digest)
    }

    /// Digests of the modules loaded in memory, sorted: what this node has
    /// compiled and can start at once.
    pub fn loaded_digests(&self) -> Vec<String> {
        let mut digests: Vec<String> = self
            .modules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        digests.sort_unstable();
        digests
    }

    fn cached(&self, digest: &str) -> Option<Arc<LoadedModule>> {
        self.modules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(digest)
            .cloned()
    }

    /// Forgets in-memory modules (the disk cache stays): the next load of each
    /// comes from disk.
    pub fn clear_memory_cache(&self) {
        self.modules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Asks every run to stop (`cancelled()` turns true); runs go on until they return.
    pub fn drain(&self) {
        self.node
            .send_if_modified(|s| raise(s, NodeState::Draining));
    }

    /// Stops every run now; they end as `cancelled`.
    pub fn abort(&self) {
        self.node
            .send_if_modified(|s| raise(s, NodeState::Aborting));
    }

    /// Runs one fire of a resolved job. The NoOp job runs nothing and reports `skipped`.
    pub async fn execute(&self, job: &JobImpl, request: RunRequest) -> RunReport {
        match job {
            JobImpl::Wasm(module) => self.run(module, request).await,
            JobImpl::NoOp(rejection) => {
                tracing::warn!(
                    job = %request.job_key,
                    fire = %request.fire_id,
                    reason = rejection.code.as_str(),
                    detail = %rejection.detail,
                    "module cannot run; the NoOp job skips this fire"
                );
                RunReport {
                    outcome: RunOutcome::Skipped {
                        reason: rejection.code,
                        detail: rejection.detail.clone(),
                    },
                    started_at: SystemTime::now(),
                    duration: Duration::ZERO,
                    logs: Vec::new(),
                    logs_dropped: 0,
                }
            }
        }
    }

    /// The grants of the run `request` starts; `None`: nothing granted (the
    /// common case costs nothing: no read, nothing compiled).
    async fn run_grants(&self, request: &RunRequest) -> Result<Option<RunGrants>, GrantRefusal> {
        match &request.grants {
            GrantsFrom::Source => self.services.grants.run_grants(&request.job_key).await,
            GrantsFrom::Stored(None) => Ok(None),
            GrantsFrom::Stored(Some(text)) => {
                let grants = grants::Grants::from_stored(&request.job_key, Some(text))
                    .map_err(GrantRefusal::Permanent)?;
                if grants.is_empty() {
                    return Ok(None);
                }
                self.services.grants.open(&grants).await.map(Some)
            }
        }
    }

    /// Runs one fire of `module` in a fresh store under `request.limits`.
    pub async fn run(&self, module: &LoadedModule, request: RunRequest) -> RunReport {
        let started_at = SystemTime::now();
        let start = Instant::now();
        let limits = request.limits.clone();
        let job_key: Arc<str> = request.job_key.as_str().into();
        let log = RunLog::new(
            limits.max_log_bytes,
            Arc::clone(&job_key),
            request.fire_id.as_str().into(),
        );
        if limits.fuel.is_some() && !self.config.engine.fuel {
            return self.report(
                RunOutcome::Failed {
                    retryable: false,
                    message: "the job sets a fuel limit, but this node runs without fuel metering \
                              (enable runtime fuel)"
                        .into(),
                },
                started_at,
                start,
                &log,
            );
        }
        let looked_up = if self.grants_linked {
            self.run_grants(&request).await
        } else {
            Ok(None)
        };
        let grants = match looked_up {
            Ok(g) => g,
            Err(refusal) => {
                let retryable = !matches!(refusal, GrantRefusal::Permanent(_));
                return self.report(
                    RunOutcome::Failed {
                        retryable,
                        message: refusal.to_string(),
                    },
                    started_at,
                    start,
                    &log,
                );
            }
        };
        let mut store = self.new_store(module, &request, &limits, &log, start, grants.as_ref());
        let ctx = wit::Context {
            job_key: request.job_key.clone(),
            trigger_key: request.trigger_key.clone(),
            fire_id: request.fire_id.clone(),
            scheduled_at: millis(request.scheduled_at),
            fired_at: millis(started_at),
            attempt: request.attempt,
            recovering: request.recovering,
            data: request.data.clone(),
        };
        let hard_deadline = start + limits.timeout + limits.grace;
        let mut aborted = self.node.subscribe();
        let stop = request.stop.clone();
        let result = {
            let call = async {
                let job = module.pre.instantiate_async(&mut store).await?;
                job.quartzite_job_runner().call_run(&mut store, &ctx).await
            };
            // Epochs stop guest code; this timeout also ends host calls that block
            // (WASI sleep, lock waits), which epochs cannot interrupt.
            tokio::select! {
                r = tokio::time::timeout_at((hard_deadline + engine::TICK * 5).into(), call) => r.ok(),
                _ = aborted.wait_for(|s| *s == NodeState::Aborting) => None,
                () = stopped(stop.clone(), limits.grace) => None,
            }
        };
        // A run asked to stop (overlap `cancel-other`) that did not complete
        // is recorded as superseded, however it ended.
        let superseded = stop
            .as_ref()
            .and_then(|s| s.borrow().as_ref().map(|r| r.by.clone()));
        let node_state = *self.node.borrow();
        let timed_out = Instant::now() >= start + limits.timeout;
        let outcome = match result {
            None if node_state == NodeState::Aborting => RunOutcome::Cancelled,
            None => RunOutcome::TimedOut {
                timeout_ms: duration_ms(limits.timeout),
            },
            Some(Ok(Ok(out))) => completed(redact_outcome(out, store.data()), &limits, &log),
            Some(Ok(Err(failure))) if timed_out => {
                let _ = failure;
                RunOutcome::TimedOut {
                    timeout_ms: duration_ms(limits.timeout),
                }
            }
            Some(Ok(Err(_))) if node_state >= NodeState::Draining => RunOutcome::Cancelled,
            Some(Ok(Err(failure))) => match failure {
                wit::Failure::Retry(m) => RunOutcome::Failed {
                    retryable: true,
                    message: cap(store.data().redact(m)),
                },
                wit::Failure::Fatal(m) => RunOutcome::Failed {
                    retryable: false,
                    message: cap(store.data().redact(m)),
                },
            },
            Some(Err(err)) => classify_trap(&err, store.data(), node_state, &limits, &log),
        };
        let outcome = match (outcome, superseded) {
            (done @ RunOutcome::Completed { .. }, _) => done,
            (_, Some(by)) if node_state < NodeState::Aborting => RunOutcome::Superseded { by },
            (outcome, _) => outcome,
        };
        drop(store);
        self.report(outcome, started_at, start, &log)
    }

    /// Calls the module's `describe` in a fresh store with default limits.
    ///
    /// # Errors
    ///
    /// The outcome of the failed call (trap, timeout, ...).
    pub async fn describe(&self, module: &LoadedModule) -> Result<JobInfo, RunOutcome> {
        let limits = Limits {
            timeout: Duration::from_secs(5),
            ..Limits::default()
        };
        let request = RunRequest {
            limits: limits.clone(),
            ..RunRequest::new("describe/describe")
        };
        let start = Instant::now();
        let log = RunLog::new(
            limits.max_log_bytes,
            "describe/describe".into(),
            "describe".into(),
        );
        let mut store = self.new_store(module, &request, &limits, &log, start, None);
        let call = async {
            let job = module.pre.instantiate_async(&mut store).await?;
            job.quartzite_job_runner().call_describe(&mut store).await
        };
        let result = tokio::time::timeout(limits.timeout + limits.grace, call).await;
        match result {
            Err(_) => Err(RunOutcome::TimedOut {
                timeout_ms: duration_ms(limits.timeout),
            }),
            Ok(Ok(info)) => bounded_info(info.into()),
            Ok(Err(err)) => Err(classify_trap(
                &err,
                store.data(),
                NodeState::Running,
                &limits,
                &log,
            )),
        }
    }

    fn new_store(
        &self,
        module: &LoadedModule,
        request: &RunRequest,
        limits: &Limits,
        log: &RunLog,
        start: Instant,
        grants: Option<&RunGrants>,
    ) -> Store<RunState> {
        // Nothing is granted: no preopened directories, no arguments, no
        // sockets or name lookups, no environment but the run's TRACEPARENT
        // when it is traced. Output goes to the run's log. Outbound HTTP and
        // config go only as far as the job's grants.
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(log.stream(0)).stderr(log.stream(1));
        if let Some(run) = &request.trace {
            wasi.env("TRACEPARENT", run.traceparent());
        }
        if let Some(from) = request.wall_clock_from {
            wasi.wall_clock(ShiftedWallClock::new(from));
        }
        let wasi = wasi.build();
        let redactor = grants.filter(|g| !g.secrets.is_empty()).map(|g| {
            Arc::new(grants::Redactor::new(
                g.secrets.iter().map(|(_, _, v)| v.clone()),
            ))
        });
        if let Some(r) = &redactor {
            log.set_redactor((**r).clone());
        }
        let job_key: Arc<str> = request.job_key.as_str().into();
        let state = RunState {
            wasi,
            table: ResourceTable::new(),
            http_ctx: wasmtime_wasi_http::WasiHttpCtx::new(),
            http: http::RunHttp::new(
                grants,
                log.clone(),
                Arc::clone(&job_key),
                Arc::clone(&self.services.grants),
                start + limits.timeout,
                request.trace,
            ),
            config: grants
                .map(|g| g.grants.config.iter().collect())
                .unwrap_or_default(),
            grants: grants.map(|g| Arc::clone(&g.grants)),
            redactor,
            limiter: limits::RunLimiter::new(limits.max_memory),
            log: log.clone(),
            services: self.services.clone(),
            job_key,
            fire_id: request.fire_id.as_str().into(),
            event: request.event.clone(),
            depth: request.depth,
            emits: 0,
            fan_out_refused: None,
            holder: format!("{}/{}", self.node_id, request.fire_id).into(),
            soft_deadline: start + limits.timeout,
            node: self.node.subscribe(),
            stop: request.stop.clone(),
            max_kv_value: limits.max_kv_value_bytes,
            kv_quota: services::KvQuota {
                max_keys: limits.max_kv_keys,
                max_bytes: limits.max_kv_bytes,
            },
            max_locks: limits.max_locks_held,
            locks_held: 0,
            trace: request.trace,
        };
        // The store belongs to the engine the module was compiled by.
        let mut store = Store::new(module.pre.engine(), state);
        store.limiter(|s| &mut s.limiter);
        if self.config.engine.fuel {
            // With metering on, a store without fuel traps at once: no limit means "all of it".
            let _ = store.set_fuel(limits.fuel.unwrap_or(u64::MAX));
        }
        let hard_deadline = start + limits.timeout + limits.grace;
        let node = self.node.subscribe();
        let stop = request.stop.clone();
        let grace = limits.grace;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            let now = Instant::now();
            if now >= hard_deadline
                || *node.borrow() == NodeState::Aborting
                || stop_deadline(stop.as_ref(), grace).is_some_and(|end| now >= end)
            {
                return Err(Trap::Interrupt.into());
            }
            // Hand the thread back to the executor every tick, so a busy guest
            // cannot starve other runs on the same worker.
            Ok(UpdateDeadline::Yield(1))
        });
        store
    }

    fn report(
        &self,
        outcome: RunOutcome,
        started_at: SystemTime,
        start: Instant,
        log: &RunLog,
    ) -> RunReport {
        let (logs, logs_dropped) = log.finish();
        RunReport {
            outcome,
            started_at,
            duration: start.elapsed(),
            logs,
            logs_dropped,
        }
    }

    /// The compatibility fingerprint (which names the disk cache directory)
    /// of the engine for modules whose initial memory is copied, small ones
    /// with the default `CowImages::Auto`.
    pub fn fingerprint(&self) -> String {
        engine::fingerprint(&self.engine.engine)
    }
}

use logs::RunLog;

/// One digest's compile: the first loader fills it, later ones read it.
#[derive(Default)]
struct CompileGate(Mutex<Option<Result<Arc<LoadedModule>, ModuleRejection>>>);

/// The longest `describe()` name or version accepted: the module-reference
/// limit. A longer one is refused, not cut, so it cannot become a different name.
pub const MAX_DESCRIBE_NAME: usize = 128;
/// `describe()` descriptions and default schedules are cut to this many bytes.
pub const MAX_DESCRIBE_TEXT: usize = 1024;

/// Guest text is data: names too long to be names are refused, free text is cut
/// and stripped of control characters. Names keep their characters, so a push
/// can refuse one that is not a module name instead of storing a changed one.
fn bounded_info(mut info: JobInfo) -> Result<JobInfo, RunOutcome> {
    for (what, value) in [("name", &info.name), ("version", &info.version)] {
        if value.len() > MAX_DESCRIBE_NAME {
            // A module that describes itself so is refused like invalid bytes.
            return Err(RunOutcome::Skipped {
                reason: SkipCode::ModuleInvalid,
                detail: format!(
                    "describe() returned a {what} of {} bytes; the limit is {MAX_DESCRIBE_NAME}",
                    value.len()
                ),
            });
        }
    }
    info.description = info
        .description
        .map(|d| crate::text::strip(&d, MAX_DESCRIBE_TEXT));
    info.default_schedule = info
        .default_schedule
        .map(|d| crate::text::strip(&d, MAX_DESCRIBE_TEXT));
    Ok(info)
}

fn raise(state: &mut NodeState, to: NodeState) -> bool {
    if *state < to {
        *state = to;
        true
    } else {
        false
    }
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Failure messages are guest text stored in history and printed: keep them to a
/// sane size and free of control characters.
fn cap(message: String) -> String {
    crate::text::strip(&message, 4096)
}

/// A successful run's details and new data with the run's secrets redacted.
fn redact_outcome(mut out: wit::Outcome, state: &RunState) -> wit::Outcome {
    if state.redactor.is_some() {
        out.details = out.details.map(|d| state.redact(d));
        out.new_data = out.new_data.map(|d| state.redact(d));
    }
    out
}

fn completed(out: wit::Outcome, limits: &Limits, log: &RunLog) -> RunOutcome {
    let size =
        out.details.as_ref().map_or(0, String::len) + out.new_data.as_ref().map_or(0, String::len);
    if size > limits.max_output_bytes {
        return RunOutcome::LimitExceeded {
            limit: LimitKind::Output,
            message: format!(
                "the run returned {size} bytes of details and data; the limit is {}",
                limits.max_output_bytes
            ),
        };
    }
    if let Some(data) = &out.new_data
        && serde_json::from_str::<serde::de::IgnoredAny>(data).is_err()
    {
        return RunOutcome::Failed {
            retryable: false,
            message: "the run returned new job data that is not JSON".into(),
        };
    }
    // History stores details as JSON: text that is not JSON is kept as a JSON string.
    let details = out.details.map(|d| {
        if serde_json::from_str::<serde::de::IgnoredAny>(&d).is_ok() {
            d
        } else {
            log.push(
                LogLevel::Warn,
                LogSource::Log,
                "details were not JSON; stored as a string",
            );
            serde_json::Value::String(d).to_string()
        }
    });
    RunOutcome::Completed {
        details,
        new_data: out.new_data,
    }
}

fn classify_trap(
    err: &wasmtime::Error,
    state: &RunState,
    node: NodeState,
    limits: &Limits,
    log: &RunLog,
) -> RunOutcome {
    let trap = err.downcast_ref::<Trap>().copied();
    match trap {
        Some(Trap::Interrupt) if node == NodeState::Aborting => return RunOutcome::Cancelled,
        Some(Trap::Interrupt) => {
            return RunOutcome::TimedOut {
                timeout_ms: duration_ms(limits.timeout),
            };
        }
        Some(Trap::OutOfFuel) => {
            return RunOutcome::LimitExceeded {
                limit: LimitKind::Fuel,
                message: format!("the run used up its fuel ({})", limits.fuel.unwrap_or(0)),
            };
        }
        Some(Trap::StackOverflow) => {
            return RunOutcome::LimitExceeded {
                limit: LimitKind::Stack,
                message: "the guest's call stack overflowed".into(),
            };
        }
        _ => {}
    }
    if let Some(wanted) = state.limiter.denied_memory {
        return RunOutcome::LimitExceeded {
            limit: LimitKind::Memory,
            message: format!(
                "the guest tried to grow its memory to {wanted} bytes; the cap is {} bytes",
                limits.max_memory
            ),
        };
    }
    let mut message = match trap {
        Some(t) => t.to_string(),
        None => err.root_cause().to_string(),
    };
    if let Some(p) = log.panic_message() {
        message.push_str("; guest ");
        message.push_str(&p);
    }
    RunOutcome::Trapped {
        message: cap(message),
    }
}
