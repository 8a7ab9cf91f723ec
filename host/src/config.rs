//! The node's configuration: one TOML file, every key overridable from the
//! environment, every key with a documented default.
//!
//! Precedence, highest first: a command-line flag, the key's environment
//! variable (`QUARTZITE_` + the key's path in capitals with `_` for `.`, e.g.
//! `QUARTZITE_SCHEDULER_WORKERS`), the file, the default. [`KEYS`] is the one
//! list of keys: loading, checking, the environment names and
//! `quartzite config defaults` are all derived from it.
//!
//! Like the manifest, a config is accepted or rejected as a whole, and a
//! rejected one reports every problem at once, each with where it came from:
//! `FILE:LINE:COL` for the file, the variable's name for the environment.

use crate::engine::scheduler::SchedulerConfig;
use crate::runtime::EngineConfig;
use serde::Deserialize;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;
use toml::de::DeValue;

use crate::diagnostics::{self, Diagnostics};

/// A node's settings.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Store URL.
    pub db: Option<String>,
    /// The job manifest, relative to the config file.
    pub manifest: Option<PathBuf>,
    /// This node's id.
    pub node_id: Option<String>,
    /// Compiled-module cache.
    pub cache_dir: Option<PathBuf>,
    /// A directory of `*.wasm` files pushed at start and on change, relative
    /// to the config file.
    pub modules_dir: Option<PathBuf>,
    /// Bootstrap but never run fires.
    pub standby: bool,
    pub log: LogConfig,
    pub otel: OtelConfig,
    pub api: ApiConfig,
    pub scheduler: SchedulerConfig,
    pub runtime: EngineConfig,
}

/// `[log]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `quartzite=debug`.
    pub level: Option<String>,
    /// `text` or `json`.
    pub format: Option<String>,
}

/// `[otel]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtelConfig {
    /// Where fires are traced to over OTLP/HTTP, the full URL; unset: not
    /// traced (unless `OTEL_EXPORTER_OTLP_ENDPOINT` names a collector).
    pub endpoint: Option<String>,
}

/// `[api]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    pub listen: Option<String>,
    pub admin_token: Option<String>,
    pub admin_token_sha256: Option<String>,
    /// `Host` names (`NAME:PORT`) the API answers besides its own addresses.
    pub allowed_hosts: Option<Vec<String>>,
}

/// The type of a key's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Str,
    Int,
    Bool,
    /// An array of strings (from the environment: comma-separated).
    StrList,
}

/// One configuration key.
#[derive(Debug)]
pub struct Key {
    /// `section.key` or `key`.
    pub path: &'static str,
    pub kind: Kind,
    /// The default as it would be written in the file; empty when unset by default.
    pub default: &'static str,
    pub doc: &'static str,
    /// Environment names read besides the derived one, for compatibility.
    pub aliases: &'static [&'static str],
    /// Lowest accepted value of an integer key.
    pub min: i64,
}

const fn key(path: &'static str, kind: Kind, default: &'static str, doc: &'static str) -> Key {
    Key {
        path,
        kind,
        default,
        doc,
        aliases: &[],
        min: 0,
    }
}

const fn int(path: &'static str, default: &'static str, min: i64, doc: &'static str) -> Key {
    Key {
        path,
        kind: Kind::Int,
        default,
        doc,
        aliases: &[],
        min,
    }
}

/// Every key, in the order `config defaults` prints them.
pub const KEYS: &[Key] = &[
    key(
        "db",
        Kind::Str,
        "sqlite://quartzite.db",
        "Store: sqlite://PATH (embedded) or postgres://USER@HOST:PORT/DB (cluster).",
    ),
    key(
        "manifest",
        Kind::Str,
        "jobs.toml",
        "The job manifest, relative to this file; used when present.",
    ),
    key(
        "node_id",
        Kind::Str,
        "",
        "This node's id in the cluster; generated from host name and process id when unset.",
    ),
    key(
        "cache_dir",
        Kind::Str,
        "",
        "Where compiled modules are cached; ~/.cache/quartzite/modules when unset.",
    ),
    key(
        "modules_dir",
        Kind::Str,
        "",
        "A directory, relative to this file, whose *.wasm files are validated and pushed at start and whenever one changes (polled each second), named by file stem; unset: none.",
    ),
    key(
        "standby",
        Kind::Bool,
        "false",
        "Bootstrap (migrate, reconcile the manifest) but run no fires.",
    ),
    Key {
        aliases: &["QUARTZITE_LOG"],
        ..key(
            "log.level",
            Kind::Str,
            "info",
            "A tracing filter, e.g. \"info\" or \"quartzite=debug,sqlx=warn\".",
        )
    },
    key(
        "log.format",
        Kind::Str,
        "text",
        "\"text\" for people, \"json\" for log collectors.",
    ),
    Key {
        aliases: &["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"],
        ..key(
            "otel.endpoint",
            Kind::Str,
            "",
            "Trace every fire (a trace per fire: its attempts, their steps, host calls and outbound requests) to this OTLP/HTTP endpoint, the full URL, e.g. http://127.0.0.1:4318/v1/traces; unset: traced only when OTEL_EXPORTER_OTLP_ENDPOINT names a collector, else not at all.",
        )
    },
    key(
        "api.listen",
        Kind::Str,
        "127.0.0.1:7878",
        "Address of the admin API, /metrics, /healthz and the dashboard. A non-loopback address requires an admin token.",
    ),
    Key {
        aliases: &["QUARTZITE_ADMIN_TOKEN"],
        ..key(
            "api.admin_token",
            Kind::Str,
            "",
            "Bearer token for the admin API (at least 16 characters). Prefer admin_token_sha256 in files.",
        )
    },
    key(
        "api.admin_token_sha256",
        Kind::Str,
        "",
        "SHA-256 of the admin token as 64 hex digits, so the file holds no secret.",
    ),
    key(
        "api.allowed_hosts",
        Kind::StrList,
        "",
        "Host headers (NAME:PORT) the API answers besides the listen address and localhost, 127.0.0.1 and [::1] at its port, e.g. [\"sched.example:7878\"]; unset while listening on 0.0.0.0 or [::]: any. Other Host headers get 421, so a DNS-rebinding page cannot read the API.",
    ),
    int(
        "scheduler.workers",
        "16",
        1,
        "Runs at the same time on this node.",
    ),
    int(
        "scheduler.guest_threads",
        "0",
        0,
        "Threads that run every guest apart from the scheduler's own from its start (bounds guests to that many cores); 0: a run starts on the scheduler's threads and moves to guest threads of its own after 20 ms.",
    ),
    int(
        "scheduler.max_job_runs",
        "0",
        0,
        "Runs of one job at the same time on this node, so no job takes every worker; 0: a quarter of workers (at least 1).",
    ),
    int(
        "scheduler.acquirers",
        "0",
        0,
        "Acquirers claiming fires at the same time on this node; 0: 2 on PostgreSQL, 1 on SQLite.",
    ),
    int(
        "scheduler.lookahead_ms",
        "100",
        0,
        "Fires due within this window are claimed early and started on time.",
    ),
    int(
        "scheduler.lease_ms",
        "6000",
        500,
        "How long a claim holds without renewal; renewed every third of it.",
    ),
    int(
        "scheduler.dead_after_ms",
        "1500",
        300,
        "A node silent for this long is dead and its fires are recovered.",
    ),
    int(
        "scheduler.poll_ms",
        "500",
        10,
        "Longest sleep when nothing is due: how late another process's change may be seen.",
    ),
    int(
        "scheduler.misfire_threshold_ms",
        "60000",
        0,
        "A fire later than this is misfired and follows its trigger's misfire policy.",
    ),
    int(
        "scheduler.catch_up",
        "10",
        0,
        "With misfire = \"fire-now\", at most this many missed fires still run after an outage.",
    ),
    int(
        "scheduler.grace_ms",
        "10000",
        0,
        "On SIGTERM, how long running fires may finish before they are cancelled.",
    ),
    int(
        "scheduler.history_max_age_ms",
        "2592000000",
        1,
        "Run history older than this is deleted by the cleanup job (30 days).",
    ),
    key(
        "scheduler.max_wit",
        Kind::Str,
        "",
        "Run and advertise contract versions only up to MAJOR.MINOR (rolling upgrades); the host's own when unset.",
    ),
    int(
        "scheduler.max_event_depth",
        "8",
        0,
        "How deep a chain of events emitted by jobs may go; a deeper emit is refused and recorded in history.",
    ),
    int(
        "scheduler.max_chain_events",
        "10000",
        0,
        "How many events jobs may emit below one root event, at any depth; more are refused and recorded in history.",
    ),
    int(
        "scheduler.max_job_event_fires",
        "1000",
        0,
        "A job's emit is refused (and recorded in history) while its events' fires not yet ended number this many.",
    ),
    key(
        "scheduler.public_url",
        Kind::Str,
        "",
        "Base of the links in alerts, e.g. https://quartzite.example; http://<api.listen> when unset.",
    ),
    int(
        "scheduler.history_max_rows",
        "1000000",
        1,
        "At most this many run history rows are kept.",
    ),
    key(
        "scheduler.job_histograms",
        Kind::Bool,
        "true",
        "Export per-job duration and lag histograms (38 series per job); false for nodes running very many jobs: the per-job counters, last-success times and intervals (9 series per job) stay.",
    ),
    int(
        "scheduler.max_job_series",
        "10000",
        1,
        "Jobs with series of their own in /metrics; the fires of jobs past this many are counted together under job_key=\"(other)\".",
    ),
    int(
        "runtime.max_concurrent_runs",
        "256",
        1,
        "Sandboxes that may exist at once; sizes the pooling allocator.",
    ),
    int(
        "runtime.max_memory_per_run",
        "1073741824",
        65536,
        "The largest memory cap any job may ask for, in bytes.",
    ),
    key(
        "runtime.fuel",
        Kind::Bool,
        "false",
        "Meter fuel so jobs can have an instruction budget (slows every run).",
    ),
    int(
        "runtime.max_wasm_stack",
        "524288",
        65536,
        "Wasm stack per run, in bytes.",
    ),
    key(
        "runtime.memory_image_cow",
        Kind::Str,
        "auto",
        "\"auto\": map a module's initial memory copy-on-write per run when its image is 128 KiB or more (Python, JavaScript), copy it when smaller (most Rust jobs); \"on\" or \"off\": the same for every module.",
    ),
    int(
        "runtime.max_module_functions",
        "100000",
        1,
        "Functions a module may define; a module with more is refused before compiling (compile memory grows with them).",
    ),
];

impl Key {
    /// The environment variable derived from the key's path.
    pub fn env_name(&self) -> String {
        format!(
            "QUARTZITE_{}",
            self.path.replace('.', "_").to_ascii_uppercase()
        )
    }

    fn section(&self) -> Option<&'static str> {
        self.path.split_once('.').map(|(s, _)| s)
    }

    fn name(&self) -> &'static str {
        self.path.split_once('.').map_or(self.path, |(_, k)| k)
    }
}

/// One problem in a config, with where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// `FILE:LINE:COL` or `environment QUARTZITE_...`.
    pub location: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// Every problem found in a config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "{n} problem{} in the configuration:",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A loaded config and where its values came from.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub config: Config,
    /// Keys set by the file.
    pub from_file: Vec<&'static str>,
    /// Keys set by the environment, with the variable used.
    pub from_env: Vec<(&'static str, String)>,
}

/// Reads the config file (if any) and applies the process environment.
///
/// # Errors
///
/// Every problem found, each with its location.
pub fn load(path: Option<&Path>) -> Result<Loaded, ConfigErrors> {
    let text = match path {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => Some(t),
            Err(e) => {
                return Err(ConfigErrors(vec![ConfigError {
                    location: p.display().to_string(),
                    message: format!("cannot read the config file: {e}"),
                }]));
            }
        },
        None => None,
    };
    let file = path.map(Path::to_path_buf);
    load_from(file.as_deref().zip(text.as_deref()), &|name| {
        std::env::var(name).ok()
    })
}

/// [`load`] with the file's text given and the environment as a function.
///
/// # Errors
///
/// Every problem found, each with its location.
pub fn load_from(
    file: Option<(&Path, &str)>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigErrors> {
    let mut errors = Vec::new();
    let mut merged = toml::Table::new();
    let mut from_file = Vec::new();
    if let Some((path, text)) = file {
        let mut reader = FileReader {
            path,
            diagnostics: Diagnostics::new(text),
        };
        from_file = reader.read(&mut merged);
        errors.extend(reader.diagnostics.into_sorted());
    }
    let mut from_env = Vec::new();
    for k in KEYS {
        let names = std::iter::once(k.env_name()).chain(k.aliases.iter().map(|a| (*a).to_string()));
        // The derived name wins over an alias.
        let Some((name, raw)) = names.filter_map(|n| env(&n).map(|v| (n, v))).next() else {
            continue;
        };
        let location = format!("environment {name}");
        match env_value(k, &raw) {
            Ok(v) => {
                if let Some(message) = check(k, &v) {
                    errors.push(ConfigError { location, message });
                } else {
                    insert(&mut merged, k, v);
                    from_env.push((k.path, name));
                }
            }
            Err(message) => errors.push(ConfigError { location, message }),
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let mut config: Config =
        toml::Value::Table(merged)
            .try_into()
            .map_err(|e: toml::de::Error| {
                ConfigErrors(vec![ConfigError {
                    location: file
                        .map_or_else(|| "configuration".into(), |(p, _)| p.display().to_string()),
                    message: e.message().to_string(),
                }])
            })?;
    // A manifest or modules directory named in the file is relative to the file.
    for (key, value) in [
        ("manifest", config.manifest.as_mut()),
        ("modules_dir", config.modules_dir.as_mut()),
    ] {
        if let (Some((path, _)), Some(m)) = (file, value)
            && m.is_relative()
            && from_file.contains(&key)
            && !from_env.iter().any(|(k, _)| *k == key)
            && let Some(dir) = path.parent()
        {
            *m = dir.join(&*m);
        }
    }
    Ok(Loaded {
        config,
        from_file,
        from_env,
    })
}

fn insert(merged: &mut toml::Table, k: &Key, v: toml::Value) {
    match k.section() {
        None => {
            merged.insert(k.path.into(), v);
        }
        Some(section) => {
            let entry = merged
                .entry(section)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(t) = entry {
                t.insert(k.name().into(), v);
            }
        }
    }
}

fn env_value(k: &Key, raw: &str) -> Result<toml::Value, String> {
    match k.kind {
        Kind::Str => Ok(toml::Value::String(raw.to_string())),
        Kind::Int => raw
            .trim()
            .replace('_', "")
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| format!("{} must be an integer, got {raw:?}", k.path)),
        Kind::Bool => match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(toml::Value::Boolean(true)),
            "false" | "0" | "no" | "off" | "" => Ok(toml::Value::Boolean(false)),
            _ => Err(format!("{} must be true or false, got {raw:?}", k.path)),
        },
        Kind::StrList => Ok(toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        )),
    }
}

/// What is wrong with a well-typed value, if anything.
fn check(k: &Key, v: &toml::Value) -> Option<String> {
    match (k.kind, v) {
        (Kind::Int, toml::Value::Integer(n)) if *n < k.min => {
            Some(format!("{} must be at least {}, got {n}", k.path, k.min))
        }
        (Kind::Str, toml::Value::String(s)) => check_str(k.path, s),
        _ => None,
    }
}

fn check_str(path: &str, s: &str) -> Option<String> {
    match path {
        "db" if !(s.starts_with("sqlite:")
            || s.starts_with("postgres://")
            || s.starts_with("postgresql://")) =>
        {
            Some(format!(
                "db must be sqlite://PATH or postgres://..., got {s:?}"
            ))
        }
        "runtime.memory_image_cow" if !matches!(s, "auto" | "on" | "off") => Some(format!(
            "runtime.memory_image_cow must be \"auto\", \"on\" or \"off\", got {s:?}"
        )),
        "log.format" if s != "text" && s != "json" => Some(format!(
            "log.format must be \"text\" or \"json\", got {s:?}"
        )),
        "log.level" if tracing_subscriber::EnvFilter::try_new(s).is_err() => {
            Some(format!("log.level is not a valid filter: {s:?}"))
        }
        "api.listen" if s.parse::<std::net::SocketAddr>().is_err() => Some(format!(
            "api.listen must be an address with a port such as 127.0.0.1:7878 or [::1]:7878, got {s:?}"
        )),
        "api.admin_token" if s.chars().count() < crate::api::auth::MIN_TOKEN_CHARS => {
            Some(format!(
                "api.admin_token: the admin token is too short: it needs at least {} characters",
                crate::api::auth::MIN_TOKEN_CHARS
            ))
        }
        "api.admin_token_sha256" if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Some("api.admin_token_sha256 must be 64 hex digits (the SHA-256 of the token)".into())
        }
        "scheduler.max_wit" => SchedulerConfig {
            max_wit: Some(s.to_string()),
            ..SchedulerConfig::default()
        }
        .wit()
        .err(),
        "otel.endpoint"
            if !(s.is_empty() || s.starts_with("http://") || s.starts_with("https://")) =>
        {
            Some(format!(
                "otel.endpoint must start with http:// or https://, got {s:?}"
            ))
        }
        "scheduler.public_url"
            if !(s.is_empty() || s.starts_with("http://") || s.starts_with("https://")) =>
        {
            Some(format!(
                "scheduler.public_url must start with http:// or https://, got {s:?}"
            ))
        }
        "node_id" if s.is_empty() || s.len() > 128 || s.chars().any(char::is_whitespace) => Some(
            format!("node_id must be 1 to 128 characters without spaces, got {s:?}"),
        ),
        _ => None,
    }
}

struct FileReader<'a> {
    path: &'a Path,
    /// Every problem in the file, reported in file order.
    diagnostics: Diagnostics<'a, ConfigError>,
}

impl<'a> FileReader<'a> {
    fn location(path: &Path, line: usize, column: usize) -> String {
        format!("{}:{line}:{column}", path.display())
    }

    fn error(&mut self, span: &Range<usize>, message: String) {
        let path = self.path;
        self.diagnostics.push(span, |line, column| ConfigError {
            location: Self::location(path, line, column),
            message,
        });
    }

    /// Walks the file against [`KEYS`]; returns the keys it set.
    fn read(&mut self, merged: &mut toml::Table) -> Vec<&'static str> {
        let path = self.path;
        let Some(root) =
            diagnostics::parse_document(&mut self.diagnostics, |line, column, message| {
                ConfigError {
                    location: Self::location(path, line, column),
                    message,
                }
            })
        else {
            return Vec::new();
        };
        let mut set = Vec::new();
        for (name, value) in root.get_ref() {
            let name_str: &str = name.get_ref();
            if let DeValue::Table(table) = value.get_ref() {
                if !KEYS.iter().any(|k| k.section() == Some(name_str)) {
                    self.unknown(name.span(), name_str);
                    continue;
                }
                for (key_name, v) in table {
                    let path = format!("{name_str}.{}", &**key_name.get_ref());
                    self.value(&path, key_name.span(), v, merged, &mut set);
                }
            } else {
                self.value(name_str, name.span(), value, merged, &mut set);
            }
        }
        set
    }

    fn unknown(&mut self, span: Range<usize>, path: &str) {
        let near = KEYS
            .iter()
            .find(|k| close(k.path, path) || k.section().is_some_and(|s| close(s, path)))
            .map(|k| {
                format!(
                    " (did you mean `{}`?)",
                    k.section().filter(|s| close(s, path)).unwrap_or(k.path)
                )
            })
            .unwrap_or_default();
        self.error(&span, format!("unknown key `{path}`{near}"));
    }

    fn value(
        &mut self,
        path: &str,
        key_span: Range<usize>,
        v: &Spanned<DeValue<'_>>,
        merged: &mut toml::Table,
        set: &mut Vec<&'static str>,
    ) {
        let Some(k) = KEYS.iter().find(|k| k.path == path) else {
            self.unknown(key_span, path);
            return;
        };
        let value = match (k.kind, v.get_ref()) {
            (Kind::Str, DeValue::String(s)) => toml::Value::String(s.to_string()),
            (Kind::Int, DeValue::Integer(i)) => {
                match i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()) {
                    Ok(n) => toml::Value::Integer(n),
                    Err(_) => {
                        self.error(&v.span(), format!("{path} is out of range"));
                        return;
                    }
                }
            }
            (Kind::Bool, DeValue::Boolean(b)) => toml::Value::Boolean(*b),
            (Kind::StrList, DeValue::Array(items))
                if items
                    .iter()
                    .all(|i| matches!(i.get_ref(), DeValue::String(_))) =>
            {
                toml::Value::Array(
                    items
                        .iter()
                        .filter_map(|i| match i.get_ref() {
                            DeValue::String(s) => Some(toml::Value::String(s.to_string())),
                            _ => None,
                        })
                        .collect(),
                )
            }
            (kind, other) => {
                let expected = match kind {
                    Kind::Str => "a string",
                    Kind::Int => "an integer",
                    Kind::Bool => "true or false",
                    Kind::StrList => "an array of strings",
                };
                self.error(
                    &v.span(),
                    format!("{path} must be {expected}, found {}", other.type_str()),
                );
                return;
            }
        };
        if let Some(message) = check(k, &value) {
            self.error(&v.span(), message);
            return;
        }
        insert(merged, k, value);
        set.push(k.path);
    }
}

/// Whether two names differ by at most one edit of a short kind (a typo).
fn close(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.len().abs_diff(b.len()) > 1 {
        return false;
    }
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suffix = a
        .iter()
        .rev()
        .zip(b.iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    prefix + suffix + 1 >= a.len().max(b.len())
}

/// A config file with every key commented out at its default, each with its
/// description and environment variable: `quartzite config defaults`.
pub fn defaults_document() -> String {
    let mut out = String::from(
        "# Quartzite configuration. Every key is optional; shown at its default.\n\
         # Each key can also be set from the environment (named after each key);\n\
         # a command-line flag beats the environment, which beats this file.\n",
    );
    let mut section = None;
    for k in KEYS {
        if k.section() != section {
            section = k.section();
            if let Some(s) = section {
                out.push_str(&format!("\n[{s}]\n"));
            }
        } else {
            out.push('\n');
        }
        out.push_str(&format!("# {}\n# env: {}", k.doc, k.env_name()));
        for a in k.aliases {
            out.push_str(&format!(" or {a}"));
        }
        out.push('\n');
        let value = match k.kind {
            Kind::Str => format!("{:?}", k.default),
            Kind::Int | Kind::Bool | Kind::StrList => k.default.to_string(),
        };
        if k.default.is_empty() {
            out.push_str(&format!("# {} = \"\"  (unset)\n", k.name()));
        } else {
            out.push_str(&format!("# {} = {value}\n", k.name()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(text: &str) -> Result<Loaded, ConfigErrors> {
        load_from(Some((Path::new("q.toml"), text)), &no_env)
    }

    #[test]
    fn the_documented_defaults_are_the_defaults_and_load_back() {
        // Uncommenting every key that has a default gives a file that checks
        // clean and means exactly the built-in defaults.
        let doc = defaults_document();
        let lines: Vec<&str> = doc.lines().collect();
        let uncommented: String = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| !l.contains("(unset)"))
            .map(|(i, l)| {
                let setting = i > 0 && lines[i - 1].starts_with("# env:");
                if setting { &l[2..] } else { l }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let loaded = parse(&uncommented).expect("the defaults document loads");
        assert_eq!(loaded.config.scheduler, SchedulerConfig::default());
        assert_eq!(loaded.config.runtime, EngineConfig::default());
        assert_eq!(loaded.config.db.as_deref(), Some(crate::store::DEFAULT_URL));
        assert_eq!(loaded.config.api.listen.as_deref(), Some("127.0.0.1:7878"));
        // Every key is documented with its environment variable.
        for k in KEYS {
            assert!(doc.contains(&k.env_name()), "{} undocumented", k.path);
        }
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_line_and_column() {
        let text = "db = 5\nstandby = \"yes\"\n\n[scheduler]\nwrkers = 4\nlease_ms = 10\n\n[api]\nlisten = \"localhost\"\n[bogus]\nx = 1\n";
        let errors = parse(text).expect_err("rejected").0;
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(shown.len(), 6, "{shown:#?}");
        assert_eq!(shown[0], "q.toml:1:6: db must be a string, found integer");
        assert_eq!(
            shown[1],
            "q.toml:2:11: standby must be true or false, found string"
        );
        assert_eq!(
            shown[2],
            "q.toml:5:1: unknown key `scheduler.wrkers` (did you mean `scheduler.workers`?)"
        );
        assert_eq!(
            shown[3],
            "q.toml:6:12: scheduler.lease_ms must be at least 500, got 10"
        );
        assert!(
            shown[4].starts_with("q.toml:9:10: api.listen must be an address"),
            "{}",
            shown[4]
        );
        assert_eq!(shown[5], "q.toml:10:2: unknown key `bogus`");
    }

    #[test]
    fn fires_are_traced_only_to_an_http_endpoint_named() {
        let loaded = parse("").expect("defaults");
        assert_eq!(loaded.config.otel.endpoint, None, "off by default");
        let loaded =
            parse("[otel]\nendpoint = \"http://127.0.0.1:4318/v1/traces\"\n").expect("an endpoint");
        assert_eq!(
            loaded.config.otel.endpoint.as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
        let errors = parse("[otel]\nendpoint = \"collector:4318\"\n")
            .expect_err("no scheme")
            .0;
        assert!(
            errors[0]
                .to_string()
                .contains("otel.endpoint must start with http:// or https://"),
            "{errors:?}"
        );
        // The standard variable names the endpoint too; the file's is overridden.
        let env = |name: &str| {
            (name == "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                .then(|| "http://10.0.0.9:4318/v1/traces".to_string())
        };
        let file = "[otel]\nendpoint = \"http://127.0.0.1:4318/v1/traces\"\n";
        let loaded = load_from(Some((Path::new("q.toml"), file)), &env).expect("loads");
        assert_eq!(
            loaded.config.otel.endpoint.as_deref(),
            Some("http://10.0.0.9:4318/v1/traces")
        );
    }

    #[test]
    fn a_syntax_error_names_its_place() {
        let errors = parse("[scheduler]\nworkers = = 3\n")
            .expect_err("rejected")
            .0;
        assert!(errors[0].location.starts_with("q.toml:2:"), "{errors:?}");
        assert!(errors[0].message.starts_with("invalid TOML"), "{errors:?}");
    }

    #[test]
    fn the_environment_overrides_the_file_and_names_itself_when_wrong() {
        let env = |name: &str| match name {
            "QUARTZITE_SCHEDULER_WORKERS" => Some("32".to_string()),
            "QUARTZITE_ADMIN_TOKEN" => Some("a-token-that-is-long-enough".to_string()),
            "QUARTZITE_LOG_FORMAT" => Some("json".to_string()),
            _ => None,
        };
        let text = "[scheduler]\nworkers = 4\npoll_ms = 250\n";
        let loaded = load_from(Some((Path::new("q.toml"), text)), &env).expect("loads");
        assert_eq!(loaded.config.scheduler.workers, 32);
        assert_eq!(loaded.config.scheduler.poll_ms, 250);
        assert_eq!(
            loaded.config.api.admin_token.as_deref(),
            Some("a-token-that-is-long-enough")
        );
        assert_eq!(loaded.config.log.format.as_deref(), Some("json"));
        assert!(
            loaded
                .from_env
                .contains(&("scheduler.workers", "QUARTZITE_SCHEDULER_WORKERS".into()))
        );
        assert!(loaded.from_file.contains(&"scheduler.poll_ms"));

        let bad = |name: &str| match name {
            "QUARTZITE_SCHEDULER_WORKERS" => Some("many".to_string()),
            "QUARTZITE_RUNTIME_FUEL" => Some("maybe".to_string()),
            _ => None,
        };
        let errors = load_from(None, &bad).expect_err("rejected").0;
        assert_eq!(
            errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
            vec![
                "environment QUARTZITE_SCHEDULER_WORKERS: scheduler.workers must be an integer, got \"many\"",
                "environment QUARTZITE_RUNTIME_FUEL: runtime.fuel must be true or false, got \"maybe\"",
            ]
        );
    }

    #[test]
    fn a_manifest_or_modules_dir_named_in_the_file_is_relative_to_the_file() {
        let loaded = load_from(
            Some((
                Path::new("/etc/quartzite/q.toml"),
                "manifest = \"jobs.toml\"\nmodules_dir = \"modules\"\n",
            )),
            &no_env,
        )
        .expect("loads");
        assert_eq!(
            loaded.config.manifest.as_deref(),
            Some(Path::new("/etc/quartzite/jobs.toml"))
        );
        assert_eq!(
            loaded.config.modules_dir.as_deref(),
            Some(Path::new("/etc/quartzite/modules"))
        );
    }

    #[test]
    fn env_names_are_unique() {
        let mut names: Vec<String> = KEYS
            .iter()
            .flat_map(|k| {
                std::iter::once(k.env_name()).chain(k.aliases.iter().map(|a| (*a).to_string()))
            })
            .collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
    }
}
