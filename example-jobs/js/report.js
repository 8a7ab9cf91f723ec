// report-js: a long job. Takes the cluster lock `report` so only one runs at a
// time, works in steps, checkpoints its progress per fire in kv, and stops
// early when the host cancels the run (timeout or shutdown); a retry of the
// same fire resumes from the checkpoint. When done it emits `report.done`.
//
// With data {"ignore_cancel": true} it never looks at cancelled(): the host
// then stops it when the run's grace period after the timeout is over.

import { Job, Overlap, Retry, cancelled, emit, kv, log, withLock } from "quartzite-sdk";

// A job's run is synchronous: a step "works" by spinning on the clock.
function work(ms) {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    // busy, as real work would be
  }
}

export default class Report extends Job {
  static info = {
    name: "report-js",
    version: "1.0.0",
    description: "builds a report in steps under a cluster lock; stops when cancelled (JavaScript)",
    overlap: Overlap.FORBID,
  };

  run(ctx) {
    const data = { steps: 5, step_ms: 100, lock_timeout_ms: 2000, ignore_cancel: false, ...(ctx.data ?? {}) };
    const result = withLock("report", data.lock_timeout_ms, (guard) => {
      const checkpoint = `checkpoint/${ctx.fireId}`;
      let done = kv.getJson(checkpoint) ?? 0;
      if (done > 0) log.info(`resuming fire ${ctx.fireId} at step ${done}`);
      while (done < data.steps) {
        if (!data.ignore_cancel && cancelled()) {
          log.info(`cancelled after ${done} of ${data.steps} steps`);
          throw new Retry(`cancelled after ${done} of ${data.steps} steps`);
        }
        work(data.step_ms);
        done += 1;
        kv.setJson(checkpoint, done);
        log.info(`step ${done} of ${data.steps} done`);
      }
      kv.delete(checkpoint);
      return { steps: done, fencing_token: guard.fencingToken };
    });
    emit("report.done", { steps: result.steps, fire: ctx.fireId });
    return result;
  }
}
