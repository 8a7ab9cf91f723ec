//! `[[job.trigger]]`: its name, kind (cron, every, at, on, event), misfire
//! policy, window and priority.

use super::*;

impl Validator<'_> {
    // -- [[job.trigger]] -----------------------------------------------------

    /// The trigger and where its explicit name is written, if it has one.
    pub(super) fn trigger(
        &mut self,
        t: &Table<'_, '_>,
        index: usize,
        job_name: &str,
    ) -> (TriggerDecl, Option<Range<usize>>) {
        self.check_keys(t, TRIGGER_KEYS);

        let mut name = format!("{job_name}-{index}");
        let mut name_span = None;
        if let Some(v) = t.get("name")
            && let Some(s) = self.string(v, &t.field("name"))
        {
            match check_part(s) {
                Ok(()) => {
                    name = s.to_owned();
                    name_span = Some(v.span());
                }
                Err(reason) => self.error(
                    v.span(),
                    &t.field("name"),
                    format!("invalid trigger name {s:?}: {reason}"),
                ),
            }
        }

        let start = t
            .get("start")
            .and_then(|v| self.timestamp(v, &t.field("start")));
        let end = t
            .get("end")
            .and_then(|v| self.timestamp(v, &t.field("end")));
        if let (Some(s), Some(e), Some(v)) = (start, end, t.get("end"))
            && s >= e
        {
            self.error(
                v.span(),
                &t.field("end"),
                format!(
                    "end ({}) must be after start ({})",
                    e.to_rfc3339(),
                    s.to_rfc3339()
                ),
            );
        }

        // Exactly one kind key; the first one written decides the kind.
        let mut kinds: Vec<(&str, Range<usize>)> = TRIGGER_KINDS
            .iter()
            .filter_map(|&k| t.key_span(k).map(|span| (k, span)))
            .collect();
        kinds.sort_by_key(|(_, span)| span.start);
        let kind_key = kinds.first().map(|(k, _)| *k);
        match kind_key {
            None => self.error(
                t.span.clone(),
                &t.path,
                "a trigger needs exactly one of `cron`, `every`, `at`, `on` or `event`",
            ),
            Some(first) => {
                for (extra, span) in kinds.iter().skip(1) {
                    self.error(
                        span.clone(),
                        &t.field(extra),
                        format!(
                            "a trigger has exactly one of `cron`, `every`, `at`, `on` or `event`; \
                             this one already has `{first}`"
                        ),
                    );
                }
            }
        }
        let has = |key: &str| kinds.iter().any(|(k, _)| *k == key);

        let tz_value = t.get("tz");
        if let Some(span) = t.key_span("tz")
            && !has("cron")
        {
            self.error(span, &t.field("tz"), "`tz` only applies to `cron` triggers");
        }
        if let Some(span) = t.key_span("repeat")
            && !has("every")
        {
            self.error(
                span,
                &t.field("repeat"),
                "`repeat` only applies to `every` triggers",
            );
        }
        if let Some(span) = t.key_span("misfire")
            && matches!(kind_key, Some("on" | "event"))
        {
            self.error(
                span,
                &t.field("misfire"),
                "`misfire` only applies to `cron`, `every` and `at` triggers",
            );
        }

        if let Some(span) = t.key_span("jitter")
            && matches!(kind_key, Some("on" | "event"))
        {
            self.error(
                span,
                &t.field("jitter"),
                "`jitter` only applies to `cron`, `every` and `at` triggers",
            );
        }
        let jitter = t
            .get("jitter")
            .and_then(|v| self.duration(v, &t.field("jitter"), Duration::ZERO))
            .unwrap_or(Duration::ZERO);

        let kind = match kind_key {
            Some("cron") => self.cron(t, tz_value),
            Some("every") => self.every(t, start),
            Some("at") => t
                .get("at")
                .and_then(|v| self.timestamp(v, &t.field("at")))
                .map(|at| TriggerKind::At(at.timestamp_millis())),
            Some("event") => t.get("event").and_then(|v| {
                let field = t.field("event");
                let name = self.string(v, &field)?;
                match crate::domain::events::check_event_name(name) {
                    Ok(()) => Some(TriggerKind::Event {
                        name: name.to_owned(),
                    }),
                    Err(reason) => {
                        self.error(v.span(), &field, reason);
                        None
                    }
                }
            }),
            Some("on") => t.get("on").and_then(|v| {
                let field = t.field("on");
                match self.string(v, &field)? {
                    "start" => Some(TriggerKind::OnStart),
                    "once" => Some(TriggerKind::Once),
                    other => {
                        self.error(
                            v.span(),
                            &field,
                            format!("invalid `on` {other:?}: expected \"start\" or \"once\""),
                        );
                        None
                    }
                }
            }),
            _ => None,
        };

        let calendars = self.trigger_calendars(t, &name, matches!(kind_key, Some("on" | "event")));
        let misfire = self
            .parsed::<MisfirePolicy>(t, "misfire")
            .unwrap_or_default();
        let priority = t
            .get("priority")
            .and_then(|v| self.priority(v, &t.field("priority")));

        let decl = TriggerDecl {
            name,
            // Only a placeholder when an error has been reported.
            kind: kind.unwrap_or(TriggerKind::OnStart),
            misfire,
            start,
            end,
            priority,
            jitter,
            calendars,
        };
        (decl, name_span)
    }

    /// `calendar = "NAME"` or a list of names, each declared by a
    /// `[[calendar]]` of this manifest.
    fn trigger_calendars(
        &mut self,
        t: &Table<'_, '_>,
        trigger: &str,
        not_scheduled: bool,
    ) -> Vec<String> {
        let Some(v) = t.get("calendar") else {
            return Vec::new();
        };
        let field = t.field("calendar");
        if not_scheduled {
            self.error(
                v.span(),
                &field,
                "`calendar` only applies to `cron`, `every` and `at` triggers",
            );
            return Vec::new();
        }
        let names: Vec<String> = match v.get_ref() {
            DeValue::String(s) => vec![s.to_string()],
            DeValue::Array(items) => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    if let Some(s) = self.string(item, &format!("{field}[{}]", i + 1)) {
                        out.push(s.to_owned());
                    }
                }
                out
            }
            _ => {
                self.type_error(v, &field, "a calendar name or a list of names");
                return Vec::new();
            }
        };
        if let Err(m) = crate::schedule::calendar::check_names(&names) {
            self.error(v.span(), &field, m);
            return Vec::new();
        }
        for name in &names {
            if !self.calendars.iter().any(|c| &c.name == name) {
                self.error(
                    v.span(),
                    &field,
                    format!(
                        "trigger {trigger:?} of job {:?} names calendar {name:?}, which no \
                         [[calendar]] in this manifest declares",
                        self.job_key
                    ),
                );
            }
        }
        names
    }

    fn cron(&mut self, t: &Table<'_, '_>, tz_value: Option<&Value<'_>>) -> Option<TriggerKind> {
        let cron_field = t.field("cron");
        let expr = t.get("cron").and_then(|v| self.string(v, &cron_field));
        let tz_field = t.field("tz");
        let tz = match tz_value {
            Some(v) => self.string(v, &tz_field),
            None => Some(DEFAULT_TIME_ZONE),
        };
        let (expr, tz) = (expr?, tz?);
        let cron_span = t.get("cron").map(Spanned::span).unwrap_or(t.span.clone());
        match CronSchedule::parse(expr, tz) {
            Ok(c) if c.next_after(Utc::now()).is_none() => {
                self.error(
                    cron_span,
                    &cron_field,
                    format!("{expr:?} can never fire: no time matches it"),
                );
                None
            }
            Ok(_) => Some(TriggerKind::Cron {
                expr: expr.to_owned(),
                tz: tz.to_owned(),
            }),
            Err(e @ CronError::UnknownTimeZone { .. }) => {
                let tz_span = tz_value.map_or(cron_span.clone(), Spanned::span);
                self.error(tz_span, &tz_field, e.to_string());
                // Still check the expression on its own.
                if let Err(e) = CronSchedule::parse(expr, DEFAULT_TIME_ZONE) {
                    self.error(cron_span, &cron_field, e.to_string());
                }
                None
            }
            Err(e) => {
                self.error(cron_span, &cron_field, e.to_string());
                None
            }
        }
    }

    fn every(&mut self, t: &Table<'_, '_>, start: Option<DateTime<Utc>>) -> Option<TriggerKind> {
        let field = t.field("every");
        let value = t.get("every")?;
        // Both are checked before either error ends the trigger.
        let period = self.duration(value, &field, Duration::ZERO);
        let repeat = match t.get("repeat") {
            None => Some(None),
            Some(v) => {
                let repeat_field = t.field("repeat");
                self.integer(v, &repeat_field)
                    .and_then(|n| match u64::try_from(n) {
                        Ok(n) => Some(n),
                        Err(_) => {
                            self.error(
                                v.span(),
                                &repeat_field,
                                format!("repeat must not be negative, not {n}"),
                            );
                            None
                        }
                    })
                    .map(Some)
            }
        };
        let start = start.unwrap_or(DateTime::UNIX_EPOCH);
        let period = period.and_then(|period| match IntervalSchedule::new(start, period, None) {
            Ok(_) => Some(period),
            Err(e) => {
                self.error(value.span(), &field, e.to_string());
                None
            }
        });
        Some(TriggerKind::Every {
            period_ms: i64::try_from(period?.as_millis()).unwrap_or(i64::MAX),
            repeat: repeat?,
        })
    }
}
