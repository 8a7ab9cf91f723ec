//! A job author's path in each language: `quartzite new` writes a project
//! outside the repository, its own test passes, its documented build command
//! makes a component, and `module inspect` and `run-once` accept it. Also:
//! the SDKs carry the contract unchanged and their native test hosts apply
//! the host's own rules.
//!
//! The toolchains are the ones `./dev.sh guests` installs (Rust with
//! wasm32-wasip2; the Python venv with componentize-py 0.25.1 under
//! target/guest-toolchains; the JS SDK's npm packages).

use crate::common::{LOADED, load_share_blocking};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
}

/// The Python of the guest toolchain `./dev.sh guests` installs.
fn python() -> PathBuf {
    let python = target_dir().join("guest-toolchains/python/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: install the guest toolchains with `./dev.sh guests`",
        python.display()
    );
    python
}

fn run(command: &mut Command, what: &str) -> Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn quartzite() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_quartzite"));
    command.env_remove("QUARTZITE_LOG");
    command
}

/// `quartzite new NAME --lang LANG --dir DIR`, checked to succeed.
fn new_project(name: &str, lang: &str, dir: &Path) {
    run(
        quartzite()
            .args(["new", name, "--lang", lang, "--dir"])
            .arg(dir),
        "quartzite new",
    );
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    assert!(
        readme.lines().count() <= 12,
        "the README is short:\n{readme}"
    );
}

/// Inspects and runs a project's component twice on one kv state through
/// `run-once`, checking what the generated `run` does.
fn inspect_and_run(component: &Path, name: &str, cache: &Path) {
    let out = run(
        quartzite()
            .arg("--json")
            .args(["module", "inspect"])
            .arg(component)
            .arg("--cache-dir")
            .arg(cache),
        "quartzite module inspect",
    );
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["info"]["name"], name, "{info}");
    let out = run(
        quartzite()
            .arg("run-once")
            .arg(component)
            .args(["--data", r#"{"name":"new"}"#, "--cache-dir"])
            .arg(cache),
        "quartzite run-once",
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["status"], "completed", "{report}");
    assert_eq!(report["details"]["greeting"], "hello, new", "{report}");
    assert_eq!(report["details"]["count"], 1, "{report}");
    let line = report["logs"][0]["message"].as_str().unwrap();
    assert!(line.starts_with("hello, new (run 1, fire "), "{report}");
}

#[test]
fn a_new_rust_project_tests_builds_inspects_and_runs() {
    let _load = load_share_blocking(LOADED);
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("greeter");
    new_project("greeter", "rust", &project);
    // One target dir for every run of this test: the documented commands, with
    // the dependencies compiled once rather than per temporary project.
    let target = target_dir().join("new-project-test");
    run(
        Command::new("cargo")
            .arg("test")
            .current_dir(&project)
            .env("CARGO_TARGET_DIR", &target),
        "cargo test in the new project",
    );
    run(
        Command::new("cargo")
            .args(["build", "--release", "--target", "wasm32-wasip2"])
            .current_dir(&project)
            .env("CARGO_TARGET_DIR", &target),
        "cargo build in the new project",
    );
    let component = target.join("wasm32-wasip2/release/greeter.wasm");
    inspect_and_run(&component, "greeter", &dir.path().join("cache"));
}

#[test]
fn a_new_python_project_tests_builds_inspects_and_runs() {
    let _load = load_share_blocking(LOADED);
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("py-greeter");
    new_project("py-greeter", "python", &project);
    let requirements = std::fs::read_to_string(project.join("requirements.txt")).unwrap();
    assert!(requirements.contains("guest-sdk-python"), "{requirements}");
    run(
        Command::new(python())
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
            .current_dir(&project),
        "pytest in the new project",
    );
    run(
        Command::new(python())
            .args([
                "-m",
                "quartzite_sdk.build",
                "job.py",
                "-o",
                "py-greeter.wasm",
            ])
            .current_dir(&project),
        "the Python build command",
    );
    inspect_and_run(
        &project.join("py-greeter.wasm"),
        "py-greeter",
        &dir.path().join("cache"),
    );
}

#[test]
fn a_new_js_project_tests_builds_inspects_and_runs() {
    let _load = load_share_blocking(LOADED);
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("js-greeter");
    new_project("js-greeter", "js", &project);
    let npm = |args: &[&str], what: &str| {
        run(
            Command::new("npm")
                .args(args)
                .args(["--no-audit", "--no-fund", "--prefer-offline"])
                .current_dir(&project),
            what,
        )
    };
    npm(&["install"], "npm install in the new project");
    npm(&["test"], "npm test in the new project");
    npm(&["run", "build"], "npm run build in the new project");
    inspect_and_run(
        &project.join("js-greeter.wasm"),
        "js-greeter",
        &dir.path().join("cache"),
    );
}

#[test]
fn new_refuses_a_bad_name_and_a_directory_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let out = quartzite()
        .args(["new", "Bad Name", "--dir"])
        .arg(dir.path().join("x"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("job name \"Bad Name\""), "{stderr}");
    assert!(!dir.path().join("x").exists());

    std::fs::write(dir.path().join("keep.txt"), "mine").unwrap();
    let out = quartzite()
        .args(["new", "job", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("exists and is not empty"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("keep.txt")).unwrap(),
        "mine"
    );

    let out = quartzite()
        .args(["new", "job", "--lang", "python", "--sdk"])
        .arg(dir.path())
        .arg("--dir")
        .arg(dir.path().join("p"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no python SDK at"), "{stderr}");
}

#[test]
fn every_sdk_carries_the_contract_unchanged() {
    let canonical = std::fs::read_to_string(repo().join("wit/types.wit")).unwrap();
    for copy in [
        "guest-sdk/wit/types.wit",
        "guest-sdk-python/src/quartzite_sdk/wit/types.wit",
        "guest-sdk-js/wit/types.wit",
    ] {
        let text = std::fs::read_to_string(repo().join(copy)).unwrap();
        assert!(
            text == canonical,
            "{copy} differs from wit/types.wit: copy the contract into the SDK (cp wit/types.wit {copy})"
        );
    }
}

/// `NAME = VALUE` (Python), `export const NAME = VALUE;` (JS) or
/// `pub const NAME: T = VALUE;` (Rust) in an SDK's limits file. The files are
/// read rather than linked: linking the Rust SDK into the host's tests would
/// unify dependency features and rebuild wasmtime for them.
fn limits_of(path: &str) -> std::collections::HashMap<String, u64> {
    let text = std::fs::read_to_string(repo().join(path)).unwrap();
    let mut out = std::collections::HashMap::new();
    for line in text.lines() {
        let line = line
            .trim_start_matches("export const ")
            .trim_start_matches("pub const ")
            .trim_end_matches(';');
        let Some((name, value)) = line.split_once(" = ") else {
            continue;
        };
        let name = name.split_once(':').map_or(name, |(n, _)| n);
        if !name.starts_with(|c: char| c.is_ascii_uppercase())
            || !name.chars().all(|c| c.is_ascii_uppercase() || c == '_')
        {
            continue;
        }
        let value = value.replace('_', "");
        let number = match value.split_once(" << ") {
            Some((a, b)) => a
                .parse::<u64>()
                .ok()
                .zip(b.parse::<u32>().ok())
                .map(|(a, b)| a << b),
            None => value.parse().ok(),
        };
        if let Some(number) = number {
            out.insert(name.to_string(), number);
        }
    }
    out
}

#[test]
fn the_sdks_test_hosts_apply_the_hosts_limits() {
    use quartzite::runtime::Limits;
    use quartzite::runtime::limits as host;
    use quartzite::store::events;

    let defaults = Limits::default();
    let expected: Vec<(&str, u64)> = vec![
        ("MAX_KV_KEY", host::MAX_KV_KEY as u64),
        ("MAX_KV_VALUE", defaults.max_kv_value_bytes as u64),
        ("KV_MAX_KEYS", defaults.max_kv_keys),
        ("KV_MAX_BYTES", defaults.max_kv_bytes),
        ("MAX_LOCK_NAME", host::MAX_LOCK_NAME as u64),
        ("MAX_LOCKS_HELD", defaults.max_locks_held as u64),
        ("MAX_EVENT_NAME", events::MAX_EVENT_NAME as u64),
        ("MAX_EVENT_KEY", events::MAX_EVENT_KEY as u64),
        ("MAX_EVENT_PAYLOAD", events::MAX_EVENT_PAYLOAD as u64),
        ("MAX_EMITS_PER_RUN", u64::from(host::MAX_EMITS_PER_RUN)),
        ("MAX_LOG_BYTES", defaults.max_log_bytes as u64),
        ("MAX_OUTPUT_BYTES", defaults.max_output_bytes as u64),
    ];
    for file in [
        "guest-sdk/src/limits.rs",
        "guest-sdk-python/src/quartzite_sdk/limits.py",
        "guest-sdk-js/src/limits.js",
    ] {
        let theirs = limits_of(file);
        for (name, value) in &expected {
            assert_eq!(theirs.get(*name), Some(value), "{name} in {file}");
        }
    }
    // The Python and JS test hosts also bound the requests of a run, as a
    // job's grants do when they set no other bound.
    let max_requests = u64::from(quartzite::grants::HttpLimits::default().max_requests);
    for file in [
        "guest-sdk-python/src/quartzite_sdk/limits.py",
        "guest-sdk-js/src/limits.js",
    ] {
        assert_eq!(
            limits_of(file).get("HTTP_MAX_REQUESTS"),
            Some(&max_requests),
            "HTTP_MAX_REQUESTS in {file}"
        );
    }
}
