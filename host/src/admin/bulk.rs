//! Operations on many fires at once: backfill a job over a past range, replay
//! failed fires, cancel waiting fires by filter. Each is audited with its
//! filter and how many fires it made or removed; a dry run changes nothing
//! and is not audited.

use super::jobs::check_key;
use super::views::fmt_ms;
use super::{Admin, AdminError, Caller, Done, Status};
use crate::domain::{self, BackfillOverlap, FireOrigin, events::check_job_pattern};
use crate::schedule::trigger::MAX_BACKFILL_COUNT;
use crate::store::bulk::{BackfillPut, FireCancel, HistorySelect, ReplayPut, Replayed};
use crate::store::model::HistoryStatus;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::Duration;

/// Fire times a backfill creates unless `max` says otherwise.
pub const DEFAULT_BACKFILL_MAX: u64 = 1000;
/// The most `max` may say: a backfill is one transaction.
pub const MAX_BACKFILL_MAX: u64 = 100_000;
/// History rows a replay reads unless `limit` says otherwise, and the most.
pub const DEFAULT_REPLAY_LIMIT: i64 = 1000;
pub const MAX_REPLAY_LIMIT: i64 = 10_000;

/// `job backfill` (`POST /api/v1/jobs/{key}/backfill`).
#[derive(Clone, Debug, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackfillRequest {
    /// The range's start, included: RFC 3339.
    pub from: String,
    /// The range's end, excluded: RFC 3339, at most now.
    pub to: String,
    /// `allow`, `buffer` or `skip` [default: buffer].
    #[serde(default)]
    pub overlap: Option<String>,
    /// Refuse a range of more fire times than this [default: 1000].
    #[serde(default)]
    pub max: Option<u64>,
    /// List the times, create nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// `history replay` (`POST /api/v1/history/replay`).
#[derive(Clone, Debug, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// A job key, `GROUP/*` or `*`.
    pub job: String,
    /// History statuses to replay, comma-separated [default: failed].
    #[serde(default)]
    pub status: Option<String>,
    /// Rows started since: RFC 3339, or a duration before now (`24h`).
    pub since: String,
    /// Rows started before: RFC 3339, or a duration before now.
    #[serde(default)]
    pub until: Option<String>,
    /// Most history rows read [default: 1000, at most 10000].
    #[serde(default)]
    pub limit: Option<i64>,
}

/// `fire cancel` (`POST /api/v1/fires/cancel`).
#[derive(Clone, Debug, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// A job key, `GROUP/*` or `*`.
    pub job: String,
    /// Only the fires of this trigger key (`GROUP/NAME:TRIGGER`).
    #[serde(default)]
    pub trigger: Option<String>,
    /// Only fires scheduled before: RFC 3339, or a duration before now.
    #[serde(default)]
    pub before: Option<String>,
    /// Only fires of this origin: `plain`, `backfill` or `replay`.
    #[serde(default)]
    pub origin: Option<String>,
    /// Why, recorded with each cancelled fire.
    #[serde(default)]
    pub reason: Option<String>,
}

/// An instant an operator gave as RFC 3339, or as a duration before `now_ms`
/// when `ago` allows it.
fn instant(field: &'static str, text: &str, now_ms: i64, ago: bool) -> Result<i64, AdminError> {
    let text = text.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_millis());
    }
    let expected = if ago {
        "a time (RFC 3339, e.g. 2030-01-01T09:00:00Z) or a duration before now (e.g. 24h)"
    } else {
        "a time (RFC 3339, e.g. 2030-01-01T09:00:00Z)"
    };
    let bad = || AdminError::invalid(field, format!("{field} {text:?}: expected {expected}"));
    if !ago {
        return Err(bad());
    }
    let d = domain::parse_duration_within(text, Duration::from_millis(1), domain::MAX_PERIOD)
        .map_err(|_| bad())?;
    Ok(now_ms.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
}

fn check_pattern(job: &str) -> Result<(), AdminError> {
    check_job_pattern(job).map_err(|m| AdminError::invalid("job", m))
}

fn statuses(text: Option<&str>) -> Result<Vec<HistoryStatus>, AdminError> {
    let text = text
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .unwrap_or("failed");
    text.split(',')
        .map(|s| {
            HistoryStatus::parse(s.trim()).ok_or_else(|| {
                AdminError::invalid(
                    "status",
                    format!(
                        "status {s:?}: expected success, failed, retried, timeout, skipped, cancelled or misfired (comma-separated)"
                    ),
                )
            })
        })
        .collect()
}

/// What a history row replays: its fire, or the fire a replay replayed (a
/// fire is replayed once, however its replays end).
fn replay_of(h: &crate::store::model::HistoryEntry) -> Option<ReplayPut> {
    let fire_id = h.fire_id.clone()?;
    let details: Value = serde_json::from_str(&h.details).unwrap_or(Value::Null);
    let source = details["replay_of"]
        .as_str()
        .map_or(fire_id, str::to_string);
    Some(ReplayPut {
        source_fire_id: source,
        job_key: h.job_key.clone(),
        trigger_key: h
            .trigger_key
            .clone()
            .unwrap_or_else(|| format!("{}:manual", h.job_key)),
        scheduled_ms: h.scheduled_ms.unwrap_or(h.started_ms),
        event_id: details["event"]["id"].as_str().unwrap_or("").to_string(),
    })
}

impl Admin {
    /// Creates one fire per time the job's triggers would have fired at in
    /// `[from, to)` (their cron, interval or one-shot rules, time zones and
    /// DST included), each with its scheduled time as `scheduled-at` and as
    /// its guest's wall clock, run under the backfill's overlap mode. Times a
    /// fire already has are not created twice. With `dry_run`, lists the
    /// times and changes nothing.
    ///
    /// # Errors
    ///
    /// A bad key or range, a range of more than `max` times, no such job, a
    /// job without clock triggers, or a store error.
    pub async fn job_backfill(
        &self,
        caller: &Caller,
        key: &str,
        request: &BackfillRequest,
    ) -> Result<Done, AdminError> {
        if request.dry_run {
            return Ok(self.backfill(key, request).await?.0);
        }
        self.audited(caller, "job.backfill", key, async {
            let (mut done, put) = self.backfill(key, request).await?;
            let made = self.store.fire_backfill(&put).await?;
            self.scheduler.wake();
            for (k, v) in [("created", made.created), ("existing", made.existing)] {
                done.body[k] = json!(v);
                done.summary[k] = json!(v);
            }
            done.status = Status::Accepted;
            Ok(done)
        })
        .await
    }

    /// The checked backfill: its answer so far and the fires to create.
    async fn backfill(
        &self,
        key: &str,
        request: &BackfillRequest,
    ) -> Result<(Done, BackfillPut), AdminError> {
        check_key(key)?;
        let now = self.store.now_ms().await?;
        let from = instant("from", &request.from, now, false)?;
        let to = instant("to", &request.to, now, false)?;
        if from >= to {
            return Err(AdminError::invalid(
                "to",
                format!(
                    "to {:?} is not after from {:?}: the range is [from, to)",
                    request.to, request.from
                ),
            ));
        }
        if to > now {
            return Err(AdminError::invalid(
                "to",
                format!(
                    "to {:?} is in the future (now is {}): a backfill is for times that have passed; the triggers fire the rest",
                    request.to,
                    fmt_ms(Some(now)).as_str().unwrap_or_default()
                ),
            ));
        }
        let overlap = match request.overlap.as_deref() {
            None => BackfillOverlap::default(),
            Some(text) => {
                BackfillOverlap::parse(text).map_err(|m| AdminError::invalid("overlap", m))?
            }
        };
        let max = request.max.unwrap_or(DEFAULT_BACKFILL_MAX);
        if !(1..=MAX_BACKFILL_MAX).contains(&max) {
            return Err(AdminError::invalid(
                "max",
                format!("max {max}: expected 1 to {MAX_BACKFILL_MAX}"),
            ));
        }
        if self.store.job_get(key).await?.is_none() {
            return Err(AdminError::NotFound(format!("no job {key:?}")));
        }
        let triggers = self.store.trigger_list(Some(key)).await?;
        let clocked: Vec<_> = triggers
            .iter()
            .filter(|t| {
                matches!(
                    t.spec.kind,
                    domain::TriggerKind::Cron { .. }
                        | domain::TriggerKind::Every { .. }
                        | domain::TriggerKind::At(_)
                )
            })
            .collect();
        if clocked.is_empty() {
            return Err(AdminError::invalid(
                "key",
                format!(
                    "job {key:?} has no cron, every or at trigger: it has no past times to backfill"
                ),
            ));
        }
        let cap = usize::try_from(max).unwrap_or(usize::MAX);
        let mut times: Vec<(String, i64)> = Vec::new();
        let mut total: u64 = 0;
        let mut more = false;
        // Times the triggers' calendars exclude are no fire times, as they
        // were not when the schedule ran.
        let calendars = if clocked.iter().any(|t| !t.spec.calendars.is_empty()) {
            crate::schedule::calendar::CalendarSet::new(
                self.store.calendar_list().await?.into_iter().map(|r| r.def),
            )
        } else {
            crate::schedule::calendar::CalendarSet::new([])
        };
        let mut excluded: u64 = 0;
        for t in clocked {
            let exclusion = (!t.spec.calendars.is_empty())
                .then(|| calendars.exclusion(&t.spec.calendars))
                .transpose()
                .map_err(|e| {
                    AdminError::Conflict(format!(
                        "trigger {:?}: its calendars cannot be read: {e}",
                        t.trigger_key
                    ))
                })?;
            let mut found = t.spec.times_in(from, to, cap).map_err(|e| {
                AdminError::Conflict(format!(
                    "trigger {:?}: its schedule cannot be computed: {e}",
                    t.trigger_key
                ))
            })?;
            if let Some(x) = &exclusion {
                let before = found.times.len();
                found.times.retain(|ms| x.excluded_by(*ms).is_none());
                let dropped = (before - found.times.len()) as u64;
                found.total = found.total.saturating_sub(dropped);
                excluded += dropped;
            }
            total += found.total;
            more |= found.more;
            times.extend(
                found
                    .times
                    .into_iter()
                    .map(|ms| (t.trigger_key.clone(), ms)),
            );
        }
        if total > max {
            let count = if more {
                format!("more than {MAX_BACKFILL_COUNT}")
            } else {
                total.to_string()
            };
            return Err(AdminError::invalid(
                "max",
                format!(
                    "the range holds {count} fire times of {key}, over the maximum of {max}: narrow --from/--to or raise --max (at most {MAX_BACKFILL_MAX})"
                ),
            ));
        }
        // Scheduled order; two triggers at one instant by trigger key.
        times.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        let listed: Vec<Value> = times
            .iter()
            .map(|(trigger, ms)| json!({ "trigger_key": trigger, "scheduled_at": fmt_ms(Some(*ms)) }))
            .collect();
        let body = json!({
            "job_key": key,
            "from": fmt_ms(Some(from)),
            "to": fmt_ms(Some(to)),
            "overlap": overlap.as_str(),
            "excluded_by_calendars": excluded,
            "count": times.len(),
            "dry_run": request.dry_run,
            "times": listed,
        });
        let summary = json!({
            "from": fmt_ms(Some(from)),
            "to": fmt_ms(Some(to)),
            "overlap": overlap.as_str(),
            "max": max,
            "count": times.len(),
        });
        let put = BackfillPut {
            job_key: key.to_string(),
            times,
            origin: FireOrigin::Backfill(overlap),
        };
        Ok((Done::new(Status::Ok, body, summary), put))
    }

    /// Runs again, once each, the fires whose history rows match: the job's
    /// current definition, the original scheduled time as `scheduled-at`.
    /// A fire replayed before (or the fire a replay replayed) is not started
    /// again, however that replay ended; the answer counts both.
    ///
    /// # Errors
    ///
    /// A bad pattern, status or time, or a store error.
    pub async fn history_replay(
        &self,
        caller: &Caller,
        request: &ReplayRequest,
    ) -> Result<Done, AdminError> {
        self.audited(caller, "history.replay", &request.job, async {
            check_pattern(&request.job)?;
            let statuses = statuses(request.status.as_deref())?;
            let now = self.store.now_ms().await?;
            let since = instant("since", &request.since, now, true)?;
            let until = match request.until.as_deref() {
                Some(u) => Some(instant("until", u, now, true)?),
                None => None,
            };
            let limit = request.limit.unwrap_or(DEFAULT_REPLAY_LIMIT);
            if !(1..=MAX_REPLAY_LIMIT).contains(&limit) {
                return Err(AdminError::invalid(
                    "limit",
                    format!("limit {limit}: expected 1 to {MAX_REPLAY_LIMIT}"),
                ));
            }
            let rows = self
                .store
                .history_select(&HistorySelect {
                    job_pattern: request.job.clone(),
                    statuses: statuses.clone(),
                    since_ms: since,
                    until_ms: until,
                    limit,
                })
                .await?;
            let mut seen = HashSet::new();
            let puts: Vec<ReplayPut> = rows
                .iter()
                .filter_map(replay_of)
                .filter(|p| seen.insert(p.source_fire_id.clone()))
                .collect();
            let results = self.store.fire_replay(&puts).await?;
            self.scheduler.wake();
            let (mut started, mut already, mut not_started) = (Vec::new(), 0u64, Vec::new());
            for (put, result) in puts.iter().zip(results) {
                match result {
                    Replayed::Started(fire_id) => started.push(json!({
                        "job_key": put.job_key,
                        "replay_of": put.source_fire_id,
                        "fire_id": fire_id,
                        "scheduled_at": fmt_ms(Some(put.scheduled_ms)),
                    })),
                    Replayed::Already => already += 1,
                    Replayed::NotStarted(why) => not_started.push(json!({
                        "job_key": put.job_key,
                        "replay_of": put.source_fire_id,
                        "reason": why,
                    })),
                }
            }
            let filter = json!({
                "job": request.job,
                "status": statuses.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
                "since": fmt_ms(Some(since)),
                "until": fmt_ms(until),
                "limit": limit,
            });
            let summary = json!({
                "filter": filter,
                "matched_rows": rows.len(),
                "started": started.len(),
                "already_replayed": already,
                "not_started": not_started.len(),
            });
            let body = json!({
                "filter": filter,
                "started": started.len(),
                "already_replayed": already,
                "not_started": not_started,
                "fires": started,
            });
            Ok(Done::new(Status::Accepted, body, summary))
        })
        .await
    }

    /// Deletes the waiting fires that match (never a claimed or running
    /// one), each recorded in history as `cancelled` with the reason;
    /// answers how many.
    ///
    /// # Errors
    ///
    /// A bad pattern, time or origin, or a store error.
    pub async fn fire_cancel(
        &self,
        caller: &Caller,
        request: &CancelRequest,
    ) -> Result<Done, AdminError> {
        self.audited(caller, "fire.cancel", &request.job, async {
            check_pattern(&request.job)?;
            let now = self.store.now_ms().await?;
            let before = match request.before.as_deref() {
                Some(b) => Some(instant("before", b, now, true)?),
                None => None,
            };
            let origin = match request.origin.as_deref() {
                None => None,
                Some("plain") => Some(String::new()),
                Some(o @ ("backfill" | "replay")) => Some(o.to_string()),
                Some(o) => {
                    return Err(AdminError::invalid(
                        "origin",
                        format!("origin {o:?}: expected plain, backfill or replay"),
                    ));
                }
            };
            let reason = request
                .reason
                .as_deref()
                .map(|r| crate::text::strip(r.trim(), super::jobs::MAX_PAUSE_NOTE))
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| format!("cancelled by {}", caller.actor));
            let cancelled = self
                .store
                .fire_cancel(&FireCancel {
                    job_pattern: request.job.clone(),
                    trigger_key: request.trigger.clone(),
                    before_ms: before,
                    origin,
                    reason: reason.clone(),
                })
                .await?;
            self.scheduler.wake();
            let filter = json!({
                "job": request.job,
                "trigger": request.trigger,
                "before": fmt_ms(before),
                "origin": request.origin,
            });
            Ok(Done::new(
                Status::Ok,
                json!({ "filter": filter, "cancelled": cancelled, "reason": reason }),
                json!({ "filter": filter, "cancelled": cancelled, "reason": reason }),
            ))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_are_rfc3339_or_a_duration_ago_where_allowed() {
        let now = 1_900_000_000_000;
        assert_eq!(
            instant("since", "2030-01-01T00:00:00Z", now, true).unwrap(),
            1_893_456_000_000
        );
        assert_eq!(instant("since", "1h", now, true).unwrap(), now - 3_600_000);
        let e = instant("from", "1h", now, false).unwrap_err();
        assert!(e.to_string().contains("from \"1h\""), "{e}");
        let e = instant("since", "yesterday", now, true).unwrap_err();
        assert!(e.to_string().contains("duration before now"), "{e}");
    }

    #[test]
    fn statuses_default_to_failed_and_a_typo_is_named() {
        assert_eq!(statuses(None).unwrap(), [HistoryStatus::Failed]);
        assert_eq!(
            statuses(Some("failed, timeout")).unwrap(),
            [HistoryStatus::Failed, HistoryStatus::Timeout]
        );
        let e = statuses(Some("failed,broken")).unwrap_err();
        assert!(e.to_string().contains("\"broken\""), "{e}");
    }

    #[test]
    fn a_replays_row_replays_the_fire_it_replayed() {
        let row = crate::store::model::HistoryEntry {
            id: "h".into(),
            fire_id: Some("f2".into()),
            job_key: "g/a".into(),
            trigger_key: Some("g/a:t".into()),
            status: HistoryStatus::Failed,
            attempt: 1,
            node_id: None,
            scheduled_ms: Some(5),
            started_ms: 9,
            ended_ms: 9,
            duration_ms: 0,
            details: json!({ "origin": "replay", "replay_of": "f1", "event": { "id": "e1" } })
                .to_string(),
        };
        let put = replay_of(&row).unwrap();
        assert_eq!(
            (
                put.source_fire_id.as_str(),
                put.scheduled_ms,
                put.event_id.as_str()
            ),
            ("f1", 5, "e1")
        );
        let plain = crate::store::model::HistoryEntry {
            details: "{}".into(),
            ..row.clone()
        };
        assert_eq!(replay_of(&plain).unwrap().source_fire_id, "f2");
        let summary_row = crate::store::model::HistoryEntry {
            fire_id: None,
            ..row
        };
        assert!(replay_of(&summary_row).is_none());
    }
}
