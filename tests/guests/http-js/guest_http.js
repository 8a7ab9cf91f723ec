// A test guest written with the JavaScript SDK: makes the requests its data
// names and reads config, so host tests can check the SDK's config and http
// against the real host. The same data and details as tests/guests/http-client
// (Rust) and tests/guests/http-py:
//
//   {"requests": [{"url": "http://127.0.0.1:8080/a", "method": "GET",
//                  "headers": [["x-a", "1"]], "body": "...", "max_redirects": 0}],
//    "config": true}
//
// Each request's result goes into the details' "results": {"status", "body",
// "content_type"} or {"error": "denied" | "limit" | "network" | "invalid",
// "message"}; with "config" the details' "config" holds {"all", "channel"}.

import { HttpError, Job, config, http } from "quartzite-sdk";

export default class GuestHttp extends Job {
  static info = {
    name: "guest-http-js",
    version: "0.1.0",
    description: "makes the HTTP requests its data names (JavaScript SDK)",
  };

  run(ctx) {
    const data = ctx.data ?? {};
    const results = [];
    for (const r of data.requests ?? []) {
      try {
        const resp = http.request(r.method ?? "GET", r.url, {
          headers: r.headers ?? [],
          body: r.body,
          maxRedirects: r.max_redirects ?? http.DEFAULT_MAX_REDIRECTS,
        });
        results.push({ status: resp.status, body: resp.text(), content_type: resp.header("content-type") });
      } catch (e) {
        if (!(e instanceof HttpError)) throw e;
        results.push({ error: e.kind, message: e.message });
      }
    }
    let cfg = null;
    if (data.config) {
      cfg = { all: Object.entries(config.getAll()).sort(), channel: config.get("channel") };
    }
    return { results, config: cfg };
  }
}
