// Plain configuration from the job's `config` grants, read through
// wasi:config/store: values an operator sets per job (a channel name, an API
// base URL) without rebuilding the component. Not for credentials: those are
// secret grants, which the host puts into requests itself.
//
//   import { config } from "quartzite-sdk";
//   const channel = config.get("channel") ?? "#general";
//
// Both functions throw Retry when the host cannot serve config right now.
// Under TestHost the values are the ones a test set with host.config(k, v).

import { backend } from "./host.js";

export const config = /* @__PURE__ */ Object.freeze({
  /** The value of config key `key`; null when the job's grants give none. */
  get(key) {
    if (typeof key !== "string") throw new TypeError(`config.get: the key must be a string, not ${typeof key}`);
    return backend().configGet(key) ?? null;
  },
  /** Every config key and value the job's grants give, as an object without
   * a prototype (so any key, "__proto__" too, is just a key). */
  getAll() {
    const out = Object.create(null);
    for (const [k, v] of backend().configGetAll()) out[k] = v;
    return out;
  },
});
