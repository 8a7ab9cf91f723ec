//! A manifest's job turned into the store's job and triggers: the manifest
//! and the store share the domain's types, so this is a matter of fields.

use crate::manifest;
use crate::schedule::trigger::TriggerSpec;
use crate::store::model::{JobDef, PauseNote, TriggerPut};

/// Converts a manifest job to the store's job and triggers.
pub fn job_from_manifest(decl: &manifest::JobDecl) -> (JobDef, Vec<TriggerPut>) {
    let key = decl.key();
    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let job = JobDef {
        job_key: key.clone(),
        module: decl.module.to_string(),
        data: decl.data.to_string(),
        overlap: decl.overlap,
        retry: decl.retry.clone(),
        timeout_ms: ms(decl.timeout),
        max_memory: decl.max_memory,
        requests_recovery: decl.requests_recovery,
        priority: i64::from(decl.priority),
        paused: decl.paused,
        source: "manifest".into(),
        kv_max_keys: decl.kv_max_keys,
        kv_max_bytes: decl.kv_max_bytes,
        grants: None,
        pause: PauseNote::default(),
        pause_on_failure: decl.pause_on_failure,
        flow: decl.flow.clone(),
    }
    .with_grants(&decl.grants);
    let triggers = decl
        .triggers
        .iter()
        .map(|t| TriggerPut {
            trigger_key: format!("{key}:{}", t.name),
            job_key: key.clone(),
            spec: TriggerSpec {
                kind: t.kind.clone(),
                start_ms: t.start.map(|s| s.timestamp_millis()),
                end_ms: t.end.map(|e| e.timestamp_millis()),
                misfire: t.misfire,
                jitter_ms: u64::try_from(t.jitter.as_millis()).unwrap_or(u64::MAX),
                calendars: t.calendars.clone(),
            },
            priority: i64::from(t.priority.unwrap_or(decl.priority)),
        })
        .collect();
    (job, triggers)
}
