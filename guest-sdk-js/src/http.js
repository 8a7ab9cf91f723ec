// Outbound HTTP from a job: a small blocking client over wasi:http.
//
//   import { http } from "quartzite-sdk";
//   const items = http.getJson("https://api.example.com/v1/items");
//   const r = http.postJson("https://api.example.com/v1/items", { name: "x" });
//   r.errorForStatus();
//   http.request("PUT", url, { headers: { "x-a": "1" }, body: "...", timeoutMs: 5000 });
//
// The host sends a request only to URLs the job's `http` grants name, and puts
// in the credentials of its secret grants itself: a job never holds them. A
// failure is an HttpError whose `kind` says who said no: "denied" (the host
// refused: no grant matches, a private address, a header the host sets),
// "limit" (a per-run bound), "network" (resolving, connecting, TLS, reading,
// a timeout), "status" (the server answered 4xx/5xx, from errorForStatus()),
// "invalid" (the request could not be built). One that escapes a run fails it
// as a retry when a later try may help (network, 5xx, 429), fatally otherwise.
// Redirects of GET and HEAD (and every 303) are followed up to maxRedirects
// times; the host checks each hop against the grants.
//
// Calls block until the response is read whole (a run is synchronous; there
// is no Promise here). Under TestHost requests go to the stubs a test set up,
// and a URL without a stub is denied, as an ungranted one is by the host.

import { backend } from "./host.js";
import { utf8Decode, utf8Encode } from "./utf8.js";

/** Redirects followed by default. */
export const DEFAULT_MAX_REDIRECTS = 5;

/** Headers the host sets itself and refuses from a job (wasmtime's default list). */
export const FORBIDDEN_HEADERS = /* @__PURE__ */ Object.freeze([
  "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
  "proxy-connection", "transfer-encoding", "upgrade", "host", "http2-settings",
]);

const KINDS = ["denied", "limit", "network", "status", "invalid"];
const PREFIX = {
  denied: "request denied by the host: ",
  limit: "request over the run's limits: ",
  network: "network error: ",
  invalid: "invalid request: ",
};
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const q = (v) => (typeof v === "string" ? JSON.stringify(v) : String(v));

/** Why a request did not give a usable response. */
export class HttpError extends Error {
  /**
   * @param {"denied"|"limit"|"network"|"status"|"invalid"} kind
   * @param {string} detail what went wrong (for "status": the body, cut to 1 KiB)
   * @param {{status?: number, retryAfterMs?: number|null}} [extra] for "status"
   */
  constructor(kind, detail, extra = {}) {
    if (!KINDS.includes(kind)) throw new TypeError(`HttpError kind ${q(kind)} is not one of ${KINDS.join(", ")}`);
    const message = kind === "status" ? `server answered ${extra.status}: ${detail}` : PREFIX[kind] + detail;
    super(message);
    this.name = "HttpError";
    this.kind = kind;
    this.detail = detail;
    if (kind === "status") {
      this.status = extra.status;
      this.body = detail;
      /** The response's Retry-After in ms, when it was given in seconds; else null. */
      this.retryAfterMs = extra.retryAfterMs ?? null;
    }
  }

  /** Whether trying again later may succeed: network errors, 5xx and 429. */
  get retryable() {
    if (this.kind === "network") return true;
    return this.kind === "status" && (this.status >= 500 || this.status === 429);
  }
}

const invalid = (m) => new HttpError("invalid", m);

function cut(text, limit) {
  const bytes = utf8Encode(text);
  if (bytes.length <= limit) return text;
  return utf8Decode(bytes.slice(0, limit)).replace(/\ufffd+$/, "");
}

/** A received response, its body read whole. */
export class Response {
  constructor(status, headers = [], body = new Uint8Array(0)) {
    this.status = status;
    /** The headers in the order received, as [name, value] pairs. */
    this.headers = headers;
    /** The body, a Uint8Array. */
    this.body = body;
  }

  /** The first value of header `name` (case-insensitive), or null. */
  header(name) {
    const wanted = String(name).toLowerCase();
    const found = this.headers.find(([n]) => n.toLowerCase() === wanted);
    return found ? found[1] : null;
  }

  /** The body as it came (a Uint8Array). */
  bytes() {
    return this.body;
  }

  /** The body as text (malformed UTF-8 replaced). */
  text() {
    return utf8Decode(this.body);
  }

  /** The body parsed as JSON; an "invalid" HttpError when it is not JSON. */
  json() {
    try {
      return JSON.parse(this.text());
    } catch (e) {
      throw invalid(`response body is not the expected JSON: ${e.message}`);
    }
  }

  /** The response itself when its status is below 400; a "status" HttpError otherwise. */
  errorForStatus() {
    if (this.status < 400) return this;
    const after = (this.header("retry-after") ?? "").trim();
    const retryAfterMs = /^\d+$/.test(after) ? Number(after) * 1000 : null;
    throw new HttpError("status", cut(this.text(), 1024), { status: this.status, retryAfterMs });
  }
}

function toHeaders(headers) {
  if (headers === undefined || headers === null) return [];
  const items = typeof headers[Symbol.iterator] === "function" ? [...headers] : Object.entries(headers);
  return items.map((item) => {
    if (!Array.isArray(item) || item.length !== 2) throw invalid(`headers: ${q(JSON.stringify(item))} is not a [name, value] pair`);
    const [name, value] = item;
    if (typeof name !== "string" || typeof value !== "string") {
      throw invalid(`header ${q(name)}: name and value must be strings, not ${typeof name} and ${typeof value}`);
    }
    return [name, value];
  });
}

function toBody(body) {
  if (body === undefined || body === null) return new Uint8Array(0);
  if (typeof body === "string") return utf8Encode(body);
  if (body instanceof Uint8Array) return body;
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  throw invalid(`the body must be a string, Uint8Array or ArrayBuffer, not ${body?.constructor?.name ?? typeof body}`);
}

/** `scheme://authority/path?query` as [scheme, authority, path-and-query]. */
export function splitUrl(url) {
  const at = url.indexOf("://");
  if (at <= 0) throw invalid(`${q(url)} is not an absolute URL`);
  const scheme = url.slice(0, at);
  const rest = url.slice(at + 3);
  const cutAt = rest.search(/[/?]/);
  const authority = cutAt < 0 ? rest : rest.slice(0, cutAt);
  let path = cutAt < 0 ? "/" : rest.slice(cutAt);
  if (path.startsWith("?")) path = `/${path}`;
  if (authority === "") throw invalid(`${q(url)} has no host`);
  return [scheme, authority, path];
}

/** A Location header against the URL it came from. */
export function resolveUrl(base, location) {
  if (location.includes("://")) return location;
  const [scheme, authority] = splitUrl(base);
  if (location.startsWith("//")) return `${scheme}:${location}`;
  if (location.startsWith("/")) return `${scheme}://${authority}${location}`;
  throw invalid(`redirect to ${q(location)}: relative paths are not followed`);
}

/** A request to send; http.request() builds and sends one. */
export class Request {
  /**
   * @param {string} method
   * @param {string} url the whole URL, query included
   * @param {object} [options]
   * @param {Array<[string, string]>|Record<string, string>} [options.headers]
   * @param {string|Uint8Array|ArrayBuffer} [options.body]
   * @param {number|null} [options.timeoutMs] bounds connecting and waiting for the response
   * @param {number} [options.maxRedirects] redirects of a GET or HEAD followed at most (default 5)
   */
  constructor(method, url, { headers, body, timeoutMs = null, maxRedirects = DEFAULT_MAX_REDIRECTS } = {}) {
    this.method = typeof method === "string" ? method.toUpperCase() : method;
    this.url = url;
    this.headers = toHeaders(headers);
    this.body = toBody(body);
    this.timeoutMs = timeoutMs;
    this.maxRedirects = maxRedirects;
  }

  /** Throws an "invalid" HttpError (or "denied" for a header the host sets)
   * when the request cannot be sent as it is. */
  check() {
    if (typeof this.method !== "string" || !TOKEN.test(this.method)) {
      throw invalid(`method ${q(this.method)} is not an HTTP method name`);
    }
    if (typeof this.url !== "string") throw invalid(`the URL must be a string, not ${typeof this.url}`);
    const [scheme] = splitUrl(this.url);
    if (!["http", "https"].includes(scheme.toLowerCase())) {
      throw invalid(`scheme ${q(scheme)} of ${q(this.url)}: only http and https are sent`);
    }
    for (const [name, value] of this.headers) {
      if (!TOKEN.test(name)) throw invalid(`header name ${q(name)} is not a valid token`);
      if (/[\r\n\0]/.test(value)) throw invalid(`header ${q(name)}: the value holds a line break or NUL`);
      if (FORBIDDEN_HEADERS.includes(name.toLowerCase())) {
        throw new HttpError("denied", `header ${q(name)} is set by the host, not by jobs`);
      }
    }
    const t = this.timeoutMs;
    if (t !== null && t !== undefined && !(typeof t === "number" && Number.isFinite(t) && t > 0)) {
      throw invalid(`timeoutMs ${q(t)}: give a positive number of milliseconds, or null`);
    }
    const n = this.maxRedirects;
    if (!Number.isInteger(n) || n < 0) throw invalid(`maxRedirects ${q(n)}: give a whole number, 0 or more`);
  }

  /** Sends the request, following redirects as the module says. Throws any
   * HttpError but "status": an error status is a response (errorForStatus()). */
  send() {
    this.check();
    let current = this;
    let left = this.maxRedirects;
    for (;;) {
      const response = backend().httpSend(current);
      const follow = [301, 302, 303, 307, 308].includes(response.status) &&
        (["GET", "HEAD"].includes(current.method) || response.status === 303);
      const location = response.header("location");
      if (!follow || location === null || left === 0) return response;
      left -= 1;
      const next = Object.assign(Object.create(Request.prototype), current, { url: resolveUrl(current.url, location) });
      if (response.status === 303) {
        next.method = "GET";
        next.body = new Uint8Array(0);
      }
      current = next;
    }
  }
}

/**
 * Sends `method url` and returns the response, whatever its status. Give
 * `body` (sent as given, a string as UTF-8) or `json` (serialized, sent with
 * Content-Type: application/json).
 */
function request(method, url, options = {}) {
  const { json, ...rest } = options;
  if (Object.hasOwn(options, "json")) {
    if (rest.body !== undefined && rest.body !== null) throw invalid("give body or json, not both");
    let text;
    try {
      text = JSON.stringify(json);
    } catch (e) {
      throw invalid(`the JSON body cannot be serialized: ${e.message}`);
    }
    if (text === undefined) throw invalid(`the JSON body cannot be serialized: ${typeof json} is not JSON`);
    const headers = toHeaders(rest.headers);
    if (!headers.some(([n]) => n.toLowerCase() === "content-type")) headers.push(["content-type", "application/json"]);
    return new Request(method, url, { ...rest, headers, body: text }).send();
  }
  return new Request(method, url, rest).send();
}

/** The HTTP client: request(), get(), getJson(), postJson(). */
export const http = /* @__PURE__ */ Object.freeze({
  request,
  /** `GET url` (options as request() takes them). */
  get: (url, options = {}) => request("GET", url, options),
  /** `GET url`, an error status thrown, the body parsed as JSON. */
  getJson: (url, options = {}) => request("GET", url, options).errorForStatus().json(),
  /** `POST url` with `body` as JSON; the response as it came. */
  postJson: (url, body, options = {}) => request("POST", url, { ...options, json: body }),
  Request,
  Response,
  HttpError,
  DEFAULT_MAX_REDIRECTS,
});
