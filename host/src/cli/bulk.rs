//! `job backfill`, `history replay` and `fire cancel`: the operations on
//! many fires (`admin::bulk`), through the database or a server alike.

use super::fail;
use super::ops::{Conn, Target, cell, emit, finish, items, key_path};
use super::remote::CliError;
use crate::admin::bulk::{BackfillRequest, CancelRequest, ReplayRequest};
use clap::{Args, Subcommand};
use serde_json::Value;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct BackfillArgs {
    /// The job key, GROUP/NAME.
    pub key: String,
    /// The range's start, included (RFC 3339).
    #[arg(long)]
    pub from: String,
    /// The range's end, excluded (RFC 3339, at most now).
    #[arg(long)]
    pub to: String,
    /// allow: side by side, whatever the job's overlap policy; buffer: one at
    /// a time in scheduled order, each waiting for any run of the job; skip:
    /// a time whose turn finds a run of the job running is recorded as skipped.
    #[arg(long, default_value = "buffer")]
    pub overlap: String,
    /// Refuse a range of more fire times than this (at most 100000).
    #[arg(long, default_value_t = crate::admin::bulk::DEFAULT_BACKFILL_MAX)]
    pub max: u64,
    /// Print the times; create nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Subcommand)]
pub enum FireCommand {
    /// Delete waiting fires by filter (never a claimed or running one), each
    /// recorded in history as cancelled.
    Cancel {
        /// GROUP/NAME, GROUP/* or *.
        #[arg(long)]
        job: String,
        /// Only the fires of this trigger key (GROUP/NAME:TRIGGER).
        #[arg(long)]
        trigger: Option<String>,
        /// Only fires scheduled before: RFC 3339, or a duration before now (e.g. 1h).
        #[arg(long)]
        before: Option<String>,
        /// Only fires of this origin: plain, backfill or replay.
        #[arg(long)]
        origin: Option<String>,
        /// Why, recorded with each cancelled fire.
        #[arg(long)]
        reason: Option<String>,
    },
}

/// `history replay`'s arguments.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// GROUP/NAME, GROUP/* or *.
    #[arg(long)]
    pub job: String,
    /// History statuses to replay, comma-separated.
    #[arg(long, default_value = "failed")]
    pub status: String,
    /// Rows started since: RFC 3339, or a duration before now (e.g. 24h).
    #[arg(long)]
    pub since: String,
    /// Rows started before: RFC 3339, or a duration before now.
    #[arg(long)]
    pub until: Option<String>,
    /// Most history rows read, 1 to 10000.
    #[arg(long, default_value_t = crate::admin::bulk::DEFAULT_REPLAY_LIMIT)]
    pub limit: i64,
}

async fn open(conn: &Conn) -> Result<Target, CliError> {
    conn.open().await
}

fn to_body<T: serde::Serialize>(request: &T) -> Option<Value> {
    serde_json::to_value(request).ok()
}

/// `quartzite job backfill`.
pub async fn backfill(conn: &Conn, args: BackfillArgs, json: bool) -> ExitCode {
    let request = BackfillRequest {
        from: args.from,
        to: args.to,
        overlap: Some(args.overlap),
        max: Some(args.max),
        dry_run: args.dry_run,
    };
    let key = args.key;
    finish(
        async {
            let done = match open(conn).await? {
                Target::Local { admin, caller } => {
                    admin.job_backfill(&caller, &key, &request).await?.body
                }
                Target::Remote(r) => {
                    let path = format!("/api/v1/jobs/{}/backfill", key_path(&key)?);
                    r.post_json(&path, to_body(&request)).await?
                }
            };
            Ok::<ExitCode, CliError>(emit(json, &done, |v| {
                if v["dry_run"].as_bool() == Some(true) {
                    for t in items(&v["times"]) {
                        outln!("{}  {}", cell(&t["scheduled_at"]), cell(&t["trigger_key"]));
                    }
                    outln!(
                        "{} fire time(s) of {key} in [{}, {}); nothing created (dry run)",
                        cell(&v["count"]),
                        cell(&v["from"]),
                        cell(&v["to"])
                    );
                } else {
                    outln!(
                        "backfill of {key}: {} fire(s) created, {} time(s) had a fire already (overlap {})",
                        cell(&v["created"]),
                        cell(&v["existing"]),
                        cell(&v["overlap"])
                    );
                }
            }))
        }
        .await,
    )
}

/// `quartzite history replay`.
pub async fn replay(conn: &Conn, args: ReplayArgs, json: bool) -> ExitCode {
    if !(1..=crate::admin::bulk::MAX_REPLAY_LIMIT).contains(&args.limit) {
        return fail(
            super::EXIT_USAGE,
            &format!(
                "--limit {}: expected 1 to {}",
                args.limit,
                crate::admin::bulk::MAX_REPLAY_LIMIT
            ),
        );
    }
    let request = ReplayRequest {
        job: args.job,
        status: Some(args.status),
        since: args.since,
        until: args.until,
        limit: Some(args.limit),
    };
    finish(
        async {
            let done = match open(conn).await? {
                Target::Local { admin, caller } => {
                    admin.history_replay(&caller, &request).await?.body
                }
                Target::Remote(r) => {
                    r.post_json("/api/v1/history/replay", to_body(&request))
                        .await?
                }
            };
            Ok::<ExitCode, CliError>(emit(json, &done, |v| {
                for f in items(&v["fires"]) {
                    outln!(
                        "replaying {} of {} as fire {}",
                        cell(&f["replay_of"]),
                        cell(&f["job_key"]),
                        cell(&f["fire_id"])
                    );
                }
                for f in items(&v["not_started"]) {
                    outln!(
                        "not replayed: {} of {}: {}",
                        cell(&f["replay_of"]),
                        cell(&f["job_key"]),
                        cell(&f["reason"])
                    );
                }
                outln!(
                    "{} fire(s) replayed, {} replayed before",
                    cell(&v["started"]),
                    cell(&v["already_replayed"])
                );
            }))
        }
        .await,
    )
}

/// `quartzite fire ...`.
pub async fn fire(conn: &Conn, command: FireCommand, json: bool) -> ExitCode {
    let FireCommand::Cancel {
        job,
        trigger,
        before,
        origin,
        reason,
    } = command;
    let request = CancelRequest {
        job,
        trigger,
        before,
        origin,
        reason,
    };
    finish(
        async {
            let done = match open(conn).await? {
                Target::Local { admin, caller } => admin.fire_cancel(&caller, &request).await?.body,
                Target::Remote(r) => {
                    r.post_json("/api/v1/fires/cancel", to_body(&request))
                        .await?
                }
            };
            Ok::<ExitCode, CliError>(emit(json, &done, |v| {
                outln!("cancelled {} waiting fire(s)", cell(&v["cancelled"]));
            }))
        }
        .await,
    )
}
