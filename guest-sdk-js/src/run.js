// One run of a job, independent of who hosts it: the result as JSON texts, or
// the failure as { retryable, message }.

import { Fatal, Outcome, Retry } from "./index.js";
import { HttpError } from "./http.js";

export class Failed extends Error {
  constructor(retryable, message) {
    super(message);
    this.retryable = retryable;
  }
}

function toJson(value, what) {
  try {
    const text = JSON.stringify(value);
    if (text === undefined) throw new Error(`${typeof value} is not JSON`);
    return text;
  } catch (e) {
    throw new Failed(false, `cannot serialize ${what}: ${e.message}`);
  }
}

export function instantiate(JobClass) {
  return typeof JobClass === "function" ? new JobClass() : JobClass;
}

export function runJob(job, ctx) {
  let result;
  try {
    result = job.run(ctx);
  } catch (e) {
    if (e instanceof Retry) throw new Failed(true, e.message);
    if (e instanceof Fatal) throw new Failed(false, e.message);
    // Retryable when a later try may pass (network, 5xx, 429), fatal otherwise.
    if (e instanceof HttpError) throw new Failed(e.retryable, e.message);
    // An unexpected error is transient unless the job says otherwise.
    throw new Failed(true, e instanceof Error ? `${e.name}: ${e.message}` : String(e));
  }
  if (result && typeof result.then === "function") {
    throw new Failed(false, "run() returned a Promise: a job's run is synchronous");
  }
  if (result instanceof Outcome) {
    const details = result.details === undefined || result.details === null ? null : toJson(result.details, "details");
    const newData = result.hasNewData ? toJson(result.newData ?? null, "new job data") : null;
    return { details, newData };
  }
  if (result === undefined || result === null) return { details: null, newData: null };
  return { details: toJson(result, "details"), newData: null };
}
