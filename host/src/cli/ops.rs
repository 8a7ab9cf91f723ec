//! Operator commands: job, trigger, history, module, cluster. They work on the
//! same database as a running server (`--db`, through the admin service the
//! server runs), or through a server's admin API (`--server`), with the same
//! output and exit codes either way.
//!
//! Why one long file: every command here has the same three parts (its
//! arguments, the call through the admin service or the API, its output),
//! and keeping them side by side keeps them alike; `signals`, `secrets` and
//! `preview` hold the commands with logic of their own.

use super::remote::{Body, CliError, Remote};
use super::{EXIT_FAILED, EXIT_SKIPPED, EXIT_USAGE, fail, remote};
use crate::admin::jobs::{PauseRequest, PutMode};
use crate::admin::spec::JobSpec;
use crate::admin::{Admin, AdminError, Caller, views};
use crate::engine::modules::read_module;
use crate::runtime::{EngineConfig, RuntimeConfig};
use crate::store;
use crate::store::model::HistoryStatus;
use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, Subcommand};
use serde_json::Value;
use std::path::Path;
use std::process::ExitCode;

/// Where the operator commands act: the database itself, through the same
/// admin service a server runs (audited as the OS user), or a server's admin
/// API (`--server`). Both give the same JSON, so output and exit codes do not
/// depend on which.
pub enum Target {
    Local { admin: Admin, caller: Caller },
    Remote(Remote),
}

/// How to reach the scheduler: `--db`, or `--server` with `--token`.
#[derive(Clone, Debug)]
pub struct Conn {
    pub db: String,
    pub server: Option<String>,
    pub token: Option<String>,
    /// Where `--db` commands that compile (job add, module push) cache modules.
    pub cache_dir: Option<std::path::PathBuf>,
}

impl Conn {
    pub(super) async fn open(&self) -> Result<Target, CliError> {
        match &self.server {
            Some(url) => Ok(Target::Remote(Remote::new(url, self.token.clone())?)),
            None => Ok(Target::Local {
                admin: Admin::detached(
                    store::open(&self.db).await?,
                    RuntimeConfig {
                        engine: EngineConfig::default(),
                        cache_dir: self.cache_dir.clone(),
                        node_id: "cli".into(),
                    },
                ),
                caller: Caller::os_user(),
            }),
        }
    }
}

/// Prints a command's result: `value` as JSON, or as text by `text`.
pub(super) fn emit(json: bool, value: &Value, text: impl FnOnce(&Value)) -> ExitCode {
    if json {
        outln!("{value}");
    } else {
        text(value);
    }
    ExitCode::SUCCESS
}

pub(super) fn finish(result: Result<ExitCode, CliError>) -> ExitCode {
    result.unwrap_or_else(|e| fail(e.code, &e.message))
}

/// A JSON field as table text: strings bare, null as `-`.
pub(super) fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(super) fn fmt_ms(ms: Option<i64>) -> String {
    ms.and_then(DateTime::<Utc>::from_timestamp_millis)
        .map_or_else(
            || "-".into(),
            |t| t.to_rfc3339_opts(SecondsFormat::Millis, true),
        )
}

pub(super) fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(crate::text::escape(cell).chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        // Cells may hold guest text (module names, descriptions, log lines).
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{:<w$}", crate::text::escape(c)))
            .collect();
        outln!("{}", parts.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

pub(super) fn items(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

/// The key of a job or trigger as it may appear in an API path.
pub(super) fn key_path(key: &str) -> Result<&str, CliError> {
    let ok = key.split_once('/').is_some_and(|(g, n)| {
        !g.is_empty() && !n.is_empty() && !n.contains('/') && !key.contains(['?', '#', '%', ' '])
    });
    if ok {
        Ok(key)
    } else {
        Err(CliError::new(
            EXIT_FAILED,
            format!("no job or trigger {key:?}"),
        ))
    }
}

// Parsed once per process: the size of the `add` variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Add or replace a job with one trigger.
    Add(JobAddArgs),
    /// List jobs with their next fire time.
    List,
    /// Show a job, its triggers and its latest history.
    Show { key: String },
    /// Pause a job (or, with --group, every job of a group).
    Pause {
        key: String,
        #[arg(long)]
        group: bool,
        /// Why: shown with the job (job show, the API, the dashboard).
        #[arg(long)]
        note: Option<String>,
        /// Resume by itself then: RFC 3339, or a duration from now (e.g. 2h).
        #[arg(long)]
        until: Option<String>,
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
    /// One fire per time the job's triggers would have fired at in a past
    /// range, each seeing that time as scheduled-at and as its wall clock.
    Backfill(super::bulk::BackfillArgs),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("when").required(false).args(["cron", "every", "at", "event"])))]
pub struct JobAddArgs {
    /// The job key, GROUP/NAME.
    pub key: String,
    /// A module file to push, or a module reference: NAME, NAME@VERSION, sha256:DIGEST.
    #[arg(long)]
    pub module: String,
    /// Quartz cron expression [default: the module's default-schedule, if it has one].
    #[arg(long)]
    pub cron: Option<String>,
    /// IANA time zone of --cron [default: UTC].
    #[arg(long, requires = "cron")]
    pub tz: Option<String>,
    /// Fixed interval, e.g. 30s.
    #[arg(long)]
    pub every: Option<String>,
    /// Repeats after the first fire of --every.
    #[arg(long, requires = "every")]
    pub repeat: Option<u64>,
    /// One fire at this instant (RFC 3339).
    #[arg(long)]
    pub at: Option<String>,
    /// One fire for every event of this name (`quartzite event emit NAME`).
    #[arg(long)]
    pub event: Option<String>,
    /// Job data, JSON.
    #[arg(long)]
    pub data: Option<String>,
    /// allow, forbid, skip, buffer-one or cancel-other [default: the module's overlap hint, else allow].
    #[arg(long)]
    pub overlap: Option<String>,
    /// Runs of a fire in all (1 = no retry) [default: 1].
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// Run timeout [default: 60s].
    #[arg(long)]
    pub timeout: Option<String>,
    /// fire-now, skip or fire-once [default: fire-now].
    #[arg(long)]
    pub misfire: Option<String>,
    /// Each fire up to this long after its time, e.g. 30s (the same delay for
    /// a fire on every node; never at or past the next fire) [default: none].
    #[arg(long)]
    pub jitter: Option<String>,
    /// An exclusion calendar the trigger honours, by name (repeatable; store
    /// it first with `quartzite calendar put`).
    #[arg(long = "calendar", value_name = "NAME")]
    pub calendar: Vec<String>,
    /// Re-run a fire interrupted by a node crash.
    #[arg(long)]
    pub requests_recovery: bool,
    /// Pause the job after this many failed runs in a row [default: never].
    #[arg(long, value_name = "N")]
    pub pause_on_failure: Option<u32>,
    /// At most N fires per concurrency key running at once, cluster-wide.
    #[arg(long, value_name = "N")]
    pub concurrency: Option<u32>,
    /// The concurrency key, a template such as '{{ event.payload.account_id }}'
    /// [default: '{{ job }}'].
    #[arg(long, value_name = "TEMPLATE", requires = "concurrency")]
    pub concurrency_key: Option<String>,
    /// At most N fires per rate key starting in any window of PER, e.g. 10/1s or 100/1m.
    #[arg(long, value_name = "N/PER")]
    pub rate: Option<String>,
    /// The rate key, a template [default: '{{ job }}'].
    #[arg(long, value_name = "TEMPLATE", requires = "rate")]
    pub rate_key: Option<String>,
    /// Events of a key within this window run once, after the last, with its
    /// payload (an event job), e.g. 5s.
    #[arg(long, value_name = "WINDOW", conflicts_with = "singleton")]
    pub debounce: Option<String>,
    /// One fire per key at a time; an event while one runs is queued once (an event job).
    #[arg(long)]
    pub singleton: bool,
    /// The key of --debounce or --singleton, a template [default: '{{ job }}'].
    #[arg(long, value_name = "TEMPLATE")]
    pub coalesce_key: Option<String>,
    #[command(flatten)]
    pub grants: GrantArgs,
}

/// What a job may reach, as `job add` and `run-once` take it.
#[derive(Debug, Args)]
pub struct GrantArgs {
    /// Grant outbound HTTP to a URL pattern, e.g. https://api.example.com/v1/* (repeatable).
    #[arg(long = "grant-http", value_name = "PATTERN")]
    pub grant_http: Vec<String>,
    /// Grant emitting events matching NAME, NAME.* or * (repeatable).
    #[arg(long = "grant-emit", value_name = "PATTERN")]
    pub grant_emit: Vec<String>,
    /// Serve KEY=VALUE through wasi:config (repeatable).
    #[arg(long = "grant-config", value_name = "KEY=VALUE")]
    pub grant_config: Vec<String>,
    /// Inject a stored secret into requests: NAME@URL-PATTERN[#HEADER[=FORMAT]],
    /// e.g. 'TOKEN@https://api.example.com/*#Authorization=Bearer {}' (repeatable).
    #[arg(long = "grant-secret", value_name = "GRANT")]
    pub grant_secret: Vec<String>,
    /// Let granted requests reach loopback, private and link-local addresses.
    #[arg(long = "grant-private")]
    pub grant_private: bool,
    /// Let requests granted by name reach special addresses in this network
    /// (CIDR, e.g. 10.20.0.0/16) (repeatable).
    #[arg(long = "grant-network", value_name = "CIDR")]
    pub grant_network: Vec<String>,
    /// Trust the CA certificates in FILE (PEM), besides the public roots, for
    /// HTTPS requests matching PATTERN: PATTERN=FILE (repeatable).
    #[arg(long = "grant-ca", value_name = "PATTERN=FILE")]
    pub grant_ca: Vec<String>,
}

impl GrantArgs {
    /// The grants the flags say.
    ///
    /// # Errors
    ///
    /// A flag's value that is not a grant, named with the flag.
    pub fn grants(&self) -> Result<crate::grants::Grants, String> {
        let mut grants = crate::grants::Grants::from_flags(
            &self.grant_http,
            &self.grant_emit,
            &self.grant_config,
            &self.grant_secret,
            self.grant_private,
        )
        .map_err(|e| format!("--{e}"))?;
        grants.private_networks.clone_from(&self.grant_network);
        for flag in &self.grant_ca {
            let (url, file) = flag
                .rsplit_once('=')
                .ok_or_else(|| format!("--grant-ca {flag:?}: expected PATTERN=FILE"))?;
            let pem = std::fs::read_to_string(file)
                .map_err(|e| format!("--grant-ca {flag:?}: cannot read {file}: {e}"))?;
            grants.ca.push(crate::grants::CaGrant {
                url: url.to_string(),
                pem,
            });
        }
        grants.compile().map_err(|e| format!("--grant-{e}"))?;
        Ok(grants)
    }
}

pub async fn job(conn: &Conn, command: JobCommand, json: bool) -> ExitCode {
    let command = match command {
        JobCommand::Add(args) => return finish(job_add(conn, args, json).await),
        JobCommand::Backfill(args) => return super::bulk::backfill(conn, args, json).await,
        command => command,
    };
    let target = match conn.open().await {
        Ok(t) => t,
        Err(e) => return fail(e.code, &e.message),
    };
    finish(job_command(&target, command, json).await)
}

async fn job_command(
    target: &Target,
    command: JobCommand,
    json: bool,
) -> Result<ExitCode, CliError> {
    match command {
        JobCommand::Add(_) | JobCommand::Backfill(_) => {
            Err(CliError::new(EXIT_USAGE, "handled by `job` above"))
        }
        JobCommand::List => {
            let jobs = match target {
                Target::Local { admin, .. } => admin.job_list().await?,
                Target::Remote(r) => r.get("/api/v1/jobs").await?["items"].take(),
            };
            Ok(emit(json, &jobs, |jobs| {
                let rows: Vec<Vec<String>> = items(jobs)
                    .iter()
                    .map(|j| {
                        vec![
                            cell(&j["job_key"]),
                            cell(&j["module"]),
                            cell(&j["state"]),
                            cell(&j["next_fire"]),
                            items(&j["triggers"]).len().to_string(),
                        ]
                    })
                    .collect();
                print_table(&["JOB", "MODULE", "STATE", "NEXT FIRE", "TRIGGERS"], &rows);
            }))
        }
        JobCommand::Show { key } => {
            let job = match target {
                Target::Local { admin, .. } => admin.job_show(&key).await?,
                Target::Remote(r) => r.get(&format!("/api/v1/jobs/{}", key_path(&key)?)).await?,
            };
            Ok(emit(json, &job, print_job))
        }
        JobCommand::Pause {
            key,
            group: true,
            note,
            until,
        } => {
            let request = PauseRequest { note, until };
            group_pause(target, &key, true, &request, json).await
        }
        JobCommand::Resume { key, group: true } => {
            group_pause(target, &key, false, &PauseRequest::default(), json).await
        }
        JobCommand::Pause {
            key, note, until, ..
        } => {
            let request = PauseRequest { note, until };
            job_pause(target, &key, true, &request, json).await
        }
        JobCommand::Resume { key, .. } => {
            job_pause(target, &key, false, &PauseRequest::default(), json).await
        }
        JobCommand::Delete { key } => {
            let done = match target {
                Target::Local { admin, caller } => admin.job_delete(caller, &key).await?.body,
                Target::Remote(r) => {
                    r.call(
                        reqwest::Method::DELETE,
                        &format!("/api/v1/jobs/{}", key_path(&key)?),
                        None,
                    )
                    .await?
                }
            };
            Ok(emit(json, &done, |_| outln!("deleted {key}")))
        }
        JobCommand::RunNow { key } => {
            let fired = match target {
                Target::Local { admin, caller } => admin.job_run_now(caller, &key).await?.body,
                Target::Remote(r) => {
                    r.post(&format!("/api/v1/jobs/{}/run-now", key_path(&key)?))
                        .await?
                }
            };
            Ok(emit(json, &fired, |v| {
                outln!("fire {} of {key} is due now", cell(&v["fire_id"]));
            }))
        }
    }
}

fn print_job(job: &Value) {
    outln!("job:        {}", cell(&job["job_key"]));
    outln!("module:     {}", cell(&job["module"]));
    outln!("data:       {}", job["data"]);
    outln!("overlap:    {}", cell(&job["overlap"]));
    outln!("attempts:   {}", cell(&job["retry"]["max_attempts"]));
    outln!("timeout:    {} ms", cell(&job["timeout_ms"]));
    outln!("state:      {}", cell(&job["state"]));
    if let Some(note) = job["pause_note"].as_str() {
        outln!("pause note: {}", crate::text::strip(note, usize::MAX));
    }
    if let Some(ms) = job["paused_until_ms"].as_i64() {
        outln!("paused until: {}", fmt_ms(Some(ms)));
    }
    if let Some(n) = job["pause_on_failure"].as_u64() {
        outln!("pause on failure: after {n} failed runs in a row");
    }
    if let Some(c) = job["concurrency"].as_object() {
        outln!(
            "concurrency: at most {} running per key {}",
            c["limit"],
            c["key"]
        );
    }
    if let Some(c) = job["coalesce"].as_object() {
        match c.get("debounce_ms").and_then(serde_json::Value::as_u64) {
            Some(ms) => outln!(
                "debounce: events of a key {} apart or closer run once, per key {}",
                humantime::format_duration(std::time::Duration::from_millis(ms)),
                c["key"]
            ),
            None => outln!(
                "singleton: one run at a time per key {}, one more queued",
                c["key"]
            ),
        }
    }
    if let Some(r) = job["rate"].as_object() {
        outln!(
            "rate: at most {} starts per {} per key {}",
            r["limit"],
            humantime::format_duration(std::time::Duration::from_millis(
                r["per_ms"].as_u64().unwrap_or(0)
            )),
            r["key"]
        );
    }
    print_grants(&job["grants"]);
    outln!();
    print_triggers(&job["triggers"]);
    outln!();
    print_history(&job["history"]);
}

/// A job's grants, one kind a line; "none" when nothing is granted.
fn print_grants(grants: &Value) {
    let list = |v: &Value| {
        items(v)
            .iter()
            .map(|p| p.as_str().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let empty = grants.as_object().is_none_or(serde_json::Map::is_empty);
    if empty {
        outln!("grants:     none");
        return;
    }
    if !items(&grants["http"]).is_empty() {
        outln!("grant http: {}", list(&grants["http"]));
    }
    if !items(&grants["emit"]).is_empty() {
        outln!("grant emit: {}", list(&grants["emit"]));
    }
    if let Some(config) = grants["config"].as_object() {
        let keys: Vec<&str> = config.keys().map(String::as_str).collect();
        outln!("config:     {}", keys.join(", "));
    }
    for s in items(&grants["secret"]) {
        outln!(
            "secret:     {} -> {} header {}",
            cell(&s["name"]),
            cell(&s["url"]),
            cell(&s["header"])
        );
    }
    if !items(&grants["private_networks"]).is_empty() {
        outln!("networks:   {}", list(&grants["private_networks"]));
    }
    for c in items(&grants["ca"]) {
        outln!("trust ca:   for {}", cell(&c["url"]));
    }
    if grants["allow_private"].as_bool() == Some(true) {
        outln!("private:    allowed");
    }
}

/// The body of a pause request sent to a server: none when nothing is said.
fn pause_body(request: &PauseRequest) -> Option<serde_json::Value> {
    (request.note.is_some() || request.until.is_some())
        .then(|| serde_json::json!({ "note": request.note, "until": request.until }))
}

async fn job_pause(
    target: &Target,
    key: &str,
    paused: bool,
    request: &PauseRequest,
    json: bool,
) -> Result<ExitCode, CliError> {
    let done = match target {
        Target::Local { admin, caller } => {
            admin.job_pause(caller, key, paused, request).await?.body
        }
        Target::Remote(r) => {
            let verb = if paused { "pause" } else { "resume" };
            let path = format!("/api/v1/jobs/{}/{verb}", key_path(key)?);
            r.post_json(&path, pause_body(request)).await?
        }
    };
    let verb = if paused { "paused" } else { "resumed" };
    Ok(emit(json, &done, |v| {
        let until = v["paused_until_ms"]
            .as_i64()
            .map(|ms| format!(" until {}", fmt_ms(Some(ms))));
        outln!("{verb} {key}{}", until.unwrap_or_default());
    }))
}

async fn group_pause(
    target: &Target,
    group: &str,
    paused: bool,
    request: &PauseRequest,
    json: bool,
) -> Result<ExitCode, CliError> {
    let done = match target {
        Target::Local { admin, caller } => {
            admin
                .group_pause(caller, group, paused, request)
                .await?
                .body
        }
        Target::Remote(r) => {
            let verb = if paused { "pause" } else { "resume" };
            let path = format!("/api/v1/groups/{}/{verb}", remote::encode(group));
            r.post_json(&path, pause_body(request)).await?
        }
    };
    let verb = if paused { "paused" } else { "resumed" };
    Ok(emit(json, &done, |v| {
        outln!("{verb} {} job(s) of group {group}", cell(&v["jobs"]));
    }))
}

/// A field error as the CLI's flags name it, quoting what was typed.
fn flag_error(e: &crate::admin::spec::FieldError, module: &str) -> CliError {
    let message = match e.field {
        "module" => format!(
            "--module {module:?}: no such file, and not a module reference (NAME, NAME@VERSION, sha256:DIGEST)"
        ),
        "key" => format!("job key {}", e.message),
        "schedule" => {
            "give --cron, --every, --at or --event (the module has no default-schedule)".into()
        }
        field => format!("--{} {}", field.replace('_', "-"), e.message),
    };
    CliError::new(EXIT_USAGE, message)
}

/// The hints of a `describe()` answer as the API shows it (JSON).
fn hints_of(describe: &Value) -> crate::runtime::JobInfo {
    let overlap = describe["overlap"]
        .as_str()
        .and_then(crate::domain::Overlap::parse);
    crate::runtime::JobInfo {
        name: cell(&describe["name"]),
        version: cell(&describe["version"]),
        description: None,
        default_schedule: describe["default_schedule"].as_str().map(str::to_string),
        overlap,
    }
}

/// `--rate N/PER` (`10/1s`) as the job spec takes it.
fn rate_arg(text: &str, key: Option<String>) -> Result<crate::domain::flow::RateSpec, CliError> {
    let usage = || {
        CliError::new(
            EXIT_USAGE,
            format!("--rate {text:?}: expected N/PER, e.g. 10/1s or 100/1m"),
        )
    };
    let (limit, per) = text.split_once('/').ok_or_else(usage)?;
    let limit: u32 = limit.trim().parse().map_err(|_| usage())?;
    Ok(crate::domain::flow::RateSpec {
        key,
        limit,
        per: per.trim().to_string(),
    })
}

/// Validates every argument before touching the database or the server, with
/// the checks the admin API applies to a job it is sent. What is left out is
/// taken from the module's `describe()` hints (overlap, default-schedule).
async fn job_add(conn: &Conn, args: JobAddArgs, json: bool) -> Result<ExitCode, CliError> {
    let data = match args.data.as_deref().map(serde_json::from_str::<Value>) {
        Some(Ok(v)) => Some(v),
        Some(Err(e)) => {
            return Err(CliError::new(
                EXIT_USAGE,
                format!("--data is not JSON: {e}"),
            ));
        }
        None => None,
    };
    let grants = args
        .grants
        .grants()
        .map_err(|e| CliError::new(EXIT_USAGE, e))?;
    let is_file = Path::new(&args.module).is_file();
    let mut spec = JobSpec {
        key: args.key.clone(),
        // A file is pushed below, once everything else is known to be valid.
        module: if is_file {
            "file".into()
        } else {
            args.module.clone()
        },
        tz: args.tz.clone(),
        cron: args.cron.clone(),
        every: args.every.clone(),
        repeat: args.repeat,
        at: args.at.clone(),
        event: args.event.clone(),
        data,
        overlap: args.overlap.clone(),
        max_attempts: args.max_attempts,
        timeout: args.timeout.clone(),
        misfire: args.misfire.clone(),
        jitter: args.jitter.clone(),
        calendar: args.calendar.clone(),
        requests_recovery: Some(args.requests_recovery),
        paused: None,
        pause_on_failure: args.pause_on_failure,
        grants: (!grants.is_empty()).then_some(grants),
        concurrency: args
            .concurrency
            .map(|limit| crate::domain::flow::ConcurrencySpec {
                key: args.concurrency_key.clone(),
                limit,
            }),
        rate: args
            .rate
            .as_deref()
            .map(|rate| rate_arg(rate, args.rate_key.clone()))
            .transpose()?,
        debounce: args
            .debounce
            .clone()
            .map(|window| crate::domain::flow::DebounceSpec::Keyed {
                window,
                key: args.coalesce_key.clone(),
            }),
        singleton: args
            .singleton
            .then(|| crate::domain::flow::SingletonSpec::Keyed {
                key: args.coalesce_key.clone(),
            }),
    };
    let scheduled = [&args.cron, &args.every, &args.at, &args.event]
        .iter()
        .any(|o| o.is_some());
    // Without a schedule the module's default may supply one: check the rest now.
    let mut early = spec.clone();
    if !scheduled {
        early.every = Some("1s".into());
    }
    early
        .build("cli")
        .map_err(|e| flag_error(&e, &args.module))?;
    let target = conn.open().await?;
    if is_file {
        let pushed = module_push(&target, Path::new(&args.module), None, None)
            .await
            .map_err(|e| CliError::new(e.code, format!("--module {}", e.message)))?;
        let record = &pushed["module"];
        if !json {
            outln!(
                "pushed module {}@{} (sha256:{})",
                cell(&record["name"]),
                cell(&record["version"]),
                cell(&record["digest"])
            );
        }
        spec.module = format!("{}@{}", cell(&record["name"]), cell(&record["version"]));
        spec.apply_hints(&hints_of(&pushed["describe"]));
    }
    let job = match &target {
        // The service applies the module's hints, as the API does.
        Target::Local { admin, caller } => {
            match admin.job_put(caller, &spec, PutMode::Upsert).await {
                Ok(done) => done.body,
                Err(AdminError::Field(e)) => return Err(flag_error(&e, &args.module)),
                Err(e) => return Err(e.into()),
            }
        }
        Target::Remote(r) => {
            if is_file {
                spec.build("cli")
                    .map_err(|e| flag_error(&e, &args.module))?;
            }
            let body = serde_json::to_value(&spec).unwrap_or_default();
            r.call(
                reqwest::Method::PUT,
                &format!("/api/v1/jobs/{}", key_path(&args.key)?),
                Some(Body::Json(body)),
            )
            .await
            .map_err(|e| match e.message.strip_prefix("schedule: ") {
                Some(_) => CliError::new(
                    EXIT_USAGE,
                    "give --cron, --every, --at or --event (the module has no default-schedule)",
                ),
                None => e,
            })?
        }
    };
    Ok(emit(json, &job, |job| {
        outln!(
            "added job {} (next fire {})",
            args.key,
            cell(&job["next_fire"])
        );
    }))
}

fn print_triggers(triggers: &Value) {
    let rows: Vec<Vec<String>> = items(triggers)
        .iter()
        .map(|t| {
            vec![
                cell(&t["trigger_key"]),
                cell(&t["schedule"]),
                cell(&t["state"]),
                cell(&t["next_fire"]),
                t["error"].as_str().unwrap_or_default().to_string(),
            ]
        })
        .collect();
    print_table(
        &["TRIGGER", "SCHEDULE", "STATE", "NEXT FIRE", "ERROR"],
        &rows,
    );
}

fn print_history(history: &Value) {
    let rows: Vec<Vec<String>> = items(history)
        .iter()
        .map(|h| {
            let detail = &h["details"];
            let summary = detail["outcome"]["message"]
                .as_str()
                .or_else(|| detail["outcome"]["detail"].as_str())
                .or_else(|| detail["reason"].as_str())
                .unwrap_or("")
                .chars()
                .take(60)
                .collect::<String>();
            vec![
                fmt_ms(h["started_ms"].as_i64()),
                cell(&h["job_key"]),
                cell(&h["status"]),
                cell(&h["attempt"]),
                format!("{} ms", cell(&h["duration_ms"])),
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
    /// List run history, newest first.
    List {
        #[arg(long)]
        job: Option<String>,
        /// success, failed, retried, timeout, skipped, cancelled or misfired.
        #[arg(long)]
        status: Option<String>,
        /// Rows to print, 1 to 10000.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Continue after the rows already seen: the cursor a truncated list
        /// names on stderr.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Run again, once each, the fires whose history rows match (failed ones
    /// by default): the job as it is now, the original scheduled time.
    Replay(super::bulk::ReplayArgs),
}

/// Most rows one `history list` prints; `--cursor` pages on.
const HISTORY_MAX_LIMIT: i64 = 10_000;

pub async fn history(conn: &Conn, command: HistoryCommand, json: bool) -> ExitCode {
    let (job, status, limit, cursor) = match command {
        HistoryCommand::List {
            job,
            status,
            limit,
            cursor,
        } => (job, status, limit, cursor),
        HistoryCommand::Replay(args) => return super::bulk::replay(conn, args, json).await,
    };
    let parsed = match status.as_deref().map(|s| (s, HistoryStatus::parse(s))) {
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
    if !(1..=HISTORY_MAX_LIMIT).contains(&limit) {
        return fail(
            EXIT_USAGE,
            &format!(
                "--limit {limit}: expected 1 to {HISTORY_MAX_LIMIT} (page on with the --cursor a truncated list names)"
            ),
        );
    }
    let start = match cursor.as_deref().map(|c| (c, views::parse_cursor(c))) {
        Some((c, None)) => {
            return fail(
                EXIT_USAGE,
                &format!("--cursor {c:?}: not a cursor history list printed"),
            );
        }
        Some((_, parsed)) => parsed,
        None => None,
    };
    let rows = async {
        Ok::<(Value, Option<String>), CliError>(match conn.open().await? {
            Target::Local { admin, .. } => {
                let (rows, next) = views::history_page(
                    admin.store().as_ref(),
                    job.as_deref(),
                    parsed,
                    limit,
                    start.as_ref(),
                )
                .await?;
                (
                    Value::Array(rows.iter().map(views::history_view).collect()),
                    next,
                )
            }
            Target::Remote(r) => {
                // The API pages by at most 1000 rows: follow the cursor.
                let mut out = Vec::new();
                let mut cursor = cursor.clone();
                loop {
                    let want = (limit - i64::try_from(out.len()).unwrap_or(0)).min(1000);
                    let mut path = format!("/api/v1/history?limit={want}");
                    for (name, value) in [("job", &job), ("status", &status), ("cursor", &cursor)] {
                        if let Some(v) = value {
                            path.push_str(&format!("&{name}={}", remote::encode(v)));
                        }
                    }
                    let mut page = r.get(&path).await?;
                    if let Value::Array(rows) = page["items"].take() {
                        out.extend(rows);
                    }
                    cursor = page["next_cursor"].as_str().map(str::to_string);
                    if cursor.is_none() || i64::try_from(out.len()).unwrap_or(i64::MAX) >= limit {
                        break;
                    }
                }
                (Value::Array(out), cursor)
            }
        })
    }
    .await;
    finish(rows.map(|(rows, next)| {
        // Said on stderr, so stdout stays the rows (or one JSON array) alone.
        if let Some(next) = next {
            eprintln!(
                "quartzite: {} row(s) shown and more match; the next page: --cursor {next}",
                items(&rows).len()
            );
        }
        emit(json, &rows, print_history)
    }))
}

pub async fn trigger(conn: &Conn, command: super::TriggerCommand, json: bool) -> ExitCode {
    use super::TriggerCommand;
    let target = match conn.open().await {
        Ok(t) => t,
        Err(e) => return fail(e.code, &e.message),
    };
    let result = async {
        match command {
            TriggerCommand::Preview(_) => {
                Err(CliError::new(EXIT_USAGE, "preview needs no database"))
            }
            TriggerCommand::List { job } => {
                let triggers = match &target {
                    Target::Local { admin, .. } => admin.trigger_list(job.as_deref()).await?,
                    Target::Remote(r) => {
                        let path = match &job {
                            Some(j) => format!("/api/v1/triggers?job={}", remote::encode(j)),
                            None => "/api/v1/triggers".into(),
                        };
                        r.get(&path).await?["items"].take()
                    }
                };
                Ok(emit(json, &triggers, print_triggers))
            }
            TriggerCommand::Pause { key } => trigger_pause(&target, &key, true, json).await,
            TriggerCommand::Resume { key } => trigger_pause(&target, &key, false, json).await,
        }
    }
    .await;
    finish(result)
}

async fn trigger_pause(
    target: &Target,
    key: &str,
    paused: bool,
    json: bool,
) -> Result<ExitCode, CliError> {
    let done = match target {
        Target::Local { admin, caller } => admin.trigger_pause(caller, key, paused).await?.body,
        Target::Remote(r) => {
            let verb = if paused { "pause" } else { "resume" };
            r.post(&format!("/api/v1/triggers/{}/{verb}", key_path(key)?))
                .await?
        }
    };
    let verb = if paused { "paused" } else { "resumed" };
    Ok(emit(json, &done, |_| outln!("{verb} {key}")))
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Nodes with their version, contract versions, last check-in, running fires
    /// and how many modules each has compiled (`--json` lists their digests).
    Nodes {
        /// A node silent for longer than this many ms is shown dead.
        #[arg(long, default_value_t = 2_000)]
        dead_after_ms: i64,
    },
    /// Cluster locks held now, with holder, fencing token and lease.
    Locks,
}

pub async fn cluster(conn: &Conn, command: ClusterCommand, json: bool) -> ExitCode {
    let result = async {
        let target = conn.open().await?;
        match command {
            ClusterCommand::Nodes { dead_after_ms } => {
                let nodes = match &target {
                    Target::Local { admin, .. } => {
                        serde_json::to_value(admin.store().node_list(dead_after_ms).await?)
                            .unwrap_or_default()
                    }
                    Target::Remote(r) => r
                        .get(&format!(
                            "/api/v1/cluster/nodes?dead_after_ms={dead_after_ms}"
                        ))
                        .await?["items"]
                        .take(),
                };
                Ok(emit(json, &nodes, |nodes| {
                    let rows: Vec<Vec<String>> = items(nodes)
                        .iter()
                        .map(|n| {
                            vec![
                                cell(&n["node_id"]),
                                if n["alive"] == true {
                                    "alive".into()
                                } else {
                                    "dead".into()
                                },
                                cell(&n["version"]),
                                cell(&n["wit_versions"]),
                                fmt_ms(n["heartbeat_ms"].as_i64()),
                                cell(&n["running"]),
                                n["modules"].as_array().map_or(0, Vec::len).to_string(),
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
                }))
            }
            ClusterCommand::Locks => {
                let locks = match &target {
                    Target::Local { admin, .. } => {
                        serde_json::to_value(admin.store().lock_list().await?).unwrap_or_default()
                    }
                    Target::Remote(r) => r.get("/api/v1/cluster/locks").await?["items"].take(),
                };
                Ok(emit(json, &locks, |locks| {
                    let rows: Vec<Vec<String>> = items(locks)
                        .iter()
                        .map(|l| {
                            vec![
                                cell(&l["name"]),
                                l["holder"].as_str().unwrap_or_default().to_string(),
                                cell(&l["token"]),
                                fmt_ms(l["acquired_ms"].as_i64()),
                                fmt_ms(l["lease_until_ms"].as_i64()),
                            ]
                        })
                        .collect();
                    print_table(&["LOCK", "HOLDER", "TOKEN", "SINCE", "LEASE UNTIL"], &rows);
                }))
            }
        }
    }
    .await;
    finish(result)
}

/// Validates and stores a module file, here or on the server: the same checks
/// either way. Returns `{"module": record, "describe": info}`.
async fn module_push(
    target: &Target,
    file: &Path,
    name: Option<&str>,
    version: Option<&str>,
) -> Result<Value, CliError> {
    let pushed = match target {
        Target::Local { admin, caller } => {
            let bytes = match read_module(file).await {
                Ok(b) => b,
                Err(e) => return Err(CliError::new(EXIT_SKIPPED, format!("rejected: {e}"))),
            };
            match admin.module_push(caller, bytes, name, version).await {
                Ok(done) => Ok(done.body),
                // As flags: `--version ...`.
                Err(AdminError::Invalid { message, .. }) => Err(CliError::new(
                    EXIT_USAGE,
                    format!("--{}", message.replacen(": ", " ", 1)),
                )),
                Err(e) => Err(push_refused(e.into())),
            }
        }
        Target::Remote(r) => {
            let bytes = match read_module(file).await {
                Ok(b) => b,
                Err(e) => return Err(CliError::new(EXIT_SKIPPED, format!("rejected: {e}"))),
            };
            let mut path = "/api/v1/modules".to_string();
            let mut sep = '?';
            for (key, value) in [("name", name), ("version", version)] {
                if let Some(v) = value {
                    path.push_str(&format!("{sep}{key}={}", remote::encode(v)));
                    sep = '&';
                }
            }
            r.call(reqwest::Method::POST, &path, Some(Body::Wasm(bytes)))
                .await
                .map_err(push_refused)
        }
    };
    pushed.map_err(|e| CliError::new(e.code, format!("{}: {}", file.display(), e.message)))
}

/// A version that exists with other bytes is refused like a bad module.
fn push_refused(e: CliError) -> CliError {
    if e.api_code.as_deref() == Some("conflict") {
        CliError {
            code: EXIT_SKIPPED,
            ..e
        }
    } else {
        e
    }
}

pub async fn module(conn: &Conn, command: super::ModuleCommand, json: bool) -> ExitCode {
    use super::ModuleCommand;
    let result = async {
        let target = conn.open().await?;
        match command {
            ModuleCommand::Inspect(_) => {
                Err(CliError::new(EXIT_USAGE, "inspect needs no database"))
            }
            ModuleCommand::Push {
                file,
                name,
                version,
            } => {
                let pushed =
                    module_push(&target, &file, name.as_deref(), version.as_deref()).await?;
                Ok(emit(json, &pushed, |v| {
                    let (m, d) = (&v["module"], &v["describe"]);
                    outln!(
                        "pushed {}@{} sha256:{} (contract {}, describe: {} {})",
                        cell(&m["name"]),
                        cell(&m["version"]),
                        cell(&m["digest"]),
                        cell(&m["wit_version"]),
                        cell(&d["name"]),
                        cell(&d["version"])
                    );
                }))
            }
            ModuleCommand::List => {
                let modules = match &target {
                    Target::Local { admin, .. } => admin.module_list(None).await?,
                    Target::Remote(r) => r.get("/api/v1/modules").await?["items"].take(),
                };
                Ok(emit(json, &modules, |modules| {
                    let rows: Vec<Vec<String>> = items(modules)
                        .iter()
                        .map(|m| {
                            let digest = cell(&m["digest"]);
                            vec![
                                cell(&m["name"]),
                                cell(&m["version"]),
                                format!("sha256:{}", digest.chars().take(16).collect::<String>()),
                                cell(&m["wit_version"]),
                                cell(&m["size"]),
                                cell(&m["created_at"]),
                                if m["current"].as_bool() == Some(true) {
                                    "current".into()
                                } else if m["withdrawn"].as_bool() == Some(true) {
                                    "withdrawn".into()
                                } else {
                                    String::new()
                                },
                            ]
                        })
                        .collect();
                    print_table(
                        &[
                            "MODULE", "VERSION", "DIGEST", "WIT", "BYTES", "PUSHED", "STATE",
                        ],
                        &rows,
                    );
                }))
            }
            ModuleCommand::Rollback { name, to } => {
                let record = match &target {
                    Target::Local { admin, caller } => admin
                        .module_rollback(caller, &name, to.as_deref())
                        .await?
                        .body["module"]
                        .take(),
                    Target::Remote(r) => {
                        let mut path =
                            format!("/api/v1/modules/{}/rollback", remote::encode(&name));
                        if let Some(v) = &to {
                            path.push_str(&format!("?to={}", remote::encode(v)));
                        }
                        r.call(reqwest::Method::POST, &path, None).await?["module"].take()
                    }
                };
                Ok(emit(json, &record, |m| {
                    outln!(
                        "{} now means {}@{} sha256:{} from the next fire",
                        cell(&m["name"]),
                        cell(&m["name"]),
                        cell(&m["version"]),
                        cell(&m["digest"])
                    );
                }))
            }
        }
    }
    .await;
    finish(result)
}
