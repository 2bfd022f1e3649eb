#!/usr/bin/env bash
# Loads the shop's gateway with wrk (keep-alive, anonymous GET
# /api/products/{id}), once with palisade's layers on and once with them off
# (--no-resilience), ROUNDS times each, alternating, and prints wrk's figures.
#
#   examples/shop/load/run.sh            # 2 rounds of 15 s per mode
#   DURATION=30s CONNECTIONS=64 ROUNDS=3 examples/shop/load/run.sh
#
# Needs wrk (Debian: apt-get install wrk). The per-client limit is raised so
# that the load measures the layers' cost, not 429s: every request still goes
# through the keyed limiter. Logging is at `warn`, as a service under load
# would run.
set -euo pipefail
cd "$(dirname "$0")/../../.."

DURATION=${DURATION:-15s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-1}
ROUNDS=${ROUNDS:-2}
PORT=${PORT:-18000}

command -v wrk >/dev/null || { echo "needs wrk (Debian: apt-get install wrk)" >&2; exit 1; }
cargo build --release --example shop -q

wait_for_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listening on $1" >&2
    return 1
}

echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION; $(nproc) cores; $(date -u +%Y-%m-%dT%H:%MZ)"
for round in $(seq "$ROUNDS"); do
    for mode in on off; do
        flags=(--base-port "$PORT" --rate-limit 1000000/60)
        [ "$mode" = off ] && flags+=(--no-resilience)
        RUST_LOG=warn target/release/examples/shop "${flags[@]}" >/dev/null &
        pid=$!
        wait_for_port "$PORT"
        # A short warm-up fills the connection pools.
        wrk -t1 -c"$CONNECTIONS" -d2s -s examples/shop/load/products.lua \
            "http://127.0.0.1:$PORT" >/dev/null
        echo "-- round $round, layers $mode"
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" \
            -s examples/shop/load/products.lua "http://127.0.0.1:$PORT" |
            sed -n '/^requests /,$p'
        kill -INT "$pid"
        wait "$pid" || true
    done
done
