// Run job logic natively under node:test, without building a component.
//
// TestHost plays the host: it hands the job its data, keeps kv state and
// locks in memory, captures log lines, owns a fake clock, and can cancel the
// run after a given number of cancelled() checks, serves config values and
// answers HTTP requests from stubs. It refuses what the real host refuses,
// with the same messages (see limits.js).
//
//   import { TestHost } from "quartzite-sdk/testing";
//   const host = new TestHost();
//   assert.deepEqual(host.run(Counter).details, { count: 1 });
//
//   const h = new TestHost()
//     .config("base", "https://api.example.com")
//     .stubHttp("https://api.example.com/v1/items", 200, "[1, 2, 3]");
//   assert.equal(h.run(Fetch).details, 3);
//   assert.equal(h.httpRequests[0].url, "https://api.example.com/v1/items");
//
// A request to a URL without a stub is denied (an HttpError of kind
// "denied"), as the host denies a URL no grant matches; so is a header the
// host sets itself, and past HTTP_MAX_REQUESTS requests in a run a request
// fails with kind "limit".

import { Context, Event, Fatal, Lock, Retry } from "./index.js";
import { install } from "./host.js";
import * as limits from "./limits.js";
import { Failed, instantiate, runJob } from "./run.js";
import { HttpError, Response } from "./http.js";
import { utf8Decode, utf8Encode } from "./utf8.js";

const invalid = (m) => new Fatal(`invalid argument: ${m}`);
const limitExceeded = (m) => new Fatal(`limit exceeded: ${m}`);

/** Thrown by TestHost.run when the run fails and expectOk is set. */
export class RunFailed extends Error {}

export class TestHost {
  /**
   * @param {object} [options]
   * @param {any} [options.data] the job data, sent as JSON
   * @param {string} [options.dataJson] the job data as raw JSON text
   * @param {string} [options.fireId] the fire id of every run (default: a new fire per run)
   * @param {number} [options.attempt]
   * @param {Date} [options.now] the fake clock (default 2030-01-01T00:00:00Z)
   * @param {number} [options.cancelAfterChecks] cancelled() is true from its n+1-th call on
   * @param {[string, any]} [options.event] the event that started the fire: [name, payload]
   */
  constructor(options = {}) {
    this.dataJson = options.dataJson ?? (options.data === undefined ? "" : JSON.stringify(options.data));
    this.jobKey = options.jobKey ?? "test/job";
    this.fireId = options.fireId ?? null;
    this.attempt = options.attempt ?? 1;
    this.clock = options.now ? new Date(options.now) : new Date(Date.UTC(2030, 0, 1));
    this.cancelAfterChecks = options.cancelAfterChecks ?? null;
    this.kvMaxKeys = options.kvMaxKeys ?? limits.KV_MAX_KEYS;
    this.kvMaxBytes = options.kvMaxBytes ?? limits.KV_MAX_BYTES;
    this.maxKvValue = options.maxKvValue ?? limits.MAX_KV_VALUE;
    /** @type {Map<string, Uint8Array>} */
    this.kv = new Map();
    this.logs = [];
    this.logsDropped = 0;
    this.emitted = [];
    this.held = new Map();
    this.foreign = new Set();
    this.event = null;
    if (options.event) {
      const [name, payload] = options.event;
      this.event = new Event({
        id: "test-event", name, payloadJson: JSON.stringify(payload), key: null,
        depth: 0, emittedAtMs: this.clock.getTime(), sourceJob: null,
      });
    }
    this._emittedKeys = [];
    this._nextToken = 0;
    this._runs = 0;
    this._checks = 0;
    this._emits = 0;
    this._logBytes = 0;
    this._fire = "";
    /** Config keys and values, as config grants give them. */
    this.configValues = new Map();
    /** Every request the job made (redirect hops and refused ones too), in order. */
    this.httpRequests = [];
    this._stubs = [];
    this._requestsThisRun = 0;
  }

  /** Sets config key `key`, as a config grant would. Returns the host. */
  config(key, value) {
    if (typeof key !== "string" || typeof value !== "string") {
      throw new TypeError("TestHost.config takes a string key and a string value");
    }
    this.configValues.set(key, value);
    return this;
  }

  /**
   * Answers requests to `url` (exact, or a prefix ending in `*`) with
   * `status`, `body` (a string or Uint8Array) and `headers` (default:
   * content-type: application/json). Stubbing a URL again queues another
   * answer: each is given once, in order, and the last one repeats. Returns
   * the host.
   */
  stubHttp(url, status = 200, body = "", { headers } = {}) {
    const pairs = headers === undefined
      ? [["content-type", "application/json"]]
      : typeof headers[Symbol.iterator] === "function" ? [...headers] : Object.entries(headers);
    const bytes = typeof body === "string" ? utf8Encode(body) : Uint8Array.from(body);
    return this._stub(url, new Response(Number(status), pairs, bytes));
  }

  /** Answers requests to `url` with `error`, an HttpError (a denial, a network failure...). */
  stubHttpError(url, error) {
    if (!(error instanceof HttpError)) throw new TypeError("stubHttpError takes an HttpError");
    return this._stub(url, error);
  }

  _stub(url, answer) {
    const found = this._stubs.find(([u]) => u === url);
    if (found) found[1].push(answer);
    else this._stubs.push([url, [answer]]);
    return this;
  }

  // --- what a test sets up and reads -----------------------------------

  /** Moves the fake clock forward by `ms`. */
  advance(ms) {
    this.clock = new Date(this.clock.getTime() + ms);
  }

  /** Pretends another node holds lock `name`, so the job's lock() times out. */
  holdLockElsewhere(name) {
    this.foreign.add(name);
  }

  /** The kv value under `key` parsed as JSON (null when absent). */
  kvJson(key) {
    const raw = this.kv.get(key);
    return raw === undefined ? null : JSON.parse(utf8Decode(raw));
  }

  /** The captured log messages, in order. */
  messages() {
    return this.logs.map((l) => l.message);
  }

  /**
   * Runs the job once, as the host runs one fire. Locks still held afterwards
   * are released, as the host releases them. A failed run throws RunFailed
   * unless `expectOk` is false.
   * @returns {{ok: boolean, details?: any, newData?: any, hasNewData?: boolean, retryable?: boolean, message?: string}}
   */
  run(JobClass, { expectOk = true } = {}) {
    this._runs += 1;
    this._checks = 0;
    this._emits = 0;
    this._logBytes = 0;
    this._requestsThisRun = 0;
    this._fire = this.fireId ?? `test-fire-${this._runs}`;
    const ctx = new Context({
      jobKey: this.jobKey, triggerKey: "test/trigger", fireId: this._fire,
      scheduledAt: this.clock.getTime(), firedAt: this.clock.getTime(),
      attempt: this.attempt, recovering: false, data: this.dataJson,
    });
    const previous = install(this);
    let result;
    try {
      const { details, newData } = runJob(instantiate(JobClass), ctx);
      const size = limits.byteLength(details ?? "") + limits.byteLength(newData ?? "");
      if (size > limits.MAX_OUTPUT_BYTES) {
        result = {
          ok: false, retryable: false,
          message: `the run returned ${size} bytes of details and data; the limit is ${limits.MAX_OUTPUT_BYTES}`,
        };
      } else {
        if (newData !== null) this.dataJson = newData;
        result = {
          ok: true,
          details: details === null ? null : JSON.parse(details),
          newData: newData === null ? null : JSON.parse(newData),
          hasNewData: newData !== null,
        };
      }
    } catch (e) {
      if (!(e instanceof Failed)) throw e;
      result = { ok: false, retryable: e.retryable, message: e.message };
    } finally {
      install(previous);
      this.held.clear();
    }
    if (expectOk && !result.ok) {
      throw new RunFailed(`the run failed (${result.retryable ? "retryable" : "fatal"}): ${result.message}`);
    }
    return result;
  }

  // --- the backend the SDK calls ----------------------------------------

  _isCancelled() {
    const n = this.cancelAfterChecks;
    return n !== null && (n === 0 || this._checks > n);
  }

  log(level, message) {
    let bytes = utf8Encode(message);
    if (bytes.length > limits.MAX_LOG_LINE) {
      message = utf8Decode(bytes.slice(0, limits.MAX_LOG_LINE)).replace(/\ufffd+$/, "");
      bytes = utf8Encode(message);
    }
    if (this.logsDropped > 0 || this._logBytes + bytes.length > limits.MAX_LOG_BYTES) {
      this.logsDropped += 1;
      return;
    }
    this._logBytes += bytes.length;
    this.logs.push({ level, message });
  }

  cancelled() {
    this._checks += 1;
    return this._isCancelled();
  }

  now() {
    return new Date(this.clock.getTime());
  }

  kvGet(key) {
    const why = limits.checkKvKey(key);
    if (why !== null) throw invalid(why);
    return this.kv.get(key) ?? null;
  }

  kvSet(key, value) {
    const why = limits.checkKvKey(key);
    if (why !== null) throw invalid(why);
    if (value.length > this.maxKvValue) {
      throw limitExceeded(`kv value is ${value.length} bytes; the limit is ${this.maxKvValue}`);
    }
    let keys = 0;
    let bytes = value.length;
    for (const [k, v] of this.kv) {
      if (k !== key) {
        keys += 1;
        bytes += v.length;
      }
    }
    if (keys >= this.kvMaxKeys || bytes > this.kvMaxBytes) {
      throw limitExceeded(
        `the job's kv state may hold at most ${this.kvMaxKeys} keys and ${this.kvMaxBytes} bytes of values`,
      );
    }
    this.kv.set(key, Uint8Array.from(value));
  }

  kvDelete(key) {
    const why = limits.checkKvKey(key);
    if (why !== null) throw invalid(why);
    return this.kv.delete(key);
  }

  lock(name, timeoutMs) {
    const why = limits.checkLockName(name);
    if (why !== null) throw invalid(why);
    if (this.held.size >= limits.MAX_LOCKS_HELD) {
      throw limitExceeded(`a run may hold at most ${limits.MAX_LOCKS_HELD} locks`);
    }
    if (this._isCancelled()) throw new Retry("run cancelled");
    if (this.foreign.has(name) || this.held.has(name)) {
      // A single-threaded fake cannot wait for a release: time passes instead.
      this.advance(timeoutMs);
      throw new Retry(`lock ${JSON.stringify(name)} not acquired within ${timeoutMs} ms`);
    }
    this._nextToken += 1;
    const token = this._nextToken;
    this.held.set(name, token);
    return new Lock(name, token, () => this.held.delete(name));
  }

  triggerEvent() {
    return this.event;
  }

  emit(name, payload, key) {
    const why = limits.checkEventName(name);
    if (why !== null) throw invalid(why);
    if (key !== undefined && key !== null) {
      const size = limits.byteLength(key);
      if (size === 0 || size > limits.MAX_EVENT_KEY) {
        throw invalid(`idempotency key must be 1 to ${limits.MAX_EVENT_KEY} bytes`);
      }
    }
    const size = limits.byteLength(payload);
    if (size > limits.MAX_EVENT_PAYLOAD) {
      throw limitExceeded(`event payload is ${size} bytes; the limit is ${limits.MAX_EVENT_PAYLOAD}`);
    }
    if (this._emits >= limits.MAX_EMITS_PER_RUN) {
      throw limitExceeded(`a run may emit at most ${limits.MAX_EMITS_PER_RUN} events`);
    }
    if (this._isCancelled()) throw new Retry("run cancelled");
    this._emits += 1;
    // As the host does: a keyless emit is keyed by the fire and its position.
    const seen = `${name}\u0000${key ?? `fire:${this._fire}:${this._emits}`}`;
    const i = this._emittedKeys.indexOf(seen);
    if (i >= 0) return `test-event-${i + 1}`;
    this._emittedKeys.push(seen);
    this.emitted.push({ name, payloadJson: payload, payload: JSON.parse(payload), key: key ?? null });
    return `test-event-${this.emitted.length}`;
  }

  configGet(key) {
    return this.configValues.get(key) ?? null;
  }

  configGetAll() {
    return [...this.configValues];
  }

  httpSend(request) {
    this.httpRequests.push(request);
    this._requestsThisRun += 1;
    if (this._requestsThisRun > limits.HTTP_MAX_REQUESTS) {
      throw new HttpError("limit", "the run's request or connection limit");
    }
    const url = request.url;
    for (const [pattern, answers] of this._stubs) {
      const hit = pattern.endsWith("*") ? url.startsWith(pattern.slice(0, -1)) : url === pattern;
      if (!hit) continue;
      const answer = answers.length > 1 ? answers.shift() : answers[0];
      if (answer instanceof HttpError) throw answer;
      return new Response(answer.status, answer.headers.map(([n, v]) => [n, v]), answer.body.slice());
    }
    throw new HttpError(
      "denied",
      `no stub for ${url} (TestHost denies what it was not told about, as the host denies what is not granted)`,
    );
  }
}
