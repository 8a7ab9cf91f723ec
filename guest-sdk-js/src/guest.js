// The component side: the `quartzite:job/runner` export and the host backend
// over the component's imports. Only a component imports this module (through
// the entry module quartzite-build-js writes); natively the host interface
// does not exist.

import * as host from "quartzite:job/host@1.1.0";
import * as store from "wasi:config/store@0.2.0-rc.1";
import { Context, Event, Fatal, Lock, Retry } from "./index.js";
import { install } from "./host.js";
import { Failed, instantiate, runJob } from "./run.js";

// An import returning result<_, host-error> throws its error; the variant is
// the thrown value's `payload` (or the value itself).
function convert(thrown) {
  const e = thrown && typeof thrown === "object" && "payload" in thrown ? thrown.payload : thrown;
  switch (e && e.tag) {
    case "invalid-argument":
      return new Fatal(`invalid argument: ${e.val}`);
    case "limit-exceeded":
      return new Fatal(`limit exceeded: ${e.val}`);
    case "timeout":
      return new Retry("timed out waiting for the host");
    case "cancelled":
      return new Retry("run cancelled");
    case "unavailable":
      return new Retry(`host unavailable: ${e.val}`);
    default:
      return new Retry(`host error: ${String(thrown)}`);
  }
}

// wasi:config/store's error variant: upstream(string) or io(string).
function config(f) {
  try {
    return f();
  } catch (thrown) {
    const e = thrown && typeof thrown === "object" && "payload" in thrown ? thrown.payload : thrown;
    throw new Retry(`config unavailable: ${e && e.val !== undefined ? e.val : String(thrown)}`);
  }
}

function call(f) {
  try {
    return f();
  } catch (e) {
    throw convert(e);
  }
}

const guestBackend = {
  log: (level, message) => host.log(level, message),
  cancelled: () => host.cancelled(),
  now: () => new Date(),
  kvGet: (key) => call(() => host.kvGet(key)) ?? null,
  kvSet: (key, value) => call(() => host.kvSet(key, value)),
  kvDelete: (key) => call(() => host.kvDelete(key)),
  lock(name, timeoutMs) {
    let guard;
    try {
      guard = host.lock(name, timeoutMs);
    } catch (e) {
      const err = convert(e);
      if (err.message === "timed out waiting for the host") {
        throw new Retry(`lock ${JSON.stringify(name)} not acquired within ${timeoutMs} ms`);
      }
      throw err;
    }
    const release = () => {
      if (typeof guard[Symbol.dispose] === "function") guard[Symbol.dispose]();
    };
    return new Lock(guard.name(), Number(guard.fencingToken()), release);
  },
  triggerEvent() {
    const e = host.triggerEvent();
    if (e === undefined || e === null) return null;
    return new Event({
      id: e.id,
      name: e.name,
      payloadJson: e.payload,
      key: e.key ?? null,
      depth: e.depth,
      emittedAtMs: Number(e.emittedAt),
      sourceJob: e.sourceJob ?? null,
    });
  },
  emit: (name, payload, key) => call(() => host.emit(name, payload, key ?? undefined)),
  configGet: (key) => config(() => store.get(key)) ?? null,
  configGetAll: () => config(() => store.getAll()),
  // Set by the entry module the build writes: guest-http.js, or a refusal.
  httpSend: null,
};

/** Makes `send(request)` the component's http transport. */
export function setHttpTransport(send) {
  guestBackend.httpSend = send;
}

install(guestBackend);

/** The component's `runner` export for the job class `JobClass`. */
export function makeRunner(JobClass) {
  return {
    describe() {
      const info = instantiate(JobClass).describe();
      return {
        name: info.name,
        version: info.version,
        description: info.description ?? undefined,
        defaultSchedule: info.defaultSchedule ?? undefined,
        overlap: info.overlap ?? undefined,
      };
    },
    run(ctx) {
      try {
        const { details, newData } = runJob(instantiate(JobClass), new Context(ctx));
        return { details: details ?? undefined, newData: newData ?? undefined };
      } catch (e) {
        const failure = e instanceof Failed ? e : new Failed(true, String(e));
        const err = new Error(failure.message);
        err.payload = { tag: failure.retryable ? "retry" : "fatal", val: failure.message };
        throw err;
      }
    },
  };
}
