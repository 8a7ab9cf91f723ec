//! Failure alerts: rules evaluated against run history, delivered to webhooks.
//!
//! One node at a time (the `quartzite.alerts` cluster lock) scans the history
//! rows an alert can be about since its cursor, queues one delivery per rule and
//! triggering condition (unique in the store, so a re-scan or a second node
//! queues nothing new), and POSTs due deliveries with retries and exponential
//! backoff. Nothing here runs on a fire's path: a run only writes its history
//! row, as it always does.

use crate::metrics::Metrics;
use crate::store::Store;
use crate::store::events::{
    AlertCondition, AlertRule, Delivery, DeliveryAttempt, DeliveryPut, DeliveryState,
    FAILURE_STATUSES, failure_streak,
};
use crate::store::model::{HistoryEntry, HistoryStatus};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The cluster lock under which one node scans and delivers.
pub const ALERT_LOCK: &str = "quartzite.alerts";
/// Attempts per delivery: the first and five retries.
pub const MAX_ATTEMPTS: u32 = 6;
/// The first retry's delay; each next one doubles, up to [`MAX_BACKOFF_MS`].
pub const BACKOFF_MS: u64 = 1_000;
pub const MAX_BACKOFF_MS: u64 = 300_000;
/// Spread of each delay, as a fraction of it.
pub const BACKOFF_JITTER: f64 = 0.1;
/// How long a receiver may take to answer.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Each scan re-reads this much history before its cursor: rows committed a
/// little after a later row (batched completions, other nodes) are not missed,
/// and re-read rows queue nothing new.
const SCAN_OVERLAP_MS: i64 = 30_000;
const SCAN_PAGE: i64 = 500;
const CURSOR: &str = "history";

/// Why a history row is a NoOp skip: the module could not be run.
const NOOP_REASONS: [&str; 4] = [
    "module-missing",
    "module-invalid",
    "module-incompatible",
    "no-capable-node",
];

/// Scans history for alerts and delivers them.
pub struct Alerter {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    node_id: String,
    /// Base of the links to history entries, without a trailing slash.
    link_base: String,
    client: reqwest::Client,
}

impl std::fmt::Debug for Alerter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerter")
            .field("node_id", &self.node_id)
            .field("link_base", &self.link_base)
            .finish_non_exhaustive()
    }
}

/// What one delivery attempt gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendResult {
    /// The receiver's HTTP status, if it answered.
    pub status: Option<u16>,
    /// Why it is not a success, if it is not.
    pub error: Option<String>,
}

impl SendResult {
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

impl Alerter {
    /// `link_base` starts the links to history entries [default: `http://` and
    /// the admin API's default address].
    pub fn new(
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        node_id: String,
        link_base: Option<&str>,
    ) -> Arc<Self> {
        let link_base = link_base.filter(|u| !u.is_empty()).map_or_else(
            || format!("http://{}", crate::domain::DEFAULT_LISTEN),
            |u| u.trim_end_matches('/').to_string(),
        );
        let client = reqwest::Client::builder()
            .timeout(SEND_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("quartzite/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Arc::new(Alerter {
            store,
            metrics,
            node_id,
            link_base,
            client,
        })
    }

    /// Scans and delivers every `every` while this node holds the alert lock,
    /// and reports the cluster-wide metrics meanwhile.
    pub async fn run(self: Arc<Self>, every: Duration, mut stop: watch::Receiver<bool>) {
        let lease_ms = 10_000;
        let mut token: Option<i64> = None;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                if let Some(t) = token {
                    self.metrics.set_cluster_reporter(false);
                    let _ = self.store.lock_release(ALERT_LOCK, t).await;
                }
                return;
            }
            token = match token {
                Some(t) => match self.store.lock_renew(ALERT_LOCK, t, lease_ms).await {
                    Ok(true) => Some(t),
                    Ok(false) => None,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot renew the alert lock");
                        None
                    }
                },
                None => self
                    .store
                    .lock_try(ALERT_LOCK, &self.node_id, lease_ms)
                    .await
                    .unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "cannot take the alert lock");
                        None
                    }),
            };
            // The lock's holder, one node at a time, also exports the
            // cluster-wide gauges (see `Metrics::set_cluster_reporter`).
            self.metrics.set_cluster_reporter(token.is_some());
            if token.is_none() {
                continue;
            }
            if let Err(e) = self.scan().await {
                tracing::warn!(error = %e, "alert scan failed");
            }
            if let Err(e) = self.deliver_due().await {
                tracing::warn!(error = %e, "alert delivery pass failed");
            }
        }
    }

    /// Queues the alerts of history rows since the cursor; returns how many are new.
    ///
    /// # Errors
    ///
    /// When the store fails; the cursor then stays where it was.
    pub async fn scan(&self) -> Result<u64, crate::store::StoreError> {
        let now = self.store.now_ms().await?;
        let rules = self.store.alert_rule_list().await?;
        let Some(cursor) = self.store.alert_cursor(CURSOR).await? else {
            // First scan of this store: alerts are about what happens from now.
            self.store.alert_cursor_set(CURSOR, now).await?;
            return Ok(0);
        };
        if rules.is_empty() {
            // Nothing to alert on: a rule added later starts from about when it
            // was added (within one overlap), for one write per overlap.
            if now - cursor >= SCAN_OVERLAP_MS {
                self.store.alert_cursor_set(CURSOR, now).await?;
            }
            return Ok(0);
        }
        let mut after = cursor - SCAN_OVERLAP_MS;
        let mut seen = HashSet::new();
        let mut newest = cursor;
        let mut queued = 0;
        for _ in 0..20 {
            let rows = self.store.history_alertable(after, SCAN_PAGE).await?;
            let fresh: Vec<&HistoryEntry> =
                rows.iter().filter(|r| seen.insert(r.id.clone())).collect();
            if fresh.is_empty() {
                break;
            }
            let mut deliveries = Vec::new();
            for row in &fresh {
                for rule in rules.iter().filter(|r| r.covers(&row.job_key)) {
                    if let Some(d) = self.evaluate(rule, row).await? {
                        deliveries.push(d);
                    }
                }
                newest = newest.max(row.ended_ms);
            }
            queued += self.store.alert_enqueue(&deliveries).await?;
            if rows.len() < usize::try_from(SCAN_PAGE).unwrap_or(usize::MAX) {
                break;
            }
            after = rows.last().map_or(after, |r| r.ended_ms - 1);
        }
        // Never ahead of the database clock: rows ending later are still to come.
        let newest = newest.min(now);
        if newest > cursor {
            self.store.alert_cursor_set(CURSOR, newest).await?;
        }
        if queued > 0 {
            tracing::info!(alerts = queued, "alerts queued");
        }
        Ok(queued)
    }

    /// The delivery a rule asks for about one history row, if any.
    async fn evaluate(
        &self,
        rule: &AlertRule,
        row: &HistoryEntry,
    ) -> Result<Option<DeliveryPut>, crate::store::StoreError> {
        let details: Value = serde_json::from_str(&row.details).unwrap_or(Value::Null);
        let (dedup, extra) = match rule.condition {
            AlertCondition::PermanentFailure
                if matches!(row.status, HistoryStatus::Failed | HistoryStatus::Timeout) =>
            {
                (format!("{}|{}", rule.name, row.id), json!({}))
            }
            AlertCondition::Misfire if row.status == HistoryStatus::Misfired => {
                (format!("{}|{}", rule.name, row.id), json!({}))
            }
            AlertCondition::NoopSkip
                if row.status == HistoryStatus::Skipped && noop_reason(&details).is_some() =>
            {
                (format!("{}|{}", rule.name, row.id), json!({}))
            }
            AlertCondition::ConsecutiveFailures if FAILURE_STATUSES.contains(&row.status) => {
                let n = rule.threshold.max(1);
                let runs = self
                    .store
                    .history_runs_before(&row.job_key, row, i64::from(n) + 1)
                    .await?;
                let n = usize::try_from(n).unwrap_or(1);
                // Alert once per streak: when this row makes it exactly N long.
                let streak = failure_streak(&runs);
                if runs.first().is_none_or(|(id, _)| *id != row.id) || streak != n {
                    return Ok(None);
                }
                let first = &runs[n - 1].0;
                (
                    format!("{}|{}|streak|{first}", rule.name, row.job_key),
                    json!({ "consecutive_failures": n }),
                )
            }
            _ => return Ok(None),
        };
        let delivery_id = crate::store::sched::new_id();
        let mut payload = self.document(&delivery_id, rule, row, &details);
        if let (Some(p), Some(e)) = (payload.as_object_mut(), extra.as_object()) {
            p.extend(e.clone());
        }
        Ok(Some(DeliveryPut {
            delivery_id,
            rule: rule.name.clone(),
            dedup_key: dedup,
            job_key: Some(row.job_key.clone()),
            history_id: Some(row.id.clone()),
            payload: payload.to_string(),
        }))
    }

    /// The JSON document POSTed for a history row.
    fn document(
        &self,
        delivery_id: &str,
        rule: &AlertRule,
        row: &HistoryEntry,
        details: &Value,
    ) -> Value {
        json!({
            "id": delivery_id,
            "rule": rule.name,
            "condition": rule.condition.as_str(),
            "job": row.job_key,
            "fire": row.fire_id,
            "trigger": row.trigger_key,
            "status": row.status.as_str(),
            "error": error_text(row.status, details),
            "attempt": row.attempt,
            "node": row.node_id,
            "scheduled_at": row.scheduled_ms.map(rfc3339),
            "at": rfc3339(row.ended_ms),
            "history_id": row.id,
            "link": format!("{}/api/v1/history/{}", self.link_base, row.id),
            "test": false,
        })
    }

    /// A sample document for `alert test`: what the rule's receiver would get.
    pub fn sample(&self, rule: &AlertRule, now_ms: i64) -> (String, Value) {
        let delivery_id = crate::store::sched::new_id();
        let job = match rule.job_pattern.as_deref() {
            Some(p) if !p.ends_with('*') => p.to_string(),
            Some(p) => p.replace('*', "example"),
            None => "examples/job".to_string(),
        };
        let doc = json!({
            "id": delivery_id,
            "rule": rule.name,
            "condition": rule.condition.as_str(),
            "job": job,
            "fire": null,
            "trigger": null,
            "status": "failed",
            "error": "a sample alert sent by `quartzite alert test`",
            "attempt": 1,
            "node": self.node_id,
            "scheduled_at": null,
            "at": rfc3339(now_ms),
            "history_id": null,
            "link": format!("{}/api/v1/history", self.link_base),
            "test": true,
        });
        (delivery_id, doc)
    }

    /// Sends the due deliveries once each; returns how many were sent.
    ///
    /// # Errors
    ///
    /// When the store fails.
    pub async fn deliver_due(&self) -> Result<u64, crate::store::StoreError> {
        let due = self.store.alert_due(50).await?;
        if due.is_empty() {
            return Ok(0);
        }
        let rules: HashMap<String, AlertRule> = self
            .store
            .alert_rule_list()
            .await?
            .into_iter()
            .map(|r| (r.name.clone(), r))
            .collect();
        let now = self.store.now_ms().await?;
        let mut sent = 0;
        for d in due {
            let result = match rules.get(&d.rule) {
                Some(rule) => self.send(&rule.webhook, &d.delivery_id, &d.payload).await,
                None => SendResult {
                    status: None,
                    error: Some(format!("rule {} was deleted", d.rule)),
                },
            };
            let attempt = next_attempt(&d, &result, now, rules.contains_key(&d.rule));
            self.count(&d.rule, attempt.state);
            if attempt.state == DeliveryState::Sent {
                sent += 1;
            } else {
                tracing::warn!(rule = %d.rule, delivery = %d.delivery_id, attempts = attempt.attempts,
                    error = attempt.error.as_deref().unwrap_or(""), "alert delivery failed");
            }
            self.store.alert_attempt(&attempt).await?;
        }
        Ok(sent)
    }

    /// Counts one attempt in `quartzite_alerts_total`: `sent`, `retry` (still
    /// pending) or `failed`.
    pub fn count(&self, rule: &str, state: DeliveryState) {
        let label = match state {
            DeliveryState::Sent => "sent",
            DeliveryState::Pending => "retry",
            DeliveryState::Failed => "failed",
        };
        self.metrics.alert_attempt(rule, label);
    }

    /// POSTs one document. A 2xx answer is a success; anything else, or no
    /// answer within [`SEND_TIMEOUT`], is not.
    pub async fn send(&self, url: &str, delivery_id: &str, payload: &str) -> SendResult {
        let response = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("idempotency-key", delivery_id)
            .body(payload.to_string())
            .send()
            .await;
        match response {
            Ok(r) if r.status().is_success() => SendResult {
                status: Some(r.status().as_u16()),
                error: None,
            },
            Ok(r) => SendResult {
                status: Some(r.status().as_u16()),
                error: Some(format!("the receiver answered {}", r.status())),
            },
            Err(e) => SendResult {
                status: None,
                error: Some(format!("cannot reach {url}: {}", error_chain(&e))),
            },
        }
    }
}

/// What to record after an attempt: sent, pending with the next try's time,
/// or failed for good after [`MAX_ATTEMPTS`] (or when its rule is gone).
fn next_attempt(
    d: &Delivery,
    result: &SendResult,
    now_ms: i64,
    rule_exists: bool,
) -> DeliveryAttempt {
    let attempts = d.attempts + 1;
    let (state, next_at_ms) = if result.ok() {
        (DeliveryState::Sent, now_ms)
    } else if attempts >= MAX_ATTEMPTS || !rule_exists {
        (DeliveryState::Failed, now_ms)
    } else {
        (
            DeliveryState::Pending,
            now_ms + backoff_ms(attempts, &d.delivery_id),
        )
    };
    DeliveryAttempt {
        delivery_id: d.delivery_id.clone(),
        state,
        attempts,
        next_at_ms,
        status: result.status,
        error: result.error.clone(),
    }
}

/// The delay after the `attempts`-th failed attempt: 1 s, 2 s, 4 s ... up to
/// 5 min, spread by +-10% (stable per delivery, so a re-run computes the same).
pub fn backoff_ms(attempts: u32, delivery_id: &str) -> i64 {
    use std::hash::{Hash, Hasher};
    let base = BACKOFF_MS
        .saturating_mul(1u64 << attempts.saturating_sub(1).min(20))
        .min(MAX_BACKOFF_MS);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (delivery_id, attempts).hash(&mut h);
    let unit = (h.finish() % 10_000) as f64 / 10_000.0;
    let spread = 1.0 + BACKOFF_JITTER * (2.0 * unit - 1.0);
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let ms = (base as f64 * spread) as i64;
    ms
}

/// The NoOp reason of a skipped row, if it is one.
fn noop_reason(details: &Value) -> Option<&str> {
    let reason = details
        .pointer("/outcome/reason")
        .or_else(|| details.get("reason"))
        .and_then(Value::as_str)?;
    NOOP_REASONS.contains(&reason).then_some(reason)
}

/// The error of a history row in one line, for people reading the alert.
fn error_text(status: HistoryStatus, details: &Value) -> String {
    let outcome = details.get("outcome").unwrap_or(&Value::Null);
    for key in ["message", "detail"] {
        if let Some(text) = outcome.get(key).and_then(Value::as_str) {
            return text.to_string();
        }
    }
    if let Some(ms) = outcome.get("timeout_ms").and_then(Value::as_u64) {
        return format!("timed out after {ms} ms");
    }
    if let Some(text) = details.get("detail").and_then(Value::as_str) {
        return text.to_string();
    }
    if let Some(reason) = details.get("reason").and_then(Value::as_str) {
        return reason.to_string();
    }
    status.as_str().to_string()
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_within_ten_percent_and_caps() {
        for attempts in 1..=5u32 {
            let base = 1000i64 << (attempts - 1);
            let ms = backoff_ms(attempts, "d");
            assert!(
                (base * 9 / 10..=base * 11 / 10).contains(&ms),
                "{attempts}: {ms}"
            );
            assert_eq!(ms, backoff_ms(attempts, "d"), "stable per delivery");
        }
        assert!(backoff_ms(40, "d") <= 330_000);
    }

    #[test]
    fn noop_skips_are_told_from_other_skips() {
        let noop = json!({ "outcome": { "status": "skipped", "reason": "module-missing" } });
        let nobody = json!({ "reason": "no-capable-node" });
        let overlap = json!({ "reason": "overlap" });
        assert_eq!(noop_reason(&noop), Some("module-missing"));
        assert_eq!(noop_reason(&nobody), Some("no-capable-node"));
        assert_eq!(noop_reason(&overlap), None);
    }

    #[test]
    fn rules_cover_a_job_its_group_or_everything() {
        let rule = |p: Option<&str>| AlertRule {
            name: "r".into(),
            condition: AlertCondition::Misfire,
            job_pattern: p.map(str::to_string),
            threshold: 1,
            webhook: "http://x".into(),
            source: "cli".into(),
        };
        assert!(rule(None).covers("a/b"));
        assert!(rule(Some("a/*")).covers("a/b"));
        assert!(!rule(Some("a/*")).covers("ab/c"));
        assert!(rule(Some("a/b")).covers("a/b"));
        assert!(!rule(Some("a/b")).covers("a/bc"));
    }
}
