//! Flow control a job declares: how many of its fires may run at once per
//! key (`concurrency`) and how many may start per period per key (`rate`).
//!
//! A key is a template rendered once, when the fire is created, over what the
//! fire carries: `{{ job }}`, `{{ trigger }}`, `{{ data.PATH }}` (the job's
//! data) and, for fires an event caused, `{{ event.name }}`,
//! `{{ event.key }}` and `{{ event.payload.PATH }}`. The rendered key is
//! stored on the fire, so the claim compares keys and never renders. Keys are
//! one namespace across jobs: a constant key shares one limit among every job
//! that names it; put `{{ job }}` in the template to keep a limit per job.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A rendered key longer than this is cut and ends in a hash of the whole,
/// so a payload cannot make the store keep or compare long strings.
pub const KEY_MAX_BYTES: usize = 200;

/// The most a limit may be (fires at once, or starts per period).
pub const LIMIT_MAX: u32 = 100_000;

/// A job's flow control; both parts optional. Stored as the job's `flow`
/// column (JSON), `None` when the job declares neither.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
    /// Events of one key folded into one fire (`debounce`, `singleton`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coalesce: Option<Coalesce>,
}

/// Events of one key folded into one waiting fire, which runs with the last
/// event: a new event of the key, while the key's fire still waits, replaces
/// its event and counts one more in its `coalesced`.
///
/// - `debounce`: the fire is due `window_ms` after the key's last event, so
///   a burst of events runs once, after it ends.
/// - `singleton`: the fire is due at once and the key runs one fire at a time
///   (a concurrency limit of 1 on the key): an event while one runs is queued
///   once, and further events replace the queued one's event. Queued, not
///   dropped: the last event of a burst is never lost.
///
/// Fires of the job's clock triggers are not folded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coalesce {
    pub key: KeyTemplate,
    /// The debounce window; `None` for a singleton.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debounce_ms: Option<i64>,
}

impl Coalesce {
    /// `debounce` or `singleton`, as history records it.
    pub fn mode(&self) -> &'static str {
        if self.debounce_ms.is_some() {
            "debounce"
        } else {
            "singleton"
        }
    }
}

/// `debounce = "5s"` or `debounce = { window = "5s", key = "..." }`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DebounceSpec {
    Window(String),
    Keyed {
        window: String,
        #[serde(default)]
        key: Option<String>,
    },
}

/// `singleton = true` or `singleton = { key = "..." }`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SingletonSpec {
    On(bool),
    Keyed {
        #[serde(default)]
        key: Option<String>,
    },
}

/// The longest debounce window.
pub const DEBOUNCE_MAX_MS: i64 = 24 * 3600 * 1000;

/// Every flow spec a job may give, as the manifest, the API and the CLI
/// spell them.
#[derive(Clone, Debug, Default)]
pub struct FlowSpecs<'a> {
    pub concurrency: Option<&'a ConcurrencySpec>,
    pub rate: Option<&'a RateSpec>,
    pub debounce: Option<&'a DebounceSpec>,
    pub singleton: Option<&'a SingletonSpec>,
}

/// At most `limit` fires with the same rendered key run at once, anywhere in
/// the cluster; the others wait.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Concurrency {
    pub key: KeyTemplate,
    pub limit: u32,
}

/// At most `limit` fires with the same rendered key start in any `per_ms`
/// window (a sliding window, counted as the store admits each start); the
/// others wait for a slot and never fail for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    pub key: KeyTemplate,
    pub limit: u32,
    pub per_ms: i64,
}

impl Flow {
    pub fn is_empty(&self) -> bool {
        self.concurrency.is_none() && self.rate.is_none() && self.coalesce.is_none()
    }

    /// The JSON the store keeps, `None` for no flow control.
    pub fn to_column(&self) -> Option<String> {
        (!self.is_empty()).then(|| serde_json::to_string(self).unwrap_or_default())
    }

    /// Reads the store's column; a value this version cannot read is no flow
    /// control rather than a job that cannot be loaded.
    pub fn from_column(text: Option<&str>) -> Flow {
        text.and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default()
    }

    /// The keys of a fire with `input`: (concurrency key, rate key).
    pub fn keys(&self, input: &KeyInput<'_>) -> (Option<String>, Option<String>) {
        (
            self.concurrency.as_ref().map(|c| c.key.render(input)),
            self.rate.as_ref().map(|r| r.key.render(input)),
        )
    }

    /// The key an event's fire is folded by, if the job folds events.
    pub fn coalesce_key(&self, input: &KeyInput<'_>) -> Option<String> {
        self.coalesce
            .as_ref()
            .filter(|_| input.event.is_some())
            .map(|c| c.key.render(input))
    }

    /// Checks the limits; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(c) = &self.concurrency {
            check_limit("concurrency.limit", c.limit)?;
        }
        if let Some(r) = &self.rate {
            check_limit("rate.limit", r.limit)?;
            if r.per_ms < 1 {
                return Err("rate.per must be a duration of at least 1ms".into());
            }
        }
        Ok(())
    }
}

/// `concurrency = { key = "...", limit = N }` as a manifest, the API and the
/// CLI spell it; the key defaults to `{{ job }}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConcurrencySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub limit: u32,
}

/// `rate = { key = "...", limit = N, per = "1m" }` as a manifest, the API and
/// the CLI spell it; the key defaults to `{{ job }}`, `per` is a duration
/// (`1s`, `1m`, `1h`) of at most a day.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub limit: u32,
    pub per: String,
}

/// The longest rate window: a key's admitted starts are kept that long.
pub const RATE_PER_MAX_MS: i64 = 24 * 3600 * 1000;

impl Flow {
    /// The flow the specs declare, checked; the error names the field.
    pub fn from_specs(specs: &FlowSpecs<'_>) -> Result<Flow, String> {
        let template = |field: &str, key: &Option<String>| match key {
            None => Ok(KeyTemplate::job()),
            Some(text) => KeyTemplate::parse(text).map_err(|e| format!("{field}: {e}")),
        };
        let window = |field: &str, text: &str, max_ms: i64| {
            let d = humantime::parse_duration(text)
                .map_err(|e| format!("{field}: {text:?} is not a duration ({e})"))?;
            let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
            if !(1..=max_ms).contains(&ms) {
                return Err(format!("{field} must be from 1ms to 24h, not {text:?}"));
            }
            Ok(ms)
        };
        let mut concurrency = specs
            .concurrency
            .map(|c| {
                Ok::<_, String>(Concurrency {
                    key: template("concurrency.key", &c.key)?,
                    limit: c.limit,
                })
            })
            .transpose()?;
        let rate = specs
            .rate
            .map(|r| {
                Ok::<_, String>(Rate {
                    key: template("rate.key", &r.key)?,
                    limit: r.limit,
                    per_ms: window("rate.per", &r.per, RATE_PER_MAX_MS)?,
                })
            })
            .transpose()?;
        let debounce = specs
            .debounce
            .map(|d| {
                let (text, key) = match d {
                    DebounceSpec::Window(text) => (text, &None),
                    DebounceSpec::Keyed { window, key } => (window, key),
                };
                Ok::<_, String>(Coalesce {
                    key: template("debounce.key", key)?,
                    debounce_ms: Some(window("debounce", text, DEBOUNCE_MAX_MS)?),
                })
            })
            .transpose()?;
        let singleton = match specs.singleton {
            None | Some(SingletonSpec::On(false)) => None,
            Some(SingletonSpec::On(true)) => Some(KeyTemplate::job()),
            Some(SingletonSpec::Keyed { key }) => Some(template("singleton.key", key)?),
        };
        let coalesce = match (debounce, singleton) {
            (Some(_), Some(_)) => {
                return Err(
                    "debounce and singleton: a job folds events one way; declare one".into(),
                );
            }
            (Some(d), None) => Some(d),
            (None, Some(key)) => {
                // A singleton runs one fire per key at a time: the concurrency
                // limit of 1 on its key, which it replaces.
                if concurrency.is_some() {
                    return Err(
                        "singleton: a singleton is a concurrency limit of 1 on its key; declare singleton or concurrency, not both"
                            .into(),
                    );
                }
                concurrency = Some(Concurrency {
                    key: key.clone(),
                    limit: 1,
                });
                Some(Coalesce {
                    key,
                    debounce_ms: None,
                })
            }
            (None, None) => None,
        };
        let flow = Flow {
            concurrency,
            rate,
            coalesce,
        };
        flow.validate()?;
        Ok(flow)
    }
}

/// Why a due fire with these keys still waits under `flow`, if flow control
/// holds it: `running` counts a concurrency key's running fires, `starts`
/// gives a rate key's admitted starts; `now` is the database clock.
pub fn why_waiting(
    flow: &Flow,
    concurrency_key: Option<&str>,
    rate_key: Option<&str>,
    running: impl Fn(&str) -> i64,
    starts: impl Fn(&str) -> Vec<i64>,
    now: i64,
) -> Option<String> {
    if let (Some(key), Some(c)) = (concurrency_key, &flow.concurrency) {
        let n = running(key);
        if n >= i64::from(c.limit) {
            return Some(format!(
                "concurrency: key {key:?} has {n} of {} running",
                c.limit
            ));
        }
    }
    if let (Some(key), Some(r)) = (rate_key, &flow.rate) {
        let mut within: Vec<i64> = starts(key)
            .into_iter()
            .filter(|t| *t > now - r.per_ms)
            .collect();
        let limit = r.limit as usize;
        if within.len() >= limit {
            within.sort_unstable();
            let next = within[within.len() - limit] + r.per_ms;
            let at = chrono::DateTime::from_timestamp_millis(next).map_or_else(
                || next.to_string(),
                |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            );
            return Some(format!(
                "rate: key {key:?} started {} of {} in the last {}; next start at {at}",
                within.len(),
                r.limit,
                humantime::format_duration(std::time::Duration::from_millis(
                    u64::try_from(r.per_ms).unwrap_or(0)
                )),
            ));
        }
    }
    None
}

/// The job field a [`Flow::from_specs`] error is about.
pub fn error_field(message: &str) -> &'static str {
    ["concurrency", "rate", "debounce", "singleton"]
        .into_iter()
        .find(|f| message.starts_with(f))
        .unwrap_or("concurrency")
}

fn check_limit(field: &str, limit: u32) -> Result<(), String> {
    if limit == 0 || limit > LIMIT_MAX {
        return Err(format!(
            "{field} must be from 1 to {LIMIT_MAX}, not {limit}"
        ));
    }
    Ok(())
}

/// What a key template is rendered over.
#[derive(Clone, Copy, Debug)]
pub struct KeyInput<'a> {
    pub job_key: &'a str,
    pub trigger_key: &'a str,
    /// The job's data, JSON text.
    pub data: &'a str,
    pub event: Option<EventInput<'a>>,
}

/// The event behind a fire, for a key template.
#[derive(Clone, Copy, Debug)]
pub struct EventInput<'a> {
    pub name: &'a str,
    pub key: Option<&'a str>,
    /// JSON text.
    pub payload: &'a str,
}

/// A key template: literal text with `{{ PATH }}` placeholders, checked when
/// the job is declared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyTemplate {
    text: String,
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Job,
    Trigger,
    /// A path into the job's data.
    Data(Vec<String>),
    EventName,
    EventKey,
    /// A path into the event's payload.
    Payload(Vec<String>),
}

impl KeyTemplate {
    /// The template of the job's own key (`{{ job }}`): the default.
    pub fn job() -> KeyTemplate {
        KeyTemplate::parse("{{ job }}").expect("the default template parses")
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn parse(text: &str) -> Result<KeyTemplate, String> {
        if text.is_empty() {
            return Err("a key template must not be empty".into());
        }
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| format!("key template {text:?}: '{{{{' without a closing '}}}}'"))?;
            parts.push(placeholder(text, after[..close].trim())?);
            rest = &after[close + 2..];
        }
        if rest.contains("}}") {
            return Err(format!(
                "key template {text:?}: '}}}}' without an opening '{{{{'"
            ));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(KeyTemplate {
            text: text.to_string(),
            parts,
        })
    }

    /// The key for `input`. A path that leads nowhere (a missing field, a
    /// fire without an event) renders as nothing, so such fires share the
    /// key of the remaining text; strings render bare, other JSON values as
    /// JSON.
    pub fn render(&self, input: &KeyInput<'_>) -> String {
        let mut data: Option<serde_json::Value> = None;
        let mut payload: Option<serde_json::Value> = None;
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Job => out.push_str(input.job_key),
                Part::Trigger => out.push_str(input.trigger_key),
                Part::Data(path) => {
                    let doc = data.get_or_insert_with(|| parse_json(input.data));
                    push_value(&mut out, lookup(doc, path));
                }
                Part::EventName => out.push_str(input.event.map_or("", |e| e.name)),
                Part::EventKey => out.push_str(input.event.and_then(|e| e.key).unwrap_or("")),
                Part::Payload(path) => {
                    let doc = payload.get_or_insert_with(|| {
                        input
                            .event
                            .map_or(serde_json::Value::Null, |e| parse_json(e.payload))
                    });
                    push_value(&mut out, lookup(doc, path));
                }
            }
        }
        bounded(out)
    }
}

fn placeholder(text: &str, inner: &str) -> Result<Part, String> {
    let mut segments = inner.split('.');
    let head = segments.next().unwrap_or_default();
    let path: Vec<String> = segments.map(str::to_string).collect();
    let bad = || {
        format!(
            "key template {text:?}: unknown placeholder '{{{{ {inner} }}}}': expected job, trigger, \
             data.PATH, event.name, event.key or event.payload.PATH"
        )
    };
    if path.iter().any(String::is_empty) {
        return Err(bad());
    }
    match (head, path.as_slice()) {
        ("job", []) => Ok(Part::Job),
        ("trigger", []) => Ok(Part::Trigger),
        ("data", [_, ..]) => Ok(Part::Data(path)),
        ("event", [name]) if name == "name" => Ok(Part::EventName),
        ("event", [key]) if key == "key" => Ok(Part::EventKey),
        ("event", [payload, _, ..]) if payload == "payload" => {
            Ok(Part::Payload(path[1..].to_vec()))
        }
        _ => Err(bad()),
    }
}

fn parse_json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or(serde_json::Value::Null)
}

fn lookup<'v>(doc: &'v serde_json::Value, path: &[String]) -> Option<&'v serde_json::Value> {
    path.iter().try_fold(doc, |v, seg| match v {
        serde_json::Value::Object(map) => map.get(seg),
        serde_json::Value::Array(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

fn push_value(out: &mut String, value: Option<&serde_json::Value>) {
    match value {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::String(s)) => out.push_str(s),
        Some(other) => out.push_str(&other.to_string()),
    }
}

/// Cuts a key past [`KEY_MAX_BYTES`] and marks it with a hash of the whole,
/// so two long keys that share a prefix stay two keys.
fn bounded(key: String) -> String {
    if key.len() <= KEY_MAX_BYTES {
        return key;
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key.as_bytes());
    let mut cut = KEY_MAX_BYTES - 17;
    while !key.is_char_boundary(cut) {
        cut -= 1;
    }
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}#{hex}", &key[..cut])
}

impl fmt::Display for KeyTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for KeyTemplate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for KeyTemplate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        KeyTemplate::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(data: &'a str, event: Option<EventInput<'a>>) -> KeyInput<'a> {
        KeyInput {
            job_key: "billing/charge",
            trigger_key: "billing/charge:on-order",
            data,
            event,
        }
    }

    #[test]
    fn placeholders_render_from_the_job_its_data_and_its_event() {
        let event = EventInput {
            name: "order.placed",
            key: Some("o-17"),
            payload: r#"{"account_id": "acct-9", "n": 3, "items": [{"sku": "x1"}], "flag": true}"#,
        };
        let t = |s: &str| KeyTemplate::parse(s).unwrap();
        let i = input(r#"{"region": "eu", "tier": {"name": "gold"}}"#, Some(event));
        assert_eq!(t("{{ event.payload.account_id }}").render(&i), "acct-9");
        assert_eq!(
            t("acct:{{event.payload.account_id}}:{{ job }}").render(&i),
            "acct:acct-9:billing/charge"
        );
        assert_eq!(
            t("{{ data.region }}-{{ data.tier.name }}").render(&i),
            "eu-gold"
        );
        assert_eq!(
            t("{{ event.payload.n }}/{{ event.payload.flag }}").render(&i),
            "3/true"
        );
        assert_eq!(t("{{ event.payload.items.0.sku }}").render(&i), "x1");
        assert_eq!(
            t("{{ event.name }} {{ event.key }} {{ trigger }}").render(&i),
            "order.placed o-17 billing/charge:on-order"
        );
        assert_eq!(t("shared-api").render(&i), "shared-api");
    }

    #[test]
    fn what_a_fire_lacks_renders_as_nothing() {
        let t = KeyTemplate::parse("acct:{{ event.payload.account_id }}").unwrap();
        assert_eq!(t.render(&input("{}", None)), "acct:");
        let no_field = EventInput {
            name: "e",
            key: None,
            payload: r#"{"other": 1}"#,
        };
        assert_eq!(t.render(&input("{}", Some(no_field))), "acct:");
        let not_json = EventInput {
            name: "e",
            key: None,
            payload: "not json",
        };
        assert_eq!(t.render(&input("{}", Some(not_json))), "acct:");
    }

    #[test]
    fn a_long_key_is_cut_and_two_long_keys_stay_apart() {
        let t = KeyTemplate::parse("{{ event.payload.k }}").unwrap();
        let long = |tail: &str| {
            let payload =
                serde_json::json!({ "k": format!("{}{tail}", "é".repeat(300)) }).to_string();
            t.render(&input(
                "{}",
                Some(EventInput {
                    name: "e",
                    key: None,
                    payload: Box::leak(payload.into_boxed_str()),
                }),
            ))
        };
        let (a, b) = (long("a"), long("b"));
        assert!(a.len() <= KEY_MAX_BYTES, "{}", a.len());
        assert_ne!(a, b);
        assert_eq!(long("a"), a, "the same key renders the same");
    }

    #[test]
    fn a_bad_template_says_what_is_wrong() {
        for (text, says) in [
            ("", "must not be empty"),
            ("{{ job ", "without a closing"),
            ("a }} b", "without an opening"),
            ("{{ payload.x }}", "unknown placeholder '{{ payload.x }}'"),
            ("{{ event.payload }}", "unknown placeholder"),
            ("{{ data }}", "unknown placeholder"),
            ("{{ data..x }}", "unknown placeholder"),
            ("{{ job.name }}", "unknown placeholder"),
        ] {
            let err = KeyTemplate::parse(text).unwrap_err();
            assert!(err.contains(says), "{text:?}: {err}");
        }
    }

    #[test]
    fn limits_are_checked_and_the_column_round_trips() {
        let flow = Flow {
            concurrency: Some(Concurrency {
                key: KeyTemplate::parse("{{ event.payload.account_id }}").unwrap(),
                limit: 3,
            }),
            rate: Some(Rate {
                key: KeyTemplate::job(),
                limit: 10,
                per_ms: 1000,
            }),
            coalesce: None,
        };
        flow.validate().unwrap();
        let column = flow.to_column().unwrap();
        assert_eq!(Flow::from_column(Some(&column)), flow);
        assert_eq!(Flow::default().to_column(), None);
        assert_eq!(Flow::from_column(None), Flow::default());
        let mut zero = flow.clone();
        zero.concurrency.as_mut().unwrap().limit = 0;
        assert!(
            zero.validate()
                .unwrap_err()
                .contains("concurrency.limit must be from 1")
        );
        let mut no_period = flow;
        no_period.rate.as_mut().unwrap().per_ms = 0;
        assert!(no_period.validate().unwrap_err().contains("rate.per"));
    }

    #[test]
    fn debounce_and_singleton_read_as_the_manifest_spells_them() {
        let debounce: DebounceSpec = serde_json::from_str(r#""5s""#).unwrap();
        let flow = Flow::from_specs(&FlowSpecs {
            debounce: Some(&debounce),
            ..FlowSpecs::default()
        })
        .unwrap();
        let c = flow.coalesce.as_ref().unwrap();
        assert_eq!(
            (c.mode(), c.debounce_ms, c.key.as_str()),
            ("debounce", Some(5000), "{{ job }}")
        );
        assert!(flow.concurrency.is_none());

        let singleton: SingletonSpec =
            serde_json::from_str(r#"{"key": "{{ event.payload.doc }}"}"#).unwrap();
        let flow = Flow::from_specs(&FlowSpecs {
            singleton: Some(&singleton),
            ..FlowSpecs::default()
        })
        .unwrap();
        assert_eq!(flow.coalesce.as_ref().unwrap().mode(), "singleton");
        let limit = flow.concurrency.as_ref().unwrap();
        assert_eq!(
            (limit.limit, limit.key.as_str()),
            (1, "{{ event.payload.doc }}")
        );
        // Only an event's fire is folded.
        let event = EventInput {
            name: "doc.saved",
            key: None,
            payload: r#"{"doc": "d1"}"#,
        };
        let input = |event| KeyInput {
            job_key: "g/j",
            trigger_key: "g/j:t",
            data: "{}",
            event,
        };
        assert_eq!(
            flow.coalesce_key(&input(Some(event))).as_deref(),
            Some("d1")
        );
        assert_eq!(flow.coalesce_key(&input(None)), None);
        assert_eq!(Flow::from_column(flow.to_column().as_deref()), flow);

        let both = Flow::from_specs(&FlowSpecs {
            debounce: Some(&debounce),
            singleton: Some(&singleton),
            ..FlowSpecs::default()
        });
        assert!(both.unwrap_err().contains("declare one"));
        let long: DebounceSpec = serde_json::from_str(r#"{"window": "2d"}"#).unwrap();
        let err = Flow::from_specs(&FlowSpecs {
            debounce: Some(&long),
            ..FlowSpecs::default()
        })
        .unwrap_err();
        assert!(err.contains("debounce must be from 1ms to 24h"), "{err}");
        let off: SingletonSpec = serde_json::from_str("false").unwrap();
        let flow = Flow::from_specs(&FlowSpecs {
            singleton: Some(&off),
            ..FlowSpecs::default()
        })
        .unwrap();
        assert!(flow.is_empty());
    }
}
