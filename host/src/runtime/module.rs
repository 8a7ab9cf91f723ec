//! Admitting module bytes: from untrusted bytes to a compiled, checked,
//! pre-instantiated job, or a [`ModuleRejection`] that says exactly why not.
//!
//! Order matters and each stage names its own failure: size and header check
//! (not wasm, core module) -> digest -> compile budget (a wasmparser pass that
//! counts functions and nesting, so a module that would take gigabytes and
//! minutes to compile is refused in milliseconds) -> compile from binary only (never WAT text)
//! or load this node's own cached artifact -> scan the component's imports and
//! exports for the contract's version -> link (`instantiate_pre`) -> typed exports.
//! Nothing here may panic on any bytes.

use super::bindings::{JobPre, WIT_PACKAGE, WIT_VERSION, WitVersion};
use super::outcome::{ModuleRejection, SkipCode};
use super::state::RunState;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use wasmtime::Engine;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker};

/// The largest module accepted, in bytes.
pub const MAX_MODULE_BYTES: usize = 64 << 20;

/// Components nested deeper than this are refused before compiling.
pub const MAX_COMPONENT_NESTING: u32 = 16;

/// What a module may ask of the compiler, checked before compiling: Cranelift's
/// time and memory grow with the number of functions (a million small functions
/// took 34 s and 6.25 GiB), not with the file's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompileBudget {
    /// Functions defined over all core modules of the component.
    pub max_functions: u64,
    /// Nesting depth of components and modules inside the component.
    pub max_nesting: u32,
}

impl Default for CompileBudget {
    fn default() -> Self {
        CompileBudget {
            max_functions: 100_000,
            max_nesting: MAX_COMPONENT_NESTING,
        }
    }
}

/// Counts what compiling `bytes` would cost and refuses what is over `budget`;
/// returns the size of the initial memory image, the bytes of the active data
/// segments of all core modules (what a run's memories start from). Bytes
/// wasmparser cannot read pass: the compiler then names the defect.
pub(crate) fn check_budget(bytes: &[u8], budget: &CompileBudget) -> Result<u64, ModuleRejection> {
    use wasmparser::{DataKind, Parser, Payload};
    let mut functions: u64 = 0;
    let mut depth: u32 = 0;
    let mut image: u64 = 0;
    for payload in Parser::new(0).parse_all(bytes) {
        let Ok(payload) = payload else {
            return Ok(image);
        };
        match payload {
            Payload::Version { .. } => {
                depth += 1;
                if depth > budget.max_nesting + 1 {
                    return Err(ModuleRejection::new(
                        SkipCode::ModuleInvalid,
                        format!(
                            "nests components or modules more than {} deep, over the compile budget",
                            budget.max_nesting
                        ),
                    ));
                }
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::DataSection(segments) => {
                for segment in segments.into_iter().flatten() {
                    if matches!(segment.kind, DataKind::Active { .. }) {
                        image += segment.data.len() as u64;
                    }
                }
            }
            Payload::CodeSectionStart { count, .. } => {
                functions += u64::from(count);
                if functions > budget.max_functions {
                    return Err(ModuleRejection::new(
                        SkipCode::ModuleInvalid,
                        format!(
                            "defines more than {} functions, over the compile budget \
                             (runtime.max_module_functions)",
                            budget.max_functions
                        ),
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(image)
}

/// Reads a module file, refusing one over [`MAX_MODULE_BYTES`] before reading
/// it: a 2 GiB file must not become 2 GiB of memory.
///
/// # Errors
///
/// `module-missing` when the file cannot be read, `module-invalid` when it is too large.
pub fn read_file(path: &Path) -> Result<Vec<u8>, ModuleRejection> {
    use std::io::Read;
    let missing = |e: std::io::Error| {
        ModuleRejection::new(
            SkipCode::ModuleMissing,
            format!("cannot read {}: {e}", path.display()),
        )
    };
    let too_large = |len: u64| {
        ModuleRejection::new(
            SkipCode::ModuleInvalid,
            format!(
                "{} is {len} bytes, over the {MAX_MODULE_BYTES} byte limit",
                path.display()
            ),
        )
    };
    let file = std::fs::File::open(path).map_err(missing)?;
    let limit = u64::try_from(MAX_MODULE_BYTES).unwrap_or(u64::MAX);
    let len = file.metadata().map_err(missing)?.len();
    if len > limit {
        return Err(too_large(len));
    }
    // The file may grow between the size check and the read: never read past the limit.
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(missing)?;
    if bytes.len() > MAX_MODULE_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// A module's identity: the lowercase hex sha256 of its bytes.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// An admitted module, ready to instantiate many times.
pub struct LoadedModule {
    pub digest: String,
    /// The `quartzite:job` version the component was built for (from its runner export).
    pub wit_version: WitVersion,
    /// Every interface the component imports, e.g. `wasi:cli/stdout@0.2.6`.
    pub imports: Vec<String>,
    /// Every interface the component exports.
    pub exports: Vec<String>,
    /// Size of the module's bytes.
    pub size: usize,
    /// How it was obtained: compiled now, or loaded from the on-disk cache.
    pub origin: LoadOrigin,
    pub load_time: Duration,
    /// Bytes of its initial memory image (active data segments).
    pub image_bytes: u64,
    /// Whether its runs map that image copy-on-write (see `CowImages`).
    pub image_mapped: bool,
    pub(crate) pre: JobPre<RunState>,
}

impl std::fmt::Debug for LoadedModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModule")
            .field("digest", &self.digest)
            .field("wit_version", &self.wit_version)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// Where a loaded module's compiled code came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoadOrigin {
    Compiled,
    DiskCache,
}

/// Checks the bytes before anything parses them further.
pub(crate) fn check_header(bytes: &[u8]) -> Result<(), ModuleRejection> {
    if bytes.len() > MAX_MODULE_BYTES {
        return Err(ModuleRejection::new(
            SkipCode::ModuleInvalid,
            format!(
                "module is {} bytes, over the {} byte limit",
                bytes.len(),
                MAX_MODULE_BYTES
            ),
        ));
    }
    if wasmparser::Parser::is_component(bytes) {
        return Ok(());
    }
    if wasmparser::Parser::is_core_wasm(bytes) {
        return Err(ModuleRejection::new(
            SkipCode::ModuleIncompatible,
            "is a core WebAssembly module, not a component; build the job for wasm32-wasip2 \
             with quartzite-sdk",
        ));
    }
    let what = if bytes.is_empty() {
        "is empty".to_string()
    } else if bytes.starts_with(b"\0asm") {
        "has the wasm magic number but an unknown version or layer".to_string()
    } else {
        format!(
            "is not a WebAssembly binary (starts with {})",
            hex::encode(&bytes[..bytes.len().min(4)])
        )
    };
    Err(ModuleRejection::new(SkipCode::ModuleInvalid, what))
}

/// Compiles untrusted bytes. Binary only: `Component::new` would also accept WAT text.
pub(crate) fn compile(engine: &Engine, bytes: &[u8]) -> Result<Component, ModuleRejection> {
    Component::from_binary(engine, bytes).map_err(|e| {
        ModuleRejection::new(
            SkipCode::ModuleInvalid,
            format!("does not compile: {}", error_chain(&e)),
        )
    })
}

/// Splits `ns:pkg/iface@1.2.3` into (`ns:pkg`, `iface`, version text).
fn split_interface(name: &str) -> Option<(&str, &str, Option<&str>)> {
    let (package, rest) = name.split_once('/')?;
    match rest.split_once('@') {
        Some((iface, version)) => Some((package, iface, Some(version))),
        None => Some((package, rest, None)),
    }
}

/// The result of scanning a component's imports and exports.
pub(crate) struct Scan {
    pub wit_version: WitVersion,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
}

/// Reads the contract version from the component's own import and export names:
/// wasmtime's linker error for a major-version mismatch does not say so.
pub(crate) fn scan(engine: &Engine, component: &Component) -> Result<Scan, ModuleRejection> {
    let ty = component.component_type();
    let imports: Vec<String> = ty
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let exports: Vec<(String, bool)> = ty
        .exports(engine)
        .map(|(name, item)| {
            (
                name.to_string(),
                matches!(item.ty, ComponentItem::ComponentInstance(_)),
            )
        })
        .collect();
    let incompatible = |detail: String| ModuleRejection::new(SkipCode::ModuleIncompatible, detail);

    let mut runner = None;
    for (name, is_instance) in &exports {
        if let Some((package, "runner", version)) = split_interface(name)
            && package == WIT_PACKAGE
            && *is_instance
        {
            let version = version.and_then(WitVersion::parse).ok_or_else(|| {
                incompatible(format!("exports {name}, which carries no usable version"))
            })?;
            runner = Some(version);
        }
    }
    let Some(wit_version) = runner else {
        let root = exports.iter().any(|(n, _)| n == "run" || n == "describe");
        return Err(incompatible(if root {
            format!(
                "exports `run` at the world's root instead of through {WIT_PACKAGE}/runner; \
                 rebuild it with quartzite-sdk for {WIT_PACKAGE}@{WIT_VERSION}"
            )
        } else {
            format!(
                "does not export {WIT_PACKAGE}/runner; it is not a Quartzite job (exports: {})",
                list_or_none(exports.iter().map(|(n, _)| n.as_str()))
            )
        }));
    };
    if !wit_version.runs_on(WIT_VERSION) {
        return Err(incompatible(format!(
            "is built for {WIT_PACKAGE}@{wit_version}, and this host implements \
             {WIT_PACKAGE}@{WIT_VERSION}{}",
            if wit_version.major != WIT_VERSION.major {
                " (another major version)"
            } else {
                " (a newer minor version)"
            }
        )));
    }
    for name in &imports {
        match split_interface(name) {
            Some((package, _, version)) if package == WIT_PACKAGE => {
                let v = version.and_then(WitVersion::parse);
                if !v.is_some_and(|v| v.runs_on(WIT_VERSION)) {
                    return Err(incompatible(format!(
                        "imports {name}, and this host implements {WIT_PACKAGE}@{WIT_VERSION}"
                    )));
                }
            }
            // WASI is linked with nothing granted; whether the exact interface is
            // provided is the linker's call below.
            Some((package, _, _)) if package.starts_with("wasi:") => {}
            _ => {
                return Err(incompatible(format!(
                    "imports {name}, which this host does not provide"
                )));
            }
        }
    }
    Ok(Scan {
        wit_version,
        imports,
        exports: exports.into_iter().map(|(n, _)| n).collect(),
    })
}

fn list_or_none<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<&str> = names.collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Links the component against the host and looks up its typed exports once.
pub(crate) fn prepare(
    linker: &Linker<RunState>,
    component: &Component,
) -> Result<JobPre<RunState>, ModuleRejection> {
    let incompatible = |e: wasmtime::Error| {
        ModuleRejection::new(
            SkipCode::ModuleIncompatible,
            format!("cannot be linked: {}", error_chain(&e)),
        )
    };
    let pre = linker.instantiate_pre(component).map_err(incompatible)?;
    JobPre::new(pre).map_err(incompatible)
}

/// Assembles a loaded module from a compiled component.
pub(crate) fn admit(
    engine: &Engine,
    linker: &Linker<RunState>,
    component: &Component,
    digest: String,
    size: usize,
    origin: LoadOrigin,
    started: Instant,
) -> Result<LoadedModule, ModuleRejection> {
    let scan = scan(engine, component)?;
    let pre = prepare(linker, component)?;
    Ok(LoadedModule {
        digest,
        wit_version: scan.wit_version,
        imports: scan.imports,
        exports: scan.exports,
        size,
        origin,
        load_time: started.elapsed(),
        image_bytes: 0,
        image_mapped: false,
        pre,
    })
}

/// Every message of an error's chain, outermost first, joined by `: `.
pub(crate) fn error_chain(e: &wasmtime::Error) -> String {
    let mut out = String::new();
    for (i, cause) in e.chain().enumerate() {
        if i > 0 {
            out.push_str(": ");
        }
        out.push_str(&cause.to_string());
    }
    out
}

/// Compiled components on local disk, keyed by engine fingerprint and digest, so
/// a restart does not recompile.
///
/// Only this node writes here, and only artifacts of its own `serialize`: loading
/// one is `unsafe` in wasmtime because a tampered artifact is native code.
#[derive(Clone, Debug)]
pub struct DiskCache {
    dir: PathBuf,
}

impl DiskCache {
    pub(crate) fn new(root: &Path, fingerprint: &str) -> Self {
        DiskCache {
            dir: root.join(fingerprint),
        }
    }

    fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}.cwasm"))
    }

    pub(crate) fn load(&self, engine: &Engine, digest: &str) -> Option<Component> {
        let path = self.path(digest);
        if !path.is_file() {
            return None;
        }
        // SAFETY: the file is in this node's private cache directory, named by the
        // engine fingerprint, and was written by `store` below from
        // `Component::serialize` of this wasmtime build (renamed into place only
        // once complete). wasmtime still checks its header and version.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %error_chain(&e), "discarding unusable cached module");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    pub(crate) fn store(&self, digest: &str, component: &Component) {
        let result = (|| -> std::io::Result<()> {
            let bytes = component.serialize().map_err(std::io::Error::other)?;
            std::fs::create_dir_all(&self.dir)?;
            // Unique per write: two processes or threads caching the same digest
            // at once must not write into one temporary file.
            let tmp = self.dir.join(format!(
                ".{digest}.{}.{}.tmp",
                std::process::id(),
                uuid::Uuid::now_v7().simple()
            ));
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, self.path(digest))
        })();
        if let Err(e) = result {
            // The cache only saves time; a node that cannot write it still runs jobs.
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot write the module cache");
        }
    }
}

/// The capabilities behind grants that a component's imports can use:
/// `http` (`wasi:http/outgoing-handler`) and `config` (`wasi:config/store`).
/// Importing one grants nothing: the job's grants decide what it reaches.
pub fn capabilities(imports: &[String]) -> Vec<&'static str> {
    let mut out = Vec::new();
    if imports
        .iter()
        .any(|i| i.starts_with("wasi:http/outgoing-handler"))
    {
        out.push("http");
    }
    if imports.iter().any(|i| i.starts_with("wasi:config/store")) {
        out.push("config");
    }
    if imports.iter().any(|i| i.starts_with("quartzite:job/host")) {
        out.push("emit");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_check_names_each_kind_of_bad_bytes() {
        assert_eq!(check_header(b"").unwrap_err().detail, "is empty");
        let junk = check_header(b"hello world").unwrap_err();
        assert_eq!(junk.code, SkipCode::ModuleInvalid);
        assert!(
            junk.detail.contains("not a WebAssembly binary"),
            "{}",
            junk.detail
        );
        let core = check_header(b"\0asm\x01\0\0\0").unwrap_err();
        assert_eq!(core.code, SkipCode::ModuleIncompatible);
        assert!(core.detail.contains("core WebAssembly module"));
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
    }

    #[test]
    fn interface_names_split_into_package_interface_and_version() {
        assert_eq!(
            split_interface("quartzite:job/runner@1.0.0"),
            Some(("quartzite:job", "runner", Some("1.0.0")))
        );
        assert_eq!(
            split_interface("wasi:cli/stdout"),
            Some(("wasi:cli", "stdout", None))
        );
        assert_eq!(split_interface("run"), None);
    }
}
