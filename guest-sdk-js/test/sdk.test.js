// The JavaScript SDK under its native test host: the rules a job relies on.

import { test } from "node:test";
import assert from "node:assert/strict";
import { Fatal, Job, Outcome, Overlap, Retry, cancelled, emit, kv, lock, log, now, withLock } from "../src/index.js";
import * as limits from "../src/limits.js";
import { RunFailed, TestHost } from "../src/testing.js";
import { utf8Decode, utf8Encode } from "../src/utf8.js";

class Counter extends Job {
  static info = { name: "counter", version: "1.2.3", overlap: Overlap.FORBID };
  run(ctx) {
    const count = (kv.getJson("count") ?? 0) + 1;
    kv.setJson("count", count);
    log.info(`run ${count} of fire ${ctx.fireId}`);
    return { count, who: ctx.data?.who ?? null };
  }
}

function probe(host, body) {
  class Probe extends Job {
    static info = { name: "probe", version: "0" };
    run() {
      return body();
    }
  }
  return host.run(Probe, { expectOk: false });
}

test("kv survives runs and data arrives as an object", () => {
  const host = new TestHost({ data: { who: "js" } });
  assert.deepEqual(host.run(Counter).details, { count: 1, who: "js" });
  assert.deepEqual(host.run(Counter).details, { count: 2, who: "js" });
  assert.equal(host.kvJson("count"), 2);
  assert.deepEqual(host.messages(), ["run 1 of fire test-fire-1", "run 2 of fire test-fire-2"]);
  assert.deepEqual(new Counter().describe(), { name: "counter", version: "1.2.3", overlap: "forbid" });
});

test("retry, fatal and unexpected errors are told apart", () => {
  class Flaky extends Job {
    static info = { name: "flaky", version: "1" };
    run(ctx) {
      if (ctx.attempt < 3) throw new Retry(`attempt ${ctx.attempt} fails`);
      if (ctx.data === "fatal") throw new Fatal("bad input");
      if (ctx.data === "oops") return null.x;
      return "ok";
    }
  }
  let r = new TestHost().run(Flaky, { expectOk: false });
  assert.deepEqual([r.ok, r.retryable, r.message], [false, true, "attempt 1 fails"]);
  r = new TestHost({ data: "fatal", attempt: 3 }).run(Flaky, { expectOk: false });
  assert.deepEqual([r.retryable, r.message], [false, "bad input"]);
  r = new TestHost({ data: "oops", attempt: 3 }).run(Flaky, { expectOk: false });
  assert.equal(r.retryable, true);
  assert.match(r.message, /^TypeError: /);
  assert.equal(new TestHost({ attempt: 3 }).run(Flaky).details, "ok");
  assert.throws(() => new TestHost().run(Flaky), RunFailed);
});

test("cancellation, locks and new data", () => {
  class Steps extends Job {
    static info = { name: "steps", version: "1" };
    run() {
      return withLock("steps", 1000, (held) => {
        let done = 0;
        while (done < 10 && !cancelled()) done += 1;
        return new Outcome({ done, token: held.fencingToken }, { newData: { last: done } });
      });
    }
  }
  const host = new TestHost({ cancelAfterChecks: 3 });
  const r = host.run(Steps);
  assert.deepEqual(r.details, { done: 3, token: 1 });
  assert.deepEqual(r.newData, { last: 3 });
  assert.equal(host.dataJson, '{"last":3}');
  assert.equal(host.held.size, 0);
  host.holdLockElsewhere("steps");
  const busy = host.run(Steps, { expectOk: false });
  assert.equal(busy.retryable, true);
  assert.match(busy.message, /not acquired within 1000 ms/);
  const gone = new TestHost({ cancelAfterChecks: 0 }).run(Steps, { expectOk: false });
  assert.deepEqual([gone.retryable, gone.message], [true, "run cancelled"]);
});

test("kv limits match the host", () => {
  let r = probe(new TestHost(), () => kv.set("k".repeat(limits.MAX_KV_KEY + 1), "x"));
  assert.equal(r.message, "invalid argument: kv key is 257 bytes; the limit is 256");
  assert.equal(r.retryable, false);
  r = probe(new TestHost(), () => kv.get(""));
  assert.equal(r.message, "invalid argument: kv key is empty");
  const host = new TestHost({ kvMaxKeys: 2, kvMaxBytes: 10 });
  r = probe(host, () => {
    kv.set("a", "12345");
    kv.set("b", "12345");
    kv.set("a", "123456");
  });
  assert.match(r.message, /at most 2 keys and 10 bytes/);
  assert.equal(utf8Decode(host.kv.get("a")), "12345");
  r = probe(new TestHost({ maxKvValue: 4 }), () => kv.set("a", "12345"));
  assert.equal(r.message, "limit exceeded: kv value is 5 bytes; the limit is 4");
});

test("events follow the host rules and a retry of a fire emits once", () => {
  for (const [bad, words] of [["report done", "contains ' '"], ["-x", "must start"], ["", "must be 1 to 128"]]) {
    const r = probe(new TestHost(), () => emit(bad, 1));
    assert.ok(r.message.includes(words), r.message);
    assert.equal(r.retryable, false);
  }
  const r = probe(new TestHost(), () => emit("ok", "x".repeat(limits.MAX_EVENT_PAYLOAD)));
  assert.match(r.message, /^limit exceeded: event payload is/);
  const host = new TestHost({ fireId: "f1" });
  probe(host, () => emit("a.done", { n: 1 }));
  probe(host, () => emit("a.done", { n: 1 }));
  assert.deepEqual(host.emitted.map((e) => [e.name, e.payload]), [["a.done", { n: 1 }]]);
  const reader = new TestHost({ event: ["order.created", { id: 7 }] });
  class Reader extends Job {
    static info = { name: "reader", version: "1" };
    run(ctx) {
      return ctx.event.payload;
    }
  }
  assert.deepEqual(reader.run(Reader).details, { id: 7 });
});

test("locks are bounded", () => {
  let r = probe(new TestHost(), () => lock(""));
  assert.equal(r.message, "invalid argument: lock name must be 1 to 256 bytes");
  r = probe(new TestHost(), () => {
    for (let i = 0; i <= limits.MAX_LOCKS_HELD; i++) lock(`l${i}`);
  });
  assert.equal(r.message, "limit exceeded: a run may hold at most 16 locks");
});

test("logs past the cap are dropped and the clock is fake", () => {
  const host = new TestHost();
  const r = probe(host, () => {
    for (let i = 0; i < 20; i++) log.info("y".repeat(8192));
    return now().toISOString();
  });
  assert.equal(r.details, "2030-01-01T00:00:00.000Z");
  assert.equal(host.logs.length, 16);
  assert.ok(host.logs.every((l) => l.message.length === 4096));
  assert.equal(host.logsDropped, 4);
  host.advance(90_000);
  assert.equal(probe(host, () => now().getUTCMinutes()).details, 1);
});

test("outside a run host calls say how to test, and big outputs fail", () => {
  assert.throws(() => kv.get("x"), /TestHost/);
  const r = probe(new TestHost(), () => "x".repeat(limits.MAX_OUTPUT_BYTES));
  assert.match(r.message, /bytes of details and data/);
});

test("utf-8 round trips as the host counts bytes", () => {
  for (const text of ["", "plain", "grüße", "日本", "😀 emoji"]) {
    assert.deepEqual(utf8Encode(text), new TextEncoder().encode(text));
    assert.equal(utf8Decode(utf8Encode(text)), text);
  }
  assert.equal(limits.byteLength("ü".repeat(200)), 400);
});
