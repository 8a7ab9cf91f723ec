//! `quartzite event ...` and `quartzite alert ...`: on the database (`--db`)
//! or through a server (`--server`), with the same JSON and exit codes.

use super::ops::{Conn, Target, cell, emit, finish, fmt_ms, items, print_table};
use super::remote::{Body, CliError, encode};
use super::{EXIT_FAILED, EXIT_USAGE};
use crate::store::events::{DeliveryFilter, DeliveryState};
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum EventCommand {
    /// Emit an event: every job subscribed to NAME fires once.
    Emit {
        /// The event's name, e.g. order.created.
        name: String,
        /// The payload, JSON [default: null].
        #[arg(long)]
        data: Option<String>,
        /// An idempotency key: the same key for the same name again from the
        /// operator (CLI or API) starts nothing; jobs' keys are their own.
        #[arg(long)]
        key: Option<String>,
    },
    /// List accepted events, newest first.
    List {
        /// Only events of this name.
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
}

#[derive(Debug, Subcommand)]
pub enum AlertCommand {
    /// List alert rules.
    List,
    /// Add or replace an alert rule.
    Add {
        /// The rule's name.
        name: String,
        /// permanent-failure, consecutive-failures, misfire or noop-skip.
        #[arg(long)]
        on: String,
        /// A job key, GROUP/* or * [default: every job].
        #[arg(long)]
        job: Option<String>,
        /// For consecutive-failures: how many failed runs in a row.
        #[arg(long)]
        after: Option<u32>,
        /// Where alerts are POSTed (http:// or https://).
        #[arg(long)]
        webhook: String,
    },
    /// Delete an alert rule.
    Delete { name: String },
    /// Send a sample alert to a rule's webhook now, and record it.
    Test { rule: String },
    /// List alert deliveries, newest first.
    Deliveries {
        #[arg(long)]
        rule: Option<String>,
        /// pending, sent or failed.
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
}

fn path_part(text: &str) -> String {
    encode(text)
}

pub async fn event(conn: &Conn, command: EventCommand, json: bool) -> ExitCode {
    let result = async {
        let target = conn.open().await?;
        match command {
            EventCommand::Emit { name, data, key } => {
                let value = match &target {
                    Target::Local { admin, caller } => {
                        admin
                            .event_emit(caller, &name, data.as_deref(), key.as_deref())
                            .await?
                            .body
                    }
                    Target::Remote(r) => {
                        let payload: Value =
                            match data.as_deref().map(str::trim).filter(|d| !d.is_empty()) {
                                Some(d) => serde_json::from_str(d).map_err(|e| {
                                    CliError::new(EXIT_USAGE, format!("--data is not JSON: {e}"))
                                })?,
                                None => Value::Null,
                            };
                        let mut path = format!("/api/v1/events/{}", path_part(&name));
                        if let Some(k) = &key {
                            path.push_str(&format!("?key={}", encode(k)));
                        }
                        r.call(Method::POST, &path, Some(Body::Json(payload)))
                            .await?
                    }
                };
                Ok(emit(json, &value, |v| {
                    let fires = items(&v["fires"]).len();
                    if v["duplicate"] == true {
                        outln!(
                            "event {} was already emitted with this key as {}: nothing new started",
                            cell(&v["event"]),
                            cell(&v["event_id"])
                        );
                    } else {
                        outln!(
                            "event {} accepted as {}: {fires} fire(s)",
                            cell(&v["event"]),
                            cell(&v["event_id"])
                        );
                        for f in items(&v["fires"]) {
                            outln!("  {}  {}", cell(&f["job_key"]), cell(&f["fire_id"]));
                        }
                        for p in items(&v["paused"]) {
                            outln!("  {} is paused: recorded as skipped", cell(p));
                        }
                    }
                }))
            }
            EventCommand::List { name, limit } => {
                let limit = limit.clamp(1, 1000);
                let value = match &target {
                    Target::Local { admin, .. } => admin.event_list(name.as_deref(), limit).await?,
                    Target::Remote(r) => {
                        let mut path = format!("/api/v1/events?limit={limit}");
                        if let Some(n) = &name {
                            path.push_str(&format!("&name={}", encode(n)));
                        }
                        r.get(&path).await?["items"].take()
                    }
                };
                Ok(emit(json, &value, |v| {
                    let rows: Vec<Vec<String>> = items(v)
                        .iter()
                        .map(|e| {
                            vec![
                                cell(&e["created_at"]),
                                cell(&e["name"]),
                                cell(&e["event_id"]),
                                cell(&e["key"]),
                                cell(&e["fires"]),
                                cell(&e["depth"]),
                                cell(&e["source_job"]),
                            ]
                        })
                        .collect();
                    print_table(
                        &["ACCEPTED", "EVENT", "ID", "KEY", "FIRES", "DEPTH", "FROM"],
                        &rows,
                    );
                }))
            }
        }
    }
    .await;
    finish(result)
}

pub async fn alert(conn: &Conn, command: AlertCommand, json: bool) -> ExitCode {
    let result = async {
        let target = conn.open().await?;
        match command {
            AlertCommand::List => {
                let value = match &target {
                    Target::Local { admin, .. } => admin.alert_list().await?,
                    Target::Remote(r) => r.get("/api/v1/alerts").await?["items"].take(),
                };
                Ok(emit(json, &value, |v| {
                    let rows: Vec<Vec<String>> = items(v)
                        .iter()
                        .map(|r| {
                            vec![
                                cell(&r["name"]),
                                cell(&r["condition"]),
                                r["job_pattern"].as_str().unwrap_or("*").to_string(),
                                cell(&r["threshold"]),
                                cell(&r["webhook"]),
                                cell(&r["source"]),
                            ]
                        })
                        .collect();
                    print_table(&["RULE", "ON", "JOB", "AFTER", "WEBHOOK", "SOURCE"], &rows);
                }))
            }
            AlertCommand::Add {
                name,
                on,
                job,
                after,
                webhook,
            } => {
                let value = match &target {
                    Target::Local { admin, caller } => {
                        admin
                            .alert_put(caller, &name, &on, job.as_deref(), after, &webhook)
                            .await?
                            .body
                    }
                    Target::Remote(r) => {
                        let body =
                            json!({ "on": on, "job": job, "after": after, "webhook": webhook });
                        r.call(
                            Method::PUT,
                            &format!("/api/v1/alerts/{}", path_part(&name)),
                            Some(Body::Json(body)),
                        )
                        .await?
                    }
                };
                Ok(emit(json, &value, |v| {
                    outln!("alert rule {} saved", cell(&v["name"]))
                }))
            }
            AlertCommand::Delete { name } => {
                let value = match &target {
                    Target::Local { admin, caller } => {
                        admin.alert_delete(caller, &name).await?.body
                    }
                    Target::Remote(r) => {
                        r.call(
                            Method::DELETE,
                            &format!("/api/v1/alerts/{}", path_part(&name)),
                            None,
                        )
                        .await?
                    }
                };
                Ok(emit(json, &value, |v| {
                    outln!("alert rule {} deleted", cell(&v["name"]))
                }))
            }
            AlertCommand::Test { rule } => {
                let value = match &target {
                    Target::Local { admin, caller } => admin.alert_test(caller, &rule).await?.body,
                    Target::Remote(r) => {
                        r.post(&format!("/api/v1/alerts/{}/test", path_part(&rule)))
                            .await?
                    }
                };
                let sent = value["state"] == "sent";
                let code = emit(json, &value, |v| {
                    if sent {
                        outln!(
                            "sample alert sent to {} ({})",
                            cell(&v["webhook"]),
                            cell(&v["status"])
                        );
                    } else {
                        outln!(
                            "sample alert to {} failed: {}",
                            cell(&v["webhook"]),
                            cell(&v["error"])
                        );
                    }
                });
                Ok(if sent {
                    code
                } else {
                    ExitCode::from(EXIT_FAILED)
                })
            }
            AlertCommand::Deliveries { rule, state, limit } => {
                let parsed = match state.as_deref() {
                    None => None,
                    Some(s) => Some(DeliveryState::parse(s).ok_or_else(|| {
                        CliError::new(
                            EXIT_USAGE,
                            format!("--state {s:?}: expected pending, sent or failed"),
                        )
                    })?),
                };
                let limit = limit.clamp(1, 1000);
                let value = match &target {
                    Target::Local { admin, .. } => {
                        admin
                            .delivery_list(&DeliveryFilter {
                                rule: rule.clone(),
                                state: parsed,
                                limit,
                            })
                            .await?
                    }
                    Target::Remote(r) => {
                        let mut path = format!("/api/v1/alerts/deliveries?limit={limit}");
                        for (name, v) in [("rule", &rule), ("state", &state)] {
                            if let Some(v) = v {
                                path.push_str(&format!("&{name}={}", encode(v)));
                            }
                        }
                        r.get(&path).await?["items"].take()
                    }
                };
                Ok(emit(json, &value, |v| {
                    let rows: Vec<Vec<String>> = items(v)
                        .iter()
                        .map(|d| {
                            vec![
                                cell(&d["created_at"]),
                                cell(&d["rule"]),
                                cell(&d["job_key"]),
                                cell(&d["state"]),
                                cell(&d["attempts"]),
                                cell(&d["last_status"]),
                                fmt_ms(d["next_at_ms"].as_i64()),
                                cell(&d["last_error"]),
                            ]
                        })
                        .collect();
                    print_table(
                        &[
                            "CREATED", "RULE", "JOB", "STATE", "ATTEMPTS", "STATUS", "NEXT",
                            "ERROR",
                        ],
                        &rows,
                    );
                }))
            }
        }
    }
    .await;
    finish(result)
}
