// The host's rules for what a job passes it, as numbers and checks.
//
// The real host enforces these in the sandbox; TestHost (testing.js) enforces
// the same ones natively, so a job whose tests pass under `node --test` is not
// refused for a key, name or size once it runs for real. The host's test suite
// checks that every number here equals the host's own.

export const MAX_KV_KEY = 256;
export const MAX_KV_VALUE = 1 << 20;
export const KV_MAX_KEYS = 10_000;
export const KV_MAX_BYTES = 16 << 20;
export const MAX_LOCK_NAME = 256;
export const MAX_LOCKS_HELD = 16;
export const MAX_EVENT_NAME = 128;
export const MAX_EVENT_KEY = 256;
export const MAX_EVENT_PAYLOAD = 64 << 10;
export const MAX_EMITS_PER_RUN = 1_000;
export const MAX_LOG_BYTES = 64 << 10;
export const MAX_LOG_LINE = 4096;
export const MAX_OUTPUT_BYTES = 1 << 20;
/** Requests a run may send when its grants set no other bound. */
export const HTTP_MAX_REQUESTS = 100;

import { utf8Encode } from "./utf8.js";

/** Length of `text` in UTF-8 bytes, as the host counts it. */
export function byteLength(text) {
  return utf8Encode(text).length;
}

function quote(text) {
  return JSON.stringify(text);
}

/** What is wrong with an event name, in the host's words; null when it is fine. */
export function checkEventName(name) {
  const size = byteLength(name);
  if (size === 0 || size > MAX_EVENT_NAME) {
    return `event name ${quote(name)} must be 1 to ${MAX_EVENT_NAME} bytes`;
  }
  if (!/^[A-Za-z0-9]/.test(name)) {
    return `event name ${quote(name)} must start with a letter or digit`;
  }
  const bad = [...name].find((c) => !/^[A-Za-z0-9._\-:/]$/.test(c));
  if (bad !== undefined) {
    return `event name ${quote(name)} contains '${bad}'; use letters, digits and . _ - : /`;
  }
  return null;
}

/** What is wrong with a kv key, in the host's words; null when it is fine. */
export function checkKvKey(key) {
  const size = byteLength(key);
  if (size === 0) return "kv key is empty";
  if (size > MAX_KV_KEY) return `kv key is ${size} bytes; the limit is ${MAX_KV_KEY}`;
  return null;
}

/** What is wrong with a lock name, in the host's words; null when it is fine. */
export function checkLockName(name) {
  const size = byteLength(name);
  if (size === 0 || size > MAX_LOCK_NAME) return `lock name must be 1 to ${MAX_LOCK_NAME} bytes`;
  return null;
}
