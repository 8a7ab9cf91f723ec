// Write Quartzite jobs in JavaScript.
//
//   import { Job, kv, log } from "quartzite-sdk";
//
//   export default class Counter extends Job {
//     static info = { name: "counter", version: "1.0.0" };
//     run(ctx) {
//       const count = (kv.getJson("count") ?? 0) + 1;
//       kv.setJson("count", count);
//       log.info(`run number ${count}`);
//       return { count };                  // the run's details in history
//     }
//   }
//
// `config` reads the job's config grants; `http` is a blocking client for the
// URLs its http grants allow (see config.js and http.js).
//
// `quartzite-build-js job.js -o job.wasm` turns the module into a component;
// TestHost from "quartzite-sdk/testing" runs it under node:test. The bindings
// of the component stay inside this package.

import { backend } from "./host.js";
export { config } from "./config.js";
export { http, HttpError, Response as HttpResponse, Request as HttpRequest } from "./http.js";

/** A transient failure: the job's retry policy applies. Any other error a run
 * throws is treated as a retry too; throw Fatal when trying again cannot help. */
export class Retry extends Error {
  constructor(message) {
    super(message);
    this.name = "Retry";
  }
}

/** A permanent failure: the fire is never retried. */
export class Fatal extends Error {
  constructor(message) {
    super(message);
    this.name = "Fatal";
  }
}

/** Whether fires of a job may overlap; the operator's setting wins. */
export const Overlap = Object.freeze({ ALLOW: "allow", FORBID: "forbid", SKIP: "skip" });

/** A successful run's report: `details` (any JSON value) go to the task
 * history; `newData`, when given, replaces the job data for later fires. A run
 * may also return a plain value, which becomes the details. */
export class Outcome {
  constructor(details, options = {}) {
    this.details = details;
    this.hasNewData = Object.hasOwn(options, "newData");
    this.newData = options.newData;
  }
}

/** What the host says about the fire being run. */
export class Context {
  constructor(fields) {
    this.jobKey = fields.jobKey;
    this.triggerKey = fields.triggerKey;
    /** Unique per fire and stable across retries and recovery: an idempotency key. */
    this.fireId = fields.fireId;
    this.scheduledAtMs = Number(fields.scheduledAt);
    this.firedAtMs = Number(fields.firedAt);
    /** 1 for the first run of a fire, 2 for its first retry, and so on. */
    this.attempt = fields.attempt;
    /** True when this run re-executes a fire whose node died mid-run. */
    this.recovering = fields.recovering;
    this.dataJson = fields.data;
  }

  /** The job data parsed from JSON (an object for a manifest's `data = {...}`),
   * null for a job without data. Throws Fatal when it is not JSON. */
  get data() {
    const text = this.dataJson.trim();
    if (text === "") return null;
    try {
      return JSON.parse(text);
    } catch (e) {
      throw new Fatal(`job data is not JSON: ${e.message}`);
    }
  }

  /** When the fire was due. */
  get scheduledAt() {
    return new Date(this.scheduledAtMs);
  }

  /** When this run started. */
  get firedAt() {
    return new Date(this.firedAtMs);
  }

  /** The event that started this fire; null for a fire of any other trigger. */
  get event() {
    return backend().triggerEvent();
  }
}

/** The event that started a fire. */
export class Event {
  constructor({ id, name, payloadJson, key, depth, emittedAtMs, sourceJob }) {
    Object.assign(this, { id, name, payloadJson, key, depth, emittedAtMs, sourceJob });
  }

  /** The payload, parsed from JSON. */
  get payload() {
    return JSON.parse(this.payloadJson);
  }
}

/** Extend this: set `static info = { name, version, description?,
 * defaultSchedule?, overlap? }` (or override describe()) and implement run(ctx). */
export class Job {
  describe() {
    const info = this.constructor.info;
    if (!info || typeof info.name !== "string" || typeof info.version !== "string") {
      throw new Error(`${this.constructor.name} needs static info = { name, version }`);
    }
    return info;
  }

  run(_ctx) {
    throw new Error(`${this.constructor.name}.run is not implemented`);
  }
}

/** True once the run should stop early: its timeout was reached or the node is
 * shutting down. Long jobs check it between steps and return. */
export function cancelled() {
  return backend().cancelled();
}

/** The current time: the host's clock, or the fake clock of a TestHost. */
export function now() {
  return backend().now();
}

/** A held cluster lock; release() it (or use `using`), and the host releases it
 * when the run ends in any way. */
export class Lock {
  constructor(name, fencingToken, release) {
    this.name = name;
    /** Grows every time the lock changes hands. */
    this.fencingToken = fencingToken;
    this._release = release;
  }

  release() {
    const release = this._release;
    this._release = null;
    if (release) release();
  }

  [Symbol.dispose]() {
    this.release();
  }
}

/** Takes the cluster-wide lock `name`, waiting at most `timeoutMs`. Throws Retry
 * when it stays taken or the run is cancelled, Fatal when the name is refused. */
export function lock(name, timeoutMs = 10_000) {
  const ms = Math.max(0, Math.min(Math.trunc(timeoutMs), 2 ** 32 - 1));
  return backend().lock(String(name), ms);
}

/** Runs `body(lock)` holding lock `name`, releasing it afterwards. */
export function withLock(name, timeoutMs, body) {
  const held = lock(name, timeoutMs);
  try {
    return body(held);
  } finally {
    held.release();
  }
}

/** Emits the event `name` with `payload` (as JSON): every job subscribed to it
 * fires once. Returns the event's id. A retried run emitting the same events in
 * the same order emits them once; with `key`, that key for that name again
 * starts nothing. */
export function emit(name, payload = null, key = undefined) {
  let text;
  try {
    text = JSON.stringify(payload ?? null);
  } catch (e) {
    throw new Fatal(`cannot serialize the payload of ${JSON.stringify(name)}: ${e.message}`);
  }
  return backend().emit(String(name), text, key);
}

import { utf8Decode, utf8Encode } from "./utf8.js";

/** The job's durable key-value state, kept by the host between runs. Keys are
 * per job: two jobs never see each other's keys. */
export const kv = Object.freeze({
  /** The raw bytes under `key` (a Uint8Array), or null. */
  get(key) {
    return backend().kvGet(String(key));
  },
  /** Stores bytes (a string is stored as UTF-8) under `key`. */
  set(key, value) {
    const bytes = typeof value === "string" ? utf8Encode(value) : Uint8Array.from(value);
    backend().kvSet(String(key), bytes);
  },
  /** Deletes `key`; returns whether it existed. */
  delete(key) {
    return backend().kvDelete(String(key));
  },
  /** The JSON value stored under `key` by setJson, or null. */
  getJson(key) {
    const raw = this.get(key);
    if (raw === null) return null;
    try {
      return JSON.parse(utf8Decode(raw));
    } catch (e) {
      throw new Fatal(`kv key ${JSON.stringify(key)} does not hold JSON: ${e.message}`);
    }
  },
  /** Stores `value` as JSON under `key`. */
  setJson(key, value) {
    this.set(key, JSON.stringify(value));
  },
});

const LEVELS = ["trace", "debug", "info", "warn", "error"];

/** Log lines, tagged by the host with the job key and fire id. */
export const log = Object.freeze({
  log(level, message) {
    if (!LEVELS.includes(level)) throw new Error(`log level ${level} is not one of ${LEVELS}`);
    backend().log(level, String(message));
  },
  trace: (m) => log.log("trace", m),
  debug: (m) => log.log("debug", m),
  info: (m) => log.log("info", m),
  warn: (m) => log.log("warn", m),
  error: (m) => log.log("error", m),
});
