// counter-js: keeps a count in the job's durable kv state, so it survives
// across runs, restarts and nodes. With data {"fail_attempts": N} the first N
// attempts of every fire fail with a retry, to show the retry policy at work.

import { Job, Overlap, Retry, kv, log } from "quartzite-sdk";

export default class Counter extends Job {
  static info = {
    name: "counter-js",
    version: "1.0.0",
    description: "counts its runs in durable kv state (JavaScript)",
    // Two runs at once would both read the same count and lose an update.
    overlap: Overlap.FORBID,
  };

  run(ctx) {
    const data = ctx.data ?? {};
    if (ctx.attempt <= (data.fail_attempts ?? 0)) {
      throw new Retry(`attempt ${ctx.attempt} fails on purpose`);
    }
    const count = (kv.getJson("count") ?? 0) + 1;
    kv.setJson("count", count);
    kv.set("last-fire", ctx.fireId);
    log.info(`run number ${count}`);
    return { count, attempt: ctx.attempt };
  }
}
