//! Events and alerts: emitting as an operator, alert rules, test alerts,
//! deliveries, and the JSON both surfaces print.

use super::views::fmt_ms;
use super::{Admin, AdminError, Caller, Done, Status};
use crate::domain::events;
use crate::engine::alerts::Alerter;
use crate::store::Store;
use crate::store::events::{
    AlertCondition, AlertRule, Delivery, DeliveryAttempt, DeliveryFilter, DeliveryPut,
    DeliveryState, EmitOutcome, EventPut, EventRecord,
};
use serde_json::{Value, json};

/// An input error whose message is `field: message`.
fn invalid(field: &'static str, message: impl Into<String>) -> AdminError {
    AdminError::invalid(field, format!("{field}: {}", message.into()))
}

/// Emits an event as an operator (depth 0). `payload` is JSON text; none is `null`.
///
/// # Errors
///
/// A bad name, key or payload ([`AdminError::Invalid`]), or a store error.
async fn emit(
    store: &dyn Store,
    name: &str,
    payload: Option<&str>,
    key: Option<&str>,
) -> Result<EmitOutcome, AdminError> {
    events::check_event_name(name).map_err(|m| invalid("name", m))?;
    let payload = payload
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .unwrap_or("null");
    events::check_event_input(key, payload).map_err(|m| {
        invalid(
            if m.starts_with("idempotency") {
                "key"
            } else {
                "data"
            },
            m,
        )
    })?;
    Ok(store
        .event_emit(&EventPut::operator(name, payload, key))
        .await?)
}

/// The JSON of an emit, as both the CLI and the API print it.
pub fn emit_view(name: &str, outcome: &EmitOutcome) -> Value {
    match outcome {
        EmitOutcome::Accepted {
            event_id,
            fires,
            paused,
        } => json!({
            "event": name,
            "event_id": event_id,
            "duplicate": false,
            "fires": fires,
            "fire_count": fires.len(),
            "paused": paused,
        }),
        // Nothing started now: `fire_count` is what the first emit started.
        EmitOutcome::Duplicate { event_id, fires } => json!({
            "event": name,
            "event_id": event_id,
            "duplicate": true,
            "fires": [],
            "fire_count": fires,
            "paused": [],
        }),
        EmitOutcome::DepthExceeded { depth, limit } => json!({
            "event": name,
            "error": format!("depth {depth} is over the limit {limit}"),
        }),
        // An operator's event has no chain nor job above it: these answer only
        // a job's emit, and are printed alike should one ever reach here.
        EmitOutcome::ChainBudgetExceeded { root, limit } => json!({
            "event": name,
            "error": format!("the chain of event {root} holds its budget of {limit} events"),
        }),
        EmitOutcome::JobFiresExceeded { waiting, limit } => json!({
            "event": name,
            "error": format!("{waiting} fires of the emitting job's events are waiting, at most {limit}"),
        }),
    }
}

/// A stored event as JSON, its payload parsed.
pub fn event_view(e: &EventRecord) -> Value {
    let mut v = serde_json::to_value(e).unwrap_or_default();
    v["payload"] = serde_json::from_str(&e.payload).unwrap_or(Value::Null);
    v["created_at"] = fmt_ms(Some(e.created_ms));
    v
}

/// A delivery as JSON, its document parsed.
pub fn delivery_view(d: &Delivery) -> Value {
    let mut v = serde_json::to_value(d).unwrap_or_default();
    v["payload"] = serde_json::from_str(&d.payload).unwrap_or(Value::Null);
    v["created_at"] = fmt_ms(Some(d.created_ms));
    v
}

/// An alert rule from an operator's fields.
///
/// # Errors
///
/// The first field that is not acceptable.
pub fn rule_from_input(
    name: &str,
    on: &str,
    job: Option<&str>,
    after: Option<u32>,
    webhook: &str,
    source: &str,
) -> Result<AlertRule, AdminError> {
    crate::domain::check_part(name)
        .map_err(|reason| invalid("name", format!("invalid alert name {name:?}: {reason}")))?;
    let condition = AlertCondition::parse(on).ok_or_else(|| {
        invalid(
            "on",
            format!(
                "{on:?}: expected permanent-failure, consecutive-failures, misfire or noop-skip"
            ),
        )
    })?;
    if let Some(job) = job {
        events::check_job_pattern(job).map_err(|m| invalid("job", m))?;
    }
    let threshold = match (condition, after) {
        (AlertCondition::ConsecutiveFailures, Some(n @ 1..=1000)) => n,
        (AlertCondition::ConsecutiveFailures, Some(n)) => {
            return Err(invalid("after", format!("{n}: expected 1 to 1000")));
        }
        (AlertCondition::ConsecutiveFailures, None) => {
            return Err(invalid(
                "after",
                "consecutive-failures needs how many failed runs in a row",
            ));
        }
        (_, Some(_)) => {
            return Err(invalid(
                "after",
                "only consecutive-failures alerts take a count",
            ));
        }
        (_, None) => 1,
    };
    events::check_webhook(webhook).map_err(|m| invalid("webhook", m))?;
    Ok(AlertRule {
        name: name.to_string(),
        condition,
        job_pattern: job.filter(|j| *j != "*").map(str::to_string),
        threshold,
        webhook: webhook.to_string(),
        source: source.to_string(),
    })
}

/// Sends a sample alert to a rule's webhook now, and records the delivery and
/// its result like any other.
///
/// # Errors
///
/// No such rule, or a store error. A receiver that fails is a result, not an error.
async fn alert_test(
    store: &dyn Store,
    alerter: &Alerter,
    rule_name: &str,
) -> Result<Value, AdminError> {
    let rule = store
        .alert_rule_list()
        .await?
        .into_iter()
        .find(|r| r.name == rule_name)
        .ok_or_else(|| AdminError::NotFound(format!("no alert rule {rule_name:?}")))?;
    let now = store.now_ms().await?;
    let (delivery_id, doc) = alerter.sample(&rule, now);
    let payload = doc.to_string();
    // Recorded first, as pending: a test that crashes mid-send is still on record.
    store
        .alert_enqueue(&[DeliveryPut {
            delivery_id: delivery_id.clone(),
            rule: rule.name.clone(),
            dedup_key: format!("test|{delivery_id}"),
            job_key: None,
            history_id: None,
            payload: payload.clone(),
        }])
        .await?;
    let result = alerter.send(&rule.webhook, &delivery_id, &payload).await;
    let state = if result.ok() {
        DeliveryState::Sent
    } else {
        DeliveryState::Failed
    };
    alerter.count(&rule.name, state);
    store
        .alert_attempt(&DeliveryAttempt {
            delivery_id: delivery_id.clone(),
            state,
            attempts: 1,
            next_at_ms: now,
            status: result.status,
            error: result.error.clone(),
        })
        .await?;
    Ok(json!({
        "rule": rule.name,
        "webhook": rule.webhook,
        "delivery_id": delivery_id,
        "state": state.as_str(),
        "status": result.status,
        "error": result.error,
        "payload": doc,
    }))
}

impl Admin {
    /// Emits an event as an operator: every job subscribed to `name` fires
    /// once (202), or nothing starts (200: a duplicate key, or a limit).
    ///
    /// # Errors
    ///
    /// A bad name, key or payload, or a store error.
    pub async fn event_emit(
        &self,
        caller: &Caller,
        name: &str,
        payload: Option<&str>,
        key: Option<&str>,
    ) -> Result<Done, AdminError> {
        self.audited(caller, "event.emit", name, async {
            let outcome = emit(self.store.as_ref(), name, payload, key).await?;
            self.metrics.event_emitted(&outcome);
            let status = match &outcome {
                EmitOutcome::Accepted { fires, .. } => {
                    if !fires.is_empty() {
                        self.scheduler.wake();
                    }
                    Status::Accepted
                }
                _ => Status::Ok,
            };
            let view = emit_view(name, &outcome);
            let summary =
                json!({ "event_id": view["event_id"], "key": key, "duplicate": view["duplicate"] });
            Ok(Done::new(status, view, summary))
        })
        .await
    }

    /// Accepted events (of one name, or all), newest first.
    ///
    /// # Errors
    ///
    /// When the store fails.
    pub async fn event_list(&self, name: Option<&str>, limit: i64) -> Result<Value, AdminError> {
        let events = self.store.event_list(name, limit).await?;
        Ok(Value::Array(events.iter().map(event_view).collect()))
    }

    /// The alert rules.
    ///
    /// # Errors
    ///
    /// When the store fails.
    pub async fn alert_list(&self) -> Result<Value, AdminError> {
        Ok(serde_json::to_value(self.store.alert_rule_list().await?).unwrap_or_default())
    }

    /// Adds or replaces an alert rule; answers the rule.
    ///
    /// # Errors
    ///
    /// The first field that is not acceptable, or a store error.
    pub async fn alert_put(
        &self,
        caller: &Caller,
        name: &str,
        on: &str,
        job: Option<&str>,
        after: Option<u32>,
        webhook: &str,
    ) -> Result<Done, AdminError> {
        self.audited(caller, "alert.put", name, async {
            let rule = rule_from_input(name, on, job, after, webhook, caller.surface)?;
            self.store.alert_rule_put(&rule).await?;
            let view = serde_json::to_value(&rule).unwrap_or_default();
            Ok(Done::new(Status::Ok, view.clone(), view))
        })
        .await
    }

    /// Deletes an alert rule.
    ///
    /// # Errors
    ///
    /// No such rule, or a store error.
    pub async fn alert_delete(&self, caller: &Caller, name: &str) -> Result<Done, AdminError> {
        self.audited(caller, "alert.delete", name, async {
            if !self.store.alert_rule_delete(name).await? {
                return Err(AdminError::NotFound(format!("no alert rule {name:?}")));
            }
            Ok(Done::new(
                Status::Ok,
                json!({ "name": name, "deleted": true }),
                json!({}),
            ))
        })
        .await
    }

    /// Sends a sample alert to a rule's webhook now, and records the delivery.
    /// A receiver that fails is a result (`state: failed`), not an error.
    ///
    /// # Errors
    ///
    /// No such rule, or a store error.
    pub async fn alert_test(&self, caller: &Caller, rule: &str) -> Result<Done, AdminError> {
        self.audited(caller, "alert.test", rule, async {
            let result = alert_test(self.store.as_ref(), &self.alerter, rule).await?;
            let summary = json!({ "state": result["state"], "status": result["status"] });
            Ok(Done::new(Status::Ok, result, summary))
        })
        .await
    }

    /// Alert deliveries, newest first.
    ///
    /// # Errors
    ///
    /// When the store fails.
    pub async fn delivery_list(&self, filter: &DeliveryFilter) -> Result<Value, AdminError> {
        let rows = self.store.alert_delivery_list(filter).await?;
        Ok(Value::Array(rows.iter().map(delivery_view).collect()))
    }
}
