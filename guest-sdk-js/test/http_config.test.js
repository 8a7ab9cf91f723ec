// config and http under the native test host: what a job sees, and what the
// test host refuses as the real host would.

import { test } from "node:test";
import assert from "node:assert/strict";
import { HttpError, HttpRequest, Job, config, http } from "../src/index.js";
import * as limits from "../src/limits.js";
import { TestHost } from "../src/testing.js";
import { utf8Decode } from "../src/utf8.js";

function probe(host, body) {
  class Probe extends Job {
    static info = { name: "probe", version: "0" };
    run() {
      return body();
    }
  }
  return host.run(Probe, { expectOk: false });
}

class Fetch extends Job {
  static info = { name: "fetch", version: "1" };
  run() {
    const base = config.get("base") ?? "https://default.example";
    const items = http.getJson(`${base}/v1/items`);
    return { n: items.length, channel: config.get("channel") };
  }
}

test("config reads what the test host sets", () => {
  const host = new TestHost().config("channel", "#ops").config("base", "https://api.example.com");
  host.stubHttp("https://api.example.com/v1/items", 200, "[1, 2, 3]");
  assert.deepEqual(host.run(Fetch).details, { n: 3, channel: "#ops" });
  assert.deepEqual(probe(host, () => ({ ...config.getAll() })).details, { channel: "#ops", base: "https://api.example.com" });
  assert.equal(probe(new TestHost(), () => config.get("channel")).details, null);
  assert.deepEqual(probe(new TestHost(), () => Object.keys(config.getAll())).details, []);
  const odd = probe(new TestHost().config("__proto__", "x"), () => config.getAll()["__proto__"]);
  assert.equal(odd.details, "x");
  const r = probe(new TestHost(), () => config.get(7));
  assert.equal(r.retryable, true);
  assert.match(r.message, /the key must be a string, not number/);
});

test("requests are recorded with method, headers and body", () => {
  const host = new TestHost().stubHttp("https://api.example.com/*", 201, '{"id": 9}', { headers: { "x-r": "1" } });
  const r = probe(host, () => {
    const resp = http.postJson("https://api.example.com/v1/items", { name: "a" }, { headers: [["x-a", "1"]] });
    return { status: resp.status, id: resp.json().id, xr: resp.header("X-R"), ct: resp.header("content-type") };
  });
  assert.deepEqual(r.details, { status: 201, id: 9, xr: "1", ct: null });
  assert.equal(host.httpRequests.length, 1);
  const [sent] = host.httpRequests;
  assert.deepEqual([sent.method, sent.url, utf8Decode(sent.body)], ["POST", "https://api.example.com/v1/items", '{"name":"a"}']);
  assert.deepEqual(sent.headers, [["x-a", "1"], ["content-type", "application/json"]]);
  assert.deepEqual([sent.maxRedirects, sent.timeoutMs], [5, null]);
  const direct = probe(host, () => new HttpRequest("delete", "https://api.example.com/v1/items/9", { timeoutMs: 250 }).send().status);
  assert.equal(direct.details, 201);
  assert.deepEqual([host.httpRequests[1].method, host.httpRequests[1].timeoutMs], ["DELETE", 250]);
});

test("an unstubbed URL is denied like an ungranted one", () => {
  const host = new TestHost().stubHttp("https://api.example.com/v1/items", 200, "[]");
  const r = probe(host, () => http.get("https://api.example.com/v1/other").status);
  assert.equal(r.retryable, false);
  assert.ok(r.message.startsWith("request denied by the host: no stub for https://api.example.com/v1/other"), r.message);
  assert.throws(() => host.httpSend(new HttpRequest("GET", "https://elsewhere.example/")), (e) => e instanceof HttpError && e.kind === "denied");
  assert.equal(host.httpRequests[0].url, "https://api.example.com/v1/other");
});

test("error kinds and whether a run retries", () => {
  const status = (code, headers) =>
    probe(new TestHost().stubHttp("https://a.example/x", code, "nope", { headers }), () => http.get("https://a.example/x").errorForStatus().status);
  let r = status(404);
  assert.deepEqual([r.retryable, r.message], [false, "server answered 404: nope"]);
  assert.equal(status(503).retryable, true);
  assert.equal(status(429).retryable, true);
  assert.equal(status(204).details, 204);
  const host = new TestHost().stubHttp("https://a.example/x", 429, "slow", { headers: [["Retry-After", " 7 "]] });
  r = probe(host, () => {
    try {
      http.getJson("https://a.example/x");
    } catch (e) {
      return [e.kind, e.status, e.body, e.retryAfterMs, e.retryable];
    }
  });
  assert.deepEqual(r.details, ["status", 429, "slow", 7000, true]);
  r = probe(new TestHost().stubHttpError("https://a.example/x", new HttpError("network", "connection refused")), () => http.get("https://a.example/x"));
  assert.deepEqual([r.retryable, r.message], [true, "network error: connection refused"]);
  r = probe(new TestHost().stubHttp("https://a.example/x", 500, "é".repeat(1000)), () => http.get("https://a.example/x").errorForStatus());
  assert.equal(limits.byteLength(r.message), "server answered 500: ".length + 1024);
  assert.throws(() => new HttpError("nope", "x"), /HttpError kind "nope" is not one of/);
});

test("stubs queue and the last one repeats", () => {
  const host = new TestHost().stubHttp("https://a.example/n", 200, "1").stubHttp("https://a.example/n", 200, "2");
  assert.deepEqual(probe(host, () => [1, 2, 3].map(() => http.get("https://a.example/n").text())).details, ["1", "2", "2"]);
});

test("redirects of GET are followed up to the limit", () => {
  let host = new TestHost()
    .stubHttp("https://a.example/old", 302, "", { headers: [["Location", "/new"]] })
    .stubHttp("https://a.example/new", 200, "here");
  assert.equal(probe(host, () => http.get("https://a.example/old").text()).details, "here");
  assert.deepEqual(host.httpRequests.map((x) => x.url), ["https://a.example/old", "https://a.example/new"]);
  assert.equal(probe(host, () => http.get("https://a.example/old", { maxRedirects: 0 }).status).details, 302);
  // A POST is not redirected by a 302, and a 303 turns it into a bodiless GET.
  assert.equal(probe(host, () => http.postJson("https://a.example/old", 1).status).details, 302);
  host = new TestHost()
    .stubHttp("https://a.example/form", 303, "", { headers: [["location", "https://b.example/done"]] })
    .stubHttp("https://b.example/done", 200, "ok");
  assert.equal(probe(host, () => http.postJson("https://a.example/form", { a: 1 }).text()).details, "ok");
  const hop = host.httpRequests[1];
  assert.deepEqual([hop.method, hop.url, hop.body.length], ["GET", "https://b.example/done", 0]);
  const loop = new TestHost().stubHttp("https://a.example/loop", 301, "", { headers: [["location", "/loop"]] });
  assert.equal(probe(loop, () => http.get("https://a.example/loop").status).details, 301);
  assert.equal(loop.httpRequests.length, 6, "the first request and five redirects");
  const rel = new TestHost().stubHttp("https://a.example/r", 302, "", { headers: [["location", "next"]] });
  assert.equal(probe(rel, () => http.get("https://a.example/r")).message, 'invalid request: redirect to "next": relative paths are not followed');
});

test("bad requests say what is wrong and send nothing", () => {
  const cases = [
    [() => http.get("api.example.com/x"), '"api.example.com/x" is not an absolute URL'],
    [() => http.get("https:///x"), '"https:///x" has no host'],
    [() => http.get("ftp://a.example/"), 'scheme "ftp" of "ftp://a.example/"'],
    [() => http.request("GET X", "https://a.example/"), 'method "GET X" is not an HTTP method name'],
    [() => http.get("https://a.example/", { headers: { "bad name": "1" } }), 'header name "bad name"'],
    [() => http.get("https://a.example/", { headers: { x: "a\r\nb" } }), "holds a line break"],
    [() => http.get("https://a.example/", { headers: [["x"]] }), "is not a [name, value] pair"],
    [() => http.get("https://a.example/", { headers: { x: 1 } }), "name and value must be strings"],
    [() => http.get("https://a.example/", { timeoutMs: 0 }), "timeoutMs 0: give a positive number"],
    [() => http.get("https://a.example/", { maxRedirects: 1.5 }), "maxRedirects 1.5"],
    [() => http.request("POST", "https://a.example/", { body: 1 }), "the body must be a string, Uint8Array or ArrayBuffer, not Number"],
    [() => http.request("POST", "https://a.example/", { body: "a", json: 1 }), "give body or json, not both"],
    [() => http.postJson("https://a.example/", { n: 1n }), "the JSON body cannot be serialized"],
  ];
  for (const [call, words] of cases) {
    const host = new TestHost().stubHttp("https://a.example/*", 200, "");
    const r = probe(host, call);
    assert.equal(r.retryable, false, r.message);
    assert.ok(r.message.startsWith("invalid request: ") && r.message.includes(words), `${words}: ${r.message}`);
    assert.equal(host.httpRequests.length, 0);
  }
});

test("headers the host sets and the request count are refused", () => {
  const host = new TestHost().stubHttp("https://a.example/*", 200, "{}");
  let r = probe(host, () => http.get("https://a.example/", { headers: { "Transfer-Encoding": "chunked" } }));
  assert.equal(r.message, 'request denied by the host: header "Transfer-Encoding" is set by the host, not by jobs');
  r = probe(host, () => {
    for (let i = 0; i <= limits.HTTP_MAX_REQUESTS; i++) http.get(`https://a.example/${i}`);
  });
  assert.deepEqual([r.retryable, r.message], [false, "request over the run's limits: the run's request or connection limit"]);
  assert.equal(probe(host, () => http.get("https://a.example/again").status).details, 200, "the count is per run");
});

test("a non-JSON body is invalid and bytes come back as sent", () => {
  const host = new TestHost().stubHttp("https://a.example/b", 200, Uint8Array.from([0xff, 0, 0x6e]));
  const r = probe(host, () => http.getJson("https://a.example/b"));
  assert.match(r.message, /^invalid request: response body is not the expected JSON/);
  assert.deepEqual(probe(host, () => [...http.get("https://a.example/b").bytes()]).details, [255, 0, 110]);
  assert.equal(probe(host, () => http.get("https://a.example/b").text()[0]).details, "\ufffd");
});

test("stub arguments are checked", () => {
  assert.throws(() => new TestHost().stubHttpError("https://a.example/", "boom"), /takes an HttpError/);
  assert.throws(() => new TestHost().config("k", 1), /string key/);
});
