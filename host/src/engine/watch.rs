//! A watched modules directory (`serve --modules-dir`): each `*.wasm` file in it
//! is validated and pushed at start and again whenever its modification time or
//! size changes, under the file's stem as module name and the version its
//! `describe` returns. Jobs following the name run it from their next fire.
//!
//! It never removes or withdraws a module: a file that is deleted, or replaced
//! by one that does not validate, leaves the working version in place, and the
//! reason is logged. Polling (once a second) keeps it free of platform file
//! notification APIs; a file caught half-written fails validation and is tried
//! again once it changes.

use super::modules::{PushError, push_bytes, read_module};
use crate::runtime::Runtime;
use crate::store::Store;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// How often the directory is listed.
pub const POLL: Duration = Duration::from_secs(1);

/// What was last seen of a file: a change of either means "push it again".
type Seen = HashMap<PathBuf, (Option<SystemTime>, u64)>;

/// Checks that `dir` can be watched.
///
/// # Errors
///
/// When it is not a readable directory.
pub fn check_dir(dir: &Path) -> Result<(), String> {
    std::fs::read_dir(dir)
        .map(|_| ())
        .map_err(|e| format!("modules directory {}: {e}", dir.display()))
}

/// Watches `dir` until `stop` turns true.
pub async fn watch_modules(
    store: Arc<dyn Store>,
    runtime: Arc<Runtime>,
    dir: PathBuf,
    mut stop: watch::Receiver<bool>,
) {
    let mut seen = Seen::new();
    tracing::info!(dir = %dir.display(), "watching the modules directory");
    let mut first = true;
    loop {
        scan(&store, &runtime, &dir, &mut seen, !first).await;
        first = false;
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// One pass over the directory: pushes every new or changed `*.wasm` file.
async fn scan(
    store: &Arc<dyn Store>,
    runtime: &Arc<Runtime>,
    dir: &Path,
    seen: &mut Seen,
    changed: bool,
) {
    let mut entries = match tokio::fs::read_dir(dir).await {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot list the modules directory");
            return;
        }
    };
    let mut files = Vec::new();
    loop {
        match entries.next_entry().await {
            Ok(Some(entry)) => {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "wasm")
                    && let Ok(meta) = entry.metadata().await
                    && meta.is_file()
                {
                    files.push((path, (meta.modified().ok(), meta.len())));
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot list the modules directory");
                return;
            }
        }
    }
    files.sort();
    for (path, stamp) in files {
        if seen.get(&path) == Some(&stamp) {
            continue;
        }
        seen.insert(path.clone(), stamp);
        push_one(store, runtime, &path, changed).await;
    }
}

/// `changed`: the file changed while watched (not merely found at start), which
/// restores its version if a rollback withdrew it.
async fn push_one(store: &Arc<dyn Store>, runtime: &Arc<Runtime>, path: &Path, changed: bool) {
    let file = path.display().to_string();
    let Some(name) = path.file_stem().and_then(|s| s.to_str()).filter(|s| {
        matches!(
            super::modules::parse_ref(s),
            Some(crate::store::ModuleRef::Latest(_))
        )
    }) else {
        tracing::warn!(%file, "module file ignored: its name is not a module name (letters, digits, . _ - +)");
        return;
    };
    let pushed = match read_module(path).await {
        Ok(bytes) => push_bytes(store, runtime, bytes, Some(name), None, None, changed).await,
        Err(e) => Err(e),
    };
    match pushed {
        Ok((m, _)) => tracing::info!(
            %file,
            module = %format!("{}@{}", m.name, m.version),
            digest = %m.digest,
            "module file pushed; jobs following {} run it from their next fire",
            m.name
        ),
        Err(PushError::Rejected(r)) => tracing::warn!(
            %file,
            reason = %r,
            "module file rejected; the working version stays"
        ),
        Err(e) => tracing::warn!(
            %file,
            reason = %e,
            "module file not pushed; the working version stays"
        ),
    }
}
