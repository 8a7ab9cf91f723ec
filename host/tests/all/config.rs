//! `quartzite config check|defaults` and `serve --config` as an operator uses
//! them: the real binary, real files, the real environment.

use std::process::{Command, Output};

fn quartzite(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_quartzite"));
    command.args(args);
    // The machine's own settings must not leak into what is checked.
    for (key, _) in std::env::vars() {
        if key.starts_with("QUARTZITE_") {
            command.env_remove(key);
        }
    }
    command.envs(envs.iter().copied());
    command.output().expect("run quartzite")
}

#[test]
fn the_defaults_document_checks_clean_once_every_key_is_uncommented() {
    let out = quartzite(&["config", "defaults"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let doc = String::from_utf8(out.stdout).unwrap();
    for key in [
        "workers = 16",
        "listen = \"127.0.0.1:7878\"",
        "QUARTZITE_SCHEDULER_DEAD_AFTER_MS",
    ] {
        assert!(doc.contains(key), "{key} missing from:\n{doc}");
    }
    let lines: Vec<&str> = doc.lines().collect();
    let uncommented: Vec<&str> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.contains("(unset)"))
        .map(|(i, l)| {
            if i > 0 && lines[i - 1].starts_with("# env:") {
                &l[2..]
            } else {
                l
            }
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("quartzite.toml");
    std::fs::write(&file, uncommented.join("\n")).unwrap();
    let out = quartzite(&["config", "check", file.to_str().unwrap()], &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok"));
}

#[test]
fn check_reports_every_problem_of_file_and_environment_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("quartzite.toml");
    std::fs::write(
        &file,
        "db = \"mysql://x\"\n[scheduler]\nworkers = 0\nlookahed_ms = 5\n[api]\nlisten = \"nowhere\"\n",
    )
    .unwrap();
    let out = quartzite(
        &["config", "check", file.to_str().unwrap()],
        &[("QUARTZITE_RUNTIME_FUEL", "perhaps")],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let f = file.display();
    for expected in [
        format!("{f}:1:6: db must be sqlite://PATH or postgres://"),
        format!("{f}:3:11: scheduler.workers must be at least 1, got 0"),
        format!(
            "{f}:4:1: unknown key `scheduler.lookahed_ms` (did you mean `scheduler.lookahead_ms`?)"
        ),
        format!("{f}:6:10: api.listen must be an address with a port"),
        "environment QUARTZITE_RUNTIME_FUEL: runtime.fuel must be true or false, got \"perhaps\""
            .to_string(),
    ] {
        assert!(err.contains(&expected), "missing {expected:?} in:\n{err}");
    }
    assert!(err.contains("5 problems"), "{err}");

    // The same, for scripts.
    let out = quartzite(
        &["--json", "config", "check", file.to_str().unwrap()],
        &[("QUARTZITE_RUNTIME_FUEL", "perhaps")],
    );
    assert_eq!(out.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["errors"].as_array().unwrap().len(), 5);
}

#[test]
fn the_environment_overrides_the_file_and_check_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("quartzite.toml");
    std::fs::write(&file, "[scheduler]\nworkers = 4\n").unwrap();
    let out = quartzite(
        &["--json", "config", "check", file.to_str().unwrap()],
        &[("QUARTZITE_SCHEDULER_WORKERS", "8")],
    );
    assert_eq!(out.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["from_file"],
        serde_json::json!(["scheduler.workers"])
    );
    assert_eq!(
        report["from_env"],
        serde_json::json!([{ "key": "scheduler.workers", "env": "QUARTZITE_SCHEDULER_WORKERS" }])
    );
}

#[test]
fn serve_with_a_bad_config_exits_2_naming_the_place_and_creates_no_database() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("quartzite.toml");
    let db = dir.path().join("q.db");
    std::fs::write(
        &file,
        format!(
            "db = \"sqlite://{}\"\n[scheduler]\ngrace_ms = \"ten\"\n",
            db.display()
        ),
    )
    .unwrap();
    let out = quartzite(
        &[
            "serve",
            "--config",
            file.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:3:12: scheduler.grace_ms must be an integer, found string",
            file.display()
        )),
        "{err}"
    );
    assert!(!db.exists(), "a rejected start created the database");
}
