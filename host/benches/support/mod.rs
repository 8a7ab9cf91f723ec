//! Set-up shared by the benches: a store of either kind in a place of its own,
//! and one-shot jobs to load into it.

use quartzite::schedule::trigger::{MisfirePolicy, TriggerKind, TriggerSpec};
use quartzite::store::model::{JobDef, TriggerPut};
use quartzite::store::{self, Store};
use std::sync::Arc;

/// The PostgreSQL the benches use.
pub fn pg_base() -> String {
    std::env::var("QUARTZITE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Opens a fresh store: a SQLite file `TAG.db` in a temp dir, or a PostgreSQL
/// schema of its own (returned, for [`drop_schema`]).
pub async fn open(backend: &str, tag: &str) -> (Arc<dyn Store>, Option<String>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    match backend {
        "sqlite" => {
            let url = format!(
                "sqlite://{}",
                dir.path().join(format!("{tag}.db")).display()
            );
            (store::open(&url).await.expect("sqlite"), None, dir)
        }
        "postgres" => {
            let base = pg_base();
            let schema = format!("qz_bench_{}_{tag}", std::process::id());
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

/// Drops what [`open`] created on PostgreSQL.
pub async fn drop_schema(schema: Option<String>) {
    if let Some(schema) = schema {
        let base = pg_base();
        let admin = sqlx::PgPool::connect(&base).await.expect("postgres");
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&admin)
            .await;
    }
}

/// Job `bench/job-I` with one trigger firing once at `at_ms`.
pub fn one_shot(i: usize, at_ms: i64) -> (JobDef, Vec<TriggerPut>) {
    let key = format!("bench/job-{i}");
    let job = JobDef::new(&key, "noop");
    let trigger = TriggerPut {
        trigger_key: format!("{key}:at"),
        job_key: key,
        spec: TriggerSpec {
            kind: TriggerKind::At(at_ms),
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
