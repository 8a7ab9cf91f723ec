//! Exclusion calendars, for the API and the CLI's `--db` alike: put (checked
//! field by field, its bases resolved), list, show (with the triggers using
//! it), delete (refused while something uses it). Every change is audited.

use super::views::fmt_ms;
use super::{Admin, AdminError, Caller, Done, Status};
pub use crate::schedule::calendar::CalendarInput;
use crate::store::calendars::CalendarRow;
use serde_json::{Value, json};

/// A calendar as JSON: its definition, source and when it was stored.
pub fn calendar_view(row: &CalendarRow) -> Value {
    let mut v = serde_json::to_value(row).unwrap_or_default();
    v["updated_at"] = fmt_ms(Some(row.updated_ms));
    v
}

impl Admin {
    /// Every calendar, by name.
    ///
    /// # Errors
    ///
    /// When the store fails.
    pub async fn calendar_list(&self) -> Result<Value, AdminError> {
        let rows = self.store.calendar_list().await?;
        Ok(Value::Array(rows.iter().map(calendar_view).collect()))
    }

    /// One calendar, with the triggers that name it (`used_by`).
    ///
    /// # Errors
    ///
    /// No such calendar, or a store error.
    pub async fn calendar_show(&self, name: &str) -> Result<Value, AdminError> {
        let row = self
            .store
            .calendar_get(name)
            .await?
            .ok_or_else(|| AdminError::NotFound(format!("no calendar {name:?}")))?;
        let used_by: Vec<String> = self
            .store
            .trigger_list(None)
            .await?
            .into_iter()
            .filter(|t| t.spec.calendars.iter().any(|c| c == name))
            .map(|t| t.trigger_key)
            .collect();
        let mut v = calendar_view(&row);
        v["used_by"] = json!(used_by);
        Ok(v)
    }

    /// Stores (or replaces) calendar `name`. The triggers it changes have
    /// their next fire recomputed at once (`recomputed` in the answer).
    ///
    /// # Errors
    ///
    /// A field that is not acceptable (422), a base that does not exist or a
    /// cycle of bases (409), or a store error.
    pub async fn calendar_put(
        &self,
        caller: &Caller,
        name: &str,
        input: &CalendarInput,
    ) -> Result<Done, AdminError> {
        self.audited(caller, "calendar.put", name, async {
            let now = self.store.now_ms().await?;
            let def = input
                .clone()
                .into_def(name, now)
                .map_err(|e| AdminError::invalid(e.field, e.to_string()))?;
            let recomputed = self.store.calendar_put(&def, caller.surface).await?;
            if !recomputed.is_empty() {
                self.scheduler.wake();
            }
            let row = self
                .store
                .calendar_get(name)
                .await?
                .ok_or_else(|| AdminError::NotFound(format!("no calendar {name:?}")))?;
            let mut view = calendar_view(&row);
            view["recomputed"] = json!(recomputed);
            let summary = json!({ "kind": def.rule.kind(), "base": def.base });
            Ok(Done::new(Status::Ok, view, summary))
        })
        .await
    }

    /// Deletes a calendar that no trigger and no other calendar uses.
    ///
    /// # Errors
    ///
    /// No such calendar (404), one in use (409, naming its users), or a store error.
    pub async fn calendar_delete(&self, caller: &Caller, name: &str) -> Result<Done, AdminError> {
        self.audited(caller, "calendar.delete", name, async {
            if !self.store.calendar_delete(name).await? {
                return Err(AdminError::NotFound(format!("no calendar {name:?}")));
            }
            Ok(Done::new(
                Status::Ok,
                json!({ "name": name, "deleted": true }),
                json!({}),
            ))
        })
        .await
    }

    /// Refuses a trigger naming a calendar that is not stored, before the
    /// store would (as a conflict): the operator gets the field.
    pub(crate) async fn check_calendars_exist(&self, names: &[String]) -> Result<(), AdminError> {
        for name in names {
            if self.store.calendar_get(name).await?.is_none() {
                return Err(AdminError::invalid(
                    "calendar",
                    format!(
                        "calendar: no calendar {name:?}; store it first with \
                         `quartzite calendar put {name} ...` or PUT /api/v1/calendars/{name}"
                    ),
                ));
            }
        }
        Ok(())
    }
}
