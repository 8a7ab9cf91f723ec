#!/bin/bash
# A job author's five minutes, timed: the steps of a `quartzite new` Rust
# project's README, in a fresh directory with its own target directory (every
# dependency compiled from nothing), until the first fire is in `history list`.
#
#   host/benches/five_minutes.sh [path/to/quartzite]
#
# The quartzite binary defaults to the checkout's debug build. Crates must be
# downloadable (or already in ~/.cargo/registry); the time is printed per step.
set -euo pipefail
q="$(realpath "${1:-$(dirname "$0")/../../target/debug/quartzite}")"
[ -x "$q" ] || { echo "no quartzite binary at $q: cargo build -p quartzite first" >&2; exit 1; }
work="$(mktemp -d /tmp/quartzite-five.XXXXXX)"
unset CARGO_TARGET_DIR
export QUARTZITE_DB="sqlite://$work/quartzite.db"
start=$(date +%s.%N)
step() { printf '%7.1f s  %s\n' "$(echo "$(date +%s.%N) - $start" | bc)" "$*"; }

cd "$work"
step "quartzite new greeter"
"$q" new greeter >/dev/null
cd greeter
step "cargo test"
cargo test -q >/dev/null 2>&1
step "cargo build --release --target wasm32-wasip2"
cargo build -q --release --target wasm32-wasip2
step "quartzite module inspect"
"$q" module inspect target/wasm32-wasip2/release/greeter.wasm >/dev/null
step "quartzite run-once"
"$q" run-once target/wasm32-wasip2/release/greeter.wasm --data '{"name":"you"}' >/dev/null 2>&1
step "quartzite serve --manifest jobs.toml"
"$q" serve --manifest jobs.toml --listen 127.0.0.1:0 >"$work/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
until "$q" history list --job dev/greeter 2>/dev/null | grep -q success; do
  kill -0 $server 2>/dev/null || { cat "$work/serve.log" >&2; exit 1; }
  sleep 0.2
done
step "the first fire is in quartzite history list"
