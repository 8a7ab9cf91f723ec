// http inside a StarlingMonkey component: one request over the wasi:http
// imports of the world `job-http`, blocking on their pollables. The build
// bundles this module only for that world; the others get guest-no-http.js.

import { handle } from "wasi:http/outgoing-handler@0.2.12";
import { Fields, OutgoingBody, OutgoingRequest, RequestOptions, httpErrorCode } from "wasi:http/types@0.2.12";
import { HttpError, Response, splitUrl } from "./http.js";
import { utf8Decode, utf8Encode } from "./utf8.js";

const METHODS = { GET: "get", HEAD: "head", POST: "post", PUT: "put", DELETE: "delete", PATCH: "patch", OPTIONS: "options" };

// A result<_, E> import throws E as the thrown value's `payload`.
const payload = (thrown) => (thrown && typeof thrown === "object" && "payload" in thrown ? thrown.payload : thrown);

function fromCode(code) {
  switch (code && code.tag) {
    case "HTTP-request-denied":
    case "destination-IP-prohibited":
      return new HttpError("denied", "the job's grants do not allow this request");
    case "connection-limit-reached":
      return new HttpError("limit", "the run's request or connection limit");
    case "HTTP-request-body-size":
      return new HttpError("limit", "the run's request body bytes");
    case "HTTP-response-body-size":
      return new HttpError("limit", "the run's response body bytes");
    case "HTTP-request-URI-invalid":
      return new HttpError("invalid", "the URL");
    default:
      return new HttpError("network", String(code && code.tag));
  }
}

function streamError(thrown) {
  const e = payload(thrown);
  if (!e || e.tag !== "last-operation-failed") return new HttpError("network", "the stream closed early");
  const code = httpErrorCode(e.val);
  if (code !== undefined && code !== null) return fromCode(code);
  // wasmtime 48 hands body errors over as text only.
  const first = String(e.val.toDebugString()).split("\n")[0];
  return new HttpError(first.includes("body size exceeds limit") ? "limit" : "network", first);
}

const drop = (resource) => {
  if (typeof resource[Symbol.dispose] === "function") resource[Symbol.dispose]();
};

export function send(request) {
  const [scheme, authority, path] = splitUrl(request.url);
  const fields = new Fields();
  const entries = [...request.headers];
  // A known length, not chunked: simple servers read bodies by it.
  if (request.body.length > 0 && !entries.some(([n]) => n.toLowerCase() === "content-length")) {
    entries.unshift(["content-length", String(request.body.length)]);
  }
  for (const [name, value] of entries) {
    try {
      fields.append(name, utf8Encode(value));
    } catch (e) {
      if (payload(e)?.tag === "forbidden") {
        throw new HttpError("denied", `header ${JSON.stringify(name)} is set by the host, not by jobs`);
      }
      throw new HttpError("invalid", `header ${JSON.stringify(name)}`);
    }
  }
  const outgoing = new OutgoingRequest(fields);
  const method = METHODS[request.method];
  try {
    outgoing.setMethod(method ? { tag: method } : { tag: "other", val: request.method });
    outgoing.setScheme({ tag: scheme.toLowerCase() === "https" ? "HTTPS" : "HTTP" });
    outgoing.setAuthority(authority);
    outgoing.setPathWithQuery(path);
  } catch {
    throw new HttpError("invalid", `the host cannot send to ${JSON.stringify(request.url)}`);
  }
  const body = outgoing.body();
  const options = new RequestOptions();
  if (request.timeoutMs !== null && request.timeoutMs !== undefined) {
    const ns = BigInt(Math.round(request.timeoutMs * 1e6));
    for (const set of ["setConnectTimeout", "setFirstByteTimeout"]) {
      try {
        options[set](ns);
      } catch {
        // the host keeps its own bound
      }
    }
  }
  let pending;
  try {
    pending = handle(outgoing, options);
  } catch (e) {
    throw fromCode(payload(e));
  }
  // Children go before their parents, as the resources require: the body
  // stream before the body is finished, the response before its future.
  // A server may answer before it has read the body and close the
  // connection: the write then fails, and the answer is still the response.
  let failed = null;
  if (request.body.length > 0) {
    const stream = body.write();
    try {
      for (let at = 0; at < request.body.length; at += 4096) {
        stream.blockingWriteAndFlush(request.body.subarray(at, at + 4096));
      }
    } catch (e) {
      failed = streamError(e);
    } finally {
      drop(stream);
    }
  }
  try {
    OutgoingBody.finish(body, undefined);
  } catch (e) {
    failed = failed ?? fromCode(payload(e));
  }
  const ready = pending.subscribe();
  ready.block();
  drop(ready);
  const got = pending.get();
  if (!got || got.tag !== "ok") throw failed ?? new HttpError("network", "the response was not delivered");
  if (got.val.tag !== "ok") throw failed?.kind === "limit" ? failed : fromCode(got.val.val);
  const incoming = got.val.val;
  const status = incoming.status();
  const fieldsIn = incoming.headers();
  const headers = fieldsIn.entries().map(([n, v]) => [n, utf8Decode(v)]);
  drop(fieldsIn);
  const incomingBody = incoming.consume();
  const stream = incomingBody.stream();
  const chunks = [];
  let size = 0;
  try {
    for (;;) {
      let chunk;
      try {
        chunk = stream.blockingRead(65536n);
      } catch (e) {
        if (payload(e)?.tag === "closed") break;
        throw streamError(e);
      }
      chunks.push(chunk);
      size += chunk.length;
    }
  } finally {
    drop(stream);
    drop(incomingBody);
    drop(incoming);
    drop(pending);
  }
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    bytes.set(c, at);
    at += c.length;
  }
  return new Response(status, headers, bytes);
}
