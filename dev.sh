#!/usr/bin/env bash
# Quartzite's developer entry point.
#
#   ./dev.sh demo     set up, build, and run the example jobs (embedded default)
#   ./dev.sh test     set up, build, and run the whole test suite (what CI runs)
#   ./dev.sh guests   build the example jobs and test guests for wasm32-wasip2
#   ./dev.sh deny     check dependencies: licenses, duplicates, sources, advisories
#
# Each command installs what it needs (the wasm32-wasip2 target, a C toolchain)
# and stops with a clear message when something it needs cannot be had.
set -euo pipefail
cd "$(dirname "$0")"

GUESTS=(hello counter flaky report notify sync guest-hostile guest-noop guest-future-major guest-unknown-import guest-contract-1-0 guest-relay guest-loud-describe guest-huge-describe guest-http)
WASM_DIR="${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release"

# Guests in other languages: SOURCE.py / SOURCE.js is built into
# $WASM_DIR/<stem>_py.wasm / <stem>_js.wasm by that language's SDK (the JS
# no-op and http guest also as noop_js_qjs.wasm and guest_http_js_qjs.wasm,
# with the QuickJS backend, for the benchmark and the grants tests).
PY_GUESTS=(example-jobs/python/counter.py example-jobs/python/report.py tests/guests/noop-py/noop.py tests/guests/http-py/guest_http.py)
JS_GUESTS=(example-jobs/js/counter.js example-jobs/js/report.js tests/guests/noop-js/noop.js tests/guests/http-js/guest_http.js)
JS_QJS_GUESTS=(tests/guests/noop-js/noop.js tests/guests/http-js/guest_http.js)
# The guest toolchains, pinned (the SDKs' own manifests pin the same):
# componentize-py from PyPI, componentize-js and jco from npm (package-lock.json).
COMPONENTIZE_PY_VERSION=0.25.1
TOOLCHAINS="$(realpath -m "${CARGO_TARGET_DIR:-target}")/guest-toolchains"
PY_VENV="$TOOLCHAINS/python"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'dev.sh: error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "need root to run: $*"
  fi
}

# The toolchain rust-toolchain.toml pins (and Cargo.toml's rust-version names),
# installed with the wasm32-wasip2 target and rustfmt/clippy. rustup here may not
# install toolchains on demand (RUSTUP_AUTO_INSTALL=0), so it is done explicitly.
ensure_toolchain() {
  command -v rustup >/dev/null || die "rustup is not installed: install Rust with rustup (https://rustup.rs) first"
  if ! command -v cc >/dev/null; then
    say "installing a C toolchain (build-essential)"
    as_root apt-get update -qq && as_root apt-get install -y -qq build-essential >/dev/null
    command -v cc >/dev/null || die "no C compiler (cc) after installing build-essential"
  fi
  local channel rust_version
  channel="$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)"
  [ -n "$channel" ] || die "rust-toolchain.toml names no channel"
  rust_version="$(sed -n 's/^rust-version *= *"\(.*\)"/\1/p' Cargo.toml)"
  case "$channel" in
    "$rust_version" | "$rust_version".*) ;;
    *) die "rust-toolchain.toml pins $channel but Cargo.toml's rust-version is $rust_version: make them agree" ;;
  esac
  if ! rustup toolchain list | grep -q "^$channel-" \
    || ! rustup +"$channel" target list --installed | grep -qx wasm32-wasip2 \
    || ! rustup +"$channel" component list --installed | grep -q '^clippy' \
    || ! rustup +"$channel" component list --installed | grep -q '^rustfmt'; then
    say "installing the Rust toolchain $channel with wasm32-wasip2, rustfmt and clippy"
    rustup toolchain install "$channel" --profile minimal --component rustfmt,clippy --target wasm32-wasip2 \
      || die "cannot install the Rust toolchain $channel (rustup toolchain install $channel): it is what rust-toolchain.toml pins"
  fi
  rustup +"$channel" target list --installed | grep -qx wasm32-wasip2 \
    || die "the wasm32-wasip2 target of toolchain $channel could not be installed"
  local active
  active="$(cargo --version 2>/dev/null)" || die "cargo of toolchain $channel does not run"
  case "$(rustc --version)" in
    "rustc $channel "*) ;;
    *) die "rustc here is '$(rustc --version)', not the pinned $channel (is RUSTUP_TOOLCHAIN set?)" ;;
  esac
  say "toolchain: $active"
}

# cargo-deny, at the version this repository's deny.toml is written for.
CARGO_DENY_VERSION=0.20.2

ensure_cargo_deny() {
  if cargo deny --version 2>/dev/null | grep -qx "cargo-deny $CARGO_DENY_VERSION"; then return; fi
  say "installing cargo-deny $CARGO_DENY_VERSION (cargo install --locked)"
  cargo install --locked "cargo-deny@$CARGO_DENY_VERSION" \
    || die "cannot install cargo-deny $CARGO_DENY_VERSION with cargo install --locked"
}

# Licenses, bans (duplicate versions, wildcards) and sources always run and fail
# the command on any violation. Advisories need the RustSec database, fetched
# from GitHub: when it cannot be fetched they are NOT checked, which is said in
# a box on stderr; QUARTZITE_REQUIRE_ADVISORIES=1 makes that an error too.
check_dependencies() {
  ensure_cargo_deny
  say "cargo deny: licenses, bans (duplicates), sources"
  cargo deny --locked check licenses bans sources \
    || die "cargo deny found a dependency problem (licenses, bans or sources): see above; deny.toml says what is allowed"
  say "cargo deny: advisories"
  if cargo deny --locked fetch db >/dev/null 2>&1; then
    cargo deny --locked check --disable-fetch advisories \
      || die "cargo deny found a security advisory for a dependency: see above"
  else
    {
      printf '\033[1;31m'
      printf '%s\n' "+--------------------------------------------------------------------------+"
      printf '%s\n' "| SECURITY ADVISORIES WERE NOT CHECKED: the RustSec advisory database       |"
      printf '%s\n' "| (github.com/rustsec/advisory-db) cannot be fetched from this machine.     |"
      printf '%s\n' "| Licenses, bans and sources were checked. Run 'cargo deny check           |"
      printf '%s\n' "| advisories' where GitHub is reachable.                                    |"
      printf '%s\n' "+--------------------------------------------------------------------------+"
      printf '\033[0m'
    } >&2
    if [ "${QUARTZITE_REQUIRE_ADVISORIES:-}" = 1 ]; then
      die "QUARTZITE_REQUIRE_ADVISORIES=1 and the advisory database cannot be fetched"
    fi
  fi
}

ensure_postgres() {
  # The store and cluster tests use the machine's PostgreSQL on 127.0.0.1:5432.
  if command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432; then return; fi
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    say "starting PostgreSQL"
    as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && return; sleep 1; done
  fi
  die "PostgreSQL is not reachable on 127.0.0.1:5432 and could not be started"
}

ensure_promtool() {
  # The metrics test checks a real scrape with `promtool check metrics`; the
  # observability test checks contrib/prometheus/rules.yml with `promtool check
  # rules` and runs the rules' and the dashboard's queries on a `prometheus`
  # server of its own (never the package's system service).
  if command -v promtool >/dev/null && command -v prometheus >/dev/null; then return; fi
  say "installing promtool and prometheus (Debian package prometheus)"
  as_root apt-get update -qq || die "apt-get update failed: promtool and prometheus (Debian package prometheus) cannot be installed"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
    || die "cannot install the Debian package prometheus, which provides promtool and prometheus for the metrics and observability tests"
  command -v promtool >/dev/null || die "promtool is still missing after installing the prometheus package"
  command -v prometheus >/dev/null || die "prometheus is still missing after installing the prometheus package"
}

ensure_faketime() {
  # The cluster tests give nodes a skewed wall clock with libfaketime.
  if ! command -v faketime >/dev/null; then
    say "installing faketime"
    as_root apt-get update -qq && as_root apt-get install -y -qq faketime >/dev/null
    command -v faketime >/dev/null || die "faketime is not installed and could not be installed (apt-get install faketime)"
  fi
}

ensure_chromium() {
  # The dashboard test drives headless Chromium through chromedriver (WebDriver).
  if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then return; fi
  say "installing chromium and chromium-driver (Debian packages) for the dashboard test"
  as_root apt-get update -qq || die "apt-get update failed: chromium and chromium-driver cannot be installed"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null \
    || die "cannot install the Debian packages chromium and chromium-driver, which the dashboard test needs"
  [ -x /usr/bin/chromium ] || die "/usr/bin/chromium is still missing after installing the chromium package"
  [ -x /usr/bin/chromedriver ] || die "/usr/bin/chromedriver is still missing after installing the chromium-driver package"
}

ensure_python_toolchain() {
  # A venv under the target dir with componentize-py, pytest and the Python
  # SDK (editable), so the examples, `quartzite new --lang python` projects
  # and the SDK's own tests build and run with exactly these versions.
  command -v python3 >/dev/null || die "python3 is not installed: the Python guests need Python 3.11+"
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "python3 is $(python3 -V 2>&1): the Python SDK needs 3.11 or newer"
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    say "installing python3-venv"
    as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null \
      || die "cannot install python3-venv, which the Python guest toolchain needs"
  fi
  if [ ! -x "$PY_VENV/bin/python" ]; then
    say "creating the Python guest toolchain in $PY_VENV"
    python3 -m venv "$PY_VENV" || die "cannot create a Python venv in $PY_VENV"
  fi
  if ! "$PY_VENV/bin/componentize-py" --version 2>/dev/null | grep -qx "componentize-py $COMPONENTIZE_PY_VERSION" \
     || ! "$PY_VENV/bin/python" -c 'import pytest, quartzite_sdk' 2>/dev/null; then
    say "installing componentize-py $COMPONENTIZE_PY_VERSION, pytest and the Python SDK (PyPI)"
    "$PY_VENV/bin/pip" install -q "componentize-py==$COMPONENTIZE_PY_VERSION" pytest \
      || die "cannot install componentize-py==$COMPONENTIZE_PY_VERSION and pytest from PyPI"
    "$PY_VENV/bin/pip" install -q --no-deps -e guest-sdk-python \
      || die "cannot install the Python SDK (guest-sdk-python) into $PY_VENV"
  fi
  "$PY_VENV/bin/componentize-py" --version | grep -qx "componentize-py $COMPONENTIZE_PY_VERSION" \
    || die "componentize-py in $PY_VENV is not $COMPONENTIZE_PY_VERSION"
}

ensure_js_toolchain() {
  # Node 20+ and the JS SDK's pinned build tools (npm ci from its package-lock).
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    say "installing nodejs and npm (Debian packages)"
    as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null \
      || die "cannot install nodejs and npm, which the JavaScript guests need"
  fi
  node -e 'process.exit(Number(process.versions.node.split(".")[0]) < 20 ? 1 : 0)' \
    || die "node is $(node --version): the JavaScript SDK needs Node 20 or newer"
  if [ ! -x guest-sdk-js/node_modules/.bin/componentize-js ] \
     || [ guest-sdk-js/package-lock.json -nt guest-sdk-js/node_modules/.package-lock.json ]; then
    say "installing the JavaScript SDK's build tools (npm ci: componentize-js, jco, rolldown)"
    (cd guest-sdk-js && npm ci --no-audit --no-fund --loglevel=error) \
      || die "npm ci in guest-sdk-js failed: componentize-js and jco cannot be had from npm"
  fi
}

build_other_guests() {
  ensure_python_toolchain
  ensure_js_toolchain
  mkdir -p "$WASM_DIR"
  local src out
  for src in "${PY_GUESTS[@]}"; do
    out="$WASM_DIR/$(basename "$src" .py)_py.wasm"
    if [ ! -f "$out" ] || [ "$src" -nt "$out" ] || [ -n "$(find guest-sdk-python/src -newer "$out" \( -name '*.py' -o -name '*.wit' \) -print -quit)" ]; then
      say "building $src (componentize-py)"
      # This checkout's SDK, whichever checkout the venv's editable install points at.
      PYTHONPATH="$PWD/guest-sdk-python/src" "$PY_VENV/bin/python" -m quartzite_sdk.build "$src" -o "$out" >/dev/null || die "building $src failed"
    fi
  done
  for src in "${JS_GUESTS[@]}"; do
    out="$WASM_DIR/$(basename "$src" .js)_js.wasm"
    if [ ! -f "$out" ] || [ "$src" -nt "$out" ] || [ -n "$(find guest-sdk-js/src guest-sdk-js/bin guest-sdk-js/wit -newer "$out" -print -quit)" ]; then
      say "building $src (componentize-js)"
      node guest-sdk-js/bin/quartzite-build-js.js "$src" -o "$out" >/dev/null || die "building $src failed"
    fi
  done
  for src in "${JS_QJS_GUESTS[@]}"; do
    out="$WASM_DIR/$(basename "$src" .js)_js_qjs.wasm"
    if [ ! -f "$out" ] || [ "$src" -nt "$out" ] || [ -n "$(find guest-sdk-js/src guest-sdk-js/bin guest-sdk-js/wit -newer "$out" -print -quit)" ]; then
      say "building $src (QuickJS backend)"
      node guest-sdk-js/bin/quartzite-build-js.js "$src" -o "$out" --backend quickjs >/dev/null \
        || die "building $src with the QuickJS backend failed"
    fi
  done
}

test_other_sdks() {
  say "Python SDK tests (pytest)"
  (cd guest-sdk-python && PYTHONPATH="$PWD/src" "$PY_VENV/bin/python" -m pytest -q) || die "the Python SDK tests failed"
  say "JavaScript SDK tests (node --test)"
  (cd guest-sdk-js && node --test test/) || die "the JavaScript SDK tests failed"
}

build_guests() {
  say "building guests for wasm32-wasip2 (release)"
  local args=()
  for g in "${GUESTS[@]}"; do args+=(-p "$g"); done
  cargo build --release --target wasm32-wasip2 "${args[@]}"
  for g in "${GUESTS[@]}"; do
    [ -f "$WASM_DIR/${g//-/_}.wasm" ] || die "guest $g was not built: $WASM_DIR/${g//-/_}.wasm is missing"
  done
  build_other_guests
}

cmd_demo() {
  ensure_toolchain
  build_guests
  say "building the quartzite binary"
  cargo build -p quartzite
  local q="${CARGO_TARGET_DIR:-target}/debug/quartzite"
  local secs="${DEMO_SECONDS:-15}"
  local manifest=example-jobs/jobs.toml
  if [ -n "${CARGO_TARGET_DIR:-}" ]; then
    # The manifest names modules under ../target; point it at the real target dir.
    manifest="$(mktemp --suffix=.toml)"
    sed "s#\.\./target/#$(realpath "$CARGO_TARGET_DIR")/#" example-jobs/jobs.toml > "$manifest"
  fi
  # The notify and sync examples talk to a small local service; notify's
  # webhook credential is a secret, sealed with a key kept beside the database.
  command -v python3 >/dev/null || die "python3 is needed for the demo's local HTTP service"
  [ -f quartzite-demo.key ] || python3 -c 'import secrets; print(secrets.token_hex(32))' > quartzite-demo.key
  export QUARTZITE_SECRET_KEY_FILE="$PWD/quartzite-demo.key"
  say "starting the demo HTTP service on 127.0.0.1:8787"
  python3 example-jobs/demo_service.py 8787 demo-webhook-token &
  local service=$!
  printf 'demo-webhook-token' | "$q" secret set DEMO_WEBHOOK_TOKEN
  say "quartzite serve --manifest $manifest (embedded SQLite: ./quartzite.db) for ${secs}s"
  "$q" serve --manifest "$manifest" &
  local pid=$!
  sleep "$secs"
  kill -TERM "$pid"
  wait "$pid" || true
  kill -TERM "$service" 2>/dev/null || true
  wait "$service" 2>/dev/null || true
  say "quartzite secret list"
  "$q" secret list
  say "quartzite job list"
  "$q" job list
  say "quartzite history list --limit 15"
  "$q" history list --limit 15
  say "done: run ./dev.sh demo again and the counter goes on; 'quartzite --help' for more"
}

cmd_test() {
  ensure_toolchain
  ensure_postgres
  ensure_promtool
  ensure_faketime
  ensure_chromium
  build_guests
  say "cargo fmt --check"
  cargo fmt --all -- --check || die "code is not formatted: run cargo fmt --all"
  say "cargo clippy"
  cargo clippy --workspace --all-targets -- -D warnings
  check_dependencies
  say "cargo package -p quartzite-sdk (the SDK builds outside the workspace)"
  cargo package -p quartzite-sdk --allow-dirty --quiet >/dev/null \
    || die "cargo package -p quartzite-sdk failed: the SDK crate does not build on its own"
  test_other_sdks
  say "cargo test"
  cargo test --workspace --no-fail-fast
}

case "${1:-}" in
  demo) cmd_demo ;;
  test) cmd_test ;;
  guests) ensure_toolchain; build_guests ;;
  deny) ensure_toolchain; check_dependencies ;;
  *) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
