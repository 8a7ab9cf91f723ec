//! Runtime benchmark: executions per second of a no-op component through the
//! host's run path against bare wasmtime (fresh store + instantiate + call) in
//! the same process, on 1 and 2 threads; and the time to load a module whose
//! compiled code is in the disk cache.
//!
//! Run: `./dev.sh guests && cargo bench -p quartzite --bench runtime`

/// As the `quartzite` binary: the bench measures what a node runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bare;

use bare::BareFloor;
use quartzite::runtime::{EngineConfig, HostServices, RunRequest, Runtime, RuntimeConfig};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const ROUNDS: usize = 5;
const PER_ROUND: usize = 4_000;
const TASKS: usize = 64;

fn noop_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")));
    target.join("wasm32-wasip2/release/guest_noop.wasm")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs `n` executions of `f` spread over `TASKS` tasks; returns executions/s.
async fn throughput<F, Fut>(n: usize, f: Arc<F>) -> f64
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let f = Arc::clone(&f);
        let count = n / TASKS + usize::from(t < n % TASKS);
        handles.push(tokio::spawn(async move {
            for _ in 0..count {
                f().await;
            }
        }));
    }
    for h in handles {
        h.await.expect("task");
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn measure(
    threads: usize,
    bare: &Arc<BareFloor>,
    host: &Arc<(Runtime, Arc<quartzite::runtime::LoadedModule>)>,
) -> (f64, f64) {
    let rt = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .expect("tokio");
    let (mut bare_rates, mut host_rates) = (Vec::new(), Vec::new());
    rt.block_on(async {
        // Warm up both paths (page faults in the pool, caches).
        for _ in 0..500 {
            bare.call_once().await.expect("bare run");
            host.0.run(&host.1, RunRequest::new("bench/noop")).await;
        }
        // Interleave rounds so drift on a shared machine hits both paths alike.
        for _ in 0..ROUNDS {
            let b = Arc::clone(bare);
            bare_rates.push(
                throughput(
                    PER_ROUND,
                    Arc::new(move || {
                        let b = Arc::clone(&b);
                        async move {
                            assert!(b.call_once().await.expect("bare run"));
                        }
                    }),
                )
                .await,
            );
            let h = Arc::clone(host);
            host_rates.push(
                throughput(
                    PER_ROUND,
                    Arc::new(move || {
                        let h = Arc::clone(&h);
                        async move {
                            let report = h.0.run(&h.1, RunRequest::new("bench/noop")).await;
                            assert!(report.outcome.is_success(), "{:?}", report.outcome);
                        }
                    }),
                )
                .await,
            );
        }
    });
    (median(bare_rates), median(host_rates))
}

fn main() {
    let path = noop_path();
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the guests first: ./dev.sh guests",
            path.display()
        )
    });
    let config = EngineConfig {
        max_concurrent_runs: 128,
        ..EngineConfig::default()
    };
    let bare = Arc::new(BareFloor::new(&bytes, &config).expect("bare floor"));
    let cache = tempfile_dir();
    let runtime = Runtime::new(
        RuntimeConfig {
            engine: config.clone(),
            cache_dir: Some(cache.clone()),
            node_id: "bench".into(),
        },
        HostServices::in_memory(),
    )
    .expect("runtime");
    let compile_start = Instant::now();
    let module = runtime.load_bytes(&bytes).expect("noop module");
    let compile = compile_start.elapsed();
    let host = Arc::new((runtime, module));

    println!(
        "runtime benchmark: no-op component {} ({} bytes)",
        path.display(),
        bytes.len()
    );
    println!("{ROUNDS} interleaved rounds of {PER_ROUND} executions, {TASKS} tasks; medians");
    println!(
        "| threads | bare wasmtime (exec/s) | host run path (exec/s) | host / bare | us per exec (bare / host) |"
    );
    println!("|---|---|---|---|---|");
    for threads in [1, 2] {
        let (b, h) = measure(threads, &bare, &host);
        println!(
            "| {threads} | {b:.0} | {h:.0} | {:.2} | {:.1} / {:.1} |",
            h / b,
            1e6 / b,
            1e6 / h
        );
    }

    // Cache hit: a fresh runtime (as after a restart) loading from the disk cache.
    let mut loads = Vec::new();
    let fresh = Runtime::new(
        RuntimeConfig {
            engine: config,
            cache_dir: Some(cache.clone()),
            node_id: "bench".into(),
        },
        HostServices::in_memory(),
    )
    .expect("runtime");
    for _ in 0..50 {
        fresh.clear_memory_cache();
        let t = Instant::now();
        let m = fresh.load_bytes(&bytes).expect("cached load");
        loads.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(m.origin, quartzite::runtime::LoadOrigin::DiskCache);
    }
    println!();
    println!("| module load | ms |");
    println!("|---|---|");
    println!(
        "| compile (first load, cold) | {:.2} |",
        compile.as_secs_f64() * 1e3
    );
    println!(
        "| disk-cache hit (median of 50: digest + deserialize + checks + link) | {:.2} |",
        median(loads)
    );
    let _ = std::fs::remove_dir_all(&cache);
    std::thread::sleep(Duration::from_millis(10));
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("quartzite-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
