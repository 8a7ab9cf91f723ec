// http in a component built without wasi:http: every request fails at once,
// with why, instead of trapping or waiting.

import { HttpError } from "./http.js";

/** A transport that refuses every request, saying `why`. */
export function noHttp(why) {
  return () => {
    throw new HttpError("invalid", `this component cannot make requests: ${why}`);
  };
}
