#!/usr/bin/env node
// Builds a job module into a Quartzite component:
//
//   quartzite-build-js job.js -o job.wasm [--backend starlingmonkey|quickjs]
//
// The job module's default export is a Job class. It is bundled with this SDK
// into one module (rolldown) and componentized against the WIT contract
// shipped in this package (quartzite:job@1.1.0, world `job`): by
// componentize-js (StarlingMonkey, the default) or by jco's QuickJS backend
// (a component about a tenth the size).

import { mkdtempSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";

const sdk = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const WORLD = "job";
const HOST_IMPORTS = /^quartzite:job\//;

// ---------------------------------------------------------------------------
// WASI features `--no-wasi-http` leaves out of a StarlingMonkey build. By
// default a job keeps wasi:http, so `fetch` works: the host links wasi:http
// for every component and lets a request out only as the job's grants say.
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
// A job that never fetches may leave wasi:http out.
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

const tmp = mkdtempSync(join(tmpdir(), "quartzite-build-js-"));
try {
  const entry = join(tmp, "entry.js");
  writeFileSync(
    entry,
    `import Job from ${JSON.stringify(source)};\n` +
      `import { makeRunner } from ${JSON.stringify(join(sdk, "src", "guest.js"))};\n` +
      `export const runner = makeRunner(Job);\n`,
  );
  const bundled = join(tmp, "bundle.js");
  // The job's `quartzite-sdk` is this SDK, whatever node_modules holds: the
  // job and the runner must share one copy (one host backend, one Retry class).
  const bundle = await rolldown({
    input: entry,
    external: (id) => HOST_IMPORTS.test(id),
    platform: "neutral",
    resolve: {
      alias: {
        "quartzite-sdk/limits": join(sdk, "src", "limits.js"),
        "quartzite-sdk": join(sdk, "src", "index.js"),
      },
    },
  });
  await bundle.write({ file: bundled, format: "esm" });
  await bundle.close();

  if (backend === "starlingmonkey") {
    tool("componentize-js", [bundled, "--wit", "wit", "--world-name", WORLD, ...(noHttp ? ["--disable", ...NO_HTTP_FEATURES] : []), "-o", out]);
  } else {
    tool("jco", ["componentize", bundled, "--wit", "wit/types.wit", "--world-name", WORLD, "--backend", "quickjs", "--backend-qjs-disable-async", "-o", out]);
  }
  console.log(`built ${out}`);
} catch (e) {
  fail(e && e.message ? e.message : String(e));
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
