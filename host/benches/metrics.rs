//! What metrics cost: the per-fire recording on the scheduler's hot path
//! (counter, duration and lag histograms), and one `/metrics` scrape, which
//! reads the trigger-state and node gauges from a store holding N triggers.
//!
//! Run:
//!   cargo bench -p quartzite --bench metrics -- sqlite [N]
//!   cargo bench -p quartzite --bench metrics -- postgres [N]
//! PostgreSQL comes from QUARTZITE_TEST_PG (default postgres://postgres@127.0.0.1:5432/test);
//! the bench works in a schema of its own and drops it.

use quartzite::metrics::Metrics;
use quartzite::schedule::trigger::{MisfirePolicy, TriggerKind, TriggerSpec};
use quartzite::store::model::{HistoryStatus, JobDef, TriggerPut};
use quartzite::store::{self, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Nanoseconds per fire of what the scheduler records, over `threads` threads
/// recording at once into one registry (100 distinct job labels).
fn record_ns(threads: usize, per_thread: usize) -> f64 {
    let metrics = Arc::new(Metrics::new());
    let jobs: Arc<Vec<String>> = Arc::new((0..100).map(|i| format!("bench/job-{i}")).collect());
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (metrics, jobs) = (Arc::clone(&metrics), Arc::clone(&jobs));
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    metrics.fire_started(i64::try_from(i % 7).unwrap_or(0));
                    metrics.task_ended(
                        &jobs[(i + t) % jobs.len()],
                        HistoryStatus::Success,
                        Duration::from_micros(25),
                        false,
                    );
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("recording thread");
    }
    start.elapsed().as_nanos() as f64 / (threads * per_thread) as f64
}

async fn open(backend: &str) -> (Arc<dyn Store>, Option<String>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    match backend {
        "sqlite" => {
            let url = format!("sqlite://{}", dir.path().join("metrics.db").display());
            (store::open(&url).await.expect("sqlite"), None, dir)
        }
        "postgres" => {
            let base = std::env::var("QUARTZITE_TEST_PG")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
            let schema = format!("qz_bench_metrics_{}", std::process::id());
            let admin = sqlx::PgPool::connect(&base).await.expect("postgres");
            for sql in [
                format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
                format!("CREATE SCHEMA {schema}"),
            ] {
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&admin)
                    .await
                    .expect("schema");
            }
            let url = format!("{base}?options=-c%20search_path%3D{schema}");
            (
                store::open(&url).await.expect("postgres"),
                Some(schema),
                dir,
            )
        }
        other => panic!("unknown backend {other:?}: use sqlite or postgres"),
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let backend = args.first().cloned().unwrap_or_else(|| "sqlite".into());
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100_000);

    for threads in [1, 2] {
        // Warm up, then take the median of five rounds.
        record_ns(threads, 100_000);
        let mut rounds: Vec<f64> = (0..5).map(|_| record_ns(threads, 1_000_000)).collect();
        rounds.sort_by(f64::total_cmp);
        println!(
            "recording per fire, {threads} thread(s): {:.0} ns (median of 5 x 1,000,000)",
            rounds[2]
        );
    }

    let (store, schema, _dir) = open(&backend).await;
    let far = chrono::Utc::now().timestamp_millis() + 10 * 365 * 24 * 3_600_000;
    let jobs: Vec<(JobDef, Vec<TriggerPut>)> = (0..n)
        .map(|i| {
            let key = format!("bench/m-{i}");
            let mut job = JobDef::new(&key, "noop");
            job.paused = i % 10 == 0;
            let trigger = TriggerPut {
                trigger_key: format!("{key}:at"),
                job_key: key,
                spec: TriggerSpec {
                    kind: TriggerKind::At(far),
                    start_ms: None,
                    end_ms: None,
                    misfire: MisfirePolicy::FireNow,
                },
                priority: 5,
            };
            (job, vec![trigger])
        })
        .collect();
    for chunk in jobs.chunks(10_000) {
        store.jobs_put(chunk).await.expect("jobs_put");
    }
    let metrics = Metrics::new();
    let mut took: Vec<Duration> = Vec::new();
    let mut size = 0;
    for _ in 0..7 {
        let start = Instant::now();
        let text = metrics.render(store.as_ref(), 1_500).await.expect("render");
        took.push(start.elapsed());
        size = text.len();
        assert!(text.contains(&format!(
            "quartzite_triggers{{state=\"PAUSED\"}} {}",
            n.div_ceil(10)
        )));
    }
    took.sort();
    println!(
        "{backend}: one scrape with {n} stored triggers: {:.1} ms (median of 7; {size} bytes)",
        took[3].as_secs_f64() * 1000.0
    );
    if let Some(schema) = schema {
        let base = std::env::var("QUARTZITE_TEST_PG")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let admin = sqlx::PgPool::connect(&base).await.expect("postgres");
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&admin)
            .await;
    }
}
