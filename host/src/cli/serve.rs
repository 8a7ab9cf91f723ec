//! `quartzite serve`: flags, config file and environment turned into the
//! node's options; the node itself is built and run by [`crate::node`].

use super::{EXIT_FAILED, EXIT_USAGE, fail};
use crate::node::{self, ServeOptions};
use crate::runtime::RuntimeConfig;
use crate::store;
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

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
    /// Address of the admin API, /metrics and health endpoints [default: 127.0.0.1:7878].
    /// Port 0 picks a free port.
    #[arg(long, env = "QUARTZITE_LISTEN")]
    pub listen: Option<String>,
    /// Serve no HTTP at all (no admin API, metrics or health endpoints).
    #[arg(long, conflicts_with = "listen")]
    pub no_api: bool,
    /// The admin API's bearer token; prefer the environment variable, which `ps` does not show.
    #[arg(long, env = "QUARTZITE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Run and advertise contract versions only up to `MAJOR.MINOR` (rolling
    /// upgrades: fires of newer modules are left to nodes that run them)
    /// [default: the host's own; config `scheduler.max_wit`].
    #[arg(long, env = "QUARTZITE_MAX_WIT", value_name = "MAJOR.MINOR")]
    pub max_wit: Option<String>,
    /// Watch this directory: each `*.wasm` file is validated and pushed (named
    /// by its file stem) at start and whenever it changes; a bad file is logged
    /// and changes nothing [config `modules_dir`].
    #[arg(long, env = "QUARTZITE_MODULES_DIR", value_name = "DIR")]
    pub modules_dir: Option<PathBuf>,
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

pub async fn serve(db: Option<&str>, cache_dir: Option<PathBuf>, args: ServeArgs) -> ExitCode {
    // Flags (and their environment variables) beat the config file.
    let mut config = match crate::config::load(args.config.as_deref()) {
        Ok(loaded) => loaded.config,
        Err(errors) => return fail(EXIT_USAGE, errors.to_string().trim_end()),
    };
    let db = db
        .map(str::to_string)
        .or_else(|| config.db.clone())
        .unwrap_or_else(|| store::DEFAULT_URL.into());
    let db = db.as_str();
    let manifest = args
        .manifest
        .clone()
        .or_else(|| config.manifest.clone())
        .or_else(|| {
            Path::new("jobs.toml")
                .is_file()
                .then(|| PathBuf::from("jobs.toml"))
        });
    let node_id = args
        .node_id
        .clone()
        .or_else(|| config.node_id.clone())
        .unwrap_or_else(default_node_id);
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
        standby: args.standby || args.no_scheduler || config.standby,
        scheduler: config.scheduler,
        runtime: RuntimeConfig {
            engine: config.runtime,
            cache_dir: cache_dir
                .or(config.cache_dir)
                .or_else(super::default_cache_dir),
            node_id: node_id.clone(),
        },
    };
    let api = if args.no_api {
        None
    } else {
        let listen = args
            .listen
            .as_deref()
            .or(config.api.listen.as_deref())
            .unwrap_or(crate::api::DEFAULT_LISTEN);
        let token = args
            .admin_token
            .as_deref()
            .or(config.api.admin_token.as_deref());
        match crate::api::ApiOptions::parse(listen, token, config.api.admin_token_sha256.as_deref())
        {
            Ok(a) => match crate::api::auth::Auth::new(a.listen, a.token_sha256) {
                Ok(_) => Some(crate::api::ApiOptions {
                    allowed_hosts: config.api.allowed_hosts.clone(),
                    ..a
                }),
                Err(e) => return fail(EXIT_USAGE, &format!("not started: {e}")),
            },
            Err(e) => return fail(EXIT_USAGE, &e),
        }
    };
    let modules_dir = args.modules_dir.clone().or(config.modules_dir.clone());
    if let Some(dir) = &modules_dir
        && let Err(e) = crate::engine::watch::check_dir(dir)
    {
        return fail(EXIT_USAGE, &format!("not started: {e}"));
    }
    let node = match node::start_with_api(&options, api).await {
        Ok(node) => node,
        // A rejected manifest (or a module file it names) is bad input, as a
        // bad config is: exit 2. Anything else failed while starting: exit 1.
        Err(e @ (node::BootError::Manifest(_) | node::BootError::Module { .. })) => {
            return fail(EXIT_USAGE, &format!("not started: {e}"));
        }
        Err(e) => return fail(EXIT_FAILED, &format!("not started: {e}")),
    };
    tracing::info!(node = %node_id, db = %store::redact(db), "quartzite serving");
    node::serve(node, options.standby, modules_dir).await;
    ExitCode::SUCCESS
}
