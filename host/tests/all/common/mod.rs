//! Helpers shared by the integration test binaries: where the built guests are,
//! the test PostgreSQL, and waiting on a condition instead of sleeping.

#![allow(dead_code)] // not every helper is used by every topic

pub mod server;

/// Defines `mod $name { sqlite, postgres }`, each running `$name(Backend::..)`
/// of the test file (which has its own `Backend` with both variants).
#[allow(unused_macros)] // not every test binary runs on both stores
macro_rules! on_both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(super::Backend::Postgres).await;
            }
        }
    };
}

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The machine's share of tests that load it (several server processes, a
/// browser, guest toolchains): all topics are one binary, and two such tests
/// side by side on two cores starve each other's nodes into misfires and
/// slow stops. A load test holds its weight of the share while it runs:
/// [`HEAVY`] (the share) for the cluster load tests, which run alone among
/// load tests; [`LOADED`] for the others, which run at most two at a time.
/// Tests that load nothing take nothing.
static LOAD_SHARE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
pub const HEAVY: u32 = 2;
pub const LOADED: u32 = 1;

/// Waits for `weight` of the load share (async tests).
pub async fn load_share(weight: u32) -> tokio::sync::SemaphorePermit<'static> {
    LOAD_SHARE
        .acquire_many(weight)
        .await
        .expect("the load share is never closed")
}

/// [`load_share`] for tests without a runtime of their own.
pub fn load_share_blocking(weight: u32) -> tokio::sync::SemaphorePermit<'static> {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime to wait on")
        .block_on(load_share(weight))
}

/// Where `./dev.sh guests` puts the components.
pub fn guest_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("QUARTZITE_GUEST_DIR") {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("wasm32-wasip2/release")
}

/// The path of a built guest; fails loudly when it was not built.
pub fn wasm(name: &str) -> PathBuf {
    let path = guest_dir().join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: build the guests with `./dev.sh guests` (the test command does it)",
        path.display()
    );
    path
}

/// The PostgreSQL the store tests use: `QUARTZITE_TEST_PG` or the machine's.
pub fn pg_url() -> String {
    std::env::var("QUARTZITE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Creates an empty schema of its own for one test and returns a URL whose
/// connections use it.
pub async fn pg_schema(prefix: &str) -> (String, String) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let schema = format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let base = pg_url();
    let admin = sqlx::PgPool::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {base} is required for these tests: {e}"));
    for sql in [
        format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
        format!("CREATE SCHEMA {schema}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&admin)
            .await
            .expect("create the test schema");
    }
    (
        format!("{base}?options=-c%20search_path%3D{schema}"),
        schema,
    )
}

/// Drops a schema made by [`pg_schema`].
pub async fn pg_drop(schema: &str) {
    let admin = sqlx::PgPool::connect(&pg_url()).await.expect("PostgreSQL");
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&admin)
        .await
        .expect("drop the test schema");
}

/// Polls `done` until it holds, failing after `limit` with `what`.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !done().await {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until a fire in flight (claimed or waiting) satisfies `wanted`.
pub async fn wait_for_fire<S>(
    store: &S,
    limit: Duration,
    what: &str,
    wanted: impl Fn(&quartzite::store::model::FireRow) -> bool,
) where
    S: quartzite::store::Store + ?Sized,
{
    let wanted = &wanted;
    wait_until(limit, what, || async move {
        store
            .fire_running()
            .await
            .unwrap_or_default()
            .iter()
            .any(wanted)
    })
    .await;
}

/// Emits `name` as the operator and returns the id of the one fire it started.
pub async fn emit_one<S>(store: &S, name: &str) -> String
where
    S: quartzite::store::Events + ?Sized,
{
    match store
        .event_emit(&quartzite::store::events::EventPut::operator(
            name, "{}", None,
        ))
        .await
        .expect("emit")
    {
        quartzite::store::events::EmitOutcome::Accepted { fires, .. } if fires.len() == 1 => {
            fires[0].fire_id.clone()
        }
        other => panic!("emit {name}: {other:?}"),
    }
}

/// A job's history, newest first.
pub async fn history_of<S>(store: &S, job: &str) -> Vec<quartzite::store::model::HistoryEntry>
where
    S: quartzite::store::Scheduling + ?Sized,
{
    let filter = quartzite::store::model::HistoryFilter {
        job_key: Some(job.into()),
        limit: 100_000,
        ..Default::default()
    };
    store.history_list(&filter).await.expect("history")
}

/// Waits until `job` has a successful run, failing after `limit`.
pub async fn wait_for_success<S>(store: &S, job: &str, limit: Duration)
where
    S: quartzite::store::Scheduling + ?Sized,
{
    use quartzite::store::model::HistoryStatus;
    let start = Instant::now();
    while !history_of(store, job)
        .await
        .iter()
        .any(|h| h.status == HistoryStatus::Success)
    {
        assert!(
            start.elapsed() < limit,
            "timed out waiting for a successful run of {job}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A child process killed (if still running) and reaped when dropped, so a
/// failed test leaves no server behind.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// A loopback TCP port free at the time of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The most of `intervals` (start, end) open at one instant; one ending at
/// the instant another starts does not overlap it.
pub fn most_at_once(intervals: impl IntoIterator<Item = (i64, i64)>) -> usize {
    let mut edges: Vec<(i64, i32)> = intervals
        .into_iter()
        .flat_map(|(start, end)| [(start, 1), (end, -1)])
        .collect();
    edges.sort_unstable();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    usize::try_from(most).unwrap_or(0)
}

/// The most of `times` within any window of `per_ms` (a time at `t` and one
/// at `t + per_ms` are in different windows).
pub fn most_in_window(times: &mut [i64], per_ms: i64) -> usize {
    times.sort_unstable();
    let mut most = 0;
    let mut first = 0;
    for last in 0..times.len() {
        while times[last] - times[first] >= per_ms {
            first += 1;
        }
        most = most.max(last - first + 1);
    }
    most
}
