// {{name}}: greets whoever the job data names and counts its runs in the job's
// durable kv state.

import { Job, kv, log } from "quartzite-sdk";

export default class {{type_name}} extends Job {
  static info = { name: "{{name}}", version: "0.1.0", description: "greets and counts its runs" };

  run(ctx) {
    const name = ctx.data?.name ?? "world"; // the job data, e.g. data = { name = "world" }
    const count = (kv.getJson("count") ?? 0) + 1;
    kv.setJson("count", count);
    log.info(`hello, ${name} (run ${count}, fire ${ctx.fireId})`);
    return { greeting: `hello, ${name}`, count };
  }
}
