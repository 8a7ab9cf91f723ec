// noop-js: does nothing, in JavaScript: what the host path costs for a JS job.

import { Job } from "quartzite-sdk";

export default class Noop extends Job {
  static info = { name: "noop-js", version: "1.0.0" };

  run() {
    return null;
  }
}
