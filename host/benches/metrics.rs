//! What metrics cost: the per-fire recording on the scheduler's hot path
//! (the job's handle, looked up or held; its counters, gauges, duration and
//! lag histograms), and one `/metrics` scrape, which
//! reads the trigger-state and node gauges from a store holding N triggers.
//!
//! Run:
//!   cargo bench -p quartzite --bench metrics -- sqlite [N]
//!   cargo bench -p quartzite --bench metrics -- postgres [N]
//! PostgreSQL comes from QUARTZITE_TEST_PG (default postgres://postgres@127.0.0.1:5432/test);
//! the bench works in a schema of its own and drops it.

/// As the `quartzite` binary: the bench measures what a node runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use quartzite::metrics::Metrics;
use quartzite::store::model::{HistoryStatus, JobDef, TriggerPut};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod support;
use support::{drop_schema, one_shot, open};

/// Nanoseconds per fire of what the scheduler records, over `threads` threads
/// recording at once into one registry (100 distinct job labels). `lookup`:
/// each fire takes its job's handle from the registry's map, as the
/// scheduler does when a claim's job differs from the previous claim's;
/// otherwise each thread records through handles it took once.
fn record_ns(threads: usize, per_thread: usize, lookup: bool) -> f64 {
    let metrics = Arc::new(Metrics::new());
    let jobs: Arc<Vec<String>> = Arc::new((0..100).map(|i| format!("bench/job-{i}")).collect());
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (metrics, jobs) = (Arc::clone(&metrics), Arc::clone(&jobs));
            std::thread::spawn(move || {
                let taken: Vec<_> = jobs.iter().map(|j| metrics.job(j)).collect();
                for i in 0..per_thread {
                    let k = (i + t) % jobs.len();
                    let job = if lookup {
                        metrics.job(&jobs[k])
                    } else {
                        Arc::clone(&taken[k])
                    };
                    metrics.fire_started(
                        &job,
                        Some(i64::try_from(i).unwrap_or(0) * 1000),
                        Duration::from_micros((i % 7) as u64),
                        1,
                    );
                    metrics.task_ended(
                        &job,
                        HistoryStatus::Success,
                        Duration::from_micros(25),
                        false,
                        1_700_000_000_000,
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

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let backend = args.first().cloned().unwrap_or_else(|| "sqlite".into());
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100_000);

    for (lookup, how) in [(true, "handle looked up"), (false, "handle held")] {
        for threads in [1, 2] {
            // Warm up, then take the median of five rounds.
            record_ns(threads, 100_000, lookup);
            let mut rounds: Vec<f64> = (0..5)
                .map(|_| record_ns(threads, 1_000_000, lookup))
                .collect();
            rounds.sort_by(f64::total_cmp);
            println!(
                "recording per fire, {how}, {threads} thread(s): {:.0} ns (median of 5 x 1,000,000)",
                rounds[2]
            );
        }
    }

    let (store, schema, _dir) = open(&backend, "metrics").await;
    let far = chrono::Utc::now().timestamp_millis() + 10 * 365 * 24 * 3_600_000;
    let jobs: Vec<(JobDef, Vec<TriggerPut>)> = (0..n)
        .map(|i| {
            let (mut job, triggers) = one_shot(i, far);
            job.paused = i % 10 == 0;
            (job, triggers)
        })
        .collect();
    for chunk in jobs.chunks(10_000) {
        store.jobs_put(chunk).await.expect("jobs_put");
    }
    let metrics = Metrics::new();
    // As the node holding the alert lock: the one that reads the gauges.
    metrics.set_cluster_reporter(true);
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
    drop_schema(schema).await;
}
