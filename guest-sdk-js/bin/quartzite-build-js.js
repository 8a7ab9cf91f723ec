#!/usr/bin/env node
// Builds a job module into a Quartzite component:
//
//   quartzite-build-js job.js -o job.wasm [--backend starlingmonkey|quickjs]
//
// The job module's default export is a Job class. It is bundled with this SDK
// into one module (rolldown) and componentized against the WIT contract
// shipped in this package (quartzite:job@1.1.0) plus the imports of `config`
// and `http` (wit/worlds.wit): by componentize-js (StarlingMonkey, the
// default) or by jco's QuickJS backend (a component about a tenth the size).
//
// Worlds: StarlingMonkey builds a job that uses `http` against `job-http`
// (wasi:config and wasi:http/outgoing-handler, which `http` calls directly
// and synchronously), any other job against `job-config` (wasi:config only);
// with --no-wasi-http, and always with QuickJS, against `job-config`, and
// `http` then throws an "invalid" HttpError saying why. QuickJS cannot have
// wasi:http: componentize-qjs (jco 1.35) pre-initializes the component in a
// linker without wasi:http, and the trap stubs it makes for the missing
// interface do not type-check against wasi:io's streams, so the build fails.

import { mkdtempSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";

const sdk = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const WORLD_HTTP = "job-http";
const WORLD_NO_HTTP = "job-config";
// Imports the component's world provides, left to the componentizer.
const HOST_IMPORTS = /^(quartzite:job|wasi:config|wasi:http|wasi:io)\//;
const QUICKJS_NO_HTTP =
  "the QuickJS backend cannot build a component importing wasi:http " +
  "(componentize-qjs pre-initializes it without wasi:http); build with --backend starlingmonkey";
const FLAG_NO_HTTP = "it was built with --no-wasi-http; build it without that flag";
// Cannot be reached: the job's code does not reach the client (see below).
const UNUSED_HTTP = "the build found no use of the http client in the job";

// ---------------------------------------------------------------------------
// WASI features `--no-wasi-http` leaves out of a StarlingMonkey build. By
// default a job keeps wasi:http (the SDK's `http`, and StarlingMonkey's
// `fetch`): the host links wasi:http for every component and lets a request
// out only as the job's grants say.
const NO_HTTP_FEATURES = ["http", "fetch-event"];
// ---------------------------------------------------------------------------

function fail(message, code = 1) {
  console.error(`quartzite-build-js: ${message}`);
  process.exit(code);
}

function usage(message) {
  if (message) console.error(`quartzite-build-js: ${message}`);
  console.error("usage: quartzite-build-js JOB.js -o OUT.wasm [--backend starlingmonkey|quickjs] [--no-wasi-http]");
  process.exit(2);
}

const args = process.argv.slice(2);
let source = null;
let out = null;
let backend = "starlingmonkey";
// A job that makes no requests may leave wasi:http out.
let noHttp = false;
for (let i = 0; i < args.length; i++) {
  if (args[i] === "-o" || args[i] === "--out") out = args[++i];
  else if (args[i] === "--backend") backend = args[++i];
  else if (args[i] === "--no-wasi-http") noHttp = true;
  else if (args[i] === "-h" || args[i] === "--help") usage();
  else if (source === null) source = args[i];
  else usage(`unexpected argument ${args[i]}`);
}
if (!source || !out) usage();
if (!["starlingmonkey", "quickjs"].includes(backend)) usage(`unknown backend ${backend}`);
source = resolve(source);
out = resolve(out);
if (!existsSync(source)) usage(`${source} does not exist`);

let rolldown;
try {
  ({ rolldown } = await import("rolldown"));
} catch (e) {
  fail(`the build tools are not installed (${e.message}); run npm install first`);
}

// The componentizers run WebAssembly tools that see only the directory the
// process started in: run them as child processes started in the SDK.
function tool(name, args) {
  const bin = join(sdk, "node_modules", ".bin", name);
  if (!existsSync(bin)) fail(`${name} is not installed in ${sdk}; run npm install there first`);
  const result = spawnSync(bin, args, { stdio: ["ignore", "ignore", "inherit"], cwd: sdk });
  if (result.error) fail(`cannot run ${name}: ${result.error.message}`);
  if (result.status !== 0) fail(`${name} failed (exit ${result.status})`);
}

const src = (file) => join(sdk, "src", file);

// The job and the SDK as one ES module. The job's `quartzite-sdk` is this
// SDK, whatever node_modules holds: the job and the runner must share one
// copy (one host backend, one Retry class).
async function bundle(entry, { write } = {}) {
  const built = await rolldown({
    input: entry,
    external: (id) => HOST_IMPORTS.test(id),
    platform: "neutral",
    resolve: {
      alias: {
        "quartzite-sdk/limits": src("limits.js"),
        "quartzite-sdk": src("index.js"),
      },
    },
  });
  try {
    if (write) await built.write({ file: write, format: "esm" });
    return (await built.generate({ format: "esm" })).output[0];
  } finally {
    await built.close();
  }
}

function entryCode(transport) {
  return (
    `import Job from ${JSON.stringify(source)};\n` +
    `import { makeRunner, setHttpTransport } from ${JSON.stringify(src("guest.js"))};\n` +
    transport +
    `export const runner = makeRunner(Job);\n`
  );
}

const tmp = mkdtempSync(join(tmpdir(), "quartzite-build-js-"));
try {
  const entry = join(tmp, "entry.js");
  // wasi:http only for a job whose code can reach the http client: its
  // bindings add about 1 MB to a StarlingMonkey component's initial memory,
  // which every run of every job would copy. A first bundle without a
  // transport tells: tree-shaking keeps http.js's Request only when it is
  // reachable from the job.
  let withHttp = false;
  if (backend === "starlingmonkey" && !noHttp) {
    writeFileSync(entry, entryCode(""));
    const probe = await bundle(entry);
    withHttp = Boolean(probe.modules[src("http.js")]?.renderedExports.includes("Request"));
  }
  // The http transport: wasi:http where the world has it, a refusal that
  // says why where it does not (so nothing imports what the world lacks).
  const why = backend === "quickjs" ? QUICKJS_NO_HTTP : noHttp ? FLAG_NO_HTTP : UNUSED_HTTP;
  const transport = withHttp
    ? `import { send } from ${JSON.stringify(src("guest-http.js"))};\nsetHttpTransport(send);\n`
    : `import { noHttp } from ${JSON.stringify(src("guest-no-http.js"))};\n` +
      `setHttpTransport(noHttp(${JSON.stringify(why)}));\n`;
  writeFileSync(entry, entryCode(transport));
  const bundled = join(tmp, "bundle.js");
  await bundle(entry, { write: bundled });

  const world = withHttp ? WORLD_HTTP : WORLD_NO_HTTP;
  if (backend === "starlingmonkey") {
    tool("componentize-js", [bundled, "--wit", "wit", "--world-name", world, ...(noHttp ? ["--disable", ...NO_HTTP_FEATURES] : []), "-o", out]);
  } else {
    tool("jco", ["componentize", bundled, "--wit", "wit", "--world-name", world, "--backend", "quickjs", "--backend-qjs-disable-async", "-o", out]);
  }
  console.log(`built ${out} (world ${world})`);
} catch (e) {
  fail(e && e.message ? e.message : String(e));
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
