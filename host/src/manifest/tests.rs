//! The manifest's unit tests.
use super::*;
use serde_json::json;

fn ts(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn errors(text: &str) -> Vec<ManifestError> {
    match Manifest::parse(text, "jobs.toml") {
        Ok(m) => panic!("expected errors, got {m:#?}"),
        Err(e) => {
            assert!(!e.is_empty());
            e.0
        }
    }
}

/// (line, field) of every error, for compact assertions.
fn located(errors: &[ManifestError]) -> Vec<(usize, &str)> {
    errors.iter().map(|e| (e.line, e.field.as_str())).collect()
}

fn single(text: &str) -> ManifestError {
    let mut errors = errors(text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    errors.remove(0)
}

const DIGEST: &str = "ABCDEF0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789";

fn full_manifest() -> String {
    format!(
        r#"# Quartzite jobs
[[module]]
name = "hello"
path = "modules/hello.wasm"
version = "1.0.0"

[[module]]
name = "report"
path = "/opt/report.wasm"

[[job]]
key = "examples/hello"
module = "hello"
data = {{ name = "Quartzite", count = 3, ratio = 0.5, tags = ["a", "b"], when = 2030-01-01T00:00:00Z, nested = {{ ok = true }} }}
overlap = "forbid"
timeout = "30s"
max_memory = "64MiB"
requests_recovery = true
priority = 7
paused = true
[job.retry]
max_attempts = 3
backoff = "immediate"
initial = "2s"
max = "1m"
jitter = 0
[[job.trigger]]
name = "every-10s"
cron = "0/10 * * * * ?"
tz = "Europe/Berlin"
misfire = "skip"
start = "2030-01-01T00:00:00Z"
end = 2031-01-01T00:00:00+01:00
priority = 9
[[job.trigger]]
every = "90s"
repeat = 10
[[job.trigger]]
at = "2030-06-01T12:00:00Z"
misfire = "fire-once"
[[job.trigger]]
on = "start"
[[job.trigger]]
on = "once"

[[job]]
key = "reports/daily"
module = "report@2.0.0"
max_memory = 1048576
kv_max_keys = 50
kv_max_bytes = "1MiB"
[job.retry]
max_attempts = 5

[[job]]
key = "pinned/x.y_z-1"
module = "sha256:{DIGEST}"
max_memory = "2 g"
"#
    )
}

#[test]
fn a_full_manifest_parses_to_the_expected_values() {
    let m = Manifest::parse(&full_manifest(), "/etc/quartzite/jobs.toml").unwrap();
    assert_eq!(m.path, PathBuf::from("/etc/quartzite/jobs.toml"));
    assert_eq!(
        m.modules,
        vec![
            ModuleDecl {
                name: "hello".into(),
                path: PathBuf::from("/etc/quartzite/modules/hello.wasm"),
                version: Some("1.0.0".into()),
            },
            ModuleDecl {
                name: "report".into(),
                path: PathBuf::from("/opt/report.wasm"),
                version: None,
            },
        ]
    );
    assert_eq!(m.jobs.len(), 3);

    let hello = &m.jobs[0];
    assert_eq!(hello.key(), "examples/hello");
    assert_eq!(
        (hello.group.as_str(), hello.name.as_str()),
        ("examples", "hello")
    );
    assert_eq!(hello.module, ModuleSpec::Latest("hello".into()));
    assert_eq!(
        hello.data,
        json!({
            "name": "Quartzite",
            "count": 3,
            "ratio": 0.5,
            "tags": ["a", "b"],
            "when": "2030-01-01T00:00:00Z",
            "nested": { "ok": true },
        })
    );
    assert_eq!(hello.overlap, Overlap::Forbid);
    assert_eq!(hello.timeout, Duration::from_secs(30));
    assert_eq!(hello.max_memory, 64 * 1024 * 1024);
    assert!(hello.requests_recovery);
    assert_eq!(hello.priority, 7);
    assert!(hello.paused);
    assert_eq!(
        hello.retry,
        RetryPolicy {
            max_attempts: 3,
            backoff: Backoff::Immediate,
            initial_ms: 2_000,
            max_ms: 60_000,
            jitter: 0.0,
        }
    );
    assert_eq!(
        hello.triggers,
        vec![
            TriggerDecl {
                name: "every-10s".into(),
                kind: TriggerKind::Cron {
                    expr: "0/10 * * * * ?".into(),
                    tz: "Europe/Berlin".into(),
                },
                misfire: MisfirePolicy::Skip,
                start: Some(ts("2030-01-01T00:00:00Z")),
                end: Some(ts("2030-12-31T23:00:00Z")),
                priority: Some(9),
                jitter: Duration::ZERO,
                calendars: Vec::new(),
            },
            TriggerDecl {
                name: "hello-2".into(),
                kind: TriggerKind::Every {
                    period_ms: 90_000,
                    repeat: Some(10),
                },
                misfire: MisfirePolicy::FireNow,
                start: None,
                end: None,
                priority: None,
                jitter: Duration::ZERO,
                calendars: Vec::new(),
            },
            TriggerDecl {
                name: "hello-3".into(),
                kind: TriggerKind::At(ts("2030-06-01T12:00:00Z").timestamp_millis()),
                misfire: MisfirePolicy::FireOnce,
                start: None,
                end: None,
                priority: None,
                jitter: Duration::ZERO,
                calendars: Vec::new(),
            },
            TriggerDecl {
                name: "hello-4".into(),
                kind: TriggerKind::OnStart,
                misfire: MisfirePolicy::FireNow,
                start: None,
                end: None,
                priority: None,
                jitter: Duration::ZERO,
                calendars: Vec::new(),
            },
            TriggerDecl {
                name: "hello-5".into(),
                kind: TriggerKind::Once,
                misfire: MisfirePolicy::FireNow,
                start: None,
                end: None,
                priority: None,
                jitter: Duration::ZERO,
                calendars: Vec::new(),
            },
        ]
    );

    // Defaults.
    let daily = &m.jobs[1];
    assert_eq!(
        daily.module,
        ModuleSpec::Version {
            name: "report".into(),
            version: "2.0.0".into()
        }
    );
    assert_eq!(daily.module.to_string(), "report@2.0.0");
    assert_eq!(daily.data, serde_json::Value::Null);
    assert_eq!(daily.overlap, Overlap::Allow);
    assert_eq!(daily.timeout, DEFAULT_TIMEOUT);
    assert_eq!(daily.max_memory, 1024 * 1024);
    assert_eq!(daily.kv_max_keys, Some(50));
    assert_eq!(daily.kv_max_bytes, Some(1 << 20));
    assert_eq!(m.jobs[0].kv_max_keys, None, "the default quota");
    assert!(!daily.requests_recovery);
    assert_eq!(daily.priority, DEFAULT_PRIORITY);
    assert!(!daily.paused);
    assert_eq!(
        daily.retry,
        RetryPolicy {
            max_attempts: 5,
            ..RetryPolicy::default()
        }
    );
    assert!(daily.triggers.is_empty());

    let pinned = &m.jobs[2];
    assert_eq!(pinned.name, "x.y_z-1");
    assert_eq!(
        pinned.module,
        ModuleSpec::Digest(DIGEST.to_ascii_lowercase())
    );
    assert_eq!(
        pinned.module.to_string(),
        format!("sha256:{}", DIGEST.to_ascii_lowercase())
    );
    assert_eq!(pinned.max_memory, 2 * 1024 * 1024 * 1024);
    assert_eq!(pinned.retry, RetryPolicy::default());
    assert_eq!(pinned.max_memory, 2 << 30);
    assert_eq!(daily.max_memory, 1 << 20);
    assert_eq!(pinned.timeout, Duration::from_secs(60));
    assert_eq!(hello.max_memory, DEFAULT_MAX_MEMORY / 2);
}

#[test]
fn an_empty_manifest_is_valid() {
    let m = Manifest::parse("# nothing yet\n", "jobs.toml").unwrap();
    assert!(m.modules.is_empty());
    assert!(m.jobs.is_empty());
}

#[test]
fn inline_arrays_of_tables_are_accepted() {
    let m = Manifest::parse(
        r#"job = [{ key = "a/b", module = "m", trigger = [{ on = "start" }] }]"#,
        "jobs.toml",
    )
    .unwrap();
    assert_eq!(m.jobs[0].triggers[0].kind, TriggerKind::OnStart);
    assert_eq!(m.jobs[0].triggers[0].name, "b-1");
}

#[test]
fn semantic_errors_in_several_jobs_are_all_reported_in_file_order() {
    let text = r#"[[module]]
name = "hello"
path = "hello.wasm"
version = "1.0.0"

[[job]]
key = "examples/hello"
module = "hello@2.0.0"
priority = 11
timeout = "0s"

[[job]]
key = "bad key"
module = "hello"
max_memory = "12 parsecs"
[job.retry]
max_attempts = 0
jitter = 1.5
[[job.trigger]]
cron = "0 0 25 * * ?"
[[job.trigger]]
every = "10s"
start = "2030-01-01T00:00:00Z"
end = "2029-01-01T00:00:00Z"

[[job]]
module = "Hello"
overlap = "sometimes"
"#;
    let errs = errors(text);
    assert_eq!(
        located(&errs),
        vec![
            (8, "job[1].module"),
            (9, "job[1].priority"),
            (10, "job[1].timeout"),
            (13, "job[2].key"),
            (15, "job[2].max_memory"),
            (17, "job[2].retry.max_attempts"),
            (18, "job[2].retry.jitter"),
            (20, "job[2].trigger[1].cron"),
            (24, "job[2].trigger[2].end"),
            (26, "job[3].key"),
            (27, "job[3].module"),
            (28, "job[3].overlap"),
        ],
        "{errs:#?}"
    );
    assert!(
        errs[0]
            .message
            .contains("declared with version \"1.0.0\" on line 2")
    );
    assert_eq!(errs[1].column, 12);
    assert!(errs[2].message.contains("too short"));
    assert!(errs[9].message.contains("missing required field `key`"));
    let shown = ManifestErrors(errs.clone()).to_string();
    assert_eq!(shown.lines().count(), errs.len());
    assert!(shown.lines().any(|l| l.starts_with(
        "jobs.toml:20:8: job[2].trigger[1].cron: invalid cron expression \"0 0 25 * * ?\""
    )));
}

#[test]
fn a_syntax_error_reports_its_line() {
    let e = single("[[job]]\nkey = \"a/b\"\nmodule = \"m\nprioriy = 3\n");
    assert_eq!(e.line, 3);
    assert_eq!(e.field, "");
    assert!(e.to_string().starts_with("jobs.toml:3:"), "{e}");
}

#[test]
fn an_unknown_key_is_reported_with_its_name_and_location() {
    let e = single("[[job]]\nkey = \"a/b\"\nmodule = \"m\"\n  prioriy = 3\n");
    assert_eq!((e.line, e.column), (4, 3));
    assert_eq!(e.field, "job[1].prioriy");
    assert!(e.message.contains("unknown field `prioriy`"), "{e}");
    assert!(e.message.contains("`priority`"), "{e}");
}

#[test]
fn all_unknown_keys_are_reported() {
    let errs = errors(
        "colour = 1\n[[module]]\nname = \"m\"\npath = \"m.wasm\"\nsize = 3\n\
         [[job]]\nkey = \"a/b\"\nmodule = \"m\"\n[[job.trigger]]\non = \"start\"\nwhen = 1\n",
    );
    assert_eq!(
        located(&errs),
        vec![
            (1, "colour"),
            (5, "module[1].size"),
            (11, "job[1].trigger[1].when")
        ]
    );
}

#[test]
fn a_bad_cron_expression_is_quoted() {
    let e =
        single("[[job]]\nkey = \"a/b\"\nmodule = \"m\"\n[[job.trigger]]\ncron = \"0 0 * * *\"\n");
    assert_eq!((e.line, e.column), (5, 8));
    assert_eq!(e.field, "job[1].trigger[1].cron");
    assert!(
        e.message
            .starts_with("invalid cron expression \"0 0 * * *\""),
        "{e}"
    );
}

#[test]
fn a_bad_time_zone_is_reported_on_the_tz_and_the_expression_is_still_checked() {
    let e = single(
        "[[job]]\nkey = \"a/b\"\nmodule = \"m\"\n[[job.trigger]]\ncron = \"0 0 * * * ?\"\ntz = \"Mars/Olympus\"\n",
    );
    assert_eq!((e.line, e.field.as_str()), (6, "job[1].trigger[1].tz"));
    assert!(e.message.contains("Mars/Olympus"), "{e}");

    let errs = errors(
        "[[job]]\nkey = \"a/b\"\nmodule = \"m\"\n[[job.trigger]]\ncron = \"nope\"\ntz = \"Mars/Olympus\"\n",
    );
    assert_eq!(
        located(&errs),
        vec![(5, "job[1].trigger[1].cron"), (6, "job[1].trigger[1].tz")]
    );
}

#[test]
fn a_trigger_with_two_kinds_or_none_is_rejected() {
    let e = single(
        "[[job]]\nkey = \"a/b\"\nmodule = \"m\"\n[[job.trigger]]\nevery = \"1m\"\nat = \"2030-01-01T00:00:00Z\"\n",
    );
    assert_eq!((e.line, e.field.as_str()), (6, "job[1].trigger[1].at"));
    assert!(e.message.contains("already has `every`"), "{e}");

    let e = single("[[job]]\nkey = \"a/b\"\nmodule = \"m\"\n[[job.trigger]]\nname = \"t\"\n");
    assert_eq!((e.line, e.field.as_str()), (4, "job[1].trigger[1]"));
    assert!(e.message.contains("exactly one of"), "{e}");
}

#[test]
fn tz_repeat_and_misfire_only_go_with_their_kinds() {
    let errs = errors(
        "[[job]]\nkey = \"a/b\"\nmodule = \"m\"\n\
         [[job.trigger]]\nevery = \"1m\"\ntz = \"UTC\"\n\
         [[job.trigger]]\ncron = \"0 * * * * ?\"\nrepeat = 3\n\
         [[job.trigger]]\non = \"start\"\nmisfire = \"skip\"\n",
    );
    assert_eq!(
        located(&errs),
        vec![
            (6, "job[1].trigger[1].tz"),
            (9, "job[1].trigger[2].repeat"),
            (12, "job[1].trigger[3].misfire"),
        ]
    );
    assert!(errs[0].message.contains("only applies to `cron`"));
}

#[test]
fn every_checks_its_period_and_repeat() {
    let errs = errors(
        "[[job]]\nkey = \"a/b\"\nmodule = \"m\"\n[[job.trigger]]\nevery = \"0s\"\nrepeat = -1\n",
    );
    assert_eq!(
        located(&errs),
        vec![
            (5, "job[1].trigger[1].every"),
            (6, "job[1].trigger[1].repeat")
        ]
    );
    assert!(errs[0].message.contains("at least 1 ms"), "{}", errs[0]);
}

#[test]
fn start_must_be_before_end() {
    let e = single(
        "[[job]]\nkey = \"a/b\"\nmodule = \"m\"\n[[job.trigger]]\non = \"start\"\n\
         start = \"2030-01-01T00:00:00Z\"\nend = \"2030-01-01T00:00:00Z\"\n",
    );
    assert_eq!((e.line, e.field.as_str()), (7, "job[1].trigger[1].end"));
    assert!(e.message.contains("must be after start"), "{e}");
}

#[test]
fn duplicate_names_and_keys_are_rejected() {
    let errs = errors(
        "[[module]]\nname = \"m\"\npath = \"a.wasm\"\n\
         [[module]]\nname = \"m\"\npath = \"b.wasm\"\n\
         [[job]]\nkey = \"a/b\"\nmodule = \"m\"\n\
         [[job.trigger]]\non = \"start\"\n\
         [[job.trigger]]\nname = \"b-1\"\non = \"once\"\n\
         [[job]]\nkey = \"a/b\"\nmodule = \"m\"\n",
    );
    assert_eq!(
        located(&errs),
        vec![
            (5, "module[2].name"),
            (13, "job[1].trigger[2].name"),
            (16, "job[2].key")
        ]
    );
    assert!(
        errs[0]
            .message
            .contains("duplicate module name \"m\" (first declared on line 2)")
    );
    assert!(
        errs[2]
            .message
            .contains("duplicate job key \"a/b\" (first declared on line 8)")
    );
}

#[test]
fn unknown_modules_may_be_referenced() {
    let m = Manifest::parse(
        "[[job]]\nkey = \"a/b\"\nmodule = \"elsewhere@3\"\n",
        "jobs.toml",
    )
    .unwrap();
    assert_eq!(m.jobs[0].module.module_name(), Some("elsewhere"));
}

#[test]
fn wrong_types_are_reported() {
    let errs =
        errors("[[job]]\nkey = 3\nmodule = \"m\"\npaused = \"no\"\ntimeout = 30\nretry = 1\n");
    assert_eq!(
        located(&errs),
        vec![
            (2, "job[1].key"),
            (4, "job[1].paused"),
            (5, "job[1].timeout"),
            (6, "job[1].retry")
        ]
    );
    assert_eq!(errs[0].message, "expected a string, found integer");
}

#[test]
fn a_single_job_table_is_explained() {
    let e = single("[job]\nkey = \"a/b\"\nmodule = \"m\"\n");
    assert_eq!(e.field, "job");
    assert!(e.message.contains("[[job]]"), "{e}");
}

#[test]
fn load_resolves_module_paths_and_names_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jobs.toml");
    std::fs::write(&file, "[[module]]\nname = \"m\"\npath = \"mods/m.wasm\"\n").unwrap();
    std::fs::create_dir(dir.path().join("mods")).unwrap();
    std::fs::write(dir.path().join("mods/m.wasm"), b"").unwrap();
    let m = Manifest::load(&file).unwrap();
    assert_eq!(m.modules[0].path, dir.path().join("mods/m.wasm"));
    assert!(m.modules[0].path.is_absolute());

    let missing = dir.path().join("nope.toml");
    let errs = Manifest::load(&missing).unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs.0[0].file, missing);
    let shown = errs.to_string();
    assert!(shown.starts_with(&missing.display().to_string()), "{shown}");
    assert!(shown.contains("cannot read manifest"), "{shown}");
}

#[test]
fn a_missing_module_file_is_reported_with_the_other_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jobs.toml");
    std::fs::write(
        &file,
        "[[module]]\nname = \"m\"\npath = \"gone.wasm\"\n\
         [[job]]\nkey = \"a/..\"\nmodule = \"m\"\n[[job.trigger]]\ncron = \"0 0 0 31 2 ?\"\n",
    )
    .unwrap();
    let errs = Manifest::load(&file).unwrap_err();
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        ["module[1].path", "job[1].key", "job[1].trigger[1].cron"],
        "{errs}"
    );
    assert!(errs.0[0].message.contains("gone.wasm"), "{errs}");
    assert!(errs.0[2].message.contains("never fire"), "{errs}");
}

#[test]
fn load_reports_invalid_utf8_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jobs.toml");
    std::fs::write(&file, b"# ok\n# \xff\n").unwrap();
    let errs = Manifest::load(&file).unwrap_err();
    assert_eq!((errs.0[0].line, errs.0[0].column), (2, 3));
}

#[test]
fn data_that_json_cannot_hold_is_rejected() {
    let e = single("[[job]]\nkey = \"a/b\"\nmodule = \"m\"\ndata = { x = [1, nan] }\n");
    assert_eq!((e.line, e.field.as_str()), (4, "job[1].data.x[2]"));
}

#[test]
fn enums_round_trip_through_their_spelling() {
    for p in [
        MisfirePolicy::FireNow,
        MisfirePolicy::Skip,
        MisfirePolicy::FireOnce,
    ] {
        assert_eq!(p.as_str().parse::<MisfirePolicy>(), Ok(p));
    }
    assert!("fire_now".parse::<MisfirePolicy>().is_err());
    for o in Overlap::ALL {
        assert_eq!(o.as_str().parse::<Overlap>(), Ok(o));
        assert_eq!(serde_json::to_value(o).unwrap(), json!(o.as_str()));
    }
    for spec in [
        "hello",
        "hello@1.0.0-rc.1+b5",
        &format!("sha256:{}", "0".repeat(64)),
    ] {
        assert_eq!(spec.parse::<ModuleSpec>().unwrap().to_string(), spec);
    }
    for bad in ["", "Hello", "a@", "@1", "sha256:12", "-a", "a b"] {
        assert!(bad.parse::<ModuleSpec>().is_err(), "{bad}");
    }
}

#[test]
fn sizes_accept_the_documented_units() {
    assert_eq!(parse_size("512"), Ok(512));
    assert_eq!(parse_size("512B"), Ok(512));
    assert_eq!(parse_size("4k"), Ok(4096));
    assert_eq!(parse_size("4KB"), Ok(4096));
    assert_eq!(parse_size("64MiB"), Ok(64 << 20));
    assert_eq!(parse_size("64 mb"), Ok(64 << 20));
    assert_eq!(parse_size("1GiB"), Ok(1 << 30));
    assert!(parse_size("0MiB").is_err());
    assert!(parse_size("MiB").is_err());
    assert!(parse_size("1.5GiB").is_err());
    assert!(parse_size("99999999999999999999GiB").is_err());
    assert!(parse_size("17179869184GiB").is_err());
}

#[test]
fn retry_max_must_not_be_below_initial() {
    let e = single("[[job]]\nkey = \"a/b\"\nmodule = \"m\"\n[job.retry]\ninitial = \"10m\"\n");
    assert_eq!((e.line, e.field.as_str()), (5, "job[1].retry.initial"));
    let e = single(
        "[[job]]\nkey = \"a/b\"\nmodule = \"m\"\n[job.retry]\ninitial = \"10s\"\nmax = \"5s\"\n",
    );
    assert_eq!((e.line, e.field.as_str()), (6, "job[1].retry.max"));
}

#[test]
fn grants_parse_and_a_bad_pattern_is_reported_at_its_field() {
    let m = Manifest::parse(
        "[[job]]\nkey = \"a/b\"\nmodule = \"m\"\n[job.grants]\nhttp = [\"https://api.example.com/v1/*\"]\n\
         emit = [\"report.*\"]\nconfig = { channel = \"#ops\" }\n[[job.grants.secret]]\nname = \"TOKEN\"\n\
         url = \"https://hooks.example.com/*\"\nformat = \"Bearer {}\"\n",
        "jobs.toml",
    )
    .unwrap();
    let g = &m.jobs[0].grants;
    assert_eq!(g.http, ["https://api.example.com/v1/*"]);
    assert_eq!(g.config["channel"], "#ops");
    assert_eq!(g.secret[0].header, "Authorization", "the default header");
    let e =
        single("[[job]]\nkey = \"a/b\"\nmodule = \"m\"\n[job.grants]\nhttp = [\"ftp://x/*\"]\n");
    assert_eq!(e.field, "job[1].grants.http[1]", "{e:?}");
    let e = single("[[job]]\nkey = \"a/b\"\nmodule = \"m\"\n[job.grants]\nhtp = []\n");
    assert!(e.message.contains("unknown field `htp`"), "{e:?}");
    assert!(
        Manifest::parse("[[job]]\nkey = \"a/b\"\nmodule = \"m\"\n", "j.toml")
            .unwrap()
            .jobs[0]
            .grants
            .is_empty()
    );
}

#[test]
fn a_trigger_takes_a_jitter_on_schedules_only() {
    let m = Manifest::parse(
        r#"
[[job]]
key = "g/j"
module = "hello"
[[job.trigger]]
every = "1m"
jitter = "30s"
"#,
        "jobs.toml",
    )
    .unwrap();
    assert_eq!(m.jobs[0].triggers[0].jitter, Duration::from_secs(30));
    let error = single(
        r#"
[[job]]
key = "g/e"
module = "hello"
[[job.trigger]]
event = "order.created"
jitter = "30s"
"#,
    );
    assert_eq!(error.field, "job[1].trigger[1].jitter");
    assert!(
        error
            .message
            .contains("`jitter` only applies to `cron`, `every` and `at` triggers"),
        "{error:?}"
    );
}

#[test]
fn flow_control_parses_and_each_mistake_is_reported_at_its_field() {
    let m = Manifest::parse(
        r#"
[[job]]
key = "g/charge"
module = "hello"
concurrency = { key = "acct:{{ event.payload.account_id }}", limit = 3 }
rate = { limit = 10, per = "1m" }
[[job.trigger]]
event = "order.placed"

[[job]]
key = "g/index"
module = "hello"
debounce = "5s"
[[job.trigger]]
event = "doc.saved"
"#,
        "jobs.toml",
    )
    .unwrap();
    let flow = &m.jobs[0].flow;
    let c = flow.concurrency.as_ref().unwrap();
    assert_eq!(
        (c.key.as_str(), c.limit),
        ("acct:{{ event.payload.account_id }}", 3)
    );
    let r = flow.rate.as_ref().unwrap();
    assert_eq!(
        (r.key.as_str(), r.limit, r.per_ms),
        ("{{ job }}", 10, 60_000)
    );
    assert_eq!(
        m.jobs[1].flow.coalesce.as_ref().unwrap().debounce_ms,
        Some(5000)
    );

    let job = |extra: &str, trigger: &str| {
        format!("[[job]]\nkey = \"g/j\"\nmodule = \"hello\"\n{extra}\n[[job.trigger]]\n{trigger}\n")
    };
    for (extra, trigger, field, says) in [
        (
            "concurrency = { limit = 0 }",
            "every = \"1m\"",
            "job[1].concurrency",
            "concurrency.limit must be from 1",
        ),
        (
            "concurrency = { key = \"{{ payload.x }}\", limit = 2 }",
            "every = \"1m\"",
            "job[1].concurrency",
            "unknown placeholder",
        ),
        (
            "concurrency = 3",
            "every = \"1m\"",
            "job[1].concurrency",
            "concurrency: invalid type",
        ),
        (
            "rate = { limit = 5, per = \"soon\" }",
            "every = \"1m\"",
            "job[1].rate",
            "rate.per: \"soon\" is not a duration",
        ),
        (
            "rate = { limit = 5 }",
            "every = \"1m\"",
            "job[1].rate",
            "missing field `per`",
        ),
        (
            "debounce = 5",
            "event = \"e\"",
            "job[1].debounce",
            "debounce must be a duration",
        ),
        (
            "debounce = \"5s\"",
            "every = \"1m\"",
            "job[1].debounce",
            "give the job an `event` trigger",
        ),
        (
            "singleton = true\nconcurrency = { limit = 2 }",
            "event = \"e\"",
            "job[1].singleton",
            "not both",
        ),
    ] {
        let error = single(&job(extra, trigger));
        assert_eq!(error.field, field, "{extra}: {error:?}");
        assert!(error.message.contains(says), "{extra}: {error:?}");
    }
}

#[test]
fn calendars_are_declared_and_attached_to_triggers() {
    let m = Manifest::parse(
        r#"
[[calendar]]
name = "weekend"
kind = "weekly"
days = ["SAT", "SUN"]

[[calendar]]
name = "holidays"
kind = "holiday"
tz = "Europe/Berlin"
dates = ["2030-12-25", "2030-12-26"]
base = "weekend"

[[calendar]]
name = "nights"
kind = "daily"
window = "22:00-06:00"

[[job]]
key = "g/report"
module = "report"
[[job.trigger]]
cron = "0 0 9 * * ?"
calendar = "holidays"
[[job.trigger]]
name = "night-tick"
every = "1m"
calendar = ["nights", "weekend"]
"#,
        "jobs.toml",
    )
    .unwrap();
    let names: Vec<&str> = m.calendars.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["weekend", "holidays", "nights"]);
    assert_eq!(m.calendars[1].tz, "Europe/Berlin");
    assert_eq!(m.calendars[1].base.as_deref(), Some("weekend"));
    assert_eq!(m.jobs[0].triggers[0].calendars, ["holidays"]);
    assert_eq!(m.jobs[0].triggers[1].calendars, ["nights", "weekend"]);
}

#[test]
fn calendar_errors_name_the_file_the_field_and_the_trigger() {
    let e = single(
        r#"
[[job]]
key = "g/report"
module = "report"
[[job.trigger]]
name = "daily"
cron = "0 0 9 * * ?"
calendar = "holidays"
"#,
    );
    assert_eq!(e.file, std::path::Path::new("jobs.toml"));
    assert_eq!(
        (e.line, e.field.as_str()),
        (8, "job[1].trigger[1].calendar")
    );
    assert!(
        e.message
            .contains("trigger \"daily\" of job \"g/report\" names calendar \"holidays\"")
            && e.message.contains("[[calendar]]"),
        "{e:?}"
    );

    let all = errors(
        r#"
[[calendar]]
name = "a"
kind = "weekly"
days = ["MON"]
base = "b"

[[calendar]]
name = "b"
kind = "holiday"
dates = ["2030-02-30"]

[[calendar]]
name = "c"
kind = "daily"
window = "22:00-06:00"
cron = "* * * * * ?"

[[calendar]]
name = "d"
kind = "monthly"

[[calendar]]
name = "e"
kind = "weekly"
days = ["MON"]
colour = "red"

[[job]]
key = "g/j"
module = "m"
[[job.trigger]]
on = "start"
calendar = "a"
"#,
    );
    let got = located(&all);
    assert!(got.contains(&(6, "calendar[1].base")), "{all:#?}");
    assert!(got.contains(&(11, "calendar[2].dates")), "{all:#?}");
    assert!(got.contains(&(15, "calendar[3].kind")), "{all:#?}");
    assert!(got.contains(&(21, "calendar[4].kind")), "{all:#?}");
    assert!(got.contains(&(27, "calendar[5].colour")), "{all:#?}");
    assert!(
        got.contains(&(34, "job[1].trigger[1].calendar")),
        "{all:#?}"
    );
    let says = |field: &str, text: &str| {
        all.iter()
            .any(|e| e.field == field && e.message.contains(text))
    };
    assert!(says("calendar[1].base", "names base \"b\""), "{all:#?}");
    assert!(
        says("calendar[2].dates", "\"2030-02-30\" is not a date"),
        "{all:#?}"
    );
    assert!(
        says("calendar[3].kind", "does not take \"cron\""),
        "{all:#?}"
    );
    assert!(
        says("job[1].trigger[1].calendar", "only applies to"),
        "{all:#?}"
    );
}

#[test]
fn the_example_manifest_parses_with_its_calendars() {
    let m = Manifest::parse(
        include_str!("../../../example-jobs/jobs.toml"),
        "example-jobs/jobs.toml",
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    let report = m
        .jobs
        .iter()
        .find(|j| j.key() == "examples/report")
        .unwrap();
    assert_eq!(report.triggers[0].calendars, ["holidays"]);
    assert_eq!(
        m.calendars
            .iter()
            .map(|c| (c.name.as_str(), c.base.as_deref()))
            .collect::<Vec<_>>(),
        [("weekend", None), ("holidays", Some("weekend"))]
    );
}
