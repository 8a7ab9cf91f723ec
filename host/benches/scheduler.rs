//! Scheduler benchmark on a real store: bulk load of one-shot triggers, end-to-end
//! throughput of no-op jobs due now (claim -> run -> complete with durable
//! history), and fire lag at light load.
//!
//! Run (after `./dev.sh guests`):
//!   cargo bench -p quartzite --bench scheduler -- sqlite [N]
//!   cargo bench -p quartzite --bench scheduler -- postgres [N]
//!   cargo bench -p quartzite --bench scheduler -- sqlite N throughput   (bulk load and throughput only)
//!   cargo bench -p quartzite --bench scheduler -- sqlite scale [STORED]   (default 1,000,000)
//!   cargo bench -p quartzite --bench scheduler -- sqlite store [N]   (the store's share alone)
//!   cargo bench -p quartzite --bench scheduler -- sqlite events [N]  (emit cost, event-to-run lag)
//!   cargo bench -p quartzite --bench scheduler -- sqlite fairness [SECS]  (a 1 s job beside hostile ones;
//!     QUARTZITE_BENCH_HOSTILE=spin,flood,kv picks which)
//!   cargo bench -p quartzite --bench scheduler -- sqlite flood [N]  (N fires of one job due at once,
//!     alone and beside a job every 1 s: the 1 s job's lag, the flood's throughput)
//!   QUARTZITE_BENCH_OTLP=1 before any of these traces every fire over OTLP/HTTP (to a receiver of its own;
//!   QUARTZITE_BENCH_OTLP=http://HOST:PORT/v1/traces to a collector out of the process)
//! PostgreSQL comes from QUARTZITE_TEST_PG (default postgres://postgres@127.0.0.1:5432/test);
//! the bench works in a schema of its own and drops it.

/// As the `quartzite` binary: the bench measures what a node runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use quartzite::engine::modules::push_file;
use quartzite::engine::scheduler::{Scheduler, SchedulerConfig};
use quartzite::engine::services::{StoreEvents, StoreKv};
use quartzite::runtime::services::LocalLocks;
use quartzite::runtime::{EngineConfig, HostServices, Runtime, RuntimeConfig};
use quartzite::store::model::HistoryFilter;
use quartzite::store::{self, Store};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod support;
use support::{drop_schema, one_shot, open, pg_base};

fn noop_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")));
    target.join("wasm32-wasip2/release/guest_noop.wasm")
}

fn runtime(store: &Arc<dyn Store>, cache: PathBuf) -> Arc<Runtime> {
    let services = HostServices {
        kv: Arc::new(StoreKv::new(Arc::clone(store))),
        locks: Arc::new(LocalLocks::new()),
        events: StoreEvents::new(Arc::clone(store), 8),
        grants: quartzite::secrets::StoreGrants::new(Arc::clone(store), Arc::default(), None),
    };
    let engine = EngineConfig {
        max_concurrent_runs: 128,
        ..EngineConfig::default()
    };
    Arc::new(
        Runtime::new(
            RuntimeConfig {
                engine,
                cache_dir: Some(cache),
                node_id: "bench".into(),
            },
            services,
        )
        .expect("runtime"),
    )
}

async fn history_count(store: &Arc<dyn Store>) -> usize {
    usize::try_from(
        store
            .history_count(&HistoryFilter::default())
            .await
            .expect("history"),
    )
    .unwrap_or(0)
}

async fn run_until_done(
    store: &Arc<dyn Store>,
    rt: &Arc<Runtime>,
    n: usize,
    workers: usize,
) -> Run {
    let scheduler = Scheduler::new(
        Arc::clone(store),
        Arc::clone(rt),
        "bench-node".into(),
        SchedulerConfig {
            poll_ms: 50,
            ..scheduler_config(workers)
        },
    );
    let (stop, rx) = tokio::sync::watch::channel(false);
    let start = Instant::now();
    let cpu0 = cpu_seconds();
    let task = tokio::spawn(Arc::clone(&scheduler).run(rx));
    // The node counts a run once its completion is committed; counting history
    // rows instead would put a scan of the growing table beside the run.
    let metrics = Arc::clone(scheduler.metrics());
    while metrics.tasks_ended() < n as u64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed();
    let cpu = cpu_seconds() - cpu0;
    let _ = stop.send(true);
    let _ = task.await;
    let recorded = history_count(store).await;
    assert!(recorded >= n, "{recorded} history rows for {n} runs");
    Run { elapsed, cpu }
}

/// The scheduler settings `serve` would take from the environment
/// (`QUARTZITE_SCHEDULER_*`, so that one binary compares settings), with
/// `workers` unless set there.
fn scheduler_config(workers: usize) -> SchedulerConfig {
    let loaded = quartzite::config::load(None).expect("QUARTZITE_* settings");
    let mut config = loaded.config.scheduler;
    if !loaded
        .from_env
        .iter()
        .any(|(key, _)| *key == "scheduler.workers")
    {
        config.workers = workers;
    }
    config
}

/// How long a run took, and the CPU time this process spent in it (seconds).
struct Run {
    elapsed: Duration,
    cpu: f64,
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Start minus scheduled time of the newest `limit` history rows (of `job`,
/// or of all), sorted.
async fn lags_of(store: &Arc<dyn Store>, job: Option<&str>, limit: i64) -> Vec<i64> {
    let rows = store
        .history_list(&HistoryFilter {
            job_key: job.map(str::to_string),
            limit,
            ..HistoryFilter::default()
        })
        .await
        .expect("history");
    let mut lags: Vec<i64> = rows
        .iter()
        .filter_map(|h| h.scheduled_ms.map(|s| h.started_ms - s))
        .collect();
    lags.sort_unstable();
    lags
}

/// p50, p99 and max of start minus scheduled time over the last 2,000 history rows.
async fn lag_summary(store: &Arc<dyn Store>) -> String {
    let lags = lags_of(store, None, 2_000).await;
    format!(
        "p50 {} ms, p99 {} ms, max {} ms",
        percentile(&lags, 0.5),
        percentile(&lags, 0.99),
        lags.last().copied().unwrap_or(0)
    )
}

/// The p50, p99 and max of sorted `lags` as table cells (`-` when none).
fn lag_cells(lags: &[i64]) -> [String; 3] {
    match lags.last() {
        None => ["-".into(), "-".into(), "-".into()],
        Some(max) => [
            format!("{} ms", percentile(lags, 0.5)),
            format!("{} ms", percentile(lags, 0.99)),
            format!("{max} ms"),
        ],
    }
}

/// User plus system CPU time of this process so far, in seconds (Linux, at
/// its usual 100 clock ticks per second).
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let fields: Vec<&str> = s.rsplit(')').next()?.split_whitespace().collect();
            let ticks: f64 =
                fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0)
        })
        .unwrap_or(0.0)
}

/// Peak resident memory of this process, from /proc (Linux).
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// `stored` far-future triggers plus 10,000 fires due at 1,000/s: throughput,
/// fire lag, start-up work and peak memory.
async fn scale(backend: &str, stored: usize) {
    let (store, schema, dir) = open(backend, &format!("scale{stored}")).await;
    let rt = runtime(&store, dir.path().join("cache"));
    push_file(&store, &rt, &noop_path(), Some("noop"), Some("1"))
        .await
        .expect("push noop");
    let far = store.now_ms().await.expect("clock") + 3_650 * 86_400_000;
    let load = Instant::now();
    for start in (0..stored).step_by(50_000) {
        let jobs: Vec<_> = (start..(start + 50_000).min(stored))
            .map(|i| one_shot(1_000_000 + i, far + i64::try_from(i).unwrap_or(0)))
            .collect();
        store.jobs_put(&jobs).await.expect("jobs_put");
    }
    let load = load.elapsed();
    // What a restart does before acquiring, on this table.
    let boot = Instant::now();
    let reopened: Arc<dyn Store> = match &schema {
        None => store::open(&format!(
            "sqlite://{}",
            dir.path().join(format!("scale{stored}.db")).display()
        ))
        .await
        .expect("reopen"),
        Some(s) => {
            let base = pg_base();
            store::open(&format!("{base}?options=-c%20search_path%3D{s}"))
                .await
                .expect("reopen")
        }
    };
    reopened.trigger_reset_errors().await.expect("reset");
    reopened.fire_recover(2_000, None).await.expect("recover");
    reopened.fire_startup().await.expect("startup");
    let boot = boot.elapsed();
    let base = store.now_ms().await.expect("clock") + 1_000;
    let due: Vec<_> = (0..10_000)
        .map(|i| one_shot(i, base + i64::try_from(i).unwrap_or(0)))
        .collect();
    store.jobs_put(&due).await.expect("jobs_put");
    let elapsed = run_until_done(&store, &rt, 10_000, 32).await.elapsed;
    let lags = lags_of(&store, None, 20_000).await;
    println!(
        "| scale: {stored} stored (loaded in {:.1} s) + 10,000 due at 1,000/s | {:.0} executions/s over the run; lag p50 {} ms, p99 {} ms, max {} ms; start-up work {:.2} s; peak RSS {:.0} MiB |",
        load.as_secs_f64(),
        10_000.0 / elapsed.as_secs_f64(),
        percentile(&lags, 0.5),
        percentile(&lags, 0.99),
        lags.last().copied().unwrap_or(0),
        boot.as_secs_f64(),
        peak_rss_mib()
    );
    drop_schema(schema).await;
}

/// Installs the fire-span exporter of `serve` against `endpoint` (a
/// collector out of this process), or a receiver of its own on loopback
/// when `None`; the returned handle sends what is queued when dropped.
async fn traced(endpoint: Option<String>) -> quartzite::cli::telemetry::Telemetry {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let endpoint = match endpoint {
        Some(endpoint) => endpoint,
        None => {
            let app = axum::Router::new().route("/v1/traces", axum::routing::post(|| async { "" }));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let endpoint = format!(
                "http://{}/v1/traces",
                listener.local_addr().expect("address")
            );
            tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
            endpoint
        }
    };
    let (telemetry, tracer) =
        quartzite::cli::telemetry::Telemetry::otlp(&endpoint).expect("exporter");
    tracing_subscriber::registry()
        .with(quartzite::cli::telemetry::fire_layer(tracer))
        .init();
    // As `serve` at its default log level.
    quartzite::cli::telemetry::cap_log_records(Some(tracing::level_filters::LevelFilter::INFO));
    println!("fires traced to {endpoint}");
    telemetry
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `RUST_LOG=sqlx::query=debug` logs every statement with its time.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    // QUARTZITE_BENCH_OTLP=1 traces every fire, as `otel.endpoint` does,
    // to a receiver on loopback that takes the spans and answers 200.
    // A URL instead of 1 sends them there: a collector out of this process,
    // whose work the figures should not count.
    let _traces = match std::env::var("QUARTZITE_BENCH_OTLP") {
        Ok(v) if v.starts_with("http") => Some(traced(Some(v)).await),
        Ok(_) => Some(traced(None).await),
        Err(_) => None,
    };
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let backend = args.first().cloned().unwrap_or_else(|| "sqlite".into());
    if args.get(1).map(String::as_str) == Some("scale") {
        let stored: usize = args
            .get(2)
            .and_then(|s| s.parse().ok())
            .unwrap_or(1_000_000);
        scale(&backend, stored).await;
        return;
    }
    if args.get(1).map(String::as_str) == Some("events") {
        let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5_000);
        events(&backend, n).await;
        return;
    }
    if args.get(1).map(String::as_str) == Some("flood") {
        let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100_000);
        flood(&backend, n).await;
        return;
    }
    if args.get(1).map(String::as_str) == Some("fairness") {
        let secs: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(30);
        fairness(&backend, secs).await;
        return;
    }
    if args.get(1).map(String::as_str) == Some("keys") {
        let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20_000);
        keys(&backend, n).await;
        return;
    }
    if args.get(1).map(String::as_str) == Some("store") {
        let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(50_000);
        store_only(&backend, n).await;
        return;
    }
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let noop = noop_path();
    assert!(
        noop.is_file(),
        "{} is missing: ./dev.sh guests",
        noop.display()
    );
    println!("scheduler benchmark on {backend}, N = {n}");

    // Bulk load and throughput.
    let (store, schema, dir) = open(&backend, "tp").await;
    let rt = runtime(&store, dir.path().join("cache"));
    push_file(&store, &rt, &noop, Some("noop"), Some("1"))
        .await
        .expect("push noop");
    let now = store.now_ms().await.expect("clock");
    let jobs: Vec<_> = (0..n).map(|i| one_shot(i, now)).collect();
    let start = Instant::now();
    store.jobs_put(&jobs).await.expect("jobs_put");
    let load = start.elapsed();
    println!(
        "| bulk load: {n} one-shot jobs with their triggers in one `jobs_put` (how a manifest is applied) | {:.0} jobs/s |",
        n as f64 / load.as_secs_f64()
    );
    let run = run_until_done(&store, &rt, n, 32).await;
    println!(
        "| throughput: {n} no-op fires due now, end to end with durable history | {:.0} executions/s ({:.1} us of process CPU per fire) |",
        n as f64 / run.elapsed.as_secs_f64(),
        run.cpu * 1e6 / n as f64
    );
    drop_schema(schema).await;
    if args.get(2).map(String::as_str) == Some("throughput") {
        return;
    }

    // Fire lag: 1,000 fires spread over 30 s at light load.
    let (store, schema, dir) = open(&backend, "lag").await;
    let rt = runtime(&store, dir.path().join("cache"));
    push_file(&store, &rt, &noop, Some("noop"), Some("1"))
        .await
        .expect("push noop");
    let base = store.now_ms().await.expect("clock") + 2_000;
    let jobs: Vec<_> = (0..1_000)
        .map(|i| one_shot(i, base + i64::try_from(i).unwrap_or(0) * 30))
        .collect();
    store.jobs_put(&jobs).await.expect("jobs_put");
    run_until_done(&store, &rt, 1_000, 16).await;
    println!(
        "| fire lag, 1,000 fires over 30 s (actual start - scheduled) | {} |",
        lag_summary(&store).await
    );
    drop_schema(schema).await;
}

/// The store's share of a fire without the sandbox: claim and complete N
/// one-shot fires due now, in batches of 256, one after the other.
async fn store_only(backend: &str, n: usize) {
    let (store, schema, _dir) = open(backend, "store").await;
    let now = store.now_ms().await.expect("clock");
    let jobs: Vec<_> = (0..n).map(|i| one_shot(i, now)).collect();
    store.jobs_put(&jobs).await.expect("jobs_put");
    let c = claim_all(&store, n).await;
    println!(
        "| store only ({backend}): {n} fires claimed and completed in batches of 256 | {:.0} fires/s; acquire {:.1} us/fire, complete {:.1} us/fire; {:.1} us of process CPU per fire |",
        n as f64 / c.total.as_secs_f64(),
        c.acquire.as_micros() as f64 / n as f64,
        c.complete.as_micros() as f64 / n as f64,
        c.cpu * 1e6 / n as f64
    );
    drop_schema(schema).await;
}

/// What claiming and completing a store's fires took.
struct Claimed {
    acquire: Duration,
    complete: Duration,
    total: Duration,
    cpu: f64,
}

/// What a node with room for every job claims with: up to 256 fires due now.
fn probe_params() -> quartzite::store::model::AcquireParams {
    use quartzite::schedule::trigger::MisfireLimits;
    quartzite::store::model::AcquireParams {
        node_id: "probe".into(),
        lookahead_ms: 100,
        max: 256,
        lease_ms: 6_000,
        misfire: MisfireLimits {
            threshold_ms: 60_000,
            catch_up: 10,
        },
        runs: quartzite::store::model::WitRange::up_to(
            quartzite::runtime::WIT_VERSION.major,
            quartzite::runtime::WIT_VERSION.minor,
        ),
        started: true,
        room: quartzite::store::model::JobRoom::unbounded(),
    }
}

/// One claim with `params` and the completion of what it claimed: the time
/// each took and the fires claimed.
async fn claim_batch(
    store: &Arc<dyn Store>,
    params: &quartzite::store::model::AcquireParams,
) -> (Duration, Duration, usize) {
    use quartzite::store::model::{Completion, FireNext, HistoryEntry, HistoryStatus};
    let t = Instant::now();
    let acquired = store.fire_acquire(params).await.expect("acquire");
    let t_acq = t.elapsed();
    let batch: Vec<Completion> = acquired
        .fires
        .iter()
        .map(|f| Completion {
            fire_id: f.fire_id.clone(),
            node_id: "probe".into(),
            fencing: f.fencing,
            held: f.held,
            next: FireNext::Done,
            new_data: None,
            history: HistoryEntry {
                id: quartzite::store::sched::new_id(),
                fire_id: Some(f.fire_id.clone()),
                job_key: f.job_key.clone(),
                trigger_key: Some(f.trigger_key.clone()),
                status: HistoryStatus::Success,
                attempt: 1,
                node_id: Some("probe".into()),
                scheduled_ms: Some(f.scheduled_ms),
                started_ms: acquired.now_ms,
                ended_ms: acquired.now_ms,
                duration_ms: 0,
                details: r#"{"outcome":{"kind":"completed","details":null},"attempt":1,"recovering":false,"node":"probe","logs":[],"logs_dropped":0,"module":{"digest":"0000000000000000000000000000000000000000000000000000000000000000","wit_version":"1.0.0"}}"#.into(),
            },
        })
        .collect();
    let t = Instant::now();
    if !batch.is_empty() {
        store.fire_complete(&batch).await.expect("complete");
    }
    (t_acq, t.elapsed(), batch.len())
}

/// Claims and completes `n` fires due now, in batches of 256, as one node
/// with room for every job would.
async fn claim_all(store: &Arc<dyn Store>, n: usize) -> Claimed {
    let params = probe_params();
    let (mut t_acq, mut t_comp, mut done) = (Duration::ZERO, Duration::ZERO, 0);
    let start = Instant::now();
    let cpu0 = cpu_seconds();
    while done < n {
        let (a, c, claimed) = claim_batch(store, &params).await;
        assert!(claimed > 0, "nothing claimed with {done} of {n} done");
        t_acq += a;
        t_comp += c;
        done += claimed;
    }
    Claimed {
        acquire: t_acq,
        complete: t_comp,
        total: start.elapsed(),
        cpu: cpu_seconds() - cpu0,
    }
}

/// Issue 19 item 10: the claim's cost for fires with concurrency keys, in
/// one run: N waiting fires of one event-triggered job without keys, with
/// 1,000 distinct keys, and with one hot key (limits high enough that every
/// fire is admitted, so the figure is the keys' cost, not a wait).
async fn keys(backend: &str, n: usize) {
    use quartzite::domain::flow::{Concurrency, Flow, KeyTemplate};
    use quartzite::store::events::{EmitOutcome, EventPut};
    println!("claim cost by concurrency keys on {backend}, N = {n} waiting fires");
    let cases: [(&str, Option<&str>); 3] = [
        ("no keys", None),
        ("1,000 distinct keys", Some("acct-{{ event.payload.k }}")),
        ("one hot key", Some("hot")),
    ];
    // Each round fills one store per case, then claims from them in turn, one
    // batch each (the case that goes first moving on every turn), so the
    // server's and the machine's drift over the round falls on every case
    // alike: whole cases one after the other moved by a third between runs on
    // this machine. Ratios are of the rounds' medians.
    let rounds: usize = std::env::var("QUARTZITE_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut acquire: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut complete: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for round in 1..=rounds {
        let mut stores = Vec::new();
        for (c, (_, key)) in cases.iter().enumerate() {
            // A store of its own per case (the tag names the schema).
            let (store, schema, dir) = open(backend, &format!("keys{c}")).await;
            let flow = Flow {
                concurrency: key.map(|k| Concurrency {
                    key: KeyTemplate::parse(k).expect("template"),
                    limit: quartzite::domain::flow::LIMIT_MAX,
                }),
                rate: None,
                coalesce: None,
            };
            let (mut job, triggers) = event_job("keys/job", "k");
            job.flow = flow;
            store.jobs_put(&[(job, triggers)]).await.expect("jobs_put");
            for i in 0..n {
                let payload = format!(r#"{{"k":{}}}"#, i % 1000);
                let out = store
                    .event_emit(&EventPut::operator("k", &payload, None))
                    .await
                    .expect("emit");
                assert!(matches!(out, EmitOutcome::Accepted { .. }));
            }
            stores.push((store, schema, dir));
        }
        let params = probe_params();
        let mut left = vec![n; cases.len()];
        let mut took = vec![(Duration::ZERO, Duration::ZERO); cases.len()];
        let mut turn = 0;
        while left.iter().any(|&l| l > 0) {
            for j in 0..cases.len() {
                let i = (turn + j) % cases.len();
                if left[i] == 0 {
                    continue;
                }
                let (a, c, claimed) = claim_batch(&stores[i].0, &params).await;
                assert!(
                    claimed > 0,
                    "{}: nothing claimed with {} left",
                    cases[i].0,
                    left[i]
                );
                took[i].0 += a;
                took[i].1 += c;
                left[i] = left[i].saturating_sub(claimed);
            }
            turn += 1;
        }
        for (i, (label, _)) in cases.iter().enumerate() {
            let per_fire = took[i].0.as_micros() as f64 / n as f64;
            let done = took[i].1.as_micros() as f64 / n as f64;
            println!(
                "| round {round}: {label} ({backend}) | acquire {per_fire:.1} us/fire, complete {done:.1} us/fire |"
            );
            acquire[i].push(per_fire);
            complete[i].push(done);
        }
        for (_, schema, _) in stores {
            drop_schema(schema).await;
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let base = median(&acquire[0]);
    for (i, (label, _)) in cases.iter().enumerate() {
        let a = median(&acquire[i]);
        println!(
            "| median of {rounds}: {label} ({backend}) | acquire {a:.1} us/fire ({:.2}x no keys), complete {:.1} us/fire |",
            a / base,
            median(&complete[i])
        );
    }
}

/// Events: what accepting one costs (event row + one fire per subscriber in one
/// transaction), what a repeated key costs, and the lag from acceptance to the
/// subscriber's run at a steady 200 events/s with the scheduler running.
async fn events(backend: &str, n: usize) {
    use quartzite::store::events::{EmitOutcome, EventPut};
    println!("event benchmark on {backend}, N = {n}");
    let (store, schema, dir) = open(backend, "events").await;
    let rt = runtime(&store, dir.path().join("cache"));
    push_file(&store, &rt, &noop_path(), Some("noop"), Some("1"))
        .await
        .expect("push noop");
    let subscriber = event_job;
    store
        .jobs_put(&[
            subscriber("ev/one", "one"),
            subscriber("ev/a", "three"),
            subscriber("ev/b", "three"),
            subscriber("ev/c", "three"),
        ])
        .await
        .expect("jobs_put");
    let event = |name: &str, key: String| EventPut {
        max_depth: 8,
        ..EventPut::operator(name, r#"{"order":1}"#, Some(&key))
    };
    for (name, subscribers) in [("one", 1), ("three", 3)] {
        let start = Instant::now();
        for i in 0..n {
            let out = store
                .event_emit(&event(name, format!("k{i}")))
                .await
                .expect("emit");
            assert!(
                matches!(out, EmitOutcome::Accepted { ref fires, .. } if fires.len() == subscribers)
            );
        }
        let took = start.elapsed();
        println!(
            "| emit, {subscribers} subscriber(s), one after the other | {:.0} events/s ({:.0} us each) |",
            n as f64 / took.as_secs_f64(),
            took.as_micros() as f64 / n as f64
        );
    }
    let start = Instant::now();
    for i in 0..n {
        let out = store
            .event_emit(&event("one", format!("k{i}")))
            .await
            .expect("emit");
        assert!(matches!(out, EmitOutcome::Duplicate { .. }));
    }
    println!(
        "| emit of a key already used (nothing started) | {:.0} events/s |",
        n as f64 / start.elapsed().as_secs_f64()
    );
    drop_schema(schema).await;

    // Event-to-run lag at a steady rate, scheduler running.
    let (store, schema, dir) = open(backend, "evlag").await;
    let rt = runtime(&store, dir.path().join("cache"));
    push_file(&store, &rt, &noop_path(), Some("noop"), Some("1"))
        .await
        .expect("push noop");
    store
        .jobs_put(&[subscriber("ev/one", "one")])
        .await
        .expect("jobs_put");
    let events = StoreEvents::new(Arc::clone(&store), 8);
    let scheduler = Scheduler::new(
        Arc::clone(&store),
        Arc::clone(&rt),
        "bench-node".into(),
        SchedulerConfig {
            workers: 16,
            poll_ms: 500,
            ..SchedulerConfig::default()
        },
    );
    events.wake_on_fires(scheduler.wake_handle());
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(Arc::clone(&scheduler).run(rx));
    let total = 1_000usize;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    for i in 0..total {
        tick.tick().await;
        // Through the path a guest's emit takes: the store, then a wake-up.
        use quartzite::runtime::services::{EmitRequest, EventSink};
        events
            .emit(&EmitRequest {
                name: "one".into(),
                payload: "null".into(),
                key: format!("lag{i}"),
                depth: 1,
                job_key: "bench/source".into(),
                fire_id: "bench".into(),
                parent_event: None,
            })
            .await
            .expect("emit");
    }
    while history_count(&store).await < total {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop.send(true);
    let _ = task.await;
    println!(
        "| event-to-run lag, {total} events at 200/s (subscriber start - acceptance) | {} |",
        lag_summary(&store).await
    );
    drop_schema(schema).await;
}

fn guest_path(name: &str) -> PathBuf {
    noop_path().with_file_name(format!("{name}.wasm"))
}

/// A job of `module` with `data`, fired every `period_ms`.
/// Job `key` of the noop module, run by each event `event` (trigger `KEY:event`).
fn event_job(
    key: &str,
    event: &str,
) -> (
    quartzite::store::model::JobDef,
    Vec<quartzite::store::model::TriggerPut>,
) {
    use quartzite::schedule::trigger::{MisfirePolicy, TriggerKind, TriggerSpec};
    let trigger = quartzite::store::model::TriggerPut {
        trigger_key: format!("{key}:event"),
        job_key: key.into(),
        spec: TriggerSpec {
            kind: TriggerKind::Event { name: event.into() },
            start_ms: None,
            end_ms: None,
            misfire: MisfirePolicy::FireNow,
            jitter_ms: 0,
            calendars: Vec::new(),
        },
        priority: 5,
    };
    (
        quartzite::store::model::JobDef::new(key, "noop"),
        vec![trigger],
    )
}

fn every_job(
    key: &str,
    module: &str,
    data: &str,
    period_ms: i64,
    timeout_ms: u64,
) -> (
    quartzite::store::model::JobDef,
    Vec<quartzite::store::model::TriggerPut>,
) {
    use quartzite::schedule::trigger::{MisfirePolicy, TriggerKind, TriggerSpec};
    let mut job = quartzite::store::model::JobDef::new(key, module);
    job.data = data.into();
    job.timeout_ms = timeout_ms;
    let trigger = quartzite::store::model::TriggerPut {
        trigger_key: format!("{key}:every"),
        job_key: key.into(),
        spec: TriggerSpec {
            kind: TriggerKind::Every {
                period_ms,
                repeat: None,
            },
            start_ms: None,
            end_ms: None,
            misfire: MisfirePolicy::FireNow,
            jitter_ms: 0,
            calendars: Vec::new(),
        },
        priority: 5,
    };
    (job, vec![trigger])
}

/// Issue 15, item 8: a `hello` job every second beside a job whose fires
/// (every 200 ms) spin until their 60 s timeout, one flooding stdout and one
/// filling its kv state, on one node of 16 workers, for `secs` seconds; with
/// each job's share (the default) and without (`max_job_runs` = every worker).
async fn fairness(backend: &str, secs: u64) {
    println!("fairness on {backend}: hello every 1 s beside hostile jobs, {secs} s per run");
    println!("| per-job share | hello runs / due | lag p50 | lag p99 | max | fires deferred |");
    println!("|---|---|---|---|---|---|");
    for (label, share) in [("none (max_job_runs = 16)", 16), ("default (4 of 16)", 0)] {
        let (store, schema, dir) = open(backend, "fair").await;
        let rt = runtime(&store, dir.path().join("cache"));
        for (name, file) in [("hostile", "guest_hostile"), ("hello", "hello")] {
            push_file(&store, &rt, &guest_path(file), Some(name), Some("1"))
                .await
                .expect("push");
        }
        let jobs = vec![
            every_job("f/spin", "hostile", r#"{"op":"loop"}"#, 200, 60_000),
            every_job(
                "f/flood",
                "hostile",
                r#"{"op":"flood-stdout","lines":100000,"len":1000}"#,
                1_000,
                60_000,
            ),
            every_job(
                "f/kv",
                "hostile",
                r#"{"op":"kv-fill","keys":20000,"bytes":1000}"#,
                1_000,
                60_000,
            ),
            every_job("f/hello", "hello", "{}", 1_000, 60_000),
        ];
        // QUARTZITE_BENCH_HOSTILE=spin,flood,kv picks the hostile jobs (all by default).
        let picked = std::env::var("QUARTZITE_BENCH_HOSTILE").ok();
        let jobs: Vec<_> = jobs
            .into_iter()
            .filter(|(job, _)| {
                let name = job.job_key.trim_start_matches("f/");
                name == "hello"
                    || picked
                        .as_deref()
                        .is_none_or(|p| p.split(',').any(|x| x == name))
            })
            .collect();
        store.jobs_put(&jobs).await.expect("jobs_put");
        let scheduler = Scheduler::new(
            Arc::clone(&store),
            Arc::clone(&rt),
            "fair-node".into(),
            SchedulerConfig {
                workers: 16,
                max_job_runs: share,
                grace_ms: 100,
                // QUARTZITE_BENCH_GUEST_THREADS=N runs guests on N threads of their own.
                guest_threads: std::env::var("QUARTZITE_BENCH_GUEST_THREADS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
                ..SchedulerConfig::default()
            },
        );
        let (stop, rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(Arc::clone(&scheduler).run(rx));
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let text = scheduler.metrics().encode();
        let _ = stop.send(true);
        rt.abort();
        let _ = task.await;
        let lags = lags_of(&store, Some("f/hello"), 10_000).await;
        let deferred: u64 = text
            .lines()
            .filter(|l| l.starts_with("quartzite_fires_deferred_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        let [p50, p99, max] = lag_cells(&lags);
        println!(
            "| {label} | {} / {secs} | {p50} | {p99} | {max} | {deferred} |",
            lags.len()
        );
        drop_schema(schema).await;
    }
}

/// N fires of one job due at once (its backlog), first alone, then beside a
/// job every second: how late the 1 s job starts while the backlog drains,
/// and how fast the backlog drains in each case.
async fn flood(backend: &str, n: usize) {
    use quartzite::schedule::trigger::{MisfirePolicy, TriggerKind, TriggerSpec};
    use quartzite::store::model::{JobDef, TriggerPut};
    println!("flood on {backend}: {n} fires of one job due at once");
    println!("| run | flood fires/s | 1 s job runs | its lag p50 | p99 | max |");
    println!("|---|---|---|---|---|---|");
    for beside in [false, true] {
        let (store, schema, dir) = open(backend, "flood").await;
        let rt = runtime(&store, dir.path().join("cache"));
        push_file(&store, &rt, &noop_path(), Some("noop"), Some("1"))
            .await
            .expect("push");
        let now = store.now_ms().await.expect("clock");
        let job = JobDef::new("f/flood", "noop");
        let triggers: Vec<TriggerPut> = (0..n)
            .map(|i| TriggerPut {
                trigger_key: format!("f/flood:t{i}"),
                job_key: "f/flood".into(),
                spec: TriggerSpec {
                    kind: TriggerKind::At(now),
                    start_ms: None,
                    end_ms: None,
                    misfire: MisfirePolicy::FireNow,
                    jitter_ms: 0,
                    calendars: Vec::new(),
                },
                priority: 5,
            })
            .collect();
        store.jobs_put(&[(job, triggers)]).await.expect("jobs_put");
        let scheduler = Scheduler::new(
            Arc::clone(&store),
            Arc::clone(&rt),
            "flood-node".into(),
            SchedulerConfig {
                poll_ms: 50,
                ..scheduler_config(16)
            },
        );
        let (stop, rx) = tokio::sync::watch::channel(false);
        let start = Instant::now();
        let task = tokio::spawn(Arc::clone(&scheduler).run(rx));
        if beside {
            // Put once the node runs, into the flood: its first fire is due
            // at once. (Put before the node started, it would be due before
            // there was a node to run it, and its first lag would be how long
            // the flood's 100,000 triggers took to write, not fairness.)
            store
                .jobs_put(&[every_job("f/tick", "noop", "{}", 1_000, 60_000)])
                .await
                .expect("jobs_put");
        }
        let flood_done = HistoryFilter {
            job_key: Some("f/flood".into()),
            ..HistoryFilter::default()
        };
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if store.history_count(&flood_done).await.expect("count") >= n as u64 {
                break;
            }
        }
        let elapsed = start.elapsed();
        let _ = stop.send(true);
        let _ = task.await;
        let lags = lags_of(&store, Some("f/tick"), 10_000).await;
        let [p50, p99, max] = lag_cells(&lags);
        if beside {
            // Each run's lag in the order of its time: which runs were late.
            let mut runs: Vec<(i64, i64)> = store
                .history_list(&HistoryFilter {
                    job_key: Some("f/tick".into()),
                    limit: 10_000,
                    ..HistoryFilter::default()
                })
                .await
                .expect("history")
                .iter()
                .filter_map(|h| h.scheduled_ms.map(|s| (s, h.started_ms - s)))
                .collect();
            runs.sort_unstable();
            let t0 = runs.first().map_or(0, |r| r.0);
            let order: Vec<String> = runs
                .iter()
                .map(|(s, lag)| format!("+{}s:{lag}", (s - t0) / 1000))
                .collect();
            eprintln!(
                "1 s job's runs (time since its first: lag ms): {}",
                order.join(" ")
            );
        }
        println!(
            "| {} | {:.0} | {} | {p50} | {p99} | {max} |",
            if beside {
                "flood beside a 1 s job"
            } else {
                "flood alone"
            },
            n as f64 / elapsed.as_secs_f64(),
            lags.len(),
        );
        drop_schema(schema).await;
    }
}
