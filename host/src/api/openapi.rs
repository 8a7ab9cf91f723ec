//! The OpenAPI 3.0 document of the admin API, written by hand next to the
//! routes it describes and served at `/api/v1/openapi.json`. A test checks that
//! it names exactly the routes of [`super::routes`].

use serde_json::{Value, json};

fn param(name: &str, place: &str, description: &str, schema: Value) -> Value {
    json!({ "name": name, "in": place, "required": place == "path", "description": description, "schema": schema })
}

fn string() -> Value {
    json!({ "type": "string" })
}

fn job_path() -> Vec<Value> {
    vec![
        param("group", "path", "The job's group.", string()),
        param("name", "path", "The job's name.", string()),
    ]
}

fn op(summary: &str, params: Vec<Value>, ok: &str, ok_schema: &str, mutating: bool) -> Value {
    let mut responses = json!({
        ok: { "description": "Success.", "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{ok_schema}") } } } },
        "400": { "$ref": "#/components/responses/Error" },
        "401": { "$ref": "#/components/responses/Error" },
        "503": { "$ref": "#/components/responses/Error" },
    });
    if mutating {
        responses["404"] = json!({ "$ref": "#/components/responses/Error" });
        responses["422"] = json!({ "$ref": "#/components/responses/Error" });
    }
    json!({ "summary": summary, "parameters": params, "responses": responses })
}

/// Marks an operation kept only under an old name.
fn deprecated(mut operation: Value) -> Value {
    operation["deprecated"] = json!(true);
    operation
}

/// A JSON body the operation also takes without.
fn optional_body(mut operation: Value, schema: Value) -> Value {
    operation["requestBody"] =
        json!({ "required": false, "content": { "application/json": { "schema": schema } } });
    operation
}

fn with_body(mut operation: Value, content_type: &str, schema: Value) -> Value {
    operation["requestBody"] =
        json!({ "required": true, "content": { content_type: { "schema": schema } } });
    operation
}

fn list_query() -> Vec<Value> {
    vec![
        param(
            "limit",
            "query",
            "Rows per page, 1 to 1000 (default 50).",
            json!({ "type": "integer" }),
        ),
        param(
            "cursor",
            "query",
            "The next_cursor of the previous page.",
            string(),
        ),
    ]
}

/// The document.
pub fn document() -> Value {
    let job_spec = json!({ "$ref": "#/components/schemas/JobSpec" });
    let backfill_body = json!({ "type": "object", "required": ["from", "to"], "properties": { "from": { "type": "string", "format": "date-time", "description": "Included." }, "to": { "type": "string", "format": "date-time", "description": "Excluded; at most now." }, "overlap": { "type": "string", "enum": ["allow", "buffer", "skip"], "description": "allow: side by side, whatever the job's policy; buffer (default): one at a time in scheduled order, waiting for any run of the job; skip: a time whose claim finds a run of the job running is recorded as skipped." }, "max": { "type": "integer", "description": "Refuse a range of more times (default 1000, at most 100000)." }, "dry_run": { "type": "boolean", "description": "List the times, create nothing." } } });
    let replay_body = json!({ "type": "object", "required": ["job", "since"], "properties": { "job": { "type": "string", "description": "GROUP/NAME, GROUP/* or *." }, "status": { "type": "string", "description": "Comma-separated history statuses (default failed)." }, "since": { "type": "string", "description": "RFC 3339, or a duration before now (24h)." }, "until": { "type": "string", "description": "RFC 3339, or a duration before now." }, "limit": { "type": "integer", "description": "History rows read, 1 to 10000 (default 1000)." } } });
    let cancel_body = json!({ "type": "object", "required": ["job"], "properties": { "job": { "type": "string", "description": "GROUP/NAME, GROUP/* or *." }, "trigger": { "type": "string", "description": "Only this trigger key." }, "before": { "type": "string", "description": "Only fires scheduled before: RFC 3339, or a duration before now." }, "origin": { "type": "string", "enum": ["plain", "backfill", "replay"] }, "reason": { "type": "string" } } });
    let pause_body = json!({ "type": "object", "properties": {
        "note": { "type": "string", "description": "Why (at most 500 bytes)." },
        "until": { "type": "string", "description": "When the job resumes by itself: RFC 3339, or a duration from now (e.g. 2h)." }
    } });
    let mut history = list_query();
    history.push(param("job", "query", "Only this job's rows.", string()));
    history.push(param(
        "status",
        "query",
        "success, failed, retried, timeout, skipped, cancelled or misfired.",
        string(),
    ));
    let mut audit = list_query();
    audit.push(param("actor", "query", "Only this actor's rows.", string()));
    audit.push(param(
        "action",
        "query",
        "Only this action, e.g. job.create.",
        string(),
    ));
    let stats = vec![
        param(
            "minutes",
            "query",
            "The window: the last this many minutes, 1 to 10080 (default 60).",
            json!({ "type": "integer" }),
        ),
        param(
            "bucket",
            "query",
            "Bucket width in seconds, 1 to 86400 (default 60); at most 1440 buckets.",
            json!({ "type": "integer" }),
        ),
    ];
    let module_query = vec![
        param(
            "name",
            "query",
            "Store under this name [default: what describe() says].",
            string(),
        ),
        param(
            "version",
            "query",
            "Store as this version [default: what describe() says].",
            string(),
        ),
    ];
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Quartzite admin API",
            "version": "1",
            "description": "Jobs, triggers, modules, history, fires in flight and the cluster of a Quartzite scheduler. \
                Mutating calls need `Authorization: Bearer TOKEN` when the server has an admin token; every call does \
                when it listens beyond loopback. Every mutating call is written to the audit log."
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "responses": {
                "Error": { "description": "An error.", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } }
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": { "error": { "type": "object", "required": ["code", "message"], "properties": {
                        "code": { "type": "string", "description": "Stable: bad_request, invalid_field, not_found, conflict, unauthorized, unsupported_media_type, payload_too_large, module_rejected, no_route, method_not_allowed, not_ready, store_unavailable." },
                        "message": { "type": "string" },
                        "field": { "type": "string", "description": "The field at fault, when one is." }
                    } } }
                },
                "JobSpec": {
                    "type": "object",
                    "description": "One job with one schedule: exactly one of cron, every, at.",
                    "required": ["module"],
                    "additionalProperties": false,
                    "properties": {
                        "key": { "type": "string", "description": "GROUP/NAME; from the path on PUT." },
                        "module": { "type": "string", "description": "NAME, NAME@VERSION or sha256:DIGEST." },
                        "cron": { "type": "string" }, "tz": { "type": "string" },
                        "every": { "type": "string", "example": "30s" }, "repeat": { "type": "integer" },
                        "at": { "type": "string", "format": "date-time" },
                        "data": {},
                        "overlap": { "type": "string", "enum": ["allow", "forbid", "skip", "buffer-one", "cancel-other"] },
                        "max_attempts": { "type": "integer", "minimum": 1 },
                        "timeout": { "type": "string", "example": "60s" },
                        "misfire": { "type": "string", "enum": ["fire-now", "skip", "fire-once"] },
                        "pause_on_failure": { "type": "integer", "minimum": 1, "description": "Pause the job after this many failed runs in a row." },
                        "concurrency": { "type": "object", "required": ["limit"], "description": "At most limit fires per key running at once, cluster-wide; key is a template over job, trigger, data.PATH, event.name, event.key, event.payload.PATH (default {{ job }}).", "properties": { "key": { "type": "string", "example": "{{ event.payload.account_id }}" }, "limit": { "type": "integer", "minimum": 1 } } },
                        "rate": { "type": "object", "required": ["limit", "per"], "description": "At most limit fires per key starting in any window of per (up to 24h); fires over the rate wait.", "properties": { "key": { "type": "string" }, "limit": { "type": "integer", "minimum": 1 }, "per": { "type": "string", "example": "1s" } } },
                        "debounce": { "description": "Event jobs: events of a key within the window run once, after the last, with its payload: a duration (\"5s\") or { window, key }.", "oneOf": [ { "type": "string", "example": "5s" }, { "type": "object", "required": ["window"], "properties": { "window": { "type": "string" }, "key": { "type": "string" } } } ] },
                        "singleton": { "description": "Event jobs: one fire per key at a time; an event while one runs is queued once (later ones replace its event): true or { key }.", "oneOf": [ { "type": "boolean" }, { "type": "object", "properties": { "key": { "type": "string" } } } ] },
                        "jitter": { "type": "string", "description": "Each fire up to this long after its time, e.g. 30s; never at or past the next fire." },
                        "calendar": { "oneOf": [ { "type": "string" }, { "type": "array", "items": { "type": "string" } } ], "description": "Exclusion calendars (stored names) whose excluded times the trigger does not fire at." },
                        "requests_recovery": { "type": "boolean" },
                        "paused": { "type": "boolean" },
                        "grants": { "type": "object", "description": "What the job may do beyond its sandbox: http (URL patterns), emit (event name patterns), config (string map), secret (list of {name, url, header, format}), allow_private, http_limits." }
                    }
                },
                "CalendarSpec": {
                    "type": "object",
                    "description": "An exclusion calendar: a kind and the fields of that kind. Times it excludes are not fire times of the triggers naming it.",
                    "required": ["kind"],
                    "additionalProperties": false,
                    "properties": {
                        "kind": { "type": "string", "enum": ["holiday", "weekly", "daily", "cron", "rrule"] },
                        "tz": { "type": "string", "description": "IANA zone the dates and times of day are read in (default UTC)." },
                        "base": { "type": "string", "description": "Another calendar whose exclusions this one adds to its own." },
                        "description": { "type": "string" },
                        "dates": { "type": "array", "items": { "type": "string", "format": "date" }, "description": "holiday: whole local days." },
                        "days": { "type": "array", "items": { "type": "string" }, "description": "weekly: MON ... SUN." },
                        "window": { "type": "string", "example": "22:00-06:00", "description": "daily: [start, end) each day, may cross midnight." },
                        "invert": { "type": "boolean", "description": "daily: exclude every time outside the window instead." },
                        "cron": { "type": "string", "description": "cron: a Quartz expression; the seconds it matches are excluded." },
                        "rrule": { "type": "string", "example": "FREQ=WEEKLY;BYDAY=MO", "description": "rrule: an RFC 5545 RRULE value." },
                        "dtstart": { "type": "string", "example": "2030-01-01T09:00:00", "description": "rrule: first occurrence, local time (default: midnight of the day stored)." },
                        "duration": { "type": "string", "example": "1h", "description": "rrule: how long each occurrence excludes (default 1s)." }
                    }
                },
                "Object": { "type": "object" },
                "Stats": { "type": "object", "properties": {
                    "from_ms": { "type": "integer" }, "to_ms": { "type": "integer" }, "now_ms": { "type": "integer" },
                    "bucket_seconds": { "type": "integer" },
                    "lag_attempts": { "type": "string", "enum": ["first"], "description": "The attempts the lag figures cover: first attempts (a retry starts late by its backoff)." },
                    "lag_statuses": { "type": "array", "items": { "type": "string" }, "description": "The history statuses of the runs the lag figures cover." },
                    "buckets": { "type": "array", "items": { "type": "object", "properties": {
                        "start_ms": { "type": "integer" }, "start": { "type": "string", "format": "date-time" },
                        "total": { "type": "integer" }, "failures": { "type": "integer" },
                        "counts": { "type": "object", "additionalProperties": { "type": "integer" } },
                        "lag_samples": { "type": "integer" },
                        "lag_p50_ms": { "type": "integer", "nullable": true },
                        "lag_p99_ms": { "type": "integer", "nullable": true },
                        "lag_max_ms": { "type": "integer", "nullable": true }
                    } } }
                } },
                "Items": { "type": "object", "properties": { "items": { "type": "array", "items": { "type": "object" } } } },
                "Page": { "type": "object", "properties": {
                    "items": { "type": "array", "items": { "type": "object" } },
                    "next_cursor": { "type": "string", "nullable": true },
                    "total": { "type": "integer" }
                } }
            }
        },
        "security": [ { "bearer": [] } ],
        "paths": {
            "/metrics": { "get": { "summary": "Prometheus metrics (text format 0.0.4).", "responses": { "200": { "description": "Metrics.", "content": { "text/plain": { "schema": { "type": "string" } } } } } } },
            "/api/v1/openapi.json": { "get": op("This document.", vec![], "200", "Object", false) },
            "/api/v1/jobs": {
                "get": op("Jobs with their triggers and next fire.", vec![], "200", "Items", false),
                "post": with_body(op("Create a job (409 if it exists).", vec![], "201", "Object", true), "application/json", job_spec.clone())
            },
            "/api/v1/jobs/{group}/{name}": {
                "get": op("A job, its triggers and its latest history.", job_path(), "200", "Object", false),
                "put": with_body(op("Create or replace a job and its trigger.", job_path(), "200", "Object", true), "application/json", job_spec),
                "delete": op("Delete a job, its triggers and its fires not yet running.", job_path(), "200", "Object", true)
            },
            "/api/v1/jobs/{group}/{name}/pause": { "post": optional_body(op("Pause a job; the optional body says why and until when.", job_path(), "200", "Object", true), pause_body.clone()) },
            "/api/v1/jobs/{group}/{name}/resume": { "post": op("Resume a job.", job_path(), "200", "Object", true) },
            "/api/v1/jobs/{group}/{name}/run-now": { "post": op("Fire a job now, once.", job_path(), "202", "Object", true) },
            "/api/v1/jobs/{group}/{name}/backfill": { "post": with_body(op("Backfill: one fire per time the job's triggers would have fired at in [from, to) (cron with its time zone and DST, every, at), each seeing its scheduled time as scheduled-at and as its wall clock. 202 with how many were created (times a fire already has are not made twice); 200 with the times for a dry run. More times than max: 422 saying how many.", job_path(), "202", "Object", true), "application/json", backfill_body.clone()) },
            "/api/v1/groups/{group}/pause": { "post": optional_body(op("Pause every job of a group; the optional body says why and until when.", vec![param("group", "path", "The group.", string())], "200", "Object", true), pause_body) },
            "/api/v1/groups/{group}/resume": { "post": op("Resume every job of a group.", vec![param("group", "path", "The group.", string())], "200", "Object", true) },
            "/api/v1/triggers": { "get": op("Triggers with state and next fire.", vec![param("job", "query", "Only this job's triggers.", string())], "200", "Items", false) },
            "/api/v1/triggers/{group}/{name}/pause": { "post": op("Pause a trigger (key GROUP/NAME:TRIGGER).", job_path(), "200", "Object", true) },
            "/api/v1/triggers/{group}/{name}/resume": { "post": op("Resume a trigger.", job_path(), "200", "Object", true) },
            "/api/v1/modules": {
                "get": op("Stored modules, newest first.", vec![param("name", "query", "Only this module's versions.", string())], "200", "Items", false),
                "post": with_body(op("Validate (compile, contract, describe) and store a module.", module_query, "201", "Object", true), "application/wasm", json!({ "type": "string", "format": "binary" }))
            },
            "/api/v1/modules/{name}/rollback": {
                "post": op("Make jobs following NAME run the previous (or given) version from their next fire; newer versions are withdrawn until pushed again.", vec![param("name", "path", "The module name.", string()), param("to", "query", "Roll back to this version [default: the one before the current].", string())], "200", "Object", true)
            },
            "/api/v1/history": { "get": op("Run history, newest first, paged.", history, "200", "Page", false) },
            "/api/v1/history/replay": { "post": with_body(op("Replay: run again, once each, the fires whose history rows match (the job's current definition, the original scheduled time as scheduled-at). A fire replayed before, or whose replay is what matched, is not started again: the answer counts started and already_replayed.", vec![], "202", "Object", true), "application/json", replay_body.clone()) },
            "/api/v1/history/{id}": { "get": op("One history entry (alerts link here).", vec![param("id", "path", "The entry's id.", string())], "200", "Object", false) },
            "/api/v1/events": { "get": op("Accepted events, newest first.", vec![param("name", "query", "Only events of this name.", string()), param("limit", "query", "1 to 1000 (default 50).", json!({ "type": "integer" }))], "200", "Items", false) },
            "/api/v1/events/{name}": {
                "post": with_body(op("Emit an event: every job subscribed to NAME fires once (202 with the fires; 200 when the operator used the key before, starting nothing; jobs' keys are their own). Stored with its fires in one transaction.", vec![param("name", "path", "The event's name.", string()), param("key", "query", "Idempotency key (or the Idempotency-Key header).", string())], "202", "Object", true), "application/json", json!({ "description": "The payload: any JSON; an empty body is null." }))
            },
            "/api/v1/secrets": { "get": op("Stored secrets: names, versions and when set; never values.", vec![], "200", "Items", false) },
            "/api/v1/secrets/{name}": {
                "put": with_body(op("Store a new version of a secret, sealed with the server's key. Write-only: no call returns a value.", vec![param("name", "path", "The secret's name.", string())], "200", "Object", true), "application/json", json!({ "type": "object", "required": ["value"], "properties": { "value": { "type": "string" } } })),
                "delete": op("Delete a secret.", vec![param("name", "path", "The secret's name.", string())], "200", "Object", true)
            },
            "/api/v1/calendars": { "get": op("Exclusion calendars.", vec![], "200", "Items", false) },
            "/api/v1/calendars/{name}": {
                "get": op("One calendar, with the triggers that use it (used_by).", vec![param("name", "path", "The calendar's name.", string())], "200", "Object", false),
                "put": with_body(op("Add or replace an exclusion calendar. Triggers using it (or a calendar based on it) have their next fire recomputed (recomputed in the answer); a missing base or a cycle of bases is 409.", vec![param("name", "path", "The calendar's name.", string())], "200", "Object", true), "application/json", json!({ "$ref": "#/components/schemas/CalendarSpec" })),
                "delete": op("Delete a calendar; 409 naming the triggers or calendars that still use it.", vec![param("name", "path", "The calendar's name.", string())], "200", "Object", true)
            },
            "/api/v1/alerts": { "get": op("Alert rules.", vec![], "200", "Items", false) },
            "/api/v1/alerts/{name}": {
                "put": with_body(op("Add or replace an alert rule.", vec![param("name", "path", "The rule's name.", string())], "200", "Object", true), "application/json", json!({ "type": "object", "required": ["on", "webhook"], "properties": { "on": { "type": "string", "enum": ["permanent-failure", "consecutive-failures", "misfire", "noop-skip"] }, "job": { "type": "string", "description": "GROUP/NAME, GROUP/* or * (default)." }, "after": { "type": "integer", "description": "consecutive-failures only: failed runs in a row." }, "webhook": { "type": "string" } } })),
                "delete": op("Delete an alert rule.", vec![param("name", "path", "The rule's name.", string())], "200", "Object", true)
            },
            "/api/v1/alerts/{name}/test": { "post": op("Send a sample alert to the rule's webhook now, recorded as a delivery.", vec![param("name", "path", "The rule's name.", string())], "200", "Object", true) },
            "/api/v1/alerts/deliveries": { "get": op("Alert deliveries, newest first.", vec![param("rule", "query", "Only this rule's.", string()), param("state", "query", "pending, sent or failed.", string()), param("limit", "query", "1 to 1000 (default 50).", json!({ "type": "integer" }))], "200", "Items", false) },
            "/api/v1/fires": { "get": op("Fires in flight: claimed by a node or due and waiting.", vec![], "200", "Items", false) },
            "/api/v1/fires/cancel": { "post": with_body(op("Bulk cancel: delete the waiting fires that match (never a claimed or running one), each recorded in history as cancelled with the reason; answers how many.", vec![], "200", "Object", true), "application/json", cancel_body.clone()) },
            "/api/v1/executions": { "get": deprecated(op("Deprecated: the old name of /api/v1/fires.", vec![], "200", "Items", false)) },
            "/api/v1/cluster/nodes": { "get": op("Nodes with their last check-in.", vec![param("dead_after_ms", "query", "Silent longer than this: dead.", json!({ "type": "integer" }))], "200", "Items", false) },
            "/api/v1/cluster/locks": { "get": op("Cluster locks held now.", vec![], "200", "Items", false) },
            "/api/v1/audit": { "get": op("The audit log, newest first, paged.", audit, "200", "Page", false) },
            "/api/v1/stats/runs": { "get": op("Run history per time bucket: rows per status, failures (failed, retried, timeout) and fire lag p50/p99/max of first attempts that ran (started minus scheduled, ms; `lag_attempts` is \"first\" and `lag_statuses` lists the statuses counted, as `quartzite_fire_lag_seconds{attempt=\"first\"}`). Buckets are aligned, oldest first, empty ones included.", stats.clone(), "200", "Stats", false) },
            "/api/v1/stats/executions": { "get": deprecated(op("Deprecated: the old name of /api/v1/stats/runs.", stats, "200", "Stats", false)) }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    #[test]
    fn the_document_names_exactly_the_routes_served() {
        let doc = super::document();
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for method in item.as_object().into_iter().flatten().map(|(m, _)| m) {
                documented.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
        let served: BTreeSet<String> = super::super::routes()
            .iter()
            .map(|(method, path, _)| format!("{method} {path}"))
            .collect();
        assert_eq!(documented, served);
    }
}
