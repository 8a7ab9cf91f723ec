//! Checks the cron module against fire times computed by Quartz 2.3.2 itself.

use chrono::{DateTime, Utc};
use quartzite::schedule::cron::CronSchedule;
use serde::Deserialize;

/// The Quartz vectors, kept in the repository (provenance: tests/data/README.md).
const VECTORS_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/quartz-cron-vectors.json"
);

#[derive(Deserialize)]
struct Vector {
    expr: String,
    tz: String,
    after: String,
    #[serde(default)]
    next: Vec<String>,
    #[serde(default)]
    error: bool,
}

fn instant(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("bad instant {text:?} in vectors: {e}"))
        .with_timezone(&Utc)
}

/// Returns a description of the mismatch, if any. `requested` is how many fire
/// times the generator asked Quartz for: a shorter list means the schedule ended.
fn check(vector: &Vector, requested: usize) -> Option<String> {
    let label = format!("{:?} in {} after {}", vector.expr, vector.tz, vector.after);
    let parsed = CronSchedule::parse(&vector.expr, &vector.tz);
    if vector.error {
        return parsed
            .ok()
            .map(|_| format!("{label}: accepted, but Quartz rejects it"));
    }
    let schedule = match parsed {
        Ok(schedule) => schedule,
        Err(e) => return Some(format!("{label}: rejected ({e}), but Quartz accepts it")),
    };
    let expected: Vec<DateTime<Utc>> = vector.next.iter().map(|t| instant(t)).collect();
    let mut actual = Vec::with_capacity(requested);
    let mut cursor = instant(&vector.after);
    while actual.len() < requested {
        match schedule.next_after(cursor) {
            Some(t) => {
                actual.push(t);
                cursor = t;
            }
            None => break,
        }
    }
    (actual != expected).then(|| {
        let show = |v: &[DateTime<Utc>]| {
            v.iter()
                .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "{label}:\n    expected [{}]\n    got      [{}]",
            show(&expected),
            show(&actual)
        )
    })
}

#[test]
fn quartz_vectors() {
    let text = std::fs::read_to_string(VECTORS_PATH)
        .unwrap_or_else(|e| panic!("cannot read {VECTORS_PATH}: {e}"));
    let vectors: Vec<Vector> = serde_json::from_str(&text).expect("vectors are valid JSON");
    assert!(!vectors.is_empty(), "no vectors in {VECTORS_PATH}");

    let requested = vectors.iter().map(|v| v.next.len()).max().unwrap_or(0);
    let failures: Vec<String> = vectors.iter().filter_map(|v| check(v, requested)).collect();
    let passed = vectors.len() - failures.len();
    println!("{passed}/{} Quartz cron vectors match", vectors.len());
    assert!(
        failures.is_empty(),
        "{} of {} Quartz cron vectors do not match:\n{}",
        failures.len(),
        vectors.len(),
        failures.join("\n")
    );
}
