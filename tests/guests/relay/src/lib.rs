//! A test job for events: reports the event that started it (name, payload,
//! depth, source) and, when its data names one, emits an event in turn, so a
//! job subscribed to the event it emits makes an endless chain.
//!
//! Data: `{ "emit": "NAME", "key": "optional idempotency key", "times": 1,
//! "pad": 0 }`: `times` emits in a row (to reach the host's per-run limit),
//! each payload padded with `pad` bytes (to pass the payload limit).

use quartzite_sdk::{Context, Job, JobInfo, Outcome, Result, event, info, kv};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize, Default)]
#[serde(default)]
struct Data {
    emit: Option<String>,
    key: Option<String>,
    times: Option<u32>,
    pad: Option<usize>,
}

struct Relay;

impl Job for Relay {
    fn info() -> JobInfo {
        JobInfo::new("relay", "0.1.0").description("reports its event and emits another")
    }

    fn run(ctx: &Context) -> Result<Outcome> {
        let data: Data = ctx.data::<Option<Data>>()?.unwrap_or_default();
        let started_by = ctx.event();
        let runs = kv::get_json::<u64>("runs")?.unwrap_or(0) + 1;
        kv::set_json("runs", &runs)?;
        let depth = started_by.as_ref().map_or(0, |e| e.depth);
        let mut emitted = None;
        if let Some(name) = &data.emit {
            let pad = "x".repeat(data.pad.unwrap_or(0));
            for _ in 0..data.times.unwrap_or(1) {
                let payload = json!({ "from": ctx.job_key, "depth": depth, "pad": pad });
                let id = match &data.key {
                    Some(key) => event::emit_with_key(name, key, &payload)?,
                    None => event::emit(name, &payload)?,
                };
                info!("emitted {name} as {id}");
                emitted = Some(id);
            }
        }
        Outcome::details(&json!({
            "event": started_by.map(|e| json!({
                "id": e.id,
                "name": e.name,
                "payload": e.payload::<Value>().unwrap_or(Value::Null),
                "key": e.key,
                "depth": e.depth,
                "source_job": e.source_job,
            })),
            "emitted": emitted,
            "runs": runs,
        }))
    }
}

quartzite_sdk::export_job!(Relay);
