//! From a job's module reference to something the runtime can run: store lookup
//! by name, version or digest, the runtime's compiled-module cache, and the NoOp
//! job when the module is missing or cannot run.

use crate::metrics::Metrics;
use crate::runtime::{JobImpl, JobInfo, ModuleRejection, RunOutcome, Runtime, SkipCode};
use crate::store::{ModulePut, ModuleRecord, ModuleRef, Store, StoreError};
use std::path::Path;
use std::sync::Arc;

/// Parses `NAME`, `NAME@VERSION` or `sha256:DIGEST`.
pub fn parse_ref(spec: &str) -> Option<ModuleRef> {
    crate::domain::parse_module_ref(spec).ok()
}

/// Why a module could not be pushed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("{0}")]
    Rejected(ModuleRejection),
    #[error("describe() failed: {0}")]
    Describe(String),
    /// A name or version the operator gave breaks the naming rules: bad input.
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// The module claims (in `describe()`) a name or version it may not take.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Validates a module file (compile, contract check, `describe`) and stores it
/// under `name`/`version`, by default those `describe` returns.
///
/// # Errors
///
/// When the file is missing or not a compatible component, `describe` fails, or
/// the version already exists with other bytes.
pub async fn push_file(
    store: &Arc<dyn Store>,
    runtime: &Arc<Runtime>,
    path: &Path,
    name: Option<&str>,
    version: Option<&str>,
) -> Result<(ModuleRecord, JobInfo), PushError> {
    push_bytes(
        store,
        runtime,
        read_module(path).await?,
        name,
        version,
        None,
        true,
    )
    .await
}

/// Reads a module file, a missing file being a `module-missing` rejection.
///
/// # Errors
///
/// When the file cannot be read.
pub async fn read_module(path: &Path) -> Result<Vec<u8>, PushError> {
    let path = path.to_path_buf();
    // Checks the size before reading, so an oversized file is refused unread.
    tokio::task::spawn_blocking(move || crate::runtime::module::read_file(&path))
        .await
        .map_err(|e| PushError::Describe(e.to_string()))?
        .map_err(PushError::Rejected)
}

/// [`push_file`] for bytes already in memory (a module uploaded through the
/// admin API): the same checks, in the same order. A compile is timed into
/// `metrics` when given. `restore`: the same bytes pushed again restore a
/// version withdrawn by a rollback (see [`ModulePut::restore`]).
///
/// # Errors
///
/// As [`push_file`].
pub async fn push_bytes(
    store: &Arc<dyn Store>,
    runtime: &Arc<Runtime>,
    bytes: Vec<u8>,
    name: Option<&str>,
    version: Option<&str>,
    metrics: Option<&Metrics>,
    restore: bool,
) -> Result<(ModuleRecord, JobInfo), PushError> {
    // A module this runtime holds already is not compiled again: not timed.
    let fresh = runtime
        .module_by_digest(&crate::runtime::module::digest(&bytes))
        .is_none();
    let rt = Arc::clone(runtime);
    let load_bytes = bytes.clone();
    let module = tokio::task::spawn_blocking(move || rt.load_bytes(&load_bytes))
        .await
        .map_err(|e| PushError::Describe(e.to_string()))?
        .map_err(PushError::Rejected)?;
    if fresh && let Some(m) = metrics {
        m.module_compiled(module.load_time);
    }
    let info = runtime.describe(&module).await.map_err(|o| match o {
        RunOutcome::Skipped { reason, detail } => {
            PushError::Rejected(ModuleRejection::new(reason, detail))
        }
        other => PushError::Describe(other.summary()),
    })?;
    for (field, given, check) in [
        (
            "name",
            name,
            crate::domain::check_module_name as fn(&str) -> Result<(), String>,
        ),
        ("version", version, crate::domain::check_module_version),
    ] {
        if let Some(text) = given {
            check(text).map_err(|e| PushError::Invalid {
                field,
                message: format!("{text:?}: {e}"),
            })?;
        }
    }
    let final_name = name.unwrap_or(&info.name);
    let final_version = version.unwrap_or(&info.version);
    // describe() strings are guest text: quoted escaped in every message.
    let shown = |text: &str| format!("\"{}\"", crate::text::escape(text));
    if name.is_none() {
        crate::domain::check_module_name(final_name).map_err(|e| {
            PushError::Refused(format!(
                "describe() names it {}, which is not a module name ({e}); give one with --name",
                shown(final_name)
            ))
        })?;
    }
    if version.is_none() {
        crate::domain::check_module_version(final_version).map_err(|e| {
            PushError::Refused(format!(
                "describe() gives the version {}, which is not a module version ({e}); give one with --version",
                shown(final_version)
            ))
        })?;
    }
    // A module must not take over a name by claiming it in describe(): only a
    // new name may come from there. Pushing the very same bytes under the same
    // name and version again stays a harmless repeat.
    if name.is_none() {
        let existing = store.module_list(Some(final_name)).await?;
        let repeat = existing
            .iter()
            .any(|m| m.version == final_version && m.digest == module.digest);
        if !existing.is_empty() && !repeat {
            return Err(PushError::Refused(format!(
                "describe() says this module is {final_name} {final_version}, and a module named {final_name:?} exists already: \
                 to add a version to it, give the name explicitly (--name {final_name}, API ?name={final_name}, the manifest's \
                 [[module]] name or the modules directory's file name)"
            )));
        }
    }
    let record = store
        .module_put(&ModulePut {
            name: final_name.to_string(),
            version: final_version.to_string(),
            digest: module.digest.clone(),
            wit_version: module.wit_version.to_string(),
            bytes,
            restore,
        })
        .await?;
    Ok((record, info))
}

/// What `describe()` returns for the stored module `reference` names, or
/// `None` when no such module is stored or it cannot be described (a job may
/// name a module pushed later: then there are no hints to use).
///
/// # Errors
///
/// When the store fails.
pub async fn describe_stored(
    store: &Arc<dyn Store>,
    runtime: &Arc<Runtime>,
    reference: &str,
) -> Result<Option<JobInfo>, StoreError> {
    let Some(reference) = parse_ref(reference) else {
        return Ok(None);
    };
    let Some(record) = store.module_get(&reference).await? else {
        return Ok(None);
    };
    let Some(bytes) = store.module_bytes(&record.digest).await? else {
        return Ok(None);
    };
    let rt = Arc::clone(runtime);
    let loaded = tokio::task::spawn_blocking(move || rt.load_bytes(&bytes)).await;
    let Ok(Ok(module)) = loaded else {
        return Ok(None);
    };
    Ok(runtime.describe(&module).await.ok())
}

/// How long a resolved reference is reused before the store is asked again: a
/// newly pushed "latest" version is picked up within this time.
const RESOLVED_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// Reference -> when it was resolved, and to what.
type ResolvedCache =
    std::collections::HashMap<String, (std::time::Instant, Arc<crate::runtime::LoadedModule>)>;

/// Digest -> the jobs whose fires wait for this node to compile it.
type HeldJobs = std::collections::HashMap<String, Vec<String>>;

/// Resolves module references for runs.
#[derive(Clone)]
pub struct ModuleResolver {
    store: Arc<dyn Store>,
    runtime: Arc<Runtime>,
    resolved: Arc<std::sync::Mutex<ResolvedCache>>,
    /// Modules being compiled ahead of their first run here (see
    /// [`ModuleResolver::hold_for_compile`]).
    held: Arc<std::sync::Mutex<HeldJobs>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for ModuleResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleResolver").finish_non_exhaustive()
    }
}

impl ModuleResolver {
    pub fn new(store: Arc<dyn Store>, runtime: Arc<Runtime>) -> Self {
        Self::with_metrics(store, runtime, Arc::default())
    }

    /// [`ModuleResolver::new`] timing module compiles into the node's `metrics`.
    pub fn with_metrics(
        store: Arc<dyn Store>,
        runtime: Arc<Runtime>,
        metrics: Arc<Metrics>,
    ) -> Self {
        ModuleResolver {
            store,
            runtime,
            resolved: Arc::default(),
            held: Arc::default(),
            metrics,
        }
    }

    /// What runs for a job whose module is `spec`.
    ///
    /// # Errors
    ///
    /// Only when the store cannot be read: the fire should be tried again later,
    /// not skipped. A missing or unusable module is the NoOp job, not an error.
    pub async fn resolve(&self, spec: &str) -> Result<JobImpl, StoreError> {
        if let Some((at, module)) = self
            .resolved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(spec)
            && at.elapsed() < RESOLVED_TTL
        {
            return Ok(JobImpl::Wasm(Arc::clone(module)));
        }
        let job = self.resolve_uncached(spec).await?;
        if let JobImpl::Wasm(module) = &job {
            self.resolved
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(
                    spec.to_string(),
                    (std::time::Instant::now(), Arc::clone(module)),
                );
        }
        Ok(job)
    }

    /// Forgets which version each reference resolved to, so the next run asks
    /// the store again (a module was pushed: "latest" may have moved).
    pub fn forget(&self) {
        self.resolved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// Prepares compiling the stored module `digest` ahead of its first run on
    /// this node, if this node runs contract `wit` and has not loaded it yet.
    /// Until the returned [`AheadCompile`] is dropped, the jobs whose module
    /// reference resolves to it now are in [`ModuleResolver::held_jobs`]: the
    /// node claims none of their fires, leaving them to a node that has the
    /// module compiled (the one it was pushed through), so no fire waits on
    /// this node's compile. `None`: nothing to compile.
    ///
    /// # Errors
    ///
    /// When the store cannot be read.
    pub async fn hold_for_compile(
        &self,
        digest: &str,
        wit: crate::runtime::WitVersion,
    ) -> Result<Option<AheadCompile>, StoreError> {
        if self.runtime.module_by_digest(digest).is_some() {
            return Ok(None);
        }
        let Some(record) = self
            .store
            .module_get(&ModuleRef::Digest(digest.to_string()))
            .await?
        else {
            return Ok(None);
        };
        let runnable =
            crate::runtime::WitVersion::parse(&record.wit_version).is_some_and(|v| v.runs_on(wit));
        if !runnable {
            return Ok(None);
        }
        let jobs = self.users(&record).await?;
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(digest.to_string(), jobs);
        Ok(Some(AheadCompile {
            resolver: self.clone(),
            digest: digest.to_string(),
        }))
    }

    /// The jobs whose fires this node leaves to others while it compiles
    /// their module (usually none).
    pub fn held_jobs(&self) -> Vec<String> {
        let held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        held.values().flatten().cloned().collect()
    }

    /// The jobs whose module reference resolves to `record` now: by digest, by
    /// name and version, or by name when it is the newest version.
    async fn users(&self, record: &ModuleRecord) -> Result<Vec<String>, StoreError> {
        let latest = self
            .store
            .module_get(&ModuleRef::Latest(record.name.clone()))
            .await?
            .is_some_and(|m| m.digest == record.digest);
        Ok(self
            .store
            .job_list()
            .await?
            .into_iter()
            .filter(|job| match parse_ref(&job.module) {
                Some(ModuleRef::Digest(d)) => d == record.digest,
                Some(ModuleRef::Version { name, version }) => {
                    name == record.name && version == record.version
                }
                Some(ModuleRef::Latest(name)) => latest && name == record.name,
                None => false,
            })
            .map(|job| job.job_key)
            .collect())
    }

    async fn resolve_uncached(&self, spec: &str) -> Result<JobImpl, StoreError> {
        let noop = |code, detail: String| Ok(JobImpl::NoOp(ModuleRejection { code, detail }));
        let Some(reference) = parse_ref(spec) else {
            return noop(
                SkipCode::ModuleMissing,
                format!("{spec:?} is not a module reference (NAME, NAME@VERSION or sha256:DIGEST)"),
            );
        };
        let Some(record) = self.store.module_get(&reference).await? else {
            return noop(
                SkipCode::ModuleMissing,
                format!("no module {spec} in the store"),
            );
        };
        if let Some(module) = self.runtime.module_by_digest(&record.digest) {
            return Ok(JobImpl::Wasm(module));
        }
        let Some(bytes) = self.store.module_bytes(&record.digest).await? else {
            return noop(
                SkipCode::ModuleMissing,
                format!("module {spec} was removed from the store"),
            );
        };
        Ok(match self.load(bytes).await {
            Ok(module) => JobImpl::Wasm(module),
            Err(rejection) => JobImpl::NoOp(rejection),
        })
    }

    /// Admits `bytes` into the runtime off the async threads (a compile takes
    /// milliseconds to a minute), timing a load into the node's metrics.
    async fn load(
        &self,
        bytes: Vec<u8>,
    ) -> Result<Arc<crate::runtime::LoadedModule>, ModuleRejection> {
        let runtime = Arc::clone(&self.runtime);
        let loaded = tokio::task::spawn_blocking(move || runtime.load_bytes(&bytes))
            .await
            .unwrap_or_else(|e| {
                Err(ModuleRejection {
                    code: SkipCode::ModuleInvalid,
                    detail: format!("loading failed: {e}"),
                })
            })?;
        self.metrics.module_compiled(loaded.load_time);
        Ok(loaded)
    }
}

/// A module compile ahead of its first run (from
/// [`ModuleResolver::hold_for_compile`]); dropping it ends the hold on its
/// jobs' fires, compiled or not.
#[derive(Debug)]
pub struct AheadCompile {
    resolver: ModuleResolver,
    digest: String,
}

impl AheadCompile {
    /// Compiles the module (or loads this node's cached artifact); returns
    /// whether it is loaded now. A module that does not load is left to the
    /// fire path, which runs it as the NoOp job with the reason.
    ///
    /// # Errors
    ///
    /// When the store cannot be read.
    pub async fn compile(&self) -> Result<bool, StoreError> {
        let r = &self.resolver;
        let Some(bytes) = r.store.module_bytes(&self.digest).await? else {
            return Ok(false);
        };
        Ok(r.load(bytes).await.is_ok())
    }
}

impl Drop for AheadCompile {
    fn drop(&mut self) {
        self.resolver
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.digest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_by_shape() {
        assert_eq!(parse_ref("hello"), Some(ModuleRef::Latest("hello".into())));
        assert_eq!(
            parse_ref("hello@1.2.0"),
            Some(ModuleRef::Version {
                name: "hello".into(),
                version: "1.2.0".into()
            })
        );
        let d = "a".repeat(64);
        assert_eq!(
            parse_ref(&format!("sha256:{d}")),
            Some(ModuleRef::Digest(d))
        );
        assert_eq!(parse_ref("sha256:xyz"), None);
        assert_eq!(parse_ref("a b"), None);
        assert_eq!(parse_ref("@1"), None);
        assert_eq!(parse_ref(""), None);
    }
}
