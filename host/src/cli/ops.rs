//! Operator commands over the store: serve, job, trigger, history, module.
//! They work on the same database as a running server (`--db`).

use super::{EXIT_FAILED, EXIT_USAGE, fail, parse_duration};
use crate::engine::bootstrap::{self, ServeOptions};
use crate::engine::modules::{parse_ref, push_file};
use crate::engine::scheduler::SchedulerConfig;
use crate::runtime::{EngineConfig, HostServices, Runtime, RuntimeConfig};
use crate::schedule::cron::CronSchedule;
use crate::schedule::trigger::{MisfirePolicy, TriggerKind, TriggerSpec};
use crate::store::model::{HistoryFilter, HistoryStatus, JobDef, Overlap, TriggerPut, TriggerRow};
use crate::store::{self, Store};
use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, Subcommand};
use serde::Deserialize;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// `serve` options.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML config file.
    #[arg(long, env = "QUARTZITE_CONFIG")]
    pub config: Option<PathBuf>,
    /// The job manifest [default: jobs.toml, if present].
    #[arg(long, env = "QUARTZITE_MANIFEST")]
    pub manifest: Option<PathBuf>,
    /// This node's id [default: generated].
    #[arg(long, env = "QUARTZITE_NODE_ID")]
    pub node_id: Option<String>,
    /// Bootstrap and stay up without running fires.
    #[arg(long, env = "QUARTZITE_STANDBY")]
    pub standby: bool,
    /// Same as --standby: the scheduler is disabled.
    #[arg(long, env = "QUARTZITE_SCHEDULER_DISABLED")]
    pub no_scheduler: bool,
    /// Run and advertise contract versions only up to `MAJOR.MINOR` (rolling
    /// upgrades: fires of newer modules are left to nodes that run them)
    /// [default: the host's own; config `scheduler.max_wit`].
    #[arg(long, env = "QUARTZITE_MAX_WIT", value_name = "MAJOR.MINOR")]
    pub max_wit: Option<String>,
}

/// The config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigFile {
    /// The manifest, relative to the config file.
    pub manifest: Option<PathBuf>,
    /// Where compiled modules are cached [default: ~/.cache/quartzite/modules].
    pub cache_dir: Option<PathBuf>,
    pub scheduler: SchedulerConfig,
    pub runtime: EngineConfig,
}

fn load_config(path: &Path) -> Result<ConfigFile, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read config: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        let (line, col) = e.span().map_or((0, 0), |s| line_col(&text, s.start));
        format!("{}:{line}:{col}: {}", path.display(), e.message())
    })
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, col)
}

fn default_node_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "node".into());
    format!(
        "{host}-{}-{}",
        std::process::id(),
        &uuid::Uuid::now_v7().simple().to_string()[24..]
    )
}

pub async fn serve(db: &str, args: ServeArgs) -> ExitCode {
    let config = match &args.config {
        Some(path) => match load_config(path) {
            Ok(c) => c,
            Err(e) => return fail(EXIT_USAGE, &e),
        },
        None => ConfigFile::default(),
    };
    let manifest = args
        .manifest
        .clone()
        .or_else(|| {
            let base = args
                .config
                .as_deref()
                .and_then(Path::parent)
                .unwrap_or(Path::new(""));
            config.manifest.as_ref().map(|m| base.join(m))
        })
        .or_else(|| {
            Path::new("jobs.toml")
                .is_file()
                .then(|| PathBuf::from("jobs.toml"))
        });
    let node_id = args.node_id.clone().unwrap_or_else(default_node_id);
    let mut config = config;
    if args.max_wit.is_some() {
        config.scheduler.max_wit.clone_from(&args.max_wit);
    }
    if let Err(e) = config.scheduler.wit() {
        return fail(EXIT_USAGE, &e);
    }
    let options = ServeOptions {
        db_url: db.to_string(),
        manifest,
        node_id: node_id.clone(),
        standby: args.standby || args.no_scheduler,
        scheduler: config.scheduler,
        runtime: RuntimeConfig {
            engine: config.runtime,
            cache_dir: config.cache_dir.or_else(super::default_cache_dir),
            node_id: node_id.clone(),
        },
    };
    let node = match bootstrap::start(&options).await {
        Ok(node) => node,
        Err(e) => return fail(EXIT_FAILED, &format!("not started: {e}")),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received: stopping");
        let _ = stop_tx.send(true);
    });
    tracing::info!(node = %node_id, db = %store::redact(db), "quartzite serving");
    bootstrap::run(node, options.standby, stop_rx).await;
    ExitCode::SUCCESS
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

async fn open(db: &str) -> Result<Arc<dyn Store>, ExitCode> {
    store::open(db)
        .await
        .map_err(|e| fail(EXIT_FAILED, &e.to_string()))
}

fn fmt_ms(ms: Option<i64>) -> String {
    ms.and_then(DateTime::<Utc>::from_timestamp_millis)
        .map_or_else(
            || "-".into(),
            |t| t.to_rfc3339_opts(SecondsFormat::Millis, true),
        )
}

fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

// Parsed once per process: the size of the `add` variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Add or replace a job with one trigger.
    Add(JobAddArgs),
    /// List jobs with their next fire time.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show a job, its triggers and its latest history.
    Show {
        key: String,
        #[arg(long)]
        json: bool,
    },
    /// Pause a job (or, with --group, every job of a group).
    Pause {
        key: String,
        #[arg(long)]
        group: bool,
    },
    /// Resume a paused job (or group).
    Resume {
        key: String,
        #[arg(long)]
        group: bool,
    },
    /// Delete a job and its triggers.
    Delete { key: String },
    /// Fire a job now, once.
    RunNow { key: String },
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("when").required(true).args(["cron", "every", "at"])))]
pub struct JobAddArgs {
    /// The job key, GROUP/NAME.
    pub key: String,
    /// A module file to push, or a module reference: NAME, NAME@VERSION, sha256:DIGEST.
    #[arg(long)]
    pub module: String,
    /// Quartz cron expression.
    #[arg(long)]
    pub cron: Option<String>,
    /// IANA time zone of --cron.
    #[arg(long, default_value = "UTC", requires = "cron")]
    pub tz: String,
    /// Fixed interval, e.g. 30s.
    #[arg(long, value_parser = parse_duration)]
    pub every: Option<Duration>,
    /// Repeats after the first fire of --every.
    #[arg(long, requires = "every")]
    pub repeat: Option<u64>,
    /// One fire at this instant (RFC 3339).
    #[arg(long)]
    pub at: Option<String>,
    /// Job data, JSON.
    #[arg(long)]
    pub data: Option<String>,
    /// allow, forbid or skip.
    #[arg(long, default_value = "allow")]
    pub overlap: String,
    /// Runs of a fire in all (1 = no retry).
    #[arg(long, default_value_t = 1)]
    pub max_attempts: u32,
    /// Run timeout.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub timeout: Duration,
    /// fire-now, skip or fire-once.
    #[arg(long, default_value = "fire-now")]
    pub misfire: String,
    /// Re-run a fire interrupted by a node crash.
    #[arg(long)]
    pub requests_recovery: bool,
}

fn valid_key(key: &str) -> bool {
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    };
    key.split_once('/').is_some_and(|(g, n)| ok(g) && ok(n))
}

pub async fn job(db: &str, command: JobCommand) -> ExitCode {
    if let JobCommand::Add(args) = command {
        return job_add(db, args).await;
    }
    let store = match open(db).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let result = match command {
        JobCommand::Add(_) => return fail(EXIT_USAGE, "unreachable"),
        JobCommand::List { json } => job_list(&store, json).await,
        JobCommand::Show { key, json } => job_show(&store, &key, json).await,
        JobCommand::Pause { key, group: true } => group_pause(&store, &key, true).await,
        JobCommand::Resume { key, group: true } => group_pause(&store, &key, false).await,
        JobCommand::Pause { key, .. } => toggle(store.job_pause(&key, true).await, &key, "paused"),
        JobCommand::Resume { key, .. } => {
            toggle(store.job_pause(&key, false).await, &key, "resumed")
        }
        JobCommand::Delete { key } => toggle(store.job_delete(&key).await, &key, "deleted"),
        JobCommand::RunNow { key } => store.fire_now(&key).await.map(|id| {
            println!("fire {id} of {key} is due now");
            ExitCode::SUCCESS
        }),
    };
    result.unwrap_or_else(|e| fail(EXIT_FAILED, &e.to_string()))
}

async fn group_pause(
    store: &Arc<dyn Store>,
    group: &str,
    paused: bool,
) -> Result<ExitCode, store::StoreError> {
    let n = store.group_pause(group, paused).await?;
    println!(
        "{} {n} job(s) of group {group}",
        if paused { "paused" } else { "resumed" }
    );
    Ok(ExitCode::SUCCESS)
}

fn toggle(
    result: Result<bool, store::StoreError>,
    key: &str,
    verb: &str,
) -> Result<ExitCode, store::StoreError> {
    result.map(|found| {
        if found {
            println!("{verb} {key}");
            ExitCode::SUCCESS
        } else {
            fail(EXIT_FAILED, &format!("no job or trigger {key:?}"))
        }
    })
}

/// Validates every argument before touching the database.
async fn job_add(db: &str, args: JobAddArgs) -> ExitCode {
    if !valid_key(&args.key) {
        return fail(
            EXIT_USAGE,
            &format!(
                "job key {:?}: expected GROUP/NAME (letters, digits, _ . -)",
                args.key
            ),
        );
    }
    let data = args.data.clone().unwrap_or_else(|| "null".into());
    if let Err(e) = serde_json::from_str::<serde_json::Value>(&data) {
        return fail(EXIT_USAGE, &format!("--data is not JSON: {e}"));
    }
    let Some(overlap) = Overlap::parse(&args.overlap) else {
        return fail(
            EXIT_USAGE,
            &format!(
                "--overlap {:?}: expected allow, forbid or skip",
                args.overlap
            ),
        );
    };
    let Some(misfire) = MisfirePolicy::parse(&args.misfire) else {
        return fail(
            EXIT_USAGE,
            &format!(
                "--misfire {:?}: expected fire-now, skip or fire-once",
                args.misfire
            ),
        );
    };
    let kind = if let Some(expr) = &args.cron {
        if let Err(e) = CronSchedule::parse(expr, &args.tz) {
            return fail(EXIT_USAGE, &format!("--cron/--tz: {e}"));
        }
        TriggerKind::Cron {
            expr: expr.clone(),
            tz: args.tz.clone(),
        }
    } else if let Some(every) = args.every {
        if every < Duration::from_millis(1) {
            return fail(EXIT_USAGE, "--every: the period must be at least 1 ms");
        }
        TriggerKind::Every {
            period_ms: i64::try_from(every.as_millis()).unwrap_or(i64::MAX),
            repeat: args.repeat,
        }
    } else if let Some(at) = &args.at {
        match DateTime::parse_from_rfc3339(at) {
            Ok(t) => TriggerKind::At(t.timestamp_millis()),
            Err(e) => {
                return fail(
                    EXIT_USAGE,
                    &format!("--at {at:?}: {e} (use RFC 3339, e.g. 2030-01-01T09:00:00Z)"),
                );
            }
        }
    } else {
        return fail(EXIT_USAGE, "give --cron, --every or --at");
    };
    let is_file = Path::new(&args.module).is_file();
    if !is_file && parse_ref(&args.module).is_none() {
        return fail(
            EXIT_USAGE,
            &format!(
                "--module {:?}: no such file, and not a module reference (NAME, NAME@VERSION, sha256:DIGEST)",
                args.module
            ),
        );
    }
    let store = match open(db).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let store = &store;
    let module = if is_file {
        let runtime = match Runtime::new(
            RuntimeConfig {
                engine: EngineConfig::default(),
                cache_dir: super::default_cache_dir(),
                node_id: "cli".into(),
            },
            HostServices::in_memory(),
        ) {
            Ok(r) => Arc::new(r),
            Err(e) => return fail(EXIT_FAILED, &e.to_string()),
        };
        match push_file(store, &runtime, Path::new(&args.module), None, None).await {
            Ok((record, _)) => {
                println!(
                    "pushed module {}@{} (sha256:{})",
                    record.name, record.version, record.digest
                );
                format!("{}@{}", record.name, record.version)
            }
            Err(e) => return fail(EXIT_FAILED, &format!("--module {}: {e}", args.module)),
        }
    } else if parse_ref(&args.module).is_some() {
        args.module.clone()
    } else {
        return fail(
            EXIT_USAGE,
            &format!(
                "--module {:?}: no such file, and not a module reference (NAME, NAME@VERSION, sha256:DIGEST)",
                args.module
            ),
        );
    };
    let mut job = JobDef::new(&args.key, module);
    job.data = data;
    job.overlap = overlap;
    job.retry.max_attempts = args.max_attempts.max(1);
    job.timeout_ms = u64::try_from(args.timeout.as_millis()).unwrap_or(u64::MAX);
    job.requests_recovery = args.requests_recovery;
    let trigger = TriggerPut {
        trigger_key: format!("{}:{}", args.key, kind.as_str()),
        job_key: args.key.clone(),
        spec: TriggerSpec {
            kind,
            start_ms: None,
            end_ms: None,
            misfire,
        },
        priority: job.priority,
    };
    if let Err(e) = store.job_put(&job, &[trigger]).await {
        return fail(EXIT_FAILED, &e.to_string());
    }
    let next = store
        .trigger_list(Some(&args.key))
        .await
        .ok()
        .and_then(|t| t.iter().filter_map(|t| t.next_fire_ms).min());
    println!("added job {} (next fire {})", args.key, fmt_ms(next));
    ExitCode::SUCCESS
}

fn next_fire(triggers: &[TriggerRow], job: &str) -> Option<i64> {
    triggers
        .iter()
        .filter(|t| t.job_key == job && t.state.as_str() == "WAITING")
        .filter_map(|t| t.next_fire_ms)
        .min()
}

async fn job_list(store: &Arc<dyn Store>, as_json: bool) -> Result<ExitCode, store::StoreError> {
    let jobs = store.job_list().await?;
    let triggers = store.trigger_list(None).await?;
    if as_json {
        let items: Vec<_> = jobs
            .iter()
            .map(|j| json!({ "job": j, "next_fire_ms": next_fire(&triggers, &j.job_key), "next_fire": fmt_ms(next_fire(&triggers, &j.job_key)) }))
            .collect();
        println!("{}", serde_json::Value::Array(items));
    } else {
        let rows: Vec<Vec<String>> = jobs
            .iter()
            .map(|j| {
                vec![
                    j.job_key.clone(),
                    j.module.clone(),
                    if j.paused {
                        "paused".into()
                    } else {
                        "active".into()
                    },
                    fmt_ms(next_fire(&triggers, &j.job_key)),
                    triggers
                        .iter()
                        .filter(|t| t.job_key == j.job_key)
                        .count()
                        .to_string(),
                ]
            })
            .collect();
        print_table(&["JOB", "MODULE", "STATE", "NEXT FIRE", "TRIGGERS"], &rows);
    }
    Ok(ExitCode::SUCCESS)
}

async fn job_show(
    store: &Arc<dyn Store>,
    key: &str,
    as_json: bool,
) -> Result<ExitCode, store::StoreError> {
    let Some(job) = store.job_get(key).await? else {
        return Ok(fail(EXIT_FAILED, &format!("no job {key:?}")));
    };
    let triggers = store.trigger_list(Some(key)).await?;
    let history = store
        .history_list(&HistoryFilter {
            job_key: Some(key.into()),
            limit: 10,
            ..HistoryFilter::default()
        })
        .await?;
    if as_json {
        let t: Vec<_> = triggers
            .iter()
            .map(|t| json!({ "trigger_key": t.trigger_key, "schedule": t.describe(), "state": t.state, "next_fire_ms": t.next_fire_ms, "error": t.error }))
            .collect();
        println!(
            "{}",
            json!({ "job": job, "triggers": t, "history": history })
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("job:        {}", job.job_key);
    println!("module:     {}", job.module);
    println!("data:       {}", job.data);
    println!("overlap:    {}", job.overlap.as_str());
    println!("attempts:   {}", job.retry.max_attempts);
    println!("timeout:    {} ms", job.timeout_ms);
    println!(
        "state:      {}",
        if job.paused { "paused" } else { "active" }
    );
    println!();
    let rows: Vec<Vec<String>> = triggers
        .iter()
        .map(|t| {
            vec![
                t.trigger_key.clone(),
                t.describe(),
                t.state.as_str().into(),
                fmt_ms(t.next_fire_ms),
                t.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print_table(
        &["TRIGGER", "SCHEDULE", "STATE", "NEXT FIRE", "ERROR"],
        &rows,
    );
    println!();
    print_history(&history);
    Ok(ExitCode::SUCCESS)
}

fn print_history(history: &[crate::store::model::HistoryEntry]) {
    let rows: Vec<Vec<String>> = history
        .iter()
        .map(|h| {
            let detail: serde_json::Value = serde_json::from_str(&h.details).unwrap_or_default();
            let summary = detail["outcome"]["message"]
                .as_str()
                .or_else(|| detail["outcome"]["detail"].as_str())
                .or_else(|| detail["reason"].as_str())
                .unwrap_or("")
                .chars()
                .take(60)
                .collect::<String>();
            vec![
                fmt_ms(Some(h.started_ms)),
                h.job_key.clone(),
                h.status.as_str().into(),
                h.attempt.to_string(),
                format!("{} ms", h.duration_ms),
                summary,
            ]
        })
        .collect();
    print_table(
        &["STARTED", "JOB", "STATUS", "ATTEMPT", "DURATION", "DETAIL"],
        &rows,
    );
}

#[derive(Debug, Subcommand)]
pub enum HistoryCommand {
    /// List task history, newest first.
    List {
        #[arg(long)]
        job: Option<String>,
        /// success, failed, retried, timeout, skipped, cancelled or misfired.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
}

pub async fn history(db: &str, command: HistoryCommand) -> ExitCode {
    let HistoryCommand::List {
        job,
        status,
        limit,
        json,
    } = command;
    let status = match status.as_deref().map(|s| (s, HistoryStatus::parse(s))) {
        Some((s, None)) => {
            return fail(
                EXIT_USAGE,
                &format!(
                    "--status {s:?}: expected success, failed, retried, timeout, skipped, cancelled or misfired"
                ),
            );
        }
        Some((_, parsed)) => parsed,
        None => None,
    };
    let store = match open(db).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    match store
        .history_list(&HistoryFilter {
            job_key: job,
            status,
            limit: limit.clamp(1, 10_000),
            before_ms: None,
        })
        .await
    {
        Ok(rows) if json => {
            let items: Vec<_> = rows
                .iter()
                .map(|h| {
                    let mut v = serde_json::to_value(h).unwrap_or_default();
                    v["details"] = serde_json::from_str(&h.details).unwrap_or_default();
                    v
                })
                .collect();
            println!("{}", serde_json::Value::Array(items));
            ExitCode::SUCCESS
        }
        Ok(rows) => {
            print_history(&rows);
            ExitCode::SUCCESS
        }
        Err(e) => fail(EXIT_FAILED, &e.to_string()),
    }
}

pub async fn trigger(db: &str, command: super::TriggerCommand) -> ExitCode {
    use super::TriggerCommand;
    let store = match open(db).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let result = match command {
        TriggerCommand::Preview(_) => return fail(EXIT_USAGE, "preview needs no database"),
        TriggerCommand::List { job, json } => store.trigger_list(job.as_deref()).await.map(|triggers| {
            if json {
                let items: Vec<_> = triggers
                    .iter()
                    .map(|t| {
                        json!({ "trigger_key": t.trigger_key, "job_key": t.job_key, "schedule": t.describe(),
                                "misfire": t.spec.misfire.as_str(), "priority": t.priority, "state": t.state,
                                "next_fire_ms": t.next_fire_ms, "next_fire": fmt_ms(t.next_fire_ms), "error": t.error })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(items));
            } else {
                let rows: Vec<Vec<String>> = triggers
                    .iter()
                    .map(|t| vec![t.trigger_key.clone(), t.describe(), t.state.as_str().into(), fmt_ms(t.next_fire_ms), t.error.clone().unwrap_or_default()])
                    .collect();
                print_table(&["TRIGGER", "SCHEDULE", "STATE", "NEXT FIRE", "ERROR"], &rows);
            }
            ExitCode::SUCCESS
        }),
        TriggerCommand::Pause { key } => toggle(store.trigger_pause(&key, true).await, &key, "paused"),
        TriggerCommand::Resume { key } => toggle(store.trigger_pause(&key, false).await, &key, "resumed"),
    };
    result.unwrap_or_else(|e| fail(EXIT_FAILED, &e.to_string()))
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Nodes with their version, contract versions, last check-in, running fires
    /// and how many modules each has compiled (`--json` lists their digests).
    Nodes {
        /// A node silent for longer than this many ms is shown dead.
        #[arg(long, default_value_t = 2_000)]
        dead_after_ms: i64,
        #[arg(long)]
        json: bool,
    },
    /// Cluster locks held now, with holder, fencing token and lease.
    Locks {
        #[arg(long)]
        json: bool,
    },
}

pub async fn cluster(db: &str, command: ClusterCommand) -> ExitCode {
    let store = match open(db).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let result = match command {
        ClusterCommand::Nodes {
            dead_after_ms,
            json,
        } => store.node_list(dead_after_ms).await.map(|nodes| {
            if json {
                println!("{}", serde_json::to_value(&nodes).unwrap_or_default());
            } else {
                let rows: Vec<Vec<String>> = nodes
                    .iter()
                    .map(|n| {
                        vec![
                            n.node_id.clone(),
                            if n.alive {
                                "alive".into()
                            } else {
                                "dead".into()
                            },
                            n.version.clone(),
                            n.wit_versions.clone(),
                            fmt_ms(Some(n.heartbeat_ms)),
                            n.running.to_string(),
                            n.modules.len().to_string(),
                        ]
                    })
                    .collect();
                print_table(
                    &[
                        "NODE",
                        "STATE",
                        "VERSION",
                        "WIT",
                        "LAST CHECK-IN",
                        "RUNNING",
                        "MODULES COMPILED",
                    ],
                    &rows,
                );
            }
            ExitCode::SUCCESS
        }),
        ClusterCommand::Locks { json } => store.lock_list().await.map(|locks| {
            if json {
                println!("{}", serde_json::to_value(&locks).unwrap_or_default());
            } else {
                let rows: Vec<Vec<String>> = locks
                    .iter()
                    .map(|l| {
                        vec![
                            l.name.clone(),
                            l.holder.clone().unwrap_or_default(),
                            l.token.to_string(),
                            fmt_ms(l.acquired_ms),
                            fmt_ms(l.lease_until_ms),
                        ]
                    })
                    .collect();
                print_table(&["LOCK", "HOLDER", "TOKEN", "SINCE", "LEASE UNTIL"], &rows);
            }
            ExitCode::SUCCESS
        }),
    };
    result.unwrap_or_else(|e| fail(EXIT_FAILED, &e.to_string()))
}

pub async fn module(db: &str, command: super::ModuleCommand) -> ExitCode {
    use super::ModuleCommand;
    let store = match open(db).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    match command {
        ModuleCommand::Inspect(_) => fail(EXIT_USAGE, "inspect needs no database"),
        ModuleCommand::Push {
            file,
            name,
            version,
        } => {
            let runtime = match Runtime::new(
                RuntimeConfig {
                    engine: EngineConfig::default(),
                    cache_dir: super::default_cache_dir(),
                    node_id: "cli".into(),
                },
                HostServices::in_memory(),
            ) {
                Ok(r) => Arc::new(r),
                Err(e) => return fail(EXIT_FAILED, &e.to_string()),
            };
            match push_file(&store, &runtime, &file, name.as_deref(), version.as_deref()).await {
                Ok((record, info)) => {
                    println!(
                        "pushed {}@{} sha256:{} (contract {}, describe: {} {})",
                        record.name,
                        record.version,
                        record.digest,
                        record.wit_version,
                        info.name,
                        info.version
                    );
                    ExitCode::SUCCESS
                }
                Err(crate::engine::modules::PushError::Rejected(r)) => fail(
                    super::EXIT_SKIPPED,
                    &format!("{}: rejected: {r}", file.display()),
                ),
                Err(e) => fail(EXIT_FAILED, &format!("{}: {e}", file.display())),
            }
        }
        ModuleCommand::List { json } => match store.module_list(None).await {
            Ok(modules) if json => {
                println!("{}", serde_json::to_value(&modules).unwrap_or_default());
                ExitCode::SUCCESS
            }
            Ok(modules) => {
                let rows: Vec<Vec<String>> = modules
                    .iter()
                    .map(|m| {
                        vec![
                            m.name.clone(),
                            m.version.clone(),
                            format!("sha256:{}", &m.digest[..16.min(m.digest.len())]),
                            m.wit_version.clone(),
                            m.size.to_string(),
                            m.created_at.to_rfc3339_opts(SecondsFormat::Millis, true),
                        ]
                    })
                    .collect();
                print_table(
                    &["MODULE", "VERSION", "DIGEST", "WIT", "BYTES", "PUSHED"],
                    &rows,
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(EXIT_FAILED, &e.to_string()),
        },
    }
}
