//! Jobs, groups and triggers: add, replace, pause, resume, delete, fire now;
//! and the reads both surfaces print.

use super::spec::JobSpec;
use super::views::{history_view, job_view, trigger_view};
use super::{Admin, AdminError, Caller, Done, Status};
use crate::domain;
use crate::store::model::HistoryFilter;
use serde_json::{Value, json};
use std::time::Duration;

/// Whether a job put may replace a job of the same key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutMode {
    /// Only a new job (`POST /api/v1/jobs`, audited `job.create`): an existing
    /// key is a conflict.
    Create,
    /// Add or replace (`PUT /api/v1/jobs/{key}`, `quartzite job add`, audited
    /// `job.update`).
    Upsert,
}

/// A `GROUP/NAME` job key, or the `key` field error.
///
/// # Errors
///
/// A key that breaks [`domain::check_job_key`].
pub fn check_key(key: &str) -> Result<(), AdminError> {
    domain::check_job_key(key).map(|_| ()).map_err(|reason| {
        AdminError::invalid(
            "key",
            format!("{key:?}: expected GROUP/NAME (letters, digits, _ . -): {reason}"),
        )
    })
}

/// What an operator may say with a pause (`job pause --note --until`, the
/// API's body): why, and when the pause ends by itself.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PauseRequest {
    /// Why, for whoever looks at the job next (at most 500 bytes).
    #[serde(default)]
    pub note: Option<String>,
    /// When the job resumes by itself: RFC 3339, or a duration from now (`2h`).
    #[serde(default)]
    pub until: Option<String>,
}

/// The longest pause note kept.
pub const MAX_PAUSE_NOTE: usize = 500;

impl PauseRequest {
    /// The note and end as stored, checked against the database time `now_ms`.
    ///
    /// # Errors
    ///
    /// A note too long, or an `until` that is unreadable or not in the future.
    pub fn checked(&self, now_ms: i64) -> Result<crate::store::model::PauseNote, AdminError> {
        let note = match self.note.as_deref().map(str::trim) {
            Some(n) if n.len() > MAX_PAUSE_NOTE => {
                return Err(AdminError::invalid(
                    "note",
                    format!("note is {} bytes; at most {MAX_PAUSE_NOTE}", n.len()),
                ));
            }
            Some("") | None => None,
            Some(n) => Some(crate::text::strip(n, MAX_PAUSE_NOTE)),
        };
        let until_ms = match self.until.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => {
                Some(pause_end(text, now_ms).map_err(|e| AdminError::invalid("until", e))?)
            }
        };
        Ok(crate::store::model::PauseNote { note, until_ms })
    }
}

/// When a pause given as `text` ends: an RFC 3339 time, or a duration from
/// `now_ms`; in the future either way.
fn pause_end(text: &str, now_ms: i64) -> Result<i64, String> {
    let at = match chrono::DateTime::parse_from_rfc3339(text) {
        Ok(t) => t.timestamp_millis(),
        Err(_) => {
            let d = domain::parse_duration_within(text, Duration::from_millis(1), domain::MAX_PERIOD)
                .map_err(|_| {
                    format!(
                        "until {text:?}: expected a time (RFC 3339, e.g. 2030-01-01T09:00:00Z) or a duration from now (e.g. 2h)"
                    )
                })?;
            now_ms.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        }
    };
    if at <= now_ms {
        return Err(format!("until {text:?} is not in the future"));
    }
    Ok(at)
}

fn check_group(group: &str) -> Result<(), AdminError> {
    domain::check_part(group).map_err(|reason| {
        AdminError::invalid(
            "group",
            format!("{group:?}: expected letters, digits, _ . - ({reason})"),
        )
    })
}

fn no_job(key: &str) -> AdminError {
    AdminError::NotFound(format!("no job {key:?}"))
}

/// The request as the audit row keeps it: job data only by its size (it can be
/// large, and is the job's own business).
fn spec_summary(spec: &JobSpec) -> Value {
    let mut v = serde_json::to_value(spec).unwrap_or_default();
    if let Some(obj) = v.as_object_mut()
        && let Some(data) = obj.remove("data")
    {
        obj.insert("data_bytes".into(), json!(data.to_string().len()));
    }
    v
}

impl Admin {
    /// All jobs with their triggers, as [`job_view`]s.
    ///
    /// # Errors
    ///
    /// When the store fails.
    pub async fn job_list(&self) -> Result<Value, AdminError> {
        let jobs = self.store.job_list().await?;
        let triggers = self.store.trigger_list(None).await?;
        Ok(Value::Array(
            jobs.iter().map(|j| job_view(j, &triggers)).collect(),
        ))
    }

    /// One job with its triggers and its latest ten history rows.
    ///
    /// # Errors
    ///
    /// A bad key, no such job, or a store error.
    pub async fn job_show(&self, key: &str) -> Result<Value, AdminError> {
        check_key(key)?;
        let Some(job) = self.store.job_get(key).await? else {
            return Err(no_job(key));
        };
        let triggers = self.store.trigger_list(Some(key)).await?;
        let history = self
            .store
            .history_list(&HistoryFilter {
                job_key: Some(key.to_string()),
                limit: 10,
                ..HistoryFilter::default()
            })
            .await?;
        let mut v = job_view(&job, &triggers);
        v["history"] = Value::Array(history.iter().map(history_view).collect());
        Ok(v)
    }

    /// Triggers (of one job, or all), as [`trigger_view`]s.
    ///
    /// # Errors
    ///
    /// When the store fails.
    pub async fn trigger_list(&self, job: Option<&str>) -> Result<Value, AdminError> {
        Ok(Value::Array(
            self.store
                .trigger_list(job)
                .await?
                .iter()
                .map(trigger_view)
                .collect(),
        ))
    }

    /// Adds (or, with [`PutMode::Upsert`], replaces) a job with its one
    /// trigger. What the spec leaves out is taken from the module's
    /// `describe()` hints, when the module is stored. The answer is the job's
    /// [`job_view`]: 201 when new, 200 when replaced.
    ///
    /// # Errors
    ///
    /// The first wrong field, an existing job for `Create`, or a store error.
    pub async fn job_put(
        &self,
        caller: &Caller,
        spec: &JobSpec,
        mode: PutMode,
    ) -> Result<Done, AdminError> {
        let action = match mode {
            PutMode::Create => "job.create",
            PutMode::Upsert => "job.update",
        };
        self.audited(caller, action, &spec.key, async {
            if spec.key.is_empty() {
                return Err(AdminError::invalid(
                    "key",
                    "key: missing; give the job key as GROUP/NAME",
                ));
            }
            let existed = self.store.job_get(&spec.key).await?.is_some();
            if existed && mode == PutMode::Create {
                return Err(AdminError::Conflict(format!(
                    "job {:?} exists; update it with PUT /api/v1/jobs/{}",
                    spec.key, spec.key
                )));
            }
            let mut spec = spec.clone();
            let scheduled = spec.cron.is_some()
                || spec.every.is_some()
                || spec.at.is_some()
                || spec.event.is_some();
            // The module's own hints stand in for what the request leaves out.
            if (spec.overlap.is_none() || !scheduled)
                && let Some(info) = crate::engine::modules::describe_stored(
                    &self.store,
                    &self.runtime()?,
                    &spec.module,
                )
                .await?
            {
                spec.apply_hints(&info);
            }
            let (job, trigger) = spec.build(caller.surface)?;
            self.check_calendars_exist(&trigger.spec.calendars).await?;
            // The grants are written with the job, in one statement.
            let job = job.with_grants(&spec.checked_grants()?);
            self.store.job_put(&job, &[trigger]).await?;
            self.scheduler.wake();
            let triggers = self.store.trigger_list(Some(&job.job_key)).await?;
            let status = if existed { Status::Ok } else { Status::Created };
            let view = job_view(&job, &triggers);
            Ok(Done::new(status, view, spec_summary(&spec)))
        })
        .await
    }

    /// Deletes a job and its triggers.
    ///
    /// # Errors
    ///
    /// A bad key, no such job, or a store error.
    pub async fn job_delete(&self, caller: &Caller, key: &str) -> Result<Done, AdminError> {
        self.audited(caller, "job.delete", key, async {
            check_key(key)?;
            if !self.store.job_delete(key).await? {
                return Err(no_job(key));
            }
            self.scheduler.wake();
            Ok(Done::new(Status::Ok, json!({ "deleted": key }), json!({})))
        })
        .await
    }

    /// Pauses or resumes a job.
    ///
    /// # Errors
    ///
    /// A bad key, no such job, or a store error.
    pub async fn job_pause(
        &self,
        caller: &Caller,
        key: &str,
        paused: bool,
        request: &PauseRequest,
    ) -> Result<Done, AdminError> {
        let action = if paused { "job.pause" } else { "job.resume" };
        self.audited(caller, action, key, async {
            check_key(key)?;
            let note = request.checked(self.store.now_ms().await?)?;
            if !self.store.job_pause(key, paused, &note).await? {
                return Err(no_job(key));
            }
            self.scheduler.wake();
            let state = if paused { "paused" } else { "active" };
            let mut body = json!({ "job_key": key, "state": state });
            if paused {
                body["pause_note"] = json!(note.note);
                body["paused_until_ms"] = json!(note.until_ms);
            }
            let summary = json!({ "note": note.note, "until_ms": note.until_ms });
            Ok(Done::new(Status::Ok, body, summary))
        })
        .await
    }

    /// Pauses or resumes every job of a group; answers how many.
    ///
    /// # Errors
    ///
    /// A bad group name, or a store error.
    pub async fn group_pause(
        &self,
        caller: &Caller,
        group: &str,
        paused: bool,
        request: &PauseRequest,
    ) -> Result<Done, AdminError> {
        let action = if paused {
            "group.pause"
        } else {
            "group.resume"
        };
        self.audited(caller, action, group, async {
            check_group(group)?;
            let note = request.checked(self.store.now_ms().await?)?;
            let n = self.store.group_pause(group, paused, &note).await?;
            self.scheduler.wake();
            Ok(Done::new(
                Status::Ok,
                json!({ "group": group, "jobs": n }),
                json!({ "jobs": n, "note": note.note, "until_ms": note.until_ms }),
            ))
        })
        .await
    }

    /// Fires a job now, once; answers the fire's id (202: it runs soon).
    ///
    /// # Errors
    ///
    /// A bad key, no such job, or a store error.
    pub async fn job_run_now(&self, caller: &Caller, key: &str) -> Result<Done, AdminError> {
        self.audited(caller, "job.run_now", key, async {
            check_key(key)?;
            if self.store.job_get(key).await?.is_none() {
                return Err(no_job(key));
            }
            let fire_id = self.store.fire_now(key).await?;
            self.scheduler.wake();
            Ok(Done::new(
                Status::Accepted,
                json!({ "job_key": key, "fire_id": fire_id }),
                json!({ "fire_id": fire_id }),
            ))
        })
        .await
    }

    /// Pauses or resumes one trigger (`GROUP/NAME:TRIGGER`).
    ///
    /// # Errors
    ///
    /// No such trigger, or a store error.
    pub async fn trigger_pause(
        &self,
        caller: &Caller,
        key: &str,
        paused: bool,
    ) -> Result<Done, AdminError> {
        let action = if paused {
            "trigger.pause"
        } else {
            "trigger.resume"
        };
        self.audited(caller, action, key, async {
            if !self.store.trigger_pause(key, paused).await? {
                return Err(AdminError::NotFound(format!(
                    "no trigger {key:?} (trigger keys look like GROUP/NAME:TRIGGER)"
                )));
            }
            self.scheduler.wake();
            let state = if paused { "PAUSED" } else { "WAITING" };
            Ok(Done::new(
                Status::Ok,
                json!({ "trigger_key": key, "state": state }),
                json!({}),
            ))
        })
        .await
    }
}
