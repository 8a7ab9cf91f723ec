//! The runtime on real components: the example jobs, the test guests under
//! `tests/guests/`, and bad bytes of every kind. One binary, a module per topic.
//!
//! The guests must be built first (`./dev.sh guests`, which `./dev.sh test` runs).

use crate::common::*;

use quartzite::runtime::engine::COW_IMAGE_MIN;
use quartzite::runtime::services::{
    KvStore, LocalLocks, LockAcquire, LockService, MemoryEvents, MemoryKv,
};
use quartzite::runtime::{
    CowImages, EngineConfig, HostServices, JobImpl, LimitKind, Limits, LoadOrigin, LogSource,
    RunOutcome, RunReport, RunRequest, Runtime, RuntimeConfig, SkipCode,
};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

fn bytes(name: &str) -> Vec<u8> {
    std::fs::read(wasm(name)).unwrap()
}

struct Fixture {
    runtime: Runtime,
    locks: Arc<LocalLocks>,
    kv: Arc<MemoryKv>,
}

fn fixture_with(engine: EngineConfig, cache_dir: Option<PathBuf>) -> Fixture {
    let locks = Arc::new(LocalLocks::new());
    let kv = Arc::new(MemoryKv::new());
    let services = HostServices {
        kv: kv.clone(),
        locks: locks.clone(),
        events: Arc::new(MemoryEvents::new(8)),
        grants: {
            // The report example emits `report.done`, as its manifest grants it.
            let grants = quartzite::runtime::MemoryGrants::new();
            grants.put(
                "tests/job",
                quartzite::grants::Grants {
                    emit: vec!["report.done".into()],
                    ..Default::default()
                },
            );
            Arc::new(grants)
        },
    };
    let runtime = Runtime::new(
        RuntimeConfig {
            engine,
            cache_dir,
            node_id: "test-node".into(),
        },
        services,
    )
    .unwrap();
    Fixture { runtime, locks, kv }
}

fn fixture() -> Fixture {
    fixture_with(
        EngineConfig {
            max_concurrent_runs: 16,
            ..EngineConfig::default()
        },
        None,
    )
}

fn request(data: Value) -> RunRequest {
    RunRequest {
        data: data.to_string(),
        ..RunRequest::new("tests/job")
    }
}

fn quick(data: Value, timeout_ms: u64) -> RunRequest {
    let limits = Limits {
        timeout: Duration::from_millis(timeout_ms),
        grace: Duration::from_millis(200),
        ..Limits::default()
    };
    RunRequest {
        limits,
        ..request(data)
    }
}

impl Fixture {
    async fn run(&self, guest: &str, req: RunRequest) -> RunReport {
        let job = self.runtime.resolve_file(&wasm(guest));
        self.runtime.execute(&job, req).await
    }

    async fn hostile(&self, data: Value) -> RunReport {
        self.run("guest_hostile", quick(data, 30_000)).await
    }
}

fn details(report: &RunReport) -> Value {
    match &report.outcome {
        RunOutcome::Completed {
            details: Some(d), ..
        } => serde_json::from_str(d).unwrap(),
        other => panic!("expected a completed run with details, got {other:?}"),
    }
}

mod examples {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hello_logs_and_returns_details() {
        let f = fixture();
        let report = f
            .run(
                "hello",
                RunRequest {
                    fire_id: "fire-7".into(),
                    ..request(json!({"name": "Ada"}))
                },
            )
            .await;
        let d = details(&report);
        assert_eq!(d["greeting"], "hello, Ada");
        assert_eq!(d["fire_id"], "fire-7");
        assert_eq!(report.logs.len(), 1);
        assert_eq!(
            report.logs[0].message,
            "hello, Ada (fire fire-7, attempt 1)"
        );
        assert_eq!(report.logs[0].source, LogSource::Log);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn counter_state_survives_across_runs_and_is_per_job() {
        let f = fixture();
        for expected in 1..=3 {
            let report = f.run("counter", RunRequest::new("a/counter")).await;
            assert_eq!(details(&report)["count"], expected);
        }
        let other = f.run("counter", RunRequest::new("b/counter")).await;
        assert_eq!(
            details(&other)["count"],
            1,
            "another job key has its own state"
        );
        use quartzite::runtime::services::KvStore;
        assert_eq!(
            f.kv.kv_get("a/counter", "count").await.unwrap(),
            Some(b"3".to_vec())
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn flaky_fails_retryably_then_succeeds() {
        let f = fixture();
        for attempt in 1..=2 {
            let report = f
                .run(
                    "flaky",
                    RunRequest {
                        attempt,
                        ..request(json!({"failures": 2}))
                    },
                )
                .await;
            assert_eq!(
                report.outcome,
                RunOutcome::Failed {
                    retryable: true,
                    message: format!("planned failure {attempt} of 2")
                }
            );
        }
        let report = f
            .run(
                "flaky",
                RunRequest {
                    attempt: 3,
                    ..request(json!({"failures": 2}))
                },
            )
            .await;
        assert_eq!(details(&report)["succeeded_on_attempt"], 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn report_takes_the_lock_works_in_steps_and_releases() {
        let f = fixture();
        let report = f
            .run("report", request(json!({"steps": 3, "step_ms": 1})))
            .await;
        assert_eq!(details(&report)["steps"], 3);
        assert!(report.logs.iter().any(|l| l.message == "step 3 of 3 done"));
        assert!(
            f.locks.holders().is_empty(),
            "the lock is released after the run"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn report_stops_early_when_its_timeout_cancels_it() {
        let f = fixture();
        let report = f
            .run("report", quick(json!({"steps": 1000, "step_ms": 20}), 300))
            .await;
        assert_eq!(report.outcome, RunOutcome::TimedOut { timeout_ms: 300 });
        let stop = report
            .logs
            .iter()
            .find(|l| l.message.starts_with("cancelled after"))
            .expect("the job saw cancelled()");
        assert!(stop.message.ends_with("of 1000 steps"), "{}", stop.message);
        assert!(f.locks.holders().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn report_waits_for_a_lock_held_elsewhere_then_fails_retryably() {
        let f = fixture();
        // The guest's `lock("report")` in the job's group, held by another run.
        let held = f
            .locks
            .lock_acquire(&LockAcquire {
                name: "guest:tests:report".into(),
                holder: "other-node".into(),
                timeout: Duration::ZERO,
            })
            .await
            .unwrap();
        let report = f
            .run("report", request(json!({"lock_timeout_ms": 100})))
            .await;
        match &report.outcome {
            RunOutcome::Failed {
                retryable: true,
                message,
            } => assert!(message.contains("not acquired within 100 ms"), "{message}"),
            other => panic!("{other:?}"),
        }
        f.locks.lock_release(&held);
        let report = f
            .run("report", request(json!({"steps": 1, "step_ms": 0})))
            .await;
        assert!(report.outcome.is_success());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_example_describes_itself() {
        let f = fixture();
        for (file, name) in [
            ("hello", "hello"),
            ("counter", "counter"),
            ("flaky", "flaky"),
            ("report", "report"),
        ] {
            let module = f.runtime.load_file(&wasm(file)).unwrap();
            let info = f.runtime.describe(&module).await.unwrap();
            assert_eq!(info.name, name);
            assert_eq!(info.version, "1.0.0");
            assert_eq!(module.wit_version.to_string(), "1.1.0");
        }
    }
}

mod noop {
    use super::*;

    fn rejected(f: &Fixture, bytes: &[u8]) -> (SkipCode, String) {
        let r = f.runtime.load_bytes(bytes).unwrap_err();
        (r.code, r.detail)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_missing_file_is_a_noop_skip_with_module_missing() {
        let f = fixture();
        let job = f.runtime.resolve_file(Path::new("/nonexistent/job.wasm"));
        let report = f.runtime.execute(&job, RunRequest::new("g/missing")).await;
        match report.outcome {
            RunOutcome::Skipped {
                reason: SkipCode::ModuleMissing,
                detail,
            } => {
                assert!(detail.contains("/nonexistent/job.wasm"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn random_bytes_are_invalid() {
        let f = fixture();
        let noise: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let (code, detail) = rejected(&f, &noise);
        assert_eq!(code, SkipCode::ModuleInvalid);
        assert!(detail.contains("not a WebAssembly binary"), "{detail}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wat_text_is_not_accepted_as_a_module() {
        let f = fixture();
        let (code, _) = rejected(&f, b"(component)");
        assert_eq!(code, SkipCode::ModuleInvalid);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn truncated_components_are_invalid_at_every_cut() {
        let f = fixture();
        let full = bytes("hello");
        for cut in [9, 100, full.len() / 3, full.len() / 2, full.len() - 1] {
            let (code, detail) = rejected(&f, &full[..cut]);
            assert_eq!(code, SkipCode::ModuleInvalid, "cut at {cut}: {detail}");
            assert!(
                detail.starts_with("does not compile"),
                "cut at {cut}: {detail}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn corrupted_components_are_rejected_or_run_but_never_panic_the_host() {
        let f = fixture();
        let original = bytes("hello");
        // A deterministic spread of single-byte corruptions over the whole file.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..30 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut corrupt = original.clone();
            let at = (seed % corrupt.len() as u64) as usize;
            corrupt[at] ^= (seed >> 32) as u8 | 1;
            if let Ok(module) = f.runtime.load_bytes(&corrupt) {
                // Some bytes (names, custom sections) do not matter; such a module must still run safely.
                let report = f.runtime.run(&module, quick(json!({}), 2_000)).await;
                assert!(!matches!(report.outcome, RunOutcome::Skipped { .. }));
            }
        }
        let report = f.run("hello", request(json!({}))).await;
        assert!(report.outcome.is_success());
    }

    /// A component around one core module of `n` functions, built as text in a loop.
    fn component_with_functions(n: usize) -> Vec<u8> {
        let mut text = String::from("(component (core module");
        for _ in 0..n {
            text.push_str(" (func (result i32) i32.const 42)");
        }
        text.push_str("))");
        wat::parse_str(&text).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_module_over_the_function_budget_is_refused_before_compiling() {
        let f = fixture_with(
            EngineConfig {
                max_concurrent_runs: 4,
                max_module_functions: 1_000,
                ..EngineConfig::default()
            },
            None,
        );
        let (code, detail) = rejected(&f, &component_with_functions(1_001));
        assert_eq!(code, SkipCode::ModuleInvalid);
        assert!(detail.contains("more than 1000 functions"), "{detail}");
        assert!(detail.contains("compile budget"), "{detail}");
        // At the budget it compiles (and is then refused only for not being a job).
        let (code, _) = rejected(&f, &component_with_functions(1_000));
        assert_eq!(code, SkipCode::ModuleIncompatible);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_default_budget_refuses_a_hundred_thousand_and_one_functions() {
        let f = fixture();
        let (code, detail) = rejected(&f, &component_with_functions(100_001));
        assert_eq!(code, SkipCode::ModuleInvalid);
        assert!(detail.contains("more than 100000 functions"), "{detail}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn components_nested_too_deep_are_refused_before_compiling() {
        let f = fixture();
        let depth = 20;
        let text = format!("{}{}", "(component ".repeat(depth), ")".repeat(depth));
        let (code, detail) = rejected(&f, &wat::parse_str(&text).unwrap());
        assert_eq!(code, SkipCode::ModuleInvalid);
        assert!(detail.contains("nests"), "{detail}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_module_file_over_the_size_limit_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.wasm");
        // Sparse: 2 GiB on paper, nothing on disk. Reading it whole would take 2 GiB.
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(2 << 30).unwrap();
        drop(file);
        let f = fixture();
        let r = f.runtime.load_file(&path).unwrap_err();
        assert_eq!(r.code, SkipCode::ModuleInvalid);
        assert!(
            r.detail
                .starts_with(&format!("{} is 2147483648 bytes", path.display())),
            "{}",
            r.detail
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_core_module_is_incompatible() {
        let f = fixture();
        let core = wat::parse_str(r#"(module (func (export "run")))"#).unwrap();
        let (code, detail) = rejected(&f, &core);
        assert_eq!(code, SkipCode::ModuleIncompatible);
        assert!(
            detail.contains("core WebAssembly module, not a component"),
            "{detail}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn another_major_version_is_incompatible_even_without_host_imports() {
        let f = fixture();
        let (code, detail) = rejected(&f, &bytes("guest_future_major"));
        assert_eq!(code, SkipCode::ModuleIncompatible);
        assert!(detail.contains("quartzite:job@2.0.0"), "{detail}");
        assert!(detail.contains("another major version"), "{detail}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unknown_import_is_incompatible_and_named() {
        let f = fixture();
        let (code, detail) = rejected(&f, &bytes("guest_unknown_import"));
        assert_eq!(code, SkipCode::ModuleIncompatible);
        assert!(detail.contains("acme:thing/telemetry@1.0.0"), "{detail}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_component_without_the_runner_export_is_incompatible() {
        let f = fixture();
        let empty = wat::parse_str("(component)").unwrap();
        let (code, detail) = rejected(&f, &empty);
        assert_eq!(code, SkipCode::ModuleIncompatible);
        assert!(
            detail.contains("does not export quartzite:job/runner"),
            "{detail}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_noop_job_reports_skipped_and_runs_nothing() {
        let f = fixture();
        let job = f.runtime.resolve_file(&wasm("guest_future_major"));
        assert!(matches!(job, JobImpl::NoOp(_)));
        let report = f.runtime.execute(&job, RunRequest::new("g/future")).await;
        assert_eq!(report.outcome.status(), "skipped");
        assert!(report.logs.is_empty());
        assert!(!report.outcome.is_retryable());
    }
}

mod sandbox {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_endless_loop_is_stopped_at_its_timeout() {
        let f = fixture();
        let report = f
            .run("guest_hostile", quick(json!({"op": "loop"}), 200))
            .await;
        assert_eq!(report.outcome, RunOutcome::TimedOut { timeout_ms: 200 });
        assert!(report.duration >= Duration::from_millis(200));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_guest_polling_cancelled_sees_it_turn_true_at_the_deadline() {
        let f = fixture();
        let report = f
            .run(
                "guest_hostile",
                quick(json!({"op": "loop-until-cancelled"}), 200),
            )
            .await;
        assert_eq!(details(&report)["stopped"], "cancelled");
        assert!(report.duration >= Duration::from_millis(200));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_guest_blocked_in_a_host_sleep_is_stopped_at_its_timeout() {
        let f = fixture();
        let report = f
            .run(
                "guest_hostile",
                quick(json!({"op": "sleep", "ms": 60_000}), 200),
            )
            .await;
        assert_eq!(report.outcome, RunOutcome::TimedOut { timeout_ms: 200 });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn growing_memory_past_the_cap_is_a_memory_limit() {
        let f = fixture();
        let req = RunRequest {
            limits: Limits {
                max_memory: 32 << 20,
                ..Limits::default()
            },
            ..request(json!({"op": "alloc", "mb": 64}))
        };
        let report = f.run("guest_hostile", req).await;
        match &report.outcome {
            RunOutcome::LimitExceeded {
                limit: LimitKind::Memory,
                message,
            } => {
                assert!(message.contains("the cap is 33554432 bytes"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        // Under the cap the same guest runs fine.
        let ok = f.hostile(json!({"op": "alloc", "mb": 8})).await;
        assert_eq!(details(&ok)["allocated_mb"], 8);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn files_directories_env_args_and_sockets_give_nothing() {
        let f = fixture();
        let read = details(
            &f.hostile(json!({"op": "read-file", "path": "/etc/passwd"}))
                .await,
        );
        assert!(read.get("read").is_none(), "{read}");
        assert!(read["error"].is_string());
        let dir = details(&f.hostile(json!({"op": "list-dir", "path": "/"})).await);
        assert!(dir.get("entries").is_none(), "{dir}");
        let env = details(&f.hostile(json!({"op": "env"})).await);
        assert_eq!(env["vars"], json!([]), "{env}");
        assert_eq!(env["args"], json!([]), "{env}");
        let net = details(
            &f.hostile(json!({"op": "connect", "addr": "127.0.0.1:5432"}))
                .await,
        );
        assert!(net.get("connected").is_none(), "{net}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_guest_is_a_trap_carrying_the_panic_message() {
        let f = fixture();
        let report = f
            .hostile(json!({"op": "panic", "message": "the answer was not 42"}))
            .await;
        match &report.outcome {
            RunOutcome::Trapped { message } => {
                assert!(message.contains("unreachable"), "{message}");
                assert!(message.contains("the answer was not 42"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(report.outcome.is_retryable());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreachable_trap_is_a_trap() {
        let f = fixture();
        let report = f.hostile(json!({"op": "trap"})).await;
        match &report.outcome {
            RunOutcome::Trapped { message } => {
                assert!(message.contains("unreachable"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unbounded_recursion_is_stopped() {
        let f = fixture();
        let report = f.hostile(json!({"op": "stack-overflow"})).await;
        // Rust puts its shadow stack at the bottom of linear memory, so deep
        // recursion runs off address 0 before wasmtime's native stack limit.
        match &report.outcome {
            RunOutcome::Trapped { message } => {
                assert!(message.contains("out of bounds memory access"), "{message}")
            }
            RunOutcome::LimitExceeded {
                limit: LimitKind::Stack,
                ..
            } => {}
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_leaked_lock_guard_is_released_when_the_run_ends() {
        let f = fixture();
        let report = f.hostile(json!({"op": "leak-lock", "name": "leaky"})).await;
        assert_eq!(details(&report)["leaked"], "leaky");
        assert!(
            f.locks.holders().is_empty(),
            "leaked: {:?}",
            f.locks.holders()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lock_held_while_trapping_is_released() {
        let f = fixture();
        let report = f
            .hostile(json!({"op": "lock-then-panic", "name": "held"}))
            .await;
        assert_eq!(report.outcome.status(), "trapped");
        assert!(f.locks.holders().is_empty());
        let again = f
            .hostile(json!({"op": "lock", "name": "held", "timeout_ms": 0}))
            .await;
        assert!(again.outcome.is_success(), "{:?}", again.outcome);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_guest_cannot_take_the_hosts_own_task_locks() {
        let f = fixture();
        // The host's alert scanner holds its lock, as on a serving node.
        let host = f
            .locks
            .lock_acquire(&LockAcquire {
                name: "quartzite.alerts".into(),
                holder: "node/alerts".into(),
                timeout: Duration::from_millis(100),
            })
            .await
            .unwrap();
        let report = f
            .hostile(json!({"op": "lock", "name": "quartzite.alerts", "timeout_ms": 0}))
            .await;
        assert!(report.outcome.is_success(), "{:?}", report.outcome);
        // The guest's lock lived in its own namespace and is gone; the host's is untouched.
        assert_eq!(f.locks.holders(), std::slice::from_ref(&host));
        f.locks.lock_release(&host);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn guest_lock_names_are_scoped_to_the_job_group() {
        let f = fixture();
        let held = f
            .run(
                "guest_hostile",
                RunRequest {
                    job_key: "billing/hold".into(),
                    ..quick(json!({"op": "leak-lock", "name": "shared"}), 30_000)
                },
            )
            .await;
        assert_eq!(
            details(&held)["leaked"],
            "shared",
            "the guard keeps the guest's name"
        );
        // Hold the group's lock from outside, as a long run of billing/hold would.
        let outside = f
            .locks
            .lock_acquire(&LockAcquire {
                name: "guest:billing:shared".into(),
                holder: "elsewhere".into(),
                timeout: Duration::from_millis(100),
            })
            .await
            .unwrap();
        let same_group = f
            .run(
                "guest_hostile",
                RunRequest {
                    job_key: "billing/other".into(),
                    ..quick(
                        json!({"op": "lock", "name": "shared", "timeout_ms": 50}),
                        30_000,
                    )
                },
            )
            .await;
        assert!(!same_group.outcome.is_success(), "{:?}", same_group.outcome);
        let other_group = f
            .run(
                "guest_hostile",
                RunRequest {
                    job_key: "reports/daily".into(),
                    ..quick(
                        json!({"op": "lock", "name": "shared", "timeout_ms": 50}),
                        30_000,
                    )
                },
            )
            .await;
        assert!(
            other_group.outcome.is_success(),
            "{:?}",
            other_group.outcome
        );
        f.locks.lock_release(&outside);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hundred_megabytes_of_stdout_end_with_capped_logs_and_a_count() {
        let f = fixture();
        let lines = 1_000_000;
        let report = f
            .run(
                "guest_hostile",
                quick(
                    json!({"op": "flood-stdout", "lines": lines, "len": 100}),
                    120_000,
                ),
            )
            .await;
        assert!(report.outcome.is_success(), "{:?}", report.outcome);
        let kept: usize = report.logs.iter().map(|l| l.message.len()).sum();
        assert!(kept <= Limits::default().max_log_bytes, "kept {kept} bytes");
        assert!(!report.logs.is_empty());
        assert!(report.logs.iter().all(|l| l.source == LogSource::Stdout));
        assert_eq!(report.logs.len() as u64 + report.logs_dropped, lines);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn log_spam_is_capped_and_counted() {
        let f = fixture();
        let req = RunRequest {
            limits: Limits {
                max_log_bytes: 10_000,
                ..Limits::default()
            },
            ..request(json!({"op": "spam-log", "lines": 1000, "len": 100}))
        };
        let report = f.run("guest_hostile", req).await;
        assert!(report.outcome.is_success());
        let kept: usize = report.logs.iter().map(|l| l.message.len()).sum();
        assert!(kept <= 10_000);
        assert_eq!(report.logs.len() as u64 + report.logs_dropped, 1000);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stdout_and_stderr_go_to_the_run_log() {
        let f = fixture();
        let report = f.hostile(json!({"op": "print", "lines": 2})).await;
        let stdout: Vec<&str> = report
            .logs
            .iter()
            .filter(|l| l.source == LogSource::Stdout)
            .map(|l| l.message.as_str())
            .collect();
        let stderr: Vec<&str> = report
            .logs
            .iter()
            .filter(|l| l.source == LogSource::Stderr)
            .map(|l| l.message.as_str())
            .collect();
        assert_eq!(stdout, ["stdout line 0", "stdout line 1"]);
        assert_eq!(stderr, ["stderr line 0", "stderr line 1"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn oversized_output_is_an_output_limit() {
        let f = fixture();
        let req = RunRequest {
            limits: Limits {
                max_output_bytes: 1000,
                ..Limits::default()
            },
            ..request(json!({"op": "big-output", "bytes": 5000}))
        };
        let report = f.run("guest_hostile", req).await;
        assert!(
            matches!(
                report.outcome,
                RunOutcome::LimitExceeded {
                    limit: LimitKind::Output,
                    ..
                }
            ),
            "{:?}",
            report.outcome
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_oversized_kv_value_is_refused_as_a_fatal_error() {
        let f = fixture();
        let req = RunRequest {
            limits: Limits {
                max_kv_value_bytes: 1000,
                ..Limits::default()
            },
            ..request(json!({"op": "big-kv", "bytes": 5000}))
        };
        let report = f.run("guest_hostile", req).await;
        match &report.outcome {
            RunOutcome::Failed {
                retryable: false,
                message,
            } => assert!(message.contains("limit exceeded"), "{message}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kv_state_past_the_jobs_quota_is_a_limit_error_to_the_guest() {
        let f = fixture();
        let fill = |keys: usize, bytes: usize, limits: Limits| RunRequest {
            limits,
            ..quick(
                json!({"op": "kv-fill", "keys": keys, "bytes": bytes}),
                30_000,
            )
        };
        let by_keys = Limits {
            max_kv_keys: 5,
            ..Limits::default()
        };
        let report = f.run("guest_hostile", fill(100, 10, by_keys)).await;
        let d = details(&report);
        assert_eq!(d["written"], 5);
        assert!(
            d["error"].as_str().unwrap().contains("limit exceeded"),
            "{d}"
        );
        // The default quota holds a run writing 1 MiB values without end to 16 MiB.
        let report = f
            .run("guest_hostile", fill(1_000, 1 << 20, Limits::default()))
            .await;
        let d = details(&report);
        assert_eq!(d["written"], 16, "{d}");
        assert!(
            d["error"].as_str().unwrap().contains("16777216 bytes"),
            "{d}"
        );
        assert!(f.kv.kv_get("tests/job", "k16").await.unwrap().is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fuel_bounds_a_loop_when_metering_is_on() {
        let f = fixture_with(
            EngineConfig {
                fuel: true,
                max_concurrent_runs: 4,
                ..EngineConfig::default()
            },
            None,
        );
        let req = RunRequest {
            limits: Limits {
                fuel: Some(5_000_000),
                ..Limits::default()
            },
            ..request(json!({"op": "loop"}))
        };
        let report = f.run("guest_hostile", req).await;
        assert!(
            matches!(
                report.outcome,
                RunOutcome::LimitExceeded {
                    limit: LimitKind::Fuel,
                    ..
                }
            ),
            "{:?}",
            report.outcome
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn abort_stops_running_guests_as_cancelled_and_drain_asks_them_to_stop() {
        let f = Arc::new(fixture());
        let drained = {
            let f = Arc::clone(&f);
            tokio::spawn(async move {
                f.run(
                    "guest_hostile",
                    quick(json!({"op": "loop-until-cancelled"}), 60_000),
                )
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        f.runtime.drain();
        let report = drained.await.unwrap();
        assert_eq!(details(&report)["stopped"], "cancelled");

        let looping = {
            let f = Arc::clone(&f);
            tokio::spawn(async move {
                f.run("guest_hostile", quick(json!({"op": "loop"}), 60_000))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        f.runtime.abort();
        assert_eq!(looping.await.unwrap().outcome, RunOutcome::Cancelled);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_every_hostile_guest_the_host_still_runs_jobs_normally() {
        let f = fixture();
        // Only the ops meant to time out get a short timeout, so a busy machine
        // cannot turn the others into timeouts.
        let ops = [
            (json!({"op": "loop"}), 300, "timed-out"),
            (json!({"op": "sleep", "ms": 60_000}), 300, "timed-out"),
            (json!({"op": "alloc", "mb": 4096}), 30_000, "limit-exceeded"),
            (json!({"op": "panic", "message": "x"}), 30_000, "trapped"),
            (json!({"op": "trap"}), 30_000, "trapped"),
            (json!({"op": "leak-lock", "name": "l"}), 30_000, "completed"),
            (
                json!({"op": "spam-log", "lines": 10_000, "len": 1000}),
                30_000,
                "completed",
            ),
            (
                json!({"op": "big-output", "bytes": 2_000_000}),
                30_000,
                "limit-exceeded",
            ),
        ];
        for (op, timeout_ms, status) in ops {
            let report = f.run("guest_hostile", quick(op.clone(), timeout_ms)).await;
            assert_eq!(
                report.outcome.status(),
                status,
                "{op}: {:?}",
                report.outcome
            );
        }
        for bad in [&b"junk"[..], &bytes("hello")[..500]] {
            assert!(f.runtime.load_bytes(bad).is_err());
        }
        let report = f.run("hello", request(json!({"name": "after"}))).await;
        assert_eq!(details(&report)["greeting"], "hello, after");
        assert!(f.locks.holders().is_empty());
    }
}

mod cache {
    use super::*;

    /// A runtime of four runs caching compiled modules in `dir`.
    fn cached_in(dir: &Path) -> Fixture {
        fixture_with(
            EngineConfig {
                max_concurrent_runs: 4,
                ..EngineConfig::default()
            },
            Some(dir.to_path_buf()),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_loads_of_one_module_share_one_compile() {
        let dir = tempfile::tempdir().unwrap();
        let f = Arc::new(cached_in(dir.path()));
        let bytes = Arc::new(bytes("guest_hostile"));
        let loads: Vec<_> = (0..6)
            .map(|_| {
                let (f, bytes) = (Arc::clone(&f), Arc::clone(&bytes));
                std::thread::spawn(move || f.runtime.load_bytes(&bytes).unwrap())
            })
            .collect();
        let loaded: Vec<_> = loads.into_iter().map(|t| t.join().unwrap()).collect();
        // One compile: every load got the very module it produced.
        assert_eq!(loaded[0].origin, LoadOrigin::Compiled);
        assert!(loaded.iter().all(|m| Arc::ptr_eq(m, &loaded[0])));
        // No temporary file is left behind in the cache.
        let entries: Vec<_> = std::fs::read_dir(dir.path().join(f.runtime.fingerprint()))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(entries, [format!("{}.cwasm", loaded[0].digest)]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_images_are_mapped_copy_on_write_and_small_ones_copied() {
        let dir = tempfile::tempdir().unwrap();
        let f = cached_in(dir.path());
        // A Rust job's image is tens of KiB: copied into each run.
        let small = f.runtime.load_file(&wasm("hello")).unwrap();
        assert!(small.image_bytes < COW_IMAGE_MIN, "{}", small.image_bytes);
        assert!(!small.image_mapped);
        // QuickJS starts from a pre-initialized heap of a quarter megabyte: mapped.
        let large = f.runtime.load_file(&wasm("noop_js_qjs")).unwrap();
        assert!(large.image_bytes >= COW_IMAGE_MIN, "{}", large.image_bytes);
        assert!(large.image_mapped);
        // Both run, each in its own engine, and both are cached on disk, each
        // under its engine's fingerprint.
        for m in [&small, &large] {
            let report = f.runtime.run(m, request(json!({}))).await;
            assert!(report.outcome.is_success(), "{:?}", report.outcome);
        }
        let dirs: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(dirs.len(), 2, "{dirs:?}");
        // With copy-on-write on or off for every module, large ones follow.
        for (cow, mapped) in [(CowImages::On, true), (CowImages::Off, false)] {
            let fixed = fixture_with(
                EngineConfig {
                    max_concurrent_runs: 4,
                    memory_image_cow: cow,
                    ..EngineConfig::default()
                },
                None,
            );
            let m = fixed.runtime.load_file(&wasm("noop_js_qjs")).unwrap();
            assert_eq!(m.image_mapped, mapped, "{cow:?}");
            let m = fixed.runtime.load_file(&wasm("hello")).unwrap();
            assert_eq!(m.image_mapped, cow == CowImages::On, "{cow:?}");
        }
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restart_loads_the_compiled_module_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let first = cached_in(dir.path());
        let m1 = first.runtime.load_file(&wasm("hello")).unwrap();
        assert_eq!(m1.origin, LoadOrigin::Compiled);
        drop(first);

        let second = cached_in(dir.path());
        let m2 = second.runtime.load_file(&wasm("hello")).unwrap();
        assert_eq!(m2.origin, LoadOrigin::DiskCache);
        assert_eq!(m1.digest, m2.digest);
        let report = second.runtime.run(&m2, request(json!({}))).await;
        assert!(report.outcome.is_success());
        let cached = dir
            .path()
            .join(second.runtime.fingerprint())
            .join(format!("{}.cwasm", m2.digest));
        assert!(cached.is_file());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_corrupt_cache_entry_is_discarded_and_the_module_recompiled() {
        let dir = tempfile::tempdir().unwrap();
        let first = cached_in(dir.path());
        let m = first.runtime.load_file(&wasm("hello")).unwrap();
        let cached = dir
            .path()
            .join(first.runtime.fingerprint())
            .join(format!("{}.cwasm", m.digest));
        drop(first);
        std::fs::write(&cached, b"not an artifact").unwrap();

        let second = cached_in(dir.path());
        let m = second.runtime.load_file(&wasm("hello")).unwrap();
        assert_eq!(m.origin, LoadOrigin::Compiled);
        assert!(
            second
                .runtime
                .run(&m, request(json!({})))
                .await
                .outcome
                .is_success()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rejected_module_is_never_cached() {
        let dir = tempfile::tempdir().unwrap();
        let f = cached_in(dir.path());
        assert!(f.runtime.load_file(&wasm("guest_future_major")).is_err());
        let fp = dir.path().join(f.runtime.fingerprint());
        let entries = std::fs::read_dir(&fp).map(|d| d.count()).unwrap_or(0);
        assert_eq!(entries, 0);
    }
}
