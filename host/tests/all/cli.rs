//! The `quartzite` binary as a job author uses it: `run-once` and `module inspect`.

use crate::common::*;

use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Output};

fn quartzite(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quartzite"))
        .args(args)
        .arg("--cache-dir")
        .arg(cache)
        .env_remove("QUARTZITE_LOG")
        .output()
        .unwrap()
}

fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn run_once_prints_the_outcome_as_json_and_exits_zero() {
    let cache = tempfile::tempdir().unwrap();
    let hello = wasm("hello");
    let out = quartzite(
        &[
            "run-once",
            hello.to_str().unwrap(),
            "--data",
            r#"{"name":"CLI"}"#,
        ],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json = stdout_json(&out);
    assert_eq!(json["status"], "completed");
    assert_eq!(json["details"]["greeting"], "hello, CLI");
    assert_eq!(
        json["logs"][0]["message"],
        "hello, CLI (fire manual, attempt 1)"
    );
    assert!(json["duration_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(json["module"]["wit_version"], "1.1.0");
    assert_eq!(json["module"]["digest"].as_str().unwrap().len(), 64);
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
}

#[test]
fn run_once_exits_one_with_a_one_line_reason_when_the_job_fails() {
    let cache = tempfile::tempdir().unwrap();
    let flaky = wasm("flaky");
    let out = quartzite(
        &[
            "run-once",
            flaky.to_str().unwrap(),
            "--data",
            r#"{"failures":1}"#,
        ],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout_json(&out)["status"], "failed");
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("failed (retryable): planned failure 1 of 1"),
        "{err}"
    );
}

#[test]
fn run_once_enforces_timeout_and_memory_flags() {
    let cache = tempfile::tempdir().unwrap();
    let hostile = wasm("guest_hostile");
    let h = hostile.to_str().unwrap();
    let out = quartzite(
        &[
            "run-once",
            h,
            "--data",
            r#"{"op":"loop"}"#,
            "--timeout",
            "200ms",
        ],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout_json(&out)["status"], "timed-out");
    assert!(stderr(&out).contains("timed out after 200 ms"));

    let out = quartzite(
        &[
            "run-once",
            h,
            "--data",
            r#"{"op":"alloc","mb":64}"#,
            "--max-memory",
            "16MiB",
        ],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    let json = stdout_json(&out);
    assert_eq!(json["status"], "limit-exceeded");
    assert_eq!(json["limit"], "memory");
}

#[test]
fn a_memory_cap_below_the_modules_initial_memory_is_a_memory_limit_and_keeps_the_cache() {
    let cache = tempfile::tempdir().unwrap();
    let hostile = wasm("guest_hostile");
    let h = hostile.to_str().unwrap();
    let out = quartzite(&["run-once", h, "--data", r#"{"op":"ok"}"#], cache.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let entries = || -> Vec<std::path::PathBuf> {
        let mut files = Vec::new();
        for dir in std::fs::read_dir(cache.path()).unwrap() {
            for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
                files.push(f.unwrap().path());
            }
        }
        files
    };
    let cached = entries();
    assert_eq!(cached.len(), 1, "{cached:?}");

    // A Rust guest starts with more than 64 KiB of memory.
    let out = quartzite(
        &[
            "run-once",
            h,
            "--data",
            r#"{"op":"ok"}"#,
            "--max-memory",
            "64KiB",
        ],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let json = stdout_json(&out);
    assert_eq!(json["status"], "limit-exceeded", "{json}");
    assert_eq!(json["limit"], "memory");
    assert_eq!(entries(), cached, "the good cache entry stays");
}

#[test]
fn module_push_compiles_into_quartzite_cache_dir() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let db = format!("sqlite://{}", dir.path().join("q.db").display());
    let out = Command::new(env!("CARGO_BIN_EXE_quartzite"))
        .args([
            "module",
            "push",
            wasm("hello").to_str().unwrap(),
            "--db",
            &db,
        ])
        .env("QUARTZITE_CACHE_DIR", &cache)
        .env_remove("QUARTZITE_LOG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let compiled: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|f| f.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(compiled.len(), 1, "{compiled:?}");
    assert!(compiled[0].ends_with(".cwasm"), "{compiled:?}");
}

/// Issue 15, item 10: `--cache-dir` is honoured by `module push` and
/// `job add` on `--db` as by `serve` (the flag beats the environment).
#[test]
fn module_push_and_job_add_compile_into_cache_dir() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("q.db").display());
    let compiled = |cache: &Path| -> Vec<String> {
        std::fs::read_dir(cache)
            .map(|dirs| {
                dirs.flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
                    .map(|f| f.unwrap().file_name().into_string().unwrap())
                    .collect()
            })
            .unwrap_or_default()
    };
    for (i, args) in [
        vec!["module", "push", wasm("hello").to_str().unwrap()],
        vec![
            "job",
            "add",
            "g/count",
            "--module",
            wasm("counter").to_str().unwrap(),
            "--every",
            "1h",
        ],
    ]
    .into_iter()
    .enumerate()
    {
        let cache = dir.path().join(format!("cache-{i}"));
        let env_cache = dir.path().join(format!("env-cache-{i}"));
        let out = Command::new(env!("CARGO_BIN_EXE_quartzite"))
            .args(&args)
            .args(["--db", &db, "--cache-dir"])
            .arg(&cache)
            .env("QUARTZITE_CACHE_DIR", &env_cache)
            .env_remove("QUARTZITE_LOG")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        let files = compiled(&cache);
        assert_eq!(files.len(), 1, "{args:?}: {files:?}");
        assert!(files[0].ends_with(".cwasm"), "{files:?}");
        assert!(
            compiled(&env_cache).is_empty(),
            "the flag beats the environment"
        );
    }
}

#[test]
fn run_once_exits_three_when_the_module_cannot_run() {
    let cache = tempfile::tempdir().unwrap();
    let future = wasm("guest_future_major");
    let out = quartzite(&["run-once", future.to_str().unwrap()], cache.path());
    assert_eq!(out.status.code(), Some(3));
    let json = stdout_json(&out);
    assert_eq!(json["status"], "skipped");
    assert_eq!(json["reason"], "module-incompatible");
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("quartzite:job@2.0.0"), "{err}");

    let out = quartzite(&["run-once", "/no/such/file.wasm"], cache.path());
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(stdout_json(&out)["reason"], "module-missing");
}

#[test]
fn bad_arguments_are_usage_errors_that_say_what_is_wrong() {
    let cache = tempfile::tempdir().unwrap();
    let hello = wasm("hello");
    let h = hello.to_str().unwrap();
    let out = quartzite(&["run-once", h, "--data", "{not json"], cache.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--data is not JSON"),
        "{}",
        stderr(&out)
    );

    let out = quartzite(&["run-once", h, "--timeout", "soon"], cache.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("invalid duration \"soon\""),
        "{}",
        stderr(&out)
    );

    let out = quartzite(&["run-once", h, "--max-memory", "lots"], cache.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("invalid size \"lots\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn module_inspect_shows_what_the_module_is() {
    let cache = tempfile::tempdir().unwrap();
    let report = wasm("report");
    let out = quartzite(
        &["module", "inspect", report.to_str().unwrap(), "--json"],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json = stdout_json(&out);
    assert_eq!(json["wit_version"], "1.1.0");
    assert_eq!(json["info"]["name"], "report");
    assert_eq!(json["info"]["overlap"], "forbid");
    let imports: Vec<&str> = json["imports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(imports.contains(&"quartzite:job/host@1.1.0"), "{imports:?}");
    assert_eq!(json["exports"][0], "quartzite:job/runner@1.1.0");
    let digest = json["digest"].as_str().unwrap();
    let text = quartzite(
        &["module", "inspect", report.to_str().unwrap()],
        cache.path(),
    );
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains(&format!("sha256:{digest}")), "{text}");
    assert!(
        text.contains("description: builds a report in steps"),
        "{text}"
    );
}

#[test]
fn module_inspect_says_exactly_why_a_module_is_incompatible() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, wat::parse_str("(module)").unwrap()).unwrap();
    let out = quartzite(&["module", "inspect", core.to_str().unwrap()], cache.path());
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("module-incompatible: is a core WebAssembly module, not a component"),
        "{}",
        stderr(&out)
    );

    let unknown = wasm("guest_unknown_import");
    let out = quartzite(
        &["module", "inspect", unknown.to_str().unwrap(), "--json"],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(3));
    let json = stdout_json(&out);
    assert_eq!(json["compatible"], false);
    assert_eq!(json["reason"], "module-incompatible");
    assert!(
        json["detail"]
            .as_str()
            .unwrap()
            .contains("acme:thing/telemetry@1.0.0")
    );
}

#[test]
fn trigger_preview_prints_utc_fire_times_and_dst_gaps_without_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let preview = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_quartzite"))
            .args(["trigger", "preview"])
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let out = preview(&[
        "--cron",
        "0 30 2 * * ?",
        "--tz",
        "America/New_York",
        "--after",
        "2027-03-13T00:00:00Z",
        "--count",
        "2",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout_json(&out),
        serde_json::json!([
            { "fire_at": "2027-03-13T07:30:00.000Z" },
            { "skipped_at": "2027-03-14T07:00:00.000Z", "reason": "dst-gap", "local_time": "2027-03-14 02:30:00" },
            { "fire_at": "2027-03-15T06:30:00.000Z" },
        ])
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "preview touches no database"
    );

    let out = preview(&[
        "--cron",
        "0 0 12 ? * 6#3",
        "--tz",
        "Europe/Berlin",
        "--after",
        "2030-01-01T00:00:00Z",
        "--count",
        "2",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "2030-01-18T11:00:00.000Z\n2030-02-15T11:00:00.000Z\n"
    );

    let out = preview(&["--cron", "0 0 25 * * ?"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("invalid cron expression \"0 0 25 * * ?\""),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("hours"), "{}", stderr(&out));
}

#[test]
fn db_migrate_creates_the_sqlite_default_in_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_quartzite"))
            .args(["db", "migrate"])
            .env_remove("QUARTZITE_DB")
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let out = run();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(dir.path().join("quartzite.db").is_file());
    assert_eq!(run().status.code(), Some(0), "migrating again is a no-op");

    let out = Command::new(env!("CARGO_BIN_EXE_quartzite"))
        .args([
            "db",
            "migrate",
            "--db",
            "postgres://nobody:hunter2@127.0.0.1:1/none",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("cannot connect to postgres://nobody:***@127.0.0.1:1/none"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn events_and_alerts_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let db = format!("sqlite://{}", dir.path().join("q.db").display());
    let relay = wasm("guest_relay");
    let q = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_quartzite"))
            .args(["--db", db.as_str()])
            .args(args)
            .env("QUARTZITE_CACHE_DIR", &cache)
            .env_remove("QUARTZITE_LOG")
            .output()
            .unwrap()
    };
    let added = q(&[
        "job",
        "add",
        "ev/x",
        "--module",
        relay.to_str().unwrap(),
        "--event",
        "order.created",
    ]);
    assert!(added.status.success(), "{}", stderr(&added));
    let listed = stdout_json(&q(&["trigger", "list", "--json"]));
    assert_eq!(listed[0]["kind"], "event", "{listed}");

    let first = q(&[
        "event",
        "emit",
        "order.created",
        "--data",
        r#"{"n":1}"#,
        "--key",
        "k1",
        "--json",
    ]);
    assert!(first.status.success(), "{}", stderr(&first));
    let first = stdout_json(&first);
    assert_eq!(first["duplicate"], false);
    assert_eq!(first["fires"][0]["job_key"], "ev/x");
    let again = stdout_json(&q(&[
        "event",
        "emit",
        "order.created",
        "--key",
        "k1",
        "--json",
    ]));
    assert_eq!(
        (again["duplicate"].clone(), again["event_id"].clone()),
        (json!(true), first["event_id"].clone())
    );
    let events = stdout_json(&q(&["event", "list", "--json"]));
    assert_eq!(events.as_array().unwrap().len(), 1);
    assert_eq!(events[0]["payload"], json!({ "n": 1 }));

    let bad = q(&["event", "emit", "order created"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("event name \"order created\""),
        "{}",
        stderr(&bad)
    );
    let bad = q(&["event", "emit", "x", "--data", "{nope"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("not JSON"), "{}", stderr(&bad));

    // A rule whose receiver is not there: the sample fails, exit 1, and is recorded.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let hook = format!("http://{closed}/hook");
    let rule = q(&[
        "alert",
        "add",
        "ops",
        "--on",
        "consecutive-failures",
        "--after",
        "3",
        "--job",
        "ev/*",
        "--webhook",
        &hook,
    ]);
    assert!(rule.status.success(), "{}", stderr(&rule));
    let rules = stdout_json(&q(&["alert", "list", "--json"]));
    assert_eq!(
        (rules[0]["condition"].clone(), rules[0]["threshold"].clone()),
        (json!("consecutive-failures"), json!(3))
    );
    let bad = q(&[
        "alert",
        "add",
        "x",
        "--on",
        "misfire",
        "--after",
        "2",
        "--webhook",
        &hook,
    ]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    let test = q(&["alert", "test", "ops", "--json"]);
    assert_eq!(test.status.code(), Some(1));
    let test = stdout_json(&test);
    assert_eq!(test["state"], "failed");
    assert_eq!(test["payload"]["test"], true);
    let deliveries = stdout_json(&q(&["alert", "deliveries", "--state", "failed", "--json"]));
    assert_eq!(deliveries.as_array().unwrap().len(), 1, "{deliveries}");
    assert!(q(&["alert", "delete", "ops"]).status.success());
    assert_eq!(q(&["alert", "delete", "ops"]).status.code(), Some(1));
}

/// A command on a store, which takes its cache from `QUARTZITE_CACHE_DIR`.
fn store_command(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quartzite"))
        .args(args)
        .env("QUARTZITE_CACHE_DIR", cache)
        .env_remove("QUARTZITE_LOG")
        .output()
        .unwrap()
}

/// No byte of `text` may drive a terminal: no C0 or C1 control but newline.
fn assert_inert(text: &str) {
    let bad: Vec<char> = text
        .chars()
        .filter(|c| *c != '\n' && quartzite::text::is_unsafe(*c))
        .collect();
    assert!(bad.is_empty(), "control characters {bad:?} in {text:?}");
}

#[test]
fn module_inspect_prints_guest_describe_text_escaped_and_bounded() {
    let cache = tempfile::tempdir().unwrap();
    let loud = wasm("guest_loud_describe");
    let out = quartzite(&["module", "inspect", loud.to_str().unwrap()], cache.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_inert(&text);
    assert!(text.contains("name:        loud\\u{1b}[2J"), "{text}");
    let description = text
        .lines()
        .find(|l| l.starts_with("description: "))
        .unwrap();
    // Stored text is stripped of controls and cut to 1 KiB (and a mark).
    assert!(description.len() < 1100, "{} bytes", description.len());
    assert!(
        description.starts_with("description: ]0;owned[31mred"),
        "{description}"
    );
}

#[test]
fn a_push_refuses_describe_names_that_are_not_module_names() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("q.db").display());
    let push = |file: &str, extra: &[&str]| {
        let mut args = vec!["module", "push", file, "--db", &db];
        args.extend_from_slice(extra);
        store_command(&args, dir.path())
    };
    let huge = wasm("guest_huge_describe");
    let out = push(huge.to_str().unwrap(), &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("name of 16777216 bytes"),
        "{}",
        stderr(&out)
    );
    assert!(
        out.stderr.len() < 1000,
        "{} bytes of stderr",
        out.stderr.len()
    );

    let loud = wasm("guest_loud_describe");
    let out = push(loud.to_str().unwrap(), &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_inert(&stderr(&out));
    assert!(
        stderr(&out).contains("which is not a module name"),
        "{}",
        stderr(&out)
    );
    let out = push(
        loud.to_str().unwrap(),
        &["--name", "loud", "--version", "1.0.0"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_list_prints_stored_guest_text_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("q.db").display());
    // A row stored before names were checked at push, as an older version did.
    let store = quartzite::store::open(&db).await.unwrap();
    let bytes = std::fs::read(wasm("guest_loud_describe")).unwrap();
    store
        .module_put(&quartzite::store::ModulePut {
            name: "loud\u{1b}[2J".into(),
            version: "1.0.0\u{1b}]0;owned\u{7}".into(),
            digest: quartzite::runtime::module::digest(&bytes),
            wit_version: "1.1.0".into(),
            bytes,
            restore: true,
        })
        .await
        .unwrap();
    drop(store);
    let out = store_command(&["module", "list", "--db", &db], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_inert(&text);
    assert!(text.contains("loud\\u{1b}[2J"), "{text}");
}

/// Issue 18: a change made with `--db` goes through the admin service the API
/// uses, so it is checked the same way and leaves the same audit row, with the
/// operating-system user as the actor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_changes_are_audited_as_the_os_user() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("q.db").display());
    let hello = wasm("hello");
    let run = |args: &[&str], user: &str| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--db", &db]);
        Command::new(env!("CARGO_BIN_EXE_quartzite"))
            .args(&all)
            .env("QUARTZITE_CACHE_DIR", dir.path())
            .env("USER", user)
            .env_remove("QUARTZITE_LOG")
            .output()
            .unwrap()
    };
    let pushed = run(&["module", "push", hello.to_str().unwrap()], "alice");
    assert_eq!(pushed.status.code(), Some(0), "{}", stderr(&pushed));
    let added = run(
        &[
            "job",
            "add",
            "ops/nightly",
            "--module",
            "hello",
            "--every",
            "1h",
        ],
        "alice",
    );
    assert_eq!(added.status.code(), Some(0), "{}", stderr(&added));
    let paused = run(&["job", "pause", "ops/nightly"], "bob");
    assert_eq!(paused.status.code(), Some(0), "{}", stderr(&paused));
    // A refused change is audited too, with the status the API would answer.
    let missing = run(&["job", "delete", "ops/none"], "bob");
    assert_eq!(missing.status.code(), Some(1), "{}", stderr(&missing));
    assert!(
        stderr(&missing).contains("no job \"ops/none\""),
        "{}",
        stderr(&missing)
    );
    // Reads are not audited.
    assert!(run(&["job", "list"], "carol").status.success());

    let store = quartzite::store::open(&db).await.unwrap();
    let rows = store
        .audit_list(&quartzite::store::model::AuditFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let got: Vec<(String, String, String, u16)> = rows
        .iter()
        .rev()
        .map(|r| {
            (
                r.actor.clone(),
                r.action.clone(),
                r.target.clone(),
                r.status,
            )
        })
        .collect();
    let version = stdout_of(&pushed);
    assert_eq!(
        got,
        [
            ("os:alice", "module.push", version.as_str(), 201),
            ("os:alice", "job.update", "ops/nightly", 201),
            ("os:bob", "job.pause", "ops/nightly", 200),
            ("os:bob", "job.delete", "ops/none", 404),
        ]
        .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d))
    );
    // The job is stored as the CLI's, and the summary is the API's.
    let job = store.job_get("ops/nightly").await.unwrap().unwrap();
    assert_eq!(job.source, "cli");
    let add_row = &rows[rows.len() - 2];
    let summary: Value = serde_json::from_str(&add_row.summary).unwrap();
    assert_eq!(summary["every"], "1h", "{summary}");
    assert_eq!(add_row.client, None);
}

/// The `NAME@VERSION` a `module push` printed.
fn stdout_of(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no module in {text:?}"))
        .to_string()
}

/// A loopback HTTP server answering `ok` to each of `n` requests, handing
/// each request's head (request line and headers, lowercased) to the test.
fn one_shot_server(n: usize) -> (u16, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(n) {
            let mut stream = stream.unwrap();
            let mut head = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line.to_ascii_lowercase());
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
            let _ = tx.send(head);
        }
    });
    (port, rx)
}

#[test]
fn run_once_takes_grants_as_job_add_does_with_secrets_from_the_environment() {
    let cache = tempfile::tempdir().unwrap();
    let guest = crate::common::wasm("guest_http");
    let (port, heads) = one_shot_server(1);
    let data = json!({ "requests": [{ "url": format!("http://127.0.0.1:{port}/a") }] }).to_string();
    let run = |extra: &[&str], token: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_quartzite"));
        cmd.args(["run-once", guest.to_str().unwrap(), "--data", &data])
            .args(extra)
            .arg("--cache-dir")
            .arg(cache.path())
            .env_remove("QUARTZITE_LOG")
            .env_remove("QZ_TEST_TOKEN");
        if let Some(t) = token {
            cmd.env("QZ_TEST_TOKEN", t);
        }
        cmd.output().unwrap()
    };

    // Nothing granted: the request is denied, and no server sees it.
    let out = run(&[], None);
    let v = stdout_json(&out);
    assert_eq!(v["details"]["results"][0]["error"], "denied", "{v}");

    let pattern = format!("http://127.0.0.1:{port}/*");
    let secret = format!("QZ_TEST_TOKEN@{pattern}#Authorization=Bearer {{}}");
    let granted = [
        "--grant-http",
        pattern.as_str(),
        "--grant-secret",
        secret.as_str(),
    ];
    // A secret grant without its variable: refused before anything runs.
    let out = run(&granted, None);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("QZ_TEST_TOKEN"), "{}", stderr(&out));

    let out = run(&granted, Some("s3cret-value"));
    assert!(out.status.success(), "{}", stderr(&out));
    let v = stdout_json(&out);
    assert_eq!(v["details"]["results"][0]["status"], 200, "{v}");
    let head = heads
        .recv_timeout(std::time::Duration::from_secs(10))
        .unwrap();
    assert!(
        head.contains("authorization: bearer s3cret-value"),
        "{head}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("s3cret-value"),
        "the value is never printed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_replay_and_cancel_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let db = format!("sqlite://{}", dir.path().join("q.db").display());
    let hostile = wasm("guest_hostile");
    let q = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_quartzite"))
            .args(["--db", db.as_str()])
            .args(args)
            .env("QUARTZITE_CACHE_DIR", &cache)
            .env("USER", "dana")
            .env_remove("QUARTZITE_LOG")
            .output()
            .unwrap()
    };
    let added = q(&[
        "job",
        "add",
        "ops/report",
        "--module",
        hostile.to_str().unwrap(),
        "--data",
        r#"{"op":"clock"}"#,
        "--cron",
        "0 0 6 * * ?",
        "--tz",
        "Europe/Berlin",
    ]);
    assert!(added.status.success(), "{}", stderr(&added));

    // Berlin leaves CET for CEST on 2026-03-29: 06:00 local is 05:00Z, then 04:00Z.
    let range = [
        "--from",
        "2026-03-28T00:00:00Z",
        "--to",
        "2026-03-31T00:00:00Z",
    ];
    let mut args = vec!["job", "backfill", "ops/report", "--dry-run", "--json"];
    args.extend_from_slice(&range);
    let dry = q(&args);
    assert_eq!(dry.status.code(), Some(0), "{}", stderr(&dry));
    let times: Vec<String> = stdout_json(&dry)["times"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["scheduled_at"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        times,
        [
            "2026-03-28T05:00:00.000Z",
            "2026-03-29T04:00:00.000Z",
            "2026-03-30T04:00:00.000Z"
        ]
    );
    // Text output of a dry run: one line per time, then the count.
    let mut args = vec!["job", "backfill", "ops/report", "--dry-run"];
    args.extend_from_slice(&range);
    let text = String::from_utf8_lossy(&q(&args).stdout).into_owned();
    assert!(
        text.starts_with("2026-03-28T05:00:00.000Z  ops/report:"),
        "{text}"
    );
    assert!(text.contains("3 fire time(s) of ops/report"), "{text}");

    // Errors: what is wrong and where, exit 2.
    let mut args = vec!["job", "backfill", "ops/report", "--max", "2"];
    args.extend_from_slice(&range);
    let over = q(&args);
    assert_eq!(over.status.code(), Some(2));
    assert!(
        stderr(&over).contains("holds 3 fire times of ops/report, over the maximum of 2"),
        "{}",
        stderr(&over)
    );
    let mut args = vec!["job", "backfill", "ops/report", "--overlap", "forbid"];
    args.extend_from_slice(&range);
    let bad = q(&args);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("invalid overlap \"forbid\""),
        "{}",
        stderr(&bad)
    );
    let backwards = q(&[
        "job",
        "backfill",
        "ops/report",
        "--from",
        "2026-03-31T00:00:00Z",
        "--to",
        "2026-03-28T00:00:00Z",
    ]);
    assert_eq!(backwards.status.code(), Some(2));
    assert!(
        stderr(&backwards).contains("is not after from"),
        "{}",
        stderr(&backwards)
    );
    let missing = q(&[
        "job",
        "backfill",
        "ops/none",
        "--from",
        "2026-03-28T00:00:00Z",
        "--to",
        "2026-03-31T00:00:00Z",
    ]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("no job \"ops/none\""),
        "{}",
        stderr(&missing)
    );

    // The backfill itself: three waiting fires (no server runs them here).
    let mut args = vec![
        "job",
        "backfill",
        "ops/report",
        "--overlap",
        "allow",
        "--json",
    ];
    args.extend_from_slice(&range);
    let made = q(&args);
    assert_eq!(made.status.code(), Some(0), "{}", stderr(&made));
    let made = stdout_json(&made);
    assert_eq!(
        (made["created"].as_u64(), made["existing"].as_u64()),
        (Some(3), Some(0))
    );
    // Again: every time has its fire already.
    let mut args = vec!["job", "backfill", "ops/report"];
    args.extend_from_slice(&range);
    let again = String::from_utf8_lossy(&q(&args).stdout).into_owned();
    assert!(
        again.contains("0 fire(s) created, 3 time(s) had a fire already"),
        "{again}"
    );

    // Nothing failed: a replay starts nothing.
    let replay = q(&[
        "history", "replay", "--job", "ops/*", "--since", "1h", "--json",
    ]);
    assert_eq!(replay.status.code(), Some(0), "{}", stderr(&replay));
    assert_eq!(stdout_json(&replay)["started"], 0);
    let bad = q(&[
        "history", "replay", "--job", "ops/*", "--since", "1h", "--status", "broke",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("status \"broke\""),
        "{}",
        stderr(&bad)
    );

    // Cancel those scheduled before the 30th: two of the three.
    let cancel = q(&[
        "fire",
        "cancel",
        "--job",
        "ops/report",
        "--before",
        "2026-03-30T00:00:00Z",
        "--reason",
        "wrong week",
    ]);
    assert_eq!(cancel.status.code(), Some(0), "{}", stderr(&cancel));
    assert_eq!(
        String::from_utf8_lossy(&cancel.stdout).trim(),
        "cancelled 2 waiting fire(s)"
    );
    let rest = q(&[
        "fire", "cancel", "--job", "ops/*", "--origin", "backfill", "--json",
    ]);
    assert_eq!(stdout_json(&rest)["cancelled"], 1);

    let store = quartzite::store::open(&db).await.unwrap();
    assert!(store.fire_list().await.unwrap().is_empty());
    let rows = store
        .audit_list(&quartzite::store::model::AuditFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let ours: Vec<(String, String, u16, Value)> = rows
        .iter()
        .rev()
        .filter(|r| r.action != "job.update" && r.action != "module.push")
        .map(|r| {
            (
                r.actor.clone(),
                r.action.clone(),
                r.status,
                serde_json::from_str(&r.summary).unwrap(),
            )
        })
        .collect();
    let actions: Vec<(&str, u16)> = ours.iter().map(|(_, a, s, _)| (a.as_str(), *s)).collect();
    // Dry runs are not audited; refusals are, with their status.
    assert_eq!(
        actions,
        [
            ("job.backfill", 422),
            ("job.backfill", 422),
            ("job.backfill", 422),
            ("job.backfill", 404),
            ("job.backfill", 202),
            ("job.backfill", 202),
            ("history.replay", 202),
            ("history.replay", 422),
            ("fire.cancel", 200),
            ("fire.cancel", 200),
        ]
    );
    assert!(ours.iter().all(|(actor, ..)| actor == "os:dana"));
    let backfill = &ours[4].3;
    assert_eq!(backfill["overlap"], "allow");
    assert_eq!(
        (backfill["count"].as_u64(), backfill["created"].as_u64()),
        (Some(3), Some(3))
    );
    let cancelled = &ours[8].3;
    assert_eq!(cancelled["cancelled"], 2);
    assert_eq!(cancelled["filter"]["before"], "2026-03-30T00:00:00.000Z");
    assert_eq!(cancelled["reason"], "wrong week");
}
