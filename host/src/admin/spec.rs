//! A job as an operator describes it (one job, one schedule), checked field by
//! field and turned into the store's job and trigger.
//!
//! `quartzite job add` and the admin API's job create/update both go through
//! [`JobSpec::build`], so a job accepted by one is accepted by the other and a
//! bad field gets the same message from both, naming the field.

use crate::domain;
use crate::schedule::trigger::{MisfirePolicy, TriggerKind, TriggerSpec};
use crate::store::model::{JobDef, Overlap, TriggerPut};
use chrono::DateTime;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// One job with one schedule: exactly one of `cron`, `every`, `at` and `event`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// `GROUP/NAME`.
    #[serde(default)]
    pub key: String,
    /// A module reference: `NAME`, `NAME@VERSION` or `sha256:DIGEST`.
    pub module: String,
    /// Quartz cron expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// IANA time zone of `cron` [default: UTC].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tz: Option<String>,
    /// Fixed interval, e.g. `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
    /// Repeats after the first fire of `every`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat: Option<u64>,
    /// One fire at this instant (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// One fire for every event of this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// Job data [default: null].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    /// `allow`, `forbid` or `skip` [default: allow].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<String>,
    /// Runs of a fire in all, 1 = no retry [default: 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Run timeout, e.g. `60s` [default: 60s].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// `fire-now`, `skip` or `fire-once` [default: fire-now].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub misfire: Option<String>,
    /// Each fire up to this long after its time, e.g. `30s` (never at or past
    /// the next fire; the same delay for a fire on every node) [default: none].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<String>,
    /// The exclusion calendars the trigger honours: a name or a list of names
    /// of stored calendars (`quartzite calendar put`) [default: none].
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "one_or_many"
    )]
    pub calendar: Vec<String>,
    /// Re-run a fire interrupted by a node crash [default: false].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_recovery: Option<bool>,
    /// Store the job paused [default: false].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    /// Pause the job after this many failed runs in a row [default: never].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_on_failure: Option<u32>,
    /// What the job may do beyond its sandbox [default: nothing].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants: Option<crate::grants::Grants>,
    /// At most `limit` fires per key running at once, cluster-wide
    /// [default: no limit].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<crate::domain::flow::ConcurrencySpec>,
    /// At most `limit` fires per key starting per `per` [default: no limit].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<crate::domain::flow::RateSpec>,
    /// Events of a key within the window run once, after the last, with its
    /// payload: `"5s"` or `{ "window": "5s", "key": "..." }` [default: none].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debounce: Option<crate::domain::flow::DebounceSpec>,
    /// One fire per key at a time; an event while one runs is queued once
    /// (later ones replace its event): `true` or `{ "key": "..." }` [default: false].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub singleton: Option<crate::domain::flow::SingletonSpec>,
}

/// A name or a list of names, as `calendar` takes them.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(name) => vec![name],
        OneOrMany::Many(names) => names,
    })
}

/// A field of a [`JobSpec`] that is wrong, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The field's name as in [`JobSpec`] (the CLI flag without `--`).
    pub field: &'static str,
    pub message: String,
}

fn bad(field: &'static str, message: impl Into<String>) -> FieldError {
    FieldError {
        field,
        message: message.into(),
    }
}

/// Whether `key` is a valid `GROUP/NAME` ([`domain::check_job_key`]).
pub fn valid_key(key: &str) -> bool {
    domain::check_job_key(key).is_ok()
}

/// Parses a duration such as `30s`, `500ms` or `2m`.
///
/// # Errors
///
/// A message naming the text and the expected shape.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("invalid duration {text:?}: {e} (use e.g. 30s, 500ms, 2m)"))
}

impl JobSpec {
    /// The job's grants, checked (empty when none are given).
    ///
    /// # Errors
    ///
    /// The grant that is wrong, as field `grants`.
    pub fn checked_grants(&self) -> Result<crate::grants::Grants, FieldError> {
        let grants = self.grants.clone().unwrap_or_default();
        grants.compile().map_err(|e| bad("grants", e.to_string()))?;
        Ok(grants)
    }

    /// Fills what the operator left out from the hints of the module's
    /// `describe()`: its `overlap` when none is given, and its
    /// `default-schedule` (a cron expression, UTC) when no schedule is given.
    /// What the operator gave always wins.
    pub fn apply_hints(&mut self, info: &crate::runtime::JobInfo) {
        if self.overlap.is_none()
            && let Some(o) = info.overlap
        {
            self.overlap = Some(o.as_str().into());
        }
        let scheduled = self.cron.is_some()
            || self.every.is_some()
            || self.at.is_some()
            || self.event.is_some();
        if !scheduled && let Some(cron) = &info.default_schedule {
            self.cron = Some(cron.clone());
        }
    }

    /// Checks every field and builds the job (stored as coming from `source`)
    /// and its one trigger, `KEY:cron|every|at`.
    ///
    /// # Errors
    ///
    /// The first field that is wrong, with what was expected.
    pub fn build(&self, source: &str) -> Result<(JobDef, TriggerPut), FieldError> {
        self.checked_grants()?;
        if let Err(reason) = domain::check_job_key(&self.key) {
            return Err(bad(
                "key",
                format!("{:?}: expected GROUP/NAME ({reason})", self.key),
            ));
        }
        if let Err(reason) = domain::parse_module_ref(&self.module) {
            return Err(bad(
                "module",
                format!(
                    "{:?}: not a module reference (NAME, NAME@VERSION, sha256:DIGEST): {reason}",
                    self.module
                ),
            ));
        }
        let overlap_text = self.overlap.as_deref().unwrap_or("allow");
        let overlap = Overlap::parse(overlap_text).ok_or_else(|| {
            bad(
                "overlap",
                format!(
                    "{overlap_text:?}: expected allow, forbid, skip, buffer-one or cancel-other"
                ),
            )
        })?;
        let misfire_text = self.misfire.as_deref().unwrap_or("fire-now");
        let misfire = MisfirePolicy::parse(misfire_text).ok_or_else(|| {
            bad(
                "misfire",
                format!("{misfire_text:?}: expected fire-now, skip or fire-once"),
            )
        })?;
        let timeout = match &self.timeout {
            Some(t) => {
                domain::parse_duration_within(t, Duration::from_millis(1), domain::MAX_TIMEOUT)
                    .map_err(|e| bad("timeout", e))?
            }
            None => Duration::from_secs(60),
        };
        let max_attempts = domain::check_max_attempts(u64::from(self.max_attempts.unwrap_or(1)))
            .map_err(|e| bad("max_attempts", e))?;
        let data = domain::job_data_text(self.data.as_ref()).map_err(|e| bad("data", e))?;
        let given = [
            self.cron.is_some(),
            self.every.is_some(),
            self.at.is_some(),
            self.event.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(bad(
                "schedule",
                "give exactly one of cron, every, at or event",
            ));
        }
        if self.event.is_some() && self.misfire.is_some() {
            return Err(bad("misfire", "does not apply to event triggers"));
        }
        if self.event.is_some() && self.jitter.is_some() {
            return Err(bad("jitter", "does not apply to event triggers"));
        }
        if self.event.is_some() && !self.calendar.is_empty() {
            return Err(bad("calendar", "does not apply to event triggers"));
        }
        crate::schedule::calendar::check_names(&self.calendar).map_err(|m| bad("calendar", m))?;
        let jitter = match &self.jitter {
            Some(j) => domain::parse_duration_within(j, Duration::ZERO, domain::MAX_PERIOD)
                .map_err(|e| bad("jitter", e))?,
            None => Duration::ZERO,
        };
        if self.tz.is_some() && self.cron.is_none() {
            return Err(bad("tz", "only applies to cron"));
        }
        if self.repeat.is_some() && self.every.is_none() {
            return Err(bad("repeat", "only applies to every"));
        }
        let kind = if let Some(name) = &self.event {
            crate::domain::events::check_event_name(name).map_err(|e| bad("event", e))?;
            TriggerKind::Event { name: name.clone() }
        } else if let Some(expr) = &self.cron {
            let tz = self.tz.clone().unwrap_or_else(|| "UTC".into());
            crate::schedule::check_cron(expr, &tz, chrono::Utc::now()).map_err(|e| match e {
                crate::schedule::CronCheckError::Tz(m) => bad("tz", m),
                crate::schedule::CronCheckError::Cron(m) => bad("cron", m),
            })?;
            TriggerKind::Cron {
                expr: expr.clone(),
                tz,
            }
        } else if let Some(every) = &self.every {
            let period =
                domain::parse_duration_within(every, Duration::from_millis(1), domain::MAX_PERIOD)
                    .map_err(|e| bad("every", e))?;
            TriggerKind::Every {
                period_ms: i64::try_from(period.as_millis()).unwrap_or(i64::MAX),
                repeat: self.repeat,
            }
        } else {
            let at = self.at.as_deref().unwrap_or_default();
            let t = DateTime::parse_from_rfc3339(at).map_err(|e| {
                bad(
                    "at",
                    format!("{at:?}: {e} (use RFC 3339, e.g. 2030-01-01T09:00:00Z)"),
                )
            })?;
            TriggerKind::At(t.timestamp_millis())
        };
        let mut job = JobDef::new(&self.key, &self.module);
        job.data = data;
        job.overlap = overlap;
        job.retry.max_attempts = max_attempts;
        job.timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        job.requests_recovery = self.requests_recovery.unwrap_or(false);
        job.paused = self.paused.unwrap_or(false);
        if self.pause_on_failure == Some(0) {
            return Err(bad(
                "pause_on_failure",
                "must be a count of failed runs from 1",
            ));
        }
        job.pause_on_failure = self.pause_on_failure;
        job.flow = crate::domain::flow::Flow::from_specs(&crate::domain::flow::FlowSpecs {
            concurrency: self.concurrency.as_ref(),
            rate: self.rate.as_ref(),
            debounce: self.debounce.as_ref(),
            singleton: self.singleton.as_ref(),
        })
        .map_err(|e| bad(crate::domain::flow::error_field(&e), e))?;
        if job.flow.coalesce.is_some() && self.event.is_none() {
            return Err(bad(
                if self.debounce.is_some() {
                    "debounce"
                } else {
                    "singleton"
                },
                "folds the fires of events: give the job an event trigger (`event`)",
            ));
        }
        job.source = source.into();
        let trigger = TriggerPut {
            trigger_key: format!("{}:{}", self.key, kind.as_str()),
            job_key: self.key.clone(),
            spec: TriggerSpec {
                kind,
                start_ms: None,
                end_ms: None,
                misfire,
                jitter_ms: u64::try_from(jitter.as_millis()).unwrap_or(u64::MAX),
                calendars: self.calendar.clone(),
            },
            priority: job.priority,
        };
        Ok((job, trigger))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> JobSpec {
        JobSpec {
            key: "g/n".into(),
            module: "hello".into(),
            every: Some("1s".into()),
            ..JobSpec::default()
        }
    }

    #[test]
    fn a_minimal_spec_gets_the_documented_defaults() {
        let (job, trigger) = spec().build("api").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(job.data, "null");
        assert_eq!(job.overlap, Overlap::Allow);
        assert_eq!(job.retry.max_attempts, 1);
        assert_eq!(job.timeout_ms, 60_000);
        assert_eq!(job.source, "api");
        assert_eq!(trigger.trigger_key, "g/n:every");
        assert_eq!(trigger.spec.misfire, MisfirePolicy::FireNow);
    }

    #[test]
    fn flow_control_is_read_from_the_spec_and_its_mistakes_named() {
        let body = serde_json::json!({
            "key": "g/n", "module": "hello", "event": "order.placed",
            "concurrency": { "key": "{{ event.payload.account_id }}", "limit": 3 },
            "rate": { "limit": 10, "per": "1s" },
        });
        let keyed: JobSpec = serde_json::from_value(body).unwrap();
        let (job, _) = keyed.build("api").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(job.flow.concurrency.as_ref().map(|c| c.limit), Some(3));
        assert_eq!(job.flow.rate.as_ref().map(|r| r.per_ms), Some(1000));
        let singleton: JobSpec = serde_json::from_value(serde_json::json!({
            "key": "g/n", "module": "hello", "event": "e", "singleton": true,
        }))
        .unwrap();
        let (job, _) = singleton.build("api").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            job.flow.coalesce.as_ref().map(|c| c.mode()),
            Some("singleton")
        );
        for (body, field, says) in [
            (
                serde_json::json!({ "concurrency": { "limit": 0 } }),
                "concurrency",
                "from 1",
            ),
            (
                serde_json::json!({ "rate": { "limit": 1, "per": "2d" } }),
                "rate",
                "from 1ms to 24h",
            ),
            (
                serde_json::json!({ "debounce": "5s" }),
                "debounce",
                "event trigger",
            ),
        ] {
            let mut spec = spec();
            let patch: JobSpec = serde_json::from_value(serde_json::json!({
                "key": "g/n", "module": "hello",
                "concurrency": body.get("concurrency"), "rate": body.get("rate"), "debounce": body.get("debounce"),
            }))
            .unwrap();
            spec.concurrency = patch.concurrency;
            spec.rate = patch.rate;
            spec.debounce = patch.debounce;
            let err = spec.build("api").unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains(field) && text.contains(says),
                "{body}: {text}"
            );
        }
    }

    #[test]
    fn each_wrong_field_is_named() {
        let cases: Vec<(JobSpec, &str)> = vec![
            (
                JobSpec {
                    key: "nogroup".into(),
                    ..spec()
                },
                "key",
            ),
            (
                JobSpec {
                    module: "a b".into(),
                    ..spec()
                },
                "module",
            ),
            (
                JobSpec {
                    overlap: Some("never".into()),
                    ..spec()
                },
                "overlap",
            ),
            (
                JobSpec {
                    misfire: Some("later".into()),
                    ..spec()
                },
                "misfire",
            ),
            (
                JobSpec {
                    timeout: Some("soon".into()),
                    ..spec()
                },
                "timeout",
            ),
            (
                JobSpec {
                    max_attempts: Some(0),
                    ..spec()
                },
                "max_attempts",
            ),
            (
                JobSpec {
                    every: None,
                    ..spec()
                },
                "schedule",
            ),
            (
                JobSpec {
                    cron: Some("0 0 * * * ?".into()),
                    ..spec()
                },
                "schedule",
            ),
            (
                JobSpec {
                    every: Some("0ms".into()),
                    ..spec()
                },
                "every",
            ),
            (
                JobSpec {
                    every: None,
                    cron: Some("0 0 25 * * ?".into()),
                    ..spec()
                },
                "cron",
            ),
            (
                JobSpec {
                    every: None,
                    at: Some("tomorrow".into()),
                    ..spec()
                },
                "at",
            ),
            (
                JobSpec {
                    tz: Some("UTC".into()),
                    ..spec()
                },
                "tz",
            ),
            (
                JobSpec {
                    calendar: vec!["no spaces".into()],
                    ..spec()
                },
                "calendar",
            ),
            (
                JobSpec {
                    calendar: vec!["a".into(), "a".into()],
                    ..spec()
                },
                "calendar",
            ),
            (
                JobSpec {
                    every: None,
                    event: Some("order.created".into()),
                    calendar: vec!["a".into()],
                    ..spec()
                },
                "calendar",
            ),
        ];
        for (spec, field) in cases {
            match spec.build("api") {
                Err(e) => assert_eq!(e.field, field, "{e}"),
                Ok(_) => panic!("{spec:?} was accepted"),
            }
        }
    }

    #[test]
    fn calendar_takes_a_name_or_a_list_and_reaches_the_trigger() {
        let one: JobSpec = serde_json::from_value(serde_json::json!({
            "key": "g/n", "module": "hello", "every": "1s", "calendar": "holidays"
        }))
        .unwrap();
        let (_, trigger) = one.build("api").unwrap();
        assert_eq!(trigger.spec.calendars, ["holidays"]);
        let many: JobSpec = serde_json::from_value(serde_json::json!({
            "key": "g/n", "module": "hello", "every": "1s", "calendar": ["a", "b"]
        }))
        .unwrap();
        assert_eq!(many.build("api").unwrap().1.spec.calendars, ["a", "b"]);
        assert!(
            serde_json::from_value::<JobSpec>(serde_json::json!({
                "module": "hello", "calendar": 7
            }))
            .is_err()
        );
    }
}
