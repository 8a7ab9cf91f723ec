//! A no-op job in each language through the host's run path: component size,
//! first compile, disk-cache load, runs per second (one thread), and the
//! linear memory one run needs; with initial memory images copied, mapped
//! copy-on-write, and as the default (`CowImages::Auto`) chooses per module.
//! Python and JavaScript are given as ratios to the Rust no-op of the same run.
//!
//! Run: `./dev.sh guests && cargo bench -p quartzite --bench languages`

use quartzite::runtime::{
    CowImages, EngineConfig, HostServices, Limits, LoadedModule, RunRequest, Runtime, RuntimeConfig,
};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Each throughput round runs for about this long.
const ROUND: Duration = Duration::from_millis(1500);
const ROUNDS: usize = 3;

fn guest(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")));
    target.join(format!("wasm32-wasip2/release/{name}.wasm"))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn runtime(cache: &std::path::Path, cow: CowImages) -> Runtime {
    Runtime::new(
        RuntimeConfig {
            engine: EngineConfig {
                max_concurrent_runs: 16,
                memory_image_cow: cow,
                ..EngineConfig::default()
            },
            cache_dir: Some(cache.to_path_buf()),
            node_id: "bench".into(),
        },
        HostServices::in_memory(),
    )
    .expect("runtime")
}

async fn run_once(rt: &Runtime, module: &LoadedModule, max_memory: u64) -> bool {
    let request = RunRequest {
        limits: Limits {
            max_memory,
            ..Limits::default()
        },
        ..RunRequest::new("bench/noop")
    };
    rt.run(module, request).await.outcome.is_success()
}

/// Runs per second, one at a time on one thread: the latency of the host path.
async fn rate(rt: &Runtime, module: &LoadedModule) -> f64 {
    for _ in 0..20 {
        assert!(run_once(rt, module, 128 << 20).await, "warm-up run failed");
    }
    let mut rates = Vec::new();
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let mut n = 0u32;
        while start.elapsed() < ROUND {
            assert!(run_once(rt, module, 128 << 20).await);
            n += 1;
        }
        rates.push(f64::from(n) / start.elapsed().as_secs_f64());
    }
    median(rates)
}

/// The smallest memory cap (in 64 KiB pages) a run completes under: the linear
/// memory one run of the module needs.
async fn memory_needed(rt: &Runtime, module: &LoadedModule) -> u64 {
    let page = 64 << 10;
    let (mut lo, mut hi) = (0u64, (256 << 20) / page);
    assert!(run_once(rt, module, hi * page).await);
    while hi - lo > 1 {
        let mid = u64::midpoint(lo, hi);
        if run_once(rt, module, mid * page).await {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi * page
}

struct Row {
    label: &'static str,
    size: usize,
    compile_ms: f64,
    cached_ms: f64,
    rate: f64,
    rate_cow: f64,
    rate_auto: f64,
    image: u64,
    mapped: bool,
    memory: u64,
}

fn main() {
    let guests = [
        ("Rust (guest_noop)", "guest_noop"),
        ("Rust (hello)", "hello"),
        ("Python (noop_py, componentize-py)", "noop_py"),
        ("JavaScript (noop_js, StarlingMonkey)", "noop_js"),
        ("JavaScript (noop_js_qjs, QuickJS)", "noop_js_qjs"),
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let mut rows = Vec::new();
    for (label, name) in guests {
        let path = guest(name);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; build the guests first: ./dev.sh guests",
                path.display()
            )
        });
        let cache = std::env::temp_dir().join(format!(
            "quartzite-bench-lang-{}-{name}",
            std::process::id()
        ));
        std::fs::create_dir_all(&cache).expect("cache dir");
        // Compile and cached load with the default engine choice.
        let auto = runtime(&cache, CowImages::Auto);
        let start = Instant::now();
        let auto_module = auto.load_bytes(&bytes).expect("compile");
        let compile_ms = start.elapsed().as_secs_f64() * 1e3;
        let mut loads = Vec::new();
        let fresh = runtime(&cache, CowImages::Auto);
        for _ in 0..10 {
            fresh.clear_memory_cache();
            let t = Instant::now();
            let m = fresh.load_bytes(&bytes).expect("cached load");
            loads.push(t.elapsed().as_secs_f64() * 1e3);
            assert_eq!(m.origin, quartzite::runtime::LoadOrigin::DiskCache);
        }
        drop(fresh);
        // Copied and mapped images for every module: the two fixed choices.
        let plain = runtime(&cache, CowImages::Off);
        let module = plain.load_bytes(&bytes).expect("compile (copied)");
        let (rate_plain, memory) = rt.block_on(async {
            (
                rate(&plain, &module).await,
                memory_needed(&plain, &module).await,
            )
        });
        drop((module, plain));
        let cow = runtime(&cache, CowImages::On);
        let cow_module = cow.load_bytes(&bytes).expect("compile (cow)");
        let rate_cow = rt.block_on(rate(&cow, &cow_module));
        drop((cow_module, cow));
        let rate_auto = rt.block_on(rate(&auto, &auto_module));
        eprintln!(
            "{label}: {} bytes, image {} bytes (mapped: {}), compile {compile_ms:.0} ms, cached {:.1} ms, \
             copied {rate_plain:.0} runs/s, cow {rate_cow:.0} runs/s, auto {rate_auto:.0} runs/s, {memory} bytes",
            bytes.len(),
            auto_module.image_bytes,
            auto_module.image_mapped,
            median(loads.clone())
        );
        rows.push(Row {
            label,
            size: bytes.len(),
            compile_ms,
            cached_ms: median(loads),
            rate: rate_plain,
            rate_cow,
            rate_auto,
            image: auto_module.image_bytes,
            mapped: auto_module.image_mapped,
            memory,
        });
        let _ = std::fs::remove_dir_all(&cache);
    }

    println!("languages benchmark: a no-op job per language through the host run path");
    println!(
        "runs/s: one run at a time on one thread, median of {ROUNDS} rounds of {} ms",
        ROUND.as_millis()
    );
    println!();
    println!(
        "| job | component | image | first compile | cached load | runs/s, copied | runs/s, CoW | runs/s, auto (default) | auto maps | ms/run, auto | memory per run |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.2} MB | {:.2} MiB | {:.0} ms | {:.1} ms | {:.0} | {:.0} | {:.0} | {} | {:.2} | {:.1} MiB |",
            r.label,
            r.size as f64 / 1e6,
            r.image as f64 / f64::from(1 << 20),
            r.compile_ms,
            r.cached_ms,
            r.rate,
            r.rate_cow,
            r.rate_auto,
            if r.mapped { "yes" } else { "no" },
            1e3 / r.rate_auto,
            r.memory as f64 / f64::from(1 << 20)
        );
    }
    let rust = &rows[0];
    println!();
    println!(
        "| job | size / Rust | compile / Rust | cached load / Rust | time per run / Rust (auto) | memory / Rust |"
    );
    println!("|---|---|---|---|---|---|");
    for r in &rows[1..] {
        println!(
            "| {} | {:.0}x | {:.0}x | {:.1}x | {:.1}x | {:.1}x |",
            r.label,
            r.size as f64 / rust.size as f64,
            r.compile_ms / rust.compile_ms,
            r.cached_ms / rust.cached_ms,
            rust.rate_auto / r.rate_auto,
            r.memory as f64 / rust.memory as f64
        );
    }
}
