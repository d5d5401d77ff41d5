#!/usr/bin/env bash
# Runs every test: unit tests of the crate (cargo test) and the end-to-end suite, which drives
# the release binary with real clients (Python smtplib, raw sockets, swaks) on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked
cargo test --release --locked

# Debian's Python has python3-pytest; a pyenv/venv python3 earlier on PATH may not.
PY=python3
if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import pytest' 2>/dev/null; then
    PY=/usr/bin/python3
fi
TAMBO_BIN="$PWD/target/release/tambo" "$PY" -m pytest -q -p no:cacheprovider tests/e2e
