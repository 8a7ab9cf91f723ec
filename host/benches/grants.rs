//! Grants benchmark, every figure a ratio of two paths measured in this run:
//!
//! 1. What linking `wasi:http` and `wasi:config` and looking up a job's
//!    grants cost a run that makes no request: no-op runs per second through
//!    the host's run path with them and without them, interleaved rounds.
//! 2. What a grant lookup in the store costs (SQLite, a job with grants):
//!    microseconds per lookup against the no-op run's time.
//! 3. Outbound requests per second of a job calling a local server (one run
//!    making `REQUESTS` GETs) against a plain `reqwest` client making the same
//!    requests in the same process, with a new connection per request (what
//!    the host does) and with reqwest's connection pool.
//!
//! Run: `./dev.sh guests && cargo bench -p quartzite --bench grants`

use quartzite::grants::Grants;
use quartzite::runtime::{
    EngineConfig, GrantSource, HostServices, MemoryGrants, RunOutcome, RunRequest, Runtime,
    RuntimeConfig,
};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

const ROUNDS: usize = 5;
const RUNS: usize = 4_000;
const REQUESTS: usize = 500;

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

fn config() -> RuntimeConfig {
    RuntimeConfig {
        engine: EngineConfig {
            max_concurrent_runs: 64,
            ..EngineConfig::default()
        },
        cache_dir: None,
        node_id: "bench".into(),
    }
}

async fn runs_per_second(runtime: &Runtime, module: &quartzite::runtime::LoadedModule) -> f64 {
    let start = Instant::now();
    for _ in 0..RUNS {
        let report = runtime.run(module, RunRequest::new("bench/noop")).await;
        assert!(matches!(report.outcome, RunOutcome::Completed { .. }));
    }
    RUNS as f64 / start.elapsed().as_secs_f64()
}

async fn linking_overhead() {
    let with = Runtime::new(config(), HostServices::in_memory()).expect("runtime");
    let without = Runtime::without_grants(config(), HostServices::in_memory()).expect("runtime");
    let m_with = with.load_file(&guest("guest_noop")).expect("noop");
    let m_without = without.load_file(&guest("guest_noop")).expect("noop");
    for _ in 0..500 {
        with.run(&m_with, RunRequest::new("bench/noop")).await;
        without.run(&m_without, RunRequest::new("bench/noop")).await;
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        b.push(runs_per_second(&without, &m_without).await);
        a.push(runs_per_second(&with, &m_with).await);
    }
    let (a, b) = (median(a), median(b));
    println!("no-op runs/s, 1 thread, median of {ROUNDS} rounds of {RUNS}:");
    println!("  without wasi:http/config/grants  {b:>10.0}");
    println!("  with them (in-memory grants)     {a:>10.0}");
    println!(
        "  overhead                          {:>9.1} %",
        (b / a - 1.0) * 100.0
    );
}

async fn store_lookup() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("b.db").display());
    let store = quartzite::store::open(&url).await.expect("store");
    let grants = Grants {
        http: vec!["https://api.example.com/v1/*".into()],
        emit: vec!["report.*".into()],
        ..Grants::default()
    };
    let job = quartzite::store::model::JobDef::new("bench/job", "hello").with_grants(&grants);
    store.job_put(&job, &[]).await.expect("put");
    let text = job.grants.clone().expect("granted");
    let source = quartzite::secrets::StoreGrants::new(Arc::clone(&store), Arc::default(), None);
    let by_key = || async {
        source.run_grants("bench/job").await.expect("grants");
    };
    // What a run of a granted job does now: the claim brought the text.
    let stored = || async {
        let parsed = Grants::from_stored("bench/job", Some(&text)).expect("grants");
        source.open(&parsed).await.expect("grants");
    };
    for _ in 0..500 {
        by_key().await;
        stored().await;
    }
    let (mut read, mut brought) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let start = Instant::now();
        for _ in 0..RUNS {
            by_key().await;
        }
        read.push(start.elapsed().as_secs_f64() * 1e6 / RUNS as f64);
        let start = Instant::now();
        for _ in 0..RUNS {
            stored().await;
        }
        brought.push(start.elapsed().as_secs_f64() * 1e6 / RUNS as f64);
    }
    println!(
        "a granted run's grants, median: read by job key from SQLite {:.1} us, \
         brought by the claim (parse and compile) {:.1} us",
        median(read),
        median(brought)
    );
}

async fn requests() {
    use axum::routing::get;
    let app = axum::Router::new().route("/ok", get(|| async { "hello" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    let url = format!("http://127.0.0.1:{port}/ok");

    let grants = Arc::new(MemoryGrants::new());
    grants.put(
        "bench/http",
        Grants {
            http: vec![format!("http://127.0.0.1:{port}/*")],
            http_limits: quartzite::grants::HttpLimitsSpec {
                max_requests: Some(REQUESTS as u32 + 1),
                ..Default::default()
            },
            ..Grants::default()
        },
    );
    let services = HostServices {
        grants: grants.clone(),
        ..HostServices::in_memory()
    };
    let runtime = Runtime::new(config(), services).expect("runtime");
    let module = runtime.load_file(&guest("guest_http")).expect("guest_http");
    let data = serde_json::json!({
        "requests": (0..REQUESTS).map(|_| serde_json::json!({ "url": url })).collect::<Vec<_>>()
    })
    .to_string();
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let pooled = reqwest::Client::new();
    let (mut guest_rates, mut fresh_rates, mut pooled_rates) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let report = runtime
            .run(
                &module,
                RunRequest {
                    data: data.clone(),
                    ..RunRequest::new("bench/http")
                },
            )
            .await;
        assert!(
            matches!(report.outcome, RunOutcome::Completed { .. }),
            "{:?}",
            report.outcome
        );
        guest_rates.push(REQUESTS as f64 / start.elapsed().as_secs_f64());
        for (client, rates) in [(&fresh, &mut fresh_rates), (&pooled, &mut pooled_rates)] {
            let start = Instant::now();
            for _ in 0..REQUESTS {
                let body = client
                    .get(&url)
                    .send()
                    .await
                    .expect("get")
                    .text()
                    .await
                    .expect("body");
                assert_eq!(body, "hello");
            }
            rates.push(REQUESTS as f64 / start.elapsed().as_secs_f64());
        }
    }
    let (g, f, p) = (
        median(guest_rates),
        median(fresh_rates),
        median(pooled_rates),
    );
    println!("GETs/s to a local server, {REQUESTS} sequential per round, median of {ROUNDS}:");
    println!("  guest through wasi:http (new connection each)  {g:>8.0}");
    println!(
        "  reqwest, new connection each                    {f:>8.0}   guest costs {:.2}x",
        f / g
    );
    println!(
        "  reqwest, pooled connection                      {p:>8.0}   guest costs {:.2}x",
        p / g
    );
    server.abort();
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    rt.block_on(async {
        linking_overhead().await;
        store_lookup().await;
        requests().await;
    });
}
