#!/usr/bin/env bash
# caremsg's two commands. Each installs what it needs into ./.venv from pyproject.toml's pins.
#   ./run.sh serve [caremsg serve options]   run the service (embedded PostgreSQL + Sendbird emulator)
#   ./run.sh test  [pytest options]          ruff, then mypy beside the whole test suite against real
#                                            PostgreSQL, on one pytest-xdist worker per core and one more
# CAREMSG_PYTHON=/path/to/python3.13 runs either on that interpreter, in a venv of its own
# (.venv-3.13): CI runs the suite so on every supported Python the machine has (.ci/run).
set -euo pipefail
cd "$(dirname "$0")"

find_python() {
    for candidate in python3 python3.11 python3.12 python3.13; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] < (3, 14) else 1)' 2>/dev/null; then
            echo "$candidate"
            return
        fi
    done
    echo "caremsg needs Python 3.11 to 3.13 on PATH" >&2
    exit 1
}

python=${CAREMSG_PYTHON:-}
venv=.venv
if [ -n "$python" ]; then
    venv=.venv-$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
fi

ensure_venv() {
    if [ ! -x "$venv/bin/python" ]; then
        "${python:-$(find_python)}" -m venv "$venv"
    fi
    # Reinstall only when the dependency pins change.
    local stamp="$venv/.caremsg-installed" want
    want=$(sha256sum pyproject.toml | cut -d' ' -f1)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        "$venv"/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
        "$venv"/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
        echo "$want" >"$stamp"
    fi
}

# The console's browser tests (tests/console) drive Debian's Chromium at /usr/bin/chromium. Install it
# where we can (root with apt-get, as in CI); elsewhere those tests skip and say why.
ensure_chromium() {
    if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "installing chromium for the console's browser tests" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null ||
            { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } ||
            echo "could not install chromium: the console's browser tests will skip" >&2
    fi
}

command=${1:-}
[ $# -gt 0 ] && shift
case "$command" in
serve)
    ensure_venv
    exec "$venv"/bin/caremsg serve "$@"
    ;;
test)
    ensure_venv
    ensure_chromium
    "$venv"/bin/ruff check .
    "$venv"/bin/ruff format --check .
    # mypy (one process, ~9 s of CPU when its cache is cold) checks beside pytest, whose workers
    # leave part of the two cores idle while they wait for PostgreSQL, the emulators and timeouts.
    # Its output is shown when pytest ends; either failing fails the command.
    mypy_log=$(mktemp)
    "$venv"/bin/mypy >"$mypy_log" 2>&1 &
    mypy_pid=$!
    trap 'kill "$mypy_pid" 2>/dev/null || true; rm -f "$mypy_log"' EXIT
    # Each worker compiles every module it imports and rewrites every test module's asserts (~5 s of
    # CPU per worker); bytecode kept under the venv (never in the tree, whatever PYTHONDONTWRITEBYTECODE
    # says) lets the next run skip both. A fresh checkout pays it once.
    export PYTHONPYCACHEPREFIX="$PWD/$venv/pycache"
    unset PYTHONDONTWRITEBYTECODE
    # One worker per core and one more, each a test session with its own database; a module stays
    # on one worker, so its shared app is built once. The extra worker runs while the others wait
    # for PostgreSQL, a subprocess or a browser: on two cores, two workers kept them 88 % busy and
    # three 97 % (166 s against 194 s side by side; four were slower). Options given here come
    # later and win (e.g. -n 0).
    pytest_status=0
    "$venv"/bin/python -m pytest -n "$(($(nproc) + 1))" --dist loadfile "$@" || pytest_status=$?
    mypy_status=0
    wait "$mypy_pid" || mypy_status=$?
    cat "$mypy_log"
    if [ "$mypy_status" -ne 0 ]; then
        echo "mypy failed (exit status $mypy_status)" >&2
    fi
    if [ "$pytest_status" -ne 0 ]; then
        exit "$pytest_status"
    fi
    exit "$mypy_status"
    ;;
*)
    echo "usage: ./run.sh serve [options] | ./run.sh test [pytest options]" >&2
    exit 2
    ;;
esac
