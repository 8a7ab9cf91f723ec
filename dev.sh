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
  # The metrics test checks a real scrape with `promtool check metrics`.
  if command -v promtool >/dev/null; then return; fi
  say "installing promtool (Debian package prometheus)"
  as_root apt-get update -qq || die "apt-get update failed: promtool (Debian package prometheus) cannot be installed"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
    || die "cannot install the Debian package prometheus, which provides promtool for the metrics test"
  command -v promtool >/dev/null || die "promtool is still missing after installing the prometheus package"
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

build_guests() {
  say "building guests for wasm32-wasip2 (release)"
  local args=()
  for g in "${GUESTS[@]}"; do args+=(-p "$g"); done
  cargo build --release --target wasm32-wasip2 "${args[@]}"
  for g in "${GUESTS[@]}"; do
    [ -f "$WASM_DIR/${g//-/_}.wasm" ] || die "guest $g was not built: $WASM_DIR/${g//-/_}.wasm is missing"
  done
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
