//! The values a job receives and returns, free of generated binding types.

use crate::__bindings::quartzite::job::types as wit;
use crate::error::{Error, Result};
use serde::{Serialize, de::DeserializeOwned};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What the host says about the fire being run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Context {
    /// The job's key, `group/name`.
    pub job_key: String,
    /// The key of the trigger that fired, `group/name`.
    pub trigger_key: String,
    /// Unique per fire and stable across retries and recovery: use it as an
    /// idempotency key for side effects.
    pub fire_id: String,
    /// When the fire was due, in milliseconds since the Unix epoch (UTC).
    pub scheduled_at_ms: i64,
    /// When this run started, in milliseconds since the Unix epoch (UTC).
    pub fired_at_ms: i64,
    /// 1 for the first run of a fire, 2 for its first retry, and so on.
    pub attempt: u32,
    /// True when this run re-executes a fire whose node died mid-run.
    pub recovering: bool,
    /// The job data as JSON text; see [`Context::data`].
    pub data_json: String,
}

impl Context {
    /// The event that started this fire, with its payload; `None` for a fire
    /// of any other trigger. See [`crate::event`].
    pub fn event(&self) -> Option<crate::event::Event> {
        crate::event::current()
    }

    /// Deserializes the job data. An empty data string reads as JSON `null`,
    /// so `Option<T>` and types with defaults accept a job without data.
    ///
    /// # Errors
    ///
    /// [`Error::Fatal`]: data that does not match `T` will not match on retry either.
    pub fn data<T: DeserializeOwned>(&self) -> Result<T> {
        let text = if self.data_json.trim().is_empty() {
            "null"
        } else {
            &self.data_json
        };
        serde_json::from_str(text)
            .map_err(|e| Error::Fatal(format!("job data does not match the expected shape: {e}")))
    }

    /// The W3C `traceparent` of this run when the node traces fires (for
    /// example `00-<trace id>-<span id>-01`), else `None`. Pass it on to
    /// continue the fire's trace; requests sent through [`crate::http`]
    /// already carry it. The host hands it over as the `TRACEPARENT`
    /// environment variable, which OpenTelemetry SDKs also read.
    pub fn traceparent(&self) -> Option<String> {
        std::env::var("TRACEPARENT").ok().filter(|t| !t.is_empty())
    }

    /// When the fire was due.
    pub fn scheduled_at(&self) -> SystemTime {
        from_millis(self.scheduled_at_ms)
    }

    /// When this run started.
    pub fn fired_at(&self) -> SystemTime {
        from_millis(self.fired_at_ms)
    }

    pub(crate) fn from_wit(ctx: wit::Context) -> Self {
        Context {
            job_key: ctx.job_key,
            trigger_key: ctx.trigger_key,
            fire_id: ctx.fire_id,
            scheduled_at_ms: ctx.scheduled_at,
            fired_at_ms: ctx.fired_at,
            attempt: ctx.attempt,
            recovering: ctx.recovering,
            data_json: ctx.data,
        }
    }
}

fn from_millis(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// A successful run's report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    details: Option<String>,
    new_data: Option<String>,
}

impl Outcome {
    /// Nothing to report.
    pub fn none() -> Self {
        Outcome::default()
    }

    /// Reports `details` (serialized as JSON) in the task history.
    ///
    /// # Errors
    ///
    /// [`Error::Fatal`] when `details` cannot be serialized.
    pub fn details<T: Serialize + ?Sized>(details: &T) -> Result<Self> {
        Outcome::none().with_details(details)
    }

    /// Adds `details` to this outcome.
    ///
    /// # Errors
    ///
    /// As [`Outcome::details`].
    pub fn with_details<T: Serialize + ?Sized>(mut self, details: &T) -> Result<Self> {
        self.details = Some(to_json(details, "details")?);
        Ok(self)
    }

    /// Replaces the job data for later fires with `data`.
    ///
    /// # Errors
    ///
    /// [`Error::Fatal`] when `data` cannot be serialized.
    pub fn with_new_data<T: Serialize + ?Sized>(mut self, data: &T) -> Result<Self> {
        self.new_data = Some(to_json(data, "new job data")?);
        Ok(self)
    }

    /// The details as JSON text.
    pub fn details_text(&self) -> Option<&str> {
        self.details.as_deref()
    }

    /// The details parsed as JSON.
    pub fn details_json(&self) -> Option<serde_json::Value> {
        self.details
            .as_deref()
            .and_then(|d| serde_json::from_str(d).ok())
    }

    /// The new job data as JSON text.
    pub fn new_data_text(&self) -> Option<&str> {
        self.new_data.as_deref()
    }

    pub(crate) fn into_wit(self) -> wit::Outcome {
        wit::Outcome {
            details: self.details,
            new_data: self.new_data,
        }
    }
}

fn to_json<T: Serialize + ?Sized>(value: &T, what: &str) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Fatal(format!("cannot serialize {what}: {e}")))
}

/// Whether fires of a job may overlap; the operator's setting wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overlap {
    /// Fires run side by side.
    Allow,
    /// A fire waits until the running one ends, cluster-wide.
    Forbid,
    /// A fire that would overlap is skipped and recorded.
    Skip,
}

/// What a job says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobInfo {
    name: String,
    version: String,
    description: Option<String>,
    default_schedule: Option<String>,
    overlap: Option<Overlap>,
}

impl JobInfo {
    /// A job called `name` at `version` (use `env!("CARGO_PKG_VERSION")`).
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        JobInfo {
            name: name.into(),
            version: version.into(),
            description: None,
            default_schedule: None,
            overlap: None,
        }
    }

    /// A one-line description for operators.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }

    /// A Quartz cron expression used when the operator gives no schedule.
    pub fn default_schedule(mut self, cron: impl Into<String>) -> Self {
        self.default_schedule = Some(cron.into());
        self
    }

    /// How fires of this job should overlap unless the operator says otherwise.
    pub fn overlap(mut self, overlap: Overlap) -> Self {
        self.overlap = Some(overlap);
        self
    }

    /// The job's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The job's version.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub(crate) fn into_wit(self) -> wit::JobInfo {
        wit::JobInfo {
            name: self.name,
            version: self.version,
            description: self.description,
            default_schedule: self.default_schedule,
            overlap: self.overlap.map(|o| match o {
                Overlap::Allow => wit::Overlap::Allow,
                Overlap::Forbid => wit::Overlap::Forbid,
                Overlap::Skip => wit::Overlap::Skip,
            }),
        }
    }
}
