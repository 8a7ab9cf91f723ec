//! `quartzite secret ...`: set, list and delete stored secrets, on the
//! database (`--db`, sealing with this process's key) or through a server
//! (`--server`, which seals with its own). Values go in; nothing shows them.

use super::ops::{Conn, Target, cell, emit, finish, items, print_table};
use super::remote::{Body, CliError};
use super::{EXIT_FAILED, EXIT_USAGE};
use crate::secrets::{self, SecretError, SecretKeys};
use clap::Subcommand;
use reqwest::Method;
use serde_json::json;
use std::io::Read;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Store a new version of a secret; the value is read from stdin.
    Set {
        /// The secret's name, e.g. SLACK_TOKEN.
        name: String,
        /// Read the value from this environment variable instead of stdin.
        #[arg(long, value_name = "VAR")]
        from_env: Option<String>,
    },
    /// List secrets: names, versions and when they were set (never values).
    List,
    /// Delete a secret: jobs whose grants name it fail until it is set again.
    Delete { name: String },
}

fn secret_error(e: SecretError) -> CliError {
    match e {
        SecretError::Store(s) => CliError::from(s),
        SecretError::Invalid(_) | SecretError::BadValue(_) | SecretError::BadKey(_) => {
            CliError::new(EXIT_USAGE, e.to_string())
        }
        other => CliError::new(EXIT_FAILED, other.to_string()),
    }
}

fn read_value(from_env: Option<&str>) -> Result<zeroize::Zeroizing<String>, CliError> {
    if let Some(var) = from_env {
        return std::env::var(var)
            .map(zeroize::Zeroizing::new)
            .map_err(|_| {
                CliError::new(
                    EXIT_USAGE,
                    format!("--from-env {var}: the variable is not set or not UTF-8"),
                )
            });
    }
    let mut value = zeroize::Zeroizing::new(String::new());
    std::io::stdin()
        .take(secrets::MAX_SECRET_VALUE as u64 + 2)
        .read_to_string(&mut value)
        .map_err(|e| CliError::new(EXIT_USAGE, format!("reading the value from stdin: {e}")))?;
    Ok(value)
}

pub async fn secret(conn: &Conn, command: SecretCommand, json: bool) -> ExitCode {
    let result = async {
        match command {
            SecretCommand::Set { name, from_env } => {
                crate::grants::check_secret_name(&name)
                    .map_err(|m| CliError::new(EXIT_USAGE, m))?;
                let value = read_value(from_env.as_deref())?;
                let view = match conn.open().await? {
                    Target::Local { admin, caller } => {
                        let keys = SecretKeys::from_env().map_err(secret_error)?;
                        admin.secret_set(&caller, &keys, &name, &value).await?.body
                    }
                    Target::Remote(r) => {
                        r.call(
                            Method::PUT,
                            &format!("/api/v1/secrets/{name}"),
                            Some(Body::Json(json!({ "value": value.as_str() }))),
                        )
                        .await?
                    }
                };
                Ok(emit(json, &view, |v| {
                    outln!(
                        "secret {} set: version {}",
                        cell(&v["name"]),
                        cell(&v["version"])
                    );
                }))
            }
            SecretCommand::List => {
                let value = match conn.open().await? {
                    Target::Local { admin, .. } => admin.secret_list().await?,
                    Target::Remote(r) => r.get("/api/v1/secrets").await?["items"].take(),
                };
                Ok(emit(json, &value, |v| {
                    let rows: Vec<Vec<String>> = items(v)
                        .iter()
                        .map(|s| vec![cell(&s["name"]), cell(&s["version"]), cell(&s["set_at"])])
                        .collect();
                    print_table(&["NAME", "VERSION", "SET"], &rows);
                }))
            }
            SecretCommand::Delete { name } => {
                let value = match conn.open().await? {
                    Target::Local { admin, caller } => {
                        admin.secret_delete(&caller, &name).await?.body
                    }
                    Target::Remote(r) => {
                        r.call(Method::DELETE, &format!("/api/v1/secrets/{name}"), None)
                            .await?
                    }
                };
                Ok(emit(json, &value, |v| {
                    outln!("deleted secret {}", cell(&v["deleted"]))
                }))
            }
        }
    }
    .await;
    finish(result)
}
