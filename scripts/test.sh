#!/usr/bin/env bash
# The project's test command (the README's and CI's): every crate's unit, integration
# and SQL end-to-end tests against real nats-server processes, plus doc tests.
#
#   scripts/test.sh                   everything
#   scripts/test.sh -p nats-testkit   one package: arguments replace `--workspace`
#                                     and go to `cargo test --all-targets` alone
#
# `--all-targets` builds the criterion benches too, in the test profile, so they can
# never rot; criterion runs each benchmark once in that mode. (`cargo build --benches`
# would build DataFusion a second time, optimised: far slower on 2 cores.)
# `--all-targets` leaves out doc tests, hence the second command. `--no-fail-fast`
# so one CI run shows every failing test binary, not just the first.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/common.sh
source scripts/common.sh

ensure_nats_server
ensure_chromium
echo "CARGO_TARGET_DIR=$CARGO_TARGET_DIR"
if [ "$#" -gt 0 ]; then
    cargo test --all-targets --no-fail-fast "$@"
else
    cargo test --workspace --all-targets --no-fail-fast
    cargo test --workspace --doc --no-fail-fast
fi
