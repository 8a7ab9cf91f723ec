//! Walking a manifest's document tree into domain values, collecting every
//! error on the way (see the module docs of [`super`]). The triggers of a
//! job are read in [`trigger`].

use super::*;

mod trigger;

/// `check_files`: also report module files that do not exist, in the same
/// round as every other error (set when the manifest was read from disk).
pub(super) fn parse_with_base(
    text: &str,
    path: &Path,
    base: &Path,
    check_files: bool,
) -> Result<Manifest, ManifestErrors> {
    let mut validator = Validator::new(path, text);
    validator.check_files = check_files;
    let file = path.to_path_buf();
    let Some(root) =
        diagnostics::parse_document(&mut validator.diagnostics, |line, column, message| {
            ManifestError {
                file: file.clone(),
                line,
                column,
                field: String::new(),
                message,
            }
        })
    else {
        return Err(validator.into_errors());
    };
    let table = Table {
        table: root.get_ref(),
        span: root.span(),
        path: String::new(),
    };
    let (modules, jobs, alerts) = validator.document(&table, base);
    if validator.diagnostics.is_empty() {
        Ok(Manifest {
            path: path.to_path_buf(),
            modules,
            jobs,
            alerts,
            calendars: validator.calendars,
        })
    } else {
        Err(validator.into_errors())
    }
}

/// The error of a manifest file that is not UTF-8, at the first bad byte.
pub(super) fn not_utf8(path: &Path, prefix: &str, valid: usize) -> ManifestErrors {
    let mut validator = Validator::new(path, prefix);
    validator.error(valid..valid, "", "the manifest is not valid UTF-8");
    validator.into_errors()
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

type Value<'i> = Spanned<DeValue<'i>>;

/// A TOML table together with where it is and its field path.
struct Table<'t, 'i> {
    table: &'t DeTable<'i>,
    /// The table's header (`[[job]]`) or inline `{ ... }`.
    span: Range<usize>,
    /// Field path of the table, e.g. `job[2]`; empty for the document.
    path: String,
}

impl<'t, 'i> Table<'t, 'i> {
    fn field(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn get(&self, key: &str) -> Option<&'t Value<'i>> {
        self.table.get(key)
    }

    /// Where `key` is written, if present.
    fn key_span(&self, key: &str) -> Option<Range<usize>> {
        self.table.get_key_value(key).map(|(k, _)| k.span())
    }
}

/// Collects errors while turning the document tree into domain values.
struct Validator<'a> {
    file: &'a Path,
    /// Every error found, reported in file order.
    diagnostics: Diagnostics<'a, ManifestError>,
    /// Whether module paths are checked to name existing files.
    check_files: bool,
    /// The `[[calendar]]`s, read before the jobs whose triggers name them.
    calendars: Vec<crate::schedule::calendar::CalendarDef>,
    /// Where each of `calendars` is, and its field path, for the chain check.
    calendar_at: Vec<(Range<usize>, String)>,
    /// The key of the job whose triggers are being read, for their messages.
    job_key: String,
}

/// What the cross-checks need to know about a `[[module]]`.
struct ModuleSeen {
    path: String,
    name: String,
    name_span: Range<usize>,
    version: Option<String>,
}

/// What the cross-checks need to know about a `[[job]]`.
struct JobSeen {
    path: String,
    key: Option<(String, Range<usize>)>,
    module: Option<(ModuleSpec, Range<usize>)>,
}

impl<'a> Validator<'a> {
    fn new(file: &'a Path, text: &'a str) -> Self {
        Validator {
            file,
            diagnostics: Diagnostics::new(text),
            check_files: false,
            calendars: Vec::new(),
            calendar_at: Vec::new(),
            job_key: String::new(),
        }
    }

    /// 1-based line and column (in characters) of byte `offset`.
    fn position(&self, offset: usize) -> (usize, usize) {
        self.diagnostics.position(offset)
    }

    fn error(&mut self, span: Range<usize>, field: &str, message: impl Into<String>) {
        let file = self.file.to_path_buf();
        let (field, message) = (field.to_owned(), message.into());
        self.diagnostics.push(&span, |line, column| ManifestError {
            file,
            line,
            column,
            field,
            message,
        });
    }

    fn into_errors(self) -> ManifestErrors {
        ManifestErrors(self.diagnostics.into_sorted())
    }

    // -- the document -------------------------------------------------------

    fn document(
        &mut self,
        root: &Table<'_, '_>,
        base: &Path,
    ) -> (Vec<ModuleDecl>, Vec<JobDecl>, Vec<AlertRule>) {
        self.check_keys(root, TOP_KEYS);

        let mut modules = Vec::new();
        let mut modules_seen = Vec::new();
        for entry in self.array_of_tables(root, "module") {
            let (decl, seen) = self.module(&entry, base);
            modules.push(decl);
            modules_seen.extend(seen);
        }

        for entry in self.array_of_tables(root, "calendar") {
            self.calendar(&entry);
        }
        self.calendar_chains();

        let mut jobs = Vec::new();
        let mut jobs_seen = Vec::new();
        for entry in self.array_of_tables(root, "job") {
            let (decl, seen) = self.job(&entry);
            jobs.push(decl);
            jobs_seen.push(seen);
        }

        let mut alerts: Vec<AlertRule> = Vec::new();
        for entry in self.array_of_tables(root, "alert") {
            if let Some(rule) = self.alert(&entry) {
                if alerts.iter().any(|a| a.name == rule.name) {
                    self.error(
                        entry.span.clone(),
                        &entry.field("name"),
                        format!("duplicate alert name {:?}", rule.name),
                    );
                } else {
                    alerts.push(rule);
                }
            }
        }

        self.cross_check(&modules_seen, &jobs_seen);
        (modules, jobs, alerts)
    }

    // -- [[calendar]] --------------------------------------------------------

    /// A `[[calendar]]`: its fields as the API takes them, checked by
    /// `schedule::calendar`, errors placed at the key they concern.
    fn calendar(&mut self, t: &Table<'_, '_>) {
        self.check_keys(t, CALENDAR_KEYS);
        let Some(name) = self
            .required(t, "name")
            .and_then(|v| self.string(v, &t.field("name")).map(str::to_owned))
        else {
            return;
        };
        let mut fields = serde_json::Map::new();
        for key in CALENDAR_KEYS.iter().filter(|k| **k != "name") {
            if let Some(v) = t.get(key) {
                let value = self.json(v, &t.field(key));
                fields.insert((*key).to_owned(), value);
            }
        }
        let input: crate::schedule::calendar::CalendarInput =
            match serde_json::from_value(serde_json::Value::Object(fields)) {
                Ok(input) => input,
                Err(e) => {
                    // A value of the wrong type (`dates = "2030-01-01"`).
                    self.error(t.span.clone(), &t.path, format!("calendar {name:?}: {e}"));
                    return;
                }
            };
        // An rrule without DTSTART starts the day the manifest is read.
        let now = chrono::Utc::now().timestamp_millis();
        match input.into_def(&name, now) {
            Ok(def) => {
                if self.calendars.iter().any(|c| c.name == def.name) {
                    let span = t.get("name").map_or(t.span.clone(), |v| v.span());
                    self.error(
                        span,
                        &t.field("name"),
                        format!("duplicate calendar name {name:?}"),
                    );
                } else {
                    let span = t.key_span("base").unwrap_or_else(|| t.span.clone());
                    self.calendar_at.push((span, t.field("base")));
                    self.calendars.push(def);
                }
            }
            Err(e) => {
                let key = if e.field == "kind" && t.get("kind").is_none() {
                    "kind"
                } else {
                    e.field
                };
                let span = t.key_span(key).unwrap_or_else(|| t.span.clone());
                self.error(span, &t.field(key), e.message);
            }
        }
    }

    /// After every `[[calendar]]` is read: each base names one, and bases
    /// form no cycle.
    fn calendar_chains(&mut self) {
        let set = crate::schedule::calendar::CalendarSet::new(self.calendars.clone());
        let names: Vec<String> = self.calendars.iter().map(|c| c.name.clone()).collect();
        for (i, name) in names.iter().enumerate() {
            if let Err(e) = set.chain(name) {
                let (span, field) = self.calendar_at[i].clone();
                self.error(span, &field, e.message);
            }
        }
    }

    // -- [[alert]] -----------------------------------------------------------

    fn alert(&mut self, t: &Table<'_, '_>) -> Option<AlertRule> {
        self.check_keys(t, ALERT_KEYS);
        let name = self.required(t, "name").and_then(|v| {
            let s = self.string(v, &t.field("name"))?;
            match check_part(s) {
                Ok(()) => Some(s.to_owned()),
                Err(reason) => {
                    self.error(
                        v.span(),
                        &t.field("name"),
                        format!("invalid alert name {s:?}: {reason}"),
                    );
                    None
                }
            }
        });
        let condition = self.required(t, "on").and_then(|v| {
            let s = self.string(v, &t.field("on"))?;
            let parsed = AlertCondition::parse(s);
            if parsed.is_none() {
                self.error(
                    v.span(),
                    &t.field("on"),
                    format!(
                        "invalid alert condition {s:?}: expected \"permanent-failure\", \
                         \"consecutive-failures\", \"misfire\" or \"noop-skip\""
                    ),
                );
            }
            parsed
        });
        let job = t.get("job").and_then(|v| {
            let s = self.string(v, &t.field("job"))?;
            match check_job_pattern(s) {
                Ok(()) => Some(s.to_owned()),
                Err(reason) => {
                    self.error(v.span(), &t.field("job"), reason);
                    None
                }
            }
        });
        let after = match t.get("after") {
            None => None,
            Some(v) => {
                let n = self.integer(v, &t.field("after"))?;
                if condition.is_some_and(|c| c != AlertCondition::ConsecutiveFailures) {
                    self.error(
                        v.span(),
                        &t.field("after"),
                        "`after` only applies to `consecutive-failures` alerts",
                    );
                }
                match u32::try_from(n) {
                    Ok(n @ 1..=1000) => Some(n),
                    _ => {
                        self.error(
                            v.span(),
                            &t.field("after"),
                            format!("after must be 1 to 1000, not {n}"),
                        );
                        None
                    }
                }
            }
        };
        if condition == Some(AlertCondition::ConsecutiveFailures) && t.get("after").is_none() {
            self.error(
                t.span.clone(),
                &t.field("after"),
                "a `consecutive-failures` alert needs `after`: how many failed runs in a row",
            );
        }
        let webhook = self.required(t, "webhook").and_then(|v| {
            let s = self.string(v, &t.field("webhook"))?;
            match check_webhook(s) {
                Ok(()) => Some(s.to_owned()),
                Err(reason) => {
                    self.error(v.span(), &t.field("webhook"), reason);
                    None
                }
            }
        });
        Some(AlertRule {
            name: name?,
            condition: condition?,
            job_pattern: job,
            threshold: after.unwrap_or(1),
            webhook: webhook?,
            source: "manifest".into(),
        })
    }

    fn cross_check(&mut self, modules: &[ModuleSeen], jobs: &[JobSeen]) {
        let mut by_name: HashMap<&str, &ModuleSeen> = HashMap::new();
        for module in modules {
            match by_name.get(module.name.as_str()) {
                Some(first) => {
                    let (line, _) = self.position(first.name_span.start);
                    self.error(
                        module.name_span.clone(),
                        &format!("{}.name", module.path),
                        format!(
                            "duplicate module name {:?} (first declared on line {line})",
                            module.name
                        ),
                    );
                }
                None => {
                    by_name.insert(&module.name, module);
                }
            }
        }

        let mut by_key: HashMap<&str, usize> = HashMap::new();
        for job in jobs {
            if let Some((key, span)) = &job.key {
                match by_key.get(key.as_str()) {
                    Some(&first) => {
                        let (line, _) = self.position(first);
                        self.error(
                            span.clone(),
                            &format!("{}.key", job.path),
                            format!("duplicate job key {key:?} (first declared on line {line})"),
                        );
                    }
                    None => {
                        by_key.insert(key, span.start);
                    }
                }
            }
            if let Some((ModuleSpec::Version { name, version }, span)) = &job.module
                && let Some(declared) = by_name.get(name.as_str())
                && let Some(declared_version) = &declared.version
                && declared_version != version
            {
                let (line, _) = self.position(declared.name_span.start);
                self.error(
                    span.clone(),
                    &format!("{}.module", job.path),
                    format!(
                        "module {name:?} is declared with version {declared_version:?} \
                         on line {line}, not {version:?}"
                    ),
                );
            }
        }
    }

    // -- [[module]] ----------------------------------------------------------

    fn module(&mut self, t: &Table<'_, '_>, base: &Path) -> (ModuleDecl, Option<ModuleSeen>) {
        self.check_keys(t, MODULE_KEYS);
        let mut seen = None;
        let mut name = String::new();
        if let Some(v) = self.required(t, "name")
            && let Some(s) = self.string(v, &t.field("name"))
        {
            match check_module_name(s) {
                Ok(()) => {
                    name = s.to_owned();
                    seen = Some(ModuleSeen {
                        path: t.path.clone(),
                        name: name.clone(),
                        name_span: v.span(),
                        version: None,
                    });
                }
                Err(reason) => {
                    self.error(
                        v.span(),
                        &t.field("name"),
                        format!("invalid module name {s:?}: {reason}"),
                    );
                }
            }
        }
        let mut path = PathBuf::new();
        if let Some(v) = self.required(t, "path")
            && let Some(s) = self.string(v, &t.field("path"))
        {
            if s.is_empty() {
                self.error(v.span(), &t.field("path"), "the module path is empty");
            } else {
                path = base.join(s);
                if self.check_files && !path.is_file() {
                    self.error(
                        v.span(),
                        &t.field("path"),
                        format!("module-missing: no file {}", path.display()),
                    );
                }
            }
        }
        let mut version = None;
        if let Some(v) = t.get("version")
            && let Some(s) = self.string(v, &t.field("version"))
        {
            match check_version(s) {
                Ok(()) => version = Some(s.to_owned()),
                Err(reason) => self.error(
                    v.span(),
                    &t.field("version"),
                    format!("invalid module version {s:?}: {reason}"),
                ),
            }
        }
        if let Some(seen) = &mut seen {
            seen.version.clone_from(&version);
        }
        (
            ModuleDecl {
                name,
                path,
                version,
            },
            seen,
        )
    }

    // -- [[job]] -------------------------------------------------------------

    fn job(&mut self, t: &Table<'_, '_>) -> (JobDecl, JobSeen) {
        self.check_keys(t, JOB_KEYS);
        let mut seen = JobSeen {
            path: t.path.clone(),
            key: None,
            module: None,
        };

        let (mut group, mut name) = (String::new(), String::new());
        if let Some(v) = self.required(t, "key")
            && let Some(s) = self.string(v, &t.field("key"))
        {
            match parse_job_key(s) {
                Ok((g, n)) => {
                    group = g.to_owned();
                    name = n.to_owned();
                    seen.key = Some((s.to_owned(), v.span()));
                }
                Err(reason) => {
                    // Still name default triggers after something recognisable.
                    name = s.rsplit('/').next().unwrap_or(s).to_owned();
                    self.error(
                        v.span(),
                        &t.field("key"),
                        format!("invalid job key {s:?}: {reason}"),
                    );
                }
            }
        }

        let mut module = ModuleSpec::Latest(String::new());
        if let Some(v) = self.required(t, "module")
            && let Some(s) = self.string(v, &t.field("module"))
        {
            match s.parse::<ModuleSpec>() {
                Ok(spec) => {
                    seen.module = Some((spec.clone(), v.span()));
                    module = spec;
                }
                Err(e) => self.error(v.span(), &t.field("module"), e.0),
            }
        }

        let data = t
            .get("data")
            .map_or(serde_json::Value::Null, |v| self.json(v, &t.field("data")));
        if let Some(v) = t.get("data")
            && let Err(e) = crate::domain::job_data_text(Some(&data))
        {
            self.error(v.span(), &t.field("data"), e);
        }
        let overlap = self.parsed::<Overlap>(t, "overlap").unwrap_or_default();
        let timeout = t
            .get("timeout")
            .and_then(|v| self.duration(v, &t.field("timeout"), MIN_DURATION))
            .unwrap_or(DEFAULT_TIMEOUT);
        let max_memory = t
            .get("max_memory")
            .and_then(|v| self.size(v, &t.field("max_memory")))
            .unwrap_or(DEFAULT_MAX_MEMORY);
        let kv_max_keys = t.get("kv_max_keys").and_then(|v| {
            let field = t.field("kv_max_keys");
            let n = self.integer(v, &field)?;
            match u64::try_from(n).ok().filter(|&n| n > 0) {
                Some(n) => Some(n),
                None => {
                    self.error(
                        v.span(),
                        &field,
                        format!("invalid key count {n}: must be positive"),
                    );
                    None
                }
            }
        });
        let kv_max_bytes = t
            .get("kv_max_bytes")
            .and_then(|v| self.size(v, &t.field("kv_max_bytes")));
        let requests_recovery = t
            .get("requests_recovery")
            .and_then(|v| self.boolean(v, &t.field("requests_recovery")))
            .unwrap_or(false);
        let priority = t
            .get("priority")
            .and_then(|v| self.priority(v, &t.field("priority")))
            .unwrap_or(DEFAULT_PRIORITY);
        let paused = t
            .get("paused")
            .and_then(|v| self.boolean(v, &t.field("paused")))
            .unwrap_or(false);
        let pause_on_failure = t.get("pause_on_failure").and_then(|v| {
            let field = t.field("pause_on_failure");
            let n = self.integer(v, &field)?;
            match u32::try_from(n).ok().filter(|&n| n >= 1) {
                Some(n) => Some(n),
                None => {
                    self.error(
                        v.span(),
                        &field,
                        format!("pause_on_failure must be a count of failed runs from 1, not {n}"),
                    );
                    None
                }
            }
        });
        let retry = self
            .table(t, "retry")
            .map_or_else(RetryPolicy::default, |r| self.retry(&r));
        let flow = self.flow(t);
        let grants = t
            .get("grants")
            .map(|v| self.grants(v, &t.field("grants")))
            .unwrap_or_default();

        let mut triggers: Vec<TriggerDecl> = Vec::new();
        let mut trigger_names: HashMap<String, usize> = HashMap::new();
        self.job_key = format!("{group}/{name}");
        for (index, entry) in self.array_of_tables(t, "trigger").into_iter().enumerate() {
            let (trigger, name_span) = self.trigger(&entry, index + 1, &name);
            match trigger_names.get(&trigger.name) {
                Some(&first) => {
                    let span = name_span.unwrap_or_else(|| entry.span.clone());
                    self.error(
                        span,
                        &entry.field("name"),
                        format!(
                            "duplicate trigger name {:?} (also the name of trigger {first})",
                            trigger.name
                        ),
                    );
                }
                None => {
                    trigger_names.insert(trigger.name.clone(), index + 1);
                }
            }
            triggers.push(trigger);
        }

        if flow.coalesce.is_some()
            && !triggers
                .iter()
                .any(|tr| matches!(tr.kind, crate::domain::TriggerKind::Event { .. }))
        {
            let name = if t.get("debounce").is_some() {
                "debounce"
            } else {
                "singleton"
            };
            let span = t.get(name).map_or_else(|| t.span.clone(), |v| v.span());
            self.error(
                span,
                &t.field(name),
                format!("{name} folds the fires of events: give the job an `event` trigger"),
            );
        }
        let decl = JobDecl {
            group,
            name,
            module,
            data,
            overlap,
            overlap_given: t.get("overlap").is_some(),
            timeout,
            max_memory,
            kv_max_keys,
            kv_max_bytes,
            requests_recovery,
            priority,
            paused,
            pause_on_failure,
            flow,
            retry,
            triggers,
            grants,
        };
        (decl, seen)
    }

    // -- concurrency and rate -------------------------------------------------

    fn flow(&mut self, t: &Table<'_, '_>) -> crate::domain::flow::Flow {
        use crate::domain::flow::{
            ConcurrencySpec, DebounceSpec, Flow, FlowSpecs, RateSpec, SingletonSpec,
        };
        let concurrency: Option<ConcurrencySpec> = self.flow_spec(t, "concurrency", "a table");
        let rate: Option<RateSpec> = self.flow_spec(t, "rate", "a table");
        let debounce: Option<DebounceSpec> = self.flow_spec(
            t,
            "debounce",
            "a duration (\"5s\") or a table { window, key }",
        );
        let singleton: Option<SingletonSpec> =
            self.flow_spec(t, "singleton", "true, false or a table { key }");
        let specs = FlowSpecs {
            concurrency: concurrency.as_ref(),
            rate: rate.as_ref(),
            debounce: debounce.as_ref(),
            singleton: singleton.as_ref(),
        };
        match Flow::from_specs(&specs) {
            Ok(flow) => flow,
            Err(e) => {
                let name = crate::domain::flow::error_field(&e);
                let span = t.get(name).map_or_else(|| t.span.clone(), |v| v.span());
                self.error(span, &t.field(name), e);
                Flow::default()
            }
        }
    }

    fn flow_spec<S: serde::de::DeserializeOwned>(
        &mut self,
        t: &Table<'_, '_>,
        name: &str,
        expected: &str,
    ) -> Option<S> {
        let v = t.get(name)?;
        let field = t.field(name);
        let json = self.json(v, &field);
        match serde_json::from_value(json) {
            Ok(spec) => Some(spec),
            Err(e) => {
                // An untagged spec's own error names no field: say what it takes.
                let detail = e.to_string();
                let message = if detail.contains("did not match any variant") {
                    format!("{name} must be {expected}")
                } else {
                    format!("{name}: {detail}")
                };
                self.error(v.span(), &field, message);
                None
            }
        }
    }

    // -- [job.retry] ---------------------------------------------------------

    // -- [job.grants] --------------------------------------------------------

    fn grants(&mut self, v: &Value<'_>, field: &str) -> crate::grants::Grants {
        let json = self.json(v, field);
        if !json.is_object() {
            self.type_error(v, field, "a table");
            return crate::grants::Grants::default();
        }
        let grants: crate::grants::Grants = match serde_json::from_value(json) {
            Ok(g) => g,
            Err(e) => {
                self.error(v.span(), field, e.to_string());
                return crate::grants::Grants::default();
            }
        };
        if let Err(e) = grants.compile() {
            self.error(v.span(), &format!("{field}.{}", e.field), e.message);
        }
        grants
    }

    fn retry(&mut self, t: &Table<'_, '_>) -> RetryPolicy {
        self.check_keys(t, RETRY_KEYS);
        let defaults = RetryPolicy::default();
        let max_attempts = t
            .get("max_attempts")
            .and_then(|v| {
                let field = t.field("max_attempts");
                let n = self.integer(v, &field)?;
                match u32::try_from(n) {
                    Ok(n) if n >= 1 => Some(n),
                    _ => {
                        self.error(
                            v.span(),
                            &field,
                            format!("max_attempts must be between 1 and {}, not {n}", u32::MAX),
                        );
                        None
                    }
                }
            })
            .unwrap_or(defaults.max_attempts);
        let backoff = self
            .parsed::<Backoff>(t, "backoff")
            .unwrap_or(defaults.backoff);
        let initial_value = t.get("initial");
        let initial = initial_value
            .and_then(|v| self.duration(v, &t.field("initial"), Duration::ZERO))
            .unwrap_or(Duration::from_millis(defaults.initial_ms));
        let max_value = t.get("max");
        let max = max_value
            .and_then(|v| self.duration(v, &t.field("max"), Duration::ZERO))
            .unwrap_or(Duration::from_millis(defaults.max_ms));
        if max < initial {
            let message = format!(
                "the maximum delay ({}) is shorter than the initial delay ({})",
                humantime::format_duration(max),
                humantime::format_duration(initial)
            );
            match (max_value, initial_value) {
                (Some(v), _) => self.error(v.span(), &t.field("max"), message),
                (None, Some(v)) => self.error(v.span(), &t.field("initial"), message),
                (None, None) => self.error(t.span.clone(), &t.path, message),
            }
        }
        let jitter = t
            .get("jitter")
            .and_then(|v| {
                let field = t.field("jitter");
                let x = self.float(v, &field)?;
                if (0.0..=1.0).contains(&x) {
                    Some(x)
                } else {
                    self.error(
                        v.span(),
                        &field,
                        format!("jitter must be between 0.0 and 1.0, not {x}"),
                    );
                    None
                }
            })
            .unwrap_or(defaults.jitter);
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        RetryPolicy {
            max_attempts,
            backoff,
            initial_ms: ms(initial),
            max_ms: ms(max),
            jitter,
        }
    }

    // -- structure helpers ---------------------------------------------------

    /// Reports every key of `t` that is not in `allowed`.
    fn check_keys(&mut self, t: &Table<'_, '_>, allowed: &[&str]) {
        let expected = allowed
            .iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ");
        for (key, _) in t.table.iter() {
            let key_str: &str = key.get_ref();
            if !allowed.contains(&key_str) {
                self.error(
                    key.span(),
                    &t.field(key_str),
                    format!("unknown field `{key_str}`, expected one of {expected}"),
                );
            }
        }
    }

    /// The value of a required key, or an error at the table's header.
    fn required<'t, 'i>(&mut self, t: &Table<'t, 'i>, key: &str) -> Option<&'t Value<'i>> {
        let value = t.get(key);
        if value.is_none() {
            self.error(
                t.span.clone(),
                &t.field(key),
                format!("missing required field `{key}`"),
            );
        }
        value
    }

    /// The tables of `[[key]]` (or `key = [{...}, ...]`); empty when absent.
    fn array_of_tables<'t, 'i>(&mut self, t: &Table<'t, 'i>, key: &str) -> Vec<Table<'t, 'i>> {
        let Some(value) = t.get(key) else {
            return Vec::new();
        };
        let field = t.field(key);
        let items = match value.get_ref() {
            DeValue::Array(items) => items,
            DeValue::Table(_) => {
                self.error(
                    value.span(),
                    &field,
                    format!("`{key}` must be an array of tables: write [[{field}]], not [{field}]"),
                );
                return Vec::new();
            }
            other => {
                self.error(
                    value.span(),
                    &field,
                    format!(
                        "expected an array of tables ([[{field}]]), found {}",
                        other.type_str()
                    ),
                );
                return Vec::new();
            }
        };
        let mut tables = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("{field}[{}]", i + 1);
            match item.get_ref() {
                DeValue::Table(table) => tables.push(Table {
                    table,
                    span: item.span(),
                    path,
                }),
                other => self.error(
                    item.span(),
                    &path,
                    format!("expected a table, found {}", other.type_str()),
                ),
            }
        }
        tables
    }

    /// The sub-table `key` of `t`, if present and a table.
    fn table<'t, 'i>(&mut self, t: &Table<'t, 'i>, key: &str) -> Option<Table<'t, 'i>> {
        let value = t.get(key)?;
        let field = t.field(key);
        match value.get_ref() {
            DeValue::Table(table) => Some(Table {
                table,
                span: value.span(),
                path: field,
            }),
            other => {
                self.error(
                    value.span(),
                    &field,
                    format!("expected a table, found {}", other.type_str()),
                );
                None
            }
        }
    }

    // -- value helpers -------------------------------------------------------

    fn type_error(&mut self, v: &Value<'_>, field: &str, expected: &str) {
        let found = v.get_ref().type_str();
        self.error(
            v.span(),
            field,
            format!("expected {expected}, found {found}"),
        );
    }

    fn string<'v>(&mut self, v: &'v Value<'_>, field: &str) -> Option<&'v str> {
        match v.get_ref() {
            DeValue::String(s) => Some(s),
            _ => {
                self.type_error(v, field, "a string");
                None
            }
        }
    }

    fn boolean(&mut self, v: &Value<'_>, field: &str) -> Option<bool> {
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.type_error(v, field, "a boolean");
                None
            }
        }
    }

    fn integer(&mut self, v: &Value<'_>, field: &str) -> Option<i64> {
        match v.get_ref() {
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => Some(n),
                Err(_) => {
                    self.error(v.span(), field, format!("integer {i} is out of range"));
                    None
                }
            },
            _ => {
                self.type_error(v, field, "an integer");
                None
            }
        }
    }

    /// A float; integers are accepted too.
    fn float(&mut self, v: &Value<'_>, field: &str) -> Option<f64> {
        match v.get_ref() {
            DeValue::Float(f) => match f.as_str().parse::<f64>() {
                Ok(x) => Some(x),
                Err(_) => {
                    self.error(v.span(), field, format!("invalid number {f}"));
                    None
                }
            },
            // i64 -> f64 may round, which is fine for a range-checked ratio.
            DeValue::Integer(_) => self.integer(v, field).map(|n| n as f64),
            _ => {
                self.type_error(v, field, "a number");
                None
            }
        }
    }

    fn priority(&mut self, v: &Value<'_>, field: &str) -> Option<u8> {
        let n = self.integer(v, field)?;
        match u8::try_from(n) {
            Ok(p) if (MIN_PRIORITY..=MAX_PRIORITY).contains(&p) => Some(p),
            _ => {
                self.error(
                    v.span(),
                    field,
                    format!("priority must be between {MIN_PRIORITY} and {MAX_PRIORITY}, not {n}"),
                );
                None
            }
        }
    }

    /// An optional string field parsed with `FromStr` (whose error message is reported).
    fn parsed<T>(&mut self, t: &Table<'_, '_>, key: &str) -> Option<T>
    where
        T: FromStr<Err = ParseValueError>,
    {
        let v = t.get(key)?;
        let field = t.field(key);
        let s = self.string(v, &field)?;
        match s.parse() {
            Ok(x) => Some(x),
            Err(e) => {
                self.error(v.span(), &field, e.0);
                None
            }
        }
    }

    /// A humantime duration string, at least `min`.
    fn duration(&mut self, v: &Value<'_>, field: &str, min: Duration) -> Option<Duration> {
        let max = if field.ends_with(".timeout") || field == "timeout" {
            crate::domain::MAX_TIMEOUT
        } else {
            crate::domain::MAX_PERIOD
        };
        let Some(s) = (match v.get_ref() {
            DeValue::String(s) => Some(s),
            _ => None,
        }) else {
            self.type_error(v, field, "a duration string such as \"30s\"");
            return None;
        };
        match crate::domain::parse_duration_within(s, min, max) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(v.span(), field, e);
                None
            }
        }
    }

    /// A size in bytes: a positive integer, or a string of digits with an
    /// optional unit.
    fn size(&mut self, v: &Value<'_>, field: &str) -> Option<u64> {
        let parsed = match v.get_ref() {
            DeValue::String(s) => parse_size(s),
            DeValue::Integer(_) => {
                let n = self.integer(v, field)?;
                u64::try_from(n)
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("invalid size {n}: must be positive"))
            }
            _ => {
                self.type_error(v, field, "a size such as \"64MiB\"");
                return None;
            }
        };
        match parsed {
            Ok(n) => Some(n),
            Err(message) => {
                self.error(v.span(), field, message);
                None
            }
        }
    }

    /// An RFC 3339 timestamp, as a string or a TOML offset date-time.
    fn timestamp(&mut self, v: &Value<'_>, field: &str) -> Option<DateTime<Utc>> {
        let text = match v.get_ref() {
            DeValue::String(s) => s.to_string(),
            DeValue::Datetime(d) => d.to_string(),
            _ => {
                self.type_error(v, field, "an RFC 3339 timestamp");
                return None;
            }
        };
        match DateTime::parse_from_rfc3339(&text) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(e) => {
                self.error(
                    v.span(),
                    field,
                    format!(
                        "invalid timestamp {text:?}: expected RFC 3339 with a UTC offset, \
                         e.g. \"2030-01-01T00:00:00Z\" ({e})"
                    ),
                );
                None
            }
        }
    }

    /// Any TOML value as JSON; date-times become their RFC 3339 text.
    fn json(&mut self, v: &Value<'_>, field: &str) -> serde_json::Value {
        use serde_json::Value as Json;
        match v.get_ref() {
            DeValue::String(s) => Json::String(s.to_string()),
            DeValue::Integer(_) => self.integer(v, field).map_or(Json::Null, Json::from),
            DeValue::Float(f) => {
                match f
                    .as_str()
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                {
                    Some(n) => Json::Number(n),
                    None => {
                        self.error(
                            v.span(),
                            field,
                            format!("{f} cannot be represented in JSON (only finite numbers can)"),
                        );
                        Json::Null
                    }
                }
            }
            DeValue::Boolean(b) => Json::Bool(*b),
            DeValue::Datetime(d) => Json::String(d.to_string()),
            DeValue::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    out.push(self.json(item, &format!("{field}[{}]", i + 1)));
                }
                Json::Array(out)
            }
            DeValue::Table(table) => {
                let mut out = serde_json::Map::new();
                for (key, item) in table.iter() {
                    let key: &str = key.get_ref();
                    let value = self.json(item, &format!("{field}.{key}"));
                    out.insert(key.to_owned(), value);
                }
                Json::Object(out)
            }
        }
    }
}
