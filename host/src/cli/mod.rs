//! The `quartzite` command line: argument parsing and output formatting only;
//! the work is done by the library modules it calls.
//!
//! Exit codes scripts can rely on: 0 success, 1 the job ran and did not succeed
//! (or the object named does not exist, or the store or server failed), 2 bad
//! usage or input, 3 the module cannot run (NoOp skip / rejected). Errors go to
//! stderr, results to stdout; `--json` makes every result one JSON document.

/// `println!` for results: a closed stdout (the reader of a pipe exited, as
/// `head -1` does) ends the command quietly instead of panicking.
macro_rules! outln {
    () => {
        $crate::cli::write_stdout(format_args!(""), true)
    };
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(format_args!($($arg)*), true)
    };
}

/// `print!` for results, as [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(format_args!($($arg)*), false)
    };
}

mod bulk;
mod calendars;
mod new;
mod ops;
mod preview;
mod remote;
mod secrets;
mod serve;
mod signals;
pub mod telemetry;

use crate::domain::parse_size;
use crate::runtime::{
    EngineConfig, HostServices, JobImpl, Limits, RunOutcome, RunRequest, Runtime, RuntimeConfig,
    WIT_PACKAGE, WIT_VERSION,
};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Exit code: the job ran and did not succeed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: bad usage or input.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the module cannot run.
pub const EXIT_SKIPPED: u8 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "quartzite",
    version,
    about = "A durable job scheduler for WebAssembly jobs"
)]
pub struct Cli {
    /// Log format on stderr [default: text; for `serve`, config `log.format`].
    #[arg(long, global = true, value_enum, env = "QUARTZITE_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Log filter (tracing syntax, e.g. `info` or `quartzite=debug`).
    #[arg(long, global = true, env = "QUARTZITE_LOG")]
    pub log: Option<String>,
    /// The database: `sqlite://PATH` or `postgres://USER@HOST/DB`
    /// [default: sqlite://quartzite.db; for `serve`, config `db`].
    #[arg(long, global = true, env = "QUARTZITE_DB")]
    pub db: Option<String>,
    /// Work through a running server's admin API (`http://HOST:PORT`) instead of `--db`.
    #[arg(long, global = true, env = "QUARTZITE_SERVER")]
    pub server: Option<String>,
    /// The admin token for `--server`.
    #[arg(
        long,
        global = true,
        env = "QUARTZITE_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Print results as JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// Directory for compiled modules, shared by every command that compiles
    /// (serve, run-once, module inspect, job add, module push), so a push
    /// compiles into the cache a server's first fire loads from
    /// [default: config `cache_dir`, else ~/.cache/quartzite/modules].
    #[arg(long, global = true, env = "QUARTZITE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Write a new job project (Rust, Python or JavaScript) with a test, a
    /// build command and a manifest that schedules it.
    New(new::NewArgs),
    /// Run a module once, as one fire, and print the outcome as JSON.
    RunOnce(RunOnceArgs),
    /// Work with modules.
    #[command(subcommand)]
    Module(ModuleCommand),
    /// Work with triggers.
    #[command(subcommand)]
    Trigger(TriggerCommand),
    /// Work with the database.
    #[command(subcommand)]
    Db(DbCommand),
    /// Run the scheduler: bootstrap from the manifest, then fire jobs until SIGTERM.
    Serve(serve::ServeArgs),
    /// Work with jobs.
    #[command(subcommand)]
    Job(ops::JobCommand),
    /// Read the run history; replay failed fires.
    #[command(subcommand)]
    History(ops::HistoryCommand),
    /// Work with waiting fires: cancel them by filter.
    #[command(subcommand)]
    Fire(bulk::FireCommand),
    /// See the nodes and locks of the cluster sharing this database.
    #[command(subcommand)]
    Cluster(ops::ClusterCommand),
    /// Emit and list events: jobs subscribed to an event fire once per event.
    #[command(subcommand)]
    Event(signals::EventCommand),
    /// Alert rules and their deliveries to webhooks.
    #[command(subcommand)]
    Alert(signals::AlertCommand),
    /// Exclusion calendars: times the triggers naming them do not fire at.
    #[command(subcommand)]
    Calendar(calendars::CalendarCommand),
    /// Secrets that grants inject into jobs' requests: set, list, delete.
    #[command(subcommand)]
    Secret(secrets::SecretCommand),
    /// Check a config file or print every key with its default.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script, e.g. `quartzite completions bash > /etc/bash_completion.d/quartzite`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a config file together with the QUARTZITE_* environment, as
    /// `serve` would read them; report every problem at once.
    Check {
        /// The config file [default: $QUARTZITE_CONFIG; none: the environment alone].
        #[arg(env = "QUARTZITE_CONFIG")]
        file: Option<PathBuf>,
    },
    /// Print a config file with every key at its default, each with its
    /// description and environment variable.
    Defaults,
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Create or upgrade the schema of the database given by `--db`.
    Migrate,
}

#[derive(Debug, Subcommand)]
pub enum TriggerCommand {
    /// Print the next fire times of a cron expression or interval, as UTC instants.
    Preview(preview::PreviewArgs),
    /// List triggers with their state and next fire time.
    List {
        /// Only the triggers of this job.
        #[arg(long)]
        job: Option<String>,
    },
    /// Pause one trigger (`JOB:NAME`, as `trigger list` shows it).
    Pause { key: String },
    /// Resume a paused trigger.
    Resume { key: String },
}

#[derive(Debug, Subcommand)]
pub enum ModuleCommand {
    /// Print a module's digest, contract version, self-description and imports,
    /// or exactly why it cannot run.
    Inspect(InspectArgs),
    /// Validate a module (compile, contract, describe) and store it in the database,
    /// where every node finds it. A rejected module changes nothing.
    Push {
        file: std::path::PathBuf,
        /// Name to store it under [default: what describe() says].
        #[arg(long)]
        name: Option<String>,
        /// Version to store it as [default: what describe() says].
        #[arg(long)]
        version: Option<String>,
    },
    /// List stored modules and versions, newest first; CURRENT marks the version
    /// jobs following each name run.
    List,
    /// Make jobs following NAME run the previous (or given) version from their
    /// next fire. Newer versions are withdrawn; pushing one again restores it.
    Rollback {
        name: String,
        /// Roll back to this version [default: the one before the current].
        #[arg(long)]
        to: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct RuntimeArgs {
    /// The global `--cache-dir`.
    #[arg(skip)]
    pub cache_dir: Option<PathBuf>,
    /// Compile every time; read and write no cache.
    #[arg(long)]
    pub no_cache: bool,
}

#[derive(Debug, Args)]
pub struct RunOnceArgs {
    /// The component to run (a `.wasm` file).
    pub module: PathBuf,
    /// Job data, JSON text.
    #[arg(long)]
    pub data: Option<String>,
    /// Timeout, e.g. `30s`, `500ms`, `2m`.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub timeout: Duration,
    /// Memory cap, e.g. `64MiB`.
    #[arg(long, value_parser = parse_size, default_value = "128MiB")]
    pub max_memory: u64,
    /// Fuel budget (roughly, wasm instructions); turns fuel metering on.
    #[arg(long)]
    pub fuel: Option<u64>,
    /// The attempt number the job sees (retries start at 2).
    #[arg(long, default_value_t = 1)]
    pub attempt: u32,
    /// The job key the job sees, `group/name`.
    #[arg(long, default_value = "local/run-once")]
    pub job: String,
    /// What the run may reach, as `job add` grants it. There is no store: a
    /// secret grant's value is read from the environment variable of the
    /// secret's name.
    #[command(flatten)]
    pub grants: ops::GrantArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The module file.
    pub module: PathBuf,
    /// Print JSON instead of text (set from the global `--json`).
    #[arg(skip)]
    pub json: bool,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("invalid duration {text:?}: {e} (use e.g. 30s, 500ms, 2m)"))
}

/// `QUARTZITE_CACHE_DIR`, else `~/.cache/quartzite/modules`: every command that
/// compiles (serve, run-once, job add, module push) shares one cache, so a push
/// compiles into the cache the server's first fire loads from.
pub(crate) fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("QUARTZITE_CACHE_DIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("quartzite").join("modules"))
}

fn build_runtime(args: &RuntimeArgs, engine: EngineConfig) -> Result<Runtime, String> {
    build_runtime_with(args, engine, HostServices::in_memory())
}

fn build_runtime_with(
    args: &RuntimeArgs,
    engine: EngineConfig,
    services: HostServices,
) -> Result<Runtime, String> {
    let cache_dir = if args.no_cache {
        None
    } else {
        args.cache_dir.clone().or_else(default_cache_dir)
    };
    Runtime::new(
        RuntimeConfig {
            engine,
            cache_dir,
            node_id: "run-once".into(),
        },
        services,
    )
    .map_err(|e| e.to_string())
}

/// Sets up logging for the CLI. Commands that print JSON on stdout keep stderr quiet
/// unless asked: the default filter shows errors only. With a trace endpoint
/// (`otel.endpoint` or the `OTEL_EXPORTER_OTLP_*` variables; `serve` only), fires are also traced over OTLP/HTTP (see [`telemetry`]);
/// keep the answer until the process ends, so that the last spans are sent.
pub fn init_logging(cli: &Cli) -> telemetry::Telemetry {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    // A server logs what it does; one-shot commands keep stderr for errors.
    let default = if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "error"
    };
    // `serve` also takes these from its config file; a broken file is reported by
    // `serve` itself.
    let (from_config, otel) = match &cli.command {
        Command::Serve(args) => crate::config::load(args.config.as_deref())
            .ok()
            .map(|l| (l.config.log, Some(l.config.otel))),
        _ => None,
    }
    .unwrap_or_default();
    // Only a server traces: one-shot commands run no scheduler.
    let endpoint = otel
        .and_then(|o| telemetry::endpoint(o.endpoint.as_deref(), &|name| std::env::var(name).ok()));
    let filter = cli
        .log
        .clone()
        .or(from_config.level)
        .unwrap_or_else(|| default.into());
    // Fire spans are for the trace exporter only, whatever the log level.
    let filter =
        tracing_subscriber::EnvFilter::try_new(format!("{filter},{}=off", telemetry::FIRE_TARGET))
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    let shown = filter.max_level_hint();
    let json = cli.log_format.map_or_else(
        || from_config.format.as_deref() == Some("json"),
        |f| matches!(f, LogFormat::Json),
    );
    let logs = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed()
    };
    let (telemetry, traces) = match endpoint.as_deref() {
        Some(endpoint) => match telemetry::Telemetry::otlp(endpoint) {
            Ok((telemetry, tracer)) => (telemetry, Some(telemetry::fire_layer(tracer))),
            Err(e) => {
                eprintln!("quartzite: fires are not traced: {e}");
                (telemetry::Telemetry::off(), None)
            }
        },
        None => (telemetry::Telemetry::off(), None),
    };
    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .init();
    telemetry::cap_log_records(shown);
    telemetry
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> ExitCode {
    let db = cli
        .db
        .clone()
        .unwrap_or_else(|| crate::store::DEFAULT_URL.into());
    let conn = ops::Conn {
        db: db.clone(),
        server: cli.server.clone(),
        token: cli.token.clone(),
        cache_dir: cli.cache_dir.clone().or_else(default_cache_dir),
    };
    let json = cli.json;
    match cli.command {
        Command::New(args) => new::run(args, json),
        Command::RunOnce(mut args) => {
            args.runtime.cache_dir = cli.cache_dir;
            run_once(args).await
        }
        Command::Module(ModuleCommand::Inspect(mut args)) => {
            args.json |= json;
            args.runtime.cache_dir = cli.cache_dir;
            inspect(args).await
        }
        Command::Module(command) => ops::module(&conn, command, json).await,
        Command::Trigger(TriggerCommand::Preview(mut args)) => {
            args.json |= json;
            preview::run(&conn, args).await
        }
        Command::Trigger(command) => ops::trigger(&conn, command, json).await,
        Command::Serve(args) => serve::serve(cli.db.as_deref(), cli.cache_dir, args).await,
        Command::Config(ConfigCommand::Check { file }) => config_check(file.as_deref(), json),
        Command::Config(ConfigCommand::Defaults) => {
            out!("{}", crate::config::defaults_document());
            ExitCode::SUCCESS
        }
        Command::Job(command) => ops::job(&conn, command, json).await,
        Command::History(command) => ops::history(&conn, command, json).await,
        Command::Fire(command) => bulk::fire(&conn, command, json).await,
        Command::Cluster(command) => ops::cluster(&conn, command, json).await,
        Command::Event(command) => signals::event(&conn, command, json).await,
        Command::Secret(command) => secrets::secret(&conn, command, json).await,
        Command::Alert(command) => signals::alert(&conn, command, json).await,
        Command::Calendar(command) => calendars::calendar(&conn, command, json).await,
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "quartzite", &mut script);
            out!("{}", String::from_utf8_lossy(&script));
            ExitCode::SUCCESS
        }
        Command::Db(DbCommand::Migrate) if cli.server.is_some() => fail(
            EXIT_USAGE,
            "db migrate works on a database (--db), not through --server: a server migrates its own at start",
        ),
        Command::Db(DbCommand::Migrate) => match crate::store::open(&db).await {
            Ok(_) => {
                let db = crate::store::redact(&db);
                if json {
                    outln!("{}", json!({ "db": db, "schema": "up-to-date" }));
                } else {
                    outln!("{db}: schema is up to date");
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(EXIT_FAILED, &e.to_string()),
        },
    }
}

fn config_check(file: Option<&std::path::Path>, json: bool) -> ExitCode {
    let shown = file.map_or_else(|| "(no file)".to_string(), |f| f.display().to_string());
    match crate::config::load(file) {
        Ok(loaded) => {
            if json {
                let env: Vec<_> = loaded
                    .from_env
                    .iter()
                    .map(|(key, var)| json!({ "key": key, "env": var }))
                    .collect();
                outln!(
                    "{}",
                    json!({ "ok": true, "file": file, "from_file": loaded.from_file, "from_env": env })
                );
            } else {
                outln!(
                    "{shown}: ok ({} key(s) from the file, {} from the environment; the rest at their defaults)",
                    loaded.from_file.len(),
                    loaded.from_env.len()
                );
                for (key, var) in &loaded.from_env {
                    outln!("  {key} <- {var}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            if json {
                let list: Vec<_> = errors
                    .0
                    .iter()
                    .map(|e| json!({ "location": e.location, "message": e.message }))
                    .collect();
                outln!("{}", json!({ "ok": false, "file": file, "errors": list }));
            } else {
                eprint!("quartzite: {errors}");
            }
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Writes a result to stdout. When the reader has gone (a broken pipe) the
/// process exits 0 at once: the consumer took what it wanted, and there is no
/// one left to tell. Any other write error is reported and exits 1.
pub(crate) fn write_stdout(args: std::fmt::Arguments<'_>, newline: bool) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let written = stdout.write_fmt(args).and_then(|()| {
        if newline {
            stdout.write_all(b"\n")
        } else {
            Ok(())
        }
    });
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("quartzite: cannot write to stdout: {e}");
        std::process::exit(i32::from(EXIT_FAILED));
    }
}

pub(crate) fn fail(code: u8, message: &str) -> ExitCode {
    // Messages can carry guest text (a failure message, a module's name).
    eprintln!("quartzite: {}", crate::text::escape(message));
    ExitCode::from(code)
}

async fn run_once(args: RunOnceArgs) -> ExitCode {
    let data = args.data.clone().unwrap_or_default();
    if !data.is_empty()
        && let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&data)
    {
        return fail(EXIT_USAGE, &format!("--data is not JSON: {e}"));
    }
    let engine = EngineConfig {
        fuel: args.fuel.is_some(),
        // The pool's slots stay at least the default size: a smaller pool makes
        // wasmtime refuse a module whose initial memory is larger at compile
        // time (reported as module-invalid, and a good cache entry discarded),
        // where the per-run cap below reports the memory limit.
        max_memory_per_run: args
            .max_memory
            .max(EngineConfig::default().max_memory_per_run),
        ..EngineConfig::default()
    };
    let grants = match args.grants.grants() {
        Ok(g) => g,
        Err(e) => return fail(EXIT_USAGE, &e),
    };
    // No store to hold secrets: each one the grants name comes from the
    // environment variable of its name.
    let secrets = std::sync::Arc::new(crate::runtime::MemoryGrants::new());
    for grant in &grants.secret {
        match std::env::var(&grant.name) {
            Ok(value) if !value.is_empty() => secrets.secret_set(&grant.name, &value),
            _ => {
                return fail(
                    EXIT_USAGE,
                    &format!(
                        "--grant-secret {name}: run-once reads the secret's value from the environment variable {name}, which is not set",
                        name = grant.name
                    ),
                );
            }
        }
    }
    let services = HostServices {
        grants: secrets,
        ..HostServices::in_memory()
    };
    let runtime = match build_runtime_with(&args.runtime, engine, services) {
        Ok(r) => r,
        Err(e) => return fail(EXIT_FAILED, &e),
    };
    let job = runtime.resolve_file(&args.module);
    let module = match &job {
        JobImpl::Wasm(m) => json!({
            "digest": m.digest,
            "wit_version": m.wit_version.to_string(),
            "origin": m.origin,
        }),
        JobImpl::NoOp(_) => serde_json::Value::Null,
    };
    let request = RunRequest {
        data,
        attempt: args.attempt.max(1),
        grants: crate::runtime::GrantsFrom::Stored(grants.to_stored()),
        limits: Limits {
            timeout: args.timeout,
            max_memory: args.max_memory,
            fuel: args.fuel,
            ..Limits::default()
        },
        ..RunRequest::new(args.job.clone())
    };
    let report = runtime.execute(&job, request).await;
    let mut out =
        serde_json::to_value(&report).unwrap_or_else(|e| json!({ "error": e.to_string() }));
    if let Some(obj) = out.as_object_mut() {
        obj.insert("module".into(), module);
        // Details and data are JSON text in the contract; show them as JSON.
        for key in ["details", "new_data"] {
            if let Some(text) = obj.get(key).and_then(|v| v.as_str()).map(str::to_string)
                && let Ok(value) = serde_json::from_str::<serde_json::Value>(&text)
            {
                obj.insert(key.into(), value);
            }
        }
    }
    outln!("{out}");
    let name = args.module.display();
    match &report.outcome {
        RunOutcome::Completed { .. } => ExitCode::SUCCESS,
        RunOutcome::Skipped { .. } => fail(
            EXIT_SKIPPED,
            &format!("{name}: {}", report.outcome.summary()),
        ),
        other => fail(EXIT_FAILED, &format!("{name}: {}", other.summary())),
    }
}

async fn inspect(args: InspectArgs) -> ExitCode {
    let runtime = match build_runtime(&args.runtime, EngineConfig::default()) {
        Ok(r) => r,
        Err(e) => return fail(EXIT_FAILED, &e),
    };
    let name = args.module.display().to_string();
    let bytes = match crate::runtime::module::read_file(&args.module) {
        Ok(b) => b,
        Err(r) => return reject(&args, r.code.as_str(), &r.detail),
    };
    let digest = crate::runtime::module::digest(&bytes);
    let module = match runtime.load_bytes(&bytes) {
        Ok(m) => m,
        Err(r) => return reject(&args, r.code.as_str(), &r.detail),
    };
    let info = match runtime.describe(&module).await {
        Ok(info) => info,
        Err(outcome) => {
            return reject(
                &args,
                "module-invalid",
                &format!("describe() did not return: {}", outcome.summary()),
            );
        }
    };
    if args.json {
        let out = json!({
            "file": name,
            "digest": digest,
            "size": module.size,
            "wit_version": module.wit_version.to_string(),
            "host_wit_version": WIT_VERSION.to_string(),
            "compatible": true,
            "info": info,
            "imports": module.imports,
            "capabilities": crate::runtime::module::capabilities(&module.imports),
            "exports": module.exports,
        });
        outln!("{out}");
    } else {
        outln!("file:        {name}");
        outln!("digest:      sha256:{digest}");
        outln!("size:        {} bytes", module.size);
        outln!(
            "contract:    {WIT_PACKAGE}@{} (this host: {WIT_VERSION}, compatible)",
            module.wit_version
        );
        // describe() strings and interface names are guest text: printed escaped.
        let esc = crate::text::escape;
        outln!("name:        {}", esc(&info.name));
        outln!("version:     {}", esc(&info.version));
        if let Some(d) = &info.description {
            outln!("description: {}", esc(d));
        }
        if let Some(s) = &info.default_schedule {
            outln!("schedule:    {}", esc(s));
        }
        if let Some(o) = &info.overlap {
            outln!(
                "overlap:     {}",
                serde_json::to_value(o)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default()
            );
        }
        let caps = crate::runtime::module::capabilities(&module.imports);
        if !caps.is_empty() {
            outln!(
                "grantable:   {} (what they reach is the job's grants)",
                caps.join(", ")
            );
        }
        outln!("imports:");
        for i in &module.imports {
            outln!("  {}", esc(i));
        }
        outln!("exports:");
        for e in &module.exports {
            outln!("  {}", esc(e));
        }
    }
    ExitCode::SUCCESS
}

fn reject(args: &InspectArgs, code: &str, detail: &str) -> ExitCode {
    let name = args.module.display().to_string();
    if args.json {
        outln!(
            "{}",
            json!({ "file": name, "compatible": false, "reason": code, "detail": detail })
        );
    }
    fail(EXIT_SKIPPED, &format!("{name}: {code}: {detail}"))
}
